//! [`EngageQueries`]: what [`crate::Engage`]'s queries ask of derived state, in the crate's
//! own types. The SQLite implementation is `db/queries.rs`; a backend implements it beside its
//! [`crate::apply::store::ApplyStore`].
//!
//! Calls block: the engine runs them on the blocking pool. What is shared by every backend
//! (page cursors, time buckets, models) stays in `query.rs`, `aggregate.rs`, `lists.rs` and
//! `outbox.rs`.

use jiff::Timestamp;

use crate::error::EngageResult;
use crate::lists::{
    EmailConsent, List, ListId, ListMember, ListQuery, MemberQuery, MemberStatus, ProfileLists,
};
use crate::model::{
    AggregateQuery, AggregateResult, Event, EventId, EventQuery, Metric, MetricId, MetricQuery,
    Page, Profile, ProfileId, ProfileQuery,
};
use crate::outbox::{OutboxEntry, OutboxPosition};
use crate::query::{HeldCall, HeldFilter, ProfileHistory, QuarantinedEntry};
use crate::reader::EngageReader;

pub(crate) trait EngageQueries: Send + Sync {
    /// The checkpoint as committed (0 when nothing is applied).
    fn applied_seq(&self) -> EngageResult<i64>;

    /// A reader of its own, for a follower's thread.
    fn reader(&self) -> EngageResult<Box<dyn EngageReader>>;

    /// The stored outcome of the synchronous API write at log entry `seq`, as JSON.
    fn api_result(&self, seq: i64) -> EngageResult<Option<String>>;

    // Profiles, metrics, events.

    fn list_profiles(&self, q: &ProfileQuery) -> EngageResult<Page<Profile>>;

    /// Follows merge redirects.
    fn get_profile(&self, id: &ProfileId) -> EngageResult<Profile>;

    fn profile_history(&self, id: &ProfileId) -> EngageResult<ProfileHistory>;

    fn list_metrics(&self, q: &MetricQuery) -> EngageResult<Page<Metric>>;

    fn get_metric(&self, id: &MetricId) -> EngageResult<Metric>;

    fn list_events(&self, q: &EventQuery) -> EngageResult<Page<Event>>;

    fn get_event(&self, id: &EventId) -> EngageResult<Event>;

    fn aggregate(&self, q: &AggregateQuery) -> EngageResult<AggregateResult>;

    // The pipeline's own state.

    fn held_calls(
        &self,
        filter: HeldFilter,
        after_seq: i64,
        limit: u32,
    ) -> EngageResult<Vec<HeldCall>>;

    fn quarantined(&self, after_seq: i64, limit: u32) -> EngageResult<Vec<QuarantinedEntry>>;

    /// The oldest call still held and the oldest quarantined entry, if any: what retention
    /// must keep of the log besides what the checkpoint has not passed.
    fn log_needs(&self) -> EngageResult<(Option<i64>, Option<i64>)>;

    fn counters(&self) -> EngageResult<Vec<(String, i64)>>;

    /// Every row in a stable order (see `Engage::dump`).
    fn dump(&self) -> EngageResult<String>;

    // Lists and consent.

    fn get_list(&self, id: &ListId) -> EngageResult<List>;

    fn list_lists(&self, q: &ListQuery) -> EngageResult<Page<List>>;

    fn list_members(&self, q: &MemberQuery) -> EngageResult<Page<ListMember>>;

    fn email_consent(&self, profile: &ProfileId) -> EngageResult<EmailConsent>;

    fn lists_of_profile(&self, profile: &ProfileId, limit: u32) -> EngageResult<ProfileLists>;

    fn member_status(
        &self,
        list: &ListId,
        profile: &ProfileId,
    ) -> EngageResult<Option<MemberStatus>>;

    // Outbox.

    fn outbox_after(&self, after: OutboxPosition, limit: u32) -> EngageResult<Vec<OutboxEntry>>;

    fn outbox_head(&self) -> EngageResult<OutboxPosition>;

    fn outbox_position_before(&self, since: Timestamp) -> EngageResult<OutboxPosition>;
}
