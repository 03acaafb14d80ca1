//! An alert's evidence bundle: one POSIX tar that a third party verifies
//! offline (see [`super::verify`] and the bundle's own `README.txt`).
//!
//! Members, in this order:
//! - `manifest.json`: the format, the alert, the collector key's
//!   fingerprint, the time made, and every other member's path, SHA-256
//!   and size;
//! - `manifest.sig`: the raw 64-byte Ed25519 signature of
//!   `manifest.json`'s bytes by the collector's key;
//! - `alert.json`, `flows.jsonl`, `detector.json`, `sensors.json`,
//!   `completeness.json`;
//! - `attestation/batches.jsonl` (each batch an evidence flow came in:
//!   its signed statement and the sensor's signature),
//!   `attestation/proofs.jsonl` (for each line of `flows.jsonl`: the
//!   record's bytes as the sensor sent them and their Merkle path to the
//!   batch's root), `attestation/keys/*.pub.pem` (the sensors' keys);
//! - `collector.pub.pem`, `README.txt`, and `SHA256SUMS` (`sha256sum -c`
//!   input for all of the above).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use base64::Engine as _;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use thiserror::Error;
use vigil_proto::attest::{Statement, hex};
use vigil_proto::merkle::{self, Hash};
use vigil_proto::time::Rfc3339Nanos;

use super::CollectorKey;
use super::completeness::completeness;
use crate::model::alert::alert_show_json;
use crate::model::evidence::{BatchKey, StoredBatch};
use crate::share::anon::{anonymize_flow, anonymize_json};
use crate::share::config::Anonymizer;
use crate::store::{Store, StoreError};

/// The bundle format, in `manifest.json`.
pub const FORMAT: &str = "vigil-evidence-bundle/1";

/// An export failed.
#[derive(Debug, Error)]
pub enum ExportError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No such alert.
    #[error("no alert {0}")]
    NoAlert(u64),
    /// The tar could not be written (in memory: a member too large).
    #[error("writing the bundle: {0}")]
    Tar(#[from] std::io::Error),
}

/// A bundle made.
#[derive(Clone, Debug)]
pub struct Exported {
    /// The tar.
    pub bytes: Vec<u8>,
    /// Evidence flows in it.
    pub flows: usize,
    /// Of them, with a proof to a signed batch root.
    pub attested: usize,
    /// Whether every sensor's figures over the alert's window are complete.
    pub complete: bool,
}

/// One batch's material: the stored batch and its records' leaves.
struct BatchMaterial {
    batch: StoredBatch,
    leaves: Vec<Option<Hash>>,
}

/// For whom a bundle is anonymized.
#[derive(Clone, Copy, Debug)]
pub struct ForPartner<'a> {
    /// The partner's name.
    pub partner: &'a str,
    /// Its anonymization.
    pub anonymizer: &'a Anonymizer,
}

/// Makes the evidence bundle of alert `alert_id`, signed by `key`, dated
/// `created_ns`.
pub fn export<S: Store + ?Sized>(
    store: &S,
    key: &CollectorKey,
    alert_id: u64,
    created_ns: u64,
) -> Result<Exported, ExportError> {
    export_for(store, key, alert_id, created_ns, None)
}

