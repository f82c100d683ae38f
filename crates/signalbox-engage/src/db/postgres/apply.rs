//! The applier's storage ([`ApplyStore`], [`ApplyTx`]) on PostgreSQL: [`PgWriter`] holds one
//! connection for as long as it lives, and on it the advisory lock that makes it the only
//! applier of the database (the PostgreSQL side of `pipeline.rs`'s lock file).
//!
//! The traits are synchronous: the writer keeps the handle of the runtime it was connected on
//! and waits on it. **Invariant:** its methods are called from a blocking thread (the
//! pipeline's, `spawn_blocking`), never from a task of the runtime.
//!
//! # Round trips
//! A batch's writes whose outcome the applier does not read (profile rows, provenance,
//! identifiers linked, events, audit lines, problems, outbox rows, held calls, list changes,
//! consent, counters, the checkpoint, `BEGIN` itself) are queued in the transaction, and sent
//! ahead of the next statement whose answer it needs, pipelined on the connection with it: one
//! round trip carries the queue and the read, executed in order, so the read sees them (the
//! queued events travel as one multi-row `UNNEST` insert, [`INSERT_EVENTS`], and so do the
//! queued held calls, [`INSERT_HELD`]). At
//! commit, the queue and `COMMIT` go together. A batch thus makes one round trip per read the
//! applier needs and has not cached (a profile or identifier it has not seen lately, a new
//! metric, a redirect, a held call that is released, …) plus one at commit. An event's dedupe
//! check reads all the keys of its profile the first time the profile is seen ([`EventKeys`]),
//! then answers from memory across batches. A merge is one round trip for all its statements.
//! Statements are prepared once per connection (`prepare_cached`).
//!
//! A queued write that fails makes the statement it travels with fail, so its error is blamed
//! on a later entry of the batch: the quarantine's narrowing (`apply/quarantine.rs`) then
//! tries smaller batches down to the entry at fault, as it does for a failed commit.
//! An event whose key a committed row holds already is found at its insert (`ON CONFLICT DO
//! NOTHING`) rather than when queued: keys come from log positions, so only an entry applied
//! twice could meet one, and the checkpoint commits with the events.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;

use deadpool_postgres::{Object, Pool};
use signalbox_core::PostgresUrl;
use signalbox_store::postgres::{connect_pool_planned, schema as store_schema, Planning};
use tokio::runtime::Handle;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::queries::pg;
use super::schema::{COMPONENT, MIGRATIONS, TABLES};
use crate::apply::holds::HeldIds;
use crate::apply::profile::{ProfileRow, StoredProfile};
use crate::apply::store::{
    ApplyStore, ApplyTx, AuditLine, HeldCall, NewEvent, NewHeldCall, NewMember, NewOutboxRow,
    ProfileWrite, QuarantineRow,
};
use crate::apply::{OriginRow, OriginRows};
use crate::error::{EngageError, EngageResult};
use crate::lists::{self, ConsentStatus, EmailConsent, ListId, MemberStatus, OptInProcess};
use crate::query::ts;

/// Key of the session-level advisory lock the applier's connection holds ("engage apply").
pub(crate) const APPLIER_LOCK: i64 = 0x656e_6761_6765_6170;

/// Connections of the writer's pool: its own, and one to replace it when it broke.
const POOL_SIZE: usize = 2;

fn pool_error(err: deadpool_postgres::PoolError) -> EngageError {
    match err {
        deadpool_postgres::PoolError::Backend(err) => pg(err),
        other => {
            tracing::warn!(error = %other, "no engage database connection");
            EngageError::Unavailable
        }
    }
}

/// Connects a pool to `url` and brings the schema up to date.
pub(crate) async fn connect(
    url: &PostgresUrl,
    size: usize,
    planning: Planning,
) -> EngageResult<Pool> {
    let pool = connect_pool_planned(url, size, planning)?;
    let mut client = pool.get().await.map_err(pool_error)?;
    store_schema::migrate(&mut client, COMPONENT, MIGRATIONS).await?;
    Ok(pool)
}

/// The applier's writer of the derived state in PostgreSQL.
pub(crate) struct PgWriter {
    pool: Pool,
    /// The dedupe keys of the events of recently seen profiles (see [`EventKeys`]).
    event_keys: RefCell<EventKeys>,
    /// The connection that holds [`APPLIER_LOCK`]; `None` only while being dropped.
    conn: Option<Object>,
    runtime: Handle,
}

impl PgWriter {
    /// Connects to `url`, brings the schema up to date and takes the applier's lock. Fails
    /// with [`EngageError::Conflict`] when another process applies to the database. The writer
    /// waits on the runtime this is called on.
    pub(crate) async fn connect(url: &PostgresUrl) -> EngageResult<PgWriter> {
        // Its statements are inserts and lookups by key, thousands a batch: planned once.
        let pool = connect(url, POOL_SIZE, Planning::Cached).await?;
        let conn = locked_connection(&pool).await?;
        Ok(PgWriter {
            pool,
            event_keys: RefCell::new(EventKeys::default()),
            conn: Some(conn),
            runtime: Handle::current(),
        })
    }

    fn conn(&self) -> &Object {
        self.conn.as_ref().expect("connection held until dropped")
    }

    /// Empties every table of the derived state in one transaction (a rebuild applies the log
    /// again from the start). Identity keys count from 1 again.
    pub(crate) fn clear(&mut self) -> EngageResult<()> {
        self.event_keys.borrow_mut().clear();
        let sql = format!(
            "BEGIN; TRUNCATE {} RESTART IDENTITY; COMMIT;",
            TABLES.join(", ")
        );
        self.runtime
            .block_on(self.conn().batch_execute(&sql))
            .map_err(pg)
    }

    /// Runs one statement outside a batch.
    fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> EngageResult<Vec<Row>> {
        let conn = self.conn();
        self.runtime.block_on(async {
            let stmt = conn.prepare_cached(sql).await.map_err(pg)?;
            conn.query(&stmt, params).await.map_err(pg)
        })
    }
}

impl Drop for PgWriter {
    /// The connection leaves the pool and closes: the lock goes with it.
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            drop(Object::take(conn));
        }
    }
}

/// A connection of `pool` holding the applier's lock.
async fn locked_connection(pool: &Pool) -> EngageResult<Object> {
    let conn = pool.get().await.map_err(pool_error)?;
    let locked: bool = conn
        .query_one("SELECT pg_try_advisory_lock($1)", &[&APPLIER_LOCK])
        .await
        .map_err(pg)?
        .get(0);
    if !locked {
        drop(Object::take(conn));
        return Err(EngageError::Conflict {
            reason: "another process applies the log to this engage database".into(),
        });
    }
    Ok(conn)
}

