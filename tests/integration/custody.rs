//! Chain of custody (issue #31), end to end: a sensor whose spool is lost
//! is stored under a new incarnation and the reset reported; two live
//! sensors claiming one id are both stored and the conflict reported.

use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use vigil_collector::query::{Filter, TimeRange};
use vigil_collector::server::{self, CollectorConfig};
use vigil_collector::store::prelude::*;
use vigil_collector::store::sqlite::{SqliteConfig, SqliteStore, Synchronous};
use vigil_proto::{FlowRecord, pb};
use vigil_sensor::export::grpc::{Exporter, ExporterConfig};
use vigil_sensor::flow::FlowConfig;
use vigil_sensor::run::{Input, LiveCounters, RunConfig};
use vigil_sensor::synth::{BulkConfig, FrameSize};

use crate::util::{capture_into, free_port, rt, run_inputs, spawn_collector, vigil};

/// The collector's status over gRPC (with TLS when given).
async fn status(url: &str, tls: Option<tonic::transport::ClientTlsConfig>) -> pb::StatusReply {
    let mut ep = tonic::transport::Endpoint::from_shared(url.to_string()).unwrap();
    if let Some(t) = tls {
        ep = ep.tls_config(t).unwrap();
    }
    pb::query_client::QueryClient::new(ep.connect().await.unwrap())
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// Flow identities, sorted, to compare stored with offline records.
fn keys(recs: impl IntoIterator<Item = FlowRecord>) -> Vec<(u64, u64, u64)> {
    let mut v: Vec<_> = recs
        .into_iter()
        .map(|r| (r.first_seen_ns, r.flow_id, r.last_seen_ns))
        .collect();
    v.sort_unstable();
    v
}

fn stored(data: &Path, sensor: &str) -> Vec<FlowRecord> {
    let store = SqliteStore::open(data, SqliteConfig::default()).expect("open store");
    store
        .flows(
            &Filter::Sensor(sensor.to_string()),
            TimeRange::default(),
            usize::MAX,
        )
        .expect("read store")
        .into_iter()
        .map(|(_, r)| r)
        .collect()
}

pub fn capture(path: &Path, seed: u64) -> Vec<FlowRecord> {
    let cfg = BulkConfig {
        seed,
        packets: 6_000,
        flows: 1_500,
        frame: FrameSize::Fixed(80),
        ..BulkConfig::default()
    };
    std::fs::write(path, cfg.to_pcap_bytes()).expect("write capture");
    run_inputs(&[Input::File(path.to_path_buf())], &RunConfig::default()).0
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// As a user would: a sensor run; its spool deleted; a second run under
/// the same id with a fresh spool. Every record of both runs is stored
/// (before, the collector took the second run's batches 1..N for
/// duplicates of the first's and dropped them), and the reset is reported
/// by the sensor and in the collector's status.
#[test]
fn a_sensor_whose_spool_was_lost_is_stored_and_the_reset_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a.pcap"), tmp.path().join("b.pcap"));
    let (first, second) = (capture(&a, 41), capture(&b, 42));
    let data = tmp.path().join("data");
    let addr = free_port();
    let mut collector = spawn_collector(addr, &data);
    let url = format!("http://{addr}");
    let spool = tmp.path().join("spool");
    // The sensor's attestation key is kept apart from its spool (as on a
    // host whose spool disk is replaced): the same sensor comes back.
    let conf = tmp.path().join("sensor.toml");
    std::fs::write(
        &conf,
        format!(
            "[export]\nattestation_key = {:?}\n",
            tmp.path()
                .join("etc/attestation-key.pem")
                .display()
                .to_string()
        ),
    )
    .unwrap();
    let run = |pcap: &Path| {
        vigil()
            .args(["sensor", "-c"])
            .arg(&conf)
            .arg("-r")
            .arg(pcap)
            .args([
                "--collector",
                &url,
                "--sensor-id",
                "plant-1",
                "--batch-flows",
                "100",
                "--drain-timeout",
                "30s",
                "--spool-dir",
            ])
            .arg(&spool)
            .output()
            .expect("run sensor")
    };
    let o1 = run(&a);
    assert!(o1.status.success(), "{}", stderr(&o1));
    assert!(!stderr(&o1).contains("started its sequence numbers again"));
    std::fs::remove_dir_all(&spool).unwrap();
    let o2 = run(&b);
    assert!(o2.status.success(), "{}", stderr(&o2));
    assert!(
        stderr(&o2).contains("started its sequence numbers again"),
        "the sensor reports the reset: {}",
        stderr(&o2)
    );
    let status = vigil()
        .args([
            "query",
            "--status",
            "--format",
            "jsonl",
            "--collector",
            &url,
        ])
        .output()
        .expect("query status");
    assert!(status.status.success(), "{}", stderr(&status));
    let line = String::from_utf8(status.stdout).unwrap();
    let v: serde_json::Value = serde_json::from_str(line.trim()).expect(&line);
    assert_eq!(v["seq_resets"], 1, "{v}");
    assert_eq!(v["duplicates"], 0, "{v}");
    assert_eq!(v["flows"], (first.len() + second.len()) as u64, "{v}");
    collector.kill().unwrap();
    collector.wait().unwrap();
    assert_eq!(
        keys(stored(&data, "plant-1")),
        keys(first.into_iter().chain(second)),
        "every record of both runs stored, none twice"
    );
}

/// Two live sensors claiming one id (a copied configuration): both
/// streams are stored, each deduplicated on its own, and the conflict is
/// counted in the collector's status.
#[test]
fn two_live_sensors_with_one_id_are_both_stored_and_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a.pcap"), tmp.path().join("b.pcap"));
    let (first, second) = (capture(&a, 51), capture(&b, 52));
    let data = tmp.path().join("data");
    rt().block_on(async {
        let mut cfg = CollectorConfig::new("127.0.0.1:0".parse().unwrap(), data.clone());
        cfg.store.synchronous = Synchronous::Normal;
        let collector = server::start(cfg).await.expect("collector");
        let url = format!("http://{}", collector.addr);
        let exporter = |spool: &str| {
            let mut e = ExporterConfig::new(url.clone(), "twin".into(), tmp.path().join(spool));
            // One key for both (a copied configuration): a host signing
            // with another key than the id's is refused (issue #26,
            // `bundles::a_sensor_signing_with_another_key…`).
            e.attestation_key = Some(tmp.path().join("twin-key.pem"));
            e.batch_flows = 100;
            e.batch_delay = Duration::from_millis(50);
            let live = Arc::new(LiveCounters::default());
            (Exporter::start(e, live.clone()).expect("exporter"), live)
        };
        let (ea, la) = exporter("spool-a");
        capture_into(&ea, la, vec![Input::File(a.clone())], FlowConfig::default()).await;
        // The second host comes up while the first still streams.
        let (eb, lb) = exporter("spool-b");
        capture_into(&eb, lb, vec![Input::File(b.clone())], FlowConfig::default()).await;
        let (ra, rb) = (
            ea.drain(Duration::from_secs(30)).await.expect("drain a"),
            eb.drain(Duration::from_secs(30)).await.expect("drain b"),
        );
        assert_eq!((ra.pending, rb.pending), (0, 0));
        assert_eq!(ra.seq_resets + rb.seq_resets, 1, "one of them is told");
        let st = status(&url, None).await;
        let s = &st.sensors[0];
        assert_eq!((s.sensor_id.as_str(), s.seq_resets), ("twin", 1), "{s:?}");
        assert!(s.id_conflicts >= 1, "{s:?}");
        assert_eq!(s.flows, (first.len() + second.len()) as u64);
        collector.shutdown().await.unwrap();
    });
    assert_eq!(
        keys(stored(&data, "twin")),
        keys(first.into_iter().chain(second))
    );
}

