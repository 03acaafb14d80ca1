//! The ClickHouse flow store (see ARCHITECTURE.md).
//!
//! Over ClickHouse's HTTP interface ([`http`]), in SQL and formats that
//! ClickHouse 18.16 (Debian's package) and current releases both accept:
//! `MergeTree` tables partitioned by day, `Native` (columnar) blocks for
//! flow inserts, `RowBinary` for the other inserts and for results, no
//! query parameters (18.16 has none), so every value of a
//! query comes from the typed plan ([`Filter`]) and is written by this
//! module as a number or a hex literal, never pasted from user text.
//!
//! Tables, in database `cfg.database`:
//! - `flows`: one row per record, ordered by `first_ns`: the columns
//!   queries filter and group on (addresses as 4- or 16-byte strings, as in
//!   the SQLite store, so that ties in a top-N sort the same way), and the
//!   record itself as its `vigil.v1.Flow` protobuf encoding, from which rows
//!   are read back exactly.
//! - `batches`: one row per committed batch `(sensor_id, seq)`: the dedupe
//!   state, shared by every collector writing to the database.
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

pub mod http;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use prost::Message as _;
use vigil_proto::wire::{IpBytes, flow_without_identity, ip_from_bytes, ip_to_bytes};
use vigil_proto::{ConnState, FlowRecord, pb};

use self::http::{Endpoint, HttpError};
use super::{
    AlertQuery, CommitOutcome, FlowStore, IngestBatch, RetentionReport, SensorRecord, StoreError,
    sum_stats,
};
use crate::detect::{Alert, AlertUpdate, EvidenceRef};
use crate::query::{
    Counter, Dir, Filter, MAX_SERIES_POINTS, SeriesPoint, TimeRange, TopBy, TopKey, TopRow, Totals,
};

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

/// A flow store in ClickHouse.
#[derive(Debug)]
pub struct ClickHouseStore {
    http: Endpoint,
    db: String,
    max_age: Option<std::time::Duration>,
    max_bytes: Option<u64>,
    parallel_inserts: usize,
    /// Per sensor, as this collector last saw them: the highest committed
    /// `seq`, and the highest `seq` with flows stored (above the first when
    /// a commit stopped between its inserts).
    last_seq: Mutex<HashMap<String, (u64, u64)>>,
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
    std::time::SystemTime::now().hash(&mut h);
    (&raw const h).addr().hash(&mut h);
    format!("{:016x}", h.finish())
}

fn err(e: HttpError) -> StoreError {
    StoreError::ClickHouse(e.to_string())
}

fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        path: "clickhouse".into(),
        what: what.into(),
    }
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

const NS_PER_MIN: u64 = 60_000_000_000;
const NS_PER_DAY: u64 = 1440 * NS_PER_MIN;

/// A day partition of `flows`.
struct FlowDay {
    /// Its partition id (`YYYYMMDD`).
    id: String,
    /// Days since the epoch.
    day: u16,
    rows: u64,
    bytes: u64,
}

/// A per-minute roll-up table.
struct Rollup {
    /// Table `rollup_{name}`.
    name: &'static str,
    /// Type of its key column `k`.
    k_type: &'static str,
    /// The key over `flows`.
    k_expr: &'static str,
    /// Which flows it counts.
    cond: &'static str,
    /// Further grouping columns, with their types (`, proto UInt8`), and
    /// their names (`, proto`).
    extra_ddl: &'static str,
    extra: &'static str,
}

const ROLLUPS: [Rollup; 3] = [
    Rollup {
        name: "dst",
        k_type: "String",
        k_expr: "dst_ip",
        cond: "1",
        extra_ddl: "",
        extra: "",
    },
    Rollup {
        name: "dport",
        k_type: "UInt64",
        k_expr: "toUInt64(dst_port)",
        cond: "has_ports = 1",
        extra_ddl: ", proto UInt8",
        extra: ", proto",
    },
    Rollup {
        name: "proto",
        k_type: "UInt64",
        k_expr: "toUInt64(proto)",
        cond: "1",
        extra_ddl: "",
        extra: "",
    },
];

/// Roll-up `r`'s rows over the flows in `from`.
fn rollup_select(r: &Rollup, from: &str) -> String {
    let (k_expr, cond, extra) = (r.k_expr, r.cond, r.extra);
    format!(
        "SELECT intDiv(first_ns, {NS_PER_MIN}) AS minute, {k_expr} AS k{extra}, count() AS flows, \
         sum(packets) AS packets, sum(bytes) AS bytes FROM {from} WHERE {cond} GROUP BY minute, k{extra}"
    )
}

/// The columns a record is read back from (see `read_flows`).
const READ_COLS: &str = "sensor_id, record, first_ns, last_ns, flow_id, proto, src_ip, src_port, dst_ip, dst_port, has_ports, vlan0, vlan1, community_id";

