//! The readers on pcap and pcapng files built byte by byte, damaged, cut
//! at every length, and on synthesized traffic.

use super::*;

#[test]
fn a_guess_of_where_records_start_finds_the_next_record_in_real_traffic() {
    let bytes = crate::synth::BulkConfig {
        packets: 3000,
        flows: 100,
        frame: crate::synth::FrameSize::Imix,
        ..Default::default()
    }
    .to_pcap_bytes();
    let mut r = CaptureReader::from_slice(&bytes, "x").unwrap();
    let w = r.walk().unwrap();
    let mut walk = w.clone();
    let mut starts = Vec::new();
    while walk.next_packet().is_some() {
        starts.push(walk.offset());
    }
    starts.pop(); // the end
    let len = bytes.len() as u64;
    for pair in starts.windows(2).step_by(97) {
        // From inside a record (past its header): the next one.
        assert_eq!(w.find_record(pair[0] - 1, len), Some(pair[0]));
        assert_eq!(w.find_record(pair[0], len), Some(pair[0]));
        assert_eq!(w.find_record(pair[0] + 17, len), Some(pair[1]));
    }
    // Bytes that hold no record start: none.
    assert_eq!(w.find_record(starts[5] + 17, starts[6]), None);
    // The last record, whole up to the end, counts.
    let last = *starts.last().unwrap();
    assert_eq!(w.find_record(last, len), Some(last));
}

fn pcap_bytes(magic: u32, big_endian: bool, records: &[(u32, u32, &[u8])]) -> Vec<u8> {
    let w32 = |v: u32| {
        if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let w16 = |v: u16| {
        if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    };
    let mut out = Vec::new();
    out.extend(w32(magic));
    out.extend(w16(2));
    out.extend(w16(4));
    out.extend(w32(0));
    out.extend(w32(0));
    out.extend(w32(65535));
    out.extend(w32(1));
    for (s, f, d) in records {
        out.extend(w32(*s));
        out.extend(w32(*f));
        out.extend(w32(d.len() as u32));
        out.extend(w32(d.len() as u32 + 10));
        out.extend(*d);
    }
    out
}

type Packets = Vec<(u64, u32, Vec<u8>, LinkType)>;

fn read_all(bytes: &[u8]) -> Result<Packets, CaptureError> {
    let mut r = CaptureReader::new(bytes, "mem")?;
    let mut v = Vec::new();
    while let Some(p) = r.next_packet()? {
        v.push((p.ts_ns, p.orig_len, p.data.to_vec(), p.link));
    }
    Ok(v)
}

#[test]
fn pcap_micro_and_nano_both_byte_orders() {
    for big in [false, true] {
        let us = pcap_bytes(0xa1b2_c3d4, big, &[(10, 5, b"abc"), (11, 999_999, b"de")]);
        let p = read_all(&us).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].0, 10_000_005_000);
        assert_eq!(p[0].1, 13);
        assert_eq!(p[0].2, b"abc");
        assert_eq!(p[1].0, 11_999_999_000);
        let ns = pcap_bytes(0xa1b2_3c4d, big, &[(10, 5, b"abc")]);
        assert_eq!(read_all(&ns).unwrap()[0].0, 10_000_000_005);
    }
}

#[test]
fn truncated_record_names_offset_after_good_packets() {
    let mut b = pcap_bytes(0xa1b2_c3d4, false, &[(1, 0, b"good"), (2, 0, b"second")]);
    b.truncate(b.len() - 3);
    let mut r = CaptureReader::new(&b[..], "cut.pcap").unwrap();
    assert_eq!(r.next_packet().unwrap().unwrap().data, b"good");
    let err = r.next_packet().unwrap_err();
    assert_eq!(err.offset(), Some(24 + 16 + 4));
    let msg = err.to_string();
    assert!(
        msg.contains("cut.pcap") && msg.contains("offset 44"),
        "{msg}"
    );
}

#[test]
fn oversized_record_is_corrupt() {
    let mut b = pcap_bytes(0xa1b2_c3d4, false, &[(1, 0, b"good")]);
    b.extend(1u32.to_le_bytes());
    b.extend(0u32.to_le_bytes());
    b.extend(16_711_424u32.to_le_bytes());
    b.extend(16_711_424u32.to_le_bytes());
    let mut r = CaptureReader::new(&b[..], "f.pcap").unwrap();
    assert!(r.next_packet().unwrap().is_some());
    let err = r.next_packet().unwrap_err();
    assert!(matches!(
        err,
        CaptureError::Corrupt {
            offset: 44,
            reason: Corruption::PacketTooLarge {
                caplen: 16_711_424,
                ..
            },
            ..
        }
    ));
}

#[test]
fn a_huge_snaplen_does_not_admit_huge_records() {
    let mut b = pcap_bytes(0xa1b2_c3d4, false, &[]);
    b[16..20].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
    b.extend(1u32.to_le_bytes());
    b.extend(0u32.to_le_bytes());
    b.extend(0x4000_0000u32.to_le_bytes());
    b.extend(0x4000_0000u32.to_le_bytes());
    let err = read_all(&b).unwrap_err();
    assert!(matches!(
        err,
        CaptureError::Corrupt {
            reason: Corruption::PacketTooLarge {
                max: MAX_BLOCK_LEN,
                ..
            },
            ..
        }
    ));
}

