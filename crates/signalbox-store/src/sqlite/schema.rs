//! Schema migrations, applied in order and recorded in `PRAGMA user_version`.

use rusqlite::Connection;

const MIGRATIONS: &[&str] = &[
    // 1: the call log, dedupe index, rejections, sources and keys.
    r#"
    CREATE TABLE sources (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        status TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        settings TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE write_keys (
        digest BLOB PRIMARY KEY,
        key TEXT NOT NULL,
        source_id INTEGER NOT NULL REFERENCES sources(id) ON DELETE CASCADE,
        created_at INTEGER NOT NULL,
        expires_at INTEGER
    );
    CREATE INDEX write_keys_source ON write_keys(source_id);
    CREATE TABLE api_keys (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        prefix TEXT NOT NULL,
        digest TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY,
        source_id INTEGER NOT NULL,
        kind TEXT NOT NULL,
        message_id TEXT NOT NULL,
        received_at INTEGER NOT NULL,
        payload TEXT NOT NULL
    );
    CREATE TABLE message_ids (
        message_id TEXT PRIMARY KEY,
        received_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE rejections (
        id INTEGER PRIMARY KEY,
        source_id INTEGER NOT NULL,
        code TEXT NOT NULL,
        message TEXT NOT NULL,
        received_at INTEGER NOT NULL,
        payload TEXT NOT NULL
    );
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    );
    "#,
    // The dedupe index moved to its own log-structured store beside the database file.
    r#"
    DROP TABLE message_ids;
    DELETE FROM meta WHERE key = 'dedupe_pruned_seq';
    "#,
    // 3: private keys carry scopes (space-separated names, see `signalbox_core::Scopes`).
    // Keys made before could do everything, the admin API included; they keep that
    // (`full admin`), so an upgrade locks no operator out. `api-key list` shows it, and the
    // operator narrows a key by replacing it. The empty default grants nothing: every insert
    // names its scopes.
    r#"
    ALTER TABLE api_keys ADD COLUMN scopes TEXT NOT NULL DEFAULT '';
    UPDATE api_keys SET scopes = 'full admin';
    "#,
    // 4: a source has a display name of free text beside its slug (`name`); sources made
    // before have none, and show their slug.
    r#"
    ALTER TABLE sources ADD COLUMN display_name TEXT;
    CREATE INDEX sources_by_display_name ON sources (display_name);
    "#,
    // 5: per-source totals kept as calls and rejections are written, so the figures the admin
    // API and the console show cost a read of one small table instead of a scan of the log.
    // Counted once here from what is already stored.
    r#"
    CREATE TABLE source_totals (
        source_id INTEGER PRIMARY KEY,
        calls INTEGER NOT NULL DEFAULT 0,
        last_seq INTEGER NOT NULL DEFAULT 0,
        rejections INTEGER NOT NULL DEFAULT 0
    );
    INSERT INTO source_totals (source_id, calls, last_seq, rejections)
        SELECT source_id, SUM(calls), MAX(last_seq), SUM(rejections) FROM (
            SELECT source_id, COUNT(*) AS calls, MAX(seq) AS last_seq, 0 AS rejections
            FROM events GROUP BY source_id
            UNION ALL
            SELECT source_id, 0, 0, COUNT(*) FROM rejections GROUP BY source_id
        ) GROUP BY source_id;
    "#,
    // 6: zstd dictionaries trained on the log's own calls; a packed payload (a BLOB in
    // `events.payload`) names the one it was packed with (see `packing.rs`). Never deleted.
    r#"
    CREATE TABLE payload_dictionaries (
        id INTEGER PRIMARY KEY,
        created_at INTEGER NOT NULL,
        bytes BLOB NOT NULL
    );
    "#,
];

/// Why the schema could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MigrateError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// The file was written by a newer Signalbox.
    #[error("schema version {found} is newer than this build knows ({known})")]
    TooNew { found: usize, known: usize },
}

