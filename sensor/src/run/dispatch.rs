//! The dispatcher: one reader thread captures and decodes every frame and
//! hands the packets, by flow, to `workers` flow shards over channels. What
//! standard input, pipes and the libpcap source go through (capture files
//! go to the shared-nothing file workers of [`super::shared`]).
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
//! offline analysis must see every packet. Every quarter second of packet
//! time the reader sends each shard the current time, so idle shards expire
//! flows too.

use std::fs::File;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use hdrhistogram::Histogram;
use vigil_proto::{EndReason, FlowRecord};

use super::{
    Handoff, Input, LiveCounters, Progress, Published, RunConfig, RunError, RunReport,
    finish_table, histogram, join_sink, log_finished, recv_spinning, spawn_sink, spins_for,
    validate,
};
use crate::app::Sniffer;
use crate::capture::KernelStats;
use crate::capture::{CaptureError, CaptureReader, Next, PacketSource};
use crate::decode::key::shard_of;
use crate::decode::{DecodeStats, Decoder, PacketMeta};
use crate::flow::FlowConfig;
use crate::flow::clock::PacketClock;
use crate::flow::table::{FlowTable, TableStats};

struct Batch {
    now_ns: u64,
    sent: Instant,
    metas: Vec<PacketMeta>,
    /// The application layer's copies of payloads, which `metas` point into.
    payloads: Vec<u8>,
}

/// A batch's buffers, emptied and returned.
type Buffers = (Vec<PacketMeta>, Vec<u8>);

struct Dispatcher {
    txs: Vec<Sender<Batch>>,
    rets: Vec<Receiver<Buffers>>,
    bufs: Vec<Buffers>,
    /// Chooses the payloads the application layer needs (one reader sees
    /// every packet in order, so its choices do not depend on the shards).
    sniffer: Sniffer,
    batch_size: usize,
    last_tick: u64,
    clock: PacketClock,
    spins: usize,
}

const TICK_NS: u64 = 250_000_000;

impl Dispatcher {
    #[inline]
    fn push(&mut self, m: &PacketMeta, payload: &[u8]) {
        let shard = shard_of(m.hash, self.bufs.len());
        let (metas, payloads) = &mut self.bufs[shard];
        self.sniffer.push(*m, payload, metas, payloads);
        if metas.len() >= self.batch_size {
            self.send(shard);
        }
    }

