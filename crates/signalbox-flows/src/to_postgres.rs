//! `signalbox migrate`'s part for flows: `flows.db` copied into PostgreSQL's `flows*` tables:
//! flows and their versions, runs with their steps and sends, schedules and the follow cursors.

use std::path::{Path, PathBuf};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use signalbox_core::PostgresUrl;
use signalbox_store::postgres::copy::{
    copy_tables, Cell, CopyError, EmbeddedTables, RowChunks, TableMap, Target,
};

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
        return Ok(TABLES.iter().map(|t| (t.to.to_owned(), 0)).collect());
    }
    drop(PgFlowStore::connect(to, 1).await?);
    let target = Target::connect(to).await.map_err(copy_error)?;
    let source = SqliteTables {
        path: from.to_owned(),
    };
    let counts = copy_tables(&source, &target, TABLES, progress)
        .await
        .map_err(copy_error)?;
    Ok(counts)
}

fn copy_error(err: CopyError) -> FlowsError {
    FlowsError::Internal(err.to_string())
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