/// The columns of `flows`, in the order [`FlowBlock`] writes them.
const FLOW_COLUMNS: [(&str, &str); 20] = [
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
];

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
            return Err(StoreError::ClickHouse(format!(
                "database name {:?}: letters, digits and _ only",
                cfg.database
            )));
        }
        let mut http = Endpoint::parse(&cfg.url, &cfg.user, &cfg.password).map_err(err)?;
        if let Some(ca) = &cfg.ca {
            http = http.with_ca_file(ca).map_err(err)?;
        }
        let mut store = ClickHouseStore {
            http,
            db: cfg.database.clone(),
            max_age: cfg.max_age,
            max_bytes: cfg.max_bytes,
            parallel_inserts: cfg.parallel_inserts.max(1),
            last_seq: Mutex::new(HashMap::new()),
            blocks: Mutex::new(Vec::new()),
            writer: writer_name(),
            drop_sync: "",
            ingest: Mutex::new(Ingest {
                epoch: 1,
                ..Ingest::default()
            }),
        };
        store.migrate()?;
        let body = store.select(&format!(
            "SELECT engine FROM system.databases WHERE name = {}",
            lit(store.db.as_bytes())
        ))?;
        if Reader::new(&body).string()? == "Atomic" {
            store.drop_sync = " SYNC";
        }
        Ok(store)
    }

    /// The database this store writes to.
    pub fn database(&self) -> &str {
        &self.db
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let db = &self.db;
        let ddl = [
            format!("CREATE DATABASE IF NOT EXISTS {db}"),
            format!(
                "CREATE TABLE IF NOT EXISTS {db}.flows ({}) \
                 ENGINE = MergeTree() PARTITION BY day ORDER BY (first_ns, sensor_id) \
                 SETTINGS index_granularity = 8192",
                flow_column_defs()
            ),
            // Evidence flows of the days retention dropped.
            format!(
                "CREATE TABLE IF NOT EXISTS {db}.evidence_flows AS {db}.flows \
                 ENGINE = ReplacingMergeTree() PARTITION BY day ORDER BY (sensor_id, flow_id, first_ns, seq, idx)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {db}.batches (sensor_id String, seq UInt64, \
                 flows UInt64, received_ns UInt64) \
                 ENGINE = MergeTree() ORDER BY (sensor_id, seq)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {db}.duplicates (sensor_id String, seq UInt64, \
                 received_ns UInt64) ENGINE = MergeTree() ORDER BY (sensor_id, seq)"
            ),
            // Which collector (`writer`) each sensor opened a stream to,
            // and when (the collector's clock): who to fence.
            format!(
                "CREATE TABLE IF NOT EXISTS {db}.streams (sensor_id String, writer String, \
                 opened_ns UInt64) ENGINE = MergeTree() ORDER BY (sensor_id, opened_ns)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {db}.sensor_runs (sensor_id String, run_id UInt64, \
                 updated_ns UInt64, stats String) \
                 ENGINE = ReplacingMergeTree(updated_ns) ORDER BY (sensor_id, run_id)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {db}.alerts (id UInt64, kind String, severity UInt8, \
                 asset String, first_ns UInt64, last_ns UInt64, version UInt64, body String) \
                 ENGINE = ReplacingMergeTree(version) ORDER BY id"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {db}.alert_evidence (alert UInt64, sensor_id String, \
                 flow_id UInt64, first_ns UInt64) \
                 ENGINE = ReplacingMergeTree() ORDER BY (alert, sensor_id, flow_id, first_ns)"
            ),
        ];
        for s in &ddl {
            self.http.query(s).map_err(err)?;
        }
        self.migrate_rollups()
    }

    /// Per-minute roll-ups (Akvorado's pattern): a `SummingMergeTree` per
    /// top-N key, filled by a materialized view on each collector's ingest
    /// table ([`Ingest`]); created and back-filled from `flows` when
    /// missing, and made again when an older version of the table has other
    /// columns.
    fn migrate_rollups(&self) -> Result<(), StoreError> {
        let db = &self.db;
        // Retired: a roll-up by source (sources are many, often spoofed: it
        // held nearly a row per flow and halved the insert rate), and the
        // views on `flows` that filled the roll-ups before the ingest
        // tables did (they would count every flow twice now).
        let mut retired = vec![
            format!("DROP TABLE IF EXISTS {db}.rollup_src_mv"),
            format!("DROP TABLE IF EXISTS {db}.rollup_src"),
        ];
        retired.extend(
            ROLLUPS
                .iter()
                .map(|r| format!("DROP TABLE IF EXISTS {db}.rollup_{}_mv", r.name)),
        );
        for stmt in retired {
            self.http.query(&stmt).map_err(err)?;
        }
        for r in &ROLLUPS {
            let name = r.name;
            let mut want: Vec<String> =
                format!("minute,k{},flows,packets,bytes", r.extra.replace(' ', ""))
                    .split(',')
                    .map(str::to_string)
                    .collect();
            want.sort();
            let body = self.select(&format!(
                "SELECT name FROM system.columns WHERE database = {} AND table = {}",
                lit(db.as_bytes()),
                lit(format!("rollup_{name}").as_bytes())
            ))?;
            let mut have = Vec::new();
            let mut rd = Reader::new(&body);
            while !rd.done() {
                have.push(rd.string()?);
            }
            have.sort();
            if have == want {
                continue;
            }
            if !have.is_empty() {
                tracing::info!(table = %format!("{db}.rollup_{name}"), "roll-up table of an older layout: made again");
                self.http
                    .query(&format!("DROP TABLE IF EXISTS {db}.rollup_{name}"))
                    .map_err(err)?;
            }
            let (k_type, extra, extra_ddl) = (r.k_type, r.extra, r.extra_ddl);
            self.http
                .query(&format!(
                    "CREATE TABLE IF NOT EXISTS {db}.rollup_{name} (minute UInt64, k {k_type}{extra_ddl}, \
                     flows UInt64, packets UInt64, bytes UInt64) \
                     ENGINE = SummingMergeTree() PARTITION BY intDiv(minute, 1440) ORDER BY (minute, k{extra})"
                ))
                .map_err(err)?;
            // The flows stored before the roll-up existed. (Flows that
            // another collector inserts while this runs may be counted
            // twice: collectors migrate before they accept sensors.)
            self.http
                .query(&format!(
                    "INSERT INTO {db}.rollup_{name} (minute, k{extra}, flows, packets, bytes) {}",
                    rollup_select(r, &format!("{db}.flows"))
                ))
                .map_err(err)?;
        }
        Ok(())
    }

    /// The current ingest table, made (with its views) if there is none.
    fn ingest_table(&self, ing: &mut Ingest) -> Result<String, StoreError> {
        if let Some(t) = &ing.table {
            return Ok(t.clone());
        }
        let db = &self.db;
        let table = format!("ingest_{}_{}", self.writer, ing.epoch);
        let mut ddl = vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {db}.{table} ({}) ENGINE = Null",
                flow_column_defs()
            ),
            format!(
                "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{table}_flows TO {db}.flows \
                 AS SELECT {} FROM {db}.{table}",
                flow_column_names()
            ),
        ];
        ddl.extend(ROLLUPS.iter().map(|r| {
            format!(
                "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{table}_{} TO {db}.rollup_{} AS {}",
                r.name,
                r.name,
                rollup_select(r, &format!("{db}.{table}"))
            )
        }));
        for stmt in &ddl {
            self.http.query(stmt).map_err(err)?;
        }
        ing.table = Some(table.clone());
        Ok(table)
    }

    /// Whether the server answers that table `name` does not exist (not
    /// when it does not answer).
    fn table_gone(&self, name: &str) -> bool {
        let Ok(body) = self.select(&format!(
            "SELECT toUInt64(count()) FROM system.tables WHERE database = {} AND name = {}",
            lit(self.db.as_bytes()),
            lit(name.as_bytes())
        )) else {
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
        let body = self.select(&format!(
            "SELECT name, engine FROM system.tables WHERE database = {} AND name LIKE {}",
            lit(db.as_bytes()),
            lit(format!("{prefix}%").as_bytes())
        ))?;
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
            self.http
                .query(&format!(
                    "DROP TABLE IF EXISTS {db}.{name}{}",
                    self.drop_sync
                ))
                .map_err(err)?;
        }
        Ok(())
    }

    /// Rows `(g, n, p, b)` of an aggregate by `f_key` over the flows
    /// matching `filter` in `range` (and `f_cond`): from roll-up
    /// `rollup = (name, key over it)` where it can answer ([`Self::rollup_union`]),
    /// else from `flows`.
    fn aggregate(
        &self,
        range: TimeRange,
        filter: &Filter,
        rollup: Option<(&str, &str)>,
        f_key: &str,
        f_cond: &str,
    ) -> String {
        rollup
            .and_then(|(name, r_key)| self.rollup_union(range, filter, name, r_key, f_key, f_cond))
            .unwrap_or_else(|| {
                format!(
                    "SELECT {f_key} AS g, count() AS n, sum(packets) AS p, sum(bytes) AS b FROM {}.flows {}{f_cond} GROUP BY g",
                    self.db,
                    where_clause(filter, range)
                )
            })
    }

    /// An aggregate answered from roll-up `name`: the whole minutes of
    /// `range` from the roll-up, the partial minutes at its edges from
    /// `flows`, both under the filter. Rows `(g, n, p, b)`, several per key
    /// (the caller sums them; the key is named `g`, so that no alias hides a
    /// column the filter reads); `r_key` and `f_key` are the key over the
    /// roll-up and over `flows`, `f_cond` a further condition on `flows`.
    /// `None` when the filter looks at something the roll-up does not hold
    /// or the range holds no whole minute.
    fn rollup_union(
        &self,
        range: TimeRange,
        filter: &Filter,
        name: &str,
        r_key: &str,
        f_key: &str,
        f_cond: &str,
    ) -> Option<String> {
        let mut rc = String::new();
        if !rollup_condition(filter, name, &mut rc) {
            return None;
        }
        let mut fc = String::new();
        condition(filter, &mut fc);
        let since = range.since_ns.unwrap_or(0);
        let until = range.until_ns.unwrap_or(u64::MAX);
        let (m_lo, m_hi) = (since.div_ceil(NS_PER_MIN), until / NS_PER_MIN);
        if m_lo >= m_hi {
            return None;
        }
        let db = &self.db;
        let mut sql = format!(
            "SELECT {r_key} AS g, flows AS n, packets AS p, bytes AS b FROM {db}.rollup_{name} \
             WHERE minute >= {m_lo} AND minute < {m_hi} AND {rc}"
        );
        // Each edge a range of its own, which the primary key narrows (an
        // OR of the two was read as a scan by 18.16).
        for (lo, hi) in [(since, m_lo * NS_PER_MIN), (m_hi * NS_PER_MIN, until)] {
            if lo < hi {
                let _ = write!(
                    sql,
                    " UNION ALL SELECT {f_key} AS g, count() AS n, sum(packets) AS p, sum(bytes) AS b \
                     FROM {db}.flows WHERE first_ns >= {lo} AND first_ns < {hi} AND {fc}{f_cond} GROUP BY g"
                );
            }
        }
        Some(sql)
    }

    /// The sensor's highest `seq` with a `batches` mark, and the highest
    /// with flows stored (higher when a commit stopped between the two).
    fn db_last_seq(&self, sensor: &str) -> Result<(u64, u64), StoreError> {
        let s = lit(sensor.as_bytes());
        let db = &self.db;
        // Scalar subqueries are Nullable in current releases (not in
        // 18.16): `ifNull` makes both plain UInt64.
        let body = self.select(&format!(
            "SELECT toUInt64(ifNull((SELECT max(seq) FROM {db}.batches WHERE sensor_id = {s}), 0)), \
             toUInt64(ifNull((SELECT max(seq) FROM {db}.flows WHERE sensor_id = {s}), 0))"
        ))?;
        let mut r = Reader::new(&body);
        Ok((r.u64()?, r.u64()?))
    }

    /// Indexes of a batch's rows already in `flows`.
    fn stored_indexes(
        &self,
        b: &IngestBatch,
    ) -> Result<std::collections::HashSet<u32>, StoreError> {
        let (lo, hi) = b.flows.iter().fold((u64::MAX, 0), |(lo, hi), r| {
            (lo.min(r.first_seen_ns), hi.max(r.first_seen_ns))
        });
        let body = self.select(&format!(
            "SELECT idx FROM {}.flows WHERE first_ns >= {lo} AND first_ns <= {hi} \
             AND sensor_id = {} AND seq = {}",
            self.db,
            lit(b.sensor_id.as_bytes()),
            b.seq
        ))?;
        let mut r = Reader::new(&body);
        let mut out = std::collections::HashSet::new();
        while !r.done() {
            let s = r.take(4)?;
            out.insert(u32::from_le_bytes([s[0], s[1], s[2], s[3]]));
        }
        Ok(out)
    }

    /// The day partitions of `flows`, oldest first, from `system.parts`.
    fn flow_days(&self) -> Result<Vec<FlowDay>, StoreError> {
        let body = self.select(&format!(
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
                return Err(corrupt(format!("flows partition id {id:?}")));
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
        self.http
            .query(&format!(
                "INSERT INTO {db}.evidence_flows SELECT * FROM {db}.flows WHERE {range} \
                 AND (sensor_id, flow_id, first_ns) IN \
                 (SELECT sensor_id, flow_id, first_ns FROM {db}.alert_evidence WHERE {range})"
            ))
            .map_err(err)?;
        tracing::info!(database = %db, day = %d.id, flows = d.rows, "retention: dropping a day of flows");
        self.http
            .query(&format!(
                "ALTER TABLE {db}.flows DROP PARTITION ID '{}'",
                d.id
            ))
            .map_err(err)?;
        for r in &ROLLUPS {
            self.http
                .query(&format!(
                    "ALTER TABLE {db}.rollup_{} DROP PARTITION ID '{}'",
                    r.name, d.day
                ))
                .map_err(err)?;
        }
        Ok(())
    }

    fn select(&self, sql: &str) -> Result<Vec<u8>, StoreError> {
        self.http
            .query(&format!("{sql} FORMAT RowBinary"))
            .map_err(err)
    }

    /// Records from rows of [`READ_COLS`]: the `record` column holds what
    /// no other column does; the rest is put back from the columns.
    fn read_flows(&self, body: &[u8]) -> Result<Vec<(String, FlowRecord)>, StoreError> {
        let mut r = Reader::new(body);
        let mut out = Vec::new();
        while !r.done() {
            let sensor = r.string()?;
            let mut f =
                pb::Flow::decode(r.bytes()?).map_err(|e| corrupt(format!("flow record: {e}")))?;
            f.first_seen_ns = r.u64()?;
            f.last_seen_ns = r.u64()?;
            f.flow_id = r.u64()?;
            f.proto = u32::from(r.u8()?);
            f.src_ip = r.bytes()?.to_vec();
            let src_port = r.u16()?;
            f.dst_ip = r.bytes()?.to_vec();
            let dst_port = r.u16()?;
            if r.u8()? == 1 {
                (f.src_port, f.dst_port) = (Some(src_port.into()), Some(dst_port.into()));
            }
            f.vlan = [r.u16()?, r.u16()?]
                .into_iter()
                .filter(|v| *v != 0)
                .map(u32::from)
                .collect();
            f.community_id = r.bytes()?.to_vec();
            let rec = FlowRecord::try_from(&f).map_err(|e| corrupt(format!("flow record: {e}")))?;
            out.push((sensor, rec));
        }
        Ok(out)
    }
}

/// `n` rows as at most `k` ranges of about equal size; one range when
/// there are fewer than [`MIN_PARALLEL_ROWS`] rows a range, none for none.
fn split_rows(n: usize, k: usize) -> Vec<std::ops::Range<usize>> {
    let k = k.clamp(1, (n / MIN_PARALLEL_ROWS).max(1));
    (0..k)
        .map(|i| n * i / k..n * (i + 1) / k)
        .filter(|r| !r.is_empty())
        .collect()
}

/// Fewest rows worth an insert of their own.
const MIN_PARALLEL_ROWS: usize = 16_384;

/// Flow rows as one block of ClickHouse's `Native` format: each column's
/// values one after another, which the server takes in column by column
/// instead of parsing row by row (with `RowBinary` the same inserts ran
/// about a fifth slower: BENCHMARKS.md).
#[derive(Debug)]
struct FlowBlock {
    rows: u64,
    /// The block's and the columns' headers, made by [`Self::parts`].
    head: Vec<u8>,
    /// One buffer per column of [`FLOW_COLUMNS`], in its order.
    cols: [Vec<u8>; FLOW_COLUMNS.len()],
}

impl FlowBlock {
    fn with_rows(rows: usize) -> FlowBlock {
        FlowBlock {
            rows: 0,
            head: Vec::new(),
            cols: std::array::from_fn(|i| {
                let width = match FLOW_COLUMNS[i].1 {
                    "UInt64" => 8,
                    "UInt32" => 4,
                    "UInt16" | "Date" => 2,
                    "UInt8" => 1,
                    _ => 16,
                };
                Vec::with_capacity(rows * width)
            }),
        }
    }

    /// Appends one flow row.
    fn push(&mut self, sensor: &str, seq: u64, idx: u32, r: &FlowRecord, scratch: &mut Vec<u8>) {
        let [
            sensor_id,
            seq_c,
            idx_c,
            day,
            first_ns,
            last_ns,
            flow_id,
            proto,
            src_ip,
            src_port,
            dst_ip,
            dst_port,
            has_ports,
            vlan0,
            vlan1,
            packets,
            bytes,
            conn_state,
            community_id,
            record,
        ] = &mut self.cols;
        self.rows += 1;
        put_str(sensor_id, sensor.as_bytes());
        seq_c.extend_from_slice(&seq.to_le_bytes());
        idx_c.extend_from_slice(&idx.to_le_bytes());
        let d = (r.first_seen_ns / NS_PER_DAY).min(u64::from(u16::MAX)) as u16;
        day.extend_from_slice(&d.to_le_bytes());
        first_ns.extend_from_slice(&r.first_seen_ns.to_le_bytes());
        last_ns.extend_from_slice(&r.last_seen_ns.to_le_bytes());
        flow_id.extend_from_slice(&r.flow_id.to_le_bytes());
        proto.push(r.proto);
        put_str(src_ip, IpBytes::from(r.src_ip).as_slice());
        src_port.extend_from_slice(&r.src_port.unwrap_or(0).to_le_bytes());
        put_str(dst_ip, IpBytes::from(r.dst_ip).as_slice());
        dst_port.extend_from_slice(&r.dst_port.unwrap_or(0).to_le_bytes());
        has_ports.push(u8::from(r.src_port.is_some()));
        let v = r.vlan.as_slice();
        vlan0.extend_from_slice(&v.first().copied().unwrap_or(0).to_le_bytes());
        vlan1.extend_from_slice(&v.get(1).copied().unwrap_or(0).to_le_bytes());
        packets.extend_from_slice(&r.packets().to_le_bytes());
        bytes.extend_from_slice(&r.bytes().to_le_bytes());
        conn_state.push(state_index(r.conn_state));
        put_str(community_id, &r.community_id.0);
        // The rest of the record (read back with the columns above by
        // `read_flows`).
        scratch.clear();
        flow_without_identity(r).encode(scratch).unwrap_or_default();
        put_str(record, scratch);
    }

    /// Empties the block, keeping its buffers for the next.
    fn clear(&mut self) {
        self.rows = 0;
        self.cols.iter_mut().for_each(Vec::clear);
        self.head.clear();
    }

    /// The block in `Native` format, as parts to send one after another:
    /// column and row counts, then each column's name, type and values.
    fn parts(&mut self) -> Vec<&[u8]> {
        let head = &mut self.head;
        head.clear();
        put_varint(head, FLOW_COLUMNS.len() as u64);
        put_varint(head, self.rows);
        let mut ends = Vec::with_capacity(FLOW_COLUMNS.len());
        for (name, ty) in FLOW_COLUMNS {
            put_str(head, name.as_bytes());
            put_str(head, ty.as_bytes());
            ends.push(head.len());
        }
        let mut parts = Vec::with_capacity(2 * FLOW_COLUMNS.len());
        let mut start = 0;
        for (end, data) in ends.into_iter().zip(&self.cols) {
            parts.push(&self.head[start..end]);
            parts.push(data.as_slice());
            start = end;
        }
        parts
    }
}

/// Appends a batch's `batches` row: sensor_id, seq, flows, received_ns.
fn put_mark(out: &mut Vec<u8>, b: &IngestBatch) {
    put_str(out, b.sensor_id.as_bytes());
    out.extend_from_slice(&b.seq.to_le_bytes());
    out.extend_from_slice(&(b.flows.len() as u64).to_le_bytes());
    out.extend_from_slice(&b.received_ns.to_le_bytes());
}

fn state_index(s: ConnState) -> u8 {
    ConnState::ALL.iter().position(|c| *c == s).unwrap_or(0) as u8
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn put_str(out: &mut Vec<u8>, s: &[u8]) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s);
}

