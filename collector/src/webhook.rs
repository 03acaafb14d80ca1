//! Alerts POSTed as JSON to a webhook, with retries.
//!
//! Each alert update becomes one request, body
//! `{"event": "opened"|"updated", "alert": {…}}` (the alert as `vigil alerts
//! show --format json` prints it, with the evidence this update added). A
//! failed attempt (connection error, timeout or a non-2xx answer) is retried
//! with exponential backoff (0.5 s, 1 s, 2 s, …) up to the configured
//! number of attempts; then the update is dropped, counted and logged. The
//! queue holds 4096 updates; beyond that they are dropped and counted, so a
//! dead webhook never slows ingest. Only `http://` is supported.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::model::alert::{Alert, AlertUpdate};

/// Where and how to POST.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    /// `http://HOST[:PORT]/PATH`.
    pub url: String,
    /// Attempts per update (at least 1).
    pub attempts: u32,
    /// Per-attempt timeout.
    pub timeout: Duration,
}

/// Counters of the webhook.
#[derive(Debug, Default)]
pub struct WebhookStats {
    /// Updates delivered.
    pub sent: AtomicU64,
    /// Attempts that failed (and were retried or given up).
    pub failed_attempts: AtomicU64,
    /// Updates given up after every attempt, or dropped at a full queue.
    pub dropped: AtomicU64,
}

#[derive(Serialize)]
struct Body<'a> {
    event: &'static str,
    alert: &'a Alert,
}

/// The sending side: hand it updates; it never blocks.
#[derive(Clone, Debug)]
pub struct Webhook {
    tx: mpsc::Sender<AlertUpdate>,
    /// Counters.
    pub stats: Arc<WebhookStats>,
}

impl Webhook {
    /// Starts the sender task on the current runtime.
    pub fn start(cfg: WebhookConfig) -> Webhook {
        let (tx, mut rx) = mpsc::channel::<AlertUpdate>(4096);
        let stats = Arc::new(WebhookStats::default());
        let st = stats.clone();
        tokio::spawn(async move {
            let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
            while let Some(u) = rx.recv().await {
                let body = match serde_json::to_vec(&Body {
                    event: if u.opened { "opened" } else { "updated" },
                    alert: &u.alert,
                }) {
                    Ok(b) => Bytes::from(b),
                    Err(e) => {
                        tracing::error!(error = %e, "encoding an alert for the webhook");
                        st.dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                };
                let mut delay = Duration::from_millis(500);
                let mut delivered = false;
                for attempt in 1..=cfg.attempts.max(1) {
                    let req = hyper::Request::post(&cfg.url)
                        .header("content-type", "application/json")
                        .header("user-agent", concat!("vigil/", env!("CARGO_PKG_VERSION")))
                        .body(Full::new(body.clone()));
                    let req = match req {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::error!(url = %cfg.url, error = %e, "webhook request");
                            break;
                        }
                    };
                    match tokio::time::timeout(cfg.timeout, client.request(req)).await {
                        Ok(Ok(resp)) if resp.status().is_success() => {
                            delivered = true;
                            break;
                        }
                        Ok(Ok(resp)) => {
                            tracing::warn!(url = %cfg.url, status = %resp.status(), attempt, "webhook refused an alert");
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(url = %cfg.url, error = %e, attempt, "webhook unreachable");
                        }
                        Err(_) => {
                            tracing::warn!(url = %cfg.url, attempt, "webhook timed out");
                        }
                    }
                    st.failed_attempts.fetch_add(1, Ordering::Relaxed);
                    if attempt < cfg.attempts {
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(30));
                    }
                }
                if delivered {
                    st.sent.fetch_add(1, Ordering::Relaxed);
                } else {
                    tracing::error!(url = %cfg.url, alert = u.alert.id, "alert not delivered to the webhook");
                    st.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Webhook { tx, stats }
    }

    /// Queues an update; a full queue drops it (counted).
    pub fn send(&self, u: AlertUpdate) {
        if self.tx.try_send(u).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}
