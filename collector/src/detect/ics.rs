//! ICS sessions from clients not allowed: a Modbus/TCP, DNP3, S7comm,
//! IEC 60870-5-104, EtherNet/IP, OPC UA, Niagara Fox or BACnet session
//! carrying data between a protected asset and a client outside its
//! `ics_clients` (ATT&CK for ICS T0855). A bare TCP probe of an ICS port is
//! the scan detector's business: a TCP session counts once it carries
//! payload.

use std::net::IpAddr;
use std::sync::Arc;

use super::Finding;
use super::base::{ALL, Keys, Record, SessionKey, mark, take_fire};
use super::config::DetectConfig;
use super::ports::ics_name;
use super::{Context, Detector};
use crate::model::alert::AlertKind;

/// (client, server, IP protocol, port).
type Key = (IpAddr, IpAddr, u8, u16);

/// The ICS detector.
#[derive(Debug)]
pub(crate) struct Ics {
    cfg: Arc<DetectConfig>,
    sessions: Keys<Key, SessionKey>,
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

impl Detector for Ics {
    fn observe(&mut self, c: &Record<'_>, cx: &mut Context) {
        let f = c.f;
        let talked = f.proto != 6 || {
            let h = f.history.as_str();
            h.contains('D') || h.contains('d')
        };
        if !talked {
            return;
        }
        let Some((asset, client, server, port)) = c.server_side(|p| ics_name(f.proto, p).is_some())
        else {
            return;
        };
        if self.cfg.assets[asset].ics_clients.contains(client) {
            return;
        }
        let now = f.last_seen_ns;
        let k = (client, server, f.proto, port);
        let Some(key) = self
            .sessions
            .slot(k, &mut cx.evictions, SessionKey::default)
        else {
            return;
        };
        key.asset = asset;
        key.sessions += 1;
        key.last_ns = key.last_ns.max(now);
        key.pending
            .add(client, (server, Some(port)), c.counts_all(), c.ev, ALL);
        if mark(&mut key.fire, true, now, self.cfg.incident_timeout_ns) {
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
        self.sessions.sweep(now, keep, |k| k.last_ns);
    }
}

fn ics_finding(
    cfg: &DetectConfig,
    client: IpAddr,
    server: IpAddr,
    proto: u8,
    port: u16,
    key: &mut SessionKey,
) -> Finding {
    let name = ics_name(proto, port).unwrap_or("ICS");
    let summary = format!(
        "{name} session from {client} to {server}:{port}: {client} is not an allowed ICS client of {}",
        cfg.assets[key.asset].name
    );
    let (ts, detected) = take_fire(&mut key.fire, key.last_ns);
    key.pending.finding(
        ALL,
        AlertKind::IcsUnauthorizedClient,
        key.asset,
        client,
        ts,
        detected,
        key.sessions as f64,
        0.0,
        "sessions from a client not in ics_clients".into(),
        summary,
    )
}
