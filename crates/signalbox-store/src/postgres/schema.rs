//! Versioned schemas on PostgreSQL: each part of Signalbox that keeps tables there (the call
//! log here; engage, flows and the others as they arrive) names itself a component and lists
//! its migrations; [`migrate`] applies the missing ones at start, in one transaction each,
//! under an advisory lock so that nodes starting together apply each once. A database whose
//! component is newer than this build knows is refused, not touched.

use deadpool_postgres::Client;

use crate::postgres::pg_error;
use crate::{StoreError, StoreResult};

/// Key of the transaction-level advisory lock that serialises migrations across nodes.
const MIGRATION_LOCK: i64 = 0x5167_6e61_6c62_6f78; // "Sgnalbox"

/// Applies the migrations of `component` the database does not have yet, and returns the
/// version it is at.
pub async fn migrate(
    client: &mut Client,
    component: &str,
    migrations: &[&str],
) -> StoreResult<usize> {
    // The lock comes first: nodes starting together would otherwise race on creating the
    // version table itself, and one of them fail on the catalog's unique index.
    let tx = client.transaction().await.map_err(pg_error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg_error)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS signalbox_schema (
            component TEXT PRIMARY KEY,
            version INTEGER NOT NULL
        )",
    )
    .await
    .map_err(pg_error)?;
    let current: i32 = tx
        .query_opt(
            "SELECT version FROM signalbox_schema WHERE component = $1",
            &[&component],
        )
        .await
        .map_err(pg_error)?
        .map(|row| row.get(0))
        .unwrap_or(0);
    let current = usize::try_from(current).unwrap_or(0);
    if current > migrations.len() {
        return Err(StoreError::SchemaTooNew {
            component: component.to_owned(),
            found: current,
            known: migrations.len(),
        });
    }
    for (idx, sql) in migrations.iter().enumerate().skip(current) {
        tx.batch_execute(sql).await.map_err(pg_error)?;
        tracing::debug!(component, version = idx + 1, "schema migrated");
    }
    let version = i32::try_from(migrations.len()).expect("fewer than 2^31 migrations");
    tx.execute(
        "INSERT INTO signalbox_schema (component, version) VALUES ($1, $2)
         ON CONFLICT (component) DO UPDATE SET version = EXCLUDED.version",
        &[&component, &version],
    )
    .await
    .map_err(pg_error)?;
    tx.commit().await.map_err(pg_error)?;
    Ok(migrations.len())
}

/// The tables `migrations` create (`CREATE TABLE [IF NOT EXISTS] name`), in order: the tables
/// a component keeps in the database, named by the migrations that make them so the list
/// cannot drift from them. [`table_sizes`] tells what each takes.
pub fn tables_created(migrations: &[&str]) -> Vec<String> {
    let mut tables = Vec::new();
    for sql in migrations {
        let words: Vec<&str> = sql
            .split(|c: char| c.is_whitespace() || c == '(' || c == ';')
            .filter(|word| !word.is_empty())
            .collect();
        for (idx, pair) in words.windows(2).enumerate() {
            if !(pair[0].eq_ignore_ascii_case("create") && pair[1].eq_ignore_ascii_case("table")) {
                continue;
            }
            let mut name_idx = idx + 2;
            if words
                .get(name_idx)
                .is_some_and(|word| word.eq_ignore_ascii_case("if"))
            {
                name_idx += 3;
            }
            if let Some(name) = words.get(name_idx) {
                let name = name.trim_matches('"').to_ascii_lowercase();
                if !tables.contains(&name) {
                    tables.push(name);
                }
            }
        }
    }
    tables
}

