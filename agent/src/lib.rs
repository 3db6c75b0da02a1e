//! The ShiftLens edge agent: reads PLCs, keeps every event in a SQLite outbox and forwards it over MQTT.
//!
//! Data flows one way: `source` (Modbus, OPC UA) → [`detect::Sample`] → `detect` → [`Observation`] →
//! `outbox` (assigns seq) → `uplink` (MQTT). Only `topology` knows every component; the others meet
//! through the small types defined here and in `detect`.

pub mod config;
pub mod detect;
pub mod health;
pub mod outbox;
pub mod probe;
pub mod source;
pub mod topology;
pub mod trust;
pub mod uplink;

use shiftlens_common::{AssetId, EventBody};

/// An event before the outbox has given it a seq.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// UTC milliseconds; the source timestamp where the protocol gives one.
    pub ts_ms: i64,
    pub asset: AssetId,
    pub body: EventBody,
}

/// Each alarm's flag as last stored in the outbox (`last_reported`), by asset and alarm id. Detectors start
/// from it, so a restart reports exactly the alarm edges that happened since: a clear for what cleared while
/// the agent was away, nothing for what is unchanged.
pub type Reported = std::collections::HashMap<AssetId, std::collections::HashMap<String, bool>>;

pub use config::Config;
pub use topology::run;
