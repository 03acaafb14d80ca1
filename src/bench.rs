//! `vigil bench`: pipeline throughput on synthesized traffic or a capture
//! file, both held in memory so the disk is not measured.

use std::num::NonZeroUsize;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use hdrhistogram::Histogram;
use vigil_sensor::run::split;
use vigil_sensor::run::{self, FileMode, Input, RunReport};
use vigil_sensor::synth::{self, BulkConfig, FrameSize, MixConfig};

use crate::Failure;
use crate::flows::EngineArgs;

/// `--frame`: a size, IMIX (bulk traffic) or natural (the realistic mix).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FrameArg {
    Fixed(usize),
    Imix,
    Natural,
}

fn frame_size(s: &str) -> Result<FrameArg, String> {
    match s {
        "imix" => Ok(FrameArg::Imix),
        "natural" => Ok(FrameArg::Natural),
        n => n
            .parse::<usize>()
            .ok()
            .filter(|n| (60..=9000).contains(n))
            .map(FrameArg::Fixed)
            .ok_or_else(|| {
                format!("{s:?}: expected imix, natural or a frame size from 60 to 9000")
            }),
    }
}

/// Arguments of `vigil bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Benchmark this capture file (loaded into memory) instead of synthesized traffic.
    #[arg(short = 'r', long = "read", value_name = "FILE")]
    file: Option<PathBuf>,
    /// Synthesized packets.
    #[arg(long, default_value = "5000000")]
    packets: u64,
    /// Synthesized concurrent flows.
    #[arg(long, default_value = "200000")]
    flows: u64,
    /// Capture time the synthesized packets span (e.g. 10m); default one
    /// microsecond between packets.
    #[arg(long, value_parser = humantime::parse_duration)]
    span: Option<std::time::Duration>,
    /// Synthesized traffic: `bulk` (every flow the same size, round-robin:
    /// the sensor's easiest case) or `realistic` (Zipf flow sizes, random
    /// interleaving, DNS, ICMP, ESP, full TCP conversations; see
    /// `synth::write_mix`).
    #[arg(long, default_value = "bulk", value_parser = ["bulk", "realistic"])]
    traffic: String,
    /// Synthesized frame size: a byte count (payloads cut to fit), `imix`
    /// (bulk traffic) or `natural` (the realistic mix's own sizes).
    #[arg(long, default_value = "64", value_parser = frame_size)]
    frame: FrameArg,
    /// Worker counts to measure, comma-separated.
    #[arg(long = "worker-counts", value_delimiter = ',', default_value = "1,2")]
    worker_counts: Vec<NonZeroUsize>,
    /// Runs per worker count; the median is reported.
    #[arg(long, default_value = "5")]
    runs: usize,
    /// Pipelines to measure, comma-separated: `shared` (N file workers
    /// sharing the capture's reading and decoding out in chunks, each
    /// tracking the flows of the address pairs it owns; what `vigil flows`
    /// runs on files), `dispatch`
    /// (one reader thread feeding N flow shards; what standard input goes
    /// through) and `fanout` (N shared-nothing workers, the input split by
    /// flow beforehand as AF_PACKET fanout splits a live link).
    /// `transport` (sensor → gRPC → collector → SQLite, flows/s and ack
    /// latency) and `store` (top-N over --store-flows stored flows) are
    /// measured when named.
    /// `detect` (the detection engine's flows/s and its alert latency in
    /// event time) is measured when named. `clickhouse` (insert rate into
    /// the ClickHouse store at --clickhouse-url and top-N over
    /// --store-flows flows) too.
    #[arg(long, value_delimiter = ',', default_value = "shared,dispatch", value_parser = ["shared", "dispatch", "fanout", "transport", "store", "detect", "clickhouse", "evidence"])]
    modes: Vec<String>,
    /// Flows per batch in the transport benchmark.
    #[arg(long, default_value = "2048")]
    batch_flows: usize,
    /// Sensor attestation in the transport benchmark: on, off, or both
    /// (alternating runs, compared).
    #[arg(long, default_value = "on", value_parser = ["on", "off", "both"])]
    attestation: String,
    /// Collector store durability in the transport benchmark: full or normal.
    #[arg(long, default_value = "full")]
    synchronous: String,
    /// Flows in the store benchmark.
    #[arg(long, default_value = "10000000")]
    store_flows: u64,
    /// Evidence flows of the alert in the evidence benchmark (`evidence`:
    /// an evidence bundle's export and verification time).
    #[arg(long, default_value = "10000")]
    evidence_flows: u64,
    /// Flow records in the detect benchmark.
    #[arg(long, default_value = "4000000")]
    detect_flows: u64,
    /// ClickHouse HTTP interface for the clickhouse benchmark (database
    /// vigil_bench, reused when it holds flows).
    #[arg(long, default_value = "http://127.0.0.1:8123", value_name = "URL")]
    clickhouse_url: String,
    /// Random filters (from the query language's grammar) in the store and
    /// clickhouse benchmarks' query suite, beside its fixed questions.
    #[arg(long, default_value = "24")]
    store_random: usize,
    /// In the store benchmark, check every answer against the same store
    /// read row by row in SQLite, without its column segments (slow).
    #[arg(long)]
    store_check: bool,
    /// Send the store benchmark's synthetic flows to this UDP address
    /// (nfcapd's) as NetFlow v5 and exit: the same flows for nfdump.
    #[arg(long, value_name = "ADDR")]
    netflow_to: Option<std::net::SocketAddr>,
    /// Keep (or reuse) the store benchmark's database in this directory.
    #[arg(long, value_name = "DIR")]
    store_dir: Option<PathBuf>,
    /// Write the synthesized capture to this file and exit (for peers such as softflowd).
    #[arg(long, value_name = "PCAP")]
    write_pcap: Option<PathBuf>,
    #[command(flatten)]
    engine: EngineArgs,
}

