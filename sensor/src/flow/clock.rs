//! Packet time: the clock flow expiry runs on. Every run mode keeps one
//! per flow table, moved by the packets' own timestamps, so a capture file
//! gives the same records on every run and for any number of workers.

/// Packet time, as flow expiry sees it: the latest timestamp so far, except
/// that a single timestamp more than [`MAX_CLOCK_JUMP_NS`] ahead (a corrupt
/// or forged record) does not move it — that would expire every flow at once
/// and stall expiry afterwards. Two such packets in a row do (a real gap in
/// the capture).
#[derive(Clone, Copy, Debug, Default)]
pub struct PacketClock {
    now: u64,
    /// A far-future timestamp seen once, waiting for confirmation (0: none;
    /// a jump is never to the epoch).
    jump: u64,
}

impl PacketClock {
    /// The current packet time.
    #[inline]
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Takes a packet's timestamp; returns whether the clock moved.
    #[inline(always)]
    pub fn observe(&mut self, ts: u64) -> bool {
        if ts <= self.now {
            return false;
        }
        if ts - self.now > MAX_CLOCK_JUMP_NS && self.now != 0 {
            return self.jump_to(ts);
        }
        self.jump = 0;
        self.now = ts;
        true
    }

    /// A timestamp more than [`MAX_CLOCK_JUMP_NS`] ahead: taken only when
    /// the one before it was too, and close to it.
    #[cold]
    fn jump_to(&mut self, ts: u64) -> bool {
        let confirmed = self.jump != 0 && self.jump.abs_diff(ts) <= MAX_CLOCK_JUMP_NS;
        self.jump = ts;
        if confirmed {
            self.jump = 0;
            self.now = ts;
        }
        confirmed
    }

    /// Takes a run of timestamps that a [`ClockSpan`] summed up, as
    /// observing each in turn would, where the summary suffices; returns
    /// `false` (and leaves the clock alone) where the run must be observed
    /// one by one.
    #[inline]
    pub fn observe_span(&mut self, span: &ClockSpan) -> bool {
        if span.records == 0 {
            return true;
        }
        // The first timestamp moves the clock plainly (or not at all) and
        // none after it is far ahead of those before it: no jump is taken
        // or waits, and the clock ends at the latest.
        let plain = self.now == 0 || span.first <= self.now.saturating_add(MAX_CLOCK_JUMP_NS);
        if !(span.tame && plain) {
            return false;
        }
        if span.max > self.now {
            self.now = span.max;
            self.jump = 0;
        }
        true
    }
}

/// A run of timestamps summed up for [`PacketClock::observe_span`]: the
/// first, the latest, and whether each after the first is within
/// [`MAX_CLOCK_JUMP_NS`] of the latest before it.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClockSpan {
    first: u64,
    max: u64,
    tame: bool,
    records: u64,
}

impl ClockSpan {
    /// Adds the run's next timestamp.
    #[inline(always)]
    pub fn add(&mut self, ts: u64) {
        if self.records == 0 {
            self.first = ts;
            self.max = ts;
            self.tame = true;
        } else if ts > self.max {
            self.tame &= ts - self.max <= MAX_CLOCK_JUMP_NS;
            self.max = ts;
        }
        self.records += 1;
    }
}

/// The largest forward jump of packet time taken from a single packet (1 h).
pub const MAX_CLOCK_JUMP_NS: u64 = 3_600_000_000_000;

#[cfg(test)]
mod tests {
    use super::*;

    /// Timestamps that take every path of the clock: steps, repeats, going
    /// back, single and confirmed jumps, a start at the epoch.
    fn timestamps(seed: &mut u64, len: usize) -> Vec<u64> {
        let mut next = || {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *seed
        };
        let mut t: u64 = if next() % 4 == 0 { 0 } else { 1 << 50 };
        (0..len)
            .map(|_| {
                t = match next() % 16 {
                    0 => t.saturating_add(MAX_CLOCK_JUMP_NS + next() % (4 * MAX_CLOCK_JUMP_NS)),
                    1 => t.saturating_sub(next() % (2 * MAX_CLOCK_JUMP_NS)),
                    2 => t,
                    3 => t + MAX_CLOCK_JUMP_NS,
                    _ => t + next() % 1_000_000_000,
                };
                t
            })
            .collect()
    }

    #[test]
    fn a_summed_up_span_moves_the_clock_as_its_timestamps_one_by_one_do() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let (mut summed, mut declined) = (0, 0);
        for round in 0..20_000 {
            let before = timestamps(&mut seed, 3);
            let run = timestamps(&mut seed, 1 + round % 6);
            let mut one_by_one = PacketClock::default();
            before.iter().for_each(|&t| {
                one_by_one.observe(t);
            });
            let mut spanned = one_by_one;
            let mut span = ClockSpan::default();
            for &t in &run {
                one_by_one.observe(t);
                span.add(t);
            }
            let untouched = (spanned.now, spanned.jump);
            if spanned.observe_span(&span) {
                summed += 1;
            } else {
                declined += 1;
                assert_eq!((spanned.now, spanned.jump), untouched);
                run.iter().for_each(|&t| {
                    spanned.observe(t);
                });
            }
            assert_eq!(
                (spanned.now, spanned.jump),
                (one_by_one.now, one_by_one.jump),
                "before {before:?}, run {run:?}"
            );
        }
        // Both paths were taken, the summary the common one.
        assert!(summed > declined && declined > 100, "{summed} / {declined}");
        let mut clock = PacketClock::default();
        assert!(clock.observe_span(&ClockSpan::default()));
        assert_eq!(clock.now(), 0);
    }
}
