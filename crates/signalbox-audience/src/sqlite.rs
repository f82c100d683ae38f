//! The embedded backend, `audience.db`: segments, membership, the schedule of time-driven
//! re-evaluations, the history of every enter and leave, and the change-feed cursor (in
//! `meta`), all written by the worker thread in the transaction that covers them. The only
//! module that knows SQL or `rusqlite`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use jiff::Timestamp;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use serde_json::Value;
use signalbox_engage::feed::FeedCursor;
use signalbox_engage::ProfileKey;

use crate::error::{AudienceError, AudienceResult};
use crate::model::{MembershipChange, Progress, RecordedChange, Segment, SegmentPage};
use crate::store::{
    AudienceStore, AudienceWriter, BackfillState, NewChange, NewSegment, SegmentKey, StoredSegment,
};
use crate::ts;

const MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    -- `backfill_after_pk` is the last profile key the running backfill evaluated (NULL: no
    -- backfill runs); a restart resumes after it.
    CREATE TABLE segments (
        pk INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        definition TEXT NOT NULL,
        version INTEGER NOT NULL,
        is_starred INTEGER NOT NULL DEFAULT 0,
        created_us INTEGER NOT NULL,
        updated_us INTEGER NOT NULL,
        backfill_after_pk INTEGER,
        backfill_done INTEGER NOT NULL DEFAULT 0,
        backfill_total INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE members (
        segment_pk INTEGER NOT NULL,
        profile_pk INTEGER NOT NULL,
        joined_us INTEGER NOT NULL,
        PRIMARY KEY (segment_pk, profile_pk)
    ) WITHOUT ROWID;
    CREATE INDEX members_profile ON members(profile_pk);
    -- When time alone changes a profile's membership next (seglang's next_change_after).
    CREATE TABLE schedule (
        segment_pk INTEGER NOT NULL,
        profile_pk INTEGER NOT NULL,
        due_us INTEGER NOT NULL,
        PRIMARY KEY (segment_pk, profile_pk)
    ) WITHOUT ROWID;
    CREATE INDEX schedule_due ON schedule(due_us);
    -- Every enter and leave; `cursor` only grows (AUTOINCREMENT never reuses a key).
    CREATE TABLE history (
        cursor INTEGER PRIMARY KEY AUTOINCREMENT,
        segment_pk INTEGER NOT NULL,
        segment_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        profile_pk INTEGER NOT NULL,
        profile_id TEXT NOT NULL,
        entered INTEGER NOT NULL,
        at_us INTEGER NOT NULL,
        cause TEXT NOT NULL
    );
    CREATE INDEX history_profile ON history(profile_pk, segment_pk);
"#,
    r#"
    -- Each segment's members counted as they enter and leave, in the transaction that moves
    -- them: a segment's size is one row, not a count of its members.
    ALTER TABLE segments ADD COLUMN member_count INTEGER NOT NULL DEFAULT 0;
    UPDATE segments SET member_count = (
        SELECT COUNT(*) FROM members m WHERE m.segment_pk = segments.pk);
    CREATE TRIGGER members_counted_in AFTER INSERT ON members
    BEGIN
        UPDATE segments SET member_count = member_count + 1 WHERE pk = NEW.segment_pk;
    END;
    CREATE TRIGGER members_counted_out AFTER DELETE ON members
    BEGIN
        UPDATE segments SET member_count = member_count - 1 WHERE pk = OLD.segment_pk;
    END;
    CREATE TRIGGER members_recounted AFTER UPDATE OF segment_pk ON members
    WHEN OLD.segment_pk <> NEW.segment_pk
    BEGIN
        UPDATE segments SET member_count = member_count - 1 WHERE pk = OLD.segment_pk;
        UPDATE segments SET member_count = member_count + 1 WHERE pk = NEW.segment_pk;
    END;
