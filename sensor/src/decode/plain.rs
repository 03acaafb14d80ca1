//! The common packet's fast path: an Ethernet frame (at most two VLAN
//! tags) carrying IPv4 without options or fragmentation, or IPv6 without
//! extension headers, then a plain TCP or UDP header on no tunnel port, read
//! in place without etherparse. Anything else leaves it for the general
//! path, and a test holds both to the same packets for every length field
//! and cut.

use super::ethertype::*;
use super::key::FlowKey;
use super::udp_tunnel::tunnel_port;
use super::{Ctx, Decoder, PacketMeta, be16, payload_span};
use crate::capture::{LinkType, RawPacket};

/// Whether a TCP option list is well formed: every option fits, and the
/// fixed-size ones (MSS, window scale, SACK-permitted, SACK, timestamps)
/// have their sizes. Wireshark refuses segments that fail this, and so do we.
pub(super) fn tcp_options_valid(mut o: &[u8]) -> bool {
    while let Some(&kind) = o.first() {
        match kind {
            0 => return true,
            1 => o = &o[1..],
            _ => {
                let Some(&len) = o.get(1) else { return false };
                let len = usize::from(len);
                if len < 2 || len > o.len() {
                    return false;
                }
                let ok = match kind {
                    2 => len == 4,
                    3 => len == 3,
                    4 => len == 2,
                    5 => len >= 10 && (len - 2) % 8 == 0,
                    8 => len == 10,
                    _ => true,
                };
                if !ok {
                    return false;
                }
                o = &o[len..];
            }
        }
    }
    true
}

/// A TCP or UDP header that ends the packet's decoding.
pub(super) struct PlainTransport {
    pub(super) sport: u16,
    pub(super) dport: u16,
    pub(super) flags: u8,
    pub(super) zero_window: bool,
    pub(super) seq: u32,
    pub(super) payload_len: u32,
    /// Header length: where the payload starts in the transport bytes.
    pub(super) hl: u32,
}

/// An IP header carrying TCP or UDP directly, read in place: IPv4 without
/// options or fragmentation, or IPv6 without extension headers. The shape
/// most packets on a link have, which [`Decoder::ip`] and
/// [`Decoder::decode_plain`] take without etherparse.
pub(super) struct PlainIp<'a> {
    pub(super) proto: u8,
    pub(super) v6: bool,
    /// The transport header and payload, cut at the IP length (or the end
    /// of the frame when that length is past it, or is below the header or
    /// zero, as etherparse's lax slice cuts it).
    pub(super) l4: &'a [u8],
    /// The IP length, as `ip_general` takes it (the frame's where the
    /// header's is below its own length or zero), and what of it follows
    /// the IP header.
    pub(super) ip_bytes: u32,
    pub(super) l4_total: u32,
    pub(super) src: [u8; 16],
    pub(super) dst: [u8; 16],
}

impl<'a> PlainIp<'a> {
    /// Either version.
    #[inline(always)]
    pub(super) fn of(d: &'a [u8]) -> Option<Self> {
        Self::v4(d).or_else(|| Self::v6(d))
    }

    #[inline(always)]
    pub(super) fn v4(d: &'a [u8]) -> Option<Self> {
        if d.len() >= 20 && d[0] == 0x45 && matches!(d[9], 6 | 17) && be16(d, 6) & 0x3fff == 0 {
            let total = usize::from(be16(d, 2));
            let (l4, ip_bytes) = if total < 20 {
                (&d[20..], d.len() as u32)
            } else {
                (&d[20..total.min(d.len())], total as u32)
            };
            let mut src = [0u8; 16];
            let mut dst = [0u8; 16];
            src[..4].copy_from_slice(&d[12..16]);
            dst[..4].copy_from_slice(&d[16..20]);
            return Some(PlainIp {
                proto: d[9],
                v6: false,
                l4,
                ip_bytes,
                l4_total: ip_bytes - 20,
                src,
                dst,
            });
        }
        None
    }

    #[inline(always)]
    pub(super) fn v6(d: &'a [u8]) -> Option<Self> {
        if !(d.len() >= 40 && d[0] >> 4 == 6 && matches!(d[6], 6 | 17)) {
            return None;
        }
        let len = usize::from(be16(d, 4));
        let (l4, ip_bytes) = if len == 0 {
            (&d[40..], d.len() as u32)
        } else {
            (&d[40..(40 + len).min(d.len())], 40 + len as u32)
        };
        Some(PlainIp {
            proto: d[6],
            v6: true,
            l4,
            ip_bytes,
            l4_total: ip_bytes - 40,
            src: d[8..24].try_into().ok()?,
            dst: d[24..40].try_into().ok()?,
        })
    }

