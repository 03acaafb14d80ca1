//! Tunnels carried in UDP, each on its registered port: VXLAN (4789),
//! Geneve (6081), GTP-U (2152), Teredo (3544), AYIYA (5072), GRE in UDP
//! (4754), L2TP (1701, versions 2 and 3) and MPLS in UDP (6635); and L2TPv3
//! over IP (protocol 115). Each parser looks at the payload and says what
//! follows ([`Next`]): the inner packet, nothing (the payload is not that
//! tunnel's: the flow is an ordinary UDP one), or a header the payload
//! cannot hold ([`Next::Broken`]: the packet still counts in its UDP flow,
//! and the frame is counted with the tunnel's own error).

use vigil_proto::TunnelType;

use super::ethertype::*;
use super::{DecodeError, Next, be16};

/// Whether a UDP port is one a tunnel is decoded on. The fast path and the
/// workers' frame owners leave such datagrams to the general path, since
/// their inner flows have other addresses.
#[inline(always)]
pub(super) fn tunnel_port(p: u16) -> bool {
    // One comparison turns most ports away (clients' ephemeral ports are
    // above the range, well-known services' below it).
    (1701..=6635).contains(&p) && matches!(p, 1701 | 2152 | 3544 | 4754 | 4789 | 5072 | 6081 | 6635)
}

/// What follows a UDP header from port `sport` to `dport` with payload
/// `body`. The destination port decides first (the side a tunnel's server
/// listens on), then the source port.
pub(super) fn udp_tunnel(sport: u16, dport: u16, body: &[u8]) -> Next<'_> {
    let port = if tunnel_port(dport) { dport } else { sport };
    match port {
        4789 => vxlan(body),
        6081 => geneve(body),
        2152 => gtp_u(body),
        3544 => teredo(body),
        5072 => ayiya(body),
        4754 => Next::Gre(body, TunnelType::GreUdp),
        1701 => l2tp_udp(body),
        6635 => Next::Mpls(body, TunnelType::MplsUdp),
        _ => Next::None,
    }
}

/// What a tunnel payload carries, for code that edits it in place (the
/// replay rewriter): its kind and where it starts in the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inner {
    /// An IP packet.
    Ip(usize),
    /// An Ethernet frame.
    Ethernet(usize),
    /// A GRE header.
    Gre(usize),
    /// A PPP frame.
    Ppp(usize),
    /// An MPLS label stack.
    Mpls(usize),
}

/// Where the tunnel a UDP payload (`body`, from `sport` to `dport`) or an
/// L2TPv3-over-IP payload (`sport` and `dport` `None`) carries starts, as
/// the decoder reads it: `Ok(None)` when it carries none, `Err` when its
/// header is cut or malformed.
pub fn tunnel_inner(ports: Option<(u16, u16)>, body: &[u8]) -> Result<Option<Inner>, DecodeError> {
    let next = match ports {
        Some((sport, dport)) if tunnel_port(sport) || tunnel_port(dport) => {
            udp_tunnel(sport, dport, body)
        }
        Some(_) => Next::None,
        None => l2tpv3(body),
    };
    let at = |inner: &[u8]| inner.as_ptr() as usize - body.as_ptr() as usize;
    Ok(Some(match next {
        Next::None => return Ok(None),
        Next::Broken(e) => return Err(e),
        Next::Ip(b, _) => Inner::Ip(at(b)),
        Next::Ether(b, _) => Inner::Ethernet(at(b)),
        Next::Gre(b, _) => Inner::Gre(at(b)),
        Next::Ppp(b, _) => Inner::Ppp(at(b)),
        Next::Mpls(b, _) => Inner::Mpls(at(b)),
    }))
}

fn vxlan(b: &[u8]) -> Next<'_> {
    match b {
        b if b.len() < 8 => Next::Broken(DecodeError::TunnelTruncated),
        b if b[0] & 0x08 != 0 => Next::Ether(&b[8..], TunnelType::Vxlan),
        _ => Next::None,
    }
}

