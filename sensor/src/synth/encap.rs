//! Encapsulations written byte for byte as their specifications lay them
//! out, for tests of what real captures rarely hold: UDP tunnels (GTP-U,
//! Teredo, AYIYA, GRE in UDP, L2TP, MPLS in UDP), L2TPv3 over IP, the
//! layer-2 headers before an inner frame (PPPoE, 802.1ah, VN-Tag,
//! FabricPath, NSH, MPLS pseudowires) and 802.11 frames behind radiotap.

use std::net::IpAddr;

use super::{
    Encap, L4, MAC_A, MAC_B, PacketSpec, ethertype, push_ether, push_ip, push_l4,
    transport_checksum,
};

/// A tunnel carried in UDP, on its registered port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdpTunnel {
    /// GTP-U G-PDU (port 2152) for tunnel endpoint `teid`; with
    /// `extension`, its sequence word and a PDU session container
    /// extension header (5G N3).
    GtpU {
        /// Tunnel endpoint identifier.
        teid: u32,
        /// Whether to add the extension header.
        extension: bool,
    },
    /// Teredo (port 3544), with the authentication and origin indicators
    /// a server and relay add. The inner packet must be IPv6.
    Teredo {
        /// An authentication indicator (no client id or value, a nonce).
        auth: bool,
        /// An origin indication (obfuscated port and address).
        origin: bool,
    },
    /// AYIYA (port 5072): a 16-byte identity and a SHA-1 signature.
    Ayiya,
    /// GRE in UDP (RFC 8086, port 4754).
    GreUdp,
    /// L2TPv2 data message (port 1701) with its length field, PPP inside.
    L2tpV2,
    /// L2TPv3 over UDP (port 1701): an Ethernet pseudowire after a
    /// session id and a `cookie`-byte cookie (0, 4 or 8).
    L2tpV3 {
        /// Cookie length.
        cookie: u8,
    },
    /// MPLS in UDP (RFC 7510, port 6635): one label.
    MplsUdp,
}

impl UdpTunnel {
    /// The UDP ports (source, destination) the tunnel uses from the
    /// endpoint that opened it, or (`reply`) from the other. GTP-U, AYIYA
    /// and L2TP use their port on both sides; a Teredo server answers from
    /// its port; GRE and MPLS in UDP send to the registered port from a
    /// source port of their own choosing either way.
    pub fn ports(self, reply: bool) -> (u16, u16) {
        match (self, reply) {
            (UdpTunnel::GtpU { .. }, _) => (2152, 2152),
            (UdpTunnel::Teredo { .. }, false) => (50_001, 3544),
            (UdpTunnel::Teredo { .. }, true) => (3544, 50_001),
            (UdpTunnel::Ayiya, _) => (5072, 5072),
            (UdpTunnel::GreUdp, false) => (50_002, 4754),
            (UdpTunnel::GreUdp, true) => (50_012, 4754),
            (UdpTunnel::L2tpV2 | UdpTunnel::L2tpV3 { .. }, _) => (1701, 1701),
            (UdpTunnel::MplsUdp, false) => (50_003, 6635),
            (UdpTunnel::MplsUdp, true) => (50_013, 6635),
        }
    }
}

/// A layer-2 encapsulation: headers between the frame's Ethernet header
/// and the IP packet (or an inner Ethernet frame), with no outer IP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkEncap {
    /// A PPPoE session (EtherType 0x8864), PPP inside.
    Pppoe {
        /// Session id.
        session: u16,
    },
    /// 802.1ah provider backbone bridging: a B-tag, the I-tag with this
    /// service id, then the customer's frame.
    Pbb {
        /// 24-bit service instance id.
        isid: u32,
    },
    /// A Cisco VN-Tag (EtherType 0x8926) before the IP EtherType.
    VnTag,
    /// Cisco FabricPath: outer addresses, EtherType 0x8903 with the
    /// forwarding tag and TTL, then the classical Ethernet frame, then
    /// the frame check sequence (which FabricPath captures keep).
    FabricPath,
    /// A Network Service Header, MD type 1 (24 bytes), IP inside.
    Nsh,
    /// An MPLS pseudowire carrying an Ethernet frame, with or without the
    /// control word.
    MplsPw {
        /// The pseudowire's label.
        label: u32,
        /// Whether the 4-byte control word precedes the frame.
        control_word: bool,
    },
}

/// The Ethernet frame (no VLAN) around an IP packet.
fn inner_ether(ip: &[u8]) -> Vec<u8> {
    let mut e = Vec::with_capacity(14 + ip.len());
    push_ether(&mut e, [0; 2], ip_ethertype(ip));
    e.extend_from_slice(ip);
    e
}

