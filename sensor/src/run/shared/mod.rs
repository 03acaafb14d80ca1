//! The file workers: what capture files and captures in memory are read
//! with. `workers` threads, each decoding the frames whose outer address
//! pair it owns ([`crate::decode::owner`]: a few loads tell a frame's
//! owner) from a capture mapped once (nothing copied; see
//! [`crate::capture::mapped`]), and tracking their flows inline: no reader
//! thread, no channel on the packet path, N workers on N cores. Frames
//! whose flows cannot be told from their outer header (tunnels, fragments,
//! IPv6 extension headers, frames without IP) are decoded by every worker,
//! and each keeps the flow packets whose pair it owns; worker 0 counts the
//! frame. A pcap file's reading is shared out by the relay (`relay.rs`):
//! the workers walk it in chunks, each chunk walked by whichever worker
//! needs it first, and hand each other their frames in file order. Any
//! other capture every worker walks whole. Either way every worker sees
//! every timestamp, so all keep the same packet clock, and the records are
//! exactly those of one worker, for any worker count.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::run::Handoff;
use hdrhistogram::Histogram;
use vigil_proto::{EndReason, FlowRecord};

pub(crate) mod relay;

pub use relay::CHUNK_BYTES as RELAY_CHUNK_BYTES;

use super::{
    LiveCounters, Progress, Published, RunConfig, RunError, RunReport, finish_table, histogram,
    join_sink, log_finished, spawn_sink, validate,
};
use crate::app::Sniffer;
use crate::capture::mapped::MappedFile;
use crate::capture::pcap_file::{PcapWalk, SliceSource};
use crate::capture::{CaptureError, CaptureReader, KernelStats, LinkType, RawPacket};
use crate::decode::key::shard_of;
use crate::decode::{Decoder, Owner, PacketMeta, owner};
use crate::flow::clock::PacketClock;
use crate::flow::table::FlowTable;

/// One input of [`run_shared`]: a whole capture's bytes.
#[derive(Clone, Copy, Debug)]
pub struct SharedInput<'a> {
    /// The file it came from, for messages.
    pub name: &'a std::path::Path,
    /// The capture (a mapping of the file, or bytes in memory).
    pub bytes: &'a [u8],
    /// The mapping `bytes` is, when it is one: the workers then hand its
    /// pages back to the kernel as they all pass them (bytes in memory are
    /// left alone).
    pub mapping: Option<&'a MappedFile>,
}

/// What [`run_shared`] did: the run's report, and for each input the error
/// that stopped its reading early, if one did (in input order).
#[derive(Debug)]
pub struct SharedRun {
    /// Counters of the whole run; its `input_errors` is left empty.
    pub report: RunReport,
    /// Per input: why it could not be read to its end.
    pub input_errors: Vec<Option<CaptureError>>,
}

/// Records a worker gathers before it sends them to the sink.
const RECORDS_PER_SEND: usize = 256;

/// Packets between checks of the stop flags, progress and live counters.
const CHECK_EVERY: u64 = 1 << 16;

