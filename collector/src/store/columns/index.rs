//! One address column's dictionary over many segments: every address any
//! of them holds, sorted (IPv4 first, as a segment sorts them), and each
//! segment's dictionary ids mapped to it. A scan grouping by address then
//! adds each segment's sums into one array indexed by that dictionary,
//! walking both in address order, where without it every segment's sums
//! are hashed into partitions and summed again ([`super::addrs`]).
//!
//! Built by the store's upkeep as segments are added (the maps of the
//! segments it already has are kept, renumbered when new addresses come
//! between theirs) and read by queries that find every segment they scan
//! in it; a query that does not (a segment built since) groups through
//! the partitions, with the same answer.

use std::collections::HashMap;
use std::path::PathBuf;

use super::addrs::{add3, totals};
use super::{Col, Segment, SegmentError};
use crate::model::query::{TopBy, Totals};
use crate::store::plan::{GroupValue, Order};

/// Most (segment, address) pairs an index maps, 4 bytes each: 256 MiB of
/// maps (about 60 M flows of a million sources); past it, queries group
/// through the partitions.
pub const MAX_ENTRIES: usize = 1 << 26;

/// An address column's dictionary over a set of segments.
#[derive(Debug, Default)]
pub struct AddrIndex {
    v4: Vec<u32>,
    v6: Vec<u128>,
    /// Each segment's ids into `v4` then `v6` (IPv6 ids after every IPv4
    /// one), by file.
    maps: HashMap<PathBuf, Vec<u32>>,
    /// Entries of `maps`.
    entries: usize,
}

/// A segment's address dictionary: its IPv4 then its IPv6 addresses,
/// each ascending.
type Dict = (Vec<u32>, Vec<u128>);

impl AddrIndex {
    /// Addresses in the dictionary (ids `0..len`).
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Whether it holds no address.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The address of an id (`id < len`).
    pub fn key(&self, id: usize) -> super::AddrKey {
        match self.v4.get(id) {
            Some(a) => super::AddrKey::V4(*a),
            None => super::AddrKey::V6(self.v6[id - self.v4.len()]),
        }
    }

    /// The id of an address, if the dictionary holds it.
    pub fn id_of(&self, k: super::AddrKey) -> Option<usize> {
        match k {
            super::AddrKey::V4(a) => self.v4.binary_search(&a).ok(),
            super::AddrKey::V6(a) => self.v6.binary_search(&a).ok().map(|i| i + self.v4.len()),
        }
    }

    /// A segment's map: its dictionary ids to this one's.
    pub fn map(&self, seg: &Segment) -> Option<&[u32]> {
        self.maps.get(seg.path()).map(Vec::as_slice)
    }

    /// Whether it maps every one of `segments`.
    pub fn covers(&self, segments: &[Segment]) -> bool {
        segments.iter().all(|s| self.maps.contains_key(s.path()))
    }

    /// Entries of its maps (4 bytes each).
    pub fn entries(&self) -> usize {
        self.entries
    }

    /// The rows of an address group summed by [`AddrIndex`] id (`by_id`, empty
    /// when no segment had a matching row) plus `extra` (rows summed
    /// elsewhere), in `order`, at most `limit`: with a limit, only the ids whose
    /// total reaches the limit-th largest (ties included) become rows.
    pub(super) fn rows(
        &self,
        mut by_id: Vec<[u64; 3]>,
        extra: Vec<(GroupValue, Totals)>,
        order: Order,
        limit: Option<usize>,
    ) -> Vec<(GroupValue, Totals)> {
        // Addresses the dictionary does not hold (newer than its segments),
        // summed apart.
        let mut aside: std::collections::HashMap<GroupValue, Totals> = Default::default();
        for (k, t) in extra {
            let id = match k {
                GroupValue::Addr(a) => self.id_of(super::AddrKey::of(a)),
                _ => None,
            };
            match id {
                Some(id) => {
                    if by_id.is_empty() {
                        by_id.resize(self.len(), [0; 3]);
                    }
                    add3(&mut by_id[id], [t.flows, t.packets, t.bytes]);
                }
                None => aside.entry(k).or_default().add(t),
            }
        }
        let mut rows: Vec<(GroupValue, Totals)> = aside.into_iter().collect();
        let row = |id: usize, a: &[u64; 3]| (GroupValue::Addr(self.key(id).addr()), totals(*a));
        match (order, limit) {
            (Order::Desc(by), Some(limit)) => {
                let i = match by {
                    TopBy::Flows => 0,
                    TopBy::Packets => 1,
                    TopBy::Bytes => 2,
                };
                // The limit-th largest total, through a heap of the largest.
                let mut heap = std::collections::BinaryHeap::with_capacity(limit + 1);
                for a in by_id.iter().filter(|a| a[0] > 0) {
                    if heap.len() < limit {
                        heap.push(std::cmp::Reverse(a[i]));
                    } else if heap.peek().is_some_and(|m| a[i] > m.0) {
                        heap.pop();
                        heap.push(std::cmp::Reverse(a[i]));
                    }
                }
                let cut = if heap.len() < limit {
                    0
                } else {
                    heap.peek().map_or(0, |m| m.0)
                };
                rows.extend(
                    by_id
                        .iter()
                        .enumerate()
                        .filter(|(_, a)| a[0] > 0 && a[i] >= cut)
                        .map(|(id, a)| row(id, a)),
                );
            }
            _ => rows.extend(
                by_id
                    .iter()
                    .enumerate()
                    .filter(|(_, a)| a[0] > 0)
                    .map(|(id, a)| row(id, a)),
            ),
        }
        crate::store::plan::ordered(rows, order, limit)
    }

