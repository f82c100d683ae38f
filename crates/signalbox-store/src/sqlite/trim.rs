//! Retention: deleting the front of the log (and of the rejections) in short transactions.
//!
//! Each chunk is one `IMMEDIATE` transaction on a pooled connection: it waits for the
//! writer's group commit in progress like any other writer of the file, holds the lock for
//! one chunk, and lets the writer in again. Deleted pages go to the file's freelist, where
//! later appends take them before the file grows.

use rusqlite::{params, Connection, TransactionBehavior};

use super::internal;
use crate::StoreResult;

/// The two tables trimmed from the front: each row has a key that grows, a source and a
/// receipt time, and is counted in one column of `source_totals`.
#[derive(Debug, Clone, Copy)]
pub(super) enum Front {
    Calls,
    Rejections,
}

impl Front {
    fn table(self) -> &'static str {
        match self {
            Front::Calls => "events",
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
    /// The front reached a row that stays (or the end): no further chunk is needed.
    pub done: bool,
}

/// Deletes up to `chunk` rows from the front of `front` whose key is below `below` and that
/// were received before `cutoff_us`, stopping at the first row that is not; never the newest
/// row (its key is what the next insert counts from).
pub(super) fn trim_chunk(
    conn: &mut Connection,
    front: Front,
    below: i64,
    cutoff_us: i64,
    chunk: u32,
) -> StoreResult<Chunk> {
    let (table, key) = (front.table(), front.key());
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(internal)?;
    let rows: Vec<(i64, i64, i64)> = {
        let mut stmt = tx
            .prepare_cached(&format!(
                "SELECT {key}, source_id, received_at FROM {table}
                 WHERE {key} < ?1 AND {key} < (SELECT MAX({key}) FROM {table})
                 ORDER BY {key} LIMIT ?2"
            ))
            .map_err(internal)?;
        let rows = stmt
            .query_map(params![below, chunk.max(1)], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(internal)?;
        rows.collect::<Result<_, _>>().map_err(internal)?
    };
    let mut done = rows.len() < chunk.max(1) as usize;
    let mut last = None;
    let mut per_source: std::collections::BTreeMap<i64, i64> = Default::default();
    for (row_key, source, received) in &rows {
        if *received >= cutoff_us {
            done = true;
            break;
        }
        last = Some(*row_key);
        *per_source.entry(*source).or_default() += 1;
    }
    let Some(last) = last else {
        return Ok(Chunk {
            deleted: 0,
            done: true,
        });
    };
    let deleted = tx
        .execute(&format!("DELETE FROM {table} WHERE {key} <= ?1"), [last])
        .map_err(internal)? as u64;
    {
        let total = front.total();
        let mut update = tx
            .prepare_cached(&format!(
                "UPDATE source_totals SET {total} = MAX({total} - ?2, 0) WHERE source_id = ?1"
            ))
            .map_err(internal)?;
        for (source, count) in per_source {
            update.execute(params![source, count]).map_err(internal)?;
        }
    }
    tx.commit().map_err(internal)?;
    Ok(Chunk { deleted, done })
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;
    use signalbox_core::{CallKind, NewCall};

    use crate::sqlite::{SqliteOptions, SqliteStore};
    use crate::{Store, TrimRequest};

    fn pages(path: &std::path::Path) -> (i64, i64) {
        let conn = rusqlite::Connection::open(path).unwrap();
        let count = conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        let free = conn
            .query_row("PRAGMA freelist_count", [], |r| r.get(0))
            .unwrap();
        (count, free)
    }

    async fn write_volume(store: &SqliteStore, source: signalbox_core::SourceId, round: u32) {
        let payload = "x".repeat(2000);
        for page in 0..20 {
            let calls = (0..100)
                .map(|i| NewCall {
                    kind: CallKind::Track,
                    message_id: format!("r{round}-{page}-{i}"),
                    received_at: Timestamp::from_second(1_790_000_000 + i64::from(round)).unwrap(),
                    payload: format!(r#"{{"type":"track","pad":"{payload}"}}"#),
                })
                .collect();
            store.append(source, calls, vec![]).await.unwrap();
        }
    }

    /// What a trim frees is taken by the next appends: writing the same volume again after a
    /// trim leaves the file as large as it was.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_space_a_trim_frees_is_reused_by_later_appends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signalbox.db");
        let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
        let source = store.create_source("web").await.unwrap().0.id;
        write_volume(&store, source, 0).await;
        let (full, _) = pages(&path);

        let trim = TrimRequest {
            below_seq: i64::MAX,
            received_before: Timestamp::from_second(1_790_000_001).unwrap(),
            now: Timestamp::from_second(1_790_000_001).unwrap(),
            chunk: 500,
        };
        let outcome = store.trim_log(trim).await.unwrap();
        assert_eq!(outcome.calls, 1999, "all but the newest call");
        let (after_trim, free) = pages(&path);
        assert_eq!(after_trim, full, "deleting frees pages inside the file");
        assert!(free * 2 > full, "most pages are free: {free} of {full}");

        for round in 1..=3 {
            write_volume(&store, source, round).await;
            let trim = TrimRequest {
                received_before: Timestamp::from_second(1_790_000_001 + i64::from(round)).unwrap(),
                ..trim
            };
            assert_eq!(store.trim_log(trim).await.unwrap().calls, 2000);
        }
        write_volume(&store, source, 9).await;
        let (rewritten, _) = pages(&path);
        assert!(
            rewritten <= full + 2,
            "the file grew from {full} to {rewritten} pages for the same volume"
        );
        store.close();
    }
}
