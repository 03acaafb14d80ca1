//! Each detector on synthesized flow records: just above and just below its
//! threshold, and benign look-alikes that must not alert.

use std::net::IpAddr;
use std::sync::Arc;

use vigil_proto::{CommunityId, ConnState, EndReason, FlowRecord, History, Vlans};

use super::config::{Criticality, DetectSection, ProtectedSection};
use super::{AlertKind, AlertUpdate, Engine, Severity};

const T0: u64 = 1_767_261_600_000_000_000;
const S: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn site() -> Vec<ProtectedSection> {
    vec![ProtectedSection {
        name: "water-plant".into(),
        cidrs: vec!["198.51.100.0/24".into()],
        sector: "water".into(),
        criticality: Criticality::High,
        services: vec!["tcp/502".into(), "tcp/22".into(), "tcp/443".into()],
        management_clients: vec!["198.51.100.200".into()],
        ics_clients: vec!["198.51.100.100".into()],
        ..ProtectedSection::default()
    }]
}

fn engine_with(d: DetectSection) -> Engine {
    Engine::new(Arc::new(d.validate(&site()).expect("valid config")), 1)
}

fn engine() -> Engine {
    engine_with(DetectSection::default())
}

/// A record: TCP flows get their state from `state`, others SF/S0 by reply.
#[allow(clippy::too_many_arguments)]
fn rec(
    id: u64,
    proto: u8,
    src: &str,
    sport: u16,
    dst: &str,
    dport: u16,
    first: u64,
    last: u64,
    fwd: (u64, u64),
    rev: (u64, u64),
    state: ConnState,
    history: &str,
) -> FlowRecord {
    let ports = matches!(proto, 6 | 17);
    FlowRecord {
        app: None,
        flow_id: id,
        first_seen_ns: first,
        last_seen_ns: last,
        proto,
        src_ip: ip(src),
        src_port: ports.then_some(sport),
        dst_ip: ip(dst),
        dst_port: ports.then_some(dport),
        vlan: Vlans::NONE,
        fwd_packets: fwd.0,
        fwd_bytes: fwd.1,
        rev_packets: rev.0,
        rev_bytes: rev.1,
        fwd_tcp_flags: 0,
        rev_tcp_flags: 0,
        fwd_initial_tcp_flags: 0,
        rev_initial_tcp_flags: 0,
        conn_state: state,
        history: History::parse(history).unwrap(),
        end_reason: EndReason::Fin,
        community_id: CommunityId([0; 20]),
        tunnel: None,
    }
}

fn syn(id: u64, src: &str, dst: &str, dport: u16, t: u64) -> FlowRecord {
    rec(
        id,
        6,
        src,
        40000 + (id % 20000) as u16,
        dst,
        dport,
        t,
        t,
        (1, 40),
        (0, 0),
        ConnState::S0,
        "S",
    )
}

fn session(id: u64, src: &str, dst: &str, dport: u16, t: u64, dur: u64, bytes: u64) -> FlowRecord {
    rec(
        id,
        6,
        src,
        30000 + (id % 30000) as u16,
        dst,
        dport,
        t,
        t + dur,
        (8, bytes / 2),
        (8, bytes / 2),
        ConnState::SF,
        "ShADadFf",
    )
}

fn run(e: &mut Engine, flows: &[FlowRecord]) -> Vec<AlertUpdate> {
    let mut all = Vec::new();
    for chunk in flows.chunks(64) {
        all.extend(e.observe("s1", chunk));
    }
    all
}

fn kinds(u: &[AlertUpdate]) -> Vec<AlertKind> {
    let mut k: Vec<AlertKind> = u.iter().map(|u| u.alert.kind).collect();
    k.sort();
    k.dedup();
    k
}

