//! `flows.db`: flows and their versions, runs, per-step idempotency records, sends, webhook
//! deliveries and dead letters, statistics, and the cursors of the feeds the engine follows.
//!
//! One connection behind a mutex, used from the blocking pool. WAL with `synchronous = FULL`:
//! a step's intent is durable before its side effect starts.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde_json::{Map, Value};
use signalbox_engage::feed::FeedCursor;
use signalbox_engage::ProfileKey;

use crate::definition::FlowDefinition;
use crate::error::{FlowsError, FlowsResult};
use crate::figures::{self, FigureDeltas, RunFigure};

/// An error inside this module: SQLite's, or the engine's own. Both leave it as a
/// [`FlowsError`]; SQLite's as [`FlowsError::Internal`] text, so no `rusqlite` type leaves.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub(crate) struct DbError(FlowsError);

impl From<rusqlite::Error> for DbError {
    fn from(err: rusqlite::Error) -> Self {
        DbError(FlowsError::Internal(err.to_string()))
    }
}

impl From<FlowsError> for DbError {
    fn from(err: FlowsError) -> Self {
        DbError(err)
    }
}

impl From<DbError> for FlowsError {
    fn from(err: DbError) -> Self {
        err.0
    }
}

type SqlResult<T> = Result<T, DbError>;
use crate::flow_store::{FlowChange, FlowStore, FlowWriter, NewFlow};
use crate::model::{
    DeadLetter, FlowInfo, FlowPage, FlowStats, FlowStatus, HeldMessage, HeldStatus, RunExit,
    RunInfo, RunStatus, SendInfo, SendStatus,
};

pub(crate) const MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE flows (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        status TEXT NOT NULL,
        archived INTEGER NOT NULL DEFAULT 0,
        version INTEGER NOT NULL,
        trigger_type TEXT NOT NULL,
        created_us INTEGER NOT NULL,
        updated_us INTEGER NOT NULL
    );
    CREATE TABLE flow_versions (
        flow_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        definition TEXT NOT NULL,
        created_us INTEGER NOT NULL,
        PRIMARY KEY (flow_id, version)
    ) WITHOUT ROWID;
    -- One profile's way through one flow. `position` is the action it is at; `armed` the
    -- delay whose wake-up is set; `wake_us` when it is due (NULL: parked or finished).
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        flow_id TEXT NOT NULL,
        profile_pk INTEGER NOT NULL,
        profile_id TEXT NOT NULL,
        -- What started it: `event:<id>`, `list:<pk>`, `segment:<cursor>`, `date:<us>`.
        origin TEXT NOT NULL,
        trigger_event_id TEXT,
        trigger_properties TEXT NOT NULL,
        started_us INTEGER NOT NULL,
        -- When the engine created the run (by its clock): event accepted → run started.
        entered_us INTEGER NOT NULL,
        position TEXT,
        armed TEXT,
        wake_us INTEGER,
        -- The wake-up a paused flow holds back, restored when it runs again.
        held_wake_us INTEGER,
        status TEXT NOT NULL,
        exit_reason TEXT,
        ended_us INTEGER,
        UNIQUE (flow_id, origin)
    );
    CREATE INDEX runs_due ON runs(wake_us) WHERE status = 'active' AND wake_us IS NOT NULL;
    CREATE INDEX runs_profile ON runs(profile_pk);
    CREATE INDEX runs_flow ON runs(flow_id, status);
    -- Last entry per flow and profile: re-entry and `profile-not-in-flow`.
    CREATE TABLE entries (
        flow_id TEXT NOT NULL,
        profile_pk INTEGER NOT NULL,
        last_us INTEGER NOT NULL,
        PRIMARY KEY (flow_id, profile_pk)
    ) WITHOUT ROWID;
    -- The idempotency record of a side effect: `intent` before it starts, then `done`,
    -- `skipped` or `failed`.
    CREATE TABLE steps (
        key TEXT PRIMARY KEY,
        run_id INTEGER NOT NULL,
        flow_id TEXT NOT NULL,
        action_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        detail TEXT,
        created_us INTEGER NOT NULL,
        done_us INTEGER
    ) WITHOUT ROWID;
    CREATE INDEX steps_open ON steps(state) WHERE state = 'intent';
    CREATE TABLE sends (
        key TEXT PRIMARY KEY,
        flow_id TEXT NOT NULL,
        action_id TEXT NOT NULL,
        run_id INTEGER NOT NULL,
        profile_pk INTEGER NOT NULL,
        email TEXT NOT NULL,
        subject TEXT,
        message_id TEXT,
        -- pending, sent, bounced, failed
        status TEXT NOT NULL,
        detail TEXT,
        decided_us INTEGER NOT NULL,
        sent_us INTEGER,
        opened_us INTEGER,
        clicked_us INTEGER,
        converted_us INTEGER,
        revenue REAL
    ) WITHOUT ROWID;
    CREATE INDEX sends_profile ON sends(profile_pk, decided_us);
    CREATE TABLE webhooks (
        key TEXT PRIMARY KEY,
        flow_id TEXT NOT NULL,
        action_id TEXT NOT NULL,
        run_id INTEGER NOT NULL,
        url TEXT NOT NULL,
        -- pending, delivered, dead
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        last_status INTEGER,
        last_error TEXT,
        next_us INTEGER,
        created_us INTEGER NOT NULL,
        done_us INTEGER
    ) WITHOUT ROWID;
    CREATE TABLE dead_letters (
        key TEXT PRIMARY KEY,
        flow_id TEXT NOT NULL,
        action_id TEXT NOT NULL,
        run_id INTEGER NOT NULL,
        url TEXT NOT NULL,
        body TEXT NOT NULL,
        reason TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        at_us INTEGER NOT NULL
    ) WITHOUT ROWID;
    -- Counters per flow ('' action) and per action: entered, completed, exited_filter,
    -- skipped:<reason>, sent, failed, bounced, opened, clicked, converted (+ revenue), …
    CREATE TABLE stats (
        flow_id TEXT NOT NULL,
        action_id TEXT NOT NULL,
        name TEXT NOT NULL,
        value INTEGER NOT NULL,
        amount REAL NOT NULL DEFAULT 0,
        PRIMARY KEY (flow_id, action_id, name)
    ) WITHOUT ROWID;
    -- Date-triggered flows: the next trigger instant per profile.
    CREATE TABLE date_schedule (
        flow_id TEXT NOT NULL,
        profile_pk INTEGER NOT NULL,
        next_us INTEGER NOT NULL,
        PRIMARY KEY (flow_id, profile_pk)
    ) WITHOUT ROWID;
    CREATE INDEX date_schedule_due ON date_schedule(next_us);
    "#,
    // The console's listing of flows, newest change first, a page at a time.
    "CREATE INDEX flows_updated ON flows(updated_us, id);",
    // Messages of `manual` actions and flows, held for review. The step (`key`) is `held`
    // while the message is pending; its run waits on it, woken at `expires_us`.
    r#"
    CREATE TABLE held_messages (
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        flow_id TEXT NOT NULL,
        action_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        run_id INTEGER NOT NULL,
        profile_pk INTEGER NOT NULL,
        profile_id TEXT NOT NULL,
        email TEXT,
        subject TEXT,
        -- pending, approved, skipped, expired, cancelled
        status TEXT NOT NULL,
        created_us INTEGER NOT NULL,
        expires_us INTEGER NOT NULL,
        decided_us INTEGER
    );
    CREATE INDEX held_messages_flow ON held_messages(flow_id, status, id);
    CREATE INDEX held_messages_run ON held_messages(run_id) WHERE status = 'pending';
    "#,
    // The live figures (`crate::figures`) join the counters in `stats`, counted once here.
    RECOUNT_FIGURES,
];

/// Counts the live figures (`crate::figures`) of every flow again from the runs and held
/// messages, into `stats`: run once, when the schema first keeps them.
const RECOUNT_FIGURES: &str = r#"
    DELETE FROM stats WHERE name IN ('active', 'waiting', 'pending');
    INSERT INTO stats (flow_id, action_id, name, value)
        SELECT flow_id, '', 'active', COUNT(*) FROM runs WHERE status = 'active'
        GROUP BY flow_id;
    INSERT INTO stats (flow_id, action_id, name, value)
        SELECT flow_id, armed, 'waiting', COUNT(*) FROM runs
        WHERE status = 'active' AND armed IS NOT NULL GROUP BY flow_id, armed;
    INSERT INTO stats (flow_id, action_id, name, value)
        SELECT flow_id, action_id, 'pending', COUNT(*) FROM held_messages
        WHERE status = 'pending' GROUP BY flow_id, action_id;
"#;

/// A flow's counters and live figures: one read of `stats`, nothing counted.
const STATS_SQL: &str = "SELECT action_id, name, value, amount FROM stats WHERE flow_id = ?1";

/// `flows.db`, the embedded [`FlowStore`], shared by the worker and the API calls.
#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
}

impl Db {
    /// Opens (creating it if needed) and migrates the file.
    pub fn open(path: &Path) -> FlowsResult<Db> {
        Ok(Db::open_sql(path)?)
    }

