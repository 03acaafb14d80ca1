//! Settings of the detectors that read the records' application metadata:
//! `[detect.ics]` (what an ICS session from a client not allowed must have
//! done to be an alert) and `[detect.dns]` (DNS tunnelling and DGA-like
//! lookups), as written and validated. Every default is documented with its
//! reason in README.md ("Detection thresholds").

use serde::{Deserialize, Serialize};
use vigil_proto::units::check_duration;

/// `[detect.ics]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct IcsSection {
    /// Alert on sessions that only discovered (BACnet who-is/i-am,
    /// EtherNet/IP list-identity, …). Default false: discovery between
    /// building-automation peers is their everyday traffic.
    pub discovery_alerts: bool,
}

/// `[detect.dns]`: lookups by protected hosts.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnsSection {
    /// The window both detectors count in. Default `10m`.
    pub window: String,
    /// Tunnelling: distinct names under one domain from one host in the
    /// window. Default 100 (0: off).
    pub tunnel_names: u32,
    /// Tunnelling: their mean length left of the domain, in characters.
    /// Default 24.
    pub tunnel_min_length: u32,
    /// DGA: distinct random-looking names answered NXDOMAIN to one host in
    /// the window. Default 20 (0: off).
    pub dga_nxdomains: u32,
    /// Domains whose names neither detector counts (with the names under
    /// them): reputation services that answer by DNS, DNS blocklists.
    /// `in-addr.arpa` and `ip6.arpa` are never counted.
    pub ignore_domains: Vec<String>,
}

impl Default for DnsSection {
    fn default() -> Self {
        DnsSection {
            window: "10m".into(),
            tunnel_names: 100,
            tunnel_min_length: 24,
            dga_nxdomains: 20,
            ignore_domains: Vec::new(),
        }
    }
}

/// DNS detection, validated.
#[derive(Clone, Debug)]
pub struct DnsConfig {
    /// Window, ns.
    pub window_ns: u64,
    /// See [`DnsSection::tunnel_names`].
    pub tunnel_names: u32,
    /// See [`DnsSection::tunnel_min_length`].
    pub tunnel_min_length: u32,
    /// See [`DnsSection::dga_nxdomains`].
    pub dga_nxdomains: u32,
    /// Ignored domains, lower case, no trailing dot.
    pub ignore_domains: Vec<String>,
}

impl DnsSection {
    /// Validates; errors name their key.
    pub fn validate(&self, errs: &mut Vec<String>) -> Option<DnsConfig> {
        let window = check_duration(errs, "collector.detect.dns.window", &self.window)?;
        if window.is_zero() {
            errs.push(format!(
                "collector.detect.dns.window = {:?}: must be longer than 0",
                self.window
            ));
        }
        if self.tunnel_names != 0 && self.tunnel_min_length == 0 {
            errs.push(
                "collector.detect.dns.tunnel_min_length = 0: at least 1 (turn tunnelling off \
                 with tunnel_names = 0)"
                    .into(),
            );
        }
        let mut ignore = Vec::new();
        for (i, d) in self.ignore_domains.iter().enumerate() {
            let t = d.trim().trim_end_matches('.').to_ascii_lowercase();
            if t.is_empty() || t.split('.').any(str::is_empty) {
                errs.push(format!(
                    "collector.detect.dns.ignore_domains[{i}] = {d:?}: expected a domain name"
                ));
            } else {
                ignore.push(t);
            }
        }
        Some(DnsConfig {
            window_ns: u64::try_from(window.as_nanos()).unwrap_or(u64::MAX),
            tunnel_names: self.tunnel_names,
            tunnel_min_length: self.tunnel_min_length,
            dga_nxdomains: self.dga_nxdomains,
            ignore_domains: ignore,
        })
    }
}
