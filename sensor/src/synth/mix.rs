//! A realistic traffic mix, as a network's capture looks rather than as a
//! benchmark's: flow sizes Zipf-distributed (s = 1: a long tail of mice, a
//! few elephants) with the flows' packets interleaved at random; about 10 %
//! IPv6 and 5 % VLAN-tagged packets; 12 % UDP, most of it DNS queries and
//! responses carrying real DNS messages (a stub resolver's A and AAAA
//! lookups on one socket); 2 % ICMP and ICMPv6 echo; 1 % ESP; the rest full
//! TCP conversations (handshake, a request, the data with an ACK every two
//! segments, FIN from both sides or, for 5 %, a RST), downloads and
//! uploads.
//!
//! Shares are of packets and are met to within a flow (the elephants are
//! each a few per cent of the packets); [`MixSummary`] reports the shares
//! written.

use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;

/// Parameters of [`write_mix`].
#[derive(Clone, Copy, Debug)]
pub struct MixConfig {
    /// Seed.
    pub seed: u64,
    /// Packets to write.
    pub packets: u64,
    /// Flows (all active from their first packet to their last, spread at
    /// random over the capture).
    pub flows: u64,
    /// A frame size every payload is cut to fit (or the headers' minimum);
    /// `None`: the traffic's own sizes.
    pub frame: Option<usize>,
    /// Timestamp of the first packet, ns since the epoch.
    pub start_ns: u64,
    /// Time between packets, ns.
    pub gap_ns: u64,
}

impl Default for MixConfig {
    fn default() -> Self {
        MixConfig {
            seed: 1,
            packets: 5_000_000,
            flows: 200_000,
            frame: None,
            start_ns: 1_795_000_000_000_000_000,
            gap_ns: 1_000,
        }
    }
}

impl MixConfig {
    /// The whole capture of [`write_mix`] as bytes.
    pub fn to_pcap_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        // Writing to a Vec cannot fail.
        let _ = write_mix(self, &mut v);
        v
    }
}

/// Kinds of flows in the mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum MixKind {
    /// A TCP conversation.
    Tcp,
    /// DNS lookups over UDP.
    Dns,
    /// Other UDP (QUIC-like exchanges on port 443).
    Udp,
    /// ICMP or ICMPv6 echo requests and replies.
    Icmp,
    /// An IPsec ESP security association pair.
    Esp,
}

/// What [`write_mix`] wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MixSummary {
    /// Packets written.
    pub packets: u64,
    /// Flows they belong to.
    pub flows: u64,
    /// Frame bytes written.
    pub frame_bytes: u64,
    /// Packets by [`MixKind`] (in its order).
    pub by_kind: [u64; 5],
    /// IPv6 packets.
    pub ipv6: u64,
    /// VLAN-tagged packets.
    pub vlan: u64,
    /// Packets of the largest flow.
    pub largest_flow: u64,
    /// Flows of at most 4 packets.
    pub mice: u64,
    /// TCP conversations that end with a RST.
    pub tcp_resets: u64,
}

#[derive(Clone, Copy)]
struct Flow {
    kind: MixKind,
    /// Packets in all.
    n: u32,
    /// Packets written so far.
    sent: u32,
    client: IpAddr,
    server: IpAddr,
    cport: u16,
    sport: u16,
    vlan: u16,
    /// Sequence numbers next to send, client and server (TCP); the DNS
    /// message id and the ESP SPI's base otherwise.
    cseq: u32,
    sseq: u32,
    upload: bool,
    reset: bool,
    /// Packets the client sent so far (ESP's sequence numbers).
    client_sent: u32,
}

/// Names a stub resolver looks up.
const NAMES: [&str; 12] = [
    "www.example.com",
    "mail.example.org",
    "api.example.net",
    "cdn.example.com",
    "time.example.org",
    "updates.example.net",
    "login.example.com",
    "static.example.org",
    "ocsp.example.net",
    "scada-historian.example.com",
    "vpn.example.org",
    "telemetry.example.net",
];