/// Every table of the connection's schema with what it takes on disk in bytes (its rows,
/// indexes and TOAST: `pg_total_relation_size`), by name. Tables of any component and of none:
/// each component names its own with [`tables_created`].
pub async fn table_sizes(
    url: &signalbox_core::PostgresUrl,
) -> StoreResult<std::collections::BTreeMap<String, u64>> {
    let pool = super::connect_pool(url, 1)?;
    let client = pool.get().await.map_err(super::pool_error)?;
    let rows = client
        .query(
            "SELECT c.relname::text, pg_total_relation_size(c.oid)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'p') AND n.nspname = current_schema()",
            &[],
        )
        .await
        .map_err(pg_error)?;
    Ok(rows
        .iter()
        .map(|row| {
            let bytes: i64 = row.get(1);
            (row.get::<_, String>(0), u64::try_from(bytes).unwrap_or(0))
        })
        .collect())
}

/// The call log, its dedupe index, rejections, sources, write keys and private API keys.
///
/// Times are microseconds since the Unix epoch (`BIGINT`), as in the embedded store, so the
/// two answer exactly alike.
pub(crate) const STORE_MIGRATIONS: &[&str] = &[r#"
    CREATE TABLE sources (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        display_name TEXT,
        status TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        settings TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX sources_by_display_name ON sources (display_name);
    CREATE TABLE write_keys (
        digest BYTEA PRIMARY KEY,
        key TEXT NOT NULL,
        source_id BIGINT NOT NULL REFERENCES sources (id) ON DELETE CASCADE,
        created_at BIGINT NOT NULL,
        expires_at BIGINT
    );
    CREATE INDEX write_keys_by_source ON write_keys (source_id);
    CREATE TABLE api_keys (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        prefix TEXT NOT NULL,
        digest TEXT NOT NULL UNIQUE,
        created_at BIGINT NOT NULL,
        scopes TEXT NOT NULL
    );
    -- The log. `seq` is handed out under the row lock of `log_head`, so sequence numbers
    -- become visible in order and a reader that follows `seq` never passes one that commits
    -- later.
    CREATE TABLE calls (
        seq BIGINT PRIMARY KEY,
        source_id BIGINT NOT NULL,
        kind TEXT NOT NULL,
        message_id TEXT NOT NULL,
        received_at BIGINT NOT NULL,
        payload TEXT NOT NULL
    );
    CREATE INDEX calls_by_source ON calls (source_id, seq);
    CREATE INDEX calls_by_time ON calls USING brin (received_at);
    CREATE TABLE log_head (
        id SMALLINT PRIMARY KEY CHECK (id = 1),
        last_seq BIGINT NOT NULL
    );
    INSERT INTO log_head (id, last_seq) VALUES (1, 0);
    -- The dedupe index: the stored copy of each (source, messageId).
    CREATE TABLE message_ids (
        source_id BIGINT NOT NULL,
        message_id TEXT NOT NULL,
        received_at BIGINT NOT NULL,
        PRIMARY KEY (source_id, message_id)
    );
    CREATE INDEX message_ids_by_time ON message_ids (received_at);
    CREATE TABLE rejections (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        source_id BIGINT NOT NULL,
        code TEXT NOT NULL,
        message TEXT NOT NULL,
        received_at BIGINT NOT NULL,
        payload TEXT NOT NULL
    );
    CREATE INDEX rejections_by_source ON rejections (source_id, id);
    CREATE TABLE source_totals (
        source_id BIGINT PRIMARY KEY,
        calls BIGINT NOT NULL DEFAULT 0,
        last_seq BIGINT NOT NULL DEFAULT 0,
        rejections BIGINT NOT NULL DEFAULT 0
    );
"#];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tables_a_migration_creates_are_named_once_in_order() {
        let migrations = [
            "CREATE TABLE sources (id BIGINT);\n CREATE INDEX sources_by_name ON sources (name);",
            "create table if not exists \"Calls\"(seq BIGINT); CREATE TABLE sources (x INT)",
        ];
        assert_eq!(tables_created(&migrations), ["sources", "calls"]);
    }

    #[test]
    fn the_store_names_the_tables_of_its_migrations() {
        let tables = tables_created(STORE_MIGRATIONS);
        for table in [
            "sources",
            "write_keys",
            "api_keys",
            "calls",
            "source_totals",
        ] {
            assert!(tables.iter().any(|t| t == table), "{table} in {tables:?}");
        }
    }
}
