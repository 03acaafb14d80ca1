//! Flow queries: the planner's plans rendered in SQLite's SQL, every value
//! bound as a parameter (never pasted into the text), and run on a pooled
//! read connection.

use rusqlite::types::Value;
use vigil_proto::FlowRecord;
use vigil_proto::wire::ip_from_bytes;

use super::SqliteStore;
use super::rows::FLOW_COLUMNS;
use crate::model::query::{TextOp, TimeRange, TopKey, Totals};
use crate::store::columns::{Compiled, Job, SEGMENT_ROWS, Scan, ScanError};
use crate::store::plan::{
    self, Aggregate, Cond, Dialect, Field, Group, GroupExpr, GroupValue, Order, Rollup, Select,
    Source,
};
use crate::store::{FlowQueries, StoreError};

/// The roll-ups the embedded store keeps.
/// (Top sources and destinations come from column segments: a roll-up by
/// address has nearly a row per flow.)
const ROLLUPS: [Rollup; 2] = [Rollup::DstPort, Rollup::Proto];

impl FlowQueries for SqliteStore {
    fn rollups(&self) -> &'static [Rollup] {
        &ROLLUPS
    }

    fn select(&self, p: &Select) -> Result<Vec<(String, FlowRecord)>, StoreError> {
        let mut out = Vec::new();
        self.select_pages(p, usize::MAX, &mut |page| {
            out = page;
            true
        })?;
        Ok(out)
    }

    /// One statement, stepped as the pages are taken: a read transaction's
    /// snapshot, so that pages neither repeat nor skip rows committed
    /// meanwhile.
    fn select_pages(
        &self,
        p: &Select,
        page: usize,
        sink: &mut dyn FnMut(Vec<(String, FlowRecord)>) -> bool,
    ) -> Result<(), StoreError> {
        let page = page.max(1);
        if p.offset.saturating_add(p.limit) <= COLUMN_SELECT_MAX
            && let Some(rows) = self.select_with_columns(p)?
        {
            let mut rows = rows.into_iter().peekable();
            while rows.peek().is_some() {
                if !sink(rows.by_ref().take(page).collect()) {
                    break;
                }
            }
            return Ok(());
        }
        let mut q = Sql::default();
        q.push(&format!(
            "SELECT {FLOW_COLUMNS} FROM flows f JOIN sensors s ON s.id = f.sensor WHERE "
        ));
        q.time(p.range);
        plan::write_cond(&mut q, &p.cond);
        q.push(" ORDER BY f.first_ns, f.rowid");
        q.limit_offset(p.limit, p.offset);
        self.with_reader(|c| {
            let mut stmt = c
                .prepare_cached(&q.text)
                .map_err(|e| self.err("preparing a flow query", e))?;
            let mut rows = stmt
                .query(rusqlite::params_from_iter(q.params.iter()))
                .map_err(|e| self.err("running a flow query", e))?;
            let mut out = Vec::with_capacity(page.min(4096));
            while let Some(row) = rows.next().map_err(|e| self.err("reading flows", e))? {
                out.push(self.decode_row(row)?);
                if out.len() == page && !sink(std::mem::take(&mut out)) {
                    return Ok(());
                }
            }
            if !out.is_empty() || page == usize::MAX {
                sink(out);
            }
            Ok(())
        })
    }

    fn aggregate(&self, p: &Aggregate) -> Result<Vec<(GroupValue, Totals)>, StoreError> {
        let found = self.aggregates_with_columns(std::slice::from_ref(p))?;
        if let Some(rows) = found.and_then(|mut v| v.pop().flatten()) {
            return Ok(rows);
        }
        self.with_reader(|c| self.run_aggregate(c, p, None))
    }

    fn aggregate_many(
        &self,
        plans: &[Aggregate],
    ) -> Result<Vec<Vec<(GroupValue, Totals)>>, StoreError> {
        let Some(found) = self.aggregates_with_columns(plans)? else {
            return crate::store::each_on_a_thread(self, plans);
        };
        plans
            .iter()
            .zip(found)
            .map(|(p, rows)| match rows {
                Some(rows) => Ok(rows),
                None => self.with_reader(|c| self.run_aggregate(c, p, None)),
            })
            .collect()
    }

    fn build_columns(&self) -> Result<usize, StoreError> {
        SqliteStore::build_columns(self)
    }

    fn explain_select(&self, p: &Select) -> Result<Vec<String>, StoreError> {
        let k = p.offset.saturating_add(p.limit);
        let segments = self.in_snapshot(|c| self.coverage(c).map(|cov| cov.segments.len()))?;
        let compiled = Compiled::rows(&p.cond, self)?.is_some();
        Ok(vec![if k > COLUMN_SELECT_MAX {
            format!(
                "flow listing of {k} rows (over {COLUMN_SELECT_MAX}): SQLite, rows in first_seen \
                 order through its index, the filter tested on each"
            )
        } else if segments == 0 || !compiled {
            "flow listing: SQLite, rows in first_seen order through its index, the filter tested \
             on each (no column segment holds the rows, or the filter reads a field they do not)"
                .into()
        } else {
            format!(
                "flow listing: the matching rows found in {segments} column segments and, for the \
                 newest rows, in memory (in SQLite when more than a segment and a half); the \
                 first {k} by first_seen fetched by row id"
            )
        }])
    }

    fn explain(&self, p: &Aggregate) -> Result<Vec<String>, StoreError> {
        let mut out = plan::explain_parts(p, self.rollups());
        let compiled = self.compile_parts(p)?;
        self.in_snapshot(|c| {
                let cov = self.coverage(c)?;
                for part in &p.parts {
                    let Source::Flows(range) = part.source else {
                        continue;
                    };
                    if range.since_ns.is_some_and(|t| t >= 1 << 63) {
                        // The edge after the last whole minute of an open
                        // range: no stored time reaches it.
                        continue;
                    }
                    let (seg_rows, rest) = self.coverage_counts(c, &cov, range)?;
                    out.push(match &compiled {
                        Some(_) if !cov.segments.is_empty() => format!(
                            "flows {}: {} column segments ({seg_rows} rows whose time may match) scanned \
                             on {} threads; {rest} newer rows, in no segment yet, read from SQLite into memory and scanned \
                             alike (kept between queries, extended by the rows committed since; \
                             summed in SQL when they are more than a segment and a half)",
                            plan::range_text(range),
                            cov.segments.len(),
                            scan_threads(),
                        ),
                        Some(_) => format!(
                            "flows {}: SQLite, every row ({rest} rows; no column segment yet: \
                             a segment is built per {SEGMENT_ROWS} rows)",
                            plan::range_text(range)
                        ),
                        None => format!(
                            "flows {}: SQLite, every row ({} rows): the filter or group reads a \
                             field column segments do not hold",
                            plan::range_text(range),
                            seg_rows + rest
                        ),
                    });
                }
                let group = compiled.as_ref().and_then(|(_, c)| c.addr_group());
                if let (Some(col), false) = (group, cov.segments.is_empty()) {
                    out.push(match self.addr_index.get(col) {
                        Some(ix) if ix.covers(&cov.segments) => format!(
                            "addresses summed by the dictionary of the {} addresses over every \
                             segment (through hash partitions when the segments whose time may \
                             match hold fewer than an eighth of them)",
                            ix.len()
                        ),
                        _ => "addresses summed through hash partitions (no dictionary over \
                              every segment yet)"
                            .into(),
                    });
                }
                Ok(())
        })?;
        Ok(out)
    }
}

