//! `vigil query`: flows, top-N, totals, time series and sensor status, from a data
//! directory or from a collector over gRPC.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use vigil_collector::query::{self, Filter, SeriesPoint, TimeRange, TopBy, TopKey, TopRow, Totals};
use vigil_collector::store::clickhouse::{ClickHouseConfig, ClickHouseStore};
use vigil_collector::store::prelude::*;
use vigil_collector::store::sqlite::SqliteStore;
use vigil_collector::store::{SensorRecord, plan};
use vigil_proto::time::Rfc3339Nanos;
use vigil_proto::{FlowRecord, pb};
use vigil_sensor::export::{Format, RecordWriter};

use crate::Failure;

/// Arguments of `vigil query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// Filter, e.g. `dst net 10.20.0.0/16 and port 502` (words are joined).
    #[arg(value_name = "FILTER")]
    filter: Vec<String>,
    /// Read the store in this collector data directory.
    #[arg(long, value_name = "DIR", conflicts_with = "collector")]
    data_dir: Option<PathBuf>,
    /// Ask this collector (http://HOST:PORT or https://HOST:PORT).
    #[arg(long, value_name = "URL", conflicts_with = "store")]
    collector: Option<String>,
    /// Read a ClickHouse store directly: clickhouse://USER:PASSWORD@HOST:PORT/DATABASE,
    /// where the credentials, the port (HTTP, default 8123) and the database
    /// (default vigil) may be left out; clickhouse+https://… for its HTTPS
    /// port (default 8443), checked against --tls-ca or the system's CAs.
    #[arg(long, value_name = "URL", conflicts_with = "data_dir")]
    store: Option<String>,
    /// Flows first seen at or after: RFC 3339 (2024-05-01T10:00:00Z), or a
    /// duration before now (90m, 2h, 7d).
    #[arg(long)]
    since: Option<String>,
    /// Flows first seen before (same forms as --since).
    #[arg(long)]
    until: Option<String>,
    /// Top-N by src, dst, dport, sport, proto, app, or an application
    /// field: dns.qname, tls.sni, http.host, ssh.client, tls.ja4, ssh.hassh.
    #[arg(long, value_name = "KEY")]
    top: Option<String>,
    /// What the top-N ranks by: bytes, packets or flows.
    #[arg(long, default_value = "bytes")]
    by: String,
    /// Rows of a top-N, or records of a flow listing.
    #[arg(long, short = 'n')]
    limit: Option<u64>,
    /// Print totals (flows, packets, bytes) of the matching flows.
    #[arg(long, conflicts_with = "top")]
    count: bool,
    /// Print a time series: totals per interval of this length (1m, 5m,
    /// 1h; at least 1s), by the flows' first packet time; intervals without
    /// flows are printed as zeros (up to now when only --since is given).
    #[arg(long, value_name = "INTERVAL", conflicts_with_all = ["top", "count"])]
    series: Option<String>,
    /// Print the sensors the collector knows, with their loss counters.
    #[arg(long, conflicts_with_all = ["top", "count", "series"])]
    status: bool,
    /// Output: table, jsonl or csv.
    #[arg(long, default_value = "table")]
    format: Format,
    /// Print on stderr how the store answers (which roll-ups, column
    /// segments or tables it reads, and why) and how long it took; a
    /// collector sends its store's explanation with the answer.
    #[arg(long, conflicts_with = "status")]
    explain: bool,
    #[command(flatten)]
    tls: ClientTlsArgs,
}

/// TLS options of a client of the collector.
#[derive(Debug, Args, Clone)]
pub struct ClientTlsArgs {
    /// CA (PEM) of the collector, for https:// (or of ClickHouse, for
    /// --store clickhouse+https://).
    #[arg(long, value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM), for https://.
    #[arg(long, value_name = "PEM")]
    tls_cert: Option<PathBuf>,
    /// Client key (PEM), for https://.
    #[arg(long, value_name = "PEM")]
    tls_key: Option<PathBuf>,
    /// Name expected in the collector's certificate.
    #[arg(long)]
    tls_server_name: Option<String>,
}

pub use vigil_collector::query::parse_time;

enum Backend {
    Local(Box<dyn Store>),
    Remote(pb::query_client::QueryClient<Channel>),
}

