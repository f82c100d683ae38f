//! [`PgAudienceStore`]: the audience engine's state in PostgreSQL, beside the other components'
//! tables in one database.
//!
//! The same tables as `audience.db`, prefixed `audience_`: times are microseconds since the
//! Unix epoch (`BIGINT`) as there, definitions `JSONB`. A change's cause is JSON `TEXT`: it
//! quotes profile values, and JSONB refuses some strings JSON allows (`\u0000`). Keys come
//! from identity columns, so a segment's key and a history cursor only grow.
//!
//! The traits are synchronous; the store keeps the handle of the runtime it was connected on
//! and waits on the pool from the calling thread. **Invariant:** its methods are called from
//! blocking threads (`spawn_blocking`, the worker's own thread), never from a task of the
//! runtime, where waiting would panic; on a current-thread runtime they make progress only while
//! that runtime's own thread is inside `block_on` (as it is when it awaits the blocking task).
//! A writer holds one pooled connection from [`AudienceWriter::begin`] to commit or rollback;
//! a write outside a transaction takes a connection for that write alone.

use std::cell::{Ref, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::ops::Deref;

use deadpool_postgres::{GenericClient, Object, PoolError};
use jiff::Timestamp;
use serde_json::Value;
use signalbox_core::PostgresUrl;
use signalbox_engage::feed::FeedCursor;
use signalbox_engage::ProfileKey;
use signalbox_store::postgres::{connect_pool, error_text, schema, BlockingPool};
use signalbox_store::StoreError;
use tokio::runtime::Handle;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use crate::error::{AudienceError, AudienceResult};
use crate::model::{MembershipChange, Progress, RecordedChange, Segment, SegmentPage};
use crate::store::{
    AudienceStore, AudienceWriter, BackfillState, NewChange, NewSegment, SegmentKey, StoredSegment,
};
use crate::ts;

/// The component name under which the schema's version is kept.
const COMPONENT: &str = "audience";

const MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE audience_meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    -- `backfill_after_pk` is the last profile key the running backfill evaluated (NULL: no
    -- backfill runs); a restart resumes after it.
    CREATE TABLE audience_segments (
        pk BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        definition JSONB NOT NULL,
        version BIGINT NOT NULL,
        is_starred BOOLEAN NOT NULL DEFAULT FALSE,
        created_us BIGINT NOT NULL,
        updated_us BIGINT NOT NULL,
        backfill_after_pk BIGINT,
        backfill_done BIGINT NOT NULL DEFAULT 0,
        backfill_total BIGINT NOT NULL DEFAULT 0
    );
    CREATE INDEX audience_segments_by_name ON audience_segments (name, pk);
    CREATE TABLE audience_members (
        segment_pk BIGINT NOT NULL,
        profile_pk BIGINT NOT NULL,
        joined_us BIGINT NOT NULL,
        PRIMARY KEY (segment_pk, profile_pk)
    );
    CREATE INDEX audience_members_by_profile ON audience_members (profile_pk);
    -- When time alone changes a profile's membership next (seglang's next_change_after).
    CREATE TABLE audience_schedule (
        segment_pk BIGINT NOT NULL,
        profile_pk BIGINT NOT NULL,
        due_us BIGINT NOT NULL,
        PRIMARY KEY (segment_pk, profile_pk)
    );
    CREATE INDEX audience_schedule_by_due ON audience_schedule (due_us);
    CREATE INDEX audience_schedule_by_profile ON audience_schedule (profile_pk);
    -- Every enter and leave; `cursor` only grows.
    CREATE TABLE audience_history (
        cursor BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        segment_pk BIGINT NOT NULL,
        segment_id TEXT NOT NULL,
        version BIGINT NOT NULL,
        profile_pk BIGINT NOT NULL,
        profile_id TEXT NOT NULL,
        entered BOOLEAN NOT NULL,
        at_us BIGINT NOT NULL,
        cause TEXT NOT NULL
    );
    CREATE INDEX audience_history_by_profile
        ON audience_history (profile_pk, segment_pk, cursor);
    CREATE INDEX audience_history_by_profile_cursor ON audience_history (profile_pk, cursor);
