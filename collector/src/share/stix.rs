//! Alerts as STIX 2.1 objects.
//!
//! Per alert (see ARCHITECTURE.md, "Sharing", for why these objects):
//! - an `incident` — the alert itself: what, against which asset, when,
//!   how bad, with a reference to its evidence bundle by SHA-256;
//! - an `attack-pattern` naming its ATT&CK (or ATT&CK for ICS) technique
//!   by external id;
//! - an `observed-data` whose `number_observed` is the flows behind the
//!   alert, over `ipv4-addr`/`ipv6-addr` objects for its top sources and
//!   targets and `network-traffic` objects for its top conversations (at
//!   most `max_observations` in all);
//! - an `indicator` for each attacker address — only where the address is
//!   the attacker's own (a scanner, a brute-forcer, a beacon's server), never
//!   a flood's possibly spoofed sources or an amplification's reflectors;
//! - a `sighting` of the attack pattern, by the operator, with the observed
//!   data; `relationship`s: indicator *indicates* attack pattern and is
//!   *based-on* the observed data; the incident is *related-to* both.
//!
//! Every object is created by the operator's `identity` and carries one TLP
//! 2.0 marking. Ids are deterministic: observables by the specification's
//! UUIDv5 rule (their id-contributing properties), the rest by the
//! collector, the partner and the alert; `modified` is the alert's last
//! evidence time plus one millisecond per update, so a re-export of the
//! same alert state is the same version and every update a newer one.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use serde_json::{Value, json};
use sha1::{Digest as _, Sha1};
use vigil_proto::{FlowRecord, pb};

use super::config::{Anonymizer, Operator, Tlp};
use crate::detect::nets::NetMap;
use crate::model::alert::AlertKind;

/// The namespace of STIX Cyber-observable ids (STIX 2.1, 2.9).
const SCO_NAMESPACE: [u8; 16] = [
    0x00, 0xab, 0xed, 0xb4, 0xaa, 0x42, 0x46, 0x6c, 0x9c, 0x01, 0xfe, 0xd2, 0x33, 0x15, 0xa9, 0xb7,
];

/// Vigil's namespace for the ids of the objects it makes (a fixed UUIDv5 of
/// "vigil" in the URL namespace's spirit; only its constancy matters).
const VIGIL_NAMESPACE: [u8; 16] = [
    0x5c, 0x1f, 0x0e, 0x8b, 0x7a, 0x3d, 0x5e, 0x41, 0x9a, 0x6b, 0x2c, 0x84, 0xd3, 0x17, 0x60, 0xf2,
];

/// The TLP 2.0 extension of marking definitions (OASIS).
pub const TLP2_EXTENSION: &str = "extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d";

/// When the identity and attack-pattern objects "were created": they carry
/// nothing that changes over time but their content, which their ids hash.
const FIXED_TIME: &str = "2026-01-01T00:00:00.000Z";

/// A UUIDv5 (RFC 9562) of `name` in `namespace`, as text.
pub fn uuid5(namespace: &[u8; 16], name: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(namespace);
    h.update(name);
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    uuid_text(&b)
}

/// A stable UUID in version 4's form: the first 16 bytes of the SHA-256 of
/// `name` in Vigil's namespace, with the version and variant bits set.
/// STIX asks for UUIDv4 on domain objects and relationships; RFC 9562 only
/// asks that v4's bits be unpredictable, which a digest's are, and a digest
/// makes the same alert the same object at every export.
pub fn stable_uuid4(name: &[u8]) -> String {
    use sha2::{Digest as _, Sha256};
    let mut h = Sha256::new();
    h.update(VIGIL_NAMESPACE);
    h.update(name);
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    uuid_text(&b)
}

