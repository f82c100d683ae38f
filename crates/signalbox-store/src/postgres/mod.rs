//! The PostgreSQL store: the same [`Store`] as the embedded one, for several nodes sharing
//! one database.
//!
//! Reads go through a connection pool with cached prepared statements, each planned with its
//! arguments ([`Planning::PerCall`]: reading the log after a position walks the primary key
//! and stops at the page's limit, however empty the table was when first read). Appends go to
//! one writer per node ([`writer`]), which commits queued requests in groups with one multi-row
//! statement per table; a 200 is answered only after PostgreSQL committed the group.

mod blocking;
pub mod copy;
mod io_runtime;
pub mod schema;
#[cfg(any(test, feature = "test-support"))]
pub mod testing;
mod trim;
mod writer;

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{
    GenericClient, Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime,
};
use jiff::{SignedDuration, Timestamp};
use signalbox_core::source::{source_names, validate_source_name};
use signalbox_core::{
    ApiKey, ApiKeyInfo, CallKind, NewCall, PostgresUrl, Rejection, Scopes, Source, SourceId,
    SourceStatus, StoredCall, StoredRejection, WriteKey,
};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::error::SqlState;
use tokio_postgres::{NoTls, Row};

use crate::{
    AppendOutcome, CallQuery, GroupCount, GroupCounter, RejectionQuery, SourceSettings,
    SourceTotals, Store, StoreError, StoreResult, TrimOutcome, TrimRequest, WriteKeyRecord,
};
pub use blocking::{error_text, BlockingPool};
pub use io_runtime::IoRuntime;
use writer::{AppendJob, Writer};

/// Tuning for [`PgStore::connect`].
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// A repeated `messageId` inside this window is stored once.
    pub dedupe_window: SignedDuration,
    /// Append requests that may wait for the writer; past this, appends fail fast with
    /// [`StoreError::Overloaded`].
    pub queue_capacity: usize,
    /// Whether this process runs a writer (the server does; a CLI command that only reads or
    /// edits sources does not).
    pub writer: bool,
    /// Connections the readers' pool keeps at most.
    pub pool_size: usize,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            dedupe_window: SignedDuration::from_hours(24),
            queue_capacity: 512,
            writer: true,
            pool_size: 16,
        }
    }
}

/// The PostgreSQL store. Cheap to share behind an `Arc`.
pub struct PgStore {
    pool: Pool,
    /// Where the pool's connections are served.
    io: IoRuntime,
    /// The dedupe window, in microseconds: records older than this before now decide nothing.
    dedupe_window_us: i64,
    writer_tx: Mutex<Option<mpsc::Sender<AppendJob>>>,
    writer_thread: Mutex<Option<JoinHandle<()>>>,
    /// The writer's group commits (see [`Store::writer_groups`]).
    writer_groups: Arc<GroupCounter>,
}

/// How a pool's connections plan the statements they keep prepared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Planning {
    /// Each execution is planned with its arguments (`plan_cache_mode = force_custom_plan`).
    /// A cached generic plan is made once and kept until the table's statistics change: one
    /// made while a table was nearly empty (a fresh database, before autovacuum first
    /// analyses it) sorts everything after a cursor's position where an index scan would stop
    /// at the page's limit, and pages through a growing table get slower with every row.
    PerCall,
    /// PostgreSQL's default: a generic plan once custom plans stop paying. For connections
    /// whose statements are inserts and lookups by key, where the plan cannot go wrong and
    /// planning each of thousands of statements a batch would cost.
    Cached,
}

/// A pool of connections to `url` that plans each statement with its arguments
/// ([`Planning::PerCall`]). Broken connections (a restarted server) are replaced when taken;
/// waiting for one and making one are bounded in time.
pub fn connect_pool(url: &PostgresUrl, size: usize) -> StoreResult<Pool> {
    connect_pool_planned(url, size, Planning::PerCall)
}

/// As [`connect_pool`], planning as `planning` says.
pub fn connect_pool_planned(
    url: &PostgresUrl,
    size: usize,
    planning: Planning,
) -> StoreResult<Pool> {
    let mut config: tokio_postgres::Config =
        url.expose().parse().map_err(|err| StoreError::Invalid {
            field: "database_url",
            reason: format!("{err}"),
        })?;
    if planning == Planning::PerCall {
        let options = match config.get_options() {
            Some(given) => format!("{given} -c plan_cache_mode=force_custom_plan"),
            None => "-c plan_cache_mode=force_custom_plan".to_owned(),
        };
        config.options(options);
    }
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size.max(1))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(Duration::from_secs(10)))
        .create_timeout(Some(Duration::from_secs(5)))
        .recycle_timeout(Some(Duration::from_secs(5)))
        .build()
        .map_err(|err| StoreError::Internal(format!("connection pool: {err}")))
}

