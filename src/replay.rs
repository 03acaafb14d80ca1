//! `vigil replay`: send a capture's frames out of a test interface, every
//! address rewritten into test ranges first (127.0.0.0/8, and the test
//! IPv6 prefix), at a controlled rate. For live-capture tests and
//! benchmarks on veth pairs inside network namespaces.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use vigil_proto::time::now_ns as wall_ns;
use vigil_sensor::capture::{CaptureReader, LinkType, PcapWriter};
use vigil_sensor::rewrite::{Rewriter, Skip};

use crate::Failure;

/// Arguments of `vigil replay`.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Capture file(s) to send, in order.
    #[arg(short = 'r', long = "read", required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Interface to send on (a test interface: a veth end in a namespace).
    #[arg(short = 'i', long, value_name = "IF")]
    interface: Option<String>,
    /// Frames per second; 0 sends as fast as the interface takes them.
    #[arg(long, default_value = "10000")]
    pps: u64,
    /// Send the files this many times (the rewriting stays the same, so
    /// later rounds repeat the same conversations).
    #[arg(long, default_value = "1", value_parser = clap::value_parser!(u32).range(1..))]
    loops: u32,
    /// Write the frames as sent (rewritten, stamped with the time they were
    /// sent) to this pcap file: `vigil flows` on it is what a sensor on the
    /// other end must report.
    #[arg(long, value_name = "FILE")]
    write_sent: Option<PathBuf>,
    /// Rewrite and write --write-sent, but send nothing.
    #[arg(long)]
    dry_run: bool,
}

/// Paces sends at a fixed rate: sleeps when well ahead, spins when close.
struct Pacer {
    start: Instant,
    interval_ns: u64,
    sent: u64,
}

impl Pacer {
    fn wait(&mut self) {
        if self.interval_ns == 0 {
            return;
        }
        let due = Duration::from_nanos(self.sent.saturating_mul(self.interval_ns));
        loop {
            let now = self.start.elapsed();
            if now >= due {
                break;
            }
            let ahead = due - now;
            if ahead > Duration::from_micros(200) {
                std::thread::sleep(ahead - Duration::from_micros(100));
            } else {
                std::hint::spin_loop();
            }
        }
        self.sent += 1;
    }
}

pub fn run(a: ReplayArgs) -> Result<(), Failure> {
    if a.interface.is_none() && !a.dry_run {
        return Err(Failure::usage(anyhow::anyhow!(
            "give --interface IF, or --dry-run"
        )));
    }
    #[cfg(target_os = "linux")]
    let sender = match (&a.interface, a.dry_run) {
        (Some(i), false) => Some(
            vigil_sensor::capture::af_packet::AfPacketSender::open(i).map_err(|e| {
                if e.is_usage() {
                    Failure::usage(e)
                } else {
                    Failure::from(e)
                }
            })?,
        ),
        _ => None,
    };
    #[cfg(not(target_os = "linux"))]
    if !a.dry_run {
        return Err(Failure::usage(anyhow::anyhow!(
            "sending needs Linux (AF_PACKET); use --dry-run"
        )));
    }
    let mut writer = match &a.write_sent {
        Some(p) => Some(
            PcapWriter::new(
                BufWriter::new(
                    File::create(p).with_context(|| format!("creating {}", p.display()))?,
                ),
                LinkType::Ethernet,
            )
            .with_context(|| format!("writing {}", p.display()))?,
        ),
        None => None,
    };
    let mut rewriter = Rewriter::new();
    let mut skipped: BTreeMap<Skip, u64> = BTreeMap::new();
    let mut frame = Vec::with_capacity(1 << 16);
    let mut pacer = Pacer {
        start: Instant::now(),
        interval_ns: 1_000_000_000u64.checked_div(a.pps).unwrap_or(0),
        sent: 0,
    };
    let (mut sent, mut bytes) = (0u64, 0u64);
    let mut damaged = Vec::new();
    let started = Instant::now();
    for _ in 0..a.loops {
        for path in &a.files {
            let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
            let mut reader = CaptureReader::new(f, path.clone())?;
            loop {
                let pkt = match reader.next_packet() {
                    Ok(Some(p)) => p,
                    Ok(None) => break,
                    // Frames before the damage were sent; go on with the next file.
                    Err(e) => {
                        damaged.push(e);
                        break;
                    }
                };
                if let Err(why) = rewriter.rewrite(pkt.link, pkt.data, &mut frame) {
                    *skipped.entry(why).or_default() += 1;
                    continue;
                }
                pacer.wait();
                #[cfg(target_os = "linux")]
                if let Some(s) = &sender {
                    s.send(&frame)?;
                }
                let ts = wall_ns();
                if let Some(w) = &mut writer {
                    w.write_packet_with_len(ts, &frame, frame.len() as u32)
                        .context("writing the sent frames")?;
                }
                sent += 1;
                bytes += frame.len() as u64;
            }
        }
    }
    if let Some(w) = writer {
        w.finish().context("writing the sent frames")?;
    }
    let secs = started.elapsed().as_secs_f64();
    let (v4, v6) = rewriter.mapped();
    eprintln!(
        "sent {sent} frames ({bytes} bytes) in {secs:.3} s: {:.0} frames/s; addresses rewritten: {v4} IPv4, {v6} IPv6",
        sent as f64 / secs.max(1e-9)
    );
    if !skipped.is_empty() {
        let list: Vec<String> = skipped
            .iter()
            .map(|(k, v)| format!("{} {v}", k.as_str()))
            .collect();
        eprintln!(
            "not sent (could not be rewritten completely): {}",
            list.join(", ")
        );
    }
    for e in &damaged {
        eprintln!("vigil: error: {e}");
    }
    if !damaged.is_empty() {
        return Err(Failure::from(anyhow::anyhow!(
            "{} input(s) could not be read to the end; the frames before the damage were sent",
            damaged.len()
        )));
    }
    Ok(())
}
