//! The embedded store: one SQLite database (`vigil.db` in the data
//! directory) in WAL mode, through `rusqlite` with SQLite bundled.
//!
//! Tables:
//! - `flows`: one row per record; `rowid` is the stored flow's id. Packed
//!   columns keep rows small (`rows.rs`): `tcp_flags` holds the four flag
//!   bytes (fwd, rev, fwd initial, rev initial, lowest first), `vlan` the
//!   outer id plus the inner id shifted by 12 (0: untagged), `tunnel` a
//!   blob `[type, src_len, src…, dst…]`. Addresses are 4- or 16-byte
//!   blobs, so a CIDR block is a `BETWEEN` of two blobs of its length.
//!   Indexed by `first_ns`.
//! - `rollup_dport`, `rollup_proto`: per-minute (of `first_seen`) flows,
//!   packets and bytes by responder port and protocol, updated in the
//!   batch's transaction (`ingest.rs`); the planner answers whole minutes
//!   from them.
//! - `column_segments`: the column segments that hold closed ranges of
//!   `flows` again, column by column, for scans (`columns.rs`); aggregates
//!   read them and SQLite for the rows none holds.
//! - `sensors` (the dedupe mark: highest committed `seq`, plus counts) and
//!   `sensor_runs` (the latest counters of each sensor process).
//! - `alerts` (each alert's latest state as JSON) and `alert_evidence`
//!   (`alerts.rs`).
//!
//! Writes go through one connection behind a mutex (SQLite has one writer);
//! reads use pooled connections of their own, which WAL lets run beside the
//! writer.

mod alerts;
mod columns;
mod evidence;
mod ingest;
mod read;
mod retention;
mod rows;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use self::columns::{AddrIndexes, Newest};
use super::StoreError;

