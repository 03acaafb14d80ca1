//! Column segments: the embedded store's stored flows, column by column,
//! for scans at memory speed.
//!
//! SQLite keeps each flow as a row, which suits ingest, exactly-once
//! commits and fetching records, but an ad-hoc aggregate (any filter, any
//! top-N key) has to step through every row: a few million a second. A
//! segment holds the flows of one closed range of row ids `lo..hi` again,
//! as arrays of the fields filters and groups read, so that a scan reads
//! only the columns a query needs, tests a filter over an array at a time
//! and groups by small dense ids. Segments are derived data: SQLite stays
//! the record of truth, a segment can always be rebuilt from it, and one
//! that is missing, stale or damaged is read from SQLite instead.
//!
//! # File format (version 1, little-endian)
//!
//! ```text
//! 0   magic "VIGLCOL1"
//! 8   u32 version (1), u32 column count C
//! 16  u64 rows
//! 24  i64 lo, i64 hi           the row ids the segment holds: lo..hi
//! 40  u64 min first_ns, u64 max first_ns
//! 56  C × { u32 column id, u32 0, u64 offset, u64 length }
//! …   the columns, each at an offset that is a multiple of 8
//! ```
//!
//! A numeric column is `{ u8 width, 7 × 0, u64 base }` and `rows` values of
//! `width` bytes (0, 1, 2, 4 or 8): a value is `base` plus the stored
//! number (width 0: every value is `base`). Addresses, application names
//! and fingerprints are ids into a dictionary of their own column, sorted,
//! so that a range of addresses or an order of names is a range of ids:
//! an address dictionary is `{ u32 n4, u32 n6 }`, then `n4` IPv4 addresses
//! as u32 and `n6` IPv6 addresses as u128 (numeric values, ascending; the
//! IPv4 ones take ids `0..n4`); a text dictionary is `{ u32 n }`, `n + 1`
//! u32 end offsets (the first 0) and the bytes, entry 0 the empty text.
//! ICS counts are sparse: `{ u32 n }` and `n` × `{ u32 row, u64 reads, u64
//! writes, u64 control }` for the rows where any is not 0.

mod addrs;
mod cond;
mod index;
mod scan;

use std::fs::File;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

pub use cond::{ScanError, Verify};
pub use index::AddrIndex;
pub use scan::{Compiled, Job, Scan};

/// Rows a segment holds at most (row ids of a segment differ by less than
/// 2^32, and a segment's arrays stay a few MB, within the caches).
pub const SEGMENT_ROWS: usize = 1 << 18;

const MAGIC: &[u8; 8] = b"VIGLCOL1";
const VERSION: u32 = 1;
const HEADER: usize = 56;
const DIR_ENTRY: usize = 24;

/// A column of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum Col {
    /// Row id minus `lo`.
    Row = 1,
    /// `first_seen`, ns.
    First,
    /// Initiator address id (into [`Col::SrcDict`]).
    Src,
    /// Responder address id (into [`Col::DstDict`]).
    Dst,
    /// Initiator port (0 without ports).
    SrcPort,
    /// Responder port (0 without ports).
    DstPort,
    /// 1 if the flow has ports.
    HasPorts,
    /// IP protocol.
    Proto,
    /// Connection state index.
    State,
    /// Packets, both directions.
    Packets,
    /// IP bytes, both directions.
    Bytes,
    /// The sensor's row id in `sensors`.
    Sensor,
    /// The first 8 bytes of the Community ID, as a big-endian number.
    CidPrefix,
    /// VLAN ids, packed as `flows.vlan`.
    Vlan,
    /// Application protocol code.
    AppProto,
    /// Application name id (into [`Col::AppNameDict`]).
    AppName,
    /// Application fingerprint id (into [`Col::AppFpDict`]).
    AppFp,
    /// Sparse ICS counts.
    Ics,
    /// Initiator addresses.
    SrcDict,
    /// Responder addresses.
    DstDict,
    /// Application names.
    AppNameDict,
    /// Application fingerprints.
    AppFpDict,
}

impl Col {
    const ALL: [Col; 22] = [
        Col::Row,
        Col::First,
        Col::Src,
        Col::Dst,
        Col::SrcPort,
        Col::DstPort,
        Col::HasPorts,
        Col::Proto,
        Col::State,
        Col::Packets,
        Col::Bytes,
        Col::Sensor,
        Col::CidPrefix,
        Col::Vlan,
        Col::AppProto,
        Col::AppName,
        Col::AppFp,
        Col::Ics,
        Col::SrcDict,
        Col::DstDict,
        Col::AppNameDict,
        Col::AppFpDict,
    ];

