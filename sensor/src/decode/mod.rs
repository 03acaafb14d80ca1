//! Frame decoding: link layer → VLAN/MPLS → IP → transport, with tunnels.
//!
//! [`Decoder::decode`] turns one captured frame into zero or more
//! [`PacketMeta`]s, small `Copy` summaries that the flow table consumes: one
//! for each IP layer (the outer flow of a tunnel and each inner flow), none
//! for non-IP frames, malformed frames, or IP fragments that do not yet
//! complete a datagram. It performs no I/O and allocates nothing per packet;
//! malformed input is counted by reason in [`DecodeStats`] and never panics.
//!
//! IP fragments: a fragmented datagram counts as one packet of its flow, in
//! the frame that completes it, as Wireshark and Zeek count it. The
//! [`FragTracker`] remembers which bytes of each datagram have arrived (not
//! the bytes themselves) and the transport header of the first fragment.

use vigil_proto::TunnelType;

use crate::capture::{LinkType, RawPacket};

mod frag;
mod ip;
pub(crate) use ip::home_address;
pub mod key;
mod link;
mod owner;
mod plain;
#[cfg(test)]
mod tests;
mod transport;
mod udp_tunnel;
mod wlan;

pub use frag::{FragTracker, MAX_FRAGMENT_BYTES};
use key::FlowKey;
pub(crate) use link::{Pseudowire, pseudowire};
pub use owner::{Owner, owner};
use plain::{PlainIp, plain_transport};
pub use udp_tunnel::{Inner, tunnel_inner};

/// Deepest nesting of encapsulations followed (VLAN and MPLS excluded).
const MAX_DEPTH: u8 = 6;
/// Ethernet headers followed within one packet outside tunnels (MPLS
/// pseudowires, 802.1ah, FabricPath, NSH each open one more): a bound on
/// the decoder's recursion that a crafted frame cannot push.
const MAX_ETHERNET_LAYERS: u8 = 8;
/// Datagrams under reassembly at once.
pub const MAX_FRAGMENTED_DATAGRAMS: usize = 8192;
/// Fragments of a datagram older than this are abandoned (Linux's ipfrag_time).
const FRAGMENT_TIMEOUT_NS: u64 = 30_000_000_000;

/// Tunnel context carried by an inner packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TunnelMeta {
    /// `None` for a packet outside any tunnel.
    pub kind: Option<TunnelType>,
    /// Whether the outer addresses are IPv6.
    pub outer_v6: bool,
    /// Outer source address.
    pub outer_src: [u8; 16],
    /// Outer destination address.
    pub outer_dst: [u8; 16],
}

/// What the flow table needs to know about one packet of one IP layer.
#[derive(Clone, Copy, Debug, Default)]
pub struct PacketMeta {
    /// Canonical flow key.
    pub key: FlowKey,
    /// `key.hash64()`, computed once.
    pub hash: u64,
    /// Capture time, ns since the epoch.
    pub ts_ns: u64,
    /// IP-layer bytes: the IP header's length field (whole datagram once reassembled).
    pub ip_bytes: u32,
    /// Transport payload bytes, as the headers state them.
    pub payload_len: u32,
    /// Whether the packet's source is the key's lower endpoint.
    pub src_is_lo: bool,
    /// TCP flags (0 for other protocols).
    pub tcp_flags: u8,
    /// A TCP packet advertising a zero window.
    pub tcp_zero_window: bool,
    /// TCP sequence number (0 for other protocols).
    pub tcp_seq: u32,
    /// ICMP type and code (0, 0 for other protocols).
    pub icmp: [u8; 2],
    /// The tunnel this packet was carried in.
    pub tunnel: TunnelMeta,
    /// Where the transport payload starts in the frame's bytes, and how
    /// many of its bytes the frame holds ([`PacketMeta::payload`]); `len` 0
    /// where the payload is not in the frame (reassembled fragments, no
    /// payload, a protocol without one here).
    pub payload_at: u32,
    /// Captured payload bytes at `payload_at`.
    pub payload_cap: u32,
    /// Where the application layer's copy of the payload starts in the
    /// batch's payload buffer, and its length (0: none kept); set by
    /// [`crate::app::Sniffer::keep`].
    pub app_at: u32,
    /// Length of the kept payload.
    pub app_len: u32,
}

