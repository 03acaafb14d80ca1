//! The bidirectional flow record: what a sensor reports about one conversation.
//!
//! Orientation: `src` is the initiator (the sender of the first SYN for TCP,
//! otherwise the sender of the first packet), `fwd_*` counts what the
//! initiator sent and `rev_*` what the responder sent. Bytes are IP-layer
//! bytes (IP header included, link layer excluded), as IPFIX's
//! `octetDeltaCount` and Zeek's `orig_ip_bytes`.
//!
//! A long flow is reported in several records that share one `flow_id`: each
//! interim record (`end_reason = "active"`) carries the counts since the
//! previous one, so summing the records of a flow gives its totals.

use std::fmt;
use std::net::IpAddr;

use base64::Engine as _;
use serde::ser::{SerializeSeq, SerializeStruct};
use serde::{Serialize, Serializer};

use crate::time::Rfc3339Nanos;

/// One flow record, as exported by the sensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowRecord {
    /// Identifier shared by all records of one flow (53 bits, so that
    /// JavaScript and JSON tools keep it exact).
    pub flow_id: u64,
    /// Timestamp of the first packet counted in this record, ns since the epoch.
    pub first_seen_ns: u64,
    /// Timestamp of the last packet counted in this record, ns since the epoch.
    pub last_seen_ns: u64,
    /// IP protocol number (after IPv6 extension headers).
    pub proto: u8,
    /// Initiator address.
    pub src_ip: IpAddr,
    /// Initiator port; `None` for protocols without ports.
    pub src_port: Option<u16>,
    /// Responder address.
    pub dst_ip: IpAddr,
    /// Responder port; `None` for protocols without ports.
    pub dst_port: Option<u16>,
    /// 802.1Q/802.1ad tags, outermost first.
    pub vlan: Vlans,
    /// Packets sent by the initiator.
    pub fwd_packets: u64,
    /// IP-layer bytes sent by the initiator.
    pub fwd_bytes: u64,
    /// Packets sent by the responder.
    pub rev_packets: u64,
    /// IP-layer bytes sent by the responder.
    pub rev_bytes: u64,
    /// Union of the TCP flags the initiator sent (CWR..FIN, the low 8 bits).
    pub fwd_tcp_flags: u8,
    /// Union of the TCP flags the responder sent.
    pub rev_tcp_flags: u8,
    /// TCP flags of the initiator's first packet.
    pub fwd_initial_tcp_flags: u8,
    /// TCP flags of the responder's first packet.
    pub rev_initial_tcp_flags: u8,
    /// Zeek's connection state.
    pub conn_state: ConnState,
    /// Zeek-style history string.
    pub history: History,
    /// Why this record was emitted.
    pub end_reason: EndReason,
    /// Community ID v1 of the flow.
    pub community_id: CommunityId,
    /// For a flow carried inside a tunnel: the tunnel type and outer endpoints.
    pub tunnel: Option<TunnelInfo>,
    /// What the flow's application protocol said, when the sensor
    /// recognized one.
    pub app: Option<Box<crate::app::App>>,
}

impl FlowRecord {
    /// Total packets in both directions.
    pub fn packets(&self) -> u64 {
        self.fwd_packets + self.rev_packets
    }

    /// Total IP-layer bytes in both directions.
    pub fn bytes(&self) -> u64 {
        self.fwd_bytes + self.rev_bytes
    }

    /// The protocol as a lowercase IANA keyword, or its number.
    pub fn proto_name(&self) -> ProtoName {
        proto_name(self.proto)
    }
}

/// A protocol keyword, or the number where there is no keyword.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtoName {
    /// A well-known keyword.
    Keyword(&'static str),
    /// A protocol without a keyword here.
    Number(u8),
}

impl fmt::Display for ProtoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtoName::Keyword(k) => f.write_str(k),
            ProtoName::Number(n) => write!(f, "{n}"),
        }
    }
}