/// Runs `cfg.workers` file workers over the inputs, read one after
/// another, sharing each pcap file's reading out (see the module docs),
/// handing records to `sink`. `cfg.stop` ends the run early (open flows
/// end as `shutdown`); `cfg.live` receives the counters as they grow.
pub fn run_shared(
    inputs: &[SharedInput<'_>],
    cfg: &RunConfig,
    sink: &mut (dyn FnMut(&[FlowRecord]) -> io::Result<()> + Send),
    progress: Option<Progress<'_>>,
) -> Result<SharedRun, RunError> {
    validate(cfg)?;
    let n = cfg.workers.get();
    let per_worker = cfg.flow.max_flows.div_ceil(n);
    let started = Instant::now();
    let sink_failed = AtomicBool::new(false);
    let never = AtomicBool::new(false);
    let external = cfg.stop.as_deref().unwrap_or(&never);
    let mut report = RunReport::default();
    let mut input_errors = Vec::new();
    std::thread::scope(|s| -> Result<(), RunError> {
        let (out_tx, writer) = spawn_sink(s, cfg, sink, &sink_failed);
        let mut handles = Vec::with_capacity(n);
        for (me, mut ports) in relay::ports(n).into_iter().enumerate() {
            let out = out_tx.clone();
            let sink_failed = &sink_failed;
            // The table is made (its memory first touched) by the thread
            // that uses it, all workers at once.
            handles.push(s.spawn(move || {
                let w = SharedWorker {
                    me,
                    n,
                    batch: cfg.batch_size.get(),
                    table: FlowTable::new(&cfg.flow, per_worker),
                    decoder: Decoder::new(),
                    clock: PacketClock::default(),
                    metas: Vec::with_capacity(cfg.batch_size.get() + 16),
                    payloads: Vec::new(),
                    sniffer: Sniffer::new(cfg.flow.app_metadata),
                    out,
                    worker_ns: histogram(),
                    packets: 0,
                    wire_bytes: 0,
                    sink_failed,
                    external,
                    live: cfg.live.as_deref(),
                    published: Published::default(),
                    progress: if me == 0 { progress } else { None },
                };
                w.run(inputs, &mut ports)
            }));
        }
        drop(out_tx);
        tracing::info!(
            workers = n,
            inputs = inputs.len(),
            "shared-nothing file workers started"
        );
        for (i, h) in handles.into_iter().enumerate() {
            let w = h.join().map_err(|_| RunError::Worker(i))?;
            report.decode.merge(&w.report.decode);
            report.table.merge(&w.report.table);
            report.table_bytes += w.report.table_bytes;
            report.flows_at_end += w.report.flows_at_end;
            let _ = report.timings.worker_ns.add(&w.report.timings.worker_ns);
            if i == 0 {
                // Every worker sees every frame (or its relay's chunk),
                // holds the same fragments (they all decode them) and
                // learns of the same damage; worker 0 counts and speaks for
                // them.
                report.packets = w.report.packets;
                report.wire_bytes = w.report.wire_bytes;
                report.fragments_pending = w.report.fragments_pending;
                input_errors = w.errors;
            }
        }
        join_sink(writer)
    })?;
    report.elapsed = started.elapsed();
    log_finished(&report, "shared-nothing file workers finished");
    Ok(SharedRun {
        report,
        input_errors,
    })
}

/// One worker of [`run_shared`].
struct SharedWorker<'r> {
    me: usize,
    n: usize,
    batch: usize,
    table: FlowTable,
    decoder: Decoder,
    clock: PacketClock,
    metas: Vec<PacketMeta>,
    /// The application layer's copies of payloads `metas` point into.
    payloads: Vec<u8>,
    /// Chooses them: a worker sees its own flows' packets in order, so
    /// its choices do not depend on the number of workers.
    sniffer: Sniffer,
    out: Handoff,
    worker_ns: Histogram<u64>,
    /// Frames read (every worker reads every frame).
    packets: u64,
    wire_bytes: u64,
    /// Set when the sink failed.
    sink_failed: &'r AtomicBool,
    /// The caller's stop flag: open flows then end as `shutdown`.
    external: &'r AtomicBool,
    live: Option<&'r LiveCounters>,
    published: Published,
    progress: Option<Progress<'r>>,
}

/// What a [`SharedWorker`] hands back.
struct SharedOut {
    report: RunReport,
    errors: Vec<Option<CaptureError>>,
}

/// How reading an input ended.
enum Ended {
    Input(Result<u64, CaptureError>),
    Stopped,
}

