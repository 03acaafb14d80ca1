//! Address rewriting for replay onto an interface.
//!
//! Before a capture is replayed onto a test interface, every IP address in
//! every frame is replaced, so that no frame names a host outside the test:
//! IPv4 addresses go into the loopback range 127.0.0.0/8, IPv6 addresses into
//! the unique-local prefix [`V6_PREFIX`]::/64 that the test namespaces own.
//! The mapping is one to one, in order of first appearance, so conversations
//! stay distinct and the flows of the rewritten capture correspond one for
//! one to the original's.
//!
//! Rewritten: outer and tunnelled IP headers (IP-in-IP, 6in4, GRE over IP
//! or UDP with IP, Ethernet, MPLS or ERSPAN II/III inside, VXLAN, Geneve,
//! GTP-U, Teredo, AYIYA, L2TP, MPLS over UDP; through MPLS pseudowires,
//! PPPoE, 802.1ah, VN-Tag, FabricPath and NSH), and the IP header
//! quoted in ICMP and ICMPv6 errors; IPv4 header, TCP, UDP, ICMP and ICMPv6
//! checksums are updated (RFC 1624), so the frames stay valid. A frame that
//! cannot be rewritten completely — not IP (ARP also names addresses),
//! an IPv6 routing header, IPv4 source-route options, an unknown link type,
//! addresses cut by the snap length — is **not** sent; it is counted by
//! reason. Frames of other link types leave as Ethernet frames around the
//! same IP packet.

use std::collections::HashMap;

use crate::capture::{LinkType, RawPacket};
use crate::decode::{
    Decoder, Inner, PacketMeta, Pseudowire, home_address, pseudowire, tunnel_inner,
};

/// The IPv6 prefix rewritten addresses live in (`fd00:7669:6769:6c00::/64`).
pub const V6_PREFIX: [u8; 8] = [0xfd, 0x00, 0x76, 0x69, 0x67, 0x69, 0x6c, 0x00];
/// The first IPv4 address handed out (127.1.0.1).
const V4_FIRST: u32 = 0x7f01_0001;
/// The last one (127.255.255.254).
const V4_LAST: u32 = 0x7fff_fffe;
/// Source and destination MAC of frames that had no Ethernet header.
const MAC_SRC: [u8; 6] = [0x02, 0x76, 0x69, 0x67, 0x00, 0x01];
const MAC_DST: [u8; 6] = [0x02, 0x76, 0x69, 0x67, 0x00, 0x02];
const MAX_DEPTH: u8 = 6;

/// Why a frame was not sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Skip {
    /// No IP in the frame (ARP, STP, LLDP…).
    NotIp,
    /// A link type the rewriter does not know.
    LinkType,
    /// Cut before an address or header ends.
    Truncated,
    /// An IPv6 routing header or Home Address option, or an IPv4
    /// route/timestamp option (they hold addresses).
    RouteOption,
    /// A tunnel or encapsulation the rewriter does not open (PPTP GRE, PPPoE…).
    Encapsulation,
    /// Tunnels nested deeper than six levels.
    TooDeep,
    /// More distinct addresses than the test range holds.
    RangeFull,
    /// The decoder still finds an address outside the test ranges in the
    /// result (a layout the rewriter does not open): the last check before
    /// a frame leaves.
    Stray,
}

impl Skip {
    /// A short name for summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::NotIp => "not_ip",
            Skip::LinkType => "link_type",
            Skip::Truncated => "truncated",
            Skip::RouteOption => "route_option",
            Skip::Encapsulation => "encapsulation",
            Skip::TooDeep => "too_deep",
            Skip::RangeFull => "range_full",
            Skip::Stray => "stray_address",
        }
    }
}

/// Rewrites frames, keeping the address mapping across them.
#[derive(Debug, Default)]
pub struct Rewriter {
    v4: HashMap<[u8; 4], [u8; 4]>,
    v6: HashMap<[u8; 16], [u8; 16]>,
    /// Decodes every result, as the sensor will, to check it.
    decoder: Decoder,
}

/// Whether an address (in the flow key's 16-byte form) is in a test range.
pub fn in_test_range(a: &[u8; 16], v6: bool) -> bool {
    if v6 { a[..8] == V6_PREFIX } else { a[0] == 127 }
}

/// Ones'-complement sum of the changes made to a region, to carry into the
/// checksums that cover it.
type Delta = u32;

fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// Writes `new` over `p[at..]` (even offset, even length), adding the change
/// of every 16-bit word to `delta`.
fn put(p: &mut [u8], at: usize, new: &[u8], delta: &mut Delta) {
    for (i, w) in new.chunks_exact(2).enumerate() {
        let o = at + 2 * i;
        let old = u16::from_be_bytes([p[o], p[o + 1]]);
        let neu = u16::from_be_bytes([w[0], w[1]]);
        *delta = u32::from(fold(*delta + u32::from(!old) + u32::from(neu)));
        p[o] = w[0];
        p[o + 1] = w[1];
    }
}

/// The checksum at `p[at..at + 2]` updated for `change`, itself written
/// through [`put`] so enclosing regions see it. `zero_means_none`: UDP over
/// IPv4, where 0 is "no checksum" and stays so.
fn fix_checksum(p: &mut [u8], at: usize, change: Delta, zero_means_none: bool, outer: &mut Delta) {
    if p.len() < at + 2 {
        return;
    }
    let old = u16::from_be_bytes([p[at], p[at + 1]]);
    if zero_means_none && old == 0 {
        return;
    }
    let mut new = !fold(u32::from(!old) + change);
    if zero_means_none && new == 0 {
        new = 0xffff;
    }
    put(p, at, &new.to_be_bytes(), outer);
}

fn be16(p: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([p[at], p[at + 1]])
}

impl Rewriter {
    /// A rewriter with an empty mapping.
    pub fn new() -> Rewriter {
        Rewriter::default()
    }

    /// Distinct IPv4 and IPv6 addresses mapped so far.
    pub fn mapped(&self) -> (usize, usize) {
        (self.v4.len(), self.v6.len())
    }

    fn map4(&mut self, a: [u8; 4]) -> Result<[u8; 4], Skip> {
        if let Some(m) = self.v4.get(&a) {
            return Ok(*m);
        }
        let next = V4_FIRST + self.v4.len() as u32;
        if next > V4_LAST {
            return Err(Skip::RangeFull);
        }
        let m = next.to_be_bytes();
        self.v4.insert(a, m);
        Ok(m)
    }

    fn map6(&mut self, a: [u8; 16]) -> [u8; 16] {
        if let Some(m) = self.v6.get(&a) {
            return *m;
        }
        let mut m = [0u8; 16];
        m[..8].copy_from_slice(&V6_PREFIX);
        m[8..].copy_from_slice(&(self.v6.len() as u64 + 1).to_be_bytes());
        self.v6.insert(a, m);
        m
    }

    /// Rewrites one frame into `out` as an Ethernet frame. On `Err` the frame
    /// must not be sent; `out` is then unspecified. An accepted frame has
    /// been decoded as the sensor decodes it, and every flow and tunnel
    /// address found in it is in a test range.
    pub fn rewrite(&mut self, link: LinkType, frame: &[u8], out: &mut Vec<u8>) -> Result<(), Skip> {
        self.rewrite_unchecked(link, frame, out)?;
        let pkt = RawPacket {
            ts_ns: 0,
            link: LinkType::Ethernet,
            orig_len: out.len() as u32,
            data: out,
        };
        let mut stray = false;
        self.decoder.decode(&pkt, &mut |m: &PacketMeta, _: &[u8]| {
            let k = &m.key;
            stray |= !in_test_range(&k.addr_lo, k.v6) || !in_test_range(&k.addr_hi, k.v6);
            if m.tunnel.kind.is_some() {
                let t = &m.tunnel;
                stray |= !in_test_range(&t.outer_src, t.outer_v6)
                    || !in_test_range(&t.outer_dst, t.outer_v6);
            }
        });
        if stray { Err(Skip::Stray) } else { Ok(()) }
    }

