//! Floods, per protected host in the FastNetMon manner: packets/s, bits/s
//! and flows/s over a short window, per traffic class (half-open or
//! rejected TCP, TCP, UDP, ICMP, all), spoofed sources counted; and,
//! optionally, all traffic to a whole asset against its `total_*`
//! thresholds (carpet bombing). A record's counts are spread evenly over
//! its span.

use std::net::IpAddr;
use std::sync::Arc;

use hashbrown::HashMap;
use vigil_proto::ConnState;

use super::base::{ALL, Fire, Pending, Record, mark, secs, si, slot, take_fire};
use super::config::{DetectConfig, FLOOD_CLASSES, FLOOD_METRICS};
use super::window::Ring;
use super::{Context, Detector};
use super::{Counts, Finding, FlowRef};
use crate::model::alert::AlertKind;

/// A marked key.
#[derive(Clone, Copy, Debug)]
enum Mark {
    /// A protected host.
    Host(IpAddr),
    /// A whole asset, by index.
    Total(usize),
}

/// The flood detector.
#[derive(Debug)]
pub(crate) struct Flood {
    cfg: Arc<DetectConfig>,
    hosts: HashMap<IpAddr, FloodHost>,
    /// Whole-asset totals (all traffic), by asset index.
    totals: HashMap<usize, FloodHost>,
    marks: Vec<(u64, Mark)>,
}

impl Flood {
    /// A detector for `cfg`.
    pub fn new(cfg: Arc<DetectConfig>) -> Flood {
        Flood {
            cfg,
            hosts: HashMap::new(),
            totals: HashMap::new(),
            marks: Vec::new(),
        }
    }
}

impl Detector for Flood {
    fn observe(&mut self, r: &Record<'_>, cx: &mut Context) {
        self.on_record(r, cx);
    }

    fn finish(&mut self, _cx: &mut Context, out: &mut Vec<(u64, Finding)>) {
        for (n, m) in std::mem::take(&mut self.marks) {
            let f = match m {
                Mark::Host(t) => self
                    .hosts
                    .get_mut(&t)
                    .map(|h| flood_finding(&self.cfg, t, h)),
                Mark::Total(a) => self
                    .totals
                    .get_mut(&a)
                    .map(|h| flood_total_finding(&self.cfg, a, h)),
            };
            out.extend(f.map(|f| (n, f)));
        }
    }

    fn sweep(&mut self, now: u64) {
        let keep = self
            .cfg
            .flood_window_ns
            .saturating_mul(2)
            .max(self.cfg.incident_timeout_ns);
        self.hosts
            .retain(|_, h| h.last_ns.saturating_add(keep) >= now);
        self.totals
            .retain(|_, h| h.last_ns.saturating_add(keep) >= now);
    }
}

/// TCP half-open or rejected: the flood detector's `syn` class.
fn half_open(s: ConnState) -> bool {
    matches!(
        s,
        ConnState::S0 | ConnState::REJ | ConnState::RSTOS0 | ConnState::SH
    )
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

impl Flood {
    fn on_record(&mut self, c: &Record<'_>, cx: &mut Context) {
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
            let Some(h) = slot(&mut self.hosts, target, &mut cx.evictions, || {
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
                self.marks.push((cx.mark_number(), Mark::Host(target)));
            }
            self.total(c, cx, asset, target, port, from, packets, bytes, new_flow);
        }
    }

    /// All traffic to a whole asset, against its `total_*` thresholds.
    #[allow(clippy::too_many_arguments)]
    fn total(
        &mut self,
        c: &Record<'_>,
        cx: &mut Context,
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
            .totals
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
            self.marks.push((cx.mark_number(), Mark::Total(asset)));
        }
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
