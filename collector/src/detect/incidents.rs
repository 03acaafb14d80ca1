//! Incidents: findings folded into alerts. A finding for the same (kind,
//! asset, key address) while the incident is open — its latest evidence
//! younger than `incident_timeout`, in event time — updates that alert.

use std::net::IpAddr;
use std::sync::Arc;

use hashbrown::{HashMap, HashSet};

use super::config::DetectConfig;
use super::{Counts, Finding};
use crate::model::alert::{
    Alert, AlertKind, AlertUpdate, Criticality, EvidenceRef, Party, Severity,
};

/// Parties an incident keeps counts for; beyond, they are only counted.
const MAX_PARTIES: usize = 100_000;

#[derive(Debug)]
struct Incident {
    alert: Alert,
    sources: HashMap<IpAddr, Counts>,
    more_sources: u64,
    targets: HashMap<(IpAddr, Option<u16>), Counts>,
    more_targets: u64,
    /// Evidence flows kept, by (sensor, flow id).
    seen: HashSet<(u32, u64)>,
}

#[derive(Debug)]
pub(crate) struct Incidents {
    cfg: Arc<DetectConfig>,
    open: HashMap<(AlertKind, usize, IpAddr), Incident>,
    next_id: u64,
    /// Event time of the last close of stale incidents.
    swept: u64,
}

fn party(addr: String, c: Counts) -> Party {
    Party {
        addr,
        flows: c.flows,
        packets: c.packets,
        bytes: c.bytes,
    }
}

/// The `n` largest entries by (bytes, packets, flows), largest first.
fn top<K: Clone>(m: &HashMap<K, Counts>, n: usize) -> Vec<(K, Counts)> {
    let mut v: Vec<(K, Counts)> = m.iter().map(|(k, c)| (k.clone(), *c)).collect();
    let key = |c: &Counts| std::cmp::Reverse((c.bytes, c.packets, c.flows));
    if v.len() > n {
        v.select_nth_unstable_by_key(n, |(_, c)| key(c));
        v.truncate(n);
    }
    v.sort_by_key(|(_, c)| key(c));
    v
}

fn target_name(t: &(IpAddr, Option<u16>)) -> String {
    match t {
        (IpAddr::V6(a), Some(p)) => format!("[{a}]:{p}"),
        (a, Some(p)) => format!("{a}:{p}"),
        (a, None) => a.to_string(),
    }
}

impl Incidents {
    pub fn new(cfg: Arc<DetectConfig>, next_id: u64) -> Incidents {
        Incidents {
            cfg,
            open: HashMap::new(),
            next_id,
            swept: 0,
        }
    }

    /// Gives the open incident whose alert is `from` the id `to`: a stored
    /// alert it continues, found again when the windows were rebuilt from
    /// stored flows. Its later updates are that alert's.
    pub fn renumber(&mut self, from: u64, to: u64) {
        if let Some(i) = self.open.values_mut().find(|i| i.alert.id == from) {
            i.alert.id = to;
        }
    }

    /// Opens an alert for an event outside the flows (a sensor's key
    /// changed): its own incident, closed at once.
    pub fn event(
        &mut self,
        kind: AlertKind,
        subject: &str,
        summary: String,
        at_ns: u64,
    ) -> AlertUpdate {
        let id = self.next_id;
        self.next_id += 1;
        let (technique, name, matrix) = kind.technique();
        AlertUpdate {
            alert: Alert {
                id,
                kind,
                technique: technique.into(),
                technique_name: name.into(),
                matrix: matrix.into(),
                severity: Severity::High,
                asset: subject.to_string(),
                sector: String::new(),
                criticality: Criticality::High,
                summary,
                sources: Vec::new(),
                source_count: 0,
                targets: Vec::new(),
                target_count: 0,
                first_seen_ns: at_ns,
                last_seen_ns: at_ns,
                raised_ns: at_ns,
                measured: 1.0,
                threshold: 1.0,
                unit: "refused batches".into(),
                updates: 0,
                evidence: Vec::new(),
                evidence_count: 0,
                detector: self.cfg.settings_hash.clone(),
            },
            opened: true,
        }
    }

