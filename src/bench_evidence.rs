//! `vigil bench --modes evidence`: the cost of an evidence bundle. An
//! embedded store holds batches signed as a sensor signs them; an alert
//! names `--evidence-flows` of their records; the bundle is exported and
//! verified, each timed (median of `--runs`).

use std::time::Instant;

use anyhow::Context as _;
use ed25519_dalek::SigningKey;
use vigil_collector::evidence::{CollectorKey, VerifyOptions, export};
use vigil_collector::model::alert::{
    Alert, AlertKind, AlertUpdate, Criticality, EvidenceRef, Severity,
};
use vigil_collector::model::ingest::IngestBatch;
use vigil_collector::store::prelude::*;
use vigil_collector::store::sqlite::{SqliteConfig, SqliteStore, Synchronous};

use crate::Failure;
use crate::bench_e2e::Synthetic;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn evidence(runs: usize, evidence_flows: u64) -> Result<(), Failure> {
    let tmp = tempfile::tempdir().context("temporary directory")?;
    let store = SqliteStore::open(
        tmp.path(),
        SqliteConfig {
            synchronous: Synchronous::Normal,
            ..SqliteConfig::default()
        },
    )?;
    let sensor = SigningKey::from_bytes(&[7; 32]);
    // Four records stored for each one named, in batches of 2048: the
    // evidence is spread over its batches as a flood's is.
    let total = evidence_flows * 4;
    let t0 = 1_700_000_000_000_000_000;
    let mut synth = Synthetic::new(total, t0);
    let (mut seq, mut refs) = (0u64, Vec::new());
    while let Some(flows) = synth.batch(2048) {
        seq += 1;
        for r in flows.iter().step_by(4) {
            refs.push(EvidenceRef {
                sensor_id: "bench".into(),
                flow_id: r.flow_id,
                first_ns: r.first_seen_ns,
            });
        }
        let b = IngestBatch {
            attestation: None,
            certificate: None,
            sensor_id: "bench".into(),
            seq,
            incarnation: 1,
            flows,
            stats: None,
            received_ns: t0,
        };
        store.commit(&b.signed_by(&sensor))?;
    }
    refs.truncate(evidence_flows as usize);
    let (first, last) = refs.iter().fold((u64::MAX, 0), |(a, b), e| {
        (a.min(e.first_ns), b.max(e.first_ns))
    });
    let alert = Alert {
        id: 1,
        kind: AlertKind::SynFlood,
        technique: String::new(),
        technique_name: String::new(),
        matrix: String::new(),
        severity: Severity::High,
        asset: "bench".into(),
        sector: String::new(),
        criticality: Criticality::High,
        summary: "bench".into(),
        sources: Vec::new(),
        source_count: 0,
        targets: Vec::new(),
        target_count: 0,
        first_seen_ns: first,
        last_seen_ns: last,
        raised_ns: first,
        measured: 0.0,
        threshold: 0.0,
        unit: String::new(),
        updates: 0,
        evidence_count: refs.len() as u64,
        evidence: refs,
        detector: String::new(),
    };
    store.put_alerts(&[AlertUpdate {
        alert,
        opened: true,
    }])?;
    let key = CollectorKey::load_or_create(&tmp.path().join("key.pem"))?;
    let opts = VerifyOptions {
        collector_key: Some(key.verifying_key()),
        sensor_keys: [("bench".to_string(), sensor.verifying_key())].into(),
        allow_unattested: false,
    };
    println!(
        "evidence: an alert naming {evidence_flows} of {total} stored records ({seq} signed batches of 2048), SQLite"
    );
    let refs = store.alert(1)?.map(|a| a.evidence).unwrap_or_default();
    let (mut ex, mut ver, mut plain) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        let t = Instant::now();
        let e = export(&store, &key, 1, t0)?;
        let te = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let v = vigil_collector::evidence::verify::verify(&e.bytes, &opts)
            .map_err(|e| anyhow::anyhow!("the bundle does not verify: {e}"))?;
        let tv = t.elapsed().as_secs_f64();
        println!(
            "  run {}: export {:.3} s ({} flows, {} attested, {:.1} MB, {:.0} bytes/flow), verify {:.3} s ({} batches)",
            run + 1,
            te,
            e.flows,
            e.attested,
            e.bytes.len() as f64 / 1e6,
            e.bytes.len() as f64 / e.flows as f64,
            tv,
            v.batches
        );
        // The peer: the same flows read and written as JSON lines, as
        // `vigil alerts show --format jsonl` does (no proofs, no signing).
        let t = Instant::now();
        let mut out = String::new();
        for (_, r) in store.evidence_flows(&refs)? {
            out.push_str(&serde_json::to_string(&r).unwrap_or_default());
            out.push('\n');
        }
        let tp = t.elapsed().as_secs_f64();
        println!(
            "  run {}: the same flows read as JSON lines: {:.3} s ({:.1} MB)",
            run + 1,
            tp,
            out.len() as f64 / 1e6
        );
        ex.push(te);
        ver.push(tv);
        plain.push(tp);
    }
    println!(
        "  median: export {:.3} s, verify {:.3} s; the flows read as JSON lines {:.3} s",
        median(ex),
        median(ver),
        median(plain)
    );
    Ok(())
}
