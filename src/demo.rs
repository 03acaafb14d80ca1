//! `vigil demo`: a synthesized attack scenario through a sensor and an
//! embedded collector in one process, over real gRPC on loopback.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use vigil_collector::detect::config::{Criticality, DetectConfig, ProtectedSection};
use vigil_collector::server::{self, CollectorConfig};
use vigil_collector::summary::TrafficSummary;
use vigil_proto::{FlowRecord, pb};
use vigil_sensor::export::grpc::{Exporter, ExporterConfig};
use vigil_sensor::run::{self, Input, LiveCounters, RunConfig};
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
    let tmp =
        tempfile::tempdir().map_err(|e| anyhow::anyhow!("creating a temporary directory: {e}"))?;
    let rt = crate::runtime()?;
    rt.block_on(async move {
        // The collector: embedded store in a temporary directory, real gRPC on loopback.
        let listen = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut ccfg = CollectorConfig::new(listen, tmp.path().join("collector"));
        ccfg.detect = Some(Arc::new(demo_assets()?));
        let collector = server::start(ccfg).await?;
        let url = format!("http://{}", collector.addr);
        // The sensor: pipeline → spool → gRPC stream.
        let live = Arc::new(LiveCounters::default());
        let mut exp = ExporterConfig::new(url.clone(), "demo-sensor".into(), tmp.path().join("spool"));
        exp.batch_delay = Duration::from_millis(100);
        let exporter = Exporter::start(exp, live.clone())?;
        let sink = exporter.sink();
        let mut cfg = RunConfig {
            live: Some(live),
            ..RunConfig::default()
        };
        // As `vigil sensor` does: early reports, so floods show within a second.
        cfg.flow.report_interval = Some(Duration::from_secs(1));
        let report = tokio::task::spawn_blocking(move || {
            let inputs = [Input::Memory {
                name: "demo scenario".into(),
                bytes: &bytes,
            }];
            let mut push = |recs: &[FlowRecord]| sink.push(recs);
            run::run(&inputs, &cfg, &mut push, None)
        })
        .await
        .map_err(|e| anyhow::anyhow!("pipeline task failed: {e}"))??;
        let drain = exporter.drain(Duration::from_secs(30)).await?;
        if drain.pending > 0 {
            return Err(Failure::from(anyhow::anyhow!(
                "{} batches were not acknowledged by the demo collector",
                drain.pending
            )));
        }
        // Read the stored flows back through the collector's Query API.
        let channel = tonic::transport::Endpoint::from_shared(url.clone())
            .map_err(|e| anyhow::anyhow!("{url}: {e}"))?
            .connect()
            .await
            .map_err(|e| anyhow::anyhow!("connecting to {url}: {e}"))?;
        let mut client = pb::query_client::QueryClient::new(channel.clone());
        let mut stream = client
            .flows(pb::FlowQuery::default())
            .await
            .map_err(|s| anyhow::anyhow!("querying flows: {}", s.message()))?
            .into_inner();
        let mut records = Vec::new();
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(|s| anyhow::anyhow!("querying flows: {}", s.message()))?
        {
            for sf in chunk.flows {
                if let Some(f) = sf.flow {
                    records.push(
                        FlowRecord::try_from(f)
                            .map_err(|e| anyhow::anyhow!("stored flow: {e}"))?,
                    );
                }
            }
        }
        // Detection runs behind the store: wait until it has seen every flow.
        let mut status = pb::StatusReply::default();
        for _ in 0..600 {
            status = client
                .status(pb::StatusRequest {})
                .await
                .map_err(|s| anyhow::anyhow!("collector status: {}", s.message()))?
                .into_inner();
            if status.detected_flows >= status.stored_flows {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut alerts_client = pb::alerts_client::AlertsClient::new(channel);
        let mut alerts = alerts_client
            .list(pb::AlertQuery {
                limit: 1000,
                ..pb::AlertQuery::default()
            })
            .await
            .map_err(|s| anyhow::anyhow!("listing alerts: {}", s.message()))?
            .into_inner()
            .alerts;
        alerts.sort_by_key(|a| (a.first_seen_ns, a.id));
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
            "sensor: {} packets decoded into {} flows in {:.3} s, sent to the collector at {url} over gRPC\n",
            report.packets,
            report.table.flows,
            report.elapsed.as_secs_f64()
        ));
        for s in &status.sensors {
            out.push_str(&format!(
                "collector: stored {} flow records from sensor {} in {} batches (last seq {}, {} duplicates, {} missing)\n",
                s.flows, s.sensor_id, s.batches, s.last_seq, s.duplicates, s.seq_gaps
            ));
        }
        out.push_str(&format!(
            "\nalerts raised by the collector ({}), in the order the attacks began:\n",
            alerts.len()
        ));
        for al in &alerts {
            // The first evidence flow, read back from the store.
            let example = alerts_client
                .get(pb::AlertRequest {
                    id: al.id,
                    max_flows: 1,
                })
                .await
                .map_err(|s| anyhow::anyhow!("reading alert {}: {}", al.id, s.message()))?
                .into_inner()
                .flows
                .into_iter()
                .find_map(|f| f.flow)
                .and_then(|f| FlowRecord::try_from(f).ok())
                .map_or_else(String::new, |f| {
                    format!(
                        "{} {} → {} {} {} pkts",
                        f.proto_name(),
                        endpoint(f.src_ip, f.src_port),
                        endpoint(f.dst_ip, f.dst_port),
                        f.conn_state.as_str(),
                        f.packets()
                    )
                });
            out.push_str(&format!(
                "  #{:<3} {:<8} {:<23} {:<9} {}\n       measured {} against {}; {} source(s); evidence: {} flows, e.g. {}\n",
                al.id,
                al.severity,
                al.kind,
                al.technique,
                al.summary,
                crate::alerts::figure(al.measured, &al.unit),
                if al.threshold > 0.0 {
                    crate::alerts::figure(al.threshold, &al.unit)
                } else {
                    "none allowed".to_string()
                },
                al.source_count,
                al.evidence_count,
                example,
            ));
        }
        out.push_str("  (vigil alerts list|show ID --data-dir DIR shows them from a collector's store)\n\n");
        collector.shutdown().await?;
        out.push_str(&summary.render(a.top));
        print!("{out}");
        Ok(())
    })
}

/// The demo's protected asset: the utility network, its HMI the one client
/// allowed to speak Modbus to the PLC.
fn demo_assets() -> Result<DetectConfig, Failure> {
    DetectConfig::with_assets(&[ProtectedSection {
        name: "utility-network".into(),
        cidrs: vec![synth::DEMO_PROTECTED.into()],
        sector: "water".into(),
        criticality: Criticality::High,
        services: vec![
            "tcp/443".into(),
            "udp/53".into(),
            "tcp/22".into(),
            "tcp/502".into(),
        ],
        ics_clients: vec!["198.51.100.100".into()],
        ..ProtectedSection::default()
    }])
    .map_err(|e| Failure::from(anyhow::anyhow!("demo configuration: {}", e.join("; "))))
}

fn endpoint(ip: std::net::IpAddr, port: Option<u16>) -> String {
    match port {
        Some(p) => format!("{ip}:{p}"),
        None => ip.to_string(),
    }
}
