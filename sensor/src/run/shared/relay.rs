//! The relay: how [`super::run_shared`]'s workers share out the reading of
//! one pcap file rather than each walking all of it.
//!
//! The file is cut into chunks of [`CHUNK_BYTES`] bytes. A chunk holds the
//! records whose header starts in its bytes. Each chunk is walked once, by
//! whichever worker claims it first (one counter, claimed in order): a
//! worker claims the next chunk whenever the one it takes next is not yet
//! walked, within a window of chunks past the least taken by every worker
//! ([`WINDOW_ROUNDS`]). So a worker whose core is busier walks fewer
//! chunks, and one stalled mid-walk holds the others back only once they
//! have walked the rest of the window. Its walker reads each record and
//! tells its owner ([`crate::decode::owner`]). A frame whose address pair
//! one worker owns (`Owner::Pair`) the walker decodes itself, while the
//! frame is in its cache, and hands that worker the packet summaries; a
//! frame every worker decodes (`Owner::Any`: tunnels, fragments) goes to
//! every worker by its offset, at its place among the summaries. With them
//! goes a summary of the chunk's timestamps for the clock. Every worker
//! takes every chunk in file order: its decoder and table see exactly the
//! packets, and its clock exactly the timestamps, that walking the whole
//! file would have given it, so the records are those of one worker, for
//! any worker count. A `Pair` frame leaves no state in the decoder that
//! decodes it, only counts, which travel with the chunk and are taken only
//! when the chunk is (a wrong guess, below, or a chunk past the end leaves
//! none).
//!
//! Where the first record of a chunk starts is known for certain only to
//! whoever walked the file up to it. A walker guesses
//! ([`PcapWalk::find_record`](crate::capture::pcap_file::PcapWalk::find_record):
//! a few whole, plausible records in a row) and every worker checks the
//! guess as it takes the chunk, against where the chunk before it ended. A
//! wrong guess (bytes inside a frame that look like records) costs speed,
//! never a record: every worker then walks that chunk itself, from where it
//! really starts, as if it walked the whole file.
//!
//! Damage, the end, or a stop (the caller's, or a failed sink) end the
//! input at the chunk where the walk from the file's start meets them, for
//! every worker alike; the chunks after it are taken and dropped, so that
//! no walker waits on a worker that went on.
//!
//! A mapped file's pages every worker has passed go back to the kernel as
//! the run goes, a few MiB at a time, by whichever worker gets there first
//! ([`MappedFile::release`]): the page tables and the resident size stay
//! bounded, and the pages' teardown runs beside the other workers rather
//! than alone at the end (unmapping 5 M frames' pages took one thread
//! 20-30 ms after the workers were done).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError, bounded, unbounded};

use crate::capture::mapped::MappedFile;
use crate::capture::pcap_file::SliceSource;
use crate::capture::{CaptureReader, RawPacket};
use crate::decode::key::shard_of;
use crate::decode::{DecodeStats, Decoder, Owner, PacketMeta, owner};
use crate::flow::clock::ClockSpan;
use crate::run::{recv_spinning, spins_for};

use super::{CHECK_EVERY, Ended, Kept, SharedInput, SharedWorker, decode_for};

/// Bytes of a chunk: large enough that its channel traffic and its guess
/// are a rounding error, small enough that a chunk sits in a core's cache.
pub const CHUNK_BYTES: u64 = 256 * 1024;

/// Rounds of chunks (a chunk per worker each) walked and not yet taken by
/// every worker, at most: 4 MiB of capture per worker. A walker stalled
/// mid-chunk (its core taken by another thread for a few milliseconds)
/// stalls the others only once they have walked the rest of the window.
const WINDOW_ROUNDS: usize = 16;

/// The window, in chunks, for `n` workers.
fn window(n: usize) -> usize {
    WINDOW_ROUNDS * n
}

/// Chunks taken between a worker's looks at what every worker has passed
/// (8 MiB): each release makes the kernel flush the other workers' TLBs, so
/// not too often.
const RELEASE_EVERY: u64 = 32;

