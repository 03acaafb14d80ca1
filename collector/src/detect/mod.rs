//! Detection: streaming detectors over flow records, against the protected
//! assets of the configuration, raising alerts that carry their evidence.
//!
//! [`Engine::observe`] takes the records of a committed batch and returns
//! the alerts it opened or updated. Everything inside is plain computation
//! over the records and windows kept in memory — no I/O, no clock: time is
//! the records' own (event time), so a capture replayed tomorrow raises the
//! same alerts as it did live, and tests run on synthesized flows.
//!
//! Detectors (`detectors.rs`) each keep their windows and fire *findings*;
//! the incidents layer (`incidents.rs`) folds findings into alerts: a finding for the
//! same (kind, asset, key address) while the incident is open (its last
//! evidence younger than `incident_timeout`) updates that alert instead of
//! raising another.

pub mod config;
mod detectors;
mod incidents;
pub mod nets;
mod window;

use std::net::IpAddr;
use std::sync::Arc;

use vigil_proto::FlowRecord;

pub use crate::model::alert::{Alert, AlertKind, AlertUpdate, EvidenceRef, Party, Severity};
pub use config::DetectConfig;

use detectors::Detectors;
use incidents::Incidents;

/// One evidence flow as the detectors keep it: an interned sensor index,
/// the flow id and the record's first packet time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct FlowRef {
    pub sensor: u32,
    pub flow_id: u64,
    pub first_ns: u64,
}

/// Packets, bytes and flow records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub flows: u64,
    pub packets: u64,
    pub bytes: u64,
}

impl Counts {
    pub fn add(&mut self, o: Counts) {
        self.flows += o.flows;
        self.packets += o.packets;
        self.bytes += o.bytes;
    }
}

/// What a detector concluded at one moment.
#[derive(Clone, Debug)]
pub(crate) struct Finding {
    pub kind: AlertKind,
    pub asset: usize,
    /// The address the incident is keyed on (attacker or victim).
    pub key: IpAddr,
    /// Event time of the latest evidence, ns.
    pub ts_ns: u64,
    /// Event time of the record at which the threshold was seen crossed
    /// (for updates: the latest evidence), ns.
    pub detected_ns: u64,
    pub first_ns: u64,
    pub measured: f64,
    pub threshold: f64,
    pub unit: String,
    pub summary: String,
    pub sources: Vec<(IpAddr, Counts)>,
    /// Sources beyond those listed.
    pub more_sources: u64,
    pub targets: Vec<((IpAddr, Option<u16>), Counts)>,
    pub evidence: Vec<FlowRef>,
    /// Evidence flows beyond those listed.
    pub more_evidence: u64,
}

/// Counters of the engine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DetectStats {
    /// Flow records examined.
    pub flows: u64,
    /// Records touching a protected asset.
    pub protected_flows: u64,
    /// Findings fired.
    pub findings: u64,
    /// Alerts opened.
    pub alerts_opened: u64,
    /// Alert updates.
    pub alerts_updated: u64,
    /// Window entries dropped to stay within the memory bound.
    pub state_evictions: u64,
}

/// The detection engine: detectors and incidents.
#[derive(Debug)]
pub struct Engine {
    cfg: Arc<DetectConfig>,
    sensors: Vec<String>,
    detectors: Detectors,
    incidents: Incidents,
    findings: Vec<Finding>,
    /// Counters.
    pub stats: DetectStats,
}

impl Engine {
    /// An engine whose next alert id is `next_id` (one above the store's
    /// largest, so ids stay unique across restarts).
    pub fn new(cfg: Arc<DetectConfig>, next_id: u64) -> Engine {
        Engine {
            detectors: Detectors::new(cfg.clone()),
            incidents: Incidents::new(cfg.clone(), next_id.max(1)),
            cfg,
            sensors: Vec::new(),
            findings: Vec::new(),
            stats: DetectStats::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &DetectConfig {
        &self.cfg
    }

    fn sensor_index(&mut self, sensor_id: &str) -> u32 {
        match self.sensors.iter().position(|s| s == sensor_id) {
            Some(i) => i as u32,
            None => {
                self.sensors.push(sensor_id.to_string());
                (self.sensors.len() - 1) as u32
            }
        }
    }

    /// Runs the detectors over one sensor's records (in the order given)
    /// and returns the alerts opened or updated, each once.
    pub fn observe(&mut self, sensor_id: &str, flows: &[FlowRecord]) -> Vec<AlertUpdate> {
        let sensor = self.sensor_index(sensor_id);
        self.stats.flows += flows.len() as u64;
        for f in flows {
            if self.detectors.observe(sensor, f) {
                self.stats.protected_flows += 1;
            }
        }
        self.detectors.finish(&mut self.findings);
        self.stats.state_evictions = self.detectors.evictions;
        self.stats.findings += self.findings.len() as u64;
        let updates = self.incidents.apply(self.findings.drain(..), &self.sensors);
        for u in &updates {
            if u.opened {
                self.stats.alerts_opened += 1;
            } else {
                self.stats.alerts_updated += 1;
            }
        }
        updates
    }
}

#[cfg(test)]
mod tests;
