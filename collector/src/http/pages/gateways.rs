//! The gateways page: every gateway and its agent's health, the same [`query::gateways`] call as
//! `/api/v1/gateways`.

use crate::http::auth::Viewer;
use crate::http::error::{blocking, PageError};
use crate::http::views::{nav, page_err, render, table, Nav, Table, Words};
use crate::http::AppState;
use crate::query::{self, Params};
use askama::Template;
use axum::extract::{OriginalUri, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;

pub fn routes() -> Router<AppState> {
    Router::new().route("/gateways", get(gateways))
}

#[derive(Template)]
#[template(path = "gateways.html")]
struct GatewaysPage {
    title: String,
    nav: Nav,
    table: Table,
}

async fn gateways(State(st): State<AppState>, Viewer(p): Viewer, uri: OriginalUri) -> Result<Response, PageError> {
    let err = page_err(&uri);
    let source = st.data.clone();
    let now = chrono::Utc::now().timestamp_millis();
    let rep = blocking(move || query::gateways(&source, now)).await.map_err(&err)?;
    let page = GatewaysPage {
        title: "Gateways and agents".into(),
        nav: nav(&st, &p, "/gateways", &Params::default()),
        table: table(&rep, &Words { people: None, currency: "", tz: "UTC" }),
    };
    render(&page, StatusCode::OK).map_err(&err)
}
