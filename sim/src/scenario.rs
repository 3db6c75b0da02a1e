//! Scenario files: what the simulated plant does over time (format documented in `config/scenario.toml`).
//!
//! A scenario is parsed (serde, `deny_unknown_fields`, errors with file:line:col), turned into a time-ordered
//! list of [`Action`]s by [`Scenario::timeline`] (pure and deterministic: random faults come from the seed),
//! and played by [`play`] against a [`Plant`], with `time_scale` compressing time.

use crate::plant::{Condition, ConditionKind, Faults, Plant};
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use shiftlens_common::config::{ConfigError, ConfigFile, HumanDuration};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Asset ids; the order of the sorted ids gives each asset's Modbus block.
    pub assets: Vec<String>,
    /// Scenario seconds per real second (60 plays an hour in a minute). Default 1.
    #[serde(default = "one")]
    pub time_scale: f64,
    /// Seed for the random faults, so a scenario plays the same every time.
    #[serde(default)]
    pub seed: u64,
    /// Random faults stop being generated after this (scenario time); default 1h.
    #[serde(default = "default_duration")]
    pub duration: HumanDuration,
    /// State every asset starts in (default running).
    #[serde(default = "running")]
    pub initial_state: StateCode,
    #[serde(default, rename = "step")]
    pub steps: Vec<Step>,
    #[serde(default, rename = "random")]
    pub random: Vec<RandomFaults>,
}

fn one() -> f64 {
    1.0
}
fn default_duration() -> HumanDuration {
    HumanDuration(Duration::from_secs(3600))
}
fn running() -> StateCode {
    StateCode::Running
}

/// A machine state as the sim's code table writes it (0 idle, 1 running, 2 down, 3 planned).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateCode {
    Idle,
    Running,
    Down,
    Planned,
}

impl StateCode {
    pub fn code(self) -> u16 {
        match self {
            StateCode::Idle => 0,
            StateCode::Running => 1,
            StateCode::Down => 2,
            StateCode::Planned => 3,
        }
    }
}

/// One timed step: `at` (scenario time from the start), then any of an asset's points and fault switches.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub at: HumanDuration,
    pub asset: Option<String>,
    pub state: Option<StateCode>,
    pub reason: Option<u16>,
    /// Active alarm bits (0-15); replaces the alarm word.
    pub alarms: Option<Vec<u8>>,
    pub temperature: Option<f32>,
    pub parts: Option<u32>,
    /// Replaces the plant's fault switches (an empty table clears them).
    pub faults: Option<FaultSpec>,
    /// Restart the protocol servers, staying down this long.
    pub restart: Option<HumanDuration>,
    /// An OPC UA alarm condition changes: `{ name = "Overtemp", do = "raise", severity = 800, text = "..." }`.
    pub condition: Option<ConditionStep>,
}

/// What a step does to an alarm condition (OPC UA Alarms & Conditions).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionStep {
    /// The ConditionName; with the source it makes the ConditionId `{source}.{name}`.
    pub name: String,
    /// SourceName of the condition; default the step's `asset`.
    pub source: Option<String>,
    #[serde(rename = "do")]
    pub action: ConditionAction,
    #[serde(default)]
    pub kind: ConditionKind,
    /// For `raise`: 1-1000, default 500.
    pub severity: Option<u16>,
    /// For `raise`: the Message.
    pub text: Option<String>,
}

/// `raise` (active, unacknowledged), `clear` (inactive), `ack`, `shelve`, `unshelve`, `suppress`, `unsuppress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConditionAction {
    Raise,
    Clear,
    Ack,
    Shelve,
    Unshelve,
    Suppress,
    Unsuppress,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    #[serde(default)]
    pub drop_connections: bool,
    pub modbus_exception: Option<u8>,
    pub delay: Option<HumanDuration>,
    #[serde(default)]
    pub bad_status: bool,
}

/// Breakdowns at random: exponential gaps with mean `mean_interval`, each lasting (exponentially) about
/// `mean_duration`, taking a random one of `reasons` and `alarms`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandomFaults {
    /// Assets it may hit (default: all).
    #[serde(default)]
    pub assets: Vec<String>,
    pub mean_interval: HumanDuration,
    pub mean_duration: HumanDuration,
    #[serde(default)]
    pub reasons: Vec<u16>,
    #[serde(default)]
    pub alarms: Vec<u8>,
}

/// What happens at one moment of a scenario.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Set {
        asset: String,
        state: Option<u16>,
        reason: Option<u16>,
        alarms: Option<u16>,
        temperature: Option<f32>,
        parts: Option<u32>,
    },
    Faults(Faults),
    Restart(Duration),
    /// An alarm condition changes; `source` is resolved (the step's asset when not given).
    Condition {
        source: String,
        step: ConditionStep,
    },
}

