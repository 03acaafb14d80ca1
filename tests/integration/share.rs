//! Sharing (issue #27) from real attack captures replayed through `vigil
//! sensor` into `vigil collector`: STIX 2.1 bundles checked by OASIS's
//! `stix2-validator` and `stix2` library, anonymization checked against
//! PyPI's `yacryptopan`, evidence bundles anonymized for a partner, and the
//! TAXII 2.1 push to OASIS's reference server `medallion` — down for a
//! while, the collector killed and restarted meanwhile — read back with
//! `taxii2-client`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::Digest as _;
use vigil_collector::model::alert::Alert;
use vigil_collector::share::CryptoPan;
use vigil_collector::store::AlertQuery;
use vigil_collector::store::prelude::*;
use vigil_collector::store::sqlite::SqliteStore;

use crate::util::{corpus_dir, free_port, ran_with, rt, vigil};

const KEY_HEX: &str = "15221785333ca4cf80130a5b16499070d8988f83797965276257462d2a842202";
const COLLECTION: &str = "472c94ae-3113-4e3e-a4dd-a9f4ac7471d4";

fn python() -> &'static Path {
    Path::new("python3")
}

/// Whether the sharing tests' Python modules are importable (else a
/// skip, under CI a failure).
fn have_python(modules: &[&str]) -> bool {
    crate::util::have_python(
        modules,
        "stix2-validator stix2 medallion taxii2-client yacryptopan",
    )
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/integration/python")
        .join(name)
}

