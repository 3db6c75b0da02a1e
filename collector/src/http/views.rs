//! The supervisor dashboard: server-rendered pages (askama templates in `collector/templates/`, one
//! stylesheet in `collector/assets/`, both compiled into the binary; no JavaScript). Every page shows a
//! [`Report`] computed by [`query::run`], the same function the API calls, so page and API agree. Filters
//! live in the URL query (a plain GET form and links), so a view can be shared by its address. Charts are
//! inline SVG whose geometry is computed here and drawn by templates.

use super::api;
use super::auth::{self, Admin, Principal, Via, Viewer};
use super::error::{blocking, url_encode, AppError, PageError};
use super::AppState;
use crate::people::import::Kind as CsvKind;
use crate::query::{self, Dataset, Entry, Filter, ImportOutcome, Kind, Params, CATALOGUE};
use crate::report::{recert, Report};
use askama::Template;
use axum::extract::{Multipart, OriginalUri, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Form, Router};
use serde::Deserialize;
use serde_json::Value;

const CSS: &str = include_str!("../../assets/style.css");
const PAGE_ROWS: usize = 100;

pub fn routes() -> Router<AppState> {
    let mut r = Router::new()
        .route("/assets/style.css", get(css))
        .route("/gateways", get(gateways))
        .route("/import", get(import_form).post(import_post))
        .route("/login", get(login_form).post(login_post))
        .route("/logout", axum::routing::post(logout));
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

// ---- shared page parts ----

/// A link; `on` marks the current one.
pub struct Link {
    pub href: String,
    pub label: String,
    pub on: bool,
}

/// Navigation and who is signed in.
pub struct Nav {
    pub items: Vec<Link>,
    pub user: String,
    pub role: &'static str,
    pub logout: bool,
    pub csrf: String,
}

pub struct Opt {
    pub value: String,
    pub on: bool,
}

pub struct Select {
    pub name: &'static str,
    pub label: &'static str,
    pub options: Vec<Opt>,
}

/// The filter bar: a GET form and crew links.
pub struct Filters {
    pub from: String,
    pub to: String,
    pub selects: Vec<Select>,
    pub hidden: Vec<(String, String)>,
    pub crews: Vec<Link>,
    pub toggle_label: String,
    pub toggle: Vec<Link>,
    /// Certificates: the horizons to choose from (empty on other pages).
    pub horizons: Vec<Link>,
}

pub struct Cell {
    pub col: String,
    pub text: String,
    /// The API's value when the page words it differently (`data-value`, and a tooltip).
    pub value: Option<String>,
    pub class: String,
}

/// A report as an HTML table.
pub struct Table {
    pub name: String,
    /// The report's column keys (`data-col`) and their headers in words.
    pub columns: Vec<(String, String)>,
    pub rows: Vec<Vec<Cell>>,
    pub notes: Vec<String>,
    /// What an empty table means.
    pub empty: String,
}

/// The query pairs of the page's state, without empty values.
fn pairs(q: &Params) -> Vec<(&'static str, String)> {
    let all = [
        ("site", &q.site),
        ("line", &q.line),
        ("asset", &q.asset),
        ("crew", &q.crew),
        ("from", &q.from),
        ("to", &q.to),
        ("group", &q.group),
        ("dim", &q.dim),
        ("by", &q.by),
        ("per_person", &q.per_person),
        ("change", &q.change),
        ("offset", &q.offset),
        ("horizon", &q.horizon),
    ];
    all.into_iter().filter_map(|(k, v)| v.as_deref().filter(|v| !v.is_empty()).map(|v| (k, v.to_string()))).collect()
}

/// `path?k=v&...`, with `set` replacing (or, with an empty value, removing) keys and paging reset.
pub(super) fn link(path: &str, current: &[(&'static str, String)], set: &[(&'static str, &str)]) -> String {
    let mut q: Vec<(&str, String)> = current.iter().filter(|(k, _)| *k != "offset").cloned().collect();
    for (k, v) in set {
        q.retain(|(x, _)| x != k);
        if !v.is_empty() {
            q.push((k, v.to_string()));
        }
    }
    if q.is_empty() {
        return path.to_string();
    }
    let s: Vec<String> = q.iter().map(|(k, v)| format!("{k}={}", url_encode(v))).collect();
    format!("{path}?{}", s.join("&"))
}

pub(super) fn nav(st: &AppState, p: &Principal, current: &str, q: &Params) -> Nav {
    let keep: Vec<(&'static str, String)> = pairs(q)
        .into_iter()
        .filter(|(k, _)| matches!(*k, "site" | "line" | "asset" | "crew" | "from" | "to"))
        .collect();
    let mut items: Vec<Link> = CATALOGUE
        .iter()
        .filter_map(|d| d.page.map(|path| (d, path)))
        .map(|(d, path)| Link { href: link(path, &keep, &[]), label: d.short.into(), on: path == current })
        .collect();
    for (href, label) in [("/shift", "Shift report"), ("/whatif", "What if"), ("/gateways", "Gateways")] {
        items.push(Link { href: href.into(), label: label.into(), on: current == href });
    }
    if p.role == auth::Role::Admin {
        items.push(Link { href: "/import".into(), label: "Import".into(), on: current == "/import" });
    }
    Nav {
        items,
        user: p.name.clone(),
        role: if p.role == auth::Role::Admin { "admin" } else { "viewer" },
        logout: matches!(p.via, Via::Session(_)),
        csrf: st.auth.csrf_token(p),
    }
}

pub(super) fn date(ms: i64, tz: chrono_tz::Tz) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map_or(String::new(), |d| d.with_timezone(&tz).format("%Y-%m-%d").to_string())
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

pub(super) fn cell_text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// What a page needs to word a report: names for ids, the currency and the site's time zone.
pub struct Words<'a> {
    /// `None` on pages without personnel (gateways).
    pub people: Option<&'a crate::people::Personnel>,
    pub currency: &'a str,
    pub tz: &'a str,
}

impl Words<'_> {
    /// A person's name for an id the report shows; `None` when pseudonymized (the report then shows a
    /// pseudonym, never an id), when people may not be listed, or when unknown.
    fn person(&self, id: &str) -> Option<String> {
        let p = self.people?;
        if p.settings.pseudonymize || !crate::report::privacy::persons_allowed(p) {
            return None;
        }
        p.person_at(id, i64::MAX).map(|x| x.name.clone()).filter(|n| !n.is_empty() && n != id)
    }

    fn skill(&self, id: &str) -> Option<String> {
        self.people?.skill(id).map(|s| s.name.clone()).filter(|n| !n.is_empty() && n != id)
    }

    /// A person's name for an id a report shows (see `person`).
    pub fn person_name(&self, id: &str) -> Option<String> {
        self.person(id)
    }

    /// A skill's name.
    pub fn skill_name(&self, id: &str) -> Option<String> {
        self.skill(id)
    }

    /// Each space-separated id of `list` named by `name` (ids without a name stay).
    fn list(&self, list: &str, name: impl Fn(&str) -> Option<String>, sep: &str) -> Option<String> {
        let ids: Vec<&str> = list.split(' ').filter(|x| !x.is_empty()).collect();
        let named: Vec<String> = ids.iter().map(|x| name(x).unwrap_or_else(|| x.to_string())).collect();
        (named.iter().zip(&ids).any(|(n, i)| n != i)).then(|| named.join(sep))
    }
}