/// As a user would, with mTLS and `[access] analysts = ["alice"]`: sensor
/// s1's certificate streams as s1 and is refused as s2; an analyst's
/// certificate may not stream; `vigil query` with s1's certificate exits
/// non-zero naming the permission, with alice's it gets the answer; every
/// refusal is counted.
#[test]
fn sensors_stream_as_themselves_and_only_analysts_read() {
    use crate::util::Pki;
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::new(tmp.path());
    let a = tmp.path().join("a.pcap");
    let flows = capture(&a, 61);
    let data = tmp.path().join("data");
    rt().block_on(async {
        let mut cfg = CollectorConfig::new("127.0.0.1:0".parse().unwrap(), data.clone());
        cfg.tls = Some(pki.collector());
        cfg.analysts = vec!["alice".into()];
        let collector = server::start(cfg).await.expect("collector");
        let url = format!("https://{}", collector.addr);
        let run = |id: &str, cert: &str, spool: &str, drain: u64| {
            let mut e = ExporterConfig::new(url.clone(), id.into(), tmp.path().join(spool));
            e.batch_delay = Duration::from_millis(50);
            e.backoff_max = Duration::from_millis(300);
            e.tls = Some(pki.client(cert));
            crate::util::sensor_with(
                vec![Input::File(a.clone())],
                e,
                FlowConfig::default(),
                Duration::from_secs(drain),
            )
        };
        let ok = run("s1", "s1", "spool-s1", 30).await.expect("s1 as s1");
        assert_eq!(ok.pending, 0);
        let e = run("s2", "s1", "spool-s2", 2).await.unwrap_err();
        assert!(e.to_string().contains("does not match"), "{e}");
        let e = run("alice", "alice", "spool-alice", 2).await.unwrap_err();
        assert!(e.to_string().contains("analyst"), "{e}");
        let query = |who: &'static str| {
            let (url, dir) = (url.clone(), tmp.path().to_path_buf());
            tokio::task::spawn_blocking(move || {
                vigil()
                    .args(["query", "--count", "--collector", &url, "--tls-server-name"])
                    .arg("localhost")
                    .arg("--tls-ca")
                    .arg(dir.join("ca.pem"))
                    .arg("--tls-cert")
                    .arg(dir.join(format!("{who}.pem")))
                    .arg("--tls-key")
                    .arg(dir.join(format!("{who}.key")))
                    .output()
                    .expect("vigil query")
            })
        };
        let denied = query("s1").await.unwrap();
        assert!(!denied.status.success());
        assert!(
            stderr(&denied).contains("permission denied"),
            "{}",
            stderr(&denied)
        );
        let answered = query("alice").await.unwrap();
        assert!(answered.status.success(), "{}", stderr(&answered));
        let out = String::from_utf8_lossy(&answered.stdout);
        assert!(out.contains(&flows.len().to_string()), "{out}");
        // Evidence bundles are the analysts' too: s1 is refused, alice is
        // let through (to find no alert 1 here).
        let export = |who: &'static str| {
            let (url, dir) = (url.clone(), tmp.path().to_path_buf());
            tokio::task::spawn_blocking(move || {
                vigil()
                    .args(["evidence", "export", "1", "-o"])
                    .arg(dir.join(format!("{who}.tar")))
                    .args(["--collector", &url, "--tls-server-name", "localhost"])
                    .arg("--tls-ca")
                    .arg(dir.join("ca.pem"))
                    .arg("--tls-cert")
                    .arg(dir.join(format!("{who}.pem")))
                    .arg("--tls-key")
                    .arg(dir.join(format!("{who}.key")))
                    .output()
                    .expect("vigil evidence export")
            })
        };
        let e = stderr(&export("s1").await.unwrap());
        assert!(e.contains("permission denied"), "{e}");
        let e = stderr(&export("alice").await.unwrap());
        assert!(e.contains("no alert 1"), "{e}");
        // The refusals, as alice sees them: s2 and alice streaming, s1 reading.
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(
                std::fs::read(tmp.path().join("ca.pem")).unwrap(),
            ))
            .identity(tonic::transport::Identity::from_pem(
                std::fs::read(tmp.path().join("alice.pem")).unwrap(),
                std::fs::read(tmp.path().join("alice.key")).unwrap(),
            ))
            .domain_name("localhost");
        let st = status(&url, Some(tls)).await;
        assert!(st.refusals >= 3, "{}", st.refusals);
        assert_eq!(st.sensors.len(), 1, "only s1 stored");
        collector.shutdown().await.unwrap();
    });
    assert_eq!(keys(stored(&data, "s1")), keys(flows));
    // The store knows the certificate s1 streamed with, by the fingerprint
    // OpenSSL gives it (what an evidence bundle's sensors.json shows).
    use vigil_collector::store::EvidenceStore as _;
    let certs = SqliteStore::open_read_only(&data)
        .unwrap()
        .sensor_certificates("s1")
        .unwrap();
    match std::process::Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(tmp.path().join("s1.pem"))
        .output()
    {
        Ok(o) => {
            crate::util::ran_with("openssl");
            let text = String::from_utf8_lossy(&o.stdout).to_lowercase();
            let hex: String = text
                .split_once('=')
                .expect("a fingerprint")
                .1
                .trim()
                .replace(':', "");
            assert_eq!(certs, vec![format!("sha256:{hex}")]);
        }
        Err(e) => crate::util::skip(&format!("openssl not runnable ({e})")),
    }
}

