//! The replay rewriter's tests: every address moved into a test range,
//! checksums kept valid, tunnels and ICMP quotes opened as the decoder opens them.
use super::*;
use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};

fn tcp_v4() -> Vec<u8> {
    let b = PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv4([192, 0, 2, 10], [198, 51, 100, 7], 64)
        .tcp(40000, 502, 1, 1024)
        .syn();
    let mut v = Vec::new();
    b.write(&mut v, b"hello modbus").unwrap();
    v
}

fn checksums_ok(frame: &[u8]) {
    let s = SlicedPacket::from_ethernet(frame).unwrap();
    let Some(etherparse::NetSlice::Ipv4(ip)) = &s.net else {
        return;
    };
    let h = ip.header().to_header();
    assert_eq!(
        h.calc_header_checksum(),
        h.header_checksum,
        "ip header checksum"
    );
    if let Some(TransportSlice::Tcp(t)) = &s.transport {
        let want = t.to_header().calc_checksum_ipv4(&h, t.payload()).unwrap();
        assert_eq!(want, t.checksum(), "tcp checksum");
    }
    if let Some(TransportSlice::Udp(u)) = &s.transport {
        let want = u.to_header().calc_checksum_ipv4(&h, u.payload()).unwrap();
        assert_eq!(want, u.checksum(), "udp checksum");
    }
}

#[test]
fn ipv4_addresses_move_to_loopback_with_valid_checksums() {
    let mut r = Rewriter::new();
    let mut out = Vec::new();
    r.rewrite(LinkType::Ethernet, &tcp_v4(), &mut out).unwrap();
    assert_eq!(&out[26..30], &[127, 1, 0, 1]);
    assert_eq!(&out[30..34], &[127, 1, 0, 2]);
    checksums_ok(&out);
    // The reply maps the same way: one conversation stays one.
    let b = PacketBuilder::ethernet2([2; 6], [1; 6])
        .ipv4([198, 51, 100, 7], [192, 0, 2, 10], 64)
        .udp(53, 5353);
    let mut v = Vec::new();
    b.write(&mut v, b"x").unwrap();
    r.rewrite(LinkType::Ethernet, &v, &mut out).unwrap();
    assert_eq!(&out[26..30], &[127, 1, 0, 2]);
    assert_eq!(&out[30..34], &[127, 1, 0, 1]);
    checksums_ok(&out);
}

#[test]
fn ipv6_goes_to_the_test_prefix() {
    let b = PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv6(
            [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            64,
        )
        .udp(1000, 2000);
    let mut v = Vec::new();
    b.write(&mut v, b"payload").unwrap();
    let mut r = Rewriter::new();
    let mut out = Vec::new();
    r.rewrite(LinkType::Ethernet, &v, &mut out).unwrap();
    let s = SlicedPacket::from_ethernet(&out).unwrap();
    let Some(etherparse::NetSlice::Ipv6(ip)) = &s.net else {
        panic!()
    };
    let h = ip.header().to_header();
    assert_eq!(&h.source[..8], &V6_PREFIX);
    assert_eq!(&h.destination[..8], &V6_PREFIX);
    let Some(TransportSlice::Udp(u)) = &s.transport else {
        panic!()
    };
    assert_eq!(
        u.to_header().calc_checksum_ipv6(&h, u.payload()).unwrap(),
        u.checksum()
    );
}

#[test]
fn icmp_errors_quote_rewritten_headers() {
    // A port unreachable quoting the original UDP datagram's header.
    let quoted = {
        let b = PacketBuilder::ipv4([192, 0, 2, 10], [198, 51, 100, 7], 64).udp(5353, 53);
        let mut v = Vec::new();
        b.write(&mut v, b"q").unwrap();
        v
    };
    let b = PacketBuilder::ethernet2([2; 6], [1; 6])
        .ipv4([198, 51, 100, 7], [192, 0, 2, 10], 64)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::Port,
        ));
    let mut v = Vec::new();
    b.write(&mut v, &quoted).unwrap();
    let mut r = Rewriter::new();
    let mut out = Vec::new();
    r.rewrite(LinkType::Ethernet, &v, &mut out).unwrap();
    let s = SlicedPacket::from_ethernet(&out).unwrap();
    let Some(TransportSlice::Icmpv4(icmp)) = &s.transport else {
        panic!()
    };
    let inner = icmp.payload();
    assert_eq!(&inner[12..16], &[127, 1, 0, 2]);
    assert_eq!(&inner[16..20], &[127, 1, 0, 1]);
    let want = icmp.header().icmp_type.calc_checksum(icmp.payload());
    assert_eq!(want, icmp.checksum(), "icmp checksum");
}

