//! The ClickHouse store against a real server: the one named by
//! `VIGIL_CLICKHOUSE_URL`, or a `clickhouse-server` (Debian's package) the
//! test starts on loopback with a data directory of its own. Without
//! either, the tests print why and pass.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use vigil_collector::detect::config::Criticality;
use vigil_collector::detect::{Alert, AlertKind, AlertUpdate, EvidenceRef, Severity};
use vigil_collector::query::{TimeRange, TopBy, TopKey, parse};
use vigil_collector::store::clickhouse::{ClickHouseConfig, ClickHouseStore};
use vigil_collector::store::prelude::*;
use vigil_collector::store::{AlertQuery, CommitOutcome, IngestBatch};
use vigil_proto::FlowRecord;

use crate::util::{corpus_dir, corpus_files};

struct Server {
    url: String,
    /// Its HTTPS interface and the CA of its certificate (for `localhost`),
    /// when this harness started it.
    https: Option<(String, PathBuf)>,
    /// The watchdog shell (which owns the server).
    _child: Option<Child>,
    /// The server's directory, removed by the watchdog.
    _dir: PathBuf,
}

fn answers(url: &str) -> bool {
    vigil_collector::store::clickhouse::http::Endpoint::parse(url, "default", "")
        .and_then(|e| e.query("SELECT 1"))
        .is_ok()
}

fn start_server() -> Result<Server, String> {
    if let Ok(url) = std::env::var("VIGIL_CLICKHOUSE_URL") {
        return if answers(&url) {
            Ok(Server {
                url,
                https: None,
                _child: None,
                _dir: PathBuf::new(),
            })
        } else {
            Err(format!("VIGIL_CLICKHOUSE_URL={url} does not answer"))
        };
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?.keep();
    let port = |_: u8| {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| e.to_string())
    };
    let (http, tcp, https) = (port(0)?, port(1)?, port(2)?);
    write_certificates(&dir)?;
    write_config(&dir, http, tcp, https)?;
    let child = launch(&dir)?;
    let url = format!("http://127.0.0.1:{http}");
    wait_answering(&url)?;
    Ok(Server {
        url,
        https: Some((format!("https://localhost:{https}"), dir.join("ca.pem"))),
        _child: Some(child),
        _dir: dir,
    })
}

fn clickhouse_bin() -> Result<PathBuf, String> {
    ["/usr/sbin/clickhouse-server", "/usr/bin/clickhouse-server"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| {
            "clickhouse-server is not installed (Debian package clickhouse-server; .ci/run installs it)"
                .to_string()
        })
}

/// A CA and the server's certificate for `localhost`, signed by it.
fn write_certificates(dir: &std::path::Path) -> Result<(), String> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let e = |e: rcgen::Error| e.to_string();
    let ca_key = KeyPair::generate().map_err(e)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "vigil ClickHouse test CA");
    let ca_cert = ca.self_signed(&ca_key).map_err(e)?;
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = KeyPair::generate().map_err(e)?;
    let mut p = CertificateParams::new(vec!["localhost".to_string()]).map_err(e)?;
    p.distinguished_name.push(DnType::CommonName, "localhost");
    let cert = p.signed_by(&key, &issuer).map_err(e)?;
    for (name, pem) in [
        ("ca.pem", ca_cert.pem()),
        ("server.pem", cert.pem()),
        ("server.key", key.serialize_pem()),
    ] {
        std::fs::write(dir.join(name), pem).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn write_config(dir: &std::path::Path, http: u16, tcp: u16, https: u16) -> Result<(), String> {
    let d = dir.display();
    let cfg = format!(
        r#"<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>{d}/server.log</log><errorlog>{d}/err.log</errorlog></logger>
  <listen_host>127.0.0.1</listen_host>
  <http_port>{http}</http_port>
  <https_port>{https}</https_port>
  <openSSL><server><certificateFile>{d}/server.pem</certificateFile><privateKeyFile>{d}/server.key</privateKeyFile><verificationMode>none</verificationMode><loadDefaultCAFile>false</loadDefaultCAFile><disableProtocols>sslv2,sslv3,tlsv1,tlsv1_1</disableProtocols></server></openSSL>
  <tcp_port>{tcp}</tcp_port>
  <path>{d}/data/</path>
  <tmp_path>{d}/tmp/</tmp_path>
  <user_files_path>{d}/user_files/</user_files_path>
  <format_schema_path>{d}/format_schemas/</format_schema_path>
  <users_config>{d}/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>268435456</mark_cache_size>
</yandex>
"#
    );
    let users = r#"<?xml version="1.0"?>
<yandex>
  <profiles><default></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default></default></quotas>
</yandex>
"#;
    std::fs::write(dir.join("config.xml"), cfg).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("users.xml"), users).map_err(|e| e.to_string())
}

