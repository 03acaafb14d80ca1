//! Bulk traffic: N packets over M concurrent flows streamed straight into
//! a pcap writer, for benchmarks.

use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;

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