/// Reads RowBinary results.
struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(b: &'a [u8]) -> Reader<'a> {
        Reader { b }
    }

    fn done(&self) -> bool {
        self.b.is_empty()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.b.len() < n {
            return Err(corrupt("RowBinary result ends early"));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }

    fn u64(&mut self) -> Result<u64, StoreError> {
        let s = self.take(8)?;
        Ok(u64::from_le_bytes(s.try_into().unwrap_or([0; 8])))
    }

    fn u16(&mut self) -> Result<u16, StoreError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?[0])
    }

    fn bytes(&mut self) -> Result<&'a [u8], StoreError> {
        let mut len = 0u64;
        let mut shift = 0;
        loop {
            let b = self.u8()?;
            len |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 63 {
                return Err(corrupt("RowBinary length"));
            }
        }
        self.take(usize::try_from(len).map_err(|_| corrupt("RowBinary length"))?)
    }

    fn string(&mut self) -> Result<String, StoreError> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| corrupt("string not UTF-8"))
    }
}

/// The typed plan as a ClickHouse condition.
fn condition(f: &Filter, out: &mut String) {
    let dir = |d: Dir, out: &mut String, one: &dyn Fn(&str, &mut String)| match d {
        Dir::Src => one("src", out),
        Dir::Dst => one("dst", out),
        Dir::Either => {
            out.push('(');
            one("src", out);
            out.push_str(" OR ");
            one("dst", out);
            out.push(')');
        }
    };
    match f {
        Filter::All => out.push('1'),
        Filter::And(v) | Filter::Or(v) => {
            let op = if matches!(f, Filter::And(_)) {
                " AND "
            } else {
                " OR "
            };
            out.push('(');
            for (i, g) in v.iter().enumerate() {
                if i > 0 {
                    out.push_str(op);
                }
                condition(g, out);
            }
            if v.is_empty() {
                out.push_str(if matches!(f, Filter::And(_)) {
                    "1"
                } else {
                    "0"
                });
            }
            out.push(')');
        }
        Filter::Not(g) => {
            out.push_str("(NOT ");
            condition(g, out);
            out.push(')');
        }
        Filter::Ip(d, range) => {
            let (lo, hi) = (ip_to_bytes(range.lo), ip_to_bytes(range.hi));
            dir(*d, out, &|c, o| {
                let _ = write!(
                    o,
                    "(length({c}_ip) = {} AND {c}_ip >= {} AND {c}_ip <= {})",
                    lo.len(),
                    lit(&lo),
                    lit(&hi)
                );
            });
        }
        Filter::Port(d, lo, hi) => dir(*d, out, &|c, o| {
            let _ = write!(
                o,
                "(has_ports = 1 AND {c}_port >= {lo} AND {c}_port <= {hi})"
            );
        }),
        Filter::Proto(p) => {
            let _ = write!(out, "proto = {p}");
        }
        Filter::Family(v) => {
            let _ = write!(out, "length(src_ip) = {}", if *v == 4 { 4 } else { 16 });
        }
        Filter::Vlan(v) => {
            let _ = write!(out, "({v} != 0 AND (vlan0 = {v} OR vlan1 = {v}))");
        }
        Filter::State(s) => {
            let _ = write!(out, "conn_state = {}", state_index(*s));
        }
        Filter::Counter(c, op, n) => {
            let col = match c {
                Counter::Bytes => "bytes",
                Counter::Packets => "packets",
            };
            let _ = write!(out, "{col} {} {n}", op.as_str());
        }
        Filter::Sensor(s) => {
            let _ = write!(out, "sensor_id = {}", lit(s.as_bytes()));
        }
        Filter::CommunityId(c) => {
            let _ = write!(out, "community_id = {}", lit(&c.0));
        }
    }
}