#[test]
fn frames_that_cannot_be_rewritten_are_refused() {
    let mut r = Rewriter::new();
    let mut out = Vec::new();
    // ARP names addresses in its body.
    let mut arp = vec![0xff; 12];
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0; 28]);
    assert_eq!(
        r.rewrite(LinkType::Ethernet, &arp, &mut out),
        Err(Skip::NotIp)
    );
    let mut cut = tcp_v4();
    cut.truncate(14 + 16);
    assert_eq!(
        r.rewrite(LinkType::Ethernet, &cut, &mut out),
        Err(Skip::Truncated)
    );
    assert_eq!(
        r.rewrite(LinkType::Other(147), &tcp_v4(), &mut out),
        Err(Skip::LinkType)
    );
}

#[test]
fn raw_ip_gets_an_ethernet_header() {
    let frame = tcp_v4();
    let mut r = Rewriter::new();
    let mut out = Vec::new();
    r.rewrite(LinkType::Raw, &frame[14..], &mut out).unwrap();
    assert_eq!(out.len(), frame.len());
    assert_eq!(&out[12..14], &[0x08, 0x00]);
    checksums_ok(&out);
}

/// An Ethernet frame of IPv4 192.0.2.1 -> 192.0.2.2 carrying `payload` of
/// protocol `proto`.
fn ipv4_frame(proto: etherparse::IpNumber, payload: &[u8]) -> Vec<u8> {
    let mut outer = etherparse::Ipv4Header::new(
        payload.len() as u16,
        64,
        proto,
        [192, 0, 2, 1],
        [192, 0, 2, 2],
    )
    .unwrap();
    outer.header_checksum = outer.calc_header_checksum();
    let mut frame = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    outer.write(&mut frame).unwrap();
    frame.extend_from_slice(payload);
    frame
}

#[test]
fn tunnels_are_opened() {
    // IPv4 in GRE in IPv4.
    let inner = {
        let b = PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64).tcp(1, 2, 3, 4);
        let mut v = Vec::new();
        b.write(&mut v, b"").unwrap();
        v
    };
    let mut gre = vec![0, 0, 0x08, 0x00];
    gre.extend_from_slice(&inner);
    let frame = ipv4_frame(etherparse::IpNumber::GRE, &gre);
    let mut r = Rewriter::new();
    let mut out = Vec::new();
    r.rewrite(LinkType::Ethernet, &frame, &mut out).unwrap();
    let inner_at = 14 + 20 + 4;
    assert_eq!(&out[inner_at + 12..inner_at + 16], &[127, 1, 0, 3]);
    assert_eq!(&out[inner_at + 16..inner_at + 20], &[127, 1, 0, 4]);
    checksums_ok(&out);
    let s = SlicedPacket::from_ip(&out[inner_at..]).unwrap();
    let Some(etherparse::NetSlice::Ipv4(ip)) = &s.net else {
        panic!()
    };
    let h = ip.header().to_header();
    let Some(TransportSlice::Tcp(t)) = &s.transport else {
        panic!()
    };
    assert_eq!(
        t.to_header().calc_checksum_ipv4(&h, t.payload()).unwrap(),
        t.checksum()
    );
}