impl PacketMeta {
    /// The transport payload's captured bytes, from the frame this packet
    /// was decoded from (empty where they are not in it).
    #[inline]
    pub fn payload<'a>(&self, frame: &'a [u8]) -> &'a [u8] {
        let at = self.payload_at as usize;
        frame
            .get(at..at.saturating_add(self.payload_cap as usize))
            .unwrap_or_default()
    }
}

/// Where `payload` starts in the frame at `base` and how long it is, the
/// transport payload of one packet: `(u32::MAX, 0)` when it is not in the
/// frame (a copy: a reassembled datagram or a relaxed IPv6 packet).
#[inline(always)]
fn payload_span(base: &[u8], payload: &[u8], stated: u32) -> (u32, u32) {
    let at = (payload.as_ptr() as usize).wrapping_sub(base.as_ptr() as usize);
    let cap = payload.len().min(stated as usize);
    if cap == 0 || at.saturating_add(cap) > base.len() {
        return (u32::MAX, 0);
    }
    (at as u32, cap as u32)
}

/// Why a frame could not be decoded. Counted, never logged per packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DecodeError {
    /// Shorter than its link-layer header.
    LinkTruncated,
    /// Link type this decoder does not know.
    UnsupportedLinkType,
    /// Cut inside an 802.1Q/802.1ad tag.
    VlanTruncated,
    /// Cut inside an MPLS label stack.
    MplsTruncated,
    /// Cut inside the IPv4/IPv6 header.
    IpTruncated,
    /// IP header with a bad version or header length.
    IpInvalid,
    /// IPv6 extension header cut or malformed.
    Ipv6ExtensionInvalid,
    /// Cut inside the TCP header.
    TcpTruncated,
    /// TCP header with a data offset below 5.
    TcpInvalid,
    /// TCP options whose lengths are impossible (a zero or overlong length,
    /// or a known option with the wrong size, such as an empty SACK).
    TcpOptionsInvalid,
    /// Cut inside the UDP header.
    UdpTruncated,
    /// Cut inside the SCTP common header.
    SctpTruncated,
    /// Cut inside a GRE, ERSPAN, VXLAN or Geneve header.
    TunnelTruncated,
    /// More nested encapsulations than followed.
    TooDeep,
    /// Cut inside a PPPoE session header, or not a PPPoE session frame.
    PppoeTruncated,
    /// Cut inside an 802.1ah (PBB) I-tag.
    PbbTruncated,
    /// Cut inside a Cisco VN-Tag.
    VnTagTruncated,
    /// Cut inside a Cisco FabricPath header.
    FabricPathTruncated,
    /// An NSH header cut, of an unknown version, or of a length below its base and service path headers.
    NshInvalid,
    /// A radiotap (or Prism, AVS) header cut or with an impossible length.
    RadiotapInvalid,
    /// Cut inside an 802.11 MAC header or its LLC/SNAP header.
    Ieee80211Truncated,
    /// A GTP-U header or extension header cut or malformed.
    GtpInvalid,
    /// A Teredo authentication or origin indicator cut.
    TeredoInvalid,
    /// An AYIYA header cut.
    AyiyaInvalid,
    /// An L2TP header cut, or an L2TPv3 payload whose cookie and sublayer could not be told apart from it.
    L2tpInvalid,
}

