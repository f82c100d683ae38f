//! [`SqliteAccountStore`]: accounts, sessions and setup tokens in `console.db`.
//!
//! WAL and a busy timeout: `serve` and the `signalbox admin` commands open the same file at the
//! same time; every write is one short `IMMEDIATE` transaction. Times are Unix milliseconds.
//! Migrations are recorded in `PRAGMA user_version`.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::{Account, AccountError, AccountResult, AccountStore, SessionRecord, TokenDigest};

const MIGRATIONS: &[&str] = &[
    // 1: accounts, sessions, setup tokens.
    "CREATE TABLE accounts (
        email TEXT PRIMARY KEY,
        password_hash TEXT NOT NULL,
        created INTEGER NOT NULL
    );
    CREATE TABLE sessions (
        digest BLOB PRIMARY KEY,
        email TEXT NOT NULL,
        csrf TEXT NOT NULL,
        created INTEGER NOT NULL,
        last_seen INTEGER NOT NULL
    );
    CREATE INDEX sessions_by_email ON sessions (email);
    CREATE TABLE setup_tokens (
        digest BLOB PRIMARY KEY,
        expires INTEGER NOT NULL,
        used INTEGER
    );",
];

/// `console.db`. Cheap to share behind an `Arc`.
pub struct SqliteAccountStore {
    conn: Arc<Mutex<Connection>>,
}

impl From<rusqlite::Error> for AccountError {
    fn from(err: rusqlite::Error) -> Self {
        AccountError::Store(err.to_string())
    }
}

impl SqliteAccountStore {
    /// Opens (creating) the store at `path` (`<data dir>/console.db`), applying migrations.
    pub fn open(path: &Path) -> AccountResult<SqliteAccountStore> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        migrate(&mut conn)?;
        Ok(SqliteAccountStore {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn with_conn<T, F>(&self, work: F) -> AccountResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> AccountResult<T> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let mut conn = conn
                .lock()
                .map_err(|_| AccountError::Store("connection lock poisoned".into()))?;
            work(&mut conn)
        })
        .await
        .map_err(|e| AccountError::Store(format!("store task failed: {e}")))?
    }
}

fn migrate(conn: &mut Connection) -> AccountResult<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(AccountError::Store(format!(
            "console.db has schema version {version}, newer than this build knows ({known})"
        )));
    }
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(migration)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
    }
    tx.commit()?;
    Ok(())
}

fn millis(at: Timestamp) -> i64 {
    at.as_millisecond()
}

fn timestamp(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn any_account(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row("SELECT EXISTS (SELECT 1 FROM accounts)", [], |r| r.get(0))
}

fn token_open(conn: &Connection, digest: &TokenDigest, now: Timestamp) -> rusqlite::Result<bool> {
    let open: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM setup_tokens WHERE digest = ?1 AND used IS NULL AND expires > ?2)",
        params![&digest.0[..], millis(now)],
        |r| r.get(0),
    )?;
    Ok(open && !any_account(conn)?)
}

fn insert_account(
    conn: &Connection,
    email: &str,
    password_hash: &str,
    at: Timestamp,
) -> AccountResult<Account> {
    let inserted = conn.execute(
        "INSERT INTO accounts (email, password_hash, created) VALUES (?1, ?2, ?3)
         ON CONFLICT (email) DO NOTHING",
        params![email, password_hash, millis(at)],
    )?;
    if inserted == 0 {
        return Err(AccountError::Exists(email.to_owned()));
    }
    Ok(Account {
        email: email.to_owned(),
        created: timestamp(millis(at)),
    })
}

