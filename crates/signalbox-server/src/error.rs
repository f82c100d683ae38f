//! How Tracking API failures look on the wire: `{"success":false,"code":…,"message":…}`.
//!
//! The Python library reads `code` from every non-200 body, so every error carries one.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::auth::AuthError;
use crate::ingest::IngestError;
use crate::telemetry;

/// Seconds a client should wait after a 429 or 503.
const RETRY_AFTER_SECS: u64 = 1;

pub struct SegmentError(pub IngestError);

impl From<IngestError> for SegmentError {
    fn from(err: IngestError) -> Self {
        SegmentError(err)
    }
}

impl SegmentError {
    fn parts(&self) -> (StatusCode, &'static str) {
        match &self.0 {
            IngestError::Invalid(e) => (StatusCode::BAD_REQUEST, e.code.as_str()),
            IngestError::InvalidMessage { code, .. } => (StatusCode::BAD_REQUEST, code.as_str()),
            IngestError::Auth(AuthError::Missing) => {
                (StatusCode::UNAUTHORIZED, "missing_write_key")
            }
            IngestError::Auth(AuthError::Unknown) => {
                (StatusCode::UNAUTHORIZED, "unknown_write_key")
            }
            IngestError::Auth(AuthError::Disabled) => {
                (StatusCode::UNAUTHORIZED, "disabled_write_key")
            }
            IngestError::Auth(AuthError::Store(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            IngestError::Busy => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            IngestError::BodiesBusy => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            IngestError::BodyTimedOut(_) => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            IngestError::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            IngestError::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            IngestError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for SegmentError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        let message = match &self.0 {
            IngestError::Internal(detail) => {
                tracing::error!(detail, "ingest failed");
                "internal error".to_owned()
            }
            other => other.to_string(),
        };
        if !matches!(self.0, IngestError::InvalidMessage { .. }) {
            telemetry::request_refused(status.as_u16(), code);
        }
        let mut response = (
            status,
            Json(json!({"success": false, "code": code, "message": message})),
        )
            .into_response();
        if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
            let secs = HeaderValue::from(RETRY_AFTER_SECS);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, secs.clone());
            response.headers_mut().insert("x-ratelimit-reset", secs);
        }
        response
    }
}
