//! Sensor → collector over real gRPC on loopback: the stored flows equal the
//! offline flows, nothing is lost through collector kills and outages, the
//! spool's drops are counted at the collector, hostile peers get clear
//! errors without disturbing a well-behaved sensor, and mTLS identities are
//! enforced.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message as _;
use vigil_collector::query::{Filter, TimeRange};
use vigil_collector::server::{self, CollectorConfig, RunningCollector};
use vigil_collector::store::prelude::*;
use vigil_collector::store::sqlite::{SqliteConfig, SqliteStore, Synchronous};
use vigil_proto::{FlowRecord, pb};
use vigil_sensor::export::grpc::{ClientTls, DrainReport, ExportError, Exporter, ExporterConfig};
use vigil_sensor::export::spool::SpoolConfig;
use vigil_sensor::flow::FlowConfig;
use vigil_sensor::run::{Input, LiveCounters, RunConfig};
use vigil_sensor::synth::{BulkConfig, FrameSize};

use crate::util::{
    Pki, corpus_dir, corpus_files, free_port, rt, run_inputs, spawn_collector, vigil,
};

fn loopback0() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn key(r: &FlowRecord) -> (u64, u64, u64, &'static str) {
    (
        r.first_seen_ns,
        r.flow_id,
        r.last_seen_ns,
        r.end_reason.as_str(),
    )
}

fn sorted(mut v: Vec<FlowRecord>) -> Vec<FlowRecord> {
    v.sort_by_key(key);
    v
}

fn stored(dir: &Path, sensor: Option<&str>) -> Vec<FlowRecord> {
    let store = SqliteStore::open(dir, SqliteConfig::default()).expect("open store");
    let f = sensor.map_or(Filter::All, |s| Filter::Sensor(s.to_string()));
    sorted(
        store
            .flows(&f, TimeRange::default(), usize::MAX)
            .expect("read store")
            .into_iter()
            .map(|(_, r)| r)
            .collect(),
    )
}

/// Sends `inputs` through a sensor (pipeline + exporter) to `url`.
async fn sensor_run(
    inputs: Vec<Input<'static>>,
    exp: ExporterConfig,
    drain: Duration,
) -> Result<DrainReport, ExportError> {
    crate::util::sensor_with(inputs, exp, FlowConfig::default(), drain).await
}

fn exporter_cfg(url: &str, id: &str, spool: &Path) -> ExporterConfig {
    let mut e = ExporterConfig::new(url.to_string(), id.to_string(), spool.to_path_buf());
    e.batch_delay = Duration::from_millis(50);
    e.backoff_max = Duration::from_millis(500);
    e
}

async fn start_collector(data: &Path) -> RunningCollector {
    let mut cfg = CollectorConfig::new(loopback0(), data.to_path_buf());
    cfg.store.synchronous = Synchronous::Normal;
    server::start(cfg).await.expect("collector")
}

fn bulk(seed: u64, packets: u64, flows: u64) -> &'static [u8] {
    let cfg = BulkConfig {
        seed,
        packets,
        flows,
        frame: FrameSize::Fixed(80),
        ..BulkConfig::default()
    };
    Box::leak(cfg.to_pcap_bytes().into_boxed_slice())
}

#[test]
fn stored_flows_equal_offline_flows_on_the_corpus() {
    let Some(dir) = corpus_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let files = corpus_files(&dir);
    let rt = rt();
    let mut expected = Vec::new();
    rt.block_on(async {
        let collector = start_collector(&data).await;
        let url = format!("http://{}", collector.addr);
        for (i, f) in files.iter().enumerate() {
            let (offline, _) = run_inputs(&[Input::File(f.clone())], &RunConfig::default());
            let id = format!("corpus-{i}");
            let d = sensor_run(
                vec![Input::File(f.clone())],
                exporter_cfg(&url, &id, &tmp.path().join(&id)),
                Duration::from_secs(60),
            )
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            assert_eq!((d.pending, d.rejected), (0, 0), "{}", f.display());
            expected.push((f.clone(), id, offline));
        }
        collector.shutdown().await.unwrap();
    });
    let mut total = 0;
    for (f, id, offline) in expected {
        let got = stored(&data, Some(&id));
        total += got.len();
        assert_eq!(got, sorted(offline), "{}", f.display());
    }
    assert!(total > 40_000, "{total} flows stored from the corpus");
}

