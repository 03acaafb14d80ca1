//! Sharing with other defenders: alerts as STIX 2.1, pushed to partners'
//! TAXII 2.1 collections, with each partner's policy (which alerts, which
//! TLP marking, which addresses anonymized by Crypto-PAn).

pub mod anon;
pub mod config;
pub mod cryptopan;
pub mod ledger;
pub mod push;
pub mod stix;
pub mod taxii;

pub use config::{Partner, ShareConfig, ShareSection, Tlp};
pub use cryptopan::CryptoPan;
#[cfg(test)]
mod tests;