/// A secret every node on the database shares (the key that signs links in emails), kept in
/// `signalbox_secrets` under `name`: the first node to ask stores `candidate`, and every node
/// gets what was stored first.
pub async fn shared_secret(
    url: &PostgresUrl,
    name: &str,
    candidate: &[u8],
) -> StoreResult<Vec<u8>> {
    let pool = connect_pool(url, 1)?;
    let client = pool.get().await.map_err(pool_error)?;
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS signalbox_secrets (
                 name TEXT PRIMARY KEY,
                 secret BYTEA NOT NULL
             )",
        )
        .await
        .map_err(pg_error)?;
    client
        .execute(
            "INSERT INTO signalbox_secrets (name, secret) VALUES ($1, $2)
             ON CONFLICT (name) DO NOTHING",
            &[&name, &candidate],
        )
        .await
        .map_err(pg_error)?;
    let row = client
        .query_one(
            "SELECT secret FROM signalbox_secrets WHERE name = $1",
            &[&name],
        )
        .await
        .map_err(pg_error)?;
    Ok(row.get(0))
}

impl PgStore {
    /// The tables the call log keeps (with the schema versions and the shared secrets every
    /// component uses), for [`schema::table_sizes`].
    pub fn tables() -> Vec<String> {
        let mut tables = schema::tables_created(schema::STORE_MIGRATIONS);
        tables.extend([
            "signalbox_schema".to_owned(),
            "signalbox_secrets".to_owned(),
        ]);
        tables
    }

    /// Connects to the database at `url` and brings its schema up to date. Refuses a database
    /// whose schema is newer than this build knows.
    pub async fn connect(url: &PostgresUrl, options: PgOptions) -> StoreResult<PgStore> {
        let pool = connect_pool(url, options.pool_size)?;
        let io = IoRuntime::start("signalbox-store-db")?;
        let mut client = io.get(&pool).await.map_err(pool_error)?;
        schema::migrate(&mut client, "store", schema::STORE_MIGRATIONS).await?;
        drop(client);
        let writer_groups = Arc::new(GroupCounter::default());
        let (writer_tx, writer_thread) = if options.writer {
            let (tx, rx) = mpsc::channel(options.queue_capacity);
            let url = url.clone();
            let groups = Arc::clone(&writer_groups);
            let window_us = i64::try_from(options.dedupe_window.as_micros()).unwrap_or(i64::MAX);
            // The writer runs on a thread and runtime of its own, with connections of its own,
            // so that closing the store can wait for it from anywhere, as the embedded one does.
            let handle = std::thread::Builder::new()
                .name("signalbox-writer".into())
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => runtime,
                        Err(err) => {
                            tracing::error!(error = %err, "cannot start the log's writer");
                            return;
                        }
                    };
                    runtime.block_on(async move {
                        let pool = match connect_pool(&url, 2) {
                            Ok(pool) => pool,
                            Err(err) => {
                                tracing::error!(error = %err, "cannot start the log's writer");
                                return;
                            }
                        };
                        Writer {
                            pool,
                            window_us,
                            groups,
                        }
                        .run(rx)
                        .await;
                    });
                })
                .map_err(|e| StoreError::Internal(e.to_string()))?;
            (Some(tx), Some(handle))
        } else {
            (None, None)
        };
        Ok(PgStore {
            pool,
            io,
            dedupe_window_us: i64::try_from(options.dedupe_window.as_micros()).unwrap_or(i64::MAX),
            writer_tx: Mutex::new(writer_tx),
            writer_thread: Mutex::new(writer_thread),
            writer_groups,
        })
    }

    /// Stops accepting appends, lets the writer commit what is queued, and waits for it.
    pub fn shutdown(&self) {
        drop(self.writer_tx.lock().expect("writer lock").take());
        if let Some(handle) = self.writer_thread.lock().expect("writer lock").take() {
            let _ = handle.join();
        }
    }

    async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        self.io.get(&self.pool).await.map_err(pool_error)
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A PostgreSQL error as a store error: a lost or refused connection is "retry later", a
/// unique violation a conflict, anything else internal.
pub(crate) fn pg_error(err: tokio_postgres::Error) -> StoreError {
    if err.is_closed() || err.code().is_none() && err.as_db_error().is_none() {
        tracing::warn!(error = %err, "database connection failed");
        return StoreError::Unavailable;
    }
    match err.code() {
        Some(code) if *code == SqlState::UNIQUE_VIOLATION => StoreError::Conflict {
            what: err
                .as_db_error()
                .and_then(|db| db.constraint().map(str::to_owned))
                .unwrap_or_else(|| "row".into()),
        },
        Some(code)
            if *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
                || *code == SqlState::TOO_MANY_CONNECTIONS
                || *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED =>
        {
            tracing::warn!(error = %err, "database busy or restarting");
            StoreError::Unavailable
        }
        // The server's own words ("relation … does not exist"), not the driver's "db error".
        _ => StoreError::Internal(match err.as_db_error() {
            Some(db) => db.to_string(),
            None => err.to_string(),
        }),
    }
}

