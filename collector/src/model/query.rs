//! What analysts ask of stored flows, as plain values: the filter's typed
//! form ([`Filter`], which the query language parses into and the planner
//! compiles), time ranges, and the shapes and rows of top-N, count and time
//! series answers.
//!
//! [`Filter::matches`] evaluates a filter over a record in memory: tests hold
//! the stores' answers against it.

use std::net::IpAddr;

use vigil_proto::{App, AppProto, CommunityId, ConnState, FlowRecord, pb};

/// Which end of a flow a primitive looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// The initiator.
    Src,
    /// The responder.
    Dst,
    /// Either end.
    Either,
}

/// An inclusive range of addresses of one family (a host or a CIDR block).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpRange {
    /// Lowest address.
    pub lo: IpAddr,
    /// Highest address.
    pub hi: IpAddr,
}

impl IpRange {
    /// One address.
    pub fn host(ip: IpAddr) -> IpRange {
        IpRange { lo: ip, hi: ip }
    }

    /// The block `ip/len`; host bits of `ip` are ignored.
    pub fn cidr(ip: IpAddr, len: u8) -> IpRange {
        match ip {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(len.min(32)))
                    .unwrap_or(0);
                IpRange {
                    lo: IpAddr::from((a & mask).to_be_bytes()),
                    hi: IpAddr::from((a | !mask).to_be_bytes()),
                }
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(len.min(128)))
                    .unwrap_or(0);
                IpRange {
                    lo: IpAddr::from((a & mask).to_be_bytes()),
                    hi: IpAddr::from((a | !mask).to_be_bytes()),
                }
            }
        }
    }

    /// Whether `ip` (of the same family) lies in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.lo.is_ipv4() && self.lo <= ip && ip <= self.hi
    }
}

/// Comparison of a counter with a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    /// `>`
    Gt,
    /// `<`
    Lt,
    /// `>=`
    Ge,
    /// `<=`
    Le,
    /// `=`
    Eq,
}

impl Cmp {
    /// The operator as written in SQL and in filters.
    pub fn as_str(self) -> &'static str {
        match self {
            Cmp::Gt => ">",
            Cmp::Lt => "<",
            Cmp::Ge => ">=",
            Cmp::Le => "<=",
            Cmp::Eq => "=",
        }
    }

    fn eval(self, a: u64, b: u64) -> bool {
        match self {
            Cmp::Gt => a > b,
            Cmp::Lt => a < b,
            Cmp::Ge => a >= b,
            Cmp::Le => a <= b,
            Cmp::Eq => a == b,
        }
    }
}

/// A per-flow counter, both directions summed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// IP bytes.
    Bytes,
    /// Packets.
    Packets,
}

/// A text field of a flow's application metadata that filters match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppText {
    /// DNS query name.
    DnsQname,
    /// TLS server name.
    TlsSni,
    /// HTTP Host header.
    HttpHost,
    /// SSH client banner.
    SshClient,
    /// TLS client fingerprint (JA4).
    TlsJa4,
    /// SSH client fingerprint (HASSH).
    SshHassh,
}

impl AppText {
    /// Every field, with its filter keyword.
    pub const ALL: [(AppText, &'static str); 6] = [
        (AppText::DnsQname, "dns.qname"),
        (AppText::TlsSni, "tls.sni"),
        (AppText::HttpHost, "http.host"),
        (AppText::SshClient, "ssh.client"),
        (AppText::TlsJa4, "tls.ja4"),
        (AppText::SshHassh, "ssh.hassh"),
    ];

    /// The protocols whose metadata holds the field (QUIC's handshake is
    /// TLS's: its server name and JA4 are `tls.*`).
    pub fn protos(self) -> &'static [AppProto] {
        match self {
            AppText::DnsQname => &[AppProto::Dns],
            AppText::TlsSni | AppText::TlsJa4 => &[AppProto::Tls, AppProto::Quic],
            AppText::HttpHost => &[AppProto::Http],
            AppText::SshClient | AppText::SshHassh => &[AppProto::Ssh],
        }
    }

    /// Whether the stores keep the field as the flow's name (`app_name`:
    /// a query name, server name, host or client banner) rather than as
    /// its fingerprint (`app_fp`: JA4 or HASSH).
    pub fn is_name(self) -> bool {
        !matches!(self, AppText::TlsJa4 | AppText::SshHassh)
    }
}