    fn from_id(id: u32) -> Option<Col> {
        Col::ALL.into_iter().find(|c| *c as u32 == id)
    }

    /// Its slot in arrays indexed by column.
    pub fn index(self) -> usize {
        self as usize - 1
    }

    /// Columns in all.
    pub const COUNT: usize = 22;
}

/// One flow as a segment takes it.
#[derive(Clone, Copy, Debug)]
pub struct ColumnRow<'a> {
    /// Its row id.
    pub rowid: i64,
    /// `first_seen`, ns.
    pub first_ns: u64,
    /// Initiator address.
    pub src: IpAddr,
    /// Responder address.
    pub dst: IpAddr,
    /// Initiator port.
    pub src_port: Option<u16>,
    /// Responder port.
    pub dst_port: Option<u16>,
    /// IP protocol.
    pub proto: u8,
    /// Connection state index.
    pub state: u8,
    /// Packets, both directions.
    pub packets: u64,
    /// IP bytes, both directions.
    pub bytes: u64,
    /// The sensor's row id.
    pub sensor: u64,
    /// Community ID (20 bytes; shorter is padded with zeros).
    pub community_id: &'a [u8],
    /// Packed VLAN ids.
    pub vlan: u64,
    /// Application protocol code.
    pub app_proto: u8,
    /// Application name (lowercase).
    pub app_name: &'a str,
    /// Application fingerprint (lowercase).
    pub app_fp: &'a str,
    /// ICS reads, writes, control operations.
    pub ics: [u64; 3],
}

/// An address as a dictionary sorts it: IPv4 first, then numerically.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AddrKey {
    /// IPv4, as a number.
    V4(u32),
    /// IPv6, as a number.
    V6(u128),
}

impl AddrKey {
    /// The key of an address.
    pub fn of(a: IpAddr) -> AddrKey {
        match a {
            IpAddr::V4(v) => AddrKey::V4(u32::from(v)),
            IpAddr::V6(v) => AddrKey::V6(u128::from(v)),
        }
    }

    /// The address.
    pub fn addr(self) -> IpAddr {
        match self {
            AddrKey::V4(v) => IpAddr::V4(Ipv4Addr::from(v)),
            AddrKey::V6(v) => IpAddr::V6(Ipv6Addr::from(v)),
        }
    }
}

/// The first 8 bytes of a Community ID as a number (missing bytes 0).
pub fn cid_prefix(cid: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = cid.len().min(8);
    b[..n].copy_from_slice(&cid[..n]);
    u64::from_be_bytes(b)
}

/// A segment being built: rows appended in row-id order, then written.
#[derive(Debug, Default)]
pub struct SegmentBuilder {
    nums: Vec<Vec<u64>>,
    src: Vec<AddrKey>,
    dst: Vec<AddrKey>,
    names: Vec<String>,
    fps: Vec<String>,
    ics: Vec<(u32, [u64; 3])>,
    lo: Option<i64>,
    last: i64,
}

/// The numeric columns a builder fills, in this order.
const NUMS: [Col; 13] = [
    Col::Row,
    Col::First,
    Col::SrcPort,
    Col::DstPort,
    Col::HasPorts,
    Col::Proto,
    Col::State,
    Col::Packets,
    Col::Bytes,
    Col::Sensor,
    Col::CidPrefix,
    Col::Vlan,
    Col::AppProto,
];

impl SegmentBuilder {
    /// An empty segment.
    pub fn new() -> SegmentBuilder {
        SegmentBuilder {
            nums: vec![Vec::new(); NUMS.len()],
            ..SegmentBuilder::default()
        }
    }

    /// Rows appended so far.
    pub fn rows(&self) -> usize {
        self.src.len()
    }

