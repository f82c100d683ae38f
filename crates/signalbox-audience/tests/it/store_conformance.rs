//! The `AudienceStore` conformance suite on the SQLite backend (`audience.db`) and on
//! PostgreSQL, and what each does beside it: refusing a schema from a newer build.

use std::sync::Arc;

use signalbox_audience::{AudienceError, AudienceStore, PgAudienceStore, SqliteAudienceStore};
use signalbox_store::postgres::testing::TestDatabase;
use tempfile::TempDir;
use tokio::runtime::Runtime;

fn sqlite_backend() -> (Arc<dyn AudienceStore>, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteAudienceStore::open(dir.path().join("audience.db")).unwrap();
    (Arc::new(store), dir)
}

mod sqlite {
    signalbox_audience::audience_store_conformance!(crate::store_conformance::sqlite_backend());
}

/// What keeps a PostgreSQL backend alive: its database and the runtime its pool runs on.
struct PgGuard {
    _db: TestDatabase,
    _runtime: Runtime,
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A store on a new database, or `None` when no test server is configured.
fn pg_backend() -> Option<(Arc<dyn AudienceStore>, PgGuard)> {
    let runtime = runtime();
    let (db, store) = runtime.block_on(async {
        let db = TestDatabase::create().await?;
        let store = PgAudienceStore::connect(db.url(), 4).await.unwrap();
        Some((db, store))
    })?;
    Some((
        Arc::new(store),
        PgGuard {
            _db: db,
            _runtime: runtime,
        },
    ))
}

mod postgres {
    signalbox_audience::audience_store_conformance!(match crate::store_conformance::pg_backend() {
        Some(backend) => backend,
        None => return,
    });
}

#[tokio::test]
async fn a_newer_schema_on_postgres_is_refused() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    drop(PgAudienceStore::connect(db.url(), 1).await.unwrap());
    // Connecting again to the current schema is fine.
    drop(PgAudienceStore::connect(db.url(), 1).await.unwrap());
    let (client, connection) = tokio_postgres::connect(db.url().expose(), tokio_postgres::NoTls)
        .await
        .unwrap();
    let driver = tokio::spawn(connection);
    client
        .execute(
            "UPDATE signalbox_schema SET version = 99 WHERE component = 'audience'",
            &[],
        )
        .await
        .unwrap();
    drop(client);
    let _ = driver.await;
    let err = PgAudienceStore::connect(db.url(), 1).await.err().unwrap();
    assert!(
        matches!(
            err,
            AudienceError::SchemaTooNew {
                found: 99,
                known: 3
            }
        ),
        "{err}"
    );
}

#[test]
fn a_schema_newer_than_the_build_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audience.db");
    drop(SqliteAudienceStore::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = SqliteAudienceStore::open(&path).err().unwrap();
    assert!(
        matches!(
            err,
            AudienceError::SchemaTooNew {
                found: 99,
                known: 3
            }
        ),
        "{err}"
    );
    // Opening the current schema again is fine.
    let path = dir.path().join("again.db");
    drop(SqliteAudienceStore::open(&path).unwrap());
    SqliteAudienceStore::open(&path).unwrap();
}
