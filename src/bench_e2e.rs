//! `vigil bench --modes transport,store`: the sensor → collector path and
//! the store's queries.
//!
//! - `transport`: the capture through the pipeline, the exporter (spool,
//!   gRPC on loopback) and an in-process collector committing to a fresh
//!   SQLite store; flows per second from start to the last ack, and the
//!   exporter's send-to-ack latency (hdrhistogram).
//! - `store`: a store filled with synthetic records spread over one hour,
//!   then the unfiltered top destinations by bytes for that hour (served by
//!   the per-minute roll-ups), and, as the control in the same run, the same
//!   answer computed from the flows table (a filter that keeps everything
//!   forces the raw path).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use vigil_collector::query::{self, Filter, TimeRange, TopBy, TopKey};
use vigil_collector::server::{self, CollectorConfig};
use vigil_collector::store::IngestBatch;
use vigil_collector::store::prelude::*;
use vigil_collector::store::sqlite::{SqliteConfig, SqliteStore, Synchronous};
use vigil_proto::{CommunityId, ConnState, EndReason, FlowRecord, History, Vlans};
use vigil_sensor::export::grpc::{Exporter, ExporterConfig};
use vigil_sensor::run::{self, Input, LiveCounters, RunConfig};
use vigil_sensor::synth::Rng;

use crate::Failure;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Sensor → collector throughput and ack latency.
pub fn transport(
    bytes: &[u8],
    runs: usize,
    synchronous: Synchronous,
    batch_flows: usize,
    attestation: &[bool],
) -> Result<(), Failure> {
    let rt = crate::runtime()?;
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); attestation.len()];
    let mut sizes: Vec<Vec<f64>> = vec![Vec::new(); attestation.len()];
    println!(
        "transport: sensor pipeline → spool → gRPC (loopback) → collector → SQLite ({synchronous:?}), {batch_flows} flows per batch"
    );
    for run in 0..runs {
        // With attestation on and off both, they alternate, and which goes
        // first alternates too.
        let mut order: Vec<usize> = (0..attestation.len()).collect();
        if run % 2 == 1 {
            order.reverse();
        }
        for k in order {
            let attest = attestation[k];
            let (flows, elapsed, lat, stored) =
                transport_run(bytes, synchronous, batch_flows, attest, &rt)?;
            let rate = flows as f64 / elapsed.as_secs_f64();
            println!(
                "  run {} (attestation {}): {flows} flows in {:.2} s = {:.0} flows/s; ack latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} batches); store {:.1} bytes/flow",
                run + 1,
                if attest { "on" } else { "off" },
                elapsed.as_secs_f64(),
                rate,
                lat.value_at_quantile(0.5) as f64 / 1e3,
                lat.value_at_quantile(0.99) as f64 / 1e3,
                lat.max() as f64 / 1e3,
                lat.len(),
                stored as f64 / flows as f64,
            );
            rates[k].push(rate);
            sizes[k].push(stored as f64 / flows as f64);
        }
    }
    for (k, attest) in attestation.iter().enumerate() {
        println!(
            "  median, attestation {}: {:.0} flows/s; store {:.1} bytes/flow",
            if *attest { "on" } else { "off" },
            median(rates[k].clone()),
            median(sizes[k].clone())
        );
    }
    if attestation.len() == 2 {
        let per: Vec<f64> = rates[0].iter().zip(&rates[1]).map(|(a, b)| a / b).collect();
        let shown: Vec<String> = per.iter().map(|r| format!("{r:.3}")).collect();
        println!(
            "  {} ÷ {} per round: median {:.3} (rounds: {})",
            if attestation[0] { "on" } else { "off" },
            if attestation[1] { "on" } else { "off" },
            median(per),
            shown.join(" ")
        );
    }
    // Control in the same run: the same records committed straight into a
    // fresh store, in the same batch size (no sensor, no gRPC, one thread).
    let (records, _) = {
        let out = std::sync::Mutex::new(Vec::new());
        let mut sink = |r: &[FlowRecord]| {
            out.lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(r);
            Ok(())
        };
        let inputs = [Input::Memory {
            name: "bench".into(),
            bytes,
        }];
        let rep = run::run(&inputs, &RunConfig::default(), &mut sink, None)?;
        (
            out.into_inner()
                .map_err(|_| anyhow::anyhow!("record buffer poisoned"))?,
            rep,
        )
    };
    let mut direct = Vec::new();
    for _ in 0..runs {
        let tmp = tempfile::tempdir().context("temporary directory")?;
        let store = SqliteStore::open(
            tmp.path(),
            SqliteConfig {
                synchronous,
                ..SqliteConfig::default()
            },
        )?;
        let t = Instant::now();
        for (i, chunk) in records.chunks(batch_flows).enumerate() {
            store.commit(&IngestBatch {
                attestation: None,
                certificate: None,
                sensor_id: "control".into(),
                incarnation: 1,
                seq: i as u64 + 1,
                flows: chunk.to_vec(),
                stats: None,
                received_ns: 0,
            })?;
        }
        direct.push(records.len() as f64 / t.elapsed().as_secs_f64());
    }
    let shown: Vec<String> = direct.iter().map(|r| format!("{r:.0}")).collect();
    println!(
        "  control, the same records committed directly (no sensor, no gRPC, one batch per transaction): median {:.0} flows/s (runs: {})",
        median(direct),
        shown.join(" ")
    );
    Ok(())
}

