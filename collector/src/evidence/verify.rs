//! Offline verification of an evidence bundle ([`super::bundle`]): the
//! collector's signature over the manifest, every member's digest and
//! size, every batch's signature by its sensor, and every flow's Merkle
//! path to its batch's signed root, with the flow as `flows.jsonl` shows
//! it equal to the record its sensor signed. The first failure is named:
//! the member, or the flow's line, its sensor and what does not hold.

use std::collections::{BTreeMap, HashMap};
use std::io::Read as _;

use base64::Engine as _;
use ed25519_dalek::{Verifier as _, VerifyingKey};
use prost::Message as _;
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use thiserror::Error;
use vigil_proto::attest::{Statement, hex, unhex};
use vigil_proto::merkle::{self, Hash};
use vigil_proto::{FlowRecord, pb};

use super::bundle::{FORMAT, key_file};
use super::fingerprint;

/// What the verifier is given besides the bundle.
#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    /// The collector's public key, obtained by another channel; `None`:
    /// the bundle's own `collector.pub.pem` (then only its fingerprint
    /// says whose it is).
    pub collector_key: Option<VerifyingKey>,
    /// Sensors' public keys, obtained by another channel; the others are
    /// taken from the bundle.
    pub sensor_keys: HashMap<String, VerifyingKey>,
    /// Accept flows without a sensor attestation (they rest on the
    /// collector's signature alone).
    pub allow_unattested: bool,
}

/// A bundle that verified.
#[derive(Clone, Debug, Default)]
pub struct Verified {
    /// The alert.
    pub alert_id: u64,
    /// The collector key's fingerprint.
    pub collector_key: String,
    /// Flows in `flows.jsonl`.
    pub flows: usize,
    /// Of them, proven to be in a batch their sensor signed.
    pub attested: usize,
    /// Batches whose signatures were checked.
    pub batches: usize,
    /// `completeness.json`'s verdict.
    pub complete: bool,
    /// What the reader should know: keys taken from the bundle itself.
    pub notes: Vec<String>,
    /// The partner it was anonymized for, if it was (then no flow is
    /// attested: the sensors signed the original records).
    pub anonymized_for: Option<String>,
}

/// What a bundle's manifest says of it (unverified).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestInfo {
    /// The alert.
    pub alert: u64,
    /// Whether it is anonymized for a partner.
    pub anonymized: bool,
}

/// Reads a bundle's manifest, without verifying anything.
pub fn bundle_manifest(bundle: &[u8]) -> Result<ManifestInfo, VerifyError> {
    let files = read_tar(bundle)?;
    let m = files.get("manifest.json").ok_or_else(|| VerifyError {
        place: "manifest.json".into(),
        problem: "missing from the archive".into(),
    })?;
    let v: Value =
        serde_json::from_slice(m).or_else(|e| fail("manifest.json", format!("not JSON: {e}")))?;
    if v["format"] != FORMAT {
        return fail(
            "manifest.json",
            format!("format {}, not {FORMAT}", v["format"]),
        );
    }
    Ok(ManifestInfo {
        alert: v["alert_id"].as_u64().unwrap_or(0),
        anonymized: v["anonymized"].is_object(),
    })
}

/// Why a bundle does not verify: the first failure.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("{place}: {problem}")]
pub struct VerifyError {
    /// The member, or the member and line.
    pub place: String,
    /// What does not hold.
    pub problem: String,
}

fn fail<T>(place: impl Into<String>, problem: impl Into<String>) -> Result<T, VerifyError> {
    Err(VerifyError {
        place: place.into(),
        problem: problem.into(),
    })
}

