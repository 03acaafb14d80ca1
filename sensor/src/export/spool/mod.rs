//! The sensor's disk spool: an append-only log of flow batches that holds
//! every batch from the moment it is built until the collector acknowledges
//! it, so a collector restart, an outage or a sensor restart loses nothing
//! within the spool's size bound.
//!
//! Every batch is appended (write-ahead); the gRPC sender reads batches
//! from the spool, mostly from the page cache, and sends them as they are
//! on disk. A slow or absent collector only makes the spool longer; a slow
//! disk's fsyncs run outside the spool's lock ([`Spool::take_flush`]), and
//! live capture hands records over without waiting (`run::Handoff`).
//!
//! # On-disk format (version 1)
//!
//! A spool directory holds segment files and one state file:
//!
//! - `NNNNNNNNNNNNNNNNNNNN.seg` (20 decimal digits: the sequence number of
//!   the segment's first batch, or of the next batch for an empty segment).
//!   A segment is a series of records, each
//!   ```text
//!   u32 LE  payload length
//!   u32 LE  CRC-32 (IEEE) of the next 12 bytes and the payload
//!   u64 LE  batch sequence number
//!   u32 LE  flows in the batch
//!   payload the batch's flows: protobuf `vigil.v1.FlowBatch` field 3
//!           entries (so the wire message is a small header — sensor id,
//!           seq, stats — followed by these bytes unchanged)
//!   ```
//!   Sequence numbers increase by one from record to record and across
//!   segments, except where the size bound dropped whole segments.
//! - `state`: `key=value` lines, rewritten atomically (temporary file,
//!   fsync, rename): `incarnation` (the spool's identity, drawn at random
//!   when the spool is created: sequence numbers count within it, and the
//!   collector dedupes per sensor id and incarnation, so a sensor whose
//!   spool was lost, starting again at seq 1, is stored, not taken for a
//!   replay), `acked` (highest acknowledged seq; batches up to it are not
//!   resent), `next_seq`, `dropped_batches`, `dropped_flows`,
//!   `dropped_bytes` (what the size bound discarded, cumulative) and
//!   `corrupt_records`. A state file of an older version without
//!   `incarnation` is given one at open.
//!
//! # Durability (fsync policy)
//!
//! [`Fsync::Interval`] (the default, 1 s) flushes the active segment at
//! most that long after a write, after every segment roll and at close: a
//! power loss loses at most the last interval of unacknowledged batches. A
//! crash of the sensor process alone loses nothing (the data is in the page
//! cache). [`Fsync::Always`] flushes after every batch; [`Fsync::Never`]
//! leaves it to the OS. A torn or damaged record is found by its CRC when
//! the spool is opened: the segment is cut there and the loss counted in
//! `corrupt_records`.
//!
//! # Size bound
//!
//! When an append would take the spool past `max_bytes`, the oldest
//! segments are deleted, acknowledged or not. Unacknowledged batches lost
//! so are counted (`dropped_*`) and the counts travel to the collector in
//! every batch's stats: loss is never silent. A deleted batch that was in
//! flight on the current stream is counted only if that stream ends
//! without acknowledging it (the collector may have stored it); one in
//! flight when the sensor stops counts as lost at the next open
//! (`in_flight_dropped_*` in the state file).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use thiserror::Error;

const HEADER: usize = 20;
/// The largest record payload accepted when reading (bounds a damaged length).
pub const MAX_RECORD_BYTES: u32 = 256 << 20;

/// When segment data is flushed to disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fsync {
    /// After every appended batch.
    Always,
    /// At most this long after a write (and on roll and close).
    Interval(Duration),
    /// Only on roll and close.
    Never,
}

/// Spool settings.
#[derive(Clone, Debug)]
pub struct SpoolConfig {
    /// The spool directory (created if missing).
    pub dir: PathBuf,
    /// Bound on the bytes of all segments.
    pub max_bytes: u64,
    /// A segment is closed and a new one started beyond this size.
    pub segment_bytes: u64,
    /// Flush policy.
    pub fsync: Fsync,
}

impl SpoolConfig {
    /// Defaults (1 GiB bound, 16 MiB segments, fsync every second) in `dir`.
    pub fn new(dir: PathBuf) -> SpoolConfig {
        SpoolConfig {
            dir,
            max_bytes: 1 << 30,
            segment_bytes: 16 << 20,
            fsync: Fsync::Interval(Duration::from_secs(1)),
        }
    }
}

