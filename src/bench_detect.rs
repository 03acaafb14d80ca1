//! `vigil bench --modes detect`: the detection engine's throughput on the
//! ingest path, and its alert latency in event time.
//!
//! Throughput: synthesized flow records, every one touching the protected
//! network (the worst case: none is skipped by the asset lookup), fed to
//! [`Engine::observe`] in batches as the collector's detection thread feeds
//! it; one core. Beside it, in the same run, the stage detection sits
//! behind: committing the same records to the SQLite store.
//!
//! Latency: a synthesized capture with floods (one-flow UDP floods and SYN
//! floods from spoofed sources) starting at known times, each on its own
//! protected host, over background traffic. Packets go through the real
//! decoder and flow table with the sensor's early reports; records are
//! batched as the sensor's exporter batches them (`batch_delay` of packet
//! time) and each batch reaches the engine when it would be sent. An
//! attack's latency is the time its alert opened (the delivery of the batch
//! that raised it) minus the time its trailing-window rate crossed the
//! threshold, computed from the packets. Recorded in an hdrhistogram.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use vigil_collector::detect::config::{Criticality, DetectSection, FloodSection, ProtectedSection};
use vigil_collector::detect::{AlertKind, Engine};
use vigil_collector::store::IngestBatch;
use vigil_collector::store::prelude::*;
use vigil_collector::store::sqlite::{SqliteConfig, SqliteStore, Synchronous};
use vigil_proto::{CommunityId, ConnState, EndReason, FlowRecord, History, Vlans};
use vigil_sensor::capture::CaptureReader;
use vigil_sensor::decode::Decoder;
use vigil_sensor::flow::FlowConfig;
use vigil_sensor::flow::table::FlowTable;
use vigil_sensor::synth::{L4, PacketSpec, Rng, Scenario, tcp};

use crate::Failure;

const S: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;
const T0: u64 = 1_767_261_600_000_000_000;

fn v4(x: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(x))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn assets() -> Vec<ProtectedSection> {
    vec![ProtectedSection {
        name: "bench".into(),
        cidrs: vec!["198.51.100.0/24".into(), "10.20.0.0/16".into()],
        sector: "bench".into(),
        criticality: Criticality::High,
        ics_clients: vec!["10.20.0.100".into()],
        ..ProtectedSection::default()
    }]
}

/// A record of the throughput mix.
#[allow(clippy::too_many_arguments)]
fn rec(
    id: u64,
    proto: u8,
    src: IpAddr,
    sport: u16,
    dst: IpAddr,
    dport: u16,
    t: u64,
    dur: u64,
    fwd: (u64, u64),
    rev: (u64, u64),
    state: ConnState,
    history: &str,
) -> FlowRecord {
    FlowRecord {
        app: None,
        flow_id: id,
        first_seen_ns: t,
        last_seen_ns: t + dur,
        proto,
        src_ip: src,
        src_port: Some(sport),
        dst_ip: dst,
        dst_port: Some(dport),
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
        history: History::parse(history).unwrap_or_default(),
        end_reason: EndReason::Fin,
        community_id: CommunityId([0; 20]),
        tunnel: None,
    }
}

/// `n` records at 100 k records/s of event time: web and SSH sessions to
/// 4096 protected servers from 200 k clients, DNS, outbound connections
/// from protected hosts, probes from 1000 scanners, Modbus polls.
fn mix(n: u64) -> Vec<FlowRecord> {
    let mut rng = Rng::new(42);
    let server = |r: &mut Rng| v4(0x0a14_0000 + r.below(4096) as u32);
    let client = |r: &mut Rng| v4(0x5000_0000 + r.below(200_000) as u32);
    (0..n)
        .map(|i| {
            let t = T0 + i * 10_000;
            let id = i + 1;
            let sport = 1024 + rng.below(60_000) as u16;
            match rng.below(100) {
                0..=54 => rec(
                    id,
                    6,
                    client(&mut rng),
                    sport,
                    server(&mut rng),
                    443,
                    t,
                    80 * MS,
                    (12, 1400),
                    (10, 9000),
                    ConnState::SF,
                    "ShADadFf",
                ),
                55..=69 => rec(
                    id,
                    17,
                    client(&mut rng),
                    sport,
                    server(&mut rng),
                    53,
                    t,
                    MS,
                    (1, 70),
                    (1, 180),
                    ConnState::SF,
                    "Dd",
                ),
                70..=84 => rec(
                    id,
                    6,
                    server(&mut rng),
                    sport,
                    v4(0x5db8_0000 + rng.below(50_000) as u32),
                    443,
                    t,
                    2 * S,
                    (20, 3000),
                    (30, 40_000),
                    ConnState::SF,
                    "ShADadFf",
                ),
                85..=92 => rec(
                    id,
                    6,
                    v4(0xcb00_7100 + rng.below(1000) as u32),
                    sport,
                    server(&mut rng),
                    rng.below(65_535) as u16 + 1,
                    t,
                    0,
                    (1, 40),
                    (0, 0),
                    ConnState::S0,
                    "S",
                ),
                93..=97 => rec(
                    id,
                    6,
                    client(&mut rng),
                    sport,
                    server(&mut rng),
                    22,
                    t,
                    40 * S,
                    (300, 40_000),
                    (280, 90_000),
                    ConnState::SF,
                    "ShADadFf",
                ),
                _ => rec(
                    id,
                    6,
                    v4(0x0a14_0064),
                    sport,
                    server(&mut rng),
                    502,
                    t,
                    300 * MS,
                    (6, 400),
                    (6, 500),
                    ConnState::SF,
                    "ShADadFf",
                ),
            }
        })
        .collect()
}

