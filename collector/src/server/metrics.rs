//! The collector's Prometheus metrics (`prometheus-client`, the Prometheus
//! project's Rust client), served as the Prometheus text format 0.0.4 on
//! `GET /metrics`.
//!
//! The collector's own counters live in a registry made at start; the
//! per-sensor figures (what each sensor reported in its stream, summed over
//! its runs) are read from the store at every scrape, so that they survive
//! collector restarts and agree with `vigil query --status`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::prometheus_text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use vigil_proto::pb;

use super::{CollectorError, Shared};
use crate::webhook::WebhookStats;

/// A label set of one label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Result_ {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Event {
    event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Service {
    service: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SensorLabel {
    sensor: String,
}

/// The collector's own counters.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    batches: Family<Result_, Counter>,
    /// Flow records committed.
    pub flows_stored: Counter,
    /// Open ingest streams.
    pub streams_active: Gauge,
    /// Ingest streams opened.
    pub streams_total: Counter,
    /// Ingest streams refused: `limits.max_streams` were open.
    pub streams_refused: Counter,
    /// Batches whose sensor attestation held.
    pub attested_batches: Counter,
    /// Batches whose attestation did not hold (stored unattested).
    pub attestation_failures: Counter,
    /// Batches refused: signed with another key than the sensor's known
    /// one, or unsigned once its key is known.
    pub key_refusals: Counter,
    /// Time to commit a group of batches.
    pub commit_seconds: Histogram,
    /// Flow records the detectors examined.
    pub detect_flows: Counter,
    /// Time the detectors spent.
    pub detect_seconds: Counter<f64, AtomicU64>,
    /// Times a sensor's records went back by more than max_clock_skew.
    pub detect_clock_steps: Counter,
    alerts: Family<Event, Counter>,
    refusals: Family<Service, Counter>,
}

/// What became of a batch.
#[derive(Clone, Copy, Debug)]
pub enum BatchResult {
    /// Committed.
    Stored,
    /// Stored before: dropped.
    Duplicate,
    /// Refused as invalid.
    Rejected,
    /// Not stored: the store failed, or another collector took over.
    Failed,
}

/// What happened to an alert.
#[derive(Clone, Copy, Debug)]
pub enum AlertEvent {
    /// Opened.
    Opened,
    /// Updated.
    Updated,
    /// Could not be stored.
    StoreFailed,
}

/// The services whose refusals are counted.
const SERVICES: [&str; 4] = ["ingest", "query", "alerts", "evidence"];

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let m = Metrics {
            batches: Family::default(),
            flows_stored: Counter::default(),
            streams_active: Gauge::default(),
            streams_total: Counter::default(),
            streams_refused: Counter::default(),
            attested_batches: Counter::default(),
            attestation_failures: Counter::default(),
            key_refusals: Counter::default(),
            // 1 ms to 33 s.
            commit_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            detect_flows: Counter::default(),
            detect_seconds: Counter::default(),
            detect_clock_steps: Counter::default(),
            alerts: Family::default(),
            refusals: Family::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "vigil_collector_batches",
            "Batches received, by result",
            m.batches.clone(),
        );
        r.register(
            "vigil_collector_flows_stored",
            "Flow records committed",
            m.flows_stored.clone(),
        );
        r.register(
            "vigil_collector_streams_active",
            "Open ingest streams",
            m.streams_active.clone(),
        );
        r.register(
            "vigil_collector_streams",
            "Ingest streams opened",
            m.streams_total.clone(),
        );
        r.register(
            "vigil_collector_streams_refused",
            "Ingest streams refused because limits.max_streams were open",
            m.streams_refused.clone(),
        );
        r.register(
            "vigil_collector_attested_batches",
            "Batches whose sensor attestation held",
            m.attested_batches.clone(),
        );
        r.register(
            "vigil_collector_attestation_failures",
            "Batches whose sensor attestation did not hold (stored unattested)",
            m.attestation_failures.clone(),
        );
        r.register(
            "vigil_collector_sensor_key_refusals",
            "Batches refused for a sensor attestation key other than the known one",
            m.key_refusals.clone(),
        );
        r.register(
            "vigil_collector_commit_seconds",
            "Time to commit a group of batches",
            m.commit_seconds.clone(),
        );
        r.register(
            "vigil_collector_detect_flows",
            "Flow records the detectors examined",
            m.detect_flows.clone(),
        );
        r.register(
            "vigil_collector_detect_seconds",
            "Time the detectors spent",
            m.detect_seconds.clone(),
        );
        r.register(
            "vigil_collector_detect_clock_steps",
            "Times a sensor's records went back by more than max_clock_skew (a clock set back, \
             an older capture replayed): its event-time clock restarted there",
            m.detect_clock_steps.clone(),
        );
        r.register(
            "vigil_collector_alerts",
            "Alert events, by event",
            m.alerts.clone(),
        );
        r.register(
            "vigil_collector_refusals",
            "Requests refused for their identity or role (bad or missing certificate, \
             a sensor id not its own, reading without an analyst's identity), by service",
            m.refusals.clone(),
        );
        // Every label value from the start, at zero: a rate over a series
        // that appears only with its first event is not seen rising.
        for result in ["stored", "duplicate", "rejected", "failed"] {
            let _ = m.batches.get_or_create(&Result_ { result });
        }
        for event in ["opened", "updated", "store_failed"] {
            let _ = m.alerts.get_or_create(&Event { event });
        }
        for service in SERVICES {
            let _ = m.refusals.get_or_create(&Service { service });
        }
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// Counts a batch by what became of it.
    pub fn batch(&self, r: BatchResult) {
        let result = match r {
            BatchResult::Stored => "stored",
            BatchResult::Duplicate => "duplicate",
            BatchResult::Rejected => "rejected",
            BatchResult::Failed => "failed",
        };
        self.batches.get_or_create(&Result_ { result }).inc();
    }

    /// Counts an alert event.
    pub fn alert(&self, e: AlertEvent) {
        let event = match e {
            AlertEvent::Opened => "opened",
            AlertEvent::Updated => "updated",
            AlertEvent::StoreFailed => "store_failed",
        };
        self.alerts.get_or_create(&Event { event }).inc();
    }

    /// Counts a request refused for its identity or role.
    pub fn refusal(&self, service: &'static str) {
        self.refusals.get_or_create(&Service { service }).inc();
    }

    /// Requests refused so far, all services.
    pub fn refusals(&self) -> u64 {
        SERVICES
            .iter()
            .map(|service| self.refusals.get_or_create(&Service { service }).get())
            .sum()
    }

    /// Alerts opened so far.
    pub fn alerts_opened(&self) -> u64 {
        self.alerts.get_or_create(&Event { event: "opened" }).get()
    }
}

