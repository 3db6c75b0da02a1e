//! The what-if page: `/whatif?person=p0003&skill=vfd&level=3` (or `level=remove`) shows coverage and avoidable
//! hours before and after, computed by the same call as `/api/v1/whatif?change=p0003:vfd:3`, over the
//! window and filters of the other pages. Without a choice it shows the form.

use crate::http::auth::Viewer;
use crate::http::error::{blocking, PageError};
use crate::http::views::{self, Nav, Table, Words};
use crate::http::AppState;
use crate::query::{self, Filter, Kind, Params};
use askama::Template;
use axum::extract::{OriginalUri, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

pub fn routes() -> Router<AppState> {
    Router::new().route("/whatif", get(page))
}

/// The page's choice.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Choice {
    pub person: Option<String>,
    pub skill: Option<String>,
    /// 0-4, or `remove`.
    pub level: Option<String>,
}

fn some(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl Choice {
    /// The API's `change` (`person:skill:level` or `person:skill`), `None` until person and skill are chosen.
    pub fn change(&self) -> Option<String> {
        let (p, s) = (some(&self.person)?, some(&self.skill)?);
        Some(match some(&self.level) {
            None | Some("remove") => format!("{p}:{s}"),
            Some(l) => format!("{p}:{s}:{l}"),
        })
    }
}

/// The metric names of the what-if report in words.
fn metric_text(m: &str, currency: &str) -> String {
    let cur = if currency.is_empty() { "cost units" } else { currency };
    match m {
        "covered_events" => "Covered stops".into(),
        "uncovered_events" => "Uncovered stops".into(),
        "avoidable_h_per_month" => "Avoidable hours / month".into(),
        "avoidable_cost_per_month" => format!("Avoidable cost / month ({cur})"),
        other => match other.strip_prefix("covered_share[").and_then(|r| r.strip_suffix(']')) {
            Some(shift) => format!("Share of {shift} shift time with the skill covered"),
            None => other.replace('_', " "),
        },
    }
}

#[derive(Template)]
#[template(path = "whatif.html")]
struct WhatIfPage {
    title: String,
    nav: Nav,
    from: String,
    to: String,
    /// (id, name, chosen)
    people: Vec<(String, String, bool)>,
    skills: Vec<(String, String, bool)>,
    levels: Vec<(String, String, bool)>,
    change: Option<String>,
    table: Option<Table>,
}

async fn page(
    State(st): State<AppState>,
    Viewer(p): Viewer,
    uri: OriginalUri,
    Query(mut q): Query<Params>,
    Query(mut c): Query<Choice>,
) -> Result<Response, PageError> {
    let err = views::page_err(&uri);
    let shown_change = c.change();
    let source = st.data.clone();
    let ds = blocking(move || source.dataset()).await.map_err(&err)?;
    let settings = &ds.people.settings;
    let words = Words { people: Some(&ds.people), currency: &settings.currency, tz: settings.tz.name() };
    // The form offers people as the reports show them (pseudonyms when configured, so the page leaks no
    // ids); the API's change names the id behind the choice.
    let chosen_shown = c.person.clone();
    if let Some(shown) = some(&c.person) {
        let show = |id: &str| crate::report::privacy::show(&ds.people, id);
        if let Some(id) = ds.people.person_ids().iter().find(|id| show(id) == shown) {
            c.person = Some(id.clone());
        }
    }
    let change = c.change();
    q.change = change.clone();
    let (table, from, to) = match &change {
        Some(_) => {
            let (source, q) = (st.data.clone(), q.clone());
            let (out, f) = blocking(move || query::report(&source, &q, Kind::Whatif)).await.map_err(&err)?;
            let mut t = views::table(&out.report, &words);
            for row in &mut t.rows {
                if let Some(cell) = row.iter_mut().find(|c| c.col == "metric") {
                    cell.value = Some(cell.text.clone());
                    cell.text = metric_text(&cell.text, &settings.currency);
                }
            }
            (Some(t), f.from_ms, f.to_ms)
        }
        None => {
            let now = chrono::Utc::now().timestamp_millis();
            let f = Filter::parse(&q, settings, now, st.data.bounds()).map_err(|e| err(e.into()))?;
            (None, f.from_ms, f.to_ms)
        }
    };
    let chosen = |v: &Option<String>, x: &str| some(v) == Some(x);
    let people = ds
        .people
        .person_ids()
        .iter()
        .map(|id| {
            let name = words.person_name(id).unwrap_or_else(|| crate::report::privacy::show(&ds.people, id));
            let shown = crate::report::privacy::show(&ds.people, id);
            let on = chosen(&chosen_shown, &shown);
            (shown, name, on)
        })
        .collect();
    let skills = ds
        .people
        .skills
        .iter()
        .map(|s| (s.id.clone(), if s.name.is_empty() { s.id.clone() } else { s.name.clone() }, chosen(&c.skill, &s.id)))
        .collect();
    let mut levels: Vec<(String, String, bool)> =
        (1..=4).map(|l| (l.to_string(), format!("give level {l}"), chosen(&c.level, &l.to_string()))).collect();
    levels.push(("remove".into(), "take the skill away".into(), chosen(&c.level, "remove")));
    let tz = settings.tz;
    let page = WhatIfPage {
        title: "What if someone gained or lost a skill".into(),
        nav: views::nav(&st, &p, "/whatif", &q),
        from: views::date(from, tz),
        to: views::date(to, tz),
        people,
        skills,
        levels,
        change: shown_change,
        table,
    };
    views::render(&page, StatusCode::OK).map_err(&err)
}
