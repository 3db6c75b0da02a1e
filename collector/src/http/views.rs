//! The dashboard's shared page parts: the menu (`nav`), links that keep the page's filters (`link`),
//! a [`Report`] as an HTML [`Table`] with its columns and values in words (`table`, [`Words`]), and the
//! rendering of every page (`render`, with its security headers). Pages themselves live in
//! [`super::pages`], one file per page family; chart geometry in [`super::svg`]. Server-rendered (askama
//! templates in `collector/templates/`, one stylesheet in `collector/assets/`, both compiled into the
//! binary; no JavaScript). Filters live in the URL query (a plain GET form and links), so a view can be
//! shared by its address.

use super::auth::{self, Principal, Via};
use super::error::{url_encode, AppError, PageError};
use super::AppState;
use crate::query::{Params, CATALOGUE};
use crate::report::{recert, Report};
use askama::Template;
use axum::extract::OriginalUri;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use serde_json::Value;

const CSS: &str = include_str!("../../assets/style.css");

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
pub(crate) fn pairs(q: &Params) -> Vec<(&'static str, String)> {
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
pub(crate) fn link(path: &str, current: &[(&'static str, String)], set: &[(&'static str, &str)]) -> String {
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

pub(crate) fn nav(st: &AppState, p: &Principal, current: &str, q: &Params) -> Nav {
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

pub(crate) fn date(ms: i64, tz: chrono_tz::Tz) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map_or(String::new(), |d| d.with_timezone(&tz).format("%Y-%m-%d").to_string())
}

pub(crate) fn cell_text(v: &Value) -> String {
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
    pub(crate) fn person(&self, id: &str) -> Option<String> {
        let p = self.people?;
        if p.settings.pseudonymize || !crate::report::privacy::persons_allowed(p) {
            return None;
        }
        p.person_at(id, i64::MAX).map(|x| x.name.clone()).filter(|n| !n.is_empty() && n != id)
    }

    pub(crate) fn skill(&self, id: &str) -> Option<String> {
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
pub(crate) const DURATIONS: [&str; 6] =
    ["ttr_h", "downtime_h", "mttr_h", "covered_mttr_h", "uncovered_mttr_h", "avoidable_h"];

pub(crate) fn table(r: &Report, w: &Words) -> Table {
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
pub(crate) fn heading(col: &str, currency: &str, tz: &str) -> String {
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
pub(crate) fn empty_text(report: &str) -> String {
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

pub(crate) fn col(r: &Report, name: &str) -> Option<usize> {
    r.columns.iter().position(|c| c == name)
}

pub(crate) fn number(row: &[Value], i: Option<usize>) -> f64 {
    i.and_then(|i| row.get(i)).and_then(Value::as_f64).unwrap_or(0.0)
}

pub(crate) fn text(row: &[Value], i: Option<usize>) -> String {
    i.and_then(|i| row.get(i)).map(cell_text).unwrap_or_default()
}

pub(crate) fn secure(mut res: Response) -> Response {
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

pub(crate) fn render(t: &impl Template, status: StatusCode) -> Result<Response, AppError> {
    let html = t.render().map_err(AppError::internal)?;
    Ok(secure((status, Html(html)).into_response()))
}

pub(crate) fn page_err(uri: &OriginalUri) -> impl Fn(AppError) -> PageError + '_ {
    move |error| PageError { error, next: uri.0.path_and_query().map_or("/", |p| p.as_str()).to_string() }
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

pub(crate) async fn css() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "max-age=3600")], CSS)
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
}
