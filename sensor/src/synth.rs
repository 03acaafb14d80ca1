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
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::capture::{LinkType, PcapWriter};

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
        Encap::None => {
            push_ether(out, spec.vlan, ethertype(spec.src));
            ip_packet(spec, out);
        }
        Encap::Mpls(label) => {
            push_ether(out, spec.vlan, 0x8847);
            out.extend_from_slice(&((label << 12) | 0x100 | 64).to_be_bytes());
            ip_packet(spec, out);
        }
        Encap::Vxlan {
            outer_src,
            outer_dst,
        } => {
            let mut inner = Vec::new();
            push_ether(&mut inner, [0; 2], ethertype(spec.src));
            ip_packet(spec, &mut inner);
            push_ether(out, spec.vlan, ethertype(outer_src));
            push_ip(
                out,
                outer_src,
                outer_dst,
                17,
                8 + 8 + inner.len(),
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
                .copy_from_slice(&((16 + inner.len()) as u16).to_be_bytes());
            out.extend_from_slice(&[0x08, 0, 0, 0, 0, 0, 42, 0]);
            out.extend_from_slice(&inner);
        }
        Encap::Gre {
            outer_src,
            outer_dst,
        } => {
            let mut inner = Vec::new();
            ip_packet(spec, &mut inner);
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
            out.extend_from_slice(&ethertype(spec.src).to_be_bytes());
            out.extend_from_slice(&inner);
        }
        Encap::IpInIp {
            outer_src,
            outer_dst,
        } => {
            let mut inner = Vec::new();
            ip_packet(spec, &mut inner);
            push_ether(out, spec.vlan, ethertype(outer_src));
            let proto = if spec.src.is_ipv4() { 4 } else { 41 };
            push_ip(out, outer_src, outer_dst, proto, inner.len(), spec.ip_id, 0);
            out.extend_from_slice(&inner);
        }
    }
    if out.len() < 60 {
        out.resize(60, 0);
    }
}

/// Splits an IPv4 spec into fragment frames carrying at most `mtu_payload`
/// bytes of IP payload each (rounded down to 8).
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
        let mut f = Vec::new();
        push_ether(&mut f, spec.vlan, 0x0800);
        let frag = ((off / 8) as u16) | if more { 0x2000 } else { 0 };
        push_ip(
            &mut f,
            spec.src,
            spec.dst,
            proto,
            end - off,
            spec.ip_id,
            frag,
        );
        f.extend_from_slice(&body[off..end]);
        if f.len() < 60 {
            f.resize(60, 0);
        }
        frames.push(f);
        off = end;
    }
    frames
}

/// Frame sizes of bulk traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameSize {
    /// Every frame this long (or its headers' minimum).
    Fixed(usize),
    /// Simple IMIX: 7 × 64, 4 × 576, 1 × 1500 bytes per 12 data frames.
    Imix,
}

/// Parameters of [`write_bulk`].
#[derive(Clone, Copy, Debug)]
pub struct BulkConfig {
    /// Seed.
    pub seed: u64,
    /// Packets to write.
    pub packets: u64,
    /// Concurrent flows.
    pub flows: u64,
    /// Frame sizes.
    pub frame: FrameSize,
    /// Share of IPv6 flows, percent.
    pub ipv6_percent: u8,
    /// Share of VLAN-tagged flows, percent.
    pub vlan_percent: u8,
    /// Timestamp of the first packet, ns since the epoch.
    pub start_ns: u64,
    /// Time between packets, ns.
    pub gap_ns: u64,
}

impl Default for BulkConfig {
    fn default() -> Self {
        BulkConfig {
            seed: 1,
            packets: 1_000_000,
            flows: 10_000,
            frame: FrameSize::Fixed(64),
            ipv6_percent: 10,
            vlan_percent: 10,
            start_ns: 1_795_000_000_000_000_000,
            gap_ns: 1_000,
        }
    }
}

impl BulkConfig {
    /// The whole capture of [`write_bulk`] as bytes.
    pub fn to_pcap_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        // Writing to a Vec cannot fail.
        let _ = write_bulk(self, &mut v);
        v
    }
}

/// What [`write_bulk`] wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BulkSummary {
    /// Packets written.
    pub packets: u64,
    /// Flows they belong to.
    pub flows: u64,
    /// Frame bytes written.
    pub frame_bytes: u64,
}

#[derive(Clone, Copy)]
struct BulkFlow {
    client: IpAddr,
    server: IpAddr,
    cport: u16,
    sport: u16,
    kind: u8, // 0 tcp, 1 udp, 2 icmp
    vlan: u16,
}