/// Geneve: 8 bytes and its options (a header past the payload's end is too
/// short), then Ethernet or IP.
fn geneve(b: &[u8]) -> Next<'_> {
    let hl = b.first().map(|v| 8 + usize::from(v & 0x3f) * 4);
    match hl.and_then(|hl| b.get(hl..)) {
        Some(inner) => match be16(b, 2) {
            ETH_TEB => Next::Ether(inner, TunnelType::Geneve),
            ETH_IPV4 | ETH_IPV6 => Next::Ip(inner, TunnelType::Geneve),
            _ => Next::None,
        },
        None => Next::Broken(DecodeError::TunnelTruncated),
    }
}

/// Whether `b` starts with an IP header of either version, as far as its
/// first byte tells.
fn looks_ip(b: &[u8]) -> bool {
    match b.first().map(|v| v >> 4) {
        Some(4) => b.len() >= 20 && b[0] & 0x0f >= 5,
        Some(6) => b.len() >= 40,
        _ => false,
    }
}

/// GTP-U (3GPP TS 29.281): version 1, protocol type GTP. A G-PDU (message
/// type 255) carries a user's IP packet after the 8-byte header, the
/// optional 4-byte sequence/N-PDU/next-type word (when any of E, S, PN is
/// set) and any extension headers (each `4 × length` bytes, its last byte
/// the next one's type). Other messages (echo, error indication, end
/// marker) are signalling: the outer flow only.
fn gtp_u(b: &[u8]) -> Next<'_> {
    let bad = Next::Broken(DecodeError::GtpInvalid);
    if b.len() < 8 {
        return bad;
    }
    // Version 1 and protocol type GTP; GTP' and GTPv2 are not user plane.
    if b[0] >> 4 != 0x3 || b[1] != 0xff {
        return Next::None;
    }
    let mut at = 8;
    if b[0] & 0x07 != 0 {
        let Some(&first) = b.get(11) else {
            return bad;
        };
        at = 12;
        let mut next = if b[0] & 0x04 != 0 { first } else { 0 };
        while next != 0 {
            let Some(&len) = b.get(at) else { return bad };
            let end = at + 4 * usize::from(len);
            if len == 0 || end > b.len() {
                return bad;
            }
            next = b[end - 1];
            at = end;
        }
    }
    match b.get(at..) {
        Some(inner) if looks_ip(inner) => Next::Ip(inner, TunnelType::GtpU),
        Some(_) => Next::None,
        None => bad,
    }
}

/// Teredo (RFC 4380): an IPv6 packet, after an optional authentication
/// indicator (0x0001, client id and authentication value lengths, both,
/// an 8-byte nonce, a confirmation byte) and an optional origin indication
/// (0x0000, port, address). A payload that is not IPv6 after them is not
/// Teredo.
fn teredo(mut b: &[u8]) -> Next<'_> {
    let bad = Next::Broken(DecodeError::TeredoInvalid);
    if b.len() >= 2 && b[0] == 0 && b[1] == 1 {
        let Some(lens) = b.get(2..4) else { return bad };
        let n = 4 + usize::from(lens[0]) + usize::from(lens[1]) + 9;
        let Some(rest) = b.get(n..) else { return bad };
        b = rest;
    }
    if b.len() >= 2 && b[0] == 0 && b[1] == 0 {
        let Some(rest) = b.get(8..) else { return bad };
        b = rest;
    }
    if b.first().is_some_and(|v| v >> 4 == 6) && b.len() >= 40 {
        Next::Ip(b, TunnelType::Teredo)
    } else {
        Next::None
    }
}

/// AYIYA: an 8-byte header whose first bytes give the identity's length (a
/// power of two) and the signature's (in words), then the identity and the
/// signature, then the packet: IPv4 or IPv6 as the next-header byte says,
/// when the operation is "forward" (1).
fn ayiya(b: &[u8]) -> Next<'_> {
    if b.len() < 8 {
        return Next::Broken(DecodeError::AyiyaInvalid);
    }
    let id_len = 1usize << (b[0] >> 4);
    let sig_len = usize::from(b[1] >> 4) * 4;
    if b[2] & 0x0f != 1 || !matches!(b[3], 4 | 41) {
        return Next::None;
    }
    match b.get(8 + id_len + sig_len..) {
        Some(inner) if looks_ip(inner) => Next::Ip(inner, TunnelType::Ayiya),
        Some(_) => Next::None,
        None => Next::Broken(DecodeError::AyiyaInvalid),
    }
}

