//! [`SqliteSyncStore`]: the sync layer's state in `sync.db`.
//!
//! WAL, `synchronous=FULL`, a busy timeout: `serve` and CLI commands open the same file at the
//! same time. Every write is one short `IMMEDIATE` transaction, so a CLI change and the
//! engine's commits interleave without a lock held across an await. Migrations are recorded in
//! `PRAGMA user_version`.
//!
//! **Invariant:** [`SyncStore::version`] grows with every create, patch, delete and replay
//! request, in the same transaction as the change.
//! **Invariant:** a commit for a destination that was deleted meanwhile changes nothing.
//! **Invariant:** at most [`KEPT_DELIVERIES`] delivery records are kept per destination.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::{apply_patch, new_destination_id, Commit, SyncStore, KEPT_DELIVERIES};
use crate::error::{SyncError, SyncResult};
use crate::model::{
    DeadLetter, DeliveryOutcome, DeliveryRecord, Destination, DestinationPatch, DestinationState,
    NewDestination, Position, Progress, Replay,
};

const MIGRATIONS: &[&str] = &[
    // 1: everything.
    "CREATE TABLE destinations (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        config TEXT NOT NULL,
        rate REAL,
        state TEXT NOT NULL,
        created TEXT NOT NULL,
        updated TEXT NOT NULL
    );
    CREATE TABLE progress (
        destination_id TEXT PRIMARY KEY,
        cursor_seq INTEGER NOT NULL DEFAULT 0,
        cursor_n INTEGER NOT NULL DEFAULT 0,
        delivered INTEGER NOT NULL DEFAULT 0,
        retried INTEGER NOT NULL DEFAULT 0,
        failed INTEGER NOT NULL DEFAULT 0,
        dead_lettered INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        last_error_at TEXT,
        last_delivery_at TEXT
    );
    CREATE TABLE dead_letters (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        destination_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        n INTEGER NOT NULL,
        message_id TEXT NOT NULL,
        reason TEXT NOT NULL,
        status INTEGER,
        response TEXT,
        payload TEXT NOT NULL,
        at TEXT NOT NULL,
        replayed_at TEXT
    );
    CREATE INDEX dead_letters_by_destination ON dead_letters (destination_id, seq, n, id);
    CREATE TABLE replays (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        destination_id TEXT NOT NULL,
        replay TEXT NOT NULL
    );
    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        destination_id TEXT NOT NULL,
        at TEXT NOT NULL,
        method TEXT NOT NULL,
        url TEXT NOT NULL,
        request_headers TEXT NOT NULL,
        request_body TEXT NOT NULL,
        status INTEGER,
        response_body TEXT,
        error TEXT,
        duration_ms REAL NOT NULL,
        items INTEGER NOT NULL,
        outcome TEXT NOT NULL
    );
    CREATE INDEX deliveries_by_destination ON deliveries (destination_id, id);
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    );
    INSERT INTO meta (key, value) VALUES ('version', 0);",
];

/// `sync.db`. Cheap to share behind an `Arc`.
pub struct SqliteSyncStore {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteSyncStore {
    /// Opens (creating) the store at `path` (`<data dir>/sync.db`), applying migrations.
    pub fn open(path: &Path) -> SyncResult<SqliteSyncStore> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        migrate(&mut conn)?;
        Ok(SqliteSyncStore {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn with_conn<T, F>(&self, work: F) -> SyncResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> SyncResult<T> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let mut conn = conn
                .lock()
                .map_err(|_| SyncError::Store("connection lock poisoned".into()))?;
            work(&mut conn)
        })
        .await
        .map_err(|e| SyncError::Store(format!("store task failed: {e}")))?
    }
}

fn migrate(conn: &mut Connection) -> SyncResult<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(SyncError::Store(format!(
            "sync.db has schema version {version}, newer than this build knows ({known})"
        )));
    }
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(migration)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
    }
    tx.commit()?;
    Ok(())
}

fn bump_version(tx: &rusqlite::Transaction<'_>) -> SyncResult<()> {
    tx.execute(
        "UPDATE meta SET value = value + 1 WHERE key = 'version'",
        [],
    )?;
    Ok(())
}