pub fn run(a: QueryArgs) -> Result<(), Failure> {
    let text = a.filter.join(" ");
    let filter =
        query::parse(&text).map_err(|e| Failure::usage(anyhow::anyhow!(e.render(&text))))?;
    let now = vigil_proto::time::now_ns();
    let range = TimeRange {
        since_ns: a
            .since
            .as_deref()
            .map(|s| parse_time(s, now))
            .transpose()
            .map_err(|e| Failure::usage(anyhow::anyhow!("--since {e}")))?,
        until_ns: a
            .until
            .as_deref()
            .map(|s| parse_time(s, now))
            .transpose()
            .map_err(|e| Failure::usage(anyhow::anyhow!("--until {e}")))?,
    };
    let top = a
        .top
        .as_deref()
        .map(|k| {
            TopKey::parse(k).ok_or_else(|| {
                Failure::usage(anyhow::anyhow!(
                    "--top {k:?}: expected src, dst, dport, sport, proto, app, dns.qname, \
                     tls.sni, http.host, ssh.client, tls.ja4 or ssh.hassh"
                ))
            })
        })
        .transpose()?;
    let by = TopBy::parse(&a.by).ok_or_else(|| {
        Failure::usage(anyhow::anyhow!(
            "--by {:?}: expected bytes, packets or flows",
            a.by
        ))
    })?;
    let step_ns = a
        .series
        .as_deref()
        .map(|s| {
            let d = vigil_proto::units::parse_duration(s)
                .map_err(|e| format!("{s:?}: expected an interval such as 1m, 5m or 1h: {e}"))?;
            let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
            // Refuse a step under a second, or too many intervals, before
            // asking the store.
            query::shown_series(&[], range, now, ns)?;
            Ok::<_, String>(ns)
        })
        .transpose()
        .map_err(|e| Failure::usage(anyhow::anyhow!("--series {e}")))?;
    let rt = crate::runtime()?;
    rt.block_on(async {
        let backend = match (&a.data_dir, &a.collector, &a.store) {
            (Some(dir), None, None) => Backend::Local(Box::new(open_local(dir)?)),
            (None, None, Some(url)) => {
                Backend::Local(Box::new(open_clickhouse(url, a.tls.tls_ca.as_deref())?))
            }
            (None, Some(url), None) => Backend::Remote(pb::query_client::QueryClient::new(
                connect(url, &a.tls).await?,
            )),
            _ => {
                return Err(Failure::usage(anyhow::anyhow!(
                    "give --data-dir DIR, --store clickhouse://HOST:PORT/DB or --collector URL"
                )));
            }
        };
        // A collector says how it answered with its answer.
        if let (true, Backend::Local(store)) = (a.explain, &backend) {
            let limit = a.limit.unwrap_or(10).clamp(1, 10_000) as usize;
            let plan = if let Some(step) = step_ns {
                Some(plan::series(&filter, range, step, store.rollups())?)
            } else if a.count {
                Some(plan::count(&filter, range, store.rollups()))
            } else {
                top.map(|key| plan::top(&filter, range, key, by, limit, store.rollups()))
            };
            let lines = match plan {
                Some(p) => store.explain(&p)?,
                None => store.explain_select(&plan::select(
                    &filter,
                    range,
                    usize::try_from(a.limit.unwrap_or(1000)).unwrap_or(usize::MAX),
                ))?,
            };
            for l in lines {
                eprintln!("explain: {l}");
            }
        }
        let started = std::time::Instant::now();
        let mut remote = Explain {
            asked: a.explain,
            lines: Vec::new(),
        };
        let stdout = io::stdout();
        let mut out = BufWriter::new(stdout.lock());
        if a.status {
            let sensors = status(backend).await?;
            print_status(&mut out, &sensors, a.format)?;
        } else if let Some(step) = step_ns {
            let points = series(backend, &filter, &text, range, step, &mut remote).await?;
            // A series from --since alone runs to now, quiet intervals
            // included.
            let points = query::shown_series(&points, range, now, step)
                .map_err(|e| Failure::usage(anyhow::anyhow!("--series: {e}")))?;
            print_series(&mut out, &points, a.format)?;
        } else if a.count {
            let t = count(backend, &filter, &text, range, &mut remote).await?;
            print_totals(&mut out, &t, a.format)?;
        } else if let Some(key) = top {
            let limit = a.limit.unwrap_or(10).clamp(1, 10_000) as usize;
            let rows = top_n(
                backend,
                &filter,
                &text,
                range,
                (key, by, limit),
                &mut remote,
            )
            .await?;
            print_top(&mut out, &rows, a.format)?;
        } else {
            let limit = a.limit.unwrap_or(1000);
            let recs = flows(backend, &filter, &text, range, limit, &mut remote).await?;
            let mut w = RecordWriter::new(&mut out, a.format);
            w.write(&recs).context("writing flows")?;
            w.flush().context("writing flows")?;
        }
        out.flush().context("writing output")?;
        for l in &remote.lines {
            eprintln!("explain: {l}");
        }
        if a.explain {
            eprintln!(
                "explain: answered in {:.1} ms",
                started.elapsed().as_secs_f64() * 1e3
            );
        }
        Ok(())
    })
}

