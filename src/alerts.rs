//! `vigil alerts`: list alerts, show one with its evidence flows, watch new
//! ones as the collector raises them.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use vigil_collector::store::prelude::*;
use vigil_collector::store::sqlite::SqliteStore;
use vigil_proto::time::Rfc3339Nanos;
use vigil_proto::{FlowRecord, pb};
use vigil_sensor::export::{Format, RecordWriter};

use vigil_collector::evidence::{Completeness, completeness};
use vigil_collector::model::alert::{alert_json, alert_show_json};

use crate::Failure;
use crate::query::{ClientTlsArgs, connect, open_local, status_err};

/// `vigil alerts …`
#[derive(Debug, Subcommand)]
pub enum AlertsCmd {
    /// List alerts, newest first.
    List(ListArgs),
    /// Show one alert with its evidence flows.
    Show(ShowArgs),
    /// Print alerts as the collector opens and updates them.
    Watch(WatchArgs),
    /// Write alerts as one STIX 2.1 bundle (for a partner, as its policy
    /// in collector.toml says: filtered, TLP-marked, anonymized).
    Export(Box<crate::share::ExportArgs>),
}

/// Where the alerts are.
#[derive(Debug, Args)]
pub struct Source {
    /// Read the store in this collector data directory.
    #[arg(long, value_name = "DIR", conflicts_with = "collector")]
    data_dir: Option<PathBuf>,
    /// Ask this collector (http://HOST:PORT or https://HOST:PORT).
    #[arg(long, value_name = "URL")]
    collector: Option<String>,
    #[command(flatten)]
    tls: ClientTlsArgs,
}

/// Arguments of `vigil alerts list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    source: Source,
    #[command(flatten)]
    filter: crate::query::AlertFilter,
    /// At most this many.
    #[arg(long, short = 'n', default_value = "100")]
    limit: u32,
    /// Output: table or jsonl.
    #[arg(long, default_value = "table")]
    format: Format,
}

/// Arguments of `vigil alerts show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The alert's id.
    id: u64,
    #[command(flatten)]
    source: Source,
    /// Evidence flows to print (0: none).
    #[arg(long, default_value = "20")]
    flows: u32,
    /// Output: table (for reading) or jsonl (the alert, then its flows).
    #[arg(long, default_value = "table")]
    format: Format,
}

/// Arguments of `vigil alerts watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The collector (http://HOST:PORT or https://HOST:PORT).
    #[arg(long, value_name = "URL")]
    collector: String,
    #[command(flatten)]
    tls: ClientTlsArgs,
    /// Output: table or jsonl.
    #[arg(long, default_value = "table")]
    format: Format,
}

enum Backend {
    Local(SqliteStore),
    Remote(pb::alerts_client::AlertsClient<tonic::transport::Channel>),
}

async fn backend(s: &Source) -> Result<Backend, Failure> {
    match (&s.data_dir, &s.collector) {
        (Some(dir), None) => Ok(Backend::Local(open_local(dir)?)),
        (None, Some(url)) => Ok(Backend::Remote(pb::alerts_client::AlertsClient::new(
            connect(url, &s.tls).await?,
        ))),
        _ => Err(Failure::usage(anyhow::anyhow!(
            "give --data-dir DIR or --collector URL"
        ))),
    }
}

pub fn run(cmd: AlertsCmd) -> Result<(), Failure> {
    if let AlertsCmd::Export(a) = cmd {
        return crate::share::export(*a);
    }
    let rt = crate::runtime()?;
    rt.block_on(async move {
        let stdout = io::stdout();
        let mut out = BufWriter::new(stdout.lock());
        match cmd {
            AlertsCmd::List(a) => list(a, &mut out).await?,
            AlertsCmd::Show(a) => show(a, &mut out).await?,
            AlertsCmd::Watch(a) => watch(a, &mut out).await?,
            // Runs its own runtime: started above, before this one.
            AlertsCmd::Export(_) => {}
        }
        out.flush().context("writing output")?;
        Ok(())
    })
}

