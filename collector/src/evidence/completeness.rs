//! Whether the sensors' figures over an alert's window are complete: what
//! each sensor lost around it (kernel drops, evicted flows, records
//! dropped at its hand-off or by its spool, batches missing, spools
//! replaced), from the counters its batches carried.
//!
//! A sensor's counters are cumulative (per sensor process, or over the
//! life of its spool for the spool's own) and travel with every batch:
//! the losses over the window are the differences between the batch
//! before the first that carried records of the window (the baseline) and
//! the last that did. They are the losses of the time those batches were
//! sent, which for a sensor streaming live is the time around the window;
//! for batches sent late (replayed from a spool) it is a later time, and
//! the figures are then bounds rather than exact.

use serde::{Deserialize, Serialize};
use vigil_proto::pb;
use vigil_proto::time::Rfc3339Nanos;

use crate::model::evidence::StoredBatch;
use crate::store::{EvidenceStore, SensorRegistry, StoreError};

/// A sensor that sent records up to this long before the window and none
/// in it counts as having stopped: its silence is a loss.
pub const SILENCE_NS: u64 = 10 * 60 * 1_000_000_000;

/// The completeness of every known sensor's figures over a window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Completeness {
    /// The window, RFC 3339.
    pub since: String,
    /// See `since`.
    pub until: String,
    /// True when no sensor reports a loss over the window.
    pub complete: bool,
    /// Per sensor.
    pub sensors: Vec<SensorWindow>,
}

/// One sensor over the window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SensorWindow {
    /// The sensor.
    pub sensor_id: String,
    /// Whether it sent records of the window at all.
    pub streaming: bool,
    /// Batches that carried records of the window.
    pub batches: u64,
    /// Of them, attested by the sensor's key.
    pub attested_batches: u64,
    /// Records in them.
    pub records: u64,
    /// Packets the sensor received over the window.
    pub packets: u64,
    /// Packets its kernel dropped before capture.
    pub kernel_drops: u64,
    /// Malformed frames (not losses: counted, their flows unknown).
    pub decode_errors: u64,
    /// Flows evicted from its full flow table.
    pub flows_evicted: u64,
    /// Records dropped at the hand-off to its exporter (a stalled disk).
    pub sink_drops: u64,
    /// Batches and records its spool dropped at its size bound.
    pub spool_dropped_batches: u64,
    /// See `spool_dropped_batches`.
    pub spool_dropped_records: u64,
    /// Spool records found damaged and skipped.
    pub spool_corrupt_records: u64,
    /// Batches missing between those stored.
    pub seq_gaps: u64,
    /// Times its spool was replaced (sequence numbers started again).
    pub seq_resets: u64,
    /// Collector arrival minus the latest record end of each batch, least
    /// and most, ns: the export delay plus the sensor clock's offset (a
    /// negative figure: the sensor's clock runs ahead).
    pub clock_lag_ns: Option<(i64, i64)>,
    /// The end of its last records before the window, when it sent none
    /// in it.
    pub last_records: Option<String>,
    /// True when none of the losses below happened.
    pub complete: bool,
    /// The losses, in words.
    pub losses: Vec<String>,
}

/// Run counters of a batch: packets, kernel drops, decode errors, evicted,
/// sink drops.
fn run_counters(s: &pb::SensorStats) -> [u64; 5] {
    [
        s.packets,
        s.kernel_drops,
        s.decode_errors.values().sum(),
        s.flows_evicted,
        s.channel_full_drops,
    ]
}

fn spool_counters(s: &pb::SensorStats) -> [u64; 3] {
    [
        s.spool_dropped_batches,
        s.spool_dropped_flows,
        s.spool_corrupt_records,
    ]
}

/// The completeness over `[since_ns, until_ns]` of every sensor the store
/// knows.
pub fn completeness<S: EvidenceStore + SensorRegistry + ?Sized>(
    store: &S,
    since_ns: u64,
    until_ns: u64,
) -> Result<Completeness, StoreError> {
    let log = store.batch_log(since_ns, until_ns)?;
    let mut sensors: Vec<SensorWindow> = Vec::new();
    let mut i = 0;
    while i < log.len() {
        let id = &log[i].key.sensor_id;
        let n = log[i..]
            .iter()
            .take_while(|b| &b.key.sensor_id == id)
            .count();
        sensors.push(window(&log[i..i + n], since_ns, until_ns));
        i += n;
    }
    // Sensors with no batch at all.
    for s in store.sensors()? {
        if !sensors.iter().any(|w| w.sensor_id == s.sensor_id) {
            sensors.push(SensorWindow {
                sensor_id: s.sensor_id,
                complete: true,
                ..SensorWindow::default()
            });
        }
    }
    sensors.sort_by(|a, b| a.sensor_id.cmp(&b.sensor_id));
    Ok(Completeness {
        since: Rfc3339Nanos(since_ns).to_string(),
        until: Rfc3339Nanos(until_ns).to_string(),
        complete: sensors.iter().all(|s| s.complete),
        sensors,
    })
}