    /// Appends a row; row ids ascend and stay within 2^32 of the first.
    pub fn push(&mut self, r: &ColumnRow<'_>) {
        let lo = *self.lo.get_or_insert(r.rowid);
        debug_assert!(r.rowid >= self.last && r.rowid - lo < 1 << 32);
        self.last = r.rowid;
        let row = self.src.len() as u32;
        let v = [
            (r.rowid - lo) as u64,
            r.first_ns,
            u64::from(r.src_port.unwrap_or(0)),
            u64::from(r.dst_port.unwrap_or(0)),
            u64::from(r.dst_port.is_some()),
            u64::from(r.proto),
            u64::from(r.state),
            r.packets,
            r.bytes,
            r.sensor,
            cid_prefix(r.community_id),
            r.vlan,
            u64::from(r.app_proto),
        ];
        for (col, x) in self.nums.iter_mut().zip(v) {
            col.push(x);
        }
        self.src.push(AddrKey::of(r.src));
        self.dst.push(AddrKey::of(r.dst));
        self.names.push(r.app_name.to_owned());
        self.fps.push(r.app_fp.to_owned());
        if r.ics != [0; 3] {
            self.ics.push((row, r.ics));
        }
    }

    /// Writes the segment of row ids `lo..hi` (the appended rows are all
    /// of that range's) to `path` through a temporary file renamed into
    /// place; the file and its directory synced.
    pub fn write(&self, path: &Path, lo: i64, hi: i64) -> std::io::Result<()> {
        let out = self.bytes(lo, hi);
        let tmp = path.with_extension("tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(&out)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        // The rename itself on disk before the segment is registered.
        match path.parent() {
            Some(dir) => File::open(dir)?.sync_all(),
            None => Ok(()),
        }
    }

    /// The segment of rows `lo..hi`, as a file holds it.
    pub fn bytes(&self, lo: i64, hi: i64) -> Vec<u8> {
        let rows = self.rows();
        let mut cols: Vec<(Col, Vec<u8>)> = Vec::with_capacity(Col::COUNT);
        for (c, v) in NUMS.iter().zip(&self.nums) {
            let mut v = v.clone();
            if *c == Col::Row {
                // Offsets from the range's start, not the first row's.
                let shift = (self.lo.unwrap_or(lo) - lo) as u64;
                v.iter_mut().for_each(|x| *x += shift);
            }
            cols.push((*c, encode_nums(&v)));
        }
        for (v, c, d) in [
            (&self.src, Col::Src, Col::SrcDict),
            (&self.dst, Col::Dst, Col::DstDict),
        ] {
            let (ids, dict) = addr_dict(v);
            cols.push((c, encode_nums(&ids)));
            cols.push((d, dict));
        }
        for (v, c, d) in [
            (&self.names, Col::AppName, Col::AppNameDict),
            (&self.fps, Col::AppFp, Col::AppFpDict),
        ] {
            let (ids, dict) = text_dict(v);
            cols.push((c, encode_nums(&ids)));
            cols.push((d, dict));
        }
        let mut ics = Vec::with_capacity(4 + self.ics.len() * 28);
        ics.extend_from_slice(&(self.ics.len() as u32).to_le_bytes());
        for (row, v) in &self.ics {
            ics.extend_from_slice(&row.to_le_bytes());
            for x in v {
                ics.extend_from_slice(&x.to_le_bytes());
            }
        }
        cols.push((Col::Ics, ics));
        let first = &self.nums[1];
        let (min, max) = first
            .iter()
            .fold((u64::MAX, 0), |(a, b), x| (a.min(*x), b.max(*x)));
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(cols.len() as u32).to_le_bytes());
        out.extend_from_slice(&(rows as u64).to_le_bytes());
        out.extend_from_slice(&lo.to_le_bytes());
        out.extend_from_slice(&hi.to_le_bytes());
        out.extend_from_slice(&min.to_le_bytes());
        out.extend_from_slice(&max.to_le_bytes());
        let mut offset = align8(HEADER + cols.len() * DIR_ENTRY);
        for (c, data) in &cols {
            out.extend_from_slice(&(*c as u32).to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&(offset as u64).to_le_bytes());
            out.extend_from_slice(&(data.len() as u64).to_le_bytes());
            offset = align8(offset + data.len());
        }
        for (_, data) in &cols {
            out.resize(align8(out.len()), 0);
            out.extend_from_slice(data);
        }
        out
    }
}

fn align8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

