//! The collector daemon: wiring only. It opens the store and starts, each
//! from its own module, the gRPC services ([`ingest`] of sensors' batches,
//! [`query`] of flows, [`alerts`]), the [`writer`] thread that commits
//! batches in groups, the [`detection`] thread, periodic [`retention`], and
//! the Prometheus endpoint ([`metrics`]); mTLS and peers' identities are
//! [`tls`]'s. Every failure answered to a peer goes through one type,
//! [`failure::Failure`], whose cause decides its gRPC status and log level.
//!
//! Threads and tasks: the gRPC services run on the tokio runtime; store
//! calls run on blocking threads; the writer and detection are plain
//! threads joined by bounded channels (ingest → writer → detection), so a
//! slow store or detector holds ingest back (the sensors spool) and never
//! drops a committed batch.

pub mod access;
pub mod alerts;
pub mod api;
pub mod console;
pub mod detection;
pub mod evidence;
pub use evidence::record_export;
pub mod failure;
pub mod ingest;
pub mod metrics;
pub mod query;
pub mod retention;
pub mod tls;
pub mod web;
pub mod writer;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Server, ServerTlsConfig};
use vigil_proto::pb;
use vigil_proto::pb::alerts_server::AlertsServer;
use vigil_proto::pb::evidence_server::EvidenceServer;
use vigil_proto::pb::ingest_server::IngestServer;
use vigil_proto::pb::query_server::QueryServer;

use crate::detect::{DetectConfig, Engine};
use crate::ingest::Limits;
use crate::store::StoreError;
use crate::store::clickhouse::{ClickHouseConfig, ClickHouseStore};
use crate::store::prelude::*;
use crate::store::sqlite::{SqliteConfig, SqliteStore};
use crate::webhook::{Webhook, WebhookConfig};
use metrics::Metrics;
pub use tls::TlsFiles;

/// How the collector runs (validated; see `config` for the TOML form).
#[derive(Clone, Debug)]
pub struct CollectorConfig {
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// Where the store keeps its files.
    pub data_dir: PathBuf,
    /// Prometheus endpoint (`GET /metrics`), if any.
    pub metrics_listen: Option<SocketAddr>,
    /// The HTTP/JSON API ([`api`]), if any: loopback only.
    pub http_listen: Option<SocketAddr>,
    /// mTLS; without it the listen address must be loopback or `insecure` set.
    pub tls: Option<TlsFiles>,
    /// Allow plaintext on a non-loopback address.
    pub insecure: bool,
    /// Store settings.
    pub store: SqliteConfig,
    /// Batch bounds.
    pub limits: Limits,
    /// Largest gRPC message accepted, bytes.
    pub max_message_bytes: usize,
    /// How often retention runs.
    pub retention_interval: Duration,
    /// Default and largest number of records a flow query returns.
    pub max_query_flows: u64,
    /// Detection against the protected assets; `None`: off.
    pub detect: Option<Arc<DetectConfig>>,
    /// Where alerts are POSTed, if anywhere.
    pub webhook: Option<WebhookConfig>,
    /// Store flows in ClickHouse instead of SQLite in `data_dir`.
    pub clickhouse: Option<ClickHouseConfig>,
    /// Certificate identities that may read flows and alerts (see
    /// [`access`]).
    pub analysts: Vec<String>,
    /// The evidence signing key's file (made on first start); `None`
    /// (no data directory, none configured): evidence is not signed.
    pub signing_key: Option<PathBuf>,
    /// Sensors' attestation keys, configured (`[[sensors]]`); the others
    /// are pinned on first contact.
    pub sensor_keys: Vec<(String, ed25519_dalek::VerifyingKey)>,
    /// Sharing with partners (`[share]`).
    pub share: Option<Arc<crate::share::ShareConfig>>,
}

