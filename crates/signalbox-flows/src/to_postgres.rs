//! `signalbox migrate`'s part for flows: `flows.db` copied into PostgreSQL's `flows*` tables:
//! flows and their versions, runs with their steps and sends, schedules and the follow cursors.

use std::path::Path;

use signalbox_core::PostgresUrl;
use signalbox_store::postgres::copy::{copy_file, nothing_copied, CopyError, TableMap};

use crate::error::FlowsError;
use crate::pg_store::PgFlowStore;

/// The embedded tables and where they go.
const TABLES: &[TableMap] = &[
    TableMap::renamed("meta", "flows_meta"),
    TableMap::renamed("flows", "flows"),
    TableMap::renamed("flow_versions", "flows_versions"),
    TableMap::renamed("runs", "flows_runs"),
    TableMap::renamed("entries", "flows_entries"),
    TableMap::renamed("steps", "flows_steps"),
    TableMap::renamed("sends", "flows_sends"),
    TableMap::renamed("webhooks", "flows_webhooks"),
    TableMap::renamed("dead_letters", "flows_dead_letters"),
    TableMap::renamed("stats", "flows_stats"),
    TableMap::renamed("date_schedule", "flows_date_schedule"),
    TableMap::renamed("held_messages", "flows_held_messages"),
];

/// Copies the flows at `from` (a stopped installation's `flows.db`, opened read-only; absent:
/// nothing to copy) into the empty database at `to`. Returns the rows copied per table.
///
/// The live figures (runs active and waiting, messages pending) are counted again after the
/// copy: a `flows.db` an older release last wrote holds none in `stats`.
pub async fn migrate_to_postgres(
    from: &Path,
    to: &PostgresUrl,
    progress: &dyn Fn(&str, u64),
) -> Result<Vec<(String, u64)>, FlowsError> {
    if !from.exists() {
        return Ok(nothing_copied(TABLES));
    }
    drop(PgFlowStore::connect(to, 1).await?);
    let copied = copy_file(from, to, TABLES, progress)
        .await
        .map_err(copy_error)?;
    crate::pg_store::recount_figures(to).await?;
    Ok(copied)
}

fn copy_error(err: CopyError) -> FlowsError {
    FlowsError::Internal(err.to_string())
}

#[cfg(test)]
mod tests {
    use signalbox_store::postgres::testing::TestDatabase;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_figures_are_counted_after_the_copy() {
        let Some(db) = TestDatabase::create().await else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flows.db");
        // A `flows.db` a release before the live figures wrote, opened by none since: its
        // `stats` holds no figure to copy.
        let mut conn = rusqlite::Connection::open(&path).unwrap();
        let tx = conn.transaction().unwrap();
        for migration in &crate::store::MIGRATIONS[..3] {
            tx.execute_batch(migration).unwrap();
        }
        tx.pragma_update(None, "user_version", 3).unwrap();
        let rows = crate::store::rows_before_the_figures("runs", "held_messages", "stats");
        tx.execute_batch(&rows).unwrap();
        tx.commit().unwrap();
        drop(conn);
        let copied = migrate_to_postgres(&path, db.url(), &|_, _| {})
            .await
            .unwrap();
        assert!(copied.contains(&("flows_runs".to_owned(), 4)), "{copied:?}");
        let store = PgFlowStore::connect(db.url(), 1).await.unwrap();
        tokio::task::spawn_blocking(move || {
            crate::store::assert_figures_of_the_rows_before(&store)
        })
        .await
        .unwrap();
    }
}