#[test]
fn a_batch_rejected_for_a_future_timestamp_is_counted_not_retried_forever() {
    // Flows from a clock far ahead: the collector refuses them; the sensor
    // drops the batch, counts it and goes on with the next.
    let tmp = tempfile::tempdir().unwrap();
    let future = BulkConfig {
        packets: 100,
        flows: 10,
        start_ns: u64::MAX / 2,
        ..BulkConfig::default()
    };
    let good = bulk(3, 2_000, 100);
    let future: &'static [u8] = Box::leak(future.to_pcap_bytes().into_boxed_slice());
    rt().block_on(async {
        let collector = start_collector(&tmp.path().join("data")).await;
        let url = format!("http://{}", collector.addr);
        let d = sensor_run(
            vec![Input::Memory {
                name: "future".into(),
                bytes: future,
            }],
            exporter_cfg(&url, "s1", &tmp.path().join("spool")),
            Duration::from_secs(20),
        )
        .await
        .unwrap();
        assert_eq!((d.pending, d.rejected), (0, 1));
        let d = sensor_run(
            vec![Input::Memory {
                name: "good".into(),
                bytes: good,
            }],
            exporter_cfg(&url, "s1", &tmp.path().join("spool")),
            Duration::from_secs(20),
        )
        .await
        .unwrap();
        assert_eq!((d.pending, d.rejected), (0, 0));
        collector.shutdown().await.unwrap();
    });
    let (offline, _) = run_inputs(
        &[Input::Memory {
            name: "good".into(),
            bytes: good,
        }],
        &RunConfig::default(),
    );
    assert_eq!(stored(&tmp.path().join("data"), None), sorted(offline));
}

