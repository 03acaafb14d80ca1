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

use crate::util::{corpus_dir, corpus_files, ran_with, skip};

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
