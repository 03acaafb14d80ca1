//! The decoder against etherparse, every link type, every cut, fragments,
//! tunnels and the fast path.

use super::plain::tcp_options_valid;
use super::*;
use crate::synth::{L4, PacketSpec, ip_packet, tcp};

/// An IPv4 packet from 192.0.2.1 to 198.51.100.2 with 20 bytes of payload.
fn packet(l4: L4) -> Vec<u8> {
    packet_between("192.0.2.1", "198.51.100.2", l4)
}

fn packet_between(src: &str, dst: &str, l4: L4) -> Vec<u8> {
    let spec = PacketSpec::new(src.parse().unwrap(), dst.parse().unwrap(), l4, 20);
    let mut v = Vec::new();
    ip_packet(&spec, &mut v);
    v
}

fn udp_packet() -> Vec<u8> {
    packet(L4::Udp {
        sport: 1111,
        dport: 53,
    })
}

fn decode(link: LinkType, frame: &[u8]) -> (Vec<PacketMeta>, DecodeStats) {
    let mut d = Decoder::new();
    let mut out = Vec::new();
    let p = RawPacket {
        ts_ns: 1,
        link,
        orig_len: frame.len() as u32,
        data: frame,
    };
    d.decode(&p, &mut |m: &PacketMeta, _: &[u8]| out.push(*m));
    (out, d.stats)
}

/// An IPv4 packet from `src` to `dst` whose payload (of protocol
/// `proto`) is `payload`, verbatim.
fn ipv4_with(src: &str, dst: &str, proto: u8, payload: &[u8]) -> Vec<u8> {
    let spec = PacketSpec::new(
        src.parse().unwrap(),
        dst.parse().unwrap(),
        L4::Raw(proto),
        payload.len(),
    );
    let mut ip = Vec::new();
    ip_packet(&spec, &mut ip);
    let n = ip.len() - payload.len();
    ip[n..].copy_from_slice(payload);
    ip
}

