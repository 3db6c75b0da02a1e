//! The agent's config file (`/etc/shiftlens/agent.toml`): parsed with serde (`deny_unknown_fields`), Modbus
//! register maps (`points_csv`) read next to it, then validated without I/O; every problem is reported at once
//! as `file:line:col: message` (for a register map: `file:row:column`).
//!
//! Two steps: [`RawConfig`] is the file as written (serde, `Spanned` where validation needs a location); after
//! validation passes it becomes [`Config`], plain types that runtime code uses (no spans past this module).
//! Each section's types (raw and validated) live with the component that uses them; this module only
//! assembles them.

pub mod check;
pub mod modbus;
pub mod opcua;
pub mod ranges;
pub mod register_map;
pub mod sections;
mod split;

use crate::{health, outbox, source, uplink};
use serde::Deserialize;
use shiftlens_common::config::{ConfigError, ConfigErrors, ConfigFile, Spanned};
use shiftlens_common::{GatewayId, SiteId};
use std::collections::HashSet;
use std::path::Path;

/// The validated agent config: what `run`, `probe` and `trust` use.
#[derive(Debug, Clone)]
pub struct Config {
    pub site: SiteId,
    pub gateway: GatewayId,
    pub outbox: outbox::OutboxConfig,
    pub uplink: uplink::UplinkConfig,
    /// Modbus TCP and RTU devices.
    pub modbus: Vec<source::modbus::ModbusDevice>,
    /// OPC UA server endpoints.
    pub opcua: Vec<source::opcua::OpcUaEndpoint>,
    /// State file, delivery warnings, backlog alert, metrics endpoint.
    pub health: health::HealthConfig,
}

/// The whole agent config as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub site: SiteId,
    pub gateway: GatewayId,
    #[serde(default)]
    pub outbox: sections::RawOutboxConfig,
    pub uplink: sections::RawUplinkConfig,
    #[serde(default)]
    pub modbus: Vec<Spanned<modbus::RawModbusDevice>>,
    #[serde(default)]
    pub opcua: Vec<Spanned<opcua::RawOpcUaEndpoint>>,
    #[serde(default)]
    pub health: sections::RawHealthConfig,
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
        match RawConfig::parse_and_validate(file) {
            (Some(config), errors) if errors.is_empty() => Ok(config.validated()),
            (_, errors) => Err(ConfigErrors(errors)),
        }
    }
}

impl RawConfig {
    /// The validated config (after [`Self::parse_and_validate`] found no problem).
    pub fn validated(self) -> Config {
        Config {
            site: self.site,
            gateway: self.gateway,
            outbox: self.outbox.validated(),
            uplink: self.uplink.validated(),
            modbus: self.modbus.into_iter().filter_map(|d| d.into_inner().validated()).collect(),
            opcua: self.opcua.into_iter().map(|e| e.into_inner().validated()).collect(),
            health: self.health.validated(),
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
        let config = match RawConfig::deserialize(toml::de::Deserializer::from(doc)) {
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
        register_map::load(&mut config.modbus, file, &mut errors);
        config.outbox.validate(file, &mut errors);
        config.uplink.validate(file, &mut errors);
        config.health.validate(file, &mut errors);
        validate_sources(&config.modbus, &config.opcua, file, &mut errors);
        // A component's own message about a value wins over the generic range message at the same place.
        range_errors.retain(|r| !errors.iter().any(|e| e.path == r.path && (e.line, e.col) == (r.line, r.col)));
        errors.extend(range_errors);
        (Some(config), sorted(file, errors))
    }
}

/// Validates every source section: each protocol's own checks, plus source ids unique across protocols.
fn validate_sources(
    modbus: &[Spanned<modbus::RawModbusDevice>],
    opcua: &[Spanned<opcua::RawOpcUaEndpoint>],
    file: &ConfigFile,
    errors: &mut Vec<ConfigError>,
) {
    modbus::validate(modbus, file, errors);
    opcua::validate(opcua, file, errors);
    let ids = modbus.iter().map(|d| &d.get_ref().id).chain(opcua.iter().map(|e| &e.get_ref().id));
    for id in ids.filter(|id| id.get_ref() == shiftlens_common::AGENT_SOURCE) {
        errors.push(file.error_at(id.span(), format!("source id {:?} is reserved for the agent itself", id.get_ref())));
    }
    let modbus_ids: HashSet<&String> = modbus.iter().map(|d| d.get_ref().id.get_ref()).collect();
    for ep in opcua {
        let id = &ep.get_ref().id;
        if modbus_ids.contains(id.get_ref()) {
            errors.push(file.error_at(id.span(), format!("source id {:?} is also a Modbus device id", id.get_ref())));
        }
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
            "outbox" => one::<sections::RawOutboxConfig>(value).into_iter().collect(),
            "uplink" => one::<sections::RawUplinkConfig>(value).into_iter().collect(),
            "health" => one::<sections::RawHealthConfig>(value).into_iter().collect(),
            section @ ("modbus" | "opcua") => match value.into_inner() {
                DeValue::Array(items) => items
                    .into_iter()
                    .filter_map(|v| match section {
                        "modbus" => one::<modbus::RawModbusDevice>(v),
                        _ => one::<opcua::RawOpcUaEndpoint>(v),
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
