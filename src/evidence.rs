//! `vigil evidence`: keys (the collector's signing key, a sensor's
//! attestation key), alerts' evidence bundles exported, and bundles
//! verified offline.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use vigil_collector::config::CollectorFile;
use vigil_collector::evidence::{CollectorKey, DEFAULT_KEY, fingerprint, public_path};
use vigil_proto::pb;

use crate::Failure;
use crate::query::{ClientTlsArgs, connect, status_err};

/// `vigil evidence` subcommands.
#[derive(Debug, Subcommand)]
pub enum EvidenceCmd {
    /// Print the collector's public signing key (or, with --sensor-dir, a
    /// sensor's attestation key) as SubjectPublicKeyInfo PEM, and its
    /// SHA-256 fingerprint.
    Key(KeyArgs),
    /// Write an alert's evidence bundle: one POSIX tar, signed by the
    /// collector, with the sensors' attestation of every flow.
    Export(ExportArgs),
    /// Verify an evidence bundle offline: the collector's signature, every
    /// member, every batch's sensor signature and every flow's Merkle
    /// proof. Exit 0 only when all holds.
    Verify(VerifyArgs),
}

/// Arguments of `vigil evidence export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The alert.
    #[arg(value_name = "ALERT_ID")]
    alert: u64,
    /// The bundle to write.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: PathBuf,
    /// The collector's data directory (its store and its signing key).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["collector", "store"])]
    data_dir: Option<PathBuf>,
    /// Ask this collector for it (http://HOST:PORT or https://HOST:PORT).
    #[arg(long, value_name = "URL", conflicts_with = "store")]
    collector: Option<String>,
    /// A ClickHouse store, as for `vigil query --store` (with
    /// --signing-key or -c for the key).
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// The collector's signing key (default: its data directory's).
    #[arg(long, value_name = "PEM")]
    signing_key: Option<PathBuf>,
    /// The collector's configuration (its data directory and signing key).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Anonymize it for this partner, as its policy in -c's
    /// `[[share.partners]]` says (signed by the collector only: the
    /// sensors attested the original records).
    #[arg(long, value_name = "NAME")]
    partner: Option<String>,
    #[command(flatten)]
    tls: ClientTlsArgs,
}

/// Arguments of `vigil evidence verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The bundle.
    #[arg(value_name = "FILE")]
    bundle: PathBuf,
    /// The collector's public key (PEM), obtained by another channel
    /// (`vigil evidence key`); without it, the bundle's own is used and
    /// its fingerprint printed for you to compare.
    #[arg(long, value_name = "PEM")]
    key: Option<PathBuf>,
    /// A sensor's attestation public key, obtained by another channel:
    /// ID=PEM (repeatable); the others are taken from the bundle.
    #[arg(long = "sensor-key", value_name = "ID=PEM")]
    sensor_keys: Vec<String>,
    /// Accept flows without a sensor attestation (stored before sensors
    /// signed their batches, or by sensors with attestation off).
    #[arg(long)]
    allow_unattested: bool,
}

/// Arguments of `vigil evidence key`.
#[derive(Debug, Args)]
pub struct KeyArgs {
    /// The collector's data directory (its key under evidence/).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["collector", "config", "sensor_dir"])]
    data_dir: Option<PathBuf>,
    /// A sensor's spool directory: print its attestation key.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["collector", "config"])]
    sensor_dir: Option<PathBuf>,
    /// Ask this collector (http://HOST:PORT or https://HOST:PORT).
    #[arg(long, value_name = "URL", conflicts_with = "config")]
    collector: Option<String>,
    /// The collector's configuration (its evidence.signing_key, or its
    /// data directory's).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    tls: ClientTlsArgs,
}

pub fn run(cmd: EvidenceCmd) -> Result<(), Failure> {
    match cmd {
        EvidenceCmd::Key(a) => key(a),
        EvidenceCmd::Export(a) => export(a),
        EvidenceCmd::Verify(a) => verify(a),
    }
}

pub(crate) fn read_config(c: &std::path::Path) -> Result<CollectorFile, Failure> {
    let text = std::fs::read_to_string(c)
        .with_context(|| format!("reading {}", c.display()))
        .map_err(Failure::usage)?;
    CollectorFile::parse(&text, &c.display().to_string()).map_err(Failure::usage)
}

/// Reads an existing signing key (never makes one).
fn signing_key(path: &std::path::Path) -> Result<CollectorKey, Failure> {
    if !path.exists() {
        return Err(Failure::usage(anyhow::anyhow!(
            "{}: no signing key here (the collector makes it on its first start; give \
             --signing-key or -c collector.toml)",
            path.display()
        )));
    }
    CollectorKey::load_or_create(path).map_err(|e| Failure::usage(anyhow::anyhow!("{e}")))
}

