//! The `shiftlens-collector` binary: the CLI only (clap). It parses the command line, loads and validates
//! the config, and hands over: `run` to [`topology::run`], the other commands to their modules.

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use shiftlens_collector::store::{self, events};
use shiftlens_collector::{feed, topology, Config};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

/// ShiftLens collector: embedded MQTT broker, exactly-once ingest, downtime timeline, competency join,
/// reports, dashboard and the downtime feed for central IT.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the collector.
    Run {
        #[arg(long, default_value = "/etc/shiftlens/collector.toml")]
        config: PathBuf,
    },
    /// Validate a config offline.
    Check {
        #[arg(long, default_value = "/etc/shiftlens/collector.toml")]
        config: PathBuf,
    },
    /// Import a personnel CSV (formats in config/people.md): all rows or none.
    Import(shiftlens_collector::people::cli::ImportArgs),
    /// Print a report (coverage, mttr, pareto, gaps, priorities, recert, whatif, alarm-load, join).
    Report(shiftlens_collector::report::cli::ReportArgs),
    /// A small CA for plants without their own: init, issue gateway/feed-reader/server certificates, list.
    Pki(shiftlens_collector::pki::PkiArgs),
    /// Copy a SQLite store into PostgreSQL (resumable; counts checked at the end).
    Migrate(shiftlens_collector::store::pg::migrate::MigrateArgs),
    /// Export data from the store.
    Export {
        #[command(subcommand)]
        what: Export,
    },
}

#[derive(Subcommand)]
enum Export {
    /// Downtime events overlapping [--from, --to), in the feed schema (docs/feed.md).
    Downtime {
        #[arg(long, default_value = "/etc/shiftlens/collector.toml")]
        config: PathBuf,
        /// RFC 3339 time or milliseconds since the Unix epoch.
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        site: Option<String>,
        #[arg(long)]
        asset: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Csv,
    Json,
}

fn load(path: &std::path::Path) -> anyhow::Result<Config> {
    Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))
}

/// The log filter without `RUST_LOG`.
const DEFAULT_LOG_FILTER: &str = "info,rumqttd=off";

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // rumqttd logs an ERROR whenever a connection ends (its readiness probe at every start, each
                // gateway that leaves); the gate logs what an operator needs. RUST_LOG=rumqttd=info shows it.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER)),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into the journal or a file.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match cli.command {
        Command::Import(args) => {
            println!("{}", args.run()?);
            Ok(())
        }
        Command::Migrate(args) => {
            print!("{}", args.run()?);
            Ok(())
        }
        Command::Report(args) => {
            print!("{}", args.run()?);
            Ok(())
        }
        Command::Pki(args) => {
            print!("{}", args.run(chrono::Utc::now().timestamp_millis())?.trim_end());
            println!();
            Ok(())
        }
        Command::Check { config } => {
            load(&config)?;
            println!("{}: OK", config.display());
            Ok(())
        }
        Command::Run { config } => {
            let config = load(&config)?;
            let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            let result = rt.block_on(topology::run(config));
            // Tasks still parked in blocking calls must not hold the exit.
            rt.shutdown_timeout(Duration::from_secs(2));
            result
        }
        Command::Export { what: Export::Downtime { config, from, to, site, asset, format } } => {
            let config = load(&config)?;
            let time = |s: Option<String>| s.map(|s| feed::parse_time(&s)).transpose().map_err(anyhow::Error::msg);
            let filter = events::DowntimeFilter {
                site: site.map(shiftlens_common::SiteId::parse).transpose()?,
                asset: asset.map(shiftlens_common::AssetId::parse).transpose()?,
                from_ms: time(from)?,
                to_ms: time(to)?,
            };
            let (rows, lines, acks) = if config.store.backend == store::Backend::Postgres {
                let reader = store::pg::read::Reader::open(&store::pg::Target::from_store(&config.store)?)?;
                (reader.downtime(&filter)?, reader.lines()?, reader.ack_times().unwrap_or_default())
            } else {
                let conn = store::open_reader(&config.store.path)?;
                let rows = events::query_downtime(&conn, &filter).context("reading downtime")?;
                let lines = feed::load_lines(&conn).map_err(|e| anyhow::anyhow!("reading asset lines: {e}"))?;
                (rows, lines, store::escalations::ack_times(&conn).unwrap_or_default())
            };
            let ack = |d: &shiftlens_collector::timeline::Downtime| {
                acks.get(&shiftlens_collector::join::event_key(d)).copied()
            };
            let records: Vec<feed::Record> =
                rows.iter().map(|d| feed::Record::new(d, lines.line(&d.site, &d.asset)).with_ack(d, ack(d))).collect();
            match format {
                Format::Csv => print!("{}", feed::to_csv(&records)?),
                Format::Json => println!("{}", serde_json::to_string_pretty(&records)?),
            }
            Ok(())
        }
    }
}
