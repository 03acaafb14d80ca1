//! `vigil sensor`: capture → flows → the collector, through the disk spool.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use clap::Args;
use vigil_sensor::config::{SensorFile, TlsSection};
use vigil_sensor::export::grpc::Exporter;
use vigil_sensor::pipeline::{self, LiveCounters};

use crate::Failure;

/// Arguments of `vigil sensor`.
#[derive(Debug, Args)]
pub struct SensorArgs {
    /// Capture file (pcap or pcapng) to replay, `-` for standard input;
    /// repeat to read several in order. (Live interfaces arrive with the
    /// live-capture issue.)
    #[arg(short = 'r', long = "read", required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// sensor.toml; flags below override it.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Collector URL: http://HOST:PORT, or https://HOST:PORT with the TLS flags.
    #[arg(long, value_name = "URL")]
    collector: Option<String>,
    /// This sensor's id; under mTLS the identity in its certificate.
    #[arg(long)]
    sensor_id: Option<String>,
    /// Spool directory: batches wait here until the collector acknowledges them.
    #[arg(long, value_name = "DIR")]
    spool_dir: Option<PathBuf>,
    /// Spool size bound (e.g. 1GiB); beyond it the oldest batches are dropped and counted.
    #[arg(long, value_name = "SIZE")]
    spool_max_bytes: Option<String>,
    /// Spool segment size (e.g. 16MiB).
    #[arg(long, value_name = "SIZE")]
    spool_segment_bytes: Option<String>,
    /// CA certificate (PEM) of the collector.
    #[arg(long, value_name = "PEM")]
    tls_ca: Option<PathBuf>,
    /// This sensor's certificate (PEM).
    #[arg(long, value_name = "PEM")]
    tls_cert: Option<PathBuf>,
    /// This sensor's key (PEM).
    #[arg(long, value_name = "PEM")]
    tls_key: Option<PathBuf>,
    /// Name expected in the collector's certificate (default: the URL's host).
    #[arg(long)]
    tls_server_name: Option<String>,
    /// Records per batch.
    #[arg(long)]
    batch_flows: Option<usize>,
    /// Longest a record waits for its batch (e.g. 1s).
    #[arg(long)]
    batch_delay: Option<String>,
    /// How long to wait for the last acknowledgements at the end (e.g. 30s).
    #[arg(long)]
    drain_timeout: Option<String>,
    /// Flow shards.
    #[arg(long)]
    workers: Option<usize>,
    /// Early reports of one-way and heavy flows for detection (e.g. 1s, or
    /// off): the collector sees a flood within about this interval.
    #[arg(long, value_name = "DUR")]
    report_interval: Option<String>,
    /// Validate the configuration and exit.
    #[arg(long)]
    check_config: bool,
}

impl SensorArgs {
    fn file_config(&self) -> Result<SensorFile, Failure> {
        let mut f = match &self.config {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading {}", p.display()))
                    .map_err(Failure::usage)?;
                SensorFile::parse(&text, &p.display().to_string()).map_err(Failure::usage)?
            }
            None => SensorFile::default(),
        };
        if let Some(v) = &self.collector {
            f.collector = Some(v.clone());
        }
        if let Some(v) = &self.sensor_id {
            f.sensor_id = Some(v.clone());
        }
        if let Some(v) = &self.spool_dir {
            f.spool.dir = Some(v.clone());
        }
        if let Some(v) = &self.spool_max_bytes {
            f.spool.max_bytes = v.clone();
        }
        if let Some(v) = &self.spool_segment_bytes {
            f.spool.segment_bytes = v.clone();
        }
        if let Some(v) = self.batch_flows {
            f.export.batch_flows = v;
        }
        if let Some(v) = &self.batch_delay {
            f.export.batch_delay = v.clone();
        }
        if let Some(v) = &self.drain_timeout {
            f.export.drain_timeout = v.clone();
        }
        if let Some(v) = self.workers {
            f.flow.workers = v;
        }
        if let Some(v) = &self.report_interval {
            f.flow.report_interval = v.clone();
        }
        match (&self.tls_ca, &self.tls_cert, &self.tls_key) {
            (Some(ca), Some(cert), Some(key)) => {
                f.tls = Some(TlsSection {
                    ca: ca.clone(),
                    cert: cert.clone(),
                    key: key.clone(),
                    server_name: self.tls_server_name.clone(),
                });
            }
            (None, None, None) => {}
            _ => {
                return Err(Failure::usage(anyhow::anyhow!(
                    "--tls-ca, --tls-cert and --tls-key go together"
                )));
            }
        }
        Ok(f)
    }
}

pub fn run(a: SensorArgs) -> Result<(), Failure> {
    let settings = a.file_config()?.validate().map_err(Failure::usage)?;
    if a.check_config {
        eprintln!("configuration OK");
        return Ok(());
    }
    let rt = crate::runtime()?;
    rt.block_on(async move {
        let live = Arc::new(LiveCounters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let exporter = Exporter::start(settings.exporter.clone(), live.clone())
            .map_err(Failure::usage)?;
        let sink = exporter.sink();
        let mut cfg = settings.pipeline.clone();
        cfg.live = Some(live);
        cfg.stop = Some(stop.clone());
        let files = a.files.clone();
        tracing::info!(
            sensor = %settings.exporter.sensor_id,
            collector = %settings.exporter.collector,
            spool = %settings.exporter.spool.dir.display(),
            "sensor started"
        );
        let pipeline = tokio::task::spawn_blocking(move || {
            let inputs = crate::flows::inputs_of(&files);
            let mut push = |recs: &[vigil_proto::FlowRecord]| sink.push(recs);
            pipeline::run(&inputs, &cfg, &mut push, None)
        });
        let stop_on_signal = stop.clone();
        let signals = tokio::spawn(async move {
            crate::shutdown_signal().await;
            tracing::info!("signal received: flushing open flows");
            stop_on_signal.store(true, Ordering::Relaxed);
        });
        let report = pipeline
            .await
            .map_err(|e| anyhow::anyhow!("pipeline task failed: {e}"))??;
        signals.abort();
        let drain = exporter.drain(settings.drain_timeout).await;
        eprint!("{}", crate::flows::summary(&report));
        let drain = drain?;
        eprintln!(
            "batches acknowledged up to seq {}; {} still in the spool; {} rejected by the collector",
            drain.acked, drain.pending, drain.rejected
        );
        for e in &report.input_errors {
            eprintln!("vigil: error: {e}");
        }
        if drain.pending > 0 {
            return Err(Failure::from(anyhow::anyhow!(
                "{} batch(es) not acknowledged within {:?}; they stay in {} and are sent at the next start",
                drain.pending,
                settings.drain_timeout,
                settings.exporter.spool.dir.display()
            )));
        }
        if drain.rejected > 0 {
            return Err(Failure::from(anyhow::anyhow!(
                "the collector rejected {} batch(es) as invalid and they were dropped; see the log",
                drain.rejected
            )));
        }
        if !report.input_errors.is_empty() {
            return Err(Failure::from(anyhow::anyhow!(
                "{} input(s) could not be read to the end; flows before the damage were sent",
                report.input_errors.len()
            )));
        }
        Ok(())
    })
}