"#,
    r#"
    -- One schedule entry per profile, its earliest due instant, in place of one per
    -- (segment, profile): an event rewrites it only when it brings the instant forward.
    CREATE TABLE schedule_by_profile (
        profile_pk INTEGER PRIMARY KEY,
        due_us INTEGER NOT NULL
    );
    INSERT INTO schedule_by_profile (profile_pk, due_us)
        SELECT profile_pk, MIN(due_us) FROM schedule GROUP BY profile_pk;
    DROP TABLE schedule;
    ALTER TABLE schedule_by_profile RENAME TO schedule;
    CREATE INDEX schedule_due ON schedule(due_us);
"#,
];

/// Read connections kept for reuse.
const POOL: usize = 8;

/// `audience.db` behind [`AudienceStore`]. Reads run on pooled connections; the writer has a
/// connection of its own.
pub struct SqliteAudienceStore {
    path: PathBuf,
    readers: Mutex<Vec<Connection>>,
}

impl SqliteAudienceStore {
    /// Opens (creating) the file at `path` and brings its schema up to date. A schema newer
    /// than this build is refused ([`AudienceError::SchemaTooNew`]).
    pub fn open(path: impl AsRef<Path>) -> AudienceResult<SqliteAudienceStore> {
        let path = path.as_ref().to_path_buf();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                AudienceError::Internal(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        let mut conn = connect(&path).map_err(db)?;
        migrate(&mut conn)?;
        Ok(SqliteAudienceStore {
            path,
            readers: Mutex::new(vec![conn]),
        })
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> AudienceResult<T> {
        let pooled = self
            .readers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => connect(&self.path).map_err(db)?,
        };
        let result = f(&conn).map_err(db);
        let mut readers = self
            .readers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if readers.len() < POOL {
            readers.push(conn);
        }
        result
    }
}

fn db(err: rusqlite::Error) -> AudienceError {
    AudienceError::Db(err.to_string())
}

fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA cache_size = -16384;
         PRAGMA temp_store = MEMORY;",
    )?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> AudienceResult<()> {
    let version: usize = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(db)?;
    if version > MIGRATIONS.len() {
        return Err(AudienceError::SchemaTooNew {
            found: version,
            known: MIGRATIONS.len(),
        });
    }
    for (idx, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db)?;
        tx.execute_batch(sql).map_err(db)?;
        tx.pragma_update(None, "user_version", idx + 1)
            .map_err(db)?;
        tx.commit().map_err(db)?;
    }
    Ok(())
}

