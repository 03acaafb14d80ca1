//! The query planner: every question about stored flows becomes one
//! dialect-free plan, built here once from the typed filter; each engine
//! only renders a plan in its SQL and runs it.
//!
//! A plan says which table answers each part of the question (the flows,
//! or a per-minute roll-up for the whole minutes of the range with the
//! flows for the partial minutes at its edges), the filter as a condition
//! tree over that table's fields ([`Cond`]), and the shape of the answer:
//! what rows are grouped by, in what order, how many. A new filter keyword
//! that reads an existing field is a change here (and in the parser) only;
//! a keyword on a new field adds that field's column to each engine's
//! `column` function.
//!
//! Invariants the engines rely on: a plan never holds an empty `And` or
//! `Or` (they fold to [`Cond::True`] and [`Cond::False`]); a roll-up part
//! only holds conditions on that roll-up's own columns; the parts of an
//! aggregate cover the range once, so their rows add up.

use std::net::IpAddr;

use vigil_proto::wire::ip_to_bytes;
use vigil_proto::{AppProto, ConnState, proto_name};

use super::StoreError;
use crate::model::alert::AlertQuery;
use crate::model::query::{
    Cmp, Counter, Dir, Filter, IcsCounter, MAX_SERIES_POINTS, SeriesPoint, TextOp, TimeRange,
    TopBy, TopKey, TopRow, Totals, check_step,
};

/// Nanoseconds in a minute: the roll-ups' resolution.
pub const NS_PER_MIN: u64 = 60_000_000_000;

/// A per-minute roll-up table: flows, packets and bytes per minute of
/// `first_seen` and one key (`k`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rollup {
    /// By initiator address: `rollup_src`.
    Src,
    /// By responder address: `rollup_dst`.
    Dst,
    /// By responder port, with the IP protocol beside it (`proto`); flows
    /// with ports only: `rollup_dport`.
    DstPort,
    /// By IP protocol: `rollup_proto`.
    Proto,
}

impl Rollup {
    /// The table's name.
    pub fn table(self) -> &'static str {
        match self {
            Rollup::Src => "rollup_src",
            Rollup::Dst => "rollup_dst",
            Rollup::DstPort => "rollup_dport",
            Rollup::Proto => "rollup_proto",
        }
    }
}

/// A field a condition or a group reads. On `flows`, the record's own; on a
/// roll-up, its key ([`Field::RollupKey`]) and `rollup_dport`'s protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// Initiator address (4 or 16 bytes).
    SrcIp,
    /// Responder address.
    DstIp,
    /// Initiator port; absent for protocols without ports.
    SrcPort,
    /// Responder port; absent for protocols without ports.
    DstPort,
    /// IP protocol.
    Proto,
    /// Connection state, as its index in [`ConnState::ALL`].
    ConnState,
    /// Packets, both directions.
    Packets,
    /// IP bytes, both directions.
    Bytes,
    /// The reporting sensor's id.
    Sensor,
    /// The Community ID (20 bytes).
    CommunityId,
    /// The record's first packet, ns since the epoch.
    FirstNs,
    /// A roll-up's minute (minutes since the epoch).
    Minute,
    /// A roll-up's key: an address, a port or a protocol.
    RollupKey,
    /// `rollup_dport`'s protocol column.
    RollupProto,
    /// The application protocol: its position in [`AppProto::ALL`] plus
    /// one, 0 for none ([`app_code`]).
    AppProto,
    /// The application's name, lowercase: the DNS query name, TLS server
    /// name, HTTP host or SSH client banner; empty for none.
    AppName,
    /// The application's fingerprint, lowercase: JA4 or HASSH.
    AppFp,
    /// ICS reads in the record.
    IcsReads,
    /// ICS writes in the record.
    IcsWrites,
    /// ICS control operations in the record.
    IcsControl,
}

/// How the stores keep an application protocol: its position in
/// [`AppProto::ALL`] plus one (0: no application metadata). Append only.
pub fn app_code(p: Option<AppProto>) -> u64 {
    p.and_then(|p| AppProto::ALL.iter().position(|x| *x == p))
        .map_or(0, |i| i as u64 + 1)
}

/// Flows whose application protocol is one of `protos`.
fn of_protos(protos: &[AppProto]) -> Cond {
    Cond::or(
        protos
            .iter()
            .map(|p| Cond::Cmp(Field::AppProto, Cmp::Eq, Value::Num(app_code(Some(*p)))))
            .collect(),
    )
}

