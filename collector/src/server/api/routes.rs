//! The API's endpoints: each reads its parameters, asks the store on a
//! blocking thread (as the gRPC services do) and answers JSON.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use vigil_proto::pb;
use vigil_proto::time::now_ns;

use super::params::Params;
use super::{ApiError, OPENAPI, json_body};
use crate::model::alert::alert_show_json;
use crate::model::query::{TopBy, TopKey};
use crate::query::{self, json as shape};
use crate::server::Shared;
use crate::server::alerts::alert_detail;
use crate::server::evidence::{export_bundle, exports_of, no_key};
use crate::server::query::{
    blocking, count_answer, flow_page, sensor_records, series_answer, top_answer,
};

type Answer = Result<Response, ApiError>;

/// The API's endpoints.
pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/v1/flows", get(flows))
        .route("/api/v1/top", get(top))
        .route("/api/v1/count", get(count))
        .route("/api/v1/series", get(series))
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/alerts/{id}", get(alert))
        .route("/api/v1/alerts/{id}/bundle", get(bundle))
        .route("/api/v1/alerts/{id}/stix", get(stix))
        .route("/api/v1/alerts/{id}/exports", get(exports))
        .route("/api/v1/sensors", get(sensors))
        .route("/api/v1/openapi.json", get(openapi))
}

/// `explain` lines into a reply, when asked.
fn with_explain(mut v: Value, lines: Option<Vec<String>>) -> Value {
    if let Some(l) = lines {
        v["explain"] = Value::from(l);
    }
    v
}

async fn flows(State(sh): State<Arc<Shared>>, RawQuery(q): RawQuery) -> Answer {
    let p = Params::parse(
        q.as_deref(),
        &["filter", "since", "until", "limit", "offset", "explain"],
    )?;
    let filter = p.filter()?;
    let range = p.range(now_ns())?;
    let limit = p.number("limit", 100, 1, 10_000)? as usize;
    let offset = p.number("offset", 0, 0, sh.max_query_flows)? as usize;
    let explain = p.flag("explain")?;
    let store = sh.store.clone();
    let (rows, more, lines) = blocking("flow query", move || {
        flow_page(store.as_ref(), (&filter, range), (offset, limit), explain)
    })
    .await?;
    let next = more.then_some(offset + limit);
    let flows: Vec<Value> = rows.iter().map(|(s, r)| shape::stored_flow(s, r)).collect();
    Ok(json_body(&with_explain(
        json!({"flows": flows, "offset": offset, "limit": limit, "next_offset": next}),
        lines,
    )))
}

async fn top(State(sh): State<Arc<Shared>>, RawQuery(q): RawQuery) -> Answer {
    let p = Params::parse(
        q.as_deref(),
        &["key", "by", "limit", "filter", "since", "until", "explain"],
    )?;
    let key_text = p
        .get("key")
        .ok_or_else(|| ApiError::param("key", "missing: what to rank (src, dst, dport, …)"))?;
    let key = TopKey::parse(key_text).ok_or_else(|| {
        ApiError::param(
            "key",
            format!(
                "{key_text:?}: expected src, dst, dport, sport, proto, app, dns.qname, tls.sni, \
                 http.host, ssh.client, tls.ja4 or ssh.hassh"
            ),
        )
    })?;
    let by_text = p.get("by").unwrap_or("bytes");
    let by = TopBy::parse(by_text).ok_or_else(|| {
        ApiError::param(
            "by",
            format!("{by_text:?}: expected bytes, packets or flows"),
        )
    })?;
    let limit = p.number("limit", 10, 1, 10_000)? as usize;
    let filter = p.filter()?;
    let range = p.range(now_ns())?;
    let explain = p.flag("explain")?;
    let store = sh.store.clone();
    let (rows, lines) = blocking("top-N query", move || {
        top_answer(store.as_ref(), (&filter, range), (key, by, limit), explain)
    })
    .await?;
    let rows: Vec<Value> = rows.iter().map(shape::top_row).collect();
    Ok(json_body(&with_explain(
        json!({"key": key.name(), "by": by_text, "rows": rows}),
        lines,
    )))
}