impl CollectorConfig {
    /// Defaults with the given addresses.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> CollectorConfig {
        CollectorConfig {
            listen,
            metrics_listen: None,
            http_listen: None,
            tls: None,
            insecure: false,
            store: SqliteConfig::default(),
            limits: Limits::default(),
            max_message_bytes: 4 << 20,
            retention_interval: Duration::from_secs(60),
            max_query_flows: 1_000_000,
            detect: None,
            webhook: None,
            clickhouse: None,
            analysts: Vec::new(),
            signing_key: (!data_dir.as_os_str().is_empty())
                .then(|| data_dir.join(crate::evidence::DEFAULT_KEY)),
            sensor_keys: Vec::new(),
            share: None,
            data_dir,
        }
    }
}

/// The collector could not start or stopped.
#[derive(Debug, Error)]
pub enum CollectorError {
    /// A listen address could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A TLS file could not be read.
    #[error("reading {path}: {source}")]
    TlsFile {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Plaintext on a non-loopback address without `insecure`.
    #[error(
        "refusing plaintext gRPC on {0}, which is not a loopback address: give --tls-cert, --tls-key and --tls-ca (or tls in collector.toml), or --insecure"
    )]
    PlaintextRefused(SocketAddr),
    /// The HTTP API in plaintext on a non-loopback address.
    #[error(
        "refusing the HTTP API on {0}, which is not a loopback address: without tls (--tls-cert, --tls-key, --tls-ca) it is served in plaintext, to the collector's host only"
    )]
    HttpOffLoopback(SocketAddr),
    /// The store failed to open.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A start-up task failed (panicked or was cancelled).
    #[error("{0}: {1}")]
    Task(&'static str, #[source] tokio::task::JoinError),
    /// The evidence signing key could not be read or made.
    #[error("evidence signing key: {0}")]
    Key(#[from] crate::evidence::KeyError),
    /// A thread could not start.
    #[error("starting the {0} thread: {1}")]
    Thread(&'static str, #[source] std::io::Error),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// What the services share.
#[derive(Debug)]
pub struct Shared {
    store: Arc<dyn Store>,
    limits: Limits,
    max_query_flows: u64,
    metrics: Arc<Metrics>,
    /// Open streams per sensor id.
    connected: ingest::Connected,
    /// Alert updates for subscribers.
    alerts: broadcast::Sender<pb::Alert>,
    /// Set when the collector shuts down: ends the subscribers' streams,
    /// which would otherwise hold the graceful shutdown open forever.
    closing: watch::Sender<bool>,
    webhook: Option<Webhook>,
    /// Who may read.
    access: access::Access,
    /// The API tokens (HTTP).
    tokens: access::TokenGate,
    /// Ingest streams that may still open (`limits.max_streams`).
    stream_slots: Arc<tokio::sync::Semaphore>,
    /// Bytes of batches that may still wait for their commit
    /// (`limits.max_inflight_bytes`).
    inflight: Arc<tokio::sync::Semaphore>,
    /// The evidence signing key, if there is one.
    key: Option<Arc<crate::evidence::CollectorKey>>,
    /// The sensors' attestation keys.
    sensor_keys: crate::evidence::SensorKeys,
    /// Alert updates for the push to partners, when it runs.
    share: Option<std::sync::mpsc::Sender<crate::share::push::Update>>,
    /// The collector's data directory, where the share ledger is (empty
    /// with a ClickHouse store and no data directory).
    data_dir: PathBuf,
    /// The sharing policy.
    share_config: Option<Arc<crate::share::ShareConfig>>,
    /// The detection thread's queue, once it runs (detection on).
    detect: std::sync::OnceLock<std::sync::mpsc::SyncSender<writer::Committed>>,
}

/// A running collector.
#[derive(Debug)]
pub struct RunningCollector {
    /// The bound gRPC address.
    pub addr: SocketAddr,
    /// The bound metrics address.
    pub metrics_addr: Option<SocketAddr>,
    /// The bound HTTP API address.
    pub http_addr: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), CollectorError>>,
}

impl RunningCollector {
    /// Stops accepting, ends the streams and waits for the server.
    pub async fn shutdown(mut self) -> Result<(), CollectorError> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.wait().await
    }

    /// Waits until the server stops (on its own: an error).
    pub async fn wait(&mut self) -> Result<(), CollectorError> {
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "collector task failed");
                Ok(())
            }
        }
    }
}

