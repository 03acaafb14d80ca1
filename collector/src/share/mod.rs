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
/// Alert `id` as a STIX 2.1 bundle for no partner in particular (what
/// `vigil alerts export --format stix --id N` gives): marked `tlp` (else
/// `[share] tlp`, else amber), its observables bounded by `[share]
/// max_observations`, pointing to the last evidence bundle exported for it
/// (from the ledger in `data_dir`, when there is one); `None`: no such
/// alert.
pub fn plain_bundle<S: crate::store::Store + ?Sized>(
    store: &S,
    config: Option<&ShareConfig>,
    collector: &str,
    data_dir: &std::path::Path,
    id: u64,
    tlp: Option<Tlp>,
) -> Result<Option<serde_json::Value>, crate::store::StoreError> {
    /// Evidence flows read for the observables (the CLI's default).
    const MAX_FLOWS: usize = 10_000;
    let Some((alert, flows)) = alert_with_flows(store, id, MAX_FLOWS)? else {
        return Ok(None);
    };
    let bundle = if data_dir.as_os_str().is_empty() {
        None
    } else {
        ledger::Ledger::open_existing(data_dir)
            .ok()
            .flatten()
            .and_then(|l| l.latest_export(id, "").ok().flatten())
            .map(|sha256| stix::BundleRef {
                sha256,
                anonymized: false,
            })
    };
    let operator = config.map(|c| c.operator.clone()).unwrap_or_default();
    let cx = stix::Context {
        operator: &operator,
        collector,
        partner: None,
        tlp: tlp.unwrap_or(config.map_or(Tlp::Amber, |c| c.tlp)),
        max_observations: config.map_or(100, |c| c.max_observations),
        anonymize: None,
        ours: config.map(|c| &c.ours),
    };
    let pa = vigil_proto::pb::Alert::from(&alert);
    let mut objects = cx.common();
    objects.extend(stix::alert_objects(
        &cx,
        stix::AlertInput {
            alert: &pa,
            flows: &flows,
            bundle: bundle.as_ref(),
        },
    ));
    Ok(Some(stix::bundle(objects)))
}

pub use cryptopan::CryptoPan;
#[cfg(test)]
mod tests;
