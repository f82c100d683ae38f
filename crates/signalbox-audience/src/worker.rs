//! The one thread that writes `audience.db`: it follows engage's change feed, runs the
//! schedule of time-driven re-evaluations, advances backfills a chunk at a time, and applies
//! segment edits, in that loop, each step in one transaction with what it changed (the feed
//! cursor included).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{json, Value};
use signalbox_core::Clock;
use signalbox_engage::facts::{EngageFacts, LiveEvents, MetricBulk, MetricSource, ProfileRecord};
use signalbox_engage::feed::FeedCursor;
use signalbox_engage::Engage;
use signalbox_engage::{EngageReader, ProfileKey};
use signalbox_seglang::{find_cycles, EvalContext};
use tokio::sync::oneshot;

use crate::catalog::{self, Catalog};
use crate::error::{AudienceError, AudienceResult};
use crate::model::{SegmentInput, SegmentPatch};

/// Feed rows read per step.
const FEED_LIMIT: usize = 2_000;
/// Due schedule entries handled per step.
const SCHEDULE_LIMIT: i64 = 2_000;
/// Profiles a backfill evaluates per step (one transaction).
pub(crate) const BACKFILL_CHUNK: usize = 10_000;
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

/// What a backfill chunk reads at once for the segment it evaluates.
struct ChunkState {
    idx: usize,
    /// Members among the chunk's profiles, with their join times.
    was: std::collections::HashMap<i64, i64>,
}

pub(crate) struct Worker {
    conn: Connection,
    econn: Box<dyn EngageReader>,
    engage: Engage,
    clock: Arc<dyn Clock>,
    catalog: Catalog,
    cursor: FeedCursor,
    backfills: Vec<Backfill>,
    syncs: Vec<oneshot::Sender<()>>,
}

fn now_us(clock: &dyn Clock) -> i64 {
    clock.now().as_microsecond()
}

