//! Timestamps as nanoseconds since the Unix epoch, printed as RFC 3339.
//!
//! Written by hand (Howard Hinnant's civil-from-days) so that formatting a
//! flow record never allocates and always prints nine fractional digits.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// The wall clock, in nanoseconds since the epoch (0 before it). Vigil's one
/// reading of the system clock: packet and event times come from the data.
#[allow(clippy::disallowed_methods)] // The one reading.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Nanoseconds since 1970-01-01T00:00:00Z, formatted as RFC 3339 in UTC with
/// nanosecond precision, e.g. `2009-11-18T16:28:42.123456789Z`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rfc3339Nanos(pub u64);

impl fmt::Display for Rfc3339Nanos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0 / 1_000_000_000;
        let nanos = self.0 % 1_000_000_000;
        let days = (secs / 86_400) as i64;
        let rem = secs % 86_400;
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
            rem / 3600,
            (rem / 60) % 60,
            rem % 60
        )
    }
}

/// Days since the epoch to a proleptic Gregorian (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_epoch_and_known_instants() {
        assert_eq!(
            Rfc3339Nanos(0).to_string(),
            "1970-01-01T00:00:00.000000000Z"
        );
        // 2009-11-18T16:28:42Z is 1258561722 (date -d @1258561722 -u).
        assert_eq!(
            Rfc3339Nanos(1_258_561_722_000_000_123).to_string(),
            "2009-11-18T16:28:42.000000123Z"
        );
        // A leap day.
        assert_eq!(
            Rfc3339Nanos(951_782_400_500_000_000).to_string(),
            "2000-02-29T00:00:00.500000000Z"
        );
        // The end of the 32-bit pcap seconds range.
        assert_eq!(
            Rfc3339Nanos(u64::from(u32::MAX) * 1_000_000_000).to_string(),
            "2106-02-07T06:28:15.000000000Z"
        );
    }
}
