//! Bidirectional flow tracking.
//!
//! [`table::FlowTable`] is one shard's table: it owns its flows, is driven by
//! packet time only (so a capture file gives the same flows on every run and
//! for any number of shards), and emits [`vigil_proto::FlowRecord`]s when
//! flows end or outlive the active timeout.

pub mod clock;
pub mod community_id;
mod index;
pub mod table;

use std::time::Duration;

use thiserror::Error;

/// Idle timeouts per protocol and state. The defaults are Suricata's
/// `flow-timeouts` (tcp: new 60 s, established 600 s, closed 60 s; udp, icmp
/// and others: new 30 s, established 300 s). "New" means only the initiator
/// has sent so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP before the responder answered.
    pub tcp_new: Duration,
    /// TCP once both sides sent.
    pub tcp_established: Duration,
    /// TCP after FIN in both directions or a RST.
    pub tcp_closed: Duration,
    /// UDP before a reply.
    pub udp_new: Duration,
    /// UDP once both sides sent.
    pub udp_established: Duration,
    /// ICMP/ICMPv6 before a reply.
    pub icmp_new: Duration,
    /// ICMP/ICMPv6 once both sides sent.
    pub icmp_established: Duration,
    /// Other protocols before a reply.
    pub other_new: Duration,
    /// Other protocols once both sides sent.
    pub other_established: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        let s = Duration::from_secs;
        Timeouts {
            tcp_new: s(60),
            tcp_established: s(600),
            tcp_closed: s(60),
            udp_new: s(30),
            udp_established: s(300),
            icmp_new: s(30),
            icmp_established: s(300),
            other_new: s(30),
            other_established: s(300),
        }
    }
}

impl Timeouts {
    /// Every idle timeout set to `d` (what `--idle-timeout` does).
    pub fn uniform(d: Duration) -> Self {
        Timeouts {
            tcp_new: d,
            tcp_established: d,
            tcp_closed: d,
            udp_new: d,
            udp_established: d,
            icmp_new: d,
            icmp_established: d,
            other_new: d,
            other_established: d,
        }
    }

    fn all(&self) -> [(&'static str, Duration); 9] {
        [
            ("tcp_new", self.tcp_new),
            ("tcp_established", self.tcp_established),
            ("tcp_closed", self.tcp_closed),
            ("udp_new", self.udp_new),
            ("udp_established", self.udp_established),
            ("icmp_new", self.icmp_new),
            ("icmp_established", self.icmp_established),
            ("other_new", self.other_new),
            ("other_established", self.other_established),
        ]
    }
}

/// How flows are tracked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowConfig {
    /// Idle timeouts.
    pub timeouts: Timeouts,
    /// A flow older than this emits an interim record (same flow id) and goes on.
    pub active_timeout: Duration,
    /// Early reports for detection: when set, a flow's packets not yet
    /// reported are reported (an interim record, end reason `active`) at most
    /// this long after the first of them, if the flow is still one-way (an
    /// unanswered SYN, a spoofed or reflected datagram) or if they number at
    /// least [`FlowConfig::report_min_packets`] (a heavy flow). A collector
    /// then sees a flood within about this interval, not when the flows time
    /// out. Off (`None`) by default in `vigil flows`; `vigil sensor` sets 1 s.
    pub report_interval: Option<Duration>,
    /// Packets a two-way flow needs since its last record to be reported
    /// early. Default 64.
    pub report_min_packets: u32,
    /// Most flows tracked at once, over all shards; beyond it the least
    /// recently due flow is evicted (and counted).
    pub max_flows: usize,
    /// Community ID seed.
    pub community_id_seed: u16,
    /// Application metadata (DNS, TLS, HTTP, SSH, ICS functions) in the
    /// records; on by default ([`crate::app`]).
    pub app_metadata: bool,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            timeouts: Timeouts::default(),
            active_timeout: Duration::from_secs(1800),
            report_interval: None,
            report_min_packets: 64,
            max_flows: 1_000_000,
            community_id_seed: 0,
            app_metadata: true,
        }
    }
}

/// A flow setting that cannot work.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("flow.{key} = {value}: {problem}")]
pub struct FlowConfigError {
    /// Dotted key below `flow.`.
    pub key: &'static str,
    /// The offending value.
    pub value: String,
    /// Why it is refused.
    pub problem: &'static str,
}

impl FlowConfig {
    /// Checks every setting, reporting all problems at once.
    pub fn validate(&self) -> Result<(), Vec<FlowConfigError>> {
        let mut errs = Vec::new();
        for (name, d) in self.timeouts.all() {
            if d.is_zero() {
                errs.push(FlowConfigError {
                    key: name,
                    value: format!("{d:?}"),
                    problem: "must be greater than zero",
                });
            }
        }
        if self.active_timeout.is_zero() {
            errs.push(FlowConfigError {
                key: "active_timeout",
                value: format!("{:?}", self.active_timeout),
                problem: "must be greater than zero",
            });
        }
        if self.report_interval.is_some_and(|d| d.is_zero()) {
            errs.push(FlowConfigError {
                key: "report_interval",
                value: "0s".into(),
                problem: "must be greater than zero (leave it unset to turn early reports off)",
            });
        }
        if self.max_flows == 0 {
            errs.push(FlowConfigError {
                key: "max_flows",
                value: "0".into(),
                problem: "must be at least 1",
            });
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }
}