/// A value a field is compared with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// A number.
    Num(u64),
    /// Bytes: an address (4 or 16) or a Community ID (20).
    Bytes(Vec<u8>),
    /// Text: a sensor id.
    Text(String),
}

/// A filter as a condition tree over the fields of one table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cond {
    /// Every row.
    True,
    /// No row.
    False,
    /// All of these (two or more).
    And(Vec<Cond>),
    /// Any of these (two or more).
    Or(Vec<Cond>),
    /// Not this.
    Not(Box<Cond>),
    /// `field op value`.
    Cmp(Field, Cmp, Value),
    /// `field` in `lo..=hi`. For an address field, `lo` and `hi` are of
    /// one family and rows of the other family are out; for a port field
    /// of `flows`, a flow without ports is out.
    Range(Field, Value, Value),
    /// An address field of this many bytes: 4 (IPv4) or 16 (IPv6).
    AddrLen(Field, u8),
    /// The flow has ports.
    HasPorts,
    /// Either VLAN id of the flow is this.
    Vlan(u16),
    /// A text field ([`Field::AppName`], [`Field::AppFp`]) matching a
    /// lowercase needle.
    Text(Field, TextOp, String),
}

impl Cond {
    /// `And` of `v`, folded: no part is true, one part is itself.
    pub fn and(mut v: Vec<Cond>) -> Cond {
        match v.len() {
            0 => Cond::True,
            1 => v.remove(0),
            _ => Cond::And(v),
        }
    }

    /// `Or` of `v`, folded: no part is false, one part is itself.
    pub fn or(mut v: Vec<Cond>) -> Cond {
        match v.len() {
            0 => Cond::False,
            1 => v.remove(0),
            _ => Cond::Or(v),
        }
    }

    /// The filter over the fields of `flows`.
    pub fn of_flows(f: &Filter) -> Cond {
        let dir = |d: Dir, one: &dyn Fn(bool) -> Cond| match d {
            Dir::Src => one(true),
            Dir::Dst => one(false),
            Dir::Either => Cond::Or(vec![one(true), one(false)]),
        };
        match f {
            Filter::All => Cond::True,
            Filter::And(v) => Cond::and(v.iter().map(Cond::of_flows).collect()),
            Filter::Or(v) => Cond::or(v.iter().map(Cond::of_flows).collect()),
            Filter::Not(g) => Cond::Not(Box::new(Cond::of_flows(g))),
            Filter::Ip(d, r) => dir(*d, &|src| {
                let field = if src { Field::SrcIp } else { Field::DstIp };
                addr_range(field, r.lo, r.hi)
            }),
            Filter::Port(d, lo, hi) => dir(*d, &|src| {
                let field = if src { Field::SrcPort } else { Field::DstPort };
                num_range(field, *lo, *hi)
            }),
            Filter::Proto(p) => Cond::Cmp(Field::Proto, Cmp::Eq, Value::Num(u64::from(*p))),
            // Both ends of a flow are of one family.
            Filter::Family(v) => Cond::AddrLen(Field::SrcIp, family_len(*v)),
            Filter::Vlan(v) => Cond::Vlan(*v),
            Filter::State(s) => Cond::Cmp(Field::ConnState, Cmp::Eq, Value::Num(state_index(*s))),
            Filter::Counter(c, op, n) => {
                let field = match c {
                    Counter::Bytes => Field::Bytes,
                    Counter::Packets => Field::Packets,
                };
                Cond::Cmp(field, *op, Value::Num(*n))
            }
            Filter::Sensor(s) => Cond::Cmp(Field::Sensor, Cmp::Eq, Value::Text(s.clone())),
            Filter::CommunityId(c) => {
                Cond::Cmp(Field::CommunityId, Cmp::Eq, Value::Bytes(c.0.to_vec()))
            }
            Filter::App(p) => Cond::Cmp(Field::AppProto, Cmp::Eq, Value::Num(app_code(Some(*p)))),
            Filter::Text(t, op, needle) => Cond::and(vec![
                of_protos(t.protos()),
                Cond::Text(
                    if t.is_name() {
                        Field::AppName
                    } else {
                        Field::AppFp
                    },
                    *op,
                    needle.clone(),
                ),
            ]),
            Filter::Ics(c, op, n) => {
                let field = match c {
                    IcsCounter::Reads => Field::IcsReads,
                    IcsCounter::Writes => Field::IcsWrites,
                    IcsCounter::Control => Field::IcsControl,
                };
                Cond::Cmp(field, *op, Value::Num(*n))
            }
        }
    }

