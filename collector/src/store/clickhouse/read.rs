//! Flow queries: the planner's plans rendered in ClickHouse's SQL (every
//! value a number or a hex literal written here: 18.16 has no query
//! parameters), results read back from `RowBinary`.

use std::fmt::Write as _;

use prost::Message as _;
use vigil_proto::wire::ip_from_bytes;
use vigil_proto::{FlowRecord, pb};

use super::{ClickHouseStore, READ_COLS, Reader, lit};
use crate::model::query::{TextOp, TimeRange, TopKey, Totals};
use crate::store::plan::{
    self, Aggregate, Cond, Dialect, Field, Group, GroupExpr, GroupValue, Rollup, Select, Value,
};
use crate::store::{FlowQueries, StoreError};

/// The roll-ups ClickHouse keeps. None by initiator: sources are many, often
/// spoofed, and such a roll-up held nearly a row per flow and halved the
/// insert rate.
const ROLLUPS: [Rollup; 3] = [Rollup::Dst, Rollup::DstPort, Rollup::Proto];

impl FlowQueries for ClickHouseStore {
    fn rollups(&self) -> &'static [Rollup] {
        &ROLLUPS
    }

    fn select(&self, p: &Select) -> Result<Vec<(String, FlowRecord)>, StoreError> {
        let mut q = Sql::new(&self.db);
        q.push(&format!("SELECT {READ_COLS} FROM {}.flows WHERE ", self.db));
        q.time(p.range);
        plan::write_cond(&mut q, &p.cond);
        q.push(" ORDER BY first_ns, sensor_id, seq, flow_id");
        q.limit_offset(p.limit, p.offset);
        self.read_flows(&self.select("reading flows", &q.text)?)
    }

    fn explain(&self, p: &Aggregate) -> Result<Vec<String>, StoreError> {
        let mut out = plan::explain_parts(p, self.rollups());
        for part in &p.parts {
            if let plan::Source::Flows(range) = part.source {
                if range.since_ns.is_some_and(|t| t >= 1 << 63) {
                    continue;
                }
                out.push(format!(
                    "flows {}: ClickHouse's flows table, its granules whose first_ns may fall \
                     in the range (ordering key first_ns, sensor_id), every matching row \
                     summed by the server",
                    plan::range_text(range)
                ));
            }
        }
        Ok(out)
    }

    fn explain_select(&self, p: &Select) -> Result<Vec<String>, StoreError> {
        Ok(vec![format!(
            "flow listing: ClickHouse's flows table in first_ns order (its ordering key), the \
             filter tested on each row of the granules read, the first {} kept",
            p.offset.saturating_add(p.limit)
        )])
    }

    fn aggregate(&self, p: &Aggregate) -> Result<Vec<(GroupValue, Totals)>, StoreError> {
        let mut q = Sql::new(&self.db);
        plan::write_aggregate(&mut q, p);
        let body = self.select("aggregating flows", &q.text)?;
        let mut r = Reader::new(&body);
        let mut out = Vec::new();
        while !r.done() {
            let group = match p.group {
                Group::Key(TopKey::Src | TopKey::Dst) => GroupValue::Addr(
                    ip_from_bytes("key", r.bytes()?).map_err(|e| self.corrupt(e.to_string()))?,
                ),
                Group::All => {
                    r.u64()?;
                    GroupValue::None
                }
                Group::Key(TopKey::Text(_)) => GroupValue::Text(
                    String::from_utf8(r.bytes()?.to_vec())
                        .map_err(|e| self.corrupt(format!("group value: {e}")))?,
                ),
                Group::Key(_) | Group::Interval(_) => GroupValue::Num(r.u64()?),
            };
            let totals = Totals {
                flows: r.u64()?,
                packets: r.u64()?,
                bytes: r.u64()?,
            };
            out.push((group, totals));
        }
        Ok(out)
    }
}

impl ClickHouseStore {
    /// Records from rows of [`READ_COLS`]: the `record` column holds what
    /// no other column does; the rest is put back from the columns.
    pub(super) fn read_flows(&self, body: &[u8]) -> Result<Vec<(String, FlowRecord)>, StoreError> {
        let mut r = Reader::new(body);
        let mut out = Vec::new();
        while !r.done() {
            out.push(self.read_flow(&mut r)?);
        }
        Ok(out)
    }

    /// One record from a row of [`READ_COLS`] (more columns may follow).
    pub(super) fn read_flow(&self, r: &mut Reader<'_>) -> Result<(String, FlowRecord), StoreError> {
        let bad = |e: &dyn std::fmt::Display| self.corrupt(format!("flow record: {e}"));
        let sensor = r.string()?;
        let mut f = pb::Flow::decode(r.bytes()?).map_err(|e| bad(&e))?;
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
        let rec = FlowRecord::try_from(&f).map_err(|e| bad(&e))?;
        Ok((sensor, rec))
    }
}

/// A statement under construction, values written as literals.
pub(super) struct Sql<'a> {
    db: &'a str,
    pub(super) text: String,
}

