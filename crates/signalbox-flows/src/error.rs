//! The flows engine's errors: user errors (a definition the caller can fix, an unknown flow)
//! apart from system ones.

use crate::definition::DefinitionProblem;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FlowsError {
    /// The definition was refused; every problem names the JSON pointer at fault.
    #[error("invalid flow definition: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    InvalidDefinition(Vec<DefinitionProblem>),
    /// A request field other than the definition (`name`, `status`) was refused.
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("{what} not found")]
    NotFound { what: String },
    /// Another engine runs on the same `flows.db`.
    #[error("conflict: {reason}")]
    Conflict { reason: String },
    /// The engine stopped (shut down, or its worker failed).
    #[error("unavailable")]
    Unavailable,
    #[error("internal error: {0}")]
    Internal(String),
}

impl FlowsError {
    pub(crate) fn not_found(what: impl Into<String>) -> FlowsError {
        FlowsError::NotFound { what: what.into() }
    }

    pub(crate) fn invalid(field: &str, reason: impl Into<String>) -> FlowsError {
        FlowsError::Invalid {
            field: field.to_owned(),
            reason: reason.into(),
        }
    }
}

impl From<signalbox_engage::EngageError> for FlowsError {
    fn from(err: signalbox_engage::EngageError) -> Self {
        FlowsError::Internal(err.to_string())
    }
}

impl From<crate::deps::DepError> for FlowsError {
    fn from(err: crate::deps::DepError) -> Self {
        FlowsError::Internal(err.to_string())
    }
}

pub type FlowsResult<T> = Result<T, FlowsError>;
