//! Ingest with dedupe and fencing: a group's flows in parallel `Native`
//! inserts through this collector's ingest table, then the batches' marks;
//! the sensor registry those marks make.

use std::collections::{HashMap, HashSet};

use prost::Message as _;

use super::http::HttpError;
use super::wire::{FlowBlock, put_str};
use super::{
    ClickHouseStore, MAX_ORDINAL, Reader, SEQ_BITS, flow_column_names, is_fenced, lit, stored_seq,
    valid_name,
};
use crate::model::ingest::{CommitOutcome, IngestBatch, SensorRecord, sum_stats};
use crate::store::{IngestStore, SensorRegistry, StoreError};
use vigil_proto::pb;

impl IngestStore for ClickHouseStore {
    /// Larger than the embedded store's: every insert makes a part that
    /// ClickHouse merges later (and, on 18.16, two files per column), and
    /// fewer, larger parts doubled the insert rate; doubled again from
    /// 524,288 it won back what the ingest tables' extra view costs
    /// (BENCHMARKS.md). The writer takes only what is waiting, so a lightly
    /// loaded collector still commits small groups at once.
    fn group_flows(&self) -> usize {
        1_048_576
    }

    /// Forgets each sensor's last mark, to be read again from the database:
    /// a sensor that went to another collector and came back (A → B → A)
    /// would otherwise find A judging its batches by what it had sent to A
    /// alone, storing again a batch B stored but could not acknowledge, and
    /// counting the batches B took as a gap.
    ///
    /// And fences out every other collector to which a sensor opened a
    /// stream since it last opened one here (by `streams`): one of them may
    /// still be storing a batch the sensor will now send here. That
    /// collector's other streams end too (their batches come back as
    /// [`CommitOutcome::Fenced`]); their sensors reconnect. One query and
    /// one insert for all the sensors, so that a restart's reconnecting
    /// sensors do not make a part each.
    fn streams_opened(&self, sensor_ids: &[&str]) -> Result<(), StoreError> {
        if sensor_ids.is_empty() {
            return Ok(());
        }
        if let Ok(mut known) = self.last_seq.lock() {
            known.retain(|(s, _), _| !sensor_ids.contains(&s.as_str()));
        }
        let mut ing = self
            .ingest
            .lock()
            .map_err(|_| StoreError::Internal("the ClickHouse store's state lock is poisoned"))?;
        let db = &self.db;
        // Per sensor: its latest stream here, and the other collectors'.
        let mut mine: HashMap<String, u64> = HashMap::new();
        let mut others: Vec<(String, String, u64)> = Vec::new();
        // A restart's thousands of reconnecting sensors, in statements
        // well within the server's `max_query_size` (256 KiB by default):
        // a sensor id is at most 64 bytes, 137 as a literal.
        for chunk in sensor_ids.chunks(1000) {
            let list = chunk
                .iter()
                .map(|s| lit(s.as_bytes()))
                .collect::<Vec<_>>()
                .join(", ");
            let body = self.select(
                "reading which collectors the sensors streamed to",
                &format!(
                    "SELECT sensor_id, writer, toUInt64(max(opened_ns)) FROM {db}.streams \
                     WHERE sensor_id IN ({list}) GROUP BY sensor_id, writer"
                ),
            )?;
            let mut rd = Reader::new(&body);
            while !rd.done() {
                let (sensor, writer, t) = (rd.string()?, rd.string()?, rd.u64()?);
                if writer == self.writer {
                    mine.insert(sensor, t);
                } else if writer.bytes().all(|b| b.is_ascii_hexdigit()) {
                    others.push((sensor, writer, t));
                }
            }
        }
        let mut fenced: Vec<&str> = Vec::new();
        for (sensor, writer, t) in &others {
            let since = mine.get(sensor).copied().unwrap_or(0);
            if *t >= since && !fenced.contains(&writer.as_str()) {
                self.fence(writer)?;
                fenced.push(writer);
            }
        }
        let now = vigil_proto::time::now_ns();
        let mut rows = Vec::new();
        for s in sensor_ids {
            let since = mine.get(*s).copied().unwrap_or(0);
            put_str(&mut rows, s.as_bytes());
            put_str(&mut rows, self.writer.as_bytes());
            rows.extend_from_slice(&now.max(since + 1).to_le_bytes());
        }
        self.insert(
            "recording the streams opened",
            "streams",
            "sensor_id, writer, opened_ns",
            &rows,
        )?;
        let epoch = ing.epoch;
        for s in sensor_ids {
            ing.opened.insert((*s).to_string(), epoch);
        }
        Ok(())
    }