/// A numeric column: the smallest width that holds every value minus the
/// least.
fn encode_nums(v: &[u64]) -> Vec<u8> {
    let base = v.iter().copied().min().unwrap_or(0);
    let span = v.iter().map(|x| x - base).max().unwrap_or(0);
    let width: usize = match span {
        0 => 0,
        1..=0xff => 1,
        0x100..=0xffff => 2,
        0x1_0000..=0xffff_ffff => 4,
        _ => 8,
    };
    let mut out = Vec::with_capacity(16 + v.len() * width);
    out.push(width as u8);
    out.extend_from_slice(&[0; 7]);
    out.extend_from_slice(&base.to_le_bytes());
    for x in v {
        out.extend_from_slice(&(x - base).to_le_bytes()[..width]);
    }
    out
}

fn addr_dict(v: &[AddrKey]) -> (Vec<u64>, Vec<u8>) {
    let mut keys: Vec<AddrKey> = v.to_vec();
    keys.sort_unstable();
    keys.dedup();
    let ids = v
        .iter()
        .map(|k| keys.binary_search(k).unwrap_or(0) as u64)
        .collect();
    let n4 = keys.iter().filter(|k| matches!(k, AddrKey::V4(_))).count();
    let mut out = Vec::with_capacity(8 + n4 * 4 + (keys.len() - n4) * 16);
    out.extend_from_slice(&(n4 as u32).to_le_bytes());
    out.extend_from_slice(&((keys.len() - n4) as u32).to_le_bytes());
    for k in &keys {
        match k {
            AddrKey::V4(a) => out.extend_from_slice(&a.to_le_bytes()),
            AddrKey::V6(a) => out.extend_from_slice(&a.to_le_bytes()),
        }
    }
    (ids, out)
}

fn text_dict(v: &[String]) -> (Vec<u64>, Vec<u8>) {
    let mut keys: Vec<&str> = v.iter().map(String::as_str).collect();
    keys.push("");
    keys.sort_unstable();
    keys.dedup();
    let ids = v
        .iter()
        .map(|k| keys.binary_search(&k.as_str()).unwrap_or(0) as u64)
        .collect();
    let mut out = Vec::new();
    out.extend_from_slice(&(keys.len() as u32).to_le_bytes());
    let mut end = 0u32;
    out.extend_from_slice(&end.to_le_bytes());
    for k in &keys {
        end += k.len() as u32;
        out.extend_from_slice(&end.to_le_bytes());
    }
    for k in &keys {
        out.extend_from_slice(k.as_bytes());
    }
    (ids, out)
}

/// A damaged or foreign segment file.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The file does not hold what its header says.
    #[error("{path}: not a valid column segment: {what}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
}

/// Where a segment's bytes are.
#[derive(Debug)]
enum Backing {
    /// A file, read on demand.
    File(File),
    /// Memory: rows read from the database for one query.
    Memory(Vec<u8>),
}

/// An open segment: its header read, its columns read on demand.
#[derive(Debug)]
pub struct Segment {
    bytes: Backing,
    path: PathBuf,
    len: u64,
    /// Rows.
    pub rows: usize,
    /// First row id.
    pub lo: i64,
    /// Row id after the last.
    pub hi: i64,
    /// Least `first_ns`.
    pub min_first: u64,
    /// Greatest `first_ns`.
    pub max_first: u64,
    dir: [Option<(u64, u64)>; Col::COUNT],
}

impl Segment {
    /// Opens a segment file and checks its header and directory.
    pub fn open(path: &Path) -> Result<Segment, SegmentError> {
        let io = |source| SegmentError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        Segment::with(Backing::File(file), path, len)
    }

    /// A segment held in memory (`bytes` as [`SegmentBuilder::bytes`]
    /// makes them), named `name` in errors.
    pub fn in_memory(bytes: Vec<u8>, name: &Path) -> Result<Segment, SegmentError> {
        let len = bytes.len() as u64;
        Segment::with(Backing::Memory(bytes), name, len)
    }

