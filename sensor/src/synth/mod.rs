//! The traffic synthesizer: deterministic, seeded packet captures for tests,
//! benchmarks and `vigil demo`.
//!
//! Two ways to use it:
//! - [`write_bulk`] streams N packets over M concurrent flows (TCP sessions
//!   with handshake and teardown, UDP exchanges, ICMP echoes; IPv4 and IPv6;
//!   optionally VLAN-tagged) with 64-byte or IMIX frames, straight into a
//!   pcap writer, without holding the packets in memory;
//! - [`Scenario`] composes specific conversations (sessions, probes, floods,
//!   tunnels, fragments) at chosen times and writes them sorted by time.
//!
//! The same seed always gives the same bytes.

use std::io::{self, Write};
use std::net::IpAddr;

use crate::capture::{LinkType, PcapWriter};

mod bulk;
mod encap;
mod mix;
mod scenario;

/// QUIC Initial packets (client or server) carrying CRYPTO frames, encrypted
/// as RFC 9001 says.
pub use crate::app::quic::testing::{crypto as quic_crypto, initial as quic_initial};
pub use bulk::{BulkConfig, BulkSummary, FrameSize, write_bulk};
pub use encap::{LinkEncap, UdpTunnel, Wlan, wlan_beacon, wlan_frame};
pub use mix::{MixConfig, MixKind, MixSummary, write_mix};
pub use scenario::{DEMO_PROTECTED, ProbeAnswer, Scenario, demo_scenario};

/// SplitMix64: small, fast and good enough for synthetic traffic.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5851_f42d_4c95_7f2d)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n.max(1))) >> 64) as u64
    }

    /// Puts `v` in a random order (Fisher-Yates).
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

/// Transport layer of a synthesized packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    /// TCP segment.
    Tcp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
        /// Flags byte (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10).
        flags: u8,
        /// Sequence number.
        seq: u32,
        /// Acknowledgement number.
        ack: u32,
    },
    /// UDP datagram.
    Udp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
    },
    /// ICMP or ICMPv6 message (chosen by the address family).
    Icmp {
        /// Type.
        icmp_type: u8,
        /// Code.
        code: u8,
        /// Identifier (echo).
        id: u16,
        /// Sequence (echo).
        seq: u16,
    },
    /// Any other protocol number, no header.
    Raw(u8),
}

/// TCP flag bits.
pub mod tcp {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// How a packet is carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encap {
    /// Plain Ethernet.
    None,
    /// VXLAN (UDP 4789) between two tunnel endpoints.
    Vxlan {
        /// Outer source.
        outer_src: IpAddr,
        /// Outer destination.
        outer_dst: IpAddr,
    },
    /// GRE (protocol 0x0800/0x86dd) between two endpoints.
    Gre {
        /// Outer source.
        outer_src: IpAddr,
        /// Outer destination.
        outer_dst: IpAddr,
    },
    /// IP in IP (protocol 4 or 41).
    IpInIp {
        /// Outer source.
        outer_src: IpAddr,
        /// Outer destination.
        outer_dst: IpAddr,
    },
    /// An MPLS label stack of one label.
    Mpls(u32),
    /// A tunnel in UDP between two endpoints.
    Udp {
        /// Outer source.
        outer_src: IpAddr,
        /// Outer destination.
        outer_dst: IpAddr,
        /// Which tunnel.
        tunnel: UdpTunnel,
        /// Sent by the endpoint that did not open the tunnel (its ports
        /// as [`UdpTunnel::ports`] gives them).
        reply: bool,
    },
    /// L2TPv3 over IP (protocol 115): an Ethernet pseudowire after the
    /// session id and a cookie of `cookie` bytes (0, 4 or 8).
    L2tpv3 {
        /// Outer source.
        outer_src: IpAddr,
        /// Outer destination.
        outer_dst: IpAddr,
        /// Cookie length.
        cookie: u8,
    },
    /// Layer-2 headers before the IP packet or an inner frame.
    Link(LinkEncap),
}

/// One packet to synthesize.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketSpec {
    /// Source address.
    pub src: IpAddr,
    /// Destination address (same family as `src`).
    pub dst: IpAddr,
    /// Transport header.
    pub l4: L4,
    /// Transport payload bytes.
    pub payload: usize,
    /// Up to two 802.1Q tags, outermost first (0 = none).
    pub vlan: [u16; 2],
    /// Encapsulation.
    pub encap: Encap,
    /// IPv4 identification (for fragments).
    pub ip_id: u16,
}

