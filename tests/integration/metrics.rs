//! The metrics endpoints as Prometheus sees them: the sensor's
//! (`--metrics-listen`) while it runs, the collector's, and the alert
//! rules and dashboard in `contrib/` held to the metrics the two expose.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::transport::promtool_accepts;
use crate::util::{http_get, vigil};

/// Reads `child`'s standard error until a line starting with each of
/// `prefixes` was seen; returns the rest of those lines, in order, and
/// drains the remainder of the log on a thread.
pub(crate) fn announced(child: &mut Child, prefixes: &[&str]) -> Vec<String> {
    let mut err = BufReader::new(child.stderr.take().expect("stderr piped"));
    let mut found = vec![None; prefixes.len()];
    let mut seen = String::new();
    while found.iter().any(Option::is_none) {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap() == 0 {
            panic!("the process ended before announcing {prefixes:?}:\n{seen}");
        }
        for (i, p) in prefixes.iter().enumerate() {
            if let Some(rest) = line.strip_prefix(p) {
                found[i] = Some(rest.trim().to_string());
            }
        }
        seen.push_str(&line);
    }
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    found.into_iter().map(Option::unwrap).collect()
}

/// A child killed when the test ends, passed or not (a collector left
/// running would hold the test's output open).
pub(crate) struct Reaped(pub(crate) Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `http://ADDR/metrics` → ADDR.
fn metrics_addr(url: &str) -> SocketAddr {
    url.trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .parse()
        .unwrap()
}

/// The value of one series (name with its labels, as exposed).
pub(crate) fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Every sample name in an exposition.
fn names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect()
}

/// Two flows that end at once (a TCP session, a UDP exchange) and, ten
/// minutes later by the capture's clock, a third that stays open.
fn capture() -> (Vec<u8>, usize, u64) {
    let mut sc = crate::cli::sample_scenario();
    let a = "192.0.2.1".parse().unwrap();
    let t = crate::cli::SAMPLE_NS;
    let later = t + 600_000_000_000;
    sc.udp_exchange(
        later,
        a,
        5354,
        "198.51.100.53".parse().unwrap(),
        53,
        40,
        90,
        1,
        1_000_000,
    );
    let frames = sc.len();
    let bytes = sc.to_pcap_bytes();
    // Frame bytes: the file less its header and 16 bytes per record.
    let wire = (bytes.len() - 24 - 16 * frames) as u64;
    (bytes, frames, wire)
}

