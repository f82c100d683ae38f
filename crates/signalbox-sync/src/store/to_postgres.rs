//! `signalbox migrate`'s part for destinations: `sync.db` copied into PostgreSQL's `sync_*`
//! tables, each destination with its cursor, counters, dead letters and delivery records.

use std::path::Path;

use signalbox_core::PostgresUrl;
use signalbox_store::postgres::copy::{copy_file, nothing_copied, CopyError, TableMap};

use crate::error::SyncError;
use crate::store::PgSyncStore;

/// The embedded tables and where they go.
const TABLES: &[TableMap] = &[
    TableMap::renamed("destinations", "sync_destinations"),
    TableMap::renamed("progress", "sync_progress"),
    TableMap::renamed("dead_letters", "sync_dead_letters"),
    TableMap::renamed("replays", "sync_replays"),
    TableMap::renamed("deliveries", "sync_deliveries"),
];

/// Copies the destinations at `from` (a stopped installation's `sync.db`, opened read-only;
/// absent: nothing to copy) into the empty database at `to`. The change counter
/// (`sync_version`) is PostgreSQL's own. Returns the rows copied per table.
pub async fn migrate_to_postgres(
    from: &Path,
    to: &PostgresUrl,
    progress: &dyn Fn(&str, u64),
) -> Result<Vec<(String, u64)>, SyncError> {
    if !from.exists() {
        return Ok(nothing_copied(TABLES));
    }
    drop(PgSyncStore::connect(to).await?);
    copy_file(from, to, TABLES, progress)
        .await
        .map_err(copy_error)
}

fn copy_error(err: CopyError) -> SyncError {
    SyncError::Store(err.to_string())
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;
    use signalbox_store::postgres::testing::TestDatabase;

    use super::*;
    use crate::model::{DeliveryRecord, Position};
    use crate::store::conformance::webhook;
    use crate::store::{Commit, SqliteSyncStore, SyncStore};

    fn record(at: Timestamp, body: &str) -> DeliveryRecord {
        DeliveryRecord {
            id: 0,
            destination: String::new(),
            at,
            method: "POST".into(),
            url: "https://hooks.example.com/in".into(),
            request_headers: vec![("content-type".into(), "application/json".into())],
            request_body: body.into(),
            status: Some(200),
            response_body: Some("ok".into()),
            error: None,
            duration_ms: 1.5,
            items: 1,
            outcome: crate::model::DeliveryOutcome::Delivered,
        }
    }

    #[tokio::test]
    async fn a_destination_keeps_its_cursor_counters_and_records() {
        let Some(db) = TestDatabase::create().await else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sync.db");
        let at: Timestamp = "2026-02-03T04:05:06.789012Z".parse().unwrap();
        let sqlite = SqliteSyncStore::open(&path).unwrap();
        let created = sqlite.create(webhook("hook"), at).await.unwrap();
        let commit = Commit {
            cursor: Some(Position { seq: 17, n: 2 }),
            delivered: 3,
            record: Some(record(at, "first")),
            error: Some(Some("timed out".into())),
            at: Some(at),
            ..Commit::default()
        };
        sqlite.commit(&created.id, commit).await.unwrap();
        let progress = sqlite.progress(&created.id).await.unwrap();
        let records = sqlite.deliveries("hook", 10).await.unwrap();
        drop(sqlite);

        migrate_to_postgres(&path, db.url(), &|_, _| {})
            .await
            .unwrap();
        let pg = PgSyncStore::connect(db.url()).await.unwrap();
        assert_eq!(pg.get("hook").await.unwrap(), created);
        assert_eq!(pg.progress(&created.id).await.unwrap(), progress);
        assert_eq!(pg.deliveries("hook", 10).await.unwrap(), records);
        // Records made after the copy get new ids.
        let commit = Commit {
            record: Some(record(at, "second")),
            ..Commit::default()
        };
        pg.commit(&created.id, commit).await.unwrap();
        let after = pg.deliveries("hook", 10).await.unwrap();
        assert_eq!(after.len(), 2);
        assert!(after
            .iter()
            .any(|r| r.id > records[0].id && r.request_body == "second"));
    }
}
