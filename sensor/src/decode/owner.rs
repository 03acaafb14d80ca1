//! Which worker must decode a frame, told from a few header bytes without
//! decoding it: how the file workers reading one capture split its frames.

use super::be16;
use super::ethertype::*;
use super::key;
use super::udp_tunnel::tunnel_port;
use crate::capture::LinkType;

/// Which worker must decode a frame, as far as its headers tell without
/// decoding it: how shared-nothing workers reading one capture file split
/// its packets (`run::shared`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// Every flow packet the frame makes has this address pair
    /// ([`key::FlowKey::pair_hash`]), and decoding it leaves no state behind (no
    /// fragment): only the worker owning the pair need decode it.
    Pair(u64),
    /// Anything else: tunnels (inner flows have other addresses),
    /// fragments (reassembly is state), IPv6 extension headers (a routing
    /// header or home address changes the key's addresses), frames without
    /// IP and link layers this does not read. Every worker decodes such a
    /// frame and keeps the flow packets whose pair it owns.
    Any,
}

/// The [`Owner`] of a frame. Cheap: a few loads per frame, no decoding.
/// Its promise, checked by the decode fuzz target and the tests: for a
/// frame it calls `Pair(h)`, the decoder emits only packets whose key has
/// pair hash `h`, and touches no fragment state.
#[inline(always)]
pub fn owner(link: LinkType, d: &[u8]) -> Owner {
    // Ethernet straight to IP, the common frame, first.
    if link == LinkType::Ethernet && d.len() >= 14 && be16(d, 12) == ETH_IPV4 {
        return ip_owner(&d[14..]);
    }
    owner_general(link, d)
}

/// [`owner`] of frames other than Ethernet carrying IPv4 directly.
fn owner_general(link: LinkType, d: &[u8]) -> Owner {
    let (mut et, mut off) = match link {
        LinkType::Ethernet if d.len() >= 14 => (be16(d, 12), 14),
        LinkType::LinuxSll if d.len() >= 16 => (be16(d, 14), 16),
        LinkType::LinuxSll2 if d.len() >= 20 => (be16(d, 0), 20),
        LinkType::Raw | LinkType::Ipv4 | LinkType::Ipv6 => return ip_owner(d),
        LinkType::Null | LinkType::Loop if d.len() >= 4 => {
            return if null_carries_ip(d) {
                ip_owner(&d[4..])
            } else {
                Owner::Any
            };
        }
        _ => return Owner::Any,
    };
    // VLAN tags, as `Decoder::ethertype` skips them.
    for _ in 0..4 {
        match et {
            ETH_IPV4 | ETH_IPV6 => return ip_owner(&d[off..]),
            ETH_VLAN | ETH_QINQ | ETH_QINQ_OLD | ETH_QINQ_OLD2 if d.len() >= off + 4 => {
                et = be16(d, off + 2);
                off += 4;
            }
            _ => return Owner::Any,
        }
    }
    Owner::Any
}

/// Whether a BSD null or OpenBSD loopback header (at least 4 bytes) names
/// IPv4 or IPv6: its address family is in the capturing host's byte order
/// (null) or in network order (loop), so a value under 256 read either way.
pub(super) fn null_carries_ip(d: &[u8]) -> bool {
    let le = u32::from_le_bytes([d[0], d[1], d[2], d[3]]);
    let be = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
    let fam = if le < 0x100 { le } else { be };
    matches!(fam, 2 | 24 | 28 | 30)
}

/// [`owner`] from the IP header on: the version nibble decides, as it does
/// for the decoder.
#[inline(always)]
fn ip_owner(d: &[u8]) -> Owner {
    match d.first().map(|b| b >> 4) {
        Some(4) if d.len() >= 20 => {
            let hl = usize::from(d[0] & 0x0f) * 4;
            // A fragment, or IPsec AH (whose next header may be a tunnel).
            if hl < 20 || be16(d, 6) & 0x3fff != 0 || d[9] == 51 {
                return Owner::Any;
            }
            if !plain_l4(d[9], d.get(hl..)) {
                return Owner::Any;
            }
            let a = u32::from_le_bytes([d[12], d[13], d[14], d[15]]);
            let b = u32::from_le_bytes([d[16], d[17], d[18], d[19]]);
            Owner::Pair(key::pair_hash_v4(a, b))
        }
        // Only headers that end at the transport: extension headers may
        // change the conversation's addresses, or fragment it.
        Some(6) if d.len() >= 40 && matches!(d[6], 6 | 17 | 58) && plain_l4(d[6], d.get(40..)) => {
            let mut a = [0u8; 16];
            let mut b = [0u8; 16];
            a.copy_from_slice(&d[8..24]);
            b.copy_from_slice(&d[24..40]);
            Owner::Pair(key::pair_hash_v6(&a, &b))
        }
        _ => Owner::Any,
    }
}

/// Whether a transport header carries no tunnel the decoder follows. A UDP
/// header too short to name its ports names no tunnel for the decoder
/// either (it reads at most the bytes seen here).
#[inline(always)]
fn plain_l4(proto: u8, l4: Option<&[u8]>) -> bool {
    match proto {
        6 => true,
        4 | 41 | 47 | 115 => false,
        17 => match l4 {
            Some(u) if u.len() >= 4 => {
                let (sport, dport) = (be16(u, 0), be16(u, 2));
                !(tunnel_port(sport) || tunnel_port(dport))
            }
            _ => true,
        },
        _ => true,
    }
}
