//! The ClickHouse flow store (see ARCHITECTURE.md).
//!
//! Over ClickHouse's HTTP interface ([`http`]), in SQL and formats that
//! ClickHouse 18.16 (Debian's package) and current releases both accept:
//! `MergeTree` tables partitioned by day, `Native` (columnar) blocks for
//! flow inserts, `RowBinary` for the other inserts and for results, no
//! query parameters (18.16 has none), so every value of a
//! query comes from the planner's plan ([`crate::store::plan`]) and is written
//! by this module as a number or a hex literal, never pasted from user text.
//!
//! Tables, in database `cfg.database`:
//! - `flows`: one row per record, ordered by `first_ns`: the columns
//!   queries filter and group on (addresses as 4- or 16-byte strings, as in
//!   the SQLite store, so that ties in a top-N sort the same way), and the
//!   record itself as its `vigil.v1.Flow` protobuf encoding, from which rows
//!   are read back exactly.
//! - `batches`: one row per committed batch `(sensor_id, seq)`: the dedupe
//!   state, shared by every collector writing to the database. Here (and
//!   in `flows` and `duplicates`) `seq` is the stored sequence number:
//!   the incarnation's ordinal times 2^40 plus the batch's seq
//!   (`stored_seq`), so that dedupe is per (sensor, incarnation).
//! - `incarnations`: each sensor spool incarnation seen, with its ordinal
//!   (1, 2, …, in the order first seen; 0 is the one incarnation of a
//!   sensor that predates them).
//! - `duplicates`, `sensor_runs`: duplicate batches seen; each sensor run's
//!   latest counters.
//! - `alerts` (`ReplacingMergeTree` by update time), `alert_evidence`.
//! - `rollup_dst`, `rollup_dport`, `rollup_proto`: per-minute roll-ups.
//! - `streams`: which collector each sensor opened a stream to, and when.
//! - `ingest_{writer}_{epoch}`: each collector's own `Null` table, which
//!   its flow inserts go to, with the materialized views that write them
//!   into `flows` and the roll-ups.
//!
//! Exactly once: a batch's flows (each row carrying its `seq`) are
//! inserted, then its `batches` row; a batch whose `seq` is not above the
//! sensor's highest committed `seq` is a duplicate. ClickHouse has no
//! transactions: when a commit stops between the two inserts, the batch
//! comes again (the sensor still holds it), and only the rows of it not
//! found (by `seq` and index) are written, then the mark. A sensor that
//! leaves collector A for B may have left A storing a batch that it now
//! sends to B: B first fences A out (drops A's ingest table, which waits
//! for A's running inserts and fails A's later ones), then reads what is
//! stored. A, finding its ingest table gone, refuses the batches of every
//! stream it opened before (their sensors reconnect) and makes a new one.

mod alerts;
mod evidence;
pub mod http;
mod ingest;
mod read;
mod retention;
mod schema;
#[cfg(test)]
mod tests;
mod wire;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use self::http::{Endpoint, HttpError};
use self::wire::{FlowBlock, Reader};
use super::StoreError;
use crate::store::plan::NS_PER_MIN;

/// Where the store is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClickHouseConfig {
    /// `http://HOST[:PORT]` or `https://HOST[:PORT]`.
    pub url: String,
    /// For `https://`: the CA certificates (PEM) to check the server's
    /// against, instead of the system's.
    pub ca: Option<std::path::PathBuf>,
    /// Database (created if missing).
    pub database: String,
    /// User.
    pub user: String,
    /// Password.
    pub password: String,
    /// Inserts of a group commit's flows run in parallel, at most this many
    /// (each on a server thread of its own).
    pub parallel_inserts: usize,
    /// Drop the days of flows wholly older than this.
    pub max_age: Option<std::time::Duration>,
    /// Drop the oldest days of flows while the database is larger than
    /// this (the newest day is kept).
    pub max_bytes: Option<u64>,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        ClickHouseConfig {
            url: "http://127.0.0.1:8123".into(),
            ca: None,
            database: "vigil".into(),
            user: "default".into(),
            password: String::new(),
            parallel_inserts: 2,
            max_age: None,
            max_bytes: None,
        }
    }
}

/// Bits of a stored seq that hold the batch's own seq (the ordinal of its
/// incarnation is above them): [`crate::ingest::MAX_SEQ`] fits.
pub(super) const SEQ_BITS: u32 = 40;