const IMIX: [usize; 12] = [64, 64, 64, 64, 64, 64, 64, 576, 576, 576, 576, 1500];

/// Streams `cfg.packets` packets over `cfg.flows` concurrent flows as pcap
/// into `out`. Flows are interleaved round-robin, so all of them are active
/// for the whole capture; each flow has `packets / flows` packets (the first
/// `packets % flows` flows one more). TCP flows open with a handshake and, when
/// long enough, close with FIN in both directions.
pub fn write_bulk(cfg: &BulkConfig, out: impl Write) -> io::Result<BulkSummary> {
    let mut rng = Rng::new(cfg.seed);
    let nflows = cfg.flows.max(1).min(cfg.packets.max(1));
    let flows: Vec<BulkFlow> = (0..nflows)
        .map(|i| {
            let v6 = rng.below(100) < u64::from(cfg.ipv6_percent);
            let (client, server) = if v6 {
                let c = 0x2001_0db8_0000_0000_0000_0000_0000_0000u128
                    | u128::from(rng.next_u64() & 0xffff_ffff);
                let s = 0x2001_0db8_ffff_0000_0000_0000_0000_0000u128 | u128::from(rng.below(1024));
                (IpAddr::V6(Ipv6Addr::from(c)), IpAddr::V6(Ipv6Addr::from(s)))
            } else {
                let c = 0x0a00_0000u32 | (rng.next_u64() as u32 & 0x00ff_ffff);
                let s = 0xac10_0000u32 | (rng.below(4096) as u32);
                (IpAddr::V4(Ipv4Addr::from(c)), IpAddr::V4(Ipv4Addr::from(s)))
            };
            let r = rng.below(100);
            let kind = if r < 70 {
                0
            } else if r < 95 {
                1
            } else {
                2
            };
            let sport = match kind {
                0 => [443, 80, 22, 502, 8080][rng.below(5) as usize],
                _ => [53, 123, 161, 5353][rng.below(4) as usize],
            };
            BulkFlow {
                client,
                server,
                // Unique per flow so flows never collide on their key.
                cport: 1024 + (i % 64_000) as u16,
                sport: sport + (i / 64_000) as u16,
                kind,
                vlan: if rng.below(100) < u64::from(cfg.vlan_percent) {
                    100 + rng.below(10) as u16
                } else {
                    0
                },
            }
        })
        .collect();
    let per = cfg.packets / nflows;
    let extra = cfg.packets % nflows;
    let mut w = PcapWriter::new(out, LinkType::Ethernet)?;
    let mut frame = Vec::with_capacity(2048);
    let mut summary = BulkSummary {
        flows: nflows,
        ..BulkSummary::default()
    };
    let mut ts = cfg.start_ns;
    let rounds = per + u64::from(extra > 0);
    for round in 0..rounds {
        for (i, f) in flows.iter().enumerate() {
            let len = per + u64::from((i as u64) < extra);
            if round >= len {
                continue;
            }
            let spec = bulk_packet(f, round, len, cfg.frame, &mut rng);
            build_frame(&spec, &mut frame);
            w.write_packet(ts, &frame)?;
            summary.packets += 1;
            summary.frame_bytes += frame.len() as u64;
            ts += cfg.gap_ns;
        }
    }
    w.finish()?;
    Ok(summary)
}