/// A duration in the unit that fits it: "42 s", "7.5 min", "3.2 h".
pub fn duration_text(hours: f64) -> String {
    let s = (hours * 3600.0).max(0.0);
    if s < 60.0 {
        format!("{s:.0} s")
    } else if s < 600.0 {
        format!("{:.1} min", s / 60.0)
    } else if s < 3600.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{hours:.1} h")
    }
}

/// Columns of durations in hours that pages word with units.
const DURATIONS: [&str; 6] = ["ttr_h", "downtime_h", "mttr_h", "covered_mttr_h", "uncovered_mttr_h", "avoidable_h"];

pub(super) fn table(r: &Report, w: &Words) -> Table {
    let currency = w.currency;
    let status = col(r, "status");
    let rows = r
        .rows
        .iter()
        .map(|row| {
            row.iter()
                .zip(&r.columns)
                .map(|(v, c)| {
                    let class = match v {
                        Value::Number(_) => "num".to_string(),
                        Value::Bool(b) => format!("flag {b}"),
                        Value::String(s) if c == "status" || c == "covered" => {
                            format!("status {}", s.replace(' ', "_"))
                        }
                        _ => String::new(),
                    };
                    let raw = cell_text(v);
                    let worded = match (c.as_str(), v) {
                        // Certificates: how long ago or how soon, in words (the API keeps the number).
                        ("days_left", Value::Number(n)) => {
                            n.as_i64().map(|d| recert::days_left_text(text(row, status) == "expired", d))
                        }
                        (d, Value::Number(n)) if DURATIONS.contains(&d) => n.as_f64().map(duration_text),
                        ("ttr_h", Value::Null) => Some("ongoing".into()),
                        ("person" | "resolver", Value::String(id)) => w.person(id),
                        ("on_shift", Value::String(ids)) => w.list(ids, |x| w.person(x), ", "),
                        ("skill" | "missing_skill", Value::String(id)) => w.skill(id),
                        ("missing", Value::String(ids)) => w.list(ids, |x| w.skill(x), ", "),
                        // "p0003 (level 2), p0007 (level 1)": each leading id named.
                        ("closest", Value::String(list)) => {
                            let named: Vec<String> = list
                                .split(", ")
                                .map(|item| match item.split_once(' ') {
                                    Some((id, rest)) => format!("{} {rest}", w.person(id).unwrap_or_else(|| id.into())),
                                    None => w.person(item).unwrap_or_else(|| item.into()),
                                })
                                .collect();
                            Some(named.join(", "))
                        }
                        (_, Value::Bool(b)) => Some(if *b { "yes" } else { "no" }.into()),
                        _ => None,
                    };
                    match worded {
                        Some(t) if t != raw => {
                            let class =
                                if matches!(v, Value::Number(_)) && c != "days_left" { class } else { "words".into() };
                            Cell { col: c.clone(), text: t, value: Some(raw), class }
                        }
                        _ => Cell { col: c.clone(), text: raw, value: None, class },
                    }
                })
                .collect()
        })
        .collect();
    Table {
        name: r.name.clone(),
        columns: r.columns.iter().map(|c| (c.clone(), heading(c, currency, w.tz))).collect(),
        rows,
        notes: r.notes.clone(),
        empty: empty_text(&r.name),
    }
}

