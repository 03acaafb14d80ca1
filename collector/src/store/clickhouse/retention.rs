//! Retention by whole days: a day partition of flows (and of the roll-ups)
//! is dropped once it is older than `max_age`, or while the database is
//! larger than `max_bytes`; the evidence of alerts is copied out first.

use super::schema::ROLLUPS;
use super::wire::put_str;
use super::{ClickHouseStore, NS_PER_DAY, READ_COLS, Reader, lit};
use crate::model::ingest::RetentionReport;
use crate::store::{Retention, StoreError};

impl ClickHouseStore {
    /// Before a day of flows goes: the leaf hashes of its attested records
    /// whose batch keeps records (on another day, or as evidence kept),
    /// so that the proofs of those stay computable. Only batches whose
    /// records' span crosses the day's bounds, or that hold evidence of
    /// the day, can; the others go whole.
    fn keep_leaves(&self, lo: u64, hi: u64) -> Result<(), StoreError> {
        let db = &self.db;
        let range = format!("first_ns >= {lo} AND first_ns < {hi}");
        let sql = format!(
            "SELECT {READ_COLS}, seq, toUInt64(idx) FROM {db}.flows WHERE {range} AND (sensor_id, seq) IN \
             (SELECT sensor_id, seq FROM {db}.batches WHERE signature != '' AND first_ns < {hi} \
              AND last_ns >= {lo} AND (first_ns < {lo} OR last_ns >= {hi}) \
              UNION ALL SELECT sensor_id, seq FROM {db}.flows WHERE {range} AND \
              (sensor_id, flow_id, first_ns) IN (SELECT sensor_id, flow_id, first_ns FROM {db}.alert_evidence WHERE {range}))"
        );
        let body = self.select("reading a day's attested records", &sql)?;
        let mut r = Reader::new(&body);
        let (mut rows, mut buf) = (Vec::new(), Vec::with_capacity(256));
        let mut n = 0u64;
        while !r.done() {
            let (sensor, rec) = self.read_flow(&mut r)?;
            let (seq, idx) = (r.u64()?, r.u64()?);
            let h = vigil_proto::attest::record_leaf(&rec, &mut buf);
            put_str(&mut rows, sensor.as_bytes());
            rows.extend_from_slice(&seq.to_le_bytes());
            rows.extend_from_slice(&(idx as u32).to_le_bytes());
            put_str(&mut rows, &h);
            n += 1;
        }
        if n > 0 {
            tracing::info!(database = %db, leaves = n, "retention: keeping the leaves of batches that outlive a day");
        }
        self.insert(
            "keeping leaves",
            "pruned_leaves",
            "sensor_id, seq, idx, hash",
            &rows,
        )
    }
}

/// A day partition of `flows`.
struct FlowDay {
    /// Its partition id (`YYYYMMDD`).
    id: String,
    /// Days since the epoch.
    day: u16,
    rows: u64,
    bytes: u64,
}

impl Retention for ClickHouseStore {
    fn enforce_retention(&self, now_ns: u64) -> Result<RetentionReport, StoreError> {
        let mut report = RetentionReport::default();
        if self.max_age.is_none() && self.max_bytes.is_none() {
            return Ok(report);
        }
        let days = self.flow_days()?;
        let mut keep_from = 0;
        if let Some(age) = self.max_age {
            let cutoff = now_ns.saturating_sub(u64::try_from(age.as_nanos()).unwrap_or(u64::MAX));
            // Whole days only: a day goes once its last instant is past.
            keep_from = days
                .iter()
                .take_while(|d| (u64::from(d.day) + 1) * NS_PER_DAY <= cutoff)
                .count();
        }
        if let Some(max) = self.max_bytes {
            let body = self.select("reading the database's size", &format!(
                "SELECT toUInt64(sum(bytes_on_disk)) FROM system.parts WHERE database = {} AND active",
                lit(self.db.as_bytes())
            ))?;
            let mut total = Reader::new(&body).u64()?;
            total -= days[..keep_from]
                .iter()
                .map(|d| d.bytes)
                .sum::<u64>()
                .min(total);
            while total > max && keep_from + 1 < days.len() {
                total -= days[keep_from].bytes.min(total);
                keep_from += 1;
            }
        }
        for d in &days[..keep_from] {
            self.drop_day(d)?;
            report.deleted_flows += d.rows;
        }
        Ok(report)
    }
}

impl ClickHouseStore {
    /// The day partitions of `flows`, oldest first, from `system.parts`.
    fn flow_days(&self) -> Result<Vec<FlowDay>, StoreError> {
        let body = self.select("listing the day partitions", &format!(
            "SELECT partition_id, toUInt16(min_date), toUInt64(sum(rows)), toUInt64(sum(bytes_on_disk)) \
             FROM system.parts WHERE database = {} AND table = 'flows' AND active \
             GROUP BY partition_id, min_date ORDER BY min_date",
            lit(self.db.as_bytes())
        ))?;
        let mut r = Reader::new(&body);
        let mut out = Vec::new();
        while !r.done() {
            let id = r.string()?;
            let b = r.take(2)?;
            let day = u16::from_le_bytes([b[0], b[1]]);
            let (rows, bytes) = (r.u64()?, r.u64()?);
            // The id is written into a statement: digits only.
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
                return Err(self.corrupt(format!("flows partition id {id:?}")));
            }
            out.push(FlowDay {
                id,
                day,
                rows,
                bytes,
            });
        }
        Ok(out)
    }

    /// Drops a day of flows and of the roll-ups, having copied the flows
    /// that are evidence of an alert to `evidence_flows`.
    fn drop_day(&self, d: &FlowDay) -> Result<(), StoreError> {
        let db = &self.db;
        let (lo, hi) = (
            u64::from(d.day) * NS_PER_DAY,
            (u64::from(d.day) + 1) * NS_PER_DAY,
        );
        let range = format!("first_ns >= {lo} AND first_ns < {hi}");
        self.keep_leaves(lo, hi)?;
        self.exec(
            "keeping a day's evidence flows",
            &format!(
                "INSERT INTO {db}.evidence_flows SELECT * FROM {db}.flows WHERE {range} \
                 AND (sensor_id, flow_id, first_ns) IN \
                 (SELECT sensor_id, flow_id, first_ns FROM {db}.alert_evidence WHERE {range})"
            ),
        )?;
        tracing::info!(database = %db, day = %d.id, flows = d.rows, "retention: dropping a day of flows");
        self.exec(
            "dropping a day of flows",
            &format!("ALTER TABLE {db}.flows DROP PARTITION ID '{}'", d.id),
        )?;
        for r in &ROLLUPS {
            self.exec(
                "dropping a day of a roll-up",
                &format!(
                    "ALTER TABLE {db}.rollup_{} DROP PARTITION ID '{}'",
                    r.name, d.day
                ),
            )?;
        }
        Ok(())
    }
}
