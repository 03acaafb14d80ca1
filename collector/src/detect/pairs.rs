//! The (protected host, external host) pairs: state that exfiltration and
//! beaconing share, lent to both in the detectors' [`Context`]. Each keeps
//! its part of a pair here ([`PairKey`]) so that one table, bounded like
//! every detector map, holds every outbound pair once.
//!
//! [`Context`]: super::detector::Context

use std::net::IpAddr;

use hashbrown::HashMap;

use super::FlowRef;
use super::config::DetectConfig;
use super::detector::{MAX_KEYS, Record};
use super::exfil::ExfilKey;

/// One (protected host, external host) pair.
#[derive(Debug)]
pub(crate) struct PairKey {
    /// Exfiltration's byte counts.
    pub exfil: ExfilKey,
    /// Beaconing's gate: the first connection the protected host opened
    /// on a (proto, port) not yet a beaconing key: (proto, port, record).
    pub beacon_first: Option<(u8, u16, FlowRef)>,
    /// Beaconing keys made for this pair (0: none to look up).
    pub beacon_keys: u8,
    /// Newest record's end, ns.
    pub last_ns: u64,
}

/// A record between a protected host and an external one, oriented.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Outbound {
    /// The protected host's asset.
    pub asset: usize,
    /// The protected host.
    pub inside: IpAddr,
    /// The external host.
    pub outside: IpAddr,
    /// Bytes the protected host sent.
    pub sent: u64,
    /// The external host's port.
    pub port: Option<u16>,
    /// Whether the protected host opened the flow.
    pub opened_inside: bool,
}

impl Outbound {
    /// The record as an outbound pair, if it is one: one end protected,
    /// the other neither protected nor in `detect.internal_networks`.
    pub fn of(c: &Record<'_>, cfg: &DetectConfig) -> Option<Outbound> {
        let f = c.f;
        let o = match (c.src_asset, c.dst_asset) {
            (Some(asset), None) => Outbound {
                asset,
                inside: f.src_ip,
                outside: f.dst_ip,
                sent: f.fwd_bytes,
                port: f.dst_port,
                opened_inside: true,
            },
            (None, Some(asset)) => Outbound {
                asset,
                inside: f.dst_ip,
                outside: f.src_ip,
                sent: f.rev_bytes,
                port: f.src_port,
                opened_inside: false,
            },
            _ => return None,
        };
        (!cfg.internal.contains(o.outside)).then_some(o)
    }
}

/// The pairs.
#[derive(Debug, Default)]
pub(crate) struct Pairs {
    map: HashMap<(IpAddr, IpAddr), PairKey>,
    /// The record last refused a pair for want of room: counted once
    /// however many detectors ask for it.
    refused: Option<FlowRef>,
}

impl Pairs {
    /// The pair of `o`, made (its exfiltration windows of `window_ns`
    /// starting at the record) if it is new and there is room; without
    /// room, `None`, counted in `evictions` once per record.
    pub fn slot(
        &mut self,
        c: &Record<'_>,
        o: &Outbound,
        window_ns: u64,
        evictions: &mut u64,
    ) -> Option<&mut PairKey> {
        let now = c.f.last_seen_ns;
        let k = (o.inside, o.outside);
        if self.map.len() >= MAX_KEYS && !self.map.contains_key(&k) {
            if self.refused != Some(c.ev) {
                self.refused = Some(c.ev);
                *evictions += 1;
            }
            return None;
        }
        let pair = self.map.entry(k).or_insert_with(|| PairKey {
            exfil: ExfilKey::new(now, window_ns, o.asset),
            beacon_first: None,
            beacon_keys: 0,
            last_ns: 0,
        });
        pair.last_ns = pair.last_ns.max(now);
        Some(pair)
    }

    /// The pair (inside, outside), if kept.
    pub fn get_mut(&mut self, inside: IpAddr, outside: IpAddr) -> Option<&mut PairKey> {
        self.map.get_mut(&(inside, outside))
    }

    /// Drops the pairs neither detector can use at `now` any more.
    pub fn sweep(&mut self, now: u64, cfg: &DetectConfig) {
        let keep = cfg
            .exfil
            .window_ns
            .saturating_mul(2)
            .max(cfg.beacon.max_interval_ns.saturating_mul(2))
            .max(cfg.incident_timeout_ns);
        self.map
            .retain(|_, k| k.last_ns.saturating_add(keep) >= now);
    }
}
