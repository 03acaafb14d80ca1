//! The sensor's run modes: how packets get from a capture to flow tables
//! and records to a sink. One entry point for capture files and standard
//! input ([`run()`]), one per other source:
//!
//! - [`shared`]: the file workers, what capture files and captures in
//!   memory are read with: N workers share a mapped file's reading and
//!   decoding out, each tracking the flows of its share of the address
//!   pairs; no reader thread.
//! - [`dispatch`]: one reader thread decoding every frame and dispatching
//!   packets by flow to N shards; standard input, pipes, the libpcap
//!   source ([`dispatch::run_source`]).
//! - [`live`]: AF_PACKET fanout, one socket and one worker per core.
//! - [`split`]: workers on streams split by flow beforehand, the model of
//!   AF_PACKET fanout for benchmarks.
//!
//! Every mode gives the same records for a capture (tests hold them to
//! it), with any number of workers. This module holds what they share: the
//! configuration, the report, the counters a running sensor publishes, and
//! the sink thread.

pub mod dispatch;
pub mod live;
pub mod shared;
pub mod split;

pub use dispatch::run_source;

use std::fs::File;
use std::io;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TryRecvError, bounded};
use hdrhistogram::Histogram;
use thiserror::Error;
use vigil_proto::{EndReason, FlowRecord};

use crate::app::{AppError, AppStats};
use crate::capture::mapped::MappedFile;
use crate::capture::{CaptureError, KernelStats, LiveError};
use crate::decode::{DecodeError, DecodeStats};
use crate::flow::FlowConfig;
use crate::flow::table::{FlowTable, TableStats};

/// How the pipeline runs.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Flow shards (worker threads).
    pub workers: NonZeroUsize,
    /// Packets per batch.
    pub batch_size: NonZeroUsize,
    /// Batches queued per shard before the reader waits.
    pub queue_depth: NonZeroUsize,
    /// Flow tracking.
    pub flow: FlowConfig,
    /// Counters published while the pipeline runs (for the exporter's stats).
    pub live: Option<Arc<LiveCounters>>,
    /// Set to stop reading; open flows are then flushed with end reason
    /// `shutdown` (SIGTERM).
    pub stop: Option<Arc<AtomicBool>>,
    /// How capture files reach the workers.
    pub file_mode: FileMode,
    /// Live capture: hand records to the sink without ever waiting,
    /// buffering at most this many (see `Handoff`); beyond, records are
    /// dropped and counted ([`LiveCounters::handoff_drops`]). `None`
    /// (files): the workers wait for the sink, nothing is lost.
    pub lossy_handoff: Option<usize>,
}

/// Records the hand-off to the sink buffers for a live capture by default:
/// 1,048,576 (184 bytes each: about 190 MiB). That is 1.6 s of the
/// highest record rate measured (the realistic mix, 64-byte frames, two
/// workers: 652,000 records/s, BENCHMARKS.md) and 10 s at 100,000 new
/// flows a second, a busy 10 Gb/s link.
pub const HANDOFF_RECORDS: usize = 1 << 20;

/// How the packets of capture files (and captures in memory) reach the
/// flow workers. Standard input is always read by the dispatcher.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FileMode {
    /// Shared-nothing workers ([`shared::run_shared`]): each maps the
    /// whole file and decodes the frames whose address pair it owns; no
    /// reader thread, so `workers` threads use `workers` cores. Inputs that
    /// cannot be mapped (pipes, FIFOs) fall back to the dispatcher.
    #[default]
    Shared,
    /// One reader thread decodes every frame and dispatches the packets by
    /// flow to the workers over channels (the pipeline drawn above).
    Dispatch,
}

