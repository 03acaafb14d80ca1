//! Exfiltration: bytes sent by a protected host to one external host above
//! a threshold within a window (hosts in `ignore_destinations` and the
//! internal networks aside). Its counts live in the shared pair table
//! ([`super::pairs`]).

use std::net::IpAddr;
use std::sync::Arc;

use super::base::{ALL, Record, mark, secs, si, take_fire};
use super::config::DetectConfig;
use super::pairs::{ExfilKey, Outbound};
use super::{Context, Detector};
use super::{Counts, Finding};
use crate::model::alert::AlertKind;

/// The exfiltration detector.
#[derive(Debug)]
pub(crate) struct Exfil {
    cfg: Arc<DetectConfig>,
    /// (inside, outside) marked.
    marks: Vec<(u64, (IpAddr, IpAddr))>,
}

impl Exfil {
    /// A detector for `cfg`.
    pub fn new(cfg: Arc<DetectConfig>) -> Exfil {
        Exfil {
            cfg,
            marks: Vec::new(),
        }
    }
}

impl Detector for Exfil {
    fn observe(&mut self, c: &Record<'_>, cx: &mut Context) {
        let x = &self.cfg.exfil;
        let Some(o) = Outbound::of(c, &self.cfg) else {
            return;
        };
        if x.bytes == 0 || o.sent == 0 || x.ignore.contains(o.outside) {
            return;
        }
        let (w, limit) = (x.window_ns.max(1), x.bytes);
        let timeout = self.cfg.incident_timeout_ns;
        let now = c.f.last_seen_ns;
        let Some(pair) = cx.pairs.slot(c, &o, w, &mut cx.evictions) else {
            return;
        };
        let key = &mut pair.exfil;
        key.add(now, w, o.sent);
        let total = key.estimate(now, w);
        let warm = total >= limit as f64 / 100.0;
        if !warm && key.hot.is_none() {
            return;
        }
        let hot = key.hot.get_or_insert_with(Box::default);
        if warm || hot.fire.open(now, timeout) {
            hot.pending.add(
                o.inside,
                (o.outside, o.port),
                Counts {
                    flows: 1,
                    packets: 0,
                    bytes: o.sent,
                },
                c.ev,
                ALL,
            );
        }
        if mark(&mut hot.fire, total >= limit as f64, now, timeout) {
            self.marks.push((cx.mark_number(), (o.inside, o.outside)));
        }
    }

    fn finish(&mut self, cx: &mut Context, out: &mut Vec<(u64, Finding)>) {
        for (n, (i, o)) in std::mem::take(&mut self.marks) {
            if let Some(p) = cx.pairs.get_mut(i, o) {
                let last = p.last_ns;
                out.push((n, exfil_finding(&self.cfg, i, o, &mut p.exfil, last)));
            }
        }
    }

    /// The pairs are swept with the context.
    fn sweep(&mut self, _now: u64) {}
}

fn exfil_finding(
    cfg: &DetectConfig,
    inside: IpAddr,
    outside: IpAddr,
    key: &mut ExfilKey,
    last_ns: u64,
) -> Finding {
    let x = &cfg.exfil;
    let total = key.estimate(last_ns, x.window_ns);
    let summary = format!(
        "{inside} sent {}B to external {outside} within {:.0} s",
        si(total),
        secs(x.window_ns)
    );
    let hot = key.hot.get_or_insert_with(Box::default);
    let (ts, detected) = take_fire(&mut hot.fire, last_ns);
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
