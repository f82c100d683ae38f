//! How Klaviyo API failures look on the wire:
//! `{"errors":[{"id","status","code","title","detail","source":{"pointer"|"parameter"},"meta"}]}`.
//!
//! The SDK parses every 4xx/5xx body into a model that requires `id`, `code`, `title` and
//! `detail` on each error, so every error carries all four.
//!
//! This is the one place where domain errors become wire errors: a `From` per domain error,
//! so the same kind of failure answers the same way on every endpoint.
//!
//! | kind        | status | code                  | source                             |
//! |-------------|--------|-----------------------|------------------------------------|
//! | invalid     | 400    | `invalid`             | `pointer` (body) or `parameter`    |
//! | not found   | 404    | `not_found`           |                                    |
//! | conflict    | 409    | `conflict`, `duplicate_profile` (`meta.duplicate_profile_id`) | |
//! | unavailable | 503    | `service_unavailable` | (`Retry-After`)                    |
//! | internal    | 500    | `error`               | details logged, never sent         |

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use signalbox_audience::AudienceError;
use signalbox_engage::EngageError;
use signalbox_flows::FlowsError;

use super::filter::FilterError;
use super::jsonapi::JSONAPI_MEDIA_TYPE;
use crate::telemetry;
use crate::templates::{PreviewError, TemplateStoreError};

/// Seconds a client should wait after a 429 or 503.
const RETRY_AFTER_SECS: u64 = 1;

/// Where in the request the problem is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorSource {
    /// A JSON pointer into the body, e.g. `/data/attributes/email`.
    Pointer(String),
    /// A query parameter or header, e.g. `filter`.
    Parameter(String),
}

/// A failure, boxed so that `Result<_, ApiError>` stays small.
#[derive(Debug, Clone)]
pub struct ApiError(pub Box<Details>);

#[derive(Debug, Clone)]
pub struct Details {
    pub status: StatusCode,
    pub code: &'static str,
    pub title: &'static str,
    pub detail: String,
    pub source: Option<ErrorSource>,
    pub meta: Option<Map<String, Value>>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, title: &'static str, detail: String) -> Self {
        ApiError(Box::new(Details {
            status,
            code,
            title,
            detail,
            source: None,
            meta: None,
        }))
    }

    fn with_source(mut self, source: ErrorSource) -> Self {
        self.0.source = Some(source);
        self
    }

    pub fn status(&self) -> StatusCode {
        self.0.status
    }

    pub fn code(&self) -> &'static str {
        self.0.code
    }

    /// 400 `invalid` about the body at a JSON pointer.
    pub fn invalid_at(pointer: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            "Invalid input.",
            detail.into(),
        )
        .with_source(ErrorSource::Pointer(pointer.into()))
    }

    /// 400 `invalid` about a query parameter or header.
    pub fn invalid_parameter(parameter: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            "Invalid input.",
            detail.into(),
        )
        .with_source(ErrorSource::Parameter(parameter.into()))
    }

    /// 400 `invalid` about a field a domain error names: a JSON pointer (`/data/...`) as is,
    /// a query parameter (`page[cursor]`) as a parameter, an attribute name (dots for nesting)
    /// as a pointer under `/data/attributes`.
    pub fn invalid_field(field: &str, reason: &str) -> Self {
        let detail = format!("{field} {reason}");
        if field.starts_with('/') {
            Self::invalid_at(field, detail)
        } else if field.contains('[') {
            Self::invalid_parameter(field, detail)
        } else {
            Self::invalid_at(
                format!("/data/attributes/{}", field.replace('.', "/")),
                detail,
            )
        }
    }

    /// 500 with nothing of the cause on the wire; the cause goes to the log.
    fn internal_logged(what: &str, detail: &dyn std::fmt::Display) -> Self {
        tracing::error!(detail = %detail, "{what} failed");
        Self::internal()
    }

    /// 400 `invalid` about the `filter` parameter.
    pub fn invalid_filter(err: FilterError) -> Self {
        Self::invalid_parameter("filter", err.message)
    }

    /// 400 `parse_error`: the body is not JSON.
    pub fn parse_error(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "parse_error",
            "Malformed request.",
            detail.into(),
        )
        .with_source(ErrorSource::Pointer("/data".into()))
    }

    pub fn not_authenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "not_authenticated",
            "Authentication credentials were not provided.",
            "send a private API key as 'Authorization: Klaviyo-API-Key pk_...'".into(),
        )
    }

    pub fn authentication_failed() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication_failed",
            "Incorrect authentication credentials.",
            "the private API key is unknown or was deleted".into(),
        )
    }

    /// 403 `permission_denied`: the key is valid but lacks scopes the endpoint requires.
    pub fn permission_denied(missing: &[signalbox_core::Scope]) -> Self {
        let names: Vec<String> = missing.iter().map(ToString::to_string).collect();
        Self::new(
            StatusCode::FORBIDDEN,
            "permission_denied",
            "You do not have permission to perform this action.",
            format!(
                "this API key lacks the scope{} this endpoint requires: {}",
                if names.len() == 1 { "" } else { "s" },
                names.join(", ")
            ),
        )
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "Not found.",
            detail.into(),
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "Method not allowed.",
            "this endpoint does not accept this HTTP method".into(),
        )
    }

    pub fn unsupported_media_type(given: &str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Unsupported media type.",
            format!("content type '{given}' is not supported; send application/vnd.api+json"),
        )
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            "Request body too large.",
            format!("the request body is larger than {limit} bytes"),
        )
    }

    /// 409 `duplicate_profile` with `meta.duplicate_profile_id`, as integrations expect.
    pub fn duplicate_profile(existing_id: &str) -> Self {
        let mut meta = Map::new();
        meta.insert("duplicate_profile_id".into(), json!(existing_id));
        let mut error = Self::new(
            StatusCode::CONFLICT,
            "duplicate_profile",
            "Conflict.",
            "a profile already exists with one of these identifiers".into(),
        );
        error.0.meta = Some(meta);
        error
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", "Conflict.", detail.into())
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "Service unavailable.",
            detail.into(),
        )
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "error",
            "A server error occurred.",
            "internal error".into(),
        )
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        let details = &self.0;
        let mut error = json!({
            "id": uuid::Uuid::new_v4().to_string(),
            "status": details.status.as_u16(),
            "code": details.code,
            "title": details.title,
            "detail": details.detail,
        });
        if let Some(source) = &details.source {
            error["source"] = match source {
                ErrorSource::Pointer(p) => json!({ "pointer": p }),
                ErrorSource::Parameter(p) => json!({ "parameter": p }),
            };
        }
        if let Some(meta) = &details.meta {
            error["meta"] = Value::Object(meta.clone());
        }
        json!({ "errors": [error] })
    }
}