/// One transport run: (records, elapsed, ack latency, store bytes used).
fn transport_run(
    bytes: &[u8],
    synchronous: Synchronous,
    batch_flows: usize,
    attest: bool,
    rt: &tokio::runtime::Runtime,
) -> Result<(u64, Duration, hdrhistogram::Histogram<u64>, u64), Failure> {
    let tmp = tempfile::tempdir().context("temporary directory")?;
    let data = tmp.path().join("data");
    let (flows, elapsed, lat) = rt.block_on(async {
        let mut cfg = CollectorConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), data.clone());
        cfg.store.synchronous = synchronous;
        let collector = server::start(cfg).await?;
        let mut exp = ExporterConfig::new(
            format!("http://{}", collector.addr),
            "bench".into(),
            tmp.path().join("spool"),
        );
        exp.batch_flows = batch_flows;
        exp.spool.max_bytes = 16 << 30;
        exp.spool.segment_bytes = 64 << 20;
        if !attest {
            exp.attestation_key = None;
        }
        let live = Arc::new(LiveCounters::default());
        let started = Instant::now();
        let exporter = Exporter::start(exp, live.clone())?;
        let sink = exporter.sink();
        let pcfg = RunConfig {
            live: Some(live),
            ..RunConfig::default()
        };
        let data: &'static [u8] = Box::leak(bytes.to_vec().into_boxed_slice());
        let report = tokio::task::spawn_blocking(move || {
            let inputs = [Input::Memory {
                name: "bench".into(),
                bytes: data,
            }];
            let mut push = |r: &[FlowRecord]| sink.push(r);
            run::run(&inputs, &pcfg, &mut push, None)
        })
        .await
        .map_err(|e| anyhow::anyhow!("pipeline task: {e}"))??;
        let d = exporter.drain(Duration::from_secs(600)).await?;
        let lat = d.ack_latency_us.clone();
        let elapsed = started.elapsed();
        if d.pending > 0 {
            return Err(Failure::from(anyhow::anyhow!(
                "{} batches unacknowledged",
                d.pending
            )));
        }
        collector.shutdown().await?;
        Ok::<_, Failure>((report.table.record_total(), elapsed, lat))
    })?;
    let stored = SqliteStore::open(&data, SqliteConfig::default())?.used_bytes()?;
    Ok((flows, elapsed, lat, stored))
}

/// Fills `dir` with `n` records over one hour from `t0`; returns the time
/// taken. Sources: 1 M addresses; destinations: 4096 servers of a /20 (198.51.0.0/20),
/// skewed (a few take most); services from a short list.
fn fill(dir: &Path, n: u64, t0: u64) -> Result<Duration, Failure> {
    let store = SqliteStore::open(
        dir,
        SqliteConfig {
            synchronous: Synchronous::Normal,
            ..SqliteConfig::default()
        },
    )?;
    let started = Instant::now();
    let done = std::sync::atomic::AtomicBool::new(false);
    // Column segments are built beside the commits, as the collector's
    // upkeep builds them.
    let took = std::thread::scope(|s| {
        let builder = s.spawn(|| -> Result<(), Failure> {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                store.build_columns()?;
                std::thread::sleep(Duration::from_millis(200));
            }
            Ok(())
        });
        let filled = (|| -> Result<Duration, Failure> {
            let mut synth = Synthetic::new(n, t0);
            let mut seq = 0;
            while let Some(flows) = synth.batch(8192) {
                seq += 1;
                store.commit(&IngestBatch {
                    attestation: None,
                    certificate: None,
                    sensor_id: "bench".into(),
                    incarnation: 1,
                    seq,
                    flows,
                    stats: None,
                    received_ns: t0,
                })?;
            }
            Ok(started.elapsed())
        })();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let built = builder
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the column builder panicked").into()));
        let took = filled?;
        built?;
        Ok::<_, Failure>(took)
    })?;
    store.build_columns()?;
    println!(
        "store: column segments complete {:.1} s after the last commit",
        (started.elapsed() - took).as_secs_f64()
    );
    Ok(took)
}

