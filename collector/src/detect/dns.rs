//! Lookups by protected hosts, from the records' DNS metadata (the query
//! name and response code of each flow's first exchange):
//!
//! - **DNS tunnelling** (`dns_tunnel`, ATT&CK T1071.004): one host looks up
//!   at least `detect.dns.tunnel_names` distinct *long* names under one
//!   domain within `detect.dns.window`, a name being long when its part
//!   left of the domain has at least `tunnel_min_length` characters.
//!   Tunnels (iodine, dnscat2, DNSExfiltrator) encode data into labels of
//!   50 to 63 characters, a new name per query; CDN and cloud names are
//!   short left of their domain (`e673.dsce9` under `akamaiedge.net`), and
//!   a long legitimate name is looked up again, not renewed each time.
//! - **DGA-like lookups** (`dga`, ATT&CK T1568.002): one host is answered
//!   NXDOMAIN for at least `detect.dns.dga_nxdomains` distinct names within
//!   the window whose registered label looks random (no word-like run of
//!   vowels and consonants). Mistyped names, search-domain suffixes and a
//!   browser's three random probes at start stay below it.
//!
//! "The domain" is the registered domain: the last two labels, or three
//! under a two-letter country code whose second level is a generic one
//! (`co.uk`, `com.au`); an approximation of the public suffix list, which
//! is not shipped. Reverse lookups (`in-addr.arpa`, `ip6.arpa`) and the
//! domains in `detect.dns.ignore_domains` are not counted.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash as _, Hasher as _};
use std::net::IpAddr;
use std::sync::Arc;

use hashbrown::HashMap;

use super::Finding;
use super::base::{ALL, Keys, RECOUNT_NS, Record, SessionKey, mark, take_fire};
use super::config::DetectConfig;
use super::{Context, Detector};
use crate::model::alert::AlertKind;

/// Distinct names kept per key: beyond the threshold a window needs.
const MAX_NAMES: usize = 4096;
/// Names quoted in a summary.
const SAMPLES: usize = 3;

/// (asset, host, registered domain's hash) for tunnels; domain hash 0 for
/// DGA.
type Key = (usize, IpAddr, u64);

/// Names counted for one key.
#[derive(Debug, Default)]
struct Names {
    s: SessionKey,
    /// Name hash → when last seen, ns.
    seen: HashMap<u64, u64>,
    /// The registered domain (tunnels).
    domain: String,
    /// The first names, for the summary.
    samples: Vec<String>,
    /// The distinct names in the window at the last count, plus those
    /// new since.
    count: usize,
    /// When last recounted, ns.
    counted_ns: u64,
    /// The count then.
    exact: usize,
}

impl Names {
    /// Counts `name` at `now`; returns the distinct names in the window
    /// ending then (exact when it reaches `threshold`).
    fn add(&mut self, name: &str, now: u64, window: u64, threshold: usize) -> usize {
        let h = hash(name);
        let fresh = self.seen.insert(h, now).is_none();
        if fresh && self.samples.len() < SAMPLES {
            self.samples.push(name.to_string());
        }
        if self.seen.len() > MAX_NAMES {
            let from = now.saturating_sub(window);
            self.seen.retain(|_, t| *t >= from);
            // Still full within the window: forget the oldest half.
            if self.seen.len() > MAX_NAMES {
                let mut times: Vec<u64> = self.seen.values().copied().collect();
                let (_, mid, _) = times.select_nth_unstable(MAX_NAMES / 2);
                let mid = *mid;
                self.seen.retain(|_, t| *t > mid);
            }
        }
        // Recounted within the window once a second of event time, and
        // whenever the count since would cross `threshold`; in between,
        // each new name adds one.
        if fresh {
            self.count += 1;
        }
        let due = now >= self.counted_ns.saturating_add(RECOUNT_NS);
        if due || (self.count >= threshold && self.exact < threshold) {
            let from = now.saturating_sub(window);
            self.count = self.seen.values().filter(|t| **t >= from).count();
            self.exact = self.count;
            self.counted_ns = now;
        }
        self.count
    }
}

