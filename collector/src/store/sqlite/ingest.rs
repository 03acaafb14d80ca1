//! Ingest with dedupe: a group of batches, their flows, their roll-up
//! minutes and their dedupe marks in one transaction; and the sensor
//! registry those marks make.

use std::collections::BTreeMap;

use prost::Message as _;
use rusqlite::{OptionalExtension as _, TransactionBehavior, params};
use vigil_proto::{FlowRecord, pb};

use super::SqliteStore;
use super::rows::{FLOW_PARAMS, ROWS_PER_INSERT, bind_flow, insert_sql};
use crate::model::query::Totals;
use crate::store::plan::NS_PER_MIN;
use crate::store::{
    CommitOutcome, IngestBatch, IngestStore, SensorRecord, SensorRegistry, StoreError, i64_of,
    sum_stats,
};

impl IngestStore for SqliteStore {
    fn commit_many(&self, batches: &[&IngestBatch]) -> Result<Vec<CommitOutcome>, StoreError> {
        let mut conn = self.lock_writer();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.err("beginning a transaction", e))?;
        let mut rollups = Rollups::default();
        let mut out = Vec::with_capacity(batches.len());
        for b in batches {
            out.push(self.commit_in(&tx, b, &mut rollups)?);
        }
        upsert_rollups(&tx, &rollups).map_err(|e| self.err("updating roll-ups", e))?;
        tx.commit().map_err(|e| self.err("committing", e))?;
        Ok(out)
    }
}

impl SensorRegistry for SqliteStore {
    fn sensors(&self) -> Result<Vec<SensorRecord>, StoreError> {
        self.with_reader(|c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT id, name, last_seq, batches, flows, duplicates, seq_gaps, last_seen_ns, incarnation, seq_resets FROM sensors ORDER BY name",
                )
                .map_err(|e| self.err("preparing the sensor list", e))?;
            let rows: Vec<(i64, SensorRecord)> = stmt
                .query_map([], |r| {
                    let u = |i| r.get::<_, i64>(i).map(|v| v as u64);
                    Ok((
                        r.get(0)?,
                        SensorRecord {
                            sensor_id: r.get(1)?,
                            last_seq: u(2)?,
                            batches: u(3)?,
                            flows: u(4)?,
                            duplicates: u(5)?,
                            seq_gaps: u(6)?,
                            last_seen_ns: u(7)?,
                            incarnation: u(8)?,
                            seq_resets: u(9)?,
                            id_conflicts: 0,
                            stats: pb::SensorStats::default(),
                        },
                    ))
                })
                .and_then(|it| it.collect())
                .map_err(|e| self.err("listing sensors", e))?;
            let mut out = Vec::with_capacity(rows.len());
            let mut runs = c
                .prepare_cached(
                    "SELECT stats FROM sensor_runs WHERE sensor = ?1 ORDER BY updated_ns, run_id",
                )
                .map_err(|e| self.err("preparing the run list", e))?;
            for (id, mut rec) in rows {
                let blobs: Vec<Vec<u8>> = runs
                    .query_map([id], |r| r.get(0))
                    .and_then(|it| it.collect())
                    .map_err(|e| self.err("listing sensor runs", e))?;
                let stats = blobs
                    .iter()
                    .map(|b| pb::SensorStats::decode(b.as_slice()))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| {
                        self.corrupt(format!("sensor {}: run counters: {e}", rec.sensor_id))
                    })?;
                rec.stats = sum_stats(stats);
                out.push(rec);
            }
            Ok(out)
        })
    }
}

