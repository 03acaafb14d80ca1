//! Scans over segments: a plan's condition compiled once per query, tested
//! over a segment's arrays into a mask of matching rows, and the matching
//! rows summed by group, in dense arrays indexed by dictionary id, port or
//! protocol where the key allows, merged into one map per thread.
//!
//! A condition is compiled per query ([`Compiled::new`]); a part of it
//! that needs a segment's dictionary (an address range, a name suffix) is
//! resolved per segment, over the dictionary's entries rather than its
//! rows. Community IDs are kept as 8-byte prefixes: rows whose prefix
//! matches are checked against the full id in SQLite ([`Verify`]), so
//! answers stay exact.

use std::cmp::Ordering;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

use hashbrown::HashMap;

use super::addrs::{AddrParts, PARTS, add3, sum_part, totals};
use vigil_proto::wire::ip_from_bytes;

use super::{AddrKey, Col, Segment, SegmentError, cid_prefix};
use crate::model::query::{Cmp, TextOp, TimeRange, Totals};
use crate::store::StoreError;
use crate::store::plan::{Cond, Field, GroupExpr, GroupValue, Order, Value};

/// Looks up what segments do not hold in full: the sensors of a name and
/// the Community IDs of rows.
pub trait Verify: Sync {
    /// The `sensors` row ids whose name compares `op` with `name`.
    fn sensor_ids(&self, op: Cmp, name: &str) -> Result<Vec<u64>, StoreError>;

    /// Of these row ids, those whose Community ID is `cid`.
    fn rows_with_cid(&self, rowids: &[i64], cid: &[u8]) -> Result<Vec<i64>, StoreError>;
}

/// A condition over a segment's columns.
#[derive(Clone, Debug)]
enum C {
    True,
    False,
    And(Vec<C>),
    Or(Vec<C>),
    Not(Box<C>),
    /// `column op n`.
    Num(Col, Cmp, u64),
    /// `column` in `lo..=hi`; `ports`: and the flow has ports.
    Range(Col, u64, u64, bool),
    /// An address column in `lo..=hi` (one family).
    Addr(Col, AddrKey, AddrKey),
    /// An address column of this family (4 or 16).
    Family(Col, u8),
    Vlan(u16),
    Sensor(Vec<u64>),
    Text(Col, TextOp, String),
    TextCmp(Col, Cmp, String),
    Cid(Vec<u8>),
    /// ICS count (0 reads, 1 writes, 2 control) `op n`.
    Ics(usize, Cmp, u64),
}

/// What a scan groups rows by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Group {
    Zero,
    Addr(Col),
    Num(Col),
    Text(Col),
    Interval { per: u64, step: u64 },
}

/// A plan's condition and group, compiled for segments.
#[derive(Clone, Debug)]
pub struct Compiled {
    cond: C,
    group: Group,
    needs: [bool; Col::COUNT],
}

impl Compiled {
    /// Compiles a condition over `flows` and a group expression over its
    /// fields, or `None` when they read something segments do not hold
    /// (the caller reads SQLite instead).
    pub fn new(
        cond: &Cond,
        group: GroupExpr,
        verify: &dyn Verify,
    ) -> Result<Option<Compiled>, StoreError> {
        let Some(cond) = compile(cond, verify)? else {
            return Ok(None);
        };
        let group = match group {
            GroupExpr::Zero => Group::Zero,
            GroupExpr::Field(f) => match f {
                Field::SrcIp => Group::Addr(Col::Src),
                Field::DstIp => Group::Addr(Col::Dst),
                Field::SrcPort => Group::Num(Col::SrcPort),
                Field::DstPort => Group::Num(Col::DstPort),
                Field::Proto => Group::Num(Col::Proto),
                Field::AppProto => Group::Num(Col::AppProto),
                Field::AppName => Group::Text(Col::AppName),
                Field::AppFp => Group::Text(Col::AppFp),
                _ => return Ok(None),
            },
            GroupExpr::Interval {
                of: Field::FirstNs,
                per,
                step,
            } if per > 0 => Group::Interval { per, step },
            GroupExpr::Interval { .. } => return Ok(None),
        };
        let mut needs = [false; Col::COUNT];
        for c in [Col::Packets, Col::Bytes] {
            needs[c.index()] = true;
        }
        mark(&cond, &mut needs);
        match group {
            Group::Zero => {}
            Group::Addr(c) => {
                needs[c.index()] = true;
                needs[dict_of(c).index()] = true;
            }
            Group::Num(c) => needs[c.index()] = true,
            Group::Text(c) => {
                needs[c.index()] = true;
                needs[dict_of(c).index()] = true;
            }
            Group::Interval { .. } => needs[Col::First.index()] = true,
        }
        Ok(Some(Compiled { cond, group, needs }))
    }
}

