//! Shared-nothing workers on streams split by flow beforehand: the model of
//! AF_PACKET fanout on a live link, where the kernel hashes every packet to
//! one socket per worker. For capture files, [`split_by_flow`] does the
//! kernel's part ahead of time (the same symmetric flow hash and shard
//! choice as the dispatcher) so that the workers themselves can be run and
//! measured (`vigil bench --modes fanout`). Frames that yield no flow packet
//! (non-IP frames, fragments that do not complete a datagram) go to worker
//! 0. The kernel's fanout with its defrag flag reassembles before hashing;
//! the splitter does not, so a fragmented datagram whose flow lives on
//! another worker is counted on worker 0 only when all its fragments are
//! there.

use std::io;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use thiserror::Error;
use vigil_proto::{EndReason, FlowRecord};

use super::{
    RunConfig, RunError, RunReport, finish_table, histogram, join_sink, spawn_sink, validate,
};
use crate::capture::{CaptureError, CaptureReader, LinkType, PcapWriter};
use crate::decode::key::shard_of;
use crate::decode::{Decoder, PacketMeta};
use crate::flow::clock::PacketClock;
use crate::flow::table::FlowTable;

/// A capture could not be split.
#[derive(Debug, Error)]
pub enum SplitError {
    /// The capture could not be read.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// The capture mixes link types, which one pcap output cannot hold.
    #[error(
        "packet {packet} has link type {found:?}, the capture started with {first:?}: fanout splitting needs one link type"
    )]
    MixedLinkTypes {
        /// 1-based packet number.
        packet: u64,
        /// The first packet's link type.
        first: LinkType,
        /// This packet's.
        found: LinkType,
    },
    /// Writing into memory failed (it does not).
    #[error("writing a split capture: {0}")]
    Io(#[from] io::Error),
}

/// Splits a capture into `workers` captures by flow, as AF_PACKET fanout in
/// hash mode would hand the packets to `workers` sockets.
pub fn split_by_flow(bytes: &[u8], workers: usize) -> Result<Vec<Vec<u8>>, SplitError> {
    let n = workers.max(1);
    let mut reader = CaptureReader::from_slice(bytes, "split")?;
    let mut decoder = Decoder::new();
    let mut writers: Vec<PcapWriter<Vec<u8>>> = Vec::new();
    let mut first_link = None;
    let mut packet = 0u64;
    while let Some(pkt) = reader.next_packet()? {
        packet += 1;
        let first = *first_link.get_or_insert(pkt.link);
        if pkt.link != first {
            return Err(SplitError::MixedLinkTypes {
                packet,
                first,
                found: pkt.link,
            });
        }
        if writers.is_empty() {
            for _ in 0..n {
                writers.push(PcapWriter::new(
                    Vec::with_capacity(bytes.len() / n + 4096),
                    first,
                )?);
            }
        }
        let mut target = None;
        decoder.decode(&pkt, &mut |m: &PacketMeta, _: &[u8]| {
            target.get_or_insert(shard_of(m.hash, n));
        });
        writers[target.unwrap_or(0)].write_packet_with_len(pkt.ts_ns, pkt.data, pkt.orig_len)?;
    }
    if writers.is_empty() {
        return Ok(vec![Vec::new(); n]);
    }
    writers
        .into_iter()
        .map(|w| w.finish().map_err(SplitError::from))
        .collect()
}

const BATCH: usize = 256;
const RECORDS_PER_SEND: usize = 256;

struct WorkerOut {
    report: RunReport,
    table_bytes: u64,
    flows_at_end: u64,
}

