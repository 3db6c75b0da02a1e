//! Access: API tokens with a viewer and an admin role, browser sessions, and cross-site request checks.
//!
//! - A request is authenticated by `Authorization: Bearer <token>`, or by the `shiftlens_session` cookie
//!   that the login form sets (HttpOnly, SameSite=Strict, 12 h). With no tokens configured (allowed on
//!   loopback only, see [`HttpConfig::validated`](super::HttpConfig::validated)) everyone is admin.
//! - Tokens are kept as SHA-256 hashes and compared in constant time; neither a token nor a hash is logged.
//! - Every state-changing request (API or form) without a valid bearer token must come from this origin
//!   (`Origin`, else `Referer`, and `Sec-Fetch-Site`; checked for all routes by
//!   [`guard::cross_site`](super::guard::cross_site)), and forms also carry a CSRF token derived from the
//!   session with a per-process secret. Bearer requests need neither: browsers never add that header
//!   cross-site.

use super::error::{ApiError, AppError, PageError};
use super::{AppState, Http, TokenKey};
use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts, HeaderMap};
use axum::response::{IntoResponse, Response};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// The session cookie's name.
pub const COOKIE: &str = "shiftlens_session";
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// What a token may do: viewers read, admins also import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Admin,
}

/// Why the tokens could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("token {name}: cannot read {path}: {source}")]
    File { name: String, path: String, source: std::io::Error },
    #[error("token {name}: {path} is empty")]
    Empty { name: String, path: String },
    #[error("token {name}: sha256 is not 64 hex digits")]
    Hash { name: String },
}

struct Token {
    name: String,
    role: Role,
    hash: [u8; 32],
}

struct Session {
    name: String,
    role: Role,
    expires: Instant,
}

/// Tokens, sessions and the CSRF secret.
pub struct Auth {
    tokens: Vec<Token>,
    sessions: Mutex<HashMap<String, Session>>,
    secret: [u8; 32],
}

/// How a request was authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    Bearer,
    Session(String),
    /// No tokens configured.
    Open,
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    pub via: Via,
}

/// Parses a hex SHA-256.
pub fn parse_hash(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn random_hex() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    hex(&b)
}

impl Auth {
    /// Loads the configured tokens (reading token files).
    ///
    /// # Errors
    /// A token file is unreadable or empty.
    pub fn from_config(c: &Http) -> Result<Self, AuthError> {
        let mut tokens = Vec::new();
        for t in &c.tokens {
            let name = t.name.clone();
            let hash = match &t.key {
                TokenKey::Sha256(h) => *h,
                TokenKey::File(f) => {
                    let path = f.display().to_string();
                    let text = std::fs::read_to_string(f).map_err(|source| AuthError::File {
                        name: name.clone(),
                        path: path.clone(),
                        source,
                    })?;
                    if text.trim().is_empty() {
                        return Err(AuthError::Empty { name, path });
                    }
                    sha256(&[text.trim().as_bytes()])
                }
            };
            tokens.push(Token { name, role: t.role, hash });
        }
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        Ok(Self { tokens, sessions: Mutex::new(HashMap::new()), secret })
    }

    /// True when no tokens are configured: everyone is admin.
    pub fn is_open(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The holder and role of a token; every configured token is compared, in constant time.
    pub fn check_token(&self, token: &str) -> Option<(String, Role)> {
        let h = sha256(&[token.trim().as_bytes()]);
        let mut found = None;
        for t in &self.tokens {
            if bool::from(t.hash.ct_eq(&h)) {
                found = Some((t.name.clone(), t.role));
            }
        }
        found
    }

    /// Starts a browser session for a valid token; returns the session id for the cookie.
    pub fn login(&self, token: &str) -> Option<String> {
        let (name, role) = self.check_token(token)?;
        let id = random_hex();
        let mut s = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        s.retain(|_, v| v.expires > now);
        s.insert(id.clone(), Session { name, role, expires: now + SESSION_TTL });
        Some(id)
    }

    pub fn logout(&self, id: &str) {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }

    /// Who sent these headers, if anyone known.
    pub fn principal(&self, headers: &HeaderMap) -> Option<Principal> {
        if let Some(v) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
            let token = v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer "))?;
            return self.check_token(token).map(|(name, role)| Principal { name, role, via: Via::Bearer });
        }
        if let Some(id) = cookie(headers, COOKIE) {
            let s = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(v) = s.get(id).filter(|v| v.expires > Instant::now()) {
                return Some(Principal { name: v.name.clone(), role: v.role, via: Via::Session(id.to_string()) });
            }
        }
        self.is_open().then(|| Principal { name: "local".into(), role: Role::Admin, via: Via::Open })
    }

    /// The CSRF token of a principal's forms.
    pub fn csrf_token(&self, p: &Principal) -> String {
        let key = match &p.via {
            Via::Session(id) => id.as_str(),
            Via::Bearer | Via::Open => "open",
        };
        hex(&sha256(&[&self.secret, b"csrf", key.as_bytes()]))
    }