/// The DNS detector.
#[derive(Debug)]
pub(crate) struct Dns {
    cfg: Arc<DetectConfig>,
    tunnels: Keys<Key, Names>,
    dga: Keys<Key, Names>,
}

impl Dns {
    /// A detector for `cfg`.
    pub fn new(cfg: Arc<DetectConfig>) -> Dns {
        Dns {
            cfg,
            tunnels: Keys::new(),
            dga: Keys::new(),
        }
    }
}

/// A name looked up by a protected host, to count.
struct Hit<'a, 'r> {
    c: &'a Record<'r>,
    asset: usize,
    name: &'a str,
    window: u64,
    timeout: u64,
}

impl Hit<'_, '_> {
    /// Counts the name under key `k` of `keys` (whose registered domain,
    /// for the summary, is `domain`), marking the key when `need` distinct
    /// names are in the window (or its incident is open).
    fn count(
        &self,
        keys: &mut Keys<Key, Names>,
        k: Key,
        domain: Option<&str>,
        need: u32,
        cx: &mut Context,
    ) {
        let f = self.c.f;
        let now = f.last_seen_ns;
        let need = need as usize;
        let Some(key) = keys.slot(k, &mut cx.evictions, Names::default) else {
            return;
        };
        if let Some(d) = domain.filter(|_| key.domain.is_empty()) {
            key.domain = d.to_string();
        }
        let n = key.add(self.name, now, self.window, need);
        key.s.asset = self.asset;
        key.s.sessions += 1;
        key.s.last_ns = key.s.last_ns.max(now);
        key.s.pending.add(
            f.src_ip,
            (f.dst_ip, f.dst_port),
            self.c.counts_all(),
            self.c.ev,
            ALL,
        );
        if mark(&mut key.s.fire, n >= need, now, self.timeout) {
            keys.mark(cx.mark_number(), k);
        }
    }
}

