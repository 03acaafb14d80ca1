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

/// Alert `id` as stored, with up to `max_flows` of its evidence flows (what
/// its STIX objects are made from); `None`: no such alert.
pub fn alert_with_flows<S: crate::store::Store + ?Sized>(
    store: &S,
    id: u64,
    max_flows: usize,
) -> Result<
    Option<(crate::model::alert::Alert, Vec<vigil_proto::FlowRecord>)>,
    crate::store::StoreError,
> {
    let Some(a) = store.alert(id)? else {
        return Ok(None);
    };
    let n = max_flows.min(a.evidence.len());
    let flows = store
        .evidence_flows(&a.evidence[..n])?
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    Ok(Some((a, flows)))
}
pub use cryptopan::CryptoPan;
#[cfg(test)]
mod tests;
