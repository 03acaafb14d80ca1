//! Retention: records older than `max_age`, and the oldest while the
//! database is larger than `max_bytes`, deleted in chunks with their
//! roll-up minutes; the evidence of alerts stays.

use super::SqliteStore;
use crate::model::ingest::RetentionReport;
use crate::store::plan::NS_PER_MIN;
use crate::store::{Retention, StoreError};

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
            let conn = self.lock_writer();
            // Evidence of alerts stays: an incident's flows must remain
            // retrievable after the traffic around them has aged out.
            let n = conn
                .execute(
                    "DELETE FROM flows WHERE rowid IN (SELECT rowid FROM flows f WHERE first_ns < ?1 AND NOT EXISTS (SELECT 1 FROM alert_evidence e WHERE e.flow_id = f.flow_id AND e.first_ns = f.first_ns) ORDER BY first_ns LIMIT 50000)",
                    [cutoff],
                )
                .map_err(|e| self.err("deleting old flows", e))?;
            deleted += n as u64;
            if n < 50_000 {
                let minute = cutoff / NS_PER_MIN as i64;
                for t in ["rollup_src", "rollup_dst", "rollup_dport", "rollup_proto"] {
                    conn.execute(&format!("DELETE FROM {t} WHERE minute < ?1"), [minute])
                        .map_err(|e| self.err("deleting old roll-ups", e))?;
                }
                return Ok(deleted);
            }
        }
    }
}
