//! The query language, the planner and the stores against the reference
//! answers computed in memory (`vigil_collector::query::memory`): random
//! filters from the grammar, over random time ranges, on the corpus stored
//! in the embedded store. The same filters on ClickHouse are in
//! `clickhouse.rs`.

use std::net::IpAddr;
use std::sync::OnceLock;

use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use vigil_collector::query::{TimeRange, TopBy, TopKey, memory, parse};
use vigil_collector::store::IngestBatch;
use vigil_collector::store::prelude::*;
use vigil_collector::store::sqlite::{SqliteConfig, SqliteStore};
use vigil_proto::AppProto;
use vigil_proto::wire::ip_to_bytes;
use vigil_proto::{ConnState, FlowRecord};

use crate::util::{config, corpus_dir, corpus_files, run_bytes, run_file};

const NS_PER_MIN: u64 = 60_000_000_000;

/// The corpus as records (or, without it, one synthesized capture), in
/// the order they are stored.
pub fn corpus_records() -> Vec<FlowRecord> {
    let cfg = config(1, 256, std::time::Duration::from_secs(60));
    match corpus_dir() {
        Some(d) => corpus_files(&d)
            .iter()
            .flat_map(|f| run_file(f, &cfg).0)
            .collect(),
        None => {
            let bulk = vigil_sensor::synth::BulkConfig {
                packets: 20_000,
                flows: 1_000,
                ..vigil_sensor::synth::BulkConfig::default()
            };
            run_bytes(&bulk.to_pcap_bytes(), &cfg).0
        }
    }
}

/// Records as batches of 500 from two sensors, alternately.
pub fn corpus_batches(all: &[FlowRecord]) -> Vec<IngestBatch> {
    all.chunks(500)
        .enumerate()
        .map(|(i, chunk)| IngestBatch {
            attestation: None,
            certificate: None,
            sensor_id: if i % 2 == 0 { "s-even" } else { "s-odd" }.into(),
            seq: i as u64 / 2 + 1,
            incarnation: 1,
            flows: chunk.to_vec(),
            stats: None,
            received_ns: 1_700_000_000_000_000_000 + i as u64,
        })
        .collect()
}

/// The corpus stored in an embedded store, and the stored records in
/// storage order, each with its sensor.
pub struct Stored {
    _dir: tempfile::TempDir,
    /// The store.
    pub store: SqliteStore,
    /// What it holds.
    pub records: Vec<(String, FlowRecord)>,
}

/// The corpus in an embedded store, made once per test process.
pub fn stored_corpus() -> &'static Stored {
    static S: OnceLock<Stored> = OnceLock::new();
    S.get_or_init(|| store_corpus(SqliteConfig::default(), false))
}

/// Rows per column segment in [`stored_corpus_in_columns`]: many segments,
/// with boundaries that fall anywhere in a batch.
const SMALL_SEGMENTS: usize = 997;

/// The corpus in an embedded store whose rows are in column segments of
/// [`SMALL_SEGMENTS`] rows, but for the newest (read from SQLite), made
/// once per test process.
pub fn stored_corpus_in_columns() -> &'static Stored {
    static S: OnceLock<Stored> = OnceLock::new();
    S.get_or_init(|| {
        let cfg = SqliteConfig {
            segment_rows: Some(SMALL_SEGMENTS),
            ..SqliteConfig::default()
        };
        store_corpus(cfg, true)
    })
}

/// Commits `all` as [`corpus_batches`]; returns the stored records in
/// storage order, each with its sensor.
fn commit_all(store: &SqliteStore, all: &[FlowRecord]) -> Vec<(String, FlowRecord)> {
    let mut records = Vec::new();
    for b in corpus_batches(all) {
        store.commit(&b).unwrap();
        records.extend(b.flows.iter().map(|r| (b.sensor_id.clone(), r.clone())));
    }
    records
}

fn store_corpus(cfg: SqliteConfig, columns: bool) -> Stored {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), cfg).unwrap();
    let records = commit_all(&store, &corpus_records());
    if columns {
        let built = store.build_columns().unwrap();
        assert_eq!(built, records.len() / SMALL_SEGMENTS, "full segments only");
        assert!(
            built >= 2,
            "{} records: too few for segments",
            records.len()
        );
    }
    Stored {
        _dir: dir,
        store,
        records,
    }
}

