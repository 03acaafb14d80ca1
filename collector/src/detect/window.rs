//! Sliding windows of fixed-width time buckets, in event time.

/// Sums of `M` figures over the last `n` buckets of `width_ns` each.
#[derive(Clone, Debug)]
pub(crate) struct Ring<const M: usize> {
    width_ns: u64,
    /// (bucket number, sums); a slot holds bucket `b` at `b % n`.
    slots: Box<[(u64, [f64; M])]>,
    /// Newest bucket number written.
    newest: u64,
}

impl<const M: usize> Ring<M> {
    /// A window of `window_ns` split into `n` buckets (at least one).
    pub fn new(window_ns: u64, n: usize) -> Ring<M> {
        let n = n.max(1);
        Ring {
            width_ns: (window_ns / n as u64).max(1),
            slots: vec![(u64::MAX, [0.0; M]); n].into_boxed_slice(),
            newest: 0,
        }
    }

    /// The window's length, ns.
    pub fn window_ns(&self) -> u64 {
        self.width_ns * self.slots.len() as u64
    }

    fn bucket(&mut self, b: u64) -> Option<&mut [f64; M]> {
        let n = self.slots.len() as u64;
        if b + n <= self.newest {
            return None; // older than the window
        }
        self.newest = self.newest.max(b);
        let slot = &mut self.slots[(b % n) as usize];
        if slot.0 != b {
            *slot = (b, [0.0; M]);
        }
        Some(&mut slot.1)
    }

    /// Adds `v` spread evenly over `[first_ns, last_ns]` (a record's span);
    /// parts older than the window are dropped.
    pub fn add_span(&mut self, first_ns: u64, last_ns: u64, v: &[f64; M]) {
        let (b0, b1) = (
            first_ns / self.width_ns,
            last_ns.max(first_ns) / self.width_ns,
        );
        if b0 == b1 {
            if let Some(s) = self.bucket(b1) {
                for (a, x) in s.iter_mut().zip(v) {
                    *a += x;
                }
            }
            return;
        }
        let n = self.slots.len() as u64;
        let share = 1.0 / (b1 - b0 + 1) as f64;
        for b in b1.saturating_sub(n - 1).max(b0)..=b1 {
            if let Some(s) = self.bucket(b) {
                for (a, x) in s.iter_mut().zip(v) {
                    *a += x * share;
                }
            }
        }
    }

    /// Sums over the window ending with the bucket of `now_ns`.
    pub fn sum(&self, now_ns: u64) -> [f64; M] {
        let now = now_ns / self.width_ns;
        let n = self.slots.len() as u64;
        let mut out = [0.0; M];
        for (b, s) in self.slots.iter() {
            if *b != u64::MAX && *b <= now && *b + n > now {
                for (a, x) in out.iter_mut().zip(s) {
                    *a += x;
                }
            }
        }
        out
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
    }
}