/// The issue's two-sensor clock scenario, with real captures over real
/// gRPC: a spoofed SYN flood streamed by sensor "a" in two halves, and
/// between them sensor "b", whose clock runs 12 h ahead (inside
/// `max_clock_skew`), streaming an FTP brute force against a second
/// protected host. One flood alert covers both halves (before: two, the
/// first closed by the other sensor's clock), and the brute force is
/// raised.
#[test]
fn a_flood_streamed_around_a_sensor_whose_clock_runs_ahead_is_one_alert() {
    use vigil_collector::detect::AlertKind;
    use vigil_collector::detect::config::DetectConfig;
    use vigil_collector::store::AlertQuery;

    use crate::detection::{asset, wait_detected};
    use crate::util::{corpus_dir, pcap_slice, sensor_with};
    let Some(dir) = corpus_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let flood = dir.join("stopddos__pkt.TCP.synflood.spoofed.pcap");
    let ftp = dir.join("chrissanders-packets__ppa1e__ftp-crack.pcap");
    let (h1, h2, ahead) = (
        tmp.path().join("h1.pcap"),
        tmp.path().join("h2.pcap"),
        tmp.path().join("ftp-ahead.pcap"),
    );
    let n = pcap_slice(&flood, &h1, 0..usize::MAX, 0);
    pcap_slice(&flood, &h1, 0..n / 2, 0);
    pcap_slice(&flood, &h2, n / 2..n, 0);
    // The flood starts at 1619605821 s, the FTP capture at 1024380731 s.
    pcap_slice(
        &ftp,
        &ahead,
        0..usize::MAX,
        1_619_605_821 + 12 * 3600 - 1_024_380_731,
    );
    let detect = DetectConfig::with_assets(&[
        asset("plant-web", &["10.10.10.10"]),
        asset("plant-ftp", &["10.121.70.151"]),
    ])
    .expect("assets");
    let data = tmp.path().join("data");
    rt().block_on(async {
        let mut cfg = CollectorConfig::new("127.0.0.1:0".parse().unwrap(), data.clone());
        cfg.store.synchronous = Synchronous::Normal;
        cfg.detect = Some(Arc::new(detect));
        let collector = server::start(cfg).await.expect("collector");
        let url = format!("http://{}", collector.addr);
        let flow = FlowConfig {
            report_interval: Some(Duration::from_secs(1)),
            ..FlowConfig::default()
        };
        for (id, file) in [("a", &h1), ("b", &ahead), ("a", &h2)] {
            let mut e = ExporterConfig::new(url.clone(), id.into(), tmp.path().join(id));
            e.batch_delay = Duration::from_millis(50);
            let d = sensor_with(
                vec![Input::File(file.clone())],
                e,
                flow,
                Duration::from_secs(60),
            )
            .await
            .expect("sensor");
            assert_eq!(d.pending, 0);
        }
        wait_detected(&url).await;
        collector.shutdown().await.unwrap();
    });
    let store = SqliteStore::open_read_only(&data).unwrap();
    let alerts = store.alerts(&AlertQuery::default()).unwrap();
    let floods: Vec<_> = alerts
        .iter()
        .filter(|a| a.kind == AlertKind::SynFlood && a.asset == "plant-web")
        .collect();
    assert_eq!(
        floods.len(),
        1,
        "one flood alert: {:#?}",
        floods
            .iter()
            .map(|a| (a.first_seen_ns, a.last_seen_ns, &a.summary))
            .collect::<Vec<_>>()
    );
    // It covers both halves: from the first half into the second.
    assert!(floods[0].last_seen_ns - floods[0].first_seen_ns > 15_000_000_000);
    assert!(
        alerts
            .iter()
            .any(|a| a.kind == AlertKind::BruteForce && a.asset == "plant-ftp"),
        "{:?}",
        alerts
            .iter()
            .map(|a| (a.kind, &a.asset))
            .collect::<Vec<_>>()
    );
}

