//! `vigil access token create|list|revoke`: the API tokens analysts use
//! over HTTPS (the HTTP API and the console), kept hashed in the
//! collector's data directory ([`vigil_collector::tokens`]). The collector
//! reads them again when they change: no restart.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use vigil_collector::tokens::Tokens;

use crate::Failure;

/// `vigil access` subcommands.
#[derive(Debug, Subcommand)]
pub enum AccessCmd {
    /// API tokens for the HTTP API and the console.
    #[command(subcommand)]
    Token(TokenCmd),
}

/// `vigil access token` subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Issue a token for analyst NAME; it is printed once and stored hashed.
    Create {
        /// The analyst it stands for (in logs and custody records).
        name: String,
        #[command(flatten)]
        dir: DataDir,
    },
    /// List the tokens: id, name, when made, and revoked ones.
    List {
        #[command(flatten)]
        dir: DataDir,
    },
    /// Revoke the live tokens of NAME, or the one with this id.
    Revoke {
        /// A name or a token id (from `list`).
        who: String,
        #[command(flatten)]
        dir: DataDir,
    },
}

/// Whose tokens.
#[derive(Debug, Args)]
pub struct DataDir {
    /// The collector's data directory.
    #[arg(long, value_name = "DIR", conflicts_with = "config")]
    data_dir: Option<PathBuf>,
    /// The collector's configuration (its data_dir).
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
}

impl DataDir {
    fn resolve(&self) -> Result<PathBuf, Failure> {
        if let Some(d) = &self.data_dir {
            return Ok(d.clone());
        }
        let Some(c) = &self.config else {
            return Err(Failure::usage(anyhow::anyhow!(
                "give the collector's --data-dir DIR or -c collector.toml"
            )));
        };
        crate::evidence::read_config(c)?.data_dir.ok_or_else(|| {
            Failure::usage(anyhow::anyhow!(
                "{}: no data_dir, where the tokens are kept",
                c.display()
            ))
        })
    }
}

fn when(ns: u64) -> String {
    // To the second: 2026-12-07T18:40:01Z.
    let s = vigil_proto::time::Rfc3339Nanos(ns - ns % 1_000_000_000).to_string();
    s.replace(".000000000Z", "Z")
}

/// Runs a `vigil access` subcommand.
pub fn run(c: AccessCmd) -> Result<(), Failure> {
    let AccessCmd::Token(t) = c;
    match t {
        TokenCmd::Create { name, dir } => {
            let d = dir.resolve()?;
            let (token, e) = Tokens::create(&d, &name).map_err(Failure::usage)?;
            eprintln!(
                "token {} for {} (shown once; the collector keeps only its hash):",
                e.id, e.name
            );
            println!("{token}");
            eprintln!(
                "use: curl -H 'Authorization: Bearer {token}' https://COLLECTOR:PORT/api/v1/alerts, or sign in to the console with it"
            );
            Ok(())
        }
        TokenCmd::List { dir } => {
            let t = Tokens::load(&dir.resolve()?).map_err(Failure::usage)?;
            println!("{:<10} {:<24} {:<21} revoked", "id", "name", "created");
            for e in t.entries() {
                println!(
                    "{:<10} {:<24} {:<21} {}",
                    e.id,
                    e.name,
                    when(e.created_ns),
                    e.revoked_ns.map(when).unwrap_or_else(|| "-".into())
                );
            }
            Ok(())
        }
        TokenCmd::Revoke { who, dir } => {
            let done = Tokens::revoke(&dir.resolve()?, &who).map_err(Failure::usage)?;
            for e in done {
                eprintln!("revoked token {} of {}", e.id, e.name);
            }
            Ok(())
        }
    }
}
