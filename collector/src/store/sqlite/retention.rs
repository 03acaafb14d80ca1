//! Retention: records older than `max_age`, and the oldest while the
//! database is larger than `max_bytes`, deleted in chunks with their
//! roll-up minutes; the evidence of alerts stays.

use std::collections::BTreeMap;

use rusqlite::{TransactionBehavior, params};

use super::SqliteStore;
use super::rows::{FLOW_COLUMN_COUNT, FLOW_COLUMNS};
use crate::model::ingest::RetentionReport;
use crate::store::plan::NS_PER_MIN;
use crate::store::{Retention, StoreError};

/// Records deleted per transaction, so that ingest interleaves.
const CHUNK: usize = 50_000;

impl Retention for SqliteStore {
    fn enforce_retention(&self, now_ns: u64) -> Result<RetentionReport, StoreError> {
        let mut report = RetentionReport::default();
        if let Some(age) = self.cfg.max_age {
            let cutoff = now_ns.saturating_sub(age.as_nanos().min(u128::from(u64::MAX)) as u64);
            report.deleted_flows += self.delete_before(cutoff)?;
        }
        if let Some(max) = self.cfg.max_bytes {
            // Delete the oldest tenth of the stored time span until the
            // database's used pages fit (freed pages are reused, so the file
            // stops growing rather than shrinking).
            for _ in 0..64 {
                if self.used_bytes()? <= max {
                    break;
                }
                let span: Option<(i64, i64)> = self.with_reader(|c| {
                    c.query_row("SELECT MIN(first_ns), MAX(first_ns) FROM flows", [], |r| {
                        Ok(
                            match (r.get::<_, Option<i64>>(0)?, r.get::<_, Option<i64>>(1)?) {
                                (Some(a), Some(b)) => Some((a, b)),
                                _ => None,
                            },
                        )
                    })
                    .map_err(|e| self.err("reading the stored time span", e))
                })?;
                let Some((lo, hi)) = span else { break };
                // At least a minute: cutoffs are rounded down to minutes.
                let cutoff = lo as u64 + ((hi - lo) as u64 / 10).max(NS_PER_MIN);
                report.deleted_flows += self.delete_before(cutoff)?;
            }
        }
        Ok(report)
    }
}

impl SqliteStore {
    /// Bytes in use by the database (pages minus free pages).
    pub fn used_bytes(&self) -> Result<u64, StoreError> {
        let conn = self.lock_writer();
        let q = |p: &str| -> Result<i64, StoreError> {
            conn.query_row(&format!("PRAGMA {p}"), [], |r| r.get(0))
                .map_err(|e| self.err("reading the database size", e))
        };
        let used = (q("page_count")? - q("freelist_count")?) * q("page_size")?;
        Ok(used.max(0) as u64)
    }

    /// Deletes records (and roll-up minutes) with `first_seen` before
    /// `cutoff_ns` rounded down to a whole minute (so that the roll-ups
    /// always describe exactly the stored records), in chunks so that
    /// ingest interleaves.
    fn delete_before(&self, cutoff_ns: u64) -> Result<u64, StoreError> {
        let cutoff_ns = cutoff_ns / NS_PER_MIN * NS_PER_MIN;
        let cutoff = i64::try_from(cutoff_ns).unwrap_or(i64::MAX);
        let mut deleted = 0u64;
        loop {
            let n = self.delete_chunk(cutoff)?;
            deleted += n;
            if n < CHUNK as u64 {
                let conn = self.lock_writer();
                let minute = cutoff / NS_PER_MIN as i64;
                for t in ["rollup_dport", "rollup_proto"] {
                    conn.execute(&format!("DELETE FROM {t} WHERE minute < ?1"), [minute])
                        .map_err(|e| self.err("deleting old roll-ups", e))?;
                }
                // Batches of the past with no record left, and their kept
                // leaves.
                conn.execute(
                    "DELETE FROM batches WHERE (flows > 0 AND last_ns < ?1 OR flows = 0 AND received_ns < ?1) \
                     AND NOT EXISTS (SELECT 1 FROM flows f WHERE f.rowid >= batches.first_row \
                     AND f.rowid < batches.first_row + batches.flows AND f.batch = batches.id)",
                    [cutoff],
                )
                .map_err(|e| self.err("deleting old batches", e))?;
                conn.execute(
                    "DELETE FROM pruned_leaves WHERE batch NOT IN (SELECT id FROM batches)",
                    [],
                )
                .map_err(|e| self.err("deleting old leaves", e))?;
                return Ok(deleted);
            }
        }
    }

