//! One error type for handlers. The API answers `{"error": "..."}` with the status; pages answer an HTML
//! error page, and an unauthenticated page request is redirected to the login form. Internal details are
//! logged, never sent.

use askama::Template;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};

/// A failed request, with the message its reader may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppError {
    pub status: StatusCode,
    pub message: String,
}

impl AppError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, message: message.into() }
    }
    pub fn unauthorized() -> Self {
        Self { status: StatusCode::UNAUTHORIZED, message: "a valid token is required (Authorization: Bearer)".into() }
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self { status: StatusCode::FORBIDDEN, message: message.into() }
    }
    pub fn not_found() -> Self {
        Self { status: StatusCode::NOT_FOUND, message: "not found".into() }
    }
    /// The store failed: logged in full, reported as unavailable.
    pub fn store(e: impl std::fmt::Display) -> Self {
        tracing::warn!(error = %e, "store read failed");
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the store is unavailable; see the collector log".into(),
        }
    }
    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "request failed");
        Self { status: StatusCode::INTERNAL_SERVER_ERROR, message: "internal error; see the collector log".into() }
    }
}

impl From<crate::query::QueryError> for AppError {
    /// A bad parameter is 400 with its message; a store failure is logged and answered 503.
    fn from(e: crate::query::QueryError) -> Self {
        match e {
            crate::query::QueryError::Invalid(m) => Self::bad_request(m),
            crate::query::QueryError::Store(m) => Self::store(m),
        }
    }
}

/// Runs blocking read-side work off the async threads: the one opening of every handler that reads.
///
/// # Errors
/// The work's own error, or an internal error when the task panicked.
pub async fn blocking<T, E>(f: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, AppError>
where
    T: Send + 'static,
    E: Into<AppError> + Send + 'static,
{
    tokio::task::spawn_blocking(f).await.map_err(AppError::internal)?.map_err(Into::into)
}

/// An [`AppError`] answered as JSON.
#[derive(Debug)]
pub struct ApiError(pub AppError);

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        Self(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = axum::Json(serde_json::json!({ "error": self.0.message }));
        if self.0.status == StatusCode::UNAUTHORIZED {
            return (self.0.status, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response();
        }
        (self.0.status, body).into_response()
    }
}

/// An [`AppError`] answered as a page; 401 becomes a redirect to `/login?next=<path>`.
#[derive(Debug)]
pub struct PageError {
    pub error: AppError,
    /// Path and query of the request, to come back to after login.
    pub next: String,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    heading: &'static str,
    message: &'a str,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        if self.error.status == StatusCode::UNAUTHORIZED {
            let q: String = url_encode(&self.next);
            return Redirect::to(&format!("/login?next={q}")).into_response();
        }
        let heading = match self.error.status {
            StatusCode::NOT_FOUND => "Page not found",
            StatusCode::BAD_REQUEST => "This address asks for something the dashboard cannot show",
            StatusCode::FORBIDDEN => "Not allowed",
            _ => "Something is wrong",
        };
        let page = ErrorPage { status: self.error.status.as_u16(), heading, message: &self.error.message };
        match page.render() {
            Ok(html) => (self.error.status, Html(html)).into_response(),
            Err(_) => (self.error.status, self.error.message).into_response(),
        }
    }
}

/// Percent-encodes everything but unreserved characters.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
