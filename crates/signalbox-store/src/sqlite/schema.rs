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
];

pub(crate) fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let version: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
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