/// Counters a running pipeline publishes: plain per-thread counts stored
/// into these atomics every 65,536 packets and per batch, so
/// the hot path never touches shared memory per packet.
#[derive(Debug, Default)]
pub struct LiveCounters {
    /// Frames read.
    pub packets: AtomicU64,
    /// Frame bytes on the wire.
    pub bytes: AtomicU64,
    /// Frames without IP.
    pub non_ip: AtomicU64,
    /// Malformed frames, indexed like [`DecodeError::ALL`].
    pub decode_errors: [AtomicU64; DecodeError::ALL.len()],
    /// Flows evicted from full tables.
    pub evicted: AtomicU64,
    /// Packets the kernel handed to live capture sockets (incl. drops).
    pub kernel_packets: AtomicU64,
    /// Packets the kernel dropped because a capture ring was full.
    pub kernel_drops: AtomicU64,
    /// Flow records dropped at the hand-off to the sink (the exporter)
    /// because its buffer was full: a stalled disk or collector path. Live
    /// capture only; reported as `channel_full_drops`.
    pub handoff_drops: AtomicU64,
    /// Flows whose application protocol was recognized.
    pub app_flows: AtomicU64,
    /// Payloads the application layer read.
    pub app_payloads: AtomicU64,
    /// Unreadable application data, indexed like [`AppError::ALL`].
    pub app_errors: [AtomicU64; AppError::ALL.len()],
    /// Flows the tables hold now, all workers.
    pub active_flows: AtomicU64,
    /// Flow records the sink took (the exporter's spool, the JSON output).
    pub records: AtomicU64,
}

/// What a worker has published to [`LiveCounters`] so far (workers add
/// their growth, so several can share the counters).
#[derive(Clone, Debug, Default)]
pub(crate) struct Published {
    packets: u64,
    bytes: u64,
    non_ip: u64,
    errors: [u64; DecodeError::ALL.len()],
    evicted: u64,
    kernel: KernelStats,
    app: AppStats,
    active: u64,
}

impl Published {
    pub(crate) fn of(
        packets: u64,
        bytes: u64,
        d: &DecodeStats,
        table: &FlowTable,
        kernel: KernelStats,
    ) -> Published {
        Published {
            packets,
            bytes,
            non_ip: d.non_ip,
            errors: d.errors,
            evicted: table.stats.evicted,
            kernel,
            app: table.stats.app.clone(),
            active: table.len() as u64,
        }
    }
}

impl LiveCounters {
    fn publish_reader(&self, packets: u64, bytes: u64, d: &DecodeStats) {
        self.packets.store(packets, Ordering::Relaxed);
        self.bytes.store(bytes, Ordering::Relaxed);
        self.non_ip.store(d.non_ip, Ordering::Relaxed);
        for (a, v) in self.decode_errors.iter().zip(d.errors) {
            a.store(v, Ordering::Relaxed);
        }
    }

    /// Adds what one worker counted since it last published.
    pub(crate) fn add_worker(&self, last: &mut Published, now: &Published) {
        let add = |a: &AtomicU64, old: u64, new: u64| {
            if new > old {
                a.fetch_add(new - old, Ordering::Relaxed);
            }
        };
        add(&self.packets, last.packets, now.packets);
        add(&self.bytes, last.bytes, now.bytes);
        add(&self.non_ip, last.non_ip, now.non_ip);
        for ((a, o), n) in self.decode_errors.iter().zip(last.errors).zip(now.errors) {
            add(a, o, n);
        }
        add(&self.evicted, last.evicted, now.evicted);
        add(
            &self.kernel_packets,
            last.kernel.packets,
            now.kernel.packets,
        );
        add(&self.kernel_drops, last.kernel.drops, now.kernel.drops);
        // The only figure that falls as well as rises.
        if now.active >= last.active {
            add(&self.active_flows, last.active, now.active);
        } else {
            self.active_flows
                .fetch_sub(last.active - now.active, Ordering::Relaxed);
        }
        add(&self.app_flows, last.app.flows, now.app.flows);
        add(&self.app_payloads, last.app.payloads, now.app.payloads);
        for ((a, o), n) in self
            .app_errors
            .iter()
            .zip(last.app.errors)
            .zip(now.app.errors)
        {
            add(a, o, n);
        }
        *last = now.clone();
    }

