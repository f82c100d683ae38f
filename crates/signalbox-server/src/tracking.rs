//! The open pixel (`GET /t/o/{token}`) and click redirects (`GET /t/c/{token}`) of the
//! emails Signalbox sends. Each genuine hit becomes a built-in event (`Opened Email`,
//! `Clicked Email`, integration `Signalbox`) on the profile the token was signed for.
//!
//! A HEAD is neither an open nor a click (link scanners and proxies send them to check a
//! link): it gets the same status and headers as the GET, and records nothing. No tracking
//! link changes consent.
//!
//! Tokens are HMAC-signed by [`signalbox_mail::LinkSigner`]: the click's destination is inside
//! the signature, so a forged or altered token is refused (400) and never redirected: no open
//! redirect.
//!
//! Counting: Klaviyo counts every open and click; unique opens and clicks are the `unique`
//! measurement of metric aggregates. We record every hit too, except that hits on the same
//! message (and, for clicks, the same URL) within the same second collapse into one, which
//! is Klaviyo's dedupe rule for events without a unique id and absorbs image proxies and
//! scanners that fetch twice at once.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{Map, Value};
use signalbox_engage::{BuiltinEventInput, BuiltinMetric, ProfileId};
use signalbox_mail::{LinkClaims, LinkKind};

use crate::app::AppState;
use crate::telemetry;

/// A transparent 1×1 GIF.
pub const PIXEL_GIF: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// Longest user agent kept on an event.
const MAX_USER_AGENT: usize = 256;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/t/o/{token}", get(open).head(open_head))
        .route("/t/c/{token}", get(click).head(click_head))
}

#[tracing::instrument(skip_all)]
async fn open(
    State(app): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Response {
    let claims = match app.links.signer().verify(LinkKind::Open, &token) {
        Ok(claims) => claims,
        Err(err) => return refused("open", err),
    };
    record(&app, BuiltinMetric::OpenedEmail, &claims, &headers).await;
    pixel()
}

/// `HEAD /t/o/{token}`: the pixel's headers; no open is recorded.
#[tracing::instrument(skip_all)]
async fn open_head(State(app): State<AppState>, Path(token): Path<String>) -> Response {
    match app.links.signer().verify(LinkKind::Open, &token) {
        Ok(_) => pixel(),
        Err(err) => refused("open", err),
    }
}

#[tracing::instrument(skip_all)]
async fn click(
    State(app): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (claims, location) = match click_target(&app, &token) {
        Ok(target) => target,
        Err(reason) => return refused("click", reason),
    };
    record(&app, BuiltinMetric::ClickedEmail, &claims, &headers).await;
    redirect(location)
}

/// `HEAD /t/c/{token}`: the redirect's headers; no click is recorded.
#[tracing::instrument(skip_all)]
async fn click_head(State(app): State<AppState>, Path(token): Path<String>) -> Response {
    match click_target(&app, &token) {
        Ok((_, location)) => redirect(location),
        Err(reason) => refused("click", reason),
    }
}

fn pixel() -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("image/gif")),
            (header::CACHE_CONTROL, no_store()),
        ],
        PIXEL_GIF,
    )
        .into_response()
}

/// A click token's claims and its destination, or why the link is refused.
fn click_target(app: &AppState, token: &str) -> Result<(LinkClaims, HeaderValue), String> {
    let claims = app
        .links
        .signer()
        .verify(LinkKind::Click, token)
        .map_err(|err| err.to_string())?;
    let location = claims
        .url
        .as_deref()
        .filter(|url| is_web_url(url))
        .and_then(|url| HeaderValue::from_str(url).ok())
        .ok_or_else(|| "the signed destination is not an http(s) URL".to_owned())?;
    Ok((claims, location))
}

fn redirect(location: HeaderValue) -> Response {
    (
        StatusCode::FOUND,
        [
            (header::LOCATION, location),
            (header::CACHE_CONTROL, no_store()),
        ],
    )
        .into_response()
}

fn no_store() -> HeaderValue {
    HeaderValue::from_static("no-store, no-cache, must-revalidate, private")
}

fn is_web_url(url: &str) -> bool {
    let lower = url.trim_start().to_ascii_lowercase();
    lower.starts_with("https://") || lower.starts_with("http://")
}

/// A forged, altered or malformed token: 400, plain text, nothing recorded.
fn refused(kind: &'static str, reason: impl std::fmt::Display) -> Response {
    telemetry::tracking_hit(kind, "refused");
    tracing::debug!(kind, %reason, "tracking link refused");
    (
        StatusCode::BAD_REQUEST,
        [(header::CACHE_CONTROL, no_store())],
        "this link is not valid\n",
    )
        .into_response()
}

/// Appends the built-in event to the log. A failure is logged, never shown: the reader
/// still gets the pixel or the redirect.
async fn record(app: &AppState, metric: BuiltinMetric, claims: &LinkClaims, headers: &HeaderMap) {
    let kind = if metric == BuiltinMetric::ClickedEmail {
        "click"
    } else {
        "open"
    };
    let Some(engage) = app.engine().map(|engine| &engine.engage) else {
        telemetry::tracking_hit(kind, "not_recorded");
        tracing::debug!(
            metric = metric.name(),
            "no engine: tracking hit not recorded"
        );
        return;
    };
    let now = app.clock.now();
    let mut properties = Map::new();
    properties.insert("$message".into(), Value::String(claims.message_id.clone()));
    let mut unique_id = format!(
        "{}:{}:{}",
        metric.name(),
        claims.message_id,
        now.as_second()
    );
    if let Some(url) = &claims.url {
        properties.insert("URL".into(), Value::String(url.clone()));
        unique_id.push(':');
        unique_id.push_str(url);
    }
    if let Some(agent) = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
    {
        let agent: String = agent.chars().take(MAX_USER_AGENT).collect();
        properties.insert("User Agent".into(), Value::String(agent));
    }
    let event = BuiltinEventInput {
        metric,
        profile_id: ProfileId(claims.profile_id.clone()),
        properties,
        time: Some(now),
        unique_id: Some(unique_id),
    };
    match engage.record_builtin_event(event).await {
        Ok(_) => telemetry::tracking_hit(kind, "recorded"),
        Err(err) => {
            telemetry::tracking_hit(kind, "not_recorded");
            tracing::warn!(metric = metric.name(), error = %err, "tracking hit not recorded");
        }
    }
}
