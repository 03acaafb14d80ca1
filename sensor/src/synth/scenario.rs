//! Composed captures: specific conversations (sessions, probes, floods,
//! tunnels, fragments) at chosen times, and the demo's attack scenario.

use std::net::{IpAddr, Ipv4Addr};

use super::*;

/// A composed capture: conversations placed at chosen times.
#[derive(Clone, Debug, Default)]
pub struct Scenario {
    packets: Vec<(u64, Vec<u8>)>,
    /// The frames' link type when not Ethernet.
    link: Option<LinkType>,
}

/// How a probed port answers a SYN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeAnswer {
    /// Closed: RST-ACK.
    Rst,
    /// Open: SYN-ACK (the prober then sends RST, as a SYN scanner does).
    SynAck,
    /// Filtered: nothing.
    Silent,
}

impl Scenario {
    /// An empty scenario.
    pub fn new() -> Self {
        Scenario::default()
    }

    /// An empty scenario whose frames (added with [`Scenario::frame`]) are
    /// of link type `link`.
    pub fn with_link(link: LinkType) -> Self {
        Scenario {
            packets: Vec::new(),
            link: Some(link),
        }
    }

    /// Packets so far.
    pub fn len(&self) -> usize {
        self.packets.len()
    }

    /// Whether no packet was added.
    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// Adds one packet at `ts_ns`.
    pub fn packet(&mut self, ts_ns: u64, spec: &PacketSpec) {
        let mut f = Vec::new();
        build_frame(spec, &mut f);
        self.packets.push((ts_ns, f));
    }

    /// Adds a ready frame at `ts_ns`.
    pub fn frame(&mut self, ts_ns: u64, frame: Vec<u8>) {
        self.packets.push((ts_ns, frame));
    }

    /// A complete TCP session: handshake, `segments` data segments of
    /// `seg_len` bytes alternating client/server (client first), FIN from the
    /// client, FIN-ACK from the server, final ACK. Packets are `gap_ns` apart.
    /// Returns the time after the last packet.
    #[allow(clippy::too_many_arguments)]
    pub fn tcp_session(
        &mut self,
        t0: u64,
        client: IpAddr,
        cport: u16,
        server: IpAddr,
        sport: u16,
        segments: usize,
        seg_len: usize,
        gap_ns: u64,
    ) -> u64 {
        use tcp::*;
        let c2s = |flags, seq| L4::Tcp {
            sport: cport,
            dport: sport,
            flags,
            seq,
            ack: 1,
        };
        let s2c = |flags, seq| L4::Tcp {
            sport,
            dport: cport,
            flags,
            seq,
            ack: 1,
        };
        let mut t = t0;
        let mut push = |sc: &mut Scenario, from_client: bool, l4: L4, payload: usize| {
            let (s, d) = if from_client {
                (client, server)
            } else {
                (server, client)
            };
            sc.packet(t, &PacketSpec::new(s, d, l4, payload));
            t += gap_ns;
        };
        push(self, true, c2s(SYN, 0), 0);
        push(self, false, s2c(SYN | ACK, 0), 0);
        push(self, true, c2s(ACK, 1), 0);
        for i in 0..segments {
            if i % 2 == 0 {
                push(self, true, c2s(PSH | ACK, 1 + i as u32), seg_len);
            } else {
                push(self, false, s2c(PSH | ACK, 1 + i as u32), seg_len);
            }
        }
        push(self, true, c2s(FIN | ACK, 9000), 0);
        push(self, false, s2c(FIN | ACK, 9000), 0);
        push(self, true, c2s(ACK, 9001), 0);
        t
    }

    /// A SYN probe and the target's answer.
    #[allow(clippy::too_many_arguments)]
    pub fn tcp_probe(
        &mut self,
        t: u64,
        src: IpAddr,
        sport: u16,
        dst: IpAddr,
        dport: u16,
        answer: ProbeAnswer,
        rtt_ns: u64,
    ) {
        use tcp::*;
        self.packet(
            t,
            &PacketSpec::new(
                src,
                dst,
                L4::Tcp {
                    sport,
                    dport,
                    flags: SYN,
                    seq: 7,
                    ack: 0,
                },
                0,
            ),
        );
        let back = |flags| L4::Tcp {
            sport: dport,
            dport: sport,
            flags,
            seq: 0,
            ack: 8,
        };
        match answer {
            ProbeAnswer::Rst => {
                self.packet(t + rtt_ns, &PacketSpec::new(dst, src, back(RST | ACK), 0))
            }
            ProbeAnswer::SynAck => {
                self.packet(t + rtt_ns, &PacketSpec::new(dst, src, back(SYN | ACK), 0));
                self.packet(
                    t + 2 * rtt_ns,
                    &PacketSpec::new(
                        src,
                        dst,
                        L4::Tcp {
                            sport,
                            dport,
                            flags: RST,
                            seq: 8,
                            ack: 0,
                        },
                        0,
                    ),
                );
            }
            ProbeAnswer::Silent => {}
        }
    }

