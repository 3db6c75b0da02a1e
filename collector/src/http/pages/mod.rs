//! The dashboard's pages, one file per page family. Each handler is extractor → one call into the read
//! side ([`crate::query`], off the async threads) → template; shared page parts are in
//! [`super::views`], chart geometry in [`super::svg`].
//!
//! - [`report`]: a page per report of the catalogue (overview, coverage, downtime, MTTR, ...).
//! - [`shift`]: the shift report, page and API.
//! - [`whatif`]: the what-if form and its result.
//! - [`gateways`]: gateway and agent health.
//! - [`import`]: personnel CSV upload (admin).
//! - [`login`]: sign in and out.

pub mod gateways;
pub mod import;
pub mod login;
pub mod report;
pub mod shift;
pub mod whatif;

use super::AppState;
use axum::routing::get;
use axum::Router;

/// Every page, the stylesheet, and the shift report's API.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/assets/style.css", get(super::views::css))
        .merge(report::routes())
        .merge(shift::routes())
        .merge(whatif::routes())
        .merge(gateways::routes())
        .merge(import::routes())
        .merge(login::routes())
}