#[async_trait]
impl AccountStore for SqliteAccountStore {
    async fn create_account(
        &self,
        email: &str,
        password_hash: &str,
        at: Timestamp,
    ) -> AccountResult<Account> {
        let (email, hash) = (email.to_owned(), password_hash.to_owned());
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let account = insert_account(&tx, &email, &hash, at)?;
            tx.commit()?;
            Ok(account)
        })
        .await
    }

    async fn accounts(&self) -> AccountResult<Vec<Account>> {
        self.with_conn(|conn| {
            let mut statement =
                conn.prepare_cached("SELECT email, created FROM accounts ORDER BY email")?;
            let rows = statement.query_map([], |r| {
                Ok(Account {
                    email: r.get(0)?,
                    created: timestamp(r.get(1)?),
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn has_accounts(&self) -> AccountResult<bool> {
        self.with_conn(|conn| Ok(any_account(conn)?)).await
    }

    async fn password_hash(&self, email: &str) -> AccountResult<Option<String>> {
        let email = email.to_owned();
        self.with_conn(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT password_hash FROM accounts WHERE email = ?1",
                    [&email],
                    |r| r.get(0),
                )
                .optional()?)
        })
        .await
    }

    async fn set_password_hash(&self, email: &str, password_hash: &str) -> AccountResult<()> {
        let (email, hash) = (email.to_owned(), password_hash.to_owned());
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let changed = tx.execute(
                "UPDATE accounts SET password_hash = ?2 WHERE email = ?1",
                params![email, hash],
            )?;
            if changed == 0 {
                return Err(AccountError::NotFound(email));
            }
            tx.execute("DELETE FROM sessions WHERE email = ?1", [&email])?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn delete_account(&self, email: &str) -> AccountResult<()> {
        let email = email.to_owned();
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let deleted = tx.execute("DELETE FROM accounts WHERE email = ?1", [&email])?;
            if deleted == 0 {
                return Err(AccountError::NotFound(email));
            }
            tx.execute("DELETE FROM sessions WHERE email = ?1", [&email])?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn create_session(
        &self,
        digest: &TokenDigest,
        email: &str,
        csrf: &str,
        at: Timestamp,
    ) -> AccountResult<()> {
        let (digest, email, csrf) = (digest.clone(), email.to_owned(), csrf.to_owned());
        self.with_conn(move |conn| {
            conn.execute(
                "INSERT INTO sessions (digest, email, csrf, created, last_seen)
                 VALUES (?1, ?2, ?3, ?4, ?4)",
                params![&digest.0[..], email, csrf, millis(at)],
            )?;
            Ok(())
        })
        .await
    }

    async fn session(&self, digest: &TokenDigest) -> AccountResult<Option<SessionRecord>> {
        let digest = digest.clone();
        self.with_conn(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT s.email, s.csrf, s.created, s.last_seen FROM sessions s
                     JOIN accounts a ON a.email = s.email WHERE s.digest = ?1",
                    [&digest.0[..]],
                    |r| {
                        Ok(SessionRecord {
                            email: r.get(0)?,
                            csrf: r.get(1)?,
                            created: timestamp(r.get(2)?),
                            last_seen: timestamp(r.get(3)?),
                        })
                    },
                )
                .optional()?)
        })
        .await
    }

    async fn touch_session(&self, digest: &TokenDigest, at: Timestamp) -> AccountResult<()> {
        let digest = digest.clone();
        self.with_conn(move |conn| {
            conn.execute(
                "UPDATE sessions SET last_seen = MAX(last_seen, ?2) WHERE digest = ?1",
                params![&digest.0[..], millis(at)],
            )?;
            Ok(())
        })
        .await
    }

    async fn delete_session(&self, digest: &TokenDigest) -> AccountResult<()> {
        let digest = digest.clone();
        self.with_conn(move |conn| {
            conn.execute("DELETE FROM sessions WHERE digest = ?1", [&digest.0[..]])?;
            Ok(())
        })
        .await
    }

    async fn delete_expired_sessions(
        &self,
        idle_before: Timestamp,
        created_before: Timestamp,
    ) -> AccountResult<u64> {
        self.with_conn(move |conn| {
            let deleted = conn.execute(
                "DELETE FROM sessions WHERE last_seen < ?1 OR created < ?2",
                params![millis(idle_before), millis(created_before)],
            )?;
            Ok(deleted as u64)
        })
        .await
    }

    async fn create_setup_token(
        &self,
        digest: &TokenDigest,
        expires: Timestamp,
    ) -> AccountResult<()> {
        let digest = digest.clone();
        self.with_conn(move |conn| {
            conn.execute(
                "INSERT INTO setup_tokens (digest, expires) VALUES (?1, ?2)",
                params![&digest.0[..], millis(expires)],
            )?;
            Ok(())
        })
        .await
    }

    async fn setup_token_open(&self, digest: &TokenDigest, now: Timestamp) -> AccountResult<bool> {
        let digest = digest.clone();
        self.with_conn(move |conn| Ok(token_open(conn, &digest, now)?))
            .await
    }

    async fn create_first_account(
        &self,
        digest: &TokenDigest,
        email: &str,
        password_hash: &str,
        now: Timestamp,
    ) -> AccountResult<Account> {
        let (digest, email, hash) = (digest.clone(), email.to_owned(), password_hash.to_owned());
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if !token_open(&tx, &digest, now)? {
                return Err(AccountError::SetupClosed);
            }
            tx.execute(
                "UPDATE setup_tokens SET used = ?2 WHERE digest = ?1",
                params![&digest.0[..], millis(now)],
            )?;
            let account = insert_account(&tx, &email, &hash, now)?;
            tx.commit()?;
            Ok(account)
        })
        .await
    }
}
