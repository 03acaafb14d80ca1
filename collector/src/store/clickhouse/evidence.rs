//! Evidence material in ClickHouse: batches (`batches`, one row per
//! stored batch, with its counters, event-time span and attestation), the
//! flows' places in them (`flows.seq`, `flows.idx`), the leaves retention
//! keeps (`pruned_leaves`), pinned sensor keys (`sensor_keys`) and
//! detector settings by hash (`detectors`).

use std::collections::HashMap;
use std::fmt::Write as _;

use prost::Message as _;
use vigil_proto::merkle::Hash;
use vigil_proto::pb;

use super::wire::put_str;
use super::{ClickHouseStore, READ_COLS, Reader, lit, stored_seq};
use crate::ingest::MAX_SEQ;
use crate::model::alert::EvidenceRef;
use crate::model::evidence::{BatchKey, PlacedFlow, StoredAttestation, StoredBatch};
use crate::store::{EvidenceStore, StoreError};

/// The columns [`ClickHouseStore::read_batch`] reads, over `batches` as
/// `b` joined to `incarnations` as `i`.
const BATCH_COLS: &str = "b.sensor_id, i.incarnation, b.seq, b.flows, b.received_ns, b.first_ns, \
     b.last_ns, b.stats, b.public_key, b.root, b.signature";

impl ClickHouseStore {
    /// `FROM batches b JOIN incarnations i` (the incarnation of each
    /// batch from its stored seq's ordinal).
    fn batches_from(&self) -> String {
        let db = &self.db;
        format!(
            "{db}.batches b INNER JOIN (SELECT sensor_id, incarnation, ordinal FROM {db}.incarnations FINAL) i \
             ON i.sensor_id = b.sensor_id AND i.ordinal = bitShiftRight(b.seq, 40)"
        )
    }

    fn read_batch(&self, r: &mut Reader<'_>) -> Result<StoredBatch, StoreError> {
        let sensor_id = r.string()?;
        let incarnation = r.u64()?;
        let seq = r.u64()? & MAX_SEQ;
        let size = r.u64()?;
        let received_ns = r.u64()?;
        let first_ns = r.u64()?;
        let last_ns = r.u64()?;
        let stats = r.bytes()?;
        let stats = (!stats.is_empty())
            .then(|| pb::SensorStats::decode(stats))
            .transpose()
            .map_err(|e| self.corrupt(format!("batch of {sensor_id}: counters: {e}")))?;
        let public_key = r.bytes()?.to_vec();
        let root = r.bytes()?.to_vec();
        let signature = r.bytes()?.to_vec();
        let attestation = if signature.is_empty() {
            None
        } else {
            Some(StoredAttestation {
                public_key,
                root: Hash::try_from(root.as_slice())
                    .map_err(|_| self.corrupt(format!("batch of {sensor_id}: root")))?,
                signature,
            })
        };
        Ok(StoredBatch {
            key: BatchKey {
                sensor_id,
                incarnation,
                seq,
            },
            size,
            received_ns,
            first_ns,
            last_ns,
            stats,
            attestation,
        })
    }

    fn read_batches(&self, op: &'static str, sql: &str) -> Result<Vec<StoredBatch>, StoreError> {
        let body = self.select(op, sql)?;
        let mut r = Reader::new(&body);
        let mut out = Vec::new();
        while !r.done() {
            out.push(self.read_batch(&mut r)?);
        }
        Ok(out)
    }

    /// The stored seq of a batch (its incarnation's ordinal above the
    /// seq), if the incarnation is known.
    fn stored_key(&self, key: &BatchKey) -> Result<Option<u64>, StoreError> {
        let body = self.select(
            "reading an incarnation",
            &format!(
                "SELECT ordinal FROM {}.incarnations FINAL WHERE sensor_id = {} AND incarnation = {} LIMIT 1",
                self.db,
                lit(key.sensor_id.as_bytes()),
                key.incarnation
            ),
        )?;
        let mut r = Reader::new(&body);
        if r.done() {
            return Ok(None);
        }
        Ok(Some(stored_seq(r.u64()?, key.seq)))
    }
}

impl EvidenceStore for ClickHouseStore {
    fn pinned_keys(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        // The first key pinned for a sensor holds (two collectors may
        // both have pinned one at first contact).
        let body = self.select(
            "reading the pinned keys",
            &format!(
                "SELECT sensor_id, argMin(public_key, pinned_ns) FROM {}.sensor_keys \
                 GROUP BY sensor_id ORDER BY sensor_id",
                self.db
            ),
        )?;
        let mut r = Reader::new(&body);
        let mut out = Vec::new();
        while !r.done() {
            out.push((r.string()?, r.bytes()?.to_vec()));
        }
        Ok(out)
    }