fn bulk_packet(f: &BulkFlow, k: u64, len: u64, frame: FrameSize, rng: &mut Rng) -> PacketSpec {
    let v6 = f.client.is_ipv6();
    let ip_hdr = if v6 { 40 } else { 20 };
    let eth = 14 + if f.vlan != 0 { 4 } else { 0 };
    let target = match frame {
        FrameSize::Fixed(n) => n,
        FrameSize::Imix => IMIX[rng.below(12) as usize],
    };
    let to_server = k.is_multiple_of(2);
    let (src, dst) = if to_server {
        (f.client, f.server)
    } else {
        (f.server, f.client)
    };
    let (sp, dp) = if to_server {
        (f.cport, f.sport)
    } else {
        (f.sport, f.cport)
    };
    let (l4, data) = match f.kind {
        0 => {
            use tcp::*;
            // Even steps come from the client, odd ones from the server: the
            // two FINs are consecutive steps, so each side sends one.
            let teardown = len >= 6;
            let (flags, data) = match k {
                0 => (SYN, false),
                1 => (SYN | ACK, false),
                2 => (ACK, false),
                _ if teardown && k == len - 3 => (FIN | ACK, false),
                _ if teardown && k == len - 2 => (FIN | ACK, false),
                _ if teardown && k == len - 1 => (ACK, false),
                _ => (PSH | ACK, true),
            };
            let seq = 1000 + k as u32 * 1460;
            (
                L4::Tcp {
                    sport: sp,
                    dport: dp,
                    flags,
                    seq,
                    ack: seq,
                },
                data,
            )
        }
        1 => (
            L4::Udp {
                sport: sp,
                dport: dp,
            },
            true,
        ),
        _ => {
            let t = match (v6, to_server) {
                (false, true) => 8,
                (false, false) => 0,
                (true, true) => 128,
                (true, false) => 129,
            };
            (
                L4::Icmp {
                    icmp_type: t,
                    code: 0,
                    id: f.cport,
                    seq: k as u16,
                },
                true,
            )
        }
    };
    let payload = if data {
        target
            .saturating_sub(eth + ip_hdr + l4_header_len(&l4))
            .max(1)
    } else {
        0
    };
    let mut spec = PacketSpec::new(src, dst, l4, payload);
    spec.vlan = [f.vlan, 0];
    spec
}

/// A composed capture: conversations placed at chosen times.
#[derive(Clone, Debug, Default)]
pub struct Scenario {
    packets: Vec<(u64, Vec<u8>)>,
}

/// How a probed port answers a SYN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeAnswer {
    /// Closed: RST-ACK.
    Rst,
    /// Open: SYN-ACK (the prober then sends RST, as a SYN scanner does).
    SynAck,
    /// Filtered: nothing.
    Silent,
}

impl Scenario {
    /// An empty scenario.
    pub fn new() -> Self {
        Scenario::default()
    }

    /// Packets so far.
    pub fn len(&self) -> usize {
        self.packets.len()
    }

    /// Whether no packet was added.
    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// Adds one packet at `ts_ns`.
    pub fn packet(&mut self, ts_ns: u64, spec: &PacketSpec) {
        let mut f = Vec::new();
        build_frame(spec, &mut f);
        self.packets.push((ts_ns, f));
    }

    /// Adds a ready frame at `ts_ns`.
    pub fn frame(&mut self, ts_ns: u64, frame: Vec<u8>) {
        self.packets.push((ts_ns, frame));
    }

    /// A complete TCP session: handshake, `segments` data segments of
    /// `seg_len` bytes alternating client/server (client first), FIN from the
    /// client, FIN-ACK from the server, final ACK. Packets are `gap_ns` apart.
    /// Returns the time after the last packet.
    #[allow(clippy::too_many_arguments)]
    pub fn tcp_session(
        &mut self,
        t0: u64,
        client: IpAddr,
        cport: u16,
        server: IpAddr,
        sport: u16,
        segments: usize,
        seg_len: usize,
        gap_ns: u64,
    ) -> u64 {
        use tcp::*;
        let c2s = |flags, seq| L4::Tcp {
            sport: cport,
            dport: sport,
            flags,
            seq,
            ack: 1,
        };
        let s2c = |flags, seq| L4::Tcp {
            sport,
            dport: cport,
            flags,
            seq,
            ack: 1,
        };
        let mut t = t0;
        let mut push = |sc: &mut Scenario, from_client: bool, l4: L4, payload: usize| {
            let (s, d) = if from_client {
                (client, server)
            } else {
                (server, client)
            };
            sc.packet(t, &PacketSpec::new(s, d, l4, payload));
            t += gap_ns;
        };
        push(self, true, c2s(SYN, 0), 0);
        push(self, false, s2c(SYN | ACK, 0), 0);
        push(self, true, c2s(ACK, 1), 0);
        for i in 0..segments {
            if i % 2 == 0 {
                push(self, true, c2s(PSH | ACK, 1 + i as u32), seg_len);
            } else {
                push(self, false, s2c(PSH | ACK, 1 + i as u32), seg_len);
            }
        }
        push(self, true, c2s(FIN | ACK, 9000), 0);
        push(self, false, s2c(FIN | ACK, 9000), 0);
        push(self, true, c2s(ACK, 9001), 0);
        t
    }

