//! Alerts (each alert's latest state, as JSON) and their evidence
//! references, and the evidence flows read back by them.

use std::collections::HashSet;

use rusqlite::types::Value;
use rusqlite::{OptionalExtension, TransactionBehavior, params};
use vigil_proto::FlowRecord;

use super::rows::{FLOW_COLUMN_COUNT, FLOW_COLUMNS};
use super::{SqliteStore, has_table};
use crate::model::alert::{Alert, AlertQuery, AlertUpdate, EvidenceRef};
use crate::model::evidence::{BatchKey, PlacedFlow};
use crate::store::plan;
use crate::store::{AlertStore, StoreError, alert_body, i64_of};

impl AlertStore for SqliteStore {
    fn put_alerts(&self, updates: &[AlertUpdate]) -> Result<(), StoreError> {
        if updates.is_empty() {
            return Ok(());
        }
        let mut conn = self.lock_writer();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.err("starting an alert transaction", e))?;
        {
            let mut row = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO alerts (id, kind, severity, asset, first_ns, last_ns, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(|e| self.err("preparing an alert insert", e))?;
            let mut ev = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO alert_evidence (alert, sensor, flow_id, first_ns) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(|e| self.err("preparing an evidence insert", e))?;
            for u in updates {
                let a = &u.alert;
                let json = alert_body(a)?;
                row.execute(params![
                    i64_of("alert id", a.id)?,
                    a.kind.as_str(),
                    a.severity as i64,
                    a.asset,
                    i64_of("first_seen", a.first_seen_ns)?,
                    i64_of("last_seen", a.last_seen_ns)?,
                    json
                ])
                .map_err(|e| self.err("storing an alert", e))?;
                for e in &a.evidence {
                    ev.execute(params![
                        i64_of("alert id", a.id)?,
                        e.sensor_id,
                        i64_of("flow id", e.flow_id)?,
                        i64_of("first_seen", e.first_ns)?
                    ])
                    .map_err(|e| self.err("storing alert evidence", e))?;
                }
            }
        }
        tx.commit().map_err(|e| self.err("committing alerts", e))
    }

