//! ICS sessions from clients not allowed: a Modbus/TCP, DNP3, S7comm,
//! IEC 60870-5-104, EtherNet/IP, OPC UA, Niagara Fox or BACnet session
//! carrying data between a protected asset and a client outside its
//! `ics_clients` (ATT&CK for ICS T0855). A bare TCP probe of an ICS port is
//! the scan detector's business: a TCP session counts once it carries
//! payload. A session is recognized by its well-known port or, with the
//! sensor's application metadata, by its content on any port.
//!
//! What the session did sets the alert's severity, from the operations
//! the metadata counts: writes and control (operate, program download,
//! start, stop, restart) are **critical** whatever the asset; reads,
//! diagnostics and sessions with no request seen (monitoring data) take
//! the asset's criticality; a session without metadata (extraction off,
//! or a protocol the sensor does not parse) one above it, as it may have
//! done anything; discovery alone (BACnet who-is/i-am, EtherNet/IP
//! list-identity) is not an alert unless `detect.ics.discovery_alerts`. The
//! alert names the operations and function codes seen.

use std::net::IpAddr;
use std::sync::Arc;

use vigil_proto::app::{AppProto, Ics as IcsOps, ics_function_name};

use super::Finding;
use super::base::{ALL, Keys, Record, SessionKey, mark, take_fire};
use super::config::DetectConfig;
use super::ports::ics_name;
use super::{Context, Detector, Severity};
use crate::model::alert::AlertKind;

/// (client, server, IP protocol, port).
type Key = (IpAddr, IpAddr, u8, u16);

/// Function codes listed per key.
const MAX_FUNCTIONS: usize = 32;

/// What a record of an ICS session did, from least to most serious.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
enum Did {
    /// Discovery only.
    #[default]
    Discover,
    /// Reads, diagnostics, or no request seen (monitoring data).
    Read,
    /// Unknown: no application metadata.
    Unknown,
    /// Writes or control.
    Command,
}

impl Did {
    fn of(ops: Option<&IcsOps>) -> Did {
        match ops {
            None => Did::Unknown,
            Some(o) if o.writes > 0 || o.control > 0 => Did::Command,
            Some(o) if o.discovery > 0 && o.reads == 0 && o.diagnostics == 0 => Did::Discover,
            Some(_) => Did::Read,
        }
    }
}

/// One (client, server, port)'s sessions.
#[derive(Debug, Default)]
struct IcsKey {
    s: SessionKey,
    /// The most serious operation class seen.
    did: Did,
    /// The protocol, when the metadata named it.
    proto: Option<AppProto>,
    reads: u64,
    writes: u64,
    control: u64,
    diagnostics: u64,
    discovery: u64,
    /// (function code, count), by first sight.
    functions: Vec<(u16, u64)>,
}

impl IcsKey {
    fn add(&mut self, proto: AppProto, o: &IcsOps) {
        self.proto = Some(proto);
        self.reads += o.reads;
        self.writes += o.writes;
        self.control += o.control;
        self.diagnostics += o.diagnostics;
        self.discovery += o.discovery;
        for &(code, n) in &o.functions {
            let full = self.functions.len() >= MAX_FUNCTIONS;
            match self.functions.iter_mut().find(|(c, _)| *c == code) {
                Some(x) => x.1 += n,
                None if !full => self.functions.push((code, n)),
                None => {}
            }
        }
    }
}

/// The ICS detector.
#[derive(Debug)]
pub(crate) struct Ics {
    cfg: Arc<DetectConfig>,
    sessions: Keys<Key, IcsKey>,
}

impl Ics {
    /// A detector for `cfg`.
    pub fn new(cfg: Arc<DetectConfig>) -> Ics {
        Ics {
            cfg,
            sessions: Keys::new(),
        }
    }
}

/// The ICS metadata of a record, with its protocol.
fn ics_app<'a>(c: &Record<'a>) -> Option<(AppProto, &'a IcsOps)> {
    let app = c.f.app.as_deref()?;
    let proto = app.proto.filter(|p| p.is_ics())?;
    Some((proto, app.ics.as_deref()?))
}

