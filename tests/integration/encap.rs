//! The encapsulations the corpus lacks, written by the synthesizer byte for
//! byte as their specifications lay them out: each capture's flows are
//! asserted exactly (the inner conversation with its tunnel and outer
//! endpoints, the outer flow, every packet), and tshark, an independent
//! decoder, must dissect every frame down to the inner TCP header without
//! a malformed-packet or error report.

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;

use vigil_proto::{FlowRecord, TunnelType};
use vigil_sensor::capture::LinkType;
use vigil_sensor::decode::DecodeError;
use vigil_sensor::synth::{
    Encap, L4, LinkEncap, PacketSpec, Scenario, UdpTunnel, Wlan, build_frame, fragment_frames,
    ip_packet, tcp, wlan_beacon, wlan_frame,
};

use crate::util::{FOREVER, config, run_bytes, skip};
use vigil_sensor::rewrite::{Rewriter, V6_PREFIX};

const T0: u64 = 1_700_000_000_000_000_000;
const MS: u64 = 1_000_000;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

type Outer = (u8, Option<u16>, Option<u16>, u64, u64);

/// One encapsulation under test.
struct Case {
    name: &'static str,
    /// The encapsulation of client-to-server packets; `reverse` of the
    /// others (outer endpoints swapped).
    encap: Encap,
    reverse: Encap,
    /// The inner flow's tunnel type, `None` for layer-2 encapsulations.
    kind: Option<TunnelType>,
    /// The outer flows: protocol, ports, packets each way.
    outer: &'static [Outer],
    /// The protocols tshark must name for every frame, in order.
    tshark: &'static str,
    /// Preferences tshark needs (what it would learn from a control
    /// connection the capture does not hold).
    prefs: &'static [&'static str],
}

fn udp(a: IpAddr, b: IpAddr, tunnel: UdpTunnel) -> (Encap, Encap) {
    (
        Encap::Udp {
            outer_src: a,
            outer_dst: b,
            tunnel,
            reply: false,
        },
        Encap::Udp {
            outer_src: b,
            outer_dst: a,
            tunnel,
            reply: true,
        },
    )
}

