//! Evidence bundles (issue #26) from real attack captures replayed through
//! `vigil sensor` into `vigil collector`: exported, verified by `vigil
//! evidence verify` and by stock tools (openssl, sha256sum), and every
//! change to them named — a flipped byte in any member, a flow edited and
//! the manifest re-signed with the collector's own key, a flow edited in
//! the store before export. A sensor with a flow table too small for the
//! flood shows its losses in the bundle and in `vigil alerts show`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use sha2::Digest as _;
use vigil_collector::evidence::{CollectorKey, DEFAULT_KEY};
use vigil_collector::model::alert::{Alert, AlertKind};
use vigil_collector::store::AlertQuery;
use vigil_collector::store::prelude::*;
use vigil_collector::store::sqlite::SqliteStore;

use crate::util::{corpus_dir, free_port, ran_with, rt, skip, tar_members, vigil};

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: Output, what: &str) -> String {
    assert!(o.status.success(), "{what}: {}", stderr(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn tar_of(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut t = tar::Builder::new(Vec::new());
    for (p, b) in members {
        let mut h = tar::Header::new_ustar();
        h.set_path(p).unwrap();
        h.set_size(b.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        t.append(&h, b.as_slice()).unwrap();
    }
    t.into_inner().unwrap()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Recomputes SHA256SUMS and manifest.json over the members and signs
/// the manifest with `key`: what a dishonest operator holding the
/// collector's key could do.
fn resign(members: &mut [(String, Vec<u8>)], key: &CollectorKey) {
    let sums: String = members
        .iter()
        .filter(|(p, _)| !matches!(p.as_str(), "manifest.json" | "manifest.sig" | "SHA256SUMS"))
        .map(|(p, b)| format!("{}  {p}\n", hex(&sha2::Sha256::digest(b))))
        .collect();
    for m in members.iter_mut() {
        if m.0 == "SHA256SUMS" {
            m.1 = sums.clone().into_bytes();
        }
    }
    let mut manifest: serde_json::Value = serde_json::from_slice(&members[0].1).unwrap();
    let list: Vec<_> = members[2..]
        .iter()
        .map(|(p, b)| {
            serde_json::json!({"path": p, "sha256": hex(&sha2::Sha256::digest(b)), "bytes": b.len()})
        })
        .collect();
    manifest["members"] = serde_json::json!(list);
    let text = serde_json::to_vec_pretty(&manifest).unwrap();
    members[1].1 = key.sign(&text).to_vec();
    members[0].1 = text;
}

struct Site {
    tmp: tempfile::TempDir,
    data: PathBuf,
    spool: PathBuf,
    url: String,
    collector: Child,
}

impl Site {
    fn verify(&self, bundle: &Path) -> Output {
        vigil()
            .args(["evidence", "verify"])
            .arg(bundle)
            .arg("--key")
            .arg(self.data.join("evidence/signing-key.pub.pem"))
            .arg("--sensor-key")
            .arg(format!(
                "site-1={}",
                self.spool.join("attestation-key.pub.pem").display()
            ))
            .output()
            .expect("vigil evidence verify")
    }

    fn export(&self, id: u64, name: &str) -> PathBuf {
        let out = self.tmp.path().join(name);
        ok(
            vigil()
                .args(["evidence", "export", &id.to_string(), "--data-dir"])
                .arg(&self.data)
                .arg("-o")
                .arg(&out)
                .output()
                .unwrap(),
            "export",
        );
        out
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = self.collector.kill();
        let _ = self.collector.wait();
    }
}

/// A collector protecting the captures' victims, fed by `vigil sensor`:
/// "site-1" replays the attacks, "lossy" replays the flood with a flow
/// table of 64 entries.
fn site(dir: &Path) -> Site {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let addr = free_port();
    let conf = tmp.path().join("collector.toml");
    std::fs::write(
        &conf,
        format!(
            "listen = \"{addr}\"\ndata_dir = {:?}\n\
             [[protected]]\nname = \"web\"\ncidrs = [\"10.10.10.10/32\"]\nsector = \"water\"\ncriticality = \"high\"\n\
             [[protected]]\nname = \"ftp\"\ncidrs = [\"10.121.70.151/32\"]\nsector = \"water\"\ncriticality = \"high\"\n\
             [[protected]]\nname = \"plc\"\ncidrs = [\"118.189.96.132/32\"]\nsector = \"water\"\ncriticality = \"critical\"\n",
            data.display().to_string()
        ),
    )
    .unwrap();
    let collector = vigil()
        .args(["collector", "-c"])
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn collector");
    let url = format!("http://{addr}");
    let spool = tmp.path().join("spool");
    let sensor = |id: &str, spool: &Path, pcap: &str, extra: &[&str]| {
        let o = vigil()
            .args(["sensor", "-r"])
            .arg(dir.join(pcap))
            .args([
                "--collector",
                &url,
                "--sensor-id",
                id,
                "--batch-delay",
                "50ms",
            ])
            .args(["--drain-timeout", "60s", "--spool-dir"])
            .arg(spool)
            .args(extra)
            .output()
            .expect("vigil sensor");
        ok(o, pcap);
    };
    for pcap in [
        "stopddos__pkt.TCP.synflood.spoofed.pcap",
        "stopddos__amp.dns.RRSIG.fragmented.pcap",
        "chrissanders-packets__ppa1e__ftp-crack.pcap",
        "zeek__modbus__modbusSmall.pcap",
    ] {
        sensor("site-1", &spool, pcap, &[]);
    }
    let small = tmp.path().join("small.toml");
    std::fs::write(&small, "[flow]\nmax_flows = 64\n").unwrap();
    sensor(
        "lossy",
        &tmp.path().join("spool-lossy"),
        "stopddos__pkt.TCP.synflood.spoofed.pcap",
        &["-c", small.to_str().unwrap()],
    );
    rt().block_on(crate::detection::wait_detected(&url));
    Site {
        tmp,
        data,
        spool,
        url,
        collector,
    }
}

fn alert_of(alerts: &[Alert], kind: AlertKind, asset: &str) -> Alert {
    alerts
        .iter()
        .find(|a| a.kind == kind && a.asset == asset)
        .unwrap_or_else(|| panic!("no {kind:?} alert on {asset}: {alerts:?}"))
        .clone()
}

#[test]
fn bundles_of_real_attacks_verify_offline_and_every_change_is_named() {
    let Some(dir) = corpus_dir() else { return };
    let site = site(&dir);
    let store = SqliteStore::open_read_only(&site.data).unwrap();
    let alerts = store.alerts(&AlertQuery::default()).unwrap();
    let cases = [
        (AlertKind::SynFlood, "web"),
        (AlertKind::Amplification, "web"),
        (AlertKind::BruteForce, "ftp"),
        (AlertKind::IcsUnauthorizedClient, "plc"),
    ];
    let mut bundles = Vec::new();
    for (kind, asset) in cases {
        let a = alert_of(&alerts, kind, asset);
        let full = store.alert(a.id).unwrap().unwrap();
        let path = site.export(a.id, &format!("alert-{}.tar", a.id));
        let out = ok(site.verify(&path), &format!("verify {kind:?}"));
        assert!(out.contains("verified"), "{out}");
        // flows.jsonl: exactly the alert's kept evidence flows.
        let bundle = std::fs::read(&path).unwrap();
        let m: BTreeMap<_, _> = tar_members(&bundle).into_iter().collect();
        let want: String = store
            .evidence_flows(&full.evidence)
            .unwrap()
            .iter()
            .map(|(_, r)| serde_json::to_string(r).unwrap() + "\n")
            .collect();
        assert!(!want.is_empty());
        assert_eq!(String::from_utf8_lossy(&m["flows.jsonl"]), want, "{kind:?}");
        let proofs = String::from_utf8_lossy(&m["attestation/proofs.jsonl"]).into_owned();
        assert!(
            !proofs.contains("\"attested\":false"),
            "every flow is attested"
        );
        bundles.push((a, path));
    }

    // The same bundle from the collector over gRPC.
    let (flood, flood_path) = &bundles[0];
    let remote = site.tmp.path().join("remote.tar");
    ok(
        vigil()
            .args([
                "evidence",
                "export",
                &flood.id.to_string(),
                "--collector",
                &site.url,
                "-o",
            ])
            .arg(&remote)
            .output()
            .unwrap(),
        "export over gRPC",
    );
    ok(site.verify(&remote), "verify the gRPC export");

    // Stock tools, as the bundle's README says.
    let x = site.tmp.path().join("x");
    std::fs::create_dir(&x).unwrap();
    let run = |cmd: &str, args: &[&str]| -> Option<Output> {
        match Command::new(cmd).args(args).current_dir(&x).output() {
            Ok(o) => Some(o),
            Err(e) => {
                skip(&format!("{cmd} not runnable ({e})"));
                None
            }
        }
    };
    let Some(t) = run("tar", &["-xf", flood_path.to_str().unwrap()]) else {
        return;
    };
    ok(t, "tar -xf");
    if let Some(o) = run(
        "openssl",
        &[
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            "collector.pub.pem",
            "-rawin",
            "-in",
            "manifest.json",
            "-sigfile",
            "manifest.sig",
        ],
    ) {
        ran_with("openssl");
        assert!(ok(o, "openssl").contains("Signature Verified Successfully"));
    }
    let Some(o) = run("sha256sum", &["-c", "SHA256SUMS"]) else {
        return;
    };
    let sums = ok(o, "sha256sum -c");
    assert!(
        !sums.contains("FAILED") && sums.contains("flows.jsonl: OK"),
        "{sums}"
    );
    let own = ok(run("sha256sum", &["SHA256SUMS"]).unwrap(), "sha256sum");
    let digest = own.split_whitespace().next().unwrap();
    let manifest = std::fs::read_to_string(x.join("manifest.json")).unwrap();
    let line = manifest
        .lines()
        .find(|l| l.contains("\"SHA256SUMS\""))
        .unwrap();
    assert!(line.contains(digest), "{line} vs {digest}");
    // One batch's statement, with the sensor's key: the README's commands.
    let batches = std::fs::read_to_string(x.join("attestation/batches.jsonl")).unwrap();
    let b: serde_json::Value = serde_json::from_str(batches.lines().next().unwrap()).unwrap();
    let sensor_pem = match b["sensor_id"].as_str() {
        Some("site-1") => site.spool.join("attestation-key.pub.pem"),
        _ => site.tmp.path().join("spool-lossy/attestation-key.pub.pem"),
    };
    for tool in ["jq", "xxd"] {
        if run(tool, &["--version"]).is_none() {
            return;
        }
    }
    let script = format!(
        "jq -r .statement attestation/batches.jsonl | head -1 | xxd -r -p > st.bin && \
         jq -r .signature attestation/batches.jsonl | head -1 | xxd -r -p > st.sig && \
         openssl pkeyutl -verify -pubin -inkey {} -rawin -in st.bin -sigfile st.sig",
        sensor_pem.display()
    );
    let o = run("sh", &["-c", &script]).unwrap();
    assert!(ok(o, "the README's batch check").contains("Signature Verified Successfully"));

    // Any byte of any member changed: named.
    let (brute, brute_path) = &bundles[2];
    let original = tar_members(&std::fs::read(brute_path).unwrap());
    for i in 0..original.len() {
        let mut m = original.clone();
        let mid = m[i].1.len() / 2;
        m[i].1[mid] ^= 0x20;
        let p = site.tmp.path().join("changed.tar");
        std::fs::write(&p, tar_of(&m)).unwrap();
        let o = site.verify(&p);
        assert!(!o.status.success(), "{} changed, yet verified", m[i].0);
        let named = if i < 2 { "manifest" } else { m[i].0.as_str() };
        assert!(
            stderr(&o).contains(named),
            "{} changed: {}",
            m[i].0,
            stderr(&o)
        );
    }

    // A flow edited, the manifest recomputed and re-signed with the
    // collector's own key: the flow and its sensor are named.
    let key = CollectorKey::load_or_create(&site.data.join(DEFAULT_KEY)).unwrap();
    let mut m = original.clone();
    let fi = m.iter().position(|(p, _)| p == "flows.jsonl").unwrap();
    let flows = String::from_utf8(m[fi].1.clone()).unwrap();
    let mut lines: Vec<String> = flows.lines().map(str::to_string).collect();
    let mut v: serde_json::Value = serde_json::from_str(&lines[2]).unwrap();
    v["fwd_bytes"] = serde_json::json!(v["fwd_bytes"].as_u64().unwrap() + 1000);
    lines[2] = v.to_string();
    m[fi].1 = (lines.join("\n") + "\n").into_bytes();
    resign(&mut m, &key);
    let p = site.tmp.path().join("resigned.tar");
    std::fs::write(&p, tar_of(&m)).unwrap();
    let o = site.verify(&p);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("flows.jsonl line 3 (sensor site-1")
            && e.contains("differs from the record its sensor signed"),
        "{e}"
    );

    // A flow edited in the store before export: its proof fails, named.
    {
        let c = rusqlite::Connection::open(site.data.join("vigil.db")).unwrap();
        let r = &store
            .evidence_flows(&brute_evidence(&store, brute.id))
            .unwrap()[0]
            .1;
        let n = c
            .execute(
                "UPDATE flows SET fwd_bytes = fwd_bytes + 1 WHERE flow_id = ?1 AND first_ns = ?2",
                rusqlite::params![r.flow_id as i64, r.first_seen_ns as i64],
            )
            .unwrap();
        assert!(n >= 1);
    }
    let p = site.export(brute.id, "edited-in-store.tar");
    let o = site.verify(&p);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("flows.jsonl line 1 (sensor site-1") && e.contains("Merkle path"),
        "{e}"
    );

    // The lossy sensor: its evictions in the flood's completeness, and in
    // `vigil alerts show`.
    let m: BTreeMap<_, _> = tar_members(&std::fs::read(flood_path).unwrap())
        .into_iter()
        .collect();
    let c: serde_json::Value = serde_json::from_slice(&m["completeness.json"]).unwrap();
    assert_eq!(c["complete"], false, "{c}");
    let lossy = c["sensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["sensor_id"] == "lossy")
        .expect("the lossy sensor");
    assert!(lossy["flows_evicted"].as_u64().unwrap() > 0, "{lossy}");
    assert_eq!(lossy["complete"], false);
    let site1 = c["sensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["sensor_id"] == "site-1")
        .unwrap();
    assert_eq!(site1["complete"], true, "{site1}");
    let show = ok(
        vigil()
            .args(["alerts", "show", &flood.id.to_string(), "--data-dir"])
            .arg(&site.data)
            .output()
            .unwrap(),
        "alerts show",
    );
    assert!(
        show.contains("INCOMPLETE") && show.contains("flows evicted from the full flow table"),
        "{show}"
    );
    let brute_show = ok(
        vigil()
            .args([
                "alerts",
                "show",
                &brute.id.to_string(),
                "--format",
                "jsonl",
                "--data-dir",
            ])
            .arg(&site.data)
            .output()
            .unwrap(),
        "alerts show jsonl",
    );
    let first: serde_json::Value =
        serde_json::from_str(brute_show.lines().next().unwrap()).unwrap();
    assert!(first["completeness"]["sensors"].is_array(), "{first}");
}

fn brute_evidence(store: &SqliteStore, id: u64) -> Vec<vigil_collector::model::alert::EvidenceRef> {
    store.alert(id).unwrap().unwrap().evidence
}

/// A sensor whose attestation key changed (its key file replaced) is
/// refused, its batches kept in its spool, and an alert raised once; with
/// the new key configured for it, the collector takes its batches.
#[test]
fn a_sensor_signing_with_another_key_is_refused_alerted_and_taken_once_configured() {
    let tmp = tempfile::tempdir().unwrap();
    let pcap = tmp.path().join("a.pcap");
    let flows = crate::custody::capture(&pcap, 61);
    let data = tmp.path().join("data");
    let addr = free_port();
    let conf = tmp.path().join("collector.toml");
    let base = format!(
        "listen = \"{addr}\"\ndata_dir = {:?}\n\
         [[protected]]\nname = \"lan\"\ncidrs = [\"10.0.0.0/8\"]\nsector = \"water\"\ncriticality = \"high\"\n",
        data.display().to_string()
    );
    std::fs::write(&conf, &base).unwrap();
    let start = || {
        vigil()
            .args(["collector", "-c"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn collector")
    };
    let mut collector = start();
    let url = format!("http://{addr}");
    let spool = tmp.path().join("spool");
    let sensor = |timeout: &str| {
        vigil()
            .args(["sensor", "-r"])
            .arg(&pcap)
            .args([
                "--collector",
                &url,
                "--sensor-id",
                "plant-1",
                "--drain-timeout",
                timeout,
            ])
            .arg("--spool-dir")
            .arg(&spool)
            .output()
            .expect("vigil sensor")
    };
    ok(sensor("30s"), "first run");
    // The key replaced: the next run is refused and keeps its batches.
    std::fs::remove_file(spool.join("attestation-key.pem")).unwrap();
    std::fs::remove_file(spool.join("attestation-key.pub.pem")).unwrap();
    let o = sensor("3s");
    let e = stderr(&o);
    assert!(
        e.contains("refused") && e.contains("attestation key"),
        "{e}"
    );
    let store = SqliteStore::open_read_only(&data).unwrap();
    let stored = |s: &SqliteStore| {
        s.count(
            &vigil_collector::model::query::Filter::All,
            Default::default(),
        )
        .unwrap()
        .flows
    };
    assert_eq!(
        stored(&store),
        flows.len() as u64,
        "the second run stored nothing"
    );
    let alerts = store.alerts(&AlertQuery::default()).unwrap();
    let changed: Vec<_> = alerts
        .iter()
        .filter(|a| a.kind == AlertKind::SensorKeyChanged)
        .collect();
    assert_eq!(
        changed.len(),
        1,
        "one alert, however often it retried: {alerts:?}"
    );
    assert_eq!(changed[0].asset, "sensor plant-1");
    assert_eq!(changed[0].technique, "T0856");
    // Configured, the new key is taken, with the kept batches.
    let new_key = std::fs::read_to_string(spool.join("attestation-key.pub.pem")).unwrap();
    std::fs::write(
        &conf,
        format!("{base}[[sensors]]\nid = \"plant-1\"\npublic_key = '''\n{new_key}'''\n"),
    )
    .unwrap();
    collector.kill().unwrap();
    collector.wait().unwrap();
    let mut collector = start();
    ok(sensor("30s"), "run with the new key configured");
    // The first run, the second run's kept batches, the third run.
    assert_eq!(stored(&store), 3 * flows.len() as u64);
    collector.kill().unwrap();
    collector.wait().unwrap();
}
