//! Detection settings in `collector.toml`: the protected assets
//! (`[[protected]]`) and the detectors' thresholds (`[detect.*]`), as
//! written, and their validated form.
//!
//! Every threshold has a documented default; a value of 0 turns that one
//! check off. Validation reports every problem at once, each with its dotted
//! key and value.

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use vigil_proto::units::{check_duration, check_size};

use super::appconfig::{DnsConfig, DnsSection, IcsSection};
use super::indicators::{IndicatorSection, Indicators, read_indicators};
use super::nets::{Cidr, NetMap};

pub use crate::model::alert::Criticality;

/// One `[[protected]]` entry, as written.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProtectedSection {
    /// Name shown in alerts. Required, unique.
    pub name: String,
    /// Its addresses: CIDR blocks or single addresses. At least one.
    pub cidrs: Vec<String>,
    /// Sector (e.g. `water`, `power`, `health`, `telecom`).
    pub sector: String,
    /// `low`, `medium` (default), `high` or `critical`.
    pub criticality: Criticality,
    /// Services it exposes, as `tcp/502`, `udp/53` (documentation and the
    /// alert context; detectors watch the well-known ports regardless).
    pub services: Vec<String>,
    /// Hosts allowed to manage it (SSH, RDP, …): never counted as brute force.
    pub management_clients: Vec<String>,
    /// Hosts allowed to speak ICS protocols to it.
    pub ics_clients: Vec<String>,
    /// Flood thresholds for this asset's hosts, overriding `[detect.flood]`.
    pub flood: FloodSection,
}

/// Flood thresholds, per destination host, as rates over `window`
/// (FastNetMon's per-host-group thresholds). Unset: the `[detect.flood]`
/// value; 0: off.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FloodSection {
    /// Averaging window (`[detect.flood]` only). Default `2s`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// All traffic, packets/s. Default 200000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pps: Option<f64>,
    /// All traffic, megabits/s. Default 2000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mbps: Option<f64>,
    /// All traffic, new flow records/s. Default 20000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flows: Option<f64>,
    /// Half-open and rejected TCP connections (S0, REJ, RSTOS0, SH), flows/s. Default 500.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syn_flows: Option<f64>,
    /// Packets/s of those half-open and rejected connections. Default 5000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syn_pps: Option<f64>,
    /// TCP packets/s. Default 150000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_pps: Option<f64>,
    /// TCP megabits/s. Default 1500.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_mbps: Option<f64>,
    /// UDP packets/s. Default 100000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udp_pps: Option<f64>,
    /// UDP megabits/s. Default 1000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udp_mbps: Option<f64>,
    /// UDP flows/s. Default 10000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udp_flows: Option<f64>,
    /// ICMP packets/s. Default 10000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_pps: Option<f64>,
    /// ICMP megabits/s. Default 100.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_mbps: Option<f64>,
    /// All traffic to all the asset's hosts together, packets/s: floods
    /// spread thinly over many hosts (carpet bombing). Default 0 (off; the
    /// right figure depends on the asset's size).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_pps: Option<f64>,
    /// The same in megabits/s. Default 0 (off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_mbps: Option<f64>,
    /// The same in new flow records/s. Default 0 (off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_flows: Option<f64>,
}

/// `[detect]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectSection {
    /// Detection on (default) or off.
    pub enabled: bool,
    /// An incident stays open (updated, not re-raised) while its attack
    /// goes on with pauses shorter than this (event time). Default `10m`.
    pub incident_timeout: String,
    /// Evidence flow ids kept per alert. Default 10000.
    pub max_evidence: usize,
    /// Sources and targets listed per alert. Default 10.
    pub top: usize,
    /// Networks that are ours but not protected: not "external" for
    /// beaconing and exfiltration.
    pub internal_networks: Vec<String>,
    /// Scans.
    pub scan: ScanSection,
    /// Floods (defaults for every asset).
    pub flood: FloodSection,
    /// Reflection/amplification.
    pub amplification: AmplificationSection,
    /// Brute force.
    pub brute_force: BruteForceSection,
    /// Beaconing.
    pub beaconing: BeaconSection,
    /// Exfiltration.
    pub exfiltration: ExfilSection,
    /// Indicator lists.
    pub indicators: IndicatorSection,
    /// ICS sessions.
    pub ics: IcsSection,
    /// DNS tunnelling and DGA-like lookups.
    pub dns: DnsSection,
    /// Webhook for alerts.
    pub webhook: Option<WebhookSection>,
}

