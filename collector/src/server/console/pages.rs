//! The console's pages: each reads its parameters (as the API does), asks
//! the store on blocking threads, and renders.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};
use vigil_proto::FlowRecord;
use vigil_proto::time::now_ns;

use super::{bytes, chart, count, error_page, page, step_for, when};
use crate::model::alert::{Alert, AlertKind, AlertQuery};
use crate::model::query::{Filter, SeriesPoint, TimeRange, TopBy, TopKey, TopRow, Totals};
use crate::query;
use crate::server::Shared;
use crate::server::alerts::alert_detail;
use crate::server::api::params::Params;
use crate::server::failure::Failure;
use crate::server::query::{blocking, flow_page, sensor_records};

/// Rows of a flow page in the explorer.
const FLOW_PAGE: usize = 50;

/// The ranges offered, and the default.
const RANGES: [&str; 5] = ["1h", "24h", "7d", "30d", "all"];

/// A time range chosen on a page: from `since`/`until`, or a `range`
/// preset ending now (`all`: the whole store).
struct Window {
    range: TimeRange,
    /// Where the chart starts and ends (a preset or `all`: the data's).
    shown: TimeRange,
    step_ns: u64,
    step: &'static str,
    label: String,
}

fn bad(started: Instant, e: impl std::fmt::Display) -> Response {
    error_page(
        started,
        StatusCode::BAD_REQUEST,
        "Bad request",
        &e.to_string(),
    )
}

fn failed(started: Instant, f: Failure) -> Response {
    let e = crate::server::api::ApiError::from(f);
    error_page(
        started,
        e.status(),
        "The store could not answer",
        &e.to_string(),
    )
}