/// Half-open flows at `per_s` a second for `secs` seconds, from spoofed sources.
fn syn_flood(per_s: u64, secs: u64) -> Vec<FlowRecord> {
    let n = per_s * secs;
    (0..n)
        .map(|i| {
            let src = format!(
                "{}.{}.{}.{}",
                11 + i % 200,
                (i / 200) % 256,
                i % 251,
                1 + i % 250
            );
            syn(i + 1, &src, "198.51.100.10", 80, T0 + i * S / per_s)
        })
        .collect()
}

#[test]
fn syn_flood_from_spoofed_sources_above_and_below_the_threshold() {
    let up = run(&mut engine(), &syn_flood(600, 4));
    assert_eq!(kinds(&up), [AlertKind::SynFlood], "{up:#?}");
    let a = &up.last().unwrap().alert;
    assert_eq!(a.asset, "water-plant");
    assert_eq!(a.technique, "T1498.001");
    assert!(a.measured >= 500.0 && a.threshold == 500.0, "{a:?}");
    assert!(
        a.source_count > 1000,
        "spoofed sources are counted: {}",
        a.source_count
    );
    assert_eq!(a.targets[0].addr, "198.51.100.10:80");
    assert!(a.evidence_count > 0);
    // One incident, updated, not one alert per second.
    assert_eq!(up.iter().filter(|u| u.opened).count(), 1);
    assert!(run(&mut engine(), &syn_flood(450, 4)).is_empty());
}

#[test]
fn a_busy_web_server_is_not_a_flood() {
    // 3000 complete HTTPS sessions a second for 5 s from 500 clients.
    let flows: Vec<FlowRecord> = (0..15_000u64)
        .map(|i| {
            let c = format!("192.0.2.{}", 1 + i % 250);
            session(
                i + 1,
                &c,
                "198.51.100.10",
                443,
                T0 + i * S / 3000,
                80 * MS,
                6000,
            )
        })
        .collect();
    assert!(run(&mut engine(), &flows).is_empty());
}

#[test]
fn udp_and_icmp_floods_by_packets_and_bits() {
    // One UDP flow reported every second (early reports): 150k packets/s.
    let udp = |pps: u64| -> Vec<FlowRecord> {
        (0..5u64)
            .map(|k| {
                rec(
                    7,
                    17,
                    "203.0.113.9",
                    9999,
                    "198.51.100.53",
                    53,
                    T0 + k * S,
                    T0 + k * S + 999 * MS,
                    (pps, pps * 60),
                    (0, 0),
                    ConnState::S0,
                    "D",
                )
            })
            .collect()
    };
    let up = run(&mut engine(), &udp(150_000));
    assert_eq!(kinds(&up), [AlertKind::UdpFlood]);
    assert_eq!(up[0].alert.unit, "packets/s");
    assert!(run(&mut engine(), &udp(90_000)).is_empty());
    // ICMP: 12k echo requests a second vs 8k.
    let icmp = |pps: u64| -> Vec<FlowRecord> {
        (0..4u64)
            .map(|k| {
                rec(
                    9,
                    1,
                    "203.0.113.10",
                    0,
                    "198.51.100.1",
                    0,
                    T0 + k * S,
                    T0 + k * S + 999 * MS,
                    (pps, pps * 84),
                    (0, 0),
                    ConnState::OTH,
                    "D",
                )
            })
            .collect()
    };
    assert_eq!(
        kinds(&run(&mut engine(), &icmp(12_000))),
        [AlertKind::IcmpFlood]
    );
    assert!(run(&mut engine(), &icmp(8_000)).is_empty());
}

#[test]
fn a_long_flow_reported_at_its_end_is_spread_over_its_duration() {
    // A backup: 30 GB over 10 minutes in one record: 400 Mbit/s, no flood.
    let f = rec(
        1,
        6,
        "198.51.100.20",
        50000,
        "198.51.100.21",
        873,
        T0,
        T0 + 600 * S,
        (20_000_000, 30_000_000_000),
        (10_000_000, 400_000_000),
        ConnState::SF,
        "ShADadFf",
    );
    assert!(run(&mut engine(), &[f]).is_empty());
}