impl SqliteStore {
    /// The parts over `flows` compiled for column segments (they share
    /// their condition and group; their time ranges differ), or `None`
    /// when they read a field segments do not hold.
    fn compile_parts(
        &self,
        p: &Aggregate,
    ) -> Result<Option<(Vec<TimeRange>, Compiled)>, StoreError> {
        let flows: Vec<(&plan::Part, TimeRange)> = p
            .parts
            .iter()
            .filter_map(|part| match part.source {
                Source::Flows(r) => Some((part, r)),
                Source::Rollup { .. } => None,
            })
            .collect();
        let Some((first, _)) = flows.first() else {
            return Ok(None);
        };
        if flows.iter().any(|(part, _)| part.cond != first.cond) {
            return Ok(None);
        }
        Ok(Compiled::new(&first.cond, first.group_expr(p.group), self)?
            .map(|c| (flows.iter().map(|(_, r)| *r).collect(), c)))
    }

    /// A flow listing of at most [`COLUMN_SELECT_MAX`] rows (offset
    /// included) whose matching rows are found in column segments and, for
    /// the rows in none, in SQLite; the records then fetched by row id.
    /// `None` when there are no segments or the filter reads what they do
    /// not hold.
    fn select_with_columns(
        &self,
        p: &Select,
    ) -> Result<Option<Vec<(String, FlowRecord)>>, StoreError> {
        let Some(compiled) = Compiled::rows(&p.cond, self)? else {
            return Ok(None);
        };
        let k = p.offset.saturating_add(p.limit);
        self.in_snapshot(|c| {
                let mut cov = self.coverage(c)?;
                if cov.segments.is_empty() {
                    return Ok(None);
                }
                // The rows outside segments in memory, scanned alike, or
                // found in SQL.
                let mut found: Vec<(u64, i64)> = match self.rows_in_memory(c, &cov.gaps)? {
                    Some(memory) => {
                        cov.segments.extend(memory);
                        Vec::new()
                    }
                    None => {
                        let mut q = Sql::default();
                        // Through the row-id B-tree (the gaps), not the index
                        // on first_ns that the order would tempt SQLite to
                        // walk whole.
                        q.push("SELECT f.first_ns, f.rowid FROM flows f NOT INDEXED WHERE ");
                        q.time(p.range);
                        q.gaps(&cov.gaps);
                        plan::write_cond(&mut q, &p.cond);
                        q.push(" ORDER BY f.first_ns, f.rowid");
                        q.limit(k);
                        let mut st = c
                            .prepare_cached(&q.text)
                            .map_err(|e| self.err("preparing a flow query", e))?;
                        st.query_map(rusqlite::params_from_iter(q.params.iter()), |r| {
                            Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))
                        })
                        .and_then(|r| r.collect())
                        .map_err(|e| self.err("running a flow query", e))?
                    }
                };
                let scan = Scan {
                    compiled: &compiled,
                    ranges: vec![p.range],
                    verify: self,
                    index: None,
                };
                match scan.rows(&cov.segments, k, scan_threads()) {
                    Ok(rows) => found.extend(rows),
                    Err(ScanError::Store(e)) => return Err(e),
                    Err(ScanError::Segment(_, e)) => {
                        tracing::warn!(error = %e, "column segment unreadable; answering from the database");
                        return Ok(None);
                    }
                }
                found.sort_unstable();
                let mut fetch = c
                    .prepare_cached(&format!(
                        "SELECT {FLOW_COLUMNS} FROM flows f JOIN sensors s ON s.id = f.sensor \
                         WHERE f.rowid = ?1"
                    ))
                    .map_err(|e| self.err("preparing a flow query", e))?;
                let mut out = Vec::with_capacity(p.limit.min(found.len()));
                for (_, rowid) in found.into_iter().skip(p.offset).take(p.limit) {
                    let mut rows = fetch
                        .query([rowid])
                        .map_err(|e| self.err("reading flows", e))?;
                    if let Some(row) = rows.next().map_err(|e| self.err("reading flows", e))? {
                        out.push(self.decode_row(row)?);
                    }
                }
                Ok(Some(out))
        })
    }

    /// Aggregates whose parts over `flows` are read from column segments
    /// where they hold the rows and from SQLite for the rest, in one pass
    /// over the segments for all of them: for each plan, its rows, or
    /// `None` when it reads what segments do not hold; `None` for all when
    /// there are no segments (or one did not read).
    #[allow(clippy::type_complexity)]
    fn aggregates_with_columns(
        &self,
        plans: &[Aggregate],
    ) -> Result<Option<Vec<Option<Vec<(GroupValue, Totals)>>>>, StoreError> {
        let compiled = plans
            .iter()
            .map(|p| self.compile_parts(p))
            .collect::<Result<Vec<_>, _>>()?;
        if compiled.iter().all(Option::is_none) {
            return Ok(None);
        }
        // The registry and the rows outside segments (in memory, to be
        // scanned as segments are, or summed in SQL), in one snapshot.
        let read = self.in_snapshot(|c| {
            let cov = self.coverage(c)?;
            if cov.segments.is_empty() {
                return Ok(None);
            }
            let memory = self.rows_in_memory(c, &cov.gaps)?;
            let mut rest = Vec::with_capacity(plans.len());
            for (p, comp) in plans.iter().zip(&compiled) {
                let parts: Vec<_> = p
                    .parts
                    .iter()
                    .filter(|x| memory.is_none() || matches!(x.source, Source::Rollup { .. }))
                    .cloned()
                    .collect();
                let rows = match comp {
                    Some(_) if !parts.is_empty() => {
                        let all = Aggregate {
                            order: Order::Group,
                            limit: None,
                            parts,
                            group: p.group,
                        };
                        self.run_aggregate(c, &all, Some(&cov.gaps))?
                    }
                    _ => Vec::new(),
                };
                rest.push(rows);
            }
            Ok(Some((cov, rest, memory)))
        })?;
        let Some((cov, mut rest, memory)) = read else {
            return Ok(None);
        };
        let indexes: Vec<_> = compiled
            .iter()
            .map(|c| {
                c.as_ref()
                    .and_then(|(_, c)| c.addr_group())
                    .and_then(|col| self.addr_index.get(col))
            })
            .collect();
        let scans: Vec<(usize, Scan<'_>)> = compiled
            .iter()
            .zip(&indexes)
            .enumerate()
            .filter_map(|(i, (c, ix))| {
                let (ranges, compiled) = c.as_ref()?;
                Some((
                    i,
                    Scan {
                        compiled,
                        ranges: ranges.clone(),
                        verify: self,
                        index: ix.as_deref(),
                    },
                ))
            })
            .collect();
        if let Some(memory) = memory.filter(|m| !m.is_empty()) {
            // The rows in memory first, all their groups, added to what
            // the segments' scan sums.
            let jobs = scans
                .iter()
                .map(|(_, scan)| Job {
                    scan,
                    extra: Vec::new(),
                    order: Order::Group,
                    limit: None,
                })
                .collect();
            match Scan::run_many(jobs, &memory, scan_threads()) {
                Ok(found) => {
                    for ((i, _), rows) in scans.iter().zip(found) {
                        rest[*i].extend(rows);
                    }
                }
                Err(ScanError::Store(e)) => return Err(e),
                Err(ScanError::Segment(_, e)) => return Err(self.corrupt(e.to_string())),
            }
        }
        let mut rest: Vec<Option<_>> = rest.into_iter().map(Some).collect();
        let jobs = scans
            .iter()
            .map(|(i, scan)| Job {
                scan,
                extra: rest[*i].take().unwrap_or_default(),
                order: plans[*i].order,
                limit: plans[*i].limit,
            })
            .collect();
        match Scan::run_many(jobs, &cov.segments, scan_threads()) {
            Ok(found) => {
                let mut out: Vec<Option<_>> = plans.iter().map(|_| None).collect();
                for ((i, _), rows) in scans.iter().zip(found) {
                    out[*i] = Some(rows);
                }
                Ok(Some(out))
            }
            Err(ScanError::Store(e)) => Err(e),
            Err(ScanError::Segment(_, e)) => {
                tracing::warn!(error = %e, "column segment unreadable; answering from the database");
                Ok(None)
            }
        }
    }

    /// Runs an aggregate in SQL; with `gaps`, its parts over `flows` read
    /// only the rows whose id is in one of them.
    fn run_aggregate(
        &self,
        c: &rusqlite::Connection,
        p: &Aggregate,
        gaps: Option<&[(i64, i64)]>,
    ) -> Result<Vec<(GroupValue, Totals)>, StoreError> {
        let mut q = Sql {
            gaps: gaps.map(<[_]>::to_vec),
            ..Sql::default()
        };
        plan::write_aggregate(&mut q, p);
        let mut stmt = c
            .prepare_cached(&q.text)
            .map_err(|e| self.err("preparing an aggregate query", e))?;
        let mut rows = stmt
            .query(rusqlite::params_from_iter(q.params.iter()))
            .map_err(|e| self.err("running an aggregate query", e))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(|e| self.err("reading sums", e))? {
            let g: Value = row.get(0).map_err(|e| self.err("reading a group", e))?;
            let group = match (p.group, g) {
                (Group::All, _) => GroupValue::None,
                (Group::Key(TopKey::Src | TopKey::Dst), Value::Blob(b)) => GroupValue::Addr(
                    ip_from_bytes("key", &b).map_err(|e| self.corrupt(e.to_string()))?,
                ),
                (_, Value::Integer(n)) => GroupValue::Num(n as u64),
                (Group::Key(TopKey::Text(_)), Value::Text(t)) => GroupValue::Text(t),
                (_, other) => return Err(self.corrupt(format!("group value {other:?}"))),
            };
            let sum = |i| {
                row.get::<_, Option<i64>>(i)
                    .map(|v| v.unwrap_or(0) as u64)
                    .map_err(|e| self.err("reading a sum", e))
            };
            let totals = Totals {
                flows: sum(1)?,
                packets: sum(2)?,
                bytes: sum(3)?,
            };
            out.push((group, totals));
        }
        Ok(out)
    }
}