fn uuid_text(b: &[u8; 16]) -> String {
    let x: String = b.iter().map(|v| format!("{v:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..]
    )
}

/// The text of Vigil's property extension definition (STIX allows a
/// plain-text schema).
const EXTENSION_SCHEMA: &str = "Properties, all optional. On incident: alert_id (integer, the \
collector's alert id), kind (Vigil alert kind), severity (low, medium, high, critical), asset \
(protected asset name), sector, criticality, first_seen and last_seen (timestamps of the \
evidence), flows (integer, evidence flows), measured and threshold (numbers, in unit), unit, \
source_count and target_count (integers, distinct parties), anonymized (boolean). On \
observed-data: top_sources and top_targets (lists of {ref, port, flows, packets, bytes}: the \
alert's top parties and what it counted of each). On network-traffic: flows (integer, flow \
records aggregated).";

/// The STIX id of an observable of `kind` whose id-contributing properties
/// are `props` (serialized canonically: sorted keys, no whitespace).
pub fn sco_id(kind: &str, props: &Value) -> String {
    format!(
        "{kind}--{}",
        uuid5(&SCO_NAMESPACE, props.to_string().as_bytes())
    )
}

/// A STIX timestamp (UTC, millisecond precision) of `ns`.
pub fn timestamp(ns: u64) -> String {
    let s = vigil_proto::time::Rfc3339Nanos(ns / 1_000_000 * 1_000_000).to_string();
    format!("{}Z", &s[..23])
}

/// A STIX timestamp of `ns` at millisecond precision with the fraction's
/// trailing zeros dropped (`…:21.27Z`, `…:21Z`): how the OASIS `stix2`
/// library writes observables' timestamps, and so hashes them into their
/// ids; written so, ours hash the same.
pub fn timestamp_trimmed(ns: u64) -> String {
    let t = timestamp(ns);
    let (head, frac) = t.trim_end_matches('Z').split_at(19);
    let frac = frac.trim_end_matches('0').trim_end_matches('.');
    format!("{head}{frac}Z")
}

/// The TLP 2.0 marking definition's id.
pub fn tlp_id(t: Tlp) -> &'static str {
    match t {
        Tlp::Clear => "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487",
        Tlp::Green => "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb",
        Tlp::Amber => "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421",
        Tlp::AmberStrict => "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003",
        Tlp::Red => "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1",
    }
}

/// The TLP 2.0 marking definition, as OASIS publishes it.
pub fn tlp_marking(t: Tlp) -> Value {
    json!({
        "type": "marking-definition",
        "spec_version": "2.1",
        "id": tlp_id(t),
        "created": "2022-10-01T00:00:00.000Z",
        "name": format!("TLP:{}", t.as_str().to_ascii_uppercase()),
        "extensions": {
            TLP2_EXTENSION: {"extension_type": "property-extension", "tlp_2_0": t.as_str()}
        }
    })
}

/// What every object of one export shares.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    /// Who shares.
    pub operator: &'a Operator,
    /// The collector, as a stable string (its signing key's fingerprint):
    /// two collectors' alert 7 are different objects.
    pub collector: &'a str,
    /// The partner shared with (`None`: a plain export). Objects shared with
    /// different partners differ (markings, anonymization), so their ids do.
    pub partner: Option<&'a str>,
    /// The marking.
    pub tlp: Tlp,
    /// Observables per alert.
    pub max_observations: usize,
    /// Addresses to anonymize, if any.
    pub anonymize: Option<&'a Anonymizer>,
    /// The protected and internal networks, when known: an `indicator`
    /// alert's attacker is its party outside them.
    pub ours: Option<&'a NetMap<()>>,
}

/// An exported evidence bundle to point to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleRef {
    /// Hex SHA-256 of the tar.
    pub sha256: String,
    /// Whether it was made anonymized for the partner.
    pub anonymized: bool,
}

/// One alert's material.
#[derive(Clone, Copy, Debug)]
pub struct AlertInput<'a> {
    /// The alert.
    pub alert: &'a pb::Alert,
    /// Its evidence flows (as many as fetched).
    pub flows: &'a [FlowRecord],
    /// Its latest exported evidence bundle, if any.
    pub bundle: Option<&'a BundleRef>,
}

