//! The push to partners: a thread that turns qualifying alert updates into
//! STIX objects in the ledger's outbox and sends them to each partner's
//! TAXII 2.1 collection, retrying with backoff.
//!
//! Every step is durable: an update marks the alert pending (with the
//! partner's delay); a due alert becomes objects queued once per version;
//! an object leaves the queue only when the partner's status resource
//! says it took (or refused) it. So a partner down for days, or a
//! collector restarted meanwhile, loses nothing, and nothing is sent
//! twice. Alerts opened while the collector was down (above the
//! partner's watermark, the highest alert id seen) are caught up at start.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_proto::{FlowRecord, pb};

use super::config::{Partner, ShareConfig};
use super::ledger::{Ledger, LedgerError};
use super::stix::{self, AlertInput, BundleRef, Context};
use super::taxii::{Collection, Outcome, TaxiiError};
use crate::store::Store;

/// Objects per envelope (halved while the server says it is too large).
const BATCH: usize = 200;

/// How long the ledger remembers objects it is done with (but those whose
/// ids recur: see [`Ledger::prune`]).
const LEDGER_KEEP: Duration = Duration::from_secs(30 * 86_400);

/// How often it forgets them.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Evidence flows read per alert to describe its conversations.
const MAX_FLOWS: usize = 10_000;

/// An alert that was opened or updated.
#[derive(Clone, Debug)]
pub struct Update {
    /// Its id.
    pub id: u64,
    /// Kind, severity and asset, for the partners' policies.
    pub kind: crate::model::alert::AlertKind,
    /// Severity.
    pub severity: crate::model::alert::Severity,
    /// Asset.
    pub asset: String,
}

/// What the thread needs.
#[derive(Debug)]
pub struct Pusher {
    /// The policy.
    pub config: Arc<ShareConfig>,
    /// Where alerts and flows are read.
    pub store: Arc<dyn Store>,
    /// The collector's data directory (the ledger's).
    pub data_dir: PathBuf,
    /// The collector's key fingerprint (the objects' ids derive from it).
    pub collector: String,
}

struct PartnerState {
    collection: Option<Collection>,
    next_try: Instant,
    backoff: Duration,
    batch: usize,
}

/// The version that tells one object's revisions apart: `modified`, or
/// `created` for objects without versions (marking definitions).
fn version(o: &Value) -> String {
    o["modified"]
        .as_str()
        .or(o["created"].as_str())
        .unwrap_or("")
        .to_string()
}

fn now_ns() -> u64 {
    vigil_proto::time::now_ns()
}

