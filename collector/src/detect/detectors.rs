//! The detectors. Each keeps windows keyed by the addresses it watches and
//! fires a [`Finding`] when a window crosses its threshold, and again at
//! most once a second (event time) while the attack goes on, each time with
//! the evidence gathered since.
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

use super::alert::AlertKind;
use super::config::{DetectConfig, FLOOD_CLASSES, FLOOD_METRICS};
use super::window::Ring;
use super::{Counts, Finding, FlowRef};

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
/// Least event time between two findings of one key.
const REFIRE_NS: u64 = 1_000_000_000;
/// How often stale keys are swept, in event time.
const SWEEP_NS: u64 = 10_000_000_000;
const S: f64 = 1e9;

/// Parties and evidence gathered for a key until its next finding.
#[derive(Clone, Debug, Default)]
struct Pending {
    sources: HashMap<IpAddr, Counts>,
    more_sources: u64,
    targets: HashMap<(IpAddr, Option<u16>), Counts>,
    evidence: Vec<FlowRef>,
    more_evidence: u64,
    first_ns: u64,
}

impl Pending {
    fn add(&mut self, src: IpAddr, tgt: (IpAddr, Option<u16>), c: Counts, ev: FlowRef) {
        if self.evidence.is_empty() && self.more_evidence == 0 {
            self.first_ns = ev.first_ns;
        } else {
            self.first_ns = self.first_ns.min(ev.first_ns);
        }
        let n = self.sources.len();
        match self.sources.get_mut(&src) {
            Some(x) => x.add(c),
            None if n < PENDING_PARTIES => {
                self.sources.insert(src, c);
            }
            None => self.more_sources += 1,
        }
        let n = self.targets.len();
        match self.targets.get_mut(&tgt) {
            Some(x) => x.add(c),
            None if n < PENDING_PARTIES => {
                self.targets.insert(tgt, c);
            }
            None => {}
        }
        if self.evidence.len() < PENDING_EVIDENCE {
            self.evidence.push(ev);
        } else {
            self.more_evidence += 1;
        }
    }

    fn is_empty(&self) -> bool {
        self.evidence.is_empty() && self.more_evidence == 0
    }

    #[allow(clippy::too_many_arguments)]
    fn finding(
        &mut self,
        kind: AlertKind,
        asset: usize,
        key: IpAddr,
        ts_ns: u64,
        measured: f64,
        threshold: f64,
        unit: String,
        summary: String,
    ) -> Finding {
        let p = std::mem::take(self);
        Finding {
            kind,
            asset,
            key,
            ts_ns,
            first_ns: if p.is_empty() { ts_ns } else { p.first_ns },
            measured,
            threshold,
            unit,
            summary,
            sources: p.sources.into_iter().collect(),
            more_sources: p.more_sources,
            targets: p.targets.into_iter().collect(),
            evidence: p.evidence,
            more_evidence: p.more_evidence,
        }
    }
}

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

#[derive(Debug)]
struct FloodHost {
    asset: usize,
    ring: Ring<15>,
    last_fire: [u64; 5],
    pending: Pending,
    last_ns: u64,
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
    pruned_ns: u64,
    last_fire: u64,
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
    last_fire: u64,
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
    pruned_ns: u64,
    last_fire: u64,
    last_ns: u64,
}

#[derive(Debug, Default)]
struct BeaconKey {
    asset: usize,
    starts: VecDeque<u64>,
    evidence: VecDeque<FlowRef>,
    last_flow: u64,
    last_fire: u64,
}

#[derive(Debug)]
struct ExfilKey {
    ring: Ring<1>,
    pending: Pending,
    last_fire: u64,
    last_ns: u64,
}

/// Every detector's state.
#[derive(Debug)]
pub(crate) struct Detectors {
    cfg: Arc<DetectConfig>,
    flood: HashMap<IpAddr, FloodHost>,
    vertical: HashMap<(IpAddr, IpAddr), ScanKey>,
    horizontal: HashMap<(IpAddr, u8, u16), ScanKey>,
    brute: HashMap<(IpAddr, IpAddr, u16), SessionKey>,
    ics: HashMap<(IpAddr, IpAddr, u8, u16), SessionKey>,
    amp: HashMap<IpAddr, AmpKey>,
    beacon: HashMap<(IpAddr, IpAddr, u8, u16), BeaconKey>,
    exfil: HashMap<(IpAddr, IpAddr), ExfilKey>,
    indicator: HashMap<(usize, IpAddr), SessionKey>,
    reflector_extra: Vec<u16>,
    auth_extra: Vec<u16>,
    watermark: u64,
    swept: u64,
    /// Keys not tracked because a map was full, and keys swept early.
    pub evictions: u64,
}