    fn rewrite_unchecked(
        &mut self,
        link: LinkType,
        frame: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), Skip> {
        out.clear();
        let (ip_at, ethertype) = match link {
            LinkType::Ethernet => {
                out.extend_from_slice(frame);
                let mut d = 0;
                return self.ethernet(out, 0, &mut d);
            }
            LinkType::Raw | LinkType::Ipv4 | LinkType::Ipv6 => (0, version_type(frame, 0)?),
            LinkType::LinuxSll => {
                if frame.len() < 16 {
                    return Err(Skip::Truncated);
                }
                (16, be16(frame, 14))
            }
            LinkType::LinuxSll2 => {
                if frame.len() < 20 {
                    return Err(Skip::Truncated);
                }
                (20, be16(frame, 0))
            }
            LinkType::Null | LinkType::Loop => {
                if frame.len() < 4 {
                    return Err(Skip::Truncated);
                }
                // The family is in either byte order; IPv6 has several values.
                let le = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]);
                let be = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]);
                let fam = if le < 256 { le } else { be };
                match fam {
                    2 => (4, 0x0800),
                    24 | 28 | 30 => (4, 0x86dd),
                    _ => return Err(Skip::NotIp),
                }
            }
            LinkType::Ppp => {
                let at = if frame.starts_with(&[0xff, 0x03]) {
                    2
                } else {
                    0
                };
                if frame.len() < at + 2 {
                    return Err(Skip::Truncated);
                }
                match be16(frame, at) {
                    0x0021 => (at + 2, 0x0800),
                    0x0057 => (at + 2, 0x86dd),
                    _ => return Err(Skip::NotIp),
                }
            }
            _ => return Err(Skip::LinkType),
        };
        if ethertype != 0x0800 && ethertype != 0x86dd {
            return Err(Skip::NotIp);
        }
        out.extend_from_slice(&MAC_DST);
        out.extend_from_slice(&MAC_SRC);
        out.extend_from_slice(&ethertype.to_be_bytes());
        out.extend_from_slice(frame.get(ip_at..).ok_or(Skip::Truncated)?);
        let mut d = 0;
        self.ip(&mut out[14..], 0, false, &mut d)
    }

    /// An Ethernet frame at the start of `p`: VLAN and VN-Tag tags, 802.1ah
    /// and FabricPath (an inner frame), PPPoE sessions, NSH, MPLS, then IP.
    fn ethernet(&mut self, p: &mut [u8], depth: u8, delta: &mut Delta) -> Result<(), Skip> {
        if depth > MAX_DEPTH {
            return Err(Skip::TooDeep);
        }
        let mut at = 12;
        loop {
            if p.len() < at + 2 {
                return Err(Skip::Truncated);
            }
            let body = at + 2;
            match be16(p, at) {
                0x8100 | 0x88a8 | 0x9100 | 0x9200 => at += 4,
                0x8926 => at += 6,
                0x0800 | 0x86dd => return self.ip(&mut p[body..], depth, false, delta),
                0x8847 | 0x8848 => return self.mpls(&mut p[body..], depth, delta),
                // The I-tag, or the forwarding tag: then a whole frame.
                0x88e7 => return self.ethernet(sub(p, body + 4)?, depth + 1, delta),
                0x8903 => return self.ethernet(sub(p, body + 2)?, depth + 1, delta),
                0x8864 => {
                    if p.len() < body + 6 || p[body] != 0x11 || p[body + 1] != 0 {
                        return Err(Skip::Truncated);
                    }
                    return self.ppp(&mut p[body + 6..], depth, delta);
                }
                0x894f => {
                    let n = p.get(body..body + 8).ok_or(Skip::Truncated)?;
                    let (len, next) = (usize::from(n[1] & 0x3f) * 4, n[3]);
                    if n[0] >> 6 != 0 || len < 8 {
                        return Err(Skip::Encapsulation);
                    }
                    let inner = sub(p, body + len)?;
                    return match next {
                        1 | 2 => self.ip(inner, depth, false, delta),
                        3 => self.ethernet(inner, depth + 1, delta),
                        5 => self.mpls(inner, depth, delta),
                        _ => Err(Skip::Encapsulation),
                    };
                }
                0x8863 => return Err(Skip::NotIp),
                _ => return Err(Skip::NotIp),
            }
        }
    }

    /// An MPLS label stack at the start of `p`, then IP or a pseudowire's
    /// Ethernet frame (after its control word, when there is one), as the
    /// decoder reads it.
    fn mpls(&mut self, p: &mut [u8], depth: u8, delta: &mut Delta) -> Result<(), Skip> {
        let mut l = 0;
        loop {
            if p.len() < l + 4 {
                return Err(Skip::Truncated);
            }
            let bottom = p[l + 2] & 1 == 1;
            l += 4;
            if bottom {
                break;
            }
        }
        match pseudowire(&p[l..]) {
            Some(Pseudowire::Ip) => self.ip(&mut p[l..], depth, false, delta),
            Some(Pseudowire::Ethernet(at)) => self.ethernet(&mut p[l + at..], depth + 1, delta),
            None => Err(Skip::Truncated),
        }
    }

    /// A PPP frame at the start of `p` (address and control optional, the
    /// protocol field one or two bytes long).
    fn ppp(&mut self, p: &mut [u8], depth: u8, delta: &mut Delta) -> Result<(), Skip> {
        let at = if p.starts_with(&[0xff, 0x03]) { 2 } else { 0 };
        let (proto, body) = match p.get(at) {
            Some(&b) if b & 1 == 1 => (u16::from(b), at + 1),
            Some(_) if p.len() >= at + 2 => (be16(p, at), at + 2),
            _ => return Err(Skip::Truncated),
        };
        match proto {
            0x0021 | 0x0057 => self.ip(&mut p[body..], depth, false, delta),
            0x0281 | 0x0283 => self.mpls(&mut p[body..], depth, delta),
            _ => Err(Skip::NotIp),
        }
    }

    /// The tunnel a UDP payload (`ports` given) or an L2TPv3-over-IP one
    /// carries, found as the decoder finds it.
    fn tunnel(
        &mut self,
        ports: Option<(u16, u16)>,
        body: &mut [u8],
        depth: u8,
        delta: &mut Delta,
    ) -> Result<(), Skip> {
        let depth = depth + 1;
        match tunnel_inner(ports, body) {
            Ok(None) => Ok(()),
            Err(_) => Err(Skip::Truncated),
            Ok(Some(Inner::Ip(at))) => self.ip(&mut body[at..], depth, false, delta),
            Ok(Some(Inner::Ethernet(at))) => self.ethernet(&mut body[at..], depth, delta),
            Ok(Some(Inner::Gre(at))) => self.gre(&mut body[at..], depth, delta),
            Ok(Some(Inner::Ppp(at))) => self.ppp(&mut body[at..], depth, delta),
            Ok(Some(Inner::Mpls(at))) => self.mpls(&mut body[at..], depth, delta),
        }
    }

    /// An IP packet at the start of `p`. `quoted`: inside an ICMP error,
    /// where the payload may be cut short and only the header matters.
    fn ip(&mut self, p: &mut [u8], depth: u8, quoted: bool, delta: &mut Delta) -> Result<(), Skip> {
        if depth > MAX_DEPTH {
            return Err(Skip::TooDeep);
        }
        match p.first().map(|b| b >> 4) {
            Some(4) => self.ipv4(p, depth, quoted, delta),
            Some(6) => self.ipv6(p, depth, quoted, delta),
            Some(_) => Err(Skip::NotIp),
            None => Err(Skip::Truncated),
        }
    }

    fn ipv4(
        &mut self,
        p: &mut [u8],
        depth: u8,
        quoted: bool,
        delta: &mut Delta,
    ) -> Result<(), Skip> {
        let ihl = usize::from(p[0] & 0x0f) * 4;
        if ihl < 20 || p.len() < ihl {
            return Err(Skip::Truncated);
        }
        // Options that carry addresses: record route, timestamps, source routes.
        let mut o = 20;
        while o < ihl {
            match p[o] {
                0 => break,
                1 => o += 1,
                7 | 68 | 131 | 137 => return Err(Skip::RouteOption),
                _ => {
                    let l = usize::from(*p.get(o + 1).ok_or(Skip::Truncated)?);
                    if l < 2 {
                        break;
                    }
                    o += l;
                }
            }
        }
        let src: [u8; 4] = [p[12], p[13], p[14], p[15]];
        let dst: [u8; 4] = [p[16], p[17], p[18], p[19]];
        let (nsrc, ndst) = (self.map4(src)?, self.map4(dst)?);
        let mut addr = 0;
        put(p, 12, &nsrc, &mut addr);
        put(p, 16, &ndst, &mut addr);
        *delta = u32::from(fold(*delta + addr));
        fix_checksum(p, 10, addr, false, delta);
        let proto = p[9];
        let frag_off = be16(p, 6) & 0x1fff;
        // The total length read as the decoder reads it: past the frame, or
        // below the header, the frame's end stands for it.
        let total = match usize::from(be16(p, 2)) {
            t if t < ihl => p.len(),
            t => t.min(p.len()),
        };
        if frag_off != 0 {
            return Ok(());
        }
        let l4 = &mut p[ihl..total];
        self.transport(proto, l4, addr, depth, quoted, false, delta)
    }

    fn ipv6(
        &mut self,
        p: &mut [u8],
        depth: u8,
        quoted: bool,
        delta: &mut Delta,
    ) -> Result<(), Skip> {
        if p.len() < 40 {
            return Err(Skip::Truncated);
        }
        let mut src = [0u8; 16];
        let mut dst = [0u8; 16];
        src.copy_from_slice(&p[8..24]);
        dst.copy_from_slice(&p[24..40]);
        let (nsrc, ndst) = (self.map6(src), self.map6(dst));
        let mut addr = 0;
        put(p, 8, &nsrc, &mut addr);
        put(p, 24, &ndst, &mut addr);
        *delta = u32::from(fold(*delta + addr));
        // A payload length of 0 (a jumbogram's) is read as the decoder
        // reads it: to the frame's end.
        let total = match usize::from(be16(p, 4)) {
            0 => p.len(),
            pl => (40 + pl).min(p.len()),
        };
        let mut next = p[6];
        let mut at = 40;
        loop {
            match next {
                0 | 60 => {
                    if total < at + 2 {
                        return if quoted { Ok(()) } else { Err(Skip::Truncated) };
                    }
                    let len = (usize::from(p[at + 1]) + 1) * 8;
                    // A Home Address option (Mobile IPv6) holds the address
                    // the decoder keys the flow on, and the transport
                    // checksum covers it: skipped, as a routing header is.
                    if next == 60
                        && at + len <= total
                        && home_address(&p[at + 2..at + len]).is_some()
                    {
                        return Err(Skip::RouteOption);
                    }
                    next = p[at];
                    at += len;
                }
                51 => {
                    if total < at + 2 {
                        return if quoted { Ok(()) } else { Err(Skip::Truncated) };
                    }
                    next = p[at];
                    at += (usize::from(p[at + 1]) + 2) * 4;
                }
                43 => return Err(Skip::RouteOption),
                44 => {
                    if total < at + 8 {
                        return if quoted { Ok(()) } else { Err(Skip::Truncated) };
                    }
                    next = p[at];
                    if be16(p, at + 2) & 0xfff8 != 0 {
                        return Ok(());
                    }
                    at += 8;
                }
                _ => break,
            }
            if at > total {
                return if quoted { Ok(()) } else { Err(Skip::Truncated) };
            }
        }
        let l4 = &mut p[at..total];
        self.transport(next, l4, addr, depth, quoted, true, delta)
    }

    /// The payload of an IP header: fixes the transport checksum for the
    /// address change `addr` and opens tunnels and ICMP errors.
    #[allow(clippy::too_many_arguments)]
    fn transport(
        &mut self,
        proto: u8,
        l4: &mut [u8],
        addr: Delta,
        depth: u8,
        quoted: bool,
        v6: bool,
        delta: &mut Delta,
    ) -> Result<(), Skip> {
        match proto {
            // TCP: the pseudo-header holds the addresses.
            6 => {
                if l4.len() >= 18 {
                    fix_checksum(l4, 16, addr, false, delta);
                }
                Ok(())
            }
            17 => {
                if l4.len() < 8 {
                    return Ok(());
                }
                let (sport, dport) = (be16(l4, 0), be16(l4, 2));
                let mut inner = 0;
                let res = self.tunnel(Some((sport, dport)), &mut l4[8..], depth, &mut inner);
                if quoted && res == Err(Skip::Truncated) {
                    // A quoted datagram is cut short by design.
                } else {
                    res?;
                }
                *delta = u32::from(fold(*delta + inner));
                fix_checksum(l4, 6, u32::from(fold(addr + inner)), !v6, delta);
                Ok(())
            }
            // ICMP: the checksum covers the message only; errors quote a header.
            1 => {
                if l4.len() < 8 {
                    return Ok(());
                }
                let mut inner = 0;
                if matches!(l4[0], 3 | 4 | 5 | 11 | 12) && l4.len() > 8 {
                    quoted_ip(self, &mut l4[8..], depth, &mut inner)?;
                }
                *delta = u32::from(fold(*delta + inner));
                fix_checksum(l4, 2, inner, false, delta);
                Ok(())
            }
            // ICMPv6: pseudo-header, and errors (types 1-4) quote a header.
            58 => {
                if l4.len() < 8 {
                    return Ok(());
                }
                let mut inner = 0;
                if (1..=4).contains(&l4[0]) && l4.len() > 8 {
                    quoted_ip(self, &mut l4[8..], depth, &mut inner)?;
                }
                *delta = u32::from(fold(*delta + inner));
                fix_checksum(l4, 2, u32::from(fold(addr + inner)), false, delta);
                Ok(())
            }
            // IP in IP, IPv6 in IP.
            4 | 41 => {
                let r = self.ip(l4, depth + 1, quoted, delta);
                if quoted && r == Err(Skip::Truncated) {
                    Ok(())
                } else {
                    r
                }
            }
            47 => {
                let r = self.gre(l4, depth + 1, delta);
                if quoted && r == Err(Skip::Truncated) {
                    Ok(())
                } else {
                    r
                }
            }
            // IPsec AH over IPv4 (IPv6's is an extension header, skipped
            // above): one header, then what it protects, as the decoder
            // reads it. Its ICV no longer matches; nothing checks it.
            51 if !v6 => {
                if l4.len() < 2 {
                    return Ok(());
                }
                let (next, len) = (l4[0], (usize::from(l4[1]) + 2) * 4);
                match l4.get_mut(len..) {
                    Some(rest) if next != 51 => {
                        self.transport(next, rest, addr, depth, quoted, v6, delta)
                    }
                    Some(_) => Ok(()),
                    None if quoted => Ok(()),
                    None => Err(Skip::Truncated),
                }
            }
            // L2TPv3 over IP: no checksum of its own.
            115 => {
                let r = self.tunnel(None, l4, depth, delta);
                if quoted && r == Err(Skip::Truncated) {
                    Ok(())
                } else {
                    r
                }
            }
            _ => Ok(()),
        }
    }

    fn gre(&mut self, g: &mut [u8], depth: u8, delta: &mut Delta) -> Result<(), Skip> {
        if g.len() < 4 {
            return Err(Skip::Truncated);
        }
        let flags = be16(g, 0);
        if flags & 0x7 != 0 {
            // Version 1: PPTP's enhanced GRE, carrying PPP.
            return Err(Skip::Encapsulation);
        }
        let csum = flags & 0x8000 != 0;
        let len = 4
            + if csum { 4 } else { 0 }
            + if flags & 0x2000 != 0 { 4 } else { 0 }
            + if flags & 0x1000 != 0 { 4 } else { 0 };
        if g.len() < len {
            return Err(Skip::Truncated);
        }
        let mut inner = 0;
        match be16(g, 2) {
            0x0800 | 0x86dd => self.ip(&mut g[len..], depth, false, &mut inner)?,
            0x6558 => self.ethernet(&mut g[len..], depth, &mut inner)?,
            0x8847 | 0x8848 => self.mpls(&mut g[len..], depth, &mut inner)?,
            // ERSPAN type II: an 8-byte header, then the mirrored frame.
            0x88be => {
                if g.len() < len + 8 {
                    return Err(Skip::Truncated);
                }
                self.ethernet(&mut g[len + 8..], depth, &mut inner)?;
            }
            // ERSPAN type III: 12 bytes, plus 8 when the O flag is set.
            0x22eb => {
                if g.len() < len + 12 {
                    return Err(Skip::Truncated);
                }
                let extra = if g[len + 11] & 1 != 0 { 8 } else { 0 };
                if g.len() < len + 12 + extra {
                    return Err(Skip::Truncated);
                }
                self.ethernet(&mut g[len + 12 + extra..], depth, &mut inner)?;
            }
            _ => return Err(Skip::Encapsulation),
        }
        *delta = u32::from(fold(*delta + inner));
        if csum {
            fix_checksum(g, 4, inner, false, delta);
        }
        Ok(())
    }
}

/// The IP header quoted by an ICMP error: its addresses must go too; the
/// datagram behind it is usually cut short.
fn quoted_ip(r: &mut Rewriter, p: &mut [u8], depth: u8, delta: &mut Delta) -> Result<(), Skip> {
    r.ip(p, depth + 1, true, delta)
}

/// The ethertype of a raw IP packet, from its version nibble.
/// `p` from `at` on, or `Truncated`.
fn sub(p: &mut [u8], at: usize) -> Result<&mut [u8], Skip> {
    p.get_mut(at..).ok_or(Skip::Truncated)
}

fn version_type(p: &[u8], at: usize) -> Result<u16, Skip> {
    match p.get(at).map(|b| b >> 4) {
        Some(4) => Ok(0x0800),
        Some(6) => Ok(0x86dd),
        Some(_) => Err(Skip::NotIp),
        None => Err(Skip::Truncated),
    }
}

#[cfg(test)]
mod tests;