impl ApplyStore for PgWriter {
    const WRITES_IN_PROCESS: bool = false;

    type Tx<'a> = PgTx<'a>;

    fn begin(&mut self) -> EngageResult<PgTx<'_>> {
        if self.conn().is_closed() {
            // The server restarted or the connection broke: the lock went with it.
            let conn = self.runtime.block_on(locked_connection(&self.pool))?;
            if let Some(old) = self.conn.replace(conn) {
                drop(Object::take(old));
            }
            tracing::info!("engage applier reconnected");
        }
        Ok(PgTx {
            conn: self.conn(),
            runtime: &self.runtime,
            event_keys: &self.event_keys,
            pending: RefCell::new(Pending::default()),
            begun: Cell::new(false),
            finished: Cell::new(false),
        })
    }

    fn applied_seq(&self) -> EngageResult<i64> {
        let rows = self.query("SELECT value FROM meta WHERE key = 'applied_seq'", &[])?;
        Ok(rows.first().map(|r| r.get(0)).unwrap_or(0))
    }

    fn earliest_hold_expiry(&self) -> EngageResult<Option<i64>> {
        let rows = self.query(EARLIEST_HOLD_EXPIRY, &[])?;
        Ok(rows.first().and_then(|r| r.get(0)))
    }

    fn held_after(&self, seq: i64) -> EngageResult<Vec<(i64, HeldIds)>> {
        let rows = self.query(
            "SELECT seq, user_id, anonymous_id, alias_of FROM held_calls
             WHERE seq > $1 AND status = 'held' ORDER BY seq",
            &[&seq],
        )?;
        Ok(rows.iter().map(|r| (r.get(0), held_ids(r, 1))).collect())
    }

    fn is_quarantined(&self, seq: i64) -> EngageResult<bool> {
        let rows = self.query("SELECT 1 FROM quarantine WHERE seq = $1", &[&seq])?;
        Ok(!rows.is_empty())
    }

    fn note_failed_retry(&self, seq: i64, error: &str) -> EngageResult<()> {
        self.query(
            "UPDATE quarantine SET tries = tries + 1, error = $2 WHERE seq = $1",
            &[&seq, &error],
        )?;
        Ok(())
    }

    fn checkpoint(&mut self) -> EngageResult<()> {
        // Committed is durable: nothing is kept beside the tables.
        Ok(())
    }
}

const EARLIEST_HOLD_EXPIRY: &str = "SELECT MIN(expires_us) FROM held_calls WHERE status = 'held'";

/// The dedupe keys (metric, unique hash) of the events of profiles the applier saw lately, so
/// that an event's dedupe check costs a round trip only the first time its profile is seen.
/// The applier is the only writer of events: the keys stay true across batches, except after
/// a merge (both profiles are forgotten) or a rollback (everything is).
#[derive(Default)]
struct EventKeys {
    /// By profile; `None`: too many to keep (each check asks the table).
    by_profile: HashMap<i64, Option<HashSet<(i64, i64)>>>,
    kept: usize,
}

impl EventKeys {
    /// Keys kept of one profile at most.
    const PER_PROFILE: usize = 1_000;
    /// Keys kept in all; past this, everything is forgotten.
    const TOTAL: usize = 2_000_000;

    fn get(&self, profile_pk: i64) -> Option<&Option<HashSet<(i64, i64)>>> {
        self.by_profile.get(&profile_pk)
    }

    fn insert(&mut self, profile_pk: i64, keys: Option<HashSet<(i64, i64)>>) {
        if self.kept > Self::TOTAL {
            self.clear();
        }
        self.kept += keys.as_ref().map_or(1, HashSet::len);
        self.by_profile.insert(profile_pk, keys);
    }

    /// An event of a profile whose keys are kept.
    fn add(&mut self, profile_pk: i64, key: (i64, i64)) {
        if let Some(Some(keys)) = self.by_profile.get_mut(&profile_pk) {
            if keys.len() >= Self::PER_PROFILE {
                self.by_profile.insert(profile_pk, None);
            } else if keys.insert(key) {
                self.kept += 1;
            }
        }
    }

    fn forget(&mut self, profile_pk: i64) {
        self.by_profile.remove(&profile_pk);
    }

    fn clear(&mut self) {
        self.by_profile.clear();
        self.kept = 0;
    }
}

/// A statement's parameter, owned by the queue.
type Param = Box<dyn ToSql + Sync + Send>;

/// A queued write.
struct Queued {
    sql: &'static str,
    params: Vec<Param>,
}

/// What a transaction holds back until its next round trip.
#[derive(Default)]
struct Pending {
    writes: Vec<Queued>,
    /// The queued events, sent as one statement ([`INSERT_EVENTS`]) at the place of the first
    /// (`writes[at]`): nothing queued touches `events` otherwise.
    events: Option<(usize, EventColumns)>,
    /// The queued held calls, sent as one statement ([`INSERT_HELD`]) at the place of the
    /// first: the only other queued write to `held_calls` releases a call held before it.
    held: Option<(usize, HeldColumns)>,
    /// Keys of the events inserted by this transaction (queued or sent).
    event_keys: HashSet<i64>,
    /// (profile, metric, unique hash) of the same events: their dedupe keys.
    event_hashes: HashSet<(i64, i64, i64)>,
}

/// Queued events, column by column.
#[derive(Default)]
struct EventColumns {
    pk: Vec<i64>,
    metric_pk: Vec<i64>,
    profile_pk: Vec<i64>,
    time_us: Vec<i64>,
    value: Vec<Option<f64>>,
    currency: Vec<Option<String>>,
    unique_id: Vec<String>,
    unique_hash: Vec<i64>,
    properties: Vec<String>,
}

impl EventColumns {
    fn into_params(self) -> Vec<Param> {
        vec![
            Box::new(self.pk),
            Box::new(self.metric_pk),
            Box::new(self.profile_pk),
            Box::new(self.time_us),
            Box::new(self.value),
            Box::new(self.currency),
            Box::new(self.unique_id),
            Box::new(self.unique_hash),
            Box::new(self.properties),
        ]
    }
}

/// Queued held calls, column by column.
#[derive(Default)]
struct HeldColumns {
    seq: Vec<i64>,
    source_id: Vec<i64>,
    kind: Vec<String>,
    received_us: Vec<i64>,
    expires_us: Vec<i64>,
    reason: Vec<String>,
    user_id: Vec<Option<String>>,
    anonymous_id: Vec<Option<String>>,
    alias_of: Vec<Option<String>>,
    payload: Vec<String>,
}

