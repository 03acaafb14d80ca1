//! The sweep over the real captures in ../shared/pcaps: Vigil's flows against
//! the conversation tables Wireshark's tshark computed (the oracles).
//!
//! Conversations are matched on protocol and endpoint pair (plus ports for
//! TCP, UDP and SCTP), packets per direction exact. TCP keeps one row per
//! connection (a reused 4-tuple is two rows, as tshark's `tcp.stream`);
//! other protocols are summed per key. Differences Vigil makes by design are
//! listed in README.md.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;
use vigil_proto::FlowRecord;

use crate::util::{FOREVER, config, corpus_dir, corpus_files, run_file};

type Key = (u8, String, Option<u16>, String, Option<u16>);

/// (key, packets lo→hi, packets hi→lo), with endpoints in sorted order.
fn canon(
    proto: u8,
    a: String,
    pa: Option<u16>,
    b: String,
    pb: Option<u16>,
    ab: u64,
    ba: u64,
) -> (Key, u64, u64) {
    let has_ports = matches!(proto, 6 | 17 | 132);
    let (pa, pb) = if has_ports { (pa, pb) } else { (None, None) };
    let ka: (std::net::IpAddr, Option<u16>) = (a.parse().unwrap(), pa);
    let kb: (std::net::IpAddr, Option<u16>) = (b.parse().unwrap(), pb);
    if ka <= kb {
        ((proto, a, pa, b, pb), ab, ba)
    } else {
        ((proto, b, pb, a, pa), ba, ab)
    }
}

/// Rows per key: TCP rows kept apart, others summed.
fn group(rows: Vec<(Key, u64, u64)>) -> HashMap<Key, Vec<(u64, u64)>> {
    let mut m: HashMap<Key, Vec<(u64, u64)>> = HashMap::new();
    for (k, ab, ba) in rows {
        let e = m.entry(k.clone()).or_default();
        if k.0 == 6 || e.is_empty() {
            e.push((ab, ba));
        } else {
            e[0].0 += ab;
            e[0].1 += ba;
        }
    }
    m
}

