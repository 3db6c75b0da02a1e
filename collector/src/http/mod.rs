//! HTTP: the API under `/api/v1/`, the supervisor dashboard, `/healthz` and Prometheus `/metrics`, from one
//! axum router. Bound to loopback by default; any other address needs API tokens ([`auth`]).
//!
//! Layout: axum only. Each handler is extractor → one call into the read side ([`crate::query`], run
//! off the async threads by [`error::blocking`]) → template or JSON. [`api`] serves the reports of
//! [`query::CATALOGUE`] as JSON/CSV and [`pages`] as HTML, both through [`query::run`], so a page and its
//! API call always show the same numbers; [`openapi`] builds its document from the same catalogue. Page
//! parts: [`views`] (shared page parts, tables and their wording), [`svg`] (chart geometry), [`pages`]
//! (one file per page family). Every response carries `Server-Timing: app;dur=<ms>` (the handler's
//! time), which the benchmark reads.
//!
//! Hostile input is bounded before any work is sized from it: [`query::Bounds`] (window, rows, offset, time
//! range) in the parsing of every request's parameters; [`guard`] (Host allowlist, cross-site check of every
//! state-changing request, request timeout) around every route; [`server`] (header timeout, connection cap,
//! stalled writes) under the router. The `[http]` keys and their defaults are in docs/config-reference.md.

pub mod api;
pub mod auth;
pub mod error;
pub mod guard;
pub mod metrics;
pub mod openapi;
pub mod pages;
pub mod server;
pub mod svg;
pub mod views;

use crate::metrics::Metrics;
use crate::query;
use crate::Config;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use serde::Deserialize;
use shiftlens_common::config::{ConfigError, ConfigFile, HumanDuration, Spanned};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use server::{serve, serve_with, Limits};

/// `[http]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address; loopback by default. Any other address requires `[[http.tokens]]`.
    #[serde(default = "default_bind")]
    pub bind: Spanned<String>,
    /// API tokens. With none, the dashboard and API are open to anyone who can reach the (loopback) address.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// Host names (optionally `name:port`) the dashboard is reached by, beyond localhost, 127.0.0.1, `[::1]`
    /// and the bind address: any other `Host` header is refused (DNS rebinding).
    #[serde(default)]
    pub public_names: Vec<Spanned<String>>,
    /// The longest time window a request may ask for.
    #[serde(default = "default_max_window")]
    pub max_window: Spanned<HumanDuration>,
    /// The most rows a request may ask for (`limit`), and the most feed records one answer holds.
    #[serde(default = "default_max_rows")]
    pub max_rows: Spanned<usize>,
    /// Time a client has to send a request's headers, counted from the connection's start or the end of
    /// the previous response (so also how long an idle keep-alive connection is kept).
    #[serde(default = "default_header_timeout")]
    pub header_timeout: Spanned<HumanDuration>,
    /// Time a request may take from its headers to its answer (reading the body included), and the longest
    /// a client may leave a response unread.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: Spanned<HumanDuration>,
    /// Concurrent HTTP connections; one more is answered 503 and closed at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: Spanned<usize>,
}

/// `[[http.tokens]]`: one token, given as its SHA-256 or as a file holding it (never the token itself).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds it (shown on the dashboard, never the token).
    pub name: Spanned<String>,
    pub role: auth::Role,
    /// Hex SHA-256 of the token: `printf %s "$TOKEN" | sha256sum`.
    pub sha256: Option<Spanned<String>>,
    /// A file whose content (trimmed) is the token; read at start.
    pub file: Option<Spanned<PathBuf>>,
}

fn default_bind() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1:8080".into())
}
fn default_max_window() -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration(Duration::from_secs(query::DEFAULT_MAX_WINDOW_DAYS * 86_400)))
}
fn default_max_rows() -> Spanned<usize> {
    Spanned::new(0..0, query::DEFAULT_MAX_ROWS)
}
fn default_header_timeout() -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration(Limits::default().header_timeout))
}
fn default_request_timeout() -> Spanned<HumanDuration> {
    Spanned::new(0..0, HumanDuration(Limits::default().request_timeout))
}
fn default_max_connections() -> Spanned<usize> {
    Spanned::new(0..0, Limits::default().max_connections)
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            bind: default_bind(),
            tokens: Vec::new(),
            public_names: Vec::new(),
            max_window: default_max_window(),
            max_rows: default_max_rows(),
            header_timeout: default_header_timeout(),
            request_timeout: default_request_timeout(),
            max_connections: default_max_connections(),
        }
    }
}

/// `[http]` as runtime code reads it: checked, without spans.
#[derive(Debug, Clone)]
pub struct Http {
    pub bind: SocketAddr,
    pub tokens: Vec<Token>,
    pub public_names: Vec<String>,
    /// The server's timeouts and connection cap.
    pub limits: Limits,
    /// The bounds on what one request may ask for.
    pub bounds: query::Bounds,
}

/// One configured API token: its holder, role and where its SHA-256 comes from.
#[derive(Debug, Clone)]
pub struct Token {
    pub name: String,
    pub role: auth::Role,
    pub key: TokenKey,
}

/// A token's SHA-256, given in the config or read from a file at start.
#[derive(Debug, Clone)]
pub enum TokenKey {
    Sha256([u8; 32]),
    File(PathBuf),
}