/// Zipf (s = 1) sizes for `flows` flows summing to `packets`: the flow of
/// rank i gets `packets / (H(flows) i)`, at least one packet, and the
/// largest absorbs the rounding.
fn zipf_sizes(packets: u64, flows: u64) -> Vec<u32> {
    let h: f64 = (1..=flows).map(|i| 1.0 / i as f64).sum();
    let mut sizes: Vec<u32> = (1..=flows)
        .map(|i| ((packets as f64 / (h * i as f64)).round() as u32).max(1))
        .collect();
    let sum: u64 = sizes.iter().map(|&s| u64::from(s)).sum();
    if let Some(first) = sizes.first_mut() {
        *first = (i64::from(*first) + packets as i64 - sum as i64).max(1) as u32;
    }
    sizes
}

/// Gives kinds to flows so that their packets make the shares of the mix:
/// flows of up to 8 packets are DNS; ICMP takes 2 % of the packets from
/// flows of 2 to 64, ESP 1 % and other UDP the rest of the 12 % from
/// larger ones, each flow taken only while it fits what its kind still
/// lacks; TCP the rest (every one of at least 9 packets: a handshake, a
/// request and a close).
fn kinds(sizes: &[u32], packets: u64, rng: &mut Rng) -> Vec<MixKind> {
    let mut kinds: Vec<MixKind> = sizes
        .iter()
        .map(|&s| if s <= 8 { MixKind::Dns } else { MixKind::Tcp })
        .collect();
    // A random order to take flows in.
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    rng.shuffle(&mut order);
    // Flows taken for `kind`, in that order, while it lacks packets: of a
    // size in `range`, still the default kind, fitting what is left.
    let take =
        |kinds: &mut [MixKind], kind: MixKind, want: u64, range: std::ops::RangeInclusive<u32>| {
            let mut got = 0u64;
            for &i in &order {
                if got >= want {
                    break;
                }
                let s = sizes[i];
                let free = kinds[i] == if s <= 8 { MixKind::Dns } else { MixKind::Tcp };
                if free && range.contains(&s) && got + u64::from(s) <= want + want / 20 {
                    kinds[i] = kind;
                    got += u64::from(s);
                }
            }
        };
    take(&mut kinds, MixKind::Icmp, packets * 2 / 100, 2..=64);
    take(&mut kinds, MixKind::Esp, packets / 100, 9..=u32::MAX);
    let dns: u64 = sizes
        .iter()
        .zip(&kinds)
        .filter(|(_, k)| **k == MixKind::Dns)
        .map(|(&s, _)| u64::from(s))
        .sum();
    take(
        &mut kinds,
        MixKind::Udp,
        (packets * 12 / 100).saturating_sub(dns),
        9..=u32::MAX,
    );
    kinds
}

