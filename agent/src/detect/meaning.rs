//! What a point's value means to the detector: the `meaning` of a Modbus or OPC UA point in the config.
//!
//! Both sources embed [`Meaning`] in their point configs, so the same TOML works for either protocol:
//!
//! ```toml
//! meaning = { state = { preset = "packml" } }           # the asset's machine state
//! meaning = { reason = {} }                             # reason code of the current stop
//! meaning = { alarm = { id = "ESTOP", text = "Emergency stop", severity = 900 } }
//! meaning = { alarm_word = { bits = { 0 = { id = "E1", text = "Guard open" } } } }
//! meaning = { threshold = { id = "HOT", text = "Oil hot", above = 80.0, hysteresis = 2.0 } }
//! meaning = "info"                                      # shown by `probe`, no events
//! ```
//!
//! [`Meaning::check`] validates without I/O and returns plain messages; the caller adds file:line:col.

use serde::Deserialize;
use shiftlens_common::config::HumanDuration;
use shiftlens_common::MachineState;
use std::collections::BTreeMap;
use std::time::Duration;

/// The meaning of one point's value.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Meaning {
    /// The value sets the asset's machine state.
    State(StateMeaning),
    /// Reason code of the asset's current stop (e.g. PackML `StopReason`); attached to non-running states.
    Reason(ReasonMeaning),
    /// OPC UA Machinery `MachineryOperationMode` (0 none, 1 maintenance, 2 setup, 3 processing), read with a
    /// `state` point using the `opcua_machinery` preset.
    OperationMode,
    /// One alarm, active while the value is true (or non-zero).
    Alarm(AlarmMeaning),
    /// Several alarms, one per bit of an integer word.
    AlarmWord(AlarmWordMeaning),
    /// An alarm while a number is above (or below) a limit, with hysteresis.
    /// (Boxed: the largest variant, and rare; every point's detector state holds a `Meaning`.)
    Threshold(Box<ThresholdMeaning>),
    /// No events; the value is only shown by `probe`.
    Info,
}

/// How a state value maps to a machine state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// An integer code looked up in `codes`.
    #[default]
    Codes,
    /// PackML state numbers (ISA-TR88.00.02); `codes` entries override the built-in table.
    Packml,
    /// OPC UA Machinery `MachineryItemState` (0 not available, 1 out of service, 2 executing, 3 not
    /// executing) combined with the asset's `operation_mode` point.
    OpcuaMachinery,
    /// A bool (or non-zero integer): `when_true` while set, no opinion while clear.
    Flag,
    /// An integer word whose set bits name states (`codes` keys are bit numbers); the strongest set bit
    /// wins (down > planned > running > idle); no bit set gives `default` (idle).
    Bits,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateMeaning {
    #[serde(default)]
    pub preset: Preset,
    /// Code (or bit number for `bits`) → state. Keys are integers written as TOML keys.
    #[serde(default)]
    pub codes: BTreeMap<String, MachineState>,
    /// State for codes not in the table (default `unknown`; `idle` for `bits`).
    pub default: Option<MachineState>,
    /// For `flag`: the state while the value is true.
    pub when_true: Option<MachineState>,
    /// A new value must hold this long before it counts.
    pub debounce: Option<HumanDuration>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReasonMeaning {
    /// Optional code → text; unlisted codes are reported as the number. Code 0 means no reason.
    #[serde(default)]
    pub codes: BTreeMap<String, String>,
}

/// An alarm's identity, as it appears in alarm events.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmInfo {
    pub id: String,
    #[serde(default)]
    pub text: String,
    #[serde(default = "default_severity")]
    pub severity: u16,
    /// Alarm class, e.g. `drive` or `network`; classes can require extra skills.
    pub class: Option<String>,
}

/// The severity of an alarm that names none.
pub const DEFAULT_SEVERITY: u16 = 500;

