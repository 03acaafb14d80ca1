//! Capture files: pcap (µs and ns, both byte orders) and pcapng (any number
//! of sections and interfaces, each with its own link type and timestamp
//! resolution), read in pure Rust.
//!
//! The reader keeps one large buffer (1 MiB, grown only for a pcapng block
//! that is larger) and hands out packets that borrow it, so reading
//! allocates nothing per packet. Damage is reported with the file name and
//! the byte offset of the record or block that is damaged; every packet
//! before it has already been returned.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::{LinkType, RawPacket};

/// Largest packet accepted in a pcap record, as Wireshark's limit.
pub const MAX_PACKET_LEN: u32 = 262_144;
/// Largest pcapng block accepted (Wireshark's limit as well).
pub const MAX_BLOCK_LEN: u32 = 16 * 1024 * 1024;
const BUF_LEN: usize = 1 << 20;

/// A capture file could not be read.
#[derive(Debug, Error)]
pub enum CaptureError {
    /// Opening or reading failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The file is not a capture file this reader knows.
    #[error("{path}: not a pcap or pcapng file (magic number {magic:#010x})")]
    UnknownFormat {
        /// The file.
        path: PathBuf,
        /// The first four bytes, big-endian.
        magic: u32,
    },
    /// The file ends inside a header, record or block.
    #[error(
        "{path}: truncated at byte offset {offset}: {what} needs {needed} bytes, the file has {available}"
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Offset of the damaged record or block.
        offset: u64,
        /// What was being read.
        what: &'static str,
        /// Bytes it needs.
        needed: u64,
        /// Bytes the file still has.
        available: u64,
    },
    /// libpcap refused the file or a packet (the `libpcap` reader).
    #[error("{path}: libpcap: {message}")]
    Libpcap {
        /// The file or interface.
        path: PathBuf,
        /// libpcap's message.
        message: String,
    },
    /// A header, record or block is inconsistent.
    #[error("{path}: corrupt at byte offset {offset}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Offset of the damaged record or block.
        offset: u64,
        /// What is wrong.
        reason: Corruption,
    },
}

impl CaptureError {
    /// Byte offset of the damage, for format errors.
    pub fn offset(&self) -> Option<u64> {
        match self {
            CaptureError::Truncated { offset, .. } | CaptureError::Corrupt { offset, .. } => {
                Some(*offset)
            }
            _ => None,
        }
    }
}

/// What is wrong in a corrupt capture file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corruption {
    /// A pcap record claims more bytes than any packet may have.
    PacketTooLarge {
        /// Captured length claimed by the record.
        caplen: u32,
        /// The limit.
        max: u32,
    },
    /// A pcapng block length is too small, unaligned or too large.
    BadBlockLength(u32),
    /// The trailing length of a pcapng block differs from the leading one.
    BlockLengthMismatch {
        /// Leading length.
        leading: u32,
        /// Trailing length.
        trailing: u32,
    },
    /// A packet block's captured length exceeds its block.
    PacketExceedsBlock {
        /// Captured length claimed.
        caplen: u32,
    },
    /// A packet block names an interface no IDB described.
    UnknownInterface(u32),
    /// A pcapng file does not start with a section header block.
    MissingSectionHeader,
    /// A section header's byte-order magic is wrong.
    BadByteOrderMagic(u32),
    /// The pcap header names an unsupported version.
    UnsupportedVersion(u16, u16),
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Corruption::PacketTooLarge { caplen, max } => {
                write!(
                    f,
                    "record claims a {caplen}-byte packet, larger than the maximum {max}"
                )
            }
            Corruption::BadBlockLength(l) => write!(f, "invalid block length {l}"),
            Corruption::BlockLengthMismatch { leading, trailing } => {
                write!(
                    f,
                    "block length {leading} does not match its trailing length {trailing}"
                )
            }
            Corruption::PacketExceedsBlock { caplen } => {
                write!(f, "captured length {caplen} exceeds its block")
            }
            Corruption::UnknownInterface(i) => write!(f, "packet names undeclared interface {i}"),
            Corruption::MissingSectionHeader => f.write_str("no section header block"),
            Corruption::BadByteOrderMagic(m) => write!(f, "bad byte-order magic {m:#010x}"),
            Corruption::UnsupportedVersion(a, b) => write!(f, "unsupported pcap version {a}.{b}"),
        }
    }
}

/// Where a capture reader gets its bytes: a window that can be refilled,
/// with absolute offsets for error messages.
pub trait ByteSource {
    /// Makes at least `need` bytes available unless the input ends first;
    /// returns how many are available.
    fn fill(&mut self, need: usize) -> io::Result<usize>;
    /// The bytes available now.
    fn available(&self) -> &[u8];
    /// Drops `n` available bytes.
    fn consume(&mut self, n: usize);
    /// Offset of the first available byte in the file.
    fn offset(&self) -> u64;
}

/// Reads through one large buffer (1 MiB, grown only for larger blocks).
#[derive(Debug)]
pub struct ReadSource<R> {
    inner: R,
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    /// File offset of `buf[0]`.
    base: u64,
    eof: bool,
}

impl<R: Read> ReadSource<R> {
    fn new(inner: R) -> Self {
        ReadSource {
            inner,
            buf: vec![0; BUF_LEN],
            pos: 0,
            end: 0,
            base: 0,
            eof: false,
        }
    }
}

impl<R: Read> ByteSource for ReadSource<R> {
    fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    fn available(&self) -> &[u8] {
        &self.buf[self.pos..self.end]
    }

    fn fill(&mut self, need: usize) -> io::Result<usize> {
        if self.end - self.pos >= need || self.eof {
            return Ok(self.end - self.pos);
        }
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.end, 0);
            self.base += self.pos as u64;
            self.end -= self.pos;
            self.pos = 0;
        }
        if need > self.buf.len() {
            self.buf.resize(need.next_power_of_two(), 0);
        }
        while self.end < need {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(self.end - self.pos)
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
    }
}

/// A capture already in memory: packets borrow it directly, nothing is copied.
#[derive(Debug)]
pub struct SliceSource<'a> {
    data: &'a [u8],
    pos: usize,
}

impl ByteSource for SliceSource<'_> {
    fn fill(&mut self, _need: usize) -> io::Result<usize> {
        Ok(self.data.len() - self.pos)
    }

    fn available(&self) -> &[u8] {
        &self.data[self.pos..]
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
    }

    fn offset(&self) -> u64 {
        self.pos as u64
    }
}