    fn with(bytes: Backing, path: &Path, len: u64) -> Result<Segment, SegmentError> {
        let mut seg = Segment {
            bytes,
            path: path.to_path_buf(),
            len,
            rows: 0,
            lo: 0,
            hi: 0,
            min_first: 0,
            max_first: 0,
            dir: [None; Col::COUNT],
        };
        let head = seg.read_at(0, HEADER as u64)?;
        if &head[..8] != MAGIC || u32_at(&head, 8) != VERSION {
            return Err(seg.corrupt("magic or version".into()));
        }
        let ncols = u32_at(&head, 12) as u64;
        seg.rows = u64_at(&head, 16) as usize;
        seg.lo = u64_at(&head, 24) as i64;
        seg.hi = u64_at(&head, 32) as i64;
        seg.min_first = u64_at(&head, 40);
        seg.max_first = u64_at(&head, 48);
        if ncols > 64 || seg.rows > SEGMENT_ROWS || seg.hi < seg.lo {
            return Err(seg.corrupt(format!("header: {ncols} columns, {} rows", seg.rows)));
        }
        let dir = seg.read_at(HEADER as u64, ncols * DIR_ENTRY as u64)?;
        for e in dir.chunks_exact(DIR_ENTRY) {
            let (id, off, n) = (u32_at(e, 0), u64_at(e, 8), u64_at(e, 16));
            if off.checked_add(n).is_none_or(|end| end > len) {
                return Err(seg.corrupt(format!("column {id} beyond the end of the file")));
            }
            if let Some(c) = Col::from_id(id) {
                seg.dir[c.index()] = Some((off, n));
            }
        }
        if let Some(c) = Col::ALL.iter().find(|c| seg.dir[c.index()].is_none()) {
            return Err(seg.corrupt(format!("no column {c:?}")));
        }
        Ok(seg)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn corrupt(&self, what: String) -> SegmentError {
        SegmentError::Corrupt {
            path: self.path.clone(),
            what,
        }
    }

    fn read_at(&self, off: u64, n: u64) -> Result<Vec<u8>, SegmentError> {
        if off.checked_add(n).is_none_or(|end| end > self.len) {
            return Err(self.corrupt(format!("{n} bytes at {off} beyond the end")));
        }
        let mut buf = vec![0u8; n as usize];
        self.read_into(off, &mut buf)?;
        Ok(buf)
    }

    /// Fills `buf` from offset `off`.
    fn read_into(&self, off: u64, buf: &mut [u8]) -> Result<(), SegmentError> {
        let n = buf.len() as u64;
        if off.checked_add(n).is_none_or(|end| end > self.len) {
            return Err(self.corrupt(format!("{n} bytes at {off} beyond the end")));
        }
        match &self.bytes {
            Backing::File(f) => f
                .read_exact_at(buf, off)
                .map_err(|source| SegmentError::Io {
                    path: self.path.clone(),
                    source,
                }),
            Backing::Memory(b) => {
                // In bounds: `len` is the memory's length.
                buf.copy_from_slice(&b[off as usize..(off + n) as usize]);
                Ok(())
            }
        }
    }

    /// A column's bytes.
    fn raw(&self, c: Col) -> Result<Vec<u8>, SegmentError> {
        let (off, n) = self.dir[c.index()].unwrap_or((0, 0));
        self.read_at(off, n)
    }

    /// A numeric column's values, into `out` (cleared first).
    pub fn nums(&self, c: Col, out: &mut Vec<u64>) -> Result<(), SegmentError> {
        self.nums_with(c, out, &mut Vec::new())
    }

    /// [`Segment::nums`], reading the file through `scratch` (kept by the
    /// caller from one column to the next, so that it is not allocated
    /// and cleared each time).
    pub fn nums_with(
        &self,
        c: Col,
        out: &mut Vec<u64>,
        scratch: &mut Vec<u8>,
    ) -> Result<(), SegmentError> {
        let (off, n) = self.dir[c.index()].unwrap_or((0, 0));
        let n = usize::try_from(n)
            .ok()
            .filter(|n| {
                off.checked_add(*n as u64)
                    .is_some_and(|end| end <= self.len)
            })
            .ok_or_else(|| self.corrupt(format!("{n} bytes at {off} beyond the end")))?;
        if scratch.len() < n {
            scratch.resize(n, 0);
        }
        let raw = &mut scratch[..n];
        self.read_into(off, raw)?;
        let raw = &raw[..];
        if raw.len() < 16 {
            return Err(self.corrupt(format!("column {c:?}: short header")));
        }
        let width = raw[0] as usize;
        let base = u64_at(raw, 8);
        let data = &raw[16..];
        out.clear();
        if !matches!(width, 0 | 1 | 2 | 4 | 8) || data.len() != width * self.rows {
            return Err(self.corrupt(format!(
                "column {c:?}: {} bytes of width {width} for {} rows",
                data.len(),
                self.rows
            )));
        }
        match width {
            0 => out.resize(self.rows, base),
            1 => out.extend(data.iter().map(|x| base.wrapping_add(u64::from(*x)))),
            2 => out.extend(
                data.chunks_exact(2)
                    .map(|x| base.wrapping_add(u64::from(u16::from_le_bytes([x[0], x[1]])))),
            ),
            4 => out.extend(
                data.chunks_exact(4)
                    .map(|x| base.wrapping_add(u64::from(u32_at(x, 0)))),
            ),
            _ => out.extend(
                data.chunks_exact(8)
                    .map(|x| base.wrapping_add(u64_at(x, 0))),
            ),
        }
        Ok(())
    }

    /// An address dictionary, in id order (checked ascending).
    pub fn addrs(&self, c: Col) -> Result<Vec<AddrKey>, SegmentError> {
        let (v4, v6) = self.addr_dict(c)?;
        let mut out = Vec::with_capacity(v4.len() + v6.len());
        out.extend(v4.into_iter().map(AddrKey::V4));
        out.extend(v6.into_iter().map(AddrKey::V6));
        Ok(out)
    }

    /// An address dictionary as its IPv4 and its IPv6 addresses, each
    /// checked strictly ascending (what ids in address order rely on).
    pub fn addr_dict(&self, c: Col) -> Result<(Vec<u32>, Vec<u128>), SegmentError> {
        let raw = self.raw(c)?;
        let bad = || self.corrupt(format!("column {c:?}: address dictionary"));
        if raw.len() < 8 {
            return Err(bad());
        }
        let (n4, n6) = (u32_at(&raw, 0) as usize, u32_at(&raw, 4) as usize);
        if raw.len() != 8 + n4 * 4 + n6 * 16 {
            return Err(bad());
        }
        let v4: Vec<u32> = raw[8..8 + n4 * 4]
            .chunks_exact(4)
            .map(|x| u32_at(x, 0))
            .collect();
        let v6: Vec<u128> = raw[8 + n4 * 4..]
            .chunks_exact(16)
            .map(|x| {
                let mut b = [0u8; 16];
                b.copy_from_slice(x);
                u128::from_le_bytes(b)
            })
            .collect();
        if v4.windows(2).any(|w| w[0] >= w[1]) || v6.windows(2).any(|w| w[0] >= w[1]) {
            return Err(self.corrupt(format!("column {c:?}: address dictionary out of order")));
        }
        Ok((v4, v6))
    }

    /// A text dictionary, in id order.
    pub fn texts(&self, c: Col) -> Result<Vec<String>, SegmentError> {
        let raw = self.raw(c)?;
        let bad = || self.corrupt(format!("column {c:?}: text dictionary"));
        if raw.len() < 8 {
            return Err(bad());
        }
        let n = u32_at(&raw, 0) as usize;
        let body = 4 + (n + 1) * 4;
        if raw.len() < body {
            return Err(bad());
        }
        let ends: Vec<usize> = raw[4..body]
            .chunks_exact(4)
            .map(|x| u32_at(x, 0) as usize)
            .collect();
        let bytes = &raw[body..];
        let mut out = Vec::with_capacity(n);
        for w in ends.windows(2) {
            let s = bytes.get(w[0]..w[1]).ok_or_else(bad)?;
            out.push(String::from_utf8(s.to_vec()).map_err(|_| bad())?);
        }
        Ok(out)
    }

    /// The sparse ICS counts: (row, [reads, writes, control]).
    pub fn ics(&self) -> Result<Vec<(u32, [u64; 3])>, SegmentError> {
        let raw = self.raw(Col::Ics)?;
        let bad = || self.corrupt("ICS counts".into());
        if raw.len() < 4 {
            return Err(bad());
        }
        let n = u32_at(&raw, 0) as usize;
        if raw.len() != 4 + n * 28 {
            return Err(bad());
        }
        let mut out = Vec::with_capacity(n);
        for e in raw[4..].chunks_exact(28) {
            let row = u32_at(e, 0);
            if row as usize >= self.rows {
                return Err(bad());
            }
            out.push((row, [u64_at(e, 4), u64_at(e, 12), u64_at(e, 20)]));
        }
        Ok(out)
    }
}

/// `f` on `threads` scoped threads at once, their results in no order (a
/// thread's panic goes on in the caller).
fn on_threads<T: Send>(threads: usize, f: impl Fn() -> T + Sync) -> Vec<T> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads).map(|_| s.spawn(&f)).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[i..i + 8]);
    u64::from_le_bytes(x)
}

#[cfg(test)]
mod tests;