// ---- bounded memory under hostile streams ----

/// One hostile peer: until `end`, opens ingest streams and sends 16 MB
/// of garbage on each, as `parts` messages.
async fn garbage_peer(url: String, garbage: bytes::Bytes, parts: usize, end: std::time::Instant) {
    let Ok(ch) = tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .connect()
        .await
    else {
        return;
    };
    while std::time::Instant::now() < end {
        let mut grpc = tonic::client::Grpc::new(ch.clone()).max_encoding_message_size(usize::MAX);
        if grpc.ready().await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let msgs = tokio_stream::iter(std::iter::repeat_n(garbage.clone(), parts));
        let resp = grpc
            .streaming(
                tonic::Request::new(msgs),
                tonic::codegen::http::uri::PathAndQuery::from_static("/vigil.v1.Ingest/Stream"),
                crate::util::Raw,
            )
            .await;
        if let Ok(r) = resp {
            let mut inbound = r.into_inner();
            while let Ok(Some(_)) = inbound.message().await {}
        }
    }
}

/// A peak resident set size, from `/proc/PID/status` (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .expect("VmHWM")
}

/// Tried as a new user would (issue #31): 150 concurrent streams sending
/// 16 MB of garbage each, for 15 s, drove the collector to 2.4 GB and
/// rising. With the default limits (messages above 4 MiB refused before
/// they are read, 128 streams at once, 128 MiB of batches in flight) its
/// peak RSS stays under 1 GiB, and a well-behaved sensor streaming
/// meanwhile has every flow stored.
#[test]
fn hostile_streams_cannot_grow_the_collector_past_its_bound() {
    let tmp = tempfile::tempdir().unwrap();
    let pcap = tmp.path().join("good.pcap");
    let flows = capture(&pcap, 71);
    let data = tmp.path().join("data");
    let addr = free_port();
    let mut collector = spawn_collector(addr, &data);
    let url = format!("http://{addr}");
    std::thread::sleep(Duration::from_millis(500));
    let started = std::time::Instant::now();
    let end = started + Duration::from_secs(15);
    let rt = rt();
    // Garbage of two shapes: one 16 MB message (declared larger than the
    // limit), and four messages just under the 4 MiB limit.
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut noise = |n: usize| -> bytes::Bytes {
        (0..n)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng as u8
            })
            .collect::<Vec<u8>>()
            .into()
    };
    let (big, under) = (noise(16_000_000), noise((4 << 20) - 64));
    let peers: Vec<_> = (0..150)
        .map(|i| {
            let (g, parts) = if i % 2 == 0 {
                (big.clone(), 1)
            } else {
                (under.clone(), 4)
            };
            rt.spawn(garbage_peer(url.clone(), g, parts, end))
        })
        .collect();
    // The well-behaved sensor, while the garbage flows.
    let sensor = vigil()
        .args(["sensor", "-r"])
        .arg(&pcap)
        .args([
            "--collector",
            &url,
            "--sensor-id",
            "good",
            "--drain-timeout",
            "90s",
            "--spool-dir",
        ])
        .arg(tmp.path().join("spool"))
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sensor");
    rt.block_on(async {
        for p in peers {
            let _ = p.await;
        }
    });
    let out = sensor.wait_with_output().expect("sensor");
    let peak = peak_rss(collector.id());
    collector.kill().unwrap();
    collector.wait().unwrap();
    eprintln!(
        "collector peak RSS under 150 garbage streams for {:?}: {} MiB",
        started.elapsed(),
        peak >> 20
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(peak < 1 << 30, "peak RSS {} MiB", peak >> 20);
    assert_eq!(keys(stored(&data, "good")), keys(flows));
}

