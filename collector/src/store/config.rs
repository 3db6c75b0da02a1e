//! `[store]`: the database file, retention of raw events and dead letters, the first-out window.
//!
//! Two steps: [`RawStoreConfig`] as written (serde, spans) → [`RawStoreConfig::validate`] (no I/O, every
//! problem with file:line:col) → the plain [`StoreConfig`] that the writer and readers use.

use serde::Deserialize;
use shiftlens_common::config::{ConfigError, ConfigFile, HumanDuration, Spanned};
use std::path::PathBuf;
use std::time::Duration;

/// `[store]` as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStoreConfig {
    /// `sqlite` (the default: one file, nothing else to run) or `postgres` (a shared database; `store::pg`).
    #[serde(default)]
    pub backend: Backend,
    /// PostgreSQL: the database, `postgresql://user@host:port/dbname?sslmode=require`, without a password.
    #[serde(default)]
    pub url: Option<Spanned<String>>,
    /// PostgreSQL: a file holding the password (never in the config, never logged).
    #[serde(default)]
    pub password_file: Option<Spanned<PathBuf>>,
    /// PostgreSQL: the CA (PEM) that signed the server's certificate; with it the connection uses TLS and
    /// verifies the server's name and certificate.
    #[serde(default)]
    pub ca: Option<Spanned<PathBuf>>,
    /// PostgreSQL: allow plaintext to a host that is not loopback (or a Unix socket).
    #[serde(default)]
    pub insecure: bool,
    /// SQLite database file.
    #[serde(default = "default_path")]
    pub path: PathBuf,
    /// How long raw events are kept (downtime rows are kept for ever).
    #[serde(default = "default_retention")]
    pub retention: Spanned<HumanDuration>,
    /// How far before a stop an alarm may have become active to count as its first-out alarm.
    #[serde(default = "default_first_out_window")]
    pub first_out_window: Spanned<HumanDuration>,
    /// How long dead letters (payloads that could not be ingested) are kept.
    #[serde(default = "default_dead_letter_retention")]
    pub dead_letter_retention: Spanned<HumanDuration>,
    /// Most dead letters kept; past it the oldest are deleted at each commit.
    #[serde(default = "default_dead_letter_max")]
    pub dead_letter_max: Spanned<usize>,
}

fn default_path() -> PathBuf {
    PathBuf::from("/var/lib/shiftlens/collector.db")
}
fn default_retention() -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration(Duration::from_secs(90 * 86_400)))
}
fn default_first_out_window() -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration(Duration::from_secs(60)))
}
fn default_dead_letter_retention() -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration(Duration::from_secs(7 * 86_400)))
}
fn default_dead_letter_max() -> Spanned<usize> {
    Spanned::new(0..0, 10_000)
}

/// Upper bound of `dead_letter_max` (each row holds at most about 1 KiB: topic, reason, 64 payload bytes).
const DEAD_LETTER_MAX_LIMIT: usize = 1_000_000;

impl Default for RawStoreConfig {
    fn default() -> Self {
        Self {
            backend: Backend::default(),
            url: None,
            password_file: None,
            ca: None,
            insecure: false,
            path: default_path(),
            retention: default_retention(),
            first_out_window: default_first_out_window(),
            dead_letter_retention: default_dead_letter_retention(),
            dead_letter_max: default_dead_letter_max(),
        }
    }
}

impl RawStoreConfig {
    /// Checks the section, adding every problem to `errors`, and gives the validated config.
    pub fn validate(&self, file: &ConfigFile, errors: &mut Vec<ConfigError>) -> StoreConfig {
        super::pg::config::validate(self, file, errors);
        if self.retention.get_ref().0 < Duration::from_secs(3600) {
            errors.push(file.error_at(self.retention.span(), "retention must be at least 1h"));
        }
        if self.first_out_window.get_ref().0 > Duration::from_secs(86_400) {
            errors.push(file.error_at(self.first_out_window.span(), "first_out_window must be at most 1d"));
        }
        if self.dead_letter_retention.get_ref().0 < Duration::from_secs(3600) {
            errors.push(file.error_at(self.dead_letter_retention.span(), "dead_letter_retention must be at least 1h"));
        }
        let max = *self.dead_letter_max.get_ref();
        if !(1..=DEAD_LETTER_MAX_LIMIT).contains(&max) {
            let msg = format!("dead_letter_max {max} is out of range (1-{DEAD_LETTER_MAX_LIMIT})");
            errors.push(file.error_at(self.dead_letter_max.span(), msg));
        }
        StoreConfig {
            backend: self.backend,
            postgres: self.url.as_ref().map(|url| PgSettings {
                url: url.get_ref().clone(),
                password_file: self.password_file.as_ref().map(|p| p.get_ref().clone()),
                ca: self.ca.as_ref().map(|p| p.get_ref().clone()),
            }),
            path: self.path.clone(),
            retention: self.retention.get_ref().0,
            first_out_window: self.first_out_window.get_ref().0,
            dead_letter_retention: self.dead_letter_retention.get_ref().0,
            dead_letter_max: *self.dead_letter_max.get_ref(),
        }
    }
}

/// Which database holds the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Sqlite,
    Postgres,
}

/// Where the PostgreSQL store is (validated: no password in the url; plaintext only where allowed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgSettings {
    pub url: String,
    pub password_file: Option<PathBuf>,
    pub ca: Option<PathBuf>,
}

/// `[store]`, validated: what the store writer and readers use.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub backend: Backend,
    /// With `backend = "postgres"`.
    pub postgres: Option<PgSettings>,
    /// SQLite database file.
    pub path: PathBuf,
    /// How long raw events are kept.
    pub retention: Duration,
    /// How far before a stop an alarm may have become active to count as its first-out alarm.
    pub first_out_window: Duration,
    /// How long dead letters are kept, and how many at most.
    pub dead_letter_retention: Duration,
    pub dead_letter_max: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        RawStoreConfig::default().validate(&ConfigFile::from_text("default", String::new()), &mut Vec::new())
    }
}

impl StoreConfig {
    pub fn first_out_window_ms(&self) -> i64 {
        i64::try_from(self.first_out_window.as_millis()).unwrap_or(i64::MAX)
    }
}
