//! Engage's read side for the engines that follow it (segments, flows, confirmation emails):
//! [`EngageReader`], what they may read of engage's state, in engage's own terms.
//!
//! A follower gets a reader from its [`crate::Engage`] handle ([`crate::Engage::reader`]) and
//! keeps it on its own blocking thread: every method is synchronous and may do IO. Which
//! store is behind it is engage's business; no connection, file or storage error crosses
//! this boundary, only engage's types and [`crate::EngageError`].
//!
//! What the methods mean is fixed by the conformance suite every backend runs
//! (`conformance.rs`, behind the `conformance` feature).

use signalbox_seglang::EventFilter;

use crate::error::EngageResult;
use crate::facts::{EventsByProfile, ProfileEvents, ProfileRecord};
use crate::feed::{Changes, FeedCursor, ListChange};
use crate::model::{ProfileId, ProfileKey};

/// A read handle on engage's derived state. Synchronous: call it off the async runtime.
///
/// Reads see committed state only; the change feed reads stop at the checkpoint given, so a
/// reader never sees half a batch.
pub trait EngageReader: Send {
    /// The changes after `after`, up to the checkpoint `upto_seq` (entries after it are not
    /// read even if committed since), at most `limit` rows of each part (see
    /// [`crate::feed`]).
    fn changes(&self, after: &FeedCursor, upto_seq: i64, limit: usize) -> EngageResult<Changes>;

    /// Only the list changes after `after_pk` up to the checkpoint `upto_seq`, at most
    /// `limit`: for followers that act on nothing else.
    fn list_changes(
        &self,
        after_pk: i64,
        upto_seq: i64,
        limit: usize,
    ) -> EngageResult<Vec<ListChange>>;

    /// A cursor after everything committed: for a follower that has nothing to do with the
    /// past, so it starts at the end instead of reading the whole history.
    fn end_cursor(&self) -> EngageResult<FeedCursor>;

    /// The public id of a profile key, if it names a profile (merged-away ones do not).
    fn profile_id(&self, key: ProfileKey) -> EngageResult<Option<ProfileId>>;

    /// The key of a profile id, if it names a profile.
    fn profile_key(&self, id: &ProfileId) -> EngageResult<Option<ProfileKey>>;

    /// How many profiles exist.
    fn profile_count(&self) -> EngageResult<u64>;

    /// Keys of profiles after `after`, in key order, at most `limit`.
    fn profile_keys(&self, after: ProfileKey, limit: usize) -> EngageResult<Vec<ProfileKey>>;

    /// What conditions read of one profile (not its events), `None` if the key names none.
    /// `with_last_event` also reads the time of its last event (it costs a look at them).
    fn profile_record(
        &self,
        key: ProfileKey,
        with_last_event: bool,
    ) -> EngageResult<Option<ProfileRecord>>;

    /// [`EngageReader::profile_record`] of the profiles after `after`, in key order, at most
    /// `limit`, in a fixed number of reads whatever the count.
    fn profile_records(
        &self,
        after: ProfileKey,
        limit: usize,
        with_last_event: bool,
    ) -> EngageResult<Vec<ProfileRecord>>;

    /// `(time_us, value)` of every event of a metric (by id) that passes `filters`, grouped
    /// by profile; empty for an unknown metric. An event without a value counts as 0.
    fn metric_events(
        &self,
        metric_id: &str,
        filters: &[EventFilter],
    ) -> EngageResult<EventsByProfile>;

    /// One profile's events of a metric that pass `filters`, and the largest key among all
    /// its events of the metric.
    fn profile_metric_events(
        &self,
        key: ProfileKey,
        metric_id: &str,
        filters: &[EventFilter],
    ) -> EngageResult<ProfileEvents>;
}
