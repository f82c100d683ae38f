//! The single writer: drains the append queue in group commits.
//!
//! Every request handler enqueues one [`AppendJob`] and waits for its reply; the writer takes
//! whatever is queued (up to [`MAX_GROUP`] jobs), applies them in one `IMMEDIATE` transaction
//! and commits once, so one fsync covers many requests. A reply is sent only after the commit
//! returned, which is what makes "200 means durable" true.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::SignedDuration;
use rusqlite::{params, Connection, TransactionBehavior};
use signalbox_core::{NewCall, Rejection, SourceId};
use tokio::sync::{mpsc, oneshot};

use super::checkpoint::Checkpointer;
use super::dedupe::{self, DedupeIndex, IndexMemory};
use super::index_thread::IndexThread;
use super::now_us;
use super::packing::Packing;
use crate::{AppendOutcome, GroupCounter, StoreError, StoreResult};

/// Jobs applied in one transaction at most.
const MAX_GROUP: usize = 256;
/// Log rows re-indexed per batch when the dedupe index is behind the log.
const REINDEX_CHUNK: usize = 10_000;
/// A group that takes this long (its commit plus handing its ids to the index) is logged.
const SLOW_GROUP: std::time::Duration = std::time::Duration::from_millis(250);

pub(crate) struct AppendJob {
    pub source: SourceId,
    pub calls: Vec<NewCall>,
    /// The stored form of each call's payload, packed by the request (`packing.rs`); a call
    /// with none (`None`, or past the end) is stored as its JSON.
    pub packed: Vec<Option<Vec<u8>>>,
    pub rejections: Vec<Rejection>,
    pub reply: oneshot::Sender<StoreResult<AppendOutcome>>,
}

pub(crate) struct Writer {
    conn: Connection,
    /// `None` between dropping a broken index and opening it again (see
    /// [`Writer::recover_index`]): groups fail meanwhile, since without it a repeat could
    /// pass.
    index: Option<DedupeIndex>,
    index_dir: PathBuf,
    /// The index's cache and memtable, kept for when it is opened again.
    index_memory: IndexMemory,
    window: SignedDuration,
    /// Since when a write of the index failed and it was not opened again since. A failed
    /// journal flush (a full disk) poisons the index's database for as long as it is open.
    index_broken: Option<Instant>,
    /// When the index was last opened again.
    last_reopen: Option<Instant>,
    window_us: i64,
    /// Stored keys ([`dedupe::key`]: source and message id) not known to be in the index
    /// yet: queued for the index thread, or whose index write failed (those are retried with
    /// the next group). Consulted before the index, so that neither lets a repeat in.
    unindexed: HashMap<String, i64>,
    /// Ids of batches queued for the index thread, by ticket, oldest first.
    /// Batches the index thread holds: their ticket and the ids with the time each was stored.
    in_flight: VecDeque<(u64, Vec<(String, i64)>)>,
    /// Ids whose index write failed, to be written again.
    retry: Vec<String>,
    /// Commits index batches off this thread (none: the writer commits them itself).
    index_thread: Option<IndexThread>,
    /// Whether the index is written on a thread of its own (started again after a reopen).
    threaded_index: bool,
    /// Latest `received_at` the writer has seen, the clock that expires index buckets.
    latest: i64,
    /// Copies committed WAL frames into the database file off this thread.
    checkpointer: Option<Checkpointer>,
    /// Counts the group commits and their calls, for whoever wants to know how loaded ingest is.
    groups: Arc<GroupCounter>,
    /// Hands over trained dictionaries, which the writer stores before they are used.
    packing: Option<Packing>,
}

impl Writer {
    /// Opens the dedupe index in `index_dir` and brings it up to date with the log.
    pub(crate) fn new(
        conn: Connection,
        dedupe_window: SignedDuration,
        index_dir: &Path,
        index_memory: IndexMemory,
    ) -> StoreResult<Writer> {
        let index =
            DedupeIndex::open(index_dir, dedupe_window, index_memory).map_err(index_error)?;
        let mut writer = Writer {
            conn,
            index: Some(index),
            index_dir: index_dir.to_path_buf(),
            index_memory,
            window: dedupe_window,
            index_broken: None,
            last_reopen: None,
            window_us: i64::try_from(dedupe_window.as_micros())
                .unwrap_or(i64::MAX)
                .max(0),
            unindexed: HashMap::new(),
            in_flight: VecDeque::new(),
            retry: Vec::new(),
            index_thread: None,
            threaded_index: false,
            latest: i64::MIN,
            checkpointer: None,
            groups: Arc::default(),
            packing: None,
        };
        writer.catch_up()?;
        Ok(writer)
    }

