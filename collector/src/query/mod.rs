//! Queries over stored flows: the filter language ([`parse()`]), its typed
//! plan ([`Filter`]) and the query shapes the stores answer.
//!
//! A filter is parsed once into a [`Filter`]; stores compile the plan into
//! their own language with every value bound as a parameter, never pasted
//! into query text. [`Filter::matches`] evaluates the same plan over a record
//! in memory: tests hold the stores' answers against it.

pub mod json;
pub mod memory;
pub mod parse;

pub use crate::model::query::{
    AppText, Cmp, Counter, Dir, Filter, IcsCounter, IpRange, MAX_SERIES_POINTS, MIN_SERIES_STEP_NS,
    SeriesPoint, TextOp, TimeRange, TopBy, TopKey, TopRow, Totals, check_step,
};
pub use parse::{ParseError, parse};

/// A time bound as analysts write it: RFC 3339 (`2024-05-01T10:00:00Z`)
/// or a duration before `now_ns` (`90m`, `2h`, `7d`).
pub fn parse_time(s: &str, now_ns: u64) -> Result<u64, String> {
    if let Ok(d) = vigil_proto::units::parse_duration(s) {
        return Ok(now_ns.saturating_sub(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)));
    }
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| {
            format!("{s:?}: expected RFC 3339 (2024-05-01T10:00:00Z) or a duration (2h): {e}")
        })?;
    u64::try_from(t.unix_timestamp_nanos()).map_err(|_| format!("{s:?}: before 1970"))
}

/// A series as analysts are shown it: [`dense_series`] over `range` asked
/// at `now_ns`, where a range from `since` alone runs up to now, and past
/// it to the last point (flows stamped after now, by a sensor's clock
/// ahead, are shown). With no points: the check that the step and the
/// number of intervals are acceptable, before a store is asked.
pub fn shown_series(
    points: &[SeriesPoint],
    range: TimeRange,
    now_ns: u64,
    step_ns: u64,
) -> Result<Vec<SeriesPoint>, String> {
    let mut shown = TimeRange {
        until_ns: range
            .until_ns
            .or(range.since_ns.map(|s| now_ns.max(s.saturating_add(1)))),
        ..range
    };
    if let (Some(u), None, Some(last)) = (shown.until_ns, range.until_ns, points.last()) {
        shown.until_ns = Some(u.max(last.start_ns.saturating_add(step_ns)));
    }
    dense_series(points, shown, step_ns)
}

/// A time series with the intervals that hold no flows filled in with
/// zeros: from the interval of `range.since_ns` (or the first point) to the
/// one before `range.until_ns` (or the last point). `points` are the
/// non-empty intervals, in order, as a store returns them. Refuses more than
/// [`MAX_SERIES_POINTS`] intervals.
pub fn dense_series(
    points: &[SeriesPoint],
    range: TimeRange,
    step_ns: u64,
) -> Result<Vec<SeriesPoint>, String> {
    check_step(step_ns)?;
    let too_many = |n: u64| {
        format!(
            "{n} intervals of {}s: at most {MAX_SERIES_POINTS}; use a longer interval or a shorter range",
            step_ns / 1_000_000_000
        )
    };
    let first = match (range.since_ns, points.first()) {
        (Some(s), _) => s / step_ns * step_ns,
        (None, Some(p)) => p.start_ns,
        (None, None) => return Ok(Vec::new()),
    };
    let end = match (range.until_ns, points.last()) {
        // The interval holding the last instant of the range, inclusive.
        (Some(u), _) if u > first => (u - 1) / step_ns * step_ns,
        (Some(_), _) => return Ok(Vec::new()),
        (None, Some(p)) => p.start_ns.max(first),
        (None, None) => first,
    };
    let n = (end - first) / step_ns + 1;
    if n > MAX_SERIES_POINTS as u64 {
        return Err(too_many(n));
    }
    let mut out = Vec::with_capacity(n as usize);
    let mut it = points.iter().peekable();
    for i in 0..n {
        let start_ns = first + i * step_ns;
        while it.peek().is_some_and(|p| p.start_ns < start_ns) {
            it.next();
        }
        let totals = match it.peek() {
            Some(p) if p.start_ns == start_ns => p.totals,
            _ => Totals::default(),
        };
        out.push(SeriesPoint { start_ns, totals });
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