    /// Unreadable application data by reason name, non-zero ones only.
    pub fn app_errors_by_reason(&self) -> Vec<(&'static str, u64)> {
        AppError::ALL
            .iter()
            .zip(&self.app_errors)
            .map(|(e, a)| (e.as_str(), a.load(Ordering::Relaxed)))
            .filter(|(_, v)| *v > 0)
            .collect()
    }

    /// Decode errors by reason name, non-zero ones only.
    pub fn decode_errors_by_reason(&self) -> Vec<(&'static str, u64)> {
        DecodeError::ALL
            .iter()
            .zip(&self.decode_errors)
            .map(|(e, a)| (e.as_str(), a.load(Ordering::Relaxed)))
            .filter(|(_, v)| *v > 0)
            .collect()
    }
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            workers: NonZeroUsize::MIN,
            batch_size: NonZeroUsize::new(256).unwrap_or(NonZeroUsize::MIN),
            queue_depth: NonZeroUsize::new(8).unwrap_or(NonZeroUsize::MIN),
            flow: FlowConfig::default(),
            live: None,
            stop: None,
            file_mode: FileMode::default(),
            lossy_handoff: None,
        }
    }
}

/// One input of a run.
#[derive(Clone, Debug)]
pub enum Input<'a> {
    /// A capture file on disk.
    File(PathBuf),
    /// A capture streamed on standard input (`-r -`).
    Stdin,
    /// A capture file already in memory (benchmarks, tests).
    Memory {
        /// Name used in messages.
        name: String,
        /// The file's bytes.
        bytes: &'a [u8],
    },
}

impl Input<'_> {
    fn name(&self) -> String {
        match self {
            Input::File(p) => p.display().to_string(),
            Input::Memory { name, .. } => name.clone(),
            Input::Stdin => "<stdin>".to_string(),
        }
    }
}

/// The run could not go on.
#[derive(Debug, Error)]
pub enum RunError {
    /// The sink refused records.
    #[error("writing flow records: {0}")]
    Sink(#[source] io::Error),
    /// A worker thread panicked; a bug.
    #[error("flow worker {0} failed")]
    Worker(usize),
    /// The flow configuration is invalid.
    #[error("invalid flow configuration: {0}")]
    Config(String),
}

/// Latency of the pipeline's stages.
#[derive(Clone, Debug)]
pub struct StageTimings {
    /// Reader: capture + decode + dispatch, ns per packet (per batch of packets).
    pub decode_ns: Histogram<u64>,
    /// Shard: flow update, ns per packet (per batch).
    pub update_ns: Histogram<u64>,
    /// Time a batch waited in its channel, ns.
    pub queue_ns: Histogram<u64>,
    /// Shared-nothing workers ([`shared`]): read + decode + flow
    /// update, ns per packet (per batch of packets).
    pub worker_ns: Histogram<u64>,
}

pub(crate) fn histogram() -> Histogram<u64> {
    // 1 ns .. 100 s with 3 significant digits; cannot fail with these bounds.
    Histogram::new_with_bounds(1, 100_000_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).expect("histogram"))
}

impl Default for StageTimings {
    fn default() -> Self {
        StageTimings {
            decode_ns: histogram(),
            update_ns: histogram(),
            queue_ns: histogram(),
            worker_ns: histogram(),
        }
    }
}

