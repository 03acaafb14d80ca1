//! The sensors' attestation keys: which key each sensor signs its batches
//! with, from the configuration (`[[sensors]] id, public_key`) or pinned
//! on first contact (SSH's trust on first use). A batch signed with
//! another key than the one known, or not signed at all once a key is
//! known, is refused: the sensor keeps it and the operator decides
//! (configure the new key, or find out who holds the old one).

use std::collections::HashMap;
use std::sync::Mutex;

use ed25519_dalek::VerifyingKey;
use vigil_proto::keys::fingerprint;

use crate::model::ingest::IngestBatch;

/// Where a sensor's known key came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Configured,
    Pinned,
}

/// The known keys.
#[derive(Debug, Default)]
pub struct SensorKeys {
    keys: Mutex<HashMap<String, (VerifyingKey, Source)>>,
    /// (sensor, presented key) refused so far.
    refused: Mutex<std::collections::HashSet<(String, Vec<u8>)>>,
}

/// A batch's key does not match the sensor's known one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{why}")]
pub struct KeyRefusal {
    /// What was refused and why.
    pub why: String,
    /// The first refusal of this sensor and key since the collector
    /// started (the one to raise an alert for; a sensor retries).
    pub first: bool,
}

/// What [`SensorKeys::check`] decided for an accepted batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyCheck {
    /// Signed with the known key (or the key pinned by this batch).
    Attested,
    /// Not signed, by a sensor without a known key: stored unattested.
    Unattested,
    /// Signed with the known key, but the signature does not hold over
    /// the records as the collector decoded them: stored unattested (a
    /// sensor of another version encoding records differently, or damage).
    BadSignature(String),
}

impl SensorKeys {
    /// The configured keys and those the store pinned before.
    pub fn new(
        configured: impl IntoIterator<Item = (String, VerifyingKey)>,
        pinned: impl IntoIterator<Item = (String, VerifyingKey)>,
    ) -> SensorKeys {
        let mut keys: HashMap<String, (VerifyingKey, Source)> = pinned
            .into_iter()
            .map(|(id, k)| (id, (k, Source::Pinned)))
            .collect();
        for (id, k) in configured {
            keys.insert(id, (k, Source::Configured));
        }
        SensorKeys {
            keys: Mutex::new(keys),
            refused: Mutex::default(),
        }
    }

    /// The key known for a sensor.
    pub fn get(&self, sensor: &str) -> Option<VerifyingKey> {
        self.lock().get(sensor).map(|(k, _)| *k)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (VerifyingKey, Source)>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks a batch's attestation against the sensor's known key: a
    /// key that differs is refused; a signature that does not hold leaves
    /// the batch unattested (its attestation removed); the key of a sensor
    /// seen signing for the first time is pinned (then `pin` is set on the
    /// attestation, for the store to record the key with the batch).
    pub fn check(&self, batch: &mut IngestBatch) -> Result<KeyCheck, KeyRefusal> {
        let sensor = batch.sensor_id.as_str();
        let mut keys = self.lock();
        let known = keys.get(sensor).copied();
        let Some(att) = batch.attestation.as_ref() else {
            return match known {
                None => Ok(KeyCheck::Unattested),
                Some((k, src)) => Err(self.refusal(
                    sensor,
                    &[],
                    format!(
                        "sensor {sensor:?} sent an unsigned batch, but its attestation key is \
                         known ({}, {}): refused (turn attestation back on at the sensor)",
                        fingerprint(&k),
                        src.describe()
                    ),
                )),
            };
        };
        let key = match vigil_proto::attest::verifying_key(&att.public_key) {
            Ok(key) => key,
            Err(e) => {
                batch.attestation = None;
                return Ok(KeyCheck::BadSignature(e.to_string()));
            }
        };
        // Another key than the known one is refused whatever its
        // signature: a bad one would otherwise get past as unattested.
        if let Some((k, src)) = known
            && k != key
        {
            let why = format!(
                "sensor {sensor:?} signs with attestation key {}, but {} is {}: refused \
                 (if the sensor's key was replaced on purpose, configure the new one in \
                 [[sensors]] public_key)",
                fingerprint(&key),
                fingerprint(&k),
                src.describe()
            );
            return Err(self.refusal(sensor, key.as_bytes(), why));
        }
        if let Err(e) = batch.statement(att.root).verify(&key, &att.signature) {
            batch.attestation = None;
            return Ok(KeyCheck::BadSignature(e.to_string()));
        }
        if known.is_none() {
            keys.insert(batch.sensor_id.clone(), (key, Source::Pinned));
            if let Some(a) = batch.attestation.as_mut() {
                a.pin = true;
            }
            tracing::info!(
                sensor = %batch.sensor_id,
                key = %fingerprint(&key),
                "sensor attestation key pinned on first contact"
            );
        }
        Ok(KeyCheck::Attested)
    }

    fn refusal(&self, sensor: &str, key: &[u8], why: String) -> KeyRefusal {
        let first = self
            .refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((sensor.to_string(), key.to_vec()));
        KeyRefusal { why, first }
    }
}

impl Source {
    fn describe(self) -> &'static str {
        match self {
            Source::Configured => "configured for it",
            Source::Pinned => "pinned for it on first contact",
        }
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;

