//! Flow queries: the planner's plans rendered in SQLite's SQL, every value
//! bound as a parameter (never pasted into the text), and run on a pooled
//! read connection.

use rusqlite::types::Value;
use vigil_proto::FlowRecord;
use vigil_proto::wire::ip_from_bytes;

use super::SqliteStore;
use super::rows::FLOW_COLUMNS;
use crate::model::query::{TextOp, TimeRange, TopKey, Totals};
use crate::store::plan::{
    self, Aggregate, Cond, Dialect, Field, Group, GroupExpr, GroupValue, Rollup, Select,
};
use crate::store::{FlowQueries, StoreError};

/// The roll-ups the embedded store keeps.
const ROLLUPS: [Rollup; 4] = [Rollup::Src, Rollup::Dst, Rollup::DstPort, Rollup::Proto];

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
        let mut q = Sql::default();
        q.push(&format!(
            "SELECT {FLOW_COLUMNS} FROM flows f JOIN sensors s ON s.id = f.sensor WHERE "
        ));
        q.time(p.range);
        plan::write_cond(&mut q, &p.cond);
        q.push(" ORDER BY f.first_ns, f.rowid");
        q.limit_offset(p.limit, p.offset);
        let page = page.max(1);
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
        let mut q = Sql::default();
        plan::write_aggregate(&mut q, p);
        self.with_reader(|c| {
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
        })
    }
}

/// A statement under construction: text with `?` placeholders and the
/// values bound to them, in order.
#[derive(Default)]
struct Sql {
    text: String,
    params: Vec<Value>,
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
        self.push("FROM flows f WHERE ");
        self.time(range);
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
