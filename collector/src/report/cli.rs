//! `shiftlens-collector report NAME`: one report of the read side's catalogue, computed by the same
//! [`query::run`] as the dashboard and the API over the same [`Dataset`] load (which saves the join
//! snapshot), and printed as a table, JSON or CSV; or `report snapshots --event KEY`, every stored
//! revision of one event's join. No SQL here.

use crate::query::{self, Dataset, Filter, Kind, Options, Params, CATALOGUE};
use crate::report::{coverage::GroupBy, mttr::Dim, pareto::ParetoBy, render, whatif::Change, Report};
use crate::store::reads::Reader;
use crate::timeline::Downtime;
use anyhow::Context;
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use std::path::PathBuf;

/// What `report` prints: a report of the catalogue, or the snapshots of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Name {
    Report(Kind),
    /// Every stored revision of one event's join (`--event`).
    Snapshots,
}

fn name_parser() -> impl TypedValueParser<Value = Name> {
    let names: Vec<PossibleValue> = CATALOGUE
        .iter()
        .filter_map(|e| clap::ValueEnum::to_possible_value(&e.kind))
        .chain([PossibleValue::new("snapshots")])
        .collect();
    PossibleValuesParser::new(names).map(|n: String| {
        CATALOGUE.iter().map(|e| e.kind).find(|k| kind_name(*k) == n).map_or(Name::Snapshots, Name::Report)
    })
}

fn kind_name(k: Kind) -> String {
    clap::ValueEnum::to_possible_value(&k).map_or_else(String::new, |p| p.get_name().to_string())
}

/// Arguments of `report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// A report of the catalogue (the API's names), or `snapshots`.
    #[arg(value_parser = name_parser())]
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
    #[arg(long, value_parser = crate::report::recert::parse_horizon)]
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
        let (cfg, db) = crate::people::cli::open(&self.config, self.db.as_deref())?;
        let settings = cfg.people_settings.clone();
        // The same bounds as a request to the dashboard: times in 2000..2200, a window of at most
        // `[http] max_window`, so no report sizes its work from an unchecked number.
        let params = Params { from: self.from.clone(), to: self.to.clone(), ..Params::default() };
        let now_ms = chrono::Utc::now().timestamp_millis();
        let window = Filter::parse(&params, &settings, now_ms, &cfg.http.bounds)
            .map_err(|e| anyhow::anyhow!("report --from/--to: {}", e.message()))?;
        let kind = match self.name {
            Name::Report(k) => k,
            Name::Snapshots => {
                let key = self.event.as_deref().context("report snapshots needs --event site/asset/start_ms")?;
                return render::render(&snapshots(&Reader::open(&db)?, key)?, self.format)
                    .map_err(|e| anyhow::anyhow!("{e}"));
            }
        };
        if kind == Kind::Whatif && self.change.is_none() {
            anyhow::bail!("report whatif needs --change person:skill:level (or person:skill to remove)");
        }
        let downtime = self.downtime.as_deref().map(read_downtime).transpose()?;
        let ds = Dataset::load(&db, settings, downtime)?;
        let saved = ds.save_snapshot(&db)?;
        if kind == Kind::AlarmLoad {
            ds.read_alarms(&db)?;
        }
        let options = Options {
            group: self.group,
            dim: self.dim,
            by: self.pareto,
            per_person: self.per_person,
            change: self.change.clone(),
            horizon_ms: self.horizon,
            // The command prints every row.
            limit: Some(usize::MAX),
            offset: 0,
        };
        let mut rep = query::run(&ds, kind, &window, &options, now_ms).report;
        if saved.new + saved.revised > 0 {
            rep.notes.push(format!(
                "join snapshots: {} new, {} revised, {} unchanged",
                saved.new, saved.revised, saved.unchanged
            ));
        }
        render::render(&rep, self.format).map_err(|e| anyhow::anyhow!("{e}"))
    }
}

/// Every stored revision of one event's join, as a report.
fn snapshots(r: &Reader, key: &str) -> anyhow::Result<Report> {
    let mut rep = Report::new("snapshots", ["revision", "data_rev", "computed_ms", "covered", "on_shift", "missing"]);
    for s in r.snapshots(key)? {
        rep.rows.push(vec![
            s.revision.into(),
            s.data_rev.into(),
            s.computed_ms.into(),
            serde_json::json!(s.event.covered),
            s.event.on_shift.join(" ").into(),
            s.event.missing.join(" ").into(),
        ]);
    }
    Ok(rep)
}
