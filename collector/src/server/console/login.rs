//! Signing in to the console with an API token (over HTTPS, where every
//! request names an analyst): a form whose token, once the collector knows
//! it, becomes a cookie (`HttpOnly`, `Secure`, `SameSite=Strict`) the
//! browser sends with every page. Signing out clears it.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;

use super::page;
use crate::server::Shared;
use crate::server::access::TOKEN_COOKIE;

/// The token cookie set to `value`: to this site's HTTPS only, never shown
/// to scripts nor sent by other sites' pages; `extra` attributes after.
fn cookie(value: &str, extra: &str) -> String {
    format!("{TOKEN_COOKIE}={value}; Path=/; HttpOnly; Secure; SameSite=Strict{extra}")
}

/// Where to go after signing in: a path of this site only.
fn next_of(fields: &[(String, String)]) -> String {
    fields
        .iter()
        .find(|(k, _)| k == "next")
        .map(|(_, v)| v.as_str())
        .filter(|v| v.starts_with('/') && !v.starts_with("//") && !v.contains('\\'))
        .unwrap_or("/")
        .to_string()
}

fn fields(raw: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(raw.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn form(started: Instant, status: StatusCode, next: &str, error: Option<&str>) -> Response {
    let body = html! {
        h1 { "Sign in" }
        p { "Paste an API token (" code { "vigil access token create NAME" } " on the collector's host), or present an analyst's client certificate." }
        @if let Some(e) = error {
            p.error role="alert" { (e) }
        }
        form method="post" action="/login" {
            input type="hidden" name="next" value=(next);
            label for="token" { "API token" }
            input #token type="password" name="token" autocomplete="off" placeholder="vigil_…" required;
            button type="submit" { "Sign in" }
        }
    };
    page(started, status, "Sign in", "", body)
}

/// `GET /login`: the form.
pub(super) async fn show(RawQuery(q): RawQuery) -> Response {
    let f = fields(q.as_deref().unwrap_or(""));
    form(Instant::now(), StatusCode::OK, &next_of(&f), None)
}

/// `POST /login`: checks the token; on success sets the cookie and goes
/// where the visitor was going.
pub(super) async fn submit(State(shared): State<Arc<Shared>>, body: String) -> Response {
    let started = Instant::now();
    let f = fields(&body);
    let next = next_of(&f);
    let token = f
        .iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.trim())
        .unwrap_or("");
    match shared.tokens.verify(token) {
        Ok(Some(e)) => {
            tracing::info!(analyst = %e.name, token = %e.id, "signed in to the console");
            let cookie = cookie(token, "");
            ([(header::SET_COOKIE, cookie)], Redirect::to(&next)).into_response()
        }
        Ok(None) => form(
            started,
            StatusCode::UNAUTHORIZED,
            &next,
            Some("This token is not valid or was revoked."),
        ),
        Err(e) => {
            tracing::error!(error = %e, "reading the API tokens");
            form(
                started,
                StatusCode::INTERNAL_SERVER_ERROR,
                &next,
                Some("The collector cannot read its API tokens; see its log."),
            )
        }
    }
}

/// `GET /logout`: clears the cookie.
pub(super) async fn logout() -> Response {
    let cookie = cookie("", "; Max-Age=0");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/login")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_of_this_site_are_followed_after_signing_in() {
        for (raw, want) in [
            ("next=%2Falerts%3Fkind%3Dscan", "/alerts?kind=scan"),
            ("next=https%3A%2F%2Fevil.example%2F", "/"),
            ("next=%2F%2Fevil.example", "/"),
            ("next=%2F%5Cevil.example", "/"),
            ("", "/"),
        ] {
            assert_eq!(next_of(&fields(raw)), want, "{raw}");
        }
    }
}
