//! The embedded store: one SQLite database (`vigil.db` in the data
//! directory) in WAL mode, through `rusqlite` with SQLite bundled.
//!
//! Tables:
//! - `flows`: one row per record; `rowid` is the stored flow's id. Packed
//!   columns keep rows small: `tcp_flags` holds the four flag bytes
//!   (fwd, rev, fwd initial, rev initial, lowest first), `vlan` the outer id
//!   plus the inner id shifted by 12 (0: untagged), `tunnel` a blob
//!   `[type, src_len, src…, dst…]`. Addresses are 4- or 16-byte blobs, so a
//!   CIDR block is a `BETWEEN` of two blobs of its length. Indexed by
//!   `first_ns`.
//! - `rollup_src`, `rollup_dst`, `rollup_dport`, `rollup_proto`: per-minute
//!   (of `first_seen`) flows, packets and bytes by initiator, responder,
//!   responder port and protocol, updated in the batch's transaction. An
//!   unfiltered top-N or count over a long range reads whole minutes from
//!   them and only the partial minutes at the edges from `flows`.
//! - `sensors` (the dedupe mark: highest committed `seq`, plus counts) and
//!   `sensor_runs` (the latest counters of each sensor process).
//!
//! Writes go through one connection behind a mutex (SQLite has one writer);
//! reads use pooled connections of their own, which WAL lets run beside the
//! writer.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use prost::Message as _;
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior, params};
use vigil_proto::wire::{IpBytes, ip_from_bytes, ip_to_bytes};
use vigil_proto::{
    CommunityId, ConnState, EndReason, FlowRecord, History, TunnelInfo, TunnelType, Vlans, pb,
    proto_name,
};

use super::{
    AlertQuery, CommitOutcome, FlowStore, IngestBatch, RetentionReport, SensorRecord, StoreError,
    sum_stats,
};
use crate::detect::{Alert, AlertUpdate, EvidenceRef};
use crate::query::{
    Counter, Dir, Filter, MAX_SERIES_POINTS, SeriesPoint, TimeRange, TopBy, TopKey, TopRow, Totals,
};

const NS_PER_MIN: u64 = 60_000_000_000;
const SCHEMA_VERSION: i64 = 1;

/// How hard a commit waits for the disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Synchronous {
    /// Every commit is on disk before it returns (and before the ack):
    /// survives power loss. The default.
    #[default]
    Full,
    /// Commits survive a crash of the collector process (SIGKILL included)
    /// but the last ones may be lost on power loss or an OS crash.
    Normal,
}

/// Embedded store settings.
#[derive(Clone, Debug, Default)]
pub struct SqliteConfig {
    /// Durability of commits.
    pub synchronous: Synchronous,
    /// Delete records older than this (by `first_seen`).
    pub max_age: Option<Duration>,
    /// Delete the oldest records while the database holds more than this.
    pub max_bytes: Option<u64>,
}

