//! Live capture runs.
//!
//! AF_PACKET ([`AfPacketCapture`]): one socket per worker, all in one
//! PACKET_FANOUT group in hash mode, so the kernel hands every packet of a
//! flow (both directions) to the same worker. Each worker reads its ring,
//! decodes and updates its own flow table: shared-nothing, no dispatch
//! thread, no copy. Records go to one sink thread.
//!
//! Time is packet time, as for files; when a ring stays empty for the poll
//! timeout the worker moves its clock to the wall clock (the kernel stamps
//! packets with it), so flows on a quiet link still expire.

use std::io;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use vigil_proto::{EndReason, FlowRecord};

use super::{
    LiveCounters, Published, RunConfig, RunError, RunReport, finish_table, histogram, join_sink,
    spawn_sink, validate,
};
use crate::capture::{KernelStats, LiveError, POLL_TIMEOUT};
use crate::decode::{Decoder, PacketMeta};
use crate::flow::clock::PacketClock;
use crate::flow::table::FlowTable;

#[cfg(target_os = "linux")]
pub use crate::capture::af_packet::{BpfFilter, BpfInsn, FanoutMode, RingConfig};

/// CPU time of the calling thread, ns (Linux: `/proc/thread-self/schedstat`).
pub fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// How often workers publish their counters and read the kernel's.
const PUBLISH_EVERY: Duration = Duration::from_millis(250);
const BATCH: usize = 256;

/// A live interface source.
#[cfg(target_os = "linux")]
#[derive(Clone, Debug)]
pub struct LiveSource {
    /// Interface name.
    pub interface: String,
    /// Ring geometry per worker.
    pub ring: RingConfig,
    /// Promiscuous mode while capturing.
    pub promisc: bool,
    /// Fanout group id; default: derived from the process id.
    pub fanout_group: Option<u16>,
    /// How the kernel spreads packets over the workers.
    pub fanout_mode: FanoutMode,
    /// Capture filter compiled to classic BPF (with the `libpcap` feature).
    pub filter: Option<BpfFilter>,
}

#[cfg(target_os = "linux")]
impl LiveSource {
    /// A source on `interface` with default ring and no filter.
    pub fn new(interface: impl Into<String>) -> LiveSource {
        LiveSource {
            interface: interface.into(),
            ring: RingConfig::default(),
            promisc: false,
            fanout_group: None,
            fanout_mode: FanoutMode::default(),
            filter: None,
        }
    }
}

/// Open AF_PACKET sockets, one per worker, ready to run.
#[cfg(target_os = "linux")]
#[derive(Debug)]
pub struct AfPacketCapture {
    sockets: Vec<crate::capture::af_packet::AfPacket>,
}

#[cfg(target_os = "linux")]
impl AfPacketCapture {
    /// Opens `workers` sockets in one fanout group. Errors name the cause
    /// (permission, interface, filter) before any thread starts.
    pub fn open(src: &LiveSource, workers: NonZeroUsize) -> Result<AfPacketCapture, LiveError> {
        use crate::capture::af_packet::{AfPacket, SocketOptions};
        // One worker joins a group as well: the defrag flag then
        // reassembles IPv4 fragments the same way for any worker count.
        let group = src
            .fanout_group
            .unwrap_or((std::process::id() & 0xffff) as u16);
        let opts = SocketOptions {
            interface: &src.interface,
            ring: src.ring,
            promisc: src.promisc,
            fanout_group: Some(group),
            fanout_mode: src.fanout_mode,
            filter: src.filter.as_ref(),
        };
        let mut sockets = (0..workers.get())
            .map(|_| AfPacket::open(&opts))
            .collect::<Result<Vec<_>, _>>()?;
        for s in &mut sockets {
            s.start()?;
        }
        tracing::info!(
            interface = %src.interface,
            workers = sockets.len(),
            fanout_group = group,
            fanout_mode = ?src.fanout_mode,
            ring_mib = (u64::from(src.ring.block_size) * u64::from(src.ring.block_count)) >> 20,
            filter = src.filter.as_ref().map(|f| f.expr.as_str()),
            "AF_PACKET capture open"
        );
        Ok(AfPacketCapture { sockets })
    }

    /// Captures until `cfg.stop` is set (or a worker fails), then flushes
    /// every open flow with end reason `shutdown`. Records go to `sink`.
    pub fn run(
        self,
        cfg: &RunConfig,
        sink: &mut (dyn FnMut(&[FlowRecord]) -> io::Result<()> + Send),
    ) -> Result<RunReport, RunError> {
        validate(cfg)?;
        let never = Arc::new(AtomicBool::new(false));
        let stop = cfg.stop.clone().unwrap_or(never);
        let n = self.sockets.len().max(1);
        let per_worker = cfg.flow.max_flows.div_ceil(n);
        let started = Instant::now();
        let mut report = RunReport::default();
        std::thread::scope(|s| -> Result<(), RunError> {
            // A failing sink stops the capture.
            let (out_tx, writer) = spawn_sink(s, cfg, sink, &stop);
            let handoff_drops = out_tx.drops();
            let mut handles = Vec::new();
            for (i, sock) in self.sockets.into_iter().enumerate() {
                let out = out_tx.clone();
                let flow = cfg.flow;
                let live = cfg.live.clone();
                let stop = stop.clone();
                let h = std::thread::Builder::new()
                    .name(format!("vigil-capture-{i}"))
                    .spawn_scoped(s, move || {
                        af_packet_worker(sock, FlowTable::new(&flow, per_worker), out, live, &stop)
                    })
                    .map_err(|_| RunError::Worker(i))?;
                handles.push(h);
            }
            drop(out_tx);
            let mut failed = None;
            for (i, h) in handles.into_iter().enumerate() {
                match h.join() {
                    Ok(r) => merge(&mut report, r),
                    Err(_) => failed = Some(i),
                }
            }
            let sunk = join_sink(writer);
            report.handoff_drops = handoff_drops.get();
            if let Some(i) = failed {
                return Err(RunError::Worker(i));
            }
            sunk
        })?;
        report.elapsed = started.elapsed();
        tracing::info!(
            packets = report.packets,
            flows = report.table.flows,
            kernel_drops = report.kernel.map_or(0, |k| k.drops),
            "AF_PACKET capture stopped"
        );
        Ok(report)
    }
}

