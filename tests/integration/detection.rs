//! Detection on real captures, replayed through a sensor (its defaults,
//! early reports included) into a collector over real gRPC on loopback: the
//! attack captures raise the right alert kind against the protected asset,
//! with evidence flows that exist in the store; the benign captures raise
//! nothing at default thresholds. Also: alerts reach a gRPC subscriber and a
//! webhook, and `vigil alerts` prints them.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use vigil_collector::detect::config::{Criticality, DetectConfig, DetectSection, ProtectedSection};
use vigil_collector::detect::{Alert, AlertKind, Severity};
use vigil_collector::server::{self, CollectorConfig};
use vigil_collector::store::AlertQuery;
use vigil_collector::store::prelude::*;
use vigil_collector::store::sqlite::{SqliteStore, Synchronous};
use vigil_collector::webhook::WebhookConfig;
use vigil_proto::pb;
use vigil_sensor::export::grpc::ExporterConfig;
use vigil_sensor::flow::FlowConfig;
use vigil_sensor::run::{Input, RunConfig};

use crate::util::{corpus_dir, rt, sensor_with};

pub fn asset(name: &str, cidrs: &[&str]) -> ProtectedSection {
    ProtectedSection {
        name: name.into(),
        cidrs: cidrs.iter().map(|c| c.to_string()).collect(),
        sector: "test".into(),
        criticality: Criticality::High,
        ..ProtectedSection::default()
    }
}

/// What a replay left: the alerts and the store.
struct Replay {
    alerts: Vec<Alert>,
    store: SqliteStore,
    _dir: tempfile::TempDir,
}

/// Replays `inputs` through a sensor into a collector protecting `assets`.
fn replay(inputs: Vec<Input<'static>>, assets: &[ProtectedSection]) -> Replay {
    replay_with(inputs, assets, |_| {})
}

/// [`replay`] with detection settings changed by `set` from the defaults.
fn replay_with(
    inputs: Vec<Input<'static>>,
    assets: &[ProtectedSection],
    set: impl FnOnce(&mut DetectSection),
) -> Replay {
    let dir = tempfile::tempdir().unwrap();
    let mut section = DetectSection::default();
    set(&mut section);
    let detect = section.validate(assets).expect("valid assets");
    let data = dir.path().join("collector");
    let spool = dir.path().join("spool");
    rt().block_on(async {
        let mut cfg = CollectorConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), data.clone());
        cfg.store.synchronous = Synchronous::Normal;
        cfg.detect = Some(Arc::new(detect));
        let collector = server::start(cfg).await.expect("collector");
        let url = format!("http://{}", collector.addr);
        let mut exp = ExporterConfig::new(url.clone(), "test-sensor".into(), spool);
        exp.batch_delay = Duration::from_millis(50);
        // The sensor's defaults: early reports every second.
        let flow = FlowConfig {
            report_interval: Some(Duration::from_secs(1)),
            ..FlowConfig::default()
        };
        let drain = sensor_with(inputs, exp, flow, Duration::from_secs(60))
            .await
            .expect("drain");
        assert_eq!(drain.pending, 0, "every batch acknowledged");
        wait_detected(&url).await;
        collector.shutdown().await.expect("shutdown");
    });
    let store = SqliteStore::open_read_only(&data).expect("store");
    let alerts = store.alerts(&AlertQuery::default()).expect("alerts");
    Replay {
        alerts,
        store,
        _dir: dir,
    }
}

/// Waits until the detectors have seen every stored flow.
pub async fn wait_detected(url: &str) {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut q = pb::query_client::QueryClient::new(channel);
    for _ in 0..600 {
        let s = q
            .status(pb::StatusRequest {})
            .await
            .expect("status")
            .into_inner();
        if s.detected_flows >= s.stored_flows && s.stored_flows > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("detection did not catch up with the store");
}

fn file(dir: &Path, name: &str) -> Input<'static> {
    Input::File(dir.join(name))
}

fn kinds(alerts: &[Alert]) -> BTreeSet<AlertKind> {
    alerts.iter().map(|a| a.kind).collect()
}

