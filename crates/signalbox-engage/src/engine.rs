//! [`Engage`]: the handle the server and the CLI hold.
//!
//! Reads go through the crate's `EngageQueries` (over `engage.db`, or the PostgreSQL database
//! of [`EngageConfig::database`]: a pool of read connections), run on the blocking pool.
//! Writes of the Klaviyo-compatible API are appended to the call log first (under [`SourceId::API`]), so
//! that a rebuild replays them; the pipeline applies them like any other entry, and the
//! synchronous ones wait until the pipeline's checkpoint passes their sequence number.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::SignedDuration;
use signalbox_core::{CallKind, Clock, NewCall, PostgresUrl, SourceId};
use signalbox_store::Store;

use crate::apply::store::ApplyStore;
use crate::apply::{
    ApiConsentOp, ApiListOp, ApiMergeOp, ApiProfileOp, ApiResult, Applier, EntryFault, OpResult,
};
use crate::db;
use crate::email::Email;
use crate::error::{EngageError, EngageResult};
use crate::lists::*;
use crate::mapping;
use crate::model::*;
use crate::outbox::{Stamped, WriteOrigin};
use crate::pipeline::{self, Pipeline, PipelineConfig, PipelineStats, RebuildProgress};
use crate::queries::EngageQueries;
use crate::query::{HeldCall, HeldFilter, LogNeeds, ProfileHistory, QuarantinedEntry};
use crate::reader::EngageReader;

/// How [`Engage::start`] runs.
#[derive(Debug, Clone)]
pub struct EngageConfig {
    /// The derived-state file (`DATA_DIR/engage.db`), unless `database` is set.
    pub path: PathBuf,
    /// When set, the derived state is kept in this PostgreSQL database (beside the log's and
    /// the other components' tables) instead of at `path`.
    pub database: Option<PostgresUrl>,
    /// How long a call that cannot be attached to a profile yet is held.
    pub hold_window: SignedDuration,
    /// Log entries applied in one transaction at most.
    pub batch_size: usize,
    /// How often the pipeline looks for new log entries when nobody notified it.
    pub poll_interval: Duration,
    /// How long a synchronous API write waits for the pipeline before answering
    /// [`EngageError::Unavailable`].
    pub apply_timeout: Duration,
    /// The applier's page cache in `engage.db` (embedded only): the index pages its lookups
    /// and inserts walk. Read connections keep a small cache each beside it.
    pub cache_bytes: u64,
    /// Planned failures, for tests of quarantine: the entries it names fail to apply.
    #[doc(hidden)]
    pub fault: Option<EntryFault>,
}

/// [`EngageConfig::cache_bytes`] unless told otherwise.
pub const DEFAULT_ENGAGE_CACHE_BYTES: u64 = 120 << 20;

/// The default hold window: 7 days.
pub const DEFAULT_HOLD_WINDOW: SignedDuration = SignedDuration::from_hours(24 * 7);

/// Profiles named by id in one suppression entry (a segment's members are split into entries
/// of at most this many, so none grows without bound).
const PROFILES_PER_ENTRY: usize = 1000;

impl EngageConfig {
    pub fn new(path: impl Into<PathBuf>) -> EngageConfig {
        EngageConfig {
            path: path.into(),
            database: None,
            hold_window: DEFAULT_HOLD_WINDOW,
            batch_size: 4_000,
            poll_interval: Duration::from_millis(20),
            apply_timeout: Duration::from_secs(10),
            cache_bytes: DEFAULT_ENGAGE_CACHE_BYTES,
            fault: None,
        }
    }
}

/// The engage engine: queries over derived state, and API writes that go through the log.
/// Cheap to clone.
#[derive(Clone)]
pub struct Engage {
    inner: Arc<Inner>,
    /// Where this handle's writes come from (see [`Engage::with_origin`]).
    origin: WriteOrigin,
}

struct Inner {
    /// `None` when opened read-only (no pipeline, no writes).
    store: Option<Arc<dyn Store>>,
    clock: Arc<dyn Clock>,
    config: EngageConfig,
    /// The queries of derived state.
    queries: Arc<dyn EngageQueries>,
    pipeline: Option<Pipeline>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(pipeline) = &self.pipeline {
            pipeline.stop();
        }
    }
}

