//! The embedded SQLite store.

mod checkpoint;
mod copy_source;
pub use checkpoint::Checkpointer;
pub use copy_source::SqliteFile;
pub use packing::PackingPolicy;
pub use remake::open_or_remake;
pub use to_postgres::migrate_to_postgres;
mod dedupe;
mod index_thread;
mod packing;
mod remake;
mod schema;
mod to_postgres;
mod trim;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use signalbox_core::source::{source_names, validate_source_name};
use signalbox_core::{
    ApiKey, ApiKeyInfo, CallKind, NewCall, Rejection, Scopes, Source, SourceId, SourceStatus,
    StoredCall, StoredRejection, WriteKey,
};
use tokio::sync::{mpsc, oneshot};

use crate::{
    AppendOutcome, CallQuery, GroupCount, GroupCounter, RejectionQuery, SourceSettings,
    SourceTotals, Store, StoreError, StoreResult, TrimOutcome, TrimRequest, WriteKeyRecord,
};
use writer::{AppendJob, Writer};

/// Tuning for [`SqliteStore::open`].
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// A repeated `messageId` inside this window is stored once.
    pub dedupe_window: SignedDuration,
    /// Append requests that may wait for the writer; past this, appends fail fast with
    /// [`StoreError::Overloaded`].
    pub queue_capacity: usize,
    /// Whether this process runs the writer (the server does; a CLI command that only reads
    /// or edits sources does not need one).
    pub writer: bool,
    /// Memory the writer keeps for caches and write buffers: a third is its page cache (the
    /// B-tree pages each insert walks), a third the dedupe index's block cache and a third the
    /// memtable the index fills before it writes a table (see `dedupe::IndexMemory`).
    pub cache_bytes: u64,
    /// When the zstd dictionaries that call payloads are packed with are trained
    /// (`packing.rs`).
    pub packing: PackingPolicy,
}

/// [`SqliteOptions::cache_bytes`] unless told otherwise.
pub const DEFAULT_LOG_CACHE_BYTES: u64 = 40 << 20;

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            dedupe_window: SignedDuration::from_hours(24),
            queue_capacity: 512,
            writer: true,
            cache_bytes: DEFAULT_LOG_CACHE_BYTES,
            packing: PackingPolicy::default(),
        }
    }
}

/// The SQLite store. Cheap to share behind an `Arc`.
pub struct SqliteStore {
    path: PathBuf,
    writer_tx: Mutex<Option<mpsc::Sender<AppendJob>>>,
    writer_thread: Mutex<Option<JoinHandle<()>>>,
    readers: Arc<Mutex<Vec<Connection>>>,
    /// The writer's group commits (see [`Store::writer_groups`]).
    writer_groups: Arc<GroupCounter>,
    /// Packs payloads before they reach the writer, unpacks what readers read.
    packing: packing::Packing,
}

