//! 802.11 as a wireless monitor captures it: the radio headers before the
//! frame (radiotap, Prism, AVS, PPI), the MAC header, A-MSDU subframes and
//! the LLC/SNAP header naming the EtherType. Data frames reach IP;
//! management, control, null-data and protected (encrypted) frames are
//! counted as non-IP, as are fragments after the first.

use super::ethertype::*;
use super::{Ctx, DecodeError, Decoder, PacketMeta, R, be16, err};

/// Frame control flags (the second byte).
const TO_DS: u8 = 0x01;
const FROM_DS: u8 = 0x02;
const PROTECTED: u8 = 0x40;
const ORDER: u8 = 0x80;
/// Radiotap flags: the frame ends with its FCS.
const RADIOTAP_FCS: u8 = 0x10;

fn le16(d: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([d[at], d[at + 1]])
}

fn le32(d: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]])
}

/// A radiotap header: its length, and whether the frame after it carries
/// its FCS (told by the Flags field, the second field of the first
/// presence word, after the 8-byte-aligned TSFT when that is present).
pub(super) fn radiotap(d: &[u8]) -> R<(usize, bool)> {
    if d.len() < 8 || d[0] != 0 {
        return err(DecodeError::RadiotapInvalid);
    }
    let len = usize::from(le16(d, 2));
    if len < 8 || len > d.len() {
        return err(DecodeError::RadiotapInvalid);
    }
    let present = le32(d, 4);
    // The presence words: bit 31 says another follows.
    let mut at = 4;
    loop {
        if at + 4 > len {
            return err(DecodeError::RadiotapInvalid);
        }
        let word = le32(d, at);
        at += 4;
        if word & 0x8000_0000 == 0 {
            break;
        }
    }
    if present & 0b10 == 0 {
        return Ok((len, false));
    }
    if present & 0b01 != 0 {
        at = at.next_multiple_of(8) + 8;
    }
    match d.get(at) {
        Some(&flags) if at < len => Ok((len, flags & RADIOTAP_FCS != 0)),
        _ => err(DecodeError::RadiotapInvalid),
    }
}

/// The length of a Prism or AVS monitor header (`LINKTYPE` 119 carries
/// either; AVS is told by its magic). AVS's length is big-endian, Prism's
/// in the capturing host's order, read either way like BSD null's family.
pub(super) fn prism_or_avs(d: &[u8]) -> R<usize> {
    if d.len() < 8 {
        return err(DecodeError::RadiotapInvalid);
    }
    let magic = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
    let len = if magic & 0xffff_fff0 == 0x8021_1000 {
        u32::from_be_bytes([d[4], d[5], d[6], d[7]])
    } else {
        let le = le32(d, 4);
        if le < 0x1_0000 { le } else { le.swap_bytes() }
    };
    match usize::try_from(len) {
        Ok(len) if (8..=d.len()).contains(&len) => Ok(len),
        _ => err(DecodeError::RadiotapInvalid),
    }
}

/// A PPI header (`LINKTYPE` 192): its length, the link type of what
/// follows (both little-endian), and whether an 802.11-common field (type
/// 2: an 8-byte TSF timer, then flags) says the frame carries its FCS.
pub(super) fn ppi(d: &[u8]) -> R<(usize, u32, bool)> {
    if d.len() < 8 || d[0] != 0 {
        return err(DecodeError::RadiotapInvalid);
    }
    let len = usize::from(le16(d, 2));
    if len < 8 || len > d.len() {
        return err(DecodeError::RadiotapInvalid);
    }
    let mut fcs = false;
    let mut at = 8;
    while at + 4 <= len {
        let (kind, n) = (le16(d, at), usize::from(le16(d, at + 2)));
        if kind == 2 && n >= 10 && at + 4 + 10 <= len {
            fcs = le16(d, at + 4 + 8) & 0x0001 != 0;
        }
        at += 4 + n;
    }
    Ok((len, le32(d, 4), fcs))
}

impl Decoder {
    /// An 802.11 frame; `fcs`: whether it ends with its 4-byte FCS.
    pub(super) fn ieee80211(
        &mut self,
        d: &[u8],
        fcs: bool,
        ctx: Ctx,
        emit: &mut impl FnMut(&PacketMeta, &[u8]),
    ) -> R<bool> {
        let d = if fcs {
            match d.len().checked_sub(4) {
                Some(n) => &d[..n],
                None => return err(DecodeError::Ieee80211Truncated),
            }
        } else {
            d
        };
        if d.len() < 2 {
            return err(DecodeError::Ieee80211Truncated);
        }
        let (fc, flags) = (d[0], d[1]);
        let (version, kind, subtype) = (fc & 0x03, (fc >> 2) & 0x03, fc >> 4);
        // Data frames that carry data: not management, control or
        // extension frames, not the null subtypes (bit 2), not encrypted.
        if version != 0 || kind != 2 || subtype & 0x04 != 0 || flags & PROTECTED != 0 {
            return Ok(false);
        }
        let qos = subtype & 0x08 != 0;
        let mut hl = 24;
        if flags & (TO_DS | FROM_DS) == TO_DS | FROM_DS {
            hl += 6;
        }
        // The QoS control field, whose bit 7 says the body is an A-MSDU.
        let qos_at = hl;
        if qos {
            hl += 2;
            if flags & ORDER != 0 {
                hl += 4; // HT control
            }
        }
        if d.len() < hl {
            return err(DecodeError::Ieee80211Truncated);
        }
        // A fragment after the first holds no headers of its own.
        if le16(d, 22) & 0x000f != 0 {
            return Ok(false);
        }
        let body = &d[hl..];
        if qos && d[qos_at] & 0x80 != 0 {
            return self.amsdu(body, ctx, emit);
        }
        self.llc(body, ctx, emit)
    }

