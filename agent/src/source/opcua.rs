//! OPC UA source.

use serde::Deserialize;

/// One OPC UA endpoint (`[[opcua]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpcUaEndpoint {
    pub id: String,
}