impl Engage {
    /// Opens (creating) the derived state and starts the pipeline that applies the log to it.
    /// Fails with [`EngageError::Conflict`] when another process runs a pipeline on the file
    /// (or, on PostgreSQL, on the database).
    pub async fn start(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        config: EngageConfig,
    ) -> EngageResult<Engage> {
        let hold_window = config.hold_window;
        let fault = config.fault.clone();
        let cache_bytes = config.cache_bytes;
        match config.database.clone() {
            None => {
                let path = config.path.clone();
                let (applier, lock) = tokio::task::spawn_blocking(move || {
                    let lock = pipeline::take_lock(&path)?;
                    let mut applier = pipeline::open_behind_requests(|| {
                        Applier::open(
                            db::open_store(&path, cache_bytes)?,
                            Some(&path),
                            hold_window,
                        )
                    })?;
                    applier.set_fault(fault);
                    Ok::<_, EngageError>((applier, lock))
                })
                .await
                .map_err(|e| EngageError::Internal(e.to_string()))??;
                let queries = db::open_queries(&config.path);
                Engage::run(applier, Some(lock), queries, store, clock, config)
            }
            Some(url) => {
                // The writer's connection holds the applier's lock from here on.
                let writer = db::postgres::apply::PgWriter::connect(&url).await?;
                let queries = db::postgres::open_queries(&url).await?;
                let applier = tokio::task::spawn_blocking(move || {
                    let mut applier = Applier::open(writer, None, hold_window)?;
                    applier.set_fault(fault);
                    Ok::<_, EngageError>(applier)
                })
                .await
                .map_err(|e| EngageError::Internal(e.to_string()))??;
                Engage::run(applier, None, queries, store, clock, config)
            }
        }
    }

