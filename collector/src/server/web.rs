//! The collector's web listener (`[http] listen`): the HTTP/JSON API
//! ([`super::api`], `/api/v1/…`) and the console ([`super::console`]) on
//! one address, plaintext and on loopback only: whoever reaches the host's
//! loopback is its administrator, as for gRPC ([`super::access`]). Every
//! request is checked again for a loopback peer; a refusal is counted and
//! logged.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;

use super::access::refused;
use super::api::{self, ApiError};
use super::failure::Failure;
use super::{CollectorError, Shared, console};

/// Serves the API and the console on `addr` until the collector closes;
/// returns the bound address.
pub async fn serve(addr: SocketAddr, shared: Arc<Shared>) -> Result<SocketAddr, CollectorError> {
    let bind = |source| CollectorError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind)?;
    let bound = listener.local_addr().map_err(bind)?;
    let mut closing = shared.closing.subscribe();
    let app = api::router()
        .merge(console::router())
        .fallback(|| async {
            ApiError::not_found("no such page; the API is described at /api/v1/openapi.json")
        })
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            loopback_only,
        ))
        .with_state(shared);
    tokio::spawn(async move {
        let served = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = closing.wait_for(|c| *c).await;
        })
        .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "HTTP listener stopped");
        }
    });
    Ok(bound)
}

/// Plaintext HTTP is the loopback administrator's only.
async fn loopback_only(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    if peer.ip().is_loopback() {
        return next.run(req).await;
    }
    let message = "permission denied: the HTTP API and console answer plaintext requests from the collector's host only";
    let f = Failure::peer(tonic::Code::PermissionDenied, message);
    refused(
        &shared,
        "http",
        Some(peer),
        "unauthenticated (plaintext HTTP)",
        &f,
    );
    ApiError::forbidden(message).into_response()
}