impl Compiled {
    /// Compiles a condition over `flows` for listing the matching rows
    /// ([`Scan::rows`]), or `None` when it reads something segments do not
    /// hold.
    pub fn rows(cond: &Cond, verify: &dyn Verify) -> Result<Option<Compiled>, StoreError> {
        Ok(Compiled::new(cond, GroupExpr::Zero, verify)?.map(|mut c| {
            c.needs[Col::First.index()] = true;
            c.needs[Col::Row.index()] = true;
            c
        }))
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

/// Keeps the `k` least of `v` (in no order), once it holds twice as many.
fn keep_first(v: &mut Vec<(u64, i64)>, k: usize) {
    if v.len() > k.saturating_mul(2).max(1024) {
        if k == 0 {
            v.clear();
        } else {
            v.select_nth_unstable(k - 1);
            v.truncate(k);
        }
    }
}

fn dict_of(c: Col) -> Col {
    match c {
        Col::Src => Col::SrcDict,
        Col::Dst => Col::DstDict,
        Col::AppName => Col::AppNameDict,
        _ => Col::AppFpDict,
    }
}

fn mark(c: &C, needs: &mut [bool; Col::COUNT]) {
    let mut need = |c: Col| needs[c.index()] = true;
    match c {
        C::True | C::False => {}
        C::And(v) | C::Or(v) => v.iter().for_each(|g| mark(g, needs)),
        C::Not(g) => mark(g, needs),
        C::Num(col, ..) => need(*col),
        C::Range(col, _, _, ports) => {
            need(*col);
            if *ports {
                need(Col::HasPorts);
            }
        }
        C::Addr(col, ..) | C::Family(col, _) | C::Text(col, ..) | C::TextCmp(col, ..) => {
            need(*col);
            need(dict_of(*col));
        }
        C::Vlan(_) => need(Col::Vlan),
        C::Sensor(_) => need(Col::Sensor),
        C::Cid(_) => {
            need(Col::CidPrefix);
            need(Col::Row);
        }
        C::Ics(..) => need(Col::Ics),
    }
}

fn addr_key(b: &[u8]) -> Option<AddrKey> {
    ip_from_bytes("address", b).ok().map(AddrKey::of)
}

fn compile(c: &Cond, verify: &dyn Verify) -> Result<Option<C>, StoreError> {
    let all = |v: &[Cond]| -> Result<Option<Vec<C>>, StoreError> {
        let mut out = Vec::with_capacity(v.len());
        for g in v {
            match compile(g, verify)? {
                Some(g) => out.push(g),
                None => return Ok(None),
            }
        }
        Ok(Some(out))
    };
    let num_col = |f: Field| match f {
        Field::Proto => Some(Col::Proto),
        Field::ConnState => Some(Col::State),
        Field::Packets => Some(Col::Packets),
        Field::Bytes => Some(Col::Bytes),
        Field::AppProto => Some(Col::AppProto),
        _ => None,
    };
    let text_col = |f: Field| match f {
        Field::AppName => Some(Col::AppName),
        Field::AppFp => Some(Col::AppFp),
        _ => None,
    };
    let addr_col = |f: Field| match f {
        Field::SrcIp => Some(Col::Src),
        Field::DstIp => Some(Col::Dst),
        _ => None,
    };
    let ics = |f: Field| match f {
        Field::IcsReads => Some(0),
        Field::IcsWrites => Some(1),
        Field::IcsControl => Some(2),
        _ => None,
    };
    Ok(Some(match c {
        Cond::True => C::True,
        Cond::False => C::False,
        Cond::And(v) => match all(v)? {
            Some(v) => C::And(v),
            None => return Ok(None),
        },
        Cond::Or(v) => match all(v)? {
            Some(v) => C::Or(v),
            None => return Ok(None),
        },
        Cond::Not(g) => match compile(g, verify)? {
            Some(g) => C::Not(Box::new(g)),
            None => return Ok(None),
        },
        Cond::Cmp(Field::Sensor, op, Value::Text(name)) => C::Sensor(verify.sensor_ids(*op, name)?),
        Cond::Cmp(Field::CommunityId, Cmp::Eq, Value::Bytes(b)) => C::Cid(b.clone()),
        Cond::Cmp(f, op, Value::Num(n)) => {
            if let Some(col) = num_col(*f) {
                C::Num(col, *op, *n)
            } else if let Some(i) = ics(*f) {
                C::Ics(i, *op, *n)
            } else {
                return Ok(None);
            }
        }
        Cond::Cmp(f, op, Value::Text(t)) => match text_col(*f) {
            Some(col) => C::TextCmp(col, *op, t.clone()),
            None => return Ok(None),
        },
        Cond::Range(f, Value::Bytes(lo), Value::Bytes(hi)) => {
            match (addr_col(*f), addr_key(lo), addr_key(hi)) {
                (Some(col), Some(lo), Some(hi)) => C::Addr(col, lo, hi),
                _ => return Ok(None),
            }
        }
        Cond::Range(f, Value::Num(lo), Value::Num(hi)) => match f {
            Field::SrcPort => C::Range(Col::SrcPort, *lo, *hi, true),
            Field::DstPort => C::Range(Col::DstPort, *lo, *hi, true),
            f => match num_col(*f) {
                Some(col) => C::Range(col, *lo, *hi, false),
                None => return Ok(None),
            },
        },
        Cond::AddrLen(f, n) => match addr_col(*f) {
            Some(col) => C::Family(col, *n),
            None => return Ok(None),
        },
        Cond::HasPorts => C::Num(Col::HasPorts, Cmp::Eq, 1),
        Cond::Vlan(v) => C::Vlan(*v),
        Cond::Text(f, op, needle) => match text_col(*f) {
            Some(col) => C::Text(col, *op, needle.clone()),
            None => return Ok(None),
        },
        _ => return Ok(None),
    }))
}

fn cmp_ord(op: Cmp, o: Ordering) -> bool {
    match op {
        Cmp::Gt => o == Ordering::Greater,
        Cmp::Lt => o == Ordering::Less,
        Cmp::Ge => o != Ordering::Less,
        Cmp::Le => o != Ordering::Greater,
        Cmp::Eq => o == Ordering::Equal,
    }
}

/// `v op n` into `mask`, one loop per operator (so that each vectorizes).
fn cmp_into(mask: &mut [u8], v: &[u64], op: Cmp, n: u64) {
    let it = mask.iter_mut().zip(v);
    match op {
        Cmp::Gt => it.for_each(|(m, x)| *m = u8::from(*x > n)),
        Cmp::Lt => it.for_each(|(m, x)| *m = u8::from(*x < n)),
        Cmp::Ge => it.for_each(|(m, x)| *m = u8::from(*x >= n)),
        Cmp::Le => it.for_each(|(m, x)| *m = u8::from(*x <= n)),
        Cmp::Eq => it.for_each(|(m, x)| *m = u8::from(*x == n)),
    }
}

/// Totals by group, in no order.
type ScanOutput = HashMap<GroupValue, Totals>;

/// Why a scan failed: a segment (which the caller may read from SQLite
/// instead) or the store.
#[derive(Debug)]
pub enum ScanError {
    /// The segment at this index of the scan's list.
    Segment(usize, SegmentError),
    /// A lookup in the store.
    Store(StoreError),
}

/// One query's scan over a list of segments.
pub struct Scan<'a> {
    /// The compiled condition and group.
    pub compiled: &'a Compiled,
    /// `first_seen` in any of these ranges.
    pub ranges: Vec<TimeRange>,
    /// Lookups for what segments do not hold.
    pub verify: &'a dyn Verify,
}

impl std::fmt::Debug for Scan<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scan")
            .field("compiled", self.compiled)
            .field("ranges", &self.ranges)
            .finish_non_exhaustive()
    }
}

