//! What every detector builds on: the record as detectors see it, marking
//! a key for a finding ([`mark`]), the evidence gathered until then
//! ([`Pending`]), bounded key maps ([`slot`]), and the key of the
//! session-counting detectors.
//!
//! Orientation: a flow record's `src` is the side that opened it (the SYN
//! sender, else the first packet's sender). Service-based detectors (brute
//! force, ICS) find the server by its well-known port instead, because a
//! capture that starts mid-session may name the server first.

use std::collections::VecDeque;
use std::net::IpAddr;

use hashbrown::HashMap;
use vigil_proto::FlowRecord;

use super::{Counts, Finding, FlowRef};
use crate::model::alert::AlertKind;

/// Evidence refs gathered before a finding.
pub(crate) const PENDING_EVIDENCE: usize = 512;
/// Sources or targets gathered before a finding.
pub(crate) const PENDING_PARTIES: usize = 4096;
/// Keys per detector map; beyond it new keys are not tracked (counted).
pub(crate) const MAX_KEYS: usize = 1 << 20;
/// How often a key's distinct-item counts are recounted, event time.
pub(crate) const RECOUNT_NS: u64 = 1_000_000_000;
/// Nanoseconds in a second.
pub(crate) const S: f64 = 1e9;

/// Parties and evidence gathered for a key until its next finding. Each
/// entry carries a mask of the classes it belongs to (the flood detector's
/// traffic classes; 1 elsewhere), so a finding takes only its own.
#[derive(Clone, Debug, Default)]
pub(crate) struct Pending {
    sources: HashMap<IpAddr, (Counts, u8)>,
    more_sources: u64,
    targets: HashMap<(IpAddr, Option<u16>), (Counts, u8)>,
    evidence: Vec<(FlowRef, u8)>,
    /// Evidence beyond the kept, per class bit.
    more_evidence: [u64; 8],
    first_ns: u64,
    /// Newest evidence start, ns.
    last_ns: u64,
}

impl Pending {
    /// Forgets what was gathered if its newest piece is older than `keep`
    /// before `now` and no finding is due: evidence of nothing.
    pub fn expire(&mut self, now: u64, keep: u64, fire: &Fire) {
        if !fire.marked && !self.is_empty() && self.last_ns.saturating_add(keep) < now {
            *self = Pending::default();
        }
    }

    pub fn add(
        &mut self,
        src: IpAddr,
        tgt: (IpAddr, Option<u16>),
        c: Counts,
        ev: FlowRef,
        mask: u8,
    ) {
        if self.is_empty() {
            self.first_ns = ev.first_ns;
            self.last_ns = ev.first_ns;
        } else {
            self.first_ns = self.first_ns.min(ev.first_ns);
            self.last_ns = self.last_ns.max(ev.first_ns);
        }
        let n = self.sources.len();
        match self.sources.get_mut(&src) {
            Some(x) => {
                x.0.add(c);
                x.1 |= mask;
            }
            None if n < PENDING_PARTIES => {
                self.sources.insert(src, (c, mask));
            }
            None => self.more_sources += 1,
        }
        let n = self.targets.len();
        match self.targets.get_mut(&tgt) {
            Some(x) => {
                x.0.add(c);
                x.1 |= mask;
            }
            None if n < PENDING_PARTIES => {
                self.targets.insert(tgt, (c, mask));
            }
            None => {}
        }
        if self.evidence.len() < PENDING_EVIDENCE {
            self.evidence.push((ev, mask));
        } else {
            for (b, m) in self.more_evidence.iter_mut().enumerate() {
                if mask & (1 << b) != 0 {
                    *m += 1;
                }
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.evidence.is_empty() && self.more_evidence.iter().all(|m| *m == 0)
    }

    /// A finding from the entries of the classes in `only` (`ALL`: every one).
    #[allow(clippy::too_many_arguments)]
    pub fn finding(
        &mut self,
        only: u8,
        kind: AlertKind,
        asset: usize,
        key: IpAddr,
        ts_ns: u64,
        detected_ns: u64,
        measured: f64,
        threshold: f64,
        unit: String,
        summary: String,
    ) -> Finding {
        let p = std::mem::take(self);
        let evidence: Vec<FlowRef> = p
            .evidence
            .into_iter()
            .filter(|(_, m)| m & only != 0)
            .map(|(e, _)| e)
            .collect();
        let more_evidence = (0..8)
            .filter(|b| only & (1 << b) != 0)
            .map(|b| p.more_evidence[b])
            .max()
            .unwrap_or(0);
        Finding {
            kind,
            asset,
            key,
            ts_ns,
            detected_ns,
            first_ns: evidence.iter().map(|e| e.first_ns).min().unwrap_or(ts_ns),
            measured,
            threshold,
            unit,
            summary,
            sources: p
                .sources
                .into_iter()
                .filter(|(_, (_, m))| m & only != 0)
                .map(|(k, (c, _))| (k, c))
                .collect(),
            more_sources: p.more_sources,
            targets: p
                .targets
                .into_iter()
                .filter(|(_, (_, m))| m & only != 0)
                .map(|(k, (c, _))| (k, c))
                .collect(),
            evidence,
            more_evidence,
            severity: None,
        }
    }
}

/// Every class.
pub(crate) const ALL: u8 = 0xff;

/// One record, as the detectors see it: the record, its evidence
/// reference, and the protected asset at each end.
pub(crate) struct Record<'a> {
    pub f: &'a FlowRecord,
    pub ev: FlowRef,
    pub src_asset: Option<usize>,
    pub dst_asset: Option<usize>,
}

impl Record<'_> {
    /// The server of a service: the protected side on a port `svc` names,
    /// the responder first. (asset, client, server, port).
    pub fn server_side(&self, svc: impl Fn(u16) -> bool) -> Option<(usize, IpAddr, IpAddr, u16)> {
        let f = self.f;
        if let (Some(a), Some(p)) = (self.dst_asset, f.dst_port)
            && svc(p)
        {
            return Some((a, f.src_ip, f.dst_ip, p));
        }
        if let (Some(a), Some(p)) = (self.src_asset, f.src_port)
            && svc(p)
        {
            return Some((a, f.dst_ip, f.src_ip, p));
        }
        None
    }

