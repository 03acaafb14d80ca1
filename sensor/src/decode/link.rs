//! The link layer and what sits between it and IP: Ethernet (and 802.3
//! with SNAP), Linux SLL and SLL2, BSD null and loopback, PPP and Cisco
//! HDLC, 802.1Q/802.1ad tag stacks, MPLS (with pseudowire control words),
//! PPPoE.

use super::ethertype::*;
use super::owner::null_carries_ip;
use super::{Ctx, DecodeError, Decoder, PacketMeta, R, be16, err};
use crate::capture::LinkType;

impl Decoder {
    /// Returns whether an IP layer was reached.
    pub(super) fn link(
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

    pub(super) fn ppp(
        &mut self,
        d: &[u8],
        ctx: Ctx,
        emit: &mut impl FnMut(&PacketMeta),
    ) -> R<bool> {
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

    pub(super) fn ether(
        &mut self,
        d: &[u8],
        ctx: Ctx,
        emit: &mut impl FnMut(&PacketMeta),
    ) -> R<bool> {
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

    pub(super) fn ethertype(
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

    pub(super) fn mpls(
        &mut self,
        mut d: &[u8],
        ctx: Ctx,
        emit: &mut impl FnMut(&PacketMeta),
    ) -> R<bool> {
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

    pub(super) fn ip_guess(
        &mut self,
        d: &[u8],
        ctx: Ctx,
        emit: &mut impl FnMut(&PacketMeta),
    ) -> R<bool> {
        match d.first().map(|b| b >> 4) {
            Some(4) | Some(6) => self.ip(d, ctx, emit),
            Some(_) => err(DecodeError::IpInvalid),
            None => err(DecodeError::LinkTruncated),
        }
    }
}