/// How far ahead of its position a [`PcapWalk`] asks for bytes.
const SLICE_PREFETCH_AHEAD: usize = 4096;

#[derive(Clone, Copy, Debug)]
struct Interface {
    link: LinkType,
    /// Multiply raw timestamps by `mul` and divide by `div` to get ns.
    mul: u64,
    div: u64,
    /// Binary resolution exponent, when the resolution is 2^-n.
    bin_exp: Option<u8>,
    offset_ns: i64,
    fcs_len: u32,
    snaplen: u32,
}

impl Interface {
    fn ts_ns(&self, raw: u64) -> u64 {
        let ns = match self.bin_exp {
            Some(e) => ((u128::from(raw) * 1_000_000_000) >> e) as u64,
            None => raw.saturating_mul(self.mul) / self.div,
        };
        ns.saturating_add_signed(self.offset_ns)
    }
}

fn decimal_res(exp: u8) -> (u64, u64) {
    if exp <= 9 {
        (10u64.pow(u32::from(9 - exp)), 1)
    } else {
        (1, 10u64.pow(u32::from(exp.min(19) - 9)))
    }
}

enum Format {
    Pcap {
        swapped: bool,
        iface: Interface,
    },
    Pcapng {
        swapped: bool,
        ifaces: Vec<Interface>,
    },
}

/// Reads pcap and pcapng files.
pub struct CaptureReader<S> {
    input: S,
    format: Format,
    path: PathBuf,
    /// Bytes of the previously returned record, consumed on the next call.
    pending: usize,
    packets: u64,
    last_ts: u64,
}

impl<S> fmt::Debug for CaptureReader<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaptureReader")
            .field("path", &self.path)
            .field("packets", &self.packets)
            .finish()
    }
}

impl CaptureReader<ReadSource<File>> {
    /// Opens a capture file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, CaptureError> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|source| CaptureError::Io {
            path: path.to_owned(),
            source,
        })?;
        CaptureReader::new(file, path)
    }
}

fn u16_at(b: &[u8], swapped: bool) -> u16 {
    let v = u16::from_le_bytes([b[0], b[1]]);
    if swapped { v.swap_bytes() } else { v }
}

fn u32_at(b: &[u8], swapped: bool) -> u32 {
    let v = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    if swapped { v.swap_bytes() } else { v }
}

const PCAPNG_SHB: u32 = 0x0A0D_0D0A;
const PCAPNG_BOM: u32 = 0x1A2B_3C4D;

impl<R: Read> CaptureReader<ReadSource<R>> {
    /// Reads the file header from `inner`; `path` names the file in errors.
    pub fn new(inner: R, path: impl Into<PathBuf>) -> Result<Self, CaptureError> {
        CaptureReader::with_source(ReadSource::new(inner), path.into())
    }
}

impl<'a> CaptureReader<SliceSource<'a>> {
    /// Reads a capture held in memory without copying its packets.
    pub fn from_slice(data: &'a [u8], name: impl Into<PathBuf>) -> Result<Self, CaptureError> {
        CaptureReader::with_source(SliceSource { data, pos: 0 }, name.into())
    }

    /// [`CaptureReader::next_packet`], the packet borrowing the capture
    /// rather than the reader. The same packets and errors; a whole record
    /// of a pcap file in the machine's byte order, the common case by far,
    /// is read by a [`PcapWalk`] of one step, everything else by
    /// `next_packet`.
    #[inline]
    pub fn next_in_slice(&mut self) -> Result<Option<RawPacket<'a>>, CaptureError> {
        if let Some(mut walk) = self.walk()
            && let Some(p) = walk.next_packet()
        {
            self.end_walk(walk, 1);
            return Ok(Some(p));
        }
        self.next_packet_in()
    }

    /// `next_packet`, the packet re-borrowed from the capture.
    #[inline(never)]
    fn next_packet_in(&mut self) -> Result<Option<RawPacket<'a>>, CaptureError> {
        let data = self.input.data;
        let Some(p) = self.next_packet()? else {
            return Ok(None);
        };
        // The packet lies in `data`: the same bytes, under the capture's lifetime.
        let start = p.data.as_ptr() as usize - data.as_ptr() as usize;
        let frame = &data[start..start + p.data.len()];
        Ok(Some(RawPacket { data: frame, ..p }))
    }

    /// A walk over the records that follow, for a pcap file in the
    /// machine's byte order (`None` for any other capture): the common
    /// case of [`CaptureReader::next_in_slice`] in a value of its own, which
    /// a loop can keep in registers. Hand it back with
    /// [`CaptureReader::end_walk`] before reading on.
    pub fn walk(&mut self) -> Option<PcapWalk<'a>> {
        match &self.format {
            Format::Pcap {
                swapped: false,
                iface,
            } if cfg!(target_endian = "little") => Some(PcapWalk {
                data: self.input.data,
                pos: self.input.pos + self.pending,
                max: iface.snaplen.clamp(MAX_PACKET_LEN, MAX_BLOCK_LEN) as usize,
                mul: iface.mul,
                fcs: iface.fcs_len as usize,
                link: iface.link,
                ahead: self.input.pos + self.pending,
            }),
            _ => None,
        }
    }

    /// Moves a reader that offers [`CaptureReader::walk`] to the record
    /// starting at byte `offset` (one a walk found, or
    /// [`PcapWalk::find_record`] guessed), so that several readers of one
    /// capture can share its records out. The count of packets returned
    /// goes on from where it was.
    pub fn seek_record(&mut self, offset: u64) {
        debug_assert!(matches!(self.format, Format::Pcap { .. }));
        self.input.pos = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.input.data.len());
        self.pending = 0;
    }

    /// Takes back a [`PcapWalk`] that returned `packets` records: the reader
    /// goes on after the last of them.
    pub fn end_walk(&mut self, walk: PcapWalk<'a>, packets: u64) {
        self.input.pos = walk.pos;
        self.pending = 0;
        self.packets += packets;
    }
}

/// The records of a pcap file in memory, walked in place: see
/// [`CaptureReader::walk`].
#[derive(Clone, Debug)]
pub struct PcapWalk<'a> {
    data: &'a [u8],
    pos: usize,
    max: usize,
    mul: u64,
    fcs: usize,
    link: LinkType,
    /// Bytes up to here have been asked for (see `next_packet`).
    ahead: usize,
}

impl<'a> PcapWalk<'a> {
    /// The interface's link type: every record has it.
    pub fn link(&self) -> LinkType {
        self.link
    }

