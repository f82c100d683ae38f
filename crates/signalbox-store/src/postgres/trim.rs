//! Retention on PostgreSQL: the front of the log and of the rejections deleted in short
//! transactions (see [`crate::Store::trim_log`]), and dedupe records past the window.
//! Deleted rows leave dead tuples that autovacuum marks free for later appends.

use std::collections::BTreeMap;

use deadpool_postgres::Client;

use super::pg_error;
use crate::StoreResult;

/// The two tables trimmed from the front, as in the embedded store.
#[derive(Debug, Clone, Copy)]
pub(super) enum Front {
    Calls,
    Rejections,
}

impl Front {
    fn table(self) -> &'static str {
        match self {
            Front::Calls => "calls",
            Front::Rejections => "rejections",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Front::Calls => "seq",
            Front::Rejections => "id",
        }
    }

    fn total(self) -> &'static str {
        match self {
            Front::Calls => "calls",
            Front::Rejections => "rejections",
        }
    }
}

/// What one chunk did.
pub(super) struct Chunk {
    pub deleted: u64,
    pub done: bool,
}

/// Deletes up to `chunk` rows from the front of `front` below `below` and received before
/// `cutoff_us`, stopping at the first row that is not; never the newest row. The rows
/// counted off `source_totals` are those the `DELETE` returned, so two nodes trimming at
/// once never count a row twice.
pub(super) async fn trim_chunk(
    client: &mut Client,
    front: Front,
    below: i64,
    cutoff_us: i64,
    chunk: u32,
) -> StoreResult<Chunk> {
    let (table, key, total) = (front.table(), front.key(), front.total());
    let limit = i64::from(chunk.max(1));
    let tx = client.transaction().await.map_err(pg_error)?;
    let select = tx
        .prepare_cached(&format!(
            "SELECT {key}, received_at FROM {table}
             WHERE {key} < $1 AND {key} < (SELECT MAX({key}) FROM {table})
             ORDER BY {key} LIMIT $2"
        ))
        .await
        .map_err(pg_error)?;
    let rows = tx
        .query(&select, &[&below, &limit])
        .await
        .map_err(pg_error)?;
    let mut done = (rows.len() as i64) < limit;
    let mut last = None;
    for row in &rows {
        let received: i64 = row.get(1);
        if received >= cutoff_us {
            done = true;
            break;
        }
        last = Some(row.get::<_, i64>(0));
    }
    let Some(last) = last else {
        return Ok(Chunk {
            deleted: 0,
            done: true,
        });
    };
    let delete = tx
        .prepare_cached(&format!(
            "DELETE FROM {table} WHERE {key} <= $1 RETURNING source_id"
        ))
        .await
        .map_err(pg_error)?;
    let deleted = tx.query(&delete, &[&last]).await.map_err(pg_error)?;
    let mut per_source: BTreeMap<i64, i64> = BTreeMap::new();
    for row in &deleted {
        *per_source.entry(row.get(0)).or_default() += 1;
    }
    let update = tx
        .prepare_cached(&format!(
            "UPDATE source_totals SET {total} = GREATEST({total} - $2, 0) WHERE source_id = $1"
        ))
        .await
        .map_err(pg_error)?;
    for (source, count) in per_source {
        tx.execute(&update, &[&source, &count])
            .await
            .map_err(pg_error)?;
    }
    tx.commit().await.map_err(pg_error)?;
    Ok(Chunk {
        deleted: deleted.len() as u64,
        done,
    })
}

/// Deletes up to `chunk` dedupe records stored before `before_us`; returns how many.
pub(super) async fn expire_dedupe(client: &Client, before_us: i64, chunk: u32) -> StoreResult<u64> {
    let statement = client
        .prepare_cached(
            "DELETE FROM message_ids WHERE ctid IN (
                SELECT ctid FROM message_ids WHERE received_at < $1 LIMIT $2
             )",
        )
        .await
        .map_err(pg_error)?;
    client
        .execute(&statement, &[&before_us, &i64::from(chunk.max(1))])
        .await
        .map_err(pg_error)
}
