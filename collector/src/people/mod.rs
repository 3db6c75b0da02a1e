//! Personnel and competencies: the `[people]` config (raw [`PeopleConfig`], validated once at config load
//! into [`Settings`], which runtime code reads), the plain data model ([`model`]), CSV imports
//! ([`import`]), rotation rosters ([`roster`]) and the `import` / `report` commands ([`cli`]).
//!
//! Invariants: every instant is UTC milliseconds; local dates and times from CSVs and rotation patterns
//! are resolved in the site's IANA time zone when they are read, so DST is handled in one place
//! ([`roster::resolve_local`]). Nothing here writes SQL: persistence lives in `store::people`.

pub mod cli;
pub mod import;
pub mod model;
pub mod roster;

pub use model::{
    cert_valid_at, AlarmClass, Asset, Initiative, Need, OnShift, Person, PersonSkill, Personnel, Requirement,
    RosterEntry, RosterKind, Rotation, Skill, WorkOrder,
};

use chrono::NaiveTime;
use chrono_tz::Tz;
use serde::Deserialize;
use shiftlens_common::config::{ConfigError, ConfigFile, HumanDuration, Spanned};
use std::time::Duration;

/// `[people]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeopleConfig {
    /// The site's IANA time zone (`Europe/Berlin`); rotation shifts and CSV local dates are in it. Default UTC.
    pub timezone: Option<Spanned<String>>,
    /// Local start of the first shift of a day (`06:00`); 12 h shifts start then and 12 h later, 8 h shifts
    /// then, 8 h and 16 h later. Default 06:00.
    pub day_start: Option<Spanned<String>>,
    /// A work order matches a downtime event on the same asset opened at most this long before it. Default 1h.
    pub work_order_window: Option<HumanDuration>,
    /// Reports about people show only groups of at least this many people (1 = no limit).
    pub min_group_size: Option<Spanned<usize>>,
    /// Replace person ids and names by stable pseudonyms in reports.
    #[serde(default)]
    pub pseudonymize: bool,
    /// Fewer covered events than this on an asset: avoidable hours use the skill's covered MTTR. Default 5.
    pub min_baseline_events: Option<usize>,
    /// Strength of the shrinkage toward the overall mean, in events. Default 5.
    pub shrink_events: Option<f64>,
    /// Skills required by assets whose cost per hour is at or above this quantile are critical. Default 0.75.
    pub critical_cost_quantile: Option<Spanned<f64>>,
    /// Recertification horizon. Default 90d.
    pub recert_horizon: Option<HumanDuration>,
    /// The currency of the assets' `cost_per_hour`, shown with money on the dashboard (`EUR`, `€`, `USD`).
    /// Default none: money reads "cost units". Here rather than in a `[site]` section, which the collector
    /// has no other use for: costs come with the personnel data.
    pub currency: Option<Spanned<String>>,
    /// A stop on the same asset with the same first-out alarm as one that ended at most this long before
    /// is a repeat incident. Default 7d.
    pub repeat_window: Option<HumanDuration>,
}

