//! Audience: live segments over engage's profiles and events.
//!
//! A segment is a Klaviyo definition (parsed and evaluated by `signalbox-seglang`) whose
//! membership is kept up to date as data arrives: the worker follows engage's change feed and
//! re-evaluates only what a change can move (an event: segments reading its metric; a profile
//! change: segments reading properties, consent or lists; a list change: segments reading that
//! list; a segment's change: the segments reading it, in dependency order). Time windows are
//! kept by a schedule of each (segment, profile)'s next change instant, so profiles leave on
//! time, across restarts. Creating or editing a segment backfills it over every profile in
//! chunks while incremental updates go on. Every enter and leave is recorded with its cause
//! and a cursor ([`Audience::changes_after`]) that flows follow.
//!
//! # Layout
//! - `worker.rs`: the one thread that writes `audience.db` (feed, schedule, backfills, edits).
//! - `catalog.rs`: the parsed segments in dependency order, and what re-evaluates what.
//! - `db.rs`: the file and its schema. [`model`]: public types. [`error`]: [`AudienceError`].
//!
//! **Invariant:** only the worker writes `audience.db`; the feed cursor commits with the
//! membership changes it caused, so a restart neither loses nor repeats an enter or leave.
//! **Invariant:** membership is always evaluated against engage's current state; the feed
//! only says which profiles to look at. So a profile's membership after its last change is
//! what a from-scratch evaluation gives.

mod catalog;
mod db;
pub mod error;
pub mod model;
mod worker;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;
use signalbox_core::Clock;
use signalbox_engage::facts::{
    EngageFacts, LiveEvents, MetricBulk, MetricSource, SharedSegmentLookup,
};
use signalbox_engage::{Engage, EngageReader, ProfileId, ProfileKey};
use signalbox_seglang::{Definition, EvalContext, ProfileFacts};
use tokio::sync::oneshot;

