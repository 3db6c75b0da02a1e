//! What a request (or the `report` command) asks for: the URL [`Params`] parsed into a [`Filter`] (a
//! window and site, line, asset and crew) and report [`Options`], within [`Bounds`] so that no request
//! sizes work from an unchecked number. Time windows are `[from, to)` in UTC ms.

use super::catalogue::Kind;
use super::QueryError;
use crate::feed;
use crate::join::JoinedEvent;
use crate::people::import::parse_time as parse_local;
use crate::people::{Personnel, Settings};
use crate::report::coverage::GroupBy;
use crate::report::mttr::Dim;
use crate::report::pareto::ParetoBy;
use crate::report::recert;
use crate::report::whatif::Change;
use serde::Deserialize;

pub(crate) const DAY_MS: i64 = 86_400_000;

/// The earliest time a request may name: 2000-01-01T00:00:00Z.
pub const MIN_TIME_MS: i64 = 946_684_800_000;
/// The latest time a request may name: 2200-01-01T00:00:00Z.
pub const MAX_TIME_MS: i64 = 7_258_118_400_000;
/// Default `[http] max_window`: three years (and a leap day).
pub const DEFAULT_MAX_WINDOW_DAYS: u64 = 3 * 365 + 1;
/// The largest `[http] max_window` the config accepts: the whole range of times.
pub const MAX_WINDOW_DAYS: u64 = ((MAX_TIME_MS - MIN_TIME_MS) / DAY_MS) as u64;
/// Default `[http] max_rows`.
pub const DEFAULT_MAX_ROWS: usize = 10_000;
/// The largest `offset` a request may give.
pub const MAX_OFFSET: usize = 100_000_000;

/// What one request may ask for, so that no request sizes work from an unchecked number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// The longest window `[from, to)`.
    pub max_window_ms: i64,
    /// The largest `limit`, and the most feed records one answer holds.
    pub max_rows: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Self { max_window_ms: DEFAULT_MAX_WINDOW_DAYS as i64 * DAY_MS, max_rows: DEFAULT_MAX_ROWS }
    }
}

/// The query string every page and API call understands. Empty values count as absent (HTML forms send them).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Params {
    pub site: Option<String>,
    pub line: Option<String>,
    pub asset: Option<String>,
    pub crew: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub format: Option<String>,
    pub group: Option<String>,
    pub dim: Option<String>,
    pub by: Option<String>,
    pub per_person: Option<String>,
    pub change: Option<String>,
    pub limit: Option<String>,
    pub offset: Option<String>,
    /// Recert: the horizon (`30d`); default `[people] recert_horizon`.
    pub horizon: Option<String>,
}

fn some(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// Which rows: a window and optional site, line, asset and crew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub site: Option<String>,
    pub line: Option<String>,
    pub asset: Option<String>,
    pub crew: Option<String>,
    pub from_ms: i64,
    pub to_ms: i64,
}

/// A time from the URL: RFC 3339, milliseconds, or a date / date-time in the site's time zone, between
/// [`MIN_TIME_MS`] and [`MAX_TIME_MS`].
///
/// # Errors
/// 400 naming the value and the formats, or the range.
pub fn parse_time(settings: &Settings, name: &str, v: &str) -> Result<i64, QueryError> {
    let ms = feed::parse_time(v).ok().or_else(|| parse_local(settings.tz, v)).ok_or_else(|| {
        QueryError::invalid(format!(
            "invalid {name} {v:?}: expected a date (2025-03-01), a local date-time (2025-03-01T06:00), RFC 3339 or milliseconds"
        ))
    })?;
    if !(MIN_TIME_MS..=MAX_TIME_MS).contains(&ms) {
        return Err(QueryError::invalid(format!(
            "{name} {v:?} is out of range: times must lie between 2000-01-01 and 2200-01-01"
        )));
    }
    Ok(ms)
}

