//! Shared config helpers: TOML loading whose errors point at `file:line:col`, human durations (`500ms`,
//! `2m`) and sizes (`256MiB`).
//!
//! Programs parse in two steps: [`ConfigFile::parse`] (serde with `deny_unknown_fields`, so a typo is an
//! error, and `toml::Spanned` on fields checked later), then a validation without I/O that collects every
//! problem with [`ConfigFile::error_at`].

use serde::{Deserialize, Deserializer};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

pub use toml::Spanned;

/// One config problem, located.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}:{col}: {message}", path.display())]
pub struct ConfigError {
    pub path: PathBuf,
    /// 1-based; 0 when the problem is the file as a whole.
    pub line: usize,
    pub col: usize,
    pub message: String,
}

/// Every problem found in one config, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        Self(vec![e])
    }
}

/// A config file's text and name, for locating errors.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub text: String,
}

impl ConfigFile {
    /// Reads a file.
    ///
    /// # Errors
    /// When the file cannot be read; the error names the file.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            line: 0,
            col: 0,
            message: format!("cannot read config: {e}"),
        })?;
        Ok(Self { path: path.to_path_buf(), text })
    }

    pub fn from_text(path: impl Into<PathBuf>, text: impl Into<String>) -> Self {
        Self { path: path.into(), text: text.into() }
    }

    /// Deserializes the whole file.
    ///
    /// # Errors
    /// Syntax errors, unknown keys, wrong types and bad values, each located.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, ConfigError> {
        toml::from_str(&self.text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            self.error_at(span, e.message().trim_end().to_string())
        })
    }

    /// An error at a byte span of the file.
    pub fn error_at(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        let (line, col) = line_col(&self.text, span.start);
        ConfigError { path: self.path.clone(), line, col, message: message.into() }
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, col)
}

/// A duration written with a unit: `250ms`, `10s`, `2m`, `1h`, `7d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (num, unit) = split_unit(s);
        let n: u64 = num.parse().map_err(|_| {
            format!("invalid duration {s:?}: expected a whole number and a unit (ms, s, m, h, d), e.g. \"500ms\"")
        })?;
        let ms = match unit {
            "ms" => Some(n),
            "s" => n.checked_mul(1000),
            "m" => n.checked_mul(60_000),
            "h" => n.checked_mul(3_600_000),
            "d" => n.checked_mul(86_400_000),
            _ => return Err(format!("invalid duration {s:?}: unknown unit {unit:?}, expected one of ms, s, m, h, d")),
        }
        .ok_or_else(|| format!("duration {s:?} is too large"))?;
        Ok(Self(Duration::from_millis(ms)))
    }
}

/// A size in bytes: `4096`, `64KiB`, `256MiB`, `1GiB`, `10MB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (num, unit) = split_unit(s);
        let n: u64 = num.parse().map_err(|_| {
            format!("invalid size {s:?}: expected a whole number and a unit (B, KiB, MiB, GiB, kB, MB, GB)")
        })?;
        let mult: u64 = match unit {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "kB" | "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            _ => {
                return Err(format!(
                    "invalid size {s:?}: unknown unit {unit:?}, expected one of B, KiB, MiB, GiB, kB, MB, GB"
                ))
            }
        };
        n.checked_mul(mult).map(Self).ok_or_else(|| format!("size {s:?} is too large"))
    }
}

fn split_unit(s: &str) -> (&str, &str) {
    let s = s.trim();
    let i = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    (&s[..i], s[i..].trim_start())
}

macro_rules! deserialize_from_str {
    ($t:ty, $what:literal) => {
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $t;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$t, E> {
                        v.parse().map_err(E::custom)
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
}

deserialize_from_str!(HumanDuration, "a duration string with a unit, e.g. \"500ms\" or \"2m\"");
deserialize_from_str!(ByteSize, "a size string with a unit, e.g. \"256MiB\"");

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        poll: HumanDuration,
        #[serde(default)]
        size: Option<ByteSize>,
        mode: Option<Mode>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Mode {
        Sign,
        SignAndEncrypt,
    }

    fn parse(text: &str) -> Result<Sample, ConfigError> {
        ConfigFile::from_text("agent.toml", text).parse()
    }

    #[test]
    fn durations_and_sizes_parse_with_units() {
        let s = parse("poll = \"500ms\"\nsize = \"256MiB\"\n").unwrap();
        assert_eq!(s.poll.0, Duration::from_millis(500));
        assert_eq!(s.size.unwrap().0, 256 << 20);
        assert_eq!("2m".parse::<HumanDuration>().unwrap().0, Duration::from_secs(120));
        assert_eq!("1h".parse::<HumanDuration>().unwrap().0, Duration::from_secs(3600));
        assert_eq!("10MB".parse::<ByteSize>().unwrap().0, 10_000_000);
        assert_eq!("4096".parse::<ByteSize>().unwrap().0, 4096);
    }

    #[test]
    fn an_unknown_key_names_file_line_and_column() {
        let e = parse("poll = \"1s\"\n\npoll_intervall = \"2s\"\n").unwrap_err();
        assert_eq!((e.line, e.col), (3, 1), "{e}");
        assert!(e.to_string().starts_with("agent.toml:3:1: unknown field `poll_intervall`"), "{e}");
    }

    #[test]
    fn a_bad_duration_names_the_value_and_the_units() {
        let e = parse("poll = \"5 parsecs\"\n").unwrap_err();
        assert_eq!((e.line, e.col), (1, 8), "{e}");
        assert!(e.message.contains("unknown unit \"parsecs\""), "{e}");
        let e = parse("poll = \"fast\"\n").unwrap_err();
        assert!(e.message.contains("invalid duration \"fast\""), "{e}");
        let e = parse("poll = \"99999999999999999d\"\n").unwrap_err();
        assert!(e.message.contains("too large"), "{e}");
    }

    #[test]
    fn a_bad_size_is_located() {
        let e = parse("poll = \"1s\"\nsize = \"12 bananas\"\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(e.message.contains("unknown unit \"bananas\""), "{e}");
    }

    #[test]
    fn an_enum_error_lists_the_allowed_values() {
        let e = parse("poll = \"1s\"\nmode = \"encrypt\"\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(e.message.contains("expected `sign` or `sign_and_encrypt`"), "{e}");
    }

    #[test]
    fn a_wrong_type_and_a_syntax_error_are_located() {
        let e = parse("poll = 5\n").unwrap_err();
        assert_eq!(e.line, 1, "{e}");
        assert!(e.message.contains("duration"), "{e}");
        let e = parse("poll = \"1s\"\nsize = [\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
    }

    #[test]
    fn a_missing_key_is_reported() {
        let e = parse("size = \"1KiB\"\n").unwrap_err();
        assert!(e.message.contains("missing field `poll`"), "{e}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let e = ConfigFile::read(Path::new("/nonexistent/agent.toml")).unwrap_err();
        assert!(e.to_string().starts_with("/nonexistent/agent.toml:0:0: cannot read config"), "{e}");
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("ab\ncdé f", 9), (2, 6));
        assert_eq!(line_col("", 10), (1, 1));
    }
}
