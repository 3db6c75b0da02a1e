//! HTTP: the API under `/api/v1/`, the supervisor dashboard, `/healthz` and Prometheus `/metrics`, from one
//! axum router. Bound to loopback by default; any other address needs API tokens ([`auth`]).
//!
//! Layout: [`data`] loads personnel, downtime, alarms and the join from the store into a cached
//! [`data::Dataset`] and applies the URL filters; [`api`] and [`views`] turn the same
//! [`Report`](crate::report::Report)s into JSON/CSV and HTML, so a page and its API call always show the same
//! numbers; [`openapi`] builds its document from the endpoint table the router is built from. Every
//! response carries `Server-Timing: app;dur=<ms>` (the handler's time), which the benchmark reads.

pub mod api;
pub mod auth;
pub mod data;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod views;

use crate::ingest::Metrics;
use crate::Config;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use serde::Deserialize;
use shiftlens_common::config::{ConfigError, ConfigFile, Spanned};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

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

impl Default for HttpConfig {
    fn default() -> Self {
        Self { bind: default_bind(), tokens: Vec::new() }
    }
}

impl HttpConfig {
    pub fn validate(&self, file: &ConfigFile, errors: &mut Vec<ConfigError>) {
        match self.bind.get_ref().parse::<SocketAddr>() {
            Err(e) => errors.push(file.error_at(self.bind.span(), format!("bind: {e} (expected ip:port)"))),
            Ok(a) if !a.ip().is_loopback() && self.tokens.is_empty() => errors.push(file.error_at(
                self.bind.span(),
                format!("bind {a} is not a loopback address: add [[http.tokens]] so the dashboard is not open to the network"),
            )),
            Ok(_) => {}
        }
        let mut names = HashSet::new();
        for t in &self.tokens {
            if !names.insert(t.name.get_ref().as_str()) {
                errors.push(file.error_at(t.name.span(), format!("token name {:?} is used twice", t.name.get_ref())));
            }
            match (&t.sha256, &t.file) {
                (Some(h), None) if auth::parse_hash(h.get_ref()).is_none() => errors
                    .push(file.error_at(h.span(), "sha256 must be 64 hex digits (printf %s \"$TOKEN\" | sha256sum)")),
                (Some(_), None) | (None, Some(_)) => {}
                _ => errors.push(file.error_at(t.name.span(), "give exactly one of sha256 or file for this token")),
            }
        }
    }
}

/// What handlers share: the cached data, the token and session table, and the ingest counters.
#[derive(Clone)]
pub struct AppState {
    pub data: Arc<data::Source>,
    pub auth: Arc<auth::Auth>,
    pub metrics: Arc<Metrics>,
}

impl AppState {
    /// State for `config`; `metrics` are the running ingest's counters (a fresh set when there is none).
    ///
    /// # Errors
    /// A token file cannot be read or is empty.
    pub fn new(config: &Config, metrics: Option<Arc<Metrics>>) -> Result<Self, auth::AuthError> {
        Ok(Self {
            data: Arc::new(data::Source::new(config.store.path.clone(), config.people.resolved())),
            auth: Arc::new(auth::Auth::from_config(&config.http)?),
            metrics: metrics.unwrap_or_default(),
        })
    }
}

/// The whole router: API, dashboard, health and metrics.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(api::routes())
        .merge(views::routes())
        .merge(metrics::routes())
        .layer(DefaultBodyLimit::max(8 * 1024 * 1024))
        .layer(axum::middleware::from_fn(server_timing))
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

/// Serves `router` on `bind` until the process ends; returns the bound address once listening.
///
/// # Errors
/// The address cannot be bound.
pub async fn serve(bind: &str, router: Router) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(bind).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    Ok(addr)
}
