//! `sensor.toml`: the sensor daemon's configuration.
//!
//! Every section rejects unknown keys. [`SensorFile::validate`] checks every
//! value and reports all problems at once, each with its dotted key and
//! value; the result is the runtime configuration, whose types make bad
//! values unrepresentable. Command-line flags override the file (the binary
//! sets the file's fields before validating).

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
pub use vigil_proto::units::ConfigErrors;
use vigil_proto::units::{check_duration, check_size};
use vigil_proto::valid_sensor_id;

use crate::capture::{FanoutMode, RingConfig};
use crate::export::grpc::{ATTESTATION_KEY, ClientTls, ExporterConfig};
use crate::export::spool::{Fsync, SpoolConfig};
use crate::flow::{FlowConfig, Timeouts};
use crate::run::RunConfig;

/// The file, as written.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SensorFile {
    /// This sensor's id (1–64 of `A-Za-z0-9._-`); under mTLS it must be the
    /// identity in the sensor's certificate. Required.
    pub sensor_id: Option<String>,
    /// Collector URL, `http://HOST:PORT` or `https://HOST:PORT`. Required.
    pub collector: Option<String>,
    /// The disk spool.
    #[serde(default)]
    pub spool: SpoolSection,
    /// Batching and delivery.
    #[serde(default)]
    pub export: ExportSection,
    /// mTLS files (for an `https://` collector).
    pub tls: Option<TlsSection>,
    /// Flow tracking.
    #[serde(default)]
    pub flow: FlowSection,
    /// Also (or, without a collector, only) write flow records as JSON
    /// lines to this file; `-` is standard output.
    pub output: Option<PathBuf>,
    /// The live capture source (instead of capture files).
    #[serde(default)]
    pub capture: CaptureSection,
    /// Prometheus endpoint address (`GET /metrics`, `IP:PORT`); unset: none.
    pub metrics_listen: Option<String>,
}

/// `[capture]`: live capture on an interface.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaptureSection {
    /// Interface to capture on (`--interface`).
    pub interface: Option<String>,
    /// `af-packet` (default: TPACKET_V3 ring, one fanout socket per worker)
    /// or `libpcap` (one capture thread feeding the flow workers; needs the
    /// `libpcap` build feature).
    pub source: String,
    /// Capture filter in tcpdump syntax (`--bpf`); needs the `libpcap` build
    /// feature, which compiles it for either source.
    pub bpf: Option<String>,
    /// Promiscuous mode (`--promisc`): needed on a SPAN or tap port, whose
    /// frames are addressed to other hosts. Default false.
    pub promisc: bool,
    /// AF_PACKET ring block size per worker, a power of two. Default `1MiB`.
    pub block_size: String,
    /// AF_PACKET ring blocks per worker. Default 64 (64 MiB per worker).
    pub block_count: u32,
    /// A block that is not full is handed over after this long. Default `100ms`.
    pub block_timeout: String,
    /// AF_PACKET fanout group id (default: from the process id). Two sensors
    /// on one host need different ids.
    pub fanout_group: Option<u16>,
    /// How packets are spread over the workers: `address-pair` (default:
    /// by the outermost IP addresses, exact for tunnels and IPv6 fragments)
    /// or `flow-hash` (the kernel's flow hash: finer spread, but a tunnel's
    /// outer flow may be counted on several workers).
    pub fanout: String,
    /// Flow records buffered between the capture workers and the exporter
    /// (encoding, spool writes): capture never waits for them, so a stalled
    /// disk costs records beyond this buffer (dropped, counted as
    /// `channel_full_drops`) rather than packets the kernel drops unseen.
    /// Default 1048576 (184 bytes each: about 190 MiB).
    pub handoff_records: usize,
}

impl Default for CaptureSection {
    fn default() -> Self {
        CaptureSection {
            interface: None,
            source: "af-packet".into(),
            bpf: None,
            promisc: false,
            block_size: "1MiB".into(),
            block_count: 64,
            block_timeout: "100ms".into(),
            fanout_group: None,
            fanout: "address-pair".into(),
            handoff_records: crate::run::HANDOFF_RECORDS,
        }
    }
}