#[test]
fn spool_drops_at_its_bound_are_counted_at_the_collector() {
    let tmp = tempfile::tempdir().unwrap();
    let capture = bulk(5, 60_000, 20_000);
    let (offline, _) = run_inputs(
        &[Input::Memory {
            name: "bulk".into(),
            bytes: capture,
        }],
        &RunConfig::default(),
    );
    let addr = free_port();
    let url = format!("http://{addr}");
    let mut exp = exporter_cfg(&url, "bounded", &tmp.path().join("spool"));
    exp.batch_flows = 256;
    exp.spool = SpoolConfig {
        max_bytes: 256 << 10,
        segment_bytes: 32 << 10,
        ..SpoolConfig::new(tmp.path().join("spool"))
    };
    let data = tmp.path().join("data");
    let rt = rt();
    rt.block_on(async {
        // Nothing listens yet: every batch goes to the spool, whose bound
        // drops the oldest.
        let live = Arc::new(LiveCounters::default());
        let exporter = Exporter::start(exp, live.clone()).unwrap();
        let inputs = vec![Input::Memory {
            name: "bulk".into(),
            bytes: capture,
        }];
        crate::util::capture_into(&exporter, live, inputs, FlowConfig::default()).await;
        // The open batch is spooled by the exporter's timer (batch_delay):
        // wait for it, so that no drop at the bound happens once the
        // collector is up (a batch sent, then dropped before its ack,
        // would be both stored and counted dropped).
        let mut last = (u64::MAX, Instant::now());
        loop {
            let n = exporter
                .counters()
                .batches
                .load(std::sync::atomic::Ordering::Relaxed);
            if n != last.0 {
                last = (n, Instant::now());
            } else if last.1.elapsed() > Duration::from_millis(500) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let dropped = exporter.spool_stats().dropped_flows;
        assert!(dropped > 0, "the spool bound was never reached");
        // Now the collector comes up on the sensor's address.
        let mut cfg = CollectorConfig::new(addr, data.clone());
        cfg.store.synchronous = Synchronous::Normal;
        let collector = server::start(cfg).await.unwrap();
        let d = exporter.drain(Duration::from_secs(60)).await.unwrap();
        assert_eq!(d.pending, 0);
        collector.shutdown().await.unwrap();
    });
    let store = SqliteStore::open(&data, SqliteConfig::default()).unwrap();
    let s = &store.sensors().unwrap()[0];
    assert!(s.stats.spool_dropped_flows > 0);
    assert!(s.seq_gaps > 0, "the collector sees the missing batches");
    assert_eq!(s.seq_gaps, s.stats.spool_dropped_batches);
    assert_eq!(
        s.flows + s.stats.spool_dropped_flows,
        offline.len() as u64,
        "stored + dropped = everything"
    );
    // What arrived is exactly a subset of the offline flows, without duplicates.
    let got = stored(&data, None);
    let mut want = sorted(offline);
    want.retain(|r| got.binary_search_by_key(&key(r), key).is_ok());
    assert_eq!(got, want);
}

// ---- hostile peers ----

/// Opens a stream, sends `msgs`, returns the acks and the final status.
async fn raw_stream(addr: SocketAddr, msgs: Vec<Vec<u8>>) -> (Vec<pb::Ack>, Option<tonic::Status>) {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(ch).max_encoding_message_size(usize::MAX);
    grpc.ready().await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    for m in msgs {
        tx.send(bytes::Bytes::from(m)).await.unwrap();
    }
    let resp = grpc
        .streaming(
            tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx)),
            tonic::codegen::http::uri::PathAndQuery::from_static("/vigil.v1.Ingest/Stream"),
            crate::util::Raw,
        )
        .await;
    let mut acks = Vec::new();
    let mut inbound = match resp {
        Ok(r) => r.into_inner(),
        Err(s) => return (acks, Some(s)),
    };
    drop(tx);
    loop {
        match inbound.message().await {
            Ok(Some(a)) => acks.push(a),
            Ok(None) => return (acks, None),
            Err(s) => return (acks, Some(s)),
        }
    }
}

fn good_flow() -> pb::Flow {
    pb::Flow {
        flow_id: 1,
        first_seen_ns: 1_700_000_000_000_000_000,
        last_seen_ns: 1_700_000_000_000_000_100,
        proto: 17,
        src_ip: vec![10, 0, 0, 1],
        src_port: Some(1234),
        dst_ip: vec![10, 0, 0, 2],
        dst_port: Some(53),
        fwd_packets: 1,
        fwd_bytes: 60,
        conn_state: pb::ConnState::S0 as i32,
        end_reason: pb::EndReason::Idle as i32,
        community_id: vec![0; 20],
        ..Default::default()
    }
}

fn batch(id: &str, seq: u64, flows: Vec<pb::Flow>) -> Vec<u8> {
    pb::FlowBatch {
        sensor_id: id.into(),
        seq,
        flows,
        stats: None,
        incarnation: 1,
        ..Default::default()
    }
    .encode_to_vec()
}

