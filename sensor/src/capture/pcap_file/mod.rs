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
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::{LinkType, RawPacket};

#[cfg(any(fuzzing, test, feature = "fuzzing"))]
mod check;
mod error;
mod pcapng;
mod source;
#[cfg(test)]
mod tests;
mod walk;
mod writer;

#[cfg(any(fuzzing, test, feature = "fuzzing"))]
pub use check::assert_slice_reading_agrees;
pub use error::{CaptureError, Corruption};
use pcapng::{BlockResult, Interface};
pub use source::{ByteSource, ReadSource, SliceSource};
pub use walk::PcapWalk;
pub use writer::PcapWriter;

/// Largest packet accepted in a pcap record, as Wireshark's limit.
pub const MAX_PACKET_LEN: u32 = 262_144;
/// Largest pcapng block accepted (Wireshark's limit as well).
pub const MAX_BLOCK_LEN: u32 = 16 * 1024 * 1024;
const BUF_LEN: usize = 1 << 20;

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

    fn iface(&self, id: u32) -> Option<Interface> {
        match &self.format {
            Format::Pcapng { ifaces, .. } => ifaces.get(id as usize).copied(),
            Format::Pcap { iface, .. } => Some(*iface),
        }
    }
}