fn merge(report: &mut RunReport, w: RunReport) {
    report.worker_packets.push(w.packets);
    report.packets += w.packets;
    report.wire_bytes += w.wire_bytes;
    report.decode.merge(&w.decode);
    report.table.merge(&w.table);
    report.fragments_pending += w.fragments_pending;
    report.table_bytes += w.table_bytes;
    report.flows_at_end += w.flows_at_end;
    report.live_errors.extend(w.live_errors);
    if let Some(c) = w.cpu_ns {
        *report.cpu_ns.get_or_insert(0) += c;
    }
    if let Some(k) = w.kernel {
        report.kernel.get_or_insert_default().merge(&k);
        report.worker_kernel.push(k);
    }
    let _ = report.timings.worker_ns.add(&w.timings.worker_ns);
}

fn apply(metas: &mut Vec<PacketMeta>, payloads: &mut Vec<u8>, table: &mut FlowTable) {
    table.process_batch(metas, payloads);
    metas.clear();
    payloads.clear();
}

/// One worker: its ring, decoder and table. Returns its part of the report.
#[cfg(target_os = "linux")]
fn af_packet_worker(
    mut sock: crate::capture::af_packet::AfPacket,
    mut table: FlowTable,
    out: super::Handoff,
    live: Option<Arc<LiveCounters>>,
    stop: &AtomicBool,
) -> RunReport {
    let mut r = RunReport::default();
    let cpu_start = thread_cpu_ns();
    let mut decoder = Decoder::new();
    let mut clock = PacketClock::default();
    let mut metas: Vec<PacketMeta> = Vec::with_capacity(2 * BATCH);
    let mut payloads: Vec<u8> = Vec::new();
    let mut sniffer = table.sniffer();
    let mut worker_ns = histogram();
    let mut published = Published::default();
    let mut last_publish = Instant::now();
    let mut kernel = KernelStats::default();
    while !stop.load(Ordering::Relaxed) {
        let t0 = Instant::now();
        let mut n = 0u64;
        match sock.next_block(POLL_TIMEOUT) {
            Ok(Some(mut block)) => {
                while let Some(pkt) = block.next_packet() {
                    n += 1;
                    r.wire_bytes += u64::from(pkt.orig_len);
                    clock.observe(pkt.ts_ns);
                    decoder.decode(&pkt, &mut |m: &PacketMeta, p: &[u8]| {
                        sniffer.push(*m, p, &mut metas, &mut payloads);
                    });
                    if metas.len() >= BATCH {
                        apply(&mut metas, &mut payloads, &mut table);
                    }
                }
                // The block goes back to the kernel here.
            }
            Ok(None) => {
                clock.observe(vigil_proto::time::now_ns());
            }
            Err(e) => {
                tracing::error!(error = %e, "capture failed; flushing this worker's flows");
                r.live_errors.push(e);
                break;
            }
        }
        apply(&mut metas, &mut payloads, &mut table);
        table.advance(clock.now());
        r.packets += n;
        if let Some(per) = (t0.elapsed().as_nanos() as u64).checked_div(n) {
            let _ = worker_ns.record(per.max(1));
        }
        if !table.records().is_empty() {
            let _ = out.send(table.take_records());
        }
        if last_publish.elapsed() >= PUBLISH_EVERY {
            last_publish = Instant::now();
            if let Ok(k) = sock.kernel_stats() {
                kernel = k;
            }
            if let Some(l) = &live {
                l.add_worker(
                    &mut published,
                    &Published::of(r.packets, r.wire_bytes, &decoder.stats, &table, kernel),
                );
            }
        }
    }
    if let Ok(k) = sock.kernel_stats() {
        kernel = k;
    }
    let (table_bytes, flows_at_end) = finish_table(&mut table, &out, EndReason::Shutdown);
    if let Some(l) = &live {
        l.add_worker(
            &mut published,
            &Published::of(r.packets, r.wire_bytes, &decoder.stats, &table, kernel),
        );
    }
    r.table_bytes = table_bytes;
    r.flows_at_end = flows_at_end;
    r.fragments_pending = decoder.fragments_pending() as u64;
    r.decode = decoder.stats.clone();
    r.table = table.stats.clone();
    r.kernel = Some(kernel);
    r.timings.worker_ns = worker_ns;
    r.cpu_ns = cpu_start
        .zip(thread_cpu_ns())
        .map(|(a, b)| b.saturating_sub(a));
    r
}
