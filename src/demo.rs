//! `vigil demo`: a synthesized attack scenario through the sensor pipeline.

use std::sync::Mutex;

use clap::Args;
use vigil_collector::summary::TrafficSummary;
use vigil_proto::FlowRecord;
use vigil_sensor::pipeline::{self, Input, PipelineConfig};
use vigil_sensor::synth;

use crate::Failure;

/// Arguments of `vigil demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Seed of the synthesized scenario.
    #[arg(long, default_value = "7")]
    seed: u64,
    /// Rows per top-N table.
    #[arg(long, default_value = "8")]
    top: usize,
    /// Also write the synthesized capture here.
    #[arg(long, value_name = "PCAP")]
    write_pcap: Option<std::path::PathBuf>,
}

pub fn run(a: DemoArgs) -> Result<(), Failure> {
    let bytes = synth::demo_scenario(a.seed).to_pcap_bytes();
    if let Some(p) = &a.write_pcap {
        std::fs::write(p, &bytes).map_err(|e| anyhow::anyhow!("writing {}: {e}", p.display()))?;
    }
    let inputs = [Input::Memory {
        name: "demo scenario".into(),
        bytes: &bytes,
    }];
    let records = Mutex::new(Vec::<FlowRecord>::new());
    let mut sink = |recs: &[FlowRecord]| {
        records
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(recs);
        Ok(())
    };
    let report = pipeline::run(&inputs, &PipelineConfig::default(), &mut sink, None)?;
    let records = records
        .into_inner()
        .map_err(|_| anyhow::anyhow!("record buffer poisoned"))?;
    let mut summary = TrafficSummary::new();
    summary.add(&records);

    let mut out = String::new();
    out.push_str("Vigil demo: a utility network (protected 198.51.100.0/24) for ten minutes:\n");
    out.push_str("  ordinary web, DNS, NTP and HMI-to-PLC Modbus traffic, plus a port scan from\n");
    out.push_str("  203.0.113.66, a SYN flood from spoofed sources on 198.51.100.10:80, an SSH\n");
    out.push_str(
        "  brute-force attempt from 203.0.113.99 and a Modbus write from 203.0.113.77.\n\n",
    );
    out.push_str(&format!(
        "sensor: {} packets decoded into {} flows in {:.3} s\n",
        report.packets,
        report.table.flows,
        report.elapsed.as_secs_f64()
    ));
    out.push_str(
        "alerts: detection arrives with the collector's detection engine; below is what it will see.\n\n",
    );
    out.push_str(&summary.render(a.top));
    print!("{out}");
    Ok(())
}
