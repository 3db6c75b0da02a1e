//! TODO: filled in by the issue that owns `broker`.

use serde::Deserialize;
use shiftlens_common::config::{ConfigError, ConfigFile};

/// `[broker]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {}

impl BrokerConfig {
    pub fn validate(&self, file: &ConfigFile, errors: &mut Vec<ConfigError>) {
        let _ = (file, errors);
    }
}
