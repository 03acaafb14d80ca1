//! What ingest hands the store and what the store reports back: a
//! validated batch, the outcome of committing it, what is known of each
//! sensor, and what retention removed.

use vigil_proto::{FlowRecord, pb};

/// A validated batch from one sensor.
#[derive(Clone, Debug)]
pub struct IngestBatch {
    /// The reporting sensor.
    pub sensor_id: String,
    /// The batch's sequence number (≥ 1), counted within `incarnation`.
    pub seq: u64,
    /// The sensor spool's incarnation (0: a sensor that predates them):
    /// dedupe is per (sensor, incarnation).
    pub incarnation: u64,
    /// The flow records.
    pub flows: Vec<FlowRecord>,
    /// The sensor's counters when it sent the batch.
    pub stats: Option<pb::SensorStats>,
    /// Collector time of arrival, ns since the epoch.
    pub received_ns: u64,
    /// The sensor's signature over the batch, verified before the commit
    /// (`None`: not attested).
    pub attestation: Option<Attestation>,
    /// On the first batch of a stream under mTLS: the fingerprint of the
    /// sensor's certificate (`sha256:` and hex), which the store records.
    pub certificate: Option<String>,
}

impl IngestBatch {
    /// The batch signed by `key` as a sensor signs it (for tests and
    /// benchmarks that store attested batches without a sensor); the first
    /// batch of a sensor pins its key.
    pub fn signed_by(mut self, key: &ed25519_dalek::SigningKey) -> IngestBatch {
        use ed25519_dalek::Signer as _;
        let root = vigil_proto::attest::records_root(&self.flows);
        let signature = key.sign(&self.statement(root).to_bytes());
        self.attestation = Some(Attestation {
            public_key: key.verifying_key().to_bytes().to_vec(),
            signature: signature.to_bytes().to_vec(),
            root,
            pin: self.seq == 1,
        });
        self
    }

    /// What its sensor signs for this batch, with `root` over its records.
    pub fn statement(&self, root: vigil_proto::merkle::Hash) -> vigil_proto::attest::Statement {
        vigil_proto::attest::Statement {
            sensor_id: self.sensor_id.clone(),
            incarnation: self.incarnation,
            seq: self.seq,
            size: self.flows.len() as u64,
            root,
        }
    }
}

/// A sensor's attestation of a batch (see `vigil_proto::attest`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attestation {
    /// The sensor's Ed25519 public key, 32 bytes.
    pub public_key: Vec<u8>,
    /// Its signature of the batch statement, 64 bytes.
    pub signature: Vec<u8>,
    /// The Merkle root over the batch's records as decoded.
    pub root: vigil_proto::merkle::Hash,
    /// The first attested batch of the sensor: the store pins its key.
    pub pin: bool,
}

/// What `IngestStore::commit` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Stored, with this many sequence numbers skipped since the previous
    /// batch of the sensor (batches its spool dropped).
    Stored {
        /// Missing sequence numbers before this batch.
        gap: u64,
        /// The first batch stored of a new incarnation of a sensor whose
        /// batches of another incarnation are stored: its sequence
        /// numbers started again.
        reset: bool,
    },
    /// Stored before; nothing written but the duplicate count.
    Duplicate,
    /// Not stored: the batch came on a stream this collector opened before
    /// another collector took the sensor over and fenced this one out (see
    /// `IngestStore::streams_opened`). The stream must end; the sensor sends
    /// the batch again on its next one.
    Fenced,
}

/// What the store knows of a sensor.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SensorRecord {
    /// The sensor's id.
    pub sensor_id: String,
    /// Highest committed sequence number of the latest incarnation.
    pub last_seq: u64,
    /// The incarnation of the latest stored batch.
    pub incarnation: u64,
    /// Incarnations stored beyond the first (sequence number resets).
    pub seq_resets: u64,
    /// Times, since the collector started, two live streams of different
    /// incarnations claimed this id (filled by the server; 0 from a store).
    pub id_conflicts: u64,
    /// Batches stored.
    pub batches: u64,
    /// Flow records stored.
    pub flows: u64,
    /// Duplicate batches dropped.
    pub duplicates: u64,
    /// Sequence numbers never received (the sensor's spool dropped them),
    /// summed over incarnations.
    pub seq_gaps: u64,
    /// Arrival of the latest stored batch, ns since the epoch.
    pub last_seen_ns: u64,
    /// Counters summed over the sensor's runs (spool counters: the latest).
    pub stats: pb::SensorStats,
}

/// Flows held and removed by retention.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Flow records deleted.
    pub deleted_flows: u64,
}

/// Sums a sensor's per-run counters, given in the order of their latest
/// report. Spool drop counters are cumulative over the spool's life, so the
/// largest report wins; the spool's size is the latest report's.
pub fn sum_stats(runs: impl IntoIterator<Item = pb::SensorStats>) -> pb::SensorStats {
    let mut t = pb::SensorStats::default();
    for s in runs {
        t.packets += s.packets;
        t.bytes += s.bytes;
        t.kernel_drops += s.kernel_drops;
        t.channel_full_drops += s.channel_full_drops;
        t.flows_evicted += s.flows_evicted;
        t.non_ip += s.non_ip;
        for (k, v) in s.decode_errors {
            *t.decode_errors.entry(k).or_default() += v;
        }
        t.app_flows += s.app_flows;
        t.app_payloads += s.app_payloads;
        for (k, v) in s.app_errors {
            *t.app_errors.entry(k).or_default() += v;
        }
        t.spool_bytes = s.spool_bytes;
        t.spool_dropped_batches = t.spool_dropped_batches.max(s.spool_dropped_batches);
        t.spool_dropped_flows = t.spool_dropped_flows.max(s.spool_dropped_flows);
        t.spool_corrupt_records = t.spool_corrupt_records.max(s.spool_corrupt_records);
    }
    t
}
