//! `vigil collector`: the gRPC ingest and query daemon over the flow store.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use vigil_collector::config::{CollectorFile, TlsSection};
use vigil_collector::server;

use crate::Failure;

/// Arguments of `vigil collector`.
#[derive(Debug, Args)]
pub struct CollectorArgs {
    /// collector.toml; flags below override it.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// gRPC listen address (default 127.0.0.1:50051).
    #[arg(long, value_name = "IP:PORT")]
    listen: Option<String>,
    /// Data directory: the flow store.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Prometheus endpoint address (GET /metrics).
    #[arg(long, value_name = "IP:PORT")]
    metrics_listen: Option<String>,
    /// HTTP/JSON API address (`/api/v1/…`), loopback only: plaintext, for
    /// the collector's host.
    #[arg(long, value_name = "IP:PORT")]
    http_listen: Option<String>,
    /// The collector's certificate (PEM).
    #[arg(long, value_name = "PEM")]
    tls_cert: Option<PathBuf>,
    /// The collector's key (PEM).
    #[arg(long, value_name = "PEM")]
    tls_key: Option<PathBuf>,
    /// CA (PEM) that signs sensor certificates; clients must present one.
    #[arg(long, value_name = "PEM")]
    tls_ca: Option<PathBuf>,
    /// Allow plaintext gRPC on a non-loopback address (ingest only: flows
    /// and alerts are then read only from loopback).
    #[arg(long)]
    insecure: bool,
    /// A certificate identity (SAN DNS name or CN) that may read flows and
    /// alerts over mTLS; repeatable; added to access.analysts in the file.
    #[arg(long, value_name = "NAME")]
    analyst: Vec<String>,
    /// Store durability: full (fsync before every ack) or normal.
    #[arg(long)]
    synchronous: Option<String>,
    /// Delete flows older than this (e.g. 30d).
    #[arg(long)]
    max_age: Option<String>,
    /// Keep the store under this size (e.g. 100GiB).
    #[arg(long)]
    max_bytes: Option<String>,
    /// Validate the configuration (this FILE, or --config) and exit.
    #[arg(long, value_name = "FILE")]
    #[allow(clippy::option_option)]
    check_config: Option<Option<PathBuf>>,
}

impl CollectorArgs {
    fn file_config(&self) -> Result<CollectorFile, Failure> {
        let path = match &self.check_config {
            Some(Some(p)) => Some(p),
            _ => self.config.as_ref(),
        };
        let mut f = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading {}", p.display()))
                    .map_err(Failure::usage)?;
                CollectorFile::parse(&text, &p.display().to_string()).map_err(Failure::usage)?
            }
            None => CollectorFile::default(),
        };
        if let Some(v) = &self.listen {
            f.listen = v.clone();
        }
        if let Some(v) = &self.data_dir {
            f.data_dir = Some(v.clone());
        }
        if let Some(v) = &self.metrics_listen {
            f.metrics_listen = Some(v.clone());
        }
        if let Some(v) = &self.http_listen {
            f.http.listen = Some(v.clone());
        }
        if self.insecure {
            f.insecure = true;
        }
        f.access.analysts.extend(self.analyst.iter().cloned());
        if let Some(v) = &self.synchronous {
            f.store.synchronous = v.clone();
        }
        if let Some(v) = &self.max_age {
            f.store.max_age = Some(v.clone());
        }
        if let Some(v) = &self.max_bytes {
            f.store.max_bytes = Some(v.clone());
        }
        match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (Some(cert), Some(key), Some(ca)) => {
                f.tls = Some(TlsSection {
                    cert: cert.clone(),
                    key: key.clone(),
                    ca: ca.clone(),
                });
            }
            (None, None, None) => {}
            _ => {
                return Err(Failure::usage(anyhow::anyhow!(
                    "--tls-cert, --tls-key and --tls-ca go together"
                )));
            }
        }
        Ok(f)
    }
}

pub fn run(a: CollectorArgs) -> Result<(), Failure> {
    let cfg = a.file_config()?.validate().map_err(Failure::usage)?;
    if a.check_config.is_some() {
        match &cfg.detect {
            Some(d) => eprintln!(
                "configuration OK: {} protected asset(s) ({}), {} indicator(s); detection on",
                d.assets.len(),
                d.assets
                    .iter()
                    .map(|a| a.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                d.indicators.list.len()
            ),
            None => eprintln!("configuration OK: no protected assets; detection off"),
        }
        return Ok(());
    }
    let rt = crate::runtime()?;
    rt.block_on(async move {
        let mut running = server::start(cfg).await.map_err(|e| match e {
            server::CollectorError::PlaintextRefused(_)
            | server::CollectorError::HttpOffLoopback(_) => Failure::usage(e),
            e => Failure::from(e),
        })?;
        // Printed so that scripts and tests can find an ephemeral port.
        eprintln!("vigil collector: listening on {}", running.addr);
        if let Some(m) = running.metrics_addr {
            eprintln!("vigil collector: metrics on http://{m}/metrics");
        }
        if let Some(h) = running.http_addr {
            eprintln!("vigil collector: HTTP API on http://{h}/api/v1/");
        }
        tokio::select! {
            r = running.wait() => r?,
            () = crate::shutdown_signal() => {
                tracing::info!("signal received: shutting down");
                running.shutdown().await?;
            }
        }
        Ok(())
    })
}