impl DecodeError {
    /// Every reason, in counter order.
    pub const ALL: [DecodeError; 25] = [
        DecodeError::LinkTruncated,
        DecodeError::UnsupportedLinkType,
        DecodeError::VlanTruncated,
        DecodeError::MplsTruncated,
        DecodeError::IpTruncated,
        DecodeError::IpInvalid,
        DecodeError::Ipv6ExtensionInvalid,
        DecodeError::TcpTruncated,
        DecodeError::TcpInvalid,
        DecodeError::TcpOptionsInvalid,
        DecodeError::UdpTruncated,
        DecodeError::SctpTruncated,
        DecodeError::TunnelTruncated,
        DecodeError::TooDeep,
        DecodeError::PppoeTruncated,
        DecodeError::PbbTruncated,
        DecodeError::VnTagTruncated,
        DecodeError::FabricPathTruncated,
        DecodeError::NshInvalid,
        DecodeError::RadiotapInvalid,
        DecodeError::Ieee80211Truncated,
        DecodeError::GtpInvalid,
        DecodeError::TeredoInvalid,
        DecodeError::AyiyaInvalid,
        DecodeError::L2tpInvalid,
    ];

    /// A bounded label for metrics and summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            DecodeError::LinkTruncated => "link_truncated",
            DecodeError::UnsupportedLinkType => "unsupported_link_type",
            DecodeError::VlanTruncated => "vlan_truncated",
            DecodeError::MplsTruncated => "mpls_truncated",
            DecodeError::IpTruncated => "ip_truncated",
            DecodeError::IpInvalid => "ip_invalid",
            DecodeError::Ipv6ExtensionInvalid => "ipv6_extension_invalid",
            DecodeError::TcpTruncated => "tcp_truncated",
            DecodeError::TcpInvalid => "tcp_invalid",
            DecodeError::TcpOptionsInvalid => "tcp_options_invalid",
            DecodeError::UdpTruncated => "udp_truncated",
            DecodeError::SctpTruncated => "sctp_truncated",
            DecodeError::TunnelTruncated => "tunnel_truncated",
            DecodeError::TooDeep => "too_deep",
            DecodeError::PppoeTruncated => "pppoe_truncated",
            DecodeError::PbbTruncated => "pbb_truncated",
            DecodeError::VnTagTruncated => "vntag_truncated",
            DecodeError::FabricPathTruncated => "fabricpath_truncated",
            DecodeError::NshInvalid => "nsh_invalid",
            DecodeError::RadiotapInvalid => "radiotap_invalid",
            DecodeError::Ieee80211Truncated => "ieee80211_truncated",
            DecodeError::GtpInvalid => "gtp_invalid",
            DecodeError::TeredoInvalid => "teredo_invalid",
            DecodeError::AyiyaInvalid => "ayiya_invalid",
            DecodeError::L2tpInvalid => "l2tp_invalid",
        }
    }
}

/// Counters kept by the decoder; plain integers, summed by the pipeline.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// Frames offered.
    pub frames: u64,
    /// Frames that carried no IP (ARP, STP, LLDP, …).
    pub non_ip: u64,
    /// Malformed frames by reason, indexed by `DecodeError as usize`.
    pub errors: [u64; DecodeError::ALL.len()],
    /// Fragments received.
    pub fragments: u64,
    /// Datagrams completed from fragments.
    pub reassembled: u64,
    /// Incomplete datagrams abandoned after the fragment timeout.
    pub fragments_timed_out: u64,
    /// Incomplete datagrams dropped because the tracker was full.
    pub fragments_evicted: u64,
}

impl DecodeStats {
    /// Total malformed frames.
    pub fn error_total(&self) -> u64 {
        self.errors.iter().sum()
    }

    /// Adds another set of counters.
    pub fn merge(&mut self, o: &DecodeStats) {
        self.frames += o.frames;
        self.non_ip += o.non_ip;
        for (a, b) in self.errors.iter_mut().zip(o.errors) {
            *a += b;
        }
        self.fragments += o.fragments;
        self.reassembled += o.reassembled;
        self.fragments_timed_out += o.fragments_timed_out;
        self.fragments_evicted += o.fragments_evicted;
    }