fn ts_text(t: Timestamp) -> String {
    t.to_string()
}

fn parse_ts(text: &str) -> rusqlite::Result<Timestamp> {
    text.parse::<Timestamp>().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn opt_ts(text: Option<String>) -> rusqlite::Result<Option<Timestamp>> {
    text.as_deref().map(parse_ts).transpose()
}

fn outcome(text: &str) -> rusqlite::Result<DeliveryOutcome> {
    DeliveryOutcome::parse(text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("unknown delivery outcome {text:?}").into(),
        )
    })
}

fn json_err(e: serde_json::Error) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
}

const DESTINATION_COLUMNS: &str = "id, name, config, rate, state, created, updated";

fn destination_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Destination> {
    let config: String = row.get(2)?;
    let state: String = row.get(4)?;
    Ok(Destination {
        id: row.get(0)?,
        name: row.get(1)?,
        config: serde_json::from_str(&config).map_err(json_err)?,
        rate: row.get(3)?,
        state: DestinationState::parse(&state).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                4,
                rusqlite::types::Type::Text,
                format!("unknown destination state {state:?}").into(),
            )
        })?,
        created: parse_ts(&row.get::<_, String>(5)?)?,
        updated: parse_ts(&row.get::<_, String>(6)?)?,
    })
}

fn get_by_name(conn: &Connection, name: &str) -> SyncResult<Destination> {
    conn.query_row(
        &format!("SELECT {DESTINATION_COLUMNS} FROM destinations WHERE name = ?1"),
        [name],
        destination_row,
    )
    .optional()?
    .ok_or_else(|| SyncError::NotFound(name.to_owned()))
}

fn id_of(conn: &Connection, name: &str) -> SyncResult<String> {
    conn.query_row("SELECT id FROM destinations WHERE name = ?1", [name], |r| {
        r.get(0)
    })
    .optional()?
    .ok_or_else(|| SyncError::NotFound(name.to_owned()))
}

fn dead_letter_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<DeadLetter> {
    let payload: String = row.get(8)?;
    Ok(DeadLetter {
        id: row.get(0)?,
        destination: row.get(1)?,
        position: Position {
            seq: row.get(2)?,
            n: row.get(3)?,
        },
        message_id: row.get(4)?,
        reason: row.get(5)?,
        status: row.get(6)?,
        response: row.get(7)?,
        payload: serde_json::from_str(&payload).map_err(json_err)?,
        at: parse_ts(&row.get::<_, String>(9)?)?,
        replayed_at: opt_ts(row.get(10)?)?,
    })
}

fn delivery_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<DeliveryRecord> {
    let headers: String = row.get(5)?;
    Ok(DeliveryRecord {
        id: row.get(0)?,
        destination: row.get(1)?,
        at: parse_ts(&row.get::<_, String>(2)?)?,
        method: row.get(3)?,
        url: row.get(4)?,
        request_headers: serde_json::from_str(&headers).map_err(json_err)?,
        request_body: row.get(6)?,
        status: row.get(7)?,
        response_body: row.get(8)?,
        error: row.get(9)?,
        duration_ms: row.get(10)?,
        items: row.get(11)?,
        outcome: outcome(&row.get::<_, String>(12)?)?,
    })
}

#[async_trait]
impl SyncStore for SqliteSyncStore {
    async fn create(&self, new: NewDestination, now: Timestamp) -> SyncResult<Destination> {
        self.create_at(new, now, DestinationState::Active, Position::default())
            .await
    }

