//! The Segment Tracking API routes.

pub mod decode;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use signalbox_core::{CallKind, RejectCode, WriteKey};

use crate::app::AppState;
use crate::auth;
use crate::edge::bodies::{self, COMPRESSED_SLACK};
use crate::error::SegmentError;
use crate::ingest::{IngestError, RawRequest};
use decode::{DecodeError, Shape};

/// `/v1/*` routes; CORS is added by the caller.
pub fn routes() -> Router<AppState> {
    let mut router = Router::new()
        .route("/v1/batch", message_route(Shape::Batch))
        .route("/v1/import", message_route(Shape::Batch))
        .route("/v1/b", message_route(Shape::Batch))
        .route("/v1/projects/{write_key}/settings", get(settings))
        .route("/v1/pixel/{kind}", get(pixel));
    for kind in CallKind::ALL {
        let shape = Shape::Single(kind);
        router = router
            .route(&format!("/v1/{}", kind.as_str()), message_route(shape))
            .route(
                &format!("/v1/{}", &kind.as_str()[..1]),
                message_route(shape),
            );
    }
    router.method_not_allowed_fallback(method_not_allowed)
}

async fn method_not_allowed() -> Response {
    let body = json!({
        "success": false,
        "code": "method_not_allowed",
        "message": "use POST (or GET with ?data= on the browser routes)"
    });
    (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response()
}

#[derive(Deserialize)]
struct DataQuery {
    data: Option<String>,
}

/// POST and PUT take the body; GET (the browser form) takes base64 JSON in `?data=`.
///
/// A body is read only once the request holds an in-flight slot, a write key sent in the
/// `Authorization` header has been checked, and its declared length is within the limit.
fn message_route(shape: Shape) -> MethodRouter<AppState> {
    let body_handler = move |State(app): State<AppState>, headers: HeaderMap, body: Body| async move {
        let _permit = app.ingest.admit()?;
        let limit = shape.body_limit(app.ingest.limits());
        check_header_key(&app, &headers).await?;
        refuse_declared_oversize(&headers, limit)?;
        let bytes = read_body(body, limit).await.map_err(SegmentError::from)?;
        ingest(&app, shape, &headers, &bytes).await
    };
    let query_handler =
        move |State(app): State<AppState>,
              headers: HeaderMap,
              query: Result<Query<DataQuery>, QueryRejection>| async move {
            let _permit = app.ingest.admit()?;
            let bytes = query_data(query)?;
            ingest(&app, shape, &headers, &bytes).await
        };
    post(body_handler).put(body_handler).get(query_handler)
}

#[tracing::instrument(name = "ingest", skip_all, fields(shape = ?shape))]
async fn ingest(
    app: &AppState,
    shape: Shape,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Json<serde_json::Value>, SegmentError> {
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let outcome = app
        .ingest
        .accept(RawRequest {
            shape,
            authorization,
            gzip,
            body,
        })
        .await?;
    // Wake the engage pipeline and the destinations now rather than at their next poll.
    if outcome.appended > 0 {
        if let Some(engine) = app.engine() {
            engine.engage.notify();
        }
        if let Some(sync) = &app.sync {
            sync.notify();
        }
    }
    Ok(Json(json!({"success": true})))
}

/// The decoded `?data=` of a GET route. A query string that does not parse (a repeated
/// `data`) is refused in the Tracking API's error shape, like bad base64.
fn query_data(query: Result<Query<DataQuery>, QueryRejection>) -> Result<Vec<u8>, IngestError> {
    let Query(query) = query.map_err(|_| {
        IngestError::Invalid(DecodeError {
            code: RejectCode::InvalidJson,
            message: "data: expected one data query parameter".into(),
        })
    })?;
    Ok(decode::decode_query_data(
        query.data.as_deref().unwrap_or_default(),
    )?)
}

/// Authenticates a write key sent as the HTTP Basic user name before the body is read, so a
/// wrong key costs no body bytes. A key in the body (browsers) is checked after decoding.
async fn check_header_key(app: &AppState, headers: &HeaderMap) -> Result<(), IngestError> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if let Some(key) = auth::write_key_from(authorization, None) {
        app.ingest.authenticate(&key).await?;
    }
    Ok(())
}

/// Refuses a body whose declared `Content-Length` is over the limit, before reading it.
fn refuse_declared_oversize(headers: &HeaderMap, limit: usize) -> Result<(), IngestError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(length) if length > (limit + COMPRESSED_SLACK) as u64 => Err(too_large(limit)),
        _ => Ok(()),
    }
}

