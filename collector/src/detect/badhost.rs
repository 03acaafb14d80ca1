//! Known-bad hosts: any flow between a protected asset and an address or
//! network of the indicator lists (`detect.indicators.files`).

use std::net::IpAddr;
use std::sync::Arc;

use super::Finding;
use super::base::{ALL, Keys, Record, SessionKey, mark, take_fire};
use super::config::DetectConfig;
use super::{Context, Detector};
use crate::model::alert::AlertKind;

/// (asset, listed address).
type Key = (usize, IpAddr);

/// The indicator detector.
#[derive(Debug)]
pub(crate) struct BadHost {
    cfg: Arc<DetectConfig>,
    hits: Keys<Key, SessionKey>,
}

impl BadHost {
    /// A detector for `cfg`.
    pub fn new(cfg: Arc<DetectConfig>) -> BadHost {
        BadHost {
            cfg,
            hits: Keys::new(),
        }
    }
}

impl Detector for BadHost {
    fn observe(&mut self, c: &Record<'_>, cx: &mut Context) {
        if self.cfg.indicators.is_empty() {
            return;
        }
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
            let Some(key) = self.hits.slot(k, &mut cx.evictions, SessionKey::default) else {
                continue;
            };
            key.asset = asset;
            key.sessions += 1;
            key.last_ns = key.last_ns.max(now);
            let port = if inbound { f.dst_port } else { f.src_port };
            key.pending
                .add(bad, (protected_ip, port), c.counts_all(), c.ev, ALL);
            if mark(&mut key.fire, true, now, timeout) {
                self.hits.mark(cx.mark_number(), k);
            }
        }
    }

    fn finish(&mut self, _cx: &mut Context, out: &mut Vec<(u64, Finding)>) {
        let cfg = &self.cfg;
        self.hits
            .finish(out, |(a, bad), key| indicator_finding(cfg, a, bad, key));
    }

    fn sweep(&mut self, now: u64) {
        let keep = self.cfg.incident_timeout_ns;
        self.hits.sweep(now, keep, |k| k.last_ns);
    }
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