async fn count(State(sh): State<Arc<Shared>>, RawQuery(q): RawQuery) -> Answer {
    let p = Params::parse(q.as_deref(), &["filter", "since", "until", "explain"])?;
    let filter = p.filter()?;
    let range = p.range(now_ns())?;
    let explain = p.flag("explain")?;
    let store = sh.store.clone();
    let (t, lines) = blocking("count query", move || {
        count_answer(store.as_ref(), &filter, range, explain)
    })
    .await?;
    Ok(json_body(&with_explain(shape::totals(&t), lines)))
}

async fn series(State(sh): State<Arc<Shared>>, RawQuery(q): RawQuery) -> Answer {
    let p = Params::parse(
        q.as_deref(),
        &["step", "filter", "since", "until", "explain"],
    )?;
    let step_text = p
        .get("step")
        .ok_or_else(|| ApiError::param("step", "missing: the interval, e.g. 1m, 5m or 1h"))?;
    let step = vigil_proto::units::parse_duration(step_text)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .map_err(|e| {
            ApiError::param(
                "step",
                format!("{step_text:?}: expected an interval such as 1m, 5m or 1h: {e}"),
            )
        })?;
    let filter = p.filter()?;
    let now = now_ns();
    let range = p.range(now)?;
    // As `vigil query --series`; the step and the number of intervals
    // checked before the store is asked.
    query::shown_series(&[], range, now, step).map_err(|e| ApiError::param("step", e))?;
    let explain = p.flag("explain")?;
    let store = sh.store.clone();
    let (points, lines) = blocking("series query", move || {
        series_answer(store.as_ref(), &filter, range, step, explain)
    })
    .await?;
    let points =
        query::shown_series(&points, range, now, step).map_err(|e| ApiError::param("step", e))?;
    let points: Vec<Value> = points.iter().map(shape::series_point).collect();
    Ok(json_body(&with_explain(
        json!({"step": step_text, "step_ns": step, "points": points}),
        lines,
    )))
}

async fn alerts(State(sh): State<Arc<Shared>>, RawQuery(q): RawQuery) -> Answer {
    let p = Params::parse(
        q.as_deref(),
        &["kind", "min_severity", "asset", "since", "until", "limit"],
    )?;
    let query = p.alert_query(now_ns(), 100)?;
    let store = sh.store.clone();
    let found = blocking("listing alerts", move || store.alerts(&query)).await?;
    let list: Vec<Value> = found
        .iter()
        .map(|a| crate::model::alert::alert_json(&pb::Alert::from(a)))
        .collect();
    Ok(json_body(&json!({ "alerts": list })))
}

fn alert_id(text: &str) -> Result<u64, ApiError> {
    text.parse()
        .map_err(|_| ApiError::param("id", format!("{text:?}: expected an alert number")))
}