/// One per-sensor metric: name (without `_total`), help, whether it is a
/// counter (else a gauge), and its value.
type SensorMetric = (
    &'static str,
    &'static str,
    bool,
    fn(&pb::SensorStatus) -> u64,
);

const SENSOR_METRICS: [SensorMetric; 14] = [
    (
        "vigil_collector_sensor_connected",
        "1 while a stream of the sensor is open",
        false,
        |s| u64::from(s.connected),
    ),
    (
        "vigil_collector_sensor_last_seq",
        "Highest committed batch sequence number",
        false,
        |s| s.last_seq,
    ),
    (
        "vigil_collector_sensor_flows",
        "Flow records stored",
        true,
        |s| s.flows,
    ),
    (
        "vigil_collector_sensor_seq_gaps",
        "Batch sequence numbers never received",
        true,
        |s| s.seq_gaps,
    ),
    (
        "vigil_collector_sensor_seq_resets",
        "Times the sensor's batch sequence numbers started again (a new spool incarnation)",
        true,
        |s| s.seq_resets,
    ),
    (
        "vigil_collector_sensor_id_conflicts",
        "Times two live streams of different spool incarnations claimed the sensor's id",
        true,
        |s| s.id_conflicts,
    ),
    (
        "vigil_collector_sensor_packets",
        "Packets the sensor captured",
        true,
        |s| s.stats.as_ref().map_or(0, |t| t.packets),
    ),
    (
        "vigil_collector_sensor_kernel_drops",
        "Packets the sensor's kernel dropped",
        true,
        |s| s.stats.as_ref().map_or(0, |t| t.kernel_drops),
    ),
    (
        "vigil_collector_sensor_decode_errors",
        "Malformed frames at the sensor",
        true,
        |s| {
            s.stats
                .as_ref()
                .map_or(0, |t| t.decode_errors.values().sum())
        },
    ),
    (
        "vigil_collector_sensor_app_flows",
        "Flows whose application protocol the sensor recognized",
        true,
        |s| s.stats.as_ref().map_or(0, |t| t.app_flows),
    ),
    (
        "vigil_collector_sensor_app_errors",
        "Application data the sensor could not read (malformed, reassembly gaps)",
        true,
        |s| s.stats.as_ref().map_or(0, |t| t.app_errors.values().sum()),
    ),
    (
        "vigil_collector_sensor_flows_evicted",
        "Flows evicted from the sensor's full table",
        true,
        |s| s.stats.as_ref().map_or(0, |t| t.flows_evicted),
    ),
    (
        "vigil_collector_sensor_spool_dropped_flows",
        "Flows the sensor's spool dropped at its bound",
        true,
        |s| s.stats.as_ref().map_or(0, |t| t.spool_dropped_flows),
    ),
    (
        "vigil_collector_sensor_spool_bytes",
        "Bytes in the sensor's spool",
        false,
        |s| s.stats.as_ref().map_or(0, |t| t.spool_bytes),
    ),
];

