//! The `vigil.v1` wire types and their checked conversions to the domain.
//!
//! [`pb`] is generated from `proto/vigil/v1/vigil.proto` and committed (the
//! `codegen` test regenerates it with the pure-Rust `protox` and fails on
//! any difference). Converting a wire [`pb::Flow`] into a [`FlowRecord`]
//! checks every field that the domain keeps narrower than protobuf does
//! (ports, protocol, VLAN ids, flags, address lengths, enum values, history
//! letters) and names the first field that does not fit; nothing is
//! truncated or defaulted silently.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use thiserror::Error;

use crate::flow::{
    CommunityId, ConnState, EndReason, FlowRecord, History, TunnelInfo, TunnelType, Vlans,
    proto_has_ports,
};

/// Generated `vigil.v1` messages, clients and servers.
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    missing_debug_implementations
)]
pub mod pb {
    include!("gen/vigil.v1.rs");
}

/// A wire message that does not describe a valid domain value.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("field `{field}`: {problem}")]
pub struct WireError {
    /// The offending field, as named in the `.proto` file.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl WireError {
    #[cold]
    pub(crate) fn new(field: &'static str, problem: impl Into<String>) -> WireError {
        WireError {
            field,
            problem: problem.into(),
        }
    }
}

/// Whether `id` is a well-formed sensor id: 1–64 characters of
/// `A-Za-z0-9._-` (the sensor checks its configuration with the rule the
/// collector enforces on every batch).
pub fn valid_sensor_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// An address as wire bytes: 4 for IPv4, 16 for IPv6.
pub fn ip_to_bytes(ip: IpAddr) -> Vec<u8> {
    IpBytes::from(ip).as_slice().to_vec()
}

/// An address's wire bytes ([`ip_to_bytes`]) without allocating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpBytes {
    /// IPv4's 4 bytes.
    V4([u8; 4]),
    /// IPv6's 16 bytes.
    V6([u8; 16]),
}

impl From<IpAddr> for IpBytes {
    fn from(ip: IpAddr) -> IpBytes {
        match ip {
            IpAddr::V4(a) => IpBytes::V4(a.octets()),
            IpAddr::V6(a) => IpBytes::V6(a.octets()),
        }
    }
}

impl IpBytes {
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            IpBytes::V4(b) => b,
            IpBytes::V6(b) => b,
        }
    }
}

/// Wire bytes to an address; any length but 4 or 16 is an error.
pub fn ip_from_bytes(field: &'static str, b: &[u8]) -> Result<IpAddr, WireError> {
    if let Ok(a) = <[u8; 4]>::try_from(b) {
        Ok(IpAddr::V4(Ipv4Addr::from(a)))
    } else if let Ok(a) = <[u8; 16]>::try_from(b) {
        Ok(IpAddr::V6(Ipv6Addr::from(a)))
    } else {
        Err(WireError::new(
            field,
            format!("address of {} bytes (expected 4 or 16)", b.len()),
        ))
    }
}

fn narrow_u8(field: &'static str, v: u32) -> Result<u8, WireError> {
    u8::try_from(v).map_err(|_| WireError::new(field, format!("{v} does not fit in 0..=255")))
}

fn port(field: &'static str, v: Option<u32>, has_ports: bool) -> Result<Option<u16>, WireError> {
    match (v, has_ports) {
        (Some(p), true) => u16::try_from(p)
            .map(Some)
            .map_err(|_| WireError::new(field, format!("port {p} does not fit in 0..=65535"))),
        (None, false) => Ok(None),
        (None, true) => Err(WireError::new(field, "missing for a protocol with ports")),
        (Some(_), false) => Err(WireError::new(
            field,
            "present for a protocol without ports",
        )),
    }
}

/// Domain ↔ wire for the closed vocabularies.
macro_rules! enum_map {
    ($dom:ident, $wire:ident, $field:literal, $( $d:ident <=> $w:ident ),+ $(,)?) => {
        impl From<$dom> for pb::$wire {
            fn from(v: $dom) -> pb::$wire {
                match v { $( $dom::$d => pb::$wire::$w, )+ }
            }
        }
        impl TryFrom<i32> for $dom {
            type Error = WireError;
            fn try_from(v: i32) -> Result<$dom, WireError> {
                match pb::$wire::try_from(v) {
                    $( Ok(pb::$wire::$w) => Ok($dom::$d), )+
                    _ => Err(WireError::new($field, format!("unknown or unspecified value {v}"))),
                }
            }
        }
    };
}

