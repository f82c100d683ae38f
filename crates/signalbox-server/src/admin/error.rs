//! How admin API failures look on the wire:
//! `{"error":{"code":"…","message":"…","field":"…"|null}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use signalbox_store::StoreError;
use signalbox_sync::SyncError;

/// Seconds a client should wait after a 503.
const RETRY_AFTER_SECS: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("missing API key: send \"Authorization: Bearer pk_…\" or \"Authorization: Klaviyo-API-Key pk_…\"")]
    MissingApiKey,
    #[error("invalid API key")]
    InvalidApiKey,
    /// A console session cookie that is unknown or expired.
    #[error("the console session is not valid or has expired: sign in again")]
    InvalidSession,
    /// A console session changing something without its CSRF token.
    #[error("missing or wrong X-CSRF-Token header: a console session sends its CSRF token with every request that is not GET or HEAD")]
    MissingCsrfToken,
    /// The key is valid but does not hold the `admin` scope.
    #[error("this API key lacks the 'admin' scope the admin API requires")]
    PermissionDenied,
    /// The body is not a JSON object.
    #[error("{0}")]
    InvalidBody(String),
    /// One input (a body field, a query parameter, a path segment) is wrong.
    #[error("{field}: {message}")]
    InvalidField { field: String, message: String },
    #[error("{what} not found")]
    NotFound {
        what: String,
        /// The input that named the missing thing, when it was not the path.
        field: Option<&'static str>,
    },
    #[error("{what} already exists")]
    Conflict { what: String },
    /// The change does not fit the state of what it names (a message already skipped).
    #[error("{reason}")]
    Refused {
        reason: String,
        /// The input that named it.
        field: Option<&'static str>,
    },
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("the store is overloaded; retry shortly")]
    Overloaded,
    #[error("the store is unavailable")]
    Unavailable,
    /// Details are logged, never sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl AdminError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> AdminError {
        AdminError::InvalidField {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            AdminError::MissingApiKey | AdminError::InvalidApiKey | AdminError::InvalidSession => {
                StatusCode::UNAUTHORIZED
            }
            AdminError::PermissionDenied | AdminError::MissingCsrfToken => StatusCode::FORBIDDEN,
            AdminError::InvalidBody(_) | AdminError::InvalidField { .. } => StatusCode::BAD_REQUEST,
            AdminError::NotFound { .. } => StatusCode::NOT_FOUND,
            AdminError::Conflict { .. } | AdminError::Refused { .. } => StatusCode::CONFLICT,
            AdminError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            AdminError::Overloaded | AdminError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            AdminError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable, machine-readable name of the failure.
    pub fn code(&self) -> &'static str {
        match self {
            AdminError::MissingApiKey => "missing_api_key",
            AdminError::InvalidApiKey => "invalid_api_key",
            AdminError::InvalidSession => "invalid_session",
            AdminError::MissingCsrfToken => "csrf_token_required",
            AdminError::PermissionDenied => "permission_denied",
            AdminError::InvalidBody(_) => "invalid_body",
            AdminError::InvalidField { .. } => "invalid_field",
            AdminError::NotFound { .. } => "not_found",
            AdminError::Conflict { .. } | AdminError::Refused { .. } => "conflict",
            AdminError::MethodNotAllowed => "method_not_allowed",
            AdminError::Overloaded => "overloaded",
            AdminError::Unavailable => "unavailable",
            AdminError::Internal(_) => "internal",
        }
    }

    fn field(&self) -> Option<&str> {
        match self {
            AdminError::InvalidField { field, .. } => Some(field),
            AdminError::NotFound { field, .. } | AdminError::Refused { field, .. } => *field,
            _ => None,
        }
    }

    /// The message clients see: internal details stay in the log.
    pub fn public_message(&self) -> String {
        match self {
            AdminError::InvalidField { message, .. } => message.clone(),
            AdminError::Internal(_) => "internal error".to_owned(),
            other => other.to_string(),
        }
    }
}

impl From<StoreError> for AdminError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound { what } => AdminError::NotFound { what, field: None },
            StoreError::Conflict { what } => AdminError::Conflict { what },
            StoreError::Invalid { field, reason } => AdminError::invalid(field, reason),
            StoreError::Overloaded => AdminError::Overloaded,
            StoreError::Unavailable => AdminError::Unavailable,
            err @ StoreError::SchemaTooNew { .. } => AdminError::Internal(err.to_string()),
            StoreError::Internal(detail) => AdminError::Internal(detail),
        }
    }
}

impl From<SyncError> for AdminError {
    fn from(err: SyncError) -> Self {
        match err {
            SyncError::Invalid { field, message } => AdminError::invalid(field, message),
            SyncError::NotFound(name) => AdminError::NotFound {
                what: format!("destination {name:?}"),
                field: None,
            },
            SyncError::Conflict(name) => AdminError::Conflict {
                what: format!("destination {name:?}"),
            },
            err @ (SyncError::Store(_) | SyncError::Feed(_)) => {
                AdminError::Internal(err.to_string())
            }
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let AdminError::Internal(detail) = &self {
            tracing::error!(detail, "admin request failed");
        }
        let body = json!({"error": {
            "code": self.code(),
            "message": self.public_message(),
            "field": self.field(),
        }});
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        match status {
            StatusCode::UNAUTHORIZED => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"signalbox-admin\""),
                );
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
            }
            _ => {}
        }
        response
    }
}