    /// `count` request/response UDP exchanges, `gap_ns` apart.
    #[allow(clippy::too_many_arguments)]
    pub fn udp_exchange(
        &mut self,
        t0: u64,
        client: IpAddr,
        cport: u16,
        server: IpAddr,
        sport: u16,
        req: usize,
        resp: usize,
        count: usize,
        gap_ns: u64,
    ) {
        for i in 0..count as u64 {
            let t = t0 + i * gap_ns;
            self.packet(
                t,
                &PacketSpec::new(
                    client,
                    server,
                    L4::Udp {
                        sport: cport,
                        dport: sport,
                    },
                    req,
                ),
            );
            if resp > 0 {
                self.packet(
                    t + gap_ns / 4,
                    &PacketSpec::new(
                        server,
                        client,
                        L4::Udp {
                            sport,
                            dport: cport,
                        },
                        resp,
                    ),
                );
            }
        }
    }

    /// `count` ICMP echo requests each answered, `gap_ns` apart.
    pub fn icmp_echo(
        &mut self,
        t0: u64,
        src: IpAddr,
        dst: IpAddr,
        id: u16,
        count: usize,
        gap_ns: u64,
    ) {
        let (req, rep) = if src.is_ipv4() { (8, 0) } else { (128, 129) };
        for i in 0..count as u64 {
            let t = t0 + i * gap_ns;
            let q = L4::Icmp {
                icmp_type: req,
                code: 0,
                id,
                seq: i as u16,
            };
            let r = L4::Icmp {
                icmp_type: rep,
                code: 0,
                id,
                seq: i as u16,
            };
            self.packet(t, &PacketSpec::new(src, dst, q, 56));
            self.packet(t + gap_ns / 4, &PacketSpec::new(dst, src, r, 56));
        }
    }

    /// Writes the packets sorted by time (stable) as a pcap file.
    pub fn write_pcap(mut self, out: impl Write) -> io::Result<usize> {
        self.packets.sort_by_key(|(t, _)| *t);
        let mut w = PcapWriter::new(out, self.link.unwrap_or(LinkType::Ethernet))?;
        for (t, f) in &self.packets {
            w.write_packet(*t, f)?;
        }
        w.finish()?;
        Ok(self.packets.len())
    }

    /// The pcap file as bytes.
    pub fn to_pcap_bytes(self) -> Vec<u8> {
        let mut v = Vec::new();
        // Writing to a Vec cannot fail.
        let _ = self.write_pcap(&mut v);
        v
    }
}

/// The protected network of the demo scenario (TEST-NET-2).
pub const DEMO_PROTECTED: &str = "198.51.100.0/24";