async fn alert(
    State(sh): State<Arc<Shared>>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Answer {
    let id = alert_id(&id)?;
    let p = Params::parse(q.as_deref(), &["flows"])?;
    let max = p.number("flows", 100, 0, 10_000)? as usize;
    let Some((a, flows, c)) = alert_detail(&sh, id, max).await? else {
        return Err(ApiError::not_found(format!("no alert {id}")));
    };
    let mut v = alert_show_json(&pb::Alert::from(&a), Some(&c));
    v["flows"] = flows
        .iter()
        .map(|(s, r)| shape::stored_flow(s, r))
        .collect();
    Ok(json_body(&v))
}

/// The custody trail: every evidence bundle exported of the alert, who
/// took it and when.
async fn exports(
    State(sh): State<Arc<Shared>>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Answer {
    let id = alert_id(&id)?;
    Params::parse(q.as_deref(), &[])?;
    let trail = exports_of(&sh, id).await?;
    let list: Vec<serde_json::Value> = trail
        .iter()
        .map(|e| {
            serde_json::json!({
                "sha256": e.sha256,
                "bytes": e.bytes,
                "exported": vigil_proto::time::Rfc3339Nanos(e.created_ns).to_string(),
                "by": e.by,
                "partner": e.partner,
            })
        })
        .collect();
    Ok(json_body(
        &serde_json::json!({ "alert": id, "exports": list }),
    ))
}

/// The alert as a STIX 2.1 bundle (`tlp`: its marking), as `vigil alerts
/// export --format stix --id N` makes it.
async fn stix(
    State(sh): State<Arc<Shared>>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Answer {
    let id = alert_id(&id)?;
    let p = Params::parse(q.as_deref(), &["tlp"])?;
    let tlp = match p.get("tlp") {
        None => None,
        Some(t) => Some(crate::share::Tlp::parse(t).ok_or_else(|| {
            ApiError::param("tlp", "expected clear, green, amber, amber+strict or red")
        })?),
    };
    // STIX ids are derived from the collector's signing key.
    let Some(key) = sh.key.clone() else {
        return Err(no_key().into());
    };
    let collector = key.fingerprint();
    let (store, config, data_dir) = (
        sh.store.clone(),
        sh.share_config.clone(),
        sh.data_dir.clone(),
    );
    let bundle = blocking("exporting STIX", move || {
        crate::share::plain_bundle(
            store.as_ref(),
            config.as_deref(),
            &collector,
            &data_dir,
            id,
            tlp,
        )
    })
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no alert {id}")))?;
    let mut text = serde_json::to_string_pretty(&bundle).unwrap_or_default();
    text.push('\n');
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "application/stix+json;version=2.1".to_string(),
            ),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"vigil-alert-{id}.stix.json\""),
            ),
        ],
        text,
    )
        .into_response())
}

async fn bundle(
    State(sh): State<Arc<Shared>>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    who: Option<axum::Extension<crate::server::access::WebReader>>,
) -> Answer {
    let id = alert_id(&id)?;
    Params::parse(q.as_deref(), &[])?;
    let Some(key) = sh.key.clone() else {
        return Err(no_key().into());
    };
    let by = who
        .as_ref()
        .map_or_else(|| "?".to_string(), |w| w.0.describe());
    let exported = export_bundle(&sh, key, id, None, by.clone()).await?;
    let e = match exported {
        Ok(e) => e,
        Err(crate::evidence::ExportError::NoAlert(id)) => {
            return Err(ApiError::not_found(format!("no alert {id}")));
        }
        Err(e) => {
            return Err(ApiError::from(crate::server::failure::Failure::bug(
                e.to_string(),
            )));
        }
    };
    tracing::info!(
        alert = id,
        flows = e.flows,
        bytes = e.bytes.len(),
        by = %by,
        "evidence bundle exported over HTTP"
    );
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-tar".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"vigil-alert-{id}.tar\""),
            ),
        ],
        e.bytes,
    )
        .into_response())
}

async fn sensors(State(sh): State<Arc<Shared>>, RawQuery(q): RawQuery) -> Answer {
    Params::parse(q.as_deref(), &[])?;
    let records = sensor_records(&sh).await?;
    let stored: u64 = records.iter().map(|(s, _)| s.flows).sum();
    let list: Vec<Value> = records
        .iter()
        .map(|(s, connected)| {
            let mut v = shape::sensor(s);
            v["connected"] = Value::from(*connected);
            v
        })
        .collect();
    Ok(json_body(&json!({
        "sensors": list,
        "stored_flows": stored,
        "detected_flows": sh.metrics.detect_flows.get(),
        "alerts_opened": sh.metrics.alerts_opened(),
    })))
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}