    /// The filter over the columns of roll-up `r`, or `None` when it looks
    /// at anything the roll-up does not hold.
    pub fn of_rollup(f: &Filter, r: Rollup) -> Option<Cond> {
        Some(match (f, r) {
            (Filter::All, _) => Cond::True,
            (Filter::And(v), _) => Cond::and(
                v.iter()
                    .map(|g| Cond::of_rollup(g, r))
                    .collect::<Option<_>>()?,
            ),
            (Filter::Or(v), _) => Cond::or(
                v.iter()
                    .map(|g| Cond::of_rollup(g, r))
                    .collect::<Option<_>>()?,
            ),
            (Filter::Not(g), _) => Cond::Not(Box::new(Cond::of_rollup(g, r)?)),
            (Filter::Ip(Dir::Src, range), Rollup::Src)
            | (Filter::Ip(Dir::Dst, range), Rollup::Dst) => {
                addr_range(Field::RollupKey, range.lo, range.hi)
            }
            (Filter::Family(v), Rollup::Src | Rollup::Dst) => {
                Cond::AddrLen(Field::RollupKey, family_len(*v))
            }
            (Filter::Port(Dir::Dst, lo, hi), Rollup::DstPort) => {
                num_range(Field::RollupKey, *lo, *hi)
            }
            (Filter::Proto(p), Rollup::DstPort) => {
                Cond::Cmp(Field::RollupProto, Cmp::Eq, Value::Num(u64::from(*p)))
            }
            (Filter::Proto(p), Rollup::Proto) => {
                Cond::Cmp(Field::RollupKey, Cmp::Eq, Value::Num(u64::from(*p)))
            }
            _ => return None,
        })
    }
}

fn addr_range(field: Field, lo: IpAddr, hi: IpAddr) -> Cond {
    Cond::Range(
        field,
        Value::Bytes(ip_to_bytes(lo)),
        Value::Bytes(ip_to_bytes(hi)),
    )
}

fn num_range(field: Field, lo: u16, hi: u16) -> Cond {
    Cond::Range(field, Value::Num(u64::from(lo)), Value::Num(u64::from(hi)))
}

fn family_len(v: u8) -> u8 {
    if v == 4 { 4 } else { 16 }
}

/// A connection state as the stores keep it: its index in [`ConnState::ALL`].
pub fn state_index(s: ConnState) -> u64 {
    ConnState::ALL.iter().position(|c| *c == s).unwrap_or(0) as u64
}

/// Records: which, in what order (oldest first, by `first_seen`), how many.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Select {
    /// The filter over `flows`.
    pub cond: Cond,
    /// `first_seen` in this range.
    pub range: TimeRange,
    /// At most this many.
    pub limit: usize,
    /// After skipping this many (a page).
    pub offset: usize,
}

/// Where one part of an aggregate reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `flows`, the records whose `first_seen` is in the range.
    Flows(TimeRange),
    /// A roll-up's minutes `from..to` (minutes since the epoch).
    Rollup {
        /// The roll-up.
        rollup: Rollup,
        /// First minute.
        from: u64,
        /// Minute after the last.
        to: u64,
    },
}

/// One part of an aggregate: a source and the filter over its fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    /// Where it reads.
    pub source: Source,
    /// The filter, over that source's fields.
    pub cond: Cond,
}

/// What an aggregate's rows are grouped by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    /// One group: the totals.
    All,
    /// A top-N key. Over `flows`, `Src`/`Dst` read the address fields,
    /// the port keys the port fields (the parts hold only flows with
    /// ports), `Proto` the protocol; over a roll-up, its key.
    Key(TopKey),
    /// Intervals of `first_seen` of this many ns, aligned to the epoch;
    /// the group's value is the interval's start.
    Interval(u64),
}

/// The order of an aggregate's rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// By the group's value, ascending.
    Group,
    /// By a total, descending, then by the group's value.
    Desc(TopBy),
}

