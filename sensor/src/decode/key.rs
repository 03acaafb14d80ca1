//! The canonical, direction-free flow key and its hash.
//!
//! Both directions of a conversation produce the same [`FlowKey`]: the
//! endpoint that sorts lower (address, then port) is stored first, and each
//! packet records whether its source is that lower endpoint. The hash is
//! therefore symmetric too, which lets the dispatcher send both directions to
//! the same shard without looking at orientation.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Canonical key of a bidirectional flow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowKey {
    /// Lower endpoint's address (IPv4 in the first four bytes).
    pub addr_lo: [u8; 16],
    /// Higher endpoint's address.
    pub addr_hi: [u8; 16],
    /// Lower endpoint's port (0 for protocols without ports).
    pub port_lo: u16,
    /// Higher endpoint's port.
    pub port_hi: u16,
    /// Outer and inner VLAN id, 0 where absent.
    pub vlan: [u16; 2],
    /// IP protocol number.
    pub proto: u8,
    /// Whether the addresses are IPv6.
    pub v6: bool,
}

/// Packs an address into the key's 16-byte form.
pub fn addr_bytes(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            b
        }
        IpAddr::V6(a) => a.octets(),
    }
}

/// Unpacks an address from the key's 16-byte form.
pub fn addr_from(bytes: &[u8; 16], v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(*bytes))
    } else {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    }
}

#[inline(always)]
fn mix(a: u64, b: u64) -> u64 {
    let r = u128::from(a) * u128::from(b);
    (r as u64) ^ ((r >> 64) as u64)
}

const SEEDS: [u64; 7] = [
    0x243f_6a88_85a3_08d3,
    0x1319_8a2e_0370_7344,
    0xa409_3822_299f_31d0,
    0x082e_fa98_ec4e_6c89,
    0x4528_21e6_38d0_1377,
    0xbe54_66cf_34e9_0c6c,
    0xc0ac_29b7_c97c_50dd,
];

/// A hash of an address pair alone (no ports, protocol or VLAN), the same
/// whichever way the packet goes: every packet between two hosts, fragments
/// and tunnels included, has it. IPv4 addresses are given as their four
/// bytes read little-endian (cheaper than swapping them, and any fixed
/// order serves); see [`pair_hash_v6`] for IPv6.
#[inline(always)]
pub fn pair_hash_v4(a: u32, b: u32) -> u64 {
    mix(
        u64::from(a.min(b)) ^ SEEDS[0],
        u64::from(a.max(b)) ^ SEEDS[1],
    )
}

/// [`pair_hash_v4`] for two IPv6 addresses (as bytes, network order).
#[inline(always)]
pub fn pair_hash_v6(a: &[u8; 16], b: &[u8; 16]) -> u64 {
    let fold = |x: &[u8; 16]| {
        let v = u128::from_le_bytes(*x);
        (v as u64) ^ ((v >> 64) as u64).rotate_left(32)
    };
    let (x, y) = (fold(a), fold(b));
    mix(x.min(y) ^ SEEDS[2], x.max(y) ^ SEEDS[3])
}

impl FlowKey {
    /// Builds the canonical key for a packet from `src` to `dst`; the flag
    /// says whether `src` is the key's lower endpoint.
    #[inline]
    pub fn new(
        src: [u8; 16],
        sport: u16,
        dst: [u8; 16],
        dport: u16,
        proto: u8,
        v6: bool,
        vlan: [u16; 2],
    ) -> (FlowKey, bool) {
        let s = (u128::from_be_bytes(src), sport);
        let d = (u128::from_be_bytes(dst), dport);
        let src_is_lo = s <= d;
        let (lo, plo, hi, phi) = if src_is_lo {
            (src, sport, dst, dport)
        } else {
            (dst, dport, src, sport)
        };
        (
            FlowKey {
                addr_lo: lo,
                addr_hi: hi,
                port_lo: plo,
                port_hi: phi,
                vlan,
                proto,
                v6,
            },
            src_is_lo,
        )
    }

    /// A fast, well-mixed hash (folded multiply, fixed seeds so that a run
    /// is reproducible). Symmetric because the key is canonical. Built on
    /// the key's [`FlowKey::pair_hash`], so that whoever has that at hand
    /// (the file workers' walker, which shares packets out by it) gets this
    /// for two multiplies more: [`FlowKey::hash_with_pair`].
    #[inline]
    pub fn hash64(&self) -> u64 {
        self.hash_with_pair(self.pair_hash())
    }

    /// [`FlowKey::hash64`], given the key's [`FlowKey::pair_hash`].
    #[inline(always)]
    pub fn hash_with_pair(&self, pair: u64) -> u64 {
        let p = u64::from(self.port_lo)
            | (u64::from(self.port_hi) << 16)
            | (u64::from(self.vlan[0]) << 32)
            | (u64::from(self.vlan[1]) << 48);
        let t = u64::from(self.proto) | (u64::from(self.v6) << 8);
        mix(pair ^ mix(p ^ SEEDS[4], t ^ SEEDS[5]), SEEDS[6])
    }

    /// [`pair_hash_v4`] (or `_v6`) of the key's two addresses: which worker owns the
    /// flow when capture files are read by shared-nothing workers.
    #[inline]
    pub fn pair_hash(&self) -> u64 {
        if self.v6 {
            pair_hash_v6(&self.addr_lo, &self.addr_hi)
        } else {
            let v4 = |x: &[u8; 16]| u32::from_le_bytes([x[0], x[1], x[2], x[3]]);
            pair_hash_v4(v4(&self.addr_lo), v4(&self.addr_hi))
        }
    }