    /// A SYN probe and the target's answer.
    #[allow(clippy::too_many_arguments)]
    pub fn tcp_probe(
        &mut self,
        t: u64,
        src: IpAddr,
        sport: u16,
        dst: IpAddr,
        dport: u16,
        answer: ProbeAnswer,
        rtt_ns: u64,
    ) {
        use tcp::*;
        self.packet(
            t,
            &PacketSpec::new(
                src,
                dst,
                L4::Tcp {
                    sport,
                    dport,
                    flags: SYN,
                    seq: 7,
                    ack: 0,
                },
                0,
            ),
        );
        let back = |flags| L4::Tcp {
            sport: dport,
            dport: sport,
            flags,
            seq: 0,
            ack: 8,
        };
        match answer {
            ProbeAnswer::Rst => {
                self.packet(t + rtt_ns, &PacketSpec::new(dst, src, back(RST | ACK), 0))
            }
            ProbeAnswer::SynAck => {
                self.packet(t + rtt_ns, &PacketSpec::new(dst, src, back(SYN | ACK), 0));
                self.packet(
                    t + 2 * rtt_ns,
                    &PacketSpec::new(
                        src,
                        dst,
                        L4::Tcp {
                            sport,
                            dport,
                            flags: RST,
                            seq: 8,
                            ack: 0,
                        },
                        0,
                    ),
                );
            }
            ProbeAnswer::Silent => {}
        }
    }

    /// `count` request/response UDP exchanges, `gap_ns` apart.
    #[allow(clippy::too_many_arguments)]
    pub fn udp_exchange(
        &mut self,
        t0: u64,
        client: IpAddr,
        cport: u16,
        server: IpAddr,
        sport: u16,
        req: usize,
        resp: usize,
        count: usize,
        gap_ns: u64,
    ) {
        for i in 0..count as u64 {
            let t = t0 + i * gap_ns;
            self.packet(
                t,
                &PacketSpec::new(
                    client,
                    server,
                    L4::Udp {
                        sport: cport,
                        dport: sport,
                    },
                    req,
                ),
            );
            if resp > 0 {
                self.packet(
                    t + gap_ns / 4,
                    &PacketSpec::new(
                        server,
                        client,
                        L4::Udp {
                            sport,
                            dport: cport,
                        },
                        resp,
                    ),
                );
            }
        }
    }

    /// `count` ICMP echo requests each answered, `gap_ns` apart.
    pub fn icmp_echo(
        &mut self,
        t0: u64,
        src: IpAddr,
        dst: IpAddr,
        id: u16,
        count: usize,
        gap_ns: u64,
    ) {
        let (req, rep) = if src.is_ipv4() { (8, 0) } else { (128, 129) };
        for i in 0..count as u64 {
            let t = t0 + i * gap_ns;
            let q = L4::Icmp {
                icmp_type: req,
                code: 0,
                id,
                seq: i as u16,
            };
            let r = L4::Icmp {
                icmp_type: rep,
                code: 0,
                id,
                seq: i as u16,
            };
            self.packet(t, &PacketSpec::new(src, dst, q, 56));
            self.packet(t + gap_ns / 4, &PacketSpec::new(dst, src, r, 56));
        }
    }

    /// Writes the packets sorted by time (stable) as a pcap file.
    pub fn write_pcap(mut self, out: impl Write) -> io::Result<usize> {
        self.packets.sort_by_key(|(t, _)| *t);
        let mut w = PcapWriter::new(out, LinkType::Ethernet)?;
        for (t, f) in &self.packets {
            w.write_packet(*t, f)?;
        }
        w.finish()?;
        Ok(self.packets.len())
    }

    /// The pcap file as bytes.
    pub fn to_pcap_bytes(self) -> Vec<u8> {
        let mut v = Vec::new();
        // Writing to a Vec cannot fail.
        let _ = self.write_pcap(&mut v);
        v
    }
}

/// The protected network of the demo scenario (TEST-NET-2).
pub const DEMO_PROTECTED: &str = "198.51.100.0/24";

