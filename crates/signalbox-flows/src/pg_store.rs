//! [`PgFlowStore`]: the flows engine's state in PostgreSQL, for several nodes on one database.
//!
//! The same tables as `flows.db`, prefixed `flows_`: times are microseconds since the Unix
//! epoch (`BIGINT`) as there, flow definitions `JSONB`. A run's trigger properties stay JSON
//! `TEXT`: they are an event's properties as sent, and JSONB refuses some strings JSON allows
//! (`\u0000`).
//!
//! Every write is one transaction on one pooled connection. Where the embedded store relies on
//! its single writer, this one locks rows: [`FlowWriter::claim_due`] takes due runs
//! `FOR UPDATE SKIP LOCKED`, so two nodes never move the same run; a flow's change and a
//! review decision lock their row first; action ids are reserved from a counter row.
//!
//! Several engines may share the store; only one at a time turns the change feed into runs:
//! the one that holds a session-level advisory lock ([`INGESTION_LOCK`]) on a connection kept
//! aside for it ([`FlowStore::lead_ingestion`]). The lock goes with that connection, so a node
//! that dies or loses the database hands the lead to the next engine that asks.
//!
//! The traits are synchronous; the store keeps the handle of the runtime it was connected on
//! and waits on the pool from the calling thread. **Invariant:** its methods are called from
//! blocking threads (`spawn_blocking`), never from a task of the runtime, where waiting would
//! panic. On a current-thread runtime they make progress only while that runtime's own thread
//! is inside `block_on` (as it is when it awaits the blocking task).

use std::cell::RefCell;
use std::future::Future;

use deadpool_postgres::{GenericClient, Object, PoolError};
use jiff::Timestamp;
use signalbox_core::PostgresUrl;
use signalbox_engage::feed::FeedCursor;
use signalbox_engage::ProfileKey;
use signalbox_store::postgres::{connect_pool, error_text, schema, BlockingPool};
use signalbox_store::StoreError;
use tokio::runtime::Handle;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use crate::definition::FlowDefinition;
use crate::engine::ts;
use crate::error::{FlowsError, FlowsResult};
use crate::figures::{self, FigureDeltas, RunFigure};
use crate::flow_store::{
    FlowChange, FlowStore, FlowWriter, NewFlow, NewHeld, NewRun, NewSend, NewStep, RunRow, SendRef,
    StepRow, StepState, WebhookState,
};
use crate::model::{
    DeadLetter, FlowInfo, FlowPage, FlowStats, FlowStatus, HeldMessage, HeldStatus, RunExit,
    RunInfo, RunStatus, SendInfo, SendStatus,
};

/// The component name under which the schema's version is kept.
const COMPONENT: &str = "flows";

/// The key of the advisory lock that makes one engine the ingestion lead (`"sbflows"`).
pub const INGESTION_LOCK: i64 = 0x0073_6266_6c6f_7773;

/// The first action id handed out.
const FIRST_ACTION_ID: i64 = 10_000_001;

const MIGRATIONS: &[&str] = &[
    r#"
    CREATE TABLE flows_meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE flows (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        status TEXT NOT NULL,
        archived BOOLEAN NOT NULL DEFAULT FALSE,
        version BIGINT NOT NULL,
        trigger_type TEXT NOT NULL,
        created_us BIGINT NOT NULL,
        updated_us BIGINT NOT NULL
    );
    CREATE INDEX flows_by_created ON flows (created_us, id);
    CREATE INDEX flows_by_updated ON flows (updated_us, id);
    CREATE TABLE flows_versions (
        flow_id TEXT NOT NULL,
        version BIGINT NOT NULL,
        definition JSONB NOT NULL,
        created_us BIGINT NOT NULL,
        PRIMARY KEY (flow_id, version)
    );
    -- One profile's way through one flow. `position` is the action it is at; `armed` the
    -- delay whose wake-up is set; `wake_us` when it is due (NULL: parked or finished).
    CREATE TABLE flows_runs (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        flow_id TEXT NOT NULL,
        profile_pk BIGINT NOT NULL,
        profile_id TEXT NOT NULL,
        -- What started it: `event:<id>`, `list:<pk>`, `segment:<cursor>`, `date:<us>`.
        origin TEXT NOT NULL,
        trigger_event_id TEXT,
        trigger_properties TEXT NOT NULL,
        started_us BIGINT NOT NULL,
        entered_us BIGINT NOT NULL,
        position TEXT,
        armed TEXT,
        wake_us BIGINT,
        -- The wake-up a paused flow holds back, restored when it runs again.
        held_wake_us BIGINT,
        status TEXT NOT NULL,
        exit_reason TEXT,
        ended_us BIGINT,
        UNIQUE (flow_id, origin)
    );
    CREATE INDEX flows_runs_due ON flows_runs (wake_us, id)
        WHERE status = 'active' AND wake_us IS NOT NULL;
    CREATE INDEX flows_runs_by_profile ON flows_runs (profile_pk);
    CREATE INDEX flows_runs_by_flow ON flows_runs (flow_id, id);
    CREATE INDEX flows_runs_active ON flows_runs (flow_id, armed) WHERE status = 'active';
    -- Last entry per flow and profile: re-entry and `profile-not-in-flow`.
    CREATE TABLE flows_entries (
        flow_id TEXT NOT NULL,
        profile_pk BIGINT NOT NULL,
        last_us BIGINT NOT NULL,
        PRIMARY KEY (flow_id, profile_pk)
    );
    CREATE INDEX flows_entries_by_profile ON flows_entries (profile_pk);
    -- The idempotency record of a side effect: `intent` before it starts, then `done`,
    -- `skipped` or `failed`.
    CREATE TABLE flows_steps (
        key TEXT PRIMARY KEY,
        run_id BIGINT NOT NULL,
        flow_id TEXT NOT NULL,
        action_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts BIGINT NOT NULL DEFAULT 0,
        detail TEXT,
        created_us BIGINT NOT NULL,
        done_us BIGINT
    );
    CREATE TABLE flows_sends (
        key TEXT PRIMARY KEY,
        flow_id TEXT NOT NULL,
        action_id TEXT NOT NULL,
        run_id BIGINT NOT NULL,
        profile_pk BIGINT NOT NULL,
        email TEXT NOT NULL,
        subject TEXT,
        message_id TEXT,
        -- pending, sent, bounced, failed
        status TEXT NOT NULL,
        detail TEXT,
        decided_us BIGINT NOT NULL,
        sent_us BIGINT,
        opened_us BIGINT,
        clicked_us BIGINT,
        converted_us BIGINT,
        revenue DOUBLE PRECISION
    );
    CREATE INDEX flows_sends_by_profile ON flows_sends (profile_pk, decided_us);
    CREATE INDEX flows_sends_by_message_id ON flows_sends (message_id);
    CREATE INDEX flows_sends_by_flow ON flows_sends (flow_id, decided_us, key);
    CREATE TABLE flows_webhooks (
        key TEXT PRIMARY KEY,
        flow_id TEXT NOT NULL,
        action_id TEXT NOT NULL,
        run_id BIGINT NOT NULL,
        url TEXT NOT NULL,
        -- pending, delivered, dead
        state TEXT NOT NULL,
        attempts BIGINT NOT NULL,
        last_status INTEGER,
        last_error TEXT,
        next_us BIGINT,
        created_us BIGINT NOT NULL,
        done_us BIGINT
    );
    CREATE TABLE flows_dead_letters (
        key TEXT PRIMARY KEY,
        flow_id TEXT NOT NULL,
        action_id TEXT NOT NULL,
        run_id BIGINT NOT NULL,
        url TEXT NOT NULL,
        body TEXT NOT NULL,
        reason TEXT NOT NULL,
        attempts BIGINT NOT NULL,
        at_us BIGINT NOT NULL
    );
    CREATE INDEX flows_dead_letters_by_flow ON flows_dead_letters (flow_id, at_us, key);
    -- Counters per flow ('' action) and per action: entered, completed, exited_filter,
    -- skipped:<reason>, sent, failed, bounced, opened, clicked, converted (+ revenue), …
    CREATE TABLE flows_stats (
        flow_id TEXT NOT NULL,
        action_id TEXT NOT NULL,
        name TEXT NOT NULL,
        value BIGINT NOT NULL,
        amount DOUBLE PRECISION NOT NULL DEFAULT 0,
        PRIMARY KEY (flow_id, action_id, name)
    );
    -- Date-triggered flows: the next trigger instant per profile.
    CREATE TABLE flows_date_schedule (
        flow_id TEXT NOT NULL,
        profile_pk BIGINT NOT NULL,
        next_us BIGINT NOT NULL,
        PRIMARY KEY (flow_id, profile_pk)
    );
    CREATE INDEX flows_date_schedule_due ON flows_date_schedule (next_us);
    CREATE INDEX flows_date_schedule_by_profile ON flows_date_schedule (profile_pk);
    -- Messages of `manual` actions and flows, held for review. The step (`key`) is `held`
    -- while the message is pending; its run waits on it, woken at `expires_us`.
    CREATE TABLE flows_held_messages (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        flow_id TEXT NOT NULL,
        action_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        run_id BIGINT NOT NULL,
        profile_pk BIGINT NOT NULL,
        profile_id TEXT NOT NULL,
        email TEXT,
        subject TEXT,
        -- pending, approved, skipped, expired, cancelled
        status TEXT NOT NULL,
        created_us BIGINT NOT NULL,
        expires_us BIGINT NOT NULL,
        decided_us BIGINT
    );
    CREATE INDEX flows_held_messages_by_flow ON flows_held_messages (flow_id, status, id);
    CREATE INDEX flows_held_messages_by_run ON flows_held_messages (run_id)
        WHERE status = 'pending';
    CREATE INDEX flows_held_messages_by_profile ON flows_held_messages (profile_pk);
"#,
    // The live figures (`crate::figures`) join the counters in `flows_stats`, counted once
    // here.
    RECOUNT_FIGURES,
];

