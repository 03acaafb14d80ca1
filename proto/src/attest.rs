//! Sensor attestation: what a sensor signs for every batch it sends, so
//! that anyone can later check, for one flow record, that the sensor sent
//! it in a batch it signed, without trusting the collector that stored it.
//!
//! - A record's **leaf bytes** are its `vigil.v1.Flow` message exactly as
//!   the sensor encoded it into the batch: protobuf's canonical encoding
//!   (fields in number order, each once, defaults left out) of
//!   [`pb::Flow::from`] the record. [`record_bytes`] makes them.
//! - The batch's Merkle tree ([`crate::merkle`], RFC 6962/9162) is over
//!   the leaf bytes of its records in the order sent.
//! - The sensor signs, with its Ed25519 key, the [`Statement`]: a fixed
//!   context string, its id, its spool incarnation, the batch's seq, the
//!   number of records (the tree size) and the tree's root. The signature
//!   and the sensor's public key travel in the batch (`FlowBatch`
//!   `signature`, `public_key`) and are spooled with it, so a replayed
//!   batch carries the signature made when it was spooled.

use std::fmt;

use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};

use crate::merkle::{self, Hash};
use crate::wire::IpBytes;
use crate::{FlowRecord, pb};

/// The context that opens every signed statement (with its NUL).
pub const CONTEXT: &[u8] = b"vigil-batch-v1\0";

/// Appends the leaf bytes of `r` (its canonical `vigil.v1.Flow` encoding)
/// to `buf`: byte for byte what prost writes for [`pb::Flow::from`] the
/// record (a test holds the two equal), without building the message.
pub fn record_bytes(r: &FlowRecord, buf: &mut Vec<u8>) {
    use prost::encoding::WireType::{LengthDelimited, SixtyFourBit, Varint};
    use prost::encoding::{encode_key, encode_varint, encoded_len_varint};
    let varint = |tag: u32, v: u64, buf: &mut Vec<u8>| {
        if v != 0 {
            encode_key(tag, Varint, buf);
            encode_varint(v, buf);
        }
    };
    let fixed = |tag: u32, v: u64, buf: &mut Vec<u8>| {
        if v != 0 {
            encode_key(tag, SixtyFourBit, buf);
            buf.extend_from_slice(&v.to_le_bytes());
        }
    };
    let bytes = |tag: u32, b: &[u8], buf: &mut Vec<u8>| {
        if !b.is_empty() {
            encode_key(tag, LengthDelimited, buf);
            encode_varint(b.len() as u64, buf);
            buf.extend_from_slice(b);
        }
    };
    let port = |tag: u32, p: Option<u16>, buf: &mut Vec<u8>| {
        if let Some(p) = p {
            encode_key(tag, Varint, buf);
            encode_varint(u64::from(p), buf);
        }
    };
    varint(1, r.flow_id, buf);
    fixed(2, r.first_seen_ns, buf);
    fixed(3, r.last_seen_ns, buf);
    varint(4, u64::from(r.proto), buf);
    bytes(5, IpBytes::from(r.src_ip).as_slice(), buf);
    port(6, r.src_port, buf);
    bytes(7, IpBytes::from(r.dst_ip).as_slice(), buf);
    port(8, r.dst_port, buf);
    let vlan = r.vlan.as_slice();
    if !vlan.is_empty() {
        // Packed, as proto3 repeats scalars.
        encode_key(9, LengthDelimited, buf);
        let len: usize = vlan.iter().map(|v| encoded_len_varint(u64::from(*v))).sum();
        encode_varint(len as u64, buf);
        for v in vlan {
            encode_varint(u64::from(*v), buf);
        }
    }
    varint(10, r.fwd_packets, buf);
    varint(11, r.fwd_bytes, buf);
    varint(12, r.rev_packets, buf);
    varint(13, r.rev_bytes, buf);
    varint(14, u64::from(r.fwd_tcp_flags), buf);
    varint(15, u64::from(r.rev_tcp_flags), buf);
    varint(16, u64::from(r.fwd_initial_tcp_flags), buf);
    varint(17, u64::from(r.rev_initial_tcp_flags), buf);
    varint(18, pb::ConnState::from(r.conn_state) as i32 as u64, buf);
    bytes(19, r.history.as_str().as_bytes(), buf);
    varint(20, pb::EndReason::from(r.end_reason) as i32 as u64, buf);
    bytes(21, &r.community_id.0, buf);
    if let Some(t) = &r.tunnel {
        let kind = pb::TunnelType::from(t.kind) as i32 as u64;
        let (src, dst) = (IpBytes::from(t.outer_src), IpBytes::from(t.outer_dst));
        let field = |n: usize| {
            if n == 0 {
                0
            } else {
                1 + encoded_len_varint(n as u64) + n
            }
        };
        let len = if kind == 0 {
            0
        } else {
            1 + encoded_len_varint(kind)
        } + field(src.as_slice().len())
            + field(dst.as_slice().len());
        encode_key(22, LengthDelimited, buf);
        encode_varint(len as u64, buf);
        varint(1, kind, buf);
        bytes(2, src.as_slice(), buf);
        bytes(3, dst.as_slice(), buf);
    }
    if let Some(a) = r.app.as_deref() {
        // Rare beside the rest (and allocating): through the message.
        use prost::Message as _;
        let m = pb::App::from(a);
        encode_key(23, LengthDelimited, buf);
        encode_varint(m.encoded_len() as u64, buf);
        m.encode_raw(buf);
    }
}