impl Default for DetectSection {
    fn default() -> Self {
        DetectSection {
            enabled: true,
            incident_timeout: "10m".into(),
            max_evidence: 10_000,
            top: 10,
            internal_networks: Vec::new(),
            scan: ScanSection::default(),
            flood: FloodSection::default(),
            amplification: AmplificationSection::default(),
            brute_force: BruteForceSection::default(),
            beaconing: BeaconSection::default(),
            exfiltration: ExfilSection::default(),
            indicators: IndicatorSection::default(),
            ics: IcsSection::default(),
            dns: DnsSection::default(),
            webhook: None,
        }
    }
}

/// `[detect.scan]`: probes are TCP attempts that carried no data from the
/// prober (S0, REJ, RSTOS0, SYN then RST…) and one-way UDP datagrams.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScanSection {
    /// Window of a fast scan. Default `5m`, Zeek's `Scan::scan_interval`.
    pub window: String,
    /// Distinct ports of one protected host probed (no data) by one source
    /// within `window`: a vertical scan. Default 15, Zeek's
    /// `Scan::port_scan_threshold` (nmap's `--top-ports 30` is a scan).
    pub vertical_ports: usize,
    /// Distinct protected hosts probed on one port by one source within
    /// `window`. Default 25, Zeek's `Scan::addr_scan_threshold`.
    pub horizontal_hosts: usize,
    /// Window of a slow scan. Default `6h`.
    pub slow_window: String,
    /// Distinct ports within `slow_window`. Default 200.
    pub slow_vertical_ports: usize,
    /// Distinct hosts within `slow_window`. Default 64.
    pub slow_horizontal_hosts: usize,
}

impl Default for ScanSection {
    fn default() -> Self {
        ScanSection {
            window: "5m".into(),
            vertical_ports: 15,
            horizontal_hosts: 25,
            slow_window: "6h".into(),
            slow_vertical_ports: 200,
            slow_horizontal_hosts: 64,
        }
    }
}

/// `[detect.amplification]`: responses from reflector ports arriving at a
/// protected host in flows it sent nothing in.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AmplificationSection {
    /// Window. Default `10s`.
    pub window: String,
    /// Unsolicited reflector bytes within the window. Default `256KiB`.
    pub min_bytes: String,
    /// Distinct reflectors within the window. Default 3.
    pub min_reflectors: usize,
    /// Extra UDP reflector ports beyond the built-in list.
    pub extra_ports: Vec<u16>,
}

impl Default for AmplificationSection {
    fn default() -> Self {
        AmplificationSection {
            window: "10s".into(),
            min_bytes: "256KiB".into(),
            min_reflectors: 3,
            extra_ports: Vec::new(),
        }
    }
}

/// `[detect.brute_force]`: short or failed sessions to remote-access and
/// authentication services.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BruteForceSection {
    /// Window. Default `60s`.
    pub window: String,
    /// Sessions from one source to one service of one host. Default 20.
    pub sessions: usize,
    /// A session at most this long counts as short. Default `30s`.
    pub max_duration: String,
    /// … and at most this many bytes (both directions). Default `16KiB`.
    pub max_bytes: String,
    /// Extra TCP service ports beyond the built-in list.
    pub extra_ports: Vec<u16>,
}

impl Default for BruteForceSection {
    fn default() -> Self {
        BruteForceSection {
            window: "60s".into(),
            sessions: 20,
            max_duration: "30s".into(),
            max_bytes: "16KiB".into(),
            extra_ports: Vec::new(),
        }
    }
}

/// `[detect.beaconing]`: regular connections from a protected host to one
/// external host and port.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BeaconSection {
    /// Connections needed. Default 12.
    pub min_connections: usize,
    /// Shortest mean interval considered. Default `10s`.
    pub min_interval: String,
    /// Longest mean interval considered. Default `2h`.
    pub max_interval: String,
    /// Largest coefficient of variation of the intervals (jitter). Default 0.1.
    pub max_jitter: f64,
    /// Destination ports never considered (NTP, DNS by default).
    pub ignore_ports: Vec<u16>,
    /// Destinations never considered (update servers, telemetry you trust).
    pub ignore_destinations: Vec<String>,
}