    /// The packet summary, given its plain transport header; `pair` is set
    /// to its key's [`FlowKey::pair_hash`].
    #[inline(always)]
    pub(super) fn meta(&self, t: &PlainTransport, ctx: &Ctx, pair: &mut u64) -> PacketMeta {
        let (key, src_is_lo) = FlowKey::new(
            self.src, t.sport, self.dst, t.dport, self.proto, self.v6, ctx.vlan,
        );
        *pair = key.pair_hash();
        let (payload_at, payload_cap) = payload_span(
            ctx.frame,
            self.l4.get(t.hl as usize..).unwrap_or_default(),
            t.payload_len,
        );
        PacketMeta {
            key,
            hash: key.hash_with_pair(*pair),
            ts_ns: ctx.ts,
            ip_bytes: self.ip_bytes,
            payload_len: t.payload_len,
            src_is_lo,
            tcp_flags: t.flags,
            tcp_zero_window: t.zero_window,
            tcp_seq: t.seq,
            icmp: [0; 2],
            tunnel: ctx.tunnel,
            payload_at,
            payload_cap,
            app_at: 0,
            app_len: 0,
        }
    }
}

/// Reads a TCP or UDP header (`proto` 6 or 17) in place when it is whole,
/// valid and carries no tunnel. Both the IPv4 fast path and
/// `Decoder::transport` read these headers through it; on `None`,
/// `transport` names what is wrong or follows the tunnel.
#[inline(always)]
pub(super) fn plain_transport(proto: u8, l4: &[u8], l4_total: u32) -> Option<PlainTransport> {
    if proto == 6 {
        let hl = usize::from(*l4.get(12)? >> 4) * 4;
        if hl < 20 || l4.len() < hl || !tcp_options_valid(&l4[20..hl]) {
            return None;
        }
        let flags = l4[13];
        Some(PlainTransport {
            sport: be16(l4, 0),
            dport: be16(l4, 2),
            flags,
            zero_window: be16(l4, 14) == 0 && flags & 0x06 == 0,
            seq: u32::from_be_bytes([l4[4], l4[5], l4[6], l4[7]]),
            payload_len: l4_total.saturating_sub(hl as u32),
            hl: hl as u32,
        })
    } else {
        if l4.len() < 8 {
            return None;
        }
        let (sport, dport) = (be16(l4, 0), be16(l4, 2));
        if tunnel_port(sport) || tunnel_port(dport) {
            return None;
        }
        Some(PlainTransport {
            sport,
            dport,
            flags: 0,
            zero_window: false,
            seq: 0,
            payload_len: u32::from(be16(l4, 4))
                .saturating_sub(8)
                .min(l4_total.saturating_sub(8)),
            hl: 8,
        })
    }
}

impl Decoder {
    /// [`Decoder::decode_plain`] for the frames other than untagged IPv4:
    /// VLAN tags, IPv6.
    #[inline(never)]
    pub(super) fn decode_plain_tagged(
        &mut self,
        pkt: &RawPacket<'_>,
        pair: &mut u64,
    ) -> Option<PacketMeta> {
        let d = pkt.data;
        if !(pkt.link == LinkType::Ethernet && d.len() >= 14) {
            return None;
        }
        let mut ctx = Ctx::outer(d, pkt.ts_ns);
        let (mut et, mut at) = (be16(d, 12), 14);
        while matches!(et, ETH_VLAN | ETH_QINQ | ETH_QINQ_OLD | ETH_QINQ_OLD2) {
            // As `ethertype` reads the tags; a third goes the long way.
            if ctx.nvlan == 2 || d.len() < at + 4 {
                return None;
            }
            ctx.vlan[usize::from(ctx.nvlan)] = be16(d, at) & 0x0fff;
            ctx.nvlan += 1;
            et = be16(d, at + 2);
            at += 4;
        }
        if !matches!(et, ETH_IPV4 | ETH_IPV6) {
            return None;
        }
        let h = PlainIp::of(&d[at..])?;
        let t = plain_transport(h.proto, h.l4, h.l4_total)?;
        self.stats.frames += 1;
        Some(h.meta(&t, &ctx, pair))
    }
}