/// L2TP over UDP: version 2 data messages carry PPP (RFC 2661); version 3
/// data messages carry a pseudowire after a session id (RFC 3931). Control
/// messages (the T bit) carry no user traffic.
fn l2tp_udp(b: &[u8]) -> Next<'_> {
    let bad = Next::Broken(DecodeError::L2tpInvalid);
    if b.len() < 2 {
        return bad;
    }
    let (flags, version) = (b[0], b[1] & 0x0f);
    if flags & 0x80 != 0 {
        return Next::None;
    }
    match version {
        2 => {
            let mut at = 2;
            if flags & 0x40 != 0 {
                at += 2; // length
            }
            at += 4; // tunnel and session ids
            if flags & 0x08 != 0 {
                at += 4; // Ns, Nr
            }
            if flags & 0x02 != 0 {
                let Some(off) = b.get(at..at + 2) else {
                    return bad;
                };
                at += 2 + usize::from(be16(off, 0));
            }
            match b.get(at..) {
                Some(ppp) if !ppp.is_empty() => Next::Ppp(ppp, TunnelType::L2tp),
                _ => bad,
            }
        }
        // Over UDP: the T bit and version, 2 reserved bytes, then the
        // session id as over IP.
        3 => match b.get(4..) {
            Some(rest) => l2tpv3(rest),
            None => bad,
        },
        _ => Next::None,
    }
}