    /// The next record, or `None` at the first one that is not whole: the
    /// end of the file, or damage, which the reader then reads and names.
    #[inline(always)]
    pub fn next_packet(&mut self) -> Option<RawPacket<'a>> {
        let pos = self.pos;
        let (h, end) = self.record_at(pos)?;
        let le = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let caplen = end - pos - 16;
        let frame = &self.data[pos + 16..end];
        let ts_ns = (u64::from(le(0)) * 1_000_000_000).saturating_add(u64::from(le(4)) * self.mul);
        self.pos = end;
        // Where the next records start is known only once each is read, so
        // the hardware cannot run ahead of the walk, nor does it past a
        // page: every cache line up to a little ahead is asked for, as a
        // copy would read them all, but without the copy.
        while self.ahead < end + SLICE_PREFETCH_AHEAD {
            crate::cpu::prefetch(self.data.as_ptr().wrapping_add(self.ahead));
            self.ahead += 64;
        }
        Some(RawPacket {
            ts_ns,
            link: self.link,
            orig_len: le(12),
            data: &frame[..caplen.saturating_sub(self.fcs)],
        })
    }

    /// The header of the whole record at `pos` and where the record ends;
    /// `None` where [`PcapWalk::next_packet`] stops.
    #[inline(always)]
    fn record_at(&self, pos: usize) -> Option<(&'a [u8; 16], usize)> {
        let h: &[u8; 16] = self.data.get(pos..pos + 16)?.try_into().ok()?;
        let caplen = u32::from_le_bytes([h[8], h[9], h[10], h[11]]) as usize;
        // No overflow: `pos` is within the slice, `caplen` at most 16 MiB.
        let end = pos + 16 + caplen;
        if caplen > self.max || end > self.data.len() {
            return None;
        }
        Some((h, end))
    }

    /// The byte offset of the next record.
    pub fn offset(&self) -> u64 {
        self.pos as u64
    }

    /// The whole record at byte `offset` (one this walk, or another of the
    /// same capture, returned), as [`PcapWalk::next_packet`] returned it.
    #[inline(always)]
    pub fn packet_at(&self, offset: u64) -> Option<RawPacket<'a>> {
        let pos = usize::try_from(offset).ok()?;
        let (h, end) = self.record_at(pos)?;
        let le = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let frame = &self.data[pos + 16..end];
        Some(RawPacket {
            ts_ns: (u64::from(le(0)) * 1_000_000_000).saturating_add(u64::from(le(4)) * self.mul),
            link: self.link,
            orig_len: le(12),
            data: &frame[..frame.len().saturating_sub(self.fcs)],
        })
    }

    /// The capture's bytes from `offset` on, for asking for them ahead.
    pub fn bytes_at(&self, offset: u64) -> *const u8 {
        self.data
            .as_ptr()
            .wrapping_add(usize::try_from(offset).unwrap_or(usize::MAX))
    }

    /// The first offset in `from..until` where records seem to start: a
    /// guess, for starting a walk in the middle of a capture, that whoever
    /// walks there from the start must confirm. It asks that the header
    /// there and the next few (or those up to the end) be whole records
    /// whose lengths and timestamps are those of a real capture's.
    pub fn find_record(&self, from: u64, until: u64) -> Option<u64> {
        const CHAIN: usize = 4;
        let frac_max: u32 = if self.mul == 1 {
            1_000_000_000
        } else {
            1_000_000
        };
        let le = |h: &[u8; 16], i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let until = usize::try_from(until)
            .unwrap_or(usize::MAX)
            .min(self.data.len());
        let from = usize::try_from(from).unwrap_or(usize::MAX);
        (from..until)
            .find(|&p| {
                let mut at = p;
                let mut secs = None;
                for _ in 0..CHAIN {
                    if at == self.data.len() {
                        return true;
                    }
                    let Some((h, end)) = self.record_at(at) else {
                        return false;
                    };
                    let (sec, caplen) = (le(h, 0), le(h, 8));
                    let close = secs.is_none_or(|s: u32| s.abs_diff(sec) <= 86_400);
                    if le(h, 4) >= frac_max || le(h, 12) < caplen || !close {
                        return false;
                    }
                    secs = Some(sec);
                    at = end;
                }
                true
            })
            .map(|p| p as u64)
    }
}