pub use error::{AudienceError, AudienceResult};
pub use model::*;
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
    path: PathBuf,
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
    /// Opens (creating) `audience.db` at `path` and starts the worker that follows `engage`.
    pub async fn start(
        engage: Engage,
        clock: Arc<dyn Clock>,
        path: impl Into<PathBuf>,
    ) -> AudienceResult<Audience> {
        let path: PathBuf = path.into();
        let (commands, receiver) = mpsc::channel();
        let open_path = path.clone();
        let worker_engage = engage.clone();
        let worker_clock = Arc::clone(&clock);
        let worker = tokio::task::spawn_blocking(move || {
            let conn = db::open_writer(&open_path)?;
            Worker::open(conn, worker_engage, worker_clock)
        })
        .await
        .map_err(|e| AudienceError::Internal(e.to_string()))??;
        let thread = std::thread::Builder::new()
            .name("audience".into())
            .spawn(move || {
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
                path,
                engage,
                clock,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// The file (`DATA_DIR/audience.db`).
    pub fn path(&self) -> &Path {
        &self.inner.path
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
        f: impl FnOnce(&Connection) -> AudienceResult<T> + Send + 'static,
    ) -> AudienceResult<T> {
        let path = self.inner.path.clone();
        tokio::task::spawn_blocking(move || f(&db::open(&path)?))
            .await
            .map_err(|e| AudienceError::Internal(e.to_string()))?
    }

    pub async fn get_segment(&self, id: &str) -> AudienceResult<Segment> {
        let id = id.to_owned();
        self.read(move |conn| {
            segment_rows(conn, "WHERE id = ?1", params![id])?
                .pop()
                .ok_or(AudienceError::NotFound {
                    what: format!("segment {id}"),
                })
        })
        .await
    }

    /// Every segment, oldest first.
    pub async fn list_segments(&self) -> AudienceResult<Vec<Segment>> {
        self.read(|conn| segment_rows(conn, "", params![])).await
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
        let limit = limit.max(1);
        self.read(move |conn| {
            let after_pk: i64 = match &after {
                None => 0,
                Some(id) => segment_pk(conn, id)?,
            };
            let mut segments = segment_rows(
                conn,
                &format!("WHERE pk > ?1 ORDER BY pk LIMIT {}", limit + 1),
                params![after_pk],
            )?;
            let next = if segments.len() > limit {
                segments.truncate(limit);
                segments.last().map(|s| s.id.clone())
            } else {
                None
            };
            Ok(SegmentPage { segments, next })
        })
        .await
    }

    /// The oldest segment with this name.
    pub async fn segment_by_name(&self, name: &str) -> AudienceResult<Option<Segment>> {
        let name = name.to_owned();
        self.read(move |conn| Ok(segment_rows(conn, "WHERE name = ?1", params![name])?.pop()))
            .await
    }

    /// How many profiles are in the segment.
    pub async fn profile_count(&self, id: &str) -> AudienceResult<u64> {
        let id = id.to_owned();
        self.read(move |conn| {
            let pk = segment_pk(conn, &id)?;
            let n: i64 = conn.query_row(
                "SELECT COUNT(*) FROM members WHERE segment_pk = ?1",
                [pk],
                |r| r.get(0),
            )?;
            Ok(n as u64)
        })
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
        self.read(move |conn| {
            let pk = segment_pk(conn, &id)?;
            let mut stmt = conn.prepare(
                "SELECT profile_pk, joined_us FROM members WHERE segment_pk = ?1 AND profile_pk > ?2
                 ORDER BY profile_pk LIMIT ?3",
            )?;
            let rows: Vec<(i64, i64)> = stmt
                .query_map(
                    params![
                        pk,
                        after_pk.map_or(i64::MIN, ProfileKey::get),
                        limit as i64 + 1
                    ],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?
                .collect::<Result<_, _>>()?;
            let econn = engage.reader()?;
            let more = rows.len() > limit;
            let mut members = Vec::new();
            for (profile_pk, joined) in rows.into_iter().take(limit) {
                let profile_pk = ProfileKey(profile_pk);
                let profile_id = econn
                    .profile_id(profile_pk)?
                    .map(|id| id.0)
                    .unwrap_or_default();
                members.push(Member {
                    profile_pk,
                    profile_id,
                    joined: ts(joined),
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
        self.read(move |conn| {
            segment_rows(
                conn,
                "WHERE pk IN (SELECT segment_pk FROM members WHERE profile_pk = ?1)",
                params![profile_pk.0],
            )
        })
        .await
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
    /// filters and splits read the facts segments read: [`signalbox_engage::facts`]). It
    /// reads `audience.db` through a connection of its own; blocking, so call it (and the
    /// lookup) off the async runtime.
    pub fn segment_lookup(&self) -> AudienceResult<SharedSegmentLookup> {
        let conn = Mutex::new(db::open(&self.inner.path)?);
        Ok(Arc::new(move |group_id: &str, profile_pk: ProfileKey| {
            let conn = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            catalog::lookup_member_by_id(&conn, group_id, profile_pk)
        }))
    }

    /// Enters and leaves after `cursor` (0: from the start), oldest first.
    pub async fn changes_after(
        &self,
        cursor: i64,
        limit: usize,
    ) -> AudienceResult<Vec<MembershipChange>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT cursor, segment_id, profile_pk, profile_id, entered, at_us FROM history
                 WHERE cursor > ?1 ORDER BY cursor LIMIT ?2",
            )?;
            let rows = stmt
                .query_map(params![cursor, limit as i64], |r| {
                    Ok(MembershipChange {
                        cursor: r.get(0)?,
                        segment_id: r.get(1)?,
                        profile_pk: ProfileKey(r.get(2)?),
                        profile_id: r.get(3)?,
                        entered: r.get(4)?,
                        at: ts(r.get(5)?),
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
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
        self.read(move |conn| {
            let catalog = catalog::Catalog::build(catalog::load_rows(conn)?);
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
            let lookup = |g: &str, p: ProfileKey| catalog::lookup_member(conn, ids, g, p);
            let live = LiveEvents::new(econn.as_ref(), profile_pk);
            let facts = EngageFacts {
                record: &record,
                metrics: MetricSource::Live(&live),
                segments: &lookup,
            };
            let matches_now = seg.definition.matches(&facts, now, &EvalContext::default());
            let conditions = explain(&seg.definition, &facts, now);
            let joined = catalog::member_joined(conn, seg.pk, profile_pk.0)?;
            let last_change = conn
                .query_row(
                    "SELECT cursor, entered, at_us, cause FROM history
                     WHERE profile_pk = ?1 AND segment_pk = ?2 ORDER BY cursor DESC LIMIT 1",
                    [profile_pk.0, seg.pk],
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
                .optional()?;
            Ok(Why {
                segment_id: seg.id.clone(),
                profile_id,
                member: joined.is_some(),
                joined: joined.map(ts),
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
        self.read(move |conn| {
            let ids: HashMap<String, i64> = catalog::load_rows(conn)?
                .into_iter()
                .map(|(pk, id, _, _)| (id, pk))
                .collect();
            let econn = engage.reader()?;
            count_matching(econn.as_ref(), conn, &ids, &definition, now)
        })
        .await
    }
}

/// Evaluates a definition over every profile with set-based loads.
fn count_matching(
    econn: &dyn EngageReader,
    conn: &Connection,
    ids: &HashMap<String, i64>,
    definition: &Definition,
    now: Timestamp,
) -> AudienceResult<Preview> {
    let mut bulk = MetricBulk::new();
    bulk.prepare(econn, definition)?;
    let with_last_event = definition
        .dependencies()
        .properties
        .contains("last_event_date");
    let lookup = |g: &str, p: ProfileKey| catalog::lookup_member(conn, ids, g, p);
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

fn segment_pk(conn: &Connection, id: &str) -> AudienceResult<i64> {
    conn.query_row("SELECT pk FROM segments WHERE id = ?1", [id], |r| r.get(0))
        .optional()?
        .ok_or_else(|| AudienceError::NotFound {
            what: format!("segment {id}"),
        })
}

fn segment_rows(
    conn: &Connection,
    filter: &str,
    args: impl rusqlite::Params,
) -> AudienceResult<Vec<Segment>> {
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