/// The embedded SQLite store.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    cfg: SqliteConfig,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    /// Opened with [`SqliteStore::open_read_only`].
    read_only: bool,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sensors (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    last_seq INTEGER NOT NULL DEFAULT 0,
    batches INTEGER NOT NULL DEFAULT 0,
    flows INTEGER NOT NULL DEFAULT 0,
    duplicates INTEGER NOT NULL DEFAULT 0,
    seq_gaps INTEGER NOT NULL DEFAULT 0,
    last_seen_ns INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS sensor_runs (
    sensor INTEGER NOT NULL,
    run_id INTEGER NOT NULL,
    updated_ns INTEGER NOT NULL,
    stats BLOB NOT NULL,
    PRIMARY KEY (sensor, run_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS flows (
    sensor INTEGER NOT NULL,
    flow_id INTEGER NOT NULL,
    first_ns INTEGER NOT NULL,
    last_ns INTEGER NOT NULL,
    proto INTEGER NOT NULL,
    src_ip BLOB NOT NULL,
    src_port INTEGER,
    dst_ip BLOB NOT NULL,
    dst_port INTEGER,
    vlan INTEGER NOT NULL,
    fwd_packets INTEGER NOT NULL,
    fwd_bytes INTEGER NOT NULL,
    rev_packets INTEGER NOT NULL,
    rev_bytes INTEGER NOT NULL,
    tcp_flags INTEGER NOT NULL,
    conn_state INTEGER NOT NULL,
    history TEXT NOT NULL,
    end_reason INTEGER NOT NULL,
    community_id BLOB NOT NULL,
    tunnel BLOB
);
CREATE INDEX IF NOT EXISTS flows_first_ns ON flows (first_ns);
CREATE TABLE IF NOT EXISTS rollup_src (
    minute INTEGER NOT NULL, k BLOB NOT NULL,
    flows INTEGER NOT NULL, packets INTEGER NOT NULL, bytes INTEGER NOT NULL,
    PRIMARY KEY (minute, k)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_dst (
    minute INTEGER NOT NULL, k BLOB NOT NULL,
    flows INTEGER NOT NULL, packets INTEGER NOT NULL, bytes INTEGER NOT NULL,
    PRIMARY KEY (minute, k)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_dport (
    minute INTEGER NOT NULL, proto INTEGER NOT NULL, k INTEGER NOT NULL,
    flows INTEGER NOT NULL, packets INTEGER NOT NULL, bytes INTEGER NOT NULL,
    PRIMARY KEY (minute, proto, k)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    severity INTEGER NOT NULL,
    asset TEXT NOT NULL,
    first_ns INTEGER NOT NULL,
    last_ns INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_last_ns ON alerts (last_ns);
CREATE TABLE IF NOT EXISTS alert_evidence (
    alert INTEGER NOT NULL,
    sensor TEXT NOT NULL,
    flow_id INTEGER NOT NULL,
    first_ns INTEGER NOT NULL,
    PRIMARY KEY (alert, sensor, flow_id, first_ns)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS alert_evidence_flow ON alert_evidence (flow_id);
CREATE TABLE IF NOT EXISTS rollup_proto (
    minute INTEGER NOT NULL, k INTEGER NOT NULL,
    flows INTEGER NOT NULL, packets INTEGER NOT NULL, bytes INTEGER NOT NULL,
    PRIMARY KEY (minute, k)) WITHOUT ROWID;
";

const FLOW_COLUMNS: &str = "f.rowid, s.name, f.flow_id, f.first_ns, f.last_ns, f.proto, f.src_ip, f.src_port, f.dst_ip, f.dst_port, f.vlan, f.fwd_packets, f.fwd_bytes, f.rev_packets, f.rev_bytes, f.tcp_flags, f.conn_state, f.history, f.end_reason, f.community_id, f.tunnel";

impl SqliteStore {
    /// Opens (creating if needed) `vigil.db` in `dir`.
    pub fn open(dir: &Path, cfg: SqliteConfig) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join("vigil.db");
        let conn = Connection::open(&path).map_err(|source| StoreError::Sqlite {
            path: path.clone(),
            op: "opening the database",
            source,
        })?;
        let sync = match cfg.synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        };
        let setup = format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {sync}; PRAGMA cache_size = -65536;
             PRAGMA temp_store = MEMORY; PRAGMA busy_timeout = 10000; {SCHEMA}"
        );
        let store = SqliteStore {
            path,
            cfg,
            writer: Mutex::new(conn),
            readers: Mutex::new(Vec::new()),
            read_only: false,
        };
        {
            let conn = store.lock_writer();
            conn.execute_batch(&setup)
                .map_err(|e| store.err("creating the schema", e))?;
            let v: Option<i64> = conn
                .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(|e| store.err("reading the schema version", e))?;
            match v {
                None => {
                    conn.execute(
                        "INSERT INTO meta (key, value) VALUES ('schema', ?1)",
                        [SCHEMA_VERSION],
                    )
                    .map_err(|e| store.err("writing the schema version", e))?;
                }
                Some(SCHEMA_VERSION) => {}
                Some(other) => {
                    return Err(StoreError::Corrupt {
                        path: store.path.clone(),
                        what: format!(
                            "schema version {other}; this build reads version {SCHEMA_VERSION}"
                        ),
                    });
                }
            }
        }
        Ok(store)
    }

    /// Opens an existing store for reading only (`vigil query --data-dir`):
    /// nothing is created or written, so analysts need no write permission.
    /// Writing through it fails.
    pub fn open_read_only(dir: &Path) -> Result<SqliteStore, StoreError> {
        let path = dir.join("vigil.db");
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| StoreError::Sqlite {
            path: path.clone(),
            op: "opening the database read-only",
            source,
        })?;
        let store = SqliteStore {
            path,
            cfg: SqliteConfig::default(),
            writer: Mutex::new(conn),
            readers: Mutex::new(Vec::new()),
            read_only: true,
        };
        {
            let conn = store.lock_writer();
            conn.execute_batch("PRAGMA busy_timeout = 10000;")
                .map_err(|e| store.err("configuring the connection", e))?;
            let v: Option<i64> = conn
                .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(|e| store.err("reading the schema version", e))?;
            if v != Some(SCHEMA_VERSION) {
                return Err(StoreError::Corrupt {
                    path: store.path.clone(),
                    what: format!(
                        "schema version {v:?}; this build reads version {SCHEMA_VERSION}"
                    ),
                });
            }
        }
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn bind_err(&self, e: BindError) -> StoreError {
        match e {
            BindError::Sql(source) => self.err("binding a flow", source),
            BindError::Range(e) => e,
        }
    }

    fn err(&self, op: &'static str, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            op,
            source,
        }
    }

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves the connection usable: every
        // change is inside a transaction that rolls back when dropped.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn with_reader<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pooled = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some(c) => c,
            None => {
                let c = Connection::open_with_flags(
                    &self.path,
                    if self.read_only {
                        OpenFlags::SQLITE_OPEN_READ_ONLY
                    } else {
                        OpenFlags::SQLITE_OPEN_READ_WRITE
                    } | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(|e| self.err("opening a reader", e))?;
                c.execute_batch(
                    "PRAGMA cache_size = -65536; PRAGMA temp_store = MEMORY; PRAGMA busy_timeout = 10000; PRAGMA query_only = ON;",
                )
                .map_err(|e| self.err("configuring a reader", e))?;
                c
            }
        };
        let r = f(&conn);
        let mut pool = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < 8 {
            pool.push(conn);
        }
        r
    }

    fn decode_row(&self, row: &Row<'_>) -> Result<(String, FlowRecord), StoreError> {
        let sql = |e| self.err("reading a flow row", e);
        let corrupt = |what: String| StoreError::Corrupt {
            path: self.path.clone(),
            what,
        };
        let rowid: i64 = row.get(0).map_err(sql)?;
        let sensor: String = row.get(1).map_err(sql)?;
        let u = |i: usize| -> Result<u64, StoreError> {
            let v: i64 = row.get(i).map_err(sql)?;
            u64::try_from(v).map_err(|_| corrupt(format!("flow {rowid}: negative column {i}")))
        };
        let ip = |i: usize, what: &'static str| -> Result<IpAddr, StoreError> {
            let b: Vec<u8> = row.get(i).map_err(sql)?;
            ip_from_bytes(what, &b).map_err(|e| corrupt(format!("flow {rowid}: {e}")))
        };
        let port = |i: usize| -> Result<Option<u16>, StoreError> {
            let v: Option<i64> = row.get(i).map_err(sql)?;
            v.map(|p| u16::try_from(p).map_err(|_| corrupt(format!("flow {rowid}: port {p}"))))
                .transpose()
        };
        let flags = u(15)?;
        let vlan = u(10)?;
        let state = u(16)? as usize;
        let reason = u(18)? as usize;
        let history: String = row.get(17).map_err(sql)?;
        let cid: Vec<u8> = row.get(19).map_err(sql)?;
        let tunnel: Option<Vec<u8>> = row.get(20).map_err(sql)?;
        let proto = u8::try_from(u(5)?).map_err(|_| corrupt(format!("flow {rowid}: proto")))?;
        let rec = FlowRecord {
            flow_id: u(2)?,
            first_seen_ns: u(3)?,
            last_seen_ns: u(4)?,
            proto,
            src_ip: ip(6, "src_ip")?,
            src_port: port(7)?,
            dst_ip: ip(8, "dst_ip")?,
            dst_port: port(9)?,
            vlan: Vlans::new((vlan & 0xfff) as u16, ((vlan >> 12) & 0xfff) as u16),
            fwd_packets: u(11)?,
            fwd_bytes: u(12)?,
            rev_packets: u(13)?,
            rev_bytes: u(14)?,
            fwd_tcp_flags: flags as u8,
            rev_tcp_flags: (flags >> 8) as u8,
            fwd_initial_tcp_flags: (flags >> 16) as u8,
            rev_initial_tcp_flags: (flags >> 24) as u8,
            conn_state: *ConnState::ALL
                .get(state)
                .ok_or_else(|| corrupt(format!("flow {rowid}: conn_state {state}")))?,
            history: History::parse(&history)
                .ok_or_else(|| corrupt(format!("flow {rowid}: history {history:?}")))?,
            end_reason: *EndReason::ALL
                .get(reason)
                .ok_or_else(|| corrupt(format!("flow {rowid}: end_reason {reason}")))?,
            community_id: CommunityId(
                <[u8; 20]>::try_from(cid.as_slice())
                    .map_err(|_| corrupt(format!("flow {rowid}: community_id")))?,
            ),
            tunnel: match tunnel {
                None => None,
                Some(b) => Some(
                    decode_tunnel(&b).ok_or_else(|| corrupt(format!("flow {rowid}: tunnel")))?,
                ),
            },
        };
        Ok((sensor, rec))
    }
}

const TUNNEL_TYPES: [TunnelType; 5] = [
    TunnelType::Gre,
    TunnelType::Erspan,
    TunnelType::Vxlan,
    TunnelType::Geneve,
    TunnelType::IpInIp,
];

fn encode_tunnel(t: &TunnelInfo) -> Vec<u8> {
    let src = ip_to_bytes(t.outer_src);
    let dst = ip_to_bytes(t.outer_dst);
    let kind = TUNNEL_TYPES.iter().position(|k| *k == t.kind).unwrap_or(0) as u8;
    let mut b = Vec::with_capacity(2 + src.len() + dst.len());
    b.push(kind);
    b.push(src.len() as u8);
    b.extend_from_slice(&src);
    b.extend_from_slice(&dst);
    b
}

fn decode_tunnel(b: &[u8]) -> Option<TunnelInfo> {
    let (&kind, rest) = b.split_first()?;
    let (&n, rest) = rest.split_first()?;
    let n = usize::from(n);
    if rest.len() < n {
        return None;
    }
    let (src, dst) = rest.split_at(n);
    Some(TunnelInfo {
        kind: *TUNNEL_TYPES.get(usize::from(kind))?,
        outer_src: ip_from_bytes("tunnel", src).ok()?,
        outer_dst: ip_from_bytes("tunnel", dst).ok()?,
    })
}

/// Rows per multi-row INSERT.
const ROWS_PER_INSERT: usize = 32;
/// Bound values per flow row.
const FLOW_PARAMS: usize = 20;

fn insert_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO flows (sensor, flow_id, first_ns, last_ns, proto, src_ip, src_port, dst_ip, dst_port, vlan, fwd_packets, fwd_bytes, rev_packets, rev_bytes, tcp_flags, conn_state, history, end_reason, community_id, tunnel) VALUES ",
    );
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push('(');
        for j in 0..FLOW_PARAMS {
            if j > 0 {
                sql.push(',');
            }
            sql.push('?');
        }
        sql.push(')');
    }
    sql
}

/// Why binding a flow failed.
enum BindError {
    Sql(rusqlite::Error),
    Range(StoreError),
}

impl From<rusqlite::Error> for BindError {
    fn from(e: rusqlite::Error) -> Self {
        BindError::Sql(e)
    }
}

impl From<StoreError> for BindError {
    fn from(e: StoreError) -> Self {
        BindError::Range(e)
    }
}

