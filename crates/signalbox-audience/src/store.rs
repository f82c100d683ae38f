//! Where the audience engine keeps its state: the segments, their membership, the schedule of
//! time-driven re-evaluations, the history of every enter and leave, running backfills and
//! the change-feed cursor. [`AudienceStore`] is the read side and hands out the one
//! [`AudienceWriter`] the worker thread writes through; `SqliteAudienceStore`
//! (`audience.db`) is the embedded backend, `PgAudienceStore` the PostgreSQL one.
//!
//! Methods block (the engine calls them on blocking threads). Errors are [`AudienceError`];
//! a backend folds its own errors into [`AudienceError::Db`].

use std::collections::HashMap;

use jiff::Timestamp;
use serde_json::Value;
use signalbox_engage::facts::SegmentMembership;
use signalbox_engage::feed::FeedCursor;
use signalbox_engage::ProfileKey;

use crate::error::AudienceResult;
use crate::model::{MembershipChange, RecordedChange, Segment, SegmentPage};

/// A segment's key in the store: assigned at creation, increasing, never reused while the
/// segment exists. Users see the segment's id.
pub type SegmentKey = i64;

/// A stored segment as the worker compiles it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSegment {
    pub key: SegmentKey,
    pub id: String,
    pub version: i64,
    /// The definition as saved (Klaviyo's JSON).
    pub definition: Value,
}

/// A new segment, its definition already checked.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSegment<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub definition: &'a Value,
    pub is_starred: bool,
    pub now: Timestamp,
}

/// A backfill in progress: profiles up to `after` are evaluated, `done` of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackfillState {
    pub segment: SegmentKey,
    pub after: ProfileKey,
    pub done: u64,
}

/// A profile entering (`entered`) or leaving a segment, with what decided it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewChange<'a> {
    pub segment: SegmentKey,
    pub segment_id: &'a str,
    pub version: i64,
    pub profile: ProfileKey,
    pub profile_id: &'a str,
    pub entered: bool,
    pub at: Timestamp,
    /// `{"trigger": …, "conditions": […]}`.
    pub cause: &'a Value,
}

/// The read side, callable from any thread, and the source of the writer.
pub trait AudienceStore: Send + Sync {
    /// The writer. Only the worker holds one; a store is built for one writer at a time.
    fn writer(&self) -> AudienceResult<Box<dyn AudienceWriter>>;

    /// Every segment, oldest first, for the worker's catalog.
    fn stored_segments(&self) -> AudienceResult<Vec<StoredSegment>>;

    fn segment(&self, id: &str) -> AudienceResult<Option<Segment>>;

    /// Every segment, oldest first.
    fn segments(&self) -> AudienceResult<Vec<Segment>>;

    /// At most `limit` (at least one) segments after the segment `after` (an id; unknown:
    /// [`crate::AudienceError::NotFound`]), oldest first; `next` is set when more follow.
    fn segments_page(&self, after: Option<&str>, limit: usize) -> AudienceResult<SegmentPage>;

    /// The newest segment with this name.
    fn segment_by_name(&self, name: &str) -> AudienceResult<Option<Segment>>;

    /// The segments the profile is a member of, oldest first.
    fn segments_of(&self, profile: ProfileKey) -> AudienceResult<Vec<Segment>>;

    fn segment_key(&self, id: &str) -> AudienceResult<Option<SegmentKey>>;

    fn member_count(&self, segment: SegmentKey) -> AudienceResult<u64>;

    /// Members with their join times in profile key order, after `after`, at most `limit`.
    fn members(
        &self,
        segment: SegmentKey,
        after: Option<ProfileKey>,
        limit: usize,
    ) -> AudienceResult<Vec<(ProfileKey, Timestamp)>>;

    /// When the profile joined the segment, if it is a member.
    fn joined(&self, segment: SegmentKey, profile: ProfileKey)
        -> AudienceResult<Option<Timestamp>>;

    /// Membership by segment id, as segment conditions and flow filters ask for it.
    fn membership(
        &self,
        segment_id: &str,
        profile: ProfileKey,
    ) -> AudienceResult<SegmentMembership> {
        let Some(segment) = self.segment_key(segment_id)? else {
            return Ok(SegmentMembership::NotASegment);
        };
        Ok(match self.joined(segment, profile)? {
            Some(joined) => SegmentMembership::Member { joined },
            None => SegmentMembership::NotMember,
        })
    }