    fn commit_many(&self, batches: &[&IngestBatch]) -> Result<Vec<CommitOutcome>, StoreError> {
        let mut known = self
            .last_seq
            .lock()
            .map_err(|_| StoreError::Internal("the ClickHouse store's state lock is poisoned"))?;
        let mut ing = self
            .ingest
            .lock()
            .map_err(|_| StoreError::Internal("the ClickHouse store's state lock is poisoned"))?;
        let ingest = self.ingest_table(&mut ing)?;
        // What this group will have stored, per sensor and incarnation:
        // written to `known` only once the whole group is in. (A failure
        // part-way through the loop below, ClickHouse gone, returns early;
        // had `known` already said a batch was stored, its resending would
        // be taken for a duplicate and lost.)
        let mut group: HashMap<(String, u64), (u64, u64)> = HashMap::new();
        let mut outcomes = Vec::with_capacity(batches.len());
        let (mut marks, mut dups, mut runs) = (Vec::new(), Vec::new(), Vec::new());
        let (mut pins, mut certs) = (Vec::new(), Vec::new());
        // The flow rows to insert: (batch, its stored seq, index in it).
        let mut rows: Vec<(&IngestBatch, u64, u32)> = Vec::new();
        for b in batches {
            if ing
                .opened
                .get(&b.sensor_id)
                .is_some_and(|e| *e != ing.epoch)
            {
                outcomes.push(CommitOutcome::Fenced);
                continue;
            }
            let ordinal = self.ordinal(&b.sensor_id, b.incarnation)?;
            let key = (b.sensor_id.clone(), ordinal);
            let base = stored_seq(ordinal, 0);
            let seq = stored_seq(ordinal, b.seq);
            let (last, flows_to) = match group.get(&key).or_else(|| known.get(&key)) {
                Some(v) => *v,
                None => self.db_last_seq(&b.sensor_id, ordinal)?,
            };
            // The first batch stored of an incarnation, while the sensor
            // has batches of another: its sequence numbers started again.
            let reset = |this: &Self| -> Result<bool, StoreError> {
                Ok(last == base && this.has_other_batches(&b.sensor_id, ordinal)?)
            };
            if seq > last && seq <= flows_to {
                // A commit stopped after (some of) the flows and before the
                // mark: ClickHouse writes an insert part by part (one per
                // day partition), so store the rows that are missing, by
                // their index in the batch, and the mark.
                let have = self.stored_indexes(b, seq)?;
                rows.extend(
                    (0..b.flows.len() as u32)
                        .filter(|i| !have.contains(i))
                        .map(|i| (*b, seq, i)),
                );
                put_mark(&mut marks, b, seq);
                put_pin(&mut pins, b);
                put_cert(&mut certs, b);
                let reset = reset(self)?;
                group.insert(key, (seq, flows_to));
                outcomes.push(CommitOutcome::Stored {
                    gap: seq - last - 1,
                    reset,
                });
                continue;
            }
            if seq <= last {
                put_str(&mut dups, b.sensor_id.as_bytes());
                dups.extend_from_slice(&seq.to_le_bytes());
                dups.extend_from_slice(&b.received_ns.to_le_bytes());
                group.insert(key, (last, flows_to));
                outcomes.push(CommitOutcome::Duplicate);
                continue;
            }
            rows.extend((0..b.flows.len() as u32).map(|i| (*b, seq, i)));
            put_mark(&mut marks, b, seq);
            put_pin(&mut pins, b);
            put_cert(&mut certs, b);
            if let Some(s) = &b.stats {
                put_str(&mut runs, b.sensor_id.as_bytes());
                runs.extend_from_slice(&s.run_id.to_le_bytes());
                runs.extend_from_slice(&b.received_ns.to_le_bytes());
                put_str(&mut runs, &s.encode_to_vec());
            }
            let gap = seq - last - 1;
            let reset = reset(self)?;
            group.insert(key, (seq, seq));
            outcomes.push(CommitOutcome::Stored { gap, reset });
        }
        // The flows in parallel inserts, each encoded by its own thread and
        // parsed and written by a server thread of its own; the marks only
        // once all are in. Columns named in the statement as in the block:
        // the table's own column order does not matter (a test checks).
        let flow_insert = format!(
            "INSERT INTO {}.{ingest} ({}) FORMAT Native",
            self.db,
            flow_column_names()
        );
        let insert_flows = |part: &[(&IngestBatch, u64, u32)]| -> Result<(), HttpError> {
            let spare = self.blocks.lock().ok().and_then(|mut v| v.pop());
            let mut block = spare.unwrap_or_else(|| FlowBlock::with_rows(part.len()));
            block.clear();
            let mut scratch = Vec::new();
            for (b, seq, i) in part {
                block.push(&b.sensor_id, *seq, *i, &b.flows[*i as usize], &mut scratch);
            }
            let res = self.http.insert_parts(&flow_insert, &block.parts());
            if let Ok(mut v) = self.blocks.lock() {
                v.push(block);
            }
            res
        };
        let parts = split_rows(rows.len(), self.parallel_inserts);
        let flows = match parts.as_slice() {
            [] => Ok(()),
            [one] => insert_flows(&rows[one.clone()]),
            _ => std::thread::scope(|sc| {
                let handles: Vec<_> = parts
                    .iter()
                    .map(|p| sc.spawn(|| insert_flows(&rows[p.clone()])))
                    .collect();
                // Any failure will do: whether it means fenced is asked
                // of the server below.
                handles.into_iter().try_for_each(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(HttpError::Io {
                            addr: self.http.addr(),
                            source: std::io::Error::other("an insert thread panicked"),
                        })
                    })
                })
            }),
        };
        let flows = flows.map_err(|e| {
            // The server may refuse an insert into a dropped table before
            // it has read the body, and close the connection: the client
            // then sees the connection reset, not the error. So any failed
            // insert asks whether the table is still there.
            if is_fenced(&e, &ingest) || self.table_gone(&ingest) {
                // Another collector took one of this store's sensors over
                // and dropped the ingest table. The streams open here may
                // carry batches that collector stores now: they are
                // refused from here on (their sensors reconnect), and a
                // new ingest table serves the streams opened after.
                tracing::warn!(table = %ingest, "fenced out by another collector: streams open here end");
                ing.table = None;
                ing.epoch += 1;
                StoreError::Fenced { source: e }
            } else {
                StoreError::ClickHouse {
                    op: "inserting flows",
                    source: e,
                }
            }
        });
        let res = flows
            .and_then(|()| {
                self.insert(
                    "recording sensor counters",
                    "sensor_runs",
                    "sensor_id, run_id, updated_ns, stats",
                    &runs,
                )
            })
            .and_then(|()| {
                self.insert(
                    "recording sensor certificates",
                    "sensor_certs",
                    "sensor_id, fingerprint, first_ns",
                    &certs,
                )
            })
            .and_then(|()| {
                self.insert(
                    "pinning sensor keys",
                    "sensor_keys",
                    "sensor_id, public_key, pinned_ns",
                    &pins,
                )
            })
            .and_then(|()| {
                self.insert(
                    "marking the batches stored",
                    "batches",
                    MARK_COLUMNS,
                    &marks,
                )
            })
            .and_then(|()| {
                self.insert(
                    "counting duplicates",
                    "duplicates",
                    "sensor_id, seq, received_ns",
                    &dups,
                )
            });
        if res.is_err() {
            // What is known is no longer sure: read it again next time.
            known.clear();
        } else {
            known.extend(group);
        }
        res.map(|()| outcomes)
    }
}

