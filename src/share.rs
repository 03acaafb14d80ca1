//! `vigil alerts export --format stix`: alerts as one STIX 2.1 bundle, for
//! a partner as its policy in `collector.toml` says (filtered, marked,
//! anonymized), or plain.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use vigil_collector::config::CollectorFile;
use vigil_collector::detect::nets::{Cidr, NetMap};
use vigil_collector::detect::{AlertKind, Severity};
use vigil_collector::evidence::{DEFAULT_KEY, public_path};
use vigil_collector::share::config::Operator;
use vigil_collector::share::stix::{self, AlertInput, BundleRef, Context};
use vigil_collector::share::{ShareConfig, Tlp};
use vigil_collector::store::AlertQuery;
use vigil_collector::store::prelude::*;
use vigil_proto::{FlowRecord, pb};

use crate::Failure;
use crate::query::{ClientTlsArgs, connect, status_err};

/// Arguments of `vigil alerts export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Output format: stix (a STIX 2.1 bundle).
    #[arg(long, default_value = "stix")]
    format: String,
    /// Read the store in this collector data directory.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["collector", "store"])]
    data_dir: Option<PathBuf>,
    /// Ask this collector (http://HOST:PORT or https://HOST:PORT).
    #[arg(long, value_name = "URL", conflicts_with = "store")]
    collector: Option<String>,
    /// A ClickHouse store, as for `vigil query --store`.
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    #[command(flatten)]
    tls: ClientTlsArgs,
    /// The collector's configuration: its `[share]` section (identity,
    /// partners), protected assets and data directory.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Export as shared with this partner (`[[share.partners]]` of -c):
    /// only what its policy lets through, marked and anonymized as it says.
    #[arg(long, value_name = "NAME", requires = "config")]
    partner: Option<String>,
    /// Only this alert.
    #[arg(long, value_name = "N", conflicts_with_all = ["since", "until", "kind", "min_severity", "asset"])]
    id: Option<u64>,
    #[command(flatten)]
    filter: crate::query::AlertFilter,
    /// At most this many alerts, newest first.
    #[arg(long, short = 'n', default_value = "1000")]
    limit: u32,
    /// TLP 2.0 marking (clear, green, amber, amber+strict, red); default
    /// `[share] tlp`, or amber. With --partner, the partner's.
    #[arg(long, conflicts_with = "partner")]
    tlp: Option<String>,
    /// Observables per alert; default `[share] max_observations` (100).
    #[arg(long, value_name = "N")]
    max_observations: Option<usize>,
    /// Evidence flows read per alert to describe its conversations.
    #[arg(long, value_name = "N", default_value = "10000")]
    flows: u32,
    /// An evidence bundle of the alert (`vigil evidence export`) to
    /// reference by its SHA-256 (with --id).
    #[arg(long, value_name = "TAR", requires = "id")]
    bundle: Option<PathBuf>,
    /// The bundle to write (default: standard output).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
}

fn usage(msg: String) -> Failure {
    Failure::usage(anyhow::anyhow!(msg))
}

/// What -c gives: the share policy, our networks, the data directory.
struct FromConfig {
    share: Option<ShareConfig>,
    ours: NetMap<()>,
    data_dir: Option<PathBuf>,
    signing_key: Option<PathBuf>,
}

fn from_config(path: &std::path::Path) -> Result<FromConfig, Failure> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {}", path.display()))
        .map_err(Failure::usage)?;
    let f = CollectorFile::parse(&text, &path.display().to_string()).map_err(Failure::usage)?;
    let cfg = f.validate().map_err(Failure::usage)?;
    let mut ours = NetMap::new();
    let nets = f
        .protected
        .iter()
        .flat_map(|p| p.cidrs.iter())
        .chain(&f.detect.internal_networks);
    for c in nets {
        if let Ok(n) = Cidr::parse(c) {
            ours.insert(n, ());
        }
    }
    Ok(FromConfig {
        share: cfg.share.map(|s| (*s).clone()),
        ours,
        data_dir: f.data_dir,
        signing_key: f.evidence.signing_key,
    })
}

