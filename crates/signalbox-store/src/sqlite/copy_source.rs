//! One SQLite file of an installation, opened read-only: the embedded side of `signalbox
//! migrate`'s copy (its tables read as [`Cell`]s) and of `signalbox backup` (a consistent
//! copy of the whole file). The crate that owns the file names it and lists its tables
//! ([`TableMap`](crate::postgres::copy::TableMap)); this only reads what it is pointed at.

use std::path::{Path, PathBuf};

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use crate::postgres::copy::{Cell, EmbeddedTables, RowChunks};

/// What a copy does to each connection it opens before reading (registers SQL functions).
type Setup = fn(&Connection) -> rusqlite::Result<()>;

/// A stopped installation's SQLite file, read-only.
pub struct SqliteFile {
    path: PathBuf,
    setup: Option<Setup>,
}

impl SqliteFile {
    pub fn new(path: &Path) -> SqliteFile {
        SqliteFile {
            path: path.to_owned(),
            setup: None,
        }
    }

    /// Runs `setup` on the connection that reads the rows, before the statement is prepared.
    pub(crate) fn with_setup(mut self, setup: Setup) -> SqliteFile {
        self.setup = Some(setup);
        self
    }

    /// The file's schema version (`PRAGMA user_version`).
    pub fn user_version(&self) -> Result<usize, String> {
        open_read_only(&self.path)?
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| e.to_string())
    }
}

impl SqliteFile {
    /// A consistent copy of the whole file as of one moment, written to `dest` (which must
    /// not exist), while its server may go on writing: `VACUUM INTO` reads in one read
    /// transaction, so the copy holds every transaction committed before it began and none
    /// after, and it is compact (no free pages, no journal beside it).
    pub fn snapshot_into(&self, dest: &Path) -> Result<(), String> {
        let conn = open_read_only(&self.path)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(|e| e.to_string())?;
        let dest_text = dest
            .to_str()
            .ok_or_else(|| format!("{} is not a UTF-8 path", dest.display()))?;
        conn.execute("VACUUM INTO ?1", [dest_text])
            .map_err(|e| format!("cannot copy {}: {e}", self.path.display()))?;
        Ok(())
    }
}

fn open_read_only(path: &Path) -> Result<Connection, String> {
    Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("cannot open {}: {e}", path.display()))
}

impl EmbeddedTables for SqliteFile {
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
        let setup = self.setup;
        std::thread::spawn(move || {
            let read = || -> Result<(), String> {
                let conn = open_read_only(&path)?;
                if let Some(setup) = setup {
                    setup(&conn).map_err(|e| e.to_string())?;
                }
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
