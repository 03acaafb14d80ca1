//! Packet sources.
//!
//! A source hands out [`RawPacket`]s that borrow its internal buffer: the
//! next call reuses that memory, so reading allocates nothing per packet.
//! Sources: capture files ([`pcap_file`], pure Rust), live AF_PACKET
//! sockets with a TPACKET_V3 ring ([`af_packet`], Linux), and libpcap
//! (`libpcap`, behind the `libpcap` cargo feature).

#[cfg(target_os = "linux")]
pub mod af_packet;
#[cfg(feature = "libpcap")]
pub mod libpcap;
pub mod mapped;
pub mod pcap_file;

use std::io;
use std::time::Duration;

use thiserror::Error;

pub use pcap_file::{ByteSource, CaptureError, CaptureReader, PcapWriter};

/// How long a live source waits for a packet before it reports
/// [`Next::Idle`] (its reader then moves its clock to the wall clock).
pub const POLL_TIMEOUT: Duration = Duration::from_millis(100);

/// Geometry of one socket's ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingConfig {
    /// Bytes per block: a power of two, at least 4 KiB. A packet must fit in
    /// one block (with its 48-byte header), so keep it ≥ 128 KiB where GRO
    /// hands up 64 KiB packets.
    pub block_size: u32,
    /// Blocks in the ring.
    pub block_count: u32,
    /// The kernel hands over a block that is not full after this long, so a
    /// quiet link is still read promptly.
    pub block_timeout: Duration,
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            block_size: 1 << 20,
            block_count: 64,
            block_timeout: Duration::from_millis(100),
        }
    }
}

impl RingConfig {
    /// Checks the geometry; names the bad value.
    pub fn validate(&self) -> Result<(), String> {
        if self.block_size < 4096 || !self.block_size.is_power_of_two() {
            return Err(format!(
                "ring block size {} must be a power of two of at least 4096",
                self.block_size
            ));
        }
        if self.block_count == 0 || self.block_count > 65_536 {
            return Err(format!(
                "ring block count {} must be 1-65536",
                self.block_count
            ));
        }
        if u64::from(self.block_size) * u64::from(self.block_count) > 1 << 34 {
            return Err("ring larger than 16 GiB".into());
        }
        let ms = self.block_timeout.as_millis();
        if ms == 0 || ms > 10_000 {
            return Err(format!("ring block timeout {ms} ms must be 1-10000 ms"));
        }
        Ok(())
    }
}

/// How a fanout group spreads packets over its sockets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FanoutMode {
    /// By a symmetric hash of the outermost IP addresses (a classic BPF
    /// program, `af_packet::address_pair_program`): every packet between two hosts
    /// reaches one worker, so tunnels (whose outer flow carries many inner
    /// ones) and IPv6 fragments (which the kernel does not reassemble) give
    /// the same flows for any worker count. The default.
    #[default]
    AddressPair,
    /// The kernel's symmetric flow hash (`PACKET_FANOUT_HASH`): spreads the
    /// flows between two hosts too, but the kernel hashes tunnelled packets
    /// by their inner headers, so one outer tunnel flow can be counted on
    /// several workers, and IPv6 fragments may part from their flow.
    FlowHash,
}

/// Kernel (or libpcap) counters of a live source, summed over its sockets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Packets the kernel handed to the capture, including those it then
    /// dropped for want of buffer space.
    pub packets: u64,
    /// Packets dropped because the ring (or buffer) was full.
    pub drops: u64,
    /// Times an AF_PACKET ring was frozen (every block held by the reader).
    pub freezes: u64,
}

impl KernelStats {
    /// Adds another socket's counters.
    pub fn merge(&mut self, o: &KernelStats) {
        self.packets += o.packets;
        self.drops += o.drops;
        self.freezes += o.freezes;
    }
}