impl Context<'_> {
    fn id(&self, kind: &str, name: &str) -> String {
        let seed = format!(
            "{}\0{}\0{kind}\0{name}",
            self.collector,
            self.partner.unwrap_or("")
        );
        format!("{kind}--{}", stable_uuid4(seed.as_bytes()))
    }

    /// The id of Vigil's property extension, as this collector defines it.
    pub fn extension_id(&self) -> String {
        self.id("extension-definition", "vigil-alert/1")
    }

    /// The definition of Vigil's property extension (on incidents,
    /// observed data and network traffic).
    pub fn extension(&self) -> Value {
        json!({
            "type": "extension-definition",
            "spec_version": "2.1",
            "id": self.extension_id(),
            "created_by_ref": self.identity_id(),
            "created": FIXED_TIME,
            "modified": FIXED_TIME,
            "name": "Vigil alert properties",
            "description": "What a Vigil collector measured of an alert, its observed data and its traffic.",
            "schema": EXTENSION_SCHEMA,
            "version": "1.0.0",
            "extension_types": ["property-extension"],
            "object_marking_refs": self.marking(),
        })
    }

    /// `props` as this collector's Vigil property extension.
    fn ext(&self, mut props: Value) -> Value {
        props["extension_type"] = json!("property-extension");
        json!({ self.extension_id(): props })
    }

    fn ip(&self, ip: IpAddr) -> IpAddr {
        self.anonymize.map_or(ip, |a| a.ip(ip))
    }

    fn hidden(&self, ip: IpAddr) -> bool {
        self.anonymize.is_some_and(|a| a.hides(ip))
    }

    fn marking(&self) -> Value {
        json!([tlp_id(self.tlp)])
    }

    /// The operator's identity object.
    pub fn identity(&self) -> Value {
        let o = self.operator;
        let name = if o.organization.is_empty() {
            "Vigil collector operator"
        } else {
            &o.organization
        };
        let mut v = json!({
            "type": "identity",
            "spec_version": "2.1",
            "id": self.identity_id(),
            "created": FIXED_TIME,
            "modified": FIXED_TIME,
            "name": name,
            "identity_class": "organization",
            "object_marking_refs": self.marking(),
        });
        if !o.sector.is_empty() {
            v["sectors"] = json!([o.sector]);
        }
        if !o.contact.is_empty() {
            v["contact_information"] = json!(o.contact);
        }
        v
    }

    fn identity_id(&self) -> String {
        let o = self.operator;
        self.id(
            "identity",
            &format!("{}\0{}\0{}", o.organization, o.sector, o.contact),
        )
    }

    /// The objects every export starts with: the marking, the identity and
    /// Vigil's property extension.
    pub fn common(&self) -> Vec<Value> {
        vec![tlp_marking(self.tlp), self.identity(), self.extension()]
    }
}

/// A party's address (`A`, `A:P`, `[A]:P`) and port.
fn party_addr(s: &str) -> Option<(IpAddr, Option<u16>)> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some((ip, None));
    }
    s.parse::<SocketAddr>()
        .ok()
        .map(|a| (a.ip(), Some(a.port())))
}

/// Which side of an alert is the attacker's own address, by kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attacker {
    Sources,
    Targets,
    Listed,
    /// Spoofable (floods), reflectors (amplification), or no address.
    Unknown,
}

fn attacker(kind: Option<AlertKind>) -> Attacker {
    match kind {
        Some(
            AlertKind::VerticalScan
            | AlertKind::HorizontalScan
            | AlertKind::BruteForce
            | AlertKind::IcsUnauthorizedClient,
        ) => Attacker::Sources,
        Some(AlertKind::Beaconing | AlertKind::Exfiltration) => Attacker::Targets,
        Some(AlertKind::Indicator) => Attacker::Listed,
        _ => Attacker::Unknown,
    }
}

