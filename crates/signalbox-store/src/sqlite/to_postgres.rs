//! `signalbox migrate`'s part for the call log: `signalbox.db` copied into PostgreSQL.

use std::path::Path;

use signalbox_core::PostgresUrl;

use super::copy_source::SqliteFile;
use crate::postgres::copy::{self, CopyError, TableMap, Target};
use crate::postgres::{connect_pool, pool_error, schema as pg_schema};

/// The log's tables; the embedded `events` is the log, `calls` on PostgreSQL.
const TABLES: &[TableMap] = &[
    TableMap::renamed("sources", "sources"),
    TableMap::renamed("write_keys", "write_keys"),
    TableMap::renamed("api_keys", "api_keys"),
    // Payloads as JSON, however the log packed them.
    TableMap {
        from: "events",
        to: "calls",
        exprs: &[("payload", "signalbox_unpack(payload)")],
    },
    TableMap::renamed("rejections", "rejections"),
    TableMap::renamed("source_totals", "source_totals"),
];

/// Copies the call log at `from` (a stopped installation's `signalbox.db`, opened read-only)
/// into the empty database at `to`: sources, write keys, API keys, the log and rejections, so
/// the same keys authenticate there. The dedupe records PostgreSQL keeps in a table (the
/// embedded store keeps them in an index beside the file) are made from the copied log.
/// Returns the rows copied per table.
pub async fn migrate_to_postgres(
    from: &Path,
    to: &PostgresUrl,
    progress: &dyn Fn(&str, u64),
) -> Result<Vec<(String, u64)>, CopyError> {
    let source = open_log(from)?;
    let pool = connect_pool(to, 1)?;
    let mut client = pool.get().await.map_err(pool_error)?;
    pg_schema::migrate(
        &mut client,
        "store",
        crate::postgres::schema::STORE_MIGRATIONS,
    )
    .await?;
    drop(client);
    let target = Target::connect(to).await?;
    let mut counts = copy::copy_tables(&source, &target, TABLES, progress).await?;
    target
        .execute("UPDATE log_head SET last_seq = (SELECT COALESCE(MAX(seq), 0) FROM calls)")
        .await?;
    let message_ids = target
        .execute(
            "INSERT INTO message_ids (source_id, message_id, received_at)
             SELECT source_id, message_id, MAX(received_at) FROM calls
             GROUP BY source_id, message_id",
        )
        .await?;
    counts.push(("message_ids".to_owned(), message_ids));
    Ok(counts)
}

/// The log's file, refused when a newer Signalbox wrote it.
fn open_log(path: &Path) -> Result<SqliteFile, CopyError> {
    let file = SqliteFile::new(path);
    let version = file.user_version().map_err(|reason| CopyError::Convert {
        table: path.display().to_string(),
        column: "*".into(),
        reason,
    })?;
    let known = super::schema::known_version();
    if version > known {
        return Err(CopyError::Store(crate::StoreError::SchemaTooNew {
            component: "store".into(),
            found: version,
            known,
        }));
    }
    Ok(file.with_setup(super::packing::register_unpack))
}

#[cfg(test)]
mod tests {
    use jiff::{Timestamp, ToSpan};
    use signalbox_core::{CallKind, NewCall, Scopes};

    use super::*;
    use crate::postgres::testing::TestDatabase;
    use crate::postgres::{PgOptions, PgStore};
    use crate::sqlite::{SqliteOptions, SqliteStore};
    use crate::{CallQuery, Store};

    fn call(id: &str, received_at: Timestamp) -> NewCall {
        NewCall {
            kind: CallKind::Track,
            message_id: id.to_owned(),
            received_at,
            payload: format!(r#"{{"type":"track","messageId":"{id}"}}"#),
        }
    }

    #[tokio::test]
    async fn the_log_and_its_keys_work_the_same_on_postgres() {
        let Some(db) = TestDatabase::create().await else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signalbox.db");
        let now = Timestamp::now();
        let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
        let (web, write_key) = store.create_source("web").await.unwrap();
        let scopes = Scopes::parse(["profiles:read"]).unwrap();
        let (_, api_key) = store.create_api_key("sdk", &scopes).await.unwrap();
        store
            .append(
                web.id,
                vec![call("m-1", now - 2.seconds()), call("m-2", now)],
                vec![],
            )
            .await
            .unwrap();
        store.close();
        drop(store);

        let seen = std::sync::Mutex::new(Vec::new());
        let counts = migrate_to_postgres(&path, db.url(), &|table, rows| {
            seen.lock().unwrap().push((table.to_owned(), rows));
        })
        .await
        .unwrap();
        let count = |name: &str| counts.iter().find(|(t, _)| t == name).unwrap().1;
        assert_eq!(count("sources"), 1);
        assert_eq!(count("write_keys"), 1);
        assert_eq!(count("api_keys"), 1);
        assert_eq!(count("calls"), 2);
        assert_eq!(count("message_ids"), 2);
        assert!(seen.lock().unwrap().contains(&("calls".to_owned(), 2)));

        let pg = PgStore::connect(db.url(), PgOptions::default())
            .await
            .unwrap();
        assert!(pg.current_write_key("web").await.unwrap().ct_eq(&write_key));
        let info = pg.authenticate_api_key(&api_key).await.unwrap().unwrap();
        assert_eq!(info.scopes, scopes);
        assert_eq!(pg.last_seq().await.unwrap(), 2);
        // A repeated messageId is still a duplicate; a new call continues the sequence.
        let outcome = pg
            .append(web.id, vec![call("m-2", now), call("m-3", now)], vec![])
            .await
            .unwrap();
        assert_eq!(
            (outcome.appended, outcome.duplicates, outcome.last_seq),
            (1, 1, 3)
        );
        let calls = pg
            .read_calls(CallQuery {
                limit: 10,
                ..CallQuery::default()
            })
            .await
            .unwrap();
        let ids: Vec<&str> = calls.iter().map(|c| c.message_id.as_str()).collect();
        assert_eq!(ids, ["m-1", "m-2", "m-3"]);
        let (_, other) = pg.create_source("app").await.unwrap();
        assert!(!other.ct_eq(&write_key));
        pg.shutdown();
    }

    /// Payloads the log stored packed arrive on PostgreSQL as the JSON that was sent.
    #[tokio::test]
    async fn a_packed_log_arrives_as_json() {
        use crate::sqlite::packing::testing::{append_until_packed, payloads, quick_options};
        let Some(db) = TestDatabase::create().await else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signalbox.db");
        let store = SqliteStore::open(&path, quick_options()).unwrap();
        let (web, _) = store.create_source("web").await.unwrap();
        let sent = append_until_packed(&store, web.id).await;
        store.close();
        drop(store);

        migrate_to_postgres(&path, db.url(), &|_, _| {})
            .await
            .unwrap();
        let pg = PgStore::connect(db.url(), PgOptions::default())
            .await
            .unwrap();
        assert_eq!(payloads(&pg).await, sent);
        pg.shutdown();
    }
}
