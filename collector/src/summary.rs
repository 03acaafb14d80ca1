//! Traffic summary over flow records: totals and top-N by bytes.
//!
//! Interim records of one flow are counted once as a flow (by `flow_id`) and
//! their packets and bytes add up, so a summary is the same whatever the
//! active timeout was.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;

use vigil_proto::{ConnState, FlowRecord, proto_name};

/// Packets, bytes and flows of one key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Flows.
    pub flows: u64,
    /// Packets, both directions.
    pub packets: u64,
    /// IP-layer bytes, both directions.
    pub bytes: u64,
}

/// A service: protocol and responder port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Service {
    /// IP protocol.
    pub proto: u8,
    /// Responder port, if the protocol has ports.
    pub port: Option<u16>,
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(p) => write!(f, "{}/{p}", proto_name(self.proto)),
            None => write!(f, "{}", proto_name(self.proto)),
        }
    }
}

/// What one initiator reached.
#[derive(Clone, Debug, Default)]
struct FanOut {
    services: HashSet<(IpAddr, Option<u16>)>,
    hosts: HashSet<IpAddr>,
}

/// Aggregates flow records.
#[derive(Clone, Debug, Default)]
pub struct TrafficSummary {
    /// All traffic.
    pub total: Counts,
    /// By initiator address.
    pub sources: HashMap<IpAddr, Counts>,
    /// By responder address.
    pub destinations: HashMap<IpAddr, Counts>,
    /// By service.
    pub services: HashMap<Service, Counts>,
    /// Flows by connection state.
    pub states: HashMap<ConnState, u64>,
    /// Distinct (responder, port) pairs and distinct responders each
    /// initiator contacted: the fan-out that scans show.
    fanout: HashMap<IpAddr, FanOut>,
    /// TCP attempts that got no handshake (S0, REJ, RSTOS0, SH) by responder:
    /// what SYN floods and scans leave behind.
    pub unanswered: HashMap<IpAddr, u64>,
    seen: HashSet<u64>,
    /// First and last packet time, ns.
    pub span_ns: Option<(u64, u64)>,
}

fn bump(map_entry: &mut Counts, new_flow: bool, r: &FlowRecord) {
    map_entry.flows += u64::from(new_flow);
    map_entry.packets += r.packets();
    map_entry.bytes += r.bytes();
}

impl TrafficSummary {
    /// An empty summary.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds records.
    pub fn add(&mut self, recs: &[FlowRecord]) {
        for r in recs {
            let new_flow = self.seen.insert(r.flow_id);
            bump(&mut self.total, new_flow, r);
            bump(self.sources.entry(r.src_ip).or_default(), new_flow, r);
            bump(self.destinations.entry(r.dst_ip).or_default(), new_flow, r);
            bump(
                self.services
                    .entry(Service {
                        proto: r.proto,
                        port: r.dst_port,
                    })
                    .or_default(),
                new_flow,
                r,
            );
            if new_flow {
                *self.states.entry(r.conn_state).or_default() += 1;
                let f = self.fanout.entry(r.src_ip).or_default();
                f.services.insert((r.dst_ip, r.dst_port));
                f.hosts.insert(r.dst_ip);
                if r.proto == 6
                    && matches!(
                        r.conn_state,
                        ConnState::S0 | ConnState::REJ | ConnState::RSTOS0 | ConnState::SH
                    )
                {
                    *self.unanswered.entry(r.dst_ip).or_default() += 1;
                }
            }
            let span = self
                .span_ns
                .get_or_insert((r.first_seen_ns, r.last_seen_ns));
            span.0 = span.0.min(r.first_seen_ns);
            span.1 = span.1.max(r.last_seen_ns);
        }
    }