    /// Adds each group commit to `groups`.
    pub(crate) fn with_group_counter(mut self, groups: Arc<GroupCounter>) -> Writer {
        self.groups = groups;
        self
    }

    /// Stores the dictionaries `packing` trains, so requests may pack with them.
    pub(crate) fn with_packing(mut self, packing: Packing) -> Writer {
        self.packing = Some(packing);
        self
    }

    /// Commits the dedupe index's batches on a thread of their own (see `index_thread.rs`).
    pub(crate) fn with_index_thread(mut self, thread: IndexThread) -> Writer {
        self.index_thread = Some(thread);
        self.threaded_index = true;
        self
    }

    /// Takes in what the index thread finished: committed ids leave `unindexed`, ids of a
    /// failed batch are written again with the next group.
    fn settle_index(&mut self) {
        let Some(thread) = &self.index_thread else {
            return;
        };
        let results: Vec<_> = thread.finished().collect();
        self.settle(results);
    }

    /// Takes in the index thread's outcomes (see [`Writer::settle_index`]).
    fn settle(&mut self, results: Vec<super::index_thread::Committed>) {
        for (ticket, result) in results {
            let Some(pos) = self.in_flight.iter().position(|(t, _)| *t == ticket) else {
                continue;
            };
            let (_, entries) = self.in_flight.remove(pos).expect("position is in range");
            match result {
                Ok(()) => {
                    for (id, at) in entries {
                        // Only the copy this batch wrote: the id may have been stored again
                        // since (a repeat outside the window), and that newer copy is not in
                        // the index yet.
                        if self.unindexed.get(&id) == Some(&at) {
                            self.unindexed.remove(&id);
                        }
                    }
                }
                Err(err) => {
                    tracing::error!(error = %err, "dedupe index write failed; retrying with the next group");
                    self.retry.extend(entries.into_iter().map(|(id, _)| id));
                    self.index_broken.get_or_insert_with(Instant::now);
                }
            }
        }
    }

    /// Opens the dedupe index again after a write of it failed, at most once a second: its
    /// handles (and the index thread's batches) go first, then it is opened, recovered from
    /// its journal, and re-indexed from the log after its marker, which covers every id whose
    /// write failed. Until that succeeds, groups fail (the index may miss ids).
    fn recover_index(&mut self) {
        if self.index_broken.is_none()
            || self.last_reopen.is_some_and(|t| t.elapsed() < REOPEN_EVERY)
        {
            return;
        }
        self.last_reopen = Some(Instant::now());
        if let Some(mut thread) = self.index_thread.take() {
            let results = thread.finish();
            self.settle(results);
        }
        self.in_flight.clear();
        self.index = None;
        match DedupeIndex::open(&self.index_dir, self.window, self.index_memory) {
            Ok(index) => self.index = Some(index),
            Err(err) => {
                tracing::warn!(error = %err, "the dedupe index does not open again yet");
                return;
            }
        }
        if let Err(err) = self.catch_up() {
            tracing::warn!(error = %err, "the dedupe index does not catch up yet");
            return;
        }
        if self.threaded_index {
            match IndexThread::start() {
                Ok(thread) => self.index_thread = Some(thread),
                Err(err) => tracing::warn!(error = %err, "the dedupe index thread does not start"),
            }
        }
        self.retry.clear();
        self.index_broken = None;
        tracing::info!("dedupe index opened again after a failed write");
    }

    /// Hands checkpoints to a background thread (see `checkpoint.rs`).
    pub(crate) fn with_checkpointer(mut self, checkpointer: Checkpointer) -> Writer {
        self.checkpointer = Some(checkpointer);
        self
    }