/// What one thread gathered.
struct Gathered {
    map: ScanOutput,
    addrs: Option<AddrParts>,
    /// About how many segments this thread will sum.
    segments: usize,
}

/// A segment's columns, as far as a scan needs them.
struct Loaded {
    nums: [Vec<u64>; Col::COUNT],
    addrs: [Vec<AddrKey>; 2],
    texts: [Vec<String>; 2],
    ics: Vec<(u32, [u64; 3])>,
}

impl Loaded {
    fn new() -> Loaded {
        Loaded {
            nums: std::array::from_fn(|_| Vec::new()),
            addrs: [Vec::new(), Vec::new()],
            texts: [Vec::new(), Vec::new()],
            ics: Vec::new(),
        }
    }

    fn load(&mut self, seg: &Segment, needs: &[bool; Col::COUNT]) -> Result<(), SegmentError> {
        for c in Col::ALL {
            if !needs[c.index()] {
                continue;
            }
            match c {
                Col::SrcDict => self.addrs[0] = seg.addrs(c)?,
                Col::DstDict => self.addrs[1] = seg.addrs(c)?,
                Col::AppNameDict => self.texts[0] = seg.texts(c)?,
                Col::AppFpDict => self.texts[1] = seg.texts(c)?,
                Col::Ics => self.ics = seg.ics()?,
                c => seg.nums(c, &mut self.nums[c.index()])?,
            }
        }
        // Ids beyond their dictionary would index out of bounds.
        for c in [Col::Src, Col::Dst, Col::AppName, Col::AppFp] {
            if !needs[c.index()] {
                continue;
            }
            let n = match c {
                Col::Src | Col::Dst => self.dict_addrs(c).len(),
                _ => self.dict_texts(c).len(),
            } as u64;
            if self.nums[c.index()].iter().any(|id| *id >= n) {
                return Err(SegmentError::Corrupt {
                    path: seg.path().to_path_buf(),
                    what: format!("column {c:?}: an id beyond its dictionary"),
                });
            }
        }
        Ok(())
    }

