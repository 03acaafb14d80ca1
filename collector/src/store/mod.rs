//! Flow storage: one trait, engines behind it.
//!
//! [`FlowStore`] is what ingest and query need of a store. The embedded
//! engine is SQLite ([`sqlite`]); the scale-out engine (ClickHouse) implements
//! the same trait. Calls block: async callers run them on blocking threads.
//!
//! Exactly-once: [`FlowStore::commit`] stores a batch's flows and its
//! `(sensor_id, seq)` mark atomically. A sensor sends its batches in `seq`
//! order and resends unacknowledged ones in the same order, so a batch whose
//! `seq` is not above the sensor's highest committed `seq` has been stored
//! before and is dropped as a duplicate.

pub mod clickhouse;
pub mod sqlite;

use std::io;
use std::path::PathBuf;

use thiserror::Error;
use vigil_proto::{FlowRecord, pb};

use crate::detect::{Alert, AlertKind, AlertUpdate, EvidenceRef, Severity};
use crate::query::{Filter, SeriesPoint, TimeRange, TopBy, TopKey, TopRow, Totals};

/// Which alerts to list.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AlertQuery {
    /// Alerts whose last evidence is at or after this, ns.
    pub since_ns: Option<u64>,
    /// Alerts whose first evidence is before this, ns.
    pub until_ns: Option<u64>,
    /// Only this kind.
    pub kind: Option<AlertKind>,
    /// Only this severity or above.
    pub min_severity: Option<Severity>,
    /// Only this asset.
    pub asset: Option<String>,
    /// At most this many, newest first (0: 1000).
    pub limit: usize,
}

/// A validated batch from one sensor.
#[derive(Clone, Debug)]
pub struct IngestBatch {
    /// The reporting sensor.
    pub sensor_id: String,
    /// The batch's sequence number (≥ 1).
    pub seq: u64,
    /// The flow records.
    pub flows: Vec<FlowRecord>,
    /// The sensor's counters when it sent the batch.
    pub stats: Option<pb::SensorStats>,
    /// Collector time of arrival, ns since the epoch.
    pub received_ns: u64,
}

/// What [`FlowStore::commit`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Stored, with this many sequence numbers skipped since the previous
    /// batch of the sensor (batches its spool dropped).
    Stored {
        /// Missing sequence numbers before this batch.
        gap: u64,
    },
    /// Stored before; nothing written but the duplicate count.
    Duplicate,
    /// Not stored: the batch came on a stream this collector opened before
    /// another collector took the sensor over and fenced this one out (see
    /// [`FlowStore::streams_opened`]). The stream must end; the sensor sends
    /// the batch again on its next one.
    Fenced,
}

/// What the store knows of a sensor.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SensorRecord {
    /// The sensor's id.
    pub sensor_id: String,
    /// Highest committed sequence number.
    pub last_seq: u64,
    /// Batches stored.
    pub batches: u64,
    /// Flow records stored.
    pub flows: u64,
    /// Duplicate batches dropped.
    pub duplicates: u64,
    /// Sequence numbers never received (the sensor's spool dropped them).
    pub seq_gaps: u64,
    /// Arrival of the latest stored batch, ns since the epoch.
    pub last_seen_ns: u64,
    /// Counters summed over the sensor's runs (spool counters: the latest).
    pub stats: pb::SensorStats,
}

/// Flows held and removed by retention.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Flow records deleted.
    pub deleted_flows: u64,
}

/// A store operation failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The database refused an operation.
    #[error("{path}: {op}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The database's error.
        #[source]
        source: rusqlite::Error,
    },
    /// A file system operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Stored data does not decode: a bug or a damaged database.
    #[error("{path}: corrupt row: {what}")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What did not decode.
        what: String,
    },
    /// ClickHouse refused an operation or could not be reached.
    #[error("clickhouse: {0}")]
    ClickHouse(String),
    /// The query asks for something no store answers (a time series step
    /// under a second, too many intervals).
    #[error("query: {0}")]
    BadQuery(String),
    /// The batch cannot be represented (a value beyond the store's range).
    #[error("batch rejected by the store: {0}")]
    Unrepresentable(String),
}

/// A flow store.
pub trait FlowStore: Send + Sync {
    /// Stores a batch and its dedupe mark in one transaction; returns after
    /// the commit.
    fn commit(&self, batch: &IngestBatch) -> Result<CommitOutcome, StoreError>;

