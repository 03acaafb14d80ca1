//! Scans over segments: a plan's condition compiled once per query
//! ([`super::cond`]), tested over a segment's arrays into a mask of
//! matching rows, and the matching rows summed by group, in dense arrays
//! indexed by dictionary id, port or protocol where the key allows, merged
//! into one map per thread; addresses through the store's dictionary over
//! every segment ([`AddrIndex`]) or, without one, hash partitions
//! ([`super::addrs`]). Several plans over the same segments read each
//! segment's columns once ([`Scan::run_many`]).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering as AtomicOrdering};

use hashbrown::HashMap;

use super::addrs::{AddrParts, add3, totals};
use super::cond::{
    C, Loaded, ScanError, Verify, all_below, compile, dense_len, dict_of, eval, mark,
};
use super::index::AddrIndex;
use super::{Col, Segment, SegmentError, on_threads};
use crate::model::query::{TimeRange, Totals};
use crate::store::StoreError;
use crate::store::plan::{Cond, Field, GroupExpr, GroupValue, Order};

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
    /// The columns its condition reads.
    by_cond: [bool; Col::COUNT],
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
        mark(&cond, &mut needs);
        let by_cond = needs;
        for c in [Col::Packets, Col::Bytes] {
            needs[c.index()] = true;
        }
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
        Ok(Some(Compiled {
            cond,
            group,
            needs,
            by_cond,
        }))
    }
}

impl Compiled {
    /// The address column rows are grouped by, if any.
    pub fn addr_group(&self) -> Option<Col> {
        match self.group {
            Group::Addr(c) => Some(c),
            _ => None,
        }
    }

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

/// Totals by group, in no order.
type ScanOutput = HashMap<GroupValue, Totals>;

/// One query's scan over a list of segments.
pub struct Scan<'a> {
    /// The compiled condition and group.
    pub compiled: &'a Compiled,
    /// `first_seen` in any of these ranges.
    pub ranges: Vec<TimeRange>,
    /// Lookups for what segments do not hold.
    pub verify: &'a dyn Verify,
    /// The dictionary over every segment of the address column grouped
    /// by, if the store keeps one: used when it maps every segment
    /// scanned.
    pub index: Option<&'a AddrIndex>,
}

impl std::fmt::Debug for Scan<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scan")
            .field("compiled", self.compiled)
            .field("ranges", &self.ranges)
            .finish_non_exhaustive()
    }
}

/// The segments a scan's threads take in turn, and the `first_seen` past
/// which none is read (a listing's k-th row found so far).
struct Walk {
    order: Vec<usize>,
    next: AtomicUsize,
    bound: AtomicU64,
}

impl Walk {
    fn new(order: Vec<usize>) -> Walk {
        Walk {
            order,
            next: AtomicUsize::new(0),
            bound: AtomicU64::new(u64::MAX),
        }
    }

    /// The index of the next segment to read.
    fn next(&self) -> Option<usize> {
        let at = self.next.fetch_add(1, AtomicOrdering::Relaxed);
        self.order.get(at).copied()
    }
}

/// What one thread gathered.
struct Gathered<'a> {
    map: ScanOutput,
    addrs: Option<AddrParts>,
    /// Address groups by [`AddrIndex`] id, when the scan uses one (sized
    /// at the first segment summed).
    by_id: Option<(&'a AddrIndex, Vec<[u64; 3]>)>,
    /// About how many segments this thread will sum.
    segments: usize,
}