impl Detectors {
    pub fn new(cfg: Arc<DetectConfig>) -> Detectors {
        Detectors {
            reflector_extra: cfg.amplification.extra_ports.clone(),
            auth_extra: cfg.brute.extra_ports.clone(),
            cfg,
            flood: HashMap::new(),
            vertical: HashMap::new(),
            horizontal: HashMap::new(),
            brute: HashMap::new(),
            ics: HashMap::new(),
            amp: HashMap::new(),
            beacon: HashMap::new(),
            exfil: HashMap::new(),
            indicator: HashMap::new(),
            watermark: 0,
            swept: 0,
            evictions: 0,
        }
    }

    fn external(&self, ip: IpAddr) -> bool {
        self.cfg.asset_of(ip).is_none() && !self.cfg.internal.contains(ip)
    }

    /// Examines one record; returns whether it touches a protected asset.
    pub fn observe(&mut self, sensor: u32, f: &FlowRecord, out: &mut Vec<Finding>) -> bool {
        self.watermark = self.watermark.max(f.last_seen_ns);
        if self.watermark >= self.swept.saturating_add(SWEEP_NS) {
            self.sweep();
            self.swept = self.watermark;
        }
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
        self.flood(&c, out);
        self.scan(&c, out);
        self.amplification(&c, out);
        self.sessions(&c, out);
        self.beacon(&c, out);
        self.exfil(&c, out);
        if !self.cfg.indicators.is_empty() {
            self.indicators(&c, out);
        }
        true
    }

    // ---- floods -------------------------------------------------------

