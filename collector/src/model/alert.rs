//! Alerts: what a detector concluded, against which asset, from where, with
//! the ids of the flows that are its evidence; and the query that lists them.

use serde::{Deserialize, Serialize};

/// How much an asset matters; drives severity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Criticality {
    /// Low.
    Low,
    /// Medium (the default).
    #[default]
    Medium,
    /// High.
    High,
    /// Critical: life or safety depends on it.
    Critical,
}

impl Criticality {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Criticality::Low => "low",
            Criticality::Medium => "medium",
            Criticality::High => "high",
            Criticality::Critical => "critical",
        }
    }
}

/// What was detected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// One source probing many ports of one protected host.
    VerticalScan,
    /// One source probing one port across many protected hosts.
    HorizontalScan,
    /// Half-open or rejected TCP connections at a flood rate.
    SynFlood,
    /// TCP packets or bits at a flood rate.
    TcpFlood,
    /// UDP at a flood rate.
    UdpFlood,
    /// ICMP at a flood rate.
    IcmpFlood,
    /// All traffic to a host at a flood rate.
    VolumetricFlood,
    /// Unsolicited responses from reflector services.
    Amplification,
    /// Many short or failed sessions to an authentication service.
    BruteForce,
    /// An ICS protocol session from a client outside the allowed list.
    IcsUnauthorizedClient,
    /// Regular connections to one external host.
    Beaconing,
    /// A large transfer out of a protected asset.
    Exfiltration,
    /// Traffic with a listed known-bad address.
    Indicator,
    /// A sensor's batches signed with another attestation key than its
    /// known one (refused): someone else reporting under its id, or its
    /// key replaced.
    SensorKeyChanged,
    /// Many long, distinct names under one domain looked up by one
    /// protected host: data carried in DNS queries.
    DnsTunnel,
    /// Many random-looking names answered NXDOMAIN to one protected host:
    /// malware trying generated domains for its controller.
    Dga,
}

impl AlertKind {
    /// Every kind.
    pub const ALL: [AlertKind; 16] = [
        AlertKind::VerticalScan,
        AlertKind::HorizontalScan,
        AlertKind::SynFlood,
        AlertKind::TcpFlood,
        AlertKind::UdpFlood,
        AlertKind::IcmpFlood,
        AlertKind::VolumetricFlood,
        AlertKind::Amplification,
        AlertKind::BruteForce,
        AlertKind::IcsUnauthorizedClient,
        AlertKind::Beaconing,
        AlertKind::Exfiltration,
        AlertKind::Indicator,
        AlertKind::SensorKeyChanged,
        AlertKind::DnsTunnel,
        AlertKind::Dga,
    ];

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::VerticalScan => "vertical_scan",
            AlertKind::HorizontalScan => "horizontal_scan",
            AlertKind::SynFlood => "syn_flood",
            AlertKind::TcpFlood => "tcp_flood",
            AlertKind::UdpFlood => "udp_flood",
            AlertKind::IcmpFlood => "icmp_flood",
            AlertKind::VolumetricFlood => "volumetric_flood",
            AlertKind::Amplification => "amplification",
            AlertKind::BruteForce => "brute_force",
            AlertKind::IcsUnauthorizedClient => "ics_unauthorized_client",
            AlertKind::Beaconing => "beaconing",
            AlertKind::Exfiltration => "exfiltration",
            AlertKind::Indicator => "indicator",
            AlertKind::SensorKeyChanged => "sensor_key_changed",
            AlertKind::DnsTunnel => "dns_tunnel",
            AlertKind::Dga => "dga",
        }
    }

    /// Parses [`AlertKind::as_str`].
    pub fn parse(s: &str) -> Option<AlertKind> {
        AlertKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// MITRE ATT&CK technique: (id, name, matrix).
    pub fn technique(self) -> (&'static str, &'static str, &'static str) {
        match self {
            AlertKind::VerticalScan | AlertKind::HorizontalScan => {
                ("T1046", "Network Service Discovery", "enterprise")
            }
            AlertKind::SynFlood
            | AlertKind::TcpFlood
            | AlertKind::UdpFlood
            | AlertKind::IcmpFlood
            | AlertKind::VolumetricFlood => (
                "T1498.001",
                "Network Denial of Service: Direct Network Flood",
                "enterprise",
            ),
            AlertKind::Amplification => (
                "T1498.002",
                "Network Denial of Service: Reflection Amplification",
                "enterprise",
            ),
            AlertKind::BruteForce => ("T1110", "Brute Force", "enterprise"),
            AlertKind::IcsUnauthorizedClient => ("T0855", "Unauthorized Command Message", "ics"),
            AlertKind::Beaconing => ("T1071", "Application Layer Protocol", "enterprise"),
            AlertKind::Exfiltration => (
                "T1048",
                "Exfiltration Over Alternative Protocol",
                "enterprise",
            ),
            AlertKind::Indicator => ("T1071", "Application Layer Protocol", "enterprise"),
            AlertKind::SensorKeyChanged => ("T0856", "Spoof Reporting Message", "ics"),
            AlertKind::DnsTunnel => ("T1071.004", "Application Layer Protocol: DNS", "enterprise"),
            AlertKind::Dga => (
                "T1568.002",
                "Dynamic Resolution: Domain Generation Algorithms",
                "enterprise",
            ),
        }
    }
}

