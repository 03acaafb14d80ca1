//! The `Ingest` gRPC service: one task per sensor stream. Each batch is
//! validated ([`crate::ingest`]), committed by the writer, and
//! acknowledged only after the commit; a stream's batches are committed in
//! order, and acknowledged in that order while the next ones are
//! validated. A rejected batch ends that stream with a status naming the
//! problem; other streams are untouched. A storage failure ends the stream
//! with `UNAVAILABLE`, so the sensor keeps the batch and sends it again.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use prost::Message as _;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};
use vigil_proto::pb;
use vigil_proto::pb::ingest_server::Ingest;

use super::Shared;
use super::access::{Principal, refused};
use super::failure::Failure;
use super::metrics::BatchResult;
use super::writer::{Committed, Job, Outcome, StreamFate};
use crate::evidence::{KeyCheck, KeyRefusal};
use crate::ingest::{MAX_INFLIGHT_PER_STREAM, StreamState, validate};
use crate::model::ingest::CommitOutcome;

/// The service: shared state and the writer's queue.
#[derive(Clone, Debug)]
pub struct IngestSvc {
    pub(super) shared: Arc<Shared>,
    pub(super) jobs: mpsc::Sender<Job>,
}

type AckStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::Ack, Status>> + Send>>;

/// What the collector knows of a sensor id's live streams.
#[derive(Clone, Debug, Default)]
pub struct Live {
    /// Open streams per spool incarnation.
    pub streams: HashMap<u64, usize>,
    /// Times a stream opened while one of another incarnation was open.
    pub conflicts: u64,
}

impl Live {
    /// Whether a stream of the sensor is open.
    pub fn connected(&self) -> bool {
        !self.streams.is_empty()
    }
}

/// Per sensor id: its open streams (a sensor is connected while it has
/// one) and the id conflicts seen.
pub type Connected = Mutex<HashMap<String, Live>>;

/// Marks a sensor connected while a stream of it is open.
struct ConnectedGuard {
    shared: Arc<Shared>,
    sensor: String,
    incarnation: u64,
}

impl ConnectedGuard {
    /// Registers the stream; reports two live incarnations of one id.
    fn new(shared: Arc<Shared>, sensor: String, incarnation: u64, peer: &str) -> ConnectedGuard {
        let mut c = shared.connected.lock().unwrap_or_else(|p| p.into_inner());
        let live = c.entry(sensor.clone()).or_default();
        let others: Vec<String> = live
            .streams
            .keys()
            .filter(|i| **i != incarnation)
            .map(|i| format!("{i:016x}"))
            .collect();
        if !others.is_empty() {
            live.conflicts += 1;
            tracing::warn!(
                %peer,
                %sensor,
                incarnation = %format_args!("{incarnation:016x}"),
                open = %others.join(", "),
                "sensor id conflict: a stream of another spool incarnation of this id is open \
                 (two hosts with one sensor id, or a copied configuration); both are stored, \
                 each deduplicated on its own"
            );
        }
        *live.streams.entry(incarnation).or_default() += 1;
        drop(c);
        ConnectedGuard {
            shared,
            sensor,
            incarnation,
        }
    }
}

impl Drop for ConnectedGuard {
    fn drop(&mut self) {
        let mut c = self
            .shared
            .connected
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(live) = c.get_mut(&self.sensor)
            && let Some(n) = live.streams.get_mut(&self.incarnation)
        {
            *n -= 1;
            if *n == 0 {
                live.streams.remove(&self.incarnation);
            }
        }
        tracing::info!(sensor = %self.sensor, "sensor stream closed");
    }
}

/// Counts an ingest stream open while it lives.
struct StreamGauge(Arc<Shared>);

impl StreamGauge {
    fn new(shared: Arc<Shared>) -> StreamGauge {
        shared.metrics.streams_active.inc();
        shared.metrics.streams_total.inc();
        StreamGauge(shared)
    }
}

impl Drop for StreamGauge {
    fn drop(&mut self) {
        self.0.metrics.streams_active.dec();
    }
}