    /// Stores several batches in one transaction (group commit), in order;
    /// all or none. The outcome of each, in order.
    fn commit_many(&self, batches: &[&IngestBatch]) -> Result<Vec<CommitOutcome>, StoreError> {
        batches.iter().map(|b| self.commit(b)).collect()
    }

    /// These sensors opened a stream to this collector. Whatever the store
    /// remembers of their progress may be stale: since they last wrote
    /// here, they may have sent batches to another collector sharing the
    /// database. A store several collectors share also stops the
    /// collectors they left from writing any more (one may still be storing
    /// a batch its sensor will now send here). Called by the writer before
    /// it commits the streams' first batches; an error fails that commit.
    /// Nothing to do for a store only one collector writes.
    fn streams_opened(&self, _sensor_ids: &[&str]) -> Result<(), StoreError> {
        Ok(())
    }

    /// Most flows worth gathering into one [`FlowStore::commit_many`]: the
    /// collector's writer takes every batch waiting, up to this.
    fn group_flows(&self) -> usize {
        65_536
    }

    /// Flow records matching `filter` in `range`, oldest first, at most
    /// `limit`, each with its sensor id.
    fn flows(
        &self,
        filter: &Filter,
        range: TimeRange,
        limit: usize,
    ) -> Result<Vec<(String, FlowRecord)>, StoreError>;

    /// Totals over the records matching `filter` in `range`.
    fn count(&self, filter: &Filter, range: TimeRange) -> Result<Totals, StoreError>;

    /// The `limit` largest groups by `key`, ranked by `by`.
    fn top(
        &self,
        filter: &Filter,
        range: TimeRange,
        key: TopKey,
        by: TopBy,
        limit: usize,
    ) -> Result<Vec<TopRow>, StoreError>;

    /// Totals of the records matching `filter` in `range` per interval of
    /// `step_ns` (aligned to the epoch, by `first_seen`), oldest first: the
    /// intervals that hold flows, at most
    /// [`MAX_SERIES_POINTS`](crate::query::MAX_SERIES_POINTS)` + 1` of them.
    fn series(
        &self,
        filter: &Filter,
        range: TimeRange,
        step_ns: u64,
    ) -> Result<Vec<SeriesPoint>, StoreError>;

    /// Every sensor the store has heard of.
    fn sensors(&self) -> Result<Vec<SensorRecord>, StoreError>;

    /// Applies the configured retention at time `now_ns`. Flows that are
    /// the evidence of an alert are kept.
    fn enforce_retention(&self, now_ns: u64) -> Result<RetentionReport, StoreError>;

    /// Stores alerts opened or updated: each alert's row is replaced and
    /// the evidence it carries is added to what the store has.
    fn put_alerts(&self, updates: &[AlertUpdate]) -> Result<(), StoreError>;

    /// Alerts matching `q`, newest first, without their evidence lists.
    fn alerts(&self, q: &AlertQuery) -> Result<Vec<Alert>, StoreError>;

    /// One alert with its evidence references.
    fn alert(&self, id: u64) -> Result<Option<Alert>, StoreError>;

    /// The stored flow records the evidence references name, oldest first.
    fn evidence_flows(
        &self,
        evidence: &[EvidenceRef],
    ) -> Result<Vec<(String, FlowRecord)>, StoreError>;

    /// The largest alert id stored (0: none).
    fn max_alert_id(&self) -> Result<u64, StoreError>;
}

/// Sums a sensor's per-run counters, given in the order of their latest
/// report. Spool drop counters are cumulative over the spool's life, so the
/// largest report wins; the spool's size is the latest report's.
pub fn sum_stats(runs: impl IntoIterator<Item = pb::SensorStats>) -> pb::SensorStats {
    let mut t = pb::SensorStats::default();
    for s in runs {
        t.packets += s.packets;
        t.bytes += s.bytes;
        t.kernel_drops += s.kernel_drops;
        t.channel_full_drops += s.channel_full_drops;
        t.flows_evicted += s.flows_evicted;
        t.non_ip += s.non_ip;
        for (k, v) in s.decode_errors {
            *t.decode_errors.entry(k).or_default() += v;
        }
        t.spool_bytes = s.spool_bytes;
        t.spool_dropped_batches = t.spool_dropped_batches.max(s.spool_dropped_batches);
        t.spool_dropped_flows = t.spool_dropped_flows.max(s.spool_dropped_flows);
        t.spool_corrupt_records = t.spool_corrupt_records.max(s.spool_corrupt_records);
    }
    t
}