/// [`export`], anonymized for a partner when `anon` says so: every
/// address its policy hides replaced (Crypto-PAn) in every member, flows'
/// Community IDs removed, and no sensor attestation (it covers the
/// original records); the collector's signature alone vouches for it, and
/// `manifest.json` says so (`"anonymized"`).
pub fn export_for<S: Store + ?Sized>(
    store: &S,
    key: &CollectorKey,
    alert_id: u64,
    created_ns: u64,
    anon: Option<ForPartner<'_>>,
) -> Result<Exported, ExportError> {
    let alert = store
        .alert(alert_id)?
        .ok_or(ExportError::NoAlert(alert_id))?;
    let placed = store.placed_flows(&alert.evidence)?;
    // Each batch once: its stored attestation and its records' leaves.
    let mut batches: BTreeMap<BatchKey, Option<BatchMaterial>> = BTreeMap::new();
    for p in &placed {
        if let Some((k, _)) = &p.place
            && !batches.contains_key(k)
        {
            let m = match store.batch(k)? {
                Some(b) if b.attestation.is_some() => {
                    let leaves = store.batch_leaves(&b)?;
                    Some(BatchMaterial { batch: b, leaves })
                }
                _ => None,
            };
            batches.insert(k.clone(), m);
        }
    }
    // The proofs, batch by batch, in one walk of each tree.
    let mut wanted: HashMap<&BatchKey, Vec<usize>> = HashMap::new();
    for p in &placed {
        if let Some((k, i)) = &p.place {
            wanted.entry(k).or_default().push(*i as usize);
        }
    }
    let mut paths: HashMap<(&BatchKey, usize), Vec<Hash>> = HashMap::new();
    for (k, idx) in &wanted {
        let Some(Some(m)) = batches.get(*k) else {
            continue;
        };
        let Some(leaves) = m.leaves.iter().copied().collect::<Option<Vec<Hash>>>() else {
            continue;
        };
        for (i, p) in idx.iter().zip(merkle::proofs(&leaves, idx)) {
            if let Some(p) = p {
                paths.insert((*k, *i), p);
            }
        }
    }

    let mut flows = String::new();
    let mut proofs = String::new();
    let mut attested = 0usize;
    let mut buf = Vec::with_capacity(256);
    for (n, p) in placed.iter().enumerate() {
        let line = n + 1;
        if let Some(a) = anon {
            flows.push_str(&anonymize_flow(&p.record, a.anonymizer).to_string());
            flows.push('\n');
            continue;
        }
        flows.push_str(&serde_json::to_string(&p.record).unwrap_or_default());
        flows.push('\n');
        buf.clear();
        vigil_proto::attest::record_bytes(&p.record, &mut buf);
        let record = base64::engine::general_purpose::STANDARD.encode(&buf);
        let entry = match &p.place {
            None => json!({
                "line": line, "sensor_id": p.sensor_id, "flow_id": p.record.flow_id,
                "attested": false,
                "reason": "stored before batches were kept: no attestation",
            }),
            Some((k, i)) => match (batches.get(k), paths.get(&(k, *i as usize))) {
                (Some(Some(_)), Some(path)) => {
                    attested += 1;
                    json!({
                        "line": line, "sensor_id": p.sensor_id, "flow_id": p.record.flow_id,
                        "batch": {"incarnation": format!("{:016x}", k.incarnation), "seq": k.seq},
                        "index": i, "record": record,
                        "path": path.iter().map(|h| hex(h)).collect::<Vec<_>>(),
                    })
                }
                (Some(Some(_)), None) => json!({
                    "line": line, "sensor_id": p.sensor_id, "flow_id": p.record.flow_id,
                    "batch": {"incarnation": format!("{:016x}", k.incarnation), "seq": k.seq},
                    "index": i, "record": record, "attested": false,
                    "reason": "some records of its batch are no longer stored: no proof",
                }),
                _ => json!({
                    "line": line, "sensor_id": p.sensor_id, "flow_id": p.record.flow_id,
                    "batch": {"incarnation": format!("{:016x}", k.incarnation), "seq": k.seq},
                    "index": i, "record": record, "attested": false,
                    "reason": "its batch was not attested by the sensor",
                }),
            },
        };
        proofs.push_str(&entry.to_string());
        proofs.push('\n');
    }

    // The batches and the sensors' keys.
    let mut batch_lines = String::new();
    let mut keys: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
    for m in batches.values().flatten() {
        let Some(att) = &m.batch.attestation else {
            continue;
        };
        let Ok(vk) = vigil_proto::attest::verifying_key(&att.public_key) else {
            continue;
        };
        let fp = super::fingerprint(&vk);
        let k = &m.batch.key;
        let st = Statement {
            sensor_id: k.sensor_id.clone(),
            incarnation: k.incarnation,
            seq: k.seq,
            size: m.batch.size,
            root: att.root,
        };
        batch_lines.push_str(
            &json!({
                "sensor_id": k.sensor_id,
                "incarnation": format!("{:016x}", k.incarnation),
                "seq": k.seq,
                "size": m.batch.size,
                "root": hex(&att.root),
                "key": fp,
                "statement": hex(&st.to_bytes()),
                "signature": hex(&att.signature),
                "received": Rfc3339Nanos(m.batch.received_ns).to_string(),
            })
            .to_string(),
        );
        batch_lines.push('\n');
        keys.entry(fp.clone())
            .or_insert_with(|| (super::public_pem(&vk), BTreeSet::new()))
            .1
            .insert(k.sensor_id.clone());
    }
    let contributing: BTreeSet<&str> = placed.iter().map(|p| p.sensor_id.as_str()).collect();
    let mut sensors = Vec::new();
    for id in &contributing {
        let certs = store.sensor_certificates(id)?;
        let ks: Vec<_> = keys
            .iter()
            .filter(|(_, (_, ids))| ids.contains(*id))
            .map(|(fp, _)| json!({"fingerprint": fp, "file": key_file(fp)}))
            .collect();
        sensors.push(json!({
            "sensor_id": id,
            // Of the certificates it streamed with (mTLS), oldest first.
            "certificate_fingerprints": certs,
            "attestation_keys": ks,
        }));
    }

    let detector = match store.detector(&alert.detector)? {
        Some(body) => serde_json::from_str::<serde_json::Value>(&body).unwrap_or(json!(body)),
        None => serde_json::Value::Null,
    };
    let mut detector = json!({
        "kind": alert.kind.as_str(),
        "technique": alert.technique,
        "technique_name": alert.technique_name,
        "matrix": alert.matrix,
        "threshold": alert.threshold,
        "measured": alert.measured,
        "unit": alert.unit,
        "settings_sha256": alert.detector,
        "settings": detector,
        "exported_by": concat!("vigil ", env!("CARGO_PKG_VERSION")),
    });
    let comp = completeness(store, alert.first_seen_ns, alert.last_seen_ns)?;

    let mut alert_doc = alert_show_json(&vigil_proto::pb::Alert::from(&alert), Some(&comp));
    if let Some(a) = anon {
        anonymize_json(&mut alert_doc, a.anonymizer);
        anonymize_json(&mut detector, a.anonymizer);
        for s in &mut sensors {
            s["attestation_keys"] = json!([]);
        }
    }
    let alert_line = format!("{alert_doc}\n");
    let mut members: Vec<(String, Vec<u8>)> = vec![
        ("alert.json".into(), alert_line.into_bytes()),
        ("flows.jsonl".into(), flows.into_bytes()),
        ("detector.json".into(), pretty(&detector)),
        ("sensors.json".into(), pretty(&json!(sensors))),
        ("completeness.json".into(), pretty(&json!(comp))),
    ];
    match anon {
        None => {
            members.push(("attestation/batches.jsonl".into(), batch_lines.into_bytes()));
            members.push(("attestation/proofs.jsonl".into(), proofs.into_bytes()));
            for (fp, (pem, _)) in &keys {
                members.push((key_file(fp), pem.clone().into_bytes()));
            }
        }
        Some(a) => members.push((
            "ANONYMIZED.txt".into(),
            format!(
                "This bundle was made for partner {:?}: the addresses of the operator's \n\
                 networks are replaced by Crypto-PAn (prefix-preserving: two addresses that \n\
                 shared a prefix share one of the same length) in every member, and flows' \n\
                 Community IDs, hashes of the original addresses, are removed. The sensors' \n\
                 attestation covers the original records, so it is not included: only the \n\
                 collector's signature vouches for this bundle's contents.\n",
                a.partner
            )
            .into_bytes(),
        )),
    }
    members.push(("collector.pub.pem".into(), key.public_pem().into_bytes()));
    members.push(("README.txt".into(), README.as_bytes().to_vec()));
    let sums: String = members
        .iter()
        .map(|(p, b)| format!("{}  {p}\n", hex(&Sha256::digest(b))))
        .collect();
    members.push(("SHA256SUMS".into(), sums.into_bytes()));

    let manifest = manifest(
        &alert.id,
        key,
        created_ns,
        anon.map(|a| a.partner),
        &members,
    );
    let sig = key.sign(manifest.as_bytes());
    let mut tar = tar::Builder::new(Vec::new());
    let mtime = created_ns / 1_000_000_000;
    append(&mut tar, "manifest.json", manifest.as_bytes(), mtime)?;
    append(&mut tar, "manifest.sig", &sig, mtime)?;
    for (p, b) in &members {
        append(&mut tar, p, b, mtime)?;
    }
    Ok(Exported {
        bytes: tar.into_inner()?,
        flows: placed.len(),
        attested,
        complete: comp.complete,
    })
}