impl Detector for Ics {
    fn observe(&mut self, c: &Record<'_>, cx: &mut Context) {
        let f = c.f;
        let app = ics_app(c);
        let talked = app.is_some() || f.proto != 6 || {
            let h = f.history.as_str();
            h.contains('D') || h.contains('d')
        };
        if !talked {
            return;
        }
        // By port; else, recognized by content, the protected responder
        // (else the protected originator) is the server.
        let side = c
            .server_side(|p| ics_name(f.proto, p).is_some())
            .or_else(|| {
                app?;
                c.server_side(|_| true)
            });
        let Some((asset, client, server, port)) = side else {
            return;
        };
        if self.cfg.assets[asset].ics_clients.contains(client) {
            return;
        }
        let did = Did::of(app.map(|a| a.1));
        if did == Did::Discover && !self.cfg.ics.discovery_alerts {
            return;
        }
        let now = f.last_seen_ns;
        let k = (client, server, f.proto, port);
        let Some(key) = self.sessions.slot(k, &mut cx.evictions, IcsKey::default) else {
            return;
        };
        key.s.asset = asset;
        key.s.sessions += 1;
        key.s.last_ns = key.s.last_ns.max(now);
        key.did = key.did.max(did);
        if let Some((proto, ops)) = app {
            key.add(proto, ops);
        }
        key.s
            .pending
            .add(client, (server, Some(port)), c.counts_all(), c.ev, ALL);
        if mark(&mut key.s.fire, true, now, self.cfg.incident_timeout_ns) {
            self.sessions.mark(cx.mark_number(), k);
        }
    }

    fn finish(&mut self, _cx: &mut Context, out: &mut Vec<(u64, Finding)>) {
        let cfg = &self.cfg;
        self.sessions
            .finish(out, |(c, s, pr, p), key| ics_finding(cfg, c, s, pr, p, key));
    }

    fn sweep(&mut self, now: u64) {
        let keep = self.cfg.incident_timeout_ns;
        self.sessions.sweep(now, keep, |k| k.s.last_ns);
    }
}

/// A protocol's name in summaries.
fn title(p: AppProto) -> &'static str {
    match p {
        AppProto::Modbus => "Modbus/TCP",
        AppProto::Dnp3 => "DNP3",
        AppProto::S7comm => "S7comm",
        AppProto::S7commPlus => "S7comm-plus",
        AppProto::Iec104 => "IEC 60870-5-104",
        AppProto::Enip => "EtherNet/IP",
        AppProto::Bacnet => "BACnet/IP",
        AppProto::OpcUa => "OPC UA",
        _ => p.as_str(),
    }
}

/// "2 writes, 1 control, 4 reads" (what was seen), or what no request is.
fn operations(key: &IcsKey) -> String {
    let parts: Vec<String> = [
        (key.writes, "write"),
        (key.control, "control"),
        (key.reads, "read"),
        (key.diagnostics, "diagnostic"),
        (key.discovery, "discovery"),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}{}", plural(n)))
    .collect();
    if parts.is_empty() {
        match key.did {
            Did::Unknown => "operations unknown (no application metadata)".into(),
            _ => "no request seen".into(),
        }
    } else {
        parts.join(", ")
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn ics_finding(
    cfg: &DetectConfig,
    client: IpAddr,
    server: IpAddr,
    proto: u8,
    port: u16,
    key: &mut IcsKey,
) -> Finding {
    let asset = &cfg.assets[key.s.asset];
    let name = key
        .proto
        .map(title)
        .or_else(|| ics_name(proto, port))
        .unwrap_or("ICS");
    let functions: Vec<String> = key
        .functions
        .iter()
        .map(|&(code, n)| {
            let fname = key.proto.and_then(|p| ics_function_name(p, code));
            match fname {
                Some(f) => format!("{code} {f}: {n} PDU{}", plural(n)),
                None => format!("{code}: {n} PDU{}", plural(n)),
            }
        })
        .collect();
    let functions = if functions.is_empty() {
        String::new()
    } else {
        format!(" (function codes seen: {})", functions.join(", "))
    };
    let summary = format!(
        "{name} session from {client} to {server}:{port}: {}{functions}; {client} is not an \
         allowed ICS client of {}",
        operations(key),
        asset.name
    );
    let severity = match key.did {
        Did::Command => Some(Severity::Critical),
        Did::Discover | Did::Read => Some(Severity::from(asset.criticality)),
        // As before metadata: one above the asset's criticality.
        Did::Unknown => None,
    };
    let (ts, detected) = take_fire(&mut key.s.fire, key.s.last_ns);
    let mut f = key.s.pending.finding(
        ALL,
        AlertKind::IcsUnauthorizedClient,
        key.s.asset,
        client,
        ts,
        detected,
        key.s.sessions as f64,
        0.0,
        "sessions from a client not in ics_clients".into(),
        summary,
    );
    f.severity = severity;
    f
}
