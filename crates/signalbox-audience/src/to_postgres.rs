//! `signalbox migrate`'s part for segments: `audience.db` copied into PostgreSQL's `audience_*`
//! tables, the feed cursor and every segment's members and history included.

use std::path::Path;

use signalbox_core::PostgresUrl;
use signalbox_store::postgres::copy::{copy_file, nothing_copied, CopyError, TableMap};

use crate::error::AudienceError;
use crate::postgres::PgAudienceStore;

/// The embedded tables and where they go.
const TABLES: &[TableMap] = &[
    TableMap::renamed("meta", "audience_meta"),
    TableMap::renamed("segments", "audience_segments"),
    TableMap::renamed("members", "audience_members"),
    TableMap::renamed("schedule", "audience_schedule"),
    TableMap::renamed("history", "audience_history"),
];

/// Copies the segments at `from` (a stopped installation's `audience.db`, opened read-only;
/// absent: nothing to copy) into the empty database at `to`. Returns the rows copied per table.
pub async fn migrate_to_postgres(
    from: &Path,
    to: &PostgresUrl,
    progress: &dyn Fn(&str, u64),
) -> Result<Vec<(String, u64)>, AudienceError> {
    if !from.exists() {
        return Ok(nothing_copied(TABLES));
    }
    drop(PgAudienceStore::connect(to, 1).await?);
    let copied = copy_file(from, to, TABLES, progress)
        .await
        .map_err(copy_error)?;
    crate::postgres::recount(to).await?;
    Ok(copied)
}

fn copy_error(err: CopyError) -> AudienceError {
    AudienceError::Db(err.to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use jiff::Timestamp;
    use serde_json::json;
    use signalbox_engage::ProfileKey;
    use signalbox_store::postgres::testing::TestDatabase;

    use super::*;
    use crate::sqlite::SqliteAudienceStore;
    use crate::store::{AudienceStore, NewChange, NewSegment};

    fn change<'a>(
        segment: crate::store::SegmentKey,
        profile: i64,
        entered: bool,
        cause: &'a serde_json::Value,
        at: Timestamp,
    ) -> NewChange<'a> {
        NewChange {
            segment,
            segment_id: "AAAAAA",
            version: 1,
            profile: ProfileKey(profile),
            profile_id: "p",
            entered,
            at,
            cause,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn segments_members_and_history_come_over_and_the_history_goes_on() {
        let Some(db) = TestDatabase::create().await else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audience.db");
        let at: Timestamp = "2026-05-06T07:08:09Z".parse().unwrap();
        let definition = json!({"condition_groups": [{"conditions": [
            {"type": "profile-property", "property": "properties['Plan']",
             "filter": {"type": "string", "operator": "equals", "value": "pro"}}]}]});
        let cause = json!({"trigger": "profile"});
        let (segment, changes) = {
            let sqlite = SqliteAudienceStore::open(&path).unwrap();
            let writer = sqlite.writer().unwrap();
            let key = writer
                .insert_segment(&NewSegment {
                    id: "AAAAAA",
                    name: "Pros",
                    definition: &definition,
                    is_starred: true,
                    now: at,
                })
                .unwrap();
            writer
                .record_change(&change(key, 7, true, &cause, at))
                .unwrap();
            writer
                .record_change(&change(key, 8, true, &cause, at))
                .unwrap();
            writer
                .record_change(&change(key, 7, false, &cause, at))
                .unwrap();
            (
                sqlite.segment("AAAAAA").unwrap().unwrap(),
                sqlite.changes_after(0, 10).unwrap(),
            )
        };

        migrate_to_postgres(&path, db.url(), &|_, _| {})
            .await
            .unwrap();
        let pg = Arc::new(PgAudienceStore::connect(db.url(), 2).await.unwrap());
        // The store's reads wait on the runtime: they run on a blocking thread.
        tokio::task::spawn_blocking(move || {
            let cause = json!({"trigger": "profile"});
            assert_eq!(pg.segment("AAAAAA").unwrap().unwrap(), segment);
            assert_eq!(pg.changes_after(0, 10).unwrap(), changes);
            let key = pg.segment_key("AAAAAA").unwrap().unwrap();
            assert_eq!(pg.member_count(key).unwrap(), 1);
            assert_eq!(pg.joined(key, ProfileKey(8)).unwrap(), Some(at));
            let writer = pg.writer().unwrap();
            writer.begin().unwrap();
            writer
                .record_change(&change(key, 9, true, &cause, at))
                .unwrap();
            writer.commit().unwrap();
            let after = pg.changes_after(changes[2].cursor, 10).unwrap();
            assert_eq!(after.len(), 1);
            assert!(after[0].cursor > changes[2].cursor);
        })
        .await
        .unwrap();
    }
}