/// The collector's key fingerprint from its key files (the public half,
/// readable by all, else the private key).
fn local_fingerprint(key: &std::path::Path) -> Result<String, Failure> {
    let public = public_path(key);
    if let Ok(pem) = std::fs::read_to_string(&public)
        && let Ok(k) = vigil_proto::keys::public_from_pem(&pem)
    {
        return Ok(vigil_proto::keys::fingerprint(&k));
    }
    if key.exists() {
        let k = vigil_collector::evidence::CollectorKey::load_or_create(key)
            .map_err(|e| usage(format!("{e}")))?;
        return Ok(k.fingerprint());
    }
    Err(usage(format!(
        "{}: no collector key here (the collector makes it on its first start; STIX ids \
         are derived from it); give -c collector.toml",
        key.display()
    )))
}

pub fn export(a: ExportArgs) -> Result<(), Failure> {
    if a.format != "stix" {
        return Err(usage(format!(
            "--format {:?}: alerts export as stix (a STIX 2.1 bundle)",
            a.format
        )));
    }
    let conf = a.config.as_deref().map(from_config).transpose()?;
    let share = conf.as_ref().and_then(|c| c.share.as_ref());
    let partner = match &a.partner {
        Some(name) => Some(share.and_then(|s| s.partner(name)).ok_or_else(|| {
            let known: Vec<&str> = share
                .map(|s| s.partners.iter().map(|p| p.name.as_str()).collect())
                .unwrap_or_default();
            usage(format!(
                "--partner {name:?}: no such [[share.partners]] in {} (known: {})",
                a.config
                    .as_deref()
                    .unwrap_or(std::path::Path::new(""))
                    .display(),
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            ))
        })?),
        None => None,
    };
    let tlp = match (&a.tlp, partner) {
        (Some(t), _) => Tlp::parse(t).ok_or_else(|| {
            usage(format!(
                "--tlp {t:?}: expected clear, green, amber, amber+strict or red"
            ))
        })?,
        (None, Some(p)) => p.tlp,
        (None, None) => share.map_or(Tlp::Amber, |s| s.tlp),
    };
    let max_observations = a
        .max_observations
        .or(partner.map(|p| p.max_observations))
        .or(share.map(|s| s.max_observations))
        .unwrap_or(100);
    if !(1..=10_000).contains(&max_observations) {
        return Err(usage(format!(
            "--max-observations {max_observations}: expected 1 to 10000"
        )));
    }
    let bundle_ref = a
        .bundle
        .as_deref()
        .map(|p| {
            let bytes = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            let manifest = vigil_collector::evidence::bundle_manifest(&bytes)
                .map_err(|e| anyhow::anyhow!("{}: not an evidence bundle: {e}", p.display()))?;
            if Some(manifest.alert) != a.id {
                anyhow::bail!(
                    "{}: the evidence bundle of alert {}, not of alert {}",
                    p.display(),
                    manifest.alert,
                    a.id.unwrap_or(0)
                );
            }
            use sha2::Digest as _;
            Ok(BundleRef {
                sha256: vigil_proto::attest::hex(&sha2::Sha256::digest(&bytes)),
                anonymized: manifest.anonymized,
            })
        })
        .transpose()
        .map_err(Failure::usage)?;

    let now = vigil_proto::time::now_ns();
    let query = a.filter.query(now, a.limit)?;

    let data_dir = a
        .data_dir
        .clone()
        .or_else(|| conf.as_ref().and_then(|c| c.data_dir.clone()));
    let key_path = conf
        .as_ref()
        .and_then(|c| c.signing_key.clone())
        .or_else(|| data_dir.as_ref().map(|d| d.join(DEFAULT_KEY)));
    let rt = crate::runtime()?;
    let (collector, material) = rt.block_on(async {
        match (&a.collector, &a.store, &data_dir) {
            (Some(url), None, _) => {
                let ch = connect(url, &a.tls).await?;
                let fp = pb::evidence_client::EvidenceClient::new(ch.clone())
                    .key(pb::KeyRequest {})
                    .await
                    .map_err(status_err)?
                    .into_inner()
                    .fingerprint;
                let mut c =
                    pb::alerts_client::AlertsClient::new(ch).max_decoding_message_size(64 << 20);
                let ids: Vec<u64> = match a.id {
                    Some(id) => vec![id],
                    None => c
                        .list(a.filter.remote(&query, a.limit))
                        .await
                        .map_err(status_err)?
                        .into_inner()
                        .alerts
                        .iter()
                        .map(|x| x.id)
                        .collect(),
                };
                let mut out = Vec::new();
                for id in ids {
                    let (al, flows, _) = crate::query::remote_alert(&mut c, id, a.flows).await?;
                    out.push((al, flows));
                }
                Ok::<_, Failure>((fp, out))
            }
            (None, Some(url), _) => {
                let Some(k) = &key_path else {
                    return Err(usage(
                        "--store needs -c collector.toml (the collector's key names its objects)"
                            .into(),
                    ));
                };
                let fp = local_fingerprint(k)?;
                let store = crate::query::open_clickhouse(url, a.tls.tls_ca.as_deref())?;
                Ok((fp, local(&store, &query, a.id, a.flows)?))
            }
            (None, None, Some(dir)) => {
                let fp = local_fingerprint(key_path.as_deref().unwrap_or(&dir.join(DEFAULT_KEY)))?;
                let store = crate::query::open_local(dir)?;
                Ok((fp, local(&store, &query, a.id, a.flows)?))
            }
            _ => Err(usage(
                "give --data-dir DIR, --store URL or --collector URL (or -c collector.toml)".into(),
            )),
        }
    })?;

    let operator = share
        .map(|s| s.operator.clone())
        .unwrap_or_else(Operator::default);
    let cx = Context {
        operator: &operator,
        collector: &collector,
        partner: partner.map(|p| p.name.as_str()),
        tlp,
        max_observations,
        anonymize: partner.and_then(|p| p.anonymize.as_ref()),
        ours: conf.as_ref().map(|c| &c.ours),
    };
    // The bundles exported of each alert, as the ledger recorded them.
    let ledger = match (&a.collector, &data_dir) {
        (None, Some(dir)) => vigil_collector::share::ledger::Ledger::open_existing(dir)?,
        _ => None,
    };
    let ledger_key = partner
        .filter(|p| p.anonymize.is_some())
        .map_or("", |p| p.name.as_str());
    let mut objects = cx.common();
    let mut exported = 0usize;
    let mut held = 0usize;
    for (al, flows) in &material {
        if let Some(p) = partner {
            let (Some(kind), Some(sev)) =
                (AlertKind::parse(&al.kind), Severity::parse(&al.severity))
            else {
                continue;
            };
            if !p.wants(kind, sev, &al.asset) {
                continue;
            }
            if al.raised_ns.saturating_add(p.delay.as_nanos() as u64) > now {
                held += 1;
                continue;
            }
        }
        let recorded = match (&bundle_ref, &ledger) {
            (None, Some(l)) => l.latest_export(al.id, ledger_key)?.map(|sha256| BundleRef {
                sha256,
                anonymized: !ledger_key.is_empty(),
            }),
            _ => None,
        };
        objects.extend(stix::alert_objects(
            &cx,
            AlertInput {
                alert: al,
                flows,
                bundle: bundle_ref.as_ref().or(recorded.as_ref()),
            },
        ));
        exported += 1;
    }
    if a.id.is_some() && exported == 0 {
        return Err(usage(format!(
            "alert {}: not shared with partner {:?} (its policy: kinds, min_severity, assets, delay)",
            a.id.unwrap_or(0),
            a.partner.as_deref().unwrap_or("")
        )));
    }
    let bundle = stix::bundle(objects);
    let mut text = serde_json::to_string_pretty(&bundle).context("encoding the bundle")?;
    text.push('\n');
    match &a.output {
        Some(path) => crate::evidence::write_file(path, text.as_bytes())?,
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())
                .context("writing the bundle")?;
            out.flush().context("writing the bundle")?;
        }
    }
    eprintln!(
        "{exported} alerts as STIX 2.1 ({} objects, TLP:{}{}){}",
        bundle["objects"].as_array().map_or(0, Vec::len),
        tlp.as_str().to_ascii_uppercase(),
        match partner {
            Some(p) if p.anonymize.is_some() => format!(", for {} (anonymized)", p.name),
            Some(p) => format!(", for {}", p.name),
            None => String::new(),
        },
        if held > 0 {
            format!("; {held} held back by the partner's delay")
        } else {
            String::new()
        }
    );
    Ok(())
}

