//! The admin API (`/admin/v1/*`), authenticated by private API keys or a console session.
//!
//! It is what the console and its live debugger are built on, and what the `signalbox` CLI
//! offers over HTTP. Bodies and answers are JSON with camelCase fields; listings are
//! `{"data":[…]}`, paged ones add `"next"` (the `after` of the following page, `null` at the
//! end); failures are `{"error":{"code","message","field"}}`.
//!
//! # Layout
//! - [`auth`]: [`AdminKey`], the extractor every handler takes: `Authorization: Bearer pk_…`
//!   or `Authorization: Klaviyo-API-Key pk_…`, checked against the store on each request, or
//!   a console session cookie (with its `X-CSRF-Token` for anything but GET and HEAD).
//! - [`error`]: [`AdminError`], status codes and the error body.
//! - [`extract`]: body, path and query extractors that answer bad input in that format.
//! - one module per resource: [`sources`], [`api_keys`], [`events`] (pages and the live
//!   tail), [`rejections`], [`stats`], [`lists`] (pending confirmations, imports), [`flows`]
//!   (the review queue of messages held by `manual` flows, their approval and skipping),
//!   [`quarantine`] (engage's quarantined log entries and their retry), [`destinations`]
//!   (the sync engine's destinations, their status, dead letters, replays and deliveries;
//!   its fields are the sync model's snake_case names); [`view`] holds what the listings
//!   share.
//!
//! **Invariant:** no route under `/admin/v1/` answers anything but 401 without a valid key or
//! console session, or anything but 403 to a key without the `admin` scope or to a session
//! changing something without its CSRF token, unknown paths and methods included.

pub mod api_keys;
pub mod auth;
pub mod destinations;
pub mod error;
pub mod events;
pub mod extract;
pub mod flows;
pub mod lists;
pub mod quarantine;
pub mod rejections;
pub mod settings;
pub mod sources;
pub mod stats;
pub mod view;

#[cfg(test)]
mod tests;

use axum::routing::{any, get, post};
use axum::Router;

use crate::app::{AppState, Engine};
pub use auth::AdminKey;
pub use error::AdminError;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/admin/v1/sources",
            get(sources::list).post(sources::create),
        )
        .route(
            "/admin/v1/sources/{name}",
            get(sources::get).delete(sources::delete),
        )
        .route(
            "/admin/v1/sources/{name}/rotate-key",
            post(sources::rotate_key),
        )
        .route(
            "/admin/v1/sources/{name}/settings",
            get(settings::get).patch(settings::patch),
        )
        .route("/admin/v1/sources/{name}/disable", post(sources::disable))
        .route("/admin/v1/sources/{name}/enable", post(sources::enable))
        .route(
            "/admin/v1/api-keys",
            get(api_keys::list).post(api_keys::create),
        )
        .route(
            "/admin/v1/api-keys/{name}",
            axum::routing::delete(api_keys::delete),
        )
        .route("/admin/v1/events", get(events::list))
        .route("/admin/v1/events/stream", get(events::stream))
        .route("/admin/v1/rejections", get(rejections::list))
        .route("/admin/v1/stats", get(stats::get))
        .route("/admin/v1/lists/{id}/pending", get(lists::pending))
        .route("/admin/v1/lists/{id}/import", post(lists::import))
        .route("/admin/v1/flows/{id}/messages", get(flows::messages))
        .route(
            "/admin/v1/flows/{id}/messages/{message_id}/approve",
            post(flows::approve),
        )
        .route(
            "/admin/v1/flows/{id}/messages/{message_id}/skip",
            post(flows::skip),
        )
        .route("/admin/v1/engage/quarantine", get(quarantine::list))
        .route(
            "/admin/v1/engage/quarantine/{seq}/retry",
            post(quarantine::retry),
        )
        .route(
            "/admin/v1/destinations",
            get(destinations::list).post(destinations::create),
        )
        .route(
            "/admin/v1/destinations/{name}",
            get(destinations::get)
                .patch(destinations::patch)
                .delete(destinations::delete),
        )
        .route(
            "/admin/v1/destinations/{name}/status",
            get(destinations::status),
        )
        .route(
            "/admin/v1/destinations/{name}/dead-letters",
            get(destinations::dead_letters),
        )
        .route(
            "/admin/v1/destinations/{name}/replay",
            post(destinations::replay),
        )
        .route(
            "/admin/v1/destinations/{name}/deliveries",
            get(destinations::deliveries),
        )
        .method_not_allowed_fallback(method_not_allowed)
        .route("/admin/v1/{*rest}", any(not_found))
}

async fn method_not_allowed(_key: AdminKey) -> AdminError {
    AdminError::MethodNotAllowed
}

async fn not_found(_key: AdminKey) -> AdminError {
    AdminError::NotFound {
        what: "route".into(),
        field: None,
    }
}

/// The engine behind the lists, quarantine and flows routes, or 503 on a server built
/// without it.
fn engine(app: &AppState) -> Result<&Engine, AdminError> {
    app.engine().ok_or(AdminError::Unavailable)
}