impl Default for BeaconSection {
    fn default() -> Self {
        BeaconSection {
            min_connections: 12,
            min_interval: "10s".into(),
            max_interval: "2h".into(),
            max_jitter: 0.1,
            ignore_ports: vec![53, 123],
            ignore_destinations: Vec::new(),
        }
    }
}

/// `[detect.exfiltration]`: bytes from a protected host to one external host.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExfilSection {
    /// Window. Default `1h`.
    pub window: String,
    /// Bytes sent within the window. Default `1GiB`.
    pub bytes: String,
    /// Destinations never considered (off-site backup, CDN you trust).
    pub ignore_destinations: Vec<String>,
}

impl Default for ExfilSection {
    fn default() -> Self {
        ExfilSection {
            window: "1h".into(),
            bytes: "1GiB".into(),
            ignore_destinations: Vec::new(),
        }
    }
}

/// `[detect.webhook]`: alerts POSTed as JSON.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSection {
    /// `http://HOST[:PORT]/PATH`.
    pub url: String,
    /// Attempts per alert. Default 5.
    #[serde(default = "five")]
    pub attempts: u32,
    /// Per-attempt timeout. Default `5s`.
    #[serde(default = "five_s")]
    pub timeout: String,
}

fn five() -> u32 {
    5
}

fn five_s() -> String {
    "5s".into()
}

/// Flood thresholds, resolved (0: off). Rates per second over the window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FloodThresholds {
    /// `t[class][metric]`: classes all, tcp, syn, udp, icmp; metrics pps, bits/s, flows/s.
    pub t: [[f64; 3]; 5],
    /// All traffic to the whole asset: pps, bits/s, flows/s.
    pub total: [f64; 3],
}

/// Flood classes, in the order of [`FloodThresholds::t`].
pub const FLOOD_CLASSES: [&str; 5] = ["all", "tcp", "syn", "udp", "icmp"];
/// Flood metrics, in the order of [`FloodThresholds::t`].
pub const FLOOD_METRICS: [&str; 3] = ["packets/s", "bits/s", "flows/s"];

impl FloodSection {
    pub(crate) fn defaults() -> FloodSection {
        FloodSection {
            window: Some("2s".into()),
            pps: Some(200_000.0),
            mbps: Some(2000.0),
            flows: Some(20_000.0),
            syn_flows: Some(500.0),
            syn_pps: Some(5000.0),
            tcp_pps: Some(150_000.0),
            tcp_mbps: Some(1500.0),
            udp_pps: Some(100_000.0),
            udp_mbps: Some(1000.0),
            udp_flows: Some(10_000.0),
            icmp_pps: Some(10_000.0),
            icmp_mbps: Some(100.0),
            total_pps: Some(0.0),
            total_mbps: Some(0.0),
            total_flows: Some(0.0),
        }
    }

    /// `self` over `base`.
    fn over(&self, base: &FloodSection) -> FloodSection {
        let o = |a: Option<f64>, b: Option<f64>| a.or(b);
        FloodSection {
            window: self.window.clone().or_else(|| base.window.clone()),
            pps: o(self.pps, base.pps),
            mbps: o(self.mbps, base.mbps),
            flows: o(self.flows, base.flows),
            syn_flows: o(self.syn_flows, base.syn_flows),
            syn_pps: o(self.syn_pps, base.syn_pps),
            tcp_pps: o(self.tcp_pps, base.tcp_pps),
            tcp_mbps: o(self.tcp_mbps, base.tcp_mbps),
            udp_pps: o(self.udp_pps, base.udp_pps),
            udp_mbps: o(self.udp_mbps, base.udp_mbps),
            udp_flows: o(self.udp_flows, base.udp_flows),
            icmp_pps: o(self.icmp_pps, base.icmp_pps),
            icmp_mbps: o(self.icmp_mbps, base.icmp_mbps),
            total_pps: o(self.total_pps, base.total_pps),
            total_mbps: o(self.total_mbps, base.total_mbps),
            total_flows: o(self.total_flows, base.total_flows),
        }
    }