/// The schema version this build brings a file to.
pub(crate) fn known_version() -> usize {
    MIGRATIONS.len()
}

pub(crate) fn migrate(conn: &mut Connection) -> Result<(), MigrateError> {
    let version: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > MIGRATIONS.len() {
        return Err(MigrateError::TooNew {
            found: version,
            known: MIGRATIONS.len(),
        });
    }
    for (idx, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // Another process may have migrated while we waited for the lock.
        let now: usize = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if now > idx {
            continue;
        }
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", idx + 1)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use signalbox_core::{ApiKey, Resource, Scope, Scopes};

    use super::*;
    use crate::sqlite::{SqliteOptions, SqliteStore};
    use crate::Store;

    /// A database as the version before scopes left it, holding one private key.
    fn database_before_scopes(path: &std::path::Path) -> ApiKey {
        let mut conn = Connection::open(path).unwrap();
        let tx = conn.transaction().unwrap();
        for sql in &MIGRATIONS[..2] {
            tx.execute_batch(sql).unwrap();
        }
        tx.pragma_update(None, "user_version", 2).unwrap();
        let key = ApiKey::generate();
        tx.execute(
            "INSERT INTO api_keys (name, prefix, digest, created_at) VALUES ('ops', ?1, ?2, 0)",
            rusqlite::params![key.redacted(), key.digest_hex()],
        )
        .unwrap();
        tx.commit().unwrap();
        key
    }

    #[tokio::test]
    async fn keys_made_before_scopes_keep_full_access_and_admin() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signalbox.db");
        let old_key = database_before_scopes(&path);
        let options = SqliteOptions {
            writer: false,
            ..SqliteOptions::default()
        };
        let store = SqliteStore::open(&path, options).unwrap();

        let info = store.authenticate_api_key(&old_key).await.unwrap().unwrap();
        assert_eq!(info.name, "ops");
        assert_eq!(info.scopes, Scopes::before_scopes());
        assert!(info.scopes.allows(Scope::Admin));
        assert!(info.scopes.allows(Scope::write(Resource::Profiles)));

        // Keys made after the migration hold what they were given, nothing more.
        let narrow = Scopes::parse(["profiles:read"]).unwrap();
        let (created, new_key) = store.create_api_key("sdk", &narrow).await.unwrap();
        assert_eq!(created.scopes, narrow);
        let info = store.authenticate_api_key(&new_key).await.unwrap().unwrap();
        assert_eq!(info.scopes.names(), ["profiles:read"]);
        let listed: Vec<(String, Vec<String>)> = store
            .list_api_keys()
            .await
            .unwrap()
            .into_iter()
            .map(|k| (k.name, k.scopes.names()))
            .collect();
        assert_eq!(
            listed,
            [
                (
                    "ops".to_owned(),
                    vec!["full".to_owned(), "admin".to_owned()]
                ),
                ("sdk".to_owned(), vec!["profiles:read".to_owned()]),
            ]
        );
        let err = store
            .create_api_key("none", &Scopes::default())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("at least one scope"), "{err}");
        store.close();
    }
}

#[cfg(test)]
mod display_name_tests {
    use signalbox_core::SourceStatus;

    use crate::sqlite::{SqliteOptions, SqliteStore};
    use crate::{Store, StoreError};

    #[tokio::test]
    async fn a_source_is_named_as_people_name_sites_and_found_by_either_name() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            SqliteStore::open(dir.path().join("signalbox.db"), SqliteOptions::default()).unwrap();
        let (source, key) = store.create_source("test website").await.unwrap();
        assert_eq!(source.name, "test-website");
        assert_eq!(source.display_name, "test website");
        let (plain, _) = store.create_source("ios").await.unwrap();
        assert_eq!(
            (plain.name.as_str(), plain.display_name.as_str()),
            ("ios", "ios")
        );

