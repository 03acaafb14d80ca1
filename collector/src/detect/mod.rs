//! Detection: streaming detectors over flow records, against the protected
//! assets of the configuration, raising alerts that carry their evidence.
//!
//! [`Engine::observe`] takes the records of a committed batch and returns
//! the alerts it opened or updated. Everything inside is plain computation
//! over the records and windows kept in memory — no I/O, no clock: time is
//! the records' own (event time), so a capture replayed tomorrow raises the
//! same alerts as it did live, and tests run on synthesized flows.
//!
//! Event time is kept per sensor: each sensor's clock is the latest record
//! end it sent. Windows are swept and incidents closed at the *slowest*
//! clock of the live sensors (those that sent a batch within
//! `incident_timeout` of the latest arrival), so a sensor whose clock runs
//! ahead (within the collector's `max_clock_skew`) cannot expire the
//! windows or close the incidents that other sensors feed, and a sensor
//! whose clock lags holds expiry back only while it is live. A sensor whose
//! records go back by more than `max_clock_skew` (a clock set back, or a
//! replay of an older capture) has its clock restart there, counted
//! (`clock_steps`); records too far ahead are refused before they are
//! stored (`ingest::validate`).
//!
//! One detector per file, each behind the `Detector` trait
//! (observe a record, finish a batch, sweep its windows): `flood`,
//! `scan`, `reflection` (amplification), `bruteforce`, `ics`,
//! `exfil`, `beacon`, `badhost` (indicator lists, addresses and domains),
//! `dns` (tunnelling, DGA-like lookups). Each keeps its own
//! windows and fires *findings*; what two of them share (the host-pair
//! table of exfiltration and beaconing) is a `Context` they are
//! lent. The incidents layer (`incidents`) folds findings into alerts: a
//! finding for the same (kind, asset, key address) while the incident is
//! open (its last evidence younger than `incident_timeout`) updates that
//! alert instead of raising another.

pub mod appconfig;
mod badhost;
mod base;
mod beacon;
mod bruteforce;
pub mod config;
mod dns;
mod exfil;
mod flood;
mod ics;
mod incidents;
pub mod indicators;
pub mod nets;
mod pairs;
pub mod ports;
mod reflection;
mod scan;
mod window;

use std::net::IpAddr;
use std::sync::Arc;

use vigil_proto::FlowRecord;

pub use crate::model::alert::{Alert, AlertKind, AlertUpdate, EvidenceRef, Party, Severity};
pub use config::DetectConfig;

use base::Record;
use incidents::Incidents;
use pairs::Pairs;

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
    /// The severity, where the detector knows it better than
    /// [`Severity::of`] (ICS: by what the session did).
    pub severity: Option<Severity>,
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
    /// Times a sensor's records went back by more than the clock-skew
    /// bound, restarting its clock there.
    pub clock_steps: u64,
}

/// A sensor's event-time clock.
#[derive(Clone, Copy, Debug, Default)]
struct Clock {
    /// Latest record end the sensor sent, ns (event time).
    watermark: u64,
    /// When its latest batch arrived (the collector's clock, or, without
    /// one, the watermark), ns.
    arrived: u64,
}

/// A detector: it keeps windows keyed by the addresses it watches. When a
/// record makes a window cross its threshold, or adds to a key whose
/// incident is still open, the key is *marked*; at the end of the batch
/// ([`Detector::finish`]) every marked key yields one [`Finding`] with its
/// state at that point and the evidence gathered since its last finding.
/// So an attack yields one finding per batch however many records it has,
/// records arriving out of event-time order are all counted, and nothing
/// gathered after the last finding is lost when the attack stops.
pub(crate) trait Detector: std::fmt::Debug + Send {
    /// Examines one record that touches a protected asset.
    fn observe(&mut self, r: &Record<'_>, cx: &mut Context);

    /// Ends a batch: one finding per key marked in it, each with the
    /// number of its mark ([`Context::mark_number`]).
    fn finish(&mut self, cx: &mut Context, out: &mut Vec<(u64, Finding)>);

    /// Drops the keys that no window can use at event time `now` any more
    /// and whose incidents are over.
    fn sweep(&mut self, now: u64);
}

/// What the detectors share, lent to each in turn.
#[derive(Debug)]
pub(crate) struct Context {
    /// (protected host, external host) pairs: exfiltration's counters and
    /// beaconing's gate, one lookup serving both.
    pub pairs: Pairs,
    /// Keys not tracked because a map was full.
    pub evictions: u64,
    /// Marks made so far: findings come out in the order their keys were
    /// marked, whichever detector marked them.
    marks: u64,
}

impl Context {
    /// An empty context.
    pub fn new() -> Context {
        Context {
            pairs: Pairs::default(),
            evictions: 0,
            marks: 0,
        }
    }