    /// Starts the pipeline of an opened applier (holding `lock`, the lock file of `engage.db`;
    /// `None` when the store holds its own), with `queries` reading what it writes: the part of
    /// [`Engage::start`] that does not know the backend. Called on the runtime the pipeline is
    /// to use.
    pub(crate) fn run<S: ApplyStore + Send + 'static>(
        applier: Applier<S>,
        lock: Option<std::fs::File>,
        queries: Arc<dyn EngageQueries>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        config: EngageConfig,
    ) -> EngageResult<Engage> {
        let pipeline = Pipeline::spawn(
            applier,
            lock,
            Arc::clone(&store),
            Arc::clone(&clock),
            PipelineConfig {
                batch_size: config.batch_size.max(1),
                poll_interval: config.poll_interval,
            },
            tokio::runtime::Handle::current(),
        )?;
        Ok(Engage {
            inner: Arc::new(Inner {
                store: Some(store),
                clock,
                queries,
                config,
                pipeline: Some(pipeline),
            }),
            origin: WriteOrigin::Signalbox,
        })
    }

    /// Opens the derived state for reading only (CLI commands, next to a running server).
    pub async fn open_readonly(path: impl Into<PathBuf>) -> EngageResult<Engage> {
        let path: PathBuf = path.into();
        let probe = path.clone();
        tokio::task::spawn_blocking(move || db::create(&probe))
            .await
            .map_err(|e| EngageError::Internal(e.to_string()))??;
        Ok(Engage {
            inner: Arc::new(Inner {
                store: None,
                clock: Arc::new(signalbox_core::SystemClock),
                queries: db::open_queries(&path),
                config: EngageConfig::new(path),
                pipeline: None,
            }),
            origin: WriteOrigin::Signalbox,
        })
    }

    /// The tables engage keeps in a PostgreSQL database (as its migrations create them).
    pub fn postgres_tables() -> Vec<String> {
        signalbox_store::postgres::schema::tables_created(db::postgres::schema::MIGRATIONS)
    }

    /// Opens the derived state kept in the PostgreSQL database at `url` for reading only
    /// (CLI commands, next to running servers). The schema is brought up to date.
    pub async fn open_readonly_postgres(url: &PostgresUrl) -> EngageResult<Engage> {
        let queries = db::postgres::open_queries(url).await?;
        let mut config = EngageConfig::new(PathBuf::new());
        config.database = Some(url.clone());
        Ok(Engage {
            inner: Arc::new(Inner {
                store: None,
                clock: Arc::new(signalbox_core::SystemClock),
                queries,
                config,
                pipeline: None,
            }),
            origin: WriteOrigin::Signalbox,
        })
    }

    /// The same engine, whose writes are recorded as coming from `origin`. Writes forwarded
    /// from a Segment source ([`WriteOrigin::Segment`]) are applied as usual but make no
    /// outbox row, and mark the profiles they touch as updated through Segment.
    pub fn with_origin(&self, origin: WriteOrigin) -> Engage {
        Engage {
            inner: Arc::clone(&self.inner),
            origin,
        }
    }

    /// Where this handle's writes come from.
    pub fn origin(&self) -> WriteOrigin {
        self.origin
    }

    /// Runs a query of derived state on the blocking pool.
    pub(crate) async fn query<T, F>(&self, f: F) -> EngageResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&dyn EngageQueries) -> EngageResult<T> + Send + 'static,
    {
        let queries = Arc::clone(&self.inner.queries);
        tokio::task::spawn_blocking(move || f(&*queries))
            .await
            .map_err(|e| EngageError::Internal(e.to_string()))?
    }

    /// A write's log payload: the op, and this handle's origin beside it.
    fn payload<T: serde::Serialize>(&self, op: &T) -> String {
        to_json(&Stamped {
            op,
            origin: self.origin,
        })
    }

    pub fn config(&self) -> &EngageConfig {
        &self.inner.config
    }

    /// Tells the pipeline that something was appended to the log (it also polls).
    pub fn notify(&self) {
        if let Some(pipeline) = &self.inner.pipeline {
            pipeline.notify();
        }
    }

    /// The last log sequence number applied to the derived state.
    pub fn applied_seq(&self) -> i64 {
        match &self.inner.pipeline {
            Some(pipeline) => pipeline.applied_seq(),
            None => self.inner.queries.applied_seq().unwrap_or(0),
        }
    }

    /// The checkpoint, as it moves: followers of the change feed ([`crate::feed`]) wake on it.
    /// `None` when opened read-only.
    pub fn subscribe_applied(&self) -> Option<tokio::sync::watch::Receiver<i64>> {
        self.inner.pipeline.as_ref().map(Pipeline::subscribe)
    }

    /// A reader of the derived state for a follower's own thread (the change feed, profiles,
    /// the facts conditions read). Blocking: call it, and the reader, off the async runtime.
    pub fn reader(&self) -> EngageResult<Box<dyn EngageReader>> {
        self.inner.queries.reader()
    }

    /// Waits until everything up to `seq` is applied.
    pub async fn wait_applied(&self, seq: i64, timeout: Duration) -> EngageResult<()> {
        match &self.inner.pipeline {
            Some(pipeline) => pipeline.wait_for(seq, timeout).await,
            None => Err(EngageError::Unavailable),
        }
    }

    /// Waits until everything in the log now is applied.
    pub async fn catch_up(&self, timeout: Duration) -> EngageResult<()> {
        let store = self.store()?;
        let last = store.last_seq().await?;
        self.notify();
        self.wait_applied(last, timeout).await
    }

    /// What the pipeline did since this process started, with ingest-to-applied latency.
    pub fn stats(&self) -> PipelineStats {
        match &self.inner.pipeline {
            Some(pipeline) => pipeline.stats(),
            None => PipelineStats {
                applied_seq: self.applied_seq(),
                ..PipelineStats::default()
            },
        }
    }

    /// Stops the pipeline after the batch in progress. Later writes answer
    /// [`EngageError::Unavailable`].
    pub async fn shutdown(&self) {
        let inner = Arc::clone(&self.inner);
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(pipeline) = &inner.pipeline {
                pipeline.stop();
            }
        })
        .await;
    }

    fn store(&self) -> EngageResult<&Arc<dyn Store>> {
        self.inner.store.as_ref().ok_or(EngageError::Unavailable)
    }

    // Queries.

    pub async fn list_profiles(&self, q: ProfileQuery) -> EngageResult<Page<Profile>> {
        self.query(move |queries| queries.list_profiles(&q)).await
    }

    /// Follows merge redirects: the id of a profile merged into another finds the survivor.
    pub async fn get_profile(&self, id: &ProfileId) -> EngageResult<Profile> {
        let id = id.clone();
        self.query(move |queries| queries.get_profile(&id)).await
    }

    /// A profile's audit trail (which call linked which identifier, merges), provenance and
    /// reported problems.
    pub async fn profile_history(&self, id: &ProfileId) -> EngageResult<ProfileHistory> {
        let id = id.clone();
        self.query(move |queries| queries.profile_history(&id))
            .await
    }

    pub async fn list_metrics(&self, q: MetricQuery) -> EngageResult<Page<Metric>> {
        self.query(move |queries| queries.list_metrics(&q)).await
    }

    pub async fn get_metric(&self, id: &MetricId) -> EngageResult<Metric> {
        let id = id.clone();
        self.query(move |queries| queries.get_metric(&id)).await
    }

    /// An activity feed: by metric and/or profile, with time filters and cursor paging.
    pub async fn list_events(&self, q: EventQuery) -> EngageResult<Page<Event>> {
        self.query(move |queries| queries.list_events(&q)).await
    }

    pub async fn get_event(&self, id: &EventId) -> EngageResult<Event> {
        let id = id.clone();
        self.query(move |queries| queries.get_event(&id)).await
    }

    pub async fn aggregate(&self, q: AggregateQuery) -> EngageResult<AggregateResult> {
        self.query(move |queries| queries.aggregate(&q)).await
    }

    /// Held calls (still waiting, expired or released), in log order after `after_seq`.
    pub async fn held_calls(
        &self,
        filter: HeldFilter,
        after_seq: i64,
        limit: u32,
    ) -> EngageResult<Vec<HeldCall>> {
        self.query(move |queries| queries.held_calls(filter, after_seq, limit))
            .await
    }

    /// Log entries set aside because applying them kept failing, after `after_seq`, in log
    /// order.
    pub async fn quarantined(
        &self,
        after_seq: i64,
        limit: u32,
    ) -> EngageResult<Vec<QuarantinedEntry>> {
        self.query(move |queries| queries.quarantined(after_seq, limit))
            .await
    }

    /// Applies a quarantined log entry again (after the cause was fixed), through the
    /// pipeline: on success it leaves the quarantine, in the same transaction. While it still
    /// fails, answers that error and the entry stays (with one more try). Not found: no
    /// entry with that sequence number is quarantined. Unavailable when opened read-only.
    pub async fn retry_quarantined(&self, seq: i64) -> EngageResult<()> {
        match &self.inner.pipeline {
            Some(pipeline) => pipeline.retry(seq).await,
            None => Err(EngageError::Unavailable),
        }
    }

    /// The oldest log entries engage still needs (see [`LogNeeds`]). The checkpoint is read
    /// first: an entry held or quarantined after that read is above it.
    pub async fn log_needs(&self) -> EngageResult<LogNeeds> {
        let applied_seq = self.applied_seq();
        let (oldest_held_seq, oldest_quarantined_seq) =
            self.query(|queries| queries.log_needs()).await?;
        Ok(LogNeeds {
            applied_seq,
            oldest_held_seq,
            oldest_quarantined_seq,
        })
    }

    /// The pipeline's counters (`applied.track`, `held`, `held.expired`, `skipped.…`, …).
    pub async fn counters(&self) -> EngageResult<Vec<(String, i64)>> {
        self.query(|queries| queries.counters()).await
    }

    /// Every row of the derived state in a stable order: two states are equal when their
    /// dumps are.
    pub async fn dump(&self) -> EngageResult<String> {
        self.query(|queries| queries.dump()).await
    }

    // Writes of the Klaviyo-compatible API.

    pub(crate) async fn append(&self, entries: Vec<(CallKind, String)>) -> EngageResult<i64> {
        let store = self.store()?;
        let now = self.inner.clock.now();
        let calls = entries
            .into_iter()
            .map(|(kind, payload)| NewCall {
                kind,
                message_id: format!("api-{}", uuid::Uuid::new_v4()),
                received_at: now,
                payload,
            })
            .collect();
        let outcome = store.append(SourceId::API, calls, Vec::new()).await?;
        self.notify();
        Ok(outcome.last_seq)
    }

    async fn append_and_wait(&self, kind: CallKind, payload: String) -> EngageResult<ApiResult> {
        let seq = self.append(vec![(kind, payload)]).await?;
        self.result_of(seq).await
    }

    /// Waits until the entry `seq` is applied and reads the result it recorded.
    async fn result_of<T: serde::de::DeserializeOwned>(&self, seq: i64) -> EngageResult<T> {
        self.wait_applied(seq, self.inner.config.apply_timeout)
            .await?;
        let text = self.query(move |queries| queries.api_result(seq)).await?;
        let text =
            text.ok_or_else(|| EngageError::Internal(format!("no result for log entry {seq}")))?;
        serde_json::from_str(&text).map_err(|e| EngageError::Internal(e.to_string()))
    }

    async fn profile_result(&self, result: ApiResult) -> EngageResult<(Profile, bool)> {
        match result {
            ApiResult::Ok { profile, created } => Ok((self.get_profile(&profile).await?, created)),
            ApiResult::Err(err) => Err(err),
        }
    }

    /// Appends the events to the log (durable on return) and lets the pipeline apply them.
    pub async fn create_events(&self, events: Vec<ApiEventInput>) -> EngageResult<()> {
        let mut entries = Vec::with_capacity(events.len());
        for mut event in events {
            if event.metric_name.trim().is_empty() {
                return Err(EngageError::invalid("metric.name", "is required"));
            }
            if event.metric_name.chars().count() > 128 {
                return Err(EngageError::invalid(
                    "metric.name",
                    "must be shorter than 128 characters",
                ));
            }
            if !event.profile.has_identifier() {
                return Err(EngageError::invalid(
                    "profile",
                    "needs an id, email, phone number, external id or anonymous id",
                ));
            }
            if event.profile.id.is_none() {
                event.profile = mapping::normalize_input(event.profile)
                    .map_err(|(field, reason)| EngageError::Invalid { field, reason })?;
            }
            entries.push((CallKind::ApiEvent, self.payload(&event)));
        }
        if entries.is_empty() {
            return Ok(());
        }
        self.append(entries).await?;
        Ok(())
    }

    /// Creates a profile and waits until it is applied; [`EngageError::DuplicateProfile`]
    /// when one of its identifiers belongs to a profile already.
    pub async fn create_profile(&self, p: ProfileInput) -> EngageResult<Profile> {
        let p = mapping::normalize_input(p)
            .map_err(|(field, reason)| EngageError::Invalid { field, reason })?;
        if !p.has_identifier() {
            return Err(EngageError::invalid(
                "profile",
                "needs an email, phone number, external id or anonymous id",
            ));
        }
        let op = ApiProfileOp::Create { profile: p };
        let result = self
            .append_and_wait(CallKind::ApiProfile, self.payload(&op))
            .await?;
        Ok(self.profile_result(result).await?.0)
    }

    /// Updates a profile (following redirects); identifiers that belong to another profile
    /// answer [`EngageError::DuplicateProfile`].
    pub async fn update_profile(&self, id: &ProfileId, p: ProfileInput) -> EngageResult<Profile> {
        let p = mapping::normalize_input(p)
            .map_err(|(field, reason)| EngageError::Invalid { field, reason })?;
        // Fail fast on an id that names nothing.
        self.get_profile(id).await?;
        let op = ApiProfileOp::Update {
            id: id.clone(),
            profile: p,
        };
        let result = self
            .append_and_wait(CallKind::ApiProfile, self.payload(&op))
            .await?;
        Ok(self.profile_result(result).await?.0)
    }

    /// Creates or updates the profile its identifiers name; `true` when created.
    pub async fn import_profile(&self, p: ProfileInput) -> EngageResult<(Profile, bool)> {
        let p = mapping::normalize_input(p)
            .map_err(|(field, reason)| EngageError::Invalid { field, reason })?;
        if !p.has_identifier() {
            return Err(EngageError::invalid(
                "profile",
                "needs an id, email, phone number, external id or anonymous id",
            ));
        }
        let op = ApiProfileOp::Import { profile: p };
        let result = self
            .append_and_wait(CallKind::ApiProfile, self.payload(&op))
            .await?;
        self.profile_result(result).await
    }

    /// Merges `from` into `into` (events move, ids redirect) and returns the survivor.
    pub async fn merge_profiles(
        &self,
        into: &ProfileId,
        from: &[ProfileId],
    ) -> EngageResult<Profile> {
        if from.is_empty() {
            return Err(EngageError::invalid(
                "relationships.profiles",
                "names no profile to merge",
            ));
        }
        let op = ApiMergeOp {
            into: into.clone(),
            from: from.to_vec(),
        };
        let result = self
            .append_and_wait(CallKind::ApiMerge, self.payload(&op))
            .await?;
        Ok(self.profile_result(result).await?.0)
    }
}