impl<S: ByteSource> CaptureReader<S> {
    fn with_source(mut input: S, path: PathBuf) -> Result<Self, CaptureError> {
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| CaptureError::Io { path, source }
        };
        let n = input.fill(24).map_err(io_err(&path))?;
        if n < 4 {
            return Err(CaptureError::Truncated {
                path,
                offset: 0,
                what: "file header",
                needed: 24,
                available: n as u64,
            });
        }
        let head = input.available();
        let magic_be = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let magic_le = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let mut reader = match (magic_le, magic_be) {
            (0xa1b2_c3d4, _) | (0xa1b2_3c4d, _) | (_, 0xa1b2_c3d4) | (_, 0xa1b2_3c4d) => {
                if n < 24 {
                    return Err(CaptureError::Truncated {
                        path,
                        offset: 0,
                        what: "pcap file header",
                        needed: 24,
                        available: n as u64,
                    });
                }
                let swapped = !(magic_le == 0xa1b2_c3d4 || magic_le == 0xa1b2_3c4d);
                let nanos = magic_le == 0xa1b2_3c4d || magic_be == 0xa1b2_3c4d;
                let major = u16_at(&head[4..], swapped);
                let minor = u16_at(&head[6..], swapped);
                if major != 2 {
                    return Err(CaptureError::Corrupt {
                        path,
                        offset: 4,
                        reason: Corruption::UnsupportedVersion(major, minor),
                    });
                }
                let snaplen = u32_at(&head[16..], swapped);
                let lt = u32_at(&head[20..], swapped);
                // Bits 28..31 give the FCS length in 16-bit words when bit 26 is set.
                let fcs_len = if lt & 0x0400_0000 != 0 {
                    (lt >> 28) * 2
                } else {
                    0
                };
                let (mul, div) = if nanos { (1, 1) } else { (1000, 1) };
                let iface = Interface {
                    link: LinkType::from_linktype(lt & 0xffff),
                    mul,
                    div,
                    bin_exp: None,
                    offset_ns: 0,
                    fcs_len,
                    snaplen,
                };
                input.consume(24);
                CaptureReader {
                    input,
                    format: Format::Pcap { swapped, iface },
                    path,
                    pending: 0,
                    packets: 0,
                    last_ts: 0,
                }
            }
            (PCAPNG_SHB, _) => CaptureReader {
                input,
                format: Format::Pcapng {
                    swapped: false,
                    ifaces: Vec::new(),
                },
                path,
                pending: 0,
                packets: 0,
                last_ts: 0,
            },
            _ => {
                return Err(CaptureError::UnknownFormat {
                    path,
                    magic: magic_be,
                });
            }
        };
        if matches!(reader.format, Format::Pcapng { .. }) {
            // Read the first section header eagerly so that a broken one is
            // reported before any packet.
            reader.read_pcapng_block(true)?;
        }
        Ok(reader)
    }

    /// The file this reader reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes consumed so far (the offset of the next record).
    pub fn offset(&self) -> u64 {
        self.input.offset() + self.pending as u64
    }

    /// Packets returned so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    fn io(&self, source: io::Error) -> CaptureError {
        CaptureError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn corrupt(&self, offset: u64, reason: Corruption) -> CaptureError {
        CaptureError::Corrupt {
            path: self.path.clone(),
            offset,
            reason,
        }
    }

    fn truncated(&self, what: &'static str, needed: usize, available: usize) -> CaptureError {
        CaptureError::Truncated {
            path: self.path.clone(),
            offset: self.input.offset(),
            what,
            needed: needed as u64,
            available: available as u64,
        }
    }

    /// The next packet, or `None` at the end of the file.
    pub fn next_packet(&mut self) -> Result<Option<RawPacket<'_>>, CaptureError> {
        self.input.consume(std::mem::take(&mut self.pending));
        match self.format {
            Format::Pcap { .. } => self.next_pcap(),
            Format::Pcapng { .. } => loop {
                match self.read_pcapng_block(false)? {
                    BlockResult::Eof => return Ok(None),
                    BlockResult::Skipped => continue,
                    BlockResult::Packet {
                        start,
                        len,
                        ts_ns,
                        link,
                        orig_len,
                    } => {
                        self.packets += 1;
                        let data = &self.input.available()[start..start + len];
                        return Ok(Some(RawPacket {
                            ts_ns,
                            link,
                            orig_len,
                            data,
                        }));
                    }
                }
            },
        }
    }

    fn next_pcap(&mut self) -> Result<Option<RawPacket<'_>>, CaptureError> {
        let Format::Pcap { swapped, iface } = &self.format else {
            unreachable!()
        };
        let (swapped, link, mul, fcs_len) = (*swapped, iface.link, iface.mul, iface.fcs_len);
        // A larger snaplen raises the limit, never past what any block may hold.
        let max = iface.snaplen.clamp(MAX_PACKET_LEN, MAX_BLOCK_LEN);
        // The buffer mostly holds the whole record already: the source is
        // asked for more only when it does not.
        let mut n = self.input.available().len();
        if n < 16 {
            n = self.input.fill(16).map_err(|e| self.io(e))?;
            if n == 0 {
                return Ok(None);
            }
            if n < 16 {
                return Err(self.truncated("record header", 16, n));
            }
        }
        let h = &self.input.available()[..16];
        let sec = u32_at(h, swapped);
        let frac = u32_at(&h[4..], swapped);
        let caplen = u32_at(&h[8..], swapped);
        let orig_len = u32_at(&h[12..], swapped);
        if caplen > max {
            return Err(self.corrupt(
                self.input.offset(),
                Corruption::PacketTooLarge { caplen, max },
            ));
        }
        let total = 16 + caplen as usize;
        if n < total {
            n = self.input.fill(total).map_err(|e| self.io(e))?;
            if n < total {
                return Err(self.truncated("packet record", total, n));
            }
        }
        let ts_ns = (u64::from(sec) * 1_000_000_000).saturating_add(u64::from(frac) * mul);
        self.pending = total;
        self.packets += 1;
        self.last_ts = ts_ns;
        let data = &self.input.available()[16..total];
        let data = &data[..data.len().saturating_sub(fcs_len as usize)];
        Ok(Some(RawPacket {
            ts_ns,
            link,
            orig_len,
            data,
        }))
    }

    fn read_pcapng_block(&mut self, first: bool) -> Result<BlockResult, CaptureError> {
        let n = self.input.fill(12).map_err(|e| self.io(e))?;
        if n == 0 && !first {
            return Ok(BlockResult::Eof);
        }
        if n < 12 {
            return Err(self.truncated("block header", 12, n));
        }
        let offset = self.input.offset();
        let head = self.input.available();
        let btype_raw = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let Format::Pcapng { mut swapped, .. } = self.format else {
            unreachable!()
        };
        if btype_raw == PCAPNG_SHB {
            let bom_le = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
            swapped = match bom_le {
                PCAPNG_BOM => false,
                v if v.swap_bytes() == PCAPNG_BOM => true,
                v => return Err(self.corrupt(offset + 8, Corruption::BadByteOrderMagic(v))),
            };
            if let Format::Pcapng { swapped: s, ifaces } = &mut self.format {
                *s = swapped;
                ifaces.clear();
            }
        } else if first {
            return Err(self.corrupt(offset, Corruption::MissingSectionHeader));
        }
        let head = self.input.available();
        let btype = u32_at(head, swapped);
        let blen = u32_at(&head[4..], swapped);
        if blen < 12 || !blen.is_multiple_of(4) || blen > MAX_BLOCK_LEN {
            return Err(self.corrupt(offset, Corruption::BadBlockLength(blen)));
        }
        let total = blen as usize;
        let n = self.input.fill(total).map_err(|e| self.io(e))?;
        if n < total {
            return Err(self.truncated("block", total, n));
        }
        let block = &self.input.available()[..total];
        let trailing = u32_at(&block[total - 4..], swapped);
        if trailing != blen {
            return Err(self.corrupt(
                offset,
                Corruption::BlockLengthMismatch {
                    leading: blen,
                    trailing,
                },
            ));
        }
        let body = &block[8..total - 4];
        let result = match btype {
            // Interface description block.
            1 => {
                if body.len() < 8 {
                    return Err(self.corrupt(offset, Corruption::BadBlockLength(blen)));
                }
                let iface = parse_idb(body, swapped);
                if let Format::Pcapng { ifaces, .. } = &mut self.format {
                    ifaces.push(iface);
                }
                BlockResult::Skipped
            }
            // Enhanced (6) and obsolete (2) packet blocks.
            6 | 2 => {
                if body.len() < 20 {
                    return Err(self.corrupt(offset, Corruption::BadBlockLength(blen)));
                }
                let (if_id, ts_high, ts_low) = if btype == 6 {
                    (
                        u32_at(body, swapped),
                        u32_at(&body[4..], swapped),
                        u32_at(&body[8..], swapped),
                    )
                } else {
                    (
                        u32::from(u16_at(body, swapped)),
                        u32_at(&body[4..], swapped),
                        u32_at(&body[8..], swapped),
                    )
                };
                let caplen = u32_at(&body[12..], swapped);
                let orig_len = u32_at(&body[16..], swapped);
                if caplen as usize > body.len() - 20 {
                    return Err(self.corrupt(offset, Corruption::PacketExceedsBlock { caplen }));
                }
                let Some(iface) = self.iface(if_id) else {
                    return Err(self.corrupt(offset, Corruption::UnknownInterface(if_id)));
                };
                let ts_ns = iface.ts_ns((u64::from(ts_high) << 32) | u64::from(ts_low));
                self.last_ts = ts_ns;
                let len = (caplen as usize).saturating_sub(iface.fcs_len as usize);
                BlockResult::Packet {
                    start: 28,
                    len,
                    ts_ns,
                    link: iface.link,
                    orig_len,
                }
            }
            // Simple packet block: no timestamp, the previous one is reused.
            3 => {
                if body.len() < 4 {
                    return Err(self.corrupt(offset, Corruption::BadBlockLength(blen)));
                }
                let Some(iface) = self.iface(0) else {
                    return Err(self.corrupt(offset, Corruption::UnknownInterface(0)));
                };
                let orig_len = u32_at(body, swapped);
                let mut caplen = (orig_len as usize).min(body.len() - 4);
                if iface.snaplen != 0 {
                    caplen = caplen.min(iface.snaplen as usize);
                }
                BlockResult::Packet {
                    start: 12,
                    len: caplen,
                    ts_ns: self.last_ts,
                    link: iface.link,
                    orig_len,
                }
            }
            _ => BlockResult::Skipped,
        };
        self.pending = total;
        if let BlockResult::Skipped = result {
            self.input.consume(std::mem::take(&mut self.pending));
        }
        Ok(result)
    }

    fn iface(&self, id: u32) -> Option<Interface> {
        match &self.format {
            Format::Pcapng { ifaces, .. } => ifaces.get(id as usize).copied(),
            Format::Pcap { iface, .. } => Some(*iface),
        }
    }
}