/// Column headers in words, with units; `¤` stands for the configured currency. The API's JSON keys and
/// CSV headers stay the keys (they are an interface); a key not listed here is shown with its `_` as spaces.
const HEADINGS: &[(&str, &str)] = &[
    ("agent_version", "Agent version"),
    ("alarms", "Alarms"),
    ("asset", "Asset"),
    ("avoidable_h_per_month", "Avoidable hours / month"),
    ("avoidable_hours", "Avoidable hours"),
    ("buffer_depth", "Unsent events"),
    ("certificate", "Certificate"),
    ("certificate_lapsed", "Certificate lapsed on"),
    ("clock_ok", "Clock OK"),
    ("closest", "Closest to qualifying"),
    ("competency", "Competency on shift"),
    ("cost", "Cost (¤)"),
    ("coverage_hours_lost", "Hours uncovered if not renewed"),
    ("covered", "Covered"),
    ("covered_share", "Share of shift time covered"),
    ("crew", "Crew"),
    ("cumulative", "Cumulative share"),
    ("date", "Date"),
    ("days_left", "When"),
    ("downtime_h", "Downtime"),
    ("dropped", "Dropped events"),
    ("event", "Event"),
    ("events", "Events"),
    ("expires", "Expires"),
    ("gateway", "Gateway"),
    ("group", "Group"),
    ("have", "Qualified"),
    ("headcount", "Qualified people"),
    ("hours", "Downtime (h)"),
    ("last_seen", "Last seen"),
    ("last_seen_age_s", "Last seen (s ago)"),
    ("level", "Level now"),
    ("line", "Line"),
    ("mean_per_10min_per_operator", "Alarms / 10 min / operator, mean"),
    ("min_headcount", "People needed"),
    ("min_level", "Level needed"),
    ("missing", "Skills missing"),
    ("missing_skill", "Missing skill"),
    ("mttr_h", "MTTR"),
    ("need", "Needed"),
    ("oldest_unsent_age_s", "Oldest unsent (s)"),
    ("on_shift", "On shift"),
    ("online", "Online"),
    ("open", "Still stopped"),
    ("peak_per_10min_per_operator", "Alarms / 10 min / operator, peak"),
    ("person", "Person"),
    ("rank", "Rank"),
    ("readiness_pct", "Readiness %"),
    ("required", "Skills required (qualified on shift)"),
    ("resolver", "Resolved by"),
    ("scope", "Scope"),
    ("share", "Share"),
    ("shift", "Shift"),
    ("shift_hours", "Shift hours"),
    ("shifts", "Shifts in horizon"),
    ("shifts_to_zero", "Shifts left uncovered"),
    ("short", "Short"),
    ("site", "Site"),
    ("skill", "Skill"),
    ("skill_share", "Share of skills covered"),
    ("sources", "Sources"),
    ("sources_connected", "Sources connected"),
    ("start", "Start"),
    ("status", "Status"),
    ("thin_hours", "Hours with one qualified"),
    ("ttr_h", "Time to repair"),
    ("uncovered_events", "Uncovered events"),
    ("value_per_month", "Avoidable cost / month (¤)"),
    ("week", "Week from"),
    ("with_first_out", "With a first-out alarm"),
    ("repeats", "Repeats"),
    ("repeat_share", "Repeat share"),
    ("from_level", "Level before"),
    ("to_level", "Level after"),
    ("rose", "Rose on"),
    ("before_n", "Repairs before"),
    ("before_mttr_h", "MTTR before (h)"),
    ("before_ci_low_h", "Before: 95% CI low (h)"),
    ("before_ci_high_h", "Before: 95% CI high (h)"),
    ("after_n", "Repairs after"),
    ("after_mttr_h", "MTTR after (h)"),
    ("after_ci_low_h", "After: 95% CI low (h)"),
    ("after_ci_high_h", "After: 95% CI high (h)"),
    ("hours_saved", "Hours saved"),
    ("metric", "Measure"),
    ("before", "Before"),
    ("after", "After"),
    ("delta", "Change"),
];