impl SensorRegistry for ClickHouseStore {
    fn sensors(&self) -> Result<Vec<SensorRecord>, StoreError> {
        let db = &self.db;
        // Per sensor and incarnation ordinal: marks, then summed per sensor.
        let body = self.select(
            "reading the sensors' marks",
            &format!(
                "SELECT sensor_id, toUInt64(intDiv(seq, {})) AS ord, max(seq), count(), sum(flows), \
                 max(received_ns), uniqExact(seq) \
                 FROM {db}.batches GROUP BY sensor_id, ord ORDER BY sensor_id, ord",
                1u64 << SEQ_BITS
            ),
        )?;
        let mut r = Reader::new(&body);
        let mut out: Vec<SensorRecord> = Vec::new();
        // Per sensor: the ordinal of its latest batch.
        let mut latest: Vec<u64> = Vec::new();
        while !r.done() {
            let sensor_id = r.string()?;
            let (ord, max_seq, batches, flows, last_seen_ns, distinct) =
                (r.u64()?, r.u64()?, r.u64()?, r.u64()?, r.u64()?, r.u64()?);
            let own = max_seq - stored_seq(ord, 0);
            if out.last().is_none_or(|x| x.sensor_id != sensor_id) {
                out.push(SensorRecord {
                    sensor_id,
                    ..SensorRecord::default()
                });
                latest.push(ord);
            } else if let Some(rec) = out.last_mut() {
                rec.seq_resets += 1;
            }
            let (rec, lat) = (out.last_mut(), latest.last_mut());
            let (Some(rec), Some(lat)) = (rec, lat) else {
                continue;
            };
            rec.batches += batches;
            rec.flows += flows;
            rec.seq_gaps += own.saturating_sub(distinct);
            if last_seen_ns >= rec.last_seen_ns {
                rec.last_seen_ns = last_seen_ns;
                rec.last_seq = own;
                *lat = ord;
            }
        }
        let body = self.select(
            "reading the sensors' incarnations",
            &format!("SELECT sensor_id, incarnation, ordinal FROM {db}.incarnations FINAL"),
        )?;
        let mut r = Reader::new(&body);
        while !r.done() {
            let (s, inc, ord) = (r.string()?, r.u64()?, r.u64()?);
            if let Some(i) = out.iter().position(|x| x.sensor_id == s)
                && latest[i] == ord
            {
                out[i].incarnation = inc;
            }
        }
        let body = self.select(
            "reading the duplicate counts",
            &format!("SELECT sensor_id, count() FROM {db}.duplicates GROUP BY sensor_id"),
        )?;
        let mut r = Reader::new(&body);
        while !r.done() {
            let (s, n) = (r.string()?, r.u64()?);
            if let Some(rec) = out.iter_mut().find(|x| x.sensor_id == s) {
                rec.duplicates = n;
            }
        }
        let body = self.select("reading the sensors' run counters", &format!(
            "SELECT sensor_id, stats FROM {db}.sensor_runs FINAL ORDER BY sensor_id, updated_ns, run_id"
        ))?;
        let mut r = Reader::new(&body);
        let mut runs: HashMap<String, Vec<pb::SensorStats>> = HashMap::new();
        while !r.done() {
            let s = r.string()?;
            let st = pb::SensorStats::decode(r.bytes()?)
                .map_err(|e| self.corrupt(format!("sensor stats: {e}")))?;
            runs.entry(s).or_default().push(st);
        }
        for rec in &mut out {
            if let Some(v) = runs.remove(&rec.sensor_id) {
                rec.stats = sum_stats(v);
            }
        }
        Ok(out)
    }
}

