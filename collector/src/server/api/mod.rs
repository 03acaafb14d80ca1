//! The HTTP/JSON API (`/api/v1/…`): flows, top-N, totals and time series
//! in the query language; alerts with their evidence flows and bundles;
//! the sensors with their loss counters; and its own OpenAPI 3.1 document
//! (`/api/v1/openapi.json`). Each answer is the shape `vigil query
//! --format jsonl` prints ([`crate::query::json`]), inside an object.
//!
//! Served on `[http] listen`, plaintext, on loopback only: whoever reaches
//! the host's loopback is its administrator, as for gRPC
//! ([`super::access`]). Every request is checked again for a loopback
//! peer.
//!
//! Errors are JSON, `{"error": {"status", "param", "message"}}`, with
//! `param` naming the query parameter at fault (and `column`, for a
//! filter, the position in it).

mod params;
mod routes;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tonic::Code;

use super::failure::Failure;
use super::{CollectorError, Shared};

/// The OpenAPI 3.1 document of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// An error answer: its HTTP status, the parameter at fault (if one is)
/// and what is wrong.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    param: Option<&'static str>,
    column: Option<usize>,
    message: String,
}

impl ApiError {
    /// Parameter `param` is wrong.
    pub fn param(param: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            param: Some(param),
            column: None,
            message: message.into(),
        }
    }

    /// Nothing at this address.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            param: None,
            column: None,
            message: message.into(),
        }
    }

    fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::FORBIDDEN,
            param: None,
            column: None,
            message: message.into(),
        }
    }
}

impl From<Failure> for ApiError {
    fn from(f: Failure) -> ApiError {
        let s = f.status();
        let status = match s.code() {
            Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::PermissionDenied | Code::Unauthenticated => StatusCode::FORBIDDEN,
            Code::FailedPrecondition => StatusCode::CONFLICT,
            Code::Unavailable | Code::ResourceExhausted => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError {
            status,
            param: None,
            column: None,
            message: s.message().to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut e = json!({"status": self.status.as_u16(), "message": self.message});
        if let Some(p) = self.param {
            e["param"] = Value::from(p);
        }
        if let Some(c) = self.column {
            e["column"] = Value::from(c);
        }
        (self.status, json_body(&json!({ "error": e }))).into_response()
    }
}

/// A JSON body with its content type.
fn json_body(v: &Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

/// Serves the API on `addr` until the collector closes; returns the bound
/// address.
pub async fn serve(addr: SocketAddr, shared: Arc<Shared>) -> Result<SocketAddr, CollectorError> {
    let bind = |source| CollectorError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind)?;
    let bound = listener.local_addr().map_err(bind)?;
    let mut closing = shared.closing.subscribe();
    let app = routes::router(shared);
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
            tracing::error!(error = %e, "HTTP API stopped");
        }
    });
    Ok(bound)
}
