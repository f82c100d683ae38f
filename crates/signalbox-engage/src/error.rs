//! Engage's errors: user errors (the caller can fix them) apart from system ones.

use crate::model::ProfileId;

#[derive(Debug, Clone, PartialEq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum EngageError {
    #[error("{what} not found")]
    NotFound { what: String },
    /// A profile with one of the given identifiers exists already.
    #[error("a profile with one of these identifiers exists already: {id}")]
    DuplicateProfile { id: ProfileId },
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },
    /// The request contradicts the current state (e.g. two identifiers of two profiles).
    #[error("conflict: {reason}")]
    Conflict { reason: String },
    /// The log's write queue is full: retry shortly.
    #[error("overloaded")]
    Overloaded,
    /// Shutting down, opened read-only, or the pipeline did not catch up in time.
    #[error("unavailable")]
    Unavailable,
    #[error("internal error: {0}")]
    Internal(String),
}

impl EngageError {
    pub(crate) fn invalid(field: &str, reason: impl Into<String>) -> EngageError {
        EngageError::Invalid {
            field: field.to_owned(),
            reason: reason.into(),
        }
    }

    pub(crate) fn not_found(what: impl Into<String>) -> EngageError {
        EngageError::NotFound { what: what.into() }
    }
}

impl From<signalbox_store::StoreError> for EngageError {
    fn from(err: signalbox_store::StoreError) -> Self {
        use signalbox_store::StoreError;
        match err {
            StoreError::NotFound { what } => EngageError::NotFound { what },
            StoreError::Conflict { what } => EngageError::Conflict {
                reason: format!("{what} already exists"),
            },
            StoreError::Invalid { field, reason } => EngageError::Invalid {
                field: field.to_owned(),
                reason,
            },
            StoreError::Overloaded => EngageError::Overloaded,
            StoreError::Unavailable => EngageError::Unavailable,
            err @ StoreError::SchemaTooNew { .. } => EngageError::Internal(err.to_string()),
            StoreError::Internal(msg) => EngageError::Internal(msg),
        }
    }
}

pub type EngageResult<T> = Result<T, EngageError>;