    fn open_sql(path: &Path) -> SqlResult<Db> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                FlowsError::Internal(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA temp_store = MEMORY;
             PRAGMA cache_size = -16384;",
        )?;
        migrate(&mut conn)?;
        Ok(Db {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` in an `IMMEDIATE` transaction on this thread.
    pub(crate) fn write<T>(&self, f: impl FnOnce(&Transaction) -> SqlResult<T>) -> FlowsResult<T> {
        let mut conn = self.conn.lock().expect("flows db lock");
        let run = || -> SqlResult<T> {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        };
        Ok(run()?)
    }

    /// Runs `f` in an `IMMEDIATE` transaction on this thread with a [`SqliteWriter`], whose
    /// changes of the live figures are written just before the commit.
    fn write_tracked<T>(
        &self,
        f: impl FnOnce(&SqliteWriter<'_>) -> SqlResult<T>,
    ) -> FlowsResult<T> {
        self.write(|tx| {
            let writer = SqliteWriter {
                tx,
                tracked: Tracked::default(),
            };
            let out = f(&writer)?;
            writer.tracked.flush(tx)?;
            Ok(out)
        })
    }

    /// Runs `f` on the connection on this thread.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&Connection) -> SqlResult<T>) -> FlowsResult<T> {
        let conn = self.conn.lock().expect("flows db lock");
        Ok(f(&conn)?)
    }
}

/// Brings the schema up to date; a schema newer than this build (a newer release wrote the
/// file) is refused rather than read with the wrong assumptions.
fn migrate(conn: &mut Connection) -> SqlResult<()> {
    let version: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > MIGRATIONS.len() {
        return Err(FlowsError::Internal(format!(
            "flows.db schema version {version} is newer than this build knows ({})",
            MIGRATIONS.len()
        ))
        .into());
    }
    for (idx, sql) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", idx + 1)?;
        tx.commit()?;
    }
    Ok(())
}

/// A look at `flows.db` from a connection of its own, for the benchmark, which watches the
/// engine from outside it.
pub(crate) struct Probe {
    conn: Connection,
}

impl Probe {
    pub(crate) fn open(path: &Path) -> SqlResult<Probe> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        Ok(Probe { conn })
    }

    /// Runs started after run `after_id`, oldest first: their ids and trigger properties.
    pub(crate) fn runs_after(&self, after_id: i64) -> SqlResult<Vec<(i64, Map<String, Value>)>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, trigger_properties FROM runs WHERE id > ?1 ORDER BY id")?;
        let rows = stmt
            .query_map([after_id], |r| Ok((r.get(0)?, r.get::<_, String>(1)?)))?
            .map(|row| row.map(|(id, text)| (id, serde_json::from_str(&text).unwrap_or_default())))
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }

    /// The flow's emails handed to SMTP.
    pub(crate) fn sent_count(&self, flow_id: &str) -> SqlResult<u64> {
        self.count(
            "SELECT COUNT(*) FROM sends WHERE flow_id = ?1 AND status = ?2",
            flow_id,
            SendStatus::Sent.as_str(),
        )
    }

    /// The flow's runs that completed.
    pub(crate) fn completed_count(&self, flow_id: &str) -> SqlResult<u64> {
        self.count(
            "SELECT COUNT(*) FROM runs WHERE flow_id = ?1 AND status = ?2",
            flow_id,
            RunStatus::Completed.as_str(),
        )
    }

    /// When the flow's last run ended, in microseconds.
    pub(crate) fn last_ended_us(&self, flow_id: &str) -> SqlResult<Option<i64>> {
        Ok(self.conn.query_row(
            "SELECT MAX(ended_us) FROM runs WHERE flow_id = ?1",
            [flow_id],
            |r| r.get(0),
        )?)
    }

    fn count(&self, sql: &str, flow_id: &str, status: &str) -> SqlResult<u64> {
        let n: i64 = self
            .conn
            .prepare_cached(sql)?
            .query_row([flow_id, status], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

impl FlowStore for Db {
    fn create_flow(
        &self,
        flow: &NewFlow<'_>,
        mut definition: FlowDefinition,
    ) -> FlowsResult<FlowDefinition> {
        let now = flow.now.as_microsecond();
        self.write(|tx| {
            assign_action_ids(tx, &mut definition)?;
            tx.execute(
                "INSERT INTO flows (id, name, status, version, trigger_type, created_us,
                     updated_us)
                 VALUES (?1, ?2, ?3, 1, ?4, ?5, ?5)",
                params![
                    flow.id,
                    flow.name,
                    flow.status.as_str(),
                    definition.trigger.type_name(),
                    now
                ],
            )?;
            tx.execute(
                "INSERT INTO flow_versions (flow_id, version, definition, created_us)
                 VALUES (?1, 1, ?2, ?3)",
                params![flow.id, definition.to_stored_json().to_string(), now],
            )?;
            Ok(())
        })?;
        Ok(definition)
    }

    fn update_flow(
        &self,
        flow_id: &str,
        now: Timestamp,
        change: &mut dyn FnMut(&FlowInfo) -> FlowsResult<FlowChange>,
    ) -> FlowsResult<bool> {
        let now = now.as_microsecond();
        self.write(|tx| {
            let current = read_flow(tx, flow_id)?
                .ok_or_else(|| FlowsError::not_found(format!("flow {flow_id}")))?;
            let change = change(&current)?;
            if let Some(status) = change.status {
                tx.execute(
                    "UPDATE flows SET status = ?2 WHERE id = ?1",
                    params![flow_id, status.as_str()],
                )?;
            }
            if let Some(mut def) = change.definition {
                assign_action_ids(tx, &mut def)?;
                let version = current.version + 1;
                tx.execute(
                    "INSERT INTO flow_versions (flow_id, version, definition, created_us)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![flow_id, version, def.to_stored_json().to_string(), now],
                )?;
                tx.execute(
                    "UPDATE flows SET version = ?2, trigger_type = ?3 WHERE id = ?1",
                    params![flow_id, version, def.trigger.type_name()],
                )?;
            }
            if let Some(name) = change.name {
                tx.execute(
                    "UPDATE flows SET name = ?2 WHERE id = ?1",
                    params![flow_id, name],
                )?;
            }
            if let Some(archived) = change.archived {
                tx.execute(
                    "UPDATE flows SET archived = ?2 WHERE id = ?1",
                    params![flow_id, archived],
                )?;
            }
            tx.execute(
                "UPDATE flows SET updated_us = ?2 WHERE id = ?1",
                params![flow_id, now],
            )?;
            let running: bool = tx.query_row(
                "SELECT status IN (?2, ?3) AND archived = 0 FROM flows WHERE id = ?1",
                params![
                    flow_id,
                    FlowStatus::Live.as_str(),
                    FlowStatus::Manual.as_str()
                ],
                |r| r.get(0),
            )?;
            if !running {
                park_runs(tx, flow_id, true, now)?;
            }
            Ok(running)
        })
    }

    fn unpark_runs(&self, flow_id: &str, now: Timestamp) -> FlowsResult<()> {
        self.write(|tx| park_runs(tx, flow_id, false, now.as_microsecond()))
    }

    fn delete_flow(&self, flow_id: &str, now: Timestamp) -> FlowsResult<()> {
        let now = now.as_microsecond();
        self.write_tracked(|w| {
            let tx = w.tx;
            let n = tx.execute("DELETE FROM flows WHERE id = ?1", [flow_id])?;
            if n == 0 {
                return Err(FlowsError::not_found(format!("flow {flow_id}")).into());
            }
            tx.execute("DELETE FROM flow_versions WHERE flow_id = ?1", [flow_id])?;
            tx.execute("DELETE FROM date_schedule WHERE flow_id = ?1", [flow_id])?;
            let mut deltas = w.tracked.deltas.borrow_mut();
            // The figures lose what each row changed, by the action it counted at.
            let mut stmt = tx.prepare(
                "UPDATE held_messages SET status = ?3, decided_us = ?2
                 WHERE flow_id = ?1 AND status = ?4
                 RETURNING action_id",
            )?;
            let mut rows = stmt.query(params![
                flow_id,
                now,
                HeldStatus::Cancelled.as_str(),
                HeldStatus::Pending.as_str()
            ])?;
            while let Some(row) = rows.next()? {
                deltas.pending(flow_id, &row.get::<_, String>(0)?, -1);
            }
            let mut stmt = tx.prepare(
                "UPDATE runs SET status = ?3, exit_reason = ?4, ended_us = ?2, wake_us = NULL
                 WHERE flow_id = ?1 AND status = ?5
                 RETURNING armed",
            )?;
            let mut rows = stmt.query(params![
                flow_id,
                now,
                RunStatus::Cancelled.as_str(),
                RunExit::FlowDeleted.as_str(),
                RunStatus::Active.as_str()
            ])?;
            while let Some(row) = rows.next()? {
                let armed: Option<String> = row.get(0)?;
                deltas.run(flow_id, true, armed.as_deref(), -1);
            }
            Ok(())
        })
    }

    fn feed_cursor(&self) -> FlowsResult<Option<FeedCursor>> {
        self.read(|conn| {
            Ok(get_meta(conn, "feed_cursor")?.and_then(|s| serde_json::from_str(&s).ok()))
        })
    }

    fn start_feed_at(&self, cursor: &FeedCursor) -> FlowsResult<()> {
        self.write(|tx| {
            if get_meta(tx, "feed_cursor")?.is_none() {
                set_feed_cursor(tx, cursor)?;
            }
            Ok(())
        })
    }

    fn transaction(
        &self,
        f: &mut dyn FnMut(&dyn FlowWriter) -> FlowsResult<()>,
    ) -> FlowsResult<()> {
        self.write_tracked(|w| Ok(f(w)?))
    }

    fn next_wake(&self) -> FlowsResult<Option<i64>> {
        self.read(next_wake)
    }

    fn due_dates(&self, now_us: i64, limit: usize) -> FlowsResult<Vec<(String, i64, i64)>> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT flow_id, profile_pk, next_us FROM date_schedule WHERE next_us <= ?1
                     ORDER BY next_us LIMIT ?2",
                )?
                .query_map(params![now_us, limit as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?
                .collect::<Result<_, _>>()?)
        })
    }

    fn membership_cursor(&self) -> FlowsResult<i64> {
        self.read(membership_cursor)
    }

    fn meta(&self, key: &str) -> FlowsResult<Option<String>> {
        self.read(|conn| get_meta(conn, key))
    }

    fn flow(&self, id: &str) -> FlowsResult<Option<FlowInfo>> {
        self.read(|conn| read_flow(conn, id))
    }

    fn flows(&self) -> FlowsResult<Vec<FlowInfo>> {
        self.read(|conn| {
            let ids: Vec<String> = conn
                .prepare("SELECT id FROM flows ORDER BY created_us, id")?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(flow) = read_flow(conn, &id)? {
                    out.push(flow);
                }
            }
            Ok(out)
        })
    }

    fn flows_page(&self, after: Option<(i64, &str)>, limit: usize) -> FlowsResult<FlowPage> {
        let limit = limit.max(1);
        self.read(|conn| {
            let fetch = i64::try_from(limit + 1).unwrap_or(i64::MAX);
            let ids: Vec<(String, i64)> = match after {
                None => conn
                    .prepare_cached(
                        "SELECT id, updated_us FROM flows
                         ORDER BY updated_us DESC, id DESC LIMIT ?1",
                    )?
                    .query_map([fetch], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<_, _>>()?,
                Some((updated, id)) => conn
                    .prepare_cached(
                        "SELECT id, updated_us FROM flows
                         WHERE (updated_us, id) < (?1, ?2)
                         ORDER BY updated_us DESC, id DESC LIMIT ?3",
                    )?
                    .query_map(params![updated, id, fetch], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<_, _>>()?,
            };
            let more = ids.len() > limit;
            let mut flows = Vec::with_capacity(limit);
            let mut next = None;
            for (id, updated) in ids.into_iter().take(limit) {
                if let Some(flow) = read_flow(conn, &id)? {
                    flows.push(flow);
                }
                next = Some(format!("{updated}.{id}"));
            }
            Ok(FlowPage {
                flows,
                next: if more { next } else { None },
            })
        })
    }

    fn stats(&self, flow_id: &str) -> FlowsResult<FlowStats> {
        self.read(|conn| {
            let mut stats = FlowStats::default();
            let mut stmt = conn.prepare_cached(STATS_SQL)?;
            let rows = stmt.query_map([&flow_id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, f64>(3)?,
                ))
            })?;
            for row in rows {
                let (action, name, value, amount) = row?;
                figures::add_row(&mut stats, action, name, value, amount);
            }
            figures::finish(&mut stats);
            Ok(stats)
        })
    }

    #[cfg(feature = "conformance")]
    fn count_figures(&self, flow_id: &str) -> FlowsResult<FlowStats> {
        self.read(|conn| {
            let mut rows: Vec<(String, String, i64)> = Vec::new();
            let active: i64 = conn.query_row(
                "SELECT COUNT(*) FROM runs WHERE flow_id = ?1 AND status = ?2",
                params![flow_id, RunStatus::Active.as_str()],
                |r| r.get(0),
            )?;
            rows.push((String::new(), figures::ACTIVE.to_owned(), active));
            for (sql, name, status) in [
                (
                    "SELECT armed, COUNT(*) FROM runs
                     WHERE flow_id = ?1 AND status = ?2 AND armed IS NOT NULL GROUP BY armed",
                    figures::WAITING,
                    RunStatus::Active.as_str(),
                ),
                (
                    "SELECT action_id, COUNT(*) FROM held_messages
                     WHERE flow_id = ?1 AND status = ?2 GROUP BY action_id",
                    figures::PENDING,
                    HeldStatus::Pending.as_str(),
                ),
            ] {
                let mut stmt = conn.prepare(sql)?;
                let counted = stmt.query_map(params![flow_id, status], |r| {
                    Ok((r.get::<_, String>(0)?, name.to_owned(), r.get::<_, i64>(1)?))
                })?;
                rows.extend(counted.collect::<Result<Vec<_>, _>>()?);
            }
            let mut stats = FlowStats::default();
            for (action, name, value) in rows {
                figures::add_row(&mut stats, action, name, value, 0.0);
            }
            figures::finish(&mut stats);
            Ok(stats)
        })
    }

    fn runs(&self, flow_id: &str, limit: usize) -> FlowsResult<Vec<RunInfo>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, flow_id, profile_id, trigger_event_id, started_us, position,
                        wake_us, status, exit_reason
                 FROM runs WHERE flow_id = ?1 ORDER BY id DESC LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![flow_id, limit as i64], |r| {
                Ok(RunInfo {
                    id: r.get(0)?,
                    flow_id: r.get(1)?,
                    profile_id: r.get(2)?,
                    trigger_event_id: r.get(3)?,
                    started: crate::engine::ts(r.get(4)?),
                    position: r.get(5)?,
                    next_wake: r.get::<_, Option<i64>>(6)?.map(crate::engine::ts),
                    status: run_status(&r.get::<_, String>(7)?)?,
                    exit_reason: r
                        .get::<_, Option<String>>(8)?
                        .map(|text| run_exit(&text))
                        .transpose()?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn sends(&self, flow_id: &str) -> FlowsResult<Vec<SendInfo>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT key, flow_id, action_id, profile_pk, email, subject, message_id,
                        status, detail
                 FROM sends WHERE flow_id = ?1 ORDER BY decided_us, key",
            )?;
            let rows = stmt.query_map([flow_id], |r| {
                Ok(SendInfo {
                    key: r.get(0)?,
                    flow_id: r.get(1)?,
                    action_id: r.get(2)?,
                    profile_pk: ProfileKey(r.get(3)?),
                    email: r.get(4)?,
                    subject: r.get(5)?,
                    message_id: r.get(6)?,
                    status: send_status(&r.get::<_, String>(7)?)?,
                    detail: r.get(8)?,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn dead_letters(&self, flow_id: &str) -> FlowsResult<Vec<DeadLetter>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT key, flow_id, action_id, url, body, reason, attempts, at_us
                 FROM dead_letters WHERE flow_id = ?1 ORDER BY at_us, key",
            )?;
            let rows = stmt.query_map([flow_id], |r| {
                Ok(DeadLetter {
                    key: r.get(0)?,
                    flow_id: r.get(1)?,
                    action_id: r.get(2)?,
                    url: r.get(3)?,
                    body: r.get(4)?,
                    reason: r.get(5)?,
                    attempts: r.get(6)?,
                    at: crate::engine::ts(r.get(7)?),
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn held_messages(
        &self,
        flow_id: &str,
        status: Option<HeldStatus>,
        after: i64,
        limit: usize,
    ) -> FlowsResult<Vec<HeldMessage>> {
        self.read(|conn| held_page(conn, flow_id, status, after, limit))
    }

    fn held_message(&self, id: i64) -> FlowsResult<Option<HeldMessage>> {
        self.read(|conn| Ok(held_by_id(conn, id)?.map(|(held, _)| held)))
    }

    fn decide_held(
        &self,
        flow_id: &str,
        id: i64,
        to: HeldStatus,
        now: Timestamp,
    ) -> FlowsResult<HeldMessage> {
        self.write_tracked(|w| {
            let tx = w.tx;
            let (held, key) = held_of_flow(tx, flow_id, id)?;
            if held.status == to {
                return Ok(held);
            }
            let verb = match to {
                HeldStatus::Approved => "approved",
                _ => "skipped",
            };
            if held.status != HeldStatus::Pending {
                return Err(FlowsError::Conflict {
                    reason: format!(
                        "message {id} was {} and cannot be {verb}",
                        held.status.as_str()
                    ),
                }
                .into());
            }
            if now >= held.expires {
                return Err(FlowsError::Conflict {
                    reason: format!(
                        "message {id} expired at {} and cannot be {verb}",
                        held.expires
                    ),
                }
                .into());
            }
            set_held_status(tx, &w.tracked, id, to, now.as_microsecond())?;
            if to == HeldStatus::Skipped {
                finish_step(
                    tx,
                    &key,
                    StepState::Skipped,
                    Some("manual"),
                    now.as_microsecond(),
                )?;
                bump(tx, flow_id, &held.action_id, "skipped:manual", 1, 0.0)?;
                bump(tx, flow_id, "", "skipped:manual", 1, 0.0)?;
            } else {
                bump(tx, flow_id, &held.action_id, "approved", 1, 0.0)?;
                bump(tx, flow_id, "", "approved", 1, 0.0)?;
            }
            wake_run(tx, held.run_id, now.as_microsecond())?;
            Ok(HeldMessage {
                status: to,
                decided: Some(now),
                ..held
            })
        })
    }
}

/// A held message of the flow, with its step key; not found when it is another flow's.
fn held_of_flow(conn: &Connection, flow_id: &str, id: i64) -> SqlResult<(HeldMessage, String)> {
    held_by_id(conn, id)?
        .filter(|(held, _)| held.flow_id == flow_id)
        .ok_or_else(|| FlowsError::not_found(format!("message {id} of flow {flow_id}")).into())
}

/// A run's stored status; other text is a corrupt row.
fn run_status(text: &str) -> rusqlite::Result<RunStatus> {
    RunStatus::parse(text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            7,
            rusqlite::types::Type::Text,
            format!("unknown run status {text:?}").into(),
        )
    })
}

/// A send's stored status; other text is a corrupt row.
fn send_status(text: &str) -> rusqlite::Result<SendStatus> {
    SendStatus::parse(text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            7,
            rusqlite::types::Type::Text,
            format!("unknown send status {text:?}").into(),
        )
    })
}

/// A run's stored exit reason; other text is a corrupt row.
fn run_exit(text: &str) -> rusqlite::Result<RunExit> {
    RunExit::parse(text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            8,
            rusqlite::types::Type::Text,
            format!("unknown run exit reason {text:?}").into(),
        )
    })
}

/// [`FlowWriter`] over an open transaction of `flows.db`.
struct SqliteWriter<'a> {
    tx: &'a Transaction<'a>,
    tracked: Tracked,
}

/// What a write transaction keeps beside its statements: the changes of the live figures
/// ([`crate::figures`]), written just before it commits, and the figures of the runs it
/// claimed or changed, so that moving a claimed run needs no read of its row first.
///
/// **Invariant:** a run's entry in `runs` is its row as this transaction sees it: every
/// statement that changes a run's `status` or `armed` in the transaction updates it, and a
/// rolled back savepoint forgets them all (they are read again when needed).
#[derive(Default)]
struct Tracked {
    deltas: RefCell<FigureDeltas>,
    runs: RefCell<HashMap<i64, RunFigure>>,
}

impl Tracked {
    /// Writes the changes of the figures into `stats`, one upsert per figure changed.
    fn flush(&self, conn: &Connection) -> SqlResult<()> {
        let deltas = self.deltas.borrow_mut().take();
        for (flow_id, action_id, name, by) in deltas {
            bump(conn, &flow_id, &action_id, name, by, 0.0)?;
        }
        Ok(())
    }

    /// Makes sure the run's figure is known, reading its row when it is not; false when there
    /// is no such run.
    fn know_run(&self, conn: &Connection, run_id: i64) -> SqlResult<bool> {
        if self.runs.borrow().contains_key(&run_id) {
            return Ok(true);
        }
        let figure = conn
            .prepare_cached("SELECT flow_id, status, armed FROM runs WHERE id = ?1")?
            .query_row([run_id], |r| {
                Ok(RunFigure {
                    flow_id: r.get(0)?,
                    active: r.get_ref(1)?.as_str()? == RunStatus::Active.as_str(),
                    armed: r.get(2)?,
                })
            })
            .optional()?;
        let Some(figure) = figure else {
            return Ok(false);
        };
        self.runs.borrow_mut().insert(run_id, figure);
        Ok(true)
    }

    /// A known run is now active as `active` says (`None`: as it was) and armed at `armed`.
    fn run_now(&self, run_id: i64, active: Option<bool>, armed: Option<&str>) {
        let mut runs = self.runs.borrow_mut();
        let Some(run) = runs.get_mut(&run_id) else {
            return;
        };
        let active = active.unwrap_or(run.active);
        self.deltas.borrow_mut().run_changed(run, active, armed);
        run.active = active;
        if run.armed.as_deref() != armed {
            run.armed = armed.map(str::to_owned);
        }
    }
}

impl SqliteWriter<'_> {
    fn run<T>(&self, f: impl FnOnce(&Transaction) -> SqlResult<T>) -> FlowsResult<T> {
        Ok(f(self.tx)?)
    }
}

impl FlowWriter for SqliteWriter<'_> {
    fn bump(
        &self,
        flow_id: &str,
        action_id: &str,
        name: &str,
        by: i64,
        amount: f64,
    ) -> FlowsResult<()> {
        Ok(bump(self.tx, flow_id, action_id, name, by, amount)?)
    }

    fn delay_run(&self, run_id: i64, wake_us: i64) -> FlowsResult<()> {
        Ok(delay_run(self.tx, run_id, wake_us)?)
    }

    fn emailed_since(&self, profile_pk: i64, since_us: i64) -> FlowsResult<bool> {
        Ok(emailed_since(self.tx, profile_pk, since_us)?)
    }

    fn end_run(
        &self,
        run_id: i64,
        status: crate::model::RunStatus,
        reason: Option<crate::model::RunExit>,
        now_us: i64,
    ) -> FlowsResult<()> {
        Ok(end_run(
            self.tx,
            &self.tracked,
            run_id,
            status,
            reason,
            now_us,
        )?)
    }

    fn finish_send(
        &self,
        key: &str,
        status: crate::model::SendStatus,
        subject: Option<&str>,
        message_id: Option<&str>,
        detail: Option<&str>,
        now_us: i64,
    ) -> FlowsResult<()> {
        Ok(finish_send(
            self.tx, key, status, subject, message_id, detail, now_us,
        )?)
    }

    fn finish_step(
        &self,
        key: &str,
        state: StepState,
        detail: Option<&str>,
        now_us: i64,
    ) -> FlowsResult<()> {
        Ok(finish_step(self.tx, key, state, detail, now_us)?)
    }

    fn get_meta(&self, key: &str) -> FlowsResult<Option<String>> {
        Ok(get_meta(self.tx, key)?)
    }

    fn held_by_key(&self, key: &str) -> FlowsResult<Option<crate::model::HeldMessage>> {
        Ok(held_by_key(self.tx, key)?)
    }

    fn hold_run(&self, run_id: i64) -> FlowsResult<()> {
        Ok(hold_run(self.tx, run_id)?)
    }

    #[allow(clippy::too_many_arguments)]
    fn insert_dead_letter(
        &self,
        key: &str,
        flow_id: &str,
        action_id: &str,
        run_id: i64,
        url: &str,
        body: &str,
        reason: &str,
        attempts: i64,
        now_us: i64,
    ) -> FlowsResult<()> {
        Ok(insert_dead_letter(
            self.tx, key, flow_id, action_id, run_id, url, body, reason, attempts, now_us,
        )?)
    }

    fn insert_held(&self, h: &NewHeld<'_>) -> FlowsResult<()> {
        Ok(insert_held(self.tx, &self.tracked, h)?)
    }

    fn insert_run(&self, run: &NewRun<'_>) -> FlowsResult<Option<i64>> {
        Ok(insert_run(self.tx, &self.tracked, run)?)
    }

    fn insert_send(&self, s: &NewSend<'_>) -> FlowsResult<()> {
        Ok(insert_send(self.tx, s)?)
    }

    fn insert_step(&self, s: &NewStep<'_>) -> FlowsResult<()> {
        Ok(insert_step(self.tx, s)?)
    }

    fn last_entry(&self, flow_id: &str, profile_pk: i64) -> FlowsResult<Option<i64>> {
        Ok(last_entry(self.tx, flow_id, profile_pk)?)
    }

    fn latest_send(
        &self,
        profile_pk: i64,
        since_us: i64,
        until_us: i64,
    ) -> FlowsResult<Option<SendRef>> {
        Ok(latest_send(self.tx, profile_pk, since_us, until_us)?)
    }

    fn mark_send(
        &self,
        key: &str,
        column: &str,
        at_us: i64,
        revenue: Option<f64>,
    ) -> FlowsResult<()> {
        Ok(mark_send(self.tx, key, column, at_us, revenue)?)
    }

    fn move_run(
        &self,
        run_id: i64,
        position: Option<&str>,
        armed: Option<&str>,
        wake_us: Option<i64>,
    ) -> FlowsResult<()> {
        Ok(move_run(
            self.tx,
            &self.tracked,
            run_id,
            position,
            armed,
            wake_us,
        )?)
    }

    fn release_step(&self, key: &str) -> FlowsResult<()> {
        Ok(release_step(self.tx, key)?)
    }

    fn retry_step(&self, key: &str, detail: &str) -> FlowsResult<i64> {
        Ok(retry_step(self.tx, key, detail)?)
    }

    fn send_by_key(&self, key: &str) -> FlowsResult<Option<SendRef>> {
        Ok(send_by_key(self.tx, key)?)
    }

    fn set_feed_cursor(&self, cursor: &FeedCursor) -> FlowsResult<()> {
        Ok(set_feed_cursor(self.tx, cursor)?)
    }

    fn set_held_status(
        &self,
        id: i64,
        status: crate::model::HeldStatus,
        now_us: i64,
    ) -> FlowsResult<()> {
        Ok(set_held_status(self.tx, &self.tracked, id, status, now_us)?)
    }

    fn set_meta(&self, key: &str, value: &str) -> FlowsResult<()> {
        Ok(set_meta(self.tx, key, value)?)
    }

    fn step(&self, key: &str) -> FlowsResult<Option<StepRow>> {
        Ok(step(self.tx, key)?)
    }

    fn upsert_webhook(
        &self,
        key: &str,
        flow_id: &str,
        action_id: &str,
        run_id: i64,
        url: &str,
        now_us: i64,
    ) -> FlowsResult<()> {
        Ok(upsert_webhook(
            self.tx, key, flow_id, action_id, run_id, url, now_us,
        )?)
    }

    fn webhook_attempt(
        &self,
        key: &str,
        state: WebhookState,
        status: Option<u16>,
        error: Option<&str>,
        next_us: Option<i64>,
        now_us: i64,
    ) -> FlowsResult<i64> {
        Ok(webhook_attempt(
            self.tx, key, state, status, error, next_us, now_us,
        )?)
    }

    fn claim_due(&self, now_us: i64, limit: usize) -> FlowsResult<Vec<RunRow>> {
        Ok(due_runs(self.tx, &self.tracked, now_us, limit)?)
    }

    fn savepoint(&self) -> FlowsResult<()> {
        self.run(|tx| Ok(tx.execute_batch("SAVEPOINT run")?))?;
        self.tracked.deltas.borrow_mut().savepoint();
        Ok(())
    }

    fn release_savepoint(&self) -> FlowsResult<()> {
        self.run(|tx| Ok(tx.execute_batch("RELEASE run")?))?;
        self.tracked.deltas.borrow_mut().release_savepoint();
        Ok(())
    }

    fn rollback_to_savepoint(&self) -> FlowsResult<()> {
        self.run(|tx| Ok(tx.execute_batch("ROLLBACK TO run; RELEASE run")?))?;
        self.tracked.deltas.borrow_mut().rollback_to_savepoint();
        self.tracked.runs.borrow_mut().clear();
        Ok(())
    }

    fn apply_merge(&self, from: i64, to: i64, to_id: Option<&str>) -> FlowsResult<()> {
        Ok(apply_merge(self.tx, from, to, to_id)?)
    }

    fn set_date_schedule(
        &self,
        flow_id: &str,
        profile_pk: i64,
        next_us: Option<i64>,
    ) -> FlowsResult<()> {
        self.run(|tx| {
            match next_us {
            Some(us) => tx
                .prepare_cached(
                    "INSERT INTO date_schedule (flow_id, profile_pk, next_us) VALUES (?1, ?2, ?3)
                 ON CONFLICT (flow_id, profile_pk) DO UPDATE SET next_us = excluded.next_us",
                )?
                .execute(params![flow_id, profile_pk, us])?,
            None => tx
                .prepare_cached("DELETE FROM date_schedule WHERE flow_id = ?1 AND profile_pk = ?2")?
                .execute(params![flow_id, profile_pk])?,
        };
            Ok(())
        })
    }

    fn reschedule_date(
        &self,
        flow_id: &str,
        profile_pk: i64,
        next_us: Option<i64>,
    ) -> FlowsResult<()> {
        self.run(|tx| {
            match next_us {
            Some(us) => tx
                .prepare_cached(
                    "UPDATE date_schedule SET next_us = ?3 WHERE flow_id = ?1 AND profile_pk = ?2",
                )?
                .execute(params![flow_id, profile_pk, us])?,
            None => tx
                .prepare_cached("DELETE FROM date_schedule WHERE flow_id = ?1 AND profile_pk = ?2")?
                .execute(params![flow_id, profile_pk])?,
        };
            Ok(())
        })
    }

    fn send_email(&self, key: &str) -> FlowsResult<Option<String>> {
        self.run(|tx| {
            Ok(tx
                .prepare_cached("SELECT email FROM sends WHERE key = ?1")?
                .query_row([key], |r| r.get::<_, String>(0))
                .optional()?)
        })
    }
}

// Flows.

/// Real action ids: decimal numbers from a counter in `meta`, unique across flows.
pub(crate) fn assign_action_ids(
    conn: &Connection,
    definition: &mut FlowDefinition,
) -> SqlResult<()> {
    let mut next: i64 = get_meta(conn, "next_action_id")?
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000_001);
    definition.assign_ids(|| {
        let id = next.to_string();
        next += 1;
        id
    });
    set_meta(conn, "next_action_id", &next.to_string())
}

pub(crate) fn read_flow(conn: &Connection, id: &str) -> SqlResult<Option<FlowInfo>> {
    let row = conn
        .prepare_cached(
            "SELECT f.name, f.status, f.archived, f.version, f.created_us, f.updated_us,
                    v.definition
             FROM flows f JOIN flow_versions v ON v.flow_id = f.id AND v.version = f.version
             WHERE f.id = ?1",
        )?
        .query_row([id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, bool>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, String>(6)?,
            ))
        })
        .optional()?;
    let Some((name, status, archived, version, created, updated, definition)) = row else {
        return Ok(None);
    };
    let json: Value = serde_json::from_str(&definition)
        .map_err(|e| FlowsError::Internal(format!("stored definition of {id}: {e}")))?;
    let definition = FlowDefinition::parse(&json).map_err(|problems| {
        FlowsError::Internal(format!(
            "stored definition of {id} no longer parses: {problems:?}"
        ))
    })?;
    Ok(Some(FlowInfo {
        id: id.to_owned(),
        name,
        status: FlowStatus::parse(&status).unwrap_or(FlowStatus::Draft),
        archived,
        trigger_type: definition.trigger.type_name(),
        version,
        created: crate::engine::ts(created),
        updated: crate::engine::ts(updated),
        definition,
    }))
}

/// A merge: the runs, sends, entries and schedules of the merged-away profile move to the
/// survivor. Runs and messages keep their flow, action and status: no live figure changes.
fn apply_merge(tx: &Connection, from: i64, to: i64, to_id: Option<&str>) -> SqlResult<()> {
    tx.execute(
        "UPDATE runs SET profile_pk = ?2, profile_id = COALESCE(?3, profile_id)
         WHERE profile_pk = ?1",
        params![from, to, to_id],
    )?;
    tx.execute(
        "UPDATE sends SET profile_pk = ?2 WHERE profile_pk = ?1",
        params![from, to],
    )?;
    tx.execute(
        "UPDATE held_messages SET profile_pk = ?2, profile_id = COALESCE(?3, profile_id)
         WHERE profile_pk = ?1",
        params![from, to, to_id],
    )?;
    tx.execute(
        "INSERT INTO entries (flow_id, profile_pk, last_us)
         SELECT flow_id, ?2, last_us FROM entries WHERE profile_pk = ?1
         ON CONFLICT (flow_id, profile_pk) DO UPDATE SET last_us = MAX(last_us, excluded.last_us)",
        params![from, to],
    )?;
    tx.execute("DELETE FROM entries WHERE profile_pk = ?1", [from])?;
    tx.execute("DELETE FROM date_schedule WHERE profile_pk = ?1", [from])?;
    Ok(())
}

// Meta values.

pub(crate) fn get_meta(conn: &Connection, key: &str) -> SqlResult<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([key], |r| r.get(0))
        .optional()?)
}

pub(crate) fn set_meta(conn: &Connection, key: &str, value: &str) -> SqlResult<()> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![key, value])?;
    Ok(())
}

pub(crate) fn set_feed_cursor(conn: &Connection, cursor: &FeedCursor) -> SqlResult<()> {
    set_meta(
        conn,
        "feed_cursor",
        &serde_json::to_string(cursor).expect("cursor serialises"),
    )
}

pub(crate) fn membership_cursor(conn: &Connection) -> SqlResult<i64> {
    Ok(get_meta(conn, "membership_cursor")?
        .and_then(|s| s.parse().ok())
        .unwrap_or(0))
}

// Statistics.

pub(crate) fn bump(
    conn: &Connection,
    flow_id: &str,
    action_id: &str,
    name: &str,
    by: i64,
    amount: f64,
) -> SqlResult<()> {
    conn.prepare_cached(
        "INSERT INTO stats (flow_id, action_id, name, value, amount) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (flow_id, action_id, name)
         DO UPDATE SET value = value + excluded.value, amount = amount + excluded.amount",
    )?
    .execute(params![flow_id, action_id, name, by, amount])?;
    Ok(())
}

// Runs.

/// A run as the worker reads it.
#[derive(Debug, Clone)]
pub struct RunRow {
    pub id: i64,
    pub flow_id: String,
    pub profile_pk: i64,
    pub profile_id: String,
    pub trigger_event_id: Option<String>,
    pub trigger_properties: Map<String, Value>,
    pub started_us: i64,
    pub position: Option<String>,
    pub armed: Option<String>,
}

pub struct NewRun<'a> {
    pub flow_id: &'a str,
    pub profile_pk: i64,
    pub profile_id: &'a str,
    pub origin: String,
    pub trigger_event_id: Option<&'a str>,
    pub trigger_properties: &'a str,
    pub started_us: i64,
    pub entry_action: &'a str,
    pub wake_us: i64,
    pub entered_us: i64,
}

/// Inserts a run; `None` when the same origin started one already (a repeated feed read).
fn insert_run(conn: &Connection, t: &Tracked, run: &NewRun<'_>) -> SqlResult<Option<i64>> {
    let inserted = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO runs (flow_id, profile_pk, profile_id, origin, trigger_event_id,
                trigger_properties, started_us, position, wake_us, status, entered_us)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'active', ?10)",
        )?
        .execute(params![
            run.flow_id,
            run.profile_pk,
            run.profile_id,
            run.origin,
            run.trigger_event_id,
            run.trigger_properties,
            run.started_us,
            run.entry_action,
            run.wake_us,
            run.entered_us
        ])?;
    if inserted == 0 {
        return Ok(None);
    }
    let id = conn.last_insert_rowid();
    // Active, armed at no delay yet.
    t.deltas.borrow_mut().run(run.flow_id, true, None, 1);
    conn.prepare_cached(
        "INSERT INTO entries (flow_id, profile_pk, last_us) VALUES (?1, ?2, ?3)
         ON CONFLICT (flow_id, profile_pk) DO UPDATE SET last_us = excluded.last_us",
    )?
    .execute(params![run.flow_id, run.profile_pk, run.started_us])?;
    Ok(Some(id))
}

pub(crate) fn last_entry(
    conn: &Connection,
    flow_id: &str,
    profile_pk: i64,
) -> SqlResult<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT last_us FROM entries WHERE flow_id = ?1 AND profile_pk = ?2")?
        .query_row(params![flow_id, profile_pk], |r| r.get(0))
        .optional()?)
}

/// The due runs (see [`FlowWriter::claim_due`]); the transaction knows their figures after.
fn due_runs(conn: &Connection, t: &Tracked, now_us: i64, limit: usize) -> SqlResult<Vec<RunRow>> {
    let mut stmt = conn.prepare_cached(&due_runs_sql())?;
    let rows = stmt.query_map(params![now_us, limit as i64], |r| {
        let props: String = r.get(5)?;
        Ok(RunRow {
            id: r.get(0)?,
            flow_id: r.get(1)?,
            profile_pk: r.get(2)?,
            profile_id: r.get(3)?,
            trigger_event_id: r.get(4)?,
            trigger_properties: serde_json::from_str(&props).unwrap_or_default(),
            started_us: r.get(6)?,
            position: r.get(7)?,
            armed: r.get(8)?,
        })
    })?;
    let rows: Vec<RunRow> = rows.collect::<Result<_, _>>()?;
    let mut known = t.runs.borrow_mut();
    for run in &rows {
        known.insert(
            run.id,
            RunFigure {
                flow_id: run.flow_id.clone(),
                active: true,
                armed: run.armed.clone(),
            },
        );
    }
    Ok(rows)
}

// The queries below spell a status out rather than bind it: a partial index names it
// (`runs_due`, `held_messages_run`), and SQLite uses such an index only for a query that
// names the same value. They take the text from the enum all the same; a test checks that
// each one still uses its index.

/// Active runs whose wake-up is due, oldest first (`?1` now, `?2` limit).
fn due_runs_sql() -> String {
    format!(
        "SELECT id, flow_id, profile_pk, profile_id, trigger_event_id, trigger_properties,
                started_us, position, armed
         FROM runs WHERE status = '{active}' AND wake_us IS NOT NULL AND wake_us <= ?1
         ORDER BY wake_us, id LIMIT ?2",
        active = RunStatus::Active.as_str()
    )
}

/// The earliest wake-up of an active run.
fn next_wake_sql() -> String {
    format!(
        "SELECT MIN(wake_us) FROM runs WHERE status = '{active}' AND wake_us IS NOT NULL",
        active = RunStatus::Active.as_str()
    )
}

/// Cancels a run's messages waiting for review (`?1` run, `?2` now, `?3` cancelled).
fn cancel_held_of_run_sql() -> String {
    format!(
        "UPDATE held_messages SET status = ?3, decided_us = ?2
         WHERE run_id = ?1 AND status = '{pending}'",
        pending = HeldStatus::Pending.as_str()
    )
}

/// The flow and action of each of a run's messages waiting for review (`?1` run).
fn pending_held_of_run_sql() -> String {
    format!(
        "SELECT flow_id, action_id FROM held_messages
         WHERE run_id = ?1 AND status = '{pending}'",
        pending = HeldStatus::Pending.as_str()
    )
}

/// The earliest wake-up of an active run, or of a date trigger.
pub(crate) fn next_wake(conn: &Connection) -> SqlResult<Option<i64>> {
    let run: Option<i64> = conn
        .prepare_cached(&next_wake_sql())?
        .query_row([], |r| r.get(0))?;
    let date: Option<i64> = conn
        .prepare_cached("SELECT MIN(next_us) FROM date_schedule")?
        .query_row([], |r| r.get(0))?;
    Ok(match (run, date) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    })
}

fn move_run(
    conn: &Connection,
    t: &Tracked,
    run_id: i64,
    position: Option<&str>,
    armed: Option<&str>,
    wake_us: Option<i64>,
) -> SqlResult<()> {
    if !t.know_run(conn, run_id)? {
        return Ok(());
    }
    conn.prepare_cached("UPDATE runs SET position = ?2, armed = ?3, wake_us = ?4 WHERE id = ?1")?
        .execute(params![run_id, position, armed, wake_us])?;
    t.run_now(run_id, None, armed);
    Ok(())
}

/// Ends a run; its messages pending review are cancelled.
fn end_run(
    conn: &Connection,
    t: &Tracked,
    run_id: i64,
    status: crate::model::RunStatus,
    reason: Option<crate::model::RunExit>,
    now_us: i64,
) -> SqlResult<()> {
    if t.know_run(conn, run_id)? {
        conn.prepare_cached(
            "UPDATE runs SET status = ?2, exit_reason = ?3, ended_us = ?4, wake_us = NULL,
                 armed = NULL
             WHERE id = ?1",
        )?
        .execute(params![
            run_id,
            status.as_str(),
            reason.map(crate::model::RunExit::as_str),
            now_us
        ])?;
        t.run_now(run_id, Some(status == RunStatus::Active), None);
    }
    // Read first (the transaction is the only writer): most runs end with none pending, and
    // then nothing is written.
    let pending = conn
        .prepare_cached(&pending_held_of_run_sql())?
        .query_map([run_id], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    if pending.is_empty() {
        return Ok(());
    }
    conn.prepare_cached(&cancel_held_of_run_sql())?
        .execute(params![run_id, now_us, HeldStatus::Cancelled.as_str()])?;
    let mut deltas = t.deltas.borrow_mut();
    for (flow_id, action_id) in pending {
        deltas.pending(&flow_id, &action_id, -1);
    }
    Ok(())
}

/// Parks the active runs of a flow (paused, draft), keeping their wake-ups aside, or wakes
/// them (live, manual): at their own wake-up if it is still ahead, else now. Only wake-ups
/// change: no live figure does.
pub(crate) fn park_runs(
    conn: &Connection,
    flow_id: &str,
    parked: bool,
    now_us: i64,
) -> SqlResult<()> {
    if parked {
        conn.prepare_cached(
            "UPDATE runs SET held_wake_us = wake_us, wake_us = NULL
             WHERE flow_id = ?1 AND status = ?2 AND wake_us IS NOT NULL",
        )?
        .execute(params![flow_id, RunStatus::Active.as_str()])?;
    } else {
        conn.prepare_cached(
            "UPDATE runs SET wake_us = MAX(COALESCE(held_wake_us, ?2), ?2), held_wake_us = NULL
             WHERE flow_id = ?1 AND status = ?3 AND wake_us IS NULL",
        )?
        .execute(params![flow_id, now_us, RunStatus::Active.as_str()])?;
    }
    Ok(())
}

/// Sets a run's next wake-up, leaving its position (and the figures).
pub(crate) fn delay_run(conn: &Connection, run_id: i64, wake_us: i64) -> SqlResult<()> {
    conn.prepare_cached("UPDATE runs SET wake_us = ?2 WHERE id = ?1")?
        .execute(params![run_id, wake_us])?;
    Ok(())
}

/// Parks one run of a flow that is not running (its figures stay).
pub(crate) fn hold_run(conn: &Connection, run_id: i64) -> SqlResult<()> {
    conn.prepare_cached("UPDATE runs SET held_wake_us = wake_us, wake_us = NULL WHERE id = ?1")?
        .execute([run_id])?;
    Ok(())
}

// Steps (idempotency records).

/// Where a step stands; stored as its lowercase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepState {
    /// Decided, its effect not yet carried out (or being tried again).
    Intent,
    /// A message waiting in the review queue.
    Held,
    /// Not carried out (skipped in review, expired, or nothing to do).
    Skipped,
    /// Carried out.
    Done,
    /// Given up on.
    Failed,
}

impl StepState {
    pub(crate) const ALL: [StepState; 5] = [
        StepState::Intent,
        StepState::Held,
        StepState::Skipped,
        StepState::Done,
        StepState::Failed,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            StepState::Intent => "intent",
            StepState::Held => "held",
            StepState::Skipped => "skipped",
            StepState::Done => "done",
            StepState::Failed => "failed",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<StepState> {
        StepState::ALL.into_iter().find(|state| state.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepRow {
    pub state: StepState,
    pub attempts: i64,
    pub detail: Option<String>,
}

pub(crate) fn step(conn: &Connection, key: &str) -> SqlResult<Option<StepRow>> {
    Ok(conn
        .prepare_cached("SELECT state, attempts, detail FROM steps WHERE key = ?1")?
        .query_row([key], |r| {
            let state: String = r.get(0)?;
            Ok(StepRow {
                state: StepState::parse(&state).ok_or_else(|| {
                    rusqlite::Error::FromSqlConversionFailure(
                        0,
                        rusqlite::types::Type::Text,
                        format!("unknown step state {state:?}").into(),
                    )
                })?,
                attempts: r.get(1)?,
                detail: r.get(2)?,
            })
        })
        .optional()?)
}

pub struct NewStep<'a> {
    pub key: &'a str,
    pub run_id: i64,
    pub flow_id: &'a str,
    pub action_id: &'a str,
    pub kind: &'a str,
    pub state: StepState,
    pub detail: Option<&'a str>,
    pub now_us: i64,
}

pub(crate) fn insert_step(conn: &Connection, s: &NewStep<'_>) -> SqlResult<()> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO steps (key, run_id, flow_id, action_id, kind, state, detail,
             created_us, done_us)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, CASE WHEN ?6 = 'intent' THEN NULL ELSE ?8 END)",
    )?
    .execute(params![
        s.key,
        s.run_id,
        s.flow_id,
        s.action_id,
        s.kind,
        s.state.as_str(),
        s.detail,
        s.now_us
    ])?;
    Ok(())
}

pub(crate) fn finish_step(
    conn: &Connection,
    key: &str,
    state: StepState,
    detail: Option<&str>,
    now_us: i64,
) -> SqlResult<()> {
    conn.prepare_cached(
        "UPDATE steps SET state = ?2, detail = ?3, done_us = ?4, attempts = attempts + 1
         WHERE key = ?1",
    )?
    .execute(params![key, state.as_str(), detail, now_us])?;
    Ok(())
}

pub(crate) fn retry_step(conn: &Connection, key: &str, detail: &str) -> SqlResult<i64> {
    conn.prepare_cached("UPDATE steps SET attempts = attempts + 1, detail = ?2 WHERE key = ?1")?
        .execute(params![key, detail])?;
    Ok(conn
        .prepare_cached("SELECT attempts FROM steps WHERE key = ?1")?
        .query_row([key], |r| r.get(0))?)
}

// Sends.

/// Whether the profile was sent (or is being sent) an email since `since_us`.
pub(crate) fn emailed_since(conn: &Connection, profile_pk: i64, since_us: i64) -> SqlResult<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT 1 FROM sends WHERE profile_pk = ?1 AND decided_us > ?2
             AND status IN (?3, ?4) LIMIT 1",
        )?
        .query_row(
            params![
                profile_pk,
                since_us,
                SendStatus::Pending.as_str(),
                SendStatus::Sent.as_str()
            ],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

pub struct NewSend<'a> {
    pub key: &'a str,
    pub flow_id: &'a str,
    pub action_id: &'a str,
    pub run_id: i64,
    pub profile_pk: i64,
    pub email: &'a str,
    pub now_us: i64,
}

pub(crate) fn insert_send(conn: &Connection, s: &NewSend<'_>) -> SqlResult<()> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO sends (key, flow_id, action_id, run_id, profile_pk, email, status,
             decided_us)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7)",
    )?
    .execute(params![
        s.key,
        s.flow_id,
        s.action_id,
        s.run_id,
        s.profile_pk,
        s.email,
        s.now_us
    ])?;
    Ok(())
}

pub(crate) fn finish_send(
    conn: &Connection,
    key: &str,
    status: crate::model::SendStatus,
    subject: Option<&str>,
    message_id: Option<&str>,
    detail: Option<&str>,
    now_us: i64,
) -> SqlResult<()> {
    conn.prepare_cached(
        "UPDATE sends SET status = ?2, subject = COALESCE(?3, subject),
             message_id = COALESCE(?4, message_id), detail = ?5, sent_us = ?6
         WHERE key = ?1",
    )?
    .execute(params![
        key,
        status.as_str(),
        subject,
        message_id,
        detail,
        now_us
    ])?;
    Ok(())
}

/// A send an engagement event points at.
pub struct SendRef {
    pub key: String,
    pub flow_id: String,
    pub action_id: String,
    pub opened: bool,
    pub clicked: bool,
    pub converted: bool,
}

fn send_ref(r: &rusqlite::Row<'_>) -> rusqlite::Result<SendRef> {
    Ok(SendRef {
        key: r.get(0)?,
        flow_id: r.get(1)?,
        action_id: r.get(2)?,
        opened: r.get::<_, Option<i64>>(3)?.is_some(),
        clicked: r.get::<_, Option<i64>>(4)?.is_some(),
        converted: r.get::<_, Option<i64>>(5)?.is_some(),
    })
}

pub(crate) fn send_by_key(conn: &Connection, key: &str) -> SqlResult<Option<SendRef>> {
    Ok(conn
        .prepare_cached(
            "SELECT key, flow_id, action_id, opened_us, clicked_us, converted_us FROM sends
             WHERE (key = ?1 OR message_id = ?1) AND status = ?2",
        )?
        .query_row(params![key, SendStatus::Sent.as_str()], send_ref)
        .optional()?)
}

/// The profile's latest delivered email sent in `[since_us, until_us]`.
pub(crate) fn latest_send(
    conn: &Connection,
    profile_pk: i64,
    since_us: i64,
    until_us: i64,
) -> SqlResult<Option<SendRef>> {
    Ok(conn
        .prepare_cached(
            "SELECT key, flow_id, action_id, opened_us, clicked_us, converted_us FROM sends
             WHERE profile_pk = ?1 AND status = ?4 AND sent_us >= ?2 AND sent_us <= ?3
             ORDER BY sent_us DESC LIMIT 1",
        )?
        .query_row(
            params![profile_pk, since_us, until_us, SendStatus::Sent.as_str()],
            send_ref,
        )
        .optional()?)
}

pub(crate) fn mark_send(
    conn: &Connection,
    key: &str,
    column: &str,
    at_us: i64,
    revenue: Option<f64>,
) -> SqlResult<()> {
    let sql = match column {
        "opened" => "UPDATE sends SET opened_us = ?2 WHERE key = ?1 AND opened_us IS NULL",
        "clicked" => "UPDATE sends SET clicked_us = ?2 WHERE key = ?1 AND clicked_us IS NULL",
        _ => "UPDATE sends SET converted_us = ?2, revenue = ?3 WHERE key = ?1 AND converted_us IS NULL",
    };
    if column == "converted" {
        conn.prepare_cached(sql)?
            .execute(params![key, at_us, revenue])?;
    } else {
        conn.prepare_cached(sql)?.execute(params![key, at_us])?;
    }
    Ok(())
}

// Webhooks.

pub(crate) fn upsert_webhook(
    conn: &Connection,
    key: &str,
    flow_id: &str,
    action_id: &str,
    run_id: i64,
    url: &str,
    now_us: i64,
) -> SqlResult<()> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO webhooks (key, flow_id, action_id, run_id, url, state, attempts,
             created_us)
         VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 0, ?6)",
    )?
    .execute(params![key, flow_id, action_id, run_id, url, now_us])?;
    Ok(())
}

/// Where a webhook delivery stands; stored as its lowercase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookState {
    /// Not yet delivered; tried again at `next_us`.
    Pending,
    /// The receiver took it.
    Delivered,
    /// Given up on; a dead letter holds it.
    Dead,
}

impl WebhookState {
    #[cfg(test)]
    const ALL: [WebhookState; 3] = [
        WebhookState::Pending,
        WebhookState::Delivered,
        WebhookState::Dead,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            WebhookState::Pending => "pending",
            WebhookState::Delivered => "delivered",
            WebhookState::Dead => "dead",
        }
    }

    #[cfg(test)]
    fn parse(s: &str) -> Option<WebhookState> {
        WebhookState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
    }
}

pub(crate) fn webhook_attempt(
    conn: &Connection,
    key: &str,
    state: WebhookState,
    status: Option<u16>,
    error: Option<&str>,
    next_us: Option<i64>,
    now_us: i64,
) -> SqlResult<i64> {
    conn.prepare_cached(
        "UPDATE webhooks SET state = ?2, attempts = attempts + 1, last_status = ?3,
             last_error = ?4, next_us = ?5, done_us = CASE WHEN ?2 = 'pending' THEN NULL ELSE ?6 END
         WHERE key = ?1",
    )?
    .execute(params![key, state.as_str(), status, error, next_us, now_us])?;
    Ok(conn
        .prepare_cached("SELECT attempts FROM webhooks WHERE key = ?1")?
        .query_row([key], |r| r.get(0))?)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn insert_dead_letter(
    conn: &Connection,
    key: &str,
    flow_id: &str,
    action_id: &str,
    run_id: i64,
    url: &str,
    body: &str,
    reason: &str,
    attempts: i64,
    now_us: i64,
) -> SqlResult<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO dead_letters (key, flow_id, action_id, run_id, url, body, reason,
             attempts, at_us)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        key, flow_id, action_id, run_id, url, body, reason, attempts, now_us
    ])?;
    Ok(())
}

// Messages held for review.

pub struct NewHeld<'a> {
    pub key: &'a str,
    pub flow_id: &'a str,
    pub action_id: &'a str,
    pub kind: &'a str,
    pub run_id: i64,
    pub profile_pk: i64,
    pub profile_id: &'a str,
    pub email: Option<&'a str>,
    pub subject: Option<&'a str>,
    pub now_us: i64,
    pub expires_us: i64,
}

/// Holds a message for review, pending; one of the same key changes nothing.
fn insert_held(conn: &Connection, t: &Tracked, h: &NewHeld<'_>) -> SqlResult<()> {
    let inserted = conn.prepare_cached(
        "INSERT OR IGNORE INTO held_messages (key, flow_id, action_id, kind, run_id, profile_pk,
             profile_id, email, subject, status, created_us, expires_us)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'pending', ?10, ?11)",
    )?
    .execute(params![
        h.key,
        h.flow_id,
        h.action_id,
        h.kind,
        h.run_id,
        h.profile_pk,
        h.profile_id,
        h.email,
        h.subject,
        h.now_us,
        h.expires_us
    ])?;
    if inserted > 0 {
        t.deltas.borrow_mut().pending(h.flow_id, h.action_id, 1);
    }
    Ok(())
}

const HELD_COLUMNS: &str = "id, flow_id, action_id, kind, run_id, profile_id, email, subject,
    status, created_us, expires_us, decided_us, key";

fn held_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(crate::model::HeldMessage, String)> {
    let status: String = r.get(8)?;
    Ok((
        crate::model::HeldMessage {
            id: r.get(0)?,
            flow_id: r.get(1)?,
            action_id: r.get(2)?,
            kind: r.get(3)?,
            run_id: r.get(4)?,
            profile_id: r.get(5)?,
            email: r.get(6)?,
            subject: r.get(7)?,
            status: crate::model::HeldStatus::parse(&status)
                .unwrap_or(crate::model::HeldStatus::Cancelled),
            created: crate::engine::ts(r.get(9)?),
            expires: crate::engine::ts(r.get(10)?),
            decided: r.get::<_, Option<i64>>(11)?.map(crate::engine::ts),
        },
        r.get(12)?,
    ))
}

/// A held message by its step key.
pub(crate) fn held_by_key(
    conn: &Connection,
    key: &str,
) -> SqlResult<Option<crate::model::HeldMessage>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {HELD_COLUMNS} FROM held_messages WHERE key = ?1"
        ))?
        .query_row([key], held_row)
        .optional()?
        .map(|(held, _)| held))
}

/// A held message by its id, with its step key.
pub(crate) fn held_by_id(
    conn: &Connection,
    id: i64,
) -> SqlResult<Option<(crate::model::HeldMessage, String)>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {HELD_COLUMNS} FROM held_messages WHERE id = ?1"
        ))?
        .query_row([id], held_row)
        .optional()?)
}

/// A flow's held messages with `status` (any when `None`) after id `after`, oldest first.
pub(crate) fn held_page(
    conn: &Connection,
    flow_id: &str,
    status: Option<crate::model::HeldStatus>,
    after: i64,
    limit: usize,
) -> SqlResult<Vec<crate::model::HeldMessage>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = match status {
        Some(status) => conn
            .prepare_cached(&format!(
                "SELECT {HELD_COLUMNS} FROM held_messages
                 WHERE flow_id = ?1 AND status = ?2 AND id > ?3 ORDER BY id LIMIT ?4"
            ))?
            .query_map(params![flow_id, status.as_str(), after, limit], held_row)?
            .collect::<Result<Vec<_>, _>>()?,
        None => conn
            .prepare_cached(&format!(
                "SELECT {HELD_COLUMNS} FROM held_messages
                 WHERE flow_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3"
            ))?
            .query_map(params![flow_id, after, limit], held_row)?
            .collect::<Result<Vec<_>, _>>()?,
    };
    Ok(rows.into_iter().map(|(held, _)| held).collect())
}

fn set_held_status(
    conn: &Connection,
    t: &Tracked,
    id: i64,
    status: crate::model::HeldStatus,
    now_us: i64,
) -> SqlResult<()> {
    let was = conn
        .prepare_cached("SELECT flow_id, action_id, status FROM held_messages WHERE id = ?1")?
        .query_row([id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get_ref(2)?.as_str()? == HeldStatus::Pending.as_str(),
            ))
        })
        .optional()?;
    let Some((flow_id, action_id, was_pending)) = was else {
        return Ok(());
    };
    conn.prepare_cached("UPDATE held_messages SET status = ?2, decided_us = ?3 WHERE id = ?1")?
        .execute(params![id, status.as_str(), now_us])?;
    t.deltas.borrow_mut().held_changed(
        &flow_id,
        &action_id,
        was_pending,
        status == HeldStatus::Pending,
    );
    Ok(())
}

/// Turns a held step into an intent: the worker carries it out like any other.
pub(crate) fn release_step(conn: &Connection, key: &str) -> SqlResult<()> {
    conn.prepare_cached("UPDATE steps SET state = ?2, done_us = NULL WHERE key = ?1")?
        .execute(params![key, StepState::Intent.as_str()])?;
    Ok(())
}

/// Wakes a run now, or, if its flow is parked, as soon as the flow runs again.
pub(crate) fn wake_run(conn: &Connection, run_id: i64, now_us: i64) -> SqlResult<()> {
    conn.prepare_cached(
        "UPDATE runs SET
             wake_us = CASE WHEN held_wake_us IS NULL THEN ?2 ELSE NULL END,
             held_wake_us = CASE WHEN held_wake_us IS NULL THEN NULL ELSE ?2 END
         WHERE id = ?1 AND status = ?3",
    )?
    .execute(params![run_id, now_us, RunStatus::Active.as_str()])?;
    Ok(())
}

/// Rows of two flows as a release before the live figures left them (schema version 3, no
/// figure in `stats`), for the tests of the one-time recount. `{runs}`, `{held}` and `{stats}`
/// name the tables (PostgreSQL prefixes them). Figures: F1 active 2, waiting at `d1` 1,
/// pending at `m1` 1; F2 active 1, waiting at `d2` 1.
#[cfg(test)]
pub(crate) fn rows_before_the_figures(runs: &str, held: &str, stats: &str) -> String {
    format!(
        "INSERT INTO {runs} (flow_id, profile_pk, profile_id, origin, trigger_properties,
             started_us, entered_us, position, armed, wake_us, status)
         VALUES ('F1', 1, 'p1', 'event:1', '{{}}', 0, 0, 'd1', 'd1', 5, 'active'),
                ('F1', 2, 'p2', 'event:2', '{{}}', 0, 0, 'm1', NULL, 9, 'active'),
                ('F1', 3, 'p3', 'event:3', '{{}}', 0, 0, 'd1', 'd1', NULL, 'completed'),
                ('F2', 4, 'p4', 'event:4', '{{}}', 0, 0, 'd2', 'd2', NULL, 'active');
         INSERT INTO {held} (key, flow_id, action_id, kind, run_id, profile_pk, profile_id,
             status, created_us, expires_us)
         VALUES ('h1', 'F1', 'm1', 'send-email', 2, 2, 'p2', 'pending', 0, 9),
                ('h2', 'F1', 'm1', 'send-email', 3, 3, 'p3', 'approved', 0, 9);
         INSERT INTO {stats} (flow_id, action_id, name, value, amount)
         VALUES ('F1', '', 'entered', 3, 0);"
    )
}

/// Checks the figures of [`rows_before_the_figures`], read through `store`.
#[cfg(test)]
pub(crate) fn assert_figures_of_the_rows_before(store: &dyn FlowStore) {
    let f1 = store.stats("F1").unwrap();
    for (name, value) in [
        ("active", 2),
        ("waiting", 1),
        ("pending", 1),
        ("entered", 3),
    ] {
        assert_eq!(f1.flow.counts.get(name), Some(&value), "F1 {name}");
    }
    assert_eq!(f1.action("d1").counts.get("waiting"), Some(&1));
    assert_eq!(f1.action("m1").counts.get("pending"), Some(&1));
    let f2 = store.stats("F2").unwrap();
    for (name, value) in [("active", 1), ("waiting", 1), ("pending", 0)] {
        assert_eq!(f2.flow.counts.get(name), Some(&value), "F2 {name}");
    }
    assert_eq!(f2.action("d2").counts.get("waiting"), Some(&1));
}

#[cfg(test)]
mod tests {
    use super::{
        assert_figures_of_the_rows_before, cancel_held_of_run_sql, due_runs_sql, next_wake_sql,
        pending_held_of_run_sql, rows_before_the_figures, Db, SqlResult, StepState, WebhookState,
        MIGRATIONS, STATS_SQL,
    };

    /// The query plan of `sql`, one detail a line.
    fn plan(db: &Db, sql: &str) -> String {
        db.read(|conn| -> SqlResult<String> {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
            let nulls = std::iter::repeat_n(rusqlite::types::Null, stmt.parameter_count());
            let details = stmt
                .query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(3))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(details.join("\n"))
        })
        .unwrap()
    }

    #[test]
    fn the_queries_over_a_partial_index_use_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("flows.db")).unwrap();
        for (sql, index) in [
            (due_runs_sql(), "runs_due"),
            (next_wake_sql(), "runs_due"),
            (cancel_held_of_run_sql(), "held_messages_run"),
            (pending_held_of_run_sql(), "held_messages_run"),
        ] {
            let plan = plan(&db, &sql);
            assert!(plan.contains(index), "{sql}\n{plan}");
        }
    }

    #[test]
    fn a_flows_figures_are_read_from_its_counters_alone() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("flows.db")).unwrap();
        // One search of `stats` by its key: neither runs nor held messages are counted.
        let plan = plan(&db, STATS_SQL);
        assert_eq!(plan.lines().count(), 1, "{plan}");
        assert!(plan.starts_with("SEARCH stats USING PRIMARY KEY"), "{plan}");
    }

    /// Creates `path` as a release with the first `version` migrations left it, with `sql`.
    fn old_file(path: &std::path::Path, version: usize, sql: &str) {
        let mut conn = rusqlite::Connection::open(path).unwrap();
        let tx = conn.transaction().unwrap();
        for migration in &MIGRATIONS[..version] {
            tx.execute_batch(migration).unwrap();
        }
        tx.pragma_update(None, "user_version", version).unwrap();
        tx.execute_batch(sql).unwrap();
        tx.commit().unwrap();
    }

    #[test]
    fn the_figures_are_counted_once_when_the_schema_first_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flows.db");
        old_file(
            &path,
            3,
            &rows_before_the_figures("runs", "held_messages", "stats"),
        );
        let db = Db::open(&path).unwrap();
        assert_figures_of_the_rows_before(&db);
    }

    #[test]
    fn a_schema_newer_than_the_build_is_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flows.db");
        drop(Db::open(&path).unwrap());
        // Opening the current schema again is fine.
        drop(Db::open(&path).unwrap());
        let newer = MIGRATIONS.len() + 1;
        rusqlite::Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", newer)
            .unwrap();
        let Err(err) = Db::open(&path) else {
            panic!("a newer schema was opened")
        };
        assert_eq!(
            err.to_string(),
            format!(
                "internal error: flows.db schema version {newer} is newer than this build knows ({})",
                MIGRATIONS.len()
            )
        );
    }

    #[test]
    fn every_step_state_round_trips_through_its_stored_text() {
        let texts: Vec<&str> = StepState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(texts, ["intent", "held", "skipped", "done", "failed"]);
        for state in StepState::ALL {
            assert_eq!(StepState::parse(state.as_str()), Some(state));
        }
        assert_eq!(StepState::parse("Done"), None);
        assert_eq!(StepState::parse(""), None);
    }

    #[test]
    fn every_webhook_state_round_trips_through_its_stored_text() {
        let texts: Vec<&str> = WebhookState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(texts, ["pending", "delivered", "dead"]);
        for state in WebhookState::ALL {
            assert_eq!(WebhookState::parse(state.as_str()), Some(state));
        }
        assert_eq!(WebhookState::parse("Dead"), None);
    }
}
