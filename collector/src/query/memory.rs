//! The analysts' questions answered over records in memory, by
//! [`Filter::matches`] and plain loops: the reference every store's answers
//! are tested against (the planner and SQL of both engines against this).
//!
//! Records are `(sensor id, record)`, as the stores return them. Ties in a
//! top-N are broken as the stores break them: by the key's stored bytes
//! (an address's 4 or 16 bytes, a port or protocol number).

use std::collections::BTreeMap;

use vigil_proto::wire::ip_to_bytes;
use vigil_proto::{FlowRecord, proto_name};

use crate::model::query::{
    Filter, SeriesPoint, TimeRange, TopBy, TopKey, TopRow, Totals, app_name_fp,
};
use crate::store::plan::app_code;

fn matching<'a>(
    records: &'a [(String, FlowRecord)],
    filter: &'a Filter,
    range: TimeRange,
) -> impl Iterator<Item = &'a (String, FlowRecord)> {
    records
        .iter()
        .filter(move |(s, r)| range.contains(r.first_seen_ns) && filter.matches(r, s))
}

fn one(r: &FlowRecord) -> Totals {
    Totals {
        flows: 1,
        packets: r.packets(),
        bytes: r.bytes(),
    }
}

/// The records matching `filter` in `range`, by `first_seen` (stable), at
/// most `limit`.
pub fn flows(
    records: &[(String, FlowRecord)],
    filter: &Filter,
    range: TimeRange,
    limit: usize,
) -> Vec<(String, FlowRecord)> {
    let mut v: Vec<_> = matching(records, filter, range).cloned().collect();
    v.sort_by_key(|(_, r)| r.first_seen_ns);
    v.truncate(limit);
    v
}

/// Totals over the records matching `filter` in `range`.
pub fn count(records: &[(String, FlowRecord)], filter: &Filter, range: TimeRange) -> Totals {
    let mut t = Totals::default();
    for (_, r) in matching(records, filter, range) {
        t.add(one(r));
    }
    t
}

/// The `limit` largest groups by `key`, ranked by `by`, ties by the key's
/// stored bytes.
pub fn top(
    records: &[(String, FlowRecord)],
    filter: &Filter,
    range: TimeRange,
    key: TopKey,
    by: TopBy,
    limit: usize,
) -> Vec<TopRow> {
    let mut m: BTreeMap<Vec<u8>, (String, Totals)> = BTreeMap::new();
    for (_, r) in matching(records, filter, range) {
        let (sort, name) = match key {
            TopKey::Src => (ip_to_bytes(r.src_ip), r.src_ip.to_string()),
            TopKey::Dst => (ip_to_bytes(r.dst_ip), r.dst_ip.to_string()),
            TopKey::DstPort | TopKey::SrcPort => {
                let p = if key == TopKey::DstPort {
                    r.dst_port
                } else {
                    r.src_port
                };
                let Some(p) = p else { continue };
                (p.to_be_bytes().to_vec(), p.to_string())
            }
            TopKey::Proto => (vec![r.proto], proto_name(r.proto).to_string()),
            TopKey::App => {
                let Some(p) = r.app.as_ref().and_then(|a| a.proto) else {
                    continue;
                };
                (vec![app_code(Some(p)) as u8], p.as_str().to_string())
            }
            TopKey::Text(t) => {
                let Some(a) = r
                    .app
                    .as_deref()
                    .filter(|a| a.proto.is_some_and(|p| t.protos().contains(&p)))
                else {
                    continue;
                };
                let (name, fp) = app_name_fp(a);
                let v = if t.is_name() { name } else { fp };
                if v.is_empty() {
                    continue;
                }
                (v.as_bytes().to_vec(), v)
            }
        };
        m.entry(sort)
            .or_insert_with(|| (name, Totals::default()))
            .1
            .add(one(r));
    }
    let mut v: Vec<_> = m.into_iter().collect();
    // Stable: equal totals stay in key order.
    v.sort_by_key(|e| std::cmp::Reverse(e.1.1.by(by)));
    v.into_iter()
        .take(limit)
        .map(|(_, (key, totals))| TopRow { key, totals })
        .collect()
}

/// Totals per interval of `step_ns` of the records matching `filter` in
/// `range`: the intervals that hold flows, oldest first.
pub fn series(
    records: &[(String, FlowRecord)],
    filter: &Filter,
    range: TimeRange,
    step_ns: u64,
) -> Vec<SeriesPoint> {
    let mut m: BTreeMap<u64, Totals> = BTreeMap::new();
    for (_, r) in matching(records, filter, range) {
        let start = r.first_seen_ns / step_ns * step_ns;
        m.entry(start).or_default().add(one(r));
    }
    m.into_iter()
        .map(|(start_ns, totals)| SeriesPoint { start_ns, totals })
        .collect()
}
