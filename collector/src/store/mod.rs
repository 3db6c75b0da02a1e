//! TODO: filled in by the issue that owns `store`.

use serde::Deserialize;
use shiftlens_common::config::{ConfigError, ConfigFile};

/// `[store]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {}

impl StoreConfig {
    pub fn validate(&self, file: &ConfigFile, errors: &mut Vec<ConfigError>) {
        let _ = (file, errors);
    }
}

pub mod migrations;
