//! Query answers as JSON: one shape for each, printed by `vigil query
//! --format jsonl` a line at a time and served by the collector's HTTP API
//! (`/api/v1/…`) inside its replies, so that both give the same answer.

use serde_json::{Value, json};
use vigil_proto::FlowRecord;
use vigil_proto::time::Rfc3339Nanos;

use crate::model::ingest::SensorRecord;
use crate::model::query::{SeriesPoint, TopRow, Totals};

/// `{"flows", "packets", "bytes"}`.
pub fn totals(t: &Totals) -> Value {
    json!({"flows": t.flows, "packets": t.packets, "bytes": t.bytes})
}

/// A top-N row: `{"key", "flows", "packets", "bytes"}`.
pub fn top_row(r: &TopRow) -> Value {
    json!({
        "key": r.key,
        "flows": r.totals.flows,
        "packets": r.totals.packets,
        "bytes": r.totals.bytes,
    })
}

/// A series point: its interval's start (RFC 3339 and ns) and totals.
pub fn series_point(p: &SeriesPoint) -> Value {
    json!({
        "start": Rfc3339Nanos(p.start_ns).to_string(),
        "start_ns": p.start_ns,
        "flows": p.totals.flows,
        "packets": p.totals.packets,
        "bytes": p.totals.bytes,
    })
}

/// A stored flow: the record as `vigil flows` writes it (its JSON
/// contract), with the id of the sensor that sent it.
pub fn stored_flow(sensor_id: &str, r: &FlowRecord) -> Value {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("sensor_id".into(), Value::String(sensor_id.to_string()));
    }
    v
}

/// A sensor as the store knows it: its sequence and loss counters and the
/// counters it reported (`vigil query --status`).
pub fn sensor(s: &SensorRecord) -> Value {
    let st = &s.stats;
    let sorted = |m: &std::collections::HashMap<String, u64>| {
        m.iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    json!({
        "sensor_id": s.sensor_id,
        "last_seq": s.last_seq,
        "batches": s.batches,
        "flows": s.flows,
        "duplicates": s.duplicates,
        "seq_gaps": s.seq_gaps,
        "incarnation": format!("{:016x}", s.incarnation),
        "seq_resets": s.seq_resets,
        "id_conflicts": s.id_conflicts,
        "last_seen": Rfc3339Nanos(s.last_seen_ns).to_string(),
        "last_seen_ns": s.last_seen_ns,
        "packets": st.packets,
        "kernel_drops": st.kernel_drops,
        "decode_errors": st.decode_errors.values().sum::<u64>(),
        "decode_errors_by_reason": sorted(&st.decode_errors),
        "flows_evicted": st.flows_evicted,
        "spool_bytes": st.spool_bytes,
        "spool_dropped_batches": st.spool_dropped_batches,
        "spool_dropped_flows": st.spool_dropped_flows,
        "channel_full_drops": st.channel_full_drops,
        "app_flows": st.app_flows,
        "app_payloads": st.app_payloads,
        "app_errors": sorted(&st.app_errors),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_name_their_fields() {
        let t = Totals {
            flows: 1,
            packets: 2,
            bytes: 3,
        };
        assert_eq!(
            totals(&t).to_string(),
            r#"{"bytes":3,"flows":1,"packets":2}"#
        );
        let p = series_point(&SeriesPoint {
            start_ns: 60_000_000_000,
            totals: t,
        });
        assert_eq!(p["start"], "1970-01-01T00:01:00.000000000Z");
        assert_eq!(p["start_ns"], 60_000_000_000u64);
        let r = top_row(&TopRow {
            key: "10.0.0.1".into(),
            totals: t,
        });
        assert_eq!(r["key"], "10.0.0.1");
        let mut s = SensorRecord {
            sensor_id: "s1".into(),
            incarnation: 0xab,
            ..SensorRecord::default()
        };
        s.stats.decode_errors.insert("truncated".into(), 4);
        s.stats.decode_errors.insert("bad_ip".into(), 1);
        let v = sensor(&s);
        assert_eq!(v["incarnation"], "00000000000000ab");
        assert_eq!(v["decode_errors"], 5);
        assert_eq!(v["decode_errors_by_reason"]["truncated"], 4);
    }
}