/// One sensor's batches (baseline first) over the window.
fn window(batches: &[StoredBatch], since_ns: u64, until_ns: u64) -> SensorWindow {
    let meets = |b: &StoredBatch| b.size > 0 && b.last_ns >= since_ns && b.first_ns <= until_ns;
    let mut w = SensorWindow {
        sensor_id: batches[0].key.sensor_id.clone(),
        ..SensorWindow::default()
    };
    if !batches.iter().any(meets) {
        // Silent over the window: its last records before it.
        let last = batches.iter().map(|b| b.last_ns).max().unwrap_or(0);
        w.last_records = Some(Rfc3339Nanos(last).to_string());
        if last.saturating_add(SILENCE_NS) >= since_ns {
            w.losses.push(format!(
                "sent no records of the window, having sent records up to {} before it: \
                 it stopped streaming, or lost them",
                vigil_proto::units::human_ns(since_ns.saturating_sub(last))
            ));
        }
        w.complete = w.losses.is_empty();
        return w;
    }
    w.streaming = true;
    let mut prev: Option<&StoredBatch> = None;
    let mut run = [0u64; 5];
    let mut spool = [0u64; 3];
    for b in batches {
        let first_meeting = prev.is_none() && meets(b);
        if let Some(p) = prev {
            if p.key.incarnation == b.key.incarnation {
                w.seq_gaps += b.key.seq.saturating_sub(p.key.seq + 1);
            } else {
                w.seq_resets += 1;
            }
        }
        if meets(b) {
            w.batches += 1;
            w.records += b.size;
            w.attested_batches += u64::from(b.attestation.is_some());
            let lag = b.received_ns as i128 - b.last_ns as i128;
            let lag = lag.clamp(i64::MIN as i128, i64::MAX as i128) as i64;
            w.clock_lag_ns = Some(match w.clock_lag_ns {
                None => (lag, lag),
                Some((lo, hi)) => (lo.min(lag), hi.max(lag)),
            });
        }
        // Counter differences from the previous batch (its counters are
        // the baseline); with no batch before, the first one's counters
        // count whole (a bound: they may include losses from before).
        if let Some(s) = &b.stats {
            let ps = prev.and_then(|p| p.stats.as_ref());
            let same_run = ps.is_some_and(|p| p.run_id == s.run_id);
            let same_spool = prev.is_some_and(|p| p.key.incarnation == b.key.incarnation);
            let (r, sp) = (run_counters(s), spool_counters(s));
            let (pr, psp) = match ps {
                Some(p) => (run_counters(p), spool_counters(p)),
                None => ([0; 5], [0; 3]),
            };
            if prev.is_some() || first_meeting {
                for k in 0..5 {
                    run[k] += if same_run {
                        r[k].saturating_sub(pr[k])
                    } else {
                        r[k]
                    };
                }
                for k in 0..3 {
                    spool[k] += if same_spool && ps.is_some() {
                        sp[k].saturating_sub(psp[k])
                    } else {
                        sp[k]
                    };
                }
            }
        }
        prev = Some(b);
    }
    [
        w.packets,
        w.kernel_drops,
        w.decode_errors,
        w.flows_evicted,
        w.sink_drops,
    ] = run;
    [
        w.spool_dropped_batches,
        w.spool_dropped_records,
        w.spool_corrupt_records,
    ] = spool;
    let mut loss = |n: u64, what: &str| {
        if n > 0 {
            w.losses.push(format!("{n} {what}"));
        }
    };
    loss(
        w.kernel_drops,
        "packets dropped by the kernel before capture",
    );
    loss(w.flows_evicted, "flows evicted from the full flow table");
    loss(
        w.sink_drops,
        "records dropped at the hand-off to the exporter",
    );
    loss(
        w.spool_dropped_records,
        "records dropped by the spool at its size bound",
    );
    loss(
        w.spool_corrupt_records,
        "spool records found damaged and skipped",
    );
    loss(w.seq_gaps, "batches missing (sequence gaps)");
    loss(
        w.seq_resets,
        "spool replacements (sequence numbers started again)",
    );
    w.complete = w.losses.is_empty();
    w
}

impl Completeness {
    /// Lines for humans: one per sensor, with its losses.
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![if self.complete {
            format!(
                "complete: no sensor reports a loss from {} to {}",
                self.since, self.until
            )
        } else {
            format!(
                "INCOMPLETE: sensors report losses from {} to {}; figures are lower bounds",
                self.since, self.until
            )
        }];
        for s in &self.sensors {
            let state = if !s.streaming {
                match &s.last_records {
                    Some(t) => format!("sent no records of the window (last records end {t})"),
                    None => "has sent no records".into(),
                }
            } else {
                format!(
                    "{} batches ({} attested), {} records, {} packets received",
                    s.batches, s.attested_batches, s.records, s.packets
                )
            };
            out.push(format!("  {}: {state}", s.sensor_id));
            for l in &s.losses {
                out.push(format!("    loss: {l}"));
            }
        }
        out
    }
}
