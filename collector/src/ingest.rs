//! Batch validation: what a collector accepts from a sensor, as a plain
//! function over the wire message (no I/O), so every rule is unit-tested.
//!
//! A batch is accepted whole or rejected whole, with a message that names
//! the batch, the flow and the field. Rules:
//! - `sensor_id`: 1–64 characters of `[A-Za-z0-9._-]`, the same for the
//!   whole stream, and the identity of the peer's certificate under mTLS;
//! - `seq` 1 to [`MAX_SEQ`] and strictly increasing within a stream (a
//!   sensor resends after a reconnect, on a new stream);
//! - `incarnation` (the sensor spool's identity) the same for the whole
//!   stream;
//! - at most [`Limits::max_batch_flows`] flows;
//! - every flow converts into the domain record (address lengths, port
//!   presence, VLAN ids, flags, enums, history — see `vigil_proto::wire`);
//! - timestamps after 2000-01-01 and at most [`Limits::max_clock_skew`]
//!   ahead of the collector's clock;
//! - per-direction counters within sane bounds ([`MAX_PACKETS`],
//!   [`MAX_BYTES`]), so stored sums cannot overflow.

use std::time::Duration;

use thiserror::Error;
use vigil_proto::{FlowRecord, pb, valid_sensor_id};

use crate::model::ingest::{Attestation, IngestBatch};

/// 2000-01-01T00:00:00Z in ns: nothing Vigil sees is older.
pub const MIN_TIMESTAMP_NS: u64 = 946_684_800_000_000_000;
/// The largest batch seq, 2^40 − 1 (at a thousand batches a second, 35
/// years of one spool): a store keeps the incarnation's ordinal in the
/// bits above it ([`crate::store`]).
pub const MAX_SEQ: u64 = (1 << 40) - 1;
/// Most packets, or bytes, all the flows of one batch may claim together
/// (2^60: a store's per-minute sums stay within 2^63 − 1 for 8 batches of
/// one minute's worst).
pub const MAX_BATCH_TOTAL: u64 = 1 << 60;
/// Most packets one direction of one record may claim (2^44).
pub const MAX_PACKETS: u64 = 1 << 44;
/// Most bytes one direction of one record may claim (2^48, 281 TB).
pub const MAX_BYTES: u64 = 1 << 48;

/// Bounds on what a batch may carry, and on what ingest holds at once.
///
/// The collector's ingest memory is bounded by about `max_streams` ×
/// `max_message_bytes` (each stream's message being received) plus 1.5 ×
/// `max_inflight_bytes` (batches decoded and waiting for their commit):
/// 128 × 4 MiB + 1.5 × 128 MiB = 704 MiB by default.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most flows in one batch.
    pub max_batch_flows: usize,
    /// How far ahead of the collector's clock a timestamp may be.
    pub max_clock_skew: Duration,
    /// Most ingest streams open at once; more are refused with
    /// `RESOURCE_EXHAUSTED` (the sensor retries).
    pub max_streams: usize,
    /// Most bytes (as received) of batches decoded and not yet committed,
    /// over all streams; beyond it, streams wait (back-pressure).
    pub max_inflight_bytes: u64,
}

/// Batches of one stream decoded and waiting for their commit, at most.
pub const MAX_INFLIGHT_PER_STREAM: usize = 16;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_batch_flows: 65_536,
            max_clock_skew: Duration::from_secs(86_400),
            max_streams: 128,
            max_inflight_bytes: 128 << 20,
        }
    }
}

impl Rejection {
    /// The seq of the batch whose *content* is refused (a flow, the flow
    /// count or their totals), which the sensor drops; `None` for a
    /// problem of the stream or the peer (identity, sequence), which
    /// dropping the batch would not cure: the sensor keeps it and retries.
    pub fn dropped_seq(&self) -> Option<u64> {
        match self {
            Rejection::BadFlow { seq, .. }
            | Rejection::TooManyFlows { seq, .. }
            | Rejection::BatchTotals { seq, .. } => Some(*seq),
            _ => None,
        }
    }
}