enum BlockResult {
    Eof,
    Skipped,
    Packet {
        start: usize,
        len: usize,
        ts_ns: u64,
        link: LinkType,
        orig_len: u32,
    },
}

fn parse_idb(body: &[u8], swapped: bool) -> Interface {
    let link = u32::from(u16_at(body, swapped));
    let snaplen = u32_at(&body[4..], swapped);
    let mut iface = Interface {
        link: LinkType::from_linktype(link),
        mul: 1000,
        div: 1,
        bin_exp: None,
        offset_ns: 0,
        fcs_len: 0,
        snaplen,
    };
    let mut opts = &body[8..];
    while opts.len() >= 4 {
        let code = u16_at(opts, swapped);
        let len = usize::from(u16_at(&opts[2..], swapped));
        if code == 0 || opts.len() < 4 + len {
            break;
        }
        let val = &opts[4..4 + len];
        match (code, len) {
            // if_tsresol
            (9, 1) => {
                let v = val[0];
                if v & 0x80 != 0 {
                    iface.bin_exp = Some((v & 0x7f).min(63));
                } else {
                    (iface.mul, iface.div) = decimal_res(v);
                }
            }
            // if_fcslen
            (13, 1) => iface.fcs_len = u32::from(val[0]),
            // if_tsoffset, seconds
            (14, 8) => {
                let raw = u64::from_le_bytes(val.try_into().unwrap_or([0; 8]));
                let secs = if swapped { raw.swap_bytes() } else { raw } as i64;
                iface.offset_ns = secs.saturating_mul(1_000_000_000);
            }
            _ => {}
        }
        opts = &opts[(4 + len).next_multiple_of(4).min(opts.len())..];
    }
    iface
}

/// Writes classic pcap files (nanosecond resolution, native byte order).
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    out: W,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the file header.
    pub fn new(mut out: W, link: LinkType) -> io::Result<Self> {
        let mut h = [0u8; 24];
        h[0..4].copy_from_slice(&0xa1b2_3c4du32.to_le_bytes());
        h[4..6].copy_from_slice(&2u16.to_le_bytes());
        h[6..8].copy_from_slice(&4u16.to_le_bytes());
        h[16..20].copy_from_slice(&MAX_PACKET_LEN.to_le_bytes());
        h[20..24].copy_from_slice(&link.to_linktype().to_le_bytes());
        out.write_all(&h)?;
        Ok(PcapWriter { out })
    }

    /// Appends one packet captured whole.
    pub fn write_packet(&mut self, ts_ns: u64, data: &[u8]) -> io::Result<()> {
        self.write_packet_with_len(ts_ns, data, data.len() as u32)
    }

    /// Appends one packet that was `orig_len` bytes on the wire.
    pub fn write_packet_with_len(
        &mut self,
        ts_ns: u64,
        data: &[u8],
        orig_len: u32,
    ) -> io::Result<()> {
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&((ts_ns / 1_000_000_000) as u32).to_le_bytes());
        h[4..8].copy_from_slice(&((ts_ns % 1_000_000_000) as u32).to_le_bytes());
        h[8..12].copy_from_slice(&(data.len() as u32).to_le_bytes());
        h[12..16].copy_from_slice(&orig_len.to_le_bytes());
        self.out.write_all(&h)?;
        self.out.write_all(data)
    }

    /// Flushes and returns the underlying writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(any(fuzzing, test))]
