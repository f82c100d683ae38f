//! The change feed's reads over `engage.db` (see [`crate::feed`]).

use rusqlite::{params, Connection};

use crate::error::EngageResult;
use crate::feed::{
    self, feed_event_id, Changes, FeedCursor, FeedEvent, FeedParts, ListChange, Merge,
};
use crate::model::{MetricId, ProfileId, ProfileKey};

/// The changes after `after`, up to the checkpoint `upto_seq` (see [`feed::read_changes`]).
pub(crate) fn read_changes(
    conn: &Connection,
    after: &FeedCursor,
    upto_seq: i64,
    limit: usize,
) -> EngageResult<Changes> {
    feed::read_changes(&mut Parts(conn), after, upto_seq, limit)
}

struct Parts<'c>(&'c Connection);

impl FeedParts for Parts<'_> {
    fn events(
        &mut self,
        after_pk: i64,
        before_pk: i64,
        limit: i64,
    ) -> EngageResult<Vec<FeedEvent>> {
        let mut stmt = self.0.prepare_cached(
            "SELECT e.pk, e.profile_pk, e.metric_pk, m.id, m.name, m.integration, e.time_us,
                    e.value, e.properties
             FROM events e JOIN metrics m ON m.pk = e.metric_pk
             WHERE e.pk > ?1 AND e.pk < ?2 ORDER BY e.pk LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![after_pk, before_pk, limit], |r| {
            let pk: i64 = r.get(0)?;
            let time_us: i64 = r.get(6)?;
            Ok(FeedEvent {
                pk,
                id: feed_event_id(time_us, pk),
                profile_pk: ProfileKey(r.get(1)?),
                metric_pk: r.get(2)?,
                metric_id: MetricId(r.get(3)?),
                metric_name: r.get(4)?,
                integration: r.get(5)?,
                time_us,
                value: r.get(7)?,
                properties: r.get(8)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn changed_profiles(
        &mut self,
        after_seq: i64,
        upto_seq: i64,
        limit: i64,
    ) -> EngageResult<Vec<(i64, i64)>> {
        let mut stmt = self.0.prepare_cached(
            "SELECT pk, changed_seq FROM profiles
             WHERE changed_seq > ?1 AND changed_seq <= ?2 ORDER BY changed_seq LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![after_seq, upto_seq, limit], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn profiles_changed_at(&mut self, seq: i64) -> EngageResult<Vec<ProfileKey>> {
        let mut stmt = self
            .0
            .prepare_cached("SELECT pk FROM profiles WHERE changed_seq = ?1 ORDER BY pk")?;
        let rows = stmt.query_map([seq], |r| r.get(0).map(ProfileKey))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn list_changes(
        &mut self,
        after_pk: i64,
        upto_seq: i64,
        limit: i64,
    ) -> EngageResult<Vec<ListChange>> {
        read_list_changes(self.0, after_pk, upto_seq, limit as usize)
    }

    fn merges(&mut self, after_seq: i64, upto_seq: i64) -> EngageResult<Vec<Merge>> {
        let mut stmt = self.0.prepare_cached(
            "SELECT from_pk, to_pk, seq FROM redirects
             WHERE seq > ?1 AND seq <= ?2 ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![after_seq, upto_seq], |r| {
            Ok(Merge {
                from_pk: ProfileKey(r.get(0)?),
                to_pk: ProfileKey(r.get(1)?),
                seq: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// Only the list changes after `after_pk` up to the checkpoint `upto_seq`, at most `limit`:
/// for followers that act on nothing else.
pub(crate) fn read_list_changes(
    conn: &Connection,
    after_pk: i64,
    upto_seq: i64,
    limit: usize,
) -> EngageResult<Vec<ListChange>> {
    let mut stmt = conn.prepare_cached(
        "SELECT pk, seq, list_id, profile_pk, change, at_us FROM list_changes
         WHERE pk > ?1 AND seq <= ?2 ORDER BY pk LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![after_pk, upto_seq, limit.max(1) as i64], |r| {
        Ok(ListChange {
            pk: r.get(0)?,
            seq: r.get(1)?,
            list_id: r.get(2)?,
            profile_pk: ProfileKey(r.get(3)?),
            change: r.get(4)?,
            at_us: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A cursor after everything committed: for a follower that has nothing to do with the past
/// (no state yet), so it starts at the end instead of reading the whole history.
pub(crate) fn end_cursor(conn: &Connection) -> EngageResult<FeedCursor> {
    let max = |sql: &str| -> EngageResult<i64> {
        Ok(conn
            .query_row(sql, [], |r| r.get::<_, Option<i64>>(0))?
            .unwrap_or(0))
    };
    Ok(FeedCursor {
        event_pk: max("SELECT MAX(pk) FROM events")?,
        profile_seq: max("SELECT MAX(changed_seq) FROM profiles")?,
        list_change_pk: max("SELECT MAX(pk) FROM list_changes")?,
        merge_seq: max("SELECT MAX(seq) FROM redirects")?,
    })
}

/// The public id of a profile row, if it exists (merged-away rows do not).
pub(crate) fn profile_id(conn: &Connection, key: ProfileKey) -> EngageResult<Option<ProfileId>> {
    use rusqlite::OptionalExtension;
    let mut stmt = conn.prepare_cached("SELECT id FROM profiles WHERE pk = ?1")?;
    Ok(stmt
        .query_row([key.0], |r| r.get::<_, String>(0))
        .optional()?
        .map(ProfileId))
}

/// The row key of a profile id (following merges), if it names a profile.
pub(crate) fn profile_key(conn: &Connection, id: &ProfileId) -> EngageResult<Option<ProfileKey>> {
    use rusqlite::OptionalExtension;
    let mut stmt = conn.prepare_cached("SELECT pk FROM profiles WHERE id = ?1")?;
    if let Some(pk) = stmt.query_row([&id.0], |r| r.get(0)).optional()? {
        return Ok(Some(ProfileKey(pk)));
    }
    Ok(None)
}