/// One scan of [`Scan::run_many`]: its rows summed elsewhere (such as
/// SQLite's for the rows in no segment), their order and limit.
#[derive(Debug)]
pub struct Job<'a> {
    /// The scan.
    pub scan: &'a Scan<'a>,
    /// Rows summed elsewhere, added to the scan's.
    pub extra: Vec<(GroupValue, Totals)>,
    /// Row order.
    pub order: Order,
    /// At most this many rows.
    pub limit: Option<usize>,
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
        let job = Job {
            scan: self,
            extra,
            order,
            limit,
        };
        Ok(Scan::run_many(vec![job], segments, threads)?
            .pop()
            .unwrap_or_default())
    }

    /// The rows of several scans over the same `segments`, in one pass:
    /// each segment's columns are read once for all of them (the flow
    /// explorer's top-N tables and series share a filter and a range).
    pub fn run_many(
        jobs: Vec<Job<'_>>,
        segments: &[Segment],
        threads: usize,
    ) -> Result<Vec<Vec<(GroupValue, Totals)>>, ScanError> {
        let walk = Walk::new((0..segments.len()).collect());
        let threads = threads.clamp(1, segments.len().max(1));
        let scans: Vec<&Scan<'_>> = jobs.iter().map(|j| j.scan).collect();
        let indexes: Vec<Option<&AddrIndex>> =
            scans.iter().map(|s| s.index_for(segments)).collect();
        let share = segments.len().div_ceil(threads);
        // Grouped through the dictionary over every segment, a scan needs
        // no segment's own dictionary of that column (unless its condition
        // reads it): the map holds as many ids.
        let needs: Vec<[bool; Col::COUNT]> = scans
            .iter()
            .zip(&indexes)
            .map(|(s, ix)| {
                let mut n = s.compiled.needs;
                if let (Group::Addr(c), Some(_)) = (s.compiled.group, ix) {
                    let d = dict_of(c).index();
                    n[d] = s.compiled.by_cond[d];
                }
                n
            })
            .collect();
        let results = on_threads(threads, || {
            let mut out: Vec<Gathered<'_>> = scans
                .iter()
                .zip(&indexes)
                .map(|(s, ix)| Gathered {
                    map: ScanOutput::new(),
                    addrs: (matches!(s.compiled.group, Group::Addr(_)) && ix.is_none())
                        .then(AddrParts::new),
                    by_id: ix.map(|ix| (ix, Vec::new())),
                    segments: share,
                })
                .collect();
            each_segment(
                &scans,
                &needs,
                segments,
                &walk,
                |j, seg, cols, mask, acc| scans[j].sum(seg, cols, mask, acc, &mut out[j]),
            )
            .map(|()| out)
        });
        let mut gathered: Vec<Vec<Gathered<'_>>> = jobs.iter().map(|_| Vec::new()).collect();
        for r in results {
            for (j, g) in r?.into_iter().enumerate() {
                gathered[j].push(g);
            }
        }
        Ok(jobs
            .into_iter()
            .zip(gathered)
            .zip(indexes)
            .map(|((job, g), ix)| finish(g, job, ix, threads))
            .collect())
    }

    /// The address index to group by: the scan's, if it groups by
    /// address, the index maps every segment, and the segments whose time
    /// may match hold enough of its addresses that summing into an array
    /// of all of them (and reading it back) costs less than hashing theirs.
    pub(super) fn index_for(&self, segments: &[Segment]) -> Option<&AddrIndex> {
        let ix = self.index?;
        if !matches!(self.compiled.group, Group::Addr(_)) || !ix.covers(segments) {
            return None;
        }
        let entries: usize = segments
            .iter()
            .filter(|s| self.may_match(s))
            .filter_map(|s| ix.map(s).map(<[u32]>::len))
            .sum();
        (entries >= ix.len() / 8).then_some(ix)
    }

    /// Whether rows of `seg` may be in the scan's time ranges.
    fn may_match(&self, seg: &Segment) -> bool {
        seg.rows > 0
            && self.ranges.iter().any(|r| {
                r.since_ns.is_none_or(|t| seg.max_first >= t)
                    && r.until_ns.is_none_or(|t| seg.min_first < t)
            })
    }

    /// Whether every row of `seg` is in the scan's time ranges.
    fn within(&self, seg: &Segment) -> bool {
        self.ranges.iter().any(|r| {
            r.since_ns.is_none_or(|t| seg.min_first >= t)
                && r.until_ns.is_none_or(|t| seg.max_first < t)
        })
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
        let threads = threads.clamp(1, segments.len().max(1));
        // Oldest segments first: once `k` rows are found, a segment whose
        // rows all come after the k-th found cannot hold one of the first.
        let mut order: Vec<usize> = (0..segments.len()).collect();
        order.sort_by_key(|i| segments[*i].min_first);
        let walk = Walk::new(order);
        let results = on_threads(threads, || {
            let mut got: Vec<(u64, i64)> = Vec::new();
            each_segment(
                &[self],
                &[self.compiled.needs],
                segments,
                &walk,
                |_, seg, cols, mask, _| {
                    let first = &cols.nums[Col::First.index()];
                    let row = &cols.nums[Col::Row.index()];
                    for (i, _) in mask.iter().enumerate().filter(|(_, m)| **m != 0) {
                        got.push((first[i], seg.lo + row[i] as i64));
                    }
                    keep_first(&mut got, k);
                    if k > 0 && got.len() >= k {
                        got.select_nth_unstable(k - 1);
                        walk.bound.fetch_min(got[k - 1].0, AtomicOrdering::Relaxed);
                    }
                    Ok(())
                },
            )
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

    fn sum(
        &self,
        seg: &Segment,
        cols: &Loaded,
        mask: &[u8],
        acc: &mut Vec<[u64; 3]>,
        out: &mut Gathered<'_>,
    ) -> Result<(), ScanError> {
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
        match (self.compiled.group, out.by_id.as_mut()) {
            (Group::Zero, _) => {
                let mut t = [0u64; 3];
                for i in rows() {
                    add3(&mut t, [1, packets[i], bytes[i]]);
                }
                if t[0] > 0 {
                    map.entry(GroupValue::None).or_default().add(totals(t));
                }
            }
            (Group::Addr(c), Some((ix, by_id))) => {
                // Its map as long as its dictionary (empty when not read),
                // its ids within the map.
                let ids = &cols.nums[c.index()];
                let dict = cols.dict_addrs(c).len();
                let map = ix
                    .map(seg)
                    .filter(|m| (dict == 0 || dict == m.len()) && all_below(ids, m.len() as u64))
                    .ok_or_else(|| {
                        ScanError::Segment(
                            0,
                            SegmentError::Corrupt {
                                path: seg.path().to_path_buf(),
                                what: format!("{c:?} dictionary: not the one indexed"),
                            },
                        )
                    })?;
                dense(acc, map.len(), ids);
                let sums = &acc[..];
                if by_id.is_empty() {
                    by_id.resize(ix.len(), [0; 3]);
                }
                for (id, a) in sums.iter().enumerate().filter(|(_, a)| a[0] > 0) {
                    add3(&mut by_id[map[id] as usize], *a);
                }
            }
            (Group::Addr(c), None) => {
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
            (Group::Text(c), _) => {
                let dict = cols.dict_texts(c);
                dense(acc, dict.len(), &cols.nums[c.index()]);
                let sums = &acc[..];
                for (id, a) in sums.iter().enumerate().filter(|(_, a)| a[0] > 0) {
                    map.entry(GroupValue::Text(dict[id].clone()))
                        .or_default()
                        .add(totals(*a));
                }
            }
            (Group::Num(c), _) => {
                // Below their type's bound (checked as they are read).
                dense(acc, dense_len(c), &cols.nums[c.index()]);
                let sums = &acc[..];
                for (id, a) in sums.iter().enumerate().filter(|(_, a)| a[0] > 0) {
                    map.entry(GroupValue::Num(id as u64))
                        .or_default()
                        .add(totals(*a));
                }
            }
            (Group::Interval { per, step }, _) => {
                let first = &cols.nums[Col::First.index()];
                // The segment's intervals, from its first, in an array
                // when they are not too many; the others (or rows outside
                // the header's times: a damaged file) in a map.
                let base = seg.min_first / per;
                let n = (seg.max_first / per).saturating_sub(base).saturating_add(1);
                let n = if n <= 1 << 16 { n } else { 0 };
                acc.clear();
                acc.resize(n as usize, [0; 3]);
                let mut local: HashMap<u64, [u64; 3]> = HashMap::new();
                // Rows come nearly in time order: the interval of the row
                // before is tried first, without a division.
                let (mut from, mut to, mut was) = (1u64, 0u64, 0u64);
                for i in rows() {
                    let f = first[i];
                    let at = if from <= f && f < to {
                        was
                    } else {
                        let q = f / per;
                        from = q.saturating_mul(per);
                        to = from.saturating_add(per);
                        was = q.wrapping_sub(base);
                        was
                    };
                    let t = [1, packets[i], bytes[i]];
                    if at < n {
                        add3(&mut acc[at as usize], t);
                    } else {
                        add3(local.entry(first[i] / per * step).or_insert([0; 3]), t);
                    }
                }
                let dense = acc.iter().enumerate().filter(|(_, t)| t[0] > 0);
                let dense = dense.map(|(at, t)| ((base + at as u64) * step, *t));
                for (k, t) in dense.chain(local) {
                    map.entry(GroupValue::Num(k)).or_default().add(totals(t));
                }
            }
        }
        Ok(())
    }
}

/// Runs `f` on each segment taken from `walk` that one of `scans` may
/// match, for each such scan (by index), with the segment's columns (read
/// once for all), the mask of the scan's matching rows and a buffer for
/// sums by id.
fn each_segment(
    scans: &[&Scan<'_>],
    needs: &[[bool; Col::COUNT]],
    segments: &[Segment],
    walk: &Walk,
    f: impl FnMut(usize, &Segment, &Loaded, &[u8], &mut Vec<[u64; 3]>) -> Result<(), ScanError>,
) -> Result<(), ScanError> {
    let mut cols = Loaded::take();
    let mut mask = std::mem::take(&mut cols.mask);
    let mut acc = std::mem::take(&mut cols.acc);
    let done = each_segment_with(
        (scans, needs),
        segments,
        walk,
        f,
        (&mut cols, &mut mask, &mut acc),
    );
    (cols.mask, cols.acc) = (mask, acc);
    cols.give();
    done
}

#[allow(clippy::type_complexity)]
fn each_segment_with(
    (scans, scan_needs): (&[&Scan<'_>], &[[bool; Col::COUNT]]),
    segments: &[Segment],
    walk: &Walk,
    mut f: impl FnMut(usize, &Segment, &Loaded, &[u8], &mut Vec<[u64; 3]>) -> Result<(), ScanError>,
    (cols, mask, acc): (&mut Loaded, &mut Vec<u8>, &mut Vec<[u64; 3]>),
) -> Result<(), ScanError> {
    let mut inside = vec![false; scans.len()];
    loop {
        let Some(i) = walk.next() else {
            return Ok(());
        };
        let seg = &segments[i];
        if seg.min_first > walk.bound.load(AtomicOrdering::Relaxed) {
            continue;
        }
        let mut needs = [false; Col::COUNT];
        let mut any = false;
        for (j, s) in scans.iter().enumerate() {
            if !s.may_match(seg) {
                continue;
            }
            any = true;
            inside[j] = s.within(seg);
            for (n, m) in needs.iter_mut().zip(&scan_needs[j]) {
                *n |= *m;
            }
            needs[Col::First.index()] |= !inside[j];
        }
        if !any {
            continue;
        }
        cols.load(seg, &needs)
            .map_err(|e| ScanError::Segment(i, e))?;
        // The mask of the scan before, if it is this one's too.
        let mut last: Option<usize> = None;
        for (j, s) in scans.iter().enumerate() {
            if !s.may_match(seg) {
                continue;
            }
            let same = last.is_some_and(|l| {
                let t = scans[l];
                t.compiled.cond == s.compiled.cond && t.ranges == s.ranges
            });
            last = Some(j);
            if same {
                f(j, seg, cols, mask, acc).map_err(|e| e.at(i))?;
                continue;
            }
            mask.clear();
            mask.resize(seg.rows, 0);
            eval(&s.compiled.cond, seg, cols, mask, s.verify)?;
            if !inside[j] {
                for (m, f) in mask.iter_mut().zip(&cols.nums[Col::First.index()]) {
                    *m &= u8::from(s.ranges.iter().any(|r| r.contains(*f)));
                }
            }
            f(j, seg, cols, mask, acc).map_err(|e| e.at(i))?;
        }
    }
}

/// A job's rows from what the threads gathered for it.
fn finish(
    gathered: Vec<Gathered<'_>>,
    job: Job<'_>,
    index: Option<&AddrIndex>,
    threads: usize,
) -> Vec<(GroupValue, Totals)> {
    let Job {
        extra,
        order,
        limit,
        ..
    } = job;
    if limit == Some(0) {
        return Vec::new();
    }
    let mut map = ScanOutput::new();
    let mut parts = Vec::new();
    let mut by_id: Vec<[u64; 3]> = Vec::new();
    for g in gathered {
        if map.is_empty() {
            map = g.map;
        } else {
            for (k, t) in g.map {
                map.entry(k).or_default().add(t);
            }
        }
        parts.extend(g.addrs);
        if let Some((_, v)) = g.by_id {
            if by_id.is_empty() {
                by_id = v;
            } else {
                for (a, b) in by_id.iter_mut().zip(&v) {
                    add3(a, *b);
                }
            }
        }
    }
    if let Some(ix) = index {
        return ix.rows(by_id, extra, order, limit);
    }
    if parts.is_empty() {
        for (k, t) in extra {
            map.entry(k).or_default().add(t);
        }
        return crate::store::plan::ordered(map.into_iter().collect(), order, limit);
    }
    super::addrs::parts_rows(parts, extra, order, limit, threads)
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
