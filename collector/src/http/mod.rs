//! TODO: filled in by the issue that owns `http`.

use serde::Deserialize;
use shiftlens_common::config::{ConfigError, ConfigFile};

/// `[http]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {}

impl HttpConfig {
    pub fn validate(&self, file: &ConfigFile, errors: &mut Vec<ConfigError>) {
        let _ = (file, errors);
    }
}
