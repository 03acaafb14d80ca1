//! Packet sources.
//!
//! A source hands out [`RawPacket`]s that borrow its internal buffer: the
//! next call reuses that memory, so reading allocates nothing per packet.
//! Today the source is a capture file ([`pcap_file`]); live AF_PACKET and
//! libpcap sources join with the live-capture issue.

pub mod pcap_file;

pub use pcap_file::{CaptureError, CaptureReader, PcapWriter};

/// Link-layer header types (the tcpdump `LINKTYPE_*` values) the decoder knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinkType {
    /// BSD loopback: a 4-byte address family in the capturing host's byte order.
    Null,
    /// Ethernet II / 802.3.
    Ethernet,
    /// PPP with or without the HDLC address/control bytes.
    Ppp,
    /// Cisco HDLC.
    CiscoHdlc,
    /// Raw IP, version from the first nibble (DLT_RAW, 12, 14, 101).
    Raw,
    /// OpenBSD loopback: the address family in network byte order.
    Loop,
    /// Linux cooked capture v1.
    LinuxSll,
    /// Linux cooked capture v2.
    LinuxSll2,
    /// Raw IPv4.
    Ipv4,
    /// Raw IPv6.
    Ipv6,
    /// IEEE 802.3br mPackets: 7-byte preamble and SMD before an Ethernet frame.
    EthernetMpacket,
    /// Anything else; frames are counted as unsupported.
    Other(u32),
}

impl LinkType {
    /// Maps a `LINKTYPE_*` number (the low 16 bits; FCS bits are handled by the reader).
    pub fn from_linktype(v: u32) -> LinkType {
        match v {
            0 => LinkType::Null,
            1 => LinkType::Ethernet,
            9 | 50 => LinkType::Ppp,
            104 => LinkType::CiscoHdlc,
            12 | 14 | 101 => LinkType::Raw,
            108 => LinkType::Loop,
            113 => LinkType::LinuxSll,
            276 => LinkType::LinuxSll2,
            228 => LinkType::Ipv4,
            229 => LinkType::Ipv6,
            274 => LinkType::EthernetMpacket,
            other => LinkType::Other(other),
        }
    }

    /// The `LINKTYPE_*` number written into capture files.
    pub fn to_linktype(self) -> u32 {
        match self {
            LinkType::Null => 0,
            LinkType::Ethernet => 1,
            LinkType::Ppp => 9,
            LinkType::CiscoHdlc => 104,
            LinkType::Raw => 101,
            LinkType::Loop => 108,
            LinkType::LinuxSll => 113,
            LinkType::LinuxSll2 => 276,
            LinkType::Ipv4 => 228,
            LinkType::Ipv6 => 229,
            LinkType::EthernetMpacket => 274,
            LinkType::Other(v) => v,
        }
    }
}

/// One captured frame, borrowed from the source's buffer.
#[derive(Clone, Copy, Debug)]
pub struct RawPacket<'a> {
    /// Capture time, ns since the Unix epoch.
    pub ts_ns: u64,
    /// Link type of the interface it was captured on.
    pub link: LinkType,
    /// Length on the wire (may exceed `data.len()` when the snaplen cut it).
    pub orig_len: u32,
    /// The captured bytes.
    pub data: &'a [u8],
}
