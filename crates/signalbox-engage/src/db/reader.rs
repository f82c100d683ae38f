//! [`EngageReader`] over `engage.db`: one read connection of its own, whose prepared
//! statements are cached across calls.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;

use rusqlite::Connection;
use signalbox_seglang::EventFilter;

use crate::error::EngageResult;
use crate::facts::{EventsByProfile, ProfileEvents, ProfileRecord};
use crate::feed::{Changes, FeedCursor, ListChange};
use crate::model::{ProfileId, ProfileKey};
use crate::reader::EngageReader;

pub(crate) struct SqliteReader {
    conn: Connection,
    /// Metric keys by id, as found: a metric's key never changes, and a follower asks for
    /// the same few metrics for every profile it evaluates.
    metric_keys: RefCell<HashMap<String, i64>>,
}

impl SqliteReader {
    pub(crate) fn open(path: &Path) -> EngageResult<SqliteReader> {
        Ok(SqliteReader {
            conn: super::open_connection(path, false)?,
            metric_keys: RefCell::default(),
        })
    }

    /// The metric's key; `None` for a metric that does not exist (yet: not remembered).
    fn metric_key(&self, metric_id: &str) -> EngageResult<Option<i64>> {
        if let Some(&key) = self.metric_keys.borrow().get(metric_id) {
            return Ok(Some(key));
        }
        let key = super::facts::metric_pk(&self.conn, metric_id)?;
        if let Some(key) = key {
            self.metric_keys
                .borrow_mut()
                .insert(metric_id.to_owned(), key);
        }
        Ok(key)
    }
}

impl EngageReader for SqliteReader {
    fn changes(&self, after: &FeedCursor, upto_seq: i64, limit: usize) -> EngageResult<Changes> {
        super::feed::read_changes(&self.conn, after, upto_seq, limit)
    }

    fn list_changes(
        &self,
        after_pk: i64,
        upto_seq: i64,
        limit: usize,
    ) -> EngageResult<Vec<ListChange>> {
        super::feed::read_list_changes(&self.conn, after_pk, upto_seq, limit)
    }

    fn end_cursor(&self) -> EngageResult<FeedCursor> {
        super::feed::end_cursor(&self.conn)
    }

    fn profile_id(&self, key: ProfileKey) -> EngageResult<Option<ProfileId>> {
        super::feed::profile_id(&self.conn, key)
    }

    fn profile_key(&self, id: &ProfileId) -> EngageResult<Option<ProfileKey>> {
        super::feed::profile_key(&self.conn, id)
    }

    fn profile_count(&self) -> EngageResult<u64> {
        let n: i64 = self
            .conn
            .prepare_cached("SELECT COUNT(*) FROM profiles")?
            .query_row([], |r| r.get(0))?;
        Ok(n.max(0) as u64)
    }

    fn profile_keys(&self, after: ProfileKey, limit: usize) -> EngageResult<Vec<ProfileKey>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT pk FROM profiles WHERE pk > ?1 ORDER BY pk LIMIT ?2")?;
        let keys = stmt
            .query_map([after.0, limit as i64], |r| r.get(0).map(ProfileKey))?
            .collect::<Result<_, _>>()?;
        Ok(keys)
    }

    fn profile_record(
        &self,
        key: ProfileKey,
        with_last_event: bool,
    ) -> EngageResult<Option<ProfileRecord>> {
        super::facts::profile_record(&self.conn, key, with_last_event)
    }

    fn profile_records(
        &self,
        after: ProfileKey,
        limit: usize,
        with_last_event: bool,
    ) -> EngageResult<Vec<ProfileRecord>> {
        super::facts::profile_records(&self.conn, after, limit, with_last_event)
    }

    fn metric_events(
        &self,
        metric_id: &str,
        filters: &[EventFilter],
    ) -> EngageResult<EventsByProfile> {
        super::facts::metric_events_by_profile(&self.conn, metric_id, filters)
    }

    fn profile_metric_events(
        &self,
        key: ProfileKey,
        metric_id: &str,
        filters: &[EventFilter],
    ) -> EngageResult<ProfileEvents> {
        match self.metric_key(metric_id)? {
            Some(metric) => super::facts::profile_events(&self.conn, key, metric, filters),
            None => Ok(ProfileEvents::default()),
        }
    }
}
