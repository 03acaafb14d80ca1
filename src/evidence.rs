//! `vigil evidence`: the collector's evidence signing key (issue #26;
//! bundles, their export and verification come with it).

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
    /// Print the collector's public signing key (SubjectPublicKeyInfo PEM)
    /// and its SHA-256 fingerprint.
    Key(KeyArgs),
}

/// Arguments of `vigil evidence key`.
#[derive(Debug, Args)]
pub struct KeyArgs {
    /// The collector's data directory (its key under evidence/).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["collector", "config"])]
    data_dir: Option<PathBuf>,
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
    }
}

fn key(a: KeyArgs) -> Result<(), Failure> {
    let (pem, fp) = match (&a.data_dir, &a.collector, &a.config) {
        (Some(d), None, None) => local(&d.join(DEFAULT_KEY))?,
        (None, None, Some(c)) => {
            let text = std::fs::read_to_string(c)
                .with_context(|| format!("reading {}", c.display()))
                .map_err(Failure::usage)?;
            let f =
                CollectorFile::parse(&text, &c.display().to_string()).map_err(Failure::usage)?;
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
            "{}: no signing key here (the collector makes it on its first start)",
            path.display()
        )));
    }
    let k = CollectorKey::load_or_create(path)?;
    Ok((k.public_pem(), k.fingerprint()))
}