/// Where a sensor key is in the bundle: by the first 16 hex digits of its
/// fingerprint.
pub(super) fn key_file(fingerprint: &str) -> String {
    let hexpart = fingerprint.trim_start_matches("sha256:");
    let short: String = hexpart.chars().take(16).collect();
    format!("attestation/keys/{short}.pub.pem")
}

fn pretty(v: &serde_json::Value) -> Vec<u8> {
    let mut b = serde_json::to_vec_pretty(v).unwrap_or_default();
    b.push(b'\n');
    b
}

/// `manifest.json`: one member per line, so that `grep` finds a member's
/// digest.
fn manifest(
    alert: &u64,
    key: &CollectorKey,
    created_ns: u64,
    anonymized_for: Option<&str>,
    members: &[(String, Vec<u8>)],
) -> String {
    let mut m = String::from("{\n");
    let field = |k: &str, v: serde_json::Value| format!("  {}: {},\n", json!(k), v);
    m.push_str(&field("format", json!(FORMAT)));
    m.push_str(&field("alert_id", json!(alert)));
    m.push_str(&field("collector_key", json!(key.fingerprint())));
    m.push_str(&field(
        "created",
        json!(Rfc3339Nanos(created_ns).to_string()),
    ));
    m.push_str(&field(
        "software",
        json!(concat!("vigil ", env!("CARGO_PKG_VERSION"))),
    ));
    if let Some(p) = anonymized_for {
        m.push_str(&field(
            "anonymized",
            json!({"partner": p, "method": "Crypto-PAn", "attested": false}),
        ));
    }
    m.push_str("  \"members\": [\n");
    for (i, (p, b)) in members.iter().enumerate() {
        let line = json!({"path": p, "sha256": hex(&Sha256::digest(b)), "bytes": b.len()});
        m.push_str(&format!(
            "    {line}{}\n",
            if i + 1 < members.len() { "," } else { "" }
        ));
    }
    m.push_str("  ]\n}\n");
    m
}

fn append(
    tar: &mut tar::Builder<Vec<u8>>,
    path: &str,
    data: &[u8],
    mtime: u64,
) -> std::io::Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_path(path)?;
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(mtime);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    tar.append(&h, data)
}

/// The bundle's `README.txt`.
pub const README: &str = include_str!("bundle-readme.txt");
