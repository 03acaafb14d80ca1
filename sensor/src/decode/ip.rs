//! The IP layer: IPv4 and IPv6 with their extension headers (through
//! etherparse's lax slices, except the plain header of the fast path),
//! lengths read laxly as Wireshark reads them, fragments handed to the
//! reassembly, and the transport layer above ([`Decoder::upper`]).

use etherparse::{Ipv6ExtensionSlice, Ipv6Header, LaxIpSlice};

use super::frag::FragKey;
use super::plain::{PlainIp, plain_transport};
use super::{Ctx, DecodeError, Decoder, MAX_DEPTH, Next, PacketMeta, R, TunnelMeta, err};

/// The final destination named by an IPv6 type 0 or type 2 routing header
/// with segments left, as Wireshark and Zeek key the conversation. `p` is the
/// header after its next-header and length bytes.
pub(super) fn routing_final_destination(p: &[u8]) -> Option<[u8; 16]> {
    let (rtype, segments_left) = (*p.first()?, *p.get(1)?);
    if !matches!(rtype, 0 | 2) || segments_left == 0 {
        return None;
    }
    let addrs = p.get(6..)?;
    let n = addrs.len() / 16;
    if n == 0 {
        return None;
    }
    addrs[(n - 1) * 16..n * 16].try_into().ok()
}

/// The Home Address option (type 0xc9) of a destination options header:
/// the mobile node's address, which stands for the source (RFC 6275).
pub(crate) fn home_address(mut p: &[u8]) -> Option<[u8; 16]> {
    while let Some(&t) = p.first() {
        if t == 0 {
            p = &p[1..];
            continue;
        }
        let len = usize::from(*p.get(1)?);
        let val = p.get(2..2 + len)?;
        if t == 0xc9 && len == 16 {
            return val.try_into().ok();
        }
        p = &p[2 + len..];
    }
    None
}

impl Decoder {
    pub(super) fn ip(
        &mut self,
        d: &[u8],
        ctx: Ctx,
        emit: &mut impl FnMut(&PacketMeta, &[u8]),
    ) -> R<bool> {
        // Most packets on a link are IPv4 without options or fragmentation,
        // carrying TCP or UDP: those headers are read in place, and a plain
        // TCP or UDP header makes the packet summary here. What it yields
        // is exactly what the general path below yields for it (etherparse's
        // lax slice: the payload ends at the total length, or at the end of
        // the frame when the total length is past it or below the header);
        // `fast_path_agrees_with_etherparse` checks this.
        if let Some(h) = PlainIp::of(d) {
            let Some(t) = plain_transport(h.proto, h.l4, h.l4_total) else {
                return self.upper(
                    h.proto, h.l4, h.l4_total, h.ip_bytes, h.src, h.dst, h.v6, ctx, emit,
                );
            };
            emit(
                &h.meta(&t, &ctx, &mut 0),
                h.l4.get(t.hl as usize..).unwrap_or_default(),
            );
            return Ok(true);
        }
        self.ip_general(d, ctx, emit)
    }