/// Counts the live figures (`crate::figures`) of every flow again from the runs and held
/// messages, into `flows_stats`: when the schema first keeps them, and after `signalbox
/// migrate` copied the rows of a `flows.db` in.
const RECOUNT_FIGURES: &str = r#"
    DELETE FROM flows_stats WHERE name IN ('active', 'waiting', 'pending');
    INSERT INTO flows_stats (flow_id, action_id, name, value)
        SELECT flow_id, '', 'active', COUNT(*) FROM flows_runs WHERE status = 'active'
        GROUP BY flow_id;
    INSERT INTO flows_stats (flow_id, action_id, name, value)
        SELECT flow_id, armed, 'waiting', COUNT(*) FROM flows_runs
        WHERE status = 'active' AND armed IS NOT NULL GROUP BY flow_id, armed;
    INSERT INTO flows_stats (flow_id, action_id, name, value)
        SELECT flow_id, action_id, 'pending', COUNT(*) FROM flows_held_messages
        WHERE status = 'pending' GROUP BY flow_id, action_id;
"#;

/// A flow's counters and live figures: one read of `flows_stats`, nothing counted.
const STATS_SQL: &str = "SELECT action_id, name, value, amount FROM flows_stats WHERE flow_id = $1";

/// Counts the live figures of every flow in the database at `url` again, in one transaction
/// (see [`RECOUNT_FIGURES`]).
pub(crate) async fn recount_figures(url: &PostgresUrl) -> FlowsResult<()> {
    let pool = connect_pool(url, 1).map_err(store_error)?;
    let client = pool.get().await.map_err(pool_error)?;
    client.batch_execute(RECOUNT_FIGURES).await.map_err(pg)
}

/// The flows state in PostgreSQL behind [`FlowStore`]. Cheap to share behind an `Arc`.
pub struct PgFlowStore {
    db: Db,
    /// The connection that holds [`INGESTION_LOCK`], while this store leads.
    lead: std::sync::Mutex<Option<Object>>,
}

impl PgFlowStore {
    /// The tables the flows engine keeps in the database (as its migrations create them).
    pub fn tables() -> Vec<String> {
        schema::tables_created(MIGRATIONS)
    }

    /// Connects to the database at `url` with a pool of at most `pool_size` connections and
    /// brings the schema up to date; a schema newer than this build is refused. The store
    /// waits on the runtime this is called on.
    pub async fn connect(url: &PostgresUrl, pool_size: usize) -> FlowsResult<PgFlowStore> {
        let pool = connect_pool(url, pool_size).map_err(store_error)?;
        let mut client = pool.get().await.map_err(pool_error)?;
        schema::migrate(&mut client, COMPONENT, MIGRATIONS)
            .await
            .map_err(store_error)?;
        drop(client);
        Ok(PgFlowStore {
            db: Db {
                pool: BlockingPool::new(pool, Handle::current()),
            },
            lead: std::sync::Mutex::new(None),
        })
    }

