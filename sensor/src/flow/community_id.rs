//! Community ID v1 (<https://github.com/corelight/community-id-spec>): a
//! hash of the flow tuple that Zeek, Suricata and many other tools compute
//! identically, so that records of one flow can be joined across tools.

use sha1::{Digest, Sha1};
use vigil_proto::CommunityId;

/// ICMP types with a request/response counterpart, as the spec maps them.
fn icmp_counterpart(v6: bool, t: u8) -> Option<u8> {
    if v6 {
        match t {
            128 => Some(129),
            129 => Some(128),
            130 => Some(131),
            131 => Some(130),
            133 => Some(134),
            134 => Some(133),
            135 => Some(136),
            136 => Some(135),
            139 => Some(140),
            140 => Some(139),
            144 => Some(145),
            145 => Some(144),
            _ => None,
        }
    } else {
        match t {
            8 => Some(0),
            0 => Some(8),
            13 => Some(14),
            14 => Some(13),
            15 => Some(16),
            16 => Some(15),
            10 => Some(9),
            9 => Some(10),
            17 => Some(18),
            18 => Some(17),
            _ => None,
        }
    }
}

/// Computes the Community ID of a flow seen from its initiator.
///
/// `addr` slices are 4 or 16 bytes. For ICMP/ICMPv6 the ports are the
/// initiator's first type and code.
#[allow(clippy::too_many_arguments)]
pub fn community_id(
    seed: u16,
    proto: u8,
    src: &[u8],
    dst: &[u8],
    sport: u16,
    dport: u16,
    icmp: [u8; 2],
) -> CommunityId {
    let (mut sp, mut dp, mut one_way) = (sport, dport, false);
    let has_ports = match proto {
        6 | 17 | 132 => true,
        1 | 58 => {
            match icmp_counterpart(proto == 58, icmp[0]) {
                Some(other) => (sp, dp) = (u16::from(icmp[0]), u16::from(other)),
                None => {
                    (sp, dp) = (u16::from(icmp[0]), u16::from(icmp[1]));
                    one_way = true;
                }
            }
            true
        }
        _ => false,
    };
    let (mut a, mut b) = (src, dst);
    if !one_way && (a > b || (a == b && sp > dp)) {
        std::mem::swap(&mut a, &mut b);
        std::mem::swap(&mut sp, &mut dp);
    }
    let mut h = Sha1::new();
    h.update(seed.to_be_bytes());
    h.update(a);
    h.update(b);
    h.update([proto, 0]);
    if has_ports {
        h.update(sp.to_be_bytes());
        h.update(dp.to_be_bytes());
    }
    CommunityId(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn v4(s: &str) -> [u8; 4] {
        s.parse::<Ipv4Addr>().unwrap().octets()
    }

    fn v6(s: &str) -> [u8; 16] {
        s.parse::<std::net::Ipv6Addr>().unwrap().octets()
    }

    // Vectors published with the Community ID specification and repeated in
    // the test suites of its implementations (Zeek, Suricata, Logstash).
    #[test]
    fn specification_vectors() {
        let id = community_id(
            0,
            6,
            &v4("128.232.110.120"),
            &v4("66.35.250.204"),
            34855,
            80,
            [0; 2],
        );
        assert_eq!(id.to_string(), "1:LQU9qZlK+B5F3KDmev6m5PMibrg=");
        let back = community_id(
            0,
            6,
            &v4("66.35.250.204"),
            &v4("128.232.110.120"),
            80,
            34855,
            [0; 2],
        );
        assert_eq!(back, id);
        let udp = community_id(
            0,
            17,
            &v4("192.168.1.52"),
            &v4("8.8.8.8"),
            54585,
            53,
            [0; 2],
        );
        assert_eq!(udp.to_string(), "1:d/FP5EW3wiY1vCndhwleRRKHowQ=");
        let tcp6 = community_id(
            0,
            6,
            &v6("2001:470:e5bf:dead:4957:2174:e82c:4887"),
            &v6("2607:f8b0:400c:c03::1a"),
            63943,
            25,
            [0; 2],
        );
        assert_eq!(tcp6.to_string(), "1:/qFaeAR+gFe1KYjMzVDsMv+wgU4=");
        let sctp = community_id(
            0,
            132,
            &v4("192.168.170.8"),
            &v4("192.168.170.56"),
            7,
            80,
            [0; 2],
        );
        assert_eq!(sctp.to_string(), "1:jQgCxbku+pNGw8WPbEc/TS/uTpQ=");
        let sctp_rev = community_id(
            0,
            132,
            &v4("192.168.170.56"),
            &v4("192.168.170.8"),
            80,
            7,
            [0; 2],
        );
        assert_eq!(sctp_rev, sctp);
        // ICMP echo request: type 8 pairs with its reply type 0.
        let icmp = community_id(0, 1, &v4("192.168.0.89"), &v4("192.168.0.1"), 0, 0, [8, 0]);
        assert_eq!(icmp.to_string(), "1:X0snYXpgwiv9TZtqg64sgzUn6Dk=");
        // ICMPv6 time exceeded is one-way: (type, code) and no reordering.
        let icmp6 = community_id(
            0,
            58,
            &v6("3ffe:501:0:1802:260:97ff:feb6:7ff0"),
            &v6("3ffe:507:0:1:200:86ff:fe05:80da"),
            0,
            0,
            [3, 0],
        );
        assert_eq!(icmp6.to_string(), "1:bnQKq8A2r//dWnkRW2EYcMhShjc=");
    }
}
