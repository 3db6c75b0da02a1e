//! The gateway status message on `shiftlens/v1/{site}/{gateway}/status` (JSON, retained).
//!
//! The agent publishes `online: true` as its birth message and then as a periodic heartbeat; its MQTT last
//! will is the same message with `online: false`, so the broker announces a dead gateway.

use serde::{Deserialize, Serialize};

/// One source (PLC connection) as the agent sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceHealth {
    pub id: String,
    pub connected: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Gateway health, published retained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub version: u16,
    pub online: bool,
    pub ts_ms: i64,
    #[serde(default)]
    pub agent_version: String,
    #[serde(default)]
    pub epoch: u64,
    /// Events in the outbox not yet confirmed.
    #[serde(default)]
    pub buffer_depth: u64,
    /// Age of the oldest unconfirmed event, milliseconds.
    #[serde(default)]
    pub oldest_unsent_age_ms: u64,
    /// Events dropped since the outbox was created.
    #[serde(default)]
    pub dropped: u64,
    /// False when the wall clock looked unsynchronised or jumped.
    #[serde(default = "yes")]
    pub clock_ok: bool,
    #[serde(default)]
    pub sources: Vec<SourceHealth>,
}

fn yes() -> bool {
    true
}

impl Status {
    /// The last-will message: offline, nothing else known.
    pub fn offline(ts_ms: i64) -> Self {
        Self {
            version: crate::SCHEMA_VERSION,
            online: false,
            ts_ms,
            agent_version: String::new(),
            epoch: 0,
            buffer_depth: 0,
            oldest_unsent_age_ms: 0,
            dropped: 0,
            clock_ok: true,
            sources: Vec::new(),
        }
    }
}
