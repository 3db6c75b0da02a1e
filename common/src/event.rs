//! The event model: what an agent observed, as plain data.
//!
//! Invariants: `seq` is assigned by the agent's outbox in the insert transaction and never reused within
//! one `epoch`; `ts_ms` is UTC milliseconds since the Unix epoch (the source timestamp where the protocol
//! gives one) within [`TS_RANGE_MS`]; events in a batch are in ascending `seq`.

use crate::ids::{AssetId, GatewayId, SiteId};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The version of acks and status messages (unchanged since 1), written and read.
pub const SCHEMA_VERSION: u16 = 1;

/// The batch schema version this build writes. Version 2 added the optional alarm attributes (`priority`,
/// `acked`, `shelved`, `suppressed`); a collector that reads only version 1 refuses such a batch with "unsupported
/// schema version 2", leaving its events in the agent's outbox until the collector is upgraded.
pub const BATCH_VERSION: u16 = 2;

/// The batch versions this build reads: every one since 1 (a version 1 batch simply has no alarm attributes;
/// version 3 is version 2's events in the dictionary form, [`crate::wire_dict`], written by agents with
/// `[uplink] encoding = "dictionary"`).
pub const BATCH_VERSIONS: std::ops::RangeInclusive<u16> = 1..=crate::wire_dict::DICT_BATCH_VERSION;

/// The timestamps an event may carry: 2000-01-01T00:00:00Z (inclusive) to 2200-01-01T00:00:00Z (exclusive),
/// in UTC milliseconds. The codec refuses anything else, so durations and calendar arithmetic on stored
/// times cannot overflow and every stored time prints as a date.
pub const TS_RANGE_MS: std::ops::Range<i64> = 946_684_800_000..7_258_118_400_000;

/// The `source` of the `source` events an agent stores when it starts after an unclean stop (crash, power
/// loss, SIGKILL): one per asset it feeds, `connected: false`, stamped at the last moment the previous run is
/// known to have observed. The asset is `unknown` from then until its next state, and a stop does not
/// extend across that point: nobody was watching. Not a valid source id in an agent's config.
pub const AGENT_SOURCE: &str = "_agent";

/// What a machine is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MachineState {
    Running,
    Idle,
    Down,
    Planned,
    Unknown,
}

impl MachineState {
    pub const ALL: [MachineState; 5] = [Self::Running, Self::Idle, Self::Down, Self::Planned, Self::Unknown];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Idle => "idle",
            Self::Down => "down",
            Self::Planned => "planned",
            Self::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

impl fmt::Display for MachineState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An alarm edge: it became active or it cleared, or (OPC UA Alarms & Conditions) its acknowledgement,
/// shelving or suppression changed while it stayed as it was.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alarm {
    pub id: String,
    pub active: bool,
    /// 1-1000 (OPC UA severity; configured for Modbus alarms).
    pub severity: u16,
    pub text: String,
    /// Alarm class, e.g. `network` or `drive`; classes can require extra skills.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// Priority band the agent mapped the severity to (e.g. `high`, `medium`, `low`); batch version 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    /// Acknowledged by an operator (A&C `AckedState`); absent where the source has no such notion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acked: Option<bool>,
    /// Shelved by an operator (A&C `ShelvingState` not `Unshelved`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shelved: Option<bool>,
    /// Suppressed by design or by the server (A&C `SuppressedOrShelved` while not shelved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppressed: Option<bool>,
}

/// Why the agent had to drop events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GapReason {
    /// The outbox reached its size bound and dropped its oldest events.
    OutboxFull,
    /// The outbox could not be written (disk full) and the memory bound was reached.
    StorageFailed,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventBody {
    State {
        state: MachineState,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    Alarm(Alarm),
    /// The connection to a PLC or server feeding this asset.
    Source {
        source: String,
        connected: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// Seqs `first..=last` were dropped by the agent.
    Gap {
        first: u64,
        last: u64,
        reason: GapReason,
    },
}

/// One observation with its place in the outbox. On the wire it is the array `[seq, ts_ms, asset, body]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub seq: u64,
    /// UTC, milliseconds since the Unix epoch; within [`TS_RANGE_MS`] once decoded.
    pub ts_ms: i64,
    pub asset: AssetId,
    pub body: EventBody,
}

/// What the agent publishes on `shiftlens/v1/{site}/{gateway}/events`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub version: u16,
    pub site: SiteId,
    pub gateway: GatewayId,
    /// Random id of the outbox database that assigned the seqs.
    pub epoch: u64,
    pub events: Vec<Event>,
}

impl Batch {
    pub fn new(site: SiteId, gateway: GatewayId, epoch: u64, events: Vec<Event>) -> Self {
        Self { version: BATCH_VERSION, site, gateway, epoch, events }
    }
}
