//! `[share]` and `[[share.partners]]`: who the operator is, and what each
//! partner may see (which alerts, marked how, anonymized how, pushed where).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vigil_proto::units::parse_duration;

use super::cryptopan::CryptoPan;
use crate::detect::config::ProtectedSection;
use crate::detect::nets::{Cidr, NetMap};
use crate::model::alert::{AlertKind, Severity};

/// `[share]`, as written.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShareSection {
    /// The operator's organisation: the STIX `identity` every shared object
    /// is created by. Required to share with partners.
    pub organization: String,
    /// Its sector, a STIX industry sector (`water`, `utilities`, `energy`,
    /// `healthcare`, `telecommunications`, …).
    pub sector: String,
    /// Who partners write to (an address, a phone number).
    pub contact: String,
    /// TLP 2.0 marking of exports made without `--partner`. Default `amber`.
    pub tlp: String,
    /// Observables (addresses and traffic) per alert. Default 100.
    pub max_observations: usize,
    /// Longest pause between two attempts to reach a partner that fails.
    /// Default `10m`.
    pub max_backoff: String,
    /// Per-request timeout to partners' TAXII servers. Default `30s`.
    pub timeout: String,
    /// An alert that goes on is shared again at most this often (its
    /// updates in between make one new version). Default `1m`.
    pub update_interval: String,
    /// The partners (`[[share.partners]]`).
    pub partners: Vec<PartnerSection>,
}

impl Default for ShareSection {
    fn default() -> Self {
        ShareSection {
            organization: String::new(),
            sector: String::new(),
            contact: String::new(),
            tlp: "amber".into(),
            max_observations: 100,
            max_backoff: "10m".into(),
            timeout: "30s".into(),
            update_interval: "1m".into(),
            partners: Vec::new(),
        }
    }
}

/// `[[share.partners]]`, as written.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PartnerSection {
    /// Its name (`--partner NAME`): 1-64 of A-Z a-z 0-9 . _ -.
    pub name: String,
    /// Its TAXII 2.1 API root (`https://…/api1/`); empty: export only, no
    /// push.
    pub api_root: String,
    /// The collection to add objects to (its id).
    pub collection: String,
    /// HTTP basic authentication: the user…
    pub username: String,
    /// …and a file holding the password (its first line).
    pub password_file: Option<PathBuf>,
    /// TLS client certificate (PEM), with `client_key`.
    pub client_cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub client_key: Option<PathBuf>,
    /// CA certificates (PEM) to trust for the server, instead of the
    /// system's.
    pub ca: Option<PathBuf>,
    /// TLP 2.0: `clear`, `green`, `amber` (default), `amber+strict`, `red`.
    pub tlp: String,
    /// Least severity shared. Default `medium`.
    pub min_severity: String,
    /// Alert kinds shared; empty: every kind but `sensor_key_changed`.
    pub kinds: Vec<String>,
    /// Protected assets whose alerts are shared; empty: every one.
    pub assets: Vec<String>,
    /// Time an alert is held before it is shared. Default `0s`.
    pub delay: String,
    /// `none` (default) or `cryptopan:KEYFILE`.
    pub anonymize: String,
    /// The networks anonymized; empty: the protected assets' and
    /// `[detect] internal_networks`.
    pub anonymize_networks: Vec<String>,
    /// Observables per alert, instead of `[share] max_observations`.
    pub max_observations: Option<usize>,
}

/// TLP 2.0 levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Tlp {
    /// TLP:CLEAR.
    Clear,
    /// TLP:GREEN.
    Green,
    /// TLP:AMBER.
    Amber,
    /// TLP:AMBER+STRICT.
    AmberStrict,
    /// TLP:RED.
    Red,
}

impl Tlp {
    /// Every level.
    pub const ALL: [Tlp; 5] = [
        Tlp::Clear,
        Tlp::Green,
        Tlp::Amber,
        Tlp::AmberStrict,
        Tlp::Red,
    ];

    /// The level as TLP 2.0 writes it, lower case (`amber+strict`).
    pub fn as_str(self) -> &'static str {
        match self {
            Tlp::Clear => "clear",
            Tlp::Green => "green",
            Tlp::Amber => "amber",
            Tlp::AmberStrict => "amber+strict",
            Tlp::Red => "red",
        }
    }

    /// Parses [`Tlp::as_str`] (any case, with or without `TLP:`).
    pub fn parse(s: &str) -> Option<Tlp> {
        let l = s.trim().to_ascii_lowercase();
        let l = l.strip_prefix("tlp:").unwrap_or(&l);
        Tlp::ALL.into_iter().find(|t| t.as_str() == l)
    }
}