/// The lowercase IANA keyword of an IP protocol number (`tcp`, `udp`,
/// `icmpv6`, `ipv4` for IP-in-IP, …), as tshark names them.
pub fn proto_name(proto: u8) -> ProtoName {
    let k = match proto {
        0 => "hopopt",
        1 => "icmp",
        2 => "igmp",
        4 => "ipv4",
        6 => "tcp",
        8 => "egp",
        9 => "igp",
        17 => "udp",
        27 => "rdp",
        33 => "dccp",
        41 => "ipv6",
        46 => "rsvp",
        47 => "gre",
        50 => "esp",
        51 => "ah",
        58 => "icmpv6",
        59 => "ipv6-nonxt",
        88 => "eigrp",
        89 => "ospf",
        94 => "ipip",
        97 => "etherip",
        103 => "pim",
        108 => "ipcomp",
        112 => "vrrp",
        115 => "l2tp",
        132 => "sctp",
        135 => "mobility-header",
        136 => "udplite",
        137 => "mpls-in-ip",
        _ => return ProtoName::Number(proto),
    };
    ProtoName::Keyword(k)
}

/// Whether a protocol carries 16-bit ports that key its flows.
pub fn proto_has_ports(proto: u8) -> bool {
    matches!(proto, 6 | 17 | 33 | 132 | 136)
}

/// Up to two VLAN ids, outermost first. Deeper stacks keep the outer two.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Vlans {
    ids: [u16; 2],
    len: u8,
}

impl Vlans {
    /// No tag.
    pub const NONE: Vlans = Vlans {
        ids: [0; 2],
        len: 0,
    };

    /// Builds from up to two ids; `0` entries are treated as absent.
    pub fn new(outer: u16, inner: u16) -> Vlans {
        match (outer, inner) {
            (0, 0) => Vlans::NONE,
            (o, 0) => Vlans {
                ids: [o, 0],
                len: 1,
            },
            (0, i) => Vlans {
                ids: [i, 0],
                len: 1,
            },
            (o, i) => Vlans {
                ids: [o, i],
                len: 2,
            },
        }
    }

    /// The ids, outermost first.
    pub fn as_slice(&self) -> &[u16] {
        &self.ids[..usize::from(self.len)]
    }
}

impl Serialize for Vlans {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(usize::from(self.len)))?;
        for id in self.as_slice() {
            seq.serialize_element(id)?;
        }
        seq.end()
    }
}

/// Zeek's `conn_state` vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConnState {
    /// Connection attempt seen, no reply.
    S0,
    /// Connection established, not terminated.
    S1,
    /// Normal establishment and termination.
    SF,
    /// Connection attempt rejected.
    REJ,
    /// Established, close attempt by the originator only.
    S2,
    /// Established, close attempt by the responder only.
    S3,
    /// Established, originator aborted (RST).
    RSTO,
    /// Responder sent a RST.
    RSTR,
    /// Originator sent a SYN then a RST, no SYN-ACK seen.
    RSTOS0,
    /// Responder sent a SYN-ACK then a RST, no SYN seen.
    RSTRH,
    /// Originator sent a SYN then a FIN, no SYN-ACK seen.
    SH,
    /// Responder sent a SYN-ACK then a FIN, no SYN seen.
    SHR,
    /// No SYN seen, midstream traffic (and every non-TCP, non-UDP flow).
    OTH,
}

impl ConnState {
    /// Every state, in declaration order.
    pub const ALL: [ConnState; 13] = [
        ConnState::S0,
        ConnState::S1,
        ConnState::SF,
        ConnState::REJ,
        ConnState::S2,
        ConnState::S3,
        ConnState::RSTO,
        ConnState::RSTR,
        ConnState::RSTOS0,
        ConnState::RSTRH,
        ConnState::SH,
        ConnState::SHR,
        ConnState::OTH,
    ];