impl Pusher {
    /// Runs until `updates` is closed (the collector stops).
    pub fn run(self, updates: Receiver<Update>) {
        let mut ledger = match Ledger::open(&self.data_dir) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "sharing with partners is off: the share ledger cannot be opened");
                return;
            }
        };
        let pushing: Vec<&Partner> = self
            .config
            .partners
            .iter()
            .filter(|p| p.api_root.is_some())
            .collect();
        let mut state: HashMap<String, PartnerState> = HashMap::new();
        for p in &pushing {
            let collection = match Collection::new(p, self.config.timeout) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::error!(partner = %p.name, error = %e, "cannot reach this partner: its objects stay queued");
                    None
                }
            };
            state.insert(
                p.name.clone(),
                PartnerState {
                    collection,
                    next_try: Instant::now(),
                    backoff: Duration::ZERO,
                    batch: BATCH,
                },
            );
        }
        if let Err(e) = self.catch_up(&ledger, &pushing) {
            tracing::error!(error = %e, "catching up on alerts raised while sharing was down");
        }
        let mut pruned = Instant::now();
        loop {
            if pruned.elapsed() >= PRUNE_EVERY {
                pruned = Instant::now();
                let before = now_ns().saturating_sub(LEDGER_KEEP.as_nanos() as u64);
                match ledger.prune(before) {
                    Ok(n) if n > 0 => tracing::info!(rows = n, "share ledger pruned"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "pruning the share ledger"),
                }
            }
            match updates.recv_timeout(Duration::from_millis(250)) {
                Ok(u) => {
                    let mut batch = vec![u];
                    batch.extend(updates.try_iter());
                    for u in &batch {
                        if let Err(e) = self.mark(&ledger, &pushing, u) {
                            tracing::error!(alert = u.id, error = %e, "recording an alert to share");
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if let Err(e) = self.build_due(&mut ledger) {
                tracing::error!(error = %e, "queueing alerts for partners");
            }
            for p in &pushing {
                if let Some(st) = state.get_mut(&p.name)
                    && Instant::now() >= st.next_try
                    && let Err(e) = self.push(&mut ledger, p, st)
                {
                    tracing::error!(partner = %p.name, error = %e, "the share ledger failed");
                }
            }
        }
    }

    fn mark(&self, ledger: &Ledger, pushing: &[&Partner], u: &Update) -> Result<(), LedgerError> {
        for p in pushing {
            if p.wants(u.kind, u.severity, &u.asset) {
                ledger.mark_pending(
                    &p.name,
                    u.id,
                    now_ns(),
                    p.delay.as_nanos() as u64,
                    self.config.update_interval.as_nanos() as u64,
                )?;
            }
            ledger.set_watermark(&p.name, u.id)?;
        }
        Ok(())
    }

    /// Alerts above each partner's watermark (opened while the collector
    /// was down, or between a store write and its record here) are marked;
    /// a partner without one starts at the newest alert (no history).
    fn catch_up(&self, ledger: &Ledger, pushing: &[&Partner]) -> Result<(), String> {
        let newest = self.store.max_alert_id().map_err(|e| e.to_string())?;
        for p in pushing {
            match ledger.watermark(&p.name).map_err(|e| e.to_string())? {
                None => ledger
                    .set_watermark(&p.name, newest)
                    .map_err(|e| e.to_string())?,
                Some(w) => {
                    for id in w.saturating_add(1)..=newest {
                        let Some(a) = self.store.alert(id).map_err(|e| e.to_string())? else {
                            continue;
                        };
                        let u = Update {
                            id,
                            kind: a.kind,
                            severity: a.severity,
                            asset: a.asset.clone(),
                        };
                        self.mark(ledger, &[p], &u).map_err(|e| e.to_string())?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Turns due alerts into queued objects.
    fn build_due(&self, ledger: &mut Ledger) -> Result<(), LedgerError> {
        type Material = Option<(crate::model::alert::Alert, Vec<FlowRecord>)>;
        let mut cache: HashMap<u64, Material> = HashMap::new();
        for (name, id) in ledger.due(now_ns())? {
            let Some(p) = self.config.partner(&name) else {
                // No longer configured: nothing to share with it.
                ledger.drop_pending(&name, id)?;
                continue;
            };
            // Read once per round, whatever the number of partners.
            let material = match cache.get(&id) {
                Some(m) => Ok(m.clone()),
                None => super::alert_with_flows(self.store.as_ref(), id, MAX_FLOWS).inspect(|m| {
                    cache.insert(id, m.clone());
                }),
            };
            let (alert, flows) = match material {
                Ok(Some(m)) => m,
                Ok(None) => {
                    ledger.drop_pending(&name, id)?;
                    continue;
                }
                Err(e) => {
                    // Stays pending: tried again next round.
                    tracing::warn!(alert = id, error = %e, "reading an alert to share");
                    continue;
                }
            };
            if !p.wants(alert.kind, alert.severity, &alert.asset) {
                ledger.drop_pending(&name, id)?;
                continue;
            }
            let bundle = match &p.anonymize {
                Some(_) => ledger.latest_export(id, &p.name)?.map(|sha256| BundleRef {
                    sha256,
                    anonymized: true,
                }),
                None => ledger.latest_export(id, "")?.map(|sha256| BundleRef {
                    sha256,
                    anonymized: false,
                }),
            };
            let cx = Context {
                operator: &self.config.operator,
                collector: &self.collector,
                partner: Some(&p.name),
                tlp: p.tlp,
                max_observations: p.max_observations,
                anonymize: p.anonymize.as_ref(),
                ours: Some(&self.config.ours),
            };
            let pa = pb::Alert::from(&alert);
            let mut objects = cx.common();
            objects.extend(stix::alert_objects(
                &cx,
                AlertInput {
                    alert: &pa,
                    flows: &flows,
                    bundle: bundle.as_ref(),
                },
            ));
            // The extension's definition is not pushed: OASIS's reference
            // TAXII server (medallion 3.0) takes its `version` property for
            // a timestamp and then fails every read of the collection.
            // Exported bundles carry it.
            let rows: Vec<(String, String, String)> = objects
                .iter()
                .filter(|o| o["type"] != "extension-definition")
                .map(|o| {
                    (
                        o["id"].as_str().unwrap_or("").to_string(),
                        version(o),
                        o.to_string(),
                    )
                })
                .collect();
            let new = ledger.enqueue(&name, id, &rows, now_ns())?;
            tracing::debug!(partner = %name, alert = id, new, "alert queued for the partner");
        }
        Ok(())
    }

    /// Sends one envelope of `p`'s queue, if any.
    fn push(
        &self,
        ledger: &mut Ledger,
        p: &Partner,
        st: &mut PartnerState,
    ) -> Result<(), LedgerError> {
        let Some(coll) = &st.collection else {
            return Ok(());
        };
        let queued = ledger.queued(&p.name, st.batch)?;
        if queued.is_empty() {
            return Ok(());
        }
        let objects: Vec<(&str, &str, &str)> = queued
            .iter()
            .map(|q| (q.object_id.as_str(), q.version.as_str(), q.body.as_str()))
            .collect();
        match coll.add(&objects) {
            Ok(outcomes) => {
                let rows: Vec<(i64, Option<String>)> = queued
                    .iter()
                    .zip(&outcomes)
                    .map(|(q, o)| match o {
                        Outcome::Taken => (q.seq, None),
                        Outcome::Refused(m) => {
                            tracing::warn!(partner = %p.name, object = %q.object_id, version = %q.version, message = %m, "the partner refused an object");
                            (q.seq, Some(m.clone()))
                        }
                    })
                    .collect();
                ledger.delivered(&p.name, &rows, now_ns())?;
                if st.backoff > Duration::ZERO {
                    tracing::info!(partner = %p.name, "the partner takes objects again");
                }
                st.backoff = Duration::ZERO;
                st.next_try = Instant::now();
            }
            Err(TaxiiError::TooLarge { .. }) if st.batch > 1 => {
                st.batch /= 2;
            }
            Err(e) => {
                ledger.failed(&p.name, &e.to_string(), now_ns())?;
                st.backoff = (st.backoff * 2)
                    .max(Duration::from_secs(1))
                    .min(self.config.max_backoff);
                st.next_try = Instant::now() + st.backoff;
                tracing::warn!(partner = %p.name, error = %e, retry_in = ?st.backoff, queued = queued.len(), "pushing to the partner failed; its objects stay queued");
            }
        }
        Ok(())
    }
}