/// Totals grouped over the union of parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Aggregate {
    /// What rows are grouped by.
    pub group: Group,
    /// Read in turn; their rows add up.
    pub parts: Vec<Part>,
    /// Row order.
    pub order: Order,
    /// At most this many rows.
    pub limit: Option<usize>,
}

/// A group's value in an aggregate's row, as an engine reads it back.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum GroupValue {
    /// [`Group::All`]: no value.
    None,
    /// An address ([`TopKey::Src`], [`TopKey::Dst`]).
    Addr(IpAddr),
    /// A port, a protocol or an interval's start.
    Num(u64),
    /// An application text field ([`TopKey::Text`]).
    Text(String),
}

/// A group as an expression over one part's fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupExpr {
    /// The constant 0 (one group).
    Zero,
    /// A field's value: an address (4 or 16 bytes) or a number.
    Field(Field),
    /// `(of / per) * step`: the start of an interval of `step` ns.
    Interval {
        /// [`Field::FirstNs`] or [`Field::Minute`].
        of: Field,
        /// What `of` is divided by.
        per: u64,
        /// The interval, ns.
        step: u64,
    },
}

impl Part {
    /// How this part's rows are grouped for `group`.
    pub fn group_expr(&self, group: Group) -> GroupExpr {
        match (group, self.source) {
            (Group::All, _) => GroupExpr::Zero,
            (Group::Key(k), Source::Flows(_)) => GroupExpr::Field(key_field(k)),
            (Group::Key(_), Source::Rollup { .. }) => GroupExpr::Field(Field::RollupKey),
            (Group::Interval(step), Source::Flows(_)) => GroupExpr::Interval {
                of: Field::FirstNs,
                per: step,
                step,
            },
            (Group::Interval(step), Source::Rollup { .. }) => GroupExpr::Interval {
                of: Field::Minute,
                per: step / NS_PER_MIN,
                step,
            },
        }
    }
}

/// The records matching `filter` in `range`, at most `limit`.
pub fn select(filter: &Filter, range: TimeRange, limit: usize) -> Select {
    Select {
        cond: Cond::of_flows(filter),
        range,
        limit,
        offset: 0,
    }
}

/// Totals of the records matching `filter` in `range`.
pub fn count(filter: &Filter, range: TimeRange, rollups: &[Rollup]) -> Aggregate {
    aggregate(filter, range, Group::All, Order::Group, None, rollups)
}

/// The `limit` largest groups by `key`, ranked by `by`.
pub fn top(
    filter: &Filter,
    range: TimeRange,
    key: TopKey,
    by: TopBy,
    limit: usize,
    rollups: &[Rollup],
) -> Aggregate {
    aggregate(
        filter,
        range,
        Group::Key(key),
        Order::Desc(by),
        Some(limit),
        rollups,
    )
}

/// Totals per interval of `step_ns`: at most one interval more than a
/// series may have, so that the caller can tell it is too long.
pub fn series(
    filter: &Filter,
    range: TimeRange,
    step_ns: u64,
    rollups: &[Rollup],
) -> Result<Aggregate, StoreError> {
    check_step(step_ns).map_err(StoreError::BadQuery)?;
    Ok(aggregate(
        filter,
        range,
        Group::Interval(step_ns),
        Order::Group,
        Some(MAX_SERIES_POINTS + 1),
        rollups,
    ))
}

/// The roll-ups that can answer a group, best first: the key's own for a
/// top-N; for totals and intervals of whole minutes any that counts every
/// flow (the one of fewest rows first).
fn candidates(group: Group) -> &'static [Rollup] {
    match group {
        Group::Key(TopKey::Src) => &[Rollup::Src],
        Group::Key(TopKey::Dst) => &[Rollup::Dst],
        Group::Key(TopKey::DstPort) => &[Rollup::DstPort],
        Group::Key(TopKey::Proto) => &[Rollup::Proto],
        Group::Key(TopKey::SrcPort | TopKey::App | TopKey::Text(_)) => &[],
        Group::Interval(step) if !step.is_multiple_of(NS_PER_MIN) => &[],
        Group::All | Group::Interval(_) => &[Rollup::Proto, Rollup::Dst, Rollup::Src],
    }
}