    async fn create_at(
        &self,
        new: NewDestination,
        now: Timestamp,
        state: DestinationState,
        cursor: Position,
    ) -> SyncResult<Destination> {
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let taken: Option<String> = tx
                .query_row(
                    "SELECT id FROM destinations WHERE name = ?1",
                    [&new.name],
                    |r| r.get(0),
                )
                .optional()?;
            if taken.is_some() {
                return Err(SyncError::Conflict(new.name));
            }
            let destination = Destination {
                id: new_destination_id(now),
                name: new.name,
                config: new.config,
                rate: new.rate,
                state,
                created: now,
                updated: now,
            };
            let config = serde_json::to_string(&destination.config)
                .map_err(|e| SyncError::Store(e.to_string()))?;
            tx.execute(
                "INSERT INTO destinations (id, name, kind, config, rate, state, created, updated)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
                params![
                    destination.id,
                    destination.name,
                    destination.config.kind().as_str(),
                    config,
                    destination.rate,
                    destination.state.as_str(),
                    ts_text(now),
                ],
            )?;
            tx.execute(
                "INSERT INTO progress (destination_id, cursor_seq, cursor_n) VALUES (?1, ?2, ?3)",
                params![destination.id, cursor.seq, cursor.n],
            )?;
            bump_version(&tx)?;
            tx.commit()?;
            Ok(destination)
        })
        .await
    }

    async fn list(&self) -> SyncResult<Vec<Destination>> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {DESTINATION_COLUMNS} FROM destinations ORDER BY name"
            ))?;
            let rows = stmt.query_map([], destination_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn get(&self, name: &str) -> SyncResult<Destination> {
        let name = name.to_owned();
        self.with_conn(move |conn| get_by_name(conn, &name)).await
    }

    async fn patch(
        &self,
        name: &str,
        patch: DestinationPatch,
        now: Timestamp,
    ) -> SyncResult<Destination> {
        let name = name.to_owned();
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut destination = get_by_name(&tx, &name)?;
            apply_patch(&mut destination, patch)?;
            destination.updated = now;
            let config = serde_json::to_string(&destination.config)
                .map_err(|e| SyncError::Store(e.to_string()))?;
            tx.execute(
                "UPDATE destinations SET config = ?2, rate = ?3, state = ?4, updated = ?5
                 WHERE id = ?1",
                params![
                    destination.id,
                    config,
                    destination.rate,
                    destination.state.as_str(),
                    ts_text(now),
                ],
            )?;
            bump_version(&tx)?;
            tx.commit()?;
            Ok(destination)
        })
        .await
    }

    async fn delete(&self, name: &str) -> SyncResult<()> {
        let name = name.to_owned();
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let id = id_of(&tx, &name)?;
            for table in ["progress", "dead_letters", "replays", "deliveries"] {
                tx.execute(
                    &format!("DELETE FROM {table} WHERE destination_id = ?1"),
                    [&id],
                )?;
            }
            tx.execute("DELETE FROM destinations WHERE id = ?1", [&id])?;
            bump_version(&tx)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn version(&self) -> SyncResult<u64> {
        self.with_conn(|conn| {
            let version: i64 =
                conn.query_row("SELECT value FROM meta WHERE key = 'version'", [], |r| {
                    r.get(0)
                })?;
            Ok(version as u64)
        })
        .await
    }

    async fn progress(&self, destination_id: &str) -> SyncResult<Progress> {
        let id = destination_id.to_owned();
        self.with_conn(move |conn| {
            conn.query_row(
                "SELECT cursor_seq, cursor_n, delivered, retried, failed, dead_lettered,
                        last_error, last_error_at, last_delivery_at
                 FROM progress WHERE destination_id = ?1",
                [&id],
                |r| {
                    Ok(Progress {
                        cursor: Position {
                            seq: r.get(0)?,
                            n: r.get(1)?,
                        },
                        delivered: r.get::<_, i64>(2)? as u64,
                        retried: r.get::<_, i64>(3)? as u64,
                        failed: r.get::<_, i64>(4)? as u64,
                        dead_lettered: r.get::<_, i64>(5)? as u64,
                        last_error: r.get(6)?,
                        last_error_at: opt_ts(r.get(7)?)?,
                        last_delivery_at: opt_ts(r.get(8)?)?,
                    })
                },
            )
            .optional()?
            .ok_or(SyncError::NotFound(id))
        })
        .await
    }

    async fn commit(&self, destination_id: &str, commit: Commit) -> SyncResult<()> {
        let id = destination_id.to_owned();
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let exists: Option<i64> = tx
                .query_row(
                    "SELECT 1 FROM progress WHERE destination_id = ?1",
                    [&id],
                    |r| r.get(0),
                )
                .optional()?;
            if exists.is_none() {
                return Ok(());
            }
            let at = commit.at.unwrap_or_else(Timestamp::now);
            let at_text = ts_text(at);
            if let Some(cursor) = commit.cursor {
                tx.execute(
                    "UPDATE progress SET cursor_seq = ?2, cursor_n = ?3 WHERE destination_id = ?1",
                    params![id, cursor.seq, cursor.n],
                )?;
            }
            let dead = commit.dead_letters.len() as i64;
            tx.execute(
                "UPDATE progress SET delivered = delivered + ?2, retried = retried + ?3,
                        failed = failed + ?4, dead_lettered = dead_lettered + ?5,
                        last_delivery_at = CASE WHEN ?2 > 0 THEN ?6 ELSE last_delivery_at END
                 WHERE destination_id = ?1",
                params![
                    id,
                    commit.delivered as i64,
                    commit.retried as i64,
                    commit.failed as i64,
                    dead,
                    at_text
                ],
            )?;
            match &commit.error {
                Some(Some(error)) => {
                    tx.execute(
                        "UPDATE progress SET last_error = ?2, last_error_at = ?3
                         WHERE destination_id = ?1",
                        params![id, error, at_text],
                    )?;
                }
                Some(None) => {
                    tx.execute(
                        "UPDATE progress SET last_error = NULL, last_error_at = NULL
                         WHERE destination_id = ?1",
                        [&id],
                    )?;
                }
                None => {}
            }
            for letter in &commit.dead_letters {
                let payload = serde_json::to_string(&letter.payload)
                    .map_err(|e| SyncError::Store(e.to_string()))?;
                tx.execute(
                    "INSERT INTO dead_letters
                        (destination_id, seq, n, message_id, reason, status, response, payload, at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    params![
                        id,
                        letter.position.seq,
                        letter.position.n,
                        letter.message_id,
                        letter.reason,
                        letter.status,
                        letter.response,
                        payload,
                        at_text
                    ],
                )?;
            }
            for replayed in &commit.replayed {
                tx.execute(
                    "UPDATE dead_letters SET replayed_at = ?3
                     WHERE id = ?2 AND destination_id = ?1 AND replayed_at IS NULL",
                    params![id, replayed, at_text],
                )?;
            }
            if let Some(record) = &commit.record {
                let headers = serde_json::to_string(&record.request_headers)
                    .map_err(|e| SyncError::Store(e.to_string()))?;
                tx.execute(
                    "INSERT INTO deliveries (destination_id, at, method, url, request_headers,
                        request_body, status, response_body, error, duration_ms, items, outcome)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                    params![
                        id,
                        ts_text(record.at),
                        record.method,
                        record.url,
                        headers,
                        record.request_body,
                        record.status,
                        record.response_body,
                        record.error,
                        record.duration_ms,
                        record.items,
                        record.outcome.as_str()
                    ],
                )?;
                tx.execute(
                    "DELETE FROM deliveries WHERE destination_id = ?1 AND id <= (
                        SELECT id FROM deliveries WHERE destination_id = ?1
                        ORDER BY id DESC LIMIT 1 OFFSET ?2)",
                    params![id, KEPT_DELIVERIES],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn dead_letters(
        &self,
        name: &str,
        pending: bool,
        limit: u32,
    ) -> SyncResult<Vec<DeadLetter>> {
        let name = name.to_owned();
        self.with_conn(move |conn| {
            let id = id_of(conn, &name)?;
            let mut stmt = conn.prepare_cached(
                "SELECT l.id, d.name, l.seq, l.n, l.message_id, l.reason, l.status, l.response,
                        l.payload, l.at, l.replayed_at
                 FROM dead_letters l JOIN destinations d ON d.id = l.destination_id
                 WHERE l.destination_id = ?1 AND (?2 = 0 OR l.replayed_at IS NULL)
                 ORDER BY l.seq, l.n, l.id LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![id, pending as i64, limit], dead_letter_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn request_replay(&self, name: &str, replay: Replay) -> SyncResult<()> {
        let name = name.to_owned();
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let id = id_of(&tx, &name)?;
            let text =
                serde_json::to_string(&replay).map_err(|e| SyncError::Store(e.to_string()))?;
            tx.execute(
                "INSERT INTO replays (destination_id, replay) VALUES (?1, ?2)",
                params![id, text],
            )?;
            bump_version(&tx)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn take_replay(&self, destination_id: &str) -> SyncResult<Option<Replay>> {
        let id = destination_id.to_owned();
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let row: Option<(i64, String)> = tx
                .query_row(
                    "SELECT id, replay FROM replays WHERE destination_id = ?1 ORDER BY id LIMIT 1",
                    [&id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let Some((row_id, text)) = row else {
                return Ok(None);
            };
            tx.execute("DELETE FROM replays WHERE id = ?1", [row_id])?;
            tx.commit()?;
            let replay: Replay = serde_json::from_str(&text)
                .map_err(|e| SyncError::Store(format!("unreadable replay request: {e}")))?;
            Ok(Some(replay))
        })
        .await
    }

    async fn pending_replays(&self, destination_id: &str) -> SyncResult<Vec<Replay>> {
        let id = destination_id.to_owned();
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT replay FROM replays WHERE destination_id = ?1 ORDER BY id",
            )?;
            let texts = stmt
                .query_map([&id], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            texts
                .iter()
                .map(|text| {
                    serde_json::from_str(text)
                        .map_err(|e| SyncError::Store(format!("unreadable replay request: {e}")))
                })
                .collect()
        })
        .await
    }

    async fn rewind(&self, destination_id: &str, cursor: Position) -> SyncResult<()> {
        let id = destination_id.to_owned();
        self.with_conn(move |conn| {
            conn.execute(
                "UPDATE progress SET cursor_seq = ?2, cursor_n = ?3
                 WHERE destination_id = ?1 AND (cursor_seq > ?2 OR (cursor_seq = ?2 AND cursor_n > ?3))",
                params![id, cursor.seq, cursor.n],
            )?;
            Ok(())
        })
        .await
    }

    async fn deliveries(&self, name: &str, limit: u32) -> SyncResult<Vec<DeliveryRecord>> {
        let name = name.to_owned();
        self.with_conn(move |conn| {
            let id = id_of(conn, &name)?;
            let mut stmt = conn.prepare_cached(
                "SELECT r.id, d.name, r.at, r.method, r.url, r.request_headers, r.request_body,
                        r.status, r.response_body, r.error, r.duration_ms, r.items, r.outcome
                 FROM deliveries r JOIN destinations d ON d.id = r.destination_id
                 WHERE r.destination_id = ?1 ORDER BY r.id DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![id, limit], delivery_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance;

    fn open() -> (tempfile::TempDir, SqliteSyncStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteSyncStore::open(&dir.path().join("sync.db")).unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn conformance_suite() {
        let (_dir, store) = open();
        conformance::run_all(&store).await;
    }

    #[tokio::test]
    async fn a_second_handle_sees_changes_and_the_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sync.db");
        let first = SqliteSyncStore::open(&path).unwrap();
        let second = SqliteSyncStore::open(&path).unwrap();
        let before = second.version().await.unwrap();
        first
            .create(conformance::webhook("one"), Timestamp::now())
            .await
            .unwrap();
        assert!(second.version().await.unwrap() > before);
        assert_eq!(second.get("one").await.unwrap().name, "one");
    }

    #[test]
    fn ids_have_the_documented_shape() {
        let id = new_destination_id(Timestamp::now());
        assert!(id.starts_with("dst_"));
        assert_eq!(id.len(), 30);
        assert_ne!(id, new_destination_id(Timestamp::now()));
    }

    #[test]
    fn reopening_keeps_the_schema_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sync.db");
        drop(SqliteSyncStore::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        drop(conn);
        SqliteSyncStore::open(&path).unwrap();
    }
}