/// `INVALID_ARGUMENT` for a problem of the transport is no reason to drop
/// data (issue #31): a collector whose message limit is below the
/// sensor's batches refuses every one; the sensor keeps them, retries and
/// says so, and once the limit is raised every flow is stored. (A batch
/// refused for its content, named by the collector, is still dropped and
/// counted: `transport::a_batch_rejected_for_a_future_timestamp…`.)
#[test]
fn a_batch_the_collector_cannot_take_is_kept_not_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let pcap = tmp.path().join("a.pcap");
    let flows = capture(&pcap, 81);
    let data = tmp.path().join("data");
    let spool = tmp.path().join("spool");
    let exporter = |url: &str| {
        let mut e = ExporterConfig::new(url.to_string(), "kept".into(), spool.clone());
        e.batch_delay = Duration::from_millis(50);
        e.backoff_max = Duration::from_millis(300);
        e
    };
    rt().block_on(async {
        let mut cfg = CollectorConfig::new("127.0.0.1:0".parse().unwrap(), data.clone());
        cfg.store.synchronous = Synchronous::Normal;
        cfg.max_message_bytes = 16 << 10;
        let small = server::start(cfg).await.expect("collector");
        let url = format!("http://{}", small.addr);
        let live = Arc::new(LiveCounters::default());
        let exp = Exporter::start(exporter(&url), live.clone()).expect("exporter");
        capture_into(
            &exp,
            live,
            vec![Input::File(pcap.clone())],
            FlowConfig::default(),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let refused = exp.refused().expect("the sensor shows the refusal");
        assert!(refused.contains("unreadable message"), "{refused}");
        let e = exp.drain(Duration::from_secs(1)).await.unwrap_err();
        assert!(e.to_string().contains("refus"), "{e}");
        small.shutdown().await.unwrap();
        // The limit raised: everything is sent from the spool.
        let mut cfg = CollectorConfig::new("127.0.0.1:0".parse().unwrap(), data.clone());
        cfg.store.synchronous = Synchronous::Normal;
        let fixed = server::start(cfg).await.expect("collector");
        let url = format!("http://{}", fixed.addr);
        let exp = Exporter::start(exporter(&url), Arc::new(LiveCounters::default())).unwrap();
        let d = exp.drain(Duration::from_secs(30)).await.expect("drain");
        assert_eq!((d.pending, d.rejected), (0, 0));
        fixed.shutdown().await.unwrap();
    });
    assert_eq!(keys(stored(&data, "kept")), keys(flows));
}