/// Reads a tar's regular files: path → bytes, refusing duplicates.
fn read_tar(bytes: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, VerifyError> {
    let mut out = BTreeMap::new();
    let mut ar = tar::Archive::new(bytes);
    let entries = ar
        .entries()
        .or_else(|e| fail("the bundle", format!("not a tar archive: {e}")))?;
    for e in entries {
        let mut e = e.or_else(|e| fail("the bundle", format!("damaged tar archive: {e}")))?;
        let path = e
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .or_else(|e| fail("the bundle", format!("unreadable member name: {e}")))?;
        if !e.header().entry_type().is_file() {
            return fail(path, "not a regular file");
        }
        let mut data = Vec::new();
        e.read_to_end(&mut data)
            .or_else(|err| fail(path.clone(), format!("unreadable: {err}")))?;
        if out.insert(path.clone(), data).is_some() {
            return fail(path, "appears twice in the archive");
        }
    }
    Ok(out)
}

fn key_from_pem(place: &str, pem: &[u8]) -> Result<VerifyingKey, VerifyError> {
    let s = std::str::from_utf8(pem).or_else(|_| fail(place, "not PEM text"))?;
    vigil_proto::keys::public_from_pem(s)
        .or_else(|e| fail(place, format!("not an Ed25519 public key: {e}")))
}

/// Verifies a bundle's bytes.
pub fn verify(bundle: &[u8], opts: &VerifyOptions) -> Result<Verified, VerifyError> {
    let files = read_tar(bundle)?;
    let get = |p: &str| {
        files.get(p).map(Vec::as_slice).ok_or_else(|| VerifyError {
            place: p.into(),
            problem: "missing from the archive".into(),
        })
    };
    let mut out = Verified::default();

    // 1. The manifest and the collector's signature.
    let manifest_bytes = get("manifest.json")?;
    let manifest: Value = serde_json::from_slice(manifest_bytes)
        .or_else(|e| fail("manifest.json", format!("not JSON: {e}")))?;
    if manifest["format"] != FORMAT {
        return fail(
            "manifest.json",
            format!(
                "format {} (this verifier reads {FORMAT})",
                manifest["format"]
            ),
        );
    }
    let claimed = manifest["collector_key"].as_str().unwrap_or_default();
    let key = match &opts.collector_key {
        Some(k) => *k,
        None => {
            let k = key_from_pem("collector.pub.pem", get("collector.pub.pem")?)?;
            out.notes.push(format!(
                "the collector's key was taken from the bundle ({}): compare it with the \
                 collector's, obtained by another channel, or give --key",
                fingerprint(&k)
            ));
            k
        }
    };
    out.collector_key = fingerprint(&key);
    if claimed != out.collector_key {
        return fail(
            "manifest.json",
            format!(
                "collector_key {claimed} is not the collector's key ({})",
                out.collector_key
            ),
        );
    }
    let sig = get("manifest.sig")?;
    let sig = <[u8; 64]>::try_from(sig).or_else(|_| {
        fail(
            "manifest.sig",
            format!("{} bytes (an Ed25519 signature has 64)", sig.len()),
        )
    })?;
    key.verify(manifest_bytes, &ed25519_dalek::Signature::from_bytes(&sig))
        .or_else(|_| {
            fail(
                "manifest.sig",
                format!(
                    "not the signature of manifest.json by {}",
                    out.collector_key
                ),
            )
        })?;
    out.alert_id = manifest["alert_id"].as_u64().unwrap_or(0);

    // 2. The members.
    let members = manifest["members"].as_array().ok_or_else(|| VerifyError {
        place: "manifest.json".into(),
        problem: "no members list".into(),
    })?;
    let mut listed = std::collections::BTreeSet::new();
    for m in members {
        let path = m["path"].as_str().unwrap_or_default();
        let data = get(path)?;
        if m["bytes"].as_u64() != Some(data.len() as u64) {
            return fail(
                path,
                format!("{} bytes, the manifest says {}", data.len(), m["bytes"]),
            );
        }
        let digest = hex(&Sha256::digest(data));
        if m["sha256"].as_str() != Some(digest.as_str()) {
            return fail(
                path,
                format!("SHA-256 {digest}, the manifest says {}", m["sha256"]),
            );
        }
        listed.insert(path.to_string());
    }
    for p in files.keys() {
        if p != "manifest.json" && p != "manifest.sig" && !listed.contains(p) {
            return fail(p.clone(), "in the archive but not in manifest.json");
        }
    }

    // An anonymized bundle: the collector's signature is all there is.
    if let Some(a) = manifest["anonymized"].as_object() {
        let partner = a
            .get("partner")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        for p in files.keys() {
            if p.starts_with("attestation/") {
                return fail(
                    p.clone(),
                    "an anonymized bundle carries no sensor attestation",
                );
            }
        }
        let flows = std::str::from_utf8(get("flows.jsonl")?)
            .or_else(|_| fail("flows.jsonl", "not UTF-8"))?;
        for (n, f) in flows.lines().enumerate() {
            serde_json::from_str::<Value>(f).or_else(|e| {
                fail(
                    format!("flows.jsonl line {}", n + 1),
                    format!("not JSON: {e}"),
                )
            })?;
            out.flows += 1;
        }
        let comp: Value = serde_json::from_slice(get("completeness.json")?)
            .or_else(|e| fail("completeness.json", format!("not JSON: {e}")))?;
        out.complete = comp["complete"] == Value::Bool(true);
        out.notes.push(format!(
            "anonymized for partner {partner:?}: its flows rest on the collector's signature \
             alone (the sensors attested the original records)"
        ));
        out.anonymized_for = Some(partner);
        return Ok(out);
    }

    // 3. The batches, each signed by its sensor.
    let mut roots: HashMap<(String, u64, u64), (u64, Hash)> = HashMap::new();
    let mut bundle_keys_used = BTreeMap::new();
    let batches = std::str::from_utf8(get("attestation/batches.jsonl")?)
        .or_else(|_| fail("attestation/batches.jsonl", "not UTF-8"))?;
    for (n, line) in batches.lines().enumerate() {
        let place = format!("attestation/batches.jsonl line {}", n + 1);
        let b: Value =
            serde_json::from_str(line).or_else(|e| fail(&place, format!("not JSON: {e}")))?;
        let sensor = b["sensor_id"].as_str().unwrap_or_default().to_string();
        let bytes =
            unhex(b["statement"].as_str().unwrap_or_default()).ok_or_else(|| VerifyError {
                place: place.clone(),
                problem: "statement is not hex".into(),
            })?;
        let st = Statement::parse(&bytes).or_else(|e| fail(&place, e.to_string()))?;
        let inc = u64::from_str_radix(b["incarnation"].as_str().unwrap_or_default(), 16).ok();
        if st.sensor_id != sensor
            || Some(st.incarnation) != inc
            || Some(st.seq) != b["seq"].as_u64()
            || Some(st.size) != b["size"].as_u64()
            || Some(hex(&st.root).as_str()) != b["root"].as_str()
        {
            return fail(
                &place,
                "the signed statement does not say what the line says",
            );
        }
        let fp = b["key"].as_str().unwrap_or_default();
        let key = match opts.sensor_keys.get(&sensor) {
            Some(k) => {
                if fingerprint(k) != fp {
                    return fail(
                        &place,
                        format!(
                            "sensor {sensor} signed with key {fp}, not the key given for it ({})",
                            fingerprint(k)
                        ),
                    );
                }
                *k
            }
            None => {
                let file = key_file(fp);
                let k = key_from_pem(&file, get(&file)?)?;
                if fingerprint(&k) != fp {
                    return fail(file, format!("holds key {}, not {fp}", fingerprint(&k)));
                }
                bundle_keys_used.insert(sensor.clone(), fp.to_string());
                k
            }
        };
        let sig = unhex(b["signature"].as_str().unwrap_or_default()).unwrap_or_default();
        st.verify(&key, &sig).or_else(|e| {
            fail(
                &place,
                format!("sensor {sensor}, batch seq {}: {e}", st.seq),
            )
        })?;
        roots.insert((sensor, st.incarnation, st.seq), (st.size, st.root));
        out.batches += 1;
    }
    for (sensor, fp) in bundle_keys_used {
        out.notes.push(format!(
            "sensor {sensor}'s key was taken from the bundle ({fp}): compare it with the \
             sensor's, or give --sensor-key {sensor}=PEM"
        ));
    }

    // 4. Every flow against its proof.
    let flows =
        std::str::from_utf8(get("flows.jsonl")?).or_else(|_| fail("flows.jsonl", "not UTF-8"))?;
    let proofs = std::str::from_utf8(get("attestation/proofs.jsonl")?)
        .or_else(|_| fail("attestation/proofs.jsonl", "not UTF-8"))?;
    let (flows, proofs): (Vec<&str>, Vec<&str>) =
        (flows.lines().collect(), proofs.lines().collect());
    if flows.len() != proofs.len() {
        return fail(
            "attestation/proofs.jsonl",
            format!(
                "{} lines for the {} of flows.jsonl",
                proofs.len(),
                flows.len()
            ),
        );
    }
    for (n, (f, p)) in flows.iter().zip(&proofs).enumerate() {
        let line = n + 1;
        let shown: Value = serde_json::from_str(f)
            .or_else(|e| fail(format!("flows.jsonl line {line}"), format!("not JSON: {e}")))?;
        let p: Value = serde_json::from_str(p).or_else(|e| {
            fail(
                format!("attestation/proofs.jsonl line {line}"),
                format!("not JSON: {e}"),
            )
        })?;
        let sensor = p["sensor_id"].as_str().unwrap_or_default().to_string();
        let place = format!(
            "flows.jsonl line {line} (sensor {sensor}, flow {})",
            shown["flow_id"]
        );
        if p["line"].as_u64() != Some(line as u64) {
            return fail(
                &place,
                "its proof is not on the same line of attestation/proofs.jsonl",
            );
        }
        if p["attested"] == Value::Bool(false) {
            if opts.allow_unattested {
                continue;
            }
            return fail(
                &place,
                format!(
                    "not attested by its sensor ({})",
                    p["reason"].as_str().unwrap_or("no reason given")
                ),
            );
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(p["record"].as_str().unwrap_or_default())
            .or_else(|e| fail(&place, format!("its record is not base64: {e}")))?;
        let rec = pb::Flow::decode(bytes.as_slice())
            .ok()
            .and_then(|f| FlowRecord::try_from(&f).ok())
            .ok_or_else(|| VerifyError {
                place: place.clone(),
                problem: "its signed record is not a vigil.v1.Flow".into(),
            })?;
        if serde_json::to_value(&rec).ok().as_ref() != Some(&shown) {
            return fail(&place, "differs from the record its sensor signed");
        }
        let inc = u64::from_str_radix(p["batch"]["incarnation"].as_str().unwrap_or_default(), 16)
            .unwrap_or(0);
        let seq = p["batch"]["seq"].as_u64().unwrap_or(0);
        let Some((size, root)) = roots.get(&(sensor.clone(), inc, seq)) else {
            return fail(
                &place,
                format!("its batch (seq {seq}) is not among the signed batches"),
            );
        };
        let path: Option<Vec<Hash>> = p["path"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|h| {
                        unhex(h.as_str().unwrap_or_default()).and_then(|b| Hash::try_from(b).ok())
                    })
                    .collect()
            })
            .unwrap_or(None);
        let index = p["index"].as_u64().unwrap_or(u64::MAX);
        let leaf = merkle::leaf_hash(&bytes);
        if !path.is_some_and(|path| merkle::verify(&leaf, index, *size, &path, root)) {
            return fail(
                &place,
                format!(
                    "its Merkle path does not lead to the root sensor {sensor} signed for batch seq {seq}"
                ),
            );
        }
        out.attested += 1;
    }
    out.flows = flows.len();

    // 5. Completeness, as the collector reported it.
    let comp: Value = serde_json::from_slice(get("completeness.json")?)
        .or_else(|e| fail("completeness.json", format!("not JSON: {e}")))?;
    out.complete = comp["complete"] == Value::Bool(true);
    Ok(out)
}
