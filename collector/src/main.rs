use clap::{Parser, Subcommand};
use std::path::PathBuf;

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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { .. } | Command::Check { .. } => anyhow::bail!("not implemented yet"),
    }
}
