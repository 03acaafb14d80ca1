//! The sharded pipeline: read → decode → dispatch → flow shards → sink.
//!
//! ```text
//!  reader thread                       worker threads (one FlowTable each)
//!  capture ─► decode ─► dispatch ──batches──► shard 0 ─┐
//!                        (hash of the    ...           ├─► records ─► sink thread
//!                         canonical key) ──batches──► shard N ─┘
//!              ◄───────── empty batch buffers return ─────────
//! ```
//!
//! Both directions of a flow hash to the same shard. Packets travel in
//! batches over bounded crossbeam channels; emptied batch buffers return to
//! the reader through a return channel, so once warm nothing is allocated per
//! packet. Reading a file blocks on a full channel rather than dropping:
//! offline analysis must see every packet. Every second of packet time the
//! reader sends each shard the current time, so idle shards expire flows too.

use std::fs::File;
use std::io;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError, bounded};
use hdrhistogram::Histogram;
use thiserror::Error;
use vigil_proto::{EndReason, FlowRecord};

use crate::capture::mapped::MappedFile;
use crate::capture::pcap_file::ByteSource;
use crate::capture::{CaptureError, CaptureReader, KernelStats, LiveError, RawPacket};
use crate::decode::{DecodeError, DecodeStats, Decoder, PacketMeta};
use crate::flow::FlowConfig;
use crate::flow::table::{FlowTable, TableStats};

/// How the pipeline runs.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
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
}

/// How the packets of capture files (and captures in memory) reach the
/// flow workers. Standard input is always read by the dispatcher.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FileMode {
    /// Shared-nothing workers ([`crate::fanout::run_shared`]): each maps the
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
        *last = now.clone();
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

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            workers: NonZeroUsize::MIN,
            batch_size: NonZeroUsize::new(256).unwrap_or(NonZeroUsize::MIN),
            queue_depth: NonZeroUsize::new(8).unwrap_or(NonZeroUsize::MIN),
            flow: FlowConfig::default(),
            live: None,
            stop: None,
            file_mode: FileMode::default(),
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
pub enum PipelineError {
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
    /// Shared-nothing workers ([`crate::fanout`]): read + decode + flow
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

struct Batch {
    now_ns: u64,
    sent: Instant,
    metas: Vec<PacketMeta>,
}

struct Dispatcher {
    txs: Vec<Sender<Batch>>,
    rets: Vec<Receiver<Vec<PacketMeta>>>,
    bufs: Vec<Vec<PacketMeta>>,
    batch_size: usize,
    last_tick: u64,
    clock: PacketClock,
    spins: usize,
}

/// Packet time, as flow expiry sees it: the latest timestamp so far, except
/// that a single timestamp more than [`MAX_CLOCK_JUMP_NS`] ahead (a corrupt
/// or forged record) does not move it — that would expire every flow at once
/// and stall expiry afterwards. Two such packets in a row do (a real gap in
/// the capture).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PacketClock {
    now: u64,
    /// A far-future timestamp seen once, waiting for confirmation (0: none;
    /// a jump is never to the epoch).
    jump: u64,
}