/// A spool operation failed.
#[derive(Debug, Error)]
pub enum SpoolError {
    /// A file operation failed.
    #[error("spool {path}: {op}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The configuration cannot work.
    #[error("spool: {0}")]
    Config(String),
    /// The state file does not parse.
    #[error("spool {path}: line {line}: {problem}")]
    State {
        /// The state file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        problem: String,
    },
}

/// Where a batch lives.
#[derive(Clone, Copy, Debug)]
struct Entry {
    seq: u64,
    offset: u64,
    len: u32,
    flows: u32,
}

#[derive(Debug)]
struct Segment {
    path: PathBuf,
    /// The segment's name: its first seq (or the next seq when empty).
    base: u64,
    file: File,
    bytes: u64,
    entries: Vec<Entry>,
}

/// Cumulative spool counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Bytes in the segments now.
    pub bytes: u64,
    /// Unacknowledged batches deleted at the size bound.
    pub dropped_batches: u64,
    /// Flows in them.
    pub dropped_flows: u64,
    /// Their bytes.
    pub dropped_bytes: u64,
    /// Records found damaged at open and skipped.
    pub corrupt_records: u64,
}

/// One batch read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpooledBatch {
    /// Sequence number.
    pub seq: u64,
    /// Flows in it.
    pub flows: u32,
    /// The encoded flows (FlowBatch field 3 entries).
    pub payload: Vec<u8>,
}

/// The spool. Not thread-safe by itself; the exporter shares it behind a mutex.
#[derive(Debug)]
pub struct Spool {
    cfg: SpoolConfig,
    segments: Vec<Segment>,
    incarnation: u64,
    next_seq: u64,
    acked: u64,
    stats: SpoolStats,
    state_dirty: bool,
    unsynced_since: Option<Instant>,
    /// Segments closed since the last flush, to be synced (their handles
    /// duplicated), and whether the directory needs a sync (a new name).
    closed: Vec<(File, PathBuf)>,
    dir_dirty: bool,
    /// Generation of the latest state text made, and of the latest written
    /// (shared with the flushes running outside the lock).
    state_gen: u64,
    state_written: Arc<Mutex<u64>>,
    /// Highest seq handed to the current stream ([`Spool::sent`]).
    sent_upto: u64,
    /// Batches the size bound deleted while they were in flight on the
    /// current stream: (seq, flows, bytes). An ack of the stream that
    /// passes one means the collector stored it (not a loss); the stream
    /// ending first makes it a loss, counted ([`Spool::stream_ended`]).
    in_flight_dropped: Vec<(u64, u32, u64)>,
}

/// Flushes taken out of the spool ([`Spool::take_flush`]) to be done
/// without its lock: the fsyncs of the segments and the state file, so
/// that appends (the capture's hand-off) and the sender's reads go on
/// while the disk is slow.
#[derive(Debug)]
#[must_use = "a flush does nothing until run"]
pub struct Flush {
    files: Vec<(File, PathBuf)>,
    dir: Option<PathBuf>,
    state: Option<(u64, String)>,
    state_dir: PathBuf,
    written: Arc<Mutex<u64>>,
}

impl Flush {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.dir.is_none() && self.state.is_none()
    }

    /// Syncs the segments, the directory, and writes the state (unless a
    /// newer state was written meanwhile).
    pub fn run(self) -> Result<(), SpoolError> {
        for (f, path) in &self.files {
            f.sync_data().map_err(io_err(path, "syncing"))?;
        }
        if let Some(d) = &self.dir
            && let Ok(f) = File::open(d)
        {
            let _ = f.sync_all();
        }
        if let Some((generation, text)) = &self.state {
            write_state_file(&self.state_dir, &self.written, *generation, text)?;
        }
        Ok(())
    }
}

/// Writes the state file (temporary file, fsync, rename) if `generation`
/// is newer than the last written; serialized by `written`.
fn write_state_file(
    dir: &Path,
    written: &Mutex<u64>,
    generation: u64,
    text: &str,
) -> Result<(), SpoolError> {
    let mut last = written.lock().unwrap_or_else(|p| p.into_inner());
    if generation <= *last {
        return Ok(());
    }
    let path = dir.join("state");
    let tmp = dir.join("state.tmp");
    let mut f = File::create(&tmp).map_err(io_err(&tmp, "creating"))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_data())
        .map_err(io_err(&tmp, "writing"))?;
    fs::rename(&tmp, &path).map_err(io_err(&path, "replacing"))?;
    *last = generation;
    Ok(())
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> SpoolError + 'a {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// A random, non-zero incarnation id.
fn new_incarnation() -> u64 {
    loop {
        let v = super::random_u64();
        if v != 0 {
            return v;
        }
    }
}