#[test]
fn vertical_scan_fast_and_slow() {
    let scan = |ports: u16, gap: u64| -> Vec<FlowRecord> {
        (0..ports)
            .map(|p| {
                syn(
                    u64::from(p) + 1,
                    "203.0.113.66",
                    "198.51.100.10",
                    1 + p,
                    T0 + u64::from(p) * gap,
                )
            })
            .collect()
    };
    // Zeek's threshold: 15 ports within 5 minutes.
    let up = run(&mut engine(), &scan(15, 10 * S));
    assert_eq!(kinds(&up), [AlertKind::VerticalScan]);
    let a = &up[0].alert;
    assert_eq!(a.sources[0].addr, "203.0.113.66");
    assert_eq!((a.measured, a.threshold), (15.0, 15.0));
    assert_eq!(
        a.severity,
        Severity::Medium,
        "scans rank one below the asset"
    );
    assert_eq!(a.evidence_count, 15);
    assert!(run(&mut engine(), &scan(14, 10 * S)).is_empty());
    // A fast small scan: nmap's top 30 ports in a third of a second.
    let up = run(&mut engine(), &scan(30, 10 * MS));
    assert_eq!(kinds(&up), [AlertKind::VerticalScan]);
    // 15 ports, but one every 30 s: not within 5 minutes.
    assert!(run(&mut engine(), &scan(15, 30 * S)).is_empty());
    // Slow: one port every 90 s; 200 ports take 5 hours.
    let up = run(&mut engine(), &scan(200, 90 * S));
    assert_eq!(kinds(&up), [AlertKind::VerticalScan]);
    assert!(
        up[0].alert.summary.contains("slow"),
        "{}",
        up[0].alert.summary
    );
    assert!(run(&mut engine(), &scan(199, 90 * S)).is_empty());
}

#[test]
fn horizontal_scan_and_a_monitoring_host_that_logs_in_everywhere() {
    let sweep = |hosts: u64| -> Vec<FlowRecord> {
        (0..hosts)
            .map(|h| {
                syn(
                    h + 1,
                    "203.0.113.66",
                    &format!("198.51.100.{}", h + 1),
                    22,
                    T0 + h * 20 * MS,
                )
            })
            .collect()
    };
    assert_eq!(
        kinds(&run(&mut engine(), &sweep(25))),
        [AlertKind::HorizontalScan]
    );
    assert!(run(&mut engine(), &sweep(24)).is_empty());
    // A monitoring server runs a check on 100 hosts every minute over SSH:
    // established sessions with data, not probes. Its sessions are long
    // and large enough not to look like password guessing.
    let mut flows = Vec::new();
    for round in 0..5u64 {
        for h in 0..100u64 {
            flows.push(session(
                round * 100 + h + 1,
                "192.0.2.250",
                &format!("198.51.100.{}", h + 1),
                22,
                T0 + round * 60 * S + h * 10 * MS,
                45 * S,
                40_000,
            ));
        }
    }
    assert!(run(&mut engine(), &flows).is_empty());
}