impl SqliteStore {
    /// Opens (creating and migrating) the database file at `path`.
    pub fn open(path: impl AsRef<Path>, options: SqliteOptions) -> StoreResult<SqliteStore> {
        let path = path.as_ref().to_path_buf();
        let mut conn = open_writer_connection(&path, options.cache_bytes / 3)?;
        schema::migrate(&mut conn).map_err(|err| match err {
            schema::MigrateError::TooNew { found, known } => StoreError::SchemaTooNew {
                component: "call log".into(),
                found,
                known,
            },
            schema::MigrateError::Sqlite(err) => internal(err),
        })?;
        let packing = packing::Packing::open(&conn, options.packing).map_err(internal)?;
        let writer_groups = Arc::new(GroupCounter::default());
        let (writer_tx, writer_thread) = if options.writer {
            let (tx, rx) = mpsc::channel(options.queue_capacity);
            let index_memory = dedupe::IndexMemory::from_budget(options.cache_bytes / 3 * 2);
            let writer = Writer::new(
                conn,
                options.dedupe_window,
                &dedupe_dir(&path),
                index_memory,
            )?
            .with_checkpointer(Checkpointer::start(
                &path,
                "log-checkpoint",
                checkpoint::LOG_CHECKPOINT_EVERY,
            )?)
            .with_index_thread(index_thread::IndexThread::start()?)
            .with_group_counter(Arc::clone(&writer_groups))
            .with_packing(packing.clone());
            let handle = std::thread::Builder::new()
                .name("signalbox-writer".into())
                .spawn(move || writer.run(rx))
                .map_err(|e| StoreError::Internal(e.to_string()))?;
            (Some(tx), Some(handle))
        } else {
            (None, None)
        };
        Ok(SqliteStore {
            path,
            writer_tx: Mutex::new(writer_tx),
            writer_thread: Mutex::new(writer_thread),
            readers: Arc::new(Mutex::new(Vec::new())),
            writer_groups,
            packing,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting appends, lets the writer commit what is queued, and waits for it.
    pub fn shutdown(&self) {
        drop(self.writer_tx.lock().expect("writer lock").take());
        if let Some(handle) = self.writer_thread.lock().expect("writer lock").take() {
            let _ = handle.join();
        }
    }

    /// Runs `f` on a pooled connection in the blocking pool.
    async fn with_conn<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let readers = Arc::clone(&self.readers);
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = readers.lock().expect("pool lock").pop();
            let mut conn = match pooled {
                Some(conn) => conn,
                None => open_connection(&path)?,
            };
            let result = f(&mut conn);
            let mut pool = readers.lock().expect("pool lock");
            if pool.len() < 8 {
                pool.push(conn);
            }
            result
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))?
    }
}

/// The dedupe index's folder, beside the database file (`signalbox.db` → `signalbox.db-dedupe`).
fn dedupe_dir(db: &Path) -> PathBuf {
    let mut dir = db.as_os_str().to_owned();
    dir.push("-dedupe");
    PathBuf::from(dir)
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn open_connection(path: &Path) -> StoreResult<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(internal)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(internal)?;
    // 8 KiB pages for a new file (an existing one keeps its size). Each group commit writes
    // the pages it filled plus the few it only touched (the last leaf, the interior pages
    // above it, the source's totals), and the checkpoint copies them again: with 64 KiB pages
    // those few were most of the bytes written. `bench ingest`, at 50,000 events/s: 7.6 KB
    // written per event with 64 KiB pages, 4.9 KB with 16 KiB, 4.5 KB with 8 KiB, 4.2 KB with
    // 4 KiB, where the durable closed loop lost 8 % of its calls a second. Must come before
    // the file turns to WAL.
    conn.execute_batch("PRAGMA page_size = 8192;")
        .map_err(internal)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;
         PRAGMA cache_size = -4096;
         PRAGMA mmap_size = 268435456;
         PRAGMA temp_store = MEMORY;",
    )
    .map_err(internal)?;
    Ok(conn)
}

/// The WAL's size at which the writer checkpoints by itself, whatever the page size. The
/// background checkpointer copies well before; this bounds the file if it falls behind.
const WAL_CHECKPOINT_BYTES: i64 = 64 << 20;

/// The writer's connection: like the others, with a larger page cache (`cache_bytes`) for the
/// B-tree pages each insert walks. The others mostly read the log in order, which the memory
/// map serves from the operating system's page cache; a small cache each keeps the process's
/// own memory flat however many of them the pool holds.
fn open_writer_connection(path: &Path, cache_bytes: u64) -> StoreResult<Connection> {
    let conn = open_connection(path)?;
    // A negative cache size is in KiB.
    conn.pragma_update(None, "cache_size", -((cache_bytes / 1024).max(1024) as i64))
        .map_err(internal)?;
    let page: i64 = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .map_err(internal)?;
    conn.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_BYTES / page)
        .map_err(internal)?;
    Ok(conn)
}

/// Lowers the calling thread to nice 9 (relative to the process): for the helpers of the
/// log's writer (checkpoints, index batches), whose work can wait a little while the writer
/// and the request handlers it serves cannot.
fn behind_the_writer() {
    use thread_priority::{set_current_thread_priority, ThreadPriority, ThreadPriorityValue};
    let value = ThreadPriorityValue::try_from(23u8).expect("23 is a valid priority");
    if let Err(err) = set_current_thread_priority(ThreadPriority::Crossplatform(value)) {
        tracing::debug!(error = ?err, "cannot lower a helper thread's priority");
    }
}

