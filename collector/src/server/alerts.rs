//! The `Alerts` gRPC service: list alerts, get one with its evidence
//! flows, and subscribe to openings and updates as they happen.

use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};
use vigil_proto::pb;
use vigil_proto::pb::alerts_server::Alerts;

use super::Shared;
use super::failure::Failure;
use super::query::{blocking, range_of, stored_flow};
use crate::evidence::Completeness;
use crate::model::alert::{Alert, AlertKind, AlertQuery, Severity};

/// The service.
#[derive(Clone, Debug)]
pub struct AlertsSvc(pub(super) Arc<Shared>);

type AlertStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::Alert, Status>> + Send>>;

/// Returns once the collector starts shutting down.
async fn until_closing(rx: &mut watch::Receiver<bool>) {
    loop {
        let closed = *rx.borrow_and_update();
        if closed || rx.changed().await.is_err() {
            return;
        }
    }
}

/// The alert query of a request, or what is wrong with it.
fn query_of(q: pb::AlertQuery) -> Result<AlertQuery, Failure> {
    let range = range_of(q.range);
    let bad = |m: String| Failure::peer(Code::InvalidArgument, m);
    let kind = match q.kind.as_str() {
        "" => None,
        k => Some(
            AlertKind::parse(k).ok_or_else(|| bad(format!("kind: unknown alert kind {k:?}")))?,
        ),
    };
    let min_severity = match q.min_severity.as_str() {
        "" => None,
        s => Some(Severity::parse(s).ok_or_else(|| {
            bad(format!(
                "min_severity: {s:?} is not low, medium, high or critical"
            ))
        })?),
    };
    Ok(AlertQuery {
        since_ns: range.since_ns,
        until_ns: range.until_ns,
        kind,
        min_severity,
        asset: (!q.asset.is_empty()).then_some(q.asset),
        limit: q.limit.clamp(1, 100_000) as usize,
    })
}

/// An alert, its first evidence flows and the sensors' completeness over
/// its window.
pub type AlertDetail = (Alert, Vec<(String, vigil_proto::FlowRecord)>, Completeness);

/// Alert `id` with its first `max_flows` evidence flows (`None`: no such
/// alert): what `vigil alerts show`, the HTTP API and the console show.
pub async fn alert_detail(
    shared: &Shared,
    id: u64,
    max_flows: usize,
) -> Result<Option<AlertDetail>, Failure> {
    let store = shared.store.clone();
    blocking("reading an alert", move || {
        let Some(a) = store.alert(id)? else {
            return Ok(None);
        };
        let refs = &a.evidence[..a.evidence.len().min(max_flows)];
        let flows = if refs.is_empty() {
            Vec::new()
        } else {
            store.evidence_flows(refs)?
        };
        let c = crate::evidence::completeness(store.as_ref(), a.first_seen_ns, a.last_seen_ns)?;
        Ok(Some((a, flows, c)))
    })
    .await
}

#[tonic::async_trait]
impl Alerts for AlertsSvc {
    type SubscribeStream = AlertStream;

    async fn list(&self, req: Request<pb::AlertQuery>) -> Result<Response<pb::AlertList>, Status> {
        let query = query_of(req.into_inner())?;
        let store = self.0.store.clone();
        let alerts = blocking("listing alerts", move || store.alerts(&query)).await?;
        Ok(Response::new(pb::AlertList {
            alerts: alerts.iter().map(pb::Alert::from).collect(),
        }))
    }

    async fn get(
        &self,
        req: Request<pb::AlertRequest>,
    ) -> Result<Response<pb::AlertDetail>, Status> {
        let q = req.into_inner();
        let Some((alert, flows, completeness)) =
            alert_detail(&self.0, q.id, q.max_flows as usize).await?
        else {
            return Err(Failure::peer(Code::NotFound, format!("no alert {}", q.id)).into());
        };
        Ok(Response::new(pb::AlertDetail {
            alert: Some(pb::Alert::from(&alert)),
            flows: flows.iter().map(stored_flow).collect(),
            completeness_json: serde_json::to_string(&completeness).unwrap_or_default(),
        }))
    }

    async fn subscribe(
        &self,
        _req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<AlertStream>, Status> {
        let mut rx = self.0.alerts.subscribe();
        let mut closing = self.0.closing.subscribe();
        let (tx, out) = mpsc::channel::<Result<pb::Alert, Status>>(256);
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    r = rx.recv() => r,
                    () = until_closing(&mut closing) => {
                        let _ = tx.send(Err(Failure::shutdown().status())).await;
                        return;
                    }
                };
                match next {
                    Ok(a) => {
                        if tx.send(Ok(a)).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        // Tell the subscriber rather than skip silently.
                        let f = Failure::peer(
                            Code::DataLoss,
                            format!(
                                "subscriber too slow: {n} alert updates missed; list alerts to catch up"
                            ),
                        );
                        f.log("alert subscriber dropped", "subscriber");
                        let _ = tx.send(Err(f.status())).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }
}
