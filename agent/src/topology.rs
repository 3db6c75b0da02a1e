//! Wires the components together and owns shutdown. The only module that spawns tasks.

use crate::Config;

/// Runs the agent until shutdown.
///
/// # Errors
/// Start-up failures (outbox cannot be opened, TLS files unreadable).
pub async fn run(config: Config) -> anyhow::Result<()> {
    let _ = config;
    anyhow::bail!("not implemented yet")
}