/// Opens a ClickHouse store from `clickhouse://[USER[:PASSWORD]@]HOST[:PORT][/DATABASE]`
/// (the bracketed parts are optional), or `clickhouse+https://…` for its
/// HTTPS interface, with `ca` the CA to check its certificate against.
pub fn open_clickhouse(
    url: &str,
    ca: Option<&std::path::Path>,
) -> Result<ClickHouseStore, Failure> {
    let bad = || {
        Failure::usage(anyhow::anyhow!(
            "--store {url:?}: expected clickhouse://[USER[:PASSWORD]@]HOST[:PORT][/DATABASE] \
             or clickhouse+https://…"
        ))
    };
    let (rest, scheme) = match (
        url.strip_prefix("clickhouse://"),
        url.strip_prefix("clickhouse+https://"),
    ) {
        (Some(r), _) => (r, "http"),
        (_, Some(r)) => (r, "https"),
        _ => return Err(bad()),
    };
    let (auth, rest) = match rest.rsplit_once('@') {
        Some((a, r)) => (Some(a), r),
        None => (None, rest),
    };
    let (host, db) = match rest.split_once('/') {
        Some((h, d)) if !d.is_empty() => (h, d),
        Some((h, _)) => (h, "vigil"),
        None => (rest, "vigil"),
    };
    if host.is_empty() {
        return Err(bad());
    }
    let mut cfg = ClickHouseConfig {
        url: format!("{scheme}://{host}"),
        ca: ca.map(std::path::Path::to_path_buf),
        database: db.to_string(),
        ..ClickHouseConfig::default()
    };
    if let Some(a) = auth {
        let (u, p) = a.split_once(':').unwrap_or((a, ""));
        cfg.user = u.to_string();
        cfg.password = p.to_string();
    }
    ClickHouseStore::open(&cfg).map_err(|e| Failure::usage(anyhow::anyhow!("--store: {e}")))
}

/// Opens a collector's data directory read-only.
pub fn open_local(dir: &std::path::Path) -> Result<SqliteStore, Failure> {
    if !dir.join("vigil.db").exists() {
        return Err(Failure::usage(anyhow::anyhow!(
            "{}: no vigil.db here; is this a collector data directory?",
            dir.display()
        )));
    }
    Ok(SqliteStore::open_read_only(dir)?)
}

/// Connects to a collector, with TLS for https://.
pub async fn connect(url: &str, a: &ClientTlsArgs) -> Result<Channel, Failure> {
    let mut ep = Endpoint::from_shared(url.to_string())
        .map_err(|e| Failure::usage(anyhow::anyhow!("--collector {url:?}: {e}")))?;
    if url.starts_with("https://") {
        let (Some(ca), Some(cert), Some(key)) = (&a.tls_ca, &a.tls_cert, &a.tls_key) else {
            return Err(Failure::usage(anyhow::anyhow!(
                "https:// needs --tls-ca, --tls-cert and --tls-key"
            )));
        };
        let read =
            |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(ca)?))
            .identity(Identity::from_pem(read(cert)?, read(key)?));
        if let Some(n) = &a.tls_server_name {
            tls = tls.domain_name(n.clone());
        }
        ep = ep.tls_config(tls).context("TLS configuration")?;
    }
    Ok(ep
        .connect()
        .await
        .with_context(|| format!("connecting to {url}"))?)
}

fn pb_range(r: TimeRange) -> pb::TimeRange {
    pb::TimeRange {
        since_ns: r.since_ns.unwrap_or(0),
        until_ns: r.until_ns.unwrap_or(0),
    }
}

/// A collector's error status as a failure (usage for a bad argument).
pub fn status_err(s: tonic::Status) -> Failure {
    let e = anyhow::anyhow!("collector: {}", s.message());
    if s.code() == tonic::Code::InvalidArgument {
        Failure::usage(e)
    } else {
        Failure::from(e)
    }
}

