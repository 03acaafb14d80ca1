//! Entry points for the cargo-fuzz targets in `fuzz/` (the targets are thin;
//! the logic lives here so that unit tests exercise it too).

use crate::capture::{CaptureReader, LinkType, RawPacket};
use crate::decode::{Decoder, PacketMeta};
use crate::flow::FlowConfig;
use crate::flow::table::FlowTable;

const LINKS: [LinkType; 17] = [
    LinkType::Ethernet,
    LinkType::Raw,
    LinkType::Ipv4,
    LinkType::Ipv6,
    LinkType::Null,
    LinkType::Loop,
    LinkType::LinuxSll,
    LinkType::LinuxSll2,
    LinkType::Ppp,
    LinkType::CiscoHdlc,
    LinkType::EthernetMpacket,
    LinkType::Ieee80211,
    LinkType::Ieee80211Radiotap,
    LinkType::Ieee80211Prism,
    LinkType::Ieee80211Avs,
    LinkType::Ppi,
    LinkType::Other(999),
];

/// A flow table kept across inputs, as a sensor keeps its table for its
/// whole run: making one (its timer wheel) costs far more than one input's
/// decoding, and the fuzzer needs millions of inputs. Every input ends with
/// the table flushed, so only its clock and its recycled slots carry over;
/// the clock moves on by `INPUT_SPAN_NS` per input, so time never runs
/// backwards for it.
struct Reused {
    table: FlowTable,
    base_ns: u64,
}

const INPUT_SPAN_NS: u64 = 200_000_000_000_000;

thread_local! {
    static REUSED: std::cell::RefCell<Option<Reused>> = const { std::cell::RefCell::new(None) };
}

/// Flows the fuzzed table holds: few, so that inputs reach its evictions.
const MAX_FLOWS: usize = 16;

/// Runs `f` with the thread's flow table and the start time of this input.
fn with_table(f: impl FnOnce(&mut FlowTable, u64)) {
    REUSED.with(|r| {
        let mut r = r.borrow_mut();
        // A fresh table before the clock would run out (every ~46,000
        // inputs).
        if r.as_ref().is_none_or(|r| r.base_ns > u64::MAX / 2) {
            *r = Some(Reused {
                table: FlowTable::new(&FlowConfig::default(), MAX_FLOWS),
                base_ns: 0,
            });
        }
        let Some(r) = r.as_mut() else { return };
        r.base_ns += INPUT_SPAN_NS;
        f(&mut r.table, r.base_ns);
        r.table.flush(vigil_proto::EndReason::EndOfInput);
        let _ = r.table.take_records();
    });
}

/// Decodes `data` as one frame (the first byte picks the link type) twice,
/// with timestamps far apart, and feeds every packet to a small flow table.
pub fn decode_frame(data: &[u8]) {
    let Some((&sel, frame)) = data.split_first() else {
        return;
    };
    check_frame(LINKS[usize::from(sel) % LINKS.len()], frame);
}

/// Every promise a frame of `link` must keep: the owner's, the fast
/// path's, and a decode twice (times far apart) into a flow table.
fn check_frame(link: LinkType, frame: &[u8]) {
    check_owner(link, frame);
    check_decode_plain(link, frame);
    let mut dec = Decoder::new();
    with_table(|table, base| {
        let mut sniffer = table.sniffer();
        let (mut metas, mut payloads) = (Vec::new(), Vec::new());
        for ts in [base + 1_000_000_000u64, base + 100_000_000_000_000] {
            let pkt = RawPacket {
                ts_ns: ts,
                link,
                orig_len: frame.len() as u32,
                data: frame,
            };
            dec.decode(&pkt, &mut |m: &PacketMeta, p: &[u8]| {
                sniffer.push(*m, p, &mut metas, &mut payloads);
            });
            table.process_batch(&metas, &payloads);
            metas.clear();
            payloads.clear();
            table.advance(ts);
        }
    });
}