    use super::*;
    use crate::testutil::{Rng, batch, record, signed};

    fn flows(n: u64) -> Vec<vigil_proto::FlowRecord> {
        let mut rng = Rng(5);
        (0..n).map(|i| record(&mut rng, i)).collect()
    }

    #[test]
    fn a_key_is_pinned_on_first_contact_and_another_refused_once_alerted() {
        let (k1, k2) = (
            SigningKey::from_bytes(&[1; 32]),
            SigningKey::from_bytes(&[2; 32]),
        );
        let keys = SensorKeys::default();
        let mut b = signed(batch("s1", 1, flows(5)), &k1);
        assert_eq!(keys.check(&mut b), Ok(KeyCheck::Attested));
        assert!(
            b.attestation.as_ref().unwrap().pin,
            "the first attested batch pins"
        );
        let mut b = signed(batch("s1", 2, flows(3)), &k1);
        assert_eq!(keys.check(&mut b), Ok(KeyCheck::Attested));
        assert!(!b.attestation.as_ref().unwrap().pin);
        // Another key: refused, the first time flagged for an alert.
        let e = keys
            .check(&mut signed(batch("s1", 3, flows(3)), &k2))
            .unwrap_err();
        assert!(
            e.first && e.why.contains("pinned for it on first contact"),
            "{e}"
        );
        let e = keys
            .check(&mut signed(batch("s1", 4, flows(3)), &k2))
            .unwrap_err();
        assert!(!e.first, "a retry raises no second alert");
        // Another key with a signature that does not hold: refused as
        // well, not let through unattested.
        let mut forged = signed(batch("s1", 4, flows(3)), &k2);
        forged.attestation.as_mut().unwrap().signature[0] ^= 1;
        let e = keys.check(&mut forged).unwrap_err();
        assert!(e.why.contains("refused"), "{e}");
        // Unsigned once a key is known: refused too.
        let e = keys.check(&mut batch("s1", 5, flows(1))).unwrap_err();
        assert!(e.why.contains("unsigned"), "{e}");
        // A sensor never seen signing: stored unattested.
        assert_eq!(
            keys.check(&mut batch("s2", 1, flows(1))),
            Ok(KeyCheck::Unattested)
        );
    }

    #[test]
    fn a_signature_over_other_records_leaves_the_batch_unattested_and_pins_nothing() {
        let k = SigningKey::from_bytes(&[3; 32]);
        let keys = SensorKeys::default();
        let mut b = signed(batch("s1", 1, flows(4)), &k);
        b.flows[2].fwd_bytes += 1;
        b.attestation.as_mut().unwrap().root = vigil_proto::attest::records_root(&b.flows);
        assert!(matches!(keys.check(&mut b), Ok(KeyCheck::BadSignature(_))));
        assert!(b.attestation.is_none());
        assert!(keys.get("s1").is_none(), "nothing pinned");
    }

    #[test]
    fn a_configured_key_wins_over_a_pinned_one() {
        let (k1, k2) = (
            SigningKey::from_bytes(&[1; 32]),
            SigningKey::from_bytes(&[2; 32]),
        );
        let keys = SensorKeys::new(
            [("s1".to_string(), k2.verifying_key())],
            [("s1".to_string(), k1.verifying_key())],
        );
        let e = keys
            .check(&mut signed(batch("s1", 1, flows(2)), &k1))
            .unwrap_err();
        assert!(e.why.contains("configured for it"), "{e}");
        assert_eq!(
            keys.check(&mut signed(batch("s1", 2, flows(2)), &k2)),
            Ok(KeyCheck::Attested)
        );
    }
}