/// The typed plan as a condition on roll-up `name`; false (and `out` of no
/// use) when the filter looks at something the roll-up does not hold.
fn rollup_condition(f: &Filter, name: &str, out: &mut String) -> bool {
    match (f, name) {
        (Filter::All, _) => out.push('1'),
        (Filter::And(v) | Filter::Or(v), _) => {
            let and = matches!(f, Filter::And(_));
            out.push('(');
            for (i, g) in v.iter().enumerate() {
                if i > 0 {
                    out.push_str(if and { " AND " } else { " OR " });
                }
                if !rollup_condition(g, name, out) {
                    return false;
                }
            }
            if v.is_empty() {
                out.push(if and { '1' } else { '0' });
            }
            out.push(')');
        }
        (Filter::Not(g), _) => {
            out.push_str("(NOT ");
            if !rollup_condition(g, name, out) {
                return false;
            }
            out.push(')');
        }
        (Filter::Ip(Dir::Src, range), "src") | (Filter::Ip(Dir::Dst, range), "dst") => {
            let (lo, hi) = (ip_to_bytes(range.lo), ip_to_bytes(range.hi));
            let _ = write!(
                out,
                "(length(k) = {} AND k >= {} AND k <= {})",
                lo.len(),
                lit(&lo),
                lit(&hi)
            );
        }
        // Both ends of a flow have the same family.
        (Filter::Family(v), "src" | "dst") => {
            let _ = write!(out, "length(k) = {}", if *v == 4 { 4 } else { 16 });
        }
        (Filter::Port(Dir::Dst, lo, hi), "dport") => {
            let _ = write!(out, "(k >= {lo} AND k <= {hi})");
        }
        (Filter::Proto(p), "dport") => {
            let _ = write!(out, "proto = {p}");
        }
        (Filter::Proto(p), "proto") => {
            let _ = write!(out, "k = {p}");
        }
        _ => return false,
    }
    true
}

