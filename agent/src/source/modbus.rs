//! Modbus TCP and RTU source.

use serde::Deserialize;

/// One Modbus device (`[[modbus]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusDevice {
    pub id: String,
}
