//! Scans: one source probing many ports of one protected host (vertical)
//! or one port on many protected hosts (horizontal), fast (within a short
//! window) or slow (within hours). A probe is a TCP attempt that carried no
//! data from the prober, or a lone UDP datagram from an ephemeral port.
//! A prober's first probe waits in a table of its own: keys are made from
//! its second, so one-off probes (spoofed SYNs, stray packets) cost no
//! allocation.

use std::net::IpAddr;
use std::sync::Arc;

use hashbrown::HashMap;
use vigil_proto::FlowRecord;

use super::base::{
    Fire, MAX_KEYS, PENDING_EVIDENCE, RECOUNT_NS, Record, mark, secs, slot, take_fire,
};
use super::config::{DetectConfig, ScanConfig};
use super::ports::{REFLECTOR_PORTS, name_of};
use super::{Context, Detector};
use super::{Counts, Finding, FlowRef};
use crate::model::alert::AlertKind;

/// A marked key.
#[derive(Clone, Copy, Debug)]
enum Mark {
    /// (source, target).
    Vertical(IpAddr, IpAddr),
    /// (source, IP protocol, port).
    Horizontal(IpAddr, u8, u16),
}

/// The scan detector.
#[derive(Debug)]
pub(crate) struct Scan {
    cfg: Arc<DetectConfig>,
    vertical: HashMap<(IpAddr, IpAddr), ScanKey>,
    horizontal: HashMap<(IpAddr, u8, u16), ScanKey>,
    /// First probe of each prober.
    probers: HashMap<IpAddr, FirstProbe>,
    marks: Vec<(u64, Mark)>,
}

impl Scan {
    /// A detector for `cfg`.
    pub fn new(cfg: Arc<DetectConfig>) -> Scan {
        Scan {
            cfg,
            vertical: HashMap::new(),
            horizontal: HashMap::new(),
            probers: HashMap::new(),
            marks: Vec::new(),
        }
    }
}

impl Detector for Scan {
    fn observe(&mut self, r: &Record<'_>, cx: &mut Context) {
        self.on_record(r, cx);
    }

    fn finish(&mut self, _cx: &mut Context, out: &mut Vec<(u64, Finding)>) {
        for (n, m) in std::mem::take(&mut self.marks) {
            let f = match m {
                Mark::Vertical(s, d) => self
                    .vertical
                    .get_mut(&(s, d))
                    .map(|k| vertical_finding(&self.cfg, s, d, k)),
                Mark::Horizontal(s, p, port) => self
                    .horizontal
                    .get_mut(&(s, p, port))
                    .map(|k| horizontal_finding(&self.cfg, s, p, port, k)),
            };
            out.extend(f.map(|f| (n, f)));
        }
    }

    fn sweep(&mut self, now: u64) {
        let keep = self
            .cfg
            .scan
            .slow_window_ns
            .max(self.cfg.incident_timeout_ns);
        let fresh = |last: u64| last.saturating_add(keep) >= now;
        self.vertical.retain(|_, k| fresh(k.last_ns));
        self.horizontal.retain(|_, k| fresh(k.last_ns));
        self.probers.retain(|_, p| fresh(p.last_ns));
    }
}

/// UDP destination ports of traceroute's probes (33434 up, one per hop and
/// try): a traceroute crosses many ports of its target and is not a scan.
const TRACEROUTE_PORTS: std::ops::RangeInclusive<u16> = 33434..=33534;

/// A probe: a TCP attempt that carried no data from the prober, or a lone
/// UDP datagram from an ephemeral port (not a reflector's answer, not a
/// traceroute's).
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
                && !f.dst_port.is_some_and(|p| TRACEROUTE_PORTS.contains(&p))
        }
        _ => false,
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

impl Scan {
    fn on_record(&mut self, c: &Record<'_>, cx: &mut Context) {
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
                cx.evictions += 1;
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
            self.add_probe(&first, cx);
        }
        self.add_probe(&probe, cx);
    }

    fn add_probe(&mut self, pr: &Probe, cx: &mut Context) {
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
            &mut cx.evictions,
            ScanKey::default,
        ) && add(
            key,
            ScanItem::Port(port),
            cfg.vertical_ports,
            cfg.slow_vertical_ports,
        ) {
            self.marks
                .push((cx.mark_number(), Mark::Vertical(vkey.0, vkey.1)));
        }
        let hkey = (pr.src, pr.proto, port);
        if let Some(key) = slot(
            &mut self.horizontal,
            hkey,
            &mut cx.evictions,
            ScanKey::default,
        ) && add(
            key,
            ScanItem::Host(pr.dst),
            cfg.horizontal_hosts,
            cfg.slow_horizontal_hosts,
        ) {
            self.marks
                .push((cx.mark_number(), Mark::Horizontal(hkey.0, hkey.1, hkey.2)));
        }
    }
}

/// Drops items older than the slow window; counts those in the fast one.
fn recount(key: &mut ScanKey, cfg: &ScanConfig) {
    let now = key.last_ns;
    key.recounted_ns = now;
    key.seen.retain(|_, t| *t + cfg.slow_window_ns >= now);
    key.fast = key
        .seen
        .values()
        .filter(|t| **t + cfg.window_ns >= now)
        .count();
}

fn scan_counts(
    key: &mut ScanKey,
    fast_t: usize,
    slow_t: usize,
    cfg: &ScanConfig,
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
        severity: None,
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