fn oracle_rows(path: &Path) -> Vec<(Key, u64, u64)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let port = |k: &str| v[k].as_u64().map(|p| p as u16);
            canon(
                v["ip_proto"].as_u64().unwrap() as u8,
                v["addr_a"].as_str().unwrap().to_string(),
                port("port_a"),
                v["addr_b"].as_str().unwrap().to_string(),
                port("port_b"),
                v["packets_a_to_b"].as_u64().unwrap(),
                v["packets_b_to_a"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn vigil_rows(recs: &[FlowRecord]) -> Vec<(Key, u64, u64)> {
    // Interim records of one flow add up.
    let mut by_id: HashMap<u64, FlowRecord> = HashMap::new();
    let mut order = Vec::new();
    for r in recs {
        match by_id.get_mut(&r.flow_id) {
            Some(x) => {
                x.fwd_packets += r.fwd_packets;
                x.rev_packets += r.rev_packets;
            }
            None => {
                order.push(r.flow_id);
                by_id.insert(r.flow_id, r.clone());
            }
        }
    }
    order
        .iter()
        .map(|id| {
            let r = &by_id[id];
            canon(
                r.proto,
                r.src_ip.to_string(),
                r.src_port,
                r.dst_ip.to_string(),
                r.dst_port,
                r.fwd_packets,
                r.rev_packets,
            )
        })
        .collect()
}

struct FileScore {
    name: String,
    oracle: usize,
    matched: usize,
    extra: usize,
    diffs: Vec<String>,
}

fn score(name: &str, oracle: Vec<(Key, u64, u64)>, ours: Vec<(Key, u64, u64)>) -> FileScore {
    let o = group(oracle);
    let mut v = group(ours);
    let mut s = FileScore {
        name: name.into(),
        oracle: 0,
        matched: 0,
        extra: 0,
        diffs: Vec::new(),
    };
    let mut keys: Vec<&Key> = o.keys().collect();
    keys.sort();
    for k in keys {
        let rows = &o[k];
        s.oracle += rows.len();
        let mine = v.entry(k.clone()).or_default();
        for row in rows {
            if let Some(i) = mine.iter().position(|m| m == row) {
                mine.swap_remove(i);
                s.matched += 1;
            } else {
                s.diffs
                    .push(format!("  oracle {k:?} {row:?}, vigil {mine:?}"));
            }
        }
    }
    for (k, rest) in v.iter() {
        if !rest.is_empty() && !o.contains_key(k) {
            s.extra += rest.len();
            s.diffs.push(format!("  extra  {k:?} {rest:?}"));
        }
    }
    s
}

#[test]
fn flows_match_tshark_conversations_on_the_corpus() {
    let Some(dir) = corpus_dir() else { return };
    let cfg = config(1, 256, FOREVER);
    let mut scores = Vec::new();
    for f in corpus_files(&dir) {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let oracle = dir
            .join("oracles")
            .join(format!("{name}.tshark-conv.jsonl"));
        if !oracle.exists() {
            continue;
        }
        let (recs, _) = run_file(&f, &cfg);
        scores.push(score(&name, oracle_rows(&oracle), vigil_rows(&recs)));
    }
    assert!(
        scores.len() >= 79,
        "expected the 79-capture corpus, found {}",
        scores.len()
    );
    let (mut total, mut matched, mut mean) = (0, 0, 0.0);
    for s in &scores {
        total += s.oracle;
        matched += s.matched;
        let file_score = if s.oracle == 0 {
            if s.extra == 0 { 1.0 } else { 0.0 }
        } else {
            s.matched as f64 / s.oracle as f64
        };
        mean += file_score;
        if s.matched != s.oracle || s.extra > 0 {
            eprintln!(
                "{}: {}/{} matched, {} extra",
                s.name, s.matched, s.oracle, s.extra
            );
            for d in s.diffs.iter().take(6) {
                eprintln!("{d}");
            }
        }
    }
    mean /= scores.len() as f64;
    let pooled = matched as f64 / total as f64;
    eprintln!(
        "corpus: {matched}/{total} conversations matched ({:.2} %), per-file mean {:.2} %",
        pooled * 100.0,
        mean * 100.0
    );
    assert!(pooled >= 0.995, "pooled match {:.4} below 0.995", pooled);
    assert!(mean >= 0.97, "per-file mean {:.4} below 0.97", mean);
}

/// The synthesizer's realistic mix, checked by tshark: its shares as
/// documented, every checksum valid, every DNS message well formed, and
/// Vigil's flows the conversations tshark finds (with the corpus's oracle
/// script), one per synthesized flow.
#[test]
fn realistic_mix_is_what_it_claims_and_matches_tshark() {
    use vigil_sensor::synth::{MixConfig, write_mix};
    let Some(dir) = corpus_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let pcap = tmp.path().join("mix.pcap");
    let cfg = MixConfig {
        packets: 40_000,
        flows: 1_600,
        ..MixConfig::default()
    };
    let s = write_mix(&cfg, std::fs::File::create(&pcap).unwrap()).unwrap();
    assert_eq!((s.packets, s.flows), (40_000, 1_600));
    let pct = |n: u64| n as f64 * 100.0 / s.packets as f64;
    let near = |what: &str, got: f64, want: f64, tol: f64| {
        assert!(
            (got - want).abs() <= tol,
            "{what}: {got:.2} %, want {want} %"
        );
    };
    near("IPv6", pct(s.ipv6), 10.0, 1.0);
    near("VLAN", pct(s.vlan), 5.0, 1.0);
    near("UDP", pct(s.by_kind[1] + s.by_kind[2]), 12.0, 1.0);
    assert!(s.by_kind[1] > 2 * s.by_kind[2], "most UDP is DNS: {s:?}");
    near("ICMP", pct(s.by_kind[3]), 2.0, 0.3);
    near("ESP", pct(s.by_kind[4]), 1.0, 0.3);
    assert!(s.mice * 4 > s.flows, "a long tail of mice: {s:?}");
    assert!(s.largest_flow * 10 > s.packets, "a few elephants: {s:?}");

    // tshark: no bad checksum, no malformed DNS, IP, TCP, UDP or ICMP.
    let out = std::process::Command::new("tshark")
        .args([
            "-o",
            "ip.check_checksum:TRUE",
            "-o",
            "tcp.check_checksum:TRUE",
            "-o",
            "udp.check_checksum:TRUE",
            "-n",
            "-r",
        ])
        .arg(&pcap)
        .args([
            "-Y",
            "ip.checksum.status == \"Bad\" || tcp.checksum.status == \"Bad\" \
             || udp.checksum.status == \"Bad\" || icmp.checksum.status == \"Bad\" \
             || icmpv6.checksum.status == \"Bad\" \
             || (_ws.malformed && (dns || icmp || icmpv6 || esp)) \
             || (dns && !(dns.count.queries == 1))",
            "-T",
            "fields",
            "-e",
            "frame.number",
        ])
        .output();
    let out = match out {
        Ok(o) => {
            crate::util::ran_with("tshark");
            o
        }
        Err(e) => {
            crate::util::skip(&format!("tshark not runnable: {e}"));
            return;
        }
    };
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = String::from_utf8_lossy(&out.stdout);
    assert!(bad.trim().is_empty(), "frames tshark finds broken: {bad}");
    let count = |filter: &str| {
        let o = std::process::Command::new("tshark")
            .args(["-n", "-r"])
            .arg(&pcap)
            .args(["-Y", filter])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).lines().count() as u64
    };
    let queries = count("dns.flags.response == 0 && dns.qry.name");
    let answered =
        count("dns.flags.response == 1 && dns.count.answers == 1 && (dns.a || dns.aaaa)");
    assert_eq!(queries + answered, s.by_kind[1], "DNS queries and answers");
    assert!(
        answered * 2 > queries,
        "{answered} answers to {queries} queries"
    );

    // Vigil's flows against tshark's conversations.
    let oracle = tmp.path().join("mix.jsonl");
    let status = std::process::Command::new("python3")
        .arg(dir.join("tools/tshark_conv_oracle.py"))
        .arg(&pcap)
        .arg(&oracle)
        .status()
        .unwrap();
    assert!(status.success());
    let (recs, report) = run_file(&pcap, &config(1, 256, FOREVER));
    assert_eq!(report.packets, 40_000);
    let sc = score("mix", oracle_rows(&oracle), vigil_rows(&recs));
    assert_eq!(sc.oracle, 1_600, "one conversation per flow");
    assert!(
        sc.matched == sc.oracle && sc.extra == 0,
        "{}/{} matched, {} extra:\n{}",
        sc.matched,
        sc.oracle,
        sc.extra,
        sc.diffs.join("\n")
    );
}
