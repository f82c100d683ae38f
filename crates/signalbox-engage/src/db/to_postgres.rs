//! `signalbox migrate`'s part for engage: `engage.db` copied into PostgreSQL, table by table,
//! the checkpoint included, so the pipeline there goes on after the last entry applied here.

use std::fs::File;
use std::path::Path;

use signalbox_core::PostgresUrl;
use signalbox_store::postgres::copy::{copy_file, CopyError, TableMap};
use signalbox_store::postgres::Planning;

use crate::error::{EngageError, EngageResult};

/// Proof that no other process applies the log to an `engage.db`: its writer's lock, held
/// until this is dropped.
pub struct WriterLock {
    _file: File,
}

/// Takes the lock the pipeline of a running server holds on `engage.db` (`engage.db.lock`);
/// fails with a conflict while a server holds it.
pub fn lock_writer(db: &Path) -> EngageResult<WriterLock> {
    Ok(WriterLock {
        _file: crate::pipeline::take_lock(db)?,
    })
}

/// Copies the engage state at `from` (`engage.db`, opened read-only, under its writer's lock;
/// absent: nothing to copy) into the
/// empty database at `to`: every table PostgreSQL's engage has, with the same rows. The
/// held-call index beside the file is not copied: PostgreSQL answers it from `held_calls`.
/// Returns the rows copied per table.
pub async fn migrate_to_postgres(
    from: &Path,
    _lock: &WriterLock,
    to: &PostgresUrl,
    progress: &dyn Fn(&str, u64),
) -> EngageResult<Vec<(String, u64)>> {
    if !from.exists() {
        return Ok(Vec::new());
    }
    let pool = super::postgres::apply::connect(to, 1, Planning::PerCall).await?;
    let tables: Vec<TableMap> = super::postgres::schema::TABLES
        .iter()
        .map(|table| TableMap::renamed(table, table))
        .collect();
    let copied = copy_file(from, to, &tables, progress)
        .await
        .map_err(copy_error)?;
    // The copied members were counted again by the triggers as they went in: the figures
    // are made once more from the rows.
    let client = pool
        .get()
        .await
        .map_err(|err| EngageError::Internal(err.to_string()))?;
    client
        .batch_execute(super::postgres::schema::RECOUNT)
        .await
        .map_err(|err| {
            EngageError::Internal(signalbox_store::postgres::error_text(&err, "engage"))
        })?;
    Ok(copied)
}

fn copy_error(err: CopyError) -> EngageError {
    match err {
        CopyError::Store(err) => err.into(),
        other => EngageError::Internal(other.to_string()),
    }
}