fn default_severity() -> u16 {
    DEFAULT_SEVERITY
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmMeaning {
    pub id: String,
    #[serde(default)]
    pub text: String,
    #[serde(default = "default_severity")]
    pub severity: u16,
    pub class: Option<String>,
    pub debounce: Option<HumanDuration>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmWordMeaning {
    /// Bit number (0-31) → alarm.
    pub bits: BTreeMap<String, AlarmInfo>,
    pub debounce: Option<HumanDuration>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdMeaning {
    pub id: String,
    #[serde(default)]
    pub text: String,
    #[serde(default = "default_severity")]
    pub severity: u16,
    pub class: Option<String>,
    /// Active while the value is above this limit...
    pub above: Option<f64>,
    /// ...or below this one.
    pub below: Option<f64>,
    /// Clears only once the value is back this far inside the limit.
    #[serde(default)]
    pub hysteresis: f64,
    pub debounce: Option<HumanDuration>,
}

impl Meaning {
    /// How long a new value must hold before it counts.
    pub fn debounce(&self) -> Duration {
        let d = match self {
            Meaning::State(m) => m.debounce,
            Meaning::Alarm(m) => m.debounce,
            Meaning::AlarmWord(m) => m.debounce,
            Meaning::Threshold(m) => m.debounce,
            Meaning::Reason(_) | Meaning::OperationMode | Meaning::Info => None,
        };
        d.map_or(Duration::ZERO, |d| d.0)
    }

    /// Whether the meaning needs a number rather than a bool (a word of bits, a code, a limit).
    pub fn needs_number(&self) -> bool {
        match self {
            Meaning::State(m) => m.preset != Preset::Flag,
            Meaning::Reason(_) | Meaning::OperationMode | Meaning::AlarmWord(_) | Meaning::Threshold(_) => true,
            Meaning::Alarm(_) | Meaning::Info => false,
        }
    }

    /// Whether the meaning needs a whole number (codes and bits), so a float point cannot feed it.
    pub fn needs_integer(&self) -> bool {
        self.needs_number() && !matches!(self, Meaning::Threshold(_))
    }

    /// Short text for `probe`.
    pub fn describe(&self) -> String {
        match self {
            Meaning::State(m) => format!("state ({})", format!("{:?}", m.preset).to_lowercase()),
            Meaning::Reason(_) => "reason".into(),
            Meaning::OperationMode => "operation mode".into(),
            Meaning::Alarm(m) => format!("alarm {}", m.id),
            Meaning::AlarmWord(m) => {
                format!("alarm word ({})", m.bits.values().map(|a| a.id.as_str()).collect::<Vec<_>>().join(", "))
            }
            Meaning::Threshold(m) => format!("threshold {}", m.id),
            Meaning::Info => "info".into(),
        }
    }

    /// Checks the meaning on its own; returns every problem as a plain message.
    pub fn check(&self) -> Vec<String> {
        let mut errs = Vec::new();
        match self {
            Meaning::State(m) => {
                for k in m.codes.keys() {
                    match k.parse::<i64>() {
                        Err(_) => errs.push(format!("state code {k:?} is not an integer")),
                        Ok(b) if m.preset == Preset::Bits && !(0..32).contains(&b) => {
                            errs.push(format!("bit {b} is out of range (0-31)"))
                        }
                        Ok(_) => {}
                    }
                }
                match m.preset {
                    Preset::Flag if m.when_true.is_none() => {
                        errs.push("preset `flag` needs `when_true`, e.g. when_true = \"down\"".into())
                    }
                    Preset::Codes | Preset::Bits if m.codes.is_empty() => errs.push(
                        "this preset needs a `codes` table, e.g. codes = { 0 = \"idle\", 1 = \"running\" }".into(),
                    ),
                    Preset::OpcuaMachinery if !m.codes.is_empty() => {
                        errs.push("preset `opcua_machinery` takes no `codes`".into())
                    }
                    _ => {}
                }
                if m.when_true.is_some() && m.preset != Preset::Flag {
                    errs.push("`when_true` only applies to preset `flag`".into());
                }
            }
            Meaning::Reason(m) => {
                for k in m.codes.keys().filter(|k| k.parse::<i64>().is_err()) {
                    errs.push(format!("reason code {k:?} is not an integer"));
                }
            }
            Meaning::AlarmWord(m) => {
                if m.bits.is_empty() {
                    errs.push("`alarm_word` needs at least one bit".into());
                }
                for k in m.bits.keys() {
                    if !k.parse::<u8>().is_ok_and(|b| b < 32) {
                        errs.push(format!("alarm bit {k:?} is out of range (0-31)"));
                    }
                }
                for a in m.bits.values() {
                    check_id(&a.id, &mut errs);
                }
            }
            Meaning::Alarm(m) => check_id(&m.id, &mut errs),
            Meaning::Threshold(m) => {
                check_id(&m.id, &mut errs);
                if m.above.is_none() == m.below.is_none() {
                    errs.push("a threshold needs exactly one of `above` or `below`".into());
                }
                if !(m.hysteresis >= 0.0 && m.hysteresis.is_finite()) {
                    errs.push("`hysteresis` must be a finite number >= 0".into());
                }
            }
            Meaning::OperationMode | Meaning::Info => {}
        }
        errs
    }
}

fn check_id(id: &str, errs: &mut Vec<String>) {
    if id.is_empty() || id.len() > 64 {
        errs.push(format!("alarm id {id:?} must be 1-64 characters"));
    }
}