/// Why a batch was refused. Always the peer's doing.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum Rejection {
    /// The sensor id is malformed.
    #[error("sensor_id {0:?}: must be 1-64 characters of A-Z a-z 0-9 . _ -")]
    BadSensorId(String),
    /// The sensor id differs from the stream's first batch.
    #[error("sensor_id {got:?} differs from {first:?}, the id of this stream's first batch")]
    SensorIdChanged {
        /// The stream's id.
        first: String,
        /// This batch's id.
        got: String,
    },
    /// The sensor id is not the identity in the peer's certificate.
    #[error("sensor_id {got:?} does not match the client certificate's identity {cert:?}")]
    IdentityMismatch {
        /// Identities in the certificate.
        cert: String,
        /// The claimed id.
        got: String,
    },
    /// `seq` is 0.
    #[error("batch seq 0: sequence numbers start at 1")]
    ZeroSeq,
    /// `seq` is beyond what a store holds ([`MAX_SEQ`]): refused here, as
    /// the peer's error, rather than failing the commit it would land in.
    #[error("batch seq {0}: exceeds 2^40 - 1, the largest sequence number stored")]
    SeqOutOfRange(u64),
    /// The incarnation differs from the stream's first batch.
    #[error(
        "batch seq {seq}: incarnation {got:016x} differs from {first:016x}, this stream's first batch's"
    )]
    IncarnationChanged {
        /// The batch.
        seq: u64,
        /// The stream's incarnation.
        first: u64,
        /// This batch's.
        got: u64,
    },
    /// The batch's flows together claim more packets or bytes than a
    /// store's per-minute sums hold.
    #[error("batch seq {seq}: its flows claim {value} {what} in all (at most {max})")]
    BatchTotals {
        /// The batch.
        seq: u64,
        /// `packets` or `bytes`.
        what: &'static str,
        /// The batch's sum (saturated at 2^64 − 1).
        value: u64,
        /// The limit.
        max: u64,
    },
    /// `seq` did not increase within the stream.
    #[error("batch seq {got} after seq {prev} on the same stream: sequence numbers must increase")]
    SeqRegression {
        /// The previous batch's seq.
        prev: u64,
        /// This batch's seq.
        got: u64,
    },
    /// Too many flows.
    #[error("batch seq {seq}: {flows} flows (at most {max})")]
    TooManyFlows {
        /// The batch.
        seq: u64,
        /// Flows in it.
        flows: usize,
        /// The limit.
        max: usize,
    },
    /// A flow is invalid.
    #[error("batch seq {seq}, flow {index}: {problem}")]
    BadFlow {
        /// The batch.
        seq: u64,
        /// Index of the flow in the batch.
        index: usize,
        /// What is wrong.
        problem: String,
    },
}

/// What a stream has established so far.
#[derive(Clone, Debug, Default)]
pub struct StreamState {
    /// The sensor id of the first batch.
    pub sensor_id: Option<String>,
    /// The incarnation of the first batch.
    pub incarnation: Option<u64>,
    /// The last accepted seq.
    pub last_seq: u64,
}