/// ATT&CK tactic (kill chain phase) of a technique.
fn tactic(technique: &str) -> Option<&'static str> {
    let t = technique.split('.').next().unwrap_or("");
    Some(match t {
        "T1046" => "discovery",
        "T1498" | "T1499" => "impact",
        "T1110" => "credential-access",
        "T1071" | "T1568" => "command-and-control",
        "T1048" => "exfiltration",
        "T0855" => "impair-process-control",
        "T0856" => "evasion",
        _ => return None,
    })
}

/// One conversation of the evidence: initiator, responder, protocol,
/// responder port.
#[derive(Default)]
struct Conv {
    start: u64,
    end: u64,
    src_ports: BTreeSet<u16>,
    flows: u64,
    fwd_packets: u64,
    fwd_bytes: u64,
    rev_packets: u64,
    rev_bytes: u64,
}

/// The STIX objects of one alert (observables included, common objects
/// not: see [`Context::common`]).
pub fn alert_objects(cx: &Context<'_>, input: AlertInput<'_>) -> Vec<Value> {
    let a = input.alert;
    let kind = AlertKind::parse(&a.kind);
    let name = a.id.to_string();
    let created_ns = a.raised_ns.max(a.first_seen_ns).min(a.last_seen_ns);
    let created = timestamp(created_ns);
    let modified = timestamp(
        (a.last_seen_ns / 1_000_000 + a.updates)
            .saturating_mul(1_000_000)
            .max(created_ns / 1_000_000 * 1_000_000),
    );
    let identity = cx.identity_id();
    let marking = cx.marking();
    let mut objects: Vec<Value> = Vec::new();
    let sdo = |kind: &str, id: &str, created: &str, modified: &str| {
        json!({
            "type": kind, "spec_version": "2.1", "id": id,
            "created": created, "modified": modified,
            "created_by_ref": identity, "object_marking_refs": marking,
        })
    };

    // The attack pattern: one per technique, never changing.
    let ap_id = cx.id("attack-pattern", &a.technique);
    let mut ap = sdo("attack-pattern", &ap_id, FIXED_TIME, FIXED_TIME);
    let (source, url_path) = if a.matrix == "ics" {
        ("mitre-ics-attack", a.technique.replace('.', "/"))
    } else {
        ("mitre-attack", a.technique.replace('.', "/"))
    };
    ap["name"] = json!(a.technique_name);
    ap["external_references"] = json!([{
        "source_name": source,
        "external_id": a.technique,
        "url": format!("https://attack.mitre.org/techniques/{url_path}/"),
    }]);
    if let Some(t) = tactic(&a.technique) {
        ap["kill_chain_phases"] = json!([{"kill_chain_name": source, "phase_name": t}]);
    }
    objects.push(ap);

    // Observables: top sources and targets first, then conversations.
    let mut obs = Observables {
        cx,
        marking: &marking,
        seen: BTreeSet::new(),
        refs: Vec::new(),
        cap: cx.max_observations.max(1),
    };
    let top_sources = obs.top(&a.sources, &mut objects);
    let top_targets = obs.top(&a.targets, &mut objects);
    // Conversations, largest first.
    let mut convs: BTreeMap<(IpAddr, IpAddr, u8, Option<u16>), Conv> = BTreeMap::new();
    for f in input.flows {
        let c = convs
            .entry((f.src_ip, f.dst_ip, f.proto, f.dst_port))
            .or_insert_with(|| Conv {
                start: u64::MAX,
                ..Conv::default()
            });
        c.start = c.start.min(f.first_seen_ns);
        c.end = c.end.max(f.last_seen_ns);
        if let Some(p) = f.src_port
            && c.src_ports.len() < 2
        {
            c.src_ports.insert(p);
        }
        c.flows += 1;
        c.fwd_packets += f.fwd_packets;
        c.fwd_bytes += f.fwd_bytes;
        c.rev_packets += f.rev_packets;
        c.rev_bytes += f.rev_bytes;
    }
    let mut convs: Vec<_> = convs.into_iter().collect();
    convs.sort_by(|x, y| {
        (y.1.flows, y.1.fwd_bytes + y.1.rev_bytes).cmp(&(x.1.flows, x.1.fwd_bytes + x.1.rev_bytes))
    });
    for ((src, dst, proto, dport), c) in convs {
        let needs = 1
            + usize::from(!obs.seen.contains(&addr_id(cx.ip(src))))
            + usize::from(!obs.seen.contains(&addr_id(cx.ip(dst))));
        if obs.refs.len() + needs > obs.cap {
            break;
        }
        let src_ref = obs.addr(src, &mut objects);
        let dst_ref = obs.addr(dst, &mut objects);
        let l3 = if src.is_ipv4() { "ipv4" } else { "ipv6" };
        let l4 = vigil_proto::flow::proto_name(proto).to_string();
        let mut idp = json!({
            "start": timestamp_trimmed(c.start), "end": timestamp_trimmed(c.end.max(c.start)),
            "src_ref": src_ref, "dst_ref": dst_ref, "protocols": [l3, l4],
        });
        if c.src_ports.len() == 1
            && let Some(p) = c.src_ports.first()
        {
            idp["src_port"] = json!(p);
        }
        if let Some(p) = dport {
            idp["dst_port"] = json!(p);
        }
        idp["extensions"] = cx.ext(json!({"flows": c.flows}));
        let id = sco_id("network-traffic", &idp);
        if obs.seen.insert(id.clone()) {
            let mut o = idp;
            o["type"] = json!("network-traffic");
            o["spec_version"] = json!("2.1");
            o["id"] = json!(id);
            o["is_active"] = json!(false);
            o["src_byte_count"] = json!(c.fwd_bytes);
            o["dst_byte_count"] = json!(c.rev_bytes);
            o["src_packets"] = json!(c.fwd_packets);
            o["dst_packets"] = json!(c.rev_packets);
            o["object_marking_refs"] = marking.clone();
            objects.push(o);
            obs.refs.push(id);
        }
    }
    let refs = obs.refs;

    let od_id = cx.id("observed-data", &name);
    if !refs.is_empty() {
        let mut od = sdo("observed-data", &od_id, &created, &modified);
        od["first_observed"] = json!(timestamp(a.first_seen_ns));
        od["last_observed"] = json!(timestamp(a.last_seen_ns.max(a.first_seen_ns)));
        od["number_observed"] = json!(a.evidence_count.clamp(1, 999_999_999));
        od["object_refs"] = json!(refs);
        od["extensions"] = cx.ext(json!({
            "top_sources": top_sources, "top_targets": top_targets,
        }));
        objects.push(od);
    }

    // Indicators: the attacker's own addresses only.
    let mut attackers: Vec<IpAddr> = Vec::new();
    let side: Vec<&pb::Party> = match attacker(kind) {
        Attacker::Sources => a.sources.iter().collect(),
        Attacker::Targets => a.targets.iter().collect(),
        Attacker::Listed => a.sources.iter().chain(&a.targets).collect(),
        Attacker::Unknown => Vec::new(),
    };
    for p in side {
        let Some((ip, _)) = party_addr(&p.addr) else {
            continue;
        };
        // The listed address itself: not the protected side, nor the
        // resolver or server of a lookup of a listed domain.
        let listed_ok = attacker(kind) != Attacker::Listed
            || (cx.ours.is_none_or(|ours| !ours.contains(ip)) && {
                let l = format!("listed {ip}");
                a.summary.contains(&format!("{l} ")) || a.summary.ends_with(&l)
            });
        if listed_ok && !cx.hidden(ip) && !attackers.contains(&ip) {
            attackers.push(ip);
        }
    }
    let mut indicator_ids = Vec::new();
    for ip in &attackers {
        let kind_name = if ip.is_ipv4() {
            "ipv4-addr"
        } else {
            "ipv6-addr"
        };
        let id = cx.id("indicator", &format!("{name}\0{ip}"));
        let mut ind = sdo("indicator", &id, &created, &modified);
        ind["name"] = json!(format!("{ip}: {} (Vigil alert {})", a.technique_name, a.id));
        ind["description"] = json!(format!(
            "Address seen in {} against {} ({}).",
            a.kind.replace('_', " "),
            a.asset,
            a.technique
        ));
        ind["indicator_types"] = json!([match kind {
            Some(AlertKind::VerticalScan | AlertKind::HorizontalScan) => "anomalous-activity",
            _ => "malicious-activity",
        }]);
        ind["pattern"] = json!(format!("[{kind_name}:value = '{ip}']"));
        ind["pattern_type"] = json!("stix");
        ind["pattern_version"] = json!("2.1");
        ind["valid_from"] = json!(timestamp(a.first_seen_ns));
        if let Some(t) = tactic(&a.technique) {
            ind["kill_chain_phases"] = json!([{"kill_chain_name": source, "phase_name": t}]);
        }
        objects.push(ind);
        indicator_ids.push(id);
    }

    // The incident.
    let inc_id = cx.id("incident", &name);
    let mut inc = sdo("incident", &inc_id, &created, &modified);
    let summary = match cx.anonymize {
        Some(an) => super::anon::rewrite_addresses(&a.summary, |ip| an.ip(ip)),
        None => a.summary.clone(),
    };
    inc["name"] = json!(format!(
        "Vigil alert {}: {} against {}",
        a.id,
        a.kind.replace('_', " "),
        a.asset
    ));
    let mut description = format!(
        "{summary}. Severity {}, asset {} (sector {}, criticality {}); {} flows, {} distinct sources, {} distinct targets, {} to {}.",
        a.severity,
        a.asset,
        if a.sector.is_empty() { "-" } else { &a.sector },
        a.criticality,
        a.evidence_count,
        a.source_count,
        a.target_count,
        timestamp(a.first_seen_ns),
        timestamp(a.last_seen_ns),
    );
    if cx.anonymize.is_some() {
        // Which networks were hidden is itself hidden.
        description.push_str(
            " The addresses of the operator's networks are anonymized (Crypto-PAn, prefix-preserving).",
        );
    }
    inc["description"] = json!(description);
    inc["labels"] = json!([a.kind, a.severity]);
    let mut ext = vec![json!({"source_name": "vigil", "external_id": format!("alert-{}", a.id)})];
    if let Some(b) = input.bundle {
        ext.push(json!({
            "source_name": "vigil-evidence-bundle",
            "description": format!(
                "Evidence bundle of alert {}{} (verify it with `vigil evidence verify`)",
                a.id,
                if b.anonymized { ", anonymized" } else { "" }
            ),
            "hashes": {"SHA-256": b.sha256},
        }));
    }
    inc["external_references"] = json!(ext);
    let mut props = json!({
        "alert_id": a.id, "kind": a.kind, "severity": a.severity, "asset": a.asset,
        "criticality": a.criticality,
        "first_seen": timestamp(a.first_seen_ns), "last_seen": timestamp(a.last_seen_ns),
        "flows": a.evidence_count, "measured": a.measured, "threshold": a.threshold,
        "unit": a.unit, "source_count": a.source_count, "target_count": a.target_count,
        "anonymized": cx.anonymize.is_some(),
    });
    if !a.sector.is_empty() {
        props["sector"] = json!(a.sector);
    }
    inc["extensions"] = cx.ext(props);
    objects.push(inc);

    // The sighting and the relationships.
    let mut si = sdo("sighting", &cx.id("sighting", &name), &created, &modified);
    si["first_seen"] = json!(timestamp(a.first_seen_ns));
    si["last_seen"] = json!(timestamp(a.last_seen_ns.max(a.first_seen_ns)));
    si["count"] = json!(a.evidence_count.clamp(1, 999_999_999));
    si["sighting_of_ref"] = json!(ap_id);
    si["where_sighted_refs"] = json!([identity]);
    if !refs.is_empty() {
        si["observed_data_refs"] = json!([od_id]);
    }
    objects.push(si);
    let rel = |from: &str, rtype: &str, to: &str, objects: &mut Vec<Value>| {
        let id = cx.id("relationship", &format!("{from}\0{rtype}\0{to}"));
        let mut r = sdo("relationship", &id, &created, &modified);
        r["relationship_type"] = json!(rtype);
        r["source_ref"] = json!(from);
        r["target_ref"] = json!(to);
        objects.push(r);
    };
    rel(&inc_id, "related-to", &ap_id, &mut objects);
    for i in &indicator_ids {
        rel(i, "indicates", &ap_id, &mut objects);
        if !refs.is_empty() {
            rel(i, "based-on", &od_id, &mut objects);
        }
        rel(&inc_id, "related-to", i, &mut objects);
    }
    objects
}

