//! `shiftlens-collector import KIND FILE`: validate a personnel CSV and store it whole or not at all,
//! through the read side's [`crate::query::import`], the call the dashboard's import makes
//! too. No SQL here.

use crate::people::import::Kind;
use crate::query::{self, ImportOutcome};
use crate::Config;
use anyhow::Context;
use std::path::{Path, PathBuf};

/// Loads the config and names the store it uses, or `db` when given; the store file is created and
/// migrated if needed.
///
/// # Errors
/// Config problems (all of them, located) and store failures.
pub fn open(config: &Path, db_path: Option<&Path>) -> anyhow::Result<(Config, PathBuf)> {
    let cfg = Config::load(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let path = db_path.map_or_else(|| cfg.store.path.clone(), Path::to_path_buf);
    if db_path.is_none() && cfg.store.backend == crate::store::Backend::Postgres {
        // Reads and imports of this path go to the PostgreSQL store.
        crate::store::reads::serve_from_postgres(&cfg.store)?;
        return Ok((cfg, path));
    }
    crate::store::reads::prepare(&path).with_context(|| format!("opening store {}", path.display()))?;
    Ok((cfg, path))
}

/// Runs `import`; prints what changed.
///
/// # Errors
/// Unreadable file, every invalid row (`file:line:column: message`), or store failures. On any error
/// nothing is stored.
pub fn import(kind: Kind, file: &Path, config: &Path, db_path: Option<&Path>) -> anyhow::Result<String> {
    let (cfg, db) = open(config, db_path)?;
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let name = file.file_name().map_or_else(|| file.display().to_string(), |n| n.to_string_lossy().into_owned());
    match query::import(&db, &cfg.people_settings, kind, &name, &text)? {
        ImportOutcome::Stored(summary) => Ok(summary),
        ImportOutcome::Rejected(errs) => {
            let list: Vec<String> = errs.iter().map(ToString::to_string).collect();
            Err(anyhow::anyhow!("{} invalid row(s); nothing imported:\n{}", errs.len(), list.join("\n")))
        }
    }
}

/// Arguments of `import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// What the file holds.
    #[arg(value_enum)]
    pub kind: Kind,
    /// The CSV file (formats in config/people.md).
    pub file: std::path::PathBuf,
    #[arg(long, default_value = "/etc/shiftlens/collector.toml")]
    pub config: std::path::PathBuf,
    /// Store file; default: `[store] path` of the config.
    #[arg(long)]
    pub db: Option<std::path::PathBuf>,
}

impl ImportArgs {
    /// Runs the command.
    ///
    /// # Errors
    /// As [`import`].
    pub fn run(&self) -> anyhow::Result<String> {
        import(self.kind, &self.file, &self.config, self.db.as_deref())
    }
}
