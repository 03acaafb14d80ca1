//! The link layer and what sits between it and IP: Ethernet (and 802.3
//! with SNAP), Linux SLL and SLL2, BSD null and loopback, PPP and Cisco
//! HDLC, 802.1Q/802.1ad tag stacks, MPLS (with pseudowire control words),
//! PPPoE sessions, and the data-centre and carrier headers before an inner
//! Ethernet frame: 802.1ah PBB, Cisco VN-Tag and FabricPath, NSH. These
//! are not tunnels (no outer IP flow): the packets inside keep the frame's
//! context, as VLAN tags do.

use super::ethertype::*;
use super::owner::null_carries_ip;
use super::wlan::{ppi, prism_or_avs, radiotap};
use super::{Ctx, DecodeError, Decoder, MAX_ETHERNET_LAYERS, PacketMeta, R, be16, err};
use crate::capture::LinkType;

impl Decoder {
    /// Returns whether an IP layer was reached.
    pub(super) fn link(
        &mut self,
        link: LinkType,
        d: &[u8],
        ctx: Ctx,
        emit: &mut impl FnMut(&PacketMeta, &[u8]),
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
            LinkType::Ieee80211 => self.ieee80211(d, false, ctx, emit),
            LinkType::Ieee80211Radiotap => {
                let (len, fcs) = radiotap(d)?;
                self.ieee80211(&d[len..], fcs, ctx, emit)
            }
            LinkType::Ieee80211Prism | LinkType::Ieee80211Avs => {
                let len = prism_or_avs(d)?;
                self.ieee80211(&d[len..], false, ctx, emit)
            }
            LinkType::Ppi => match ppi(d)? {
                (len, 105, fcs) => self.ieee80211(&d[len..], fcs, ctx, emit),
                (len, 1, _) => self.ether(&d[len..], ctx, emit),
                _ => err(DecodeError::UnsupportedLinkType),
            },
            LinkType::Other(_) => err(DecodeError::UnsupportedLinkType),
        }
    }

    pub(super) fn ppp(
        &mut self,
        d: &[u8],
        ctx: Ctx,
        emit: &mut impl FnMut(&PacketMeta, &[u8]),
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
        emit: &mut impl FnMut(&PacketMeta, &[u8]),
    ) -> R<bool> {
        if d.len() < 14 {
            return err(DecodeError::LinkTruncated);
        }
        if ctx.layers >= MAX_ETHERNET_LAYERS {
            return err(DecodeError::TooDeep);
        }
        let mut ctx = ctx;
        ctx.layers += 1;
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
        emit: &mut impl FnMut(&PacketMeta, &[u8]),
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
                    // Version and type 1, code 0 (session data), session
                    // id, length; then PPP without address and control.
                    if d.len() < 7 || d[0] != 0x11 || d[1] != 0 {
                        return err(DecodeError::PppoeTruncated);
                    }
                    return self.ppp(&d[6..], ctx, emit);
                }
                ETH_PBB => {
                    // The I-tag (priority, flags, 24-bit service id), then
                    // the customer's frame.
                    return match d.get(4..) {
                        Some(inner) if inner.len() >= 14 => self.ether(inner, ctx, emit),
                        _ => err(DecodeError::PbbTruncated),
                    };
                }
                ETH_VNTAG => {
                    // Direction, pointer and virtual interfaces in 4 bytes,
                    // then the EtherType.
                    if d.len() < 6 {
                        return err(DecodeError::VnTagTruncated);
                    }
                    et = be16(d, 4);
                    d = &d[6..];
                }
                ETH_FABRICPATH => {
                    // The forwarding tag and TTL, then the classical
                    // Ethernet frame.
                    return match d.get(2..) {
                        Some(inner) if inner.len() >= 14 => self.ether(inner, ctx, emit),
                        _ => err(DecodeError::FabricPathTruncated),
                    };
                }
                ETH_NSH => {
                    let (next, rest) = nsh(d)?;
                    match next {
                        1 | 2 => return self.ip(rest, ctx, emit),
                        3 => return self.ether(rest, ctx, emit),
                        4 => {
                            et = ETH_NSH;
                            d = rest;
                        }
                        5 => return self.mpls(rest, ctx, emit),
                        _ => return Ok(false),
                    }
                }
                _ => return Ok(false),
            }
        }
    }

    pub(super) fn mpls(
        &mut self,
        mut d: &[u8],
        ctx: Ctx,
        emit: &mut impl FnMut(&PacketMeta, &[u8]),
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
        match pseudowire(d) {
            Some(Pseudowire::Ip) => self.ip(d, ctx, emit),
            Some(Pseudowire::Ethernet(at)) => self.ether(&d[at..], ctx, emit),
            None => err(DecodeError::MplsTruncated),
        }
    }

    pub(super) fn ip_guess(
        &mut self,
        d: &[u8],
        ctx: Ctx,
        emit: &mut impl FnMut(&PacketMeta, &[u8]),
    ) -> R<bool> {
        match d.first().map(|b| b >> 4) {
            Some(4) | Some(6) => self.ip(d, ctx, emit),
            Some(_) => err(DecodeError::IpInvalid),
            None => err(DecodeError::LinkTruncated),
        }
    }
}

/// A Network Service Header (RFC 8300): version 0, its length in 4-byte
/// words (at least the base and service path headers, 8 bytes), the next
/// protocol; returns that protocol and what follows the header.
fn nsh(d: &[u8]) -> R<(u8, &[u8])> {
    if d.len() < 8 || d[0] >> 6 != 0 {
        return err(DecodeError::NshInvalid);
    }
    let len = usize::from(d[1] & 0x3f) * 4;
    match d.get(len..) {
        Some(rest) if len >= 8 => Ok((d[3], rest)),
        _ => err(DecodeError::NshInvalid),
    }
}

/// What follows an MPLS label stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pseudowire {
    /// An IP packet (first nibble 4 or 6).
    Ip,
    /// An Ethernet pseudowire's frame, at this offset: 4 after a control
    /// word, 0 without.
    Ethernet(usize),
}

/// Tells what follows an MPLS label stack the way Wireshark's heuristic
/// does: IP by its version nibble; otherwise an Ethernet frame, straight
/// away if its EtherType (past any VLAN tags) is one a frame carries, or
/// after a control word (first nibble 0) when that is where a plausible
/// frame starts, or when neither looks like one. `None` when empty.
pub(crate) fn pseudowire(d: &[u8]) -> Option<Pseudowire> {
    match d.first()? >> 4 {
        4 | 6 => Some(Pseudowire::Ip),
        _ if plain_ethernet(d) => Some(Pseudowire::Ethernet(0)),
        0 if d.len() >= 4 => Some(Pseudowire::Ethernet(4)),
        _ => Some(Pseudowire::Ethernet(0)),
    }
}

/// Whether `d` looks like an Ethernet frame: an EtherType of IP, ARP,
/// MPLS, PPPoE, 802.1ah or VN-Tag after at most two VLAN tags.
fn plain_ethernet(d: &[u8]) -> bool {
    let mut at = 12;
    for _ in 0..3 {
        if d.len() < at + 2 {
            return false;
        }
        match be16(d, at) {
            ETH_VLAN | ETH_QINQ | ETH_QINQ_OLD | ETH_QINQ_OLD2 => at += 4,
            ETH_IPV4 | ETH_IPV6 | ETH_ARP | ETH_MPLS | ETH_MPLS_MC | ETH_PPPOE | ETH_PBB
            | ETH_VNTAG => return true,
            _ => return false,
        }
    }
    false
}