/// `n` synthetic records over one hour from `t0`, in batches. Sources: 1 M
/// addresses; destinations: 4096 servers of a /20 (198.51.0.0/20), skewed
/// (a few take most); services from a short list.
pub(crate) struct Synthetic {
    rng: Rng,
    i: u64,
    n: u64,
    t0: u64,
    history: History,
}

impl Synthetic {
    pub(crate) fn new(n: u64, t0: u64) -> Synthetic {
        let mut history = History::default();
        history.push(b'S');
        history.push(b'h');
        Synthetic {
            rng: Rng::new(0x2545_f491_4f6c_dd1d),
            i: 0,
            n,
            t0,
            history,
        }
    }

    pub(crate) fn batch(&mut self, per_batch: usize) -> Option<Vec<FlowRecord>> {
        if self.i >= self.n {
            return None;
        }
        let (n, t0) = (self.n, self.t0);
        let mut flows = Vec::with_capacity(per_batch);
        for _ in 0..per_batch.min((n - self.i) as usize) {
            let rng = &mut self.rng;
            let i = self.i;
            let r = rng.next_u64();
            // (In u128: i × 3.6e12 overflows u64 past 5 M records.)
            let first = t0 + (u128::from(i) * 3_600_000_000_000 / u128::from(n)) as u64;
            let src = 0x0a00_0000 | (r as u32 & 0x000f_ffff);
            // 4096 servers; squaring skews towards low server numbers.
            let x = (rng.next_u64() % 4096) as u32;
            let dst = 0xc633_0000 | ((x * x) >> 12);
            let port = [443u16, 80, 53, 502, 22, 123, 3389, 8080][(r >> 40) as usize % 8];
            flows.push(FlowRecord {
                app: None,
                flow_id: i,
                first_seen_ns: first,
                last_seen_ns: first + 1_000_000,
                proto: if port == 53 || port == 123 { 17 } else { 6 },
                src_ip: IpAddr::from(src.to_be_bytes()),
                src_port: Some(1024 + (r >> 48) as u16 % 60000),
                dst_ip: IpAddr::from(dst.to_be_bytes()),
                dst_port: Some(port),
                vlan: Vlans::NONE,
                fwd_packets: 1 + (r >> 20) % 20,
                fwd_bytes: 60 + (r >> 24) % 20_000,
                rev_packets: (r >> 30) % 20,
                rev_bytes: (r >> 34) % 40_000,
                fwd_tcp_flags: 0x1b,
                rev_tcp_flags: 0x1b,
                fwd_initial_tcp_flags: 0x02,
                rev_initial_tcp_flags: 0x12,
                conn_state: ConnState::SF,
                history: self.history,
                end_reason: EndReason::Fin,
                community_id: CommunityId([r as u8; 20]),
                tunnel: None,
            });
            self.i += 1;
        }
        Some(flows)
    }
}

/// A question of the suite: a filter and what is asked of it.
#[derive(Clone, Debug)]
enum Ask {
    Top(TopKey, TopBy),
    Count,
    Series(u64),
    Flows(usize),
}