async fn list(a: ListArgs, out: &mut impl Write) -> Result<(), Failure> {
    let q = a.filter.query(vigil_proto::time::now_ns(), a.limit)?;
    let alerts: Vec<pb::Alert> = match backend(&a.source).await? {
        Backend::Local(s) => s.alerts(&q)?.iter().map(pb::Alert::from).collect(),
        Backend::Remote(mut c) => {
            c.list(a.filter.remote(&q, a.limit))
                .await
                .map_err(status_err)?
                .into_inner()
                .alerts
        }
    };
    match a.format {
        Format::Jsonl => {
            for al in &alerts {
                writeln!(out, "{}", alert_json(al)).context("writing alerts")?;
            }
        }
        Format::Table => {
            print_table(out, &alerts)?;
        }
        other => {
            return Err(Failure::usage(anyhow::anyhow!(
                "--format {other:?}: alerts print as table or jsonl"
            )));
        }
    }
    Ok(())
}

async fn show(a: ShowArgs, out: &mut impl Write) -> Result<(), Failure> {
    let (alert, flows, completeness): (pb::Alert, Vec<FlowRecord>, Option<Completeness>) =
        match backend(&a.source).await? {
            Backend::Local(s) => {
                let Some(al) = s.alert(a.id)? else {
                    return Err(anyhow::anyhow!("no alert {}", a.id).into());
                };
                let n = (a.flows as usize).min(al.evidence.len());
                let flows = s
                    .evidence_flows(&al.evidence[..n])?
                    .into_iter()
                    .map(|(_, r)| r)
                    .collect();
                let c = completeness(&s, al.first_seen_ns, al.last_seen_ns)?;
                (pb::Alert::from(&al), flows, Some(c))
            }
            Backend::Remote(mut c) => {
                let (al, flows, json) = crate::query::remote_alert(&mut c, a.id, a.flows).await?;
                // An older collector sends none.
                let c = serde_json::from_str::<Completeness>(&json).ok();
                (al, flows, c)
            }
        };
    match a.format {
        Format::Jsonl => {
            writeln!(out, "{}", alert_show_json(&alert, completeness.as_ref()))
                .context("writing the alert")?;
            let mut w = RecordWriter::new(&mut *out, Format::Jsonl);
            w.write(&flows).context("writing evidence flows")?;
            w.flush().context("writing evidence flows")?;
        }
        Format::Table => {
            print_detail(out, &alert)?;
            if let Some(c) = &completeness {
                writeln!(out, "\nsensors over its window:").context("writing")?;
                for l in c.lines() {
                    writeln!(out, "  {l}").context("writing")?;
                }
            }
            if !flows.is_empty() {
                writeln!(
                    out,
                    "\nevidence flows ({} of {} kept references):",
                    flows.len(),
                    alert.evidence.len()
                )
                .context("writing")?;
                let mut w = RecordWriter::new(&mut *out, Format::Table);
                w.write(&flows).context("writing evidence flows")?;
                w.flush().context("writing evidence flows")?;
            }
        }
        other => {
            return Err(Failure::usage(anyhow::anyhow!(
                "--format {other:?}: alerts print as table or jsonl"
            )));
        }
    }
    Ok(())
}

async fn watch(a: WatchArgs, out: &mut impl Write) -> Result<(), Failure> {
    let mut c = pb::alerts_client::AlertsClient::new(connect(&a.collector, &a.tls).await?);
    let mut stream = c
        .subscribe(pb::SubscribeRequest {})
        .await
        .map_err(status_err)?
        .into_inner();
    // On standard error, so that scripts know the subscription is live.
    eprintln!("vigil alerts: watching {}", a.collector);
    while let Some(al) = stream.message().await.map_err(status_err)? {
        match a.format {
            Format::Jsonl => writeln!(
                out,
                "{}",
                serde_json::json!({
                    "event": if al.opened { "opened" } else { "updated" },
                    "alert": alert_json(&al),
                })
            ),
            _ => writeln!(
                out,
                "{} #{} {} {} {}: {}",
                if al.opened { "OPENED " } else { "updated" },
                al.id,
                al.severity,
                al.kind,
                al.asset,
                al.summary
            ),
        }
        .context("writing alerts")?;
        out.flush().context("writing alerts")?;
    }
    Ok(())
}

