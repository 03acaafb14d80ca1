//! The (protected host, external host) pairs: state that exfiltration and
//! beaconing share, lent to both in the detectors' [`Context`]. Each keeps
//! its part of a pair here ([`PairKey`]) so that one table, bounded like
//! every detector map, holds every outbound pair once.
//!
//! [`Context`]: super::Context

use std::net::IpAddr;

use hashbrown::HashMap;

use super::FlowRef;
use super::base::{Fire, MAX_KEYS, Pending, Record};
use super::config::DetectConfig;

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

/// Bytes out per (inside, outside) pair over two tumbling windows: the
/// sliding-window estimate is the previous window's share still inside it
/// plus the current one (as rate limiters estimate). A few words per pair,
/// because every outbound pair has one; evidence and the firing state are
/// allocated only once the pair is warm (a hundredth of the threshold).
#[derive(Debug)]
pub(crate) struct ExfilKey {
    /// Number of the current window (`now / window`).
    epoch: u64,
    cur: u64,
    prev: u64,
    /// The protected host's asset.
    pub asset: u32,
    /// Evidence and marking state, once the pair is warm.
    pub hot: Option<Box<ExfilHot>>,
}

#[derive(Debug, Default)]
pub(crate) struct ExfilHot {
    /// Evidence since the last finding.
    pub pending: Pending,
    /// Marking state.
    pub fire: Fire,
}

impl ExfilKey {
    /// A pair's counts, its windows starting at `now`.
    pub fn new(now: u64, window_ns: u64, asset: usize) -> ExfilKey {
        ExfilKey {
            epoch: now / window_ns.max(1),
            cur: 0,
            prev: 0,
            asset: asset as u32,
            hot: None,
        }
    }

    pub fn add(&mut self, now: u64, window: u64, bytes: u64) {
        let e = now / window.max(1);
        if e > self.epoch {
            self.prev = if e == self.epoch + 1 { self.cur } else { 0 };
            self.cur = 0;
            self.epoch = e;
        }
        if e + 1 >= self.epoch {
            self.cur += bytes;
        }
    }

    pub fn estimate(&self, now: u64, window: u64) -> f64 {
        let w = window.max(1);
        let into = (now % w) as f64 / w as f64;
        self.prev as f64 * (1.0 - into) + self.cur as f64
    }
}
