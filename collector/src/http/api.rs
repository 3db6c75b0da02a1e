//! `/api/v1/`: every report, the downtime feed, gateway health and personnel imports, as JSON or CSV
//! (`?format=csv` or `Accept: text/csv`). The report endpoints come from one table, [`REPORTS`], which
//! also feeds the OpenAPI document, so the two cannot drift apart.
//!
//! A report answers `{report, from, to, total_rows, notes, summary?, rows: [{column: value}]}`; its CSV has
//! one column per key of a row, in the same order.

use super::auth::{Admin, Viewer};
use super::data::{self, Filter, Kind, Options, Output, Params, Source};
use super::error::{ApiError, AppError};
use super::{openapi, AppState};
use crate::feed;
use crate::people::import::{self, Kind as CsvKind};
use crate::report::recert;
use crate::report::render::{self, Format};
use crate::store::people as db;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// One report endpoint.
pub struct Endpoint {
    pub path: &'static str,
    pub kind: Kind,
    pub summary: &'static str,
    /// Report options it reads, beyond the common filters.
    pub options: &'static [&'static str],
}

/// Every report endpoint.
pub const REPORTS: [Endpoint; 12] = [
    Endpoint {
        path: "/api/v1/overview",
        kind: Kind::Overview,
        summary: "Availability, downtime hours, MTTR (covered and uncovered) and a weekly trend",
        options: &[],
    },
    Endpoint {
        path: "/api/v1/join",
        kind: Kind::Join,
        summary: "Downtime events, newest first, with who was on shift, who was qualified and what was missing",
        options: &["limit", "offset"],
    },
    Endpoint {
        path: "/api/v1/coverage",
        kind: Kind::Coverage,
        summary: "Coverage matrix: crew or shift × skill, qualified headcount, share of shift time covered, status",
        options: &["group"],
    },
    Endpoint {
        path: "/api/v1/mttr",
        kind: Kind::Mttr,
        summary: "MTTR covered vs uncovered by asset, skill, shift or crew, with sample sizes and 95% intervals",
        options: &["dim"],
    },
    Endpoint {
        path: "/api/v1/pareto",
        kind: Kind::Pareto,
        summary: "Downtime Pareto by asset or by missing skill",
        options: &["by"],
    },
    Endpoint {
        path: "/api/v1/gaps",
        kind: Kind::Gaps,
        summary: "Skill gaps now and for each initiative at its go-live (readiness %)",
        options: &[],
    },
    Endpoint {
        path: "/api/v1/priorities",
        kind: Kind::Priorities,
        summary: "Training priorities ranked by avoidable hours per month × cost per hour",
        options: &["per_person"],
    },
    Endpoint {
        path: "/api/v1/recert",
        kind: Kind::Recert,
        summary:
            "Certificates lapsed (not renewed) and expiring within the horizon, with the coverage each lapse takes away",
        options: &["horizon"],
    },
    Endpoint {
        path: "/api/v1/alarm-load",
        kind: Kind::AlarmLoad,
        summary: "Alarm activations per 10 minutes per operator on shift, by crew and competency",
        options: &[],
    },
    Endpoint {
        path: "/api/v1/repeats",
        kind: Kind::Repeats,
        summary: "Repeat incidents per week: stops on the same asset with the same first-out alarm as one that ended at most [people] repeat_window (7d) before, their share and its trend",
        options: &[],
    },
    Endpoint {
        path: "/api/v1/training-effect",
        kind: Kind::TrainingEffect,
        summary: "Training effect: per person and skill whose level rose in the window, MTTR of the events needing the skill on their shifts before and after (n, 95% CI), and hours saved",
        options: &[],
    },
    Endpoint {
        path: "/api/v1/whatif",
        kind: Kind::Whatif,
        summary: "What changes if a person gains or loses a qualification",
        options: &["change"],
    },
];

/// Query parameters that only one report reads, kept out of the shared [`Params`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ReportParams {
    /// Recert: the horizon (`30d`); default `[people] recert_horizon`.
    pub horizon: Option<String>,
}

impl ReportParams {
    /// The recertification horizon asked for, in ms (an empty value counts as absent, as HTML forms send it).
    ///
    /// # Errors
    /// 400 naming the parameter, its value and the accepted form.
    pub fn horizon_ms(&self) -> Result<Option<i64>, AppError> {
        let Some(v) = self.horizon.as_deref().map(str::trim).filter(|v| !v.is_empty()) else { return Ok(None) };
        recert::parse_horizon(v).map(Some).map_err(|e| AppError::bad_request(format!("invalid horizon {v:?}: {e}")))
    }
}

pub fn routes() -> Router<AppState> {
    let mut r = Router::new()
        .route("/api/v1/openapi.json", get(|| async { Json(openapi::document().clone()) }))
        .route("/api/v1/downtime", get(downtime))
        .route("/api/v1/gateways", get(gateways))
        .route("/api/v1/import/{kind}", post(import_api));
    for e in &REPORTS {
        let kind = e.kind;
        r = r.route(
            e.path,
            get(
                move |State(st): State<AppState>,
                      _: Viewer,
                      headers: HeaderMap,
                      Query(q): Query<Params>,
                      Query(x): Query<ReportParams>| async move { report(st, headers, q, x, kind).await },
            ),
        );
    }
    r
}