fn export(a: ExportArgs) -> Result<(), Failure> {
    let file = a.config.as_deref().map(read_config).transpose()?;
    // The partner's policy, from -c (also when asking a collector: the
    // name must be one it knows, which it checks).
    let partner = match (&a.partner, &file, &a.collector) {
        (None, _, _) => None,
        (Some(_), None, Some(_)) => Some(PartnerChoice::Remote),
        (Some(name), Some(f), _) => {
            let cfg = f.validate().map_err(Failure::usage)?;
            let p = cfg
                .share
                .as_ref()
                .and_then(|s| s.partner(name))
                .cloned()
                .ok_or_else(|| {
                    Failure::usage(anyhow::anyhow!(
                        "--partner {name:?}: no such [[share.partners]] in {}",
                        a.config
                            .as_deref()
                            .unwrap_or(std::path::Path::new(""))
                            .display()
                    ))
                })?;
            Some(PartnerChoice::Local(Box::new(p)))
        }
        (Some(_), None, None) => {
            return Err(Failure::usage(anyhow::anyhow!(
                "--partner needs -c collector.toml (the partner's policy)"
            )));
        }
    };
    let data_dir = a
        .data_dir
        .clone()
        .or_else(|| file.as_ref().and_then(|f| f.data_dir.clone()));
    let key_path = a.signing_key.clone().or_else(|| {
        file.as_ref()
            .and_then(|f| f.evidence.signing_key.clone())
            .or_else(|| data_dir.as_ref().map(|d| d.join(DEFAULT_KEY)))
    });
    let bytes = match (&a.collector, &a.store, &data_dir) {
        (Some(url), None, _) => {
            let rt = crate::runtime()?;
            rt.block_on(async {
                let ch = connect(url, &a.tls).await?;
                let mut s = pb::evidence_client::EvidenceClient::new(ch)
                    .max_decoding_message_size(8 << 20)
                    .export(pb::ExportRequest {
                        alert_id: a.alert,
                        partner: a.partner.clone().unwrap_or_default(),
                    })
                    .await
                    .map_err(status_err)?
                    .into_inner();
                let mut bytes = Vec::new();
                while let Some(c) = s.message().await.map_err(status_err)? {
                    bytes.extend_from_slice(&c.data);
                }
                Ok::<_, Failure>(bytes)
            })?
        }
        (None, Some(url), _) => {
            let Some(k) = &key_path else {
                return Err(Failure::usage(anyhow::anyhow!(
                    "--store needs --signing-key PEM or -c collector.toml for the collector's key"
                )));
            };
            let key = signing_key(k)?;
            let store = crate::query::open_clickhouse(url, a.tls.tls_ca.as_deref())?;
            export_local(&store, &key, a.alert, partner.as_ref(), data_dir.as_deref())?
        }
        (None, None, Some(dir)) => {
            let key = signing_key(key_path.as_deref().unwrap_or(&dir.join(DEFAULT_KEY)))?;
            let store = crate::query::open_local(dir)?;
            export_local(&store, &key, a.alert, partner.as_ref(), Some(dir))?
        }
        _ => {
            return Err(Failure::usage(anyhow::anyhow!(
                "give --data-dir DIR, --store URL or --collector URL (or -c collector.toml)"
            )));
        }
    };
    write_file(&a.output, &bytes)?;
    eprintln!(
        "wrote {} ({} bytes); verify it with: vigil evidence verify {}",
        a.output.display(),
        bytes.len(),
        a.output.display()
    );
    Ok(())
}

/// The partner a bundle is made for.
enum PartnerChoice {
    /// Its policy, read from -c.
    Local(Box<vigil_collector::share::Partner>),
    /// Named to the collector, which applies its own policy.
    Remote,
}

fn export_local<S: vigil_collector::store::Store + ?Sized>(
    store: &S,
    key: &CollectorKey,
    alert: u64,
    partner: Option<&PartnerChoice>,
    data_dir: Option<&std::path::Path>,
) -> Result<Vec<u8>, Failure> {
    let partner = match partner {
        Some(PartnerChoice::Local(p)) => Some(&**p),
        _ => None,
    };
    let anon = partner.and_then(|p| {
        p.anonymize
            .as_ref()
            .map(|a| vigil_collector::evidence::ForPartner {
                partner: &p.name,
                anonymizer: a,
            })
    });
    let e =
        vigil_collector::evidence::export_for(store, key, alert, vigil_proto::time::now_ns(), anon)
            .map_err(|e| match e {
                vigil_collector::evidence::ExportError::NoAlert(_) => Failure::usage(e),
                e => Failure::from(e),
            })?;
    if let Some(dir) = data_dir {
        // Read from the data directory itself: whoever may read its files.
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "?".into());
        let by = format!("{user} (vigil evidence export on the collector's host)");
        vigil_collector::server::record_export(dir, alert, partner, &e.bytes, &by);
    }
    if let Some(a) = anon {
        eprintln!(
            "alert {alert}: {} evidence flows, anonymized for partner {} (signed by the collector only)",
            e.flows, a.partner
        );
        return Ok(e.bytes);
    }
    eprintln!(
        "alert {alert}: {} evidence flows, {} attested by their sensors; sensors' figures {}",
        e.flows,
        e.attested,
        if e.complete {
            "complete"
        } else {
            "INCOMPLETE (see completeness.json)"
        }
    );
    Ok(e.bytes)
}