    /// The number of a mark being made now.
    pub fn mark_number(&mut self) -> u64 {
        self.marks += 1;
        self.marks
    }
}

/// How often stale keys are swept, in event time.
const SWEEP_NS: u64 = 10_000_000_000;

/// The detection engine: detectors and incidents.
#[derive(Debug)]
pub struct Engine {
    cfg: Arc<DetectConfig>,
    sensors: Vec<String>,
    flood: flood::Flood,
    scan: scan::Scan,
    reflection: reflection::Reflection,
    ics: ics::Ics,
    brute: bruteforce::BruteForce,
    exfil: exfil::Exfil,
    beacon: beacon::Beacon,
    badhost: badhost::BadHost,
    dns: dns::Dns,
    /// What the detectors share.
    cx: Context,
    incidents: Incidents,
    findings: Vec<(u64, Finding)>,
    /// Per sensor (by index), its clock.
    clocks: Vec<Clock>,
    /// The latest arrival of any batch, ns.
    arrived: u64,
    /// A sensor's records going back by more than this restart its clock.
    max_skew_ns: u64,
    /// When the detectors were last swept, ns (event time).
    swept: u64,
    /// Counters.
    pub stats: DetectStats,
}

/// Calls `$f` with each detector, in the order findings come out within a
/// record (the order of a batch's findings is that of their marks).
macro_rules! each_detector {
    ($s:expr, $d:ident => $f:expr) => {{
        {
            let $d = &mut $s.flood;
            $f;
        }
        {
            let $d = &mut $s.scan;
            $f;
        }
        {
            let $d = &mut $s.reflection;
            $f;
        }
        {
            let $d = &mut $s.ics;
            $f;
        }
        {
            let $d = &mut $s.brute;
            $f;
        }
        {
            let $d = &mut $s.exfil;
            $f;
        }
        {
            let $d = &mut $s.beacon;
            $f;
        }
        {
            let $d = &mut $s.badhost;
            $f;
        }
        {
            let $d = &mut $s.dns;
            $f;
        }
    }};
}

impl Engine {
    /// An engine whose next alert id is `next_id` (one above the store's
    /// largest, so ids stay unique across restarts).
    pub fn new(cfg: Arc<DetectConfig>, next_id: u64) -> Engine {
        Engine {
            flood: flood::Flood::new(cfg.clone()),
            scan: scan::Scan::new(cfg.clone()),
            reflection: reflection::Reflection::new(cfg.clone()),
            ics: ics::Ics::new(cfg.clone()),
            brute: bruteforce::BruteForce::new(cfg.clone()),
            exfil: exfil::Exfil::new(cfg.clone()),
            beacon: beacon::Beacon::new(cfg.clone()),
            badhost: badhost::BadHost::new(cfg.clone()),
            dns: dns::Dns::new(cfg.clone()),
            cx: Context::new(),
            incidents: Incidents::new(cfg.clone(), next_id.max(1)),
            cfg,
            sensors: Vec::new(),
            findings: Vec::new(),
            clocks: Vec::new(),
            arrived: 0,
            max_skew_ns: 86_400_000_000_000,
            swept: 0,
            stats: DetectStats::default(),
        }
    }

    /// The same engine, taking a sensor's records that go back by more
    /// than `skew` as its clock stepping back (the collector's
    /// `max_clock_skew`; default 24 h).
    pub fn with_max_skew(mut self, skew: std::time::Duration) -> Engine {
        self.max_skew_ns = u64::try_from(skew.as_nanos()).unwrap_or(u64::MAX);
        self
    }

