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
fn message_route(shape: Shape) -> MethodRouter<AppState> {
    let body_handler = move |State(app): State<AppState>, headers: HeaderMap, body: Body| async move {
        let limit = shape.body_limit(app.ingest.limits());
        let bytes = read_body(body, limit).await.map_err(SegmentError::from)?;
        ingest(&app, shape, &headers, &bytes).await
    };
    let query_handler =
        move |State(app): State<AppState>,
              headers: HeaderMap,
              query: Result<Query<DataQuery>, QueryRejection>| async move {
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
    let _permit = app.ingest.admit()?;
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
    // Wake the engage pipeline now rather than at its next poll.
    if outcome.appended > 0 {
        if let Some(engage) = &app.engage {
            engage.notify();
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

/// Reads a body of at most `limit` bytes (plus slack for a compressed body's framing), so an
/// oversized request is refused without buffering it whole.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, IngestError> {
    axum::body::to_bytes(body, limit + 1024)
        .await
        .map_err(|err| {
            if !is_length_limit(&err) {
                return IngestError::Invalid(DecodeError {
                    code: RejectCode::UnreadableBody,
                    message: format!("the request body could not be read: {err}"),
                });
            }
            let (code, what) = if limit <= decode::Limits::default().max_message_bytes {
                (RejectCode::MessageTooLarge, "message")
            } else {
                (RejectCode::BatchTooLarge, "batch")
            };
            IngestError::Invalid(DecodeError {
                code,
                message: format!("{what} is over the limit of {limit} bytes"),
            })
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

/// What analytics.js loads before it sends anything; it names this server as its API host.
async fn settings(
    State(app): State<AppState>,
    Path(write_key): Path<String>,
    headers: HeaderMap,
) -> Response {
    let key = WriteKey::new(write_key);
    if let Err(err) = app.ingest.authenticate(&key).await {
        return SegmentError(err).into_response();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1:8080");
    Json(json!({
        "integrations": {
            "Segment.io": {
                "apiKey": key.expose(),
                "apiHost": format!("{host}/v1"),
                "protocol": "http",
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
    let result = match query_data(query) {
        Ok(bytes) => ingest(&app, Shape::Single(kind), &headers, &bytes)
            .await
            .map(|_| ()),
        Err(err) => Err(SegmentError(err)),
    };
    match result {
        Ok(()) => ([(header::CONTENT_TYPE, "image/gif")], GIF).into_response(),
        Err(err) => err.into_response(),
    }
}