/// What random filters are made of: values taken from the stored records,
/// so that filters select something, and a few that match nothing.
#[derive(Clone, Debug)]
pub struct Vocabulary {
    addrs: Vec<IpAddr>,
    ports: Vec<u16>,
    vlans: Vec<u16>,
    sensors: Vec<String>,
    cids: Vec<String>,
    /// `(keyword, value)` of application text fields.
    texts: Vec<(&'static str, String)>,
    first_ns: (u64, u64),
}

impl Vocabulary {
    /// Values of `records` (every tenth, and the extremes).
    pub fn of(records: &[(String, FlowRecord)]) -> Vocabulary {
        let mut v = Vocabulary {
            addrs: vec![
                "192.0.2.77".parse().unwrap(),
                "2001:db8::77".parse().unwrap(),
            ],
            ports: vec![0, 53, 80, 443, 502, 65535],
            vlans: vec![1, 4095],
            sensors: vec!["s-even".into(), "s-odd".into(), "nosuch".into()],
            cids: vec!["1:AAAAAAAAAAAAAAAAAAAAAAAAAAA=".into()],
            texts: vec![
                ("dns.qname", "nosuch.example".into()),
                ("tls.sni", "org".into()),
            ],
            first_ns: (u64::MAX, 0),
        };
        for (i, (_, r)) in records.iter().enumerate() {
            v.first_ns = (
                v.first_ns.0.min(r.first_seen_ns),
                v.first_ns.1.max(r.first_seen_ns),
            );
            if i % 10 != 0 {
                continue;
            }
            v.addrs.extend([r.src_ip, r.dst_ip]);
            v.ports.extend(r.src_port.into_iter().chain(r.dst_port));
            v.vlans.extend(r.vlan.as_slice());
            v.cids.push(r.community_id.to_string());
        }
        // Every application value (they are few), spelled as a filter word
        // can hold it, some in capitals (matching ignores case), with the
        // parts a suffix or a substring match on.
        let word = |s: &str| {
            !s.is_empty()
                && s.chars().all(|c| {
                    c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '/' | '-' | '_' | '+')
                })
        };
        for (_, r) in records {
            let Some(a) = r.app.as_deref() else { continue };
            let (name, fp) = vigil_collector::model::query::app_name_fp(a);
            let fields: &[(&'static str, &String)] = match a.proto {
                Some(AppProto::Dns) => &[("dns.qname", &name)],
                Some(AppProto::Tls | AppProto::Quic) => &[("tls.sni", &name), ("tls.ja4", &fp)],
                Some(AppProto::Http) => &[("http.host", &name)],
                Some(AppProto::Ssh) => &[("ssh.client", &name), ("ssh.hassh", &fp)],
                _ => &[],
            };
            for (k, val) in fields {
                if !word(val) || v.texts.iter().any(|(k2, v2)| k2 == k && v2 == *val) {
                    continue;
                }
                v.texts.push((k, val.to_string()));
                v.texts.push((k, val.to_uppercase()));
                if let Some((_, tail)) = val.split_once('.') {
                    v.texts.push((k, tail.to_string()));
                }
                v.texts.push((k, val.chars().take(3).collect()));
            }
        }
        if v.first_ns.0 > v.first_ns.1 {
            v.first_ns = (0, 0);
        }
        v
    }

