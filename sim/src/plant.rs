//! The simulated plant's state, shared by both protocol servers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// One asset's points as a PLC would hold them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AssetPoints {
    /// State code: 0 idle, 1 running, 2 down, 3 planned stop (the sim's plain code table).
    pub state: u16,
    /// Reason code for the current stop, 0 when none.
    pub reason: u16,
    /// Alarm bits: bit n set means alarm n is active.
    pub alarms: u16,
    /// A temperature in °C, for threshold alarms (Modbus: f32 and scaled integers).
    pub temperature: f32,
    /// A parts counter, for 32-bit registers.
    pub parts: u32,
}

/// How a protocol server should misbehave, for fault tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// Drop every new and existing connection.
    pub drop_connections: bool,
    /// Answer every request with this Modbus exception code (e.g. 4 = server device failure).
    pub modbus_exception: Option<u8>,
    /// Delay every answer by this many milliseconds.
    pub delay_ms: u64,
    /// Report values with a bad OPC UA status code.
    pub bad_status: bool,
}

/// The OPC UA Alarms & Conditions type a condition has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConditionKind {
    /// `AlarmConditionType`
    #[default]
    Alarm,
    /// `OffNormalAlarmType` (a discrete value away from its normal state)
    OffNormal,
}

/// One alarm condition as an SCADA server holds it (OPC UA Alarms & Conditions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// The SourceName (and the SourceNode's string id) of the condition's events.
    pub source: String,
    pub kind: ConditionKind,
    /// 1-1000
    pub severity: u16,
    pub message: String,
    pub active: bool,
    pub acked: bool,
    pub shelved: bool,
    pub suppressed: bool,
}

impl Condition {
    /// A new active, unacknowledged condition.
    pub fn raised(source: &str, kind: ConditionKind, severity: u16, message: &str) -> Self {
        Self {
            source: source.into(),
            kind,
            severity,
            message: message.into(),
            active: true,
            acked: false,
            shelved: false,
            suppressed: false,
        }
    }

    /// Part 9's Retain: the condition is of interest (active, or inactive but not yet acknowledged).
    pub fn retain(&self) -> bool {
        self.active || !self.acked
    }
}

#[derive(Debug, Default)]
struct Inner {
    assets: BTreeMap<String, AssetPoints>,
    faults: Faults,
    /// Alarm conditions by condition name.
    conditions: BTreeMap<String, Condition>,
}

/// The plant: a map from asset id to its points, plus fault switches. Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct Plant {
    inner: Arc<Mutex<Inner>>,
}

impl Plant {
    /// A plant with the given asset ids, all idle.
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(assets: I) -> Self {
        let plant = Self::default();
        {
            let mut g = plant.lock();
            for a in assets {
                g.assets.insert(a.into(), AssetPoints::default());
            }
        }
        plant
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the plain data inconsistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asset ids in order; an asset's index is its Modbus block number.
    pub fn asset_ids(&self) -> Vec<String> {
        self.lock().assets.keys().cloned().collect()
    }

    /// Number of assets.
    pub fn len(&self) -> usize {
        self.lock().assets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The points of the asset at index `i` (see [`Plant::asset_ids`]).
    pub fn nth(&self, i: usize) -> Option<AssetPoints> {
        self.lock().assets.values().nth(i).cloned()
    }

    pub fn get(&self, asset: &str) -> Option<AssetPoints> {
        self.lock().assets.get(asset).cloned()
    }

    /// Changes one asset's points; returns false when the asset does not exist.
    pub fn update(&self, asset: &str, f: impl FnOnce(&mut AssetPoints)) -> bool {
        self.lock().assets.get_mut(asset).map(f).is_some()
    }

    pub fn faults(&self) -> Faults {
        self.lock().faults.clone()
    }

    pub fn set_faults(&self, faults: Faults) {
        self.lock().faults = faults;
    }

    /// Every alarm condition by name.
    pub fn conditions(&self) -> BTreeMap<String, Condition> {
        self.lock().conditions.clone()
    }

    /// Sets (raises, or replaces) a condition.
    pub fn set_condition(&self, name: &str, condition: Condition) {
        self.lock().conditions.insert(name.to_string(), condition);
    }

    /// Changes a condition; returns false when there is none of that name.
    pub fn update_condition(&self, name: &str, f: impl FnOnce(&mut Condition)) -> bool {
        self.lock().conditions.get_mut(name).map(f).is_some()
    }
}