    fn flood(&mut self, c: &Ctx<'_>, out: &mut Vec<Finding>) {
        let f = c.f;
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
            let n = self.flood.len();
            let h = match self.flood.get_mut(&target) {
                Some(h) => h,
                None if n < MAX_KEYS => self.flood.entry(target).or_insert(FloodHost {
                    asset,
                    ring: Ring::new(window, (window / 1_000_000_000).max(1) as usize),
                    last_fire: [0; 5],
                    pending: Pending::default(),
                    last_ns: 0,
                }),
                None => {
                    self.evictions += 1;
                    continue;
                }
            };
            h.ring.add_span(f.first_seen_ns, f.last_seen_ns, &v);
            h.last_ns = h.last_ns.max(f.last_seen_ns);
            // Gather evidence while it is recent; forget it when stale.
            if !h.pending.is_empty() && h.pending.first_ns + 2 * window < f.first_seen_ns {
                h.pending = Pending::default();
            }
            h.pending.add(
                from,
                (target, port),
                Counts {
                    flows: 1,
                    packets,
                    bytes,
                },
                c.ev,
            );
            let now = f.last_seen_ns;
            let sums = h.ring.sum(now);
            let wsecs = secs(h.ring.window_ns());
            let th = &self.cfg.assets[h.asset].flood.t;
            // The most specific class that crossed: syn, then tcp/udp/icmp, then all.
            let mut best: Option<(usize, usize, f64, f64)> = None;
            for class in [2, 1, 3, 4, 0] {
                if !classes[class] {
                    continue;
                }
                for m in 0..3 {
                    let t = th[class][m];
                    let rate = sums[class * 3 + m] / wsecs;
                    if t > 0.0
                        && rate >= t
                        && best.is_none_or(|b| b.0 == class && rate / t > b.2 / b.3)
                    {
                        best = Some((class, m, rate, t));
                    }
                }
                if best.is_some() {
                    break;
                }
            }
            let Some((class, m, rate, t)) = best else {
                continue;
            };
            if h.last_fire[class] != 0 && now < h.last_fire[class] + REFIRE_NS {
                continue;
            }
            h.last_fire[class] = now;
            let kind = [
                AlertKind::VolumetricFlood,
                AlertKind::TcpFlood,
                AlertKind::SynFlood,
                AlertKind::UdpFlood,
                AlertKind::IcmpFlood,
            ][class];
            let n_src = h.pending.sources.len() as u64 + h.pending.more_sources;
            let what = match class {
                2 => "half-open/rejected TCP",
                _ => FLOOD_CLASSES[class],
            };
            let summary = format!(
                "{}{} of {what} traffic to {target} over {wsecs:.0} s (threshold {}{}) from {n_src} source(s)",
                si(rate),
                FLOOD_METRICS[m],
                si(t),
                FLOOD_METRICS[m],
            );
            out.push(h.pending.finding(
                kind,
                h.asset,
                target,
                now,
                rate,
                t,
                FLOOD_METRICS[m].to_string(),
                summary,
            ));
        }
    }

    // ---- scans --------------------------------------------------------

    fn scan(&mut self, c: &Ctx<'_>, out: &mut Vec<Finding>) {
        let f = c.f;
        let Some(asset) = c.dst_asset else { return };
        if !probe(f) {
            return;
        }
        let Some(port) = f.dst_port else { return };
        let cfg = self.cfg.scan;
        let now = f.last_seen_ns;
        let counts = c.counts_fwd();
        let go = |key: &mut ScanKey,
                  item: ScanItem,
                  fast_t: usize,
                  slow_t: usize|
         -> Option<(usize, usize, bool)> {
            if key.first_ns == 0 {
                key.first_ns = f.first_seen_ns;
                key.asset = asset;
            }
            key.last_ns = key.last_ns.max(now);
            key.counts.add(counts);
            if key.evidence.len() < PENDING_EVIDENCE {
                key.evidence.push(c.ev);
            } else {
                key.more_evidence += 1;
            }
            if key.seen.insert(item, now).is_none() {
                key.fast += 1;
            }
            // Recount at most once a second: drop what left the slow
            // window, count what is in the fast one.
            if now >= key.pruned_ns + REFIRE_NS {
                key.pruned_ns = now;
                key.seen.retain(|_, t| *t + cfg.slow_window_ns >= now);
                key.fast = key
                    .seen
                    .values()
                    .filter(|t| **t + cfg.window_ns >= now)
                    .count();
            }
            let slow = key.seen.len();
            let fast_hit = fast_t > 0 && key.fast >= fast_t;
            let slow_hit = slow_t > 0 && slow >= slow_t;
            if !(fast_hit || slow_hit) {
                return None;
            }
            if key.last_fire != 0 && now < key.last_fire + REFIRE_NS {
                return None;
            }
            key.last_fire = now;
            Some(if fast_hit {
                (key.fast, fast_t, true)
            } else {
                (slow, slow_t, false)
            })
        };
        // Vertical: one source, one protected host, many ports.
        let n = self.vertical.len();
        let vkey = (f.src_ip, f.dst_ip);
        if n < MAX_KEYS || self.vertical.contains_key(&vkey) {
            let key = self.vertical.entry(vkey).or_default();
            if let Some((count, t, fast)) = go(
                key,
                ScanItem::Port(port),
                cfg.vertical_ports,
                cfg.slow_vertical_ports,
            ) {
                let window = if fast {
                    cfg.window_ns
                } else {
                    cfg.slow_window_ns
                };
                let mut ports: Vec<u16> = key
                    .seen
                    .keys()
                    .filter_map(|i| match i {
                        ScanItem::Port(p) => Some(*p),
                        ScanItem::Host(_) => None,
                    })
                    .collect();
                ports.sort_unstable();
                let summary = format!(
                    "{} probed {count} ports of {} within {:.0} s{} (ports {}…{})",
                    f.src_ip,
                    f.dst_ip,
                    secs(window),
                    if fast { "" } else { " (slow scan)" },
                    ports.first().copied().unwrap_or(0),
                    ports.last().copied().unwrap_or(0),
                );
                out.push(scan_finding(
                    key,
                    AlertKind::VerticalScan,
                    f.src_ip,
                    now,
                    count,
                    t,
                    format!("distinct ports in {:.0} s", secs(window)),
                    summary,
                    ports.iter().map(|p| (f.dst_ip, Some(*p))).collect(),
                ));
            }
        } else {
            self.evictions += 1;
        }
        // Horizontal: one source, one port, many protected hosts.
        let n = self.horizontal.len();
        let hkey = (f.src_ip, f.proto, port);
        if n < MAX_KEYS || self.horizontal.contains_key(&hkey) {
            let key = self.horizontal.entry(hkey).or_default();
            if let Some((count, t, fast)) = go(
                key,
                ScanItem::Host(f.dst_ip),
                cfg.horizontal_hosts,
                cfg.slow_horizontal_hosts,
            ) {
                let window = if fast {
                    cfg.window_ns
                } else {
                    cfg.slow_window_ns
                };
                let hosts: Vec<(IpAddr, Option<u16>)> = key
                    .seen
                    .keys()
                    .filter_map(|i| match i {
                        ScanItem::Host(h) => Some((*h, Some(port))),
                        ScanItem::Port(_) => None,
                    })
                    .collect();
                let summary = format!(
                    "{} probed port {port}/{} on {count} protected hosts within {:.0} s{}",
                    f.src_ip,
                    f.proto_name(),
                    secs(window),
                    if fast { "" } else { " (slow scan)" },
                );
                out.push(scan_finding(
                    key,
                    AlertKind::HorizontalScan,
                    f.src_ip,
                    now,
                    count,
                    t,
                    format!("distinct hosts in {:.0} s", secs(window)),
                    summary,
                    hosts,
                ));
            }
        } else {
            self.evictions += 1;
        }
    }

    // ---- amplification ------------------------------------------------

    fn reflector(&self, port: u16) -> Option<&'static str> {
        name_of(REFLECTOR_PORTS, port).or_else(|| {
            self.reflector_extra
                .contains(&port)
                .then_some("configured reflector")
        })
    }

    fn amplification(&mut self, c: &Ctx<'_>, out: &mut Vec<Finding>) {
        let f = c.f;
        let Some(asset) = c.dst_asset else { return };
        if f.proto != 17 || f.rev_packets != 0 {
            return;
        }
        let Some(sport) = f.src_port else { return };
        if self.reflector(sport).is_none() {
            return;
        }
        let cfg = &self.cfg.amplification;
        let now = f.last_seen_ns;
        let n = self.amp.len();
        let key = match self.amp.get_mut(&f.dst_ip) {
            Some(k) => k,
            None if n < MAX_KEYS => self.amp.entry(f.dst_ip).or_insert(AmpKey {
                asset,
                ring: Ring::new(
                    cfg.window_ns,
                    (cfg.window_ns / 1_000_000_000).clamp(1, 600) as usize,
                ),
                reflectors: HashMap::new(),
                ports: HashMap::new(),
                pending: Pending::default(),
                pruned_ns: 0,
                last_fire: 0,
                last_ns: 0,
            }),
            None => {
                self.evictions += 1;
                return;
            }
        };
        key.ring
            .add_span(f.first_seen_ns, f.last_seen_ns, &[f.fwd_bytes as f64]);
        key.last_ns = key.last_ns.max(now);
        key.reflectors.insert(f.src_ip, now);
        *key.ports.entry(sport).or_default() += f.fwd_bytes;
        if !key.pending.is_empty() && key.pending.first_ns + 2 * cfg.window_ns < f.first_seen_ns {
            key.pending = Pending::default();
        }
        key.pending
            .add(f.src_ip, (f.dst_ip, f.dst_port), c.counts_fwd(), c.ev);
        if now >= key.pruned_ns + REFIRE_NS {
            key.pruned_ns = now;
            let w = cfg.window_ns;
            key.reflectors.retain(|_, t| *t + w >= now);
        }
        let bytes = key.ring.sum(now)[0];
        let wsecs = secs(key.ring.window_ns());
        let reflectors = key.reflectors.len();
        if (bytes as u64) < cfg.min_bytes || reflectors < cfg.min_reflectors.max(1) {
            return;
        }
        if key.last_fire != 0 && now < key.last_fire + REFIRE_NS {
            return;
        }
        key.last_fire = now;
        let mut services: Vec<(u16, u64)> = key.ports.iter().map(|(p, b)| (*p, *b)).collect();
        services.sort_by_key(|b| std::cmp::Reverse(b.1));
        let names: Vec<String> = services
            .iter()
            .take(3)
            .map(|(p, _)| {
                format!(
                    "{} ({p})",
                    name_of(REFLECTOR_PORTS, *p).unwrap_or("configured reflector")
                )
            })
            .collect();
        let rate = bytes * 8.0 / wsecs;
        let t = cfg.min_bytes as f64 * 8.0 / wsecs;
        let summary = format!(
            "{}bits/s of unsolicited {} responses to {} from {reflectors} reflectors ({:.0} bytes in {wsecs:.0} s; none requested by the target)",
            si(rate),
            names.join(", "),
            f.dst_ip,
            bytes,
        );
        out.push(key.pending.finding(
            AlertKind::Amplification,
            key.asset,
            f.dst_ip,
            now,
            rate,
            t,
            "bits/s".into(),
            summary,
        ));
    }

    // ---- brute force and ICS (per session) -----------------------------

    fn auth_service(&self, port: u16) -> Option<&'static str> {
        name_of(AUTH_PORTS, port).or_else(|| {
            self.auth_extra
                .contains(&port)
                .then_some("configured service")
        })
    }

    fn sessions(&mut self, c: &Ctx<'_>, out: &mut Vec<Finding>) {
        let f = c.f;
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
        let ics = |p: u16| {
            ICS_PORTS
                .iter()
                .any(|(pr, port, _)| *pr == f.proto && *port == p)
        };
        let talked = f.proto != 6 || {
            let h = f.history.as_str();
            h.contains('D') || h.contains('d')
        };
        if talked
            && let Some((asset, client, server, port)) = pick(&ics)
            && !self.cfg.assets[asset].ics_clients.contains(client)
        {
            let n = self.ics.len();
            let k = (client, server, f.proto, port);
            if n < MAX_KEYS || self.ics.contains_key(&k) {
                let key = self.ics.entry(k).or_default();
                key.asset = asset;
                key.sessions += 1;
                key.last_ns = key.last_ns.max(now);
                key.pending
                    .add(client, (server, Some(port)), c.counts_all(), c.ev);
                if key.last_fire == 0 || now >= key.last_fire + REFIRE_NS {
                    key.last_fire = now;
                    let proto = ICS_PORTS
                        .iter()
                        .find(|(pr, p, _)| *pr == f.proto && *p == port)
                        .map_or("ICS", |x| x.2);
                    let summary = format!(
                        "{proto} session from {client} to {server}:{port}: {client} is not an allowed ICS client of {}",
                        self.cfg.assets[asset].name
                    );
                    out.push(key.pending.finding(
                        AlertKind::IcsUnauthorizedClient,
                        asset,
                        client,
                        now,
                        key.sessions as f64,
                        0.0,
                        "sessions from a client not in ics_clients".into(),
                        summary,
                    ));
                }
            } else {
                self.evictions += 1;
            }
        }
        // Brute force: short or failed TCP sessions to authentication services.
        if f.proto != 6 {
            return;
        }
        let auth = |p: u16| self.auth_service(p).is_some();
        let Some((asset, client, server, port)) = pick(&auth) else {
            return;
        };
        if self.cfg.assets[asset].management_clients.contains(client) {
            return;
        }
        let cfg = &self.cfg.brute;
        if cfg.sessions == 0 {
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
        let svc = self.auth_service(port).unwrap_or("service");
        let n = self.brute.len();
        let k = (client, server, port);
        if !(n < MAX_KEYS || self.brute.contains_key(&k)) {
            self.evictions += 1;
            return;
        }
        let key = self.brute.entry(k).or_default();
        key.asset = asset;
        key.last_ns = key.last_ns.max(now);
        key.times.push_back(now);
        while key.times.front().is_some_and(|t| *t + cfg.window_ns < now) {
            key.times.pop_front();
        }
        if !key.pending.is_empty() && key.pending.first_ns + 2 * cfg.window_ns < f.first_seen_ns {
            key.pending = Pending::default();
        }
        key.pending
            .add(client, (server, Some(port)), c.counts_all(), c.ev);
        let count = key.times.len();
        if count < cfg.sessions || (key.last_fire != 0 && now < key.last_fire + REFIRE_NS) {
            return;
        }
        key.last_fire = now;
        let summary = format!(
            "{client} made {count} short or failed {svc} sessions to {server}:{port} within {:.0} s",
            secs(cfg.window_ns)
        );
        out.push(key.pending.finding(
            AlertKind::BruteForce,
            asset,
            client,
            now,
            count as f64,
            cfg.sessions as f64,
            format!("short or failed sessions in {:.0} s", secs(cfg.window_ns)),
            summary,
        ));
    }

    // ---- beaconing ----------------------------------------------------

    fn beacon(&mut self, c: &Ctx<'_>, out: &mut Vec<Finding>) {
        let f = c.f;
        let cfg = &self.cfg.beacon;
        if cfg.min_connections == 0 {
            return;
        }
        let Some(asset) = c.src_asset else { return };
        if !self.external(f.dst_ip) || cfg.ignore.contains(f.dst_ip) {
            return;
        }
        let port = f.dst_port.unwrap_or(0);
        if f.dst_port.is_some_and(|p| cfg.ignore_ports.contains(&p)) {
            return;
        }
        let k = (f.src_ip, f.dst_ip, f.proto, port);
        let n = self.beacon.len();
        if !(n < MAX_KEYS || self.beacon.contains_key(&k)) {
            self.evictions += 1;
            return;
        }
        let key = self.beacon.entry(k).or_default();
        key.asset = asset;
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
        let need = cfg.min_connections;
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
        if mean < cfg.min_interval_ns as f64 || mean > cfg.max_interval_ns as f64 {
            return;
        }
        let var = iv.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / iv.len() as f64;
        let cv = var.sqrt() / mean;
        if cv > cfg.max_jitter {
            return;
        }
        let now = f.last_seen_ns;
        if key.last_fire != 0 && now < key.last_fire + REFIRE_NS {
            return;
        }
        key.last_fire = now;
        let evidence: Vec<FlowRef> = key.evidence.iter().copied().collect();
        let summary = format!(
            "{} connected to {}:{port}/{} {} times, every {:.1} s (jitter {:.1} %)",
            f.src_ip,
            f.dst_ip,
            f.proto_name(),
            key.starts.len(),
            mean / S,
            cv * 100.0
        );
        out.push(Finding {
            kind: AlertKind::Beaconing,
            asset,
            key: f.src_ip,
            ts_ns: now,
            first_ns: key.starts.front().copied().unwrap_or(start),
            measured: cv,
            threshold: cfg.max_jitter,
            unit: "interval jitter (stddev/mean)".into(),
            summary,
            sources: vec![(
                f.src_ip,
                Counts {
                    flows: key.starts.len() as u64,
                    packets: 0,
                    bytes: 0,
                },
            )],
            more_sources: 0,
            targets: vec![((f.dst_ip, f.dst_port), Counts::default())],
            evidence,
            more_evidence: 0,
        });
    }

    // ---- exfiltration -------------------------------------------------

    fn exfil(&mut self, c: &Ctx<'_>, out: &mut Vec<Finding>) {
        let f = c.f;
        let cfg = &self.cfg.exfil;
        if cfg.bytes == 0 {
            return;
        }
        // Bytes a protected host sent to an external one, either way round.
        let (asset, inside, outside, sent, port) = match (c.src_asset, c.dst_asset) {
            (Some(a), None) => (a, f.src_ip, f.dst_ip, f.fwd_bytes, f.dst_port),
            (None, Some(a)) => (a, f.dst_ip, f.src_ip, f.rev_bytes, f.src_port),
            _ => return,
        };
        if sent == 0 || !self.external(outside) || cfg.ignore.contains(outside) {
            return;
        }
        let now = f.last_seen_ns;
        let k = (inside, outside);
        let n = self.exfil.len();
        let key = match self.exfil.get_mut(&k) {
            Some(x) => x,
            None if n < MAX_KEYS => self.exfil.entry(k).or_insert(ExfilKey {
                ring: Ring::new(cfg.window_ns, 60),
                pending: Pending::default(),
                last_fire: 0,
                last_ns: 0,
            }),
            None => {
                self.evictions += 1;
                return;
            }
        };
        key.ring
            .add_span(f.first_seen_ns, f.last_seen_ns, &[sent as f64]);
        key.last_ns = key.last_ns.max(now);
        if !key.pending.is_empty() && key.pending.first_ns + 2 * cfg.window_ns < f.first_seen_ns {
            key.pending = Pending::default();
        }
        key.pending.add(
            inside,
            (outside, port),
            Counts {
                flows: 1,
                packets: 0,
                bytes: sent,
            },
            c.ev,
        );
        let total = key.ring.sum(now)[0];
        if total < cfg.bytes as f64 || (key.last_fire != 0 && now < key.last_fire + REFIRE_NS) {
            return;
        }
        key.last_fire = now;
        let summary = format!(
            "{inside} sent {}B to external {outside} within {:.0} s",
            si(total),
            secs(cfg.window_ns)
        );
        out.push(key.pending.finding(
            AlertKind::Exfiltration,
            asset,
            inside,
            now,
            total,
            cfg.bytes as f64,
            format!("bytes out in {:.0} s", secs(cfg.window_ns)),
            summary,
        ));
    }

    // ---- indicators ---------------------------------------------------

    fn indicators(&mut self, c: &Ctx<'_>, out: &mut Vec<Finding>) {
        let f = c.f;
        for (bad, asset, protected_ip, inbound) in [
            (f.src_ip, c.dst_asset, f.dst_ip, true),
            (f.dst_ip, c.src_asset, f.src_ip, false),
        ] {
            let Some(asset) = asset else { continue };
            let Some(&idx) = self.cfg.indicators.get(bad) else {
                continue;
            };
            let now = f.last_seen_ns;
            let k = (asset, bad);
            let n = self.indicator.len();
            if !(n < MAX_KEYS || self.indicator.contains_key(&k)) {
                self.evictions += 1;
                continue;
            }
            let key = self.indicator.entry(k).or_default();
            key.asset = asset;
            key.sessions += 1;
            key.last_ns = key.last_ns.max(now);
            let port = if inbound { f.dst_port } else { f.src_port };
            key.pending
                .add(bad, (protected_ip, port), c.counts_all(), c.ev);
            if key.last_fire != 0 && now < key.last_fire + REFIRE_NS {
                continue;
            }
            key.last_fire = now;
            let ind = &self.cfg.indicator_list[idx];
            let summary = format!(
                "{} {bad} (listed: {} in {}{}{})",
                if inbound {
                    format!("{protected_ip} was contacted by")
                } else {
                    format!("{protected_ip} contacted")
                },
                ind.net,
                ind.source,
                if ind.description.is_empty() { "" } else { ": " },
                ind.description
            );
            out.push(key.pending.finding(
                AlertKind::Indicator,
                asset,
                bad,
                now,
                key.sessions as f64,
                0.0,
                "flows with a listed address".into(),
                summary,
            ));
        }
    }

    /// Drops keys that no window can use any more.
    fn sweep(&mut self) {
        let now = self.watermark;
        let old = |last: u64, keep: u64| last.saturating_add(keep) < now;
        let fw = self.cfg.flood_window_ns.saturating_mul(2);
        self.flood.retain(|_, h| !old(h.last_ns, fw));
        let slow = self.cfg.scan.slow_window_ns;
        self.vertical.retain(|_, k| !old(k.last_ns, slow));
        self.horizontal.retain(|_, k| !old(k.last_ns, slow));
        let bw = self.cfg.brute.window_ns.saturating_mul(2);
        self.brute.retain(|_, k| !old(k.last_ns, bw));
        self.ics.retain(|_, k| !old(k.last_ns, 60_000_000_000));
        self.indicator
            .retain(|_, k| !old(k.last_ns, 60_000_000_000));
        let aw = self.cfg.amplification.window_ns.saturating_mul(2);
        self.amp.retain(|_, k| !old(k.last_ns, aw));
        let bi = self.cfg.beacon.max_interval_ns.saturating_mul(2);
        self.beacon
            .retain(|_, k| !old(k.starts.back().copied().unwrap_or(0), bi));
        let xw = self.cfg.exfil.window_ns;
        self.exfil.retain(|_, k| !old(k.last_ns, xw));
    }
}

#[allow(clippy::too_many_arguments)]
fn scan_finding(
    key: &mut ScanKey,
    kind: AlertKind,
    src: IpAddr,
    now: u64,
    count: usize,
    threshold: usize,
    unit: String,
    summary: String,
    targets: Vec<(IpAddr, Option<u16>)>,
) -> Finding {
    let evidence = std::mem::take(&mut key.evidence);
    let more = std::mem::take(&mut key.more_evidence);
    let counts = std::mem::take(&mut key.counts);
    let per = Counts {
        flows: 1,
        packets: 0,
        bytes: 0,
    };
    Finding {
        kind,
        asset: key.asset,
        key: src,
        ts_ns: now,
        first_ns: key.first_ns,
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
