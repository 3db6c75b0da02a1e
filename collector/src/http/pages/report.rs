//! The report pages: one page per row of the read side's catalogue that has one (`/`, `/coverage`,
//! `/downtime`, ...), each the same [`query::report`] call as its API endpoint, shown as headline
//! figures, charts, a table and, on the coverage page, a heat map. Routes come from the catalogue.

use crate::http::auth::{Principal, Viewer};
use crate::http::error::{blocking, PageError};
use crate::http::svg::{columns, hbars};
use crate::http::views::{
    cell_text, col, date, duration_text, link, nav, number, page_err, pairs, render, table, text, Filters, Link, Nav,
    Opt, Select, Table, Words, DURATIONS,
};
use crate::http::AppState;
use crate::query::{self, Dataset, Entry, Filter, Kind, Params, CATALOGUE};
use crate::report::{recert, Report};
use askama::Template;
use axum::extract::{OriginalUri, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde_json::Value;

/// Rows of the downtime page.
const PAGE_ROWS: usize = 100;

pub fn routes() -> Router<AppState> {
    let mut r = Router::new();
    for def in &CATALOGUE {
        let Some(path) = def.page else { continue };
        r = r.route(
            path,
            get(move |State(st): State<AppState>, Viewer(p): Viewer, uri: OriginalUri, Query(q): Query<Params>| async move {
                report_page(st, p, uri, q, def).await
            }),
        );
    }
    r
}

/// Horizons offered on the Certificates page (the configured one is added when it is not among them).
const HORIZONS: [&str; 4] = ["30d", "90d", "180d", "365d"];

fn filters(ds: &Dataset, f: &Filter, cur: &[(&'static str, String)], path: &str, def: &Entry) -> Filters {
    let cur = cur.to_vec();
    let tz = ds.people.settings.tz;
    let c = &ds.choices;
    let select = |name: &'static str, label: &'static str, values: &[String], chosen: &Option<String>| Select {
        name,
        label,
        options: values.iter().map(|v| Opt { value: v.clone(), on: chosen.as_deref() == Some(v.as_str()) }).collect(),
    };
    let mut crew_links =
        vec![Link { href: link(path, &cur, &[("crew", "")]), label: "all crews".into(), on: f.crew.is_none() }];
    crew_links.extend(c.crews.iter().map(|c| Link {
        href: link(path, &cur, &[("crew", c)]),
        label: c.clone(),
        on: f.crew.as_deref() == Some(c.as_str()),
    }));
    let (toggle_label, toggle) = match def.toggle {
        Some((name, values)) => {
            let chosen = cur.iter().find(|(k, _)| *k == name).map_or(values[0], |(_, v)| v.as_str());
            let links = values
                .iter()
                .map(|v| Link { href: link(path, &cur, &[(name, v)]), label: v.to_string(), on: *v == chosen })
                .collect();
            (name.replace('_', " "), links)
        }
        None => (String::new(), Vec::new()),
    };
    Filters {
        from: date(f.from_ms, tz),
        to: date(f.to_ms, tz),
        selects: vec![
            select("site", "Site", &c.sites, &f.site),
            select("line", "Line", &c.lines, &f.line),
            select("asset", "Asset", &c.assets, &f.asset),
            select("crew", "Crew", &c.crews, &f.crew),
        ],
        hidden: cur
            .iter()
            .filter(|(k, _)| matches!(*k, "group" | "dim" | "by" | "per_person" | "change" | "horizon"))
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
        crews: crew_links,
        toggle_label,
        toggle,
        horizons: if def.kind == Kind::Recert { horizon_links(ds, &cur, path) } else { Vec::new() },
    }
}

fn horizon_links(ds: &Dataset, cur: &[(&'static str, String)], path: &str) -> Vec<Link> {
    let configured = recert::format_horizon(ds.people.settings.recert_horizon_ms);
    let chosen = cur.iter().find(|(k, _)| *k == "horizon").map_or(configured.clone(), |(_, v)| v.trim().to_string());
    let mut all: Vec<String> = HORIZONS.iter().map(|h| h.to_string()).collect();
    for extra in [&configured, &chosen] {
        if !all.contains(extra) {
            all.push(extra.clone());
        }
    }
    all.sort_by_key(|h| recert::parse_horizon(h).unwrap_or(i64::MAX));
    all.into_iter()
        .map(|h| {
            let value = if h == configured { "" } else { h.as_str() };
            Link { href: link(path, cur, &[("horizon", value)]), on: h == chosen, label: h }
        })
        .collect()
}

/// The charts of a report page.
fn charts(kind: Kind, r: &Report) -> Vec<String> {
    let top = |key: Option<usize>| -> Vec<&Vec<Value>> {
        let mut rows: Vec<&Vec<Value>> = r.rows.iter().collect();
        rows.sort_by(|a, b| number(b, key).total_cmp(&number(a, key)));
        rows.truncate(15);
        rows
    };
    match kind {
        Kind::Overview => {
            let w = col(r, "week");
            let down: Vec<(String, f64)> =
                r.rows.iter().map(|x| (text(x, w), number(x, col(r, "downtime_h")))).collect();
            let mttr: Vec<(String, f64)> = r.rows.iter().map(|x| (text(x, w), number(x, col(r, "mttr_h")))).collect();
            vec![
                columns(
                    "Downtime per week (hours; weeks start on the date shown)",
                    &down,
                    " h",
                    "no downtime in this window",
                ),
                columns("Mean time to repair per week (hours)", &mttr, " h", "no repair finished in this window"),
            ]
        }
        Kind::Mttr => {
            let (c, u) = (col(r, "covered_mean_h"), col(r, "uncovered_mean_h"));
            let data =
                top(u).into_iter().map(|x| (text(x, col(r, "group")), vec![number(x, c), number(x, u)])).collect();
            vec![hbars(
                "Mean time to repair (h), largest uncovered first",
                &[("covered", "covered"), ("uncovered", "uncovered")],
                data,
                " h",
            )]
        }
        Kind::Priorities => {
            let v = col(r, "value_per_month");
            let data = top(v)
                .into_iter()
                .map(|x| {
                    (
                        format!("{} · {}", text(x, col(r, "crew").or(col(r, "person"))), text(x, col(r, "skill"))),
                        vec![number(x, v)],
                    )
                })
                .collect();
            vec![hbars("Avoidable downtime cost per month", &[("uncovered", "value per month")], data, "")]
        }
        Kind::Recert => {
            let v = col(r, "coverage_hours_lost");
            let data = top(v)
                .into_iter()
                .filter(|x| number(x, v) > 0.0)
                .map(|x| (format!("{} · {}", text(x, col(r, "person")), text(x, col(r, "skill"))), vec![number(x, v)]))
                .collect();
            vec![hbars("Coverage hours lost if not renewed", &[("uncovered", "hours lost")], data, " h")]
        }
        Kind::Pareto => {
            let v = col(r, "hours");
            let k = col(r, "asset").or(col(r, "missing_skill"));
            let data = top(v).into_iter().map(|x| (text(x, k), vec![number(x, v)])).collect();
            vec![hbars("Downtime hours", &[("uncovered", "hours")], data, " h")]
        }
        Kind::Repeats => {
            let w = col(r, "week");
            let share: Vec<(String, f64)> =
                r.rows.iter().map(|x| (text(x, w), 100.0 * number(x, col(r, "repeat_share")))).collect();
            vec![columns(
                "Repeat incidents per week (% of stops with a first-out alarm)",
                &share,
                " %",
                "no repeat incident in this window",
            )]
        }
        Kind::TrainingEffect => {
            let (b, a) = (col(r, "before_mttr_h"), col(r, "after_mttr_h"));
            let data = r
                .rows
                .iter()
                .take(15)
                .map(|x| {
                    (
                        format!("{} · {}", text(x, col(r, "person")), text(x, col(r, "skill"))),
                        vec![number(x, b), number(x, a)],
                    )
                })
                .collect();
            vec![hbars(
                "Mean time to repair (h) before and after the qualification rose",
                &[("uncovered", "before"), ("covered", "after")],
                data,
                " h",
            )]
        }
        _ => Vec::new(),
    }
}

/// The overview's headline figures in reading order, with their labels.
const KPIS: [(&str, &str); 16] = [
    ("availability_pct", "availability %"),
    ("downtime_h", "downtime"),
    ("events", "downtime events"),
    ("mttr_h", "mean time to repair"),
    ("covered_mttr_h", "MTTR when covered"),
    ("uncovered_mttr_h", "MTTR when uncovered"),
    ("covered_events", "covered events"),
    ("uncovered_events", "uncovered events"),
    ("avoidable_h", "avoidable downtime"),
    ("assets", "assets"),
    ("with_first_out", "stops with a first-out alarm"),
    ("repeats", "repeat incidents"),
    ("repeat_share", "repeat share"),
    ("first_half_share", "repeat share, first half of the window"),
    ("second_half_share", "repeat share, second half"),
    ("window_days", "repeat window (days)"),
];

#[derive(Template)]
#[template(path = "report.html")]
struct ReportPage {
    title: String,
    nav: Nav,
    filters: Filters,
    /// (key, label, text, the API's value) of the headline figures.
    summary: Vec<(String, &'static str, String, String)>,
    charts: Vec<String>,
    heatmap: Option<Heatmap>,
    table: Table,
    pager: Vec<Link>,
    shown: String,
}

/// Skill × crew (or shift), each cell the qualified headcount coloured by status.
pub struct Heatmap {
    pub group: String,
    pub groups: Vec<String>,
    /// (skill id, skill name, cells).
    pub rows: Vec<(String, String, Vec<Option<HeatCell>>)>,
}

pub struct HeatCell {
    pub group: String,
    pub headcount: String,
    pub status: String,
    pub share: String,
}

fn heatmap(r: &Report, people: &crate::people::Personnel) -> Heatmap {
    let g = if col(r, "crew").is_some() { "crew" } else { "shift" };
    let (gi, si) = (col(r, g), col(r, "skill"));
    let sorted = |i| {
        let mut v: Vec<String> = r.rows.iter().map(|x| text(x, i)).collect();
        v.sort();
        v.dedup();
        v
    };
    let groups = sorted(gi);
    let rows = sorted(si)
        .into_iter()
        .map(|skill| {
            let cells = groups
                .iter()
                .map(|grp| {
                    r.rows.iter().find(|x| &text(x, gi) == grp && text(x, si) == skill).map(|x| HeatCell {
                        group: grp.clone(),
                        headcount: text(x, col(r, "headcount")),
                        status: text(x, col(r, "status")),
                        share: format!("{:.0}%", 100.0 * number(x, col(r, "covered_share"))),
                    })
                })
                .collect();
            let name = people.skill(&skill).map_or_else(|| skill.clone(), |s| s.name.clone());
            (skill, name, cells)
        })
        .collect();
    Heatmap { group: g.into(), groups, rows }
}

async fn report_page(
    st: AppState,
    p: Principal,
    uri: OriginalUri,
    mut q: Params,
    def: &'static Entry,
) -> Result<Response, PageError> {
    let err = page_err(&uri);
    let path = def.page.unwrap_or("/");
    if def.kind == Kind::Join {
        q.limit = Some(PAGE_ROWS.to_string());
    }
    let source = st.data.clone();
    let (ds, (out, f)) = {
        let q = q.clone();
        blocking(move || Ok::<_, query::QueryError>((source.dataset()?, query::report(&source, &q, def.kind)?)))
            .await
            .map_err(&err)?
    };
    let cur = pairs(&q);
    let mut pager = Vec::new();
    let offset: usize = q.offset.as_deref().and_then(|o| o.parse().ok()).unwrap_or(0);
    if def.kind == Kind::Join {
        if offset > 0 {
            let prev = offset.saturating_sub(PAGE_ROWS).to_string();
            pager.push(Link { href: link(path, &cur, &[("offset", &prev)]), label: "newer".into(), on: false });
        }
        if offset.saturating_add(PAGE_ROWS) < out.total_rows {
            let next = offset.saturating_add(PAGE_ROWS).to_string();
            pager.push(Link { href: link(path, &cur, &[("offset", &next)]), label: "older".into(), on: false });
        }
    }
    let summary = KPIS
        .iter()
        .filter_map(|(k, label)| {
            let v = out.summary.as_ref()?.get(*k)?;
            let shown = match v.as_f64() {
                Some(h) if DURATIONS.contains(k) => duration_text(h),
                _ => cell_text(v),
            };
            Some((k.to_string(), *label, shown, cell_text(v)))
        })
        .collect();
    let page = ReportPage {
        title: def.title.into(),
        nav: nav(&st, &p, path, &q),
        filters: filters(&ds, &f, &cur, path, def),
        summary,
        charts: charts(def.kind, &out.report).into_iter().filter(|c| !c.is_empty()).collect(),
        heatmap: (def.kind == Kind::Coverage).then(|| heatmap(&out.report, &ds.people)),
        shown: format!("{} of {} rows", out.report.rows.len(), out.total_rows),
        table: table(
            &out.report,
            &Words {
                people: Some(&ds.people),
                currency: &ds.people.settings.currency,
                tz: ds.people.settings.tz.name(),
            },
        ),
        pager,
    };
    render(&page, StatusCode::OK).map_err(&err)
}
