//! `collector.toml`: the collector daemon's configuration.
//!
//! Unknown keys are rejected; [`CollectorFile::validate`] reports every bad
//! value at once with its dotted key. Command-line flags override the file.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
pub use vigil_proto::units::ConfigErrors;
use vigil_proto::units::{check_duration, check_size};

use crate::detect::config::{DetectSection, ProtectedSection};
use crate::ingest::Limits;
use crate::server::{CollectorConfig, TlsFiles};
use crate::store::clickhouse::ClickHouseConfig;
use crate::store::clickhouse::http::Endpoint;
use crate::store::sqlite::{SqliteConfig, Synchronous};

/// The file, as written.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CollectorFile {
    /// gRPC listen address. Default `127.0.0.1:50051`.
    pub listen: String,
    /// Data directory (the store). Required.
    pub data_dir: Option<PathBuf>,
    /// Prometheus endpoint address (`GET /metrics`); unset: none.
    pub metrics_listen: Option<String>,
    /// The HTTP/JSON API.
    #[serde(default)]
    pub http: HttpSection,
    /// Allow plaintext gRPC on a non-loopback address. Default false.
    pub insecure: bool,
    /// mTLS files.
    pub tls: Option<TlsSection>,
    /// The store.
    #[serde(default)]
    pub store: StoreSection,
    /// Bounds on what sensors may send.
    #[serde(default)]
    pub limits: LimitsSection,
    /// Detection settings and thresholds.
    #[serde(default)]
    pub detect: DetectSection,
    /// The protected assets (`[[protected]]`).
    #[serde(default)]
    pub protected: Vec<ProtectedSection>,
    /// Who may read flows and alerts.
    #[serde(default)]
    pub access: AccessSection,
    /// Evidence: the collector's signing key.
    #[serde(default)]
    pub evidence: EvidenceSection,
    /// Sensors' attestation keys (`[[sensors]]`); a sensor not listed has
    /// its key pinned on first contact.
    #[serde(default)]
    pub sensors: Vec<SensorSection>,
    /// Sharing: the operator's identity and the partners (`[share]`).
    #[serde(default)]
    pub share: crate::share::ShareSection,
}

/// `[[sensors]]`
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SensorSection {
    /// The sensor's id.
    pub id: String,
    /// Its attestation public key: SubjectPublicKeyInfo PEM (what `vigil
    /// evidence key --sensor-dir` prints), inline or in a file named here.
    pub public_key: String,
}

/// `[evidence]`
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvidenceSection {
    /// The collector's Ed25519 signing key (PKCS#8 PEM), made on first
    /// start if missing. Default `DATA_DIR/evidence/signing-key.pem`.
    pub signing_key: Option<PathBuf>,
}

/// `[http]`
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSection {
    /// Address of the HTTP/JSON API (`/api/v1/…`); unset: none. Loopback
    /// only (plaintext, for the collector's host), e.g. `127.0.0.1:8680`.
    pub listen: Option<String>,
}

/// `[access]`
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessSection {
    /// Identities (a client certificate's SAN DNS name or CN) that may read
    /// flows and alerts over mTLS. Sensors' certificates may only stream.
    pub analysts: Vec<String>,
}

impl Default for CollectorFile {
    fn default() -> Self {
        CollectorFile {
            listen: "127.0.0.1:50051".into(),
            data_dir: None,
            metrics_listen: None,
            http: HttpSection::default(),
            insecure: false,
            tls: None,
            store: StoreSection::default(),
            limits: LimitsSection::default(),
            detect: DetectSection::default(),
            protected: Vec::new(),
            access: AccessSection::default(),
            evidence: EvidenceSection::default(),
            sensors: Vec::new(),
            share: crate::share::ShareSection::default(),
        }
    }
}

/// `[tls]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// The collector's certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The CA that signs sensor certificates (PEM).
    pub ca: PathBuf,
}

/// `[store]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    /// `full` (default: each ack follows an fsync) or `normal` (survives a
    /// collector crash, not a power loss).
    pub synchronous: String,
    /// Delete flows older than this (e.g. `30d`); unset: keep.
    pub max_age: Option<String>,
    /// Delete the oldest flows beyond this size (e.g. `100GiB`); unset: no bound.
    pub max_bytes: Option<String>,
    /// How often retention runs. Default `60s`.
    pub retention_interval: String,
    /// `sqlite` (default: the embedded store in `data_dir`) or `clickhouse`.
    pub engine: String,
    /// The ClickHouse server, for `engine = "clickhouse"`.
    pub clickhouse: Option<ClickHouseSection>,
}

