//! `vigil flows`: capture files to flow records.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use vigil_sensor::export::{Format, RecordWriter};
use vigil_sensor::flow::table::END_REASONS;
use vigil_sensor::flow::{FlowConfig, Timeouts};
use vigil_sensor::run::{self, Input, RunConfig, RunReport};

use crate::Failure;

fn duration(s: &str) -> Result<Duration, String> {
    let d =
        humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (examples: 30s, 10m, 1h)"))?;
    if d.is_zero() {
        return Err(format!("{s:?}: must be greater than zero"));
    }
    Ok(d)
}

/// Options shared by commands that run the flow pipeline.
#[derive(Debug, Args, Clone)]
pub struct EngineArgs {
    /// Flow worker threads, a core each. On capture files the workers share
    /// out the reading and decoding of the (mapped) file and each tracks
    /// the flows of its share of the address pairs; standard input is read
    /// by one more thread that feeds them.
    #[arg(long, default_value_t = NonZeroUsize::MIN)]
    pub workers: NonZeroUsize,
    /// Packets per batch applied to a flow table (and, for standard input,
    /// sent from the reader to a shard).
    #[arg(long, default_value = "256")]
    pub batch_size: NonZeroUsize,
    /// Idle timeout for every protocol and state, overriding the
    /// per-protocol defaults (Suricata's: tcp 60 s new / 600 s established /
    /// 60 s closed; udp, icmp, other 30 s new / 300 s established).
    #[arg(long, value_parser = duration)]
    pub idle_timeout: Option<Duration>,
    /// Active timeout: long flows emit an interim record this often.
    #[arg(long, value_parser = duration, default_value = "1800s")]
    pub active_timeout: Duration,
    /// Early reports, as the sensor makes them for detection: a one-way
    /// flow, or one with --report-min-packets unreported packets, emits an
    /// interim record at most this long after its first unreported packet.
    /// Off unless given.
    #[arg(long, value_parser = duration)]
    pub report_interval: Option<Duration>,
    /// Packets a two-way flow needs since its last record to be reported early.
    #[arg(long, default_value = "64", value_parser = clap::value_parser!(u32).range(1..))]
    pub report_min_packets: u32,
    /// Most flows tracked at once; beyond it the flow due soonest is evicted.
    #[arg(long, default_value = "1000000")]
    pub max_flows: NonZeroUsize,
    /// Community ID seed.
    #[arg(long, default_value = "0")]
    pub community_id_seed: u16,
    /// No application metadata (DNS, TLS, HTTP, SSH, ICS functions) in
    /// the records: layer 4 only.
    #[arg(long)]
    pub no_app: bool,
}

impl EngineArgs {
    /// The pipeline configuration these options describe.
    pub fn config(&self) -> RunConfig {
        RunConfig {
            workers: self.workers,
            batch_size: self.batch_size,
            flow: FlowConfig {
                timeouts: self.idle_timeout.map(Timeouts::uniform).unwrap_or_default(),
                active_timeout: self.active_timeout,
                report_interval: self.report_interval,
                report_min_packets: self.report_min_packets,
                max_flows: self.max_flows.get(),
                community_id_seed: self.community_id_seed,
                app_metadata: !self.no_app,
            },
            ..RunConfig::default()
        }
    }
}