impl SharedWorker<'_> {
    fn run<'a>(mut self, inputs: &[SharedInput<'a>], ports: &mut relay::Ports) -> SharedOut {
        let mut errors = Vec::with_capacity(inputs.len());
        let mut done_bytes = 0u64;
        let mut stopped = false;
        for (index, input) in inputs.iter().enumerate() {
            if stopped {
                errors.push(None);
                continue;
            }
            let ended = match CaptureReader::from_slice(input.bytes, input.name) {
                Ok(mut reader) => {
                    if self.n > 1 && reader.walk().is_some() {
                        self.relay(&mut reader, ports, (index, input), done_bytes)
                    } else if self.n == 1 {
                        self.read::<false>(&mut reader, input.mapping, done_bytes)
                    } else {
                        // Every worker walks it all: none hands pages back.
                        self.read::<true>(&mut reader, None, done_bytes)
                    }
                }
                Err(e) => Ended::Input(Err(e)),
            };
            match ended {
                Ended::Input(Ok(consumed)) => {
                    done_bytes += consumed;
                    errors.push(None);
                }
                Ended::Input(Err(e)) => {
                    done_bytes += e.offset().unwrap_or(0);
                    if self.me == 0 {
                        tracing::debug!(error = %e, "input stopped early; packets before the damage were kept");
                    }
                    errors.push(Some(e));
                }
                Ended::Stopped => {
                    stopped = true;
                    errors.push(None);
                }
            }
        }
        self.apply();
        self.publish();
        let reason = if self.external.load(Ordering::Relaxed) {
            EndReason::Shutdown
        } else {
            EndReason::EndOfInput
        };
        let (table_bytes, flows_at_end) = finish_table(&mut self.table, &self.out, reason);
        let mut report = RunReport {
            packets: self.packets,
            wire_bytes: self.wire_bytes,
            decode: self.decoder.stats.clone(),
            table: self.table.stats.clone(),
            fragments_pending: self.decoder.fragments_pending() as u64,
            table_bytes,
            flows_at_end,
            ..RunReport::default()
        };
        report.timings.worker_ns = self.worker_ns;
        SharedOut { report, errors }
    }

    /// Applies the packets gathered so far and moves the table's clock.
    #[inline]
    fn apply(&mut self) {
        self.table.process_batch(&self.metas, &self.payloads);
        self.metas.clear();
        self.payloads.clear();
        self.table.advance(self.clock.now());
        if self.table.records().len() >= RECORDS_PER_SEND {
            let _ = self.out.send(self.table.take_records());
        }
    }

    /// Whether the run is to stop: the sink failed, or the caller asked.
    fn stopping(&self) -> bool {
        self.sink_failed.load(Ordering::Relaxed) || self.external.load(Ordering::Relaxed)
    }

    /// Records the time per packet since `t0` of the `applied` packets just
    /// applied in the worker histogram, and restarts `t0`.
    fn time(&mut self, t0: &mut Instant, applied: usize) {
        if applied > 0 {
            let now = Instant::now();
            let per = now.duration_since(*t0).as_nanos() as u64 / applied as u64;
            let _ = self.worker_ns.record(per.max(1));
            *t0 = now;
        }
    }

    fn publish(&mut self) {
        if let Some(l) = self.live {
            // Frames are counted by worker 0.
            let (packets, bytes) = if self.me == 0 {
                (self.packets, self.wire_bytes)
            } else {
                (0, 0)
            };
            let now = Published::of(
                packets,
                bytes,
                &self.decoder.stats,
                &self.table,
                KernelStats::default(),
            );
            l.add_worker(&mut self.published, &now);
        }
    }

    /// Reads one input to its end (or to a stop). `SPLIT`: other workers
    /// share the input, so frames are first given their owner. The pages of
    /// `mapping` behind the walk go back to the kernel as it goes.
    ///
    /// A batch at a time, in two passes: the walk over the capture (record
    /// headers, timestamps, owners), a tight loop, gathers the frames this
    /// worker decodes; then they are decoded and applied.
    fn read<'a, const SPLIT: bool>(
        &mut self,
        reader: &mut CaptureReader<SliceSource<'a>>,
        mapping: Option<&MappedFile>,
        done_bytes: u64,
    ) -> Ended {
        let (me, n) = (self.me, self.n);
        let batch = self.batch;
        let mut released = 0;
        // A batch ends once it holds `batch` frames to decode or once this
        // many frames went by, so that a worker owning few of them still
        // moves its clock as often.
        let scan = if SPLIT {
            batch.saturating_mul(n)
        } else {
            batch
        };
        let mut g = Gather::<SPLIT> {
            mine: Vec::with_capacity(scan),
            me,
            n,
            batch,
            scan,
            seen: 0,
            bytes: 0,
            clock: self.clock,
        };
        let mut t0 = Instant::now();
        let mut seen_total = 0u64;
        loop {
            g.mine.clear();
            g.seen = 0;
            g.bytes = 0;
            g.clock = self.clock;
            // Records walked in place, the common case; then whatever the
            // walk stopped at (the end, damage, another format) one by one.
            if let Some(mut walk) = reader.walk() {
                g.walk(&mut walk);
                reader.end_walk(walk, g.seen as u64);
            }
            let mut ended = None;
            while !g.full() {
                match reader.next_in_slice() {
                    Ok(Some(pkt)) => g.take(pkt),
                    Ok(None) => {
                        ended = Some(Ended::Input(Ok(reader.offset())));
                        break;
                    }
                    Err(e) => {
                        ended = Some(Ended::Input(Err(e)));
                        break;
                    }
                }
            }
            self.clock = g.clock;
            // Every worker sees every frame; worker 0 counts them.
            if me == 0 {
                self.packets += g.seen as u64;
                self.wire_bytes += g.bytes;
            }
            let seen = g.seen;
            let mine = &g.mine;
            let mut to = Kept {
                metas: &mut self.metas,
                payloads: &mut self.payloads,
                sniffer: &mut self.sniffer,
            };
            for (pkt, any) in mine {
                decode_for(&mut self.decoder, pkt, *any, me, n, &mut to);
            }
            let applied = self.metas.len();
            self.apply();
            self.time(&mut t0, applied);
            if let Some(e) = ended {
                if let Some(m) = mapping {
                    relay::release_behind(m, released, m.len());
                }
                return e;
            }
            let before = seen_total;
            seen_total += seen as u64;
            if before / CHECK_EVERY != seen_total / CHECK_EVERY {
                if let Some(p) = self.progress {
                    p(done_bytes + reader.offset());
                }
                self.publish();
                if self.stopping() {
                    return Ended::Stopped;
                }
                if let Some(m) = mapping {
                    released = relay::release_behind(m, released, reader.offset() as usize);
                }
            }
        }
    }
}