#[test]
fn amplification_needs_unsolicited_responses_from_several_reflectors() {
    let amp = |bytes_each: u64, reflectors: u64, solicited: bool| -> Vec<FlowRecord> {
        (0..100u64)
            .map(|i| {
                rec(
                    i + 1,
                    17,
                    &format!("192.0.2.{}", 1 + i % reflectors),
                    53,
                    "198.51.100.10",
                    40000 + i as u16,
                    T0 + i * 50 * MS,
                    T0 + i * 50 * MS,
                    (1, bytes_each),
                    if solicited { (1, 60) } else { (0, 0) },
                    if solicited {
                        ConnState::SF
                    } else {
                        ConnState::S0
                    },
                    if solicited { "Dd" } else { "D" },
                )
            })
            .collect()
    };
    // 100 × 3000 B = 300 kB in 5 s from 10 reflectors: above 256 KiB.
    let up = run(&mut engine(), &amp(3000, 10, false));
    assert_eq!(kinds(&up), [AlertKind::Amplification]);
    let a = &up[0].alert;
    assert_eq!(a.technique, "T1498.002");
    assert!(a.summary.contains("DNS (53)"), "{}", a.summary);
    assert_eq!(a.source_count, 10);
    // 200 kB: below.
    assert!(run(&mut engine(), &amp(2000, 10, false)).is_empty());
    // Two reflectors only: below.
    assert!(run(&mut engine(), &amp(3000, 2, false)).is_empty());
    // The host asked: a resolver's answers, not a reflection.
    assert!(run(&mut engine(), &amp(3000, 10, true)).is_empty());
    // NTP clients polling servers: solicited too.
    let ntp: Vec<FlowRecord> = (0..50u64)
        .map(|i| {
            rec(
                i + 1,
                17,
                "198.51.100.123",
                123,
                &format!("192.0.2.{}", i + 1),
                123,
                T0 + i * S,
                T0 + i * S + 20 * MS,
                (1, 76),
                (1, 76),
                ConnState::SF,
                "Dd",
            )
        })
        .collect();
    assert!(run(&mut engine(), &ntp).is_empty());
}

#[test]
fn ike_nat_t_reflection_is_amplification() {
    // IKE responders (UDP 4500) answering spoofed requests: 100 × 3000 B
    // from 10 reflectors in 5 s.
    let flows: Vec<FlowRecord> = (0..100u64)
        .map(|i| {
            rec(
                i + 1,
                17,
                &format!("192.0.2.{}", 1 + i % 10),
                4500,
                "198.51.100.10",
                4500,
                T0 + i * 50 * MS,
                T0 + i * 50 * MS,
                (1, 3000),
                (0, 0),
                ConnState::S0,
                "D",
            )
        })
        .collect();
    let up = run(&mut engine(), &flows);
    assert_eq!(kinds(&up), [AlertKind::Amplification]);
    assert!(
        up[0].alert.summary.contains("IKE NAT-T (4500)"),
        "{}",
        up[0].alert.summary
    );
}

#[test]
fn a_traceroute_to_a_protected_host_is_not_a_scan() {
    // Three UDP probes per hop for 30 hops, to 33434 and up, from one
    // ephemeral port: 90 distinct ports in 20 seconds.
    let flows: Vec<FlowRecord> = (0..90u64)
        .map(|i| {
            rec(
                i + 1,
                17,
                "203.0.113.66",
                45000,
                "198.51.100.10",
                33434 + i as u16,
                T0 + i * 200 * MS,
                T0 + i * 200 * MS,
                (1, 60),
                (0, 0),
                ConnState::S0,
                "D",
            )
        })
        .collect();
    assert!(run(&mut engine(), &flows).is_empty());
    // The same probes to other ports are a UDP scan.
    let scan: Vec<FlowRecord> = flows
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let mut f = f.clone();
            f.dst_port = Some(1000 + i as u16);
            f
        })
        .collect();
    assert_eq!(kinds(&run(&mut engine(), &scan)), [AlertKind::VerticalScan]);
}

#[test]
fn brute_force_on_ssh_and_the_look_alikes() {
    let tries = |n: u64, dur: u64, bytes: u64, src: &str| -> Vec<FlowRecord> {
        (0..n)
            .map(|i| session(i + 1, src, "198.51.100.22", 22, T0 + i * 2 * S, dur, bytes))
            .collect()
    };
    let up = run(&mut engine(), &tries(20, 2 * S, 4000, "203.0.113.99"));
    assert_eq!(kinds(&up), [AlertKind::BruteForce]);
    assert_eq!(up[0].alert.technique, "T1110");
    assert_eq!(up[0].alert.evidence_count, 20);
    assert!(run(&mut engine(), &tries(19, 2 * S, 4000, "203.0.113.99")).is_empty());
    // Rejected attempts count as failed sessions.
    let rej: Vec<FlowRecord> = (0..25u64)
        .map(|i| {
            let mut r = syn(i + 1, "203.0.113.98", "198.51.100.22", 3389, T0 + i * S);
            r.conn_state = ConnState::REJ;
            r
        })
        .collect();
    assert!(kinds(&run(&mut engine(), &rej)).contains(&AlertKind::BruteForce));
    // A backup job: the backup server pulls over 30 long rsync-over-SSH
    // sessions with gigabytes.
    assert!(
        run(
            &mut engine(),
            &tries(30, 120 * S, 2_000_000_000, "198.51.100.60")
        )
        .is_empty()
    );
    // The management host's automation opens many short sessions: allowed.
    assert!(run(&mut engine(), &tries(40, S, 3000, "198.51.100.200")).is_empty());
}