enum_map!(ConnState, ConnState, "conn_state",
    S0 <=> S0, S1 <=> S1, SF <=> Sf, REJ <=> Rej, S2 <=> S2, S3 <=> S3,
    RSTO <=> Rsto, RSTR <=> Rstr, RSTOS0 <=> Rstos0, RSTRH <=> Rstrh,
    SH <=> Sh, SHR <=> Shr, OTH <=> Oth);
enum_map!(EndReason, EndReason, "end_reason",
    Idle <=> Idle, Active <=> Active, Fin <=> Fin, Rst <=> Rst, Evicted <=> Evicted,
    EndOfInput <=> EndOfInput, Shutdown <=> Shutdown, Reused <=> Reused);
enum_map!(TunnelType, TunnelType, "tunnel.type",
    Gre <=> Gre, Erspan <=> Erspan, Vxlan <=> Vxlan, Geneve <=> Geneve, IpInIp <=> IpInIp,
    GtpU <=> GtpU, Teredo <=> Teredo, Ayiya <=> Ayiya, GreUdp <=> GreUdp, L2tp <=> L2tp,
    MplsUdp <=> MplsUdp);

impl From<&FlowRecord> for pb::Flow {
    fn from(r: &FlowRecord) -> pb::Flow {
        pb::Flow {
            flow_id: r.flow_id,
            first_seen_ns: r.first_seen_ns,
            last_seen_ns: r.last_seen_ns,
            proto: u32::from(r.proto),
            src_ip: ip_to_bytes(r.src_ip),
            src_port: r.src_port.map(u32::from),
            dst_ip: ip_to_bytes(r.dst_ip),
            dst_port: r.dst_port.map(u32::from),
            vlan: r.vlan.as_slice().iter().map(|&v| u32::from(v)).collect(),
            community_id: r.community_id.0.to_vec(),
            ..flow_without_identity(r)
        }
    }
}

/// The record as a message without its identity — id, times, protocol,
/// endpoints, VLANs and the Community ID they make — which stay zero or
/// empty: for a store that keeps those in columns of their own (and
/// without allocating for them). Every field is named, so a field added to
/// the message must be placed here or in `From<&FlowRecord>`.
pub fn flow_without_identity(r: &FlowRecord) -> pb::Flow {
    pb::Flow {
        flow_id: 0,
        first_seen_ns: 0,
        last_seen_ns: 0,
        proto: 0,
        src_ip: Vec::new(),
        src_port: None,
        dst_ip: Vec::new(),
        dst_port: None,
        vlan: Vec::new(),
        community_id: Vec::new(),
        fwd_packets: r.fwd_packets,
        fwd_bytes: r.fwd_bytes,
        rev_packets: r.rev_packets,
        rev_bytes: r.rev_bytes,
        fwd_tcp_flags: u32::from(r.fwd_tcp_flags),
        rev_tcp_flags: u32::from(r.rev_tcp_flags),
        fwd_initial_tcp_flags: u32::from(r.fwd_initial_tcp_flags),
        rev_initial_tcp_flags: u32::from(r.rev_initial_tcp_flags),
        conn_state: pb::ConnState::from(r.conn_state) as i32,
        history: r.history.as_str().to_owned(),
        end_reason: pb::EndReason::from(r.end_reason) as i32,
        tunnel: r.tunnel.map(|t| pb::Tunnel {
            r#type: pb::TunnelType::from(t.kind) as i32,
            outer_src: ip_to_bytes(t.outer_src),
            outer_dst: ip_to_bytes(t.outer_dst),
        }),
        app: r.app.as_deref().map(pb::App::from),
    }
}

impl TryFrom<pb::Flow> for FlowRecord {
    type Error = WireError;

