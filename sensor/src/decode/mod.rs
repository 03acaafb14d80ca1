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

use etherparse::{IpNumber, Ipv6ExtensionSlice, Ipv6Header, LaxIpSlice, TcpHeaderSlice};
use std::collections::VecDeque;

use hashbrown::HashMap;
use vigil_proto::TunnelType;

use crate::capture::{LinkType, RawPacket};
pub mod key;

use key::FlowKey;

/// Deepest nesting of encapsulations followed (VLAN and MPLS excluded).
const MAX_DEPTH: u8 = 6;
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
}

impl DecodeError {
    /// Every reason, in counter order.
    pub const ALL: [DecodeError; 14] = [
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FragKey {
    src: [u8; 16],
    dst: [u8; 16],
    id: u32,
    proto: u8,
    v6: bool,
    vlan: [u16; 2],
}

#[derive(Debug, Default)]
struct FragEntry {
    first_ts: u64,
    /// IP header bytes of the first fragment (for the datagram's size).
    header_len: u32,
    have_first: bool,
    /// Payload bytes received, duplicates excluded.
    received: u32,
    /// Payload length of the whole datagram, once the last fragment arrived.
    total: Option<u32>,
    /// Offsets already received, to ignore duplicates.
    offsets: Vec<u32>,
    /// The payload, placed at its offsets.
    data: Vec<u8>,
}

/// Reassembles fragmented datagrams, bounded in count and bytes.
///
/// The payload is kept so that the completed datagram is decoded like any
/// other packet: its transport header and, for tunnels, the inner packets.
#[derive(Debug)]
pub struct FragTracker {
    map: HashMap<FragKey, FragEntry>,
    /// Datagrams in the order they started, with their start time: the
    /// oldest is found in O(1). Entries whose datagram completed (or was
    /// restarted) no longer match the map and are skipped.
    order: VecDeque<(FragKey, u64)>,
    /// Buffers of completed datagrams, reused.
    pool: Vec<FragEntry>,
    bytes_held: usize,
}

/// Most payload bytes held for incomplete datagrams.
pub const MAX_FRAGMENT_BYTES: usize = 64 << 20;

impl Default for FragTracker {
    fn default() -> Self {
        FragTracker {
            map: HashMap::with_capacity(MAX_FRAGMENTED_DATAGRAMS),
            order: VecDeque::with_capacity(MAX_FRAGMENTED_DATAGRAMS),
            pool: Vec::new(),
            bytes_held: 0,
        }
    }
}

impl FragTracker {
    /// Datagrams still incomplete.
    pub fn pending(&self) -> usize {
        self.map.len()
    }

    fn recycle(&mut self, mut e: FragEntry) {
        self.bytes_held = self.bytes_held.saturating_sub(e.data.capacity());
        if self.pool.len() < 64 {
            e.offsets.clear();
            e.data.clear();
            self.pool.push(e);
        }
    }

    /// Abandons datagrams older than the timeout, then the oldest ones while
    /// the tracker is over its bounds. Constant time per datagram, so a flood
    /// of fragments that never complete cannot slow the decoder down.
    fn make_room(&mut self, now: u64, stats: &mut DecodeStats) {
        while let Some(&(key, started)) = self.order.front() {
            let live = self.map.get(&key).is_some_and(|e| e.first_ts == started);
            let expired = now.saturating_sub(started) > FRAGMENT_TIMEOUT_NS;
            let full =
                self.map.len() >= MAX_FRAGMENTED_DATAGRAMS || self.bytes_held >= MAX_FRAGMENT_BYTES;
            if live && !expired && !full {
                break;
            }
            self.order.pop_front();
            if live && let Some(e) = self.map.remove(&key) {
                if expired {
                    stats.fragments_timed_out += 1;
                } else {
                    stats.fragments_evicted += 1;
                }
                self.recycle(e);
            }
        }
    }

    /// Notes when a datagram started; drops the entries of completed
    /// datagrams once they outnumber the live ones, so the queue stays bounded.
    fn push_order(&mut self, key: FragKey, ts: u64) {
        if self.order.len() >= 4 * MAX_FRAGMENTED_DATAGRAMS {
            let map = &self.map;
            self.order
                .retain(|(k, t)| map.get(k).is_some_and(|e| e.first_ts == *t));
        }
        self.order.push_back((key, ts));
    }

    /// Records one fragment; when it completes its datagram, returns the
    /// entry holding the whole payload (give it back with `recycle`).
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        key: FragKey,
        ts: u64,
        offset: u32,
        len: u32,
        more: bool,
        header_len: u32,
        bytes: &[u8],
        stats: &mut DecodeStats,
    ) -> Option<FragEntry> {
        stats.fragments += 1;
        self.make_room(ts, stats);
        if !self.map.contains_key(&key) {
            let mut e = self.pool.pop().unwrap_or_default();
            e.first_ts = ts;
            e.header_len = header_len;
            e.have_first = false;
            e.received = 0;
            e.total = None;
            self.map.insert(key, e);
            self.push_order(key, ts);
        }
        let e = self.map.get_mut(&key)?;
        if ts.saturating_sub(e.first_ts) > FRAGMENT_TIMEOUT_NS {
            stats.fragments_timed_out += 1;
            e.first_ts = ts;
            self.order.push_back((key, ts));
            e.have_first = false;
            e.received = 0;
            e.total = None;
            e.offsets.clear();
            e.data.clear();
        }
        if e.offsets.contains(&offset) {
            return None;
        }
        e.offsets.push(offset);
        e.received = e.received.saturating_add(len);
        if !more {
            e.total = Some(offset.saturating_add(len));
        }
        if offset == 0 {
            e.have_first = true;
            e.header_len = header_len;
        }
        let start = offset as usize;
        let end = start + bytes.len().min(len as usize);
        if end > e.data.len() {
            let before = e.data.capacity();
            e.data.resize(end, 0);
            self.bytes_held += e.data.capacity() - before;
        }
        e.data[start..end].copy_from_slice(&bytes[..end - start]);
        match e.total {
            Some(total) if e.have_first && e.received >= total => {
                let mut done = self.map.remove(&key)?;
                stats.reassembled += 1;
                done.data.resize(total as usize, 0);
                Some(done)
            }
            _ => None,
        }
    }
}

/// Per-frame state threaded through the layers.
#[derive(Clone, Copy)]
struct Ctx {
    ts: u64,
    vlan: [u16; 2],
    nvlan: u8,
    tunnel: TunnelMeta,
    depth: u8,
}

impl Ctx {
    /// The context of a frame's outermost packet, at time `ts`: no VLAN
    /// yet, no tunnel.
    #[inline(always)]
    fn outer(ts: u64) -> Ctx {
        Ctx {
            ts,
            vlan: [0; 2],
            nvlan: 0,
            tunnel: TunnelMeta::default(),
            depth: 0,
        }
    }