/// Which live source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// AF_PACKET TPACKET_V3 with fanout.
    AfPacket,
    /// libpcap.
    Libpcap,
}

/// The validated `[capture]` section.
#[derive(Clone, Debug)]
pub struct CaptureSettings {
    /// Interface.
    pub interface: String,
    /// Source.
    pub source: SourceKind,
    /// Capture filter expression.
    pub bpf: Option<String>,
    /// Promiscuous mode.
    pub promisc: bool,
    /// AF_PACKET ring per worker.
    pub ring: RingConfig,
    /// AF_PACKET fanout group.
    pub fanout_group: Option<u16>,
    /// AF_PACKET fanout mode.
    pub fanout: FanoutMode,
    /// Records buffered at the hand-off to the exporter.
    pub handoff_records: usize,
}

/// `[spool]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpoolSection {
    /// Spool directory. Required.
    pub dir: Option<PathBuf>,
    /// Bound on the spool's size; beyond it the oldest batches are dropped
    /// and counted. Default `1GiB`.
    pub max_bytes: String,
    /// Segment file size. Default `16MiB`.
    pub segment_bytes: String,
    /// `always`, `never`, or an interval such as `1s` (default).
    pub fsync: String,
}

impl Default for SpoolSection {
    fn default() -> Self {
        SpoolSection {
            dir: None,
            max_bytes: "1GiB".into(),
            segment_bytes: "16MiB".into(),
            fsync: "1s".into(),
        }
    }
}

/// `[export]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExportSection {
    /// Records per batch. Default 2048.
    pub batch_flows: usize,
    /// Longest a record waits for its batch to fill. Default `250ms`, so that
    /// alerts follow attacks within the detection latency budget.
    pub batch_delay: String,
    /// Unacknowledged batches in flight. Default 32.
    pub window: usize,
    /// Longest wait between reconnection attempts. Default `10s`.
    pub backoff_max: String,
    /// On shutdown (or at the end of a capture file), how long to wait for
    /// the last acknowledgements. Default `30s`.
    pub drain_timeout: String,
    /// Sign every batch (a Merkle root over its records) with the sensor's
    /// attestation key, so that its flows can be shown later to be the
    /// ones it sent. Default `true`.
    pub attestation: bool,
    /// The attestation key (Ed25519, PKCS#8 PEM), made there on first
    /// start. Default: `attestation-key.pem` in the spool directory.
    pub attestation_key: Option<PathBuf>,
}

impl Default for ExportSection {
    fn default() -> Self {
        ExportSection {
            batch_flows: 2048,
            batch_delay: "250ms".into(),
            window: 32,
            backoff_max: "10s".into(),
            drain_timeout: "30s".into(),
            attestation: true,
            attestation_key: None,
        }
    }
}

/// `[tls]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// CA certificate (PEM) that signed the collector's certificate.
    pub ca: PathBuf,
    /// This sensor's certificate (PEM).
    pub cert: PathBuf,
    /// This sensor's private key (PEM).
    pub key: PathBuf,
    /// Name expected in the collector's certificate (default: the URL's host).
    pub server_name: Option<String>,
}

/// `[flow]`
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlowSection {
    /// Flow shards. Default 1.
    pub workers: usize,
    /// One idle timeout for every protocol (default: Suricata's per-protocol values).
    pub idle_timeout: Option<String>,
    /// Interim records of long flows. Default `1800s`.
    pub active_timeout: String,
    /// Early reports of one-way and heavy flows, so the collector sees a
    /// flood within this interval (`off` to disable). Default `1s`.
    pub report_interval: String,
    /// Packets a two-way flow needs since its last record to be reported
    /// early. Default 64.
    pub report_min_packets: u32,
    /// Flows held at once. Default 1000000.
    pub max_flows: usize,
    /// Application metadata (DNS, TLS, HTTP, SSH, ICS functions) in the
    /// records. Default true.
    pub app_metadata: bool,
}

