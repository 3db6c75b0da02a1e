//! `shiftlens-collector import KIND FILE`: validate a personnel CSV and store it whole or not at all.

use crate::people::import::{self, Kind};
use crate::store::people as db;
use crate::Config;
use anyhow::Context;
use std::path::Path;

/// Loads the config and opens the store it names, or `db` when given.
///
/// # Errors
/// Config problems (all of them, located) and store failures.
pub fn open(config: &Path, db_path: Option<&Path>) -> anyhow::Result<(Config, rusqlite::Connection)> {
    let cfg = Config::load(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let path = db_path.map_or_else(|| cfg.store.path.clone(), Path::to_path_buf);
    let conn = db::open(&path).with_context(|| format!("opening store {}", path.display()))?;
    Ok((cfg, conn))
}

/// Runs `import`; prints what changed.
///
/// # Errors
/// Unreadable file, every invalid row (`file:line:column: message`), or store failures. On any error
/// nothing is stored.
pub fn import(kind: Kind, file: &Path, config: &Path, db_path: Option<&Path>) -> anyhow::Result<String> {
    let (cfg, mut conn) = open(config, db_path)?;
    let known = db::load(&conn, cfg.people.resolved())?;
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let name = file.file_name().map_or_else(|| file.display().to_string(), |n| n.to_string_lossy().into_owned());
    let records = import::parse(kind, &name, &text, &known).map_err(|errs| {
        let list: Vec<String> = errs.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("{} invalid row(s); nothing imported:\n{}", errs.len(), list.join("\n"))
    })?;
    let now = chrono::Utc::now().timestamp_millis();
    let s = db::import(&mut conn, kind, &name, &records, now)?;
    Ok(match s.import_id {
        Some(id) => format!(
            "{kind}: {} added, {} changed, {} removed, {} unchanged (revision {id})",
            s.added, s.changed, s.removed, s.unchanged
        ),
        None => format!("{kind}: no changes ({} unchanged)", s.unchanged),
    })
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