fn cases(v6: bool) -> Vec<Case> {
    let (a, b) = (ip("192.0.2.10"), ip("192.0.2.20"));
    let (a6, b6) = (ip("2001:db8::a"), ip("2001:db8::b"));
    let inner_ip = if v6 { "ipv6" } else { "ip" };
    let mut v = Vec::new();
    let mut add = |name, (encap, reverse): (Encap, Encap), kind, outer, tshark: &'static str| {
        v.push(Case {
            name,
            encap,
            reverse,
            kind,
            outer,
            tshark,
            prefs: &[],
        })
    };
    let same = |e: Encap| (e, e);
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let gtp = UdpTunnel::GtpU {
        teid: 0x1234,
        extension: false,
    };
    let gtp_ext = UdpTunnel::GtpU {
        teid: 0x1234,
        extension: true,
    };
    add(
        "gtp-u",
        udp(a, b, gtp),
        Some(TunnelType::GtpU),
        &[(17, Some(2152), Some(2152), 5, 3)],
        leak(format!("eth:ethertype:ip:udp:gtp:{inner_ip}:tcp")),
    );
    add(
        "gtp-u with an extension header, outer IPv6",
        udp(a6, b6, gtp_ext),
        Some(TunnelType::GtpU),
        &[(17, Some(2152), Some(2152), 5, 3)],
        leak(format!("eth:ethertype:ipv6:udp:gtp:{inner_ip}:tcp")),
    );
    add(
        "ayiya",
        udp(a, b, UdpTunnel::Ayiya),
        Some(TunnelType::Ayiya),
        &[(17, Some(5072), Some(5072), 5, 3)],
        leak(format!("eth:ethertype:ip:udp:ayiya:{inner_ip}:tcp")),
    );
    add(
        "gre in udp",
        udp(a, b, UdpTunnel::GreUdp),
        Some(TunnelType::GreUdp),
        &[
            (17, Some(50_002), Some(4754), 5, 0),
            (17, Some(50_012), Some(4754), 3, 0),
        ],
        leak(format!("eth:ethertype:ip:udp:gre:{inner_ip}:tcp")),
    );
    add(
        "l2tpv2",
        udp(a, b, UdpTunnel::L2tpV2),
        Some(TunnelType::L2tp),
        &[(17, Some(1701), Some(1701), 5, 3)],
        leak(format!("eth:ethertype:ip:udp:l2tp:ppp:{inner_ip}:tcp")),
    );
    add(
        "mpls in udp",
        udp(a, b, UdpTunnel::MplsUdp),
        Some(TunnelType::MplsUdp),
        &[
            (17, Some(50_003), Some(6635), 5, 0),
            (17, Some(50_013), Some(6635), 3, 0),
        ],
        leak(format!("eth:ethertype:ip:udp:mpls:{inner_ip}:tcp")),
    );
    for cookie in [0, 4, 8] {
        add(
            "l2tpv3 over ip",
            (
                Encap::L2tpv3 {
                    outer_src: a,
                    outer_dst: b,
                    cookie,
                },
                Encap::L2tpv3 {
                    outer_src: b,
                    outer_dst: a,
                    cookie,
                },
            ),
            Some(TunnelType::L2tp),
            &[(115, None, None, 5, 3)],
            leak(format!("eth:ethertype:ip:l2tp:ethertype:{inner_ip}:tcp")),
        );
    }
    add(
        "l2tpv3 over udp",
        udp(a, b, UdpTunnel::L2tpV3 { cookie: 4 }),
        Some(TunnelType::L2tp),
        &[(17, Some(1701), Some(1701), 5, 3)],
        leak(format!(
            "eth:ethertype:ip:udp:l2tp:ethertype:{inner_ip}:tcp"
        )),
    );
    if v6 {
        for (auth, origin) in [(false, false), (true, false), (false, true), (true, true)] {
            add(
                "teredo",
                udp(a, b, UdpTunnel::Teredo { auth, origin }),
                Some(TunnelType::Teredo),
                &[(17, Some(50_001), Some(3544), 5, 3)],
                "eth:ethertype:ip:udp:teredo:ipv6:tcp",
            );
        }
    }
    add(
        "pppoe",
        same(Encap::Link(LinkEncap::Pppoe { session: 0x0b0b })),
        None,
        &[],
        leak(format!("eth:ethertype:pppoes:ppp:{inner_ip}:tcp")),
    );
    add(
        "802.1ah",
        same(Encap::Link(LinkEncap::Pbb { isid: 0x00ab_cdef })),
        None,
        &[],
        leak(format!("eth:ethertype:ieee8021ad:ethertype:{inner_ip}:tcp")),
    );
    add(
        "vn-tag",
        same(Encap::Link(LinkEncap::VnTag)),
        None,
        &[],
        leak(format!("eth:ethertype:vntag:ethertype:{inner_ip}:tcp")),
    );
    add(
        "fabricpath",
        same(Encap::Link(LinkEncap::FabricPath)),
        None,
        &[],
        leak(format!("eth:cfp:eth:ethertype:{inner_ip}:tcp")),
    );
    add(
        "nsh",
        same(Encap::Link(LinkEncap::Nsh)),
        None,
        &[],
        leak(format!("eth:ethertype:nsh:{inner_ip}:tcp")),
    );
    for control_word in [true, false] {
        add(
            "mpls pseudowire",
            same(Encap::Link(LinkEncap::MplsPw {
                label: 77,
                control_word,
            })),
            None,
            &[],
            leak(format!("eth:ethertype:mpls:eth:ethertype:{inner_ip}:tcp")),
        );
    }
    for case in &mut v {
        // Wireshark 4.0 guesses a pseudowire's control word from whether
        // the bytes after the label name a known vendor: told here.
        if let Encap::Link(LinkEncap::MplsPw { control_word, .. }) = case.encap {
            case.prefs = if control_word {
                &["-d", "mpls.label==77,pwethcw"]
            } else {
                &["-d", "mpls.label==77,pwethnocw"]
            };
            continue;
        }
        let cookie = match case.encap {
            Encap::L2tpv3 { cookie, .. }
            | Encap::Udp {
                tunnel: UdpTunnel::L2tpV3 { cookie },
                ..
            } => cookie,
            _ => continue,
        };
        case.prefs = match cookie {
            0 => L2TPV3_PREFS[0],
            4 => L2TPV3_PREFS[1],
            _ => L2TPV3_PREFS[2],
        };
    }
    v
}