    /// Deletes up to [`CHUNK`] records before `cutoff` (not evidence),
    /// keeping the leaf hashes of the attested ones whose batch keeps
    /// records: the proofs of those stay computable.
    fn delete_chunk(&self, cutoff: i64) -> Result<u64, StoreError> {
        let mut conn = self.lock_writer();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.err("beginning a retention transaction", e))?;
        // Evidence of alerts stays: an incident's flows must remain
        // retrievable after the traffic around them has aged out.
        tx.execute_batch(
            "CREATE TEMP TABLE IF NOT EXISTS doomed (id INTEGER PRIMARY KEY); DELETE FROM doomed;",
        )
        .map_err(|e| self.err("preparing a retention chunk", e))?;
        let n = tx
            .execute(
                &format!(
                    "INSERT INTO doomed (id) SELECT rowid FROM flows f WHERE first_ns < ?1 AND NOT EXISTS \
                     (SELECT 1 FROM alert_evidence e WHERE e.flow_id = f.flow_id AND e.first_ns = f.first_ns) \
                     ORDER BY first_ns LIMIT {CHUNK}"
                ),
                [cutoff],
            )
            .map_err(|e| self.err("choosing old flows", e))?;
        // The attested records among them, with their leaves.
        let mut leaves: BTreeMap<i64, Vec<(i64, Vec<u8>)>> = BTreeMap::new();
        {
            let mut st = tx
                .prepare(&format!(
                    "SELECT {FLOW_COLUMNS}, f.batch, f.idx FROM flows f JOIN sensors s ON s.id = f.sensor \
                     JOIN batches b ON b.id = f.batch \
                     WHERE f.rowid IN (SELECT id FROM doomed) AND b.signature IS NOT NULL"
                ))
                .map_err(|e| self.err("reading old attested flows", e))?;
            let mut rows = st
                .query([])
                .map_err(|e| self.err("reading old attested flows", e))?;
            let mut buf = Vec::with_capacity(256);
            while let Some(row) = rows
                .next()
                .map_err(|e| self.err("reading old attested flows", e))?
            {
                let (_, r) = self.decode_row(row)?;
                let (batch, idx): (i64, i64) =
                    (|| Ok((row.get(FLOW_COLUMN_COUNT)?, row.get(FLOW_COLUMN_COUNT + 1)?)))()
                        .map_err(|e| self.err("reading old attested flows", e))?;
                let h = vigil_proto::attest::record_leaf(&r, &mut buf);
                leaves.entry(batch).or_default().push((idx, h.to_vec()));
            }
        }
        let stale = self.drop_doomed_segments(&tx)?;
        tx.execute(
            "DELETE FROM flows WHERE rowid IN (SELECT id FROM doomed)",
            [],
        )
        .map_err(|e| self.err("deleting old flows", e))?;
        // The newest rows kept in memory are read again: deleting the
        // highest row ids lets SQLite give them out again.
        *self
            .newest
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        for (batch, kept) in leaves {
            let remains: bool = tx
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM flows f JOIN batches b ON b.id = ?1 \
                     WHERE f.rowid >= b.first_row AND f.rowid < b.first_row + b.flows AND f.batch = ?1)",
                    [batch],
                    |r| r.get(0),
                )
                .map_err(|e| self.err("checking a batch's records", e))?;
            if remains {
                let mut ins = tx
                    .prepare_cached(
                        "INSERT OR IGNORE INTO pruned_leaves (batch, idx, hash) VALUES (?1, ?2, ?3)",
                    )
                    .map_err(|e| self.err("keeping leaves", e))?;
                for (idx, h) in kept {
                    ins.execute(params![batch, idx, h])
                        .map_err(|e| self.err("keeping leaves", e))?;
                }
            } else {
                tx.execute("DELETE FROM pruned_leaves WHERE batch = ?1", [batch])
                    .map_err(|e| self.err("deleting leaves", e))?;
            }
        }
        tx.commit()
            .map_err(|e| self.err("committing a retention chunk", e))?;
        // Rebuilt from the rows that stay by the next `build_columns`.
        for f in stale {
            let _ = std::fs::remove_file(f);
        }
        Ok(n as u64)
    }
}
