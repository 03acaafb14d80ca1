//! The collector daemon: the tonic `Ingest` and `Query` services over one
//! [`FlowStore`], a Prometheus endpoint, and periodic retention.
//!
//! Ingest runs one task per sensor stream. Each batch is validated
//! ([`crate::ingest`]), committed on a blocking thread, and acknowledged
//! only after the commit returns; batches of a stream are committed in
//! order. A rejected batch ends that stream with a status naming the
//! problem (`INVALID_ARGUMENT`, or `PERMISSION_DENIED` for an identity that
//! does not match the client certificate); other streams are untouched. A
//! storage failure ends the stream with `UNAVAILABLE`, so the sensor keeps
//! the batch and retries later.
//!
//! Who caused an error decides the status and the log level: the peer
//! (WARN, rate-limited by the stream ending), storage (ERROR) or a bug
//! (ERROR, `INTERNAL`).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};
use vigil_proto::pb::alerts_server::{Alerts, AlertsServer};
use vigil_proto::pb::ingest_server::{Ingest, IngestServer};
use vigil_proto::pb::query_server::{Query, QueryServer};
use vigil_proto::{FlowRecord, pb};

use crate::detect::{AlertKind, DetectConfig, Engine, Severity};
use crate::ingest::{Limits, Rejection, StreamState, validate};
use crate::query::{Filter, TimeRange, TopBy, TopKey, parse};
use crate::store::prelude::*;
use crate::store::sqlite::{SqliteConfig, SqliteStore};
use crate::store::{AlertQuery, CommitOutcome, IngestBatch, StoreError};
use crate::webhook::{Webhook, WebhookConfig};

/// Nanoseconds since the epoch, now.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// PEM files for TLS with client certificates.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// This side's certificate chain.
    pub cert: PathBuf,
    /// This side's private key.
    pub key: PathBuf,
    /// The CA that signs the peers' certificates.
    pub ca: PathBuf,
}

/// How the collector runs (validated; see `config` for the TOML form).
#[derive(Clone, Debug)]
pub struct CollectorConfig {
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// Where the store keeps its files.
    pub data_dir: PathBuf,
    /// Prometheus endpoint (`GET /metrics`), if any.
    pub metrics_listen: Option<SocketAddr>,
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
    pub clickhouse: Option<crate::store::clickhouse::ClickHouseConfig>,
}