fn hash(s: &str) -> u64 {
    let mut h = DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

/// Second-level labels that, under a two-letter country code, make a
/// public suffix of their own (`co.uk`, `com.au`, `ac.jp`, `gov.br`).
const GENERIC_SLD: [&str; 10] = [
    "co", "com", "net", "org", "gov", "edu", "ac", "or", "ne", "go",
];

/// The name's registered domain and the part left of it (empty when the
/// name is the registered domain); `None` when the name is a suffix.
pub(crate) fn split_domain(name: &str) -> Option<(&str, &str)> {
    let labels: Vec<usize> = name.match_indices('.').map(|(i, _)| i).collect();
    let n = labels.len();
    let last = *labels.last()?;
    let tld = &name[last + 1..];
    let sld_start = if n >= 2 { labels[n - 2] + 1 } else { 0 };
    let sld = &name[sld_start..last];
    // Labels in the registered domain: two, or three under a ccTLD's
    // generic second level.
    let take = if tld.len() == 2 && GENERIC_SLD.contains(&sld) {
        3
    } else {
        2
    };
    if n + 1 < take {
        return None;
    }
    if n + 1 == take {
        return Some((name, ""));
    }
    let cut = labels[n + 1 - take - 1];
    Some((&name[cut + 1..], &name[..cut]))
}

/// Whether a registered label looks machine-made: 8 characters or more,
/// and a run of 5 consonants, fewer than one vowel in four letters, or
/// letters and digits alternating 4 times or more.
pub(crate) fn random_looking(label: &str) -> bool {
    let b = label.as_bytes();
    if b.len() < 8 || label.starts_with("xn--") {
        return false;
    }
    let (mut letters, mut vowels, mut run, mut longest, mut flips) = (0, 0, 0, 0, 0);
    let mut prev_digit = None;
    for c in b.iter().map(u8::to_ascii_lowercase) {
        let digit = c.is_ascii_digit();
        if c.is_ascii_alphabetic() {
            letters += 1;
            if b"aeiou".contains(&c) {
                vowels += 1;
                run = 0;
            } else if c != b'y' {
                run += 1;
                longest = longest.max(run);
            }
        } else {
            run = 0;
        }
        if c.is_ascii_alphanumeric() {
            if prev_digit.is_some_and(|p| p != digit) {
                flips += 1;
            }
            prev_digit = Some(digit);
        }
    }
    longest >= 5 || (letters >= 8 && vowels * 4 < letters) || flips >= 4
}

impl Dns {
    fn ignored(&self, domain: &str) -> bool {
        domain == "in-addr.arpa"
            || domain == "ip6.arpa"
            || self.cfg.dns.ignore_domains.iter().any(|d| {
                domain == d
                    || domain
                        .strip_suffix(d.as_str())
                        .is_some_and(|r| r.ends_with('.'))
            })
    }
}

impl Detector for Dns {
    fn observe(&mut self, c: &Record<'_>, cx: &mut Context) {
        let f = c.f;
        let Some(d) = f.app.as_deref().and_then(|a| a.dns.as_deref()) else {
            return;
        };
        // The protected host that asked.
        let Some(asset) = c.src_asset else { return };
        let cfg = &self.cfg.dns;
        let lower;
        let name = if d.qname.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = d.qname.to_ascii_lowercase();
            lower.as_str()
        } else {
            d.qname.as_str()
        };
        let name = name.strip_suffix('.').unwrap_or(name);
        let Some((domain, left)) = split_domain(name) else {
            return;
        };
        if self.ignored(domain) {
            return;
        }
        let hit = Hit {
            c,
            asset,
            name,
            window: cfg.window_ns,
            timeout: self.cfg.incident_timeout_ns,
        };
        if cfg.tunnel_names > 0 && left.len() >= cfg.tunnel_min_length as usize {
            let k = (asset, f.src_ip, hash(domain));
            hit.count(&mut self.tunnels, k, Some(domain), cfg.tunnel_names, cx);
        }
        let registered = domain.split('.').next().unwrap_or("");
        if cfg.dga_nxdomains > 0 && d.rcode == Some(3) && random_looking(registered) {
            let k = (asset, f.src_ip, 0);
            hit.count(&mut self.dga, k, None, cfg.dga_nxdomains, cx);
        }
    }

    fn finish(&mut self, _cx: &mut Context, out: &mut Vec<(u64, Finding)>) {
        let cfg = &self.cfg;
        self.tunnels.finish(out, |(_, host, _), key| {
            let summary = format!(
                "{host} of {} looked up {} distinct long names under {} within {} (e.g. {})",
                cfg.assets[key.s.asset].name,
                key.count,
                key.domain,
                vigil_proto::units::human_ns(cfg.dns.window_ns),
                key.samples.join(", ")
            );
            finding(
                key,
                AlertKind::DnsTunnel,
                host,
                cfg.dns.tunnel_names,
                summary,
            )
        });
        self.dga.finish(out, |(_, host, _), key| {
            let summary = format!(
                "{host} of {} was answered NXDOMAIN for {} distinct random-looking names within {} \
                 (e.g. {})",
                cfg.assets[key.s.asset].name,
                key.count,
                vigil_proto::units::human_ns(cfg.dns.window_ns),
                key.samples.join(", ")
            );
            finding(key, AlertKind::Dga, host, cfg.dns.dga_nxdomains, summary)
        });
    }

    fn sweep(&mut self, now: u64) {
        let keep = self.cfg.incident_timeout_ns.max(self.cfg.dns.window_ns);
        self.tunnels.sweep(now, keep, |k| k.s.last_ns);
        self.dga.sweep(now, keep, |k| k.s.last_ns);
    }
}

fn finding(
    key: &mut Names,
    kind: AlertKind,
    host: IpAddr,
    threshold: u32,
    summary: String,
) -> Finding {
    let (ts, detected) = take_fire(&mut key.s.fire, key.s.last_ns);
    key.s.pending.finding(
        ALL,
        kind,
        key.s.asset,
        host,
        ts,
        detected,
        key.count as f64,
        f64::from(threshold),
        "distinct names in the window".into(),
        summary,
    )
}
