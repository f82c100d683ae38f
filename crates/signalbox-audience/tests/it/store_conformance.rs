//! The `AudienceStore` conformance suite on the SQLite backend (`audience.db`), and what only
//! that backend does: refusing a file from a newer build.

use std::sync::Arc;

use signalbox_audience::{AudienceError, AudienceStore, SqliteAudienceStore};
use tempfile::TempDir;

fn sqlite_backend() -> (Arc<dyn AudienceStore>, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteAudienceStore::open(dir.path().join("audience.db")).unwrap();
    (Arc::new(store), dir)
}

mod sqlite {
    signalbox_audience::audience_store_conformance!(crate::store_conformance::sqlite_backend());
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
                known: 1
            }
        ),
        "{err}"
    );
    // Opening the current schema again is fine.
    let path = dir.path().join("again.db");
    drop(SqliteAudienceStore::open(&path).unwrap());
    SqliteAudienceStore::open(&path).unwrap();
}
