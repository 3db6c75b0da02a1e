use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// ShiftLens edge agent: reads alarm and availability points from PLCs (Modbus, OPC UA), buffers
/// events in a SQLite outbox and forwards them over MQTT/TLS to the collector.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent.
    Run {
        #[arg(long, default_value = "/etc/shiftlens/agent.toml")]
        config: PathBuf,
    },
    /// Validate a config offline and print every problem with file:line:col.
    Check {
        #[arg(long, default_value = "/etc/shiftlens/agent.toml")]
        config: PathBuf,
    },
    /// Read every configured point once and print a table.
    Probe {
        #[arg(long, default_value = "/etc/shiftlens/agent.toml")]
        config: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { .. } | Command::Check { .. } | Command::Probe { .. } => {
            anyhow::bail!("not implemented yet")
        }
    }
}