/// How a partner authenticates to its TAXII server.
#[derive(Clone, Debug, Default)]
pub struct Auth {
    /// HTTP basic: user and password.
    pub basic: Option<(String, String)>,
    /// TLS client certificate and key files.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// CA file for the server.
    pub ca: Option<PathBuf>,
}

/// Which addresses a partner sees anonymized, and with which key.
#[derive(Clone, Debug)]
pub struct Anonymizer {
    /// The key.
    pub pan: CryptoPan,
    /// The networks whose addresses are replaced.
    pub hide: NetMap<()>,
    /// The same networks, as written (for the record in what is shared).
    pub networks: Vec<Cidr>,
}

impl Anonymizer {
    /// `ip` as the partner sees it.
    pub fn ip(&self, ip: std::net::IpAddr) -> std::net::IpAddr {
        if self.hide.contains(ip) {
            self.pan.ip(ip)
        } else {
            ip
        }
    }

    /// Whether `ip` is one of those hidden.
    pub fn hides(&self, ip: std::net::IpAddr) -> bool {
        self.hide.contains(ip)
    }
}

/// A partner, validated.
#[derive(Clone, Debug)]
pub struct Partner {
    /// Name.
    pub name: String,
    /// TAXII 2.1 API root, ending in `/`; `None`: export only.
    pub api_root: Option<String>,
    /// Collection id.
    pub collection: String,
    /// Credentials.
    pub auth: Auth,
    /// Its marking.
    pub tlp: Tlp,
    /// Least severity shared.
    pub min_severity: Severity,
    /// Kinds shared (empty: all but `sensor_key_changed`).
    pub kinds: Vec<AlertKind>,
    /// Assets shared (empty: all).
    pub assets: Vec<String>,
    /// Hold time.
    pub delay: Duration,
    /// Anonymization, if any.
    pub anonymize: Option<Anonymizer>,
    /// Observables per alert.
    pub max_observations: usize,
}

impl Partner {
    /// Whether an alert of `kind`, `severity`, on `asset` is shared with it.
    pub fn wants(&self, kind: AlertKind, severity: Severity, asset: &str) -> bool {
        let kind_ok = if self.kinds.is_empty() {
            kind != AlertKind::SensorKeyChanged
        } else {
            self.kinds.contains(&kind)
        };
        kind_ok
            && severity >= self.min_severity
            && (self.assets.is_empty() || self.assets.iter().any(|a| a == asset))
    }
}

/// The operator, as the STIX `identity` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Operator {
    /// Organisation.
    pub organization: String,
    /// Sector.
    pub sector: String,
    /// Contact.
    pub contact: String,
}

/// `[share]`, validated.
#[derive(Clone, Debug)]
pub struct ShareConfig {
    /// Who shares.
    pub operator: Operator,
    /// Marking without a partner.
    pub tlp: Tlp,
    /// Observables per alert without a partner.
    pub max_observations: usize,
    /// Longest retry pause.
    pub max_backoff: Duration,
    /// Request timeout.
    pub timeout: Duration,
    /// Least time between two versions of an alert.
    pub update_interval: Duration,
    /// Partners.
    pub partners: Vec<Partner>,
    /// The protected assets' networks and `[detect] internal_networks`:
    /// an `indicator` alert's attacker is its party outside them.
    pub ours: NetMap<()>,
}

impl ShareConfig {
    /// The partner called `name`.
    pub fn partner(&self, name: &str) -> Option<&Partner> {
        self.partners.iter().find(|p| p.name == name)
    }

    /// The names of the partners pushed to (those with an API root).
    pub fn pushed(&self) -> Vec<String> {
        self.partners
            .iter()
            .filter(|p| p.api_root.is_some())
            .map(|p| p.name.clone())
            .collect()
    }
}

fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl ShareSection {
    /// Checks every value, naming each bad one by its dotted key (pushed
    /// to `errs`); `protected` and `internal` are the assets and
    /// `[detect] internal_networks` (the default anonymized networks).
    pub fn validate(
        &self,
        protected: &[ProtectedSection],
        internal: &[String],
        errs: &mut Vec<String>,
    ) -> Option<ShareConfig> {
        let n0 = errs.len();
        let k = |s: &str| format!("collector.share.{s}");
        let tlp = Tlp::parse(&self.tlp).or_else(|| {
            errs.push(format!(
                "{} = {:?}: expected clear, green, amber, amber+strict or red",
                k("tlp"),
                self.tlp
            ));
            None
        });
        let mut dur = |key: &str, v: &str| match parse_duration(v) {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                errs.push(format!("{} = {v:?}: must be greater than zero", k(key)));
                None
            }
            Err(e) => {
                errs.push(format!("{}: {e}", k(key)));
                None
            }
        };
        let max_backoff = dur("max_backoff", &self.max_backoff);
        let timeout = dur("timeout", &self.timeout);
        let update_interval = dur("update_interval", &self.update_interval);
        if !(1..=10_000).contains(&self.max_observations) {
            errs.push(format!(
                "{} = {}: expected 1 to 10000",
                k("max_observations"),
                self.max_observations
            ));
        }
        if !self.partners.is_empty() && self.organization.trim().is_empty() {
            errs.push(format!(
                "{}: required to share with partners (the identity they see)",
                k("organization")
            ));
        }
        let mut partners = Vec::new();
        for (i, p) in self.partners.iter().enumerate() {
            let pk = |s: &str| format!("collector.share.partners[{i}].{s}");
            if !valid_name(&p.name) {
                errs.push(format!(
                    "{} = {:?}: expected 1-64 characters of A-Z a-z 0-9 . _ -",
                    pk("name"),
                    p.name
                ));
            }
            if self.partners[..i].iter().any(|o| o.name == p.name) {
                errs.push(format!("{} = {:?}: listed twice", pk("name"), p.name));
            }
            if let Some(mut x) = p.validate(&pk, protected, internal, errs) {
                x.max_observations = p.max_observations.unwrap_or(self.max_observations);
                partners.push(x);
            }
        }
        if errs.len() > n0 {
            return None;
        }
        let mut ours = NetMap::new();
        for c in protected
            .iter()
            .flat_map(|p| p.cidrs.iter())
            .chain(internal)
        {
            // Bad blocks are [detect]'s to name.
            if let Ok(n) = Cidr::parse(c) {
                ours.insert(n, ());
            }
        }
        Some(ShareConfig {
            ours,
            operator: Operator {
                organization: self.organization.trim().to_string(),
                sector: self.sector.trim().to_string(),
                contact: self.contact.trim().to_string(),
            },
            tlp: tlp?,
            max_observations: self.max_observations,
            max_backoff: max_backoff?,
            timeout: timeout?,
            update_interval: update_interval?,
            partners,
        })
    }
}