/// What a run did.
#[derive(Debug, Default)]
pub struct RunReport {
    /// Frames read.
    pub packets: u64,
    /// Flow records dropped at the hand-off to the sink (live capture
    /// whose sink fell behind by more than its buffer).
    pub handoff_drops: u64,
    /// Frame bytes on the wire (original lengths).
    pub wire_bytes: u64,
    /// Decoder counters.
    pub decode: DecodeStats,
    /// Flow table counters, summed over shards.
    pub table: TableStats,
    /// Wall time.
    pub elapsed: Duration,
    /// Inputs that could not be read to their end, in order.
    pub input_errors: Vec<CaptureError>,
    /// Datagrams still waiting for fragments at the end.
    pub fragments_pending: u64,
    /// Table memory at the end of input (before the final flush), all shards.
    pub table_bytes: u64,
    /// Flows held at the end of input, all shards.
    pub flows_at_end: u64,
    /// Stage latencies.
    pub timings: StageTimings,
    /// Kernel counters of a live source (`None` for files).
    pub kernel: Option<KernelStats>,
    /// Failures of a live source; its flows were flushed.
    pub live_errors: Vec<LiveError>,
    /// Packets each capture worker read (live AF_PACKET fanout), in order.
    pub worker_packets: Vec<u64>,
    /// Each capture worker's kernel counters (live AF_PACKET), in order.
    pub worker_kernel: Vec<KernelStats>,
    /// CPU time of the capture workers (live AF_PACKET), ns: capture,
    /// decode and flow tracking, idle polling included.
    pub cpu_ns: Option<u64>,
}

impl RunReport {
    /// Millions of packets per second of wall time.
    pub fn mpps(&self) -> f64 {
        self.packets as f64 / self.elapsed.as_secs_f64().max(1e-9) / 1e6
    }
}

/// Yielding retries before a channel operation blocks, when every thread
/// has a core of its own.
const SPINS: usize = 200;

/// How long to spin: only when the reader and the workers each have a core;
/// with more threads than cores a spinning thread steals the core that the
/// thread it waits for needs.
pub(crate) fn spins_for(workers: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if workers < cores { SPINS } else { 0 }
}

/// Receives the next message, spinning (yielding) up to `spins` times
/// before parking.
pub(crate) fn recv_spinning<T>(rx: &Receiver<T>, spins: usize) -> Option<T> {
    for _ in 0..spins {
        match rx.try_recv() {
            Ok(b) => return Some(b),
            Err(TryRecvError::Empty) => std::thread::yield_now(),
            Err(TryRecvError::Disconnected) => return None,
        }
    }
    rx.recv().ok()
}

/// Records per batch when a table is flushed at the end of input.
const FLUSH_BATCH: usize = 4096;

/// Ends a worker's table at the end of input: measures it (bytes, flows
/// held) before the flush, then flushes every flow to `out`.
pub(crate) fn finish_table(table: &mut FlowTable, out: &Handoff, reason: EndReason) -> (u64, u64) {
    let measured = (table.memory_bytes() as u64, table.len() as u64);
    table.flush_batched(reason, FLUSH_BATCH, |records| {
        let _ = out.send(records);
    });
    if !table.records().is_empty() {
        let _ = out.send(table.take_records());
    }
    measured
}

/// Waits for the sink thread and turns its failure into the run's.
pub(crate) fn join_sink(
    writer: std::thread::ScopedJoinHandle<'_, io::Result<()>>,
) -> Result<(), RunError> {
    match writer.join() {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(RunError::Sink(e)),
        Err(_) => Err(RunError::Sink(io::Error::other("sink thread panicked"))),
    }
}

/// Checks the flow configuration, naming every bad key.
pub(crate) fn validate(cfg: &RunConfig) -> Result<(), RunError> {
    cfg.flow.validate().map_err(|errs| {
        RunError::Config(
            errs.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        )
    })
}

/// Progress callback: bytes of input consumed so far.
pub type Progress<'a> = &'a (dyn Fn(u64) + Sync);