fn aggregate(
    filter: &Filter,
    range: TimeRange,
    group: Group,
    order: Order,
    limit: Option<usize>,
    rollups: &[Rollup],
) -> Aggregate {
    let mut flows_cond = Cond::of_flows(filter);
    match group {
        Group::Key(TopKey::DstPort | TopKey::SrcPort) => {
            flows_cond = Cond::and(vec![Cond::HasPorts, flows_cond]);
        }
        Group::Key(TopKey::App) => {
            let none = Cond::Cmp(Field::AppProto, Cmp::Eq, Value::Num(app_code(None)));
            flows_cond = Cond::and(vec![Cond::Not(Box::new(none)), flows_cond]);
        }
        Group::Key(TopKey::Text(t)) => {
            let empty = Cond::Cmp(
                key_field(TopKey::Text(t)),
                Cmp::Eq,
                Value::Text(String::new()),
            );
            flows_cond = Cond::and(vec![
                of_protos(t.protos()),
                Cond::Not(Box::new(empty)),
                flows_cond,
            ]);
        }
        _ => {}
    }
    let flows = |range: TimeRange| Part {
        source: Source::Flows(range),
        cond: flows_cond.clone(),
    };
    let since = range.since_ns.unwrap_or(0);
    let until = range.until_ns.unwrap_or(u64::MAX);
    let (from, to) = (since.div_ceil(NS_PER_MIN), until / NS_PER_MIN);
    let rollup = candidates(group)
        .iter()
        .filter(|r| rollups.contains(r))
        .find_map(|r| Some((*r, Cond::of_rollup(filter, *r)?)));
    let parts = match rollup {
        // The whole minutes from the roll-up, the partial minutes at the
        // edges from the flows.
        Some((rollup, cond)) if from < to => {
            let mut parts = vec![Part {
                source: Source::Rollup { rollup, from, to },
                cond,
            }];
            for (lo, hi) in [(since, from * NS_PER_MIN), (to * NS_PER_MIN, until)] {
                if lo < hi {
                    parts.push(flows(TimeRange {
                        since_ns: Some(lo),
                        until_ns: Some(hi),
                    }));
                }
            }
            parts
        }
        _ => vec![flows(range)],
    };
    Aggregate {
        group,
        parts,
        order,
        limit,
    }
}

