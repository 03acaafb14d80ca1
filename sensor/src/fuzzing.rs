//! Entry points for the cargo-fuzz targets in `fuzz/` (the targets are thin;
//! the logic lives here so that unit tests exercise it too).

use crate::capture::{CaptureReader, LinkType, RawPacket};
use crate::decode::{Decoder, PacketMeta};
use crate::flow::FlowConfig;
use crate::flow::table::FlowTable;

const LINKS: [LinkType; 12] = [
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
    LinkType::Other(999),
];

/// Decodes `data` as one frame (the first byte picks the link type) twice,
/// with timestamps far apart, and feeds every packet to a small flow table.
pub fn decode_frame(data: &[u8]) {
    let Some((&sel, frame)) = data.split_first() else {
        return;
    };
    let link = LINKS[usize::from(sel) % LINKS.len()];
    check_owner(link, frame);
    check_decode_plain(link, frame);
    let mut dec = Decoder::new();
    let mut table = FlowTable::new(&FlowConfig::default(), 16);
    for ts in [1_000_000_000u64, 100_000_000_000_000] {
        let pkt = RawPacket {
            ts_ns: ts,
            link,
            orig_len: frame.len() as u32,
            data: frame,
        };
        dec.decode(&pkt, &mut |m: &PacketMeta| table.process(m));
        table.advance(ts);
    }
    table.flush(vigil_proto::EndReason::EndOfInput);
    let _ = table.take_records();
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
    full.decode(&pkt, &mut |p: &PacketMeta| out.push(format!("{p:?}")));
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
    dec.decode(&pkt, &mut |m: &PacketMeta| {
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
    let mut table = FlowTable::new(&FlowConfig::default(), 64);
    let mut metas = Vec::new();
    while let Ok(Some(pkt)) = reader.next_packet() {
        let ts = pkt.ts_ns;
        dec.decode(&pkt, &mut |m: &PacketMeta| metas.push(*m));
        if metas.len() >= 8 {
            table.process_batch(&metas);
            metas.clear();
            table.advance(ts);
        }
    }
    table.process_batch(&metas);
    table.flush(vigil_proto::EndReason::EndOfInput);
    let _ = table.take_records();
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
    Decoder::new().decode(&pkt, &mut |m: &PacketMeta| {
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
                let mut m = data.clone();
                for _ in 0..1 + rng.below(4) {
                    let i = 1 + rng.below(m.len() as u64 - 1) as usize;
                    m[i] = rng.below(256) as u8;
                }
                m.truncate(1 + rng.below(m.len() as u64) as usize);
                m[0] = rng.below(LINKS.len() as u64) as u8;
                check(&m);
                n += 1;
            }
        }
        n
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
