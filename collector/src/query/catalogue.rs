//! The one catalogue of reports: a row per report (name, API path, page, titles, options, summary) and
//! the pure function that makes it from a [`View`]. The CLI (`shiftlens-collector report NAME`), the API
//! routes, the OpenAPI document and the dashboard's pages and menu are all built from [`CATALOGUE`], and
//! all run a report through [`run`](super::run), so they show the same numbers by construction. Adding a
//! report is one row here plus one pure function in `report/`.

use super::params::Options;
use super::view::View;
use super::Summary;
use crate::report::{self as r, Report};

/// The reports. Their names (`alarm-load`, `training-effect`) are the CLI's, the API's path tails and
/// the reports' `name`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Kind {
    /// Availability, downtime, MTTR and a weekly trend.
    Overview,
    /// Each downtime event with who was on shift and what was missing.
    Join,
    Coverage,
    Mttr,
    Pareto,
    Gaps,
    Priorities,
    Recert,
    AlarmLoad,
    Whatif,
    Repeats,
    TrainingEffect,
}

/// What a report's function makes.
pub struct Made {
    pub report: Report,
    /// Headline figures (overview, repeats).
    pub summary: Option<Summary>,
    /// Set when the function paged the rows itself (the join): the row count before paging.
    pub paged_total: Option<usize>,
}

impl From<Report> for Made {
    fn from(report: Report) -> Self {
        Self { report, summary: None, paged_total: None }
    }
}

/// One report.
pub struct Entry {
    pub kind: Kind,
    /// The API endpoint.
    pub path: &'static str,
    /// The dashboard page showing it (`None`: none, or a page of its own such as `/whatif`).
    pub page: Option<&'static str>,
    /// The page's title.
    pub title: &'static str,
    /// The menu's label.
    pub short: &'static str,
    /// What the API says it is.
    pub summary: &'static str,
    /// Report options it reads beyond the common filters.
    pub options: &'static [&'static str],
    /// An option the page toggles, with its values (first = default).
    pub toggle: Option<(&'static str, &'static [&'static str])>,
    /// It reads which skills the assets need, so its personnel is limited to the assets in scope.
    pub reads_requirements: bool,
    /// The pure function that makes it.
    pub make: fn(&View, &Options) -> Made,
}

/// Every report, in the dashboard menu's order.
pub const CATALOGUE: [Entry; 12] = [
    Entry {
        kind: Kind::Overview,
        path: "/api/v1/overview",
        page: Some("/"),
        title: "Plant overview",
        short: "Overview",
        summary: "Availability, downtime hours, MTTR (covered and uncovered) and a weekly trend",
        options: &[],
        toggle: None,
        reads_requirements: false,
        make: overview,
    },
    Entry {
        kind: Kind::Coverage,
        path: "/api/v1/coverage",
        page: Some("/coverage"),
        title: "Shift coverage",
        short: "Coverage",
        summary: "Coverage matrix: crew or shift × skill, qualified headcount, share of shift time covered, status",
        options: &["group"],
        toggle: Some(("group", &["crew", "shift"])),
        reads_requirements: true,
        make: |v, o| r::coverage::report(&r::coverage::coverage(&v.input(), o.group), o.group).into(),
    },
    Entry {
        kind: Kind::Join,
        path: "/api/v1/join",
        page: Some("/downtime"),
        title: "Downtime and who was on shift",
        short: "Downtime",
        summary: "Downtime events, newest first, with who was on shift, who was qualified and what was missing",
        options: &["limit", "offset"],
        toggle: None,
        reads_requirements: false,
        make: join,
    },
    Entry {
        kind: Kind::Mttr,
        path: "/api/v1/mttr",
        page: Some("/mttr"),
        title: "MTTR covered vs uncovered",
        short: "MTTR",
        summary: "MTTR covered vs uncovered by asset, skill, shift or crew, with sample sizes and 95% intervals",
        options: &["dim"],
        toggle: Some(("dim", &["asset", "skill", "shift", "crew"])),
        reads_requirements: false,
        make: |v, o| r::mttr::report(&v.input(), o.dim).into(),
    },
    Entry {
        kind: Kind::Priorities,
        path: "/api/v1/priorities",
        page: Some("/priorities"),
        title: "Training priorities",
        short: "Training",
        summary: "Training priorities ranked by avoidable hours per month × cost per hour",
        options: &["per_person"],
        toggle: Some(("per_person", &["false", "true"])),
        reads_requirements: false,
        make: |v, o| {
            let inp = v.input();
            r::priority::report(&inp, &r::priority::priorities(&inp, 3), o.per_person).into()
        },
    },
    Entry {
        kind: Kind::Recert,
        path: "/api/v1/recert",
        page: Some("/recert"),
        title: "Certificates lapsed and expiring",
        short: "Certificates",
        summary:
            "Certificates lapsed (not renewed) and expiring within the horizon, with the coverage each lapse takes away",
        options: &["horizon"],
        toggle: None,
        reads_requirements: true,
        make: |v, _| {
            let inp = v.input();
            r::recert::report(&inp, &r::recert::recert(&inp)).into()
        },
    },
    Entry {
        kind: Kind::Pareto,
        path: "/api/v1/pareto",
        page: Some("/pareto"),
        title: "Downtime Pareto",
        short: "Pareto",
        summary: "Downtime Pareto by asset or by missing skill",
        options: &["by"],
        toggle: Some(("by", &["asset", "skill"])),
        reads_requirements: false,
        make: |v, o| r::pareto::report(&r::pareto::pareto(&v.input(), o.by), o.by).into(),
    },
    Entry {
        kind: Kind::Gaps,
        path: "/api/v1/gaps",
        page: Some("/gaps"),
        title: "Skill gaps and readiness",
        short: "Gaps",
        summary: "Skill gaps now and for each initiative at its go-live (readiness %)",
        options: &[],
        toggle: None,
        reads_requirements: true,
        make: |v, _| {
            let inp = v.input();
            r::gaps::report(&inp, &r::gaps::gaps(&inp)).into()
        },
    },
    Entry {
        kind: Kind::AlarmLoad,
        path: "/api/v1/alarm-load",
        page: Some("/alarm-load"),
        title: "Alarm load per operator",
        short: "Alarm load",
        summary: "Alarm activations per 10 minutes per operator on shift, by crew and competency",
        options: &[],
        toggle: None,
        reads_requirements: true,
        make: |v, _| {
            let inp = v.input();
            r::alarms::report(&inp, &r::alarms::alarm_load(&inp, &v.alarms)).into()
        },
    },
    Entry {
        kind: Kind::Repeats,
        path: "/api/v1/repeats",
        page: Some("/repeats"),
        title: "Repeat incidents",
        short: "Repeats",
        summary: "Repeat incidents per week: stops on the same asset with the same first-out alarm as one that ended at most [people] repeat_window (7d) before, their share and its trend",
        options: &[],
        toggle: None,
        reads_requirements: false,
        make: repeats,
    },
    Entry {
        kind: Kind::TrainingEffect,
        path: "/api/v1/training-effect",
        page: Some("/training-effect"),
        title: "Training effect: repairs before and after a qualification rose",
        short: "Training effect",
        summary: "Training effect: per person and skill whose level rose in the window, MTTR of the events needing the skill on their shifts before and after (n, 95% CI), and hours saved",
        options: &[],
        toggle: None,
        reads_requirements: false,
        make: |v, _| {
            let inp = v.input();
            r::training::report(&inp, &r::training::effects(&inp)).into()
        },
    },
    Entry {
        kind: Kind::Whatif,
        path: "/api/v1/whatif",
        page: None,
        title: "What if someone gained or lost a skill",
        short: "What if",
        summary: "What changes if a person gains or loses a qualification",
        options: &["change"],
        toggle: None,
        reads_requirements: true,
        make: |v, o| match &o.change {
            Some(c) => r::whatif::report(&r::whatif::what_if(&v.input(), c)).into(),
            None => Report::new("whatif", Vec::<String>::new()).into(),
        },
    },
];

/// The catalogue's row of `kind`.
pub fn entry(kind: Kind) -> &'static Entry {
    // Every kind has a row (a unit test checks it); the first row stands in should one be missing.
    CATALOGUE.iter().find(|e| e.kind == kind).unwrap_or(&CATALOGUE[0])
}

