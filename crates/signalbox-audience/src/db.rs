//! `audience.db`: segments, membership, the schedule of time-driven re-evaluations, the
//! history of every enter and leave, and the change-feed cursor (in `meta`), all written by
//! the worker thread in the transaction that covers them.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use crate::error::{AudienceError, AudienceResult};

const MIGRATIONS: &[&str] = &[r#"
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    -- `backfill_after_pk` is the last profile key the running backfill evaluated (NULL: no
    -- backfill runs); a restart resumes after it.
    CREATE TABLE segments (
        pk INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        definition TEXT NOT NULL,
        version INTEGER NOT NULL,
        is_starred INTEGER NOT NULL DEFAULT 0,
        created_us INTEGER NOT NULL,
        updated_us INTEGER NOT NULL,
        backfill_after_pk INTEGER,
        backfill_done INTEGER NOT NULL DEFAULT 0,
        backfill_total INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE members (
        segment_pk INTEGER NOT NULL,
        profile_pk INTEGER NOT NULL,
        joined_us INTEGER NOT NULL,
        PRIMARY KEY (segment_pk, profile_pk)
    ) WITHOUT ROWID;
    CREATE INDEX members_profile ON members(profile_pk);
    -- When time alone changes a profile's membership next (seglang's next_change_after).
    CREATE TABLE schedule (
        segment_pk INTEGER NOT NULL,
        profile_pk INTEGER NOT NULL,
        due_us INTEGER NOT NULL,
        PRIMARY KEY (segment_pk, profile_pk)
    ) WITHOUT ROWID;
    CREATE INDEX schedule_due ON schedule(due_us);
    -- Every enter and leave; `cursor` only grows (AUTOINCREMENT never reuses a key).
    CREATE TABLE history (
        cursor INTEGER PRIMARY KEY AUTOINCREMENT,
        segment_pk INTEGER NOT NULL,
        segment_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        profile_pk INTEGER NOT NULL,
        profile_id TEXT NOT NULL,
        entered INTEGER NOT NULL,
        at_us INTEGER NOT NULL,
        cause TEXT NOT NULL
    );
    CREATE INDEX history_profile ON history(profile_pk, segment_pk);
"#];

pub(crate) fn open(path: &Path) -> AudienceResult<Connection> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| {
            AudienceError::Internal(format!("cannot create {}: {e}", parent.display()))
        })?;
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA cache_size = -65536;
         PRAGMA temp_store = MEMORY;",
    )?;
    Ok(conn)
}

pub(crate) fn open_writer(path: &Path) -> AudienceResult<Connection> {
    let mut conn = open(path)?;
    let version: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (idx, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", idx + 1)?;
        tx.commit()?;
    }
    Ok(conn)
}
