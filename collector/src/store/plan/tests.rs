//! The planner's choices: roll-ups for whole minutes, flows at the edges,
//! conditions on either source.

use super::*;
use crate::model::query::IpRange;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(d: Dir, s: &str, len: u8) -> Filter {
    Filter::Ip(d, IpRange::cidr(ip(s), len))
}

const ALL_ROLLUPS: [Rollup; 4] = [Rollup::Src, Rollup::Dst, Rollup::DstPort, Rollup::Proto];

fn rollup_of(a: &Aggregate) -> Option<Rollup> {
    a.parts.iter().find_map(|p| match p.source {
        Source::Rollup { rollup, .. } => Some(rollup),
        Source::Flows(_) => None,
    })
}

#[test]
fn filters_on_a_roll_up_s_own_columns_are_answered_from_it() {
    let r = TimeRange::default();
    let top = |f: &Filter, k| rollup_of(&top(f, r, k, TopBy::Bytes, 10, &ALL_ROLLUPS));
    let not_host = Filter::Not(Box::new(net(Dir::Dst, "10.0.0.1", 32)));
    let f = Filter::And(vec![net(Dir::Dst, "10.0.0.0", 8), not_host]);
    assert_eq!(top(&f, TopKey::Dst), Some(Rollup::Dst));
    let f = Filter::Or(vec![net(Dir::Src, "10.0.0.1", 32), Filter::Family(6)]);
    assert_eq!(top(&f, TopKey::Src), Some(Rollup::Src));
    let f = Filter::And(vec![Filter::Proto(6), Filter::Port(Dir::Dst, 1, 1024)]);
    assert_eq!(top(&f, TopKey::DstPort), Some(Rollup::DstPort));
    let f = Filter::Not(Box::new(Filter::Or(vec![
        Filter::Proto(17),
        Filter::Proto(1),
    ])));
    assert_eq!(top(&f, TopKey::Proto), Some(Rollup::Proto));
    assert_eq!(top(&net(Dir::Dst, "10.0.0.0", 8), TopKey::Src), None);
    assert_eq!(
        top(&net(Dir::Either, "10.0.0.1", 32), TopKey::Dst),
        None,
        "either end is not a column of rollup_dst"
    );
    assert_eq!(top(&Filter::Port(Dir::Dst, 53, 53), TopKey::Dst), None);
    let f = Filter::And(vec![Filter::Proto(6), Filter::State(ConnState::S0)]);
    assert_eq!(top(&f, TopKey::Proto), None);
    assert_eq!(top(&Filter::All, TopKey::SrcPort), None);
    // Totals and series take any roll-up that counts every flow and
    // can answer the filter; an engine without one reads the flows.
    let c = count(&net(Dir::Dst, "10.0.0.0", 8), r, &ALL_ROLLUPS);
    assert_eq!(rollup_of(&c), Some(Rollup::Dst));
    let c = count(&Filter::Port(Dir::Dst, 53, 53), r, &ALL_ROLLUPS);
    assert_eq!(
        rollup_of(&c),
        None,
        "rollup_dport holds only flows with ports"
    );
    let c = count(
        &net(Dir::Src, "10.0.0.0", 8),
        r,
        &[Rollup::Dst, Rollup::Proto],
    );
    assert_eq!(rollup_of(&c), None);
    let s = series(&Filter::All, r, 90_000_000_000, &ALL_ROLLUPS).unwrap();
    assert_eq!(rollup_of(&s), None, "a step of a minute and a half");
    let s = series(&Filter::All, r, 300_000_000_000, &ALL_ROLLUPS).unwrap();
    assert_eq!(rollup_of(&s), Some(Rollup::Proto));
    assert!(series(&Filter::All, r, 999_999_999, &ALL_ROLLUPS).is_err());
}

#[test]
fn a_roll_up_answers_the_whole_minutes_and_the_flows_the_edges() {
    let m = NS_PER_MIN;
    let r = TimeRange {
        since_ns: Some(10 * m + 17),
        until_ns: Some(20 * m + 5),
    };
    let a = count(&Filter::All, r, &ALL_ROLLUPS);
    let sources: Vec<Source> = a.parts.iter().map(|p| p.source).collect();
    let span = |lo, hi| {
        Source::Flows(TimeRange {
            since_ns: Some(lo),
            until_ns: Some(hi),
        })
    };
    assert_eq!(
        sources,
        [
            Source::Rollup {
                rollup: Rollup::Proto,
                from: 11,
                to: 20
            },
            span(10 * m + 17, 11 * m),
            span(20 * m, 20 * m + 5),
        ]
    );
    // Less than one whole minute: the flows alone.
    let r = TimeRange {
        since_ns: Some(10 * m + 1),
        until_ns: Some(11 * m + 1),
    };
    let a = count(&Filter::All, r, &ALL_ROLLUPS);
    assert_eq!(a.parts.len(), 1);
    assert_eq!(a.parts[0].source, Source::Flows(r));
    // Whole minutes exactly: no edge.
    let r = TimeRange {
        since_ns: Some(10 * m),
        until_ns: Some(12 * m),
    };
    assert_eq!(count(&Filter::All, r, &ALL_ROLLUPS).parts.len(), 1);
}

#[test]
fn empty_and_and_or_fold_and_port_keys_keep_flows_with_ports() {
    assert_eq!(Cond::of_flows(&Filter::And(vec![])), Cond::True);
    assert_eq!(Cond::of_flows(&Filter::Or(vec![])), Cond::False);
    assert_eq!(
        Cond::of_rollup(&Filter::Or(vec![]), Rollup::Proto),
        Some(Cond::False)
    );
    assert_eq!(
        Cond::of_flows(&Filter::And(vec![Filter::Proto(6)])),
        Cond::Cmp(Field::Proto, Cmp::Eq, Value::Num(6))
    );
    let a = top(
        &Filter::All,
        TimeRange::default(),
        TopKey::SrcPort,
        TopBy::Flows,
        5,
        &ALL_ROLLUPS,
    );
    assert_eq!(a.parts.len(), 1);
    assert_eq!(a.parts[0].cond, Cond::And(vec![Cond::HasPorts, Cond::True]));
    assert_eq!(a.limit, Some(5));
}

#[test]
fn rows_become_top_rows_and_points() {
    let t = Totals {
        flows: 1,
        packets: 2,
        bytes: 3,
    };
    let rows = vec![(GroupValue::Num(6), t), (GroupValue::Num(17), t)];
    let top = top_rows(TopKey::Proto, rows.clone());
    assert_eq!(top[0].key, "tcp");
    assert_eq!(top_rows(TopKey::DstPort, rows.clone())[1].key, "17");
    let a = top_rows(TopKey::Src, vec![(GroupValue::Addr(ip("2001:db8::1")), t)]);
    assert_eq!(a[0].key, "2001:db8::1");
    assert_eq!(series_points(rows)[1].start_ns, 17);
    assert_eq!(
        totals(&[(GroupValue::None, t), (GroupValue::None, t)]).bytes,
        6
    );
}