/// Streams the mix of `cfg` as pcap into `out`.
pub fn write_mix(cfg: &MixConfig, out: impl Write) -> io::Result<MixSummary> {
    let mut rng = Rng::new(cfg.seed);
    let nflows = cfg.flows.max(1).min(cfg.packets.max(1));
    let sizes = zipf_sizes(cfg.packets, nflows);
    let kinds = kinds(&sizes, cfg.packets, &mut rng);
    let mut summary = MixSummary {
        flows: nflows,
        largest_flow: sizes.iter().copied().max().map_or(0, u64::from),
        mice: sizes.iter().filter(|&&s| s <= 4).count() as u64,
        ..MixSummary::default()
    };
    // IPv6 and VLANs by packets: flows in a random order are given them
    // while their packets still fit the share.
    let total = cfg.packets;
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    rng.shuffle(&mut order);
    let pick = |share: u64, rng: &mut Rng| {
        let want = total * share / 100;
        let mut chosen = vec![false; sizes.len()];
        let mut got = 0;
        let start = rng.below(order.len() as u64) as usize;
        for k in 0..order.len() {
            let i = order[(start + k) % order.len()];
            if got + u64::from(sizes[i]) <= want + want / 50 {
                chosen[i] = true;
                got += u64::from(sizes[i]);
            }
            if got >= want {
                break;
            }
        }
        chosen
    };
    let v6 = pick(10, &mut rng);
    let tagged = pick(5, &mut rng);
    let mut flows: Vec<Flow> = (0..sizes.len())
        .map(|i| {
            let kind = kinds[i];
            // 20,000 hosts, each with its own ports: (host, port) is unique
            // per flow, so flows never share a key.
            let host = (i % 20_000) as u32;
            let cport = 1024 + (i % 64_000) as u16;
            let server_n = match kind {
                MixKind::Dns => rng.below(4) as u32,
                _ => 16 + rng.below(4096) as u32,
            };
            let (client, server) = if v6[i] {
                (
                    IpAddr::V6(Ipv6Addr::from(
                        0x2001_0db8_0001_0000_0000_0000_0000_0000u128 | u128::from(host),
                    )),
                    IpAddr::V6(Ipv6Addr::from(
                        0x2001_0db8_ffff_0000_0000_0000_0000_0000u128 | u128::from(server_n),
                    )),
                )
            } else {
                (
                    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | host)),
                    IpAddr::V4(Ipv4Addr::from(0xac10_0000 | server_n)),
                )
            };
            let sport = match kind {
                MixKind::Tcp => [443, 443, 443, 80, 22, 502, 8443, 3389][rng.below(8) as usize],
                MixKind::Dns => 53,
                MixKind::Udp => 443,
                MixKind::Icmp | MixKind::Esp => 0,
            };
            Flow {
                kind,
                n: sizes[i],
                sent: 0,
                client,
                server,
                cport,
                sport,
                vlan: if tagged[i] {
                    100 + rng.below(8) as u16
                } else {
                    0
                },
                cseq: rng.next_u64() as u32,
                sseq: rng.next_u64() as u32,
                upload: rng.below(100) < 30,
                reset: kind == MixKind::Tcp && rng.below(100) < 5,
                client_sent: 0,
            }
        })
        .collect();
    summary.tcp_resets = flows.iter().filter(|f| f.reset).count() as u64;
    // Every packet a slot naming its flow, the slots shuffled: each flow's
    // packets keep their order and land at random times.
    let mut slots: Vec<u32> = Vec::with_capacity(cfg.packets as usize);
    for (i, &s) in sizes.iter().enumerate() {
        slots.extend(std::iter::repeat_n(i as u32, s as usize));
    }
    rng.shuffle(&mut slots);
    let mut w = PcapWriter::new(out, LinkType::Ethernet)?;
    let mut frame = Vec::with_capacity(2048);
    let mut payload = Vec::with_capacity(2048);
    let mut ts = cfg.start_ns;
    for &slot in &slots {
        let f = &mut flows[slot as usize];
        mix_frame(f, cfg.frame, &mut rng, &mut payload, &mut frame);
        w.write_packet(ts, &frame)?;
        summary.packets += 1;
        summary.frame_bytes += frame.len() as u64;
        summary.by_kind[f.kind as usize] += 1;
        summary.ipv6 += u64::from(f.client.is_ipv6());
        summary.vlan += u64::from(f.vlan != 0);
        ts += cfg.gap_ns;
    }
    w.finish()?;
    Ok(summary)
}

/// One packet of a TCP conversation of `n` packets: (from the client,
/// flags, payload bytes). Step 0-2 the handshake, 3 the client's request
/// (a download's) or first segment (an upload's), then the data with an
/// ACK from the receiver after every two segments, then FIN, FIN, ACK (or
/// one RST).
fn tcp_step(k: u32, n: u32, upload: bool, reset: bool, rng: &mut Rng) -> (bool, u8, usize) {
    use tcp::*;
    let close = if reset { 1 } else { 3 };
    let data_end = n - close;
    match k {
        0 => (true, SYN, 0),
        1 => (false, SYN | ACK, 0),
        2 => (true, ACK, 0),
        3 if !upload => (true, PSH | ACK, 180 + rng.below(400) as usize),
        _ if k < data_end => {
            // The sender of the data is the server in a download.
            let j = k - if upload { 3 } else { 4 };
            let last = k + 1 == data_end;
            let sender_is_client = upload;
            if j % 3 == 2 {
                // The receiver's ACK of the last two segments.
                (!sender_is_client, ACK, 0)
            } else if last {
                (sender_is_client, PSH | ACK, 1 + rng.below(1460) as usize)
            } else {
                (sender_is_client, ACK, 1460)
            }
        }
        _ if reset => (rng.below(2) == 0, RST | ACK, 0),
        _ => match n - k {
            3 => (true, FIN | ACK, 0),
            2 => (false, FIN | ACK, 0),
            _ => (true, ACK, 0),
        },
    }
}

