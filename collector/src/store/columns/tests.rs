//! Column segments: the file format read back, damaged files refused, and
//! scans (conditions, groups, time ranges, top-N over partitions) over a
//! segment made here.

use std::net::IpAddr;

use super::*;
use crate::model::query::{Cmp, TextOp, TimeRange, TopBy, Totals};
use crate::store::StoreError;
use crate::store::plan::{Cond, Field, GroupExpr, GroupValue, Order, Value};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Rows of every kind a segment holds: both families, flows with and
/// without ports, names, fingerprints, ICS counts, VLANs, big counters.
/// Source, destination, responder port, bytes, name, ICS counts, VLANs.
type Row = (
    IpAddr,
    IpAddr,
    Option<u16>,
    u64,
    &'static str,
    [u64; 3],
    u64,
);

fn rows() -> Vec<Row> {
    vec![
        (
            ip("10.0.0.2"),
            ip("192.0.2.1"),
            Some(53),
            1_000,
            "example.org",
            [0; 3],
            0,
        ),
        (
            ip("10.0.0.1"),
            ip("192.0.2.1"),
            Some(443),
            1 << 40,
            "",
            [0; 3],
            7,
        ),
        (
            ip("2001:db8::1"),
            ip("2001:db8::2"),
            None,
            64,
            "",
            [2, 1, 0],
            5 | 9 << 12,
        ),
        (
            ip("10.0.0.2"),
            ip("::1"),
            Some(502),
            3,
            "www.example.org",
            [0, 0, 3],
            0,
        ),
    ]
}

fn build(dir: &Path, lo: i64) -> PathBuf {
    let mut b = SegmentBuilder::new();
    for (i, (s, d, port, bytes, name, ics, vlan)) in rows().into_iter().enumerate() {
        b.push(&ColumnRow {
            rowid: lo + i as i64 * 2,
            first_ns: 1_000 + i as u64,
            src: s,
            dst: d,
            src_port: port.map(|_| 40_000),
            dst_port: port,
            proto: if port.is_some() { 6 } else { 58 },
            state: i as u8,
            packets: i as u64 + 1,
            bytes,
            sensor: 1 + i as u64 % 2,
            community_id: &[i as u8; 20],
            vlan,
            app_proto: u8::from(!name.is_empty()),
            app_name: name,
            app_fp: if i == 1 {
                "t13d1516h2_8daaf6152771_02713d6af862"
            } else {
                ""
            },
            ics,
        });
    }
    let path = dir.join("seg.col");
    b.write(&path, lo, lo + 10).unwrap();
    path
}

#[test]
fn a_segment_reads_back_what_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let seg = Segment::open(&build(dir.path(), 100)).unwrap();
    assert_eq!((seg.rows, seg.lo, seg.hi), (4, 100, 110));
    assert_eq!((seg.min_first, seg.max_first), (1_000, 1_003));
    let mut v = Vec::new();
    seg.nums(Col::Row, &mut v).unwrap();
    assert_eq!(v, [0, 2, 4, 6]);
    seg.nums(Col::Bytes, &mut v).unwrap();
    assert_eq!(v, [1_000, 1 << 40, 64, 3], "8-byte widths");
    seg.nums(Col::DstPort, &mut v).unwrap();
    assert_eq!(v, [53, 443, 0, 502]);
    seg.nums(Col::HasPorts, &mut v).unwrap();
    assert_eq!(v, [1, 1, 0, 1]);
    seg.nums(Col::Vlan, &mut v).unwrap();
    assert_eq!(v, [0, 7, 5 | 9 << 12, 0]);
    let src = seg.addrs(Col::SrcDict).unwrap();
    assert_eq!(
        src.iter().map(|k| k.addr()).collect::<Vec<_>>(),
        [ip("10.0.0.1"), ip("10.0.0.2"), ip("2001:db8::1")],
        "IPv4 first, each family ascending"
    );
    seg.nums(Col::Src, &mut v).unwrap();
    assert_eq!(v, [1, 0, 2, 1]);
    let names = seg.texts(Col::AppNameDict).unwrap();
    assert_eq!(names, ["", "example.org", "www.example.org"]);
    seg.nums(Col::AppName, &mut v).unwrap();
    assert_eq!(v, [1, 0, 0, 2]);
    assert_eq!(seg.ics().unwrap(), [(2, [2, 1, 0]), (3, [0, 0, 3])]);
    seg.nums(Col::CidPrefix, &mut v).unwrap();
    assert_eq!(v[3], cid_prefix(&[3; 20]));
}

