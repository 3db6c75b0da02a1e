//! The allowed range of every numeric option of the agent config, in one table ([`RANGES`]), checked on the
//! parsed TOML document itself: each error names the value's `file:line:col` and the range, and a number that
//! its Rust type could not even hold (`unit = 300` for a `u8`) gets the same message instead of serde's.
//!
//! A value of the wrong type (a duration without a unit, a string where a number goes) is left to the typed
//! parse, which names what it expected. docs/config-reference.md lists the same ranges; a test keeps them equal.

use shiftlens_common::config::{ByteSize, ConfigError, ConfigFile, HumanDuration};
use std::time::Duration;
use toml::de::{DeTable, DeValue};

/// What kind of number an option holds and its inclusive bounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// A TOML integer.
    Int(i64, i64),
    /// A TOML float or integer; `nan` and `inf` are refused.
    Float(f64, f64),
    /// A duration string (`"30s"`).
    Duration(Duration, Duration),
    /// A size string (`"256MiB"`).
    Size(u64, u64),
    /// The port of an address string (`"ip:port"`, `"opc.tcp://host:port/"`, `"mqtts://host:port"`), when given.
    Port,
}

/// One option: its key path (`*` is any one key, `**` any number of keys; array elements add no key) and range.
#[derive(Debug, Clone, Copy)]
pub struct Range {
    pub path: &'static str,
    pub kind: Kind,
}

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
const fn s(n: u64) -> Duration {
    Duration::from_secs(n)
}
const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const HOUR: Duration = s(3600);

/// Every numeric option and its range.
pub const RANGES: &[Range] = &[
    Range { path: "outbox.max_bytes", kind: Kind::Size(MIB, 64 * GIB) },
    Range { path: "outbox.memory_bytes", kind: Kind::Size(64 * KIB, GIB) },
    Range { path: "uplink.broker", kind: Kind::Port },
    // MQTT carries the keep-alive as 16-bit seconds; more would wrap (65536s became 0).
    Range { path: "uplink.keep_alive", kind: Kind::Duration(s(1), s(65535)) },
    Range { path: "uplink.batch_events", kind: Kind::Int(1, 10_000) },
    Range { path: "uplink.batch_bytes", kind: Kind::Size(KIB, 512 * KIB) },
    Range { path: "uplink.inflight_batches", kind: Kind::Int(1, 64) },
    Range { path: "uplink.ack_timeout", kind: Kind::Duration(ms(100), HOUR) },
    Range { path: "uplink.heartbeat", kind: Kind::Duration(ms(100), HOUR) },
    Range { path: "uplink.reconnect_min", kind: Kind::Duration(ms(10), HOUR) },
    Range { path: "uplink.reconnect_max", kind: Kind::Duration(ms(10), HOUR) },
    Range { path: "health.listen", kind: Kind::Port },
    Range { path: "health.state_interval", kind: Kind::Duration(ms(100), s(60)) },
    Range { path: "health.warn_every", kind: Kind::Duration(s(1), s(86_400)) },
    Range { path: "health.outbox_alert_percent", kind: Kind::Int(1, 100) },
    Range { path: "health.outbox_alert_age", kind: Kind::Duration(s(1), s(2_592_000)) },
    Range { path: "health.alert_every", kind: Kind::Duration(s(1), s(86_400)) },
    Range { path: "modbus.address", kind: Kind::Port },
    Range { path: "modbus.baud", kind: Kind::Int(50, 4_000_000) },
    Range { path: "modbus.data_bits", kind: Kind::Int(5, 8) },
    Range { path: "modbus.stop_bits", kind: Kind::Int(1, 2) },
    Range { path: "modbus.unit", kind: Kind::Int(0, 255) },
    Range { path: "modbus.poll", kind: Kind::Duration(ms(1), HOUR) },
    Range { path: "modbus.timeout", kind: Kind::Duration(ms(1), s(300)) },
    Range { path: "modbus.backoff_max", kind: Kind::Duration(ms(10), HOUR) },
    Range { path: "modbus.coalesce_gap", kind: Kind::Int(0, 1999) },
    Range { path: "modbus.points.address", kind: Kind::Int(0, 65535) },
    Range { path: "modbus.points.bit", kind: Kind::Int(0, 15) },
    Range { path: "modbus.points.scale", kind: Kind::Float(f64::MIN, f64::MAX) },
    Range { path: "modbus.points.offset", kind: Kind::Float(f64::MIN, f64::MAX) },
    Range { path: "opcua.endpoint", kind: Kind::Port },
    Range { path: "opcua.keep_alive", kind: Kind::Duration(ms(50), s(600)) },
    Range { path: "opcua.request_timeout", kind: Kind::Duration(ms(50), s(600)) },
    Range { path: "opcua.publishing_interval", kind: Kind::Duration(ms(50), HOUR) },
    Range { path: "opcua.points.sampling", kind: Kind::Duration(ms(0), HOUR) },
    Range { path: "opcua.points.deadband", kind: Kind::Float(0.0, f64::MAX) },
    // Meanings, in points and in a device's `meanings` table.
    Range { path: "**.debounce", kind: Kind::Duration(ms(0), HOUR) },
    Range { path: "**.severity", kind: Kind::Int(SEVERITY.0 as i64, SEVERITY.1 as i64) },
    Range { path: "**.above", kind: Kind::Float(f64::MIN, f64::MAX) },
    Range { path: "**.below", kind: Kind::Float(f64::MIN, f64::MAX) },
    Range { path: "**.hysteresis", kind: Kind::Float(0.0, f64::MAX) },
];