    /// The lower endpoint's address.
    pub fn lo_addr(&self) -> IpAddr {
        addr_from(&self.addr_lo, self.v6)
    }

    /// The higher endpoint's address.
    pub fn hi_addr(&self) -> IpAddr {
        addr_from(&self.addr_hi, self.v6)
    }
}

/// The shard (of `n`) that owns a flow key hash: the high 32 bits scaled to `n`.
#[inline]
pub fn shard_of(hash: u64, n: usize) -> usize {
    (((hash >> 32) * n as u64) >> 32) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_directions_share_key_and_hash() {
        let a = addr_bytes("192.0.2.1".parse().unwrap());
        let b = addr_bytes("198.51.100.7".parse().unwrap());
        let (k1, d1) = FlowKey::new(a, 40000, b, 443, 6, false, [0, 0]);
        let (k2, d2) = FlowKey::new(b, 443, a, 40000, 6, false, [0, 0]);
        assert_eq!(k1, k2);
        assert_eq!(k1.hash64(), k2.hash64());
        assert!(d1 && !d2);
        assert_eq!(k1.lo_addr().to_string(), "192.0.2.1");
    }

    #[test]
    fn the_pair_hash_of_a_key_is_that_of_its_addresses_either_way() {
        let a = "192.0.2.1".parse().unwrap();
        let b = "198.51.100.7".parse().unwrap();
        let (k, _) = FlowKey::new(addr_bytes(a), 1, addr_bytes(b), 2, 6, false, [3, 0]);
        let (k2, _) = FlowKey::new(addr_bytes(b), 9, addr_bytes(a), 8, 17, false, [0, 0]);
        let v4 = |ip: IpAddr| match ip {
            IpAddr::V4(x) => u32::from_le_bytes(x.octets()),
            IpAddr::V6(_) => unreachable!(),
        };
        assert_eq!(k.pair_hash(), pair_hash_v4(v4(a), v4(b)));
        assert_eq!(k.pair_hash(), pair_hash_v4(v4(b), v4(a)));
        assert_eq!(k.pair_hash(), k2.pair_hash());
        let c: IpAddr = "2001:db8::1".parse().unwrap();
        let d: IpAddr = "2001:db8:ffff::2".parse().unwrap();
        let (k6, _) = FlowKey::new(addr_bytes(d), 1, addr_bytes(c), 2, 17, true, [0, 0]);
        assert_eq!(k6.pair_hash(), pair_hash_v6(&addr_bytes(c), &addr_bytes(d)));
        assert_eq!(k6.pair_hash(), pair_hash_v6(&addr_bytes(d), &addr_bytes(c)));
        assert_ne!(k6.pair_hash(), k.pair_hash());
    }

    #[test]
    fn pair_hashes_spread_over_workers() {
        // 10,000 clients of one server: each of 4 workers gets its share.
        let mut per = [0u32; 4];
        for i in 0..10_000u32 {
            let client = u32::from_le_bytes((0x0a00_0000 + i).to_be_bytes());
            let h = pair_hash_v4(client, u32::from_le_bytes([198, 51, 100, 1]));
            per[shard_of(h, 4)] += 1;
        }
        assert!(per.iter().all(|&n| (2_250..=2_750).contains(&n)), "{per:?}");
    }

    #[test]
    fn same_address_orders_by_port() {
        let a = addr_bytes("127.0.0.1".parse().unwrap());
        let (k, d) = FlowKey::new(a, 9000, a, 80, 17, false, [0, 0]);
        assert_eq!((k.port_lo, k.port_hi, d), (80, 9000, false));
    }

    #[test]
    fn key_fields_change_the_hash() {
        let a = addr_bytes("192.0.2.1".parse().unwrap());
        let b = addr_bytes("192.0.2.2".parse().unwrap());
        let (k, _) = FlowKey::new(a, 1, b, 2, 6, false, [0, 0]);
        let mut seen = std::collections::HashSet::new();
        seen.insert(k.hash64());
        for variant in [
            FlowKey { proto: 17, ..k },
            FlowKey { vlan: [5, 0], ..k },
            FlowKey { port_hi: 3, ..k },
            FlowKey { v6: true, ..k },
        ] {
            assert!(seen.insert(variant.hash64()));
        }
    }

    #[test]
    fn keys_differing_in_any_field_are_unequal() {
        let a = addr_bytes("192.0.2.1".parse().unwrap());
        let b = addr_bytes("2001:db8::2".parse().unwrap());
        let (k, _) = FlowKey::new(a, 1, b, 2, 6, false, [7, 9]);
        let same = k;
        assert_eq!(k, same);
        let mut lo = k.addr_lo;
        lo[15] ^= 1;
        let mut hi = k.addr_hi;
        hi[0] ^= 0x80;
        for variant in [
            FlowKey { addr_lo: lo, ..k },
            FlowKey { addr_hi: hi, ..k },
            FlowKey {
                port_lo: 0x0101,
                ..k
            },
            FlowKey {
                port_hi: 0x8002,
                ..k
            },
            FlowKey { vlan: [7, 8], ..k },
            FlowKey {
                vlan: [0x8007, 9],
                ..k
            },
            FlowKey { proto: 0x86, ..k },
            FlowKey { v6: true, ..k },
        ] {
            assert_ne!(k, variant, "{variant:?}");
        }
    }
}