/// The encapsulation headers under fuzzing, behind outer headers that are
/// always valid, so that every mutation lands in a tunnel or layer-2
/// header rather than in the Ethernet and IP headers before it. The first
/// byte picks the carrier: 0, a UDP datagram over IPv4 whose ports are the
/// next four bytes; 1, an Ethernet frame whose EtherType is the next two;
/// 2, an IPv4 packet whose protocol is the next byte; 3, an 802.11 frame
/// behind radiotap (the rest as it is). The frame made is checked as
/// [`decode_frame`] and [`rewrite_frame`] check theirs.
pub fn encap_frame(data: &[u8]) {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let mut f = Vec::with_capacity(64 + rest.len());
    let ipv4 = |f: &mut Vec<u8>, proto: u8, len: usize| {
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&((20 + len).min(0xffff) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 1, 0, 0, 64, proto, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2]);
    };
    let link = match kind % 4 {
        0 if rest.len() >= 4 => {
            let payload = &rest[4..];
            f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00]);
            ipv4(&mut f, 17, 8 + payload.len());
            f.extend_from_slice(&rest[..4]);
            f.extend_from_slice(&((8 + payload.len()).min(0xffff) as u16).to_be_bytes());
            f.extend_from_slice(&[0, 0]);
            f.extend_from_slice(payload);
            LinkType::Ethernet
        }
        1 if rest.len() >= 2 => {
            f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2]);
            f.extend_from_slice(rest);
            LinkType::Ethernet
        }
        2 if !rest.is_empty() => {
            f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00]);
            ipv4(&mut f, rest[0], rest.len() - 1);
            f.extend_from_slice(&rest[1..]);
            LinkType::Ethernet
        }
        3 => {
            f.extend_from_slice(rest);
            LinkType::Ieee80211Radiotap
        }
        _ => return,
    };
    check_frame(link, &f);
    check_rewrite(link, &f);
}

/// Seeds for [`encap_frame`]: the encapsulations of [`seeds`] with their
/// outer Ethernet, IPv4 and UDP headers taken off as `encap_frame` puts
/// them back.
pub fn encap_seeds() -> Vec<Vec<u8>> {
    let eth = LINKS
        .iter()
        .position(|x| *x == LinkType::Ethernet)
        .unwrap_or(0) as u8;
    let radiotap = LINKS
        .iter()
        .position(|x| *x == LinkType::Ieee80211Radiotap)
        .unwrap_or(0) as u8;
    let mut out = Vec::new();
    for s in seeds() {
        let (link, f) = (s[0], &s[1..]);
        if link == radiotap {
            out.push([&[3], f].concat());
            continue;
        }
        if link != eth || f.len() < 42 {
            continue;
        }
        match (f[12..14] == [0x08, 0x00], f[14 + 9]) {
            // IPv4 without options: UDP, or another protocol (L2TPv3).
            (true, 17) if f[14] == 0x45 => out.push([&[0], &f[34..38], &f[42..]].concat()),
            (true, proto) if f[14] == 0x45 => out.push([&[2, proto], &f[34..]].concat()),
            (false, _) => out.push([&[1], &f[12..]].concat()),
            _ => {}
        }
    }
    out
}