/// How urgent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Low.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
    /// Critical.
    Critical,
}

impl Severity {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// Parses [`Severity::as_str`].
    pub fn parse(s: &str) -> Option<Severity> {
        [
            Severity::Low,
            Severity::Medium,
            Severity::High,
            Severity::Critical,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }

    fn up(self, n: u8) -> Severity {
        let i = (self as u8).saturating_add(n).min(3);
        [
            Severity::Low,
            Severity::Medium,
            Severity::High,
            Severity::Critical,
        ][usize::from(i)]
    }

    fn down(self) -> Severity {
        let i = (self as u8).saturating_sub(1);
        [Severity::Low, Severity::Medium, Severity::High][usize::from(i.min(2))]
    }

    /// Severity of an alert of `kind` on an asset of `criticality` whose
    /// measured figure is `ratio` times its threshold: the asset's
    /// criticality, one lower for reconnaissance, one higher for ICS abuse
    /// and for ten times the threshold or more.
    pub fn of(kind: AlertKind, criticality: Criticality, ratio: f64) -> Severity {
        let base = Severity::from(criticality);
        let base = match kind {
            AlertKind::VerticalScan | AlertKind::HorizontalScan => base.down(),
            AlertKind::IcsUnauthorizedClient => base.up(1),
            _ => base,
        };
        if ratio >= 10.0 { base.up(1) } else { base }
    }
}

impl From<Criticality> for Severity {
    /// The severity matching an asset's criticality.
    fn from(c: Criticality) -> Severity {
        match c {
            Criticality::Low => Severity::Low,
            Criticality::Medium => Severity::Medium,
            Criticality::High => Severity::High,
            Criticality::Critical => Severity::Critical,
        }
    }
}

/// A source or target with what it sent or received.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Party {
    /// Address, or `address:port` for a service.
    pub addr: String,
    /// Flow records.
    pub flows: u64,
    /// Packets.
    pub packets: u64,
    /// Bytes (IP layer).
    pub bytes: u64,
}

/// One evidence flow: the sensor's id and its flow id (interim records
/// share it), with its start to find it by time.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EvidenceRef {
    /// The reporting sensor.
    pub sensor_id: String,
    /// The flow id.
    pub flow_id: u64,
    /// First packet of the record, ns since the epoch.
    pub first_ns: u64,
}

/// An alert (one incident): opened when a detector first fires, updated
/// while the attack goes on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Unique, increasing.
    pub id: u64,
    /// What was detected.
    pub kind: AlertKind,
    /// ATT&CK technique id.
    pub technique: String,
    /// ATT&CK technique name.
    pub technique_name: String,
    /// `enterprise` or `ics`.
    pub matrix: String,
    /// Severity.
    pub severity: Severity,
    /// Protected asset.
    pub asset: String,
    /// Its sector.
    pub sector: String,
    /// Its criticality.
    pub criticality: Criticality,
    /// One line for humans.
    pub summary: String,
    /// Top sources.
    pub sources: Vec<Party>,
    /// Distinct sources seen.
    pub source_count: u64,
    /// Top targets.
    pub targets: Vec<Party>,
    /// Distinct targets seen.
    pub target_count: u64,
    /// Event time of the first evidence, ns.
    pub first_seen_ns: u64,
    /// Event time of the latest evidence, ns.
    pub last_seen_ns: u64,
    /// Event time at which the detector saw its threshold crossed (the
    /// record that made the alert), ns.
    pub raised_ns: u64,
    /// The figure that crossed the threshold (the largest so far).
    pub measured: f64,
    /// The threshold.
    pub threshold: f64,
    /// Unit of both.
    pub unit: String,
    /// Times the incident was updated after it opened.
    pub updates: u64,
    /// Evidence flows (at most the configured number).
    pub evidence: Vec<EvidenceRef>,
    /// Evidence flows seen, including those beyond the kept ones.
    pub evidence_count: u64,
    /// Hex SHA-256 of the detector settings in force when it opened
    /// (empty: an alert stored before they were recorded).
    #[serde(default)]
    pub detector: String,
}

