//! The sync layer's own state behind [`SyncStore`]: destinations, cursors and counters, dead
//! letters, replay requests and the recent delivery records. [`SqliteSyncStore`] keeps it in
//! `sync.db` in the data folder, [`PgSyncStore`] in PostgreSQL; both pass [`conformance`].

#[cfg(any(test, feature = "testsuite"))]
pub mod conformance;
mod postgres;
mod sqlite;
mod to_postgres;

pub use postgres::PgSyncStore;
pub use sqlite::SqliteSyncStore;
pub use to_postgres::migrate_to_postgres;

use async_trait::async_trait;
use jiff::Timestamp;

use crate::error::{SyncError, SyncResult};
use crate::model::{
    DeadLetter, DeliveryRecord, Destination, DestinationConfig, DestinationPatch, DestinationState,
    NewDestination, Position, Progress, Replay,
};

/// Delivery records kept per destination.
pub const KEPT_DELIVERIES: i64 = 100;

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
    /// The replay requests of a destination not yet taken, oldest first.
    async fn pending_replays(&self, destination_id: &str) -> SyncResult<Vec<Replay>>;
    /// Moves the cursor back (replay since a time).
    async fn rewind(&self, destination_id: &str, cursor: Position) -> SyncResult<()>;
    /// The newest delivery records, newest first.
    async fn deliveries(&self, name: &str, limit: u32) -> SyncResult<Vec<DeliveryRecord>>;
}

/// `dst_` and 26 Crockford base-32 characters: 48 bits of milliseconds, then 80 random bits
/// (a ULID), so ids sort by creation.
pub(crate) fn new_destination_id(now: Timestamp) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let millis = now.as_millisecond().max(0) as u128 & ((1 << 48) - 1);
    let random: u128 = rand::random::<u128>() & ((1 << 80) - 1);
    let mut value = (millis << 80) | random;
    let mut out = [0u8; 26];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(value & 31) as usize];
        value >>= 5;
    }
    format!("dst_{}", String::from_utf8_lossy(&out))
}

pub(crate) fn apply_patch(
    destination: &mut Destination,
    patch: DestinationPatch,
) -> SyncResult<()> {
    if let Some(state) = patch.state {
        destination.state = state;
    }
    if let Some(rate) = patch.rate {
        destination.rate = rate;
    }
    match &mut destination.config {
        DestinationConfig::Segment {
            write_key,
            endpoint,
            only_segment_profiles,
        } => {
            if patch.sources.is_some() {
                return Err(SyncError::invalid(
                    "sources",
                    "a segment destination sends Signalbox's own changes and has no sources",
                ));
            }
            if let Some(new) = patch.endpoint {
                *endpoint = new;
            }
            if let Some(new) = patch.only_segment_profiles {
                *only_segment_profiles = new;
            }
            if let Some(new) = patch.secret {
                *write_key = new;
            }
        }
        DestinationConfig::Klaviyo {
            api_key,
            endpoint,
            sources,
        } => {
            if patch.only_segment_profiles.is_some() {
                return Err(SyncError::invalid(
                    "only_segment_profiles",
                    "applies to segment destinations only",
                ));
            }
            if let Some(new) = patch.endpoint {
                *endpoint = new;
            }
            if let Some(new) = patch.sources {
                *sources = new;
            }
            if let Some(new) = patch.secret {
                *api_key = new;
            }
        }
        DestinationConfig::Webhook {
            url,
            secret,
            sources,
        } => {
            if patch.only_segment_profiles.is_some() {
                return Err(SyncError::invalid(
                    "only_segment_profiles",
                    "applies to segment destinations only",
                ));
            }
            if let Some(new) = patch.endpoint {
                *url = new;
            }
            if let Some(new) = patch.sources {
                *sources = new;
            }
            if let Some(new) = patch.secret {
                *secret = Some(new);
            }
        }
    }
    Ok(())
}