/// The window of a page: `since`/`until` if given, else the `range`
/// preset (default `default`); `all` reads the store's span by day first.
async fn window(
    sh: &Arc<Shared>,
    p: &Params,
    filter: &Filter,
    default: &str,
) -> Result<Window, Response> {
    let started = Instant::now();
    let now = now_ns();
    let given = p.range(now).map_err(|e| bad(started, e))?;
    let preset = p.get("range").unwrap_or(default);
    if !RANGES.contains(&preset) {
        return Err(bad(
            started,
            format!("range: {preset:?}: expected one of {}", RANGES.join(", ")),
        ));
    }
    let (range, label) = if given.since_ns.is_some() || given.until_ns.is_some() {
        (given, "chosen range".to_string())
    } else if preset == "all" {
        (TimeRange::default(), "all time".to_string())
    } else {
        let d = vigil_proto::units::parse_duration(preset).map_err(|e| bad(started, e))?;
        let since = now.saturating_sub(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        (
            TimeRange {
                since_ns: Some(since),
                until_ns: None,
            },
            format!("last {preset}"),
        )
    };
    // The span drawn: the range's bounds, or the data's where open.
    let mut shown = TimeRange {
        since_ns: range.since_ns,
        until_ns: range.until_ns.or(range.since_ns.map(|_| now)),
    };
    if shown.since_ns.is_none() || shown.until_ns.is_none() {
        let (store, f) = (sh.store.clone(), filter.clone());
        let day = 86_400_000_000_000;
        let days = blocking("console: the data's span", move || {
            store.series(&f, range, day)
        })
        .await
        .map_err(|f| failed(started, f))?;
        if let (Some(first), Some(last)) = (days.first(), days.last()) {
            shown.since_ns = shown.since_ns.or(Some(first.start_ns));
            shown.until_ns = shown.until_ns.or(Some(last.start_ns + day));
        }
    }
    let span = match (shown.since_ns, shown.until_ns) {
        (Some(s), Some(u)) => u.saturating_sub(s),
        _ => 3_600_000_000_000,
    };
    let (step_ns, step) = step_for(span);
    Ok(Window {
        range,
        shown,
        step_ns,
        step,
        label,
    })
}

/// The series of `filter` over the window, quiet intervals as zeros.
async fn series(
    sh: &Arc<Shared>,
    filter: &Filter,
    w: &Window,
) -> Result<Vec<SeriesPoint>, Failure> {
    if w.shown.since_ns.is_none() {
        return Ok(Vec::new());
    }
    let (store, f, range, step) = (sh.store.clone(), filter.clone(), w.range, w.step_ns);
    let points = blocking("console: series", move || store.series(&f, range, step)).await?;
    query::dense_series(&points, w.shown, w.step_ns).map_err(Failure::bug)
}

/// Totals over a series' points.
fn sum(points: &[SeriesPoint]) -> Totals {
    let mut t = Totals::default();
    for p in points {
        t.add(p.totals);
    }
    t
}

/// The range presets as links (keeping `keep`'s parameters), the current
/// one marked.
fn presets(base: &str, keep: &str, current: &str) -> Markup {
    html! {
        div.presets {
            @for r in RANGES {
                a class=(if r == current { "active" } else { "" })
                    href=(format!("{base}?range={r}{keep}")) { (r) }
            }
        }
    }
}

fn severity(s: &str) -> Markup {
    html! { span class=(format!("sev sev-{s}")) { (s) } }
}

fn totals_line(t: &Totals) -> Markup {
    html! {
        p.totals {
            b { (count(t.flows)) } " flows · " b { (count(t.packets)) } " packets · " b { (bytes(t.bytes)) }
        }
    }
}

/// The application field a flow's row shows.
fn app_text(r: &FlowRecord) -> String {
    let Some(a) = &r.app else {
        return String::new();
    };
    let name = a.proto.map_or("", |p| p.as_str());
    let detail = a
        .dns
        .as_ref()
        .map(|d| d.qname.as_str())
        .or(a.tls.as_ref().map(|t| t.sni.as_str()))
        .or(a.http.as_ref().map(|h| h.host.as_str()))
        .or(a.ssh.as_ref().map(|s| s.client.as_str()))
        .unwrap_or("");
    let mut s = format!("{name} {detail}");
    if s.len() > 80 {
        let mut end = 77;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s.trim().to_string()
}

/// The address of `addr` or `addr:port` (`[v6]:port` too).
fn host_of(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match addr.rsplit_once(':') {
        Some((h, _)) if !h.contains(':') => h,
        _ => addr,
    }
}

/// The explorer's link to `host`'s flows over `window` (`&since=…`).
fn host_flows(host: &str, window: &str) -> String {
    format!(
        "/flows?filter={}{window}",
        form_urlencoded::byte_serialize(format!("host {host}").as_bytes()).collect::<String>()
    )
}

fn endpoint(ip: std::net::IpAddr, port: Option<u16>) -> String {
    match (ip, port) {
        (std::net::IpAddr::V6(a), Some(p)) => format!("[{a}]:{p}"),
        (a, Some(p)) => format!("{a}:{p}"),
        (a, None) => a.to_string(),
    }
}

/// A table of flows.
fn flow_table(rows: &[(String, FlowRecord)]) -> Markup {
    html! {
        div.scroll {
            table.flows {
                thead { tr {
                    th { "first seen" } th { "proto" } th { "source" } th { "destination" }
                    th.num { "packets" } th.num { "bytes" } th { "state" } th { "application" } th { "sensor" }
                } }
                tbody {
                    @for (sensor, r) in rows {
                        tr {
                            td.time { (when(r.first_seen_ns)) }
                            td { (r.proto_name().to_string()) }
                            td.addr { (endpoint(r.src_ip, r.src_port)) }
                            td.addr { (endpoint(r.dst_ip, r.dst_port)) }
                            td.num { (count(r.packets())) }
                            td.num { (bytes(r.bytes())) }
                            td { (r.conn_state.as_str()) }
                            td.app { (app_text(r)) }
                            td { (sensor) }
                        }
                    }
                }
            }
        }
    }
}

fn top_table(title: &str, rows: &[TopRow], link: impl Fn(&str) -> Option<String>) -> Markup {
    html! {
        section.top {
            h3 { (title) }
            div.scroll { table {
                thead { tr { th { "key" } th.num { "bytes" } th.num { "packets" } th.num { "flows" } } }
                tbody {
                    @for r in rows {
                        tr {
                            td.addr {
                                @if let Some(href) = link(&r.key) { a href=(href) { (r.key) } } @else { (r.key) }
                            }
                            td.num { (bytes(r.totals.bytes)) }
                            td.num { (count(r.totals.packets)) }
                            td.num { (count(r.totals.flows)) }
                        }
                    }
                    @if rows.is_empty() { tr { td colspan="4" { "no flows" } } }
                }
            } }
        }
    }
}

/// `&name=value` for the parameters to keep in links, encoded.
fn keep(pairs: &[(&str, Option<&str>)]) -> String {
    let mut out = String::new();
    for (k, v) in pairs {
        if let Some(v) = v {
            out.push('&');
            out.push_str(k);
            out.push('=');
            out.extend(form_urlencoded::byte_serialize(v.as_bytes()));
        }
    }
    out
}

fn alert_rows(alerts: &[Alert]) -> Markup {
    html! {
        div.scroll {
            table.alerts {
                thead { tr {
                    th { "#" } th { "severity" } th { "kind" } th { "asset" } th { "summary" }
                    th { "first seen" } th { "last seen" } th.num { "sources" } th.num { "evidence" }
                } }
                tbody {
                    @for a in alerts {
                        tr {
                            td { a href=(format!("/alerts/{}", a.id)) { (a.id) } }
                            td { (severity(a.severity.as_str())) }
                            td { (a.kind.as_str()) }
                            td { (a.asset) }
                            td.summary { a href=(format!("/alerts/{}", a.id)) { (a.summary) } }
                            td.time { (when(a.first_seen_ns)) }
                            td.time { (when(a.last_seen_ns)) }
                            td.num { (count(a.source_count)) }
                            td.num { (count(a.evidence_count)) }
                        }
                    }
                    @if alerts.is_empty() { tr { td colspan="9" { "no alerts" } } }
                }
            }
        }
    }
}

/// `/`: sensors and their health, alerts by kind and asset, traffic.
pub async fn overview(State(sh): State<Arc<Shared>>, RawQuery(q): RawQuery) -> Response {
    let started = Instant::now();
    let p = match Params::parse(q.as_deref(), &["range", "since", "until"]) {
        Ok(p) => p,
        Err(e) => return bad(started, e),
    };
    let all = Filter::All;
    let w = match window(&sh, &p, &all, "24h").await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let (store, range) = (sh.store.clone(), w.range);
    let alerts_q = AlertQuery {
        since_ns: range.since_ns,
        until_ns: range.until_ns,
        limit: 100_000,
        ..AlertQuery::default()
    };
    let found = tokio::join!(
        sensor_records(&sh),
        blocking("console: alerts", move || store.alerts(&alerts_q)),
        series(&sh, &all, &w),
    );
    let (sensors, alerts, points) = match found {
        (Ok(s), Ok(a), Ok(p)) => (s, a, p),
        (Err(f), _, _) | (_, Err(f), _) | (_, _, Err(f)) => return failed(started, f),
    };
    let mut by_kind: BTreeMap<&str, [u64; 4]> = BTreeMap::new();
    let mut by_asset: BTreeMap<&str, [u64; 4]> = BTreeMap::new();
    for a in &alerts {
        let i = a.severity as usize;
        by_kind.entry(a.kind.as_str()).or_default()[i.min(3)] += 1;
        by_asset.entry(a.asset.as_str()).or_default()[i.min(3)] += 1;
    }
    let total = sum(&points);
    let current = p.get("range").unwrap_or("24h");
    let sev_names = ["low", "medium", "high", "critical"];
    let counts = |title: &str, rows: &BTreeMap<&str, [u64; 4]>, param: &str| {
        html! {
            section.top {
                h3 { (title) }
                div.scroll { table {
                    thead { tr { th { "" } @for s in sev_names.iter().rev() { th.num { (s) } } } }
                    tbody {
                        @for (k, n) in rows {
                            tr {
                                td { a href=(format!("/alerts?{param}={}{}", form_urlencoded::byte_serialize(k.as_bytes()).collect::<String>(), keep(&[("since", range.since_ns.map(|_| current))]))) { (k) } }
                                @for i in (0..4).rev() { td.num { @if n[i] > 0 { (n[i]) } } }
                            }
                        }
                        @if rows.is_empty() { tr { td colspan="5" { "no alerts" } } }
                    }
                } }
            }
        }
    };
    let newest: Vec<Alert> = alerts.iter().take(10).cloned().collect();
    let body = html! {
        h1 { "Overview" }
        (presets("/", "", current))
        p.window { "Traffic and alerts over " (w.label) "; one point every " (w.step) "." }
        section.sensors-health {
            h2 { "Sensors" }
            (sensor_cards(&sensors))
        }
        section {
            h2 { "Traffic" }
            (totals_line(&total))
            (chart("traffic", &points))
        }
        section {
            h2 { "Alerts (" (alerts.len()) ")" }
            div.grid {
                (counts("By kind", &by_kind, "kind"))
                (counts("By asset", &by_asset, "asset"))
            }
            h3 { "Newest" }
            (alert_rows(&newest))
        }
    };
    page(started, StatusCode::OK, "Overview", "Overview", body)
}

/// A sensor's health: `ok`, or what is wrong.
fn health(s: &crate::store::SensorRecord, connected: bool) -> (&'static str, String) {
    let st = &s.stats;
    let lost = s.seq_gaps + st.spool_dropped_flows + st.kernel_drops + st.channel_full_drops;
    if lost > 0 {
        return (
            "bad",
            format!(
                "losing: {} kernel drops, {} flows dropped from the spool, {} missing batches",
                count(st.kernel_drops),
                count(st.spool_dropped_flows),
                count(s.seq_gaps)
            ),
        );
    }
    if !connected {
        return ("idle", "not connected".into());
    }
    ("ok", "streaming, nothing lost".into())
}

fn sensor_cards(sensors: &[(crate::store::SensorRecord, bool)]) -> Markup {
    html! {
        div.cards {
            @for (s, connected) in sensors {
                @let (class, text) = health(s, *connected);
                div class=(format!("card {class}")) {
                    div.name { a href="/sensors" { (s.sensor_id) } }
                    div { (text) }
                    div.small { (count(s.flows)) " flows stored · last batch " (when(s.last_seen_ns)) }
                }
            }
            @if sensors.is_empty() { p { "No sensor has sent flows yet." } }
        }
    }
}

/// `/alerts`: the alerts, filtered.
pub async fn alerts(State(sh): State<Arc<Shared>>, RawQuery(q): RawQuery) -> Response {
    let started = Instant::now();
    let p = match Params::parse(
        q.as_deref(),
        &["kind", "min_severity", "asset", "since", "until", "limit"],
    ) {
        Ok(p) => p,
        Err(e) => return bad(started, e),
    };
    let query = match p.alert_query(now_ns(), 200) {
        Ok(q) => q,
        Err(e) => return bad(started, e),
    };
    let limit = query.limit;
    let store = sh.store.clone();
    let found = match blocking("console: alerts", move || store.alerts(&query)).await {
        Ok(a) => a,
        Err(f) => return failed(started, f),
    };
    let chosen = |name: &str| p.get(name).unwrap_or("");
    let body = html! {
        h1 { "Alerts" }
        form.filters method="get" action="/alerts" {
            label { "kind " select name="kind" {
                option value="" { "any" }
                @for k in AlertKind::ALL {
                    option value=(k.as_str()) selected[chosen("kind") == k.as_str()] { (k.as_str()) }
                }
            } }
            label { "at least " select name="min_severity" {
                option value="" { "any severity" }
                @for s in ["low", "medium", "high", "critical"] {
                    option value=(s) selected[chosen("min_severity") == s] { (s) }
                }
            } }
            label { "asset " input type="text" name="asset" value=(chosen("asset")) size="16"; }
            label { "since " input type="text" name="since" value=(chosen("since")) placeholder="24h or 2024-05-01T10:00:00Z" size="22"; }
            button type="submit" { "Show" }
        }
        p { (found.len()) " alerts, newest first" @if found.len() == limit { " (the first " (limit) ")" } "." }
        (alert_rows(&found))
    };
    page(started, StatusCode::OK, "Alerts", "Alerts", body)
}

/// `/alerts/{id}`: one alert, what it measured, who, and its evidence.
pub async fn alert(State(sh): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let started = Instant::now();
    let Ok(id) = id.parse::<u64>() else {
        return bad(started, format!("{id:?}: expected an alert number"));
    };
    let found = alert_detail(&sh, id, 100).await;
    let trail = match crate::server::evidence::exports_of(&sh, id).await {
        Ok(t) => t,
        Err(f) => {
            f.log("reading the custody trail", "console");
            Vec::new()
        }
    };
    let (a, flows, c) = match found {
        Ok(Some(x)) => x,
        Ok(None) => {
            return error_page(
                started,
                StatusCode::NOT_FOUND,
                "No such alert",
                &format!("no alert {id}"),
            );
        }
        Err(f) => return failed(started, f),
    };
    let matrix = if a.matrix == "ics" {
        "ATT&CK for ICS"
    } else {
        "ATT&CK Enterprise"
    };
    let window = format!(
        "&since={}&until={}",
        vigil_proto::time::Rfc3339Nanos(a.first_seen_ns),
        vigil_proto::time::Rfc3339Nanos(a.last_seen_ns.saturating_add(1))
    );
    let parties = |title: &str, list: &[crate::model::alert::Party], total: u64| {
        html! {
            section.top {
                h3 { (title) " (" (count(total)) ")" }
                div.scroll { table {
                    thead { tr { th { "address" } th.num { "flows" } th.num { "packets" } th.num { "bytes" } } }
                    tbody {
                        @for p in list {
                            tr {
                                td.addr { a href=(host_flows(host_of(&p.addr), &window)) { (p.addr) } }
                                td.num { (count(p.flows)) } td.num { (count(p.packets)) } td.num { (bytes(p.bytes)) }
                            }
                        }
                    }
                } }
                @if total > list.len() as u64 { p.small { "The " (list.len()) " largest shown." } }
            }
        }
    };
    let body = html! {
        h1 { "Alert " (a.id) ": " (a.kind.as_str()) " " (severity(a.severity.as_str())) }
        p.summary { (a.summary) }
        div.actions {
            a.button href=(format!("/api/v1/alerts/{}/bundle", a.id)) download { "Evidence bundle (.tar, signed)" }
            a.button href=(format!("/api/v1/alerts/{}/stix", a.id)) download { "STIX 2.1 (to share)" }
            a.button href=(format!("/api/v1/alerts/{}", a.id)) { "JSON" }
            @if let Some(t) = a.targets.first() {
                a.button href=(host_flows(host_of(&t.addr), &window)) { "Flows of its target over its window" }
            }
        }
        table.facts {
            tr { th { "technique" } td { (a.technique) " " (a.technique_name) " (" (matrix) ")" } }
            tr { th { "asset" } td { (a.asset) " · sector " (a.sector) " · criticality " (a.criticality.as_str()) } }
            tr { th { "measured" } td { b { (format!("{:.1}", a.measured)) } " " (a.unit) " against a threshold of " b { (format!("{:.1}", a.threshold)) } " " (a.unit) } }
            tr { th { "first seen" } td { (when(a.first_seen_ns)) " UTC" } }
            tr { th { "last seen" } td { (when(a.last_seen_ns)) " UTC · " (a.updates) " updates" } }
            tr { th { "evidence" } td { (count(a.evidence_count)) " flows seen, " (a.evidence.len()) " kept" } }
        }
        div.grid {
            (parties("Sources", &a.sources, a.source_count))
            (parties("Targets", &a.targets, a.target_count))
        }
        section {
            h2 { "Sensors over its window" }
            p class=(if c.complete { "complete" } else { "incomplete" }) {
                @if c.complete { "Complete: no sensor reports a loss over the window." }
                @else { "Incomplete: a sensor reports losses over the window; the evidence may be partial." }
            }
            ul.small { @for l in c.lines() { li { (l) } } }
        }
        section {
            h2 { "Evidence flows (" (flows.len()) " of " (a.evidence.len()) " kept)" }
            (flow_table(&flows))
        }
        section {
            h2 { "Custody: bundles exported" }
            @if trail.is_empty() {
                p { "No evidence bundle has been exported of this alert." }
            } @else {
                div.scroll { table {
                    tr { th { "exported" } th { "by" } th { "for" } th { "SHA-256" } th { "bytes" } }
                    @for e in &trail {
                        tr {
                            td { (when(e.created_ns)) }
                            td { @if e.by.is_empty() { "(not recorded)" } @else { (e.by) } }
                            td { @if e.partner.is_empty() { "plain" } @else { (e.partner) " (anonymized)" } }
                            td { code { (e.sha256) } }
                            td.num { (e.bytes) }
                        }
                    }
                } }
            }
        }
    };
    page(
        started,
        StatusCode::OK,
        &format!("Alert {}", a.id),
        "Alerts",
        body,
    )
}

/// `/flows`: the flow explorer.
pub async fn flows(State(sh): State<Arc<Shared>>, RawQuery(q): RawQuery) -> Response {
    let started = Instant::now();
    let p = match Params::parse(
        q.as_deref(),
        &["filter", "range", "since", "until", "offset"],
    ) {
        Ok(p) => p,
        Err(e) => return bad(started, e),
    };
    let text = p.get("filter").unwrap_or("").to_string();
    let current = p.get("range").unwrap_or("1h");
    let form = |error: Option<Markup>| {
        html! {
            form.explorer method="get" action="/flows" {
                input type="text" name="filter" id="filter" value=(text) size="60"
                    placeholder="dst port 502 and not src net 10.0.0.0/8" autocomplete="off" spellcheck="false";
                input type="text" name="since" value=(p.get("since").unwrap_or("")) placeholder="since" size="22";
                input type="text" name="until" value=(p.get("until").unwrap_or("")) placeholder="until" size="22";
                input type="hidden" name="range" value=(current);
                button type="submit" { "Run" }
            }
            @if let Some(e) = error { (e) }
        }
    };
    let filter = match query::parse(&text) {
        Ok(f) => f,
        Err(e) => {
            let body = html! {
                h1 { "Flows" }
                (form(Some(html! { div.error id="filter-error" { pre { (e.render(&text)) } } })))
            };
            return page(started, StatusCode::BAD_REQUEST, "Flows", "Flows", body);
        }
    };
    let offset = match p.number("offset", 0, 0, sh.max_query_flows) {
        Ok(o) => o as usize,
        Err(e) => return bad(started, e),
    };
    let w = match window(&sh, &p, &filter, "1h").await {
        Ok(w) => w,
        Err(r) => return r,
    };
    // The top-N tables and the series in one pass over the flows, the
    // page of flows beside it.
    let (store, f, range) = (sh.store.clone(), filter.clone(), w.range);
    let step = w.shown.since_ns.map(|_| w.step_ns);
    let explored = blocking("console: top-N and series", move || {
        store.explore(
            (&f, range),
            &[TopKey::Src, TopKey::Dst, TopKey::DstPort, TopKey::Proto],
            (TopBy::Bytes, 10),
            step,
        )
    });
    let (store, f, range) = (sh.store.clone(), filter.clone(), w.range);
    let listing = blocking("console: flows", move || {
        flow_page(store.as_ref(), (&f, range), (offset, FLOW_PAGE), false)
    });
    let ((tops, points), (rows, more, _)) = match tokio::join!(explored, listing) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(f), _) | (_, Err(f)) => return failed(started, f),
    };
    let points = match points {
        Some(p) => match query::dense_series(&p, w.shown, w.step_ns) {
            Ok(p) => p,
            Err(e) => return failed(started, Failure::bug(e)),
        },
        None => Vec::new(),
    };
    let [src, dst, dport, proto]: [Vec<TopRow>; 4] = match tops.try_into() {
        Ok(t) => t,
        Err(_) => {
            return failed(
                started,
                Failure::bug("four top-N tables asked, others answered"),
            );
        }
    };
    let total = sum(&points);
    let kept = keep(&[
        ("filter", Some(text.as_str()).filter(|t| !t.is_empty())),
        ("since", p.get("since")),
        ("until", p.get("until")),
    ]);
    let narrow = |word: &'static str| {
        let text = text.clone();
        let kept_range = keep(&[
            ("range", Some(current)),
            ("since", p.get("since")),
            ("until", p.get("until")),
        ]);
        move |key: &str| {
            let clause = format!("{word} {key}");
            let f = if text.is_empty() {
                clause
            } else {
                format!("({text}) and {clause}")
            };
            Some(format!(
                "/flows?filter={}{kept_range}",
                form_urlencoded::byte_serialize(f.as_bytes()).collect::<String>()
            ))
        }
    };
    let page_link = |o: usize| format!("/flows?range={current}{kept}&offset={o}");
    let body = html! {
        h1 { "Flows" }
        (form(None))
        (presets("/flows", &keep(&[("filter", Some(text.as_str()).filter(|t| !t.is_empty()))]), if p.get("since").is_some() || p.get("until").is_some() { "" } else { current }))
        p.window { (w.label) "; one point every " (w.step) "." }
        (totals_line(&total))
        (chart("flows-chart", &points))
        div.grid4 {
            (top_table("Sources", &src, narrow("src host")))
            (top_table("Destinations", &dst, narrow("dst host")))
            (top_table("Destination ports", &dport, narrow("dst port")))
            (top_table("Protocols", &proto, |_| None))
        }
        section {
            h2 { "Flows " (offset + 1) "–" (offset + rows.len()) }
            (flow_table(&rows))
            div.pager {
                @if offset > 0 { a href=(page_link(offset.saturating_sub(FLOW_PAGE))) { "← previous" } }
                @if more { a id="next-page" href=(page_link(offset + FLOW_PAGE)) { "next →" } }
            }
        }
    };
    page(started, StatusCode::OK, "Flows", "Flows", body)
}