fn pct(h: &Histogram<u64>, q: f64) -> u64 {
    if h.is_empty() {
        0
    } else {
        h.value_at_quantile(q)
    }
}

pub fn run(a: BenchArgs) -> Result<(), Failure> {
    if a.runs == 0 {
        return Err(Failure::usage(anyhow::anyhow!("--runs must be at least 1")));
    }
    if let Some(to) = a.netflow_to {
        return crate::bench_e2e::netflow(a.store_flows, to);
    }
    if a.modes.iter().any(|m| m == "store") {
        crate::bench_e2e::store(
            a.store_flows,
            a.runs,
            a.store_dir.as_deref(),
            a.store_random,
            a.store_check,
        )?;
    }
    if a.modes.iter().any(|m| m == "evidence") {
        crate::bench_evidence::evidence(a.runs, a.evidence_flows)?;
    }
    if a.modes.iter().any(|m| m == "detect") {
        crate::bench_detect::detect(a.runs, a.detect_flows)?;
    }
    if a.modes.iter().any(|m| m == "clickhouse") {
        crate::bench_e2e::clickhouse(&a.clickhouse_url, a.store_flows, a.runs, a.store_random)?;
    }
    if a.modes
        .iter()
        .all(|m| m == "store" || m == "detect" || m == "clickhouse" || m == "evidence")
    {
        return Ok(());
    }
    // `--span` spread over the packets; each traffic's own gap otherwise.
    let gap_ns = a
        .span
        .map(|d| (d.as_nanos() as u64 / a.packets.max(1)).max(1));
    let (name, bytes) = match &a.file {
        Some(p) => (
            p.display().to_string(),
            std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        ),
        None if a.traffic == "realistic" => {
            let frame = match a.frame {
                FrameArg::Fixed(n) => Some(n),
                FrameArg::Natural => None,
                FrameArg::Imix => {
                    return Err(Failure::usage(anyhow::anyhow!(
                        "--frame imix is for bulk traffic; the realistic mix has natural sizes"
                    )));
                }
            };
            let cfg = MixConfig {
                packets: a.packets,
                flows: a.flows,
                frame,
                gap_ns: gap_ns.unwrap_or(MixConfig::default().gap_ns),
                ..MixConfig::default()
            };
            let mut v = Vec::new();
            let s = synth::write_mix(&cfg, &mut v).context("synthesizing traffic")?;
            let pct = |n: u64| n as f64 * 100.0 / s.packets.max(1) as f64;
            let label = frame.map_or("natural".to_string(), |n| format!("{n}-byte"));
            (
                format!(
                    "realistic mix: {} packets over {} flows, {label} frames (mean {:.0} B); \
                     TCP {:.1} %, DNS {:.1} %, other UDP {:.1} %, ICMP {:.1} %, ESP {:.1} %; \
                     IPv6 {:.1} %, VLAN {:.1} %; largest flow {} packets, {} flows of ≤ 4",
                    s.packets,
                    s.flows,
                    s.frame_bytes as f64 / s.packets.max(1) as f64,
                    pct(s.by_kind[0]),
                    pct(s.by_kind[1]),
                    pct(s.by_kind[2]),
                    pct(s.by_kind[3]),
                    pct(s.by_kind[4]),
                    pct(s.ipv6),
                    pct(s.vlan),
                    s.largest_flow,
                    s.mice,
                ),
                v,
            )
        }
        None => {
            let frame = match a.frame {
                FrameArg::Fixed(n) => FrameSize::Fixed(n),
                FrameArg::Imix => FrameSize::Imix,
                FrameArg::Natural => {
                    return Err(Failure::usage(anyhow::anyhow!(
                        "--frame natural is for --traffic realistic; bulk traffic takes a size or imix"
                    )));
                }
            };
            let cfg = BulkConfig {
                packets: a.packets,
                flows: a.flows,
                frame,
                gap_ns: gap_ns.unwrap_or(BulkConfig::default().gap_ns),
                ..BulkConfig::default()
            };
            let mut v = Vec::with_capacity((a.packets * 96) as usize);
            let s = synth::write_bulk(&cfg, &mut v).context("synthesizing traffic")?;
            let label = match frame {
                FrameSize::Imix => "imix".to_string(),
                FrameSize::Fixed(n) => format!("{n}-byte"),
            };
            (
                format!(
                    "synthetic: {} packets over {} flows, {label} frames",
                    s.packets, s.flows
                ),
                v,
            )
        }
    };
    if let Some(p) = &a.write_pcap {
        std::fs::write(p, &bytes).with_context(|| format!("writing {}", p.display()))?;
        eprintln!("wrote {} ({} bytes)", p.display(), bytes.len());
        return Ok(());
    }
    println!(
        "input: {name} ({:.1} MB in memory)",
        bytes.len() as f64 / 1e6
    );
    if a.modes.iter().any(|m| m == "transport") {
        let sync = match a.synchronous.as_str() {
            "full" => vigil_collector::store::sqlite::Synchronous::Full,
            "normal" => vigil_collector::store::sqlite::Synchronous::Normal,
            other => {
                return Err(Failure::usage(anyhow::anyhow!(
                    "--synchronous {other:?}: expected full or normal"
                )));
            }
        };
        let attestation: &[bool] = match a.attestation.as_str() {
            "off" => &[false],
            "both" => &[true, false],
            _ => &[true],
        };
        crate::bench_e2e::transport(&bytes, a.runs, sync, a.batch_flows, attestation)?;
    }
    let pipelines = ["shared", "dispatch", "fanout"];
    if !a.modes.iter().any(|m| pipelines.contains(&m.as_str())) {
        return Ok(());
    }
    println!(
        "{:<9} {:>7} {:>9} {:>8} {:>8} {:>34} {:>8}",
        "pipeline", "workers", "Mpps", "ns/pkt", "flows", "stages p50/p99 (ns)", "B/flow"
    );
    let inputs = [Input::Memory {
        name: name.clone(),
        bytes: &bytes,
    }];
    for mode in a.modes.iter().filter(|m| pipelines.contains(&m.as_str())) {
        let mut base = None;
        for &w in &a.worker_counts {
            let mut cfg = a.engine.config();
            cfg.workers = w;
            if mode == "dispatch" {
                cfg.file_mode = FileMode::Dispatch;
            }
            let split = if mode == "fanout" {
                split::split_by_flow(&bytes, w.get()).context("splitting the capture by flow")?
            } else {
                Vec::new()
            };
            let streams: Vec<&[u8]> = split.iter().map(|v| v.as_slice()).collect();
            let mut runs: Vec<RunReport> = Vec::with_capacity(a.runs);
            for _ in 0..a.runs {
                let mut sink = |_: &[vigil_proto::FlowRecord]| Ok(());
                runs.push(if mode == "fanout" {
                    split::run(&streams, &cfg, &mut sink)?
                } else {
                    run::run(&inputs, &cfg, &mut sink, None)?
                });
            }
            runs.sort_by_key(|x| x.elapsed);
            let r = &runs[runs.len() / 2];
            let t = &r.timings;
            let stages = if mode != "dispatch" {
                format!(
                    "worker {}/{}",
                    pct(&t.worker_ns, 0.5),
                    pct(&t.worker_ns, 0.99)
                )
            } else {
                format!(
                    "decode {}/{} update {}/{}",
                    pct(&t.decode_ns, 0.5),
                    pct(&t.decode_ns, 0.99),
                    pct(&t.update_ns, 0.5),
                    pct(&t.update_ns, 0.99)
                )
            };
            println!(
                "{:<9} {:>7} {:>9.2} {:>8.1} {:>8} {:>34} {:>8}",
                mode,
                w,
                r.mpps(),
                r.elapsed.as_nanos() as f64 / r.packets.max(1) as f64,
                r.table.flows,
                stages,
                r.table_bytes.checked_div(r.flows_at_end).unwrap_or(0),
            );
            let all: Vec<String> = runs.iter().map(|r| format!("{:.2}", r.mpps())).collect();
            print!("          runs (Mpps, sorted): {}", all.join(" "));
            if mode == "dispatch" {
                print!(
                    "; queue wait p50/p99 {}/{} ns",
                    pct(&t.queue_ns, 0.5),
                    pct(&t.queue_ns, 0.99)
                );
            }
            match base {
                None => {
                    base = Some(r.mpps());
                    println!();
                }
                Some(b) => println!("; {:.2}x the first row", r.mpps() / b),
            }
        }
    }
    println!(
        "stages: ns per packet measured per batch (decode: the reader thread; update: one shard; \
         worker: read+decode+update, per packet the worker owns); B/flow: table bytes per active flow"
    );
    Ok(())
}