/// Binds one flow's values at parameters `base + 1 ..= base + FLOW_PARAMS`.
fn bind_flow(
    st: &mut rusqlite::CachedStatement<'_>,
    base: usize,
    sensor: i64,
    r: &FlowRecord,
) -> Result<(), BindError> {
    let v = r.vlan.as_slice();
    let vlan = i64::from(v.first().copied().unwrap_or(0))
        | (i64::from(v.get(1).copied().unwrap_or(0)) << 12);
    let flags = i64::from(r.fwd_tcp_flags)
        | (i64::from(r.rev_tcp_flags) << 8)
        | (i64::from(r.fwd_initial_tcp_flags) << 16)
        | (i64::from(r.rev_initial_tcp_flags) << 24);
    let state = ConnState::ALL
        .iter()
        .position(|s| *s == r.conn_state)
        .unwrap_or(0) as i64;
    let reason = EndReason::ALL
        .iter()
        .position(|s| *s == r.end_reason)
        .unwrap_or(0) as i64;
    let ip = IpBytes::from;
    let p = |i: usize| base + i;
    st.raw_bind_parameter(p(1), sensor)?;
    st.raw_bind_parameter(p(2), i64_of("flow_id", r.flow_id)?)?;
    st.raw_bind_parameter(p(3), i64_of("first_seen_ns", r.first_seen_ns)?)?;
    st.raw_bind_parameter(p(4), i64_of("last_seen_ns", r.last_seen_ns)?)?;
    st.raw_bind_parameter(p(5), r.proto)?;
    st.raw_bind_parameter(p(6), ip(r.src_ip).as_slice())?;
    st.raw_bind_parameter(p(7), r.src_port)?;
    st.raw_bind_parameter(p(8), ip(r.dst_ip).as_slice())?;
    st.raw_bind_parameter(p(9), r.dst_port)?;
    st.raw_bind_parameter(p(10), vlan)?;
    st.raw_bind_parameter(p(11), i64_of("fwd_packets", r.fwd_packets)?)?;
    st.raw_bind_parameter(p(12), i64_of("fwd_bytes", r.fwd_bytes)?)?;
    st.raw_bind_parameter(p(13), i64_of("rev_packets", r.rev_packets)?)?;
    st.raw_bind_parameter(p(14), i64_of("rev_bytes", r.rev_bytes)?)?;
    st.raw_bind_parameter(p(15), flags)?;
    st.raw_bind_parameter(p(16), state)?;
    st.raw_bind_parameter(p(17), r.history.as_str())?;
    st.raw_bind_parameter(p(18), reason)?;
    st.raw_bind_parameter(p(19), &r.community_id.0[..])?;
    st.raw_bind_parameter(p(20), r.tunnel.as_ref().map(encode_tunnel))?;
    Ok(())
}

fn i64_of(what: &str, v: u64) -> Result<i64, StoreError> {
    i64::try_from(v)
        .map_err(|_| StoreError::Unrepresentable(format!("{what} = {v} exceeds 2^63 - 1")))
}

/// Per-minute sums of one batch, keyed by table key. Sorted maps, so the
/// upserts walk each roll-up B-tree in key order.
#[derive(Default)]
struct Rollups {
    src: BTreeMap<(u64, Vec<u8>), Totals>,
    dst: BTreeMap<(u64, Vec<u8>), Totals>,
    dport: BTreeMap<(u64, u8, u16), Totals>,
    proto: BTreeMap<(u64, u8), Totals>,
}