    fn resolve(&self, key: &str, errs: &mut Vec<String>) -> FloodThresholds {
        let mut t = [[0.0; 6]; 6];
        let mut set = |name: &str, v: Option<f64>, class: usize, metric: usize, scale: f64| {
            let v = v.unwrap_or(0.0);
            if !v.is_finite() || v < 0.0 {
                errs.push(format!("{key}.{name} = {v}: must be a number ≥ 0 (0: off)"));
            } else {
                t[class][metric] = v * scale;
            }
        };
        set("total_pps", self.total_pps, 5, 0, 1.0);
        set("total_mbps", self.total_mbps, 5, 1, 1e6);
        set("total_flows", self.total_flows, 5, 2, 1.0);
        set("pps", self.pps, 0, 0, 1.0);
        set("mbps", self.mbps, 0, 1, 1e6);
        set("flows", self.flows, 0, 2, 1.0);
        set("tcp_pps", self.tcp_pps, 1, 0, 1.0);
        set("tcp_mbps", self.tcp_mbps, 1, 1, 1e6);
        set("syn_pps", self.syn_pps, 2, 0, 1.0);
        set("syn_flows", self.syn_flows, 2, 2, 1.0);
        set("udp_pps", self.udp_pps, 3, 0, 1.0);
        set("udp_mbps", self.udp_mbps, 3, 1, 1e6);
        set("udp_flows", self.udp_flows, 3, 2, 1.0);
        set("icmp_pps", self.icmp_pps, 4, 0, 1.0);
        set("icmp_mbps", self.icmp_mbps, 4, 1, 1e6);
        let mut out = FloodThresholds {
            t: [[0.0; 3]; 5],
            total: [t[5][0], t[5][1], t[5][2]],
        };
        for (o, i) in out.t.iter_mut().zip(t) {
            o.copy_from_slice(&i[..3]);
        }
        out
    }
}

/// A protected asset, validated.
#[derive(Clone, Debug)]
pub struct Asset {
    /// Name.
    pub name: String,
    /// Its blocks.
    pub cidrs: Vec<Cidr>,
    /// Sector.
    pub sector: String,
    /// Criticality.
    pub criticality: Criticality,
    /// Exposed services as written.
    pub services: Vec<String>,
    /// Allowed management clients.
    pub management_clients: NetMap<()>,
    /// Allowed ICS clients.
    pub ics_clients: NetMap<()>,
    /// Flood thresholds of its hosts.
    pub flood: FloodThresholds,
}

/// Detection, validated.
#[derive(Clone, Debug)]
pub struct DetectConfig {
    /// The assets; [`DetectConfig::assets_by_net`] indexes them.
    pub assets: Vec<Asset>,
    /// Address → asset index.
    pub assets_by_net: NetMap<usize>,
    /// Internal, unprotected networks.
    pub internal: NetMap<()>,
    /// Incident timeout, ns.
    pub incident_timeout_ns: u64,
    /// Evidence kept per alert.
    pub max_evidence: usize,
    /// Sources/targets listed per alert.
    pub top: usize,
    /// Scan settings.
    pub scan: ScanConfig,
    /// Flood window, ns.
    pub flood_window_ns: u64,
    /// Amplification.
    pub amplification: AmpConfig,
    /// Brute force.
    pub brute: BruteConfig,
    /// Beaconing.
    pub beacon: BeaconConfig,
    /// Exfiltration.
    pub exfil: ExfilConfig,
    /// The indicator lists.
    pub indicators: Indicators,
    /// ICS sessions.
    pub ics: IcsSection,
    /// DNS tunnelling and DGA.
    pub dns: DnsConfig,
    /// Every setting and asset definition this was made from, as JSON
    /// (with the software version): what evidence bundles show as the
    /// detector in force.
    pub settings: String,
    /// Hex SHA-256 of `settings`; every alert names it.
    pub settings_hash: String,
}