    /// Runs `f` with a connection of its own, outside a transaction.
    fn read<T>(&self, f: impl FnOnce(&Session<'_>) -> FlowsResult<T>) -> FlowsResult<T> {
        let client = self.db.connection()?;
        f(&Session {
            db: &self.db,
            client: &client,
            figures: RefCell::default(),
        })
    }

    /// Runs `f` in one transaction: committed when it returns `Ok`, rolled back otherwise.
    /// The changes of the live figures it made are written just before the commit.
    fn write<T>(&self, f: impl FnOnce(&Session<'_>) -> FlowsResult<T>) -> FlowsResult<T> {
        let mut tx = OpenTransaction::begin(&self.db)?;
        let session = Session {
            db: &self.db,
            client: tx.client(),
            figures: RefCell::default(),
        };
        let out = f(&session).and_then(|value| {
            session.flush_figures()?;
            Ok(value)
        });
        drop(session);
        match out {
            Ok(value) => {
                tx.finish("COMMIT")?;
                Ok(value)
            }
            Err(err) => {
                if let Err(rollback) = tx.finish("ROLLBACK") {
                    tracing::warn!(error = %rollback, "flows transaction not rolled back");
                }
                Err(err)
            }
        }
    }
}

impl Drop for PgFlowStore {
    /// The lead's connection is closed, not pooled: the lock goes with its session.
    fn drop(&mut self) {
        if let Some(client) = self.lead.get_mut().ok().and_then(Option::take) {
            drop(Object::take(client));
        }
    }
}

fn store_error(err: StoreError) -> FlowsError {
    match err {
        StoreError::SchemaTooNew { found, known, .. } => FlowsError::Internal(format!(
            "flows database schema version {found} is newer than this build knows ({known})"
        )),
        other => FlowsError::Internal(other.to_string()),
    }
}

fn pool_error(err: PoolError) -> FlowsError {
    tracing::warn!(error = %err, "no flows database connection");
    FlowsError::Internal(format!("no database connection: {err}"))
}

/// A PostgreSQL error as text (the server's message when it sent one).
fn pg(err: tokio_postgres::Error) -> FlowsError {
    FlowsError::Internal(error_text(&err, "flows"))
}

fn limit_of(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// The pool and the runtime it runs on.
struct Db {
    pool: BlockingPool,
}

impl Db {
    /// Waits for `fut` on the store's runtime from this (blocking) thread.
    fn wait<F: Future>(&self, fut: F) -> F::Output {
        self.pool.wait(fut)
    }

    fn connection(&self) -> FlowsResult<Object> {
        self.pool.get().map_err(pool_error)
    }
}

/// A connection with a transaction open. Dropped unfinished (a panic), the connection is
/// closed rather than pooled, so the server rolls the transaction back.
struct OpenTransaction<'a> {
    db: &'a Db,
    client: Option<Object>,
}

impl<'a> OpenTransaction<'a> {
    fn begin(db: &'a Db) -> FlowsResult<OpenTransaction<'a>> {
        let client = db.connection()?;
        db.wait(client.batch_execute("BEGIN")).map_err(pg)?;
        Ok(OpenTransaction {
            db,
            client: Some(client),
        })
    }

    fn client(&self) -> &Object {
        self.client.as_ref().expect("an open transaction")
    }

    /// Ends the transaction with `sql` (`COMMIT` or `ROLLBACK`).
    fn finish(&mut self, sql: &str) -> FlowsResult<()> {
        let Some(client) = self.client.take() else {
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

impl Drop for OpenTransaction<'_> {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            drop(Object::take(client));
        }
    }
}

/// Statements on one connection: the writer inside a transaction, or a read outside one.
struct Session<'a> {
    db: &'a Db,
    client: &'a Object,
    /// The changes of the live figures the transaction made, written before it commits.
    figures: RefCell<FigureDeltas>,
}

impl Session<'_> {
    fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> FlowsResult<Vec<Row>> {
        self.db
            .wait(async {
                let stmt = self.client.prepare_cached(sql).await?;
                self.client.query(&stmt, params).await
            })
            .map_err(pg)
    }

    fn query_opt(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> FlowsResult<Option<Row>> {
        self.db
            .wait(async {
                let stmt = self.client.prepare_cached(sql).await?;
                self.client.query_opt(&stmt, params).await
            })
            .map_err(pg)
    }

    fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> FlowsResult<u64> {
        self.db
            .wait(async {
                let stmt = self.client.prepare_cached(sql).await?;
                self.client.execute(&stmt, params).await
            })
            .map_err(pg)
    }

    fn exec(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> FlowsResult<()> {
        self.execute(sql, params).map(drop)
    }

    fn batch(&self, sql: &str) -> FlowsResult<()> {
        self.db.wait(self.client.batch_execute(sql)).map_err(pg)
    }

    /// Writes the transaction's changes of the live figures into `flows_stats`: one
    /// statement, its rows in key order.
    fn flush_figures(&self) -> FlowsResult<()> {
        let deltas = self.figures.borrow_mut().take();
        if deltas.is_empty() {
            return Ok(());
        }
        let mut flows = Vec::with_capacity(deltas.len());
        let mut actions = Vec::with_capacity(deltas.len());
        let mut names = Vec::with_capacity(deltas.len());
        let mut values = Vec::with_capacity(deltas.len());
        for (flow_id, action_id, name, by) in deltas {
            flows.push(flow_id);
            actions.push(action_id);
            names.push(name);
            values.push(by);
        }
        self.exec(
            "INSERT INTO flows_stats (flow_id, action_id, name, value)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[])
             ON CONFLICT (flow_id, action_id, name)
             DO UPDATE SET value = flows_stats.value + EXCLUDED.value",
            &[&flows, &actions, &names, &values],
        )
    }

    /// Flows at their current version, `filter` (a `WHERE`, `ORDER BY`, `LIMIT`, `FOR
    /// UPDATE` tail over `flows f`) choosing which and in what order.
    fn flows_where(
        &self,
        filter: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> FlowsResult<Vec<FlowInfo>> {
        let rows = self.query(
            &format!(
                "SELECT f.id, f.name, f.status, f.archived, f.version, f.created_us, f.updated_us,
                        v.definition::text
                 FROM flows f
                 JOIN flows_versions v ON v.flow_id = f.id AND v.version = f.version
                 {filter}"
            ),
            params,
        )?;
        rows.iter().map(flow_row).collect()
    }

    /// Real action ids for the definition's temporary ones: decimal numbers reserved from a
    /// counter row, unique across flows and nodes (the row stays locked until commit).
    fn assign_action_ids(&self, definition: &mut FlowDefinition) -> FlowsResult<()> {
        let wanted = definition.actions.iter().filter(|a| a.temporary).count();
        if wanted == 0 {
            return Ok(());
        }
        let wanted = i64::try_from(wanted).unwrap_or(i64::MAX);
        let row = self.query_opt(
            "INSERT INTO flows_meta (key, value)
             VALUES ('next_action_id', ($1::bigint + $2::bigint)::text)
             ON CONFLICT (key)
             DO UPDATE SET value = (flows_meta.value::bigint + $2::bigint)::text
             RETURNING value::bigint - $2::bigint",
            &[&FIRST_ACTION_ID, &wanted],
        )?;
        let mut next: i64 = row
            .map(|row| row.get(0))
            .ok_or_else(|| FlowsError::Internal("no action ids reserved".into()))?;
        definition.assign_ids(|| {
            let id = next.to_string();
            next += 1;
            id
        });
        Ok(())
    }

    /// Parks the active runs of a flow (paused, draft), keeping their wake-ups aside, or wakes
    /// them (live, manual): at their own wake-up if it is still ahead, else now.
    fn park_runs(&self, flow_id: &str, parked: bool, now_us: i64) -> FlowsResult<()> {
        if parked {
            self.exec(&park_sql(), &[&flow_id])
        } else {
            self.exec(&unpark_sql(), &[&flow_id, &now_us])
        }
    }

    /// Wakes a run now, or, if its flow is parked, as soon as the flow runs again.
    fn wake_run(&self, run_id: i64, now_us: i64) -> FlowsResult<()> {
        self.exec(
            "UPDATE flows_runs SET
                 wake_us = CASE WHEN held_wake_us IS NULL THEN $2::bigint ELSE NULL END,
                 held_wake_us = CASE WHEN held_wake_us IS NULL THEN NULL ELSE $2::bigint END
             WHERE id = $1 AND status = $3",
            &[&run_id, &now_us, &RunStatus::Active.as_str()],
        )
    }

    /// A held message by its id, with its step key; `lock` takes its row until commit.
    fn held_by_id(&self, id: i64, lock: bool) -> FlowsResult<Option<(HeldMessage, String)>> {
        let lock = if lock { "FOR UPDATE" } else { "" };
        let row = self.query_opt(
            &format!("SELECT {HELD_COLUMNS} FROM flows_held_messages WHERE id = $1 {lock}"),
            &[&id],
        )?;
        Ok(row.as_ref().map(held_row))
    }
}

// The queries below spell a status out rather than bind it: a partial index names it
// (`flows_runs_due`, `flows_runs_active`, `flows_held_messages_by_run`), and PostgreSQL uses
// such an index only for a query whose condition implies the index's. A test checks that
// each one can use its index.

/// Due active runs, soonest first, locked (`$1` now, `$2` limit). Rows another transaction
/// claimed are skipped, not waited for: two nodes never move the same run, and neither waits
/// for the other's batch.
fn claim_due_sql() -> String {
    format!(
        "SELECT id, flow_id, profile_pk, profile_id, trigger_event_id, trigger_properties,
                started_us, position, armed
         FROM flows_runs
         WHERE status = '{active}' AND wake_us IS NOT NULL AND wake_us <= $1
         ORDER BY wake_us, id LIMIT $2
         FOR UPDATE SKIP LOCKED",
        active = RunStatus::Active.as_str()
    )
}

/// The earliest wake-up of an active run, or of a date trigger.
fn next_wake_sql() -> String {
    format!(
        "SELECT LEAST(
             (SELECT MIN(wake_us) FROM flows_runs
              WHERE status = '{active}' AND wake_us IS NOT NULL),
             (SELECT MIN(next_us) FROM flows_date_schedule))",
        active = RunStatus::Active.as_str()
    )
}

/// Cancels a run's messages waiting for review (`$1` run, `$2` now, `$3` cancelled); returns
/// the flow and action of each.
fn cancel_held_of_run_sql() -> String {
    format!(
        "UPDATE flows_held_messages SET status = $3, decided_us = $2
         WHERE run_id = $1 AND status = '{pending}'
         RETURNING flow_id, action_id",
        pending = HeldStatus::Pending.as_str()
    )
}

/// Parks a flow's active runs, keeping their wake-ups aside (`$1` flow). Only wake-ups
/// change: no live figure does.
fn park_sql() -> String {
    format!(
        "UPDATE flows_runs SET held_wake_us = wake_us, wake_us = NULL
         WHERE flow_id = $1 AND status = '{active}' AND wake_us IS NOT NULL",
        active = RunStatus::Active.as_str()
    )
}

/// Gives a flow's parked runs their wake-ups back, none earlier than now (`$1` flow, `$2`
/// now).
fn unpark_sql() -> String {
    format!(
        "UPDATE flows_runs
         SET wake_us = GREATEST(COALESCE(held_wake_us, $2), $2), held_wake_us = NULL
         WHERE flow_id = $1 AND status = '{active}' AND wake_us IS NULL",
        active = RunStatus::Active.as_str()
    )
}

fn flow_row(row: &Row) -> FlowsResult<FlowInfo> {
    let id: String = row.get(0);
    let status: &str = row.get(2);
    let json: serde_json::Value = serde_json::from_str(row.get(7))
        .map_err(|e| FlowsError::Internal(format!("stored definition of {id}: {e}")))?;
    let definition = FlowDefinition::parse(&json).map_err(|problems| {
        FlowsError::Internal(format!(
            "stored definition of {id} no longer parses: {problems:?}"
        ))
    })?;
    Ok(FlowInfo {
        name: row.get(1),
        status: FlowStatus::parse(status).unwrap_or(FlowStatus::Draft),
        archived: row.get(3),
        trigger_type: definition.trigger.type_name(),
        version: row.get(4),
        created: ts(row.get(5)),
        updated: ts(row.get(6)),
        definition,
        id,
    })
}

/// A run's figure from a row of `flow_id`, `status`, `armed` (as it was before a change).
fn run_figure(row: &Row) -> RunFigure {
    RunFigure {
        flow_id: row.get(0),
        active: row.get::<_, &str>(1) == RunStatus::Active.as_str(),
        armed: row.get(2),
    }
}

fn corrupt(what: &str, text: &str) -> FlowsError {
    FlowsError::Internal(format!("unknown {what} {text:?}"))
}

const HELD_COLUMNS: &str = "id, flow_id, action_id, kind, run_id, profile_id, email, subject,
    status, created_us, expires_us, decided_us, key";

fn held_row(row: &Row) -> (HeldMessage, String) {
    (
        HeldMessage {
            id: row.get(0),
            flow_id: row.get(1),
            action_id: row.get(2),
            kind: row.get(3),
            run_id: row.get(4),
            profile_id: row.get(5),
            email: row.get(6),
            subject: row.get(7),
            status: HeldStatus::parse(row.get(8)).unwrap_or(HeldStatus::Cancelled),
            created: ts(row.get(9)),
            expires: ts(row.get(10)),
            decided: row.get::<_, Option<i64>>(11).map(ts),
        },
        row.get(12),
    )
}

fn send_ref(row: &Row) -> SendRef {
    SendRef {
        key: row.get(0),
        flow_id: row.get(1),
        action_id: row.get(2),
        opened: row.get::<_, Option<i64>>(3).is_some(),
        clicked: row.get::<_, Option<i64>>(4).is_some(),
        converted: row.get::<_, Option<i64>>(5).is_some(),
    }
}

const FEED_CURSOR: &str = "feed_cursor";

fn cursor_text(cursor: &FeedCursor) -> FlowsResult<String> {
    serde_json::to_string(cursor).map_err(|e| FlowsError::Internal(format!("feed cursor: {e}")))
}

impl FlowStore for PgFlowStore {
    fn create_flow(
        &self,
        flow: &NewFlow<'_>,
        mut definition: FlowDefinition,
    ) -> FlowsResult<FlowDefinition> {
        let now = flow.now.as_microsecond();
        self.write(|s| {
            s.assign_action_ids(&mut definition)?;
            s.exec(
                "WITH flow AS (
                     INSERT INTO flows (id, name, status, version, trigger_type, created_us,
                                        updated_us)
                     VALUES ($1, $2, $3, 1, $4, $5, $5))
                 INSERT INTO flows_versions (flow_id, version, definition, created_us)
                 VALUES ($1, 1, $6::text::jsonb, $5)",
                &[
                    &flow.id,
                    &flow.name,
                    &flow.status.as_str(),
                    &definition.trigger.type_name(),
                    &now,
                    &definition.to_stored_json().to_string(),
                ],
            )
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
        self.write(|s| {
            // Changes of one flow take turns.
            let current = s
                .flows_where("WHERE f.id = $1 FOR UPDATE OF f", &[&flow_id])?
                .pop()
                .ok_or_else(|| FlowsError::not_found(format!("flow {flow_id}")))?;
            let change = change(&current)?;
            let mut version = current.version;
            let mut trigger_type = current.trigger_type;
            if let Some(mut def) = change.definition {
                s.assign_action_ids(&mut def)?;
                version += 1;
                trigger_type = def.trigger.type_name();
                s.exec(
                    "INSERT INTO flows_versions (flow_id, version, definition, created_us)
                     VALUES ($1, $2, $3::text::jsonb, $4)",
                    &[&flow_id, &version, &def.to_stored_json().to_string(), &now],
                )?;
            }
            let status = change.status.unwrap_or(current.status);
            let archived = change.archived.unwrap_or(current.archived);
            s.exec(
                "UPDATE flows SET name = $2, status = $3, archived = $4, version = $5,
                     trigger_type = $6, updated_us = $7
                 WHERE id = $1",
                &[
                    &flow_id,
                    &change.name.as_deref().unwrap_or(&current.name),
                    &status.as_str(),
                    &archived,
                    &version,
                    &trigger_type,
                    &now,
                ],
            )?;
            let running = status.is_running() && !archived;
            if !running {
                s.park_runs(flow_id, true, now)?;
            }
            Ok(running)
        })
    }

    fn unpark_runs(&self, flow_id: &str, now: Timestamp) -> FlowsResult<()> {
        self.write(|s| s.park_runs(flow_id, false, now.as_microsecond()))
    }

    fn delete_flow(&self, flow_id: &str, now: Timestamp) -> FlowsResult<()> {
        let now = now.as_microsecond();
        self.write(|s| {
            let deleted = s.execute("DELETE FROM flows WHERE id = $1", &[&flow_id])?;
            if deleted == 0 {
                return Err(FlowsError::not_found(format!("flow {flow_id}")));
            }
            s.exec("DELETE FROM flows_versions WHERE flow_id = $1", &[&flow_id])?;
            s.exec(
                "DELETE FROM flows_date_schedule WHERE flow_id = $1",
                &[&flow_id],
            )?;
            // The figures lose the rows each statement changed, by the action they counted at.
            let cancelled = s.query(
                "WITH cancelled AS (
                     UPDATE flows_held_messages SET status = $3, decided_us = $2
                     WHERE flow_id = $1 AND status = $4
                     RETURNING action_id)
                 SELECT action_id, COUNT(*) FROM cancelled GROUP BY action_id",
                &[
                    &flow_id,
                    &now,
                    &HeldStatus::Cancelled.as_str(),
                    &HeldStatus::Pending.as_str(),
                ],
            )?;
            let ended = s.query(
                &format!(
                    "WITH ended AS (
                         UPDATE flows_runs
                         SET status = $3, exit_reason = $4, ended_us = $2, wake_us = NULL
                         WHERE flow_id = $1 AND status = '{active}'
                         RETURNING armed)
                     SELECT armed, COUNT(*) FROM ended GROUP BY armed",
                    active = RunStatus::Active.as_str()
                ),
                &[
                    &flow_id,
                    &now,
                    &RunStatus::Cancelled.as_str(),
                    &RunExit::FlowDeleted.as_str(),
                ],
            )?;
            let mut deltas = s.figures.borrow_mut();
            for row in &cancelled {
                deltas.pending(flow_id, row.get(0), -row.get::<_, i64>(1));
            }
            for row in &ended {
                deltas.run(flow_id, true, row.get(0), -row.get::<_, i64>(1));
            }
            Ok(())
        })
    }

    fn feed_cursor(&self) -> FlowsResult<Option<FeedCursor>> {
        let text = self.read(|s| s.get_meta(FEED_CURSOR))?;
        Ok(text.and_then(|text| serde_json::from_str(&text).ok()))
    }

    fn start_feed_at(&self, cursor: &FeedCursor) -> FlowsResult<()> {
        let text = cursor_text(cursor)?;
        self.read(|s| {
            s.exec(
                "INSERT INTO flows_meta (key, value) VALUES ($1, $2)
                 ON CONFLICT (key) DO NOTHING",
                &[&FEED_CURSOR, &text],
            )
        })
    }

    fn transaction(
        &self,
        f: &mut dyn FnMut(&dyn FlowWriter) -> FlowsResult<()>,
    ) -> FlowsResult<()> {
        self.write(|s| f(s))
    }

    fn next_wake(&self) -> FlowsResult<Option<i64>> {
        self.read(|s| {
            let row = s.query_opt(&next_wake_sql(), &[])?;
            Ok(row.and_then(|row| row.get(0)))
        })
    }

    fn lead_ingestion(&self) -> FlowsResult<bool> {
        let mut lead = self.lead.lock().expect("lead lock");
        if let Some(client) = lead.as_ref() {
            if !client.is_closed() {
                return Ok(true);
            }
            tracing::warn!("lost the connection that held the flows ingestion lead");
            if let Some(client) = lead.take() {
                drop(Object::take(client));
            }
        }
        let client = self.db.connection()?;
        let row = self
            .db
            .wait(client.query_one("SELECT pg_try_advisory_lock($1)", &[&INGESTION_LOCK]))
            .map_err(pg)?;
        if row.get::<_, bool>(0) {
            tracing::info!("this node now turns the change feed into flow runs");
            *lead = Some(client);
            Ok(true)
        } else {
            Ok(false)
        }
    }

    fn release_ingestion(&self) -> FlowsResult<()> {
        let Some(client) = self.lead.lock().expect("lead lock").take() else {
            return Ok(());
        };
        let unlocked = self
            .db
            .wait(client.execute("SELECT pg_advisory_unlock($1)", &[&INGESTION_LOCK]));
        // Closed rather than pooled: whatever the unlock did, the session's locks go with it.
        drop(Object::take(client));
        unlocked.map(|_| ()).map_err(pg)
    }

    fn due_dates(&self, now_us: i64, limit: usize) -> FlowsResult<Vec<(String, i64, i64)>> {
        self.read(|s| {
            let rows = s.query(
                "SELECT flow_id, profile_pk, next_us FROM flows_date_schedule
                 WHERE next_us <= $1 ORDER BY next_us, flow_id, profile_pk LIMIT $2",
                &[&now_us, &limit_of(limit)],
            )?;
            Ok(rows
                .iter()
                .map(|row| (row.get(0), row.get(1), row.get(2)))
                .collect())
        })
    }

    fn membership_cursor(&self) -> FlowsResult<i64> {
        Ok(self
            .read(|s| s.get_meta("membership_cursor"))?
            .and_then(|text| text.parse().ok())
            .unwrap_or(0))
    }

    fn meta(&self, key: &str) -> FlowsResult<Option<String>> {
        self.read(|s| s.get_meta(key))
    }

    fn flow(&self, id: &str) -> FlowsResult<Option<FlowInfo>> {
        self.read(|s| Ok(s.flows_where("WHERE f.id = $1", &[&id])?.pop()))
    }

    fn flows(&self) -> FlowsResult<Vec<FlowInfo>> {
        self.read(|s| s.flows_where("ORDER BY f.created_us, f.id", &[]))
    }

    fn flows_page(&self, after: Option<(i64, &str)>, limit: usize) -> FlowsResult<FlowPage> {
        let limit = limit.max(1);
        let fetch = limit_of(limit.saturating_add(1));
        let mut flows = self.read(|s| match after {
            None => s.flows_where("ORDER BY f.updated_us DESC, f.id DESC LIMIT $1", &[&fetch]),
            Some((updated, id)) => s.flows_where(
                "WHERE (f.updated_us, f.id) < ($1, $2)
                 ORDER BY f.updated_us DESC, f.id DESC LIMIT $3",
                &[&updated, &id, &fetch],
            ),
        })?;
        let more = flows.len() > limit;
        flows.truncate(limit);
        let next = if more {
            flows
                .last()
                .map(|f| format!("{}.{}", f.updated.as_microsecond(), f.id))
        } else {
            None
        };
        Ok(FlowPage { flows, next })
    }

    fn stats(&self, flow_id: &str) -> FlowsResult<FlowStats> {
        self.read(|s| {
            let mut stats = FlowStats::default();
            for row in &s.query(STATS_SQL, &[&flow_id])? {
                figures::add_row(&mut stats, row.get(0), row.get(1), row.get(2), row.get(3));
            }
            figures::finish(&mut stats);
            Ok(stats)
        })
    }

    #[cfg(feature = "conformance")]
    fn count_figures(&self, flow_id: &str) -> FlowsResult<FlowStats> {
        self.read(|s| {
            let rows = s.query(
                "SELECT '', 'active', COUNT(*) FROM flows_runs
                 WHERE flow_id = $1 AND status = $2
                 UNION ALL
                 SELECT armed, 'waiting', COUNT(*) FROM flows_runs
                 WHERE flow_id = $1 AND status = $2 AND armed IS NOT NULL GROUP BY armed
                 UNION ALL
                 SELECT action_id, 'pending', COUNT(*) FROM flows_held_messages
                 WHERE flow_id = $1 AND status = $3 GROUP BY action_id",
                &[
                    &flow_id,
                    &RunStatus::Active.as_str(),
                    &HeldStatus::Pending.as_str(),
                ],
            )?;
            let mut stats = FlowStats::default();
            for row in &rows {
                figures::add_row(&mut stats, row.get(0), row.get(1), row.get(2), 0.0);
            }
            figures::finish(&mut stats);
            Ok(stats)
        })
    }

    fn runs(&self, flow_id: &str, limit: usize) -> FlowsResult<Vec<RunInfo>> {
        self.read(|s| {
            let rows = s.query(
                "SELECT id, flow_id, profile_id, trigger_event_id, started_us, position,
                        wake_us, status, exit_reason
                 FROM flows_runs WHERE flow_id = $1 ORDER BY id DESC LIMIT $2",
                &[&flow_id, &limit_of(limit)],
            )?;
            rows.iter()
                .map(|row| {
                    let status: &str = row.get(7);
                    let exit: Option<&str> = row.get(8);
                    Ok(RunInfo {
                        id: row.get(0),
                        flow_id: row.get(1),
                        profile_id: row.get(2),
                        trigger_event_id: row.get(3),
                        started: ts(row.get(4)),
                        position: row.get(5),
                        next_wake: row.get::<_, Option<i64>>(6).map(ts),
                        status: RunStatus::parse(status)
                            .ok_or_else(|| corrupt("run status", status))?,
                        exit_reason: exit
                            .map(|text| {
                                RunExit::parse(text).ok_or_else(|| corrupt("run exit reason", text))
                            })
                            .transpose()?,
                    })
                })
                .collect()
        })
    }

    fn sends(&self, flow_id: &str) -> FlowsResult<Vec<SendInfo>> {
        self.read(|s| {
            let rows = s.query(
                "SELECT key, flow_id, action_id, profile_pk, email, subject, message_id,
                        status, detail
                 FROM flows_sends WHERE flow_id = $1 ORDER BY decided_us, key",
                &[&flow_id],
            )?;
            rows.iter()
                .map(|row| {
                    let status: &str = row.get(7);
                    Ok(SendInfo {
                        key: row.get(0),
                        flow_id: row.get(1),
                        action_id: row.get(2),
                        profile_pk: ProfileKey(row.get(3)),
                        email: row.get(4),
                        subject: row.get(5),
                        message_id: row.get(6),
                        status: SendStatus::parse(status)
                            .ok_or_else(|| corrupt("send status", status))?,
                        detail: row.get(8),
                    })
                })
                .collect()
        })
    }

    fn dead_letters(&self, flow_id: &str) -> FlowsResult<Vec<DeadLetter>> {
        self.read(|s| {
            let rows = s.query(
                "SELECT key, flow_id, action_id, url, body, reason, attempts, at_us
                 FROM flows_dead_letters WHERE flow_id = $1 ORDER BY at_us, key",
                &[&flow_id],
            )?;
            Ok(rows
                .iter()
                .map(|row| DeadLetter {
                    key: row.get(0),
                    flow_id: row.get(1),
                    action_id: row.get(2),
                    url: row.get(3),
                    body: row.get(4),
                    reason: row.get(5),
                    attempts: row.get(6),
                    at: ts(row.get(7)),
                })
                .collect())
        })
    }

    fn held_messages(
        &self,
        flow_id: &str,
        status: Option<HeldStatus>,
        after: i64,
        limit: usize,
    ) -> FlowsResult<Vec<HeldMessage>> {
        let limit = limit_of(limit);
        let rows = self.read(|s| match status {
            Some(status) => s.query(
                &format!(
                    "SELECT {HELD_COLUMNS} FROM flows_held_messages
                     WHERE flow_id = $1 AND status = $2 AND id > $3 ORDER BY id LIMIT $4"
                ),
                &[&flow_id, &status.as_str(), &after, &limit],
            ),
            None => s.query(
                &format!(
                    "SELECT {HELD_COLUMNS} FROM flows_held_messages
                     WHERE flow_id = $1 AND id > $2 ORDER BY id LIMIT $3"
                ),
                &[&flow_id, &after, &limit],
            ),
        })?;
        Ok(rows.iter().map(|row| held_row(row).0).collect())
    }

    fn held_message(&self, id: i64) -> FlowsResult<Option<HeldMessage>> {
        self.read(|s| Ok(s.held_by_id(id, false)?.map(|(held, _)| held)))
    }

    fn decide_held(
        &self,
        flow_id: &str,
        id: i64,
        to: HeldStatus,
        now: Timestamp,
    ) -> FlowsResult<HeldMessage> {
        let now_us = now.as_microsecond();
        self.write(|s| {
            // Decisions on one message take turns.
            let (held, key) = s
                .held_by_id(id, true)?
                .filter(|(held, _)| held.flow_id == flow_id)
                .ok_or_else(|| FlowsError::not_found(format!("message {id} of flow {flow_id}")))?;
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
                });
            }
            if now >= held.expires {
                return Err(FlowsError::Conflict {
                    reason: format!(
                        "message {id} expired at {} and cannot be {verb}",
                        held.expires
                    ),
                });
            }
            s.set_held_status(id, to, now_us)?;
            let counter = if to == HeldStatus::Skipped {
                s.finish_step(&key, StepState::Skipped, Some("manual"), now_us)?;
                "skipped:manual"
            } else {
                "approved"
            };
            s.bump(flow_id, &held.action_id, counter, 1, 0.0)?;
            s.bump(flow_id, "", counter, 1, 0.0)?;
            s.wake_run(held.run_id, now_us)?;
            Ok(HeldMessage {
                status: to,
                decided: Some(now),
                ..held
            })
        })
    }
}