/// Arguments of `vigil flows`.
#[derive(Debug, Args)]
pub struct FlowsArgs {
    /// Capture file (pcap or pcapng), `-` for standard input; repeat to read several in order.
    #[arg(short = 'r', long = "read", required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Output format: jsonl, csv, table or null.
    #[arg(long, default_value = "jsonl")]
    format: Format,
    /// Write records here instead of standard output ("-" is standard output).
    #[arg(short = 'o', long = "output", value_name = "PATH")]
    output: Option<PathBuf>,
    /// No summary or progress bar on standard error.
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

pub fn run(a: FlowsArgs) -> Result<(), Failure> {
    let out: Box<dyn Write + Send> = match &a.output {
        None => Box::new(io::stdout()),
        Some(p) if p.as_os_str() == "-" => Box::new(io::stdout()),
        Some(p) => Box::new(File::create(p).with_context(|| format!("creating {}", p.display()))?),
    };
    let mut writer = RecordWriter::new(BufWriter::with_capacity(1 << 20, out), a.format);
    let inputs = inputs_of(&a.files);
    let total: u64 = a
        .files
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let bar = (!a.quiet && io::stderr().is_terminal()).then(|| {
        let b = ProgressBar::new(total);
        b.set_style(
            ProgressStyle::with_template(
                "{spinner} {bytes}/{total_bytes} {wide_bar} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b
    });
    let progress = bar.clone().map(|b| move |n: u64| b.set_position(n));
    let progress_ref = progress.as_ref().map(|p| p as &(dyn Fn(u64) + Sync));
    let mut sink = |recs: &[vigil_proto::FlowRecord]| writer.write(recs);
    let report =
        run::run(&inputs, &a.engine.config(), &mut sink, progress_ref).map_err(|e| match e {
            run::RunError::Config(_) => Failure::usage(e),
            e => Failure::from(e),
        })?;
    writer.flush().context("writing flow records")?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if !a.quiet {
        eprint!("{}", summary(&report));
    }
    let failed = report.input_errors.len();
    for e in &report.input_errors {
        eprintln!("vigil: error: {e}");
    }
    if failed > 0 {
        return Err(Failure::from(anyhow::anyhow!(
            "{failed} of {} input(s) could not be read to the end; flows before the damage were written",
            a.files.len()
        )));
    }
    Ok(())
}

/// Pipeline inputs for `-r` arguments (`-` is standard input).
pub fn inputs_of(files: &[PathBuf]) -> Vec<Input<'static>> {
    files
        .iter()
        .map(|p| {
            if p.as_os_str() == "-" {
                Input::Stdin
            } else {
                Input::File(p.clone())
            }
        })
        .collect()
}

/// The end-of-run summary printed on standard error.
pub fn summary(r: &RunReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "packets: {}  bytes: {}  flows: {}  records: {}  elapsed: {:.3} s  rate: {:.2} Mpps",
        r.packets,
        r.wire_bytes,
        r.table.flows,
        r.table.record_total(),
        r.elapsed.as_secs_f64(),
        r.mpps()
    );
    let reasons: Vec<String> = END_REASONS
        .iter()
        .zip(r.table.records)
        .filter(|(_, n)| *n > 0)
        .map(|(e, n)| format!("{e} {n}"))
        .collect();
    if !reasons.is_empty() {
        let _ = writeln!(s, "records by end reason: {}", reasons.join(", "));
    }
    let errs: Vec<String> = r
        .decode
        .error_counts()
        .map(|(e, n)| format!("{} {n}", e.as_str()))
        .collect();
    let _ = writeln!(
        s,
        "decode errors: {}{}  non-IP frames: {}",
        r.decode.error_total(),
        if errs.is_empty() {
            String::new()
        } else {
            format!(" ({})", errs.join(", "))
        },
        r.decode.non_ip
    );
    if r.decode.fragments > 0 {
        let _ = writeln!(
            s,
            "fragments: {}  datagrams reassembled: {}  incomplete at end: {}  timed out: {}  evicted: {}",
            r.decode.fragments,
            r.decode.reassembled,
            r.fragments_pending,
            r.decode.fragments_timed_out,
            r.decode.fragments_evicted
        );
    }
    let app = &r.table.app;
    if app.flows > 0 || app.errors.iter().any(|&n| n > 0) {
        let errs: Vec<String> = app
            .error_counts()
            .map(|(e, n)| format!("{} {n}", e.as_str()))
            .collect();
        let _ = writeln!(
            s,
            "application metadata: {} flows, {} payloads read, unreadable {}{}",
            app.flows,
            app.payloads,
            app.errors.iter().sum::<u64>(),
            if errs.is_empty() {
                String::new()
            } else {
                format!(" ({})", errs.join(", "))
            },
        );
    }
    if r.worker_packets.len() > 1 {
        let per: Vec<String> = r.worker_packets.iter().map(u64::to_string).collect();
        let drops: Vec<String> = r
            .worker_kernel
            .iter()
            .map(|k| k.drops.to_string())
            .collect();
        let _ = writeln!(
            s,
            "packets per worker: {}  kernel drops per worker: {}",
            per.join(", "),
            drops.join(", ")
        );
    }
    if let Some(c) = r.cpu_ns {
        let _ = writeln!(
            s,
            "capture cpu: {:.3} s  ({:.0} ns per packet)",
            c as f64 / 1e9,
            c as f64 / r.packets.max(1) as f64
        );
    }
    if let Some(k) = r.kernel {
        let pct = if k.packets > 0 {
            100.0 * k.drops as f64 / k.packets as f64
        } else {
            0.0
        };
        let _ = writeln!(
            s,
            "kernel: received {}  dropped {} ({pct:.3}%)  ring freezes {}",
            k.packets, k.drops, k.freezes
        );
    }
    if r.table.evicted > 0 {
        let _ = writeln!(s, "flows evicted (table full): {}", r.table.evicted);
    }
    if r.handoff_drops > 0 {
        let _ = writeln!(
            s,
            "flow records dropped at the hand-off to the exporter (its buffer full): {}",
            r.handoff_drops
        );
    }
    s
}
