//! Periodic retention: the store's own rules (`store.max_age`,
//! `store.max_bytes`), applied on a blocking thread every interval.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::failure::Failure;
use crate::store::Retention;

/// Applies retention every `interval` until aborted.
pub fn spawn(store: Arc<dyn Retention>, interval: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let store = store.clone();
            let now = vigil_proto::time::now_ns();
            match tokio::task::spawn_blocking(move || store.enforce_retention(now)).await {
                Ok(Ok(r)) if r.deleted_flows > 0 => {
                    tracing::info!(deleted_flows = r.deleted_flows, "retention applied");
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => Failure::from(&e).log("retention failed", "retention"),
                Err(e) => Failure::from(e).log("retention failed", "retention"),
            }
        }
    })
}