fn ether(et: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    f.extend_from_slice(&et.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// IPv4 frames around the decoder's fast path: plain UDP and TCP, UDP
/// to the tunnel ports, TCP with valid options (an MSS), invalid ones
/// (an MSS of the wrong size) and a data offset below 5.
fn plain_v4_near_misses() -> Vec<Vec<u8>> {
    plain_near_misses("192.0.2.1", "198.51.100.2")
}

/// The same packets over IPv6.
fn plain_v6_near_misses() -> Vec<Vec<u8>> {
    plain_near_misses("2001:db8::1", "2001:db8:ff::2")
}

fn plain_near_misses(src: &str, dst: &str) -> Vec<Vec<u8>> {
    let v6 = src.contains(':');
    // Where the transport header starts.
    let l4 = if v6 { 40 } else { 20 };
    let tcp_pkt = packet_between(
        src,
        dst,
        L4::Tcp {
            sport: 40000,
            dport: 443,
            flags: tcp::PSH | tcp::ACK,
            seq: 7,
            ack: 9,
        },
    );
    let udp_pkt = packet_between(
        src,
        dst,
        L4::Udp {
            sport: 1111,
            dport: 53,
        },
    );
    let udp_to = |dport: u16| {
        let mut p = udp_pkt.clone();
        p[l4 + 2..l4 + 4].copy_from_slice(&dport.to_be_bytes());
        p
    };
    let tcp_opts = |opts: &[u8], doff: u8| {
        let mut p = tcp_pkt.clone();
        p.splice(l4 + 20..l4 + 20, opts.iter().copied());
        p[l4 + 12] = doff << 4;
        p
    };
    vec![
        udp_pkt.clone(),
        tcp_pkt.clone(),
        udp_to(4789),
        udp_to(6081),
        tcp_opts(&[2, 4, 5, 0xb4], 6),
        tcp_opts(&[2, 3, 5, 0xb4], 6),
        tcp_opts(&[], 4),
    ]
}

/// The IPv4 fast path in [`Decoder::ip`] and the general path through
/// etherparse and `upper` yield the same packets and counters for every
/// total length field (below the header, exact, past the frame, with
/// padding), every cut of the frame, UDP (also to the VXLAN and Geneve
/// ports, which the fast path leaves to `upper`), TCP with valid, invalid
/// and no options and a bad data offset (where `upper` names the error),
/// fragments and IP options (which take the general path).
#[test]
fn fast_path_agrees_with_etherparse() {
    let run = |general: bool, d: &[u8]| {
        let mut dec = Decoder::new();
        let mut out = Vec::new();
        let ctx = Ctx::outer(&[], 5);
        let mut emit = |m: &PacketMeta, _: &[u8]| out.push(format!("{m:?}"));
        let r = if general {
            dec.ip_general(d, ctx, &mut emit)
        } else {
            dec.ip(d, ctx, &mut emit)
        };
        (r, out, dec.stats)
    };
    let mut fast_taken = 0;
    let bases = plain_v4_near_misses();
    for base in bases {
        let mut padded = base.clone();
        padded.extend_from_slice(&[0xee; 18]);
        for total in [0u16, 8, 19, 20, 21, 27, 28, 40, 52, 60, 200] {
            for frag in [0u16, 0x4000, 0x2000, 0x0001] {
                for frame in [&base, &padded] {
                    let mut f = frame.clone();
                    f[2..4].copy_from_slice(&total.to_be_bytes());
                    f[6..8].copy_from_slice(&frag.to_be_bytes());
                    for cut in [f.len(), 40, 28, 27, 21, 20, 19, 0] {
                        let d = &f[..cut.min(f.len())];
                        let fast = run(false, d);
                        let general = run(true, d);
                        assert_eq!(
                            fast,
                            general,
                            "total {total} frag {frag:#x} cut {cut} of {}",
                            f.len()
                        );
                        fast_taken += usize::from(d.len() >= 20 && frag & 0x3fff == 0);
                    }
                }
            }
        }
    }
    assert!(fast_taken > 100);
    // IPv6: every payload length (zero, below the transport header,
    // exact, past the frame, with padding), every cut, and next headers
    // other than TCP and UDP (extension headers, ICMPv6), which the
    // general path takes.
    let mut v6_taken = 0;
    for base in plain_v6_near_misses() {
        let mut padded = base.clone();
        padded.extend_from_slice(&[0xee; 18]);
        let real = be16(&base, 4);
        for len in [0u16, 1, 7, 8, 19, 20, real - 1, real, real + 1, 200] {
            for next in [base[6], 0, 43, 44, 58, 60] {
                for frame in [&base, &padded] {
                    let mut f = frame.clone();
                    f[4..6].copy_from_slice(&len.to_be_bytes());
                    f[6] = next;
                    for cut in [f.len(), 68, 60, 48, 47, 41, 40, 39, 0] {
                        let d = &f[..cut.min(f.len())];
                        assert_eq!(
                            run(false, d),
                            run(true, d),
                            "length {len} next {next} cut {cut} of {}",
                            f.len()
                        );
                        v6_taken += usize::from(d.len() >= 40 && matches!(next, 6 | 17));
                    }
                }
            }
        }
    }
    assert!(v6_taken > 100);
    // Options make the header longer: the general path takes them.
    let mut opts = udp_packet();
    opts[0] = 0x46;
    opts.splice(20..20, [1, 1, 1, 0]);
    let total = (opts.len() as u16).to_be_bytes();
    opts[2..4].copy_from_slice(&total);
    assert_eq!(run(false, &opts), run(true, &opts));
    assert_eq!(run(false, &opts).1.len(), 1);
}

/// `decode_plain` takes a frame only when decoding it makes one packet
/// and leaves nothing but the frame's count, and then yields exactly
/// what `decode` yields and counts; any other frame it leaves alone,
/// uncounted. Over plain IPv4 and IPv6 frames and their near misses:
/// tunnel ports, TCP options good and bad, short and long IP lengths,
/// fragments, extension headers, cuts, IP options, none to three VLAN
/// tags (802.1Q and QinQ), either EtherType for either IP version,
/// other link types.
#[test]
fn decode_plain_is_decode_or_nothing() {
    let mut ip_options = udp_packet();
    ip_options[0] = 0x46;
    ip_options.splice(20..20, [1, 1, 1, 0]);
    let mut v4 = plain_v4_near_misses();
    v4.push(ip_options);
    // Each base with its length field (IPv4 total length, IPv6 payload
    // length) and fragment bits (IPv4) or next header (IPv6) varied.
    let mut ips: Vec<Vec<u8>> = Vec::new();
    for base in &v4 {
        let mut padded = base.clone();
        padded.extend_from_slice(&[0xee; 18]);
        for total in [0u16, 8, 19, 20, 21, 27, 28, 40, 52, 60, 200] {
            for frag in [0u16, 0x4000, 0x2000, 0x0001] {
                for ip in [base, &padded] {
                    let mut ip = ip.clone();
                    ip[2..4].copy_from_slice(&total.to_be_bytes());
                    ip[6..8].copy_from_slice(&frag.to_be_bytes());
                    ips.push(ip);
                }
            }
        }
    }
    for base in plain_v6_near_misses() {
        let mut padded = base.clone();
        padded.extend_from_slice(&[0xee; 18]);
        let real = be16(&base, 4);
        for len in [0u16, 7, 8, 20, real - 1, real, real + 1, 200] {
            for next in [base[6], 0, 44, 58] {
                for ip in [&base, &padded] {
                    let mut ip = ip.clone();
                    ip[4..6].copy_from_slice(&len.to_be_bytes());
                    ip[6] = next;
                    ips.push(ip);
                }
            }
        }
    }
    let ether = |ethertype: u16, tags: &[u16], ip: &[u8]| {
        let mut f = vec![0x02; 12];
        for (i, &t) in tags.iter().enumerate() {
            f.extend_from_slice(&t.to_be_bytes());
            f.extend_from_slice(&[0x20, 7 + i as u8]);
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(ip);
        f
    };
    let stacks: [&[u16]; 5] = [
        &[],
        &[ETH_VLAN],
        &[ETH_QINQ, ETH_VLAN],
        &[ETH_QINQ_OLD, ETH_VLAN],
        &[ETH_QINQ, ETH_VLAN, ETH_VLAN],
    ];
    let check = crate::fuzzing::check_decode_plain;
    // Taken and left, by IP version.
    let mut counts = [[0usize; 2]; 2];
    for ip in &ips {
        let version = usize::from(ip[0] >> 4 == 6);
        for cut in [ip.len(), 60, 48, 41, 40, 28, 27, 21, 20, 19, 0] {
            let ip = &ip[..cut.min(ip.len())];
            for ethertype in [ETH_IPV4, ETH_IPV6] {
                for tags in stacks {
                    let taken = check(LinkType::Ethernet, &ether(ethertype, tags, ip));
                    counts[version][usize::from(!taken)] += 1;
                    assert!(!(taken && tags.len() > 2), "three tags go the long way");
                }
            }
            assert!(!check(LinkType::Raw, ip));
            assert!(!check(LinkType::Ethernet, &ether(0x0806, &[], ip)));
        }
    }
    for (version, [taken, left]) in [(4, counts[0]), (6, counts[1])] {
        assert!(
            taken > 100 && left > 100,
            "IPv{version}: taken {taken}, left {left}"
        );
    }
    assert!(!check(LinkType::Ethernet, &[0x02; 13]));
    // A tag cut short.
    assert!(!check(LinkType::Ethernet, &ether(ETH_VLAN, &[], &[0, 7])));
}

#[test]
fn every_link_type_reaches_ip() {
    let ip = udp_packet();
    let mut sll = vec![0u8; 14];
    sll.extend_from_slice(&0x0800u16.to_be_bytes());
    sll.extend_from_slice(&ip);
    let mut sll2 = 0x0800u16.to_be_bytes().to_vec();
    sll2.extend_from_slice(&[0u8; 18]);
    sll2.extend_from_slice(&ip);
    let mut null_le = 2u32.to_le_bytes().to_vec();
    null_le.extend_from_slice(&ip);
    let mut loop_be = 2u32.to_be_bytes().to_vec();
    loop_be.extend_from_slice(&ip);
    let mut ppp = vec![0xff, 0x03, 0x00, 0x21];
    ppp.extend_from_slice(&ip);
    let mut hdlc = vec![0x0f, 0x00, 0x08, 0x00];
    hdlc.extend_from_slice(&ip);
    let mut mpacket = vec![0x55; 7];
    mpacket.push(0xd5);
    mpacket.extend_from_slice(&ether(0x0800, &ip));
    let mut snap = vec![0u8; 12];
    snap.extend_from_slice(&((ip.len() + 8) as u16).to_be_bytes());
    snap.extend_from_slice(&[0xaa, 0xaa, 0x03, 0, 0, 0, 0x08, 0x00]);
    snap.extend_from_slice(&ip);
    let mut pppoe = vec![0x11, 0, 0, 1, 0, 0, 0x00, 0x21];
    pppoe.extend_from_slice(&ip);
    for (link, frame) in [
        (LinkType::Ethernet, ether(0x0800, &ip)),
        (LinkType::Ethernet, snap),
        (LinkType::Ethernet, ether(0x8864, &pppoe)),
        (LinkType::Raw, ip.clone()),
        (LinkType::Ipv4, ip.clone()),
        (LinkType::LinuxSll, sll),
        (LinkType::LinuxSll2, sll2),
        (LinkType::Null, null_le),
        (LinkType::Loop, loop_be),
        (LinkType::Ppp, ppp),
        (LinkType::CiscoHdlc, hdlc),
        (LinkType::EthernetMpacket, mpacket),
    ] {
        let (metas, stats) = decode(link, &frame);
        assert_eq!(metas.len(), 1, "{link:?}: {stats:?}");
        let k = metas[0].key;
        assert_eq!((k.proto, k.port_lo, k.port_hi), (17, 1111, 53), "{link:?}");
        assert_eq!(metas[0].ip_bytes, 20 + 8 + 20);
    }
    let (metas, stats) = decode(LinkType::Other(147), &ip);
    assert!(metas.is_empty());
    assert_eq!(stats.errors[DecodeError::UnsupportedLinkType as usize], 1);
}

#[test]
fn truncation_at_every_length_is_counted_never_panics() {
    let frame = ether(0x8100, &{
        let mut v = vec![0, 5, 0x08, 0x00];
        v.extend_from_slice(&udp_packet());
        v
    });
    for cut in 0..frame.len() {
        let (metas, stats) = decode(LinkType::Ethernet, &frame[..cut]);
        assert!(metas.is_empty() || cut >= 14 + 4 + 28, "cut {cut}");
        assert_eq!(stats.frames, 1);
        assert!(
            metas.len() + (stats.error_total() as usize) == 1,
            "cut {cut}: {stats:?}"
        );
    }
}

/// Non-first fragment (offset 8, more fragments) of datagram `id`.
fn middle_fragment(id: u16) -> Vec<u8> {
    let mut ip = ipv4_with("192.0.2.1", "198.51.100.2", 17, &[0u8; 16]);
    ip[4..6].copy_from_slice(&id.to_be_bytes());
    ip[6..8].copy_from_slice(&(0x2000u16 | 1).to_be_bytes());
    ip
}

#[test]
fn fragment_floods_stay_bounded_and_old_datagrams_time_out() {
    let mut d = Decoder::new();
    let mut out = 0usize;
    let n = MAX_FRAGMENTED_DATAGRAMS as u64 + 500;
    for i in 0..n {
        // A new datagram each time: the id, and past 65536 the source, change.
        let mut f = middle_fragment(i as u16);
        f[12] = (i >> 16) as u8;
        let p = RawPacket {
            ts_ns: 1_000 + i,
            link: LinkType::Raw,
            orig_len: f.len() as u32,
            data: &f,
        };
        d.decode(&p, &mut |_: &PacketMeta, _: &[u8]| out += 1);
    }
    assert_eq!(out, 0);
    assert_eq!(d.fragments_pending(), MAX_FRAGMENTED_DATAGRAMS);
    assert_eq!(d.stats.fragments_evicted, 500);
    // Much later, one more fragment: everything older has timed out.
    let f = middle_fragment(7);
    let p = RawPacket {
        ts_ns: 1_000 + n + 31_000_000_000,
        link: LinkType::Raw,
        orig_len: 36,
        data: &f,
    };
    d.decode(&p, &mut |_: &PacketMeta, _: &[u8]| out += 1);
    assert_eq!(d.fragments_pending(), 1);
    assert_eq!(d.stats.fragments_timed_out, MAX_FRAGMENTED_DATAGRAMS as u64);
}

#[test]
fn tcp_option_layouts() {
    assert!(tcp_options_valid(&[]));
    assert!(tcp_options_valid(&[2, 4, 5, 0xb4, 1, 3, 3, 7, 4, 2, 0, 0]));
    assert!(tcp_options_valid(&[1, 1, 5, 10, 0, 0, 0, 1, 0, 0, 0, 2]));
    assert!(!tcp_options_valid(&[1, 1, 5, 2])); // empty SACK
    assert!(!tcp_options_valid(&[2, 3, 0])); // MSS of the wrong size
    assert!(!tcp_options_valid(&[30, 0])); // zero length
    assert!(!tcp_options_valid(&[30, 9, 0, 0])); // past the header
    assert!(!tcp_options_valid(&[30])); // no length byte
}

#[test]
fn icmp_errors_do_not_open_flows_for_the_quoted_packet() {
    let quoted = udp_packet();
    let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&quoted[..28]);
    let ip = ipv4_with("198.51.100.2", "192.0.2.1", 1, &icmp);
    let (metas, _) = decode(LinkType::Raw, &ip);
    assert_eq!(metas.len(), 1);
    assert_eq!((metas[0].key.proto, metas[0].icmp), (1, [3, 3]));
}

fn gre_frame(proto: u16, flags: u16, extra: &[u8], inner: &[u8]) -> Vec<u8> {
    let mut g = flags.to_be_bytes().to_vec();
    g.extend_from_slice(&proto.to_be_bytes());
    g.extend_from_slice(extra);
    g.extend_from_slice(inner);
    ether(0x0800, &ipv4_with("192.0.2.10", "192.0.2.20", 47, &g))
}

#[test]
fn erspan_and_cisco_metadata_carry_inner_flows() {
    let inner_eth = ether(0x0800, &udp_packet());
    // ERSPAN type II: GRE with a sequence number, an 8-byte ERSPAN header.
    let mut e2 = vec![0u8; 8];
    e2.extend_from_slice(&inner_eth);
    let f = gre_frame(0x88be, 0x1000, &[0, 0, 0, 1], &e2);
    // ERSPAN type III with the optional subheader (O bit).
    let mut e3 = vec![0u8; 12];
    e3[11] = 1;
    e3.extend_from_slice(&[0u8; 8]);
    e3.extend_from_slice(&inner_eth);
    let g = gre_frame(0x22eb, 0x1000, &[0, 0, 0, 1], &e3);
    // ERSPAN type I: no sequence number, no ERSPAN header.
    let h = gre_frame(0x88be, 0, &[], &inner_eth);
    // Cisco MetaData in GRE (key present).
    let mut cmd = vec![0x08, 0x00, 0x01, 0x01, 0x00, 0x01, 0x00, 0x00];
    cmd.extend_from_slice(&udp_packet());
    let k = gre_frame(0x8909, 0x2000, &[0, 0, 0, 40], &cmd);
    for (frame, kind) in [
        (f, TunnelType::Erspan),
        (g, TunnelType::Erspan),
        (h, TunnelType::Erspan),
        (k, TunnelType::Gre),
    ] {
        let (metas, stats) = decode(LinkType::Ethernet, &frame);
        assert_eq!(metas.len(), 2, "{kind:?} {stats:?}");
        assert_eq!(metas[0].key.proto, 47);
        assert_eq!((metas[1].key.proto, metas[1].tunnel.kind), (17, Some(kind)));
    }
}

#[test]
fn geneve_and_nesting_limit() {
    // UDP to port 6081, then Geneve (protocol 0x6558: Ethernet).
    let mut udp = vec![0x13, 0x88, 0x17, 0xc1, 0, 0, 0, 0];
    udp.extend_from_slice(&[0x00, 0x00, 0x65, 0x58, 0, 0, 1, 0]);
    udp.extend_from_slice(&ether(0x0800, &udp_packet()));
    let len = udp.len() as u16;
    udp[4..6].copy_from_slice(&len.to_be_bytes());
    let ip = ipv4_with("192.0.2.10", "192.0.2.20", 17, &udp);
    let (metas, _) = decode(LinkType::Raw, &ip);
    assert_eq!(metas.len(), 2);
    assert_eq!(metas[1].tunnel.kind, Some(TunnelType::Geneve));

    // IP in IP ten times: followed to the limit, then counted.
    let mut pkt = udp_packet();
    for _ in 0..10 {
        pkt = ipv4_with("192.0.2.1", "192.0.2.2", 4, &pkt);
    }
    let (metas, stats) = decode(LinkType::Raw, &pkt);
    assert_eq!(metas.len(), usize::from(MAX_DEPTH) + 1);
    assert_eq!(stats.errors[DecodeError::TooDeep as usize], 1);
}

/// A UDP packet on the VXLAN or Geneve port whose payload cannot hold
/// the tunnel header it would be (a client that happened to pick port
/// 4789 or 6081, or a cut frame) is still a UDP packet of its flow: the
/// outer flow counts it, and the frame is counted as `tunnel_truncated`.
#[test]
fn udp_on_a_tunnel_port_too_short_for_its_header_keeps_the_outer_flow() {
    let cases: [(u16, &[u8]); 5] = [
        (4789, &[]),
        (4789, &[0x08, 0, 0]),
        (6081, &[0, 0, 0x65]),
        // Geneve options of 63 × 4 bytes, in a 12-byte payload.
        (6081, &[0x3f, 0, 0x65, 0x58, 0, 0, 1, 0, 0, 0, 0, 0]),
        // A client port of 6081 to DNS (as the synthesizer's bulk traffic
        // picks client ports), with a payload read as Geneve options.
        (53, &[0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29]),
    ];
    for (dport, payload) in cases {
        let sport: u16 = if dport == 53 { 6081 } else { 40000 };
        let mut udp = [sport.to_be_bytes(), dport.to_be_bytes(), [0, 0], [0, 0]].concat();
        udp.extend_from_slice(payload);
        let len = udp.len() as u16;
        udp[4..6].copy_from_slice(&len.to_be_bytes());
        let ip = ipv4_with("192.0.2.10", "192.0.2.20", 17, &udp);
        let (metas, stats) = decode(LinkType::Raw, &ip);
        assert_eq!(metas.len(), 1, "port {dport}, payload {payload:?}");
        let m = metas[0];
        assert_eq!((m.key.proto, m.tunnel.kind), (17, None));
        // The source sorts lower (by address), so its port is `port_lo`.
        assert_eq!(
            (m.key.port_lo, m.key.port_hi, m.src_is_lo),
            (sport, dport, true)
        );
        assert_eq!(m.payload_len as usize, payload.len());
        assert_eq!(m.ip_bytes as usize, ip.len());
        assert_eq!(stats.errors[DecodeError::TunnelTruncated as usize], 1);
        assert_eq!(stats.error_total(), 1);
    }
}

#[test]
fn ipv6_routing_header_final_destination_and_home_address() {
    let src: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
    let hop: std::net::Ipv6Addr = "2001:db8::99".parse().unwrap();
    let fin: std::net::Ipv6Addr = "2001:db8::2".parse().unwrap();
    let home: std::net::Ipv6Addr = "2001:db8:aaaa::1".parse().unwrap();
    let udp = [0x04, 0x57, 0x00, 0x35, 0x00, 0x08, 0x00, 0x00];
    // Destination options (Home Address), then routing type 0 with one address.
    let mut ext = vec![43, 2, 0xc9, 16];
    ext.extend_from_slice(&home.octets());
    ext.extend_from_slice(&[1, 2, 0, 0]); // PadN to 24 bytes
    ext.extend_from_slice(&[17, 2, 0, 1, 0, 0, 0, 0]);
    ext.extend_from_slice(&fin.octets());
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&((ext.len() + udp.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[60, 64]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&hop.octets());
    p.extend_from_slice(&ext);
    p.extend_from_slice(&udp);
    let (metas, stats) = decode(LinkType::Ipv6, &p);
    assert_eq!(metas.len(), 1, "{stats:?}");
    let k = metas[0].key;
    let mut addrs = [k.addr_lo, k.addr_hi];
    addrs.sort();
    let mut want = [home.octets(), fin.octets()];
    want.sort();
    assert_eq!(addrs, want);
}

/// An IPv6 payload length too short for the packet's own extension
/// headers, in a frame that holds them all (a capture in Zeek's test
/// suite has one): the frame's length stands for it, and the packet is
/// keyed on its Home Address. Cut short, it is still malformed.
#[test]
fn ipv6_payload_length_below_its_extension_headers_reads_the_frame() {
    let src: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
    let dst: std::net::Ipv6Addr = "2001:db8::2".parse().unwrap();
    let home: std::net::Ipv6Addr = "2001:db8:aaaa::1".parse().unwrap();
    let udp = [
        0x75, 0x30, 0x32, 0xc8, 0x00, 0x0c, 0x00, 0x00, b'X', b'X', b'X', b'X',
    ];
    // Destination options, 24 bytes: Pad0 twice, Home Address, PadN.
    let mut ext = vec![17, 2, 0, 0, 0xc9, 16];
    ext.extend_from_slice(&home.octets());
    ext.extend_from_slice(&[1, 0]);
    assert_eq!(ext.len(), 24);
    let whole = (ext.len() + udp.len()) as u16;
    let packet = |payload_len: u16| {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&payload_len.to_be_bytes());
        p.extend_from_slice(&[60, 64]);
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&dst.octets());
        p.extend_from_slice(&ext);
        p.extend_from_slice(&udp);
        p
    };
    let home_key = |m: &PacketMeta| {
        let mut addrs = [m.key.addr_lo, m.key.addr_hi];
        addrs.sort();
        let mut want = [home.octets(), dst.octets()];
        want.sort();
        addrs == want && (m.key.port_lo, m.key.port_hi) == (13000, 30000)
    };
    // As stated: the header's length.
    let (metas, _) = decode(LinkType::Ipv6, &packet(whole));
    assert!(home_key(&metas[0]));
    assert_eq!(metas[0].ip_bytes, 40 + u32::from(whole));
    // Stated shorter than the extension headers: the frame's length.
    for short in [1, 12, 23] {
        let p = packet(short);
        let (metas, stats) = decode(LinkType::Ipv6, &p);
        assert_eq!(metas.len(), 1, "payload length {short}: {stats:?}");
        assert!(home_key(&metas[0]), "payload length {short}");
        assert_eq!(metas[0].ip_bytes, p.len() as u32);
        assert_eq!(stats.error_total(), 0);
    }
    // Cut inside the extension headers: nothing to stand for it.
    let mut cut = packet(whole);
    cut.truncate(40 + 20);
    let (metas, stats) = decode(LinkType::Ipv6, &cut);
    assert!(metas.is_empty());
    assert_eq!(stats.error_total(), 1, "{stats:?}");
}

#[test]
fn tcp_flags_seq_and_zero_window() {
    let spec = PacketSpec::new(
        "192.0.2.1".parse().unwrap(),
        "192.0.2.2".parse().unwrap(),
        L4::Tcp {
            sport: 1,
            dport: 2,
            flags: tcp::SYN,
            seq: 4242,
            ack: 0,
        },
        0,
    );
    let mut ip = Vec::new();
    ip_packet(&spec, &mut ip);
    ip[20 + 14] = 0; // window = 0
    ip[20 + 15] = 0;
    let (metas, _) = decode(LinkType::Raw, &ip);
    assert_eq!((metas[0].tcp_flags, metas[0].tcp_seq), (tcp::SYN, 4242));
    assert!(
        !metas[0].tcp_zero_window,
        "a SYN's zero window is not a zero-window event"
    );
}
