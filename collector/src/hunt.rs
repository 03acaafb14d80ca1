//! Detection over stored flows (`vigil detect`, a retro-hunt): the
//! detectors run over the flows a store holds in a time range, oldest
//! first, as they ran live, e.g. with a new indicator list or thresholds,
//! or over flows stored while detection was off. The alerts found that
//! the store does not hold already are stored with their evidence.
//!
//! An alert found is *already stored* when a stored alert has its kind
//! and asset, a time span overlapping its own (within `incident_timeout`),
//! and a source or a target in common: the same incident, raised live.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use vigil_proto::FlowRecord;

use crate::detect::{Alert, AlertUpdate, DetectConfig, Engine, EvidenceRef};
use crate::model::alert::AlertQuery;
use crate::model::query::{Filter, TimeRange};
use crate::store::plan::{self, NS_PER_MIN};
use crate::store::{Store, StoreError};

/// Rows read from the store at a time.
const PAGE: usize = 8192;

/// What a hunt found and did.
#[derive(Clone, Debug, Default)]
pub struct HuntReport {
    /// Flow records examined.
    pub flows: u64,
    /// Alerts found that the store did not hold (stored unless a dry run),
    /// with all their evidence.
    pub new: Vec<Alert>,
    /// Alerts found that the store holds already: (found, stored id).
    pub known: Vec<(Alert, u64)>,
}

/// Alerts found by a replay: per engine id, the latest state and every
/// evidence reference.
type Found = BTreeMap<u64, (Alert, Vec<EvidenceRef>)>;

/// Runs `engine` over the flows `store` holds in `range`, oldest first,
/// a page at a time, each page's records per sensor.
fn replay(
    store: &dyn Store,
    engine: &mut Engine,
    range: TimeRange,
) -> Result<(Found, u64), StoreError> {
    let mut found = Found::new();
    let mut flows = 0u64;
    let select = plan::select(&Filter::All, range, usize::MAX);
    store.select_pages(&select, PAGE, &mut |rows| {
        flows += rows.len() as u64;
        let mut by_sensor: Vec<(String, Vec<FlowRecord>)> = Vec::new();
        for (sensor, r) in rows {
            match by_sensor.iter_mut().find(|(s, _)| *s == sensor) {
                Some((_, v)) => v.push(r),
                None => by_sensor.push((sensor, vec![r])),
            }
        }
        for (sensor, recs) in by_sensor {
            for u in engine.observe(&sensor, &recs) {
                let e = found
                    .entry(u.alert.id)
                    .or_insert_with(|| (u.alert.clone(), Vec::new()));
                e.1.extend(u.alert.evidence.iter().cloned());
                e.0 = u.alert;
            }
        }
        true
    })?;
    Ok((found, flows))
}

/// What [`rebuild`] did.
#[derive(Clone, Debug, Default)]
pub struct Rebuilt {
    /// Flow records replayed.
    pub flows: u64,
    /// Engine alert id → the stored alert it continues (the engine's open
    /// incident now carries the stored id).
    pub continues: std::collections::HashMap<u64, u64>,
    /// Alerts found that the store did not hold (committed flows the
    /// detectors never examined), stored.
    pub new: Vec<Alert>,
}

/// Rebuilds a fresh `engine`'s windows at start: replays the stored flows
/// of the last `lookback` before the newest stored minute. An alert the
/// replay finds that the store holds (the same incident) is continued:
/// the engine's incident takes the stored alert's id, so later findings
/// of it update the stored alert; one it
/// does not hold came from flows committed but never examined (the
/// collector stopped first) and is stored.
pub fn rebuild(
    store: &dyn Store,
    engine: &mut Engine,
    lookback: Duration,
) -> Result<Rebuilt, StoreError> {
    let Some(newest) = newest_minute(store)? else {
        return Ok(Rebuilt::default());
    };
    let lookback = u64::try_from(lookback.as_nanos()).unwrap_or(u64::MAX);
    let range = TimeRange {
        since_ns: Some(newest.saturating_add(NS_PER_MIN).saturating_sub(lookback)),
        until_ns: None,
    };
    let found = replay_and_sort(store, engine, range, true)?;
    for (id, _, stored) in &found.known {
        engine.continue_alert(*id, *stored);
    }
    Ok(Rebuilt {
        flows: found.flows,
        continues: found.known.iter().map(|(id, _, s)| (*id, *s)).collect(),
        new: found.new,
    })
}