    /// The `n` largest entries of a map by bytes (ties by key order).
    pub fn top<K: Copy + Ord>(map: &HashMap<K, Counts>, n: usize) -> Vec<(K, Counts)> {
        let mut v: Vec<(K, Counts)> = map.iter().map(|(k, c)| (*k, *c)).collect();
        v.sort_by(|a, b| b.1.bytes.cmp(&a.1.bytes).then(a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }

    /// The `n` largest entries of a map by flows.
    pub fn top_by_flows<K: Copy + Ord>(map: &HashMap<K, Counts>, n: usize) -> Vec<(K, Counts)> {
        let mut v: Vec<(K, Counts)> = map.iter().map(|(k, c)| (*k, *c)).collect();
        v.sort_by(|a, b| b.1.flows.cmp(&a.1.flows).then(a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }

    /// The `n` initiators that reached the most distinct (responder, port)
    /// pairs: `(initiator, distinct services, distinct hosts)`.
    pub fn top_fanout(&self, n: usize) -> Vec<(IpAddr, usize, usize)> {
        let mut v: Vec<(IpAddr, usize, usize)> = self
            .fanout
            .iter()
            .map(|(k, f)| (*k, f.services.len(), f.hosts.len()))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }

    /// The `n` responders with the most unanswered TCP connection attempts.
    pub fn top_unanswered(&self, n: usize) -> Vec<(IpAddr, u64)> {
        let mut v: Vec<(IpAddr, u64)> = self.unanswered.iter().map(|(k, c)| (*k, *c)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }

    /// A plain-text report with `n` rows per table.
    pub fn render(&self, n: usize) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let t = self.total;
        let secs = self
            .span_ns
            .map(|(a, b)| (b - a) as f64 / 1e9)
            .unwrap_or(0.0);
        let _ = writeln!(
            s,
            "traffic: {} flows, {} packets, {} bytes over {:.1} s",
            t.flows, t.packets, t.bytes, secs
        );
        let mut states: Vec<_> = self.states.iter().collect();
        states.sort();
        let states: Vec<String> = states.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(s, "connection states: {}", states.join(", "));
        let table = |s: &mut String, title: &str, rows: Vec<(String, Counts)>| {
            let _ = writeln!(s, "\n{title}");
            let _ = writeln!(
                s,
                "  {:<40} {:>8} {:>10} {:>12}",
                "", "flows", "packets", "bytes"
            );
            for (k, c) in rows {
                let _ = writeln!(
                    s,
                    "  {:<40} {:>8} {:>10} {:>12}",
                    k, c.flows, c.packets, c.bytes
                );
            }
        };
        let fmt_rows =
            |v: Vec<(IpAddr, Counts)>| v.into_iter().map(|(k, c)| (k.to_string(), c)).collect();
        table(
            &mut s,
            "top sources by bytes",
            fmt_rows(Self::top(&self.sources, n)),
        );
        table(
            &mut s,
            "top sources by flows",
            fmt_rows(Self::top_by_flows(&self.sources, n)),
        );
        table(
            &mut s,
            "top destinations by bytes",
            fmt_rows(Self::top(&self.destinations, n)),
        );
        table(
            &mut s,
            "top services by flows",
            Self::top_by_flows(&self.services, n)
                .into_iter()
                .map(|(k, c)| (k.to_string(), c))
                .collect(),
        );
        let _ = writeln!(
            s,
            "\nwidest fan-out (distinct responder ports and hosts per initiator)"
        );
        let _ = writeln!(s, "  {:<40} {:>8} {:>10}", "", "services", "hosts");
        for (ip, svc, hosts) in self.top_fanout(n) {
            let _ = writeln!(s, "  {:<40} {:>8} {:>10}", ip.to_string(), svc, hosts);
        }
        let _ = writeln!(
            s,
            "\nmost unanswered TCP attempts (S0, REJ, RSTOS0, SH) per responder"
        );
        for (ip, c) in self.top_unanswered(n) {
            let _ = writeln!(s, "  {:<40} {:>8}", ip.to_string(), c);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_proto::{CommunityId, EndReason, History, Vlans};

    fn rec(id: u64, src: &str, dst: &str, port: u16, bytes: u64, reason: EndReason) -> FlowRecord {
        FlowRecord {
            app: None,
            flow_id: id,
            first_seen_ns: 1_000,
            last_seen_ns: 2_000,
            proto: 6,
            src_ip: src.parse().unwrap(),
            src_port: Some(40000),
            dst_ip: dst.parse().unwrap(),
            dst_port: Some(port),
            vlan: Vlans::NONE,
            fwd_packets: 2,
            fwd_bytes: bytes,
            rev_packets: 1,
            rev_bytes: 0,
            fwd_tcp_flags: 2,
            rev_tcp_flags: 0,
            fwd_initial_tcp_flags: 2,
            rev_initial_tcp_flags: 0,
            conn_state: ConnState::S0,
            history: History::default(),
            end_reason: reason,
            community_id: CommunityId::default(),
            tunnel: None,
        }
    }

    #[test]
    fn interim_records_count_one_flow_and_sum_bytes() {
        let mut s = TrafficSummary::new();
        s.add(&[
            rec(1, "192.0.2.1", "198.51.100.1", 443, 100, EndReason::Active),
            rec(1, "192.0.2.1", "198.51.100.1", 443, 50, EndReason::Fin),
            rec(2, "192.0.2.2", "198.51.100.1", 22, 500, EndReason::Idle),
        ]);
        assert_eq!(
            s.total,
            Counts {
                flows: 2,
                packets: 9,
                bytes: 650
            }
        );
        let top = TrafficSummary::top(&s.sources, 1);
        assert_eq!(top[0].0.to_string(), "192.0.2.2");
        let dst = s.destinations[&"198.51.100.1".parse::<IpAddr>().unwrap()];
        assert_eq!(dst.flows, 2);
        let svc = TrafficSummary::top_by_flows(&s.services, 5);
        assert_eq!(svc.len(), 2);
        assert!(s.render(5).contains("tcp/443"));
        // Each record is an S0 attempt: both count as unanswered at the responder.
        assert_eq!(
            s.top_unanswered(1),
            vec![("198.51.100.1".parse().unwrap(), 2)]
        );
    }

    #[test]
    fn fan_out_counts_distinct_services_and_hosts() {
        let mut s = TrafficSummary::new();
        let recs: Vec<FlowRecord> = (0..50u16)
            .map(|p| {
                rec(
                    u64::from(p),
                    "203.0.113.66",
                    "198.51.100.10",
                    1000 + p,
                    40,
                    EndReason::Rst,
                )
            })
            .chain((0..5u8).map(|h| {
                rec(
                    100 + u64::from(h),
                    "192.0.2.5",
                    &format!("198.51.100.{}", 20 + h),
                    443,
                    900,
                    EndReason::Fin,
                )
            }))
            .collect();
        s.add(&recs);
        assert_eq!(
            s.top_fanout(2),
            vec![
                ("203.0.113.66".parse().unwrap(), 50, 1),
                ("192.0.2.5".parse().unwrap(), 5, 5)
            ]
        );
    }
}