/// Lists, members and email consent. Writes are log entries (`api_list`, `api_consent`)
/// applied by the pipeline; each waits until applied.
impl Engage {
    async fn list_op(&self, op: ApiListOp) -> EngageResult<crate::apply::OpOutcome> {
        let seq = self
            .append(vec![(CallKind::ApiList, self.payload(&op))])
            .await?;
        let result: OpResult = self.result_of(seq).await?;
        result
    }

    /// Appends one `api_consent` entry per op and waits for the last; the first error.
    async fn consent_ops(&self, ops: Vec<ApiConsentOp>) -> EngageResult<u64> {
        if ops.is_empty() {
            return Ok(0);
        }
        let last = self
            .append(
                ops.iter()
                    .map(|op| (CallKind::ApiConsent, self.payload(op)))
                    .collect(),
            )
            .await?;
        let count = ops.len() as i64;
        // `append` answers the last sequence number; the entries are consecutive.
        let start = last - count + 1;
        self.wait_applied(last, self.inner.config.apply_timeout)
            .await?;
        let mut changed = 0;
        for seq in start..=last {
            let result: OpResult = self.result_of(seq).await?;
            changed += result?.changed;
        }
        Ok(changed)
    }

    /// Creates a list.
    pub async fn create_list(&self, name: &str, opt_in: OptInProcess) -> EngageResult<List> {
        let name = list_name(name)?;
        let outcome = self.list_op(ApiListOp::Create { name, opt_in }).await?;
        let id = outcome
            .list
            .ok_or_else(|| EngageError::Internal("a created list has no id".into()))?;
        self.get_list(&id).await
    }