#[test]
fn ics_sessions_from_clients_outside_the_allowed_list() {
    let modbus = |client: &str, server_first: bool| -> Vec<FlowRecord> {
        let f = if server_first {
            // A capture that starts mid-session names the PLC first.
            rec(
                1,
                6,
                "198.51.100.50",
                502,
                client,
                49500,
                T0,
                T0 + S,
                (4, 300),
                (4, 200),
                ConnState::OTH,
                "Dd",
            )
        } else {
            session(1, client, "198.51.100.50", 502, T0, S, 500)
        };
        vec![f]
    };
    let up = run(&mut engine(), &modbus("203.0.113.77", false));
    assert_eq!(kinds(&up), [AlertKind::IcsUnauthorizedClient]);
    let a = &up[0].alert;
    assert_eq!((a.technique.as_str(), a.matrix.as_str()), ("T0855", "ics"));
    assert_eq!(
        a.severity,
        Severity::Critical,
        "ICS abuse ranks above a high asset"
    );
    assert!(a.summary.contains("Modbus/TCP"), "{}", a.summary);
    assert_eq!(a.sources[0].addr, "203.0.113.77");
    let up = run(&mut engine(), &modbus("203.0.113.77", true));
    assert_eq!(
        up[0].alert.sources[0].addr, "203.0.113.77",
        "client found by port"
    );
    // The HMI is allowed.
    assert!(run(&mut engine(), &modbus("198.51.100.100", false)).is_empty());
    assert!(run(&mut engine(), &modbus("198.51.100.100", true)).is_empty());
}

#[test]
fn beaconing_is_regular_and_ntp_is_not_beaconing() {
    let beacons = |n: u64, every: u64, jitter_ms: u64, dport: u16| -> Vec<FlowRecord> {
        (0..n)
            .map(|i| {
                let wobble = if i % 2 == 0 { jitter_ms * MS } else { 0 };
                session(
                    i + 1,
                    "198.51.100.30",
                    "203.0.113.200",
                    dport,
                    T0 + i * every + wobble,
                    300 * MS,
                    2000,
                )
            })
            .collect()
    };
    let up = run(&mut engine(), &beacons(12, 60 * S, 500, 443));
    assert_eq!(kinds(&up), [AlertKind::Beaconing]);
    assert!(
        up[0].alert.summary.contains("every 60.0 s"),
        "{}",
        up[0].alert.summary
    );
    assert!(run(&mut engine(), &beacons(11, 60 * S, 500, 443)).is_empty());
    // Jitter of 15 s on 60 s: not regular.
    assert!(run(&mut engine(), &beacons(20, 60 * S, 15_000, 443)).is_empty());
    // NTP polls are regular by design.
    assert!(run(&mut engine(), &beacons(20, 64 * S, 0, 123)).is_empty());
    // Internal destinations are not beaconing targets.
    let d = DetectSection {
        internal_networks: vec!["203.0.113.0/24".into()],
        ..DetectSection::default()
    };
    assert!(run(&mut engine_with(d), &beacons(20, 60 * S, 0, 443)).is_empty());
}

