//! The optional local Prometheus endpoint (`[health] listen`): `GET /metrics` answers the figures of the
//! latest [`AgentState`] in the text exposition format; any other path is 404. HTTP/1 by hyper, one task per
//! connection; it only reads a `watch` channel, so a scrape never touches the outbox.
//!
//! Bounded, so a scraper gone wrong (or anyone who can reach it) cannot take the descriptors the agent needs
//! for its PLCs and outbox: at most [`MAX_CONNECTIONS`] at once (more are closed at once), a request's header
//! must arrive within [`HEADER_TIMEOUT`], and a connection lives at most [`CONNECTION_TIMEOUT`].
//!
//! Every metric is a row of [`METRICS`]: the exporter renders exactly these rows and docs/operations.md lists
//! exactly these names (a test checks both).

use super::state::AgentState;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};

/// Connections served at once; a scraper needs one.
pub const MAX_CONNECTIONS: usize = 8;
/// Time for a request's header to arrive (also the idle time of a kept-alive connection).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest life of one connection.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);

/// A metric's samples: label set (`name="value"`, if any) and value.
type Samples = Vec<(Option<String>, f64)>;

/// One exported metric: its name, type, help and how to read it from the state (label values, value).
pub struct Metric {
    pub name: &'static str,
    pub kind: &'static str,
    pub help: &'static str,
    value: fn(&AgentState) -> Samples,
}

fn one(v: f64) -> Samples {
    vec![(None, v)]
}

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

fn age_seconds(s: &AgentState, ts_ms: Option<i64>) -> f64 {
    ts_ms.map_or(0.0, |t| (s.written_ms - t).max(0) as f64 / 1000.0)
}

/// The metrics, in the order they are served.
pub const METRICS: &[Metric] = &[
    Metric {
        name: "shiftlens_agent_uplink_connected",
        kind: "gauge",
        help: "1 while the agent is connected to the broker, else 0.",
        value: |s| one(flag(s.uplink.connected)),
    },
    Metric {
        name: "shiftlens_agent_uplink_connect_failures_total",
        kind: "counter",
        help: "Failed broker connects and lost connections since the agent started.",
        value: |s| one(s.uplink.failures as f64),
    },
    Metric {
        name: "shiftlens_agent_uplink_last_ack_timestamp_seconds",
        kind: "gauge",
        help: "When the collector last confirmed events (Unix seconds; 0 = not since the agent started).",
        value: |s| one(s.uplink.last_ack_ms.map_or(0.0, |t| t as f64 / 1000.0)),
    },
    Metric {
        name: "shiftlens_agent_outbox_events",
        kind: "gauge",
        help: "Events in the outbox not yet confirmed by the collector (the backlog).",
        value: |s| one(s.outbox.depth as f64),
    },
    Metric {
        name: "shiftlens_agent_outbox_oldest_age_seconds",
        kind: "gauge",
        help: "Age of the oldest unsent event (0 when the outbox is empty).",
        value: |s| one(age_seconds(s, s.outbox.oldest_ts_ms)),
    },
    Metric {
        name: "shiftlens_agent_outbox_bytes",
        kind: "gauge",
        help: "Bytes counted against the outbox bound.",
        value: |s| one(s.outbox.bytes as f64),
    },
    Metric {
        name: "shiftlens_agent_outbox_max_bytes",
        kind: "gauge",
        help: "The outbox bound ([outbox] max_bytes).",
        value: |s| one(s.outbox.max_bytes as f64),
    },
    Metric {
        name: "shiftlens_agent_outbox_dropped_total",
        kind: "counter",
        help: "Events dropped since the outbox was created (bound reached or disk full).",
        value: |s| one(s.outbox.dropped as f64),
    },
    Metric {
        name: "shiftlens_agent_outbox_alert",
        kind: "gauge",
        help: "1 while the backlog is over an alert threshold ([health] outbox_alert_percent or outbox_alert_age).",
        value: |s| one(flag(s.backlog_alert.is_some())),
    },
    Metric {
        name: "shiftlens_agent_clock_ok",
        kind: "gauge",
        help: "1 while the wall clock looks synchronised and has not jumped recently.",
        value: |s| one(flag(s.clock_ok)),
    },
    Metric {
        name: "shiftlens_agent_source_connected",
        kind: "gauge",
        help: "1 while the agent is connected to the source (PLC), per source id.",
        value: |s| {
            s.sources.iter().map(|src| (Some(format!("source=\"{}\"", escape(&src.id))), flag(src.connected))).collect()
        },
    },
];

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The text exposition of `state`.
pub fn render(state: &AgentState) -> String {
    let mut o = String::new();
    for m in METRICS {
        let _ = writeln!(o, "# HELP {} {}", m.name, m.help);
        let _ = writeln!(o, "# TYPE {} {}", m.name, m.kind);
        for (labels, v) in (m.value)(state) {
            match labels {
                Some(l) => {
                    let _ = writeln!(o, "{}{{{l}}} {v}", m.name);
                }
                None => {
                    let _ = writeln!(o, "{} {v}", m.name);
                }
            }
        }
    }
    o
}