#[test]
fn hostile_peers_get_clear_errors_and_a_good_sensor_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let capture = bulk(9, 200_000, 30_000);
    rt().block_on(async {
        let mut cfg = CollectorConfig::new(loopback0(), data.clone());
        cfg.store.synchronous = Synchronous::Normal;
        cfg.max_message_bytes = 1 << 20;
        let collector = server::start(cfg).await.unwrap();
        let addr = collector.addr;
        let url = format!("http://{addr}");
        let mut exp = exporter_cfg(&url, "good", &tmp.path().join("spool"));
        exp.batch_flows = 512;
        let good = tokio::spawn(sensor_run(
            vec![Input::Memory {
                name: "bulk".into(),
                bytes: capture,
            }],
            exp,
            Duration::from_secs(120),
        ));
        let cases: Vec<(&str, Vec<Vec<u8>>, tonic::Code, &str)> = vec![
            (
                "oversized message",
                vec![vec![0x0a; 2 << 20]],
                tonic::Code::OutOfRange,
                "",
            ),
            (
                "wrong address length",
                vec![batch(
                    "h1",
                    1,
                    vec![pb::Flow {
                        src_ip: vec![1, 2, 3],
                        ..good_flow()
                    }],
                )],
                tonic::Code::InvalidArgument,
                "field `src_ip`: address of 3 bytes",
            ),
            (
                "absurd timestamp",
                vec![batch(
                    "h2",
                    1,
                    vec![pb::Flow {
                        last_seen_ns: u64::MAX,
                        ..good_flow()
                    }],
                )],
                tonic::Code::InvalidArgument,
                "ahead of the collector's clock",
            ),
            (
                "timestamp before 2000",
                vec![batch(
                    "h3",
                    1,
                    vec![pb::Flow {
                        first_seen_ns: 1,
                        ..good_flow()
                    }],
                )],
                tonic::Code::InvalidArgument,
                "before the year 2000",
            ),
            (
                "sequence regression",
                vec![
                    batch("h4", 5, vec![good_flow()]),
                    batch("h4", 4, vec![good_flow()]),
                ],
                tonic::Code::InvalidArgument,
                "batch seq 4 after seq 5",
            ),
            (
                // The store holds seq up to 2^40 - 1: refused as the
                // peer's error, not retried as a storage fault.
                "seq beyond the store",
                vec![batch("h6", u64::MAX, vec![good_flow()])],
                tonic::Code::InvalidArgument,
                "exceeds 2^40 - 1",
            ),
            (
                "flows claiming more bytes than the store sums",
                vec![batch(
                    "h7",
                    1,
                    vec![
                        pb::Flow {
                            fwd_bytes: 1 << 48,
                            rev_bytes: 1 << 48,
                            rev_packets: 1,
                            ..good_flow()
                        };
                        8_192
                    ],
                )],
                tonic::Code::InvalidArgument,
                "bytes in all",
            ),
            (
                "garbage bytes",
                vec![vec![0xff, 0xff, 0xff, 0xff, 0x0f, 0x01, 0x02]],
                tonic::Code::InvalidArgument,
                "unreadable message",
            ),
            (
                "bad sensor id",
                vec![batch("../../etc", 1, vec![])],
                tonic::Code::InvalidArgument,
                "sensor_id",
            ),
            (
                "another sensor's id in the same stream",
                vec![batch("h5", 1, vec![]), batch("good", 2, vec![])],
                tonic::Code::InvalidArgument,
                "differs from",
            ),
        ];
        for (what, msgs, code, text) in cases {
            let (acks, status) = raw_stream(addr, msgs).await;
            let s = status.unwrap_or_else(|| panic!("{what}: no error"));
            // tonic reports an over-limit message as OutOfRange or ResourceExhausted.
            if code == tonic::Code::OutOfRange {
                assert!(
                    matches!(
                        s.code(),
                        tonic::Code::OutOfRange
                            | tonic::Code::ResourceExhausted
                            | tonic::Code::InvalidArgument
                    ),
                    "{what}: {s:?}"
                );
            } else {
                assert_eq!(s.code(), code, "{what}: {s:?}");
                assert!(s.message().contains(text), "{what}: {}", s.message());
            }
            if what == "sequence regression" {
                assert_eq!(acks.iter().map(|a| a.seq).collect::<Vec<_>>(), vec![5]);
            }
        }
        // Resending a stored batch on a new stream is acknowledged as a duplicate.
        let (acks, status) = raw_stream(addr, vec![batch("h4", 5, vec![good_flow()])]).await;
        assert!(status.is_none(), "{status:?}");
        assert_eq!(
            acks,
            vec![pb::Ack {
                seq: 5,
                duplicate: true,
                seq_reset: false,
            }]
        );
        // A query asking for a time series finer than a second: refused as
        // a bad argument, by the store, naming the bound.
        let channel = tonic::transport::Endpoint::from_shared(url.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut q = pb::query_client::QueryClient::new(channel);
        let s = q
            .series(pb::SeriesQuery {
                filter: String::new(),
                range: None,
                step_ns: 10_000_000,
                explain: false,
            })
            .await
            .unwrap_err();
        assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}");
        assert!(s.message().contains("at least 1s"), "{}", s.message());
        let d = good.await.unwrap().unwrap();
        assert_eq!((d.pending, d.rejected), (0, 0));
        collector.shutdown().await.unwrap();
    });
    let (offline, _) = run_inputs(
        &[Input::Memory {
            name: "bulk".into(),
            bytes: capture,
        }],
        &RunConfig::default(),
    );
    assert_eq!(stored(&data, Some("good")), sorted(offline));
    let h4 = stored(&data, Some("h4"));
    assert_eq!(h4.len(), 1, "the duplicate was not stored twice");
    for bad in ["h1", "h2", "h3", "h5"] {
        assert!(stored(&data, Some(bad)).is_empty(), "{bad}");
    }
}

