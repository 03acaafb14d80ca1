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

use vigil_proto::attest::Statement;

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
}

/// A batch's key does not match the sensor's known one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyRefusal(pub String);

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
        let Some(att) = batch.attestation.as_mut() else {
            return match known {
                None => Ok(KeyCheck::Unattested),
                Some((k, src)) => Err(KeyRefusal(format!(
                    "sensor {sensor:?} sent an unsigned batch, but its attestation key is known \
                     ({}, {}): refused (turn attestation back on at the sensor)",
                    fingerprint(&k),
                    src.describe()
                ))),
            };
        };
        let verdict = vigil_proto::attest::verifying_key(&att.public_key).and_then(|key| {
            let st = Statement {
                sensor_id: sensor.to_string(),
                incarnation: batch.incarnation,
                seq: batch.seq,
                size: batch.flows.len() as u64,
                root: att.root,
            };
            st.verify(&key, &att.signature).map(|()| key)
        });
        let key = match (verdict, known) {
            (Ok(key), Some((k, src))) if k != key => {
                return Err(KeyRefusal(format!(
                    "sensor {sensor:?} signs with attestation key {}, but {} is {}: refused \
                     (if the sensor's key was replaced on purpose, configure the new one in \
                     [[sensors]] public_key)",
                    fingerprint(&key),
                    fingerprint(&k),
                    src.describe()
                )));
            }
            (Ok(key), _) => key,
            (Err(e), _) => {
                batch.attestation = None;
                return Ok(KeyCheck::BadSignature(e.to_string()));
            }
        };
        if known.is_none() {
            keys.insert(sensor.to_string(), (key, Source::Pinned));
            att.pin = true;
            tracing::info!(
                sensor,
                key = %fingerprint(&key),
                "sensor attestation key pinned on first contact"
            );
        }
        Ok(KeyCheck::Attested)
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