/// Mapped bytes are handed back in whole steps of this many (the largest
/// page Linux maps a file with on x86-64, so that a release never drops a
/// huge page still being read).
const RELEASE_ALIGN: usize = 2 << 20;

/// How far every worker got: what lets the pages behind all of them go.
#[derive(Debug)]
struct Passed {
    /// Per worker: the input it is on (high bits) and the chunks of it
    /// taken (low [`INPUT_SHIFT`] bits). Only grows.
    taken: Box<[AtomicU64]>,
    /// The input whose pages are being released and the bytes of it
    /// released so far.
    released: Mutex<(usize, usize)>,
    /// The input being walked (high bits) and the chunks of it claimed by a
    /// walker (low [`INPUT_SHIFT`] bits). Only grows.
    claimed: AtomicU64,
}

/// Bits of a [`Passed::taken`] entry that count chunks.
const INPUT_SHIFT: u32 = 40;

fn passed_key(input: usize, chunks: u64) -> u64 {
    ((input as u64) << INPUT_SHIFT) | chunks
}

/// The input and the chunks of a [`passed_key`].
fn split_key(key: u64) -> (usize, u64) {
    (
        (key >> INPUT_SHIFT) as usize,
        key & ((1 << INPUT_SHIFT) - 1),
    )
}

impl Passed {
    /// Claims the next chunk of `input` (of `chunks`) for the caller to
    /// walk, if there is one below `limit`. Every chunk is claimed once, in
    /// order: by whichever worker asks first.
    fn claim(&self, input: usize, chunks: u64, limit: u64) -> Option<u64> {
        let mut now = self.claimed.load(Ordering::Acquire);
        loop {
            let (at, claimed) = split_key(now);
            let next = match at {
                i if i > input => return None,
                i if i == input => claimed,
                // The first claim of this input: every chunk of the one
                // before was claimed (its last taker is past it).
                _ => 0,
            };
            if next >= chunks.min(limit) {
                return None;
            }
            match self.claimed.compare_exchange_weak(
                now,
                passed_key(input, next + 1),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(next),
                Err(seen) => now = seen,
            }
        }
    }

    /// Below which chunk of `input` a walker may claim: `window` past the
    /// least taken by every worker, once all have started it (before,
    /// chunks of the input before may still wait in a worker's window).
    fn claim_limit(&self, input: usize, window: u64) -> u64 {
        match self.least_taken() {
            (i, _) if i < input => 0,
            (_, chunks) => chunks + window,
        }
    }

    /// The chunks of `input` every worker has taken.
    fn all_took(&self, input: usize) -> u64 {
        match self.least_taken() {
            (i, _) if i > input => u64::MAX,
            (i, chunks) if i == input => chunks,
            _ => 0,
        }
    }

    /// Where the worker furthest behind is: its input and the chunks of it
    /// taken.
    fn least_taken(&self) -> (usize, u64) {
        split_key(
            self.taken
                .iter()
                .map(|t| t.load(Ordering::SeqCst))
                .min()
                .unwrap_or(0),
        )
    }

    /// Hands back the pages of `mapping` (input `input`) before `before`,
    /// which every worker has passed; nothing if another worker is at it,
    /// unless `wait`.
    fn release(&self, input: usize, mapping: &MappedFile, before: usize, wait: bool) {
        let mut released = match self.released.try_lock() {
            Ok(r) => r,
            Err(std::sync::TryLockError::WouldBlock) if wait => {
                self.released.lock().unwrap_or_else(|e| e.into_inner())
            }
            Err(std::sync::TryLockError::WouldBlock) => return,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
        };
        if released.0 != input {
            *released = (input, 0);
        }
        released.1 = release_behind(mapping, released.1, before);
    }
}

