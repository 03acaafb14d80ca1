//! `vigil sensor`: capture → flows → the collector, through the disk spool
//! (and/or JSON lines to a file).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use clap::Args;
use vigil_proto::FlowRecord;
use vigil_sensor::capture::LiveError;
use vigil_sensor::config::{CaptureSettings, SensorFile, SourceKind, TlsSection};
use vigil_sensor::export::grpc::Exporter;
use vigil_sensor::export::{Format, RecordWriter};
use vigil_sensor::metrics::SensorMetrics;
use vigil_sensor::run::{self, LiveCounters, RunConfig, RunError, RunReport};

use crate::Failure;

/// Arguments of `vigil sensor`.
#[derive(Debug, Args)]
pub struct SensorArgs {
    /// Capture file (pcap or pcapng) to read, `-` for standard input;
    /// repeat to read several in order.
    #[arg(
        short = 'r',
        long = "read",
        value_name = "FILE",
        conflicts_with = "interface"
    )]
    files: Vec<PathBuf>,
    /// Capture live on this interface (needs CAP_NET_RAW).
    #[arg(short = 'i', long, value_name = "IF")]
    interface: Option<String>,
    /// Live source: af-packet (TPACKET_V3 ring, one fanout socket per
    /// worker) or libpcap (needs the libpcap build feature).
    #[arg(long, value_name = "SOURCE")]
    source: Option<String>,
    /// Capture filter, tcpdump syntax (needs the libpcap build feature).
    #[arg(long, value_name = "EXPR")]
    bpf: Option<String>,
    /// Promiscuous mode (SPAN and tap ports).
    #[arg(long)]
    promisc: bool,
    /// AF_PACKET ring block size per worker (power of two, e.g. 1MiB).
    #[arg(long, value_name = "SIZE")]
    ring_block_size: Option<String>,
    /// AF_PACKET ring blocks per worker.
    #[arg(long, value_name = "N")]
    ring_blocks: Option<u32>,
    /// AF_PACKET fanout group id (default from the process id).
    #[arg(long, value_name = "ID")]
    fanout_group: Option<u16>,
    /// How AF_PACKET spreads packets over workers: address-pair (exact for
    /// tunnels and IPv6 fragments) or flow-hash (the kernel's flow hash).
    #[arg(long, value_name = "MODE")]
    fanout: Option<String>,
    /// Also write flow records as JSON lines here (`-`: standard output);
    /// without --collector, the only output.
    #[arg(short = 'o', long, value_name = "FILE")]
    output: Option<PathBuf>,
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
    /// One idle timeout for every protocol (e.g. 30s), instead of the
    /// per-protocol defaults.
    #[arg(long, value_name = "DUR")]
    idle_timeout: Option<String>,
    /// Serve Prometheus metrics on this address (GET /metrics), e.g.
    /// 127.0.0.1:9465.
    #[arg(long, value_name = "IP:PORT")]
    metrics_listen: Option<String>,
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
        if let Some(v) = &self.idle_timeout {
            f.flow.idle_timeout = Some(v.clone());
        }
        if let Some(v) = &self.interface {
            f.capture.interface = Some(v.clone());
        }
        if !self.files.is_empty() {
            // Files given on the command line replace a configured interface.
            f.capture.interface = None;
        }
        if let Some(v) = &self.source {
            f.capture.source = v.clone();
        }
        if let Some(v) = &self.bpf {
            f.capture.bpf = Some(v.clone());
        }
        if self.promisc {
            f.capture.promisc = true;
        }
        if let Some(v) = &self.ring_block_size {
            f.capture.block_size = v.clone();
        }
        if let Some(v) = self.ring_blocks {
            f.capture.block_count = v;
        }
        if let Some(v) = self.fanout_group {
            f.capture.fanout_group = Some(v);
        }
        if let Some(v) = &self.fanout {
            f.capture.fanout = v.clone();
        }
        if let Some(v) = &self.output {
            f.output = Some(v.clone());
        }
        if let Some(v) = &self.metrics_listen {
            f.metrics_listen = Some(v.clone());
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

/// A live source, opened before anything else starts so that a missing
/// capability, a wrong interface name or a bad filter fails at once.
enum Live {
    #[cfg(target_os = "linux")]
    AfPacket(vigil_sensor::run::live::AfPacketCapture),
    #[cfg(feature = "libpcap")]
    Libpcap(Box<vigil_sensor::capture::libpcap::PcapLive>),
}

fn live_failure(e: LiveError) -> Failure {
    if e.is_usage() {
        Failure::usage(e)
    } else {
        Failure::from(e)
    }
}

fn open_live(c: &CaptureSettings, cfg: &RunConfig) -> Result<Live, Failure> {
    match c.source {
        #[cfg(target_os = "linux")]
        SourceKind::AfPacket => {
            use vigil_sensor::run::live::{AfPacketCapture, LiveSource};
            let filter = match &c.bpf {
                None => None,
                Some(expr) => Some(compile_bpf(&c.interface, expr)?),
            };
            let src = LiveSource {
                interface: c.interface.clone(),
                ring: c.ring,
                promisc: c.promisc,
                fanout_group: c.fanout_group,
                fanout_mode: c.fanout,
                filter,
            };
            AfPacketCapture::open(&src, cfg.workers)
                .map(Live::AfPacket)
                .map_err(live_failure)
        }
        #[cfg(feature = "libpcap")]
        SourceKind::Libpcap => {
            let buffer = c.ring.block_size.saturating_mul(c.ring.block_count);
            vigil_sensor::capture::libpcap::PcapLive::open(
                &c.interface,
                c.promisc,
                buffer,
                c.bpf.as_deref(),
            )
            .map(|p| Live::Libpcap(Box::new(p)))
            .map_err(live_failure)
        }
        #[allow(unreachable_patterns)]
        other => Err(live_failure(LiveError::Unavailable(format!(
            "capture source {other:?} is not in this build (the libpcap source needs `--features libpcap`)"
        )))),
    }
}

#[cfg(all(target_os = "linux", feature = "libpcap"))]
fn compile_bpf(
    interface: &str,
    expr: &str,
) -> Result<vigil_sensor::capture::af_packet::BpfFilter, Failure> {
    let link = vigil_sensor::capture::af_packet::interface_link(interface).map_err(live_failure)?;
    vigil_sensor::capture::libpcap::compile_filter(expr, link).map_err(live_failure)
}

#[cfg(all(target_os = "linux", not(feature = "libpcap")))]
fn compile_bpf(
    _interface: &str,
    expr: &str,
) -> Result<vigil_sensor::capture::af_packet::BpfFilter, Failure> {
    Err(live_failure(LiveError::Filter {
        expr: expr.to_string(),
        message: "filters are compiled by libpcap: build vigil with `--features libpcap`".into(),
    }))
}

impl Live {
    fn run(
        self,
        cfg: &RunConfig,
        sink: &mut (dyn FnMut(&[FlowRecord]) -> io::Result<()> + Send),
    ) -> Result<RunReport, RunError> {
        match self {
            #[cfg(target_os = "linux")]
            Live::AfPacket(c) => c.run(cfg, sink),
            #[cfg(feature = "libpcap")]
            Live::Libpcap(mut p) => run::run_source(p.as_mut(), cfg, sink),
        }
    }
}

/// JSON lines to a file or standard output, flushed after every batch of
/// records so that a live capture's flows show up as they end.
struct Output(RecordWriter<BufWriter<Box<dyn Write + Send>>>);

impl Output {
    fn open(path: &PathBuf) -> Result<Output, Failure> {
        let w: Box<dyn Write + Send> = if path.as_os_str() == "-" {
            Box::new(io::stdout())
        } else {
            Box::new(
                File::create(path)
                    .with_context(|| format!("creating {}", path.display()))
                    .map_err(Failure::usage)?,
            )
        };
        Ok(Output(RecordWriter::new(
            BufWriter::with_capacity(1 << 16, w),
            Format::Jsonl,
        )))
    }

    fn write(&mut self, recs: &[FlowRecord]) -> io::Result<()> {
        self.0.write(recs)?;
        self.0.flush()
    }
}

pub fn run(a: SensorArgs) -> Result<(), Failure> {
    let settings = a.file_config()?.validate().map_err(Failure::usage)?;
    if a.check_config {
        eprintln!("configuration OK");
        return Ok(());
    }
    if a.files.is_empty() && settings.capture.is_none() {
        return Err(Failure::usage(anyhow::anyhow!(
            "nothing to capture: give -r FILE or --interface IF (or [capture] interface)"
        )));
    }
    let mut cfg = settings.pipeline.clone();
    let live_source = match &settings.capture {
        Some(c) if a.files.is_empty() => {
            let l = open_live(c, &cfg)?;
            // Operators and scripts wait for this line: capture has begun.
            eprintln!(
                "vigil sensor: capturing on {} ({}, {} worker(s){})",
                c.interface,
                match c.source {
                    SourceKind::AfPacket => "af-packet",
                    SourceKind::Libpcap => "libpcap",
                },
                cfg.workers,
                c.bpf
                    .as_deref()
                    .map(|f| format!(", filter {f:?}"))
                    .unwrap_or_default()
            );
            Some(l)
        }
        _ => None,
    };
    let mut output = settings.output.as_ref().map(Output::open).transpose()?;
    let rt = crate::runtime()?;
    rt.block_on(async move {
        let live = Arc::new(LiveCounters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let exporter = match &settings.exporter {
            Some(e) => Some(Exporter::start(e.clone(), live.clone()).map_err(Failure::usage)?),
            None => None,
        };
        let sink = exporter.as_ref().map(|e| e.sink());
        if let Some(addr) = settings.metrics_listen {
            let metrics = SensorMetrics {
                sensor_id: settings
                    .exporter
                    .as_ref()
                    .map(|e| e.sensor_id.clone())
                    .unwrap_or_default(),
                source: settings
                    .capture
                    .as_ref()
                    .filter(|_| a.files.is_empty())
                    .map_or_else(|| "file".to_string(), |c| c.interface.clone()),
                live: live.clone(),
                export: exporter.as_ref().map(Exporter::monitor),
            };
            let bound = metrics.serve(addr).await.map_err(Failure::usage)?;
            // Scripts wait for this line.
            eprintln!("vigil sensor: metrics on http://{bound}/metrics");
        }
        cfg.live = Some(live);
        cfg.stop = Some(stop.clone());
        // Live capture never waits for the exporter (files do: nothing is
        // lost by waiting for a disk when reading one).
        if let Some(c) = &settings.capture {
            cfg.lossy_handoff = Some(c.handoff_records);
        }
        let files = a.files.clone();
        if let Some(e) = &settings.exporter {
            tracing::info!(
                sensor = %e.sensor_id,
                collector = %e.collector,
                spool = %e.spool.dir.display(),
                "sensor started"
            );
        }
        let pipeline = tokio::task::spawn_blocking(move || {
            let mut push = |recs: &[FlowRecord]| {
                if let Some(s) = &sink {
                    s.push(recs)?;
                }
                if let Some(o) = &mut output {
                    o.write(recs)?;
                }
                Ok(())
            };
            match live_source {
                Some(l) => l.run(&cfg, &mut push),
                None => {
                    let inputs = crate::flows::inputs_of(&files);
                    run::run(&inputs, &cfg, &mut push, None)
                }
            }
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
        eprint!("{}", crate::flows::summary(&report));
        for e in &report.input_errors {
            eprintln!("vigil: error: {e}");
        }
        for e in &report.live_errors {
            eprintln!("vigil: error: {e}");
        }
        if let (Some(exporter), Some(ecfg)) = (exporter, &settings.exporter) {
            let drain = exporter.drain(settings.drain_timeout).await?;
            eprintln!(
                "batches acknowledged up to seq {}; {} still in the spool; {} rejected by the collector",
                drain.acked, drain.pending, drain.rejected
            );
            if drain.seq_resets > 0 {
                eprintln!(
                    "vigil: warning: the collector holds batches of sensor id {:?} from another spool: \
                     this spool (incarnation {:016x}) started its sequence numbers again; both are stored \
                     (a lost spool, or another host using this id)",
                    ecfg.sensor_id, drain.incarnation
                );
            }
            if drain.pending > 0 {
                return Err(Failure::from(anyhow::anyhow!(
                    "{} batch(es) not acknowledged within {:?}; they stay in {} and are sent at the next start",
                    drain.pending,
                    settings.drain_timeout,
                    ecfg.spool.dir.display()
                )));
            }
            if drain.rejected > 0 {
                return Err(Failure::from(anyhow::anyhow!(
                    "the collector rejected {} batch(es) as invalid and they were dropped; see the log",
                    drain.rejected
                )));
            }
        }
        if !report.live_errors.is_empty() {
            return Err(Failure::from(anyhow::anyhow!(
                "capture failed; the flows seen until then were flushed"
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