/// Opens the configured store (ClickHouse, or SQLite in the data directory).
async fn open_store(cfg: &CollectorConfig) -> Result<Arc<dyn Store>, CollectorError> {
    let dir = cfg.data_dir.clone();
    let store_cfg = cfg.store.clone();
    let clickhouse = cfg.clickhouse.clone();
    let opened = tokio::task::spawn_blocking(move || -> Result<Arc<dyn Store>, StoreError> {
        Ok(match clickhouse {
            Some(ch) => {
                let s = ClickHouseStore::open(&ch)?;
                tracing::info!(url = %ch.url, database = %ch.database, "ClickHouse store opened");
                Arc::new(s)
            }
            None => {
                let s = SqliteStore::open(&dir, store_cfg)?;
                tracing::info!(path = %s.path().display(), "store opened");
                Arc::new(s)
            }
        })
    })
    .await
    .map_err(|e| CollectorError::Task("opening the store", e))??;
    Ok(opened)
}

/// Opens the store and starts serving; returns once the addresses are bound.
pub async fn start(cfg: CollectorConfig) -> Result<RunningCollector, CollectorError> {
    if cfg.tls.is_none() && !cfg.insecure && !cfg.listen.ip().is_loopback() {
        return Err(CollectorError::PlaintextRefused(cfg.listen));
    }
    if let Some(a) = cfg
        .http_listen
        .filter(|a| !a.ip().is_loopback() && cfg.tls.is_none())
    {
        return Err(CollectorError::HttpOffLoopback(a));
    }
    let tls = cfg.tls.as_ref().map(tls::server_config).transpose()?;
    let store = open_store(&cfg).await?;
    start_with_store(cfg, store, tls).await
}