    /// Indexes the ids of the calls logged after the index's marker (a crash between the log
    /// commit and the index write, a lost unsynced index tail, or a new index beside an old
    /// log). Calls older than one window before the newest are skipped: they can no longer
    /// make anything a repeat.
    fn catch_up(&mut self) -> StoreResult<()> {
        let from = self
            .index
            .as_ref()
            .ok_or_else(index_closed)?
            .indexed_seq()
            .map_err(index_error)?;
        let newest: Option<i64> = self
            .conn
            .query_row(
                "SELECT MAX(received_at) FROM events WHERE seq > ?1",
                params![from],
                |r| r.get(0),
            )
            .map_err(internal)?;
        let Some(newest) = newest else {
            return Ok(());
        };
        let cutoff = newest.saturating_sub(self.window_us);
        let mut stmt = self
            .conn
            .prepare(
                "SELECT seq, source_id, message_id, received_at FROM events
                 WHERE seq > ?1 ORDER BY seq",
            )
            .map_err(internal)?;
        let mut rows = stmt.query(params![from]).map_err(internal)?;
        let mut chunk: Vec<(String, i64)> = Vec::with_capacity(REINDEX_CHUNK);
        let mut last_seq = from;
        let mut total = 0usize;
        loop {
            let row = rows.next().map_err(internal)?;
            if let Some(row) = row {
                let seq: i64 = row.get(0).map_err(internal)?;
                let at: i64 = row.get(3).map_err(internal)?;
                last_seq = seq;
                if at >= cutoff {
                    let source = SourceId(row.get(1).map_err(internal)?);
                    let id: String = row.get(2).map_err(internal)?;
                    chunk.push((dedupe::key(source, &id), at));
                }
                if chunk.len() < REINDEX_CHUNK {
                    continue;
                }
            }
            total += chunk.len();
            self.index
                .as_mut()
                .ok_or_else(index_closed)?
                .record(chunk.iter().map(|(id, at)| (id.as_str(), *at)), last_seq)
                .map_err(index_error)?;
            chunk.clear();
            if row.is_none() {
                break;
            }
        }
        self.latest = newest;
        self.index
            .as_mut()
            .ok_or_else(index_closed)?
            .expire(newest)
            .map_err(index_error)?;
        tracing::info!(
            from_seq = from,
            to_seq = last_seq,
            ids = total,
            "dedupe index caught up with the log"
        );
        Ok(())
    }

    /// Runs until every sender is dropped, then returns after the last commit.
    pub(crate) fn run(mut self, mut rx: mpsc::Receiver<AppendJob>) {
        let mut jobs = Vec::with_capacity(MAX_GROUP);
        while let Some(first) = rx.blocking_recv() {
            jobs.push(first);
            while jobs.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            // Counted before the commit replies, so whoever got a reply sees its group.
            self.groups
                .add(jobs.iter().map(|job| job.calls.len()).sum(), Duration::ZERO);
            let started = Instant::now();
            self.commit_group(&mut jobs);
            self.groups.add_busy(started.elapsed());
        }
        tracing::debug!("writer drained and stopped");
    }

    fn commit_group(&mut self, jobs: &mut Vec<AppendJob>) {
        let started = Instant::now();
        let n_calls: usize = jobs.iter().map(|j| j.calls.len()).sum();
        let dictionary = self.packing.as_ref().and_then(Packing::take_trained);
        let result = self.append(jobs, dictionary.as_ref().map(|d| d.bytes.as_slice()));
        let elapsed = started.elapsed();
        metrics::histogram!("signalbox_commit_seconds").record(elapsed.as_secs_f64());
        metrics::histogram!("signalbox_commit_group_requests").record(jobs.len() as f64);
        match result {
            Ok(Appended {
                outcomes,
                fresh,
                last_seq,
                dictionary_id,
            }) => {
                if let (Some(packing), Some(id), Some(dictionary)) =
                    (&self.packing, dictionary_id, dictionary)
                {
                    packing.stored(id, dictionary);
                }
                if let Some(checkpointer) = &self.checkpointer {
                    checkpointer.nudge();
                }
                // The log is committed: answer now, then index the new ids. Until the index
                // has them they stay in `unindexed`, so a repeat in the next group is caught.
                let mut calls = Vec::with_capacity(jobs.len());
                for (job, outcome) in jobs.drain(..).zip(outcomes) {
                    let _ = job.reply.send(Ok(outcome));
                    calls.push((job.source, job.calls));
                }
                let indexing = Instant::now();
                self.index_fresh(&calls, &fresh, last_seq);
                let total = started.elapsed();
                if total >= SLOW_GROUP {
                    tracing::warn!(
                        calls = n_calls,
                        commit_ms = elapsed.as_millis() as u64,
                        index_ms = indexing.elapsed().as_millis() as u64,
                        "slow group commit"
                    );
                }
            }
            Err(err) => {
                if let (Some(packing), Some(_)) = (&self.packing, &dictionary) {
                    packing.not_stored();
                }
                if matches!(err, WriteError::Index(_)) {
                    self.index_broken.get_or_insert_with(Instant::now);
                }
                tracing::error!(error = %err, calls = n_calls, "group commit failed");
                for job in jobs.drain(..) {
                    let _ = job.reply.send(Err(StoreError::Internal(err.to_string())));
                }
            }
        }
    }

