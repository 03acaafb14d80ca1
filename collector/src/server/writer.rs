//! The writer thread: group commit. It takes every batch waiting, from all
//! streams (up to the store's [`IngestStore::group_flows`]), commits them
//! in one transaction, then answers each and hands the stored ones to
//! detection. One writer, because SQLite has one.

use std::sync::Arc;
use std::sync::mpsc::SyncSender;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use vigil_proto::FlowRecord;

use super::failure::Failure;
use super::metrics::Metrics;
use crate::model::ingest::{CommitOutcome, IngestBatch};
use crate::store::{IngestStore, StoreError};

/// A batch for the writer, and where its outcome goes.
#[derive(Debug)]
pub struct Job {
    /// The validated batch.
    pub batch: IngestBatch,
    /// The first batch of its stream (see [`IngestStore::streams_opened`]).
    pub opens_stream: bool,
    /// The commit's outcome, or the store's error (shared by the group).
    pub reply: oneshot::Sender<Result<CommitOutcome, Arc<StoreError>>>,
}

/// What detection is handed.
#[derive(Debug)]
pub enum Committed {
    /// A committed batch's flows: (sensor id, records, arrival at the
    /// collector in ns).
    Flows(String, Vec<FlowRecord>, u64),
    /// A sensor refused for signing with another key than its known one:
    /// (sensor id, why, collector time in ns).
    KeyChanged(String, String, u64),
}

/// Runs until every sender of `rx` is gone.
pub fn run(
    store: Arc<dyn IngestStore>,
    metrics: Arc<Metrics>,
    mut rx: mpsc::Receiver<Job>,
    detect: Option<SyncSender<Committed>>,
) {
    let group_flows = store.group_flows();
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
        let res = store.streams_opened(&opened).and_then(|()| {
            let batches: Vec<&IngestBatch> = jobs.iter().map(|j| &j.batch).collect();
            store.commit_many(&batches)
        });
        metrics.commit_seconds.observe(t0.elapsed().as_secs_f64());
        match res {
            Ok(outcomes) => {
                let mut stored = Vec::new();
                for (job, outcome) in jobs.into_iter().zip(outcomes) {
                    let _ = job.reply.send(Ok(outcome));
                    if matches!(outcome, CommitOutcome::Stored { .. }) {
                        stored.push((job.batch.sensor_id, job.batch.flows, job.batch.received_ns));
                    }
                }
                // Detection sees committed flows only, so every alert's
                // evidence is in the store. A slow detector holds the
                // writer back (and the sensors spool) rather than skip.
                if let Some(d) = &detect {
                    for b in stored {
                        if d.send(Committed::Flows(b.0, b.1, b.2)).is_err() {
                            tracing::error!("the detection thread stopped");
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                Failure::from(&e).log(
                    "storing a group of batches failed; their sensors keep them",
                    &format!("{} batches", jobs.len()),
                );
                let e = Arc::new(e);
                for job in jobs {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }
}