/// Seed inputs for the fuzz targets that take one frame (`decode`,
/// `rewrite`): the link-type byte, then a frame of every encapsulation the
/// decoder opens (each tunnel over IPv4 and IPv6, inner IPv4 and IPv6,
/// with and without options such as GTP-U extension headers and Teredo
/// indicators), inner fragments in a tunnel, and 802.11 frames behind
/// radiotap (with FCS, HT control, four addresses, A-MSDU, a beacon), so
/// that mutation starts from every header rather than rediscovering them.
pub fn seeds() -> Vec<Vec<u8>> {
    use crate::synth::{
        Encap, L4, LinkEncap, PacketSpec, UdpTunnel, Wlan, build_frame, fragment_frames, ip_packet,
        wlan_beacon, wlan_frame,
    };
    use std::net::IpAddr;
    let link_byte = |l: LinkType| LINKS.iter().position(|x| *x == l).unwrap_or(0) as u8;
    let eth = link_byte(LinkType::Ethernet);
    let ip = |s: &str| s.parse::<IpAddr>().unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let mut out = Vec::new();
    let mut push = |link: u8, frame: &[u8]| {
        let mut v = vec![link];
        v.extend_from_slice(frame);
        out.push(v);
    };
    let tunnels = [
        UdpTunnel::GtpU {
            teid: 1,
            extension: false,
        },
        UdpTunnel::GtpU {
            teid: 2,
            extension: true,
        },
        UdpTunnel::Teredo {
            auth: true,
            origin: true,
        },
        UdpTunnel::Teredo {
            auth: false,
            origin: true,
        },
        UdpTunnel::Ayiya,
        UdpTunnel::GreUdp,
        UdpTunnel::L2tpV2,
        UdpTunnel::L2tpV3 { cookie: 4 },
        UdpTunnel::MplsUdp,
    ];
    let links = [
        LinkEncap::Pppoe { session: 1 },
        LinkEncap::Pbb { isid: 7 },
        LinkEncap::VnTag,
        LinkEncap::FabricPath,
        LinkEncap::Nsh,
        LinkEncap::MplsPw {
            label: 16,
            control_word: true,
        },
        LinkEncap::MplsPw {
            label: 17,
            control_word: false,
        },
    ];
    for (outer_src, outer_dst) in [
        (ip("192.0.2.1"), ip("192.0.2.2")),
        (ip("2001:db8::1"), ip("2001:db8::2")),
    ] {
        let mut encaps: Vec<Encap> = tunnels
            .iter()
            .flat_map(|&tunnel| {
                [false, true].map(|reply| Encap::Udp {
                    outer_src,
                    outer_dst,
                    tunnel,
                    reply,
                })
            })
            .collect();
        encaps.push(Encap::L2tpv3 {
            outer_src,
            outer_dst,
            cookie: 8,
        });
        encaps.extend(links.map(Encap::Link));
        for encap in encaps {
            for (c, s) in [
                (ip("10.0.0.1"), ip("10.0.0.2")),
                (ip("2001:db8:1::1"), ip("2001:db8:2::2")),
            ] {
                let teredo = matches!(
                    encap,
                    Encap::Udp {
                        tunnel: UdpTunnel::Teredo { .. },
                        ..
                    }
                );
                if teredo && c.is_ipv4() {
                    continue;
                }
                let l4 = L4::Tcp {
                    sport: 40_000,
                    dport: 443,
                    flags: crate::synth::tcp::SYN,
                    seq: 1,
                    ack: 0,
                };
                let mut spec = PacketSpec::new(c, s, l4, 8);
                spec.encap = encap;
                let mut f = Vec::new();
                build_frame(&spec, &mut f);
                push(eth, &f);
            }
        }
    }
    // Inner fragments in GTP-U.
    let mut spec = PacketSpec::new(
        ip("10.0.0.1"),
        ip("10.0.0.2"),
        L4::Udp {
            sport: 5000,
            dport: 53,
        },
        200,
    );
    spec.ip_id = 9;
    spec.encap = Encap::Udp {
        outer_src: ip("192.0.2.1"),
        outer_dst: ip("192.0.2.2"),
        tunnel: UdpTunnel::GtpU {
            teid: 3,
            extension: true,
        },
        reply: false,
    };
    for f in fragment_frames(&spec, 96) {
        push(eth, &f);
    }
    let radiotap = link_byte(LinkType::Ieee80211Radiotap);
    let mut p = Vec::new();
    ip_packet(
        &PacketSpec::new(
            ip("10.0.0.1"),
            ip("10.0.0.2"),
            L4::Udp { sport: 1, dport: 2 },
            20,
        ),
        &mut p,
    );
    for w in [
        Wlan::default(),
        Wlan {
            fcs: true,
            htc: true,
            ..Wlan::default()
        },
        Wlan {
            wds: true,
            amsdu: true,
            ..Wlan::default()
        },
    ] {
        push(radiotap, &wlan_frame(&p, w));
    }
    push(radiotap, &wlan_beacon());
    out
}

/// The promise of [`Decoder::decode_plain`]: a frame it takes is one that
/// [`Decoder::decode`] makes exactly that one packet of, with the same
/// counts and no fragment state; a frame it leaves is left uncounted. And
/// of [`Decoder::decode_plain_paired`]: the pair it hands back, by which the
/// relay shares the packet out, is its key's pair hash. Returns whether it
/// took the frame.
pub fn check_decode_plain(link: LinkType, frame: &[u8]) -> bool {
    let pkt = RawPacket {
        ts_ns: 1_000_000_000,
        link,
        orig_len: frame.len() as u32,
        data: frame,
    };
    let mut plain = Decoder::new();
    let mut pair = 0;
    let Some(m) = plain.decode_plain_paired(&pkt, &mut pair) else {
        assert_eq!(
            plain.stats,
            crate::decode::DecodeStats::default(),
            "decode_plain() counted a frame it left: {frame:02x?}"
        );
        return false;
    };
    let mut full = Decoder::new();
    let mut out = Vec::new();
    full.decode(&pkt, &mut |p: &PacketMeta, _: &[u8]| {
        out.push(format!("{p:?}"))
    });
    assert_eq!(
        out,
        [format!("{m:?}")],
        "decode_plain() and decode() disagree: {frame:02x?}"
    );
    assert_eq!(
        plain.stats, full.stats,
        "their counts disagree: {frame:02x?}"
    );
    assert_eq!(full.fragments_pending(), 0, "a fragment: {frame:02x?}");
    assert_eq!(
        pair,
        m.key.pair_hash(),
        "decode_plain_paired() handed back another pair: {frame:02x?}"
    );
    assert_eq!(
        m.hash,
        m.key.hash64(),
        "a summary's hash is not its key's: {frame:02x?}"
    );
    true
}

