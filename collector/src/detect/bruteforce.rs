//! Brute force: many short (within `max_duration` and `max_bytes`) or
//! failed TCP sessions from one client to a remote-access or
//! authentication service of a protected host (SSH, RDP, FTP, Telnet, VNC,
//! SMB, LDAP, databases, … and those configured) within a window. The
//! asset's management clients are never counted. A pair's first
//! qualifying session waits in a table of its own: keys are made from its
//! second.

use std::net::IpAddr;
use std::sync::Arc;

use hashbrown::HashMap;
use vigil_proto::{ConnState, EndReason};

use super::base::{ALL, Keys, MAX_KEYS, Record, SessionKey, mark, secs, take_fire};
use super::config::DetectConfig;
use super::ports::auth_service;
use super::{Context, Detector};
use super::{Counts, Finding, FlowRef};
use crate::model::alert::AlertKind;

/// (client, server, port).
type Key = (IpAddr, IpAddr, u16);

/// The brute-force detector.
#[derive(Debug)]
pub(crate) struct BruteForce {
    cfg: Arc<DetectConfig>,
    sessions: Keys<Key, SessionKey>,
    /// First qualifying session per key, until its second.
    first: HashMap<Key, (u64, FlowRef)>,
}

impl BruteForce {
    /// A detector for `cfg`.
    pub fn new(cfg: Arc<DetectConfig>) -> BruteForce {
        BruteForce {
            cfg,
            sessions: Keys::new(),
            first: HashMap::new(),
        }
    }
}

impl Detector for BruteForce {
    fn observe(&mut self, c: &Record<'_>, cx: &mut Context) {
        let f = c.f;
        let cfg = &self.cfg.brute;
        if f.proto != 6 || cfg.sessions == 0 {
            return;
        }
        let Some((asset, client, server, port)) =
            c.server_side(|p| auth_service(p, &cfg.extra_ports).is_some())
        else {
            return;
        };
        if self.cfg.assets[asset].management_clients.contains(client) {
            return;
        }
        let failed = matches!(
            f.conn_state,
            ConnState::S0
                | ConnState::REJ
                | ConnState::RSTO
                | ConnState::RSTR
                | ConnState::RSTOS0
                | ConnState::RSTRH
                | ConnState::SH
                | ConnState::SHR
        );
        let short = f.end_reason != EndReason::Active
            && f.last_seen_ns.saturating_sub(f.first_seen_ns) <= cfg.max_duration_ns
            && f.bytes() <= cfg.max_bytes;
        if !(failed || short) {
            return;
        }
        let now = f.last_seen_ns;
        let (window, need) = (cfg.window_ns, cfg.sessions);
        let k = (client, server, port);
        if !self.sessions.contains(&k) {
            match self.first.get(&k) {
                None => {
                    if self.first.len() < MAX_KEYS {
                        self.first.insert(k, (now, c.ev));
                    } else {
                        cx.evictions += 1;
                    }
                    return;
                }
                Some(&(t, _)) if t.saturating_add(window) < now => {
                    self.first.insert(k, (now, c.ev));
                    return;
                }
                Some(_) => {}
            }
        }
        let first = self.first.remove(&k);
        let Some(key) = self
            .sessions
            .slot(k, &mut cx.evictions, SessionKey::default)
        else {
            return;
        };
        if let Some((t, ev)) = first {
            key.sessions += 1;
            key.times.push_back(t);
            key.pending.add(
                client,
                (server, Some(port)),
                Counts {
                    flows: 1,
                    packets: 0,
                    bytes: 0,
                },
                ev,
                ALL,
            );
        }
        key.asset = asset;
        key.last_ns = key.last_ns.max(now);
        key.sessions += 1;
        // Session times in order, so that the window holds whatever order
        // the records come in.
        let pos = key.times.partition_point(|t| *t <= now);
        key.times.insert(pos, now);
        let last = key.last_ns;
        while key.times.front().is_some_and(|t| *t + window < last) {
            key.times.pop_front();
        }
        key.pending.expire(f.first_seen_ns, 2 * window, &key.fire);
        key.pending
            .add(client, (server, Some(port)), c.counts_all(), c.ev, ALL);
        if mark(
            &mut key.fire,
            key.times.len() >= need,
            now,
            self.cfg.incident_timeout_ns,
        ) {
            self.sessions.mark(cx.mark_number(), k);
        }
    }

    fn finish(&mut self, _cx: &mut Context, out: &mut Vec<(u64, Finding)>) {
        let cfg = &self.cfg;
        self.sessions
            .finish(out, |(c, s, p), key| brute_finding(cfg, c, s, p, key));
    }

    fn sweep(&mut self, now: u64) {
        let keep = self
            .cfg
            .brute
            .window_ns
            .saturating_mul(2)
            .max(self.cfg.incident_timeout_ns);
        self.sessions.sweep(now, keep, |k| k.last_ns);
        self.first.retain(|_, (t, _)| t.saturating_add(keep) >= now);
    }
}

fn brute_finding(
    cfg: &DetectConfig,
    client: IpAddr,
    server: IpAddr,
    port: u16,
    key: &mut SessionKey,
) -> Finding {
    let b = &cfg.brute;
    let count = key.times.len();
    let svc = auth_service(port, &b.extra_ports).unwrap_or("service");
    let summary = format!(
        "{client} made {count} short or failed {svc} sessions to {server}:{port} within {:.0} s ({} in all)",
        secs(b.window_ns),
        key.sessions
    );
    let (ts, detected) = take_fire(&mut key.fire, key.last_ns);
    key.pending.finding(
        ALL,
        AlertKind::BruteForce,
        key.asset,
        client,
        ts,
        detected,
        count as f64,
        b.sessions as f64,
        format!("short or failed sessions in {:.0} s", secs(b.window_ns)),
        summary,
    )
}
