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
pub async fn migrate_to_postgres(
    from: &Path,
    to: &PostgresUrl,
    progress: &dyn Fn(&str, u64),
) -> Result<Vec<(String, u64)>, FlowsError> {
    if !from.exists() {
        return Ok(nothing_copied(TABLES));
    }
    drop(PgFlowStore::connect(to, 1).await?);
    copy_file(from, to, TABLES, progress)
        .await
        .map_err(copy_error)
}

fn copy_error(err: CopyError) -> FlowsError {
    FlowsError::Internal(err.to_string())
}