/// The MTTR report's statistics (`covered_mean_h`): side and statistic in words.
const MTTR_STATS: &[(&str, &str)] = &[
    ("n", "repairs"),
    ("mean_h", "mean (h)"),
    ("median_h", "median (h)"),
    ("p90_h", "90th percentile (h)"),
    ("ci_low_h", "95% CI low (h)"),
    ("ci_high_h", "95% CI high (h)"),
    ("shrunk_h", "shrunk mean (h)"),
];

/// A column's header on the pages.
fn heading(col: &str, currency: &str, tz: &str) -> String {
    let cur = if currency.is_empty() { "cost units" } else { currency };
    if let Some((_, h)) = HEADINGS.iter().find(|(k, _)| *k == col) {
        return match col {
            // Local times say which clock; the gateways' last_seen is RFC 3339 in UTC.
            "start" | "expires" | "date" | "week" => format!("{h} ({tz})"),
            "last_seen" => format!("{h} (UTC)"),
            _ => h.replace('¤', cur),
        };
    }
    for side in ["covered", "uncovered"] {
        if let Some(stat) = col.strip_prefix(side).and_then(|r| r.strip_prefix('_')) {
            if let Some((_, h)) = MTTR_STATS.iter().find(|(k, _)| *k == stat) {
                let side = if side == "covered" { "Covered" } else { "Uncovered" };
                return format!("{side}: {h}");
            }
        }
    }
    let mut s = col.replace('_', " ");
    if let Some(first) = s.get(..1) {
        s = first.to_uppercase() + &s[1..];
    }
    s
}