/// Hands back the pages of `mapping` from `from` (where the last release
/// ended) to `before`, in whole [`RELEASE_ALIGN`] steps, or to its end once
/// `before` is; returns where this release ended.
pub(super) fn release_behind(mapping: &MappedFile, from: usize, before: usize) -> usize {
    let base = mapping.as_ptr() as usize;
    let end = if before >= mapping.len() {
        mapping.len()
    } else {
        ((base + before) & !(RELEASE_ALIGN - 1)).saturating_sub(base)
    };
    if end > from {
        mapping.release(from..end);
        end
    } else {
        from
    }
}

/// What one chunk holds for one worker.
pub(super) struct Chunk {
    index: u64,
    /// The worker that walked it, which gets the buffer back.
    walker: usize,
    /// Where its walk started: the first record, as found or guessed
    /// (`None`: no record seemed to start in its bytes).
    start: Option<u64>,
    /// The flow packets of this worker's address pairs, in record order,
    /// decoded by the walker, where the frames are still in its cache: one
    /// packet summary crosses between cores, not the frame.
    metas: Vec<PacketMeta>,
    /// The frames every worker decodes itself (`Owner::Any`), in record
    /// order: how many of `metas` come before each, and its byte offset.
    anys: Vec<(u32, u64)>,
    /// What decoding `metas` counted, in the walker's own part only: taken
    /// into the counters only if the chunk is (its walk may be a wrong
    /// guess, or past the end).
    decoded: DecodeStats,
    /// Its records' timestamps, summed up for the clock (which reads them
    /// again from the capture where the summary does not do).
    span: ClockSpan,
    /// Its records and their bytes on the wire.
    records: u64,
    wire_bytes: u64,
    /// Where the walk stopped: the next record after the chunk's bytes.
    end: u64,
    /// Set when the walk met the end of the input, damage (the error goes
    /// to worker 0 only), or a stop.
    ended: Option<Ended>,
}

impl Chunk {
    fn empty() -> Self {
        Chunk {
            index: 0,
            walker: 0,
            start: None,
            metas: Vec::with_capacity(1024),
            anys: Vec::new(),
            decoded: DecodeStats::default(),
            span: ClockSpan::default(),
            records: 0,
            wire_bytes: 0,
            end: 0,
            ended: None,
        }
    }
}

/// One worker's ends of the relay's channels.
pub(super) struct Ports {
    me: usize,
    /// To each worker: chunks, or `None` when a worker died (panicked).
    to: Vec<Sender<Option<Chunk>>>,
    /// From every other worker: this worker's part of the chunks they walk.
    inbox: Receiver<Option<Chunk>>,
    /// This worker's parts of the chunks walked and not yet taken, chunk
    /// `i` at `i % window`: a walker claims only chunks below the least
    /// taken by every worker plus the window, and this worker takes them
    /// in order, so the chunks held lie in one window.
    pending: Vec<Option<Chunk>>,
    /// To each worker: its chunk buffers, taken.
    back_to: Vec<Sender<Chunk>>,
    /// This worker's chunk buffers, coming back.
    back: Receiver<Chunk>,
    /// Buffers back and ready for the next walk.
    spare: Vec<Chunk>,
    /// The chunk being walked, one buffer per worker.
    outs: Vec<Chunk>,
    /// How far every worker got.
    passed: Arc<Passed>,
    /// Chunks this worker walked, of the input being read.
    walked: u64,
    /// Decodes the frames of the chunks walked whose pair one worker owns:
    /// such frames leave no state in a decoder ([`Owner::Pair`]), only
    /// counts, which go with the chunk.
    decoder: Decoder,
}

