//! Prefix-preserving address anonymization: Crypto-PAn (Xu, Fan, Ammar and
//! Moon, "Prefix-Preserving IP Address Anonymization", ICNP 2002).
//!
//! The 32-byte key is an AES-128 key (its first 16 bytes) and a pad (the
//! AES encryption of its last 16). Bit `i` of an address is flipped by the
//! first bit of the AES encryption of the address's first `i` bits followed
//! by the pad's remaining bits; so two addresses sharing an `n`-bit prefix
//! share an `n`-bit prefix after, and nothing else is kept. IPv6 is the
//! same over 128 bits (as in the reference implementation's IPv6 extension
//! and PyPI's `yacryptopan`).
//!
//! A key file holds the key as 64 hexadecimal digits (whitespace around
//! them is ignored).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use aes::Aes128;
use aes::cipher::{BlockEncrypt, KeyInit, generic_array::GenericArray};

/// A Crypto-PAn key ready to use.
#[derive(Clone)]
pub struct CryptoPan {
    aes: Aes128,
    pad: u128,
}

impl std::fmt::Debug for CryptoPan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CryptoPan(..)")
    }
}

impl CryptoPan {
    /// From the 32-byte key.
    pub fn new(key: &[u8; 32]) -> CryptoPan {
        let aes = Aes128::new(GenericArray::from_slice(&key[..16]));
        let mut pad = GenericArray::clone_from_slice(&key[16..]);
        aes.encrypt_block(&mut pad);
        CryptoPan {
            aes,
            pad: u128::from_be_bytes(pad.into()),
        }
    }

    /// From 64 hexadecimal digits.
    pub fn from_hex(text: &str) -> Result<CryptoPan, String> {
        let t = text.trim();
        if t.len() != 64 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "expected 64 hexadecimal digits (a 32-byte key), found {} characters",
                t.chars().count()
            ));
        }
        let mut key = [0u8; 32];
        for (i, k) in key.iter_mut().enumerate() {
            *k = u8::from_str_radix(&t[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
        }
        Ok(CryptoPan::new(&key))
    }

    /// From a key file (64 hexadecimal digits).
    pub fn from_file(path: &Path) -> Result<CryptoPan, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        CryptoPan::from_hex(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The anonymized `addr`, `bits` long, held in the top bits of a u128.
    fn bits(&self, addr: u128, bits: u32) -> u128 {
        let mut flips = 0u128;
        for pos in 0..bits {
            // The address's first `pos` bits, then the pad's from `pos` on.
            let keep = u128::MAX.checked_shl(128 - pos).unwrap_or(0);
            let input = (addr & keep) | (self.pad & !keep);
            let mut block = GenericArray::from(input.to_be_bytes());
            self.aes.encrypt_block(&mut block);
            flips |= u128::from(block[0] >> 7) << (127 - pos);
        }
        addr ^ flips
    }

    /// The anonymized IPv4 address.
    pub fn v4(&self, a: Ipv4Addr) -> Ipv4Addr {
        let x = self.bits(u128::from(u32::from(a)) << 96, 32);
        Ipv4Addr::from((x >> 96) as u32)
    }

    /// The anonymized IPv6 address.
    pub fn v6(&self, a: Ipv6Addr) -> Ipv6Addr {
        Ipv6Addr::from(self.bits(u128::from(a), 128))
    }

    /// The anonymized address.
    pub fn ip(&self, a: IpAddr) -> IpAddr {
        match a {
            IpAddr::V4(a) => IpAddr::V4(self.v4(a)),
            IpAddr::V6(a) => IpAddr::V6(self.v6(a)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key of the sample trace distributed with the reference
    /// implementation (Crypto-PAn 1.0, `sample.cpp`).
    const SAMPLE_KEY: [u8; 32] = [
        21, 34, 23, 141, 51, 164, 207, 128, 19, 10, 91, 22, 73, 144, 125, 16, 216, 152, 143, 131,
        121, 121, 101, 39, 98, 87, 76, 45, 42, 132, 34, 2,
    ];

    /// Pairs of that sample trace (`sample_trace_raw.txt` →
    /// `sample_trace_sanitized.txt`).
    const SAMPLE: [(&str, &str); 20] = [
        ("128.11.68.132", "135.242.180.132"),
        ("129.118.74.4", "134.136.186.123"),
        ("130.132.252.244", "133.68.164.234"),
        ("141.223.7.43", "141.167.8.160"),
        ("141.233.145.108", "141.129.237.235"),
        ("152.163.225.39", "151.140.114.167"),
        ("156.29.3.236", "147.225.12.42"),
        ("165.247.96.84", "162.9.99.234"),
        ("166.107.77.190", "160.132.178.185"),
        ("192.102.249.13", "252.138.62.131"),
        ("192.215.32.125", "252.43.47.189"),
        ("192.233.80.103", "252.25.108.8"),
        ("192.41.57.43", "252.222.221.184"),
        ("193.150.244.223", "253.169.52.216"),
        ("195.205.63.100", "255.186.223.5"),
        ("198.200.171.101", "249.199.68.213"),
        ("198.26.132.101", "249.36.123.202"),
        ("198.36.213.5", "249.7.21.132"),
        ("198.51.77.238", "249.18.186.254"),
        ("199.217.79.101", "248.38.184.213"),
    ];

    #[test]
    fn the_published_sample_trace_matches() {
        let c = CryptoPan::new(&SAMPLE_KEY);
        for (raw, anon) in SAMPLE {
            let a: Ipv4Addr = raw.parse().unwrap();
            assert_eq!(c.v4(a).to_string(), anon, "{raw}");
        }
    }

    #[test]
    fn prefixes_are_preserved_and_nothing_more() {
        let c = CryptoPan::new(&SAMPLE_KEY);
        let pairs = [
            ("10.1.2.3", "10.1.2.200", 24),
            ("10.1.2.3", "10.1.3.3", 23),
            ("2001:db8::1", "2001:db8::2", 126),
            ("2001:db8:1::1", "2001:db8:2::1", 46),
        ];
        for (a, b, common) in pairs {
            let (a, b): (IpAddr, IpAddr) = (a.parse().unwrap(), b.parse().unwrap());
            let bits = |ip: IpAddr| match ip {
                IpAddr::V4(v) => u128::from(u32::from(v)) << 96,
                IpAddr::V6(v) => u128::from(v),
            };
            let shared = (bits(c.ip(a)) ^ bits(c.ip(b))).leading_zeros();
            assert_eq!(shared, common, "{a} {b}");
        }
    }

    #[test]
    fn key_files_want_64_hex_digits() {
        let hex: String = SAMPLE_KEY.iter().map(|b| format!("{b:02x}")).collect();
        let c = CryptoPan::from_hex(&format!("  {hex}\n")).unwrap();
        assert_eq!(
            c.v4("128.11.68.132".parse().unwrap()).to_string(),
            "135.242.180.132"
        );
        assert!(CryptoPan::from_hex(&hex[..62]).unwrap_err().contains("64"));
        assert!(CryptoPan::from_hex(&format!("{}zz", &hex[..62])).is_err());
    }
}
