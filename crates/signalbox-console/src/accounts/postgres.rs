//! [`PgAccountStore`]: accounts, sessions and setup tokens in PostgreSQL, for several nodes on
//! one database (a session made on one node is good on every other).
//!
//! Times are `timestamptz`, kept to the millisecond as the embedded store keeps them.

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Pool};
use jiff::Timestamp;
use signalbox_core::PostgresUrl;
use signalbox_store::postgres::{connect_pool, schema};

use super::{Account, AccountError, AccountResult, AccountStore, SessionRecord, TokenDigest};

const MIGRATIONS: &[&str] = &[r#"
    CREATE TABLE console_accounts (
        email TEXT PRIMARY KEY,
        password_hash TEXT NOT NULL,
        created TIMESTAMPTZ NOT NULL
    );
    CREATE TABLE console_sessions (
        digest BYTEA PRIMARY KEY,
        email TEXT NOT NULL REFERENCES console_accounts (email) ON DELETE CASCADE,
        csrf TEXT NOT NULL,
        created TIMESTAMPTZ NOT NULL,
        last_seen TIMESTAMPTZ NOT NULL
    );
    CREATE INDEX console_sessions_by_email ON console_sessions (email);
    CREATE INDEX console_sessions_by_age ON console_sessions (last_seen);
    CREATE TABLE console_setup_tokens (
        digest BYTEA PRIMARY KEY,
        expires TIMESTAMPTZ NOT NULL,
        used TIMESTAMPTZ
    );
"#];

/// The console's accounts in PostgreSQL. Cheap to share behind an `Arc`.
pub struct PgAccountStore {
    pool: Pool,
}

impl PgAccountStore {
    /// The tables the console keeps in the database (as its migrations create them).
    pub fn tables() -> Vec<String> {
        schema::tables_created(MIGRATIONS)
    }

    /// Connects to the database at `url`, applying migrations; refuses a newer schema.
    pub async fn connect(url: &PostgresUrl) -> AccountResult<PgAccountStore> {
        let pool = connect_pool(url, 4).map_err(|e| AccountError::Store(e.to_string()))?;
        let mut client = pool.get().await.map_err(pool_error)?;
        schema::migrate(&mut client, "console", MIGRATIONS)
            .await
            .map_err(|e| AccountError::Store(e.to_string()))?;
        drop(client);
        Ok(PgAccountStore { pool })
    }

    async fn client(&self) -> AccountResult<deadpool_postgres::Object> {
        self.pool.get().await.map_err(pool_error)
    }
}

fn pool_error(err: deadpool_postgres::PoolError) -> AccountError {
    AccountError::Store(format!("no database connection: {err}"))
}

fn pg(err: tokio_postgres::Error) -> AccountError {
    AccountError::Store(err.to_string())
}

/// A time as the store keeps it: to the millisecond.
fn kept(at: Timestamp) -> Timestamp {
    Timestamp::from_millisecond(at.as_millisecond()).unwrap_or(Timestamp::UNIX_EPOCH)
}

async fn token_open(
    client: &impl GenericClient,
    digest: &TokenDigest,
    now: Timestamp,
) -> AccountResult<bool> {
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM console_setup_tokens
                            WHERE digest = $1 AND used IS NULL AND expires > $2)
                    AND NOT EXISTS (SELECT 1 FROM console_accounts)",
            &[&&digest.0[..], &kept(now)],
        )
        .await
        .map_err(pg)?;
    Ok(row.get(0))
}

async fn insert_account(
    client: &impl GenericClient,
    email: &str,
    password_hash: &str,
    at: Timestamp,
) -> AccountResult<Account> {
    let at = kept(at);
    let inserted = client
        .execute(
            "INSERT INTO console_accounts (email, password_hash, created) VALUES ($1, $2, $3)
             ON CONFLICT (email) DO NOTHING",
            &[&email, &password_hash, &at],
        )
        .await
        .map_err(pg)?;
    if inserted == 0 {
        return Err(AccountError::Exists(email.to_owned()));
    }
    Ok(Account {
        email: email.to_owned(),
        created: at,
    })
}

#[async_trait]
impl AccountStore for PgAccountStore {
    async fn create_account(
        &self,
        email: &str,
        password_hash: &str,
        at: Timestamp,
    ) -> AccountResult<Account> {
        insert_account(&self.client().await?, email, password_hash, at).await
    }