impl From<FilterError> for ApiError {
    fn from(err: FilterError) -> Self {
        ApiError::invalid_filter(err)
    }
}

impl From<EngageError> for ApiError {
    fn from(err: EngageError) -> Self {
        match err {
            EngageError::NotFound { what } => ApiError::not_found(format!("{what} not found")),
            EngageError::DuplicateProfile { id } => ApiError::duplicate_profile(id.as_str()),
            EngageError::Invalid { field, reason } => ApiError::invalid_field(&field, &reason),
            EngageError::Conflict { reason } => ApiError::conflict(reason),
            EngageError::Overloaded => {
                ApiError::unavailable("the event log is busy; retry shortly")
            }
            EngageError::Unavailable => {
                ApiError::unavailable("the engine is unavailable; retry shortly")
            }
            EngageError::Internal(detail) => {
                ApiError::internal_logged("klaviyo api request", &detail)
            }
        }
    }
}

impl From<AudienceError> for ApiError {
    fn from(err: AudienceError) -> Self {
        match err {
            AudienceError::Invalid(errors) => match errors.into_iter().next() {
                Some(first) => ApiError::invalid_at(first.pointer, first.detail),
                None => ApiError::invalid_at("/data/attributes/definition", "invalid definition"),
            },
            AudienceError::NotFound { what } => ApiError::not_found(format!("{what} not found")),
            AudienceError::Conflict { reason } => ApiError::conflict(reason),
            AudienceError::Unavailable => {
                ApiError::unavailable("the segment engine is unavailable; retry shortly")
            }
            AudienceError::Engage(err) => err.into(),
            other => ApiError::internal_logged("segment request", &other),
        }
    }
}

impl From<FlowsError> for ApiError {
    fn from(err: FlowsError) -> Self {
        match err {
            FlowsError::InvalidDefinition(problems) => {
                let Some(first) = problems.first() else {
                    return ApiError::invalid_at(
                        "/data/attributes/definition",
                        "the definition is invalid",
                    );
                };
                let mut detail = first.detail.clone();
                if problems.len() > 1 {
                    let rest: Vec<String> = problems[1..].iter().map(ToString::to_string).collect();
                    detail.push_str(&format!(" (and {} more: {})", rest.len(), rest.join("; ")));
                }
                ApiError::invalid_at(first.pointer.clone(), detail)
            }
            FlowsError::Invalid { field, reason } => ApiError::invalid_field(&field, &reason),
            FlowsError::NotFound { what } => ApiError::not_found(format!("{what} not found")),
            FlowsError::Conflict { reason } => ApiError::conflict(reason),
            FlowsError::Unavailable => {
                ApiError::unavailable("the flows engine is unavailable; retry shortly")
            }
            FlowsError::Internal(detail) => ApiError::internal_logged("flows request", &detail),
        }
    }
}

