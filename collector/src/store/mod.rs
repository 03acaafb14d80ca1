//! Flow storage: narrow traits, one planner, two engines.
//!
//! What a collector needs of a store is split by who needs it:
//! [`IngestStore`] (commits with dedupe, for the writer), [`FlowQueries`]
//! (filters, top-N, counts and series, for analysts), [`SensorRegistry`]
//! (what is known of each sensor), [`Retention`], and [`AlertStore`]
//! (alerts and the flows that are their evidence). [`Store`] is all of
//! them, what an engine implements. Every trait speaks the plain types of
//! [`crate::model`]; nothing here depends on detection, the query language
//! or the server.
//!
//! Questions about flows are planned once, dialect-free, by [`plan`]; the
//! embedded engine ([`sqlite`]) and the scale-out engine ([`clickhouse`])
//! only render plans in their SQL and run them. Calls block: async callers
//! run them on blocking threads.
//!
//! Exactly-once: [`IngestStore::commit_many`] stores a batch's flows and
//! its `(sensor_id, incarnation, seq)` mark atomically. A sensor sends its
//! batches in `seq` order and resends unacknowledged ones in the same
//! order, so a batch whose `seq` is not above the highest committed `seq`
//! of its sensor's incarnation (the spool it came from) has been stored
//! before and is dropped as a duplicate. A new incarnation (a lost spool
//! starting again at seq 1, or another host using the id) is a dedupe
//! sequence of its own: stored, and reported as a reset
//! ([`CommitOutcome::Stored`]'s `reset`).

pub mod clickhouse;
pub mod columns;
pub mod plan;
pub mod sqlite;

use std::io;
use std::path::PathBuf;

use thiserror::Error;
use vigil_proto::FlowRecord;
use vigil_proto::merkle::Hash;

pub use crate::model::alert::AlertQuery;
use crate::model::alert::{Alert, AlertUpdate, EvidenceRef};
pub use crate::model::evidence::{BatchKey, PlacedFlow, StoredAttestation, StoredBatch};
pub use crate::model::ingest::{
    CommitOutcome, IngestBatch, RetentionReport, SensorRecord, sum_stats,
};
use crate::model::query::{Filter, SeriesPoint, TimeRange, TopBy, TopKey, TopRow, Totals};
use clickhouse::http::HttpError;
use plan::{Aggregate, GroupValue, Rollup, Select};

/// Every store trait, for `use vigil_collector::store::prelude::*`.
pub mod prelude {
    pub use super::{
        AlertStore, EvidenceStore, FlowQueries, IngestStore, Retention, SensorRegistry, Store,
    };
}