/// Runs one shared-nothing worker per stream (each stream a capture in
/// memory, e.g. from [`split_by_flow`]), handing records to `sink`.
///
/// Time is the link's, as on a live link, where every socket sees the same
/// clock: once every stream is read, each worker's table is brought to the
/// latest packet time of all the streams before its flows end as
/// `end_of_input`. So a flow whose own stream ends before its idle timeout
/// is up, while the link goes on, ends `idle`, as with one worker.
pub fn run(
    streams: &[&[u8]],
    cfg: &RunConfig,
    sink: &mut (dyn FnMut(&[FlowRecord]) -> io::Result<()> + Send),
) -> Result<RunReport, RunError> {
    validate(cfg)?;
    let n = streams.len().max(1);
    let per_worker = cfg.flow.max_flows.div_ceil(n);
    let started = Instant::now();
    let mut report = RunReport::default();
    let sink_failed = AtomicBool::new(false);
    std::thread::scope(|s| -> Result<(), RunError> {
        let (out_tx, writer) = spawn_sink(s, cfg, sink, &sink_failed);
        let mut handles = Vec::new();
        for (i, bytes) in streams.iter().enumerate() {
            let out = out_tx.clone();
            let flow = cfg.flow;
            handles.push(s.spawn(move || {
                let mut r = RunReport::default();
                let mut table = FlowTable::new(&flow, per_worker);
                let mut decoder = Decoder::new();
                let mut worker_ns = histogram();
                let name = format!("fanout stream {i}");
                // Packets are decoded a batch at a time and the batch then
                // applied to the table in a tight loop: independent lookups
                // sit close together, so their cache misses overlap.
                let mut metas: Vec<PacketMeta> = Vec::with_capacity(2 * BATCH);
                let mut payloads: Vec<u8> = Vec::new();
                let mut sniffer = table.sniffer();
                let mut clock = PacketClock::default();
                let read = CaptureReader::new(*bytes, name).and_then(|mut reader| {
                    let mut t0 = Instant::now();
                    loop {
                        let mut n = 0;
                        while n < BATCH {
                            let Some(pkt) = reader.next_packet()? else {
                                break;
                            };
                            n += 1;
                            r.wire_bytes += u64::from(pkt.orig_len);
                            clock.observe(pkt.ts_ns);
                            decoder.decode(&pkt, &mut |m: &PacketMeta, p: &[u8]| {
                                sniffer.push(*m, p, &mut metas, &mut payloads);
                            });
                        }
                        table.process_batch(&metas, &payloads);
                        metas.clear();
                        payloads.clear();
                        table.advance(clock.now());
                        r.packets += n as u64;
                        if n > 0 {
                            let now = Instant::now();
                            let per = now.duration_since(t0).as_nanos() as u64 / n as u64;
                            let _ = worker_ns.record(per.max(1));
                            t0 = now;
                        }
                        if table.records().len() >= RECORDS_PER_SEND {
                            let _ = out.send(table.take_records());
                        }
                        if n < BATCH {
                            return Ok(());
                        }
                    }
                });
                if let Err(e) = read {
                    r.input_errors.push(e);
                }
                r.fragments_pending = decoder.fragments_pending() as u64;
                r.decode = decoder.stats.clone();
                r.timings.worker_ns = worker_ns;
                (table, r, clock.now())
            }));
        }
        let mut read = Vec::with_capacity(n);
        for (i, h) in handles.into_iter().enumerate() {
            read.push(h.join().map_err(|_| RunError::Worker(i))?);
        }
        let latest = read.iter().map(|(_, _, now)| *now).max().unwrap_or(0);
        let finishing: Vec<_> = read
            .into_iter()
            .map(|(mut table, mut r, _)| {
                let out = out_tx.clone();
                s.spawn(move || {
                    table.advance(latest);
                    if !table.records().is_empty() {
                        let _ = out.send(table.take_records());
                    }
                    let (table_bytes, flows_at_end) =
                        finish_table(&mut table, &out, EndReason::EndOfInput);
                    r.table = table.stats.clone();
                    WorkerOut {
                        report: r,
                        table_bytes,
                        flows_at_end,
                    }
                })
            })
            .collect();
        drop(out_tx);
        for (i, h) in finishing.into_iter().enumerate() {
            let w = h.join().map_err(|_| RunError::Worker(i))?;
            report.packets += w.report.packets;
            report.wire_bytes += w.report.wire_bytes;
            report.decode.merge(&w.report.decode);
            report.table.merge(&w.report.table);
            report.fragments_pending += w.report.fragments_pending;
            report.input_errors.extend(w.report.input_errors);
            report.table_bytes += w.table_bytes;
            report.flows_at_end += w.flows_at_end;
            let _ = report.timings.worker_ns.add(&w.report.timings.worker_ns);
        }
        join_sink(writer)
    })?;
    report.elapsed = started.elapsed();
    Ok(report)
}
