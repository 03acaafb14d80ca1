//! Address sets: CIDR blocks mapped to values, longest prefix first.
//!
//! A lookup masks the address once per prefix length present and probes a
//! hash map, so its cost grows with the number of distinct prefix lengths
//! (a handful in practice), not with the number of blocks.

use hashbrown::HashMap;
use std::fmt;
use std::net::IpAddr;

/// A CIDR block: `addr/len` with the host bits cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// Network address.
    pub addr: IpAddr,
    /// Prefix length.
    pub len: u8,
}

impl Cidr {
    /// Parses `A.B.C.D/N`, `X::Y/N` or a bare address (a host).
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        let (a, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("{s:?}: not an IP address or CIDR block"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            Some(l) => match l.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("{s:?}: prefix length must be 0-{max}")),
            },
            None => max,
        };
        Ok(Cidr {
            addr: mask(addr, len),
            len,
        })
    }

    /// Whether `ip` lies in the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.len) == self.addr
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

fn mask(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::from((u32::from(a) & m).to_be_bytes())
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::from((u128::from(a) & m).to_be_bytes())
        }
    }
}

/// CIDR blocks mapped to values; the longest matching block wins.
#[derive(Clone, Debug)]
pub struct NetMap<T> {
    /// (prefix length, blocks of that length), longest first, per family.
    v4: Vec<(u8, HashMap<u32, T>)>,
    v6: Vec<(u8, HashMap<u128, T>)>,
}

impl<T> Default for NetMap<T> {
    fn default() -> Self {
        NetMap {
            v4: Vec::new(),
            v6: Vec::new(),
        }
    }
}

impl<T: Clone> NetMap<T> {
    /// An empty map.
    pub fn new() -> Self {
        NetMap::default()
    }

    /// Maps `net` to `value` (replacing an equal block's value).
    pub fn insert(&mut self, net: Cidr, value: T) {
        match net.addr {
            IpAddr::V4(a) => {
                let i = match self.v4.iter().position(|(l, _)| *l == net.len) {
                    Some(i) => i,
                    None => {
                        self.v4.push((net.len, HashMap::new()));
                        self.v4.sort_by_key(|b| std::cmp::Reverse(b.0));
                        self.v4.iter().position(|(l, _)| *l == net.len).unwrap_or(0)
                    }
                };
                self.v4[i].1.insert(u32::from(a), value);
            }
            IpAddr::V6(a) => {
                let i = match self.v6.iter().position(|(l, _)| *l == net.len) {
                    Some(i) => i,
                    None => {
                        self.v6.push((net.len, HashMap::new()));
                        self.v6.sort_by_key(|b| std::cmp::Reverse(b.0));
                        self.v6.iter().position(|(l, _)| *l == net.len).unwrap_or(0)
                    }
                };
                self.v6[i].1.insert(u128::from(a), value);
            }
        }
    }

    /// The value of the longest block holding `ip`.
    #[inline]
    pub fn get(&self, ip: IpAddr) -> Option<&T> {
        match ip {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.v4.iter().find_map(|(len, m)| {
                    let k = a & u32::MAX.checked_shl(32 - u32::from(*len)).unwrap_or(0);
                    m.get(&k)
                })
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                self.v6.iter().find_map(|(len, m)| {
                    let k = a & u128::MAX.checked_shl(128 - u32::from(*len)).unwrap_or(0);
                    m.get(&k)
                })
            }
        }
    }

    /// Whether some block holds `ip`.
    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.get(ip).is_some()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins_and_families_stay_apart() {
        let mut m = NetMap::new();
        m.insert(Cidr::parse("10.0.0.0/8").unwrap(), "wide");
        m.insert(Cidr::parse("10.1.2.0/24").unwrap(), "narrow");
        m.insert(Cidr::parse("10.1.2.3").unwrap(), "host");
        m.insert(Cidr::parse("2001:db8::/32").unwrap(), "v6");
        assert_eq!(m.get(ip("10.9.9.9")), Some(&"wide"));
        assert_eq!(m.get(ip("10.1.2.4")), Some(&"narrow"));
        assert_eq!(m.get(ip("10.1.2.3")), Some(&"host"));
        assert_eq!(m.get(ip("11.0.0.1")), None);
        assert_eq!(m.get(ip("2001:db8::1")), Some(&"v6"));
        assert_eq!(m.get(ip("::ffff:10.0.0.1")), None);
        let mut all = NetMap::new();
        all.insert(Cidr::parse("0.0.0.0/0").unwrap(), 1);
        assert_eq!(all.get(ip("1.2.3.4")), Some(&1));
    }

    #[test]
    fn parse_clears_host_bits_and_names_bad_input() {
        assert_eq!(
            Cidr::parse("192.0.2.77/24").unwrap().to_string(),
            "192.0.2.0/24"
        );
        assert!(Cidr::parse("192.0.2.0/33").unwrap_err().contains("0-32"));
        assert!(
            Cidr::parse("example.org")
                .unwrap_err()
                .contains("not an IP")
        );
        assert!(
            Cidr::parse("10.0.0.0/8")
                .unwrap()
                .contains(ip("10.200.0.1"))
        );
    }
}