impl HeldColumns {
    fn push(&mut self, call: &NewHeldCall<'_>) {
        self.seq.push(call.seq);
        self.source_id.push(call.source_id);
        self.kind.push(call.kind.to_owned());
        self.received_us.push(call.received_us);
        self.expires_us.push(call.expires_us);
        self.reason.push(call.reason.to_owned());
        self.user_id.push(call.ids.external_id.map(str::to_owned));
        self.anonymous_id
            .push(call.ids.anonymous_id.map(str::to_owned));
        self.alias_of.push(call.ids.alias_of.map(str::to_owned));
        self.payload.push(call.payload.to_owned());
    }

    fn into_params(self) -> Vec<Param> {
        vec![
            Box::new(self.seq),
            Box::new(self.source_id),
            Box::new(self.kind),
            Box::new(self.received_us),
            Box::new(self.expires_us),
            Box::new(self.reason),
            Box::new(self.user_id),
            Box::new(self.anonymous_id),
            Box::new(self.alias_of),
            Box::new(self.payload),
        ]
    }
}

/// Many held calls in one statement.
const INSERT_HELD: &str = "INSERT INTO held_calls (seq, source_id, kind, received_us, expires_us,
         reason, status, user_id, anonymous_id, alias_of, payload)
     SELECT seq, source_id, kind, received_us, expires_us, reason, 'held', user_id,
         anonymous_id, alias_of, payload
     FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::BIGINT[], $5::BIGINT[],
         $6::TEXT[], $7::TEXT[], $8::TEXT[], $9::TEXT[], $10::TEXT[])
         AS h (seq, source_id, kind, received_us, expires_us, reason, user_id, anonymous_id,
               alias_of, payload)";

/// Many events in one statement (a key already taken is left alone).
const INSERT_EVENTS: &str = "INSERT INTO events (pk, metric_pk, profile_pk, time_us, value,
         currency, unique_id, unique_hash, properties)
     SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::BIGINT[], $4::BIGINT[],
         $5::DOUBLE PRECISION[], $6::TEXT[], $7::TEXT[], $8::BIGINT[], $9::TEXT[])
     ON CONFLICT (pk) DO NOTHING";

type Reply<'c> = Pin<Box<dyn Future<Output = Result<Vec<Row>, tokio_postgres::Error>> + 'c>>;

/// One batch's transaction (see the module's notes on its round trips).
pub(crate) struct PgTx<'a> {
    conn: &'a Object,
    runtime: &'a Handle,
    event_keys: &'a RefCell<EventKeys>,
    pending: RefCell<Pending>,
    /// `BEGIN` was sent.
    begun: Cell<bool>,
    /// Committed, or failed to: nothing to roll back.
    finished: Cell<bool>,
}

impl Drop for PgTx<'_> {
    fn drop(&mut self) {
        if !self.finished.get() {
            // What the cache learnt from this transaction is undone with it.
            self.event_keys.borrow_mut().clear();
        }
        if self.begun.get() && !self.finished.get() {
            let rolled_back = self.runtime.block_on(self.conn.batch_execute("ROLLBACK"));
            if let Err(err) = rolled_back {
                tracing::warn!(error = %err, "engage batch rollback failed");
            }
        }
    }
}

impl PgTx<'_> {
    fn queue(&self, sql: &'static str, params: Vec<Param>) {
        self.pending
            .borrow_mut()
            .writes
            .push(Queued { sql, params });
    }

    /// Sends the queued writes, then `reads` (then `COMMIT` when `commit`), pipelined in one
    /// round trip; the rows of each read.
    fn round_trip(
        &self,
        reads: &[(&str, &[&(dyn ToSql + Sync)])],
        commit: bool,
    ) -> EngageResult<Vec<Vec<Row>>> {
        let writes = {
            let mut pending = self.pending.borrow_mut();
            let mut writes = std::mem::take(&mut pending.writes);
            if let Some((at, events)) = pending.events.take() {
                writes[at].params = events.into_params();
            }
            if let Some((at, held)) = pending.held.take() {
                writes[at].params = held.into_params();
            }
            writes
        };
        let begin = !self.begun.replace(true);
        let conn = self.conn;
        let result = self.runtime.block_on(async {
            // Prepared once per connection: later batches find them cached, so the requests
            // below go out in order on their first poll.
            let mut write_stmts = Vec::with_capacity(writes.len());
            for write in &writes {
                write_stmts.push(conn.prepare_cached(write.sql).await?);
            }
            let mut read_stmts = Vec::with_capacity(reads.len());
            for (sql, _) in reads {
                read_stmts.push(conn.prepare_cached(sql).await?);
            }
            let write_params: Vec<Vec<&(dyn ToSql + Sync)>> = writes
                .iter()
                .map(|w| {
                    w.params
                        .iter()
                        .map(|p| &**p as &(dyn ToSql + Sync))
                        .collect()
                })
                .collect();
            let mut replies: Vec<Reply<'_>> = Vec::with_capacity(writes.len() + reads.len() + 2);
            if begin {
                replies.push(Box::pin(async {
                    conn.batch_execute("BEGIN").await.map(|()| Vec::new())
                }));
            }
            for (stmt, params) in write_stmts.iter().zip(&write_params) {
                replies.push(Box::pin(async move {
                    conn.execute(stmt, params).await.map(|_| Vec::new())
                }));
            }
            for (stmt, (_, params)) in read_stmts.iter().zip(reads) {
                replies.push(Box::pin(conn.query(stmt, params)));
            }
            if commit {
                replies.push(Box::pin(async {
                    conn.batch_execute("COMMIT").await.map(|()| Vec::new())
                }));
            }
            let mut rows = futures::future::try_join_all(replies).await?;
            if commit {
                rows.pop();
            }
            Ok(rows.split_off(rows.len() - reads.len()))
        });
        result.map_err(pg)
    }

    /// One read, after the queued writes.
    fn read(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> EngageResult<Vec<Row>> {
        Ok(self
            .round_trip(&[(sql, params)], false)?
            .pop()
            .unwrap_or_default())
    }
}

fn held_ids(row: &Row, first: usize) -> HeldIds {
    HeldIds {
        external_id: row.get(first),
        anonymous_id: row.get(first + 1),
        alias_of: row.get(first + 2),
    }
}

fn flag(value: bool) -> i64 {
    i64::from(value)
}

