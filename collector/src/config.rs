//! The collector's config file (`/etc/shiftlens/collector.toml`), in two steps: [`RawConfig`] is the file
//! as written (serde, `deny_unknown_fields`, spans); [`Config::from_file`] validates it without I/O,
//! reporting every problem at once as `file:line:col: message`, and gives the [`Config`] that runtime code
//! reads: plain types (no spans) for `[broker]`, `[store]` and `[ingest]`. Each section's types live with
//! the component that uses it.

use crate::{broker, escalate, http, ingest, people, sparkplug, store};
use serde::Deserialize;
use shiftlens_common::config::{ConfigError, ConfigErrors, ConfigFile};
use std::path::Path;

/// The whole collector config as written in the file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub broker: broker::RawBrokerConfig,
    #[serde(default)]
    pub store: store::RawStoreConfig,
    #[serde(default)]
    pub ingest: ingest::RawIngestConfig,
    #[serde(default)]
    pub http: http::HttpConfig,
    #[serde(default)]
    pub people: people::PeopleConfig,
    /// Off unless the section is present.
    pub escalation: Option<escalate::EscalationConfig>,
    /// `[sparkplug]`: the Sparkplug B host application (off when absent).
    #[serde(default)]
    pub sparkplug: Option<sparkplug::RawSparkplugConfig>,
}

/// The validated collector config.
#[derive(Debug, Clone)]
pub struct Config {
    pub broker: broker::BrokerConfig,
    pub store: store::StoreConfig,
    pub ingest: ingest::IngestConfig,
    pub http: http::Http,
    pub people: people::PeopleConfig,
    /// `[people]` validated once at load ([`people::PeopleConfig::validated`]): what runtime code reads.
    pub people_settings: people::Settings,
    /// `[escalation]` validated; `None` = escalation off.
    pub escalation: Option<escalate::Settings>,
    /// `[sparkplug]`, validated.
    pub sparkplug: Option<sparkplug::Sparkplug>,
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
        let raw: RawConfig = file.parse()?;
        let mut errors: Vec<ConfigError> = Vec::new();
        let broker = raw.broker.validate(file, &mut errors);
        let store = raw.store.validate(file, &mut errors);
        let ingest = raw.ingest.validate(file, &mut errors);
        let http = raw.http.validated(file, &mut errors);
        let people_settings = raw.people.validated(file, &mut errors);
        let escalation = raw.escalation.as_ref().and_then(|e| {
            let hosts = http::guard::Hosts::new(&http.bind.to_string(), http.public_names.iter().map(String::as_str));
            e.validated(file, &hosts, &mut errors)
        });
        if let Some(s) = &raw.sparkplug {
            s.validate(file, &mut errors);
        }
        if errors.is_empty() {
            Ok(Config {
                broker,
                store,
                ingest,
                http,
                people: raw.people,
                people_settings,
                escalation,
                sparkplug: raw.sparkplug.map(sparkplug::RawSparkplugConfig::validated),
            })
        } else {
            errors.sort_by_key(|e| (e.line, e.col));
            Err(ConfigErrors(errors))
        }
    }
}