    /// The index over `segments` for column `c` ([`Col::Src`] or
    /// [`Col::Dst`]): this one's maps kept for the segments it has (its
    /// addresses renumbered if new ones come between), the others'
    /// dictionaries read and merged in; built anew when more than half of
    /// its entries belong to segments no longer listed. `None` when it
    /// would map more than `MAX_ENTRIES` (64 M).
    pub fn updated(&self, segments: &[Segment], c: Col) -> Result<Option<AddrIndex>, SegmentError> {
        let dict = if c == Col::Dst {
            Col::DstDict
        } else {
            Col::SrcDict
        };
        let kept: usize = segments
            .iter()
            .filter_map(|s| self.maps.get(s.path()).map(Vec::len))
            .sum();
        let base = if kept * 2 >= self.entries {
            self
        } else {
            &AddrIndex::default()
        };
        let mut new: Vec<(&Segment, Dict)> = Vec::new();
        let mut entries = 0;
        for s in segments {
            match base.maps.get(s.path()) {
                Some(m) => entries += m.len(),
                None => {
                    let d = s.addr_dict(dict)?;
                    entries += d.0.len() + d.1.len();
                    new.push((s, d));
                }
            }
            if entries > MAX_ENTRIES {
                return Ok(None);
            }
        }
        let mut add4: Vec<u32> = new.iter().flat_map(|(_, d)| d.0.iter().copied()).collect();
        let mut add6: Vec<u128> = new.iter().flat_map(|(_, d)| d.1.iter().copied()).collect();
        add4.sort_unstable();
        add4.dedup();
        add6.sort_unstable();
        add6.dedup();
        let v4 = union(&base.v4, &add4);
        let v6 = union(&base.v6, &add6);
        let mut maps = HashMap::with_capacity(segments.len());
        // The old ids in the new dictionary (none moves if nothing came
        // between them).
        let moved = v4.len() != base.v4.len() || v6.len() != base.v6.len();
        let renumber: Vec<u32> = if moved {
            ids_in(&base.v4, &v4, 0)
                .chain(ids_in(&base.v6, &v6, v4.len()))
                .collect()
        } else {
            Vec::new()
        };
        for s in segments {
            if let Some(m) = base.maps.get(s.path()) {
                let m = if moved {
                    m.iter().map(|g| renumber[*g as usize]).collect()
                } else {
                    m.clone()
                };
                maps.insert(s.path().to_path_buf(), m);
            }
        }
        for (s, (d4, d6)) in new {
            let m = ids_in(&d4, &v4, 0)
                .chain(ids_in(&d6, &v6, v4.len()))
                .collect();
            maps.insert(s.path().to_path_buf(), m);
        }
        Ok(Some(AddrIndex {
            v4,
            v6,
            maps,
            entries,
        }))
    }
}

/// The sorted union of two ascending lists without repeats.
fn union<T: Ord + Copy>(a: &[T], b: &[T]) -> Vec<T> {
    if b.is_empty() {
        return a.to_vec();
    }
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => {
                out.push(a[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(b[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

/// The positions in `all` (plus `offset`) of `part`'s entries, every one of
/// which `all` holds, both ascending: a forward walk that gallops over what
/// `part` skips.
fn ids_in<'a, T: Ord + Copy>(
    part: &'a [T],
    all: &'a [T],
    offset: usize,
) -> impl Iterator<Item = u32> + 'a {
    let mut at = 0;
    part.iter().map(move |k| {
        let mut step = 1;
        while at + step < all.len() && all[at + step] <= *k {
            step *= 2;
        }
        let hi = (at + step).min(all.len());
        at += all[at..hi].partition_point(|x| x < k);
        debug_assert!(all.get(at) == Some(k));
        (at + offset) as u32
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_in_a_union_are_found_galloping() {
        let a = [1u32, 5, 9];
        let b = [2u32, 5, 100, 200];
        let u = union(&a, &b);
        assert_eq!(u, vec![1, 2, 5, 9, 100, 200]);
        assert_eq!(ids_in(&a, &u, 0).collect::<Vec<_>>(), vec![0, 2, 3]);
        assert_eq!(ids_in(&b, &u, 10).collect::<Vec<_>>(), vec![11, 12, 14, 15]);
        let all: Vec<u32> = (0..10_000).map(|i| i * 3).collect();
        let part: Vec<u32> = vec![0, 3, 2_997, 29_997];
        assert_eq!(
            ids_in(&part, &all, 0).collect::<Vec<_>>(),
            vec![0, 1, 999, 9_999]
        );
        assert!(ids_in(&[] as &[u32], &all, 0).next().is_none());
    }
}
