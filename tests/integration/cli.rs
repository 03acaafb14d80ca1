//! The `vigil` binary as users run it: formats, summaries, exit codes and
//! error messages.

use std::path::Path;
use std::process::{Command, Output};

use vigil_sensor::synth::{Scenario, demo_scenario};

fn vigil(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .output()
        .expect("run vigil")
}

/// `vigil collector` on a free loopback port with `data` as its data
/// directory, and its URL (the bound address is the first line it logs).
fn collector_on_any_port(data: &std::path::Path) -> (std::process::Child, String) {
    let mut collector = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["collector", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut err = std::io::BufReader::new(collector.stderr.take().unwrap());
    std::io::BufRead::read_line(&mut err, &mut line).unwrap();
    let url = format!("http://{}", line.trim().rsplit(' ').next().unwrap());
    // The rest of its log drained, so that it never waits on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    (collector, url)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Two flows at one time (a TCP session, a UDP exchange), as a scenario
/// other tests add to.
pub(crate) fn sample_scenario() -> Scenario {
    let mut sc = Scenario::new();
    let t = SAMPLE_NS;
    sc.tcp_session(
        t,
        "192.0.2.1".parse().unwrap(),
        40000,
        "198.51.100.2".parse().unwrap(),
        443,
        4,
        100,
        1_000_000,
    );
    sc.udp_exchange(
        t,
        "192.0.2.1".parse().unwrap(),
        5353,
        "198.51.100.53".parse().unwrap(),
        53,
        40,
        90,
        2,
        1_000_000,
    );
    sc
}

/// When the sample's flows start, ns.
pub(crate) const SAMPLE_NS: u64 = 1_700_000_000_000_000_000;

/// A small capture of two flows (a TCP session, a UDP exchange).
pub(crate) fn sample(dir: &Path) -> std::path::PathBuf {
    let sc = sample_scenario();
    let p = dir.join("sample.pcap");
    std::fs::write(&p, sc.to_pcap_bytes()).unwrap();
    p
}

#[test]
fn flows_jsonl_follows_the_contract_and_summarizes_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let p = sample(dir.path());
    let o = vigil(&["flows", "-r", p.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = String::from_utf8(o.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    let tcp = lines.iter().find(|v| v["proto"] == "tcp").unwrap();
    for k in vigil_proto::flow::CONTRACT_FIELDS {
        assert!(tcp.get(k).is_some(), "missing field {k}");
    }
    assert_eq!(tcp["first_seen"], "2023-11-14T22:13:20.000000000Z");
    assert_eq!(tcp["conn_state"], "SF");
    let err = stderr(&o);
    assert!(
        err.contains("packets: 14") && err.contains("flows: 2") && err.contains("Mpps"),
        "{err}"
    );
}

#[test]
fn reads_a_capture_from_standard_input() {
    use std::io::Write;
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(sample(dir.path())).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["flows", "-q", "-r", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&bytes).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    assert_eq!(String::from_utf8(o.stdout).unwrap().lines().count(), 2);
}

#[test]
fn csv_table_and_null_formats() {
    let dir = tempfile::tempdir().unwrap();
    let p = sample(dir.path());
    let out = dir.path().join("flows.csv");
    let o = vigil(&[
        "flows",
        "-q",
        "-r",
        p.to_str().unwrap(),
        "--format",
        "csv",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(o.stderr.is_empty(), "-q prints nothing: {}", stderr(&o));
    let csv = std::fs::read_to_string(&out).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next().unwrap(), vigil_sensor::export::CSV_HEADER);
    assert_eq!(lines.clone().count(), 2);
    assert!(lines.all(|l| l.split(',').count() == 24));

    let o = vigil(&[
        "flows",
        "-q",
        "-r",
        p.to_str().unwrap(),
        "--format",
        "table",
    ]);
    let table = String::from_utf8(o.stdout).unwrap();
    assert!(
        table.starts_with("first_seen") && table.contains("192.0.2.1:40000"),
        "{table}"
    );

    let o = vigil(&["flows", "-q", "-r", p.to_str().unwrap(), "--format", "null"]);
    assert!(o.status.success() && o.stdout.is_empty());
}

#[test]
fn truncated_file_keeps_earlier_flows_names_file_and_offset_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let p = sample(dir.path());
    let mut bytes = std::fs::read(&p).unwrap();
    let cut = bytes.len() - 30;
    bytes.truncate(cut);
    let bad = dir.path().join("cut.pcap");
    std::fs::write(&bad, &bytes).unwrap();
    let mut other = Scenario::new();
    other.icmp_echo(
        1_700_000_100_000_000_000,
        "192.0.2.9".parse().unwrap(),
        "198.51.100.9".parse().unwrap(),
        7,
        2,
        1000,
    );
    let good = dir.path().join("good.pcap");
    std::fs::write(&good, other.to_pcap_bytes()).unwrap();
    let o = vigil(&[
        "flows",
        "-r",
        bad.to_str().unwrap(),
        "-r",
        good.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("cut.pcap") && err.contains("truncated at byte offset"),
        "{err}"
    );
    // Flows from before the damage (TCP and UDP), and the second file's, are written.
    let out = String::from_utf8(o.stdout).unwrap();
    let protos: Vec<String> = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["proto"].to_string())
        .collect();
    assert_eq!(protos.len(), 3, "{out}");
    assert!(protos.contains(&"\"icmp\"".to_string()) && protos.contains(&"\"tcp\"".to_string()));
}

#[test]
fn missing_file_and_bad_arguments_have_clear_errors_and_exit_codes() {
    let o = vigil(&["flows", "-r", "/nonexistent/x.pcap"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("/nonexistent/x.pcap"), "{}", stderr(&o));

    let o = vigil(&["flows", "-r", "x.pcap", "--idle-timeout", "0s"]);
    assert_eq!(o.status.code(), Some(64));
    assert!(stderr(&o).contains("greater than zero"), "{}", stderr(&o));

    let o = vigil(&["flows", "-r", "x.pcap", "--format", "xml"]);
    assert_eq!(o.status.code(), Some(64));

    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pcap");
    std::fs::write(&junk, b"this is not a capture file at all").unwrap();
    let o = vigil(&["flows", "-r", junk.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("not a pcap or pcapng file"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_closed_output_pipe_ends_quietly_with_success() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bulk.pcap");
    let cfg = vigil_sensor::synth::BulkConfig {
        packets: 60_000,
        flows: 20_000,
        ..Default::default()
    };
    std::fs::write(&p, cfg.to_pcap_bytes()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["flows", "-q", "-r", p.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The reader is gone (as with `| head -1`): 20,000 records cannot be written.
    assert!(first.starts_with('{'));
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(o.stderr.is_empty(), "{}", stderr(&o));
}

#[test]
fn demo_prints_a_traffic_summary() {
    let o = vigil(&["demo"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(
        out.contains("traffic:") && out.contains("top sources by flows"),
        "{out}"
    );
    // It went through a collector over gRPC.
    assert!(out.contains("over gRPC"), "{out}");
    // 4751 flows; the sensor's early reports cut a few one-way ones (SYNs
    // answered late) into two records.
    assert!(
        out.contains("collector: stored 4760 flow records from sensor demo-sensor"),
        "{out}"
    );
    // The collector's alerts: each attack of the scenario, once.
    for kind in [
        "vertical_scan",
        "horizontal_scan",
        "syn_flood",
        "brute_force",
        "ics_unauthorized_client",
    ] {
        assert_eq!(out.matches(kind).count(), 1, "{kind}: {out}");
    }
    assert!(out.contains("alerts raised by the collector (5)"), "{out}");
    // The scanner stands out by flows.
    assert!(out.contains("203.0.113.66"), "{out}");
    // Same capture as the library builds.
    assert!(!demo_scenario(7).is_empty());
}

#[test]
fn bench_reports_rates_for_each_worker_count() {
    let o = vigil(&[
        "bench",
        "--packets",
        "20000",
        "--flows",
        "500",
        "--runs",
        "1",
        "--worker-counts",
        "1,2",
        "--modes",
        "shared,dispatch,fanout",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(out.contains("Mpps") && out.contains("B/flow"), "{out}");
    // The three pipelines, each with both worker counts.
    assert_eq!(
        out.lines().filter(|l| l.contains("runs (Mpps")).count(),
        6,
        "{out}"
    );
    for mode in ["shared", "dispatch", "fanout"] {
        assert_eq!(
            out.lines().filter(|l| l.starts_with(mode)).count(),
            2,
            "{mode}: {out}"
        );
    }
}

#[test]
fn query_parse_errors_point_at_the_column_and_exit_64() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    let o = vigil(&["query", "--data-dir", dir, "dst", "port", "99999"]);
    assert_eq!(o.status.code(), Some(64));
    let e = stderr(&o);
    assert!(
        e.contains("column 10") && e.contains("not a port number"),
        "{e}"
    );
    assert!(e.contains("dst port 99999\n           ^"), "{e}");
    let o = vigil(&["query", "--data-dir", dir, "--count"]);
    assert_eq!(o.status.code(), Some(64));
    assert!(stderr(&o).contains("no vigil.db here"), "{}", stderr(&o));
}

#[test]
fn daemons_check_their_configuration_and_name_bad_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let o = vigil(&[
        "collector",
        "--listen",
        "0.0.0.0:50051",
        "--data-dir",
        "/tmp/x",
        "--check-config",
    ]);
    assert_eq!(o.status.code(), Some(64));
    assert!(stderr(&o).contains("collector.listen"), "{}", stderr(&o));
    let o = vigil(&[
        "collector",
        "--listen",
        "127.0.0.1:50051",
        "--data-dir",
        "/tmp/x",
        "--check-config",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // --check-config FILE: the file, its assets, their errors by key.
    let conf = tmp.path().join("c.toml");
    std::fs::write(
        &conf,
        "data_dir = \"/tmp/x\"\n[detect.scan]\nwindow = \"never\"\n[[protected]]\nname = \"plc\"\ncidrs = [\"10.0.0.0/40\"]\n",
    )
    .unwrap();
    let o = vigil(&["collector", "--check-config", conf.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(64));
    let e = stderr(&o);
    assert!(
        e.contains("collector.detect.scan.window = \"never\""),
        "{e}"
    );
    assert!(
        e.contains("collector.protected[0].cidrs[0] = \"10.0.0.0/40\""),
        "{e}"
    );
    std::fs::write(
        &conf,
        "data_dir = \"/tmp/x\"\n[[protected]]\nname = \"plc\"\ncidrs = [\"10.0.0.0/24\"]\n",
    )
    .unwrap();
    let o = vigil(&["collector", "--check-config", conf.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("1 protected asset(s) (plc)"),
        "{}",
        stderr(&o)
    );
    for which in ["sensor", "collector"] {
        let o = vigil(&["config", "defaults", which]);
        assert!(o.status.success());
        let file = tmp.path().join(format!("{which}.toml"));
        std::fs::write(&file, &o.stdout).unwrap();
        let mut args = vec![which, "--config", file.to_str().unwrap(), "--check-config"];
        if which == "sensor" {
            args.extend(["-r", "x.pcap"]);
        }
        let o = vigil(&args);
        assert_eq!(o.status.code(), Some(0), "{which}: {}", stderr(&o));
    }
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "sensor_id = \"a b\"\ncollector = \"ftp://x\"\n[spool]\ndir = \"/tmp/s\"\nmax_bytes = \"lots\"\n").unwrap();
    let o = vigil(&["sensor", "-r", "x.pcap", "--config", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(64));
    let e = stderr(&o);
    for key in [
        "sensor.sensor_id",
        "sensor.collector",
        "sensor.spool.max_bytes",
    ] {
        assert!(e.contains(key), "{key}: {e}");
    }
}

#[test]
fn sensor_and_collector_processes_store_a_capture_and_query_it() {
    let tmp = tempfile::tempdir().unwrap();
    let pcap = sample(tmp.path());
    let data = tmp.path().join("data");
    let (mut collector, url) = collector_on_any_port(&data);
    let o = vigil(&[
        "sensor",
        "-r",
        pcap.to_str().unwrap(),
        "--collector",
        &url,
        "--sensor-id",
        "cli-1",
        "--spool-dir",
        tmp.path().join("spool").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("0 still in the spool"),
        "{}",
        stderr(&o)
    );
    let o = vigil(&[
        "query",
        "--collector",
        &url,
        "--format",
        "jsonl",
        "dst",
        "port",
        "53",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("\"dst_ip\":\"198.51.100.53\""), "{out}");
    let o = vigil(&[
        "query",
        "--collector",
        &url,
        "--top",
        "dst",
        "--by",
        "bytes",
        "--format",
        "csv",
    ]);
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(
        out.starts_with("key,flows,packets,bytes\n198.51.100.2,1,"),
        "{out}"
    );
    let o = vigil(&[
        "query",
        "--collector",
        &url,
        "--status",
        "--format",
        "jsonl",
    ]);
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(
        out.contains("\"sensor_id\":\"cli-1\"") && out.contains("\"flows\":2"),
        "{out}"
    );
    // A time series over five minutes: both flows start in 22:13.
    let series = |backend: &str, at: &str| {
        let o = vigil(&[
            "query",
            backend,
            at,
            "--series",
            "1m",
            "--since",
            "2023-11-14T22:10:00Z",
            "--until",
            "2023-11-14T22:15:00Z",
            "--format",
            "csv",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        String::from_utf8(o.stdout).unwrap()
    };
    let remote = series("--collector", &url);
    let rows: Vec<&str> = remote.lines().collect();
    assert_eq!(rows.len(), 6, "{remote}");
    assert_eq!(rows[0], "start,start_ns,flows,packets,bytes");
    assert!(rows[1].starts_with("2023-11-14T22:10:00"), "{remote}");
    assert!(rows[1].ends_with(",0,0,0"), "{remote}");
    assert!(
        rows[4].starts_with("2023-11-14T22:13:00") && rows[4].ends_with(",2,14,1172"),
        "{remote}"
    );
    let o = vigil(&["query", "--collector", &url, "--series", "10ms"]);
    assert_eq!(o.status.code(), Some(64));
    assert!(stderr(&o).contains("at least 1s"), "{}", stderr(&o));
    let o = vigil(&[
        "query",
        "--collector",
        &url,
        "--series",
        "1s",
        "--since",
        "30d",
    ]);
    assert_eq!(o.status.code(), Some(64));
    assert!(stderr(&o).contains("at most 100000"), "{}", stderr(&o));
    let o = vigil(&["query", "--collector", &url, "port", "x"]);
    assert_eq!(
        o.status.code(),
        Some(64),
        "a filter error from the collector is a usage error"
    );
    collector.kill().unwrap();
    collector.wait().unwrap();
    // The same store, read directly.
    let o = vigil(&[
        "query",
        "--data-dir",
        data.to_str().unwrap(),
        "--count",
        "--format",
        "csv",
    ]);
    assert_eq!(
        String::from_utf8(o.stdout).unwrap(),
        "flows,packets,bytes\n2,14,1172\n"
    );
    assert_eq!(series("--data-dir", data.to_str().unwrap()), remote);
}

/// Top-N by application fields, through the processes: a real capture of
/// DNS lookups and web sessions stored by `vigil sensor` → `vigil
/// collector`, then `vigil query --top dns.qname` over gRPC and on the data
/// directory equal the counts of the query names in `vigil flows`' records.
#[test]
fn top_queried_names_and_server_names_over_grpc_and_locally() {
    let Some(corpus) = crate::util::corpus_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let pcap = corpus.join("zeek__wikipedia.pcap");
    let data = tmp.path().join("data");
    let (mut collector, url) = collector_on_any_port(&data);
    let spool = tmp.path().join("spool");
    let o = vigil(&[
        "sensor",
        "-r",
        pcap.to_str().unwrap(),
        "--collector",
        &url,
        "--sensor-id",
        "top-1",
        "--spool-dir",
        spool.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // What the records say, counted here.
    let o = vigil(&["flows", "-r", pcap.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    // "application metadata: N flows, M payloads read, ..."
    let summary = stderr(&o);
    let app_line = summary
        .lines()
        .find_map(|l| l.strip_prefix("application metadata: "))
        .unwrap_or_else(|| panic!("{summary}"))
        .to_string();
    let mut want: std::collections::BTreeMap<String, u64> = Default::default();
    for l in String::from_utf8(o.stdout).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        if let Some(q) = v["app"]["dns"]["qname"].as_str().filter(|q| !q.is_empty()) {
            *want.entry(q.to_lowercase()).or_default() += 1;
        }
    }
    assert!(want.len() >= 5, "the capture's lookups: {want:?}");
    let mut want: Vec<(String, u64)> = want.into_iter().collect();
    // Most flows first, ties in name order (the stores' order).
    want.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    want.truncate(10);
    let _ = collector.kill();
    let _ = collector.wait();
    let (mut collector, url) = collector_on_any_port(&data);
    let top = |backend: &str, at: &str, key: &str| -> Vec<(String, u64)> {
        let o = vigil(&[
            "query", backend, at, "--top", key, "--by", "flows", "--limit", "10", "--format", "csv",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        String::from_utf8(o.stdout)
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| {
                let mut f = l.split(',');
                let k = f.next().unwrap().to_string();
                (k, f.next().unwrap().parse().unwrap())
            })
            .collect()
    };
    assert_eq!(top("--collector", &url, "dns.qname"), want, "over gRPC");
    let _ = collector.kill();
    let _ = collector.wait();
    let d = data.to_str().unwrap();
    assert_eq!(
        top("--data-dir", d, "dns.qname"),
        want,
        "on the data directory"
    );
    // The sensor's application counters reached the collector.
    let o = vigil(&["query", "--data-dir", d, "--status", "--format", "jsonl"]);
    let status: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let n = |w: &str| {
        app_line
            .split(w)
            .next()
            .and_then(|x| x.rsplit(' ').next())
            .unwrap()
    };
    assert_eq!(
        status["app_flows"].to_string(),
        n(" flows"),
        "{status} vs {app_line}"
    );
    assert_eq!(
        status["app_payloads"].to_string(),
        n(" payloads"),
        "{status} vs {app_line}"
    );
    assert_eq!(status["app_errors"], serde_json::json!({}));
    let apps = top("--data-dir", d, "app");
    assert!(apps.iter().any(|(k, _)| k == "dns"), "{apps:?}");
    let o = vigil(&["query", "--data-dir", d, "--top", "dns.name"]);
    assert_eq!(o.status.code(), Some(64));
    assert!(stderr(&o).contains("dns.qname"), "{}", stderr(&o));
}

/// `vigil query --explain` says on stderr how the store answers (column
/// segments, a roll-up, SQLite) and how long it took; the answer on stdout
/// is the one computed over the stored records.
#[test]
fn query_explain_names_the_path_each_question_takes() {
    use vigil_collector::query::{Filter, TimeRange, TopBy, TopKey, memory};
    use vigil_collector::store::prelude::*;
    use vigil_collector::store::sqlite::{SqliteConfig, SqliteStore};
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let bulk = vigil_sensor::synth::BulkConfig {
        packets: 20_000,
        flows: 2_000,
        ..vigil_sensor::synth::BulkConfig::default()
    };
    let cfg = crate::util::config(1, 256, std::time::Duration::from_secs(60));
    let recs = crate::util::run_bytes(&bulk.to_pcap_bytes(), &cfg).0;
    {
        let store = SqliteStore::open(
            &data,
            SqliteConfig {
                segment_rows: Some(300),
                ..SqliteConfig::default()
            },
        )
        .unwrap();
        for b in crate::query::corpus_batches(&recs) {
            store.commit(&b).unwrap();
        }
        assert!(store.build_columns().unwrap() >= 3);
    }
    let d = data.to_str().unwrap();
    let o = vigil(&[
        "query",
        "--data-dir",
        d,
        "--top",
        "src",
        "--by",
        "packets",
        "--explain",
        "--format",
        "csv",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("no roll-up holds the key src")
            && e.contains(&format!("{} column segments", recs.len() / 300))
            && e.contains("explain: answered in"),
        "{e}"
    );
    let store = SqliteStore::open_read_only(&data).unwrap();
    let all = store
        .flows(&Filter::All, TimeRange::default(), usize::MAX)
        .unwrap();
    let want = memory::top(
        &all,
        &Filter::All,
        TimeRange::default(),
        TopKey::Src,
        TopBy::Packets,
        10,
    );
    let got: Vec<(String, u64)> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].to_string(), f[2].parse().unwrap())
        })
        .collect();
    let want: Vec<(String, u64)> = want
        .iter()
        .map(|r| (r.key.clone(), r.totals.packets))
        .collect();
    assert_eq!(got, want);
    let o = vigil(&[
        "query",
        "--data-dir",
        d,
        "--top",
        "dport",
        "--explain",
        "tcp",
    ]);
    assert!(
        stderr(&o).contains("rollup_dport: the whole minutes"),
        "{}",
        stderr(&o)
    );
    let o = vigil(&[
        "query",
        "--data-dir",
        d,
        "--explain",
        "-n",
        "5",
        "host",
        "192.0.2.250",
    ]);
    assert!(
        stderr(&o).contains("flow listing: the matching rows found in"),
        "{}",
        stderr(&o)
    );
    // A collector sends its store's explanation with the answer.
    drop(store);
    let (mut collector, url) = collector_on_any_port(&data);
    for (args, says) in [
        (&["--top", "src", "--by", "packets"][..], "column segments"),
        (&["--count"][..], "rollup_proto: the whole minutes"),
        (
            &["--count", "src", "net", "0.0.0.0/0"][..],
            "column segments",
        ),
        (
            &["--series", "1m", "src", "net", "0.0.0.0/0"][..],
            "column segments",
        ),
        (
            &["-n", "5", "host", "192.0.2.250"][..],
            "flow listing: the matching rows",
        ),
    ] {
        let mut a = vec!["query", "--collector", &url, "--explain"];
        a.extend(args);
        let o = vigil(&a);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(says) && stderr(&o).contains("answered in"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    let o = vigil(&[
        "query",
        "--collector",
        &url,
        "--top",
        "src",
        "--by",
        "packets",
        "--format",
        "csv",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        !stderr(&o).contains("explain"),
        "only when asked: {}",
        stderr(&o)
    );
    assert_eq!(
        String::from_utf8(o.stdout).unwrap().lines().count(),
        got.len() + 1
    );
    let _ = collector.kill();
    let _ = collector.wait();
}