    fn primitive(&self) -> BoxedStrategy<String> {
        let dir = || select(vec!["", "src ", "dst "]);
        let cidr = (select(self.addrs.clone()), 0u8..=128).prop_map(|(a, len)| {
            let len = if a.is_ipv4() { len % 33 } else { len };
            format!("{a}/{len}")
        });
        prop_oneof![
            (dir(), select(self.addrs.clone())).prop_map(|(d, a)| format!("{d}host {a}")),
            (dir(), cidr).prop_map(|(d, n)| format!("{d}net {n}")),
            (dir(), select(self.ports.clone())).prop_map(|(d, p)| format!("{d}port {p}")),
            (dir(), select(self.ports.clone()), 0u16..4096)
                .prop_map(|(d, p, w)| format!("{d}portrange {p}-{}", p.saturating_add(w))),
            select(vec!["tcp", "udp", "icmp", "icmp6", "sctp", "gre", "esp"])
                .prop_map(String::from),
            select(vec![0u8, 1, 2, 6, 17, 41, 47, 50, 58, 132, 255])
                .prop_map(|p| format!("proto {p}")),
            select(vec!["ip4", "ip6", "inet", "inet6"]).prop_map(String::from),
            select(self.vlans.clone()).prop_map(|v| format!("vlan {v}")),
            select(ConnState::ALL.to_vec()).prop_map(|s| format!("state {}", s.as_str())),
            (
                select(vec!["bytes", "packets"]),
                select(vec![">", "<", ">=", "<=", "="]),
                prop_oneof![0u64..200, 0u64..100_000],
            )
                .prop_map(|(c, op, n)| format!("{c} {op} {n}")),
            select(self.sensors.clone()).prop_map(|s| format!("sensor {s}")),
            select(self.cids.clone()).prop_map(|c| format!("cid {c}")),
            (
                select(AppProto::ALL.to_vec()),
                select(vec!["app ", "app = "])
            )
                .prop_map(|(p, kw)| format!("{kw}{}", p.as_str())),
            (
                select(self.texts.clone()),
                select(vec!["", "= ", "suffix ", "contains "])
            )
                .prop_map(|((k, v), op)| format!("{k} {op}{v}")),
            (
                select(vec!["ics.reads", "ics.writes", "ics.control"]),
                select(vec![">", "<", ">=", "<=", "="]),
                0u64..4,
            )
                .prop_map(|(c, op, n)| format!("{c} {op} {n}")),
        ]
        .boxed()
    }

    /// A filter from the grammar: primitives joined by every spelling of
    /// `and`, `or` and `not`, with and without parentheses, or nothing.
    pub fn filter(&self) -> BoxedStrategy<String> {
        let tree = self.primitive().prop_recursive(4, 24, 2, |inner| {
            prop_oneof![
                (
                    inner.clone(),
                    select(vec!["and", "&&", "or", "||"]),
                    inner.clone()
                )
                    .prop_map(|(a, op, b)| format!("{a} {op} {b}")),
                (inner.clone(), select(vec!["and", "or"]), inner.clone())
                    .prop_map(|(a, op, b)| format!("({a}) {op} ({b})")),
                (select(vec!["not ", "!"]), inner).prop_map(|(n, a)| format!("{n}({a})")),
            ]
        });
        prop_oneof![1 => Just(String::new()), 20 => tree].boxed()
    }

