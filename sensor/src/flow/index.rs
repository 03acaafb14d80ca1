//! The flow table's index: flow hash → slot, built to be prefetched.
//!
//! `hashbrown` finds a flow with three dependent cache misses (control
//! bytes, then the bucket, then the flow) and offers no way to ask for the
//! first two ahead of time. This index keeps each entry — a 32-bit tag from
//! the hash and the slot number — in 64-byte lines of eight (the eight tags
//! side by side, so that one vector comparison finds a line's candidates),
//! so that a batch
//! of packets can first prefetch each packet's home line, then read the
//! lines (now cached) and prefetch the flows they point to, and only then
//! apply the packets (see `FlowTable::process_batch`).
//!
//! Open addressing over lines: an entry lives in its home line or, when that
//! line is full, in the next lines in order; an empty entry in a line ends a
//! search there. The home line and the tag both come from the hash's high 32
//! bits, which the entry keeps, so the index rebuilds itself without asking
//! for any key. Removal leaves a tombstone unless the line still holds an
//! empty entry (then no search ever went past it, and the entry can become
//! empty again); inserts reuse tombstones. When live entries and tombstones
//! fill seven eighths of the index it is rebuilt: twice as large if live
//! entries alone fill thirteen sixteenths, else at the same size without its
//! tombstones.

use std::mem::size_of;

/// Eight entries, one cache line: their tags, then their slots. Kept apart,
/// the eight tags are compared with `t` in one vector comparison.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line {
    /// The hash's high 32 bits; 0 for an empty or deleted entry.
    tags: [u32; WAYS],
    /// [`EMPTY`], [`DELETED`], or the slot + 2.
    slots: [u32; WAYS],
}

const WAYS: usize = 8;
const EMPTY: u32 = 0;
const DELETED: u32 = 1;

const EMPTY_LINE: Line = Line {
    tags: [0; WAYS],
    slots: [EMPTY; WAYS],
};

#[inline]
fn tag(hash: u64) -> u32 {
    (hash >> 32) as u32
}

/// How a slot is kept in [`Line::slots`]: above the two states.
#[inline]
fn stored(slot: u32) -> u32 {
    slot + 2
}

/// The slot a live entry of [`Line::slots`] holds.
#[inline]
fn slot_of(s: u32) -> u32 {
    s - 2
}

/// A bit per entry of `line` equal to `x`: two SSE2 comparisons on x86_64.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn mask(line: &[u32; WAYS], x: u32) -> u32 {
    use std::arch::x86_64::{
        _mm_castsi128_ps, _mm_cmpeq_epi32, _mm_movemask_ps, _mm_set_epi32, _mm_set1_epi32,
    };
    let v = line.map(|e| e as i32);
    #[allow(unsafe_code)]
    // SAFETY: these intrinsics only compute on values (no memory access);
    // they need SSE2, which is part of the x86_64 baseline.
    unsafe {
        let want = _mm_set1_epi32(x as i32);
        let lo = _mm_cmpeq_epi32(_mm_set_epi32(v[3], v[2], v[1], v[0]), want);
        let hi = _mm_cmpeq_epi32(_mm_set_epi32(v[7], v[6], v[5], v[4]), want);
        (_mm_movemask_ps(_mm_castsi128_ps(lo)) | _mm_movemask_ps(_mm_castsi128_ps(hi)) << 4) as u32
    }
}

/// A bit per entry of `line` equal to `x`.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn mask(line: &[u32; WAYS], x: u32) -> u32 {
    let mut m = 0;
    for (k, &e) in line.iter().enumerate() {
        m |= u32::from(e == x) << k;
    }
    m
}

/// Maps flow hashes to slot numbers; the caller compares keys.
pub(crate) struct FlowIndex {
    lines: Vec<Line>,
    items: usize,
    deleted: usize,
}

impl FlowIndex {
    /// An index for about `n` entries before it first grows.
    pub(crate) fn with_capacity(n: usize) -> Self {
        FlowIndex {
            lines: vec![EMPTY_LINE; Self::lines_for(n)],
            items: 0,
            deleted: 0,
        }
    }

    /// Lines needed to hold `n` entries within the load limit.
    fn lines_for(n: usize) -> usize {
        (n.max(1) * 8 / 7).div_ceil(WAYS).next_power_of_two()
    }

    /// The line where entries with tag `t` start.
    #[inline]
    fn home(&self, t: u32) -> usize {
        t as usize & (self.lines.len() - 1)
    }

    /// Entries held.
    pub(crate) fn len(&self) -> usize {
        self.items
    }

    /// Bytes allocated.
    pub(crate) fn allocation_size(&self) -> usize {
        self.lines.capacity() * size_of::<Line>()
    }

    /// Asks the CPU to fetch the line where a search for `hash` starts.
    #[inline]
    pub(crate) fn prefetch(&self, hash: u64) {
        crate::cpu::prefetch((&raw const self.lines[self.home(tag(hash))]).cast());
    }

    /// The first slot whose entry matches `hash` and for which `eq` holds.
    #[inline]
    pub(crate) fn find(&self, hash: u64, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        let t = tag(hash);
        let wrap = self.lines.len() - 1;
        let mut i = self.home(t);
        // The index is never full (load ≤ 7/8), so some line has an empty entry.
        loop {
            let line = &self.lines[i];
            let mut hits = mask(&line.tags, t);
            while hits != 0 {
                let k = hits.trailing_zeros() as usize;
                let s = line.slots[k & (WAYS - 1)];
                if s > DELETED && eq(slot_of(s)) {
                    return Some(slot_of(s));
                }
                hits &= hits - 1;
            }
            if mask(&line.slots, EMPTY) != 0 {
                return None;
            }
            i = (i + 1) & wrap;
        }
    }