"#,
    r#"
    -- Each segment's members counted as they enter and leave, in the statement that moves
    -- them (one update per segment a statement touches): a segment's size is one row.
    ALTER TABLE audience_segments ADD COLUMN member_count BIGINT NOT NULL DEFAULT 0;
    UPDATE audience_segments SET member_count = (
        SELECT COUNT(*) FROM audience_members m WHERE m.segment_pk = audience_segments.pk);
    CREATE FUNCTION audience_members_count() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            UPDATE audience_segments s SET member_count = s.member_count + d.n
            FROM (SELECT segment_pk, COUNT(*) AS n FROM new_rows GROUP BY segment_pk) d
            WHERE s.pk = d.segment_pk;
        ELSIF TG_OP = 'DELETE' THEN
            UPDATE audience_segments s SET member_count = s.member_count - d.n
            FROM (SELECT segment_pk, COUNT(*) AS n FROM old_rows GROUP BY segment_pk) d
            WHERE s.pk = d.segment_pk;
        ELSE
            UPDATE audience_segments s SET member_count = s.member_count + d.n
            FROM (SELECT segment_pk, SUM(n) AS n FROM (
                      SELECT segment_pk, 1 AS n FROM new_rows
                      UNION ALL
                      SELECT segment_pk, -1 FROM old_rows) c
                  GROUP BY segment_pk HAVING SUM(n) <> 0) d
            WHERE s.pk = d.segment_pk;
        END IF;
        RETURN NULL;
    END $$;
    CREATE TRIGGER audience_members_counted_in AFTER INSERT ON audience_members
        REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION audience_members_count();
    CREATE TRIGGER audience_members_counted_out AFTER DELETE ON audience_members
        REFERENCING OLD TABLE AS old_rows
        FOR EACH STATEMENT EXECUTE FUNCTION audience_members_count();
    CREATE TRIGGER audience_members_recounted AFTER UPDATE ON audience_members
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION audience_members_count();
"#,
    r#"
    -- One schedule entry per profile, its earliest due instant, in place of one per
    -- (segment, profile): an event rewrites it only when it brings the instant forward.
    DELETE FROM audience_schedule s USING audience_schedule t
        WHERE s.profile_pk = t.profile_pk
          AND (t.due_us, t.segment_pk) < (s.due_us, s.segment_pk);
    ALTER TABLE audience_schedule DROP CONSTRAINT audience_schedule_pkey;
    DROP INDEX audience_schedule_by_profile;
    ALTER TABLE audience_schedule DROP COLUMN segment_pk;
    ALTER TABLE audience_schedule ADD PRIMARY KEY (profile_pk);
"#,
];

/// Makes the figures the triggers keep from the rows themselves (after a bulk copy).
pub(crate) const RECOUNT: &str = "UPDATE audience_segments SET member_count = (
    SELECT COUNT(*) FROM audience_members m WHERE m.segment_pk = audience_segments.pk)";

/// The audience state in PostgreSQL behind [`AudienceStore`]. Reads take a pooled connection
/// each; the writer holds one for its open transaction.
pub struct PgAudienceStore {
    db: Db,
}

impl PgAudienceStore {
    /// The tables the segment engine keeps in the database (as its migrations create them).
    pub fn tables() -> Vec<String> {
        schema::tables_created(MIGRATIONS)
    }

    /// Connects to the database at `url` with a pool of at most `pool_size` connections and
    /// brings the schema up to date. A schema newer than this build is refused
    /// ([`AudienceError::SchemaTooNew`]). The store waits on the runtime this is called on.
    pub async fn connect(url: &PostgresUrl, pool_size: usize) -> AudienceResult<PgAudienceStore> {
        let pool = connect_pool(url, pool_size).map_err(store_error)?;
        let mut client = pool.get().await.map_err(pool_error)?;
        schema::migrate(&mut client, COMPONENT, MIGRATIONS)
            .await
            .map_err(store_error)?;
        drop(client);
        Ok(PgAudienceStore {
            db: Db {
                pool: BlockingPool::new(pool, Handle::current()),
            },
        })
    }
}

/// Makes every segment's member count again from its rows: after `migrate`'s bulk copy, whose
/// inserts the triggers counted on top of the copied figures.
pub(crate) async fn recount(url: &PostgresUrl) -> AudienceResult<()> {
    let pool = connect_pool(url, 1).map_err(store_error)?;
    let client = pool.get().await.map_err(pool_error)?;
    client.batch_execute(RECOUNT).await.map_err(pg)
}

