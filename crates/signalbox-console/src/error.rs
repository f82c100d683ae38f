//! The console's errors, shown as a page.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConsoleError {
    #[error("not found: {0}")]
    NotFound(String),
    /// A form field is wrong; names the field.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// A part of Signalbox the page needs is not running (e.g. engage under `--discard`).
    #[error("{0} is not available on this server")]
    Unavailable(&'static str),
    /// The form's CSRF token is missing or wrong.
    #[error("the form has expired: reload the page and try again")]
    Csrf,
    /// Too many of something at once (the Source debugger's streams); try again later.
    #[error("{message}")]
    Busy {
        message: String,
        retry_after_secs: u64,
    },
    #[error("{0}")]
    Internal(String),
}

impl ConsoleError {
    pub fn internal(err: impl std::fmt::Display) -> ConsoleError {
        ConsoleError::Internal(err.to_string())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ConsoleError::NotFound(_) => StatusCode::NOT_FOUND,
            ConsoleError::Invalid { .. } => StatusCode::BAD_REQUEST,
            ConsoleError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ConsoleError::Csrf => StatusCode::FORBIDDEN,
            ConsoleError::Busy { .. } => StatusCode::TOO_MANY_REQUESTS,
            ConsoleError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        if let ConsoleError::Internal(message) = &self {
            tracing::error!(error = %message, "console page failed");
        }
        let status = self.status();
        let body = crate::render::error_page(status, &self.to_string());
        let mut response = (status, body).into_response();
        if let ConsoleError::Busy {
            retry_after_secs, ..
        } = &self
        {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(*retry_after_secs),
            );
        }
        response
    }
}

pub type ConsoleResult<T> = Result<T, ConsoleError>;
