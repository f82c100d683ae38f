//! The sync layer's errors.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum SyncError {
    /// A field of a request or command is wrong; names the field.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("no destination named {0:?}")]
    NotFound(String),
    #[error("a destination named {0:?} already exists")]
    Conflict(String),
    /// The store failed (IO, corruption).
    #[error("sync store: {0}")]
    Store(String),
    /// A feed the engine reads (the call log, engage's outbox) failed.
    #[error("feed: {0}")]
    Feed(String),
}

impl SyncError {
    pub fn invalid(field: &str, message: impl Into<String>) -> SyncError {
        SyncError::Invalid {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

impl From<rusqlite::Error> for SyncError {
    fn from(err: rusqlite::Error) -> SyncError {
        SyncError::Store(err.to_string())
    }
}

pub type SyncResult<T> = Result<T, SyncError>;