/// Capture never blocks on the sink (issue #31): with the live hand-off, a
/// sink that stalls (a disk that stops answering) while traffic flows
/// leaves the capture reading every packet at its own pace; the records
/// beyond the hand-off's buffer are dropped and counted, exactly, and the
/// count reaches the collector as `channel_full_drops`.
#[test]
fn a_stalled_sink_never_stalls_capture_and_its_drops_are_counted() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let tmp = tempfile::tempdir().unwrap();
    let pcap = tmp.path().join("busy.pcap");
    let bulk = BulkConfig {
        seed: 91,
        packets: 200_000,
        flows: 40_000,
        frame: FrameSize::Fixed(80),
        ..BulkConfig::default()
    };
    std::fs::write(&pcap, bulk.to_pcap_bytes()).unwrap();
    let (offline, report) = run_inputs(&[Input::File(pcap.clone())], &RunConfig::default());
    let data = tmp.path().join("data");
    rt().block_on(async {
        let mut cfg = CollectorConfig::new("127.0.0.1:0".parse().unwrap(), data.clone());
        cfg.store.synchronous = Synchronous::Normal;
        let collector = server::start(cfg).await.expect("collector");
        let url = format!("http://{}", collector.addr);
        let live = Arc::new(LiveCounters::default());
        let mut e = ExporterConfig::new(url.clone(), "stalled".into(), tmp.path().join("spool"));
        e.batch_delay = Duration::from_millis(50);
        let exp = Exporter::start(e, live.clone()).expect("exporter");
        let sink = exp.sink();
        let run_cfg = RunConfig {
            live: Some(live.clone()),
            lossy_handoff: Some(5_000),
            ..RunConfig::default()
        };
        let (counters, packets) = (live.clone(), report.packets);
        let read_while_stalled = Arc::new(AtomicBool::new(false));
        let seen = read_while_stalled.clone();
        let stored = tokio::task::spawn_blocking(move || {
            let mut stalled = false;
            let mut stored = 0usize;
            let mut push = |recs: &[FlowRecord]| {
                if !stalled {
                    stalled = true;
                    // The disk stops answering until the capture has read
                    // every packet: a capture waiting for the sink would
                    // never get there.
                    let t0 = std::time::Instant::now();
                    while counters.packets.load(Ordering::Relaxed) < packets {
                        assert!(
                            t0.elapsed() < Duration::from_secs(60),
                            "the capture stalled with its sink"
                        );
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    seen.store(true, Ordering::Relaxed);
                }
                stored += recs.len();
                sink.push(recs)
            };
            vigil_sensor::run::run(&[Input::File(pcap)], &run_cfg, &mut push, None)
                .expect("pipeline");
            stored
        })
        .await
        .unwrap();
        assert!(read_while_stalled.load(Ordering::Relaxed));
        let drops = live.handoff_drops.load(Ordering::Relaxed);
        assert!(drops > 0, "the buffer overflowed while the sink stalled");
        assert_eq!(
            stored as u64 + drops,
            offline.len() as u64,
            "every record stored or counted"
        );
        let d = exp.drain(Duration::from_secs(30)).await.expect("drain");
        assert_eq!(d.pending, 0);
        let st = status(&url, None).await;
        let s = &st.sensors[0];
        assert_eq!(s.flows, stored as u64);
        assert_eq!(s.stats.as_ref().unwrap().channel_full_drops, drops);
        collector.shutdown().await.unwrap();
    });
}