    fn try_from(f: pb::Flow) -> Result<FlowRecord, WireError> {
        FlowRecord::try_from(&f)
    }
}

impl TryFrom<&pb::Flow> for FlowRecord {
    type Error = WireError;

    fn try_from(f: &pb::Flow) -> Result<FlowRecord, WireError> {
        let proto = narrow_u8("proto", f.proto)?;
        let has_ports = proto_has_ports(proto);
        let src_ip = ip_from_bytes("src_ip", &f.src_ip)?;
        let dst_ip = ip_from_bytes("dst_ip", &f.dst_ip)?;
        if src_ip.is_ipv4() != dst_ip.is_ipv4() {
            return Err(WireError::new(
                "dst_ip",
                "address family differs from src_ip",
            ));
        }
        if f.first_seen_ns > f.last_seen_ns {
            return Err(WireError::new(
                "last_seen_ns",
                format!(
                    "{} is before first_seen_ns {}",
                    f.last_seen_ns, f.first_seen_ns
                ),
            ));
        }
        let mut ids = [0u16; 2];
        if f.vlan.len() > 2 {
            return Err(WireError::new(
                "vlan",
                format!("{} ids (at most 2)", f.vlan.len()),
            ));
        }
        for (slot, &v) in ids.iter_mut().zip(&f.vlan) {
            if !(1..=4095).contains(&v) {
                return Err(WireError::new("vlan", format!("id {v} outside 1..=4095")));
            }
            *slot = v as u16;
        }
        let community_id = <[u8; 20]>::try_from(f.community_id.as_slice()).map_err(|_| {
            WireError::new(
                "community_id",
                format!("{} bytes (expected 20)", f.community_id.len()),
            )
        })?;
        let history = History::parse(&f.history).ok_or_else(|| {
            WireError::new(
                "history",
                format!(
                    "{:?} is not at most 15 history letters",
                    truncate(&f.history)
                ),
            )
        })?;
        let tunnel = match &f.tunnel {
            None => None,
            Some(t) => Some(TunnelInfo {
                kind: TunnelType::try_from(t.r#type)?,
                outer_src: ip_from_bytes("tunnel.outer_src", &t.outer_src)?,
                outer_dst: ip_from_bytes("tunnel.outer_dst", &t.outer_dst)?,
            }),
        };
        Ok(FlowRecord {
            flow_id: f.flow_id,
            first_seen_ns: f.first_seen_ns,
            last_seen_ns: f.last_seen_ns,
            proto,
            src_ip,
            src_port: port("src_port", f.src_port, has_ports)?,
            dst_ip,
            dst_port: port("dst_port", f.dst_port, has_ports)?,
            vlan: Vlans::new(ids[0], ids[1]),
            fwd_packets: f.fwd_packets,
            fwd_bytes: f.fwd_bytes,
            rev_packets: f.rev_packets,
            rev_bytes: f.rev_bytes,
            fwd_tcp_flags: narrow_u8("fwd_tcp_flags", f.fwd_tcp_flags)?,
            rev_tcp_flags: narrow_u8("rev_tcp_flags", f.rev_tcp_flags)?,
            fwd_initial_tcp_flags: narrow_u8("fwd_initial_tcp_flags", f.fwd_initial_tcp_flags)?,
            rev_initial_tcp_flags: narrow_u8("rev_initial_tcp_flags", f.rev_initial_tcp_flags)?,
            conn_state: ConnState::try_from(f.conn_state)?,
            history,
            end_reason: EndReason::try_from(f.end_reason)?,
            community_id: CommunityId(community_id),
            tunnel,
            app: match &f.app {
                None => None,
                Some(a) => Some(Box::new(App::try_from(a)?)),
            },
        })
    }
}

/// At most 32 characters of a hostile string, for messages.
fn truncate(s: &str) -> &str {
    match s.char_indices().nth(32) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

// ---- application metadata ----

use crate::app::{App, AppProto, Dns, Http, Ics, MAX_LIST, MAX_TEXT, Ssh, Tls};

fn counts_to(v: &[(u16, u64)]) -> Vec<pb::IcsCount> {
    v.iter()
        .map(|&(code, count)| pb::IcsCount {
            code: u32::from(code),
            count,
        })
        .collect()
}

impl From<&App> for pb::App {
    fn from(a: &App) -> pb::App {
        pb::App {
            proto: a.proto.map(AppProto::to_wire).unwrap_or(0),
            dns: a.dns.as_ref().map(|d| pb::Dns {
                qname: d.qname.clone(),
                qtype: u32::from(d.qtype),
                rcode: d.rcode.map(u32::from),
                answers: d.answers.clone(),
                answer_count: u32::from(d.answer_count),
                id: u32::from(d.id),
            }),
            tls: a.tls.as_ref().map(|t| pb::Tls {
                sni: t.sni.clone(),
                alpn: t.alpn.clone(),
                version: u32::from(t.version),
                ja4: t.ja4.clone(),
                ja4s: t.ja4s.clone(),
                server_alpn: t.server_alpn.clone(),
            }),
            http: a.http.as_ref().map(|h| pb::Http {
                method: h.method.clone(),
                host: h.host.clone(),
                path: h.path.clone(),
                status: u32::from(h.status),
                user_agent: h.user_agent.clone(),
            }),
            ssh: a.ssh.as_ref().map(|x| pb::Ssh {
                client: x.client.clone(),
                server: x.server.clone(),
                hassh: x.hassh.clone(),
                hassh_server: x.hassh_server.clone(),
            }),
            ics: a.ics.as_ref().map(|i| pb::Ics {
                functions: counts_to(&i.functions),
                units: i.units.iter().map(|&u| u32::from(u)).collect(),
                reads: i.reads,
                writes: i.writes,
                control: i.control,
                diagnostics: i.diagnostics,
                discovery: i.discovery,
                causes: counts_to(&i.causes),
                exceptions: i.exceptions,
                malformed: i.malformed,
            }),
        }
    }
}

fn text(field: &'static str, s: &str) -> Result<String, WireError> {
    if s.len() > MAX_TEXT {
        return Err(WireError::new(
            field,
            format!("{} bytes (at most {MAX_TEXT})", s.len()),
        ));
    }
    Ok(s.to_owned())
}

fn list<T, U>(
    field: &'static str,
    v: &[T],
    mut f: impl FnMut(&T) -> Result<U, WireError>,
) -> Result<Vec<U>, WireError> {
    if v.len() > MAX_LIST {
        return Err(WireError::new(
            field,
            format!("{} entries (at most {MAX_LIST})", v.len()),
        ));
    }
    v.iter().map(&mut f).collect()
}

fn narrow16(field: &'static str, v: u32) -> Result<u16, WireError> {
    u16::try_from(v).map_err(|_| WireError::new(field, format!("{v} is above 65535")))
}

fn counts_from(field: &'static str, v: &[pb::IcsCount]) -> Result<Vec<(u16, u64)>, WireError> {
    list(field, v, |c| Ok((narrow16(field, c.code)?, c.count)))
}

impl TryFrom<&pb::App> for App {
    type Error = WireError;

    fn try_from(a: &pb::App) -> Result<App, WireError> {
        let proto = AppProto::from_wire(a.proto)
            .ok_or_else(|| WireError::new("app.proto", format!("unknown value {}", a.proto)))?;
        let dns = match &a.dns {
            None => None,
            Some(d) => Some(Box::new(Dns {
                id: narrow16("app.dns.id", d.id)?,
                qname: text("app.dns.qname", &d.qname)?,
                qtype: narrow16("app.dns.qtype", d.qtype)?,
                rcode: match d.rcode {
                    None => None,
                    Some(r) => Some(u8::try_from(r).map_err(|_| {
                        WireError::new("app.dns.rcode", format!("{r} is above 255"))
                    })?),
                },
                answers: list("app.dns.answers", &d.answers, |s| {
                    text("app.dns.answers", s)
                })?,
                answer_count: narrow16("app.dns.answer_count", d.answer_count)?,
            })),
        };
        let tls = match &a.tls {
            None => None,
            Some(t) => Some(Box::new(Tls {
                sni: text("app.tls.sni", &t.sni)?,
                alpn: list("app.tls.alpn", &t.alpn, |s| text("app.tls.alpn", s))?,
                version: narrow16("app.tls.version", t.version)?,
                ja4: text("app.tls.ja4", &t.ja4)?,
                ja4s: text("app.tls.ja4s", &t.ja4s)?,
                server_alpn: text("app.tls.server_alpn", &t.server_alpn)?,
            })),
        };
        let http = match &a.http {
            None => None,
            Some(h) => Some(Box::new(Http {
                method: text("app.http.method", &h.method)?,
                host: text("app.http.host", &h.host)?,
                path: text("app.http.path", &h.path)?,
                status: narrow16("app.http.status", h.status)?,
                user_agent: text("app.http.user_agent", &h.user_agent)?,
            })),
        };
        let ssh = match &a.ssh {
            None => None,
            Some(x) => Some(Box::new(Ssh {
                client: text("app.ssh.client", &x.client)?,
                server: text("app.ssh.server", &x.server)?,
                hassh: text("app.ssh.hassh", &x.hassh)?,
                hassh_server: text("app.ssh.hassh_server", &x.hassh_server)?,
            })),
        };
        let ics = match &a.ics {
            None => None,
            Some(i) => Some(Box::new(Ics {
                functions: counts_from("app.ics.functions", &i.functions)?,
                units: list("app.ics.units", &i.units, |&u| narrow16("app.ics.units", u))?,
                reads: i.reads,
                writes: i.writes,
                control: i.control,
                diagnostics: i.diagnostics,
                discovery: i.discovery,
                causes: counts_from("app.ics.causes", &i.causes)?,
                exceptions: i.exceptions,
                malformed: i.malformed,
            })),
        };
        Ok(App {
            proto: Some(proto),
            dns,
            tls,
            http,
            ssh,
            ics,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> FlowRecord {
        let mut history = History::default();
        for c in b"ShADadFf" {
            history.push(*c);
        }
        FlowRecord {
            app: None,
            flow_id: 42,
            first_seen_ns: 1_700_000_000_000_000_000,
            last_seen_ns: 1_700_000_001_000_000_000,
            proto: 6,
            src_ip: "10.0.0.1".parse().unwrap(),
            src_port: Some(40000),
            dst_ip: "10.0.0.2".parse().unwrap(),
            dst_port: Some(502),
            vlan: Vlans::new(100, 200),
            fwd_packets: 5,
            fwd_bytes: 400,
            rev_packets: 4,
            rev_bytes: 300,
            fwd_tcp_flags: 0x1b,
            rev_tcp_flags: 0x1b,
            fwd_initial_tcp_flags: 0x02,
            rev_initial_tcp_flags: 0x12,
            conn_state: ConnState::SF,
            history,
            end_reason: EndReason::Fin,
            community_id: CommunityId([7; 20]),
            tunnel: Some(TunnelInfo {
                kind: TunnelType::Vxlan,
                outer_src: "2001:db8::1".parse().unwrap(),
                outer_dst: "2001:db8::2".parse().unwrap(),
            }),
        }
    }

    #[test]
    fn a_record_survives_the_wire() {
        let r = record();
        let back = FlowRecord::try_from(pb::Flow::from(&r)).unwrap();
        assert_eq!(back, r);
        let mut icmp = record();
        icmp.proto = 1;
        icmp.src_port = None;
        icmp.dst_port = None;
        icmp.vlan = Vlans::NONE;
        icmp.tunnel = None;
        assert_eq!(FlowRecord::try_from(pb::Flow::from(&icmp)).unwrap(), icmp);
    }

    #[test]
    fn without_identity_is_the_record_less_its_identity() {
        let r = record();
        let mut whole = pb::Flow::from(&r);
        (
            whole.flow_id,
            whole.first_seen_ns,
            whole.last_seen_ns,
            whole.proto,
        ) = (0, 0, 0, 0);
        (whole.src_ip, whole.dst_ip, whole.community_id) = (Vec::new(), Vec::new(), Vec::new());
        (whole.src_port, whole.dst_port) = (None, None);
        whole.vlan.clear();
        assert_eq!(flow_without_identity(&r), whole);
        assert!(whole.tunnel.is_some() && !whole.history.is_empty());
    }

    #[test]
    fn every_enum_value_round_trips() {
        for s in ConnState::ALL {
            assert_eq!(ConnState::try_from(pb::ConnState::from(s) as i32), Ok(s));
        }
        for r in EndReason::ALL {
            assert_eq!(EndReason::try_from(pb::EndReason::from(r) as i32), Ok(r));
        }
        assert_eq!(ConnState::try_from(0).unwrap_err().field, "conn_state");
        assert_eq!(EndReason::try_from(99).unwrap_err().field, "end_reason");
    }

    #[test]
    fn bad_fields_are_named() {
        let good = pb::Flow::from(&record());
        type Mutation = Box<dyn Fn(&mut pb::Flow)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("src_ip", Box::new(|f| f.src_ip = vec![1, 2, 3])),
            ("dst_ip", Box::new(|f| f.dst_ip = vec![0; 16])),
            ("proto", Box::new(|f| f.proto = 256)),
            ("src_port", Box::new(|f| f.src_port = Some(70000))),
            ("dst_port", Box::new(|f| f.dst_port = None)),
            ("vlan", Box::new(|f| f.vlan = vec![1, 2, 3])),
            ("vlan", Box::new(|f| f.vlan = vec![4096])),
            ("fwd_tcp_flags", Box::new(|f| f.fwd_tcp_flags = 300)),
            ("community_id", Box::new(|f| f.community_id = vec![0; 19])),
            ("history", Box::new(|f| f.history = "<script>".into())),
            ("history", Box::new(|f| f.history = "S".repeat(16))),
            ("last_seen_ns", Box::new(|f| f.last_seen_ns = 1)),
            (
                "tunnel.type",
                Box::new(|f| f.tunnel.as_mut().unwrap().r#type = 0),
            ),
            (
                "tunnel.outer_src",
                Box::new(|f| f.tunnel.as_mut().unwrap().outer_src = vec![]),
            ),
        ];
        for (field, mutate) in cases {
            let mut f = good.clone();
            mutate(&mut f);
            let e = FlowRecord::try_from(f).unwrap_err();
            assert_eq!(e.field, field, "{e}");
        }
        let mut udp_ports_on_icmp = good;
        udp_ports_on_icmp.proto = 1;
        assert_eq!(
            FlowRecord::try_from(udp_ports_on_icmp).unwrap_err().field,
            "src_port"
        );
    }

    fn sample_app() -> App {
        let mut a = App::of(AppProto::Modbus);
        let i = a.ics.as_mut().unwrap();
        i.functions = vec![(3, 10), (6, 1)];
        i.units = vec![1];
        i.reads = 10;
        i.writes = 1;
        a
    }

    #[test]
    fn every_app_protocol_round_trips_through_the_wire() {
        for p in AppProto::ALL {
            let a = App::of(p);
            assert_eq!(App::try_from(&pb::App::from(&a)).unwrap(), a);
        }
        let a = sample_app();
        assert_eq!(App::try_from(&pb::App::from(&a)).unwrap(), a);
    }

    #[test]
    fn hostile_app_values_are_refused_naming_the_field() {
        let mut w = pb::App::from(&App::of(AppProto::Dns));
        w.dns.as_mut().unwrap().qname = "a".repeat(MAX_TEXT + 1);
        assert_eq!(App::try_from(&w).unwrap_err().field, "app.dns.qname");
        let mut w = pb::App::from(&sample_app());
        w.ics.as_mut().unwrap().functions[0].code = 70_000;
        assert_eq!(App::try_from(&w).unwrap_err().field, "app.ics.functions");
        let mut w = pb::App::from(&sample_app());
        w.proto = 99;
        assert_eq!(App::try_from(&w).unwrap_err().field, "app.proto");
        let mut w = pb::App::from(&App::of(AppProto::Tls));
        w.tls.as_mut().unwrap().alpn = vec!["h2".into(); MAX_LIST + 1];
        assert_eq!(App::try_from(&w).unwrap_err().field, "app.tls.alpn");
    }
}