/// The relay's channels, one [`Ports`] per worker.
pub(super) fn ports(n: usize) -> Vec<Ports> {
    let window = window(n);
    // A worker is sent only chunks of its window, and the news of a death
    // once by each other worker: sends never wait.
    let inboxes: Vec<_> = (0..n).map(|_| bounded(window + n)).collect();
    let backs: Vec<_> = (0..n).map(|_| unbounded()).collect();
    let passed = Arc::new(Passed {
        taken: (0..n).map(|_| AtomicU64::new(0)).collect(),
        released: Mutex::new((0, 0)),
        claimed: AtomicU64::new(0),
    });
    (0..n)
        .map(|me| Ports {
            me,
            to: inboxes.iter().map(|(tx, _)| tx.clone()).collect(),
            inbox: inboxes[me].1.clone(),
            pending: (0..window).map(|_| None).collect(),
            back_to: backs.iter().map(|(tx, _)| tx.clone()).collect(),
            back: backs[me].1.clone(),
            spare: Vec::with_capacity(n * (window + 2)),
            outs: Vec::with_capacity(n),
            passed: Arc::clone(&passed),
            walked: 0,
            decoder: Decoder::new(),
        })
        .collect()
}

impl Ports {
    /// Keeps this worker's part of a chunk until its turn.
    fn park(&mut self, chunk: Chunk) {
        let at = chunk.index as usize % self.pending.len();
        debug_assert!(self.pending[at].is_none(), "two chunks of one window slot");
        self.pending[at] = Some(chunk);
    }
}

impl Drop for Ports {
    /// A worker that panics tells the others, which may be waiting for a
    /// chunk it claimed (the panic is the run's error).
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (c, to) in self.to.iter().enumerate() {
                if c != self.me {
                    let _ = to.try_send(None);
                }
            }
        }
    }
}

/// A chunk's walk: each record handed to the workers.
struct Split<'d> {
    outs: Vec<Chunk>,
    n: usize,
    /// Address of the chunk's first byte: the packets' payload offsets
    /// are made relative to it, for the worker that takes them (whose
    /// application layer reads the payloads in the capture).
    base: usize,
    decoder: &'d mut Decoder,
    span: ClockSpan,
    records: u64,
    wire_bytes: u64,
}

impl Split<'_> {
    #[inline(always)]
    fn take(&mut self, offset: u64, pkt: &RawPacket<'_>) {
        self.span.add(pkt.ts_ns);
        self.records += 1;
        self.wire_bytes += u64::from(pkt.orig_len);
        // The common frame, plain IPv4 on Ethernet, decoded first: its pair
        // comes with its summary.
        let mut pair = 0;
        let frame = (pkt.data.as_ptr() as usize).wrapping_sub(self.base);
        if let Some(mut m) = self.decoder.decode_plain_paired(pkt, &mut pair) {
            let to = shard_of(pair, self.n);
            rebase(&mut m, frame);
            self.outs[to].metas.push(m);
            return;
        }
        match owner(pkt.link, pkt.data) {
            Owner::Pair(h) => {
                let to = shard_of(h, self.n);
                let metas = &mut self.outs[to].metas;
                self.decoder.decode(pkt, &mut |m: &PacketMeta, _: &[u8]| {
                    debug_assert_eq!(
                        shard_of(m.key.pair_hash(), self.n),
                        to,
                        "owner() broke its promise"
                    );
                    let mut m = *m;
                    rebase(&mut m, frame);
                    metas.push(m);
                });
            }
            Owner::Any => self
                .outs
                .iter_mut()
                .for_each(|o| o.anys.push((o.metas.len() as u32, offset))),
        }
    }
}

/// Makes a packet's payload offset count from the chunk's start rather
/// than its frame's (`frame`: where the frame starts in the chunk).
#[inline(always)]
fn rebase(m: &mut PacketMeta, frame: usize) {
    if m.payload_cap != 0 {
        match u32::try_from(frame.wrapping_add(m.payload_at as usize)) {
            Ok(at) => m.payload_at = at,
            Err(_) => m.payload_cap = 0,
        }
    }
}

/// The bytes of chunk `index` of a capture whose records start at `first`.
fn range(first: u64, index: u64) -> (u64, u64) {
    (
        first + index * CHUNK_BYTES,
        first + (index + 1) * CHUNK_BYTES,
    )
}

