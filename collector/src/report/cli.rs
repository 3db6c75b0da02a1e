//! `shiftlens-collector report NAME`: load personnel and downtime, compute (and snapshot) the join, and
//! print one report as a table, JSON or CSV.

use crate::http::data::{Filter, Params};
use crate::report::{self as r, coverage::GroupBy, mttr::Dim, pareto::ParetoBy, render, whatif::Change, Input, Report};
use crate::store::{events, people as db};
use crate::timeline::Downtime;
use anyhow::Context;
use std::path::PathBuf;

/// The reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Name {
    /// Each downtime event with who was on shift and what was missing.
    Join,
    Coverage,
    Mttr,
    Pareto,
    Gaps,
    Priorities,
    Recert,
    Whatif,
    AlarmLoad,
    /// Every stored revision of one event's join (`--event`).
    Snapshots,
}

/// Arguments of `report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    #[arg(value_enum)]
    pub name: Name,
    #[arg(long, value_enum, default_value = "table")]
    pub format: render::Format,
    #[arg(long, default_value = "/etc/shiftlens/collector.toml")]
    pub config: PathBuf,
    /// Store file; default: `[store] path` of the config.
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Window start (date or date-time in site time, RFC 3339 or ms); default: 90 days before `--to`.
    /// Times lie in 2000..2200 and the window is at most `[http] max_window` long.
    #[arg(long)]
    pub from: Option<String>,
    /// Window end; default: now.
    #[arg(long)]
    pub to: Option<String>,
    /// Downtime events from a JSON file (array or one per line) instead of the store.
    #[arg(long)]
    pub downtime: Option<PathBuf>,
    /// Coverage: shift or crew.
    #[arg(long, value_enum, default_value = "shift")]
    pub group: GroupBy,
    /// MTTR dimension.
    #[arg(long, value_enum, default_value = "asset")]
    pub dim: Dim,
    /// Pareto by asset or missing skill.
    #[arg(long, value_enum, default_value = "asset")]
    pub pareto: ParetoBy,
    /// Priorities per person × skill instead of crew × skill.
    #[arg(long)]
    pub per_person: bool,
    /// What-if change: `person:skill:level` adds, `person:skill` removes.
    #[arg(long)]
    pub change: Option<Change>,
    /// Snapshots: the event key (`site/asset/start_ms`).
    #[arg(long)]
    pub event: Option<String>,
    /// Recert: how far ahead to look (`30d`, `12h`; at most 730d); default `[people] recert_horizon`.
    #[arg(long, value_parser = r::recert::parse_horizon)]
    pub horizon: Option<i64>,
}

fn read_downtime(path: &std::path::Path) -> anyhow::Result<Vec<Downtime>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if text.trim_start().starts_with('[') {
        return serde_json::from_str(&text)
            .with_context(|| format!("{}: not a JSON array of downtime events", path.display()));
    }
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("{}:{}: not a downtime event", path.display(), i + 1))
        })
        .collect()
}

impl ReportArgs {
    /// Runs the command and returns the rendered report.
    ///
    /// # Errors
    /// Config, store, input file or argument problems.
    pub fn run(&self) -> anyhow::Result<String> {
        let (cfg, mut conn) = crate::people::cli::open(&self.config, self.db.as_deref())?;
        let mut settings = cfg.people.resolved();
        if let Some(h) = self.horizon {
            settings.recert_horizon_ms = h;
        }
        let p = db::load(&conn, settings)?;
        // The same bounds as a request to the dashboard: times in 2000..2200, a window of at most
        // `[http] max_window`, so no report sizes its work from an unchecked number.
        let params = Params { from: self.from.clone(), to: self.to.clone(), ..Params::default() };
        let now_ms = chrono::Utc::now().timestamp_millis();
        let window = Filter::parse(&params, &p.settings, now_ms, &cfg.http.bounds())
            .map_err(|e| anyhow::anyhow!("report --from/--to: {}", e.message))?;
        let (from_ms, to_ms) = (window.from_ms, window.to_ms);
        if self.name == Name::Snapshots {
            let key = self.event.as_deref().context("report snapshots needs --event site/asset/start_ms")?;
            let mut rep =
                Report::new("snapshots", ["revision", "data_rev", "computed_ms", "covered", "on_shift", "missing"]);
            for s in db::snapshots(&conn, key)? {
                rep.rows.push(vec![
                    s.revision.into(),
                    s.data_rev.into(),
                    s.computed_ms.into(),
                    serde_json::json!(s.event.covered),
                    s.event.on_shift.join(" ").into(),
                    s.event.missing.join(" ").into(),
                ]);
            }
            return render::render(&rep, self.format).map_err(|e| anyhow::anyhow!("{e}"));
        }
        let downtime = match &self.downtime {
            Some(path) => read_downtime(path)?
                .into_iter()
                .filter(|d| d.start_ms < to_ms && d.end_ms.is_none_or(|e| e > from_ms))
                .collect(),
            None => events::query_downtime(
                &conn,
                &events::DowntimeFilter { site: None, asset: None, from_ms: Some(from_ms), to_ms: Some(to_ms) },
            )?,
        };
        let mut joined = r::join(&p, &downtime);
        let rev = db::data_revision(&conn)?;
        let saved = db::save_snapshots(&mut conn, rev, &joined, chrono::Utc::now().timestamp_millis())?;
        crate::store::escalations::fill_acks(&conn, &mut joined);
        let inp = Input { people: &p, events: &joined, from_ms, to_ms };
        let mut rep = match self.name {
            Name::Join => r::join::report(&inp),
            Name::Coverage => r::coverage::report(&r::coverage::coverage(&inp, self.group), self.group),
            Name::Mttr => r::mttr::report(&inp, self.dim),
            Name::Pareto => r::pareto::report(&r::pareto::pareto(&inp, self.pareto), self.pareto),
            Name::Gaps => r::gaps::report(&inp, &r::gaps::gaps(&inp)),
            Name::Priorities => r::priority::report(&inp, &r::priority::priorities(&inp, 3), self.per_person),
            Name::Recert => r::recert::report(&inp, &r::recert::recert(&inp)),
            Name::Whatif => {
                let c = self
                    .change
                    .as_ref()
                    .context("report whatif needs --change person:skill:level (or person:skill to remove)")?;
                r::whatif::report(&r::whatif::what_if(&inp, c))
            }
            Name::AlarmLoad => {
                r::alarms::report(&inp, &r::alarms::alarm_load(&inp, &db::alarm_starts(&conn, from_ms, to_ms)?))
            }
            Name::Snapshots => unreachable_snapshots(),
        };
        if saved.new + saved.revised > 0 {
            rep.notes.push(format!(
                "join snapshots: {} new, {} revised, {} unchanged",
                saved.new, saved.revised, saved.unchanged
            ));
        }
        render::render(&rep, self.format).map_err(|e| anyhow::anyhow!("{e}"))
    }
}

fn unreachable_snapshots() -> Report {
    Report::new("snapshots", Vec::<String>::new())
}