#[test]
fn plaintext_is_refused_off_loopback() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = CollectorConfig::new(
        SocketAddr::from(([0, 0, 0, 0], 0)),
        tmp.path().to_path_buf(),
    );
    let e = rt().block_on(server::start(cfg)).unwrap_err();
    assert!(e.to_string().contains("refusing plaintext"), "{e}");
}

// ---- mTLS ----

#[test]
fn mutual_tls_binds_the_sensor_id_to_the_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    let data = tmp.path().join("data");
    let capture = bulk(11, 2_000, 200);
    rt().block_on(async {
        let mut cfg = CollectorConfig::new(loopback0(), data.clone());
        cfg.tls = Some(pki.collector());
        let collector = server::start(cfg).await.unwrap();
        let url = format!("https://{}", collector.addr);
        let input = || {
            vec![Input::Memory {
                name: "bulk".into(),
                bytes: capture,
            }]
        };
        let mut ok = exporter_cfg(&url, "s1", &tmp.path().join("spool-ok"));
        ok.tls = Some(pki.client("s1"));
        let d = sensor_run(input(), ok, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(d.pending, 0);
        // s2's certificate claiming to be s1: refused, and the batches stay spooled.
        let mut bad = exporter_cfg(&url, "s1", &tmp.path().join("spool-bad"));
        bad.tls = Some(pki.client("s2"));
        // The sensor retries a refusal until the drain's time is up.
        let e = sensor_run(input(), bad, Duration::from_secs(3))
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("does not match the client certificate"),
            "{e}"
        );
        // Plaintext to a TLS collector does not get through.
        let plain = exporter_cfg(
            &format!("http://{}", collector.addr),
            "s3",
            &tmp.path().join("spool-plain"),
        );
        let d = sensor_run(input(), plain, Duration::from_secs(2))
            .await
            .unwrap();
        assert!(d.pending > 0);
        collector.shutdown().await.unwrap();
    });
    let (offline, _) = run_inputs(
        &[Input::Memory {
            name: "bulk".into(),
            bytes: capture,
        }],
        &RunConfig::default(),
    );
    assert_eq!(stored(&data, None), sorted(offline), "only s1's own flows");
}