/// Alarm severity, as in OPC UA (1 lowest, 1000 highest); register maps are held to it too.
pub const SEVERITY: (u16, u16) = (1, 1000);
/// Longest debounce; register maps are held to it too.
pub const DEBOUNCE_MAX: Duration = HOUR;

/// Checks every value of `doc` that [`RANGES`] names; pushes one located error per value out of range.
pub fn check(doc: &DeTable<'_>, file: &ConfigFile, errors: &mut Vec<ConfigError>) {
    walk(doc, &mut Vec::new(), file, errors);
}

fn walk<'a>(table: &'a DeTable<'_>, path: &mut Vec<&'a str>, file: &ConfigFile, errors: &mut Vec<ConfigError>) {
    for (key, value) in table.iter() {
        path.push(key.get_ref().as_ref());
        visit(value, path, file, errors);
        path.pop();
    }
}

fn visit<'a>(
    value: &'a toml::Spanned<DeValue<'_>>,
    path: &mut Vec<&'a str>,
    file: &ConfigFile,
    errors: &mut Vec<ConfigError>,
) {
    match value.get_ref() {
        DeValue::Table(t) => walk(t, path, file, errors),
        DeValue::Array(a) => {
            for v in a {
                visit(v, path, file, errors);
            }
        }
        v => {
            let Some(rule) = RANGES.iter().find(|r| matches(r.path, path)) else { return };
            let key = path.last().copied().unwrap_or_default();
            if let Some(msg) = out_of_range(key, rule.kind, v) {
                errors.push(file.error_at(value.span(), msg));
            }
        }
    }
}

/// Whether `path` fits `pattern` (`a.*.b`, `**.b`).
fn matches(pattern: &str, path: &[&str]) -> bool {
    fn go(pat: &[&str], path: &[&str]) -> bool {
        match (pat.first(), path.first()) {
            (None, None) => true,
            (Some(&"**"), _) => go(&pat[1..], path) || (!path.is_empty() && go(pat, &path[1..])),
            (Some(p), Some(k)) => (*p == "*" || p == k) && go(&pat[1..], &path[1..]),
            _ => false,
        }
    }
    let pat: Vec<&str> = pattern.split('.').collect();
    go(&pat, path)
}

