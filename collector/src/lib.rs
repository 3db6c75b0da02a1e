//! The ShiftLens central collector: ingest, downtime timeline, competency join, reports and dashboard.
//!
//! Data flows one way: `broker` → `ingest` (decode, validate, dedup, ack after commit) → `store` →
//! `timeline` (state intervals, downtime) → `people` + `report` (the join and its reports) → `http`.
//! `report` and `timeline` are pure: plain data in, plain data out, no SQL and no I/O.

pub mod broker;
pub mod config;
pub mod fairness;
pub mod feed;
pub mod http;
pub mod ingest;
pub mod people;
pub mod pki;
pub mod report;
pub mod sparkplug;
pub mod store;
pub mod timeline;

pub use config::Config;