fn addr_id(ip: IpAddr) -> String {
    let kind = if ip.is_ipv4() {
        "ipv4-addr"
    } else {
        "ipv6-addr"
    };
    sco_id(kind, &json!({"value": ip.to_string()}))
}

/// The observables of one alert being gathered, at most `cap`.
struct Observables<'a> {
    cx: &'a Context<'a>,
    marking: &'a Value,
    seen: BTreeSet<String>,
    refs: Vec<String>,
    cap: usize,
}

impl Observables<'_> {
    /// The address object of `ip` (as shared), added once; its id.
    fn addr(&mut self, ip: IpAddr, objects: &mut Vec<Value>) -> String {
        let ip = self.cx.ip(ip);
        let kind = if ip.is_ipv4() {
            "ipv4-addr"
        } else {
            "ipv6-addr"
        };
        let value = ip.to_string();
        let id = addr_id(ip);
        if self.seen.insert(id.clone()) {
            objects.push(json!({
                "type": kind, "spec_version": "2.1", "id": id, "value": value,
                "object_marking_refs": self.marking,
            }));
            self.refs.push(id.clone());
        }
        id
    }

    /// The address objects of `parties` while room is left, and what the
    /// alert counted of each.
    fn top(&mut self, parties: &[pb::Party], objects: &mut Vec<Value>) -> Vec<Value> {
        let mut out = Vec::new();
        for p in parties {
            let Some((ip, port)) = party_addr(&p.addr) else {
                continue;
            };
            if self.refs.len() >= self.cap {
                break;
            }
            let id = self.addr(ip, objects);
            let mut e = json!({
                "ref": id, "flows": p.flows, "packets": p.packets, "bytes": p.bytes,
            });
            if let Some(port) = port {
                e["port"] = json!(port);
            }
            out.push(e);
        }
        out
    }
}

/// A STIX bundle of `objects` (each id once: the first kept), its id
/// derived from their ids and versions.
pub fn bundle(objects: Vec<Value>) -> Value {
    let mut seen = BTreeSet::new();
    let mut kept = Vec::with_capacity(objects.len());
    let mut seed = String::new();
    for o in objects {
        let id = o["id"].as_str().unwrap_or("").to_string();
        if seen.insert(id.clone()) {
            seed.push_str(&id);
            seed.push('\0');
            seed.push_str(o["modified"].as_str().unwrap_or(""));
            seed.push('\n');
            kept.push(o);
        }
    }
    json!({
        "type": "bundle",
        "id": format!("bundle--{}", stable_uuid4(seed.as_bytes())),
        "objects": kept,
    })
}
