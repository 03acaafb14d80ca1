//! Why a capture file could not be read, with the file and the byte
//! offset of the damage.

use std::fmt;
use std::io;
use std::path::PathBuf;

use thiserror::Error;

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
