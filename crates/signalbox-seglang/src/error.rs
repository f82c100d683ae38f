//! Why a definition was refused, in a form that maps onto Klaviyo's JSON:API error objects.

use serde_json::{json, Value};

/// One problem in a definition. Parsing reports every problem it finds, in document order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pointer}: {detail}")]
pub struct DefinitionError {
    /// JSON pointer (RFC 6901) of the offending value, e.g.
    /// `/data/attributes/definition/condition_groups/0/conditions/1/measurement_filter/operator`.
    pub pointer: String,
    pub code: ErrorCode,
    /// Lowercase, no trailing period.
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorCode {
    /// Not a valid definition (Klaviyo's `invalid`).
    Invalid,
    /// Valid for Klaviyo, but a feature this engine does not evaluate (regex filters,
    /// predictive analytics, postal-code distance …).
    Unsupported,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Invalid => "invalid",
            ErrorCode::Unsupported => "unsupported",
        }
    }
}

impl DefinitionError {
    pub(crate) fn invalid(pointer: String, detail: impl Into<String>) -> DefinitionError {
        DefinitionError {
            pointer,
            code: ErrorCode::Invalid,
            detail: detail.into(),
        }
    }

    pub(crate) fn unsupported(pointer: String, detail: impl Into<String>) -> DefinitionError {
        DefinitionError {
            pointer,
            code: ErrorCode::Unsupported,
            detail: detail.into(),
        }
    }

    /// The error as a JSON:API error object the way Klaviyo shapes them:
    /// `{"status":400,"code":…,"title":…,"detail":…,"source":{"pointer":…}}`. The HTTP layer
    /// adds the per-response `id`.
    pub fn to_json_api(&self) -> Value {
        let title = match self.code {
            ErrorCode::Invalid => "Invalid input.",
            ErrorCode::Unsupported => "Unsupported input.",
        };
        json!({
            "status": 400,
            "code": self.code.as_str(),
            "title": title,
            "detail": self.detail,
            "source": { "pointer": self.pointer },
        })
    }
}

/// Escapes one reference token of a JSON pointer (`~` → `~0`, `/` → `~1`).
pub(crate) fn escape_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}