/// The alerts (or the one) and their flows from a store.
fn local<S: Store + ?Sized>(
    store: &S,
    q: &AlertQuery,
    id: Option<u64>,
    max_flows: u32,
) -> Result<Vec<(pb::Alert, Vec<FlowRecord>)>, Failure> {
    // A listed alert comes without its evidence references: each is read
    // whole.
    let ids: Vec<u64> = match id {
        Some(id) => vec![id],
        None => store.alerts(q)?.iter().map(|a| a.id).collect(),
    };
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let (al, flows) = vigil_collector::share::alert_with_flows(store, id, max_flows as usize)?
            .ok_or_else(|| usage(format!("no alert {id}")))?;
        out.push((pb::Alert::from(&al), flows));
    }
    Ok(out)
}

/// `vigil share …`
#[derive(Debug, clap::Subcommand)]
pub enum ShareCmd {
    /// Each partner's push: objects queued, sent and refused, alerts
    /// pending, the last success and the last failure with its error.
    Status(StatusArgs),
}

/// Arguments of `vigil share status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The collector's data directory (its share ledger).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The collector's configuration (its data directory and partners).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Output: table or jsonl.
    #[arg(long, default_value = "table")]
    format: String,
}

pub fn run(cmd: ShareCmd) -> Result<(), Failure> {
    match cmd {
        ShareCmd::Status(a) => status(a),
    }
}

