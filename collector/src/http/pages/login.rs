//! Signing in and out of the dashboard with an API token (a session cookie), and where a login may send
//! the browser afterwards ([`safe_next`]).

use crate::http::auth::{self, Via, Viewer};
use crate::http::error::PageError;
use crate::http::views::render;
use crate::http::AppState;
use askama::Template;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Form, Router};
use serde::Deserialize;

pub fn routes() -> Router<AppState> {
    Router::new().route("/login", get(login_form).post(login_post)).route("/logout", axum::routing::post(logout))
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    next: String,
    problem: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LoginQuery {
    next: String,
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
    #[serde(default)]
    next: String,
}

/// Where a login may send the browser: a path of this site, else `/`. Browsers drop tabs and newlines from
/// a `Location` and read `\` as `/`, so `/\t/evil.example` would leave the site: the path must start with
/// one `/`, and hold no `//`, no `\`, no control character and no whitespace.
pub fn safe_next(next: &str) -> &str {
    let local = next.starts_with('/')
        && !next.contains("//")
        && !next.contains('\\')
        && !next.chars().any(|c| c.is_control() || c.is_whitespace());
    if local {
        next
    } else {
        "/"
    }
}

async fn login_form(State(st): State<AppState>, Query(q): Query<LoginQuery>) -> Result<Response, PageError> {
    if st.auth.is_open() {
        return Ok(Redirect::to("/").into_response());
    }
    let page = LoginPage { next: safe_next(&q.next).into(), problem: None };
    render(&page, StatusCode::OK).map_err(|error| PageError { error, next: "/".into() })
}

async fn login_post(
    State(st): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Result<Response, PageError> {
    let err = |error| PageError { error, next: "/".into() };
    auth::same_origin(&headers).map_err(err)?;
    let next = safe_next(&f.next).to_string();
    match st.auth.login(&f.token) {
        Some(id) => {
            let mut res = Redirect::to(&next).into_response();
            if let Ok(v) = HeaderValue::from_str(&auth::session_cookie(&id)) {
                res.headers_mut().insert(header::SET_COOKIE, v);
            }
            Ok(res)
        }
        None => {
            tracing::warn!("dashboard login with an unknown token");
            render(&LoginPage { next, problem: Some("That token is not valid.".into()) }, StatusCode::UNAUTHORIZED)
                .map_err(err)
        }
    }
}

#[derive(Deserialize)]
struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(st): State<AppState>,
    Viewer(p): Viewer,
    headers: HeaderMap,
    Form(f): Form<LogoutForm>,
) -> Result<Response, PageError> {
    st.auth.check_form(&p, &headers, &f.csrf).map_err(|error| PageError { error, next: "/".into() })?;
    if let Via::Session(id) = &p.via {
        st.auth.logout(id);
    }
    let mut res = Redirect::to("/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&auth::clear_cookie()) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_redirects_only_to_local_paths() {
        for ok in ["/", "/coverage?crew=A", "/downtime?from=2025-01-01&to=2025-02-01&offset=100", "/mttr?crew=B%20C"] {
            assert_eq!(safe_next(ok), ok);
        }
        for bad in [
            "",
            "//evil.example/",
            "https://evil.example/",
            "evil.example",
            "/\\evil.example",
            "\\/evil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            "/\r/evil.example",
            "\t//evil.example",
            " /x",
            "/ /evil.example",
            "/x//evil.example",
            "/\u{0}/evil.example",
            "/\u{a0}/evil.example",
            "/\u{2028}/evil.example",
            "javascript:alert(1)",
        ] {
            assert_eq!(safe_next(bad), "/", "{bad:?}");
        }
    }
}
