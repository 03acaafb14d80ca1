//! The sensor's Prometheus metrics (`vigil sensor --metrics-listen`), in
//! the Prometheus text format 0.0.4 on `GET /metrics`.
//!
//! Every figure is read at the scrape from what the pipeline and the
//! exporter already count ([`LiveCounters`], [`ExportMonitor`]): the
//! endpoint adds nothing to the hot path. Every label value is present
//! from the start, at zero, so that a rate over it is seen rising from
//! its first event.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;
use prometheus_client::encoding::prometheus_text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use thiserror::Error;

use crate::app::AppError;
use crate::decode::DecodeError;
use crate::export::grpc::ExportMonitor;
use crate::run::LiveCounters;

/// The endpoint could not start.
#[derive(Debug, Error)]
#[error("sensor.metrics_listen = \"{addr}\": cannot listen: {source}")]
pub struct MetricsError {
    /// The address asked for.
    pub addr: SocketAddr,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// What the endpoint reads.
#[derive(Clone, Debug)]
pub struct SensorMetrics {
    /// This sensor's id (empty without a collector).
    pub sensor_id: String,
    /// The capture source: the interface, or `file` for capture files.
    pub source: String,
    /// The pipeline's counters.
    pub live: Arc<LiveCounters>,
    /// The exporter, when flows go to a collector.
    pub export: Option<ExportMonitor>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Source {
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Drop {
    stage: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Result_ {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Info {
    sensor: String,
    source: String,
    collector: String,
    version: &'static str,
}

/// The upper bounds of the ack latency buckets, seconds: 1 ms to 32 s.
const ACK_BUCKETS: [f64; 16] = [
    0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096,
    8.192, 16.384, 32.768,
];

/// An HDR histogram of microseconds shown as a Prometheus histogram of
/// seconds over [`ACK_BUCKETS`].
#[derive(Debug)]
struct Latency(Histogram<u64>);

impl TypedMetric for Latency {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Latency {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let h = &self.0;
        let mut buckets = Vec::with_capacity(ACK_BUCKETS.len() + 1);
        let mut below = 0u64;
        for le in ACK_BUCKETS {
            let us = (le * 1e6) as u64;
            let upto = if h.is_empty() {
                0
            } else {
                h.count_between(0, us)
            };
            buckets.push((le, upto.saturating_sub(below)));
            below = below.max(upto);
        }
        buckets.push((f64::INFINITY, h.len().saturating_sub(below)));
        let sum = h.mean() * h.len() as f64 / 1e6;
        encoder.encode_histogram::<NoLabelSet>(sum, h.len(), &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

fn counter(v: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(v);
    c
}

fn gauge(v: u64) -> Gauge {
    let g = Gauge::default();
    g.set(i64::try_from(v).unwrap_or(i64::MAX));
    g
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

impl SensorMetrics {
    /// The text exposition now.
    pub fn render(&self) -> String {
        let mut r = Registry::with_prefix("vigil_sensor");
        let l = &self.live;
        let info = Family::<Info, Gauge>::default();
        info.get_or_create(&Info {
            sensor: self.sensor_id.clone(),
            source: self.source.clone(),
            collector: self
                .export
                .as_ref()
                .map(|e| e.collector().to_string())
                .unwrap_or_default(),
            version: env!("CARGO_PKG_VERSION"),
        })
        .set(1);
        r.register(
            "info",
            "The sensor: its id, capture source, collector and version",
            info,
        );
        let per_source = |v: u64| {
            let f = Family::<Source, Counter>::default();
            f.get_or_create(&Source {
                source: self.source.clone(),
            })
            .inc_by(v);
            f
        };
        r.register(
            "packets",
            "Frames captured, by source",
            per_source(load(&l.packets)),
        );
        r.register(
            "bytes",
            "Frame bytes on the wire captured, by source",
            per_source(load(&l.bytes)),
        );
        r.register(
            "kernel_packets",
            "Packets the kernel handed to the capture ring (AF_PACKET; drops included), by source",
            per_source(load(&l.kernel_packets)),
        );
        r.register(
            "kernel_drops",
            "Packets the kernel dropped because the capture ring was full, by source",
            per_source(load(&l.kernel_drops)),
        );
        r.register(
            "non_ip_packets",
            "Frames without IP (ARP, LLDP, ...): counted, not tracked",
            counter(load(&l.non_ip)),
        );
        let decode = Family::<Reason, Counter>::default();
        for (e, a) in DecodeError::ALL.iter().zip(&l.decode_errors) {
            decode
                .get_or_create(&Reason { reason: e.as_str() })
                .inc_by(load(a));
        }
        r.register("decode_errors", "Malformed frames, by reason", decode);
        let app = Family::<Reason, Counter>::default();
        for (e, a) in AppError::ALL.iter().zip(&l.app_errors) {
            app.get_or_create(&Reason { reason: e.as_str() })
                .inc_by(load(a));
        }
        r.register(
            "app_errors",
            "Application data that could not be read, by reason",
            app,
        );
        r.register(
            "app_flows",
            "Flows whose application protocol was recognized",
            counter(load(&l.app_flows)),
        );
        r.register(
            "active_flows",
            "Flows the flow tables hold now",
            gauge(load(&l.active_flows)),
        );
        r.register(
            "flows_evicted",
            "Flows ended early because a flow table was full (their records are sent)",
            counter(load(&l.evicted)),
        );
        r.register(
            "records",
            "Flow records exported (handed to the spool or the JSON output)",
            counter(load(&l.records)),
        );
        let spool = self.export.as_ref().map(ExportMonitor::spool_stats);
        let dropped_packets = Family::<Drop, Counter>::default();
        dropped_packets
            .get_or_create(&Drop {
                stage: "kernel",
                reason: "ring_full",
            })
            .inc_by(load(&l.kernel_drops));
        r.register(
            "dropped_packets",
            "Packets lost before decoding, by stage and reason",
            dropped_packets,
        );
        let dropped_flows = Family::<Drop, Counter>::default();
        for (stage, reason, v) in [
            ("handoff", "sink_behind", load(&l.handoff_drops)),
            (
                "spool",
                "size_bound",
                spool.as_ref().map_or(0, |s| s.dropped_flows),
            ),
        ] {
            dropped_flows
                .get_or_create(&Drop { stage, reason })
                .inc_by(v);
        }
        r.register(
            "dropped_flows",
            "Flow records lost, by stage and reason: the hand-off to the exporter (live capture whose \
             exporter fell behind) or the spool's size bound",
            dropped_flows,
        );
        if let Some(e) = &self.export {
            self.register_export(&mut r, e, spool.unwrap_or_default());
        }
        let mut out = String::new();
        let _ = encode(&mut out, &r);
        out
    }

    fn register_export(
        &self,
        r: &mut Registry,
        e: &ExportMonitor,
        spool: crate::export::spool::SpoolStats,
    ) {
        let c = e.counters();
        let dropped = Family::<Drop, Counter>::default();
        for (stage, reason, v) in [
            ("spool", "size_bound", spool.dropped_batches),
            ("spool", "corrupt", spool.corrupt_records),
            ("collector", "rejected", load(&c.rejected)),
        ] {
            dropped.get_or_create(&Drop { stage, reason }).inc_by(v);
        }
        r.register(
            "dropped_batches",
            "Batches lost, by stage and reason: the spool's size bound, records found damaged \
             in the spool at start, batches the collector rejected as invalid",
            dropped,
        );
        let batches = Family::<Result_, Counter>::default();
        for (result, v) in [
            ("spooled", load(&c.batches)),
            ("acked", load(&c.acked)),
            ("duplicate", load(&c.duplicates)),
        ] {
            batches.get_or_create(&Result_ { result }).inc_by(v);
        }
        r.register(
            "batches",
            "Batches spooled, acknowledged by the collector, and of those acknowledged as \
             duplicates (resent after a lost acknowledgement)",
            batches,
        );
        r.register("spool_bytes", "Bytes in the spool", gauge(spool.bytes));
        r.register(
            "spool_batches",
            "Batches in the spool not yet acknowledged",
            gauge(e.pending_batches()),
        );
        r.register(
            "ack_latency_seconds",
            "Time from sending a batch to the collector's acknowledgement",
            Latency(e.ack_latency_us()),
        );
        r.register(
            "collector_connected",
            "1 while a stream to the collector is open",
            gauge(u64::from(c.connected.load(Ordering::Relaxed))),
        );
        r.register(
            "collector_refused",
            "1 while the collector refuses this sensor's identity (batches wait in the spool)",
            gauge(u64::from(e.refused().is_some())),
        );
        r.register(
            "collector_connects",
            "Streams to the collector opened",
            counter(load(&c.connects)),
        );
        r.register(
            "collector_refusals",
            "Times the collector refused this sensor's identity",
            counter(load(&c.refusals)),
        );
        r.register(
            "seq_resets",
            "Times the collector said this sensor id's sequence numbers started again \
             (a new spool, or another host using the id)",
            counter(load(&c.seq_resets)),
        );
    }

    /// Serves `GET /metrics` on `addr` on the current tokio runtime;
    /// returns the bound address.
    pub async fn serve(self, addr: SocketAddr) -> Result<SocketAddr, MetricsError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| MetricsError { addr, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| MetricsError { addr, source })?;
        let me = Arc::new(self);
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let me = me.clone();
                async move {
                    (
                        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
                        me.render(),
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn figures_come_from_the_counters() {
        let live = Arc::new(LiveCounters::default());
        live.packets.store(10, Ordering::Relaxed);
        live.bytes.store(1500, Ordering::Relaxed);
        live.kernel_drops.store(3, Ordering::Relaxed);
        live.active_flows.store(7, Ordering::Relaxed);
        live.handoff_drops.store(2, Ordering::Relaxed);
        live.decode_errors[0].store(4, Ordering::Relaxed);
        let m = SensorMetrics {
            sensor_id: "s1".into(),
            source: "eth0".into(),
            live,
            export: None,
        };
        let t = m.render();
        assert_eq!(
            value(&t, "vigil_sensor_packets_total{source=\"eth0\"}"),
            Some(10.0)
        );
        assert_eq!(
            value(&t, "vigil_sensor_bytes_total{source=\"eth0\"}"),
            Some(1500.0)
        );
        assert_eq!(value(&t, "vigil_sensor_active_flows"), Some(7.0));
        assert_eq!(
            value(
                &t,
                "vigil_sensor_dropped_packets_total{stage=\"kernel\",reason=\"ring_full\"}"
            ),
            Some(3.0)
        );
        assert_eq!(
            value(
                &t,
                "vigil_sensor_dropped_flows_total{stage=\"handoff\",reason=\"sink_behind\"}"
            ),
            Some(2.0)
        );
        let first = DecodeError::ALL[0].as_str();
        assert_eq!(
            value(
                &t,
                &format!("vigil_sensor_decode_errors_total{{reason=\"{first}\"}}")
            ),
            Some(4.0)
        );
        // Every reason from the start, at zero.
        for e in DecodeError::ALL {
            assert!(t.contains(&format!("reason=\"{}\"", e.as_str())), "{e:?}");
        }
        assert!(t.ends_with("# EOF\n") || t.ends_with('\n'));
    }

    #[test]
    fn latency_buckets_are_cumulative_and_end_at_the_count() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        for us in [500, 1_500, 3_000, 3_000, 40_000_000] {
            h.record(us).unwrap();
        }
        let mut r = Registry::default();
        r.register("lat_seconds", "x", Latency(h));
        let mut t = String::new();
        encode(&mut t, &r).unwrap();
        assert_eq!(value(&t, "lat_seconds_bucket{le=\"0.001\"}"), Some(1.0));
        assert_eq!(value(&t, "lat_seconds_bucket{le=\"0.002\"}"), Some(2.0));
        assert_eq!(value(&t, "lat_seconds_bucket{le=\"0.004\"}"), Some(4.0));
        assert_eq!(value(&t, "lat_seconds_bucket{le=\"32.768\"}"), Some(4.0));
        assert_eq!(value(&t, "lat_seconds_bucket{le=\"+Inf\"}"), Some(5.0));
        assert_eq!(value(&t, "lat_seconds_count"), Some(5.0));
        let sum = value(&t, "lat_seconds_sum").unwrap();
        assert!((sum - 40.008).abs() < 0.05, "{sum}");
    }
}