/// Rows of the join served when no `limit` is given.
pub const JOIN_LIMIT: usize = 1000;

fn overview(v: &View, _: &Options) -> Made {
    let weeks = r::overview::max_weeks(super::params::MAX_TIME_MS - super::params::MIN_TIME_MS);
    let (s, report) = r::overview::overview(&v.input(), v.assets, v.now_ms, weeks);
    Made { report, summary: Some(s), paged_total: None }
}

fn join(v: &View, o: &Options) -> Made {
    // Newest first, paged before rendering: the page of a year is cheap.
    let inp = v.input();
    let total = inp.events.len();
    let end = total.saturating_sub(o.offset);
    let start = end.saturating_sub(o.limit.unwrap_or(JOIN_LIMIT));
    let page: Vec<crate::join::JoinedEvent> = inp.events[start..end].iter().rev().cloned().collect();
    let mut report = r::join::report(&r::Input { events: &page, ..inp });
    report.notes.push(format!("{total} events in the window, newest first"));
    Made { report, summary: None, paged_total: Some(total) }
}

fn repeats(v: &View, _: &Options) -> Made {
    let ds = v.ds;
    let f = v.filter;
    let scoped: Vec<(&crate::timeline::Downtime, bool)> = ds
        .downtime
        .iter()
        .zip(&ds.events)
        .take_while(|(d, _)| d.start_ms < f.to_ms)
        .map(|(d, e)| (d, f.event_in_scope(&ds.people, e)))
        .collect();
    let settings = &v.people.settings;
    let (s, report) = r::repeats::report(&scoped, settings.repeat_window_ms, settings.tz, f.from_ms, f.to_ms);
    Made { report, summary: Some(s), paged_total: None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn every_kind_has_one_row_named_as_the_cli_names_it() {
        for k in Kind::value_variants() {
            let rows: Vec<&Entry> = CATALOGUE.iter().filter(|e| e.kind == *k).collect();
            assert_eq!(rows.len(), 1, "{k:?}");
            let name = k.to_possible_value().unwrap().get_name().to_string();
            assert_eq!(rows[0].path, format!("/api/v1/{name}"));
        }
    }
}