/// `[people]` with defaults applied and values checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub tz: Tz,
    pub day_start: NaiveTime,
    pub work_order_window_ms: i64,
    pub min_group_size: usize,
    pub pseudonymize: bool,
    pub min_baseline_events: usize,
    pub shrink_events: f64,
    pub critical_cost_quantile: f64,
    pub recert_horizon_ms: i64,
    /// `currency`, empty when not configured.
    pub currency: String,
    /// `repeat_window` in ms.
    pub repeat_window_ms: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            tz: Tz::UTC,
            day_start: NaiveTime::from_hms_opt(6, 0, 0).unwrap_or(NaiveTime::MIN),
            work_order_window_ms: 3_600_000,
            min_group_size: 1,
            pseudonymize: false,
            min_baseline_events: 5,
            shrink_events: 5.0,
            critical_cost_quantile: 0.75,
            recert_horizon_ms: 90 * 86_400_000,
            currency: String::new(),
            repeat_window_ms: 7 * 86_400_000,
        }
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl PeopleConfig {
    /// The validated `[people]`, built once when the config is loaded ([`crate::Config::people_settings`]);
    /// each bad value is added to `errors`, located in `file` (the load then fails, so the defaults left in
    /// its place are never used).
    pub fn validated(&self, file: &ConfigFile, errors: &mut Vec<ConfigError>) -> Settings {
        match self.settings(file) {
            Ok(s) => s,
            Err(e) => {
                errors.extend(e);
                Settings::default()
            }
        }
    }

    /// The checked settings.
    ///
    /// # Errors
    /// Each bad value, located in `file`.
    pub fn settings(&self, file: &ConfigFile) -> Result<Settings, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut err = |span: std::ops::Range<usize>, msg: String| errors.push(file.error_at(span, msg));
        let mut s = Settings::default();
        if let Some(tz) = &self.timezone {
            match tz.get_ref().parse::<Tz>() {
                Ok(t) => s.tz = t,
                Err(_) => err(
                    tz.span(),
                    format!("unknown time zone {:?}: expected an IANA name such as \"Europe/Berlin\"", tz.get_ref()),
                ),
            }
        }
        if let Some(d) = &self.day_start {
            match NaiveTime::parse_from_str(d.get_ref(), "%H:%M") {
                Ok(t) => s.day_start = t,
                Err(_) => err(d.span(), format!("invalid day_start {:?}: expected HH:MM, e.g. \"06:00\"", d.get_ref())),
            }
        }
        if let Some(m) = &self.min_group_size {
            if *m.get_ref() == 0 {
                err(m.span(), "min_group_size must be at least 1".into());
            }
            s.min_group_size = (*m.get_ref()).max(1);
        }
        if let Some(q) = &self.critical_cost_quantile {
            let v = *q.get_ref();
            if !(0.0..=1.0).contains(&v) {
                err(q.span(), format!("critical_cost_quantile {v} is out of range (0-1)"));
            }
            s.critical_cost_quantile = v;
        }
        if let Some(c) = &self.currency {
            let v = c.get_ref().trim();
            if v.is_empty() || v.chars().count() > 8 || v.chars().any(char::is_control) {
                err(
                    c.span(),
                    format!(
                        "invalid currency {:?}: expected a code or sign of 1 to 8 characters, e.g. \"EUR\" or \"€\"",
                        c.get_ref()
                    ),
                );
            }
            s.currency = v.to_string();
        }
        s.work_order_window_ms = self.work_order_window.map_or(s.work_order_window_ms, |d| ms(d.0));
        s.repeat_window_ms = self.repeat_window.map_or(s.repeat_window_ms, |d| ms(d.0));
        s.recert_horizon_ms = self.recert_horizon.map_or(s.recert_horizon_ms, |d| ms(d.0));
        s.pseudonymize = self.pseudonymize;
        s.min_baseline_events = self.min_baseline_events.unwrap_or(s.min_baseline_events);
        s.shrink_events = self.shrink_events.unwrap_or(s.shrink_events).max(0.0);
        if errors.is_empty() {
            Ok(s)
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod currency_tests {
    use super::*;

    #[test]
    fn currency_and_repeat_window_are_read_and_a_bad_currency_names_its_place() {
        let ok = ConfigFile::from_text("c.toml", "currency = \"EUR\"\nrepeat_window = \"14d\"\n");
        let s = ok.parse::<PeopleConfig>().unwrap().settings(&ok).unwrap();
        assert_eq!((s.currency.as_str(), s.repeat_window_ms), ("EUR", 14 * 86_400_000));
        assert_eq!(Settings::default().repeat_window_ms, 7 * 86_400_000);
        let bad = ConfigFile::from_text("c.toml", "timezone = \"UTC\"\ncurrency = \"\"\n");
        let e = bad.parse::<PeopleConfig>().unwrap().settings(&bad).unwrap_err();
        assert_eq!((e[0].line, e[0].col), (2, 12), "{e:?}");
        assert!(e[0].message.contains("invalid currency"), "{e:?}");
    }

    #[test]
    fn the_config_load_validates_people_once_and_locates_its_errors() {
        let ok = ConfigFile::from_text("c.toml", "[people]\ntimezone = \"Europe/Berlin\"\ncurrency = \"EUR\"\n");
        let cfg = crate::Config::from_file(&ok).unwrap();
        assert_eq!((cfg.people_settings.tz, cfg.people_settings.currency.as_str()), (chrono_tz::Europe::Berlin, "EUR"));
        let bad = ConfigFile::from_text("c.toml", "[people]\ntimezone = \"Mars/Base\"\nmin_group_size = 0\n");
        let e = crate::Config::from_file(&bad).unwrap_err().to_string();
        assert!(e.contains("c.toml:2:12: unknown time zone \"Mars/Base\""), "{e}");
        assert!(e.contains("c.toml:3:18: min_group_size must be at least 1"), "{e}");
    }
}
