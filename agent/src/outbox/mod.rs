//! The SQLite outbox: the source of truth for what is unsent.

use serde::Deserialize;
use shiftlens_common::config::{ConfigError, ConfigFile};

/// `[outbox]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {}

impl OutboxConfig {
    pub fn validate(&self, file: &ConfigFile, errors: &mut Vec<ConfigError>) {
        let _ = (file, errors);
    }
}
