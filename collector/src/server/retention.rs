//! Periodic upkeep on a blocking thread: retention, the store's own rules
//! (`store.max_age`, `store.max_bytes`), every interval; and the building
//! of what speeds queries (column segments) every second.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::failure::Failure;
use crate::store::{Retention, Store};

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

/// Builds the store's column segments every second until aborted (a
/// segment closes every [`SEGMENT_ROWS`](crate::store::columns::SEGMENT_ROWS)
/// flows).
pub fn spawn_columns(store: Arc<dyn Store>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let store = store.clone();
            match tokio::task::spawn_blocking(move || store.build_columns()).await {
                Ok(Ok(n)) if n > 0 => tracing::debug!(segments = n, "column segments built"),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => Failure::from(&e).log("building column segments failed", "columns"),
                Err(e) => Failure::from(e).log("building column segments failed", "columns"),
            }
        }
    })
}
