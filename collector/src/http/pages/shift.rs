//! The shift report: `/shift?date=2025-06-10&shift=day` (a page, printable) and `/api/v1/shift` (the same
//! figures as JSON). Without `date` and `shift` it shows the last shift that has ended. Both call [`compute`] of the read side,
//! so page and API agree.

use crate::http::auth::{Principal, Viewer};
use crate::http::error::{blocking, ApiError, AppError, PageError};
use crate::http::views::{self, Link, Nav, Table, Words};
use crate::http::AppState;
use crate::query::shift::{compute, Computed, ShiftId, ShiftParams};
use crate::query::Params;
use askama::Template;
use axum::extract::{OriginalUri, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

pub fn routes() -> Router<AppState> {
    Router::new().route("/shift", get(page)).route("/api/v1/shift", get(api))
}

/// The API's JSON of a shift.
fn to_json(c: &Computed) -> Value {
    let rows: Vec<Value> = c
        .stops
        .rows
        .iter()
        .map(|r| Value::Object(c.stops.columns.iter().cloned().zip(r.iter().cloned()).collect()))
        .collect();
    json!({
        "report": "shift",
        "date": c.date.to_string(),
        "shift": c.shift,
        "summary": c.summary,
        "total_rows": rows.len(),
        "notes": c.stops.notes,
        "rows": rows,
    })
}

async fn api(State(st): State<AppState>, _: Viewer, Query(q): Query<ShiftParams>) -> Result<Response, ApiError> {
    let source = st.data.clone();
    let c = blocking(move || compute(&source, &q)).await?;
    Ok(Json(to_json(&c)).into_response())
}

/// A person's name when the page may show it, else what the report shows.
fn person(words: &Words, shown: &str) -> String {
    words.person_name(shown).unwrap_or_else(|| shown.to_string())
}

/// A certificate issue as the page lists it.
pub struct CertLine {
    pub person: String,
    pub skill: String,
    pub status: String,
    pub when: String,
}

#[derive(Template)]
#[template(path = "shift.html")]
struct ShiftPage {
    title: String,
    nav: Nav,
    date: String,
    names: Vec<(String, bool)>,
    prev: Option<Link>,
    next: Option<Link>,
    /// (key, label, text, the API's value).
    summary: Vec<(String, &'static str, String, String)>,
    people: Vec<(String, String)>,
    missing: Vec<(String, String, usize)>,
    not_held: Vec<(String, String)>,
    certificates: Vec<CertLine>,
    table: Table,
    tz: String,
}

async fn page(
    State(st): State<AppState>,
    Viewer(p): Viewer,
    uri: OriginalUri,
    Query(q): Query<ShiftParams>,
) -> Result<Response, PageError> {
    let err = views::page_err(&uri);
    let source = st.data.clone();
    let c = blocking(move || compute(&source, &q)).await.map_err(&err)?;
    render_page(&st, &p, &c).map_err(&err)
}

fn render_page(st: &AppState, principal: &Principal, c: &Computed) -> Result<Response, AppError> {
    let settings = &c.ds.people.settings;
    let words = Words { people: Some(&c.ds.people), currency: &settings.currency, tz: settings.tz.name() };
    let link = |x: &Option<ShiftId>, label: &str| {
        x.map(|(d, n)| Link {
            href: format!("/shift?date={d}&shift={n}"),
            label: format!("{label}: {d} {n}"),
            on: false,
        })
    };
    let s = &c.summary;
    let text = |k: &str| s.get(k).map(views::cell_text).unwrap_or_default();
    let cur = if settings.currency.is_empty() { String::new() } else { format!(" {}", settings.currency) };
    let figure = |k: &str, label: &'static str, shown: String| (k.to_string(), label, shown, text(k));
    let summary = vec![
        figure("crews", "crew", text("crews")),
        figure("start", "start", text("start")),
        figure("end", "end", text("end")),
        figure("stops", "stops", text("stops")),
        figure(
            "downtime_h",
            "downtime",
            views::duration_text(s.get("downtime_h").and_then(Value::as_f64).unwrap_or(0.0)),
        ),
        figure("cost", "cost of the stops", format!("{}{cur}", text("cost"))),
        figure("covered_events", "covered stops", text("covered_events")),
        figure("uncovered_events", "uncovered stops", text("uncovered_events")),
    ];
    let shown_people: Vec<String> = s
        .get("on_shift")
        .and_then(Value::as_array)
        .map(|v| v.iter().map(views::cell_text).collect())
        .unwrap_or_default();
    let skill = |id: &str| words.skill_name(id).unwrap_or_else(|| id.to_string());
    let page = ShiftPage {
        title: format!("Shift report: {} {}", c.date, c.shift),
        nav: views::nav(st, principal, "/shift", &Params::default()),
        date: c.date.to_string(),
        names: c.names.iter().map(|n| (n.to_string(), *n == c.shift)).collect(),
        prev: link(&c.prev, "previous"),
        next: link(&c.next, "next"),
        summary,
        people: shown_people.iter().map(|x| (x.clone(), person(&words, x))).collect(),
        missing: c.report.missing.iter().map(|(k, n)| (k.clone(), skill(k), *n)).collect(),
        not_held: c.report.not_held.iter().map(|k| (k.clone(), skill(k))).collect(),
        certificates: s
            .get("certificates")
            .and_then(Value::as_array)
            .map(|v| {
                v.iter()
                    .map(|x| CertLine {
                        person: person(&words, x["person"].as_str().unwrap_or_default()),
                        skill: skill(x["skill"].as_str().unwrap_or_default()),
                        status: x["status"].as_str().unwrap_or_default().to_string(),
                        when: crate::report::recert::days_left_text(
                            x["status"] == "expired",
                            x["days_left"].as_i64().unwrap_or_default(),
                        ),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        table: views::table(&c.stops, &words),
        tz: settings.tz.name().to_string(),
    };
    views::render(&page, StatusCode::OK)
}
