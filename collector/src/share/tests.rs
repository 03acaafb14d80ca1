//! The STIX objects of alerts, and the `[share]` policy, checked exactly.

use std::net::IpAddr;

use serde_json::Value;
use vigil_proto::{FlowRecord, pb};

use super::config::{Anonymizer, Operator, ShareSection, Tlp};
use super::cryptopan::CryptoPan;
use super::stix::{self, AlertInput, Context};
use crate::detect::config::ProtectedSection;
use crate::detect::nets::{Cidr, NetMap};

const S: u64 = 1_000_000_000;
const T0: u64 = 1_700_000_000 * S;

fn party(addr: &str, flows: u64) -> pb::Party {
    pb::Party {
        addr: addr.into(),
        flows,
        packets: flows * 2,
        bytes: flows * 120,
    }
}

fn alert(id: u64, kind: &str, technique: &str, sources: &[&str], targets: &[&str]) -> pb::Alert {
    pb::Alert {
        id,
        kind: kind.into(),
        technique: technique.into(),
        technique_name: "Technique".into(),
        matrix: "enterprise".into(),
        severity: "high".into(),
        asset: "plant".into(),
        sector: "water".into(),
        criticality: "high".into(),
        summary: format!("{kind} against {} from {}", targets[0], sources[0]),
        sources: sources.iter().map(|s| party(s, 10)).collect(),
        source_count: sources.len() as u64,
        targets: targets.iter().map(|t| party(t, 10)).collect(),
        target_count: targets.len() as u64,
        first_seen_ns: T0,
        last_seen_ns: T0 + 30 * S,
        raised_ns: T0 + 2 * S,
        measured: 900.0,
        threshold: 500.0,
        unit: "flows/s".into(),
        updates: 3,
        evidence_count: 1234,
        ..pb::Alert::default()
    }
}

fn flow(src: &str, sport: u16, dst: &str, dport: u16, at: u64) -> FlowRecord {
    let mut f = crate::testutil::record(&mut crate::testutil::Rng(1), 1);
    f.tunnel = None;
    f.rev_packets = 0;
    f.rev_bytes = 0;
    f.src_ip = src.parse().unwrap();
    f.dst_ip = dst.parse().unwrap();
    f.src_port = Some(sport);
    f.dst_port = Some(dport);
    f.proto = 6;
    f.first_seen_ns = at;
    f.last_seen_ns = at + S;
    f.fwd_packets = 2;
    f.fwd_bytes = 120;
    f
}

fn operator() -> Operator {
    Operator {
        organization: "Example Water Utility".into(),
        sector: "water".into(),
        contact: "soc@example.org".into(),
    }
}

fn cx<'a>(op: &'a Operator, partner: Option<&'a str>, anon: Option<&'a Anonymizer>) -> Context<'a> {
    Context {
        operator: op,
        collector: "sha256:00ff",
        partner,
        tlp: Tlp::Amber,
        max_observations: 100,
        anonymize: anon,
        ours: None,
    }
}

fn objects(cx: &Context<'_>, a: &pb::Alert, flows: &[FlowRecord]) -> Vec<Value> {
    let mut o = cx.common();
    o.extend(stix::alert_objects(
        cx,
        AlertInput {
            alert: a,
            flows,
            bundle: None,
        },
    ));
    stix::bundle(o)["objects"].as_array().unwrap().clone()
}

fn of_type<'a>(objects: &'a [Value], t: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["type"] == t).collect()
}

#[test]
fn uuids_follow_rfc_9562_and_timestamps_the_stix_forms() {
    // RFC 9562's (and 4122's) example: "www.example.com" in the DNS
    // namespace.
    let dns = [
        0x6b, 0xa7, 0xb8, 0x10, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30,
        0xc8,
    ];
    assert_eq!(
        stix::uuid5(&dns, b"www.example.com"),
        "2ed6657d-e927-568b-95e1-2665a8aea6a2"
    );
    let v4 = stix::stable_uuid4(b"x");
    assert_eq!(&v4[14..15], "4");
    assert!(matches!(&v4[19..20], "8" | "9" | "a" | "b"));
    assert_eq!(v4, stix::stable_uuid4(b"x"));
    assert_eq!(
        stix::timestamp(T0 + 270_000_123),
        "2023-11-14T22:13:20.270Z"
    );
    assert_eq!(
        stix::timestamp_trimmed(T0 + 270_000_123),
        "2023-11-14T22:13:20.27Z"
    );
    assert_eq!(stix::timestamp_trimmed(T0), "2023-11-14T22:13:20Z");
}