/// A DNS message: a query for `name` (type A or AAAA) or its response
/// with one answer.
fn dns_message(id: u16, name: &str, aaaa: bool, response: bool, out: &mut Vec<u8>) {
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(if response {
        &[0x81, 0x80]
    } else {
        &[0x01, 0x00]
    });
    out.extend_from_slice(&[0, 1, 0, u8::from(response), 0, 0, 0, 0]);
    for label in name.split('.') {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    let qtype: u16 = if aaaa { 28 } else { 1 };
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&[0, 1]);
    if response {
        // A pointer to the question's name, type, class IN, TTL 300.
        out.extend_from_slice(&[0xc0, 0x0c]);
        out.extend_from_slice(&qtype.to_be_bytes());
        out.extend_from_slice(&[0, 1, 0, 0, 0x01, 0x2c]);
        if aaaa {
            out.extend_from_slice(&[
                0, 16, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x42,
            ]);
        } else {
            out.extend_from_slice(&[0, 4, 192, 0, 2, 42]);
        }
    }
}

/// Writes the next packet of flow `f` into `frame` (cleared first), its
/// payload built in `payload`, with valid checksums.
fn mix_frame(
    f: &mut Flow,
    size: Option<usize>,
    rng: &mut Rng,
    payload: &mut Vec<u8>,
    frame: &mut Vec<u8>,
) {
    let k = f.sent;
    f.sent += 1;
    // Payload bytes a fixed frame size leaves after headers of `l4_len`.
    let headers = 14 + if f.vlan != 0 { 4 } else { 0 } + if f.client.is_ipv6() { 40 } else { 20 };
    let room = |l4_len: usize| size.map_or(usize::MAX, |n| n.saturating_sub(headers + l4_len));
    payload.clear();
    let (from_client, l4) = match f.kind {
        MixKind::Tcp => {
            let (from_client, flags, len) = tcp_step(k, f.n, f.upload, f.reset, rng);
            let len = len.min(room(20));
            let (seq, ack) = if from_client {
                (f.cseq, f.sseq)
            } else {
                (f.sseq, f.cseq)
            };
            let used = len as u32 + u32::from(flags & (tcp::SYN | tcp::FIN) != 0);
            if from_client {
                f.cseq = f.cseq.wrapping_add(used);
            } else {
                f.sseq = f.sseq.wrapping_add(used);
            }
            payload.resize(len, 0x61);
            let ack = if flags & tcp::ACK != 0 { ack } else { 0 };
            let (sport, dport) = if from_client {
                (f.cport, f.sport)
            } else {
                (f.sport, f.cport)
            };
            (
                from_client,
                L4::Tcp {
                    sport,
                    dport,
                    flags,
                    seq,
                    ack,
                },
            )
        }
        MixKind::Dns => {
            // Query, response, query, response…: A then AAAA, as getaddrinfo
            // asks, from one socket.
            let from_client = k.is_multiple_of(2);
            let id = (f.cseq as u16).wrapping_add((k / 2) as u16);
            let name = NAMES[(f.sseq as usize + k as usize / 4) % NAMES.len()];
            dns_message(id, name, (k / 2) % 2 == 1, !from_client, payload);
            let (sport, dport) = if from_client {
                (f.cport, 53)
            } else {
                (53, f.cport)
            };
            (from_client, L4::Udp { sport, dport })
        }
        MixKind::Udp => {
            let from_client = k % 3 != 2;
            payload.resize(
                if from_client {
                    1200
                } else {
                    60 + rng.below(400) as usize
                },
                0x5a,
            );
            let (sport, dport) = if from_client {
                (f.cport, f.sport)
            } else {
                (f.sport, f.cport)
            };
            (from_client, L4::Udp { sport, dport })
        }
        MixKind::Icmp => {
            let from_client = k.is_multiple_of(2);
            let icmp_type = match (f.client.is_ipv6(), from_client) {
                (false, true) => 8,
                (false, false) => 0,
                (true, true) => 128,
                (true, false) => 129,
            };
            // ping's 56 bytes: a timestamp, then 0x10, 0x11, …
            payload.extend(0..56u8);
            (
                from_client,
                L4::Icmp {
                    icmp_type,
                    code: 0,
                    id: f.cport,
                    seq: (k / 2 + 1) as u16,
                },
            )
        }
        MixKind::Esp => {
            let from_client = rng.below(2) == 0;
            let (spi, seq) = if from_client {
                f.client_sent += 1;
                (f.cseq, f.client_sent)
            } else {
                (f.sseq, k + 1 - f.client_sent)
            };
            payload.extend_from_slice(&spi.to_be_bytes());
            payload.extend_from_slice(&seq.to_be_bytes());
            let body = 48 + rng.below(1300) as usize;
            payload.extend((0..body).map(|_| rng.next_u64() as u8));
            (from_client, L4::Raw(50))
        }
    };
    let (src, dst) = if from_client {
        (f.client, f.server)
    } else {
        (f.server, f.client)
    };
    payload.truncate(room(l4_header_len(&l4)));
    let mut spec = PacketSpec::new(src, dst, l4, payload.len());
    spec.vlan = [f.vlan, 0];
    build_frame(&spec, frame);
    // The payload is the last of the frame's bytes, before any padding.
    let end = headers + l4_header_len(&l4) + payload.len();
    frame[end - payload.len()..end].copy_from_slice(payload);
    // The transport checksum, over the final payload.
    let at = match l4 {
        L4::Tcp { .. } => 16,
        L4::Udp { .. } => 6,
        L4::Icmp { .. } => 2,
        L4::Raw(_) => return,
    };
    let segment = &frame[headers..end];
    let sum = match (l4, f.client.is_ipv6()) {
        // ICMP (not ICMPv6) has no pseudo-header.
        (L4::Icmp { .. }, false) => checksum(segment),
        _ => transport_checksum(src, dst, proto_of(&l4, f.client.is_ipv6()), segment),
    };
    // A UDP checksum of 0 means none; it is sent as 0xffff.
    let sum = if sum == 0 && matches!(l4, L4::Udp { .. }) {
        0xffff
    } else {
        sum
    };
    frame[headers + at..headers + at + 2].copy_from_slice(&sum.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_zipf_and_sum_to_the_packets() {
        let s = zipf_sizes(5_000_000, 200_000);
        assert_eq!(s.iter().map(|&x| u64::from(x)).sum::<u64>(), 5_000_000);
        // Rank 1 about twice rank 2, ten times rank 10.
        assert!(
            (s[0] as f64 / s[9] as f64 - 10.0).abs() < 1.5,
            "{} {}",
            s[0],
            s[9]
        );
        assert!((s[1] as f64 / s[19] as f64 - 10.0).abs() < 0.2);
        assert!(s.iter().filter(|&&x| x <= 4).count() > 90_000);
    }

    #[test]
    fn dns_messages_are_well_formed() {
        let mut q = Vec::new();
        dns_message(7, "www.example.com", false, false, &mut q);
        assert_eq!(q.len(), 12 + 17 + 4);
        let mut r = Vec::new();
        dns_message(7, "www.example.com", true, true, &mut r);
        assert_eq!(r.len(), 12 + 17 + 4 + 12 + 16);
        assert_eq!(&r[6..8], &[0, 1]);
    }

    #[test]
    fn tcp_conversations_close_as_they_should() {
        let mut rng = Rng::new(1);
        for n in 9..40 {
            for (upload, reset) in [(false, false), (true, false), (false, true)] {
                let steps: Vec<_> = (0..n)
                    .map(|k| tcp_step(k, n, upload, reset, &mut rng))
                    .collect();
                assert_eq!(steps[0].1, tcp::SYN);
                let last = steps[n as usize - 1].1;
                assert!(if reset {
                    last & tcp::RST != 0
                } else {
                    last == tcp::ACK
                });
                // Data flows one way; the other side only ACKs.
                let sender = upload;
                for s in &steps[4..(n - if reset { 1 } else { 3 }) as usize] {
                    assert!(s.0 == sender || s.2 == 0, "{n} {upload} {s:?}");
                }
            }
        }
    }
}