/// Computes a report off the async threads; `recert_horizon_ms` overrides `[people] recert_horizon`.
///
/// # Errors
/// Bad parameters (400) or the store (503).
pub async fn compute(
    source: Arc<Source>,
    params: Params,
    kind: Kind,
    recert_horizon_ms: Option<i64>,
) -> Result<(Output, Filter), AppError> {
    tokio::task::spawn_blocking(move || {
        let ds = source.dataset()?;
        let now = chrono::Utc::now().timestamp_millis();
        let filter = Filter::parse(&params, source.settings(), now, source.bounds())?;
        let options = Options::parse(&params, kind, source.bounds())?;
        if kind == Kind::AlarmLoad {
            source.ensure_alarms(&ds)?;
        }
        let mut view = data::view(&ds, &filter, kind);
        if let Some(h) = recert_horizon_ms.filter(|h| *h != view.people.settings.recert_horizon_ms) {
            // The reports read their settings from the personnel: this request gets its own copy.
            view.people.to_mut().settings.recert_horizon_ms = h;
        }
        Ok((data::run(&view, kind, &options), filter))
    })
    .await
    .map_err(AppError::internal)?
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

async fn report(
    st: AppState,
    headers: HeaderMap,
    q: Params,
    x: ReportParams,
    kind: Kind,
) -> Result<Response, ApiError> {
    let csv = wants_csv(&headers, &q)?;
    let horizon = if kind == Kind::Recert { x.horizon_ms()? } else { None };
    let (out, filter) = compute(st.data.clone(), q, kind, horizon).await?;
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
    let (records, total) = tokio::task::spawn_blocking(move || {
        let ds = source.dataset()?;
        let bounds = source.bounds();
        let f = Filter::parse(&q, source.settings(), chrono::Utc::now().timestamp_millis(), bounds)?;
        let o = Options::parse(&q, Kind::Join, bounds)?;
        let matching = || {
            ds.downtime.iter().zip(&ds.events).take_while(|(d, _)| d.start_ms < f.to_ms).filter(|(d, e)| {
                d.end_ms.is_none_or(|end| end > f.from_ms)
                    && f.asset_in_scope(&ds.people, d.site.as_str(), d.asset.as_str())
                    && f.crew.as_deref().is_none_or(|c| e.crew.as_deref() == Some(c))
            })
        };
        let total = matching().count();
        if o.limit.is_none() && total > bounds.max_rows {
            return Err(AppError::bad_request(format!(
                "the window holds {total} downtime events, more than {} ([http] max_rows) in one answer: page with limit and offset, or narrow the window",
                bounds.max_rows
            )));
        }
        let records: Vec<feed::Record> = matching()
            .skip(o.offset)
            .take(o.limit.unwrap_or(bounds.max_rows))
            .map(|(d, e)| {
                feed::Record::new(d, ds.people.asset(d.asset.as_str()).map(|a| a.line.clone())).with_ack(d, e.ack_ms)
            })
            .collect();
        Ok::<_, AppError>((records, total))
    })
    .await
    .map_err(AppError::internal)??;
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
    let gws = tokio::task::spawn_blocking(move || source.gateways()).await.map_err(AppError::internal)??;
    let now = chrono::Utc::now().timestamp_millis();
    let rep = data::gateways_report(&gws, now);
    if csv {
        return Ok(csv_response(render::render(&rep, Format::Csv).map_err(AppError::internal)?));
    }
    let f = Filter { site: None, line: None, asset: None, crew: None, from_ms: now, to_ms: now };
    let total_rows = rep.rows.len();
    Ok(Json(to_json(&Output { report: rep, summary: None, total_rows }, &f)).into_response())
}

/// What a personnel import did, or why it stored nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportOutcome {
    Stored(String),
    Rejected(Vec<import::ImportError>),
}

/// Validates and stores one personnel CSV, all rows or none, then drops the cached dataset.
///
/// # Errors
/// The store failed (nothing stored).
pub fn import_csv(source: &Source, kind: CsvKind, file: &str, text: &str) -> Result<ImportOutcome, AppError> {
    let mut conn = db::open(source.db()).map_err(AppError::store)?;
    let _ = conn.busy_timeout(std::time::Duration::from_secs(5));
    let known = db::load(&conn, source.settings().clone()).map_err(AppError::store)?;
    let records = match import::parse(kind, file, text, &known) {
        Ok(r) => r,
        Err(errors) => return Ok(ImportOutcome::Rejected(errors)),
    };
    let s =
        db::import(&mut conn, kind, file, &records, chrono::Utc::now().timestamp_millis()).map_err(AppError::store)?;
    source.invalidate();
    tracing::info!(kind = %kind, file, added = s.added, changed = s.changed, removed = s.removed, "personnel imported");
    Ok(ImportOutcome::Stored(match s.import_id {
        Some(id) => format!(
            "{kind}: {} added, {} changed, {} removed, {} unchanged (revision {id})",
            s.added, s.changed, s.removed, s.unchanged
        ),
        None => format!("{kind}: no changes ({} unchanged)", s.unchanged),
    }))
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
    let outcome = tokio::task::spawn_blocking(move || import_csv(&source, kind, &file, &text))
        .await
        .map_err(AppError::internal)??;
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