    /// The initiator's side: one flow, its packets and bytes.
    pub fn counts_fwd(&self) -> Counts {
        Counts {
            flows: 1,
            packets: self.f.fwd_packets,
            bytes: self.f.fwd_bytes,
        }
    }

    /// Both sides: one flow, all its packets and bytes.
    pub fn counts_all(&self) -> Counts {
        Counts {
            flows: 1,
            packets: self.f.packets(),
            bytes: self.f.bytes(),
        }
    }
}

/// Nanoseconds as seconds.
pub(crate) fn secs(ns: u64) -> f64 {
    ns as f64 / S
}

/// Formats a rate for summaries: 1234567 → "1.23 M".
pub(crate) fn si(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.2} G", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1} k", v / 1e3)
    } else {
        format!("{v:.0} ")
    }
}

/// When a key last yielded a finding, and whether it is marked for one at
/// the end of this batch.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Fire {
    /// Event time of the last finding (0: never).
    pub last: u64,
    pub marked: bool,
    /// Event time of the first record that crossed the threshold in this
    /// batch (0: marked only to update an open incident).
    pub crossed_ns: u64,
}

impl Fire {
    /// Whether the key's incident may still be open at `now`.
    pub fn open(&self, now: u64, timeout: u64) -> bool {
        self.last != 0 && now <= self.last.saturating_add(timeout)
    }
}

/// Marks `fire` (once per batch) when the threshold is crossed at `now` or
/// the key's incident is open; returns whether to record a mark (a key is marked once per batch).
pub(crate) fn mark(fire: &mut Fire, crossed: bool, now: u64, timeout: u64) -> bool {
    if crossed && fire.crossed_ns == 0 {
        fire.crossed_ns = now;
    }
    if fire.marked || !(crossed || fire.open(now, timeout)) {
        return false;
    }
    fire.marked = true;
    true
}

/// Clears the mark; returns (finding time, detection time).
pub(crate) fn take_fire(fire: &mut Fire, last_ns: u64) -> (u64, u64) {
    let detected = if fire.crossed_ns != 0 {
        fire.crossed_ns
    } else {
        last_ns
    };
    *fire = Fire {
        last: last_ns,
        marked: false,
        crossed_ns: 0,
    };
    (last_ns, detected)
}

/// Inserts `key` unless the map is full (then counts an eviction).
pub(crate) fn slot<'m, K: std::hash::Hash + Eq + Copy, V>(
    map: &'m mut HashMap<K, V>,
    key: K,
    evictions: &mut u64,
    make: impl FnOnce() -> V,
) -> Option<&'m mut V> {
    let n = map.len();
    if n >= MAX_KEYS && !map.contains_key(&key) {
        *evictions += 1;
        return None;
    }
    Some(map.entry(key).or_insert_with(make))
}

/// A detector's keys: their state in a bounded map ([`slot`]), and the
/// keys marked in this batch, each with its mark's number.
#[derive(Debug)]
pub(crate) struct Keys<K, V> {
    map: HashMap<K, V>,
    marks: Vec<(u64, K)>,
}

impl<K: std::hash::Hash + Eq + Copy, V> Keys<K, V> {
    /// No keys.
    pub fn new() -> Self {
        Keys {
            map: HashMap::new(),
            marks: Vec::new(),
        }
    }

    /// Whether `k` has state.
    pub fn contains(&self, k: &K) -> bool {
        self.map.contains_key(k)
    }

    /// The state of `k`, made by `make` if new and there is room (else
    /// `None`, counted in `evictions`).
    pub fn slot(&mut self, k: K, evictions: &mut u64, make: impl FnOnce() -> V) -> Option<&mut V> {
        slot(&mut self.map, k, evictions, make)
    }

    /// Marks `k` for a finding at the end of the batch, as mark `number`.
    pub fn mark(&mut self, number: u64, k: K) {
        self.marks.push((number, k));
    }

    /// Ends a batch: `finding` of every marked key still kept, with its
    /// mark's number.
    pub fn finish(
        &mut self,
        out: &mut Vec<(u64, Finding)>,
        mut finding: impl FnMut(K, &mut V) -> Finding,
    ) {
        for (n, k) in std::mem::take(&mut self.marks) {
            if let Some(v) = self.map.get_mut(&k) {
                out.push((n, finding(k, v)));
            }
        }
    }

    /// Drops the keys whose last event (`last`) is more than `keep` before
    /// `now`.
    pub fn sweep(&mut self, now: u64, keep: u64, last: impl Fn(&V) -> u64) {
        self.map.retain(|_, v| last(v).saturating_add(keep) >= now);
    }
}

/// A key of one session-counting detector (brute force, ICS, indicators).
#[derive(Debug, Default)]
pub(crate) struct SessionKey {
    /// The protected asset.
    pub asset: usize,
    /// Session times in the window, in order (brute force).
    pub times: VecDeque<u64>,
    /// Evidence since the last finding.
    pub pending: Pending,
    /// Marking state.
    pub fire: Fire,
    /// Newest record's end, ns.
    pub last_ns: u64,
    /// Sessions counted.
    pub sessions: u64,
}