/// A batch in commit: its seq, its flows, where its outcome comes, and
/// its share of the in-flight bytes (returned once it is answered).
type Pending = (u64, u64, oneshot::Receiver<Outcome>, OwnedSemaphorePermit);

/// Answers a stream's batches in order, as their commits end; ends the
/// stream at the first batch not stored.
async fn acker(
    shared: Arc<Shared>,
    mut pending: mpsc::Receiver<Pending>,
    tx: mpsc::Sender<Result<pb::Ack, Status>>,
    peer: String,
) {
    let m = &shared.metrics;
    while let Some((seq, flows, reply, _inflight)) = pending.recv().await {
        let failure = match reply.await {
            Ok(Ok(CommitOutcome::Stored { gap, reset })) => {
                m.batch(BatchResult::Stored);
                m.flows_stored.inc_by(flows);
                if reset {
                    tracing::warn!(
                        %peer,
                        seq,
                        "sequence reset: the sensor's batches come from a new spool incarnation \
                         (its spool was lost or replaced, or another host uses its id); stored"
                    );
                }
                if gap > 0 {
                    tracing::warn!(
                        %peer,
                        seq,
                        missing = gap,
                        "sequence gap: batches the sensor's spool dropped"
                    );
                }
                if tx
                    .send(Ok(pb::Ack {
                        seq,
                        duplicate: false,
                        seq_reset: reset,
                    }))
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
            Ok(Ok(CommitOutcome::Duplicate)) => {
                m.batch(BatchResult::Duplicate);
                if tx
                    .send(Ok(pb::Ack {
                        seq,
                        duplicate: true,
                        seq_reset: false,
                    }))
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
            Ok(Ok(CommitOutcome::Fenced)) => Failure::handover(
                "another collector took this sensor over since the stream opened: send again",
            ),
            // Logged once for the group by the writer.
            Ok(Err(e)) => {
                m.batch(BatchResult::Failed);
                let _ = tx.send(Err(Failure::from(&*e).status())).await;
                return;
            }
            Err(_) => Failure::bug("the writer stopped"),
        };
        m.batch(BatchResult::Failed);
        failure.log("batch not stored: stream ended", &peer);
        let _ = tx.send(Err(failure.status())).await;
        return;
    }
}

#[tonic::async_trait]
impl Ingest for IngestSvc {
    type StreamStream = AckStream;

    async fn stream(
        &self,
        req: Request<Streaming<pb::FlowBatch>>,
    ) -> Result<Response<AckStream>, Status> {
        let remote = req.remote_addr();
        let principal = match Principal::of(&req) {
            Ok(p) => p,
            Err(f) => {
                refused(
                    &self.shared,
                    "ingest",
                    remote,
                    "an unreadable client certificate",
                    &f,
                );
                return Err(f.status());
            }
        };
        let identities = match &principal {
            Principal::Certified(ids) => Some(ids.clone()),
            _ => None,
        };
        let peer = remote.map_or_else(|| "unknown".to_string(), |a| a.to_string());
        let certificate = super::tls::peer_fingerprint(&req);
        let Ok(slot) = self.shared.stream_slots.clone().try_acquire_owned() else {
            self.shared.metrics.streams_refused.inc();
            let f = Failure::peer(
                Code::ResourceExhausted,
                "too many ingest streams open (limits.max_streams): retry later",
            );
            f.log("stream refused", &peer);
            return Err(f.status());
        };
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel::<Result<pb::Ack, Status>>(64);
        let shared = self.shared.clone();
        let jobs = self.jobs.clone();
        let gauge = StreamGauge::new(shared.clone());
        let (pending_tx, pending_rx) = mpsc::channel::<Pending>(MAX_INFLIGHT_PER_STREAM);
        let acker = tokio::spawn(acker(shared.clone(), pending_rx, tx.clone(), peer.clone()));
        tokio::spawn(async move {
            let _gauge = gauge;
            let _slot = slot;
            let mut st = StreamState::default();
            let mut connected: Option<ConnectedGuard> = None;
            let fate = Arc::new(StreamFate::default());
            // Why the stream ends early, if it does.
            let mut refusal: Option<Failure> = None;
            loop {
                let msg = match inbound.message().await {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(status) => {
                        refusal = Some(Failure::peer(
                            Code::InvalidArgument,
                            format!("unreadable message: {}", status.message()),
                        ));
                        break;
                    }
                };
                // Its share of the in-flight budget, before it is decoded
                // further: waits while other batches hold it.
                let cap = u32::try_from(shared.limits.max_inflight_bytes).unwrap_or(u32::MAX);
                let cost = u32::try_from(msg.encoded_len())
                    .unwrap_or(u32::MAX)
                    .clamp(1, cap.max(1));
                let Ok(inflight) = shared.inflight.clone().acquire_many_owned(cost).await else {
                    break;
                };
                let mut batch = match validate(
                    msg,
                    &mut st,
                    identities.as_deref(),
                    &shared.limits,
                    vigil_proto::time::now_ns(),
                ) {
                    Ok(b) => b,
                    Err(rej) => {
                        refusal = Some(Failure::from(&rej));
                        break;
                    }
                };
                match shared.sensor_keys.check(&mut batch) {
                    Ok(KeyCheck::Attested) => {
                        shared.metrics.attested_batches.inc();
                    }
                    Ok(KeyCheck::Unattested) => {}
                    Ok(KeyCheck::BadSignature(why)) => {
                        shared.metrics.attestation_failures.inc();
                        tracing::error!(
                            %peer,
                            sensor = %batch.sensor_id,
                            seq = batch.seq,
                            "batch attestation does not hold ({why}): stored, but not attested"
                        );
                    }
                    Err(KeyRefusal { why, first }) => {
                        shared.metrics.key_refusals.inc();
                        if first {
                            tracing::error!(%peer, sensor = %batch.sensor_id, "{why}");
                            if let Some(d) = shared.detect.get() {
                                let c = Committed::KeyChanged(
                                    batch.sensor_id.clone(),
                                    why.clone(),
                                    vigil_proto::time::now_ns(),
                                );
                                // Full: detection is behind; the refusal
                                // is logged and counted all the same.
                                let _ = d.try_send(c);
                            }
                        }
                        refusal = Some(Failure::peer(Code::PermissionDenied, why));
                        break;
                    }
                }
                let opens_stream = connected.is_none();
                if opens_stream
                    && let Err(f) = shared.access.may_stream(&principal, &batch.sensor_id)
                {
                    refusal = Some(f);
                    break;
                }
                if opens_stream {
                    batch.certificate = certificate.clone();
                    tracing::info!(%peer, sensor = %batch.sensor_id, "sensor stream opened");
                    connected = Some(ConnectedGuard::new(
                        shared.clone(),
                        batch.sensor_id.clone(),
                        batch.incarnation,
                        &peer,
                    ));
                }
                let (seq, flows) = (batch.seq, batch.flows.len() as u64);
                let (reply, reply_rx) = oneshot::channel();
                let job = Job {
                    batch,
                    opens_stream,
                    reply,
                    stream: fate.clone(),
                };
                if jobs.send(job).await.is_err()
                    || pending_tx
                        .send((seq, flows, reply_rx, inflight))
                        .await
                        .is_err()
                {
                    break;
                }
            }
            // Acknowledge what came before, then refuse.
            drop(pending_tx);
            let _ = acker.await;
            if let Some(f) = refusal {
                shared.metrics.batch(BatchResult::Rejected);
                if matches!(
                    f.status().code(),
                    Code::PermissionDenied | Code::Unauthenticated
                ) {
                    refused(&shared, "ingest", remote, &principal.describe(), &f);
                }
                let who = st.sensor_id.as_deref().unwrap_or(&peer);
                f.log("batch rejected: stream ended", who);
                let _ = tx.send(Err(f.status())).await;
            }
            drop(connected);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