/// Scan settings.
#[derive(Clone, Copy, Debug)]
pub struct ScanConfig {
    /// Fast window, ns.
    pub window_ns: u64,
    /// Ports (vertical).
    pub vertical_ports: usize,
    /// Hosts (horizontal).
    pub horizontal_hosts: usize,
    /// Slow window, ns.
    pub slow_window_ns: u64,
    /// Ports over the slow window.
    pub slow_vertical_ports: usize,
    /// Hosts over the slow window.
    pub slow_horizontal_hosts: usize,
}

/// Amplification settings.
#[derive(Clone, Debug)]
pub struct AmpConfig {
    /// Window, ns.
    pub window_ns: u64,
    /// Bytes.
    pub min_bytes: u64,
    /// Reflectors.
    pub min_reflectors: usize,
    /// Extra ports.
    pub extra_ports: Vec<u16>,
}

/// Brute-force settings.
#[derive(Clone, Debug)]
pub struct BruteConfig {
    /// Window, ns.
    pub window_ns: u64,
    /// Sessions.
    pub sessions: usize,
    /// Short: duration, ns.
    pub max_duration_ns: u64,
    /// Short: bytes.
    pub max_bytes: u64,
    /// Extra ports.
    pub extra_ports: Vec<u16>,
}

/// Beaconing settings.
#[derive(Clone, Debug)]
pub struct BeaconConfig {
    /// Connections.
    pub min_connections: usize,
    /// Interval bounds, ns.
    pub min_interval_ns: u64,
    /// Interval bounds, ns.
    pub max_interval_ns: u64,
    /// Coefficient of variation.
    pub max_jitter: f64,
    /// Ports ignored.
    pub ignore_ports: Vec<u16>,
    /// Destinations ignored.
    pub ignore: NetMap<()>,
}