#[test]
fn unknown_magic_and_empty_file() {
    assert!(matches!(
        read_all(b"hello world, not a pcap file"),
        Err(CaptureError::UnknownFormat { .. })
    ));
    assert!(matches!(read_all(b""), Err(CaptureError::Truncated { .. })));
}

fn block(btype: u32, body: &[u8]) -> Vec<u8> {
    let mut body = body.to_vec();
    while !body.len().is_multiple_of(4) {
        body.push(0);
    }
    let len = body.len() as u32 + 12;
    let mut b = Vec::new();
    b.extend(btype.to_le_bytes());
    b.extend(len.to_le_bytes());
    b.extend(body);
    b.extend(len.to_le_bytes());
    b
}

fn epb(if_id: u32, ts: u64, data: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend(if_id.to_le_bytes());
    body.extend(((ts >> 32) as u32).to_le_bytes());
    body.extend((ts as u32).to_le_bytes());
    body.extend((data.len() as u32).to_le_bytes());
    body.extend((data.len() as u32).to_le_bytes());
    body.extend(data);
    block(6, &body)
}

fn idb(link: u16, tsresol: Option<u8>) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend(link.to_le_bytes());
    body.extend(0u16.to_le_bytes());
    body.extend(0u32.to_le_bytes());
    if let Some(r) = tsresol {
        body.extend(9u16.to_le_bytes());
        body.extend(1u16.to_le_bytes());
        body.extend([r, 0, 0, 0]);
        body.extend([0u8; 4]);
    }
    block(1, &body)
}

fn shb() -> Vec<u8> {
    let mut body = Vec::new();
    body.extend(PCAPNG_BOM.to_le_bytes());
    body.extend(1u16.to_le_bytes());
    body.extend(0u16.to_le_bytes());
    body.extend((-1i64).to_le_bytes());
    block(PCAPNG_SHB, &body)
}

#[test]
fn pcapng_interfaces_with_own_link_types_and_resolutions() {
    let mut f = shb();
    f.extend(idb(1, None)); // Ethernet, µs
    f.extend(idb(101, Some(9))); // raw IP, ns
    f.extend(idb(113, Some(0x80 | 10))); // SLL, 2^-10 s
    f.extend(block(5, b"stats block is skipped"));
    f.extend(epb(0, 1_500_000, b"eth"));
    f.extend(epb(1, 2_000_000_007, b"raw"));
    f.extend(epb(2, 3 * 1024 + 512, b"sll"));
    let p = read_all(&f).unwrap();
    assert_eq!(p.len(), 3);
    assert_eq!((p[0].0, p[0].3), (1_500_000_000, LinkType::Ethernet));
    assert_eq!((p[1].0, p[1].3), (2_000_000_007, LinkType::Raw));
    assert_eq!((p[2].0, p[2].3), (3_500_000_000, LinkType::LinuxSll));
    assert_eq!(p[2].2, b"sll");
}

#[test]
fn pcapng_sections_simple_and_obsolete_blocks() {
    let mut f = shb();
    f.extend(idb(1, None));
    f.extend(epb(0, 5_000_000, b"first"));
    // A simple packet block reuses the last timestamp.
    let mut spb = 3u32.to_le_bytes().to_vec();
    spb.extend(b"abc");
    f.extend(block(3, &spb));
    // A new section forgets the old interfaces: interface 0 is raw IP now.
    f.extend(shb());
    f.extend(idb(101, None));
    // Obsolete packet block: 16-bit interface id and drop count.
    let mut opb = 0u16.to_le_bytes().to_vec();
    opb.extend(0u16.to_le_bytes());
    opb.extend(0u32.to_le_bytes());
    opb.extend(7_000_000u32.to_le_bytes());
    opb.extend(2u32.to_le_bytes());
    opb.extend(2u32.to_le_bytes());
    opb.extend(b"op");
    f.extend(block(2, &opb));
    let p = read_all(&f).unwrap();
    assert_eq!(p.len(), 3);
    assert_eq!(
        (p[1].0, p[1].2.as_slice(), p[1].3),
        (5_000_000_000, &b"abc"[..], LinkType::Ethernet)
    );
    assert_eq!((p[2].0, p[2].3), (7_000_000_000, LinkType::Raw));
}