/// A refusal is not the end (issue #31): a sensor whose certificate does
/// not match its id is refused, keeps retrying with backoff while capture
/// goes on and its batches wait in the spool, and once the right
/// certificate is put in place (a rotation) it is read at the next
/// connection and every flow is stored.
#[test]
fn a_refused_sensor_retries_and_recovers_when_its_certificate_is_rotated() {
    use vigil_sensor::export::grpc::Exporter;
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    let data = tmp.path().join("data");
    let capture = bulk(12, 2_000, 200);
    rt().block_on(async {
        let mut cfg = CollectorConfig::new(loopback0(), data.clone());
        cfg.tls = Some(pki.collector());
        let collector = server::start(cfg).await.unwrap();
        let url = format!("https://{}", collector.addr);
        // The sensor's certificate files: s2's at first, while it is s1.
        let own = tmp.path().join("own");
        std::fs::create_dir(&own).unwrap();
        let put = |name: &str| {
            std::fs::copy(tmp.path().join(format!("{name}.pem")), own.join("cert.pem")).unwrap();
            std::fs::copy(tmp.path().join(format!("{name}.key")), own.join("cert.key")).unwrap();
        };
        put("s2");
        let mut exp = exporter_cfg(&url, "s1", &tmp.path().join("spool"));
        exp.tls = Some(ClientTls {
            ca: tmp.path().join("ca.pem"),
            cert: own.join("cert.pem"),
            key: own.join("cert.key"),
            server_name: Some("localhost".into()),
        });
        let live = Arc::new(LiveCounters::default());
        let exporter = Exporter::start(exp, live.clone()).unwrap();
        let inputs = vec![Input::Memory {
            name: "bulk".into(),
            bytes: capture,
        }];
        crate::util::capture_into(&exporter, live, inputs, FlowConfig::default()).await;
        // Refused, and refused again: the sender does not give up.
        let t0 = Instant::now();
        while exporter
            .counters()
            .refusals
            .load(std::sync::atomic::Ordering::Relaxed)
            < 3
        {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "no retries after a refusal"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let why = exporter.refused().expect("the refusal is shown");
        assert!(
            why.contains("does not match the client certificate"),
            "{why}"
        );
        assert_eq!(
            exporter
                .counters()
                .acked
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
        // The rotation: s1's own certificate.
        put("s1");
        let d = exporter.drain(Duration::from_secs(30)).await.unwrap();
        assert_eq!(d.pending, 0, "every batch acknowledged after the rotation");
        assert_eq!(d.rejected, 0);
        collector.shutdown().await.unwrap();
    });
    let (offline, _) = run_inputs(
        &[Input::Memory {
            name: "bulk".into(),
            bytes: capture,
        }],
        &RunConfig::default(),
    );
    assert_eq!(
        stored(&data, None),
        sorted(offline),
        "every flow stored once"
    );
}

// ---- the collector killed and restarted under a running sensor ----

fn stored_count(data: &Path) -> u64 {
    if !data.join("vigil.db").exists() {
        return 0;
    }
    SqliteStore::open(data, SqliteConfig::default())
        .and_then(|s| s.sensors())
        .map(|v| v.iter().map(|s| s.flows).sum())
        .unwrap_or(0)
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Issue #3, "nothing lost" (the script `scripts/chaos.sh` runs the same at
/// 5 M packets with a one-minute outage).
#[test]
fn nothing_is_lost_when_the_collector_is_killed_and_restarted() {
    let tmp = tempfile::tempdir().unwrap();
    let pcap = tmp.path().join("bulk.pcap");
    let cfg = BulkConfig {
        seed: 21,
        packets: 400_000,
        flows: 60_000,
        frame: FrameSize::Fixed(80),
        ..BulkConfig::default()
    };
    std::fs::write(&pcap, cfg.to_pcap_bytes()).unwrap();
    let (offline, _) = run_inputs(&[Input::File(pcap.clone())], &RunConfig::default());
    let total = offline.len() as u64;
    let data = tmp.path().join("data");
    let addr = free_port();
    let mut collector = spawn_collector(addr, &data);
    let sensor = vigil()
        .args(["sensor", "-r"])
        .arg(&pcap)
        .args([
            "--collector",
            &format!("http://{addr}"),
            "--sensor-id",
            "chaos",
            "--batch-flows",
            "128",
            "--drain-timeout",
            "120s",
            "--spool-dir",
        ])
        .arg(tmp.path().join("spool"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sensor");
    let mut kills_mid_stream = 0;
    for (round, fraction) in [(1u64, 5u64), (2, 3), (3, 2)] {
        wait_for("progress", Duration::from_secs(60), || {
            stored_count(&data) >= total * round / (fraction * 2).max(1)
        });
        collector.kill().expect("SIGKILL");
        collector.wait().unwrap();
        let at_kill = stored_count(&data);
        eprintln!("kill {round}: {at_kill} of {total} flows stored");
        kills_mid_stream += u64::from(at_kill < total);
        if round == 2 {
            // Down for a while: the sensor backs off and keeps spooling.
            std::thread::sleep(Duration::from_secs(3));
        }
        collector = spawn_collector(addr, &data);
    }
    let out = sensor.wait_with_output().expect("sensor");
    assert!(
        out.status.success(),
        "sensor failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    collector.kill().unwrap();
    collector.wait().unwrap();
    assert!(
        kills_mid_stream >= 2,
        "the collector was killed after the stream ended"
    );
    let got = stored(&data, Some("chaos"));
    assert_eq!(got.len() as u64, total, "none missing, none twice");
    assert_eq!(got, sorted(offline));
}

/// SIGTERM: the sensor stops reading, flushes its open flows (end reason
/// `shutdown`), waits (bounded) for acks, keeps the rest in its spool and
/// sends it at the next start.
#[test]
fn sigterm_flushes_open_flows_into_the_spool_and_the_next_start_sends_them() {
    let tmp = tempfile::tempdir().unwrap();
    let pcap = tmp.path().join("long.pcap");
    // Long enough that the sensor is still reading when the signal comes:
    // a slow pipe feeds it.
    let cfg = BulkConfig {
        seed: 4,
        packets: 200_000,
        flows: 5_000,
        frame: FrameSize::Fixed(80),
        ..BulkConfig::default()
    };
    std::fs::write(&pcap, cfg.to_pcap_bytes()).unwrap();
    let addr = free_port();
    let url = format!("http://{addr}");
    let spool = tmp.path().join("spool");
    let mut sensor = vigil()
        .args([
            "sensor",
            "-r",
            "-",
            "--collector",
            &url,
            "--sensor-id",
            "term",
            "--drain-timeout",
            "1s",
            "--spool-dir",
        ])
        .arg(&spool)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let bytes = std::fs::read(&pcap).unwrap();
    let mut stdin = sensor.stdin.take().unwrap();
    // The first half of the capture, then nothing: the sensor waits for more.
    std::io::Write::write_all(&mut stdin, &bytes[..bytes.len() / 2]).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let ok = Command::new("kill")
        .args(["-TERM", &sensor.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    // Standard input stays open: the stop must not depend on end of input.
    let out = sensor.wait_with_output().unwrap();
    drop(stdin);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("not acknowledged"), "{err}");
    // The collector comes up; a new sensor run (no packets) sends the spool.
    let data = tmp.path().join("data");
    let mut collector = spawn_collector(addr, &data);
    let empty = tmp.path().join("empty.pcap");
    std::fs::write(&empty, &bytes[..24]).unwrap();
    let o = vigil()
        .args(["sensor", "-r"])
        .arg(&empty)
        .args(["--collector", &url, "--sensor-id", "term", "--spool-dir"])
        .arg(&spool)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    collector.kill().unwrap();
    collector.wait().unwrap();
    let got = stored(&data, Some("term"));
    assert!(!got.is_empty());
    assert!(
        got.iter()
            .all(|r| r.end_reason == vigil_proto::EndReason::Shutdown),
        "open flows were flushed as `shutdown`"
    );
    let flows: std::collections::HashSet<u64> = got.iter().map(|r| r.flow_id).collect();
    assert_eq!(flows.len(), got.len(), "one record per flow");
}

#[test]
fn prometheus_metrics_show_ingest_and_per_sensor_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let capture = bulk(13, 5_000, 500);
    rt().block_on(async {
        let mut cfg = CollectorConfig::new(loopback0(), tmp.path().join("data"));
        cfg.metrics_listen = Some(loopback0());
        let collector = server::start(cfg).await.unwrap();
        let url = format!("http://{}", collector.addr);
        let d = sensor_run(
            vec![Input::Memory {
                name: "bulk".into(),
                bytes: capture,
            }],
            exporter_cfg(&url, "m1", &tmp.path().join("spool")),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        assert_eq!(d.pending, 0);
        let m = collector.metrics_addr.unwrap();
        let mut s = tokio::net::TcpStream::connect(m).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).await.unwrap();
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        assert!(
            body.contains("vigil_collector_batches_total{result=\"stored\"} 1"),
            "{body}"
        );
        assert!(
            body.contains("vigil_collector_flows_stored_total 500"),
            "{body}"
        );
        assert!(
            body.contains("vigil_collector_sensor_flows_total{sensor=\"m1\"} 500"),
            "{body}"
        );
        assert!(
            body.contains("vigil_collector_sensor_packets_total{sensor=\"m1\"} 5000"),
            "{body}"
        );
        assert!(
            body.contains("vigil_collector_sensor_spool_dropped_flows_total{sensor=\"m1\"} 0"),
            "{body}"
        );
        assert!(
            body.contains("vigil_collector_commit_seconds_count 1"),
            "{body}"
        );
        let exposition = body.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        promtool_accepts(exposition);
        collector.shutdown().await.unwrap();
    });
}

/// Prometheus's own linter (`promtool check metrics`, Debian package
/// prometheus) takes the exposition without a complaint.
pub(crate) fn promtool_accepts(exposition: &str) {
    use std::io::Write as _;
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            crate::util::skip(&format!(
                "promtool (Debian package prometheus) not found ({e}): the exposition is not linted"
            ));
            return;
        }
    };
    crate::util::ran_with("promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {said}\n{exposition}"
    );
}

/// The collector builds column segments as flows arrive (its upkeep runs
/// every second) and queries read them beside SQLite: the answers are the
/// in-memory reference's over what was stored.
#[test]
fn the_collector_builds_column_segments_as_flows_arrive() {
    use vigil_collector::query::{TopBy, TopKey, memory};
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let rt = rt();
    rt.block_on(async {
        let mut cfg = CollectorConfig::new(loopback0(), data.clone());
        cfg.store.synchronous = Synchronous::Normal;
        cfg.store.segment_rows = Some(100);
        let collector = server::start(cfg).await.expect("collector");
        let url = format!("http://{}", collector.addr);
        let d = sensor_run(
            vec![Input::Memory {
                name: "bulk".into(),
                bytes: bulk(11, 20_000, 1_000),
            }],
            exporter_cfg(&url, "columns", &tmp.path().join("spool")),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
        assert_eq!((d.pending, d.rejected), (0, 0));
        let stored = stored(&data, None).len();
        assert!(stored >= 1_000, "{stored} flows");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let built = std::fs::read_dir(data.join("columns")).map_or(0, |d| {
                d.filter(|e| {
                    e.as_ref()
                        .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "col"))
                })
                .count()
            });
            if built == stored / 100 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{built} segments built of {}",
                stored / 100
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        collector.shutdown().await.unwrap();
    });
    let store = SqliteStore::open_read_only(&data).unwrap();
    let records = store
        .flows(&Filter::All, TimeRange::default(), usize::MAX)
        .unwrap();
    let all = TimeRange::default();
    let plan = vigil_collector::store::plan::top(
        &Filter::All,
        all,
        TopKey::Src,
        TopBy::Bytes,
        10,
        store.rollups(),
    );
    let explained = store.explain(&plan).unwrap().join("\n");
    assert!(
        explained.contains(&format!("{} column segments", records.len() / 100)),
        "{explained}"
    );
    for key in [
        TopKey::Src,
        TopKey::Dst,
        TopKey::DstPort,
        TopKey::SrcPort,
        TopKey::Proto,
    ] {
        assert_eq!(
            store.top(&Filter::All, all, key, TopBy::Bytes, 10).unwrap(),
            memory::top(&records, &Filter::All, all, key, TopBy::Bytes, 10),
            "{key:?}"
        );
    }
    assert_eq!(
        store.count(&Filter::All, all).unwrap(),
        memory::count(&records, &Filter::All, all)
    );
}