    /// Parses the Zeek spelling (case-insensitive).
    pub fn parse(s: &str) -> Option<ConnState> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(s))
    }

    /// The Zeek spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnState::S0 => "S0",
            ConnState::S1 => "S1",
            ConnState::SF => "SF",
            ConnState::REJ => "REJ",
            ConnState::S2 => "S2",
            ConnState::S3 => "S3",
            ConnState::RSTO => "RSTO",
            ConnState::RSTR => "RSTR",
            ConnState::RSTOS0 => "RSTOS0",
            ConnState::RSTRH => "RSTRH",
            ConnState::SH => "SH",
            ConnState::SHR => "SHR",
            ConnState::OTH => "OTH",
        }
    }
}

impl fmt::Display for ConnState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a flow record was emitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EndReason {
    /// No packet for the idle timeout of the flow's protocol and state.
    Idle,
    /// Interim record of a flow that outlived the active timeout; the flow goes on.
    Active,
    /// Closed by FIN in both directions.
    Fin,
    /// Closed by a RST.
    Rst,
    /// Evicted to make room in a full flow table.
    Evicted,
    /// The capture file(s) ended.
    EndOfInput,
    /// The sensor was stopped.
    Shutdown,
    /// A new connection (a SYN with another initial sequence number) took
    /// over the flow's 4-tuple before the flow ended.
    Reused,
}

impl EndReason {
    /// Every reason, in declaration order.
    pub const ALL: [EndReason; 8] = [
        EndReason::Idle,
        EndReason::Active,
        EndReason::Fin,
        EndReason::Rst,
        EndReason::Evicted,
        EndReason::EndOfInput,
        EndReason::Shutdown,
        EndReason::Reused,
    ];

    /// Parses the spelling used in records.
    pub fn parse(s: &str) -> Option<EndReason> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The spelling used in records.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Idle => "idle",
            EndReason::Active => "active",
            EndReason::Fin => "fin",
            EndReason::Rst => "rst",
            EndReason::Evicted => "evicted",
            EndReason::EndOfInput => "end_of_input",
            EndReason::Shutdown => "shutdown",
            EndReason::Reused => "reused",
        }
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Zeek-style history: one letter per event kind, in order of first
/// occurrence, uppercase for the originator and lowercase for the responder
/// (`S` SYN, `H` SYN-ACK, `A` pure ACK, `D` payload, `F` FIN, `R` RST,
/// `W` zero window, `Q` SYN with FIN or RST, `^` orientation flipped).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct History {
    chars: [u8; History::CAPACITY],
    len: u8,
}

impl History {
    /// The most letters kept. Histories of real connections stay well below;
    /// a flow that shows more distinct events keeps its first fifteen.
    pub const CAPACITY: usize = 15;

    /// Appends a letter; ignored when full.
    pub fn push(&mut self, c: u8) {
        if usize::from(self.len) < Self::CAPACITY {
            self.chars[usize::from(self.len)] = c;
            self.len += 1;
        }
    }

    /// Parses a history as printed: at most [`History::CAPACITY`] of the
    /// letters `SHADFRWQTCIG^` in either case.
    pub fn parse(s: &str) -> Option<History> {
        if s.len() > Self::CAPACITY {
            return None;
        }
        let mut h = History::default();
        for c in s.bytes() {
            if !(c == b'^' || b"SHADFRWQTCIG".contains(&c.to_ascii_uppercase())) {
                return None;
            }
            h.push(c);
        }
        Some(h)
    }

    /// The history as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII letters and '^' are ever pushed.
        std::str::from_utf8(&self.chars[..usize::from(self.len)]).unwrap_or("")
    }
}