impl Rollups {
    fn add(&mut self, r: &FlowRecord) {
        let src = &ip_to_bytes(r.src_ip);
        let dst = &ip_to_bytes(r.dst_ip);
        let m = r.first_seen_ns / NS_PER_MIN;
        let t = Totals {
            flows: 1,
            packets: r.packets(),
            bytes: r.bytes(),
        };
        self.src.entry((m, src.to_vec())).or_default().add(t);
        self.dst.entry((m, dst.to_vec())).or_default().add(t);
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

impl FlowStore for SqliteStore {
    fn commit(&self, b: &IngestBatch) -> Result<CommitOutcome, StoreError> {
        let mut out = self.commit_many(&[b])?;
        out.pop()
            .ok_or_else(|| StoreError::Unrepresentable("empty commit".into()))
    }

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

    fn flows(
        &self,
        filter: &Filter,
        range: TimeRange,
        limit: usize,
    ) -> Result<Vec<(String, FlowRecord)>, StoreError> {
        let mut w = Where::default();
        w.time(range);
        w.filter(filter);
        let sql = format!(
            "SELECT {FLOW_COLUMNS} FROM flows f JOIN sensors s ON s.id = f.sensor WHERE {} ORDER BY f.first_ns, f.rowid LIMIT ?",
            w.sql
        );
        w.params
            .push(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
        self.with_reader(|c| {
            let mut stmt = c
                .prepare_cached(&sql)
                .map_err(|e| self.err("preparing a flow query", e))?;
            let mut rows = stmt
                .query(rusqlite::params_from_iter(w.params.iter()))
                .map_err(|e| self.err("running a flow query", e))?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(|e| self.err("reading flows", e))? {
                out.push(self.decode_row(row)?);
            }
            Ok(out)
        })
    }

    fn count(&self, filter: &Filter, range: TimeRange) -> Result<Totals, StoreError> {
        let (sql, params) = aggregate(range, filter, Some(("rollup_proto", "r.k")), "f.proto", "1");
        let sql = format!("SELECT COUNT(*), SUM(n), SUM(p), SUM(b) FROM ({sql})");
        self.with_reader(|c| {
            c.query_row(&sql, rusqlite::params_from_iter(params.iter()), |r| {
                let get = |i| r.get::<_, Option<i64>>(i).map(|v| v.unwrap_or(0) as u64);
                Ok(Totals {
                    flows: get(1)?,
                    packets: get(2)?,
                    bytes: get(3)?,
                })
            })
            .map_err(|e| self.err("counting flows", e))
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
        let step = i64::try_from(step_ns).unwrap_or(i64::MAX);
        let flow_key = format!("(f.first_ns / {step}) * {step}");
        let r_key = format!("(r.minute / {}) * {step}", step_ns / NS_PER_MIN);
        let rollup = step_ns
            .is_multiple_of(NS_PER_MIN)
            .then_some(("rollup_proto", r_key.as_str()));
        let (inner, params) = aggregate(range, filter, rollup, &flow_key, "1");
        let sql = format!(
            "SELECT k, SUM(n), SUM(p), SUM(b) FROM ({inner}) GROUP BY k ORDER BY k LIMIT {}",
            MAX_SERIES_POINTS + 1
        );
        self.with_reader(|c| {
            let mut stmt = c
                .prepare(&sql)
                .map_err(|e| self.err("preparing a time series query", e))?;
            let rows = stmt
                .query_map(rusqlite::params_from_iter(params.iter()), |r| {
                    let get = |i| r.get::<_, i64>(i).map(|v| v as u64);
                    Ok(SeriesPoint {
                        start_ns: get(0)?,
                        totals: Totals {
                            flows: get(1)?,
                            packets: get(2)?,
                            bytes: get(3)?,
                        },
                    })
                })
                .map_err(|e| self.err("running a time series query", e))?;
            rows.collect::<Result<Vec<_>, _>>()
                .map_err(|e| self.err("reading a time series", e))
        })
    }

    fn top(
        &self,
        filter: &Filter,
        range: TimeRange,
        key: TopKey,
        by: TopBy,
        limit: usize,
    ) -> Result<Vec<TopRow>, StoreError> {
        let (col, rollup, not_null) = match key {
            TopKey::Src => ("f.src_ip", Some("rollup_src"), "1"),
            TopKey::Dst => ("f.dst_ip", Some("rollup_dst"), "1"),
            TopKey::DstPort => ("f.dst_port", Some("rollup_dport"), "f.dst_port IS NOT NULL"),
            TopKey::SrcPort => ("f.src_port", None, "f.src_port IS NOT NULL"),
            TopKey::Proto => ("f.proto", Some("rollup_proto"), "1"),
        };
        let (inner, mut params) =
            aggregate(range, filter, rollup.map(|t| (t, "r.k")), col, not_null);
        let order = match by {
            TopBy::Bytes => "b",
            TopBy::Packets => "p",
            TopBy::Flows => "n",
        };
        let sql = format!(
            "SELECT k, SUM(n) AS n, SUM(p) AS p, SUM(b) AS b FROM ({inner}) GROUP BY k ORDER BY {order} DESC, k LIMIT ?"
        );
        params.push(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
        self.with_reader(|c| {
            let mut stmt = c
                .prepare_cached(&sql)
                .map_err(|e| self.err("preparing a top-N query", e))?;
            let mut rows = stmt
                .query(rusqlite::params_from_iter(params.iter()))
                .map_err(|e| self.err("running a top-N query", e))?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(|e| self.err("reading top-N rows", e))? {
                let k: Value = row.get(0).map_err(|e| self.err("reading a key", e))?;
                let key_text = match (key, k) {
                    (TopKey::Src | TopKey::Dst, Value::Blob(b)) => ip_from_bytes("key", &b)
                        .map_err(|e| StoreError::Corrupt {
                            path: self.path.clone(),
                            what: e.to_string(),
                        })?
                        .to_string(),
                    (TopKey::Proto, Value::Integer(p)) => proto_name(p as u8).to_string(),
                    (_, Value::Integer(p)) => p.to_string(),
                    (_, other) => {
                        return Err(StoreError::Corrupt {
                            path: self.path.clone(),
                            what: format!("top-N key {other:?}"),
                        });
                    }
                };
                let get = |i| {
                    row.get::<_, i64>(i)
                        .map(|v| v as u64)
                        .map_err(|e| self.err("reading a sum", e))
                };
                out.push(TopRow {
                    key: key_text,
                    totals: Totals {
                        flows: get(1)?,
                        packets: get(2)?,
                        bytes: get(3)?,
                    },
                });
            }
            Ok(out)
        })
    }

    fn sensors(&self) -> Result<Vec<SensorRecord>, StoreError> {
        self.with_reader(|c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT id, name, last_seq, batches, flows, duplicates, seq_gaps, last_seen_ns FROM sensors ORDER BY name",
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
                    .map_err(|e| StoreError::Corrupt {
                        path: self.path.clone(),
                        what: format!("sensor {}: run counters: {e}", rec.sensor_id),
                    })?;
                rec.stats = sum_stats(stats);
                out.push(rec);
            }
            Ok(out)
        })
    }

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

    fn put_alerts(&self, updates: &[AlertUpdate]) -> Result<(), StoreError> {
        if updates.is_empty() {
            return Ok(());
        }
        let mut conn = self.lock_writer();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.err("starting an alert transaction", e))?;
        {
            let mut row = tx
                .prepare_cached(
                    "INSERT OR REPLACE INTO alerts (id, kind, severity, asset, first_ns, last_ns, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(|e| self.err("preparing an alert insert", e))?;
            let mut ev = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO alert_evidence (alert, sensor, flow_id, first_ns) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(|e| self.err("preparing an evidence insert", e))?;
            for u in updates {
                let a = &u.alert;
                let mut body = a.clone();
                body.evidence = Vec::new();
                let json = serde_json::to_string(&body)
                    .map_err(|e| StoreError::Unrepresentable(format!("alert {}: {e}", a.id)))?;
                row.execute(params![
                    i64_of("alert id", a.id)?,
                    a.kind.as_str(),
                    a.severity as i64,
                    a.asset,
                    i64_of("first_seen", a.first_seen_ns)?,
                    i64_of("last_seen", a.last_seen_ns)?,
                    json
                ])
                .map_err(|e| self.err("storing an alert", e))?;
                for e in &a.evidence {
                    ev.execute(params![
                        i64_of("alert id", a.id)?,
                        e.sensor_id,
                        i64_of("flow id", e.flow_id)?,
                        i64_of("first_seen", e.first_ns)?
                    ])
                    .map_err(|e| self.err("storing alert evidence", e))?;
                }
            }
        }
        tx.commit().map_err(|e| self.err("committing alerts", e))
    }

    fn alerts(&self, q: &AlertQuery) -> Result<Vec<Alert>, StoreError> {
        let mut sql = String::from("SELECT body FROM alerts WHERE 1");
        let mut p: Vec<Value> = Vec::new();
        if let Some(t) = q.since_ns {
            sql.push_str(" AND last_ns >= ?");
            p.push(Value::Integer(i64_of("since", t)?));
        }
        if let Some(t) = q.until_ns {
            sql.push_str(" AND first_ns < ?");
            p.push(Value::Integer(i64_of("until", t)?));
        }
        if let Some(k) = q.kind {
            sql.push_str(" AND kind = ?");
            p.push(Value::Text(k.as_str().into()));
        }
        if let Some(sv) = q.min_severity {
            sql.push_str(" AND severity >= ?");
            p.push(Value::Integer(sv as i64));
        }
        if let Some(a) = &q.asset {
            sql.push_str(" AND asset = ?");
            p.push(Value::Text(a.clone()));
        }
        sql.push_str(" ORDER BY last_ns DESC, id DESC LIMIT ?");
        let limit = if q.limit == 0 { 1000 } else { q.limit };
        p.push(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
        self.with_reader(|c| {
            if !has_table(c, "alerts").map_err(|e| self.err("reading the schema", e))? {
                return Ok(Vec::new());
            }
            let mut stmt = c
                .prepare_cached(&sql)
                .map_err(|e| self.err("preparing an alert query", e))?;
            let mut rows = stmt
                .query(rusqlite::params_from_iter(p.iter()))
                .map_err(|e| self.err("listing alerts", e))?;
            let mut out = Vec::new();
            while let Some(r) = rows.next().map_err(|e| self.err("reading alerts", e))? {
                let body: String = r.get(0).map_err(|e| self.err("reading an alert", e))?;
                out.push(self.decode_alert(&body)?);
            }
            Ok(out)
        })
    }

    fn alert(&self, id: u64) -> Result<Option<Alert>, StoreError> {
        let id = i64_of("alert id", id)?;
        self.with_reader(|c| {
            if !has_table(c, "alerts").map_err(|e| self.err("reading the schema", e))? {
                return Ok(None);
            }
            let body: Option<String> = c
                .query_row("SELECT body FROM alerts WHERE id = ?1", [id], |r| r.get(0))
                .optional()
                .map_err(|e| self.err("reading an alert", e))?;
            let Some(body) = body else { return Ok(None) };
            let mut a = self.decode_alert(&body)?;
            let mut stmt = c
                .prepare_cached(
                    "SELECT sensor, flow_id, first_ns FROM alert_evidence WHERE alert = ?1 ORDER BY first_ns, flow_id",
                )
                .map_err(|e| self.err("preparing an evidence query", e))?;
            let rows = stmt
                .query_map([id], |r| {
                    Ok(EvidenceRef {
                        sensor_id: r.get(0)?,
                        flow_id: r.get::<_, i64>(1)? as u64,
                        first_ns: r.get::<_, i64>(2)? as u64,
                    })
                })
                .map_err(|e| self.err("reading evidence", e))?;
            for r in rows {
                a.evidence.push(r.map_err(|e| self.err("reading evidence", e))?);
            }
            Ok(Some(a))
        })
    }

    fn evidence_flows(
        &self,
        evidence: &[EvidenceRef],
    ) -> Result<Vec<(String, FlowRecord)>, StoreError> {
        let mut refs: Vec<&EvidenceRef> = evidence.iter().collect();
        refs.sort_by_key(|e| (e.first_ns, e.flow_id));
        let wanted: std::collections::HashSet<(&str, u64, u64)> = refs
            .iter()
            .map(|e| (e.sensor_id.as_str(), e.flow_id, e.first_ns))
            .collect();
        let mut out = Vec::new();
        // Each chunk: a first_seen range (the time index) and its flow ids.
        for chunk in refs.chunks(256) {
            let (lo, hi) = (chunk[0].first_ns, chunk[chunk.len() - 1].first_ns);
            let marks = vec!["?"; chunk.len()].join(",");
            let sql = format!(
                "SELECT {FLOW_COLUMNS} FROM flows f JOIN sensors s ON s.id = f.sensor WHERE f.first_ns >= ? AND f.first_ns <= ? AND f.flow_id IN ({marks}) ORDER BY f.first_ns, f.rowid"
            );
            let mut p = vec![
                Value::Integer(i64_of("first_seen", lo)?),
                Value::Integer(i64_of("first_seen", hi)?),
            ];
            for e in chunk {
                p.push(Value::Integer(i64_of("flow id", e.flow_id)?));
            }
            self.with_reader(|c| {
                let mut stmt = c
                    .prepare(&sql)
                    .map_err(|e| self.err("preparing an evidence query", e))?;
                let mut rows = stmt
                    .query(rusqlite::params_from_iter(p.iter()))
                    .map_err(|e| self.err("reading evidence flows", e))?;
                while let Some(row) = rows
                    .next()
                    .map_err(|e| self.err("reading evidence flows", e))?
                {
                    let (s, r) = self.decode_row(row)?;
                    if wanted.contains(&(s.as_str(), r.flow_id, r.first_seen_ns)) {
                        out.push((s, r));
                    }
                }
                Ok(())
            })?;
        }
        Ok(out)
    }

    fn max_alert_id(&self) -> Result<u64, StoreError> {
        self.with_reader(|c| {
            if !has_table(c, "alerts").map_err(|e| self.err("reading the schema", e))? {
                return Ok(0);
            }
            let v: Option<i64> = c
                .query_row("SELECT MAX(id) FROM alerts", [], |r| r.get(0))
                .map_err(|e| self.err("reading the largest alert id", e))?;
            Ok(v.unwrap_or(0).max(0) as u64)
        })
    }
}

fn has_table(c: &Connection, name: &str) -> rusqlite::Result<bool> {
    c.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

impl SqliteStore {
    fn decode_alert(&self, body: &str) -> Result<Alert, StoreError> {
        serde_json::from_str(body).map_err(|e| StoreError::Corrupt {
            path: self.path.clone(),
            what: format!("alert row: {e}"),
        })
    }

    /// One batch inside an open transaction; roll-up sums go to `rollups`.
    fn commit_in(
        &self,
        tx: &rusqlite::Transaction<'_>,
        b: &IngestBatch,
        rollups: &mut Rollups,
    ) -> Result<CommitOutcome, StoreError> {
        let seq = i64_of("seq", b.seq)?;
        tx.execute(
            "INSERT OR IGNORE INTO sensors (name) VALUES (?1)",
            [&b.sensor_id],
        )
        .map_err(|e| self.err("registering a sensor", e))?;
        let (sensor, last_seq): (i64, i64) = tx
            .query_row(
                "SELECT id, last_seq FROM sensors WHERE name = ?1",
                [&b.sensor_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| self.err("reading the dedupe mark", e))?;
        if seq <= last_seq {
            tx.execute(
                "UPDATE sensors SET duplicates = duplicates + 1 WHERE id = ?1",
                [sensor],
            )
            .map_err(|e| self.err("counting a duplicate", e))?;
            return Ok(CommitOutcome::Duplicate);
        }
        let gap = (seq - last_seq - 1) as u64;
        {
            // Rows go in multi-row statements of ROWS_PER_INSERT (one
            // statement step per 32 rows instead of per row), the rest one
            // by one; values are bound in place, without building a list.
            let mut chunks = b.flows.chunks_exact(ROWS_PER_INSERT);
            if chunks.len() > 0 {
                let mut ins = tx
                    .prepare_cached(&insert_sql(ROWS_PER_INSERT))
                    .map_err(|e| self.err("preparing the flow insert", e))?;
                for chunk in &mut chunks {
                    for (i, r) in chunk.iter().enumerate() {
                        bind_flow(&mut ins, i * FLOW_PARAMS, sensor, r)
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
                    bind_flow(&mut one, 0, sensor, r).map_err(|e| self.bind_err(e))?;
                    rollups.add(r);
                    one.raw_execute()
                        .map_err(|e| self.err("inserting a flow", e))?;
                }
            }
        }
        let n = i64_of("flows", b.flows.len() as u64)?;
        tx.execute(
            "UPDATE sensors SET last_seq = ?2, batches = batches + 1, flows = flows + ?3,
             seq_gaps = seq_gaps + ?4, last_seen_ns = ?5 WHERE id = ?1",
            params![
                sensor,
                seq,
                n,
                i64_of("gap", gap)?,
                i64_of("received_ns", b.received_ns)?
            ],
        )
        .map_err(|e| self.err("advancing the dedupe mark", e))?;
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
        Ok(CommitOutcome::Stored { gap })
    }

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

fn upsert_rollups(tx: &rusqlite::Transaction<'_>, r: &Rollups) -> rusqlite::Result<()> {
    let conv = |t: &Totals| {
        totals_params(t).map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()))
    };
    for (table, map) in [("rollup_src", &r.src), ("rollup_dst", &r.dst)] {
        let mut st = tx.prepare_cached(&format!(
            "INSERT INTO {table} (minute, k, flows, packets, bytes) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (minute, k) DO UPDATE SET flows = flows + excluded.flows,
             packets = packets + excluded.packets, bytes = bytes + excluded.bytes"
        ))?;
        for ((m, k), t) in map {
            let [n, p, b] = conv(t)?;
            st.execute(params![*m as i64, k, n, p, b])?;
        }
    }
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

/// Rows (key, flows, packets, bytes) of an aggregate by `flow_key` over the
/// flows matching `filter` in `range` (and `not_null`): from roll-up
/// `rollup = (table, key over it)` where it can answer ([`rollup_union`]),
/// else from `flows`.
fn aggregate(
    range: TimeRange,
    filter: &Filter,
    rollup: Option<(&str, &str)>,
    flow_key: &str,
    not_null: &str,
) -> (String, Vec<Value>) {
    if let Some(r) =
        rollup.and_then(|(table, key)| rollup_union(range, filter, table, key, flow_key, not_null))
    {
        return r;
    }
    let mut w = Where::default();
    w.time(range);
    w.filter(filter);
    (
        format!(
            "SELECT {flow_key} AS k, COUNT(*) AS n, SUM(f.fwd_packets + f.rev_packets) AS p, SUM(f.fwd_bytes + f.rev_bytes) AS b FROM flows f WHERE {not_null} AND {} GROUP BY k",
            w.sql
        ),
        w.params,
    )
}

/// An aggregate from a roll-up table: whole minutes of the range from the
/// roll-up, the partial minutes at its edges from `flows`, both under the
/// filter. Rows: (key, flows, packets, bytes). `None` when the filter looks
/// at something the roll-up table does not hold (then only `flows` can
/// answer).
fn rollup_union(
    range: TimeRange,
    filter: &Filter,
    table: &str,
    key: &str,
    flow_key: &str,
    not_null: &str,
) -> Option<(String, Vec<Value>)> {
    let mut rw = Where::default();
    if !rw.rollup_filter(filter, table) {
        return None;
    }
    let mut fw = Where::default();
    fw.filter(filter);
    let since = range.since_ns.unwrap_or(0);
    let until = range.until_ns.unwrap_or(u64::MAX);
    let m_lo = since.div_ceil(NS_PER_MIN);
    let m_hi = until / NS_PER_MIN;
    let int = |v: u64| Value::Integer(i64::try_from(v).unwrap_or(i64::MAX));
    if m_lo >= m_hi {
        // Less than a whole minute: the flows table alone.
        let sql = format!(
            "SELECT {flow_key} AS k, 1 AS n, f.fwd_packets + f.rev_packets AS p, f.fwd_bytes + f.rev_bytes AS b FROM flows f
             WHERE {not_null} AND f.first_ns >= ? AND f.first_ns < ? AND {}",
            fw.sql
        );
        let mut params = vec![int(since), int(until)];
        params.extend(fw.params);
        return Some((sql, params));
    }
    let sql = format!(
        "SELECT {key} AS k, r.flows AS n, r.packets AS p, r.bytes AS b FROM {table} r WHERE r.minute >= ? AND r.minute < ? AND {}
         UNION ALL
         SELECT {flow_key}, 1, f.fwd_packets + f.rev_packets, f.fwd_bytes + f.rev_bytes FROM flows f
         WHERE {not_null} AND ((f.first_ns >= ? AND f.first_ns < ?) OR (f.first_ns >= ? AND f.first_ns < ?)) AND {}",
        rw.sql, fw.sql
    );
    let mut params = vec![int(m_lo), int(m_hi)];
    params.extend(rw.params);
    params.extend([
        int(since),
        int(m_lo.saturating_mul(NS_PER_MIN)),
        int(m_hi.saturating_mul(NS_PER_MIN)),
        int(until),
    ]);
    params.extend(fw.params);
    Some((sql, params))
}

/// A WHERE clause under construction: SQL text with `?` placeholders and
/// the values bound to them. Filter values never enter the text.
#[derive(Default)]
struct Where {
    sql: String,
    params: Vec<Value>,
}

impl Where {
    fn time(&mut self, r: TimeRange) {
        self.sql.push_str("f.first_ns >= ? AND f.first_ns < ? AND ");
        let int = |v: u64| Value::Integer(i64::try_from(v).unwrap_or(i64::MAX));
        self.params.push(int(r.since_ns.unwrap_or(0)));
        self.params.push(int(r.until_ns.unwrap_or(u64::MAX)));
    }

    /// Appends the filter as a boolean that is never NULL (so that `NOT`
    /// means what it means in [`Filter::matches`]).
    fn filter(&mut self, f: &Filter) {
        match f {
            Filter::All => self.sql.push('1'),
            Filter::And(v) | Filter::Or(v) => {
                let op = if matches!(f, Filter::And(_)) {
                    " AND "
                } else {
                    " OR "
                };
                self.sql.push('(');
                for (i, g) in v.iter().enumerate() {
                    if i > 0 {
                        self.sql.push_str(op);
                    }
                    self.filter(g);
                }
                self.sql.push(')');
            }
            Filter::Not(g) => {
                self.sql.push_str("(NOT ");
                self.filter(g);
                self.sql.push(')');
            }
            Filter::Ip(dir, range) => {
                let lo = ip_to_bytes(range.lo);
                let hi = ip_to_bytes(range.hi);
                let len = lo.len() as i64;
                self.directional(*dir, |w, col| {
                    w.sql.push_str(&format!(
                        "(length(f.{col}_ip) = ? AND f.{col}_ip BETWEEN ? AND ?)"
                    ));
                    w.params.push(Value::Integer(len));
                    w.params.push(Value::Blob(lo.clone()));
                    w.params.push(Value::Blob(hi.clone()));
                });
            }
            Filter::Port(dir, lo, hi) => {
                self.directional(*dir, |w, col| {
                    w.sql
                        .push_str(&format!("IFNULL(f.{col}_port BETWEEN ? AND ?, 0)"));
                    w.params.push(Value::Integer(i64::from(*lo)));
                    w.params.push(Value::Integer(i64::from(*hi)));
                });
            }
            Filter::Proto(p) => {
                self.sql.push_str("f.proto = ?");
                self.params.push(Value::Integer(i64::from(*p)));
            }
            Filter::Family(v) => {
                self.sql.push_str("length(f.src_ip) = ?");
                self.params
                    .push(Value::Integer(if *v == 4 { 4 } else { 16 }));
            }
            Filter::Vlan(v) => {
                self.sql
                    .push_str("(f.vlan != 0 AND ((f.vlan & 4095) = ? OR (f.vlan >> 12) = ?))");
                self.params.push(Value::Integer(i64::from(*v)));
                self.params.push(Value::Integer(i64::from(*v)));
            }
            Filter::State(s) => {
                self.sql.push_str("f.conn_state = ?");
                let i = ConnState::ALL.iter().position(|c| c == s).unwrap_or(0);
                self.params.push(Value::Integer(i as i64));
            }
            Filter::Counter(c, op, n) => {
                let expr = match c {
                    Counter::Bytes => "(f.fwd_bytes + f.rev_bytes)",
                    Counter::Packets => "(f.fwd_packets + f.rev_packets)",
                };
                self.sql.push_str(&format!("{expr} {} ?", op.as_str()));
                self.params
                    .push(Value::Integer(i64::try_from(*n).unwrap_or(i64::MAX)));
            }
            Filter::Sensor(name) => {
                self.sql
                    .push_str("f.sensor IN (SELECT id FROM sensors WHERE name = ?)");
                self.params.push(Value::Text(name.clone()));
            }
            Filter::CommunityId(c) => {
                self.sql.push_str("f.community_id = ?");
                self.params.push(Value::Blob(c.0.to_vec()));
            }
        }
    }

    /// Appends the filter as a condition on roll-up table `table` (alias
    /// `r`), if every primitive in it is a column of that table; returns
    /// false (with the clause unusable) otherwise.
    fn rollup_filter(&mut self, f: &Filter, table: &str) -> bool {
        match (f, table) {
            (Filter::All, _) => {
                self.sql.push('1');
                true
            }
            (Filter::And(v) | Filter::Or(v), _) => {
                let op = if matches!(f, Filter::And(_)) {
                    " AND "
                } else {
                    " OR "
                };
                self.sql.push('(');
                for (i, g) in v.iter().enumerate() {
                    if i > 0 {
                        self.sql.push_str(op);
                    }
                    if !self.rollup_filter(g, table) {
                        return false;
                    }
                }
                self.sql.push(')');
                true
            }
            (Filter::Not(g), _) => {
                self.sql.push_str("(NOT ");
                let ok = self.rollup_filter(g, table);
                self.sql.push(')');
                ok
            }
            (Filter::Ip(Dir::Src, range), "rollup_src")
            | (Filter::Ip(Dir::Dst, range), "rollup_dst") => {
                let lo = ip_to_bytes(range.lo);
                let hi = ip_to_bytes(range.hi);
                self.sql
                    .push_str("(length(r.k) = ? AND r.k BETWEEN ? AND ?)");
                self.params.push(Value::Integer(lo.len() as i64));
                self.params.push(Value::Blob(lo));
                self.params.push(Value::Blob(hi));
                true
            }
            (Filter::Family(v), "rollup_src" | "rollup_dst") => {
                // Both ends of a flow have the same family.
                self.sql.push_str("length(r.k) = ?");
                self.params
                    .push(Value::Integer(if *v == 4 { 4 } else { 16 }));
                true
            }
            (Filter::Port(Dir::Dst, lo, hi), "rollup_dport") => {
                self.sql.push_str("r.k BETWEEN ? AND ?");
                self.params.push(Value::Integer(i64::from(*lo)));
                self.params.push(Value::Integer(i64::from(*hi)));
                true
            }
            (Filter::Proto(p), "rollup_dport") => {
                self.sql.push_str("r.proto = ?");
                self.params.push(Value::Integer(i64::from(*p)));
                true
            }
            (Filter::Proto(p), "rollup_proto") => {
                self.sql.push_str("r.k = ?");
                self.params.push(Value::Integer(i64::from(*p)));
                true
            }
            _ => false,
        }
    }

    fn directional(&mut self, dir: Dir, mut one: impl FnMut(&mut Where, &str)) {
        match dir {
            Dir::Src => one(self, "src"),
            Dir::Dst => one(self, "dst"),
            Dir::Either => {
                self.sql.push('(');
                one(self, "src");
                self.sql.push_str(" OR ");
                one(self, "dst");
                self.sql.push(')');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::query::parse;

    /// A small deterministic generator (xorshift).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    const T0: u64 = 1_700_000_000_000_000_000;

    fn record(rng: &mut Rng, i: u64) -> FlowRecord {
        let proto = [6u8, 17, 1, 58, 47][rng.below(5) as usize];
        let v6 = proto == 58 || rng.below(8) == 0;
        let ip = |rng: &mut Rng| -> IpAddr {
            if v6 {
                IpAddr::from([
                    0x2001,
                    0xdb8,
                    0,
                    0,
                    0,
                    0,
                    rng.below(4) as u16,
                    rng.below(8) as u16,
                ])
            } else {
                IpAddr::from([10, rng.below(3) as u8, 0, rng.below(10) as u8])
            }
        };
        let ports = vigil_proto::flow::proto_has_ports(proto);
        let mut history = History::default();
        history.push(b'S');
        let first = T0 + rng.below(3 * NS_PER_MIN) + i;
        FlowRecord {
            flow_id: i,
            first_seen_ns: first,
            last_seen_ns: first + rng.below(1_000_000_000),
            proto,
            src_ip: ip(rng),
            src_port: ports.then(|| 1024 + rng.below(4) as u16),
            dst_ip: ip(rng),
            dst_port: ports.then(|| [53u16, 80, 443, 502][rng.below(4) as usize]),
            vlan: Vlans::new(rng.below(3) as u16 * 100, 0),
            fwd_packets: 1 + rng.below(10),
            fwd_bytes: 40 + rng.below(10_000),
            rev_packets: rng.below(10),
            rev_bytes: rng.below(10_000),
            fwd_tcp_flags: rng.below(256) as u8,
            rev_tcp_flags: rng.below(256) as u8,
            fwd_initial_tcp_flags: 2,
            rev_initial_tcp_flags: 0x12,
            conn_state: ConnState::ALL[rng.below(13) as usize],
            history,
            end_reason: EndReason::ALL[rng.below(8) as usize],
            community_id: CommunityId([rng.below(4) as u8; 20]),
            tunnel: (rng.below(10) == 0).then(|| TunnelInfo {
                kind: TunnelType::Vxlan,
                outer_src: "192.0.2.1".parse().unwrap(),
                outer_dst: "2001:db8::9".parse().unwrap(),
            }),
        }
    }

    fn batch(sensor: &str, seq: u64, flows: Vec<FlowRecord>) -> IngestBatch {
        IngestBatch {
            sensor_id: sensor.into(),
            seq,
            flows,
            stats: Some(pb::SensorStats {
                run_id: 7,
                packets: seq * 10,
                ..Default::default()
            }),
            received_ns: T0 + seq,
        }
    }

    fn filled() -> (tempfile::TempDir, SqliteStore, Vec<(String, FlowRecord)>) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), SqliteConfig::default()).unwrap();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut all = Vec::new();
        for seq in 1..=20u64 {
            let sensor = if seq % 2 == 0 { "alpha" } else { "beta" };
            let flows: Vec<_> = (0..50).map(|i| record(&mut rng, seq * 100 + i)).collect();
            all.extend(flows.iter().map(|f| (sensor.to_string(), f.clone())));
            assert!(matches!(
                store.commit(&batch(sensor, seq, flows)).unwrap(),
                CommitOutcome::Stored { .. }
            ));
        }
        all.sort_by_key(|(_, f)| f.first_seen_ns);
        (dir, store, all)
    }

    #[test]
    fn records_round_trip_through_the_store() {
        let (_d, store, all) = filled();
        let got = store
            .flows(&Filter::All, TimeRange::default(), usize::MAX)
            .unwrap();
        assert_eq!(got, all);
    }

    #[test]
    fn filters_in_sql_agree_with_filters_in_memory() {
        let (_d, store, all) = filled();
        let filters = [
            "src host 10.0.0.1",
            "host 10.1.0.3 or host 2001:db8::1:2",
            "dst net 10.1.0.0/16 and not port 53",
            "not port 53",
            "not vlan 100",
            "vlan 200 or ip6",
            "portrange 1024-1025 and proto tcp",
            "icmp or icmp6",
            "not (tcp or udp)",
            "state SF or state S0",
            "bytes > 5000 and packets <= 8",
            "bytes = 40",
            "sensor alpha and dst port 502",
            "not sensor nosuch",
            "cid 1:AQEBAQEBAQEBAQEBAQEBAQEBAQE=",
            "net 0.0.0.0/0",
            "net ::/0 and not net 2001:db8::/126",
            "src net 10.0.0.0/8 and dst net 10.2.0.0/16 and dst port 443 and tcp",
        ];
        for text in filters {
            let f = parse(text).unwrap();
            let got = store.flows(&f, TimeRange::default(), usize::MAX).unwrap();
            let want: Vec<_> = all
                .iter()
                .filter(|(s, r)| f.matches(r, s))
                .cloned()
                .collect();
            assert_eq!(got.len(), want.len(), "{text}");
            assert_eq!(got, want, "{text}");
            let c = store.count(&f, TimeRange::default()).unwrap();
            assert_eq!(c.flows, want.len() as u64, "{text}");
            assert_eq!(
                c.bytes,
                want.iter().map(|(_, r)| r.bytes()).sum::<u64>(),
                "{text}"
            );
        }
    }

    fn top_in_memory(
        all: &[(String, FlowRecord)],
        f: &Filter,
        range: TimeRange,
        key: TopKey,
        by: TopBy,
        n: usize,
    ) -> Vec<TopRow> {
        let mut m: BTreeMap<String, (Totals, Vec<u8>)> = BTreeMap::new();
        for (s, r) in all {
            if !f.matches(r, s) || !range.contains(r.first_seen_ns) {
                continue;
            }
            let (k, sort): (String, Vec<u8>) = match key {
                TopKey::Src => (r.src_ip.to_string(), ip_to_bytes(r.src_ip)),
                TopKey::Dst => (r.dst_ip.to_string(), ip_to_bytes(r.dst_ip)),
                TopKey::DstPort => match r.dst_port {
                    Some(p) => (p.to_string(), p.to_be_bytes().to_vec()),
                    None => continue,
                },
                TopKey::SrcPort => match r.src_port {
                    Some(p) => (p.to_string(), p.to_be_bytes().to_vec()),
                    None => continue,
                },
                TopKey::Proto => (proto_name(r.proto).to_string(), vec![r.proto]),
            };
            let e = m.entry(k).or_insert((Totals::default(), sort));
            e.0.add(Totals {
                flows: 1,
                packets: r.packets(),
                bytes: r.bytes(),
            });
        }
        let mut v: Vec<_> = m.into_iter().collect();
        v.sort_by(|a, b| b.1.0.by(by).cmp(&a.1.0.by(by)).then(a.1.1.cmp(&b.1.1)));
        v.into_iter()
            .take(n)
            .map(|(key, (totals, _))| TopRow { key, totals })
            .collect()
    }

    #[test]
    fn top_n_from_roll_ups_equals_top_n_from_flows() {
        let (_d, store, all) = filled();
        let ranges = [
            TimeRange::default(),
            TimeRange {
                since_ns: Some(T0),
                until_ns: Some(T0 + 2 * NS_PER_MIN),
            },
            // Partial minutes at both edges.
            TimeRange {
                since_ns: Some(T0 + 17_000_000_000),
                until_ns: Some(T0 + 150_000_000_000),
            },
            // Inside one minute.
            TimeRange {
                since_ns: Some(T0 + 5_000_000_000),
                until_ns: Some(T0 + 25_000_000_000),
            },
        ];
        for range in ranges {
            for key in [
                TopKey::Src,
                TopKey::Dst,
                TopKey::DstPort,
                TopKey::SrcPort,
                TopKey::Proto,
            ] {
                for by in [TopBy::Bytes, TopBy::Packets, TopBy::Flows] {
                    let want = top_in_memory(&all, &Filter::All, range, key, by, 5);
                    let got = store.top(&Filter::All, range, key, by, 5).unwrap();
                    assert_eq!(got, want, "{key:?} by {by:?} in {range:?}");
                    // The same through the flows table (a filter that keeps everything).
                    let keep = parse("not proto 255").unwrap();
                    assert_eq!(store.top(&keep, range, key, by, 5).unwrap(), want);
                }
            }
            let c = store.count(&Filter::All, range).unwrap();
            let want = all
                .iter()
                .filter(|(_, r)| range.contains(r.first_seen_ns))
                .count();
            assert_eq!(c.flows, want as u64, "{range:?}");
        }
    }

    #[test]
    fn duplicates_are_dropped_and_gaps_counted_persistently() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = Rng(5);
        let one = vec![record(&mut rng, 1)];
        {
            let store = SqliteStore::open(dir.path(), SqliteConfig::default()).unwrap();
            assert_eq!(
                store.commit(&batch("s", 1, one.clone())).unwrap(),
                CommitOutcome::Stored { gap: 0 }
            );
            assert_eq!(
                store.commit(&batch("s", 1, one.clone())).unwrap(),
                CommitOutcome::Duplicate
            );
            assert_eq!(
                store.commit(&batch("s", 4, one.clone())).unwrap(),
                CommitOutcome::Stored { gap: 2 }
            );
            // Another sensor's sequence is its own.
            assert_eq!(
                store.commit(&batch("t", 1, one.clone())).unwrap(),
                CommitOutcome::Stored { gap: 0 }
            );
        }
        let store = SqliteStore::open(dir.path(), SqliteConfig::default()).unwrap();
        assert_eq!(
            store.commit(&batch("s", 4, one.clone())).unwrap(),
            CommitOutcome::Duplicate
        );
        assert_eq!(
            store.commit(&batch("s", 2, one.clone())).unwrap(),
            CommitOutcome::Duplicate
        );
        let sensors = store.sensors().unwrap();
        let s = &sensors[0];
        assert_eq!(
            (
                s.sensor_id.as_str(),
                s.last_seq,
                s.batches,
                s.flows,
                s.duplicates,
                s.seq_gaps
            ),
            ("s", 4, 2, 2, 3, 2)
        );
        assert_eq!(s.stats.packets, 40, "the latest counters of the run");
        assert_eq!(
            store
                .count(&Filter::All, TimeRange::default())
                .unwrap()
                .flows,
            3
        );
    }

    #[test]
    fn filters_on_a_roll_up_table_s_own_columns_are_answered_from_it() {
        let r = TimeRange::default();
        let uses = |text: &str, table: &str| {
            rollup_union(r, &parse(text).unwrap(), table, "r.k", "f.x", "1").is_some()
        };
        assert!(uses(
            "dst net 10.0.0.0/8 and not dst host 10.0.0.1",
            "rollup_dst"
        ));
        assert!(uses("src host 10.0.0.1 or ip6", "rollup_src"));
        assert!(uses("tcp and dst portrange 1-1024", "rollup_dport"));
        assert!(uses("not (udp or icmp)", "rollup_proto"));
        assert!(!uses("dst net 10.0.0.0/8", "rollup_src"));
        assert!(
            !uses("host 10.0.0.1", "rollup_dst"),
            "either end is not a column of rollup_dst"
        );
        assert!(!uses("dst port 53", "rollup_dst"));
        assert!(!uses("tcp and state S0", "rollup_proto"));
    }

    #[test]
    fn a_read_only_store_answers_queries_and_refuses_writes() {
        let (d, store, all) = filled();
        drop(store);
        let ro = SqliteStore::open_read_only(d.path()).unwrap();
        assert_eq!(
            ro.flows(&Filter::All, TimeRange::default(), usize::MAX)
                .unwrap(),
            all
        );
        assert_eq!(ro.sensors().unwrap().len(), 2);
        let mut rng = Rng(3);
        assert!(
            ro.commit(&batch("x", 1, vec![record(&mut rng, 1)]))
                .is_err()
        );
        let empty = tempfile::tempdir().unwrap();
        assert!(SqliteStore::open_read_only(empty.path()).is_err());
        assert!(!empty.path().join("vigil.db").exists(), "nothing created");
    }

    #[test]
    fn a_group_commit_dedupes_within_itself_and_is_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path(), SqliteConfig::default()).unwrap();
        let mut rng = Rng(11);
        let mut flows = || vec![record(&mut rng, 1), record(&mut rng, 2)];
        let (a1, a2, a2again, b1) = (
            batch("a", 1, flows()),
            batch("a", 2, flows()),
            batch("a", 2, flows()),
            batch("b", 1, flows()),
        );
        let out = store.commit_many(&[&a1, &a2, &a2again, &b1]).unwrap();
        assert_eq!(
            out,
            vec![
                CommitOutcome::Stored { gap: 0 },
                CommitOutcome::Stored { gap: 0 },
                CommitOutcome::Duplicate,
                CommitOutcome::Stored { gap: 0 },
            ]
        );
        assert_eq!(
            store
                .count(&Filter::All, TimeRange::default())
                .unwrap()
                .flows,
            6
        );
        // A batch the store cannot represent fails the whole group.
        let mut bad = batch("c", 1, flows());
        bad.flows[1].fwd_bytes = u64::MAX;
        let ok = batch("d", 1, flows());
        assert!(store.commit_many(&[&ok, &bad]).is_err());
        assert_eq!(
            store
                .count(&Filter::All, TimeRange::default())
                .unwrap()
                .flows,
            6
        );
        assert!(store.sensors().unwrap().iter().all(|s| s.sensor_id != "d"));
    }

    #[test]
    fn evidence_flows_outlive_retention_and_alerts_round_trip() {
        use crate::detect::config::Criticality;
        use crate::detect::{Alert, AlertKind, AlertUpdate, EvidenceRef, Severity};
        let (_d, store, all) = filled();
        // Two old flows are the evidence of an alert.
        let mut old: Vec<&(String, FlowRecord)> = all
            .iter()
            .filter(|(_, f)| f.first_seen_ns < T0 + NS_PER_MIN / 2)
            .collect();
        old.truncate(2);
        let evidence: Vec<EvidenceRef> = old
            .iter()
            .map(|(s, f)| EvidenceRef {
                sensor_id: s.clone(),
                flow_id: f.flow_id,
                first_ns: f.first_seen_ns,
            })
            .collect();
        let alert = Alert {
            id: 7,
            kind: AlertKind::SynFlood,
            technique: "T1498.001".into(),
            technique_name: "Direct Network Flood".into(),
            matrix: "enterprise".into(),
            severity: Severity::High,
            asset: "plant".into(),
            sector: "water".into(),
            criticality: Criticality::High,
            summary: "a flood".into(),
            sources: Vec::new(),
            source_count: 2,
            targets: Vec::new(),
            target_count: 1,
            first_seen_ns: T0,
            last_seen_ns: T0 + 1,
            raised_ns: T0 + 1,
            measured: 900.0,
            threshold: 500.0,
            unit: "flows/s".into(),
            updates: 0,
            evidence: evidence.clone(),
            evidence_count: 2,
        };
        store
            .put_alerts(&[AlertUpdate {
                alert: alert.clone(),
                opened: true,
            }])
            .unwrap();
        // An update adds evidence and replaces the row.
        let mut later = alert.clone();
        later.updates = 1;
        later.evidence = Vec::new();
        store
            .put_alerts(&[AlertUpdate {
                alert: later,
                opened: false,
            }])
            .unwrap();
        assert_eq!(store.max_alert_id().unwrap(), 7);
        let back = store.alert(7).unwrap().unwrap();
        assert_eq!((back.updates, back.evidence.len()), (1, 2));
        assert_eq!(back.evidence, evidence);
        let listed = store
            .alerts(&crate::store::AlertQuery {
                min_severity: Some(Severity::Critical),
                ..Default::default()
            })
            .unwrap();
        assert!(listed.is_empty(), "severity filter");
        assert_eq!(store.alerts(&Default::default()).unwrap().len(), 1);
        // Retention removes everything old but the evidence.
        let store = SqliteStore {
            cfg: SqliteConfig {
                max_age: Some(Duration::from_secs(1)),
                ..Default::default()
            },
            ..store
        };
        store.enforce_retention(T0 + 1000 * NS_PER_MIN).unwrap();
        let left = store
            .flows(&Filter::All, TimeRange::default(), usize::MAX)
            .unwrap();
        assert_eq!(left.len(), 2, "only the evidence is left");
        let ev = store.evidence_flows(&back.evidence).unwrap();
        assert_eq!(ev.len(), 2);
        assert!(ev.iter().all(|(_, f)| old.iter().any(|(_, o)| o == f)));
    }

    #[test]
    fn retention_by_age_and_by_size() {
        let (_d, store, all) = filled();
        let cfg = SqliteConfig {
            max_age: Some(Duration::from_secs(60)),
            ..Default::default()
        };
        let store = SqliteStore { cfg, ..store };
        let now = T0 + 2 * NS_PER_MIN;
        let r = store.enforce_retention(now).unwrap();
        let boundary = (T0 + NS_PER_MIN) / NS_PER_MIN * NS_PER_MIN;
        let kept = all
            .iter()
            .filter(|(_, f)| f.first_seen_ns >= boundary)
            .count();
        assert_eq!(r.deleted_flows as usize, all.len() - kept);
        assert_eq!(
            store
                .count(&Filter::All, TimeRange::default())
                .unwrap()
                .flows,
            kept as u64
        );
        let top = store
            .top(
                &Filter::All,
                TimeRange::default(),
                TopKey::Proto,
                TopBy::Flows,
                10,
            )
            .unwrap();
        assert_eq!(top.iter().map(|t| t.totals.flows).sum::<u64>(), kept as u64);

        let (_d2, store2, _) = filled();
        let used = store2.used_bytes().unwrap();
        let store2 = SqliteStore {
            cfg: SqliteConfig {
                max_bytes: Some(used / 2),
                ..Default::default()
            },
            ..store2
        };
        let r = store2.enforce_retention(now).unwrap();
        assert!(r.deleted_flows > 0);
        assert!(store2.used_bytes().unwrap() <= used / 2);
    }
}