/// Runs the inputs through decode and the flow workers, handing records to `sink`.
///
/// Inputs are read one after another. An input that is damaged stops at the
/// damage: its earlier packets are kept, the error is recorded in the report
/// and the next input is read. The sink runs on its own thread. Files and
/// captures in memory go to shared-nothing workers unless `cfg.file_mode`
/// says otherwise; standard input, and files that cannot be mapped, to the
/// dispatcher. Both give the same records.
pub fn run(
    inputs: &[Input<'_>],
    cfg: &RunConfig,
    sink: &mut (dyn FnMut(&[FlowRecord]) -> io::Result<()> + Send),
    progress: Option<Progress<'_>>,
) -> Result<RunReport, RunError> {
    if cfg.file_mode == FileMode::Shared
        && let Some(opened) = open_shared(inputs)
    {
        return run_opened(opened, cfg, sink, progress);
    }
    dispatch::run_dispatch(inputs, cfg, sink, progress)
}

/// An input made ready for the shared-nothing workers.
enum Shared<'a> {
    Mapped(PathBuf, MappedFile),
    Memory(PathBuf, &'a [u8]),
}

impl Shared<'_> {
    fn input(&self) -> shared::SharedInput<'_> {
        match self {
            Shared::Mapped(name, m) => shared::SharedInput {
                name,
                bytes: m,
                mapping: Some(m),
            },
            Shared::Memory(name, bytes) => shared::SharedInput {
                name,
                bytes,
                mapping: None,
            },
        }
    }
}

/// Opens and maps every input (an input that cannot be opened is an error
/// in its place), or `None` when one cannot be shared: standard input, a
/// pipe, a file the system will not map.
fn open_shared<'a>(inputs: &[Input<'a>]) -> Option<Vec<Result<Shared<'a>, CaptureError>>> {
    let mut opened = Vec::with_capacity(inputs.len());
    for input in inputs {
        opened.push(match input {
            Input::Stdin => return None,
            Input::Memory { name, bytes } => Ok(Shared::Memory(PathBuf::from(name), bytes)),
            Input::File(p) => match File::open(p) {
                Err(source) => Err(CaptureError::Io {
                    path: p.clone(),
                    source,
                }),
                Ok(f) => match MappedFile::map(&f) {
                    Ok(Some(m)) => Ok(Shared::Mapped(p.clone(), m)),
                    Ok(None) => return None,
                    Err(e) => {
                        tracing::debug!(path = %p.display(), error = %e, "not mapped; reading through the dispatcher");
                        return None;
                    }
                },
            },
        });
    }
    Some(opened)
}

fn run_opened(
    opened: Vec<Result<Shared<'_>, CaptureError>>,
    cfg: &RunConfig,
    sink: &mut (dyn FnMut(&[FlowRecord]) -> io::Result<()> + Send),
    progress: Option<Progress<'_>>,
) -> Result<RunReport, RunError> {
    let mut sources = Vec::with_capacity(opened.len());
    // Open failures, each to be reported in its input's place.
    let mut failures = Vec::with_capacity(opened.len());
    for o in opened {
        match o {
            Ok(src) => {
                sources.push(src);
                failures.push(None);
            }
            Err(e) => failures.push(Some(e)),
        }
    }
    let readable: Vec<_> = sources.iter().map(Shared::input).collect();
    let run = shared::run_shared(&readable, cfg, sink, progress)?;
    let mut report = run.report;
    let mut read_errors = run.input_errors.into_iter();
    for failure in failures {
        let e = failure.or_else(|| read_errors.next().flatten());
        report.input_errors.extend(e);
    }
    Ok(report)
}

/// How workers hand records to the sink thread. For files the hand-off
/// waits when the sink is behind (back-pressure reaches the reader, nothing
/// is lost). For live capture ([`RunConfig::lossy_handoff`]) it never
/// waits: a worker that waited would leave its ring to fill and the kernel
/// to drop packets unseen; records beyond the buffer are dropped here and
/// counted instead ([`LiveCounters::handoff_drops`]).
#[derive(Clone, Debug)]
pub(crate) struct Handoff {
    tx: Sender<Vec<FlowRecord>>,
    lossy: Option<Arc<Lossy>>,
}