    /// Appends one group in one transaction and commits it, with `dictionary` (a trained
    /// one, not stored yet) stored first.
    fn append(
        &mut self,
        jobs: &[AppendJob],
        dictionary: Option<&[u8]>,
    ) -> Result<Appended, WriteError> {
        self.settle_index();
        self.recover_index();
        let Writer {
            conn,
            index,
            window_us,
            unindexed,
            latest,
            ..
        } = self;
        let window_us = *window_us;
        let index = index.as_ref().ok_or(WriteError::IndexClosed)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let dictionary_id = match dictionary {
            Some(bytes) => {
                tx.execute(
                    "INSERT INTO payload_dictionaries (created_at, bytes) VALUES (?1, ?2)",
                    params![now_us(), bytes],
                )?;
                Some(tx.last_insert_rowid())
            }
            None => None,
        };
        let mut outcomes = Vec::with_capacity(jobs.len());
        // Keys stored by this group, with their `received_at`, and where each call is (in log
        // order, the order the index takes them in).
        let mut fresh: HashMap<String, i64> = HashMap::new();
        let mut stored = Vec::new();
        let mut last_seq = 0;
        // Per source: calls stored, the last one's seq, rejections (kept in `source_totals`).
        let mut totals: BTreeMap<i64, (i64, i64, i64)> = BTreeMap::new();
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO events (source_id, kind, message_id, received_at, payload)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut reject = tx.prepare_cached(
                "INSERT INTO rejections (source_id, code, message, received_at, payload)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for (job_idx, job) in jobs.iter().enumerate() {
                let mut outcome = AppendOutcome::default();
                for (call_idx, call) in job.calls.iter().enumerate() {
                    let received = call.received_at.as_microsecond();
                    let cutoff = received.saturating_sub(window_us);
                    let key = dedupe::key(job.source, &call.message_id);
                    // A message id is a repeat when its source stored it at most one window
                    // before this call: earlier in this group, in a group whose index write
                    // failed, or in the index.
                    let repeat = fresh.get(&key).is_some_and(|&at| at >= cutoff)
                        || unindexed.get(&key).is_some_and(|&at| at >= cutoff)
                        || index.seen(&key, received)?;
                    if repeat {
                        outcome.duplicates += 1;
                        continue;
                    }
                    let payload: &dyn rusqlite::ToSql = match job.packed.get(call_idx) {
                        Some(Some(packed)) => packed,
                        _ => &call.payload,
                    };
                    insert.execute(params![
                        job.source.0,
                        call.kind.as_str(),
                        call.message_id,
                        received,
                        payload
                    ])?;
                    fresh.insert(key, received);
                    stored.push((job_idx, call_idx));
                    *latest = (*latest).max(received);
                    outcome.appended += 1;
                    last_seq = tx.last_insert_rowid();
                    outcome.last_seq = last_seq;
                    let total = totals.entry(job.source.0).or_default();
                    total.0 += 1;
                    total.1 = last_seq;
                }
                for rejection in &job.rejections {
                    reject.execute(params![
                        job.source.0,
                        rejection.code.as_str(),
                        rejection.message,
                        rejection.received_at.as_microsecond(),
                        rejection.payload
                    ])?;
                    outcome.rejected += 1;
                    totals.entry(job.source.0).or_default().2 += 1;
                }
                outcomes.push(outcome);
            }
            let mut count = tx.prepare_cached(
                "INSERT INTO source_totals (source_id, calls, last_seq, rejections)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (source_id) DO UPDATE SET
                    calls = calls + excluded.calls,
                    last_seq = MAX(last_seq, excluded.last_seq),
                    rejections = rejections + excluded.rejections",
            )?;
            for (source, (calls, seq, rejections)) in &totals {
                count.execute(params![source, calls, seq, rejections])?;
            }
        }
        tx.commit()?;
        Ok(Appended {
            outcomes,
            fresh: stored,
            last_seq,
            dictionary_id,
        })
    }

    /// Records the keys a committed group stored in the dedupe index. From the commit on the
    /// calls are stored whatever happens to the index, which a crash here would leave behind
    /// the log (re-indexed on open); a failed write is retried with the next group.
    fn index_fresh(
        &mut self,
        calls: &[(SourceId, Vec<NewCall>)],
        fresh: &[(usize, usize)],
        last_seq: i64,
    ) {
        if fresh.is_empty() {
            return;
        }
        let stored: Vec<(String, i64)> = fresh
            .iter()
            .map(|&(job, call)| {
                let (source, calls) = &calls[job];
                let call = &calls[call];
                (
                    dedupe::key(*source, &call.message_id),
                    call.received_at.as_microsecond(),
                )
            })
            .collect();
        if self.index_thread.is_some() {
            self.index_in_background(stored, last_seq);
        } else {
            let pending = self.unindexed.iter().map(|(key, at)| (key.as_str(), *at));
            let recorded = stored.iter().map(|(key, at)| (key.as_str(), *at));
            let recorded = match self.index.as_mut() {
                Some(index) => index.record(pending.chain(recorded), last_seq),
                None => Err(fjall::Error::Poisoned),
            };
            match recorded {
                Ok(()) => self.unindexed.clear(),
                Err(err) => {
                    tracing::error!(error = %err, "dedupe index write failed; retrying with the next group");
                    self.unindexed.extend(stored);
                    self.index_broken.get_or_insert_with(Instant::now);
                }
            }
        }
        let Some(index) = self.index.as_mut() else {
            return;
        };
        match index.expire(self.latest) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(buckets = n, "dropped expired message ids"),
            Err(err) => tracing::warn!(error = %err, "dropping expired message ids failed"),
        }
    }

    /// Queues the stored ids (and any to retry) for the index thread; they stay in
    /// `unindexed` until it reports them committed.
    fn index_in_background(&mut self, stored: Vec<(String, i64)>, last_seq: i64) {
        let mut ids = std::mem::take(&mut self.retry);
        for (key, at) in stored {
            ids.push(key.clone());
            self.unindexed.insert(key, at);
        }
        let unindexed = &self.unindexed;
        let entries: Vec<(String, i64)> = ids
            .iter()
            .filter_map(|id| unindexed.get(id).map(|at| (id.clone(), *at)))
            .collect();
        let batch = match self
            .index
            .as_mut()
            .map(|index| index.batch(entries.iter().map(|(id, at)| (id.as_str(), *at)), last_seq))
        {
            Some(Ok(batch)) => batch,
            Some(Err(err)) => {
                tracing::error!(error = %err, "dedupe index write failed; retrying with the next group");
                self.retry = ids;
                self.index_broken.get_or_insert_with(Instant::now);
                return;
            }
            None => {
                self.retry = ids;
                return;
            }
        };
        let thread = self.index_thread.as_mut().expect("checked by the caller");
        match thread.send(batch) {
            Some(ticket) => self.in_flight.push_back((ticket, entries)),
            None => {
                tracing::error!("the dedupe index thread stopped; retrying with the next group");
                self.index_thread = None;
                self.retry = ids;
            }
        }
    }
}