/// Why a report can have no rows, in words a supervisor acts on.
fn empty_text(report: &str) -> String {
    let why = match report {
        "join" => "No downtime event started in this window for the chosen site, line, asset and crew.",
        "coverage" | "gaps" => "No skill requirements to check: import assets.csv (with the skills each asset needs) and person-skills.csv.",
        "mttr" | "pareto" => "No downtime event in this window for the chosen filter, so there is nothing to compare.",
        "priorities" => "No uncovered stop with avoidable hours in this window: nothing to train for yet, or too few covered repairs to compare with.",
        "recert" => "No certificate lapsed or expiring within the horizon. Choose a longer look-ahead to see further.",
        "alarm-load" => "No shifts to count alarms on in this window (see the note below).",
        "shift" => "No stop started during this shift.",
        "training-effect" => "Nobody's qualification rose in this window (no assessment with a higher level than the one before): import person-skills.csv with the new assessments, or choose a longer window.",
        "gateways" => return "No gateway has connected yet: start an agent with this collector's broker address.".into(),
        _ => "Nothing to show for this window and filter.",
    };
    format!("{why} Try a longer window or all crews.")
}

fn col(r: &Report, name: &str) -> Option<usize> {
    r.columns.iter().position(|c| c == name)
}

fn number(row: &[Value], i: Option<usize>) -> f64 {
    i.and_then(|i| row.get(i)).and_then(Value::as_f64).unwrap_or(0.0)
}

fn text(row: &[Value], i: Option<usize>) -> String {
    i.and_then(|i| row.get(i)).map(cell_text).unwrap_or_default()
}

// ---- SVG charts ----

/// A horizontal bar of a series.
pub struct HBar {
    pub y: f64,
    pub w: f64,
    pub class: &'static str,
    pub value: String,
}

pub struct HRow {
    pub label: String,
    /// The label cut to fit left of the bars (the whole one is the tooltip).
    pub short: String,
    pub y: f64,
    pub bars: Vec<HBar>,
}