    fn placed_flows(&self, evidence: &[EvidenceRef]) -> Result<Vec<PlacedFlow>, StoreError> {
        let mut rows = Vec::new();
        for chunk in evidence.chunks(500) {
            let mut list = String::new();
            for (i, e) in chunk.iter().enumerate() {
                if i > 0 {
                    list.push_str(", ");
                }
                let _ = write!(
                    list,
                    "({}, {}, {})",
                    lit(e.sensor_id.as_bytes()),
                    e.flow_id,
                    e.first_ns
                );
            }
            let (lo, hi) = chunk.iter().fold((u64::MAX, 0), |(lo, hi), e| {
                (lo.min(e.first_ns), hi.max(e.first_ns))
            });
            let one = |table: &str| {
                format!(
                    "SELECT {READ_COLS}, seq, idx FROM {}.{table} WHERE first_ns >= {lo} \
                     AND first_ns <= {hi} AND (sensor_id, flow_id, first_ns) IN ({list})",
                    self.db
                )
            };
            let sql = format!(
                "SELECT {READ_COLS}, seq, toUInt64(idx) FROM ({} UNION ALL {}) \
                 ORDER BY first_ns, sensor_id, seq, idx LIMIT 1 BY sensor_id, seq, idx",
                one("flows"),
                one("evidence_flows")
            );
            let body = self.select("reading evidence flows", &sql)?;
            let mut r = Reader::new(&body);
            while !r.done() {
                let (sensor, rec) = self.read_flow(&mut r)?;
                let (seq, idx) = (r.u64()?, r.u64()?);
                rows.push((sensor, rec, seq, idx));
            }
        }
        rows.sort_by_key(|(_, r, _, _)| r.first_seen_ns);
        // Incarnations by (sensor, ordinal).
        let body = self.select(
            "reading incarnations",
            &format!(
                "SELECT sensor_id, ordinal, incarnation FROM {}.incarnations FINAL",
                self.db
            ),
        )?;
        let mut r = Reader::new(&body);
        let mut incarnations = HashMap::new();
        while !r.done() {
            let s = r.string()?;
            let (o, i) = (r.u64()?, r.u64()?);
            incarnations.insert((s, o), i);
        }
        Ok(rows
            .into_iter()
            .map(|(sensor_id, record, seq, idx)| {
                let place = incarnations
                    .get(&(sensor_id.clone(), seq >> 40))
                    .map(|&incarnation| {
                        (
                            BatchKey {
                                sensor_id: sensor_id.clone(),
                                incarnation,
                                seq: seq & MAX_SEQ,
                            },
                            idx as u32,
                        )
                    });
                PlacedFlow {
                    sensor_id,
                    record,
                    place,
                }
            })
            .collect())
    }

    fn batch(&self, key: &BatchKey) -> Result<Option<StoredBatch>, StoreError> {
        let Some(stored) = self.stored_key(key)? else {
            return Ok(None);
        };
        let sql = format!(
            "SELECT {BATCH_COLS} FROM {} WHERE b.sensor_id = {} AND b.seq = {stored} LIMIT 1",
            self.batches_from(),
            lit(key.sensor_id.as_bytes()),
        );
        Ok(self
            .read_batches("reading a batch", &sql)?
            .into_iter()
            .next())
    }

    fn batch_leaves(&self, batch: &StoredBatch) -> Result<Vec<Option<Hash>>, StoreError> {
        let mut leaves = vec![None; batch.size as usize];
        let key = &batch.key;
        let Some(stored) = self.stored_key(key)? else {
            return Ok(leaves);
        };
        let (sensor, db) = (lit(key.sensor_id.as_bytes()), &self.db);
        // The batch's records, found by their time span (the flows' order).
        let one = |table: &str| {
            format!(
                "SELECT {READ_COLS}, seq, idx FROM {db}.{table} WHERE first_ns >= {} \
                 AND first_ns <= {} AND sensor_id = {sensor} AND seq = {stored}",
                batch.first_ns, batch.last_ns
            )
        };
        let sql = format!(
            "SELECT {READ_COLS}, toUInt64(idx) FROM ({} UNION ALL {}) LIMIT 1 BY idx",
            one("flows"),
            one("evidence_flows")
        );
        let body = self.select("reading a batch's flows", &sql)?;
        let mut r = Reader::new(&body);
        let mut buf = Vec::with_capacity(256);
        while !r.done() {
            let (_, rec) = self.read_flow(&mut r)?;
            let idx = r.u64()?;
            if let Some(slot) = leaves.get_mut(idx as usize) {
                *slot = Some(vigil_proto::attest::record_leaf(&rec, &mut buf));
            }
        }
        let body = self.select(
            "reading the pruned leaves",
            &format!(
                "SELECT toUInt64(idx), hash FROM {db}.pruned_leaves WHERE sensor_id = {sensor} AND seq = {stored}"
            ),
        )?;
        let mut r = Reader::new(&body);
        while !r.done() {
            let idx = r.u64()?;
            let h = r.bytes()?;
            if let (Some(slot), Ok(h)) = (leaves.get_mut(idx as usize), Hash::try_from(h))
                && slot.is_none()
            {
                *slot = Some(h);
            }
        }
        Ok(leaves)
    }