    /// `(reason, count)` for every reason with a non-zero count.
    pub fn error_counts(&self) -> impl Iterator<Item = (DecodeError, u64)> + '_ {
        DecodeError::ALL
            .iter()
            .zip(self.errors)
            .filter(|(_, n)| *n > 0)
            .map(|(e, n)| (*e, n))
    }
}

/// Per-frame state threaded through the layers.
#[derive(Clone, Copy)]
struct Ctx<'f> {
    /// The whole frame, where payload offsets count from.
    frame: &'f [u8],
    ts: u64,
    vlan: [u16; 2],
    nvlan: u8,
    tunnel: TunnelMeta,
    depth: u8,
    /// Ethernet headers opened since the last tunnel.
    layers: u8,
}

impl<'f> Ctx<'f> {
    /// The context of a frame's outermost packet, at time `ts`: no VLAN
    /// yet, no tunnel.
    #[inline(always)]
    fn outer(frame: &'f [u8], ts: u64) -> Ctx<'f> {
        Ctx {
            frame,
            ts,
            vlan: [0; 2],
            nvlan: 0,
            tunnel: TunnelMeta::default(),
            depth: 0,
            layers: 0,
        }
    }

    /// The context of a packet carried in a tunnel of `kind` whose outer
    /// endpoints are in `outer`: fresh VLANs, one level deeper.
    fn inner(&self, kind: TunnelType, outer: TunnelMeta) -> Ctx<'f> {
        Ctx {
            frame: self.frame,
            ts: self.ts,
            vlan: [0; 2],
            nvlan: 0,
            tunnel: TunnelMeta {
                kind: Some(kind),
                ..outer
            },
            depth: self.depth + 1,
            layers: 0,
        }
    }
}