    /// A time range over the records: unbounded, or bounded at random
    /// points, some on whole minutes (the roll-ups' edges), some not.
    pub fn range(&self) -> BoxedStrategy<TimeRange> {
        let (lo, hi) = self.first_ns;
        let point = (0u64..=1000, any::<bool>()).prop_map(move |(k, whole)| {
            let t = lo.saturating_sub(NS_PER_MIN) + (hi - lo + 2 * NS_PER_MIN) / 1000 * k;
            if whole {
                t / NS_PER_MIN * NS_PER_MIN
            } else {
                t
            }
        });
        (
            proptest::option::of(point.clone()),
            proptest::option::of(point),
        )
            .prop_map(|(a, b)| match (a, b) {
                (Some(a), Some(b)) => TimeRange {
                    since_ns: Some(a.min(b)),
                    until_ns: Some(a.max(b)),
                },
                (since_ns, until_ns) => TimeRange { since_ns, until_ns },
            })
            .boxed()
    }
}

/// Every top-N key.
pub fn top_keys() -> Vec<TopKey> {
    [
        "src",
        "dst",
        "dport",
        "sport",
        "proto",
        "app",
        "dns.qname",
        "tls.sni",
        "http.host",
        "ssh.client",
        "tls.ja4",
        "ssh.hassh",
    ]
    .into_iter()
    .filter_map(TopKey::parse)
    .collect()
}

/// One question: a top-N key and metric, a series step.
pub fn shape() -> impl Strategy<Value = (TopKey, TopBy, u64)> {
    (
        select(top_keys()),
        select(vec![TopBy::Bytes, TopBy::Packets, TopBy::Flows]),
        select(vec![1u64, 60, 300, 3600, 86_400]).prop_map(|s| s * 1_000_000_000),
    )
}

/// A deterministic runner: `cases` cases, no files written.
pub fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// Checks one store against the in-memory reference for one filter.
pub fn check_against_memory(
    store: &dyn FlowQueries,
    records: &[(String, FlowRecord)],
    text: &str,
    range: TimeRange,
    (key, by, step): (TopKey, TopBy, u64),
) -> Result<(), TestCaseError> {
    let f = parse(text).map_err(|e| TestCaseError::fail(format!("{text:?}: {e}")))?;
    let ctx = format!("filter {text:?}, {range:?}");
    prop_assert_eq!(
        store.count(&f, range).unwrap(),
        memory::count(records, &f, range),
        "count, {}",
        ctx
    );
    prop_assert_eq!(
        store.top(&f, range, key, by, 10).unwrap(),
        memory::top(records, &f, range, key, by, 10),
        "top {:?} by {:?}, {}",
        key,
        by,
        ctx
    );
    prop_assert_eq!(
        store.series(&f, range, step).unwrap(),
        memory::series(records, &f, range, step),
        "series of {} s, {}",
        step / 1_000_000_000,
        ctx
    );
    // The explorer's questions in one call: each as asked alone.
    let keys = [key, TopKey::Src, TopKey::Dst];
    let (tops, series) = store
        .explore((&f, range), &keys, (by, 10), Some(step))
        .unwrap();
    for (k, rows) in keys.iter().zip(&tops) {
        prop_assert_eq!(
            rows,
            &memory::top(records, &f, range, *k, by, 10),
            "explored top {:?} by {:?}, {}",
            k,
            by,
            ctx
        );
    }
    prop_assert_eq!(tops.len(), keys.len());
    prop_assert_eq!(
        series,
        Some(memory::series(records, &f, range, step)),
        "explored series, {}",
        ctx
    );
    let got = store.flows(&f, range, 100).unwrap();
    let want = memory::flows(records, &f, range, 100);
    prop_assert_eq!(got.len(), want.len(), "flows, {}", ctx);
    // Ties in `first_seen` may come in another order at the limit.
    let key_of = |v: &[(String, FlowRecord)]| {
        let mut k: Vec<(u64, String, u64, Vec<u8>)> = v
            .iter()
            .map(|(s, r)| (r.first_seen_ns, s.clone(), r.flow_id, ip_to_bytes(r.src_ip)))
            .collect();
        k.sort();
        k
    };
    if want.len() < 100 {
        prop_assert_eq!(key_of(&got), key_of(&want), "flows, {}", ctx);
    } else {
        let times = |v: &[(String, FlowRecord)]| -> Vec<u64> {
            v.iter().map(|(_, r)| r.first_seen_ns).collect()
        };
        prop_assert_eq!(times(&got), times(&want), "flows, {}", ctx);
    }
    Ok(())
}

/// `cases` random filters of the grammar over random ranges, each with a
/// random shape, answered by `store` as computed in memory over `records`.
fn check_random_filters(store: &dyn FlowQueries, records: &[(String, FlowRecord)], cases: u32) {
    let v = Vocabulary::of(records);
    runner(cases)
        .run(&(v.filter(), v.range(), shape()), |(text, range, shape)| {
            check_against_memory(store, records, &text, range, shape)
        })
        .unwrap();
}

#[test]
fn random_filters_in_the_embedded_store_give_the_answers_computed_in_memory() {
    let s = stored_corpus();
    check_random_filters(&s.store, &s.records, 256);
}

#[test]
fn random_filters_over_column_segments_give_the_answers_computed_in_memory() {
    let s = stored_corpus_in_columns();
    let all = vigil_collector::store::plan::top(
        &vigil_collector::query::Filter::All,
        TimeRange::default(),
        TopKey::Src,
        TopBy::Bytes,
        10,
        s.store.rollups(),
    );
    let explained = s.store.explain(&all).unwrap().join("\n");
    assert!(
        explained.contains(&format!(
            "{} column segments",
            s.records.len() / SMALL_SEGMENTS
        )) && explained.contains(&format!("{} newer rows", s.records.len() % SMALL_SEGMENTS)),
        "{explained}"
    );
    assert!(
        explained.contains("addresses summed by the dictionary of the"),
        "{explained}"
    );
    check_random_filters(&s.store, &s.records, 256);
}

/// The newest rows, in no segment yet, are kept in memory between
/// queries: rows committed after a query, and a segment built from some of
/// them, change the answers as they change the store.
#[test]
fn the_newest_rows_kept_in_memory_follow_what_is_committed() {
    let dir = tempfile::tempdir().unwrap();
    let mut all = corpus_records();
    all.truncate(9_000);
    let store = SqliteStore::open(
        dir.path(),
        SqliteConfig {
            segment_rows: Some(2_000),
            ..SqliteConfig::default()
        },
    )
    .unwrap();
    let batches = corpus_batches(&all);
    let mut records = Vec::new();
    let all_time = TimeRange::default();
    let src = |records: &[(String, FlowRecord)]| {
        memory::top(
            records,
            &vigil_collector::query::Filter::All,
            all_time,
            TopKey::Src,
            TopBy::Bytes,
            10,
        )
    };
    for (i, b) in batches.iter().enumerate() {
        store.commit(b).unwrap();
        records.extend(b.flows.iter().map(|r| (b.sensor_id.clone(), r.clone())));
        if i == 3 || i == 11 {
            store.build_columns().unwrap();
        }
        if i % 3 == 0 || i == batches.len() - 1 {
            let f = vigil_collector::query::Filter::All;
            assert_eq!(
                store
                    .top(&f, all_time, TopKey::Src, TopBy::Bytes, 10)
                    .unwrap(),
                src(&records),
                "after {} batches",
                i + 1
            );
            assert_eq!(
                store.count(&f, all_time).unwrap(),
                memory::count(&records, &f, all_time)
            );
        }
    }
    assert!(store.build_columns().unwrap() > 0);
    check_random_filters(&store, &records, 16);
}

/// Retention deletes rows that segments hold: those segments are dropped
/// at once (their rows no longer counted), their ranges read from SQLite
/// until built again, and answers stay those of the rows that remain.
#[test]
fn retention_drops_the_column_segments_of_deleted_rows_and_they_are_built_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut all = corpus_records();
    all.truncate(20_250);
    let mut times: Vec<u64> = all.iter().map(|r| r.first_seen_ns).collect();
    times.sort_unstable();
    let max_age = std::time::Duration::from_secs(3600);
    // Retention deletes whole minutes before the cutoff.
    let cutoff = times[times.len() / 3] / NS_PER_MIN * NS_PER_MIN;
    let store = SqliteStore::open(
        dir.path(),
        SqliteConfig {
            segment_rows: Some(500),
            max_age: Some(max_age),
            ..SqliteConfig::default()
        },
    )
    .unwrap();
    let mut records = commit_all(&store, &all);
    let built = store.build_columns().unwrap();
    assert_eq!(built, records.len() / 500);
    let files = |d: &std::path::Path| std::fs::read_dir(d.join("columns")).unwrap().count();
    assert_eq!(files(dir.path()), built);
    let report = store
        .enforce_retention(cutoff + max_age.as_nanos() as u64)
        .unwrap();
    records.retain(|(_, r)| r.first_seen_ns >= cutoff);
    assert_eq!(report.deleted_flows as usize, all.len() - records.len());
    assert!(report.deleted_flows > 0);
    assert!(
        files(dir.path()) < built,
        "the segments of deleted rows are gone"
    );
    let check = |store: &SqliteStore| check_random_filters(store, &records, 32);
    check(&store);
    let rebuilt = store.build_columns().unwrap();
    assert!(rebuilt > 0, "the ranges retention left are built again");
    let explained = store
        .explain(&vigil_collector::store::plan::count(
            &vigil_collector::query::Filter::All,
            TimeRange::default(),
            &[],
        ))
        .unwrap()
        .join("\n");
    // "… column segments (N rows whose time may match) …; M newer rows …"
    let number_before = |marker: &str| -> usize {
        let head = &explained[..explained.find(marker).expect(marker)];
        let digits: String = head
            .chars()
            .rev()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.chars().rev().collect::<String>().parse().unwrap()
    };
    let (in_segments, newer) = (
        number_before(" rows whose time may match"),
        number_before(" newer rows"),
    );
    assert_eq!(in_segments + newer, records.len(), "{explained}");
    assert!(
        newer < 500,
        "only the newest rows outside segments: {explained}"
    );
    check(&store);
}

