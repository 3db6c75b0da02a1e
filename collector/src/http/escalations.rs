//! Escalation over HTTP: the acknowledge link (`GET /ack/{token}` shows what it is about and a confirm
//! button, `POST /ack/{token}` acknowledges), the same for API clients (`POST /api/v1/ack/{token}`), and
//! the live board of open stops (`GET /escalations`, `GET /api/v1/escalations`).
//!
//! The token in the link is the credential (single use, expiring, stored as its SHA-256), so the ack routes
//! need no login; the POST still passes the cross-site check of every state-changing request ([`guard`]),
//! which the page's own form does. Expired, used and unknown tokens are refused with 410, 410 and 404.
//!
//! [`guard`]: super::guard

use super::auth::Viewer;
use super::error::{ApiError, AppError, PageError};
use super::views::render;
use super::AppState;
use crate::escalate::runner::token_hash;
use crate::report::join;
use crate::store::escalations::{self as db, AckOutcome, Db};
use crate::store::reads::ReadError;
use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ack/{token}", get(ack_page).post(ack_form))
        .route("/api/v1/ack/{token}", post(ack_api))
        .route("/escalations", get(board_page))
        .route("/api/v1/escalations", get(board_api))
}

/// Seconds between refreshes of the board page.
const REFRESH_S: u32 = 10;

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A token as it may appear in a link: 64 hex digits. Anything else is unknown without a store lookup.
fn parse_token(t: &str) -> Option<[u8; 32]> {
    (t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit())).then(|| token_hash(&t.to_ascii_lowercase()))
}

fn local(st: &AppState, ms: i64) -> String {
    let tz = st.data.settings().tz;
    chrono::DateTime::from_timestamp_millis(ms)
        .map_or(String::new(), |d| d.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S %Z").to_string())
}

fn minutes(ms: i64) -> String {
    let s = (ms / 1000).max(0);
    if s < 3600 {
        format!("{} min {} s", s / 60, s % 60)
    } else {
        format!("{} h {} min", s / 3600, (s % 3600) / 60)
    }
}

/// Runs `f` on its own store connection (SQLite, or the shared PostgreSQL store) off the async threads:
/// read-only unless `write`.
async fn blocking<R: Send + 'static>(
    st: &AppState,
    write: bool,
    f: impl FnOnce(&mut Db) -> Result<R, ReadError> + Send + 'static,
) -> Result<R, AppError> {
    let path = st.data.db().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut conn = Db::at(&path, write).map_err(AppError::internal)?;
        let r = f(&mut conn).map_err(AppError::internal);
        conn.close();
        r
    })
    .await
    .map_err(AppError::internal)?
}

#[derive(Template)]
#[template(path = "ack.html")]
struct AckPage {
    heading: String,
    asset: String,
    site: String,
    since: String,
    message: String,
    confirm: bool,
    token: String,
}

async fn ack_page(State(st): State<AppState>, Path(token): Path<String>) -> Result<Response, PageError> {
    let err = |error| PageError { error, next: "/".into() };
    let not_found =
        || err(AppError { status: StatusCode::NOT_FOUND, message: "This acknowledge link is not known.".into() });
    let hash = parse_token(&token).ok_or_else(not_found)?;
    let info = blocking(&st, false, move |c| c.token(&hash)).await.map_err(err)?.ok_or_else(not_found)?;
    let now = now_ms();
    let (status, heading, message, confirm) = if let Some(at) = info.used_ms {
        (
            StatusCode::GONE,
            "Link already used",
            format!("This link was used at {}; each link works once.", local(&st, at)),
            false,
        )
    } else if now >= info.expires_ms {
        (StatusCode::GONE, "Link expired", format!("This link expired at {}.", local(&st, info.expires_ms)), false)
    } else if let Some((by, at)) = &info.acked {
        (StatusCode::OK, "Already acknowledged", format!("{by} acknowledged this stop at {}.", local(&st, *at)), false)
    } else if !info.stop_open {
        (StatusCode::OK, "Stop is over", "This stop has ended; nothing to acknowledge.".to_string(), false)
    } else {
        (
            StatusCode::OK,
            "Acknowledge this stop",
            format!("Waiting for {}. Confirm that you are responding.", minutes(now - info.start_ms)),
            true,
        )
    };
    let page = AckPage {
        heading: heading.into(),
        asset: info.asset,
        site: info.site,
        since: local(&st, info.start_ms),
        message,
        confirm,
        token,
    };
    render(&page, status).map_err(err)
}

/// The answer to using a token.
#[derive(Debug, Serialize)]
pub struct AckAnswer {
    pub outcome: &'static str,
    pub stop: Option<String>,
    pub person: Option<String>,
    /// Stop start → this acknowledgement, in seconds.
    pub response_s: Option<f64>,
    pub message: String,
}