#[test]
fn damaged_segments_are_refused_with_their_path_and_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = build(dir.path(), 0);
    let good = std::fs::read(&path).unwrap();
    // Every truncation, and a flipped byte at every offset of the header
    // and directory: refused or read, never a panic.
    for n in 0..good.len() {
        std::fs::write(&path, &good[..n]).unwrap();
        let e = Segment::open(&path).expect_err("a truncated segment");
        assert!(e.to_string().contains("seg.col"), "{e}");
    }
    for i in 0..HEADER + Col::COUNT * DIR_ENTRY {
        let mut bad = good.clone();
        bad[i] ^= 0x5a;
        std::fs::write(&path, &bad).unwrap();
        if let Ok(seg) = Segment::open(&path) {
            for c in Col::ALL {
                let mut v = Vec::new();
                let _ = seg.nums(c, &mut v);
                let _ = seg.addrs(c);
                let _ = seg.texts(c);
            }
            let _ = seg.ics();
        }
    }
    std::fs::write(
        &path,
        b"not a segment at all, but long enough to hold a header....",
    )
    .unwrap();
    let e = Segment::open(&path).unwrap_err();
    assert!(e.to_string().contains("magic"), "{e}");
}

/// Lookups as a store answers them: sensor 1 is "a", 2 is "b"; every
/// Community ID is its row's.
struct Lookups;

impl Verify for Lookups {
    fn sensor_ids(&self, op: Cmp, name: &str) -> Result<Vec<u64>, StoreError> {
        Ok([(1, "a"), (2, "b")]
            .into_iter()
            .filter(|(_, n)| op == Cmp::Eq && *n == name)
            .map(|(i, _)| i)
            .collect())
    }

    fn rows_with_cid(&self, rowids: &[i64], cid: &[u8]) -> Result<Vec<i64>, StoreError> {
        Ok(rowids
            .iter()
            .copied()
            .filter(|r| cid == [(*r / 2) as u8; 20])
            .collect())
    }
}

fn scan(cond: Cond, group: GroupExpr, range: TimeRange) -> Vec<(GroupValue, Totals)> {
    let dir = tempfile::tempdir().unwrap();
    let seg = Segment::open(&build(dir.path(), 0)).unwrap();
    let compiled = Compiled::new(&cond, group, &Lookups).unwrap().unwrap();
    Scan {
        compiled: &compiled,
        ranges: vec![range],
        verify: &Lookups,
        index: None,
    }
    .run(&[seg], Vec::new(), Order::Group, None, 2)
    .unwrap()
}

fn flows_of(cond: Cond) -> u64 {
    scan(cond, GroupExpr::Zero, TimeRange::default())
        .first()
        .map_or(0, |r| r.1.flows)
}

#[test]
fn conditions_select_the_rows_they_name() {
    let bytes = |b: &[u8]| Value::Bytes(b.to_vec());
    let net10 = Cond::Range(
        Field::SrcIp,
        bytes(&[10, 0, 0, 0]),
        bytes(&[10, 255, 255, 255]),
    );
    assert_eq!(flows_of(net10.clone()), 3);
    assert_eq!(flows_of(Cond::Not(Box::new(net10))), 1);
    assert_eq!(flows_of(Cond::AddrLen(Field::DstIp, 16)), 2);
    assert_eq!(flows_of(Cond::HasPorts), 3);
    let ports = Cond::Range(Field::DstPort, Value::Num(0), Value::Num(500));
    assert_eq!(flows_of(ports), 2, "a flow without ports is out");
    assert_eq!(flows_of(Cond::Vlan(9)), 1, "the inner id");
    assert_eq!(flows_of(Cond::Vlan(7)), 1);
    let sensor = Cond::Cmp(Field::Sensor, Cmp::Eq, Value::Text("b".into()));
    assert_eq!(flows_of(sensor), 2);
    let suffix = Cond::Text(Field::AppName, TextOp::Suffix, "example.org".into());
    assert_eq!(flows_of(suffix), 2);
    let empty = Cond::Cmp(Field::AppName, Cmp::Eq, Value::Text(String::new()));
    assert_eq!(flows_of(empty), 2);
    let writes = Cond::Cmp(Field::IcsWrites, Cmp::Gt, Value::Num(0));
    assert_eq!(flows_of(writes), 1);
    let no_control = Cond::Cmp(Field::IcsControl, Cmp::Eq, Value::Num(0));
    assert_eq!(flows_of(no_control), 3, "rows without ICS counts are 0");
    let cid = Cond::Cmp(Field::CommunityId, Cmp::Eq, Value::Bytes(vec![2; 20]));
    assert_eq!(flows_of(cid), 1);
    let big = Cond::Cmp(Field::Bytes, Cmp::Ge, Value::Num(1 << 40));
    assert_eq!(flows_of(big), 1);
    let or = Cond::Or(vec![
        Cond::Cmp(Field::Proto, Cmp::Eq, Value::Num(58)),
        Cond::Cmp(Field::Packets, Cmp::Le, Value::Num(1)),
    ]);
    assert_eq!(flows_of(or), 2);
}