/// How a text field is matched: case-insensitively, whole, as a domain
/// (the name or any name below it), or anywhere in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextOp {
    /// The whole value.
    Eq,
    /// The value or a name under it: `suffix example.org` matches
    /// `example.org` and `www.example.org`, not `badexample.org`.
    Suffix,
    /// A substring.
    Contains,
}

impl TextOp {
    /// Whether `value` (lowercase) matches `needle` (lowercase).
    pub fn matches(self, value: &str, needle: &str) -> bool {
        match self {
            TextOp::Eq => value == needle,
            TextOp::Suffix => {
                let n = needle.trim_start_matches('.');
                value == n
                    || value
                        .strip_suffix(n)
                        .is_some_and(|head| head.ends_with('.'))
            }
            TextOp::Contains => value.contains(needle),
        }
    }
}

/// An ICS operation count of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IcsCounter {
    /// Read requests.
    Reads,
    /// Write requests.
    Writes,
    /// Control operations (operate, download, start, stop, restart).
    Control,
}

/// The name (`app_name`) and fingerprint (`app_fp`) the stores keep of a
/// record's application metadata, lowercase, for filters.
pub fn app_name_fp(a: &App) -> (String, String) {
    let (name, fp) = match (&a.dns, &a.tls, &a.http, &a.ssh) {
        (Some(d), ..) => (d.qname.as_str(), ""),
        (_, Some(t), ..) => (t.sni.as_str(), t.ja4.as_str()),
        (_, _, Some(h), _) => (h.host.as_str(), ""),
        (.., Some(x)) => (x.client.as_str(), x.hassh.as_str()),
        _ => ("", ""),
    };
    (name.to_lowercase(), fp.to_lowercase())
}

/// A record's ICS count.
pub fn ics_count(a: Option<&App>, c: IcsCounter) -> u64 {
    a.and_then(|a| a.ics.as_ref()).map_or(0, |i| match c {
        IcsCounter::Reads => i.reads,
        IcsCounter::Writes => i.writes,
        IcsCounter::Control => i.control,
    })
}

/// A compiled filter: the typed plan of a filter expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filter {
    /// Every flow (the empty filter).
    All,
    /// All of these.
    And(Vec<Filter>),
    /// Any of these.
    Or(Vec<Filter>),
    /// Not this.
    Not(Box<Filter>),
    /// An address of the given end in the range.
    Ip(Dir, IpRange),
    /// A port of the given end in `lo..=hi` (flows without ports never match).
    Port(Dir, u16, u16),
    /// IP protocol number.
    Proto(u8),
    /// Address family: 4 or 6.
    Family(u8),
    /// Either VLAN id.
    Vlan(u16),
    /// Connection state.
    State(ConnState),
    /// A counter compared with a number.
    Counter(Counter, Cmp, u64),
    /// Reported by this sensor.
    Sensor(String),
    /// This Community ID.
    CommunityId(CommunityId),
    /// Application metadata of this protocol.
    App(AppProto),
    /// An application text field matching a lowercase needle.
    Text(AppText, TextOp, String),
    /// An ICS operation count compared with a number (0 for flows
    /// without ICS metadata).
    Ics(IcsCounter, Cmp, u64),
}

impl Filter {
    /// Whether the record, reported by `sensor`, matches.
    pub fn matches(&self, r: &FlowRecord, sensor: &str) -> bool {
        let either = |d: Dir, f: &dyn Fn(bool) -> bool| match d {
            Dir::Src => f(true),
            Dir::Dst => f(false),
            Dir::Either => f(true) || f(false),
        };
        match self {
            Filter::All => true,
            Filter::And(v) => v.iter().all(|f| f.matches(r, sensor)),
            Filter::Or(v) => v.iter().any(|f| f.matches(r, sensor)),
            Filter::Not(f) => !f.matches(r, sensor),
            Filter::Ip(d, range) => either(*d, &|src| {
                range.contains(if src { r.src_ip } else { r.dst_ip })
            }),
            Filter::Port(d, lo, hi) => either(*d, &|src| {
                let p = if src { r.src_port } else { r.dst_port };
                p.is_some_and(|p| (*lo..=*hi).contains(&p))
            }),
            Filter::Proto(p) => r.proto == *p,
            Filter::Family(4) => r.src_ip.is_ipv4(),
            Filter::Family(_) => r.src_ip.is_ipv6(),
            Filter::Vlan(v) => r.vlan.as_slice().contains(v),
            Filter::State(s) => r.conn_state == *s,
            Filter::Counter(c, op, n) => {
                let v = match c {
                    Counter::Bytes => r.bytes(),
                    Counter::Packets => r.packets(),
                };
                op.eval(v, *n)
            }
            Filter::Sensor(s) => s == sensor,
            Filter::CommunityId(c) => r.community_id == *c,
            Filter::App(p) => r.app.as_ref().is_some_and(|a| a.proto == Some(*p)),
            Filter::Text(field, op, needle) => r.app.as_deref().is_some_and(|a| {
                if !a.proto.is_some_and(|p| field.protos().contains(&p)) {
                    return false;
                }
                let (name, fp) = app_name_fp(a);
                op.matches(if field.is_name() { &name } else { &fp }, needle)
            }),
            Filter::Ics(c, op, n) => op.eval(ics_count(r.app.as_deref(), *c), *n),
        }
    }
}