/// The capture raises `kind` against `asset`, with evidence in the store.
fn assert_raises(r: &Replay, kind: AlertKind, asset: &str, what: &str) -> Alert {
    let Some(a) = r.alerts.iter().find(|a| a.kind == kind && a.asset == asset) else {
        panic!(
            "{what}: no {} alert on {asset}; alerts: {:#?}",
            kind.as_str(),
            r.alerts
                .iter()
                .map(|a| (a.kind, a.summary.clone()))
                .collect::<Vec<_>>()
        );
    };
    let full = r.store.alert(a.id).expect("alert").expect("stored alert");
    assert!(!full.evidence.is_empty(), "{what}: no evidence kept");
    assert!(full.evidence_count >= full.evidence.len() as u64);
    let flows = r
        .store
        .evidence_flows(&full.evidence)
        .expect("evidence flows");
    assert_eq!(
        flows.len(),
        full.evidence.len(),
        "{what}: every evidence reference names a stored flow"
    );
    eprintln!("{what}: {} — {}", a.kind.as_str(), a.summary);
    full
}

#[test]
fn attack_captures_raise_the_right_alerts_with_stored_evidence() {
    let Some(dir) = corpus_dir() else { return };
    let cases: &[(&str, &[&str], AlertKind)] = &[
        (
            "stopddos__pkt.TCP.synflood.spoofed.pcap",
            &["10.10.10.10"],
            AlertKind::SynFlood,
        ),
        (
            "stopddos__amp.dns.RRSIG.fragmented.pcap",
            &["10.10.10.10"],
            AlertKind::Amplification,
        ),
        (
            "stopddos__amp.UDP.bacnet.IOT.37810.pcapng",
            &["10.10.10.1"],
            AlertKind::Amplification,
        ),
        (
            "chrissanders-packets__synscan.pcapng",
            &["64.13.134.52"],
            AlertKind::VerticalScan,
        ),
        (
            "chrissanders-packets__ppa1e__ftp-crack.pcap",
            &["10.121.70.151"],
            AlertKind::BruteForce,
        ),
        // ICS: the servers protected, no client allowed.
        (
            "zeek__modbus__modbusSmall.pcap",
            &["118.189.96.132"],
            AlertKind::IcsUnauthorizedClient,
        ),
        (
            "zeek__modbus__modbusBig.pcap",
            &["10.235.149.243", "10.235.149.240"],
            AlertKind::IcsUnauthorizedClient,
        ),
        (
            "zeek__dnp3__dnp3.pcap",
            &["10.0.0.3"],
            AlertKind::IcsUnauthorizedClient,
        ),
        (
            "zeek__dnp3__dnp3_udp_read.pcap",
            &["192.168.80.12"],
            AlertKind::IcsUnauthorizedClient,
        ),
        (
            "icsnpp-s7comm__snap7.pcap",
            &["134.217.61.211"],
            AlertKind::IcsUnauthorizedClient,
        ),
    ];
    for (name, victims, kind) in cases {
        let r = replay(vec![file(&dir, name)], &[asset("victim", victims)]);
        let a = assert_raises(&r, *kind, "victim", name);
        assert!(a.first_seen_ns <= a.last_seen_ns && a.raised_ns >= a.first_seen_ns);
        match kind {
            AlertKind::SynFlood => {
                // Spoofed: thousands of sources, counted.
                assert!(a.source_count > 1000, "{name}: {} sources", a.source_count);
                assert_eq!(a.targets[0].addr, "10.10.10.10:25565");
            }
            AlertKind::Amplification => {
                assert!(a.source_count >= 3, "{name}: {} reflectors", a.source_count);
            }
            AlertKind::VerticalScan => {
                assert_eq!(a.sources[0].addr, "172.16.0.8");
                assert!(a.measured >= 900.0, "{name}: {} ports", a.measured);
            }
            AlertKind::BruteForce => {
                assert_eq!(a.sources[0].addr, "10.234.125.254");
                assert!(a.summary.contains("FTP"), "{}", a.summary);
            }
            // By what the session did: writes and control critical, reads
            // at the asset's criticality (high), with the function codes.
            AlertKind::IcsUnauthorizedClient => {
                let (severity, function) = match *name {
                    "zeek__modbus__modbusSmall.pcap" => {
                        (Severity::Critical, "write_multiple_coils")
                    }
                    "zeek__dnp3__dnp3_udp_read.pcap" => (Severity::High, "1 read:"),
                    "icsnpp-s7comm__snap7.pcap" => (Severity::Critical, "control"),
                    _ => (a.severity, ""),
                };
                assert_eq!(a.severity, severity, "{name}: {}", a.summary);
                assert!(a.summary.contains(function), "{name}: {}", a.summary);
            }
            _ => {}
        }
    }
    // An allowed client raises nothing: the same DNP3 capture with its
    // master named in the allowed list.
    let mut allowed = asset("victim", &["10.0.0.3"]);
    allowed.ics_clients = vec!["10.0.0.8".into(), "10.0.0.9".into()];
    let r = replay(vec![file(&dir, "zeek__dnp3__dnp3.pcap")], &[allowed]);
    assert!(
        !kinds(&r.alerts).contains(&AlertKind::IcsUnauthorizedClient),
        "{:?}",
        r.alerts
    );
}

