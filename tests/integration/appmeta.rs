//! Application metadata against Wireshark's dissectors: on every capture
//! of the corpus, each field Vigil extracts (DNS name and response code,
//! TLS server name and ALPN, HTTP host and method, SSH banners, and the
//! ICS function codes) is compared per flow with what tshark reports for
//! the same flow (tests/integration/python/app_vs_tshark.py does the
//! matching). Issue #29's bar: Vigil agrees on at least 98 % of the flows
//! where tshark has the field, for every field.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::util::{corpus_dir, corpus_files, dns_exchange, flows_json, ran_with, skip, udp_frame};

/// The least number of flows tshark must report per field on the corpus:
/// the comparison must not pass for want of data.
const MIN_FLOWS: [(&str, u64); 14] = [
    ("dns.qry.name", 100),
    ("dns.flags.rcode", 100),
    ("tls.sni", 40),
    ("tls.alpn", 3),
    ("http.host", 100),
    ("http.method", 100),
    ("ssh.protocol", 5),
    ("modbus.func_code", 15),
    ("s7comm.param.func", 1),
    ("dnp3.al.func", 10),
    ("iec60870_asdu.typeid", 6),
    ("bacnet.service", 1000),
    ("enip.command", 4),
    ("cip.service", 4),
];

#[test]
fn app_metadata_agrees_with_tshark_on_the_corpus() {
    let Some(dir) = corpus_dir() else { return };
    if Command::new("tshark").arg("-v").output().is_err() {
        skip("tshark is not installed (apt install tshark)");
        return;
    }
    ran_with("tshark");
    // Fuzzer-made captures are left out: their TCP sequence numbers are
    // garbage, and which of their segments reach Wireshark's dissectors
    // is its TCP analysis's choice (Vigil reads them all, and must not
    // panic on them: the corpus sweep runs them).
    let captures: Vec<_> = corpus_files(&dir)
        .into_iter()
        .filter(|p| !p.to_string_lossy().contains("fuzz"))
        .collect();
    assert!(captures.len() >= 70, "{} captures", captures.len());
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/integration/python/app_vs_tshark.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(env!("CARGO_BIN_EXE_vigil"))
        .args(&captures)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let score: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut failures = Vec::new();
    for (field, min) in MIN_FLOWS {
        let s = &score[field];
        let (flows, agree) = (s["flows"].as_u64().unwrap(), s["agree"].as_u64().unwrap());
        eprintln!("{field}: {agree}/{flows}");
        if flows < min {
            failures.push(format!(
                "{field}: tshark has it on {flows} flows, expected at least {min}"
            ));
        } else if agree * 100 < flows * 98 {
            failures.push(format!(
                "{field}: {agree}/{flows} agree, below 98 %; first differences: {}",
                s["diffs"]
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A TLS 1.3 ClientHello handshake message as a QUIC client sends it:
/// server name, ALPN `h3`, supported versions, a key share, signature
/// algorithms and QUIC transport parameters.
fn quic_client_hello(sni: &str) -> Vec<u8> {
    let ext = |t: u16, d: &[u8]| {
        let mut e = t.to_be_bytes().to_vec();
        e.extend_from_slice(&(d.len() as u16).to_be_bytes());
        e.extend_from_slice(d);
        e
    };
    let mut name = vec![0];
    name.extend_from_slice(&(sni.len() as u16).to_be_bytes());
    name.extend_from_slice(sni.as_bytes());
    let mut server_name = ((name.len()) as u16).to_be_bytes().to_vec();
    server_name.extend(name);
    let mut exts = ext(0x0000, &server_name);
    exts.extend(ext(0x0010, &[0, 3, 2, b'h', b'3']));
    exts.extend(ext(0x002b, &[2, 3, 4]));
    exts.extend(ext(0x000a, &[0, 2, 0, 0x1d]));
    let mut share = vec![0, 36, 0, 0x1d, 0, 32];
    share.extend([7u8; 32]);
    exts.extend(ext(0x0033, &share));
    exts.extend(ext(0x000d, &[0, 4, 4, 3, 8, 4]));
    exts.extend(ext(0x0039, &[0x01, 0x02, 0x67, 0x10]));
    let mut body = vec![3, 3];
    body.extend([9u8; 32]);
    body.push(0); // no session id
    body.extend([0, 6, 0x13, 0x01, 0x13, 0x02, 0x13, 0x03]);
    body.extend([1, 0]);
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend(exts);
    let mut msg = vec![1, 0];
    msg.extend_from_slice(&(body.len() as u16).to_be_bytes());
    msg.extend(body);
    msg
}

/// QUIC: client Initials made here (RFC 9001's packet protection), which
/// tshark decrypts and dissects as well: both read the same server name,
/// and the record is `quic` with a JA4 of prefix `q13d`.
#[test]
fn quic_initials_are_read_as_tshark_reads_them() {
    use vigil_sensor::synth::{Scenario, quic_crypto, quic_initial};
    if Command::new("tshark").arg("-v").output().is_err() {
        return skip("tshark is not installed (apt install tshark)");
    }
    ran_with("tshark");
    let dir = tempfile::tempdir().unwrap();
    let mut sc = Scenario::new();
    let names = ["www.example.org", "video.cdn.example.net"];
    for (i, sni) in names.iter().enumerate() {
        let hello = quic_client_hello(sni);
        let dcid = [0x42, i as u8, 3, 4, 5, 6, 7, 8];
        let (a, b) = hello.split_at(50);
        // Two frames, the second first.
        let mut frames = quic_crypto(50, b);
        frames.extend(quic_crypto(0, a));
        let p = quic_initial(1, &dcid, &[0xaa, 0xbb], false, 0, &frames);
        let frame = udp_frame([10, 9, 0, 1], 51000 + i as u16, [10, 9, 0, 2], 443, &p);
        sc.frame(1_767_261_600_000_000_000 + i as u64 * 1_000_000, frame);
    }
    let pcap = dir.path().join("quic.pcap");
    std::fs::write(&pcap, sc.to_pcap_bytes()).unwrap();
    let out = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(&pcap)
        .args(["-T", "fields", "-e", "tls.handshake.extensions_server_name"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(theirs, names, "tshark decrypts the Initials made here");
    let mut ours = Vec::new();
    for v in flows_json(&pcap) {
        assert_eq!(v["app"]["proto"], "quic", "{v}");
        let ja4 = v["app"]["tls"]["ja4"].as_str().unwrap();
        // QUIC, TLS 1.3, SNI, 3 ciphers, 7 extensions, ALPN h3.
        assert!(ja4.starts_with("q13d0307h3_"), "{ja4}");
        ours.push(v["app"]["tls"]["sni"].as_str().unwrap().to_string());
    }
    ours.sort();
    let mut names = names.to_vec();
    names.sort();
    assert_eq!(ours, names);
}

/// Every name a DNS flow asks is a record of its own: a socket that asks
/// many (a tunnel, a forwarder on a fixed port) reports every one, each
/// record with its exchanges' packets; a query sent again (the same id),
/// or the same name asked again (AAAA after A), stays in the record.
#[test]
fn each_dns_exchange_on_one_socket_is_a_record() {
    use vigil_sensor::synth::Scenario;
    let dir = tempfile::tempdir().unwrap();
    let mut sc = Scenario::new();
    let t0 = 1_767_261_600_000_000_000u64;
    let udp = |sc: &mut Scenario, t: u64, fwd: bool, p: &[u8]| {
        let (src, dst, sp, dp) = if fwd {
            ([10, 9, 0, 1], [10, 9, 0, 53], 33333, 53)
        } else {
            ([10, 9, 0, 53], [10, 9, 0, 1], 53, 33333)
        };
        sc.frame(t, udp_frame(src, sp, dst, dp, p));
    };
    // A.example.org asked twice (as getaddrinfo asks A then AAAA), in
    // another case the second time.
    let names = [
        "a.example.org",
        "A.Example.org",
        "b.example.org",
        "c.example.org",
    ];
    for (i, n) in names.iter().enumerate() {
        let t = t0 + i as u64 * 1_000_000_000;
        let (q, r) = dns_exchange(100 + i as u16, n, 0);
        udp(&mut sc, t, true, &q);
        if i == 2 {
            // Sent again before the answer.
            udp(&mut sc, t + 1_000_000, true, &q);
        }
        udp(&mut sc, t + 2_000_000, false, &r);
    }
    let pcap = dir.path().join("one-socket.pcap");
    std::fs::write(&pcap, sc.to_pcap_bytes()).unwrap();
    let recs = flows_json(&pcap);
    let got: Vec<(String, u64, u64)> = recs
        .iter()
        .map(|r| {
            (
                r["app"]["dns"]["qname"].as_str().unwrap().to_string(),
                r["fwd_packets"].as_u64().unwrap(),
                r["rev_packets"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("a.example.org".to_string(), 2, 2),
            ("b.example.org".to_string(), 2, 1),
            ("c.example.org".to_string(), 1, 1)
        ]
    );
    let id = &recs[0]["flow_id"];
    assert!(recs.iter().all(|r| &r["flow_id"] == id), "one flow");
}
