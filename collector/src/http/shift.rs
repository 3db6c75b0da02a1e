//! The shift report: `/shift?date=2025-06-10&shift=day` (a page, printable) and `/api/v1/shift` (the same
//! figures as JSON). Without `date` and `shift` it shows the last shift that has ended. Both call [`compute`],
//! so page and API agree.

use super::auth::{Principal, Viewer};
use super::error::{blocking, ApiError, AppError, PageError};
use super::views::{self, Link, Nav, Table, Words};
use super::AppState;
use crate::query::{Dataset, Params};
use crate::report::shift::{self, ShiftReport};
use crate::report::Report;
use askama::Template;
use axum::extract::{OriginalUri, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::NaiveDate;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

pub fn routes() -> Router<AppState> {
    Router::new().route("/shift", get(page)).route("/api/v1/shift", get(api))
}

/// Which shift: a local date and a slot name; both or neither.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ShiftParams {
    pub date: Option<String>,
    pub shift: Option<String>,
}

/// One computed shift.
pub struct Computed {
    pub ds: Arc<Dataset>,
    pub date: NaiveDate,
    pub shift: String,
    pub names: Vec<&'static str>,
    pub report: ShiftReport,
    pub summary: BTreeMap<String, Value>,
    pub stops: Report,
    /// The shifts before and after, as (date, name).
    pub prev: Option<ShiftId>,
    pub next: Option<ShiftId>,
}

/// A shift: its local date and slot name.
pub type ShiftId = (NaiveDate, &'static str);

fn some(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// # Errors
/// 400 for an unreadable date, an unknown shift name, one of date and shift without the other, or no
/// rotations to know shifts from; the store's errors.
pub async fn compute(st: &AppState, q: ShiftParams) -> Result<Computed, AppError> {
    let source = st.data.clone();
    blocking(move || {
        let ds = source.dataset()?;
        let p = &ds.people;
        let now = chrono::Utc::now().timestamp_millis();
        let names = shift::slot_names(p);
        if names.is_empty() {
            return Err(AppError::bad_request(
                "no shifts are known: import rotation.csv (crew rotations) to see shift reports",
            ));
        }
        let (date, name) = match (some(&q.date), some(&q.shift)) {
            (None, None) => match shift::last_completed(p, now) {
                Some((d, n)) => (d, n.to_string()),
                None => (roster_today(p, now), names[0].to_string()),
            },
            (Some(d), Some(n)) => {
                let date = NaiveDate::parse_from_str(d, "%Y-%m-%d").map_err(|_| {
                    AppError::bad_request(format!("invalid date {d:?}: expected a date such as 2025-06-10"))
                })?;
                if !names.contains(&n) {
                    return Err(AppError::bad_request(format!(
                        "unknown shift {n:?}: expected one of {}",
                        names.join(", ")
                    )));
                }
                (date, n.to_string())
            }
            _ => return Err(AppError::bad_request("give both date and shift, or neither for the last shift")),
        };
        let slots = shift::slots(p, date, &name);
        let report = shift::shift_report(p, &ds.events, &slots, now);
        let (summary, mut stops) = shift::report(p, &ds.events, &report, now);
        if slots.is_empty() {
            stops.notes.push(format!("no crew works the {name} shift on {date}"));
        }
        let (prev, next) = neighbours(&ds, date, &name);
        Ok::<_, AppError>(Computed { ds: ds.clone(), date, shift: name, names, report, summary, stops, prev, next })
    })
    .await
}

fn roster_today(p: &crate::people::Personnel, now: i64) -> NaiveDate {
    crate::people::roster::local_date(p.settings.tz, now)
}

/// The worked shifts just before and just after (date, name), within two days.
fn neighbours(ds: &Dataset, date: NaiveDate, name: &str) -> (Option<ShiftId>, Option<ShiftId>) {
    let p = &ds.people;
    let mut all: Vec<(NaiveDate, i64, &'static str)> = Vec::new();
    for d in
        [date.pred_opt(), Some(date), date.succ_opt(), date.succ_opt().and_then(|d| d.succ_opt())].into_iter().flatten()
    {
        for r in &p.rotations {
            if let Some(s) = crate::people::roster::slot_on(&p.settings, r, d) {
                all.push((d, s.start_ms, s.name));
            }
        }
    }
    all.sort_unstable();
    all.dedup_by(|a, b| a.0 == b.0 && a.2 == b.2);
    let Some(i) = all.iter().position(|(d, _, n)| *d == date && *n == name) else { return (None, None) };
    let pick = |j: Option<usize>| j.and_then(|j| all.get(j)).map(|(d, _, n)| (*d, *n));
    (pick(i.checked_sub(1)), pick(Some(i + 1)))
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
    let c = compute(&st, q).await?;
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
    let c = compute(&st, q).await.map_err(&err)?;
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
