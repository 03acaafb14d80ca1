//! `vigil detect`: the collector's detectors over stored flows (a
//! retro-hunt: flows stored with detection off, a new indicator list, new
//! thresholds). The alerts found that the store does not hold are stored
//! with their evidence, as if raised live; those it holds are counted.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use vigil_collector::config::CollectorFile;
use vigil_collector::hunt::hunt;
use vigil_collector::query::TimeRange;
use vigil_collector::store::Store;
use vigil_collector::store::clickhouse::ClickHouseStore;
use vigil_collector::store::sqlite::SqliteStore;
use vigil_proto::pb;

use crate::Failure;
use crate::query::{open_clickhouse, parse_time};

/// Arguments of `vigil detect`.
#[derive(Debug, Args)]
pub struct DetectArgs {
    /// The collector's configuration: its protected assets, detection
    /// thresholds and indicator lists (and, unless --data-dir or --store,
    /// its store).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: PathBuf,
    /// The collector's data directory (the embedded store).
    #[arg(long, value_name = "DIR", conflicts_with = "store")]
    data_dir: Option<PathBuf>,
    /// A ClickHouse store: clickhouse://USER:PASSWORD@HOST:PORT/DATABASE, as for
    /// `vigil query --store`.
    #[arg(long, value_name = "URL", conflicts_with = "data_dir")]
    store: Option<String>,
    /// CA (PEM) of ClickHouse, for clickhouse+https://.
    #[arg(long, value_name = "PEM")]
    tls_ca: Option<PathBuf>,
    /// Flows first seen at or after (RFC 3339, or a duration before now: 2h, 7d).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Flows first seen before (same forms as --since).
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Report what would be stored; store nothing.
    #[arg(long)]
    dry_run: bool,
}

pub fn run(a: DetectArgs) -> Result<(), Failure> {
    let text = std::fs::read_to_string(&a.config)
        .with_context(|| format!("reading {}", a.config.display()))
        .map_err(Failure::usage)?;
    let origin = a.config.display().to_string();
    let mut file = CollectorFile::parse(&text, &origin).map_err(Failure::usage)?;
    if let Some(d) = &a.data_dir {
        file.data_dir = Some(d.clone());
    }
    if a.store.is_some() && file.data_dir.is_none() {
        // The store is given on the command line: the file needs none.
        file.data_dir = Some(PathBuf::new());
    }
    let cfg = file.validate().map_err(Failure::usage)?;
    let Some(detect) = cfg.detect.clone() else {
        return Err(Failure::usage(anyhow::anyhow!(
            "{origin}: detection is off or no [[protected]] asset is named: nothing to detect"
        )));
    };
    let now = vigil_proto::time::now_ns();
    let time = |flag: &str, v: &Option<String>| {
        v.as_deref()
            .map(|s| parse_time(s, now))
            .transpose()
            .map_err(|e| Failure::usage(anyhow::anyhow!("{flag} {e}")))
    };
    let range = TimeRange {
        since_ns: time("--since", &a.since)?,
        until_ns: time("--until", &a.until)?,
    };
    let store: Box<dyn Store> = match (&a.store, &cfg.clickhouse) {
        (Some(url), _) => Box::new(open_clickhouse(url, a.tls_ca.as_deref())?),
        (None, Some(ch)) => Box::new(ClickHouseStore::open(ch)?),
        (None, None) => {
            if !cfg.data_dir.join("vigil.db").exists() {
                return Err(Failure::usage(anyhow::anyhow!(
                    "{}: no vigil.db here; is this a collector data directory?",
                    cfg.data_dir.display()
                )));
            }
            Box::new(SqliteStore::open(&cfg.data_dir, cfg.store.clone())?)
        }
    };
    let t0 = std::time::Instant::now();
    let report = hunt(
        store.as_ref(),
        detect,
        cfg.limits.max_clock_skew,
        range,
        a.dry_run,
    )?;
    let mut out = std::io::stdout().lock();
    let mut w = || -> std::io::Result<()> {
        writeln!(
            out,
            "examined {} flow records in {:.1} s: {} alert(s) found, {} already stored, {} {}",
            report.flows,
            t0.elapsed().as_secs_f64(),
            report.new.len() + report.known.len(),
            report.known.len(),
            report.new.len(),
            if a.dry_run {
                "new (dry run: not stored)"
            } else {
                "new, stored"
            }
        )
    };
    w().context("writing output")?;
    if !report.new.is_empty() {
        let alerts: Vec<pb::Alert> = report.new.iter().map(pb::Alert::from).collect();
        crate::alerts::print_table(&mut out, &alerts)?;
    }
    Ok(())
}
