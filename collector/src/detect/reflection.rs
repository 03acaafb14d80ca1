//! Reflection and amplification: responses from reflector services (DNS,
//! NTP, SSDP, memcached, CLDAP, … and those configured) arriving at a
//! protected host that sent nothing in those flows, from several
//! reflectors, above a volume in a short window. TCP SYN-ACK reflection
//! counts too: SYN-ACKs from any TCP service to a protected host that sent
//! no SYN and no data in those flows (its spoofed SYNs went to the
//! reflectors, which answer it several times each).

use std::net::IpAddr;
use std::sync::Arc;

use hashbrown::HashMap;

use super::Finding;
use super::base::{ALL, Fire, Keys, Pending, RECOUNT_NS, Record, mark, secs, si, take_fire};
use super::config::DetectConfig;
use super::ports::reflector;
use super::window::Ring;
use super::{Context, Counts, Detector};
use crate::model::alert::AlertKind;

/// The amplification detector, keyed by target.
#[derive(Debug)]
pub(crate) struct Reflection {
    cfg: Arc<DetectConfig>,
    targets: Keys<IpAddr, AmpKey>,
}

impl Reflection {
    /// A detector for `cfg`.
    pub fn new(cfg: Arc<DetectConfig>) -> Reflection {
        Reflection {
            cfg,
            targets: Keys::new(),
        }
    }
}

impl Detector for Reflection {
    fn observe(&mut self, r: &Record<'_>, cx: &mut Context) {
        self.on_record(r, cx);
    }

    fn finish(&mut self, _cx: &mut Context, out: &mut Vec<(u64, Finding)>) {
        let cfg = &self.cfg;
        self.targets.finish(out, |t, k| amp_finding(cfg, t, k));
    }

    fn sweep(&mut self, now: u64) {
        let keep = self
            .cfg
            .amplification
            .window_ns
            .saturating_mul(2)
            .max(self.cfg.incident_timeout_ns);
        self.targets.sweep(now, keep, |k| k.last_ns);
    }
}

#[derive(Debug)]
struct AmpKey {
    asset: usize,
    ring: Ring<1>,
    reflectors: HashMap<IpAddr, u64>,
    /// (IP protocol, source port) → bytes.
    ports: HashMap<(u8, u16), u64>,
    pending: Pending,
    recounted_ns: u64,
    fire: Fire,
    /// Largest unsolicited bytes in the window during this batch.
    peak: f64,
    last_ns: u64,
}

impl Reflection {
    fn on_record(&mut self, c: &Record<'_>, cx: &mut Context) {
        let f = c.f;
        let cfg = &self.cfg.amplification;
        // (victim's asset, victim, reflector, its port, what it sent).
        let hit = match f.proto {
            // UDP: the reflector's response opened the flow.
            17 => c
                .dst_asset
                .zip(f.src_port)
                .filter(|(_, p)| f.rev_packets == 0 && reflector(*p, &cfg.extra_ports).is_some())
                .map(|(a, p)| (a, f.dst_ip, f.src_ip, p, c.counts_fwd())),
            // TCP: the sensor makes the SYN-ACK's sender the responder.
            6 => c
                .src_asset
                .zip(f.dst_port)
                .filter(|_| unsolicited_syn_ack(f))
                .map(|(a, p)| {
                    let counts = Counts {
                        flows: 1,
                        packets: f.rev_packets,
                        bytes: f.rev_bytes,
                    };
                    (a, f.src_ip, f.dst_ip, p, counts)
                }),
            _ => None,
        };
        let Some((asset, victim, refl, port, counts)) = hit else {
            return;
        };
        let timeout = self.cfg.incident_timeout_ns;
        let now = f.last_seen_ns;
        let w = cfg.window_ns;
        let Some(key) = self.targets.slot(victim, &mut cx.evictions, || AmpKey {
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
            .add_span(f.first_seen_ns, f.last_seen_ns, &[counts.bytes as f64]);
        key.last_ns = key.last_ns.max(now);
        let t = key.reflectors.entry(refl).or_insert(now);
        *t = (*t).max(now);
        *key.ports.entry((f.proto, port)).or_default() += counts.bytes;
        key.pending.expire(f.first_seen_ns, 2 * w, &key.fire);
        let victim_port = if f.proto == 6 { f.src_port } else { f.dst_port };
        key.pending
            .add(refl, (victim, victim_port), counts, c.ev, ALL);
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
            self.targets.mark(cx.mark_number(), victim);
        }
    }
}

/// A TCP flow whose responder's first packet was a SYN-ACK and whose
/// originator (the sensor orients a flow a SYN-ACK opens so) sent no SYN
/// and no data: a reply to a SYN it did not send. (A capture that starts
/// mid-handshake shows the SYN-ACK first too, but then the client goes on
/// with data.)
fn unsolicited_syn_ack(f: &vigil_proto::FlowRecord) -> bool {
    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    f.rev_initial_tcp_flags & (SYN | ACK) == SYN | ACK
        && f.fwd_tcp_flags & SYN == 0
        && !f.history.as_str().contains('D')
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
    let mut services: Vec<((u8, u16), u64)> = key.ports.iter().map(|(p, b)| (*p, *b)).collect();
    services.sort_by_key(|s| std::cmp::Reverse(s.1));
    let names: Vec<String> = services
        .iter()
        .take(3)
        .map(|((proto, p), _)| match proto {
            6 => format!("TCP SYN-ACK ({p})"),
            _ => format!("{} ({p})", reflector(*p, &a.extra_ports).unwrap_or("?")),
        })
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
