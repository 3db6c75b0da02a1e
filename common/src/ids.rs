//! Checked identifiers. Site and gateway ids end up in MQTT topic levels, so they are limited to
//! `[a-z0-9_-]{1,64}`: no `/`, `+`, `#`, `$` or NUL can reach a topic. Asset ids travel only in
//! payloads and may also hold upper case letters and dots.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} id {value:?}: {why}")]
pub struct IdError {
    pub kind: &'static str,
    pub value: String,
    pub why: &'static str,
}

const MAX_ID_LEN: usize = 64;

fn check(kind: &'static str, value: &str, extra: fn(u8) -> bool) -> Result<(), IdError> {
    let err = |why| IdError { kind, value: value.chars().take(80).collect(), why };
    if value.is_empty() {
        return Err(err("must not be empty"));
    }
    if value.len() > MAX_ID_LEN {
        return Err(err("must be at most 64 characters"));
    }
    let ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-' || extra(b);
    if !value.bytes().all(ok) {
        return Err(err(if kind == "asset" {
            "allowed characters are a-z A-Z 0-9 _ - ."
        } else {
            "allowed characters are a-z 0-9 _ -"
        }));
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $extra:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Checks `value` and wraps it.
            ///
            /// # Errors
            /// When the value is empty, longer than 64 bytes or holds a character outside the set.
            pub fn parse(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                check($kind, &value, $extra)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, IdError> {
                Self::parse(value)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(value: &str) -> Result<Self, IdError> {
                Self::parse(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }
    };
}

id_type!(
    /// A plant site, e.g. `plant-a`.
    SiteId, "site", |_| false);
id_type!(
    /// One edge gateway running the agent.
    GatewayId, "gateway", |_| false);
id_type!(
    /// A machine or line section whose state is tracked.
    AssetId, "asset", |b| b.is_ascii_uppercase() || b == b'.');

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_the_documented_alphabet() {
        assert!(SiteId::parse("plant-a_1").is_ok());
        assert!(GatewayId::parse("a".repeat(64)).is_ok());
        assert!(AssetId::parse("Line1.Press-3").is_ok());
    }

    #[test]
    fn ids_reject_wildcards_levels_and_length() {
        for bad in ["", "a/b", "+", "#", "$sys", "A", "a b", "é", "a\0"] {
            assert!(SiteId::parse(bad).is_err(), "{bad:?} accepted");
            assert!(GatewayId::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(SiteId::parse("a".repeat(65)).is_err());
        assert!(AssetId::parse("a/b").is_err());
        let e = SiteId::parse("Plant").unwrap_err();
        assert!(e.to_string().contains("a-z 0-9 _ -"), "{e}");
    }
}
