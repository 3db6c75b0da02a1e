//! Pure timeline: events → per-asset state intervals → downtime events, as DESIGN.md defines them.

use serde::{Deserialize, Serialize};
use shiftlens_common::{AssetId, GatewayId, SiteId};

/// The alarm that became active nearest before a stop, within the attribution window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirstOut {
    pub id: String,
    pub text: String,
    pub class: Option<String>,
    pub ts_ms: i64,
}

/// A maximal interval in which an asset is `down`. `end_ms` is `None` while it is ongoing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Downtime {
    pub site: SiteId,
    pub gateway: GatewayId,
    pub asset: AssetId,
    pub start_ms: i64,
    pub end_ms: Option<i64>,
    /// The reason code of the state event that started it, if the PLC gave one.
    pub reason: Option<String>,
    pub first_out: Option<FirstOut>,
    /// `unknown` was seen inside the interval.
    pub data_gap: bool,
}

impl Downtime {
    /// Time to repair in milliseconds, for closed events.
    pub fn ttr_ms(&self) -> Option<i64> {
        self.end_ms.map(|e| e - self.start_ms)
    }
}
