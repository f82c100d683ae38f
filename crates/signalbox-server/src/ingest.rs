//! The ingest service: one Tracking API request from raw bytes to a durable append.
//!
//! Handlers hand it the route's shape, the `Authorization` header and the body; it admits the
//! request (bounded concurrency), decodes it, authenticates the write key, records
//! rejections and appends the accepted calls. It answers only after the store committed.

use std::sync::Arc;

use jiff::Timestamp;
use signalbox_core::{Clock, RejectCode, WriteKey};
use signalbox_store::{AppendOutcome, Store, StoreError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::auth::{self, AuthError, Authenticated, KeyCache};
use crate::segment::decode::{self, DecodeError, Limits, Shape};
use crate::telemetry;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The request as a whole is malformed or over a limit.
    #[error(transparent)]
    Invalid(#[from] DecodeError),
    /// The one message of a single-message route failed validation (it is also recorded).
    #[error("{message}")]
    InvalidMessage { code: RejectCode, message: String },
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// Too many requests in flight: retry shortly.
    #[error("too many requests in flight")]
    Busy,
    /// Too many request body bytes are being read at once: retry shortly.
    #[error("too many request bodies are being read; retry shortly")]
    BodiesBusy,
    /// The request body did not arrive in time.
    #[error("the request body did not arrive within {0:?}")]
    BodyTimedOut(std::time::Duration),
    /// The write queue is full: retry shortly.
    #[error("the event log is busy")]
    Overloaded,
    #[error("the event log is unavailable")]
    Unavailable,
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for IngestError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Overloaded => IngestError::Overloaded,
            StoreError::Unavailable => IngestError::Unavailable,
            other => IngestError::Internal(other.to_string()),
        }
    }
}

/// One Tracking API request as the handler saw it.
pub struct RawRequest<'a> {
    pub shape: Shape,
    pub authorization: Option<&'a str>,
    pub gzip: bool,
    pub body: &'a [u8],
}

pub struct Ingest {
    store: Arc<dyn Store>,
    keys: Arc<KeyCache>,
    clock: Arc<dyn Clock>,
    limits: Limits,
    in_flight: Arc<Semaphore>,
}

impl Ingest {
    pub fn new(
        store: Arc<dyn Store>,
        keys: Arc<KeyCache>,
        clock: Arc<dyn Clock>,
        limits: Limits,
        max_in_flight: usize,
    ) -> Ingest {
        Ingest {
            store,
            keys,
            clock,
            limits,
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Takes a slot for one request, or refuses at once when all are taken.
    pub fn admit(&self) -> Result<OwnedSemaphorePermit, IngestError> {
        Arc::clone(&self.in_flight)
            .try_acquire_owned()
            .map_err(|_| IngestError::Busy)
    }

    /// Authenticates a write key (used by the settings route too).
    pub async fn authenticate(&self, key: &WriteKey) -> Result<Authenticated, IngestError> {
        Ok(self.keys.authenticate(key).await?)
    }

    pub async fn accept(&self, request: RawRequest<'_>) -> Result<AppendOutcome, IngestError> {
        let received_at: Timestamp = self.clock.now();
        let inflated;
        let body = if request.gzip {
            inflated = decode::gunzip(request.body, request.shape, &self.limits)?;
            &inflated[..]
        } else {
            request.body
        };
        let decoded = decode::decode(body, request.shape, received_at, &self.limits)?;
        let key = auth::write_key_from(request.authorization, decoded.write_key)
            .ok_or(AuthError::Missing)?;
        let source = self.keys.authenticate(&key).await?;

        let single_rejection = match request.shape {
            Shape::Single(_) => decoded
                .rejections
                .first()
                .map(|r| (r.code, r.message.clone())),
            Shape::Batch => None,
        };
        for rejection in &decoded.rejections {
            telemetry::events_rejected(rejection.code, 1);
        }
        telemetry::batch_size(decoded.calls.len() + decoded.rejections.len());
        let outcome = self
            .store
            .append(source.source_id, decoded.calls, decoded.rejections)
            .await?;
        telemetry::events_accepted(&source.source_name, outcome.appended);
        telemetry::events_deduplicated(&source.source_name, outcome.duplicates);
        if let Some((code, message)) = single_rejection {
            return Err(IngestError::InvalidMessage { code, message });
        }
        Ok(outcome)
    }
}