#[test]
fn groups_and_time_ranges() {
    let by_src = scan(
        Cond::True,
        GroupExpr::Field(Field::SrcIp),
        TimeRange::default(),
    );
    let keys: Vec<_> = by_src.iter().map(|r| (r.0.clone(), r.1.flows)).collect();
    assert_eq!(
        keys,
        [
            (GroupValue::Addr(ip("10.0.0.1")), 1),
            (GroupValue::Addr(ip("10.0.0.2")), 2),
            (GroupValue::Addr(ip("2001:db8::1")), 1),
        ]
    );
    let range = TimeRange {
        since_ns: Some(1_001),
        until_ns: Some(1_003),
    };
    let by_port = scan(Cond::HasPorts, GroupExpr::Field(Field::DstPort), range);
    assert_eq!(
        by_port,
        [(
            GroupValue::Num(443),
            Totals {
                flows: 1,
                packets: 2,
                bytes: 1 << 40
            }
        )]
    );
    let series = scan(
        Cond::True,
        GroupExpr::Interval {
            of: Field::FirstNs,
            per: 2,
            step: 2,
        },
        TimeRange::default(),
    );
    let starts: Vec<_> = series.iter().map(|r| (r.0.clone(), r.1.flows)).collect();
    assert_eq!(
        starts,
        [(GroupValue::Num(1_000), 2), (GroupValue::Num(1_002), 2)]
    );
}

#[test]
fn a_top_n_over_partitions_keeps_ties_in_key_order() {
    let dir = tempfile::tempdir().unwrap();
    let seg = Segment::open(&build(dir.path(), 0)).unwrap();
    let compiled = Compiled::new(&Cond::True, GroupExpr::Field(Field::DstIp), &Lookups)
        .unwrap()
        .unwrap();
    let s = Scan {
        compiled: &compiled,
        ranges: vec![TimeRange::default()],
        verify: &Lookups,
        index: None,
    };
    // Rows from elsewhere join the segment's; by flows, 192.0.2.1 leads
    // with 2 + 1, and the ties of 1 come in address order.
    let extra = vec![(
        GroupValue::Addr(ip("192.0.2.1")),
        Totals {
            flows: 1,
            packets: 1,
            bytes: 1,
        },
    )];
    let rows = s
        .run(
            std::slice::from_ref(&seg),
            extra,
            Order::Desc(TopBy::Flows),
            Some(2),
            2,
        )
        .unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| (r.0.clone(), r.1.flows))
            .collect::<Vec<_>>(),
        [
            (GroupValue::Addr(ip("192.0.2.1")), 3),
            (GroupValue::Addr(ip("::1")), 1),
        ]
    );
}

