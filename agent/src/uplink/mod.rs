//! MQTT uplink: outbox → batches → publish → collector acks → delete.

use serde::Deserialize;
use shiftlens_common::config::{ConfigError, ConfigFile};

/// `[uplink]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    pub broker: String,
}

impl UplinkConfig {
    pub fn validate(&self, file: &ConfigFile, errors: &mut Vec<ConfigError>) {
        let _ = (file, errors);
    }
}
