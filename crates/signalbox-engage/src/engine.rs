//! [`Engage`]: the handle the server and the CLI hold.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jiff::SignedDuration;
use signalbox_core::Clock;
use signalbox_store::Store;

use crate::error::{EngageError, EngageResult};
use crate::model::*;

/// How [`Engage::start`] runs.
#[derive(Debug, Clone)]
pub struct EngageConfig {
    /// The derived-state file (`DATA_DIR/engage.db`).
    pub path: PathBuf,
    /// How long a call that cannot be attached to a profile yet is held.
    pub hold_window: SignedDuration,
    /// Log entries applied in one transaction at most.
    pub batch_size: usize,
    /// How often the pipeline looks for new log entries when nobody notified it.
    pub poll_interval: Duration,
    /// How long a synchronous API write waits for the pipeline before answering
    /// [`EngageError::Unavailable`].
    pub apply_timeout: Duration,
}

impl EngageConfig {
    pub fn new(path: impl Into<PathBuf>) -> EngageConfig {
        EngageConfig {
            path: path.into(),
            hold_window: SignedDuration::from_hours(24 * 7),
            batch_size: 4_000,
            poll_interval: Duration::from_millis(20),
            apply_timeout: Duration::from_secs(10),
        }
    }
}

/// The engage engine: queries over derived state, and API writes that go through the log.
/// Cheap to clone.
#[derive(Clone)]
pub struct Engage {
    inner: Arc<Inner>,
}

struct Inner {
    _store: Option<Arc<dyn Store>>,
    _clock: Arc<dyn Clock>,
    _config: EngageConfig,
}

impl Engage {
    /// Opens (creating) the derived state and starts the pipeline that applies the log to it.
    pub async fn start(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        config: EngageConfig,
    ) -> EngageResult<Engage> {
        Ok(Engage {
            inner: Arc::new(Inner {
                _store: Some(store),
                _clock: clock,
                _config: config,
            }),
        })
    }

    pub fn config(&self) -> &EngageConfig {
        &self.inner._config
    }

    /// Tells the pipeline that something was appended to the log (it also polls).
    pub fn notify(&self) {}

    /// The last log sequence number applied to the derived state.
    pub fn applied_seq(&self) -> i64 {
        0
    }

    /// Stops the pipeline after the batch in progress.
    pub async fn shutdown(&self) {}

    pub async fn list_profiles(&self, _q: ProfileQuery) -> EngageResult<Page<Profile>> {
        Err(EngageError::Unavailable)
    }

    /// Follows merge redirects: the id of a profile merged into another finds the survivor.
    pub async fn get_profile(&self, id: &ProfileId) -> EngageResult<Profile> {
        Err(EngageError::not_found(format!("profile {id}")))
    }

    pub async fn list_metrics(&self, _q: MetricQuery) -> EngageResult<Page<Metric>> {
        Err(EngageError::Unavailable)
    }

    pub async fn get_metric(&self, id: &MetricId) -> EngageResult<Metric> {
        Err(EngageError::not_found(format!("metric {id}")))
    }

    pub async fn list_events(&self, _q: EventQuery) -> EngageResult<Page<Event>> {
        Err(EngageError::Unavailable)
    }

    pub async fn get_event(&self, id: &EventId) -> EngageResult<Event> {
        Err(EngageError::not_found(format!("event {id}")))
    }

    pub async fn aggregate(&self, _q: AggregateQuery) -> EngageResult<AggregateResult> {
        Err(EngageError::Unavailable)
    }

    /// Appends the events to the log (durable on return) and lets the pipeline apply them.
    pub async fn create_events(&self, events: Vec<ApiEventInput>) -> EngageResult<()> {
        if events.iter().any(|e| !e.profile.has_identifier()) {
            return Err(EngageError::invalid(
                "profile",
                "needs an id or an identifier",
            ));
        }
        Err(EngageError::Unavailable)
    }

    /// Creates a profile and waits until it is applied; [`EngageError::DuplicateProfile`]
    /// when one of its identifiers belongs to a profile already.
    pub async fn create_profile(&self, _p: ProfileInput) -> EngageResult<Profile> {
        Err(EngageError::Unavailable)
    }

    pub async fn update_profile(&self, _id: &ProfileId, _p: ProfileInput) -> EngageResult<Profile> {
        Err(EngageError::Unavailable)
    }

    /// Creates or updates the profile its identifiers name; `true` when created.
    pub async fn import_profile(&self, _p: ProfileInput) -> EngageResult<(Profile, bool)> {
        Err(EngageError::Unavailable)
    }

    /// Merges `from` into `into` (events move, ids redirect) and returns the survivor.
    pub async fn merge_profiles(
        &self,
        _into: &ProfileId,
        _from: &[ProfileId],
    ) -> EngageResult<Profile> {
        Err(EngageError::Unavailable)
    }
}