/// Validates one batch of a stream and converts it into an [`IngestBatch`].
///
/// `identities` are the names in the peer's client certificate (`None`
/// without mTLS). `now_ns` is the collector's clock.
pub fn validate(
    batch: pb::FlowBatch,
    stream: &mut StreamState,
    identities: Option<&[String]>,
    limits: &Limits,
    now_ns: u64,
) -> Result<IngestBatch, Rejection> {
    let pb::FlowBatch {
        sensor_id,
        seq,
        flows,
        stats,
        incarnation,
        signature,
        public_key,
    } = batch;
    if !valid_sensor_id(&sensor_id) {
        let shown: String = sensor_id.chars().take(80).collect();
        return Err(Rejection::BadSensorId(shown));
    }
    match &stream.sensor_id {
        Some(first) if *first != sensor_id => {
            return Err(Rejection::SensorIdChanged {
                first: first.clone(),
                got: sensor_id,
            });
        }
        _ => {}
    }
    if let Some(ids) = identities
        && !ids.contains(&sensor_id)
    {
        return Err(Rejection::IdentityMismatch {
            cert: ids.join(", "),
            got: sensor_id,
        });
    }
    if seq == 0 {
        return Err(Rejection::ZeroSeq);
    }
    if seq > MAX_SEQ {
        return Err(Rejection::SeqOutOfRange(seq));
    }
    if let Some(first) = stream.incarnation
        && first != incarnation
    {
        return Err(Rejection::IncarnationChanged {
            seq,
            first,
            got: incarnation,
        });
    }
    if seq <= stream.last_seq {
        return Err(Rejection::SeqRegression {
            prev: stream.last_seq,
            got: seq,
        });
    }
    if flows.len() > limits.max_batch_flows {
        return Err(Rejection::TooManyFlows {
            seq,
            flows: flows.len(),
            max: limits.max_batch_flows,
        });
    }
    let max_ts =
        now_ns.saturating_add(limits.max_clock_skew.as_nanos().min(u128::from(u64::MAX)) as u64);
    let mut records = Vec::with_capacity(flows.len());
    for (index, f) in flows.iter().enumerate() {
        let bad = |problem: String| Rejection::BadFlow {
            seq,
            index,
            problem,
        };
        let r = FlowRecord::try_from(f).map_err(|e| bad(e.to_string()))?;
        if r.first_seen_ns < MIN_TIMESTAMP_NS {
            return Err(bad(format!(
                "field `first_seen_ns`: {} is before the year 2000",
                r.first_seen_ns
            )));
        }
        if r.last_seen_ns > max_ts {
            return Err(bad(format!(
                "field `last_seen_ns`: {} is more than {:?} ahead of the collector's clock",
                r.last_seen_ns, limits.max_clock_skew
            )));
        }
        for (field, v, max) in [
            ("fwd_packets", r.fwd_packets, MAX_PACKETS),
            ("rev_packets", r.rev_packets, MAX_PACKETS),
            ("fwd_bytes", r.fwd_bytes, MAX_BYTES),
            ("rev_bytes", r.rev_bytes, MAX_BYTES),
        ] {
            if v > max {
                return Err(bad(format!("field `{field}`: {v} exceeds {max}")));
            }
        }
        if r.flow_id >= 1 << 53 {
            return Err(bad(format!(
                "field `flow_id`: {} exceeds 2^53 - 1",
                r.flow_id
            )));
        }
        records.push(r);
    }
    // The store adds a batch's flows into per-minute sums: they must fit
    // its integers whatever the flows' minutes.
    let (packets, bytes) = records.iter().fold((0u64, 0u64), |(p, b), r| {
        (p.saturating_add(r.packets()), b.saturating_add(r.bytes()))
    });
    for (what, value) in [("packets", packets), ("bytes", bytes)] {
        if value > MAX_BATCH_TOTAL {
            return Err(Rejection::BatchTotals {
                seq,
                what,
                value,
                max: MAX_BATCH_TOTAL,
            });
        }
    }
    // The Merkle root over the records as decoded (and as they will be
    // stored): the sensor's signature must hold over it.
    let attestation = (!signature.is_empty()).then(|| Attestation {
        public_key,
        signature,
        root: vigil_proto::attest::records_root(&records),
        pin: false,
    });
    stream.sensor_id.get_or_insert_with(|| sensor_id.clone());
    stream.incarnation = Some(incarnation);
    stream.last_seq = seq;
    Ok(IngestBatch {
        attestation,
        certificate: None,
        sensor_id,
        seq,
        incarnation,
        flows: records,
        stats,
        received_ns: now_ns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000_000_000;

    fn flow() -> pb::Flow {
        pb::Flow {
            flow_id: 1,
            first_seen_ns: NOW - 1_000,
            last_seen_ns: NOW,
            proto: 17,
            src_ip: vec![10, 0, 0, 1],
            src_port: Some(5353),
            dst_ip: vec![10, 0, 0, 2],
            dst_port: Some(53),
            fwd_packets: 1,
            fwd_bytes: 60,
            conn_state: pb::ConnState::S0 as i32,
            end_reason: pb::EndReason::Idle as i32,
            community_id: vec![0; 20],
            ..Default::default()
        }
    }

    fn batch(seq: u64, flows: Vec<pb::Flow>) -> pb::FlowBatch {
        pb::FlowBatch {
            sensor_id: "s1".into(),
            seq,
            flows,
            stats: None,
            incarnation: 7,
            ..Default::default()
        }
    }

    fn check(b: pb::FlowBatch, st: &mut StreamState) -> Result<IngestBatch, Rejection> {
        validate(b, st, None, &Limits::default(), NOW)
    }

    #[test]
    fn a_good_stream_is_accepted() {
        let mut st = StreamState::default();
        assert_eq!(
            check(batch(1, vec![flow()]), &mut st).unwrap().flows.len(),
            1
        );
        // Gaps are fine (the spool may have dropped batches).
        assert_eq!(check(batch(5, vec![]), &mut st).unwrap().seq, 5);
        assert_eq!(st.last_seq, 5);
    }

    #[test]
    fn a_stream_keeps_one_incarnation() {
        let mut st = StreamState::default();
        assert_eq!(check(batch(1, vec![]), &mut st).unwrap().incarnation, 7);
        let other = pb::FlowBatch {
            incarnation: 8,
            ..batch(2, vec![])
        };
        assert_eq!(
            check(other, &mut st).unwrap_err(),
            Rejection::IncarnationChanged {
                seq: 2,
                first: 7,
                got: 8
            }
        );
    }

    /// A seq or a batch's sums the store could not hold are the peer's
    /// error, found at validation (they failed the commit, as a storage
    /// fault, and with it other sensors' batches in the same commit).
    #[test]
    fn values_no_store_holds_are_refused_at_validation() {
        assert_eq!(
            check(batch(u64::MAX, vec![]), &mut StreamState::default()).unwrap_err(),
            Rejection::SeqOutOfRange(u64::MAX)
        );
        assert!(check(batch(MAX_SEQ, vec![]), &mut StreamState::default()).is_ok());
        assert_eq!(
            check(batch(MAX_SEQ + 1, vec![]), &mut StreamState::default()).unwrap_err(),
            Rejection::SeqOutOfRange(MAX_SEQ + 1)
        );
        // 8,192 flows of 2^48 bytes each way: each flow valid, 2^62 in all.
        let big = pb::Flow {
            fwd_bytes: MAX_BYTES,
            rev_bytes: MAX_BYTES,
            rev_packets: 1,
            ..flow()
        };
        let e = check(batch(1, vec![big; 8_192]), &mut StreamState::default()).unwrap_err();
        assert!(
            matches!(e, Rejection::BatchTotals { what: "bytes", value, .. } if value == 1 << 62),
            "{e:?}"
        );
        let fits = pb::Flow {
            fwd_bytes: MAX_BYTES,
            rev_bytes: MAX_BYTES,
            rev_packets: 1,
            ..flow()
        };
        assert!(check(batch(1, vec![fits; 2_048]), &mut StreamState::default()).is_ok());
    }

    #[test]
    fn each_rule_names_what_broke() {
        let mut st = StreamState::default();
        check(batch(3, vec![]), &mut st).unwrap();
        assert_eq!(
            check(batch(3, vec![]), &mut st).unwrap_err(),
            Rejection::SeqRegression { prev: 3, got: 3 }
        );
        assert_eq!(
            check(batch(0, vec![]), &mut StreamState::default()).unwrap_err(),
            Rejection::ZeroSeq
        );
        let mut other = batch(4, vec![]);
        other.sensor_id = "s2".into();
        assert!(matches!(
            check(other, &mut st).unwrap_err(),
            Rejection::SensorIdChanged { .. }
        ));
        for bad_id in ["", "a b", "x".repeat(65).as_str(), "é", "a/b"] {
            let mut b = batch(1, vec![]);
            b.sensor_id = bad_id.into();
            assert!(matches!(
                check(b, &mut StreamState::default()).unwrap_err(),
                Rejection::BadSensorId(_)
            ));
        }
        let cases: Vec<(&str, pb::Flow)> = vec![
            (
                "address of 3 bytes",
                pb::Flow {
                    src_ip: vec![1, 2, 3],
                    ..flow()
                },
            ),
            (
                "before the year 2000",
                pb::Flow {
                    first_seen_ns: 5,
                    ..flow()
                },
            ),
            (
                "ahead of the collector's clock",
                pb::Flow {
                    last_seen_ns: NOW + 2 * 86_400_000_000_000,
                    ..flow()
                },
            ),
            (
                "fwd_bytes",
                pb::Flow {
                    fwd_bytes: u64::MAX,
                    ..flow()
                },
            ),
            (
                "rev_packets",
                pb::Flow {
                    rev_packets: 1 << 50,
                    ..flow()
                },
            ),
            (
                "flow_id",
                pb::Flow {
                    flow_id: u64::MAX,
                    ..flow()
                },
            ),
            (
                "conn_state",
                pb::Flow {
                    conn_state: 999,
                    ..flow()
                },
            ),
        ];
        for (msg, f) in cases {
            let e = check(batch(1, vec![flow(), f]), &mut StreamState::default()).unwrap_err();
            let text = e.to_string();
            assert!(text.starts_with("batch seq 1, flow 1: "), "{text}");
            assert!(text.contains(msg), "{text}");
        }
        let many = batch(1, vec![flow(); 10]);
        let limits = Limits {
            max_batch_flows: 5,
            ..Limits::default()
        };
        assert!(matches!(
            validate(many, &mut StreamState::default(), None, &limits, NOW).unwrap_err(),
            Rejection::TooManyFlows {
                flows: 10,
                max: 5,
                ..
            }
        ));
    }

    #[test]
    fn the_certificate_decides_who_a_sensor_is() {
        let ids = vec!["s1".to_string()];
        let mut st = StreamState::default();
        assert!(
            validate(
                batch(1, vec![]),
                &mut st,
                Some(&ids),
                &Limits::default(),
                NOW
            )
            .is_ok()
        );
        let other = vec!["s9".to_string()];
        assert!(matches!(
            validate(
                batch(2, vec![]),
                &mut st,
                Some(&other),
                &Limits::default(),
                NOW
            )
            .unwrap_err(),
            Rejection::IdentityMismatch { .. }
        ));
    }

    #[test]
    fn a_rejected_batch_leaves_the_stream_state_alone() {
        let mut st = StreamState::default();
        check(batch(1, vec![]), &mut st).unwrap();
        let _ = check(
            batch(
                2,
                vec![pb::Flow {
                    proto: 300,
                    ..flow()
                }],
            ),
            &mut st,
        )
        .unwrap_err();
        assert_eq!(st.last_seq, 1);
    }
}
