//! Delivery channels: a signed webhook ([`webhook`]), e-mail over SMTP with TLS ([`smtp`]) and the MQTT topic
//! `shiftlens/v1/{site}/escalations` ([`mqtt`]). Each takes a [`Message`] and says whether it was delivered;
//! retries and dead letters are the runner's. Nothing here logs a contact address.

pub mod mqtt;
pub mod smtp;
pub mod webhook;

use crate::feed::rfc3339;
use serde::Serialize;

/// The schema name and version of escalation bodies (webhook and MQTT); fields are only ever added within it.
pub const SCHEMA: &str = "shiftlens.escalation/1";

/// Who a message is for, as the body shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct To {
    /// The person id, or its pseudonym (`P-xxxxxx`) with `[escalation] pseudonymize`.
    pub person: String,
    pub channel: String,
    /// The contact address; left out with `[escalation] pseudonymize`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// `on_shift`, `on_call`, `next_shift` or `supervisor`.
    pub availability: String,
}

/// One escalation message (docs/escalation.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    pub schema: &'static str,
    /// `{stop key}#{rung}`: the same for a re-send after a restart, so a receiver can drop the repeat.
    pub id: String,
    pub site: String,
    pub asset: String,
    pub line: Option<String>,
    /// The stop's start, RFC 3339 UTC.
    pub stop_start: String,
    /// `uncovered` or `long_stop`.
    pub reason: String,
    pub skills: Vec<String>,
    /// 0-based rung and whom it asks (`qualified`, `supervisor`).
    pub rung: u32,
    pub target: String,
    pub to: To,
    /// Open it to acknowledge (single use, until `ack_expires`).
    pub ack_url: String,
    pub ack_expires: String,
}

impl Message {
    /// A one-line subject for e-mail.
    pub fn subject(&self) -> String {
        let why = if self.reason == "uncovered" { "needs" } else { "long stop, needs" };
        format!("ShiftLens: {} at {} stopped, {} {}", self.asset, self.site, why, self.skills.join(", "))
    }

    /// The plain-text body of an e-mail.
    pub fn text(&self) -> String {
        format!(
            "{} at site {}{} is down since {}.\n\nSkills needed: {}\nYou are asked as: {} ({}).\n\n\
             Acknowledge that you are responding (link valid until {}):\n{}\n\nMessage id: {}\n",
            self.asset,
            self.site,
            self.line.as_deref().map(|l| format!(", line {l}")).unwrap_or_default(),
            self.stop_start,
            self.skills.join(", "),
            self.target,
            self.to.availability.replace('_', " "),
            self.ack_expires,
            self.ack_url,
            self.id,
        )
    }
}

/// `rfc3339` for bodies.
pub fn time(ms: i64) -> String {
    rfc3339(ms)
}
