//! `engage.db`: the derived state's SQLite file. One writer (the pipeline's applier) and a
//! small pool of read connections used from the blocking pool.
//!
//! The file is derived data: it runs with `synchronous = NORMAL`, since whatever a crash loses
//! is re-applied from the log (the checkpoint is in the same transactions as the changes).

mod aggregate;
pub(crate) mod apply;
mod dump;
mod facts;
mod feed;
mod lists;
mod outbox;
pub(crate) mod postgres;
mod queries;
mod query;
pub(crate) mod reader;
pub(crate) mod rows;
pub(crate) mod schema;
pub(crate) mod to_postgres;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags};

use crate::apply::held_index::dir_of as held_dir;
use crate::error::{EngageError, EngageResult};
use crate::queries::EngageQueries;

impl From<rusqlite::Error> for EngageError {
    fn from(err: rusqlite::Error) -> Self {
        EngageError::Internal(err.to_string())
    }
}

/// The applier's storage of the file at `path` (created and migrated), with a page cache of
/// `cache_bytes`.
pub(crate) fn open_store(path: &Path, cache_bytes: u64) -> EngageResult<apply::SqliteWriter> {
    apply::SqliteWriter::open_with_cache(path, cache_bytes)
}

/// The queries of the file at `path`.
pub(crate) fn open_queries(path: &Path) -> Arc<dyn EngageQueries> {
    Arc::new(queries::SqliteQueries::new(path))
}

/// Creates and migrates the file at `path`, if needed.
pub(crate) fn create(path: &Path) -> EngageResult<()> {
    open_writer(path, READER_CACHE_BYTES).map(drop)
}

/// Moves the state rebuilt at `fresh` into place at `path`, replacing what was there.
pub(crate) fn replace(fresh: &Path, path: &Path) -> EngageResult<()> {
    remove(path)?;
    std::fs::rename(fresh, path).map_err(|e| {
        EngageError::Internal(format!("cannot move the rebuilt state into place: {e}"))
    })?;
    std::fs::rename(held_dir(fresh), held_dir(path))
        .map_err(|e| EngageError::Internal(format!("cannot move the rebuilt held-call index: {e}")))
}

/// Removes a SQLite file, its WAL and shared-memory files, and its held-call index.
pub(crate) fn remove(path: &Path) -> EngageResult<()> {
    let held = held_dir(path);
    absent_is_fine(&held, std::fs::remove_dir_all(&held))?;
    for file in [
        path.to_path_buf(),
        PathBuf::from(format!("{}-wal", path.display())),
        PathBuf::from(format!("{}-shm", path.display())),
    ] {
        absent_is_fine(&file, std::fs::remove_file(&file))?;
    }
    Ok(())
}

/// The outcome of removing `path`: done, or it was not there.
fn absent_is_fine(path: &Path, removed: std::io::Result<()>) -> EngageResult<()> {
    match removed {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(EngageError::Internal(format!(
            "cannot remove {}: {e}",
            path.display()
        ))),
        _ => Ok(()),
    }
}

/// Read connections kept for reuse at most.
const POOL: usize = 8;
/// A read connection's page cache. Reads go through it and the operating system's page
/// cache (the file is not memory-mapped: mapped pages count in the process's resident
/// memory, and the applier's lookups over a growing file mapped hundreds of MiB).
const READER_CACHE_BYTES: u64 = 2 << 20;

pub(crate) fn open_connection(path: &Path, create: bool) -> EngageResult<Connection> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA temp_store = MEMORY;
         PRAGMA wal_autocheckpoint = 8192;
         PRAGMA mmap_size = 0;
         PRAGMA journal_size_limit = 67108864;",
    )?;
    set_cache_bytes(&conn, READER_CACHE_BYTES)?;
    Ok(conn)
}

/// A connection's page cache, in bytes (SQLite takes a negative size in KiB).
fn set_cache_bytes(conn: &Connection, bytes: u64) -> EngageResult<()> {
    let kib = i64::try_from(bytes / 1024).unwrap_or(i64::MAX).max(256);
    conn.pragma_update(None, "cache_size", -kib)?;
    Ok(())
}

/// Opens (creating and migrating) the file for writing, with a page cache of `cache_bytes`.
pub(crate) fn open_writer(path: &Path, cache_bytes: u64) -> EngageResult<Connection> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| {
            EngageError::Internal(format!("cannot create {}: {e}", parent.display()))
        })?;
    }
    let mut conn = open_connection(path, true)?;
    // The writer's random index writes want the working set cached; readers (up to `POOL`)
    // keep small caches, so memory stays flat.
    set_cache_bytes(&conn, cache_bytes)?;
    schema::migrate(&mut conn)?;
    Ok(conn)
}

/// Read connections to `engage.db`.
#[derive(Clone)]
pub(crate) struct Readers {
    path: PathBuf,
    pool: Arc<Mutex<Vec<Connection>>>,
}

impl Readers {
    pub(crate) fn new(path: PathBuf) -> Readers {
        Readers {
            path,
            pool: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Runs `f` on a pooled connection on this thread.
    pub(crate) fn with_sync<T>(
        &self,
        f: impl FnOnce(&Connection) -> EngageResult<T>,
    ) -> EngageResult<T> {
        let pooled = self.pool.lock().expect("pool lock").pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => open_connection(&self.path, false)?,
        };
        let result = f(&conn);
        let mut pool = self.pool.lock().expect("pool lock");
        if pool.len() < POOL {
            pool.push(conn);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pragma(conn: &Connection, name: &str) -> i64 {
        conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
            .unwrap()
    }

    /// The applier keeps the page cache it is given, read connections a small one, and no
    /// connection maps the file (mapped pages would count in the server's resident memory).
    #[test]
    fn connections_keep_the_caches_they_are_given_and_map_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("engage.db");
        let writer = open_writer(&path, 96 << 20).unwrap();
        assert_eq!(pragma(&writer, "cache_size"), -(96 << 10));
        assert_eq!(pragma(&writer, "mmap_size"), 0);
        let reader = open_connection(&path, false).unwrap();
        assert_eq!(pragma(&reader, "cache_size"), -(2 << 10));
        assert_eq!(pragma(&reader, "mmap_size"), 0);
    }
}