impl From<&Alert> for vigil_proto::pb::Alert {
    fn from(a: &Alert) -> Self {
        let party = |p: &Party| vigil_proto::pb::Party {
            addr: p.addr.clone(),
            flows: p.flows,
            packets: p.packets,
            bytes: p.bytes,
        };
        vigil_proto::pb::Alert {
            id: a.id,
            kind: a.kind.as_str().into(),
            technique: a.technique.clone(),
            technique_name: a.technique_name.clone(),
            matrix: a.matrix.clone(),
            severity: a.severity.as_str().into(),
            asset: a.asset.clone(),
            sector: a.sector.clone(),
            criticality: a.criticality.as_str().into(),
            summary: a.summary.clone(),
            sources: a.sources.iter().map(party).collect(),
            source_count: a.source_count,
            targets: a.targets.iter().map(party).collect(),
            target_count: a.target_count,
            first_seen_ns: a.first_seen_ns,
            last_seen_ns: a.last_seen_ns,
            raised_ns: a.raised_ns,
            measured: a.measured,
            threshold: a.threshold,
            unit: a.unit.clone(),
            updates: a.updates,
            evidence: a
                .evidence
                .iter()
                .map(|e| vigil_proto::pb::EvidenceRef {
                    sensor_id: e.sensor_id.clone(),
                    flow_id: e.flow_id,
                    first_ns: e.first_ns,
                })
                .collect(),
            evidence_count: a.evidence_count,
            opened: false,
        }
    }
}

/// An alert opened or updated by one detection round.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertUpdate {
    /// The alert as it stands, with only the evidence added by this update
    /// in `alert.evidence` (the store appends it to what it has).
    pub alert: Alert,
    /// Whether this update opened the alert.
    pub opened: bool,
}

/// Which alerts to list.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AlertQuery {
    /// Alerts whose last evidence is at or after this, ns.
    pub since_ns: Option<u64>,
    /// Alerts whose first evidence is before this, ns.
    pub until_ns: Option<u64>,
    /// Only this kind.
    pub kind: Option<AlertKind>,
    /// Only this severity or above.
    pub min_severity: Option<Severity>,
    /// Only this asset.
    pub asset: Option<String>,
    /// At most this many, newest first (0: 1000).
    pub limit: usize,
}

fn party_json(p: &vigil_proto::pb::Party) -> serde_json::Value {
    serde_json::json!({"addr": p.addr, "flows": p.flows, "packets": p.packets, "bytes": p.bytes})
}

/// The alert as one JSON object (times in RFC 3339): what `vigil alerts
/// show --format jsonl` prints and evidence bundles hold as `alert.json`.
pub fn alert_json(a: &vigil_proto::pb::Alert) -> serde_json::Value {
    serde_json::json!({
        "id": a.id,
        "kind": a.kind,
        "technique": a.technique,
        "technique_name": a.technique_name,
        "matrix": a.matrix,
        "severity": a.severity,
        "asset": a.asset,
        "sector": a.sector,
        "criticality": a.criticality,
        "summary": a.summary,
        "first_seen": vigil_proto::time::Rfc3339Nanos(a.first_seen_ns).to_string(),
        "last_seen": vigil_proto::time::Rfc3339Nanos(a.last_seen_ns).to_string(),
        "measured": a.measured,
        "threshold": a.threshold,
        "unit": a.unit,
        "sources": a.sources.iter().map(party_json).collect::<Vec<_>>(),
        "source_count": a.source_count,
        "targets": a.targets.iter().map(party_json).collect::<Vec<_>>(),
        "target_count": a.target_count,
        "updates": a.updates,
        "evidence": a.evidence.iter().map(|e| serde_json::json!({
            "sensor_id": e.sensor_id, "flow_id": e.flow_id,
            "first_seen": vigil_proto::time::Rfc3339Nanos(e.first_ns).to_string(),
        })).collect::<Vec<_>>(),
        "evidence_count": a.evidence_count,
    })
}

/// The alert as `vigil alerts show --format jsonl` prints it (and an
/// evidence bundle's `alert.json` holds it): [`alert_json`] with the
/// sensors' completeness over its window (any serializable report).
pub fn alert_show_json<C: Serialize>(
    a: &vigil_proto::pb::Alert,
    completeness: Option<&C>,
) -> serde_json::Value {
    let mut v = alert_json(a);
    if let (Some(c), Some(o)) = (completeness, v.as_object_mut()) {
        o.insert(
            "completeness".into(),
            serde_json::to_value(c).unwrap_or_default(),
        );
    }
    v
}