    /// Enters and leaves after `cursor` (0: from the start), oldest first.
    fn changes_after(&self, cursor: i64, limit: usize) -> AudienceResult<Vec<MembershipChange>>;

    /// The profile's last recorded enter or leave of the segment.
    fn last_change(
        &self,
        segment: SegmentKey,
        profile: ProfileKey,
    ) -> AudienceResult<Option<RecordedChange>>;
}

/// The write side. Writes between [`AudienceWriter::begin`] and [`AudienceWriter::commit`]
/// are one transaction (all or none); a write outside one commits alone. Reads through the
/// writer see its uncommitted writes.
pub trait AudienceWriter: Send {
    fn begin(&self) -> AudienceResult<()>;
    fn commit(&self) -> AudienceResult<()>;
    /// Undoes the open transaction; nothing happens when none is open.
    fn rollback(&self) -> AudienceResult<()>;

    /// Where the worker is in engage's change feed; `None` before the first save.
    fn feed_cursor(&self) -> AudienceResult<Option<FeedCursor>>;
    fn save_feed_cursor(&self, cursor: &FeedCursor) -> AudienceResult<()>;

    /// Every segment, oldest first.
    fn stored_segments(&self) -> AudienceResult<Vec<StoredSegment>>;
    /// Saves a new segment at version 1 with no backfill running.
    fn insert_segment(&self, segment: &NewSegment<'_>) -> AudienceResult<SegmentKey>;
    fn rename_segment(&self, segment: SegmentKey, name: &str, now: Timestamp)
        -> AudienceResult<()>;
    fn star_segment(
        &self,
        segment: SegmentKey,
        starred: bool,
        now: Timestamp,
    ) -> AudienceResult<()>;
    /// Stores a new definition as the next version; false (nothing stored) when it equals the
    /// stored one.
    fn set_definition(
        &self,
        segment: SegmentKey,
        definition: &Value,
        now: Timestamp,
    ) -> AudienceResult<bool>;
    /// Deletes the segment and its membership; its history stays (the schedule is per
    /// profile: an entry the segment set fires early and is harmless).
    fn delete_segment(&self, segment: SegmentKey) -> AudienceResult<()>;

    /// Backfills in progress, oldest segment first.
    fn running_backfills(&self) -> AudienceResult<Vec<BackfillState>>;
    /// Starts (or restarts) a backfill over about `total` profiles.
    fn start_backfill(&self, segment: SegmentKey, total: u64) -> AudienceResult<()>;
    /// Records progress: `after` is the last profile evaluated, `None` once finished (then
    /// the total becomes `done`).
    fn backfill_progress(
        &self,
        segment: SegmentKey,
        after: Option<ProfileKey>,
        done: u64,
    ) -> AudienceResult<()>;

    fn joined(&self, segment: SegmentKey, profile: ProfileKey)
        -> AudienceResult<Option<Timestamp>>;
    /// Members among profiles `first..=last` of the segment, with their join times.
    fn members_between(
        &self,
        segment: SegmentKey,
        first: ProfileKey,
        last: ProfileKey,
    ) -> AudienceResult<HashMap<ProfileKey, Timestamp>>;
    /// The segments the profile is a member of.
    fn segments_of(&self, profile: ProfileKey) -> AudienceResult<Vec<SegmentKey>>;
    /// Applies an enter (the profile joins at `at`) or a leave and appends it to the history.
    fn record_change(&self, change: &NewChange<'_>) -> AudienceResult<()>;
    /// The profile id of the profile's last recorded change.
    fn last_profile_id(&self, profile: ProfileKey) -> AudienceResult<Option<String>>;

    /// Sets the profile's next due instant: no membership of the profile can change by time
    /// alone before it (the worker re-evaluates the profile's time-dependent segments then).
    /// One entry per profile.
    fn schedule(&self, profile: ProfileKey, due: Timestamp) -> AudienceResult<()>;
    fn unschedule(&self, profile: ProfileKey) -> AudienceResult<()>;
    /// Every scheduled profile with its due instant.
    fn scheduled(&self) -> AudienceResult<HashMap<ProfileKey, Timestamp>>;
    /// The earliest scheduled instant.
    fn next_due(&self) -> AudienceResult<Option<Timestamp>>;
    /// Removes and returns at most `limit` profiles due by `now`, earliest first, in one step.
    fn take_due(&self, now: Timestamp, limit: usize) -> AudienceResult<Vec<ProfileKey>>;
}