/// `n` segments of 500 random rows each (row ids and times ascending
/// across them): sources from 300 IPv4 and 20 IPv6 addresses and
/// destinations from 40, so that segments share addresses and each brings
/// some of its own.
fn random_segments(dir: &Path, n: usize, seed: u64) -> Vec<Segment> {
    let mut x = seed | 1;
    let mut next = move |m: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m
    };
    let mut out = Vec::new();
    for s in 0..n {
        let mut b = SegmentBuilder::new();
        let lo = s as i64 * 1_000;
        for i in 0..500 {
            let src = match next(16) {
                0 => IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, next(20) as u16]),
                _ => std::net::Ipv4Addr::from(0x0a00_0000 + next(300) as u32 * 7 + s as u32 * 3)
                    .into(),
            };
            let dst = std::net::Ipv4Addr::from(0xc000_0200 + next(40) as u32).into();
            b.push(&ColumnRow {
                rowid: lo + i,
                first_ns: lo as u64 * 10 + i as u64,
                src,
                dst,
                src_port: Some(40_000),
                dst_port: Some([22, 80, 443, 502][next(4) as usize]),
                proto: 6,
                state: 0,
                packets: 1 + next(50),
                bytes: 40 + next(100_000),
                sensor: 1,
                community_id: &[0; 20],
                vlan: 0,
                app_proto: 0,
                app_name: "",
                app_fp: "",
                ics: [0; 3],
            });
        }
        let path = dir.join(format!("{s}.col"));
        b.write(&path, lo, lo + 500).unwrap();
        out.push(Segment::open(&path).unwrap());
    }
    out
}

#[test]
fn an_address_index_kept_up_to_date_equals_one_built_anew_and_groups_as_partitions_do() {
    let dir = tempfile::tempdir().unwrap();
    let segs = random_segments(dir.path(), 5, 7);
    for (c, field) in [(Col::Src, Field::SrcIp), (Col::Dst, Field::DstIp)] {
        // Added in two steps (the first addresses renumbered) and built at
        // once: the same dictionary and maps.
        let first = AddrIndex::default()
            .updated(&segs[..2], c)
            .unwrap()
            .unwrap();
        let ix = first.updated(&segs, c).unwrap().unwrap();
        let anew = AddrIndex::default().updated(&segs, c).unwrap().unwrap();
        assert_eq!(ix.len(), anew.len());
        assert!((0..ix.len()).all(|i| ix.key(i) == anew.key(i)));
        assert!((1..ix.len()).all(|i| ix.key(i - 1) < ix.key(i)));
        for s in &segs {
            assert_eq!(ix.map(s), anew.map(s));
            let dict = s
                .addrs(if c == Col::Src {
                    Col::SrcDict
                } else {
                    Col::DstDict
                })
                .unwrap();
            let map = ix.map(s).unwrap();
            assert!(dict.iter().zip(map).all(|(k, g)| ix.key(*g as usize) == *k));
        }
        assert_eq!(
            ix.entries(),
            segs.iter().map(|s| ix.map(s).unwrap().len()).sum::<usize>()
        );
        // Dropping most segments builds it anew, without their addresses.
        let fewer = ix.updated(&segs[4..], c).unwrap().unwrap();
        assert_eq!(
            fewer.len(),
            segs[4]
                .addr_dict(dict_col(c))
                .map(|d| d.0.len() + d.1.len())
                .unwrap()
        );
        assert!(fewer.map(&segs[0]).is_none());

        let extra = vec![
            (
                GroupValue::Addr(ix.key(3).addr()),
                Totals {
                    flows: 9,
                    packets: 9,
                    bytes: 1 << 30,
                },
            ),
            (
                GroupValue::Addr(ip("198.51.100.1")),
                Totals {
                    flows: 1,
                    packets: 2,
                    bytes: 3,
                },
            ),
        ];
        let dport = Cond::Range(Field::DstPort, Value::Num(80), Value::Num(80));
        let cut = TimeRange {
            since_ns: Some(12_345),
            until_ns: Some(33_333),
        };
        for cond in [Cond::True, dport] {
            for range in [TimeRange::default(), cut] {
                let compiled = Compiled::new(&cond, GroupExpr::Field(field), &Lookups)
                    .unwrap()
                    .unwrap();
                for (order, limit) in [
                    (Order::Group, None),
                    (Order::Desc(TopBy::Bytes), Some(5)),
                    (Order::Desc(TopBy::Flows), Some(3)),
                    (Order::Desc(TopBy::Packets), Some(10_000)),
                ] {
                    let run = |index| {
                        let s = Scan {
                            compiled: &compiled,
                            ranges: vec![range],
                            verify: &Lookups,
                            index,
                        };
                        if index.is_some() && range == TimeRange::default() {
                            assert!(s.index_for(&segs).is_some(), "the index is used");
                        }
                        s.run(&segs, extra.clone(), order, limit, 2).unwrap()
                    };
                    let (with, without) = (run(Some(&ix)), run(None));
                    assert!(!with.is_empty());
                    assert_eq!(
                        with, without,
                        "{c:?} {cond:?} {range:?} {order:?} {limit:?}"
                    );
                }
            }
        }
    }
}