/// Starts the detection thread, if detection is on: its queue.
/// Starts the push to partners (those with an API root), if any.
fn start_share(
    cfg: &CollectorConfig,
    store: &Arc<dyn Store>,
    key: Option<&crate::evidence::CollectorKey>,
) -> Result<Option<std::sync::mpsc::Sender<crate::share::push::Update>>, CollectorError> {
    let Some(sc) = &cfg.share else {
        return Ok(None);
    };
    if !sc.partners.iter().any(|p| p.api_root.is_some()) {
        return Ok(None);
    }
    let (Some(key), false) = (key, cfg.data_dir.as_os_str().is_empty()) else {
        tracing::error!(
            "sharing with partners needs a data directory (its ledger) and a signing key: not pushing"
        );
        return Ok(None);
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let pusher = crate::share::push::Pusher {
        config: sc.clone(),
        store: store.clone(),
        data_dir: cfg.data_dir.clone(),
        collector: key.fingerprint(),
    };
    std::thread::Builder::new()
        .name("vigil-share".into())
        .spawn(move || pusher.run(rx))
        .map_err(|e| CollectorError::Thread("share", e))?;
    tracing::info!(
        partners = sc.partners.iter().filter(|p| p.api_root.is_some()).count(),
        "pushing alerts to partners"
    );
    Ok(Some(tx))
}

async fn start_detection(
    cfg: &CollectorConfig,
    shared: &Arc<Shared>,
) -> Result<Option<std::sync::mpsc::SyncSender<writer::Committed>>, CollectorError> {
    let Some(d) = &cfg.detect else {
        return Ok(None);
    };
    let store = shared.store.clone();
    let settings = d.clone();
    let next = tokio::task::spawn_blocking(move || {
        // The settings in force, for the evidence of the alerts they raise.
        store.put_detector(&settings.settings_hash, &settings.settings)?;
        store.max_alert_id()
    })
    .await
    .map_err(|e| CollectorError::Task("reading the alert ids", e))??
        + 1;
    let mut engine = Engine::new(d.clone(), next).with_max_skew(cfg.limits.max_clock_skew);
    // Windows rebuilt from the stored flows of the last lookback: an attack
    // that spans a restart goes on as the alert it was; flows committed
    // and never examined (a crash) are examined now.
    let store = shared.store.clone();
    let lookback = d.rebuild_lookback();
    let (engine, rebuilt) = tokio::task::spawn_blocking(move || {
        let r = crate::hunt::rebuild(store.as_ref(), &mut engine, lookback);
        (engine, r)
    })
    .await
    .map_err(|e| CollectorError::Task("rebuilding detection", e))?;
    let rebuilt = rebuilt?;
    tracing::info!(
        flows = rebuilt.flows,
        lookback_s = lookback.as_secs(),
        continued = rebuilt.continues.len(),
        new_alerts = rebuilt.new.len(),
        "detection windows rebuilt from stored flows"
    );
    for a in &rebuilt.new {
        tracing::warn!(id = a.id, kind = a.kind.as_str(), asset = %a.asset, "{} (found at start, in flows stored before)", a.summary);
    }
    tracing::info!(
        assets = d.assets.len(),
        indicators = d.indicators.list.len(),
        "detection on"
    );
    let (tx, rx) = std::sync::mpsc::sync_channel(64);
    let shared = shared.clone();
    std::thread::Builder::new()
        .name("vigil-detect".into())
        .spawn(move || detection::run(shared, engine, rx))
        .map_err(|e| CollectorError::Thread("detection", e))?;
    Ok(Some(tx))
}

async fn start_with_store(
    cfg: CollectorConfig,
    store: Arc<dyn Store>,
    tls: Option<ServerTlsConfig>,
) -> Result<RunningCollector, CollectorError> {
    let bind = |source| CollectorError::Bind {
        addr: cfg.listen,
        source,
    };
    let listener = TcpListener::bind(cfg.listen).await.map_err(bind)?;
    let addr = listener.local_addr().map_err(bind)?;
    let key = match cfg.signing_key.clone() {
        Some(path) => {
            let k = tokio::task::spawn_blocking(move || {
                crate::evidence::CollectorKey::load_or_create(&path)
            })
            .await
            .map_err(|e| CollectorError::Task("reading the signing key", e))??;
            tracing::info!(path = %k.path().display(), fingerprint = %k.fingerprint(), "evidence signing key");
            Some(Arc::new(k))
        }
        None => {
            tracing::warn!(
                "no evidence signing key (no data directory, no evidence.signing_key): evidence is not signed"
            );
            None
        }
    };
    let pinned = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.pinned_keys())
            .await
            .map_err(|e| CollectorError::Task("reading the pinned sensor keys", e))??
    };
    let mut pins = Vec::new();
    for (id, raw) in pinned {
        match vigil_proto::attest::verifying_key(&raw) {
            Ok(k) => pins.push((id, k)),
            Err(e) => {
                tracing::error!(sensor = %id, error = %e, "a pinned sensor key is damaged: ignored")
            }
        }
    }
    tracing::info!(
        configured = cfg.sensor_keys.len(),
        pinned = pins.len(),
        "sensor attestation keys"
    );
    let sensor_keys = crate::evidence::SensorKeys::new(cfg.sensor_keys.clone(), pins);
    let share = start_share(&cfg, &store, key.as_deref())?;
    let shared = Arc::new(Shared {
        share,
        data_dir: cfg.data_dir.clone(),
        share_config: cfg.share.clone(),
        detect: std::sync::OnceLock::new(),
        sensor_keys,
        store,
        limits: cfg.limits,
        max_query_flows: cfg.max_query_flows,
        metrics: Arc::new(Metrics::default()),
        connected: Mutex::new(HashMap::new()),
        alerts: broadcast::channel(4096).0,
        closing: watch::channel(false).0,
        webhook: cfg.webhook.clone().map(Webhook::start),
        access: access::Access::new(&cfg.analysts),
        tokens: access::TokenGate::new(&cfg.data_dir),
        key,
        stream_slots: Arc::new(tokio::sync::Semaphore::new(cfg.limits.max_streams)),
        inflight: Arc::new(tokio::sync::Semaphore::new(
            usize::try_from(cfg.limits.max_inflight_bytes)
                .unwrap_or(usize::MAX)
                .min(tokio::sync::Semaphore::MAX_PERMITS),
        )),
    });
    let metrics_addr = match cfg.metrics_listen {
        Some(a) => Some(metrics::serve(a, shared.clone()).await?),
        None => None,
    };
    let http_addr = match cfg.http_listen {
        Some(a) => {
            let https = cfg.tls.as_ref().map(tls::https_config).transpose()?;
            Some(web::serve(a, shared.clone(), https).await?)
        }
        None => None,
    };
    let retention = retention::spawn(shared.store.clone(), cfg.retention_interval);
    let columns = retention::spawn_columns(shared.store.clone());
    let detect = start_detection(&cfg, &shared).await?;
    if let Some(d) = &detect {
        let _ = shared.detect.set(d.clone());
    }
    let (jobs, jobs_rx) = mpsc::channel::<writer::Job>(256);
    let (store, m) = (shared.store.clone(), shared.metrics.clone());
    std::thread::Builder::new()
        .name("vigil-writer".into())
        .spawn(move || writer::run(store, m, jobs_rx, detect))
        .map_err(|e| CollectorError::Thread("writer", e))?;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let mut builder = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)));
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    let max = cfg.max_message_bytes;
    let ingest = ingest::IngestSvc {
        shared: shared.clone(),
        jobs,
    };
    let router = builder
        .add_service(
            IngestServer::new(ingest)
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(InterceptedService::new(
            QueryServer::new(query::QuerySvc(shared.clone()))
                .max_decoding_message_size(1 << 20)
                .max_encoding_message_size(max),
            access::readers_only(shared.clone(), "query"),
        ))
        .add_service(EvidenceServer::new(evidence::EvidenceSvc(shared.clone())))
        .add_service(InterceptedService::new(
            AlertsServer::new(alerts::AlertsSvc(shared.clone()))
                .max_decoding_message_size(1 << 20)
                .max_encoding_message_size(max),
            access::readers_only(shared.clone(), "alerts"),
        ));
    tracing::info!(%addr, tls = cfg.tls.is_some(), metrics = ?metrics_addr, http = ?http_addr, "collector listening");
    if cfg.tls.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(
            %addr,
            "insecure: plaintext off loopback accepts ingest only, from anyone who can reach the \
             address, under any sensor id; flows and alerts are read only from loopback"
        );
    }
    if cfg.tls.is_none() && !cfg.analysts.is_empty() {
        tracing::warn!(
            "[access] analysts are named by their client certificates, and there is no [tls]: \
             only the local administrator (plaintext on loopback) can read"
        );
    }
    let closing = shared.closing.clone();
    let task = tokio::spawn(async move {
        let r = router
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stop_rx.await;
                let _ = closing.send(true);
            })
            .await;
        retention.abort();
        columns.abort();
        tracing::info!("collector stopped");
        r.map_err(CollectorError::from)
    });
    Ok(RunningCollector {
        addr,
        metrics_addr,
        http_addr,
        stop: Some(stop_tx),
        task,
    })
}

/// Runs until `shutdown` completes.
pub async fn run(
    cfg: CollectorConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), CollectorError> {
    let mut running = start(cfg).await?;
    tokio::select! {
        r = running.wait() => r,
        () = shutdown => {
            tracing::info!("shutting down");
            running.shutdown().await
        }
    }
}