    /// Opens the alert for a sensor refused for signing with another key
    /// than its known one (`why` says which), at collector time `at_ns`.
    pub fn sensor_key_changed(&mut self, sensor: &str, why: String, at_ns: u64) -> AlertUpdate {
        self.incidents.event(
            AlertKind::SensorKeyChanged,
            &format!("sensor {sensor}"),
            why,
            at_ns,
        )
    }

    /// Makes the open incident the engine numbered `engine_id` continue
    /// the stored alert `stored_id` (the same incident, found again when
    /// the windows were rebuilt from stored flows): its later updates
    /// carry that id and are not openings.
    pub fn continue_alert(&mut self, engine_id: u64, stored_id: u64) {
        self.incidents.renumber(engine_id, stored_id);
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
                self.clocks.push(Clock::default());
                (self.sensors.len() - 1) as u32
            }
        }
    }

    /// Event time for expiry: the slowest clock of the sensors that sent
    /// a batch within `incident_timeout` of the latest arrival (0 before
    /// any record).
    fn now(&self) -> u64 {
        let live = self.cfg.incident_timeout_ns;
        self.clocks
            .iter()
            .filter(|c| c.watermark > 0 && c.arrived.saturating_add(live) >= self.arrived)
            .map(|c| c.watermark)
            .min()
            .unwrap_or(0)
    }

    /// Examines one record; returns whether it touches a protected asset.
    fn observe_one(&mut self, sensor: u32, f: &FlowRecord) -> bool {
        let c = &mut self.clocks[sensor as usize];
        c.watermark = c.watermark.max(f.last_seen_ns);
        let src_asset = self.cfg.asset_of(f.src_ip);
        let dst_asset = self.cfg.asset_of(f.dst_ip);
        if src_asset.is_none() && dst_asset.is_none() {
            return false;
        }
        let r = Record {
            f,
            ev: FlowRef {
                sensor,
                flow_id: f.flow_id,
                first_ns: f.first_seen_ns,
            },
            src_asset,
            dst_asset,
        };
        each_detector!(self, d => d.observe(&r, &mut self.cx));
        true
    }

    /// Ends a batch: every detector's findings, in the order of their
    /// marks; then, every 10 s of event time, the sweep of stale keys.
    fn finish(&mut self, now: u64) {
        each_detector!(self, d => d.finish(&mut self.cx, &mut self.findings));
        self.findings.sort_by_key(|(n, _)| *n);
        if now >= self.swept.saturating_add(SWEEP_NS) {
            each_detector!(self, d => d.sweep(now));
            self.cx.pairs.sweep(now, &self.cfg);
            self.swept = now;
        }
    }

    /// Runs the detectors over one sensor's records (in the order given)
    /// and returns the alerts opened or updated, each once. Liveness of
    /// sensors is judged in event time; the collector, which knows when a
    /// batch arrived, calls [`Engine::observe_batch`].
    pub fn observe(&mut self, sensor_id: &str, flows: &[FlowRecord]) -> Vec<AlertUpdate> {
        self.observe_batch(sensor_id, flows, None)
    }

    /// [`Engine::observe`] for a batch that arrived at `arrived_ns` (the
    /// collector's clock): a sensor counts as live while its batches keep
    /// arriving.
    pub fn observe_batch(
        &mut self,
        sensor_id: &str,
        flows: &[FlowRecord],
        arrived_ns: Option<u64>,
    ) -> Vec<AlertUpdate> {
        let sensor = self.sensor_index(sensor_id);
        self.stats.flows += flows.len() as u64;
        for f in flows {
            let c = &mut self.clocks[sensor as usize];
            if f.last_seen_ns.saturating_add(self.max_skew_ns) < c.watermark {
                // The sensor's clock stepped back (or an older capture is
                // replayed): its event time restarts here.
                c.watermark = f.last_seen_ns;
                self.stats.clock_steps += 1;
            }
            if self.observe_one(sensor, f) {
                self.stats.protected_flows += 1;
            }
        }
        let c = &mut self.clocks[sensor as usize];
        c.arrived = arrived_ns.unwrap_or(c.watermark);
        self.arrived = self.arrived.max(c.arrived);
        let now = self.now();
        self.finish(now);
        self.stats.state_evictions = self.cx.evictions;
        self.stats.findings += self.findings.len() as u64;
        let updates =
            self.incidents
                .apply(self.findings.drain(..).map(|(_, f)| f), &self.sensors, now);
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
