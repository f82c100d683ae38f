//! The sync layer's own state behind [`SyncStore`]: destinations, cursors and counters, dead
//! letters, replay requests and the recent delivery records. [`SqliteSyncStore`] keeps it in
//! `sync.db` in the data folder; the PostgreSQL backend slots in under the same trait.

#[cfg(any(test, feature = "testsuite"))]
pub mod conformance;
mod sqlite;

pub(crate) use sqlite::apply_patch;
pub use sqlite::{SqliteSyncStore, KEPT_DELIVERIES};

use async_trait::async_trait;
use jiff::Timestamp;

use crate::error::SyncResult;
use crate::model::{
    DeadLetter, DeliveryRecord, Destination, DestinationPatch, DestinationState, NewDestination,
    Position, Progress, Replay,
};

/// A dead letter to keep (its id and destination are the store's).
#[derive(Debug, Clone, PartialEq)]
pub struct NewDeadLetter {
    pub position: Position,
    pub message_id: String,
    pub reason: String,
    pub status: Option<u16>,
    pub response: Option<String>,
    pub payload: serde_json::Value,
}

/// What one step of delivery changes, committed at once.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Commit {
    /// The new cursor, when it moved.
    pub cursor: Option<Position>,
    pub delivered: u64,
    pub retried: u64,
    pub failed: u64,
    pub dead_letters: Vec<NewDeadLetter>,
    /// Dead letters a replay delivered.
    pub replayed: Vec<i64>,
    /// The request's record (its `id` is ignored).
    pub record: Option<DeliveryRecord>,
    /// The last error, or `Some(None)` to clear it after a success.
    pub error: Option<Option<String>>,
    pub at: Option<Timestamp>,
}

#[async_trait]
pub trait SyncStore: Send + Sync + 'static {
    async fn create(&self, new: NewDestination, now: Timestamp) -> SyncResult<Destination>;
    /// Creates a destination in `state` whose cursor starts at `cursor`, in one step: a
    /// running engine never sees it before its cursor is set.
    async fn create_at(
        &self,
        new: NewDestination,
        now: Timestamp,
        state: DestinationState,
        cursor: Position,
    ) -> SyncResult<Destination>;
    async fn list(&self) -> SyncResult<Vec<Destination>>;
    async fn get(&self, name: &str) -> SyncResult<Destination>;
    async fn patch(
        &self,
        name: &str,
        patch: DestinationPatch,
        now: Timestamp,
    ) -> SyncResult<Destination>;
    /// Deletes the destination with its cursor, dead letters and records.
    async fn delete(&self, name: &str) -> SyncResult<()>;
    /// Grows on every change of the destinations or a replay request: a running engine looks
    /// at it every second to pick up changes made by the CLI.
    async fn version(&self) -> SyncResult<u64>;
    async fn progress(&self, destination_id: &str) -> SyncResult<Progress>;
    async fn commit(&self, destination_id: &str, commit: Commit) -> SyncResult<()>;
    /// Dead letters, oldest first; `pending`: only those not yet replayed.
    async fn dead_letters(
        &self,
        name: &str,
        pending: bool,
        limit: u32,
    ) -> SyncResult<Vec<DeadLetter>>;
    async fn request_replay(&self, name: &str, replay: Replay) -> SyncResult<()>;
    /// Takes the oldest replay request of a destination, if any.
    async fn take_replay(&self, destination_id: &str) -> SyncResult<Option<Replay>>;
    /// Moves the cursor back (replay since a time).
    async fn rewind(&self, destination_id: &str, cursor: Position) -> SyncResult<()>;
    /// The newest delivery records, newest first.
    async fn deliveries(&self, name: &str, limit: u32) -> SyncResult<Vec<DeliveryRecord>>;
}
