//! The exporter: flow records → batches in the [`Spool`] → a gRPC stream
//! to the collector, resent until acknowledged.
//!
//! - The pipeline's sink thread calls [`ExportSink::push`]: records are
//!   encoded into the open batch, which is appended to the spool when it
//!   holds `batch_flows` records or is `batch_delay` old. Nothing here waits
//!   for the network, so back-pressure never reaches capture.
//! - One async sender task connects (with exponential backoff and jitter),
//!   opens `Ingest.Stream`, and sends every unacknowledged batch in seq order
//!   with up to `window` in flight, reading them from the spool. Each
//!   message is a small protobuf header (sensor id, seq, the sensor's current
//!   counters) followed by the spooled flow bytes, unchanged (protobuf
//!   concatenation), so replay costs no re-encoding.
//! - An ack advances the spool's acknowledged mark; after a reconnect the
//!   sender starts again after the mark, so a batch is sent until it is
//!   acknowledged, and the collector drops the duplicates.
//! - `INVALID_ARGUMENT` for a batch means the collector will never take it
//!   (a sensor clock far ahead, say): the batch is dropped, counted and
//!   logged as an error. `PERMISSION_DENIED` / `UNAUTHENTICATED` (a
//!   certificate that does not match the sensor id) stops the exporter: a
//!   configuration error; the spool keeps everything.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use std::collections::VecDeque;

use bytes::BufMut as _;
use hdrhistogram::Histogram;
use prost::Message as _;
use prost::encoding::{WireType, encode_key, encode_varint};
use thiserror::Error;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};
use vigil_proto::attest::Statement;
use vigil_proto::keys::KeyFile;
use vigil_proto::{FlowRecord, merkle, pb};

use super::spool::{Flush, Spool, SpoolConfig, SpoolError};
use crate::run::LiveCounters;

/// Client side of mTLS.
#[derive(Clone, Debug)]
pub struct ClientTls {
    /// CA that signed the collector's certificate.
    pub ca: PathBuf,
    /// This sensor's certificate (its identity must be the sensor id).
    pub cert: PathBuf,
    /// This sensor's key.
    pub key: PathBuf,
    /// Name to check the collector's certificate against (default: the
    /// URL's host).
    pub server_name: Option<String>,
}

/// Exporter settings.
#[derive(Clone, Debug)]
pub struct ExporterConfig {
    /// Collector URL: `http://host:port` (plaintext) or `https://host:port`.
    pub collector: String,
    /// This sensor's id.
    pub sensor_id: String,
    /// mTLS (required for `https://`).
    pub tls: Option<ClientTls>,
    /// Records per batch.
    pub batch_flows: usize,
    /// Longest a record waits in an open batch.
    pub batch_delay: Duration,
    /// Unacknowledged batches in flight on a stream.
    pub window: usize,
    /// Longest wait between reconnection attempts.
    pub backoff_max: Duration,
    /// The spool.
    pub spool: SpoolConfig,
    /// The attestation key's file (made there if missing): every batch is
    /// signed with it. `None`: batches are not attested.
    pub attestation_key: Option<PathBuf>,
}

impl ExporterConfig {
    /// Defaults for a collector URL, sensor id and spool directory.
    pub fn new(collector: String, sensor_id: String, spool_dir: PathBuf) -> ExporterConfig {
        ExporterConfig {
            collector,
            sensor_id,
            tls: None,
            batch_flows: 2048,
            batch_delay: Duration::from_millis(250),
            window: 32,
            backoff_max: Duration::from_secs(10),
            attestation_key: Some(spool_dir.join(ATTESTATION_KEY)),
            spool: SpoolConfig::new(spool_dir),
        }
    }
}

/// The attestation key's file name in the spool directory, by default.
pub const ATTESTATION_KEY: &str = "attestation-key.pem";