impl ClickHouseStore {
    /// Whether the server answers that table `name` does not exist (not
    /// when it does not answer).
    fn table_gone(&self, name: &str) -> bool {
        let Ok(body) = self.select(
            "checking for the ingest table",
            &format!(
                "SELECT toUInt64(count()) FROM system.tables WHERE database = {} AND name = {}",
                lit(self.db.as_bytes()),
                lit(name.as_bytes())
            ),
        ) else {
            return false;
        };
        matches!(Reader::new(&body).u64(), Ok(0))
    }

    /// Stops collector `writer` from writing flows: drops its ingest
    /// tables (waiting for the inserts running into them), then their
    /// views.
    fn fence(&self, writer: &str) -> Result<(), StoreError> {
        let db = &self.db;
        let prefix = format!("ingest_{writer}_");
        let body = self.select(
            "listing the ingest tables to fence",
            &format!(
                "SELECT name, engine FROM system.tables WHERE database = {} AND name LIKE {}",
                lit(db.as_bytes()),
                lit(format!("{prefix}%").as_bytes())
            ),
        )?;
        let mut rd = Reader::new(&body);
        let (mut tables, mut views) = (Vec::new(), Vec::new());
        while !rd.done() {
            let (name, engine) = (rd.string()?, rd.string()?);
            // Written into a statement: checked.
            if !name.starts_with(&prefix) || !valid_name(&name) {
                continue;
            }
            if engine == "Null" {
                tables.push(name);
            } else {
                views.push(name);
            }
        }
        for name in tables.iter().chain(&views) {
            tracing::info!(table = %format!("{db}.{name}"), "fencing out the collector the sensor left");
            self.exec(
                "fencing out another collector",
                &format!("DROP TABLE IF EXISTS {db}.{name}{}", self.drop_sync),
            )?;
        }
        Ok(())
    }