fn ip_ethertype(ip: &[u8]) -> u16 {
    if ip.first().is_some_and(|b| b >> 4 == 6) {
        0x86dd
    } else {
        0x0800
    }
}

/// Appends an outer IP header of protocol `proto` from `src` to `dst` and
/// then `body`.
fn outer_ip(out: &mut Vec<u8>, src: IpAddr, dst: IpAddr, proto: u8, id: u16, body: &[u8]) {
    push_ip(out, src, dst, proto, body.len(), id, 0);
    out.extend_from_slice(body);
}

/// The UDP payload of a tunnel around the IP packet `ip`.
fn udp_payload(t: UdpTunnel, ip: &[u8]) -> Vec<u8> {
    let mut p = Vec::new();
    match t {
        UdpTunnel::GtpU { teid, extension } => {
            // Version 1, protocol type GTP, E when extended; G-PDU (255);
            // the length counts everything after the first 8 bytes.
            let opt: &[u8] = if extension {
                // Sequence 0, N-PDU 0, next: PDU session container (0x85),
                // one word: UL PDU session information, QFI 9, no next.
                &[0, 0, 0, 0x85, 1, 0x10, 0x09, 0]
            } else {
                &[]
            };
            p.push(if extension { 0x34 } else { 0x30 });
            p.push(0xff);
            p.extend_from_slice(&((opt.len() + ip.len()) as u16).to_be_bytes());
            p.extend_from_slice(&teid.to_be_bytes());
            p.extend_from_slice(opt);
        }
        UdpTunnel::Teredo { auth, origin } => {
            if auth {
                // Indicator, client id and authentication value lengths
                // (none), an 8-byte nonce, the confirmation byte.
                p.extend_from_slice(&[0, 1, 0, 0]);
                p.extend_from_slice(&[0x5a, 0x11, 0x7e, 0x0d, 0x1c, 0xe0, 0x42, 0x99]);
                p.push(0);
            }
            if origin {
                // Indicator, port 40000 and 192.0.2.45, each inverted.
                p.extend_from_slice(&[0, 0]);
                p.extend_from_slice(&(!40_000u16).to_be_bytes());
                p.extend_from_slice(&[!192, !0, !2, !45]);
            }
        }
        UdpTunnel::Ayiya => {
            // Identity 2^4 = 16 bytes, an IPv6 address (type 1); signature
            // 5 words, SHA-1 (2); shared-secret authentication (1),
            // forward (1); the next header; the epoch time.
            let next = if ip_ethertype(ip) == 0x86dd { 41 } else { 4 };
            p.extend_from_slice(&[0x41, 0x52, 0x11, next]);
            p.extend_from_slice(&1_700_000_000u32.to_be_bytes());
            p.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
            p.extend_from_slice(&[0; 11]);
            p.push(0x01);
            p.extend_from_slice(&[0xa5; 20]);
        }
        UdpTunnel::GreUdp => {
            p.extend_from_slice(&[0, 0]);
            p.extend_from_slice(&ip_ethertype(ip).to_be_bytes());
        }
        UdpTunnel::L2tpV2 => {
            // Data message with the length bit, version 2; tunnel 7,
            // session 9; PPP with address and control, then its protocol.
            let proto: u16 = if ip_ethertype(ip) == 0x86dd {
                0x0057
            } else {
                0x0021
            };
            let len = 2 + 2 + 4 + 4 + ip.len();
            p.extend_from_slice(&[0x40, 0x02]);
            p.extend_from_slice(&(len as u16).to_be_bytes());
            p.extend_from_slice(&[0, 7, 0, 9, 0xff, 0x03]);
            p.extend_from_slice(&proto.to_be_bytes());
        }
        UdpTunnel::L2tpV3 { cookie } => {
            // Data (T = 0), version 3, reserved; then as over IP.
            p.extend_from_slice(&[0, 3, 0, 0]);
            p.extend_from_slice(&l2tpv3_payload(cookie, ip));
            return p;
        }
        UdpTunnel::MplsUdp => {
            p.extend_from_slice(&mpls_label(1000, true));
        }
    }
    p.extend_from_slice(ip);
    p
}

/// L2TPv3 from the session id on: session 0x2a, the cookie, the Ethernet
/// frame.
fn l2tpv3_payload(cookie: u8, ip: &[u8]) -> Vec<u8> {
    let mut p = vec![0, 0, 0, 0x2a];
    p.extend((0..cookie).map(|i| 0xc0 | i));
    p.extend_from_slice(&inner_ether(ip));
    p
}

/// The UDP checksum of `udp` (its checksum field zero) between `src` and
/// `dst`: the pseudo-header, then the datagram; 0 is sent as 0xffff.
fn udp_checksum(src: IpAddr, dst: IpAddr, udp: &[u8]) -> u16 {
    match transport_checksum(src, dst, 17, udp) {
        0 => 0xffff,
        c => c,
    }
}