fn dict_col(c: Col) -> Col {
    if c == Col::Src {
        Col::SrcDict
    } else {
        Col::DstDict
    }
}

#[test]
fn several_scans_in_one_pass_answer_as_each_alone() {
    let dir = tempfile::tempdir().unwrap();
    let segs = random_segments(dir.path(), 4, 11);
    let ix = AddrIndex::default()
        .updated(&segs, Col::Src)
        .unwrap()
        .unwrap();
    let ssh = Cond::Range(Field::DstPort, Value::Num(22), Value::Num(22));
    let some = TimeRange {
        since_ns: Some(5_000),
        until_ns: Some(25_000),
    };
    let plans = [
        (
            Cond::True,
            GroupExpr::Field(Field::SrcIp),
            TimeRange::default(),
            Order::Desc(TopBy::Bytes),
            Some(10),
        ),
        (
            ssh.clone(),
            GroupExpr::Field(Field::SrcIp),
            some,
            Order::Desc(TopBy::Flows),
            Some(4),
        ),
        (
            ssh.clone(),
            GroupExpr::Field(Field::DstIp),
            TimeRange::default(),
            Order::Group,
            None,
        ),
        (
            Cond::True,
            GroupExpr::Field(Field::DstPort),
            some,
            Order::Desc(TopBy::Packets),
            Some(2),
        ),
        (
            ssh,
            GroupExpr::Interval {
                of: Field::FirstNs,
                per: 1_000,
                step: 1_000,
            },
            some,
            Order::Group,
            None,
        ),
        (
            Cond::True,
            GroupExpr::Zero,
            TimeRange::default(),
            Order::Group,
            Some(0),
        ),
    ];
    let compiled: Vec<Compiled> = plans
        .iter()
        .map(|(c, g, ..)| Compiled::new(c, *g, &Lookups).unwrap().unwrap())
        .collect();
    let scans: Vec<Scan<'_>> = plans
        .iter()
        .zip(&compiled)
        .map(|((_, _, r, ..), c)| Scan {
            compiled: c,
            ranges: vec![*r],
            verify: &Lookups,
            index: c.addr_group().filter(|c| *c == Col::Src).map(|_| &ix),
        })
        .collect();
    let jobs = scans
        .iter()
        .zip(&plans)
        .map(|(s, (.., order, limit))| Job {
            scan: s,
            extra: Vec::new(),
            order: *order,
            limit: *limit,
        })
        .collect();
    let together = Scan::run_many(jobs, &segs, 2).unwrap();
    for ((s, (.., order, limit)), got) in scans.iter().zip(&plans).zip(&together) {
        let alone = s.run(&segs, Vec::new(), *order, *limit, 1).unwrap();
        assert_eq!(*got, alone);
        assert_eq!(got.is_empty(), *limit == Some(0));
    }
}

#[test]
fn a_listing_over_many_segments_finds_the_first_rows() {
    let dir = tempfile::tempdir().unwrap();
    let mut segs = random_segments(dir.path(), 6, 5);
    // Listed in another order than their times.
    segs.reverse();
    let ssh = Cond::Range(Field::DstPort, Value::Num(22), Value::Num(22));
    for cond in [Cond::True, ssh] {
        let compiled = Compiled::rows(&cond, &Lookups).unwrap().unwrap();
        let s = Scan {
            compiled: &compiled,
            ranges: vec![TimeRange::default()],
            verify: &Lookups,
            index: None,
        };
        let every = s.rows(&segs, usize::MAX, 1).unwrap();
        for k in [0, 1, 7, 499, 500, 501, 1_300, 5_000] {
            // At least the first k, in order (a caller takes k of them).
            let got = s.rows(&segs, k, 2).unwrap();
            let n = k.min(every.len());
            assert!(got.len() >= n, "k = {k}");
            assert_eq!(got[..n], every[..n], "k = {k}");
        }
    }
}