impl PacketClock {
    /// The current packet time.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        self.now
    }

    /// Takes a packet's timestamp; returns whether the clock moved.
    #[inline(always)]
    pub(crate) fn observe(&mut self, ts: u64) -> bool {
        if ts <= self.now {
            return false;
        }
        if ts - self.now > MAX_CLOCK_JUMP_NS && self.now != 0 {
            return self.jump_to(ts);
        }
        self.jump = 0;
        self.now = ts;
        true
    }

    /// A timestamp more than [`MAX_CLOCK_JUMP_NS`] ahead: taken only when
    /// the one before it was too, and close to it.
    #[cold]
    fn jump_to(&mut self, ts: u64) -> bool {
        let confirmed = self.jump != 0 && self.jump.abs_diff(ts) <= MAX_CLOCK_JUMP_NS;
        self.jump = ts;
        if confirmed {
            self.jump = 0;
            self.now = ts;
        }
        confirmed
    }

    /// Takes a run of timestamps that a [`ClockSpan`] summed up, as
    /// observing each in turn would, where the summary suffices; returns
    /// `false` (and leaves the clock alone) where the run must be observed
    /// one by one.
    #[inline]
    pub(crate) fn observe_span(&mut self, span: &ClockSpan) -> bool {
        if span.records == 0 {
            return true;
        }
        // The first timestamp moves the clock plainly (or not at all) and
        // none after it is far ahead of those before it: no jump is taken
        // or waits, and the clock ends at the latest.
        let plain = self.now == 0 || span.first <= self.now.saturating_add(MAX_CLOCK_JUMP_NS);
        if !(span.tame && plain) {
            return false;
        }
        if span.max > self.now {
            self.now = span.max;
            self.jump = 0;
        }
        true
    }
}

/// A run of timestamps summed up for [`PacketClock::observe_span`]: the
/// first, the latest, and whether each after the first is within
/// [`MAX_CLOCK_JUMP_NS`] of the latest before it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ClockSpan {
    first: u64,
    max: u64,
    tame: bool,
    records: u64,
}

impl ClockSpan {
    /// Adds the run's next timestamp.
    #[inline(always)]
    pub(crate) fn add(&mut self, ts: u64) {
        if self.records == 0 {
            self.first = ts;
            self.max = ts;
            self.tame = true;
        } else if ts > self.max {
            self.tame &= ts - self.max <= MAX_CLOCK_JUMP_NS;
            self.max = ts;
        }
        self.records += 1;
    }
}

const TICK_NS: u64 = 250_000_000;
/// The largest forward jump of packet time taken from a single packet (1 h).
pub const MAX_CLOCK_JUMP_NS: u64 = 3_600_000_000_000;