/// Starts the server in `dir` under a watchdog shell: the server's pid goes
/// to `dir/ch.pid`; the server is stopped, and `dir` removed, once this test
/// process is gone (a shared server lives in a static, never dropped).
fn launch(dir: &std::path::Path) -> Result<Child, String> {
    let bin = clickhouse_bin()?;
    let d = dir.display();
    let script = format!(
        "{} --config-file={d}/config.xml & ch=$!; echo $ch > {d}/ch.pid; \
         while kill -0 {pid} 2>/dev/null && kill -0 $ch 2>/dev/null; do sleep 0.5; done; \
         kill $ch 2>/dev/null; wait $ch; kill -0 {pid} 2>/dev/null || rm -rf {d}",
        bin.display(),
        pid = std::process::id()
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting clickhouse-server: {e}"))
}

fn wait_answering(url: &str) -> Result<(), String> {
    let started = Instant::now();
    while !answers(url) {
        if started.elapsed() > Duration::from_secs(60) {
            return Err("clickhouse-server did not answer within 60 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// The shared server, or why there is none.
fn server() -> Result<&'static Server, &'static str> {
    static S: OnceLock<Result<Server, String>> = OnceLock::new();
    let s = S.get_or_init(start_server).as_ref().map_err(|e| e.as_str());
    if s.is_ok() {
        crate::util::ran_with("clickhouse");
    }
    s
}

/// A store in a database of its own.
fn store() -> Option<ClickHouseStore> {
    let s = match server() {
        Ok(s) => s,
        Err(why) => {
            crate::util::skip(why);
            return None;
        }
    };
    static N: AtomicU32 = AtomicU32::new(0);
    let db = format!(
        "vigil_test_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    Some(open_store(&s.url, &db))
}

/// A store on database `db` of the server at `url`, configured by default.
fn open_store(url: &str, db: &str) -> ClickHouseStore {
    ClickHouseStore::open(&ClickHouseConfig {
        url: url.to_string(),
        database: db.to_string(),
        ..ClickHouseConfig::default()
    })
    .expect("open the ClickHouse store")
}

/// Another store on `ch`'s database, as a second collector has it.
fn another(ch: &ClickHouseStore) -> ClickHouseStore {
    open_store(&server().unwrap().url, ch.database())
}

fn batch(sensor: &str, seq: u64, flows: Vec<FlowRecord>) -> IngestBatch {
    IngestBatch {
        attestation: None,
        certificate: None,
        sensor_id: sensor.into(),
        seq,
        incarnation: 1,
        flows,
        stats: None,
        received_ns: 1_700_000_000_000_000_000 + seq,
    }
}

/// The corpus (or, without it, one synthesized capture) as records.
fn records() -> Vec<FlowRecord> {
    crate::query::corpus_records()
}

/// The corpus in ClickHouse, batch for batch as in the embedded store of
/// [`crate::query::stored_corpus`]; made once per test process.
fn stored_corpus() -> Option<&'static ClickHouseStore> {
    static S: OnceLock<Option<ClickHouseStore>> = OnceLock::new();
    S.get_or_init(|| {
        let ch = store()?;
        let sq = crate::query::stored_corpus();
        let all: Vec<FlowRecord> = sq.records.iter().map(|(_, r)| r.clone()).collect();
        for b in crate::query::corpus_batches(&all) {
            assert_eq!(
                ch.commit(&b).unwrap(),
                CommitOutcome::Stored {
                    gap: 0,
                    reset: false
                }
            );
        }
        Some(ch)
    })
    .as_ref()
}

#[test]
fn random_filters_give_the_same_answers_on_sqlite_and_clickhouse() {
    let Some(ch) = stored_corpus() else { return };
    let sq = crate::query::stored_corpus();
    let v = crate::query::Vocabulary::of(&sq.records);
    let strategy = (v.filter(), v.range(), crate::query::shape());
    crate::query::runner(64)
        .run(&strategy, |(text, range, shape)| {
            // Both against the same reference: so against each other.
            crate::query::check_against_memory(&sq.store, &sq.records, &text, range, shape)?;
            crate::query::check_against_memory(ch, &sq.records, &text, range, shape)
        })
        .unwrap();
}

#[test]
fn the_same_queries_give_the_same_answers_on_sqlite_and_clickhouse() {
    let Some(ch) = stored_corpus() else { return };
    let sq = &crate::query::stored_corpus().store;
    let all: Vec<FlowRecord> = crate::query::stored_corpus()
        .records
        .iter()
        .map(|(_, r)| r.clone())
        .collect();
    let stored = ch
        .flows(&parse("").unwrap(), TimeRange::default(), usize::MAX)
        .unwrap();
    assert_eq!(stored.len(), all.len(), "every record stored once");
    let mut want: Vec<&FlowRecord> = all.iter().collect();
    let mut got: Vec<&FlowRecord> = stored.iter().map(|(_, r)| r).collect();
    want.sort_by_key(|r| (r.first_seen_ns, r.flow_id, r.last_seen_ns, r.fwd_packets));
    got.sort_by_key(|r| (r.first_seen_ns, r.flow_id, r.last_seen_ns, r.fwd_packets));
    assert!(want == got, "the records read back are the records stored");
    let mid = all.iter().map(|r| r.first_seen_ns).min().unwrap_or(0) / 2
        + all.iter().map(|r| r.first_seen_ns).max().unwrap_or(0) / 2;
    let ranges = [
        TimeRange::default(),
        TimeRange {
            since_ns: Some(mid),
            until_ns: None,
        },
        TimeRange {
            since_ns: None,
            until_ns: Some(mid),
        },
    ];
    let filters = [
        "",
        "proto tcp",
        "udp and port 53",
        "not proto tcp and not proto udp",
        "src net 10.0.0.0/8 or dst net 192.168.0.0/16",
        "ip6",
        "dst port 502 or port 20000 or dst port 102",
        "vlan 100 or vlan 32",
        "bytes > 1000 and packets < 50",
        "sensor s-odd",
        "state S0",
        // Answered from the roll-ups (whole minutes) and the flows (edges).
        "dst net 10.0.0.0/8 or dst net 192.168.0.0/16",
        "src net 172.16.0.0/12 and not src host 172.16.0.1",
        "tcp and dst portrange 1-1024",
        "not dst port 80 and proto udp",
        "ip6 or ip4",
    ];
    for text in filters {
        let f = parse(text).unwrap_or_else(|e| panic!("{text}: {e:?}"));
        for range in ranges {
            assert_eq!(
                sq.count(&f, range).unwrap(),
                ch.count(&f, range).unwrap(),
                "count {text:?} {range:?}"
            );
            for key in crate::query::top_keys() {
                for by in [TopBy::Bytes, TopBy::Packets, TopBy::Flows] {
                    assert_eq!(
                        sq.top(&f, range, key, by, 10).unwrap(),
                        ch.top(&f, range, key, by, 10).unwrap(),
                        "top {key:?} by {by:?} where {text:?} {range:?}"
                    );
                }
            }
            for step_s in [1, 60, 300, 3600, 86_400] {
                let step = step_s * 1_000_000_000;
                assert_eq!(
                    sq.series(&f, range, step).unwrap(),
                    ch.series(&f, range, step).unwrap(),
                    "series per {step_s} s where {text:?} {range:?}"
                );
            }
            let a = sq.flows(&f, range, 50).unwrap();
            let b = ch.flows(&f, range, 50).unwrap();
            let key = |v: &[(String, FlowRecord)]| {
                let mut k: Vec<(u64, u64, String)> = v
                    .iter()
                    .map(|(s, r)| (r.first_seen_ns, r.flow_id, s.clone()))
                    .collect();
                k.sort();
                k
            };
            assert_eq!(a.len(), b.len(), "flows {text:?} {range:?}");
            if a.len() < 50 {
                assert_eq!(key(&a), key(&b), "flows {text:?} {range:?}");
            }
        }
    }
    let (s1, s2) = (sq.sensors().unwrap(), ch.sensors().unwrap());
    let strip = |v: Vec<vigil_collector::store::SensorRecord>| {
        v.into_iter()
            .map(|s| {
                (
                    s.sensor_id,
                    s.last_seq,
                    s.batches,
                    s.flows,
                    s.duplicates,
                    s.seq_gaps,
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(s1), strip(s2));
}

#[test]
fn duplicates_and_gaps_are_recognized_across_store_instances() {
    let Some(ch) = store() else { return };
    let recs = records();
    let some: Vec<FlowRecord> = recs.iter().take(3).cloned().collect();
    assert_eq!(
        ch.commit(&batch("s", 1, some.clone())).unwrap(),
        CommitOutcome::Stored {
            gap: 0,
            reset: false
        }
    );
    assert_eq!(
        ch.commit(&batch("s", 1, some.clone())).unwrap(),
        CommitOutcome::Duplicate
    );
    assert_eq!(
        ch.commit(&batch("s", 4, some.clone())).unwrap(),
        CommitOutcome::Stored {
            gap: 2,
            reset: false
        }
    );
    // A second collector on the same database (the sensor moved to it)
    // knows what the first committed.
    let other = another(&ch);
    assert_eq!(
        other.commit(&batch("s", 4, some.clone())).unwrap(),
        CommitOutcome::Duplicate
    );
    assert_eq!(
        other.commit(&batch("s", 5, some.clone())).unwrap(),
        CommitOutcome::Stored {
            gap: 0,
            reset: false
        }
    );
    let s = &other.sensors().unwrap()[0];
    assert_eq!(
        (s.last_seq, s.batches, s.flows, s.duplicates, s.seq_gaps),
        (5, 3, 9, 2, 2)
    );
    let n = other
        .count(&parse("").unwrap(), TimeRange::default())
        .unwrap();
    assert_eq!(n.flows, 9, "no batch stored twice");
}

#[test]
fn clickhouse_serves_detection_over_stored_flows() {
    let Some(ch) = store() else { return };
    crate::query::check_hunt(&ch);
}

#[test]
fn flow_queries_come_in_pages_from_clickhouse() {
    let Some(ch) = stored_corpus() else { return };
    crate::query::check_pages(ch);
}

/// Dedupe per spool incarnation, as in the embedded store; a second
/// collector on the database knows the incarnations the first numbered.
#[test]
fn clickhouse_dedupes_per_spool_incarnation() {
    let Some(ch) = store() else { return };
    crate::query::check_incarnations(&ch);
    let other = another(&ch);
    let s = other
        .sensors()
        .unwrap()
        .into_iter()
        .find(|s| s.sensor_id == "inc")
        .unwrap();
    assert_eq!((s.incarnation, s.seq_resets, s.duplicates), (0xb, 1, 3));
}

/// A sensor that goes from collector A to B and back to A: A, told that
/// the sensor's stream opened again, judges its batches by what B stored
/// too. Without that, A stored again the batch B had stored but not
/// acknowledged, and counted B's batches as a gap.
#[test]
fn a_sensor_back_from_another_collector_is_judged_by_the_database() {
    let Some(a) = store() else { return };
    let some: Vec<FlowRecord> = records().into_iter().take(3).collect();
    let b = another(&a);
    for seq in 1..=2 {
        assert_eq!(
            a.commit(&batch("s", seq, some.clone())).unwrap(),
            CommitOutcome::Stored {
                gap: 0,
                reset: false
            }
        );
    }
    b.streams_opened(&["s"]).unwrap();
    for seq in 3..=4 {
        assert_eq!(
            b.commit(&batch("s", seq, some.clone())).unwrap(),
            CommitOutcome::Stored {
                gap: 0,
                reset: false
            }
        );
    }
    // Back to A, resending batch 4 (B's acknowledgement was lost), then 5.
    a.streams_opened(&["s"]).unwrap();
    assert_eq!(
        a.commit(&batch("s", 4, some.clone())).unwrap(),
        CommitOutcome::Duplicate
    );
    assert_eq!(
        a.commit(&batch("s", 5, some.clone())).unwrap(),
        CommitOutcome::Stored {
            gap: 0,
            reset: false
        }
    );
    let n = a.count(&parse("").unwrap(), TimeRange::default()).unwrap();
    assert_eq!(n.flows, 15, "five batches of three, none stored twice");
    let s = &a.sensors().unwrap()[0];
    assert_eq!((s.last_seq, s.batches, s.seq_gaps), (5, 5, 0));
}

/// Rows stored per `seq` for `sensor` (straight from `flows`, whose `seq`
/// holds the incarnation's ordinal above bit 40).
fn rows_per_seq(ch: &ClickHouseStore, sensor: &str) -> Vec<(u64, u64)> {
    let http = vigil_collector::store::clickhouse::http::Endpoint::parse(
        &server().unwrap().url,
        "default",
        "",
    )
    .unwrap();
    let body = http
        .query(&format!(
            "SELECT seq, count() FROM {}.flows WHERE sensor_id = '{sensor}' \
             GROUP BY seq ORDER BY seq FORMAT TabSeparated",
            ch.database()
        ))
        .unwrap();
    String::from_utf8(body)
        .unwrap()
        .lines()
        .map(|l| {
            let (a, b) = l.split_once('\t').unwrap();
            (
                a.parse::<u64>().unwrap() & ((1 << 40) - 1),
                b.parse().unwrap(),
            )
        })
        .collect()
}

/// Collector B taking a sensor over fences A out: A's next insert fails,
/// and A refuses every batch of the streams it had opened before (their
/// sensors reconnect); a stream opened to A afterwards is stored again.
#[test]
fn a_collector_that_lost_a_sensor_stores_nothing_of_its_older_streams() {
    let Some(a) = store() else { return };
    let some: Vec<FlowRecord> = records().into_iter().take(3).collect();
    let b = another(&a);
    for s in ["s", "t"] {
        a.streams_opened(&[s]).unwrap();
        assert_eq!(
            a.commit(&batch(s, 1, some.clone())).unwrap(),
            CommitOutcome::Stored {
                gap: 0,
                reset: false
            }
        );
    }
    // s moves to B (its batch 2 is perhaps still on its way to A).
    b.streams_opened(&["s"]).unwrap();
    let e = a.commit(&batch("s", 2, some.clone())).unwrap_err();
    assert!(e.to_string().contains("fenced out"), "{e}");
    // Whatever A still holds from its older streams is refused: s's batch
    // and t's alike (t's sensor reconnects).
    assert_eq!(
        a.commit_many(&[&batch("s", 2, some.clone()), &batch("t", 2, some.clone())])
            .unwrap(),
        vec![CommitOutcome::Fenced, CommitOutcome::Fenced]
    );
    assert_eq!(
        b.commit(&batch("s", 2, some.clone())).unwrap(),
        CommitOutcome::Stored {
            gap: 0,
            reset: false
        }
    );
    // t reconnects to A: its stream opened after the fence is stored.
    a.streams_opened(&["t"]).unwrap();
    assert_eq!(
        a.commit(&batch("t", 2, some.clone())).unwrap(),
        CommitOutcome::Stored {
            gap: 0,
            reset: false
        }
    );
    assert_eq!(rows_per_seq(&a, "s"), [(1, 3), (2, 3)]);
    assert_eq!(rows_per_seq(&a, "t"), [(1, 3), (2, 3)]);
    // And the roll-ups counted each flow once.
    let all = parse("").unwrap();
    let from_rollup = a
        .top(&all, TimeRange::default(), TopKey::Proto, TopBy::Flows, 10)
        .unwrap();
    assert_eq!(from_rollup.iter().map(|r| r.totals.flows).sum::<u64>(), 12);
    // A third collector taking both over in one call fences out both.
    let c = another(&a);
    c.streams_opened(&["s", "t"]).unwrap();
    for (old, s) in [(&a, "t"), (&b, "s")] {
        let e = old.commit(&batch(s, 3, some.clone())).unwrap_err();
        assert!(e.to_string().contains("fenced out"), "{e}");
    }
    for s in ["s", "t"] {
        assert_eq!(
            c.commit(&batch(s, 3, some.clone())).unwrap(),
            CommitOutcome::Stored {
                gap: 0,
                reset: false
            }
        );
    }
    assert_eq!(rows_per_seq(&a, "s"), [(1, 3), (2, 3), (3, 3)]);
    assert_eq!(rows_per_seq(&a, "t"), [(1, 3), (2, 3), (3, 3)]);
    // A restart's storm of reconnections, in one group: 2,500 sensors of
    // the longest ids (past what one statement may list), t among them.
    let many: Vec<String> = (0..2500).map(|i| format!("{i:0>64}")).collect();
    let mut opened: Vec<&str> = many.iter().map(String::as_str).collect();
    opened.push("t");
    a.streams_opened(&opened).unwrap();
    let e = c.commit(&batch("t", 4, some.clone())).unwrap_err();
    assert!(e.to_string().contains("fenced out"), "{e}");
}

/// Two collectors handed the same batch at the same moment, as when a
/// sensor gives up on A while A is still storing, and sends the batch to B:
/// B fences A out before storing, so the batch is stored once whichever
/// insert comes first. Without the fence, both stored it.
#[test]
fn the_same_batch_sent_to_two_collectors_at_once_is_stored_once() {
    let Some(a) = store() else { return };
    let b = another(&a);
    let base = records();
    // Large enough that A's insert is still running when B begins.
    let big: Vec<FlowRecord> = base.iter().cycle().take(50_000).cloned().collect();
    for round in 0..6 {
        let sensor = format!("s{round}");
        // The sensor streams to A, reconnecting while A refuses (it was
        // fenced out in the round before).
        let first = batch(&sensor, 1, base.clone());
        for attempt in 0.. {
            assert!(attempt < 3, "A stores again once reconnected");
            a.streams_opened(&[&sensor]).unwrap();
            if let Ok(CommitOutcome::Stored { .. }) = a.commit(&first) {
                break;
            }
        }
        let second = batch(&sensor, 2, big.clone());
        std::thread::scope(|sc| {
            let on_a = sc.spawn(|| a.commit(&second));
            // Staggered starts: B's take-over lands before, during and
            // after A's insert.
            std::thread::sleep(Duration::from_millis(40 * round));
            let on_b = b
                .streams_opened(&[&sensor])
                .and_then(|()| b.commit(&second))
                .unwrap();
            assert!(
                matches!(
                    on_b,
                    CommitOutcome::Stored { .. } | CommitOutcome::Duplicate
                ),
                "{on_b:?}"
            );
            let _ = on_a.join().unwrap();
        });
        assert_eq!(
            rows_per_seq(&a, &sensor),
            [(1, base.len() as u64), (2, big.len() as u64)],
            "round {round}: each batch once"
        );
    }
}

fn ch_db(s: &ClickHouseStore) -> String {
    s.database().to_string()
}

fn an_alert(id: u64, evidence: Vec<EvidenceRef>) -> Alert {
    Alert {
        id,
        kind: AlertKind::SynFlood,
        technique: "T1498.001".into(),
        technique_name: "Direct Network Flood".into(),
        matrix: "enterprise".into(),
        severity: Severity::High,
        asset: "plant".into(),
        sector: "water".into(),
        criticality: Criticality::High,
        summary: "a flood".into(),
        sources: Vec::new(),
        source_count: 2,
        targets: Vec::new(),
        target_count: 1,
        first_seen_ns: 1,
        last_seen_ns: 2,
        raised_ns: 2,
        measured: 900.0,
        threshold: 500.0,
        unit: "flows/s".into(),
        updates: 0,
        evidence_count: evidence.len() as u64,
        detector: String::new(),
        evidence,
    }
}

#[test]
fn alerts_and_their_evidence_round_trip() {
    let Some(ch) = store() else { return };
    let recs = records();
    let two: Vec<FlowRecord> = recs.iter().take(2).cloned().collect();
    ch.commit(&batch("s", 1, two.clone())).unwrap();
    let evidence: Vec<EvidenceRef> = two
        .iter()
        .map(|f| EvidenceRef {
            sensor_id: "s".into(),
            flow_id: f.flow_id,
            first_ns: f.first_seen_ns,
        })
        .collect();
    let alert = an_alert(7, evidence.clone());
    ch.put_alerts(&[AlertUpdate {
        alert: alert.clone(),
        opened: true,
    }])
    .unwrap();
    let mut later = alert.clone();
    later.updates = 1;
    later.evidence = Vec::new();
    std::thread::sleep(Duration::from_millis(2));
    ch.put_alerts(&[AlertUpdate {
        alert: later,
        opened: false,
    }])
    .unwrap();
    assert_eq!(ch.max_alert_id().unwrap(), 7);
    let back = ch.alert(7).unwrap().unwrap();
    assert_eq!((back.updates, back.evidence.len()), (1, 2));
    let flows = ch.evidence_flows(&back.evidence).unwrap();
    assert_eq!(flows.len(), 2);
    assert!(
        ch.alerts(&AlertQuery {
            min_severity: Some(Severity::Critical),
            ..Default::default()
        })
        .unwrap()
        .is_empty()
    );
    assert_eq!(ch.alerts(&AlertQuery::default()).unwrap().len(), 1);
}

/// An alert's evidence of thousands of flows from a sensor with the longest
/// id comes back whole: the store asks for it in statements the server's
/// `max_query_size` (256 KiB) admits.
#[test]
fn much_evidence_from_a_long_sensor_id_is_read_back() {
    let Some(ch) = store() else { return };
    let id = "s".repeat(64);
    let recs: Vec<FlowRecord> = records().into_iter().cycle().take(1200).collect();
    let mut recs = recs;
    for (i, r) in recs.iter_mut().enumerate() {
        r.flow_id = i as u64 + 1;
    }
    ch.commit(&batch(&id, 1, recs.clone())).unwrap();
    let evidence: Vec<EvidenceRef> = recs
        .iter()
        .map(|f| EvidenceRef {
            sensor_id: id.clone(),
            flow_id: f.flow_id,
            first_ns: f.first_seen_ns,
        })
        .collect();
    assert_eq!(ch.evidence_flows(&evidence).unwrap().len(), 1200);
}

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A `vigil collector` process storing into ClickHouse database `db`; its
/// log goes to `dir/name.log`.
fn collector(dir: &std::path::Path, name: &str, ch_url: &str, db: &str) -> (Child, String) {
    let port = free_port();
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:{port}\"\n[store]\nengine = \"clickhouse\"\n[store.clickhouse]\nurl = \"{ch_url}\"\ndatabase = \"{db}\"\n"
        ),
    )
    .expect("collector.toml");
    let child = Command::new(VIGIL)
        .args(["collector", "-c"])
        .arg(&cfg)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("{name}.log"))).expect("collector log"))
        .spawn()
        .expect("vigil collector");
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the collector did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, format!("http://127.0.0.1:{port}"))
}

/// A `vigil sensor` process; its standard error goes to `spool`.err.
fn sensor(files: &[PathBuf], url: &str, id: &str, spool: &std::path::Path, drain: &str) -> Child {
    let err = std::fs::File::create(spool.with_extension("err")).expect("stderr file");
    let mut c = Command::new(VIGIL);
    c.args([
        "sensor",
        "--collector",
        url,
        "--sensor-id",
        id,
        "--drain-timeout",
        drain,
    ])
    .arg("--spool-dir")
    .arg(spool)
    .stdout(Stdio::null())
    .stderr(err);
    for f in files {
        c.arg("-r").arg(f);
    }
    c.spawn().expect("vigil sensor")
}

/// Whether a sensor delivered everything: exit 0, or exit 1 for the
/// corpus's damaged capture only, with nothing left in the spool.
fn delivered(status: std::process::ExitStatus, spool: &std::path::Path) -> bool {
    let err = std::fs::read_to_string(spool.with_extension("err")).unwrap_or_default();
    let ok = status.success()
        || (status.code() == Some(1)
            && err.contains("0 still in the spool")
            && err.contains("could not be read to the end")
            && !err.contains("rejected by the collector; ")
            && err.contains("; 0 rejected"));
    if !ok {
        eprintln!("sensor: {status}\n{err}");
    }
    ok
}

fn wait_exit(mut c: Child, limit: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(s) = c.try_wait().expect("wait") {
            return s;
        }
        if started.elapsed() > limit {
            let _ = c.kill();
            panic!("a process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What the sensor makes of the files (its default early reports included).
fn expected(files: &[PathBuf]) -> Vec<String> {
    let cfg = vigil_sensor::run::RunConfig {
        flow: vigil_sensor::flow::FlowConfig {
            report_interval: Some(Duration::from_secs(1)),
            ..vigil_sensor::flow::FlowConfig::default()
        },
        ..vigil_sensor::run::RunConfig::default()
    };
    let inputs: Vec<_> = files
        .iter()
        .map(|f| vigil_sensor::run::Input::File(f.clone()))
        .collect();
    let mut v: Vec<String> = crate::util::run_inputs(&inputs, &cfg)
        .0
        .iter()
        .map(|r| format!("{r:?}"))
        .collect();
    v.sort();
    v
}

fn stored(url: &str, db: &str) -> Vec<String> {
    let s = open_store(url, db);
    let mut v: Vec<String> = s
        .flows(&parse("").unwrap(), TimeRange::default(), usize::MAX)
        .expect("flows")
        .iter()
        .map(|(_, r)| format!("{r:?}"))
        .collect();
    v.sort();
    v
}

fn inputs() -> Vec<PathBuf> {
    match corpus_dir() {
        Some(d) => corpus_files(&d),
        None => {
            let p = std::env::temp_dir().join(format!("vigil-ch-{}.pcap", std::process::id()));
            let bulk = vigil_sensor::synth::BulkConfig {
                packets: 50_000,
                flows: 3_000,
                ..vigil_sensor::synth::BulkConfig::default()
            };
            std::fs::write(&p, bulk.to_pcap_bytes()).expect("write");
            vec![p]
        }
    }
}

/// The corpus through `vigil sensor` → `vigil collector` → ClickHouse,
/// with ClickHouse killed (SIGKILL) during the ingest and restarted: the
/// store then holds exactly the records `vigil flows` makes, none missing,
/// none twice.
#[test]
fn sensor_to_collector_to_clickhouse_loses_nothing_when_clickhouse_dies() {
    if let Err(why) = clickhouse_bin() {
        crate::util::skip(&why);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ch_dir = tempfile::tempdir().unwrap().keep();
    let (http, tcp, https) = (free_port(), free_port(), free_port());
    write_certificates(&ch_dir).unwrap();
    write_config(&ch_dir, http, tcp, https).unwrap();
    let mut ch = launch(&ch_dir).unwrap();
    let ch_url = format!("http://127.0.0.1:{http}");
    wait_answering(&ch_url).unwrap();
    let (mut col, url) = collector(dir.path(), "c", &ch_url, "vigil");
    let files = inputs();
    let s = sensor(&files, &url, "s1", &dir.path().join("spool"), "180s");
    // Down during the ingest, for a while.
    std::thread::sleep(Duration::from_millis(300));
    let pid = std::fs::read_to_string(ch_dir.join("ch.pid")).unwrap();
    let _ = Command::new("kill").args(["-9", pid.trim()]).status();
    let _ = ch.wait();
    std::thread::sleep(Duration::from_secs(3));
    let mut ch = launch(&ch_dir).unwrap();
    wait_answering(&ch_url).unwrap();
    let status = wait_exit(s, Duration::from_secs(240));
    assert!(
        delivered(status, &dir.path().join("spool")),
        "the sensor delivered everything"
    );
    let got = stored(&ch_url, "vigil");
    let want = expected(&files);
    let _ = col.kill();
    let _ = col.wait();
    assert_eq!(got.len(), want.len(), "records stored vs made");
    assert!(got == want, "the stored records are the records made");
    let pid = std::fs::read_to_string(ch_dir.join("ch.pid")).unwrap();
    let _ = Command::new("kill").args([pid.trim()]).status();
    let _ = ch.wait();
    let _ = std::fs::remove_dir_all(&ch_dir);
}

/// Two collectors on one database: a sensor whose collector dies moves to
/// the other with its spool; what the first stored but never acknowledged
/// is recognized, and every record is stored once.
#[test]
fn two_collectors_share_one_clickhouse_and_store_each_record_once() {
    let Some(st) = store() else { return };
    let url = server().unwrap().url.clone();
    let db = st.database().to_string();
    let dir = tempfile::tempdir().unwrap();
    let files = inputs();
    let (mut a, url_a) = collector(dir.path(), "a", &url, &db);
    let (mut b, url_b) = collector(dir.path(), "b", &url, &db);
    let spool = dir.path().join("spool");
    // s1 to A, which is killed mid-stream; s1 gives up after 3 s with
    // batches left in its spool.
    let s = sensor(&files, &url_a, "s1", &spool, "3s");
    std::thread::sleep(Duration::from_millis(400));
    let _ = a.kill();
    let _ = a.wait();
    let _ = wait_exit(s, Duration::from_secs(120));
    // s1 again, now to B, with nothing new to read: it sends its spool.
    let empty = dir.path().join("empty.pcap");
    let w = vigil_sensor::capture::PcapWriter::new(
        Vec::new(),
        vigil_sensor::capture::LinkType::Ethernet,
    )
    .unwrap();
    std::fs::write(&empty, w.finish().unwrap()).unwrap();
    let s = sensor(std::slice::from_ref(&empty), &url_b, "s1", &spool, "120s");
    // Meanwhile s2 streams the same captures to B.
    let s2 = sensor(&files, &url_b, "s2", &dir.path().join("spool2"), "120s");
    assert!(
        delivered(wait_exit(s, Duration::from_secs(180)), &spool),
        "s1 emptied its spool into B"
    );
    assert!(
        delivered(
            wait_exit(s2, Duration::from_secs(180)),
            &dir.path().join("spool2")
        ),
        "s2 delivered"
    );
    let _ = b.kill();
    let _ = b.wait();
    let got = stored(&url, &db);
    let one = expected(&files);
    let mut want: Vec<String> = one.iter().chain(one.iter()).cloned().collect();
    want.sort();
    assert_eq!(got.len(), want.len(), "each sensor's records once");
    assert!(got == want);
    let s1 = st.sensors().unwrap();
    assert_eq!(s1.len(), 2);
    assert!(s1.iter().all(|s| s.seq_gaps == 0), "{s1:?}");
}

/// A sensor that goes from collector A to B and back to A, with new traffic
/// each time: every record is stored once, and A, whose server tells its
/// store that the sensor's stream opened again, takes the batches B stored
/// into account. (A judged the sensor by its own cache before: it logged B's
/// batches as a gap, and would have stored again a batch B had stored but
/// could not acknowledge.)
#[test]
fn a_sensor_moving_from_a_to_b_and_back_is_stored_once_without_a_gap() {
    let Some(st) = store() else { return };
    let url = server().unwrap().url.clone();
    let db = st.database().to_string();
    let dir = tempfile::tempdir().unwrap();
    let (mut a, url_a) = collector(dir.path(), "a", &url, &db);
    let (mut b, url_b) = collector(dir.path(), "b", &url, &db);
    let spool = dir.path().join("spool");
    let mut want = Vec::new();
    for (leg, target) in [&url_a, &url_b, &url_a].into_iter().enumerate() {
        let f = dir.path().join(format!("leg{leg}.pcap"));
        let bulk = vigil_sensor::synth::BulkConfig {
            seed: leg as u64 + 1,
            packets: 6_000,
            flows: 600,
            ..vigil_sensor::synth::BulkConfig::default()
        };
        std::fs::write(&f, bulk.to_pcap_bytes()).unwrap();
        let s = sensor(std::slice::from_ref(&f), target, "s1", &spool, "60s");
        assert!(
            delivered(wait_exit(s, Duration::from_secs(120)), &spool),
            "leg {leg} delivered"
        );
        want.extend(expected(std::slice::from_ref(&f)));
    }
    let _ = a.kill();
    let _ = b.kill();
    let _ = (a.wait(), b.wait());
    want.sort();
    let got = stored(&url, &db);
    assert_eq!(got.len(), want.len(), "every record once");
    assert!(got == want);
    let log = std::fs::read_to_string(dir.path().join("a.log")).unwrap();
    assert!(log.contains("sensor stream opened"), "{log}");
    assert!(!log.contains("sequence gap"), "A saw a gap:\n{log}");
    // B fenced A out when s1 came to it; back on A, A's first insert found
    // its ingest table gone, ended the stream, and stored the batches once
    // s1 reconnected (having fenced B out in turn).
    let log_b = std::fs::read_to_string(dir.path().join("b.log")).unwrap();
    assert!(
        log_b.contains("fencing out the collector the sensor left"),
        "{log_b}"
    );
    assert!(log.contains("fenced out by another collector"), "{log}");
    assert!(
        log.contains("fencing out the collector the sensor left"),
        "{log}"
    );
    let s = &st.sensors().unwrap()[0];
    assert_eq!((s.seq_gaps, s.duplicates), (0, 0), "{s:?}");
}

/// The top ten destination ports by flows matching `filter`, over all time.
fn ports_by_flows(ch: &ClickHouseStore, filter: &str) -> Vec<vigil_collector::query::TopRow> {
    ch.top(
        &parse(filter).unwrap(),
        TimeRange::default(),
        TopKey::DstPort,
        TopBy::Flows,
        10,
    )
    .unwrap()
}

/// A database whose roll-ups are missing (made before them, or dropped)
/// gets them back, filled from the flows, when a store opens it.
#[test]
fn rollups_are_back_filled_when_missing() {
    let Some(ch) = store() else { return };
    let recs = records();
    ch.commit(&batch("s", 1, recs.clone())).unwrap();
    let all = parse("").unwrap();
    let before = ch
        .top(&all, TimeRange::default(), TopKey::Dst, TopBy::Bytes, 10)
        .unwrap();
    let url = server().unwrap().url.clone();
    let http =
        vigil_collector::store::clickhouse::http::Endpoint::parse(&url, "default", "").unwrap();
    let db = ch.database().to_string();
    let ports = ports_by_flows(&ch, "");
    for name in ["dst", "dport", "proto"] {
        http.query(&format!("DROP TABLE {db}.rollup_{name}"))
            .unwrap();
    }
    // An earlier layout of a roll-up (without the protocol) is made again,
    // and so is the view on `flows` that filled it then (the collectors'
    // ingest tables fill the roll-ups now: left, it would count twice).
    http.query(&format!(
        "CREATE TABLE {db}.rollup_dport (minute UInt64, k UInt64, flows UInt64, packets UInt64, \
         bytes UInt64) ENGINE = SummingMergeTree() ORDER BY (minute, k)"
    ))
    .unwrap();
    http.query(&format!(
        "CREATE MATERIALIZED VIEW {db}.rollup_dport_mv TO {db}.rollup_dport AS SELECT \
         intDiv(first_ns, 60000000000) AS minute, toUInt64(dst_port) AS k, count() AS flows, \
         sum(packets) AS packets, sum(bytes) AS bytes FROM {db}.flows GROUP BY minute, k"
    ))
    .unwrap();
    let again = open_store(&url, &db);
    let after = again
        .top(&all, TimeRange::default(), TopKey::Dst, TopBy::Bytes, 10)
        .unwrap();
    assert_eq!(before, after);
    assert!(!after.is_empty());
    // The remade port roll-up answers by protocol as the flows do
    // (`packets > 0` is not in a roll-up: that query reads the flows).
    assert_eq!(
        ports_by_flows(&again, "tcp"),
        ports_by_flows(&again, "tcp and packets > 0")
    );
    assert_eq!(ports_by_flows(&again, ""), ports);
    // And new flows reach the roll-ups, once.
    again.commit(&batch("s", 2, recs.clone())).unwrap();
    let doubled = again
        .top(&all, TimeRange::default(), TopKey::Dst, TopBy::Bytes, 1)
        .unwrap();
    assert_eq!(doubled[0].totals.bytes, 2 * before[0].totals.bytes);
    let ports_doubled = ports_by_flows(&again, "");
    assert_eq!(ports_doubled.len(), ports.len());
    for (two, one) in ports_doubled.iter().zip(&ports) {
        assert_eq!(two.totals.flows, 2 * one.totals.flows, "{two:?} {one:?}");
    }
}

/// Retention drops whole days of flows (and of the roll-ups) by age, then
/// by size, and keeps the flows that are the evidence of an alert.
#[test]
fn retention_drops_old_days_and_keeps_the_evidence() {
    let Some(plain) = store() else { return };
    const DAY: u64 = 86_400_000_000_000;
    let now = 20_000 * DAY + DAY / 2;
    let mut recs: Vec<FlowRecord> = records().into_iter().take(30).collect();
    assert_eq!(recs.len(), 30);
    for (i, r) in recs.iter_mut().enumerate() {
        let t = now - [10, 5, 0][i / 10] * DAY - 1_000_000 * i as u64;
        let len = (r.last_seen_ns - r.first_seen_ns).min(1_000_000);
        (r.first_seen_ns, r.last_seen_ns) = (t, t + len);
    }
    plain.commit(&batch("r", 1, recs.clone())).unwrap();
    let old = &recs[0];
    let evidence = vec![EvidenceRef {
        sensor_id: "r".into(),
        flow_id: old.flow_id,
        first_ns: old.first_seen_ns,
    }];
    plain
        .put_alerts(&[AlertUpdate {
            alert: an_alert(1, evidence.clone()),
            opened: true,
        }])
        .unwrap();
    let open = |max_age: Option<Duration>, max_bytes: Option<u64>| {
        ClickHouseStore::open(&ClickHouseConfig {
            url: server().unwrap().url.clone(),
            database: ch_db(&plain),
            max_age,
            max_bytes,
            ..ClickHouseConfig::default()
        })
        .unwrap()
    };
    let all = parse("").unwrap();
    let everything = TimeRange::default();
    // Without retention configured, nothing goes.
    assert_eq!(plain.enforce_retention(now).unwrap().deleted_flows, 0);
    // Seven days: the day ten days back goes; five days back is kept.
    let week = open(Some(Duration::from_secs(7 * 86_400)), None);
    assert_eq!(week.enforce_retention(now).unwrap().deleted_flows, 10);
    assert_eq!(week.count(&all, everything).unwrap().flows, 20);
    assert_eq!(
        week.series(&all, everything, DAY).unwrap().len(),
        2,
        "the roll-ups lost the day as well"
    );
    let tops = week
        .top(&all, everything, TopKey::Dst, TopBy::Flows, 100)
        .unwrap();
    assert_eq!(tops.iter().map(|r| r.totals.flows).sum::<u64>(), 20);
    // The evidence flow survives its day.
    let kept = week.evidence_flows(&evidence).unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(&kept[0].1, old);
    // Again: nothing more is old enough.
    assert_eq!(week.enforce_retention(now).unwrap().deleted_flows, 0);
    // By size: all days but the newest.
    let tiny = open(None, Some(1));
    assert_eq!(tiny.enforce_retention(now).unwrap().deleted_flows, 10);
    assert_eq!(tiny.count(&all, everything).unwrap().flows, 10);
    assert_eq!(tiny.evidence_flows(&evidence).unwrap().len(), 1);
}

/// The store over HTTPS: the server's certificate is checked against the CA
/// given, a server the CA did not sign is refused, and `vigil query --store
/// clickhouse+https://` reads what was stored.
#[test]
fn https_checks_the_server_certificate() {
    let Some(plain) = store() else { return };
    let Some((https, ca)) = server().unwrap().https.clone() else {
        eprintln!("skipped: the server under test (VIGIL_CLICKHOUSE_URL) has no HTTPS set up here");
        return;
    };
    let db = ch_db(&plain);
    let open = |ca: Option<PathBuf>| {
        ClickHouseStore::open(&ClickHouseConfig {
            url: https.clone(),
            ca,
            database: db.clone(),
            ..ClickHouseConfig::default()
        })
    };
    let secure = open(Some(ca.clone())).expect("HTTPS with the server's CA");
    let recs: Vec<FlowRecord> = records().into_iter().take(100).collect();
    secure.commit(&batch("tls", 1, recs.clone())).unwrap();
    let all = parse("").unwrap();
    assert_eq!(
        plain.count(&all, TimeRange::default()).unwrap().flows,
        recs.len() as u64
    );
    // Another CA: the handshake fails, and the message says why.
    let other = tempfile::tempdir().unwrap();
    write_certificates(other.path()).unwrap();
    let e = open(Some(other.path().join("ca.pem")))
        .unwrap_err()
        .to_string();
    assert!(e.contains("certificate"), "{e}");
    // A CA file that holds none.
    std::fs::write(other.path().join("empty.pem"), "not a certificate\n").unwrap();
    let e = open(Some(other.path().join("empty.pem")))
        .unwrap_err()
        .to_string();
    assert!(e.contains("no CA certificate"), "{e}");
    // The CLI, over HTTPS, on a system whose CA bundle holds nothing (an
    // empty SSL_CERT_FILE): the CA given is enough, and without it the
    // error says what to give.
    let port = https.rsplit(':').next().unwrap();
    let no_bundle = other.path().join("empty.pem");
    let store_url = format!("clickhouse+https://localhost:{port}/{db}");
    let count = |tls: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_vigil"))
            .env("SSL_CERT_FILE", &no_bundle)
            .args(["query", "--store", &store_url, "--count", "--format", "csv"])
            .args(tls)
            .output()
            .unwrap()
    };
    let o = count(&[]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no CA certificate"), "{err}");
    let o = count(&["--tls-ca", ca.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .starts_with(&format!("flows,packets,bytes\n{},", recs.len())),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

/// `vigil query --store clickhouse://…` reads the store without a
/// collector: the same top-N, count and series as the store's own calls.
#[test]
fn vigil_query_reads_clickhouse_directly() {
    let Some(ch) = store() else { return };
    let recs = records();
    ch.commit(&batch("q", 1, recs.clone())).unwrap();
    let url = server().unwrap().url.clone();
    let hostport = url.trim_start_matches("http://");
    let store_url = format!("clickhouse://{hostport}/{}", ch.database());
    let query = |args: &[&str]| -> String {
        let o = Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args(["query", "--store", &store_url, "--format", "csv"])
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let filter = "tcp or udp";
    let f = parse(filter).unwrap();
    let top = ch
        .top(&f, TimeRange::default(), TopKey::Dst, TopBy::Bytes, 5)
        .unwrap();
    assert!(!top.is_empty());
    let out = query(&["--top", "dst", "--by", "bytes", "--limit", "5", filter]);
    let lines: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(lines.len(), top.len(), "{out}");
    for (line, row) in lines.iter().zip(&top) {
        assert!(
            line.starts_with(&format!("{},", row.key)),
            "{line} vs {}",
            row.key
        );
        assert!(line.contains(&row.totals.bytes.to_string()), "{line}");
    }
    // --explain names ClickHouse's own path for the parts over flows.
    let o = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args([
            "query",
            "--store",
            &store_url,
            "--explain",
            "--top",
            "src",
            filter,
        ])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && e.contains("ClickHouse's flows table") && e.contains("answered in"),
        "{e}"
    );
    let total = ch.count(&f, TimeRange::default()).unwrap();
    let out = query(&["--count", filter]);
    assert!(
        out.starts_with(&format!(
            "flows,packets,bytes\n{},{},{}",
            total.flows, total.packets, total.bytes
        )),
        "{out}"
    );
}

/// Flows go in by column name: a `flows` table whose columns stand in
/// another order (made by hand, or by another version) takes the same
/// inserts and gives the same records back. (On the current-release check
/// this also holds the shim to naming the columns it inserts.)
#[test]
fn inserts_name_their_columns() {
    let s = match server() {
        Ok(s) => s,
        Err(why) => {
            crate::util::skip(why);
            return;
        }
    };
    let db = format!("vigil_test_{}_order", std::process::id());
    let http =
        vigil_collector::store::clickhouse::http::Endpoint::parse(&s.url, "default", "").unwrap();
    http.query(&format!("CREATE DATABASE IF NOT EXISTS {db}"))
        .unwrap();
    http.query(&format!(
        "CREATE TABLE {db}.flows (record String, community_id String, conn_state UInt8, \
         bytes UInt64, packets UInt64, vlan1 UInt16, vlan0 UInt16, has_ports UInt8, \
         dst_port UInt16, dst_ip String, src_port UInt16, src_ip String, proto UInt8, \
         flow_id UInt64, last_ns UInt64, first_ns UInt64, day Date, idx UInt32, seq UInt64, \
         sensor_id String) ENGINE = MergeTree() PARTITION BY day ORDER BY (first_ns, sensor_id)"
    ))
    .unwrap();
    let ch = open_store(&s.url, &db);
    let recs: Vec<FlowRecord> = records().into_iter().take(500).collect();
    ch.commit(&batch("o", 1, recs.clone())).unwrap();
    let mut back: Vec<String> = ch
        .flows(&parse("").unwrap(), TimeRange::default(), usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(_, r)| format!("{r:?}"))
        .collect();
    let mut want: Vec<String> = recs.iter().map(|r| format!("{r:?}")).collect();
    back.sort();
    want.sort();
    assert_eq!(back, want);
}

/// Evidence bundles from ClickHouse (issue #26): the same bundle content
/// as from the embedded store given the same batches and alert, verified;
/// after retention drops a day, evidence whose batch-mates went with it
/// still verifies (the store kept their leaves).
#[test]
fn evidence_bundles_from_clickhouse_verify_and_outlive_retention() {
    use std::collections::BTreeMap;

    use vigil_collector::evidence::{CollectorKey, VerifyOptions, export};
    use vigil_collector::store::sqlite::{SqliteConfig, SqliteStore};

    let Some(ch) = store() else { return };
    const DAY: u64 = 86_400 * 1_000_000_000;
    let d = 19_000 * DAY;
    let tmp = tempfile::tempdir().unwrap();
    let sq = SqliteStore::open(tmp.path(), SqliteConfig::default()).unwrap();
    let key = CollectorKey::load_or_create(&tmp.path().join("key.pem")).unwrap();
    let sensor = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
    let base = records();
    let mk = |n: usize, at: &dyn Fn(usize) -> u64, id0: u64| -> Vec<FlowRecord> {
        (0..n)
            .map(|i| {
                let mut r = base[i % base.len()].clone();
                r.flow_id = id0 + i as u64;
                r.first_seen_ns = at(i);
                r.last_seen_ns = at(i) + 1;
                r
            })
            .collect()
    };
    // Batch 1 crosses from day D into D + 1; batch 2 is on D + 2.
    let b1 = mk(
        20,
        &|i| {
            if i < 10 {
                d + DAY - 1000 + i as u64 * 10
            } else {
                d + DAY + i as u64
            }
        },
        1,
    );
    let b2 = mk(10, &|i| d + 2 * DAY + i as u64, 100);
    let evidence: Vec<EvidenceRef> = [&b1[3], &b1[15], &b2[2]]
        .iter()
        .map(|r| EvidenceRef {
            sensor_id: "s".into(),
            flow_id: r.flow_id,
            first_ns: r.first_seen_ns,
        })
        .collect();
    let mut alert = an_alert(1, evidence);
    alert.first_seen_ns = d + DAY - 1000;
    alert.last_seen_ns = d + 2 * DAY + 10;
    for s in [&ch as &dyn vigil_collector::store::Store, &sq] {
        s.commit(&batch("s", 1, b1.clone()).signed_by(&sensor))
            .unwrap();
        s.commit(&batch("s", 2, b2.clone()).signed_by(&sensor))
            .unwrap();
        s.put_alerts(&[AlertUpdate {
            alert: alert.clone(),
            opened: true,
        }])
        .unwrap();
    }
    let opts = VerifyOptions {
        collector_key: Some(key.verifying_key()),
        sensor_keys: [("s".to_string(), sensor.verifying_key())].into(),
        allow_unattested: false,
    };
    let members = |bytes: &[u8]| -> BTreeMap<String, Vec<u8>> {
        crate::util::tar_members(bytes).into_iter().collect()
    };
    let from_ch = export(&ch, &key, 1, d).unwrap();
    let from_sq = export(&sq, &key, 1, d).unwrap();
    assert_eq!((from_ch.flows, from_ch.attested), (3, 3));
    vigil_collector::evidence::verify::verify(&from_ch.bytes, &opts).unwrap();
    let (mc, ms) = (members(&from_ch.bytes), members(&from_sq.bytes));
    for m in [
        "flows.jsonl",
        "attestation/proofs.jsonl",
        "attestation/batches.jsonl",
        "completeness.json",
    ] {
        assert_eq!(
            String::from_utf8_lossy(&mc[m]),
            String::from_utf8_lossy(&ms[m]),
            "{m}: the same from both stores"
        );
    }
    assert_eq!(ch.pinned_keys().unwrap().len(), 1);
    // The command line reads ClickHouse directly, with the key file.
    let out = tmp.path().join("from-store.tar");
    let url = server()
        .unwrap()
        .url
        .replacen("http://", "clickhouse://", 1);
    let o = crate::util::vigil()
        .args(["evidence", "export", "1", "--store"])
        .arg(format!("{url}/{}", ch_db(&ch)))
        .arg("--signing-key")
        .arg(tmp.path().join("key.pem"))
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    vigil_collector::evidence::verify::verify(&std::fs::read(&out).unwrap(), &opts).unwrap();
    // The alert as STIX 2.1 from ClickHouse is the one from the embedded
    // store, object for object.
    let conf = tmp.path().join("collector.toml");
    std::fs::write(
        &conf,
        format!(
            "data_dir = {:?}\n[evidence]\nsigning_key = {:?}\n",
            tmp.path().display().to_string(),
            tmp.path().join("key.pem").display().to_string()
        ),
    )
    .unwrap();
    let stix = |source: &[&str], name: &str| -> String {
        let file = tmp.path().join(name);
        let o = crate::util::vigil()
            .args(["alerts", "export", "--format", "stix", "-c"])
            .arg(&conf)
            .args(source)
            .arg("-o")
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::fs::read_to_string(&file).unwrap()
    };
    let store_url = format!("{url}/{}", ch_db(&ch));
    let from_clickhouse = stix(&["--store", &store_url], "ch.json");
    let from_sqlite = stix(&["--data-dir", tmp.path().to_str().unwrap()], "sq.json");
    assert!(from_clickhouse.contains("\"type\": \"incident\""));
    assert!(from_clickhouse.contains("\"type\": \"network-traffic\""));
    assert_eq!(from_clickhouse, from_sqlite);
    // Day D goes: batch 1's records there but the evidence go.
    let week = ClickHouseStore::open(&ClickHouseConfig {
        url: server().unwrap().url.clone(),
        database: ch_db(&ch),
        max_age: Some(Duration::from_secs(7 * 86_400)),
        ..ClickHouseConfig::default()
    })
    .unwrap();
    assert_eq!(
        week.enforce_retention(d + 8 * DAY + 1)
            .unwrap()
            .deleted_flows,
        10
    );
    let after = export(&week, &key, 1, d).unwrap();
    assert_eq!(
        (after.flows, after.attested),
        (3, 3),
        "proofs from the kept leaves"
    );
    vigil_collector::evidence::verify::verify(&after.bytes, &opts).unwrap();
}

/// A group commit that fails part-way through its batches (ClickHouse
/// gone between two of its reads) must not leave the collector believing
/// the earlier batches stored: their resending after the outage is stored,
/// not taken for a duplicate. (A batch was lost so, now and then, in the
/// SIGKILL test above.)
#[test]
fn a_group_commit_cut_short_by_an_outage_stores_its_batches_when_resent() {
    if let Err(why) = clickhouse_bin() {
        crate::util::skip(&why);
        return;
    }
    let ch_dir = tempfile::tempdir().unwrap().keep();
    let (http, tcp, https) = (free_port(), free_port(), free_port());
    write_certificates(&ch_dir).unwrap();
    write_config(&ch_dir, http, tcp, https).unwrap();
    let mut ch = launch(&ch_dir).unwrap();
    let url = format!("http://127.0.0.1:{http}");
    wait_answering(&url).unwrap();
    let store = open_store(&url, "cut");
    let recs = records();
    let mk = |sensor: &str, seq: u64| batch(sensor, seq, recs[..50].to_vec());
    // Sensor "s" is known to the store (its last batch and incarnation
    // cached): its next batch needs no read.
    assert!(matches!(
        store.commit_many(&[&mk("s", 1)]).unwrap()[..],
        [CommitOutcome::Stored { .. }]
    ));
    // ClickHouse dies; a group of s's batch 2 and a new sensor's batch,
    // whose incarnation must be read, fails at that read.
    let pid = std::fs::read_to_string(ch_dir.join("ch.pid")).unwrap();
    let _ = Command::new("kill").args(["-9", pid.trim()]).status();
    let _ = ch.wait();
    assert!(store.commit_many(&[&mk("s", 2), &mk("t", 1)]).is_err());
    let mut ch = launch(&ch_dir).unwrap();
    wait_answering(&url).unwrap();
    // Resent: stored, both.
    let out = store.commit_many(&[&mk("s", 2), &mk("t", 1)]).unwrap();
    assert!(
        out.iter()
            .all(|o| matches!(o, CommitOutcome::Stored { .. })),
        "{out:?}"
    );
    let again = open_store(&url, "cut");
    let n = again
        .flows(
            &parse("sensor s").unwrap(),
            TimeRange::default(),
            usize::MAX,
        )
        .unwrap()
        .len();
    assert_eq!(n, 100, "both batches of s stored");
    let pid = std::fs::read_to_string(ch_dir.join("ch.pid")).unwrap();
    let _ = Command::new("kill").args([pid.trim()]).status();
    let _ = ch.wait();
    let _ = std::fs::remove_dir_all(&ch_dir);
}