/// The message for a value outside its range; `None` when it is inside or of another type (the typed parse
/// reports that).
fn out_of_range(key: &str, kind: Kind, v: &DeValue<'_>) -> Option<String> {
    let bad = |shown: &dyn std::fmt::Display| Some(format!("{key} {shown} is out of range ({})", describe(kind)));
    match (kind, v) {
        (Kind::Int(lo, hi), DeValue::Integer(i)) => {
            let n = i128::from_str_radix(i.as_str(), i.radix()).ok()?;
            if n < i128::from(lo) || n > i128::from(hi) {
                return bad(&n);
            }
        }
        (Kind::Float(lo, hi), DeValue::Float(_) | DeValue::Integer(_)) => {
            let n: f64 = match v {
                DeValue::Float(f) => f.as_str().replace('_', "").parse().ok()?,
                DeValue::Integer(i) => i128::from_str_radix(i.as_str(), i.radix()).ok()? as f64,
                _ => return None,
            };
            if !n.is_finite() || n < lo || n > hi {
                return Some(format!("{key} {n} is not allowed ({})", describe(kind)));
            }
        }
        (Kind::Duration(lo, hi), DeValue::String(text)) => {
            let d = text.parse::<HumanDuration>().ok()?.0;
            if d < lo || d > hi {
                return bad(&format!("{text:?}"));
            }
        }
        (Kind::Size(lo, hi), DeValue::String(text)) => {
            let n = text.parse::<ByteSize>().ok()?.0;
            if n < lo || n > hi {
                return bad(&format!("{text:?}"));
            }
        }
        (Kind::Port, DeValue::String(text)) => {
            let port = port_of(text)?;
            if !port.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p)) {
                return Some(format!("{key} {text:?}: port {port} is out of range (1-65535)"));
            }
        }
        _ => {}
    }
    None
}

/// The port written in an address (`ip:port`, `scheme://host:port/path`, `[v6]:port`), if any.
fn port_of(address: &str) -> Option<&str> {
    let rest = address.split_once("://").map_or(address, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let after_host = match authority.strip_prefix('[') {
        Some(v6) => v6.split_once(']')?.1,
        None => authority.rfind(':').map_or("", |i| &authority[i..]),
    };
    after_host.strip_prefix(':').filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// The range as written in docs and messages: `1-64`, `1s-65535s`, `64KiB-1GiB`, `finite`.
pub fn describe(kind: Kind) -> String {
    match kind {
        Kind::Int(lo, hi) => format!("{lo}-{hi}"),
        Kind::Float(lo, hi) if lo == f64::MIN && hi == f64::MAX => "a finite number".into(),
        Kind::Float(lo, hi) if hi == f64::MAX => format!("a finite number >= {lo}"),
        Kind::Float(lo, hi) => format!("{lo}-{hi}"),
        Kind::Duration(lo, hi) => format!("{}-{}", duration(lo), duration(hi)),
        Kind::Size(lo, hi) => format!("{}-{}", size(lo), size(hi)),
        Kind::Port => "port 1-65535".into(),
    }
}

/// A duration in the largest unit that divides it: `1h`, `65535s`, `50ms`.
fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, per) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)] {
        if ms > 0 && ms % per == 0 {
            return format!("{}{unit}", ms / per);
        }
    }
    format!("{ms}ms")
}

/// A size in the largest binary unit that divides it: `64KiB`, `1GiB`.
fn size(n: u64) -> String {
    for (unit, per) in [("GiB", GIB), ("MiB", MIB), ("KiB", KIB)] {
        if n > 0 && n % per == 0 {
            return format!("{}{unit}", n / per);
        }
    }
    format!("{n}B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_keys_and_wildcards() {
        assert!(matches("uplink.keep_alive", &["uplink", "keep_alive"]));
        assert!(!matches("uplink.keep_alive", &["opcua", "keep_alive"]));
        assert!(matches("**.severity", &["modbus", "points", "meaning", "alarm", "severity"]));
        assert!(matches("**.severity", &["severity"]));
        assert!(!matches("**.severity", &["modbus", "severity_x"]));
        assert!(matches("a.*.c", &["a", "b", "c"]));
    }

    #[test]
    fn ports_are_found_in_every_address_form() {
        assert_eq!(port_of("10.0.0.1:502"), Some("502"));
        assert_eq!(port_of("opc.tcp://plc:4840/path"), Some("4840"));
        assert_eq!(port_of("mqtts://[::1]:8883"), Some("8883"));
        assert_eq!(port_of("mqtts://broker"), None);
        assert_eq!(port_of("opc.tcp://plc/"), None);
    }

    #[test]
    fn ranges_are_described_in_their_own_units() {
        assert_eq!(describe(Kind::Duration(s(1), s(65535))), "1s-65535s");
        assert_eq!(describe(Kind::Duration(ms(50), HOUR)), "50ms-1h");
        assert_eq!(describe(Kind::Size(64 * KIB, GIB)), "64KiB-1GiB");
        assert_eq!(describe(Kind::Int(1, 64)), "1-64");
    }
}