impl ApplyTx for PgTx<'_> {
    fn commit(self) -> EngageResult<()> {
        if !self.begun.get() && self.pending.borrow().writes.is_empty() {
            self.finished.set(true);
            return Ok(());
        }
        let committed = self.round_trip(&[], true);
        if committed.is_err() {
            self.event_keys.borrow_mut().clear();
        }
        self.finished.set(true);
        committed.map(drop)
    }

    fn set_applied_seq(&self, seq: i64) -> EngageResult<()> {
        self.queue(
            "INSERT INTO meta (key, value) VALUES ('applied_seq', $1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            vec![Box::new(seq)],
        );
        Ok(())
    }

    fn add_counters(&self, counters: &mut HashMap<Cow<'static, str>, i64>) -> EngageResult<()> {
        if counters.is_empty() {
            return Ok(());
        }
        let (names, values): (Vec<String>, Vec<i64>) = counters
            .drain()
            .map(|(name, value)| (name.into_owned(), value))
            .unzip();
        self.queue(
            "INSERT INTO counters (name, value)
             SELECT * FROM UNNEST($1::TEXT[], $2::BIGINT[])
             ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value",
            vec![Box::new(names), Box::new(values)],
        );
        Ok(())
    }

    fn load_profile(&self, pk: i64) -> EngageResult<Option<ProfileRow>> {
        let rows = self.read(
            "SELECT pk, id, email, phone_number, external_id, anonymous_id, created_us,
                    updated_us,
                    (SELECT MAX(time_us) FROM events WHERE events.profile_pk = profiles.pk),
                    data, from_segment, segment_user_id
             FROM profiles WHERE pk = $1",
            &[&pk],
        )?;
        Ok(rows.first().map(|r| {
            ProfileRow::stored(StoredProfile {
                pk: r.get(0),
                id: r.get(1),
                email: r.get(2),
                phone_number: r.get(3),
                external_id: r.get(4),
                anonymous_id: r.get(5),
                created_us: r.get(6),
                updated_us: r.get(7),
                last_event_us: r.get(8),
                data: r.get(9),
                from_segment: r.get::<_, i64>(10) != 0,
                segment_user_id: r.get(11),
            })
        }))
    }

    fn save_profile(
        &self,
        row: &ProfileRow,
        write: ProfileWrite<'_>,
        changed_seq: i64,
    ) -> EngageResult<()> {
        match write {
            ProfileWrite::Full { data } => self.queue(
                "INSERT INTO profiles (pk, id, email, phone_number, external_id, anonymous_id,
                                       created_us, updated_us, data, changed_seq,
                                       from_segment, segment_user_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                 ON CONFLICT (pk) DO UPDATE SET email = excluded.email,
                     phone_number = excluded.phone_number, external_id = excluded.external_id,
                     anonymous_id = excluded.anonymous_id, created_us = excluded.created_us,
                     updated_us = excluded.updated_us, data = excluded.data,
                     changed_seq = excluded.changed_seq, from_segment = excluded.from_segment,
                     segment_user_id = excluded.segment_user_id",
                vec![
                    Box::new(row.pk),
                    Box::new(row.id.clone()),
                    Box::new(row.email.clone()),
                    Box::new(row.phone_number.clone()),
                    Box::new(row.external_id.clone()),
                    Box::new(row.anonymous_id.clone()),
                    Box::new(row.created_us),
                    Box::new(row.updated_us),
                    Box::new(data.to_owned()),
                    Box::new(changed_seq),
                    Box::new(flag(row.from_segment)),
                    Box::new(row.segment_user_id.clone()),
                ],
            ),
            ProfileWrite::Columns => self.queue(
                "UPDATE profiles SET email = $2, phone_number = $3, external_id = $4,
                     anonymous_id = $5, created_us = $6, updated_us = $7, changed_seq = $8,
                     from_segment = $9, segment_user_id = $10
                 WHERE pk = $1",
                vec![
                    Box::new(row.pk),
                    Box::new(row.email.clone()),
                    Box::new(row.phone_number.clone()),
                    Box::new(row.external_id.clone()),
                    Box::new(row.anonymous_id.clone()),
                    Box::new(row.created_us),
                    Box::new(row.updated_us),
                    Box::new(changed_seq),
                    Box::new(flag(row.from_segment)),
                    Box::new(row.segment_user_id.clone()),
                ],
            ),
        }
        Ok(())
    }

    fn delete_profile(&self, pk: i64) -> EngageResult<()> {
        self.queue("DELETE FROM profiles WHERE pk = $1", vec![Box::new(pk)]);
        Ok(())
    }

    fn redirect(&self, from_pk: i64) -> EngageResult<Option<i64>> {
        let rows = self.read(
            "SELECT to_pk FROM redirects WHERE from_pk = $1",
            &[&from_pk],
        )?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    fn load_origin(
        &self,
        pk: i64,
        integration: &str,
        source: &str,
    ) -> EngageResult<Option<OriginRow>> {
        let rows = self.read(
            "SELECT external_id, anonymous_id, first_seq, last_seq
             FROM profile_origins
             WHERE profile_pk = $1 AND integration = $2 AND source = $3",
            &[&pk, &integration, &source],
        )?;
        Ok(rows.first().map(|r| OriginRow {
            external_id: r.get(0),
            anonymous_id: r.get(1),
            first_seq: r.get(2),
            last_seq: r.get(3),
            dirty: false,
        }))
    }

    fn save_origins(&self, touched: &[i64], origins: &mut OriginRows) -> EngageResult<()> {
        for pk in touched {
            let Some(rows) = origins.get_mut(pk) else {
                continue;
            };
            for (integration, source, row) in rows.iter_mut() {
                if row.dirty {
                    self.queue(
                        "INSERT INTO profile_origins (profile_pk, integration, source,
                             external_id, anonymous_id, first_seq, last_seq)
                         VALUES ($1, $2, $3, $4, $5, $6, $7)
                         ON CONFLICT (profile_pk, integration, source) DO UPDATE SET
                             external_id = excluded.external_id,
                             anonymous_id = excluded.anonymous_id,
                             last_seq = excluded.last_seq",
                        vec![
                            Box::new(*pk),
                            Box::new(integration.to_string()),
                            Box::new(source.to_string()),
                            Box::new(row.external_id.clone()),
                            Box::new(row.anonymous_id.clone()),
                            Box::new(row.first_seq),
                            Box::new(row.last_seq),
                        ],
                    );
                    row.dirty = false;
                }
            }
        }
        Ok(())
    }

    fn find_identifier(&self, kind: &str, value: &str) -> EngageResult<Option<i64>> {
        let rows = self.read(
            "SELECT profile_pk FROM identifiers WHERE kind = $1 AND value = $2",
            &[&kind, &value],
        )?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    fn link_identifier(&self, kind: &str, value: &str, pk: i64) -> EngageResult<()> {
        self.queue(
            "INSERT INTO identifiers (kind, value, profile_pk) VALUES ($1, $2, $3)",
            vec![
                Box::new(kind.to_owned()),
                Box::new(value.to_owned()),
                Box::new(pk),
            ],
        );
        Ok(())
    }

    fn unlink_identifier(&self, kind: &str, value: &str, pk: i64) -> EngageResult<bool> {
        let rows = self.read(
            "DELETE FROM identifiers WHERE kind = $1 AND value = $2 AND profile_pk = $3
             RETURNING 1",
            &[&kind, &value, &pk],
        )?;
        Ok(!rows.is_empty())
    }

    fn merge_profiles(&self, survivor: i64, loser: i64, seq: i64) -> EngageResult<u64> {
        let both: &[&(dyn ToSql + Sync)] = &[&survivor, &loser];
        let loser_only: &[&(dyn ToSql + Sync)] = &[&loser];
        let replies = self.round_trip(
            &[
                // The loser's events that the survivor has already (same metric and unique
                // id) go.
                (
                    "DELETE FROM events e WHERE e.profile_pk = $2 AND EXISTS (
                         SELECT 1 FROM events s WHERE s.profile_pk = $1
                         AND s.metric_pk = e.metric_pk AND s.unique_hash = e.unique_hash)
                     RETURNING 1",
                    both,
                ),
                (
                    "UPDATE events SET profile_pk = $1 WHERE profile_pk = $2",
                    both,
                ),
                (
                    "UPDATE identifiers SET profile_pk = $1 WHERE profile_pk = $2",
                    both,
                ),
                // Provenance, memberships and consent the survivor lacks move; the rest go.
                (
                    "UPDATE profile_origins o SET profile_pk = $1 WHERE o.profile_pk = $2
                     AND NOT EXISTS (SELECT 1 FROM profile_origins s WHERE s.profile_pk = $1
                         AND s.integration = o.integration AND s.source = o.source)",
                    both,
                ),
                (
                    "DELETE FROM profile_origins WHERE profile_pk = $1",
                    loser_only,
                ),
                (
                    "UPDATE list_members m SET profile_pk = $1 WHERE m.profile_pk = $2
                     AND NOT EXISTS (SELECT 1 FROM list_members s WHERE s.profile_pk = $1
                         AND s.list_id = m.list_id)",
                    both,
                ),
                ("DELETE FROM list_members WHERE profile_pk = $1", loser_only),
                (
                    "UPDATE email_consent SET profile_pk = $1 WHERE profile_pk = $2
                     AND NOT EXISTS (SELECT 1 FROM email_consent WHERE profile_pk = $1)",
                    both,
                ),
                (
                    "DELETE FROM email_consent WHERE profile_pk = $1",
                    loser_only,
                ),
                (
                    "UPDATE problems SET profile_pk = $1 WHERE profile_pk = $2",
                    both,
                ),
                (
                    "UPDATE profile_links SET profile_pk = $1 WHERE profile_pk = $2",
                    both,
                ),
                ("UPDATE redirects SET to_pk = $1 WHERE to_pk = $2", both),
                (
                    "INSERT INTO redirects (from_pk, to_pk, seq) VALUES ($2, $1, $3)",
                    &[&survivor, &loser, &seq],
                ),
            ],
            false,
        )?;
        // The events moved: the dedupe keys of this transaction's events are the table's.
        let mut pending = self.pending.borrow_mut();
        pending.event_keys.clear();
        pending.event_hashes.clear();
        let mut cached = self.event_keys.borrow_mut();
        cached.forget(survivor);
        cached.forget(loser);
        Ok(replies.first().map_or(0, |rows| rows.len() as u64))
    }

    fn find_metric(&self, integration: &str, name: &str) -> EngageResult<Option<i64>> {
        let rows = self.read(
            "SELECT pk FROM metrics WHERE integration = $1 AND name = $2",
            &[&integration, &name],
        )?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    fn metric_id_taken(&self, id: &str) -> EngageResult<bool> {
        let rows = self.read("SELECT 1 FROM metrics WHERE id = $1", &[&id])?;
        Ok(!rows.is_empty())
    }

    fn insert_metric(
        &self,
        id: &str,
        name: &str,
        integration: &str,
        category: &str,
        at_us: i64,
    ) -> EngageResult<i64> {
        let rows = self.read(
            "INSERT INTO metrics (id, name, integration, category, created_us, updated_us)
             VALUES ($1, $2, $3, $4, $5, $5) RETURNING pk",
            &[&id, &name, &integration, &category, &at_us],
        )?;
        rows.first()
            .map(|r| r.get(0))
            .ok_or_else(|| EngageError::Internal("metric insert returned no key".into()))
    }

    fn event_exists(
        &self,
        profile_pk: i64,
        metric_pk: i64,
        unique_hash: i64,
    ) -> EngageResult<bool> {
        let key = (profile_pk, metric_pk, unique_hash);
        if self.pending.borrow().event_hashes.contains(&key) {
            return Ok(true);
        }
        if let Some(known) = self.event_keys.borrow().get(profile_pk) {
            if let Some(keys) = known {
                return Ok(keys.contains(&(metric_pk, unique_hash)));
            }
            let rows = self.read(
                "SELECT 1 FROM events
                 WHERE profile_pk = $1 AND metric_pk = $2 AND unique_hash = $3 LIMIT 1",
                &[&profile_pk, &metric_pk, &unique_hash],
            )?;
            return Ok(!rows.is_empty());
        }
        // First time this profile is seen: all its dedupe keys, unless it has too many.
        let limit = EventKeys::PER_PROFILE as i64 + 1;
        let rows = self.read(
            "SELECT metric_pk, unique_hash FROM events WHERE profile_pk = $1 LIMIT $2",
            &[&profile_pk, &limit],
        )?;
        let keys: Option<HashSet<(i64, i64)>> = (rows.len() <= EventKeys::PER_PROFILE)
            .then(|| rows.iter().map(|r| (r.get(0), r.get(1))).collect());
        let exists = match &keys {
            Some(keys) => keys.contains(&(metric_pk, unique_hash)),
            None => {
                let rows = self.read(
                    "SELECT 1 FROM events
                     WHERE profile_pk = $1 AND metric_pk = $2 AND unique_hash = $3 LIMIT 1",
                    &[&profile_pk, &metric_pk, &unique_hash],
                )?;
                !rows.is_empty()
            }
        };
        self.event_keys.borrow_mut().insert(profile_pk, keys);
        Ok(exists)
    }

    fn insert_event(&self, event: &NewEvent<'_>) -> EngageResult<bool> {
        let mut pending = self.pending.borrow_mut();
        if !pending.event_keys.insert(event.pk) {
            return Ok(false);
        }
        pending
            .event_hashes
            .insert((event.profile_pk, event.metric_pk, event.unique_hash));
        self.event_keys
            .borrow_mut()
            .add(event.profile_pk, (event.metric_pk, event.unique_hash));
        let at = pending.writes.len();
        if pending.events.is_none() {
            pending.writes.push(Queued {
                sql: INSERT_EVENTS,
                params: Vec::new(),
            });
        }
        let (_, columns) = pending
            .events
            .get_or_insert_with(|| (at, EventColumns::default()));
        columns.pk.push(event.pk);
        columns.metric_pk.push(event.metric_pk);
        columns.profile_pk.push(event.profile_pk);
        columns.time_us.push(event.time_us);
        columns.value.push(event.value);
        columns.currency.push(event.currency.map(str::to_owned));
        columns.unique_id.push(event.unique_id.to_owned());
        columns.unique_hash.push(event.unique_hash);
        columns.properties.push(event.properties.to_owned());
        Ok(true)
    }

    fn event_properties(
        &self,
        profile_pk: i64,
        metric_pk: i64,
        unique_hash: i64,
    ) -> EngageResult<Option<String>> {
        let rows = self.read(
            "SELECT properties FROM events
             WHERE profile_pk = $1 AND metric_pk = $2 AND unique_hash = $3 LIMIT 1",
            &[&profile_pk, &metric_pk, &unique_hash],
        )?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    fn audit(&self, line: &AuditLine<'_>) -> EngageResult<()> {
        self.queue(
            "INSERT INTO profile_links (profile_pk, seq, n, action, kind, value, detail, at_us)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            vec![
                Box::new(line.profile_pk),
                Box::new(line.seq),
                Box::new(line.n),
                Box::new(line.action.to_owned()),
                Box::new(line.kind.map(str::to_owned)),
                Box::new(line.value.map(str::to_owned)),
                Box::new(line.detail.map(str::to_owned)),
                Box::new(line.at_us),
            ],
        );
        Ok(())
    }

    fn problem(
        &self,
        seq: i64,
        n: i64,
        profile_pk: Option<i64>,
        message: &str,
    ) -> EngageResult<()> {
        self.queue(
            "INSERT INTO problems (seq, n, profile_pk, message) VALUES ($1, $2, $3, $4)",
            vec![
                Box::new(seq),
                Box::new(n),
                Box::new(profile_pk),
                Box::new(message.to_owned()),
            ],
        );
        Ok(())
    }

    fn record_api_result(&self, seq: i64, result: &str) -> EngageResult<()> {
        self.queue(
            "INSERT INTO api_results (seq, result) VALUES ($1, $2)
             ON CONFLICT (seq) DO UPDATE SET result = excluded.result",
            vec![Box::new(seq), Box::new(result.to_owned())],
        );
        Ok(())
    }

    fn hold(&self, call: &NewHeldCall<'_>) -> EngageResult<()> {
        let mut pending = self.pending.borrow_mut();
        let at = pending.writes.len();
        if pending.held.is_none() {
            pending.writes.push(Queued {
                sql: INSERT_HELD,
                params: Vec::new(),
            });
        }
        let (_, columns) = pending
            .held
            .get_or_insert_with(|| (at, HeldColumns::default()));
        columns.push(call);
        Ok(())
    }

    fn held_call(&self, seq: i64) -> EngageResult<Option<HeldCall>> {
        let rows = self.read(
            "SELECT source_id, kind, received_us, payload, user_id, anonymous_id, alias_of
             FROM held_calls WHERE seq = $1 AND status = 'held'",
            &[&seq],
        )?;
        Ok(rows.first().map(|r| HeldCall {
            source_id: r.get(0),
            kind: r.get(1),
            received_us: r.get(2),
            payload: r.get(3),
            ids: held_ids(r, 4),
        }))
    }

    fn release_held(&self, seq: i64, settled_by: i64) -> EngageResult<()> {
        self.queue(
            "UPDATE held_calls SET status = 'released', settled_seq = $2, payload = NULL
             WHERE seq = $1",
            vec![Box::new(seq), Box::new(settled_by)],
        );
        Ok(())
    }

    fn held_waiting_for(&self, kind: &str, value: &str) -> EngageResult<Vec<i64>> {
        // Each arm can use its partial index (`held_by_user`, `held_by_anonymous`,
        // `held_by_alias`).
        let sql = match kind {
            "external_id" => {
                "SELECT seq FROM held_calls WHERE status = 'held' AND user_id = $1
                 UNION SELECT seq FROM held_calls WHERE status = 'held' AND alias_of = $1
                 ORDER BY seq"
            }
            "anonymous_id" => {
                "SELECT seq FROM held_calls WHERE status = 'held' AND anonymous_id = $1
                 UNION SELECT seq FROM held_calls WHERE status = 'held' AND alias_of = $1
                 ORDER BY seq"
            }
            _ => return Ok(Vec::new()),
        };
        let rows = self.read(sql, &[&value])?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn due_holds(&self, now_us: i64) -> EngageResult<Vec<(i64, HeldIds)>> {
        let rows = self.read(
            "SELECT seq, user_id, anonymous_id, alias_of FROM held_calls
             WHERE status = 'held' AND expires_us <= $1",
            &[&now_us],
        )?;
        Ok(rows.iter().map(|r| (r.get(0), held_ids(r, 1))).collect())
    }

    fn expire_holds(&self, now_us: i64) -> EngageResult<u64> {
        let rows = self.read(
            "WITH expired AS (
                 UPDATE held_calls SET status = 'expired'
                 WHERE status = 'held' AND expires_us <= $1 RETURNING 1)
             SELECT COUNT(*) FROM expired",
            &[&now_us],
        )?;
        let expired: i64 = rows.first().map_or(0, |r| r.get(0));
        if expired > 0 {
            self.queue(
                "INSERT INTO counters (name, value) VALUES ('held.expired', $1)
                 ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value",
                vec![Box::new(expired)],
            );
        }
        Ok(expired as u64)
    }

    fn earliest_hold_expiry(&self) -> EngageResult<Option<i64>> {
        let rows = self.read(EARLIEST_HOLD_EXPIRY, &[])?;
        Ok(rows.first().and_then(|r| r.get(0)))
    }

    fn list_info(&self, id: &ListId) -> EngageResult<Option<(String, OptInProcess)>> {
        let rows = self.read("SELECT name, opt_in FROM lists WHERE id = $1", &[&id.0])?;
        Ok(rows.first().map(|r| {
            let opt_in: String = r.get(1);
            (r.get(0), OptInProcess::parse(&opt_in).unwrap_or_default())
        }))
    }

    fn list_id_taken(&self, id: &str) -> EngageResult<bool> {
        let rows = self.read("SELECT 1 FROM lists WHERE id = $1", &[&id])?;
        Ok(!rows.is_empty())
    }

    fn insert_list(
        &self,
        id: &str,
        name: &str,
        opt_in: OptInProcess,
        at_us: i64,
    ) -> EngageResult<()> {
        self.queue(
            "INSERT INTO lists (id, name, opt_in, created_us, updated_us)
             VALUES ($1, $2, $3, $4, $4)",
            vec![
                Box::new(id.to_owned()),
                Box::new(name.to_owned()),
                Box::new(opt_in.as_str().to_owned()),
                Box::new(at_us),
            ],
        );
        Ok(())
    }

    fn update_list(
        &self,
        id: &ListId,
        name: Option<&str>,
        opt_in: Option<OptInProcess>,
        at_us: i64,
    ) -> EngageResult<()> {
        self.queue(
            "UPDATE lists SET name = COALESCE($2, name), opt_in = COALESCE($3, opt_in),
                 updated_us = $4
             WHERE id = $1",
            vec![
                Box::new(id.0.clone()),
                Box::new(name.map(str::to_owned)),
                Box::new(opt_in.map(|o| o.as_str().to_owned())),
                Box::new(at_us),
            ],
        );
        Ok(())
    }

    fn delete_list(&self, id: &ListId) -> EngageResult<()> {
        self.queue(
            "DELETE FROM lists WHERE id = $1",
            vec![Box::new(id.0.clone())],
        );
        Ok(())
    }

    fn list_profiles(&self, id: &ListId, pending: bool) -> EngageResult<Vec<i64>> {
        let sql = if pending {
            "SELECT profile_pk FROM list_members WHERE list_id = $1 ORDER BY profile_pk"
        } else {
            "SELECT profile_pk FROM list_members
             WHERE list_id = $1 AND status = 'member' ORDER BY profile_pk"
        };
        let rows = self.read(sql, &[&id.0])?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn member_status(&self, list: &ListId, pk: i64) -> EngageResult<Option<MemberStatus>> {
        let rows = self.read(
            "SELECT status FROM list_members WHERE list_id = $1 AND profile_pk = $2",
            &[&list.0, &pk],
        )?;
        Ok(rows.first().map(|r| {
            if r.get::<_, &str>(0) == "pending" {
                MemberStatus::Pending
            } else {
                MemberStatus::Member
            }
        }))
    }

    fn insert_member(&self, member: &NewMember<'_>) -> EngageResult<()> {
        self.queue(
            "INSERT INTO list_members (list_id, profile_pk, confirm_optin, seq, status,
                                       joined_us)
             VALUES ($1, $2, $3, $4, $5, $6)",
            vec![
                Box::new(member.list.0.clone()),
                Box::new(member.profile_pk),
                Box::new(flag(member.confirm_optin)),
                Box::new(member.seq),
                Box::new(member.status.as_str().to_owned()),
                Box::new(member.joined_us),
            ],
        );
        Ok(())
    }

    fn confirm_member(&self, list: &ListId, pk: i64, joined_us: i64, seq: i64) -> EngageResult<()> {
        self.queue(
            "UPDATE list_members SET status = 'member', joined_us = $3, seq = $4
             WHERE list_id = $1 AND profile_pk = $2",
            vec![
                Box::new(list.0.clone()),
                Box::new(pk),
                Box::new(joined_us),
                Box::new(seq),
            ],
        );
        Ok(())
    }

    fn remove_member(&self, list: &ListId, pk: i64) -> EngageResult<bool> {
        let rows = self.read(
            "DELETE FROM list_members WHERE list_id = $1 AND profile_pk = $2 RETURNING 1",
            &[&list.0, &pk],
        )?;
        Ok(!rows.is_empty())
    }

    fn list_change(
        &self,
        seq: i64,
        list: &ListId,
        pk: i64,
        change: &str,
        at_us: i64,
    ) -> EngageResult<()> {
        self.queue(
            "INSERT INTO list_changes (seq, list_id, profile_pk, change, at_us)
             VALUES ($1, $2, $3, $4, $5)",
            vec![
                Box::new(seq),
                Box::new(list.0.clone()),
                Box::new(pk),
                Box::new(change.to_owned()),
                Box::new(at_us),
            ],
        );
        Ok(())
    }

    fn consent(&self, pk: i64) -> EngageResult<EmailConsent> {
        let rows = self.read(
            "SELECT status, status_us, method, method_detail, custom_source, double_opt_in,
                    suppressions
             FROM email_consent WHERE profile_pk = $1",
            &[&pk],
        )?;
        let mut consent = match rows.first() {
            None => EmailConsent::default(),
            Some(r) => {
                let consent = ConsentStatus::parse(r.get(0)).unwrap_or_default();
                EmailConsent {
                    consent,
                    consent_timestamp: (consent != ConsentStatus::NeverSubscribed)
                        .then(|| ts(r.get(1))),
                    method: r.get(2),
                    method_detail: r.get(3),
                    custom_source: r.get(4),
                    double_optin: r.get::<_, Option<i64>>(5).map(|v| v != 0),
                    suppressions: lists::parse_suppressions(r.get(6)),
                    can_receive_email_marketing: false,
                }
            }
        };
        consent.compute_can_receive();
        Ok(consent)
    }

    fn store_consent(&self, pk: i64, consent: &EmailConsent, status_us: i64) -> EngageResult<()> {
        self.queue(
            "INSERT INTO email_consent (profile_pk, status, status_us, method, method_detail,
                 custom_source, double_opt_in, suppressions)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (profile_pk) DO UPDATE SET status = excluded.status,
                 status_us = excluded.status_us, method = excluded.method,
                 method_detail = excluded.method_detail,
                 custom_source = excluded.custom_source,
                 double_opt_in = excluded.double_opt_in,
                 suppressions = excluded.suppressions",
            vec![
                Box::new(pk),
                Box::new(consent.consent.as_str().to_owned()),
                Box::new(status_us),
                Box::new(consent.method.clone()),
                Box::new(consent.method_detail.clone()),
                Box::new(consent.custom_source.clone()),
                Box::new(consent.double_optin.map(flag)),
                Box::new(lists::suppressions_json(&consent.suppressions)),
            ],
        );
        Ok(())
    }

    fn next_outbox_n(&self, seq: i64) -> EngageResult<u32> {
        let rows = self.read(
            "SELECT COALESCE(MAX(n) + 1, 0) FROM outbox WHERE seq = $1",
            &[&seq],
        )?;
        let next: i64 = rows.first().map_or(0, |r| r.get(0));
        u32::try_from(next).map_err(|_| EngageError::Internal("outbox position overflow".into()))
    }

    fn insert_outbox(&self, row: &NewOutboxRow<'_>) -> EngageResult<()> {
        self.queue(
            "INSERT INTO outbox (seq, n, at_us, profile_id, email, user_id, anonymous_id,
                                 from_segment, change)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            vec![
                Box::new(row.seq),
                Box::new(i64::from(row.n)),
                Box::new(row.at_us),
                Box::new(row.profile_id.to_owned()),
                Box::new(row.email.map(str::to_owned)),
                Box::new(row.user_id.map(str::to_owned)),
                Box::new(row.anonymous_id.map(str::to_owned)),
                Box::new(flag(row.from_segment)),
                Box::new(row.change.to_owned()),
            ],
        );
        Ok(())
    }

    fn quarantine(&self, row: &QuarantineRow<'_>) -> EngageResult<()> {
        self.queue(
            "INSERT INTO quarantine (seq, kind, source_id, received_us, error, tries)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (seq) DO UPDATE SET kind = excluded.kind,
                 source_id = excluded.source_id, received_us = excluded.received_us,
                 error = excluded.error, tries = excluded.tries",
            vec![
                Box::new(row.seq),
                Box::new(row.kind.to_owned()),
                Box::new(row.source_id),
                Box::new(row.received_us),
                Box::new(row.error.to_owned()),
                Box::new(row.tries),
            ],
        );
        self.queue(
            "INSERT INTO problems (seq, n, profile_pk, message) VALUES ($1, 0, NULL, $2)
             ON CONFLICT (seq, n) DO UPDATE SET profile_pk = NULL, message = excluded.message",
            vec![Box::new(row.seq), Box::new(row.problem.to_owned())],
        );
        self.queue(
            "INSERT INTO counters (name, value) VALUES ('quarantined', 1)
             ON CONFLICT (name) DO UPDATE SET value = counters.value + 1",
            Vec::new(),
        );
        Ok(())
    }

    fn unquarantine(&self, seq: i64) -> EngageResult<()> {
        self.queue("DELETE FROM quarantine WHERE seq = $1", vec![Box::new(seq)]);
        self.queue("DELETE FROM problems WHERE seq = $1", vec![Box::new(seq)]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The backend-neutral checks of `apply/store_checks.rs`, on a fresh database (skipped
    //! without a test server).

    use signalbox_store::postgres::testing::TestDatabase;

    use super::*;
    use crate::apply::store_checks as checks;

    fn check(run: fn(&mut PgWriter)) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let Some(db) = runtime.block_on(TestDatabase::create()) else {
            return;
        };
        let mut writer = runtime.block_on(PgWriter::connect(db.url())).unwrap();
        run(&mut writer);
        drop(writer);
        drop(db);
    }

    #[test]
    fn checkpoint_commits_with_the_batch() {
        check(checks::checkpoint_commits_with_the_batch);
    }

    #[test]
    fn profiles_and_identifiers() {
        check(checks::profiles_and_identifiers);
    }

    #[test]
    fn merge_moves_rows_to_the_survivor() {
        check(checks::merge_moves_rows_to_the_survivor);
    }

    #[test]
    fn held_calls_release_and_expire() {
        check(checks::held_calls_release_and_expire);
    }

    #[test]
    fn lists_and_members() {
        check(checks::lists_and_members);
    }

    #[test]
    fn outbox_and_quarantine() {
        check(checks::outbox_and_quarantine);
    }

    #[test]
    fn a_second_writer_is_refused_until_the_first_is_gone() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let Some(db) = runtime.block_on(TestDatabase::create()) else {
            return;
        };
        let first = runtime.block_on(PgWriter::connect(db.url())).unwrap();
        let second = runtime.block_on(PgWriter::connect(db.url()));
        assert!(matches!(second, Err(EngageError::Conflict { .. })));
        drop(first);
        // The lock goes with the first writer's connection, closed on its own time.
        let mut second = None;
        for _ in 0..50 {
            if let Ok(writer) = runtime.block_on(PgWriter::connect(db.url())) {
                second = Some(writer);
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(second.is_some(), "the lock was not released");
    }

    fn insert_event(tx: &PgTx<'_>, pk: i64, metric_pk: i64, profile_pk: i64, hash: i64) {
        let inserted = tx
            .insert_event(&NewEvent {
                pk,
                metric_pk,
                profile_pk,
                time_us: 1,
                value: None,
                currency: None,
                unique_id: "u",
                unique_hash: hash,
                properties: "{}",
            })
            .unwrap();
        assert!(inserted);
    }

    #[test]
    fn dedupe_keys_kept_across_batches_are_undone_by_a_rollback_and_a_merge() {
        check(|writer| {
            let tx = writer.begin().unwrap();
            let metric = tx.insert_metric("M1", "Viewed", "API", "API", 1).unwrap();
            insert_event(&tx, 100, metric, 10, 7);
            tx.commit().unwrap();

            let tx = writer.begin().unwrap();
            assert!(tx.event_exists(10, metric, 7).unwrap());
            assert!(!tx.event_exists(10, metric, 8).unwrap());
            insert_event(&tx, 101, metric, 10, 8);
            assert!(tx.event_exists(10, metric, 8).unwrap());
            drop(tx);

            let tx = writer.begin().unwrap();
            assert!(!tx.event_exists(10, metric, 8).unwrap());
            assert!(!tx.event_exists(20, metric, 9).unwrap());
            insert_event(&tx, 102, metric, 20, 9);
            tx.commit().unwrap();

            // The survivor takes the loser's events: its kept keys are read again.
            let tx = writer.begin().unwrap();
            assert!(!tx.event_exists(10, metric, 9).unwrap());
            assert_eq!(tx.merge_profiles(10, 20, 5).unwrap(), 0);
            assert!(tx.event_exists(10, metric, 9).unwrap());
            assert!(!tx.event_exists(20, metric, 9).unwrap());
            tx.commit().unwrap();
        });
    }

    #[test]
    fn clear_empties_the_tables_and_restarts_keys() {
        check(|writer| {
            let tx = writer.begin().unwrap();
            let first = tx.insert_metric("M1", "Viewed", "API", "API", 1).unwrap();
            tx.set_applied_seq(9).unwrap();
            tx.commit().unwrap();
            writer.clear().unwrap();
            assert_eq!(writer.applied_seq().unwrap(), 0);
            let tx = writer.begin().unwrap();
            assert_eq!(tx.find_metric("API", "Viewed").unwrap(), None);
            let again = tx.insert_metric("M1", "Viewed", "API", "API", 1).unwrap();
            assert_eq!(again, first);
            tx.commit().unwrap();
        });
    }
}