    /// Renames a list or changes its opt-in process (`None` leaves a field as it is).
    pub async fn update_list(
        &self,
        id: &ListId,
        name: Option<&str>,
        opt_in: Option<OptInProcess>,
    ) -> EngageResult<List> {
        let name = name.map(list_name).transpose()?;
        self.list_op(ApiListOp::Update {
            id: id.clone(),
            name,
            opt_in,
        })
        .await?;
        self.get_list(id).await
    }

    /// Deletes a list; its members are removed (each a `removed` list change).
    pub async fn delete_list(&self, id: &ListId) -> EngageResult<()> {
        self.list_op(ApiListOp::Delete { id: id.clone() }).await?;
        Ok(())
    }

    pub async fn get_list(&self, id: &ListId) -> EngageResult<List> {
        let id = id.clone();
        self.query(move |queries| queries.get_list(&id)).await
    }

    pub async fn list_lists(&self, q: ListQuery) -> EngageResult<Page<List>> {
        self.query(move |queries| queries.list_lists(&q)).await
    }

    /// A list's members (or its pending ones), by `joined_group_at`.
    pub async fn list_members(&self, q: MemberQuery) -> EngageResult<Page<ListMember>> {
        self.query(move |queries| queries.list_members(&q)).await
    }

    /// Adds profiles to a list as members (consent unchanged); the number added.
    pub async fn add_list_members(&self, id: &ListId, profiles: &[ProfileId]) -> EngageResult<u64> {
        let outcome = self
            .list_op(ApiListOp::AddMembers {
                id: id.clone(),
                profiles: profiles.to_vec(),
            })
            .await?;
        Ok(outcome.changed)
    }