    async fn accounts(&self) -> AccountResult<Vec<Account>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT email, created FROM console_accounts ORDER BY email",
                &[],
            )
            .await
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| Account {
                email: r.get(0),
                created: r.get(1),
            })
            .collect())
    }

    async fn has_accounts(&self) -> AccountResult<bool> {
        let row = self
            .client()
            .await?
            .query_one("SELECT EXISTS (SELECT 1 FROM console_accounts)", &[])
            .await
            .map_err(pg)?;
        Ok(row.get(0))
    }

    async fn password_hash(&self, email: &str) -> AccountResult<Option<String>> {
        Ok(self
            .client()
            .await?
            .query_opt(
                "SELECT password_hash FROM console_accounts WHERE email = $1",
                &[&email],
            )
            .await
            .map_err(pg)?
            .map(|r| r.get(0)))
    }

    async fn set_password_hash(&self, email: &str, password_hash: &str) -> AccountResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let changed = tx
            .execute(
                "UPDATE console_accounts SET password_hash = $2 WHERE email = $1",
                &[&email, &password_hash],
            )
            .await
            .map_err(pg)?;
        if changed == 0 {
            return Err(AccountError::NotFound(email.to_owned()));
        }
        tx.execute("DELETE FROM console_sessions WHERE email = $1", &[&email])
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)
    }

    async fn delete_account(&self, email: &str) -> AccountResult<()> {
        // Its sessions go with it (ON DELETE CASCADE).
        let deleted = self
            .client()
            .await?
            .execute("DELETE FROM console_accounts WHERE email = $1", &[&email])
            .await
            .map_err(pg)?;
        if deleted == 0 {
            return Err(AccountError::NotFound(email.to_owned()));
        }
        Ok(())
    }

    async fn create_session(
        &self,
        digest: &TokenDigest,
        email: &str,
        csrf: &str,
        at: Timestamp,
    ) -> AccountResult<()> {
        self.client()
            .await?
            .execute(
                "INSERT INTO console_sessions (digest, email, csrf, created, last_seen)
                 VALUES ($1, $2, $3, $4, $4)",
                &[&&digest.0[..], &email, &csrf, &kept(at)],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn session(&self, digest: &TokenDigest) -> AccountResult<Option<SessionRecord>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT s.email, s.csrf, s.created, s.last_seen FROM console_sessions s
                 JOIN console_accounts a ON a.email = s.email WHERE s.digest = $1",
            )
            .await
            .map_err(pg)?;
        Ok(client
            .query_opt(&stmt, &[&&digest.0[..]])
            .await
            .map_err(pg)?
            .map(|r| SessionRecord {
                email: r.get(0),
                csrf: r.get(1),
                created: r.get(2),
                last_seen: r.get(3),
            }))
    }

    async fn touch_session(&self, digest: &TokenDigest, at: Timestamp) -> AccountResult<()> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "UPDATE console_sessions SET last_seen = GREATEST(last_seen, $2)
                 WHERE digest = $1",
            )
            .await
            .map_err(pg)?;
        client
            .execute(&stmt, &[&&digest.0[..], &kept(at)])
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn delete_session(&self, digest: &TokenDigest) -> AccountResult<()> {
        self.client()
            .await?
            .execute(
                "DELETE FROM console_sessions WHERE digest = $1",
                &[&&digest.0[..]],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn delete_expired_sessions(
        &self,
        idle_before: Timestamp,
        created_before: Timestamp,
    ) -> AccountResult<u64> {
        self.client()
            .await?
            .execute(
                "DELETE FROM console_sessions WHERE last_seen < $1 OR created < $2",
                &[&kept(idle_before), &kept(created_before)],
            )
            .await
            .map_err(pg)
    }

    async fn create_setup_token(
        &self,
        digest: &TokenDigest,
        expires: Timestamp,
    ) -> AccountResult<()> {
        self.client()
            .await?
            .execute(
                "INSERT INTO console_setup_tokens (digest, expires) VALUES ($1, $2)",
                &[&&digest.0[..], &kept(expires)],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn setup_token_open(&self, digest: &TokenDigest, now: Timestamp) -> AccountResult<bool> {
        token_open(&self.client().await?, digest, now).await
    }

    async fn create_first_account(
        &self,
        digest: &TokenDigest,
        email: &str,
        password_hash: &str,
        now: Timestamp,
    ) -> AccountResult<Account> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        // Two nodes setting up at once: the token's row lock lets one through.
        let used = tx
            .execute(
                "UPDATE console_setup_tokens SET used = $2
                 WHERE digest = $1 AND used IS NULL AND expires > $2",
                &[&&digest.0[..], &kept(now)],
            )
            .await
            .map_err(pg)?;
        let anyone = tx
            .query_one("SELECT EXISTS (SELECT 1 FROM console_accounts)", &[])
            .await
            .map_err(pg)?
            .get::<_, bool>(0);
        if used == 0 || anyone {
            return Err(AccountError::SetupClosed);
        }
        let account = insert_account(&tx, email, password_hash, now).await?;
        tx.commit().await.map_err(pg)?;
        Ok(account)
    }
}