impl Scenario {
    /// Parses and checks a scenario file.
    ///
    /// # Errors
    /// Syntax, unknown keys, unknown assets and bad values, located.
    pub fn parse(file: &ConfigFile) -> Result<Self, ConfigError> {
        let s: Scenario = file.parse()?;
        let at = |m: String| file.error_at(0..0, m);
        if s.assets.is_empty() {
            return Err(at("a scenario needs at least one asset".into()));
        }
        if !(s.time_scale.is_finite() && s.time_scale > 0.0) {
            return Err(at("time_scale must be a positive number".into()));
        }
        let known = |a: &String| s.assets.contains(a);
        for st in &s.steps {
            if let Some(a) = st.asset.as_ref().filter(|a| !known(a)) {
                return Err(at(format!("step at {}: unknown asset {a:?}", st.at)));
            }
            if st.asset.is_none() && (st.state.is_some() || st.reason.is_some() || st.alarms.is_some()) {
                return Err(at(format!("step at {}: state, reason and alarms need `asset`", st.at)));
            }
            if st.alarms.iter().flatten().any(|b| *b > 15) {
                return Err(at(format!("step at {}: alarm bits are 0-15", st.at)));
            }
        }
        for r in &s.random {
            if r.mean_interval.0.is_zero() || r.mean_duration.0.is_zero() {
                return Err(at("random faults need mean_interval and mean_duration above 0".into()));
            }
            if let Some(a) = r.assets.iter().find(|a| !known(a)) {
                return Err(at(format!("random faults: unknown asset {a:?}")));
            }
            if r.alarms.iter().any(|b| *b > 15) {
                return Err(at("random faults: alarm bits are 0-15".into()));
            }
        }
        Ok(s)
    }

    /// Every action with its scenario time, in time order (steps before random faults at the same time).
    pub fn timeline(&self) -> Vec<(Duration, Action)> {
        let mut out: Vec<(Duration, Action)> = Vec::new();
        for a in &self.assets {
            out.push((Duration::ZERO, set(a, Some(self.initial_state.code()), Some(0), Some(0))));
        }
        for st in &self.steps {
            if let Some(asset) = &st.asset {
                let alarms = st.alarms.as_ref().map(|bits| bits.iter().fold(0u16, |w, b| w | 1 << b));
                out.push((
                    st.at.0,
                    Action::Set {
                        asset: asset.clone(),
                        state: st.state.map(StateCode::code),
                        reason: st.reason,
                        alarms,
                        temperature: st.temperature,
                        parts: st.parts,
                    },
                ));
            }
            if let Some(f) = &st.faults {
                let faults = Faults {
                    drop_connections: f.drop_connections,
                    modbus_exception: f.modbus_exception,
                    delay_ms: f.delay.map_or(0, |d| u64::try_from(d.0.as_millis()).unwrap_or(u64::MAX)),
                    bad_status: f.bad_status,
                };
                out.push((st.at.0, Action::Faults(faults)));
            }
            if let Some(d) = st.restart {
                out.push((st.at.0, Action::Restart(d.0)));
            }
            if let Some(c) = &st.condition {
                let source = c.source.clone().or_else(|| st.asset.clone()).unwrap_or_else(|| "plant".into());
                out.push((st.at.0, Action::Condition { source, step: c.clone() }));
            }
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed);
        let exp = |rng: &mut rand::rngs::StdRng, mean: Duration| mean.mul_f64(-(1.0 - rng.random::<f64>()).ln());
        for r in &self.random {
            let assets = if r.assets.is_empty() { &self.assets } else { &r.assets };
            let mut t = Duration::ZERO;
            loop {
                t += exp(&mut rng, r.mean_interval.0);
                if t >= self.duration.0 {
                    break;
                }
                let len = exp(&mut rng, r.mean_duration.0);
                let pick = |rng: &mut rand::rngs::StdRng, n: usize| rng.random_range(0..n.max(1));
                let asset = &assets[pick(&mut rng, assets.len())];
                let reason = r.reasons.get(pick(&mut rng, r.reasons.len())).copied().unwrap_or(0);
                let alarm = r.alarms.get(pick(&mut rng, r.alarms.len())).map_or(0, |b| 1u16 << b);
                out.push((t, set(asset, Some(StateCode::Down.code()), Some(reason), Some(alarm))));
                out.push((t + len, set(asset, Some(StateCode::Running.code()), Some(0), Some(0))));
            }
        }
        out.sort_by_key(|(t, _)| *t);
        out
    }
}

fn set(asset: &str, state: Option<u16>, reason: Option<u16>, alarms: Option<u16>) -> Action {
    Action::Set { asset: asset.to_string(), state, reason, alarms, temperature: None, parts: None }
}

/// Applies one action to the plant; `restart` restarts the protocol servers.
pub fn apply(plant: &Plant, action: &Action, restart: &(dyn Fn(Duration) + Send + Sync)) {
    match action {
        Action::Set { asset, state, reason, alarms, temperature, parts } => {
            plant.update(asset, |p| {
                p.state = state.unwrap_or(p.state);
                p.reason = reason.unwrap_or(p.reason);
                p.alarms = alarms.unwrap_or(p.alarms);
                p.temperature = temperature.unwrap_or(p.temperature);
                p.parts = parts.unwrap_or(p.parts);
            });
        }
        Action::Faults(f) => plant.set_faults(f.clone()),
        Action::Restart(d) => restart(*d),
        Action::Condition { source, step } => condition(plant, source, step),
    }
}

