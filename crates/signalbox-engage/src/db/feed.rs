//! The change feed's reads over `engage.db` (see [`crate::feed`]).

use rusqlite::{params, Connection};

use crate::error::EngageResult;
use crate::feed::*;
use crate::ids;
use crate::model::{EventId, MetricId, ProfileId, ProfileKey};

/// The changes after `after`, up to the checkpoint `upto_seq` (entries after it are not
/// read even if committed since), at most `limit` rows of each part.
pub(crate) fn read_changes(
    conn: &Connection,
    after: &FeedCursor,
    upto_seq: i64,
    limit: usize,
) -> EngageResult<Changes> {
    let limit_sql = limit.max(1) as i64;
    let mut out = Changes {
        cursor: *after,
        ..Changes::default()
    };
    let event_end = ids::event_key(upto_seq + 1, 0);
    {
        let mut stmt = conn.prepare_cached(
            "SELECT e.pk, e.profile_pk, e.metric_pk, m.id, m.name, m.integration, e.time_us,
                    e.value, e.properties
             FROM events e JOIN metrics m ON m.pk = e.metric_pk
             WHERE e.pk > ?1 AND e.pk < ?2 ORDER BY e.pk LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![after.event_pk, event_end, limit_sql], |r| {
            let pk: i64 = r.get(0)?;
            let time_us: i64 = r.get(6)?;
            Ok(FeedEvent {
                pk,
                id: EventId(ids::event_id(time_us, pk)),
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
        for row in rows {
            out.events.push(row?);
        }
    }
    if let Some(last) = out.events.last() {
        out.cursor.event_pk = last.pk;
    }
    out.more |= out.events.len() >= limit.max(1);
    {
        let mut stmt = conn.prepare_cached(
            "SELECT pk, changed_seq FROM profiles
             WHERE changed_seq > ?1 AND changed_seq <= ?2 ORDER BY changed_seq LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![after.profile_seq, upto_seq, limit_sql], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
        })?;
        let mut last_seq = after.profile_seq;
        for row in rows {
            let (pk, seq) = row?;
            out.profiles.push(ProfileKey(pk));
            last_seq = seq;
        }
        if out.profiles.len() >= limit.max(1) {
            // Rows of one batch share a seq: stop before the last seq, unless it is alone.
            let last_count = out.profiles.len();
            let mut stmt =
                conn.prepare_cached("SELECT pk FROM profiles WHERE changed_seq = ?1 ORDER BY pk")?;
            let same: Vec<ProfileKey> = stmt
                .query_map([last_seq], |r| r.get(0).map(ProfileKey))?
                .collect::<Result<_, _>>()?;
            out.profiles.retain(|pk| !same.contains(pk));
            out.profiles.extend(same);
            out.more = true;
            debug_assert!(out.profiles.len() >= last_count);
        }
        out.profiles.sort_unstable();
        out.profiles.dedup();
        out.cursor.profile_seq = last_seq;
    }
    {
        let mut stmt = conn.prepare_cached(
            "SELECT pk, seq, list_id, profile_pk, change, at_us FROM list_changes
             WHERE pk > ?1 AND seq <= ?2 ORDER BY pk LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![after.list_change_pk, upto_seq, limit_sql], |r| {
            Ok(ListChange {
                pk: r.get(0)?,
                seq: r.get(1)?,
                list_id: r.get(2)?,
                profile_pk: ProfileKey(r.get(3)?),
                change: r.get(4)?,
                at_us: r.get(5)?,
            })
        })?;
        for row in rows {
            out.lists.push(row?);
        }
        if let Some(last) = out.lists.last() {
            out.cursor.list_change_pk = last.pk;
        }
        out.more |= out.lists.len() >= limit.max(1);
    }
    {
        let mut stmt = conn.prepare_cached(
            "SELECT from_pk, to_pk, seq FROM redirects
             WHERE seq > ?1 AND seq <= ?2 ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![after.merge_seq, upto_seq], |r| {
            Ok(Merge {
                from_pk: ProfileKey(r.get(0)?),
                to_pk: ProfileKey(r.get(1)?),
                seq: r.get(2)?,
            })
        })?;
        for row in rows {
            out.merges.push(row?);
        }
        if let Some(last) = out.merges.last() {
            out.cursor.merge_seq = last.seq;
        }
    }
    Ok(out)
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