const SCHEMA_VERSION: i64 = 5;

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
    /// Rows per column segment (`None`:
    /// [`SEGMENT_ROWS`](crate::store::columns::SEGMENT_ROWS); clamped to
    /// `1..=SEGMENT_ROWS`). Smaller only in tests, to make many segments.
    pub segment_rows: Option<usize>,
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
    /// Queries read column segments (off: every row from SQLite).
    columns: bool,
    /// The address dictionaries over every segment (sources,
    /// destinations), kept by [`SqliteStore::build_columns`].
    addr_index: AddrIndexes,
    /// The newest rows, in no segment yet, as the last query read them.
    newest: Mutex<Option<Box<Newest>>>,
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
    last_seen_ns INTEGER NOT NULL DEFAULT 0,
    incarnation INTEGER NOT NULL DEFAULT 0,
    seq_resets INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS sensor_incarnations (
    sensor INTEGER NOT NULL,
    incarnation INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    first_seen_ns INTEGER NOT NULL,
    PRIMARY KEY (sensor, incarnation)
) WITHOUT ROWID;
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
    tunnel BLOB,
    batch INTEGER,
    idx INTEGER,
    app BLOB,
    app_proto INTEGER NOT NULL DEFAULT 0,
    app_name TEXT NOT NULL DEFAULT '',
    app_fp TEXT NOT NULL DEFAULT '',
    ics_reads INTEGER NOT NULL DEFAULT 0,
    ics_writes INTEGER NOT NULL DEFAULT 0,
    ics_control INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS flows_first_ns ON flows (first_ns);
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
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY,
    sensor INTEGER NOT NULL,
    incarnation INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    flows INTEGER NOT NULL,
    first_row INTEGER NOT NULL,
    received_ns INTEGER NOT NULL,
    first_ns INTEGER NOT NULL,
    last_ns INTEGER NOT NULL,
    stats BLOB,
    public_key BLOB,
    root BLOB,
    signature BLOB
);
CREATE INDEX IF NOT EXISTS batches_sensor_last ON batches (sensor, last_ns);
CREATE INDEX IF NOT EXISTS batches_sensor_received ON batches (sensor, received_ns);
CREATE INDEX IF NOT EXISTS batches_key ON batches (sensor, incarnation, seq);
CREATE TABLE IF NOT EXISTS sensor_keys (
    sensor TEXT PRIMARY KEY,
    public_key BLOB NOT NULL,
    pinned_ns INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sensor_certs (
    sensor TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    first_ns INTEGER NOT NULL,
    PRIMARY KEY (sensor, fingerprint)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pruned_leaves (
    batch INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    hash BLOB NOT NULL,
    PRIMARY KEY (batch, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS detectors (
    hash TEXT PRIMARY KEY,
    body TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_proto (
    minute INTEGER NOT NULL, k INTEGER NOT NULL,
    flows INTEGER NOT NULL, packets INTEGER NOT NULL, bytes INTEGER NOT NULL,
    PRIMARY KEY (minute, k)) WITHOUT ROWID;
";

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
             PRAGMA temp_store = MEMORY; PRAGMA busy_timeout = 10000; {SCHEMA} {}",
            columns::SCHEMA
        );
        let store = SqliteStore {
            path,
            cfg,
            writer: Mutex::new(conn),
            readers: Mutex::new(Vec::new()),
            read_only: false,
            columns: true,
            addr_index: AddrIndexes::default(),
            newest: Mutex::new(None),
        };
        {
            let conn = store.lock_writer();
            conn.execute_batch(&setup)
                .map_err(|e| store.err("creating the schema", e))?;
            let mut version = store.schema_version(&conn)?;
            if version.is_none() {
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema', ?1)",
                    [SCHEMA_VERSION],
                )
                .map_err(|e| store.err("writing the schema version", e))?;
                version = Some(SCHEMA_VERSION);
            }
            if version == Some(1) {
                // Version 1 kept one dedupe mark per sensor: it becomes
                // the mark of incarnation 0 (sensors that predate them).
                conn.execute_batch(
                    "BEGIN IMMEDIATE;
                     ALTER TABLE sensors ADD COLUMN incarnation INTEGER NOT NULL DEFAULT 0;
                     ALTER TABLE sensors ADD COLUMN seq_resets INTEGER NOT NULL DEFAULT 0;
                     INSERT OR IGNORE INTO sensor_incarnations (sensor, incarnation, last_seq, first_seen_ns)
                       SELECT id, 0, last_seq, last_seen_ns FROM sensors WHERE batches > 0 OR last_seq > 0;
                     UPDATE meta SET value = 2 WHERE key = 'schema';
                     COMMIT;",
                )
                .map_err(|e| store.err("migrating the schema from version 1", e))?;
                tracing::info!(path = %store.path.display(), "store migrated to schema version 2 (spool incarnations)");
                version = Some(2);
            }
            if version == Some(2) {
                // Version 3 keeps each batch (its counters and its
                // sensor's attestation) and each flow's place in it; the
                // flows stored before have none (not attested).
                store.add_flow_columns(
                    &conn,
                    3,
                    "batch",
                    "ALTER TABLE flows ADD COLUMN batch INTEGER;
                     ALTER TABLE flows ADD COLUMN idx INTEGER;",
                    "migrating the schema from version 2",
                )?;
                tracing::info!(path = %store.path.display(), "store migrated to schema version 3 (batches and attestation)");
                version = Some(3);
            }
            if version == Some(3) {
                // Version 4 keeps each flow's application metadata (the
                // `App` message, and the columns filters read); flows
                // stored before have none.
                store.add_flow_columns(
                    &conn,
                    4,
                    "app",
                    "ALTER TABLE flows ADD COLUMN app BLOB;
                     ALTER TABLE flows ADD COLUMN app_proto INTEGER NOT NULL DEFAULT 0;
                     ALTER TABLE flows ADD COLUMN app_name TEXT NOT NULL DEFAULT '';
                     ALTER TABLE flows ADD COLUMN app_fp TEXT NOT NULL DEFAULT '';
                     ALTER TABLE flows ADD COLUMN ics_reads INTEGER NOT NULL DEFAULT 0;
                     ALTER TABLE flows ADD COLUMN ics_writes INTEGER NOT NULL DEFAULT 0;
                     ALTER TABLE flows ADD COLUMN ics_control INTEGER NOT NULL DEFAULT 0;",
                    "migrating the schema from version 3",
                )?;
                tracing::info!(path = %store.path.display(), "store migrated to schema version 4 (application metadata)");
                version = Some(4);
            }
            if version == Some(4) {
                // Version 5 reads top sources and destinations from
                // column segments (`columns.rs`, whose registry the set-up
                // above created): their roll-ups go.
                conn.execute_batch(
                    "BEGIN IMMEDIATE;
                     DROP TABLE IF EXISTS rollup_src;
                     DROP TABLE IF EXISTS rollup_dst;
                     UPDATE meta SET value = 5 WHERE key = 'schema';
                     COMMIT;",
                )
                .map_err(|e| store.err("migrating the schema from version 4", e))?;
                tracing::info!(path = %store.path.display(), "store migrated to schema version 5 (column segments)");
                version = Some(5);
            }
            if version != Some(SCHEMA_VERSION) {
                return Err(store.wrong_schema(version));
            }
        }
        Ok(store)
    }

    /// Whether `flows` has the column (a migration cut short may have
    /// added it already).
    /// Migrates to schema `version` by adding `flows` columns (`add`,
    /// statements), unless `probe`, the first of them, is there already (a
    /// migration interrupted after them), in one transaction with the
    /// version's mark.
    fn add_flow_columns(
        &self,
        conn: &Connection,
        version: u32,
        probe: &str,
        add: &str,
        op: &'static str,
    ) -> Result<(), StoreError> {
        let add = if self.flows_have_column(conn, probe)? {
            ""
        } else {
            add
        };
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {add}
             UPDATE meta SET value = {version} WHERE key = 'schema';
             COMMIT;"
        ))
        .map_err(|e| self.err(op, e))
    }

    fn flows_have_column(&self, conn: &Connection, name: &str) -> Result<bool, StoreError> {
        conn.query_row(
            "SELECT COUNT(*) > 0 FROM pragma_table_info('flows') WHERE name = ?1",
            [name],
            |r| r.get(0),
        )
        .map_err(|e| self.err("reading the schema", e))
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
            columns: true,
            addr_index: AddrIndexes::default(),
            newest: Mutex::new(None),
        };
        {
            let conn = store.lock_writer();
            conn.execute_batch("PRAGMA busy_timeout = 10000;")
                .map_err(|e| store.err("configuring the connection", e))?;
            let v = store.schema_version(&conn)?;
            if v != Some(SCHEMA_VERSION) {
                return Err(store.wrong_schema(v));
            }
        }
        Ok(store)
    }

    /// This store with queries reading column segments (the default) or
    /// every row from SQLite: the reference the segments' answers are
    /// checked against.
    pub fn with_columns(mut self, on: bool) -> SqliteStore {
        self.columns = on;
        self
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn schema_version(&self, conn: &Connection) -> Result<Option<i64>, StoreError> {
        conn.query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
            r.get(0)
        })
        .optional()
        .map_err(|e| self.err("reading the schema version", e))
    }

    fn wrong_schema(&self, v: Option<i64>) -> StoreError {
        self.corrupt(format!(
            "schema version {v:?}; this build reads version {SCHEMA_VERSION}"
        ))
    }

    fn err(&self, op: &'static str, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            op,
            source,
        }
    }

    fn corrupt(&self, what: String) -> StoreError {
        StoreError::Corrupt {
            store: self.path.display().to_string(),
            what,
        }
    }

    fn lock_writer(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves the connection usable: every
        // change is inside a transaction that rolls back when dropped.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on a pooled read connection (opened on first need).
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
}

impl SqliteStore {
    /// Runs `f` in one read transaction on a pooled reader: every statement
    /// it runs sees the same snapshot.
    fn in_snapshot<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.with_reader(|c| {
            c.execute_batch("BEGIN")
                .map_err(|e| self.err("beginning a read", e))?;
            let r = f(c);
            let _ = c.execute_batch("COMMIT");
            r
        })
    }
}

/// Whether table `name` exists (a database of an older layout may lack it).
fn has_table(c: &Connection, name: &str) -> rusqlite::Result<bool> {
    c.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}