/// Flows/s of the engine over `recs` in batches of `batch`.
fn engine_rate(recs: &[FlowRecord], batch: usize) -> Result<(f64, usize), Failure> {
    let cfg = DetectSection::default()
        .validate(&assets())
        .map_err(|e| anyhow::anyhow!("bench configuration: {}", e.join("; ")))?;
    let mut engine = Engine::new(Arc::new(cfg), 1);
    let t = Instant::now();
    let mut alerts = 0;
    for chunk in recs.chunks(batch) {
        alerts += engine.observe("bench", chunk).len();
    }
    Ok((recs.len() as f64 / t.elapsed().as_secs_f64(), alerts))
}

/// Flows/s of committing `recs` to a fresh SQLite store (full sync).
fn store_rate(recs: &[FlowRecord], batch: usize) -> Result<f64, Failure> {
    let dir = tempfile::tempdir().map_err(|e| anyhow::anyhow!("temporary directory: {e}"))?;
    let store = SqliteStore::open(
        dir.path(),
        SqliteConfig {
            synchronous: Synchronous::Full,
            ..SqliteConfig::default()
        },
    )?;
    let batches: Vec<IngestBatch> = recs
        .chunks(batch)
        .enumerate()
        .map(|(i, c)| IngestBatch {
            attestation: None,
            certificate: None,
            sensor_id: "bench".into(),
            incarnation: 1,
            seq: i as u64 + 1,
            flows: c.to_vec(),
            stats: None,
            received_ns: T0,
        })
        .collect();
    let t = Instant::now();
    for b in &batches {
        store.commit(b)?;
    }
    Ok(recs.len() as f64 / t.elapsed().as_secs_f64())
}

/// An attack of the latency scenario.
struct Attack {
    kind: AlertKind,
    target: IpAddr,
    /// When its trailing-window rate crosses the threshold, ns.
    crossing: u64,
}

/// The latency scenario: `n` UDP floods and `n` SYN floods.
fn scenario(n: usize, thr_udp_pps: f64, thr_syn: f64, window_s: f64) -> (Vec<u8>, Vec<Attack>) {
    let mut rng = Rng::new(7);
    let mut sc = Scenario::new();
    let mut attacks = Vec::new();
    let span = (n as u64) * 2 * 12 * S + 20 * S;
    // Background: a web session every 100 ms to one server, all along.
    let web = v4(0xc633_64c8); // 198.51.100.200
    let mut t = T0;
    let mut i = 0u16;
    while t < T0 + span {
        sc.tcp_session(
            t,
            v4(0xc000_0201 + u32::from(i % 200)),
            40_000 + i % 20_000,
            web,
            443,
            2,
            300,
            5 * MS,
        );
        t += 100 * MS;
        i = i.wrapping_add(1);
    }
    for k in 0..2 * n {
        let start = T0 + 10 * S + k as u64 * 12 * S + rng.below(1000) * MS;
        let target = v4(0xc633_6401 + k as u32); // 198.51.100.(1+k)
        let dur = 4 * S;
        if k % 2 == 0 {
            // One UDP flow at 1.5-4× the threshold.
            let rate = thr_udp_pps * (1.5 + rng.below(250) as f64 / 100.0);
            let gap = (S as f64 / rate) as u64;
            let mut p = start;
            while p < start + dur {
                sc.packet(
                    p,
                    &PacketSpec::new(
                        v4(0xcb00_7109),
                        target,
                        L4::Udp {
                            sport: 9999,
                            dport: 53,
                        },
                        60,
                    ),
                );
                p += gap;
            }
            attacks.push(Attack {
                kind: AlertKind::UdpFlood,
                target,
                crossing: start + (window_s * thr_udp_pps / rate * S as f64) as u64,
            });
        } else {
            // SYNs from spoofed sources at 1.5-4× the threshold.
            let rate = thr_syn * (1.5 + rng.below(250) as f64 / 100.0);
            let gap = (S as f64 / rate) as u64;
            let mut p = start;
            while p < start + dur {
                let src = v4(0x0b00_0000 + rng.below(0xd000_0000) as u32);
                sc.packet(
                    p,
                    &PacketSpec::new(
                        src,
                        target,
                        L4::Tcp {
                            sport: 1024 + rng.below(60_000) as u16,
                            dport: 80,
                            flags: tcp::SYN,
                            seq: 1,
                            ack: 0,
                        },
                        0,
                    ),
                );
                p += gap;
            }
            attacks.push(Attack {
                kind: AlertKind::SynFlood,
                target,
                crossing: start + (window_s * thr_syn / rate * S as f64) as u64,
            });
        }
    }
    (sc.to_pcap_bytes(), attacks)
}

