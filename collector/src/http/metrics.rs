//! `/healthz` and Prometheus `/metrics`. Every metric name is in [`NAMES`], here and nowhere else: the
//! counters come from ingest's shared [`Metrics`] handle, the gauges from the store (gateways online, stored
//! dead letters, file size).

use super::auth::Viewer;
use super::error::ApiError;
use super::AppState;
use crate::metrics::Metrics;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::fmt::Write;
use std::sync::atomic::AtomicU64;

/// A metric: name, type, help.
pub struct Name {
    pub name: &'static str,
    pub kind: &'static str,
    pub help: &'static str,
}

const fn counter(name: &'static str, help: &'static str) -> Name {
    Name { name, kind: "counter", help }
}
const fn gauge(name: &'static str, help: &'static str) -> Name {
    Name { name, kind: "gauge", help }
}

pub const BATCHES: Name = counter("shiftlens_ingest_batches_total", "Event batches received and decoded.");
pub const EVENTS_NEW: Name = counter("shiftlens_ingest_events_total", "Events stored for the first time.");
pub const EVENTS_DUP: Name = counter("shiftlens_ingest_duplicate_events_total", "Events received again and ignored.");
pub const DEAD_LETTERS: Name =
    counter("shiftlens_dead_letters_total", "Messages rejected into the dead-letter table since start.");
pub const DROPPED: Name =
    counter("shiftlens_ingest_dropped_total", "Messages dropped under overload (resent by agents).");
pub const ACKS: Name = counter("shiftlens_acks_total", "Acks published after commit.");
pub const FEED: Name = counter("shiftlens_feed_records_total", "Downtime feed records published.");
pub const DICTIONARY_REQUESTS: Name = counter(
    "shiftlens_ingest_dictionary_requests_total",
    "Dictionary-form batches whose dictionary was unknown: not stored, the agent asked to resend with a new one.",
);
pub const GATEWAYS_ONLINE: Name = gauge("shiftlens_gateways_online", "Gateways whose last status says online.");
pub const GATEWAYS_KNOWN: Name = gauge("shiftlens_gateways_known", "Gateways ever seen.");
pub const DEAD_LETTERS_STORED: Name = gauge("shiftlens_dead_letters_stored", "Rows in the dead-letter table.");
pub const STORE_BYTES: Name = gauge("shiftlens_store_bytes", "Size of the store files (database and WAL).");

/// Every metric, in exposition order.
pub const NAMES: [&Name; 12] = [
    &BATCHES,
    &EVENTS_NEW,
    &EVENTS_DUP,
    &DEAD_LETTERS,
    &DROPPED,
    &ACKS,
    &FEED,
    &DICTIONARY_REQUESTS,
    &GATEWAYS_ONLINE,
    &GATEWAYS_KNOWN,
    &DEAD_LETTERS_STORED,
    &STORE_BYTES,
];

pub use crate::query::StoreFigures;

/// The Prometheus text exposition of the counters and store figures.
pub fn exposition(m: &Metrics, s: &StoreFigures) -> String {
    let c = |v: &AtomicU64| Metrics::get(v);
    let values: [u64; 12] = [
        c(&m.batches),
        c(&m.events_new),
        c(&m.events_duplicate),
        c(&m.dead_letters),
        c(&m.dropped_overload),
        c(&m.acks),
        c(&m.feed_records),
        c(&m.dictionary_requests),
        s.gateways_online,
        s.gateways_known,
        s.dead_letters,
        s.bytes,
    ];
    let mut out = String::new();
    for (n, v) in NAMES.iter().zip(values) {
        let _ = writeln!(out, "# HELP {} {}\n# TYPE {} {}\n{} {v}", n.name, n.help, n.name, n.kind, n.name);
    }
    out
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/metrics", get(metrics))
}

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

async fn metrics(State(st): State<AppState>, _: Viewer) -> Result<impl IntoResponse, ApiError> {
    let source = st.data.clone();
    let figures = super::error::blocking(move || source.store_figures()).await?;
    let body = exposition(&st.metrics, &figures);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_metric_once_with_its_value() {
        let m = Metrics::default();
        m.events_new.store(42, std::sync::atomic::Ordering::Relaxed);
        let text =
            exposition(&m, &StoreFigures { gateways_online: 3, gateways_known: 4, dead_letters: 1, bytes: 4096 });
        for n in NAMES {
            assert_eq!(text.matches(&format!("# TYPE {} ", n.name)).count(), 1, "{}", n.name);
        }
        assert!(text.contains("\nshiftlens_ingest_events_total 42\n"));
        assert!(text.contains("\nshiftlens_gateways_online 3\n"));
        assert!(text.contains("\nshiftlens_store_bytes 4096\n"));
    }
}
