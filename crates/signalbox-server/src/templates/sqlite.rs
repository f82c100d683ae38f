//! [`SqliteTemplates`]: templates in `templates.db` in the data directory. Times are
//! microseconds; `seq` keeps the order of creation for ties.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use jiff::Timestamp;
use rusqlite::{params, Connection, OptionalExtension};

use super::{Template, TemplateFilter, TemplateRecords, TemplateSort, TemplateStoreError};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS templates (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    editor_type TEXT NOT NULL,
    html TEXT NOT NULL,
    text TEXT,
    created_us INTEGER NOT NULL,
    updated_us INTEGER NOT NULL,
    seq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS templates_name ON templates (name);
";

/// `templates.db`. Cheap to share behind an `Arc`.
pub struct SqliteTemplates {
    conn: Arc<Mutex<Connection>>,
}

fn internal(err: rusqlite::Error) -> TemplateStoreError {
    TemplateStoreError::Internal(err.to_string())
}

impl SqliteTemplates {
    /// Opens (creating) the store at `path`.
    pub fn open(path: &Path) -> Result<SqliteTemplates, TemplateStoreError> {
        let conn = Connection::open(path).map_err(internal)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(internal)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(internal)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(internal)?;
        conn.execute_batch(SCHEMA).map_err(internal)?;
        Ok(SqliteTemplates {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn with_conn<T, F>(&self, work: F) -> Result<T, TemplateStoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let conn = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            work(&conn).map_err(internal)
        })
        .await
        .map_err(|e| TemplateStoreError::Internal(e.to_string()))?
    }
}

const COLUMNS: &str = "id, name, editor_type, html, text, created_us, updated_us";

fn row_to_template(row: &rusqlite::Row<'_>) -> rusqlite::Result<Template> {
    let instant = |us: i64| Timestamp::from_microsecond(us).unwrap_or(Timestamp::UNIX_EPOCH);
    Ok(Template {
        id: row.get(0)?,
        name: row.get(1)?,
        editor_type: row.get(2)?,
        html: row.get(3)?,
        text: row.get(4)?,
        created: instant(row.get(5)?),
        updated: instant(row.get(6)?),
    })
}

#[async_trait]
impl TemplateRecords for SqliteTemplates {
    async fn insert(&self, template: &Template) -> Result<bool, TemplateStoreError> {
        let t = template.clone();
        self.with_conn(move |conn| {
            // `WHERE true`: SQLite reads `ON CONFLICT` after a bare `SELECT … FROM` as a join.
            let inserted = conn.execute(
                "INSERT INTO templates
                    (id, name, editor_type, html, text, created_us, updated_us, seq)
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, COALESCE(MAX(seq), 0) + 1 FROM templates WHERE true
                 ON CONFLICT (id) DO NOTHING",
                params![
                    t.id,
                    t.name,
                    t.editor_type,
                    t.html,
                    t.text,
                    t.created.as_microsecond(),
                    t.updated.as_microsecond()
                ],
            )?;
            Ok(inserted == 1)
        })
        .await
    }

    async fn get(&self, id: &str) -> Result<Option<Template>, TemplateStoreError> {
        let id = id.to_owned();
        self.with_conn(move |conn| {
            conn.query_row(
                &format!("SELECT {COLUMNS} FROM templates WHERE id = ?1"),
                [id],
                row_to_template,
            )
            .optional()
        })
        .await
    }

    async fn replace(&self, template: &Template) -> Result<bool, TemplateStoreError> {
        let t = template.clone();
        self.with_conn(move |conn| {
            let changed = conn.execute(
                "UPDATE templates SET name = ?2, html = ?3, text = ?4, updated_us = ?5
                 WHERE id = ?1",
                params![t.id, t.name, t.html, t.text, t.updated.as_microsecond()],
            )?;
            Ok(changed == 1)
        })
        .await
    }

    async fn delete(&self, id: &str) -> Result<bool, TemplateStoreError> {
        let id = id.to_owned();
        self.with_conn(move |conn| {
            Ok(conn.execute("DELETE FROM templates WHERE id = ?1", [id])? == 1)
        })
        .await
    }

    async fn page(
        &self,
        filter: &TemplateFilter,
        sort: TemplateSort,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<Template>, bool), TemplateStoreError> {
        let filter = filter.clone();
        let order = match sort {
            TemplateSort::Created => "created_us, seq",
            TemplateSort::CreatedDesc => "created_us DESC, seq DESC",
            TemplateSort::Name => "name, seq",
            TemplateSort::NameDesc => "name DESC, seq DESC",
            TemplateSort::Updated => "updated_us, seq",
            TemplateSort::UpdatedDesc => "updated_us DESC, seq DESC",
        };
        self.with_conn(move |conn| {
            let mut statement = conn.prepare(&format!(
                "SELECT {COLUMNS} FROM templates WHERE (?1 IS NULL OR name = ?1) ORDER BY {order}"
            ))?;
            let rows = statement.query_map([&filter.name], row_to_template)?;
            let mut page = Vec::new();
            let mut matched = 0usize;
            for row in rows {
                let template = row?;
                if filter
                    .ids
                    .as_ref()
                    .is_some_and(|ids| !ids.contains(&template.id))
                {
                    continue;
                }
                matched += 1;
                if matched <= offset {
                    continue;
                }
                if page.len() == limit {
                    return Ok((page, true));
                }
                page.push(template);
            }
            Ok((page, false))
        })
        .await
    }
}
