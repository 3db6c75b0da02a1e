//! The wire contract both ShiftLens programs share.
//!
//! Nothing here does I/O beyond reading a config file: no tokio, no SQLite, no MQTT. The agent and
//! the collector depend on this crate and never on each other.

pub mod clock;
pub mod config;
pub mod event;
pub mod ids;
pub mod pem;
pub mod sparkplug;
pub mod status;
pub mod topic;
pub mod wire;
pub mod wire_dict;

pub use event::{
    Alarm, Batch, Event, EventBody, GapReason, MachineState, AGENT_SOURCE, BATCH_VERSION, BATCH_VERSIONS,
    SCHEMA_VERSION, TS_RANGE_MS,
};
pub use ids::{AssetId, GatewayId, IdError, SiteId};
pub use topic::Topic;
pub use wire::{Ack, DecodeError, Limits};