fn internal(err: rusqlite::Error) -> StoreError {
    StoreError::Internal(err.to_string())
}

fn ts(us: i64) -> Timestamp {
    Timestamp::from_microsecond(us).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn now_us() -> i64 {
    Timestamp::now().as_microsecond()
}

/// The slug of the source `given` names: its slug, else its display name.
fn resolve_source(conn: &Connection, given: &str) -> StoreResult<String> {
    conn.query_row(
        "SELECT name FROM (
            SELECT name, 0 AS rank FROM sources WHERE name = ?1
            UNION ALL
            SELECT name, 1 AS rank FROM sources WHERE display_name = ?1
         ) ORDER BY rank, name LIMIT 1",
        [given],
        |r| r.get(0),
    )
    .optional()
    .map_err(internal)?
    .ok_or_else(|| StoreError::NotFound {
        what: format!("source '{given}'"),
    })
}

fn source_row(conn: &Connection, name: &str) -> StoreResult<(SourceId, SourceStatus, i64)> {
    let name = resolve_source(conn, name)?;
    conn.query_row(
        "SELECT id, status, created_at FROM sources WHERE name = ?1",
        [&name],
        |r| Ok((SourceId(r.get(0)?), r.get::<_, String>(1)?, r.get(2)?)),
    )
    .optional()
    .map_err(internal)?
    .map(|(id, status, created)| {
        (
            id,
            SourceStatus::parse(&status).unwrap_or(SourceStatus::Disabled),
            created,
        )
    })
    .ok_or_else(|| StoreError::NotFound {
        what: format!("source '{name}'"),
    })
}

fn list_sources_sync(conn: &Connection, only: Option<&str>) -> StoreResult<Vec<Source>> {
    let only = only.map(|given| resolve_source(conn, given)).transpose()?;
    let now = now_us();
    let mut stmt = conn
        .prepare_cached(
            "SELECT s.id, s.name, s.status, s.created_at, COALESCE(s.display_name, s.name),
                    (SELECT key FROM write_keys k WHERE k.source_id = s.id AND k.expires_at IS NULL
                     ORDER BY created_at DESC LIMIT 1),
                    (SELECT COUNT(*) FROM write_keys k WHERE k.source_id = s.id
                     AND k.expires_at IS NOT NULL AND k.expires_at > ?1)
             FROM sources s WHERE (?2 IS NULL OR s.name = ?2) ORDER BY s.id",
        )
        .map_err(internal)?;
    let rows = stmt
        .query_map(params![now, only], |r| {
            let key: Option<String> = r.get(5)?;
            Ok(Source {
                id: SourceId(r.get(0)?),
                name: r.get(1)?,
                display_name: r.get(4)?,
                status: SourceStatus::parse(&r.get::<_, String>(2)?)
                    .unwrap_or(SourceStatus::Disabled),
                created_at: ts(r.get(3)?),
                write_key: key.map(|k| WriteKey::new(k).redacted()).unwrap_or_default(),
                keys_in_grace: r.get(6)?,
            })
        })
        .map_err(internal)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(internal)
}

fn key_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<WriteKeyRecord> {
    Ok(WriteKeyRecord {
        key: WriteKey::new(r.get::<_, String>(0)?),
        source_id: SourceId(r.get(1)?),
        source_name: r.get(2)?,
        status: SourceStatus::parse(&r.get::<_, String>(3)?).unwrap_or(SourceStatus::Disabled),
        expires_at: r.get::<_, Option<i64>>(4)?.map(ts),
    })
}

/// The columns [`api_key_info`] reads, then the digest.
const API_KEY_SELECT: &str = "SELECT id, name, prefix, created_at, scopes, digest FROM api_keys";

