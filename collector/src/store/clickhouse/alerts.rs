//! Alerts (`ReplacingMergeTree` by version: each alert's latest state, as
//! JSON), their evidence references, and the evidence flows read back by
//! them, from `flows` or from the copies retention kept.

use std::fmt::Write as _;

use vigil_proto::FlowRecord;

use super::wire::put_str;
use super::{ClickHouseStore, Reader, lit};
use crate::model::alert::{Alert, AlertQuery, AlertUpdate, EvidenceRef};
use crate::store::plan::{self, Value};
use crate::store::{AlertStore, EvidenceStore as _, StoreError, alert_body};

impl AlertStore for ClickHouseStore {
    fn put_alerts(&self, updates: &[AlertUpdate]) -> Result<(), StoreError> {
        if updates.is_empty() {
            return Ok(());
        }
        let (mut rows, mut ev) = (Vec::new(), Vec::new());
        let version = vigil_proto::time::now_ns();
        for u in updates {
            let a = &u.alert;
            let json = alert_body(a)?;
            rows.extend_from_slice(&a.id.to_le_bytes());
            put_str(&mut rows, a.kind.as_str().as_bytes());
            rows.push(a.severity as u8);
            put_str(&mut rows, a.asset.as_bytes());
            rows.extend_from_slice(&a.first_seen_ns.to_le_bytes());
            rows.extend_from_slice(&a.last_seen_ns.to_le_bytes());
            rows.extend_from_slice(&version.to_le_bytes());
            put_str(&mut rows, json.as_bytes());
            for e in &a.evidence {
                ev.extend_from_slice(&a.id.to_le_bytes());
                put_str(&mut ev, e.sensor_id.as_bytes());
                ev.extend_from_slice(&e.flow_id.to_le_bytes());
                ev.extend_from_slice(&e.first_ns.to_le_bytes());
            }
        }
        // The evidence first: an alert is never listed before it.
        self.insert(
            "storing alert evidence",
            "alert_evidence",
            "alert, sensor_id, flow_id, first_ns",
            &ev,
        )?;
        self.insert(
            "storing alerts",
            "alerts",
            "id, kind, severity, asset, first_ns, last_ns, version, body",
            &rows,
        )
    }

    fn alerts(&self, q: &AlertQuery) -> Result<Vec<Alert>, StoreError> {
        let (conds, limit) = plan::alert_conditions(q);
        let mut w = String::from("1");
        for (col, op, v) in conds {
            let v = match v {
                Value::Num(n) => n.to_string(),
                Value::Text(t) => lit(t.as_bytes()),
                Value::Bytes(b) => lit(&b),
            };
            let _ = write!(w, " AND {col} {} {v}", op.as_str());
        }
        let body = self.select(
            "listing alerts",
            &format!(
                "SELECT body FROM {}.alerts FINAL WHERE {w} ORDER BY last_ns DESC, id DESC LIMIT {limit}",
                self.db
            ),
        )?;
        let mut r = Reader::new(&body);
        let mut out = Vec::new();
        while !r.done() {
            out.push(self.decode_alert(r.bytes()?)?);
        }
        Ok(out)
    }

    fn alert(&self, id: u64) -> Result<Option<Alert>, StoreError> {
        let db = &self.db;
        let body = self.select(
            "reading an alert",
            &format!("SELECT body FROM {db}.alerts FINAL WHERE id = {id}"),
        )?;
        let mut r = Reader::new(&body);
        if r.done() {
            return Ok(None);
        }
        let mut a = self.decode_alert(r.bytes()?)?;
        let body = self.select(
            "reading an alert's evidence",
            &format!(
                "SELECT DISTINCT sensor_id, flow_id, first_ns FROM {db}.alert_evidence \
                 WHERE alert = {id} ORDER BY first_ns, flow_id, sensor_id"
            ),
        )?;
        let mut r = Reader::new(&body);
        a.evidence.clear();
        while !r.done() {
            a.evidence.push(EvidenceRef {
                sensor_id: r.string()?,
                flow_id: r.u64()?,
                first_ns: r.u64()?,
            });
        }
        Ok(Some(a))
    }

    fn evidence_flows(
        &self,
        evidence: &[EvidenceRef],
    ) -> Result<Vec<(String, FlowRecord)>, StoreError> {
        // From the flows, or from the copies kept when retention dropped
        // their day (`EvidenceStore::placed_flows`).
        Ok(self
            .placed_flows(evidence)?
            .into_iter()
            .map(|p| (p.sensor_id, p.record))
            .collect())
    }

    fn max_alert_id(&self) -> Result<u64, StoreError> {
        let body = self.select(
            "reading the largest alert id",
            &format!("SELECT max(id) FROM {}.alerts", self.db),
        )?;
        Reader::new(&body).u64()
    }
}

impl ClickHouseStore {
    fn decode_alert(&self, body: &[u8]) -> Result<Alert, StoreError> {
        serde_json::from_slice(body).map_err(|e| self.corrupt(format!("alert: {e}")))
    }
}