/// What one committed group did.
struct Appended {
    outcomes: Vec<AppendOutcome>,
    /// (job, call) of each call stored, in log order.
    fresh: Vec<(usize, usize)>,
    last_seq: i64,
    /// The id the group's dictionary was stored under, when it stored one.
    dictionary_id: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum WriteError {
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("dedupe index: {0}")]
    Index(#[from] fjall::Error),
    #[error("dedupe index: not open again yet after a failed write")]
    IndexClosed,
}

/// How often a broken dedupe index is opened again at most.
const REOPEN_EVERY: Duration = Duration::from_secs(1);

fn index_closed() -> StoreError {
    StoreError::Internal("dedupe index: not open again yet after a failed write".into())
}

fn internal(err: rusqlite::Error) -> StoreError {
    StoreError::Internal(err.to_string())
}

fn index_error(err: fjall::Error) -> StoreError {
    StoreError::Internal(format!("dedupe index: {err}"))
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;
    use signalbox_core::CallKind;

    use super::*;

    fn writer(dir: &Path, window: SignedDuration) -> Writer {
        let mut conn = Connection::open(dir.join("signalbox.db")).unwrap();
        super::super::schema::migrate(&mut conn).unwrap();
        Writer::new(
            conn,
            window,
            &dir.join("signalbox.db-dedupe"),
            IndexMemory::from_budget(2 << 20),
        )
        .unwrap()
    }

    fn call(id: &str, received_at: Timestamp) -> NewCall {
        NewCall {
            kind: CallKind::Track,
            message_id: id.into(),
            received_at,
            payload: "{}".into(),
        }
    }

    fn append(writer: &mut Writer, calls: Vec<NewCall>) -> AppendOutcome {
        append_from(writer, SourceId(1), calls)
    }

    fn append_from(writer: &mut Writer, source: SourceId, calls: Vec<NewCall>) -> AppendOutcome {
        let (reply, wait) = oneshot::channel();
        let job = AppendJob {
            source,
            calls,
            packed: Vec::new(),
            rejections: Vec::new(),
            reply,
        };
        writer.commit_group(&mut vec![job]);
        wait.blocking_recv().unwrap().unwrap()
    }

    #[test]
    fn append_reports_the_seq_of_its_last_call() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = writer(dir.path(), SignedDuration::from_hours(1));
        let now = Timestamp::now();
        let first = append(&mut writer, vec![call("a", now), call("b", now)]);
        assert_eq!((first.appended, first.last_seq), (2, 2));
        let second = append(&mut writer, vec![call("c", now), call("a", now)]);
        assert_eq!(
            (second.appended, second.duplicates, second.last_seq),
            (1, 1, 3)
        );
    }