impl FlowWriter for Session<'_> {
    fn bump(
        &self,
        flow_id: &str,
        action_id: &str,
        name: &str,
        by: i64,
        amount: f64,
    ) -> FlowsResult<()> {
        self.exec(
            "INSERT INTO flows_stats (flow_id, action_id, name, value, amount)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (flow_id, action_id, name) DO UPDATE
             SET value = flows_stats.value + EXCLUDED.value,
                 amount = flows_stats.amount + EXCLUDED.amount",
            &[&flow_id, &action_id, &name, &by, &amount],
        )
    }

    fn delay_run(&self, run_id: i64, wake_us: i64) -> FlowsResult<()> {
        self.exec(
            "UPDATE flows_runs SET wake_us = $2 WHERE id = $1",
            &[&run_id, &wake_us],
        )
    }

    fn emailed_since(&self, profile_pk: i64, since_us: i64) -> FlowsResult<bool> {
        Ok(self
            .query_opt(
                "SELECT 1 FROM flows_sends WHERE profile_pk = $1 AND decided_us > $2
                 AND status IN ($3, $4) LIMIT 1",
                &[
                    &profile_pk,
                    &since_us,
                    &SendStatus::Pending.as_str(),
                    &SendStatus::Sent.as_str(),
                ],
            )?
            .is_some())
    }

    fn end_run(
        &self,
        run_id: i64,
        status: RunStatus,
        reason: Option<RunExit>,
        now_us: i64,
    ) -> FlowsResult<()> {
        let ended = self.query_opt(
            "WITH old AS (SELECT id, status, armed FROM flows_runs WHERE id = $1 FOR UPDATE)
             UPDATE flows_runs r SET status = $2, exit_reason = $3, ended_us = $4,
                 wake_us = NULL, armed = NULL
             FROM old WHERE r.id = old.id
             RETURNING r.flow_id, old.status, old.armed",
            &[
                &run_id,
                &status.as_str(),
                &reason.map(RunExit::as_str),
                &now_us,
            ],
        )?;
        let cancelled = self.query(
            &cancel_held_of_run_sql(),
            &[&run_id, &now_us, &HeldStatus::Cancelled.as_str()],
        )?;
        let mut deltas = self.figures.borrow_mut();
        if let Some(row) = ended {
            deltas.run_changed(&run_figure(&row), status == RunStatus::Active, None);
        }
        for row in &cancelled {
            deltas.pending(row.get(0), row.get(1), -1);
        }
        Ok(())
    }

    fn finish_send(
        &self,
        key: &str,
        status: SendStatus,
        subject: Option<&str>,
        message_id: Option<&str>,
        detail: Option<&str>,
        now_us: i64,
    ) -> FlowsResult<()> {
        self.exec(
            "UPDATE flows_sends SET status = $2, subject = COALESCE($3, subject),
                 message_id = COALESCE($4, message_id), detail = $5, sent_us = $6
             WHERE key = $1",
            &[
                &key,
                &status.as_str(),
                &subject,
                &message_id,
                &detail,
                &now_us,
            ],
        )
    }

    fn finish_step(
        &self,
        key: &str,
        state: StepState,
        detail: Option<&str>,
        now_us: i64,
    ) -> FlowsResult<()> {
        self.exec(
            "UPDATE flows_steps SET state = $2, detail = $3, done_us = $4, attempts = attempts + 1
             WHERE key = $1",
            &[&key, &state.as_str(), &detail, &now_us],
        )
    }

    fn get_meta(&self, key: &str) -> FlowsResult<Option<String>> {
        Ok(self
            .query_opt("SELECT value FROM flows_meta WHERE key = $1", &[&key])?
            .map(|row| row.get(0)))
    }

    fn held_by_key(&self, key: &str) -> FlowsResult<Option<HeldMessage>> {
        let row = self.query_opt(
            &format!("SELECT {HELD_COLUMNS} FROM flows_held_messages WHERE key = $1"),
            &[&key],
        )?;
        Ok(row.as_ref().map(|row| held_row(row).0))
    }

    fn hold_run(&self, run_id: i64) -> FlowsResult<()> {
        self.exec(
            "UPDATE flows_runs SET held_wake_us = wake_us, wake_us = NULL WHERE id = $1",
            &[&run_id],
        )
    }

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
        self.exec(
            "INSERT INTO flows_dead_letters (key, flow_id, action_id, run_id, url, body, reason,
                 attempts, at_us)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (key) DO UPDATE SET flow_id = EXCLUDED.flow_id,
                 action_id = EXCLUDED.action_id, run_id = EXCLUDED.run_id, url = EXCLUDED.url,
                 body = EXCLUDED.body, reason = EXCLUDED.reason, attempts = EXCLUDED.attempts,
                 at_us = EXCLUDED.at_us",
            &[
                &key, &flow_id, &action_id, &run_id, &url, &body, &reason, &attempts, &now_us,
            ],
        )
    }

    fn insert_held(&self, h: &NewHeld<'_>) -> FlowsResult<()> {
        let inserted = self.query_opt(
            "INSERT INTO flows_held_messages (key, flow_id, action_id, kind, run_id, profile_pk,
                 profile_id, email, subject, status, created_us, expires_us)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (key) DO NOTHING
             RETURNING id",
            &[
                &h.key,
                &h.flow_id,
                &h.action_id,
                &h.kind,
                &h.run_id,
                &h.profile_pk,
                &h.profile_id,
                &h.email,
                &h.subject,
                &HeldStatus::Pending.as_str(),
                &h.now_us,
                &h.expires_us,
            ],
        )?;
        if inserted.is_some() {
            self.figures.borrow_mut().pending(h.flow_id, h.action_id, 1);
        }
        Ok(())
    }

    fn insert_run(&self, run: &NewRun<'_>) -> FlowsResult<Option<i64>> {
        // One statement: the run and its entry, or neither when the origin started one.
        let row = self.query_opt(
            "WITH run AS (
                 INSERT INTO flows_runs (flow_id, profile_pk, profile_id, origin,
                     trigger_event_id, trigger_properties, started_us, position, wake_us,
                     status, entered_us)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                 ON CONFLICT (flow_id, origin) DO NOTHING
                 RETURNING id),
             entry AS (
                 INSERT INTO flows_entries (flow_id, profile_pk, last_us)
                 SELECT $1, $2, $7 FROM run
                 ON CONFLICT (flow_id, profile_pk) DO UPDATE SET last_us = EXCLUDED.last_us)
             SELECT id FROM run",
            &[
                &run.flow_id,
                &run.profile_pk,
                &run.profile_id,
                &run.origin,
                &run.trigger_event_id,
                &run.trigger_properties,
                &run.started_us,
                &run.entry_action,
                &run.wake_us,
                &RunStatus::Active.as_str(),
                &run.entered_us,
            ],
        )?;
        let Some(row) = row else {
            return Ok(None);
        };
        // Active, armed at no delay yet.
        self.figures.borrow_mut().run(run.flow_id, true, None, 1);
        Ok(Some(row.get(0)))
    }

    fn insert_send(&self, s: &NewSend<'_>) -> FlowsResult<()> {
        self.exec(
            "INSERT INTO flows_sends (key, flow_id, action_id, run_id, profile_pk, email, status,
                 decided_us)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (key) DO NOTHING",
            &[
                &s.key,
                &s.flow_id,
                &s.action_id,
                &s.run_id,
                &s.profile_pk,
                &s.email,
                &SendStatus::Pending.as_str(),
                &s.now_us,
            ],
        )
    }

    fn insert_step(&self, s: &NewStep<'_>) -> FlowsResult<()> {
        let done_us = (s.state != StepState::Intent).then_some(s.now_us);
        self.exec(
            "INSERT INTO flows_steps (key, run_id, flow_id, action_id, kind, state, detail,
                 created_us, done_us)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (key) DO NOTHING",
            &[
                &s.key,
                &s.run_id,
                &s.flow_id,
                &s.action_id,
                &s.kind,
                &s.state.as_str(),
                &s.detail,
                &s.now_us,
                &done_us,
            ],
        )
    }

    fn last_entry(&self, flow_id: &str, profile_pk: i64) -> FlowsResult<Option<i64>> {
        Ok(self
            .query_opt(
                "SELECT last_us FROM flows_entries WHERE flow_id = $1 AND profile_pk = $2",
                &[&flow_id, &profile_pk],
            )?
            .map(|row| row.get(0)))
    }

    fn latest_send(
        &self,
        profile_pk: i64,
        since_us: i64,
        until_us: i64,
    ) -> FlowsResult<Option<SendRef>> {
        let row = self.query_opt(
            "SELECT key, flow_id, action_id, opened_us, clicked_us, converted_us FROM flows_sends
             WHERE profile_pk = $1 AND status = $4 AND sent_us >= $2 AND sent_us <= $3
             ORDER BY sent_us DESC LIMIT 1",
            &[
                &profile_pk,
                &since_us,
                &until_us,
                &SendStatus::Sent.as_str(),
            ],
        )?;
        Ok(row.as_ref().map(send_ref))
    }

    fn mark_send(
        &self,
        key: &str,
        column: &str,
        at_us: i64,
        revenue: Option<f64>,
    ) -> FlowsResult<()> {
        match column {
            "opened" => self.exec(
                "UPDATE flows_sends SET opened_us = $2 WHERE key = $1 AND opened_us IS NULL",
                &[&key, &at_us],
            ),
            "clicked" => self.exec(
                "UPDATE flows_sends SET clicked_us = $2 WHERE key = $1 AND clicked_us IS NULL",
                &[&key, &at_us],
            ),
            _ => self.exec(
                "UPDATE flows_sends SET converted_us = $2, revenue = $3
                 WHERE key = $1 AND converted_us IS NULL",
                &[&key, &at_us, &revenue],
            ),
        }
    }

    fn move_run(
        &self,
        run_id: i64,
        position: Option<&str>,
        armed: Option<&str>,
        wake_us: Option<i64>,
    ) -> FlowsResult<()> {
        let moved = self.query_opt(
            "WITH old AS (SELECT id, status, armed FROM flows_runs WHERE id = $1 FOR UPDATE)
             UPDATE flows_runs r SET position = $2, armed = $3, wake_us = $4
             FROM old WHERE r.id = old.id
             RETURNING r.flow_id, old.status, old.armed",
            &[&run_id, &position, &armed, &wake_us],
        )?;
        if let Some(row) = moved {
            let old = run_figure(&row);
            self.figures
                .borrow_mut()
                .run_changed(&old, old.active, armed);
        }
        Ok(())
    }

    fn release_step(&self, key: &str) -> FlowsResult<()> {
        self.exec(
            "UPDATE flows_steps SET state = $2, done_us = NULL WHERE key = $1",
            &[&key, &StepState::Intent.as_str()],
        )
    }

    fn retry_step(&self, key: &str, detail: &str) -> FlowsResult<i64> {
        self.query_opt(
            "UPDATE flows_steps SET attempts = attempts + 1, detail = $2 WHERE key = $1
             RETURNING attempts",
            &[&key, &detail],
        )?
        .map(|row| row.get(0))
        .ok_or_else(|| FlowsError::Internal(format!("no step {key}")))
    }

    fn send_by_key(&self, key: &str) -> FlowsResult<Option<SendRef>> {
        let row = self.query_opt(
            "SELECT key, flow_id, action_id, opened_us, clicked_us, converted_us FROM flows_sends
             WHERE (key = $1 OR message_id = $1) AND status = $2
             LIMIT 1",
            &[&key, &SendStatus::Sent.as_str()],
        )?;
        Ok(row.as_ref().map(send_ref))
    }

    fn set_feed_cursor(&self, cursor: &FeedCursor) -> FlowsResult<()> {
        self.set_meta(FEED_CURSOR, &cursor_text(cursor)?)
    }

    fn set_held_status(&self, id: i64, status: HeldStatus, now_us: i64) -> FlowsResult<()> {
        let changed = self.query_opt(
            "WITH old AS (SELECT id, status FROM flows_held_messages WHERE id = $1 FOR UPDATE)
             UPDATE flows_held_messages h SET status = $2, decided_us = $3
             FROM old WHERE h.id = old.id
             RETURNING h.flow_id, h.action_id, old.status",
            &[&id, &status.as_str(), &now_us],
        )?;
        if let Some(row) = changed {
            let was_pending = row.get::<_, &str>(2) == HeldStatus::Pending.as_str();
            self.figures.borrow_mut().held_changed(
                row.get(0),
                row.get(1),
                was_pending,
                status == HeldStatus::Pending,
            );
        }
        Ok(())
    }

    fn set_meta(&self, key: &str, value: &str) -> FlowsResult<()> {
        self.exec(
            "INSERT INTO flows_meta (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            &[&key, &value],
        )
    }

    fn step(&self, key: &str) -> FlowsResult<Option<StepRow>> {
        let row = self.query_opt(
            "SELECT state, attempts, detail FROM flows_steps WHERE key = $1",
            &[&key],
        )?;
        row.map(|row| {
            let state: &str = row.get(0);
            Ok(StepRow {
                state: StepState::parse(state).ok_or_else(|| corrupt("step state", state))?,
                attempts: row.get(1),
                detail: row.get(2),
            })
        })
        .transpose()
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
        self.exec(
            "INSERT INTO flows_webhooks (key, flow_id, action_id, run_id, url, state, attempts,
                 created_us)
             VALUES ($1, $2, $3, $4, $5, $6, 0, $7)
             ON CONFLICT (key) DO NOTHING",
            &[
                &key,
                &flow_id,
                &action_id,
                &run_id,
                &url,
                &WebhookState::Pending.as_str(),
                &now_us,
            ],
        )
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
        let done_us = (state != WebhookState::Pending).then_some(now_us);
        self.query_opt(
            "UPDATE flows_webhooks SET state = $2, attempts = attempts + 1, last_status = $3,
                 last_error = $4, next_us = $5, done_us = $6
             WHERE key = $1
             RETURNING attempts",
            &[
                &key,
                &state.as_str(),
                &status.map(i32::from),
                &error,
                &next_us,
                &done_us,
            ],
        )?
        .map(|row| row.get(0))
        .ok_or_else(|| FlowsError::Internal(format!("no webhook {key}")))
    }

    fn claim_due(&self, now_us: i64, limit: usize) -> FlowsResult<Vec<RunRow>> {
        let rows = self.query(&claim_due_sql(), &[&now_us, &limit_of(limit)])?;
        Ok(rows
            .iter()
            .map(|row| RunRow {
                id: row.get(0),
                flow_id: row.get(1),
                profile_pk: row.get(2),
                profile_id: row.get(3),
                trigger_event_id: row.get(4),
                trigger_properties: serde_json::from_str(row.get(5)).unwrap_or_default(),
                started_us: row.get(6),
                position: row.get(7),
                armed: row.get(8),
            })
            .collect())
    }

    fn savepoint(&self) -> FlowsResult<()> {
        self.batch("SAVEPOINT run")?;
        self.figures.borrow_mut().savepoint();
        Ok(())
    }

    fn release_savepoint(&self) -> FlowsResult<()> {
        self.batch("RELEASE SAVEPOINT run")?;
        self.figures.borrow_mut().release_savepoint();
        Ok(())
    }

    fn rollback_to_savepoint(&self) -> FlowsResult<()> {
        self.batch("ROLLBACK TO SAVEPOINT run; RELEASE SAVEPOINT run")?;
        self.figures.borrow_mut().rollback_to_savepoint();
        Ok(())
    }

    /// Runs and messages keep their flow, action and status: no live figure changes.
    fn apply_merge(&self, from: i64, to: i64, to_id: Option<&str>) -> FlowsResult<()> {
        self.exec(
            "UPDATE flows_runs SET profile_pk = $2, profile_id = COALESCE($3, profile_id)
             WHERE profile_pk = $1",
            &[&from, &to, &to_id],
        )?;
        self.exec(
            "UPDATE flows_sends SET profile_pk = $2 WHERE profile_pk = $1",
            &[&from, &to],
        )?;
        self.exec(
            "UPDATE flows_held_messages SET profile_pk = $2, profile_id = COALESCE($3, profile_id)
             WHERE profile_pk = $1",
            &[&from, &to, &to_id],
        )?;
        self.exec(
            "WITH moved AS (DELETE FROM flows_entries WHERE profile_pk = $1 RETURNING *)
             INSERT INTO flows_entries (flow_id, profile_pk, last_us)
             SELECT flow_id, $2, last_us FROM moved
             ON CONFLICT (flow_id, profile_pk)
             DO UPDATE SET last_us = GREATEST(flows_entries.last_us, EXCLUDED.last_us)",
            &[&from, &to],
        )?;
        self.exec(
            "DELETE FROM flows_date_schedule WHERE profile_pk = $1",
            &[&from],
        )
    }

    fn set_date_schedule(
        &self,
        flow_id: &str,
        profile_pk: i64,
        next_us: Option<i64>,
    ) -> FlowsResult<()> {
        match next_us {
            Some(us) => self.exec(
                "INSERT INTO flows_date_schedule (flow_id, profile_pk, next_us)
                 VALUES ($1, $2, $3)
                 ON CONFLICT (flow_id, profile_pk) DO UPDATE SET next_us = EXCLUDED.next_us",
                &[&flow_id, &profile_pk, &us],
            ),
            None => self.exec(
                "DELETE FROM flows_date_schedule WHERE flow_id = $1 AND profile_pk = $2",
                &[&flow_id, &profile_pk],
            ),
        }
    }

    fn reschedule_date(
        &self,
        flow_id: &str,
        profile_pk: i64,
        next_us: Option<i64>,
    ) -> FlowsResult<()> {
        match next_us {
            Some(us) => self.exec(
                "UPDATE flows_date_schedule SET next_us = $3
                 WHERE flow_id = $1 AND profile_pk = $2",
                &[&flow_id, &profile_pk, &us],
            ),
            None => self.exec(
                "DELETE FROM flows_date_schedule WHERE flow_id = $1 AND profile_pk = $2",
                &[&flow_id, &profile_pk],
            ),
        }
    }

    fn send_email(&self, key: &str) -> FlowsResult<Option<String>> {
        Ok(self
            .query_opt("SELECT email FROM flows_sends WHERE key = $1", &[&key])?
            .map(|row| row.get(0)))
    }
}

