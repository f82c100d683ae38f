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

use crate::error::EngageResult;
use crate::ids;
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

/// What a store reads for [`read_changes`]: each part of the feed after its cursor, in the
/// part's order. A store runs them in one read of a consistent state.
pub(crate) trait FeedParts {
    /// Events with `after_pk < pk < before_pk`, at most `limit`.
    fn events(&mut self, after_pk: i64, before_pk: i64, limit: i64)
        -> EngageResult<Vec<FeedEvent>>;

    /// `(pk, changed_seq)` of profiles with `after_seq < changed_seq <= upto_seq`, by
    /// `changed_seq`, at most `limit`.
    fn changed_profiles(
        &mut self,
        after_seq: i64,
        upto_seq: i64,
        limit: i64,
    ) -> EngageResult<Vec<(i64, i64)>>;

    /// Every profile whose `changed_seq` is `seq`.
    fn profiles_changed_at(&mut self, seq: i64) -> EngageResult<Vec<ProfileKey>>;

    /// List changes with `pk > after_pk` and `seq <= upto_seq`, by `pk`, at most `limit`.
    fn list_changes(
        &mut self,
        after_pk: i64,
        upto_seq: i64,
        limit: i64,
    ) -> EngageResult<Vec<ListChange>>;

    /// Merges with `after_seq < seq <= upto_seq`, by `seq`.
    fn merges(&mut self, after_seq: i64, upto_seq: i64) -> EngageResult<Vec<Merge>>;
}

/// The changes after `after`, up to the checkpoint `upto_seq` (entries after it are not read
/// even if committed since), at most `limit` rows of each part.
pub(crate) fn read_changes(
    parts: &mut impl FeedParts,
    after: &FeedCursor,
    upto_seq: i64,
    limit: usize,
) -> EngageResult<Changes> {
    let limit = limit.max(1);
    let limit_sql = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut out = Changes {
        cursor: *after,
        ..Changes::default()
    };
    out.events = parts.events(after.event_pk, ids::event_key(upto_seq + 1, 0), limit_sql)?;
    if let Some(last) = out.events.last() {
        out.cursor.event_pk = last.pk;
    }
    out.more |= out.events.len() >= limit;

    let changed = parts.changed_profiles(after.profile_seq, upto_seq, limit_sql)?;
    let last_seq = changed.last().map_or(after.profile_seq, |&(_, seq)| seq);
    out.profiles = changed.iter().map(|&(pk, _)| ProfileKey(pk)).collect();
    if out.profiles.len() >= limit {
        // Rows of one batch share a seq: the page takes all of the last seq's rows.
        let same = parts.profiles_changed_at(last_seq)?;
        out.profiles.retain(|pk| !same.contains(pk));
        out.profiles.extend(same);
        out.more = true;
    }
    out.profiles.sort_unstable();
    out.profiles.dedup();
    out.cursor.profile_seq = last_seq;

    out.lists = parts.list_changes(after.list_change_pk, upto_seq, limit_sql)?;
    if let Some(last) = out.lists.last() {
        out.cursor.list_change_pk = last.pk;
    }
    out.more |= out.lists.len() >= limit;

    out.merges = parts.merges(after.merge_seq, upto_seq)?;
    if let Some(last) = out.merges.last() {
        out.cursor.merge_seq = last.seq;
    }
    Ok(out)
}

/// The id of an event row, for the feed.
pub(crate) fn feed_event_id(time_us: i64, pk: i64) -> EventId {
    EventId(ids::event_id(time_us, pk))
}
