//! The outbox's reads over `engage.db`.

use jiff::Timestamp;
use rusqlite::{params, Connection, OptionalExtension};

use crate::error::EngageResult;
use crate::outbox::{OutboxEntry, OutboxPosition, StoredOutboxEntry, MAX_READ};

pub(crate) fn entries_after(
    conn: &Connection,
    after: OutboxPosition,
    limit: u32,
) -> EngageResult<Vec<OutboxEntry>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, n, at_us, profile_id, email, user_id, anonymous_id, from_segment, change
         FROM outbox WHERE (seq, n) > (?1, ?2) ORDER BY seq, n LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![after.0, after.1, limit.min(MAX_READ)], |r| {
        Ok(StoredOutboxEntry {
            seq: r.get(0)?,
            n: r.get(1)?,
            at_us: r.get(2)?,
            profile_id: r.get(3)?,
            email: r.get(4)?,
            user_id: r.get(5)?,
            anonymous_id: r.get(6)?,
            from_segment: r.get(7)?,
            change: r.get(8)?,
        })
    })?;
    rows.map(|row| row?.into_entry()).collect()
}

pub(crate) fn head(conn: &Connection) -> EngageResult<OutboxPosition> {
    Ok(conn
        .prepare_cached("SELECT seq, n FROM outbox ORDER BY seq DESC, n DESC LIMIT 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .unwrap_or((0, 0)))
}

pub(crate) fn position_before(conn: &Connection, since: Timestamp) -> EngageResult<OutboxPosition> {
    let since_us = since.as_microsecond();
    // Times are not ordered by position (a built-in event carries its own time): the first
    // position at or after `since`, found in the time index (it covers the position).
    let first: Option<(i64, u32)> = conn
        .prepare_cached(
            "SELECT seq, n FROM outbox INDEXED BY outbox_at WHERE at_us >= ?1
             ORDER BY seq, n LIMIT 1",
        )?
        .query_row([since_us], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some(first) = first else {
        return head(conn);
    };
    Ok(conn
        .prepare_cached(
            "SELECT seq, n FROM outbox WHERE (seq, n) < (?1, ?2)
             ORDER BY seq DESC, n DESC LIMIT 1",
        )?
        .query_row(params![first.0, first.1], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .unwrap_or((0, 0)))
}