    pub(super) fn ip_general(
        &mut self,
        d: &[u8],
        ctx: Ctx,
        emit: &mut impl FnMut(&PacketMeta, &[u8]),
    ) -> R<bool> {
        use etherparse::err::ip::LaxHeaderSliceError;
        let (ip, ext_err) = match LaxIpSlice::from_slice(d) {
            Ok(v) => v,
            Err(LaxHeaderSliceError::Len(_)) => return err(DecodeError::IpTruncated),
            Err(LaxHeaderSliceError::Content(_)) => return err(DecodeError::IpInvalid),
        };
        if ext_err.is_some() {
            // An IPv6 payload length too short for the packet's own
            // extension headers, in a frame that holds them: the frame's
            // length stands for it, as it does for an IPv4 total length
            // below the header (and as Wireshark reads it). The packet is
            // decoded again with the length zeroed, which etherparse reads
            // as "to the end of the slice".
            if let LaxIpSlice::Ipv6(s) = &ip {
                let pl = usize::from(s.header().payload_length());
                if pl != 0 && d.len() > Ipv6Header::LEN + pl {
                    let mut copy = std::mem::take(&mut self.relaxed);
                    copy.clear();
                    copy.extend_from_slice(d);
                    copy[4..6].fill(0);
                    let r = self.ip_general(&copy, ctx, emit);
                    self.relaxed = copy;
                    return r;
                }
            }
            return err(DecodeError::Ipv6ExtensionInvalid);
        }
        let mut src = [0u8; 16];
        let mut dst = [0u8; 16];
        let v6;
        let ip_bytes: u32;
        let mut frag: Option<(u32, u32, bool)> = None; // (id, offset, more)
        // An IPv6 fragment's data: its protocol and where it starts in `d`.
        let mut frag_data: Option<(u8, usize)> = None;
        match &ip {
            LaxIpSlice::Ipv4(s) => {
                let h = s.header();
                v6 = false;
                src[..4].copy_from_slice(&h.source());
                dst[..4].copy_from_slice(&h.destination());
                let total = u32::from(h.total_len());
                let hl = u32::from(h.ihl()) * 4;
                ip_bytes = if total >= hl { total } else { d.len() as u32 };
                if h.is_fragmenting_payload() {
                    frag = Some((
                        u32::from(h.identification()),
                        u32::from(h.fragments_offset().value()) * 8,
                        h.more_fragments(),
                    ));
                }
            }
            LaxIpSlice::Ipv6(s) => {
                let h = s.header();
                v6 = true;
                src = h.source();
                dst = h.destination();
                let pl = u32::from(h.payload_length());
                ip_bytes = if pl == 0 { d.len() as u32 } else { 40 + pl };
                if !s.extensions().is_empty() {
                    for ext in s.extensions().clone() {
                        match ext {
                            Ipv6ExtensionSlice::Fragment(f) => {
                                frag = Some((
                                    f.identification(),
                                    u32::from(f.fragment_offset().value()) * 8,
                                    f.more_fragments(),
                                ));
                                // What follows a fragment of a datagram
                                // (not an atomic one) is the fragment's
                                // data, headers or not, whatever the
                                // parser went on to read there.
                                if f.is_fragmenting_payload() {
                                    let at = f.slice().as_ptr() as usize - d.as_ptr() as usize
                                        + f.slice().len();
                                    frag_data = Some((f.next_header().0, at));
                                    break;
                                }
                            }
                            Ipv6ExtensionSlice::Routing(r) => {
                                // Transport conversations are keyed on the final
                                // destination, as Wireshark keys them; other
                                // protocols keep the header's addresses.
                                if matches!(s.payload().ip_number.0, 6 | 17 | 132)
                                    && let Some(final_dst) = routing_final_destination(r.payload())
                                {
                                    dst = final_dst;
                                }
                            }
                            Ipv6ExtensionSlice::DestinationOptions(o) => {
                                if let Some(home) = home_address(o.payload()) {
                                    src = home;
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        let payload = ip.payload();
        let (proto, l4) = match frag_data {
            Some((proto, at)) => {
                // To where the parser's payload ends (the payload length,
                // or the frame's end where that is too long).
                let end =
                    payload.payload.as_ptr() as usize - d.as_ptr() as usize + payload.payload.len();
                (proto, d.get(at..end).unwrap_or_default())
            }
            None => (payload.ip_number.0, payload.payload),
        };
        // Bytes before the transport header (IP header and extensions).
        let header_len = (l4.as_ptr() as usize - d.as_ptr() as usize) as u32;
        let l4_total = ip_bytes.saturating_sub(header_len);

        if let Some((id, offset, more)) = frag {
            let fkey = FragKey {
                src,
                dst,
                id,
                proto,
                v6,
                vlan: ctx.vlan,
            };
            let done = self.frags.add(
                fkey,
                ctx.ts,
                offset,
                l4_total,
                more,
                header_len,
                l4,
                &mut self.stats,
            );
            if let Some(entry) = done {
                let total = entry.data.len() as u32;
                let (proto, data) = if v6 {
                    v6_extensions_skipped(proto, &entry.data)
                } else {
                    (proto, &entry.data[..])
                };
                let res = self.upper(
                    proto,
                    data,
                    data.len() as u32,
                    entry.header_len + total,
                    src,
                    dst,
                    v6,
                    ctx,
                    emit,
                );
                self.frags.recycle(entry);
                res?;
            }
            return Ok(true);
        }
        self.upper(proto, l4, l4_total, ip_bytes, src, dst, v6, ctx, emit)
    }

    /// The transport layer of one IP packet (or reassembled datagram) and
    /// whatever it tunnels.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn upper(
        &mut self,
        proto: u8,
        l4: &[u8],
        l4_total: u32,
        ip_bytes: u32,
        src: [u8; 16],
        dst: [u8; 16],
        v6: bool,
        ctx: Ctx,
        emit: &mut impl FnMut(&PacketMeta, &[u8]),
    ) -> R<bool> {
        let outer = TunnelMeta {
            kind: None,
            outer_v6: v6,
            outer_src: src,
            outer_dst: dst,
        };
        let (mut meta, next, payload) = self.transport(proto, l4, l4_total, src, dst, v6, &ctx)?;
        meta.ip_bytes = ip_bytes;
        emit(&meta, payload);

        if !matches!(next, Next::None | Next::Broken(_)) && ctx.depth >= MAX_DEPTH {
            return err(DecodeError::TooDeep);
        }
        let inner = match next {
            Next::None => return Ok(true),
            Next::Broken(e) => err(e),
            Next::Gre(g, kind) => self.gre(g, kind, outer, ctx, emit),
            Next::Ppp(p, kind) => self.ppp(p, ctx.inner(kind, outer), emit),
            Next::Mpls(m, kind) => self.mpls(m, ctx.inner(kind, outer), emit),
            Next::Ether(e, kind) => self.ether(e, ctx.inner(kind, outer), emit),
            Next::Ip(i, kind) => self.ip(i, ctx.inner(kind, outer), emit),
        };
        // The outer flow was counted: a broken inner packet is still an error,
        // but the frame did reach IP.
        inner.map(|_| true)
    }
}

/// A reassembled IPv6 datagram's protocol and transport bytes past the
/// extension headers its fragmentable part opens with (hop-by-hop,
/// routing, destination options, AH), read as the parser reads them in an
/// unfragmented packet; a header cut short ends the walk where it starts.
fn v6_extensions_skipped(mut proto: u8, mut data: &[u8]) -> (u8, &[u8]) {
    for _ in 0..MAX_V6_EXTENSIONS {
        let Some(&len) = data.get(1) else { break };
        let len = match proto {
            0 | 43 | 60 => (usize::from(len) + 1) * 8,
            51 => (usize::from(len) + 2) * 4,
            _ => break,
        };
        if data.len() < len {
            break;
        }
        proto = data[0];
        data = &data[len..];
    }
    (proto, data)
}

/// At most this many extension headers are read through after reassembly.
const MAX_V6_EXTENSIONS: usize = 8;
