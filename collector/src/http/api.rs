//! `/api/v1/`: every report, the downtime feed, gateway health and personnel imports, as JSON or CSV
//! (`?format=csv` or `Accept: text/csv`). The report endpoints come from the read side's one table,
//! [`query::CATALOGUE`], which also feeds the OpenAPI document and the pages, so they cannot drift apart.
//!
//! A report answers `{report, from, to, total_rows, notes, summary?, rows: [{column: value}]}`; its CSV has
//! one column per key of a row, in the same order.

use super::auth::{Admin, Viewer};
use super::error::{blocking, ApiError, AppError};
use super::{openapi, AppState};
use crate::feed;
use crate::people::import::Kind as CsvKind;
use crate::query::{self, Filter, ImportOutcome, Kind, Output, Params, CATALOGUE};
use crate::report::render::{self, Format};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

pub fn routes() -> Router<AppState> {
    let mut r = Router::new()
        .route("/api/v1/openapi.json", get(|| async { Json(openapi::document().clone()) }))
        .route("/api/v1/downtime", get(downtime))
        .route("/api/v1/gateways", get(gateways))
        .route("/api/v1/import/{kind}", post(import_api));
    for e in &CATALOGUE {
        let kind = e.kind;
        r = r.route(
            e.path,
            get(move |State(st): State<AppState>, _: Viewer, headers: HeaderMap, Query(q): Query<Params>| async move {
                report(st, headers, q, kind).await
            }),
        );
    }
    r
}

fn wants_csv(headers: &HeaderMap, q: &Params) -> Result<bool, AppError> {
    match q.format.as_deref().filter(|f| !f.is_empty()) {
        Some("csv") => Ok(true),
        Some("json") => Ok(false),
        Some(other) => Err(AppError::bad_request(format!("unknown format {other:?}: expected csv or json"))),
        None => Ok(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/csv"))),
    }
}

fn csv_response(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response()
}

/// A report as the API's JSON.
pub fn to_json(out: &Output, f: &Filter) -> Value {
    let rows: Vec<Value> = out
        .report
        .rows
        .iter()
        .map(|row| Value::Object(out.report.columns.iter().cloned().zip(row.iter().cloned()).collect::<Map<_, _>>()))
        .collect();
    let mut v = json!({
        "report": out.report.name,
        "from": feed::rfc3339(f.from_ms),
        "to": feed::rfc3339(f.to_ms),
        "total_rows": out.total_rows,
        "notes": out.report.notes,
        "rows": rows,
    });
    if let (Some(s), Some(obj)) = (&out.summary, v.as_object_mut()) {
        obj.insert("summary".into(), json!(s));
    }
    v
}

async fn report(st: AppState, headers: HeaderMap, q: Params, kind: Kind) -> Result<Response, ApiError> {
    let csv = wants_csv(&headers, &q)?;
    let source = st.data.clone();
    let (out, filter) = blocking(move || query::report(&source, &q, kind)).await?;
    if csv {
        let body = render::render(&out.report, Format::Csv).map_err(AppError::internal)?;
        return Ok(csv_response(body));
    }
    Ok(Json(to_json(&out, &filter)).into_response())
}

/// The downtime feed (`shiftlens.downtime/1`) of events overlapping the window, filtered, oldest first.
/// `X-Total-Count` says how many events the window holds; more than `[http] max_rows` need `limit` and
/// `offset` (a 400 says so), so one answer never holds more than max_rows records.
async fn downtime(
    State(st): State<AppState>,
    _: Viewer,
    headers: HeaderMap,
    Query(q): Query<Params>,
) -> Result<Response, ApiError> {
    let csv = wants_csv(&headers, &q)?;
    let source = st.data.clone();
    let (records, total) = blocking(move || query::downtime_feed(&source, &q)).await?;
    let count = [("x-total-count", total.to_string())];
    if csv {
        return Ok((count, csv_response(feed::to_csv(&records).map_err(AppError::internal)?)).into_response());
    }
    Ok((count, Json(records)).into_response())
}

async fn gateways(
    State(st): State<AppState>,
    _: Viewer,
    headers: HeaderMap,
    Query(q): Query<Params>,
) -> Result<Response, ApiError> {
    let csv = wants_csv(&headers, &q)?;
    let source = st.data.clone();
    let now = chrono::Utc::now().timestamp_millis();
    let rep = blocking(move || query::gateways(&source, now)).await?;
    if csv {
        return Ok(csv_response(render::render(&rep, Format::Csv).map_err(AppError::internal)?));
    }
    let f = Filter { site: None, line: None, asset: None, crew: None, from_ms: now, to_ms: now };
    let total_rows = rep.rows.len();
    Ok(Json(to_json(&Output { report: rep, summary: None, total_rows }, &f)).into_response())
}

/// Validates and stores one personnel CSV, all rows or none, then drops the cached dataset.
///
/// # Errors
/// The store failed (nothing stored).
pub fn import_csv(source: &query::Source, kind: CsvKind, file: &str, text: &str) -> Result<ImportOutcome, AppError> {
    let outcome = query::import(source.db(), source.settings(), kind, file, text)?;
    if matches!(outcome, ImportOutcome::Stored(_)) {
        source.invalidate();
    }
    Ok(outcome)
}

/// Parses a CSV kind name.
///
/// # Errors
/// 400 listing the kinds.
pub fn csv_kind(name: &str) -> Result<CsvKind, AppError> {
    CsvKind::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = CsvKind::ALL.iter().map(|k| k.name()).collect();
        AppError::bad_request(format!("unknown import kind {name:?}: expected one of {}", names.join(", ")))
    })
}

async fn import_api(
    State(st): State<AppState>,
    _: Admin,
    Path(kind): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let kind = csv_kind(&kind)?;
    let text = String::from_utf8(body.to_vec()).map_err(|_| AppError::bad_request("the CSV is not UTF-8"))?;
    let source = st.data.clone();
    let file = format!("{}.csv", kind.name());
    let outcome = blocking(move || import_csv(&source, kind, &file, &text)).await?;
    Ok(match outcome {
        ImportOutcome::Stored(summary) => Json(json!({ "imported": true, "summary": summary })).into_response(),
        ImportOutcome::Rejected(errors) => {
            let list: Vec<Value> = errors
                .iter()
                .map(|e| json!({ "file": e.file, "line": e.line, "column": e.column, "message": e.message }))
                .collect();
            let msg = format!("{} invalid row(s); nothing imported", errors.len());
            (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({ "error": msg, "errors": list }))).into_response()
        }
    })
}