/// `[store.clickhouse]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClickHouseSection {
    /// `http://HOST[:PORT]` or `https://HOST[:PORT]` of its HTTP interface.
    /// Default `http://127.0.0.1:8123`.
    pub url: String,
    /// For `https://`: CA certificates (PEM) to check the server's against;
    /// unset: the system's CA bundle.
    pub ca: Option<PathBuf>,
    /// Database, created if missing. Default `vigil`.
    pub database: String,
    /// User. Default `default`.
    pub user: String,
    /// Password. Default empty.
    pub password: String,
    /// Parallel inserts of a group commit's flows (each a ClickHouse server
    /// thread). Default 2.
    pub parallel_inserts: usize,
}

impl Default for ClickHouseSection {
    fn default() -> Self {
        let d = ClickHouseConfig::default();
        ClickHouseSection {
            url: d.url,
            ca: d.ca,
            database: d.database,
            user: d.user,
            password: d.password,
            parallel_inserts: d.parallel_inserts,
        }
    }
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            synchronous: "full".into(),
            max_age: None,
            max_bytes: None,
            retention_interval: "60s".into(),
            engine: "sqlite".into(),
            clickhouse: None,
        }
    }
}

/// `[limits]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSection {
    /// Flows per batch. Default 65536.
    pub max_batch_flows: usize,
    /// Largest gRPC message, refused before it is read. Default `4MiB`
    /// (a sensor's batches stay under 2 MiB).
    pub max_message_bytes: String,
    /// How far ahead of the collector's clock a flow may be. Default `1d`.
    pub max_clock_skew: String,
    /// Ingest streams open at once (one per sensor); more are refused and
    /// retried by their sensors. Default 128.
    pub max_streams: usize,
    /// Bytes of batches received and not yet committed, over all streams;
    /// beyond, streams wait. Default `128MiB`. Ingest memory is bounded by
    /// about max_streams × max_message_bytes + 1.5 × this.
    pub max_inflight_bytes: String,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_batch_flows: 65_536,
            max_message_bytes: "4MiB".into(),
            max_clock_skew: "1d".into(),
            max_streams: 128,
            max_inflight_bytes: "128MiB".into(),
        }
    }
}

impl CollectorFile {
    /// Parses TOML; `origin` names the file in messages.
    pub fn parse(text: &str, origin: &str) -> Result<CollectorFile, ConfigErrors> {
        toml::from_str(text).map_err(|e| ConfigErrors(vec![format!("{origin}: {e}")]))
    }

    /// The defaults as TOML, for `vigil config defaults collector`.
    pub fn defaults_toml() -> String {
        let f = CollectorFile {
            data_dir: Some("/var/lib/vigil/collector".into()),
            metrics_listen: Some("127.0.0.1:9464".into()),
            http: HttpSection {
                listen: Some("127.0.0.1:8680".into()),
            },
            tls: Some(TlsSection {
                cert: "/etc/vigil/collector.pem".into(),
                key: "/etc/vigil/collector.key".into(),
                ca: "/etc/vigil/ca.pem".into(),
            }),
            store: StoreSection {
                max_age: Some("30d".into()),
                max_bytes: Some("100GiB".into()),
                ..StoreSection::default()
            },
            protected: vec![ProtectedSection {
                name: "water-treatment-plant".into(),
                cidrs: vec!["198.51.100.0/24".into()],
                sector: "water".into(),
                criticality: crate::detect::config::Criticality::High,
                services: vec!["tcp/502".into(), "tcp/22".into(), "tcp/443".into()],
                management_clients: vec!["198.51.100.200".into()],
                ics_clients: vec!["198.51.100.100".into()],
                ..ProtectedSection::default()
            }],
            detect: DetectSection {
                flood: crate::detect::config::FloodSection::defaults(),
                ..DetectSection::default()
            },
            access: AccessSection {
                analysts: vec!["analyst.example.org".into()],
            },
            share: crate::share::ShareSection {
                organization: "Example Water Utility".into(),
                sector: "water".into(),
                contact: "soc@example.org".into(),
                ..crate::share::ShareSection::default()
            },
            ..CollectorFile::default()
        };
        toml::to_string_pretty(&f).unwrap_or_default()
    }