    /// The context of a packet carried in a tunnel of `kind` whose outer
    /// endpoints are in `outer`: fresh VLANs, one level deeper.
    fn inner(&self, kind: TunnelType, outer: TunnelMeta) -> Ctx {
        Ctx {
            ts: self.ts,
            vlan: [0; 2],
            nvlan: 0,
            tunnel: TunnelMeta {
                kind: Some(kind),
                ..outer
            },
            depth: self.depth + 1,
        }
    }
}

/// What follows a transport header.
enum Next<'a> {
    None,
    Ether(&'a [u8], TunnelType),
    Ip(&'a [u8], TunnelType),
    Gre(&'a [u8]),
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

const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const ETH_VLAN: u16 = 0x8100;
const ETH_QINQ: u16 = 0x88a8;
const ETH_QINQ_OLD: u16 = 0x9100;
const ETH_QINQ_OLD2: u16 = 0x9200;
const ETH_MPLS: u16 = 0x8847;
const ETH_MPLS_MC: u16 = 0x8848;
const ETH_PPPOE: u16 = 0x8864;
const ETH_TEB: u16 = 0x6558;
const ETH_ERSPAN2: u16 = 0x88be;
const ETH_ERSPAN3: u16 = 0x22eb;
const ETH_PPP: u16 = 0x880b;
const ETH_CISCO_METADATA: u16 = 0x8909;

/// Whether a TCP option list is well formed: every option fits, and the
/// fixed-size ones (MSS, window scale, SACK-permitted, SACK, timestamps)
/// have their sizes. Wireshark refuses segments that fail this, and so do we.
fn tcp_options_valid(mut o: &[u8]) -> bool {
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
struct PlainTransport {
    sport: u16,
    dport: u16,
    flags: u8,
    zero_window: bool,
    seq: u32,
    payload_len: u32,
}

/// An IP header carrying TCP or UDP directly, read in place: IPv4 without
/// options or fragmentation, or IPv6 without extension headers. The shape
/// most packets on a link have, which [`Decoder::ip`] and
/// [`Decoder::decode_plain`] take without etherparse.
struct PlainIp<'a> {
    proto: u8,
    v6: bool,
    /// The transport header and payload, cut at the IP length (or the end
    /// of the frame when that length is past it, or is below the header or
    /// zero, as etherparse's lax slice cuts it).
    l4: &'a [u8],
    /// The IP length, as `ip_general` takes it (the frame's where the
    /// header's is below its own length or zero), and what of it follows
    /// the IP header.
    ip_bytes: u32,
    l4_total: u32,
    src: [u8; 16],
    dst: [u8; 16],
}

impl<'a> PlainIp<'a> {
    /// Either version.
    #[inline(always)]
    fn of(d: &'a [u8]) -> Option<Self> {
        Self::v4(d).or_else(|| Self::v6(d))
    }

    #[inline(always)]
    fn v4(d: &'a [u8]) -> Option<Self> {
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
    fn v6(d: &'a [u8]) -> Option<Self> {
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
    fn meta(&self, t: &PlainTransport, ctx: &Ctx, pair: &mut u64) -> PacketMeta {
        let (key, src_is_lo) = FlowKey::new(
            self.src, t.sport, self.dst, t.dport, self.proto, self.v6, ctx.vlan,
        );
        *pair = key.pair_hash();
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
        }
    }
}

/// Reads a TCP or UDP header (`proto` 6 or 17) in place when it is whole,
/// valid and carries no tunnel. Both the IPv4 fast path and
/// `Decoder::transport` read these headers through it; on `None`,
/// `transport` names what is wrong or follows the tunnel.
#[inline(always)]
fn plain_transport(proto: u8, l4: &[u8], l4_total: u32) -> Option<PlainTransport> {
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
        })
    } else {
        if l4.len() < 8 {
            return None;
        }
        let (sport, dport) = (be16(l4, 0), be16(l4, 2));
        if matches!(sport, 4789 | 6081) || matches!(dport, 4789 | 6081) {
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
        })
    }
}

/// The final destination named by an IPv6 type 0 or type 2 routing header
/// with segments left, as Wireshark and Zeek key the conversation. `p` is the
/// header after its next-header and length bytes.
fn routing_final_destination(p: &[u8]) -> Option<[u8; 16]> {
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
fn home_address(mut p: &[u8]) -> Option<[u8; 16]> {
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

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Which worker must decode a frame, as far as its headers tell without
/// decoding it: how shared-nothing workers reading one capture file split
/// its packets (`run::shared`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// Every flow packet the frame makes has this address pair
    /// ([`FlowKey::pair_hash`]), and decoding it leaves no state behind (no
    /// fragment): only the worker owning the pair need decode it.
    Pair(u64),
    /// Anything else: tunnels (inner flows have other addresses),
    /// fragments (reassembly is state), IPv6 extension headers (a routing
    /// header or home address changes the key's addresses), frames without
    /// IP and link layers this does not read. Every worker decodes such a
    /// frame and keeps the flow packets whose pair it owns.
    Any,
}

/// The [`Owner`] of a frame. Cheap: a few loads per frame, no decoding.
/// Its promise, checked by the decode fuzz target and the tests: for a
/// frame it calls `Pair(h)`, the decoder emits only packets whose key has
/// pair hash `h`, and touches no fragment state.
#[inline(always)]
pub fn owner(link: LinkType, d: &[u8]) -> Owner {
    // Ethernet straight to IP, the common frame, first.
    if link == LinkType::Ethernet && d.len() >= 14 && be16(d, 12) == ETH_IPV4 {
        return ip_owner(&d[14..]);
    }
    owner_general(link, d)
}

/// [`owner`] of frames other than Ethernet carrying IPv4 directly.
fn owner_general(link: LinkType, d: &[u8]) -> Owner {
    let (mut et, mut off) = match link {
        LinkType::Ethernet if d.len() >= 14 => (be16(d, 12), 14),
        LinkType::LinuxSll if d.len() >= 16 => (be16(d, 14), 16),
        LinkType::LinuxSll2 if d.len() >= 20 => (be16(d, 0), 20),
        LinkType::Raw | LinkType::Ipv4 | LinkType::Ipv6 => return ip_owner(d),
        LinkType::Null | LinkType::Loop if d.len() >= 4 => {
            return if null_carries_ip(d) {
                ip_owner(&d[4..])
            } else {
                Owner::Any
            };
        }
        _ => return Owner::Any,
    };
    // VLAN tags, as `Decoder::ethertype` skips them.
    for _ in 0..4 {
        match et {
            ETH_IPV4 | ETH_IPV6 => return ip_owner(&d[off..]),
            ETH_VLAN | ETH_QINQ | ETH_QINQ_OLD | ETH_QINQ_OLD2 if d.len() >= off + 4 => {
                et = be16(d, off + 2);
                off += 4;
            }
            _ => return Owner::Any,
        }
    }
    Owner::Any
}

/// Whether a BSD null or OpenBSD loopback header (at least 4 bytes) names
/// IPv4 or IPv6: its address family is in the capturing host's byte order
/// (null) or in network order (loop), so a value under 256 read either way.
fn null_carries_ip(d: &[u8]) -> bool {
    let le = u32::from_le_bytes([d[0], d[1], d[2], d[3]]);
    let be = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
    let fam = if le < 0x100 { le } else { be };
    matches!(fam, 2 | 24 | 28 | 30)
}

/// [`owner`] from the IP header on: the version nibble decides, as it does
/// for the decoder.
#[inline(always)]
fn ip_owner(d: &[u8]) -> Owner {
    match d.first().map(|b| b >> 4) {
        Some(4) if d.len() >= 20 => {
            let hl = usize::from(d[0] & 0x0f) * 4;
            // A fragment, or IPsec AH (whose next header may be a tunnel).
            if hl < 20 || be16(d, 6) & 0x3fff != 0 || d[9] == 51 {
                return Owner::Any;
            }
            if !plain_l4(d[9], d.get(hl..)) {
                return Owner::Any;
            }
            let a = u32::from_le_bytes([d[12], d[13], d[14], d[15]]);
            let b = u32::from_le_bytes([d[16], d[17], d[18], d[19]]);
            Owner::Pair(key::pair_hash_v4(a, b))
        }
        // Only headers that end at the transport: extension headers may
        // change the conversation's addresses, or fragment it.
        Some(6) if d.len() >= 40 && matches!(d[6], 6 | 17 | 58) && plain_l4(d[6], d.get(40..)) => {
            let mut a = [0u8; 16];
            let mut b = [0u8; 16];
            a.copy_from_slice(&d[8..24]);
            b.copy_from_slice(&d[24..40]);
            Owner::Pair(key::pair_hash_v6(&a, &b))
        }
        _ => Owner::Any,
    }
}

/// Whether a transport header carries no tunnel the decoder follows. A UDP
/// header too short to name its ports names no tunnel for the decoder
/// either (it reads at most the bytes seen here).
#[inline(always)]
fn plain_l4(proto: u8, l4: Option<&[u8]>) -> bool {
    match proto {
        6 => true,
        4 | 41 | 47 => false,
        17 => match l4 {
            Some(u) if u.len() >= 4 => {
                let (sport, dport) = (be16(u, 0), be16(u, 2));
                !(matches!(sport, 4789 | 6081) || matches!(dport, 4789 | 6081))
            }
            _ => true,
        },
        _ => true,
    }
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
    pub fn decode(&mut self, pkt: &RawPacket<'_>, emit: &mut impl FnMut(&PacketMeta)) {
        self.stats.frames += 1;
        let ctx = Ctx::outer(pkt.ts_ns);
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
    pub fn decode_uncounted(&mut self, pkt: &RawPacket<'_>, emit: &mut impl FnMut(&PacketMeta)) {
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
            return Some(h.meta(&t, &Ctx::outer(pkt.ts_ns), pair));
        }
        self.decode_plain_tagged(pkt, pair)
    }

    /// [`Decoder::decode_plain`] for the frames other than untagged IPv4:
    /// VLAN tags, IPv6.
    #[inline(never)]
    fn decode_plain_tagged(&mut self, pkt: &RawPacket<'_>, pair: &mut u64) -> Option<PacketMeta> {
        let d = pkt.data;
        if !(pkt.link == LinkType::Ethernet && d.len() >= 14) {
            return None;
        }
        let mut ctx = Ctx::outer(pkt.ts_ns);
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

    /// Returns whether an IP layer was reached.
    fn link(
        &mut self,
        link: LinkType,
        d: &[u8],
        ctx: Ctx,
        emit: &mut impl FnMut(&PacketMeta),
    ) -> R<bool> {
        match link {
            LinkType::Ethernet => self.ether(d, ctx, emit),
            LinkType::EthernetMpacket => match d.get(8..) {
                Some(rest) => self.ether(rest, ctx, emit),
                None => err(DecodeError::LinkTruncated),
            },
            LinkType::Raw => self.ip_guess(d, ctx, emit),
            LinkType::Ipv4 | LinkType::Ipv6 => self.ip(d, ctx, emit),
            LinkType::Null | LinkType::Loop => {
                if d.len() < 4 {
                    return err(DecodeError::LinkTruncated);
                }
                if null_carries_ip(d) {
                    self.ip(&d[4..], ctx, emit)
                } else {
                    Ok(false)
                }
            }
            LinkType::LinuxSll => {
                if d.len() < 16 {
                    return err(DecodeError::LinkTruncated);
                }
                self.ethertype(be16(d, 14), &d[16..], ctx, emit)
            }
            LinkType::LinuxSll2 => {
                if d.len() < 20 {
                    return err(DecodeError::LinkTruncated);
                }
                self.ethertype(be16(d, 0), &d[20..], ctx, emit)
            }
            LinkType::Ppp => self.ppp(d, ctx, emit),
            LinkType::CiscoHdlc => {
                if d.len() < 4 {
                    return err(DecodeError::LinkTruncated);
                }
                self.ethertype(be16(d, 2), &d[4..], ctx, emit)
            }
            LinkType::Other(_) => err(DecodeError::UnsupportedLinkType),
        }
    }

    fn ppp(&mut self, d: &[u8], ctx: Ctx, emit: &mut impl FnMut(&PacketMeta)) -> R<bool> {
        let d = if d.len() >= 2 && d[0] == 0xff && d[1] == 0x03 {
            &d[2..]
        } else {
            d
        };
        let Some(&first) = d.first() else {
            return err(DecodeError::LinkTruncated);
        };
        let (proto, rest) = if first & 1 == 1 {
            (u16::from(first), &d[1..])
        } else if d.len() >= 2 {
            (be16(d, 0), &d[2..])
        } else {
            return err(DecodeError::LinkTruncated);
        };
        match proto {
            0x0021 => self.ip(rest, ctx, emit),
            0x0057 => self.ip(rest, ctx, emit),
            0x0281 | 0x0283 => self.mpls(rest, ctx, emit),
            _ => Ok(false),
        }
    }

    fn ether(&mut self, d: &[u8], ctx: Ctx, emit: &mut impl FnMut(&PacketMeta)) -> R<bool> {
        if d.len() < 14 {
            return err(DecodeError::LinkTruncated);
        }
        let et = be16(d, 12);
        if et < 0x0600 {
            // 802.3 with an LLC header: only SNAP carries an EtherType.
            let llc = &d[14..];
            if llc.len() >= 8 && llc[0] == 0xaa && llc[1] == 0xaa && llc[2] == 0x03 {
                return self.ethertype(be16(llc, 6), &llc[8..], ctx, emit);
            }
            return Ok(false);
        }
        self.ethertype(et, &d[14..], ctx, emit)
    }

    fn ethertype(
        &mut self,
        mut et: u16,
        mut d: &[u8],
        mut ctx: Ctx,
        emit: &mut impl FnMut(&PacketMeta),
    ) -> R<bool> {
        loop {
            match et {
                ETH_IPV4 | ETH_IPV6 => return self.ip(d, ctx, emit),
                ETH_VLAN | ETH_QINQ | ETH_QINQ_OLD | ETH_QINQ_OLD2 => {
                    if d.len() < 4 {
                        return err(DecodeError::VlanTruncated);
                    }
                    let vid = be16(d, 0) & 0x0fff;
                    if usize::from(ctx.nvlan) < 2 {
                        ctx.vlan[usize::from(ctx.nvlan)] = vid;
                        ctx.nvlan += 1;
                    }
                    et = be16(d, 2);
                    d = &d[4..];
                }
                ETH_MPLS | ETH_MPLS_MC => return self.mpls(d, ctx, emit),
                ETH_PPPOE => {
                    if d.len() < 8 {
                        return err(DecodeError::LinkTruncated);
                    }
                    return match be16(d, 6) {
                        0x0021 | 0x0057 => self.ip(&d[8..], ctx, emit),
                        _ => Ok(false),
                    };
                }
                _ => return Ok(false),
            }
        }
    }

    fn mpls(&mut self, mut d: &[u8], ctx: Ctx, emit: &mut impl FnMut(&PacketMeta)) -> R<bool> {
        loop {
            if d.len() < 4 {
                return err(DecodeError::MplsTruncated);
            }
            let bottom = d[2] & 1 == 1;
            d = &d[4..];
            if bottom {
                break;
            }
        }
        match d.first().map(|b| b >> 4) {
            Some(4) | Some(6) => self.ip(d, ctx, emit),
            // A pseudowire control word, then an Ethernet frame.
            Some(0) if d.len() >= 4 => self.ether(&d[4..], ctx, emit),
            Some(_) => self.ether(d, ctx, emit),
            None => err(DecodeError::MplsTruncated),
        }
    }

    fn ip_guess(&mut self, d: &[u8], ctx: Ctx, emit: &mut impl FnMut(&PacketMeta)) -> R<bool> {
        match d.first().map(|b| b >> 4) {
            Some(4) | Some(6) => self.ip(d, ctx, emit),
            Some(_) => err(DecodeError::IpInvalid),
            None => err(DecodeError::LinkTruncated),
        }
    }

    fn ip(&mut self, d: &[u8], ctx: Ctx, emit: &mut impl FnMut(&PacketMeta)) -> R<bool> {
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
            emit(&h.meta(&t, &ctx, &mut 0));
            return Ok(true);
        }
        self.ip_general(d, ctx, emit)
    }

    fn ip_general(&mut self, d: &[u8], ctx: Ctx, emit: &mut impl FnMut(&PacketMeta)) -> R<bool> {
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
        let proto = payload.ip_number.0;
        let l4 = payload.payload;
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
                let res = self.upper(
                    proto,
                    &entry.data,
                    total,
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
    fn upper(
        &mut self,
        proto: u8,
        l4: &[u8],
        l4_total: u32,
        ip_bytes: u32,
        src: [u8; 16],
        dst: [u8; 16],
        v6: bool,
        ctx: Ctx,
        emit: &mut impl FnMut(&PacketMeta),
    ) -> R<bool> {
        let outer = TunnelMeta {
            kind: None,
            outer_v6: v6,
            outer_src: src,
            outer_dst: dst,
        };
        let (mut meta, next) = self.transport(proto, l4, l4_total, src, dst, v6, &ctx)?;
        meta.ip_bytes = ip_bytes;
        emit(&meta);

        if !matches!(next, Next::None | Next::Broken(_)) && ctx.depth >= MAX_DEPTH {
            return err(DecodeError::TooDeep);
        }
        let inner = match next {
            Next::None => return Ok(true),
            Next::Broken(e) => err(e),
            Next::Gre(g) => self.gre(g, outer, ctx, emit),
            Next::Ether(e, kind) => self.ether(e, ctx.inner(kind, outer), emit),
            Next::Ip(i, kind) => self.ip(i, ctx.inner(kind, outer), emit),
        };
        // The outer flow was counted: a broken inner packet is still an error,
        // but the frame did reach IP.
        inner.map(|_| true)
    }

    // Inlined into `upper`: returning the packet summary by value costs a
    // copy of it per packet otherwise.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn transport<'a>(
        &mut self,
        proto: u8,
        l4: &'a [u8],
        l4_total: u32,
        src: [u8; 16],
        dst: [u8; 16],
        v6: bool,
        ctx: &Ctx,
    ) -> R<(PacketMeta, Next<'a>)> {
        let mut sport = 0;
        let mut dport = 0;
        let mut tcp_flags = 0;
        let mut zero_window = false;
        let mut tcp_seq = 0;
        let mut icmp = [0u8; 2];
        let mut payload_len = l4_total;
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
                // A payload too short for the tunnel header its port names
                // is still this flow's packet (a client may pick port 4789
                // or 6081); the frame is counted as an error after it.
                let body = &l4[8..];
                let short = Next::Broken(DecodeError::TunnelTruncated);
                if dport == 4789 || (sport == 4789 && dport != 6081) {
                    next = match body {
                        b if b.len() < 8 => short,
                        b if b[0] & 0x08 != 0 => Next::Ether(&b[8..], TunnelType::Vxlan),
                        _ => Next::None,
                    };
                } else if dport == 6081 || sport == 6081 {
                    // The header's length, 8 bytes and its options: past
                    // the payload's end, or no payload, is too short.
                    let hl = body.first().map(|b| 8 + usize::from(b & 0x3f) * 4);
                    next = match hl.and_then(|hl| body.get(hl..)) {
                        Some(inner) => match be16(body, 2) {
                            ETH_TEB => Next::Ether(inner, TunnelType::Geneve),
                            ETH_IPV4 | ETH_IPV6 => Next::Ip(inner, TunnelType::Geneve),
                            _ => Next::None,
                        },
                        _ => short,
                    };
                }
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
            (IpNumber::GRE, _) => next = Next::Gre(l4),
            (IpNumber::IPV4 | IpNumber::IPV6, _) => next = Next::Ip(l4, TunnelType::IpInIp),
            _ => {}
        }
        let (key, src_is_lo) = FlowKey::new(src, sport, dst, dport, proto, v6, ctx.vlan);
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
        };
        Ok((meta, next))
    }

    fn gre(
        &mut self,
        g: &[u8],
        outer: TunnelMeta,
        ctx: Ctx,
        emit: &mut impl FnMut(&PacketMeta),
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
            ETH_IPV4 | ETH_IPV6 => self.ip(body, inner(TunnelType::Gre), emit),
            ETH_TEB => self.ether(body, inner(TunnelType::Gre), emit),
            ETH_MPLS | ETH_MPLS_MC => self.mpls(body, inner(TunnelType::Gre), emit),
            ETH_PPP if version == 1 => self.ppp(body, inner(TunnelType::Gre), emit),
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
                self.ethertype(et, &body[8..], inner(TunnelType::Gre), emit)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{L4, PacketSpec, ip_packet, tcp};

    /// An IPv4 packet from 192.0.2.1 to 198.51.100.2 with 20 bytes of payload.
    fn packet(l4: L4) -> Vec<u8> {
        packet_between("192.0.2.1", "198.51.100.2", l4)
    }

    fn packet_between(src: &str, dst: &str, l4: L4) -> Vec<u8> {
        let spec = PacketSpec::new(src.parse().unwrap(), dst.parse().unwrap(), l4, 20);
        let mut v = Vec::new();
        ip_packet(&spec, &mut v);
        v
    }

    fn udp_packet() -> Vec<u8> {
        packet(L4::Udp {
            sport: 1111,
            dport: 53,
        })
    }

    fn decode(link: LinkType, frame: &[u8]) -> (Vec<PacketMeta>, DecodeStats) {
        let mut d = Decoder::new();
        let mut out = Vec::new();
        let p = RawPacket {
            ts_ns: 1,
            link,
            orig_len: frame.len() as u32,
            data: frame,
        };
        d.decode(&p, &mut |m: &PacketMeta| out.push(*m));
        (out, d.stats)
    }

    /// An IPv4 packet from `src` to `dst` whose payload (of protocol
    /// `proto`) is `payload`, verbatim.
    fn ipv4_with(src: &str, dst: &str, proto: u8, payload: &[u8]) -> Vec<u8> {
        let spec = PacketSpec::new(
            src.parse().unwrap(),
            dst.parse().unwrap(),
            L4::Raw(proto),
            payload.len(),
        );
        let mut ip = Vec::new();
        ip_packet(&spec, &mut ip);
        let n = ip.len() - payload.len();
        ip[n..].copy_from_slice(payload);
        ip
    }

    fn ether(et: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&et.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// IPv4 frames around the decoder's fast path: plain UDP and TCP, UDP
    /// to the tunnel ports, TCP with valid options (an MSS), invalid ones
    /// (an MSS of the wrong size) and a data offset below 5.
    fn plain_v4_near_misses() -> Vec<Vec<u8>> {
        plain_near_misses("192.0.2.1", "198.51.100.2")
    }

    /// The same packets over IPv6.
    fn plain_v6_near_misses() -> Vec<Vec<u8>> {
        plain_near_misses("2001:db8::1", "2001:db8:ff::2")
    }

    fn plain_near_misses(src: &str, dst: &str) -> Vec<Vec<u8>> {
        let v6 = src.contains(':');
        // Where the transport header starts.
        let l4 = if v6 { 40 } else { 20 };
        let tcp_pkt = packet_between(
            src,
            dst,
            L4::Tcp {
                sport: 40000,
                dport: 443,
                flags: tcp::PSH | tcp::ACK,
                seq: 7,
                ack: 9,
            },
        );
        let udp_pkt = packet_between(
            src,
            dst,
            L4::Udp {
                sport: 1111,
                dport: 53,
            },
        );
        let udp_to = |dport: u16| {
            let mut p = udp_pkt.clone();
            p[l4 + 2..l4 + 4].copy_from_slice(&dport.to_be_bytes());
            p
        };
        let tcp_opts = |opts: &[u8], doff: u8| {
            let mut p = tcp_pkt.clone();
            p.splice(l4 + 20..l4 + 20, opts.iter().copied());
            p[l4 + 12] = doff << 4;
            p
        };
        vec![
            udp_pkt.clone(),
            tcp_pkt.clone(),
            udp_to(4789),
            udp_to(6081),
            tcp_opts(&[2, 4, 5, 0xb4], 6),
            tcp_opts(&[2, 3, 5, 0xb4], 6),
            tcp_opts(&[], 4),
        ]
    }

    /// The IPv4 fast path in [`Decoder::ip`] and the general path through
    /// etherparse and `upper` yield the same packets and counters for every
    /// total length field (below the header, exact, past the frame, with
    /// padding), every cut of the frame, UDP (also to the VXLAN and Geneve
    /// ports, which the fast path leaves to `upper`), TCP with valid, invalid
    /// and no options and a bad data offset (where `upper` names the error),
    /// fragments and IP options (which take the general path).
    #[test]
    fn fast_path_agrees_with_etherparse() {
        let run = |general: bool, d: &[u8]| {
            let mut dec = Decoder::new();
            let mut out = Vec::new();
            let ctx = Ctx::outer(5);
            let mut emit = |m: &PacketMeta| out.push(format!("{m:?}"));
            let r = if general {
                dec.ip_general(d, ctx, &mut emit)
            } else {
                dec.ip(d, ctx, &mut emit)
            };
            (r, out, dec.stats)
        };
        let mut fast_taken = 0;
        let bases = plain_v4_near_misses();
        for base in bases {
            let mut padded = base.clone();
            padded.extend_from_slice(&[0xee; 18]);
            for total in [0u16, 8, 19, 20, 21, 27, 28, 40, 52, 60, 200] {
                for frag in [0u16, 0x4000, 0x2000, 0x0001] {
                    for frame in [&base, &padded] {
                        let mut f = frame.clone();
                        f[2..4].copy_from_slice(&total.to_be_bytes());
                        f[6..8].copy_from_slice(&frag.to_be_bytes());
                        for cut in [f.len(), 40, 28, 27, 21, 20, 19, 0] {
                            let d = &f[..cut.min(f.len())];
                            let fast = run(false, d);
                            let general = run(true, d);
                            assert_eq!(
                                fast,
                                general,
                                "total {total} frag {frag:#x} cut {cut} of {}",
                                f.len()
                            );
                            fast_taken += usize::from(d.len() >= 20 && frag & 0x3fff == 0);
                        }
                    }
                }
            }
        }
        assert!(fast_taken > 100);
        // IPv6: every payload length (zero, below the transport header,
        // exact, past the frame, with padding), every cut, and next headers
        // other than TCP and UDP (extension headers, ICMPv6), which the
        // general path takes.
        let mut v6_taken = 0;
        for base in plain_v6_near_misses() {
            let mut padded = base.clone();
            padded.extend_from_slice(&[0xee; 18]);
            let real = be16(&base, 4);
            for len in [0u16, 1, 7, 8, 19, 20, real - 1, real, real + 1, 200] {
                for next in [base[6], 0, 43, 44, 58, 60] {
                    for frame in [&base, &padded] {
                        let mut f = frame.clone();
                        f[4..6].copy_from_slice(&len.to_be_bytes());
                        f[6] = next;
                        for cut in [f.len(), 68, 60, 48, 47, 41, 40, 39, 0] {
                            let d = &f[..cut.min(f.len())];
                            assert_eq!(
                                run(false, d),
                                run(true, d),
                                "length {len} next {next} cut {cut} of {}",
                                f.len()
                            );
                            v6_taken += usize::from(d.len() >= 40 && matches!(next, 6 | 17));
                        }
                    }
                }
            }
        }
        assert!(v6_taken > 100);
        // Options make the header longer: the general path takes them.
        let mut opts = udp_packet();
        opts[0] = 0x46;
        opts.splice(20..20, [1, 1, 1, 0]);
        let total = (opts.len() as u16).to_be_bytes();
        opts[2..4].copy_from_slice(&total);
        assert_eq!(run(false, &opts), run(true, &opts));
        assert_eq!(run(false, &opts).1.len(), 1);
    }

    /// `decode_plain` takes a frame only when decoding it makes one packet
    /// and leaves nothing but the frame's count, and then yields exactly
    /// what `decode` yields and counts; any other frame it leaves alone,
    /// uncounted. Over plain IPv4 and IPv6 frames and their near misses:
    /// tunnel ports, TCP options good and bad, short and long IP lengths,
    /// fragments, extension headers, cuts, IP options, none to three VLAN
    /// tags (802.1Q and QinQ), either EtherType for either IP version,
    /// other link types.
    #[test]
    fn decode_plain_is_decode_or_nothing() {
        let mut ip_options = udp_packet();
        ip_options[0] = 0x46;
        ip_options.splice(20..20, [1, 1, 1, 0]);
        let mut v4 = plain_v4_near_misses();
        v4.push(ip_options);
        // Each base with its length field (IPv4 total length, IPv6 payload
        // length) and fragment bits (IPv4) or next header (IPv6) varied.
        let mut ips: Vec<Vec<u8>> = Vec::new();
        for base in &v4 {
            let mut padded = base.clone();
            padded.extend_from_slice(&[0xee; 18]);
            for total in [0u16, 8, 19, 20, 21, 27, 28, 40, 52, 60, 200] {
                for frag in [0u16, 0x4000, 0x2000, 0x0001] {
                    for ip in [base, &padded] {
                        let mut ip = ip.clone();
                        ip[2..4].copy_from_slice(&total.to_be_bytes());
                        ip[6..8].copy_from_slice(&frag.to_be_bytes());
                        ips.push(ip);
                    }
                }
            }
        }
        for base in plain_v6_near_misses() {
            let mut padded = base.clone();
            padded.extend_from_slice(&[0xee; 18]);
            let real = be16(&base, 4);
            for len in [0u16, 7, 8, 20, real - 1, real, real + 1, 200] {
                for next in [base[6], 0, 44, 58] {
                    for ip in [&base, &padded] {
                        let mut ip = ip.clone();
                        ip[4..6].copy_from_slice(&len.to_be_bytes());
                        ip[6] = next;
                        ips.push(ip);
                    }
                }
            }
        }
        let ether = |ethertype: u16, tags: &[u16], ip: &[u8]| {
            let mut f = vec![0x02; 12];
            for (i, &t) in tags.iter().enumerate() {
                f.extend_from_slice(&t.to_be_bytes());
                f.extend_from_slice(&[0x20, 7 + i as u8]);
            }
            f.extend_from_slice(&ethertype.to_be_bytes());
            f.extend_from_slice(ip);
            f
        };
        let stacks: [&[u16]; 5] = [
            &[],
            &[ETH_VLAN],
            &[ETH_QINQ, ETH_VLAN],
            &[ETH_QINQ_OLD, ETH_VLAN],
            &[ETH_QINQ, ETH_VLAN, ETH_VLAN],
        ];
        let check = crate::fuzzing::check_decode_plain;
        // Taken and left, by IP version.
        let mut counts = [[0usize; 2]; 2];
        for ip in &ips {
            let version = usize::from(ip[0] >> 4 == 6);
            for cut in [ip.len(), 60, 48, 41, 40, 28, 27, 21, 20, 19, 0] {
                let ip = &ip[..cut.min(ip.len())];
                for ethertype in [ETH_IPV4, ETH_IPV6] {
                    for tags in stacks {
                        let taken = check(LinkType::Ethernet, &ether(ethertype, tags, ip));
                        counts[version][usize::from(!taken)] += 1;
                        assert!(!(taken && tags.len() > 2), "three tags go the long way");
                    }
                }
                assert!(!check(LinkType::Raw, ip));
                assert!(!check(LinkType::Ethernet, &ether(0x0806, &[], ip)));
            }
        }
        for (version, [taken, left]) in [(4, counts[0]), (6, counts[1])] {
            assert!(
                taken > 100 && left > 100,
                "IPv{version}: taken {taken}, left {left}"
            );
        }
        assert!(!check(LinkType::Ethernet, &[0x02; 13]));
        // A tag cut short.
        assert!(!check(LinkType::Ethernet, &ether(ETH_VLAN, &[], &[0, 7])));
    }

    #[test]
    fn every_link_type_reaches_ip() {
        let ip = udp_packet();
        let mut sll = vec![0u8; 14];
        sll.extend_from_slice(&0x0800u16.to_be_bytes());
        sll.extend_from_slice(&ip);
        let mut sll2 = 0x0800u16.to_be_bytes().to_vec();
        sll2.extend_from_slice(&[0u8; 18]);
        sll2.extend_from_slice(&ip);
        let mut null_le = 2u32.to_le_bytes().to_vec();
        null_le.extend_from_slice(&ip);
        let mut loop_be = 2u32.to_be_bytes().to_vec();
        loop_be.extend_from_slice(&ip);
        let mut ppp = vec![0xff, 0x03, 0x00, 0x21];
        ppp.extend_from_slice(&ip);
        let mut hdlc = vec![0x0f, 0x00, 0x08, 0x00];
        hdlc.extend_from_slice(&ip);
        let mut mpacket = vec![0x55; 7];
        mpacket.push(0xd5);
        mpacket.extend_from_slice(&ether(0x0800, &ip));
        let mut snap = vec![0u8; 12];
        snap.extend_from_slice(&((ip.len() + 8) as u16).to_be_bytes());
        snap.extend_from_slice(&[0xaa, 0xaa, 0x03, 0, 0, 0, 0x08, 0x00]);
        snap.extend_from_slice(&ip);
        let mut pppoe = vec![0x11, 0, 0, 1, 0, 0, 0x00, 0x21];
        pppoe.extend_from_slice(&ip);
        for (link, frame) in [
            (LinkType::Ethernet, ether(0x0800, &ip)),
            (LinkType::Ethernet, snap),
            (LinkType::Ethernet, ether(0x8864, &pppoe)),
            (LinkType::Raw, ip.clone()),
            (LinkType::Ipv4, ip.clone()),
            (LinkType::LinuxSll, sll),
            (LinkType::LinuxSll2, sll2),
            (LinkType::Null, null_le),
            (LinkType::Loop, loop_be),
            (LinkType::Ppp, ppp),
            (LinkType::CiscoHdlc, hdlc),
            (LinkType::EthernetMpacket, mpacket),
        ] {
            let (metas, stats) = decode(link, &frame);
            assert_eq!(metas.len(), 1, "{link:?}: {stats:?}");
            let k = metas[0].key;
            assert_eq!((k.proto, k.port_lo, k.port_hi), (17, 1111, 53), "{link:?}");
            assert_eq!(metas[0].ip_bytes, 20 + 8 + 20);
        }
        let (metas, stats) = decode(LinkType::Other(147), &ip);
        assert!(metas.is_empty());
        assert_eq!(stats.errors[DecodeError::UnsupportedLinkType as usize], 1);
    }

    #[test]
    fn truncation_at_every_length_is_counted_never_panics() {
        let frame = ether(0x8100, &{
            let mut v = vec![0, 5, 0x08, 0x00];
            v.extend_from_slice(&udp_packet());
            v
        });
        for cut in 0..frame.len() {
            let (metas, stats) = decode(LinkType::Ethernet, &frame[..cut]);
            assert!(metas.is_empty() || cut >= 14 + 4 + 28, "cut {cut}");
            assert_eq!(stats.frames, 1);
            assert!(
                metas.len() + (stats.error_total() as usize) == 1,
                "cut {cut}: {stats:?}"
            );
        }
    }

    /// Non-first fragment (offset 8, more fragments) of datagram `id`.
    fn middle_fragment(id: u16) -> Vec<u8> {
        let mut ip = ipv4_with("192.0.2.1", "198.51.100.2", 17, &[0u8; 16]);
        ip[4..6].copy_from_slice(&id.to_be_bytes());
        ip[6..8].copy_from_slice(&(0x2000u16 | 1).to_be_bytes());
        ip
    }

    #[test]
    fn fragment_floods_stay_bounded_and_old_datagrams_time_out() {
        let mut d = Decoder::new();
        let mut out = 0usize;
        let n = MAX_FRAGMENTED_DATAGRAMS as u64 + 500;
        for i in 0..n {
            // A new datagram each time: the id, and past 65536 the source, change.
            let mut f = middle_fragment(i as u16);
            f[12] = (i >> 16) as u8;
            let p = RawPacket {
                ts_ns: 1_000 + i,
                link: LinkType::Raw,
                orig_len: f.len() as u32,
                data: &f,
            };
            d.decode(&p, &mut |_: &PacketMeta| out += 1);
        }
        assert_eq!(out, 0);
        assert_eq!(d.fragments_pending(), MAX_FRAGMENTED_DATAGRAMS);
        assert_eq!(d.stats.fragments_evicted, 500);
        // Much later, one more fragment: everything older has timed out.
        let f = middle_fragment(7);
        let p = RawPacket {
            ts_ns: 1_000 + n + 31_000_000_000,
            link: LinkType::Raw,
            orig_len: 36,
            data: &f,
        };
        d.decode(&p, &mut |_: &PacketMeta| out += 1);
        assert_eq!(d.fragments_pending(), 1);
        assert_eq!(d.stats.fragments_timed_out, MAX_FRAGMENTED_DATAGRAMS as u64);
    }

    #[test]
    fn tcp_option_layouts() {
        assert!(tcp_options_valid(&[]));
        assert!(tcp_options_valid(&[2, 4, 5, 0xb4, 1, 3, 3, 7, 4, 2, 0, 0]));
        assert!(tcp_options_valid(&[1, 1, 5, 10, 0, 0, 0, 1, 0, 0, 0, 2]));
        assert!(!tcp_options_valid(&[1, 1, 5, 2])); // empty SACK
        assert!(!tcp_options_valid(&[2, 3, 0])); // MSS of the wrong size
        assert!(!tcp_options_valid(&[30, 0])); // zero length
        assert!(!tcp_options_valid(&[30, 9, 0, 0])); // past the header
        assert!(!tcp_options_valid(&[30])); // no length byte
    }

    #[test]
    fn icmp_errors_do_not_open_flows_for_the_quoted_packet() {
        let quoted = udp_packet();
        let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&quoted[..28]);
        let ip = ipv4_with("198.51.100.2", "192.0.2.1", 1, &icmp);
        let (metas, _) = decode(LinkType::Raw, &ip);
        assert_eq!(metas.len(), 1);
        assert_eq!((metas[0].key.proto, metas[0].icmp), (1, [3, 3]));
    }

    fn gre_frame(proto: u16, flags: u16, extra: &[u8], inner: &[u8]) -> Vec<u8> {
        let mut g = flags.to_be_bytes().to_vec();
        g.extend_from_slice(&proto.to_be_bytes());
        g.extend_from_slice(extra);
        g.extend_from_slice(inner);
        ether(0x0800, &ipv4_with("192.0.2.10", "192.0.2.20", 47, &g))
    }

    #[test]
    fn erspan_and_cisco_metadata_carry_inner_flows() {
        let inner_eth = ether(0x0800, &udp_packet());
        // ERSPAN type II: GRE with a sequence number, an 8-byte ERSPAN header.
        let mut e2 = vec![0u8; 8];
        e2.extend_from_slice(&inner_eth);
        let f = gre_frame(0x88be, 0x1000, &[0, 0, 0, 1], &e2);
        // ERSPAN type III with the optional subheader (O bit).
        let mut e3 = vec![0u8; 12];
        e3[11] = 1;
        e3.extend_from_slice(&[0u8; 8]);
        e3.extend_from_slice(&inner_eth);
        let g = gre_frame(0x22eb, 0x1000, &[0, 0, 0, 1], &e3);
        // ERSPAN type I: no sequence number, no ERSPAN header.
        let h = gre_frame(0x88be, 0, &[], &inner_eth);
        // Cisco MetaData in GRE (key present).
        let mut cmd = vec![0x08, 0x00, 0x01, 0x01, 0x00, 0x01, 0x00, 0x00];
        cmd.extend_from_slice(&udp_packet());
        let k = gre_frame(0x8909, 0x2000, &[0, 0, 0, 40], &cmd);
        for (frame, kind) in [
            (f, TunnelType::Erspan),
            (g, TunnelType::Erspan),
            (h, TunnelType::Erspan),
            (k, TunnelType::Gre),
        ] {
            let (metas, stats) = decode(LinkType::Ethernet, &frame);
            assert_eq!(metas.len(), 2, "{kind:?} {stats:?}");
            assert_eq!(metas[0].key.proto, 47);
            assert_eq!((metas[1].key.proto, metas[1].tunnel.kind), (17, Some(kind)));
        }
    }

    #[test]
    fn geneve_and_nesting_limit() {
        // UDP to port 6081, then Geneve (protocol 0x6558: Ethernet).
        let mut udp = vec![0x13, 0x88, 0x17, 0xc1, 0, 0, 0, 0];
        udp.extend_from_slice(&[0x00, 0x00, 0x65, 0x58, 0, 0, 1, 0]);
        udp.extend_from_slice(&ether(0x0800, &udp_packet()));
        let len = udp.len() as u16;
        udp[4..6].copy_from_slice(&len.to_be_bytes());
        let ip = ipv4_with("192.0.2.10", "192.0.2.20", 17, &udp);
        let (metas, _) = decode(LinkType::Raw, &ip);
        assert_eq!(metas.len(), 2);
        assert_eq!(metas[1].tunnel.kind, Some(TunnelType::Geneve));

        // IP in IP ten times: followed to the limit, then counted.
        let mut pkt = udp_packet();
        for _ in 0..10 {
            pkt = ipv4_with("192.0.2.1", "192.0.2.2", 4, &pkt);
        }
        let (metas, stats) = decode(LinkType::Raw, &pkt);
        assert_eq!(metas.len(), usize::from(MAX_DEPTH) + 1);
        assert_eq!(stats.errors[DecodeError::TooDeep as usize], 1);
    }

    /// A UDP packet on the VXLAN or Geneve port whose payload cannot hold
    /// the tunnel header it would be (a client that happened to pick port
    /// 4789 or 6081, or a cut frame) is still a UDP packet of its flow: the
    /// outer flow counts it, and the frame is counted as `tunnel_truncated`.
    #[test]
    fn udp_on_a_tunnel_port_too_short_for_its_header_keeps_the_outer_flow() {
        let cases: [(u16, &[u8]); 5] = [
            (4789, &[]),
            (4789, &[0x08, 0, 0]),
            (6081, &[0, 0, 0x65]),
            // Geneve options of 63 × 4 bytes, in a 12-byte payload.
            (6081, &[0x3f, 0, 0x65, 0x58, 0, 0, 1, 0, 0, 0, 0, 0]),
            // A client port of 6081 to DNS (as the synthesizer's bulk traffic
            // picks client ports), with a payload read as Geneve options.
            (53, &[0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29]),
        ];
        for (dport, payload) in cases {
            let sport: u16 = if dport == 53 { 6081 } else { 40000 };
            let mut udp = [sport.to_be_bytes(), dport.to_be_bytes(), [0, 0], [0, 0]].concat();
            udp.extend_from_slice(payload);
            let len = udp.len() as u16;
            udp[4..6].copy_from_slice(&len.to_be_bytes());
            let ip = ipv4_with("192.0.2.10", "192.0.2.20", 17, &udp);
            let (metas, stats) = decode(LinkType::Raw, &ip);
            assert_eq!(metas.len(), 1, "port {dport}, payload {payload:?}");
            let m = metas[0];
            assert_eq!((m.key.proto, m.tunnel.kind), (17, None));
            // The source sorts lower (by address), so its port is `port_lo`.
            assert_eq!(
                (m.key.port_lo, m.key.port_hi, m.src_is_lo),
                (sport, dport, true)
            );
            assert_eq!(m.payload_len as usize, payload.len());
            assert_eq!(m.ip_bytes as usize, ip.len());
            assert_eq!(stats.errors[DecodeError::TunnelTruncated as usize], 1);
            assert_eq!(stats.error_total(), 1);
        }
    }

    #[test]
    fn ipv6_routing_header_final_destination_and_home_address() {
        let src: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
        let hop: std::net::Ipv6Addr = "2001:db8::99".parse().unwrap();
        let fin: std::net::Ipv6Addr = "2001:db8::2".parse().unwrap();
        let home: std::net::Ipv6Addr = "2001:db8:aaaa::1".parse().unwrap();
        let udp = [0x04, 0x57, 0x00, 0x35, 0x00, 0x08, 0x00, 0x00];
        // Destination options (Home Address), then routing type 0 with one address.
        let mut ext = vec![43, 2, 0xc9, 16];
        ext.extend_from_slice(&home.octets());
        ext.extend_from_slice(&[1, 2, 0, 0]); // PadN to 24 bytes
        ext.extend_from_slice(&[17, 2, 0, 1, 0, 0, 0, 0]);
        ext.extend_from_slice(&fin.octets());
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&((ext.len() + udp.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[60, 64]);
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&hop.octets());
        p.extend_from_slice(&ext);
        p.extend_from_slice(&udp);
        let (metas, stats) = decode(LinkType::Ipv6, &p);
        assert_eq!(metas.len(), 1, "{stats:?}");
        let k = metas[0].key;
        let mut addrs = [k.addr_lo, k.addr_hi];
        addrs.sort();
        let mut want = [home.octets(), fin.octets()];
        want.sort();
        assert_eq!(addrs, want);
    }

    /// An IPv6 payload length too short for the packet's own extension
    /// headers, in a frame that holds them all (a capture in Zeek's test
    /// suite has one): the frame's length stands for it, and the packet is
    /// keyed on its Home Address. Cut short, it is still malformed.
    #[test]
    fn ipv6_payload_length_below_its_extension_headers_reads_the_frame() {
        let src: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
        let dst: std::net::Ipv6Addr = "2001:db8::2".parse().unwrap();
        let home: std::net::Ipv6Addr = "2001:db8:aaaa::1".parse().unwrap();
        let udp = [
            0x75, 0x30, 0x32, 0xc8, 0x00, 0x0c, 0x00, 0x00, b'X', b'X', b'X', b'X',
        ];
        // Destination options, 24 bytes: Pad0 twice, Home Address, PadN.
        let mut ext = vec![17, 2, 0, 0, 0xc9, 16];
        ext.extend_from_slice(&home.octets());
        ext.extend_from_slice(&[1, 0]);
        assert_eq!(ext.len(), 24);
        let whole = (ext.len() + udp.len()) as u16;
        let packet = |payload_len: u16| {
            let mut p = vec![0x60, 0, 0, 0];
            p.extend_from_slice(&payload_len.to_be_bytes());
            p.extend_from_slice(&[60, 64]);
            p.extend_from_slice(&src.octets());
            p.extend_from_slice(&dst.octets());
            p.extend_from_slice(&ext);
            p.extend_from_slice(&udp);
            p
        };
        let home_key = |m: &PacketMeta| {
            let mut addrs = [m.key.addr_lo, m.key.addr_hi];
            addrs.sort();
            let mut want = [home.octets(), dst.octets()];
            want.sort();
            addrs == want && (m.key.port_lo, m.key.port_hi) == (13000, 30000)
        };
        // As stated: the header's length.
        let (metas, _) = decode(LinkType::Ipv6, &packet(whole));
        assert!(home_key(&metas[0]));
        assert_eq!(metas[0].ip_bytes, 40 + u32::from(whole));
        // Stated shorter than the extension headers: the frame's length.
        for short in [1, 12, 23] {
            let p = packet(short);
            let (metas, stats) = decode(LinkType::Ipv6, &p);
            assert_eq!(metas.len(), 1, "payload length {short}: {stats:?}");
            assert!(home_key(&metas[0]), "payload length {short}");
            assert_eq!(metas[0].ip_bytes, p.len() as u32);
            assert_eq!(stats.error_total(), 0);
        }
        // Cut inside the extension headers: nothing to stand for it.
        let mut cut = packet(whole);
        cut.truncate(40 + 20);
        let (metas, stats) = decode(LinkType::Ipv6, &cut);
        assert!(metas.is_empty());
        assert_eq!(stats.error_total(), 1, "{stats:?}");
    }

    #[test]
    fn tcp_flags_seq_and_zero_window() {
        let spec = PacketSpec::new(
            "192.0.2.1".parse().unwrap(),
            "192.0.2.2".parse().unwrap(),
            L4::Tcp {
                sport: 1,
                dport: 2,
                flags: tcp::SYN,
                seq: 4242,
                ack: 0,
            },
            0,
        );
        let mut ip = Vec::new();
        ip_packet(&spec, &mut ip);
        ip[20 + 14] = 0; // window = 0
        ip[20 + 15] = 0;
        let (metas, _) = decode(LinkType::Raw, &ip);
        assert_eq!((metas[0].tcp_flags, metas[0].tcp_seq), (tcp::SYN, 4242));
        assert!(
            !metas[0].tcp_zero_window,
            "a SYN's zero window is not a zero-window event"
        );
    }
}