/// A filter of the query language drawn at random over the synthetic
/// records' values (a few match nothing): primitives of every kind joined
/// by `and`, `or` and `not`, nested up to `depth`.
fn random_filter(rng: &mut Rng, depth: u32) -> String {
    let pick = |rng: &mut Rng, v: &[&str]| v[rng.below(v.len() as u64) as usize].to_string();
    if depth > 0 && rng.below(3) > 0 {
        let a = random_filter(rng, depth - 1);
        let b = random_filter(rng, depth - 1);
        return match rng.below(3) {
            0 => format!("({a}) and ({b})"),
            1 => format!("({a}) or ({b})"),
            _ => format!("not ({a}) and ({b})"),
        };
    }
    let port = |rng: &mut Rng| {
        pick(
            rng,
            &["443", "80", "53", "502", "22", "123", "3389", "8080", "25"],
        )
    };
    match rng.below(11) {
        0 => format!("src net 10.{}.0.0/16", rng.below(17)),
        1 => format!("dst net 198.51.{}.0/24", rng.below(17)),
        2 => format!(
            "host 10.{}.{}.{}",
            rng.below(16),
            rng.below(256),
            rng.below(256)
        ),
        3 => format!("dst host 198.51.0.{}", rng.below(64)),
        4 => format!("dst port {}", port(rng)),
        5 => format!("port {}", port(rng)),
        6 => pick(rng, &["tcp", "udp", "icmp", "proto 255"]),
        7 => format!("bytes > {}", rng.below(60_000)),
        8 => format!("packets < {}", rng.below(40)),
        9 => format!("src portrange 1024-{}", 1024 + rng.below(60_000)),
        _ => pick(rng, &["sensor bench", "sensor other", "ip6", "ip4"]),
    }
}