/// The leaf hash of a record; `buf` is scratch space.
pub fn record_leaf(r: &FlowRecord, buf: &mut Vec<u8>) -> Hash {
    buf.clear();
    record_bytes(r, buf);
    merkle::leaf_hash(buf)
}

/// The Merkle root over `records`' leaves, in order.
pub fn records_root(records: &[FlowRecord]) -> Hash {
    let mut buf = Vec::with_capacity(256);
    let leaves: Vec<Hash> = records.iter().map(|r| record_leaf(r, &mut buf)).collect();
    merkle::root(&leaves)
}

/// What a sensor signs for one batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    /// The sensor's id.
    pub sensor_id: String,
    /// Its spool's incarnation.
    pub incarnation: u64,
    /// The batch's seq.
    pub seq: u64,
    /// Records in the batch: the tree's size.
    pub size: u64,
    /// The tree's root.
    pub root: Hash,
}

/// A statement could not be read back from bytes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a vigil-batch-v1 statement: {0}")]
pub struct StatementError(&'static str);

impl Statement {
    /// The signed bytes: [`CONTEXT`] (15 bytes), the id's length (1 byte)
    /// and the id (ASCII), then incarnation, seq and size as 8-byte
    /// big-endian integers, then the 32-byte root.
    pub fn to_bytes(&self) -> Vec<u8> {
        let id = self.sensor_id.as_bytes();
        let mut b = Vec::with_capacity(CONTEXT.len() + 1 + id.len() + 24 + 32);
        b.extend_from_slice(CONTEXT);
        // Sensor ids are at most 64 characters (valid_sensor_id).
        b.push(id.len().min(255) as u8);
        b.extend_from_slice(&id[..id.len().min(255)]);
        b.extend_from_slice(&self.incarnation.to_be_bytes());
        b.extend_from_slice(&self.seq.to_be_bytes());
        b.extend_from_slice(&self.size.to_be_bytes());
        b.extend_from_slice(&self.root);
        b
    }

    /// Reads the bytes [`Statement::to_bytes`] makes.
    pub fn parse(b: &[u8]) -> Result<Statement, StatementError> {
        let rest = b
            .strip_prefix(CONTEXT)
            .ok_or(StatementError("wrong context"))?;
        let (&n, rest) = rest.split_first().ok_or(StatementError("truncated"))?;
        let n = usize::from(n);
        if rest.len() != n + 24 + 32 {
            return Err(StatementError("wrong length"));
        }
        let (id, rest) = rest.split_at(n);
        let sensor_id = std::str::from_utf8(id)
            .map_err(|_| StatementError("sensor id not UTF-8"))?
            .to_string();
        let u = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&rest[i * 8..i * 8 + 8]);
            u64::from_be_bytes(a)
        };
        let mut root = [0u8; 32];
        root.copy_from_slice(&rest[24..]);
        Ok(Statement {
            sensor_id,
            incarnation: u(0),
            seq: u(1),
            size: u(2),
            root,
        })
    }

    /// Whether `signature` (64 bytes) is `key`'s over this statement.
    pub fn verify(&self, key: &VerifyingKey, signature: &[u8]) -> Result<(), AttestError> {
        let sig = <[u8; 64]>::try_from(signature)
            .map_err(|_| AttestError::SignatureLength(signature.len()))?;
        key.verify(&self.to_bytes(), &Signature::from_bytes(&sig))
            .map_err(|_| AttestError::BadSignature)
    }
}

