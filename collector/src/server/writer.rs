//! The writer thread: group commit. It takes every batch waiting, from all
//! streams (up to the store's [`IngestStore::group_flows`]), commits them
//! in one transaction, then answers each and hands the stored ones to
//! detection. One writer, because SQLite has one.
//!
//! A stream's batches are stored in its order or not at all: once one of
//! them is not stored, its later batches already waiting here are answered
//! as it was, not committed. (The stores take a batch at or below a
//! sensor's last stored seq for a duplicate; a later batch stored after an
//! earlier one failed would make the earlier one, sent again, a
//! "duplicate", lost.)

use std::sync::mpsc::SyncSender;
use std::sync::{Arc, OnceLock};
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
    pub reply: oneshot::Sender<Outcome>,
    /// Its stream's fate, shared by the stream's batches.
    pub stream: Arc<StreamFate>,
}

/// A commit's answer to a batch.
pub type Outcome = Result<CommitOutcome, Arc<StoreError>>;

/// What became of a stream in the writer: the first answer that was
/// neither stored nor duplicate, if there was one.
#[derive(Debug, Default)]
pub struct StreamFate(OnceLock<Outcome>);

impl StreamFate {
    /// The answer that ended the stream, once one has.
    fn ended(&self) -> Option<&Outcome> {
        self.0.get()
    }

    /// Records `outcome` if it ends the stream (the first such one wins).
    fn answer(&self, outcome: &Outcome) {
        if !matches!(
            outcome,
            Ok(CommitOutcome::Stored { .. } | CommitOutcome::Duplicate)
        ) {
            let _ = self.0.set(outcome.clone());
        }
    }
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
        let mut flows = 0;
        let mut jobs = Vec::new();
        let mut next = Some(first);
        while let Some(j) = next {
            if let Some(ended) = j.stream.ended() {
                // Behind a batch of its stream that was not stored.
                let _ = j.reply.send(ended.clone());
            } else {
                flows += j.batch.flows.len();
                jobs.push(j);
            }
            next = if flows < group_flows {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        if jobs.is_empty() {
            continue;
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
                    job.stream.answer(&Ok(outcome));
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
                let e = Err(Arc::new(e));
                for job in jobs {
                    job.stream.answer(&e);
                    let _ = job.reply.send(e.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::store::SensorRegistry as _;
    use crate::store::sqlite::{SqliteConfig, SqliteStore};
    use crate::testutil::{Rng, batch, record};

    /// The embedded store, whose next commit fails once when told to (as
    /// ClickHouse's did while it restarted).
    struct FailOnce {
        inner: SqliteStore,
        fail: AtomicBool,
    }

    impl IngestStore for FailOnce {
        fn commit_many(&self, b: &[&IngestBatch]) -> Result<Vec<CommitOutcome>, StoreError> {
            if self.fail.swap(false, Ordering::SeqCst) {
                return Err(StoreError::Internal("the store is away"));
            }
            self.inner.commit_many(b)
        }
    }

    /// A batch of a stream that failed is not stored after it, so that the
    /// failed one, sent again on the sensor's next stream, is stored and
    /// not taken for a duplicate (it was lost so: ClickHouse killed, the
    /// stream's next batch committed once it was back).
    #[test]
    fn a_batch_behind_a_failed_one_of_its_stream_is_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(FailOnce {
            inner: SqliteStore::open(dir.path(), SqliteConfig::default()).unwrap(),
            fail: AtomicBool::new(true),
        });
        let (tx, rx) = mpsc::channel(16);
        let writer = {
            let store: Arc<dyn IngestStore> = store.clone();
            std::thread::spawn(move || run(store, Arc::new(Metrics::default()), rx, None))
        };
        let mut rng = Rng(3);
        let send = |stream: &Arc<StreamFate>, seq: u64, opens: bool, rng: &mut Rng| {
            let (reply, answer) = oneshot::channel();
            tx.blocking_send(Job {
                batch: batch("s", seq, vec![record(rng, seq)]),
                opens_stream: opens,
                reply,
                stream: stream.clone(),
            })
            .unwrap();
            answer.blocking_recv().unwrap()
        };
        let first = Arc::new(StreamFate::default());
        assert!(
            send(&first, 1, true, &mut rng).is_err(),
            "the store was away"
        );
        assert!(
            send(&first, 2, false, &mut rng).is_err(),
            "behind a failed batch of its stream: not committed"
        );
        let again = Arc::new(StreamFate::default());
        for seq in [1, 2] {
            assert_eq!(
                send(&again, seq, seq == 1, &mut rng).unwrap(),
                CommitOutcome::Stored {
                    gap: 0,
                    reset: false
                },
                "batch {seq} sent again"
            );
        }
        drop(tx);
        writer.join().unwrap();
        let s = store.inner.sensors().unwrap();
        assert_eq!((s[0].batches, s[0].flows, s[0].seq_gaps), (2, 2, 0));
    }
}
