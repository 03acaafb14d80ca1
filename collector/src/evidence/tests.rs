//! Bundles made from a store and verified: a round trip, every kind of
//! tampering named, and proofs that outlive retention.

use std::time::Duration;

use ed25519_dalek::SigningKey;

use super::verify::verify;
use super::*;
use crate::model::alert::{Alert, AlertKind, AlertUpdate, Criticality, EvidenceRef, Severity};
use crate::store::sqlite::{SqliteConfig, SqliteStore};
use crate::store::{AlertStore, EvidenceStore, IngestStore, Retention};
use crate::testutil::{Rng, T0, batch, record, signed};

const DAY: u64 = 86_400 * 1_000_000_000;

fn alert(evidence: Vec<EvidenceRef>) -> Alert {
    Alert {
        id: 1,
        kind: AlertKind::SynFlood,
        technique: "T1498.001".into(),
        technique_name: "Direct Network Flood".into(),
        matrix: "enterprise".into(),
        severity: Severity::High,
        asset: "plant".into(),
        sector: "water".into(),
        criticality: Criticality::High,
        summary: "a flood".into(),
        sources: Vec::new(),
        source_count: 1,
        targets: Vec::new(),
        target_count: 1,
        first_seen_ns: T0,
        last_seen_ns: T0 + 10 * DAY,
        raised_ns: T0,
        measured: 900.0,
        threshold: 500.0,
        unit: "flows/s".into(),
        updates: 0,
        evidence_count: evidence.len() as u64,
        evidence,
        detector: String::new(),
    }
}

/// A store with two signed batches of 40 records (the second batch's a
/// day later) and an alert whose evidence is records 3 and 17 of the first
/// and 5 of the second.
fn store() -> (tempfile::TempDir, SqliteStore, CollectorKey, SigningKey) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(
        dir.path(),
        SqliteConfig {
            max_age: Some(Duration::from_secs(86_400 * 5)),
            ..SqliteConfig::default()
        },
    )
    .unwrap();
    let sensor = SigningKey::from_bytes(&[9; 32]);
    let mut rng = Rng(11);
    let mut evidence = Vec::new();
    for (seq, shift) in [(1u64, 0u64), (2, 6 * DAY)] {
        let flows: Vec<_> = (0..40)
            .map(|i| {
                let mut r = record(&mut rng, seq * 100 + i);
                r.first_seen_ns += shift;
                r.last_seen_ns += shift;
                r
            })
            .collect();
        for i in if seq == 1 { vec![3, 17] } else { vec![5] } {
            evidence.push(EvidenceRef {
                sensor_id: "s1".into(),
                flow_id: flows[i].flow_id,
                first_ns: flows[i].first_seen_ns,
            });
        }
        let mut b = signed(batch("s1", seq, flows), &sensor);
        b.attestation.as_mut().unwrap().pin = seq == 1;
        store.commit(&b).unwrap();
    }
    store
        .put_alerts(&[AlertUpdate {
            alert: alert(evidence),
            opened: true,
        }])
        .unwrap();
    let key = CollectorKey::load_or_create(&dir.path().join(DEFAULT_KEY)).unwrap();
    (dir, store, key, sensor)
}

fn opts(sensor: &SigningKey, key: &CollectorKey) -> VerifyOptions {
    VerifyOptions {
        collector_key: Some(key.verifying_key()),
        sensor_keys: [("s1".to_string(), sensor.verifying_key())].into(),
        allow_unattested: false,
    }
}

#[test]
fn a_bundle_verifies_and_says_what_it_holds() {
    let (_d, store, key, sensor) = store();
    assert_eq!(store.pinned_keys().unwrap().len(), 1);
    let e = export(&store, &key, 1, T0).unwrap();
    assert_eq!((e.flows, e.attested), (3, 3));
    let v = verify(&e.bytes, &opts(&sensor, &key)).unwrap();
    assert_eq!((v.alert_id, v.flows, v.attested, v.batches), (1, 3, 3, 2));
    assert!(v.notes.is_empty(), "every key was given: {:?}", v.notes);
    // Without keys: verified with the bundle's own, and said so.
    let v = verify(&e.bytes, &VerifyOptions::default()).unwrap();
    assert_eq!(v.notes.len(), 2, "{:?}", v.notes);
    // Another collector's key, or another sensor's: named.
    let other = SigningKey::from_bytes(&[1; 32]);
    let mut o = opts(&sensor, &key);
    o.collector_key = Some(other.verifying_key());
    let err = verify(&e.bytes, &o).unwrap_err();
    assert_eq!(err.place, "manifest.json", "{err}");
    let mut o = opts(&sensor, &key);
    o.sensor_keys.insert("s1".into(), other.verifying_key());
    let err = verify(&e.bytes, &o).unwrap_err();
    assert!(
        err.place.starts_with("attestation/batches.jsonl line 1"),
        "{err}"
    );
    assert!(export(&store, &key, 99, T0).is_err());
}

#[test]
fn proofs_outlive_retention_of_their_batch_mates() {
    let (_d, store, key, sensor) = store();
    // Everything older than 5 days before T0 + 8 days goes: the first
    // batch but its two evidence records.
    let r = store.enforce_retention(T0 + 8 * DAY).unwrap();
    assert_eq!(r.deleted_flows, 38);
    let e = export(&store, &key, 1, T0).unwrap();
    assert_eq!(e.attested, 3, "the proofs come from the kept leaves");
    verify(&e.bytes, &opts(&sensor, &key)).unwrap();
    // Then the second batch's time goes too: its evidence record stays
    // provable; a batch with nothing left is forgotten.
    store.enforce_retention(T0 + 20 * DAY).unwrap();
    let e = export(&store, &key, 1, T0).unwrap();
    assert_eq!(e.attested, 3);
    verify(&e.bytes, &opts(&sensor, &key)).unwrap();
}

#[test]
fn unattested_flows_fail_unless_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), SqliteConfig::default()).unwrap();
    let mut rng = Rng(3);
    let flows: Vec<_> = (0..4).map(|i| record(&mut rng, i)).collect();
    let ev = vec![EvidenceRef {
        sensor_id: "old".into(),
        flow_id: flows[1].flow_id,
        first_ns: flows[1].first_seen_ns,
    }];
    store.commit(&batch("old", 1, flows)).unwrap();
    store
        .put_alerts(&[AlertUpdate {
            alert: alert(ev),
            opened: true,
        }])
        .unwrap();
    let key = CollectorKey::load_or_create(&dir.path().join(DEFAULT_KEY)).unwrap();
    let e = export(&store, &key, 1, T0).unwrap();
    assert_eq!((e.flows, e.attested), (1, 0));
    let mut o = VerifyOptions {
        collector_key: Some(key.verifying_key()),
        ..VerifyOptions::default()
    };
    let err = verify(&e.bytes, &o).unwrap_err();
    assert!(
        err.place.starts_with("flows.jsonl line 1 (sensor old")
            && err
                .problem
                .contains("not attested by its sensor (its batch was not attested"),
        "{err}"
    );
    o.allow_unattested = true;
    let v = verify(&e.bytes, &o).unwrap();
    assert_eq!((v.flows, v.attested), (1, 0));
}

#[test]
fn what_is_not_a_bundle_is_named() {
    for (bytes, want) in [
        (&b""[..], "manifest.json"),
        (
            &b"not a tar at all, just some text that is long enough"[..],
            "the bundle",
        ),
    ] {
        let err = verify(bytes, &VerifyOptions::default()).unwrap_err();
        assert!(err.to_string().contains(want), "{err}");
    }
}
