//! The detection thread: runs the engine over committed batches, stores
//! the alerts it opens or updates, and hands them to subscribers and the
//! webhook.

use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::Instant;

use vigil_proto::pb;

use super::Shared;
use super::failure::Failure;
use super::metrics::AlertEvent;
use super::writer::Committed;
use crate::detect::Engine;

/// Runs until the writer is gone.
pub fn run(shared: Arc<Shared>, mut engine: Engine, rx: Receiver<Committed>) {
    let m = &shared.metrics;
    while let Ok(c) = rx.recv() {
        let t0 = Instant::now();
        let steps = engine.stats.clock_steps;
        let (sensor, flows, updates) = match c {
            Committed::Flows(sensor, flows, arrived) => {
                let u = engine.observe_batch(&sensor, &flows, Some(arrived));
                (sensor, flows, u)
            }
            Committed::KeyChanged(sensor, why, at) => {
                let u = vec![engine.sensor_key_changed(&sensor, why, at)];
                (sensor, Vec::new(), u)
            }
        };
        if engine.stats.clock_steps > steps {
            m.detect_clock_steps
                .inc_by(engine.stats.clock_steps - steps);
            tracing::warn!(
                %sensor,
                "the sensor's records went back by more than max_clock_skew (its clock was set \
                 back, or an older capture is replayed): its event time restarts there"
            );
        }
        m.detect_seconds.inc_by(t0.elapsed().as_secs_f64());
        if !updates.is_empty() {
            if let Err(e) = shared.store.put_alerts(&updates) {
                m.alert(AlertEvent::StoreFailed);
                Failure::from(&e).log("storing alerts failed", &sensor);
            }
            for u in updates {
                if u.opened {
                    m.alert(AlertEvent::Opened);
                    tracing::warn!(
                        id = u.alert.id,
                        kind = u.alert.kind.as_str(),
                        severity = u.alert.severity.as_str(),
                        asset = %u.alert.asset,
                        "{}",
                        u.alert.summary
                    );
                } else {
                    m.alert(AlertEvent::Updated);
                }
                let mut p = pb::Alert::from(&u.alert);
                p.opened = u.opened;
                // No subscriber is not an error.
                let _ = shared.alerts.send(p);
                if let Some(s) = &shared.share {
                    // The pusher stops only with the collector.
                    let _ = s.send(crate::share::push::Update {
                        id: u.alert.id,
                        kind: u.alert.kind,
                        severity: u.alert.severity,
                        asset: u.alert.asset.clone(),
                    });
                }
                if let Some(w) = &shared.webhook {
                    w.send(u);
                }
            }
        }
        // Counted once the batch's alerts are stored and sent, so that a
        // reader who sees the count also finds those alerts.
        m.detect_flows.inc_by(flows.len() as u64);
    }
}
