//! `signalbox migrate`'s part for engage: `engage.db` copied into PostgreSQL, table by table,
//! the checkpoint included, so the pipeline there goes on after the last entry applied here.

use std::fs::File;
use std::path::{Path, PathBuf};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use signalbox_core::PostgresUrl;
use signalbox_store::postgres::copy::{
    copy_tables, Cell, CopyError, EmbeddedTables, RowChunks, TableMap, Target,
};

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
    drop(super::postgres::apply::connect(to, 1).await?);
    let target = Target::connect(to).await.map_err(copy_error)?;
    let tables: Vec<TableMap> = super::postgres::schema::TABLES
        .iter()
        .map(|table| TableMap::renamed(table, table))
        .collect();
    let source = SqliteTables {
        path: from.to_owned(),
    };
    copy_tables(&source, &target, &tables, progress)
        .await
        .map_err(copy_error)
}

fn copy_error(err: CopyError) -> EngageError {
    match err {
        CopyError::Store(err) => err.into(),
        other => EngageError::Internal(other.to_string()),
    }
}

/// A file of this crate's, read-only: the embedded side of the copy.
struct SqliteTables {
    path: PathBuf,
}

fn open_read_only(path: &Path) -> Result<Connection, String> {
    Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("cannot open {}: {e}", path.display()))
}

impl EmbeddedTables for SqliteTables {
    fn columns(&self, table: &str) -> Result<Vec<String>, String> {
        let conn = open_read_only(&self.path)?;
        let mut stmt = conn
            .prepare("SELECT name FROM pragma_table_info(?1)")
            .map_err(|e| e.to_string())?;
        let names = stmt
            .query_map([table], |r| r.get(0))
            .map_err(|e| e.to_string())?
            .collect::<rusqlite::Result<Vec<String>>>()
            .map_err(|e| e.to_string())?;
        Ok(names)
    }

    fn rows(&self, select: String, width: usize) -> RowChunks {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let path = self.path.clone();
        std::thread::spawn(move || {
            let read = || -> Result<(), String> {
                let conn = open_read_only(&path)?;
                let mut stmt = conn.prepare(&select).map_err(|e| e.to_string())?;
                let mut rows = stmt.query([]).map_err(|e| e.to_string())?;
                let mut chunk = Vec::new();
                while let Some(row) = rows.next().map_err(|e| e.to_string())? {
                    let mut cells = Vec::with_capacity(width);
                    for i in 0..width {
                        cells.push(cell(row.get_ref(i).map_err(|e| e.to_string())?));
                    }
                    chunk.push(cells);
                    if chunk.len() == 1_000
                        && tx.blocking_send(Ok(std::mem::take(&mut chunk))).is_err()
                    {
                        return Ok(());
                    }
                }
                if !chunk.is_empty() {
                    let _ = tx.blocking_send(Ok(chunk));
                }
                Ok(())
            };
            if let Err(err) = read() {
                let _ = tx.blocking_send(Err(err));
            }
        });
        rx
    }
}

fn cell(value: ValueRef<'_>) -> Cell {
    match value {
        ValueRef::Null => Cell::Null,
        ValueRef::Integer(v) => Cell::Int(v),
        ValueRef::Real(v) => Cell::Real(v),
        ValueRef::Text(t) => Cell::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Cell::Blob(b.to_vec()),
    }
}