/// Writes `bytes` to `path` whole (a temporary file renamed into place).
pub(crate) fn write_file(path: &std::path::Path, bytes: &[u8]) -> Result<(), Failure> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn pem_key(path: &std::path::Path) -> Result<ed25519_dalek::VerifyingKey, Failure> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {}", path.display()))
        .map_err(Failure::usage)?;
    vigil_proto::keys::public_from_pem(&text).map_err(|e| {
        Failure::usage(anyhow::anyhow!(
            "{}: not an Ed25519 public key in PEM: {e}",
            path.display()
        ))
    })
}

fn verify(a: VerifyArgs) -> Result<(), Failure> {
    let mut opts = vigil_collector::evidence::VerifyOptions {
        allow_unattested: a.allow_unattested,
        ..Default::default()
    };
    if let Some(k) = &a.key {
        opts.collector_key = Some(pem_key(k)?);
    }
    for s in &a.sensor_keys {
        let Some((id, path)) = s.split_once('=') else {
            return Err(Failure::usage(anyhow::anyhow!(
                "--sensor-key {s:?}: expected ID=PEM"
            )));
        };
        opts.sensor_keys
            .insert(id.to_string(), pem_key(std::path::Path::new(path))?);
    }
    let bytes = std::fs::read(&a.bundle)
        .with_context(|| format!("reading {}", a.bundle.display()))
        .map_err(Failure::usage)?;
    let v = vigil_collector::evidence::verify::verify(&bytes, &opts)
        .map_err(|e| anyhow::anyhow!("{}: does not verify: {e}", a.bundle.display()))?;
    for n in &v.notes {
        eprintln!("note: {n}");
    }
    if let Some(p) = &v.anonymized_for {
        println!(
            "{}: verified: alert {}, signed by collector key {}; ANONYMIZED for partner {p}: \
             {} flows vouched for by the collector alone; sensors' figures over its window: {}",
            a.bundle.display(),
            v.alert_id,
            v.collector_key,
            v.flows,
            if v.complete {
                "complete"
            } else {
                "INCOMPLETE (see completeness.json)"
            }
        );
        return Ok(());
    }
    println!(
        "{}: verified: alert {}, signed by collector key {}; {} flows, {} proven to be in {} \
         batches their sensors signed{}; sensors' figures over its window: {}",
        a.bundle.display(),
        v.alert_id,
        v.collector_key,
        v.flows,
        v.attested,
        v.batches,
        if v.attested < v.flows {
            format!(" ({} not attested, accepted)", v.flows - v.attested)
        } else {
            String::new()
        },
        if v.complete {
            "complete"
        } else {
            "INCOMPLETE (see completeness.json)"
        }
    );
    Ok(())
}

fn key(a: KeyArgs) -> Result<(), Failure> {
    if let Some(d) = &a.sensor_dir {
        let (pem, fp) = local(&d.join(vigil_sensor::export::grpc::ATTESTATION_KEY))?;
        print!("{pem}");
        println!("fingerprint: {fp}");
        return Ok(());
    }
    let (pem, fp) = match (&a.data_dir, &a.collector, &a.config) {
        (Some(d), None, None) => local(&d.join(DEFAULT_KEY))?,
        (None, None, Some(c)) => {
            let f = read_config(c)?;
            let path = match (&f.evidence.signing_key, &f.data_dir) {
                (Some(k), _) => k.clone(),
                (None, Some(d)) => d.join(DEFAULT_KEY),
                (None, None) => {
                    return Err(Failure::usage(anyhow::anyhow!(
                        "{}: neither evidence.signing_key nor data_dir is set",
                        c.display()
                    )));
                }
            };
            local(&path)?
        }
        (None, Some(url), None) => {
            let rt = crate::runtime()?;
            rt.block_on(async {
                let ch = connect(url, &a.tls).await?;
                let r = pb::evidence_client::EvidenceClient::new(ch)
                    .key(pb::KeyRequest {})
                    .await
                    .map_err(status_err)?
                    .into_inner();
                Ok::<_, Failure>((r.public_key_pem, r.fingerprint))
            })?
        }
        _ => {
            return Err(Failure::usage(anyhow::anyhow!(
                "give one of --data-dir DIR, --collector URL or -c collector.toml"
            )));
        }
    };
    print!("{pem}");
    println!("fingerprint: {fp}");
    Ok(())
}

/// The key at `path`: its public half beside it (readable without the
/// private key), else the private key itself.
fn local(path: &std::path::Path) -> Result<(String, String), Failure> {
    use ed25519_dalek::pkcs8::DecodePublicKey as _;
    let public = public_path(path);
    if let Ok(pem) = std::fs::read_to_string(&public) {
        let k = ed25519_dalek::VerifyingKey::from_public_key_pem(&pem)
            .map_err(|e| anyhow::anyhow!("{}: not an Ed25519 public key: {e}", public.display()))?;
        return Ok((pem, fingerprint(&k)));
    }
    if !path.exists() {
        return Err(Failure::usage(anyhow::anyhow!(
            "{}: no key here (the collector, or the sensor, makes it on its first start)",
            path.display()
        )));
    }
    let k = CollectorKey::load_or_create(path)?;
    Ok((k.public_pem(), k.fingerprint()))
}