async fn status(b: Backend) -> Result<Vec<SensorRecord>, Failure> {
    match b {
        Backend::Local(s) => Ok(s.sensors()?),
        Backend::Remote(mut c) => {
            let r = c
                .status(pb::StatusRequest {})
                .await
                .map_err(status_err)?
                .into_inner();
            Ok(r.sensors
                .into_iter()
                .map(|s| SensorRecord {
                    sensor_id: s.sensor_id,
                    last_seq: s.last_seq,
                    batches: s.batches,
                    flows: s.flows,
                    duplicates: s.duplicates,
                    seq_gaps: s.seq_gaps,
                    last_seen_ns: s.last_seen_ns,
                    incarnation: s.incarnation,
                    seq_resets: s.seq_resets,
                    id_conflicts: s.id_conflicts,
                    stats: s.stats.unwrap_or_default(),
                })
                .collect())
        }
    }
}

/// Whether `--explain` was asked, and what a collector said.
struct Explain {
    asked: bool,
    lines: Vec<String>,
}

async fn count(
    b: Backend,
    f: &Filter,
    text: &str,
    r: TimeRange,
    explain: &mut Explain,
) -> Result<Totals, Failure> {
    match b {
        Backend::Local(s) => Ok(s.count(f, r)?),
        Backend::Remote(mut c) => {
            let t = c
                .count(pb::CountQuery {
                    filter: text.to_string(),
                    range: Some(pb_range(r)),
                    explain: explain.asked,
                })
                .await
                .map_err(status_err)?
                .into_inner();
            explain.lines = t.explain;
            Ok(Totals {
                flows: t.flows,
                packets: t.packets,
                bytes: t.bytes,
            })
        }
    }
}

async fn series(
    b: Backend,
    f: &Filter,
    text: &str,
    r: TimeRange,
    step_ns: u64,
    explain: &mut Explain,
) -> Result<Vec<SeriesPoint>, Failure> {
    match b {
        Backend::Local(s) => Ok(s.series(f, r, step_ns)?),
        Backend::Remote(mut c) => {
            let reply = c
                .series(pb::SeriesQuery {
                    filter: text.to_string(),
                    range: Some(pb_range(r)),
                    step_ns,
                    explain: explain.asked,
                })
                .await
                .map_err(status_err)?
                .into_inner();
            explain.lines = reply.explain;
            Ok(reply
                .points
                .into_iter()
                .map(|p| SeriesPoint {
                    start_ns: p.start_ns,
                    totals: Totals {
                        flows: p.flows,
                        packets: p.packets,
                        bytes: p.bytes,
                    },
                })
                .collect())
        }
    }
}

async fn top_n(
    b: Backend,
    f: &Filter,
    text: &str,
    r: TimeRange,
    (key, by, limit): (TopKey, TopBy, usize),
    explain: &mut Explain,
) -> Result<Vec<TopRow>, Failure> {
    match b {
        Backend::Local(s) => Ok(s.top(f, r, key, by, limit)?),
        Backend::Remote(mut c) => {
            let key = key.to_wire();
            let by = match by {
                TopBy::Bytes => pb::TopBy::Bytes,
                TopBy::Packets => pb::TopBy::Packets,
                TopBy::Flows => pb::TopBy::Flows,
            };
            let reply = c
                .top(pb::TopQuery {
                    filter: text.to_string(),
                    range: Some(pb_range(r)),
                    key: key as i32,
                    by: by as i32,
                    limit: limit as u32,
                    explain: explain.asked,
                })
                .await
                .map_err(status_err)?
                .into_inner();
            explain.lines = reply.explain;
            Ok(reply
                .rows
                .into_iter()
                .map(|r| TopRow {
                    key: r.key,
                    totals: Totals {
                        flows: r.flows,
                        packets: r.packets,
                        bytes: r.bytes,
                    },
                })
                .collect())
        }
    }
}