impl PacketSpec {
    /// A plain packet.
    pub fn new(src: IpAddr, dst: IpAddr, l4: L4, payload: usize) -> Self {
        PacketSpec {
            src,
            dst,
            l4,
            payload,
            vlan: [0; 2],
            encap: Encap::None,
            ip_id: 0,
        }
    }
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from(c[0]) << 8
        };
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The Internet checksum of the transport `segment` (its checksum field
/// zero) of protocol `proto` between `src` and `dst`, over the pseudo-header
/// of RFC 768 / RFC 8200 section 8.1 (IPv4 addresses with an IPv6 peer are
/// taken as mapped).
fn transport_checksum(src: IpAddr, dst: IpAddr, proto: u8, segment: &[u8]) -> u16 {
    let mut pseudo = Vec::with_capacity(40 + segment.len());
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&[0, proto]);
            pseudo.extend_from_slice(&(segment.len() as u16).to_be_bytes());
        }
        _ => {
            let v6 = |a: IpAddr| match a {
                IpAddr::V6(a) => a.octets(),
                IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            };
            pseudo.extend_from_slice(&v6(src));
            pseudo.extend_from_slice(&v6(dst));
            pseudo.extend_from_slice(&(segment.len() as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, proto]);
        }
    }
    pseudo.extend_from_slice(segment);
    checksum(&pseudo)
}

fn proto_of(l4: &L4, v6: bool) -> u8 {
    match l4 {
        L4::Tcp { .. } => 6,
        L4::Udp { .. } => 17,
        L4::Icmp { .. } => {
            if v6 {
                58
            } else {
                1
            }
        }
        L4::Raw(p) => *p,
    }
}

/// Appends an IP header for `payload_len` bytes of protocol `proto`.
#[allow(clippy::too_many_arguments)]
fn push_ip(
    out: &mut Vec<u8>,
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    payload_len: usize,
    id: u16,
    frag: u16,
) {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let start = out.len();
            let total = (20 + payload_len) as u16;
            out.extend_from_slice(&[0x45, 0]);
            out.extend_from_slice(&total.to_be_bytes());
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&frag.to_be_bytes());
            out.extend_from_slice(&[64, proto, 0, 0]);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
            let c = checksum(&out[start..start + 20]);
            out[start + 10..start + 12].copy_from_slice(&c.to_be_bytes());
        }
        (s, d) => {
            let s6 = match s {
                IpAddr::V6(a) => a,
                IpAddr::V4(a) => a.to_ipv6_mapped(),
            };
            let d6 = match d {
                IpAddr::V6(a) => a,
                IpAddr::V4(a) => a.to_ipv6_mapped(),
            };
            out.extend_from_slice(&[0x60, 0, 0, 0]);
            out.extend_from_slice(&(payload_len as u16).to_be_bytes());
            out.extend_from_slice(&[proto, 64]);
            out.extend_from_slice(&s6.octets());
            out.extend_from_slice(&d6.octets());
        }
    }
}

/// Appends the transport header and payload.
fn push_l4(out: &mut Vec<u8>, l4: &L4, payload: usize) {
    match *l4 {
        L4::Tcp {
            sport,
            dport,
            flags,
            seq,
            ack,
        } => {
            out.extend_from_slice(&sport.to_be_bytes());
            out.extend_from_slice(&dport.to_be_bytes());
            out.extend_from_slice(&seq.to_be_bytes());
            out.extend_from_slice(&ack.to_be_bytes());
            out.extend_from_slice(&[0x50, flags]);
            out.extend_from_slice(&64240u16.to_be_bytes());
            out.extend_from_slice(&[0, 0, 0, 0]);
        }
        L4::Udp { sport, dport } => {
            out.extend_from_slice(&sport.to_be_bytes());
            out.extend_from_slice(&dport.to_be_bytes());
            out.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
            out.extend_from_slice(&[0, 0]);
        }
        L4::Icmp {
            icmp_type,
            code,
            id,
            seq,
        } => {
            out.extend_from_slice(&[icmp_type, code, 0, 0]);
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&seq.to_be_bytes());
        }
        L4::Raw(_) => {}
    }
    out.extend(std::iter::repeat_n(0x61u8, payload));
}

fn l4_header_len(l4: &L4) -> usize {
    match l4 {
        L4::Tcp { .. } => 20,
        L4::Udp { .. } | L4::Icmp { .. } => 8,
        L4::Raw(_) => 0,
    }
}

const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