/// How tshark must read L2TPv3 sessions with no cookie, a 4-byte and an
/// 8-byte one (its heuristic learns these from the control connection).
const L2TPV3_PREFS: [&[&str]; 3] = [
    &[
        "-o",
        "l2tp.cookie_size:None",
        "-o",
        "l2tp.l2_specific:None",
        "-d",
        "l2tp.pw_type==0,eth",
    ],
    &[
        "-o",
        "l2tp.cookie_size:4 Byte Cookie",
        "-o",
        "l2tp.l2_specific:None",
        "-d",
        "l2tp.pw_type==0,eth",
    ],
    &[
        "-o",
        "l2tp.cookie_size:8 Byte Cookie",
        "-o",
        "l2tp.l2_specific:None",
        "-d",
        "l2tp.pw_type==0,eth",
    ],
];

/// A TCP session of eight packets (five from the client, three from the
/// server) with a 100-byte request and a 1000-byte response, each packet
/// in the case's encapsulation. Returns the capture and the IP bytes each
/// way.
fn session(case: &Case, c: IpAddr, s: IpAddr) -> (Vec<Vec<u8>>, u64, u64) {
    use tcp::{ACK, FIN, PSH, SYN};
    // (from the client, flags, payload, sequence and acknowledgement
    // numbers): a well-formed exchange, so that tshark's sequence analysis
    // has nothing to report.
    let steps = [
        (true, SYN, 0, 1000, 0),
        (false, SYN | ACK, 0, 5000, 1001),
        (true, ACK, 0, 1001, 5001),
        (true, PSH | ACK, 100, 1001, 5001),
        (false, PSH | ACK, 1000, 5001, 1101),
        (true, FIN | ACK, 0, 1101, 6001),
        (false, FIN | ACK, 0, 6001, 1102),
        (true, ACK, 0, 1102, 6002),
    ];
    let mut frames = Vec::new();
    let (mut fwd, mut rev) = (0, 0);
    for (from_client, flags, len, seq, ack) in steps {
        let (src, dst, sport, dport) = if from_client {
            (c, s, 40_000, 443)
        } else {
            (s, c, 443, 40_000)
        };
        let l4 = L4::Tcp {
            sport,
            dport,
            flags,
            seq,
            ack,
        };
        let mut spec = PacketSpec::new(src, dst, l4, len);
        spec.encap = if from_client {
            case.encap
        } else {
            case.reverse
        };
        let mut ipp = Vec::new();
        ip_packet(&spec, &mut ipp);
        if from_client {
            fwd += ipp.len() as u64;
        } else {
            rev += ipp.len() as u64;
        }
        let mut f = Vec::new();
        build_frame(&spec, &mut f);
        frames.push(f);
    }
    (frames, fwd, rev)
}

/// A capture of `frames`, a millisecond apart.
fn pcap(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut sc = Scenario::new();
    for (i, f) in frames.iter().enumerate() {
        sc.frame(T0 + i as u64 * MS, f.clone());
    }
    sc.to_pcap_bytes()
}

