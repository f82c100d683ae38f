//! [`SqliteConfirmations`]: the confirmation mailer's ledger in `confirmations.db`.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};

use super::{ConfirmationError, ConfirmationLedger};

/// `confirmations.db`. Cheap to share behind an `Arc`.
pub struct SqliteConfirmations {
    conn: Arc<Mutex<Connection>>,
}

fn store_error(err: rusqlite::Error) -> ConfirmationError {
    ConfirmationError::Store(err.to_string())
}

impl SqliteConfirmations {
    /// Opens (creating) the file at `path`.
    pub fn open(path: &Path) -> Result<SqliteConfirmations, ConfirmationError> {
        let conn = Connection::open(path).map_err(store_error)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS cursor (id INTEGER PRIMARY KEY CHECK (id = 1),
                                                value INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS sends (change_pk INTEGER PRIMARY KEY,
                                               sent INTEGER NOT NULL);",
        )
        .map_err(store_error)?;
        Ok(SqliteConfirmations {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn with_conn<T, F>(&self, work: F) -> Result<T, ConfirmationError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let conn = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            work(&conn).map_err(store_error)
        })
        .await
        .map_err(|e| ConfirmationError::Internal(e.to_string()))?
    }
}

#[async_trait]
impl ConfirmationLedger for SqliteConfirmations {
    async fn cursor(&self) -> Result<Option<i64>, ConfirmationError> {
        self.with_conn(|conn| {
            conn.query_row("SELECT value FROM cursor WHERE id = 1", [], |r| r.get(0))
                .optional()
        })
        .await
    }

    async fn save_cursor(&self, list_change_pk: i64) -> Result<(), ConfirmationError> {
        self.with_conn(move |conn| {
            conn.execute(
                "INSERT INTO cursor (id, value) VALUES (1, ?1)
                 ON CONFLICT (id) DO UPDATE SET value = excluded.value",
                [list_change_pk],
            )
            .map(drop)
        })
        .await
    }

    async fn sent(&self, change_pk: i64) -> Result<bool, ConfirmationError> {
        self.with_conn(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT sent FROM sends WHERE change_pk = ?1",
                    [change_pk],
                    |r| r.get::<_, i64>(0),
                )
                .optional()?
                == Some(1))
        })
        .await
    }

    async fn intend(&self, change_pk: i64) -> Result<(), ConfirmationError> {
        self.with_conn(move |conn| {
            conn.execute(
                "INSERT OR IGNORE INTO sends (change_pk, sent) VALUES (?1, 0)",
                params![change_pk],
            )
            .map(drop)
        })
        .await
    }

    async fn done(&self, change_pk: i64) -> Result<(), ConfirmationError> {
        self.with_conn(move |conn| {
            conn.execute(
                "UPDATE sends SET sent = 1 WHERE change_pk = ?1",
                params![change_pk],
            )
            .map(drop)
        })
        .await
    }
}