    /// Removes profiles from a list; the number removed.
    pub async fn remove_list_members(
        &self,
        id: &ListId,
        profiles: &[ProfileId],
    ) -> EngageResult<u64> {
        let outcome = self
            .list_op(ApiListOp::RemoveMembers {
                id: id.clone(),
                profiles: profiles.to_vec(),
            })
            .await?;
        Ok(outcome.changed)
    }

    /// Creates or updates each profile by email and adds it to the list (consent
    /// unchanged); the number newly added.
    pub async fn import_list_members(
        &self,
        id: &ListId,
        rows: Vec<ImportRow>,
    ) -> EngageResult<u64> {
        self.get_list(id).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let count = rows.len() as i64;
        let entries = rows
            .into_iter()
            .map(|row| {
                (
                    CallKind::ApiList,
                    self.payload(&ApiListOp::Import {
                        id: id.clone(),
                        row,
                    }),
                )
            })
            .collect();
        let last = self.append(entries).await?;
        self.wait_applied(last, self.inner.config.apply_timeout)
            .await?;
        let mut added = 0;
        for seq in last - count + 1..=last {
            let result: OpResult = self.result_of(seq).await?;
            added += result?.changed;
        }
        Ok(added)
    }

    /// Subscribes profiles (by email, created if new) to email marketing; through a double
    /// opt-in list they are pending until they confirm. The number of changes.
    pub async fn subscribe(&self, req: SubscribeRequest) -> EngageResult<u64> {
        if let Some(id) = &req.list_id {
            self.get_list(id).await?;
        }
        let emails = distinct_emails(req.emails)?;
        let ops = emails
            .into_iter()
            .map(|email| ApiConsentOp::Subscribe {
                email,
                list: req.list_id.clone(),
                custom_source: req.custom_source.clone(),
                historical_import: req.historical_import,
                consented_at: req.consented_at,
            })
            .collect();
        self.consent_ops(ops).await
    }