/// The shard (of `n`) that owns a flow key hash: the high 32 bits scaled to `n`.
#[inline]
pub fn shard_of(hash: u64, n: usize) -> usize {
    (((hash >> 32) * n as u64) >> 32) as usize
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

impl Dispatcher {
    #[inline]
    fn push(&mut self, m: &PacketMeta) {
        let shard = shard_of(m.hash, self.bufs.len());
        let buf = &mut self.bufs[shard];
        buf.push(*m);
        if buf.len() >= self.batch_size {
            self.send(shard);
        }
    }

    fn send(&mut self, shard: usize) {
        let fresh = match self.rets[shard].try_recv() {
            Ok(v) => v,
            Err(_) => Vec::with_capacity(self.batch_size),
        };
        let metas = std::mem::replace(&mut self.bufs[shard], fresh);
        let mut batch = Batch {
            now_ns: self.clock.now(),
            sent: Instant::now(),
            metas,
        };
        // Waking a parked thread costs microseconds, as much as handling a
        // batch: spin (yielding) for a while before blocking.
        for _ in 0..self.spins {
            match self.txs[shard].try_send(batch) {
                Ok(()) => return,
                Err(TrySendError::Full(b)) => {
                    batch = b;
                    std::thread::yield_now();
                }
                // The worker is gone; the run reports it.
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
        let _ = self.txs[shard].send(batch);
    }

    #[inline]
    fn clock(&mut self, ts: u64) {
        if self.clock.observe(ts) {
            let now = self.clock.now();
            if now >= self.last_tick.saturating_add(TICK_NS) {
                self.last_tick = now;
                for s in 0..self.bufs.len() {
                    self.send(s);
                }
            }
        }
    }

    /// At the end of input: every shard gets what is left and the final
    /// packet time, so that all of them expire (and report early) up to the
    /// same clock before they flush.
    fn flush(&mut self) {
        for s in 0..self.bufs.len() {
            self.send(s);
        }
    }
}

struct WorkerReport {
    stats: TableStats,
    table_bytes: u64,
    flows_at_end: u64,
    update_ns: Histogram<u64>,
    queue_ns: Histogram<u64>,
}

#[allow(clippy::too_many_arguments)]
fn worker(
    workers: usize,
    cfg: FlowConfig,
    max_flows: usize,
    rx: Receiver<Batch>,
    ret: Sender<Vec<PacketMeta>>,
    out: Sender<Vec<FlowRecord>>,
    live: Option<Arc<LiveCounters>>,
    stopped: &AtomicBool,
) -> WorkerReport {
    let mut published_evicted = 0;
    let mut table = FlowTable::new(&cfg, max_flows);
    let mut update_ns = histogram();
    let mut queue_ns = histogram();
    let spins = spins_for(workers);
    while let Some(mut batch) = recv_spinning(&rx, spins) {
        let start = Instant::now();
        let _ = queue_ns.record(
            start
                .saturating_duration_since(batch.sent)
                .as_nanos()
                .max(1) as u64,
        );
        table.process_batch(&batch.metas);
        table.advance(batch.now_ns);
        if !batch.metas.is_empty() {
            let per = start.elapsed().as_nanos() as u64 / batch.metas.len() as u64;
            let _ = update_ns.record(per.max(1));
        }
        if !table.records().is_empty() {
            let _ = out.send(table.take_records());
        }
        batch.metas.clear();
        let _ = ret.try_send(batch.metas);
        if let Some(l) = &live
            && table.stats.evicted != published_evicted
        {
            l.evicted
                .fetch_add(table.stats.evicted - published_evicted, Ordering::Relaxed);
            published_evicted = table.stats.evicted;
        }
    }
    let reason = if stopped.load(Ordering::Relaxed) {
        EndReason::Shutdown
    } else {
        EndReason::EndOfInput
    };
    let (table_bytes, flows_at_end) = finish_table(&mut table, &out, reason);
    WorkerReport {
        stats: table.stats.clone(),
        table_bytes,
        flows_at_end,
        update_ns,
        queue_ns,
    }
}

/// Records per batch when a table is flushed at the end of input.
const FLUSH_BATCH: usize = 4096;

/// Ends a worker's table at the end of input: measures it (bytes, flows
/// held) before the flush, then flushes every flow to `out`.
pub(crate) fn finish_table(
    table: &mut FlowTable,
    out: &Sender<Vec<FlowRecord>>,
    reason: EndReason,
) -> (u64, u64) {
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
) -> Result<(), PipelineError> {
    match writer.join() {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(PipelineError::Sink(e)),
        Err(_) => Err(PipelineError::Sink(io::Error::other(
            "sink thread panicked",
        ))),
    }
}

/// Checks the flow configuration, naming every bad key.
pub(crate) fn validate(cfg: &PipelineConfig) -> Result<(), PipelineError> {
    cfg.flow.validate().map_err(|errs| {
        PipelineError::Config(
            errs.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        )
    })
}

/// Standard input read on a helper thread, so that a reader blocked on an
/// idle pipe still sees the stop flag: once it is set, reads end (EOF). The
/// helper thread, blocked in `read`, is left behind; the process is ending.
struct StoppableStdin {
    rx: Receiver<io::Result<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    buf: Vec<u8>,
    pos: usize,
    eof: bool,
}

impl StoppableStdin {
    fn new(stop: Arc<AtomicBool>) -> StoppableStdin {
        let (tx, rx) = bounded::<io::Result<Vec<u8>>>(4);
        let spawned = std::thread::Builder::new()
            .name("vigil-stdin".into())
            .spawn(move || {
                let mut stdin = io::stdin().lock();
                loop {
                    let mut chunk = vec![0u8; 1 << 20];
                    match io::Read::read(&mut stdin, &mut chunk) {
                        Ok(0) => {
                            let _ = tx.send(Ok(Vec::new()));
                            return;
                        }
                        Ok(n) => {
                            chunk.truncate(n);
                            if tx.send(Ok(chunk)).is_err() {
                                return;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    }
                }
            });
        let eof = spawned.is_err();
        StoppableStdin {
            rx,
            stop,
            buf: Vec::new(),
            pos: 0,
            eof,
        }
    }
}

impl io::Read for StoppableStdin {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            if self.eof || self.stop.load(Ordering::Relaxed) {
                return Ok(0);
            }
            match self.rx.recv_timeout(Duration::from_millis(100)) {
                Ok(Ok(chunk)) if chunk.is_empty() => self.eof = true,
                Ok(Ok(chunk)) => {
                    self.buf = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => self.eof = true,
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// What a [`PacketSource`] has next.
#[derive(Debug)]
pub enum Next<'a> {
    /// A packet.
    Packet(RawPacket<'a>),
    /// Nothing for now (a live source's read timeout): the pipeline moves
    /// packet time to the wall clock so that flows on a quiet link expire.
    Idle,
    /// The end of the input.
    End,
}

/// A source of packets for the dispatch pipeline besides capture files: a
/// libpcap capture (live or file).
pub trait PacketSource {
    /// The next packet, or why there is none.
    fn next(&mut self) -> Result<Next<'_>, CaptureError>;
    /// Bytes consumed (for progress), if the source knows.
    fn offset(&self) -> u64 {
        0
    }
    /// Kernel counters of a live source.
    fn kernel_stats(&mut self) -> Option<KernelStats> {
        None
    }
    /// Whether the source is live: the stop flag is then checked at every
    /// packet, not every 65,536, since a slow link may never go idle.
    fn is_live(&self) -> bool {
        false
    }
}

impl<S: ByteSource> PacketSource for CaptureReader<S> {
    #[inline]
    fn next(&mut self) -> Result<Next<'_>, CaptureError> {
        Ok(match self.next_packet()? {
            Some(p) => Next::Packet(p),
            None => Next::End,
        })
    }

    fn offset(&self) -> u64 {
        CaptureReader::offset(self)
    }
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
    cfg: &PipelineConfig,
    sink: &mut (dyn FnMut(&[FlowRecord]) -> io::Result<()> + Send),
    progress: Option<Progress<'_>>,
) -> Result<RunReport, PipelineError> {
    if cfg.file_mode == FileMode::Shared
        && let Some(opened) = open_shared(inputs)
    {
        return run_opened(opened, cfg, sink, progress);
    }
    run_dispatch(inputs, cfg, sink, progress)
}

/// An input made ready for the shared-nothing workers.
enum Shared<'a> {
    Mapped(PathBuf, MappedFile),
    Memory(PathBuf, &'a [u8]),
}

impl Shared<'_> {
    fn input(&self) -> crate::fanout::SharedInput<'_> {
        match self {
            Shared::Mapped(name, m) => crate::fanout::SharedInput {
                name,
                bytes: m,
                mapping: Some(m),
            },
            Shared::Memory(name, bytes) => crate::fanout::SharedInput {
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
    cfg: &PipelineConfig,
    sink: &mut (dyn FnMut(&[FlowRecord]) -> io::Result<()> + Send),
    progress: Option<Progress<'_>>,
) -> Result<RunReport, PipelineError> {
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
    let run = crate::fanout::run_shared(&readable, cfg, sink, progress)?;
    let mut report = run.report;
    let mut read_errors = run.input_errors.into_iter();
    for failure in failures {
        let e = failure.or_else(|| read_errors.next().flatten());
        report.input_errors.extend(e);
    }
    Ok(report)
}

/// [`run`] through the dispatcher: one reader thread, `cfg.workers` shards.
fn run_dispatch(
    inputs: &[Input<'_>],
    cfg: &PipelineConfig,
    sink: &mut (dyn FnMut(&[FlowRecord]) -> io::Result<()> + Send),
    progress: Option<Progress<'_>>,
) -> Result<RunReport, PipelineError> {
    run_with(cfg, sink, progress, &mut |reader| {
        for input in inputs {
            if reader.stop.load(Ordering::Relaxed) || reader.stopped.load(Ordering::Relaxed) {
                break;
            }
            tracing::debug!(input = %input.name(), "reading");
            let res = match input {
                Input::File(p) => File::open(p)
                    .map_err(|source| CaptureError::Io {
                        path: p.clone(),
                        source,
                    })
                    .and_then(|f| CaptureReader::new(f, p.clone()))
                    .and_then(|mut r| reader.read(&mut r)),
                Input::Stdin => match cfg.stop.clone() {
                    // A daemon must stop on its flag even while standard
                    // input has nothing to read.
                    Some(stop) => CaptureReader::new(StoppableStdin::new(stop), input.name())
                        .and_then(|mut r| reader.read(&mut r)),
                    None => CaptureReader::new(io::stdin().lock(), input.name())
                        .and_then(|mut r| reader.read(&mut r)),
                },
                // Through the same 1 MiB buffer as files: copying through a hot
                // buffer is faster than walking gigabytes of 4 KiB pages, where
                // the TLB misses and the prefetcher stops at every page.
                Input::Memory { bytes, .. } => {
                    CaptureReader::new(*bytes, input.name()).and_then(|mut r| reader.read(&mut r))
                }
            };
            reader.finished(res);
        }
    })
}

/// Runs one [`PacketSource`] (a libpcap capture, live or file) through
/// decode and the flow shards, as [`run`] does capture files. A live source
/// runs until `cfg.stop` is set.
pub fn run_source(
    source: &mut (dyn PacketSource + Send),
    cfg: &PipelineConfig,
    sink: &mut (dyn FnMut(&[FlowRecord]) -> io::Result<()> + Send),
) -> Result<RunReport, PipelineError> {
    let mut report = run_with(cfg, sink, None, &mut |reader| {
        let res = reader.read(source);
        reader.finished(res);
    })?;
    report.kernel = source.kernel_stats();
    Ok(report)
}

fn run_with(
    cfg: &PipelineConfig,
    sink: &mut (dyn FnMut(&[FlowRecord]) -> io::Result<()> + Send),
    progress: Option<Progress<'_>>,
    feed: &mut dyn FnMut(&mut Reader<'_, '_>),
) -> Result<RunReport, PipelineError> {
    validate(cfg)?;
    let n = cfg.workers.get();
    let bs = cfg.batch_size.get();
    let depth = cfg.queue_depth.get();
    let per_shard = cfg.flow.max_flows.div_ceil(n);
    let started = Instant::now();
    let stop = AtomicBool::new(false);
    // Set when the external stop flag ended the run (flush as `shutdown`).
    let stopped = AtomicBool::new(false);
    let never = AtomicBool::new(false);
    let external = cfg.stop.as_deref().unwrap_or(&never);
    let mut report = RunReport::default();

    std::thread::scope(|s| -> Result<(), PipelineError> {
        let (out_tx, writer) = spawn_sink(s, sink, &stop);
        let mut txs = Vec::with_capacity(n);
        let mut rets = Vec::with_capacity(n);
        let mut handles = Vec::with_capacity(n);
        for _ in 0..n {
            let (tx, rx) = bounded::<Batch>(depth);
            let (ret_tx, ret_rx) = bounded::<Vec<PacketMeta>>(depth + 2);
            let out = out_tx.clone();
            let flow = cfg.flow;
            let live = cfg.live.clone();
            let stopped = &stopped;
            handles
                .push(s.spawn(move || worker(n, flow, per_shard, rx, ret_tx, out, live, stopped)));
            txs.push(tx);
            rets.push(ret_rx);
        }
        drop(out_tx);
        let disp = Dispatcher {
            txs,
            rets,
            bufs: (0..n).map(|_| Vec::with_capacity(bs)).collect(),
            batch_size: bs,
            last_tick: 0,
            clock: PacketClock::default(),
            spins: spins_for(n),
        };
        let mut reader = Reader {
            decoder: Decoder::new(),
            disp,
            report: &mut report,
            decode_ns: histogram(),
            stop: &stop,
            external,
            stopped: &stopped,
            live: cfg.live.as_deref(),
            progress,
            done_bytes: 0,
        };
        tracing::info!(workers = n, batch_size = bs, "flow pipeline started");
        feed(&mut reader);
        if let Some(l) = reader.live {
            l.publish_reader(
                reader.report.packets,
                reader.report.wire_bytes,
                &reader.decoder.stats,
            );
        }
        let Reader {
            decoder,
            mut disp,
            decode_ns,
            ..
        } = reader;
        if external.load(Ordering::Relaxed) {
            stopped.store(true, Ordering::Relaxed);
        }
        disp.flush();
        report.fragments_pending = decoder.fragments_pending() as u64;
        report.decode = decoder.stats.clone();
        report.timings.decode_ns = decode_ns;
        drop(disp);
        for (i, h) in handles.into_iter().enumerate() {
            let w = h.join().map_err(|_| PipelineError::Worker(i))?;
            report.table.merge(&w.stats);
            report.table_bytes += w.table_bytes;
            report.flows_at_end += w.flows_at_end;
            let _ = report.timings.update_ns.add(&w.update_ns);
            let _ = report.timings.queue_ns.add(&w.queue_ns);
        }
        join_sink(writer)
    })?;
    report.elapsed = started.elapsed();
    log_finished(&report, "flow pipeline finished");
    Ok(report)
}

/// The sink thread of a run: hands every batch of records to `sink`; if the
/// sink fails, sets `failed` (the readers stop) and ends with the error.
pub(crate) fn spawn_sink<'scope, 'env>(
    s: &'scope std::thread::Scope<'scope, 'env>,
    sink: &'scope mut (dyn FnMut(&[FlowRecord]) -> io::Result<()> + Send),
    failed: &'scope AtomicBool,
) -> (
    Sender<Vec<FlowRecord>>,
    std::thread::ScopedJoinHandle<'scope, io::Result<()>>,
) {
    let (tx, rx) = bounded::<Vec<FlowRecord>>(64);
    let writer = s.spawn(move || -> io::Result<()> {
        for recs in rx {
            if let Err(e) = sink(&recs) {
                failed.store(true, Ordering::Relaxed);
                return Err(e);
            }
        }
        Ok(())
    });
    (tx, writer)
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

const TIMING_EVERY: u64 = 256;
const PROGRESS_EVERY: u64 = 1 << 16;

/// The reader thread's state across inputs.
struct Reader<'r, 'p> {
    decoder: Decoder,
    disp: Dispatcher,
    report: &'r mut RunReport,
    decode_ns: Histogram<u64>,
    stop: &'r AtomicBool,
    /// The caller's stop flag.
    external: &'r AtomicBool,
    /// Set when `external` stopped the run.
    stopped: &'r AtomicBool,
    live: Option<&'r LiveCounters>,
    progress: Option<Progress<'p>>,
    /// Bytes of the inputs before the current one.
    done_bytes: u64,
}

impl Reader<'_, '_> {
    /// Records how an input ended.
    fn finished(&mut self, res: Result<u64, CaptureError>) {
        match res {
            Ok(consumed) => self.done_bytes += consumed,
            Err(e) => {
                if let Some(off) = e.offset() {
                    self.done_bytes += off;
                }
                // The caller reports input errors to the user; this is for the log.
                tracing::debug!(error = %e, "input stopped early; packets before the damage were kept");
                self.report.input_errors.push(e);
            }
        }
    }

    /// Publishes the reader's counters (live runs) and says whether the run
    /// must stop: the caller's flag (noted in `stopped`) or the pipeline's.
    fn check_in(&self) -> bool {
        if let Some(l) = self.live {
            l.publish_reader(
                self.report.packets,
                self.report.wire_bytes,
                &self.decoder.stats,
            );
        }
        if self.external.load(Ordering::Relaxed) {
            self.stopped.store(true, Ordering::Relaxed);
            return true;
        }
        self.stop.load(Ordering::Relaxed)
    }

    /// Reads one input to its end; returns the bytes consumed.
    fn read<P: PacketSource + ?Sized>(&mut self, reader: &mut P) -> Result<u64, CaptureError> {
        let mut t0 = Instant::now();
        let live_source = reader.is_live();
        loop {
            if live_source && self.external.load(Ordering::Relaxed) {
                self.stopped.store(true, Ordering::Relaxed);
                break;
            }
            let pkt = match reader.next()? {
                Next::Packet(p) => p,
                Next::End => break,
                Next::Idle => {
                    // Nothing came within the source's timeout: packet time
                    // moves with the wall clock, and the stop flag is seen.
                    self.disp.clock(crate::live::wall_ns());
                    if self.check_in() {
                        break;
                    }
                    continue;
                }
            };
            self.report.packets += 1;
            self.report.wire_bytes += u64::from(pkt.orig_len);
            let ts = pkt.ts_ns;
            let disp = &mut self.disp;
            self.decoder
                .decode(&pkt, &mut |m: &PacketMeta| disp.push(m));
            // The clock moves after the packet is queued, so a tick never
            // runs ahead of packets still in the reader's hands.
            disp.clock(ts);
            if self.report.packets.is_multiple_of(TIMING_EVERY) {
                let now = Instant::now();
                let per = now.duration_since(t0).as_nanos() as u64 / TIMING_EVERY;
                let _ = self.decode_ns.record(per.max(1));
                t0 = now;
                if self.report.packets.is_multiple_of(PROGRESS_EVERY) {
                    if let Some(p) = self.progress {
                        p(self.done_bytes + reader.offset());
                    }
                    if self.check_in() {
                        break;
                    }
                }
            }
        }
        Ok(reader.offset())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Timestamps that take every path of the clock: steps, repeats, going
    /// back, single and confirmed jumps, a start at the epoch.
    fn timestamps(seed: &mut u64, len: usize) -> Vec<u64> {
        let mut next = || {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *seed
        };
        let mut t: u64 = if next() % 4 == 0 { 0 } else { 1 << 50 };
        (0..len)
            .map(|_| {
                t = match next() % 16 {
                    0 => t.saturating_add(MAX_CLOCK_JUMP_NS + next() % (4 * MAX_CLOCK_JUMP_NS)),
                    1 => t.saturating_sub(next() % (2 * MAX_CLOCK_JUMP_NS)),
                    2 => t,
                    3 => t + MAX_CLOCK_JUMP_NS,
                    _ => t + next() % 1_000_000_000,
                };
                t
            })
            .collect()
    }

    #[test]
    fn a_summed_up_span_moves_the_clock_as_its_timestamps_one_by_one_do() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let (mut summed, mut declined) = (0, 0);
        for round in 0..20_000 {
            let before = timestamps(&mut seed, 3);
            let run = timestamps(&mut seed, 1 + round % 6);
            let mut one_by_one = PacketClock::default();
            before.iter().for_each(|&t| {
                one_by_one.observe(t);
            });
            let mut spanned = one_by_one;
            let mut span = ClockSpan::default();
            for &t in &run {
                one_by_one.observe(t);
                span.add(t);
            }
            let untouched = (spanned.now, spanned.jump);
            if spanned.observe_span(&span) {
                summed += 1;
            } else {
                declined += 1;
                assert_eq!((spanned.now, spanned.jump), untouched);
                run.iter().for_each(|&t| {
                    spanned.observe(t);
                });
            }
            assert_eq!(
                (spanned.now, spanned.jump),
                (one_by_one.now, one_by_one.jump),
                "before {before:?}, run {run:?}"
            );
        }
        // Both paths were taken, the summary the common one.
        assert!(summed > declined && declined > 100, "{summed} / {declined}");
        let mut clock = PacketClock::default();
        assert!(clock.observe_span(&ClockSpan::default()));
        assert_eq!(clock.now(), 0);
    }
}