/// An alert listing's conditions over the columns of `alerts` (the same
/// in every engine), each `column op value`, all to hold; and its limit.
pub fn alert_conditions(q: &AlertQuery) -> (Vec<(&'static str, Cmp, Value)>, usize) {
    let mut c = Vec::new();
    if let Some(t) = q.since_ns {
        c.push(("last_ns", Cmp::Ge, Value::Num(t)));
    }
    if let Some(t) = q.until_ns {
        c.push(("first_ns", Cmp::Lt, Value::Num(t)));
    }
    if let Some(k) = q.kind {
        c.push(("kind", Cmp::Eq, Value::Text(k.as_str().into())));
    }
    if let Some(s) = q.min_severity {
        c.push(("severity", Cmp::Ge, Value::Num(s as u64)));
    }
    if let Some(a) = &q.asset {
        c.push(("asset", Cmp::Eq, Value::Text(a.clone())));
    }
    (c, if q.limit == 0 { 1000 } else { q.limit })
}

/// The `flows` field a top-N key groups by.
pub fn key_field(k: TopKey) -> Field {
    match k {
        TopKey::Src => Field::SrcIp,
        TopKey::Dst => Field::DstIp,
        TopKey::DstPort => Field::DstPort,
        TopKey::SrcPort => Field::SrcPort,
        TopKey::Proto => Field::Proto,
        TopKey::App => Field::AppProto,
        TopKey::Text(t) if t.is_name() => Field::AppName,
        TopKey::Text(_) => Field::AppFp,
    }
}

/// The pieces of SQL in which the engines' dialects differ; [`write_cond`]
/// and [`write_aggregate`] write the rest, the same for every engine.
pub trait Dialect {
    /// Appends text.
    fn push(&mut self, s: &str);

    /// Appends a condition that is none of `True`, `False`, `And`, `Or`
    /// and `Not`, as a boolean that is never NULL (so that `NOT` means
    /// what it means in [`Filter::matches`]).
    fn primitive(&mut self, c: &Cond);

    /// A group expression over a part's fields.
    fn group(&self, g: GroupExpr) -> String;

    /// The columns `n` (flows), `p` (packets) and `b` (bytes) of a part
    /// over `flows` (`roll_up` false; summed per group) or a roll-up.
    fn counts(&self, roll_up: bool) -> &'static str;

    /// Appends `FROM flows WHERE ` and the range's bounds on `first_seen`,
    /// each followed by ` AND `.
    fn source_flows(&mut self, range: TimeRange);

    /// Appends `FROM` the roll-up ` WHERE ` its minutes `from..to` ` AND `.
    fn source_rollup(&mut self, rollup: Rollup, from: u64, to: u64);

    /// An expression for the sum of column `col` over a group, as an
    /// unsigned 64-bit integer.
    fn sum(&self, col: &str) -> String;

    /// Appends ` LIMIT n`.
    fn limit(&mut self, n: usize);

    /// Appends ` LIMIT n`, after skipping `offset` rows.
    fn limit_offset(&mut self, n: usize, offset: usize);
}

/// Appends a condition in dialect `d`.
pub fn write_cond(d: &mut impl Dialect, c: &Cond) {
    match c {
        Cond::True => d.push("1"),
        Cond::False => d.push("0"),
        Cond::And(v) | Cond::Or(v) => {
            let op = if matches!(c, Cond::And(_)) {
                " AND "
            } else {
                " OR "
            };
            d.push("(");
            for (i, g) in v.iter().enumerate() {
                if i > 0 {
                    d.push(op);
                }
                write_cond(d, g);
            }
            d.push(")");
        }
        Cond::Not(g) => {
            d.push("(NOT ");
            write_cond(d, g);
            d.push(")");
        }
        _ => d.primitive(c),
    }
}

/// Appends an aggregate's statement in dialect `d`: its parts' rows
/// summed by group, ordered and limited as the plan says.
pub fn write_aggregate(d: &mut impl Dialect, a: &Aggregate) {
    let sums = format!(
        "SELECT g, {} AS n, {} AS p, {} AS b FROM (",
        d.sum("n"),
        d.sum("p"),
        d.sum("b")
    );
    d.push(&sums);
    for (i, part) in a.parts.iter().enumerate() {
        if i > 0 {
            d.push(" UNION ALL ");
        }
        // The group is named `g`, so that no alias hides a column the
        // condition reads.
        let g = d.group(part.group_expr(a.group));
        match part.source {
            Source::Flows(range) => {
                d.push(&format!("SELECT {g} AS g, {} ", d.counts(false)));
                d.source_flows(range);
                write_cond(d, &part.cond);
                d.push(" GROUP BY g");
            }
            Source::Rollup { rollup, from, to } => {
                d.push(&format!("SELECT {g} AS g, {} ", d.counts(true)));
                d.source_rollup(rollup, from, to);
                write_cond(d, &part.cond);
            }
        }
    }
    d.push(") GROUP BY g ORDER BY ");
    d.push(match a.order {
        Order::Group => "g",
        Order::Desc(TopBy::Bytes) => "b DESC, g",
        Order::Desc(TopBy::Packets) => "p DESC, g",
        Order::Desc(TopBy::Flows) => "n DESC, g",
    });
    if let Some(n) = a.limit {
        d.limit(n);
    }
}

/// The order of two groups' values as the engines' SQL orders them:
/// addresses by their bytes (as stored: 4 or 16), numbers numerically,
/// text by its bytes.
pub fn cmp_groups(a: &GroupValue, b: &GroupValue) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    fn octets(a: &IpAddr) -> ([u8; 16], usize) {
        let mut b = [0u8; 16];
        match a {
            IpAddr::V4(v) => {
                b[..4].copy_from_slice(&v.octets());
                (b, 4)
            }
            IpAddr::V6(v) => (v.octets(), 16),
        }
    }
    match (a, b) {
        (GroupValue::Addr(x), GroupValue::Addr(y)) => {
            let ((x, nx), (y, ny)) = (octets(x), octets(y));
            x[..nx].cmp(&y[..ny])
        }
        (GroupValue::Num(x), GroupValue::Num(y)) => x.cmp(y),
        (GroupValue::Text(x), GroupValue::Text(y)) => x.as_bytes().cmp(y.as_bytes()),
        _ => Ordering::Equal,
    }
}