/// `vigil detect` (issue #31): captures stored by a collector with
/// detection off, then the detectors run over the store from the command
/// line, give the alerts a live run raised (kind and asset); run again, it
/// finds them stored and stores nothing twice.
#[test]
fn vigil_detect_over_flows_stored_without_detection_gives_the_live_alerts() {
    use std::collections::BTreeSet;

    use vigil_collector::config::CollectorFile;
    use vigil_collector::store::AlertQuery;

    use crate::detection::wait_detected;
    use crate::util::{corpus_dir, sensor_with};
    let Some(dir) = corpus_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let inputs = || {
        [
            "stopddos__pkt.TCP.synflood.spoofed.pcap",
            "chrissanders-packets__ppa1e__ftp-crack.pcap",
            "chrissanders-packets__synscan.pcapng",
        ]
        .map(|f| Input::File(dir.join(f)))
        .to_vec()
    };
    let toml = |data: &Path| {
        format!(
            "data_dir = {:?}\n\
             [[protected]]\nname = \"web\"\ncidrs = [\"10.10.10.10/32\"]\nsector = \"test\"\ncriticality = \"high\"\n\
             [[protected]]\nname = \"ftp\"\ncidrs = [\"10.121.70.151/32\"]\nsector = \"test\"\ncriticality = \"high\"\n\
             [[protected]]\nname = \"scanned\"\ncidrs = [\"64.13.134.52/32\"]\nsector = \"test\"\ncriticality = \"high\"\n",
            data.display().to_string()
        )
    };
    let (live_data, off_data) = (tmp.path().join("live"), tmp.path().join("off"));
    let conf = tmp.path().join("collector.toml");
    std::fs::write(&conf, toml(&off_data)).unwrap();
    let live_cfg = CollectorFile::parse(&toml(&live_data), "live")
        .unwrap()
        .validate()
        .unwrap();
    assert!(live_cfg.detect.is_some());
    let run = |mut cfg: CollectorConfig, detect: bool, spool: &'static str| {
        let tmp = tmp.path().to_path_buf();
        rt().block_on(async move {
            cfg.listen = "127.0.0.1:0".parse().unwrap();
            cfg.store.synchronous = Synchronous::Normal;
            if !detect {
                cfg.detect = None;
            }
            let c = server::start(cfg).await.expect("collector");
            let url = format!("http://{}", c.addr);
            let mut e = ExporterConfig::new(url.clone(), "site".into(), tmp.join(spool));
            e.batch_delay = Duration::from_millis(50);
            let flow = FlowConfig {
                report_interval: Some(Duration::from_secs(1)),
                ..FlowConfig::default()
            };
            let d = sensor_with(inputs(), e, flow, Duration::from_secs(60))
                .await
                .expect("sensor");
            assert_eq!(d.pending, 0);
            if detect {
                wait_detected(&url).await;
            }
            c.shutdown().await.unwrap();
        });
    };
    run(live_cfg.clone(), true, "spool-live");
    let mut off_cfg = live_cfg;
    off_cfg.data_dir = off_data.clone();
    run(off_cfg, false, "spool-off");
    let kinds = |data: &Path| -> BTreeSet<(String, String)> {
        SqliteStore::open_read_only(data)
            .unwrap()
            .alerts(&AlertQuery::default())
            .unwrap()
            .iter()
            .map(|a| (a.kind.as_str().to_string(), a.asset.clone()))
            .collect()
    };
    let live = kinds(&live_data);
    assert!(live.len() >= 3, "{live:?}");
    assert!(kinds(&off_data).is_empty(), "detection was off");
    let detect = || {
        vigil()
            .args(["detect", "-c"])
            .arg(&conf)
            .output()
            .expect("vigil detect")
    };
    let first = detect();
    assert!(first.status.success(), "{}", stderr(&first));
    let text = String::from_utf8_lossy(&first.stdout).into_owned();
    assert!(text.contains("0 already stored"), "{text}");
    assert_eq!(kinds(&off_data), live, "the live run's alerts: {text}");
    let n = SqliteStore::open_read_only(&off_data)
        .unwrap()
        .alerts(&AlertQuery::default())
        .unwrap()
        .len();
    let again = detect();
    let text = String::from_utf8_lossy(&again.stdout).into_owned();
    assert!(
        text.contains(&format!("{n} already stored, 0 new")),
        "{text}"
    );
    assert_eq!(
        SqliteStore::open_read_only(&off_data)
            .unwrap()
            .alerts(&AlertQuery::default())
            .unwrap()
            .len(),
        n,
        "nothing stored twice"
    );
}