/// Horizontal bars, one group per label, up to two series.
#[derive(Template)]
#[template(path = "hbars.svg", escape = "html")]
pub struct HBars {
    pub title: String,
    pub legend: Vec<(&'static str, String)>,
    pub height: f64,
    pub rows: Vec<HRow>,
}

const PLOT_W: f64 = 520.0;

fn hbars(title: &str, series: &[(&'static str, &str)], data: Vec<(String, Vec<f64>)>, unit: &str) -> String {
    if data.is_empty() {
        // The table below says why there is nothing; an empty frame would only take room.
        return String::new();
    }
    let max = data.iter().flat_map(|(_, v)| v.iter().copied()).fold(0.0f64, f64::max).max(1e-9);
    let bar_h = 14.0;
    let group_h = bar_h * series.len() as f64 + 8.0;
    let rows: Vec<HRow> = data
        .into_iter()
        .enumerate()
        .map(|(i, (label, values))| {
            let y = 24.0 + i as f64 * group_h;
            let bars = values
                .iter()
                .zip(series)
                .enumerate()
                .map(|(j, (v, (class, _)))| HBar {
                    y: y + j as f64 * bar_h,
                    w: (v / max * PLOT_W).max(0.0),
                    class,
                    value: format!("{v:.1}{unit}"),
                })
                .collect();
            HRow { short: short_label(&label), label, y, bars }
        })
        .collect();
    let chart = HBars {
        title: title.into(),
        legend: series.iter().map(|(c, n)| (*c, n.to_string())).collect(),
        height: 30.0 + rows.len() as f64 * group_h,
        rows,
    };
    chart.render().unwrap_or_default()
}

/// `s` cut to 30 characters with an ellipsis.
fn short_label(s: &str) -> String {
    match s.char_indices().nth(29) {
        Some((i, _)) if s.chars().count() > 30 => format!("{}…", &s[..i]),
        _ => s.to_string(),
    }
}

/// A vertical column of a time series.
pub struct Col {
    pub x: f64,
    pub y: f64,
    pub h: f64,
    pub label: String,
    pub value: String,
}

/// Columns over time.
#[derive(Template)]
#[template(path = "columns.svg", escape = "html")]
pub struct Columns {
    pub title: String,
    /// Shown inside the plot when every value is zero.
    pub note: String,
    pub width: f64,
    pub col_w: f64,
    pub max: String,
    /// Label every `step`-th column.
    pub step: usize,
    pub cols: Vec<Col>,
}

/// Width of a column chart's drawing, whatever the number of columns, so its text keeps one size.
const COLUMNS_W: f64 = 760.0;

fn columns(title: &str, data: &[(String, f64)], unit: &str, none: &str) -> String {
    let max = data.iter().map(|d| d.1).fold(0.0f64, f64::max);
    let plot_h = 140.0;
    let left = 48.0;
    let col_w = ((COLUMNS_W - left - 10.0) / data.len().max(1) as f64).min(40.0);
    let cols = data
        .iter()
        .enumerate()
        .map(|(i, (label, v))| {
            let h = if max > 0.0 { v / max * plot_h } else { 0.0 };
            Col {
                x: left + i as f64 * col_w,
                y: 20.0 + plot_h - h,
                h,
                label: label.clone(),
                value: format!("{v:.2}{unit}"),
            }
        })
        .collect();
    // Date labels are about 70 px wide: no more of them than fit.
    let step = (70.0 / col_w).ceil().max(1.0) as usize;
    Columns {
        title: title.into(),
        note: if max > 0.0 { String::new() } else { none.into() },
        width: COLUMNS_W,
        col_w: (col_w - 2.0).max(1.0),
        max: format!("{max:.1}{unit}"),
        step,
        cols,
    }
    .render()
    .unwrap_or_default()
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

// ---- pages ----

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

fn secure(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

pub(super) fn render(t: &impl Template, status: StatusCode) -> Result<Response, AppError> {
    let html = t.render().map_err(AppError::internal)?;
    Ok(secure((status, Html(html)).into_response()))
}

pub(super) fn page_err(uri: &OriginalUri) -> impl Fn(AppError) -> PageError + '_ {
    move |error| PageError { error, next: uri.0.path_and_query().map_or("/", |p| p.as_str()).to_string() }
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

#[derive(Template)]
#[template(path = "gateways.html")]
struct GatewaysPage {
    title: String,
    nav: Nav,
    table: Table,
}

async fn gateways(State(st): State<AppState>, Viewer(p): Viewer, uri: OriginalUri) -> Result<Response, PageError> {
    let err = page_err(&uri);
    let source = st.data.clone();
    let now = chrono::Utc::now().timestamp_millis();
    let rep = blocking(move || query::gateways(&source, now)).await.map_err(&err)?;
    let page = GatewaysPage {
        title: "Gateways and agents".into(),
        nav: nav(&st, &p, "/gateways", &Params::default()),
        table: table(&rep, &Words { people: None, currency: "", tz: "UTC" }),
    };
    render(&page, StatusCode::OK).map_err(&err)
}

/// Any address no route takes: JSON under `/api/`, else an HTML page that says what exists.
pub async fn not_found(uri: OriginalUri) -> Response {
    let path = uri.0.path();
    if path == "/api" || path.starts_with("/api/") {
        let message = format!("no API endpoint at {path}: the endpoints are listed in /api/v1/openapi.json");
        return super::error::ApiError(AppError { status: StatusCode::NOT_FOUND, message }).into_response();
    }
    let message = format!(
        "There is no page at {path}. The dashboard's pages are listed in the menu of the overview; the API is described at /api/v1/openapi.json."
    );
    secure(PageError { error: AppError { status: StatusCode::NOT_FOUND, message }, next: "/".into() }.into_response())
}

async fn css() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "max-age=3600")], CSS)
}

// ---- import ----

pub struct KindInfo {
    pub name: &'static str,
    pub required: String,
    pub optional: String,
    pub on: bool,
}

pub struct RowError {
    pub file: String,
    pub line: u64,
    pub column: String,
    pub message: String,
}

#[derive(Template)]
#[template(path = "import.html")]
struct ImportPage {
    title: String,
    nav: Nav,
    csrf: String,
    kinds: Vec<KindInfo>,
    result: Option<String>,
    problem: Option<String>,
    errors: Vec<RowError>,
}

fn import_page(st: &AppState, p: &Principal, chosen: Option<CsvKind>) -> ImportPage {
    ImportPage {
        title: "Import personnel data".into(),
        nav: nav(st, p, "/import", &Params::default()),
        csrf: st.auth.csrf_token(p),
        kinds: CsvKind::ALL
            .iter()
            .map(|k| {
                let (req, opt) = k.columns();
                KindInfo { name: k.name(), required: req.join(", "), optional: opt.join(", "), on: Some(*k) == chosen }
            })
            .collect(),
        result: None,
        problem: None,
        errors: Vec::new(),
    }
}

async fn import_form(State(st): State<AppState>, Admin(p): Admin, uri: OriginalUri) -> Result<Response, PageError> {
    render(&import_page(&st, &p, None), StatusCode::OK).map_err(page_err(&uri))
}

async fn import_post(
    State(st): State<AppState>,
    Admin(p): Admin,
    uri: OriginalUri,
    headers: HeaderMap,
    mut form: Multipart,
) -> Result<Response, PageError> {
    let err = page_err(&uri);
    let (mut csrf, mut kind, mut file, mut text) = (String::new(), String::new(), String::new(), None);
    while let Some(field) =
        form.next_field().await.map_err(|e| err(AppError::bad_request(format!("unreadable upload: {e}"))))?
    {
        let name = field.name().unwrap_or_default().to_string();
        let fname = field.file_name().map(str::to_string);
        let bytes = field.bytes().await.map_err(|e| err(AppError::bad_request(format!("unreadable upload: {e}"))))?;
        match name.as_str() {
            "csrf" => csrf = String::from_utf8_lossy(&bytes).into_owned(),
            "kind" => kind = String::from_utf8_lossy(&bytes).into_owned(),
            "file" => {
                file = fname.filter(|f| !f.is_empty()).unwrap_or_else(|| "upload.csv".into());
                text = Some(bytes);
            }
            _ => {}
        }
    }
    st.auth.check_form(&p, &headers, &csrf).map_err(&err)?;
    let kind = api::csv_kind(&kind).map_err(&err)?;
    let mut page = import_page(&st, &p, Some(kind));
    let Some(bytes) = text.filter(|b| !b.is_empty()) else {
        page.problem = Some("choose a CSV file to import".into());
        return render(&page, StatusCode::BAD_REQUEST).map_err(&err);
    };
    let Ok(text) = String::from_utf8(bytes.to_vec()) else {
        page.problem = Some(format!("{file} is not UTF-8 text; export the CSV as UTF-8"));
        return render(&page, StatusCode::UNPROCESSABLE_ENTITY).map_err(&err);
    };
    let source = st.data.clone();
    let fname = file.clone();
    let outcome = blocking(move || api::import_csv(&source, kind, &fname, &text)).await.map_err(&err)?;
    let status = match outcome {
        ImportOutcome::Stored(s) => {
            page.result = Some(s);
            StatusCode::OK
        }
        ImportOutcome::Rejected(errors) => {
            page.problem = Some(format!("{file}: {} invalid row(s); nothing was imported", errors.len()));
            page.errors = errors
                .into_iter()
                .map(|e| RowError { file: e.file, line: e.line, column: e.column, message: e.message })
                .collect();
            StatusCode::UNPROCESSABLE_ENTITY
        }
    };
    render(&page, status).map_err(&err)
}

// ---- login ----

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    next: String,
    problem: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LoginQuery {
    next: String,
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
    #[serde(default)]
    next: String,
}

/// Where a login may send the browser: a path of this site, else `/`. Browsers drop tabs and newlines from
/// a `Location` and read `\` as `/`, so `/\t/evil.example` would leave the site: the path must start with
/// one `/`, and hold no `//`, no `\`, no control character and no whitespace.
pub fn safe_next(next: &str) -> &str {
    let local = next.starts_with('/')
        && !next.contains("//")
        && !next.contains('\\')
        && !next.chars().any(|c| c.is_control() || c.is_whitespace());
    if local {
        next
    } else {
        "/"
    }
}

async fn login_form(State(st): State<AppState>, Query(q): Query<LoginQuery>) -> Result<Response, PageError> {
    if st.auth.is_open() {
        return Ok(Redirect::to("/").into_response());
    }
    let page = LoginPage { next: safe_next(&q.next).into(), problem: None };
    render(&page, StatusCode::OK).map_err(|error| PageError { error, next: "/".into() })
}

async fn login_post(
    State(st): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Result<Response, PageError> {
    let err = |error| PageError { error, next: "/".into() };
    auth::same_origin(&headers).map_err(err)?;
    let next = safe_next(&f.next).to_string();
    match st.auth.login(&f.token) {
        Some(id) => {
            let mut res = Redirect::to(&next).into_response();
            if let Ok(v) = HeaderValue::from_str(&auth::session_cookie(&id)) {
                res.headers_mut().insert(header::SET_COOKIE, v);
            }
            Ok(res)
        }
        None => {
            tracing::warn!("dashboard login with an unknown token");
            render(&LoginPage { next, problem: Some("That token is not valid.".into()) }, StatusCode::UNAUTHORIZED)
                .map_err(err)
        }
    }
}

#[derive(Deserialize)]
struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(st): State<AppState>,
    Viewer(p): Viewer,
    headers: HeaderMap,
    Form(f): Form<LogoutForm>,
) -> Result<Response, PageError> {
    st.auth.check_form(&p, &headers, &f.csrf).map_err(|error| PageError { error, next: "/".into() })?;
    if let Via::Session(id) = &p.via {
        st.auth.logout(id);
    }
    let mut res = Redirect::to("/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&auth::clear_cookie()) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_in_the_unit_that_fits() {
        for (h, want) in [
            (0.0, "0 s"),
            (12.0 / 3600.0, "12 s"),
            (0.0125, "45 s"),
            (0.1, "6.0 min"),
            (0.5, "30 min"),
            (1.0, "1.0 h"),
            (2953.9, "2953.9 h"),
        ] {
            assert_eq!(duration_text(h), want, "{h}");
        }
    }

    #[test]
    fn headers_are_words_with_units_currency_and_time_zone() {
        for (key, want) in [
            ("avoidable_h_per_month", "Avoidable hours / month"),
            ("value_per_month", "Avoidable cost / month (EUR)"),
            ("start", "Start (Europe/Berlin)"),
            ("last_seen", "Last seen (UTC)"),
            ("covered_ci_low_h", "Covered: 95% CI low (h)"),
            ("uncovered_n", "Uncovered: repairs"),
            ("something_new", "Something new"),
        ] {
            assert_eq!(heading(key, "EUR", "Europe/Berlin"), want, "{key}");
        }
        assert_eq!(heading("cost", "", "UTC"), "Cost (cost units)");
    }

    #[test]
    fn links_replace_keys_drop_paging_and_encode() {
        let cur = vec![("crew", "A".to_string()), ("offset", "100".to_string()), ("from", "2025-01-01".to_string())];
        assert_eq!(link("/mttr", &cur, &[("crew", "B & C")]), "/mttr?from=2025-01-01&crew=B%20%26%20C");
        assert_eq!(link("/mttr", &cur, &[("crew", "")]), "/mttr?from=2025-01-01");
    }

    #[test]
    fn login_redirects_only_to_local_paths() {
        for ok in ["/", "/coverage?crew=A", "/downtime?from=2025-01-01&to=2025-02-01&offset=100", "/mttr?crew=B%20C"] {
            assert_eq!(safe_next(ok), ok);
        }
        for bad in [
            "",
            "//evil.example/",
            "https://evil.example/",
            "evil.example",
            "/\\evil.example",
            "\\/evil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            "/\r/evil.example",
            "\t//evil.example",
            " /x",
            "/ /evil.example",
            "/x//evil.example",
            "/\u{0}/evil.example",
            "/\u{a0}/evil.example",
            "/\u{2028}/evil.example",
            "javascript:alert(1)",
        ] {
            assert_eq!(safe_next(bad), "/", "{bad:?}");
        }
    }
}