    /// Checks a form post: same origin, and (unless Bearer) the CSRF token.
    ///
    /// # Errors
    /// 403 naming what failed.
    pub fn check_form(&self, p: &Principal, headers: &HeaderMap, csrf: &str) -> Result<(), AppError> {
        if p.via == Via::Bearer {
            return Ok(());
        }
        same_origin(headers)?;
        let want = self.csrf_token(p);
        if bool::from(want.as_bytes().ct_eq(csrf.as_bytes())) {
            Ok(())
        } else {
            Err(AppError::forbidden("the form's CSRF token is missing or stale: reload the page and try again"))
        }
    }
}

/// A cookie's value.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Refuses a browser request that did not come from a page of this origin.
///
/// # Errors
/// 403 when `Sec-Fetch-Site` says cross-site, or `Origin`/`Referer` name another origin or are both absent.
pub fn same_origin(headers: &HeaderMap) -> Result<(), AppError> {
    let get = |h| headers.get(h).and_then(|v: &axum::http::HeaderValue| v.to_str().ok());
    if let Some(site) = get("sec-fetch-site") {
        if !matches!(site, "same-origin" | "none") {
            return Err(AppError::forbidden(format!("cross-site request refused (Sec-Fetch-Site: {site})")));
        }
    }
    let host = get("host").ok_or_else(|| AppError::forbidden("no Host header"))?;
    let ok = |o: &str| o == format!("http://{host}") || o == format!("https://{host}");
    match (get("origin"), get("referer")) {
        (Some(o), _) if ok(o) => Ok(()),
        (Some(o), _) => Err(AppError::forbidden(format!("cross-site request refused (Origin: {o})"))),
        (None, Some(r)) if ok(origin_of(r)) => Ok(()),
        _ => Err(AppError::forbidden("cross-site request refused (no Origin or Referer of this site)")),
    }
}

/// `scheme://host:port` of a URL.
fn origin_of(url: &str) -> &str {
    let after = url.find("://").map_or(0, |i| i + 3);
    url.get(after..).and_then(|rest| rest.find('/')).map_or(url, |j| &url[..after + j])
}

/// The `Set-Cookie` value of a session.
pub fn session_cookie(id: &str) -> String {
    format!("{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}", SESSION_TTL.as_secs())
}

/// The `Set-Cookie` value that ends a session.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}

/// A rejected request: JSON for `/api/`, a page (or a redirect to login) otherwise.
pub struct Rejection {
    error: AppError,
    api: bool,
    next: String,
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        if self.api {
            ApiError(self.error).into_response()
        } else {
            PageError { error: self.error, next: self.next }.into_response()
        }
    }
}

fn require(parts: &Parts, state: &AppState, role: Role) -> Result<Principal, Rejection> {
    let api = parts.uri.path().starts_with("/api/") || parts.uri.path() == "/metrics";
    let next = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    match state.auth.principal(&parts.headers) {
        None => Err(Rejection { error: AppError::unauthorized(), api, next }),
        Some(p) if p.role < role => Err(Rejection {
            error: AppError::forbidden(format!("{} may view but not change data: an admin token is needed", p.name)),
            api,
            next,
        }),
        Some(p) => Ok(p),
    }
}

/// Extractor: any authenticated principal.
pub struct Viewer(pub Principal);
/// Extractor: an admin.
pub struct Admin(pub Principal);

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Rejection;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        require(parts, state, Role::Viewer).map(Viewer)
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = Rejection;
    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        require(parts, state, Role::Admin).map(Admin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn same_origin_accepts_only_this_host() {
        let cases: &[(&[(&str, &str)], bool)] = &[
            (&[("host", "127.0.0.1:8080"), ("origin", "http://127.0.0.1:8080")], true),
            (&[("host", "127.0.0.1:8080"), ("origin", "http://evil.example")], false),
            (&[("host", "127.0.0.1:8080"), ("referer", "http://127.0.0.1:8080/import?x=1")], true),
            (&[("host", "127.0.0.1:8080"), ("referer", "http://127.0.0.1:8080.evil.example/")], false),
            (&[("host", "127.0.0.1:8080")], false),
            (
                &[("host", "127.0.0.1:8080"), ("origin", "http://127.0.0.1:8080"), ("sec-fetch-site", "cross-site")],
                false,
            ),
        ];
        for (h, want) in cases {
            assert_eq!(same_origin(&headers(h)).is_ok(), *want, "{h:?}");
        }
    }

    #[test]
    fn hashes_parse_only_as_64_hex_digits() {
        assert!(parse_hash(&"ab".repeat(32)).is_some());
        assert!(parse_hash(&"ab".repeat(31)).is_none());
        assert!(parse_hash(&"zz".repeat(32)).is_none());
    }
}