#[derive(Debug)]
struct Lossy {
    /// Records sent and not yet taken by the sink.
    buffered: std::sync::atomic::AtomicUsize,
    capacity: usize,
    drops: Option<Arc<LiveCounters>>,
    /// Dropped here, for runs without live counters.
    dropped: AtomicU64,
}

impl Handoff {
    /// Hands `records` over; `Err` when the sink is gone (or, lossy, when
    /// they were dropped).
    pub(crate) fn send(&self, records: Vec<FlowRecord>) -> Result<(), ()> {
        let Some(l) = &self.lossy else {
            return self.tx.send(records).map_err(|_| ());
        };
        let n = records.len();
        let before = l.buffered.fetch_add(n, Ordering::AcqRel);
        if before + n > l.capacity && before > 0 {
            l.buffered.fetch_sub(n, Ordering::AcqRel);
            l.dropped.fetch_add(n as u64, Ordering::Relaxed);
            if let Some(c) = &l.drops {
                c.handoff_drops.fetch_add(n as u64, Ordering::Relaxed);
            }
            return Err(());
        }
        self.tx.send(records).map_err(|_| ())
    }

    /// A handle on the count of records dropped here (that does not
    /// keep the channel open).
    pub(crate) fn drops(&self) -> HandoffDrops {
        HandoffDrops(self.lossy.clone())
    }
}

/// Records a lossy [`Handoff`] dropped.
#[derive(Clone, Debug)]
pub(crate) struct HandoffDrops(Option<Arc<Lossy>>);

impl HandoffDrops {
    /// Dropped so far.
    pub(crate) fn get(&self) -> u64 {
        self.0
            .as_ref()
            .map_or(0, |l| l.dropped.load(Ordering::Relaxed))
    }
}

/// The sink thread of a run: hands every batch of records to `sink`; if the
/// sink fails, sets `failed` (the readers stop) and ends with the error.
pub(crate) fn spawn_sink<'scope, 'env>(
    s: &'scope std::thread::Scope<'scope, 'env>,
    cfg: &RunConfig,
    sink: &'scope mut (dyn FnMut(&[FlowRecord]) -> io::Result<()> + Send),
    failed: &'scope AtomicBool,
) -> (
    Handoff,
    std::thread::ScopedJoinHandle<'scope, io::Result<()>>,
) {
    let (tx, rx, lossy) = match cfg.lossy_handoff {
        None => {
            let (tx, rx) = bounded::<Vec<FlowRecord>>(64);
            (tx, rx, None)
        }
        Some(capacity) => {
            let (tx, rx) = crossbeam_channel::unbounded::<Vec<FlowRecord>>();
            let l = Arc::new(Lossy {
                buffered: std::sync::atomic::AtomicUsize::new(0),
                capacity: capacity.max(1),
                drops: cfg.live.clone(),
                dropped: AtomicU64::new(0),
            });
            (tx, rx, Some(l))
        }
    };
    let taken = lossy.clone();
    let live = cfg.live.clone();
    let writer = s.spawn(move || -> io::Result<()> {
        for recs in rx {
            let r = sink(&recs);
            if let Some(l) = &taken {
                l.buffered.fetch_sub(recs.len(), Ordering::AcqRel);
            }
            if let Err(e) = r {
                failed.store(true, Ordering::Relaxed);
                return Err(e);
            }
            if let Some(l) = &live {
                l.records.fetch_add(recs.len() as u64, Ordering::Relaxed);
            }
        }
        Ok(())
    });
    (Handoff { tx, lossy }, writer)
}

/// The log line at the end of a run.
pub(crate) fn log_finished(report: &RunReport, message: &'static str) {
    tracing::info!(
        packets = report.packets,
        flows = report.table.flows,
        records = report.table.record_total(),
        decode_errors = report.decode.error_total(),
        evicted = report.table.evicted,
        elapsed_ms = report.elapsed.as_millis() as u64,
        "{message}"
    );
}