#[test]
fn benign_captures_raise_nothing_at_default_thresholds() {
    let Some(dir) = corpus_dir() else { return };
    let benign = [
        "zeek__http__get.pcap",
        "zeek__http__bro.org.pcap",
        "zeek__wikipedia.pcap",
        "chrissanders-packets__http_espn.pcapng",
        "chrissanders-packets__http_google.pcapng",
        "tcpdump__dns_udp.pcap",
        "chrissanders-packets__dns_tcp.pcapng",
        "zeek__ipv6-fragmented-dns.pcap",
        "zeek__ntp__ntp2.pcap",
        "suricata-verify__tls__tls-subjectaltname__input.pcap",
        "chrissanders-packets__icmp_traceroute.pcapng",
        "zeek__icmp__icmp-destunreach-udp.pcap",
        "tcpdump__icmpv6.pcap",
        "tcpdump__various_gre.pcap",
        "suricata-verify__vxlan-decoder-03__vxlan.pcap",
        "tcpdump__geneve.pcap",
        "zeek__erspan.pcap",
        "zeek__tunnels__6in4.pcap",
        "chrissanders-packets__tcp_teardown.pcapng",
        "chrissanders-packets__tcp_retransmissions.pcapng",
    ];
    // Everything protected (floods, scans, brute force, amplification on
    // every host), and then only private networks protected, so that
    // beaconing and exfiltration see external peers.
    let everything = asset("everything", &["0.0.0.0/0", "::/0"]);
    let private = asset(
        "private",
        &["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"],
    );
    for name in benign {
        for assets in [&everything, &private] {
            let r = replay(vec![file(&dir, name)], std::slice::from_ref(assets));
            assert!(
                r.alerts.is_empty(),
                "{name} with {} protected raised: {:#?}",
                assets.name,
                r.alerts
                    .iter()
                    .map(|a| (a.kind, a.summary.clone()))
                    .collect::<Vec<_>>()
            );
        }
    }
}

/// A webhook receiver: answers 500 to the first request (to exercise the
/// retry), 200 to the rest, and keeps the bodies.
async fn webhook_receiver() -> (SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let bodies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = bodies.clone();
    let first = Arc::new(std::sync::atomic::AtomicBool::new(true));
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let first = first.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                // One connection may carry several requests (keep-alive).
                let mut buf = Vec::new();
                loop {
                    let mut chunk = [0u8; 8192];
                    let n = match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if buf.len() < end + 4 + len {
                            break;
                        }
                        let body =
                            String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
                        buf.drain(..end + 4 + len);
                        let refuse = first.swap(false, std::sync::atomic::Ordering::SeqCst);
                        let status = if refuse {
                            "500 Internal Server Error"
                        } else {
                            seen.lock().unwrap().push(body);
                            "200 OK"
                        };
                        let reply = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
                        if sock.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, bodies)
}

