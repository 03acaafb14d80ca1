//! Indicator lists (`[detect.indicators]`): files of known-bad addresses,
//! networks and domain names, read and indexed for the indicator detector.
//!
//! A listed domain matches itself and every name under it (a list naming
//! `evil.example` matches a lookup of `c2.evil.example`), as DNS response
//! policy zones and most blocklists mean it; names compare without case and
//! without a trailing dot.

use std::collections::HashMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::nets::{Cidr, NetMap};

/// `[detect.indicators]`: files of known-bad addresses, networks and
/// domain names, one per line (`ADDR[/LEN] [description]` or
/// `DOMAIN [description]`, `#` comments).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct IndicatorSection {
    /// The files.
    pub files: Vec<PathBuf>,
}

/// What a list names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listed {
    /// An address or network.
    Net(Cidr),
    /// A domain name (lower case, no trailing dot) and the names under it.
    Domain(String),
}

impl std::fmt::Display for Listed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listed::Net(c) => c.fmt(f),
            Listed::Domain(d) => f.write_str(d),
        }
    }
}

/// A known-bad address, network or domain.
#[derive(Clone, Debug)]
pub struct Indicator {
    /// What is listed.
    pub what: Listed,
    /// What the list says of it.
    pub description: String,
    /// `file:line` it came from.
    pub source: String,
}

impl Indicator {
    /// Where it came from, and what the list says of it:
    /// `file:line: description`.
    pub fn provenance(&self) -> String {
        if self.description.is_empty() {
            self.source.clone()
        } else {
            format!("{}: {}", self.source, self.description)
        }
    }
}

/// The lists, indexed: addresses by block, domains by name.
#[derive(Clone, Debug, Default)]
pub struct Indicators {
    /// Every entry, in file order.
    pub list: Vec<Indicator>,
    /// Block → entry.
    pub nets: NetMap<usize>,
    /// Domain → entry.
    domains: HashMap<String, usize>,
}

impl Indicators {
    /// Indexes `list`.
    pub fn new(list: Vec<Indicator>) -> Indicators {
        let mut nets = NetMap::new();
        let mut domains = HashMap::new();
        for (i, ind) in list.iter().enumerate() {
            match &ind.what {
                Listed::Net(c) => {
                    nets.insert(*c, i);
                }
                Listed::Domain(d) => {
                    domains.entry(d.clone()).or_insert(i);
                }
            }
        }
        Indicators {
            list,
            nets,
            domains,
        }
    }

    /// Whether any domain is listed.
    pub fn has_domains(&self) -> bool {
        !self.domains.is_empty()
    }

    /// The entry listing `name` or a domain it is under (the closest).
    /// `name` is compared without case and without a trailing dot; no
    /// allocation unless it has upper-case letters.
    pub fn domain(&self, name: &str) -> Option<usize> {
        if self.domains.is_empty() || name.is_empty() {
            return None;
        }
        let name = name.strip_suffix('.').unwrap_or(name);
        let lower;
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = name.to_ascii_lowercase();
            lower.as_str()
        } else {
            name
        };
        let mut at = 0;
        loop {
            let suffix = &name[at..];
            if let Some(i) = self.domains.get(suffix) {
                return Some(*i);
            }
            at += suffix.find('.')? + 1;
        }
    }
}

/// A domain name as lists write it: letters, digits, `-` and `_` in
/// labels of 1 to 63, at least two labels, 253 characters at most; a
/// leading `*.` or `.` (subdomains) and a trailing dot are dropped. Lower
/// case, or `None` when it is not one.
fn domain(s: &str) -> Option<String> {
    let s = s
        .strip_prefix("*.")
        .or_else(|| s.strip_prefix('.'))
        .unwrap_or(s);
    let s = s.strip_suffix('.').unwrap_or(s);
    let labels: Vec<&str> = s.split('.').collect();
    let ok = s.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            (1..=63).contains(&l.len())
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        // A top-level label of digits only is an address gone wrong.
        && !labels.last().is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()));
    ok.then(|| s.to_ascii_lowercase())
}

/// Reads the indicator files: `ADDR[/LEN] [description]` or `DOMAIN
/// [description]` per line (a comma may separate the description), `#`
/// comments, blank lines skipped. Errors name `file:line`.
pub fn read_indicators(files: &[PathBuf], errs: &mut Vec<String>) -> Vec<Indicator> {
    let mut out = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let text = match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) => {
                errs.push(format!(
                    "collector.detect.indicators.files[{i}] = {:?}: {e}",
                    f.display().to_string()
                ));
                continue;
            }
        };
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let (entry, desc) = match line.split_once(|c: char| c.is_whitespace() || c == ',') {
                Some((a, d)) => (a, d.trim().trim_start_matches(',').trim()),
                None => (line, ""),
            };
            let source = format!("{}:{}", f.display(), n + 1);
            let what = match Cidr::parse(entry) {
                Ok(net) => Listed::Net(net),
                Err(e) => match domain(entry) {
                    Some(d) => Listed::Domain(d),
                    None => {
                        errs.push(format!(
                            "{source}: {entry:?} is neither an address or network ({e}) \
                             nor a domain name"
                        ));
                        continue;
                    }
                },
            };
            out.push(Indicator {
                what,
                description: desc.to_string(),
                source,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_read_and_match_themselves_and_the_names_under_them() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("feed.txt");
        std::fs::write(
            &f,
            "Evil.Example. c2\n*.cdn-bad.test,dropper\n203.0.113.0/24\n.x.org\n",
        )
        .unwrap();
        let mut errs = Vec::new();
        let ind = Indicators::new(read_indicators(&[f], &mut errs));
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(ind.list.len(), 4);
        assert_eq!(ind.list[0].what, Listed::Domain("evil.example".into()));
        assert_eq!(ind.list[1].description, "dropper");
        assert_eq!(ind.domain("evil.example"), Some(0));
        assert_eq!(ind.domain("A.B.EVIL.example."), Some(0));
        assert_eq!(ind.domain("files.cdn-bad.test"), Some(1));
        assert_eq!(ind.domain("cdn-bad.test"), Some(1));
        assert_eq!(ind.domain("x.org"), Some(3));
        // Not under a listed domain: a longer label, a parent, another.
        for benign in ["notevil.example", "example", "evil.example.net", "org", ""] {
            assert_eq!(ind.domain(benign), None, "{benign}");
        }
        assert!(ind.nets.contains("203.0.113.9".parse().unwrap()));
    }

    #[test]
    fn lines_that_are_neither_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("feed.txt");
        std::fs::write(&f, "ok.example\nlocalhost\nbad..name\n10.0.0.300\n").unwrap();
        let mut errs = Vec::new();
        let got = read_indicators(&[f], &mut errs);
        assert_eq!(got.len(), 1);
        assert_eq!(errs.len(), 3, "{errs:?}");
        for (e, line) in errs.iter().zip([2, 3, 4]) {
            assert!(e.contains(&format!("feed.txt:{line}")), "{e}");
            assert!(e.contains("neither an address"), "{e}");
        }
    }
}