fn check_flows(case: &Case, recs: &[FlowRecord], c: IpAddr, s: IpAddr, fwd: u64, rev: u64) {
    let name = case.name;
    let inner = recs
        .iter()
        .find(|r| r.proto == 6)
        .unwrap_or_else(|| panic!("{name}: no inner flow in {recs:?}"));
    assert_eq!(
        (inner.src_ip, inner.src_port, inner.dst_ip, inner.dst_port),
        (c, Some(40_000), s, Some(443)),
        "{name}"
    );
    assert_eq!(
        (
            inner.fwd_packets,
            inner.fwd_bytes,
            inner.rev_packets,
            inner.rev_bytes
        ),
        (5, fwd, 3, rev),
        "{name}"
    );
    assert_eq!(inner.history.to_string(), "ShADdFf", "{name}");
    match (case.kind, inner.tunnel) {
        (None, None) => {}
        (Some(kind), Some(t)) => {
            let (Encap::Udp {
                outer_src,
                outer_dst,
                ..
            }
            | Encap::L2tpv3 {
                outer_src,
                outer_dst,
                ..
            }) = case.encap
            else {
                unreachable!()
            };
            assert_eq!(
                (t.kind, t.outer_src, t.outer_dst),
                (kind, outer_src, outer_dst),
                "{name}"
            );
        }
        other => panic!("{name}: tunnel {other:?}"),
    }
    assert_eq!(recs.len(), 1 + case.outer.len(), "{name}: {recs:?}");
    for &(proto, sport, dport, f, r) in case.outer {
        let outer = recs
            .iter()
            .find(|o| (o.proto, o.src_port, o.dst_port) == (proto, sport, dport))
            .unwrap_or_else(|| panic!("{name}: no outer flow {sport:?} > {dport:?} in {recs:?}"));
        assert_eq!((outer.fwd_packets, outer.rev_packets), (f, r), "{name}");
        assert_eq!(outer.tunnel, None, "{name}");
    }
}

#[test]
fn every_encapsulation_yields_its_inner_and_outer_flows() {
    for v6 in [false, true] {
        let (c, s) = if v6 {
            (ip("2001:db8:1::1"), ip("2001:db8:2::2"))
        } else {
            (ip("10.1.1.1"), ip("10.2.2.2"))
        };
        for case in cases(v6) {
            let (frames, fwd, rev) = session(&case, c, s);
            let pcap = pcap(&frames);
            for workers in [1, 2] {
                let (recs, report) = run_bytes(&pcap, &config(workers, 256, FOREVER));
                assert_eq!(
                    report.decode.error_total(),
                    0,
                    "{}: {:?}",
                    case.name,
                    report.decode
                );
                check_flows(&case, &recs, c, s, fwd, rev);
            }
        }
    }
}

/// What tshark makes of one frame.
struct Dissected {
    /// The protocol chain (`frame.protocols`), without trailing data.
    protos: String,
    /// Expert severities, comma-separated.
    severity: String,
    /// The innermost IPv4 or IPv6 source address.
    inner_src: String,
}

/// tshark's reading of every frame of a capture.
fn tshark_dissect(path: &Path, prefs: &[&str]) -> Option<Vec<Dissected>> {
    let out = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(path)
        .args(prefs)
        .args(["-T", "fields", "-E", "separator=|", "-E", "occurrence=l"])
        .args(["-e", "frame.protocols", "-e", "_ws.expert.severity"])
        .args(["-e", "ip.src", "-e", "ipv6.src"])
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    Some(
        text.lines()
            .map(|l| {
                let f: Vec<&str> = l.split('|').collect();
                let protos = f[0].strip_suffix(":data").unwrap_or(f[0]).to_string();
                // The innermost address is of the innermost IP version.
                let v6_last =
                    protos.rfind(":ipv6:").unwrap_or(0) > protos.rfind(":ip:").unwrap_or(0);
                Dissected {
                    severity: f.get(1).unwrap_or(&"").to_string(),
                    inner_src: if v6_last { f[3] } else { f[2] }.to_string(),
                    protos,
                }
            })
            .collect(),
    )
}

/// Whether an expert severity list holds a warning (6291456) or an error
/// (8388608): Wireshark's levels, malformed packets among the errors.
fn warned(severity: &str) -> bool {
    severity
        .split(',')
        .any(|s| matches!(s, "6291456" | "8388608"))
}