/// A segment file lost (a crash between its rename and the disk) or
/// damaged: its rows are read from SQLite meanwhile, and the next build
/// drops it and makes it again.
#[test]
fn a_lost_or_damaged_column_segment_is_read_from_sqlite_and_built_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut all = corpus_records();
    all.truncate(5_000);
    let store = SqliteStore::open(
        dir.path(),
        SqliteConfig {
            segment_rows: Some(500),
            ..SqliteConfig::default()
        },
    )
    .unwrap();
    let records = commit_all(&store, &all);
    assert_eq!(store.build_columns().unwrap(), records.len() / 500);
    let mut files: Vec<_> = std::fs::read_dir(dir.path().join("columns"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    std::fs::remove_file(&files[1]).unwrap();
    let bytes = std::fs::read(&files[3]).unwrap();
    std::fs::write(&files[3], &bytes[..bytes.len() / 2]).unwrap();
    let check = |store: &SqliteStore| check_random_filters(store, &records, 32);
    check(&store);
    assert_eq!(store.build_columns().unwrap(), 2, "both built again");
    assert_eq!(
        std::fs::read_dir(dir.path().join("columns"))
            .unwrap()
            .count(),
        records.len() / 500
    );
    check(&store);
}

/// Dedupe per spool incarnation, as every store must do it: a sensor whose
/// spool was lost starts at seq 1 again and is stored (one reset), an old
/// incarnation still streaming is deduplicated against its own mark, and
/// the registry shows the latest incarnation, the resets and the gaps.
pub fn check_incarnations(store: &(impl IngestStore + SensorRegistry + FlowQueries)) {
    use vigil_collector::store::CommitOutcome;
    let bulk = vigil_sensor::synth::BulkConfig {
        packets: 200,
        flows: 20,
        ..vigil_sensor::synth::BulkConfig::default()
    };
    let cfg = config(1, 256, std::time::Duration::from_secs(60));
    let recs = run_bytes(&bulk.to_pcap_bytes(), &cfg).0;
    assert!(recs.len() >= 6, "{} records", recs.len());
    let with = |inc: u64, seq: u64, i: usize| IngestBatch {
        attestation: None,
        certificate: None,
        sensor_id: "inc".into(),
        seq,
        incarnation: inc,
        flows: vec![recs[i].clone()],
        stats: None,
        received_ns: 1_700_000_000_000_000_000 + i as u64,
    };
    let stored = |gap, reset| CommitOutcome::Stored { gap, reset };
    let (a1, a2, a3) = (with(0xa, 1, 0), with(0xa, 2, 1), with(0xa, 3, 2));
    assert_eq!(store.commit(&a1).unwrap(), stored(0, false));
    assert_eq!(store.commit(&a2).unwrap(), stored(0, false));
    assert_eq!(store.commit(&a2).unwrap(), CommitOutcome::Duplicate);
    // The spool is lost: a new incarnation from seq 1, stored.
    let (b1, b2, b5) = (with(0xb, 1, 3), with(0xb, 2, 4), with(0xb, 5, 5));
    assert_eq!(store.commit(&b1).unwrap(), stored(0, true));
    assert_eq!(store.commit(&b1).unwrap(), CommitOutcome::Duplicate);
    // The old incarnation (another host with the id) goes on: its own mark.
    assert_eq!(store.commit(&a3).unwrap(), stored(0, false));
    assert_eq!(store.commit(&a1).unwrap(), CommitOutcome::Duplicate);
    assert_eq!(
        store.commit_many(&[&b2, &b5]).unwrap(),
        vec![stored(0, false), stored(2, false)]
    );
    let s = store
        .sensors()
        .unwrap()
        .into_iter()
        .find(|s| s.sensor_id == "inc")
        .expect("the sensor is registered");
    assert_eq!(
        (
            s.last_seq,
            s.incarnation,
            s.seq_resets,
            s.batches,
            s.flows,
            s.seq_gaps
        ),
        (5, 0xb, 1, 6, 6, 2),
        "{s:?}"
    );
    let flows = store
        .flows(
            &vigil_collector::query::Filter::All,
            TimeRange::default(),
            usize::MAX,
        )
        .unwrap();
    assert_eq!(
        flows.iter().filter(|(id, _)| id == "inc").count(),
        6,
        "both spools' flows stored"
    );
}

#[test]
fn the_embedded_store_dedupes_per_spool_incarnation() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), SqliteConfig::default()).unwrap();
    check_incarnations(&store);
    assert_eq!(store.sensors().unwrap()[0].duplicates, 3);
}

