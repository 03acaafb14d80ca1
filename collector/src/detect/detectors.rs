//! The detectors. Each keeps windows keyed by the addresses it watches.
//! When a record makes a window cross its threshold — or adds to a key
//! whose incident is still open — the key is *marked*; at the end of the
//! batch ([`Detectors::finish`]) every marked key yields one [`Finding`]
//! with its state at that point and the evidence gathered since its last
//! finding. So an attack yields one finding per batch however many records
//! it has, records arriving out of event-time order are all counted, and
//! nothing gathered after the last finding is lost when the attack stops.
//!
//! Orientation: a flow record's `src` is the side that opened it (the SYN
//! sender, else the first packet's sender). Service-based detectors (brute
//! force, ICS) find the server by its well-known port instead, because a
//! capture that starts mid-session may name the server first.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;

use hashbrown::HashMap;
use vigil_proto::{ConnState, EndReason, FlowRecord};

use super::config::{DetectConfig, FLOOD_CLASSES, FLOOD_METRICS};
use super::window::Ring;
use super::{Counts, Finding, FlowRef};
use crate::model::alert::AlertKind;

/// UDP services abused as reflectors, with their names.
pub const REFLECTOR_PORTS: &[(u16, &str)] = &[
    (17, "QOTD"),
    (19, "CharGen"),
    (53, "DNS"),
    (69, "TFTP"),
    (111, "Portmap"),
    (123, "NTP"),
    (137, "NetBIOS"),
    (161, "SNMP"),
    (389, "CLDAP"),
    (427, "SLP"),
    (500, "ISAKMP"),
    (520, "RIPv1"),
    (623, "IPMI"),
    (1194, "OpenVPN"),
    (1434, "MS-SQL"),
    (1900, "SSDP"),
    (3283, "ARD"),
    (3478, "STUN"),
    (3702, "WS-Discovery"),
    (5060, "SIP"),
    (5353, "mDNS"),
    (5683, "CoAP"),
    (6881, "BitTorrent DHT"),
    (10001, "Ubiquiti"),
    (11211, "memcached"),
    (27015, "Steam"),
    (30718, "Lantronix"),
    (32414, "Plex"),
    (33848, "Jenkins"),
    (37810, "DVR DHCPDiscover"),
    (47808, "BACnet"),
];

/// TCP remote-access and authentication services, with their names.
pub const AUTH_PORTS: &[(u16, &str)] = &[
    (21, "FTP"),
    (22, "SSH"),
    (23, "Telnet"),
    (88, "Kerberos"),
    (110, "POP3"),
    (139, "NetBIOS-SSN"),
    (143, "IMAP"),
    (389, "LDAP"),
    (445, "SMB"),
    (465, "SMTPS"),
    (587, "SMTP submission"),
    (636, "LDAPS"),
    (993, "IMAPS"),
    (995, "POP3S"),
    (1433, "MS-SQL"),
    (1521, "Oracle"),
    (2222, "SSH (alt)"),
    (3306, "MySQL"),
    (3389, "RDP"),
    (5432, "PostgreSQL"),
    (5900, "VNC"),
    (5901, "VNC"),
    (5902, "VNC"),
    (5985, "WinRM"),
    (5986, "WinRM"),
    (8291, "MikroTik Winbox"),
];

/// ICS protocols: (IP protocol, port, name).
pub const ICS_PORTS: &[(u8, u16, &str)] = &[
    (6, 502, "Modbus/TCP"),
    (6, 20000, "DNP3"),
    (17, 20000, "DNP3"),
    (6, 102, "S7comm (ISO-TSAP)"),
    (6, 2404, "IEC 60870-5-104"),
    (6, 44818, "EtherNet/IP"),
    (17, 44818, "EtherNet/IP"),
    (17, 2222, "EtherNet/IP I/O"),
    (6, 4840, "OPC UA"),
    (6, 1911, "Niagara Fox"),
    (17, 47808, "BACnet"),
];