async fn flows(
    b: Backend,
    f: &Filter,
    text: &str,
    r: TimeRange,
    limit: u64,
    explain: &mut Explain,
) -> Result<Vec<FlowRecord>, Failure> {
    match b {
        Backend::Local(s) => Ok(s
            .flows(f, r, usize::try_from(limit).unwrap_or(usize::MAX))?
            .into_iter()
            .map(|(_, r)| r)
            .collect()),
        Backend::Remote(mut c) => {
            let mut stream = c
                .flows(pb::FlowQuery {
                    filter: text.to_string(),
                    range: Some(pb_range(r)),
                    limit,
                    explain: explain.asked,
                })
                .await
                .map_err(status_err)?
                .into_inner();
            let mut out = Vec::new();
            while let Some(chunk) = stream.message().await.map_err(status_err)? {
                explain.lines.extend(chunk.explain);
                for sf in chunk.flows {
                    let flow = sf.flow.ok_or_else(|| {
                        anyhow::anyhow!("collector sent a stored flow without a flow")
                    })?;
                    out.push(
                        FlowRecord::try_from(flow)
                            .map_err(|e| anyhow::anyhow!("collector sent an invalid flow: {e}"))?,
                    );
                }
            }
            Ok(out)
        }
    }
}

fn print_totals(out: &mut impl Write, t: &Totals, format: Format) -> Result<(), Failure> {
    match format {
        Format::Jsonl => writeln!(out, "{}", query::json::totals(t)),
        Format::Csv => writeln!(
            out,
            "flows,packets,bytes\n{},{},{}",
            t.flows, t.packets, t.bytes
        ),
        _ => writeln!(
            out,
            "flows: {}  packets: {}  bytes: {}",
            t.flows, t.packets, t.bytes
        ),
    }
    .context("writing output")?;
    Ok(())
}

fn print_series(
    out: &mut impl Write,
    points: &[SeriesPoint],
    format: Format,
) -> Result<(), Failure> {
    let mut w = || -> io::Result<()> {
        match format {
            Format::Jsonl => {
                for p in points {
                    writeln!(out, "{}", query::json::series_point(p))?;
                }
            }
            Format::Csv => {
                writeln!(out, "start,start_ns,flows,packets,bytes")?;
                for p in points {
                    writeln!(
                        out,
                        "{},{},{},{},{}",
                        Rfc3339Nanos(p.start_ns),
                        p.start_ns,
                        p.totals.flows,
                        p.totals.packets,
                        p.totals.bytes
                    )?;
                }
            }
            _ => {
                writeln!(
                    out,
                    "{:<32} {:>12} {:>14} {:>16}",
                    "start", "flows", "packets", "bytes"
                )?;
                for p in points {
                    writeln!(
                        out,
                        "{:<32} {:>12} {:>14} {:>16}",
                        Rfc3339Nanos(p.start_ns).to_string(),
                        p.totals.flows,
                        p.totals.packets,
                        p.totals.bytes
                    )?;
                }
            }
        }
        Ok(())
    };
    w().context("writing output")?;
    Ok(())
}

fn print_top(out: &mut impl Write, rows: &[TopRow], format: Format) -> Result<(), Failure> {
    let mut w = || -> io::Result<()> {
        match format {
            Format::Jsonl => {
                for r in rows {
                    writeln!(out, "{}", query::json::top_row(r))?;
                }
            }
            Format::Csv => {
                writeln!(out, "key,flows,packets,bytes")?;
                for r in rows {
                    writeln!(
                        out,
                        "{},{},{},{}",
                        r.key, r.totals.flows, r.totals.packets, r.totals.bytes
                    )?;
                }
            }
            _ => {
                writeln!(
                    out,
                    "{:<40} {:>12} {:>14} {:>16}",
                    "key", "flows", "packets", "bytes"
                )?;
                for r in rows {
                    writeln!(
                        out,
                        "{:<40} {:>12} {:>14} {:>16}",
                        r.key, r.totals.flows, r.totals.packets, r.totals.bytes
                    )?;
                }
            }
        }
        Ok(())
    };
    w().context("writing output")?;
    Ok(())
}

fn print_status(
    out: &mut impl Write,
    sensors: &[SensorRecord],
    format: Format,
) -> Result<(), Failure> {
    let mut w = || -> io::Result<()> {
        match format {
            Format::Jsonl | Format::Csv => {
                for s in sensors {
                    writeln!(out, "{}", query::json::sensor(s))?;
                }
            }
            _ => {
                writeln!(
                    out,
                    "{:<24} {:>8} {:>10} {:>8} {:>6} {:>6} {:>9} {:>12} {:>12} {:>10} {:>14}  last seen",
                    "sensor",
                    "last seq",
                    "flows",
                    "dup",
                    "gaps",
                    "resets",
                    "conflicts",
                    "packets",
                    "kernel drops",
                    "evicted",
                    "spool dropped"
                )?;
                for s in sensors {
                    writeln!(
                        out,
                        "{:<24} {:>8} {:>10} {:>8} {:>6} {:>6} {:>9} {:>12} {:>12} {:>10} {:>14}  {}",
                        s.sensor_id,
                        s.last_seq,
                        s.flows,
                        s.duplicates,
                        s.seq_gaps,
                        s.seq_resets,
                        s.id_conflicts,
                        s.stats.packets,
                        s.stats.kernel_drops,
                        s.stats.flows_evicted,
                        s.stats.spool_dropped_flows,
                        Rfc3339Nanos(s.last_seen_ns)
                    )?;
                }
            }
        }
        Ok(())
    };
    w().context("writing output")?;
    Ok(())
}

