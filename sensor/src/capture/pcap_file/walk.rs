//! Reading a capture held in memory in place: packets borrow the capture,
//! and a pcap file in the machine's byte order is walked a few
//! instructions per record ([`PcapWalk`]), requesting the cache lines ahead
//! of itself.

use std::path::PathBuf;

use super::{
    CaptureError, CaptureReader, Format, LinkType, MAX_BLOCK_LEN, MAX_PACKET_LEN, RawPacket,
    SliceSource,
};

/// How far ahead of its position a [`PcapWalk`] asks for bytes.
const SLICE_PREFETCH_AHEAD: usize = 4096;

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