    /// Unsubscribes profiles (by email) from email marketing; with a list, also removes
    /// them from it.
    pub async fn unsubscribe(&self, req: UnsubscribeRequest) -> EngageResult<u64> {
        if let Some(id) = &req.list_id {
            self.get_list(id).await?;
        }
        let emails = distinct_emails(req.emails)?;
        let ops = emails
            .into_iter()
            .map(|email| ApiConsentOp::Unsubscribe {
                email,
                list: req.list_id.clone(),
            })
            .collect();
        self.consent_ops(ops).await
    }

    /// Adds a global suppression to profiles by email or id, or to every member of a list.
    pub async fn suppress(
        &self,
        target: SuppressTarget,
        reason: SuppressionReason,
    ) -> EngageResult<u64> {
        let ops = match target {
            SuppressTarget::Emails(emails) => distinct_emails(emails)?
                .into_iter()
                .map(|email| ApiConsentOp::Suppress { email, reason })
                .collect(),
            SuppressTarget::List(list) => {
                self.get_list(&list).await?;
                vec![ApiConsentOp::SuppressList { list, reason }]
            }
            SuppressTarget::Profiles(profiles) => profiles
                .chunks(PROFILES_PER_ENTRY)
                .map(|chunk| ApiConsentOp::SuppressProfiles {
                    profiles: chunk.to_vec(),
                    reason,
                })
                .collect(),
        };
        self.consent_ops(ops).await
    }

    /// Lifts `USER_SUPPRESSED` from profiles by email or id, or from every member of a list.
    pub async fn unsuppress(&self, target: SuppressTarget) -> EngageResult<u64> {
        let ops = match target {
            SuppressTarget::Emails(emails) => distinct_emails(emails)?
                .into_iter()
                .map(|email| ApiConsentOp::Unsuppress { email })
                .collect(),
            SuppressTarget::List(list) => {
                self.get_list(&list).await?;
                vec![ApiConsentOp::UnsuppressList { list }]
            }
            SuppressTarget::Profiles(profiles) => profiles
                .chunks(PROFILES_PER_ENTRY)
                .map(|chunk| ApiConsentOp::UnsuppressProfiles {
                    profiles: chunk.to_vec(),
                })
                .collect(),
        };
        self.consent_ops(ops).await
    }

    /// Confirms a pending double opt-in (from its signed link): the profile becomes a
    /// member and SUBSCRIBED with `double_optin`. [`EngageError::NotFound`] when the
    /// profile is not on the list at all.
    pub async fn confirm_subscription(
        &self,
        profile: &ProfileId,
        list: &ListId,
    ) -> EngageResult<ConfirmOutcome> {
        let op = ApiConsentOp::Confirm {
            list: list.clone(),
            profile: profile.clone(),
        };
        let seq = self
            .append(vec![(CallKind::ApiConsent, self.payload(&op))])
            .await?;
        let result: OpResult = self.result_of(seq).await?;
        result?
            .confirmed
            .ok_or_else(|| EngageError::Internal("a confirmation without outcome".into()))
    }

    /// Unsubscribes one profile from email marketing (a signed unsubscribe link); `true`
    /// when something changed.
    pub async fn unsubscribe_profile(&self, profile: &ProfileId) -> EngageResult<bool> {
        let op = ApiConsentOp::LinkUnsubscribe {
            profile: profile.clone(),
        };
        let seq = self
            .append(vec![(CallKind::ApiConsent, self.payload(&op))])
            .await?;
        let result: OpResult = self.result_of(seq).await?;
        Ok(result?.changed > 0)
    }

    /// A profile's email marketing consent (following merges).
    pub async fn email_consent(&self, profile: &ProfileId) -> EngageResult<EmailConsent> {
        let id = profile.clone();
        self.query(move |queries| queries.email_consent(&id)).await
    }