/// Exfiltration settings.
#[derive(Clone, Debug)]
pub struct ExfilConfig {
    /// Window, ns.
    pub window_ns: u64,
    /// Bytes.
    pub bytes: u64,
    /// Destinations ignored.
    pub ignore: NetMap<()>,
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn nets(errs: &mut Vec<String>, key: &str, list: &[String]) -> (NetMap<()>, Vec<Cidr>) {
    let mut m = NetMap::new();
    let mut v = Vec::new();
    for (i, s) in list.iter().enumerate() {
        match Cidr::parse(s) {
            Ok(c) => {
                m.insert(c, ());
                v.push(c);
            }
            Err(e) => errs.push(format!("{key}[{i}] = {s:?}: {e}")),
        }
    }
    (m, v)
}

impl DetectSection {
    /// Validates this section and the assets; every error names its key.
    pub fn validate(&self, protected: &[ProtectedSection]) -> Result<DetectConfig, Vec<String>> {
        let mut errs = Vec::new();
        let k = |s: &str| format!("collector.detect.{s}");
        let mut dur = |key: &str, v: &str| check_duration(&mut errs, &k(key), v).map(ns);
        let incident = dur("incident_timeout", &self.incident_timeout);
        let scan_w = dur("scan.window", &self.scan.window);
        let scan_slow = dur("scan.slow_window", &self.scan.slow_window);
        let amp_w = dur("amplification.window", &self.amplification.window);
        let brute_w = dur("brute_force.window", &self.brute_force.window);
        let brute_d = dur("brute_force.max_duration", &self.brute_force.max_duration);
        let beacon_min = dur("beaconing.min_interval", &self.beaconing.min_interval);
        let beacon_max = dur("beaconing.max_interval", &self.beaconing.max_interval);
        let exfil_w = dur("exfiltration.window", &self.exfiltration.window);
        let flood_base = self.flood.over(&FloodSection::defaults());
        let flood_w = flood_base
            .window
            .as_deref()
            .and_then(|w| dur("flood.window", w));
        if let Some(w) = &self.webhook {
            dur("webhook.timeout", &w.timeout);
        }
        let mut size = |key: &str, v: &str| check_size(&mut errs, &k(key), v, false);
        let amp_bytes = size("amplification.min_bytes", &self.amplification.min_bytes);
        let brute_bytes = size("brute_force.max_bytes", &self.brute_force.max_bytes);
        let exfil_bytes = size("exfiltration.bytes", &self.exfiltration.bytes);
        if let (Some(a), Some(b)) = (scan_w, scan_slow)
            && b < a
        {
            errs.push(format!(
                "collector.detect.scan.slow_window = {:?}: must not be shorter than scan.window",
                self.scan.slow_window
            ));
        }
        if let (Some(a), Some(b)) = (beacon_min, beacon_max)
            && b <= a
        {
            errs.push(format!(
                "collector.detect.beaconing.max_interval = {:?}: must be longer than min_interval",
                self.beaconing.max_interval
            ));
        }
        if !(self.beaconing.max_jitter.is_finite() && self.beaconing.max_jitter >= 0.0) {
            errs.push(format!(
                "collector.detect.beaconing.max_jitter = {}: must be a number ≥ 0",
                self.beaconing.max_jitter
            ));
        }
        if self.beaconing.min_connections != 0 && self.beaconing.min_connections < 3 {
            errs.push(format!(
                "collector.detect.beaconing.min_connections = {}: at least 3 (or 0: off)",
                self.beaconing.min_connections
            ));
        }
        if self.max_evidence == 0 {
            errs.push("collector.detect.max_evidence = 0: must be at least 1".into());
        }
        if self.top == 0 {
            errs.push("collector.detect.top = 0: must be at least 1".into());
        }
        if let Some(w) = &self.webhook
            && !w.url.starts_with("http://")
        {
            errs.push(format!(
                "collector.detect.webhook.url = {:?}: expected http://HOST[:PORT]/PATH",
                w.url
            ));
        }
        let flood_defaults = flood_base.resolve("collector.detect.flood", &mut errs);
        let (internal, _) = nets(
            &mut errs,
            "collector.detect.internal_networks",
            &self.internal_networks,
        );
        let (beacon_ignore, _) = nets(
            &mut errs,
            "collector.detect.beaconing.ignore_destinations",
            &self.beaconing.ignore_destinations,
        );
        let (exfil_ignore, _) = nets(
            &mut errs,
            "collector.detect.exfiltration.ignore_destinations",
            &self.exfiltration.ignore_destinations,
        );
        let mut assets = Vec::new();
        let mut by_net = NetMap::new();
        let mut names = std::collections::HashSet::new();
        for (i, p) in protected.iter().enumerate() {
            let key = format!("collector.protected[{i}]");
            if p.name.trim().is_empty() {
                errs.push(format!("{key}.name: required"));
            } else if !names.insert(p.name.clone()) {
                errs.push(format!("{key}.name = {:?}: used twice", p.name));
            }
            if p.cidrs.is_empty() {
                errs.push(format!("{key}.cidrs: at least one block or address"));
            }
            let (_, cidrs) = nets(&mut errs, &format!("{key}.cidrs"), &p.cidrs);
            for c in &cidrs {
                if let Some(&other) = by_net.get(c.addr)
                    && assets
                        .get(other)
                        .is_some_and(|a: &Asset| a.cidrs.contains(c))
                {
                    errs.push(format!("{key}.cidrs: {c} is already in another asset"));
                }
            }
            for (j, s) in p.services.iter().enumerate() {
                let ok = s.split_once('/').is_some_and(|(proto, port)| {
                    matches!(proto, "tcp" | "udp" | "sctp") && port.parse::<u16>().is_ok()
                });
                if !ok {
                    errs.push(format!(
                        "{key}.services[{j}] = {s:?}: expected PROTO/PORT, e.g. tcp/502"
                    ));
                }
            }
            let (mgmt, _) = nets(
                &mut errs,
                &format!("{key}.management_clients"),
                &p.management_clients,
            );
            let (ics, _) = nets(&mut errs, &format!("{key}.ics_clients"), &p.ics_clients);
            if p.flood.window.is_some() {
                errs.push(format!(
                    "{key}.flood.window: the window is global (collector.detect.flood.window)"
                ));
            }
            // The asset's own values are checked here; inherited ones were
            // checked (and named) under collector.detect.flood.
            p.flood.resolve(&format!("{key}.flood"), &mut errs);
            let flood = p.flood.over(&flood_base).resolve("", &mut Vec::new());
            let idx = assets.len();
            for c in &cidrs {
                by_net.insert(*c, idx);
            }
            assets.push(Asset {
                name: p.name.clone(),
                cidrs,
                sector: p.sector.clone(),
                criticality: p.criticality,
                services: p.services.clone(),
                management_clients: mgmt,
                ics_clients: ics,
                flood,
            });
        }
        let indicators = Indicators::new(read_indicators(&self.indicators.files, &mut errs));
        let dns = self.dns.validate(&mut errs);
        let _ = flood_defaults;
        if !errs.is_empty() {
            return Err(errs);
        }
        let (
            Some(incident),
            Some(scan_w),
            Some(scan_slow),
            Some(amp_w),
            Some(brute_w),
            Some(brute_d),
            Some(beacon_min),
            Some(beacon_max),
            Some(exfil_w),
            Some(flood_w),
            Some(amp_bytes),
            Some(brute_bytes),
            Some(exfil_bytes),
        ) = (
            incident,
            scan_w,
            scan_slow,
            amp_w,
            brute_w,
            brute_d,
            beacon_min,
            beacon_max,
            exfil_w,
            flood_w,
            amp_bytes,
            brute_bytes,
            exfil_bytes,
        )
        else {
            return Err(vec!["collector.detect: incomplete configuration".into()]);
        };
        let Some(dns) = dns else {
            return Err(vec![
                "collector.detect.dns: incomplete configuration".into(),
            ]);
        };
        let settings = serde_json::json!({
            "software": concat!("vigil ", env!("CARGO_PKG_VERSION")),
            "detect": self,
            "protected": protected,
        })
        .to_string();
        Ok(DetectConfig {
            assets,
            assets_by_net: by_net,
            internal,
            incident_timeout_ns: incident,
            max_evidence: self.max_evidence,
            top: self.top,
            scan: ScanConfig {
                window_ns: scan_w,
                vertical_ports: self.scan.vertical_ports,
                horizontal_hosts: self.scan.horizontal_hosts,
                slow_window_ns: scan_slow,
                slow_vertical_ports: self.scan.slow_vertical_ports,
                slow_horizontal_hosts: self.scan.slow_horizontal_hosts,
            },
            flood_window_ns: flood_w,
            amplification: AmpConfig {
                window_ns: amp_w,
                min_bytes: amp_bytes,
                min_reflectors: self.amplification.min_reflectors,
                extra_ports: self.amplification.extra_ports.clone(),
            },
            brute: BruteConfig {
                window_ns: brute_w,
                sessions: self.brute_force.sessions,
                max_duration_ns: brute_d,
                max_bytes: brute_bytes,
                extra_ports: self.brute_force.extra_ports.clone(),
            },
            beacon: BeaconConfig {
                min_connections: self.beaconing.min_connections,
                min_interval_ns: beacon_min,
                max_interval_ns: beacon_max,
                max_jitter: self.beaconing.max_jitter,
                ignore_ports: self.beaconing.ignore_ports.clone(),
                ignore: beacon_ignore,
            },
            exfil: ExfilConfig {
                window_ns: exfil_w,
                bytes: exfil_bytes,
                ignore: exfil_ignore,
            },
            indicators,
            ics: self.ics.clone(),
            dns,
            settings_hash: vigil_proto::attest::hex(&Sha256::digest(settings.as_bytes())),
            settings,
        })
    }
}

impl DetectConfig {
    /// The asset holding `ip`.
    #[inline]
    pub fn asset_of(&self, ip: IpAddr) -> Option<usize> {
        self.assets_by_net.get(ip).copied()
    }

    /// How far back the windows are rebuilt from stored flows at start:
    /// the incident timeout, plus the longest window of the floods, fast
    /// scans, amplification and brute force (11 min by default). Slow
    /// scans', exfiltration's and beaconing's windows of hours start again
    /// from this much.
    pub fn rebuild_lookback(&self) -> std::time::Duration {
        let windows = [
            self.flood_window_ns,
            self.scan.window_ns,
            self.amplification.window_ns,
            self.brute.window_ns,
        ];
        let longest = windows.into_iter().max().unwrap_or(0);
        std::time::Duration::from_nanos(self.incident_timeout_ns.saturating_add(longest))
    }

    /// Defaults with these assets (for tests and the demo).
    pub fn with_assets(protected: &[ProtectedSection]) -> Result<DetectConfig, Vec<String>> {
        DetectSection::default().validate(protected)
    }
}