/// A live source could not be opened or read.
#[derive(Debug, Error)]
pub enum LiveError {
    /// The process lacks CAP_NET_RAW.
    #[error(
        "capturing on {interface} needs CAP_NET_RAW: run as root, or grant it with `setcap cap_net_raw,cap_net_admin=eip` on the vigil binary"
    )]
    Permission {
        /// The interface.
        interface: String,
    },
    /// No interface has this name.
    #[error("no such interface: {interface:?} (see `ip link`)")]
    UnknownInterface {
        /// The name given.
        interface: String,
    },
    /// The interface's link layer is not one the sensor decodes.
    #[error(
        "{interface}: link type {hw_type} (ARPHRD_*) is not supported; Ethernet, loopback and raw-IP interfaces are"
    )]
    UnsupportedLink {
        /// The interface.
        interface: String,
        /// Its ARPHRD_* hardware type.
        hw_type: u16,
    },
    /// The ring geometry is invalid.
    #[error("{interface}: {reason}")]
    Ring {
        /// The interface.
        interface: String,
        /// What is wrong.
        reason: String,
    },
    /// The capture filter does not compile or was refused.
    #[error("capture filter {expr:?}: {message}")]
    Filter {
        /// The expression.
        expr: String,
        /// Why.
        message: String,
    },
    /// The source is not in this build.
    #[error("{0}")]
    Unavailable(String),
    /// A system call failed.
    #[error("{interface}: {what}: {source}")]
    Os {
        /// The interface.
        interface: String,
        /// The call.
        what: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
}

impl LiveError {
    /// Whether the error is the operator's to fix (permission, name, filter,
    /// configuration) rather than a failure at run time: exit code 64.
    pub fn is_usage(&self) -> bool {
        !matches!(self, LiveError::Os { .. })
    }
}

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
    /// IEEE 802.11 frames without a radio header.
    Ieee80211,
    /// IEEE 802.11 after a radiotap header.
    Ieee80211Radiotap,
    /// IEEE 802.11 after a Prism or AVS monitor header.
    Ieee80211Prism,
    /// IEEE 802.11 after an AVS monitor header.
    Ieee80211Avs,
    /// Per-Packet Information header, then 802.11 or Ethernet.
    Ppi,
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
            105 => LinkType::Ieee80211,
            127 => LinkType::Ieee80211Radiotap,
            119 => LinkType::Ieee80211Prism,
            163 => LinkType::Ieee80211Avs,
            192 => LinkType::Ppi,
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
            LinkType::Ieee80211 => 105,
            LinkType::Ieee80211Radiotap => 127,
            LinkType::Ieee80211Prism => 119,
            LinkType::Ieee80211Avs => 163,
            LinkType::Ppi => 192,
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

/// What a [`PacketSource`] has next.
#[derive(Debug)]
pub enum Next<'a> {
    /// A packet.
    Packet(RawPacket<'a>),
    /// Nothing for now (a live source's read timeout): the reader moves
    /// packet time to the wall clock so that flows on a quiet link expire.
    Idle,
    /// The end of the input.
    End,
}

/// A source of packets read one at a time: a capture file (through
/// [`CaptureReader`]), or a libpcap capture (live or file). The run modes
/// drive it; it knows nothing of them.
pub trait PacketSource {
    /// The next packet, or why there is none.
    fn next(&mut self) -> Result<Next<'_>, CaptureError>;
    /// Bytes consumed (for progress), if the source knows.
    fn offset(&self) -> u64 {
        0
    }
    /// Kernel counters of a live source.
    fn kernel_stats(&mut self) -> Option<KernelStats> {
        None
    }
    /// Whether the source is live: the stop flag is then checked at every
    /// packet, not every 65,536, since a slow link may never go idle.
    fn is_live(&self) -> bool {
        false
    }
}

impl<S: ByteSource> PacketSource for CaptureReader<S> {
    #[inline]
    fn next(&mut self) -> Result<Next<'_>, CaptureError> {
        match self.next_packet() {
            Ok(Some(p)) => Ok(Next::Packet(p)),
            Ok(None) => Ok(Next::End),
            // A stream with nothing to read for a while (standard input
            // from a live capture): what was read so far stays buffered.
            Err(CaptureError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::WouldBlock =>
            {
                Ok(Next::Idle)
            }
            Err(e) => Err(e),
        }
    }

    fn offset(&self) -> u64 {
        CaptureReader::offset(self)
    }
}
