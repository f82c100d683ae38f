//! The change feed: what the pipeline changed, in log order, for the engines that follow
//! derived state (audiences and flows) without rescanning it.
//!
//! A follower keeps a [`FeedCursor`] in its own store, reads [`Changes`] after it up to the
//! checkpoint it was told about ([`crate::Engage::subscribe_applied`]) through its
//! [`crate::EngageReader`] ([`crate::EngageReader::changes`]), acts, and saves the
//! cursor with what it did: at-least-once reading, and its own idempotence makes the effect
//! exactly once.
//!
//! Every part is keyed by something the applier writes in the same transaction as the
//! checkpoint: event row keys (made from log sequence numbers), `profiles.changed_seq`,
//! `list_changes.pk` and `redirects.seq`. So reading up to a committed checkpoint never sees
//! half a batch. (The SQLite reads are `db/feed.rs`, behind [`crate::EngageReader`].)

use crate::model::{EventId, MetricId, ProfileKey};

/// Where a follower is in the feed. `Default` is the beginning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FeedCursor {
    /// The last event row key read.
    pub event_pk: i64,
    /// The last `changed_seq` of profiles read.
    pub profile_seq: i64,
    /// The last list change read.
    pub list_change_pk: i64,
    /// The last merge's log sequence number read.
    pub merge_seq: i64,
}

/// An event the pipeline stored.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedEvent {
    pub pk: i64,
    pub id: EventId,
    pub profile_pk: ProfileKey,
    pub metric_pk: i64,
    pub metric_id: MetricId,
    pub metric_name: String,
    pub integration: String,
    pub time_us: i64,
    pub value: Option<f64>,
    /// The event's properties, as stored (a JSON object).
    pub properties: String,
}

/// A change of list membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListChange {
    pub pk: i64,
    pub seq: i64,
    pub list_id: String,
    pub profile_pk: ProfileKey,
    /// `added`, `pending`, `confirmed` or `removed`.
    pub change: String,
    pub at_us: i64,
}

/// A merge: `from_pk` no longer exists; its data now belongs to `to_pk`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Merge {
    pub from_pk: ProfileKey,
    pub to_pk: ProfileKey,
    pub seq: i64,
}

/// What changed after a cursor, and the cursor after it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes {
    pub events: Vec<FeedEvent>,
    /// Profiles created or changed (fields, properties, consent, lists), each once.
    pub profiles: Vec<ProfileKey>,
    pub lists: Vec<ListChange>,
    pub merges: Vec<Merge>,
    pub cursor: FeedCursor,
    /// True when a part stopped at `limit`: read again.
    pub more: bool,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
            && self.profiles.is_empty()
            && self.lists.is_empty()
            && self.merges.is_empty()
    }
}