/// Reads `bytes` with the buffered reader's `next_packet` and the slice
/// reader's `next_in_slice`; panics where they differ (packets, the
/// error that ends them, the offsets).
pub fn assert_slice_reading_agrees(bytes: &[u8]) {
    let (mut a, mut b) = match (
        CaptureReader::new(bytes, "x"),
        CaptureReader::from_slice(bytes, "x"),
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e1), Err(e2)) => return assert_eq!(e1.to_string(), e2.to_string()),
        (x, y) => panic!(
            "readers disagree on the header: {:?} vs {:?}",
            x.err(),
            y.err()
        ),
    };
    loop {
        match (a.next_packet(), b.next_in_slice()) {
            (Ok(Some(p)), Ok(Some(q))) => assert_eq!(
                (p.ts_ns, p.orig_len, p.link, p.data),
                (q.ts_ns, q.orig_len, q.link, q.data)
            ),
            (Ok(None), Ok(None)) => break,
            (Err(e1), Err(e2)) => {
                assert_eq!((e1.offset(), e1.to_string()), (e2.offset(), e2.to_string()));
                break;
            }
            (x, y) => panic!(
                "readers disagree: {:?} vs {:?}",
                x.map(|p| p.map(|p| p.ts_ns)),
                y.map(|p| p.map(|p| p.ts_ns))
            ),
        }
        assert_eq!((a.offset(), a.packets()), (b.offset(), b.packets()));
    }
    // A walk, ended every `k` records, then read on, gives the same again.
    for k in [1usize, 3, usize::MAX] {
        let (Ok(mut a), Ok(mut b)) = (
            CaptureReader::from_slice(bytes, "x"),
            CaptureReader::from_slice(bytes, "x"),
        ) else {
            return;
        };
        let mut want = Vec::new();
        let want_end = loop {
            match a.next_in_slice() {
                Ok(Some(p)) => want.push((p.ts_ns, p.orig_len, p.link, p.data)),
                Ok(None) => break None,
                Err(e) => break Some((e.offset(), e.to_string())),
            }
        };
        let mut got = Vec::new();
        let got_end = loop {
            if let Some(mut w) = b.walk() {
                let mut walked = 0;
                for _ in 0..k {
                    let Some(p) = w.next_packet() else { break };
                    got.push((p.ts_ns, p.orig_len, p.link, p.data));
                    walked += 1;
                }
                b.end_walk(w, walked);
            }
            match b.next_in_slice() {
                Ok(Some(p)) => got.push((p.ts_ns, p.orig_len, p.link, p.data)),
                Ok(None) => break None,
                Err(e) => break Some((e.offset(), e.to_string())),
            }
        };
        assert_eq!((want, want_end), (got, got_end), "walks of {k}");
        assert_eq!((a.offset(), a.packets()), (b.offset(), b.packets()));
    }
    // A record read at its offset is the record; a reader moved to a
    // record's start (as the relay's walkers move theirs) reads on as one
    // that read its way there; a guess of where records start lies in the
    // bytes it was asked about.
    let Ok(mut a) = CaptureReader::from_slice(bytes, "x") else {
        return;
    };
    let Some(w) = a.walk() else { return };
    let mut walk = w.clone();
    let mut starts = Vec::new();
    while starts.len() < 64 {
        let at = walk.offset();
        let Some(p) = walk.next_packet() else { break };
        let q = w.packet_at(at).expect("a record at its offset");
        assert_eq!(
            (p.ts_ns, p.orig_len, p.link, p.data),
            (q.ts_ns, q.orig_len, q.link, q.data)
        );
        starts.push(at);
    }
    for (i, &at) in starts
        .iter()
        .enumerate()
        .rev()
        .take(2)
        .chain(starts.iter().enumerate().take(1))
    {
        let mut b = CaptureReader::from_slice(bytes, "x").unwrap();
        b.seek_record(at);
        let mut c = CaptureReader::from_slice(bytes, "x").unwrap();
        for _ in 0..i {
            assert!(matches!(c.next_in_slice(), Ok(Some(_))));
        }
        loop {
            assert_eq!(b.offset(), c.offset());
            match (b.next_in_slice(), c.next_in_slice()) {
                (Ok(Some(p)), Ok(Some(q))) => assert_eq!((p.ts_ns, p.data), (q.ts_ns, q.data)),
                (Ok(None), Ok(None)) => break,
                (Err(e1), Err(e2)) => {
                    assert_eq!((e1.offset(), e1.to_string()), (e2.offset(), e2.to_string()));
                    break;
                }
                (x, y) => panic!(
                    "a reader moved to {at} disagrees: {:?} vs {:?}",
                    x.map(|p| p.map(|p| p.ts_ns)),
                    y.map(|p| p.map(|p| p.ts_ns))
                ),
            }
        }
        let len = bytes.len() as u64;
        for from in [at, at + 1, at + 7] {
            let until = (from + 2000).min(len);
            if let Some(p) = w.find_record(from, until) {
                assert!((from..until).contains(&p), "{p} outside {from}..{until}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guess_of_where_records_start_finds_the_next_record_in_real_traffic() {
        let bytes = crate::synth::BulkConfig {
            packets: 3000,
            flows: 100,
            frame: crate::synth::FrameSize::Imix,
            ..Default::default()
        }
        .to_pcap_bytes();
        let mut r = CaptureReader::from_slice(&bytes, "x").unwrap();
        let w = r.walk().unwrap();
        let mut walk = w.clone();
        let mut starts = Vec::new();
        while walk.next_packet().is_some() {
            starts.push(walk.offset());
        }
        starts.pop(); // the end
        let len = bytes.len() as u64;
        for pair in starts.windows(2).step_by(97) {
            // From inside a record (past its header): the next one.
            assert_eq!(w.find_record(pair[0] - 1, len), Some(pair[0]));
            assert_eq!(w.find_record(pair[0], len), Some(pair[0]));
            assert_eq!(w.find_record(pair[0] + 17, len), Some(pair[1]));
        }
        // Bytes that hold no record start: none.
        assert_eq!(w.find_record(starts[5] + 17, starts[6]), None);
        // The last record, whole up to the end, counts.
        let last = *starts.last().unwrap();
        assert_eq!(w.find_record(last, len), Some(last));
    }

    fn pcap_bytes(magic: u32, big_endian: bool, records: &[(u32, u32, &[u8])]) -> Vec<u8> {
        let w32 = |v: u32| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let w16 = |v: u16| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut out = Vec::new();
        out.extend(w32(magic));
        out.extend(w16(2));
        out.extend(w16(4));
        out.extend(w32(0));
        out.extend(w32(0));
        out.extend(w32(65535));
        out.extend(w32(1));
        for (s, f, d) in records {
            out.extend(w32(*s));
            out.extend(w32(*f));
            out.extend(w32(d.len() as u32));
            out.extend(w32(d.len() as u32 + 10));
            out.extend(*d);
        }
        out
    }

    type Packets = Vec<(u64, u32, Vec<u8>, LinkType)>;

    fn read_all(bytes: &[u8]) -> Result<Packets, CaptureError> {
        let mut r = CaptureReader::new(bytes, "mem")?;
        let mut v = Vec::new();
        while let Some(p) = r.next_packet()? {
            v.push((p.ts_ns, p.orig_len, p.data.to_vec(), p.link));
        }
        Ok(v)
    }

    #[test]
    fn pcap_micro_and_nano_both_byte_orders() {
        for big in [false, true] {
            let us = pcap_bytes(0xa1b2_c3d4, big, &[(10, 5, b"abc"), (11, 999_999, b"de")]);
            let p = read_all(&us).unwrap();
            assert_eq!(p.len(), 2);
            assert_eq!(p[0].0, 10_000_005_000);
            assert_eq!(p[0].1, 13);
            assert_eq!(p[0].2, b"abc");
            assert_eq!(p[1].0, 11_999_999_000);
            let ns = pcap_bytes(0xa1b2_3c4d, big, &[(10, 5, b"abc")]);
            assert_eq!(read_all(&ns).unwrap()[0].0, 10_000_000_005);
        }
    }

    #[test]
    fn truncated_record_names_offset_after_good_packets() {
        let mut b = pcap_bytes(0xa1b2_c3d4, false, &[(1, 0, b"good"), (2, 0, b"second")]);
        b.truncate(b.len() - 3);
        let mut r = CaptureReader::new(&b[..], "cut.pcap").unwrap();
        assert_eq!(r.next_packet().unwrap().unwrap().data, b"good");
        let err = r.next_packet().unwrap_err();
        assert_eq!(err.offset(), Some(24 + 16 + 4));
        let msg = err.to_string();
        assert!(
            msg.contains("cut.pcap") && msg.contains("offset 44"),
            "{msg}"
        );
    }

    #[test]
    fn oversized_record_is_corrupt() {
        let mut b = pcap_bytes(0xa1b2_c3d4, false, &[(1, 0, b"good")]);
        b.extend(1u32.to_le_bytes());
        b.extend(0u32.to_le_bytes());
        b.extend(16_711_424u32.to_le_bytes());
        b.extend(16_711_424u32.to_le_bytes());
        let mut r = CaptureReader::new(&b[..], "f.pcap").unwrap();
        assert!(r.next_packet().unwrap().is_some());
        let err = r.next_packet().unwrap_err();
        assert!(matches!(
            err,
            CaptureError::Corrupt {
                offset: 44,
                reason: Corruption::PacketTooLarge {
                    caplen: 16_711_424,
                    ..
                },
                ..
            }
        ));
    }

    #[test]
    fn a_huge_snaplen_does_not_admit_huge_records() {
        let mut b = pcap_bytes(0xa1b2_c3d4, false, &[]);
        b[16..20].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
        b.extend(1u32.to_le_bytes());
        b.extend(0u32.to_le_bytes());
        b.extend(0x4000_0000u32.to_le_bytes());
        b.extend(0x4000_0000u32.to_le_bytes());
        let err = read_all(&b).unwrap_err();
        assert!(matches!(
            err,
            CaptureError::Corrupt {
                reason: Corruption::PacketTooLarge {
                    max: MAX_BLOCK_LEN,
                    ..
                },
                ..
            }
        ));
    }

    #[test]
    fn unknown_magic_and_empty_file() {
        assert!(matches!(
            read_all(b"hello world, not a pcap file"),
            Err(CaptureError::UnknownFormat { .. })
        ));
        assert!(matches!(read_all(b""), Err(CaptureError::Truncated { .. })));
    }

    fn block(btype: u32, body: &[u8]) -> Vec<u8> {
        let mut body = body.to_vec();
        while !body.len().is_multiple_of(4) {
            body.push(0);
        }
        let len = body.len() as u32 + 12;
        let mut b = Vec::new();
        b.extend(btype.to_le_bytes());
        b.extend(len.to_le_bytes());
        b.extend(body);
        b.extend(len.to_le_bytes());
        b
    }

    fn epb(if_id: u32, ts: u64, data: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend(if_id.to_le_bytes());
        body.extend(((ts >> 32) as u32).to_le_bytes());
        body.extend((ts as u32).to_le_bytes());
        body.extend((data.len() as u32).to_le_bytes());
        body.extend((data.len() as u32).to_le_bytes());
        body.extend(data);
        block(6, &body)
    }

    fn idb(link: u16, tsresol: Option<u8>) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend(link.to_le_bytes());
        body.extend(0u16.to_le_bytes());
        body.extend(0u32.to_le_bytes());
        if let Some(r) = tsresol {
            body.extend(9u16.to_le_bytes());
            body.extend(1u16.to_le_bytes());
            body.extend([r, 0, 0, 0]);
            body.extend([0u8; 4]);
        }
        block(1, &body)
    }

    fn shb() -> Vec<u8> {
        let mut body = Vec::new();
        body.extend(PCAPNG_BOM.to_le_bytes());
        body.extend(1u16.to_le_bytes());
        body.extend(0u16.to_le_bytes());
        body.extend((-1i64).to_le_bytes());
        block(PCAPNG_SHB, &body)
    }

    #[test]
    fn pcapng_interfaces_with_own_link_types_and_resolutions() {
        let mut f = shb();
        f.extend(idb(1, None)); // Ethernet, µs
        f.extend(idb(101, Some(9))); // raw IP, ns
        f.extend(idb(113, Some(0x80 | 10))); // SLL, 2^-10 s
        f.extend(block(5, b"stats block is skipped"));
        f.extend(epb(0, 1_500_000, b"eth"));
        f.extend(epb(1, 2_000_000_007, b"raw"));
        f.extend(epb(2, 3 * 1024 + 512, b"sll"));
        let p = read_all(&f).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!((p[0].0, p[0].3), (1_500_000_000, LinkType::Ethernet));
        assert_eq!((p[1].0, p[1].3), (2_000_000_007, LinkType::Raw));
        assert_eq!((p[2].0, p[2].3), (3_500_000_000, LinkType::LinuxSll));
        assert_eq!(p[2].2, b"sll");
    }

    #[test]
    fn pcapng_sections_simple_and_obsolete_blocks() {
        let mut f = shb();
        f.extend(idb(1, None));
        f.extend(epb(0, 5_000_000, b"first"));
        // A simple packet block reuses the last timestamp.
        let mut spb = 3u32.to_le_bytes().to_vec();
        spb.extend(b"abc");
        f.extend(block(3, &spb));
        // A new section forgets the old interfaces: interface 0 is raw IP now.
        f.extend(shb());
        f.extend(idb(101, None));
        // Obsolete packet block: 16-bit interface id and drop count.
        let mut opb = 0u16.to_le_bytes().to_vec();
        opb.extend(0u16.to_le_bytes());
        opb.extend(0u32.to_le_bytes());
        opb.extend(7_000_000u32.to_le_bytes());
        opb.extend(2u32.to_le_bytes());
        opb.extend(2u32.to_le_bytes());
        opb.extend(b"op");
        f.extend(block(2, &opb));
        let p = read_all(&f).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(
            (p[1].0, p[1].2.as_slice(), p[1].3),
            (5_000_000_000, &b"abc"[..], LinkType::Ethernet)
        );
        assert_eq!((p[2].0, p[2].3), (7_000_000_000, LinkType::Raw));
    }

    #[test]
    fn big_endian_pcapng() {
        let be_block = |btype: u32, body: &[u8]| {
            let len = body.len() as u32 + 12;
            let mut b = btype.to_be_bytes().to_vec();
            b.extend(len.to_be_bytes());
            b.extend(body);
            b.extend(len.to_be_bytes());
            b
        };
        let mut shb_body = PCAPNG_BOM.to_be_bytes().to_vec();
        shb_body.extend(1u16.to_be_bytes());
        shb_body.extend(0u16.to_be_bytes());
        shb_body.extend((-1i64).to_be_bytes());
        let mut f = be_block(PCAPNG_SHB, &shb_body);
        let mut idb_body = 1u16.to_be_bytes().to_vec();
        idb_body.extend([0, 0, 0, 0, 0, 0]);
        f.extend(be_block(1, &idb_body));
        let mut epb_body = 0u32.to_be_bytes().to_vec();
        epb_body.extend(0u32.to_be_bytes());
        epb_body.extend(2_000_000u32.to_be_bytes());
        epb_body.extend(4u32.to_be_bytes());
        epb_body.extend(60u32.to_be_bytes());
        epb_body.extend(b"data");
        f.extend(be_block(6, &epb_body));
        let p = read_all(&f).unwrap();
        assert_eq!(
            (p[0].0, p[0].1, p[0].2.as_slice()),
            (2_000_000_000, 60, &b"data"[..])
        );
    }

    #[test]
    fn pcapng_undeclared_interface_and_bad_lengths() {
        let mut f = shb();
        f.extend(idb(1, None));
        f.extend(epb(3, 0, b"x"));
        let err = read_all(&f).unwrap_err();
        assert!(
            matches!(
                err,
                CaptureError::Corrupt {
                    reason: Corruption::UnknownInterface(3),
                    ..
                }
            ),
            "{err}"
        );

        let mut f = shb();
        f.extend(idb(1, None));
        let at = f.len() as u64;
        let mut bad = epb(0, 0, b"abcd");
        let n = bad.len();
        bad[n - 4..].copy_from_slice(&999u32.to_le_bytes());
        f.extend(bad);
        let err = read_all(&f).unwrap_err();
        assert_eq!(err.offset(), Some(at));
    }

    #[test]
    fn slice_and_buffered_readers_agree_including_damage() {
        let mut f = shb();
        f.extend(idb(1, Some(9)));
        for i in 0..50u64 {
            f.extend(epb(
                0,
                i * 1000,
                &vec![i as u8; (i as usize * 37) % 300 + 1],
            ));
        }
        f.truncate(f.len() - 7);
        let mut a = CaptureReader::new(&f[..], "x").unwrap();
        let mut b = CaptureReader::from_slice(&f, "x").unwrap();
        loop {
            match (a.next_packet(), b.next_packet()) {
                (Ok(Some(p)), Ok(Some(q))) => assert_eq!((p.ts_ns, p.data), (q.ts_ns, q.data)),
                (Err(e1), Err(e2)) => {
                    assert_eq!(e1.offset(), e2.offset());
                    assert_eq!(e1.to_string(), e2.to_string());
                    break;
                }
                (x, y) => panic!(
                    "readers disagree: {:?} vs {:?}",
                    x.map(|p| p.map(|p| p.ts_ns)),
                    y.map(|p| p.map(|p| p.ts_ns))
                ),
            }
        }
    }

    #[test]
    fn reading_in_the_slice_agrees_with_next_packet_at_every_cut() {
        let recs: Vec<(u32, u32, Vec<u8>)> = (0..12u32)
            .map(|i| (i, i * 1000, vec![i as u8; (i as usize * 37) % 90 + 1]))
            .collect();
        let recs: Vec<(u32, u32, &[u8])> = recs.iter().map(|(s, f, d)| (*s, *f, &d[..])).collect();
        let mut files = Vec::new();
        for magic in [0xa1b2_c3d4, 0xa1b2_3c4d] {
            for big in [false, true] {
                files.push(pcap_bytes(magic, big, &recs));
            }
        }
        // With an FCS on every frame (link type bits 26 and 28..31).
        let mut fcs = pcap_bytes(0xa1b2_c3d4, false, &recs);
        fcs[20..24].copy_from_slice(&(1u32 | 0x0400_0000 | (2 << 28)).to_le_bytes());
        files.push(fcs);
        // An oversized record after good ones.
        let mut big = pcap_bytes(0xa1b2_c3d4, false, &recs[..3]);
        big.extend(1u32.to_le_bytes());
        big.extend(0u32.to_le_bytes());
        big.extend(16_711_424u32.to_le_bytes());
        big.extend(16_711_424u32.to_le_bytes());
        files.push(big);
        let mut ng = shb();
        ng.extend(idb(1, Some(9)));
        for (i, (_, _, d)) in recs.iter().enumerate() {
            ng.extend(epb(0, i as u64 * 1000, d));
        }
        files.push(ng);
        for f in &files {
            for cut in 0..=f.len() {
                assert_slice_reading_agrees(&f[..cut]);
            }
        }
    }

    #[test]
    fn writer_round_trips() {
        let mut w = PcapWriter::new(Vec::new(), LinkType::Ethernet).unwrap();
        w.write_packet(1_234_567_890_123, b"frame-one").unwrap();
        w.write_packet(1_234_567_890_999, b"two").unwrap();
        let bytes = w.finish().unwrap();
        let p = read_all(&bytes).unwrap();
        assert_eq!(p[0].0, 1_234_567_890_123);
        assert_eq!(p[1].2, b"two");
    }
}
