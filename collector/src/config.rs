//! The collector's config file (`/etc/shiftlens/collector.toml`): parsed with serde
//! (`deny_unknown_fields`), then validated without I/O; every problem is reported at once as
//! `file:line:col: message`. Each section's type lives with the component that uses it.

use crate::{broker, http, ingest, people, sparkplug, store};
use serde::Deserialize;
use shiftlens_common::config::{ConfigError, ConfigErrors, ConfigFile};
use std::path::Path;

/// The whole collector config as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub broker: broker::BrokerConfig,
    #[serde(default)]
    pub store: store::StoreConfig,
    #[serde(default)]
    pub ingest: ingest::IngestConfig,
    #[serde(default)]
    pub http: http::HttpConfig,
    #[serde(default)]
    pub people: people::PeopleConfig,
    /// `[sparkplug]`: the Sparkplug B host application (off when absent).
    #[serde(default)]
    pub sparkplug: Option<sparkplug::SparkplugConfig>,
}

impl Config {
    /// Reads, parses and validates a config file.
    ///
    /// # Errors
    /// Every problem found, each with file, line and column.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let file = ConfigFile::read(path)?;
        Self::from_file(&file)
    }

    /// Parses and validates config text; `file.path` names it in errors.
    ///
    /// # Errors
    /// Every problem found, each with file, line and column.
    pub fn from_file(file: &ConfigFile) -> Result<Self, ConfigErrors> {
        let config: Config = file.parse()?;
        let mut errors: Vec<ConfigError> = Vec::new();
        config.broker.validate(file, &mut errors);
        config.store.validate(file, &mut errors);
        config.ingest.validate(file, &mut errors);
        config.http.validate(file, &mut errors);
        config.people.validate(file, &mut errors);
        if let Some(s) = &config.sparkplug {
            s.validate(file, &mut errors);
        }
        if errors.is_empty() {
            Ok(config)
        } else {
            errors.sort_by_key(|e| (e.line, e.col));
            Err(ConfigErrors(errors))
        }
    }
}