/// The promise of [`crate::decode::owner`]: a frame it gives to an address
/// pair makes flow packets of that pair only, and no fragment state.
pub fn check_owner(link: LinkType, frame: &[u8]) {
    use crate::decode::{Owner, owner};
    let Owner::Pair(h) = owner(link, frame) else {
        return;
    };
    let mut dec = Decoder::new();
    let pkt = RawPacket {
        ts_ns: 1_000_000_000,
        link,
        orig_len: frame.len() as u32,
        data: frame,
    };
    dec.decode(&pkt, &mut |m: &PacketMeta, _: &[u8]| {
        assert_eq!(
            m.key.pair_hash(),
            h,
            "owner() named another pair: {m:?}\nframe: {frame:02x?}"
        );
    });
    assert_eq!(
        (dec.stats.fragments, dec.fragments_pending()),
        (0, 0),
        "owner() named a pair for a fragment: {frame:02x?}"
    );
}

/// Reads `data` as a capture file and runs every packet through decode and
/// a small flow table, in batches of 8 as the workers apply them.
pub fn read_capture(data: &[u8]) {
    crate::capture::pcap_file::assert_slice_reading_agrees(data);
    let Ok(mut reader) = CaptureReader::from_slice(data, "fuzz") else {
        return;
    };
    let mut dec = Decoder::new();
    let mut metas = Vec::new();
    let mut payloads = Vec::new();
    with_table(|table, base| {
        let mut sniffer = table.sniffer();
        while let Ok(Some(pkt)) = reader.next_packet() {
            // The file's times, moved past the previous input's.
            let ts = base.saturating_add(pkt.ts_ns % INPUT_SPAN_NS);
            dec.decode(&pkt, &mut |m: &PacketMeta, p: &[u8]| {
                let m = PacketMeta { ts_ns: ts, ..*m };
                sniffer.push(m, p, &mut metas, &mut payloads);
            });
            if metas.len() >= 8 {
                table.process_batch(&metas, &payloads);
                metas.clear();
                payloads.clear();
                table.advance(ts);
            }
        }
        table.process_batch(&metas, &payloads);
    });
}

/// Rewrites `data` as one frame for replay (the first byte picks the link
/// type) and, when the rewriter accepts it, checks its promise: every
/// address the decoder finds in the frame it made — flow endpoints and
/// tunnel endpoints — lies in a test range.
pub fn rewrite_frame(data: &[u8]) {
    let Some((&sel, frame)) = data.split_first() else {
        return;
    };
    check_rewrite(LINKS[usize::from(sel) % LINKS.len()], frame);
}

