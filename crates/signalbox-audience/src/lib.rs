//! Audience: live segments over engage's profiles and events.
//!
//! A segment is a Klaviyo definition (parsed and evaluated by `signalbox-seglang`) whose
//! membership is kept up to date as data arrives: the worker follows engage's change feed and
//! re-evaluates only what a change can move (an event: segments reading its metric; a profile
//! change: segments reading properties, consent or lists; a list change: segments reading that
//! list; a segment's change: the segments reading it, in dependency order). Time windows are
//! kept by a schedule of each profile's next due instant (at or before the next change of any
//! of its time-dependent segments), so profiles leave on time, across restarts. Creating or editing a segment backfills it over every profile in
//! chunks while incremental updates go on. Every enter and leave is recorded with its cause
//! and a cursor ([`Audience::changes_after`]) that flows follow.
//!
//! # Layout
//! - `worker.rs`: the one thread that writes `audience.db` (feed, schedule, backfills, edits).
//! - `memory.rs`: the membership and schedule the worker keeps in memory (it alone writes them).
//! - `catalog.rs`: the parsed segments in dependency order, and what re-evaluates what.
//! - [`store`]: [`AudienceStore`] and [`AudienceWriter`], what the engine keeps, in its
//!   terms; [`sqlite`]: the embedded backend (`audience.db`); [`postgres`]: the PostgreSQL
//!   backend ([`PgAudienceStore`]); the two are the only modules that know SQL.
//!   [`conformance`] (feature `conformance`): the behaviour every backend shows.
//! - [`model`]: public types. [`error`]: [`AudienceError`].
//!
//! **Invariant:** only the worker writes the store (through the one [`AudienceWriter`]); the feed cursor commits with the
//! membership changes it caused, so a restart neither loses nor repeats an enter or leave.
//! **Invariant:** membership is always evaluated against engage's current state; the feed
//! only says which profiles to look at. So a profile's membership after its last change is
//! what a from-scratch evaluation gives.

mod catalog;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod error;
mod memory;
pub mod model;
pub mod postgres;
pub mod sqlite;
pub mod store;
mod to_postgres;
mod worker;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use serde_json::Value;
use signalbox_core::Clock;
use signalbox_engage::facts::{
    EngageFacts, LiveEvents, MetricBulk, MetricSource, SegmentMembership, SharedSegmentLookup,
};
use signalbox_engage::{Engage, EngageReader, ProfileId, ProfileKey};
use signalbox_seglang::{Definition, EvalContext, ProfileFacts};
use tokio::sync::oneshot;

pub use error::{AudienceError, AudienceResult};
pub use model::*;
pub use postgres::PgAudienceStore;
pub use sqlite::SqliteAudienceStore;
pub use store::{AudienceStore, AudienceWriter, SegmentKey};
pub use to_postgres::migrate_to_postgres;
use worker::{Command, Worker};

pub(crate) fn ts(us: i64) -> Timestamp {
    Timestamp::from_microsecond(us).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Every condition's outcome, as recorded in the history and answered by [`Audience::why`].
pub(crate) fn explain(
    definition: &Definition,
    facts: &dyn ProfileFacts,
    now: Timestamp,
) -> Vec<ConditionOutcome> {
    let conditions: Vec<&signalbox_seglang::Condition> =
        definition.conditions().map(|(_, c)| c).collect();
    definition
        .explain(facts, now, &EvalContext::default())
        .into_iter()
        .zip(conditions)
        .map(|(result, condition)| ConditionOutcome {
            pointer: result.at.pointer(),
            kind: condition.type_name().to_owned(),
            matched: result.matched,
            observed: result.observed.to_string(),
        })
        .collect()
}

/// The audience engine's handle. Cheap to clone; the worker stops when the last clone is
/// dropped or [`Audience::shutdown`] is called.
#[derive(Clone)]
pub struct Audience {
    inner: Arc<Inner>,
}

struct Inner {
    commands: mpsc::Sender<Command>,
    store: Arc<dyn AudienceStore>,
    engage: Engage,
    clock: Arc<dyn Clock>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Stop);
    }
}