/// The start of the newest minute holding a stored flow (by first
/// packet), from the roll-ups: a month, then its hour, then its minute.
fn newest_minute(store: &dyn Store) -> Result<Option<u64>, StoreError> {
    let mut range = TimeRange::default();
    let mut newest = None;
    for step in [
        30 * 86_400 * 1_000_000_000u64,
        3_600_000_000_000,
        NS_PER_MIN,
    ] {
        let Some(p) = store.series(&Filter::All, range, step)?.pop() else {
            return Ok(newest);
        };
        newest = Some(p.start_ns);
        range = TimeRange {
            since_ns: Some(p.start_ns),
            until_ns: Some(p.start_ns.saturating_add(step)),
        };
    }
    Ok(newest)
}

/// Runs the detectors of `detect` over the flows `store` holds in
/// `range`; stores the new alerts unless `dry_run`.
pub fn hunt(
    store: &dyn Store,
    detect: Arc<DetectConfig>,
    max_clock_skew: Duration,
    range: TimeRange,
    dry_run: bool,
) -> Result<HuntReport, StoreError> {
    if !dry_run {
        store.put_detector(&detect.settings_hash, &detect.settings)?;
    }
    let mut engine =
        Engine::new(detect, store.max_alert_id()?.saturating_add(1)).with_max_skew(max_clock_skew);
    let found = replay_and_sort(store, &mut engine, range, !dry_run)?;
    Ok(HuntReport {
        flows: found.flows,
        new: found.new,
        known: found.known.into_iter().map(|(_, a, s)| (a, s)).collect(),
    })
}

/// What a replay found, sorted against the store.
struct Sorted {
    flows: u64,
    /// Alerts the store does not hold, with all their evidence.
    new: Vec<Alert>,
    /// Alerts it holds: (engine id, found, stored id).
    known: Vec<(u64, Alert, u64)>,
}

/// Runs `engine` over the flows of `range` and sorts the alerts it finds
/// into those the store holds (the same incident) and the others, which
/// are stored if `store_new`.
fn replay_and_sort(
    store: &dyn Store,
    engine: &mut Engine,
    range: TimeRange,
    store_new: bool,
) -> Result<Sorted, StoreError> {
    let slack = engine.config().incident_timeout_ns;
    let (found, flows) = replay(store, engine, range)?;
    let stored = store.alerts(&AlertQuery {
        since_ns: range.since_ns.map(|t| t.saturating_sub(slack)),
        until_ns: range.until_ns.map(|t| t.saturating_add(slack)),
        limit: usize::MAX >> 1,
        ..AlertQuery::default()
    })?;
    let mut out = Sorted {
        flows,
        new: Vec::new(),
        known: Vec::new(),
    };
    for (id, (mut alert, evidence)) in found {
        alert.evidence = evidence;
        match stored.iter().find(|s| same_incident(&alert, s, slack)) {
            Some(s) => out.known.push((id, alert, s.id)),
            None => out.new.push(alert),
        }
    }
    if store_new && !out.new.is_empty() {
        let updates: Vec<AlertUpdate> = out
            .new
            .iter()
            .map(|a| AlertUpdate {
                alert: a.clone(),
                opened: true,
            })
            .collect();
        store.put_alerts(&updates)?;
    }
    Ok(out)
}

/// Whether `a` (found) is the incident `s` (stored) is.
fn same_incident(a: &Alert, s: &Alert, slack: u64) -> bool {
    let overlap = a.first_seen_ns <= s.last_seen_ns.saturating_add(slack)
        && s.first_seen_ns <= a.last_seen_ns.saturating_add(slack);
    let addrs = |v: &[crate::detect::Party]| -> HashSet<String> {
        v.iter().map(|p| p.addr.clone()).collect()
    };
    let shared =
        |x: &[crate::detect::Party], y: &[crate::detect::Party]| !addrs(x).is_disjoint(&addrs(y));
    a.kind == s.kind
        && a.asset == s.asset
        && overlap
        && (shared(&a.sources, &s.sources) || shared(&a.targets, &s.targets))
}