fn where_clause(filter: &Filter, range: TimeRange) -> String {
    let mut w = String::from("WHERE ");
    condition(filter, &mut w);
    if let Some(s) = range.since_ns {
        let _ = write!(w, " AND first_ns >= {s}");
    }
    if let Some(u) = range.until_ns {
        let _ = write!(w, " AND first_ns < {u}");
    }
    w
}

impl FlowStore for ClickHouseStore {
    fn commit(&self, batch: &IngestBatch) -> Result<CommitOutcome, StoreError> {
        Ok(self.commit_many(&[batch])?.remove(0))
    }

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
            for s in sensor_ids {
                known.remove(*s);
            }
        }
        let mut ing = self
            .ingest
            .lock()
            .map_err(|_| StoreError::ClickHouse("state lock poisoned".into()))?;
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
            let body = self.select(&format!(
                "SELECT sensor_id, writer, toUInt64(max(opened_ns)) FROM {db}.streams \
                 WHERE sensor_id IN ({list}) GROUP BY sensor_id, writer"
            ))?;
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
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mut rows = Vec::new();
        for s in sensor_ids {
            let since = mine.get(*s).copied().unwrap_or(0);
            put_str(&mut rows, s.as_bytes());
            put_str(&mut rows, self.writer.as_bytes());
            rows.extend_from_slice(&now.max(since + 1).to_le_bytes());
        }
        self.http
            .insert(
                &format!(
                    "INSERT INTO {db}.streams (sensor_id, writer, opened_ns) FORMAT RowBinary"
                ),
                &rows,
            )
            .map_err(err)?;
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
            .map_err(|_| StoreError::ClickHouse("state lock poisoned".into()))?;
        let mut ing = self
            .ingest
            .lock()
            .map_err(|_| StoreError::ClickHouse("state lock poisoned".into()))?;
        let ingest = self.ingest_table(&mut ing)?;
        let mut outcomes = Vec::with_capacity(batches.len());
        let (mut marks, mut dups, mut runs) = (Vec::new(), Vec::new(), Vec::new());
        // The flow rows to insert: (batch, index in it).
        let mut rows: Vec<(&IngestBatch, u32)> = Vec::new();
        for b in batches {
            if ing
                .opened
                .get(&b.sensor_id)
                .is_some_and(|e| *e != ing.epoch)
            {
                outcomes.push(CommitOutcome::Fenced);
                continue;
            }
            let (last, flows_to) = match known.get(&b.sensor_id) {
                Some(v) => *v,
                None => self.db_last_seq(&b.sensor_id)?,
            };
            if b.seq > last && b.seq <= flows_to {
                // A commit stopped after (some of) the flows and before the
                // mark: ClickHouse writes an insert part by part (one per
                // day partition), so store the rows that are missing, by
                // their index in the batch, and the mark.
                let have = self.stored_indexes(b)?;
                rows.extend(
                    (0..b.flows.len() as u32)
                        .filter(|i| !have.contains(i))
                        .map(|i| (*b, i)),
                );
                put_mark(&mut marks, b);
                known.insert(b.sensor_id.clone(), (b.seq, flows_to));
                outcomes.push(CommitOutcome::Stored {
                    gap: b.seq - last - 1,
                });
                continue;
            }
            if b.seq <= last {
                put_str(&mut dups, b.sensor_id.as_bytes());
                dups.extend_from_slice(&b.seq.to_le_bytes());
                dups.extend_from_slice(&b.received_ns.to_le_bytes());
                known.insert(b.sensor_id.clone(), (last, flows_to));
                outcomes.push(CommitOutcome::Duplicate);
                continue;
            }
            rows.extend((0..b.flows.len() as u32).map(|i| (*b, i)));
            put_mark(&mut marks, b);
            if let Some(s) = &b.stats {
                put_str(&mut runs, b.sensor_id.as_bytes());
                runs.extend_from_slice(&s.run_id.to_le_bytes());
                runs.extend_from_slice(&b.received_ns.to_le_bytes());
                put_str(&mut runs, &s.encode_to_vec());
            }
            let gap = b.seq - last - 1;
            known.insert(b.sensor_id.clone(), (b.seq, b.seq));
            outcomes.push(CommitOutcome::Stored { gap });
        }
        let insert = |table: &str, cols: &str, data: &[u8]| -> Result<(), StoreError> {
            if data.is_empty() {
                return Ok(());
            }
            let st = format!("INSERT INTO {}.{table} ({cols}) FORMAT RowBinary", self.db);
            self.http.insert(&st, data).map_err(err)
        };
        // The flows in parallel inserts, each encoded by its own thread and
        // parsed and written by a server thread of its own; the marks only
        // once all are in. Columns named in the statement as in the block:
        // the table's own column order does not matter (a test checks).
        let flow_insert = format!(
            "INSERT INTO {}.{ingest} ({}) FORMAT Native",
            self.db,
            flow_column_names()
        );
        let insert_flows = |part: &[(&IngestBatch, u32)]| -> Result<(), HttpError> {
            let spare = self.blocks.lock().ok().and_then(|mut v| v.pop());
            let mut block = spare.unwrap_or_else(|| FlowBlock::with_rows(part.len()));
            block.clear();
            let mut scratch = Vec::new();
            for (b, i) in part {
                block.push(&b.sensor_id, b.seq, *i, &b.flows[*i as usize], &mut scratch);
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
                StoreError::ClickHouse(format!(
                    "fenced out: another collector took a sensor of this one over ({e})"
                ))
            } else {
                err(e)
            }
        });
        let res = flows
            .and_then(|()| insert("sensor_runs", "sensor_id, run_id, updated_ns, stats", &runs))
            .and_then(|()| insert("batches", "sensor_id, seq, flows, received_ns", &marks))
            .and_then(|()| insert("duplicates", "sensor_id, seq, received_ns", &dups));
        if res.is_err() {
            // What is known is no longer sure: read it again next time.
            known.clear();
        }
        res.map(|()| outcomes)
    }

    fn flows(
        &self,
        filter: &Filter,
        range: TimeRange,
        limit: usize,
    ) -> Result<Vec<(String, FlowRecord)>, StoreError> {
        let sql = format!(
            "SELECT {READ_COLS} FROM {}.flows {} ORDER BY first_ns, sensor_id, seq, flow_id LIMIT {}",
            self.db,
            where_clause(filter, range),
            limit.min(i64::MAX as usize)
        );
        self.read_flows(&self.select(&sql)?)
    }

    fn count(&self, filter: &Filter, range: TimeRange) -> Result<Totals, StoreError> {
        let inner = self.aggregate(
            range,
            filter,
            Some(("proto", "toUInt64(0)")),
            "toUInt64(0)",
            "",
        );
        let body = self.select(&format!(
            "SELECT toUInt64(sum(n)), toUInt64(sum(p)), toUInt64(sum(b)) FROM ({inner})"
        ))?;
        let mut r = Reader::new(&body);
        Ok(Totals {
            flows: r.u64()?,
            packets: r.u64()?,
            bytes: r.u64()?,
        })
    }

    fn series(
        &self,
        filter: &Filter,
        range: TimeRange,
        step_ns: u64,
    ) -> Result<Vec<SeriesPoint>, StoreError> {
        crate::query::check_step(step_ns).map_err(StoreError::BadQuery)?;
        // The step is a number of the typed plan, written as a literal.
        let f_key = format!("toUInt64(intDiv(first_ns, {step_ns}) * {step_ns})");
        let r_key = format!(
            "toUInt64(intDiv(minute, {}) * {step_ns})",
            step_ns / NS_PER_MIN
        );
        let rollup = step_ns
            .is_multiple_of(NS_PER_MIN)
            .then_some(("proto", r_key.as_str()));
        let inner = self.aggregate(range, filter, rollup, &f_key, "");
        let body = self.select(&format!(
            "SELECT g, toUInt64(sum(n)), toUInt64(sum(p)), toUInt64(sum(b)) FROM ({inner}) \
             GROUP BY g ORDER BY g LIMIT {}",
            MAX_SERIES_POINTS + 1
        ))?;
        let mut r = Reader::new(&body);
        let mut out = Vec::new();
        while !r.done() {
            out.push(SeriesPoint {
                start_ns: r.u64()?,
                totals: Totals {
                    flows: r.u64()?,
                    packets: r.u64()?,
                    bytes: r.u64()?,
                },
            });
        }
        Ok(out)
    }

    fn top(
        &self,
        filter: &Filter,
        range: TimeRange,
        key: TopKey,
        by: TopBy,
        limit: usize,
    ) -> Result<Vec<TopRow>, StoreError> {
        let (col, extra, rollup) = match key {
            TopKey::Src => ("src_ip", "", None),
            TopKey::Dst => ("dst_ip", "", Some("dst")),
            TopKey::DstPort => ("toUInt64(dst_port)", " AND has_ports = 1", Some("dport")),
            TopKey::SrcPort => ("toUInt64(src_port)", " AND has_ports = 1", None),
            TopKey::Proto => ("toUInt64(proto)", "", Some("proto")),
        };
        let order = match by {
            TopBy::Bytes => "b",
            TopBy::Packets => "p",
            TopBy::Flows => "n",
        };
        let limit = limit.min(i64::MAX as usize);
        let inner = self.aggregate(range, filter, rollup.map(|name| (name, "k")), col, extra);
        let sql = format!(
            "SELECT g, toUInt64(sum(n)) AS n, toUInt64(sum(p)) AS p, toUInt64(sum(b)) AS b FROM ({inner}) \
             GROUP BY g ORDER BY {order} DESC, g LIMIT {limit}"
        );
        let body = self.select(&sql)?;
        let mut r = Reader::new(&body);
        let mut out = Vec::new();
        while !r.done() {
            let k = match key {
                TopKey::Src | TopKey::Dst => {
                    let b = r.bytes()?;
                    ip_from_bytes("key", b)
                        .map_err(|e| corrupt(e.to_string()))?
                        .to_string()
                }
                TopKey::Proto => {
                    let p = r.u64()?;
                    vigil_proto::proto_name(p as u8).to_string()
                }
                _ => r.u64()?.to_string(),
            };
            out.push(TopRow {
                key: k,
                totals: Totals {
                    flows: r.u64()?,
                    packets: r.u64()?,
                    bytes: r.u64()?,
                },
            });
        }
        Ok(out)
    }

    fn sensors(&self) -> Result<Vec<SensorRecord>, StoreError> {
        let db = &self.db;
        let body = self.select(&format!(
            "SELECT sensor_id, max(seq), count(), sum(flows), max(received_ns), uniqExact(seq) \
             FROM {db}.batches GROUP BY sensor_id ORDER BY sensor_id"
        ))?;
        let mut r = Reader::new(&body);
        let mut out = Vec::new();
        while !r.done() {
            let sensor_id = r.string()?;
            let (last_seq, batches, flows, last_seen_ns, distinct) =
                (r.u64()?, r.u64()?, r.u64()?, r.u64()?, r.u64()?);
            out.push(SensorRecord {
                sensor_id,
                last_seq,
                batches,
                flows,
                duplicates: 0,
                seq_gaps: last_seq.saturating_sub(distinct),
                last_seen_ns,
                stats: pb::SensorStats::default(),
            });
        }
        let body = self.select(&format!(
            "SELECT sensor_id, count() FROM {db}.duplicates GROUP BY sensor_id"
        ))?;
        let mut r = Reader::new(&body);
        while !r.done() {
            let (s, n) = (r.string()?, r.u64()?);
            if let Some(rec) = out.iter_mut().find(|x| x.sensor_id == s) {
                rec.duplicates = n;
            }
        }
        let body = self.select(&format!(
            "SELECT sensor_id, stats FROM {db}.sensor_runs FINAL ORDER BY sensor_id, updated_ns, run_id"
        ))?;
        let mut r = Reader::new(&body);
        let mut runs: HashMap<String, Vec<pb::SensorStats>> = HashMap::new();
        while !r.done() {
            let s = r.string()?;
            let st = pb::SensorStats::decode(r.bytes()?)
                .map_err(|e| corrupt(format!("sensor stats: {e}")))?;
            runs.entry(s).or_default().push(st);
        }
        for rec in &mut out {
            if let Some(v) = runs.remove(&rec.sensor_id) {
                rec.stats = sum_stats(v);
            }
        }
        Ok(out)
    }

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
            let body = self.select(&format!(
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

    fn put_alerts(&self, updates: &[AlertUpdate]) -> Result<(), StoreError> {
        if updates.is_empty() {
            return Ok(());
        }
        let (mut rows, mut ev) = (Vec::new(), Vec::new());
        let version = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        for u in updates {
            let a = &u.alert;
            let mut body = a.clone();
            body.evidence = Vec::new();
            let json = serde_json::to_string(&body)
                .map_err(|e| StoreError::Unrepresentable(format!("alert {}: {e}", a.id)))?;
            rows.extend_from_slice(&a.id.to_le_bytes());
            put_str(&mut rows, a.kind.as_str().as_bytes());
            rows.push(a.severity as u8);
            put_str(&mut rows, a.asset.as_bytes());
            rows.extend_from_slice(&a.first_seen_ns.to_le_bytes());
            rows.extend_from_slice(&a.last_seen_ns.to_le_bytes());
            rows.extend_from_slice(&version.to_le_bytes());
            put_str(&mut rows, json.as_bytes());
            for e in &a.evidence {
                ev.extend_from_slice(&a.id.to_le_bytes());
                put_str(&mut ev, e.sensor_id.as_bytes());
                ev.extend_from_slice(&e.flow_id.to_le_bytes());
                ev.extend_from_slice(&e.first_ns.to_le_bytes());
            }
        }
        let db = &self.db;
        if !ev.is_empty() {
            self.http
                .insert(
                    &format!("INSERT INTO {db}.alert_evidence (alert, sensor_id, flow_id, first_ns) FORMAT RowBinary"),
                    &ev,
                )
                .map_err(err)?;
        }
        self.http
            .insert(
                &format!("INSERT INTO {db}.alerts (id, kind, severity, asset, first_ns, last_ns, version, body) FORMAT RowBinary"),
                &rows,
            )
            .map_err(err)
    }

    fn alerts(&self, q: &AlertQuery) -> Result<Vec<Alert>, StoreError> {
        let mut w = String::from("1");
        if let Some(s) = q.since_ns {
            let _ = write!(w, " AND last_ns >= {s}");
        }
        if let Some(u) = q.until_ns {
            let _ = write!(w, " AND first_ns < {u}");
        }
        if let Some(k) = q.kind {
            let _ = write!(w, " AND kind = {}", lit(k.as_str().as_bytes()));
        }
        if let Some(s) = q.min_severity {
            let _ = write!(w, " AND severity >= {}", s as u8);
        }
        if let Some(a) = &q.asset {
            let _ = write!(w, " AND asset = {}", lit(a.as_bytes()));
        }
        let limit = if q.limit == 0 { 1000 } else { q.limit };
        let body = self.select(&format!(
            "SELECT body FROM {}.alerts FINAL WHERE {w} ORDER BY last_ns DESC, id DESC LIMIT {limit}",
            self.db
        ))?;
        let mut r = Reader::new(&body);
        let mut out = Vec::new();
        while !r.done() {
            let b = r.bytes()?;
            out.push(serde_json::from_slice(b).map_err(|e| corrupt(format!("alert: {e}")))?);
        }
        Ok(out)
    }

    fn alert(&self, id: u64) -> Result<Option<Alert>, StoreError> {
        let db = &self.db;
        let body = self.select(&format!(
            "SELECT body FROM {db}.alerts FINAL WHERE id = {id}"
        ))?;
        let mut r = Reader::new(&body);
        if r.done() {
            return Ok(None);
        }
        let mut a: Alert =
            serde_json::from_slice(r.bytes()?).map_err(|e| corrupt(format!("alert: {e}")))?;
        let body = self.select(&format!(
            "SELECT DISTINCT sensor_id, flow_id, first_ns FROM {db}.alert_evidence WHERE alert = {id} ORDER BY first_ns, flow_id, sensor_id"
        ))?;
        let mut r = Reader::new(&body);
        a.evidence.clear();
        while !r.done() {
            a.evidence.push(EvidenceRef {
                sensor_id: r.string()?,
                flow_id: r.u64()?,
                first_ns: r.u64()?,
            });
        }
        Ok(Some(a))
    }

    fn evidence_flows(
        &self,
        evidence: &[EvidenceRef],
    ) -> Result<Vec<(String, FlowRecord)>, StoreError> {
        let mut out = Vec::new();
        // The list goes into the statement twice: 500 references of the
        // longest sensor ids (some 185 bytes each) keep it well within the
        // server's `max_query_size` (256 KiB by default).
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
            // From the flows, or from the copies kept when retention
            // dropped their day (both, for a moment, while it does).
            let one = |table: &str| {
                format!(
                    "SELECT {READ_COLS}, seq, idx FROM {}.{table} WHERE first_ns >= {lo} \
                     AND first_ns <= {hi} AND (sensor_id, flow_id, first_ns) IN ({list})",
                    self.db
                )
            };
            let sql = format!(
                "SELECT {READ_COLS} FROM ({} UNION ALL {}) \
                 ORDER BY first_ns, sensor_id, seq, idx LIMIT 1 BY sensor_id, seq, idx",
                one("flows"),
                one("evidence_flows")
            );
            out.extend(self.read_flows(&self.select(&sql)?)?);
        }
        out.sort_by_key(|(_, r)| r.first_seen_ns);
        Ok(out)
    }

    fn max_alert_id(&self) -> Result<u64, StoreError> {
        let body = self.select(&format!("SELECT max(id) FROM {}.alerts", self.db))?;
        Reader::new(&body).u64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::parse;

    #[test]
    fn filters_compile_to_literals_only() {
        let f = parse("src net 10.0.0.0/8 and not dst port 22 or proto udp").unwrap();
        let mut s = String::new();
        condition(&f, &mut s);
        assert_eq!(
            s,
            "(((length(src_ip) = 4 AND src_ip >= unhex('0A000000') AND src_ip <= unhex('0AFFFFFF')) \
             AND (NOT (has_ports = 1 AND dst_port >= 22 AND dst_port <= 22))) OR proto = 17)"
        );
    }

    #[test]
    fn a_native_block_is_counts_then_each_column_named_typed_and_filled() {
        use vigil_proto::{CommunityId, EndReason, History, Vlans};
        let r = FlowRecord {
            flow_id: 9,
            first_seen_ns: 86_400_000_000_000 * 3 + 5,
            last_seen_ns: 86_400_000_000_000 * 3 + 6,
            proto: 17,
            src_ip: "10.0.0.1".parse().unwrap(),
            src_port: Some(53),
            dst_ip: "2001:db8::1".parse().unwrap(),
            dst_port: Some(5353),
            vlan: Vlans::new(7, 0),
            fwd_packets: 1,
            fwd_bytes: 60,
            rev_packets: 1,
            rev_bytes: 90,
            fwd_tcp_flags: 0,
            rev_tcp_flags: 0,
            fwd_initial_tcp_flags: 0,
            rev_initial_tcp_flags: 0,
            conn_state: ConnState::SF,
            history: History::default(),
            end_reason: EndReason::Idle,
            community_id: CommunityId([1; 20]),
            tunnel: None,
        };
        let mut block = FlowBlock::with_rows(2);
        let mut scratch = Vec::new();
        block.push("s1", 4, 0, &r, &mut scratch);
        block.push("s1", 4, 1, &r, &mut scratch);
        let bytes: Vec<u8> = block.parts().concat();
        // Columns, rows, then the first column: name, type, two values.
        assert_eq!(&bytes[..2], &[20, 2]);
        assert_eq!(&bytes[2..25], b"\x09sensor_id\x06String\x02s1\x02s1");
        // The day of `first_seen`, as the Date column holds it.
        let day = b"\x03day\x04Date";
        let at = bytes.windows(day.len()).position(|w| w == day).unwrap() + day.len();
        assert_eq!(&bytes[at..at + 4], &[3, 0, 3, 0]);
        // Addresses as 4- and 16-byte strings; VLANs and ports as numbers.
        let src = b"\x06src_ip\x06String\x04\x0a\x00\x00\x01\x04\x0a\x00\x00\x01";
        assert!(bytes.windows(src.len()).any(|w| w == src));
        let dst = b"\x06dst_ip\x06String\x10";
        let at = bytes.windows(dst.len()).position(|w| w == dst).unwrap() + dst.len();
        assert_eq!(&bytes[at..at + 2], &[0x20, 0x01]);
        let vlan0 = b"\x05vlan0\x06UInt16\x07\x00\x07\x00";
        assert!(bytes.windows(vlan0.len()).any(|w| w == vlan0));
        // A block used again starts empty.
        block.clear();
        block.push("s2", 5, 0, &r, &mut scratch);
        assert_eq!(&block.parts().concat()[..2], &[20, 1]);
    }

    #[test]
    fn rows_are_split_into_parallel_inserts_of_at_least_the_minimum() {
        assert_eq!(split_rows(40_000, 2), vec![0..20_000, 20_000..40_000]);
        // Too few rows for a part each: one insert.
        assert_eq!(split_rows(100, 2), vec![0..100]);
        assert_eq!(split_rows(40_000, 8).len(), 2);
        assert_eq!(
            split_rows(50_000, 3),
            vec![0..16_666, 16_666..33_333, 33_333..50_000]
        );
        assert!(split_rows(0, 2).is_empty());
    }

    #[test]
    fn names_with_sql_in_them_are_refused() {
        for bad in ["", "a;drop", "a b", "1db", "x.y"] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert!(valid_name("vigil_2"));
        assert_eq!(lit(b"a'"), "unhex('6127')");
    }

    #[test]
    fn a_dropped_ingest_table_is_recognized_in_both_servers_words() {
        let server = |message: &str| HttpError::Server {
            addr: "127.0.0.1:8123".into(),
            status: 404,
            message: message.into(),
        };
        let t = "ingest_00112233aabbccdd_1";
        for m in [
            // 18.16
            "Code: 60, e.displayText() = DB::Exception: Table v.ingest_00112233aabbccdd_1 doesn't exist., e.what() = DB::Exception",
            // current releases
            "Code: 60. DB::Exception: Table v.ingest_00112233aabbccdd_1 does not exist. (UNKNOWN_TABLE)",
        ] {
            assert!(is_fenced(&server(m), t), "{m}");
        }
        // Another table missing, another error, another ingest table.
        for m in [
            "Code: 60. DB::Exception: Table v.flows does not exist. (UNKNOWN_TABLE)",
            "Code: 241. DB::Exception: Memory limit exceeded while inserting into v.ingest_00112233aabbccdd_1",
            "Code: 60. DB::Exception: Table v.ingest_00112233aabbccdd_2 does not exist. (UNKNOWN_TABLE)",
        ] {
            assert!(!is_fenced(&server(m), t), "{m}");
        }
        let io = HttpError::Io {
            addr: "127.0.0.1:8123".into(),
            source: std::io::Error::other(t),
        };
        assert!(!is_fenced(&io, t));
        // Each store names itself apart.
        assert_ne!(writer_name(), writer_name());
        assert!(writer_name().bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