impl<'a> Sql<'a> {
    pub(super) fn new(db: &'a str) -> Sql<'a> {
        Sql {
            db,
            text: String::new(),
        }
    }

    /// `first_ns` in the range (where bounded), then ` AND `.
    fn time(&mut self, r: TimeRange) {
        if let Some(s) = r.since_ns {
            let _ = write!(self.text, "first_ns >= {s} AND ");
        }
        if let Some(u) = r.until_ns {
            let _ = write!(self.text, "first_ns < {u} AND ");
        }
    }
}

/// A value as a literal: numbers as themselves, bytes and text hex-encoded.
fn literal(v: &Value) -> String {
    match v {
        Value::Num(n) => n.to_string(),
        Value::Bytes(b) => lit(b),
        Value::Text(t) => lit(t.as_bytes()),
    }
}

impl Dialect for Sql<'_> {
    fn push(&mut self, s: &str) {
        self.text.push_str(s);
    }

    fn sum(&self, col: &str) -> String {
        format!("toUInt64(sum({col}))")
    }

    fn limit(&mut self, n: usize) {
        let _ = write!(self.text, " LIMIT {}", n.min(i64::MAX as usize));
    }

    fn limit_offset(&mut self, n: usize, offset: usize) {
        // `LIMIT offset, n`: the form ClickHouse 18.16 reads too.
        let _ = write!(
            self.text,
            " LIMIT {}, {}",
            offset.min(i64::MAX as usize),
            n.min(i64::MAX as usize)
        );
    }

    fn group(&self, g: GroupExpr) -> String {
        match g {
            GroupExpr::Zero => "toUInt64(0)".into(),
            // Addresses and texts stay strings; numbers of every width are
            // one type.
            GroupExpr::Field(f @ (Field::SrcIp | Field::DstIp | Field::AppName | Field::AppFp)) => {
                column(f).into()
            }
            GroupExpr::Field(Field::RollupKey) => "k".into(),
            GroupExpr::Field(f) => format!("toUInt64({})", column(f)),
            GroupExpr::Interval { of, per, step } => {
                format!("toUInt64(intDiv({}, {per}) * {step})", column(of))
            }
        }
    }

    fn counts(&self, roll_up: bool) -> &'static str {
        if roll_up {
            "flows AS n, packets AS p, bytes AS b"
        } else {
            "count() AS n, sum(packets) AS p, sum(bytes) AS b"
        }
    }

    fn source_flows(&mut self, range: TimeRange) {
        let _ = write!(self.text, "FROM {}.flows WHERE ", self.db);
        self.time(range);
    }

    fn source_rollup(&mut self, rollup: Rollup, from: u64, to: u64) {
        let _ = write!(
            self.text,
            "FROM {}.{} WHERE minute >= {from} AND minute < {to} AND ",
            self.db,
            rollup.table()
        );
    }

    fn primitive(&mut self, c: &Cond) {
        if matches!(
            c,
            Cond::True | Cond::False | Cond::And(_) | Cond::Or(_) | Cond::Not(_)
        ) {
            plan::write_cond(self, c);
            return;
        }
        let out = &mut self.text;
        let _ = match c {
            Cond::Cmp(f, op, v) => write!(out, "{} {} {}", column(*f), op.as_str(), literal(v)),
            Cond::Range(f, lo @ Value::Bytes(b), hi) => {
                let col = column(*f);
                write!(
                    out,
                    "(length({col}) = {} AND {col} >= {} AND {col} <= {})",
                    b.len(),
                    literal(lo),
                    literal(hi)
                )
            }
            Cond::Range(f, lo, hi) => {
                let col = column(*f);
                // A flow without ports stores 0: it is out.
                let ports = if matches!(f, Field::SrcPort | Field::DstPort) {
                    "has_ports = 1 AND "
                } else {
                    ""
                };
                write!(
                    out,
                    "({ports}{col} >= {} AND {col} <= {})",
                    literal(lo),
                    literal(hi)
                )
            }
            Cond::AddrLen(f, len) => write!(out, "length({}) = {len}", column(*f)),
            Cond::HasPorts => write!(out, "has_ports = 1"),
            Cond::Vlan(v) => write!(out, "({v} != 0 AND (vlan0 = {v} OR vlan1 = {v}))"),
            Cond::Text(f, op, needle) => {
                let col = column(*f);
                match op {
                    TextOp::Eq => write!(out, "{col} = {}", lit(needle.as_bytes())),
                    TextOp::Suffix => {
                        let n = needle.trim_start_matches('.');
                        write!(
                            out,
                            "({col} = {} OR endsWith({col}, {}))",
                            lit(n.as_bytes()),
                            lit(format!(".{n}").as_bytes())
                        )
                    }
                    TextOp::Contains => {
                        write!(out, "position({col}, {}) > 0", lit(needle.as_bytes()))
                    }
                }
            }
            Cond::True | Cond::False | Cond::And(_) | Cond::Or(_) | Cond::Not(_) => Ok(()),
        };
    }
}

/// A field's column in `flows` or a roll-up.
fn column(f: Field) -> &'static str {
    match f {
        Field::SrcIp => "src_ip",
        Field::DstIp => "dst_ip",
        Field::SrcPort => "src_port",
        Field::DstPort => "dst_port",
        Field::Proto => "proto",
        Field::ConnState => "conn_state",
        Field::Packets => "packets",
        Field::Bytes => "bytes",
        Field::Sensor => "sensor_id",
        Field::CommunityId => "community_id",
        Field::FirstNs => "first_ns",
        Field::Minute => "minute",
        Field::RollupKey => "k",
        Field::RollupProto => "proto",
        Field::AppProto => "app_proto",
        Field::AppName => "app_name",
        Field::AppFp => "app_fp",
        Field::IcsReads => "ics_reads",
        Field::IcsWrites => "ics_writes",
        Field::IcsControl => "ics_control",
    }
}
