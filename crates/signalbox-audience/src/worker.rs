//! The one thread that writes the store (through its [`AudienceWriter`]): it follows engage's change feed, runs the
//! schedule of time-driven re-evaluations, advances backfills a chunk at a time, and applies
//! segment edits, in that loop, each step in one transaction with what it changed (the feed
//! cursor included).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{json, Value};
use signalbox_core::Clock;
use signalbox_engage::facts::{
    EngageFacts, EventMemory, LiveEvents, MetricBulk, MetricSource, ProfileRecord,
};
use signalbox_engage::feed::FeedCursor;
use signalbox_engage::Engage;
use signalbox_engage::{EngageReader, ProfileKey};
use signalbox_seglang::{find_cycles, EvalContext};
use tokio::sync::oneshot;

use crate::catalog::{self, Catalog};
use crate::error::{AudienceError, AudienceResult};
use crate::memory::{Dues, Members};
use crate::model::{SegmentInput, SegmentPatch};
use crate::store::{AudienceWriter, NewChange, NewSegment, SegmentKey};

/// Feed rows read per step.
const FEED_LIMIT: usize = 2_000;
/// Due schedule entries handled per step.
const SCHEDULE_LIMIT: usize = 2_000;
/// Profiles a backfill evaluates per step (one transaction).
pub(crate) const BACKFILL_CHUNK: usize = 10_000;
/// Events the worker keeps of the profiles it evaluates (about 16 bytes each), so that a
/// busy profile's history is not read again for each of its events.
const EVENT_MEMORY: usize = 4_000_000;
/// Longest wait between looks at the clock (time-driven changes with a clock that is not
/// wall time, and a read-only engage without a checkpoint watch).
const MAX_WAIT: Duration = Duration::from_millis(200);

pub(crate) enum Command {
    Create(SegmentInput, oneshot::Sender<AudienceResult<String>>),
    Update(String, SegmentPatch, oneshot::Sender<AudienceResult<()>>),
    Delete(String, oneshot::Sender<AudienceResult<()>>),
    /// Answered once everything applied so far, everything due and every backfill is done.
    Sync(oneshot::Sender<()>),
    /// Engage's checkpoint moved.
    Wake,
    Stop,
}

struct Backfill {
    segment_pk: i64,
    after_pk: i64,
    done: u64,
    bulk: MetricBulk,
    prepared: bool,
    /// Profiles evaluated live since `bulk` was loaded: the chunk must not use stale facts.
    touched: HashSet<i64>,
}

/// How an evaluation leaves the profile's entry in the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    /// Every time-dependent segment was evaluated: the entry becomes the earliest of their
    /// next changes.
    Exact,
    /// Some were: the entry becomes the earlier of itself and their next changes. It stays
    /// at or before every segment's next change; when it comes early, the profile is
    /// evaluated and the entry made exact.
    AtMost,
}

pub(crate) struct Worker {
    store: Box<dyn AudienceWriter>,
    econn: Box<dyn EngageReader>,
    engage: Engage,
    clock: Arc<dyn Clock>,
    catalog: Catalog,
    cursor: FeedCursor,
    backfills: Vec<Backfill>,
    syncs: Vec<oneshot::Sender<()>>,
    /// The store's membership and schedule, which only this worker writes.
    members: RefCell<Members>,
    dues: RefCell<Dues>,
    /// Profiles' events, kept up to date from the feed.
    events: RefCell<EventMemory>,
    /// A step failed and rolled back: `members` and `dues` are read again before the next.
    stale: bool,
}

fn now_us(clock: &dyn Clock) -> i64 {
    clock.now().as_microsecond()
}

impl Worker {
    pub(crate) fn open(
        store: Box<dyn AudienceWriter>,
        engage: Engage,
        clock: Arc<dyn Clock>,
    ) -> AudienceResult<Worker> {
        let econn = engage.reader()?;
        let cursor = store.feed_cursor()?.unwrap_or_default();
        let catalog = Catalog::build(store.stored_segments()?);
        let backfills = store
            .running_backfills()?
            .into_iter()
            .map(|state| Backfill {
                segment_pk: state.segment,
                after_pk: state.after.0,
                done: state.done,
                bulk: MetricBulk::new(),
                prepared: false,
                touched: HashSet::new(),
            })
            .collect();
        Ok(Worker {
            store,
            econn,
            engage,
            clock,
            catalog,
            cursor,
            backfills,
            syncs: Vec::new(),
            members: RefCell::default(),
            dues: RefCell::default(),
            events: RefCell::new(EventMemory::new(EVENT_MEMORY)),
            stale: true,
        })
    }