fn mpls_label(label: u32, bottom: bool) -> [u8; 4] {
    ((label << 12) | if bottom { 0x100 } else { 0 } | 64).to_be_bytes()
}

/// The frame of a spec whose encapsulation is one of this module's
/// ([`Encap::Udp`], [`Encap::L2tpv3`], [`Encap::Link`]), around the IP
/// packet `ip`.
pub(super) fn wrap(spec: &PacketSpec, ip: &[u8], out: &mut Vec<u8>) {
    match spec.encap {
        Encap::Udp {
            outer_src,
            outer_dst,
            tunnel,
            reply,
        } => {
            let (sport, dport) = tunnel.ports(reply);
            let body = udp_payload(tunnel, ip);
            let mut udp = Vec::with_capacity(8 + body.len());
            push_l4(&mut udp, &L4::Udp { sport, dport }, 0);
            udp[4..6].copy_from_slice(&((8 + body.len()) as u16).to_be_bytes());
            udp.extend_from_slice(&body);
            // The checksum (IPv6 requires one).
            let sum = udp_checksum(outer_src, outer_dst, &udp);
            udp[6..8].copy_from_slice(&sum.to_be_bytes());
            push_ether(out, spec.vlan, ethertype(outer_src));
            outer_ip(out, outer_src, outer_dst, 17, spec.ip_id, &udp);
        }
        Encap::L2tpv3 {
            outer_src,
            outer_dst,
            cookie,
        } => {
            push_ether(out, spec.vlan, ethertype(outer_src));
            let body = l2tpv3_payload(cookie, ip);
            outer_ip(out, outer_src, outer_dst, 115, spec.ip_id, &body);
        }
        Encap::Link(l) => link(l, spec.vlan, ip, out),
        _ => unreachable!("not an encapsulation of synth::encap"),
    }
}

fn link(l: LinkEncap, vlan: [u16; 2], ip: &[u8], out: &mut Vec<u8>) {
    match l {
        LinkEncap::Pppoe { session } => {
            let proto: u16 = if ip_ethertype(ip) == 0x86dd {
                0x0057
            } else {
                0x0021
            };
            push_ether(out, vlan, 0x8864);
            out.extend_from_slice(&[0x11, 0x00]);
            out.extend_from_slice(&session.to_be_bytes());
            out.extend_from_slice(&((2 + ip.len()) as u16).to_be_bytes());
            out.extend_from_slice(&proto.to_be_bytes());
            out.extend_from_slice(ip);
        }
        LinkEncap::Pbb { isid } => {
            // Backbone addresses, the B-tag (802.1ad, B-VID 100), the
            // I-tag (priority 0, no flags, the service id).
            out.extend_from_slice(&[0x02, 0, 0, 0, 0xbb, 0x02]);
            out.extend_from_slice(&[0x02, 0, 0, 0, 0xbb, 0x01]);
            out.extend_from_slice(&[0x88, 0xa8, 0x00, 100]);
            out.extend_from_slice(&[0x88, 0xe7]);
            out.extend_from_slice(&(isid & 0x00ff_ffff).to_be_bytes());
            let mut inner = Vec::new();
            push_ether(&mut inner, vlan, ip_ethertype(ip));
            inner.extend_from_slice(ip);
            out.extend_from_slice(&inner);
        }
        LinkEncap::VnTag => {
            push_ether(out, vlan, 0x8926);
            // Direction 1 (from the bridge), destination VIF 5, version 0,
            // source VIF 9.
            out.extend_from_slice(&[0x80, 0x05, 0x00, 0x09]);
            out.extend_from_slice(&ip_ethertype(ip).to_be_bytes());
            out.extend_from_slice(ip);
        }
        LinkEncap::FabricPath => {
            // Outer switch addresses (switch ids 0x0101 and 0x0202), the
            // FabricPath EtherType, forwarding tag 1 and TTL 32.
            out.extend_from_slice(&[0x02, 0x01, 0x01, 0x00, 0x00, 0x01]);
            out.extend_from_slice(&[0x02, 0x02, 0x02, 0x00, 0x00, 0x01]);
            let start = out.len();
            out.extend_from_slice(&[0x89, 0x03, 0x00, 0x60]);
            push_ether(out, vlan, ip_ethertype(ip));
            out.extend_from_slice(ip);
            // The frame check sequence FabricPath frames are captured with.
            let fcs = crc32fast::hash(&out[start - 12..]);
            out.extend_from_slice(&fcs.to_le_bytes());
        }
        LinkEncap::Nsh => {
            push_ether(out, vlan, 0x894f);
            // Version 0, TTL 63, length 6 words; MD type 1; next protocol;
            // service path 42, index 255; four context words.
            let next = if ip_ethertype(ip) == 0x86dd { 2 } else { 1 };
            out.extend_from_slice(&[0x0f, 0xc6, 0x01, next]);
            out.extend_from_slice(&[0, 0, 42, 255]);
            out.extend_from_slice(&[0; 16]);
            out.extend_from_slice(ip);
        }
        LinkEncap::MplsPw {
            label,
            control_word,
        } => {
            push_ether(out, vlan, 0x8847);
            out.extend_from_slice(&mpls_label(label, true));
            if control_word {
                out.extend_from_slice(&[0, 0, 0, 1]);
            }
            out.extend_from_slice(&inner_ether(ip));
        }
    }
}