    /// Checks every value; names each bad one by its dotted key.
    pub fn validate(&self) -> Result<CollectorConfig, ConfigErrors> {
        let mut errs = Vec::new();
        let mut addr = |key: &str, v: &str| match v.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                errs.push(format!(
                    "collector.{key} = {v:?}: expected IP:PORT, e.g. 127.0.0.1:50051"
                ));
                None
            }
        };
        let listen = addr("listen", &self.listen);
        let metrics = self
            .metrics_listen
            .as_ref()
            .map(|m| addr("metrics_listen", m));
        let http = self.http.listen.as_ref().map(|h| addr("http.listen", h));
        if let Some(Some(a)) = http
            && !a.ip().is_loopback()
            && self.tls.is_none()
        {
            errs.push(format!(
                "collector.http.listen = \"{a}\": without [tls] the HTTP API is plaintext and served on a loopback address only (127.0.0.1 or ::1); set [tls] to serve it over HTTPS"
            ));
        }
        let mut dur =
            |key: &str, v: &str| check_duration(&mut errs, &format!("collector.{key}"), v);
        let max_age = self.store.max_age.as_ref().map(|v| dur("store.max_age", v));
        let interval = dur("store.retention_interval", &self.store.retention_interval);
        let skew = dur("limits.max_clock_skew", &self.limits.max_clock_skew);
        let mut size =
            |key: &str, v: &str| check_size(&mut errs, &format!("collector.{key}"), v, true);
        let max_bytes = self
            .store
            .max_bytes
            .as_ref()
            .map(|v| size("store.max_bytes", v));
        let max_msg = size("limits.max_message_bytes", &self.limits.max_message_bytes);
        let inflight = size("limits.max_inflight_bytes", &self.limits.max_inflight_bytes);
        let synchronous = match self.store.synchronous.as_str() {
            "full" => Some(Synchronous::Full),
            "normal" => Some(Synchronous::Normal),
            other => {
                errs.push(format!(
                    "collector.store.synchronous = {other:?}: expected \"full\" or \"normal\""
                ));
                None
            }
        };
        if self.limits.max_batch_flows == 0 {
            errs.push("collector.limits.max_batch_flows = 0: must be at least 1".into());
        }
        if self.limits.max_streams == 0 {
            errs.push("collector.limits.max_streams = 0: must be at least 1".into());
        }
        if let (Some(m), Some(i)) = (max_msg, inflight)
            && i < m
        {
            errs.push(format!(
                "collector.limits.max_inflight_bytes = {:?}: must be at least max_message_bytes ({:?}), or no batch could wait for its commit",
                self.limits.max_inflight_bytes, self.limits.max_message_bytes
            ));
        }
        let clickhouse = match self.store.engine.as_str() {
            "sqlite" => {
                if self.data_dir.is_none() {
                    errs.push("collector.data_dir: required (--data-dir)".into());
                }
                None
            }
            "clickhouse" => {
                let c = self.store.clickhouse.clone().unwrap_or_default();
                // The URL as the store will read it.
                let endpoint = Endpoint::parse(&c.url, &c.user, &c.password);
                if let Err(e) = &endpoint {
                    errs.push(format!("collector.store.clickhouse.url: {e}"));
                }
                if let Some(ca) = &c.ca {
                    if !endpoint.as_ref().is_ok_and(Endpoint::is_tls) {
                        errs.push(format!(
                            "collector.store.clickhouse.ca = {:?}: only with an https:// url",
                            ca.display()
                        ));
                    } else if !ca.is_file() {
                        errs.push(format!(
                            "collector.store.clickhouse.ca = {:?}: no such file",
                            ca.display()
                        ));
                    }
                }
                if c.database.is_empty()
                    || !c
                        .database
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    errs.push(format!(
                        "collector.store.clickhouse.database = {:?}: letters, digits and _ only",
                        c.database
                    ));
                }
                if !(1..=64).contains(&c.parallel_inserts) {
                    errs.push(format!(
                        "collector.store.clickhouse.parallel_inserts = {}: expected 1 to 64",
                        c.parallel_inserts
                    ));
                }
                Some(ClickHouseConfig {
                    url: c.url,
                    parallel_inserts: c.parallel_inserts,
                    ca: c.ca,
                    database: c.database,
                    user: c.user,
                    password: c.password,
                    // Retention: the same keys as the embedded store's.
                    max_age: max_age.flatten(),
                    max_bytes: max_bytes.flatten(),
                })
            }
            other => {
                errs.push(format!(
                    "collector.store.engine = {other:?}: expected \"sqlite\" or \"clickhouse\""
                ));
                None
            }
        };
        if let (Some(a), None, false) = (listen, &self.tls, self.insecure)
            && !a.ip().is_loopback()
        {
            errs.push(format!(
                "collector.listen = \"{a}\": plaintext on a non-loopback address needs [tls] (--tls-cert, --tls-key, --tls-ca) or insecure = true"
            ));
        }
        for (i, a) in self.access.analysts.iter().enumerate() {
            if a.is_empty()
                || a.len() > 253
                || a.chars().any(|c| c.is_control() || c.is_whitespace())
            {
                errs.push(format!(
                    "collector.access.analysts[{i}] = {a:?}: expected a certificate identity (SAN DNS name or CN), 1-253 characters without spaces"
                ));
            }
        }
        let mut sensor_keys = Vec::new();
        for (i, sn) in self.sensors.iter().enumerate() {
            if !vigil_proto::valid_sensor_id(&sn.id) {
                errs.push(format!(
                    "collector.sensors[{i}].id = {:?}: expected 1-64 characters of A-Z a-z 0-9 . _ -",
                    sn.id
                ));
            }
            if self.sensors[..i].iter().any(|o| o.id == sn.id) {
                errs.push(format!(
                    "collector.sensors[{i}].id = {:?}: listed twice",
                    sn.id
                ));
            }
            let pem = if sn.public_key.trim_start().starts_with("-----BEGIN") {
                Ok(sn.public_key.clone())
            } else {
                std::fs::read_to_string(&sn.public_key)
                    .map_err(|e| format!("reading {:?}: {e}", sn.public_key))
            };
            match pem.and_then(|p| vigil_proto::keys::public_from_pem(&p)) {
                Ok(k) => sensor_keys.push((sn.id.clone(), k)),
                Err(e) => errs.push(format!(
                    "collector.sensors[{i}].public_key: not an Ed25519 public key in PEM: {e}"
                )),
            }
        }
        let detect = if self.detect.enabled {
            match self.detect.validate(&self.protected) {
                Ok(d) => Some(d),
                Err(e) => {
                    errs.extend(e);
                    None
                }
            }
        } else {
            None
        };
        let share = self
            .share
            .validate(&self.protected, &self.detect.internal_networks, &mut errs);
        let webhook = self.detect.webhook.as_ref().and_then(|w| {
            vigil_proto::units::parse_duration(&w.timeout)
                .ok()
                .map(|timeout| crate::webhook::WebhookConfig {
                    url: w.url.clone(),
                    attempts: w.attempts.max(1),
                    timeout,
                })
        });
        if !errs.is_empty() {
            return Err(ConfigErrors(errs));
        }
        let (Some(listen), Some(interval), Some(skew), Some(max_msg), Some(synchronous), Some(dir)) = (
            listen,
            interval,
            skew,
            max_msg,
            synchronous,
            self.data_dir
                .clone()
                .or_else(|| clickhouse.is_some().then(PathBuf::new)),
        ) else {
            return Err(ConfigErrors(vec![
                "collector: incomplete configuration".into(),
            ]));
        };
        let mut cfg = CollectorConfig::new(listen, dir);
        cfg.metrics_listen = metrics.flatten();
        cfg.http_listen = http.flatten();
        cfg.insecure = self.insecure;
        cfg.tls = self.tls.as_ref().map(|t| TlsFiles {
            cert: t.cert.clone(),
            key: t.key.clone(),
            ca: t.ca.clone(),
        });
        cfg.store = SqliteConfig {
            synchronous,
            max_age: max_age.flatten(),
            max_bytes: max_bytes.flatten(),
            segment_rows: None,
        };
        cfg.limits = Limits {
            max_batch_flows: self.limits.max_batch_flows,
            max_clock_skew: skew,
            max_streams: self.limits.max_streams,
            max_inflight_bytes: inflight.unwrap_or(128 << 20),
        };
        cfg.max_message_bytes = usize::try_from(max_msg).unwrap_or(usize::MAX);
        cfg.retention_interval = interval;
        cfg.detect = detect
            .filter(|d| !d.assets.is_empty())
            .map(std::sync::Arc::new);
        cfg.webhook = webhook;
        cfg.clickhouse = clickhouse;
        cfg.analysts = self.access.analysts.clone();
        if let Some(k) = &self.evidence.signing_key {
            cfg.signing_key = Some(k.clone());
        }
        cfg.sensor_keys = sensor_keys;
        cfg.share = share.map(std::sync::Arc::new);
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_file_parses_and_validates() {
        let f = CollectorFile::parse(&CollectorFile::defaults_toml(), "defaults").unwrap();
        let c = f.validate().unwrap();
        assert_eq!(c.store.max_bytes, Some(100 << 30));
        assert!(c.tls.is_some());
        assert_eq!(c.http_listen, Some("127.0.0.1:8680".parse().unwrap()));
    }

    #[test]
    fn every_problem_is_named_by_key() {
        let f = CollectorFile::parse(
            r#"
listen = "0.0.0.0:50051"
[http]
listen = "0.0.0.0:8680"
[store]
synchronous = "sometimes"
max_age = "0s"
[access]
analysts = ["alice", "bob smith"]
"#,
            "collector.toml",
        )
        .unwrap();
        let e = f.validate().unwrap_err();
        let all = e.to_string();
        for key in [
            "collector.store.synchronous",
            "collector.store.max_age",
            "collector.data_dir",
            "collector.listen",
            "collector.access.analysts[1]",
            "collector.http.listen",
        ] {
            assert!(all.contains(key), "{key} missing from:\n{all}");
        }
        assert!(
            CollectorFile::parse("lissten = \"x\"", "c.toml")
                .unwrap_err()
                .to_string()
                .contains("lissten")
        );
    }

    #[test]
    fn analysts_are_taken_from_access() {
        let f = CollectorFile::parse(
            "data_dir = \"/tmp/x\"\n[access]\nanalysts = [\"alice\"]\n",
            "collector.toml",
        )
        .unwrap();
        assert_eq!(f.validate().unwrap().analysts, vec!["alice".to_string()]);
    }

    #[test]
    fn sensor_keys_are_read_inline_or_from_a_file_and_bad_ones_named() {
        let k = ed25519_dalek::SigningKey::from_bytes(&[4; 32]).verifying_key();
        let pem = vigil_proto::keys::public_pem(&k);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s2.pem");
        std::fs::write(&file, &pem).unwrap();
        let text = format!(
            "data_dir = \"/tmp/x\"\n[[sensors]]\nid = \"s1\"\npublic_key = '''\n{pem}'''\n\
             [[sensors]]\nid = \"s2\"\npublic_key = {:?}\n",
            file.display().to_string()
        );
        let cfg = CollectorFile::parse(&text, "collector.toml")
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(cfg.sensor_keys, vec![("s1".into(), k), ("s2".into(), k)]);
        let bad = CollectorFile::parse(
            "data_dir = \"/tmp/x\"\n[[sensors]]\nid = \"a b\"\npublic_key = \"AAAA\"\n",
            "collector.toml",
        )
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
        assert!(
            bad.contains("collector.sensors[0].id")
                && bad.contains("collector.sensors[0].public_key"),
            "{bad}"
        );
    }

    #[test]
    fn the_clickhouse_engine_takes_the_retention_keys_and_checks_its_own() {
        let f = CollectorFile::parse(
            r#"
[store]
engine = "clickhouse"
max_age = "30d"
max_bytes = "2GiB"
[store.clickhouse]
url = "http://127.0.0.1:8123"
database = "site_a"
"#,
            "collector.toml",
        )
        .unwrap();
        let c = f.validate().unwrap();
        let ch = c.clickhouse.unwrap();
        assert_eq!(ch.database, "site_a");
        assert_eq!(
            ch.max_age,
            Some(std::time::Duration::from_secs(30 * 86_400))
        );
        assert_eq!(ch.max_bytes, Some(2 << 30));
        let f = CollectorFile::parse(
            "[store]\nengine = \"clickhouse\"\n[store.clickhouse]\nurl = \"ftp://x\"\ndatabase = \"a;b\"\n",
            "collector.toml",
        )
        .unwrap();
        let all = f.validate().unwrap_err().to_string();
        for key in [
            "collector.store.clickhouse.url",
            "collector.store.clickhouse.database",
        ] {
            assert!(all.contains(key), "{key} missing from:\n{all}");
        }
        // Read as the store reads it: a port that is not a number is named
        // at load, not when the store first connects.
        let f = CollectorFile::parse(
            "[store]\nengine = \"clickhouse\"\n[store.clickhouse]\nurl = \"http://ch:port\"\n",
            "collector.toml",
        )
        .unwrap();
        let e = f.validate().unwrap_err().to_string();
        assert!(
            e.contains("collector.store.clickhouse.url") && e.contains("http://ch:port"),
            "{e}"
        );
    }
}