    /// Reads the membership and the schedule from the store.
    fn load_memory(&mut self) -> AudienceResult<()> {
        let segments = self.catalog.segs.iter().map(|seg| seg.pk);
        *self.members.get_mut() = Members::load(self.store.as_ref(), segments)?;
        *self.dues.get_mut() = Dues::load(self.store.as_ref())?;
        *self.events.get_mut() = EventMemory::new(EVENT_MEMORY);
        self.stale = false;
        Ok(())
    }

    /// The loop; returns on [`Command::Stop`] or when every sender is gone. Waits on a plain
    /// channel (the engage checkpoint arrives as [`Command::Wake`]), so a runtime shutting
    /// down never finds the thread inside it.
    pub(crate) fn run(mut self, commands: std::sync::mpsc::Receiver<Command>) {
        use std::sync::mpsc::RecvTimeoutError;
        loop {
            let mut stop = false;
            while let Ok(command) = commands.try_recv() {
                stop |= self.handle(command);
            }
            if stop {
                break;
            }
            let busy = match self.step() {
                Ok(busy) => busy,
                Err(err) => {
                    tracing::error!(error = %err, "audience step failed; retrying");
                    self.roll_back();
                    std::thread::sleep(Duration::from_millis(200));
                    true
                }
            };
            if busy {
                continue;
            }
            for sync in self.syncs.drain(..) {
                let _ = sync.send(());
            }
            match commands.recv_timeout(self.wait_time()) {
                Ok(command) => {
                    if self.handle(command) {
                        break;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        for sync in self.syncs.drain(..) {
            let _ = sync.send(());
        }
    }

    fn wait_time(&self) -> Duration {
        let next = self.store.next_due().unwrap_or(None);
        match next {
            Some(due) => {
                let ahead = due
                    .as_microsecond()
                    .saturating_sub(now_us(self.clock.as_ref()))
                    .max(0) as u64;
                Duration::from_micros(ahead).min(MAX_WAIT)
            }
            None => MAX_WAIT,
        }
    }

    /// Returns true to stop.
    fn handle(&mut self, command: Command) -> bool {
        match command {
            Command::Create(input, reply) => {
                let _ = reply.send(self.create(input));
            }
            Command::Update(id, patch, reply) => {
                let _ = reply.send(self.update(&id, patch));
            }
            Command::Delete(id, reply) => {
                let _ = reply.send(self.delete(&id));
            }
            Command::Sync(reply) => self.syncs.push(reply),
            Command::Wake => {}
            Command::Stop => return true,
        }
        false
    }

    /// Undoes the open transaction; what is in memory is read again before the next step.
    fn roll_back(&mut self) {
        if let Err(err) = self.store.rollback() {
            tracing::error!(error = %err, "audience rollback failed");
        }
        self.stale = true;
    }

    /// One round of each kind of work; true if any did something.
    fn step(&mut self) -> AudienceResult<bool> {
        if self.stale {
            self.load_memory()?;
        }
        let mut busy = self.step_feed()?;
        busy |= self.step_schedule()?;
        busy |= self.step_backfill()?;
        Ok(busy)
    }

    fn begin(&self) -> AudienceResult<()> {
        self.store.begin()
    }

    fn commit(&self) -> AudienceResult<()> {
        self.store.commit()
    }

    fn save_cursor(&self, cursor: &FeedCursor) -> AudienceResult<()> {
        self.store.save_feed_cursor(cursor)
    }

    /// With no segments there is nothing to keep up to date: the cursor skips to the end
    /// (a segment created later is backfilled), and the events remembered are forgotten, as
    /// the skipped ones never reach them. True if it moved.
    fn skip_to_end(&mut self) -> AudienceResult<bool> {
        let end = self.econn.end_cursor()?;
        if end == self.cursor {
            return Ok(false);
        }
        self.save_cursor(&end)?;
        self.cursor = end;
        *self.events.get_mut() = EventMemory::new(EVENT_MEMORY);
        Ok(true)
    }

    fn step_feed(&mut self) -> AudienceResult<bool> {
        let upto = self.engage.applied_seq();
        if self.catalog.segs.is_empty() {
            let moved = self.skip_to_end()?;
            followed(upto);
            return Ok(moved);
        }
        let changes = self.econn.changes(&self.cursor, upto, FEED_LIMIT)?;
        if changes.cursor == self.cursor {
            followed(upto);
            return Ok(false);
        }
        let all: BTreeSet<usize> = (0..self.catalog.segs.len()).collect();
        let mut work: BTreeMap<i64, (BTreeSet<usize>, &'static str)> = BTreeMap::new();
        let mut add = |pk: i64, segs: &[usize], trigger: &'static str| {
            if segs.is_empty() {
                return;
            }
            let entry = work.entry(pk).or_insert_with(|| (BTreeSet::new(), trigger));
            entry.0.extend(segs.iter().copied());
        };
        let mut memory = self.events.borrow_mut();
        for event in &changes.events {
            memory.observe(event);
        }
        for merge in &changes.merges {
            memory.forget(merge.from_pk);
            memory.forget(merge.to_pk);
        }
        drop(memory);
        for event in &changes.events {
            if let Some(segs) = self.catalog.by_metric.get(event.metric_id.as_str()) {
                add(event.profile_pk.0, segs, "event");
            }
            add(event.profile_pk.0, &self.catalog.any_event, "event");
        }
        for pk in &changes.profiles {
            add(pk.0, &self.catalog.profile_readers, "profile");
        }
        for change in &changes.lists {
            if let Some(segs) = self.catalog.by_group.get(&change.list_id) {
                add(change.profile_pk.0, segs, "list");
            }
        }
        let all_segs: Vec<usize> = all.iter().copied().collect();
        let now = self.clock.now();
        self.begin()?;
        for merge in &changes.merges {
            self.drop_profile(merge.from_pk.0, now, "merge")?;
            add(merge.to_pk.0, &all_segs, "merge");
        }
        for (pk, (todo, trigger)) in &work {
            let record = self
                .econn
                .profile_record(ProfileKey(*pk), self.catalog.with_last_event)?;
            self.evaluate(
                *pk,
                record.as_ref(),
                todo.clone(),
                None,
                now,
                trigger,
                Due::AtMost,
            )?;
        }
        self.save_cursor(&changes.cursor)?;
        self.commit()?;
        self.cursor = changes.cursor;
        if !changes.more {
            followed(upto);
        }
        for backfill in &mut self.backfills {
            backfill.touched.extend(work.keys().copied());
        }
        Ok(true)
    }

    fn step_schedule(&mut self) -> AudienceResult<bool> {
        let now = self.clock.now();
        match self.store.next_due()? {
            Some(due) if due <= now => {}
            _ => return Ok(false),
        }
        self.begin()?;
        let due = self.store.take_due(now, SCHEDULE_LIMIT)?;
        self.dues.borrow_mut().taken(&due);
        let todo: BTreeSet<usize> = self.catalog.time_dependent.iter().copied().collect();
        for pk in due {
            let record = self
                .econn
                .profile_record(pk, self.catalog.with_last_event)?;
            self.evaluate(
                pk.0,
                record.as_ref(),
                todo.clone(),
                None,
                now,
                "time",
                Due::Exact,
            )?;
        }
        self.commit()?;
        Ok(true)
    }

    fn step_backfill(&mut self) -> AudienceResult<bool> {
        if self.backfills.is_empty() {
            return Ok(false);
        }
        let mut backfill = self.backfills.remove(0);
        let result = self.backfill_chunk(&mut backfill);
        match result {
            Ok(true) => self.backfills.push(backfill),
            Ok(false) => {}
            Err(err) => {
                self.backfills.insert(0, backfill);
                return Err(err);
            }
        }
        Ok(true)
    }

    /// Evaluates the next chunk; false when the backfill is finished.
    fn backfill_chunk(&mut self, backfill: &mut Backfill) -> AudienceResult<bool> {
        let Some(&idx) = self.catalog.by_pk.get(&backfill.segment_pk) else {
            return Ok(false);
        };
        let started = std::time::Instant::now();
        if !backfill.prepared {
            backfill.touched.clear();
            backfill
                .bulk
                .prepare(self.econn.as_ref(), &self.catalog.segs[idx].definition)?;
            backfill.prepared = true;
        }
        let records = self.econn.profile_records(
            ProfileKey(backfill.after_pk),
            BACKFILL_CHUNK,
            self.catalog.with_last_event,
        )?;
        let loaded = started.elapsed();
        let now = self.clock.now();
        self.begin()?;
        for record in &records {
            let bulk = (!backfill.touched.contains(&record.pk.0)).then_some((idx, &backfill.bulk));
            self.evaluate(
                record.pk.0,
                Some(record),
                BTreeSet::from([idx]),
                bulk,
                now,
                "backfill",
                Due::AtMost,
            )?;
        }
        let evaluated = started.elapsed();
        let finished = records.len() < BACKFILL_CHUNK;
        // In memory only once committed: a failed step redoes the chunk.
        let done = backfill.done + records.len() as u64;
        let after_pk = records.last().map_or(backfill.after_pk, |last| last.pk.0);
        self.store.backfill_progress(
            backfill.segment_pk,
            (!finished).then_some(ProfileKey(after_pk)),
            done,
        )?;
        self.commit()?;
        backfill.done = done;
        backfill.after_pk = after_pk;
        tracing::debug!(
            profiles = records.len(),
            loaded_ms = loaded.as_millis() as u64,
            evaluated_ms = evaluated.as_millis() as u64,
            committed_ms = started.elapsed().as_millis() as u64,
            "backfill chunk"
        );
        if finished {
            tracing::info!(
                segment = %self.catalog.segs[idx].id,
                profiles = backfill.done,
                "segment backfill finished"
            );
        }
        Ok(!finished)
    }

    /// Re-evaluates segments `todo` (catalog indexes) for one profile, records every enter
    /// and leave, re-evaluates the segments that read a segment that changed, and keeps the
    /// profile's schedule entry as `due` says. `record` is `None` for a profile that no
    /// longer exists (it leaves all). `bulk` is the prepared facts of a backfilling segment.
    #[allow(clippy::too_many_arguments)]
    fn evaluate(
        &self,
        pk: i64,
        record: Option<&ProfileRecord>,
        mut todo: BTreeSet<usize>,
        bulk: Option<(usize, &MetricBulk)>,
        now: Timestamp,
        trigger: &str,
        due: Due,
    ) -> AudienceResult<()> {
        let ids = &self.catalog.pks;
        let store = self.store.as_ref();
        let members = &self.members;
        let joined = |segment: SegmentKey, profile: ProfileKey| {
            Ok(members.borrow().joined(segment, profile))
        };
        let lookup =
            |group: &str, profile: ProfileKey| catalog::lookup_member(&joined, ids, group, profile);
        if record.is_none() {
            self.events.borrow_mut().forget(ProfileKey(pk));
        }
        let live = LiveEvents::remembering(self.econn.as_ref(), ProfileKey(pk), &self.events);
        let ctx = EvalContext::default();
        let mut earliest: Option<Timestamp> = None;
        while let Some(i) = todo.pop_first() {
            let seg = &self.catalog.segs[i];
            let was = members.borrow().joined(seg.pk, ProfileKey(pk));
            let (is, next, cause) = match record {
                None => (false, None, json!({"trigger": trigger, "conditions": []})),
                Some(record) => {
                    let metrics = match bulk {
                        Some((idx, bulk)) if idx == i => MetricSource::Bulk(bulk),
                        _ => MetricSource::Live(&live),
                    };
                    let facts = EngageFacts {
                        record,
                        metrics,
                        segments: &lookup,
                    };
                    let is = seg.definition.matches(&facts, now, &ctx);
                    let next = if seg.deps.time_dependent {
                        seg.definition.next_change_after(&facts, now, &ctx)
                    } else {
                        None
                    };
                    let cause = if is != was.is_some() {
                        json!({
                            "trigger": trigger,
                            "conditions": crate::explain(&seg.definition, &facts, now),
                        })
                    } else {
                        Value::Null
                    };
                    (is, next, cause)
                }
            };
            if is != was.is_some() {
                let profile_id = match record {
                    Some(record) => record.id.clone(),
                    None => self.last_profile_id(pk)?,
                };
                store.record_change(&NewChange {
                    segment: seg.pk,
                    segment_id: &seg.id,
                    version: seg.version,
                    profile: ProfileKey(pk),
                    profile_id: &profile_id,
                    entered: is,
                    at: now,
                    cause: &cause,
                })?;
                members
                    .borrow_mut()
                    .set(seg.pk, ProfileKey(pk), is.then_some(now));
                todo.extend(self.catalog.dependents[i].iter().copied());
            }
            earliest = match (earliest, next) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        let mut dues = self.dues.borrow_mut();
        let earliest = earliest.map(Timestamp::as_microsecond);
        let entry = match (due, record) {
            (_, None) | (Due::Exact, _) => earliest,
            (Due::AtMost, Some(_)) => match (dues.get(ProfileKey(pk)), earliest) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
        };
        dues.set(store, ProfileKey(pk), entry)
    }

    fn last_profile_id(&self, pk: i64) -> AudienceResult<String> {
        Ok(self
            .store
            .last_profile_id(ProfileKey(pk))?
            .unwrap_or_default())
    }

    /// A profile merged into another: it leaves every segment (the survivor is re-evaluated)
    /// and the schedule.
    fn drop_profile(&self, pk: i64, now: Timestamp, trigger: &str) -> AudienceResult<()> {
        let mut todo = BTreeSet::new();
        for segment_pk in self.members.borrow().segments_of(ProfileKey(pk)) {
            if let Some(&i) = self.catalog.by_pk.get(&segment_pk) {
                todo.insert(i);
            }
        }
        self.evaluate(pk, None, todo, None, now, trigger, Due::Exact)
    }

    fn reload(&mut self) -> AudienceResult<()> {
        self.catalog = Catalog::build(self.store.stored_segments()?);
        Ok(())
    }

    fn check(&self, id: &str, definition: &Value) -> AudienceResult<Value> {
        let parsed = signalbox_seglang::parse(definition).map_err(AudienceError::Invalid)?;
        let mut all = self.catalog.definitions();
        all.insert(id.to_owned(), parsed.clone());
        for cycle in find_cycles(&all) {
            if let Some(err) = cycle.to_error(id, "/data/attributes/definition") {
                return Err(AudienceError::Invalid(vec![err]));
            }
        }
        Ok(parsed.to_json())
    }

    fn start_backfill(&mut self, segment_pk: i64) -> AudienceResult<()> {
        let total = self.econn.profile_count()?;
        self.store.start_backfill(segment_pk, total)?;
        self.backfills.retain(|b| b.segment_pk != segment_pk);
        self.backfills.push(Backfill {
            segment_pk,
            after_pk: 0,
            done: 0,
            bulk: MetricBulk::new(),
            prepared: false,
            touched: HashSet::new(),
        });
        Ok(())
    }

    fn create(&mut self, input: SegmentInput) -> AudienceResult<String> {
        if self.catalog.segs.is_empty() {
            self.skip_to_end()?;
        }
        let now = self.clock.now();
        let mut id = new_segment_id();
        while self.catalog.by_id.contains_key(&id) {
            id = new_segment_id();
        }
        let definition = self.check(&id, &input.definition)?;
        let pk = self.store.insert_segment(&NewSegment {
            id: &id,
            name: &input.name,
            definition: &definition,
            is_starred: input.is_starred,
            now,
        })?;
        self.start_backfill(pk)?;
        self.reload()?;
        Ok(id)
    }

    fn update(&mut self, id: &str, patch: SegmentPatch) -> AudienceResult<()> {
        let Some(&idx) = self.catalog.by_id.get(id) else {
            return Err(AudienceError::NotFound {
                what: format!("segment {id}"),
            });
        };
        let pk = self.catalog.segs[idx].pk;
        let now = self.clock.now();
        self.begin()?;
        let result = (|| {
            if let Some(name) = &patch.name {
                self.store.rename_segment(pk, name, now)?;
            }
            if let Some(starred) = patch.is_starred {
                self.store.star_segment(pk, starred, now)?;
            }
            if let Some(definition) = &patch.definition {
                let definition = self.check(id, definition)?;
                return self.store.set_definition(pk, &definition, now);
            }
            Ok::<_, AudienceError>(false)
        })();
        match result {
            Ok(changed) => {
                let saved = (|| {
                    if changed {
                        self.start_backfill(pk)?;
                    }
                    self.commit()
                })();
                if let Err(err) = saved {
                    self.roll_back();
                    return Err(err);
                }
                self.reload()
            }
            Err(err) => {
                self.roll_back();
                Err(err)
            }
        }
    }

    fn delete(&mut self, id: &str) -> AudienceResult<()> {
        let Some(&idx) = self.catalog.by_id.get(id) else {
            return Err(AudienceError::NotFound {
                what: format!("segment {id}"),
            });
        };
        if let Some(&reader) = self.catalog.dependents[idx].first() {
            return Err(AudienceError::Conflict {
                reason: format!(
                    "segment {id} is used by segment {}; change that one first",
                    self.catalog.segs[reader].id
                ),
            });
        }
        let pk = self.catalog.segs[idx].pk;
        self.begin()?;
        if let Err(err) = self.store.delete_segment(pk).and_then(|()| self.commit()) {
            self.roll_back();
            return Err(err);
        }
        self.members.get_mut().remove_segment(pk);
        self.backfills.retain(|b| b.segment_pk != pk);
        self.reload()
    }
}

/// Every change engage applied up to log entry `seq` is reflected in the segments
/// (`/metrics`: how far behind engage the segments are).
fn followed(seq: i64) {
    metrics::gauge!("signalbox_segments_followed_seq").set(seq as f64);
}

/// Six letters and digits, as Klaviyo's segment ids look.
fn new_segment_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut n = uuid::Uuid::new_v4().as_u128();
    let mut id = String::with_capacity(6);
    for _ in 0..6 {
        id.push(ALPHABET[(n % ALPHABET.len() as u128) as usize] as char);
        n /= ALPHABET.len() as u128;
    }
    id
}