impl Worker {
    pub(crate) fn open(
        conn: Connection,
        engage: Engage,
        clock: Arc<dyn Clock>,
    ) -> AudienceResult<Worker> {
        let econn = engage.reader()?;
        let cursor = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'feed_cursor'",
                [],
                |r| r.get::<_, String>(0),
            )
            .optional()?
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default();
        let catalog = Catalog::build(catalog::load_rows(&conn)?);
        let mut backfills = Vec::new();
        {
            let mut stmt = conn.prepare(
                "SELECT pk, backfill_after_pk, backfill_done FROM segments
                 WHERE backfill_after_pk IS NOT NULL ORDER BY pk",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?;
            for row in rows {
                let (segment_pk, after_pk, done) = row?;
                backfills.push(Backfill {
                    segment_pk,
                    after_pk,
                    done: done as u64,
                    bulk: MetricBulk::new(),
                    prepared: false,
                    touched: HashSet::new(),
                });
            }
        }
        Ok(Worker {
            conn,
            econn,
            engage,
            clock,
            catalog,
            cursor,
            backfills,
            syncs: Vec::new(),
        })
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
                    let _ = self.conn.execute_batch("ROLLBACK");
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
        let next: Option<i64> = self
            .conn
            .query_row("SELECT MIN(due_us) FROM schedule", [], |r| r.get(0))
            .unwrap_or(None);
        match next {
            Some(due) => {
                let ahead = due.saturating_sub(now_us(self.clock.as_ref())).max(0) as u64;
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

    /// One round of each kind of work; true if any did something.
    fn step(&mut self) -> AudienceResult<bool> {
        let mut busy = self.step_feed()?;
        busy |= self.step_schedule()?;
        busy |= self.step_backfill()?;
        Ok(busy)
    }

    fn begin(&self) -> AudienceResult<()> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        Ok(())
    }

    fn commit(&self) -> AudienceResult<()> {
        self.conn.execute_batch("COMMIT")?;
        Ok(())
    }

    fn save_cursor(&self, cursor: &FeedCursor) -> AudienceResult<()> {
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES ('feed_cursor', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [serde_json::to_string(cursor).expect("cursor serialises")],
        )?;
        Ok(())
    }

    /// With no segments there is nothing to keep up to date: the cursor skips to the end
    /// (a segment created later is backfilled). True if it moved.
    fn skip_to_end(&mut self) -> AudienceResult<bool> {
        let end = self.econn.end_cursor()?;
        if end == self.cursor {
            return Ok(false);
        }
        self.save_cursor(&end)?;
        self.cursor = end;
        Ok(true)
    }

    fn step_feed(&mut self) -> AudienceResult<bool> {
        if self.catalog.segs.is_empty() {
            return self.skip_to_end();
        }
        let upto = self.engage.applied_seq();
        let changes = self.econn.changes(&self.cursor, upto, FEED_LIMIT)?;
        if changes.cursor == self.cursor {
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
            self.evaluate(*pk, record.as_ref(), todo.clone(), None, now, trigger)?;
        }
        self.save_cursor(&changes.cursor)?;
        self.commit()?;
        self.cursor = changes.cursor;
        for backfill in &mut self.backfills {
            backfill.touched.extend(work.keys().copied());
        }
        Ok(true)
    }

    fn step_schedule(&mut self) -> AudienceResult<bool> {
        let now = self.clock.now();
        let due: Vec<(i64, i64)> = {
            let mut stmt = self.conn.prepare_cached(
                "SELECT segment_pk, profile_pk FROM schedule WHERE due_us <= ?1
                 ORDER BY due_us LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![now.as_microsecond(), SCHEDULE_LIMIT], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
            rows.collect::<Result<_, _>>()?
        };
        if due.is_empty() {
            return Ok(false);
        }
        let mut work: BTreeMap<i64, BTreeSet<usize>> = BTreeMap::new();
        self.begin()?;
        for (segment_pk, profile_pk) in &due {
            self.conn
                .prepare_cached("DELETE FROM schedule WHERE segment_pk = ?1 AND profile_pk = ?2")?
                .execute([segment_pk, profile_pk])?;
            if let Some(&i) = self.catalog.by_pk.get(segment_pk) {
                work.entry(*profile_pk).or_default().insert(i);
            }
        }
        for (pk, todo) in work {
            let record = self
                .econn
                .profile_record(ProfileKey(pk), self.catalog.with_last_event)?;
            self.evaluate(pk, record.as_ref(), todo, None, now, "time")?;
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
        let chunk = match (records.first(), records.last()) {
            (Some(first), Some(last)) => Some(self.chunk_state(idx, first.pk.0, last.pk.0)?),
            _ => None,
        };
        for record in &records {
            let bulk = (!backfill.touched.contains(&record.pk.0)).then_some(&backfill.bulk);
            self.evaluate(
                record.pk.0,
                Some(record),
                BTreeSet::from([idx]),
                chunk.as_ref().map(|c| (c, bulk)),
                now,
                "backfill",
            )?;
        }
        let evaluated = started.elapsed();
        let finished = records.len() < BACKFILL_CHUNK;
        // In memory only once committed: a failed step redoes the chunk.
        let done = backfill.done + records.len() as u64;
        let after_pk = records.last().map_or(backfill.after_pk, |last| last.pk.0);
        if finished {
            self.conn.execute(
                "UPDATE segments SET backfill_after_pk = NULL, backfill_done = ?2,
                 backfill_total = ?2 WHERE pk = ?1",
                params![backfill.segment_pk, done as i64],
            )?;
        } else {
            self.conn.execute(
                "UPDATE segments SET backfill_after_pk = ?2, backfill_done = ?3,
                 backfill_total = MAX(backfill_total, ?3) WHERE pk = ?1",
                params![backfill.segment_pk, after_pk, done as i64],
            )?;
        }
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

    /// Membership of segment `idx` for profiles `lo..=hi`, read at once, and their schedule
    /// entries cleared (evaluation writes the new ones).
    fn chunk_state(&self, idx: usize, lo: i64, hi: i64) -> AudienceResult<ChunkState> {
        let segment_pk = self.catalog.segs[idx].pk;
        let mut stmt = self.conn.prepare_cached(
            "SELECT profile_pk, joined_us FROM members
             WHERE segment_pk = ?1 AND profile_pk BETWEEN ?2 AND ?3",
        )?;
        let was = stmt
            .query_map(params![segment_pk, lo, hi], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        self.conn
            .prepare_cached(
                "DELETE FROM schedule WHERE segment_pk = ?1 AND profile_pk BETWEEN ?2 AND ?3",
            )?
            .execute(params![segment_pk, lo, hi])?;
        Ok(ChunkState { idx, was })
    }

    /// Re-evaluates segments `todo` (catalog indexes) for one profile, records every enter
    /// and leave, re-evaluates the segments that read a segment that changed, and keeps the
    /// schedule. `record` is `None` for a profile that no longer exists (it leaves all).
    fn evaluate(
        &self,
        pk: i64,
        record: Option<&ProfileRecord>,
        mut todo: BTreeSet<usize>,
        chunk: Option<(&ChunkState, Option<&MetricBulk>)>,
        now: Timestamp,
        trigger: &str,
    ) -> AudienceResult<()> {
        let ids = &self.catalog.pks;
        let conn = &self.conn;
        let lookup =
            |group: &str, profile: ProfileKey| catalog::lookup_member(conn, ids, group, profile);
        let live = LiveEvents::new(self.econn.as_ref(), ProfileKey(pk));
        let ctx = EvalContext::default();
        while let Some(i) = todo.pop_first() {
            let seg = &self.catalog.segs[i];
            let known = chunk.filter(|(c, _)| c.idx == i).map(|(c, _)| c);
            let was = match known {
                Some(chunk) => chunk.was.get(&pk).copied(),
                None => catalog::member_joined(conn, seg.pk, pk)?,
            };
            let (is, next, cause) = match record {
                None => (false, None, json!({"trigger": trigger, "conditions": []})),
                Some(record) => {
                    let metrics = match chunk {
                        Some((c, Some(bulk))) if c.idx == i => MetricSource::Bulk(bulk),
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
                if is {
                    conn.prepare_cached(
                        "INSERT INTO members (segment_pk, profile_pk, joined_us) VALUES (?1, ?2, ?3)",
                    )?
                    .execute(params![seg.pk, pk, now.as_microsecond()])?;
                } else {
                    conn.prepare_cached(
                        "DELETE FROM members WHERE segment_pk = ?1 AND profile_pk = ?2",
                    )?
                    .execute([seg.pk, pk])?;
                }
                let profile_id = match record {
                    Some(record) => record.id.clone(),
                    None => self.last_profile_id(pk)?,
                };
                conn.prepare_cached(
                    "INSERT INTO history (segment_pk, segment_id, version, profile_pk, profile_id,
                                          entered, at_us, cause)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?
                .execute(params![
                    seg.pk,
                    seg.id,
                    seg.version,
                    pk,
                    profile_id,
                    is,
                    now.as_microsecond(),
                    cause.to_string()
                ])?;
                todo.extend(self.catalog.dependents[i].iter().copied());
            }
            match next {
                Some(due) => {
                    conn.prepare_cached(
                        "INSERT INTO schedule (segment_pk, profile_pk, due_us) VALUES (?1, ?2, ?3)
                         ON CONFLICT (segment_pk, profile_pk) DO UPDATE SET due_us = excluded.due_us",
                    )?
                    .execute(params![seg.pk, pk, due.as_microsecond()])?;
                }
                None if seg.deps.time_dependent && known.is_none() => {
                    conn.prepare_cached(
                        "DELETE FROM schedule WHERE segment_pk = ?1 AND profile_pk = ?2",
                    )?
                    .execute([seg.pk, pk])?;
                }
                None => {}
            }
        }
        Ok(())
    }

    fn last_profile_id(&self, pk: i64) -> AudienceResult<String> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT profile_id FROM history WHERE profile_pk = ?1 ORDER BY cursor DESC LIMIT 1",
            )?
            .query_row([pk], |r| r.get(0))
            .optional()?
            .unwrap_or_default())
    }

    /// A profile merged into another: it leaves every segment (the survivor is re-evaluated).
    fn drop_profile(&self, pk: i64, now: Timestamp, trigger: &str) -> AudienceResult<()> {
        let segs: Vec<i64> = {
            let mut stmt = self
                .conn
                .prepare_cached("SELECT segment_pk FROM members WHERE profile_pk = ?1")?;
            let rows = stmt.query_map([pk], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut todo = BTreeSet::new();
        for segment_pk in segs {
            if let Some(&i) = self.catalog.by_pk.get(&segment_pk) {
                todo.insert(i);
            }
        }
        self.evaluate(pk, None, todo, None, now, trigger)?;
        self.conn
            .prepare_cached("DELETE FROM schedule WHERE profile_pk = ?1")?
            .execute([pk])?;
        Ok(())
    }

    fn reload(&mut self) -> AudienceResult<()> {
        self.catalog = Catalog::build(catalog::load_rows(&self.conn)?);
        Ok(())
    }

    fn check(&self, id: &str, definition: &Value) -> AudienceResult<String> {
        let parsed = signalbox_seglang::parse(definition).map_err(AudienceError::Invalid)?;
        let mut all = self.catalog.definitions();
        all.insert(id.to_owned(), parsed.clone());
        for cycle in find_cycles(&all) {
            if let Some(err) = cycle.to_error(id, "/data/attributes/definition") {
                return Err(AudienceError::Invalid(vec![err]));
            }
        }
        Ok(parsed.to_json().to_string())
    }

    fn start_backfill(&mut self, segment_pk: i64) -> AudienceResult<()> {
        let total = self.econn.profile_count()? as i64;
        self.conn.execute(
            "UPDATE segments SET backfill_after_pk = 0, backfill_done = 0, backfill_total = ?2
             WHERE pk = ?1",
            params![segment_pk, total],
        )?;
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
        let now = now_us(self.clock.as_ref());
        let mut id = new_segment_id();
        while self.catalog.by_id.contains_key(&id) {
            id = new_segment_id();
        }
        let definition = self.check(&id, &input.definition)?;
        self.conn.execute(
            "INSERT INTO segments (id, name, definition, version, is_starred, created_us, updated_us)
             VALUES (?1, ?2, ?3, 1, ?4, ?5, ?5)",
            params![id, input.name, definition, input.is_starred, now],
        )?;
        let pk = self.conn.last_insert_rowid();
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
        let now = now_us(self.clock.as_ref());
        self.begin()?;
        let result = (|| {
            if let Some(name) = &patch.name {
                self.conn.execute(
                    "UPDATE segments SET name = ?2, updated_us = ?3 WHERE pk = ?1",
                    params![pk, name, now],
                )?;
            }
            if let Some(starred) = patch.is_starred {
                self.conn.execute(
                    "UPDATE segments SET is_starred = ?2, updated_us = ?3 WHERE pk = ?1",
                    params![pk, starred, now],
                )?;
            }
            if let Some(definition) = &patch.definition {
                let definition = self.check(id, definition)?;
                let stored: String = self.conn.query_row(
                    "SELECT definition FROM segments WHERE pk = ?1",
                    [pk],
                    |r| r.get(0),
                )?;
                if stored != definition {
                    self.conn.execute(
                        "UPDATE segments SET definition = ?2, version = version + 1,
                         updated_us = ?3 WHERE pk = ?1",
                        params![pk, definition, now],
                    )?;
                    return Ok(true);
                }
            }
            Ok::<_, AudienceError>(false)
        })();
        match result {
            Ok(changed) => {
                if changed {
                    self.start_backfill(pk)?;
                }
                self.commit()?;
                self.reload()
            }
            Err(err) => {
                self.conn.execute_batch("ROLLBACK")?;
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
        self.conn
            .execute("DELETE FROM members WHERE segment_pk = ?1", [pk])?;
        self.conn
            .execute("DELETE FROM schedule WHERE segment_pk = ?1", [pk])?;
        self.conn
            .execute("DELETE FROM segments WHERE pk = ?1", [pk])?;
        self.commit()?;
        self.backfills.retain(|b| b.segment_pk != pk);
        self.reload()
    }
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