/// Records whose `first_seen` falls in `[since_ns, until_ns)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeRange {
    /// Inclusive lower bound, ns since the epoch (`None`: unbounded).
    pub since_ns: Option<u64>,
    /// Exclusive upper bound, ns since the epoch (`None`: unbounded).
    pub until_ns: Option<u64>,
}

impl TimeRange {
    /// Whether `t` lies in the range.
    pub fn contains(&self, t: u64) -> bool {
        self.since_ns.is_none_or(|s| t >= s) && self.until_ns.is_none_or(|u| t < u)
    }
}

/// What a top-N groups by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopKey {
    /// Initiator address.
    Src,
    /// Responder address.
    Dst,
    /// Responder port (flows with ports).
    DstPort,
    /// Initiator port (flows with ports).
    SrcPort,
    /// IP protocol.
    Proto,
    /// Application protocol (flows with application metadata).
    App,
    /// A text field of the application metadata (flows whose protocol has
    /// it, not empty): top queried names, server names, hosts, JA4s.
    Text(AppText),
}

impl TopKey {
    /// Parses `src`, `dst`, `dport`/`dst-port`, `sport`/`src-port`,
    /// `proto`, `app`, and the application fields of the filter language
    /// (`dns.qname`, `tls.sni`, `http.host`, `ssh.client`, `tls.ja4`,
    /// `ssh.hassh`).
    pub fn parse(s: &str) -> Option<TopKey> {
        Some(match s {
            "src" | "src-ip" => TopKey::Src,
            "dst" | "dst-ip" => TopKey::Dst,
            "dport" | "dst-port" | "port" => TopKey::DstPort,
            "sport" | "src-port" => TopKey::SrcPort,
            "proto" => TopKey::Proto,
            "app" => TopKey::App,
            _ => TopKey::Text(AppText::ALL.iter().find(|(_, k)| *k == s)?.0),
        })
    }

    /// The key as [`TopKey::parse`] reads it.
    pub fn name(self) -> &'static str {
        match self {
            TopKey::Src => "src",
            TopKey::Dst => "dst",
            TopKey::DstPort => "dport",
            TopKey::SrcPort => "sport",
            TopKey::Proto => "proto",
            TopKey::App => "app",
            TopKey::Text(t) => AppText::ALL
                .iter()
                .find(|(x, _)| *x == t)
                .map_or("app text", |(_, k)| k),
        }
    }

    /// The key's gRPC value.
    pub fn to_wire(self) -> pb::TopKey {
        match self {
            TopKey::Src => pb::TopKey::Src,
            TopKey::Dst => pb::TopKey::Dst,
            TopKey::DstPort => pb::TopKey::DstPort,
            TopKey::SrcPort => pb::TopKey::SrcPort,
            TopKey::Proto => pb::TopKey::Proto,
            TopKey::App => pb::TopKey::App,
            TopKey::Text(AppText::DnsQname) => pb::TopKey::DnsQname,
            TopKey::Text(AppText::TlsSni) => pb::TopKey::TlsSni,
            TopKey::Text(AppText::HttpHost) => pb::TopKey::HttpHost,
            TopKey::Text(AppText::SshClient) => pb::TopKey::SshClient,
            TopKey::Text(AppText::TlsJa4) => pb::TopKey::TlsJa4,
            TopKey::Text(AppText::SshHassh) => pb::TopKey::SshHassh,
        }
    }

    /// The key of a gRPC value (`None` for unspecified).
    pub fn from_wire(k: pb::TopKey) -> Option<TopKey> {
        Some(match k {
            pb::TopKey::Unspecified => return None,
            pb::TopKey::Src => TopKey::Src,
            pb::TopKey::Dst => TopKey::Dst,
            pb::TopKey::DstPort => TopKey::DstPort,
            pb::TopKey::SrcPort => TopKey::SrcPort,
            pb::TopKey::Proto => TopKey::Proto,
            pb::TopKey::App => TopKey::App,
            pb::TopKey::DnsQname => TopKey::Text(AppText::DnsQname),
            pb::TopKey::TlsSni => TopKey::Text(AppText::TlsSni),
            pb::TopKey::HttpHost => TopKey::Text(AppText::HttpHost),
            pb::TopKey::SshClient => TopKey::Text(AppText::SshClient),
            pb::TopKey::TlsJa4 => TopKey::Text(AppText::TlsJa4),
            pb::TopKey::SshHassh => TopKey::Text(AppText::SshHassh),
        })
    }
}

