//! The background checkpointer: copies committed WAL frames into the database file on its
//! own thread and connection, so that the writer's commits rarely do that copying themselves.
//! The log's writer uses one; so does the engage applier for `engage.db`.
//!
//! SQLite checkpoints from the committing connection once the WAL passes its threshold
//! (`wal_autocheckpoint`); left alone, that copy and its fsyncs sit inside the writer's group
//! commit and every request in the group waits for them. Here the writer nudges the
//! checkpointer after each commit, and the checkpointer runs a `PASSIVE` checkpoint, which never
//! blocks the writer. The writer keeps its own automatic checkpoint: by the time it triggers,
//! little is left to copy, and completing it is what lets the next transaction start the WAL
//! over from its beginning (so the file does not grow under continuous load).

use std::path::Path;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::thread::JoinHandle;

use rusqlite::Connection;

#[cfg(test)]
use super::WAL_CHECKPOINT_BYTES;
use crate::{StoreError, StoreResult};

/// The writer's side: nudges, and stops the thread when dropped.
pub struct Checkpointer {
    nudge: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread `name` (as `top -H` shows it) with its own connection to the
    /// database at `path`.
    pub fn start(path: &Path, name: &str) -> StoreResult<Checkpointer> {
        let conn = super::open_connection(path)?;
        let (nudge, nudged) = sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                super::behind_the_writer();
                while nudged.recv().is_ok() {
                    checkpoint(&conn);
                }
                // The writer stopped: copy what is left.
                checkpoint(&conn);
            })
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        Ok(Checkpointer {
            nudge: Some(nudge),
            thread: Some(thread),
        })
    }

    /// Asks for a checkpoint soon; never blocks (one pending request covers any number).
    pub fn nudge(&self) {
        if let Some(nudge) = &self.nudge {
            match nudge.try_send(()) {
                Ok(()) | Err(TrySendError::Full(())) | Err(TrySendError::Disconnected(())) => {}
            }
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.nudge.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One passive checkpoint: copies what no reader still needs, waits for nobody.
fn checkpoint(conn: &Connection) {
    let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
    });
    match result {
        Ok((frames, copied)) => {
            tracing::trace!(frames, copied, "checkpoint");
        }
        // Another checkpoint (the writer's own) is running: it does the work.
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::DatabaseBusy => {}
        Err(err) => tracing::warn!(error = %err, "background checkpoint failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_commit_is_in_the_file_once_the_writer_stops() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.db");
        let conn = super::super::open_writer_connection(&path, 16 << 20).unwrap();
        conn.execute_batch("CREATE TABLE t (v INTEGER)").unwrap();
        let checkpointer = Checkpointer::start(&path, "test-checkpoint").unwrap();
        for v in 0..50 {
            conn.execute("INSERT INTO t VALUES (?1)", [v]).unwrap();
            if v % 10 == 0 {
                checkpointer.nudge();
            }
        }
        drop(checkpointer);
        let (frames, copied): (i64, i64) = conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert_eq!(frames, copied, "every committed frame is in the file");
        let page: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap();
        let autocheckpoint: i64 = conn
            .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
            .unwrap();
        assert_eq!(page, 8192, "a new log file has 8 KiB pages");
        assert_eq!(autocheckpoint * page, WAL_CHECKPOINT_BYTES);
    }
}
