//! pcapng: sections, interface description blocks (each interface with
//! its own link type, timestamp resolution and offset, FCS length) and
//! packet blocks.

use super::{
    ByteSource, CaptureError, CaptureReader, Corruption, Format, LinkType, MAX_BLOCK_LEN,
    PCAPNG_BOM, PCAPNG_SHB, u16_at, u32_at,
};

#[derive(Clone, Copy, Debug)]
pub(super) struct Interface {
    pub(super) link: LinkType,
    /// Multiply raw timestamps by `mul` and divide by `div` to get ns.
    pub(super) mul: u64,
    pub(super) div: u64,
    /// Binary resolution exponent, when the resolution is 2^-n.
    pub(super) bin_exp: Option<u8>,
    pub(super) offset_ns: i64,
    pub(super) fcs_len: u32,
    pub(super) snaplen: u32,
}

impl Interface {
    pub(super) fn ts_ns(&self, raw: u64) -> u64 {
        let ns = match self.bin_exp {
            Some(e) => ((u128::from(raw) * 1_000_000_000) >> e) as u64,
            None => raw.saturating_mul(self.mul) / self.div,
        };
        ns.saturating_add_signed(self.offset_ns)
    }
}

pub(super) fn decimal_res(exp: u8) -> (u64, u64) {
    if exp <= 9 {
        (10u64.pow(u32::from(9 - exp)), 1)
    } else {
        (1, 10u64.pow(u32::from(exp.min(19) - 9)))
    }
}

impl<S: ByteSource> CaptureReader<S> {
    pub(super) fn read_pcapng_block(&mut self, first: bool) -> Result<BlockResult, CaptureError> {
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
}

pub(super) enum BlockResult {
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

pub(super) fn parse_idb(body: &[u8], swapped: bool) -> Interface {
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