#[cfg(test)]
mod tests {
    use signalbox_store::postgres::testing::TestDatabase;

    use super::*;

    #[tokio::test]
    async fn a_flows_figures_are_read_from_its_counters_alone() {
        let Some(db) = TestDatabase::create().await else {
            return;
        };
        let store = PgFlowStore::connect(db.url(), 1).await.unwrap();
        let client = store.db.pool.pool().get().await.unwrap();
        let plan: Vec<String> = client
            .query(&format!("EXPLAIN {}", STATS_SQL.replace("$1", "'F1'")), &[])
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        let plan = plan.join("\n");
        // One scan of the counters: neither runs nor held messages are counted.
        assert!(plan.contains("flows_stats"), "{plan}");
        assert!(!plan.contains("flows_runs"), "{plan}");
        assert!(!plan.contains("flows_held_messages"), "{plan}");
        assert!(!plan.contains("Aggregate"), "{plan}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_figures_are_counted_once_when_the_schema_first_keeps_them() {
        let Some(db) = TestDatabase::create().await else {
            return;
        };
        let pool = connect_pool(db.url(), 1).unwrap();
        let mut client = pool.get().await.unwrap();
        schema::migrate(&mut client, COMPONENT, &MIGRATIONS[..1])
            .await
            .unwrap();
        let rows = crate::store::rows_before_the_figures(
            "flows_runs",
            "flows_held_messages",
            "flows_stats",
        );
        client.batch_execute(&rows).await.unwrap();
        drop(client);
        let store = PgFlowStore::connect(db.url(), 1).await.unwrap();
        tokio::task::spawn_blocking(move || {
            crate::store::assert_figures_of_the_rows_before(&store)
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn the_queries_over_a_partial_index_can_use_it() {
        let Some(db) = TestDatabase::create().await else {
            return;
        };
        let store = PgFlowStore::connect(db.url(), 1).await.unwrap();
        let client = store.db.pool.pool().get().await.unwrap();
        // On empty tables a scan is cheapest; forbidding it shows whether the index applies.
        client
            .batch_execute("SET enable_seqscan = off")
            .await
            .unwrap();
        // A partial index over active runs serves each query on runs (on empty tables the
        // planner may prefer either).
        let runs = ["flows_runs_due", "flows_runs_active"];
        for (sql, indexes) in [
            (claim_due_sql(), &runs[..1]),
            (next_wake_sql(), &runs[..]),
            (
                cancel_held_of_run_sql(),
                &["flows_held_messages_by_run"][..],
            ),
            (park_sql(), &runs[1..]),
            (unpark_sql(), &runs[1..]),
        ] {
            let literal = sql
                .replace("$1", "'1'")
                .replace("$2", "2")
                .replace("$3", "'cancelled'");
            let plan: Vec<String> = client
                .query(&format!("EXPLAIN {literal}"), &[])
                .await
                .unwrap()
                .iter()
                .map(|row| row.get(0))
                .collect();
            let plan = plan.join("\n");
            assert!(
                indexes.iter().any(|index| plan.contains(index)),
                "{sql}\n{plan}"
            );
        }
    }
}