    fn dict_addrs(&self, c: Col) -> &[AddrKey] {
        &self.addrs[usize::from(c == Col::Dst)]
    }

    fn dict_texts(&self, c: Col) -> &[String] {
        &self.texts[usize::from(c == Col::AppFp)]
    }
}

impl Scan<'_> {
    /// The rows of a scan over `segments` plus `extra` (rows summed
    /// elsewhere, such as SQLite's for the rows in no segment), in `order`,
    /// at most `limit`; on up to `threads` threads.
    pub fn run(
        &self,
        segments: &[Segment],
        extra: Vec<(GroupValue, Totals)>,
        order: Order,
        limit: Option<usize>,
        threads: usize,
    ) -> Result<Vec<(GroupValue, Totals)>, ScanError> {
        if limit == Some(0) {
            return Ok(Vec::new());
        }
        let next = AtomicUsize::new(0);
        let threads = threads.clamp(1, segments.len().max(1));
        let results = on_threads(threads, || {
            self.worker(segments, &next, segments.len().div_ceil(threads))
        });
        let mut map = ScanOutput::new();
        let mut parts = Vec::new();
        for r in results {
            let g = r?;
            if map.is_empty() {
                map = g.map;
            } else {
                for (k, t) in g.map {
                    map.entry(k).or_default().add(t);
                }
            }
            parts.extend(g.addrs);
        }
        if parts.is_empty() {
            for (k, t) in extra {
                map.entry(k).or_default().add(t);
            }
            return Ok(crate::store::plan::ordered(
                map.into_iter().collect(),
                order,
                limit,
            ));
        }
        let mut more = AddrParts::new();
        for (k, t) in extra {
            if let GroupValue::Addr(a) = k {
                more.push(AddrKey::of(a), [t.flows, t.packets, t.bytes]);
            }
        }
        parts.push(more);
        // Partitions summed on the threads, each on its own.
        let next = AtomicUsize::new(0);
        let rows = on_threads(threads, || {
            let mut got = Vec::new();
            loop {
                let p = next.fetch_add(1, AtomicOrdering::Relaxed);
                if p >= PARTS {
                    return got;
                }
                let v4: Vec<_> = parts.iter().map(|x| &x.v4[p]).collect();
                let v6: Vec<_> = parts.iter().map(|x| &x.v6[p]).collect();
                got.extend(sum_part(&v4, order, limit, |k| {
                    GroupValue::Addr(AddrKey::V4(k).addr())
                }));
                got.extend(sum_part(&v6, order, limit, |k| {
                    GroupValue::Addr(
                        AddrKey::V6((u128::from(k[0]) << 64) | u128::from(k[1])).addr(),
                    )
                }));
            }
        });
        Ok(crate::store::plan::ordered(rows.concat(), order, limit))
    }

    fn worker(
        &self,
        segments: &[Segment],
        next: &AtomicUsize,
        share: usize,
    ) -> Result<Gathered, ScanError> {
        let mut out = Gathered {
            map: ScanOutput::new(),
            addrs: matches!(self.compiled.group, Group::Addr(_)).then(AddrParts::new),
            segments: share,
        };
        let mut acc: Vec<[u64; 3]> = Vec::new();
        self.each_segment(segments, next, |_, cols, mask| {
            self.sum(cols, mask, &mut acc, &mut out);
        })?;
        Ok(out)
    }

    /// Runs `f` on each segment taken from `next` whose time may match,
    /// with its columns and the mask of its matching rows.
    fn each_segment(
        &self,
        segments: &[Segment],
        next: &AtomicUsize,
        mut f: impl FnMut(&Segment, &Loaded, &[u8]),
    ) -> Result<(), ScanError> {
        let mut cols = Loaded::new();
        let mut mask = Vec::new();
        loop {
            let i = next.fetch_add(1, AtomicOrdering::Relaxed);
            let Some(seg) = segments.get(i) else {
                return Ok(());
            };
            let overlaps = |r: &TimeRange| {
                r.since_ns.is_none_or(|t| seg.max_first >= t)
                    && r.until_ns.is_none_or(|t| seg.min_first < t)
            };
            let within = |r: &TimeRange| {
                r.since_ns.is_none_or(|t| seg.min_first >= t)
                    && r.until_ns.is_none_or(|t| seg.max_first < t)
            };
            if seg.rows == 0 || !self.ranges.iter().any(overlaps) {
                continue;
            }
            let inside = self.ranges.iter().any(within);
            let mut needs = self.compiled.needs;
            if !inside {
                needs[Col::First.index()] = true;
            }
            cols.load(seg, &needs)
                .map_err(|e| ScanError::Segment(i, e))?;
            mask.clear();
            mask.resize(seg.rows, 0);
            eval(&self.compiled.cond, seg, &cols, &mut mask, self.verify)?;
            if !inside {
                for (m, f) in mask.iter_mut().zip(&cols.nums[Col::First.index()]) {
                    *m &= u8::from(self.ranges.iter().any(|r| r.contains(*f)));
                }
            }
            f(seg, &cols, &mask);
        }
    }

    /// The first `k` matching rows in `first_seen` order (then row id), as
    /// `(first_ns, row id)`, over `segments`, on up to `threads` threads.
    /// The compiled plan must be [`Compiled::rows`]'.
    pub fn rows(
        &self,
        segments: &[Segment],
        k: usize,
        threads: usize,
    ) -> Result<Vec<(u64, i64)>, ScanError> {
        let next = AtomicUsize::new(0);
        let threads = threads.clamp(1, segments.len().max(1));
        let results = on_threads(threads, || {
            let mut got: Vec<(u64, i64)> = Vec::new();
            self.each_segment(segments, &next, |seg, cols, mask| {
                let first = &cols.nums[Col::First.index()];
                let row = &cols.nums[Col::Row.index()];
                for (i, _) in mask.iter().enumerate().filter(|(_, m)| **m != 0) {
                    got.push((first[i], seg.lo + row[i] as i64));
                }
                keep_first(&mut got, k);
            })
            .map(|()| got)
        });
        let mut all = Vec::new();
        for r in results {
            all.extend(r?);
        }
        keep_first(&mut all, k);
        all.sort_unstable();
        Ok(all)
    }

    fn sum(&self, cols: &Loaded, mask: &[u8], acc: &mut Vec<[u64; 3]>, out: &mut Gathered) {
        let packets = &cols.nums[Col::Packets.index()];
        let bytes = &cols.nums[Col::Bytes.index()];
        let rows = || {
            mask.iter()
                .enumerate()
                .filter(|(_, m)| **m != 0)
                .map(|(i, _)| i)
        };
        let dense = |acc: &mut Vec<[u64; 3]>, n: usize, ids: &[u64]| {
            dense(acc, n, ids, mask, packets, bytes)
        };
        let map = &mut out.map;
        match self.compiled.group {
            Group::Zero => {
                let mut t = [0u64; 3];
                for i in rows() {
                    add3(&mut t, [1, packets[i], bytes[i]]);
                }
                if t[0] > 0 {
                    map.entry(GroupValue::None).or_default().add(totals(t));
                }
            }
            Group::Addr(c) => {
                let dict = cols.dict_addrs(c);
                dense(acc, dict.len(), &cols.nums[c.index()]);
                let sums = &acc[..];
                if let Some(parts) = &mut out.addrs {
                    if parts.v4[0].capacity() == 0 {
                        // As many again for each segment left, split
                        // between the threads.
                        parts.reserve(dict.len() * out.segments.max(1));
                    }
                    for (id, a) in sums.iter().enumerate().filter(|(_, a)| a[0] > 0) {
                        parts.push(dict[id], *a);
                    }
                }
            }
            Group::Text(c) => {
                let dict = cols.dict_texts(c);
                dense(acc, dict.len(), &cols.nums[c.index()]);
                let sums = &acc[..];
                for (id, a) in sums.iter().enumerate().filter(|(_, a)| a[0] > 0) {
                    map.entry(GroupValue::Text(dict[id].clone()))
                        .or_default()
                        .add(totals(*a));
                }
            }
            Group::Num(c) => {
                // Ports, protocols and application codes are below 2^16.
                dense(acc, 1 << 16, &cols.nums[c.index()]);
                let sums = &acc[..];
                for (id, a) in sums.iter().enumerate().filter(|(_, a)| a[0] > 0) {
                    map.entry(GroupValue::Num(id as u64))
                        .or_default()
                        .add(totals(*a));
                }
            }
            Group::Interval { per, step } => {
                let first = &cols.nums[Col::First.index()];
                let mut local: HashMap<u64, [u64; 3]> = HashMap::new();
                for i in rows() {
                    add3(
                        local.entry(first[i] / per * step).or_insert([0; 3]),
                        [1, packets[i], bytes[i]],
                    );
                }
                for (k, t) in local {
                    map.entry(GroupValue::Num(k)).or_default().add(totals(t));
                }
            }
        }
    }
}