/// The most incarnations one sensor id may have (the ordinal's bits).
pub(super) const MAX_ORDINAL: u64 = (1 << (63 - SEQ_BITS)) - 1;

/// The seq stored for a batch: its incarnation's ordinal and its own seq.
pub(super) fn stored_seq(ordinal: u64, seq: u64) -> u64 {
    (ordinal << SEQ_BITS) | seq
}

/// A flow store in ClickHouse.
#[derive(Debug)]
pub struct ClickHouseStore {
    http: Endpoint,
    db: String,
    max_age: Option<std::time::Duration>,
    max_bytes: Option<u64>,
    parallel_inserts: usize,
    /// Per (sensor, incarnation ordinal), as this collector last saw them:
    /// the highest committed stored seq, and the highest with flows stored
    /// (above the first when a commit stopped between its inserts).
    last_seq: Mutex<HashMap<(String, u64), (u64, u64)>>,
    /// Per (sensor, incarnation): its ordinal, once known.
    ordinals: Mutex<HashMap<(String, u64), u64>>,
    /// Flow blocks of earlier inserts, their buffers kept for the next
    /// (fresh ones of tens of MiB cost page faults on every commit).
    blocks: Mutex<Vec<FlowBlock>>,
    /// This store's name among the collectors sharing the database: its
    /// ingest tables are `ingest_{writer}_{epoch}`.
    writer: String,
    /// ` SYNC` where `DROP TABLE` must be told to wait for the inserts
    /// running into the table (an `Atomic` database), else empty.
    drop_sync: &'static str,
    ingest: Mutex<Ingest>,
}

/// Where this store's flow inserts go, and since when.
///
/// Flows are not inserted into `flows` directly but into a `Null` table of
/// this store's own, `ingest_{writer}_{epoch}`, whose materialized views
/// write them to `flows` and to the roll-ups. A collector taking a sensor
/// over drops the ingest tables of the collectors the sensor streamed to
/// before (`fence`): `DROP TABLE` waits for the inserts running into the
/// table, and any insert after it fails, so once the new collector has
/// fenced, nothing the old one still holds can land.
#[derive(Debug, Default)]
struct Ingest {
    /// The current ingest table, once made.
    table: Option<String>,
    /// Made again, under the next epoch, when found dropped.
    epoch: u64,
    /// Per sensor, the epoch in which its current stream opened: a stream
    /// older than the current epoch was opened before this store was fenced
    /// out, and its batches are refused ([`CommitOutcome::Fenced`]).
    opened: HashMap<String, u64>,
}

/// Whether `e` says that the ingest table `table` does not exist (code 60,
/// `UNKNOWN_TABLE`; 18.16 writes `Code: 60, e.displayText() = …`, current
/// releases `Code: 60. DB::Exception: … (UNKNOWN_TABLE)`): another
/// collector fenced this one out.
fn is_fenced(e: &HttpError, table: &str) -> bool {
    matches!(e, HttpError::Server { message, .. }
        if message.contains(table)
            && (message.contains("Code: 60,") || message.contains("Code: 60.")))
}

/// A name for this store among the collectors writing to one database:
/// 16 hex digits from the process, the time and the address of a local.
fn writer_name() -> String {
    use std::hash::{BuildHasher as _, Hash as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    std::process::id().hash(&mut h);
    vigil_proto::time::now_ns().hash(&mut h);
    (&raw const h).addr().hash(&mut h);
    format!("{:016x}", h.finish())
}

/// A valid database name: letters, digits, underscore (it is written into
/// statements, so nothing else is allowed).
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit()
}

/// A string literal: hex-encoded, so no byte of it is SQL.
fn lit(s: &[u8]) -> String {
    let mut o = String::with_capacity(2 * s.len() + 9);
    o.push_str("unhex('");
    for b in s {
        let _ = write!(o, "{b:02X}");
    }
    o.push_str("')");
    o
}

const NS_PER_DAY: u64 = 1440 * NS_PER_MIN;

/// The columns a record is read back from (see `read_flows`).
const READ_COLS: &str = "sensor_id, record, first_ns, last_ns, flow_id, proto, src_ip, src_port, dst_ip, dst_port, has_ports, vlan0, vlan1, community_id";