    fn batch_log(&self, since_ns: u64, until_ns: u64) -> Result<Vec<StoredBatch>, StoreError> {
        let from = self.batches_from();
        let db = &self.db;
        let meets = format!("flows > 0 AND last_ns >= {since_ns} AND first_ns <= {until_ns}");
        // Per sensor: the arrival span of the batches that meet the
        // window, from the baseline before the first to the last.
        let spans_sql = format!(
            "SELECT m.sensor_id, if(p.base = 0, m.lo, p.base), m.hi FROM \
             (SELECT sensor_id, min(received_ns) AS lo, max(received_ns) AS hi FROM {db}.batches \
             WHERE {meets} GROUP BY sensor_id) m \
             LEFT JOIN (SELECT b.sensor_id AS sensor_id, max(b.received_ns) AS base FROM {db}.batches b \
             INNER JOIN (SELECT sensor_id, min(received_ns) AS lo FROM {db}.batches WHERE {meets} \
             GROUP BY sensor_id) f ON f.sensor_id = b.sensor_id WHERE b.received_ns < f.lo \
             GROUP BY b.sensor_id) p ON p.sensor_id = m.sensor_id"
        );
        let body = self.select("reading the batch log", &spans_sql)?;
        let mut r = Reader::new(&body);
        let mut out = Vec::new();
        let mut streaming = Vec::new();
        while !r.done() {
            let sensor = r.string()?;
            let (lo, hi) = (r.u64()?, r.u64()?);
            out.extend(self.read_batches(
                "reading the batch log",
                &format!(
                    "SELECT {BATCH_COLS} FROM {from} WHERE b.sensor_id = {} AND b.received_ns >= {lo} \
                     AND b.received_ns <= {hi} ORDER BY b.received_ns, b.seq",
                    lit(sensor.as_bytes())
                ),
            )?);
            streaming.push(lit(sensor.as_bytes()));
        }
        // The others: their last batch before the window.
        let others = if streaming.is_empty() {
            String::new()
        } else {
            format!("AND b.sensor_id NOT IN ({})", streaming.join(", "))
        };
        out.extend(self.read_batches(
            "reading the batch log",
            &format!(
                "SELECT {BATCH_COLS} FROM {from} WHERE b.flows > 0 AND b.last_ns < {since_ns} {others} \
                 ORDER BY b.received_ns DESC LIMIT 1 BY b.sensor_id"
            ),
        )?);
        out.sort_by(|a, b| a.key.sensor_id.cmp(&b.key.sensor_id));
        Ok(out)
    }

    fn sensor_certificates(&self, sensor: &str) -> Result<Vec<String>, StoreError> {
        let body = self.select(
            "reading the sensor's certificates",
            &format!(
                "SELECT fingerprint FROM {}.sensor_certs WHERE sensor_id = {} \
                 GROUP BY fingerprint ORDER BY min(first_ns), fingerprint",
                self.db,
                lit(sensor.as_bytes())
            ),
        )?;
        let mut r = Reader::new(&body);
        let mut out = Vec::new();
        while !r.done() {
            out.push(r.string()?);
        }
        Ok(out)
    }

    fn put_detector(&self, hash: &str, body: &str) -> Result<(), StoreError> {
        let mut row = Vec::new();
        put_str(&mut row, hash.as_bytes());
        put_str(&mut row, body.as_bytes());
        self.insert(
            "recording the detector settings",
            "detectors",
            "hash, body",
            &row,
        )
    }

    fn detector(&self, hash: &str) -> Result<Option<String>, StoreError> {
        let body = self.select(
            "reading the detector settings",
            &format!(
                "SELECT body FROM {}.detectors WHERE hash = {} LIMIT 1",
                self.db,
                lit(hash.as_bytes())
            ),
        )?;
        let mut r = Reader::new(&body);
        if r.done() {
            return Ok(None);
        }
        Ok(Some(r.string()?))
    }
}
