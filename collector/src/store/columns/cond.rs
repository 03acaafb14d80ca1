//! Conditions over a segment's columns: a plan's filter compiled once
//! per query ([`compile`]), then tested over a segment's arrays into a
//! mask of matching rows ([`eval`]). A part of it that needs a segment's
//! dictionary (an address range, a name suffix) is resolved per segment,
//! over the dictionary's entries rather than its rows. Community IDs are
//! kept as 8-byte prefixes: rows whose prefix matches are checked against
//! the full id in SQLite ([`Verify`]), so answers stay exact.

use std::cmp::Ordering;
use std::sync::{Mutex, PoisonError};

use vigil_proto::wire::ip_from_bytes;

use super::{AddrKey, Col, Segment, SegmentError, cid_prefix};
use crate::model::query::{Cmp, TextOp};
use crate::store::StoreError;
use crate::store::plan::{Cond, Field, Value};

/// Looks up what segments do not hold in full: the sensors of a name and
/// the Community IDs of rows.
pub trait Verify: Sync {
    /// The `sensors` row ids whose name compares `op` with `name`.
    fn sensor_ids(&self, op: Cmp, name: &str) -> Result<Vec<u64>, StoreError>;

    /// Of these row ids, those whose Community ID is `cid`.
    fn rows_with_cid(&self, rowids: &[i64], cid: &[u8]) -> Result<Vec<i64>, StoreError>;
}

/// A condition over a segment's columns.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum C {
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

pub(super) fn dict_of(c: Col) -> Col {
    match c {
        Col::Src => Col::SrcDict,
        Col::Dst => Col::DstDict,
        Col::AppName => Col::AppNameDict,
        _ => Col::AppFpDict,
    }
}

pub(super) fn mark(c: &C, needs: &mut [bool; Col::COUNT]) {
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

pub(super) fn compile(c: &Cond, verify: &dyn Verify) -> Result<Option<C>, StoreError> {
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

/// Whether every value of `v` is below `n` (ids that index an array of
/// `n`).
pub(super) fn all_below(v: &[u64], n: u64) -> bool {
    v.iter().all(|x| *x < n)
}

/// Values a numeric column that rows are grouped by holds at most: ports
/// 2^16, protocols and application codes 2^8.
pub(super) fn dense_len(c: Col) -> usize {
    match c {
        Col::Proto | Col::AppProto => 1 << 8,
        _ => 1 << 16,
    }
}

/// Why a scan failed: a segment (which the caller may read from SQLite
/// instead) or the store.
#[derive(Debug)]
pub enum ScanError {
    /// The segment at this index of the scan's list.
    Segment(usize, SegmentError),
    /// A lookup in the store.
    Store(StoreError),
}

impl ScanError {
    /// The error, a segment's as the one at index `i` of the scan's list.
    pub(super) fn at(self, i: usize) -> ScanError {
        match self {
            ScanError::Segment(_, e) => ScanError::Segment(i, e),
            e => e,
        }
    }
}

/// A segment's columns, as far as a scan needs them.
pub(super) struct Loaded {
    pub(super) nums: [Vec<u64>; Col::COUNT],
    addrs: [Vec<AddrKey>; 2],
    texts: [Vec<String>; 2],
    ics: Vec<(u32, [u64; 3])>,
    /// A column's bytes as read, before decoding.
    scratch: Vec<u8>,
    /// The mask of a scan's matching rows.
    pub(super) mask: Vec<u8>,
    /// Sums by id of one segment.
    pub(super) acc: Vec<[u64; 3]>,
}

/// Buffers of scans past, for the next: a scan's threads take theirs
/// here and hand them back, so that their memory is not mapped, cleared and
/// unmapped again at every query (a few MB per thread).
static BUFFERS: Mutex<Vec<Loaded>> = Mutex::new(Vec::new());

/// Buffers kept for later scans at most.
const KEPT_BUFFERS: usize = 8;

impl Loaded {
    fn new() -> Loaded {
        Loaded {
            nums: std::array::from_fn(|_| Vec::new()),
            addrs: [Vec::new(), Vec::new()],
            texts: [Vec::new(), Vec::new()],
            ics: Vec::new(),
            scratch: Vec::new(),
            mask: Vec::new(),
            acc: Vec::new(),
        }
    }

    /// Buffers an earlier scan left, or new ones.
    pub(super) fn take() -> Loaded {
        BUFFERS
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .unwrap_or_else(Loaded::new)
    }

    /// Hands the buffers back for a later scan.
    pub(super) fn give(self) {
        let mut kept = BUFFERS.lock().unwrap_or_else(PoisonError::into_inner);
        if kept.len() < KEPT_BUFFERS {
            kept.push(self);
        }
    }

    pub(super) fn load(
        &mut self,
        seg: &Segment,
        needs: &[bool; Col::COUNT],
    ) -> Result<(), SegmentError> {
        for c in Col::ALL {
            if !needs[c.index()] {
                // A dictionary not read is empty, not an earlier segment's.
                match c {
                    Col::SrcDict => self.addrs[0].clear(),
                    Col::DstDict => self.addrs[1].clear(),
                    Col::AppNameDict => self.texts[0].clear(),
                    Col::AppFpDict => self.texts[1].clear(),
                    _ => {}
                }
                continue;
            }
            match c {
                Col::SrcDict => self.addrs[0] = seg.addrs(c)?,
                Col::DstDict => self.addrs[1] = seg.addrs(c)?,
                Col::AppNameDict => self.texts[0] = seg.texts(c)?,
                Col::AppFpDict => self.texts[1] = seg.texts(c)?,
                Col::Ics => self.ics = seg.ics()?,
                c => seg.nums_with(c, &mut self.nums[c.index()], &mut self.scratch)?,
            }
        }
        // Ids beyond their dictionary, and numbers beyond their type, would
        // index out of bounds where rows are summed by them.
        for c in [
            Col::Src,
            Col::Dst,
            Col::AppName,
            Col::AppFp,
            Col::SrcPort,
            Col::DstPort,
            Col::Proto,
            Col::AppProto,
        ] {
            // Addresses grouped without their dictionary are checked
            // against the map that stands for it (`Scan::sum`).
            if !needs[c.index()] || matches!(c, Col::Src | Col::Dst) && !needs[dict_of(c).index()] {
                continue;
            }
            let n = match c {
                Col::Src | Col::Dst => self.dict_addrs(c).len(),
                Col::AppName | Col::AppFp => self.dict_texts(c).len(),
                c => dense_len(c),
            } as u64;
            if !all_below(&self.nums[c.index()], n) {
                return Err(SegmentError::Corrupt {
                    path: seg.path().to_path_buf(),
                    what: format!("column {c:?}: a value beyond its dictionary or type"),
                });
            }
        }
        Ok(())
    }

    pub(super) fn dict_addrs(&self, c: Col) -> &[AddrKey] {
        &self.addrs[usize::from(c == Col::Dst)]
    }

    pub(super) fn dict_texts(&self, c: Col) -> &[String] {
        &self.texts[usize::from(c == Col::AppFp)]
    }
}

pub(super) fn eval(
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