/// Pages of a flow query are the query's rows, in order, none twice, the
/// last short; a sink that stops ends the query.
pub fn check_pages(store: &impl FlowQueries) {
    use vigil_collector::store::plan;
    let all = store
        .flows(
            &vigil_collector::query::Filter::All,
            TimeRange::default(),
            usize::MAX,
        )
        .unwrap();
    assert!(all.len() > 2_500, "{} records", all.len());
    let p = plan::select(
        &vigil_collector::query::Filter::All,
        TimeRange::default(),
        all.len() - 7,
    );
    let mut pages = Vec::new();
    store
        .select_pages(&p, 1000, &mut |page| {
            pages.push(page);
            true
        })
        .unwrap();
    assert!(pages[..pages.len() - 1].iter().all(|p| p.len() == 1000));
    let joined: Vec<_> = pages.into_iter().flatten().collect();
    assert_eq!(joined.len(), all.len() - 7);
    assert!(
        joined == all[..all.len() - 7],
        "the pages are the query's rows, in order"
    );
    let mut taken = 0;
    store
        .select_pages(&p, 1000, &mut |page| {
            taken += page.len();
            false
        })
        .unwrap();
    assert_eq!(taken, 1000, "a sink that stops ends the query");
}

#[test]
fn flow_queries_come_in_pages_from_the_embedded_store() {
    check_pages(&stored_corpus().store);
}