pub(crate) fn pool_error(err: PoolError) -> StoreError {
    match err {
        PoolError::Backend(err) => pg_error(err),
        other => {
            tracing::warn!(error = %other, "no database connection");
            StoreError::Unavailable
        }
    }
}

fn ts(us: i64) -> Timestamp {
    Timestamp::from_microsecond(us).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn now_us() -> i64 {
    Timestamp::now().as_microsecond()
}

fn not_found(what: String) -> StoreError {
    StoreError::NotFound { what }
}

/// The slug of the source `given` names: its slug, else its display name.
async fn resolve_source(client: &impl GenericClient, given: &str) -> StoreResult<String> {
    client
        .query_opt(
            "SELECT name FROM (
                SELECT name, 0 AS rank FROM sources WHERE name = $1
                UNION ALL
                SELECT name, 1 AS rank FROM sources WHERE display_name = $1
             ) AS found ORDER BY rank, name LIMIT 1",
            &[&given],
        )
        .await
        .map_err(pg_error)?
        .map(|row| row.get(0))
        .ok_or_else(|| not_found(format!("source '{given}'")))
}

async fn source_id(client: &impl GenericClient, given: &str) -> StoreResult<SourceId> {
    let name = resolve_source(client, given).await?;
    client
        .query_opt("SELECT id FROM sources WHERE name = $1", &[&name])
        .await
        .map_err(pg_error)?
        .map(|row| SourceId(row.get(0)))
        .ok_or_else(|| not_found(format!("source '{name}'")))
}

async fn list_sources(client: &impl GenericClient, only: Option<&str>) -> StoreResult<Vec<Source>> {
    let only = match only {
        Some(given) => Some(resolve_source(client, given).await?),
        None => None,
    };
    let rows = client
        .query(
            "SELECT s.id, s.name, s.status, s.created_at, COALESCE(s.display_name, s.name),
                    (SELECT key FROM write_keys k WHERE k.source_id = s.id AND k.expires_at IS NULL
                     ORDER BY created_at DESC LIMIT 1),
                    (SELECT COUNT(*) FROM write_keys k WHERE k.source_id = s.id
                     AND k.expires_at IS NOT NULL AND k.expires_at > $1)
             FROM sources s WHERE ($2::text IS NULL OR s.name = $2) ORDER BY s.id",
            &[&now_us(), &only],
        )
        .await
        .map_err(pg_error)?;
    Ok(rows
        .iter()
        .map(|r| {
            let key: Option<String> = r.get(5);
            Source {
                id: SourceId(r.get(0)),
                name: r.get(1),
                display_name: r.get(4),
                status: SourceStatus::parse(r.get(2)).unwrap_or(SourceStatus::Disabled),
                created_at: ts(r.get(3)),
                write_key: key.map(|k| WriteKey::new(k).redacted()).unwrap_or_default(),
                keys_in_grace: u32::try_from(r.get::<_, i64>(6)).unwrap_or(u32::MAX),
            }
        })
        .collect())
}

const KEY_RECORD_SELECT: &str = "SELECT k.key, k.source_id, s.name, s.status, k.expires_at
     FROM write_keys k JOIN sources s ON s.id = k.source_id";

fn key_record(r: &Row) -> WriteKeyRecord {
    WriteKeyRecord {
        key: WriteKey::new(r.get::<_, String>(0)),
        source_id: SourceId(r.get(1)),
        source_name: r.get(2),
        status: SourceStatus::parse(r.get(3)).unwrap_or(SourceStatus::Disabled),
        expires_at: r.get::<_, Option<i64>>(4).map(ts),
    }
}

const API_KEY_SELECT: &str = "SELECT id, name, prefix, created_at, scopes, digest FROM api_keys";

fn api_key_info(r: &Row) -> ApiKeyInfo {
    let name: String = r.get(1);
    let (scopes, unknown) = Scopes::from_stored(r.get(4));
    if !unknown.is_empty() {
        tracing::warn!(
            api_key = name,
            ?unknown,
            "api key holds scopes this version does not know; they grant nothing"
        );
    }
    ApiKeyInfo {
        id: r.get(0),
        name,
        prefix: r.get(2),
        created_at: ts(r.get(3)),
        scopes,
    }
}

async fn insert_write_key(client: &impl GenericClient, source: SourceId) -> StoreResult<WriteKey> {
    let key = WriteKey::generate();
    client
        .execute(
            "INSERT INTO write_keys (digest, key, source_id, created_at) VALUES ($1, $2, $3, $4)",
            &[
                &key.digest().as_slice(),
                &key.expose(),
                &source.0,
                &now_us(),
            ],
        )
        .await
        .map_err(pg_error)?;
    Ok(key)
}

fn settings_of(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::json!({}))
}