impl SqliteStore {
    /// One batch inside an open transaction; roll-up sums go to `rollups`.
    fn commit_in(
        &self,
        tx: &rusqlite::Transaction<'_>,
        b: &IngestBatch,
        rollups: &mut Rollups,
    ) -> Result<CommitOutcome, StoreError> {
        let seq = i64_of("seq", b.seq)?;
        // Stored as its bits: incarnations are random 64-bit values.
        let incarnation = b.incarnation as i64;
        tx.execute(
            "INSERT OR IGNORE INTO sensors (name) VALUES (?1)",
            [&b.sensor_id],
        )
        .map_err(|e| self.err("registering a sensor", e))?;
        let (sensor, stored_before): (i64, bool) = tx
            .query_row(
                "SELECT id, batches > 0 FROM sensors WHERE name = ?1",
                [&b.sensor_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| self.err("reading the sensor", e))?;
        // Dedupe is per (sensor, incarnation): a new spool starts at seq 1.
        let mark: Option<i64> = tx
            .query_row(
                "SELECT last_seq FROM sensor_incarnations WHERE sensor = ?1 AND incarnation = ?2",
                params![sensor, incarnation],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err("reading the dedupe mark", e))?;
        let last_seq = mark.unwrap_or(0);
        if seq <= last_seq {
            tx.execute(
                "UPDATE sensors SET duplicates = duplicates + 1 WHERE id = ?1",
                [sensor],
            )
            .map_err(|e| self.err("counting a duplicate", e))?;
            return Ok(CommitOutcome::Duplicate);
        }
        let reset = mark.is_none() && stored_before;
        let gap = (seq - last_seq - 1) as u64;
        let batch = self.insert_batch(tx, sensor, b)?;
        {
            // Rows go in multi-row statements of ROWS_PER_INSERT (one
            // statement step per 32 rows instead of per row), the rest one
            // by one; values are bound in place, without building a list.
            let mut chunks = b.flows.chunks_exact(ROWS_PER_INSERT);
            let mut next = 0usize;
            if chunks.len() > 0 {
                let mut ins = tx
                    .prepare_cached(&insert_sql(ROWS_PER_INSERT))
                    .map_err(|e| self.err("preparing the flow insert", e))?;
                for chunk in &mut chunks {
                    let idx = next;
                    next += chunk.len();
                    for (i, r) in chunk.iter().enumerate() {
                        bind_flow(&mut ins, i * FLOW_PARAMS, (sensor, batch, idx + i), r)
                            .map_err(|e| self.bind_err(e))?;
                        rollups.add(r);
                    }
                    ins.raw_execute()
                        .map_err(|e| self.err("inserting flows", e))?;
                }
            }
            let rest = chunks.remainder();
            if !rest.is_empty() {
                let mut one = tx
                    .prepare_cached(&insert_sql(1))
                    .map_err(|e| self.err("preparing the flow insert", e))?;
                for r in rest {
                    bind_flow(&mut one, 0, (sensor, batch, next), r)
                        .map_err(|e| self.bind_err(e))?;
                    next += 1;
                    rollups.add(r);
                    one.raw_execute()
                        .map_err(|e| self.err("inserting a flow", e))?;
                }
            }
        }
        let n = i64_of("flows", b.flows.len() as u64)?;
        let received = i64_of("received_ns", b.received_ns)?;
        tx.execute(
            "INSERT INTO sensor_incarnations (sensor, incarnation, last_seq, first_seen_ns)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (sensor, incarnation) DO UPDATE SET last_seq = excluded.last_seq",
            params![sensor, incarnation, seq, received],
        )
        .map_err(|e| self.err("advancing the dedupe mark", e))?;
        tx.execute(
            "UPDATE sensors SET last_seq = ?2, batches = batches + 1, flows = flows + ?3,
             seq_gaps = seq_gaps + ?4, last_seen_ns = ?5, incarnation = ?6,
             seq_resets = seq_resets + ?7 WHERE id = ?1",
            params![
                sensor,
                seq,
                n,
                i64_of("gap", gap)?,
                received,
                incarnation,
                i64::from(reset)
            ],
        )
        .map_err(|e| self.err("updating the sensor", e))?;
        if let Some(stats) = &b.stats {
            tx.execute(
                "INSERT OR REPLACE INTO sensor_runs (sensor, run_id, updated_ns, stats) VALUES (?1, ?2, ?3, ?4)",
                params![
                    sensor,
                    stats.run_id as i64,
                    i64_of("received_ns", b.received_ns)?,
                    stats.encode_to_vec()
                ],
            )
            .map_err(|e| self.err("recording sensor counters", e))?;
        }
        Ok(CommitOutcome::Stored { gap, reset })
    }
}

impl SqliteStore {
    /// Records a batch (its counters, its event-time span and its
    /// sensor's attestation) before its flows, whose rows follow from
    /// `first_row` on; pins the sensor's key with its first attested batch.
    /// Returns the batch's row id.
    fn insert_batch(
        &self,
        tx: &rusqlite::Transaction<'_>,
        sensor: i64,
        b: &IngestBatch,
    ) -> Result<i64, StoreError> {
        let first_row: i64 = tx
            .query_row("SELECT COALESCE(MAX(rowid), 0) + 1 FROM flows", [], |r| {
                r.get(0)
            })
            .map_err(|e| self.err("reading the next flow row", e))?;
        let (first, last) = b.flows.iter().fold((u64::MAX, 0), |(f, l), r| {
            (f.min(r.first_seen_ns), l.max(r.last_seen_ns))
        });
        let (first, last) = if b.flows.is_empty() {
            (0, 0)
        } else {
            (first, last)
        };
        let att = b.attestation.as_ref();
        tx.prepare_cached(
            "INSERT INTO batches (sensor, incarnation, seq, flows, first_row, received_ns, \
             first_ns, last_ns, stats, public_key, root, signature) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )
        .and_then(|mut st| {
            st.execute(params![
                sensor,
                b.incarnation as i64,
                b.seq as i64,
                b.flows.len() as i64,
                first_row,
                i64_of("received_ns", b.received_ns).unwrap_or(i64::MAX),
                i64_of("first_ns", first).unwrap_or(i64::MAX),
                i64_of("last_ns", last).unwrap_or(i64::MAX),
                b.stats.as_ref().map(|s| s.encode_to_vec()),
                att.map(|a| a.public_key.as_slice()),
                att.map(|a| &a.root[..]),
                att.map(|a| a.signature.as_slice()),
            ])
        })
        .map_err(|e| self.err("recording the batch", e))?;
        let id = tx.last_insert_rowid();
        if let Some(fp) = &b.certificate {
            tx.execute(
                "INSERT OR IGNORE INTO sensor_certs (sensor, fingerprint, first_ns) VALUES (?1, ?2, ?3)",
                params![b.sensor_id, fp, b.received_ns as i64],
            )
            .map_err(|e| self.err("recording the sensor's certificate", e))?;
        }
        if let Some(a) = att.filter(|a| a.pin) {
            tx.execute(
                "INSERT OR IGNORE INTO sensor_keys (sensor, public_key, pinned_ns) VALUES (?1, ?2, ?3)",
                params![b.sensor_id, a.public_key, b.received_ns as i64],
            )
            .map_err(|e| self.err("pinning the sensor's key", e))?;
        }
        Ok(id)
    }
}

/// Per-minute sums of one batch, keyed by table key. Sorted maps, so the
/// upserts walk each roll-up B-tree in key order.
#[derive(Default)]
struct Rollups {
    dport: BTreeMap<(u64, u8, u16), Totals>,
    proto: BTreeMap<(u64, u8), Totals>,
}

impl Rollups {
    fn add(&mut self, r: &FlowRecord) {
        let m = r.first_seen_ns / NS_PER_MIN;
        let t = Totals {
            flows: 1,
            packets: r.packets(),
            bytes: r.bytes(),
        };
        if let Some(p) = r.dst_port {
            self.dport.entry((m, r.proto, p)).or_default().add(t);
        }
        self.proto.entry((m, r.proto)).or_default().add(t);
    }
}

fn totals_params(t: &Totals) -> Result<[i64; 3], StoreError> {
    Ok([
        i64_of("flows", t.flows)?,
        i64_of("packets", t.packets)?,
        i64_of("bytes", t.bytes)?,
    ])
}

fn upsert_rollups(tx: &rusqlite::Transaction<'_>, r: &Rollups) -> rusqlite::Result<()> {
    let conv = |t: &Totals| {
        totals_params(t).map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))
    };
    let mut st = tx.prepare_cached(
        "INSERT INTO rollup_dport (minute, proto, k, flows, packets, bytes) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (minute, proto, k) DO UPDATE SET flows = flows + excluded.flows,
         packets = packets + excluded.packets, bytes = bytes + excluded.bytes",
    )?;
    for ((m, proto, port), t) in &r.dport {
        let [n, p, b] = conv(t)?;
        st.execute(params![*m as i64, proto, port, n, p, b])?;
    }
    let mut st = tx.prepare_cached(
        "INSERT INTO rollup_proto (minute, k, flows, packets, bytes) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (minute, k) DO UPDATE SET flows = flows + excluded.flows,
         packets = packets + excluded.packets, bytes = bytes + excluded.bytes",
    )?;
    for ((m, proto), t) in &r.proto {
        let [n, p, b] = conv(t)?;
        st.execute(params![*m as i64, proto, n, p, b])?;
    }
    Ok(())
}