impl Filter {
    /// The filter of `p`; the window defaults to the 90 days before `now_ms` and may be at most
    /// `bounds.max_window_ms` long.
    ///
    /// # Errors
    /// 400 for an unreadable or out-of-range time, an empty window or one longer than the bound.
    pub fn parse(p: &Params, settings: &Settings, now_ms: i64, bounds: &Bounds) -> Result<Self, QueryError> {
        let to_ms = some(&p.to).map(|v| parse_time(settings, "to", v)).transpose()?.unwrap_or(now_ms);
        let from_ms = some(&p.from)
            .map(|v| parse_time(settings, "from", v))
            .transpose()?
            .unwrap_or(to_ms.saturating_sub(90 * DAY_MS));
        if from_ms >= to_ms {
            return Err(QueryError::invalid("from must be before to"));
        }
        let len = to_ms.saturating_sub(from_ms);
        if len > bounds.max_window_ms {
            let day = |ms: i64| (ms + DAY_MS - 1) / DAY_MS;
            return Err(QueryError::invalid(format!(
                "the window from {} to {} is {} days long; at most {} days may be asked for at once ([http] max_window): narrow from and to",
                feed::rfc3339(from_ms),
                feed::rfc3339(to_ms),
                day(len),
                bounds.max_window_ms / DAY_MS
            )));
        }
        let s = |v: &Option<String>| some(v).map(str::to_string);
        Ok(Self { site: s(&p.site), line: s(&p.line), asset: s(&p.asset), crew: s(&p.crew), from_ms, to_ms })
    }

    pub fn scopes_assets(&self) -> bool {
        self.site.is_some() || self.line.is_some() || self.asset.is_some()
    }

    /// Whether an asset (of `site`) is in scope.
    pub fn asset_in_scope(&self, people: &Personnel, site: &str, asset: &str) -> bool {
        let line = people.asset(asset).map(|a| a.line.as_str());
        self.site.as_deref().is_none_or(|s| s == site)
            && self.asset.as_deref().is_none_or(|a| a == asset)
            && self.line.as_deref().is_none_or(|l| Some(l) == line)
    }

    pub fn event_in_scope(&self, people: &Personnel, e: &JoinedEvent) -> bool {
        self.asset_in_scope(people, &e.site, &e.asset)
            && self.crew.as_deref().is_none_or(|c| e.crew.as_deref() == Some(c))
    }
}

/// Report options: from the URL ([`Options::parse`]) or the `report` command's flags.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub group: GroupBy,
    pub dim: Dim,
    pub by: ParetoBy,
    pub per_person: bool,
    pub change: Option<Change>,
    /// Recert: the look-ahead in ms, overriding `[people] recert_horizon`.
    pub horizon_ms: Option<i64>,
    pub limit: Option<usize>,
    pub offset: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            group: GroupBy::Crew,
            dim: Dim::Asset,
            by: ParetoBy::Asset,
            per_person: false,
            change: None,
            horizon_ms: None,
            limit: None,
            offset: 0,
        }
    }
}

/// One of a [`clap::ValueEnum`]'s names, `default` when absent.
fn choice<T: clap::ValueEnum + Copy>(name: &str, v: Option<&str>, default: T) -> Result<T, QueryError> {
    let Some(v) = v else { return Ok(default) };
    T::from_str(v, false).map_err(|_| {
        let names: Vec<String> = T::value_variants()
            .iter()
            .filter_map(|x| x.to_possible_value())
            .map(|p| p.get_name().to_string())
            .collect();
        QueryError::invalid(format!("invalid {name} {v:?}: expected one of {}", names.join(", ")))
    })
}