fn segment_name(base: u64) -> String {
    format!("{base:020}.seg")
}

impl Spool {
    /// Opens the spool in `cfg.dir`, recovering segments and state.
    pub fn open(cfg: SpoolConfig) -> Result<Spool, SpoolError> {
        if cfg.segment_bytes < 4096 || cfg.max_bytes < 2 * cfg.segment_bytes {
            return Err(SpoolError::Config(format!(
                "max_bytes ({}) must be at least twice segment_bytes ({}), and segments at least 4096 bytes",
                cfg.max_bytes, cfg.segment_bytes
            )));
        }
        fs::create_dir_all(&cfg.dir).map_err(io_err(&cfg.dir, "creating the directory"))?;
        let mut spool = Spool {
            segments: Vec::new(),
            incarnation: 0,
            next_seq: 1,
            acked: 0,
            stats: SpoolStats::default(),
            state_dirty: false,
            unsynced_since: None,
            closed: Vec::new(),
            dir_dirty: false,
            state_gen: 0,
            state_written: Arc::new(Mutex::new(0)),
            sent_upto: 0,
            in_flight_dropped: Vec::new(),
            cfg,
        };
        spool.read_state()?;
        if spool.incarnation == 0 {
            spool.incarnation = new_incarnation();
            tracing::info!(
                dir = %spool.cfg.dir.display(),
                incarnation = %format_args!("{:016x}", spool.incarnation),
                "new spool incarnation"
            );
        }
        let mut bases = Vec::new();
        for e in fs::read_dir(&spool.cfg.dir).map_err(io_err(&spool.cfg.dir, "listing"))? {
            let e = e.map_err(io_err(&spool.cfg.dir, "listing"))?;
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(stem) = name.strip_suffix(".seg")
                && stem.len() == 20
                && let Ok(base) = stem.parse::<u64>()
            {
                bases.push(base);
            }
        }
        bases.sort_unstable();
        let n = bases.len();
        for (i, base) in bases.into_iter().enumerate() {
            let seg = spool.recover_segment(base, i + 1 == n)?;
            spool.segments.push(seg);
        }
        let last_seq = spool
            .segments
            .iter()
            .rev()
            .find_map(|s| s.entries.last().map(|e| e.seq));
        let empty_base = spool.segments.last().map_or(1, |s| s.base);
        spool.next_seq = last_seq
            .map_or(empty_base, |s| s + 1)
            .max(spool.acked + 1)
            .max(spool.next_seq);
        if spool.segments.is_empty() {
            spool.roll()?;
        }
        // Segments wholly acknowledged before a crash.
        spool.delete_acked()?;
        spool.write_state()?;
        tracing::info!(
            dir = %spool.cfg.dir.display(),
            pending = spool.pending(),
            incarnation = %format_args!("{:016x}", spool.incarnation),
            next_seq = spool.next_seq,
            acked = spool.acked,
            corrupt = spool.stats.corrupt_records,
            "spool opened"
        );
        Ok(spool)
    }

