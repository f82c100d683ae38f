//! [`EngageQueries`] over `engage.db`, on pooled read connections ([`Readers`]).

use std::path::{Path, PathBuf};

use jiff::Timestamp;
use rusqlite::OptionalExtension;

use super::reader::SqliteReader;
use super::{aggregate, dump, lists, outbox, query, Readers};
use crate::error::EngageResult;
use crate::lists::{
    EmailConsent, List, ListId, ListMember, ListQuery, MemberQuery, MemberStatus, ProfileLists,
};
use crate::model::{
    AggregateQuery, AggregateResult, Event, EventId, EventQuery, Metric, MetricId, MetricQuery,
    Page, Profile, ProfileId, ProfileQuery,
};
use crate::outbox::{OutboxEntry, OutboxPosition};
use crate::queries::EngageQueries;
use crate::query::{HeldCall, HeldFilter, ProfileHistory, QuarantinedEntry};
use crate::reader::EngageReader;

pub(crate) struct SqliteQueries {
    path: PathBuf,
    readers: Readers,
}

impl SqliteQueries {
    pub(crate) fn new(path: &Path) -> SqliteQueries {
        SqliteQueries {
            path: path.to_owned(),
            readers: Readers::new(path.to_owned()),
        }
    }
}

impl EngageQueries for SqliteQueries {
    fn applied_seq(&self) -> EngageResult<i64> {
        self.readers.with_sync(super::apply::read_applied_seq)
    }

    fn reader(&self) -> EngageResult<Box<dyn EngageReader>> {
        Ok(Box::new(SqliteReader::open(&self.path)?))
    }

    fn api_result(&self, seq: i64) -> EngageResult<Option<String>> {
        self.readers.with_sync(|conn| {
            Ok(conn
                .query_row(
                    "SELECT result FROM api_results WHERE seq = ?1",
                    [seq],
                    |r| r.get(0),
                )
                .optional()?)
        })
    }

    fn list_profiles(&self, q: &ProfileQuery) -> EngageResult<Page<Profile>> {
        self.readers.with_sync(|conn| query::list_profiles(conn, q))
    }

    fn get_profile(&self, id: &ProfileId) -> EngageResult<Profile> {
        self.readers.with_sync(|conn| query::get_profile(conn, id))
    }

    fn profile_history(&self, id: &ProfileId) -> EngageResult<ProfileHistory> {
        self.readers
            .with_sync(|conn| query::profile_history(conn, id))
    }

    fn list_metrics(&self, q: &MetricQuery) -> EngageResult<Page<Metric>> {
        self.readers.with_sync(|conn| query::list_metrics(conn, q))
    }

    fn get_metric(&self, id: &MetricId) -> EngageResult<Metric> {
        self.readers.with_sync(|conn| query::get_metric(conn, id))
    }

    fn list_events(&self, q: &EventQuery) -> EngageResult<Page<Event>> {
        self.readers.with_sync(|conn| query::list_events(conn, q))
    }

    fn get_event(&self, id: &EventId) -> EngageResult<Event> {
        self.readers.with_sync(|conn| query::get_event(conn, id))
    }

    fn aggregate(&self, q: &AggregateQuery) -> EngageResult<AggregateResult> {
        self.readers.with_sync(|conn| aggregate::aggregate(conn, q))
    }

    fn held_calls(
        &self,
        filter: HeldFilter,
        after_seq: i64,
        limit: u32,
    ) -> EngageResult<Vec<HeldCall>> {
        self.readers
            .with_sync(|conn| query::held_calls(conn, filter, after_seq, limit))
    }

    fn quarantined(&self, after_seq: i64, limit: u32) -> EngageResult<Vec<QuarantinedEntry>> {
        self.readers
            .with_sync(|conn| query::quarantined(conn, after_seq, limit))
    }

    fn log_needs(&self) -> EngageResult<(Option<i64>, Option<i64>)> {
        self.readers.with_sync(query::log_needs)
    }

    fn counters(&self) -> EngageResult<Vec<(String, i64)>> {
        self.readers.with_sync(query::counters)
    }

    fn dump(&self) -> EngageResult<String> {
        self.readers.with_sync(dump::dump)
    }

    fn get_list(&self, id: &ListId) -> EngageResult<List> {
        self.readers.with_sync(|conn| lists::get_list(conn, id))
    }

    fn list_lists(&self, q: &ListQuery) -> EngageResult<Page<List>> {
        self.readers.with_sync(|conn| lists::list_lists(conn, q))
    }

    fn list_members(&self, q: &MemberQuery) -> EngageResult<Page<ListMember>> {
        self.readers.with_sync(|conn| lists::list_members(conn, q))
    }

    fn email_consent(&self, profile: &ProfileId) -> EngageResult<EmailConsent> {
        self.readers
            .with_sync(|conn| lists::email_consent(conn, profile))
    }

    fn lists_of_profile(&self, profile: &ProfileId, limit: u32) -> EngageResult<ProfileLists> {
        self.readers
            .with_sync(|conn| lists::lists_of_profile(conn, profile, limit))
    }

    fn member_status(
        &self,
        list: &ListId,
        profile: &ProfileId,
    ) -> EngageResult<Option<MemberStatus>> {
        self.readers
            .with_sync(|conn| lists::member_status(conn, list, profile))
    }

    fn outbox_after(&self, after: OutboxPosition, limit: u32) -> EngageResult<Vec<OutboxEntry>> {
        self.readers
            .with_sync(|conn| outbox::entries_after(conn, after, limit))
    }

    fn outbox_head(&self) -> EngageResult<OutboxPosition> {
        self.readers.with_sync(outbox::head)
    }

    fn outbox_position_before(&self, since: Timestamp) -> EngageResult<OutboxPosition> {
        self.readers
            .with_sync(|conn| outbox::position_before(conn, since))
    }
}
