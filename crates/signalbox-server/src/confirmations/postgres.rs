//! [`PgConfirmations`]: the confirmation mailer's ledger in PostgreSQL.

use async_trait::async_trait;
use deadpool_postgres::Pool;
use signalbox_core::PostgresUrl;
use signalbox_store::postgres::{connect_pool, schema};

use super::{ConfirmationError, ConfirmationLedger};

const MIGRATIONS: &[&str] = &[r#"
    CREATE TABLE confirmation_cursor (
        id SMALLINT PRIMARY KEY CHECK (id = 1),
        value BIGINT NOT NULL
    );
    CREATE TABLE confirmation_sends (
        change_pk BIGINT PRIMARY KEY,
        sent BOOLEAN NOT NULL
    );
"#];

/// The ledger in PostgreSQL. Cheap to share behind an `Arc`.
pub struct PgConfirmations {
    pool: Pool,
}

fn store_error(err: impl std::fmt::Display) -> ConfirmationError {
    ConfirmationError::Store(err.to_string())
}

impl PgConfirmations {
    /// The tables the double opt-in ledger keeps in the database (as its migrations create them).
    pub fn tables() -> Vec<String> {
        schema::tables_created(MIGRATIONS)
    }

    /// Connects to the database at `url`, applying migrations; refuses a newer schema.
    pub async fn connect(url: &PostgresUrl) -> Result<PgConfirmations, ConfirmationError> {
        let pool = connect_pool(url, 2).map_err(store_error)?;
        let mut client = pool.get().await.map_err(store_error)?;
        schema::migrate(&mut client, "confirmations", MIGRATIONS)
            .await
            .map_err(store_error)?;
        drop(client);
        Ok(PgConfirmations { pool })
    }

    async fn execute(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<u64, ConfirmationError> {
        let client = self.pool.get().await.map_err(store_error)?;
        client.execute(sql, params).await.map_err(store_error)
    }
}

#[async_trait]
impl ConfirmationLedger for PgConfirmations {
    async fn cursor(&self) -> Result<Option<i64>, ConfirmationError> {
        let client = self.pool.get().await.map_err(store_error)?;
        Ok(client
            .query_opt("SELECT value FROM confirmation_cursor WHERE id = 1", &[])
            .await
            .map_err(store_error)?
            .map(|r| r.get(0)))
    }

    async fn save_cursor(&self, list_change_pk: i64) -> Result<(), ConfirmationError> {
        self.execute(
            "INSERT INTO confirmation_cursor (id, value) VALUES (1, $1)
             ON CONFLICT (id) DO UPDATE SET value = EXCLUDED.value",
            &[&list_change_pk],
        )
        .await
        .map(drop)
    }

    async fn sent(&self, change_pk: i64) -> Result<bool, ConfirmationError> {
        let client = self.pool.get().await.map_err(store_error)?;
        Ok(client
            .query_opt(
                "SELECT sent FROM confirmation_sends WHERE change_pk = $1",
                &[&change_pk],
            )
            .await
            .map_err(store_error)?
            .is_some_and(|r| r.get::<_, bool>(0)))
    }

    async fn intend(&self, change_pk: i64) -> Result<(), ConfirmationError> {
        self.execute(
            "INSERT INTO confirmation_sends (change_pk, sent) VALUES ($1, false)
             ON CONFLICT (change_pk) DO NOTHING",
            &[&change_pk],
        )
        .await
        .map(drop)
    }

    async fn done(&self, change_pk: i64) -> Result<(), ConfirmationError> {
        self.execute(
            "UPDATE confirmation_sends SET sent = true WHERE change_pk = $1",
            &[&change_pk],
        )
        .await
        .map(drop)
    }
}