impl HttpConfig {
    /// The checked `[http]`; each problem is added to `errors` at its place in `file`.
    pub fn validated(&self, file: &ConfigFile, errors: &mut Vec<ConfigError>) -> Http {
        let bind = match self.bind.get_ref().parse::<SocketAddr>() {
            Err(e) => {
                errors.push(file.error_at(self.bind.span(), format!("bind: {e} (expected ip:port)")));
                SocketAddr::from(([127, 0, 0, 1], 8080))
            }
            Ok(a) if !a.ip().is_loopback() && self.tokens.is_empty() => {
                errors.push(file.error_at(
                    self.bind.span(),
                    format!("bind {a} is not a loopback address: add [[http.tokens]] so the dashboard is not open to the network"),
                ));
                a
            }
            Ok(a) => a,
        };
        let mut names = HashSet::new();
        let mut tokens = Vec::new();
        for t in &self.tokens {
            if !names.insert(t.name.get_ref().as_str()) {
                errors.push(file.error_at(t.name.span(), format!("token name {:?} is used twice", t.name.get_ref())));
            }
            let key = match (&t.sha256, &t.file) {
                (Some(h), None) => match auth::parse_hash(h.get_ref()) {
                    Some(hash) => TokenKey::Sha256(hash),
                    None => {
                        errors.push(
                            file.error_at(h.span(), "sha256 must be 64 hex digits (printf %s \"$TOKEN\" | sha256sum)"),
                        );
                        continue;
                    }
                },
                (None, Some(f)) => TokenKey::File(f.get_ref().clone()),
                _ => {
                    errors.push(file.error_at(t.name.span(), "give exactly one of sha256 or file for this token"));
                    continue;
                }
            };
            tokens.push(Token { name: t.name.get_ref().clone(), role: t.role, key });
        }
        for n in &self.public_names {
            if guard::split_host(n.get_ref()).is_none() {
                errors.push(file.error_at(
                    n.span(),
                    format!(
                        "public name {:?} is not a host name, IP address or name:port (no scheme, no path)",
                        n.get_ref()
                    ),
                ));
            }
        }
        let mut range = |what: &str, span: std::ops::Range<usize>, v: u64, lo: u64, hi: u64, unit: &str| {
            if v < lo || v > hi {
                errors.push(file.error_at(span, format!("{what} must be between {lo}{unit} and {hi}{unit}")));
            }
        };
        let days = |d: &Spanned<HumanDuration>| d.get_ref().0.as_secs() / 86_400;
        let secs = |d: &Spanned<HumanDuration>| d.get_ref().0.as_secs();
        range("max_window", self.max_window.span(), days(&self.max_window), 1, query::MAX_WINDOW_DAYS, "d");
        range("max_rows", self.max_rows.span(), *self.max_rows.get_ref() as u64, 1, 1_000_000, "");
        range("header_timeout", self.header_timeout.span(), secs(&self.header_timeout), 1, 600, "s");
        range("request_timeout", self.request_timeout.span(), secs(&self.request_timeout), 1, 3600, "s");
        range("max_connections", self.max_connections.span(), *self.max_connections.get_ref() as u64, 1, 65_535, "");
        Http {
            bind,
            tokens,
            public_names: self.public_names.iter().map(|n| n.get_ref().clone()).collect(),
            limits: Limits {
                header_timeout: self.header_timeout.get_ref().0,
                request_timeout: self.request_timeout.get_ref().0,
                max_connections: *self.max_connections.get_ref(),
            },
            bounds: query::Bounds {
                max_window_ms: i64::try_from(self.max_window.get_ref().0.as_millis()).unwrap_or(i64::MAX),
                max_rows: *self.max_rows.get_ref(),
            },
        }
    }
}

/// What handlers share: the cached data, the token and session table, the ingest counters, the host
/// allowlist and the request timeout.
#[derive(Clone)]
pub struct AppState {
    pub data: Arc<query::Source>,
    pub auth: Arc<auth::Auth>,
    pub metrics: Arc<Metrics>,
    pub hosts: Arc<guard::Hosts>,
    pub request_timeout: Duration,
}

impl AppState {
    /// State for `config`; `metrics` are the running ingest's counters (a fresh set when there is none).
    ///
    /// # Errors
    /// A token file cannot be read or is empty.
    pub fn new(config: &Config, metrics: Option<Arc<Metrics>>) -> Result<Self, auth::AuthError> {
        Ok(Self {
            data: Arc::new(
                query::Source::new(config.store.path.clone(), config.people_settings.clone())
                    .with_bounds(config.http.bounds),
            ),
            auth: Arc::new(auth::Auth::from_config(&config.http)?),
            metrics: metrics.unwrap_or_default(),
            hosts: Arc::new(guard::Hosts::new(
                &config.http.bind.to_string(),
                config.http.public_names.iter().map(String::as_str),
            )),
            request_timeout: config.http.limits.request_timeout,
        })
    }
}

/// The whole router: API, dashboard, health and metrics, behind the host allowlist, the cross-site check
/// of state-changing requests ([`guard`]) and the request timeout.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(api::routes())
        .merge(pages::routes())
        .merge(metrics::routes())
        .fallback(views::not_found)
        .layer(DefaultBodyLimit::max(8 * 1024 * 1024))
        .layer(axum::middleware::from_fn(server_timing))
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard::deadline))
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard::cross_site))
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard::host))
        .with_state(state)
}

async fn server_timing(req: Request, next: Next) -> Response {
    let t = Instant::now();
    let mut res = next.run(req).await;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    if let Ok(v) = HeaderValue::from_str(&format!("app;dur={ms:.2}")) {
        res.headers_mut().insert("server-timing", v);
    }
    res
}
