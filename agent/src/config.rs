//! The agent's config file (`/etc/shiftlens/agent.toml`): parsed with serde (`deny_unknown_fields`), Modbus
//! register maps (`points_csv`) read next to it, then validated without I/O; every problem is reported at once
//! as `file:line:col: message` (for a register map: `file:row:column`).
//!
//! Each section's type lives with the component that uses it; this module only assembles them.

use crate::{health, outbox, source, uplink};
use serde::Deserialize;
use shiftlens_common::config::{ConfigError, ConfigErrors, ConfigFile, Spanned};
use shiftlens_common::{GatewayId, SiteId};
use std::path::Path;

/// The whole agent config as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub site: SiteId,
    pub gateway: GatewayId,
    #[serde(default)]
    pub outbox: outbox::OutboxConfig,
    pub uplink: uplink::UplinkConfig,
    /// Modbus TCP and RTU devices.
    #[serde(default)]
    pub modbus: Vec<Spanned<source::modbus::ModbusDevice>>,
    /// OPC UA server endpoints.
    #[serde(default)]
    pub opcua: Vec<Spanned<source::opcua::OpcUaEndpoint>>,
    /// State file, delivery warnings, backlog alert, metrics endpoint.
    #[serde(default)]
    pub health: health::HealthConfig,
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
        let mut config: Config = file.parse()?;
        for ep in &mut config.opcua {
            ep.get_mut().config_file = file.path.clone();
        }
        let mut errors: Vec<ConfigError> = Vec::new();
        // Register maps are read (row by row) before validation, which then sees every point.
        source::modbus::register_map::load(&mut config.modbus, file, &mut errors);
        config.outbox.validate(file, &mut errors);
        config.uplink.validate(file, &mut errors);
        config.health.validate(file, &mut errors);
        source::validate(&config.modbus, &config.opcua, file, &mut errors);
        if errors.is_empty() {
            Ok(config)
        } else {
            // The config file's problems first, then each register map's, each in file order.
            errors.sort_by(|a, b| {
                (a.path != file.path, &a.path, a.line, a.col).cmp(&(b.path != file.path, &b.path, b.line, b.col))
            });
            Err(ConfigErrors(errors))
        }
    }
}