fn too_large(limit: usize) -> IngestError {
    let (code, what) = if limit <= decode::Limits::default().max_message_bytes {
        (RejectCode::MessageTooLarge, "message")
    } else {
        (RejectCode::BatchTooLarge, "batch")
    };
    IngestError::Invalid(DecodeError {
        code,
        message: format!("{what} is over the limit of {limit} bytes"),
    })
}

/// Reads a body of at most `limit` bytes (plus slack for a compressed body's framing), so an
/// oversized request is refused without buffering it whole.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, IngestError> {
    axum::body::to_bytes(body, limit + COMPRESSED_SLACK)
        .await
        .map_err(|err| {
            if let Some(timeout) = bodies::timed_out(&err) {
                return IngestError::BodyTimedOut(timeout);
            }
            if !is_length_limit(&err) {
                return IngestError::Invalid(DecodeError {
                    code: RejectCode::UnreadableBody,
                    message: format!("the request body could not be read: {err}"),
                });
            }
            too_large(limit)
        })
}

fn is_length_limit(err: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(current) = source {
        if current.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = current.source();
    }
    false
}

/// What analytics.js loads before it sends anything; it names this server as its API host:
/// the public URL's `host[:port][/path]` and `/v1`, and its scheme as the protocol (never the
/// request's `Host`).
async fn settings(State(app): State<AppState>, Path(write_key): Path<String>) -> Response {
    let key = WriteKey::new(write_key);
    if let Err(err) = app.ingest.authenticate(&key).await {
        return SegmentError(err).into_response();
    }
    let base = app.links.base_url();
    let (protocol, host) = base.split_once("://").unwrap_or(("http", base));
    Json(json!({
        "integrations": {
            "Segment.io": {
                "apiKey": key.expose(),
                "apiHost": format!("{host}/v1"),
                "protocol": protocol.to_ascii_lowercase(),
                "unbundledIntegrations": [],
                "addBundledMetadata": true,
                "maybeBundledConfigIds": {},
                "versionSettings": {"version": "4.4.7", "componentTypes": ["browser"]}
            }
        },
        "plan": {"track": {"__default": {"enabled": true, "integrations": {}}},
                 "identify": {"__default": {"enabled": true}},
                 "group": {"__default": {"enabled": true}}},
        "edgeFunction": {},
        "analyticsNextEnabled": true,
        "middlewareSettings": {},
        "enabledMiddleware": {},
        "metrics": {"sampleRate": 0.0},
        "legacyVideoPluginsEnabled": false,
        "remotePlugins": []
    }))
    .into_response()
}

/// The image-pixel form: `GET /v1/pixel/track?data=…` answers a 1x1 GIF.
async fn pixel(
    State(app): State<AppState>,
    Path(kind): Path<String>,
    headers: HeaderMap,
    query: Result<Query<DataQuery>, QueryRejection>,
) -> Response {
    const GIF: &[u8] = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;";
    let Some(kind) = CallKind::parse(&kind) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let result = match app
        .ingest
        .admit()
        .and_then(|permit| Ok((permit, query_data(query)?)))
    {
        Ok((_permit, bytes)) => ingest(&app, Shape::Single(kind), &headers, &bytes)
            .await
            .map(|_| ()),
        Err(err) => Err(SegmentError(err)),
    };
    match result {
        Ok(()) => ([(header::CONTENT_TYPE, "image/gif")], GIF).into_response(),
        Err(err) => err.into_response(),
    }
}