/// Sums of the rows in `mask` by id (below `n`), into `acc`.
fn dense(
    acc: &mut Vec<[u64; 3]>,
    n: usize,
    ids: &[u64],
    mask: &[u8],
    packets: &[u64],
    bytes: &[u64],
) {
    acc.clear();
    acc.resize(n, [0; 3]);
    for (i, _) in mask.iter().enumerate().filter(|(_, m)| **m != 0) {
        let a = &mut acc[ids[i] as usize];
        a[0] += 1;
        a[1] = a[1].saturating_add(packets[i]);
        a[2] = a[2].saturating_add(bytes[i]);
    }
}

fn eval(
    c: &C,
    seg: &Segment,
    cols: &Loaded,
    mask: &mut [u8],
    verify: &dyn Verify,
) -> Result<(), ScanError> {
    let col = |c: Col| &cols.nums[c.index()][..];
    match c {
        C::True => mask.fill(1),
        C::False => mask.fill(0),
        C::And(v) | C::Or(v) => {
            let and = matches!(c, C::And(_));
            let mut tmp = vec![0u8; mask.len()];
            for (i, g) in v.iter().enumerate() {
                if i == 0 {
                    eval(g, seg, cols, mask, verify)?;
                    continue;
                }
                eval(g, seg, cols, &mut tmp, verify)?;
                if and {
                    mask.iter_mut().zip(&tmp).for_each(|(m, t)| *m &= t);
                } else {
                    mask.iter_mut().zip(&tmp).for_each(|(m, t)| *m |= t);
                }
            }
        }
        C::Not(g) => {
            eval(g, seg, cols, mask, verify)?;
            mask.iter_mut().for_each(|m| *m ^= 1);
        }
        C::Num(c, op, n) => cmp_into(mask, col(*c), *op, *n),
        C::Range(c, lo, hi, ports) => {
            for (m, x) in mask.iter_mut().zip(col(*c)) {
                *m = u8::from(*x >= *lo && *x <= *hi);
            }
            if *ports {
                for (m, h) in mask.iter_mut().zip(col(Col::HasPorts)) {
                    *m &= *h as u8;
                }
            }
        }
        C::Addr(c, lo, hi) => {
            let dict = cols.dict_addrs(*c);
            let a = dict.partition_point(|k| k < lo) as u64;
            let b = dict.partition_point(|k| k <= hi) as u64;
            ids_in(mask, col(*c), a, b);
        }
        C::Family(c, n) => {
            let dict = cols.dict_addrs(*c);
            let n4 = dict.partition_point(|k| matches!(k, AddrKey::V4(_))) as u64;
            let (a, b) = if *n == 4 {
                (0, n4)
            } else {
                (n4, dict.len() as u64)
            };
            ids_in(mask, col(*c), a, b);
        }
        C::Vlan(v) => {
            let v = u64::from(*v);
            for (m, x) in mask.iter_mut().zip(col(Col::Vlan)) {
                *m = u8::from(*x != 0 && ((*x & 4095) == v || (*x >> 12) == v));
            }
        }
        C::Sensor(ids) => {
            for (m, x) in mask.iter_mut().zip(col(Col::Sensor)) {
                *m = u8::from(ids.contains(x));
            }
        }
        C::Text(c, op, needle) => {
            let ok: Vec<u8> = cols
                .dict_texts(*c)
                .iter()
                .map(|t| u8::from(op.matches(t, needle)))
                .collect();
            for (m, id) in mask.iter_mut().zip(col(*c)) {
                *m = ok[*id as usize];
            }
        }
        C::TextCmp(c, op, s) => {
            let ok: Vec<u8> = cols
                .dict_texts(*c)
                .iter()
                .map(|t| u8::from(cmp_ord(*op, t.as_bytes().cmp(s.as_bytes()))))
                .collect();
            for (m, id) in mask.iter_mut().zip(col(*c)) {
                *m = ok[*id as usize];
            }
        }
        C::Ics(k, op, n) => {
            mask.fill(u8::from(cmp_ord(*op, 0.cmp(n))));
            for (row, v) in &cols.ics {
                mask[*row as usize] = u8::from(cmp_ord(*op, v[*k].cmp(n)));
            }
        }
        C::Cid(full) => {
            let prefix = cid_prefix(full);
            let rows = col(Col::Row);
            let candidates: Vec<i64> = col(Col::CidPrefix)
                .iter()
                .zip(rows)
                .filter(|(p, _)| **p == prefix)
                .map(|(_, r)| seg.lo + *r as i64)
                .collect();
            mask.fill(0);
            if !candidates.is_empty() {
                let hits = verify
                    .rows_with_cid(&candidates, full)
                    .map_err(ScanError::Store)?;
                for (m, r) in mask.iter_mut().zip(rows) {
                    *m = u8::from(hits.binary_search(&(seg.lo + *r as i64)).is_ok());
                }
            }
        }
    }
    Ok(())
}

fn ids_in(mask: &mut [u8], ids: &[u64], a: u64, b: u64) {
    for (m, x) in mask.iter_mut().zip(ids) {
        *m = u8::from(*x >= a && *x < b);
    }
}