/// A store operation failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// SQLite refused an operation.
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
    /// ClickHouse refused an operation or could not be reached.
    #[error("clickhouse: {op}: {source}")]
    ClickHouse {
        /// What was being done.
        op: &'static str,
        /// The error.
        #[source]
        source: HttpError,
    },
    /// Another collector sharing the ClickHouse database took one of this
    /// collector's sensors over and fenced this one out: the batches of
    /// the streams it had open are refused (their sensors send them again).
    #[error("clickhouse: fenced out: another collector took a sensor of this one over ({source})")]
    Fenced {
        /// The failed insert.
        #[source]
        source: HttpError,
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
    #[error("{store}: corrupt data: {what}")]
    Corrupt {
        /// The database file, or the ClickHouse database.
        store: String,
        /// What did not decode.
        what: String,
    },
    /// The configuration names something the store cannot use.
    #[error("{0}")]
    Config(String),
    /// The query asks for something no store answers (a time series step
    /// under a second).
    #[error("query: {0}")]
    BadQuery(String),
    /// A value beyond what the store holds (integers up to 2^63 − 1).
    #[error("{what} = {value} exceeds 2^63 - 1, the largest value the store holds")]
    OutOfRange {
        /// The field.
        what: &'static str,
        /// Its value.
        value: u64,
    },
    /// A value that does not encode (an alert that is not JSON).
    #[error("encoding {what}: {source}")]
    Encode {
        /// What was being encoded.
        what: String,
        /// The error.
        #[source]
        source: serde_json::Error,
    },
    /// A bug: state left behind by a panicking thread, an engine breaking
    /// its own contract.
    #[error("internal error in the store: {0}")]
    Internal(&'static str),
}

/// Ingest with dedupe: what the collector's writer needs.
pub trait IngestStore: Send + Sync {
    /// Stores several batches in one transaction (group commit), in order;
    /// all or none. The outcome of each, in order. Returns after the commit.
    fn commit_many(&self, batches: &[&IngestBatch]) -> Result<Vec<CommitOutcome>, StoreError>;

    /// Stores one batch and its dedupe mark; returns after the commit.
    fn commit(&self, batch: &IngestBatch) -> Result<CommitOutcome, StoreError> {
        let mut out = self.commit_many(&[batch])?;
        out.pop()
            .ok_or(StoreError::Internal("a commit returned no outcome"))
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

    /// Most flows worth gathering into one [`IngestStore::commit_many`]:
    /// the collector's writer takes every batch waiting, up to this.
    fn group_flows(&self) -> usize {
        65_536
    }
}

/// Flow queries, planned by [`plan`] and run by the engine.
pub trait FlowQueries: Send + Sync {
    /// The roll-ups this engine keeps, which plans may read.
    fn rollups(&self) -> &'static [Rollup];

    /// The records a [`Select`] plan selects, oldest first, each with its
    /// sensor id.
    fn select(&self, plan: &Select) -> Result<Vec<(String, FlowRecord)>, StoreError>;

    /// The rows of an [`Aggregate`] plan, in its order, at most its limit.
    fn aggregate(&self, plan: &Aggregate) -> Result<Vec<(GroupValue, Totals)>, StoreError>;

    /// The rows of several [`Aggregate`] plans, each as
    /// [`FlowQueries::aggregate`] answers it. By default each on a thread
    /// of its own; an engine that reads them in one pass over the flows
    /// does (the embedded store's column segments, read once for all).
    fn aggregate_many(
        &self,
        plans: &[Aggregate],
    ) -> Result<Vec<Vec<(GroupValue, Totals)>>, StoreError> {
        each_on_a_thread(self, plans)
    }

    /// What the flow explorer shows of `filter` over `range`: the `limit`
    /// largest groups of each of `keys` by `by` and, with a step, the
    /// series; in one [`FlowQueries::aggregate_many`].
    #[allow(clippy::type_complexity)]
    fn explore(
        &self,
        (filter, range): (&Filter, TimeRange),
        keys: &[TopKey],
        (by, limit): (TopBy, usize),
        step_ns: Option<u64>,
    ) -> Result<(Vec<Vec<TopRow>>, Option<Vec<SeriesPoint>>), StoreError> {
        let mut plans: Vec<Aggregate> = keys
            .iter()
            .map(|k| plan::top(filter, range, *k, by, limit, self.rollups()))
            .collect();
        if let Some(step) = step_ns {
            plans.push(plan::series(filter, range, step, self.rollups())?);
        }
        let mut rows = self.aggregate_many(&plans)?;
        let series = step_ns.map(|_| plan::series_points(rows.pop().unwrap_or_default()));
        let tops = keys
            .iter()
            .zip(rows)
            .map(|(k, r)| plan::top_rows(*k, r))
            .collect();
        Ok((tops, series))
    }

    /// How the engine reads an [`Aggregate`] plan, and why: a line per
    /// part (`vigil query --explain`).
    fn explain(&self, plan: &Aggregate) -> Result<Vec<String>, StoreError> {
        Ok(plan::explain_parts(plan, self.rollups()))
    }

    /// How the engine reads a [`Select`] plan (a flow listing), and why.
    fn explain_select(&self, _plan: &Select) -> Result<Vec<String>, StoreError> {
        Ok(vec![
            "flow listing: rows in first_seen order, the filter tested on each".into(),
        ])
    }

    /// Builds what speeds queries and is built from stored flows (the
    /// embedded store's column segments); returns how many pieces were
    /// built. Called periodically by the collector.
    fn build_columns(&self) -> Result<usize, StoreError> {
        Ok(0)
    }

    /// The records of a [`Select`] plan, handed to `sink` in pages of at
    /// most `page` (until it answers false): what a reader holds at once
    /// is a page, however many the query returns. By default, one
    /// [`FlowQueries::select`] per page (`LIMIT`/`OFFSET`; rows committed
    /// meanwhile with an earlier `first_seen` may shift the pages).
    fn select_pages(
        &self,
        plan: &Select,
        page: usize,
        sink: &mut dyn FnMut(Vec<(String, FlowRecord)>) -> bool,
    ) -> Result<(), StoreError> {
        let page = page.max(1);
        let mut done = 0;
        while done < plan.limit {
            let n = page.min(plan.limit - done);
            let rows = self.select(&Select {
                limit: n,
                offset: plan.offset + done,
                ..plan.clone()
            })?;
            let got = rows.len();
            if got == 0 || !sink(rows) || got < n {
                break;
            }
            done += got;
        }
        Ok(())
    }

    /// Flow records matching `filter` in `range`, oldest first, at most
    /// `limit`, each with its sensor id.
    fn flows(
        &self,
        filter: &Filter,
        range: TimeRange,
        limit: usize,
    ) -> Result<Vec<(String, FlowRecord)>, StoreError> {
        self.select(&plan::select(filter, range, limit))
    }

    /// Totals over the records matching `filter` in `range`.
    fn count(&self, filter: &Filter, range: TimeRange) -> Result<Totals, StoreError> {
        let rows = self.aggregate(&plan::count(filter, range, self.rollups()))?;
        Ok(plan::totals(&rows))
    }

    /// The `limit` largest groups by `key`, ranked by `by` (ties by key).
    fn top(
        &self,
        filter: &Filter,
        range: TimeRange,
        key: TopKey,
        by: TopBy,
        limit: usize,
    ) -> Result<Vec<TopRow>, StoreError> {
        let rows = self.aggregate(&plan::top(filter, range, key, by, limit, self.rollups()))?;
        Ok(plan::top_rows(key, rows))
    }

    /// Totals of the records matching `filter` in `range` per interval of
    /// `step_ns` (aligned to the epoch, by `first_seen`), oldest first: the
    /// intervals that hold flows, at most
    /// [`MAX_SERIES_POINTS`](crate::model::query::MAX_SERIES_POINTS)` + 1`
    /// of them.
    fn series(
        &self,
        filter: &Filter,
        range: TimeRange,
        step_ns: u64,
    ) -> Result<Vec<SeriesPoint>, StoreError> {
        let rows = self.aggregate(&plan::series(filter, range, step_ns, self.rollups())?)?;
        Ok(plan::series_points(rows))
    }
}

/// Each plan's rows by [`FlowQueries::aggregate`], each on a thread of its
/// own (the threads' panics go on in the caller).
#[allow(clippy::type_complexity)]
pub fn each_on_a_thread<Q: FlowQueries + ?Sized>(
    store: &Q,
    plans: &[Aggregate],
) -> Result<Vec<Vec<(GroupValue, Totals)>>, StoreError> {
    std::thread::scope(|s| {
        let handles: Vec<_> = plans
            .iter()
            .map(|p| s.spawn(move || store.aggregate(p)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// What the store knows of each sensor.
pub trait SensorRegistry: Send + Sync {
    /// Every sensor the store has heard of, by id.
    fn sensors(&self) -> Result<Vec<SensorRecord>, StoreError>;
}

/// Retention of old flows.
pub trait Retention: Send + Sync {
    /// Applies the configured retention at time `now_ns`. Flows that are
    /// the evidence of an alert are kept.
    fn enforce_retention(&self, now_ns: u64) -> Result<RetentionReport, StoreError>;
}

/// Alerts and their evidence.
pub trait AlertStore: Send + Sync {
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

/// What evidence bundles are made of: batches with their attestations,
/// the flows' places in them, pinned sensor keys and detector settings.
pub trait EvidenceStore: Send + Sync {
    /// The sensors' attestation keys pinned on first contact (raw 32-byte
    /// Ed25519 keys).
    fn pinned_keys(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// The stored records the references name, oldest first, each with its
    /// place in its batch.
    fn placed_flows(&self, evidence: &[EvidenceRef]) -> Result<Vec<PlacedFlow>, StoreError>;

    /// A stored batch.
    fn batch(&self, key: &BatchKey) -> Result<Option<StoredBatch>, StoreError>;

    /// The leaf hashes of a stored batch's records, by index: of
    /// each record stored, or kept when retention deleted it; `None`
    /// where neither is.
    fn batch_leaves(&self, batch: &StoredBatch) -> Result<Vec<Option<Hash>>, StoreError>;

    /// Per sensor, in arrival order: the batches from the last one before
    /// the first whose records' event-time span meets `[since_ns,
    /// until_ns]` (the counters' baseline) to the last that does; for a
    /// sensor with none, its last batch whose records end before
    /// `since_ns`.
    fn batch_log(&self, since_ns: u64, until_ns: u64) -> Result<Vec<StoredBatch>, StoreError>;

    /// The fingerprints of the certificates a sensor streamed with (mTLS),
    /// oldest first.
    fn sensor_certificates(&self, sensor: &str) -> Result<Vec<String>, StoreError>;

    /// Records detector settings (JSON) under their hash, once.
    fn put_detector(&self, hash: &str, body: &str) -> Result<(), StoreError>;

    /// Detector settings by their hash.
    fn detector(&self, hash: &str) -> Result<Option<String>, StoreError>;
}

/// Everything a collector needs of one engine.
pub trait Store:
    IngestStore + FlowQueries + SensorRegistry + Retention + AlertStore + EvidenceStore
{
}

impl<T: IngestStore + FlowQueries + SensorRegistry + Retention + AlertStore + EvidenceStore> Store
    for T
{
}

impl std::fmt::Debug for dyn Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

/// `v` as a stored integer (SQLite's and the alert tables' `i64`).
pub(crate) fn i64_of(what: &'static str, value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::OutOfRange { what, value })
}

/// An alert's stored body: the alert as JSON, without its evidence list
/// (kept apart, one row per reference).
pub(crate) fn alert_body(a: &Alert) -> Result<String, StoreError> {
    let mut body = a.clone();
    body.evidence = Vec::new();
    serde_json::to_string(&body).map_err(|source| StoreError::Encode {
        what: format!("alert {}", a.id),
        source,
    })
}