    /// The lists a profile is on (members and pending ones), the first `limit` by list id,
    /// with their number; one indexed read of the profile's memberships.
    pub async fn lists_of_profile(
        &self,
        profile: &ProfileId,
        limit: u32,
    ) -> EngageResult<ProfileLists> {
        let profile = profile.clone();
        self.query(move |queries| queries.lists_of_profile(&profile, limit))
            .await
    }

    /// Whether a profile is on a list (member or pending); `None` when it is not.
    pub async fn member_status(
        &self,
        list: &ListId,
        profile: &ProfileId,
    ) -> EngageResult<Option<MemberStatus>> {
        let (list, profile) = (list.clone(), profile.clone());
        self.query(move |queries| queries.member_status(&list, &profile))
            .await
    }
}

fn list_name(name: &str) -> EngageResult<String> {
    let name = name.trim();
    if name.is_empty() {
        return Err(EngageError::invalid("name", "is required"));
    }
    if name.chars().count() > 255 {
        return Err(EngageError::invalid(
            "name",
            "must be at most 255 characters",
        ));
    }
    Ok(name.to_owned())
}

/// A job's emails (normalised when they were made), duplicates dropped, as log entries
/// carry them.
fn distinct_emails(emails: Vec<Email>) -> EngageResult<Vec<String>> {
    let mut out: Vec<String> = Vec::with_capacity(emails.len());
    for email in emails {
        let email = email.into_string();
        if !out.contains(&email) {
            out.push(email);
        }
    }
    if out.is_empty() {
        return Err(EngageError::invalid("profiles", "names no email"));
    }
    Ok(out)
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("API write serialises")
}

/// Re-derives `engage.db` at `path` from the whole log: applies it to a fresh file beside it,
/// then swaps the files. Refuses while a pipeline (a running server) holds the file.
pub async fn rebuild(
    store: Arc<dyn Store>,
    path: &Path,
    hold_window: SignedDuration,
    now: jiff::Timestamp,
    progress: impl FnMut(RebuildProgress) + Send + 'static,
) -> EngageResult<RebuildProgress> {
    rebuild_with_fault(store, path, hold_window, now, None, progress).await
}

/// [`rebuild`] with planned failures, for tests of quarantine.
#[doc(hidden)]
pub async fn rebuild_with_fault(
    store: Arc<dyn Store>,
    path: &Path,
    hold_window: SignedDuration,
    now: jiff::Timestamp,
    fault: Option<EntryFault>,
    progress: impl FnMut(RebuildProgress) + Send + 'static,
) -> EngageResult<RebuildProgress> {
    let path = path.to_path_buf();
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let _lock = pipeline::take_lock(&path)?;
        let fresh = sibling(&path, "rebuild");
        db::remove(&fresh)?;
        let done = {
            let writer = db::open_store(&fresh, DEFAULT_ENGAGE_CACHE_BYTES)?;
            let mut applier = Applier::open(writer, Some(&fresh), hold_window)?;
            applier.set_fault(fault);
            let done = pipeline::apply_all(&mut applier, &store, &runtime, 4_000, progress)?;
            applier.expire_holds(now.as_microsecond())?;
            applier.checkpoint()?;
            done
        };
        db::replace(&fresh, &path)?;
        Ok(done)
    })
    .await
    .map_err(|e| EngageError::Internal(e.to_string()))?
}

/// Re-derives the state kept in the PostgreSQL database at `url` from the whole log. Unlike
/// `engage.db`'s rebuild, which applies to a fresh file and swaps it in, the tables are
/// rebuilt in place: one transaction empties them all (keys count from 1 again), then the log
/// is applied again in batches, so a reader that looks meanwhile sees the state as of the
/// batches applied so far. Refuses ([`EngageError::Conflict`]) while a pipeline (a running
/// server) applies to the database; its lock is held until the rebuild ends.
pub async fn rebuild_postgres(
    store: Arc<dyn Store>,
    url: &PostgresUrl,
    hold_window: SignedDuration,
    now: jiff::Timestamp,
    progress: impl FnMut(RebuildProgress) + Send + 'static,
) -> EngageResult<RebuildProgress> {
    let mut writer = db::postgres::apply::PgWriter::connect(url).await?;
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        writer.clear()?;
        let mut applier = Applier::open(writer, None, hold_window)?;
        let done = pipeline::apply_all(&mut applier, &store, &runtime, 4_000, progress)?;
        applier.expire_holds(now.as_microsecond())?;
        Ok(done)
    })
    .await
    .map_err(|e| EngageError::Internal(e.to_string()))?
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}