/// The analysts' questions over the synthetic hour, timed on `store`,
/// `runs` times each: the slow questions of issue #32 (all stored time,
/// as `vigil query` asks without --since), the roll-ups' own questions,
/// and `random` filters drawn from the grammar, each with a random shape.
/// With `reference` (the same records read another way), every answer is
/// checked against its answer. Prints each question's median and the
/// suite's median and slowest.
fn query_suite(
    store: &dyn FlowQueries,
    reference: Option<&dyn FlowQueries>,
    t0: u64,
    runs: usize,
    random: usize,
) -> Result<(), Failure> {
    let hour = TimeRange {
        since_ns: Some(t0),
        until_ns: Some(t0 + 3_600_000_000_000),
    };
    // A range that does not start on a minute: edges read from the flows.
    let ragged = TimeRange {
        since_ns: Some(t0 + 30_000_000_000),
        until_ns: Some(t0 + 3_570_000_000_000),
    };
    let all = TimeRange::default();
    let min = 60_000_000_000;
    let mut cases: Vec<(String, TimeRange, Ask)> = vec![
        ("".into(), all, Ask::Top(TopKey::Src, TopBy::Bytes)),
        (
            "not proto 255".into(),
            all,
            Ask::Top(TopKey::Dst, TopBy::Bytes),
        ),
        (
            "dst port 502".into(),
            all,
            Ask::Top(TopKey::Src, TopBy::Flows),
        ),
        (
            "src net 10.1.0.0/16".into(),
            all,
            Ask::Top(TopKey::DstPort, TopBy::Packets),
        ),
        ("tcp and not dst port 80".into(), all, Ask::Count),
        ("src net 10.2.0.0/16".into(), all, Ask::Series(min)),
        ("".into(), hour, Ask::Top(TopKey::Dst, TopBy::Bytes)),
        ("".into(), ragged, Ask::Top(TopKey::Dst, TopBy::Bytes)),
        (
            "dst net 198.51.0.0/22".into(),
            hour,
            Ask::Top(TopKey::Dst, TopBy::Bytes),
        ),
        (
            "tcp and dst port 502".into(),
            hour,
            Ask::Top(TopKey::DstPort, TopBy::Flows),
        ),
        ("".into(), hour, Ask::Count),
        ("".into(), hour, Ask::Series(min)),
        ("host 192.0.2.99".into(), all, Ask::Flows(1000)),
    ];
    let mut rng = Rng::new(0x32);
    let keys = [
        TopKey::Src,
        TopKey::Dst,
        TopKey::DstPort,
        TopKey::SrcPort,
        TopKey::Proto,
    ];
    let bys = [TopBy::Bytes, TopBy::Packets, TopBy::Flows];
    for _ in 0..random {
        let f = random_filter(&mut rng, 3);
        let ask = match rng.below(6) {
            0 => Ask::Count,
            1 => Ask::Series([min, 10 * min, 1_000_000_000][rng.below(3) as usize]),
            2 => Ask::Flows(100),
            _ => Ask::Top(
                keys[rng.below(keys.len() as u64) as usize],
                bys[rng.below(3) as usize],
            ),
        };
        let range = if rng.below(2) == 0 { all } else { ragged };
        cases.push((f, range, ask));
    }
    let answer =
        |s: &dyn FlowQueries, f: &Filter, range: TimeRange, ask: &Ask| -> Result<String, Failure> {
            Ok(match ask {
                Ask::Top(k, by) => format!("{:?}", s.top(f, range, *k, *by, 10)?),
                Ask::Count => format!("{:?}", s.count(f, range)?),
                Ask::Series(step) => format!("{:?}", s.series(f, range, *step)?),
                Ask::Flows(n) => {
                    let rows = s.flows(f, range, *n)?;
                    let mut ids: Vec<(u64, u64)> = rows
                        .iter()
                        .map(|(_, r)| (r.first_seen_ns, r.flow_id))
                        .collect();
                    ids.sort_unstable();
                    format!("{ids:?}")
                }
            })
        };
    let mut medians = Vec::new();
    for (text, range, ask) in &cases {
        let f = query::parse(text).map_err(|e| anyhow::anyhow!("{text}: {e:?}"))?;
        let mut times = Vec::new();
        let mut got = String::new();
        for _ in 0..runs {
            let t = Instant::now();
            got = answer(store, &f, *range, ask)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let checked = match reference {
            Some(r) => {
                let want = answer(r, &f, *range, ask)?;
                if want != got {
                    return Err(anyhow::anyhow!(
                        "{ask:?} '{text}' over {range:?}: {got} where reading every row gives {want}"
                    )
                    .into());
                }
                "; equal to every row's"
            }
            None => "",
        };
        let what = match range {
            r if *r == all => "all time",
            r if *r == hour => "one hour",
            _ => "ragged hour",
        };
        let shown: Vec<String> = times.iter().map(|t| format!("{t:.0}")).collect();
        let m = median(times.clone());
        println!(
            "  {ask:?} '{text}', {what}: median {m:.1} ms (ms: {}){checked}; {}",
            shown.join(" "),
            got.chars().take(60).collect::<String>()
        );
        medians.push((m, format!("{ask:?} '{text}'")));
    }
    medians.sort_by(|a, b| a.0.total_cmp(&b.0));
    let slowest = medians.last().cloned().unwrap_or_default();
    println!(
        "  suite of {}: median {:.1} ms, slowest {:.1} ms ({})",
        medians.len(),
        medians[medians.len() / 2].0,
        slowest.0,
        slowest.1
    );
    Ok(())
}

/// Sends the store benchmark's `n` synthetic records to `to` (nfcapd's
/// UDP port) as NetFlow v5, one record per flow with its two directions'
/// packets and bytes summed and the initiator as source, so that nfdump
/// answers the suite's questions over the same flows: the peer of the
/// store benchmark. Paced, so that a loopback socket buffer holds up;
/// records nfcapd loses show in its count.
pub fn netflow(n: u64, to: SocketAddr) -> Result<(), Failure> {
    let t0: u64 = 1_767_225_600_000_000_000;
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").context("binding a UDP socket")?;
    // The exporter "booted" an hour before the records begin.
    let boot_ms = t0 / 1_000_000 - 3_600_000;
    let mut synth = Synthetic::new(n, t0);
    let (mut sent, mut seq) = (0u64, 0u32);
    let started = Instant::now();
    while let Some(flows) = synth.batch(8192) {
        for chunk in flows.chunks(30) {
            let now_ms = chunk
                .iter()
                .map(|r| r.last_seen_ns / 1_000_000)
                .max()
                .unwrap_or(0);
            let mut p = Vec::with_capacity(24 + 48 * chunk.len());
            p.extend_from_slice(&5u16.to_be_bytes());
            p.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            p.extend_from_slice(&((now_ms - boot_ms) as u32).to_be_bytes());
            p.extend_from_slice(&((now_ms / 1000) as u32).to_be_bytes());
            p.extend_from_slice(&((now_ms % 1000) as u32 * 1_000_000).to_be_bytes());
            p.extend_from_slice(&seq.to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, 0]);
            for r in chunk {
                let (IpAddr::V4(src), IpAddr::V4(dst)) = (r.src_ip, r.dst_ip) else {
                    continue;
                };
                p.extend_from_slice(&src.octets());
                p.extend_from_slice(&dst.octets());
                p.extend_from_slice(&[0; 8]); // next hop, input, output
                p.extend_from_slice(&(r.packets() as u32).to_be_bytes());
                p.extend_from_slice(&(r.bytes() as u32).to_be_bytes());
                let ms = |ns: u64| ((ns / 1_000_000 - boot_ms) as u32).to_be_bytes();
                p.extend_from_slice(&ms(r.first_seen_ns));
                p.extend_from_slice(&ms(r.last_seen_ns));
                p.extend_from_slice(&r.src_port.unwrap_or(0).to_be_bytes());
                p.extend_from_slice(&r.dst_port.unwrap_or(0).to_be_bytes());
                p.extend_from_slice(&[0, r.fwd_tcp_flags | r.rev_tcp_flags, r.proto, 0]);
                p.extend_from_slice(&[0; 8]); // AS numbers, masks, pad
            }
            sock.send_to(&p, to).context("sending NetFlow")?;
            seq = seq.wrapping_add(chunk.len() as u32);
            sent += chunk.len() as u64;
            if sent.is_multiple_of(30 * 16) {
                std::thread::sleep(Duration::from_micros(600));
            }
        }
    }
    println!(
        "netflow: {sent} flow records sent to {to} as NetFlow v5 in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// ClickHouse: inserts `flows` synthetic records through the store (group
/// commits of batches of 8192 up to the store's `group_flows`, the most the
/// collector's writer gathers; the
/// records are made beforehand, so that only the store is timed), then
/// times the query suite.
pub fn clickhouse(url: &str, flows: u64, runs: usize, random: usize) -> Result<(), Failure> {
    use vigil_collector::store::clickhouse::{ClickHouseConfig, ClickHouseStore};
    let db = "vigil_bench";
    let store = ClickHouseStore::open(&ClickHouseConfig {
        url: url.to_string(),
        database: db.into(),
        ..ClickHouseConfig::default()
    })?;
    let t0: u64 = 1_767_225_600_000_000_000; // 2026-01-01T00:00:00Z
    let have = store.count(&Filter::All, TimeRange::default())?.flows;
    if have == 0 {
        let mut synth = Synthetic::new(flows, t0);
        let mut seq = 0;
        let mut took = Duration::ZERO;
        // Made and inserted a slice at a time (100 M records do not fit in
        // memory at once).
        loop {
            let mut groups = Vec::new();
            for _ in 0..2 {
                let mut group = Vec::new();
                while group.len() * 8192 < store.group_flows() {
                    let Some(f) = synth.batch(8192) else { break };
                    seq += 1;
                    group.push(IngestBatch {
                        attestation: None,
                        certificate: None,
                        sensor_id: "bench".into(),
                        incarnation: 1,
                        seq,
                        flows: f,
                        stats: None,
                        received_ns: t0,
                    });
                }
                if group.is_empty() {
                    break;
                }
                groups.push(group);
            }
            if groups.is_empty() {
                break;
            }
            let started = Instant::now();
            for group in &groups {
                let refs: Vec<&IngestBatch> = group.iter().collect();
                store.commit_many(&refs)?;
            }
            took += started.elapsed();
        }
        let took = took.as_secs_f64();
        println!(
            "clickhouse: {flows} flows inserted in {took:.1} s ({:.0} flows/s; group commits of {} as the collector makes them, Native blocks over HTTP, {} parallel inserts)",
            flows as f64 / took,
            store.group_flows(),
            ClickHouseConfig::default().parallel_inserts
        );
    } else {
        println!("clickhouse: reusing database {db} ({have} flows)");
    }
    query_suite(&store, None, t0, runs, random)
}

/// Top-N over a filled store.
pub fn store(
    flows: u64,
    runs: usize,
    keep_dir: Option<&Path>,
    random: usize,
    check: bool,
) -> Result<(), Failure> {
    let tmp = tempfile::tempdir().context("temporary directory")?;
    let dir = keep_dir.unwrap_or(tmp.path());
    let t0: u64 = 1_767_225_600_000_000_000; // 2026-01-01T00:00:00Z
    if !dir.join("vigil.db").exists() {
        let took = fill(dir, flows, t0)?;
        println!(
            "store: {flows} flows over one hour written in {:.1} s ({:.0} flows/s, direct commits of 8192)",
            took.as_secs_f64(),
            flows as f64 / took.as_secs_f64()
        );
    } else {
        println!("store: reusing {}", dir.display());
    }
    let store = SqliteStore::open(dir, SqliteConfig::default())?;
    // As the collector's upkeep does at start: segments built and the
    // address dictionaries over them.
    let started = Instant::now();
    store.build_columns()?;
    println!(
        "store: column segments and address dictionaries brought up to date in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let rows = check
        .then(|| SqliteStore::open_read_only(dir).map(|s| s.with_columns(false)))
        .transpose()?;
    query_suite(
        &store,
        rows.as_ref().map(|s| s as &dyn FlowQueries),
        t0,
        runs,
        random,
    )
}