impl fmt::Debug for History {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl fmt::Display for History {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The SHA-1 digest of a Community ID v1; displays as `1:<base64>`.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct CommunityId(pub [u8; 20]);

impl fmt::Display for CommunityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 28];
        let n = base64::engine::general_purpose::STANDARD
            .encode_slice(self.0, &mut buf)
            .map_err(|_| fmt::Error)?;
        f.write_str("1:")?;
        f.write_str(std::str::from_utf8(&buf[..n]).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for CommunityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// How an inner flow was carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TunnelType {
    /// GRE (RFC 2784/2890), including transparent Ethernet bridging.
    Gre,
    /// ERSPAN type I, II or III over GRE.
    Erspan,
    /// VXLAN (UDP 4789).
    Vxlan,
    /// Geneve (UDP 6081).
    Geneve,
    /// IP in IP: 6in4, 4in4, 4in6, 6in6.
    IpInIp,
    /// GTP-U, the GPRS tunnelling protocol's user plane (UDP 2152).
    GtpU,
    /// Teredo: IPv6 over UDP (3544).
    Teredo,
    /// AYIYA, "anything in anything" (UDP 5072).
    Ayiya,
    /// GRE in UDP (RFC 8086, UDP 4754).
    GreUdp,
    /// L2TP: version 2 carrying PPP (UDP 1701), version 3 over IP or UDP.
    L2tp,
    /// MPLS in UDP (RFC 7510, UDP 6635).
    MplsUdp,
}

impl TunnelType {
    /// The spelling used in records.
    pub fn as_str(self) -> &'static str {
        match self {
            TunnelType::Gre => "gre",
            TunnelType::Erspan => "erspan",
            TunnelType::Vxlan => "vxlan",
            TunnelType::Geneve => "geneve",
            TunnelType::IpInIp => "ip_in_ip",
            TunnelType::GtpU => "gtp_u",
            TunnelType::Teredo => "teredo",
            TunnelType::Ayiya => "ayiya",
            TunnelType::GreUdp => "gre_udp",
            TunnelType::L2tp => "l2tp",
            TunnelType::MplsUdp => "mpls_udp",
        }
    }
}

/// The tunnel an inner flow was first seen in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TunnelInfo {
    /// Encapsulation.
    pub kind: TunnelType,
    /// Outer source address of the first packet.
    pub outer_src: IpAddr,
    /// Outer destination address of the first packet.
    pub outer_dst: IpAddr,
}

impl Serialize for TunnelInfo {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("TunnelInfo", 3)?;
        st.serialize_field("type", self.kind.as_str())?;
        st.serialize_field("outer_src", &self.outer_src)?;
        st.serialize_field("outer_dst", &self.outer_dst)?;
        st.end()
    }
}

/// The JSON field names that `vigil flows` promises and tools build on.
/// Records carry these and may carry more (the initial TCP flags).
pub const CONTRACT_FIELDS: [&str; 20] = [
    "flow_id",
    "first_seen",
    "last_seen",
    "proto",
    "src_ip",
    "src_port",
    "dst_ip",
    "dst_port",
    "vlan",
    "fwd_packets",
    "fwd_bytes",
    "rev_packets",
    "rev_bytes",
    "fwd_tcp_flags",
    "rev_tcp_flags",
    "conn_state",
    "history",
    "end_reason",
    "community_id",
    "tunnel",
];

/// Serializes through `Display` without allocating.
struct DisplayStr<T>(T);

