//! Chain of custody (issue #31), end to end: a sensor whose spool is lost
//! is stored under a new incarnation and the reset reported; two live
//! sensors claiming one id are both stored and the conflict reported.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
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

use crate::util::{capture_into, rt, run_inputs};

fn vigil() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vigil"))
}

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
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

fn capture(path: &Path, seed: u64) -> Vec<FlowRecord> {
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
    let mut collector = vigil()
        .args(["collector", "--listen", &addr.to_string(), "--data-dir"])
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn collector");
    let url = format!("http://{addr}");
    let spool = tmp.path().join("spool");
    let run = |pcap: &Path| {
        vigil()
            .args(["sensor", "-r"])
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
        let channel = tonic::transport::Endpoint::from_shared(url.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut q = pb::query_client::QueryClient::new(channel);
        let st = q.status(pb::StatusRequest {}).await.unwrap().into_inner();
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
