//! Sliding windows of fixed-width time buckets, in event time.
//!
//! The ring keeps the running total of its buckets, so reading the window
//! costs nothing however many buckets it has: a bucket's values leave the
//! total when its slot is reused. The window always ends with the newest
//! bucket written (records arrive a little out of order; the window is the
//! latest one).

/// Sums of `M` figures over the last `n` buckets of `width_ns` each.
#[derive(Clone, Debug)]
pub(crate) struct Ring<const M: usize> {
    width_ns: u64,
    /// (bucket number, sums); a slot holds bucket `b` at `b % n`.
    slots: Box<[(u64, [f64; M])]>,
    /// Newest bucket number written.
    newest: u64,
    /// Sum of every slot's values.
    total: [f64; M],
    /// Whether a bucket was written yet.
    started: bool,
}

impl<const M: usize> Ring<M> {
    /// A window of `window_ns` split into `n` buckets (at least one).
    pub fn new(window_ns: u64, n: usize) -> Ring<M> {
        let n = n.max(1);
        Ring {
            width_ns: (window_ns / n as u64).max(1),
            slots: vec![(u64::MAX, [0.0; M]); n].into_boxed_slice(),
            newest: 0,
            total: [0.0; M],
            started: false,
        }
    }

    /// The window's length, ns.
    pub fn window_ns(&self) -> u64 {
        self.width_ns * self.slots.len() as u64
    }

    /// Moves the window's end to bucket `b` (never back), emptying the
    /// slots of buckets that leave it.
    fn advance(&mut self, b: u64) {
        if b <= self.newest && self.started {
            return;
        }
        let n = self.slots.len() as u64;
        let from = if !self.started || b - self.newest >= n {
            b.saturating_sub(n - 1)
        } else {
            self.newest + 1
        };
        for x in from..=b {
            let slot = &mut self.slots[(x % n) as usize];
            if slot.0 != x {
                if slot.0 != u64::MAX {
                    for (t, v) in self.total.iter_mut().zip(slot.1) {
                        *t -= v;
                    }
                }
                *slot = (x, [0.0; M]);
            }
        }
        self.newest = self.newest.max(b);
        self.started = true;
    }

    fn add_bucket(&mut self, b: u64, v: &[f64; M], share: f64) {
        let n = self.slots.len() as u64;
        if b + n <= self.newest {
            return; // older than the window
        }
        self.advance(b);
        let slot = &mut self.slots[(b % n) as usize];
        if slot.0 != b {
            return;
        }
        for ((a, t), x) in slot.1.iter_mut().zip(self.total.iter_mut()).zip(v) {
            *a += x * share;
            *t += x * share;
        }
    }

    /// Adds `v` spread evenly over `[first_ns, last_ns]` (a record's span);
    /// parts older than the window are dropped.
    pub fn add_span(&mut self, first_ns: u64, last_ns: u64, v: &[f64; M]) {
        let (b0, b1) = (
            first_ns / self.width_ns,
            last_ns.max(first_ns) / self.width_ns,
        );
        if b0 == b1 {
            self.add_bucket(b1, v, 1.0);
            return;
        }
        let n = self.slots.len() as u64;
        let share = 1.0 / (b1 - b0 + 1) as f64;
        for b in b1.saturating_sub(n - 1).max(b0)..=b1 {
            self.add_bucket(b, v, share);
        }
    }

    /// Sums over the window ending with the bucket of `now_ns` or the
    /// newest bucket written, whichever is later.
    pub fn sum(&mut self, now_ns: u64) -> [f64; M] {
        self.advance(now_ns / self.width_ns);
        // Floating-point residue of subtractions is not traffic.
        self.total.map(|t| if t < 1e-6 { 0.0 } else { t })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn sums_cover_the_window_and_spans_are_spread() {
        let mut r: Ring<1> = Ring::new(2 * S, 2);
        r.add_span(10 * S, 10 * S, &[4.0]);
        r.add_span(11 * S + 5, 11 * S + 9, &[6.0]);
        assert_eq!(r.sum(11 * S)[0], 10.0);
        assert_eq!(r.sum(12 * S)[0], 6.0, "bucket 10 left the window");
        // 30 over three seconds: 10 in each bucket, the oldest outside.
        let mut r: Ring<1> = Ring::new(2 * S, 2);
        r.add_span(20 * S, 22 * S, &[30.0]);
        assert_eq!(r.sum(22 * S)[0], 20.0);
        // Too old to count once newer buckets exist.
        r.add_span(5 * S, 5 * S, &[100.0]);
        assert_eq!(r.sum(22 * S)[0], 20.0);
        // A late record inside the window counts; the window is the latest.
        r.add_span(21 * S, 21 * S, &[1.0]);
        assert_eq!(r.sum(21 * S)[0], 21.0);
        // A jump far ahead empties it.
        assert_eq!(r.sum(100 * S)[0], 0.0);
    }

    #[test]
    fn the_running_total_equals_a_fresh_sum() {
        let mut r: Ring<2> = Ring::new(2 * S, 8);
        let mut x = 7u64;
        let mut t = 50 * S;
        for _ in 0..10_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            t += (x >> 40) % (S / 3);
            let back = (x >> 20) % S;
            r.add_span(t.saturating_sub(back), t, &[1.0, (x % 100) as f64]);
            let total = r.sum(t);
            let fresh: f64 = r
                .slots
                .iter()
                .filter(|s| s.0 != u64::MAX && s.0 + 8 > r.newest)
                .map(|s| s.1[1])
                .sum();
            assert!(
                (total[1] - fresh).abs() < 1e-6 * fresh.max(1.0),
                "{total:?} vs {fresh}"
            );
        }
    }
}