/// Which alerts: `vigil alerts list` and `export`.
#[derive(Debug, Args)]
pub struct AlertFilter {
    /// Alerts active at or after: RFC 3339 or a duration before now (2h).
    #[arg(long)]
    pub since: Option<String>,
    /// Alerts that began before (same forms).
    #[arg(long)]
    pub until: Option<String>,
    /// Only this kind (syn_flood, vertical_scan, brute_force, …).
    #[arg(long)]
    pub kind: Option<String>,
    /// Only this severity or above: low, medium, high, critical.
    #[arg(long)]
    pub min_severity: Option<String>,
    /// Only this protected asset.
    #[arg(long)]
    pub asset: Option<String>,
}

impl AlertFilter {
    /// The query for a store, at most `limit` alerts; times relative to `now`.
    pub fn query(
        &self,
        now: u64,
        limit: u32,
    ) -> Result<vigil_collector::store::AlertQuery, Failure> {
        let time = |flag: &str, v: &Option<String>| {
            v.as_deref()
                .map(|s| parse_time(s, now))
                .transpose()
                .map_err(|e| Failure::usage(anyhow::anyhow!("--{flag} {e}")))
        };
        let kind = self
            .kind
            .as_deref()
            .map(|k| {
                vigil_collector::detect::AlertKind::parse(k).ok_or_else(|| {
                    let all: Vec<&str> = vigil_collector::detect::AlertKind::ALL
                        .iter()
                        .map(|k| k.as_str())
                        .collect();
                    Failure::usage(anyhow::anyhow!(
                        "--kind {k:?}: expected one of {}",
                        all.join(", ")
                    ))
                })
            })
            .transpose()?;
        let min_severity = self
            .min_severity
            .as_deref()
            .map(|s| {
                vigil_collector::detect::Severity::parse(s).ok_or_else(|| {
                    Failure::usage(anyhow::anyhow!(
                        "--min-severity {s:?}: expected low, medium, high or critical"
                    ))
                })
            })
            .transpose()?;
        Ok(vigil_collector::store::AlertQuery {
            since_ns: time("since", &self.since)?,
            until_ns: time("until", &self.until)?,
            kind,
            min_severity,
            asset: self.asset.clone(),
            limit: limit.max(1) as usize,
        })
    }

    /// The same query for a collector (checked first by [`Self::query`]).
    pub fn remote(&self, q: &vigil_collector::store::AlertQuery, limit: u32) -> pb::AlertQuery {
        pb::AlertQuery {
            range: Some(pb::TimeRange {
                since_ns: q.since_ns.unwrap_or(0),
                until_ns: q.until_ns.unwrap_or(0),
            }),
            kind: self.kind.clone().unwrap_or_default(),
            min_severity: self.min_severity.clone().unwrap_or_default(),
            asset: self.asset.clone().unwrap_or_default(),
            limit: limit.max(1),
        }
    }
}

/// An alert from a collector with up to `max_flows` of its evidence flows,
/// and its completeness as JSON (empty from an older collector).
pub async fn remote_alert(
    c: &mut pb::alerts_client::AlertsClient<Channel>,
    id: u64,
    max_flows: u32,
) -> Result<(pb::Alert, Vec<FlowRecord>, String), Failure> {
    let d = c
        .get(pb::AlertRequest { id, max_flows })
        .await
        .map_err(status_err)?
        .into_inner();
    let al = d
        .alert
        .ok_or_else(|| anyhow::anyhow!("collector sent an alert detail without an alert"))?;
    let mut flows = Vec::with_capacity(d.flows.len());
    for f in d.flows.into_iter().filter_map(|s| s.flow) {
        flows.push(
            FlowRecord::try_from(f)
                .map_err(|e| anyhow::anyhow!("collector sent an invalid flow: {e}"))?,
        );
    }
    Ok((al, flows, d.completeness_json))
}
