//! Known-bad hosts: any flow between a protected asset and an address or
//! network of the indicator lists (`detect.indicators.files`), and any
//! lookup of a listed domain (or a name under it) by a protected host: its
//! DNS query name, TLS server name (SNI) or HTTP `Host`, from the flow's
//! application metadata.

use std::net::IpAddr;
use std::sync::Arc;

use super::Finding;
use super::base::{ALL, Keys, Record, SessionKey, mark, take_fire};
use super::config::DetectConfig;
use super::{Context, Detector};
use crate::model::alert::AlertKind;

/// (asset, listed address).
type Key = (usize, IpAddr);

/// (asset, protected host that looked the name up, indicator entry).
type NameKey = (usize, IpAddr, usize);

/// A listed domain's lookups by one protected host.
#[derive(Debug, Default)]
struct NameHits {
    s: SessionKey,
    /// The first name seen and where ("DNS query", "TLS SNI", "HTTP Host").
    seen: Option<(String, &'static str)>,
}

/// The indicator detector.
#[derive(Debug)]
pub(crate) struct BadHost {
    cfg: Arc<DetectConfig>,
    hits: Keys<Key, SessionKey>,
    names: Keys<NameKey, NameHits>,
}

impl BadHost {
    /// A detector for `cfg`.
    pub fn new(cfg: Arc<DetectConfig>) -> BadHost {
        BadHost {
            cfg,
            hits: Keys::new(),
            names: Keys::new(),
        }
    }

    /// A lookup of a listed domain in the record's metadata.
    fn names(&mut self, c: &Record<'_>, cx: &mut Context) {
        let f = c.f;
        let Some(app) = f.app.as_deref() else { return };
        let (name, via) = if let Some(d) = &app.dns {
            (d.qname.as_str(), "DNS query")
        } else if let Some(t) = &app.tls {
            (t.sni.as_str(), "TLS SNI")
        } else if let Some(h) = &app.http {
            // `Host` may carry a port.
            let h = h.host.as_str();
            let bare = match h.rsplit_once(':') {
                Some((n, p)) if !n.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => h,
            };
            (bare, "HTTP Host")
        } else {
            return;
        };
        let Some(entry) = self.cfg.indicators.domain(name) else {
            return;
        };
        // The protected side that asked, else the protected side asked.
        let (asset, host, peer, port) = match (c.src_asset, c.dst_asset) {
            (Some(a), _) => (a, f.src_ip, f.dst_ip, f.dst_port),
            (None, Some(a)) => (a, f.dst_ip, f.src_ip, f.dst_port),
            (None, None) => return,
        };
        let now = f.last_seen_ns;
        let k = (asset, host, entry);
        let Some(key) = self.names.slot(k, &mut cx.evictions, NameHits::default) else {
            return;
        };
        key.s.asset = asset;
        key.s.sessions += 1;
        key.s.last_ns = key.s.last_ns.max(now);
        if key.seen.is_none() {
            let name = name.strip_suffix('.').unwrap_or(name);
            key.seen = Some((name.to_ascii_lowercase(), via));
        }
        key.s
            .pending
            .add(host, (peer, port), c.counts_all(), c.ev, ALL);
        if mark(&mut key.s.fire, true, now, self.cfg.incident_timeout_ns) {
            self.names.mark(cx.mark_number(), k);
        }
    }
}

impl Detector for BadHost {
    fn observe(&mut self, c: &Record<'_>, cx: &mut Context) {
        if self.cfg.indicators.has_domains() {
            self.names(c, cx);
        }
        if self.cfg.indicators.nets.is_empty() {
            return;
        }
        let f = c.f;
        let timeout = self.cfg.incident_timeout_ns;
        for (bad, asset, protected_ip, inbound) in [
            (f.src_ip, c.dst_asset, f.dst_ip, true),
            (f.dst_ip, c.src_asset, f.src_ip, false),
        ] {
            let Some(asset) = asset else { continue };
            if !self.cfg.indicators.nets.contains(bad) {
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
        self.names
            .finish(out, |(a, host, i), key| name_finding(cfg, a, host, i, key));
    }

    fn sweep(&mut self, now: u64) {
        let keep = self.cfg.incident_timeout_ns;
        self.hits.sweep(now, keep, |k| k.last_ns);
        self.names.sweep(now, keep, |k| k.s.last_ns);
    }
}

fn indicator_finding(
    cfg: &DetectConfig,
    asset: usize,
    bad: IpAddr,
    key: &mut SessionKey,
) -> Finding {
    let ind = &cfg.indicators;
    let listed = ind.nets.get(bad).and_then(|i| ind.list.get(*i));
    let summary = match listed {
        Some(ind) => format!(
            "traffic between {} and listed {bad} ({} in {})",
            cfg.assets[asset].name,
            ind.what,
            ind.provenance()
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

fn name_finding(
    cfg: &DetectConfig,
    asset: usize,
    host: IpAddr,
    entry: usize,
    key: &mut NameHits,
) -> Finding {
    let ind = &cfg.indicators.list[entry];
    let (name, via) = key
        .seen
        .as_ref()
        .map_or(("", ""), |(n, v)| (n.as_str(), *v));
    let summary = format!(
        "{host} of {} looked up {name} ({via}), under listed {} ({})",
        cfg.assets[asset].name,
        ind.what,
        ind.provenance()
    );
    let (ts, detected) = take_fire(&mut key.s.fire, key.s.last_ns);
    key.s.pending.finding(
        ALL,
        AlertKind::Indicator,
        asset,
        host,
        ts,
        detected,
        key.s.sessions as f64,
        0.0,
        "flows naming a listed domain".into(),
        summary,
    )
}