    fn read_state(&mut self) -> Result<(), SpoolError> {
        let path = self.cfg.dir.join("state");
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err(&path, "reading")(e)),
        };
        for (i, line) in text.lines().enumerate() {
            let bad = |problem: String| SpoolError::State {
                path: path.clone(),
                line: i + 1,
                problem,
            };
            let Some((k, v)) = line.split_once('=') else {
                return Err(bad(format!("{line:?} is not key=value")));
            };
            let v: u64 = v
                .trim()
                .parse()
                .map_err(|_| bad(format!("{k}: {v:?} is not a number")))?;
            match k.trim() {
                "version" => {}
                "incarnation" => self.incarnation = v,
                "acked" => self.acked = v,
                "next_seq" => self.next_seq = v,
                "dropped_batches" => self.stats.dropped_batches = v,
                "dropped_flows" => self.stats.dropped_flows = v,
                "dropped_bytes" => self.stats.dropped_bytes = v,
                "corrupt_records" => self.stats.corrupt_records = v,
                // Dropped in flight before a stop: their fate is unknown
                // now, so they count as lost.
                "in_flight_dropped_batches" => self.stats.dropped_batches += v,
                "in_flight_dropped_flows" => self.stats.dropped_flows += v,
                "in_flight_dropped_bytes" => self.stats.dropped_bytes += v,
                other => return Err(bad(format!("unknown key {other:?}"))),
            }
        }
        Ok(())
    }

    /// The state as text, with a new generation; clears `state_dirty`.
    fn state_text(&mut self) -> (u64, String) {
        self.state_gen += 1;
        self.state_dirty = false;
        let limbo = &self.in_flight_dropped;
        let text = format!(
            "version=1\nincarnation={}\nacked={}\nnext_seq={}\ndropped_batches={}\ndropped_flows={}\ndropped_bytes={}\ncorrupt_records={}\nin_flight_dropped_batches={}\nin_flight_dropped_flows={}\nin_flight_dropped_bytes={}\n",
            self.incarnation,
            self.acked,
            self.next_seq,
            self.stats.dropped_batches,
            self.stats.dropped_flows,
            self.stats.dropped_bytes,
            self.stats.corrupt_records,
            limbo.len(),
            limbo.iter().map(|l| u64::from(l.1)).sum::<u64>(),
            limbo.iter().map(|l| l.2).sum::<u64>()
        );
        (self.state_gen, text)
    }

    /// Writes the state now (under the caller's lock: opening, the size
    /// bound's drops, closing).
    fn write_state(&mut self) -> Result<(), SpoolError> {
        let (generation, text) = self.state_text();
        write_state_file(&self.cfg.dir, &self.state_written, generation, &text)
    }

    /// Reads a segment's records, checking each CRC; cuts the segment at
    /// the first damaged record.
    fn recover_segment(&mut self, base: u64, last: bool) -> Result<Segment, SpoolError> {
        let path = self.cfg.dir.join(segment_name(base));
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path, "opening"))?;
        let len = file
            .metadata()
            .map_err(io_err(&path, "reading metadata"))?
            .len();
        let mut r = BufReader::with_capacity(1 << 20, &file);
        let mut entries = Vec::new();
        let mut offset = 0u64;
        let mut expect = None::<u64>;
        let mut payload = Vec::new();
        let damaged = loop {
            if offset == len {
                break false;
            }
            let mut h = [0u8; HEADER];
            if offset + HEADER as u64 > len || r.read_exact(&mut h).is_err() {
                break true;
            }
            let plen = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
            let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
            let seq = u64::from_le_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]);
            let flows = u32::from_le_bytes([h[16], h[17], h[18], h[19]]);
            if plen > MAX_RECORD_BYTES || offset + (HEADER as u64) + u64::from(plen) > len {
                break true;
            }
            payload.resize(plen as usize, 0);
            if r.read_exact(&mut payload).is_err() {
                break true;
            }
            let mut hasher = crc32fast::Hasher::new();
            hasher.update(&h[8..]);
            hasher.update(&payload);
            if hasher.finalize() != crc || expect.is_some_and(|e| seq != e) || seq < base {
                break true;
            }
            entries.push(Entry {
                seq,
                offset,
                len: plen,
                flows,
            });
            expect = Some(seq + 1);
            offset += HEADER as u64 + u64::from(plen);
        };
        if damaged {
            self.stats.corrupt_records += 1;
            tracing::warn!(
                segment = %path.display(),
                offset,
                last_segment = last,
                "spool segment damaged (torn write or corruption); later records in it are skipped"
            );
            file.set_len(offset).map_err(io_err(&path, "truncating"))?;
            // The damaged record may have reached the collector before the
            // damage (it was sent from the page cache): never reuse its seq.
            self.next_seq = self.next_seq.max(expect.unwrap_or(base) + 1);
            self.state_dirty = true;
        }
        Ok(Segment {
            path,
            base,
            file,
            bytes: offset,
            entries,
        })
    }

    /// Starts a new active segment.
    fn roll(&mut self) -> Result<(), SpoolError> {
        // The closed segment is synced by the next flush, outside the lock.
        if let Some(s) = self.segments.last()
            && self.unsynced_since.is_some()
        {
            let dup = s.file.try_clone().map_err(io_err(&s.path, "duplicating"))?;
            self.closed.push((dup, s.path.clone()));
        }
        let base = self.next_seq;
        let path = self.cfg.dir.join(segment_name(base));
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io_err(&path, "creating"))?;
        // Its name is made durable by the next flush.
        self.dir_dirty = true;
        self.segments.push(Segment {
            path,
            base,
            file,
            bytes: 0,
            entries: Vec::new(),
        });
        self.unsynced_since = None;
        Ok(())
    }

    /// Appends a batch of `flows` flows; returns its sequence number.
    pub fn append(&mut self, payload: &[u8], flows: u32) -> Result<u64, SpoolError> {
        let rec = HEADER as u64 + payload.len() as u64;
        if payload.len() as u64 > u64::from(MAX_RECORD_BYTES) {
            return Err(SpoolError::Config(format!(
                "batch of {} bytes exceeds the record limit {MAX_RECORD_BYTES}",
                payload.len()
            )));
        }
        let active_bytes = self.segments.last().map_or(0, |s| s.bytes);
        if active_bytes > 0 && active_bytes + rec > self.cfg.segment_bytes {
            self.roll()?;
        }
        self.enforce_bound(rec)?;
        let seq = self.next_seq;
        let mut h = [0u8; HEADER];
        h[0..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        h[8..16].copy_from_slice(&seq.to_le_bytes());
        h[16..20].copy_from_slice(&flows.to_le_bytes());
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&h[8..]);
        hasher.update(payload);
        h[4..8].copy_from_slice(&hasher.finalize().to_le_bytes());
        let fsync = self.cfg.fsync;
        let Some(seg) = self.segments.last_mut() else {
            return Err(SpoolError::Config("no active segment".into()));
        };
        let offset = seg.bytes;
        // One write of header + payload keeps a crash from splitting them
        // in the common case; the CRC catches the rest.
        let mut buf = Vec::with_capacity(rec as usize);
        buf.extend_from_slice(&h);
        buf.extend_from_slice(payload);
        if let Err(e) = seg.file.write_all(&buf) {
            // Cut a partial write so the segment stays well-formed.
            let _ = seg.file.set_len(offset);
            return Err(io_err(&seg.path, "appending")(e));
        }
        seg.bytes += rec;
        seg.entries.push(Entry {
            seq,
            offset,
            len: payload.len() as u32,
            flows,
        });
        self.next_seq += 1;
        // Synced by the flush the caller takes after the append
        // ([`Spool::take_flush`]), outside its lock.
        let _ = fsync;
        self.unsynced_since.get_or_insert_with(Instant::now);
        Ok(seq)
    }

    /// Deletes the oldest segments until `incoming` more bytes fit.
    fn enforce_bound(&mut self, incoming: u64) -> Result<(), SpoolError> {
        while self.total_bytes() + incoming > self.cfg.max_bytes && self.segments.len() > 1 {
            let seg = self.segments.remove(0);
            let mut lost = 0u64;
            for e in seg.entries.iter().filter(|e| e.seq > self.acked) {
                let bytes = HEADER as u64 + u64::from(e.len);
                if e.seq <= self.sent_upto {
                    // In flight: its ack may still come.
                    self.in_flight_dropped.push((e.seq, e.flows, bytes));
                } else {
                    self.stats.dropped_batches += 1;
                    self.stats.dropped_flows += u64::from(e.flows);
                    self.stats.dropped_bytes += bytes;
                }
                lost += 1;
            }
            if lost > 0 {
                tracing::error!(
                    segment = %seg.path.display(),
                    batches = lost,
                    "spool full: oldest unacknowledged batches dropped"
                );
                self.state_dirty = true;
            }
            fs::remove_file(&seg.path).map_err(io_err(&seg.path, "deleting"))?;
        }
        if self.state_dirty {
            self.write_state()?;
        }
        Ok(())
    }

    fn total_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// Records that every batch up to `seq` is acknowledged; deletes
    /// segments that hold nothing else. The state file is written by
    /// [`Spool::maintain`] and [`Spool::close`].
    pub fn ack(&mut self, seq: u64) -> Result<(), SpoolError> {
        let before = self.in_flight_dropped.len();
        // Stored after all: acknowledged on the stream they were sent on.
        self.in_flight_dropped.retain(|l| l.0 > seq);
        if self.in_flight_dropped.len() != before {
            self.state_dirty = true;
        }
        if seq > self.acked {
            self.acked = seq.min(self.next_seq.saturating_sub(1));
            self.state_dirty = true;
            self.delete_acked()?;
        }
        Ok(())
    }

    fn delete_acked(&mut self) -> Result<(), SpoolError> {
        while self.segments.len() > 1 {
            let done = self.segments[0]
                .entries
                .last()
                .is_none_or(|e| e.seq <= self.acked);
            if !done {
                break;
            }
            let seg = self.segments.remove(0);
            fs::remove_file(&seg.path).map_err(io_err(&seg.path, "deleting"))?;
        }
        Ok(())
    }

    /// The oldest batch with a sequence number of at least `seq`.
    pub fn read_from(&self, seq: u64) -> Result<Option<SpooledBatch>, SpoolError> {
        for seg in &self.segments {
            let Some(last) = seg.entries.last() else {
                continue;
            };
            if last.seq < seq {
                continue;
            }
            let first = seg.entries[0].seq;
            let idx = seq.saturating_sub(first) as usize;
            let e = seg.entries[idx.min(seg.entries.len() - 1)];
            let e = if e.seq >= seq { e } else { seg.entries[0] };
            let mut payload = vec![0u8; e.len as usize];
            seg.file
                .read_exact_at(&mut payload, e.offset + HEADER as u64)
                .map_err(io_err(&seg.path, "reading"))?;
            return Ok(Some(SpooledBatch {
                seq: e.seq,
                flows: e.flows,
                payload,
            }));
        }
        Ok(None)
    }

    /// What is due to be flushed by the policy (or everything, `all`):
    /// segments to sync and the state to write, taken out to be run
    /// without the spool's lock. Call after appends and often.
    pub fn take_flush(&mut self, all: bool) -> Flush {
        let mut files = std::mem::take(&mut self.closed);
        let due = match (self.cfg.fsync, self.unsynced_since) {
            (_, None) => false,
            (Fsync::Always, Some(_)) => true,
            (Fsync::Interval(every), Some(since)) => all || since.elapsed() >= every,
            (Fsync::Never, Some(_)) => all,
        };
        if due
            && let Some(s) = self.segments.last()
            && let Ok(dup) = s.file.try_clone()
        {
            files.push((dup, s.path.clone()));
            self.unsynced_since = None;
        }
        let state = self.state_dirty.then(|| self.state_text());
        Flush {
            files,
            dir: std::mem::take(&mut self.dir_dirty).then(|| self.cfg.dir.clone()),
            state,
            state_dir: self.cfg.dir.clone(),
            written: self.state_written.clone(),
        }
    }

    /// Flushes data and state when the policy says so, here (tests and
    /// single-threaded users; the exporter runs [`Spool::take_flush`]'s
    /// flush outside its lock).
    pub fn maintain(&mut self) -> Result<(), SpoolError> {
        self.take_flush(false).run()
    }

    /// Flushes the active segment (and any closed one), here.
    pub fn sync(&mut self) -> Result<(), SpoolError> {
        let dirty = std::mem::take(&mut self.state_dirty);
        let f = self.take_flush(true);
        self.state_dirty = dirty;
        f.run()
    }

    /// Flushes everything and writes the state.
    pub fn close(&mut self) -> Result<(), SpoolError> {
        self.stream_ended();
        self.sync()?;
        self.write_state()
    }

    /// Highest acknowledged seq.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// The seq the next batch will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Batches appended and not acknowledged.
    pub fn pending(&self) -> u64 {
        self.segments
            .iter()
            .flat_map(|s| &s.entries)
            .filter(|e| e.seq > self.acked)
            .count() as u64
    }

    /// Records that batches up to `seq` were handed to the current stream.
    pub fn sent(&mut self, seq: u64) {
        self.sent_upto = self.sent_upto.max(seq);
    }

    /// The current stream ended: the batches the size bound deleted while
    /// in flight on it and that it did not acknowledge are lost, counted.
    pub fn stream_ended(&mut self) {
        for (_, flows, bytes) in self.in_flight_dropped.drain(..) {
            self.stats.dropped_batches += 1;
            self.stats.dropped_flows += u64::from(flows);
            self.stats.dropped_bytes += bytes;
            self.state_dirty = true;
        }
        self.sent_upto = self.acked;
    }

    /// The spool's identity, fixed for its life (never 0).
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Counters.
    pub fn stats(&self) -> SpoolStats {
        SpoolStats {
            bytes: self.total_bytes(),
            ..self.stats
        }
    }
}

#[cfg(test)]
mod tests;