    #[test]
    fn ids_queued_for_the_index_thread_still_count_as_stored() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = writer(dir.path(), SignedDuration::from_hours(1))
            .with_index_thread(IndexThread::start().unwrap());
        let now = Timestamp::now();
        // Each group's ids go to the index thread after the answer; the next group, at once,
        // must still see them, committed or not.
        for round in 0..200 {
            let id = format!("id-{round}");
            assert_eq!(append(&mut writer, vec![call(&id, now)]).appended, 1);
            let again = append(&mut writer, vec![call(&id, now), call("fresh", now)]);
            assert_eq!(again.duplicates, 1 + u32::from(round > 0), "round {round}");
        }
        let mut thread = writer.index_thread.take().unwrap();
        assert!(thread.finish().iter().all(|(_, result)| result.is_ok()));
        // Everything reached the index, marker included.
        let key = dedupe::key(SourceId(1), "id-199");
        assert!(writer
            .index
            .as_ref()
            .unwrap()
            .seen(&key, now.as_microsecond())
            .unwrap());
        assert_eq!(writer.index.as_ref().unwrap().indexed_seq().unwrap(), 201);
    }

    #[test]
    fn a_repeat_counts_from_the_stored_copy_not_from_the_last_repeat() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = writer(dir.path(), SignedDuration::from_mins(10));
        let t0: Timestamp = "2026-03-01T12:00:00Z".parse().unwrap();
        let at = |mins: i64| t0 + SignedDuration::from_mins(mins);
        assert_eq!(append(&mut writer, vec![call("x", at(0))]).appended, 1);
        assert_eq!(append(&mut writer, vec![call("x", at(9))]).duplicates, 1);
        assert_eq!(append(&mut writer, vec![call("x", at(11))]).appended, 1);
        assert_eq!(append(&mut writer, vec![call("x", at(12))]).duplicates, 1);
        // Long after: every bucket expired, the id is new again.
        assert_eq!(append(&mut writer, vec![call("x", at(60))]).appended, 1);
    }

    #[test]
    fn calls_logged_past_the_index_marker_are_reindexed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let now = Timestamp::now();
        {
            let mut writer = writer(dir.path(), SignedDuration::from_hours(1));
            append(&mut writer, vec![call("indexed", now)]);
            // As if the process died between the log commit and the index write.
            writer
                .conn
                .execute(
                    "INSERT INTO events (source_id, kind, message_id, received_at, payload)
                     VALUES (1, 'track', 'logged-only', ?1, '{}')",
                    params![now.as_microsecond()],
                )
                .unwrap();
        }
        let mut writer = writer(dir.path(), SignedDuration::from_hours(1));
        assert_eq!(writer.index.as_ref().unwrap().indexed_seq().unwrap(), 2);
        let again = append(
            &mut writer,
            vec![
                call("indexed", now),
                call("logged-only", now),
                call("new", now),
            ],
        );
        assert_eq!((again.appended, again.duplicates), (1, 2));
    }

    #[test]
    fn message_ids_are_deduplicated_per_source() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = writer(dir.path(), SignedDuration::from_hours(1));
        let now = Timestamp::now();
        // A browser source cannot pre-empt a server source's predictable id.
        let browser = append_from(&mut writer, SourceId(1), vec![call("order-123", now)]);
        assert_eq!(browser.appended, 1);
        let server = append_from(&mut writer, SourceId(2), vec![call("order-123", now)]);
        assert_eq!((server.appended, server.duplicates), (1, 0));
        // Within one source a repeat is still a repeat, in the same group too.
        let again = append_from(
            &mut writer,
            SourceId(2),
            vec![call("order-123", now), call("x", now), call("x", now)],
        );
        assert_eq!((again.appended, again.duplicates), (1, 2));
        // Per source after a reopen as well (from the index, not memory).
        drop(writer);
        let mut writer = super::tests::writer(dir.path(), SignedDuration::from_hours(1));
        let reopened = append_from(
            &mut writer,
            SourceId(3),
            vec![call("order-123", now), call("x", now)],
        );
        assert_eq!((reopened.appended, reopened.duplicates), (2, 0));
        assert_eq!(
            append_from(&mut writer, SourceId(1), vec![call("order-123", now)]).duplicates,
            1
        );
    }

    #[test]
    fn an_index_of_bare_message_ids_is_rebuilt_per_source() {
        let dir = tempfile::tempdir().unwrap();
        let now = Timestamp::now();
        {
            let mut conn = Connection::open(dir.path().join("signalbox.db")).unwrap();
            super::super::schema::migrate(&mut conn).unwrap();
            conn.execute(
                "INSERT INTO events (source_id, kind, message_id, received_at, payload)
                 VALUES (7, 'track', 'old', ?1, '{}')",
                params![now.as_microsecond()],
            )
            .unwrap();
            // The index as an earlier version left it: bare ids, a marker, no format.
            let db = fjall::Database::builder(dir.path().join("signalbox.db-dedupe"))
                .open()
                .unwrap();
            let meta = db
                .keyspace("meta", fjall::KeyspaceCreateOptions::default)
                .unwrap();
            let bucket = db
                .keyspace("ids-900000000-1", fjall::KeyspaceCreateOptions::default)
                .unwrap();
            bucket
                .insert("old", now.as_microsecond().to_be_bytes())
                .unwrap();
            meta.insert("indexed_seq", 1i64.to_be_bytes()).unwrap();
            db.persist(fjall::PersistMode::SyncAll).unwrap();
        }
        let mut writer = writer(dir.path(), SignedDuration::from_hours(1));
        assert_eq!(writer.index.as_ref().unwrap().indexed_seq().unwrap(), 1);
        assert!(!writer
            .index
            .as_ref()
            .unwrap()
            .seen("old", now.as_microsecond())
            .unwrap());
        let again = append_from(&mut writer, SourceId(7), vec![call("old", now)]);
        assert_eq!(again.duplicates, 1, "re-indexed under its source");
        let other = append_from(&mut writer, SourceId(8), vec![call("old", now)]);
        assert_eq!(other.appended, 1);
    }
}