        // Every command that takes a source takes either name.
        for given in ["test website", "test-website"] {
            assert_eq!(store.source_by_name(given).await.unwrap().id, source.id);
        }
        store
            .set_source_status("test website", SourceStatus::Disabled)
            .await
            .unwrap();
        assert_eq!(
            store.source_by_name("test-website").await.unwrap().status,
            SourceStatus::Disabled
        );
        let rotated = store
            .rotate_write_key("test website", jiff::SignedDuration::ZERO)
            .await
            .unwrap();
        assert_ne!(rotated.expose(), key.expose());
        assert_eq!(
            store
                .current_write_key("test-website")
                .await
                .unwrap()
                .expose(),
            rotated.expose()
        );
        store
            .set_source_settings("test website", serde_json::json!({"listId": "L1"}))
            .await
            .unwrap();
        assert_eq!(
            store.source_settings("test-website").await.unwrap()["listId"],
            "L1"
        );

        // The same slug twice is a conflict that names the source it would collide with.
        match store.create_source("Test Website!").await {
            Err(StoreError::Conflict { what }) => assert!(what.contains("test-website"), "{what}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            store.create_source("—").await,
            Err(StoreError::Invalid { field: "name", .. })
        ));
        store.delete_source("test website").await.unwrap();
        assert!(matches!(
            store.source_by_name("test-website").await,
            Err(StoreError::NotFound { .. })
        ));
    }
}

#[cfg(test)]
mod totals_tests {
    use rusqlite::Connection;

    use super::MIGRATIONS;
    use crate::sqlite::{SqliteOptions, SqliteStore};
    use crate::{totals_by_walking, Store};

    /// A log written before totals were kept is counted once by the migration, and the totals
    /// kept from then on agree with walking the log.
    #[tokio::test]
    async fn totals_are_counted_once_on_upgrade_then_kept_as_calls_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signalbox.db");
        {
            let mut conn = Connection::open(&path).unwrap();
            let tx = conn.transaction().unwrap();
            for sql in &MIGRATIONS[..4] {
                tx.execute_batch(sql).unwrap();
            }
            tx.pragma_update(None, "user_version", 4).unwrap();
            for (source, id) in [(1, "a"), (1, "b"), (2, "c")] {
                tx.execute(
                    "INSERT INTO events (source_id, kind, message_id, received_at, payload)
                     VALUES (?1, 'track', ?2, 0, '{}')",
                    rusqlite::params![source, id],
                )
                .unwrap();
            }
            tx.execute(
                "INSERT INTO rejections (source_id, code, message, received_at, payload)
                 VALUES (3, 'invalid', 'm', 0, '{}')",
                [],
            )
            .unwrap();
            tx.commit().unwrap();
        }
        let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
        let totals = store.totals().await.unwrap();
        assert_eq!(totals, totals_by_walking(&store).await.unwrap());
        assert_eq!(
            totals
                .iter()
                .map(|t| (t.source_id.0, t.calls, t.last_seq, t.rejections))
                .collect::<Vec<_>>(),
            [(1, 2, 2, 0), (2, 1, 3, 0), (3, 0, 0, 1)]
        );
    }
}

#[cfg(test)]
mod version_tests {
    use super::*;
    use crate::sqlite::{SqliteOptions, SqliteStore};

    #[test]
    fn a_file_from_a_newer_signalbox_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signalbox.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.pragma_update(None, "user_version", MIGRATIONS.len() + 1)
                .unwrap();
        }
        let err = SqliteStore::open(&path, SqliteOptions::default())
            .err()
            .expect("refused");
        let text = err.to_string();
        assert!(
            matches!(err, crate::StoreError::SchemaTooNew { found, known, .. }
                if found == MIGRATIONS.len() + 1 && known == MIGRATIONS.len()),
            "{text}"
        );
        assert!(text.contains("newer than this signalbox knows"), "{text}");
        let conn = Connection::open(&path).unwrap();
        let tables: i64 = conn
            .query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0))
            .unwrap();
        assert_eq!(tables, 0, "nothing was created in the newer file");
    }
}