/// Binds the endpoint (so a taken port fails the start).
///
/// # Errors
/// The address cannot be bound.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// Serves `GET /metrics` on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    figures: watch::Receiver<AgentState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let places = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = tokio::select! {
            r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { return } else { continue },
            a = listener.accept() => match a {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::debug!(error = %e, "metrics endpoint: accept failed");
                    continue;
                }
            },
        };
        // Over the cap the connection is dropped (closed) at once.
        let Ok(place) = places.clone().try_acquire_owned() else { continue };
        let figures = figures.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let answer = answer(&req, &figures.borrow());
                async move { Ok::<_, std::convert::Infallible>(answer) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(io, service);
            match tokio::time::timeout(CONNECTION_TIMEOUT, conn).await {
                Ok(Err(e)) => tracing::debug!(error = %e, "metrics endpoint: connection ended with an error"),
                Err(_) => tracing::debug!("metrics endpoint: connection closed after its time"),
                Ok(Ok(())) => {}
            }
            drop(place);
        });
    }
}

fn answer<B>(req: &Request<B>, state: &AgentState) -> Response<Full<Bytes>> {
    let (status, ctype, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => (StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", render(state)),
        (&Method::GET, _) => (StatusCode::NOT_FOUND, "text/plain; charset=utf-8", "not found: try /metrics\n".into()),
        _ => (StatusCode::METHOD_NOT_ALLOWED, "text/plain; charset=utf-8", "only GET\n".into()),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(ctype) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use shiftlens_common::status::SourceHealth;

    #[test]
    fn every_metric_is_rendered_with_help_and_type() {
        let mut s = AgentState { written_ms: 10_000, ..AgentState::default() };
        s.uplink.connected = true;
        s.uplink.failures = 3;
        s.outbox.depth = 42;
        s.outbox.oldest_ts_ms = Some(7_500);
        s.sources = vec![SourceHealth { id: "plc-1".into(), connected: true, error: None }];
        let text = render(&s);
        for m in METRICS {
            assert!(text.contains(&format!("# TYPE {} {}\n", m.name, m.kind)), "{}", m.name);
            assert!(m.name.starts_with("shiftlens_agent_"), "{}", m.name);
        }
        for line in [
            "shiftlens_agent_uplink_connected 1\n",
            "shiftlens_agent_uplink_connect_failures_total 3\n",
            "shiftlens_agent_outbox_events 42\n",
            "shiftlens_agent_outbox_oldest_age_seconds 2.5\n",
            "shiftlens_agent_source_connected{source=\"plc-1\"} 1\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn the_docs_list_exactly_the_exported_metrics() {
        let doc = include_str!("../../../docs/operations.md");
        let in_doc: std::collections::BTreeSet<&str> = doc
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("shiftlens_agent_"))
            .collect();
        let exported: std::collections::BTreeSet<&str> = METRICS.iter().map(|m| m.name).collect();
        assert_eq!(in_doc, exported, "docs/operations.md and METRICS differ");
    }

    /// A real socket: hostile clients are bounded and a real scrape still gets its answer.
    #[tokio::test]
    async fn hostile_clients_are_bounded_and_a_scrape_still_answers() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_figures_tx, figures) = watch::channel(AgentState::default());
        let (_stop, stop) = watch::channel(false);
        tokio::spawn(serve(listener, figures, stop));
        let get = |req: &'static [u8]| async move {
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            c.write_all(req).await.unwrap();
            let mut text = String::new();
            let _ = c.read_to_string(&mut text).await;
            text
        };
        // Other paths and methods, and a huge path: clear answers, no crash.
        assert!(get(b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 404"));
        assert!(get(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 405"));
        // Half-sent headers hold every place; one more connection is closed at once (EOF, no answer).
        let mut held = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n").await.unwrap();
            held.push(c);
        }
        assert_eq!(get(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await, "");
        // The half-sent headers are cut off after HEADER_TIMEOUT (the server closes: read ends).
        for c in &mut held {
            let mut buf = Vec::new();
            let _ = c.read_to_end(&mut buf).await;
        }
        drop(held);
        let ok = get(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        assert!(ok.starts_with("HTTP/1.1 200") && ok.contains("shiftlens_agent_"), "{ok}");
    }
}