/// Runs the latency scenario; returns the latency histogram (µs) and the
/// attacks missed.
fn latency(
    n: usize,
    batch_delay: Duration,
    report: Duration,
) -> Result<(Histogram<u64>, usize), Failure> {
    let thr_udp = 2000.0;
    let thr_syn = 500.0;
    let mut d = DetectSection {
        flood: FloodSection {
            udp_pps: Some(thr_udp),
            ..FloodSection::default()
        },
        ..DetectSection::default()
    };
    d.flood.syn_flows = Some(thr_syn);
    let cfg = d
        .validate(&assets())
        .map_err(|e| anyhow::anyhow!("bench configuration: {}", e.join("; ")))?;
    let window_s = cfg.flood_window_ns as f64 / S as f64;
    let (bytes, attacks) = scenario(n, thr_udp, thr_syn, window_s);
    let mut engine = Engine::new(Arc::new(cfg), 1);
    let fc = FlowConfig {
        report_interval: Some(report),
        ..FlowConfig::default()
    };
    let mut table = FlowTable::new(&fc, 1_000_000);
    let mut decoder = Decoder::new();
    let mut reader = CaptureReader::from_slice(&bytes, "latency scenario")
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let step = u64::try_from(batch_delay.as_nanos())
        .unwrap_or(u64::MAX)
        .max(1);
    let mut batch: Vec<FlowRecord> = Vec::new();
    let mut batch_end: Option<u64> = None;
    let mut raised: std::collections::HashMap<(AlertKind, String), u64> = Default::default();
    let mut deliver = |batch: &mut Vec<FlowRecord>, at: u64, engine: &mut Engine| {
        for u in engine.observe("bench", batch) {
            if u.opened {
                let key = (
                    u.alert.kind,
                    u.alert
                        .targets
                        .first()
                        .map(|t| t.addr.clone())
                        .unwrap_or_default(),
                );
                raised.entry(key).or_insert(at);
            }
        }
        batch.clear();
    };
    while let Some(pkt) = reader.next_packet().map_err(|e| anyhow::anyhow!("{e}"))? {
        let now = pkt.ts_ns;
        // Batches whose delay has passed are sent before this packet.
        while let Some(end) = batch_end
            && now >= end
        {
            deliver(&mut batch, end, &mut engine);
            batch_end = None;
        }
        decoder.decode(&pkt, &mut |m, _| {
            table.process(m);
        });
        table.advance(now);
        let recs = table.take_records();
        if !recs.is_empty() {
            if batch_end.is_none() {
                batch_end = Some(now + step);
            }
            batch.extend(recs);
        }
    }
    if let Some(end) = batch_end {
        deliver(&mut batch, end, &mut engine);
    }
    let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)
        .map_err(|e| anyhow::anyhow!("histogram: {e}"))?;
    let mut missed = 0;
    for a in &attacks {
        let port = if a.kind == AlertKind::UdpFlood {
            53
        } else {
            80
        };
        let key = (a.kind, format!("{}:{port}", a.target));
        match raised.get(&key) {
            Some(at) => {
                let us = at.saturating_sub(a.crossing) / 1000;
                let _ = h.record(us.max(1));
            }
            None => missed += 1,
        }
    }
    Ok((h, missed))
}

/// The detect benchmark.
pub fn detect(runs: usize, flows: u64) -> Result<(), Failure> {
    let recs = mix(flows);
    println!(
        "detect: {} synthesized flow records, all touching the protected network (web, DNS, outbound, probes, SSH, Modbus), batches of 8192, one core",
        recs.len()
    );
    let mut rates = Vec::new();
    let mut alerts = 0;
    for _ in 0..runs {
        let (r, a) = engine_rate(&recs, 8192)?;
        rates.push(r);
        alerts = a;
    }
    let peer_n = recs.len().min(1_000_000);
    let store = store_rate(&recs[..peer_n], 8192)?;
    println!(
        "  engine: median {:.2} M flows/s over {runs} runs (runs: {}); {alerts} alert updates",
        median(rates.clone()) / 1e6,
        rates
            .iter()
            .map(|r| format!("{:.2}", r / 1e6))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  peer in this run: SQLite store commit of the first {peer_n} records, {:.2} M flows/s",
        store / 1e6
    );
    let n = 40;
    let (h, missed) = latency(n, Duration::from_millis(250), Duration::from_secs(1))?;
    println!(
        "latency: {} floods ({} one-flow UDP, {} SYN from spoofed sources), sensor early reports 1 s, exporter batches 250 ms",
        2 * n,
        n,
        n
    );
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "  alert after threshold crossing, event time: p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms; {} detected, {missed} missed",
        ms(0.5),
        ms(0.9),
        ms(0.99),
        h.max() as f64 / 1000.0,
        h.len()
    );
    Ok(())
}
