//! Evidence material: batches with their attestations, the leaves of
//! their Merkle trees (from the stored records, or kept by retention),
//! pinned sensor keys, and detector settings by hash.

use prost::Message as _;
use rusqlite::{OptionalExtension as _, Row, params};
use vigil_proto::merkle::Hash;
use vigil_proto::pb;

use super::SqliteStore;
use super::rows::{FLOW_COLUMN_COUNT, FLOW_COLUMNS};
use crate::model::alert::EvidenceRef;
use crate::model::evidence::{BatchKey, PlacedFlow, StoredAttestation, StoredBatch};
use crate::store::{EvidenceStore, StoreError, i64_of};

/// The columns [`SqliteStore::batch_row`] reads; `b` is `batches`, `s`
/// is `sensors`.
const BATCH_COLUMNS: &str = "s.name, b.incarnation, b.seq, b.flows, b.received_ns, b.first_ns, \
     b.last_ns, b.stats, b.public_key, b.root, b.signature, b.id, b.first_row";

impl SqliteStore {
    /// A batch from a row of [`BATCH_COLUMNS`], with its row id and first
    /// flow row.
    fn batch_row(&self, r: &Row<'_>) -> Result<(StoredBatch, i64, i64), StoreError> {
        let sql = |e| self.err("reading a batch", e);
        let u = |i: usize| r.get::<_, i64>(i).map(|v| v as u64).map_err(sql);
        let sensor_id: String = r.get(0).map_err(sql)?;
        let stats: Option<Vec<u8>> = r.get(7).map_err(sql)?;
        let stats = stats
            .map(|b| pb::SensorStats::decode(b.as_slice()))
            .transpose()
            .map_err(|e| self.corrupt(format!("batch of {sensor_id}: counters: {e}")))?;
        let public_key: Option<Vec<u8>> = r.get(8).map_err(sql)?;
        let root: Option<Vec<u8>> = r.get(9).map_err(sql)?;
        let signature: Option<Vec<u8>> = r.get(10).map_err(sql)?;
        let attestation = match (public_key, root, signature) {
            (Some(public_key), Some(root), Some(signature)) => Some(StoredAttestation {
                public_key,
                root: Hash::try_from(root.as_slice())
                    .map_err(|_| self.corrupt(format!("batch of {sensor_id}: root")))?,
                signature,
            }),
            _ => None,
        };
        let b = StoredBatch {
            key: BatchKey {
                sensor_id,
                incarnation: u(1)?,
                seq: u(2)?,
            },
            size: u(3)?,
            received_ns: u(4)?,
            first_ns: u(5)?,
            last_ns: u(6)?,
            stats,
            attestation,
        };
        Ok((b, r.get(11).map_err(sql)?, r.get(12).map_err(sql)?))
    }

    /// A batch with its row id and first flow row.
    fn batch_by_key(&self, key: &BatchKey) -> Result<Option<(StoredBatch, i64, i64)>, StoreError> {
        self.with_reader(|c| {
            let mut st = c
                .prepare_cached(&format!(
                    "SELECT {BATCH_COLUMNS} FROM batches b JOIN sensors s ON s.id = b.sensor \
                     WHERE s.name = ?1 AND b.incarnation = ?2 AND b.seq = ?3 ORDER BY b.id LIMIT 1"
                ))
                .map_err(|e| self.err("preparing a batch query", e))?;
            let mut rows = st
                .query(params![
                    key.sensor_id,
                    key.incarnation as i64,
                    i64_of("seq", key.seq)?
                ])
                .map_err(|e| self.err("reading a batch", e))?;
            match rows.next().map_err(|e| self.err("reading a batch", e))? {
                Some(r) => Ok(Some(self.batch_row(r)?)),
                None => Ok(None),
            }
        })
    }
}

impl EvidenceStore for SqliteStore {
    fn pinned_keys(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.with_reader(|c| {
            let mut st = c
                .prepare_cached("SELECT sensor, public_key FROM sensor_keys ORDER BY sensor")
                .map_err(|e| self.err("preparing the pinned keys", e))?;
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .and_then(|it| it.collect())
                .map_err(|e| self.err("reading the pinned keys", e))
        })
    }

    fn placed_flows(&self, evidence: &[EvidenceRef]) -> Result<Vec<PlacedFlow>, StoreError> {
        self.placed(evidence)
    }

    fn batch(&self, key: &BatchKey) -> Result<Option<StoredBatch>, StoreError> {
        Ok(self.batch_by_key(key)?.map(|(b, _, _)| b))
    }

