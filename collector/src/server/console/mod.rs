//! The web console, served with the HTTP API on `[http] listen`: pages
//! rendered on the server (maud, every value escaped: flows carry names and
//! banners an attacker chose) and one vendored chart library (uPlot 1.6.32,
//! MIT, `static/uplot.LICENSE`), all compiled into the binary: nothing is
//! fetched at run time, for air-gapped sites.
//!
//! Pages: the overview (sensors and their health, alerts by kind and asset,
//! traffic over time), alerts with filters, one alert with its evidence,
//! the flow explorer (a filter in the query language, top-N tables, a time
//! series, the flows a page at a time) and the sensors. Each page says its
//! server time in a `Server-Timing` header.

mod login;
mod pages;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::Shared;

const CSS: &str = include_str!("static/console.css");
const JS: &str = include_str!("static/console.js");
const UPLOT_JS: &str = include_str!("static/uplot.min.js");
const UPLOT_CSS: &str = include_str!("static/uplot.min.css");

/// The console's pages and files.
pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/", get(pages::overview))
        .route("/alerts", get(pages::alerts))
        .route("/alerts/{id}", get(pages::alert))
        .route("/flows", get(pages::flows))
        .route("/sensors", get(pages::sensors))
        .route("/login", get(login::show).post(login::submit))
        .route("/logout", get(login::logout))
        .route("/static/{file}", get(asset))
}

async fn asset(Path(file): Path<String>) -> Response {
    let (body, ctype) = match file.as_str() {
        "console.css" => (CSS, "text/css; charset=utf-8"),
        "console.js" => (JS, "text/javascript; charset=utf-8"),
        "uplot.min.js" => (UPLOT_JS, "text/javascript; charset=utf-8"),
        "uplot.min.css" => (UPLOT_CSS, "text/css; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "no such file").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, ctype),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// A page: its title, the navigation with `active` marked, and `body`;
/// answered with `status` and its server time since `started`.
fn page(started: Instant, status: StatusCode, title: &str, active: &str, body: Markup) -> Response {
    let nav = [
        ("/", "Overview"),
        ("/alerts", "Alerts"),
        ("/flows", "Flows"),
        ("/sensors", "Sensors"),
    ];
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — Vigil" }
                link rel="icon" href="data:,";
                link rel="stylesheet" href="/static/uplot.min.css";
                link rel="stylesheet" href="/static/console.css";
            }
            body {
                header {
                    nav {
                        a.brand href="/" { "Vigil" }
                        @for (href, name) in nav {
                            a class=(if name == active { "active" } else { "" }) href=(href) { (name) }
                        }
                    }
                }
                main { (body) }
                script src="/static/uplot.min.js" {}
                script src="/static/console.js" {}
            }
        }
    };
    let ms = started.elapsed().as_secs_f64() * 1e3;
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8".to_string()),
            (
                header::HeaderName::from_static("server-timing"),
                format!("app;dur={ms:.1}"),
            ),
        ],
        markup.into_string(),
    )
        .into_response()
}

/// A page that says what went wrong (a bad parameter, a failed store).
fn error_page(started: Instant, status: StatusCode, title: &str, message: &str) -> Response {
    page(
        started,
        status,
        title,
        "",
        html! { h1 { (title) } div.error { pre { (message) } } },
    )
}

/// Data for a chart drawn by `console.js`: times in seconds and one
/// column per metric.
fn chart(id: &str, points: &[crate::model::query::SeriesPoint]) -> Markup {
    let t: Vec<u64> = points.iter().map(|p| p.start_ns / 1_000_000_000).collect();
    let data = serde_json::json!({
        "t": t,
        "bytes": points.iter().map(|p| p.totals.bytes).collect::<Vec<_>>(),
        "packets": points.iter().map(|p| p.totals.packets).collect::<Vec<_>>(),
        "flows": points.iter().map(|p| p.totals.flows).collect::<Vec<_>>(),
    });
    // JSON in a script element: `</` escaped so that no value ends it.
    let json = data.to_string().replace("</", "<\\/");
    html! {
        div.chart id=(id) data-chart=(id) {}
        script type="application/json" id=(format!("{id}-data")) { (PreEscaped(json)) }
    }
}

/// `1.2 MB` (decimal units, as network tools count).
pub fn bytes(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

/// `12,345,678`.
pub fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `2024-05-01 10:00:00` (UTC), for tables.
pub fn when(ns: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Steps a chart may use, with their names.
const STEPS: [(u64, &str); 8] = [
    (60, "1m"),
    (300, "5m"),
    (900, "15m"),
    (3_600, "1h"),
    (6 * 3_600, "6h"),
    (86_400, "1d"),
    (7 * 86_400, "7d"),
    (30 * 86_400, "30d"),
];

/// The shortest step that draws `span_ns` in at most 400 intervals.
pub fn step_for(span_ns: u64) -> (u64, &'static str) {
    for (s, name) in STEPS {
        let ns = s * 1_000_000_000;
        if span_ns / ns < 400 {
            return (ns, name);
        }
    }
    (STEPS[7].0 * 1_000_000_000, STEPS[7].1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_times_and_steps_read_well() {
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(1_234_567), "1.2 MB");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(count(12), "12");
        assert_eq!(when(1_700_000_000_000_000_000), "2023-11-14 22:13:20");
        assert_eq!(step_for(3_600_000_000_000).1, "1m");
        assert_eq!(step_for(86_400_000_000_000).1, "5m");
        assert_eq!(step_for(10 * 365 * 86_400_000_000_000).1, "30d");
    }

    #[test]
    fn chart_data_cannot_end_its_script_element() {
        let m = chart("c", &[]).into_string();
        assert!(m.contains(r#"<script type="application/json" id="c-data">"#));
        let evil = serde_json::json!({"k": "</script><script>alert(1)</script>"})
            .to_string()
            .replace("</", "<\\/");
        assert!(!evil.contains("</script>"));
    }
}