#[async_trait]
impl Store for PgStore {
    async fn append(
        &self,
        source: SourceId,
        calls: Vec<NewCall>,
        rejections: Vec<Rejection>,
    ) -> StoreResult<AppendOutcome> {
        let sender = self
            .writer_tx
            .lock()
            .expect("writer lock")
            .clone()
            .ok_or(StoreError::Unavailable)?;
        let (reply, wait) = oneshot::channel();
        sender
            .try_send(AppendJob {
                source,
                calls,
                rejections,
                reply,
            })
            .map_err(|err| match err {
                mpsc::error::TrySendError::Full(_) => StoreError::Overloaded,
                mpsc::error::TrySendError::Closed(_) => StoreError::Unavailable,
            })?;
        wait.await.map_err(|_| StoreError::Unavailable)?
    }

    async fn read_calls(&self, query: CallQuery) -> StoreResult<Vec<StoredCall>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT seq, source_id, kind, message_id, received_at, payload FROM calls
                 WHERE seq > $1 AND ($2::int8 IS NULL OR source_id = $2)
                   AND ($3::int8 IS NULL OR received_at >= $3)
                 ORDER BY seq LIMIT $4",
            )
            .await
            .map_err(pg_error)?;
        let rows = client
            .query(
                &stmt,
                &[
                    &query.after_seq,
                    &query.source_id.map(|s| s.0),
                    &query.since.map(|t| t.as_microsecond()),
                    &i64::from(query.limit.max(1)),
                ],
            )
            .await
            .map_err(pg_error)?;
        Ok(rows
            .iter()
            .map(|r| StoredCall {
                seq: r.get(0),
                source_id: SourceId(r.get(1)),
                kind: CallKind::parse_logged(r.get(2)).unwrap_or(CallKind::Track),
                message_id: r.get(3),
                received_at: ts(r.get(4)),
                payload: r.get(5),
            })
            .collect())
    }

    async fn last_seq(&self) -> StoreResult<i64> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT last_seq FROM log_head WHERE id = 1")
            .await
            .map_err(pg_error)?;
        Ok(client.query_one(&stmt, &[]).await.map_err(pg_error)?.get(0))
    }

    async fn read_rejections(&self, query: RejectionQuery) -> StoreResult<Vec<StoredRejection>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT id, source_id, code, message, received_at, payload FROM rejections
                 WHERE id > $1 AND ($2::int8 IS NULL OR source_id = $2) ORDER BY id LIMIT $3",
            )
            .await
            .map_err(pg_error)?;
        let rows = client
            .query(
                &stmt,
                &[
                    &query.after_id,
                    &query.source_id.map(|s| s.0),
                    &i64::from(query.limit.max(1)),
                ],
            )
            .await
            .map_err(pg_error)?;
        Ok(rows
            .iter()
            .map(|r| StoredRejection {
                id: r.get(0),
                source_id: SourceId(r.get(1)),
                code: r.get(2),
                message: r.get(3),
                received_at: ts(r.get(4)),
                payload: r.get(5),
            })
            .collect())
    }

    async fn totals(&self) -> StoreResult<Vec<SourceTotals>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT source_id, calls, last_seq, rejections FROM source_totals
                 ORDER BY source_id",
            )
            .await
            .map_err(pg_error)?;
        let rows = client.query(&stmt, &[]).await.map_err(pg_error)?;
        Ok(rows
            .iter()
            .map(|r| SourceTotals {
                source_id: SourceId(r.get(0)),
                calls: r.get::<_, i64>(1).max(0) as u64,
                last_seq: r.get(2),
                rejections: r.get::<_, i64>(3).max(0) as u64,
            })
            .collect())
    }

    async fn trim_log(&self, request: TrimRequest) -> StoreResult<TrimOutcome> {
        let cutoff_us = request.received_before.as_microsecond();
        let mut outcome = TrimOutcome::default();
        let mut client = self.client().await?;
        for (front, below) in [
            (trim::Front::Calls, request.below_seq),
            (trim::Front::Rejections, i64::MAX),
        ] {
            loop {
                let chunk =
                    trim::trim_chunk(&mut client, front, below, cutoff_us, request.chunk).await?;
                match front {
                    trim::Front::Calls => outcome.calls += chunk.deleted,
                    trim::Front::Rejections => outcome.rejections += chunk.deleted,
                }
                if chunk.done {
                    break;
                }
            }
        }
        let expired_before = request
            .now
            .as_microsecond()
            .saturating_sub(self.dedupe_window_us);
        loop {
            let deleted = trim::expire_dedupe(&client, expired_before, request.chunk).await?;
            outcome.dedupe_ids += deleted;
            if deleted < u64::from(request.chunk.max(1)) {
                break;
            }
        }
        Ok(outcome)
    }

    async fn create_source(&self, name: &str) -> StoreResult<(Source, WriteKey)> {
        let (name, display_name) = source_names(name).map_err(|reason| StoreError::Invalid {
            field: "name",
            reason,
        })?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let taken: Option<String> = tx
            .query_opt(
                "SELECT name FROM sources
                 WHERE name IN ($1, $2) OR display_name IN ($1, $2) LIMIT 1",
                &[&name, &display_name],
            )
            .await
            .map_err(pg_error)?
            .map(|r| r.get(0));
        let conflict = |taken: &str| StoreError::Conflict {
            what: if taken == name {
                format!("source '{name}'")
            } else {
                format!("source '{taken}' named {display_name:?}")
            },
        };
        if let Some(taken) = taken {
            return Err(conflict(&taken));
        }
        let id = match tx
            .query_one(
                "INSERT INTO sources (name, display_name, status, created_at)
                 VALUES ($1, $2, 'enabled', $3) RETURNING id",
                &[&name, &display_name, &now_us()],
            )
            .await
            .map_err(pg_error)
        {
            Ok(row) => SourceId(row.get(0)),
            // Another node made the same source since the check above.
            Err(StoreError::Conflict { .. }) => return Err(conflict(&name)),
            Err(err) => return Err(err),
        };
        let key = insert_write_key(&tx, id).await?;
        let source = list_sources(&tx, Some(&name))
            .await?
            .pop()
            .ok_or_else(|| not_found(format!("source '{name}'")))?;
        tx.commit().await.map_err(pg_error)?;
        Ok((source, key))
    }

    async fn list_sources(&self) -> StoreResult<Vec<Source>> {
        list_sources(&self.client().await?, None).await
    }

    async fn source_by_name(&self, name: &str) -> StoreResult<Source> {
        list_sources(&self.client().await?, Some(name))
            .await?
            .pop()
            .ok_or_else(|| not_found(format!("source '{name}'")))
    }

    async fn current_write_key(&self, name: &str) -> StoreResult<WriteKey> {
        let client = self.client().await?;
        let id = source_id(&client, name).await?;
        client
            .query_opt(
                "SELECT key FROM write_keys WHERE source_id = $1 AND expires_at IS NULL
                 ORDER BY created_at DESC LIMIT 1",
                &[&id.0],
            )
            .await
            .map_err(pg_error)?
            .map(|r| WriteKey::new(r.get::<_, String>(0)))
            .ok_or_else(|| not_found(format!("write key of '{name}'")))
    }

    async fn rotate_write_key(&self, name: &str, grace: SignedDuration) -> StoreResult<WriteKey> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        let id = source_id(&tx, name).await?;
        // Rotations of one source take turns.
        tx.execute("SELECT 1 FROM sources WHERE id = $1 FOR UPDATE", &[&id.0])
            .await
            .map_err(pg_error)?;
        let expires = now_us() + i64::try_from(grace.as_micros()).unwrap_or(i64::MAX / 2);
        tx.execute(
            "UPDATE write_keys SET expires_at = $2
             WHERE source_id = $1 AND (expires_at IS NULL OR expires_at > $2)",
            &[&id.0, &expires],
        )
        .await
        .map_err(pg_error)?;
        let key = insert_write_key(&tx, id).await?;
        tx.commit().await.map_err(pg_error)?;
        Ok(key)
    }

    async fn set_source_status(&self, name: &str, status: SourceStatus) -> StoreResult<()> {
        let client = self.client().await?;
        let name = resolve_source(&client, name).await?;
        let changed = client
            .execute(
                "UPDATE sources SET status = $2 WHERE name = $1",
                &[&name, &status.as_str()],
            )
            .await
            .map_err(pg_error)?;
        if changed == 0 {
            return Err(not_found(format!("source '{name}'")));
        }
        Ok(())
    }

    async fn delete_source(&self, name: &str) -> StoreResult<()> {
        let client = self.client().await?;
        let name = resolve_source(&client, name).await?;
        let changed = client
            .execute("DELETE FROM sources WHERE name = $1", &[&name])
            .await
            .map_err(pg_error)?;
        if changed == 0 {
            return Err(not_found(format!("source '{name}'")));
        }
        Ok(())
    }

    async fn source_settings(&self, name: &str) -> StoreResult<serde_json::Value> {
        let client = self.client().await?;
        let name = resolve_source(&client, name).await?;
        let text: String = client
            .query_opt("SELECT settings FROM sources WHERE name = $1", &[&name])
            .await
            .map_err(pg_error)?
            .map(|r| r.get(0))
            .ok_or_else(|| not_found(format!("source '{name}'")))?;
        Ok(settings_of(&text))
    }

    async fn set_source_settings(
        &self,
        name: &str,
        settings: serde_json::Value,
    ) -> StoreResult<()> {
        if !settings.is_object() {
            return Err(StoreError::Invalid {
                field: "settings",
                reason: "must be a JSON object".into(),
            });
        }
        let client = self.client().await?;
        let name = resolve_source(&client, name).await?;
        let changed = client
            .execute(
                "UPDATE sources SET settings = $2 WHERE name = $1",
                &[&name, &settings.to_string()],
            )
            .await
            .map_err(pg_error)?;
        if changed == 0 {
            return Err(not_found(format!("source '{name}'")));
        }
        Ok(())
    }

    async fn all_source_settings(&self) -> StoreResult<Vec<SourceSettings>> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT id, name, settings FROM sources ORDER BY id", &[])
            .await
            .map_err(pg_error)?;
        Ok(rows
            .iter()
            .map(|r| SourceSettings {
                source_id: SourceId(r.get(0)),
                name: r.get(1),
                settings: settings_of(r.get(2)),
            })
            .collect())
    }

    async fn write_keys(&self) -> StoreResult<Vec<WriteKeyRecord>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(KEY_RECORD_SELECT)
            .await
            .map_err(pg_error)?;
        let rows = client.query(&stmt, &[]).await.map_err(pg_error)?;
        Ok(rows.iter().map(key_record).collect())
    }

    async fn find_write_key(&self, digest: [u8; 32]) -> StoreResult<Option<WriteKeyRecord>> {
        let client = self.client().await?;
        let sql = format!("{KEY_RECORD_SELECT} WHERE k.digest = $1");
        let stmt = client.prepare_cached(&sql).await.map_err(pg_error)?;
        Ok(client
            .query_opt(&stmt, &[&digest.as_slice()])
            .await
            .map_err(pg_error)?
            .as_ref()
            .map(key_record))
    }

    async fn create_api_key(
        &self,
        name: &str,
        scopes: &Scopes,
    ) -> StoreResult<(ApiKeyInfo, ApiKey)> {
        validate_source_name(name).map_err(|reason| StoreError::Invalid {
            field: "name",
            reason,
        })?;
        if scopes.is_empty() {
            return Err(StoreError::Invalid {
                field: "scopes",
                reason: "a key needs at least one scope".into(),
            });
        }
        let client = self.client().await?;
        let key = ApiKey::generate();
        let prefix = key.redacted();
        let created = now_us();
        let row = client
            .query_opt(
                "INSERT INTO api_keys (name, prefix, digest, created_at, scopes)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (name) DO NOTHING RETURNING id",
                &[
                    &name,
                    &prefix,
                    &key.digest_hex(),
                    &created,
                    &scopes.to_stored(),
                ],
            )
            .await
            .map_err(pg_error)?;
        match row {
            None => Err(StoreError::Conflict {
                what: format!("api key '{name}'"),
            }),
            Some(row) => Ok((
                ApiKeyInfo {
                    id: row.get(0),
                    name: name.to_owned(),
                    prefix,
                    created_at: ts(created),
                    scopes: scopes.clone(),
                },
                key,
            )),
        }
    }

    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKeyInfo>> {
        let client = self.client().await?;
        let rows = client
            .query(&format!("{API_KEY_SELECT} ORDER BY id"), &[])
            .await
            .map_err(pg_error)?;
        Ok(rows.iter().map(api_key_info).collect())
    }

    async fn delete_api_key(&self, name: &str) -> StoreResult<()> {
        let client = self.client().await?;
        match client
            .execute("DELETE FROM api_keys WHERE name = $1", &[&name])
            .await
            .map_err(pg_error)?
        {
            0 => Err(not_found(format!("api key '{name}'"))),
            _ => Ok(()),
        }
    }

    async fn authenticate_api_key(&self, key: &ApiKey) -> StoreResult<Option<ApiKeyInfo>> {
        let client = self.client().await?;
        let sql = format!("{API_KEY_SELECT} WHERE digest = $1");
        let stmt = client.prepare_cached(&sql).await.map_err(pg_error)?;
        let row = client
            .query_opt(&stmt, &[&key.digest_hex()])
            .await
            .map_err(pg_error)?;
        Ok(row
            .filter(|r| key.matches_digest(r.get(5)))
            .map(|r| api_key_info(&r)))
    }

    fn close(&self) {
        self.shutdown();
    }

    fn writer_groups(&self) -> GroupCount {
        self.writer_groups.read()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::TestDatabase;
    use super::*;

    #[tokio::test]
    async fn every_node_gets_the_first_shared_secret() {
        let Some(db) = TestDatabase::create().await else {
            return;
        };
        let first = shared_secret(db.url(), "link", b"first node")
            .await
            .unwrap();
        let second = shared_secret(db.url(), "link", b"second node")
            .await
            .unwrap();
        assert_eq!(first, b"first node");
        assert_eq!(second, b"first node");
        let other = shared_secret(db.url(), "other", b"apart").await.unwrap();
        assert_eq!(other, b"apart");
    }

    /// The plan of a cursor's read, prepared while its table was empty and run again once
    /// it holds 20,000 rows, on a connection that plans as `planning` says; with
    /// [`Planning::Cached`], once the plan cache has settled on a generic plan (PostgreSQL
    /// does when custom plans stop looking cheaper, which depends on the arguments it saw).
    async fn cursor_plan_after_growth(db: &TestDatabase, planning: Planning) -> String {
        let client = connect_pool_planned(db.url(), 1, planning)
            .unwrap()
            .get()
            .await
            .unwrap();
        if planning == Planning::Cached {
            client
                .batch_execute("SET plan_cache_mode = force_generic_plan")
                .await
                .unwrap();
        }
        // The shape of the log's `calls` and of `read_calls`, in a table of its own that
        // autovacuum leaves alone (its analysis would make PostgreSQL plan again).
        let table = format!("cursor_rows_{planning:?}").to_lowercase();
        client
            .batch_execute(&format!(
                "CREATE TABLE {table} (seq BIGINT PRIMARY KEY, source_id BIGINT NOT NULL,
                     received_at BIGINT NOT NULL, body TEXT)
                     WITH (autovacuum_enabled = false);
                 CREATE INDEX ON {table} (source_id, seq);
                 CREATE INDEX ON {table} USING brin (received_at);
                 PREPARE cursor_read (BIGINT, BIGINT, BIGINT, BIGINT) AS
                     SELECT seq, body FROM {table}
                     WHERE seq > $1 AND ($2::int8 IS NULL OR source_id = $2)
                       AND ($3::int8 IS NULL OR received_at >= $3)
                     ORDER BY seq LIMIT $4;"
            ))
            .await
            .unwrap();
        for _ in 0..8 {
            client
                .batch_execute("EXECUTE cursor_read(0, NULL, NULL, 100)")
                .await
                .unwrap();
        }
        client
            .batch_execute(&format!(
                "INSERT INTO {table} SELECT g, 1, g, repeat('x', 200)
                 FROM generate_series(1, 20000) g"
            ))
            .await
            .unwrap();
        let plan: String = client
            .query("EXPLAIN EXECUTE cursor_read(10, NULL, NULL, 100)", &[])
            .await
            .unwrap()
            .iter()
            .map(|row| row.get::<_, String>(0) + "\n")
            .collect();
        client
            .batch_execute("DEALLOCATE cursor_read")
            .await
            .unwrap();
        plan
    }

    #[tokio::test]
    async fn a_cursor_read_is_planned_for_its_position_however_empty_the_table_was() {
        let Some(db) = TestDatabase::create().await else {
            return;
        };
        let per_call = cursor_plan_after_growth(&db, Planning::PerCall).await;
        assert!(
            per_call.contains("Index Scan") && !per_call.contains("Sort"),
            "{per_call}"
        );
        // A generic plan made for the empty table sorts every row after the position.
        let cached = cursor_plan_after_growth(&db, Planning::Cached).await;
        assert!(cached.contains("Sort"), "{cached}");
    }

    #[tokio::test]
    async fn the_sizes_name_every_table_the_store_keeps() {
        let Some(db) = TestDatabase::create().await else {
            return;
        };
        let store = PgStore::connect(db.url(), PgOptions::default())
            .await
            .unwrap();
        store.create_source("web").await.unwrap();
        shared_secret(db.url(), "link", b"secret").await.unwrap();
        let sizes = schema::table_sizes(db.url()).await.unwrap();
        let mut found: Vec<&String> = sizes.keys().collect();
        let mut tables = PgStore::tables();
        tables.sort();
        found.sort();
        assert_eq!(found, tables.iter().collect::<Vec<_>>());
        assert!(sizes["sources"] > 0, "{sizes:?}");
    }

    #[tokio::test]
    async fn a_database_from_a_newer_signalbox_is_refused_untouched() {
        let Some(db) = TestDatabase::create().await else {
            return;
        };
        let store = PgStore::connect(db.url(), PgOptions::default())
            .await
            .unwrap();
        store.create_source("web").await.unwrap();
        let client = store.client().await.unwrap();
        let newer = i32::try_from(schema::STORE_MIGRATIONS.len() + 1).unwrap();
        client
            .execute(
                "UPDATE signalbox_schema SET version = $1 WHERE component = 'store'",
                &[&newer],
            )
            .await
            .unwrap();
        drop(client);
        drop(store);
        let err = PgStore::connect(db.url(), PgOptions::default())
            .await
            .err()
            .expect("refused");
        assert!(
            matches!(err, StoreError::SchemaTooNew { ref component, .. } if component == "store"),
            "{err}"
        );
        assert!(err.to_string().contains("newer than this signalbox knows"));
    }

    /// Dedupe records past the window decide nothing: a trim deletes them, and those inside
    /// it stay, so the table does not grow with every id ever seen.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_trim_deletes_dedupe_records_past_the_window() {
        let Some(db) = TestDatabase::create().await else {
            return;
        };
        let store = PgStore::connect(
            db.url(),
            PgOptions {
                dedupe_window: SignedDuration::from_hours(1),
                ..PgOptions::default()
            },
        )
        .await
        .unwrap();
        let (source, _) = store.create_source("web").await.unwrap();
        let start = Timestamp::from_second(1_790_000_000).unwrap();
        let call = |id: &str, at: Timestamp| NewCall {
            kind: CallKind::Track,
            message_id: id.to_owned(),
            received_at: at,
            payload: "{}".to_owned(),
        };
        let later = start + SignedDuration::from_hours(2);
        store
            .append(
                source.id,
                vec![call("old", start), call("recent", later)],
                vec![],
            )
            .await
            .unwrap();
        let outcome = store
            .trim_log(crate::TrimRequest {
                below_seq: 0,
                received_before: start,
                now: later + SignedDuration::from_mins(10),
                chunk: 1,
            })
            .await
            .unwrap();
        assert_eq!((outcome.calls, outcome.dedupe_ids), (0, 1));
        let client = store.client().await.unwrap();
        let kept: Vec<String> = client
            .query(
                "SELECT message_id FROM message_ids ORDER BY message_id",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(kept, ["recent"]);
    }

    #[tokio::test]
    async fn nodes_starting_together_migrate_once() {
        let Some(db) = TestDatabase::create().await else {
            return;
        };
        let options = PgOptions {
            writer: false,
            ..PgOptions::default()
        };
        let (a, b, c) = tokio::join!(
            PgStore::connect(db.url(), options.clone()),
            PgStore::connect(db.url(), options.clone()),
            PgStore::connect(db.url(), options.clone()),
        );
        let (a, _b, _c) = (a.unwrap(), b.unwrap(), c.unwrap());
        let client = a.client().await.unwrap();
        let version: i32 = client
            .query_one(
                "SELECT version FROM signalbox_schema WHERE component = 'store'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(version as usize, schema::STORE_MIGRATIONS.len());
    }
}