impl Options {
    /// # Errors
    /// An unknown choice, a bad number (`limit` above `bounds.max_rows`, `offset` above [`MAX_OFFSET`]),
    /// an unreadable `horizon`, or a what-if without `change`.
    pub fn parse(p: &Params, kind: Kind, bounds: &Bounds) -> Result<Self, QueryError> {
        let number = |name: &str, v: Option<&str>, max: usize, why: &str| {
            v.map(|v| match v.parse::<usize>() {
                Ok(n) if n <= max => Ok(n),
                Ok(_) => Err(QueryError::invalid(format!("{name} {v} is too large: at most {max}{why}"))),
                Err(_) => Err(QueryError::invalid(format!(
                    "invalid {name} {v:?}: expected a whole number from 0 to {max}{why}"
                ))),
            })
            .transpose()
        };
        let change = some(&p.change).map(|c| c.parse::<Change>().map_err(QueryError::invalid)).transpose()?;
        if kind == Kind::Whatif && change.is_none() {
            return Err(QueryError::invalid(
                "whatif needs change=person:skill:level (add) or change=person:skill (remove)",
            ));
        }
        // Only the certificates report reads a horizon; elsewhere the value is ignored, as before.
        let horizon_ms = match (kind, some(&p.horizon)) {
            (Kind::Recert, Some(v)) => {
                Some(recert::parse_horizon(v).map_err(|e| QueryError::invalid(format!("invalid horizon {v:?}: {e}")))?)
            }
            _ => None,
        };
        let per_person = match some(&p.per_person) {
            None | Some("false") => false,
            Some("true") => true,
            Some(v) => {
                return Err(QueryError::invalid(format!("invalid per_person {v:?}: expected one of true, false")))
            }
        };
        Ok(Self {
            group: choice("group", some(&p.group), GroupBy::Crew)?,
            dim: choice("dim", some(&p.dim), Dim::Asset)?,
            by: choice("by", some(&p.by), ParetoBy::Asset)?,
            per_person,
            change,
            horizon_ms,
            limit: number("limit", some(&p.limit), bounds.max_rows, " ([http] max_rows)")?,
            offset: number("offset", some(&p.offset), MAX_OFFSET, "")?.unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings { tz: chrono_tz::Europe::Berlin, ..Settings::default() }
    }

    #[test]
    fn times_read_as_dates_in_site_time_rfc3339_or_millis() {
        let s = settings();
        assert_eq!(parse_time(&s, "from", "1700000000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_time(&s, "from", "2025-01-01T00:00:00Z"), Ok(1_735_689_600_000));
        // Midnight in Berlin is 23:00 UTC the day before in winter.
        assert_eq!(parse_time(&s, "from", "2025-01-01"), Ok(1_735_689_600_000 - 3_600_000));
        let e = parse_time(&s, "to", "yesterday").unwrap_err();
        assert_eq!(e, QueryError::Invalid(e.message()));
        assert!(e.message().contains("invalid to \"yesterday\""), "{}", e.message());
    }

    #[test]
    fn window_defaults_to_90_days_and_must_not_be_empty() {
        let s = settings();
        let b = Bounds::default();
        let now = MIN_TIME_MS + 100 * DAY_MS;
        let f = Filter::parse(&Params::default(), &s, now, &b).unwrap();
        assert_eq!((f.from_ms, f.to_ms), (now - 90 * DAY_MS, now));
        let p = Params { from: Some("2025-02-01".into()), to: Some("2025-01-01".into()), ..Params::default() };
        assert!(Filter::parse(&p, &s, now, &b).is_err());
        let blank = Params { crew: Some("".into()), ..Params::default() };
        assert_eq!(Filter::parse(&blank, &s, now, &b).unwrap().crew, None);
    }

    #[test]
    fn windows_and_times_from_a_request_are_bounded() {
        let s = settings();
        let b = Bounds::default();
        let now = 1_750_000_000_000;
        let window = |from: &str, to: &str| {
            let p = Params { from: Some(from.into()), to: Some(to.into()), ..Params::default() };
            Filter::parse(&p, &s, now, &b).map(|f| (f.from_ms, f.to_ms)).map_err(|e| e.message())
        };
        let e = window("0", "9000000000000000000").unwrap_err();
        assert!(
            e.contains("to \"9000000000000000000\" is out of range") && e.contains("2000-01-01 and 2200-01-01"),
            "{e}"
        );
        let e = window("2001-01-01", "2199-12-31").unwrap_err();
        assert!(e.contains("at most 1096 days") && e.contains("[http] max_window"), "{e}");
        assert!(window("-9223372036854775808", "2025-01-01").is_err());
        assert!(window("2022-01-01", "2025-01-01").is_ok());
        let e = Filter::parse(&Params { from: Some("2001-01-01".into()), ..Params::default() }, &s, now, &b)
            .unwrap_err()
            .message();
        assert!(e.contains("max_window"), "a far `from` with the default `to` (now) is bounded too: {e}");

        let opts = |limit: &str, offset: &str| {
            let p = Params { limit: Some(limit.into()), offset: Some(offset.into()), ..Params::default() };
            Options::parse(&p, Kind::Join, &b).map(|o| (o.limit, o.offset)).map_err(|e| e.message())
        };
        assert_eq!(opts("10000", "5"), Ok((Some(10_000), 5)));
        let e = opts("10001", "0").unwrap_err();
        assert!(e.contains("limit 10001 is too large: at most 10000 ([http] max_rows)"), "{e}");
        assert!(opts("1", "100000001").unwrap_err().contains("offset"));
        assert!(opts("99999999999999999999999", "0").unwrap_err().contains("expected a whole number"));
    }

    #[test]
    fn options_refuse_unknown_choices_by_name() {
        let p = Params { dim: Some("colour".into()), ..Params::default() };
        let e = Options::parse(&p, Kind::Mttr, &Bounds::default()).unwrap_err();
        assert!(e.message().contains("expected one of asset, skill, shift, crew"), "{}", e.message());
        assert!(Options::parse(&Params::default(), Kind::Whatif, &Bounds::default()).is_err());
    }
}