/// Why an attestation does not hold.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AttestError {
    /// The signature is not 64 bytes.
    #[error("signature of {0} bytes (an Ed25519 signature has 64)")]
    SignatureLength(usize),
    /// The public key is not 32 bytes, or not a point on the curve.
    #[error("public key is not an Ed25519 key ({0} bytes)")]
    BadKey(usize),
    /// The signature is not the key's over the statement.
    #[error("the signature does not verify with the sensor's key")]
    BadSignature,
}

/// An Ed25519 public key from its 32 raw bytes.
pub fn verifying_key(raw: &[u8]) -> Result<VerifyingKey, AttestError> {
    <[u8; 32]>::try_from(raw)
        .ok()
        .and_then(|k| VerifyingKey::from_bytes(&k).ok())
        .ok_or(AttestError::BadKey(raw.len()))
}

/// Lowercase hex of `b`.
pub fn hex(b: &[u8]) -> String {
    struct Hex<'a>(&'a [u8]);
    impl fmt::Display for Hex<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
        }
    }
    Hex(b).to_string()
}

/// Bytes from lowercase or uppercase hex; `None` if it is not hex.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer as _, SigningKey};

    #[test]
    fn a_statement_round_trips_and_its_layout_is_fixed() {
        let s = Statement {
            sensor_id: "s1".into(),
            incarnation: 0x0102_0304_0506_0708,
            seq: 9,
            size: 3,
            root: [0xab; 32],
        };
        let b = s.to_bytes();
        assert_eq!(b.len(), 15 + 1 + 2 + 24 + 32);
        assert_eq!(&b[..15], b"vigil-batch-v1\0");
        assert_eq!(&b[15..18], b"\x02s1");
        assert_eq!(&b[18..26], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&b[26..34], &9u64.to_be_bytes());
        assert_eq!(Statement::parse(&b).unwrap(), s);
        assert!(Statement::parse(&b[..b.len() - 1]).is_err());
        assert!(Statement::parse(b"vigil-batch-v2\0").is_err());
    }

    #[test]
    fn a_signature_holds_only_for_its_statement_and_key() {
        let k = SigningKey::from_bytes(&[7; 32]);
        let other = SigningKey::from_bytes(&[8; 32]);
        let mut s = Statement {
            sensor_id: "s1".into(),
            incarnation: 1,
            seq: 1,
            size: 1,
            root: [1; 32],
        };
        let sig = k.sign(&s.to_bytes()).to_bytes();
        s.verify(&k.verifying_key(), &sig).unwrap();
        assert_eq!(
            s.verify(&other.verifying_key(), &sig),
            Err(AttestError::BadSignature)
        );
        assert_eq!(
            s.verify(&k.verifying_key(), &sig[..63]),
            Err(AttestError::SignatureLength(63))
        );
        s.seq = 2;
        assert_eq!(
            s.verify(&k.verifying_key(), &sig),
            Err(AttestError::BadSignature)
        );
        assert!(verifying_key(&[0; 31]).is_err());
    }

    #[test]
    fn record_bytes_are_prosts_encoding_of_the_message() {
        use prost::Message as _;

        use crate::{ConnState, EndReason, History, TunnelInfo, TunnelType, Vlans};
        let base = crate::flow::tests::record();
        let mut cases = vec![base.clone()];
        let v6: std::net::IpAddr = "2001:db8::1".parse().unwrap();
        for i in 0..64u64 {
            let mut r = base.clone();
            r.flow_id = if i % 7 == 0 { 0 } else { i * 1_000_003 };
            r.first_seen_ns = if i % 11 == 0 { 0 } else { i << 50 };
            r.last_seen_ns = r.first_seen_ns.wrapping_add(i);
            r.proto = [0u8, 1, 6, 17, 58, 132, 255][i as usize % 7];
            if i % 3 == 0 {
                (r.src_ip, r.dst_ip) = (v6, v6);
            }
            (r.src_port, r.dst_port) = match i % 4 {
                0 => (None, None),
                1 => (Some(0), Some(0)),
                _ => (Some(i as u16 * 997), Some(65535)),
            };
            r.vlan = match i % 3 {
                0 => Vlans::new(0, 0),
                1 => Vlans::new(4095, 0),
                _ => Vlans::new(100, 200),
            };
            (r.fwd_packets, r.fwd_bytes) = (i % 5, i * i * 1_000_000_007 % (1 << 48));
            (r.rev_packets, r.rev_bytes) = (if i % 2 == 0 { 0 } else { 1 << 44 }, i);
            r.fwd_tcp_flags = (i * 37) as u8;
            r.rev_initial_tcp_flags = if i % 5 == 0 { 0 } else { 0xff };
            r.conn_state = ConnState::ALL[i as usize % ConnState::ALL.len()];
            r.end_reason = EndReason::ALL[i as usize % EndReason::ALL.len()];
            r.history = if i % 6 == 0 {
                History::default()
            } else {
                base.history
            };
            r.tunnel = match i % 4 {
                0 => None,
                1 => Some(TunnelInfo {
                    kind: TunnelType::Vxlan,
                    outer_src: "192.0.2.1".parse().unwrap(),
                    outer_dst: v6,
                }),
                _ => Some(TunnelInfo {
                    kind: [TunnelType::Gre, TunnelType::GtpU, TunnelType::MplsUdp][i as usize % 3],
                    outer_src: v6,
                    outer_dst: "0.0.0.0".parse().unwrap(),
                }),
            };
            r.app = match i % 5 {
                0 => None,
                1 => Some(Box::new(crate::App::of(crate::AppProto::Dns))),
                _ => {
                    let p = crate::AppProto::ALL[i as usize % crate::AppProto::ALL.len()];
                    let mut a = crate::App::of(p);
                    if let Some(d) = &mut a.dns {
                        d.qname = "example.org".into();
                        d.answers = vec!["192.0.2.1".into()];
                        d.rcode = Some(0);
                    }
                    if let Some(i) = &mut a.ics {
                        i.functions = vec![(3, 2), (16, 1)];
                        i.writes = 1;
                    }
                    Some(Box::new(a))
                }
            };
            cases.push(r);
        }
        for r in &cases {
            let mut ours = Vec::new();
            record_bytes(r, &mut ours);
            assert_eq!(ours, pb::Flow::from(r).encode_to_vec(), "{r:?}");
        }
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(hex(&[0, 0xff, 0x1a]), "00ff1a");
        assert_eq!(unhex("00FF1a"), Some(vec![0, 0xff, 0x1a]));
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("zz"), None);
    }
}
