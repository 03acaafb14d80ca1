//! The HTTP/JSON API (`/api/v1/…`): flows, top-N, totals and time series
//! in the query language; alerts with their evidence flows and bundles;
//! the sensors with their loss counters; and its own OpenAPI 3.1 document
//! (`/api/v1/openapi.json`). Each answer is the shape `vigil query
//! --format jsonl` prints ([`crate::query::json`]), inside an object.
//!
//! Served with the console by [`super::web`] on `[http] listen`.
//!
//! Errors are JSON, `{"error": {"status", "param", "message"}}`, with
//! `param` naming the query parameter at fault (and `column`, for a
//! filter, the position in it).

pub(crate) mod params;
mod routes;

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tonic::Code;

use super::failure::Failure;

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

    /// Not allowed from where it came.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::FORBIDDEN,
            param: None,
            column: None,
            message: message.into(),
        }
    }

    /// No credentials, or credentials that do not hold (401).
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            param: None,
            column: None,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.param {
            Some(p) => write!(f, "{p}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl ApiError {
    /// The HTTP status it answers with.
    pub fn status(&self) -> StatusCode {
        self.status
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
pub(super) fn json_body(v: &Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

pub use routes::router;