#[test]
fn sensor_metrics_during_a_run_pass_promtool_and_contrib_names_exist() {
    let tmp = tempfile::tempdir().unwrap();
    let listen = crate::util::free_port();
    let mut collector = Reaped(
        vigil()
            .args(["collector", "--listen", &listen.to_string(), "--data-dir"])
            .arg(tmp.path().join("data"))
            .args(["--metrics-listen", "127.0.0.1:0"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let c = announced(
        &mut collector.0,
        &[
            "vigil collector: listening on ",
            "vigil collector: metrics on ",
        ],
    );
    let collector_metrics = metrics_addr(&c[1]);
    let mut sensor = Reaped(
        vigil()
            .args([
                "sensor",
                "-r",
                "-",
                "--collector",
                &format!("http://{listen}"),
            ])
            .args(["--sensor-id", "m1", "--batch-delay", "50ms", "--spool-dir"])
            .arg(tmp.path().join("spool"))
            .args(["--metrics-listen", "127.0.0.1:0"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let s = announced(&mut sensor.0, &["vigil sensor: metrics on "]);
    let sensor_metrics = metrics_addr(&s[0]);
    let (pcap, frames, wire) = capture();
    let mut stdin = sensor.0.stdin.take().unwrap();
    stdin.write_all(&pcap).unwrap();
    stdin.flush().unwrap();

    // Standard input stays open: the sensor is running, its third flow open.
    let expected = [
        (
            "vigil_sensor_packets_total{source=\"file\"}".to_string(),
            frames as f64,
        ),
        (
            "vigil_sensor_bytes_total{source=\"file\"}".into(),
            wire as f64,
        ),
        ("vigil_sensor_records_total".into(), 2.0),
        ("vigil_sensor_active_flows".into(), 1.0),
        ("vigil_sensor_batches_total{result=\"acked\"}".into(), 1.0),
        ("vigil_sensor_spool_batches".into(), 0.0),
        ("vigil_sensor_collector_connected".into(), 1.0),
        ("vigil_sensor_collector_refused".into(), 0.0),
        ("vigil_sensor_ack_latency_seconds_count".into(), 1.0),
        (
            "vigil_sensor_dropped_flows_total{stage=\"spool\",reason=\"size_bound\"}".into(),
            0.0,
        ),
        (
            "vigil_sensor_dropped_packets_total{stage=\"kernel\",reason=\"ring_full\"}".into(),
            0.0,
        ),
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let (status, kind, body) = http_get(sensor_metrics, "/metrics");
        assert_eq!(status, 200);
        assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
        let body = String::from_utf8(body).unwrap();
        let wrong: Vec<_> = expected
            .iter()
            .filter(|(series, want)| value(&body, series) != Some(*want))
            .collect();
        if wrong.is_empty() {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "after 30 s, not as expected: {wrong:?}\n{body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        body.contains(&format!(
            "vigil_sensor_info{{sensor=\"m1\",source=\"file\",collector=\"http://{listen}\",version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{body}"
    );
    promtool_accepts(&body);
    let sensor_names = names(&body);

    drop(stdin);
    assert!(sensor.0.wait().unwrap().success());

    let (status, _, collected) = http_get(collector_metrics, "/metrics");
    assert_eq!(status, 200);
    let collected = String::from_utf8(collected).unwrap();
    assert_eq!(
        value(
            &collected,
            "vigil_collector_sensor_flows_total{sensor=\"m1\"}"
        ),
        Some(3.0),
        "{collected}"
    );
    promtool_accepts(&collected);
    drop(collector);

    let mut exposed = sensor_names;
    exposed.extend(names(&collected));
    contrib_names_exist(&exposed);
}

/// Every `vigil_*` metric the contrib rules and dashboard query is one
/// the endpoints expose (a renamed metric would leave a panel empty and
/// a rule silent); promtool accepts the rules and every dashboard query.
fn contrib_names_exist(exposed: &BTreeSet<String>) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib");
    let rules = std::fs::read_to_string(root.join("prometheus/vigil-rules.yml")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("grafana/vigil-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut exprs = Vec::new();
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(serde_json::Value::String(e)) = m.get("expr") {
                    out.push(e.clone());
                }
                m.values().for_each(|v| walk(v, out));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    walk(&dashboard, &mut exprs);
    assert!(exprs.len() >= 20, "{} queries", exprs.len());
    let mut missing = BTreeSet::new();
    for text in exprs.iter().map(String::as_str).chain([rules.as_str()]) {
        let mut rest = text;
        while let Some(i) = rest.find("vigil_") {
            let name: String = rest[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[i + name.len()..];
            if !exposed.contains(&name) {
                missing.insert(name);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "contrib/ names metrics no endpoint exposes: {missing:?}"
    );

    // The dashboard's queries as recording rules, Grafana's variables
    // given values, so that promtool parses each.
    let tmp = tempfile::tempdir().unwrap();
    let mut as_rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        let e = e
            .replace("$__rate_interval", "5m")
            .replace("$sensor", ".*")
            .replace("$collector", ".*");
        as_rules.push_str(&format!(
            "      - record: dashboard:query{i}\n        expr: {}\n",
            serde_json::to_string(&e).unwrap()
        ));
    }
    let generated = tmp.path().join("dashboard-rules.yml");
    std::fs::write(&generated, as_rules).unwrap();
    for file in [root.join("prometheus/vigil-rules.yml"), generated] {
        match std::process::Command::new("promtool")
            .args(["check", "rules"])
            .arg(&file)
            .output()
        {
            Ok(o) => assert!(
                o.status.success(),
                "promtool check rules {}: {}{}",
                file.display(),
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => {
                crate::util::skip(&format!(
                    "promtool (Debian package prometheus) not found ({e}): rules not checked"
                ));
                return;
            }
        }
    }
}

/// Standard input that pauses inside the file header, a record header and
/// a frame (the reader sees it idle, publishes and hands its packets on)
/// gives the records the whole file gives.
#[test]
fn pauses_on_standard_input_lose_nothing() {
    let (pcap, _, _) = capture();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("c.pcap");
    std::fs::write(&file, &pcap).unwrap();
    let whole = vigil()
        .args(["sensor", "-o", "-", "-r"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(whole.status.success());
    let mut sensor = Reaped(
        vigil()
            .args(["sensor", "-o", "-", "-r", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut stdin = sensor.0.stdin.take().unwrap();
    // Inside the file header, inside the first record's header, inside
    // its frame, then the rest.
    for piece in [&pcap[..10], &pcap[10..30], &pcap[30..60], &pcap[60..]] {
        stdin.write_all(piece).unwrap();
        stdin.flush().unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    drop(stdin);
    let mut out = Vec::new();
    std::io::Read::read_to_end(sensor.0.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert!(sensor.0.wait().unwrap().success());
    let lines = |b: &[u8]| -> Vec<String> {
        let mut l: Vec<String> = String::from_utf8_lossy(b)
            .lines()
            .map(String::from)
            .collect();
        l.sort();
        l
    };
    let got = lines(&out);
    assert_eq!(got.len(), 3);
    assert_eq!(got, lines(&whole.stdout));
}
