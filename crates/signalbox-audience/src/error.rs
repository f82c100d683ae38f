//! What audience operations fail with.

use signalbox_engage::EngageError;
use signalbox_seglang::DefinitionError;

#[derive(Debug, thiserror::Error)]
pub enum AudienceError {
    /// The definition does not parse (or forms a membership cycle); each error carries the
    /// JSON pointer of the value at fault.
    #[error("invalid definition: {}", .0.first().map(ToString::to_string).unwrap_or_default())]
    Invalid(Vec<DefinitionError>),
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("{reason}")]
    Conflict { reason: String },
    #[error("the audience engine is not running")]
    Unavailable,
    #[error(transparent)]
    Engage(#[from] EngageError),
    /// The store failed (the backend's error, as text).
    #[error("audience database: {0}")]
    Db(String),
    /// The store was written by a newer build; this one refuses to touch it.
    #[error("audience database schema version {found} is newer than this build knows ({known})")]
    SchemaTooNew { found: usize, known: usize },
    #[error("{0}")]
    Internal(String),
}

pub type AudienceResult<T> = Result<T, AudienceError>;