#[test]
fn exfiltration_over_the_threshold_and_a_backup_to_an_allowed_site() {
    let upload = |bytes: u64, dst: &str| -> Vec<FlowRecord> {
        (0..10u64)
            .map(|i| {
                rec(
                    i + 1,
                    6,
                    "198.51.100.40",
                    50000 + i as u16,
                    dst,
                    443,
                    T0 + i * 60 * S,
                    T0 + i * 60 * S + 50 * S,
                    (1000, bytes / 10),
                    (500, 30_000),
                    ConnState::SF,
                    "ShADadFf",
                )
            })
            .collect()
    };
    let gib = 1u64 << 30;
    let up = run(&mut engine(), &upload(gib + 10 * 1024, "203.0.113.150"));
    assert_eq!(kinds(&up), [AlertKind::Exfiltration]);
    assert_eq!(up[0].alert.technique, "T1048");
    assert!(run(&mut engine(), &upload(gib - 10 * 1024, "203.0.113.150")).is_empty());
    let d = DetectSection {
        exfiltration: super::config::ExfilSection {
            ignore_destinations: vec!["203.0.113.150".into()],
            ..Default::default()
        },
        ..DetectSection::default()
    };
    assert!(run(&mut engine_with(d), &upload(4 * gib, "203.0.113.150")).is_empty());
}

#[test]
fn indicator_lists_match_addresses_and_networks() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.txt");
    std::fs::write(
        &file,
        "# feed\n203.0.113.13 known C2\n192.0.2.128/25, scanner pool\n\n",
    )
    .unwrap();
    let d = DetectSection {
        indicators: super::indicators::IndicatorSection {
            files: vec![file.clone()],
        },
        ..DetectSection::default()
    };
    let mut e = engine_with(d.clone());
    let up = run(
        &mut e,
        &[session(
            1,
            "198.51.100.30",
            "203.0.113.13",
            8443,
            T0,
            S,
            900,
        )],
    );
    assert_eq!(kinds(&up), [AlertKind::Indicator]);
    assert!(
        up[0].alert.summary.contains("known C2"),
        "{}",
        up[0].alert.summary
    );
    let up = run(
        &mut engine_with(d.clone()),
        &[session(1, "192.0.2.200", "198.51.100.30", 80, T0, S, 900)],
    );
    assert_eq!(kinds(&up), [AlertKind::Indicator]);
    assert!(
        run(
            &mut engine_with(d),
            &[session(1, "192.0.2.7", "198.51.100.30", 80, T0, S, 900)]
        )
        .is_empty()
    );
    // A bad line is named by file and line.
    std::fs::write(&file, "203.0.113.13\nnot-an-address\n").unwrap();
    let bad = DetectSection {
        indicators: super::indicators::IndicatorSection { files: vec![file] },
        ..DetectSection::default()
    };
    let err = bad.validate(&site()).unwrap_err().join("\n");
    assert!(err.contains("bad.txt:2"), "{err}");
}

#[test]
fn a_continuing_attack_updates_one_incident_and_a_new_one_opens_after_the_timeout() {
    let mut e = engine();
    let mut flows = syn_flood(800, 30);
    // Twenty minutes later, again.
    let later: Vec<FlowRecord> = syn_flood(800, 3)
        .into_iter()
        .map(|mut f| {
            f.first_seen_ns += 1200 * S;
            f.last_seen_ns += 1200 * S;
            f.flow_id += 1_000_000;
            f
        })
        .collect();
    flows.extend(later);
    let up = run(&mut e, &flows);
    let ids: std::collections::BTreeSet<u64> = up.iter().map(|u| u.alert.id).collect();
    assert_eq!(ids.len(), 2, "two incidents");
    let first: Vec<&AlertUpdate> = up.iter().filter(|u| u.alert.id == 1).collect();
    assert!(
        first.len() >= 25,
        "updated about once a second: {}",
        first.len()
    );
    assert!(first.last().unwrap().alert.updates >= 24);
}

