//! Human-written durations and sizes in configuration files: `500ms`,
//! `30s`, `10m`, `2h`, `7d`; `4096`, `64KiB`, `16MiB`, `1GiB`, `2TiB`
//! (also `KB`, `MB`, `GB`, `TB` as powers of 1000).

use std::fmt;
use std::time::Duration;

/// Every problem found in a configuration, each naming its dotted key and
/// value; shared by `sensor.toml` and `collector.toml`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

impl std::error::Error for ConfigErrors {}

/// Checks the duration at dotted `key`: parsed and greater than zero, or a
/// problem pushed onto `errs`.
pub fn check_duration(errs: &mut Vec<String>, key: &str, v: &str) -> Option<Duration> {
    match parse_duration(v) {
        Ok(d) if !d.is_zero() => Some(d),
        Ok(_) => {
            errs.push(format!("{key} = {v:?}: must be greater than zero"));
            None
        }
        Err(e) => {
            errs.push(format!("{key} = {e}"));
            None
        }
    }
}

/// Checks the size at dotted `key` (and, with `nonzero`, that it is not 0),
/// or pushes a problem onto `errs`.
pub fn check_size(errs: &mut Vec<String>, key: &str, v: &str, nonzero: bool) -> Option<u64> {
    match parse_size(v) {
        Ok(0) if nonzero => {
            errs.push(format!("{key} = {v:?}: must be greater than zero"));
            None
        }
        Ok(n) => Some(n),
        Err(e) => {
            errs.push(format!("{key} = {e}"));
            None
        }
    }
}

/// Parses a duration such as `30s`; the message names what was expected.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{s:?}: missing unit (ms, s, m, h, d)"))?;
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number followed by ms, s, m, h or d"))?;
    let secs = |k: u64| {
        n.checked_mul(k)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("{s:?}: too large"))
    };
    match unit.trim() {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        "d" => secs(86_400),
        other => Err(format!("{s:?}: unknown unit {other:?} (ms, s, m, h, d)")),
    }
}

/// Parses a size in bytes such as `16MiB`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a number of bytes, e.g. 4096, 64KiB, 1GiB"))?;
    let k: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "{s:?}: unknown unit {other:?} (KiB, MiB, GiB, TiB)"
            ));
        }
    };
    n.checked_mul(k).ok_or_else(|| format!("{s:?}: too large"))
}

/// A duration in ns, rounded to what reads well: "250 ms", "90 s",
/// "10 min", "3 h".
pub fn human_ns(ns: u64) -> String {
    let s = ns / 1_000_000_000;
    match s {
        0 => format!("{} ms", ns / 1_000_000),
        1..120 => format!("{s} s"),
        120..7200 => format!("{} min", s / 60),
        _ => format!("{} h", s / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(parse_duration("30").unwrap_err().contains("missing unit"));
        assert!(parse_duration("3w").unwrap_err().contains("unknown unit"));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert!(parse_size("1PiB").is_err());
        assert!(
            parse_size("99999999999TiB")
                .unwrap_err()
                .contains("too large")
        );
    }
}