impl<T: fmt::Display> Serialize for DisplayStr<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// The JSON contract of `vigil flows --format jsonl`.
impl Serialize for FlowRecord {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("FlowRecord", 25)?;
        st.serialize_field("flow_id", &self.flow_id)?;
        st.serialize_field("first_seen", &DisplayStr(Rfc3339Nanos(self.first_seen_ns)))?;
        st.serialize_field("last_seen", &DisplayStr(Rfc3339Nanos(self.last_seen_ns)))?;
        match proto_name(self.proto) {
            ProtoName::Keyword(k) => st.serialize_field("proto", k)?,
            ProtoName::Number(n) => st.serialize_field("proto", &n)?,
        }
        st.serialize_field("src_ip", &self.src_ip)?;
        st.serialize_field("src_port", &self.src_port)?;
        st.serialize_field("dst_ip", &self.dst_ip)?;
        st.serialize_field("dst_port", &self.dst_port)?;
        st.serialize_field("vlan", &self.vlan)?;
        st.serialize_field("fwd_packets", &self.fwd_packets)?;
        st.serialize_field("fwd_bytes", &self.fwd_bytes)?;
        st.serialize_field("rev_packets", &self.rev_packets)?;
        st.serialize_field("rev_bytes", &self.rev_bytes)?;
        st.serialize_field("fwd_tcp_flags", &self.fwd_tcp_flags)?;
        st.serialize_field("rev_tcp_flags", &self.rev_tcp_flags)?;
        st.serialize_field("fwd_initial_tcp_flags", &self.fwd_initial_tcp_flags)?;
        st.serialize_field("rev_initial_tcp_flags", &self.rev_initial_tcp_flags)?;
        st.serialize_field("conn_state", self.conn_state.as_str())?;
        st.serialize_field("history", self.history.as_str())?;
        st.serialize_field("end_reason", self.end_reason.as_str())?;
        st.serialize_field("community_id", &DisplayStr(self.community_id))?;
        st.serialize_field("tunnel", &self.tunnel)?;
        if let Some(a) = &self.app {
            st.serialize_field("app", a)?;
        }
        st.end()
    }
}

/// TCP flags as letters in `CEUAPRSF` order, `.` for a clear bit (nfdump style).
pub fn tcp_flags_letters(flags: u8) -> [u8; 8] {
    const L: &[u8; 8] = b"CEUAPRSF";
    let mut out = [b'.'; 8];
    for (i, c) in L.iter().enumerate() {
        if flags & (0x80 >> i) != 0 {
            out[i] = *c;
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    pub(crate) fn record() -> FlowRecord {
        FlowRecord {
            app: None,
            flow_id: 7,
            first_seen_ns: 1_000_000_001,
            last_seen_ns: 2_000_000_000,
            proto: 6,
            src_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            src_port: Some(40000),
            dst_ip: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2)),
            dst_port: Some(443),
            vlan: Vlans::new(10, 20),
            fwd_packets: 3,
            fwd_bytes: 180,
            rev_packets: 2,
            rev_bytes: 120,
            fwd_tcp_flags: 0x1b,
            rev_tcp_flags: 0x12,
            fwd_initial_tcp_flags: 0x02,
            rev_initial_tcp_flags: 0x12,
            conn_state: ConnState::SF,
            history: {
                let mut h = History::default();
                for c in b"ShAdDaFf" {
                    h.push(*c);
                }
                h
            },
            end_reason: EndReason::Fin,
            community_id: CommunityId([0; 20]),
            tunnel: Some(TunnelInfo {
                kind: TunnelType::Vxlan,
                outer_src: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9)),
                outer_dst: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
            }),
        }
    }

    #[test]
    fn json_contract_field_names_and_values() {
        let v: serde_json::Value = serde_json::to_value(record()).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        for k in CONTRACT_FIELDS {
            assert!(keys.contains(&k), "missing {k}");
        }
        assert_eq!(v["first_seen"], "1970-01-01T00:00:01.000000001Z");
        assert_eq!(v["proto"], "tcp");
        assert_eq!(v["vlan"], serde_json::json!([10, 20]));
        assert_eq!(v["history"], "ShAdDaFf");
        assert_eq!(v["community_id"], "1:AAAAAAAAAAAAAAAAAAAAAAAAAAA=");
        assert_eq!(v["tunnel"]["type"], "vxlan");
        assert_eq!(v["tunnel"]["outer_dst"], "192.0.2.10");
    }

    #[test]
    fn unknown_protocols_print_their_number() {
        let mut r = record();
        r.proto = 253;
        r.src_port = None;
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(v["proto"], 253);
        assert_eq!(v["src_port"], serde_json::Value::Null);
    }

    #[test]
    fn flag_letters() {
        assert_eq!(&tcp_flags_letters(0x12), b"...A..S.");
        assert_eq!(&tcp_flags_letters(0xff), b"CEUAPRSF");
    }
}