/// What a top-N ranks by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopBy {
    /// IP bytes, both directions.
    Bytes,
    /// Packets, both directions.
    Packets,
    /// Flow records.
    Flows,
}

impl TopBy {
    /// Parses `bytes`, `packets`, `flows`.
    pub fn parse(s: &str) -> Option<TopBy> {
        Some(match s {
            "bytes" => TopBy::Bytes,
            "packets" => TopBy::Packets,
            "flows" => TopBy::Flows,
            _ => return None,
        })
    }
}

/// One row of a top-N.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopRow {
    /// The group: an address, a port or a protocol name.
    pub key: String,
    /// Sums over the group.
    pub totals: Totals,
}

/// Flow, packet and byte totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Flow records.
    pub flows: u64,
    /// Packets, both directions.
    pub packets: u64,
    /// IP bytes, both directions.
    pub bytes: u64,
}

impl Totals {
    /// Adds another total (saturating: stored sums are bounded at
    /// ingest, and a sum never wraps).
    pub fn add(&mut self, o: Totals) {
        self.flows = self.flows.saturating_add(o.flows);
        self.packets = self.packets.saturating_add(o.packets);
        self.bytes = self.bytes.saturating_add(o.bytes);
    }

    /// The figure a top-N ranks by.
    pub fn by(&self, by: TopBy) -> u64 {
        match by {
            TopBy::Bytes => self.bytes,
            TopBy::Packets => self.packets,
            TopBy::Flows => self.flows,
        }
    }
}

/// Most intervals a time series may have.
pub const MAX_SERIES_POINTS: usize = 100_000;

/// Shortest interval of a time series.
pub const MIN_SERIES_STEP_NS: u64 = 1_000_000_000;

/// One interval of a time series: the flows whose `first_seen` falls in
/// `[start_ns, start_ns + step)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeriesPoint {
    /// Start of the interval, ns since the epoch, a multiple of the step.
    pub start_ns: u64,
    /// Sums over the interval.
    pub totals: Totals,
}

/// Checks a time series' step: at least a second.
pub fn check_step(step_ns: u64) -> Result<(), String> {
    if step_ns < MIN_SERIES_STEP_NS {
        return Err(format!("interval of {step_ns} ns: at least 1s"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffix_matches_a_domain_and_the_names_under_it() {
        let m = |v, n| TextOp::Suffix.matches(v, n);
        assert!(m("example.org", "example.org"));
        assert!(m("www.example.org", "example.org"));
        assert!(m("www.example.org", ".example.org"));
        assert!(!m("badexample.org", "example.org"));
        assert!(!m("example.org.evil", "example.org"));
        assert!(TextOp::Contains.matches("cdn-7.example", "n-7"));
        assert!(!TextOp::Eq.matches("a.example", "example"));
    }

    #[test]
    fn cidr_bounds() {
        let r = IpRange::cidr("10.20.30.40".parse().unwrap(), 16);
        assert_eq!(r.lo, "10.20.0.0".parse::<IpAddr>().unwrap());
        assert_eq!(r.hi, "10.20.255.255".parse::<IpAddr>().unwrap());
        let all = IpRange::cidr("1.2.3.4".parse().unwrap(), 0);
        assert_eq!(all.lo, "0.0.0.0".parse::<IpAddr>().unwrap());
        assert_eq!(all.hi, "255.255.255.255".parse::<IpAddr>().unwrap());
        let v6 = IpRange::cidr("2001:db8::1".parse().unwrap(), 128);
        assert_eq!(v6.lo, v6.hi);
    }
}
