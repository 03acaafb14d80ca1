//! Address groups of a scan: each segment's sums by address appended to
//! hash partitions, then each partition summed in a map that stays in the
//! caches (where one map of every address, a million sources, would miss
//! them at every row).

use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

use hashbrown::HashMap;

use super::AddrKey;
use crate::model::query::{TopBy, Totals};
use crate::store::plan::{GroupValue, Order};

/// Partitions of the address groups, by their hash's top bits: each
/// partition's groups are summed in a map that stays in the caches, where
/// one map of every address (a million sources) would miss them at every
/// row.
const PART_BITS: u32 = 6;
pub(super) const PARTS: usize = 1 << PART_BITS;

fn part_of(h: u64) -> usize {
    (h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - PART_BITS)) as usize
}

/// One address's sums from one segment (or the rows outside them), in 24
/// bytes for an IPv4 address: the flows of one entry fit 32 bits (more are
/// split over several entries, sums being sums).
#[derive(Clone, Copy)]
pub(super) struct Entry<K> {
    k: K,
    flows: u32,
    packets: u64,
    bytes: u64,
}

/// Address groups of one thread, per partition: a segment's sums by
/// address, appended as they come.
pub(super) struct AddrParts {
    pub(super) v4: Vec<Vec<Entry<u32>>>,
    pub(super) v6: Vec<Vec<Entry<[u64; 2]>>>,
}

impl AddrParts {
    pub(super) fn new() -> AddrParts {
        AddrParts {
            v4: (0..PARTS).map(|_| Vec::new()).collect(),
            v6: (0..PARTS).map(|_| Vec::new()).collect(),
        }
    }

    /// Room for about `n` more IPv4 entries over the partitions, so that
    /// the buffers are not copied as they grow.
    pub(super) fn reserve(&mut self, n: usize) {
        let each = n / PARTS + n / PARTS / 4 + 16;
        for v in &mut self.v4 {
            v.reserve(each);
        }
    }

    pub(super) fn push(&mut self, k: AddrKey, t: [u64; 3]) {
        let mut flows = t[0];
        let (mut packets, mut bytes) = (t[1], t[2]);
        loop {
            let n = u32::try_from(flows).unwrap_or(u32::MAX);
            match k {
                AddrKey::V4(a) => self.v4[part_of(u64::from(a))].push(Entry {
                    k: a,
                    flows: n,
                    packets,
                    bytes,
                }),
                AddrKey::V6(a) => self.v6[part_of((a >> 64) as u64 ^ a as u64)].push(Entry {
                    k: [(a >> 64) as u64, a as u64],
                    flows: n,
                    packets,
                    bytes,
                }),
            }
            flows -= u64::from(n);
            if flows == 0 {
                return;
            }
            (packets, bytes) = (0, 0);
        }
    }
}

pub(super) fn add3(a: &mut [u64; 3], b: [u64; 3]) {
    a[0] = a[0].saturating_add(b[0]);
    a[1] = a[1].saturating_add(b[1]);
    a[2] = a[2].saturating_add(b[2]);
}

pub(super) fn totals(a: [u64; 3]) -> Totals {
    Totals {
        flows: a[0],
        packets: a[1],
        bytes: a[2],
    }
}

/// Sums entries by key, in a map sized for them; the `limit` largest by
/// `order` (or all), as rows.
pub(super) fn sum_part<K: std::hash::Hash + Eq + Copy>(
    bufs: &[&Vec<Entry<K>>],
    order: Order,
    limit: Option<usize>,
    value: impl Fn(K) -> GroupValue,
) -> Vec<(GroupValue, Totals)> {
    let n = bufs.iter().map(|b| b.len()).sum();
    let mut m: HashMap<K, [u64; 3]> = HashMap::with_capacity(n);
    for b in bufs {
        for e in b.iter() {
            add3(
                m.entry(e.k).or_insert([0; 3]),
                [u64::from(e.flows), e.packets, e.bytes],
            );
        }
    }
    let mut rows: Vec<(K, [u64; 3])> = m.into_iter().collect();
    if let (Order::Desc(by), Some(limit)) = (order, limit) {
        // Only the largest can be among the largest overall (ties by key
        // are settled on the rows kept: every tie of the last kept is kept).
        let i = match by {
            TopBy::Flows => 0,
            TopBy::Packets => 1,
            TopBy::Bytes => 2,
        };
        if rows.len() > limit {
            rows.select_nth_unstable_by(limit - 1, |a, b| b.1[i].cmp(&a.1[i]));
            let cut = rows[limit - 1].1[i];
            let mut keep: Vec<_> = rows[..limit].to_vec();
            keep.extend(rows[limit..].iter().filter(|r| r.1[i] == cut));
            rows = keep;
        }
    }
    rows.into_iter()
        .map(|(k, t)| (value(k), totals(t)))
        .collect()
}

/// The rows of address groups gathered in partitions by the threads,
/// plus `extra` (rows summed elsewhere), in `order`, at most `limit`: each
/// partition summed on its own, on up to `threads` threads.
pub(super) fn parts_rows(
    mut parts: Vec<AddrParts>,
    extra: Vec<(GroupValue, Totals)>,
    order: Order,
    limit: Option<usize>,
    threads: usize,
) -> Vec<(GroupValue, Totals)> {
    let mut more = AddrParts::new();
    for (k, t) in extra {
        if let GroupValue::Addr(a) = k {
            more.push(AddrKey::of(a), [t.flows, t.packets, t.bytes]);
        }
    }
    parts.push(more);
    let next = AtomicUsize::new(0);
    let rows = super::on_threads(threads, || {
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
                GroupValue::Addr(AddrKey::V6((u128::from(k[0]) << 64) | u128::from(k[1])).addr())
            }));
        }
    });
    crate::store::plan::ordered(rows.concat(), order, limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flows_past_32_bits_split_over_entries_and_sum_back() {
        let mut p = AddrParts::new();
        let a = AddrKey::V4(0x0a00_0001);
        let many = u64::from(u32::MAX) * 2 + 7;
        p.push(a, [many, 11, 13]);
        p.push(a, [1, 1, 1]);
        let entries: usize = p.v4.iter().map(Vec::len).sum();
        assert_eq!(entries, 4);
        let part = p.v4.iter().find(|v| !v.is_empty()).unwrap();
        let rows = sum_part(&[part], Order::Group, None, |k| {
            GroupValue::Addr(AddrKey::V4(k).addr())
        });
        assert_eq!(rows.len(), 1);
        assert_eq!(
            rows[0].1,
            Totals {
                flows: many + 1,
                packets: 12,
                bytes: 14
            }
        );
        let v6 = AddrKey::V6(0x2001_0db8 << 96 | 5);
        p.push(v6, [2, 3, 4]);
        let part = p.v6.iter().find(|v| !v.is_empty()).unwrap();
        let rows = sum_part(&[part], Order::Group, None, |k| {
            GroupValue::Addr(AddrKey::V6((u128::from(k[0]) << 64) | u128::from(k[1])).addr())
        });
        assert_eq!(rows[0].0, GroupValue::Addr(v6.addr()));
    }
}