/// Detection over stored flows, as every store must serve it: the real
/// spoofed SYN flood committed, `hunt` finds its alert and stores it with
/// evidence that names stored flows; a second hunt finds it stored; a
/// fresh engine's `rebuild` continues it rather than raising it again.
pub fn check_hunt(store: &dyn Store) {
    use std::sync::Arc;
    use std::time::Duration;

    use vigil_collector::detect::config::{Criticality, DetectConfig, ProtectedSection};
    use vigil_collector::detect::{AlertKind, Engine};
    use vigil_collector::hunt::{hunt, rebuild};
    let Some(dir) = corpus_dir() else { return };
    let cfg = config(1, 256, std::time::Duration::from_secs(60));
    let recs = run_file(&dir.join("stopddos__pkt.TCP.synflood.spoofed.pcap"), &cfg).0;
    for (i, chunk) in recs.chunks(2048).enumerate() {
        store
            .commit(&IngestBatch {
                attestation: None,
                certificate: None,
                sensor_id: "edge".into(),
                seq: i as u64 + 1,
                incarnation: 3,
                flows: chunk.to_vec(),
                stats: None,
                received_ns: 1_700_000_000_000_000_000 + i as u64,
            })
            .unwrap();
    }
    let detect = Arc::new(
        DetectConfig::with_assets(&[ProtectedSection {
            name: "web".into(),
            cidrs: vec!["10.10.10.10/32".into()],
            sector: "test".into(),
            criticality: Criticality::High,
            ..ProtectedSection::default()
        }])
        .unwrap(),
    );
    let skew = Duration::from_secs(86_400);
    let first = hunt(store, detect.clone(), skew, TimeRange::default(), false).unwrap();
    assert_eq!(first.flows, recs.len() as u64);
    assert!(first.known.is_empty());
    let flood = first
        .new
        .iter()
        .find(|a| a.kind == AlertKind::SynFlood)
        .expect("the flood found");
    let stored = store.alert(flood.id).unwrap().expect("stored");
    assert!(!stored.evidence.is_empty());
    assert_eq!(
        store.evidence_flows(&stored.evidence).unwrap().len(),
        stored.evidence.len(),
        "its evidence names stored flows"
    );
    let again = hunt(store, detect.clone(), skew, TimeRange::default(), false).unwrap();
    assert!(again.new.is_empty(), "{:?}", again.new);
    assert_eq!(again.known.len(), first.new.len());
    let mut engine = Engine::new(detect.clone(), store.max_alert_id().unwrap() + 1);
    let r = rebuild(store, &mut engine, detect.rebuild_lookback()).unwrap();
    assert!(r.new.is_empty(), "{:?}", r.new);
    assert!(r.continues.values().any(|id| *id == flood.id), "{r:?}");
    // The rebuilt engine's next findings of the flood update the stored
    // alert: its id, not an opening.
    let more = engine.observe("edge", &recs[recs.len() - 256..]);
    assert!(
        more.iter().any(|u| u.alert.id == flood.id && !u.opened),
        "{:?}",
        more.iter()
            .map(|u| (u.alert.id, u.opened))
            .collect::<Vec<_>>()
    );
}

#[test]
fn the_embedded_store_serves_detection_over_stored_flows() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), SqliteConfig::default()).unwrap();
    check_hunt(&store);
}