#[cfg(test)]
mod restart_tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::testing::PrivateServer;
    use super::*;

    fn call(id: String) -> NewCall {
        NewCall {
            kind: CallKind::Track,
            payload: format!(r#"{{"type":"track","messageId":"{id}","event":"Ordered"}}"#),
            message_id: id,
            received_at: Timestamp::now(),
        }
    }

    /// Senders keep appending while the server restarts; a refused append is sent again with
    /// the same message ids, as the Segment libraries do. Afterwards every acknowledged call
    /// is in the log exactly once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_acknowledged_call_survives_a_restart_of_postgresql_once() {
        let Some(server) = PrivateServer::start() else {
            return;
        };
        let store = Arc::new(
            PgStore::connect(server.url(), PgOptions::default())
                .await
                .unwrap(),
        );
        let source = store.create_source("web").await.unwrap().0.id;
        let stop = Arc::new(AtomicBool::new(false));
        let mut senders = Vec::new();
        for sender in 0..4 {
            let store = Arc::clone(&store);
            let stop = Arc::clone(&stop);
            senders.push(tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                let mut refused = 0u32;
                let mut batch = 0;
                while !stop.load(Ordering::Relaxed) {
                    let ids: Vec<String> =
                        (0..20).map(|i| format!("s{sender}-b{batch}-{i}")).collect();
                    loop {
                        let calls = ids.iter().cloned().map(call).collect();
                        match store.append(source, calls, vec![]).await {
                            Ok(_) => break,
                            Err(StoreError::Unavailable | StoreError::Overloaded) => {
                                refused += 1;
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                            Err(err) => panic!("append failed: {err}"),
                        }
                    }
                    acknowledged.extend(ids);
                    batch += 1;
                }
                (acknowledged, refused)
            }));
        }
        tokio::time::sleep(Duration::from_millis(800)).await;
        tokio::task::block_in_place(|| server.restart());
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stop.store(true, Ordering::Relaxed);
        let mut acknowledged = BTreeSet::new();
        let mut refused = 0;
        for sender in senders {
            let (ids, refusals) = sender.await.unwrap();
            refused += refusals;
            acknowledged.extend(ids);
        }
        assert!(refused > 0, "the restart refused some appends");

        let mut stored: BTreeMap<String, u32> = BTreeMap::new();
        let mut after_seq = 0;
        loop {
            let page = store
                .read_calls(CallQuery {
                    after_seq,
                    limit: 10_000,
                    ..CallQuery::default()
                })
                .await
                .unwrap();
            let Some(last) = page.last() else { break };
            after_seq = last.seq;
            for call in page {
                *stored.entry(call.message_id).or_default() += 1;
            }
        }
        let twice: Vec<_> = stored.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "stored more than once: {twice:?}");
        let lost: Vec<_> = acknowledged
            .iter()
            .filter(|id| !stored.contains_key(*id))
            .collect();
        assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
        assert!(acknowledged.len() > 100, "{} calls", acknowledged.len());
    }
}