#[test]
fn an_alert_becomes_marked_linked_objects_with_its_technique_and_flow_count() {
    let op = operator();
    let c = cx(&op, None, None);
    let a = alert(
        7,
        "brute_force",
        "T1110",
        &["203.0.113.9"],
        &["198.51.100.5:22"],
    );
    let flows: Vec<FlowRecord> = (0..5)
        .map(|i| {
            flow(
                "203.0.113.9",
                40000 + i,
                "198.51.100.5",
                22,
                T0 + u64::from(i) * S,
            )
        })
        .collect();
    let objs = objects(&c, &a, &flows);
    let ids: std::collections::HashSet<&str> =
        objs.iter().map(|o| o["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), objs.len(), "each object once");
    let tlp = stix::tlp_id(Tlp::Amber);
    for o in &objs {
        if o["type"] == "marking-definition" {
            assert_eq!(o["id"], tlp);
            continue;
        }
        assert_eq!(o["object_marking_refs"], serde_json::json!([tlp]), "{o}");
        // Every reference resolves within the bundle (but the extension's
        // keys, which name its definition, also present).
        for key in [
            "created_by_ref",
            "sighting_of_ref",
            "source_ref",
            "target_ref",
            "src_ref",
            "dst_ref",
        ] {
            if let Some(r) = o[key].as_str() {
                assert!(ids.contains(r), "{key} {r} of {}", o["id"]);
            }
        }
        for key in ["object_refs", "observed_data_refs", "where_sighted_refs"] {
            for r in o[key].as_array().into_iter().flatten() {
                assert!(ids.contains(r.as_str().unwrap()), "{key} {r}");
            }
        }
    }
    let ap = of_type(&objs, "attack-pattern");
    assert_eq!(ap.len(), 1);
    assert_eq!(ap[0]["external_references"][0]["external_id"], "T1110");
    assert_eq!(
        ap[0]["external_references"][0]["source_name"],
        "mitre-attack"
    );
    let od = of_type(&objs, "observed-data");
    assert_eq!(od[0]["number_observed"], 1234);
    assert_eq!(od[0]["first_observed"], "2023-11-14T22:13:20.000Z");
    // Two addresses and one conversation (five flows from varying ports).
    let nt = of_type(&objs, "network-traffic");
    assert_eq!(nt.len(), 1);
    assert_eq!(nt[0]["dst_port"], 22);
    assert!(nt[0].get("src_port").is_none());
    assert_eq!(nt[0]["src_packets"], 10);
    let ind = of_type(&objs, "indicator");
    assert_eq!(ind.len(), 1);
    assert_eq!(ind[0]["pattern"], "[ipv4-addr:value = '203.0.113.9']");
    let inc = of_type(&objs, "incident");
    assert_eq!(inc[0]["created"], "2023-11-14T22:13:22.000Z");
    // Last evidence plus one millisecond per update.
    assert_eq!(inc[0]["modified"], "2023-11-14T22:13:50.003Z");
    let ext = &inc[0]["extensions"][c.extension_id()];
    assert_eq!(ext["extension_type"], "property-extension");
    assert_eq!(ext["flows"], 1234);
    let si = of_type(&objs, "sighting");
    assert_eq!(si[0]["sighting_of_ref"], ap[0]["id"]);
    assert_eq!(si[0]["count"], 1234);
    let rels: Vec<(&str, &str, &str)> = of_type(&objs, "relationship")
        .iter()
        .map(|r| {
            (
                r["source_ref"]
                    .as_str()
                    .unwrap()
                    .split("--")
                    .next()
                    .unwrap(),
                r["relationship_type"].as_str().unwrap(),
                r["target_ref"]
                    .as_str()
                    .unwrap()
                    .split("--")
                    .next()
                    .unwrap(),
            )
        })
        .collect();
    for want in [
        ("incident", "related-to", "attack-pattern"),
        ("indicator", "indicates", "attack-pattern"),
        ("indicator", "based-on", "observed-data"),
        ("incident", "related-to", "indicator"),
    ] {
        assert!(rels.contains(&want), "{want:?} in {rels:?}");
    }
}

#[test]
fn spoofable_sources_and_reflectors_are_never_indicators() {
    let op = operator();
    let c = cx(&op, None, None);
    for (kind, technique) in [
        ("syn_flood", "T1498.001"),
        ("udp_flood", "T1498.001"),
        ("volumetric_flood", "T1498.001"),
        ("amplification", "T1498.002"),
    ] {
        let a = alert(
            1,
            kind,
            technique,
            &["203.0.113.1", "203.0.113.2"],
            &["198.51.100.5"],
        );
        let objs = objects(&c, &a, &[]);
        assert!(of_type(&objs, "indicator").is_empty(), "{kind}");
        assert_eq!(
            of_type(&objs, "ipv4-addr").len(),
            3,
            "{kind}: still observed"
        );
    }
    // A beacon's and an exfiltration's attacker is the far end.
    for kind in ["beaconing", "exfiltration"] {
        let a = alert(2, kind, "T1071", &["198.51.100.5"], &["203.0.113.50:443"]);
        let objs = objects(&c, &a, &[]);
        let ind = of_type(&objs, "indicator");
        assert_eq!(ind.len(), 1, "{kind}");
        assert_eq!(ind[0]["pattern"], "[ipv4-addr:value = '203.0.113.50']");
    }
}

#[test]
fn ids_are_stable_per_alert_and_partner_and_updates_are_newer_versions() {
    let op = operator();
    let a = alert(
        7,
        "vertical_scan",
        "T1046",
        &["203.0.113.9"],
        &["198.51.100.5"],
    );
    let c = cx(&op, None, None);
    let first = objects(&c, &a, &[]);
    assert_eq!(
        first,
        objects(&c, &a, &[]),
        "the same state, the same objects"
    );
    let mut later = a.clone();
    later.updates += 1;
    later.last_seen_ns += 5 * S;
    later.evidence_count += 10;
    let second = objects(&c, &later, &[]);
    let find = |objs: &[Value], t: &str| of_type(objs, t)[0].clone();
    for t in ["incident", "observed-data", "sighting", "indicator"] {
        let (x, y) = (find(&first, t), find(&second, t));
        assert_eq!(x["id"], y["id"], "{t}");
        assert!(y["modified"].as_str() > x["modified"].as_str(), "{t}");
        assert_eq!(x["created"], y["created"], "{t}");
    }
    for t in ["attack-pattern", "identity"] {
        assert_eq!(find(&first, t), find(&second, t), "{t} does not change");
    }
    // Another partner sees other objects; another alert too.
    let p = cx(&op, Some("national-cert"), None);
    let other = objects(&p, &a, &[]);
    assert_ne!(
        find(&first, "incident")["id"],
        find(&other, "incident")["id"]
    );
    let b = alert(
        8,
        "vertical_scan",
        "T1046",
        &["203.0.113.9"],
        &["198.51.100.5"],
    );
    assert_ne!(
        find(&first, "incident")["id"],
        find(&objects(&c, &b, &[]), "incident")["id"]
    );
    // Observables are named by their values alone.
    assert_eq!(
        find(&first, "ipv4-addr")["id"],
        find(&other, "ipv4-addr")["id"]
    );
}

#[test]
fn observables_stop_at_the_limit() {
    let op = operator();
    let mut c = cx(&op, None, None);
    c.max_observations = 5;
    let sources: Vec<String> = (1..=20).map(|i| format!("203.0.113.{i}")).collect();
    let src: Vec<&str> = sources.iter().map(String::as_str).collect();
    let a = alert(3, "horizontal_scan", "T1046", &src, &["198.51.100.5"]);
    let flows: Vec<FlowRecord> = src
        .iter()
        .map(|s| flow(s, 1000, "198.51.100.5", 80, T0))
        .collect();
    let objs = objects(&c, &a, &flows);
    let od = of_type(&objs, "observed-data");
    assert_eq!(od[0]["object_refs"].as_array().unwrap().len(), 5);
    assert_eq!(od[0]["number_observed"], 1234);
}

fn anonymizer(hide: &[&str]) -> Anonymizer {
    let mut map = NetMap::new();
    let mut networks = Vec::new();
    for h in hide {
        let n = Cidr::parse(h).unwrap();
        map.insert(n, ());
        networks.push(n);
    }
    Anonymizer {
        pan: CryptoPan::new(&[7; 32]),
        hide: map,
        networks,
    }
}

#[test]
fn anonymized_objects_hold_none_of_the_hidden_addresses_and_keep_their_prefixes() {
    let op = operator();
    let an = anonymizer(&["198.51.100.0/24", "10.0.0.0/8"]);
    let c = cx(&op, Some("national-cert"), Some(&an));
    // A scan from inside (hidden) and a brute force from outside (kept).
    let a = alert(
        4,
        "brute_force",
        "T1110",
        &["203.0.113.9", "10.1.2.3"],
        &["198.51.100.5:22"],
    );
    let flows = [
        flow("203.0.113.9", 4000, "198.51.100.5", 22, T0),
        flow("10.1.2.3", 4001, "198.51.100.6", 22, T0),
    ];
    let objs = objects(&c, &a, &flows);
    let text = serde_json::to_string(&objs).unwrap();
    for hidden in [
        "198.51.100.5",
        "198.51.100.6",
        "10.1.2.3",
        "198.51.100.0/24",
    ] {
        assert!(!text.contains(hidden), "{hidden} leaked");
    }
    assert!(
        text.contains("203.0.113.9"),
        "the attacker is shared as it is"
    );
    let ind = of_type(&objs, "indicator");
    assert_eq!(ind.len(), 1, "no indicator of a hidden address");
    let addrs: Vec<IpAddr> = of_type(&objs, "ipv4-addr")
        .iter()
        .map(|o| o["value"].as_str().unwrap().parse().unwrap())
        .collect();
    let five = an.pan.ip("198.51.100.5".parse().unwrap());
    let six = an.pan.ip("198.51.100.6".parse().unwrap());
    assert!(addrs.contains(&five) && addrs.contains(&six));
    let (IpAddr::V4(x), IpAddr::V4(y)) = (five, six) else {
        unreachable!()
    };
    assert_eq!(x.octets()[..3], y.octets()[..3], "a /24 stays a /24");
    let inc = of_type(&objs, "incident");
    assert!(
        inc[0]["description"]
            .as_str()
            .unwrap()
            .contains("anonymized")
    );
}

#[test]
fn every_bad_share_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    std::fs::write(&key, "00".repeat(31)).unwrap();
    let text = format!(
        r#"
        tlp = "purple"
        timeout = "0s"
        max_observations = 0
        [[partners]]
        name = "bad name"
        api_root = "ftp://x"
        username = "u"
        tlp = "orange"
        min_severity = "severe"
        kinds = ["syn_flood", "nope"]
        assets = ["missing"]
        delay = "soon"
        anonymize = "cryptopan:{}"
        [[partners]]
        name = "ok"
        api_root = "https://taxii.example/api1"
        anonymize = "rot13"
        client_cert = "/nonexistent.pem"
        "#,
        key.display()
    );
    let s: ShareSection = toml::from_str(&text).unwrap();
    let mut errs = Vec::new();
    assert!(s.validate(&[], &[], &mut errs).is_none());
    let all = errs.join("\n");
    for key in [
        "collector.share.tlp",
        "collector.share.timeout",
        "collector.share.max_observations",
        "collector.share.organization",
        "collector.share.partners[0].name",
        "collector.share.partners[0].api_root",
        "collector.share.partners[0].password_file",
        "collector.share.partners[0].tlp",
        "collector.share.partners[0].min_severity",
        "collector.share.partners[0].kinds[1]",
        "collector.share.partners[0].assets[0]",
        "collector.share.partners[0].delay",
        "collector.share.partners[0].anonymize",
        "collector.share.partners[1].collection",
        "collector.share.partners[1].anonymize",
        "collector.share.partners[1].client_cert",
        "collector.share.partners[1].client_key",
    ] {
        assert!(all.contains(key), "{key} not named in:\n{all}");
    }
    assert!(all.contains("64 hexadecimal digits"), "{all}");
}

#[test]
fn a_good_policy_reads_whole() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("cert.key");
    std::fs::write(&key, format!("{}\n", "ab".repeat(32))).unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "s3cret\nignored\n").unwrap();
    let text = format!(
        r#"
        organization = "Example Water Utility"
        sector = "water"
        contact = "soc@example.org"
        [[partners]]
        name = "national-cert"
        api_root = "https://taxii.cert.example/api1"
        collection = "472c94ae-3113-4e3e-a4dd-a9f4ac7471d4"
        username = "utility-7"
        password_file = "{}"
        tlp = "amber+strict"
        min_severity = "high"
        kinds = ["syn_flood"]
        assets = ["plant"]
        delay = "10m"
        anonymize = "cryptopan:{}"
        "#,
        pw.display(),
        key.display()
    );
    let s: ShareSection = toml::from_str(&text).unwrap();
    let protected = [ProtectedSection {
        name: "plant".into(),
        cidrs: vec!["198.51.100.0/24".into()],
        ..ProtectedSection::default()
    }];
    let mut errs = Vec::new();
    let c = s
        .validate(&protected, &["10.0.0.0/8".into()], &mut errs)
        .unwrap_or_else(|| panic!("{errs:?}"));
    let p = c.partner("national-cert").unwrap();
    assert_eq!(
        p.api_root.as_deref(),
        Some("https://taxii.cert.example/api1/")
    );
    assert_eq!(p.auth.basic, Some(("utility-7".into(), "s3cret".into())));
    assert_eq!(p.tlp, Tlp::AmberStrict);
    assert_eq!(p.delay, std::time::Duration::from_secs(600));
    assert_eq!(p.max_observations, 100);
    use crate::model::alert::{AlertKind, Severity};
    assert!(p.wants(AlertKind::SynFlood, Severity::High, "plant"));
    assert!(!p.wants(AlertKind::SynFlood, Severity::Medium, "plant"));
    assert!(!p.wants(AlertKind::UdpFlood, Severity::High, "plant"));
    assert!(!p.wants(AlertKind::SynFlood, Severity::High, "other"));
    let an = p.anonymize.as_ref().unwrap();
    assert!(an.hides("198.51.100.7".parse().unwrap()));
    assert!(an.hides("10.9.9.9".parse().unwrap()));
    assert!(!an.hides("203.0.113.1".parse().unwrap()));
    assert!(c.ours.contains("10.9.9.9".parse().unwrap()));
}
