//! Escalation of a stop while it happens: when a downtime event opens uncovered (or a covered stop on a
//! costly asset lasts too long), ask a person qualified for what it lacks, then the next, then the
//! supervisor, until someone acknowledges (docs/escalation.md).
//!
//! - [`config`]: `[escalation]`, validated into [`config::Settings`].
//! - [`ladder`]: pure: open stops + personnel + on-call rota + history → the messages due now.
//! - [`runner`]: the task that plans, claims in the store (`store::escalations`) and delivers.
//! - [`channels`]: webhook (HMAC-signed JSON), SMTP (lettre, TLS), MQTT (`shiftlens/v1/{site}/escalations`).
//! - The acknowledge link, the live board and the API are in `http::escalations`.
//!
//! Invariants: contact addresses are personal data and are never logged; one message per stop per rung
//! (the store's `UNIQUE (stop_key, rung)` claim is committed before anything is sent); nothing is sent for
//! a stop that is closed or acknowledged. With several collectors on one PostgreSQL store, a site's ladder runs
//! only on the collector that owns the site (`store::pg::owner`), and the others take it over when it dies.

pub mod channels;
pub mod config;
pub mod ladder;
pub mod runner;

pub use config::{EscalationConfig, Settings, Target};
pub use ladder::{plan, Action, Claimed, History, Plan, Reason, Recipient, Stop};
pub use runner::start;

#[cfg(test)]
mod tests;