async fn use_token(st: &AppState, token: &str, via: &'static str) -> Result<(StatusCode, AckAnswer), AppError> {
    let unknown = AckAnswer {
        outcome: "unknown",
        stop: None,
        person: None,
        response_s: None,
        message: "This acknowledge link is not known.".into(),
    };
    let Some(hash) = parse_token(token) else { return Ok((StatusCode::NOT_FOUND, unknown)) };
    let now = now_ms();
    let outcome = blocking(st, true, move |c| c.acknowledge(&hash, via, now)).await?;
    Ok(match outcome {
        AckOutcome::Acknowledged { person, stop_key, response_ms } => {
            tracing::info!(stop = %stop_key, via, response_s = response_ms / 1000, "escalated stop acknowledged");
            (
                StatusCode::OK,
                AckAnswer {
                    outcome: "acknowledged",
                    message: format!("Thank you: acknowledged {} after the stop began.", minutes(response_ms)),
                    stop: Some(stop_key),
                    person: Some(person),
                    response_s: Some(response_ms as f64 / 1000.0),
                },
            )
        }
        AckOutcome::AlreadyAcknowledged { by, at_ms } => (
            StatusCode::CONFLICT,
            AckAnswer {
                outcome: "already_acknowledged",
                message: format!("{by} acknowledged this stop first, at {}.", local(st, at_ms)),
                stop: None,
                person: Some(by),
                response_s: None,
            },
        ),
        AckOutcome::Used { at_ms } => (
            StatusCode::GONE,
            AckAnswer {
                outcome: "used",
                message: format!("This link was used at {}; each link works once.", local(st, at_ms)),
                stop: None,
                person: None,
                response_s: None,
            },
        ),
        AckOutcome::Expired => (
            StatusCode::GONE,
            AckAnswer {
                outcome: "expired",
                message: "This link has expired.".into(),
                stop: None,
                person: None,
                response_s: None,
            },
        ),
        AckOutcome::StopOver => (
            StatusCode::CONFLICT,
            AckAnswer {
                outcome: "stop_over",
                message: "This stop has ended; nothing to acknowledge.".into(),
                stop: None,
                person: None,
                response_s: None,
            },
        ),
        AckOutcome::Unknown => (StatusCode::NOT_FOUND, unknown),
    })
}

async fn ack_form(State(st): State<AppState>, Path(token): Path<String>) -> Result<Response, PageError> {
    let err = |error| PageError { error, next: "/".into() };
    let (status, a) = use_token(&st, &token, "link").await.map_err(err)?;
    let heading = match a.outcome {
        "acknowledged" => "Acknowledged",
        "already_acknowledged" => "Already acknowledged",
        "used" => "Link already used",
        "expired" => "Link expired",
        "stop_over" => "Stop is over",
        _ => "Unknown link",
    };
    let page = AckPage {
        heading: heading.into(),
        asset: a.stop.as_deref().and_then(|k| k.split('/').nth(1)).unwrap_or("-").into(),
        site: a.stop.as_deref().and_then(|k| k.split('/').next()).unwrap_or("-").into(),
        since: "-".into(),
        message: a.message,
        confirm: false,
        token: String::new(),
    };
    render(&page, status).map_err(err)
}

async fn ack_api(State(st): State<AppState>, Path(token): Path<String>) -> Result<Response, ApiError> {
    let (status, a) = use_token(&st, &token, "api").await?;
    Ok((status, Json(a)).into_response())
}

/// One open stop on the board.
#[derive(Debug, Serialize)]
pub struct BoardRow {
    pub stop: String,
    pub site: String,
    pub asset: String,
    pub start_ms: i64,
    pub waited_s: i64,
    /// `yes`, `no` or `no roster` (the join's word).
    pub covered: String,
    pub missing: Vec<String>,
    pub messages: Vec<db::BoardMessage>,
    /// (person, via, when).
    pub acknowledged: Option<(String, String, i64)>,
}

async fn board_rows(st: &AppState) -> Result<Vec<BoardRow>, AppError> {
    let settings = st.data.settings().clone();
    let now = now_ms();
    blocking(st, false, move |c| {
        let p = c.people(settings)?;
        let open = c.open_downtime()?;
        let joined: Vec<_> = open.iter().map(|d| join::join_one(&p, d)).collect();
        let keys: Vec<String> = joined.iter().map(|j| j.key.clone()).collect();
        let (mut msgs, mut acks) = c.board(&keys)?;
        Ok(joined
            .into_iter()
            .map(|j| BoardRow {
                messages: msgs.remove(&j.key).unwrap_or_default(),
                acknowledged: acks.remove(&j.key),
                covered: j.covered_word().into(),
                waited_s: (now - j.start_ms) / 1000,
                stop: j.key,
                site: j.site,
                asset: j.asset,
                start_ms: j.start_ms,
                missing: j.missing,
            })
            .collect())
    })
    .await
}

async fn board_api(State(st): State<AppState>, Viewer(_): Viewer) -> Result<Response, ApiError> {
    Ok(Json(board_rows(&st).await?).into_response())
}

struct Row {
    asset: String,
    site: String,
    since: String,
    waited: String,
    covered: String,
    missing: String,
    asked: Vec<String>,
    acked: String,
}

#[derive(Template)]
#[template(path = "escalations.html")]
struct Board {
    now: String,
    refresh_s: u32,
    enabled: bool,
    rows: Vec<Row>,
}

async fn board_page(State(st): State<AppState>, Viewer(_): Viewer) -> Result<Response, PageError> {
    let err = |error| PageError { error, next: "/escalations".into() };
    let rows = board_rows(&st).await.map_err(err)?;
    let rows = rows
        .into_iter()
        .map(|r| Row {
            since: local(&st, r.start_ms),
            waited: minutes(r.waited_s * 1000),
            covered: r.covered,
            missing: r.missing.join(" "),
            asked: r
                .messages
                .iter()
                .map(|m| match &m.person {
                    Some(p) => format!(
                        "rung {}: {p} ({}, {}) {}",
                        m.rung + 1,
                        m.availability.as_deref().unwrap_or("-"),
                        m.channel.as_deref().unwrap_or("-"),
                        m.state
                    ),
                    None => format!("rung {}: nobody reachable ({})", m.rung + 1, m.target),
                })
                .collect(),
            acked: r.acknowledged.map_or("-".into(), |(p, via, at)| {
                format!("{p} at {} (after {}, via {via})", local(&st, at), minutes(at - r.start_ms))
            }),
            asset: r.asset,
            site: r.site,
        })
        .collect();
    let page = Board { now: local(&st, now_ms()), refresh_s: REFRESH_S, enabled: st.escalation, rows };
    render(&page, StatusCode::OK).map_err(err)
}