fn push_ether(out: &mut Vec<u8>, vlan: [u16; 2], ethertype: u16) {
    out.extend_from_slice(&MAC_B);
    out.extend_from_slice(&MAC_A);
    for v in vlan.iter().filter(|v| **v != 0) {
        out.extend_from_slice(&0x8100u16.to_be_bytes());
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(&ethertype.to_be_bytes());
}

fn ethertype(a: IpAddr) -> u16 {
    if a.is_ipv4() { 0x0800 } else { 0x86dd }
}

/// The IP packet (header, transport, payload) of a spec, without encapsulation.
pub fn ip_packet(spec: &PacketSpec, out: &mut Vec<u8>) {
    let v6 = spec.src.is_ipv6();
    let len = l4_header_len(&spec.l4) + spec.payload;
    push_ip(
        out,
        spec.src,
        spec.dst,
        proto_of(&spec.l4, v6),
        len,
        spec.ip_id,
        0,
    );
    push_l4(out, &spec.l4, spec.payload);
}

/// Builds the Ethernet frame of a spec into `out` (cleared first), padded to 60 bytes.
pub fn build_frame(spec: &PacketSpec, out: &mut Vec<u8>) {
    out.clear();
    match spec.encap {
        // The common case without a copy of the packet.
        Encap::None => {
            push_ether(out, spec.vlan, ethertype(spec.src));
            ip_packet(spec, out);
        }
        _ => {
            let mut inner = Vec::new();
            ip_packet(spec, &mut inner);
            encapsulate(spec, &inner, out);
        }
    }
    if out.len() < 60 {
        out.resize(60, 0);
    }
}

/// Appends the frame carrying the IP packet `inner` (the spec's, or one
/// of its fragments) in the spec's VLANs and encapsulation.
fn encapsulate(spec: &PacketSpec, inner: &[u8], out: &mut Vec<u8>) {
    let inner_type = if inner.first().is_some_and(|b| b >> 4 == 6) {
        0x86dd
    } else {
        0x0800
    };
    match spec.encap {
        Encap::None => {
            push_ether(out, spec.vlan, inner_type);
            out.extend_from_slice(inner);
        }
        Encap::Mpls(label) => {
            push_ether(out, spec.vlan, 0x8847);
            out.extend_from_slice(&((label << 12) | 0x100 | 64).to_be_bytes());
            out.extend_from_slice(inner);
        }
        Encap::Vxlan {
            outer_src,
            outer_dst,
        } => {
            let mut frame = Vec::new();
            push_ether(&mut frame, [0; 2], inner_type);
            frame.extend_from_slice(inner);
            push_ether(out, spec.vlan, ethertype(outer_src));
            push_ip(
                out,
                outer_src,
                outer_dst,
                17,
                8 + 8 + frame.len(),
                spec.ip_id,
                0,
            );
            push_l4(
                out,
                &L4::Udp {
                    sport: 49152,
                    dport: 4789,
                },
                0,
            );
            let udp_len_at = out.len() - 4;
            out[udp_len_at..udp_len_at + 2]
                .copy_from_slice(&((16 + frame.len()) as u16).to_be_bytes());
            out.extend_from_slice(&[0x08, 0, 0, 0, 0, 0, 42, 0]);
            out.extend_from_slice(&frame);
        }
        Encap::Gre {
            outer_src,
            outer_dst,
        } => {
            push_ether(out, spec.vlan, ethertype(outer_src));
            push_ip(
                out,
                outer_src,
                outer_dst,
                47,
                4 + inner.len(),
                spec.ip_id,
                0,
            );
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&inner_type.to_be_bytes());
            out.extend_from_slice(inner);
        }
        Encap::IpInIp {
            outer_src,
            outer_dst,
        } => {
            push_ether(out, spec.vlan, ethertype(outer_src));
            let proto = if inner_type == 0x0800 { 4 } else { 41 };
            push_ip(out, outer_src, outer_dst, proto, inner.len(), spec.ip_id, 0);
            out.extend_from_slice(inner);
        }
        Encap::Udp { .. } | Encap::L2tpv3 { .. } | Encap::Link(_) => encap::wrap(spec, inner, out),
    }
}

/// Splits an IPv4 spec into fragment frames carrying at most `mtu_payload`
/// bytes of IP payload each (rounded down to 8), each in the spec's VLANs
/// and encapsulation (a tunnel carries the inner packet's fragments).
pub fn fragment_frames(spec: &PacketSpec, mtu_payload: usize) -> Vec<Vec<u8>> {
    let mut whole = Vec::new();
    ip_packet(spec, &mut whole);
    let body = &whole[20..];
    let step = (mtu_payload / 8).max(1) * 8;
    let proto = proto_of(&spec.l4, false);
    let mut frames = Vec::new();
    let mut off = 0;
    while off < body.len() {
        let end = (off + step).min(body.len());
        let more = end < body.len();
        let frag = ((off / 8) as u16) | if more { 0x2000 } else { 0 };
        let mut ip = Vec::new();
        push_ip(
            &mut ip,
            spec.src,
            spec.dst,
            proto,
            end - off,
            spec.ip_id,
            frag,
        );
        ip.extend_from_slice(&body[off..end]);
        let mut f = Vec::new();
        encapsulate(spec, &ip, &mut f);
        if f.len() < 60 {
            f.resize(60, 0);
        }
        frames.push(f);
        off = end;
    }
    frames
}