#[test]
fn tshark_dissects_every_synthesized_encapsulation() {
    if Command::new("tshark").arg("-v").output().is_err() {
        return skip("tshark is not installed (Debian package tshark)");
    }
    crate::util::ran_with("tshark");
    let dir = tempfile::tempdir().unwrap();
    for v6 in [false, true] {
        let (c, s) = if v6 {
            (ip("2001:db8:1::1"), ip("2001:db8:2::2"))
        } else {
            (ip("10.1.1.1"), ip("10.2.2.2"))
        };
        for (i, case) in cases(v6).iter().enumerate() {
            let path = dir.path().join(format!("{i}-{v6}.pcap"));
            std::fs::write(&path, pcap(&session(case, c, s).0)).unwrap();
            let frames = tshark_dissect(&path, case.prefs).unwrap();
            assert_eq!(frames.len(), 8);
            for (n, d) in frames.iter().enumerate() {
                let what = format!("{} (v6 {v6}) frame {}", case.name, n + 1);
                assert_eq!(d.protos, case.tshark, "{what}");
                assert!(
                    !warned(&d.severity),
                    "{what}: expert severity {}",
                    d.severity
                );
            }
            // The innermost source of each packet, as the session sent it.
            let sources: Vec<String> = frames.iter().map(|d| d.inner_src.clone()).collect();
            let expect: Vec<String> = [c, s, c, c, s, c, s, c]
                .iter()
                .map(|a| a.to_string())
                .collect();
            assert_eq!(sources, expect, "{} (v6 {v6})", case.name);
        }
    }
}

#[test]
fn the_replay_rewriter_opens_every_encapsulation() {
    // Rewritten frames name only test addresses (the rewriter checks
    // that by decoding each before it lets it go) and keep their flows.
    for v6 in [false, true] {
        let (c, s) = if v6 {
            (ip("2001:db8:1::1"), ip("2001:db8:2::2"))
        } else {
            (ip("10.1.1.1"), ip("10.2.2.2"))
        };
        for case in cases(v6) {
            let (frames, fwd, rev) = session(&case, c, s);
            let mut rw = Rewriter::new();
            let rewritten: Vec<Vec<u8>> = frames
                .iter()
                .map(|f| {
                    let mut out = Vec::new();
                    rw.rewrite(LinkType::Ethernet, f, &mut out)
                        .unwrap_or_else(|e| panic!("{} (v6 {v6}): {e:?}", case.name));
                    out
                })
                .collect();
            let (recs, report) = run_bytes(&pcap(&rewritten), &config(1, 256, FOREVER));
            assert_eq!(report.decode.error_total(), 0, "{}", case.name);
            assert_eq!(recs.len(), 1 + case.outer.len(), "{}: {recs:?}", case.name);
            let inner = recs.iter().find(|r| r.proto == 6).unwrap();
            assert_eq!(
                (inner.fwd_packets, inner.fwd_bytes),
                (5, fwd),
                "{}",
                case.name
            );
            assert_eq!(
                (inner.rev_packets, inner.rev_bytes),
                (3, rev),
                "{}",
                case.name
            );
            for a in [inner.src_ip, inner.dst_ip] {
                let test_range = match a {
                    IpAddr::V4(a) => a.is_loopback(),
                    IpAddr::V6(a) => a.octets()[..8] == V6_PREFIX,
                };
                assert!(test_range, "{}: {a}", case.name);
            }
        }
    }
}

#[test]
fn gtp_u_carries_inner_fragments_to_one_reassembled_packet() {
    let (a, b) = (ip("192.0.2.10"), ip("192.0.2.20"));
    let (c, s) = (ip("10.1.1.1"), ip("10.2.2.2"));
    let mut spec = PacketSpec::new(
        c,
        s,
        L4::Udp {
            sport: 5000,
            dport: 53,
        },
        3000,
    );
    spec.ip_id = 77;
    spec.encap = Encap::Udp {
        outer_src: a,
        outer_dst: b,
        tunnel: UdpTunnel::GtpU {
            teid: 9,
            extension: true,
        },
        reply: false,
    };
    let frames = fragment_frames(&spec, 1400);
    assert_eq!(frames.len(), 3);
    let mut sc = Scenario::new();
    for (i, f) in frames.into_iter().enumerate() {
        sc.frame(T0 + i as u64 * MS, f);
    }
    let (recs, report) = run_bytes(&sc.to_pcap_bytes(), &config(1, 256, FOREVER));
    assert_eq!((report.decode.fragments, report.decode.reassembled), (3, 1));
    let inner = recs.iter().find(|r| r.dst_port == Some(53)).unwrap();
    assert_eq!((inner.fwd_packets, inner.fwd_bytes), (1, 20 + 8 + 3000));
    assert_eq!(inner.tunnel.unwrap().kind, TunnelType::GtpU);
    let outer = recs.iter().find(|r| r.dst_port == Some(2152)).unwrap();
    assert_eq!(outer.fwd_packets, 3);
}