/// A non-first IPv6 fragment whose data reads like an atomic fragment
/// header and an IPv4 packet (a fuzz crash): the decoder read the data
/// as headers and found the inner packet the rewriter, rightly, left
/// alone as fragment data. Both now stop at the fragment.
#[test]
fn ipv6_fragment_data_is_not_opened() {
    let frame: [u8; 103] = [
        2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x86, 0xdd, 0x60, 0, 0, 1, 0x88, 0x47, 0x2c, 0x2c,
        0x2c, 0xac, 0x2c, 0x2c, 0x2c, 0x2c, 0x2c, 0x25, 0x2c, 0x2c, 0x2c, 0x2c, 0x2c, 0x2c, 0x2c,
        0x2c, 0x2c, 0x2c, 0x2c, 0x2c, 0x2c, 0x2c, 0x2c, 0x2c, 0x2c, 0x2c, 0x21, 0x2c, 0x2c, 0x2c,
        0x2c, 0x2c, 0x2c, 0x2c, 0x2c, 0x2c, 0x2c, 0x21, 0x2c, 0x2c, 4, 0, 0, 0, 0x8c, 0, 0x29, 0,
        0x45, 0xc3, 0x44, 0xff, 0x54, 0xd0, 0, 0, 0xd8, 0, 0, 0x2c, 0x2c, 0xc5, 0x2c, 8, 0, 0, 0,
        0x7e, 0, 0, 0, 0, 0x2c, 1, 0, 0, 0, 0, 0, 0, 2,
    ];
    let mut out = Vec::new();
    let r = Rewriter::new().rewrite(LinkType::Ethernet, &frame, &mut out);
    assert!(r != Err(Skip::Stray), "{r:?}");
}

/// IPv4 carrying IPsec AH, then an IPv4 packet (fuzzing found the
/// inner one left as it was, while the decoder reads through AH).
#[test]
fn ipv4_authentication_headers_are_read_through() {
    let inner = {
        let b = PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64).udp(1, 2);
        let mut v = Vec::new();
        b.write(&mut v, b"x").unwrap();
        v
    };
    // Next header IPv4, length 1 (12 bytes: SPI, sequence, 4-byte ICV).
    let mut ah = vec![4, 1, 0, 0, 0, 0, 0, 7, 0, 0, 0, 1, 0xaa, 0xbb, 0xcc, 0xdd];
    ah.truncate(12);
    ah.extend_from_slice(&inner);
    let frame = ipv4_frame(etherparse::IpNumber::AUTHENTICATION_HEADER, &ah);
    let mut out = Vec::new();
    Rewriter::new()
        .rewrite(LinkType::Ethernet, &frame, &mut out)
        .unwrap();
    let inner_at = 14 + 20 + 12;
    assert_eq!(&out[inner_at + 12..inner_at + 16], &[127, 1, 0, 3]);
    checksums_ok(&out);
}

/// IPv6 destination options with a Home Address option (a fuzz crash: the
/// decoder keys the flow on the home address, which the rewriter did not
/// move): skipped as a routing header is.
#[test]
fn ipv6_home_address_options_are_skipped() {
    let mut frame = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x86, 0xdd];
    frame.extend_from_slice(&[0x60, 0, 0, 0, 0, 32, 60, 64]);
    frame.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    frame.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    // Destination options (24 bytes): PadN 2, Home Address, then UDP.
    frame.extend_from_slice(&[17, 2, 1, 0, 0xc9, 16]);
    frame.extend_from_slice(&[
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x99,
    ]);
    frame.extend_from_slice(&[1, 0]);
    frame.extend_from_slice(&[0x13, 0x88, 0, 53, 0, 8, 0, 0]);
    let mut out = Vec::new();
    let r = Rewriter::new().rewrite(LinkType::Ethernet, &frame, &mut out);
    assert_eq!(r, Err(Skip::RouteOption));
    // Without the option (PadN instead), the packet is rewritten.
    frame[58..76].copy_from_slice(&[1, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        Rewriter::new().rewrite(LinkType::Ethernet, &frame, &mut out),
        Ok(())
    );
}
