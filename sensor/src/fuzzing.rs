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

/// Reads `data` as a capture file and runs every packet through decode and
/// a small flow table.
pub fn read_capture(data: &[u8]) {
    let Ok(mut reader) = CaptureReader::from_slice(data, "fuzz") else {
        return;
    };
    let mut dec = Decoder::new();
    let mut table = FlowTable::new(&FlowConfig::default(), 64);
    while let Ok(Some(pkt)) = reader.next_packet() {
        let ts = pkt.ts_ns;
        dec.decode(&pkt, &mut |m: &PacketMeta| table.process(m));
        table.advance(ts);
    }
    table.flush(vigil_proto::EndReason::EndOfInput);
    let _ = table.take_records();
}

#[cfg(test)]
mod tests {
    use super::*;

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
