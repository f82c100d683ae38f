//! `signalbox migrate`'s part for the console: `console.db` copied into PostgreSQL's `console_*`
//! tables, so accounts sign in with the same passwords. Times are milliseconds there and
//! microseconds for the copy.

use std::path::Path;

use signalbox_core::PostgresUrl;
use signalbox_store::postgres::copy::{copy_file, nothing_copied, CopyError, TableMap};

use super::{AccountError, PgAccountStore};

/// The embedded tables and where they go.
const TABLES: &[TableMap] = &[
    TableMap {
        from: "accounts",
        to: "console_accounts",
        exprs: &[("created", "created * 1000")],
    },
    TableMap {
        from: "sessions",
        to: "console_sessions",
        exprs: &[
            ("created", "created * 1000"),
            ("last_seen", "last_seen * 1000"),
        ],
    },
    TableMap {
        from: "setup_tokens",
        to: "console_setup_tokens",
        exprs: &[("expires", "expires * 1000"), ("used", "used * 1000")],
    },
];

/// Copies the accounts, sessions and setup tokens at `from` (a stopped installation's
/// `console.db`, opened read-only; absent: nothing to copy) into the empty database at `to`.
/// Returns the rows copied per table.
pub async fn migrate_to_postgres(
    from: &Path,
    to: &PostgresUrl,
    progress: &dyn Fn(&str, u64),
) -> Result<Vec<(String, u64)>, AccountError> {
    if !from.exists() {
        return Ok(nothing_copied(TABLES));
    }
    drop(PgAccountStore::connect(to).await?);
    copy_file(from, to, TABLES, progress)
        .await
        .map_err(copy_error)
}

fn copy_error(err: CopyError) -> AccountError {
    AccountError::Store(err.to_string())
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;
    use signalbox_store::postgres::testing::TestDatabase;

    use super::super::{AccountStore, SqliteAccountStore, TokenDigest};
    use super::*;

    #[tokio::test]
    async fn accounts_and_sessions_keep_their_hashes_and_times() {
        let Some(db) = TestDatabase::create().await else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.db");
        let created: Timestamp = "2026-03-04T05:06:07.123Z".parse().unwrap();
        let seen: Timestamp = "2026-03-05T00:00:00.5Z".parse().unwrap();
        let session = TokenDigest::of("session token");
        {
            let sqlite = SqliteAccountStore::open(&path).unwrap();
            sqlite
                .create_account("ops@example.com", "$argon2id$hash", created)
                .await
                .unwrap();
            sqlite
                .create_session(&session, "ops@example.com", "csrf", created)
                .await
                .unwrap();
            sqlite.touch_session(&session, seen).await.unwrap();
        }

        let counts = migrate_to_postgres(&path, db.url(), &|_, _| {})
            .await
            .unwrap();
        assert_eq!(
            counts,
            [
                ("console_accounts".to_owned(), 1),
                ("console_sessions".to_owned(), 1),
                ("console_setup_tokens".to_owned(), 0),
            ]
        );
        let pg = PgAccountStore::connect(db.url()).await.unwrap();
        let accounts = pg.accounts().await.unwrap();
        assert_eq!(accounts.len(), 1);
        assert_eq!(accounts[0].email, "ops@example.com");
        assert_eq!(accounts[0].created, created);
        assert_eq!(
            pg.password_hash("ops@example.com")
                .await
                .unwrap()
                .as_deref(),
            Some("$argon2id$hash")
        );
        let record = pg.session(&session).await.unwrap().unwrap();
        assert_eq!(
            (record.email.as_str(), record.csrf.as_str()),
            ("ops@example.com", "csrf")
        );
        assert_eq!((record.created, record.last_seen), (created, seen));
    }

    #[tokio::test]
    async fn no_file_copies_nothing() {
        let Some(db) = TestDatabase::create().await else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let counts = migrate_to_postgres(&dir.path().join("console.db"), db.url(), &|_, _| {})
            .await
            .unwrap();
        assert!(counts.iter().all(|(_, rows)| *rows == 0), "{counts:?}");
    }
}
