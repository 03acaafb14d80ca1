//! Shared-nothing workers: each worker reads its own packet stream and
//! decodes and tracks flows inline — no reader thread, no channel, no copy on
//! the packet path.
//!
//! This is how a sensor scales with cores on a live link: AF_PACKET fanout
//! (the live-capture issue) has the kernel hash every packet by flow to one
//! socket per worker. For capture files, [`split_by_flow`] does the kernel's
//! part ahead of time — the same symmetric flow hash and shard choice as the
//! dispatcher — so that the workers themselves can be run and measured.
//!
//! Frames that yield no flow packet (non-IP frames, fragments that do not
//! complete a datagram) go to worker 0. The kernel's fanout with its defrag
//! flag reassembles before hashing; the splitter does not, so a fragmented
//! datagram whose flow lives on another worker is counted on worker 0 only
//! when all its fragments are there. Use the dispatcher pipeline
//! ([`crate::pipeline::run`]) for exact results on arbitrary files.

use std::io;
use std::time::Instant;

use crossbeam_channel::bounded;
use thiserror::Error;
use vigil_proto::{EndReason, FlowRecord};

use crate::capture::{CaptureError, CaptureReader, LinkType, PcapWriter};
use crate::decode::{Decoder, PacketMeta};
use crate::flow::table::FlowTable;
use crate::pipeline::{
    PacketClock, PipelineConfig, PipelineError, RunReport, finish_table, histogram, join_sink,
    shard_of, validate,
};

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
        decoder.decode(&pkt, &mut |m: &PacketMeta| {
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
pub fn run(
    streams: &[&[u8]],
    cfg: &PipelineConfig,
    sink: &mut (dyn FnMut(&[FlowRecord]) -> io::Result<()> + Send),
) -> Result<RunReport, PipelineError> {
    validate(cfg)?;
    let n = streams.len().max(1);
    let per_worker = cfg.flow.max_flows.div_ceil(n);
    let started = Instant::now();
    let mut report = RunReport::default();
    std::thread::scope(|s| -> Result<(), PipelineError> {
        let (out_tx, out_rx) = bounded::<Vec<FlowRecord>>(64);
        let writer = s.spawn(move || -> io::Result<()> {
            for recs in out_rx {
                sink(&recs)?;
            }
            Ok(())
        });
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
                let read = CaptureReader::new(*bytes, name).and_then(|mut reader| {
                    let mut t0 = Instant::now();
                    let mut clock = PacketClock::default();
                    loop {
                        let mut n = 0;
                        while n < BATCH {
                            let Some(pkt) = reader.next_packet()? else {
                                break;
                            };
                            n += 1;
                            r.wire_bytes += u64::from(pkt.orig_len);
                            clock.observe(pkt.ts_ns);
                            decoder.decode(&pkt, &mut |m: &PacketMeta| metas.push(*m));
                        }
                        table.process_batch(&metas);
                        metas.clear();
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
                let (table_bytes, flows_at_end) =
                    finish_table(&mut table, &out, EndReason::EndOfInput);
                r.fragments_pending = decoder.fragments_pending() as u64;
                r.decode = decoder.stats.clone();
                r.table = table.stats.clone();
                r.timings.worker_ns = worker_ns;
                WorkerOut {
                    report: r,
                    table_bytes,
                    flows_at_end,
                }
            }));
        }
        drop(out_tx);
        for (i, h) in handles.into_iter().enumerate() {
            let w = h.join().map_err(|_| PipelineError::Worker(i))?;
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