    /// An A-MSDU: subframes of a destination, a source, a big-endian
    /// length and that many bytes of LLC/SNAP and payload, each padded to
    /// four bytes but the last.
    fn amsdu(
        &mut self,
        mut d: &[u8],
        ctx: Ctx,
        emit: &mut impl FnMut(&PacketMeta, &[u8]),
    ) -> R<bool> {
        let mut any = false;
        while !d.is_empty() {
            if d.len() < 14 {
                return err(DecodeError::Ieee80211Truncated);
            }
            let n = usize::from(be16(d, 12));
            let Some(sub) = d.get(14..14 + n) else {
                return err(DecodeError::Ieee80211Truncated);
            };
            any |= self.llc(sub, ctx, emit)?;
            d = d.get((14 + n).next_multiple_of(4)..).unwrap_or_default();
        }
        Ok(any)
    }

    /// An LLC header: only SNAP (`AA AA 03`, an OUI) names an EtherType.
    fn llc(&mut self, d: &[u8], ctx: Ctx, emit: &mut impl FnMut(&PacketMeta, &[u8])) -> R<bool> {
        if d.len() < 3 {
            return err(DecodeError::Ieee80211Truncated);
        }
        if d[..3] != [0xaa, 0xaa, 0x03] {
            return Ok(false);
        }
        if d.len() < 8 {
            return err(DecodeError::Ieee80211Truncated);
        }
        match be16(d, 6) {
            ETH_IPV4 | ETH_IPV6 => self.ip(&d[8..], ctx, emit),
            et => self.ethertype(et, &d[8..], ctx, emit),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn radiotap_lengths_and_the_fcs_flag() {
        // Present: TSFT and Flags; the TSFT is 8-aligned right after the
        // presence word (offset 8), then the flags at 16.
        let mut h = vec![0, 0, 18, 0, 0b11, 0, 0, 0];
        h.extend([0u8; 8]);
        h.extend([RADIOTAP_FCS, 0]);
        assert_eq!(radiotap(&h).unwrap(), (18, true));
        // Two presence words (bit 31 chains): TSFT at 16, flags at 24.
        let mut h2 = vec![0, 0, 26, 0, 0b11, 0, 0, 0x80, 0, 0, 0, 0];
        h2.extend([0u8; 4 + 8]);
        h2.extend([0, 0]);
        assert_eq!(radiotap(&h2).unwrap(), (26, false));
        // Flags only, right after the presence word.
        assert_eq!(
            radiotap(&[0, 0, 9, 0, 0b10, 0, 0, 0, 0x10]).unwrap(),
            (9, true)
        );
        // No flags: no FCS.
        assert_eq!(radiotap(&[0, 0, 8, 0, 0, 0, 0, 0]).unwrap(), (8, false));
        for bad in [
            &[0u8, 0, 8, 0][..],                // cut
            &[1, 0, 8, 0, 0, 0, 0, 0],          // version 1
            &[0, 0, 200, 0, 0, 0, 0, 0],        // longer than the frame
            &[0, 0, 8, 0, 0, 0, 0, 0x80],       // chained past its length
            &[0, 0, 8, 0, 0b10, 0, 0, 0, 0x10], // flags past its length
        ] {
            assert!(radiotap(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn prism_avs_and_ppi_lengths() {
        let mut avs = vec![0x80, 0x21, 0x10, 0x01, 0, 0, 0, 64];
        avs.resize(80, 0);
        assert_eq!(prism_or_avs(&avs).unwrap(), 64);
        let mut prism = vec![0x41, 0, 0, 0, 144, 0, 0, 0];
        prism.resize(150, 0);
        assert_eq!(prism_or_avs(&prism).unwrap(), 144);
        prism[4] = 151;
        assert!(prism_or_avs(&prism).is_err());
        let ppi_h = [0, 0, 8, 0, 105, 0, 0, 0, 1];
        assert_eq!(ppi(&ppi_h).unwrap(), (8, 105, false));
        assert!(ppi(&ppi_h[..7]).is_err());
        // An 802.11-common field whose flags say FCS.
        let mut common = vec![0, 0, 26, 0, 105, 0, 0, 0, 2, 0, 14, 0];
        common.extend([0u8; 8]);
        common.extend([1, 0, 0, 0, 0, 0]);
        assert_eq!(ppi(&common).unwrap(), (26, 105, true));
    }
}
