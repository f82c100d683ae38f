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
//!
//! The log's checkpoints are paced ([`LOG_CHECKPOINT_EVERY`]): its commits append, so the
//! same few pages (the tail of the table, the upper pages of its index) are dirtied by commit
//! after commit, and a paced checkpoint copies each once. `bench ingest` at 50,000 events/s:
//! the log's checkpoints wrote 150 bytes per event against 364 after every commit.
//! `engage.db`'s are not: its commits dirty mostly different pages (profiles, index leaves
//! all over the file), so pacing saved nothing and left the copying to the applier's own
//! automatic checkpoint (its checkpointer 379 and the applier 1,020 bytes per event, against
//! 592 and 771).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;

#[cfg(test)]
use super::WAL_CHECKPOINT_BYTES;
use crate::{StoreError, StoreResult};

/// The log's checkpoints start at most this often. Short enough that its WAL stays well under
/// the writer's own threshold (64 MiB) at the rates the server takes, so the copying stays off
/// the commits.
pub const LOG_CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// The writer's side: nudges, and stops the thread when dropped.
pub struct Checkpointer {
    nudge: Option<SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
    /// Checkpoints run so far.
    runs: Arc<AtomicU64>,
}

impl Checkpointer {
    /// Starts the thread `name` (as `top -H` shows it) with its own connection to the
    /// database at `path`; checkpoints start at most every `pace` (zero: after every nudge).
    pub fn start(path: &Path, name: &str, pace: Duration) -> StoreResult<Checkpointer> {
        let conn = super::open_connection(path)?;
        let (nudge, nudged) = sync_channel::<()>(1);
        let runs = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&runs);
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                super::behind_the_writer();
                let mut last: Option<Instant> = None;
                while nudged.recv().is_ok() {
                    // Let the commits of the interval gather; the writer's going ends it.
                    if let Some(until) = last.map(|at| at + pace) {
                        loop {
                            let now = Instant::now();
                            if now >= until {
                                break;
                            }
                            match nudged.recv_timeout(until - now) {
                                Ok(()) => {}
                                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                                    break
                                }
                            }
                        }
                    }
                    checkpoint(&conn);
                    counted.fetch_add(1, Ordering::Relaxed);
                    last = Some(Instant::now());
                }
                // The writer stopped: copy what is left.
                checkpoint(&conn);
            })
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        Ok(Checkpointer {
            nudge: Some(nudge),
            thread: Some(thread),
            runs,
        })
    }

    /// Checkpoints run so far (the last one, when the writer stops, not counted).
    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
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
        let checkpointer = Checkpointer::start(&path, "test-checkpoint", Duration::ZERO).unwrap();
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

    /// Commits nudging without pause get one checkpoint per interval, not one each.
    #[test]
    fn checkpoints_are_paced_however_often_commits_nudge() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.db");
        let conn = super::super::open_writer_connection(&path, 16 << 20).unwrap();
        conn.execute_batch("CREATE TABLE t (v INTEGER)").unwrap();
        let pace = LOG_CHECKPOINT_EVERY;
        let checkpointer = Checkpointer::start(&path, "test-checkpoint", pace).unwrap();
        let started = Instant::now();
        let mut v = 0;
        while started.elapsed() < pace * 2 {
            conn.execute("INSERT INTO t VALUES (?1)", [v]).unwrap();
            checkpointer.nudge();
            v += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
        let runs = checkpointer.runs();
        assert!(v > 100, "{v} commits");
        assert!(
            (1..=3).contains(&runs),
            "{runs} checkpoints for {v} commits over two intervals"
        );
        // Stopping does not wait out the interval.
        let stopping = Instant::now();
        drop(checkpointer);
        assert!(stopping.elapsed() < pace);
    }
}
