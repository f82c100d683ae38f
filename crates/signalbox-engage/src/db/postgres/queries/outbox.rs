//! The outbox's reads (as `db/outbox.rs`).

use deadpool_postgres::GenericClient;
use jiff::Timestamp;
use tokio_postgres::Row;

use super::{row_opt, rows};
use crate::error::{EngageError, EngageResult};
use crate::outbox::{OutboxEntry, OutboxPosition, StoredOutboxEntry, MAX_READ};

/// A position from `seq, n` columns.
fn position(r: &Row) -> EngageResult<OutboxPosition> {
    let n: i64 = r.get(1);
    let n = u32::try_from(n)
        .map_err(|_| EngageError::Internal(format!("outbox index {n} out of range")))?;
    Ok((r.get(0), n))
}

pub(crate) async fn entries_after(
    c: &impl GenericClient,
    after: OutboxPosition,
    limit: u32,
) -> EngageResult<Vec<OutboxEntry>> {
    let rows = rows(
        c,
        "SELECT seq, n, at_us, profile_id, email, user_id, anonymous_id, from_segment <> 0,
                change
         FROM outbox WHERE (seq, n) > ($1, $2) ORDER BY seq, n LIMIT $3",
        &[
            &after.0,
            &i64::from(after.1),
            &i64::from(limit.min(MAX_READ)),
        ],
    )
    .await?;
    rows.iter()
        .map(|r| {
            let (seq, n) = position(r)?;
            StoredOutboxEntry {
                seq,
                n,
                at_us: r.get(2),
                profile_id: r.get(3),
                email: r.get(4),
                user_id: r.get(5),
                anonymous_id: r.get(6),
                from_segment: r.get(7),
                change: r.get(8),
            }
            .into_entry()
        })
        .collect()
}

pub(crate) async fn head(c: &impl GenericClient) -> EngageResult<OutboxPosition> {
    let row = row_opt(
        c,
        "SELECT seq, n FROM outbox ORDER BY seq DESC, n DESC LIMIT 1",
        &[],
    )
    .await?;
    row.map_or(Ok((0, 0)), |r| position(&r))
}

pub(crate) async fn position_before(
    c: &impl GenericClient,
    since: Timestamp,
) -> EngageResult<OutboxPosition> {
    // Times are not ordered by position (a built-in event carries its own time): the first
    // position at or after `since`, from the rows the time index finds (materialized, so that
    // the planner does not walk the positions from the start instead, as SQLite's `INDEXED
    // BY` keeps it from doing).
    let first = row_opt(
        c,
        "WITH since AS MATERIALIZED (SELECT seq, n FROM outbox WHERE at_us >= $1)
         SELECT seq, n FROM since ORDER BY seq, n LIMIT 1",
        &[&since.as_microsecond()],
    )
    .await?;
    let first = first.map(|r| position(&r)).transpose()?;
    let Some((seq, n)) = first else {
        return head(c).await;
    };
    let row = row_opt(
        c,
        "SELECT seq, n FROM outbox WHERE (seq, n) < ($1, $2)
         ORDER BY seq DESC, n DESC LIMIT 1",
        &[&seq, &i64::from(n)],
    )
    .await?;
    row.map_or(Ok((0, 0)), |r| position(&r))
}