fn name_of(list: &[(u16, &'static str)], port: u16) -> Option<&'static str> {
    list.iter().find(|(p, _)| *p == port).map(|(_, n)| *n)
}

/// Evidence refs gathered before a finding.
const PENDING_EVIDENCE: usize = 512;
/// Sources or targets gathered before a finding.
const PENDING_PARTIES: usize = 4096;
/// Keys per detector map; beyond it new keys are not tracked (counted).
const MAX_KEYS: usize = 1 << 20;
/// How often a key's distinct-item counts are recounted, event time.
const RECOUNT_NS: u64 = 1_000_000_000;
/// How often stale keys are swept, in event time.
const SWEEP_NS: u64 = 10_000_000_000;
const S: f64 = 1e9;

/// Parties and evidence gathered for a key until its next finding. Each
/// entry carries a mask of the classes it belongs to (the flood detector's
/// traffic classes; 1 elsewhere), so a finding takes only its own.
#[derive(Clone, Debug, Default)]
struct Pending {
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
    fn expire(&mut self, now: u64, keep: u64, fire: &Fire) {
        if !fire.marked && !self.is_empty() && self.last_ns.saturating_add(keep) < now {
            *self = Pending::default();
        }
    }

    fn add(&mut self, src: IpAddr, tgt: (IpAddr, Option<u16>), c: Counts, ev: FlowRef, mask: u8) {
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

    fn is_empty(&self) -> bool {
        self.evidence.is_empty() && self.more_evidence.iter().all(|m| *m == 0)
    }

    /// A finding from the entries of the classes in `only` (`ALL`: every one).
    #[allow(clippy::too_many_arguments)]
    fn finding(
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
        }
    }
}

/// Every class.
const ALL: u8 = 0xff;

/// One record, as the detectors see it.
struct Ctx<'a> {
    f: &'a FlowRecord,
    ev: FlowRef,
    src_asset: Option<usize>,
    dst_asset: Option<usize>,
}

impl Ctx<'_> {
    fn counts_fwd(&self) -> Counts {
        Counts {
            flows: 1,
            packets: self.f.fwd_packets,
            bytes: self.f.fwd_bytes,
        }
    }

    fn counts_all(&self) -> Counts {
        Counts {
            flows: 1,
            packets: self.f.packets(),
            bytes: self.f.bytes(),
        }
    }
}

/// TCP half-open or rejected: the flood detector's `syn` class.
fn half_open(s: ConnState) -> bool {
    matches!(
        s,
        ConnState::S0 | ConnState::REJ | ConnState::RSTOS0 | ConnState::SH
    )
}

/// A probe: a TCP attempt that carried no data from the prober, or a lone
/// UDP datagram from an ephemeral port (not a reflector's answer).
fn probe(f: &FlowRecord) -> bool {
    match f.proto {
        6 => {
            let h = f.history.as_str();
            !h.contains('D') && !h.contains('d') && f.fwd_packets <= 4
        }
        17 => {
            f.rev_packets == 0
                && f.fwd_packets <= 2
                && f.src_port.is_some_and(|p| p >= 1024)
                && f.src_port
                    .is_some_and(|p| name_of(REFLECTOR_PORTS, p).is_none())
        }
        _ => false,
    }
}

fn secs(ns: u64) -> f64 {
    ns as f64 / S
}

/// Formats a rate for summaries: 1234567 → "1.23 M".
fn si(v: f64) -> String {
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
struct Fire {
    /// Event time of the last finding (0: never).
    last: u64,
    marked: bool,
    /// Event time of the first record that crossed the threshold in this
    /// batch (0: marked only to update an open incident).
    crossed_ns: u64,
}

impl Fire {
    /// Whether the key's incident may still be open at `now`.
    fn open(&self, now: u64, timeout: u64) -> bool {
        self.last != 0 && now <= self.last.saturating_add(timeout)
    }
}

/// A marked key, found again at the end of the batch.
#[derive(Clone, Copy, Debug)]
enum Mark {
    Flood(IpAddr),
    FloodTotal(usize),
    Vertical(IpAddr, IpAddr),
    Horizontal(IpAddr, u8, u16),
    Brute(IpAddr, IpAddr, u16),
    Ics(IpAddr, IpAddr, u8, u16),
    Amp(IpAddr),
    Beacon(IpAddr, IpAddr, u8, u16),
    Exfil(IpAddr, IpAddr),
    Indicator(usize, IpAddr),
}

/// Marks `fire` (once per batch) when the threshold is crossed at `now` or
/// the key's incident is open; returns whether to push a [`Mark`].
fn mark(fire: &mut Fire, crossed: bool, now: u64, timeout: u64) -> bool {
    if crossed && fire.crossed_ns == 0 {
        fire.crossed_ns = now;
    }
    if fire.marked || !(crossed || fire.open(now, timeout)) {
        return false;
    }
    fire.marked = true;
    true
}

#[derive(Debug)]
struct FloodHost {
    asset: usize,
    ring: Ring<15>,
    fire: Fire,
    /// Class of the last finding (its alert kind).
    class: usize,
    /// The largest crossing in this batch: (ratio, class, metric, rate, threshold).
    peak: Option<(f64, usize, usize, f64, f64)>,
    pending: Pending,
    last_ns: u64,
}

impl FloodHost {
    fn new(asset: usize, window_ns: u64) -> FloodHost {
        FloodHost {
            asset,
            // Quarter-second buckets: the window's sum lags the true
            // trailing window by at most one bucket.
            ring: Ring::new(window_ns, (window_ns / 250_000_000).clamp(1, 240) as usize),
            fire: Fire::default(),
            class: 0,
            peak: None,
            pending: Pending::default(),
            last_ns: 0,
        }
    }

    /// Keeps a record as evidence while the host is warm; forgets what was
    /// gathered when it is not and no finding is due.
    #[allow(clippy::too_many_arguments)]
    fn gather(
        &mut self,
        warm: bool,
        keep: u64,
        from: IpAddr,
        target: (IpAddr, Option<u16>),
        packets: u64,
        bytes: u64,
        ev: FlowRef,
        mask: u8,
    ) {
        if warm {
            self.pending.expire(ev.first_ns, keep, &self.fire);
            let c = Counts {
                flows: 1,
                packets,
                bytes,
            };
            self.pending.add(from, target, c, ev, mask);
        } else if !self.pending.is_empty() && !self.fire.marked {
            self.pending = Pending::default();
        }
    }
}

#[derive(Debug, Default)]
struct ScanKey {
    asset: usize,
    /// Port or host → last probe, ns.
    seen: HashMap<ScanItem, u64>,
    fast: usize,
    evidence: Vec<FlowRef>,
    more_evidence: u64,
    counts: Counts,
    first_ns: u64,
    last_ns: u64,
    recounted_ns: u64,
    fire: Fire,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum ScanItem {
    Port(u16),
    Host(IpAddr),
}

#[derive(Debug, Default)]
struct SessionKey {
    asset: usize,
    times: VecDeque<u64>,
    pending: Pending,
    fire: Fire,
    last_ns: u64,
    sessions: u64,
}

#[derive(Debug)]
struct AmpKey {
    asset: usize,
    ring: Ring<1>,
    reflectors: HashMap<IpAddr, u64>,
    ports: HashMap<u16, u64>,
    pending: Pending,
    recounted_ns: u64,
    fire: Fire,
    /// Largest unsolicited bytes in the window during this batch.
    peak: f64,
    last_ns: u64,
}

#[derive(Debug, Default)]
struct BeaconKey {
    asset: usize,
    starts: VecDeque<u64>,
    evidence: VecDeque<FlowRef>,
    last_flow: u64,
    /// (mean interval ns, coefficient of variation) of the latest regular run.
    stats: (f64, f64),
    port: Option<u16>,
    fire: Fire,
}

/// Bytes out per (inside, outside) pair over two tumbling windows: the
/// sliding-window estimate is the previous window's share still inside it
/// plus the current one (as rate limiters estimate). A few words per pair,
/// because every outbound pair has one; evidence and the firing state are
/// allocated only once the pair is warm (a hundredth of the threshold).
#[derive(Debug)]
struct ExfilKey {
    /// Number of the current window (`now / window`).
    epoch: u64,
    cur: u64,
    prev: u64,
    last_ns: u64,
    asset: u32,
    hot: Option<Box<ExfilHot>>,
}

#[derive(Debug, Default)]
struct ExfilHot {
    pending: Pending,
    fire: Fire,
}

impl ExfilKey {
    fn add(&mut self, now: u64, window: u64, bytes: u64) {
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

    fn estimate(&self, now: u64, window: u64) -> f64 {
        let w = window.max(1);
        let into = (now % w) as f64 / w as f64;
        self.prev as f64 * (1.0 - into) + self.cur as f64
    }
}

/// One (protected host, external host) pair.
#[derive(Debug)]
struct PairKey {
    exfil: ExfilKey,
    /// The first connection the protected host opened on a (proto, port)
    /// not yet a beaconing key: (proto, port, its record).
    beacon_first: Option<(u8, u16, FlowRef)>,
    /// Beaconing keys made for this pair (0: none to look up).
    beacon_keys: u8,
}

/// A probe, as the scan detector records it.
#[derive(Clone, Copy, Debug)]
struct Probe {
    src: IpAddr,
    dst: IpAddr,
    port: u16,
    proto: u8,
    asset: usize,
    ev: FlowRef,
    counts: Counts,
    now: u64,
}

/// A prober seen once so far (its probe kept), or more often.
#[derive(Clone, Copy, Debug)]
struct FirstProbe {
    first: Option<Probe>,
    last_ns: u64,
}

/// Every detector's state.
#[derive(Debug)]
pub(crate) struct Detectors {
    cfg: Arc<DetectConfig>,
    flood: HashMap<IpAddr, FloodHost>,
    /// Whole-asset totals (all traffic), by asset index.
    flood_totals: HashMap<usize, FloodHost>,
    vertical: HashMap<(IpAddr, IpAddr), ScanKey>,
    horizontal: HashMap<(IpAddr, u8, u16), ScanKey>,
    brute: HashMap<(IpAddr, IpAddr, u16), SessionKey>,
    ics: HashMap<(IpAddr, IpAddr, u8, u16), SessionKey>,
    amp: HashMap<IpAddr, AmpKey>,
    beacon: HashMap<(IpAddr, IpAddr, u8, u16), BeaconKey>,
    /// (protected host, external host) pairs: exfiltration counters and
    /// the beaconing gate.
    pairs: HashMap<(IpAddr, IpAddr), PairKey>,
    indicator: HashMap<(usize, IpAddr), SessionKey>,
    /// First probe of each prober: detail keys are made from its second,
    /// so one-off probes (spoofed SYNs, stray packets) cost no allocation.
    probers: HashMap<IpAddr, FirstProbe>,
    /// First qualifying session per (client, server, port), likewise.
    brute_first: HashMap<(IpAddr, IpAddr, u16), (u64, FlowRef)>,
    marks: Vec<Mark>,
    watermark: u64,
    swept: u64,
    /// Keys not tracked because a map was full.
    pub evictions: u64,
}

/// Inserts `key` unless the map is full (then counts an eviction).
fn slot<'m, K: std::hash::Hash + Eq + Copy, V>(
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

impl Detectors {
    pub fn new(cfg: Arc<DetectConfig>) -> Detectors {
        Detectors {
            cfg,
            flood: HashMap::new(),
            flood_totals: HashMap::new(),
            vertical: HashMap::new(),
            horizontal: HashMap::new(),
            brute: HashMap::new(),
            ics: HashMap::new(),
            amp: HashMap::new(),
            beacon: HashMap::new(),
            pairs: HashMap::new(),
            indicator: HashMap::new(),
            probers: HashMap::new(),
            brute_first: HashMap::new(),
            marks: Vec::new(),
            watermark: 0,
            swept: 0,
            evictions: 0,
        }
    }

    /// Examines one record; returns whether it touches a protected asset.
    pub fn observe(&mut self, sensor: u32, f: &FlowRecord) -> bool {
        self.watermark = self.watermark.max(f.last_seen_ns);
        let src_asset = self.cfg.asset_of(f.src_ip);
        let dst_asset = self.cfg.asset_of(f.dst_ip);
        if src_asset.is_none() && dst_asset.is_none() {
            return false;
        }
        let c = Ctx {
            f,
            ev: FlowRef {
                sensor,
                flow_id: f.flow_id,
                first_ns: f.first_seen_ns,
            },
            src_asset,
            dst_asset,
        };
        self.flood(&c);
        self.scan(&c);
        self.amplification(&c);
        self.sessions(&c);
        self.outbound(&c);
        if !self.cfg.indicators.is_empty() {
            self.indicators(&c);
        }
        true
    }

    /// Ends a batch: one finding per marked key, then the sweep of stale keys.
    pub fn finish(&mut self, out: &mut Vec<Finding>) {
        let cfg = self.cfg.clone();
        for m in std::mem::take(&mut self.marks) {
            let f = match m {
                Mark::Flood(t) => self.flood.get_mut(&t).map(|h| flood_finding(&cfg, t, h)),
                Mark::FloodTotal(a) => self
                    .flood_totals
                    .get_mut(&a)
                    .map(|h| flood_total_finding(&cfg, a, h)),
                Mark::Vertical(s, d) => self
                    .vertical
                    .get_mut(&(s, d))
                    .map(|k| vertical_finding(&cfg, s, d, k)),
                Mark::Horizontal(s, p, port) => self
                    .horizontal
                    .get_mut(&(s, p, port))
                    .map(|k| horizontal_finding(&cfg, s, p, port, k)),
                Mark::Brute(c, s, p) => self
                    .brute
                    .get_mut(&(c, s, p))
                    .map(|k| brute_finding(&cfg, c, s, p, k)),
                Mark::Ics(c, s, pr, p) => self
                    .ics
                    .get_mut(&(c, s, pr, p))
                    .map(|k| ics_finding(&cfg, c, s, pr, p, k)),
                Mark::Amp(t) => self.amp.get_mut(&t).map(|k| amp_finding(&cfg, t, k)),
                Mark::Beacon(s, d, pr, p) => self
                    .beacon
                    .get_mut(&(s, d, pr, p))
                    .map(|k| beacon_finding(&cfg, s, d, pr, k)),
                Mark::Exfil(i, o) => self
                    .pairs
                    .get_mut(&(i, o))
                    .map(|k| exfil_finding(&cfg, i, o, &mut k.exfil)),
                Mark::Indicator(a, bad) => self
                    .indicator
                    .get_mut(&(a, bad))
                    .map(|k| indicator_finding(&cfg, a, bad, k)),
            };
            out.extend(f);
        }
        if self.watermark >= self.swept.saturating_add(SWEEP_NS) {
            self.sweep();
            self.swept = self.watermark;
        }
    }

    // ---- floods -------------------------------------------------------

    fn flood(&mut self, c: &Ctx<'_>) {
        let f = c.f;
        let timeout = self.cfg.incident_timeout_ns;
        // Traffic toward each protected side.
        let sides = [
            (
                c.dst_asset,
                f.dst_ip,
                f.dst_port,
                f.src_ip,
                f.fwd_packets,
                f.fwd_bytes,
                1.0,
            ),
            (
                c.src_asset,
                f.src_ip,
                f.src_port,
                f.dst_ip,
                f.rev_packets,
                f.rev_bytes,
                0.0,
            ),
        ];
        for (asset, target, port, from, packets, bytes, new_flow) in sides {
            let Some(asset) = asset else { continue };
            if packets == 0 {
                continue;
            }
            let mut classes = [true, false, false, false, false];
            match f.proto {
                6 => {
                    classes[1] = true;
                    classes[2] = new_flow > 0.0 && half_open(f.conn_state);
                }
                17 => classes[3] = true,
                1 | 58 => classes[4] = true,
                _ => {}
            }
            let mut v = [0.0; 15];
            for (k, on) in classes.iter().enumerate() {
                if *on {
                    v[k * 3] = packets as f64;
                    v[k * 3 + 1] = bytes as f64 * 8.0;
                    v[k * 3 + 2] = new_flow;
                }
            }
            let window = self.cfg.flood_window_ns;
            let Some(h) = slot(&mut self.flood, target, &mut self.evictions, || {
                FloodHost::new(asset, window)
            }) else {
                continue;
            };
            h.ring.add_span(f.first_seen_ns, f.last_seen_ns, &v);
            h.last_ns = h.last_ns.max(f.last_seen_ns);
            let now = f.last_seen_ns;
            let sums = h.ring.sum(now);
            let wsecs = secs(h.ring.window_ns());
            let th = &self.cfg.assets[h.asset].flood.t;
            // Evidence is gathered while the host is warm (a quarter of a
            // threshold of this record's classes) or its incident open: a
            // busy server's ordinary traffic is not kept as evidence of
            // nothing, nor paid for.
            let warm = h.fire.open(now, timeout)
                || classes.iter().enumerate().any(|(k, on)| {
                    *on && (0..3)
                        .any(|m| th[k][m] > 0.0 && sums[k * 3 + m] / wsecs >= 0.25 * th[k][m])
                });
            let mask = classes
                .iter()
                .enumerate()
                .filter(|(_, on)| **on)
                .fold(0u8, |m, (k, _)| m | (1 << k));
            h.gather(
                warm,
                2 * window,
                from,
                (target, port),
                packets,
                bytes,
                c.ev,
                mask,
            );
            // The most specific class that crossed: syn, then tcp/udp/icmp, then all.
            let mut best: Option<(f64, usize, usize, f64, f64)> = None;
            for class in [2, 1, 3, 4, 0] {
                if !classes[class] {
                    continue;
                }
                for m in 0..3 {
                    let t = th[class][m];
                    let rate = sums[class * 3 + m] / wsecs;
                    if t > 0.0 && rate >= t && best.is_none_or(|b| b.1 == class && rate / t > b.0) {
                        best = Some((rate / t, class, m, rate, t));
                    }
                }
                if best.is_some() {
                    break;
                }
            }
            if let Some(b) = best
                && h.peak.is_none_or(|p| {
                    specificity(b.1) > specificity(p.1) || (b.1 == p.1 && b.0 > p.0)
                })
            {
                h.peak = Some(b);
            }
            if mark(&mut h.fire, best.is_some(), now, timeout) {
                self.marks.push(Mark::Flood(target));
            }
            self.flood_total(c, asset, target, port, from, packets, bytes, new_flow);
        }
    }

    /// All traffic to a whole asset, against its `total_*` thresholds.
    #[allow(clippy::too_many_arguments)]
    fn flood_total(
        &mut self,
        c: &Ctx<'_>,
        asset: usize,
        target: IpAddr,
        port: Option<u16>,
        from: IpAddr,
        packets: u64,
        bytes: u64,
        new_flow: f64,
    ) {
        let th = self.cfg.assets[asset].flood.total;
        if th.iter().all(|t| *t <= 0.0) {
            return;
        }
        let f = c.f;
        let window = self.cfg.flood_window_ns;
        let timeout = self.cfg.incident_timeout_ns;
        let h = self
            .flood_totals
            .entry(asset)
            .or_insert_with(|| FloodHost::new(asset, window));
        let mut v = [0.0; 15];
        v[0] = packets as f64;
        v[1] = bytes as f64 * 8.0;
        v[2] = new_flow;
        h.ring.add_span(f.first_seen_ns, f.last_seen_ns, &v);
        h.last_ns = h.last_ns.max(f.last_seen_ns);
        let now = f.last_seen_ns;
        let sums = h.ring.sum(now);
        let wsecs = secs(h.ring.window_ns());
        let best = (0..3)
            .filter(|m| th[*m] > 0.0)
            .map(|m| (sums[m] / wsecs / th[m], 0, m, sums[m] / wsecs, th[m]))
            .max_by(|a, b| a.0.total_cmp(&b.0));
        let warm = h.fire.open(now, timeout) || best.is_some_and(|b| b.0 >= 0.25);
        h.gather(
            warm,
            2 * window,
            from,
            (target, port),
            packets,
            bytes,
            c.ev,
            ALL,
        );
        let crossed = best.filter(|b| b.0 >= 1.0);
        if let Some(b) = crossed
            && h.peak.is_none_or(|p| b.0 > p.0)
        {
            h.peak = Some(b);
        }
        if mark(&mut h.fire, crossed.is_some(), now, timeout) {
            self.marks.push(Mark::FloodTotal(asset));
        }
    }

    // ---- scans --------------------------------------------------------

    fn scan(&mut self, c: &Ctx<'_>) {
        let f = c.f;
        let Some(asset) = c.dst_asset else { return };
        if !probe(f) {
            return;
        }
        let Some(port) = f.dst_port else { return };
        let probe = Probe {
            src: f.src_ip,
            dst: f.dst_ip,
            port,
            proto: f.proto,
            asset,
            ev: c.ev,
            counts: c.counts_fwd(),
            now: f.last_seen_ns,
        };
        let slow = self.cfg.scan.slow_window_ns;
        let n = self.probers.len();
        let p = match self.probers.get_mut(&f.src_ip) {
            Some(p) => p,
            None if n < MAX_KEYS => {
                self.probers.insert(
                    f.src_ip,
                    FirstProbe {
                        first: Some(probe),
                        last_ns: probe.now,
                    },
                );
                return;
            }
            None => {
                self.evictions += 1;
                return;
            }
        };
        if p.last_ns.saturating_add(slow) < probe.now && p.first.is_none() {
            // A prober back after the slow window starts over.
            p.first = Some(probe);
            p.last_ns = probe.now;
            return;
        }
        p.last_ns = p.last_ns.max(probe.now);
        if let Some(first) = p.first.take() {
            self.add_probe(&first);
        }
        self.add_probe(&probe);
    }

    fn add_probe(&mut self, pr: &Probe) {
        let cfg = self.cfg.scan;
        let timeout = self.cfg.incident_timeout_ns;
        let (asset, now, counts, port) = (pr.asset, pr.now, pr.counts, pr.port);
        let first_seen = pr.ev.first_ns;
        let add = |key: &mut ScanKey, item: ScanItem, fast_t: usize, slow_t: usize| -> bool {
            if key.first_ns == 0 {
                key.first_ns = first_seen;
                key.asset = asset;
            }
            key.first_ns = key.first_ns.min(first_seen);
            key.last_ns = key.last_ns.max(now);
            key.counts.add(counts);
            if key.evidence.len() < PENDING_EVIDENCE {
                key.evidence.push(pr.ev);
            } else {
                key.more_evidence += 1;
            }
            match key.seen.get_mut(&item) {
                Some(t) => *t = (*t).max(now),
                None => {
                    key.seen.insert(item, now);
                    key.fast += 1;
                }
            }
            // Recount at most once a second: drop what left the slow
            // window, count what is in the fast one.
            if key.last_ns >= key.recounted_ns + RECOUNT_NS {
                recount(key, &cfg);
            }
            let crossed =
                (fast_t > 0 && key.fast >= fast_t) || (slow_t > 0 && key.seen.len() >= slow_t);
            mark(&mut key.fire, crossed, now, timeout)
        };
        let vkey = (pr.src, pr.dst);
        if let Some(key) = slot(
            &mut self.vertical,
            vkey,
            &mut self.evictions,
            ScanKey::default,
        ) && add(
            key,
            ScanItem::Port(port),
            cfg.vertical_ports,
            cfg.slow_vertical_ports,
        ) {
            self.marks.push(Mark::Vertical(vkey.0, vkey.1));
        }
        let hkey = (pr.src, pr.proto, port);
        if let Some(key) = slot(
            &mut self.horizontal,
            hkey,
            &mut self.evictions,
            ScanKey::default,
        ) && add(
            key,
            ScanItem::Host(pr.dst),
            cfg.horizontal_hosts,
            cfg.slow_horizontal_hosts,
        ) {
            self.marks.push(Mark::Horizontal(hkey.0, hkey.1, hkey.2));
        }
    }

    // ---- amplification ------------------------------------------------

    fn amplification(&mut self, c: &Ctx<'_>) {
        let f = c.f;
        let Some(asset) = c.dst_asset else { return };
        if f.proto != 17 || f.rev_packets != 0 {
            return;
        }
        let Some(sport) = f.src_port else { return };
        let cfg = &self.cfg.amplification;
        if reflector(sport, &cfg.extra_ports).is_none() {
            return;
        }
        let timeout = self.cfg.incident_timeout_ns;
        let now = f.last_seen_ns;
        let w = cfg.window_ns;
        let Some(key) = slot(&mut self.amp, f.dst_ip, &mut self.evictions, || AmpKey {
            asset,
            ring: Ring::new(w, (w / 1_000_000_000).clamp(1, 600) as usize),
            reflectors: HashMap::new(),
            ports: HashMap::new(),
            pending: Pending::default(),
            recounted_ns: 0,
            fire: Fire::default(),
            peak: 0.0,
            last_ns: 0,
        }) else {
            return;
        };
        key.ring
            .add_span(f.first_seen_ns, f.last_seen_ns, &[f.fwd_bytes as f64]);
        key.last_ns = key.last_ns.max(now);
        let t = key.reflectors.entry(f.src_ip).or_insert(now);
        *t = (*t).max(now);
        *key.ports.entry(sport).or_default() += f.fwd_bytes;
        key.pending.expire(f.first_seen_ns, 2 * w, &key.fire);
        key.pending
            .add(f.src_ip, (f.dst_ip, f.dst_port), c.counts_fwd(), c.ev, ALL);
        if key.last_ns >= key.recounted_ns + RECOUNT_NS {
            key.recounted_ns = key.last_ns;
            let last = key.last_ns;
            key.reflectors.retain(|_, t| *t + w >= last);
        }
        let bytes = key.ring.sum(now)[0];
        let crossed =
            bytes as u64 >= cfg.min_bytes && key.reflectors.len() >= cfg.min_reflectors.max(1);
        if crossed {
            key.peak = key.peak.max(bytes);
        }
        if mark(&mut key.fire, crossed, now, timeout) {
            self.marks.push(Mark::Amp(f.dst_ip));
        }
    }

    // ---- brute force and ICS (per session) -----------------------------

    fn sessions(&mut self, c: &Ctx<'_>) {
        let f = c.f;
        let timeout = self.cfg.incident_timeout_ns;
        // Server: the protected side on a service port, destination first.
        let pick = |svc: &dyn Fn(u16) -> bool| -> Option<(usize, IpAddr, IpAddr, u16)> {
            if let (Some(a), Some(p)) = (c.dst_asset, f.dst_port)
                && svc(p)
            {
                return Some((a, f.src_ip, f.dst_ip, p));
            }
            if let (Some(a), Some(p)) = (c.src_asset, f.src_port)
                && svc(p)
            {
                return Some((a, f.dst_ip, f.src_ip, p));
            }
            None
        };
        let now = f.last_seen_ns;
        // ICS sessions from clients not allowed. A TCP session counts once
        // it carries payload: a bare probe of port 502 is the scan
        // detector's business.
        let ics = |p: u16| ics_name(f.proto, p).is_some();
        let talked = f.proto != 6 || {
            let h = f.history.as_str();
            h.contains('D') || h.contains('d')
        };
        if talked
            && let Some((asset, client, server, port)) = pick(&ics)
            && !self.cfg.assets[asset].ics_clients.contains(client)
        {
            let k = (client, server, f.proto, port);
            if let Some(key) = slot(&mut self.ics, k, &mut self.evictions, SessionKey::default) {
                key.asset = asset;
                key.sessions += 1;
                key.last_ns = key.last_ns.max(now);
                key.pending
                    .add(client, (server, Some(port)), c.counts_all(), c.ev, ALL);
                if mark(&mut key.fire, true, now, timeout) {
                    self.marks.push(Mark::Ics(client, server, f.proto, port));
                }
            }
        }
        // Brute force: short or failed TCP sessions to authentication services.
        let cfg = &self.cfg.brute;
        if f.proto != 6 || cfg.sessions == 0 {
            return;
        }
        let auth = |p: u16| auth_service(p, &cfg.extra_ports).is_some();
        let Some((asset, client, server, port)) = pick(&auth) else {
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
        let (window, need) = (cfg.window_ns, cfg.sessions);
        let k = (client, server, port);
        if !self.brute.contains_key(&k) {
            match self.brute_first.get(&k) {
                None => {
                    if self.brute_first.len() < MAX_KEYS {
                        self.brute_first.insert(k, (now, c.ev));
                    } else {
                        self.evictions += 1;
                    }
                    return;
                }
                Some(&(t, _)) if t.saturating_add(window) < now => {
                    self.brute_first.insert(k, (now, c.ev));
                    return;
                }
                Some(_) => {}
            }
        }
        let first = self.brute_first.remove(&k);
        let Some(key) = slot(&mut self.brute, k, &mut self.evictions, SessionKey::default) else {
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
        if mark(&mut key.fire, key.times.len() >= need, now, timeout) {
            self.marks.push(Mark::Brute(client, server, port));
        }
    }

    // ---- outbound pairs: exfiltration and beaconing -------------------

    /// A flow between a protected host and an external one: one lookup of
    /// the pair serves the exfiltration counters and the beaconing gate.
    fn outbound(&mut self, c: &Ctx<'_>) {
        let f = c.f;
        let (asset, inside, outside, sent, port, opened_inside) = match (c.src_asset, c.dst_asset) {
            (Some(a), None) => (a, f.src_ip, f.dst_ip, f.fwd_bytes, f.dst_port, true),
            (None, Some(a)) => (a, f.dst_ip, f.src_ip, f.rev_bytes, f.src_port, false),
            _ => return,
        };
        if self.cfg.internal.contains(outside) {
            return;
        }
        let x = &self.cfg.exfil;
        let b = &self.cfg.beacon;
        let exfil_on = x.bytes > 0 && sent > 0 && !x.ignore.contains(outside);
        let beacon_on = b.min_connections > 0
            && opened_inside
            && !b.ignore.contains(outside)
            && !f.dst_port.is_some_and(|p| b.ignore_ports.contains(&p));
        if !exfil_on && !beacon_on {
            return;
        }
        let (w, limit) = (x.window_ns.max(1), x.bytes);
        let timeout = self.cfg.incident_timeout_ns;
        let now = f.last_seen_ns;
        let Some(pair) = slot(
            &mut self.pairs,
            (inside, outside),
            &mut self.evictions,
            || PairKey {
                exfil: ExfilKey {
                    epoch: now / w,
                    cur: 0,
                    prev: 0,
                    last_ns: 0,
                    asset: asset as u32,
                    hot: None,
                },
                beacon_first: None,
                beacon_keys: 0,
            },
        ) else {
            return;
        };
        pair.exfil.last_ns = pair.exfil.last_ns.max(now);
        if exfil_on {
            let key = &mut pair.exfil;
            key.add(now, w, sent);
            let total = key.estimate(now, w);
            let warm = total >= limit as f64 / 100.0;
            if warm || key.hot.is_some() {
                let hot = key.hot.get_or_insert_with(Box::default);
                if warm || hot.fire.open(now, timeout) {
                    hot.pending.add(
                        inside,
                        (outside, port),
                        Counts {
                            flows: 1,
                            packets: 0,
                            bytes: sent,
                        },
                        c.ev,
                        ALL,
                    );
                }
                if mark(&mut hot.fire, total >= limit as f64, now, timeout) {
                    self.marks.push(Mark::Exfil(inside, outside));
                }
            }
        }
        if !beacon_on {
            return;
        }
        // The pair's first connection on a (proto, port) waits in the pair;
        // the second makes a beaconing key.
        let dport = f.dst_port.unwrap_or(0);
        let k = (inside, outside, f.proto, dport);
        let mut first = None;
        if pair.beacon_keys == 0 || !self.beacon.contains_key(&k) {
            match pair.beacon_first {
                Some((pr, po, ev)) if pr == f.proto && po == dport => {
                    if ev.flow_id == f.flow_id {
                        return;
                    }
                    first = pair.beacon_first.take();
                    pair.beacon_keys = pair.beacon_keys.saturating_add(1);
                }
                _ => {
                    pair.beacon_first = Some((f.proto, dport, c.ev));
                    return;
                }
            }
        }
        self.beacon_key(c, asset, k, first);
    }

    fn beacon_key(
        &mut self,
        c: &Ctx<'_>,
        asset: usize,
        k: (IpAddr, IpAddr, u8, u16),
        first: Option<(u8, u16, FlowRef)>,
    ) {
        let f = c.f;
        let cfg = &self.cfg.beacon;
        let timeout = self.cfg.incident_timeout_ns;
        let (need, min_iv, max_iv, jitter) = (
            cfg.min_connections,
            cfg.min_interval_ns as f64,
            cfg.max_interval_ns as f64,
            cfg.max_jitter,
        );
        let Some(key) = slot(&mut self.beacon, k, &mut self.evictions, BeaconKey::default) else {
            return;
        };
        key.asset = asset;
        key.port = f.dst_port;
        if let Some((_, _, ev)) = first {
            key.starts.push_back(ev.first_ns);
            key.evidence.push_back(ev);
            key.last_flow = ev.flow_id;
        }
        if key.last_flow == f.flow_id {
            return; // a later record of the same connection
        }
        key.last_flow = f.flow_id;
        let start = f.first_seen_ns;
        if key.starts.back().is_some_and(|b| start < *b) {
            return; // out of order: ignore rather than distort the intervals
        }
        key.starts.push_back(start);
        key.evidence.push_back(c.ev);
        while key.starts.len() > need {
            key.starts.pop_front();
            key.evidence.pop_front();
        }
        if key.starts.len() < need {
            return;
        }
        let iv: Vec<f64> = key
            .starts
            .iter()
            .zip(key.starts.iter().skip(1))
            .map(|(a, b)| (b - a) as f64)
            .collect();
        let mean = iv.iter().sum::<f64>() / iv.len() as f64;
        let var = iv.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / iv.len() as f64;
        let cv = var.sqrt() / mean.max(1.0);
        let regular = mean >= min_iv && mean <= max_iv && cv <= jitter;
        if regular {
            key.stats = (mean, cv);
        }
        if regular && mark(&mut key.fire, true, f.last_seen_ns, timeout) {
            self.marks.push(Mark::Beacon(k.0, k.1, k.2, k.3));
        }
    }

    // ---- indicators ---------------------------------------------------

    fn indicators(&mut self, c: &Ctx<'_>) {
        let f = c.f;
        let timeout = self.cfg.incident_timeout_ns;
        for (bad, asset, protected_ip, inbound) in [
            (f.src_ip, c.dst_asset, f.dst_ip, true),
            (f.dst_ip, c.src_asset, f.src_ip, false),
        ] {
            let Some(asset) = asset else { continue };
            if !self.cfg.indicators.contains(bad) {
                continue;
            }
            let now = f.last_seen_ns;
            let k = (asset, bad);
            let Some(key) = slot(
                &mut self.indicator,
                k,
                &mut self.evictions,
                SessionKey::default,
            ) else {
                continue;
            };
            key.asset = asset;
            key.sessions += 1;
            key.last_ns = key.last_ns.max(now);
            let port = if inbound { f.dst_port } else { f.src_port };
            key.pending
                .add(bad, (protected_ip, port), c.counts_all(), c.ev, ALL);
            if mark(&mut key.fire, true, now, timeout) {
                self.marks.push(Mark::Indicator(asset, bad));
            }
        }
    }

    /// Drops keys that no window can use any more (and whose incident has
    /// timed out).
    fn sweep(&mut self) {
        let now = self.watermark;
        let t = self.cfg.incident_timeout_ns;
        let old = |last: u64, keep: u64| last.saturating_add(keep.max(t)) < now;
        let fw = self.cfg.flood_window_ns.saturating_mul(2);
        self.flood.retain(|_, h| !old(h.last_ns, fw));
        self.flood_totals.retain(|_, h| !old(h.last_ns, fw));
        let slow = self.cfg.scan.slow_window_ns;
        self.vertical.retain(|_, k| !old(k.last_ns, slow));
        self.horizontal.retain(|_, k| !old(k.last_ns, slow));
        let bw = self.cfg.brute.window_ns.saturating_mul(2);
        self.brute.retain(|_, k| !old(k.last_ns, bw));
        self.ics.retain(|_, k| !old(k.last_ns, 0));
        self.indicator.retain(|_, k| !old(k.last_ns, 0));
        let aw = self.cfg.amplification.window_ns.saturating_mul(2);
        self.amp.retain(|_, k| !old(k.last_ns, aw));
        let bi = self.cfg.beacon.max_interval_ns.saturating_mul(2);
        self.beacon
            .retain(|_, k| !old(k.starts.back().copied().unwrap_or(0), bi));
        let xw = self
            .cfg
            .exfil
            .window_ns
            .saturating_mul(2)
            .max(self.cfg.beacon.max_interval_ns.saturating_mul(2));
        self.pairs.retain(|_, k| !old(k.exfil.last_ns, xw));
        self.probers.retain(|_, p| !old(p.last_ns, slow));
        self.brute_first.retain(|_, (t, _)| !old(*t, bw));
    }
}

/// Syn first, then the protocol classes, then all traffic.
fn specificity(class: usize) -> u8 {
    match class {
        2 => 2,
        0 => 0,
        _ => 1,
    }
}

fn reflector(port: u16, extra: &[u16]) -> Option<&'static str> {
    name_of(REFLECTOR_PORTS, port)
        .or_else(|| extra.contains(&port).then_some("configured reflector"))
}

fn auth_service(port: u16, extra: &[u16]) -> Option<&'static str> {
    name_of(AUTH_PORTS, port).or_else(|| extra.contains(&port).then_some("configured service"))
}

fn ics_name(proto: u8, port: u16) -> Option<&'static str> {
    ICS_PORTS
        .iter()
        .find(|(pr, p, _)| *pr == proto && *p == port)
        .map(|x| x.2)
}

/// Drops items older than the slow window; counts those in the fast one.
fn recount(key: &mut ScanKey, cfg: &super::config::ScanConfig) {
    let now = key.last_ns;
    key.recounted_ns = now;
    key.seen.retain(|_, t| *t + cfg.slow_window_ns >= now);
    key.fast = key
        .seen
        .values()
        .filter(|t| **t + cfg.window_ns >= now)
        .count();
}

/// Clears the mark; returns (finding time, detection time).
fn take_fire(fire: &mut Fire, last_ns: u64) -> (u64, u64) {
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

fn flood_total_finding(cfg: &DetectConfig, asset: usize, h: &mut FloodHost) -> Finding {
    let a = &cfg.assets[asset];
    let wsecs = secs(h.ring.window_ns());
    let (m, rate, t) = match h.peak.take() {
        Some((_, _, m, rate, t)) => (m, rate, t),
        None => {
            let sums = h.ring.sum(h.last_ns);
            (0..3)
                .filter(|m| a.flood.total[*m] > 0.0)
                .map(|m| (m, sums[m] / wsecs, a.flood.total[m]))
                .max_by(|x, y| (x.1 / x.2).total_cmp(&(y.1 / y.2)))
                .unwrap_or((0, 0.0, 1.0))
        }
    };
    let (ts, detected) = take_fire(&mut h.fire, h.last_ns);
    let nets: Vec<String> = a.cidrs.iter().map(|c| c.to_string()).collect();
    let summary = format!(
        "{}{} of traffic to the whole of {} ({}) over {wsecs:.0} s (asset threshold {}{})",
        si(rate),
        FLOOD_METRICS[m],
        a.name,
        nets.join(", "),
        si(t),
        FLOOD_METRICS[m],
    );
    let key = a
        .cidrs
        .first()
        .map_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |c| c.addr);
    h.pending.finding(
        ALL,
        AlertKind::VolumetricFlood,
        asset,
        key,
        ts,
        detected,
        rate,
        t,
        format!("{} to the asset", FLOOD_METRICS[m]),
        summary,
    )
}

fn flood_finding(cfg: &DetectConfig, target: IpAddr, h: &mut FloodHost) -> Finding {
    let wsecs = secs(h.ring.window_ns());
    let (class, m, rate, t) = match h.peak.take() {
        Some((_, class, m, rate, t)) => (class, m, rate, t),
        None => {
            // An update of an open incident: its class, the figure now.
            let sums = h.ring.sum(h.last_ns);
            let th = &cfg.assets[h.asset].flood.t[h.class];
            // (A key is only marked through a threshold above 0 of its class.)
            let (m, rate, t) = (0..3)
                .filter(|m| th[*m] > 0.0)
                .map(|m| (m, sums[h.class * 3 + m] / wsecs, th[m]))
                .max_by(|a, b| (a.1 / a.2).total_cmp(&(b.1 / b.2)))
                .unwrap_or((0, 0.0, 1.0));
            (h.class, m, rate, t)
        }
    };
    h.class = class;
    let (ts, detected) = take_fire(&mut h.fire, h.last_ns);
    let kind = [
        AlertKind::VolumetricFlood,
        AlertKind::TcpFlood,
        AlertKind::SynFlood,
        AlertKind::UdpFlood,
        AlertKind::IcmpFlood,
    ][class];
    let what = if class == 2 {
        "half-open/rejected TCP"
    } else {
        FLOOD_CLASSES[class]
    };
    let summary = format!(
        "{}{} of {what} traffic to {target} over {wsecs:.0} s (threshold {}{})",
        si(rate),
        FLOOD_METRICS[m],
        si(t),
        FLOOD_METRICS[m],
    );
    h.pending.finding(
        1 << class,
        kind,
        h.asset,
        target,
        ts,
        detected,
        rate,
        t,
        FLOOD_METRICS[m].to_string(),
        summary,
    )
}

fn scan_counts(
    key: &mut ScanKey,
    fast_t: usize,
    slow_t: usize,
    cfg: &super::config::ScanConfig,
) -> (usize, usize, u64) {
    recount(key, cfg);
    let fast_hit = fast_t > 0 && key.fast >= fast_t;
    let slow_hit = slow_t > 0 && key.seen.len() >= slow_t;
    if fast_hit || !slow_hit {
        (key.fast, fast_t, cfg.window_ns)
    } else {
        (key.seen.len(), slow_t, cfg.slow_window_ns)
    }
}

#[allow(clippy::too_many_arguments)]
fn scan_finding(
    key: &mut ScanKey,
    kind: AlertKind,
    src: IpAddr,
    count: usize,
    threshold: usize,
    unit: String,
    summary: String,
    targets: Vec<(IpAddr, Option<u16>)>,
) -> Finding {
    let (ts, detected) = take_fire(&mut key.fire, key.last_ns);
    let evidence = std::mem::take(&mut key.evidence);
    let more = std::mem::take(&mut key.more_evidence);
    let counts = std::mem::take(&mut key.counts);
    let first_ns = evidence
        .iter()
        .map(|e| e.first_ns)
        .min()
        .unwrap_or(key.first_ns);
    let per = Counts {
        flows: 1,
        packets: 0,
        bytes: 0,
    };
    Finding {
        kind,
        asset: key.asset,
        key: src,
        ts_ns: ts,
        detected_ns: detected,
        first_ns,
        measured: count as f64,
        threshold: threshold as f64,
        unit,
        summary,
        sources: vec![(src, counts)],
        more_sources: 0,
        targets: targets.into_iter().map(|t| (t, per)).collect(),
        evidence,
        more_evidence: more,
    }
}

fn vertical_finding(cfg: &DetectConfig, src: IpAddr, dst: IpAddr, key: &mut ScanKey) -> Finding {
    let sc = &cfg.scan;
    let (count, t, window) = scan_counts(key, sc.vertical_ports, sc.slow_vertical_ports, sc);
    let mut ports: Vec<u16> = key
        .seen
        .keys()
        .filter_map(|i| match i {
            ScanItem::Port(p) => Some(*p),
            ScanItem::Host(_) => None,
        })
        .collect();
    ports.sort_unstable();
    let slow = window != sc.window_ns;
    let summary = format!(
        "{src} probed {count} ports of {dst} within {:.0} s{} (ports {}…{})",
        secs(window),
        if slow { " (slow scan)" } else { "" },
        ports.first().copied().unwrap_or(0),
        ports.last().copied().unwrap_or(0),
    );
    scan_finding(
        key,
        AlertKind::VerticalScan,
        src,
        count,
        t,
        format!("distinct ports in {:.0} s", secs(window)),
        summary,
        ports.iter().map(|p| (dst, Some(*p))).collect(),
    )
}

fn horizontal_finding(
    cfg: &DetectConfig,
    src: IpAddr,
    proto: u8,
    port: u16,
    key: &mut ScanKey,
) -> Finding {
    let sc = &cfg.scan;
    let (count, t, window) = scan_counts(key, sc.horizontal_hosts, sc.slow_horizontal_hosts, sc);
    let hosts: Vec<(IpAddr, Option<u16>)> = key
        .seen
        .keys()
        .filter_map(|i| match i {
            ScanItem::Host(h) => Some((*h, Some(port))),
            ScanItem::Port(_) => None,
        })
        .collect();
    let slow = window != sc.window_ns;
    let summary = format!(
        "{src} probed port {port}/{} on {count} protected hosts within {:.0} s{}",
        vigil_proto::flow::proto_name(proto),
        secs(window),
        if slow { " (slow scan)" } else { "" },
    );
    scan_finding(
        key,
        AlertKind::HorizontalScan,
        src,
        count,
        t,
        format!("distinct hosts in {:.0} s", secs(window)),
        summary,
        hosts,
    )
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

fn amp_finding(cfg: &DetectConfig, target: IpAddr, key: &mut AmpKey) -> Finding {
    let a = &cfg.amplification;
    let wsecs = secs(key.ring.window_ns());
    let bytes = if key.peak > 0.0 {
        key.peak
    } else {
        key.ring.sum(key.last_ns)[0]
    };
    key.peak = 0.0;
    let mut services: Vec<(u16, u64)> = key.ports.iter().map(|(p, b)| (*p, *b)).collect();
    services.sort_by_key(|s| std::cmp::Reverse(s.1));
    let names: Vec<String> = services
        .iter()
        .take(3)
        .map(|(p, _)| format!("{} ({p})", reflector(*p, &a.extra_ports).unwrap_or("?")))
        .collect();
    let rate = bytes * 8.0 / wsecs;
    let t = a.min_bytes as f64 * 8.0 / wsecs;
    let summary = format!(
        "{}bits/s of unsolicited {} responses to {target} from {} reflectors ({:.0} bytes in {wsecs:.0} s, none requested by the target)",
        si(rate),
        names.join(", "),
        key.reflectors.len(),
        bytes,
    );
    let (ts, detected) = take_fire(&mut key.fire, key.last_ns);
    key.pending.finding(
        ALL,
        AlertKind::Amplification,
        key.asset,
        target,
        ts,
        detected,
        rate,
        t,
        "bits/s".into(),
        summary,
    )
}

fn beacon_finding(
    cfg: &DetectConfig,
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    key: &mut BeaconKey,
) -> Finding {
    let (mean, cv) = key.stats;
    let last = key.starts.back().copied().unwrap_or(0);
    let (ts, detected) = take_fire(&mut key.fire, last);
    let port = key.port.map_or(String::new(), |p| format!(":{p}"));
    let summary = format!(
        "{src} connected to {dst}{port}/{} {} times, every {:.1} s (jitter {:.1} %)",
        vigil_proto::flow::proto_name(proto),
        key.starts.len(),
        mean / S,
        cv * 100.0
    );
    Finding {
        kind: AlertKind::Beaconing,
        asset: key.asset,
        key: src,
        ts_ns: ts,
        detected_ns: detected,
        first_ns: key.starts.front().copied().unwrap_or(last),
        measured: cv,
        threshold: cfg.beacon.max_jitter,
        unit: "interval jitter (stddev/mean)".into(),
        summary,
        sources: vec![(
            src,
            Counts {
                flows: key.starts.len() as u64,
                packets: 0,
                bytes: 0,
            },
        )],
        more_sources: 0,
        targets: vec![((dst, key.port), Counts::default())],
        evidence: key.evidence.iter().copied().collect(),
        more_evidence: 0,
    }
}

fn exfil_finding(
    cfg: &DetectConfig,
    inside: IpAddr,
    outside: IpAddr,
    key: &mut ExfilKey,
) -> Finding {
    let x = &cfg.exfil;
    let total = key.estimate(key.last_ns, x.window_ns);
    let summary = format!(
        "{inside} sent {}B to external {outside} within {:.0} s",
        si(total),
        secs(x.window_ns)
    );
    let hot = key.hot.get_or_insert_with(Box::default);
    let (ts, detected) = take_fire(&mut hot.fire, key.last_ns);
    hot.pending.finding(
        ALL,
        AlertKind::Exfiltration,
        key.asset as usize,
        inside,
        ts,
        detected,
        total,
        x.bytes as f64,
        format!("bytes out in {:.0} s", secs(x.window_ns)),
        summary,
    )
}

fn indicator_finding(
    cfg: &DetectConfig,
    asset: usize,
    bad: IpAddr,
    key: &mut SessionKey,
) -> Finding {
    let listed = cfg
        .indicators
        .get(bad)
        .and_then(|i| cfg.indicator_list.get(*i));
    let summary = match listed {
        Some(ind) => format!(
            "traffic between {} and listed {bad} ({} in {}{}{})",
            cfg.assets[asset].name,
            ind.net,
            ind.source,
            if ind.description.is_empty() { "" } else { ": " },
            ind.description
        ),
        None => format!(
            "traffic between {} and listed {bad}",
            cfg.assets[asset].name
        ),
    };
    let (ts, detected) = take_fire(&mut key.fire, key.last_ns);
    key.pending.finding(
        ALL,
        AlertKind::Indicator,
        asset,
        bad,
        ts,
        detected,
        key.sessions as f64,
        0.0,
        "flows with a listed address".into(),
        summary,
    )
}