/// One batch's walk over a capture: the frames a worker decodes, and what
/// it saw of the others.
struct Gather<'a, const SPLIT: bool> {
    /// The frames to decode; `true`: every worker decodes it (`Owner::Any`).
    mine: Vec<(RawPacket<'a>, bool)>,
    me: usize,
    n: usize,
    batch: usize,
    scan: usize,
    seen: usize,
    bytes: u64,
    clock: PacketClock,
}

impl<'a, const SPLIT: bool> Gather<'a, SPLIT> {
    /// Whether the batch is complete: `batch` frames to decode, or `scan`
    /// frames seen (so that a worker owning few still moves its clock).
    #[inline(always)]
    fn full(&self) -> bool {
        self.mine.len() >= self.batch || self.seen >= self.scan
    }

    /// Takes records from `walk` until the batch is complete or the walk
    /// stops.
    #[inline(never)]
    fn walk(&mut self, walk: &mut PcapWalk<'a>) {
        while !self.full() {
            let Some(pkt) = walk.next_packet() else { break };
            self.take(pkt);
        }
    }

    #[inline(always)]
    fn take(&mut self, pkt: RawPacket<'a>) {
        self.seen += 1;
        self.bytes += u64::from(pkt.orig_len);
        self.clock.observe(pkt.ts_ns);
        if !SPLIT {
            self.mine.push((pkt, false));
            return;
        }
        if let Some(any) = select(pkt.link, pkt.data, self.me, self.n) {
            self.mine.push((pkt, any));
        }
    }
}

/// Where a worker's decoded packets go: the batch, and the application
/// layer's copies of their payloads.
pub(super) struct Kept<'w> {
    pub(super) metas: &'w mut Vec<PacketMeta>,
    pub(super) payloads: &'w mut Vec<u8>,
    pub(super) sniffer: &'w mut Sniffer,
}

impl Kept<'_> {
    /// Adds a packet with its transport payload.
    #[inline(always)]
    pub(super) fn push(&mut self, m: &PacketMeta, payload: &[u8]) {
        self.sniffer.push(*m, payload, self.metas, self.payloads);
    }

    /// Adds a packet decoded by `decode_plain` from `frame`.
    #[inline(always)]
    pub(super) fn push_plain(&mut self, mut m: PacketMeta, frame: &[u8]) {
        self.sniffer.keep_at(&mut m, frame, self.payloads);
        self.metas.push(m);
    }
}

/// Decodes a frame for worker `me` of `n` into `to`. `any` false: a
/// frame whose address pair the worker owns, every packet kept. `true`: a
/// frame every worker decodes (`Owner::Any`), the packets of the worker's
/// own pairs kept, the frame counted by worker 0 only.
#[inline(always)]
fn decode_for(
    decoder: &mut Decoder,
    pkt: &RawPacket<'_>,
    any: bool,
    me: usize,
    n: usize,
    to: &mut Kept<'_>,
) {
    if !any {
        if let Some(m) = decoder.decode_plain(pkt) {
            debug_assert_eq!(
                shard_of(m.key.pair_hash(), n),
                me,
                "owner() broke its promise"
            );
            to.push_plain(m, pkt.data);
            return;
        }
        decoder.decode(pkt, &mut |m: &PacketMeta, p: &[u8]| {
            debug_assert_eq!(
                shard_of(m.key.pair_hash(), n),
                me,
                "owner() broke its promise"
            );
            to.push(m, p);
        });
        return;
    }
    let mut keep = |m: &PacketMeta, p: &[u8]| {
        if shard_of(m.key.pair_hash(), n) == me {
            to.push(m, p);
        }
    };
    if me == 0 {
        decoder.decode(pkt, &mut keep);
    } else {
        decoder.decode_uncounted(pkt, &mut keep);
    }
}

/// Whether worker `me` of `n` decodes a frame: `Some(false)`, it owns the
/// frame's address pair; `Some(true)`, every worker decodes the frame
/// (`Owner::Any`); `None`, another worker's.
#[inline(always)]
fn select(link: LinkType, frame: &[u8], me: usize, n: usize) -> Option<bool> {
    match owner(link, frame) {
        Owner::Pair(h) => (shard_of(h, n) == me).then_some(false),
        Owner::Any => Some(true),
    }
}
