//! Evidence (issue #26): what a collector signs and keeps so that a third
//! party can check an alert's flows offline, without trusting it.
//!
//! - The collector's Ed25519 signing key ([`CollectorKey`]), made on its
//!   first start as a PKCS#8 PEM file readable by its owner only (0600),
//!   at `evidence.signing_key` or, by default, [`DEFAULT_KEY`] under the
//!   data directory, with its public half beside it (`signing-key.pub.pem`).
//! - The sensors' attestation keys ([`SensorKeys`]): configured per
//!   sensor, or pinned on first contact, after which a batch signed with
//!   another key is refused.
//! - An alert's evidence bundle ([`bundle`]): its flows, the sensors'
//!   signed batch roots and the Merkle paths to them, the detector
//!   settings in force, the sensors' [`completeness()`] over its window,
//!   signed by the collector; [`verify`] checks one offline.

pub mod bundle;
pub mod completeness;
mod sensors;
pub mod verify;

pub use bundle::{ExportError, Exported, ForPartner, export, export_for};
pub use completeness::{Completeness, completeness};
pub use sensors::{KeyCheck, KeyRefusal, SensorKeys};
pub use verify::{ManifestInfo, Verified, VerifyError, VerifyOptions, bundle_manifest};
pub use vigil_proto::keys::{
    KeyError, KeyFile as CollectorKey, fingerprint, public_path, public_pem,
};

/// The key file under a data directory, by default.
pub const DEFAULT_KEY: &str = "evidence/signing-key.pem";
#[cfg(test)]
mod tests;