#[test]
fn wlan_data_frames_reach_ip_and_management_frames_are_not_ip() {
    let (c, s) = (ip("10.1.1.1"), ip("10.2.2.2"));
    let mut sc = Scenario::with_link(LinkType::Ieee80211Radiotap);
    let mut expect_bytes = 0;
    let variants = [
        Wlan::default(),
        Wlan {
            fcs: true,
            ..Wlan::default()
        },
        Wlan {
            fcs: true,
            htc: true,
            ..Wlan::default()
        },
        Wlan {
            wds: true,
            ..Wlan::default()
        },
    ];
    for (i, w) in variants.into_iter().enumerate() {
        let spec = PacketSpec::new(
            c,
            s,
            L4::Udp {
                sport: 5000,
                dport: 40_001,
            },
            30 + i,
        );
        let mut p = Vec::new();
        ip_packet(&spec, &mut p);
        expect_bytes += p.len() as u64;
        sc.frame(T0 + i as u64 * MS, wlan_frame(&p, w));
    }
    // An A-MSDU of two subframes: two packets.
    let spec = PacketSpec::new(
        c,
        s,
        L4::Udp {
            sport: 5000,
            dport: 40_001,
        },
        40,
    );
    let mut p = Vec::new();
    ip_packet(&spec, &mut p);
    expect_bytes += 2 * p.len() as u64;
    let amsdu = Wlan {
        amsdu: true,
        fcs: true,
        ..Wlan::default()
    };
    sc.frame(T0 + 10 * MS, wlan_frame(&p, amsdu));
    sc.frame(T0 + 11 * MS, wlan_beacon());
    let pcap = sc.to_pcap_bytes();

    // A radiotap header cut, and a data frame cut inside its MAC header.
    let whole = wlan_frame(&p, Wlan::default());
    let mut broken = Scenario::with_link(LinkType::Ieee80211Radiotap);
    broken.frame(T0, whole[..12].to_vec());
    broken.frame(T0 + MS, whole[..18 + 20].to_vec());
    let (recs, report) = run_bytes(&broken.to_pcap_bytes(), &config(1, 256, FOREVER));
    assert!(recs.is_empty());
    assert_eq!(
        report.decode.errors[DecodeError::RadiotapInvalid as usize],
        1
    );
    assert_eq!(
        report.decode.errors[DecodeError::Ieee80211Truncated as usize],
        1
    );

    let (recs, report) = run_bytes(&pcap, &config(1, 256, FOREVER));
    assert_eq!(report.decode.error_total(), 0, "{:?}", report.decode);
    assert_eq!(report.decode.non_ip, 1);
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!((recs[0].fwd_packets, recs[0].fwd_bytes), (6, expect_bytes));

    // tshark reads the same frames: UDP in each data frame, a good FCS.
    if Command::new("tshark").arg("-v").output().is_err() {
        return skip("tshark is not installed (Debian package tshark)");
    }
    crate::util::ran_with("tshark");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wlan.pcap");
    std::fs::write(&path, &pcap).unwrap();
    let frames = tshark_dissect(&path, &[]).unwrap();
    assert_eq!(frames.len(), 6);
    for d in &frames[..5] {
        assert!(d.protos.ends_with(":ip:udp"), "{}", d.protos);
        assert!(!warned(&d.severity), "{}: {}", d.protos, d.severity);
        assert_eq!(d.inner_src, c.to_string());
    }
    assert!(
        frames[5].protos.starts_with("radiotap:wlan_radio:wlan"),
        "{}",
        frames[5].protos
    );
}

