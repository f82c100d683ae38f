//! [`PgTemplates`]: templates in PostgreSQL, for several nodes on one database.

use async_trait::async_trait;
use deadpool_postgres::Pool;
use signalbox_core::PostgresUrl;
use signalbox_store::postgres::{connect_pool, schema};
use tokio_postgres::Row;

use super::{Template, TemplateFilter, TemplateRecords, TemplateSort, TemplateStoreError};

const MIGRATIONS: &[&str] = &[r#"
    CREATE TABLE templates (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        editor_type TEXT NOT NULL,
        html TEXT NOT NULL,
        text TEXT,
        created TIMESTAMPTZ NOT NULL,
        updated TIMESTAMPTZ NOT NULL,
        seq BIGINT GENERATED ALWAYS AS IDENTITY
    );
    CREATE INDEX templates_by_name ON templates (name, seq);
    CREATE INDEX templates_by_created ON templates (created, seq);
"#];

/// Templates in PostgreSQL. Cheap to share behind an `Arc`.
pub struct PgTemplates {
    pool: Pool,
}

fn internal(err: impl std::fmt::Display) -> TemplateStoreError {
    TemplateStoreError::Internal(err.to_string())
}

impl PgTemplates {
    /// The tables the email templates keeps in the database (as its migrations create them).
    pub fn tables() -> Vec<String> {
        schema::tables_created(MIGRATIONS)
    }

    /// Connects to the database at `url`, applying migrations; refuses a newer schema.
    pub async fn connect(url: &PostgresUrl) -> Result<PgTemplates, TemplateStoreError> {
        let pool = connect_pool(url, 4).map_err(internal)?;
        let mut client = pool.get().await.map_err(internal)?;
        schema::migrate(&mut client, "templates", MIGRATIONS)
            .await
            .map_err(internal)?;
        drop(client);
        Ok(PgTemplates { pool })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, TemplateStoreError> {
        self.pool.get().await.map_err(internal)
    }
}

const COLUMNS: &str = "id, name, editor_type, html, text, created, updated";

fn template(row: &Row) -> Template {
    Template {
        id: row.get(0),
        name: row.get(1),
        editor_type: row.get(2),
        html: row.get(3),
        text: row.get(4),
        created: row.get(5),
        updated: row.get(6),
    }
}

#[async_trait]
impl TemplateRecords for PgTemplates {
    async fn insert(&self, t: &Template) -> Result<bool, TemplateStoreError> {
        let inserted = self
            .client()
            .await?
            .execute(
                "INSERT INTO templates (id, name, editor_type, html, text, created, updated)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
                &[
                    &t.id,
                    &t.name,
                    &t.editor_type,
                    &t.html,
                    &t.text,
                    &t.created,
                    &t.updated,
                ],
            )
            .await
            .map_err(internal)?;
        Ok(inserted == 1)
    }

    async fn get(&self, id: &str) -> Result<Option<Template>, TemplateStoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!("SELECT {COLUMNS} FROM templates WHERE id = $1"))
            .await
            .map_err(internal)?;
        Ok(client
            .query_opt(&stmt, &[&id])
            .await
            .map_err(internal)?
            .as_ref()
            .map(template))
    }

    async fn replace(&self, t: &Template) -> Result<bool, TemplateStoreError> {
        let changed = self
            .client()
            .await?
            .execute(
                "UPDATE templates SET name = $2, html = $3, text = $4, updated = $5 WHERE id = $1",
                &[&t.id, &t.name, &t.html, &t.text, &t.updated],
            )
            .await
            .map_err(internal)?;
        Ok(changed == 1)
    }

    async fn delete(&self, id: &str) -> Result<bool, TemplateStoreError> {
        let deleted = self
            .client()
            .await?
            .execute("DELETE FROM templates WHERE id = $1", &[&id])
            .await
            .map_err(internal)?;
        Ok(deleted == 1)
    }

    async fn page(
        &self,
        filter: &TemplateFilter,
        sort: TemplateSort,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<Template>, bool), TemplateStoreError> {
        let order = match sort {
            TemplateSort::Created => "created, seq",
            TemplateSort::CreatedDesc => "created DESC, seq DESC",
            TemplateSort::Name => "name, seq",
            TemplateSort::NameDesc => "name DESC, seq DESC",
            TemplateSort::Updated => "updated, seq",
            TemplateSort::UpdatedDesc => "updated DESC, seq DESC",
        };
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        let fetch = i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1;
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM templates
                     WHERE ($1::text[] IS NULL OR id = ANY($1)) AND ($2::text IS NULL OR name = $2)
                     ORDER BY {order} OFFSET $3 LIMIT $4"
                ),
                &[&filter.ids, &filter.name, &offset, &fetch],
            )
            .await
            .map_err(internal)?;
        let more = rows.len() > limit;
        Ok((rows.iter().take(limit).map(template).collect(), more))
    }
}