fn store_error(err: StoreError) -> AudienceError {
    match err {
        StoreError::SchemaTooNew { found, known, .. } => {
            AudienceError::SchemaTooNew { found, known }
        }
        other => AudienceError::Db(other.to_string()),
    }
}

fn pool_error(err: PoolError) -> AudienceError {
    tracing::warn!(error = %err, "no audience database connection");
    AudienceError::Db(format!("no database connection: {err}"))
}

/// A PostgreSQL error as text (the server's message when it sent one).
fn pg(err: tokio_postgres::Error) -> AudienceError {
    AudienceError::Db(error_text(&err, "audience"))
}

fn limit_of(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn count(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn counter(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// The pool and the runtime it runs on.
#[derive(Clone)]
struct Db {
    pool: BlockingPool,
}

impl Db {
    /// Waits for `fut` on the store's runtime from this (blocking) thread.
    fn wait<F: Future>(&self, fut: F) -> F::Output {
        self.pool.wait(fut)
    }

    fn connection(&self) -> AudienceResult<Object> {
        self.pool.get().map_err(pool_error)
    }

    fn query(
        &self,
        client: &Object,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> AudienceResult<Vec<Row>> {
        self.wait(async {
            let stmt = client.prepare_cached(sql).await?;
            client.query(&stmt, params).await
        })
        .map_err(pg)
    }

    fn query_opt(
        &self,
        client: &Object,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> AudienceResult<Option<Row>> {
        self.wait(async {
            let stmt = client.prepare_cached(sql).await?;
            client.query_opt(&stmt, params).await
        })
        .map_err(pg)
    }

    fn execute(
        &self,
        client: &Object,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> AudienceResult<u64> {
        self.wait(async {
            let stmt = client.prepare_cached(sql).await?;
            client.execute(&stmt, params).await
        })
        .map_err(pg)
    }
}

const SEGMENT_COLUMNS: &str = "id, name, definition::text, version, is_starred, created_us,
    updated_us, backfill_after_pk, backfill_done, backfill_total";

fn segment_row(row: &Row) -> Segment {
    let running: Option<i64> = row.get(7);
    let done = counter(row.get(8));
    let total = counter(row.get(9));
    Segment {
        id: row.get(0),
        name: row.get(1),
        definition: serde_json::from_str(row.get(2)).unwrap_or(Value::Null),
        version: row.get(3),
        is_starred: row.get(4),
        created: ts(row.get(5)),
        updated: ts(row.get(6)),
        backfill: running.map(|_| Progress {
            done,
            total: total.max(done),
        }),
    }
}

fn stored_segments(db: &Db, client: &Object) -> AudienceResult<Vec<StoredSegment>> {
    let rows = db.query(
        client,
        "SELECT pk, id, version, definition::text FROM audience_segments ORDER BY pk",
        &[],
    )?;
    Ok(rows
        .iter()
        .map(|row| StoredSegment {
            key: row.get(0),
            id: row.get(1),
            version: row.get(2),
            definition: serde_json::from_str(row.get(3)).unwrap_or_default(),
        })
        .collect())
}

fn joined(
    db: &Db,
    client: &Object,
    segment: SegmentKey,
    profile: ProfileKey,
) -> AudienceResult<Option<Timestamp>> {
    Ok(db
        .query_opt(
            client,
            "SELECT joined_us FROM audience_members WHERE segment_pk = $1 AND profile_pk = $2",
            &[&segment, &profile.0],
        )?
        .map(|row| ts(row.get(0))))
}

impl PgAudienceStore {
    fn segments_where(
        &self,
        filter: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> AudienceResult<Vec<Segment>> {
        let client = self.db.connection()?;
        let rows = self.db.query(
            &client,
            &format!("SELECT {SEGMENT_COLUMNS} FROM audience_segments {filter}"),
            params,
        )?;
        Ok(rows.iter().map(segment_row).collect())
    }
}

impl AudienceStore for PgAudienceStore {
    fn writer(&self) -> AudienceResult<Box<dyn AudienceWriter>> {
        Ok(Box::new(PgAudienceWriter {
            db: self.db.clone(),
            tx: RefCell::new(None),
        }))
    }

    fn stored_segments(&self) -> AudienceResult<Vec<StoredSegment>> {
        stored_segments(&self.db, &self.db.connection()?)
    }

    fn segment(&self, id: &str) -> AudienceResult<Option<Segment>> {
        Ok(self.segments_where("WHERE id = $1", &[&id])?.pop())
    }

    fn segments(&self) -> AudienceResult<Vec<Segment>> {
        self.segments_where("ORDER BY pk", &[])
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
        let mut segments = self.segments_where(
            "WHERE pk > $1 ORDER BY pk LIMIT $2",
            &[&after_pk, &limit_of(limit.saturating_add(1))],
        )?;
        let next = if segments.len() > limit {
            segments.truncate(limit);
            segments.last().map(|s| s.id.clone())
        } else {
            None
        };
        Ok(SegmentPage { segments, next })
    }

    fn segment_by_name(&self, name: &str) -> AudienceResult<Option<Segment>> {
        Ok(self
            .segments_where("WHERE name = $1 ORDER BY pk DESC LIMIT 1", &[&name])?
            .pop())
    }

    fn segments_of(&self, profile: ProfileKey) -> AudienceResult<Vec<Segment>> {
        self.segments_where(
            "WHERE pk IN (SELECT segment_pk FROM audience_members WHERE profile_pk = $1)
             ORDER BY pk",
            &[&profile.0],
        )
    }

    fn segment_key(&self, id: &str) -> AudienceResult<Option<SegmentKey>> {
        let client = self.db.connection()?;
        Ok(self
            .db
            .query_opt(
                &client,
                "SELECT pk FROM audience_segments WHERE id = $1",
                &[&id],
            )?
            .map(|row| row.get(0)))
    }

    fn member_count(&self, segment: SegmentKey) -> AudienceResult<u64> {
        let client = self.db.connection()?;
        let rows = self.db.query(
            &client,
            "SELECT member_count FROM audience_segments WHERE pk = $1",
            &[&segment],
        )?;
        Ok(rows.first().map_or(0, |row| counter(row.get(0))))
    }

    fn members(
        &self,
        segment: SegmentKey,
        after: Option<ProfileKey>,
        limit: usize,
    ) -> AudienceResult<Vec<(ProfileKey, Timestamp)>> {
        let client = self.db.connection()?;
        let rows = self.db.query(
            &client,
            "SELECT profile_pk, joined_us FROM audience_members
             WHERE segment_pk = $1 AND profile_pk > $2 ORDER BY profile_pk LIMIT $3",
            &[
                &segment,
                &after.map_or(i64::MIN, ProfileKey::get),
                &limit_of(limit),
            ],
        )?;
        Ok(rows
            .iter()
            .map(|row| (ProfileKey(row.get(0)), ts(row.get(1))))
            .collect())
    }

    fn joined(
        &self,
        segment: SegmentKey,
        profile: ProfileKey,
    ) -> AudienceResult<Option<Timestamp>> {
        joined(&self.db, &self.db.connection()?, segment, profile)
    }

    fn changes_after(&self, cursor: i64, limit: usize) -> AudienceResult<Vec<MembershipChange>> {
        let client = self.db.connection()?;
        let rows = self.db.query(
            &client,
            "SELECT cursor, segment_id, profile_pk, profile_id, entered, at_us
             FROM audience_history WHERE cursor > $1 ORDER BY cursor LIMIT $2",
            &[&cursor, &limit_of(limit)],
        )?;
        Ok(rows
            .iter()
            .map(|row| MembershipChange {
                cursor: row.get(0),
                segment_id: row.get(1),
                profile_pk: ProfileKey(row.get(2)),
                profile_id: row.get(3),
                entered: row.get(4),
                at: ts(row.get(5)),
            })
            .collect())
    }

    fn last_change(
        &self,
        segment: SegmentKey,
        profile: ProfileKey,
    ) -> AudienceResult<Option<RecordedChange>> {
        let client = self.db.connection()?;
        let row = self.db.query_opt(
            &client,
            "SELECT cursor, entered, at_us, cause FROM audience_history
             WHERE profile_pk = $1 AND segment_pk = $2 ORDER BY cursor DESC LIMIT 1",
            &[&profile.0, &segment],
        )?;
        Ok(row.map(|row| RecordedChange {
            cursor: row.get(0),
            entered: row.get(1),
            at: ts(row.get(2)),
            cause: serde_json::from_str(row.get(3)).unwrap_or(Value::Null),
        }))
    }
}

/// The worker's writer: the connection of its open transaction, if one is open.
struct PgAudienceWriter {
    db: Db,
    tx: RefCell<Option<Object>>,
}

/// The connection a write goes through: the open transaction's, or one for this write alone.
enum Conn<'a> {
    Transaction(Ref<'a, Object>),
    Alone(Box<Object>),
}

impl Deref for Conn<'_> {
    type Target = Object;

    fn deref(&self) -> &Object {
        match self {
            Conn::Transaction(client) => client,
            Conn::Alone(client) => client,
        }
    }
}

impl PgAudienceWriter {
    fn conn(&self) -> AudienceResult<Conn<'_>> {
        match Ref::filter_map(self.tx.borrow(), Option::as_ref) {
            Ok(client) => Ok(Conn::Transaction(client)),
            Err(_) => Ok(Conn::Alone(Box::new(self.db.connection()?))),
        }
    }

    fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> AudienceResult<Vec<Row>> {
        self.db.query(&*self.conn()?, sql, params)
    }

    fn query_opt(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> AudienceResult<Option<Row>> {
        self.db.query_opt(&*self.conn()?, sql, params)
    }

    fn exec(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> AudienceResult<()> {
        self.db.execute(&*self.conn()?, sql, params).map(drop)
    }

    /// Ends the open transaction with `sql` (`COMMIT` or `ROLLBACK`), handing its connection
    /// back to the pool. A connection whose end failed is closed rather than pooled.
    fn finish(&self, sql: &str) -> AudienceResult<()> {
        let Some(client) = self.tx.borrow_mut().take() else {
            return Ok(());
        };
        match self.db.wait(client.batch_execute(sql)) {
            Ok(()) => Ok(()),
            Err(err) => {
                drop(Object::take(client));
                Err(pg(err))
            }
        }
    }
}

impl Drop for PgAudienceWriter {
    fn drop(&mut self) {
        // A transaction left open must not go back to the pool: closing the connection
        // makes the server roll it back.
        if let Some(client) = self.tx.get_mut().take() {
            drop(Object::take(client));
        }
    }
}

impl AudienceWriter for PgAudienceWriter {
    fn begin(&self) -> AudienceResult<()> {
        if self.tx.borrow().is_some() {
            return Err(AudienceError::Internal(
                "a transaction is already open".into(),
            ));
        }
        let client = self.db.connection()?;
        self.db.wait(client.batch_execute("BEGIN")).map_err(pg)?;
        *self.tx.borrow_mut() = Some(client);
        Ok(())
    }

    fn commit(&self) -> AudienceResult<()> {
        self.finish("COMMIT")
    }

    fn rollback(&self) -> AudienceResult<()> {
        self.finish("ROLLBACK")
    }

    fn feed_cursor(&self) -> AudienceResult<Option<FeedCursor>> {
        let row = self.query_opt(
            "SELECT value FROM audience_meta WHERE key = 'feed_cursor'",
            &[],
        )?;
        Ok(row.and_then(|row| serde_json::from_str(row.get(0)).ok()))
    }

    fn save_feed_cursor(&self, cursor: &FeedCursor) -> AudienceResult<()> {
        let text = serde_json::to_string(cursor)
            .map_err(|e| AudienceError::Internal(format!("feed cursor: {e}")))?;
        self.exec(
            "INSERT INTO audience_meta (key, value) VALUES ('feed_cursor', $1)
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            &[&text],
        )
    }

    fn stored_segments(&self) -> AudienceResult<Vec<StoredSegment>> {
        stored_segments(&self.db, &*self.conn()?)
    }

    fn insert_segment(&self, segment: &NewSegment<'_>) -> AudienceResult<SegmentKey> {
        let row = self.query_opt(
            "INSERT INTO audience_segments
                 (id, name, definition, version, is_starred, created_us, updated_us)
             VALUES ($1, $2, $3::text::jsonb, 1, $4, $5, $5)
             RETURNING pk",
            &[
                &segment.id,
                &segment.name,
                &segment.definition.to_string(),
                &segment.is_starred,
                &segment.now.as_microsecond(),
            ],
        )?;
        row.map(|row| row.get(0))
            .ok_or_else(|| AudienceError::Internal("no key for the new segment".into()))
    }

    fn rename_segment(
        &self,
        segment: SegmentKey,
        name: &str,
        now: Timestamp,
    ) -> AudienceResult<()> {
        self.exec(
            "UPDATE audience_segments SET name = $2, updated_us = $3 WHERE pk = $1",
            &[&segment, &name, &now.as_microsecond()],
        )
    }

    fn star_segment(
        &self,
        segment: SegmentKey,
        starred: bool,
        now: Timestamp,
    ) -> AudienceResult<()> {
        self.exec(
            "UPDATE audience_segments SET is_starred = $2, updated_us = $3 WHERE pk = $1",
            &[&segment, &starred, &now.as_microsecond()],
        )
    }

    fn set_definition(
        &self,
        segment: SegmentKey,
        definition: &Value,
        now: Timestamp,
    ) -> AudienceResult<bool> {
        // One statement: the version moves only when the definition differs (as JSON).
        let changed = self.db.execute(
            &*self.conn()?,
            "UPDATE audience_segments
             SET definition = $2::text::jsonb, version = version + 1, updated_us = $3
             WHERE pk = $1 AND definition <> $2::text::jsonb",
            &[&segment, &definition.to_string(), &now.as_microsecond()],
        )?;
        Ok(changed > 0)
    }

    fn delete_segment(&self, segment: SegmentKey) -> AudienceResult<()> {
        // One statement, so that outside a transaction the two go together too.
        self.exec(
            "WITH members AS (DELETE FROM audience_members WHERE segment_pk = $1)
             DELETE FROM audience_segments WHERE pk = $1",
            &[&segment],
        )
    }

    fn running_backfills(&self) -> AudienceResult<Vec<BackfillState>> {
        let rows = self.query(
            "SELECT pk, backfill_after_pk, backfill_done FROM audience_segments
             WHERE backfill_after_pk IS NOT NULL ORDER BY pk",
            &[],
        )?;
        Ok(rows
            .iter()
            .map(|row| BackfillState {
                segment: row.get(0),
                after: ProfileKey(row.get(1)),
                done: counter(row.get(2)),
            })
            .collect())
    }

    fn start_backfill(&self, segment: SegmentKey, total: u64) -> AudienceResult<()> {
        self.exec(
            "UPDATE audience_segments
             SET backfill_after_pk = 0, backfill_done = 0, backfill_total = $2
             WHERE pk = $1",
            &[&segment, &count(total)],
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
                "UPDATE audience_segments
                 SET backfill_after_pk = NULL, backfill_done = $2, backfill_total = $2
                 WHERE pk = $1",
                &[&segment, &count(done)],
            ),
            Some(after) => self.exec(
                "UPDATE audience_segments
                 SET backfill_after_pk = $2, backfill_done = $3,
                     backfill_total = GREATEST(backfill_total, $3)
                 WHERE pk = $1",
                &[&segment, &after.0, &count(done)],
            ),
        }
    }

    fn joined(
        &self,
        segment: SegmentKey,
        profile: ProfileKey,
    ) -> AudienceResult<Option<Timestamp>> {
        joined(&self.db, &*self.conn()?, segment, profile)
    }

    fn members_between(
        &self,
        segment: SegmentKey,
        first: ProfileKey,
        last: ProfileKey,
    ) -> AudienceResult<HashMap<ProfileKey, Timestamp>> {
        let rows = self.query(
            "SELECT profile_pk, joined_us FROM audience_members
             WHERE segment_pk = $1 AND profile_pk BETWEEN $2 AND $3",
            &[&segment, &first.0, &last.0],
        )?;
        Ok(rows
            .iter()
            .map(|row| (ProfileKey(row.get(0)), ts(row.get(1))))
            .collect())
    }

    fn segments_of(&self, profile: ProfileKey) -> AudienceResult<Vec<SegmentKey>> {
        let rows = self.query(
            "SELECT segment_pk FROM audience_members WHERE profile_pk = $1",
            &[&profile.0],
        )?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    fn record_change(&self, change: &NewChange<'_>) -> AudienceResult<()> {
        let at = change.at.as_microsecond();
        // One statement: the membership moves and the history grows together.
        let sql = if change.entered {
            "WITH moved AS (
                 INSERT INTO audience_members (segment_pk, profile_pk, joined_us)
                 VALUES ($1, $4, $7))
             INSERT INTO audience_history (segment_pk, segment_id, version, profile_pk,
                                           profile_id, entered, at_us, cause)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        } else {
            "WITH moved AS (
                 DELETE FROM audience_members WHERE segment_pk = $1 AND profile_pk = $4)
             INSERT INTO audience_history (segment_pk, segment_id, version, profile_pk,
                                           profile_id, entered, at_us, cause)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        };
        self.exec(
            sql,
            &[
                &change.segment,
                &change.segment_id,
                &change.version,
                &change.profile.0,
                &change.profile_id,
                &change.entered,
                &at,
                &change.cause.to_string(),
            ],
        )
    }

    fn last_profile_id(&self, profile: ProfileKey) -> AudienceResult<Option<String>> {
        Ok(self
            .query_opt(
                "SELECT profile_id FROM audience_history WHERE profile_pk = $1
                 ORDER BY cursor DESC LIMIT 1",
                &[&profile.0],
            )?
            .map(|row| row.get(0)))
    }

    fn schedule(&self, profile: ProfileKey, due: Timestamp) -> AudienceResult<()> {
        self.exec(
            "INSERT INTO audience_schedule (profile_pk, due_us) VALUES ($1, $2)
             ON CONFLICT (profile_pk) DO UPDATE SET due_us = EXCLUDED.due_us",
            &[&profile.0, &due.as_microsecond()],
        )
    }

    fn unschedule(&self, profile: ProfileKey) -> AudienceResult<()> {
        self.exec(
            "DELETE FROM audience_schedule WHERE profile_pk = $1",
            &[&profile.0],
        )
    }

    fn scheduled(&self) -> AudienceResult<HashMap<ProfileKey, Timestamp>> {
        let rows = self.query("SELECT profile_pk, due_us FROM audience_schedule", &[])?;
        Ok(rows
            .iter()
            .map(|row| (ProfileKey(row.get(0)), ts(row.get(1))))
            .collect())
    }

    fn next_due(&self) -> AudienceResult<Option<Timestamp>> {
        let row = self.query_opt("SELECT MIN(due_us) FROM audience_schedule", &[])?;
        Ok(row.and_then(|row| row.get::<_, Option<i64>>(0)).map(ts))
    }

    fn take_due(&self, now: Timestamp, limit: usize) -> AudienceResult<Vec<ProfileKey>> {
        let rows = self.query(
            "DELETE FROM audience_schedule WHERE profile_pk IN (
                 SELECT profile_pk FROM audience_schedule WHERE due_us <= $1
                 ORDER BY due_us LIMIT $2)
             RETURNING profile_pk, due_us",
            &[&now.as_microsecond(), &limit_of(limit)],
        )?;
        let mut due: Vec<(i64, ProfileKey)> = rows
            .iter()
            .map(|row| (row.get(1), ProfileKey(row.get(0))))
            .collect();
        due.sort_unstable();
        Ok(due.into_iter().map(|(_, profile)| profile).collect())
    }
}

#[cfg(test)]
mod tests {
    use signalbox_store::postgres::testing::TestDatabase;

    use super::*;
    use crate::store::AudienceStore;

    /// A database made before the schedule was kept per profile keeps, per profile, the
    /// earliest of its entries.
    #[test]
    fn the_schedule_becomes_one_entry_per_profile_at_its_earliest() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let Some(db) = runtime.block_on(TestDatabase::create()) else {
            return;
        };
        runtime.block_on(async {
            let pool = connect_pool(db.url(), 1).unwrap();
            let mut client = pool.get().await.unwrap();
            schema::migrate(&mut client, COMPONENT, &MIGRATIONS[..2])
                .await
                .unwrap();
            client
                .batch_execute(
                    "INSERT INTO audience_schedule (segment_pk, profile_pk, due_us) VALUES
                         (1, 10, 500), (2, 10, 300), (3, 10, 900), (1, 11, 700)",
                )
                .await
                .unwrap();
        });
        let store = runtime
            .block_on(PgAudienceStore::connect(db.url(), 2))
            .unwrap();
        let writer = store.writer().unwrap();
        let scheduled = writer.scheduled().unwrap();
        assert_eq!(scheduled.len(), 2);
        assert_eq!(scheduled[&ProfileKey(10)], ts(300));
        assert_eq!(scheduled[&ProfileKey(11)], ts(700));
        writer.schedule(ProfileKey(10), ts(100)).unwrap();
        assert_eq!(writer.next_due().unwrap(), Some(ts(100)));
        drop(writer);
        drop(store);
        drop(db);
    }
}