/// Flow listings of at most this many rows (offset included) find their
/// rows in column segments; longer ones step through SQLite's rows.
const COLUMN_SELECT_MAX: usize = 100_000;

/// Threads a scan of column segments runs on: the machine's.
fn scan_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// A statement under construction: text with `?` placeholders and the
/// values bound to them, in order.
#[derive(Default)]
struct Sql {
    text: String,
    params: Vec<Value>,
    /// Parts over `flows` read only the rows whose id is in one of these
    /// ranges (`lo..hi`).
    gaps: Option<Vec<(i64, i64)>>,
}

impl Sql {
    /// A number, bound (above 2^63 − 1, as 2^63 − 1: a bound no stored
    /// value reaches).
    fn int(&mut self, v: u64) {
        self.params
            .push(Value::Integer(i64::try_from(v).unwrap_or(i64::MAX)));
    }

    fn value(&mut self, v: &plan::Value) {
        match v {
            plan::Value::Num(n) => self.int(*n),
            plan::Value::Bytes(b) => self.params.push(Value::Blob(b.clone())),
            plan::Value::Text(t) => self.params.push(Value::Text(t.clone())),
        }
    }

    /// The row id in one of `gaps` (`lo..hi`), then ` AND `.
    fn gaps(&mut self, gaps: &[(i64, i64)]) {
        match gaps {
            // One range (the usual: the rows newer than every segment) as
            // a condition SQLite reads through the row-id B-tree.
            [(lo, hi)] => {
                self.push("f.rowid >= ? AND f.rowid < ? AND ");
                self.params.push(Value::Integer(*lo));
                self.params.push(Value::Integer(*hi));
            }
            gaps => {
                self.push("(0");
                for (lo, hi) in gaps {
                    self.push(" OR f.rowid >= ? AND f.rowid < ?");
                    self.params.push(Value::Integer(*lo));
                    self.params.push(Value::Integer(*hi));
                }
                self.push(") AND ");
            }
        }
    }