#[test]
fn big_endian_pcapng() {
    let be_block = |btype: u32, body: &[u8]| {
        let len = body.len() as u32 + 12;
        let mut b = btype.to_be_bytes().to_vec();
        b.extend(len.to_be_bytes());
        b.extend(body);
        b.extend(len.to_be_bytes());
        b
    };
    let mut shb_body = PCAPNG_BOM.to_be_bytes().to_vec();
    shb_body.extend(1u16.to_be_bytes());
    shb_body.extend(0u16.to_be_bytes());
    shb_body.extend((-1i64).to_be_bytes());
    let mut f = be_block(PCAPNG_SHB, &shb_body);
    let mut idb_body = 1u16.to_be_bytes().to_vec();
    idb_body.extend([0, 0, 0, 0, 0, 0]);
    f.extend(be_block(1, &idb_body));
    let mut epb_body = 0u32.to_be_bytes().to_vec();
    epb_body.extend(0u32.to_be_bytes());
    epb_body.extend(2_000_000u32.to_be_bytes());
    epb_body.extend(4u32.to_be_bytes());
    epb_body.extend(60u32.to_be_bytes());
    epb_body.extend(b"data");
    f.extend(be_block(6, &epb_body));
    let p = read_all(&f).unwrap();
    assert_eq!(
        (p[0].0, p[0].1, p[0].2.as_slice()),
        (2_000_000_000, 60, &b"data"[..])
    );
}

#[test]
fn pcapng_undeclared_interface_and_bad_lengths() {
    let mut f = shb();
    f.extend(idb(1, None));
    f.extend(epb(3, 0, b"x"));
    let err = read_all(&f).unwrap_err();
    assert!(
        matches!(
            err,
            CaptureError::Corrupt {
                reason: Corruption::UnknownInterface(3),
                ..
            }
        ),
        "{err}"
    );

    let mut f = shb();
    f.extend(idb(1, None));
    let at = f.len() as u64;
    let mut bad = epb(0, 0, b"abcd");
    let n = bad.len();
    bad[n - 4..].copy_from_slice(&999u32.to_le_bytes());
    f.extend(bad);
    let err = read_all(&f).unwrap_err();
    assert_eq!(err.offset(), Some(at));
}

#[test]
fn slice_and_buffered_readers_agree_including_damage() {
    let mut f = shb();
    f.extend(idb(1, Some(9)));
    for i in 0..50u64 {
        f.extend(epb(
            0,
            i * 1000,
            &vec![i as u8; (i as usize * 37) % 300 + 1],
        ));
    }
    f.truncate(f.len() - 7);
    let mut a = CaptureReader::new(&f[..], "x").unwrap();
    let mut b = CaptureReader::from_slice(&f, "x").unwrap();
    loop {
        match (a.next_packet(), b.next_packet()) {
            (Ok(Some(p)), Ok(Some(q))) => assert_eq!((p.ts_ns, p.data), (q.ts_ns, q.data)),
            (Err(e1), Err(e2)) => {
                assert_eq!(e1.offset(), e2.offset());
                assert_eq!(e1.to_string(), e2.to_string());
                break;
            }
            (x, y) => panic!(
                "readers disagree: {:?} vs {:?}",
                x.map(|p| p.map(|p| p.ts_ns)),
                y.map(|p| p.map(|p| p.ts_ns))
            ),
        }
    }
}

#[test]
fn reading_in_the_slice_agrees_with_next_packet_at_every_cut() {
    let recs: Vec<(u32, u32, Vec<u8>)> = (0..12u32)
        .map(|i| (i, i * 1000, vec![i as u8; (i as usize * 37) % 90 + 1]))
        .collect();
    let recs: Vec<(u32, u32, &[u8])> = recs.iter().map(|(s, f, d)| (*s, *f, &d[..])).collect();
    let mut files = Vec::new();
    for magic in [0xa1b2_c3d4, 0xa1b2_3c4d] {
        for big in [false, true] {
            files.push(pcap_bytes(magic, big, &recs));
        }
    }
    // With an FCS on every frame (link type bits 26 and 28..31).
    let mut fcs = pcap_bytes(0xa1b2_c3d4, false, &recs);
    fcs[20..24].copy_from_slice(&(1u32 | 0x0400_0000 | (2 << 28)).to_le_bytes());
    files.push(fcs);
    // An oversized record after good ones.
    let mut big = pcap_bytes(0xa1b2_c3d4, false, &recs[..3]);
    big.extend(1u32.to_le_bytes());
    big.extend(0u32.to_le_bytes());
    big.extend(16_711_424u32.to_le_bytes());
    big.extend(16_711_424u32.to_le_bytes());
    files.push(big);
    let mut ng = shb();
    ng.extend(idb(1, Some(9)));
    for (i, (_, _, d)) in recs.iter().enumerate() {
        ng.extend(epb(0, i as u64 * 1000, d));
    }
    files.push(ng);
    for f in &files {
        for cut in 0..=f.len() {
            assert_slice_reading_agrees(&f[..cut]);
        }
    }
}

#[test]
fn writer_round_trips() {
    let mut w = PcapWriter::new(Vec::new(), LinkType::Ethernet).unwrap();
    w.write_packet(1_234_567_890_123, b"frame-one").unwrap();
    w.write_packet(1_234_567_890_999, b"two").unwrap();
    let bytes = w.finish().unwrap();
    let p = read_all(&bytes).unwrap();
    assert_eq!(p[0].0, 1_234_567_890_123);
    assert_eq!(p[1].2, b"two");
}