    /// Folds findings into alerts; returns each alert touched, once, with
    /// the evidence this call added.
    pub fn apply(
        &mut self,
        findings: impl Iterator<Item = Finding>,
        sensors: &[String],
        now: u64,
    ) -> Vec<AlertUpdate> {
        // The incidents touched, in the order first touched.
        let mut touched: Vec<(AlertKind, usize, IpAddr)> = Vec::new();
        let mut touched_set: HashSet<(AlertKind, usize, IpAddr)> = HashSet::new();
        let mut opened: HashSet<u64> = HashSet::new();
        let mut fresh: HashMap<u64, Vec<EvidenceRef>> = HashMap::new();
        for f in findings {
            let key = (f.kind, f.asset, f.key);
            let timeout = self.cfg.incident_timeout_ns;
            let reopen = self
                .open
                .get(&key)
                .is_none_or(|i| f.ts_ns > i.alert.last_seen_ns.saturating_add(timeout));
            if reopen {
                let id = self.next_id;
                self.next_id += 1;
                opened.insert(id);
                let asset = &self.cfg.assets[f.asset];
                let (technique, name, matrix) = f.kind.technique();
                self.open.insert(
                    key,
                    Incident {
                        alert: Alert {
                            id,
                            kind: f.kind,
                            technique: technique.into(),
                            technique_name: name.into(),
                            matrix: matrix.into(),
                            severity: Severity::Low,
                            asset: asset.name.clone(),
                            sector: asset.sector.clone(),
                            criticality: asset.criticality,
                            summary: String::new(),
                            sources: Vec::new(),
                            source_count: 0,
                            targets: Vec::new(),
                            target_count: 0,
                            first_seen_ns: f.first_ns,
                            last_seen_ns: f.ts_ns,
                            raised_ns: f.detected_ns,
                            measured: 0.0,
                            threshold: f.threshold,
                            unit: f.unit.clone(),
                            updates: 0,
                            evidence: Vec::new(),
                            evidence_count: 0,
                            detector: self.cfg.settings_hash.clone(),
                        },
                        sources: HashMap::new(),
                        more_sources: 0,
                        targets: HashMap::new(),
                        more_targets: 0,
                        seen: HashSet::new(),
                    },
                );
            }
            let Some(inc) = self.open.get_mut(&key) else {
                continue;
            };
            let a = &mut inc.alert;
            if !reopen {
                a.updates += 1;
            }
            a.first_seen_ns = a.first_seen_ns.min(f.first_ns);
            a.last_seen_ns = a.last_seen_ns.max(f.ts_ns);
            if f.measured >= a.measured || reopen {
                a.measured = f.measured;
                a.threshold = f.threshold;
                a.unit = f.unit.clone();
                a.summary = f.summary.clone();
            }
            let ratio = if f.threshold > 0.0 {
                f.measured / f.threshold
            } else {
                1.0
            };
            let criticality = self.cfg.assets[f.asset].criticality;
            let severity = f
                .severity
                .unwrap_or_else(|| Severity::of(f.kind, criticality, ratio));
            a.severity = a.severity.max(severity);
            for (ip, c) in f.sources {
                let n = inc.sources.len();
                match inc.sources.get_mut(&ip) {
                    Some(x) => x.add(c),
                    None if n < MAX_PARTIES => {
                        inc.sources.insert(ip, c);
                    }
                    None => inc.more_sources += 1,
                }
            }
            inc.more_sources += f.more_sources;
            for (t, c) in f.targets {
                let n = inc.targets.len();
                match inc.targets.get_mut(&t) {
                    Some(x) => x.add(c),
                    None if n < MAX_PARTIES => {
                        inc.targets.insert(t, c);
                    }
                    None => inc.more_targets += 1,
                }
            }
            let add = fresh.entry(a.id).or_default();
            for e in f.evidence {
                if inc.seen.len() < self.cfg.max_evidence {
                    if inc.seen.insert((e.sensor, e.flow_id)) {
                        a.evidence_count += 1;
                        add.push(EvidenceRef {
                            sensor_id: sensors.get(e.sensor as usize).cloned().unwrap_or_default(),
                            flow_id: e.flow_id,
                            first_ns: e.first_ns,
                        });
                    }
                } else {
                    a.evidence_count += 1;
                }
            }
            a.evidence_count += f.more_evidence;
            if touched_set.insert(key) {
                touched.push(key);
            }
        }
        let top_n = self.cfg.top;
        let mut out = Vec::with_capacity(touched.len());
        for key in touched {
            let Some(inc) = self.open.get_mut(&key) else {
                continue;
            };
            let a = &mut inc.alert;
            a.sources = top(&inc.sources, top_n)
                .into_iter()
                .map(|(ip, c)| party(ip.to_string(), c))
                .collect();
            a.source_count = inc.sources.len() as u64 + inc.more_sources;
            a.targets = top(&inc.targets, top_n)
                .into_iter()
                .map(|(t, c)| party(target_name(&t), c))
                .collect();
            a.target_count = inc.targets.len() as u64 + inc.more_targets;
            let mut alert = a.clone();
            alert.evidence = fresh.remove(&a.id).unwrap_or_default();
            out.push(AlertUpdate {
                opened: opened.contains(&alert.id),
                alert,
            });
        }
        // Incidents past their timeout at `now` (the slowest live sensor's
        // clock) are closed (they stay in the store).
        let timeout = self.cfg.incident_timeout_ns;
        if now >= self.swept.saturating_add(timeout) {
            self.open
                .retain(|_, i| i.alert.last_seen_ns.saturating_add(timeout) >= now);
            self.swept = now;
        }
        out
    }
}