impl Default for FlowSection {
    fn default() -> Self {
        FlowSection {
            workers: 1,
            idle_timeout: None,
            active_timeout: "1800s".into(),
            report_interval: "1s".into(),
            report_min_packets: 64,
            max_flows: 1_000_000,
            app_metadata: true,
        }
    }
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct SensorSettings {
    /// The exporter, when a collector is configured.
    pub exporter: Option<ExporterConfig>,
    /// JSON lines output.
    pub output: Option<PathBuf>,
    /// The live source, when an interface is configured.
    pub capture: Option<CaptureSettings>,
    /// The pipeline.
    pub pipeline: RunConfig,
    /// Wait for acknowledgements at shutdown.
    pub drain_timeout: Duration,
    /// The Prometheus endpoint's address.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

impl SensorFile {
    /// Parses TOML; `origin` names the file in messages.
    pub fn parse(text: &str, origin: &str) -> Result<SensorFile, ConfigErrors> {
        toml::from_str(text).map_err(|e| ConfigErrors(vec![format!("{origin}: {e}")]))
    }

    /// The defaults as TOML, for `vigil config defaults sensor`.
    pub fn defaults_toml() -> String {
        let mut f = SensorFile {
            sensor_id: Some("site-a-sensor-1".into()),
            collector: Some("https://collector.example:50051".into()),
            ..SensorFile::default()
        };
        f.spool.dir = Some("/var/lib/vigil/spool".into());
        f.tls = Some(TlsSection {
            ca: "/etc/vigil/ca.pem".into(),
            cert: "/etc/vigil/sensor.pem".into(),
            key: "/etc/vigil/sensor.key".into(),
            server_name: None,
        });
        toml::to_string_pretty(&f).unwrap_or_default()
    }

    /// Checks every value; names each bad one by its dotted key.
    pub fn validate(&self) -> Result<SensorSettings, ConfigErrors> {
        let mut errs = Vec::new();
        let mut dur = |key: &str, v: &str| check_duration(&mut errs, &format!("sensor.{key}"), v);
        let batch_delay = dur("export.batch_delay", &self.export.batch_delay);
        let backoff_max = dur("export.backoff_max", &self.export.backoff_max);
        let drain_timeout = dur("export.drain_timeout", &self.export.drain_timeout);
        let active_timeout = dur("flow.active_timeout", &self.flow.active_timeout);
        let report_interval = match self.flow.report_interval.as_str() {
            "off" => Some(None),
            v => dur("flow.report_interval", v).map(Some),
        };
        let idle = self
            .flow
            .idle_timeout
            .as_ref()
            .map(|v| dur("flow.idle_timeout", v));
        let fsync = match self.spool.fsync.as_str() {
            "always" => Some(Fsync::Always),
            "never" => Some(Fsync::Never),
            v => dur("spool.fsync", v).map(Fsync::Interval),
        };
        let mut size =
            |key: &str, v: &str| check_size(&mut errs, &format!("sensor.{key}"), v, false);
        let max_bytes = size("spool.max_bytes", &self.spool.max_bytes);
        let segment_bytes = size("spool.segment_bytes", &self.spool.segment_bytes);
        if let (Some(m), Some(s)) = (max_bytes, segment_bytes)
            && (s < 4096 || m < 2 * s)
        {
            errs.push(format!(
                "sensor.spool.max_bytes = {m}: must be at least twice spool.segment_bytes ({s}), which must be at least 4096"
            ));
        }
        let id = match &self.sensor_id {
            Some(id) if valid_sensor_id(id) => Some(id.clone()),
            Some(id) => {
                errs.push(format!(
                    "sensor.sensor_id = {id:?}: must be 1-64 characters of A-Z a-z 0-9 . _ -"
                ));
                None
            }
            None if self.collector.is_none() => Some(String::new()),
            None => {
                errs.push("sensor.sensor_id: required (--sensor-id)".into());
                None
            }
        };
        let collector = match &self.collector {
            Some(c) if c.starts_with("http://") || c.starts_with("https://") => Some(c.clone()),
            Some(c) => {
                errs.push(format!(
                    "sensor.collector = {c:?}: expected http://HOST:PORT or https://HOST:PORT"
                ));
                None
            }
            None if self.output.is_some() => None,
            None => {
                errs.push(
                    "sensor.collector: required (--collector), unless flows go to an output file (--output)"
                        .into(),
                );
                None
            }
        };
        if let Some(c) = &collector {
            match (c.starts_with("https://"), self.tls.is_some()) {
                (true, false) => errs.push(format!(
                    "sensor.collector = {c:?}: https needs [tls] ca, cert and key (--tls-ca, --tls-cert, --tls-key)"
                )),
                (false, true) => errs.push(format!(
                    "sensor.collector = {c:?}: [tls] is set, so the URL must be https://"
                )),
                _ => {}
            }
        }
        let dir = self.spool.dir.clone();
        if dir.is_none() && self.collector.is_some() {
            errs.push("sensor.spool.dir: required (--spool-dir)".into());
        }
        let capture = self.capture.validate(&mut errs);
        let metrics_listen = match &self.metrics_listen {
            None => None,
            Some(m) => match m.parse() {
                Ok(a) => Some(a),
                Err(_) => {
                    errs.push(format!(
                        "sensor.metrics_listen = {m:?}: expected IP:PORT, e.g. 127.0.0.1:9465"
                    ));
                    None
                }
            },
        };
        if self.export.batch_flows == 0 || self.export.batch_flows > 65_536 {
            errs.push(format!(
                "sensor.export.batch_flows = {}: must be 1-65536",
                self.export.batch_flows
            ));
        }
        if self.export.window == 0 || self.export.window > 4096 {
            errs.push(format!(
                "sensor.export.window = {}: must be 1-4096",
                self.export.window
            ));
        }
        let workers = NonZeroUsize::new(self.flow.workers);
        if workers.is_none() {
            errs.push("sensor.flow.workers = 0: must be at least 1".into());
        }
        if self.flow.max_flows == 0 {
            errs.push("sensor.flow.max_flows = 0: must be at least 1".into());
        }
        if !errs.is_empty() {
            return Err(ConfigErrors(errs));
        }
        let (
            Some(id),
            Some(batch_delay),
            Some(backoff_max),
            Some(drain_timeout),
            Some(active_timeout),
            Some(report_interval),
            Some(fsync),
            Some(max_bytes),
            Some(segment_bytes),
            Some(workers),
        ) = (
            id,
            batch_delay,
            backoff_max,
            drain_timeout,
            active_timeout,
            report_interval,
            fsync,
            max_bytes,
            segment_bytes,
            workers,
        )
        else {
            return Err(ConfigErrors(vec![
                "sensor: incomplete configuration".into(),
            ]));
        };
        let exporter = match (collector, dir) {
            (Some(collector), Some(dir)) => {
                let mut exporter = ExporterConfig::new(collector, id, dir.clone());
                exporter.batch_flows = self.export.batch_flows;
                exporter.batch_delay = batch_delay;
                exporter.window = self.export.window;
                exporter.backoff_max = backoff_max;
                exporter.attestation_key = self.export.attestation.then(|| {
                    self.export
                        .attestation_key
                        .clone()
                        .unwrap_or_else(|| dir.join(ATTESTATION_KEY))
                });
                exporter.spool = SpoolConfig {
                    dir,
                    max_bytes,
                    segment_bytes,
                    fsync,
                };
                exporter.tls = self.tls.as_ref().map(|t| ClientTls {
                    ca: t.ca.clone(),
                    cert: t.cert.clone(),
                    key: t.key.clone(),
                    server_name: t.server_name.clone(),
                });
                Some(exporter)
            }
            _ => None,
        };
        let pipeline = RunConfig {
            workers,
            flow: FlowConfig {
                timeouts: idle.flatten().map(Timeouts::uniform).unwrap_or_default(),
                active_timeout,
                report_interval,
                report_min_packets: self.flow.report_min_packets.max(1),
                max_flows: self.flow.max_flows,
                app_metadata: self.flow.app_metadata,
                ..FlowConfig::default()
            },
            ..RunConfig::default()
        };
        Ok(SensorSettings {
            exporter,
            output: self.output.clone(),
            capture,
            pipeline,
            drain_timeout,
            metrics_listen,
        })
    }
}

impl CaptureSection {
    /// The live source, if an interface is set; problems go to `errs`.
    fn validate(&self, errs: &mut Vec<String>) -> Option<CaptureSettings> {
        let source = match self.source.as_str() {
            "af-packet" | "af_packet" => Some(SourceKind::AfPacket),
            "libpcap" => Some(SourceKind::Libpcap),
            v => {
                errs.push(format!(
                    "sensor.capture.source = {v:?}: expected af-packet or libpcap"
                ));
                None
            }
        };
        let fanout = match self.fanout.as_str() {
            "address-pair" => Some(FanoutMode::AddressPair),
            "flow-hash" => Some(FanoutMode::FlowHash),
            v => {
                errs.push(format!(
                    "sensor.capture.fanout = {v:?}: expected address-pair or flow-hash"
                ));
                None
            }
        };
        let block_size = check_size(errs, "sensor.capture.block_size", &self.block_size, false);
        let block_timeout =
            check_duration(errs, "sensor.capture.block_timeout", &self.block_timeout);
        let ring = match (block_size, block_timeout) {
            (Some(b), Some(t)) => {
                let ring = RingConfig {
                    block_size: u32::try_from(b).unwrap_or(u32::MAX),
                    block_count: self.block_count,
                    block_timeout: t,
                };
                match ring.validate() {
                    Ok(()) => Some(ring),
                    Err(e) => {
                        errs.push(format!(
                            "sensor.capture (block_size = {:?}, block_count = {}, block_timeout = {:?}): {e}",
                            self.block_size, self.block_count, self.block_timeout
                        ));
                        None
                    }
                }
            }
            _ => None,
        };
        if let Some(i) = &self.interface
            && (i.is_empty()
                || i.len() > 15
                || i.contains('/')
                || i.chars().any(char::is_whitespace))
        {
            errs.push(format!(
                "sensor.capture.interface = {i:?}: not an interface name (1-15 characters, no '/' or spaces)"
            ));
        }
        if self.handoff_records == 0 {
            errs.push("sensor.capture.handoff_records = 0: must be at least 1".into());
        }
        if let Some(b) = &self.bpf
            && b.trim().is_empty()
        {
            errs.push("sensor.capture.bpf = \"\": an empty filter; leave the key out".into());
        }
        let interface = self.interface.clone()?;
        Some(CaptureSettings {
            interface,
            source: source?,
            bpf: self.bpf.clone(),
            promisc: self.promisc,
            ring: ring?,
            fanout_group: self.fanout_group,
            fanout: fanout?,
            handoff_records: self.handoff_records,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_file_parses_and_validates() {
        let text = SensorFile::defaults_toml();
        let f = SensorFile::parse(&text, "defaults").unwrap();
        let s = f.validate().unwrap();
        let e = s.exporter.unwrap();
        assert_eq!(e.spool.max_bytes, 1 << 30);
        assert_eq!(e.batch_flows, 2048);
        assert!(s.capture.is_none(), "no interface by default");
        assert!(
            s.pipeline.flow.app_metadata,
            "application metadata on by default"
        );
        assert!(text.contains("app_metadata = true"), "{text}");
        let off = SensorFile::parse("output = \"-\"\n[flow]\napp_metadata = false\n", "s.toml")
            .unwrap()
            .validate()
            .unwrap();
        assert!(!off.pipeline.flow.app_metadata);
    }

    #[test]
    fn batches_are_attested_with_the_spool_key_unless_told_otherwise() {
        let base = "sensor_id = \"s1\"\ncollector = \"http://127.0.0.1:1\"\n[spool]\ndir = \"/var/spool/v\"\n";
        let key = |extra: &str| {
            SensorFile::parse(&format!("{base}{extra}"), "sensor.toml")
                .unwrap()
                .validate()
                .unwrap()
                .exporter
                .unwrap()
                .attestation_key
        };
        assert_eq!(
            key(""),
            Some(PathBuf::from("/var/spool/v/attestation-key.pem"))
        );
        assert_eq!(
            key("[export]\nattestation_key = \"/etc/vigil/key.pem\"\n"),
            Some(PathBuf::from("/etc/vigil/key.pem"))
        );
        assert_eq!(key("[export]\nattestation = false\n"), None);
    }

    #[test]
    fn a_live_source_with_json_output_needs_no_collector() {
        let text = r#"
output = "-"
[capture]
interface = "eth1"
promisc = true
block_size = "4MiB"
block_count = 16
"#;
        let s = SensorFile::parse(text, "sensor.toml")
            .unwrap()
            .validate()
            .unwrap();
        assert!(s.exporter.is_none());
        let c = s.capture.unwrap();
        assert_eq!(c.interface, "eth1");
        assert_eq!(c.source, SourceKind::AfPacket);
        assert!(c.promisc);
        assert_eq!(c.ring.block_size, 4 << 20);
        assert_eq!(c.ring.block_count, 16);
    }

    #[test]
    fn the_metrics_address_is_checked_and_named() {
        let parse = |v: &str| {
            SensorFile::parse(
                &format!("output = \"-\"\nmetrics_listen = \"{v}\"\n"),
                "s.toml",
            )
            .unwrap()
            .validate()
        };
        assert_eq!(
            parse("127.0.0.1:9465").unwrap().metrics_listen,
            Some("127.0.0.1:9465".parse().unwrap())
        );
        let e = parse("localhost:9465").unwrap_err().to_string();
        assert!(
            e.contains("sensor.metrics_listen = \"localhost:9465\"") && e.contains("IP:PORT"),
            "{e}"
        );
    }

    #[test]
    fn bad_capture_keys_are_named() {
        let text = r#"
output = "-"
[capture]
interface = "a/b"
source = "netmap"
block_size = "3000"
"#;
        let e = SensorFile::parse(text, "sensor.toml")
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        for key in [
            "sensor.capture.interface",
            "sensor.capture.source",
            "sensor.capture (block_size",
        ] {
            assert!(e.contains(key), "{key} missing from:\n{e}");
        }
        let e = SensorFile::default().validate().unwrap_err().to_string();
        assert!(e.contains("unless flows go to an output file"), "{e}");
    }

    #[test]
    fn every_problem_is_named_by_key() {
        let text = r#"
sensor_id = "bad id"
collector = "tcp://x"
[spool]
dir = "/tmp/x"
max_bytes = "1MiB"
segment_bytes = "1MiB"
fsync = "soon"
max_bytes_typo = 1
"#;
        let e = SensorFile::parse(text, "sensor.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("sensor.toml") && e.contains("max_bytes_typo"),
            "{e}"
        );
        let text = text.replace("max_bytes_typo = 1\n", "");
        let e = SensorFile::parse(&text, "sensor.toml")
            .unwrap()
            .validate()
            .unwrap_err();
        let all = e.to_string();
        for key in [
            "sensor.sensor_id",
            "sensor.collector",
            "sensor.spool.fsync",
            "sensor.spool.max_bytes",
        ] {
            assert!(all.contains(key), "{key} missing from:\n{all}");
        }
        assert_eq!(e.0.len(), 4, "{all}");
    }

    #[test]
    fn https_and_tls_go_together() {
        let mut f = SensorFile {
            sensor_id: Some("s".into()),
            collector: Some("https://c:1".into()),
            ..SensorFile::default()
        };
        f.spool.dir = Some("/tmp/s".into());
        assert!(
            f.validate()
                .unwrap_err()
                .to_string()
                .contains("https needs [tls]")
        );
        f.collector = Some("http://c:1".into());
        assert!(f.validate().is_ok());
    }
}
