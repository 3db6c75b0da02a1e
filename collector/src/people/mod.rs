//! TODO: filled in by the issue that owns `people`.

use serde::Deserialize;
use shiftlens_common::config::{ConfigError, ConfigFile};

/// `[people]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeopleConfig {}

impl PeopleConfig {
    pub fn validate(&self, file: &ConfigFile, errors: &mut Vec<ConfigError>) {
        let _ = (file, errors);
    }
}
