//! The Klaviyo-compatible REST API (`/api/*`), so Klaviyo's SDKs and integrations can talk to
//! Signalbox as they talk to Klaviyo.
//!
//! # Layout
//! - [`auth`]: the [`auth::Caller`] extractor (private key, its scopes, `revision` header, the
//!   Engage handle).
//! - [`scopes`]: what each route requires of the key, as the type parameter of `Caller`.
//! - [`jsonapi`]: documents, resource objects, links, shared query parameters, body reading.
//! - [`filter`]: the `filter` syntax, parsed and checked against each endpoint's table.
//! - [`error`]: the `errors[]` shape every failure takes, and the one mapping of domain errors
//!   (engine, audience, flows, templates) to it.
//! - [`origin`]: the `Signalbox-Origin` header of writes forwarded from a Segment source.
//! - One module per resource: [`metrics`], [`events`], [`profiles`], [`aggregates`],
//!   [`lists`], [`subscriptions`] (subscription and suppression jobs), [`templates`],
//!   [`flows`], [`segments`].
//!
//! **Invariant:** this is the only code that knows Klaviyo's wire format; handlers translate
//! JSON:API to `signalbox_engage` types and back, and hold no business rules. An unsupported
//! filter, field, include, sort or body attribute is a 400 that names it, never ignored.
//!
//! **Invariant:** every handler takes a `Caller<R>`, so none runs for a key that lacks the
//! scopes `R` names (403 `permission_denied`); a test checks each route's set against a table
//! of Klaviyo's.

pub mod aggregates;
pub mod auth;
pub mod error;
pub mod events;
pub mod filter;
pub mod flows;
pub mod jsonapi;
pub mod lists;
pub mod metrics;
pub mod origin;
pub mod profiles;
pub mod scopes;
pub mod segments;
pub mod subscriptions;
pub mod templates;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::http::{header, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use serde_json::Value;

use crate::app::{AppState, Engine};
use error::ApiError;

/// Largest request body: Klaviyo's bulk limit (5 MB).
pub const MAX_BODY_BYTES: usize = 5 * 1024 * 1024;

pub fn routes() -> Router<AppState> {
    let api = Router::new()
        .route("/metrics", get(metrics::list))
        .route("/metrics/{id}", get(metrics::get))
        .route("/metric-aggregates", post(aggregates::query))
        .route("/events", get(events::list).post(events::create))
        .route("/events/{id}", get(events::get))
        .route("/event-bulk-create-jobs", post(events::bulk_create))
        .route("/profiles", get(profiles::list).post(profiles::create))
        .route("/profiles/{id}", get(profiles::get).patch(profiles::update))
        .route("/profile-import", post(profiles::import))
        .route("/profile-merge", post(profiles::merge))
        .route("/lists", get(lists::list).post(lists::create))
        .route(
            "/lists/{id}",
            get(lists::get).patch(lists::update).delete(lists::delete),
        )
        .route("/lists/{id}/profiles", get(lists::profiles))
        .route(
            "/lists/{id}/relationships/profiles",
            post(lists::add_profiles).delete(lists::remove_profiles),
        )
        .route(
            "/profile-subscription-bulk-create-jobs",
            post(subscriptions::subscribe),
        )
        .route(
            "/profile-subscription-bulk-delete-jobs",
            post(subscriptions::unsubscribe),
        )
        .route(
            "/profile-suppression-bulk-create-jobs",
            post(subscriptions::suppress),
        )
        .route(
            "/profile-suppression-bulk-delete-jobs",
            post(subscriptions::unsuppress),
        )
        .route("/templates", get(templates::list).post(templates::create))
        .route(
            "/templates/{id}",
            get(templates::get)
                .patch(templates::update)
                .delete(templates::delete),
        )
        .route("/template-render", post(templates::render))
        .route("/flows", get(flows::list).post(flows::create))
        .route(
            "/flows/{id}",
            get(flows::get).patch(flows::update).delete(flows::delete),
        )
        .route("/profiles/{id}/segments", get(segments::of_profile))
        .route("/segments", get(segments::list).post(segments::create))
        .route(
            "/segments/{id}",
            get(segments::get)
                .patch(segments::update)
                .delete(segments::delete),
        )
        .route("/segments/{id}/profiles", get(segments::members))
        .route(
            "/segments/{id}/explanations/{profile_id}",
            get(segments::explanation),
        )
        .route("/segment-previews", post(segments::preview))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    Router::new().nest("/api", api)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

/// A JSON:API request body, parsed as JSON. Accepts `application/vnd.api+json`,
/// `application/json`, or no content type.
pub struct Body(pub Value);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        if let Some(content_type) = request.headers().get(header::CONTENT_TYPE) {
            let given = content_type.to_str().unwrap_or("");
            let essence = given.split(';').next().unwrap_or("").trim();
            if !essence.eq_ignore_ascii_case(jsonapi::JSONAPI_MEDIA_TYPE)
                && !essence.eq_ignore_ascii_case("application/json")
            {
                return Err(ApiError::unsupported_media_type(given));
            }
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::payload_too_large(MAX_BODY_BYTES)
                } else {
                    ApiError::parse_error("the request body could not be read")
                }
            })?;
        if bytes.is_empty() {
            return Err(ApiError::parse_error("the request body is empty"));
        }
        let value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::parse_error(format!("the body is not valid JSON: {e}")))?;
        Ok(Body(value))
    }
}

#[cfg(test)]
mod tests;

/// The engine behind every `/api/*` route, or 503 on a server built without it.
pub(crate) fn engine(app: &AppState) -> Result<&Engine, ApiError> {
    app.engine().ok_or_else(|| {
        ApiError::unavailable("the Klaviyo-compatible API is not running on this server")
    })
}