impl Audience {
    /// Opens (creating) the embedded store at `path` (`audience.db`) and starts the worker
    /// that follows `engage`.
    pub async fn start(
        engage: Engage,
        clock: Arc<dyn Clock>,
        path: impl Into<PathBuf>,
    ) -> AudienceResult<Audience> {
        let path: PathBuf = path.into();
        let store = tokio::task::spawn_blocking(move || SqliteAudienceStore::open(path))
            .await
            .map_err(|e| AudienceError::Internal(e.to_string()))??;
        Audience::start_with_store(engage, clock, Arc::new(store)).await
    }

    /// Starts the worker that follows `engage` over `store`.
    pub async fn start_with_store(
        engage: Engage,
        clock: Arc<dyn Clock>,
        store: Arc<dyn AudienceStore>,
    ) -> AudienceResult<Audience> {
        let (commands, receiver) = mpsc::channel();
        let worker_store = Arc::clone(&store);
        let worker_engage = engage.clone();
        let worker_clock = Arc::clone(&clock);
        let worker = tokio::task::spawn_blocking(move || {
            Worker::open(worker_store.writer()?, worker_engage, worker_clock)
        })
        .await
        .map_err(|e| AudienceError::Internal(e.to_string()))??;
        let thread = std::thread::Builder::new()
            .name("audience".into())
            .spawn(move || {
                // Like engage's applier, whose changes it follows: after the calls and
                // reads people wait for.
                signalbox_engage::yield_to_requests();
                let run = std::panic::AssertUnwindSafe(move || worker.run(receiver));
                if let Err(panic) = std::panic::catch_unwind(run) {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    tracing::error!(panic = %what, "the audience worker stopped");
                }
            })
            .map_err(|e| AudienceError::Internal(format!("cannot start the worker: {e}")))?;
        // The checkpoint's moves wake the worker; the task ends with the pipeline or the worker.
        if let Some(mut applied) = engage.subscribe_applied() {
            let wake = commands.clone();
            tokio::spawn(async move {
                while applied.changed().await.is_ok() {
                    if wake.send(Command::Wake).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(Audience {
            inner: Arc::new(Inner {
                commands,
                store,
                engage,
                clock,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> AudienceResult<T> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .commands
            .send(make(tx))
            .map_err(|_| AudienceError::Unavailable)?;
        rx.await.map_err(|_| AudienceError::Unavailable)
    }

    /// Stops the worker after the step in progress.
    pub async fn shutdown(&self) {
        let _ = self.inner.commands.send(Command::Stop);
        let thread = self.inner.thread.lock().expect("thread lock").take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

    /// Waits until everything engage applied so far, everything due by the clock and every
    /// running backfill is reflected in membership.
    pub async fn sync(&self) -> AudienceResult<()> {
        self.ask(Command::Sync).await
    }

    /// Like [`Audience::sync`], with a time limit.
    pub async fn sync_timeout(&self, timeout: Duration) -> AudienceResult<()> {
        tokio::time::timeout(timeout, self.sync())
            .await
            .map_err(|_| AudienceError::Unavailable)?
    }

    /// Creates a segment (definition checked: parse errors and membership cycles carry JSON
    /// pointers) and starts its backfill.
    pub async fn create_segment(&self, input: SegmentInput) -> AudienceResult<Segment> {
        signalbox_seglang::parse(&input.definition).map_err(AudienceError::Invalid)?;
        let id = self.ask(|tx| Command::Create(input, tx)).await??;
        self.get_segment(&id).await
    }

    /// Renames, stars, or changes the definition (a new version, backfilled).
    pub async fn update_segment(&self, id: &str, patch: SegmentPatch) -> AudienceResult<Segment> {
        if let Some(definition) = &patch.definition {
            signalbox_seglang::parse(definition).map_err(AudienceError::Invalid)?;
        }
        let id_owned = id.to_owned();
        self.ask(|tx| Command::Update(id_owned, patch, tx))
            .await??;
        self.get_segment(id).await
    }

    /// Deletes a segment and its membership (history stays). A segment other segments read
    /// cannot be deleted ([`AudienceError::Conflict`]).
    pub async fn delete_segment(&self, id: &str) -> AudienceResult<()> {
        let id = id.to_owned();
        self.ask(|tx| Command::Delete(id, tx)).await?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn AudienceStore) -> AudienceResult<T> + Send + 'static,
    ) -> AudienceResult<T> {
        let store = Arc::clone(&self.inner.store);
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(|e| AudienceError::Internal(e.to_string()))?
    }

    pub async fn get_segment(&self, id: &str) -> AudienceResult<Segment> {
        let id = id.to_owned();
        self.read(move |store| {
            store.segment(&id)?.ok_or(AudienceError::NotFound {
                what: format!("segment {id}"),
            })
        })
        .await
    }

    /// Every segment, oldest first.
    pub async fn list_segments(&self) -> AudienceResult<Vec<Segment>> {
        self.read(|store| store.segments()).await
    }

    /// A page of segments, oldest first: at most `limit` after the segment `after` (an id;
    /// unknown: [`AudienceError::NotFound`]). `next` is the id to continue after, if more
    /// follow. Reads only the page, not the whole table.
    pub async fn list_segments_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> AudienceResult<SegmentPage> {
        let after = after.map(str::to_owned);
        self.read(move |store| store.segments_page(after.as_deref(), limit))
            .await
    }

    /// The newest segment with this name.
    pub async fn segment_by_name(&self, name: &str) -> AudienceResult<Option<Segment>> {
        let name = name.to_owned();
        self.read(move |store| store.segment_by_name(&name)).await
    }

    /// How many profiles are in the segment.
    pub async fn profile_count(&self, id: &str) -> AudienceResult<u64> {
        let id = id.to_owned();
        self.read(move |store| store.member_count(segment_key(store, &id)?))
            .await
    }

    /// Members in profile key order, after `after_pk`, at most `limit`.
    pub async fn members(
        &self,
        id: &str,
        after_pk: Option<ProfileKey>,
        limit: usize,
    ) -> AudienceResult<MemberPage> {
        let id = id.to_owned();
        let engage = self.inner.engage.clone();
        self.read(move |store| {
            let key = segment_key(store, &id)?;
            let rows = store.members(key, after_pk, limit.saturating_add(1))?;
            let econn = engage.reader()?;
            let more = rows.len() > limit;
            let mut members = Vec::new();
            for (profile_pk, joined) in rows.into_iter().take(limit) {
                let profile_id = econn
                    .profile_id(profile_pk)?
                    .map(|id| id.0)
                    .unwrap_or_default();
                members.push(Member {
                    profile_pk,
                    profile_id,
                    joined,
                });
            }
            let next_after_pk = more.then(|| members.last().map(|m| m.profile_pk)).flatten();
            Ok(MemberPage {
                members,
                next_after_pk,
            })
        })
        .await
    }

    /// The segments a profile is in.
    pub async fn segments_of(&self, profile_id: &ProfileId) -> AudienceResult<Vec<Segment>> {
        let profile_pk = self.profile_pk(profile_id).await?;
        self.read(move |store| store.segments_of(profile_pk)).await
    }

    async fn profile_pk(&self, profile_id: &ProfileId) -> AudienceResult<ProfileKey> {
        let engage = self.inner.engage.clone();
        let id = profile_id.clone();
        tokio::task::spawn_blocking(move || {
            engage
                .reader()?
                .profile_key(&id)?
                .ok_or(AudienceError::NotFound {
                    what: format!("profile {}", id.0),
                })
        })
        .await
        .map_err(|e| AudienceError::Internal(e.to_string()))?
    }

    /// Membership of segments as this engine holds it, for evaluations outside it (flow
    /// filters and splits read the facts segments read: [`signalbox_engage::facts`]). The
    /// lookup blocks, so call it off the async runtime.
    pub fn segment_lookup(&self) -> AudienceResult<SharedSegmentLookup> {
        let store = Arc::clone(&self.inner.store);
        Ok(Arc::new(move |group_id: &str, profile_pk: ProfileKey| {
            store
                .membership(group_id, profile_pk)
                .unwrap_or_else(|err| {
                    tracing::error!(error = %err, "reading segment membership failed");
                    SegmentMembership::NotMember
                })
        }))
    }

    /// Enters and leaves after `cursor` (0: from the start), oldest first.
    pub async fn changes_after(
        &self,
        cursor: i64,
        limit: usize,
    ) -> AudienceResult<Vec<MembershipChange>> {
        self.read(move |store| store.changes_after(cursor, limit))
            .await
    }

    /// Why the profile is (or is not) in the segment: each condition evaluated now, and the
    /// recorded cause of the last enter or leave.
    pub async fn why(&self, segment_id: &str, profile_id: &ProfileId) -> AudienceResult<Why> {
        let profile_pk = self.profile_pk(profile_id).await?;
        let segment_id = segment_id.to_owned();
        let profile_id = profile_id.0.clone();
        let engage = self.inner.engage.clone();
        let now = self.inner.clock.now();
        self.read(move |store| {
            let catalog = catalog::Catalog::build(store.stored_segments()?);
            let &idx = catalog
                .by_id
                .get(&segment_id)
                .ok_or_else(|| AudienceError::NotFound {
                    what: format!("segment {segment_id}"),
                })?;
            let seg = &catalog.segs[idx];
            let econn = engage.reader()?;
            let record =
                econn
                    .profile_record(profile_pk, true)?
                    .ok_or_else(|| AudienceError::NotFound {
                        what: format!("profile {profile_id}"),
                    })?;
            let ids = &catalog.pks;
            let joined = |s: SegmentKey, p: ProfileKey| store.joined(s, p);
            let lookup = |g: &str, p: ProfileKey| catalog::lookup_member(&joined, ids, g, p);
            let live = LiveEvents::new(econn.as_ref(), profile_pk);
            let facts = EngageFacts {
                record: &record,
                metrics: MetricSource::Live(&live),
                segments: &lookup,
            };
            let matches_now = seg.definition.matches(&facts, now, &EvalContext::default());
            let conditions = explain(&seg.definition, &facts, now);
            let joined = store.joined(seg.pk, profile_pk)?;
            let last_change = store.last_change(seg.pk, profile_pk)?;
            Ok(Why {
                segment_id: seg.id.clone(),
                profile_id,
                member: joined.is_some(),
                joined,
                matches_now,
                conditions,
                last_change,
            })
        })
        .await
    }

    /// How many profiles a draft definition would hold now, without saving anything.
    pub async fn preview(&self, definition: &Value) -> AudienceResult<Preview> {
        let definition = signalbox_seglang::parse(definition).map_err(AudienceError::Invalid)?;
        let engage = self.inner.engage.clone();
        let now = self.inner.clock.now();
        self.read(move |store| {
            let ids: HashMap<String, SegmentKey> = store
                .stored_segments()?
                .into_iter()
                .map(|s| (s.id, s.key))
                .collect();
            let econn = engage.reader()?;
            count_matching(econn.as_ref(), store, &ids, &definition, now)
        })
        .await
    }
}

/// Evaluates a definition over every profile with set-based loads.
fn count_matching(
    econn: &dyn EngageReader,
    store: &dyn AudienceStore,
    ids: &HashMap<String, SegmentKey>,
    definition: &Definition,
    now: Timestamp,
) -> AudienceResult<Preview> {
    let mut bulk = MetricBulk::new();
    bulk.prepare(econn, definition)?;
    let with_last_event = definition
        .dependencies()
        .properties
        .contains("last_event_date");
    let joined = |s: SegmentKey, p: ProfileKey| store.joined(s, p);
    let lookup = |g: &str, p: ProfileKey| catalog::lookup_member(&joined, ids, g, p);
    let ctx = EvalContext::default();
    let mut after = ProfileKey(0);
    let mut preview = Preview {
        profile_count: 0,
        profiles_evaluated: 0,
    };
    loop {
        let records = econn.profile_records(after, worker::BACKFILL_CHUNK, with_last_event)?;
        for record in &records {
            let facts = EngageFacts {
                record,
                metrics: MetricSource::Bulk(&bulk),
                segments: &lookup,
            };
            preview.profiles_evaluated += 1;
            if definition.matches(&facts, now, &ctx) {
                preview.profile_count += 1;
            }
        }
        match records.last() {
            Some(last) if records.len() == worker::BACKFILL_CHUNK => after = last.pk,
            _ => break,
        }
    }
    Ok(preview)
}

fn segment_key(store: &dyn AudienceStore, id: &str) -> AudienceResult<SegmentKey> {
    store
        .segment_key(id)?
        .ok_or_else(|| AudienceError::NotFound {
            what: format!("segment {id}"),
        })
}