    fn alerts(&self, q: &AlertQuery) -> Result<Vec<Alert>, StoreError> {
        let (conds, limit) = plan::alert_conditions(q);
        let mut sql = String::from("SELECT body FROM alerts WHERE 1");
        let mut p: Vec<Value> = Vec::new();
        for (col, op, v) in conds {
            sql.push_str(&format!(" AND {col} {} ?", op.as_str()));
            p.push(match v {
                plan::Value::Num(n) => Value::Integer(i64::try_from(n).unwrap_or(i64::MAX)),
                plan::Value::Text(t) => Value::Text(t),
                plan::Value::Bytes(b) => Value::Blob(b),
            });
        }
        sql.push_str(" ORDER BY last_ns DESC, id DESC LIMIT ?");
        p.push(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
        self.with_reader(|c| {
            if !has_table(c, "alerts").map_err(|e| self.err("reading the schema", e))? {
                return Ok(Vec::new());
            }
            let mut stmt = c
                .prepare_cached(&sql)
                .map_err(|e| self.err("preparing an alert query", e))?;
            let mut rows = stmt
                .query(rusqlite::params_from_iter(p.iter()))
                .map_err(|e| self.err("listing alerts", e))?;
            let mut out = Vec::new();
            while let Some(r) = rows.next().map_err(|e| self.err("reading alerts", e))? {
                let body: String = r.get(0).map_err(|e| self.err("reading an alert", e))?;
                out.push(self.decode_alert(&body)?);
            }
            Ok(out)
        })
    }

    fn alert(&self, id: u64) -> Result<Option<Alert>, StoreError> {
        let id = i64_of("alert id", id)?;
        self.with_reader(|c| {
            if !has_table(c, "alerts").map_err(|e| self.err("reading the schema", e))? {
                return Ok(None);
            }
            let body: Option<String> = c
                .query_row("SELECT body FROM alerts WHERE id = ?1", [id], |r| r.get(0))
                .optional()
                .map_err(|e| self.err("reading an alert", e))?;
            let Some(body) = body else { return Ok(None) };
            let mut a = self.decode_alert(&body)?;
            let mut stmt = c
                .prepare_cached(
                    "SELECT sensor, flow_id, first_ns FROM alert_evidence WHERE alert = ?1 ORDER BY first_ns, flow_id",
                )
                .map_err(|e| self.err("preparing an evidence query", e))?;
            let rows = stmt
                .query_map([id], |r| {
                    Ok(EvidenceRef {
                        sensor_id: r.get(0)?,
                        flow_id: r.get::<_, i64>(1)? as u64,
                        first_ns: r.get::<_, i64>(2)? as u64,
                    })
                })
                .map_err(|e| self.err("reading evidence", e))?;
            for r in rows {
                a.evidence.push(r.map_err(|e| self.err("reading evidence", e))?);
            }
            Ok(Some(a))
        })
    }

    fn evidence_flows(
        &self,
        evidence: &[EvidenceRef],
    ) -> Result<Vec<(String, FlowRecord)>, StoreError> {
        Ok(self
            .placed(evidence)?
            .into_iter()
            .map(|p| (p.sensor_id, p.record))
            .collect())
    }

    fn max_alert_id(&self) -> Result<u64, StoreError> {
        self.with_reader(|c| {
            if !has_table(c, "alerts").map_err(|e| self.err("reading the schema", e))? {
                return Ok(0);
            }
            let v: Option<i64> = c
                .query_row("SELECT MAX(id) FROM alerts", [], |r| r.get(0))
                .map_err(|e| self.err("reading the largest alert id", e))?;
            Ok(v.unwrap_or(0).max(0) as u64)
        })
    }
}

impl SqliteStore {
    /// The stored records the references name, oldest first, with their
    /// places in their batches.
    pub(super) fn placed(&self, evidence: &[EvidenceRef]) -> Result<Vec<PlacedFlow>, StoreError> {
        let mut refs: Vec<&EvidenceRef> = evidence.iter().collect();
        refs.sort_by_key(|e| (e.first_ns, e.flow_id));
        let wanted: HashSet<(&str, u64, u64)> = refs
            .iter()
            .map(|e| (e.sensor_id.as_str(), e.flow_id, e.first_ns))
            .collect();
        let mut out = Vec::new();
        // Each chunk: a first_seen range (the time index) and its flow ids.
        for chunk in refs.chunks(256) {
            let (lo, hi) = (chunk[0].first_ns, chunk[chunk.len() - 1].first_ns);
            let marks = vec!["?"; chunk.len()].join(",");
            let sql = format!(
                "SELECT {FLOW_COLUMNS}, b.incarnation, b.seq, f.idx FROM flows f \
                 JOIN sensors s ON s.id = f.sensor LEFT JOIN batches b ON b.id = f.batch \
                 WHERE f.first_ns >= ? AND f.first_ns <= ? AND f.flow_id IN ({marks}) \
                 ORDER BY f.first_ns, f.rowid"
            );
            let mut p = vec![
                Value::Integer(i64_of("first_seen", lo)?),
                Value::Integer(i64_of("first_seen", hi)?),
            ];
            for e in chunk {
                p.push(Value::Integer(i64_of("flow id", e.flow_id)?));
            }
            self.with_reader(|c| {
                let mut stmt = c
                    .prepare(&sql)
                    .map_err(|e| self.err("preparing an evidence query", e))?;
                let mut rows = stmt
                    .query(rusqlite::params_from_iter(p.iter()))
                    .map_err(|e| self.err("reading evidence flows", e))?;
                while let Some(row) = rows
                    .next()
                    .map_err(|e| self.err("reading evidence flows", e))?
                {
                    let (s, r) = self.decode_row(row)?;
                    if !wanted.contains(&(s.as_str(), r.flow_id, r.first_seen_ns)) {
                        continue;
                    }
                    let place = (|| -> rusqlite::Result<Option<(BatchKey, u32)>> {
                        let inc: Option<i64> = row.get(FLOW_COLUMN_COUNT)?;
                        let seq: Option<i64> = row.get(FLOW_COLUMN_COUNT + 1)?;
                        let idx: Option<i64> = row.get(FLOW_COLUMN_COUNT + 2)?;
                        Ok(match (inc, seq, idx) {
                            (Some(i), Some(q), Some(x)) => Some((
                                BatchKey {
                                    sensor_id: s.clone(),
                                    incarnation: i as u64,
                                    seq: q as u64,
                                },
                                x as u32,
                            )),
                            _ => None,
                        })
                    })()
                    .map_err(|e| self.err("reading evidence flows", e))?;
                    out.push(PlacedFlow {
                        sensor_id: s,
                        record: r,
                        place,
                    });
                }
                Ok(())
            })?;
        }
        Ok(out)
    }

    fn decode_alert(&self, body: &str) -> Result<Alert, StoreError> {
        serde_json::from_str(body).map_err(|e| self.corrupt(format!("alert row: {e}")))
    }
}
