//! The collector's HTTP/JSON API (`/api/v1/…`) on real attack captures,
//! replayed through a sensor into a collector over gRPC on loopback: every
//! answer equal to what `vigil query` and `vigil alerts` print for the same
//! question (over gRPC, from the same collector); errors that name the
//! parameter at fault; an evidence bundle that `vigil evidence verify`
//! accepts; and the OpenAPI document valid under an independent validator
//! (PyPI's openapi-spec-validator), with every answer of the test valid
//! under its schema (jsonschema, draft 2020-12).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use vigil_collector::server::{self, CollectorConfig};
use vigil_collector::store::sqlite::Synchronous;
use vigil_sensor::export::grpc::ExporterConfig;
use vigil_sensor::flow::FlowConfig;
use vigil_sensor::run::Input;

use crate::detection::{asset, wait_detected};
use crate::util::{corpus_dir, have_python, http_get, ran_with, rt, sensor_with, vigil};

/// The API of a running collector, and the answers checked against its
/// schemas at the end (schema name, answer).
struct Api {
    addr: SocketAddr,
    answers: Vec<(String, Value)>,
}

impl Api {
    /// A 200 JSON answer to `path`, kept for the schema check as `schema`.
    fn get(&mut self, path: &str, schema: &str) -> Value {
        let (status, ctype, body) = http_get(self.addr, path);
        let text = String::from_utf8_lossy(&body);
        assert_eq!(status, 200, "GET {path}: {text}");
        assert_eq!(ctype, "application/json", "GET {path}");
        let v: Value = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {text}"));
        self.answers.push((schema.to_string(), v.clone()));
        v
    }

    /// An error answer to `path`: its status and its `error` object.
    fn error(&mut self, path: &str) -> (u16, Value) {
        let (status, ctype, body) = http_get(self.addr, path);
        assert_eq!(ctype, "application/json", "GET {path}");
        let v: Value = serde_json::from_slice(&body).unwrap();
        self.answers.push(("Error".into(), v.clone()));
        (status, v["error"].clone())
    }
}

/// `vigil ARGS --collector URL --format jsonl`, each line parsed.
pub(crate) fn cli(url: &str, args: &[&str]) -> Vec<Value> {
    let o = vigil()
        .args(args)
        .args(["--collector", url, "--format", "jsonl"])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "vigil {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A query string's value, percent-encoded.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Stored flows as `vigil query` prints them (without the sensor's id).
fn records(flows: &Value) -> Vec<Value> {
    flows
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let mut f = f.clone();
            assert!(f["sensor_id"].is_string(), "{f}");
            f.as_object_mut().unwrap().remove("sensor_id");
            f
        })
        .collect()
}

/// A collector (HTTP API on) holding the flows and alerts of three real
/// attack captures (a SYN flood, a vertical scan, Modbus from an unknown
/// client), streamed by sensor `api-1` over gRPC.
pub struct AttackSite {
    pub tmp: tempfile::TempDir,
    pub rt: tokio::runtime::Runtime,
    pub collector: vigil_collector::server::RunningCollector,
    /// The gRPC URL.
    pub url: String,
    /// The HTTP address.
    pub http: SocketAddr,
    pub data: std::path::PathBuf,
}

pub fn attack_site(corpus: &Path) -> AttackSite {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("collector");
    let assets = [
        asset("dc", &["10.10.10.10"]),
        asset("web", &["64.13.134.52"]),
        asset("plc", &["118.189.96.132"]),
    ];
    let inputs = [
        "stopddos__pkt.TCP.synflood.spoofed.pcap",
        "chrissanders-packets__synscan.pcapng",
        "zeek__modbus__modbusSmall.pcap",
    ]
    .map(|n| Input::File(corpus.join(n)))
    .to_vec();
    let rt = rt();
    let (collector, url, http) = rt.block_on(async {
        let mut cfg = CollectorConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), data.clone());
        cfg.store.synchronous = Synchronous::Normal;
        cfg.http_listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        cfg.detect = Some(Arc::new(
            vigil_collector::detect::config::DetectSection::default()
                .validate(&assets)
                .unwrap(),
        ));
        let collector = server::start(cfg).await.expect("collector");
        let url = format!("http://{}", collector.addr);
        let mut exp = ExporterConfig::new(url.clone(), "api-1".into(), tmp.path().join("spool"));
        exp.batch_delay = Duration::from_millis(50);
        let drain = sensor_with(inputs, exp, FlowConfig::default(), Duration::from_secs(60))
            .await
            .expect("drain");
        assert_eq!(drain.pending, 0);
        wait_detected(&url).await;
        let addr = collector.http_addr.expect("the API's address");
        (collector, url, addr)
    });
    AttackSite {
        tmp,
        rt,
        collector,
        url,
        http,
        data,
    }
}