/// [`rewrite_frame`] for a frame of a known link type.
pub fn check_rewrite(link: LinkType, frame: &[u8]) {
    use crate::rewrite::{Skip, in_test_range};
    let mut out = Vec::new();
    match crate::rewrite::Rewriter::new().rewrite(link, frame, &mut out) {
        Ok(()) => {}
        // The rewriter's own last check caught what its rewriting missed.
        Err(Skip::Stray) => panic!("the rewriter left a stray address: {frame:02x?}"),
        Err(_) => return,
    }
    let pkt = RawPacket {
        ts_ns: 1_000_000_000,
        link: LinkType::Ethernet,
        orig_len: out.len() as u32,
        data: &out,
    };
    Decoder::new().decode(&pkt, &mut |m: &PacketMeta, _: &[u8]| {
        let k = &m.key;
        assert!(
            in_test_range(&k.addr_lo, k.v6) && in_test_range(&k.addr_hi, k.v6),
            "a rewritten frame names a host outside the test ranges: {k:?}\nin: {frame:02x?}\nout: {out:02x?}"
        );
        if m.tunnel.kind.is_some() {
            let t = &m.tunnel;
            assert!(
                in_test_range(&t.outer_src, t.outer_v6) && in_test_range(&t.outer_dst, t.outer_v6),
                "a rewritten tunnel names a host outside the test ranges: {t:?}"
            );
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `input` with 1 to `changes` of its bytes after the first (the
    /// link-type or kind byte) set at random, then cut at random.
    fn mutate(input: &[u8], rng: &mut crate::synth::Rng, changes: u64) -> Vec<u8> {
        let mut m = input.to_vec();
        for _ in 0..1 + rng.below(changes) {
            let i = 1 + rng.below(m.len() as u64 - 1) as usize;
            m[i] = rng.below(256) as u8;
        }
        m.truncate(1 + rng.below(m.len() as u64) as usize);
        m
    }

    /// Calls `check` on every frame of a synthesized capture, each behind a
    /// link-type byte (`link`), then on `mutations` mutations of each (a few
    /// bytes changed, the end cut, any link type); returns how many.
    fn frames_and_mutations(
        seed: u64,
        link: u8,
        mutations: usize,
        mut check: impl FnMut(&[u8]),
    ) -> usize {
        let mut bytes = Vec::new();
        let cfg = crate::synth::BulkConfig {
            packets: 2_000,
            flows: 200,
            ..crate::synth::BulkConfig::default()
        };
        crate::synth::write_bulk(&cfg, &mut bytes).unwrap();
        let mut reader = CaptureReader::from_slice(&bytes, "synth").unwrap();
        let mut rng = crate::synth::Rng::new(seed);
        let mut n = 0;
        while let Ok(Some(pkt)) = reader.next_packet() {
            let mut data = vec![link];
            data.extend_from_slice(pkt.data);
            check(&data);
            for _ in 0..mutations {
                let mut m = mutate(&data, &mut rng, 4);
                m[0] = rng.below(LINKS.len() as u64) as u8;
                check(&m);
                n += 1;
            }
        }
        n
    }

    /// Every encapsulation's seed and many mutations of each (bytes
    /// changed, the end cut, but the link type kept), through the
    /// decoder's, the owner's, the fast path's and the rewriter's promises.
    #[test]
    fn encapsulation_seeds_and_their_mutations_keep_every_promise() {
        let seeds = seeds();
        assert!(seeds.len() > 80, "{}", seeds.len());
        let mut rng = crate::synth::Rng::new(3);
        for s in &seeds {
            decode_frame(s);
            rewrite_frame(s);
            for _ in 0..20 {
                let m = mutate(s, &mut rng, 3);
                decode_frame(&m);
                rewrite_frame(&m);
            }
        }
        let encap = encap_seeds();
        assert!(encap.len() > 60, "{}", encap.len());
        for s in &encap {
            encap_frame(s);
            for _ in 0..150 {
                encap_frame(&mutate(s, &mut rng, 3));
            }
        }
    }

    /// Every frame of a synthesized capture, and many mutations of each,
    /// through the rewriter's promise.
    #[test]
    fn rewritten_frames_name_only_test_addresses() {
        assert!(frames_and_mutations(7, 1, 20, rewrite_frame) > 10_000);
    }

    /// Every frame of a synthesized capture under every link type, and many
    /// mutations of each, through `owner`'s promise (`decode_frame` checks
    /// it first).
    #[test]
    fn frames_given_an_owner_make_packets_of_that_pair_only() {
        let mut n = 0;
        for link in 0..LINKS.len() as u8 {
            n += frames_and_mutations(11 + u64::from(link), link, 2, decode_frame);
        }
        assert!(n > 10_000);
    }

    #[test]
    fn fuzz_entry_points_survive_edge_inputs() {
        for data in [
            &b""[..],
            &[0],
            &[0; 14],
            &[1, 0x45],
            &[2, 0x45, 0, 0, 0x14],
            &[0xff; 200],
        ] {
            decode_frame(data);
            read_capture(data);
            rewrite_frame(data);
        }
        let mut sc = crate::synth::Scenario::new();
        sc.icmp_echo(
            1,
            "192.0.2.1".parse().unwrap(),
            "192.0.2.2".parse().unwrap(),
            1,
            3,
            10,
        );
        let bytes = sc.to_pcap_bytes();
        read_capture(&bytes);
        for cut in 0..bytes.len() {
            read_capture(&bytes[..cut]);
        }
    }
}