/// Rows summed apart (by an engine that reads parts itself), put in a
/// plan's order and cut to its limit, as its statement would have.
pub fn ordered(
    mut rows: Vec<(GroupValue, Totals)>,
    order: Order,
    limit: Option<usize>,
) -> Vec<(GroupValue, Totals)> {
    let cmp = |a: &(GroupValue, Totals), b: &(GroupValue, Totals)| match order {
        Order::Group => cmp_groups(&a.0, &b.0),
        Order::Desc(by) => {
            b.1.by(by)
                .cmp(&a.1.by(by))
                .then_with(|| cmp_groups(&a.0, &b.0))
        }
    };
    if let Some(n) = limit.filter(|n| *n < rows.len()) {
        if n == 0 {
            return Vec::new();
        }
        rows.select_nth_unstable_by(n - 1, cmp);
        rows.truncate(n);
    }
    rows.sort_unstable_by(cmp);
    rows
}

/// A time range as `--explain` shows it.
pub fn range_text(r: TimeRange) -> String {
    format!("[{}, {})", time_text(r.since_ns), time_text(r.until_ns))
}

/// A bound of a range as `--explain` shows it: `…` for none (or past the
/// year 2262, where an open range ends).
fn time_text(ns: Option<u64>) -> String {
    match ns {
        Some(ns) if ns > 0 && ns < 1 << 63 => vigil_proto::time::Rfc3339Nanos(ns).to_string(),
        _ => "…".into(),
    }
}

/// What each part of an aggregate reads and why, for `--explain`: the
/// roll-up parts here; an engine adds how it reads the parts over `flows`.
pub fn explain_parts(a: &Aggregate, kept: &[Rollup]) -> Vec<String> {
    let mut out = Vec::new();
    let rollups = a
        .parts
        .iter()
        .any(|p| matches!(p.source, Source::Rollup { .. }));
    for p in &a.parts {
        if let Source::Rollup { rollup, from, to } = p.source {
            out.push(format!(
                "{}: the whole minutes of [{}, {}): the filter reads only its columns and it \
                 holds the key",
                rollup.table(),
                time_text(Some(from * NS_PER_MIN)),
                time_text(Some(to * NS_PER_MIN)),
            ));
        }
    }
    if !rollups {
        out.push(match a.group {
            Group::Key(k) if !candidates(a.group).iter().any(|r| kept.contains(r)) => {
                format!(
                    "no roll-up holds the key {}: every part reads flows",
                    k.name()
                )
            }
            _ => "no roll-up answers this filter over whole minutes: every part reads flows".into(),
        });
    } else if a.parts.iter().any(|p| match p.source {
        Source::Flows(r) => r.since_ns.is_none_or(|t| t < 1 << 63),
        Source::Rollup { .. } => false,
    }) {
        out.push("the partial minutes at the range's edges read flows".into());
    }
    out
}

/// The totals of a [`count`] plan's rows.
pub fn totals(rows: &[(GroupValue, Totals)]) -> Totals {
    let mut t = Totals::default();
    for (_, r) in rows {
        t.add(*r);
    }
    t
}

/// A [`top`] plan's rows as top-N rows: addresses and ports as text,
/// protocols by name.
pub fn top_rows(key: TopKey, rows: Vec<(GroupValue, Totals)>) -> Vec<TopRow> {
    rows.into_iter()
        .map(|(g, totals)| TopRow {
            key: match (key, g) {
                (_, GroupValue::Addr(a)) => a.to_string(),
                (TopKey::Proto, GroupValue::Num(p)) => proto_name(p as u8).to_string(),
                (TopKey::App, GroupValue::Num(c)) => usize::try_from(c)
                    .ok()
                    .and_then(|c| AppProto::ALL.get(c.wrapping_sub(1)))
                    .map_or_else(|| c.to_string(), |p| p.as_str().to_string()),
                (_, GroupValue::Text(t)) => t,
                (_, GroupValue::Num(n)) => n.to_string(),
                (_, GroupValue::None) => String::new(),
            },
            totals,
        })
        .collect()
}

/// A [`series`] plan's rows as the series' non-empty intervals.
pub fn series_points(rows: Vec<(GroupValue, Totals)>) -> Vec<SeriesPoint> {
    rows.into_iter()
        .map(|(g, totals)| SeriesPoint {
            start_ns: match g {
                GroupValue::Num(n) => n,
                _ => 0,
            },
            totals,
        })
        .collect()
}

#[cfg(test)]
mod tests;