#[test]
fn a_one_flow_flood_is_seen_within_two_seconds_of_crossing() {
    // 50k packets/s for 1 s, then 150k packets/s: the 2 s average crosses
    // 100k packets/s during the third second. Early reports cut the flow
    // every second.
    let mut flows = Vec::new();
    for k in 0..6u64 {
        let pps = if k == 0 { 50_000 } else { 150_000 };
        flows.push(rec(
            5,
            17,
            "203.0.113.9",
            9999,
            "198.51.100.53",
            53,
            T0 + k * S,
            T0 + k * S + 999 * MS,
            (pps, pps * 60),
            (0, 0),
            ConnState::S0,
            "D",
        ));
    }
    let mut e = engine();
    let mut seen_at = None;
    for f in &flows {
        if !e.observe("s1", std::slice::from_ref(f)).is_empty() && seen_at.is_none() {
            seen_at = Some(f.last_seen_ns);
        }
    }
    // Crossing: average over seconds 0-1 is 100k at the end of second 1.
    let crossing = T0 + 2 * S - MS;
    let seen = seen_at.expect("detected");
    assert!(seen <= crossing + 2 * S, "{} ns late", seen - crossing);
}

#[test]
fn config_errors_name_the_key_and_value() {
    let mut p = site();
    p.push(ProtectedSection {
        name: "water-plant".into(),
        cidrs: vec!["10.0.0.0/33".into()],
        services: vec!["modbus".into()],
        ..ProtectedSection::default()
    });
    let d = DetectSection {
        incident_timeout: "soon".into(),
        ..DetectSection::default()
    };
    let err = d.validate(&p).unwrap_err().join("\n");
    for key in [
        "collector.detect.incident_timeout",
        "collector.protected[1].name = \"water-plant\": used twice",
        "collector.protected[1].cidrs[0] = \"10.0.0.0/33\"",
        "collector.protected[1].services[0] = \"modbus\"",
    ] {
        assert!(err.contains(key), "{key} missing from:\n{err}");
    }
}

#[test]
fn carpet_bombing_crosses_the_asset_total_and_no_host_threshold() {
    // 250 hosts, each 600 UDP packets/s: 150 k packets/s in all, every host
    // far below its own 100 k threshold.
    let carpet = |per_host: u64| -> Vec<FlowRecord> {
        let mut v = Vec::new();
        for k in 0..4u64 {
            for h in 1..=250u64 {
                v.push(rec(
                    k * 1000 + h,
                    17,
                    "203.0.113.9",
                    9999,
                    &format!("198.51.100.{h}"),
                    53,
                    T0 + k * S,
                    T0 + k * S + 999 * MS,
                    (per_host, per_host * 60),
                    (0, 0),
                    ConnState::S0,
                    "D",
                ));
            }
        }
        v
    };
    // Off by default: nothing.
    assert!(run(&mut engine(), &carpet(600)).is_empty());
    let d = DetectSection {
        flood: super::config::FloodSection {
            total_pps: Some(100_000.0),
            ..Default::default()
        },
        ..DetectSection::default()
    };
    let up = run(&mut engine_with(d.clone()), &carpet(600));
    assert_eq!(kinds(&up), [AlertKind::VolumetricFlood]);
    let a = &up.last().unwrap().alert;
    assert!(a.summary.contains("whole of water-plant"), "{}", a.summary);
    assert!(a.target_count >= 200, "{}", a.target_count);
    // Below the total: nothing.
    assert!(run(&mut engine_with(d), &carpet(300)).is_empty());
}