#[test]
fn broken_encapsulation_headers_are_counted_by_kind() {
    let (a, b) = (ip("192.0.2.10"), ip("192.0.2.20"));
    let (c, s) = (ip("10.1.1.1"), ip("10.2.2.2"));
    let syn = L4::Tcp {
        sport: 40_000,
        dport: 443,
        flags: tcp::SYN,
        seq: 1,
        ack: 0,
    };
    // (encapsulation, bytes to cut from the end of the frame, the reason,
    // whether the outer flow still counts the packet)
    let mut cases: Vec<(Encap, usize, DecodeError, bool)> = Vec::new();
    let udp_t = |tunnel| Encap::Udp {
        outer_src: a,
        outer_dst: b,
        tunnel,
        reply: false,
    };
    let gtp = UdpTunnel::GtpU {
        teid: 1,
        extension: true,
    };
    // Cut inside the GTP-U extension header (inner 40 bytes + 1).
    cases.push((udp_t(gtp), 41, DecodeError::GtpInvalid, true));
    cases.push((
        udp_t(UdpTunnel::Ayiya),
        41 + 30,
        DecodeError::AyiyaInvalid,
        true,
    ));
    cases.push((
        udp_t(UdpTunnel::L2tpV2),
        40 + 4 + 2,
        DecodeError::L2tpInvalid,
        true,
    ));
    let teredo = UdpTunnel::Teredo {
        auth: true,
        origin: false,
    };
    cases.push((udp_t(teredo), 60 + 3, DecodeError::TeredoInvalid, true));
    cases.push((
        Encap::Link(LinkEncap::Pppoe { session: 1 }),
        40 + 2 + 3,
        DecodeError::PppoeTruncated,
        false,
    ));
    cases.push((
        Encap::Link(LinkEncap::Pbb { isid: 1 }),
        40 + 14 + 2,
        DecodeError::PbbTruncated,
        false,
    ));
    cases.push((
        Encap::Link(LinkEncap::VnTag),
        40 + 2 + 3,
        DecodeError::VnTagTruncated,
        false,
    ));
    cases.push((
        Encap::Link(LinkEncap::FabricPath),
        40 + 14 + 1,
        DecodeError::FabricPathTruncated,
        false,
    ));
    cases.push((
        Encap::Link(LinkEncap::Nsh),
        40 + 10,
        DecodeError::NshInvalid,
        false,
    ));
    for (encap, cut, reason, outer) in cases {
        let v6 = matches!(
            encap,
            Encap::Udp {
                tunnel: UdpTunnel::Teredo { .. },
                ..
            }
        );
        let (c, s) = if v6 {
            (ip("2001:db8:1::1"), ip("2001:db8:2::2"))
        } else {
            (c, s)
        };
        let mut spec = PacketSpec::new(c, s, syn, 0);
        spec.encap = encap;
        let mut f = Vec::new();
        build_frame(&spec, &mut f);
        // No padding: the frame is exactly its headers (64 or more bytes).
        f.truncate(f.len() - cut);
        fix_outer_lengths(&mut f);
        let mut sc = Scenario::new();
        sc.frame(T0, f);
        let (recs, report) = run_bytes(&sc.to_pcap_bytes(), &config(1, 256, FOREVER));
        assert_eq!(
            report.decode.errors[reason as usize], 1,
            "{reason:?}: {:?}",
            report.decode
        );
        assert_eq!(
            report.decode.error_total(),
            1,
            "{reason:?}: {:?}",
            report.decode
        );
        assert_eq!(recs.len(), usize::from(outer), "{reason:?}: {recs:?}");
    }
}

/// Makes a cut frame's outer IPv4 and UDP lengths agree with what is left,
/// so that only the tunnel header is short.
fn fix_outer_lengths(f: &mut [u8]) {
    if f.len() < 14 + 28 || f[12..14] != [0x08, 0x00] {
        return;
    }
    let ip_len = (f.len() - 14) as u16;
    f[16..18].copy_from_slice(&ip_len.to_be_bytes());
    if f[14 + 9] == 17 {
        f[14 + 24..14 + 26].copy_from_slice(&(ip_len - 20).to_be_bytes());
    }
}