#[test]
fn the_api_answers_as_the_command_line_does() {
    let Some(corpus) = corpus_dir() else { return };
    let AttackSite {
        tmp,
        rt,
        collector,
        url,
        http: addr,
        data,
    } = attack_site(&corpus);
    let mut api = Api {
        addr,
        answers: Vec::new(),
    };

    // Alerts: the list, by kind, and each alert with its evidence flows.
    let alerts = api.get("/api/v1/alerts?limit=1000", "Alerts")["alerts"].clone();
    let listed = cli(&url, &["alerts", "list", "--limit", "1000"]);
    assert_eq!(alerts.as_array().unwrap(), &listed);
    let kinds: std::collections::BTreeSet<&str> =
        listed.iter().map(|a| a["kind"].as_str().unwrap()).collect();
    for want in ["syn_flood", "vertical_scan", "ics_unauthorized_client"] {
        assert!(kinds.contains(want), "{want} missing from {kinds:?}");
    }
    for kind in &kinds {
        let by_kind = api.get(&format!("/api/v1/alerts?kind={kind}"), "Alerts")["alerts"].clone();
        assert_eq!(
            by_kind.as_array().unwrap(),
            &cli(&url, &["alerts", "list", "--kind", kind]),
            "kind {kind}"
        );
    }
    let high = api.get("/api/v1/alerts?min_severity=high&asset=dc", "Alerts")["alerts"].clone();
    assert_eq!(
        high.as_array().unwrap(),
        &cli(
            &url,
            &["alerts", "list", "--min-severity", "high", "--asset", "dc"]
        )
    );
    for a in &listed {
        let id = a["id"].as_u64().unwrap().to_string();
        let mut detail = api.get(&format!("/api/v1/alerts/{id}?flows=25"), "AlertDetail");
        let shown = cli(&url, &["alerts", "show", &id, "--flows", "25"]);
        let flows = detail.as_object_mut().unwrap().remove("flows").unwrap();
        assert_eq!(detail, shown[0], "alert {id}");
        assert!(
            !flows.as_array().unwrap().is_empty(),
            "alert {id}: evidence flows"
        );
        assert_eq!(records(&flows), shown[1..], "alert {id}: evidence flows");
    }

    // Flows, a page at a time, and every question `vigil query` asks.
    for filter in [
        "",
        "tcp",
        "dst port 502",
        "not src net 10.0.0.0/8 and tcp",
        "udp",
    ] {
        let f = enc(filter);
        let words: Vec<&str> = filter.split(' ').filter(|w| !w.is_empty()).collect();
        let query = |extra: &[&str]| -> Vec<Value> {
            let mut args = vec!["query"];
            args.extend(&words);
            args.extend(extra);
            cli(&url, &args)
        };
        let page = api.get(&format!("/api/v1/flows?filter={f}&limit=60"), "FlowPage");
        let want = query(&["--limit", "60"]);
        assert_eq!(records(&page["flows"]), want, "flows of {filter:?}");
        // Pages of 17 put back together.
        let mut paged = Vec::new();
        let mut offset = Some(0u64);
        while let Some(o) = offset.filter(|o| *o < 60) {
            let p = api.get(
                &format!("/api/v1/flows?filter={f}&limit=17&offset={o}"),
                "FlowPage",
            );
            paged.extend(records(&p["flows"]));
            offset = p["next_offset"].as_u64();
        }
        paged.truncate(60);
        assert_eq!(paged, want, "pages of {filter:?}");
        for key in ["src", "dst", "dport", "sport", "proto", "app"] {
            for by in ["bytes", "flows", "packets"] {
                let top = api.get(
                    &format!("/api/v1/top?key={key}&by={by}&limit=7&filter={f}"),
                    "Top",
                );
                assert_eq!(
                    top["rows"].as_array().unwrap(),
                    &query(&["--top", key, "--by", by, "--limit", "7"]),
                    "top {key} by {by} of {filter:?}"
                );
            }
        }
        let count = api.get(&format!("/api/v1/count?filter={f}"), "Totals");
        assert_eq!(vec![count], query(&["--count"]), "count of {filter:?}");
        // The captures span years: a day an interval.
        let series = api.get(&format!("/api/v1/series?step=1d&filter={f}"), "Series");
        assert_eq!(
            series["points"].as_array().unwrap(),
            &query(&["--series", "1d"]),
            "series of {filter:?}"
        );
    }
    // A time range, in both forms the command line takes.
    let first = listed.iter().find(|a| a["kind"] == "syn_flood").unwrap()["first_seen"]
        .as_str()
        .unwrap()
        .to_string();
    let rfc = time::format_description::well_known::Rfc3339;
    let since = first.clone();
    let until = (time::OffsetDateTime::parse(&first, &rfc).unwrap() + time::Duration::minutes(10))
        .format(&rfc)
        .unwrap();
    let until = until.as_str();
    let series = api.get(
        &format!(
            "/api/v1/series?step=10s&since={}&until={}&filter=tcp",
            enc(&since),
            enc(until)
        ),
        "Series",
    );
    let want = cli(
        &url,
        &[
            "query", "tcp", "--series", "10s", "--since", &since, "--until", until,
        ],
    );
    // Quiet intervals up to `until`: the same dense series.
    assert_eq!(series["points"].as_array().unwrap(), &want);
    let top = api.get(
        &format!("/api/v1/top?key=src&since={}&explain=true", enc(&since)),
        "Top",
    );
    assert_eq!(
        top["rows"].as_array().unwrap(),
        &cli(&url, &["query", "--top", "src", "--since", &since])
    );
    assert!(!top["explain"].as_array().unwrap().is_empty(), "{top}");

    // Sensors, with their loss counters.
    let sensors = api.get("/api/v1/sensors", "Sensors");
    let status = cli(&url, &["query", "--status"]);
    let mut listed_sensors = sensors["sensors"].as_array().unwrap().clone();
    for s in &mut listed_sensors {
        assert_eq!(s["sensor_id"], "api-1");
        assert!(s["connected"].is_boolean());
        s.as_object_mut().unwrap().remove("connected");
    }
    assert_eq!(listed_sensors, status);
    assert!(
        sensors["stored_flows"].as_u64().unwrap() > 1000,
        "{sensors}"
    );

    // Errors name the parameter at fault.
    let (code, e) = api.error("/api/v1/flows?filter=dst%20port%20and");
    assert_eq!((code, e["param"].as_str()), (400, Some("filter")), "{e}");
    assert_eq!(e["column"], 10, "{e}");
    for (path, param) in [
        ("/api/v1/top?key=nope", "key"),
        ("/api/v1/top", "key"),
        ("/api/v1/top?key=src&by=weight", "by"),
        ("/api/v1/top?key=src&limit=0", "limit"),
        ("/api/v1/series", "step"),
        ("/api/v1/series?step=1ms", "step"),
        ("/api/v1/series?step=1s&since=2000-01-01T00:00:00Z", "step"),
        ("/api/v1/count?since=yesterday", "since"),
        ("/api/v1/flows?limit=10001", "limit"),
        ("/api/v1/alerts?min_severity=urgent", "min_severity"),
        ("/api/v1/alerts?kind=ddos", "kind"),
        ("/api/v1/alerts/x1", "id"),
        ("/api/v1/flows?limit=1&limit=2", "limit"),
    ] {
        let (code, e) = api.error(path);
        assert_eq!(
            (code, e["param"].as_str()),
            (400, Some(param)),
            "{path}: {e}"
        );
    }
    let (code, e) = api.error("/api/v1/flows?filtre=tcp");
    assert_eq!(code, 400);
    assert!(e["message"].as_str().unwrap().contains("\"filtre\""), "{e}");
    let (code, e) = api.error("/api/v1/alerts/999999");
    assert_eq!(code, 404);
    assert_eq!(e["message"], "no alert 999999");
    assert_eq!(api.error("/api/v1/nothing").0, 404);

    // An alert's evidence bundle, verified offline.
    let id = listed[0]["id"].as_u64().unwrap();
    let (status, ctype, bundle) = http_get(addr, &format!("/api/v1/alerts/{id}/bundle"));
    assert_eq!((status, ctype.as_str()), (200, "application/x-tar"));
    let file = tmp.path().join("bundle.tar");
    std::fs::write(&file, &bundle).unwrap();
    let o = vigil()
        .args(["evidence", "verify"])
        .arg(&file)
        .arg("--key")
        .arg(data.join("evidence/signing-key.pub.pem"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );

    // The custody trail: that export, who took it, its digest.
    let trail = api.get(&format!("/api/v1/alerts/{id}/exports"), "Exports");
    let exports = trail["exports"].as_array().unwrap();
    assert_eq!(exports.len(), 1, "{trail}");
    assert_eq!(
        exports[0]["by"], "local administrator (plaintext on loopback)",
        "{trail}"
    );
    {
        use sha2::Digest as _;
        let sha = sha2::Sha256::digest(&bundle);
        let hex: String = sha.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(exports[0]["sha256"], hex.as_str());
    }
    assert_eq!(exports[0]["bytes"], bundle.len() as u64);

    // The alert as STIX 2.1: what `vigil alerts export` makes of the same
    // store (the same objects, the bundle just exported referenced), and
    // what OASIS's validator accepts.
    let (status, ctype, stix) = http_get(addr, &format!("/api/v1/alerts/{id}/stix"));
    assert_eq!(
        (status, ctype.as_str()),
        (200, "application/stix+json;version=2.1")
    );
    let stix: Value = serde_json::from_slice(&stix).unwrap();
    let o = vigil()
        .args([
            "alerts",
            "export",
            "--format",
            "stix",
            "--id",
            &id.to_string(),
        ])
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let exported: Value = serde_json::from_slice(&o.stdout).unwrap();
    let objects = |b: &Value| {
        let mut v = b["objects"].as_array().unwrap().clone();
        v.sort_by_key(|o| o["id"].as_str().unwrap().to_string());
        v
    };
    assert_eq!(objects(&stix), objects(&exported));
    assert!(
        objects(&stix)
            .iter()
            .any(|o| o.to_string().contains("evidence")),
        "{stix}"
    );
    if have_python(&["stix2validator"], "stix2-validator") {
        let file = tmp.path().join("alert.stix.json");
        std::fs::write(&file, serde_json::to_vec_pretty(&stix).unwrap()).unwrap();
        crate::share::validate(&file);
    }
    let (code, e) = api.error(&format!("/api/v1/alerts/{id}/stix?tlp=purple"));
    assert_eq!((code, e["param"].as_str()), (400, Some("tlp")), "{e}");

    // The OpenAPI document, and every answer above under its schema.
    let (status, _, doc) = http_get(addr, "/api/v1/openapi.json");
    assert_eq!(status, 200);
    check_openapi(tmp.path(), &doc, &api.answers);

    rt.block_on(collector.shutdown()).unwrap();
}

/// The OpenAPI document through openapi-spec-validator, and each answer
/// through jsonschema against its schema in the document.
fn check_openapi(dir: &Path, doc: &[u8], answers: &[(String, Value)]) {
    if !have_python(
        &["openapi_spec_validator", "jsonschema"],
        "openapi-spec-validator",
    ) {
        return;
    }
    let doc_file = dir.join("openapi.json");
    std::fs::write(&doc_file, doc).unwrap();
    let answers_file = dir.join("answers.json");
    let list: Vec<Value> = answers
        .iter()
        .map(|(s, v)| serde_json::json!({"schema": s, "answer": v}))
        .collect();
    std::fs::write(&answers_file, serde_json::to_vec(&list).unwrap()).unwrap();
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/integration/python/openapi_check.py");
    let o = Command::new("python3")
        .arg(script)
        .arg(&doc_file)
        .arg(&answers_file)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "openapi_check.py: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!("{} answers valid", answers.len())),
        "{out}"
    );
    ran_with("openapi");
}