    /// The ordinal of a sensor's incarnation: 0 for incarnation 0 (a
    /// sensor that predates them), else the one recorded, else the next
    /// free one, recorded now.
    fn ordinal(&self, sensor: &str, incarnation: u64) -> Result<u64, StoreError> {
        if incarnation == 0 {
            return Ok(0);
        }
        let mut cache = self
            .ordinals
            .lock()
            .map_err(|_| StoreError::Internal("the ClickHouse store's state lock is poisoned"))?;
        let key = (sensor.to_string(), incarnation);
        if let Some(o) = cache.get(&key) {
            return Ok(*o);
        }
        let body = self.select(
            "reading a sensor's incarnations",
            &format!(
                "SELECT incarnation, ordinal FROM {}.incarnations FINAL WHERE sensor_id = {}",
                self.db,
                lit(sensor.as_bytes())
            ),
        )?;
        let mut r = Reader::new(&body);
        let mut top = 0;
        while !r.done() {
            let (inc, ord) = (r.u64()?, r.u64()?);
            top = top.max(ord);
            cache.insert((sensor.to_string(), inc), ord);
        }
        if let Some(o) = cache.get(&key) {
            return Ok(*o);
        }
        let ord = top + 1;
        if ord > MAX_ORDINAL {
            return Err(self.corrupt(format!(
                "sensor {sensor}: more than {MAX_ORDINAL} spool incarnations"
            )));
        }
        let mut row = Vec::new();
        put_str(&mut row, sensor.as_bytes());
        row.extend_from_slice(&incarnation.to_le_bytes());
        row.extend_from_slice(&ord.to_le_bytes());
        row.extend_from_slice(&vigil_proto::time::now_ns().to_le_bytes());
        self.insert(
            "recording a spool incarnation",
            "incarnations",
            "sensor_id, incarnation, ordinal, created_ns",
            &row,
        )?;
        cache.insert(key, ord);
        Ok(ord)
    }

    /// Whether the sensor has batches stored under another incarnation.
    fn has_other_batches(&self, sensor: &str, ordinal: u64) -> Result<bool, StoreError> {
        let (lo, hi) = (stored_seq(ordinal, 0), stored_seq(ordinal + 1, 0));
        let body = self.select(
            "reading a sensor's other incarnations",
            &format!(
                "SELECT toUInt64(count()) FROM {}.batches WHERE sensor_id = {} AND (seq < {lo} OR seq >= {hi})",
                self.db,
                lit(sensor.as_bytes())
            ),
        )?;
        Ok(Reader::new(&body).u64()? > 0)
    }

    /// The highest stored seq of a sensor's incarnation with a `batches`
    /// mark, and the highest with flows stored (higher when a commit
    /// stopped between the two); the incarnation's base when none.
    fn db_last_seq(&self, sensor: &str, ordinal: u64) -> Result<(u64, u64), StoreError> {
        let s = lit(sensor.as_bytes());
        let db = &self.db;
        let (lo, hi) = (stored_seq(ordinal, 0), stored_seq(ordinal + 1, 0));
        let within = format!("sensor_id = {s} AND seq > {lo} AND seq < {hi}");
        // Scalar subqueries are Nullable in current releases (not in
        // 18.16, where the max of nothing is 0): `ifNull` makes both plain
        // UInt64, `greatest` the base.
        let body = self.select("reading a sensor's last marks", &format!(
            "SELECT greatest(toUInt64(ifNull((SELECT max(seq) FROM {db}.batches WHERE {within}), 0)), toUInt64({lo})), \
             greatest(toUInt64(ifNull((SELECT max(seq) FROM {db}.flows WHERE {within}), 0)), toUInt64({lo}))"
        ))?;
        let mut r = Reader::new(&body);
        Ok((r.u64()?, r.u64()?))
    }