impl From<TemplateStoreError> for ApiError {
    fn from(err: TemplateStoreError) -> Self {
        match err {
            TemplateStoreError::NotFound(id) => {
                ApiError::not_found(format!("template {id} not found"))
            }
            TemplateStoreError::Invalid { field, reason } => {
                ApiError::invalid_field(field, &reason)
            }
            TemplateStoreError::Internal(detail) => {
                ApiError::internal_logged("template store", &detail)
            }
        }
    }
}

/// A render preview's failures point into the request's `context` (`template-render`).
impl From<PreviewError> for ApiError {
    fn from(err: PreviewError) -> Self {
        match err {
            PreviewError::ProfileNotFound(id) => ApiError::invalid_at(
                "/data/attributes/context/profile_id",
                format!("no profile {id}"),
            ),
            PreviewError::EventNotFound(id) => ApiError::invalid_at(
                "/data/attributes/context/event_id",
                format!("no event {id}"),
            ),
            PreviewError::NoEngine => ApiError::unavailable("the engine is not running"),
            PreviewError::Engage(err) => err.into(),
            PreviewError::Template(err) => {
                ApiError::invalid_at("/data/id", format!("the template does not compile: {err}"))
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.0.status;
        telemetry::request_refused(status.as_u16(), self.0.code);
        let body = serde_json::to_vec(&self.body()).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(JSONAPI_MEDIA_TYPE),
        );
        if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(error: &ApiError) -> Value {
        error.body()["errors"][0]["source"].clone()
    }

    #[test]
    fn the_same_kind_of_failure_answers_the_same_in_every_domain() {
        let not_found: [ApiError; 4] = [
            EngageError::NotFound { what: "x".into() }.into(),
            AudienceError::NotFound { what: "x".into() }.into(),
            FlowsError::NotFound { what: "x".into() }.into(),
            TemplateStoreError::NotFound("x".into()).into(),
        ];
        let conflict: [ApiError; 3] = [
            EngageError::Conflict { reason: "x".into() }.into(),
            AudienceError::Conflict { reason: "x".into() }.into(),
            FlowsError::Conflict { reason: "x".into() }.into(),
        ];
        let unavailable: [ApiError; 4] = [
            EngageError::Unavailable.into(),
            EngageError::Overloaded.into(),
            AudienceError::Unavailable.into(),
            FlowsError::Unavailable.into(),
        ];
        let internal: [ApiError; 4] = [
            EngageError::Internal("secret cause".into()).into(),
            AudienceError::Internal("secret cause".into()).into(),
            FlowsError::Internal("secret cause".into()).into(),
            TemplateStoreError::Internal("secret cause".into()).into(),
        ];
        for (errors, status, code) in [
            (&not_found[..], StatusCode::NOT_FOUND, "not_found"),
            (&conflict[..], StatusCode::CONFLICT, "conflict"),
            (
                &unavailable[..],
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
            ),
            (&internal[..], StatusCode::INTERNAL_SERVER_ERROR, "error"),
        ] {
            for error in errors {
                assert_eq!((error.status(), error.code()), (status, code), "{error:?}");
                assert!(!error.body().to_string().contains("secret cause"));
            }
        }
    }

    #[test]
    fn an_invalid_field_names_a_pointer_or_a_parameter_alike_in_every_domain() {
        let attribute: [ApiError; 3] = [
            EngageError::Invalid {
                field: "location.city".into(),
                reason: "is too long".into(),
            }
            .into(),
            FlowsError::Invalid {
                field: "location.city".into(),
                reason: "is too long".into(),
            }
            .into(),
            ApiError::invalid_field("location.city", "is too long"),
        ];
        for error in &attribute {
            assert_eq!(error.status(), StatusCode::BAD_REQUEST);
            assert_eq!(
                source(error),
                json!({"pointer": "/data/attributes/location/city"})
            );
        }
        let cursor: ApiError = TemplateStoreError::Invalid {
            field: "page[cursor]",
            reason: "is not a cursor".into(),
        }
        .into();
        assert_eq!(source(&cursor), json!({"parameter": "page[cursor]"}));
        let pointer: ApiError = FlowsError::Invalid {
            field: "/data/attributes/definition/actions/0".into(),
            reason: "is wrong".into(),
        }
        .into();
        assert_eq!(
            source(&pointer),
            json!({"pointer": "/data/attributes/definition/actions/0"})
        );
    }
}
