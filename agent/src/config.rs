//! The agent's config file (`/etc/shiftlens/agent.toml`): parsed with serde (`deny_unknown_fields`), Modbus
//! register maps (`points_csv`) read next to it, then validated without I/O; every problem is reported at once
//! as `file:line:col: message` (for a register map: `file:row:column`).
//!
//! Each section's type lives with the component that uses it; this module only assembles them.

pub mod check;
pub mod ranges;
mod split;

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
        match Self::parse_and_validate(file) {
            (Some(config), errors) if errors.is_empty() => Ok(config),
            (_, errors) => Err(ConfigErrors(errors)),
        }
    }

    /// Parses and validates: the config whenever it could be parsed (for the file checks of `check`, which
    /// report alongside), and every problem, sorted: the config file's first, then each register map's, each
    /// in file order.
    pub fn parse_and_validate(file: &ConfigFile) -> (Option<Self>, Vec<ConfigError>) {
        // Many `[[modbus.points]]`: a hundred at a time when the file parses cleanly, else the whole file.
        let (config, range_errors) = match split::parse(file) {
            Some(config) => (config, Vec::new()),
            None => match Self::parse_whole(file) {
                Ok(parsed) => parsed,
                Err(errors) => return (None, errors),
            },
        };
        Self::validate_parsed(file, config, range_errors)
    }

    /// The whole file in one parse: the config and the range errors, or every error found.
    fn parse_whole(file: &ConfigFile) -> Result<(Self, Vec<ConfigError>), Vec<ConfigError>> {
        let doc = match toml::de::DeTable::parse(&file.text) {
            Ok(doc) => doc,
            Err(e) => return Err(vec![toml_error(file, &e)]),
        };
        // Ranges are checked on the document, so that they are reported even when the typed parse fails.
        let mut range_errors = Vec::new();
        ranges::check(doc.get_ref(), file, &mut range_errors);
        let config = match Config::deserialize(toml::de::Deserializer::from(doc)) {
            Ok(c) => c,
            Err(e) => {
                // The typed parse stops at its first mistake; each section parsed on its own finds one in each.
                for e in std::iter::once(toml_error(file, &e)).chain(section_errors(file)) {
                    // A number its type cannot hold (`unit = 300`) is already named with its range.
                    if !range_errors.iter().any(|r| (r.line, r.col) == (e.line, e.col)) {
                        range_errors.push(e);
                    }
                }
                return Err(sorted(file, range_errors));
            }
        };
        Ok((config, range_errors))
    }

    /// Reads the register maps and validates; `range_errors` come from the parse.
    fn validate_parsed(
        file: &ConfigFile,
        mut config: Self,
        mut range_errors: Vec<ConfigError>,
    ) -> (Option<Self>, Vec<ConfigError>) {
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
        // A component's own message about a value wins over the generic range message at the same place.
        range_errors.retain(|r| !errors.iter().any(|e| e.path == r.path && (e.line, e.col) == (r.line, r.col)));
        errors.extend(range_errors);
        (Some(config), sorted(file, errors))
    }
}

/// The first mistake of each section (`site`, `gateway`, `[outbox]`, `[uplink]`, each `[[modbus]]` and
/// `[[opcua]]`), each section parsed on its own; other keys are left to the whole-file parse.
fn section_errors(file: &ConfigFile) -> Vec<ConfigError> {
    use toml::de::{DeValue, ValueDeserializer};
    fn one<T: serde::de::DeserializeOwned>(v: Spanned<DeValue<'_>>) -> Option<toml::de::Error> {
        T::deserialize(ValueDeserializer::from(v)).err()
    }
    let Ok(doc) = toml::de::DeTable::parse(&file.text) else { return Vec::new() };
    let mut errors = Vec::new();
    for (key, value) in doc.into_inner() {
        let found: Vec<toml::de::Error> = match key.get_ref().as_ref() {
            "site" => one::<SiteId>(value).into_iter().collect(),
            "gateway" => one::<GatewayId>(value).into_iter().collect(),
            "outbox" => one::<outbox::OutboxConfig>(value).into_iter().collect(),
            "uplink" => one::<uplink::UplinkConfig>(value).into_iter().collect(),
            "health" => one::<health::HealthConfig>(value).into_iter().collect(),
            section @ ("modbus" | "opcua") => match value.into_inner() {
                DeValue::Array(items) => items
                    .into_iter()
                    .filter_map(|v| match section {
                        "modbus" => one::<source::modbus::ModbusDevice>(v),
                        _ => one::<source::opcua::OpcUaEndpoint>(v),
                    })
                    .collect(),
                _ => Vec::new(),
            },
            _ => Vec::new(),
        };
        errors.extend(found.iter().map(|e| toml_error(file, e)));
    }
    errors
}

fn toml_error(file: &ConfigFile, e: &toml::de::Error) -> ConfigError {
    file.error_at(e.span().unwrap_or(0..0), e.message().trim_end().to_string())
}

fn sorted(file: &ConfigFile, mut errors: Vec<ConfigError>) -> Vec<ConfigError> {
    errors.sort_by(|a, b| {
        (a.path != file.path, &a.path, a.line, a.col).cmp(&(b.path != file.path, &b.path, b.line, b.col))
    });
    errors
}