fn stored_segments(conn: &Connection) -> rusqlite::Result<Vec<StoredSegment>> {
    let mut stmt =
        conn.prepare_cached("SELECT pk, id, version, definition FROM segments ORDER BY pk")?;
    let rows = stmt
        .query_map([], |r| {
            let definition: String = r.get(3)?;
            Ok(StoredSegment {
                key: r.get(0)?,
                id: r.get(1)?,
                version: r.get(2)?,
                definition: serde_json::from_str(&definition).unwrap_or_default(),
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

fn segment_key(conn: &Connection, id: &str) -> rusqlite::Result<Option<SegmentKey>> {
    conn.prepare_cached("SELECT pk FROM segments WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()
}

fn joined(
    conn: &Connection,
    segment: SegmentKey,
    profile: ProfileKey,
) -> rusqlite::Result<Option<Timestamp>> {
    conn.prepare_cached("SELECT joined_us FROM members WHERE segment_pk = ?1 AND profile_pk = ?2")?
        .query_row([segment, profile.0], |r| r.get(0))
        .optional()
        .map(|us| us.map(ts))
}

fn segment_rows(
    conn: &Connection,
    filter: &str,
    args: impl rusqlite::Params,
) -> rusqlite::Result<Vec<Segment>> {
    let order = if filter.contains("ORDER BY") {
        ""
    } else {
        "ORDER BY pk"
    };
    let mut stmt = conn.prepare(&format!(
        "SELECT id, name, definition, version, is_starred, created_us, updated_us,
                backfill_after_pk, backfill_done, backfill_total
         FROM segments {filter} {order}"
    ))?;
    let rows = stmt
        .query_map(args, |r| {
            let definition: String = r.get(2)?;
            let running: Option<i64> = r.get(7)?;
            let done: i64 = r.get(8)?;
            let total: i64 = r.get(9)?;
            Ok(Segment {
                id: r.get(0)?,
                name: r.get(1)?,
                definition: serde_json::from_str(&definition).unwrap_or(Value::Null),
                version: r.get(3)?,
                is_starred: r.get(4)?,
                created: ts(r.get(5)?),
                updated: ts(r.get(6)?),
                backfill: running.map(|_| Progress {
                    done: done as u64,
                    total: total.max(done) as u64,
                }),
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

impl AudienceStore for SqliteAudienceStore {
    fn writer(&self) -> AudienceResult<Box<dyn AudienceWriter>> {
        let conn = connect(&self.path).map_err(db)?;
        Ok(Box::new(SqliteWriter { conn }))
    }

    fn stored_segments(&self) -> AudienceResult<Vec<StoredSegment>> {
        self.read(stored_segments)
    }

    fn segment(&self, id: &str) -> AudienceResult<Option<Segment>> {
        self.read(|conn| Ok(segment_rows(conn, "WHERE id = ?1", params![id])?.pop()))
    }

    fn segments(&self) -> AudienceResult<Vec<Segment>> {
        self.read(|conn| segment_rows(conn, "", params![]))
    }

    fn segments_page(&self, after: Option<&str>, limit: usize) -> AudienceResult<SegmentPage> {
        let limit = limit.max(1);
        let after_pk = match after {
            None => 0,
            Some(id) => self
                .segment_key(id)?
                .ok_or_else(|| AudienceError::NotFound {
                    what: format!("segment {id}"),
                })?,
        };
        let mut segments = self.read(|conn| {
            segment_rows(
                conn,
                &format!("WHERE pk > ?1 ORDER BY pk LIMIT {}", limit + 1),
                params![after_pk],
            )
        })?;
        let next = if segments.len() > limit {
            segments.truncate(limit);
            segments.last().map(|s| s.id.clone())
        } else {
            None
        };
        Ok(SegmentPage { segments, next })
    }

    fn segment_by_name(&self, name: &str) -> AudienceResult<Option<Segment>> {
        self.read(|conn| Ok(segment_rows(conn, "WHERE name = ?1", params![name])?.pop()))
    }

    fn segments_of(&self, profile: ProfileKey) -> AudienceResult<Vec<Segment>> {
        self.read(|conn| {
            segment_rows(
                conn,
                "WHERE pk IN (SELECT segment_pk FROM members WHERE profile_pk = ?1)",
                params![profile.0],
            )
        })
    }

    fn segment_key(&self, id: &str) -> AudienceResult<Option<SegmentKey>> {
        self.read(|conn| segment_key(conn, id))
    }

    fn member_count(&self, segment: SegmentKey) -> AudienceResult<u64> {
        self.read(|conn| {
            conn.query_row(
                "SELECT member_count FROM segments WHERE pk = ?1",
                [segment],
                |r| r.get::<_, i64>(0),
            )
            .optional()
        })
        .map(|n| n.unwrap_or(0).max(0) as u64)
    }

    fn members(
        &self,
        segment: SegmentKey,
        after: Option<ProfileKey>,
        limit: usize,
    ) -> AudienceResult<Vec<(ProfileKey, Timestamp)>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT profile_pk, joined_us FROM members WHERE segment_pk = ?1 AND profile_pk > ?2
                 ORDER BY profile_pk LIMIT ?3",
            )?;
            let rows = stmt
                .query_map(
                    params![
                        segment,
                        after.map_or(i64::MIN, ProfileKey::get),
                        i64::try_from(limit).unwrap_or(i64::MAX)
                    ],
                    |r| Ok((ProfileKey(r.get(0)?), ts(r.get(1)?))),
                )?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
    }

    fn joined(
        &self,
        segment: SegmentKey,
        profile: ProfileKey,
    ) -> AudienceResult<Option<Timestamp>> {
        self.read(|conn| joined(conn, segment, profile))
    }

    fn changes_after(&self, cursor: i64, limit: usize) -> AudienceResult<Vec<MembershipChange>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT cursor, segment_id, profile_pk, profile_id, entered, at_us FROM history
                 WHERE cursor > ?1 ORDER BY cursor LIMIT ?2",
            )?;
            let rows = stmt
                .query_map(
                    params![cursor, i64::try_from(limit).unwrap_or(i64::MAX)],
                    |r| {
                        Ok(MembershipChange {
                            cursor: r.get(0)?,
                            segment_id: r.get(1)?,
                            profile_pk: ProfileKey(r.get(2)?),
                            profile_id: r.get(3)?,
                            entered: r.get(4)?,
                            at: ts(r.get(5)?),
                        })
                    },
                )?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
    }

    fn last_change(
        &self,
        segment: SegmentKey,
        profile: ProfileKey,
    ) -> AudienceResult<Option<RecordedChange>> {
        self.read(|conn| {
            conn.query_row(
                "SELECT cursor, entered, at_us, cause FROM history
                 WHERE profile_pk = ?1 AND segment_pk = ?2 ORDER BY cursor DESC LIMIT 1",
                [profile.0, segment],
                |r| {
                    let cause: String = r.get(3)?;
                    Ok(RecordedChange {
                        cursor: r.get(0)?,
                        entered: r.get(1)?,
                        at: ts(r.get(2)?),
                        cause: serde_json::from_str(&cause).unwrap_or(Value::Null),
                    })
                },
            )
            .optional()
        })
    }
}

/// The worker's connection.
struct SqliteWriter {
    conn: Connection,
}

impl SqliteWriter {
    fn run<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> AudienceResult<T> {
        f(&self.conn).map_err(db)
    }

    fn exec(&self, sql: &str, args: impl rusqlite::Params) -> AudienceResult<()> {
        self.run(|conn| conn.prepare_cached(sql)?.execute(args).map(drop))
    }
}

impl AudienceWriter for SqliteWriter {
    fn begin(&self) -> AudienceResult<()> {
        self.run(|conn| conn.execute_batch("BEGIN IMMEDIATE"))
    }

    fn commit(&self) -> AudienceResult<()> {
        self.run(|conn| conn.execute_batch("COMMIT"))
    }

    fn rollback(&self) -> AudienceResult<()> {
        if self.conn.is_autocommit() {
            return Ok(());
        }
        self.run(|conn| conn.execute_batch("ROLLBACK"))
    }

    fn feed_cursor(&self) -> AudienceResult<Option<FeedCursor>> {
        let text = self.run(|conn| {
            conn.query_row(
                "SELECT value FROM meta WHERE key = 'feed_cursor'",
                [],
                |r| r.get::<_, String>(0),
            )
            .optional()
        })?;
        Ok(text.and_then(|text| serde_json::from_str(&text).ok()))
    }

    fn save_feed_cursor(&self, cursor: &FeedCursor) -> AudienceResult<()> {
        let text = serde_json::to_string(cursor)
            .map_err(|e| AudienceError::Internal(format!("feed cursor: {e}")))?;
        self.exec(
            "INSERT INTO meta (key, value) VALUES ('feed_cursor', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [text],
        )
    }

    fn stored_segments(&self) -> AudienceResult<Vec<StoredSegment>> {
        self.run(stored_segments)
    }

    fn insert_segment(&self, segment: &NewSegment<'_>) -> AudienceResult<SegmentKey> {
        self.exec(
            "INSERT INTO segments (id, name, definition, version, is_starred, created_us, updated_us)
             VALUES (?1, ?2, ?3, 1, ?4, ?5, ?5)",
            params![
                segment.id,
                segment.name,
                segment.definition.to_string(),
                segment.is_starred,
                segment.now.as_microsecond()
            ],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    fn rename_segment(
        &self,
        segment: SegmentKey,
        name: &str,
        now: Timestamp,
    ) -> AudienceResult<()> {
        self.exec(
            "UPDATE segments SET name = ?2, updated_us = ?3 WHERE pk = ?1",
            params![segment, name, now.as_microsecond()],
        )
    }

    fn star_segment(
        &self,
        segment: SegmentKey,
        starred: bool,
        now: Timestamp,
    ) -> AudienceResult<()> {
        self.exec(
            "UPDATE segments SET is_starred = ?2, updated_us = ?3 WHERE pk = ?1",
            params![segment, starred, now.as_microsecond()],
        )
    }

    fn set_definition(
        &self,
        segment: SegmentKey,
        definition: &Value,
        now: Timestamp,
    ) -> AudienceResult<bool> {
        let definition = definition.to_string();
        let stored: Option<String> = self.run(|conn| {
            conn.query_row(
                "SELECT definition FROM segments WHERE pk = ?1",
                [segment],
                |r| r.get(0),
            )
            .optional()
        })?;
        if stored.is_none_or(|stored| stored == definition) {
            return Ok(false);
        }
        self.exec(
            "UPDATE segments SET definition = ?2, version = version + 1, updated_us = ?3
             WHERE pk = ?1",
            params![segment, definition, now.as_microsecond()],
        )?;
        Ok(true)
    }

    fn delete_segment(&self, segment: SegmentKey) -> AudienceResult<()> {
        self.exec("DELETE FROM members WHERE segment_pk = ?1", [segment])?;
        self.exec("DELETE FROM segments WHERE pk = ?1", [segment])
    }

    fn running_backfills(&self) -> AudienceResult<Vec<BackfillState>> {
        self.run(|conn| {
            let mut stmt = conn.prepare(
                "SELECT pk, backfill_after_pk, backfill_done FROM segments
                 WHERE backfill_after_pk IS NOT NULL ORDER BY pk",
            )?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(BackfillState {
                        segment: r.get(0)?,
                        after: ProfileKey(r.get(1)?),
                        done: r.get::<_, i64>(2)? as u64,
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
    }

    fn start_backfill(&self, segment: SegmentKey, total: u64) -> AudienceResult<()> {
        self.exec(
            "UPDATE segments SET backfill_after_pk = 0, backfill_done = 0, backfill_total = ?2
             WHERE pk = ?1",
            params![segment, total as i64],
        )
    }

    fn backfill_progress(
        &self,
        segment: SegmentKey,
        after: Option<ProfileKey>,
        done: u64,
    ) -> AudienceResult<()> {
        match after {
            None => self.exec(
                "UPDATE segments SET backfill_after_pk = NULL, backfill_done = ?2,
                 backfill_total = ?2 WHERE pk = ?1",
                params![segment, done as i64],
            ),
            Some(after) => self.exec(
                "UPDATE segments SET backfill_after_pk = ?2, backfill_done = ?3,
                 backfill_total = MAX(backfill_total, ?3) WHERE pk = ?1",
                params![segment, after.0, done as i64],
            ),
        }
    }

    fn joined(
        &self,
        segment: SegmentKey,
        profile: ProfileKey,
    ) -> AudienceResult<Option<Timestamp>> {
        self.run(|conn| joined(conn, segment, profile))
    }

    fn members_between(
        &self,
        segment: SegmentKey,
        first: ProfileKey,
        last: ProfileKey,
    ) -> AudienceResult<HashMap<ProfileKey, Timestamp>> {
        self.run(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT profile_pk, joined_us FROM members
                 WHERE segment_pk = ?1 AND profile_pk BETWEEN ?2 AND ?3",
            )?;
            let rows = stmt
                .query_map(params![segment, first.0, last.0], |r| {
                    Ok((ProfileKey(r.get(0)?), ts(r.get(1)?)))
                })?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
    }

    fn segments_of(&self, profile: ProfileKey) -> AudienceResult<Vec<SegmentKey>> {
        self.run(|conn| {
            let mut stmt =
                conn.prepare_cached("SELECT segment_pk FROM members WHERE profile_pk = ?1")?;
            let rows = stmt.query_map([profile.0], |r| r.get(0))?;
            rows.collect()
        })
    }

    fn record_change(&self, change: &NewChange<'_>) -> AudienceResult<()> {
        let at = change.at.as_microsecond();
        if change.entered {
            self.exec(
                "INSERT INTO members (segment_pk, profile_pk, joined_us) VALUES (?1, ?2, ?3)",
                params![change.segment, change.profile.0, at],
            )?;
        } else {
            self.exec(
                "DELETE FROM members WHERE segment_pk = ?1 AND profile_pk = ?2",
                [change.segment, change.profile.0],
            )?;
        }
        self.exec(
            "INSERT INTO history (segment_pk, segment_id, version, profile_pk, profile_id,
                                  entered, at_us, cause)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                change.segment,
                change.segment_id,
                change.version,
                change.profile.0,
                change.profile_id,
                change.entered,
                at,
                change.cause.to_string()
            ],
        )
    }

    fn last_profile_id(&self, profile: ProfileKey) -> AudienceResult<Option<String>> {
        self.run(|conn| {
            conn.prepare_cached(
                "SELECT profile_id FROM history WHERE profile_pk = ?1 ORDER BY cursor DESC LIMIT 1",
            )?
            .query_row([profile.0], |r| r.get(0))
            .optional()
        })
    }

    fn schedule(&self, profile: ProfileKey, due: Timestamp) -> AudienceResult<()> {
        self.exec(
            "INSERT INTO schedule (profile_pk, due_us) VALUES (?1, ?2)
             ON CONFLICT (profile_pk) DO UPDATE SET due_us = excluded.due_us",
            params![profile.0, due.as_microsecond()],
        )
    }

    fn unschedule(&self, profile: ProfileKey) -> AudienceResult<()> {
        self.exec("DELETE FROM schedule WHERE profile_pk = ?1", [profile.0])
    }

    fn scheduled(&self) -> AudienceResult<HashMap<ProfileKey, Timestamp>> {
        self.run(|conn| {
            let mut stmt = conn.prepare_cached("SELECT profile_pk, due_us FROM schedule")?;
            let rows = stmt
                .query_map([], |r| Ok((ProfileKey(r.get(0)?), ts(r.get(1)?))))?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
    }

    fn next_due(&self) -> AudienceResult<Option<Timestamp>> {
        self.run(|conn| {
            conn.query_row("SELECT MIN(due_us) FROM schedule", [], |r| {
                r.get::<_, Option<i64>>(0)
            })
        })
        .map(|us| us.map(ts))
    }

    fn take_due(&self, now: Timestamp, limit: usize) -> AudienceResult<Vec<ProfileKey>> {
        self.run(|conn| {
            let mut stmt = conn.prepare_cached(
                "DELETE FROM schedule WHERE profile_pk IN (
                     SELECT profile_pk FROM schedule WHERE due_us <= ?1
                     ORDER BY due_us LIMIT ?2)
                 RETURNING profile_pk, due_us",
            )?;
            let mut rows: Vec<(i64, ProfileKey)> = stmt
                .query_map(
                    params![
                        now.as_microsecond(),
                        i64::try_from(limit).unwrap_or(i64::MAX)
                    ],
                    |r| Ok((r.get(1)?, ProfileKey(r.get(0)?))),
                )?
                .collect::<Result<_, _>>()?;
            rows.sort_unstable();
            Ok(rows.into_iter().map(|(_, profile)| profile).collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store made before the schedule was kept per profile keeps, per profile, the
    /// earliest of its entries.
    #[test]
    fn the_schedule_becomes_one_entry_per_profile_at_its_earliest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audience.db");
        let conn = connect(&path).unwrap();
        for sql in &MIGRATIONS[..2] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 2).unwrap();
        conn.execute_batch(
            "INSERT INTO schedule (segment_pk, profile_pk, due_us) VALUES
                 (1, 10, 500), (2, 10, 300), (3, 10, 900), (1, 11, 700);",
        )
        .unwrap();
        drop(conn);
        let store = SqliteAudienceStore::open(&path).unwrap();
        let writer = store.writer().unwrap();
        let scheduled = writer.scheduled().unwrap();
        assert_eq!(scheduled.len(), 2);
        assert_eq!(scheduled[&ProfileKey(10)], ts(300));
        assert_eq!(scheduled[&ProfileKey(11)], ts(700));
        assert_eq!(writer.next_due().unwrap(), Some(ts(300)));
    }
}