#[test]
fn alerts_reach_subscribers_the_webhook_and_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("collector");
    let assets = [ProtectedSection {
        ics_clients: vec!["198.51.100.100".into()],
        ..asset("utility", &[vigil_sensor::synth::DEMO_PROTECTED])
    }];
    let bytes: &'static [u8] = Box::leak(
        vigil_sensor::synth::demo_scenario(7)
            .to_pcap_bytes()
            .into_boxed_slice(),
    );
    let (opened, hooked) = rt().block_on(async {
        let (hook, bodies) = webhook_receiver().await;
        let mut cfg = CollectorConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), data.clone());
        cfg.store.synchronous = Synchronous::Normal;
        cfg.detect = Some(Arc::new(DetectConfig::with_assets(&assets).unwrap()));
        cfg.webhook = Some(WebhookConfig {
            url: format!("http://{hook}/alerts"),
            attempts: 5,
            timeout: Duration::from_secs(5),
        });
        let collector = server::start(cfg).await.expect("collector");
        let url = format!("http://{}", collector.addr);
        // Subscribe before any flow arrives.
        let channel = tonic::transport::Endpoint::from_shared(url.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut stream = pb::alerts_client::AlertsClient::new(channel)
            .subscribe(pb::SubscribeRequest {})
            .await
            .expect("subscribe")
            .into_inner();
        // And `vigil alerts watch`, once it says it is subscribed.
        let mut watch = std::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args(["alerts", "watch", "--format", "jsonl", "--collector", &url])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = std::io::BufReader::new(watch.stderr.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut err, &mut line).unwrap();
        assert!(line.contains("watching"), "{line}");
        let mut exp = ExporterConfig::new(url.clone(), "demo".into(), dir.path().join("spool"));
        exp.batch_delay = Duration::from_millis(50);
        exp.batch_flows = 500;
        let input = vec![Input::Memory {
            name: "demo".into(),
            bytes,
        }];
        let drain = sensor_with(input, exp, FlowConfig::default(), Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(drain.pending, 0);
        wait_detected(&url).await;
        let mut opened = BTreeSet::new();
        while opened.len() < 5 {
            let a = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .expect("an alert within 10 s")
                .expect("stream")
                .expect("open stream");
            if a.opened {
                opened.insert(a.kind.clone());
            }
        }
        // The webhook retries its first refusal and gets every opening.
        for _ in 0..200 {
            let n = bodies
                .lock()
                .unwrap()
                .iter()
                .filter(|b| b.contains("\"event\":\"opened\""))
                .count();
            if n >= 5 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The command line over gRPC, while the collector runs.
        let remote = |args: &[&str]| {
            std::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
                .args(args)
                .args(["--collector", &url])
                .output()
                .unwrap()
        };
        let o = remote(&["alerts", "list", "--format", "jsonl"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let listed = String::from_utf8(o.stdout).unwrap();
        assert_eq!(listed.lines().count(), 5, "{listed}");
        let first: serde_json::Value =
            serde_json::from_str(listed.lines().next().unwrap()).unwrap();
        let id = first["id"].as_u64().unwrap().to_string();
        let o = remote(&["alerts", "show", &id, "--flows", "3"]);
        let shown = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success() && shown.contains("evidence flows ("),
            "{shown}"
        );
        let o = remote(&["alerts", "show", "999999"]);
        assert!(!o.status.success());
        assert!(String::from_utf8_lossy(&o.stderr).contains("no alert 999999"));
        collector.shutdown().await.unwrap();
        // The collector's shutdown ends the watch's stream.
        let watched = watch.wait_with_output().unwrap();
        let watched: BTreeSet<String> = String::from_utf8_lossy(&watched.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["event"] == "opened")
            .filter_map(|v| Some(v["alert"]["kind"].as_str()?.to_string()))
            .collect();
        assert_eq!(watched.len(), 5, "vigil alerts watch: {watched:?}");
        let hooked: BTreeSet<String> = bodies
            .lock()
            .unwrap()
            .iter()
            .filter(|b| b.contains("\"event\":\"opened\""))
            .filter_map(|b| {
                let v: serde_json::Value = serde_json::from_str(b).ok()?;
                Some(v["alert"]["kind"].as_str()?.to_string())
            })
            .collect();
        (opened, hooked)
    });
    let want: BTreeSet<String> = [
        "vertical_scan",
        "horizontal_scan",
        "syn_flood",
        "brute_force",
        "ics_unauthorized_client",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(opened, want, "subscriber");
    assert_eq!(hooked, want, "webhook");

    // The command line, on the store the collector left.
    let run = |args: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    };
    let d = data.to_str().unwrap();
    let list = run(&["alerts", "list", "--data-dir", d]);
    for k in &want {
        assert!(list.contains(k.as_str()), "{k} missing from:\n{list}");
    }
    let jsonl = run(&[
        "alerts",
        "list",
        "--data-dir",
        d,
        "--kind",
        "syn_flood",
        "--format",
        "jsonl",
    ]);
    let v: serde_json::Value = serde_json::from_str(jsonl.lines().next().unwrap()).unwrap();
    assert_eq!(v["kind"], "syn_flood");
    assert_eq!(v["technique"], "T1498.001");
    let id = v["id"].as_u64().unwrap().to_string();
    let show = run(&["alerts", "show", &id, "--data-dir", d, "--flows", "5"]);
    assert!(
        show.contains("T1498.001") && show.contains("evidence flows (5 of"),
        "{show}"
    );
    assert!(show.contains("198.51.100.10:80"), "{show}");
    // Bad arguments are named.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["alerts", "list", "--data-dir", d, "--kind", "tsunami"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--kind \"tsunami\""));
}

#[test]
fn every_corpus_capture_goes_through_the_detectors() {
    let Some(dir) = corpus_dir() else { return };
    let cfg = DetectConfig::with_assets(&[asset("everything", &["0.0.0.0/0", "::/0"])]).unwrap();
    let mut engine = vigil_collector::detect::Engine::new(Arc::new(cfg), 1);
    let mut pc = RunConfig::default();
    pc.flow.report_interval = Some(Duration::from_secs(1));
    let mut flows = 0;
    for f in crate::util::corpus_files(&dir) {
        let (recs, _) = crate::util::run_inputs(&[Input::File(f.clone())], &pc);
        flows += recs.len() as u64;
        for chunk in recs.chunks(100) {
            for u in engine.observe("corpus", chunk) {
                // Every alert is well formed.
                let a = &u.alert;
                assert!(a.first_seen_ns <= a.last_seen_ns, "{}: {a:?}", f.display());
                assert!(a.source_count >= a.sources.len() as u64);
                assert!(!a.summary.is_empty() && !a.technique.is_empty());
            }
        }
    }
    assert_eq!(engine.stats.flows, flows);
    assert_eq!(
        engine.stats.protected_flows, flows,
        "everything is protected"
    );
}

/// Captures made here of what the application-aware detectors read, through
/// the sensor's own parsers: BACnet discovery between two protected
/// controllers (the false positive reported) raises nothing, a
/// WriteProperty from one of them a critical ICS alert naming it; a
/// dnscat-like tunnel raises `dns_tunnel`, lookups of generated names
/// `dga`, and a listed domain an indicator alert.
#[test]
fn application_metadata_drives_ics_dns_and_domain_detection() {
    use vigil_sensor::synth::Scenario;
    let dir = tempfile::tempdir().unwrap();
    let t0 = 1_767_261_600_000_000_000u64;
    let udp =
        |sc: &mut Scenario,
         t: u64,
         src: [u8; 4],
         sport: u16,
         dst: [u8; 4],
         dport: u16,
         p: &[u8]| sc.frame(t, crate::util::udp_frame(src, sport, dst, dport, p));
    let write = |name: &str, sc: Scenario| -> Input<'static> {
        let p = dir.path().join(name);
        std::fs::write(&p, sc.to_pcap_bytes()).unwrap();
        Input::File(p)
    };
    let (a, b) = ([10, 20, 0, 5], [10, 20, 0, 6]);
    // Who-is broadcast, i-am answers, every 10 s for 5 minutes.
    let who_is = [0x81, 0x0b, 0x00, 0x08, 0x01, 0x00, 0x10, 0x08];
    let i_am = [
        0x81, 0x0a, 0x00, 0x14, 0x01, 0x00, 0x10, 0x00, 0xc4, 0x02, 0x00, 0x00, 0x06, 0x22, 0x01,
        0xe0, 0x91, 0x00, 0x21, 0x0f,
    ];
    let mut sc = Scenario::new();
    for i in 0..30u64 {
        let t = t0 + i * 10_000_000_000;
        udp(&mut sc, t, a, 47808, [10, 20, 0, 255], 47808, &who_is);
        udp(&mut sc, t + 1_000_000, b, 47808, a, 47808, &i_am);
    }
    let discovery = write("bacnet-discovery.pcap", sc);
    let plant = asset("plant", &["10.20.0.0/24"]);
    let r = replay(vec![discovery], std::slice::from_ref(&plant));
    assert!(
        r.alerts.is_empty(),
        "{:?}",
        r.alerts.iter().map(|a| &a.summary).collect::<Vec<_>>()
    );
    // WriteProperty (confirmed request, service 15) from b to a.
    let write_property = [
        0x81, 0x0a, 0x00, 0x18, 0x01, 0x04, 0x00, 0x05, 0x01, 0x0f, 0x0c, 0x00, 0x00, 0x00, 0x01,
        0x19, 0x55, 0x3e, 0x44, 0x42, 0xc8, 0x00, 0x00, 0x3f,
    ];
    let mut sc = Scenario::new();
    udp(&mut sc, t0, b, 47809, a, 47808, &write_property);
    let writes = write("bacnet-write.pcap", sc);
    let r = replay(vec![writes], std::slice::from_ref(&plant));
    let alert = assert_raises(
        &r,
        AlertKind::IcsUnauthorizedClient,
        "plant",
        "BACnet write",
    );
    assert_eq!(alert.severity, Severity::Critical);
    assert!(
        alert.summary.contains("1 write") && alert.summary.contains("15"),
        "{}",
        alert.summary
    );

    // DNS: a query and its answer, `rcode` in the answer.
    let dns_on = |sc: &mut Scenario, port: u16, t: u64, id: u16, name: &str, rcode: u8| {
        let (q, r) = crate::util::dns_exchange(id, name, rcode);
        udp(sc, t, [10, 20, 0, 9], port, [10, 20, 0, 53], 53, &q);
        udp(
            sc,
            t + 2_000_000,
            [10, 20, 0, 53],
            53,
            [10, 20, 0, 9],
            port,
            &r,
        );
    };
    // A new port a query (as stub resolvers do), or one socket (as
    // tunnels do: each exchange is then a record of its own).
    let dns = |sc: &mut Scenario, t: u64, id: u16, name: &str, rcode: u8| {
        dns_on(sc, 20000 + id, t, id, name, rcode)
    };
    let host = asset("office", &["10.20.0.9/32"]);
    let mut sc = Scenario::new();
    for i in 0..150u16 {
        let data: String = (0..48)
            .map(|j| b"0123456789abcdef"[usize::from((i.wrapping_mul(31) ^ (j * 7)) % 16)] as char)
            .collect();
        let name = format!("{data}{i:04x}.x.tunnel-example.net");
        dns(&mut sc, t0 + u64::from(i) * 1_000_000_000, i + 1, &name, 0);
    }
    let tunnel = write("dns-tunnel.pcap", sc);
    let r = replay(vec![tunnel], std::slice::from_ref(&host));
    let alert = assert_raises(&r, AlertKind::DnsTunnel, "office", "DNS tunnel");
    assert!(
        alert.summary.contains("tunnel-example.net"),
        "{}",
        alert.summary
    );
    let mut sc = Scenario::new();
    for i in 0..150u16 {
        let data: String = (0..40)
            .map(|j| {
                b"abcdefghijklmnopqrstuvwxyz234567"[usize::from((i * 7 + j * 11) % 32)] as char
            })
            .collect();
        let name = format!("{data}{i:04x}.t.tunnel-example.org");
        dns_on(
            &mut sc,
            40404,
            t0 + u64::from(i) * 500_000_000,
            i + 1,
            &name,
            0,
        );
    }
    let one_socket = write("dns-tunnel-one-socket.pcap", sc);
    let r = replay(vec![one_socket], std::slice::from_ref(&host));
    assert_raises(&r, AlertKind::DnsTunnel, "office", "DNS tunnel, one socket");

    let mut sc = Scenario::new();
    for i in 0..40u16 {
        let label: String = (0..12)
            .map(|j| b"bcdfghjklmnpqrstvwxz"[usize::from((i * 13 + j * 7) % 20)] as char)
            .collect();
        dns(
            &mut sc,
            t0 + u64::from(i) * 2_000_000_000,
            i + 1,
            &format!("{label}.com"),
            3,
        );
    }
    let dga = write("dga.pcap", sc);
    let r = replay(vec![dga], std::slice::from_ref(&host));
    assert_raises(&r, AlertKind::Dga, "office", "DGA");

    let list = dir.path().join("domains.txt");
    std::fs::write(&list, "bad-example.org phishing kit\n").unwrap();
    let mut sc = Scenario::new();
    dns(&mut sc, t0, 1, "login.bad-example.org", 0);
    dns(&mut sc, t0 + 1_000_000_000, 2, "www.debian.org", 0);
    let listed = write("listed.pcap", sc);
    let r = replay_with(vec![listed], std::slice::from_ref(&host), |d| {
        d.indicators.files = vec![list.clone()];
    });
    let alert = assert_raises(&r, AlertKind::Indicator, "office", "listed domain");
    assert!(
        alert.summary.contains("login.bad-example.org (DNS query)"),
        "{}",
        alert.summary
    );
    assert_eq!(r.alerts.len(), 1, "only the listed name");
}