/// Applies a condition step: `raise` makes (or re-raises) the condition, the others change an existing one.
pub fn condition(plant: &Plant, source: &str, step: &ConditionStep) {
    let name = step.name.as_str();
    match step.action {
        ConditionAction::Raise => {
            let severity = step.severity.unwrap_or(500);
            let text = step.text.clone().unwrap_or_else(|| name.to_string());
            let mut c = Condition::raised(source, step.kind, severity, &text);
            if let Some(old) = plant.conditions().get(name) {
                c.shelved = old.shelved;
                c.suppressed = old.suppressed;
            }
            plant.set_condition(name, c);
        }
        action => {
            let found = plant.update_condition(name, |c| match action {
                ConditionAction::Clear => c.active = false,
                ConditionAction::Ack => c.acked = true,
                ConditionAction::Shelve => c.shelved = true,
                ConditionAction::Unshelve => c.shelved = false,
                ConditionAction::Suppress => c.suppressed = true,
                ConditionAction::Unsuppress => c.suppressed = false,
                ConditionAction::Raise => {}
            });
            if !found {
                tracing::warn!(condition = %name, ?action, "scenario step for a condition never raised; ignored");
            }
        }
    }
}

/// Plays the scenario in real time divided by `time_scale`; returns after the last action.
pub async fn play(scenario: &Scenario, plant: Plant, restart: impl Fn(Duration) + Send + Sync) {
    let start = tokio::time::Instant::now();
    for (t, action) in scenario.timeline() {
        tokio::time::sleep_until(start + t.div_f64(scenario.time_scale)).await;
        tracing::info!(at_ms = t.as_millis(), ?action, "scenario step");
        apply(&plant, &action, &restart);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"
assets = ["press-1", "press-2"]
seed = 7
duration = "1h"

[[step]]
at = "5s"
asset = "press-1"
state = "down"
reason = 12
alarms = [3, 0]

[[step]]
at = "8s"
faults = { modbus_exception = 4 }

[[random]]
mean_interval = "10m"
mean_duration = "2m"
reasons = [5, 6]
alarms = [1]
"#;

    #[test]
    fn a_scenario_becomes_a_deterministic_timeline() {
        let s = Scenario::parse(&ConfigFile::from_text("s.toml", TEXT)).unwrap();
        let t = s.timeline();
        assert_eq!(t, s.timeline(), "the same seed plays the same faults");
        assert!(t.windows(2).all(|w| w[0].0 <= w[1].0));
        let step = t.iter().find(|(at, _)| *at == Duration::from_secs(5)).unwrap();
        assert_eq!(
            step.1,
            Action::Set {
                asset: "press-1".into(),
                state: Some(2),
                reason: Some(12),
                alarms: Some(0b1001),
                temperature: None,
                parts: None
            }
        );
        assert!(t.iter().any(|(_, a)| matches!(a, Action::Faults(f) if f.modbus_exception == Some(4))));
        let downs = t
            .iter()
            .filter(|(at, a)| {
                *at > Duration::ZERO && matches!(a, Action::Set { state: Some(2), reason: Some(5 | 6), .. })
            })
            .count();
        assert!((1..20).contains(&downs), "about six random breakdowns in an hour: {downs}");
    }

    #[test]
    fn the_documented_example_parses() {
        let text = include_str!("../../config/scenario.toml");
        let s = Scenario::parse(&ConfigFile::from_text("config/scenario.toml", text)).unwrap();
        assert_eq!(s.assets.len(), 3);
        assert!(s.timeline().iter().any(|(_, a)| matches!(a, Action::Restart(d) if d.as_secs() == 3)));
        // The condition steps raise, acknowledge and clear the press's alarm condition.
        let plant = Plant::new(s.assets.clone());
        let mut states = Vec::new();
        for (_, a) in s.timeline().iter().filter(|(_, a)| matches!(a, Action::Condition { .. })) {
            apply(&plant, a, &|_| {});
            let c = plant.conditions().remove("Overtemp").unwrap();
            assert_eq!((c.source.as_str(), c.kind, c.severity), ("press-1", ConditionKind::OffNormal, 800));
            states.push((c.active, c.acked, c.retain()));
        }
        assert_eq!(states, [(true, false, true), (true, true, true), (false, true, false)]);
    }

    #[test]
    fn bad_scenarios_are_explained() {
        let e = Scenario::parse(&ConfigFile::from_text(
            "s.toml",
            "assets = [\"a\"]\n[[step]]\nat = \"1s\"\nasset = \"b\"\n",
        ))
        .unwrap_err();
        assert!(e.message.contains("unknown asset \"b\""), "{e}");
        let e = Scenario::parse(&ConfigFile::from_text(
            "s.toml",
            "assets = [\"a\"]\n[[step]]\nat = \"1s\"\nstate = \"broken\"\n",
        ))
        .unwrap_err();
        assert_eq!(e.line, 4, "{e}");
    }
}
