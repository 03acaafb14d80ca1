//! Live capture on real interfaces: each test makes its own pair of
//! network namespaces joined by a veth pair, replays captures onto one end
//! with `vigil replay` (every address rewritten into 127.0.0.0/8 or the
//! test IPv6 prefix first; the frames never leave the namespaces) and runs
//! `vigil sensor --interface` on the other end. The live flows must equal
//! `vigil flows` on the frames as sent.
//!
//! These tests need root (namespaces, CAP_NET_RAW) and `ip` from iproute2;
//! without them they print why and pass.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{corpus_dir, corpus_files};

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

/// Why live tests cannot run here, if they cannot.
fn unavailable() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or("");
    if euid != "0" {
        return Some("live-capture tests need root (network namespaces, CAP_NET_RAW)".into());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(o) if o.status.success() => None,
        _ => Some("live-capture tests need `ip` (Debian package iproute2)".into()),
    }
}

macro_rules! require_live {
    () => {
        if let Some(why) = unavailable() {
            crate::util::skip(&why);
            return;
        }
        crate::util::ran_with("netns");
    };
}

fn ip(args: &[&str]) {
    let o = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        o.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Two namespaces joined by a veth pair: `va` in `a`, `vb` in `b`. Both
/// ends have IPv6 off (no router or neighbour solicitations of their own)
/// and no addresses, so the only frames on the link are the test's.
/// Deleted, with the veth pair, on drop.
struct Netns {
    a: String,
    b: String,
}

impl Netns {
    fn new() -> Netns {
        static N: AtomicU32 = AtomicU32::new(0);
        let tag = format!(
            "{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let ns = Netns {
            a: format!("vigil-test-a-{tag}"),
            b: format!("vigil-test-b-{tag}"),
        };
        ip(&["netns", "add", &ns.a]);
        ip(&["netns", "add", &ns.b]);
        ip(&[
            "link", "add", "va", "netns", &ns.a, "type", "veth", "peer", "name", "vb", "netns",
            &ns.b,
        ]);
        for (n, dev) in [(&ns.a, "va"), (&ns.b, "vb")] {
            for key in ["all", "default", dev] {
                let k = format!("net.ipv6.conf.{key}.disable_ipv6=1");
                let _ = Command::new("ip")
                    .args(["netns", "exec", n, "sysctl", "-qw", &k])
                    .status();
            }
            // Jumbo frames of the corpus (captured with offloads) fit.
            ip(&["-n", n, "link", "set", dev, "mtu", "65535"]);
            ip(&["-n", n, "link", "set", dev, "up"]);
        }
        ns
    }

    fn exec(&self, ns: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]);
        c
    }

    /// Sends captures out of `va` (rewritten), recording what was sent.
    fn replay(&self, files: &[PathBuf], pps: u32, sent: &Path) -> String {
        let mut c = self.exec(&self.a);
        c.args([VIGIL, "replay", "-i", "va", "--pps", &pps.to_string()]);
        for f in files {
            c.arg("-r").arg(f);
        }
        c.arg("--write-sent").arg(sent);
        let o = c.output().expect("vigil replay");
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        // The corpus holds damaged captures on purpose: their frames up to
        // the damage are sent, and the replayer says so and exits 1.
        let damaged_only = o.status.code() == Some(1)
            && err.contains("could not be read to the end")
            && err
                .lines()
                .filter(|l| l.starts_with("vigil: error:"))
                .all(|l| {
                    l.contains("corrupt at byte offset") || l.contains("truncated at byte offset")
                });
        assert!(
            o.status.success() || damaged_only,
            "vigil replay failed: {err}"
        );
        err
    }

    /// Starts `vigil sensor` on `vb` and waits until it captures.
    fn sensor(&self, out: &Path, args: &[&str]) -> Sensor {
        let mut c = self.exec(&self.b);
        c.args([
            VIGIL,
            "sensor",
            "-i",
            "vb",
            "--report-interval",
            "off",
            "-o",
        ])
        .arg(out)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        let mut child = c.spawn().expect("vigil sensor");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut all = String::new();
            let mut r = BufReader::new(stderr);
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                if line.contains("capturing on") {
                    let _ = tx.send(());
                }
                all.push_str(&line);
                line.clear();
            }
            all
        });
        if rx.recv_timeout(Duration::from_secs(30)).is_err() {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the sensor did not start capturing: {}",
                reader.join().unwrap_or_default()
            );
        }
        Sensor {
            child,
            stderr: Some(reader),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for n in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

struct Sensor {
    child: Child,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Sensor {
    /// Signals the sensor, waits for it to exit and returns its standard error.
    fn stop(mut self, signal: &str) -> String {
        // Let the last ring block be handed over (block timeout 100 ms) and read.
        std::thread::sleep(Duration::from_millis(600));
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args([signal, &pid]).status();
        let started = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            if started.elapsed() > Duration::from_secs(60) {
                let _ = self.child.kill();
                panic!("the sensor did not stop within 60 s of {signal}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let err = self
            .stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        assert!(status.success(), "sensor exited with {status}: {err}");
        err
    }
}

impl Drop for Sensor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A flow as compared: the conversation, and what both sides counted.
type Conversation = (String, String, String, String, String, String, String);
type Counts = (u64, u64, u64, u64, String, String);

fn conversations(jsonl: &str) -> BTreeMap<Conversation, Vec<Counts>> {
    let mut m: BTreeMap<Conversation, Vec<Counts>> = BTreeMap::new();
    for line in jsonl.lines().filter(|l| !l.trim().is_empty()) {
        let r: Value = serde_json::from_str(line).expect("a JSON line");
        let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
        let n = |k: &str| r[k].as_u64().unwrap_or_default();
        m.entry((
            s("proto"),
            s("src_ip"),
            r["src_port"].to_string(),
            s("dst_ip"),
            r["dst_port"].to_string(),
            r["vlan"].to_string(),
            r["tunnel"].to_string(),
        ))
        .or_default()
        .push((
            n("fwd_packets"),
            n("fwd_bytes"),
            n("rev_packets"),
            n("rev_bytes"),
            s("conn_state"),
            s("history"),
        ));
    }
    for v in m.values_mut() {
        v.sort();
    }
    m
}

/// `vigil flows` on the frames as sent.
fn offline(sent: &Path, extra: &[&str]) -> String {
    let o = Command::new(VIGIL)
        .args(["flows", "-q", "-r"])
        .arg(sent)
        .args(extra)
        .output()
        .expect("vigil flows");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).expect("utf-8")
}

/// Packets and bytes each way of the flows inside tunnels, by inner
/// conversation and tunnel type, whatever the tunnel's endpoints.
fn tunnelled_totals(m: &BTreeMap<Conversation, Vec<Counts>>) -> BTreeMap<Conversation, [u64; 4]> {
    let mut t: BTreeMap<Conversation, [u64; 4]> = BTreeMap::new();
    for (k, v) in m.iter().filter(|(k, _)| k.6 != "null") {
        let kind: Value = serde_json::from_str(&k.6).unwrap_or_default();
        let mut inner = k.clone();
        inner.6 = kind["type"].to_string();
        let e = t.entry(inner).or_default();
        for c in v {
            for (i, n) in [c.0, c.1, c.2, c.3].into_iter().enumerate() {
                e[i] += n;
            }
        }
    }
    t
}

fn assert_same(live: &str, off: &str, what: &str) {
    let (l, o) = (conversations(live), conversations(off));
    // A known limit of live fanout: the group spreads frames by their
    // outermost addresses, so an inner conversation carried by several
    // tunnel endpoint pairs (Teredo clients sharing a link-local address,
    // a GTP-U session handed over between base stations) is counted by
    // each worker that received a share, one record per share. Those are
    // compared by their totals: every packet and byte is still counted
    // once.
    let (lt, ot) = (tunnelled_totals(&l), tunnelled_totals(&o));
    let split_but_whole = |k: &Conversation| {
        let mut inner = k.clone();
        let kind: Value = serde_json::from_str(&k.6).unwrap_or_default();
        inner.6 = kind["type"].to_string();
        k.6 != "null" && lt.get(&inner) == ot.get(&inner)
    };
    let mut diffs = Vec::new();
    for k in l.keys().chain(o.keys()) {
        if l.get(k) != o.get(k) && !split_but_whole(k) && diffs.len() < 10 {
            diffs.push(format!(
                "{k:?}: live {:?}, offline {:?}",
                l.get(k),
                o.get(k)
            ));
        }
    }
    diffs.dedup();
    assert!(
        diffs.is_empty(),
        "{what}: {} live conversations, {} offline; differences:\n{}",
        l.len(),
        o.len(),
        diffs.join("\n")
    );
    assert!(!o.is_empty(), "{what}: nothing was sent");
}

/// A synthesized capture: TCP, UDP, ICMP, IPv6 and VLAN-tagged flows
/// between thousands of hosts.
fn synthetic(dir: &Path, packets: u32, flows: u32) -> PathBuf {
    let p = dir.join("synthetic.pcap");
    let o: Output = Command::new(VIGIL)
        .args([
            "bench",
            "--frame",
            "imix",
            "--packets",
            &packets.to_string(),
        ])
        .args(["--flows", &flows.to_string(), "--write-pcap"])
        .arg(&p)
        .output()
        .expect("vigil bench --write-pcap");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    p
}

fn counter(summary: &str, prefix: &str, field: &str) -> u64 {
    let line = summary
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{summary}"));
    let mut words = line.split_whitespace();
    while let Some(w) = words.next() {
        if w.trim_end_matches(':') == field
            && let Some(v) = words.next()
        {
            return v.parse().unwrap_or_else(|_| panic!("{field} in {line}"));
        }
    }
    panic!("no {field} in {line}")
}

/// One sensor run over `files`: the live flows must equal the offline
/// ones, and the kernel must have dropped nothing. Returns the replayer's
/// and the sensor's reports.
fn run_live(
    ns: &Netns,
    dir: &Path,
    files: &[PathBuf],
    workers: &str,
    tag: &str,
) -> (String, String) {
    let out = dir.join(format!("{tag}.jsonl"));
    let sent = dir.join(format!("{tag}-sent.pcap"));
    let sensor = ns.sensor(&out, &["--workers", workers]);
    let replay = ns.replay(files, 30_000, &sent);
    let summary = sensor.stop("-INT");
    let live = std::fs::read_to_string(&out).expect("live output");
    assert_same(
        &live,
        &offline(&sent, &[]),
        &format!("{tag}, {workers} worker(s)"),
    );
    assert_eq!(counter(&summary, "kernel:", "dropped"), 0, "{summary}");
    assert_eq!(
        counter(&summary, "kernel:", "received"),
        counter(&summary, "packets:", "packets"),
        "{summary}"
    );
    (replay, summary)
}

fn live_equals_offline(workers: &str) {
    require_live!();
    let dir = tempfile::tempdir().expect("tempdir");
    let ns = Netns::new();
    // Synthesized traffic: every frame sent is seen.
    let synth = synthetic(dir.path(), 30_000, 2_000);
    let (replay, summary) = run_live(&ns, dir.path(), &[synth], workers, "synthetic");
    let sent_frames = counter(&replay, "sent", "sent");
    assert_eq!(
        counter(&summary, "packets:", "packets"),
        sent_frames,
        "{summary}"
    );
    if workers != "1" {
        let per = summary
            .lines()
            .find(|l| l.starts_with("packets per worker:"))
            .expect("per-worker line");
        let shares = per
            .trim_start_matches("packets per worker:")
            .split("kernel drops")
            .next()
            .unwrap_or("");
        assert!(
            shares
                .split(',')
                .all(|n| n.trim().parse::<u64>().is_ok_and(|n| n > 0)),
            "every worker gets a share: {per}"
        );
    }
    // The corpus: tunnels, VLANs, IPv6, fragments, damaged files. The
    // kernel reassembles IPv4 fragments before fanout, so fewer frames are
    // seen than sent there; the flows count a datagram once either way.
    if let Some(c) = corpus_dir() {
        run_live(&ns, dir.path(), &corpus_files(&c), workers, "corpus");
    }
}

#[test]
fn live_flows_equal_offline_flows_one_worker() {
    live_equals_offline("1");
}

#[test]
fn live_flows_equal_offline_flows_two_workers() {
    live_equals_offline("2");
}

/// A deliberately tiny ring and a reader frozen while frames arrive: the
/// kernel drops what does not fit, the sensor reports the drops, and seen +
/// dropped = sent. The drops reach the collector (in the namespace, on its
/// own loopback) and `vigil query --status`.
#[test]
fn ring_overflow_drops_are_counted_and_reach_the_collector() {
    require_live!();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = synthetic(dir.path(), 5_000, 200);
    let ns = Netns::new();
    ip(&["-n", &ns.b, "link", "set", "lo", "up"]);
    let data = dir.path().join("collector");
    let mut collector = ns
        .exec(&ns.b)
        .args([
            VIGIL,
            "collector",
            "--listen",
            "127.0.0.1:50051",
            "--data-dir",
        ])
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("collector");
    let out = dir.path().join("live.jsonl");
    let sent = dir.path().join("sent.pcap");
    let spool = dir.path().join("spool");
    let spool = spool.to_str().expect("utf-8 path");
    let sensor = ns.sensor(
        &out,
        &[
            "--ring-block-size",
            "4KiB",
            "--ring-blocks",
            "2",
            "--workers",
            "1",
            "--collector",
            "http://127.0.0.1:50051",
            "--sensor-id",
            "live-1",
            "--spool-dir",
            spool,
        ],
    );
    let pid = sensor.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let replay = ns.replay(std::slice::from_ref(&file), 0, &sent);
    assert!(
        Command::new("kill")
            .args(["-CONT", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let summary = sensor.stop("-TERM");
    let sent_frames = counter(&replay, "sent", "sent");
    let seen = counter(&summary, "packets:", "packets");
    let dropped = counter(&summary, "kernel:", "dropped");
    assert!(dropped > 0, "a frozen 8 KiB ring must overflow: {summary}");
    assert!(
        seen > 0,
        "the ring's contents are read after the thaw: {summary}"
    );
    assert_eq!(
        seen + dropped,
        sent_frames,
        "seen + dropped = sent\n{summary}"
    );
    assert_eq!(
        counter(&summary, "kernel:", "received"),
        sent_frames,
        "{summary}"
    );
    let status = ns
        .exec(&ns.b)
        .args([
            VIGIL,
            "query",
            "--collector",
            "http://127.0.0.1:50051",
            "--status",
        ])
        .args(["--format", "jsonl"])
        .output()
        .expect("vigil query --status");
    let _ = collector.kill();
    let _ = collector.wait();
    let text = String::from_utf8_lossy(&status.stdout);
    let row: Value = serde_json::from_str(text.lines().next().unwrap_or("{}")).expect("status");
    assert_eq!(row["sensor_id"], "live-1", "{text}");
    assert_eq!(row["kernel_drops"].as_u64(), Some(dropped), "{text}");
    assert_eq!(row["packets"].as_u64(), Some(seen), "{text}");
}

#[test]
fn operator_mistakes_exit_64_with_one_clear_line() {
    require_live!();
    let ns = Netns::new();
    let run = |args: &[&str]| {
        let o = ns
            .exec(&ns.b)
            .args([VIGIL, "sensor", "-o", "-"])
            .args(args)
            .output()
            .expect("vigil sensor");
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["-i", "nosuch0"]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("no such interface: \"nosuch0\""), "{err}");
    let (code, err) = run(&["-i", "vb", "--bpf", "tcp port"]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("capture filter \"tcp port\""), "{err}");
    let (code, err) = run(&["-i", "vb", "--ring-block-size", "5000"]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("sensor.capture"), "{err}");
    // Without CAP_NET_RAW (an unprivileged user), if setpriv is here.
    if Command::new("setpriv").arg("--version").output().is_ok() {
        let o = ns
            .exec(&ns.b)
            .args([
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                VIGIL,
            ])
            .args(["sensor", "-o", "-", "-i", "vb"])
            .output()
            .expect("setpriv");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(64), "{err}");
        assert!(err.contains("needs CAP_NET_RAW"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    } else {
        eprintln!("setpriv not found: the CAP_NET_RAW case is not checked");
    }
}

/// A quiet link: the sensor still expires flows by the wall clock, and
/// stops promptly when told.
#[test]
fn an_idle_link_expires_flows_and_stops() {
    require_live!();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = synthetic(dir.path(), 200, 20);
    let ns = Netns::new();
    let out = dir.path().join("live.jsonl");
    let sent = dir.path().join("sent.pcap");
    let sensor = ns.sensor(&out, &["--idle-timeout", "1s"]);
    ns.replay(std::slice::from_ref(&file), 10_000, &sent);
    // Idle timeout 1 s, then the 250 ms wheel and the 100 ms poll.
    let deadline = Instant::now() + Duration::from_secs(20);
    let expected = conversations(&offline(&sent, &[])).len();
    let mut seen = 0;
    while Instant::now() < deadline {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        seen = text.lines().count();
        if seen >= expected {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        seen >= expected,
        "{seen} of {expected} flows expired on the idle link"
    );
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    assert!(text.lines().all(|l| !l.contains("\"shutdown\"")));
    let _ = sensor.stop("-INT");
}

/// Every frame of the corpus through the replayer's rewriting: what it
/// accepts names only test addresses, tunnels and all (no root needed).
#[test]
fn rewriting_the_corpus_leaves_only_test_addresses() {
    let Some(dir) = corpus_dir() else { return };
    use vigil_sensor::rewrite::{Rewriter, Skip};
    let mut frames = 0;
    let mut out = Vec::new();
    let mut outcomes = BTreeMap::new();
    for f in corpus_files(&dir) {
        let bytes = std::fs::read(&f).expect("read");
        let Ok(mut r) = vigil_sensor::capture::CaptureReader::from_slice(&bytes, f.clone()) else {
            continue;
        };
        let mut rw = Rewriter::new();
        while let Ok(Some(p)) = r.next_packet() {
            let res = rw.rewrite(p.link, p.data, &mut out);
            assert_ne!(res, Err(Skip::Stray), "{} frame {frames}", f.display());
            *outcomes.entry(res.err()).or_insert(0u64) += 1;
            frames += 1;
        }
    }
    eprintln!("{outcomes:?}");
    assert!(frames > 90_000, "{frames}");
    // Nearly everything is sent; ARP and the like are not.
    assert!(outcomes[&None] > 90_000, "{outcomes:?}");
}

#[cfg(feature = "libpcap")]
mod libpcap {
    use super::*;
    use vigil_sensor::capture::PacketSource;
    use vigil_sensor::capture::libpcap::PcapFile;
    use vigil_sensor::run;

    /// The libpcap reader gives the same flows as the pure-Rust one on
    /// every capture of the corpus libpcap can open.
    #[test]
    fn libpcap_file_reader_equals_the_native_reader_on_the_corpus() {
        crate::util::ran_with("libpcap");
        let Some(dir) = corpus_dir() else { return };
        let cfg = crate::util::config(1, 256, Duration::from_secs(60));
        let mut compared = 0;
        let mut refused = Vec::new();
        let mut damaged = Vec::new();
        for f in corpus_files(&dir) {
            let (native, nrep) = crate::util::run_file(&f, &cfg);
            let mut src = match PcapFile::open(&f) {
                Ok(s) => s,
                Err(e) => {
                    refused.push(format!("{e}"));
                    continue;
                }
            };
            let out = std::sync::Mutex::new(Vec::new());
            let mut sink = |r: &[vigil_proto::FlowRecord]| {
                out.lock().unwrap().extend_from_slice(r);
                Ok(())
            };
            let src: &mut (dyn PacketSource + Send) = &mut src;
            let rep = run::run_source(src, &cfg, &mut sink).expect("libpcap run");
            let mut via = out.into_inner().unwrap();
            via.sort_by_key(|r| (r.first_seen_ns, r.flow_id, r.last_seen_ns));
            let (native_ok, via_ok) = (nrep.input_errors.is_empty(), rep.input_errors.is_empty());
            if native_ok == via_ok {
                // Identical, and a damaged file stops both at the same record.
                assert_eq!(native, via, "{}", f.display());
                compared += 1;
            } else {
                eprintln!(
                    "{}: native {:?}, libpcap {:?}",
                    f.display(),
                    nrep.input_errors,
                    rep.input_errors
                );
                damaged.push(f.clone());
            }
        }
        eprintln!(
            "{compared} captures identical; libpcap refused: {refused:?}; damaged: {damaged:?}"
        );
        // One is not: libpcap refuses a pcapng file whose interfaces have
        // different snapshot lengths (the native reader takes it).
        assert!(compared >= 63, "{compared} compared");
    }

    #[test]
    fn libpcap_live_source_and_bpf_filters() {
        crate::util::ran_with("libpcap");
        require_live!();
        let dir = tempfile::tempdir().expect("tempdir");
        let file = synthetic(dir.path(), 20_000, 1_000);
        let ns = Netns::new();
        // libpcap as the source.
        let out = dir.path().join("live.jsonl");
        let sent = dir.path().join("sent.pcap");
        let sensor = ns.sensor(&out, &["--source", "libpcap", "--workers", "2"]);
        ns.replay(std::slice::from_ref(&file), 30_000, &sent);
        let _ = sensor.stop("-INT");
        assert_same(
            &std::fs::read_to_string(&out).expect("output"),
            &offline(&sent, &[]),
            "libpcap source",
        );
        // A filter on AF_PACKET, compiled by libpcap: only TCP is captured.
        let out = dir.path().join("tcp.jsonl");
        let sent = dir.path().join("sent-tcp.pcap");
        let sensor = ns.sensor(&out, &["--bpf", "tcp", "--workers", "2"]);
        ns.replay(std::slice::from_ref(&file), 30_000, &sent);
        let _ = sensor.stop("-INT");
        let tcp_only: String = offline(&sent, &[])
            .lines()
            .filter(|l| l.contains("\"proto\":\"tcp\""))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_same(
            &std::fs::read_to_string(&out).expect("output"),
            &tcp_only,
            "AF_PACKET with --bpf tcp",
        );
    }
}

/// The sensor's metrics endpoint on a live AF_PACKET capture: the frames
/// and wire bytes sent, the kernel rings' counts, no drop, and
/// `promtool check metrics` on the exposition (scraped inside the
/// sensor's namespace).
#[test]
fn live_metrics_count_what_the_rings_saw() {
    require_live!();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = synthetic(dir.path(), 20_000, 500);
    let ns = Netns::new();
    ip(&["-n", &ns.b, "link", "set", "lo", "up"]);
    let out = dir.path().join("live.jsonl");
    let sensor = ns.sensor(
        &out,
        &["--workers", "2", "--metrics-listen", "127.0.0.1:9465"],
    );
    let sent = dir.path().join("sent.pcap");
    let replay = ns.replay(std::slice::from_ref(&file), 30_000, &sent);
    let frames = counter(&replay, "sent", "sent") as f64;
    let scrape = || {
        let o = ns
            .exec(&ns.b)
            .args([
                "curl",
                "-s",
                "--max-time",
                "5",
                "http://127.0.0.1:9465/metrics",
            ])
            .output()
            .expect("curl in the namespace");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let value = crate::metrics::value;
    // Workers publish every second or so.
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let t = scrape();
        if value(&t, "vigil_sensor_packets_total{source=\"vb\"}") == Some(frames) {
            break t;
        }
        assert!(
            Instant::now() < deadline,
            "after 20 s, {frames} frames sent:\n{t}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let kernel = value(&text, "vigil_sensor_kernel_packets_total{source=\"vb\"}").unwrap();
    assert!(
        kernel >= frames,
        "the rings handed over {kernel} of {frames}"
    );
    assert_eq!(
        value(&text, "vigil_sensor_kernel_drops_total{source=\"vb\"}"),
        Some(0.0)
    );
    assert_eq!(
        value(
            &text,
            "vigil_sensor_dropped_packets_total{stage=\"kernel\",reason=\"ring_full\"}"
        ),
        Some(0.0)
    );
    let bytes = value(&text, "vigil_sensor_bytes_total{source=\"vb\"}").unwrap();
    assert!(bytes >= frames * 60.0, "{bytes} bytes for {frames} frames");
    assert!(
        value(&text, "vigil_sensor_active_flows").unwrap() > 0.0,
        "flows are open while the link is live:\n{text}"
    );
    crate::transport::promtool_accepts(&text);
    let summary = sensor.stop("-INT");
    assert_eq!(
        counter(&summary, "packets:", "packets") as f64,
        frames,
        "{summary}"
    );
}