fn api_key_info(r: &rusqlite::Row<'_>) -> rusqlite::Result<ApiKeyInfo> {
    let name: String = r.get(1)?;
    let (scopes, unknown) = Scopes::from_stored(&r.get::<_, String>(4)?);
    if !unknown.is_empty() {
        tracing::warn!(
            api_key = name,
            ?unknown,
            "api key holds scopes this version does not know; they grant nothing"
        );
    }
    Ok(ApiKeyInfo {
        id: r.get(0)?,
        name,
        prefix: r.get(2)?,
        created_at: ts(r.get(3)?),
        scopes,
    })
}

const KEY_RECORD_SELECT: &str = "SELECT k.key, k.source_id, s.name, s.status, k.expires_at
     FROM write_keys k JOIN sources s ON s.id = k.source_id";

fn insert_write_key(conn: &Connection, source: SourceId) -> StoreResult<WriteKey> {
    let key = WriteKey::generate();
    conn.execute(
        "INSERT INTO write_keys (digest, key, source_id, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![key.digest().to_vec(), key.expose(), source.0, now_us()],
    )
    .map_err(internal)?;
    Ok(key)
}

#[async_trait]
impl Store for SqliteStore {
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
        let packed = self.packing.pack(&calls);
        sender
            .try_send(AppendJob {
                source,
                calls,
                packed,
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
        let packing = self.packing.clone();
        self.with_conn(move |conn| {
            let conn: &Connection = conn;
            let mut stmt = conn
                .prepare_cached(
                    "SELECT seq, source_id, kind, message_id, received_at, payload FROM events
                     WHERE seq > ?1 AND (?2 IS NULL OR source_id = ?2)
                       AND (?3 IS NULL OR received_at >= ?3)
                     ORDER BY seq LIMIT ?4",
                )
                .map_err(internal)?;
            let rows = stmt
                .query_map(
                    params![
                        query.after_seq,
                        query.source_id.map(|s| s.0),
                        query.since.map(|t| t.as_microsecond()),
                        query.limit.max(1)
                    ],
                    |r| {
                        Ok(StoredCall {
                            seq: r.get(0)?,
                            source_id: SourceId(r.get(1)?),
                            kind: CallKind::parse_logged(&r.get::<_, String>(2)?)
                                .unwrap_or(CallKind::Track),
                            message_id: r.get(3)?,
                            received_at: ts(r.get(4)?),
                            payload: packing.unpack(Some(conn), r.get_ref(5)?).map_err(|err| {
                                rusqlite::Error::FromSqlConversionFailure(
                                    5,
                                    rusqlite::types::Type::Blob,
                                    Box::new(err),
                                )
                            })?,
                        })
                    },
                )
                .map_err(internal)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(internal)
        })
        .await
    }

    async fn last_seq(&self) -> StoreResult<i64> {
        self.with_conn(|conn| {
            conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))
                .map_err(internal)
        })
        .await
    }

    async fn read_rejections(&self, query: RejectionQuery) -> StoreResult<Vec<StoredRejection>> {
        self.with_conn(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id, source_id, code, message, received_at, payload FROM rejections
                     WHERE id > ?1 AND (?2 IS NULL OR source_id = ?2) ORDER BY id LIMIT ?3",
                )
                .map_err(internal)?;
            let rows = stmt
                .query_map(
                    params![
                        query.after_id,
                        query.source_id.map(|s| s.0),
                        query.limit.max(1)
                    ],
                    |r| {
                        Ok(StoredRejection {
                            id: r.get(0)?,
                            source_id: SourceId(r.get(1)?),
                            code: r.get(2)?,
                            message: r.get(3)?,
                            received_at: ts(r.get(4)?),
                            payload: r.get(5)?,
                        })
                    },
                )
                .map_err(internal)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(internal)
        })
        .await
    }

    async fn totals(&self) -> StoreResult<Vec<SourceTotals>> {
        self.with_conn(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT source_id, calls, last_seq, rejections FROM source_totals
                     ORDER BY source_id",
                )
                .map_err(internal)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(SourceTotals {
                        source_id: SourceId(r.get(0)?),
                        calls: r.get::<_, i64>(1)?.max(0) as u64,
                        last_seq: r.get(2)?,
                        rejections: r.get::<_, i64>(3)?.max(0) as u64,
                    })
                })
                .map_err(internal)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(internal)
        })
        .await
    }

    async fn trim_log(&self, request: TrimRequest) -> StoreResult<TrimOutcome> {
        let cutoff_us = request.received_before.as_microsecond();
        let mut outcome = TrimOutcome::default();
        for (front, below) in [
            (trim::Front::Calls, request.below_seq),
            (trim::Front::Rejections, i64::MAX),
        ] {
            loop {
                let chunk = self
                    .with_conn(move |conn| {
                        trim::trim_chunk(conn, front, below, cutoff_us, request.chunk)
                    })
                    .await?;
                match front {
                    trim::Front::Calls => outcome.calls += chunk.deleted,
                    trim::Front::Rejections => outcome.rejections += chunk.deleted,
                }
                if chunk.done {
                    break;
                }
                // Let appends queued behind this chunk commit before the next one.
                tokio::task::yield_now().await;
            }
        }
        Ok(outcome)
    }

    async fn create_source(&self, name: &str) -> StoreResult<(Source, WriteKey)> {
        let (name, display_name) = source_names(name).map_err(|reason| StoreError::Invalid {
            field: "name",
            reason,
        })?;
        self.with_conn(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(internal)?;
            let taken: Option<String> = tx
                .query_row(
                    "SELECT name FROM sources
                     WHERE name IN (?1, ?2) OR display_name IN (?1, ?2) LIMIT 1",
                    [&name, &display_name],
                    |r| r.get(0),
                )
                .optional()
                .map_err(internal)?;
            if let Some(taken) = taken {
                return Err(StoreError::Conflict {
                    what: if taken == name {
                        format!("source '{name}'")
                    } else {
                        format!("source '{taken}' named {display_name:?}")
                    },
                });
            }
            tx.execute(
                "INSERT INTO sources (name, display_name, status, created_at)
                 VALUES (?1, ?2, 'enabled', ?3)",
                params![name, display_name, now_us()],
            )
            .map_err(internal)?;
            let id = SourceId(tx.last_insert_rowid());
            let key = insert_write_key(&tx, id)?;
            let source = list_sources_sync(&tx, Some(&name))?.remove(0);
            tx.commit().map_err(internal)?;
            Ok((source, key))
        })
        .await
    }

    async fn list_sources(&self) -> StoreResult<Vec<Source>> {
        self.with_conn(|conn| list_sources_sync(conn, None)).await
    }

    async fn source_by_name(&self, name: &str) -> StoreResult<Source> {
        let name = name.to_owned();
        self.with_conn(move |conn| {
            list_sources_sync(conn, Some(&name))?
                .pop()
                .ok_or_else(|| StoreError::NotFound {
                    what: format!("source '{name}'"),
                })
        })
        .await
    }

    async fn current_write_key(&self, name: &str) -> StoreResult<WriteKey> {
        let name = name.to_owned();
        self.with_conn(move |conn| {
            let (id, _, _) = source_row(conn, &name)?;
            conn.query_row(
                "SELECT key FROM write_keys WHERE source_id = ?1 AND expires_at IS NULL
                 ORDER BY created_at DESC LIMIT 1",
                [id.0],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .map_err(internal)?
            .map(WriteKey::new)
            .ok_or_else(|| StoreError::NotFound {
                what: format!("write key of '{name}'"),
            })
        })
        .await
    }

    async fn rotate_write_key(&self, name: &str, grace: SignedDuration) -> StoreResult<WriteKey> {
        let name = name.to_owned();
        self.with_conn(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(internal)?;
            let (id, _, _) = source_row(&tx, &name)?;
            let expires = now_us() + grace.as_micros() as i64;
            tx.execute(
                "UPDATE write_keys SET expires_at = ?2
                 WHERE source_id = ?1 AND (expires_at IS NULL OR expires_at > ?2)",
                params![id.0, expires],
            )
            .map_err(internal)?;
            let key = insert_write_key(&tx, id)?;
            tx.commit().map_err(internal)?;
            Ok(key)
        })
        .await
    }

    async fn set_source_status(&self, name: &str, status: SourceStatus) -> StoreResult<()> {
        let name = name.to_owned();
        self.with_conn(move |conn| {
            let name = resolve_source(conn, &name)?;
            let changed = conn
                .execute(
                    "UPDATE sources SET status = ?2 WHERE name = ?1",
                    params![name, status.as_str()],
                )
                .map_err(internal)?;
            if changed == 0 {
                return Err(StoreError::NotFound {
                    what: format!("source '{name}'"),
                });
            }
            Ok(())
        })
        .await
    }

    async fn delete_source(&self, name: &str) -> StoreResult<()> {
        let name = name.to_owned();
        self.with_conn(move |conn| {
            let name = resolve_source(conn, &name)?;
            let changed = conn
                .execute("DELETE FROM sources WHERE name = ?1", [&name])
                .map_err(internal)?;
            if changed == 0 {
                return Err(StoreError::NotFound {
                    what: format!("source '{name}'"),
                });
            }
            Ok(())
        })
        .await
    }

    async fn source_settings(&self, name: &str) -> StoreResult<serde_json::Value> {
        let name = name.to_owned();
        self.with_conn(move |conn| {
            let name = resolve_source(conn, &name)?;
            let text: Option<String> = conn
                .query_row(
                    "SELECT settings FROM sources WHERE name = ?1",
                    [&name],
                    |r| r.get(0),
                )
                .optional()
                .map_err(internal)?;
            let text = text.ok_or_else(|| StoreError::NotFound {
                what: format!("source '{name}'"),
            })?;
            Ok(serde_json::from_str(&text).unwrap_or_else(|_| serde_json::json!({})))
        })
        .await
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
        let name = name.to_owned();
        self.with_conn(move |conn| {
            let name = resolve_source(conn, &name)?;
            let changed = conn
                .execute(
                    "UPDATE sources SET settings = ?2 WHERE name = ?1",
                    params![name, settings.to_string()],
                )
                .map_err(internal)?;
            if changed == 0 {
                return Err(StoreError::NotFound {
                    what: format!("source '{name}'"),
                });
            }
            Ok(())
        })
        .await
    }

    async fn all_source_settings(&self) -> StoreResult<Vec<SourceSettings>> {
        self.with_conn(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT id, name, settings FROM sources ORDER BY id")
                .map_err(internal)?;
            let rows = stmt
                .query_map([], |r| {
                    let text: String = r.get(2)?;
                    Ok(SourceSettings {
                        source_id: SourceId(r.get(0)?),
                        name: r.get(1)?,
                        settings: serde_json::from_str(&text)
                            .unwrap_or_else(|_| serde_json::json!({})),
                    })
                })
                .map_err(internal)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(internal)
        })
        .await
    }

    async fn write_keys(&self) -> StoreResult<Vec<WriteKeyRecord>> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(KEY_RECORD_SELECT).map_err(internal)?;
            let rows = stmt.query_map([], key_record).map_err(internal)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(internal)
        })
        .await
    }

    async fn find_write_key(&self, digest: [u8; 32]) -> StoreResult<Option<WriteKeyRecord>> {
        self.with_conn(move |conn| {
            let sql = format!("{KEY_RECORD_SELECT} WHERE k.digest = ?1");
            conn.query_row(&sql, [digest.to_vec()], key_record)
                .optional()
                .map_err(internal)
        })
        .await
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
        let name = name.to_owned();
        let scopes = scopes.clone();
        self.with_conn(move |conn| {
            let key = ApiKey::generate();
            let prefix = key.redacted();
            let created = now_us();
            let inserted = conn.execute(
                "INSERT INTO api_keys (name, prefix, digest, created_at, scopes)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (name) DO NOTHING",
                params![name, prefix, key.digest_hex(), created, scopes.to_stored()],
            );
            match inserted.map_err(internal)? {
                0 => Err(StoreError::Conflict {
                    what: format!("api key '{name}'"),
                }),
                _ => Ok((
                    ApiKeyInfo {
                        id: conn.last_insert_rowid(),
                        name,
                        prefix,
                        created_at: ts(created),
                        scopes,
                    },
                    key,
                )),
            }
        })
        .await
    }

    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKeyInfo>> {
        self.with_conn(|conn| {
            let sql = format!("{API_KEY_SELECT} ORDER BY id");
            let mut stmt = conn.prepare_cached(&sql).map_err(internal)?;
            let rows = stmt.query_map([], api_key_info).map_err(internal)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(internal)
        })
        .await
    }

    async fn delete_api_key(&self, name: &str) -> StoreResult<()> {
        let name = name.to_owned();
        self.with_conn(move |conn| {
            match conn
                .execute("DELETE FROM api_keys WHERE name = ?1", [&name])
                .map_err(internal)?
            {
                0 => Err(StoreError::NotFound {
                    what: format!("api key '{name}'"),
                }),
                _ => Ok(()),
            }
        })
        .await
    }

    async fn authenticate_api_key(&self, key: &ApiKey) -> StoreResult<Option<ApiKeyInfo>> {
        let key = key.clone();
        self.with_conn(move |conn| {
            let digest = key.digest_hex();
            let sql = format!("{API_KEY_SELECT} WHERE digest = ?1");
            let row = conn
                .query_row(&sql, [&digest], |r| {
                    Ok((api_key_info(r)?, r.get::<_, String>(5)?))
                })
                .optional()
                .map_err(internal)?;
            Ok(row
                .filter(|(_, stored)| key.matches_digest(stored))
                .map(|(info, _)| info))
        })
        .await
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
    use super::*;

    /// The writer's page cache is its third of the log's budget.
    #[test]
    fn the_writer_keeps_its_share_of_the_cache_budget() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signalbox.db");
        let conn = open_writer_connection(&path, DEFAULT_LOG_CACHE_BYTES / 3).unwrap();
        let cache: i64 = conn
            .query_row("PRAGMA cache_size", [], |r| r.get(0))
            .unwrap();
        assert_eq!(cache, -((DEFAULT_LOG_CACHE_BYTES / 3 / 1024) as i64));
    }

    /// Calls are stored packed once the log has trained a dictionary on its own calls, and
    /// read back exactly as sent, before and after the store opens again; an opened store
    /// packs with the dictionary it stored.
    #[tokio::test]
    async fn calls_are_packed_once_a_dictionary_is_trained_and_read_back_as_sent() {
        use packing::testing::{append_until_packed, call, packed_rows, payloads, quick_options};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signalbox.db");
        let store = SqliteStore::open(&path, quick_options()).unwrap();
        let (web, _) = store.create_source("web").await.unwrap();
        let mut sent = append_until_packed(&store, web.id).await;
        let calls: Vec<NewCall> = (10_000..10_100).map(call).collect();
        sent.extend(calls.iter().map(|c| c.payload.clone()));
        store.append(web.id, calls, Vec::new()).await.unwrap();
        assert!(packed_rows(&store) >= 100);
        assert_eq!(payloads(&store).await, sent);
        // The packed calls take a fraction of the bytes of the text ones.
        let conn = Connection::open(&path).unwrap();
        let (text, packed): (f64, f64) = conn
            .query_row(
                "SELECT AVG(CASE WHEN typeof(payload) = 'text' THEN length(payload) END),
                        AVG(CASE WHEN typeof(payload) = 'blob' THEN length(payload) END)
                 FROM events",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert!(
            packed * 2.5 < text,
            "{packed} bytes a packed call, {text} a text one"
        );
        store.close();
        drop(store);

        let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
        assert_eq!(payloads(&store).await, sent);
        let before = packed_rows(&store);
        let calls: Vec<NewCall> = (20_000..20_010).map(call).collect();
        sent.extend(calls.iter().map(|c| c.payload.clone()));
        store.append(web.id, calls, Vec::new()).await.unwrap();
        assert_eq!(packed_rows(&store), before + 10);
        assert_eq!(payloads(&store).await, sent);
    }
}
