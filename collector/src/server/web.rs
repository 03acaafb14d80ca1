//! The collector's web listener (`[http] listen`): the HTTP/JSON API
//! ([`super::api`], `/api/v1/…`) and the console ([`super::console`]) on
//! one address.
//!
//! Without `[tls]` it is plaintext and on loopback only: whoever reaches
//! the host's loopback is its administrator, as for gRPC
//! ([`super::access`]). With `[tls]` it is HTTPS (the collector's
//! certificate) on any address, and every request names an analyst: a
//! client certificate from the CA whose identity is in `[access]
//! analysts`, or an API token (`Authorization: Bearer vigil_…`, or the
//! console's cookie, set by its sign-in page) issued by `vigil access token
//! create`. A refusal is counted (`refusals{service="http"}`) and logged;
//! who read is a request extension ([`WebReader`]) the handlers log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use tokio::net::TcpListener;

use super::access::{TOKEN_COOKIE, WebReader, refused};
use super::api::{self, ApiError};
use super::failure::Failure;
use super::{CollectorError, Shared, console};

/// Paths open without credentials: the sign-in page, the files it uses,
/// and the API's description.
fn open_path(path: &str) -> bool {
    path == "/login" || path.starts_with("/static/") || path == "/api/v1/openapi.json"
}

/// The client certificate's identities on an HTTPS connection (`None`:
/// none presented), a request extension.
#[derive(Clone, Debug)]
struct TlsPeer(Option<Vec<String>>);

/// Serves the API and the console on `addr` (over HTTPS with `https`)
/// until the collector closes; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    shared: Arc<Shared>,
    https: Option<Arc<rustls::ServerConfig>>,
) -> Result<SocketAddr, CollectorError> {
    let bind = |source| CollectorError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind)?;
    let bound = listener.local_addr().map_err(bind)?;
    let mut closing = shared.closing.subscribe();
    let app = api::router()
        .merge(console::router())
        .fallback(|| async {
            ApiError::not_found("no such page; the API is described at /api/v1/openapi.json")
        })
        .layer(middleware::from_fn_with_state(shared.clone(), authenticate))
        .with_state(shared);
    match https {
        None => {
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
        }
        Some(cfg) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
            tokio::spawn(async move {
                loop {
                    let accepted = tokio::select! {
                        a = listener.accept() => a,
                        _ = closing.wait_for(|c| *c) => break,
                    };
                    let (tcp, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::warn!(error = %e, "HTTPS accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    tokio::spawn(https_connection(acceptor.clone(), tcp, peer, app.clone()));
                }
            });
        }
    }
    Ok(bound)
}

/// One HTTPS connection: the handshake (10 s at most), then HTTP/1.1 with
/// the peer's address and certificate identities in every request.
async fn https_connection(
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    app: axum::Router,
) {
    let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::info!(peer = %peer, error = %e, "HTTPS handshake failed");
            return;
        }
        Err(_) => {
            tracing::info!(peer = %peer, "HTTPS handshake timed out");
            return;
        }
    };
    let ids = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|leaf| super::tls::identities(leaf.as_ref()).unwrap_or_default());
    let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        req.extensions_mut().insert(TlsPeer(ids.clone()));
        let mut app = app.clone();
        async move { tower_service::Service::call(&mut app, req.map(axum::body::Body::new)).await }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
        .await;
    if let Err(e) = served {
        tracing::debug!(peer = %peer, error = %e, "HTTPS connection ended");
    }
}

/// The API token a request carries: `Authorization: Bearer …`, else the
/// console's cookie.
fn token_of(headers: &HeaderMap) -> Option<&str> {
    if let Some(t) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some(t.trim());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(TOKEN_COOKIE)?.strip_prefix('='))
}

/// Who the request is from, or why it is refused (401: no or bad
/// credentials; 403: a certificate that is no analyst's).
fn identify(
    shared: &Shared,
    peer: SocketAddr,
    tls: Option<&TlsPeer>,
    headers: &HeaderMap,
) -> Result<WebReader, (StatusCode, String)> {
    if let Some(token) = token_of(headers) {
        return match shared.tokens.verify(token) {
            Ok(Some(e)) => Ok(WebReader::Token {
                name: e.name,
                id: e.id,
            }),
            Ok(None) => Err((
                StatusCode::UNAUTHORIZED,
                "unauthenticated: the API token is not valid or was revoked".into(),
            )),
            Err(e) => {
                tracing::error!(error = %e, "reading the API tokens");
                Err((
                    StatusCode::UNAUTHORIZED,
                    "unauthenticated: the collector cannot read its API tokens; see its log".into(),
                ))
            }
        };
    }
    match tls {
        None if peer.ip().is_loopback() => Ok(WebReader::LocalAdmin),
        None => Err((
            StatusCode::FORBIDDEN,
            "permission denied: the HTTP API and console answer plaintext requests from the \
             collector's host only"
                .into(),
        )),
        Some(TlsPeer(Some(ids))) => match ids.iter().find(|i| shared.access.is_analyst(i)) {
            Some(id) => Ok(WebReader::Certificate(id.clone())),
            None => Err((
                StatusCode::FORBIDDEN,
                format!(
                    "permission denied: certificate identity {:?} is not an analyst; reading flows \
                     and alerts needs an identity named in the collector's [access] analysts, or \
                     an API token",
                    ids.join(", ")
                ),
            )),
        },
        Some(TlsPeer(None)) => Err((
            StatusCode::UNAUTHORIZED,
            "unauthenticated: present an analyst's client certificate or an API token \
             (Authorization: Bearer vigil_…, from `vigil access token create NAME`)"
                .into(),
        )),
    }
}

async fn authenticate(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut req: Request,
    next: Next,
) -> Response {
    if open_path(req.uri().path()) {
        return next.run(req).await;
    }
    let tls = req.extensions().get::<TlsPeer>().cloned();
    match identify(&shared, peer, tls.as_ref(), req.headers()) {
        Ok(who) => {
            req.extensions_mut().insert(who);
            next.run(req).await
        }
        Err((status, message)) => {
            let code = if status == StatusCode::FORBIDDEN {
                tonic::Code::PermissionDenied
            } else {
                tonic::Code::Unauthenticated
            };
            let f = Failure::peer(code, message.clone());
            let who = match &tls {
                Some(TlsPeer(Some(ids))) => ids.join(", "),
                Some(TlsPeer(None)) => "no credentials (HTTPS)".into(),
                None => "unauthenticated (plaintext HTTP)".into(),
            };
            refused(&shared, "http", Some(peer), &who, &f);
            let api = req.uri().path().starts_with("/api/");
            if !api && status == StatusCode::UNAUTHORIZED && req.method() == axum::http::Method::GET
            {
                // A browser: to the sign-in page, and back after.
                let back = req
                    .uri()
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_string();
                let to: String = form_urlencoded::Serializer::new(String::new())
                    .append_pair("next", &back)
                    .finish();
                return Redirect::to(&format!("/login?{to}")).into_response();
            }
            let e = if status == StatusCode::FORBIDDEN {
                ApiError::forbidden(message)
            } else {
                ApiError::unauthorized(message)
            };
            let mut r = e.into_response();
            if status == StatusCode::UNAUTHORIZED {
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer realm=\"vigil\""),
                );
            }
            r
        }
    }
}
