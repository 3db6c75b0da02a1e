//! The ShiftLens central collector: ingest, downtime timeline, competency join, reports and dashboard.
//!
//! Data flows one way: `broker` → `ingest` (decode, validate, dedup, ack after commit) → `store` →
//! `timeline` (state intervals, downtime) → `join` + `report` (the join and its reports) → `query` (the
//! read side: one catalogue of reports, one dispatch, the cached dataset) → `http` and the CLI.
//! `join`, `report` and `timeline` are pure: plain data in, plain data out, no SQL and no I/O; only
//! `store` writes SQL (the read side reaches it through `store::reads`). `topology` starts and stops
//! everything (the only module that spawns); `main.rs` only parses the CLI and loads the config.

pub mod broker;
pub mod config;
pub mod fairness;
pub mod feed;
pub mod http;
pub mod ingest;
pub mod join;
pub mod metrics;
pub mod people;
pub mod pki;
pub mod query;
pub mod report;
pub mod store;
pub mod timeline;
pub mod topology;

pub use config::Config;