    /// `first_ns` in the range, then ` AND `.
    fn time(&mut self, r: TimeRange) {
        self.push("f.first_ns >= ? AND f.first_ns < ? AND ");
        self.int(r.since_ns.unwrap_or(0));
        self.int(r.until_ns.unwrap_or(u64::MAX));
    }
}

impl Dialect for Sql {
    fn push(&mut self, s: &str) {
        self.text.push_str(s);
    }

    fn sum(&self, col: &str) -> String {
        format!("SUM({col})")
    }

    fn limit(&mut self, n: usize) {
        self.push(" LIMIT ?");
        self.int(n as u64);
    }

    fn limit_offset(&mut self, n: usize, offset: usize) {
        self.limit(n);
        self.push(" OFFSET ?");
        self.int(offset as u64);
    }

    fn group(&self, g: GroupExpr) -> String {
        match g {
            GroupExpr::Zero => "0".into(),
            GroupExpr::Field(f) => column(f).into(),
            // Numbers of the plan, written as literals.
            GroupExpr::Interval { of, per, step } => format!(
                "({} / {}) * {}",
                column(of),
                i64::try_from(per).unwrap_or(i64::MAX),
                i64::try_from(step).unwrap_or(i64::MAX)
            ),
        }
    }

    fn counts(&self, roll_up: bool) -> &'static str {
        if roll_up {
            "r.flows AS n, r.packets AS p, r.bytes AS b"
        } else {
            "COUNT(*) AS n, SUM(f.fwd_packets + f.rev_packets) AS p, \
             SUM(f.fwd_bytes + f.rev_bytes) AS b"
        }
    }

    fn source_flows(&mut self, range: TimeRange) {
        match self.gaps.clone() {
            // The rows in no segment: a few row-id ranges, read through
            // the row-id B-tree rather than the index on first_ns (whose
            // range may span every stored row).
            Some(gaps) => {
                self.push("FROM flows f NOT INDEXED WHERE ");
                self.time(range);
                self.gaps(&gaps);
            }
            None => {
                self.push("FROM flows f WHERE ");
                self.time(range);
            }
        }
    }

    fn source_rollup(&mut self, rollup: Rollup, from: u64, to: u64) {
        self.push(&format!(
            "FROM {} r WHERE r.minute >= ? AND r.minute < ? AND ",
            rollup.table()
        ));
        self.int(from);
        self.int(to);
    }

    fn primitive(&mut self, c: &Cond) {
        match c {
            Cond::Cmp(Field::Sensor, op, v) => {
                self.push(&format!(
                    "f.sensor IN (SELECT id FROM sensors WHERE name {} ?)",
                    op.as_str()
                ));
                self.value(v);
            }
            Cond::Cmp(f, op, v) => {
                self.push(&format!("{} {} ?", column(*f), op.as_str()));
                self.value(v);
            }
            Cond::Range(f, lo @ plan::Value::Bytes(b), hi) => {
                let col = column(*f);
                self.push(&format!("(length({col}) = ? AND {col} BETWEEN ? AND ?)"));
                self.int(b.len() as u64);
                self.value(lo);
                self.value(hi);
            }
            Cond::Range(f, lo, hi) => {
                let col = column(*f);
                if matches!(f, Field::SrcPort | Field::DstPort) {
                    // NULL (no ports) is out.
                    self.push(&format!("IFNULL({col} BETWEEN ? AND ?, 0)"));
                } else {
                    self.push(&format!("{col} BETWEEN ? AND ?"));
                }
                self.value(lo);
                self.value(hi);
            }
            Cond::AddrLen(f, len) => {
                self.push(&format!("length({}) = ?", column(*f)));
                self.int(u64::from(*len));
            }
            Cond::HasPorts => self.push("f.dst_port IS NOT NULL"),
            Cond::Text(f, op, needle) => {
                let col = column(*f);
                let text = |s: &str| plan::Value::Text(s.to_owned());
                match op {
                    TextOp::Eq => {
                        self.push(&format!("{col} = ?"));
                        self.value(&text(needle));
                    }
                    TextOp::Suffix => {
                        let n = needle.trim_start_matches('.');
                        let dotted = format!(".{n}");
                        self.push(&format!("({col} = ? OR substr({col}, -?) = ?)"));
                        self.value(&text(n));
                        self.int(dotted.len() as u64);
                        self.value(&text(&dotted));
                    }
                    TextOp::Contains => {
                        self.push(&format!("instr({col}, ?) > 0"));
                        self.value(&text(needle));
                    }
                }
            }
            Cond::Vlan(v) => {
                self.push("(f.vlan != 0 AND ((f.vlan & 4095) = ? OR (f.vlan >> 12) = ?))");
                self.int(u64::from(*v));
                self.int(u64::from(*v));
            }
            Cond::True | Cond::False | Cond::And(_) | Cond::Or(_) | Cond::Not(_) => {
                plan::write_cond(self, c);
            }
        }
    }
}

/// A field's column: `f` is `flows`, `r` the roll-up.
fn column(f: Field) -> &'static str {
    match f {
        Field::SrcIp => "f.src_ip",
        Field::DstIp => "f.dst_ip",
        Field::SrcPort => "f.src_port",
        Field::DstPort => "f.dst_port",
        Field::Proto => "f.proto",
        Field::ConnState => "f.conn_state",
        Field::Packets => "(f.fwd_packets + f.rev_packets)",
        Field::Bytes => "(f.fwd_bytes + f.rev_bytes)",
        Field::Sensor => "f.sensor",
        Field::CommunityId => "f.community_id",
        Field::FirstNs => "f.first_ns",
        Field::Minute => "r.minute",
        Field::RollupKey => "r.k",
        Field::RollupProto => "r.proto",
        Field::AppProto => "f.app_proto",
        Field::AppName => "f.app_name",
        Field::AppFp => "f.app_fp",
        Field::IcsReads => "f.ics_reads",
        Field::IcsWrites => "f.ics_writes",
        Field::IcsControl => "f.ics_control",
    }
}