/// The demo's attack scenario against a small utility network
/// (198.51.100.0/24): ordinary traffic (web and DNS clients, an HMI polling a
/// PLC over Modbus/TCP, NTP) plus a vertical and horizontal SYN scan, a SYN
/// flood from spoofed sources, an SSH brute-force attempt and a Modbus write
/// from a client that is not the HMI. Ten minutes of traffic.
pub fn demo_scenario(seed: u64) -> Scenario {
    let mut rng = Rng::new(seed);
    let mut sc = Scenario::new();
    // A fixed date in the past: collectors refuse flows from the future.
    let t0: u64 = 1_767_261_600_000_000_000; // 2026-01-01T10:00:00Z
    let s = 1_000_000_000u64;
    let ms = 1_000_000u64;
    let v4 = |a: u8, b: u8, c: u8, d: u8| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
    let web = v4(198, 51, 100, 10);
    let dns = v4(198, 51, 100, 53);
    let ssh = v4(198, 51, 100, 22);
    let plc = v4(198, 51, 100, 50);
    let hmi = v4(198, 51, 100, 100);
    let ntp = v4(198, 51, 100, 123);

    // Ordinary traffic: 150 web sessions from clients in 192.0.2.0/24.
    for i in 0..150u64 {
        let client = v4(192, 0, 2, 1 + (i % 200) as u8);
        let t = t0 + rng.below(600) * s + rng.below(1000) * ms;
        let segs = 4 + rng.below(16) as usize;
        sc.tcp_session(t, client, 40_000 + i as u16, web, 443, segs, 900, 20 * ms);
    }
    // DNS lookups and NTP.
    for i in 0..120u64 {
        let client = v4(192, 0, 2, 1 + rng.below(200) as u8);
        let t = t0 + rng.below(600) * s;
        sc.udp_exchange(t, client, 50_000 + i as u16, dns, 53, 40, 120, 1, 2 * ms);
    }
    for i in 0..10u64 {
        sc.udp_exchange(
            t0 + i * 60 * s,
            v4(198, 51, 100, 200),
            123,
            ntp,
            123,
            48,
            48,
            1,
            10 * ms,
        );
    }
    // The HMI polls the PLC every 2 s over one long Modbus/TCP session.
    {
        use tcp::*;
        let mut t = t0;
        let c = |flags, seq| L4::Tcp {
            sport: 49_500,
            dport: 502,
            flags,
            seq,
            ack: 1,
        };
        let p = |flags, seq| L4::Tcp {
            sport: 502,
            dport: 49_500,
            flags,
            seq,
            ack: 1,
        };
        sc.packet(t, &PacketSpec::new(hmi, plc, c(SYN, 0), 0));
        sc.packet(t + ms, &PacketSpec::new(plc, hmi, p(SYN | ACK, 0), 0));
        sc.packet(t + 2 * ms, &PacketSpec::new(hmi, plc, c(ACK, 1), 0));
        for k in 0..300u32 {
            t += 2 * s;
            sc.packet(t, &PacketSpec::new(hmi, plc, c(PSH | ACK, 1 + k), 12));
            sc.packet(
                t + 3 * ms,
                &PacketSpec::new(plc, hmi, p(PSH | ACK, 1 + k), 29),
            );
        }
    }

    let attacker = v4(203, 0, 113, 66);
    // Vertical scan of the web server's first 1024 ports, then a horizontal
    // sweep for SSH across the network.
    let mut t = t0 + 60 * s;
    for port in 1..=1024u16 {
        let ans = match port {
            80 | 443 => ProbeAnswer::SynAck,
            _ if port % 7 == 0 => ProbeAnswer::Silent,
            _ => ProbeAnswer::Rst,
        };
        sc.tcp_probe(t, attacker, 61_000, web, port, ans, ms);
        t += 5 * ms;
    }
    for host in 1..=254u8 {
        let ans = if host == 22 {
            ProbeAnswer::SynAck
        } else {
            ProbeAnswer::Silent
        };
        sc.tcp_probe(t, attacker, 61_001, v4(198, 51, 100, host), 22, ans, ms);
        t += 5 * ms;
    }
    // SYN flood on the web server from 3000 spoofed sources.
    let mut t = t0 + 300 * s;
    for _ in 0..3000 {
        let src = IpAddr::V4(Ipv4Addr::from(
            0x0b00_0000u32 + rng.below(0xd000_0000) as u32,
        ));
        let sport = 1024 + rng.below(60_000) as u16;
        sc.packet(
            t,
            &PacketSpec::new(
                src,
                web,
                L4::Tcp {
                    sport,
                    dport: 80,
                    flags: tcp::SYN,
                    seq: 1,
                    ack: 0,
                },
                0,
            ),
        );
        t += 300_000; // 0.3 ms: about 3300 SYN/s
    }
    // SSH brute force: 200 short sessions from one source.
    let brute = v4(203, 0, 113, 99);
    let mut t = t0 + 400 * s;
    for i in 0..200u16 {
        t = sc.tcp_session(t, brute, 30_000 + i, ssh, 22, 6, 300, 5 * ms) + 200 * ms;
    }
    // A Modbus write (function 6) from a client that is not the HMI.
    let rogue = v4(203, 0, 113, 77);
    sc.tcp_session(t0 + 500 * s, rogue, 45_000, plc, 502, 2, 12, 10 * ms);
    sc
}