/// `/sensors`: every sensor's counters.
pub async fn sensors(State(sh): State<Arc<Shared>>, RawQuery(q): RawQuery) -> Response {
    let started = Instant::now();
    if let Err(e) = Params::parse(q.as_deref(), &[]) {
        return bad(started, e);
    }
    let sensors = match sensor_records(&sh).await {
        Ok(s) => s,
        Err(f) => return failed(started, f),
    };
    let body = html! {
        h1 { "Sensors" }
        (sensor_cards(&sensors))
        div.scroll {
            table.sensors {
                thead { tr {
                    th { "sensor" } th { "state" } th.num { "flows stored" } th.num { "batches" }
                    th.num { "duplicates" } th.num { "missing batches" } th.num { "packets" }
                    th.num { "kernel drops" } th.num { "decode errors" } th.num { "evicted" }
                    th.num { "spool" } th.num { "spool dropped" } th.num { "queue drops" } th { "last batch" }
                } }
                tbody {
                    @for (s, connected) in &sensors {
                        @let st = &s.stats;
                        tr {
                            td { (s.sensor_id) }
                            td { @if *connected { "connected" } @else { "not connected" } }
                            td.num { (count(s.flows)) } td.num { (count(s.batches)) }
                            td.num { (count(s.duplicates)) } td.num { (count(s.seq_gaps)) }
                            td.num { (count(st.packets)) } td.num { (count(st.kernel_drops)) }
                            td.num { (count(st.decode_errors.values().sum::<u64>())) }
                            td.num { (count(st.flows_evicted)) } td.num { (bytes(st.spool_bytes)) }
                            td.num { (count(st.spool_dropped_flows)) } td.num { (count(st.channel_full_drops)) }
                            td.time { (when(s.last_seen_ns)) }
                        }
                    }
                }
            }
        }
    };
    page(started, StatusCode::OK, "Sensors", "Sensors", body)
}