    fn send(&mut self, shard: usize) {
        let fresh = match self.rets[shard].try_recv() {
            Ok(v) => v,
            Err(_) => (Vec::with_capacity(self.batch_size), Vec::new()),
        };
        let (metas, payloads) = std::mem::replace(&mut self.bufs[shard], fresh);
        let mut batch = Batch {
            now_ns: self.clock.now(),
            sent: Instant::now(),
            metas,
            payloads,
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

/// What a shard publishes: its table's figures (the reader publishes the
/// packets, bytes and decode counters).
fn shard_published(table: &FlowTable) -> Published {
    Published::of(0, 0, &DecodeStats::default(), table, KernelStats::default())
}

#[allow(clippy::too_many_arguments)]
fn worker(
    workers: usize,
    cfg: FlowConfig,
    max_flows: usize,
    rx: Receiver<Batch>,
    ret: Sender<Buffers>,
    out: Handoff,
    live: Option<Arc<LiveCounters>>,
    stopped: &AtomicBool,
) -> WorkerReport {
    let mut published = Published::default();
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
        table.process_batch(&batch.metas, &batch.payloads);
        table.advance(batch.now_ns);
        if !batch.metas.is_empty() {
            let per = start.elapsed().as_nanos() as u64 / batch.metas.len() as u64;
            let _ = update_ns.record(per.max(1));
        }
        if !table.records().is_empty() {
            let _ = out.send(table.take_records());
        }
        batch.metas.clear();
        batch.payloads.clear();
        let _ = ret.try_send((batch.metas, batch.payloads));
        if let Some(l) = &live {
            l.add_worker(&mut published, &shard_published(&table));
        }
    }
    let reason = if stopped.load(Ordering::Relaxed) {
        EndReason::Shutdown
    } else {
        EndReason::EndOfInput
    };
    let (table_bytes, flows_at_end) = finish_table(&mut table, &out, reason);
    if let Some(l) = &live {
        l.add_worker(&mut published, &shard_published(&table));
    }
    WorkerReport {
        stats: table.stats.clone(),
        table_bytes,
        flows_at_end,
        update_ns,
        queue_ns,
    }
}

/// Standard input read on a helper thread, so that a reader blocked on an
/// idle pipe still sees the stop flag: once it is set, reads end (EOF). The
/// helper thread, blocked in `read`, is left behind; the process is ending.
/// Once `idle` is set (after the capture's header), 100 ms without data end
/// a read with `WouldBlock`, which the capture reader turns into
/// [`Next::Idle`]: the reader then publishes its counters and hands the
/// packets it holds to the shards instead of keeping them until more come.
struct StoppableStdin {
    rx: Receiver<io::Result<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    idle: Arc<AtomicBool>,
    buf: Vec<u8>,
    pos: usize,
    eof: bool,
}

impl StoppableStdin {
    fn new(stop: Arc<AtomicBool>, idle: Arc<AtomicBool>) -> StoppableStdin {
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
            idle,
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
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    if self.idle.load(Ordering::Relaxed) {
                        return Err(io::Error::new(
                            io::ErrorKind::WouldBlock,
                            "no data on standard input for 100 ms",
                        ));
                    }
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => self.eof = true,
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// [`run`] through the dispatcher: one reader thread, `cfg.workers` shards.
pub(super) fn run_dispatch(
    inputs: &[Input<'_>],
    cfg: &RunConfig,
    sink: &mut (dyn FnMut(&[FlowRecord]) -> io::Result<()> + Send),
    progress: Option<Progress<'_>>,
) -> Result<RunReport, RunError> {
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
                    Some(stop) => {
                        let idle = Arc::new(AtomicBool::new(false));
                        CaptureReader::new(StoppableStdin::new(stop, idle.clone()), input.name())
                            .and_then(|mut r| {
                                idle.store(true, Ordering::Relaxed);
                                reader.read(&mut r)
                            })
                    }
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
/// decode and the flow shards, as [`super::run()`] does capture files. A live source
/// runs until `cfg.stop` is set.
pub fn run_source(
    source: &mut (dyn PacketSource + Send),
    cfg: &RunConfig,
    sink: &mut (dyn FnMut(&[FlowRecord]) -> io::Result<()> + Send),
) -> Result<RunReport, RunError> {
    let mut report = run_with(cfg, sink, None, &mut |reader| {
        let res = reader.read(source);
        reader.finished(res);
    })?;
    report.kernel = source.kernel_stats();
    Ok(report)
}

fn run_with(
    cfg: &RunConfig,
    sink: &mut (dyn FnMut(&[FlowRecord]) -> io::Result<()> + Send),
    progress: Option<Progress<'_>>,
    feed: &mut dyn FnMut(&mut Reader<'_, '_>),
) -> Result<RunReport, RunError> {
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

    std::thread::scope(|s| -> Result<(), RunError> {
        let (out_tx, writer) = spawn_sink(s, cfg, sink, &stop);
        let handoff_drops = out_tx.drops();
        let mut txs = Vec::with_capacity(n);
        let mut rets = Vec::with_capacity(n);
        let mut handles = Vec::with_capacity(n);
        for _ in 0..n {
            let (tx, rx) = bounded::<Batch>(depth);
            let (ret_tx, ret_rx) = bounded::<Buffers>(depth + 2);
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
            bufs: (0..n)
                .map(|_| (Vec::with_capacity(bs), Vec::new()))
                .collect(),
            sniffer: Sniffer::new(cfg.flow.app_metadata),
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
            let w = h.join().map_err(|_| RunError::Worker(i))?;
            report.table.merge(&w.stats);
            report.table_bytes += w.table_bytes;
            report.flows_at_end += w.flows_at_end;
            let _ = report.timings.update_ns.add(&w.update_ns);
            let _ = report.timings.queue_ns.add(&w.queue_ns);
        }
        report.handoff_drops = handoff_drops.get();
        join_sink(writer)
    })?;
    report.elapsed = started.elapsed();
    log_finished(&report, "flow pipeline finished");
    Ok(report)
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
                    // moves with the wall clock (a live source; a stream of
                    // a file keeps its own), the packets held go to the
                    // shards, and the stop flag is seen.
                    if live_source {
                        self.disp.clock(vigil_proto::time::now_ns());
                    } else {
                        self.disp.flush();
                    }
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
                .decode(&pkt, &mut |m: &PacketMeta, p: &[u8]| disp.push(m, p));
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