    /// Indexes of a batch's rows already in `flows`, by its stored seq.
    fn stored_indexes(&self, b: &IngestBatch, seq: u64) -> Result<HashSet<u32>, StoreError> {
        let (lo, hi) = b.flows.iter().fold((u64::MAX, 0), |(lo, hi), r| {
            (lo.min(r.first_seen_ns), hi.max(r.first_seen_ns))
        });
        let body = self.select(
            "reading a batch's stored rows",
            &format!(
                "SELECT idx FROM {}.flows WHERE first_ns >= {lo} AND first_ns <= {hi} \
             AND sensor_id = {} AND seq = {seq}",
                self.db,
                lit(b.sensor_id.as_bytes()),
            ),
        )?;
        let mut r = Reader::new(&body);
        let mut out = HashSet::new();
        while !r.done() {
            let s = r.take(4)?;
            out.insert(u32::from_le_bytes([s[0], s[1], s[2], s[3]]));
        }
        Ok(out)
    }
}

/// `n` rows as at most `k` ranges of about equal size; one range when
/// there are fewer than [`MIN_PARALLEL_ROWS`] rows a range, none for none.
pub(super) fn split_rows(n: usize, k: usize) -> Vec<std::ops::Range<usize>> {
    let k = k.clamp(1, (n / MIN_PARALLEL_ROWS).max(1));
    (0..k)
        .map(|i| n * i / k..n * (i + 1) / k)
        .filter(|r| !r.is_empty())
        .collect()
}

/// Fewest rows worth an insert of their own.
const MIN_PARALLEL_ROWS: usize = 16_384;

/// The columns [`put_mark`] writes.
const MARK_COLUMNS: &str =
    "sensor_id, seq, flows, received_ns, first_ns, last_ns, stats, public_key, root, signature";

/// Appends a batch's `batches` row ([`MARK_COLUMNS`]).
fn put_mark(out: &mut Vec<u8>, b: &IngestBatch, seq: u64) {
    put_str(out, b.sensor_id.as_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(b.flows.len() as u64).to_le_bytes());
    out.extend_from_slice(&b.received_ns.to_le_bytes());
    let first = b.flows.iter().map(|r| r.first_seen_ns).min().unwrap_or(0);
    let last = b.flows.iter().map(|r| r.last_seen_ns).max().unwrap_or(0);
    out.extend_from_slice(&first.to_le_bytes());
    out.extend_from_slice(&last.to_le_bytes());
    put_str(
        out,
        &b.stats
            .as_ref()
            .map(|s| s.encode_to_vec())
            .unwrap_or_default(),
    );
    let att = b.attestation.as_ref();
    put_str(out, att.map_or(&[][..], |a| &a.public_key));
    put_str(out, att.map_or(&[][..], |a| &a.root));
    put_str(out, att.map_or(&[][..], |a| &a.signature));
}

/// Appends a `sensor_certs` row for a batch that carries its stream's
/// certificate.
fn put_cert(out: &mut Vec<u8>, b: &IngestBatch) {
    if let Some(fp) = &b.certificate {
        put_str(out, b.sensor_id.as_bytes());
        put_str(out, fp.as_bytes());
        out.extend_from_slice(&b.received_ns.to_le_bytes());
    }
}

/// Appends a `sensor_keys` row for a batch that pins its sensor's key.
fn put_pin(out: &mut Vec<u8>, b: &IngestBatch) {
    if let Some(a) = b.attestation.as_ref().filter(|a| a.pin) {
        put_str(out, b.sensor_id.as_bytes());
        put_str(out, &a.public_key);
        out.extend_from_slice(&b.received_ns.to_le_bytes());
    }
}