/// How an 802.11 data frame is written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Wlan {
    /// Whether the frame ends with its FCS (radiotap's flags say so).
    pub fcs: bool,
    /// A QoS data frame with an HT control field (the order bit).
    pub htc: bool,
    /// Between two access points (To DS and From DS: four addresses).
    pub wds: bool,
    /// The body an A-MSDU of two subframes, each carrying the packet.
    pub amsdu: bool,
}

/// A radiotap header (TSFT, flags, rate) and an 802.11 QoS data frame
/// from a station to its access point carrying the IP packet `ip`
/// (LINKTYPE_IEEE802_11_RADIOTAP).
pub fn wlan_frame(ip: &[u8], w: Wlan) -> Vec<u8> {
    let mut mac = Vec::new();
    // Frame control: data, QoS data subtype (8); To DS, or both for WDS;
    // the order bit for an HT control field.
    let mut flags = if w.wds { 0x03 } else { 0x01 };
    if w.htc {
        flags |= 0x80;
    }
    mac.extend_from_slice(&[0x88, flags, 0x2c, 0x00]);
    mac.extend_from_slice(&MAC_B); // receiver: the access point
    mac.extend_from_slice(&MAC_A); // transmitter: the station
    mac.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x0c]); // destination
    mac.extend_from_slice(&0x0010u16.to_le_bytes()); // sequence 1, fragment 0
    if w.wds {
        mac.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x0d]);
    }
    // QoS control: TID 0, the A-MSDU bit.
    mac.extend_from_slice(&[if w.amsdu { 0x80 } else { 0x00 }, 0x00]);
    if w.htc {
        mac.extend_from_slice(&[0, 0, 0, 0]);
    }
    let mut snap = vec![0xaa, 0xaa, 0x03, 0, 0, 0];
    snap.extend_from_slice(&ip_ethertype(ip).to_be_bytes());
    snap.extend_from_slice(ip);
    if w.amsdu {
        // Each subframe but the last padded to four bytes.
        let body = mac.len();
        for i in 0..2 {
            if i == 1 {
                mac.resize(body + (mac.len() - body).next_multiple_of(4), 0);
            }
            mac.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x0c]);
            mac.extend_from_slice(&MAC_A);
            mac.extend_from_slice(&(snap.len() as u16).to_be_bytes());
            mac.extend_from_slice(&snap);
        }
    } else {
        mac.extend_from_slice(&snap);
    }
    radiotap_around(mac, w.fcs)
}

/// An 802.11 beacon (a management frame: no IP) behind radiotap.
pub fn wlan_beacon() -> Vec<u8> {
    let mut mac = vec![0x80, 0x00, 0x00, 0x00];
    mac.extend_from_slice(&[0xff; 6]);
    mac.extend_from_slice(&MAC_B);
    mac.extend_from_slice(&MAC_B);
    mac.extend_from_slice(&[0x20, 0x00]);
    // Timestamp, interval 100 TU, capabilities (ESS), SSID "vigil".
    mac.extend_from_slice(&[0; 8]);
    mac.extend_from_slice(&[0x64, 0x00, 0x01, 0x00]);
    mac.extend_from_slice(&[0, 5, b'v', b'i', b'g', b'i', b'l']);
    radiotap_around(mac, true)
}

fn radiotap_around(mac: Vec<u8>, fcs: bool) -> Vec<u8> {
    // Version 0, length 18, present: TSFT, flags, rate; TSFT at 8 (its
    // alignment), flags, rate (54 Mb/s in 500 kb/s units).
    let mut f = vec![0, 0, 18, 0, 0x07, 0, 0, 0];
    f.extend_from_slice(&1_000_000u64.to_le_bytes());
    f.push(if fcs { 0x10 } else { 0 });
    f.push(108);
    f.extend_from_slice(&mac);
    if fcs {
        f.extend_from_slice(&crc32fast::hash(&mac).to_le_bytes());
    }
    f
}