/// The per-sensor metrics of a status reply, in a registry of their own.
fn sensor_registry(sensors: &[pb::SensorStatus]) -> Registry {
    let mut r = Registry::default();
    for (name, help, counter, value) in SENSOR_METRICS {
        let label = |s: &pb::SensorStatus| SensorLabel {
            sensor: s.sensor_id.clone(),
        };
        if counter {
            let f = Family::<SensorLabel, Counter>::default();
            for s in sensors {
                f.get_or_create(&label(s)).inc_by(value(s));
            }
            r.register(name, help, f);
        } else {
            let f = Family::<SensorLabel, Gauge>::default();
            for s in sensors {
                let v = i64::try_from(value(s)).unwrap_or(i64::MAX);
                f.get_or_create(&label(s)).set(v);
            }
            r.register(name, help, f);
        }
    }
    r
}

/// The webhook's counters, in a registry of their own.
fn webhook_registry(w: &WebhookStats) -> Registry {
    use std::sync::atomic::Ordering;
    let mut r = Registry::default();
    let f = Family::<Result_, Counter>::default();
    for (result, v) in [
        ("sent", &w.sent),
        ("failed_attempt", &w.failed_attempts),
        ("dropped", &w.dropped),
    ] {
        f.get_or_create(&Result_ { result })
            .inc_by(v.load(Ordering::Relaxed));
    }
    r.register(
        "vigil_collector_webhook",
        "Webhook deliveries, by result",
        f,
    );
    r
}

/// A label set: partner and state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartnerState {
    partner: String,
    state: &'static str,
}

/// A label set: partner.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartnerLabel {
    partner: String,
}

/// The push to partners, from the share ledger (so that the figures
/// survive restarts and agree with `vigil share status`).
fn share_registry(status: &[crate::share::ledger::PartnerStatus]) -> Registry {
    let mut r = Registry::default();
    let objects = Family::<PartnerState, Gauge>::default();
    let failures = Family::<PartnerLabel, Counter>::default();
    let pending = Family::<PartnerLabel, Gauge>::default();
    let success = Family::<PartnerLabel, Gauge>::default();
    let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    for s in status {
        for (state, v) in [
            ("queued", s.queued),
            ("sent", s.sent),
            ("rejected", s.rejected),
            ("superseded", s.superseded),
        ] {
            objects
                .get_or_create(&PartnerState {
                    partner: s.partner.clone(),
                    state,
                })
                .set(gauge(v));
        }
        let l = PartnerLabel {
            partner: s.partner.clone(),
        };
        failures.get_or_create(&l).inc_by(s.failures);
        pending.get_or_create(&l).set(gauge(s.pending_alerts));
        if let Some(t) = s.last_success_ns {
            success.get_or_create(&l).set(gauge(t / 1_000_000_000));
        }
    }
    r.register(
        "vigil_collector_share_objects",
        "STIX objects for each partner, by state: queued, sent (taken by its TAXII server), rejected, superseded (replaced by a newer version before sent)",
        objects,
    );
    r.register(
        "vigil_collector_share_push_failures",
        "Pushes to the partner that failed (unreachable, refused, timed out)",
        failures,
    );
    r.register(
        "vigil_collector_share_pending_alerts",
        "Alerts held by the partner's delay or waiting to become objects",
        pending,
    );
    r.register(
        "vigil_collector_share_last_success_timestamp_seconds",
        "When the partner last took a push",
        success,
    );
    r
}

/// The text exposition: the collector's counters, the webhook's, the push
/// to partners', and each sensor's (when the store answers).
pub async fn render(shared: Arc<Shared>) -> String {
    let mut out = String::new();
    let _ = encode(&mut out, &shared.metrics.registry);
    if let Some(w) = &shared.webhook {
        let _ = encode(&mut out, &webhook_registry(&w.stats));
    }
    if shared.share.is_some() {
        let names = shared
            .share_config
            .as_ref()
            .map(|s| s.pushed())
            .unwrap_or_default();
        let dir = shared.data_dir.clone();
        let status = tokio::task::spawn_blocking(move || {
            crate::share::ledger::Ledger::open(&dir).and_then(|l| l.status(&names))
        })
        .await;
        match status {
            Ok(Ok(s)) => {
                let _ = encode(&mut out, &share_registry(&s));
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "reading the share ledger for /metrics"),
            Err(e) => tracing::warn!(error = %e, "reading the share ledger for /metrics"),
        }
    }
    match super::query::status_reply(&shared).await {
        Ok(reply) => {
            let _ = encode(&mut out, &sensor_registry(&reply.sensors));
        }
        Err(f) => f.log("reading sensors for /metrics", "metrics"),
    }
    out
}

/// Serves `GET /metrics` on `addr`; returns the bound address.
pub async fn serve(addr: SocketAddr, shared: Arc<Shared>) -> Result<SocketAddr, CollectorError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| CollectorError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| CollectorError::Bind { addr, source })?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let shared = shared.clone();
            async move {
                (
                    [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
                    render(shared).await,
                )
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    });
    Ok(bound)
}
