//! What the store keeps so that an alert's flows can be shown, later, to
//! be the ones their sensors signed: each batch (its counters, its
//! event-time span, its attestation) and each flow's place in its batch.

use vigil_proto::merkle::Hash;
use vigil_proto::{FlowRecord, pb};

/// A batch's identity: a sensor's spool incarnation and its seq there.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BatchKey {
    /// The sensor.
    pub sensor_id: String,
    /// Its spool's incarnation.
    pub incarnation: u64,
    /// The batch's seq within it.
    pub seq: u64,
}

/// A stored evidence flow, with its place in its batch when it has one
/// (flows stored before batches were kept have none).
#[derive(Clone, Debug, PartialEq)]
pub struct PlacedFlow {
    /// The sensor that sent it.
    pub sensor_id: String,
    /// The record as stored.
    pub record: FlowRecord,
    /// Its batch and its index there.
    pub place: Option<(BatchKey, u32)>,
}

/// A sensor's attestation of a stored batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredAttestation {
    /// The sensor's Ed25519 public key, 32 bytes.
    pub public_key: Vec<u8>,
    /// The Merkle root the signature is over.
    pub root: Hash,
    /// The signature, 64 bytes.
    pub signature: Vec<u8>,
}

/// A stored batch.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredBatch {
    /// Which batch.
    pub key: BatchKey,
    /// Its records.
    pub size: u64,
    /// Collector time of arrival.
    pub received_ns: u64,
    /// Earliest first packet and latest last packet of its records (0, 0
    /// for a batch of counters only).
    pub first_ns: u64,
    /// See `first_ns`.
    pub last_ns: u64,
    /// The sensor's counters as the batch carried them.
    pub stats: Option<pb::SensorStats>,
    /// The sensor's attestation (`None`: not attested).
    pub attestation: Option<StoredAttestation>,
}
