//! The database's tables, made at start (and made again where an older
//! layout is found), and each collector's ingest table with its views.

use super::{
    ClickHouseStore, FLOW_COLUMNS, FLOW_COLUMNS_ADDED, Ingest, Reader, flow_column_defs,
    flow_column_names, lit,
};
use crate::store::StoreError;
use crate::store::plan::NS_PER_MIN;

/// The columns of `batches` after its first four: each batch's event-time
/// span, the sensor's counters it carried (protobuf) and its attestation
/// (empty strings: not attested).
const BATCH_EXTRA: &str = "first_ns UInt64, last_ns UInt64, stats String, public_key String, \
     root String, signature String";

/// A per-minute roll-up table.
pub(super) struct RollupTable {
    /// Table `rollup_{name}`.
    pub(super) name: &'static str,
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

pub(super) const ROLLUPS: [RollupTable; 3] = [
    RollupTable {
        name: "dst",
        k_type: "String",
        k_expr: "dst_ip",
        cond: "1",
        extra_ddl: "",
        extra: "",
    },
    RollupTable {
        name: "dport",
        k_type: "UInt64",
        k_expr: "toUInt64(dst_port)",
        cond: "has_ports = 1",
        extra_ddl: ", proto UInt8",
        extra: ", proto",
    },
    RollupTable {
        name: "proto",
        k_type: "UInt64",
        k_expr: "toUInt64(proto)",
        cond: "1",
        extra_ddl: "",
        extra: "",
    },
];

/// Roll-up `r`'s rows over the flows in `from`.
fn rollup_select(r: &RollupTable, from: &str) -> String {
    let (k_expr, cond, extra) = (r.k_expr, r.cond, r.extra);
    format!(
        "SELECT intDiv(first_ns, {NS_PER_MIN}) AS minute, {k_expr} AS k{extra}, count() AS flows, \
         sum(packets) AS packets, sum(bytes) AS bytes FROM {from} WHERE {cond} GROUP BY minute, k{extra}"
    )
}

impl ClickHouseStore {
    pub(super) fn migrate(&self) -> Result<(), StoreError> {
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
                 flows UInt64, received_ns UInt64, {BATCH_EXTRA}) \
                 ENGINE = MergeTree() ORDER BY (sensor_id, seq)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {db}.sensor_keys (sensor_id String, public_key String, \
                 pinned_ns UInt64) ENGINE = MergeTree() ORDER BY sensor_id"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {db}.sensor_certs (sensor_id String, fingerprint String, \
                 first_ns UInt64) ENGINE = ReplacingMergeTree() ORDER BY (sensor_id, fingerprint)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {db}.pruned_leaves (sensor_id String, seq UInt64, \
                 idx UInt32, hash String) ENGINE = ReplacingMergeTree() ORDER BY (sensor_id, seq, idx)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {db}.detectors (hash String, body String) \
                 ENGINE = ReplacingMergeTree() ORDER BY hash"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {db}.duplicates (sensor_id String, seq UInt64, \
                 received_ns UInt64) ENGINE = MergeTree() ORDER BY (sensor_id, seq)"
            ),
            // Each sensor's spool incarnations, numbered in the order seen.
            format!(
                "CREATE TABLE IF NOT EXISTS {db}.incarnations (sensor_id String, incarnation UInt64, \
                 ordinal UInt64, created_ns UInt64) \
                 ENGINE = ReplacingMergeTree() ORDER BY (sensor_id, incarnation)"
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
            self.exec("creating the tables", s)?;
        }
        self.migrate_batches()?;
        self.migrate_flows()?;
        self.migrate_rollups()
    }

    /// `batches` of before kept only its first four columns: the others
    /// are added (one by one: the server may predate `ADD COLUMN IF NOT
    /// EXISTS`).
    fn migrate_batches(&self) -> Result<(), StoreError> {
        let body = self.select(
            "reading the batches table's columns",
            &format!(
                "SELECT name FROM system.columns WHERE database = {} AND table = 'batches'",
                lit(self.db.as_bytes())
            ),
        )?;
        let mut r = Reader::new(&body);
        let mut have = Vec::new();
        while !r.done() {
            have.push(r.string()?);
        }
        for col in BATCH_EXTRA.split(", ") {
            let name = col.split(' ').next().unwrap_or_default();
            if !have.iter().any(|h| h == name) {
                self.exec(
                    "adding a column to batches",
                    &format!("ALTER TABLE {}.batches ADD COLUMN {col}", self.db),
                )?;
            }
        }
        Ok(())
    }

    /// `flows` and `evidence_flows` made before the application metadata
    /// columns get them (one by one, as `batches` its columns), with their
    /// defaults (no metadata) for the rows they hold.
    fn migrate_flows(&self) -> Result<(), StoreError> {
        for table in ["flows", "evidence_flows"] {
            let body = self.select(
                "reading a flow table's columns",
                &format!(
                    "SELECT name FROM system.columns WHERE database = {} AND table = {}",
                    lit(self.db.as_bytes()),
                    lit(table.as_bytes())
                ),
            )?;
            let mut r = Reader::new(&body);
            let mut have = Vec::new();
            while !r.done() {
                have.push(r.string()?);
            }
            let added = &FLOW_COLUMNS[FLOW_COLUMNS.len() - FLOW_COLUMNS_ADDED..];
            for (name, ty) in added {
                if !have.iter().any(|h| h == name) {
                    self.exec(
                        "adding a column to a flow table",
                        &format!("ALTER TABLE {}.{table} ADD COLUMN {name} {ty}", self.db),
                    )?;
                }
            }
        }
        Ok(())
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
            self.exec("dropping retired roll-ups", &stmt)?;
        }
        for r in &ROLLUPS {
            let name = r.name;
            let mut want: Vec<String> =
                format!("minute,k{},flows,packets,bytes", r.extra.replace(' ', ""))
                    .split(',')
                    .map(str::to_string)
                    .collect();
            want.sort();
            let body = self.select(
                "reading a roll-up's columns",
                &format!(
                    "SELECT name FROM system.columns WHERE database = {} AND table = {}",
                    lit(db.as_bytes()),
                    lit(format!("rollup_{name}").as_bytes())
                ),
            )?;
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
                self.exec(
                    "dropping a roll-up of an older layout",
                    &format!("DROP TABLE IF EXISTS {db}.rollup_{name}"),
                )?;
            }
            let (k_type, extra, extra_ddl) = (r.k_type, r.extra, r.extra_ddl);
            self.exec(
                "creating a roll-up",
                &format!(
                    "CREATE TABLE IF NOT EXISTS {db}.rollup_{name} (minute UInt64, k {k_type}{extra_ddl}, \
                     flows UInt64, packets UInt64, bytes UInt64) \
                     ENGINE = SummingMergeTree() PARTITION BY intDiv(minute, 1440) ORDER BY (minute, k{extra})"
                ),
            )?;
            // The flows stored before the roll-up existed. (Flows that
            // another collector inserts while this runs may be counted
            // twice: collectors migrate before they accept sensors.)
            self.exec(
                "back-filling a roll-up",
                &format!(
                    "INSERT INTO {db}.rollup_{name} (minute, k{extra}, flows, packets, bytes) {}",
                    rollup_select(r, &format!("{db}.flows"))
                ),
            )?;
        }
        Ok(())
    }

    /// The current ingest table, made (with its views) if there is none.
    pub(super) fn ingest_table(&self, ing: &mut Ingest) -> Result<String, StoreError> {
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
            self.exec("creating the ingest table", stmt)?;
        }
        ing.table = Some(table.clone());
        Ok(table)
    }
}