/// The demo's attack scenario against a small utility network
/// (198.51.100.0/24): ordinary traffic (web and DNS clients, an HMI polling a
/// PLC over Modbus/TCP, NTP) plus a vertical and horizontal SYN scan, a SYN
/// flood from spoofed sources, an SSH brute-force attempt and a Modbus write
/// from a client that is not the HMI. Ten minutes of traffic.
pub fn demo_scenario(seed: u64) -> Scenario {
    let mut rng = Rng::new(seed);
    let mut sc = Scenario::new();
    // A fixed date in the past: collectors refuse flows from the future.
    let t0: u64 = 1_767_261_600_000_000_000; // 2026-01-01T10:00:00Z
    let s = 1_000_000_000u64;
    let ms = 1_000_000u64;
    let v4 = |a: u8, b: u8, c: u8, d: u8| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
    let web = v4(198, 51, 100, 10);
    let dns = v4(198, 51, 100, 53);
    let ssh = v4(198, 51, 100, 22);
    let plc = v4(198, 51, 100, 50);
    let hmi = v4(198, 51, 100, 100);
    let ntp = v4(198, 51, 100, 123);

    // Ordinary traffic: 150 web sessions from clients in 192.0.2.0/24.
    for i in 0..150u64 {
        let client = v4(192, 0, 2, 1 + (i % 200) as u8);
        let t = t0 + rng.below(600) * s + rng.below(1000) * ms;
        let segs = 4 + rng.below(16) as usize;
        sc.tcp_session(t, client, 40_000 + i as u16, web, 443, segs, 900, 20 * ms);
    }
    // DNS lookups and NTP.
    for i in 0..120u64 {
        let client = v4(192, 0, 2, 1 + rng.below(200) as u8);
        let t = t0 + rng.below(600) * s;
        sc.udp_exchange(t, client, 50_000 + i as u16, dns, 53, 40, 120, 1, 2 * ms);
    }
    for i in 0..10u64 {
        sc.udp_exchange(
            t0 + i * 60 * s,
            v4(198, 51, 100, 200),
            123,
            ntp,
            123,
            48,
            48,
            1,
            10 * ms,
        );
    }
    // The HMI polls the PLC every 2 s over one long Modbus/TCP session.
    {
        use tcp::*;
        let mut t = t0;
        let c = |flags, seq| L4::Tcp {
            sport: 49_500,
            dport: 502,
            flags,
            seq,
            ack: 1,
        };
        let p = |flags, seq| L4::Tcp {
            sport: 502,
            dport: 49_500,
            flags,
            seq,
            ack: 1,
        };
        sc.packet(t, &PacketSpec::new(hmi, plc, c(SYN, 0), 0));
        sc.packet(t + ms, &PacketSpec::new(plc, hmi, p(SYN | ACK, 0), 0));
        sc.packet(t + 2 * ms, &PacketSpec::new(hmi, plc, c(ACK, 1), 0));
        for k in 0..300u32 {
            t += 2 * s;
            sc.packet(t, &PacketSpec::new(hmi, plc, c(PSH | ACK, 1 + k), 12));
            sc.packet(
                t + 3 * ms,
                &PacketSpec::new(plc, hmi, p(PSH | ACK, 1 + k), 29),
            );
        }
    }

    let attacker = v4(203, 0, 113, 66);
    // Vertical scan of the web server's first 1024 ports, then a horizontal
    // sweep for SSH across the network.
    let mut t = t0 + 60 * s;
    for port in 1..=1024u16 {
        let ans = match port {
            80 | 443 => ProbeAnswer::SynAck,
            _ if port % 7 == 0 => ProbeAnswer::Silent,
            _ => ProbeAnswer::Rst,
        };
        sc.tcp_probe(t, attacker, 61_000, web, port, ans, ms);
        t += 5 * ms;
    }
    for host in 1..=254u8 {
        let ans = if host == 22 {
            ProbeAnswer::SynAck
        } else {
            ProbeAnswer::Silent
        };
        sc.tcp_probe(t, attacker, 61_001, v4(198, 51, 100, host), 22, ans, ms);
        t += 5 * ms;
    }
    // SYN flood on the web server from 3000 spoofed sources.
    let mut t = t0 + 300 * s;
    for _ in 0..3000 {
        let src = IpAddr::V4(Ipv4Addr::from(
            0x0b00_0000u32 + rng.below(0xd000_0000) as u32,
        ));
        let sport = 1024 + rng.below(60_000) as u16;
        sc.packet(
            t,
            &PacketSpec::new(
                src,
                web,
                L4::Tcp {
                    sport,
                    dport: 80,
                    flags: tcp::SYN,
                    seq: 1,
                    ack: 0,
                },
                0,
            ),
        );
        t += 300_000; // 0.3 ms: about 3300 SYN/s
    }
    // SSH brute force: 200 short sessions from one source.
    let brute = v4(203, 0, 113, 99);
    let mut t = t0 + 400 * s;
    for i in 0..200u16 {
        t = sc.tcp_session(t, brute, 30_000 + i, ssh, 22, 6, 300, 5 * ms) + 200 * ms;
    }
    // A Modbus write (function 6) from a client that is not the HMI.
    let rogue = v4(203, 0, 113, 77);
    sc.tcp_session(t0 + 500 * s, rogue, 45_000, plc, 502, 2, 12, 10 * ms);
    sc
}