fn ok(o: Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs OASIS's validator on a bundle file; panics with its report unless
/// it finds zero errors.
pub(crate) fn validate(file: &Path) {
    let o = Command::new(python())
        .arg("-c")
        .arg(
            "import sys; from stix2validator.scripts.stix2_validator import main; \
             sys.argv[0] = 'stix2_validator'; sys.exit(main())",
        )
        .arg(file)
        .output()
        .expect("python3 -m stix2validator");
    let report =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && report.contains("STIX JSON: Valid") && !report.contains("[X]"),
        "{}: stix2-validator found errors:\n{}",
        file.display(),
        report
            .lines()
            .filter(|l| !l.contains("Warning"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The observables' ids as OASIS's `stix2` library computes them.
fn check_sco_ids(file: &Path) {
    let out = ok(
        Command::new(python())
            .arg(script("sco_ids.py"))
            .arg(file)
            .output()
            .unwrap(),
        "sco_ids.py",
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert!(v["checked"].as_u64().unwrap() > 0, "{out}");
    assert_eq!(v["differ"], serde_json::json!([]), "{}", file.display());
}

struct Site {
    tmp: tempfile::TempDir,
    conf: PathBuf,
    data: PathBuf,
    url: String,
    metrics: std::net::SocketAddr,
    taxii_port: u16,
    collector: Option<Child>,
}

impl Site {
    fn start_collector(&mut self) {
        let child = vigil()
            .args(["collector", "-c"])
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn collector");
        self.collector = Some(child);
    }

    fn kill_collector(&mut self) {
        if let Some(mut c) = self.collector.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn export(&self, args: &[&str], name: &str) -> PathBuf {
        let out = self.tmp.path().join(name);
        ok(
            vigil()
                .args(["alerts", "export", "--format", "stix"])
                .args(args)
                .arg("-o")
                .arg(&out)
                .output()
                .unwrap(),
            name,
        );
        out
    }

    /// [`Site::export`] as shared with the partner (its policy from the
    /// configuration).
    fn for_partner(&self, more: &[&str], name: &str) -> PathBuf {
        let (data, conf) = (
            self.data.display().to_string(),
            self.conf.display().to_string(),
        );
        let base = [
            "--data-dir",
            &data,
            "-c",
            &conf,
            "--partner",
            "national-cert",
        ];
        self.export(&[&base[..], more].concat(), name)
    }

    fn share_status(&self) -> Value {
        let out = ok(
            vigil()
                .args(["share", "status", "--format", "jsonl", "-c"])
                .arg(&self.conf)
                .output()
                .unwrap(),
            "share status",
        );
        serde_json::from_str(out.lines().next().expect("a partner")).unwrap()
    }

    fn alerts(&self) -> Vec<Alert> {
        let s = SqliteStore::open_read_only(&self.data).unwrap();
        let listed = s
            .alerts(&AlertQuery {
                limit: 1000,
                ..AlertQuery::default()
            })
            .unwrap();
        listed
            .iter()
            .map(|a| s.alert(a.id).unwrap().unwrap())
            .collect()
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.kill_collector();
    }
}

/// The networks the partner's policy hides: the protected assets, the
/// internal network, and two networks of the reflectors (whose addresses
/// come in pairs sharing a /24).
const HIDDEN: [&str; 8] = [
    "10.10.10.10/32",
    "10.121.70.151/32",
    "118.189.96.132/32",
    "64.13.134.52/32",
    "192.168.0.0/16",
    "172.16.0.0/12",
    "5.0.0.0/8",
    "36.0.0.0/8",
];

fn hidden(ip: IpAddr) -> bool {
    HIDDEN.iter().any(|c| {
        vigil_collector::detect::nets::Cidr::parse(c)
            .unwrap()
            .contains(ip)
    })
}

fn site(corpus: &Path) -> Site {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let addr = free_port();
    let metrics = free_port();
    let taxii_port = free_port().port();
    std::fs::write(tmp.path().join("cert.key"), format!("{KEY_HEX}\n")).unwrap();
    std::fs::write(tmp.path().join("cert.password"), "s3cret\n").unwrap();
    let conf = tmp.path().join("collector.toml");
    let assets = [
        ("web", "10.10.10.10/32"),
        ("ftp", "10.121.70.151/32"),
        ("plc", "118.189.96.132/32"),
        ("scanme", "64.13.134.52/32"),
        ("lan", "192.168.0.0/16"),
    ];
    let mut text = format!(
        "listen = \"{addr}\"\nmetrics_listen = \"{metrics}\"\ndata_dir = {:?}\n[detect]\ninternal_networks = [\"172.16.0.0/12\"]\n",
        data.display().to_string()
    );
    for (name, cidr) in assets {
        text.push_str(&format!(
            "[[protected]]\nname = \"{name}\"\ncidrs = [\"{cidr}\"]\nsector = \"water\"\ncriticality = \"high\"\n"
        ));
    }
    text.push_str(&format!(
        "[share]\norganization = \"Example Water Utility\"\nsector = \"water\"\ncontact = \"soc@example.org\"\n\
         update_interval = \"1s\"\nmax_backoff = \"2s\"\n\
         [[share.partners]]\nname = \"national-cert\"\napi_root = \"http://127.0.0.1:{taxii_port}/api1/\"\n\
         collection = \"{COLLECTION}\"\nusername = \"utility-7\"\npassword_file = {:?}\n\
         tlp = \"amber+strict\"\nmin_severity = \"low\"\nanonymize = \"cryptopan:{}\"\n\
         anonymize_networks = {:?}\n",
        tmp.path().join("cert.password").display().to_string(),
        tmp.path().join("cert.key").display(),
        HIDDEN
    ));
    std::fs::write(&conf, text).unwrap();
    let mut s = Site {
        conf,
        data,
        url: format!("http://{addr}"),
        metrics,
        taxii_port,
        collector: None,
        tmp,
    };
    s.start_collector();
    let spool = s.tmp.path().join("spool");
    for pcap in [
        "stopddos__pkt.TCP.synflood.spoofed.pcap",
        "stopddos__amp.dns.RRSIG.fragmented.pcap",
        "chrissanders-packets__ppa1e__ftp-crack.pcap",
        "zeek__modbus__modbusSmall.pcap",
        "chrissanders-packets__synscan.pcapng",
    ] {
        ok(
            vigil()
                .args(["sensor", "-r"])
                .arg(corpus.join(pcap))
                .args(["--collector", &s.url, "--sensor-id", "site-1"])
                .args([
                    "--batch-delay",
                    "50ms",
                    "--drain-timeout",
                    "60s",
                    "--spool-dir",
                ])
                .arg(&spool)
                .output()
                .expect("vigil sensor"),
            pcap,
        );
    }
    rt().block_on(crate::detection::wait_detected(&s.url));
    s
}

fn objects(file: &Path) -> Vec<Value> {
    let v: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    v["objects"].as_array().unwrap().clone()
}

/// Every incident of a bundle by the alert id its extension names.
fn incidents(objs: &[Value]) -> BTreeMap<u64, &Value> {
    objs.iter()
        .filter(|o| o["type"] == "incident")
        .map(|o| {
            let ext = o["extensions"]
                .as_object()
                .unwrap()
                .values()
                .next()
                .unwrap();
            (ext["alert_id"].as_u64().unwrap(), o)
        })
        .collect()
}

fn by_id(objs: &[Value]) -> BTreeMap<&str, &Value> {
    objs.iter()
        .map(|o| (o["id"].as_str().unwrap(), o))
        .collect()
}

/// Checks a bundle against the alerts it was made from.
fn check_content(objs: &[Value], alerts: &[Alert], tlp: &str, anonymized: bool) {
    let ids = by_id(objs);
    let inc = incidents(objs);
    assert_eq!(
        inc.keys().copied().collect::<BTreeSet<_>>(),
        alerts.iter().map(|a| a.id).collect::<BTreeSet<_>>(),
        "one incident per alert"
    );
    for o in objs {
        if o["type"] != "marking-definition" {
            assert_eq!(
                o["object_marking_refs"],
                serde_json::json!([tlp]),
                "{}",
                o["id"]
            );
        }
    }
    for a in alerts {
        let i = inc[&a.id];
        // The attack pattern it is related to names the alert's technique.
        let ap = objs
            .iter()
            .find(|r| {
                r["type"] == "relationship"
                    && r["source_ref"] == i["id"]
                    && r["target_ref"]
                        .as_str()
                        .unwrap()
                        .starts_with("attack-pattern--")
            })
            .map(|r| ids[r["target_ref"].as_str().unwrap()])
            .expect("incident related-to attack-pattern");
        assert_eq!(
            ap["external_references"][0]["external_id"], a.technique,
            "alert {}",
            a.id
        );
        // Its sighting's observed data counts the alert's flows.
        let sighting = objs
            .iter()
            .find(|s| {
                s["type"] == "sighting"
                    && s["sighting_of_ref"] == ap["id"]
                    && s["count"] == a.evidence_count
                    && s["first_seen"].as_str()
                        == Some(&vigil_collector::share::stix::timestamp(a.first_seen_ns))
            })
            .unwrap_or_else(|| panic!("sighting of alert {}", a.id));
        let od = ids[sighting["observed_data_refs"][0].as_str().unwrap()];
        assert_eq!(od["number_observed"], a.evidence_count, "alert {}", a.id);
        assert!(od["object_refs"].as_array().unwrap().len() <= 100);
        // Indicators: only where the sources are the attacker's own.
        let indicators: Vec<&str> = objs
            .iter()
            .filter(|r| {
                r["type"] == "relationship"
                    && r["source_ref"] == i["id"]
                    && r["target_ref"].as_str().unwrap().starts_with("indicator--")
            })
            .map(|r| {
                ids[r["target_ref"].as_str().unwrap()]["pattern"]
                    .as_str()
                    .unwrap()
            })
            .collect();
        use vigil_collector::model::alert::AlertKind as K;
        match a.kind {
            K::SynFlood | K::Amplification | K::UdpFlood | K::TcpFlood | K::VolumetricFlood => {
                assert!(
                    indicators.is_empty(),
                    "alert {} {:?}: {indicators:?}",
                    a.id,
                    a.kind
                )
            }
            K::BruteForce | K::VerticalScan | K::HorizontalScan | K::IcsUnauthorizedClient => {
                for s in &a.sources {
                    let ip: IpAddr = s.addr.parse().unwrap();
                    let want = format!("[ipv4-addr:value = '{ip}']");
                    assert_eq!(
                        indicators.contains(&want.as_str()),
                        !(anonymized && hidden(ip)),
                        "alert {} {:?}: {ip} in {indicators:?}",
                        a.id,
                        a.kind
                    );
                }
            }
            _ => {}
        }
    }
}

#[test]
fn real_attacks_are_shared_as_valid_stix_anonymized_and_pushed_once_per_version() {
    let Some(corpus) = corpus_dir() else { return };
    if !have_python(&[
        "stix2validator",
        "stix2",
        "medallion",
        "taxii2client",
        "yacryptopan",
    ]) {
        return;
    }
    ran_with("stix");
    let mut site = site(&corpus);
    let alerts = site.alerts();
    use vigil_collector::model::alert::AlertKind as K;
    let kinds: BTreeSet<K> = alerts.iter().map(|a| a.kind).collect();
    for k in [
        K::SynFlood,
        K::Amplification,
        K::BruteForce,
        K::IcsUnauthorizedClient,
        K::VerticalScan,
    ] {
        assert!(kinds.contains(&k), "no {k:?} alert: {kinds:?}");
    }
    let data = site.data.to_str().unwrap().to_string();
    let conf = site.conf.to_str().unwrap().to_string();

    // 1. Plain, from the store and from the collector; for the partner.
    let plain = site.export(&["--data-dir", &data], "plain.json");
    let remote = site.export(&["--collector", &site.url, "--tlp", "green"], "remote.json");
    let partner = site.for_partner(&[], "partner.json");
    for f in [&plain, &remote, &partner] {
        validate(f);
        check_sco_ids(f);
    }
    let amber = vigil_collector::share::stix::tlp_id(vigil_collector::share::Tlp::Amber);
    let green = vigil_collector::share::stix::tlp_id(vigil_collector::share::Tlp::Green);
    let strict = vigil_collector::share::stix::tlp_id(vigil_collector::share::Tlp::AmberStrict);
    check_content(&objects(&plain), &alerts, amber, false);
    check_content(&objects(&remote), &alerts, green, false);
    check_content(&objects(&partner), &alerts, strict, true);
    // The same alerts from the store and from the collector: the same
    // objects but for their marking.
    let strip = |f: &Path| {
        let t = std::fs::read_to_string(f).unwrap();
        t.replace(amber, "M").replace(green, "M")
    };
    let (p, r) = (objects(&plain), objects(&remote));
    assert_eq!(p.len(), r.len());
    assert_eq!(
        strip(&plain)
            .lines()
            .filter(|l| !l.contains("\"id\": \"bundle--"))
            .count(),
        strip(&remote)
            .lines()
            .filter(|l| !l.contains("\"id\": \"bundle--"))
            .count()
    );
    // One alert alone.
    let one_id = alerts.iter().find(|a| a.kind == K::BruteForce).unwrap().id;
    let one = site.export(
        &["--data-dir", &data, "--id", &one_id.to_string()],
        "one.json",
    );
    validate(&one);
    assert_eq!(
        incidents(&objects(&one))
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        [one_id]
    );

    // 2. Anonymized: none of the hidden addresses, each replaced as an
    // independent Crypto-PAn (yacryptopan) replaces it.
    let store = SqliteStore::open_read_only(&site.data).unwrap();
    let mut originals: BTreeSet<IpAddr> = BTreeSet::new();
    for a in &alerts {
        for (_, f) in store
            .evidence_flows(&a.evidence[..a.evidence.len().min(10_000)])
            .unwrap()
        {
            for ip in [f.src_ip, f.dst_ip] {
                if hidden(ip) {
                    originals.insert(ip);
                }
            }
        }
        for p in a.sources.iter().chain(&a.targets) {
            let ip = p
                .addr
                .parse::<IpAddr>()
                .or_else(|_| p.addr.parse::<std::net::SocketAddr>().map(|s| s.ip()));
            if let Ok(ip) = ip
                && hidden(ip)
            {
                originals.insert(ip);
            }
        }
    }
    assert!(originals.len() > 5, "{originals:?}");
    let text = std::fs::read_to_string(&partner).unwrap();
    let mut quoted_values: BTreeSet<String> = BTreeSet::new();
    for o in objects(&partner) {
        if let Some(v) = o["value"].as_str() {
            quoted_values.insert(v.to_string());
        }
    }
    for ip in &originals {
        for form in [
            format!("\"{ip}\""),
            format!("'{ip}'"),
            format!(" {ip} "),
            format!("{ip}:"),
        ] {
            assert!(
                !text.contains(&form),
                "{ip} leaked into the partner's bundle"
            );
        }
    }
    let expected = yacryptopan(&originals.iter().copied().collect::<Vec<_>>());
    let mut seen = 0;
    for (orig, anon) in originals.iter().zip(&expected) {
        if quoted_values.contains(&anon.to_string()) {
            seen += 1;
        }
        assert_eq!(*anon, CryptoPan::from_hex(KEY_HEX).unwrap().ip(*orig));
    }
    assert!(seen > 0, "no anonymized address among the observables");
    // Hidden addresses that share a /24 still do, in what was shared.
    let list: Vec<(IpAddr, IpAddr)> = originals
        .iter()
        .copied()
        .zip(expected)
        .filter(|(_, x)| quoted_values.contains(&x.to_string()))
        .collect();
    let mut pairs = 0;
    for (i, (a, x)) in list.iter().enumerate() {
        for (b, y) in &list[i + 1..] {
            if let (IpAddr::V4(a), IpAddr::V4(b), IpAddr::V4(x), IpAddr::V4(y)) = (a, b, x, y)
                && a.octets()[..3] == b.octets()[..3]
            {
                assert_eq!(x.octets()[..3], y.octets()[..3], "{a} {b} → {x} {y}");
                assert_ne!(x, y);
                pairs += 1;
            }
        }
    }
    assert!(
        pairs > 0,
        "no two hidden addresses of one /24 in the bundle: {list:?}"
    );

    // 3. An evidence bundle for the partner: anonymized, verified, and the
    // STIX incident points to it.
    let tar = site.tmp.path().join("partner-bundle.tar");
    ok(
        vigil()
            .args([
                "evidence",
                "export",
                &one_id.to_string(),
                "--data-dir",
                &data,
            ])
            .args(["-c", &conf, "--partner", "national-cert", "-o"])
            .arg(&tar)
            .output()
            .unwrap(),
        "evidence export --partner",
    );
    let verified = ok(
        vigil()
            .args(["evidence", "verify"])
            .arg(&tar)
            .output()
            .unwrap(),
        "verify",
    );
    assert!(
        verified.contains("ANONYMIZED for partner national-cert"),
        "{verified}"
    );
    let members = crate::util::tar_members(&std::fs::read(&tar).unwrap());
    assert!(members.iter().all(|(p, _)| !p.starts_with("attestation/")));
    for (path, body) in &members {
        let t = String::from_utf8_lossy(body);
        for ip in &originals {
            for form in [format!("\"{ip}\""), format!(" {ip} "), format!("{ip}:")] {
                assert!(!t.contains(&form), "{ip} leaked into {path}");
            }
        }
    }
    let sha = vigil_proto::attest::hex(&sha2::Sha256::digest(std::fs::read(&tar).unwrap()));
    let again = site.for_partner(&["--id", &one_id.to_string()], "again.json");
    let objs = objects(&again);
    let inc = incidents(&objs)[&one_id].clone();
    let refs = inc["external_references"].as_array().unwrap();
    assert!(
        refs.iter().any(|r| r["hashes"]["SHA-256"] == sha.as_str()),
        "{refs:?} lacks {sha}"
    );

    // 4. The push: the partner was down all along; the collector is killed
    // and restarted; then the partner comes up.
    let st = site.share_status();
    assert!(st["queued"].as_u64().unwrap() > 0, "{st}");
    assert!(st["failures"].as_u64().unwrap() > 0, "{st}");
    site.kill_collector();
    site.start_collector();
    let _medallion = medallion(site.tmp.path(), site.taxii_port);
    let deadline = Instant::now() + Duration::from_secs(120);
    let st = loop {
        let st = site.share_status();
        if st["queued"] == 0 && st["pending_alerts"] == 0 && st["sent"].as_u64() > Some(0) {
            break st;
        }
        assert!(Instant::now() < deadline, "the push did not drain: {st}");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(st["rejected"], 0, "{st}");
    let pushed = site.tmp.path().join("pushed.json");
    let out = ok(
        Command::new(python())
            .arg(script("taxii_readback.py"))
            .arg(format!(
                "http://127.0.0.1:{}/api1/collections/{COLLECTION}/",
                site.taxii_port
            ))
            .args(["utility-7", "s3cret"])
            .arg(&pushed)
            .output()
            .unwrap(),
        "taxii_readback.py",
    );
    let back: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(back["duplicated"], serde_json::json!([]), "{out}");
    assert_eq!(
        back["objects"], st["sent"],
        "each object sent is in the collection once: {out} {st}"
    );
    validate(&pushed);
    // The metrics say the same, and Prometheus's linter takes them.
    let exposition = get_metrics(site.metrics);
    let line = format!(
        "vigil_collector_share_objects{{partner=\"national-cert\",state=\"sent\"}} {}",
        st["sent"]
    );
    assert!(exposition.contains(&line), "{line} not in:\n{exposition}");
    assert!(
        exposition.contains("vigil_collector_share_push_failures_total{partner=\"national-cert\"}")
    );
    crate::transport::promtool_accepts(&exposition);
    // Every alert that qualified is there in its latest version: what an
    // export for the partner makes now.
    let now = site.for_partner(&[], "now.json");
    let in_collection: BTreeSet<(String, String)> = objects(&pushed)
        .iter()
        .map(|o| {
            (
                o["id"].as_str().unwrap().to_string(),
                o["modified"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    for (id, i) in incidents(&objects(&now)) {
        let key = (
            i["id"].as_str().unwrap().to_string(),
            i["modified"].as_str().unwrap().to_string(),
        );
        assert!(
            in_collection.contains(&key),
            "alert {id}'s incident {key:?} not pushed"
        );
    }
    drop(store);
}

fn get_metrics(addr: std::net::SocketAddr) -> String {
    use std::io::Read as _;
    let mut s = std::net::TcpStream::connect(addr).expect("metrics endpoint");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body.split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string()
}

/// Writes medallion's configuration for one API root at `root` with one
/// writable collection and user utility-7; returns the file.
fn medallion_config(dir: &Path, root: &str) -> PathBuf {
    let data = dir.join("taxii-data.json");
    std::fs::write(
        &data,
        serde_json::json!({
            "/discovery": {"title": "test", "description": "", "contact": "", "default": root, "api_roots": [root]},
            "api1": {
                "information": {"title": "api1", "description": "", "versions": ["application/taxii+json;version=2.1"], "max_content_length": 10485760},
                "status": [],
                "collections": [{"id": COLLECTION, "title": "national-cert", "description": "", "can_read": true, "can_write": true, "media_types": ["application/stix+json;version=2.1"], "objects": [], "manifest": []}]
            }
        })
        .to_string(),
    )
    .unwrap();
    let conf = dir.join("medallion.json");
    std::fs::write(
        &conf,
        serde_json::json!({
            "backend": {"module_class": "MemoryBackend", "module": "medallion.backends.memory_backend", "filename": data},
            "users": {"utility-7": "s3cret"},
            "taxii": {"max_page_size": 1000}
        })
        .to_string(),
    )
    .unwrap();
    conf
}

/// Waits until something listens on `port`.
fn wait_listening(port: u16, what: &str) {
    let up = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < up, "{what} did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// OASIS's reference TAXII 2.1 server on loopback, one API root and one
/// writable collection, basic authentication.
fn medallion(dir: &Path, port: u16) -> KillOnDrop {
    ran_with("taxii");
    let conf = medallion_config(dir, &format!("http://127.0.0.1:{port}/api1/"));
    let child = Command::new(python())
        .args([
            "-m",
            "medallion.scripts.run",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ])
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("medallion");
    wait_listening(port, "medallion");
    KillOnDrop(child)
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `addrs` anonymized by PyPI's yacryptopan with the test key.
fn yacryptopan(addrs: &[IpAddr]) -> Vec<IpAddr> {
    let mut child = Command::new(python())
        .arg(script("cryptopan.py"))
        .arg(KEY_HEX)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("cryptopan.py");
    {
        let mut stdin = child.stdin.take().unwrap();
        for a in addrs {
            writeln!(stdin, "{a}").unwrap();
        }
    }
    let out = ok(child.wait_with_output().unwrap(), "cryptopan.py");
    out.lines().map(|l| l.parse().unwrap()).collect()
}

#[test]
fn crypto_pan_agrees_with_yacryptopan_on_random_addresses() {
    if !have_python(&["yacryptopan"]) {
        return;
    }
    ran_with("cryptopan");
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut addrs: Vec<IpAddr> = Vec::new();
    for _ in 0..2000 {
        addrs.push(IpAddr::V4((next() as u32).into()));
        addrs.push(IpAddr::V6(
            (u128::from(next()) << 64 | u128::from(next())).into(),
        ));
    }
    let pan = CryptoPan::from_hex(KEY_HEX).unwrap();
    let theirs = yacryptopan(&addrs);
    assert_eq!(theirs.len(), addrs.len());
    for (a, t) in addrs.iter().zip(&theirs) {
        assert_eq!(pan.ip(*a), *t, "{a}");
    }
}

#[test]
fn bad_sharing_input_is_named_and_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("collector.toml");
    let key = tmp.path().join("k.hex");
    std::fs::write(&key, "00".repeat(32)).unwrap();
    std::fs::write(
        &conf,
        format!(
            "data_dir = {:?}\n[[protected]]\nname = \"plant\"\ncidrs = [\"198.51.100.0/24\"]\n\
             [share]\norganization = \"Example\"\n[[share.partners]]\nname = \"cert\"\nanonymize = \"cryptopan:{}\"\n",
            tmp.path().join("data").display().to_string(),
            key.display()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let o = vigil().args(args).output().unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let c = conf.to_str().unwrap();
    let (code, err) = run(&["alerts", "export", "--format", "csv", "--data-dir", "x"]);
    assert_eq!(code, Some(64));
    assert!(err.contains("--format \"csv\""), "{err}");
    let (code, err) = run(&[
        "alerts",
        "export",
        "--data-dir",
        "x",
        "-c",
        c,
        "--partner",
        "nope",
    ]);
    assert_eq!(code, Some(64));
    assert!(
        err.contains("--partner \"nope\"") && err.contains("known: cert"),
        "{err}"
    );
    let (code, err) = run(&["alerts", "export", "--data-dir", "x", "--partner", "cert"]);
    assert_eq!(code, Some(64), "--partner needs -c: {err}");
    let (code, err) = run(&["alerts", "export", "--data-dir", "x", "--tlp", "purple"]);
    assert_eq!(code, Some(64));
    assert!(err.contains("--tlp \"purple\""), "{err}");
    let (code, out) = {
        let o = vigil().args(["share", "status", "-c", c]).output().unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    assert_eq!(code, Some(0));
    assert!(out.contains("no partner to push to"), "{out}");
    // A bad key file and a bad level, named by key at --check-config.
    std::fs::write(&key, "zz").unwrap();
    let text = std::fs::read_to_string(&conf).unwrap() + "tlp = \"orange\"\n";
    std::fs::write(&conf, text).unwrap();
    let (code, err) = run(&["collector", "--check-config", c]);
    assert_eq!(code, Some(64), "{err}");
    assert!(
        err.contains("collector.share.partners[0].anonymize"),
        "{err}"
    );
    assert!(err.contains("64 hexadecimal digits"), "{err}");
    assert!(err.contains("collector.share.partners[0].tlp"), "{err}");
}

/// The push over TLS: the partner's server checked against the CA given,
/// and a client certificate presented (the server requires one) besides
/// basic authentication.
#[test]
fn the_push_goes_over_tls_with_a_client_certificate() {
    let Some(corpus) = corpus_dir() else { return };
    if !have_python(&["medallion", "taxii2client"]) {
        return;
    }
    ran_with("taxii");
    let tmp = tempfile::tempdir().unwrap();
    crate::util::Pki::new(tmp.path());
    let port = free_port().port();
    let conf = medallion_config(tmp.path(), &format!("https://localhost:{port}/api1/"));
    let f = |n: &str| tmp.path().join(n).display().to_string();
    let _server = KillOnDrop(
        Command::new(python())
            .arg(script("medallion_tls.py"))
            .arg(port.to_string())
            .arg(&conf)
            .args([f("collector.pem"), f("collector.key"), f("ca.pem")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("medallion over TLS"),
    );
    wait_listening(port, "medallion over TLS");
    std::fs::write(tmp.path().join("pw"), "s3cret\n").unwrap();
    let addr = free_port();
    let data = tmp.path().join("data");
    let collector_toml = tmp.path().join("collector.toml");
    std::fs::write(
        &collector_toml,
        format!(
            "listen = \"{addr}\"\ndata_dir = {:?}\n\
             [[protected]]\nname = \"scanme\"\ncidrs = [\"64.13.134.52/32\"]\n\
             [share]\norganization = \"Example\"\nupdate_interval = \"1s\"\nmax_backoff = \"1s\"\n\
             [[share.partners]]\nname = \"cert\"\napi_root = \"https://localhost:{port}/api1/\"\n\
             collection = \"{COLLECTION}\"\nusername = \"utility-7\"\npassword_file = {:?}\n\
             client_cert = {:?}\nclient_key = {:?}\nca = {:?}\nmin_severity = \"low\"\n",
            data.display().to_string(),
            f("pw"),
            f("alice.pem"),
            f("alice.key"),
            f("ca.pem")
        ),
    )
    .unwrap();
    let mut collector = KillOnDrop(
        vigil()
            .args(["collector", "-c"])
            .arg(&collector_toml)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("http://{addr}");
    ok(
        vigil()
            .args(["sensor", "-r"])
            .arg(corpus.join("chrissanders-packets__synscan.pcapng"))
            .args([
                "--collector",
                &url,
                "--sensor-id",
                "s",
                "--batch-delay",
                "50ms",
            ])
            .arg("--spool-dir")
            .arg(tmp.path().join("spool"))
            .output()
            .unwrap(),
        "sensor",
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let st = loop {
        let out = ok(
            vigil()
                .args(["share", "status", "--format", "jsonl", "-c"])
                .arg(&collector_toml)
                .output()
                .unwrap(),
            "share status",
        );
        let st: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
        if st["sent"].as_u64() > Some(0) && st["queued"] == 0 && st["pending_alerts"] == 0 {
            break st;
        }
        assert!(Instant::now() < deadline, "nothing pushed over TLS: {st}");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(st["failures"], 0, "{st}");
    let pushed = tmp.path().join("pushed.json");
    let out = ok(
        Command::new(python())
            .arg(script("taxii_readback.py"))
            .arg(format!(
                "https://localhost:{port}/api1/collections/{COLLECTION}/"
            ))
            .args(["utility-7", "s3cret"])
            .arg(&pushed)
            .args([f("ca.pem"), f("alice.pem"), f("alice.key")])
            // requests prefers these to the CA it is given.
            .env_remove("REQUESTS_CA_BUNDLE")
            .env_remove("CURL_CA_BUNDLE")
            .output()
            .unwrap(),
        "taxii_readback.py over TLS",
    );
    let back: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(back["objects"], st["sent"], "{out}");
    let _ = collector.0.kill();
}