impl CollectorConfig {
    /// Defaults with the given addresses.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> CollectorConfig {
        CollectorConfig {
            listen,
            data_dir,
            metrics_listen: None,
            tls: None,
            insecure: false,
            store: SqliteConfig::default(),
            limits: Limits::default(),
            max_message_bytes: 16 << 20,
            retention_interval: Duration::from_secs(60),
            max_query_flows: 1_000_000,
            detect: None,
            webhook: None,
            clickhouse: None,
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
    /// The store failed to open.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A start-up task failed (panicked or was cancelled).
    #[error("{0}: {1}")]
    Task(&'static str, #[source] tokio::task::JoinError),
    /// The writer thread could not start.
    #[error("starting the writer thread: {0}")]
    Thread(#[source] std::io::Error),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Counters behind `/metrics`.
#[derive(Debug, Default)]
struct Metrics {
    batches_stored: AtomicU64,
    batches_duplicate: AtomicU64,
    batches_rejected: AtomicU64,
    batches_failed: AtomicU64,
    flows_stored: AtomicU64,
    streams_active: AtomicU64,
    streams_total: AtomicU64,
    commit_ns_sum: AtomicU64,
    commits: AtomicU64,
    detect_flows: AtomicU64,
    detect_ns_sum: AtomicU64,
    alerts_opened: AtomicU64,
    alerts_updated: AtomicU64,
    alerts_store_failures: AtomicU64,
}

#[derive(Debug)]
struct Shared {
    store: Arc<dyn Store>,
    limits: Limits,
    max_query_flows: u64,
    metrics: Metrics,
    /// Open streams per sensor id.
    connected: Mutex<HashMap<String, usize>>,
    /// Alert updates for subscribers.
    alerts: broadcast::Sender<pb::Alert>,
    /// Set when the collector shuts down: ends the subscribers' streams,
    /// which would otherwise hold the graceful shutdown open forever.
    closing: tokio::sync::watch::Sender<bool>,
    webhook: Option<Webhook>,
}

/// Marks a sensor connected while a stream of it is open.
struct Connected {
    shared: Arc<Shared>,
    sensor: String,
}

impl Drop for Connected {
    fn drop(&mut self) {
        let mut c = self
            .shared
            .connected
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = c.get_mut(&self.sensor) {
            *n -= 1;
            if *n == 0 {
                c.remove(&self.sensor);
            }
        }
        tracing::info!(sensor = %self.sensor, "sensor stream closed");
    }
}

struct StreamGauge(Arc<Shared>);

impl Drop for StreamGauge {
    fn drop(&mut self) {
        self.0
            .metrics
            .streams_active
            .fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Clone, Debug)]
struct IngestSvc(Arc<Shared>, mpsc::Sender<Job>);

#[derive(Clone, Debug)]
struct QuerySvc(Arc<Shared>);

/// The identities (SAN DNS names, then the common name) of the peer's
/// client certificate; `None` without TLS.
fn peer_identities<T>(req: &Request<T>) -> Result<Option<Vec<String>>, Status> {
    let Some(certs) = req.peer_certs() else {
        return Ok(None);
    };
    let Some(leaf) = certs.first() else {
        return Err(Status::unauthenticated("no client certificate"));
    };
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| Status::unauthenticated(format!("client certificate: {e}")))?;
    let mut ids = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = name {
                ids.push((*d).to_string());
            }
        }
    }
    for cn in cert.subject().iter_common_name() {
        if let Ok(s) = cn.as_str() {
            ids.push(s.to_string());
        }
    }
    Ok(Some(ids))
}

fn rejection_status(r: &Rejection) -> Status {
    match r {
        Rejection::IdentityMismatch { .. } => Status::permission_denied(r.to_string()),
        _ => Status::invalid_argument(r.to_string()),
    }
}

type AckStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::Ack, Status>> + Send>>;
type ChunkStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::FlowChunk, Status>> + Send>>;

/// A batch for the writer, and where its outcome goes.
struct Job {
    batch: IngestBatch,
    /// The first batch of its stream (see [`IngestStore::streams_opened`]).
    opens_stream: bool,
    reply: oneshot::Sender<Result<CommitOutcome, Arc<StoreError>>>,
}

/// The writer thread: takes every batch waiting (up to the store's
/// [`IngestStore::group_flows`]), from all streams, and commits them in one
/// transaction (group commit), then answers each. One writer, because SQLite
/// has one.
fn writer(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Job>,
    detect: Option<std::sync::mpsc::SyncSender<(String, Vec<FlowRecord>)>>,
) {
    let group_flows = shared.store.group_flows();
    while let Some(first) = rx.blocking_recv() {
        let mut flows = first.batch.flows.len();
        let mut jobs = vec![first];
        while flows < group_flows {
            match rx.try_recv() {
                Ok(j) => {
                    flows += j.batch.flows.len();
                    jobs.push(j);
                }
                Err(_) => break,
            }
        }
        let t0 = Instant::now();
        let opened: Vec<&str> = jobs
            .iter()
            .filter(|j| j.opens_stream)
            .map(|j| j.batch.sensor_id.as_str())
            .collect();
        let res = shared.store.streams_opened(&opened).and_then(|()| {
            let batches: Vec<&IngestBatch> = jobs.iter().map(|j| &j.batch).collect();
            shared.store.commit_many(&batches)
        });
        let m = &shared.metrics;
        m.commit_ns_sum
            .fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
        m.commits.fetch_add(1, Ordering::Relaxed);
        match res {
            Ok(outcomes) => {
                let mut stored = Vec::new();
                for (job, outcome) in jobs.into_iter().zip(outcomes) {
                    let _ = job.reply.send(Ok(outcome));
                    if matches!(outcome, CommitOutcome::Stored { .. }) {
                        stored.push((job.batch.sensor_id, job.batch.flows));
                    }
                }
                // Detection sees committed flows only, so every alert's
                // evidence is in the store. A slow detector holds the
                // writer back (and the sensors spool) rather than skip.
                if let Some(d) = &detect {
                    for b in stored {
                        if d.send(b).is_err() {
                            tracing::error!("the detection thread stopped");
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, batches = jobs.len(), "storing batches failed; the sensors keep them");
                let e = Arc::new(e);
                for job in jobs {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// The detection thread: runs the engine over committed batches, stores
/// the alerts, and hands them to subscribers and the webhook.
fn detection(
    shared: Arc<Shared>,
    mut engine: Engine,
    rx: std::sync::mpsc::Receiver<(String, Vec<FlowRecord>)>,
) {
    while let Ok((sensor, flows)) = rx.recv() {
        let t0 = Instant::now();
        let updates = engine.observe(&sensor, &flows);
        let m = &shared.metrics;
        m.detect_ns_sum
            .fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
        // Counted once the batch's alerts are stored and sent, so a reader
        // that sees the count also sees those alerts.
        let _done = DetectedOnDrop(&m.detect_flows, flows.len() as u64);
        if updates.is_empty() {
            continue;
        }
        if let Err(e) = shared.store.put_alerts(&updates) {
            m.alerts_store_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, alerts = updates.len(), "storing alerts failed");
        }
        for u in updates {
            if u.opened {
                m.alerts_opened.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    id = u.alert.id,
                    kind = u.alert.kind.as_str(),
                    severity = u.alert.severity.as_str(),
                    asset = %u.alert.asset,
                    "{}",
                    u.alert.summary
                );
            } else {
                m.alerts_updated.fetch_add(1, Ordering::Relaxed);
            }
            let mut p = pb::Alert::from(&u.alert);
            p.opened = u.opened;
            // No subscriber is not an error.
            let _ = shared.alerts.send(p);
            if let Some(w) = &shared.webhook {
                w.send(u);
            }
        }
    }
}

/// Returns once the collector starts shutting down.
async fn until_closing(rx: &mut tokio::sync::watch::Receiver<bool>) {
    loop {
        let closed = *rx.borrow_and_update();
        if closed || rx.changed().await.is_err() {
            return;
        }
    }
}

struct DetectedOnDrop<'a>(&'a AtomicU64, u64);

impl Drop for DetectedOnDrop<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(self.1, Ordering::Release);
    }
}

#[derive(Clone, Debug)]
struct AlertsSvc(Arc<Shared>);

type AlertStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::Alert, Status>> + Send>>;

#[tonic::async_trait]
impl Alerts for AlertsSvc {
    type SubscribeStream = AlertStream;

    async fn list(&self, req: Request<pb::AlertQuery>) -> Result<Response<pb::AlertList>, Status> {
        let q = req.into_inner();
        let range = range_of(q.range);
        let kind = if q.kind.is_empty() {
            None
        } else {
            Some(AlertKind::parse(&q.kind).ok_or_else(|| {
                Status::invalid_argument(format!("kind: unknown alert kind {:?}", q.kind))
            })?)
        };
        let min_severity = if q.min_severity.is_empty() {
            None
        } else {
            Some(Severity::parse(&q.min_severity).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "min_severity: {:?} is not low, medium, high or critical",
                    q.min_severity
                ))
            })?)
        };
        let query = AlertQuery {
            since_ns: range.since_ns,
            until_ns: range.until_ns,
            kind,
            min_severity,
            asset: (!q.asset.is_empty()).then_some(q.asset),
            limit: q.limit.clamp(1, 100_000) as usize,
        };
        let store = self.0.store.clone();
        let alerts = blocking(move || store.alerts(&query)).await?;
        Ok(Response::new(pb::AlertList {
            alerts: alerts.iter().map(pb::Alert::from).collect(),
        }))
    }

    async fn get(
        &self,
        req: Request<pb::AlertRequest>,
    ) -> Result<Response<pb::AlertDetail>, Status> {
        let q = req.into_inner();
        let store = self.0.store.clone();
        let max = q.max_flows as usize;
        let (alert, flows) = blocking(move || {
            let Some(a) = store.alert(q.id)? else {
                return Ok((None, Vec::new()));
            };
            let flows = if max > 0 {
                let refs = &a.evidence[..a.evidence.len().min(max)];
                store.evidence_flows(refs)?
            } else {
                Vec::new()
            };
            Ok((Some(a), flows))
        })
        .await?;
        let Some(alert) = alert else {
            return Err(Status::not_found(format!("no alert {}", q.id)));
        };
        Ok(Response::new(pb::AlertDetail {
            alert: Some(pb::Alert::from(&alert)),
            flows: flows.iter().map(stored_flow).collect(),
        }))
    }

    async fn subscribe(
        &self,
        _req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<AlertStream>, Status> {
        let mut rx = self.0.alerts.subscribe();
        let mut closing = self.0.closing.subscribe();
        let (tx, out) = mpsc::channel::<Result<pb::Alert, Status>>(256);
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    r = rx.recv() => r,
                    () = until_closing(&mut closing) => {
                        let _ = tx
                            .send(Err(Status::unavailable("the collector is shutting down")))
                            .await;
                        return;
                    }
                };
                match next {
                    Ok(a) => {
                        if tx.send(Ok(a)).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        // Tell the subscriber rather than skip silently.
                        let _ = tx
                            .send(Err(Status::data_loss(format!(
                                "subscriber too slow: {n} alert updates missed; list alerts to catch up"
                            ))))
                            .await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }
}

#[tonic::async_trait]
impl Ingest for IngestSvc {
    type StreamStream = AckStream;

    async fn stream(
        &self,
        req: Request<Streaming<pb::FlowBatch>>,
    ) -> Result<Response<AckStream>, Status> {
        let identities = peer_identities(&req)?;
        let peer = req
            .remote_addr()
            .map_or_else(|| "unknown".to_string(), |a| a.to_string());
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel::<Result<pb::Ack, Status>>(64);
        let shared = self.0.clone();
        let jobs = self.1.clone();
        shared
            .metrics
            .streams_active
            .fetch_add(1, Ordering::Relaxed);
        shared.metrics.streams_total.fetch_add(1, Ordering::Relaxed);
        // Batches in commit, in stream order: the acker answers them in
        // that order while the receiver validates the next ones.
        type Pending = (
            u64,
            u64,
            oneshot::Receiver<Result<CommitOutcome, Arc<StoreError>>>,
        );
        let (pending_tx, mut pending_rx) = mpsc::channel::<Pending>(16);
        let ack_tx = tx.clone();
        let ack_shared = shared.clone();
        let acker = tokio::spawn(async move {
            while let Some((seq, flows, reply)) = pending_rx.recv().await {
                let m = &ack_shared.metrics;
                let ack = match reply.await {
                    Ok(Ok(CommitOutcome::Stored { gap })) => {
                        m.batches_stored.fetch_add(1, Ordering::Relaxed);
                        m.flows_stored.fetch_add(flows, Ordering::Relaxed);
                        if gap > 0 {
                            tracing::warn!(
                                seq,
                                missing = gap,
                                "sequence gap: batches the sensor's spool dropped"
                            );
                        }
                        pb::Ack {
                            seq,
                            duplicate: false,
                        }
                    }
                    Ok(Ok(CommitOutcome::Duplicate)) => {
                        m.batches_duplicate.fetch_add(1, Ordering::Relaxed);
                        pb::Ack {
                            seq,
                            duplicate: true,
                        }
                    }
                    Ok(Ok(CommitOutcome::Fenced)) => {
                        m.batches_failed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            seq,
                            "the sensor moved to another collector since this stream opened: stream ended"
                        );
                        let _ = ack_tx
                            .send(Err(Status::aborted(
                                "another collector took this sensor over since the stream opened: send again",
                            )))
                            .await;
                        return;
                    }
                    Ok(Err(e)) => {
                        m.batches_failed.fetch_add(1, Ordering::Relaxed);
                        let _ = ack_tx
                            .send(Err(Status::unavailable(format!("storage: {e}"))))
                            .await;
                        return;
                    }
                    Err(_) => {
                        m.batches_failed.fetch_add(1, Ordering::Relaxed);
                        let _ = ack_tx
                            .send(Err(Status::internal("the writer stopped")))
                            .await;
                        return;
                    }
                };
                if ack_tx.send(Ok(ack)).await.is_err() {
                    return;
                }
            }
        });
        tokio::spawn(async move {
            let _gauge = StreamGauge(shared.clone());
            let mut st = StreamState::default();
            let mut connected: Option<Connected> = None;
            loop {
                let msg = match inbound.message().await {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(status) => {
                        tracing::warn!(%peer, error = %status.message(), "ingest stream broken");
                        shared
                            .metrics
                            .batches_rejected
                            .fetch_add(1, Ordering::Relaxed);
                        drop(pending_tx);
                        let _ = acker.await;
                        let _ = tx
                            .send(Err(Status::invalid_argument(format!(
                                "unreadable message: {}",
                                status.message()
                            ))))
                            .await;
                        return;
                    }
                };
                let batch = match validate(
                    msg,
                    &mut st,
                    identities.as_deref(),
                    &shared.limits,
                    now_ns(),
                ) {
                    Ok(b) => b,
                    Err(rej) => {
                        tracing::warn!(%peer, sensor = ?st.sensor_id, error = %rej, "batch rejected");
                        shared
                            .metrics
                            .batches_rejected
                            .fetch_add(1, Ordering::Relaxed);
                        // Acknowledge what came before, then refuse.
                        drop(pending_tx);
                        let _ = acker.await;
                        let _ = tx.send(Err(rejection_status(&rej))).await;
                        return;
                    }
                };
                let opens_stream = connected.is_none();
                if opens_stream {
                    *shared
                        .connected
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(batch.sensor_id.clone())
                        .or_default() += 1;
                    tracing::info!(%peer, sensor = %batch.sensor_id, "sensor stream opened");
                    connected = Some(Connected {
                        shared: shared.clone(),
                        sensor: batch.sensor_id.clone(),
                    });
                }
                let seq = batch.seq;
                let flows = batch.flows.len() as u64;
                let (reply_tx, reply_rx) = oneshot::channel();
                if jobs
                    .send(Job {
                        batch,
                        opens_stream,
                        reply: reply_tx,
                    })
                    .await
                    .is_err()
                    || pending_tx.send((seq, flows, reply_rx)).await.is_err()
                {
                    break;
                }
            }
            drop(pending_tx);
            let _ = acker.await;
            drop(connected);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

fn stored_flow((sensor, r): &(String, FlowRecord)) -> pb::StoredFlow {
    pb::StoredFlow {
        sensor_id: sensor.clone(),
        flow: Some(pb::Flow::from(r)),
    }
}

fn range_of(r: Option<pb::TimeRange>) -> TimeRange {
    let r = r.unwrap_or_default();
    TimeRange {
        since_ns: (r.since_ns != 0).then_some(r.since_ns),
        until_ns: (r.until_ns != 0).then_some(r.until_ns),
    }
}

fn filter_of(text: &str) -> Result<Filter, Status> {
    parse(text).map_err(|e| Status::invalid_argument(e.to_string()))
}

fn store_status(e: StoreError) -> Status {
    if let StoreError::BadQuery(m) = &e {
        return Status::invalid_argument(m.clone());
    }
    tracing::error!(error = %e, "query failed in the store");
    Status::internal(format!("store: {e}"))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("query task failed: {e}")))?
        .map_err(store_status)
}

#[tonic::async_trait]
impl Query for QuerySvc {
    type FlowsStream = ChunkStream;

    async fn flows(&self, req: Request<pb::FlowQuery>) -> Result<Response<ChunkStream>, Status> {
        let q = req.into_inner();
        let filter = filter_of(&q.filter)?;
        let range = range_of(q.range);
        let max = self.0.max_query_flows;
        let limit = if q.limit == 0 { max } else { q.limit.min(max) } as usize;
        let store = self.0.store.clone();
        let rows = blocking(move || store.flows(&filter, range, limit)).await?;
        let chunks: Vec<Result<pb::FlowChunk, Status>> = rows
            .chunks(1024)
            .map(|c| {
                Ok(pb::FlowChunk {
                    flows: c.iter().map(stored_flow).collect(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn top(&self, req: Request<pb::TopQuery>) -> Result<Response<pb::TopReply>, Status> {
        let q = req.into_inner();
        let filter = filter_of(&q.filter)?;
        let key = match pb::TopKey::try_from(q.key) {
            Ok(pb::TopKey::Src) => TopKey::Src,
            Ok(pb::TopKey::Dst) => TopKey::Dst,
            Ok(pb::TopKey::DstPort) => TopKey::DstPort,
            Ok(pb::TopKey::SrcPort) => TopKey::SrcPort,
            Ok(pb::TopKey::Proto) => TopKey::Proto,
            _ => {
                return Err(Status::invalid_argument(format!(
                    "key: unknown value {}",
                    q.key
                )));
            }
        };
        let by = match pb::TopBy::try_from(q.by) {
            Ok(pb::TopBy::Bytes) => TopBy::Bytes,
            Ok(pb::TopBy::Packets) => TopBy::Packets,
            Ok(pb::TopBy::Flows) => TopBy::Flows,
            _ => {
                return Err(Status::invalid_argument(format!(
                    "by: unknown value {}",
                    q.by
                )));
            }
        };
        let limit = q.limit.clamp(1, 10_000) as usize;
        let range = range_of(q.range);
        let store = self.0.store.clone();
        let rows = blocking(move || store.top(&filter, range, key, by, limit)).await?;
        Ok(Response::new(pb::TopReply {
            rows: rows
                .into_iter()
                .map(|r| pb::TopRow {
                    key: r.key,
                    flows: r.totals.flows,
                    packets: r.totals.packets,
                    bytes: r.totals.bytes,
                })
                .collect(),
        }))
    }

    async fn count(
        &self,
        req: Request<pb::CountQuery>,
    ) -> Result<Response<pb::CountReply>, Status> {
        let q = req.into_inner();
        let filter = filter_of(&q.filter)?;
        let range = range_of(q.range);
        let store = self.0.store.clone();
        let t = blocking(move || store.count(&filter, range)).await?;
        Ok(Response::new(pb::CountReply {
            flows: t.flows,
            packets: t.packets,
            bytes: t.bytes,
        }))
    }

    async fn series(
        &self,
        req: Request<pb::SeriesQuery>,
    ) -> Result<Response<pb::SeriesReply>, Status> {
        let q = req.into_inner();
        let filter = filter_of(&q.filter)?;
        // The store checks the step (a bad one is InvalidArgument).
        let range = range_of(q.range);
        let store = self.0.store.clone();
        let step = q.step_ns;
        let points = blocking(move || store.series(&filter, range, step)).await?;
        Ok(Response::new(pb::SeriesReply {
            points: points
                .into_iter()
                .map(|p| pb::SeriesPoint {
                    start_ns: p.start_ns,
                    flows: p.totals.flows,
                    packets: p.totals.packets,
                    bytes: p.totals.bytes,
                })
                .collect(),
        }))
    }

    async fn status(
        &self,
        _req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusReply>, Status> {
        Ok(Response::new(status_reply(&self.0).await?))
    }
}

async fn status_reply(shared: &Arc<Shared>) -> Result<pb::StatusReply, Status> {
    let store = shared.store.clone();
    let sensors = blocking(move || store.sensors()).await?;
    let connected = shared
        .connected
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let stored_flows = sensors.iter().map(|s| s.flows).sum();
    Ok(pb::StatusReply {
        sensors: sensors
            .into_iter()
            .map(|s| pb::SensorStatus {
                connected: connected.contains_key(&s.sensor_id),
                sensor_id: s.sensor_id,
                last_seq: s.last_seq,
                batches: s.batches,
                flows: s.flows,
                duplicates: s.duplicates,
                seq_gaps: s.seq_gaps,
                last_seen_ns: s.last_seen_ns,
                stats: Some(s.stats),
            })
            .collect(),
        stored_flows,
        detected_flows: shared.metrics.detect_flows.load(Ordering::Relaxed),
        alerts_opened: shared.metrics.alerts_opened.load(Ordering::Relaxed),
    })
}

/// Name, type, help and value of a per-sensor metric.
type SensorMetric = (
    &'static str,
    &'static str,
    &'static str,
    fn(&pb::SensorStatus) -> u64,
);

/// One metric family in the Prometheus text format: its HELP and TYPE
/// lines, then a sample per (label value, value); with `label` empty, one
/// sample without labels.
fn family(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    label: &str,
    samples: &[(&str, String)],
) {
    use std::fmt::Write as _;
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (l, v) in samples {
        let _ = if label.is_empty() {
            writeln!(out, "{name} {v}")
        } else {
            writeln!(out, "{name}{{{label}=\"{l}\"}} {v}")
        };
    }
}

/// Renders the Prometheus text exposition.
async fn render_metrics(shared: Arc<Shared>) -> String {
    use std::fmt::Write as _;
    let m = &shared.metrics;
    let mut out = String::new();
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let batches = [
        ("stored", &m.batches_stored),
        ("duplicate", &m.batches_duplicate),
        ("rejected", &m.batches_rejected),
        ("failed", &m.batches_failed),
    ]
    .map(|(r, v)| (r, get(v).to_string()));
    family(
        &mut out,
        "vigil_collector_batches_total",
        "counter",
        "Batches received, by result.",
        "result",
        &batches,
    );
    let one = |v: String| [("", v)];
    family(
        &mut out,
        "vigil_collector_flows_stored_total",
        "counter",
        "Flow records committed.",
        "",
        &one(get(&m.flows_stored).to_string()),
    );
    family(
        &mut out,
        "vigil_collector_streams_active",
        "gauge",
        "Open ingest streams.",
        "",
        &one(get(&m.streams_active).to_string()),
    );
    family(
        &mut out,
        "vigil_collector_streams_total",
        "counter",
        "Ingest streams opened.",
        "",
        &one(get(&m.streams_total).to_string()),
    );
    let _ = writeln!(
        out,
        "# HELP vigil_collector_commit_seconds Time to commit a batch.\n# TYPE vigil_collector_commit_seconds summary\nvigil_collector_commit_seconds_sum {}\nvigil_collector_commit_seconds_count {}",
        get(&m.commit_ns_sum) as f64 / 1e9,
        get(&m.commits)
    );
    family(
        &mut out,
        "vigil_collector_detect_flows_total",
        "counter",
        "Flow records the detectors examined.",
        "",
        &one(get(&m.detect_flows).to_string()),
    );
    family(
        &mut out,
        "vigil_collector_detect_seconds_total",
        "counter",
        "Time the detectors spent.",
        "",
        &one((get(&m.detect_ns_sum) as f64 / 1e9).to_string()),
    );
    let alerts = [
        ("opened", &m.alerts_opened),
        ("updated", &m.alerts_updated),
        ("store_failed", &m.alerts_store_failures),
    ]
    .map(|(e, v)| (e, get(v).to_string()));
    family(
        &mut out,
        "vigil_collector_alerts_total",
        "counter",
        "Alert events, by event.",
        "event",
        &alerts,
    );
    if let Some(w) = &shared.webhook {
        let hook = [
            ("sent", &w.stats.sent),
            ("failed_attempt", &w.stats.failed_attempts),
            ("dropped", &w.stats.dropped),
        ]
        .map(|(r, v)| (r, get(v).to_string()));
        family(
            &mut out,
            "vigil_collector_webhook_total",
            "counter",
            "Webhook deliveries, by result.",
            "result",
            &hook,
        );
    }
    if let Ok(reply) = status_reply(&shared).await {
        let metrics: [SensorMetric; 10] = [
            (
                "vigil_collector_sensor_connected",
                "gauge",
                "1 while a stream of the sensor is open.",
                |s| u64::from(s.connected),
            ),
            (
                "vigil_collector_sensor_last_seq",
                "gauge",
                "Highest committed batch sequence number.",
                |s| s.last_seq,
            ),
            (
                "vigil_collector_sensor_flows_total",
                "counter",
                "Flow records stored.",
                |s| s.flows,
            ),
            (
                "vigil_collector_sensor_seq_gaps_total",
                "counter",
                "Batch sequence numbers never received.",
                |s| s.seq_gaps,
            ),
            (
                "vigil_collector_sensor_packets_total",
                "counter",
                "Packets the sensor captured.",
                |s| s.stats.as_ref().map_or(0, |t| t.packets),
            ),
            (
                "vigil_collector_sensor_kernel_drops_total",
                "counter",
                "Packets the sensor's kernel dropped.",
                |s| s.stats.as_ref().map_or(0, |t| t.kernel_drops),
            ),
            (
                "vigil_collector_sensor_decode_errors_total",
                "counter",
                "Malformed frames at the sensor.",
                |s| {
                    s.stats
                        .as_ref()
                        .map_or(0, |t| t.decode_errors.values().sum())
                },
            ),
            (
                "vigil_collector_sensor_flows_evicted_total",
                "counter",
                "Flows evicted from the sensor's full table.",
                |s| s.stats.as_ref().map_or(0, |t| t.flows_evicted),
            ),
            (
                "vigil_collector_sensor_spool_dropped_flows_total",
                "counter",
                "Flows the sensor's spool dropped at its bound.",
                |s| s.stats.as_ref().map_or(0, |t| t.spool_dropped_flows),
            ),
            (
                "vigil_collector_sensor_spool_bytes",
                "gauge",
                "Bytes in the sensor's spool.",
                |s| s.stats.as_ref().map_or(0, |t| t.spool_bytes),
            ),
        ];
        for (name, kind, help, f) in metrics {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for s in &reply.sensors {
                let _ = writeln!(out, "{name}{{sensor=\"{}\"}} {}", s.sensor_id, f(s));
            }
        }
    }
    out
}

/// A running collector.
#[derive(Debug)]
pub struct RunningCollector {
    /// The bound gRPC address.
    pub addr: SocketAddr,
    /// The bound metrics address.
    pub metrics_addr: Option<SocketAddr>,
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

fn read(path: &PathBuf) -> Result<Vec<u8>, CollectorError> {
    std::fs::read(path).map_err(|source| CollectorError::TlsFile {
        path: path.clone(),
        source,
    })
}

/// Opens the store and starts serving; returns once the addresses are bound.
pub async fn start(cfg: CollectorConfig) -> Result<RunningCollector, CollectorError> {
    if cfg.tls.is_none() && !cfg.insecure && !cfg.listen.ip().is_loopback() {
        return Err(CollectorError::PlaintextRefused(cfg.listen));
    }
    let tls = match &cfg.tls {
        Some(t) => Some(
            ServerTlsConfig::new()
                .identity(Identity::from_pem(read(&t.cert)?, read(&t.key)?))
                .client_ca_root(Certificate::from_pem(read(&t.ca)?)),
        ),
        None => None,
    };
    let dir = cfg.data_dir.clone();
    let store_cfg = cfg.store.clone();
    let clickhouse = cfg.clickhouse.clone();
    let store = tokio::task::spawn_blocking(move || -> Result<Arc<dyn Store>, StoreError> {
        Ok(match clickhouse {
            Some(ch) => {
                let s = crate::store::clickhouse::ClickHouseStore::open(&ch)?;
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
    start_with_store(cfg, store, tls).await
}

async fn start_with_store(
    cfg: CollectorConfig,
    store: Arc<dyn Store>,
    tls: Option<ServerTlsConfig>,
) -> Result<RunningCollector, CollectorError> {
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| CollectorError::Bind {
            addr: cfg.listen,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| CollectorError::Bind {
            addr: cfg.listen,
            source,
        })?;
    let (alerts, _) = broadcast::channel(4096);
    let shared = Arc::new(Shared {
        store,
        limits: cfg.limits,
        max_query_flows: cfg.max_query_flows,
        metrics: Metrics::default(),
        connected: Mutex::new(HashMap::new()),
        alerts,
        closing: tokio::sync::watch::channel(false).0,
        webhook: cfg.webhook.clone().map(Webhook::start),
    });
    let metrics_addr = match cfg.metrics_listen {
        Some(a) => Some(serve_metrics(a, shared.clone()).await?),
        None => None,
    };
    let retention_shared = shared.clone();
    let interval = cfg.retention_interval;
    let retention = tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let store = retention_shared.store.clone();
            match tokio::task::spawn_blocking(move || store.enforce_retention(now_ns())).await {
                Ok(Ok(r)) if r.deleted_flows > 0 => {
                    tracing::info!(deleted_flows = r.deleted_flows, "retention applied");
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "retention failed"),
                Err(e) => tracing::error!(error = %e, "retention task failed"),
            }
        }
    });
    let detect_tx = match &cfg.detect {
        Some(d) => {
            let store = shared.store.clone();
            let next = tokio::task::spawn_blocking(move || store.max_alert_id())
                .await
                .map_err(|e| CollectorError::Task("reading the alert ids", e))??
                + 1;
            let engine = Engine::new(d.clone(), next);
            tracing::info!(
                assets = d.assets.len(),
                indicators = d.indicator_list.len(),
                "detection on"
            );
            let (tx, rx) = std::sync::mpsc::sync_channel(64);
            let detect_shared = shared.clone();
            std::thread::Builder::new()
                .name("vigil-detect".into())
                .spawn(move || detection(detect_shared, engine, rx))
                .map_err(CollectorError::Thread)?;
            Some(tx)
        }
        None => None,
    };
    let (jobs, jobs_rx) = mpsc::channel::<Job>(256);
    let writer_shared = shared.clone();
    std::thread::Builder::new()
        .name("vigil-writer".into())
        .spawn(move || writer(writer_shared, jobs_rx, detect_tx))
        .map_err(CollectorError::Thread)?;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let mut builder = Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)));
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    let max = cfg.max_message_bytes;
    let router = builder
        .add_service(
            IngestServer::new(IngestSvc(shared.clone(), jobs))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            QueryServer::new(QuerySvc(shared.clone()))
                .max_decoding_message_size(1 << 20)
                .max_encoding_message_size(max),
        )
        .add_service(
            AlertsServer::new(AlertsSvc(shared.clone()))
                .max_decoding_message_size(1 << 20)
                .max_encoding_message_size(max),
        );
    tracing::info!(%addr, tls = cfg.tls.is_some(), metrics = ?metrics_addr, "collector listening");
    let closing = shared.closing.clone();
    let task = tokio::spawn(async move {
        let r = router
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stop_rx.await;
                let _ = closing.send(true);
            })
            .await;
        retention.abort();
        tracing::info!("collector stopped");
        r.map_err(CollectorError::from)
    });
    Ok(RunningCollector {
        addr,
        metrics_addr,
        stop: Some(stop_tx),
        task,
    })
}

async fn serve_metrics(
    addr: SocketAddr,
    shared: Arc<Shared>,
) -> Result<SocketAddr, CollectorError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| CollectorError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| CollectorError::Bind { addr, source })?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let shared = shared.clone();
            async move {
                (
                    [("content-type", "text/plain; version=0.0.4")],
                    render_metrics(shared).await,
                )
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    });
    Ok(bound)
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