/// Issue #31: a spoofed SYN flood streamed by one sensor in two halves,
/// and between them another sensor whose clock runs 12 h ahead (inside
/// `max_clock_skew`) streaming a brute force against another protected
/// host. The flood is one alert covering both halves (the other sensor's
/// clock closed the first and swept its windows: two alerts), and the
/// brute force is an alert of its own.
#[test]
fn a_sensor_whose_clock_runs_ahead_cannot_close_another_sensors_incident() {
    let mut e = engine();
    let flood = syn_flood(800, 60);
    let (first, second) = flood.split_at(flood.len() / 2);
    // Batches arrive as they would live: about when their records end.
    let feed = |e: &mut Engine, sensor: &str, flows: &[FlowRecord], arrival: u64| {
        let mut out = Vec::new();
        for chunk in flows.chunks(64) {
            out.extend(e.observe_batch(sensor, chunk, Some(arrival)));
        }
        out
    };
    let mut up = feed(&mut e, "a", first, T0 + 30 * S);
    let ahead = 12 * 3600 * S;
    let brute: Vec<FlowRecord> = (0..25)
        .map(|i| {
            session(
                5_000_000 + i,
                "203.0.113.99",
                "198.51.100.21",
                21,
                T0 + ahead + 31 * S + i * S,
                S,
                3000,
            )
        })
        .collect();
    up.extend(feed(&mut e, "b", &brute, T0 + 31 * S));
    up.extend(feed(&mut e, "a", second, T0 + 61 * S));
    let floods: std::collections::BTreeSet<u64> = up
        .iter()
        .filter(|u| u.alert.kind == AlertKind::SynFlood)
        .map(|u| u.alert.id)
        .collect();
    assert_eq!(
        floods.len(),
        1,
        "one flood alert for both halves: {floods:?}"
    );
    let last = up
        .iter()
        .rfind(|u| u.alert.kind == AlertKind::SynFlood)
        .unwrap();
    assert!(
        last.alert.first_seen_ns < first.last().unwrap().first_seen_ns,
        "the alert covers the first half"
    );
    assert_eq!(last.alert.last_seen_ns, second.last().unwrap().last_seen_ns);
    assert!(up.iter().any(|u| u.alert.kind == AlertKind::BruteForce));
    assert_eq!(e.stats.clock_steps, 0);
}

/// A sensor gone silent stops holding event time back once its batches
/// stop arriving for `incident_timeout`; a sensor whose records go back by
/// more than the clock-skew bound (an older capture replayed after a newer
/// one) restarts its clock there and its records are examined.
#[test]
fn a_silent_sensor_stops_holding_time_and_a_clock_set_back_restarts() {
    let mut e = engine().with_max_skew(std::time::Duration::from_secs(3600));
    let flood = syn_flood(800, 30);
    for chunk in flood.chunks(64) {
        e.observe_batch("a", chunk, Some(T0 + 30 * S));
    }
    // Sensor "old" comes up with a clock half an hour behind, then goes
    // silent.
    let old = syn(9_000_000, "203.0.113.5", "198.51.100.30", 80, T0 - 1800 * S);
    e.observe_batch("old", &[old], Some(T0 + 31 * S));
    assert_eq!(e.now(), T0 - 1800 * S, "the slowest live clock");
    // Twenty minutes of arrivals later, "a" alone is live again.
    let later = syn(9_000_001, "203.0.113.6", "198.51.100.31", 80, T0 + 1200 * S);
    e.observe_batch("a", &[later], Some(T0 + 1200 * S));
    assert_eq!(e.now(), T0 + 1200 * S);
    // "a" replays a capture a day older: its clock restarts, the flood in
    // it is found.
    let day = 86_400 * S;
    let replay: Vec<FlowRecord> = syn_flood(800, 30)
        .into_iter()
        .map(|mut f| {
            f.first_seen_ns -= day;
            f.last_seen_ns -= day;
            f.flow_id += 5_000_000;
            f
        })
        .collect();
    let mut up = Vec::new();
    for chunk in replay.chunks(64) {
        up.extend(e.observe_batch("a", chunk, Some(T0 + 1201 * S)));
    }
    assert_eq!(e.stats.clock_steps, 1);
    assert!(
        up.iter()
            .any(|u| u.opened && u.alert.kind == AlertKind::SynFlood),
        "the replayed flood is an alert of its own"
    );
}

mod app;