/// What follows a transport header.
enum Next<'a> {
    None,
    Ether(&'a [u8], TunnelType),
    Ip(&'a [u8], TunnelType),
    /// A GRE header: over IP (`Gre`) or UDP (`GreUdp`).
    Gre(&'a [u8], TunnelType),
    /// A PPP frame (L2TPv2).
    Ppp(&'a [u8], TunnelType),
    /// An MPLS label stack (MPLS in UDP).
    Mpls(&'a [u8], TunnelType),
    /// A tunnel header that the packet cannot hold: the packet counts in
    /// its own flow, and the frame is counted with this error.
    Broken(DecodeError),
}

/// Decodes frames into [`PacketMeta`]s. One per capture thread.
#[derive(Debug, Default)]
pub struct Decoder {
    frags: FragTracker,
    /// A copy of an IPv6 packet whose payload length is read as unknown
    /// (see [`Decoder::ip_general`]); kept to be reused.
    relaxed: Vec<u8>,
    /// Counters since creation.
    pub stats: DecodeStats,
}

type R<T> = Result<T, DecodeError>;

#[cold]
fn err<T>(e: DecodeError) -> R<T> {
    Err(e)
}

/// EtherTypes the decoder follows. Glob-imported where matched on, so
/// that no name in a pattern can silently become a binding.
mod ethertype {
    pub(super) const ETH_IPV4: u16 = 0x0800;
    pub(super) const ETH_IPV6: u16 = 0x86dd;
    pub(super) const ETH_VLAN: u16 = 0x8100;
    pub(super) const ETH_QINQ: u16 = 0x88a8;
    pub(super) const ETH_QINQ_OLD: u16 = 0x9100;
    pub(super) const ETH_QINQ_OLD2: u16 = 0x9200;
    pub(super) const ETH_MPLS: u16 = 0x8847;
    pub(super) const ETH_MPLS_MC: u16 = 0x8848;
    pub(super) const ETH_PPPOE: u16 = 0x8864;
    pub(super) const ETH_TEB: u16 = 0x6558;
    pub(super) const ETH_ERSPAN2: u16 = 0x88be;
    pub(super) const ETH_ERSPAN3: u16 = 0x22eb;
    pub(super) const ETH_PPP: u16 = 0x880b;
    pub(super) const ETH_CISCO_METADATA: u16 = 0x8909;
    pub(super) const ETH_NSH: u16 = 0x894f;
    pub(super) const ETH_ARP: u16 = 0x0806;
    pub(super) const ETH_PBB: u16 = 0x88e7;
    pub(super) const ETH_VNTAG: u16 = 0x8926;
    pub(super) const ETH_FABRICPATH: u16 = 0x8903;
}
use ethertype::*;

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

impl Decoder {
    /// A decoder with empty counters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Datagrams waiting for more fragments.
    pub fn fragments_pending(&self) -> usize {
        self.frags.pending()
    }

    /// Decodes one frame, calling `emit` for each IP layer that makes a flow packet.
    pub fn decode(&mut self, pkt: &RawPacket<'_>, emit: &mut impl FnMut(&PacketMeta, &[u8])) {
        self.stats.frames += 1;
        let ctx = Ctx::outer(pkt.data, pkt.ts_ns);
        let d = pkt.data;
        // Ethernet straight to IPv4, the common frame, skips the link layer's dispatch.
        let res = if pkt.link == LinkType::Ethernet && d.len() >= 14 && be16(d, 12) == ETH_IPV4 {
            self.ip(&d[14..], ctx, emit)
        } else {
            self.link(pkt.link, d, ctx, emit)
        };
        match res {
            Ok(true) => {}
            Ok(false) => self.stats.non_ip += 1,
            Err(e) => self.stats.errors[e as usize] += 1,
        }
    }

    /// Decodes a frame as [`Decoder::decode`] does, fragment state
    /// included, but leaves the counters as they were: for a frame that
    /// several workers decode and one of them counts.
    pub fn decode_uncounted(
        &mut self,
        pkt: &RawPacket<'_>,
        emit: &mut impl FnMut(&PacketMeta, &[u8]),
    ) {
        let saved = self.stats.clone();
        self.decode(pkt, emit);
        self.stats = saved;
    }

    /// Decodes and counts a frame, as [`Decoder::decode`] does, only if it
    /// is Ethernet, with at most two VLAN tags, to a plain IP header (IPv4
    /// without options or fragmentation, IPv6 without extension headers)
    /// carrying a plain TCP or UDP header (no tunnel port): such a frame
    /// makes one packet and leaves no state. Any other frame is left alone,
    /// uncounted (`None`).
    /// The file workers try it first: it returns the summary instead of
    /// calling back.
    #[inline(always)]
    pub fn decode_plain(&mut self, pkt: &RawPacket<'_>) -> Option<PacketMeta> {
        self.decode_plain_paired(pkt, &mut 0)
    }

    /// [`Decoder::decode_plain`], which also sets `pair` to the packet's
    /// [`FlowKey::pair_hash`] (its key's hash is built on it): the relay's
    /// walker shares packets out by it, and need not ask [`owner`], which
    /// reads the same headers. (An out parameter: a summary returned inside
    /// a tuple was copied once more.)
    #[inline(always)]
    pub fn decode_plain_paired(
        &mut self,
        pkt: &RawPacket<'_>,
        pair: &mut u64,
    ) -> Option<PacketMeta> {
        let d = pkt.data;
        if pkt.link == LinkType::Ethernet
            && d.len() >= 14
            && be16(d, 12) == ETH_IPV4
            && let Some(h) = PlainIp::v4(&d[14..])
        {
            // The commonest frame of all, untagged IPv4, kept apart: its
            // summary folds the constant context in.
            let t = plain_transport(h.proto, h.l4, h.l4_total)?;
            self.stats.frames += 1;
            return Some(h.meta(&t, &Ctx::outer(d, pkt.ts_ns), pair));
        }
        self.decode_plain_tagged(pkt, pair)
    }
}