/// The columns of `flows`, in the order [`FlowBlock`] writes them.
const FLOW_COLUMNS: [(&str, &str); 26] = [
    ("sensor_id", "String"),
    ("seq", "UInt64"),
    ("idx", "UInt32"),
    ("day", "Date"),
    ("first_ns", "UInt64"),
    ("last_ns", "UInt64"),
    ("flow_id", "UInt64"),
    ("proto", "UInt8"),
    ("src_ip", "String"),
    ("src_port", "UInt16"),
    ("dst_ip", "String"),
    ("dst_port", "UInt16"),
    ("has_ports", "UInt8"),
    ("vlan0", "UInt16"),
    ("vlan1", "UInt16"),
    ("packets", "UInt64"),
    ("bytes", "UInt64"),
    ("conn_state", "UInt8"),
    ("community_id", "String"),
    ("record", "String"),
    // Application metadata for filters (issue #29): see `plan::Field`.
    ("app_proto", "UInt8"),
    ("app_name", "String"),
    ("app_fp", "String"),
    ("ics_reads", "UInt64"),
    ("ics_writes", "UInt64"),
    ("ics_control", "UInt64"),
];

/// The columns of `flows` added after its first layout, which tables made
/// before lack (added at start).
const FLOW_COLUMNS_ADDED: usize = 6;

/// `name type, …` of [`FLOW_COLUMNS`], for the tables that hold flow rows.
fn flow_column_defs() -> String {
    FLOW_COLUMNS
        .map(|(name, ty)| format!("{name} {ty}"))
        .join(", ")
}

/// `name, …` of [`FLOW_COLUMNS`], in their order.
fn flow_column_names() -> String {
    FLOW_COLUMNS.map(|(name, _)| name).join(", ")
}

impl ClickHouseStore {
    /// Connects and creates the database and tables if missing.
    pub fn open(cfg: &ClickHouseConfig) -> Result<ClickHouseStore, StoreError> {
        if !valid_name(&cfg.database) {
            return Err(StoreError::Config(format!(
                "clickhouse database name {:?}: letters, digits and _ only",
                cfg.database
            )));
        }
        let setup = |source| StoreError::ClickHouse {
            op: "setting up the connection",
            source,
        };
        let mut http = Endpoint::parse(&cfg.url, &cfg.user, &cfg.password).map_err(setup)?;
        if let Some(ca) = &cfg.ca {
            http = http.with_ca_file(ca).map_err(setup)?;
        }
        let mut store = ClickHouseStore {
            http,
            db: cfg.database.clone(),
            max_age: cfg.max_age,
            max_bytes: cfg.max_bytes,
            parallel_inserts: cfg.parallel_inserts.max(1),
            last_seq: Mutex::new(HashMap::new()),
            ordinals: Mutex::new(HashMap::new()),
            blocks: Mutex::new(Vec::new()),
            writer: writer_name(),
            drop_sync: "",
            ingest: Mutex::new(Ingest {
                epoch: 1,
                ..Ingest::default()
            }),
        };
        store.migrate()?;
        let body = store.select(
            "reading the database's engine",
            &format!(
                "SELECT engine FROM system.databases WHERE name = {}",
                lit(store.db.as_bytes())
            ),
        )?;
        if Reader::new(&body).string()? == "Atomic" {
            store.drop_sync = " SYNC";
        }
        Ok(store)
    }

    /// The database this store writes to.
    pub fn database(&self) -> &str {
        &self.db
    }

    /// Runs a statement (DDL, INSERT … SELECT); its answer's body.
    fn exec(&self, op: &'static str, sql: &str) -> Result<Vec<u8>, StoreError> {
        self.http
            .query(sql)
            .map_err(|source| StoreError::ClickHouse { op, source })
    }

    /// Runs a query; its rows in `RowBinary`.
    fn select(&self, op: &'static str, sql: &str) -> Result<Vec<u8>, StoreError> {
        self.exec(op, &format!("{sql} FORMAT RowBinary"))
    }

    /// Inserts `RowBinary` rows: `INSERT INTO db.{table} ({cols})`.
    fn insert(
        &self,
        op: &'static str,
        table: &str,
        cols: &str,
        rows: &[u8],
    ) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let st = format!("INSERT INTO {}.{table} ({cols}) FORMAT RowBinary", self.db);
        self.http
            .insert(&st, rows)
            .map_err(|source| StoreError::ClickHouse { op, source })
    }

    fn corrupt(&self, what: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            store: format!("clickhouse database {}", self.db),
            what: what.into(),
        }
    }
}
