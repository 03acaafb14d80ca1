//! The query language against the stores: every filter parsed, planned
//! and run in SQL gives the records the same filter selects in memory.

use super::*;
use crate::model::query::TimeRange;
use crate::model::query::{SeriesPoint, Totals};
use crate::store::prelude::*;
use crate::testutil::filled;

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

fn pt(start_ns: u64, flows: u64) -> SeriesPoint {
    SeriesPoint {
        start_ns,
        totals: Totals {
            flows,
            packets: 2 * flows,
            bytes: 100 * flows,
        },
    }
}

#[test]
fn series_gaps_are_zero_filled() {
    let s = 60_000_000_000;
    let got = dense_series(&[pt(s, 3), pt(4 * s, 1)], TimeRange::default(), s).unwrap();
    let flows: Vec<_> = got
        .iter()
        .map(|p| (p.start_ns / s, p.totals.flows))
        .collect();
    assert_eq!(flows, [(1, 3), (2, 0), (3, 0), (4, 1)]);
    // A range widens the series to its bounds: the interval holding
    // `since` to the one holding the last instant before `until`.
    let r = TimeRange {
        since_ns: Some(s / 2),
        until_ns: Some(6 * s),
    };
    let got = dense_series(&[pt(s, 3), pt(4 * s, 1)], r, s).unwrap();
    let flows: Vec<_> = got
        .iter()
        .map(|p| (p.start_ns / s, p.totals.flows))
        .collect();
    assert_eq!(flows, [(0, 0), (1, 3), (2, 0), (3, 0), (4, 1), (5, 0)]);
    assert!(
        dense_series(&[], TimeRange::default(), s)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn series_length_and_step_are_bounded() {
    let r = TimeRange {
        since_ns: Some(0),
        until_ns: Some(86_400_000_000_000 * 30),
    };
    let e = dense_series(&[], r, 1_000_000_000).unwrap_err();
    assert!(e.contains("2592000 intervals"), "{e}");
    assert!(dense_series(&[], r, 3_600_000_000_000).is_ok());
    assert!(check_step(999_999_999).unwrap_err().contains("at least 1s"));
}