impl PartnerSection {
    fn validate(
        &self,
        pk: &dyn Fn(&str) -> String,
        protected: &[ProtectedSection],
        internal: &[String],
        errs: &mut Vec<String>,
    ) -> Option<Partner> {
        let n0 = errs.len();
        let api_root = if self.api_root.is_empty() {
            None
        } else if !(self.api_root.starts_with("https://") || self.api_root.starts_with("http://"))
            || self.api_root.len() < 10
        {
            errs.push(format!(
                "{} = {:?}: expected the TAXII 2.1 API root's URL, https://HOST[:PORT]/PATH/",
                pk("api_root"),
                self.api_root
            ));
            None
        } else {
            let mut r = self.api_root.clone();
            if !r.ends_with('/') {
                r.push('/');
            }
            Some(r)
        };
        if api_root.is_some()
            && (self.collection.is_empty()
                || self.collection.len() > 128
                || self
                    .collection
                    .chars()
                    .any(|c| c == '/' || c == '?' || c == '#' || c.is_whitespace()))
        {
            errs.push(format!(
                "{} = {:?}: expected the collection's id (e.g. a UUID)",
                pk("collection"),
                self.collection
            ));
        }
        let password = match (&self.username.is_empty(), &self.password_file) {
            (true, None) => None,
            (false, Some(f)) => match std::fs::read_to_string(f) {
                Ok(t) => Some(t.lines().next().unwrap_or("").to_string()),
                Err(e) => {
                    errs.push(format!(
                        "{} = {:?}: cannot read it: {e}",
                        pk("password_file"),
                        f.display()
                    ));
                    None
                }
            },
            (false, None) => {
                errs.push(format!(
                    "{}: username needs password_file",
                    pk("password_file")
                ));
                None
            }
            (true, Some(_)) => {
                errs.push(format!("{}: password_file needs username", pk("username")));
                None
            }
        };
        let file = |key: &str, f: &Option<PathBuf>, errs: &mut Vec<String>| {
            if let Some(f) = f
                && !f.is_file()
            {
                errs.push(format!("{} = {:?}: no such file", pk(key), f.display()));
            }
        };
        file("client_cert", &self.client_cert, errs);
        file("client_key", &self.client_key, errs);
        file("ca", &self.ca, errs);
        let client_cert = match (&self.client_cert, &self.client_key) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            (None, None) => None,
            _ => {
                errs.push(format!(
                    "{}: client_cert and client_key go together",
                    pk("client_key")
                ));
                None
            }
        };
        if (client_cert.is_some() || self.ca.is_some())
            && api_root
                .as_deref()
                .is_some_and(|r| r.starts_with("http://"))
        {
            errs.push(format!(
                "{}: client_cert, client_key and ca need an https:// api_root",
                pk("api_root")
            ));
        }
        let tlp_text = if self.tlp.is_empty() {
            "amber"
        } else {
            &self.tlp
        };
        let tlp = Tlp::parse(tlp_text);
        if tlp.is_none() {
            errs.push(format!(
                "{} = {:?}: expected clear, green, amber, amber+strict or red",
                pk("tlp"),
                self.tlp
            ));
        }
        let sev_text = if self.min_severity.is_empty() {
            "medium"
        } else {
            &self.min_severity
        };
        let min_severity = Severity::parse(sev_text);
        if min_severity.is_none() {
            errs.push(format!(
                "{} = {:?}: expected low, medium, high or critical",
                pk("min_severity"),
                self.min_severity
            ));
        }
        let mut kinds = Vec::new();
        for (j, s) in self.kinds.iter().enumerate() {
            match AlertKind::parse(s) {
                Some(kd) => kinds.push(kd),
                None => {
                    let all: Vec<&str> = AlertKind::ALL.iter().map(|k| k.as_str()).collect();
                    errs.push(format!(
                        "{} = {s:?}: expected one of {}",
                        pk(&format!("kinds[{j}]")),
                        all.join(", ")
                    ));
                }
            }
        }
        for (j, a) in self.assets.iter().enumerate() {
            if !protected.iter().any(|p| &p.name == a) {
                errs.push(format!(
                    "{} = {a:?}: no [[protected]] asset of that name",
                    pk(&format!("assets[{j}]"))
                ));
            }
        }
        let delay = match parse_duration(if self.delay.is_empty() {
            "0s"
        } else {
            &self.delay
        }) {
            Ok(d) => Some(d),
            Err(e) => {
                errs.push(format!("{}: {e}", pk("delay")));
                None
            }
        };
        let anonymize = match self.anonymize.as_str() {
            "" | "none" => {
                if !self.anonymize_networks.is_empty() {
                    errs.push(format!(
                        "{}: anonymize_networks needs anonymize = \"cryptopan:KEYFILE\"",
                        pk("anonymize_networks")
                    ));
                }
                None
            }
            s => match s.strip_prefix("cryptopan:") {
                Some(path) => match CryptoPan::from_file(std::path::Path::new(path)) {
                    Ok(pan) => {
                        let written: Vec<(String, String)> = if self.anonymize_networks.is_empty() {
                            protected
                                .iter()
                                .flat_map(|p| {
                                    p.cidrs.iter().map(move |c| {
                                        (format!("protected {:?}", p.name), c.clone())
                                    })
                                })
                                .chain(
                                    internal
                                        .iter()
                                        .map(|c| ("detect.internal_networks".into(), c.clone())),
                                )
                                .collect()
                        } else {
                            self.anonymize_networks
                                .iter()
                                .enumerate()
                                .map(|(j, c)| (pk(&format!("anonymize_networks[{j}]")), c.clone()))
                                .collect()
                        };
                        let mut hide = NetMap::new();
                        let mut networks = Vec::new();
                        for (key, c) in written {
                            match Cidr::parse(&c) {
                                Ok(n) => {
                                    hide.insert(n, ());
                                    networks.push(n);
                                }
                                // The assets' own blocks are checked by
                                // [detect]; name only ours.
                                Err(e) if key.starts_with("collector.share") => {
                                    errs.push(format!("{key}: {e}"))
                                }
                                Err(_) => {}
                            }
                        }
                        if networks.is_empty() {
                            errs.push(format!(
                                "{}: nothing to anonymize (no protected assets, internal_networks or anonymize_networks)",
                                pk("anonymize")
                            ));
                        }
                        Some(Anonymizer {
                            pan,
                            hide,
                            networks,
                        })
                    }
                    Err(e) => {
                        errs.push(format!("{}: {e}", pk("anonymize")));
                        None
                    }
                },
                None => {
                    errs.push(format!(
                        "{} = {s:?}: expected \"none\" or \"cryptopan:KEYFILE\"",
                        pk("anonymize")
                    ));
                    None
                }
            },
        };
        if let Some(m) = self.max_observations
            && !(1..=10_000).contains(&m)
        {
            errs.push(format!(
                "{} = {m}: expected 1 to 10000",
                pk("max_observations")
            ));
        }
        if errs.len() > n0 {
            return None;
        }
        Some(Partner {
            name: self.name.clone(),
            api_root,
            collection: self.collection.clone(),
            auth: Auth {
                basic: password.map(|p| (self.username.clone(), p)),
                client_cert,
                ca: self.ca.clone(),
            },
            tlp: tlp?,
            min_severity: min_severity?,
            kinds,
            assets: self.assets.clone(),
            delay: delay?,
            anonymize,
            max_observations: 100,
        })
    }
}