fn short_time(ns: u64) -> String {
    let s = Rfc3339Nanos(ns).to_string();
    // 2026-01-01T10:00:00.123456789Z → 2026-01-01T10:00:00Z
    match s.split_once('.') {
        Some((head, _)) => format!("{head}Z"),
        None => s,
    }
}

/// A figure with its unit, readable: 1543.2 flows/s, 0.8 % jitter.
pub fn figure(v: f64, unit: &str) -> String {
    if unit.starts_with("interval jitter") {
        return format!("{:.1} % interval jitter", v * 100.0);
    }
    let n = if v >= 1e9 {
        format!("{:.2} G", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.1} k", v / 1e3)
    } else if v.fract() == 0.0 {
        format!("{v:.0} ")
    } else {
        format!("{v:.1} ")
    };
    format!("{n}{unit}")
}

pub fn print_table(out: &mut impl Write, alerts: &[pb::Alert]) -> Result<(), Failure> {
    writeln!(
        out,
        "{:>5}  {:<20}  {:<8}  {:<23}  {:<9}  {:<20}  {:>7}  SUMMARY",
        "ID", "LAST SEEN", "SEVERITY", "KIND", "ATT&CK", "ASSET", "SOURCES"
    )
    .context("writing")?;
    for a in alerts {
        writeln!(
            out,
            "{:>5}  {:<20}  {:<8}  {:<23}  {:<9}  {:<20}  {:>7}  {}",
            a.id,
            short_time(a.last_seen_ns),
            a.severity,
            a.kind,
            a.technique,
            a.asset,
            a.source_count,
            a.summary
        )
        .context("writing")?;
    }
    Ok(())
}

fn print_detail(out: &mut impl Write, a: &pb::Alert) -> Result<(), Failure> {
    let dur = a.last_seen_ns.saturating_sub(a.first_seen_ns) as f64 / 1e9;
    let parties = |v: &[pb::Party]| -> String {
        v.iter()
            .map(|p| {
                format!(
                    "{} ({} flows, {} packets, {} bytes)",
                    p.addr, p.flows, p.packets, p.bytes
                )
            })
            .collect::<Vec<_>>()
            .join("\n               ")
    };
    let threshold = if a.threshold > 0.0 {
        format!(" against a threshold of {}", figure(a.threshold, &a.unit))
    } else {
        String::new()
    };
    writeln!(
        out,
        "alert {}: {} [{}]\n  summary      {}\n  asset        {} (sector {}, criticality {})\n  ATT&CK       {} {} ({})\n  seen         {} → {} ({dur:.1} s), {} updates\n  measured     {}{threshold}\n  sources      {} distinct; top:\n               {}\n  targets      {} distinct; top:\n               {}\n  evidence     {} flows seen, {} references kept",
        a.id,
        a.kind,
        a.severity,
        a.summary,
        a.asset,
        if a.sector.is_empty() { "-" } else { &a.sector },
        a.criticality,
        a.technique,
        a.technique_name,
        a.matrix,
        Rfc3339Nanos(a.first_seen_ns),
        Rfc3339Nanos(a.last_seen_ns),
        a.updates,
        figure(a.measured, &a.unit),
        a.source_count,
        parties(&a.sources),
        a.target_count,
        parties(&a.targets),
        a.evidence_count,
        a.evidence.len(),
    )
    .context("writing")?;
    Ok(())
}