impl SharedWorker<'_> {
    /// Reads one pcap input (one that offers [`CaptureReader::walk`]),
    /// input `index` of the run, with the other workers through the relay.
    pub(super) fn relay<'a>(
        &mut self,
        reader: &mut CaptureReader<SliceSource<'a>>,
        ports: &mut Ports,
        (index, input): (usize, &SharedInput<'_>),
        done_bytes: u64,
    ) -> Ended {
        let (me, n) = (self.me, self.n);
        let len = input.bytes.len() as u64;
        let first = reader.offset();
        let chunks = (len.saturating_sub(first)).div_ceil(CHUNK_BYTES);
        // This worker has started the input: once all have, its chunks may
        // be claimed.
        ports.passed.taken[me].store(passed_key(index, 0), Ordering::SeqCst);
        ports.walked = 0;
        if chunks == 0 {
            // Nothing after the file header.
            return Ended::Input(Ok(first));
        }
        let spins = spins_for(n);
        // Where the next chunk's first record really starts, and how the
        // input ended once it has.
        let mut expected = first;
        let mut ended: Option<Ended> = None;
        let mut seen_total = 0u64;
        let mut t0 = std::time::Instant::now();
        for j in 0..chunks {
            let Some(mut chunk) = self.next_chunk(j, (index, chunks, first), reader, ports, spins)
            else {
                // A worker died (its panic is the run's error).
                return Ended::Stopped;
            };
            debug_assert_eq!(chunk.index, j, "chunks are taken in order");
            if ended.is_none() {
                let (_, until) = range(first, j);
                let records;
                if matches!(chunk.ended, Some(Ended::Stopped)) {
                    ended = chunk.ended.take();
                    records = 0;
                } else if expected >= until {
                    // A frame before it covers all its bytes.
                    records = 0;
                } else if chunk.start == Some(expected) {
                    records = chunk.records;
                    let (from, _) = range(first, j);
                    let bytes = usize::try_from(from)
                        .ok()
                        .and_then(|f| input.bytes.get(f..))
                        .unwrap_or_default();
                    let applied = self.take_chunk(&mut chunk, bytes, reader);
                    self.time(&mut t0, applied);
                    expected = chunk.end;
                    ended = chunk.ended.take();
                } else {
                    // A wrong guess: walk it from where it really starts.
                    let (end, records_here, how) = self.rewalk(expected, until, reader);
                    records = records_here;
                    self.time(&mut t0, records_here as usize);
                    expected = end;
                    ended = how;
                }
                let before = seen_total;
                seen_total += records;
                if before / CHECK_EVERY != seen_total / CHECK_EVERY {
                    if let Some(p) = self.progress {
                        p(done_bytes + expected);
                    }
                    self.publish();
                }
            }
            chunk.metas.clear();
            chunk.anys.clear();
            chunk.decoded = DecodeStats::default();
            chunk.ended = None;
            let walker = chunk.walker;
            let _ = ports.back_to[walker].send(chunk);
            // The last chunk's store and loads are sequentially consistent:
            // of workers finishing together, one sees that all are done and
            // hands the rest back.
            ports.passed.taken[me].store(passed_key(index, j + 1), Ordering::SeqCst);
            let last = j + 1 == chunks;
            if let Some(mapping) = input.mapping
                && (j % RELEASE_EVERY == RELEASE_EVERY - 1 || last)
            {
                let all = ports.passed.all_took(index).min(chunks);
                let before = if all == chunks {
                    len
                } else {
                    range(first, all).0
                };
                ports
                    .passed
                    .release(index, mapping, before.min(len) as usize, last);
            }
        }
        self.apply();
        tracing::debug!(
            worker = me,
            input = %input.name.display(),
            walked = ports.walked,
            chunks,
            "relay: input taken"
        );
        // The last chunk ends at the end of the input at the latest.
        ended.unwrap_or(Ended::Input(Ok(expected)))
    }

    /// This worker's part of chunk `j` of input `index` (of `chunks`, the
    /// first starting at `first`), once walked. Until it is, the worker
    /// claims and walks the next chunks of the window: chunks are walked by
    /// whichever worker needs them first, so that a worker whose core is
    /// busier walks fewer of them. `None`: a worker died.
    fn next_chunk<'a>(
        &mut self,
        j: u64,
        (index, chunks, first): (usize, u64, u64),
        reader: &mut CaptureReader<SliceSource<'a>>,
        ports: &mut Ports,
        spins: usize,
    ) -> Option<Chunk> {
        let window = ports.pending.len();
        loop {
            if let Some(chunk) = ports.pending[j as usize % window].take() {
                return Some(chunk);
            }
            match ports.inbox.try_recv() {
                Ok(Some(chunk)) => {
                    ports.park(chunk);
                    continue;
                }
                Ok(None) | Err(TryRecvError::Disconnected) => return None,
                Err(TryRecvError::Empty) => {}
            }
            let limit = ports.passed.claim_limit(index, window as u64);
            if let Some(c) = ports.passed.claim(index, chunks, limit) {
                self.walk_chunk(c, first, reader, ports);
                continue;
            }
            // Chunk `j` is being walked by another worker (a claimed chunk
            // is walked at once and sent without waiting), or will be: the
            // worker that has taken least can always claim the chunk it
            // needs, so some worker always moves on.
            ports.park(recv_spinning(&ports.inbox, spins)??);
        }
    }

    /// Walks chunk `index` and hands every worker its part.
    fn walk_chunk<'a>(
        &mut self,
        index: u64,
        first: u64,
        reader: &mut CaptureReader<SliceSource<'a>>,
        ports: &mut Ports,
    ) {
        let n = self.n;
        ports.walked += 1;
        while let Ok(c) = ports.back.try_recv() {
            ports.spare.push(c);
        }
        let mut outs = std::mem::take(&mut ports.outs);
        for _ in 0..n {
            let mut c = ports.spare.pop().unwrap_or_else(Chunk::empty);
            c.index = index;
            outs.push(c);
        }
        let (from, until) = range(first, index);
        let mut ended = None;
        let mut start = if self.stopping() {
            ended = Some(Ended::Stopped);
            None
        } else if index == 0 {
            Some(from)
        } else {
            reader.walk().and_then(|w| w.find_record(from, until))
        };
        let base = reader.walk().map_or(0, |w| w.bytes_at(from) as usize);
        let mut split = Split {
            outs,
            n,
            base,
            decoder: &mut ports.decoder,
            span: ClockSpan::default(),
            records: 0,
            wire_bytes: 0,
        };
        let mut end = start.unwrap_or(until);
        if let Some(from) = start
            && let Some(mut walk) = {
                reader.seek_record(from);
                reader.walk()
            }
        {
            loop {
                let at = walk.offset();
                if at >= until {
                    break;
                }
                let Some(pkt) = walk.next_packet() else { break };
                split.take(at, &pkt);
            }
            end = walk.offset();
            reader.end_walk(walk, 0);
            if end < until {
                // The walk stopped where the reader stops too (the same
                // checks): the end, or damage, which the reader names.
                match reader.next_in_slice() {
                    Ok(None) => ended = Some(Ended::Input(Ok(end))),
                    Err(e) => ended = Some(Ended::Input(Err(e))),
                    // Were there a record only the reader takes, every
                    // worker would walk this chunk itself (see `rewalk`).
                    Ok(Some(_)) => start = None,
                }
            }
        }
        let Split {
            mut outs,
            span,
            records,
            wire_bytes,
            ..
        } = split;
        // The other workers learn how the input ended; worker 0, which
        // speaks for the run, gets its error too.
        let told = ended.as_ref().map(|e| match e {
            Ended::Input(Ok(x)) => Ended::Input(Ok(*x)),
            Ended::Input(Err(e)) => Ended::Input(Ok(e.offset().unwrap_or(end))),
            Ended::Stopped => Ended::Stopped,
        });
        for (c, mut out) in outs.drain(..).enumerate().rev() {
            out.walker = self.me;
            out.start = start;
            out.span = span;
            out.records = records;
            out.wire_bytes = wire_bytes;
            out.end = end;
            if c == self.me {
                out.decoded = std::mem::take(&mut ports.decoder.stats);
            }
            out.ended = if c == 0 {
                ended.take()
            } else {
                told.as_ref().map(|e| match e {
                    Ended::Input(Ok(x)) => Ended::Input(Ok(*x)),
                    _ => Ended::Stopped,
                })
            };
            if c == self.me {
                ports.park(out);
            } else {
                // Never full: see `ports`.
                if let Err(TrySendError::Full(out)) = ports.to[c].try_send(Some(out)) {
                    debug_assert!(false, "a worker's inbox is full");
                    let _ = ports.to[c].send(out);
                }
            }
        }
        ports.outs = outs;
    }

    /// Applies one chunk's part for this worker; returns the flow packets
    /// applied.
    /// `bytes`: the capture from the chunk's start, where its packets'
    /// payload offsets count from.
    fn take_chunk(
        &mut self,
        chunk: &mut Chunk,
        bytes: &[u8],
        reader: &mut CaptureReader<SliceSource<'_>>,
    ) -> usize {
        let (me, n) = (self.me, self.n);
        let Some(walk) = reader.walk() else {
            return 0;
        };
        if me == 0 {
            // Worker 0 counts the frames of the chunks taken.
            self.packets += chunk.records;
            self.wire_bytes += chunk.wire_bytes;
        }
        self.decoder.stats.merge(&chunk.decoded);
        let mut applied = chunk.metas.len();
        let mut at = 0;
        let mut anys = chunk.anys.iter().peekable();
        while let Some(&&(pos, _)) = anys.peek() {
            self.process(&mut chunk.metas[at..pos as usize], bytes);
            at = pos as usize;
            // The frames every worker decodes, up to the next packet decoded
            // by the walker.
            while let Some(&(_, offset)) = anys.next_if(|&&(p, _)| p == pos) {
                let Some(pkt) = walk.packet_at(offset) else {
                    debug_assert!(false, "a record the walk took is gone");
                    continue;
                };
                let mut to = Kept {
                    metas: &mut self.metas,
                    payloads: &mut self.payloads,
                    sniffer: &mut self.sniffer,
                };
                decode_for(&mut self.decoder, &pkt, true, me, n, &mut to);
                if self.metas.len() >= self.batch {
                    applied += self.metas.len();
                    self.apply_metas();
                }
            }
            applied += self.metas.len();
            self.apply_metas();
        }
        self.process(&mut chunk.metas[at..], bytes);
        if !self.clock.observe_span(&chunk.span)
            && let Some(start) = chunk.start
        {
            // A jump of the clock may be taken or wait in this chunk: its
            // timestamps one by one.
            reader.seek_record(start);
            if let Some(mut walk) = reader.walk() {
                for _ in 0..chunk.records {
                    let Some(pkt) = walk.next_packet() else { break };
                    self.clock.observe(pkt.ts_ns);
                }
            }
        }
        self.apply();
        applied
    }

    /// Applies packets decoded by a walker, a batch at a time; their
    /// payload offsets count from the start of `bytes`.
    #[inline]
    fn process(&mut self, metas: &mut [PacketMeta], bytes: &[u8]) {
        debug_assert!(self.payloads.is_empty(), "payloads left behind");
        for batch in metas.chunks_mut(self.batch) {
            for m in batch.iter_mut() {
                self.sniffer.keep_at(m, bytes, &mut self.payloads);
            }
            self.table.process_batch(batch, &self.payloads);
            self.payloads.clear();
        }
    }

    /// Applies the packets this worker decoded itself.
    fn apply_metas(&mut self) {
        self.table.process_batch(&self.metas, &self.payloads);
        self.metas.clear();
        self.payloads.clear();
    }

    /// Walks a chunk whose first record was guessed wrong from `from`, where
    /// it really starts, to the first record past `until`, as every worker
    /// walks an input none shares out: every frame decoded, the flow
    /// packets of this worker's pairs kept, worker 0 counting. Returns where
    /// it stopped, the records walked, and how the input ended if it did.
    #[cold]
    fn rewalk<'a>(
        &mut self,
        from: u64,
        until: u64,
        reader: &mut CaptureReader<SliceSource<'a>>,
    ) -> (u64, u64, Option<Ended>) {
        let (me, n) = (self.me, self.n);
        reader.seek_record(from);
        let mut records = 0;
        let ended = loop {
            if reader.offset() >= until {
                break None;
            }
            let pkt = match reader.next_in_slice() {
                Ok(Some(pkt)) => pkt,
                Ok(None) => break Some(Ended::Input(Ok(reader.offset()))),
                Err(e) => break Some(Ended::Input(Err(e))),
            };
            records += 1;
            if me == 0 {
                self.packets += 1;
                self.wire_bytes += u64::from(pkt.orig_len);
            }
            self.clock.observe(pkt.ts_ns);
            // Every frame, as an `Owner::Any` frame is decoded.
            let mut to = Kept {
                metas: &mut self.metas,
                payloads: &mut self.payloads,
                sniffer: &mut self.sniffer,
            };
            decode_for(&mut self.decoder, &pkt, true, me, n, &mut to);
            if self.metas.len() >= self.batch {
                self.apply_metas();
            }
        };
        self.apply();
        (reader.offset(), records, ended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passed(n: usize) -> Passed {
        Passed {
            taken: (0..n).map(|_| AtomicU64::new(0)).collect(),
            released: Mutex::new((0, 0)),
            claimed: AtomicU64::new(0),
        }
    }

    #[test]
    fn chunks_are_claimed_once_in_order_below_the_limit() {
        let p = passed(2);
        assert_eq!(p.claim(0, 5, 2), Some(0));
        assert_eq!(p.claim(0, 5, 2), Some(1));
        assert_eq!(p.claim(0, 5, 2), None, "the limit");
        assert_eq!(p.claim(0, 5, 9), Some(2));
        assert_eq!(p.claim(0, 5, 9), Some(3));
        assert_eq!(p.claim(0, 5, 9), Some(4));
        assert_eq!(p.claim(0, 5, 9), None, "every chunk");
        // The next input starts again at its first chunk; the one before
        // has nothing left to claim.
        assert_eq!(p.claim(2, 3, 9), Some(0));
        assert_eq!(p.claim(0, 5, 9), None);
        assert_eq!(p.claim(2, 3, 9), Some(1));
    }

    #[test]
    fn claims_wait_until_every_worker_has_started_the_input() {
        let p = passed(2);
        p.taken[0].store(passed_key(1, 0), Ordering::SeqCst);
        p.taken[1].store(passed_key(0, 7), Ordering::SeqCst);
        assert_eq!(p.claim_limit(1, 4), 0, "worker 1 is still on input 0");
        p.taken[1].store(passed_key(1, 0), Ordering::SeqCst);
        assert_eq!(p.claim_limit(1, 4), 4);
        p.taken[0].store(passed_key(1, 3), Ordering::SeqCst);
        p.taken[1].store(passed_key(1, 2), Ordering::SeqCst);
        assert_eq!(p.claim_limit(1, 4), 6, "the window past the least taken");
    }

    #[test]
    fn racing_claimers_take_every_chunk_once() {
        let p = passed(3);
        let got: Vec<Vec<u64>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..3)
                .map(|_| {
                    s.spawn(|| {
                        let mut mine = Vec::new();
                        while let Some(c) = p.claim(0, 10_000, u64::MAX) {
                            mine.push(c);
                        }
                        mine
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut all: Vec<u64> = got.iter().flatten().copied().collect();
        assert!(got.iter().all(|g| g.windows(2).all(|w| w[0] < w[1])));
        all.sort_unstable();
        assert_eq!(all, (0..10_000).collect::<Vec<_>>());
    }
}