fn status(a: StatusArgs) -> Result<(), Failure> {
    let conf = a.config.as_deref().map(from_config).transpose()?;
    let dir = a
        .data_dir
        .clone()
        .or_else(|| conf.as_ref().and_then(|c| c.data_dir.clone()))
        .ok_or_else(|| usage("give --data-dir DIR or -c collector.toml".into()))?;
    let names = conf
        .as_ref()
        .and_then(|c| c.share.as_ref())
        .map(|s| s.pushed())
        .unwrap_or_default();
    let status = match vigil_collector::share::ledger::Ledger::open_existing(&dir)? {
        Some(l) => l.status(&names)?,
        None => names
            .iter()
            .map(|n| vigil_collector::share::ledger::PartnerStatus {
                partner: n.clone(),
                ..Default::default()
            })
            .collect(),
    };
    let mut out = std::io::stdout().lock();
    let time = |t: Option<u64>| {
        t.map_or("-".to_string(), |ns| {
            let s = vigil_proto::time::Rfc3339Nanos(ns).to_string();
            format!("{}Z", &s[..19])
        })
    };
    match a.format.as_str() {
        "jsonl" => {
            for s in &status {
                writeln!(out, "{}", serde_json::to_string(s).context("encoding")?)
                    .context("writing")?;
            }
        }
        "table" => {
            if status.is_empty() {
                writeln!(
                    out,
                    "no partner to push to (no [[share.partners]] with an api_root)"
                )
                .context("writing")?;
            }
            writeln!(
                out,
                "{:<20} {:>8} {:>8} {:>8} {:>8}  {:<20}  {:<20}  {:>8}  LAST ERROR",
                "PARTNER",
                "QUEUED",
                "SENT",
                "REFUSED",
                "PENDING",
                "LAST SUCCESS",
                "LAST FAILURE",
                "FAILURES"
            )
            .context("writing")?;
            for s in &status {
                writeln!(
                    out,
                    "{:<20} {:>8} {:>8} {:>8} {:>8}  {:<20}  {:<20}  {:>8}  {}",
                    s.partner,
                    s.queued,
                    s.sent,
                    s.rejected,
                    s.pending_alerts,
                    time(s.last_success_ns),
                    time(s.last_failure_ns),
                    s.failures,
                    s.last_error.as_deref().unwrap_or("-")
                )
                .context("writing")?;
            }
        }
        other => {
            return Err(usage(format!(
                "--format {other:?}: share status prints as table or jsonl"
            )));
        }
    }
    out.flush().context("writing")?;
    Ok(())
}