    /// Adds `slot` under `hash`; the caller knows no equal key is present.
    pub(crate) fn insert(&mut self, hash: u64, slot: u32) {
        assert!(
            slot < u32::MAX - 2,
            "flow slot {slot} out of the index's range"
        );
        let cap = self.lines.len() * WAYS;
        if (self.items + self.deleted + 1) * 8 > cap * 7 {
            let grow = (self.items + 1) * 16 > cap * 13;
            self.rebuild(if grow {
                2 * self.lines.len()
            } else {
                self.lines.len()
            });
        }
        self.place(tag(hash), stored(slot));
        self.items += 1;
    }

    /// Puts an entry (tag `t`, stored slot `s`) in the first free place of its lines.
    fn place(&mut self, t: u32, s: u32) {
        let wrap = self.lines.len() - 1;
        let mut i = self.home(t);
        loop {
            let line = &mut self.lines[i];
            if let Some(k) = line.slots.iter().position(|&x| x <= DELETED) {
                if line.slots[k] == DELETED {
                    self.deleted -= 1;
                }
                line.tags[k] = t;
                line.slots[k] = s;
                return;
            }
            i = (i + 1) & wrap;
        }
    }

    /// Removes the entry of `slot` under `hash`; whether it was there.
    pub(crate) fn remove(&mut self, hash: u64, slot: u32) -> bool {
        let t = tag(hash);
        let wrap = self.lines.len() - 1;
        let mut i = self.home(t);
        loop {
            let line = &mut self.lines[i];
            let open = mask(&line.slots, EMPTY) != 0;
            let at = mask(&line.slots, stored(slot)) & mask(&line.tags, t);
            if at != 0 {
                let k = at.trailing_zeros() as usize & (WAYS - 1);
                line.tags[k] = 0;
                if open {
                    line.slots[k] = EMPTY;
                } else {
                    line.slots[k] = DELETED;
                    self.deleted += 1;
                }
                self.items -= 1;
                return true;
            }
            if open {
                return false;
            }
            i = (i + 1) & wrap;
        }
    }

    /// Removes every entry, keeping the memory.
    pub(crate) fn clear(&mut self) {
        self.lines.fill(EMPTY_LINE);
        self.items = 0;
        self.deleted = 0;
    }

    /// Re-places every live entry into `lines` lines, leaving tombstones behind.
    #[cold]
    fn rebuild(&mut self, lines: usize) {
        let old = std::mem::replace(&mut self.lines, vec![EMPTY_LINE; lines]);
        self.deleted = 0;
        for line in &old {
            for (&t, &s) in line.tags.iter().zip(&line.slots) {
                if s > DELETED {
                    self.place(t, s);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mix(x: u64) -> u64 {
        let r = u128::from(x ^ 0x9e37_79b9_7f4a_7c15) * 0xff51_afd7_ed55_8ccd_u128;
        (r as u64) ^ ((r >> 64) as u64)
    }

    #[test]
    fn finds_what_was_inserted_and_not_what_was_removed() {
        let mut ix = FlowIndex::with_capacity(4);
        // Slot s is keyed by mix(s); grows several times on the way.
        for s in 0..10_000u32 {
            ix.insert(mix(u64::from(s)), s);
        }
        assert_eq!(ix.len(), 10_000);
        for s in 0..10_000u32 {
            assert_eq!(ix.find(mix(u64::from(s)), |x| x == s), Some(s));
        }
        for s in (0..10_000u32).step_by(2) {
            assert!(ix.remove(mix(u64::from(s)), s));
            assert!(!ix.remove(mix(u64::from(s)), s));
        }
        for s in 0..10_000u32 {
            let found = ix.find(mix(u64::from(s)), |x| x == s);
            assert_eq!(found, (s % 2 == 1).then_some(s), "slot {s}");
        }
        assert_eq!(ix.len(), 5_000);
        ix.clear();
        assert_eq!(ix.len(), 0);
        assert_eq!(ix.find(mix(1), |_| true), None);
    }

    #[test]
    fn colliding_hashes_are_told_apart_by_the_caller() {
        let mut ix = FlowIndex::with_capacity(8);
        // Forty entries with one hash: they overflow their line into the next ones.
        for s in 0..40u32 {
            ix.insert(7 << 32, s);
        }
        for s in 0..40u32 {
            assert_eq!(ix.find(7 << 32, |x| x == s), Some(s));
        }
        assert!(ix.remove(7 << 32, 3));
        assert_eq!(ix.find(7 << 32, |x| x == 3), None);
        assert_eq!(ix.find(7 << 32, |x| x == 39), Some(39));
    }

    #[test]
    fn churn_reuses_tombstones_without_growing_forever() {
        // A steady population of 1000 with constant turnover, as a flow
        // table in steady state: the index stays at its size.
        let mut ix = FlowIndex::with_capacity(1000);
        let size = ix.allocation_size();
        let key = |gen_: u64, s: u32| mix(gen_ << 32 | u64::from(s));
        let mut gens = vec![0u64; 1000];
        for s in 0..1000u32 {
            ix.insert(key(0, s), s);
        }
        for round in 0..200_000u64 {
            let s = (mix(round) % 1000) as u32;
            let g = gens[s as usize];
            assert!(ix.remove(key(g, s), s));
            gens[s as usize] = g + 1;
            ix.insert(key(g + 1, s), s);
        }
        assert_eq!(ix.len(), 1000);
        assert!(
            ix.allocation_size() <= 2 * size,
            "{} > 2 × {size}",
            ix.allocation_size()
        );
        for s in 0..1000u32 {
            assert_eq!(ix.find(key(gens[s as usize], s), |x| x == s), Some(s));
        }
    }
}