/// L2TPv3 from its session id on (over IP, protocol 115; or after its UDP
/// header word): session 0 is a control message. The cookie (0, 4 or 8
/// bytes) and the L2-specific sublayer (0 or 4) are configured per
/// session, not told on the wire: the first of those layouts after which an
/// Ethernet header names IP (or a VLAN tag) is taken, as Wireshark's
/// heuristic does.
pub(super) fn l2tpv3(b: &[u8]) -> Next<'_> {
    if b.len() < 4 {
        return Next::Broken(DecodeError::L2tpInvalid);
    }
    if b[..4] == [0, 0, 0, 0] {
        return Next::None;
    }
    for skip in [4, 8, 12, 16] {
        let Some(e) = b.get(skip..) else { break };
        if e.len() < 15 {
            break;
        }
        let plausible = match be16(e, 12) {
            ETH_IPV4 => e[14] >> 4 == 4,
            ETH_IPV6 => e[14] >> 4 == 6,
            ETH_VLAN | ETH_QINQ => true,
            _ => false,
        };
        if plausible {
            return Next::Ether(e, TunnelType::L2tp);
        }
    }
    Next::Broken(DecodeError::L2tpInvalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip4() -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0];
        p.extend([10, 0, 0, 1, 10, 0, 0, 2]);
        p.extend([0u8; 8]);
        p
    }

    fn inner(n: &Next<'_>) -> Option<(usize, TunnelType)> {
        match n {
            Next::Ip(b, k) | Next::Ether(b, k) | Next::Ppp(b, k) | Next::Mpls(b, k) => {
                Some((b.len(), *k))
            }
            _ => None,
        }
    }

    #[test]
    fn gtp_u_with_and_without_extension_headers() {
        let ip = ip4();
        let mut plain = vec![0x30, 0xff, 0, ip.len() as u8, 0, 0, 0, 1];
        plain.extend(&ip);
        assert_eq!(inner(&gtp_u(&plain)), Some((28, TunnelType::GtpU)));
        // E set: sequence word, then a PDU session container (type 0x85,
        // one word), then none.
        let mut ext = vec![
            0x34, 0xff, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0x85, 1, 0x10, 0x09, 0,
        ];
        ext.extend(&ip);
        assert_eq!(inner(&gtp_u(&ext)), Some((28, TunnelType::GtpU)));
        // An extension header past the end, or of length 0.
        assert!(matches!(
            gtp_u(&ext[..14]),
            Next::Broken(DecodeError::GtpInvalid)
        ));
        let mut zero = ext.clone();
        zero[12] = 0;
        assert!(matches!(
            gtp_u(&zero),
            Next::Broken(DecodeError::GtpInvalid)
        ));
        // An echo request, and GTPv2: not user plane.
        let echo = [0x32, 0x01, 0, 4, 0, 0, 0, 0, 0, 1, 0, 0];
        assert!(matches!(gtp_u(&echo), Next::None));
        assert!(matches!(gtp_u(&[0x48, 0xff, 0, 0, 0, 0, 0, 0]), Next::None));
        assert!(matches!(gtp_u(&[0x30, 0xff]), Next::Broken(_)));
    }

    #[test]
    fn teredo_indicators_and_bubbles() {
        let mut ip6 = vec![0x60, 0, 0, 0, 0, 0, 59, 64];
        ip6.extend([0u8; 32]);
        assert_eq!(inner(&teredo(&ip6)), Some((40, TunnelType::Teredo)));
        let mut origin = vec![0, 0, 0x12, 0x34, 1, 2, 3, 4];
        origin.extend(&ip6);
        assert_eq!(inner(&teredo(&origin)), Some((40, TunnelType::Teredo)));
        // Authentication (id 2 bytes, value 3 bytes), then origin.
        let mut auth = vec![0, 1, 2, 3, 9, 9, 8, 8, 8];
        auth.extend([7u8; 8]);
        auth.push(0);
        auth.extend(&origin);
        assert_eq!(inner(&teredo(&auth)), Some((40, TunnelType::Teredo)));
        assert!(matches!(
            teredo(&auth[..10]),
            Next::Broken(DecodeError::TeredoInvalid)
        ));
        // Not IPv6: some other use of the port.
        assert!(matches!(teredo(&ip4()), Next::None));
    }

    #[test]
    fn ayiya_l2tp_and_the_port_table() {
        let ip = ip4();
        // Identity of 2^4 = 16 bytes, signature of 5 words, forward, IPv4.
        let mut a = vec![0x41, 0x52, 0x11, 4, 0, 0, 0, 0];
        a.extend([0u8; 16 + 20]);
        a.extend(&ip);
        assert_eq!(inner(&ayiya(&a)), Some((28, TunnelType::Ayiya)));
        a[2] = 0x12; // an echo, not forward
        assert!(matches!(ayiya(&a), Next::None));
        assert!(matches!(
            ayiya(&a[..7]),
            Next::Broken(DecodeError::AyiyaInvalid)
        ));
        // L2TPv2 data with length and sequence numbers, PPP inside.
        let mut l2 = vec![
            0x48, 0x02, 0, 0, 0, 1, 0, 2, 0, 0, 0, 0, 0xff, 0x03, 0, 0x21,
        ];
        l2.extend(&ip);
        assert_eq!(inner(&l2tp_udp(&l2)), Some((32, TunnelType::L2tp)));
        l2[0] |= 0x80; // a control message
        assert!(matches!(l2tp_udp(&l2), Next::None));
        // L2TPv3: session, a 4-byte cookie, then Ethernet carrying IPv4.
        let mut eth = vec![0u8; 12];
        eth.extend([0x08, 0x00]);
        eth.extend(&ip);
        let mut v3 = vec![0, 0, 0, 7, 1, 2, 3, 4];
        v3.extend(&eth);
        assert_eq!(inner(&l2tpv3(&v3)), Some((eth.len(), TunnelType::L2tp)));
        assert!(matches!(l2tpv3(&[0, 0, 0, 0, 1]), Next::None));
        assert!(matches!(
            l2tpv3(&v3[..10]),
            Next::Broken(DecodeError::L2tpInvalid)
        ));
        for p in [1701, 2152, 3544, 4754, 4789, 5072, 6081, 6635] {
            assert!(tunnel_port(p), "{p}");
        }
        assert!(!tunnel_port(53) && !tunnel_port(4790));
        // The destination port decides first.
        assert!(matches!(
            udp_tunnel(4789, 6635, &[0x00, 0x01, 0x01, 0x40]),
            Next::Mpls(_, TunnelType::MplsUdp)
        ));
    }
}