/// The exporter failed.
#[derive(Debug, Error)]
pub enum ExportError {
    /// The attestation key could not be read or made.
    #[error("attestation key: {0}")]
    Key(#[from] vigil_proto::keys::KeyError),
    /// The spool failed.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The collector URL or TLS settings are unusable.
    #[error("collector {url}: {problem}")]
    Config {
        /// The URL.
        url: String,
        /// What is wrong.
        problem: String,
    },
    /// A TLS file could not be read.
    #[error("reading {path}: {source}")]
    TlsFile {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The collector refused this sensor's identity.
    #[error("collector refused the sensor: {0}")]
    Refused(String),
}

/// The open batch.
#[derive(Debug, Default)]
struct Builder {
    buf: Vec<u8>,
    flows: u32,
    opened: Option<Instant>,
    /// The leaf hashes of its records (attested batches).
    leaves: Vec<merkle::Hash>,
}

/// Counters of the exporter itself.
#[derive(Debug, Default)]
pub struct ExportCounters {
    /// Batches appended to the spool.
    pub batches: AtomicU64,
    /// Batches acknowledged (stored or duplicate).
    pub acked: AtomicU64,
    /// Acknowledged as duplicates (resent after a lost ack).
    pub duplicates: AtomicU64,
    /// Batches the collector rejected as invalid (dropped).
    pub rejected: AtomicU64,
    /// Streams opened.
    pub connects: AtomicU64,
    /// Times the collector refused this sensor (`PERMISSION_DENIED`,
    /// `UNAUTHENTICATED`); each is retried with backoff.
    pub refusals: AtomicU64,
    /// Times the collector reported that this sensor id's sequence
    /// numbers started again: it held batches of the id under another
    /// spool incarnation (this spool is new, or another host uses the id).
    pub seq_resets: AtomicU64,
    /// A stream to the collector is open now.
    pub connected: AtomicBool,
}

#[derive(Debug)]
struct Shared {
    cfg: ExporterConfig,
    spool: Mutex<Spool>,
    builder: Mutex<Builder>,
    appended: Notify,
    acked: watch::Sender<u64>,
    stop: AtomicBool,
    stop_notify: Notify,
    live: Arc<LiveCounters>,
    counters: ExportCounters,
    run_id: u64,
    /// The spool's incarnation, sent with every batch.
    incarnation: u64,
    /// The attestation key.
    key: Option<KeyFile>,
    /// The collector's refusal while it lasts (cleared by the next ack).
    refused: Mutex<Option<String>>,
    /// Time from sending a batch to its ack, µs.
    ack_latency: Mutex<Histogram<u64>>,
}

impl Shared {
    fn refused(&self) -> Option<String> {
        self.refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn spool(&self) -> MutexGuard<'_, Spool> {
        self.spool.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn builder(&self) -> MutexGuard<'_, Builder> {
        self.builder.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends the open batch to the spool if `force` or it is full or
    /// old; its fsync (as the policy says) after every lock is released.
    fn flush(&self, force: bool) -> Result<(), SpoolError> {
        let flush = {
            let mut b = self.builder();
            let due = b.flows as usize >= self.cfg.batch_flows
                || b.opened
                    .is_some_and(|t| t.elapsed() >= self.cfg.batch_delay);
            if b.flows == 0 || !(force || due) {
                return Ok(());
            }
            self.spool_batch(&mut b)?
        };
        flush.run()
    }

    /// Appends the (non-empty) open batch to the spool and starts a new
    /// one; returns the flush due, to be run without the locks (a slow
    /// disk's fsync then holds neither the next appends nor the sender's
    /// reads).
    fn spool_batch(&self, b: &mut Builder) -> Result<Flush, SpoolError> {
        let flush = {
            let mut spool = self.spool();
            if let Some(key) = &self.key {
                // Signed with the seq the spool gives it next (under its
                // lock), so that every replay carries this signature.
                let st = Statement {
                    sensor_id: self.cfg.sensor_id.clone(),
                    incarnation: self.incarnation,
                    seq: spool.next_seq(),
                    size: u64::from(b.flows),
                    root: merkle::root(&b.leaves),
                };
                let sig = key.sign(&st.to_bytes());
                prost::encoding::bytes::encode(6, &sig.to_vec(), &mut b.buf);
                let public = key.verifying_key().to_bytes();
                prost::encoding::bytes::encode(7, &public.to_vec(), &mut b.buf);
            }
            spool.append(&b.buf, b.flows)?;
            spool.take_flush(false)
        };
        self.counters.batches.fetch_add(1, Ordering::Relaxed);
        b.buf.clear();
        b.leaves.clear();
        b.flows = 0;
        b.opened = None;
        self.appended.notify_one();
        Ok(flush)
    }

    fn stats(&self) -> pb::SensorStats {
        let l = &self.live;
        let sp = self.spool().stats();
        pb::SensorStats {
            run_id: self.run_id,
            packets: l.packets.load(Ordering::Relaxed),
            bytes: l.bytes.load(Ordering::Relaxed),
            kernel_drops: l.kernel_drops.load(Ordering::Relaxed),
            decode_errors: l
                .decode_errors_by_reason()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            channel_full_drops: l.handoff_drops.load(Ordering::Relaxed),
            flows_evicted: l.evicted.load(Ordering::Relaxed),
            spool_bytes: sp.bytes,
            spool_dropped_batches: sp.dropped_batches,
            spool_dropped_flows: sp.dropped_flows,
            non_ip: l.non_ip.load(Ordering::Relaxed),
            spool_corrupt_records: sp.corrupt_records,
            app_flows: l.app_flows.load(Ordering::Relaxed),
            app_payloads: l.app_payloads.load(Ordering::Relaxed),
            app_errors: l
                .app_errors_by_reason()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        }
    }
}

/// A batch is closed once its flows take this many bytes, whatever
/// `batch_flows`: well under the collector's default message limit (4 MiB).
pub const MAX_BATCH_BYTES: usize = 2 << 20;

/// The handle the pipeline's sink thread pushes records into.
#[derive(Clone, Debug)]
pub struct ExportSink(Arc<Shared>);

impl ExportSink {
    /// Adds records to the open batch, spooling full batches.
    pub fn push(&self, recs: &[FlowRecord]) -> io::Result<()> {
        let s = &self.0;
        let mut flushes = Vec::new();
        {
            let mut b = s.builder();
            for r in recs {
                // The record's own bytes (after its tag and length) are
                // its leaf when batches are attested.
                let f = pb::Flow::from(r);
                encode_key(3, WireType::LengthDelimited, &mut b.buf);
                encode_varint(f.encoded_len() as u64, &mut b.buf);
                let start = b.buf.len();
                f.encode_raw(&mut b.buf);
                if s.key.is_some() {
                    let leaf = merkle::leaf_hash(&b.buf[start..]);
                    b.leaves.push(leaf);
                }
                b.flows += 1;
                b.opened.get_or_insert_with(Instant::now);
                if b.flows as usize >= s.cfg.batch_flows || b.buf.len() >= MAX_BATCH_BYTES {
                    flushes.push(s.spool_batch(&mut b).map_err(io::Error::other)?);
                }
            }
        }
        for f in flushes {
            f.run().map_err(io::Error::other)?;
        }
        Ok(())
    }
}

/// The exporter's figures, read at any time (see [`Exporter::monitor`]).
#[derive(Clone, Debug)]
pub struct ExportMonitor(Arc<Shared>);

impl ExportMonitor {
    /// The exporter's counters.
    pub fn counters(&self) -> &ExportCounters {
        &self.0.counters
    }

    /// Spool counters now.
    pub fn spool_stats(&self) -> super::spool::SpoolStats {
        self.0.spool().stats()
    }

    /// Batches in the spool not yet acknowledged.
    pub fn pending_batches(&self) -> u64 {
        self.0.spool().pending()
    }

    /// Send-to-ack latency of every batch acknowledged so far, µs.
    pub fn ack_latency_us(&self) -> Histogram<u64> {
        self.0
            .ack_latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Why the collector refuses this sensor, while it does.
    pub fn refused(&self) -> Option<String> {
        self.0.refused()
    }

    /// The collector's URL.
    pub fn collector(&self) -> &str {
        &self.0.cfg.collector
    }
}

/// What [`Exporter::drain`] achieved.
#[derive(Clone, Debug)]
pub struct DrainReport {
    /// Send-to-ack latency of every batch acknowledged in this run, µs.
    pub ack_latency_us: Histogram<u64>,
    /// Batches still unacknowledged (kept in the spool).
    pub pending: u64,
    /// Highest acknowledged seq.
    pub acked: u64,
    /// Batches the collector rejected as invalid (dropped) in this run.
    pub rejected: u64,
    /// Times the collector reported this sensor id's sequence numbers
    /// started again (see [`ExportCounters::seq_resets`]) in this run.
    pub seq_resets: u64,
    /// The spool's incarnation.
    pub incarnation: u64,
}

/// A running exporter.
#[derive(Debug)]
pub struct Exporter {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Exporter {
    /// Opens the spool and starts the sender on the current tokio runtime.
    pub fn start(cfg: ExporterConfig, live: Arc<LiveCounters>) -> Result<Exporter, ExportError> {
        // Checked now (a bad URL or TLS file fails the start); made again
        // at every connection, so that rotated TLS files are read.
        endpoint(&cfg)?;
        let key = match &cfg.attestation_key {
            Some(path) => {
                let k = KeyFile::load_or_create(path)?;
                tracing::info!(path = %path.display(), key = %k.fingerprint(), "batches are attested with this key");
                Some(k)
            }
            None => None,
        };
        let spool = Spool::open(cfg.spool.clone())?;
        let (acked, _) = watch::channel(spool.acked());
        let incarnation = spool.incarnation();
        let shared = Arc::new(Shared {
            cfg,
            spool: Mutex::new(spool),
            builder: Mutex::new(Builder::default()),
            appended: Notify::new(),
            acked,
            stop: AtomicBool::new(false),
            stop_notify: Notify::new(),
            live,
            counters: ExportCounters::default(),
            run_id: super::random_u64(),
            incarnation,
            key,
            refused: Mutex::new(None),
            ack_latency: Mutex::new(
                Histogram::new_with_bounds(1, 3_600_000_000, 3)
                    .unwrap_or_else(|_| Histogram::new(3).expect("histogram")),
            ),
        });
        let task = tokio::spawn(sender(shared.clone()));
        Ok(Exporter { shared, task })
    }

    /// The sink for the pipeline.
    pub fn sink(&self) -> ExportSink {
        ExportSink(self.shared.clone())
    }

    /// The exporter's counters.
    pub fn counters(&self) -> &ExportCounters {
        &self.shared.counters
    }

    /// A handle on the exporter's figures that outlives neither the
    /// process nor the figures (for the metrics endpoint).
    pub fn monitor(&self) -> ExportMonitor {
        ExportMonitor(self.shared.clone())
    }

    /// Why the collector refuses this sensor, while it does: the sender
    /// keeps retrying (a certificate being rotated, a collector being
    /// reconfigured) and the batches wait in the spool.
    pub fn refused(&self) -> Option<String> {
        self.shared.refused()
    }

    /// Spool counters now.
    pub fn spool_stats(&self) -> super::spool::SpoolStats {
        self.shared.spool().stats()
    }

    /// Spools the open batch, waits up to `timeout` for every batch to be
    /// acknowledged (a refusal may clear meanwhile: the sender keeps
    /// retrying), then stops the sender and closes the spool. What is not
    /// acknowledged stays in the spool for the next start;
    /// [`ExportError::Refused`] if the collector still refused the sensor.
    pub async fn drain(self, timeout: Duration) -> Result<DrainReport, ExportError> {
        self.shared.flush(true)?;
        let target = self.shared.spool().next_seq().saturating_sub(1);
        let mut rx = self.shared.acked.subscribe();
        let wait = async {
            loop {
                if *rx.borrow_and_update() >= target {
                    break;
                }
                if rx.changed().await.is_err() {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(timeout, wait).await;
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.stop_notify.notify_waiters();
        self.shared.appended.notify_one();
        let _ = self.task.await;
        let mut spool = self.shared.spool();
        spool.close()?;
        if let Some(f) = self.shared.refused() {
            return Err(ExportError::Refused(f));
        }
        Ok(DrainReport {
            ack_latency_us: self
                .shared
                .ack_latency
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            pending: spool.pending(),
            acked: spool.acked(),
            seq_resets: self.shared.counters.seq_resets.load(Ordering::Relaxed),
            incarnation: self.shared.incarnation,
            rejected: self.shared.counters.rejected.load(Ordering::Relaxed),
        })
    }
}

fn endpoint(cfg: &ExporterConfig) -> Result<Endpoint, ExportError> {
    let bad = |problem: String| ExportError::Config {
        url: cfg.collector.clone(),
        problem,
    };
    let https = cfg.collector.starts_with("https://");
    if !https && !cfg.collector.starts_with("http://") {
        return Err(bad("expected http://HOST:PORT or https://HOST:PORT".into()));
    }
    let mut ep = Endpoint::from_shared(cfg.collector.clone())
        .map_err(|e| bad(e.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(20));
    match (&cfg.tls, https) {
        (Some(t), true) => {
            let read = |p: &PathBuf| {
                std::fs::read(p).map_err(|source| ExportError::TlsFile {
                    path: p.clone(),
                    source,
                })
            };
            let mut tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(read(&t.ca)?))
                .identity(Identity::from_pem(read(&t.cert)?, read(&t.key)?));
            if let Some(n) = &t.server_name {
                tls = tls.domain_name(n.clone());
            }
            ep = ep.tls_config(tls).map_err(|e| bad(e.to_string()))?;
        }
        (None, true) => {
            return Err(bad(
                "https:// needs --tls-ca, --tls-cert and --tls-key".into()
            ));
        }
        (Some(_), false) => {
            return Err(bad(
                "TLS files given for a plaintext http:// URL; use https://".into(),
            ));
        }
        (None, false) => {}
    }
    Ok(ep)
}

/// Sends raw, already-encoded `FlowBatch` bytes; decodes `Ack`s.
#[derive(Clone, Copy, Debug, Default)]
struct RawCodec;

#[derive(Clone, Copy, Debug, Default)]
struct RawEncoder;

#[derive(Clone, Copy, Debug, Default)]
struct AckDecoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for AckDecoder {
    type Item = pb::Ack;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<pb::Ack>, Status> {
        pb::Ack::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("undecodable ack: {e}")))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = pb::Ack;
    type Encoder = RawEncoder;
    type Decoder = AckDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> AckDecoder {
        AckDecoder
    }
}

/// Why a stream ended.
enum StreamEnd {
    /// Asked to stop.
    Stopped,
    /// The connection or the collector failed; retry.
    Retry(String),
    /// The collector refused the sensor; retry with backoff.
    Refused(String),
}

/// How often a refusal that lasts is logged again.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);

async fn sender(shared: Arc<Shared>) {
    let mut backoff = Duration::from_millis(100);
    let mut last_error = String::new();
    let mut refusal_logged: Option<(String, Instant)> = None;
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        // The TLS files are read again for every connection after the
        // first, so that a rotated certificate is taken up without a
        // restart.
        let end = match endpoint(&shared.cfg) {
            Ok(ep) => match ep.connect().await {
                Ok(ch) => {
                    let end = stream(&shared, ch).await;
                    shared.counters.connected.store(false, Ordering::Relaxed);
                    end
                }
                Err(e) => StreamEnd::Retry(format!("connecting: {}", error_chain(&e))),
            },
            Err(e) => StreamEnd::Retry(e.to_string()),
        };
        // Batches the size bound dropped while in flight on that stream
        // and never acknowledged on it: lost, counted now.
        shared.spool().stream_ended();
        match end {
            StreamEnd::Stopped => return,
            StreamEnd::Refused(msg) => {
                shared.counters.refusals.fetch_add(1, Ordering::Relaxed);
                let due = refusal_logged
                    .as_ref()
                    .is_none_or(|(m, t)| *m != msg || t.elapsed() >= REFUSAL_LOG_EVERY);
                if due {
                    tracing::error!(
                        collector = %shared.cfg.collector,
                        error = %msg,
                        refusals = shared.counters.refusals.load(Ordering::Relaxed),
                        "collector refuses this sensor; retrying with backoff, batches stay in the spool"
                    );
                    refusal_logged = Some((msg.clone(), Instant::now()));
                }
                *shared.refused.lock().unwrap_or_else(|p| p.into_inner()) = Some(msg);
                shared.acked.send_modify(|_| {});
            }
            StreamEnd::Retry(msg) => {
                if msg != last_error {
                    tracing::warn!(collector = %shared.cfg.collector, error = %msg, retry_in_ms = backoff.as_millis() as u64, "stream to the collector ended; batches wait in the spool");
                    last_error = msg;
                }
            }
        }
        // Keep batching and syncing while disconnected.
        let jitter =
            Duration::from_millis(super::random_u64() % (backoff.as_millis() as u64 / 4 + 1));
        let until = tokio::time::Instant::now() + backoff + jitter;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => break,
                _ = ticker.tick() => maintain(&shared),
                _ = shared.stop_notify.notified() => return,
            }
        }
        backoff = (backoff * 2).min(shared.cfg.backoff_max);
    }
}

fn maintain(shared: &Shared) {
    if let Err(e) = shared.flush(false) {
        tracing::error!(error = %e, "spooling a batch failed");
    }
    // Taken under the lock, run without it.
    let flush = shared.spool().take_flush(false);
    if let Err(e) = flush.run() {
        tracing::error!(error = %e, "spool maintenance failed");
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// Builds the wire message: header fields, then the spooled flows.
fn message(shared: &Shared, seq: u64, payload: &[u8]) -> Vec<u8> {
    let header = pb::FlowBatch {
        sensor_id: shared.cfg.sensor_id.clone(),
        seq,
        flows: Vec::new(),
        stats: Some(shared.stats()),
        incarnation: shared.incarnation,
        // In the spooled payload, signed when spooled.
        signature: Vec::new(),
        public_key: Vec::new(),
    };
    let mut buf = Vec::with_capacity(header.encoded_len() + payload.len());
    // Cannot fail: the Vec grows.
    let _ = header.encode(&mut buf);
    buf.extend_from_slice(payload);
    buf
}

async fn stream(shared: &Arc<Shared>, channel: Channel) -> StreamEnd {
    let (tx, rx) = mpsc::channel::<Vec<u8>>(shared.cfg.window.max(1));
    let mut grpc = tonic::client::Grpc::new(channel)
        .max_encoding_message_size(usize::MAX)
        .max_decoding_message_size(1 << 20);
    if let Err(e) = grpc.ready().await {
        return StreamEnd::Retry(format!("connection not ready: {e}"));
    }
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/vigil.v1.Ingest/Stream");
    let mut acked = shared.spool().acked();
    let mut next = acked + 1;
    // Send the first batch (or nothing) before awaiting the response, so
    // a server that answers only once data flows is not deadlocked.
    let resp = grpc.streaming(tonic::Request::new(ReceiverStream::new(rx)), path, RawCodec);
    let mut sent: VecDeque<(u64, Instant)> = VecDeque::new();
    let fill = |next: &mut u64,
                acked: u64,
                tx: &mpsc::Sender<Vec<u8>>,
                sent: &mut VecDeque<(u64, Instant)>|
     -> Result<(), StreamEnd> {
        while *next - acked - 1 < shared.cfg.window as u64 {
            let b = match shared.spool().read_from(*next) {
                Ok(Some(b)) => b,
                Ok(None) => break,
                Err(e) => return Err(StreamEnd::Retry(format!("reading the spool: {e}"))),
            };
            if b.seq > *next {
                tracing::warn!(
                    from = *next,
                    to = b.seq,
                    "spool dropped batches before they were sent"
                );
            }
            let msg = message(shared, b.seq, &b.payload);
            match tx.try_send(msg) {
                Ok(()) => {
                    shared.spool().sent(b.seq);
                    *next = b.seq + 1;
                    sent.push_back((b.seq, Instant::now()));
                }
                Err(_) => break,
            }
        }
        Ok(())
    };
    if let Err(e) = fill(&mut next, acked, &tx, &mut sent) {
        return e;
    }
    let mut acks = match resp.await {
        Ok(r) => r.into_inner(),
        Err(s) => return status_end(shared, s, acked),
    };
    shared.counters.connects.fetch_add(1, Ordering::Relaxed);
    shared.counters.connected.store(true, Ordering::Relaxed);
    tracing::info!(collector = %shared.cfg.collector, resume_after = acked, "streaming to the collector");
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    loop {
        if let Err(e) = fill(&mut next, acked, &tx, &mut sent) {
            return e;
        }
        if shared.stop.load(Ordering::Relaxed) {
            return StreamEnd::Stopped;
        }
        tokio::select! {
            m = acks.message() => match m {
                Ok(Some(ack)) => {
                    if ack.seq < next && ack.seq > acked {
                        acked = ack.seq;
                        let cleared = shared.refused.lock().unwrap_or_else(|p| p.into_inner()).take();
                        if let Some(was) = cleared {
                            tracing::info!(collector = %shared.cfg.collector, was = %was, "collector accepts this sensor again");
                        }
                        if let Err(e) = shared.spool().ack(ack.seq) {
                            tracing::error!(error = %e, "recording an ack in the spool failed");
                        }
                        shared.counters.acked.fetch_add(1, Ordering::Relaxed);
                        if ack.duplicate {
                            shared.counters.duplicates.fetch_add(1, Ordering::Relaxed);
                        }
                        if ack.seq_reset {
                            shared.counters.seq_resets.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(
                                collector = %shared.cfg.collector,
                                sensor = %shared.cfg.sensor_id,
                                incarnation = %format_args!("{:016x}", shared.incarnation),
                                seq = ack.seq,
                                "the collector holds batches of this sensor id from another spool: \
                                 sequence numbers started again (a new spool, or another host with this id); \
                                 both are stored"
                            );
                        }
                        shared.acked.send_replace(acked);
                        let mut h = shared.ack_latency.lock().unwrap_or_else(|p| p.into_inner());
                        while let Some(&(seq, t)) = sent.front() {
                            if seq > ack.seq {
                                break;
                            }
                            sent.pop_front();
                            if seq == ack.seq {
                                let _ = h.record(t.elapsed().as_micros().max(1) as u64);
                            }
                        }
                    }
                }
                Ok(None) => return StreamEnd::Retry("the collector closed the stream".into()),
                Err(s) => return status_end(shared, s, acked),
            },
            _ = shared.appended.notified() => {}
            _ = ticker.tick() => maintain(shared),
            _ = shared.stop_notify.notified() => return StreamEnd::Stopped,
        }
    }
}

/// The batch the collector says it refused for its content, if it does.
fn rejected_seq(s: &Status) -> Option<u64> {
    s.metadata()
        .get("vigil-rejected-seq")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Decides what a status from the collector means for the batch after `acked`.
fn status_end(shared: &Shared, s: Status, acked: u64) -> StreamEnd {
    match s.code() {
        Code::PermissionDenied | Code::Unauthenticated => {
            StreamEnd::Refused(s.message().to_string())
        }
        Code::InvalidArgument if rejected_seq(&s) == Some(acked + 1) => {
            // The collector refused the content of this batch (a flow, the
            // flow count): resending it would be refused again. It is
            // dropped and counted; nothing else is.
            let seq = acked + 1;
            tracing::error!(seq, error = %s.message(), "the collector rejected a batch; it is dropped");
            shared.counters.rejected.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = shared.spool().ack(seq) {
                tracing::error!(error = %e, "recording a rejected batch failed");
            }
            shared.acked.send_replace(seq);
            StreamEnd::Retry(format!(
                "batch {seq} rejected, reconnecting: {}",
                s.message()
            ))
        }
        // A problem of the stream, not of a batch's content (a message the
        // collector could not read or would not take, a sequence or
        // identity problem): the batches stay spooled and are retried,
        // loudly, until it clears.
        Code::InvalidArgument => StreamEnd::Refused(s.message().to_string()),
        _ => StreamEnd::Retry(format!("{:?}: {}", s.code(), s.message())),
    }
}
