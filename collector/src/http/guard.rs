//! Checks every request passes before a handler sees it, outermost first:
//!
//! 1. [`host`]: the `Host` header must be one of this dashboard's names ([`Hosts`]): localhost, 127.0.0.1,
//!    `[::1]`, the bind address and `[http] public_names`, any port. A page of another name that reaches us
//!    through DNS rebinding sends its own name, and is answered 421 before anything else happens.
//! 2. [`cross_site`]: a state-changing request (any method but GET, HEAD, OPTIONS, TRACE) must carry a
//!    valid bearer token (browsers never add one cross-site), or come from a page of this origin
//!    ([`auth::same_origin`]); this holds for the JSON API and the forms alike, with a session cookie and in
//!    open (no-token) mode. Forms also check their CSRF token ([`auth::Auth::check_form`]).
//! 3. [`deadline`]: a request that takes longer than `[http] request_timeout` (its body included) is
//!    answered 503.

use super::auth::{self, Via};
use super::error::{ApiError, AppError, PageError};
use super::AppState;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;

/// The names the dashboard answers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hosts {
    /// (lower-case host, port if the entry named one)
    names: Vec<(String, Option<u16>)>,
}

/// Splits `name[:port]` or `[v6][:port]` into a lower-case name and the port; `None` unless it is a plain
/// host name or IP address (letters, digits, `.`, `-`, `_`; brackets and colons for IPv6).
pub fn split_host(h: &str) -> Option<(String, Option<u16>)> {
    let (name, port) = if let Some(rest) = h.strip_prefix('[') {
        let end = rest.find(']')?;
        let name = &h[..end + 2];
        let v6 = &rest[..end];
        if v6.is_empty() || !v6.chars().all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.') {
            return None;
        }
        (name, &rest[end + 1..])
    } else {
        match h.rsplit_once(':') {
            Some((n, _)) => (n, h.get(n.len()..).unwrap_or("")),
            None => (h, ""),
        }
    };
    let port = match port {
        "" => None,
        p => Some(p.strip_prefix(':')?.parse::<u16>().ok()?),
    };
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
    if name.is_empty() || !(name.starts_with('[') || name.chars().all(plain)) {
        return None;
    }
    Some((name.to_ascii_lowercase(), port))
}

impl Hosts {
    /// Loopback names, the bind address's IP (unless it is `0.0.0.0` or `[::]`) and `public`.
    pub fn new<'a>(bind: &str, public: impl IntoIterator<Item = &'a str>) -> Self {
        let mut names: Vec<(String, Option<u16>)> =
            ["localhost", "127.0.0.1", "[::1]"].iter().map(|n| (n.to_string(), None)).collect();
        if let Ok(a) = bind.parse::<SocketAddr>() {
            if !a.ip().is_unspecified() {
                let ip = match a {
                    SocketAddr::V4(v) => v.ip().to_string(),
                    SocketAddr::V6(v) => format!("[{}]", v.ip()),
                };
                names.push((ip, None));
            }
        }
        names.extend(public.into_iter().filter_map(split_host));
        Self { names }
    }

    /// Whether a `Host` header names this dashboard.
    pub fn allows(&self, host: &str) -> bool {
        let Some((name, port)) = split_host(host) else { return false };
        self.names.iter().any(|(n, p)| *n == name && (p.is_none() || *p == port))
    }
}

/// The answer to a refused request: JSON under `/api/` and for `/metrics`, a page otherwise.
fn refuse(path: &str, error: AppError) -> Response {
    if path.starts_with("/api/") || path == "/metrics" {
        ApiError(error).into_response()
    } else {
        PageError { error, next: "/".into() }.into_response()
    }
}

/// Refuses a request whose `Host` is not one of [`Hosts`] with 421.
pub async fn host(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .map(str::to_string);
    match host {
        Some(h) if st.hosts.allows(&h) => next.run(req).await,
        other => {
            let shown = other.map_or_else(|| "no Host header".to_string(), |h| format!("Host {h:?}"));
            let error = AppError {
                status: StatusCode::MISDIRECTED_REQUEST,
                message: format!(
                    "{shown} is not a name of this dashboard: use localhost or 127.0.0.1, or add the name to [http] public_names"
                ),
            };
            tracing::debug!(host = %shown, "request for another host refused");
            refuse(req.uri().path(), error)
        }
    }
}

/// Refuses a state-changing request that neither carries a valid bearer token nor comes from a page of
/// this origin, with 403.
pub async fn cross_site(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if req.method().is_safe() {
        return next.run(req).await;
    }
    let bearer = st.auth.principal(req.headers()).is_some_and(|p| p.via == Via::Bearer);
    if !bearer {
        if let Err(e) = auth::same_origin(req.headers()) {
            return refuse(req.uri().path(), e);
        }
    }
    next.run(req).await
}

/// Answers 503 when a request is not done within `[http] request_timeout`.
pub async fn deadline(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    match tokio::time::timeout(st.request_timeout, next.run(req)).await {
        Ok(res) => res,
        Err(_) => {
            tracing::warn!(path, timeout_s = st.request_timeout.as_secs(), "HTTP request timed out");
            let error = AppError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: format!(
                    "the request was not done within {} s ([http] request_timeout)",
                    st.request_timeout.as_secs()
                ),
            };
            refuse(&path, error)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_dashboards_names_are_allowed_as_host() {
        let h = Hosts::new("127.0.0.1:8080", ["dashboard.plant.example", "proxy.example:8443"]);
        for ok in [
            "127.0.0.1:8080",
            "127.0.0.1",
            "localhost:41234",
            "LOCALHOST:8080",
            "[::1]:8080",
            "dashboard.plant.example",
            "dashboard.plant.example:443",
            "proxy.example:8443",
        ] {
            assert!(h.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "127.0.0.1.nip.io:8080",
            "proxy.example:8080",
            "localhost:99999",
            "localhost:",
            "",
            "[::1",
            "local host",
            "dashboard.plant.example/x",
            "user@localhost",
        ] {
            assert!(!h.allows(bad), "{bad:?}");
        }
        let any = Hosts::new("0.0.0.0:8080", []);
        assert!(!any.allows("0.0.0.0:8080") && any.allows("localhost:8080"));
        let lan = Hosts::new("10.1.2.3:8080", []);
        assert!(lan.allows("10.1.2.3:8080") && !lan.allows("10.1.2.4:8080"));
        assert_eq!(split_host("https://x.example"), None);
    }
}