/// Detection that resumes (issue #31): a collector SIGKILLed in the middle
/// of an attack and restarted raises the attack's alert once (the windows
/// are rebuilt from the stored flows and the stored alert continued); and
/// flows a collector stored without examining them (here: detection was
/// off) are examined at the next start.
#[test]
fn an_attack_spanning_a_collector_kill_is_one_alert() {
    use vigil_collector::store::AlertQuery;

    use crate::util::{corpus_dir, pcap_slice};
    let Some(dir) = corpus_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let flood = dir.join("stopddos__pkt.TCP.synflood.spoofed.pcap");
    let parts: Vec<_> = (0..3)
        .map(|i| tmp.path().join(format!("part{i}.pcap")))
        .collect();
    let n = pcap_slice(&flood, &parts[0], 0..usize::MAX, 0);
    for (i, p) in parts.iter().enumerate() {
        pcap_slice(&flood, p, n * i / 3..n * (i + 1) / 3, 0);
    }
    let data = tmp.path().join("data");
    let conf = tmp.path().join("collector.toml");
    let addr = free_port();
    let toml = |detect: bool| {
        format!(
            "listen = \"{addr}\"\ndata_dir = {:?}\n[detect]\nenabled = {detect}\n\
             [[protected]]\nname = \"web\"\ncidrs = [\"10.10.10.10/32\"]\nsector = \"test\"\ncriticality = \"high\"\n",
            data.display().to_string()
        )
    };
    let collector = |detect: bool| {
        std::fs::write(&conf, toml(detect)).unwrap();
        let c = vigil()
            .args(["collector", "-c"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn collector");
        std::thread::sleep(Duration::from_millis(500));
        c
    };
    let url = format!("http://{addr}");
    let sensor = |pcap: &Path| {
        let o = vigil()
            .args(["sensor", "-r"])
            .arg(pcap)
            .args([
                "--collector",
                &url,
                "--sensor-id",
                "edge",
                "--drain-timeout",
                "60s",
                "--spool-dir",
            ])
            .arg(tmp.path().join("spool"))
            .output()
            .expect("sensor");
        assert!(o.status.success(), "{}", stderr(&o));
    };
    let floods = || -> Vec<vigil_collector::detect::Alert> {
        if !data.join("vigil.db").exists() {
            return Vec::new();
        }
        SqliteStore::open_read_only(&data)
            .and_then(|s| s.alerts(&AlertQuery::default()))
            .unwrap_or_default()
            .into_iter()
            .filter(|a| a.kind == vigil_collector::detect::AlertKind::SynFlood)
            .collect()
    };
    let wait = |what: &str, f: &dyn Fn() -> bool| {
        let t0 = std::time::Instant::now();
        while !f() {
            assert!(t0.elapsed() < Duration::from_secs(60), "timed out: {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // The first third stored by a collector that does not examine it.
    let mut c = collector(false);
    sensor(&parts[0]);
    c.kill().unwrap();
    c.wait().unwrap();
    assert!(floods().is_empty());
    // Detection on: the stored third is examined at start.
    let mut c = collector(true);
    wait("the flood found in stored flows at start", &|| {
        floods().len() == 1
    });
    let first = floods()[0].clone();
    // The second third, then SIGKILL mid-attack, then the last third.
    sensor(&parts[1]);
    wait("the second third examined", &|| {
        floods()
            .first()
            .is_some_and(|a| a.last_seen_ns > first.last_seen_ns)
    });
    c.kill().unwrap();
    c.wait().unwrap();
    let mut c = collector(true);
    sensor(&parts[2]);
    let before = floods()[0].last_seen_ns;
    wait("the last third examined", &|| {
        floods().iter().any(|a| a.last_seen_ns > before)
    });
    std::thread::sleep(Duration::from_millis(500));
    c.kill().unwrap();
    c.wait().unwrap();
    let all = floods();
    assert_eq!(
        all.len(),
        1,
        "one alert for the attack: {:?}",
        all.iter()
            .map(|a| (a.id, a.first_seen_ns, a.last_seen_ns))
            .collect::<Vec<_>>()
    );
    assert_eq!(all[0].id, first.id);
    assert!(
        all[0].last_seen_ns - all[0].first_seen_ns > 18_000_000_000,
        "it spans the three parts"
    );
}
