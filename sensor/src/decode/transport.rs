//! The transport layer (TCP, UDP, SCTP, ICMP and ICMPv6) as a packet
//! summary, and the tunnels it carries: GRE (over IP or UDP, with ERSPAN
//! and Cisco MetaData), IP-in-IP, L2TPv3 over IP, and the UDP tunnels of
//! [`super::udp_tunnel`].

use etherparse::{IpNumber, TcpHeaderSlice};
use vigil_proto::TunnelType;

use super::ethertype::*;
use super::key::FlowKey;
use super::plain::plain_transport;
use super::udp_tunnel::{l2tpv3, udp_tunnel};
use super::{Ctx, DecodeError, Decoder, Next, PacketMeta, R, TunnelMeta, be16, err, payload_span};

impl Decoder {
    // Inlined into `upper`: returning the packet summary by value costs a
    // copy of it per packet otherwise.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(super) fn transport<'a>(
        &mut self,
        proto: u8,
        l4: &'a [u8],
        l4_total: u32,
        src: [u8; 16],
        dst: [u8; 16],
        v6: bool,
        ctx: &Ctx,
    ) -> R<(PacketMeta, Next<'a>, &'a [u8])> {
        let mut sport = 0;
        let mut dport = 0;
        let mut tcp_flags = 0;
        let mut zero_window = false;
        let mut tcp_seq = 0;
        let mut icmp = [0u8; 2];
        let mut payload_len = l4_total;
        let mut payload: &[u8] = &[];
        let mut next = Next::None;
        let plain = match proto {
            6 | 17 => plain_transport(proto, l4, l4_total),
            _ => None,
        };
        match (IpNumber(proto), plain) {
            (_, Some(t)) => {
                sport = t.sport;
                dport = t.dport;
                tcp_flags = t.flags;
                zero_window = t.zero_window;
                tcp_seq = t.seq;
                payload_len = t.payload_len;
                payload = l4.get(t.hl as usize..).unwrap_or_default();
            }
            // Refused by `plain_transport`: etherparse names what is wrong.
            (IpNumber::TCP, None) => {
                use etherparse::err::tcp::HeaderSliceError;
                return err(match TcpHeaderSlice::from_slice(l4) {
                    Err(HeaderSliceError::Len(_)) => DecodeError::TcpTruncated,
                    Err(HeaderSliceError::Content(_)) => DecodeError::TcpInvalid,
                    Ok(_) => DecodeError::TcpOptionsInvalid,
                });
            }
            // Too short, or to a tunnel port.
            (IpNumber::UDP, None) => {
                if l4.len() < 8 {
                    return err(DecodeError::UdpTruncated);
                }
                sport = be16(l4, 0);
                dport = be16(l4, 2);
                payload_len = u32::from(be16(l4, 4))
                    .saturating_sub(8)
                    .min(l4_total.saturating_sub(8));
                payload = &l4[8..];
                // A payload too short for the tunnel header its port names
                // is still this flow's packet (a client may pick port 4789
                // or 6081); the frame is counted as an error after it.
                next = udp_tunnel(sport, dport, &l4[8..]);
            }
            (IpNumber::SCTP, _) => {
                if l4.len() < 12 {
                    return err(DecodeError::SctpTruncated);
                }
                sport = be16(l4, 0);
                dport = be16(l4, 2);
            }
            (IpNumber::ICMP | IpNumber::IPV6_ICMP, _) => {
                icmp = [
                    l4.first().copied().unwrap_or(0),
                    l4.get(1).copied().unwrap_or(0),
                ];
            }
            (IpNumber::GRE, _) => next = Next::Gre(l4, TunnelType::Gre),
            (IpNumber(115), _) => next = l2tpv3(l4),
            (IpNumber::IPV4 | IpNumber::IPV6, _) => next = Next::Ip(l4, TunnelType::IpInIp),
            _ => {}
        }
        let (key, src_is_lo) = FlowKey::new(src, sport, dst, dport, proto, v6, ctx.vlan);
        let (payload_at, payload_cap) = payload_span(ctx.frame, payload, payload_len);
        let meta = PacketMeta {
            key,
            hash: key.hash64(),
            ts_ns: ctx.ts,
            ip_bytes: 0,
            payload_len,
            src_is_lo,
            tcp_flags,
            tcp_zero_window: zero_window,
            tcp_seq,
            icmp,
            tunnel: ctx.tunnel,
            payload_at,
            payload_cap,
            app_at: 0,
            app_len: 0,
        };
        // The payload as captured, to its stated length.
        let payload = &payload[..payload.len().min(payload_len as usize)];
        Ok((meta, next, payload))
    }

    pub(super) fn gre(
        &mut self,
        g: &[u8],
        kind: TunnelType,
        outer: TunnelMeta,
        ctx: Ctx,
        emit: &mut impl FnMut(&PacketMeta, &[u8]),
    ) -> R<bool> {
        if g.len() < 4 {
            return err(DecodeError::TunnelTruncated);
        }
        let flags = be16(g, 0);
        let version = flags & 0x7;
        let proto = be16(g, 2);
        let mut hl = 4;
        if flags & 0xc000 != 0 {
            hl += 4; // checksum and offset
        }
        if flags & 0x2000 != 0 {
            hl += 4; // key
        }
        let has_seq = flags & 0x1000 != 0;
        if has_seq {
            hl += 4;
        }
        if version == 1 && flags & 0x0080 != 0 {
            hl += 4; // PPTP acknowledgement
        }
        if flags & 0x4000 != 0 || version > 1 {
            // Source routing or an unknown version: nothing we can follow.
            return Ok(true);
        }
        if g.len() < hl {
            return err(DecodeError::TunnelTruncated);
        }
        let body = &g[hl..];
        let inner = |kind| ctx.inner(kind, outer);
        match proto {
            ETH_IPV4 | ETH_IPV6 => self.ip(body, inner(kind), emit),
            ETH_TEB => self.ether(body, inner(kind), emit),
            ETH_MPLS | ETH_MPLS_MC => self.mpls(body, inner(kind), emit),
            ETH_PPP if version == 1 => self.ppp(body, inner(kind), emit),
            ETH_CISCO_METADATA => {
                // Cisco MetaData (the TrustSec SGT tag): 8 bytes, naming the
                // EtherType of what follows.
                if body.len() < 8 {
                    return err(DecodeError::TunnelTruncated);
                }
                let et = match be16(body, 0) {
                    et @ (ETH_IPV4 | ETH_IPV6) => et,
                    _ => be16(body, 6),
                };
                self.ethertype(et, &body[8..], inner(kind), emit)
            }
            ETH_ERSPAN2 => {
                // Type I has no ERSPAN header (and no GRE sequence number).
                let skip = if has_seq { 8 } else { 0 };
                match body.get(skip..) {
                    Some(e) => self.ether(e, inner(TunnelType::Erspan), emit),
                    None => err(DecodeError::TunnelTruncated),
                }
            }
            ETH_ERSPAN3 => {
                if body.len() < 12 {
                    return err(DecodeError::TunnelTruncated);
                }
                let skip = if body[11] & 1 != 0 { 20 } else { 12 };
                match body.get(skip..) {
                    Some(e) => self.ether(e, inner(TunnelType::Erspan), emit),
                    None => err(DecodeError::TunnelTruncated),
                }
            }
            _ => Ok(true),
        }
    }
}
