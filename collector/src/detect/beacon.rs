//! Beaconing: a protected host opening connections to one external host
//! and port at regular intervals (mean within bounds, jitter below a
//! bound), the way implants call home. NTP and DNS, and configured
//! destinations, are ignored. The pair's first connection on a (proto,
//! port) waits in the shared pair table ([`super::pairs`]); the second
//! makes a key here.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;

use super::base::{Fire, Keys, Record, S, mark, take_fire};
use super::config::DetectConfig;
use super::pairs::Outbound;
use super::{Context, Detector};
use super::{Counts, Finding, FlowRef};
use crate::model::alert::AlertKind;

/// (inside, outside, IP protocol, port).
type Key = (IpAddr, IpAddr, u8, u16);

/// The beaconing detector.
#[derive(Debug)]
pub(crate) struct Beacon {
    cfg: Arc<DetectConfig>,
    keys: Keys<Key, BeaconKey>,
}

impl Beacon {
    /// A detector for `cfg`.
    pub fn new(cfg: Arc<DetectConfig>) -> Beacon {
        Beacon {
            cfg,
            keys: Keys::new(),
        }
    }
}

impl Detector for Beacon {
    fn observe(&mut self, c: &Record<'_>, cx: &mut Context) {
        let f = c.f;
        let b = &self.cfg.beacon;
        let Some(o) = Outbound::of(c, &self.cfg) else {
            return;
        };
        if b.min_connections == 0
            || !o.opened_inside
            || b.ignore.contains(o.outside)
            || f.dst_port.is_some_and(|p| b.ignore_ports.contains(&p))
        {
            return;
        }
        let w = self.cfg.exfil.window_ns.max(1);
        let Some(pair) = cx.pairs.slot(c, &o, w, &mut cx.evictions) else {
            return;
        };
        // The pair's first connection on a (proto, port) waits in the pair;
        // the second makes a beaconing key.
        let dport = f.dst_port.unwrap_or(0);
        let k = (o.inside, o.outside, f.proto, dport);
        let mut first = None;
        if pair.beacon_keys == 0 || !self.keys.contains(&k) {
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
        self.key(c, cx, o.asset, k, first);
    }

    fn finish(&mut self, _cx: &mut Context, out: &mut Vec<(u64, Finding)>) {
        let cfg = &self.cfg;
        self.keys
            .finish(out, |(s, d, pr, _), key| beacon_finding(cfg, s, d, pr, key));
    }

    fn sweep(&mut self, now: u64) {
        let keep = self
            .cfg
            .beacon
            .max_interval_ns
            .saturating_mul(2)
            .max(self.cfg.incident_timeout_ns);
        self.keys
            .sweep(now, keep, |k| k.starts.back().copied().unwrap_or(0));
    }
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

impl Beacon {
    fn key(
        &mut self,
        c: &Record<'_>,
        cx: &mut Context,
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
        let Some(key) = self.keys.slot(k, &mut cx.evictions, BeaconKey::default) else {
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
            self.keys.mark(cx.mark_number(), k);
        }
    }
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
        severity: None,
    }
}