    fn batch_leaves(&self, batch: &StoredBatch) -> Result<Vec<Option<Hash>>, StoreError> {
        let size = batch.size;
        let mut leaves = vec![None; size as usize];
        let Some((_, id, first_row)) = self.batch_by_key(&batch.key)? else {
            return Ok(leaves);
        };
        self.with_reader(|c| {
            // The batch's rows were inserted together from first_row on;
            // `batch` confirms each (retention may have deleted some).
            let mut st = c
                .prepare_cached(&format!(
                    "SELECT {FLOW_COLUMNS}, f.idx FROM flows f JOIN sensors s ON s.id = f.sensor \
                     WHERE f.rowid >= ?1 AND f.rowid < ?1 + ?2 AND f.batch = ?3"
                ))
                .map_err(|e| self.err("preparing a batch's flows", e))?;
            let mut rows = st
                .query(params![first_row, i64_of("size", size)?, id])
                .map_err(|e| self.err("reading a batch's flows", e))?;
            let mut buf = Vec::with_capacity(256);
            while let Some(row) = rows
                .next()
                .map_err(|e| self.err("reading a batch's flows", e))?
            {
                let (_, r) = self.decode_row(row)?;
                let idx: i64 = row
                    .get(FLOW_COLUMN_COUNT)
                    .map_err(|e| self.err("reading a batch's flows", e))?;
                if let Some(slot) = leaves.get_mut(idx as usize) {
                    *slot = Some(vigil_proto::attest::record_leaf(&r, &mut buf));
                }
            }
            let mut st = c
                .prepare_cached("SELECT idx, hash FROM pruned_leaves WHERE batch = ?1")
                .map_err(|e| self.err("preparing the pruned leaves", e))?;
            let kept: Vec<(i64, Vec<u8>)> = st
                .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))
                .and_then(|it| it.collect())
                .map_err(|e| self.err("reading the pruned leaves", e))?;
            for (idx, h) in kept {
                if let (Some(slot), Ok(h)) =
                    (leaves.get_mut(idx as usize), Hash::try_from(h.as_slice()))
                    && slot.is_none()
                {
                    *slot = Some(h);
                }
            }
            Ok(())
        })?;
        Ok(leaves)
    }

    fn batch_log(&self, since_ns: u64, until_ns: u64) -> Result<Vec<StoredBatch>, StoreError> {
        let since = i64_of("since", since_ns).unwrap_or(i64::MAX);
        let until = i64_of("until", until_ns).unwrap_or(i64::MAX);
        self.with_reader(|c| {
            let q = |e| self.err("reading the batch log", e);
            let mut out = Vec::new();
            let sensors: Vec<i64> = c
                .prepare_cached("SELECT id FROM sensors ORDER BY name")
                .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
                .map_err(q)?;
            for sensor in sensors {
                let (lo, hi): (Option<i64>, Option<i64>) = c
                    .query_row(
                        "SELECT MIN(received_ns), MAX(received_ns) FROM batches \
                         WHERE sensor = ?1 AND flows > 0 AND last_ns >= ?2 AND first_ns <= ?3",
                        params![sensor, since, until],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .map_err(q)?;
                let (sql, p): (&str, Vec<i64>) = match (lo, hi) {
                    (Some(lo), Some(hi)) => {
                        let base: Option<i64> = c
                            .query_row(
                                "SELECT MAX(received_ns) FROM batches WHERE sensor = ?1 AND received_ns < ?2",
                                params![sensor, lo],
                                |r| r.get(0),
                            )
                            .map_err(q)?;
                        (
                            "b.sensor = ?1 AND b.received_ns >= ?2 AND b.received_ns <= ?3 \
                             ORDER BY b.received_ns, b.seq",
                            vec![sensor, base.unwrap_or(lo), hi],
                        )
                    }
                    _ => (
                        "b.sensor = ?1 AND b.flows > 0 AND b.last_ns < ?2 \
                         ORDER BY b.received_ns DESC LIMIT 1",
                        vec![sensor, since],
                    ),
                };
                let mut st = c
                    .prepare_cached(&format!(
                        "SELECT {BATCH_COLUMNS} FROM batches b JOIN sensors s ON s.id = b.sensor WHERE {sql}"
                    ))
                    .map_err(q)?;
                let mut rows = st
                    .query(rusqlite::params_from_iter(p))
                    .map_err(q)?;
                while let Some(r) = rows.next().map_err(q)? {
                    out.push(self.batch_row(r)?.0);
                }
            }
            Ok(out)
        })
    }

    fn sensor_certificates(&self, sensor: &str) -> Result<Vec<String>, StoreError> {
        self.with_reader(|c| {
            c.prepare_cached(
                "SELECT fingerprint FROM sensor_certs WHERE sensor = ?1 ORDER BY first_ns, fingerprint",
            )
            .and_then(|mut st| st.query_map([sensor], |r| r.get(0))?.collect())
            .map_err(|e| self.err("reading the sensor's certificates", e))
        })
    }

    fn put_detector(&self, hash: &str, body: &str) -> Result<(), StoreError> {
        self.lock_writer()
            .execute(
                "INSERT OR IGNORE INTO detectors (hash, body) VALUES (?1, ?2)",
                params![hash, body],
            )
            .map_err(|e| self.err("recording the detector settings", e))?;
        Ok(())
    }

    fn detector(&self, hash: &str) -> Result<Option<String>, StoreError> {
        self.with_reader(|c| {
            c.query_row("SELECT body FROM detectors WHERE hash = ?1", [hash], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.err("reading the detector settings", e))
        })
    }
}
