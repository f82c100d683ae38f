//! The pipeline: one thread that reads the call log after the checkpoint, in order, and
//! hands batches to the [`Applier`]. It wakes when told that something was appended
//! ([`Pipeline::notify`]) and otherwise polls.
//!
//! A batch that fails is narrowed down to the entry at fault, which is quarantined after a
//! few tries on its own (`apply/quarantine.rs`): one poisoned entry never stalls the rest.
//! Retries of quarantined entries reach the applier thread as commands, between batches.
//!
//! **Invariant:** this thread is the only writer of the derived state (it holds `engage.db`'s
//! lock file, or on PostgreSQL its applier's connection holds an advisory lock, see
//! `db/postgres/apply.rs`); the log's writer never waits on it.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{
    channel, sync_channel, Receiver, RecvTimeoutError, Sender, SyncSender, TryRecvError,
};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use signalbox_core::{Clock, StoredCall};
use signalbox_store::{CallQuery, GroupCount, Store};
use tokio::runtime::Handle;
use tokio::sync::{oneshot, watch};

use crate::apply::store::ApplyStore;
use crate::apply::{self, Applier, BatchReport, Prepared, SourceInfo, Sources};
use crate::error::{EngageError, EngageResult};
use crate::settings::DestinationSettings;

/// How often source settings are re-read.
const SETTINGS_REFRESH: Duration = Duration::from_secs(1);

/// Ingest-to-applied latency, as the pipeline observed it: from a call's receipt (before its
/// 200) to the commit that made it readable.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LatencySummary {
    pub entries: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Counters of the running pipeline.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PipelineStats {
    pub applied_seq: i64,
    pub entries: u64,
    pub events: u64,
    pub batches: u64,
    /// Time spent reading the log and applying batches.
    pub read_seconds: f64,
    pub apply_seconds: f64,
    pub latency: LatencySummary,
}

/// A wake-up flag with a condition variable.
#[derive(Default)]
struct Wake {
    woken: Mutex<bool>,
    cond: Condvar,
}

impl Wake {
    fn wake(&self) {
        *self.woken.lock().expect("wake lock") = true;
        self.cond.notify_one();
    }

    /// Waits until woken or `timeout` passed, and clears the flag.
    fn wait(&self, timeout: Duration) {
        let woken = self.woken.lock().expect("wake lock");
        let (mut woken, _) = self
            .cond
            .wait_timeout_while(woken, timeout, |woken| !*woken)
            .expect("wake lock");
        *woken = false;
    }
}

struct Shared {
    /// Set when something was appended; the reader waits on it between polls. A plain
    /// condition variable, not a runtime timer: the reader must not depend on a runtime that
    /// may be shutting down around it.
    wake: Wake,
    stop: AtomicBool,
    stats: Mutex<(PipelineStats, Histogram<u64>)>,
}

/// A running pipeline.
pub(crate) struct Pipeline {
    shared: Arc<Shared>,
    applied: watch::Receiver<i64>,
    /// Requests for the applier thread (the only writer of `engage.db`).
    commands: Mutex<Sender<Command>>,
    /// The applier (`signalbox-engage`) and the reader (`signalbox-engage-read`).
    thread: Mutex<Option<JoinHandle<()>>>,
    reader: Mutex<Option<JoinHandle<()>>>,
}

/// The lock that makes one process the writer of `engage.db`.
pub(crate) fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

pub(crate) fn take_lock(db: &Path) -> EngageResult<File> {
    let path = lock_path(db);
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| {
            EngageError::Internal(format!("cannot create {}: {e}", parent.display()))
        })?;
    }
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| EngageError::Internal(format!("cannot open {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(EngageError::Conflict {
            reason: format!(
                "another process applies the log to {} (is the server running?)",
                db.display()
            ),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(EngageError::Internal(format!(
            "cannot lock {}: {e}",
            path.display()
        ))),
    }
}

/// Puts this thread in the idle scheduling class (Linux `SCHED_IDLE`; elsewhere the lowest
/// priority): it runs whenever a core would otherwise be idle, and yields at once when a
/// request handler or the log's writer wakes. Accepting calls and making them durable comes
/// first: under a burst that saturates the cores the pipeline falls behind and catches up
/// after, rather than slowing the answers clients wait for. Only the applier runs so (the
/// reader stays normal: see [`ReaderLoop`]). On a machine that is not saturated it changes
/// nothing.
pub fn yield_to_requests() {
    #[cfg(target_os = "linux")]
    {
        use thread_priority::unix::{
            set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy,
            ThreadSchedulePolicy,
        };
        use thread_priority::ThreadPriority;
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        if let Err(err) =
            set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle)
        {
            tracing::debug!(error = ?err, "cannot lower the pipeline's priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        use thread_priority::{set_current_thread_priority, ThreadPriority};
        if let Err(err) = set_current_thread_priority(ThreadPriority::Min) {
            tracing::debug!(error = ?err, "cannot lower the pipeline's priority");
        }
    }
}

/// Runs `open` on a short-lived thread in the idle class (see [`yield_to_requests`]), so that
/// the threads it starts inherit that class: the held-call index's writer and compaction, and
/// `engage.db`'s checkpointer work for the applier and must not compete with requests either.
pub(crate) fn open_behind_requests<T: Send>(
    open: impl FnOnce() -> EngageResult<T> + Send,
) -> EngageResult<T> {
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("signalbox-engage-open".into())
            .spawn_scoped(scope, || {
                yield_to_requests();
                open()
            })
            .map_err(|e| EngageError::Internal(e.to_string()))?;
        thread
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Source settings as the applier wants them.
pub(crate) async fn load_sources(store: &dyn Store) -> EngageResult<Sources> {
    let mut out = HashMap::new();
    for s in store.all_source_settings().await? {
        out.insert(
            s.source_id,
            SourceInfo {
                name: s.name,
                settings: DestinationSettings::from_json(&s.settings),
            },
        );
    }
    Ok(out)
}

pub(crate) struct PipelineConfig {
    pub batch_size: usize,
    pub poll_interval: Duration,
}

/// What the applier thread is asked to do besides applying the log.
enum Command {
    /// Apply a quarantined entry again.
    RetryQuarantined {
        seq: i64,
        reply: oneshot::Sender<EngageResult<()>>,
    },
}

impl Pipeline {
    pub(crate) fn spawn<S: ApplyStore + Send + 'static>(
        applier: Applier<S>,
        lock: Option<File>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        config: PipelineConfig,
        runtime: Handle,
    ) -> EngageResult<Pipeline> {
        let (applied_tx, applied) = watch::channel(applier.applied_seq());
        let shared = Arc::new(Shared {
            wake: Wake::default(),
            stop: AtomicBool::new(false),
            stats: Mutex::new((
                PipelineStats {
                    applied_seq: applier.applied_seq(),
                    ..PipelineStats::default()
                },
                Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("histogram bounds"),
            )),
        });
        let (tx, batches) = sync_channel(READ_AHEAD);
        let (commands_tx, commands) = channel();
        let control = Arc::new(ReaderControl::default());
        let ingest_store = Arc::clone(&store);
        let worker_runtime = runtime.clone();
        let reading = ReaderLoop {
            store,
            runtime,
            shared: Arc::clone(&shared),
            control: Arc::clone(&control),
            batch_size: config.batch_size,
            poll_interval: config.poll_interval,
            after_seq: applier.applied_seq(),
            tx,
        };
        let reader = std::thread::Builder::new()
            .name("signalbox-engage-read".into())
            .spawn(move || reading.run())
            .map_err(|e| EngageError::Internal(e.to_string()))?;
        let worker = Worker {
            ingest: IngestLoad::new(ingest_store, S::WRITES_IN_PROCESS),
            applier,
            _lock: lock,
            clock,
            config,
            shared: Arc::clone(&shared),
            applied_tx,
            batches,
            commands,
            runtime: worker_runtime,
            control,
            last_commit: Instant::now(),
            last_batch_len: 0,
        };
        let thread = std::thread::Builder::new()
            .name("signalbox-engage".into())
            .spawn(move || {
                yield_to_requests();
                worker.run()
            })
            .map_err(|e| EngageError::Internal(e.to_string()))?;
        Ok(Pipeline {
            shared,
            applied,
            commands: Mutex::new(commands_tx),
            thread: Mutex::new(Some(thread)),
            reader: Mutex::new(Some(reader)),
        })
    }

    pub(crate) fn notify(&self) {
        self.shared.wake.wake();
    }

    pub(crate) fn applied_seq(&self) -> i64 {
        *self.applied.borrow()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<i64> {
        self.applied.clone()
    }

    /// Waits until the checkpoint reaches `seq`.
    pub(crate) async fn wait_for(&self, seq: i64, timeout: Duration) -> EngageResult<()> {
        let mut rx = self.applied.clone();
        let reached = tokio::time::timeout(timeout, async {
            rx.wait_for(|applied| *applied >= seq).await.is_ok()
        })
        .await;
        match reached {
            Ok(true) => Ok(()),
            Ok(false) | Err(_) => Err(EngageError::Unavailable),
        }
    }

    /// Asks the applier thread to apply a quarantined entry again, and waits for the outcome.
    pub(crate) async fn retry(&self, seq: i64) -> EngageResult<()> {
        let (reply, outcome) = oneshot::channel();
        self.commands
            .lock()
            .expect("commands lock")
            .send(Command::RetryQuarantined { seq, reply })
            .map_err(|_| EngageError::Unavailable)?;
        // The applier looks at its commands between batches, at least once a poll interval.
        outcome.await.map_err(|_| EngageError::Unavailable)?
    }

    pub(crate) fn stats(&self) -> PipelineStats {
        let guard = self.shared.stats.lock().expect("stats lock");
        let (mut stats, histogram) = (guard.0, &guard.1);
        stats.latency = summarize(histogram);
        stats
    }

    /// Stops after the batch in progress and waits for the thread. Blocking.
    pub(crate) fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake.wake();
        if let Some(thread) = self.thread.lock().expect("thread lock").take() {
            let _ = thread.join();
        }
        // The applier is gone, and with it the receiving end: a blocked send fails.
        if let Some(reader) = self.reader.lock().expect("thread lock").take() {
            let _ = reader.join();
        }
    }
}

fn summarize(h: &Histogram<u64>) -> LatencySummary {
    let ms = |us: u64| us as f64 / 1000.0;
    LatencySummary {
        entries: h.len(),
        p50_ms: ms(h.value_at_quantile(0.5)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        max_ms: ms(h.max()),
    }
}

struct Worker<S> {
    /// How loaded ingest is; its store is the call log, read again for a quarantined entry.
    ingest: IngestLoad,
    applier: Applier<S>,
    /// The lock file of `engage.db`; `None` when the store holds a lock of its own (on
    /// PostgreSQL, an advisory lock on the applier's connection).
    _lock: Option<File>,
    clock: Arc<dyn Clock>,
    config: PipelineConfig,
    shared: Arc<Shared>,
    applied_tx: watch::Sender<i64>,
    batches: Receiver<EngageResult<ReadBatch>>,
    commands: Receiver<Command>,
    /// Reads the log for commands (a quarantined entry).
    runtime: Handle,
    control: Arc<ReaderControl>,
    /// When the last batch committed, and its size.
    last_commit: Instant,
    last_batch_len: usize,
}

/// A batch read from the log and mapped, ready to apply.
struct ReadBatch {
    /// The reader's generation when it read the batch: older ones are dropped.
    generation: u64,
    calls: Vec<StoredCall>,
    prepared: Vec<Option<Prepared>>,
    sources: Arc<Sources>,
    /// Time spent reading and mapping it.
    read: Duration,
}

/// The mean calls per group commit of the log's writer above which ingest counts as
/// saturated and the applier waits ([`Worker::yield_to_ingest`]), when its writes run in
/// process (the embedded store). The calls that arrive while
/// a commit waits for the disk join the next one, so commits grow with the load: on 2 cores
/// at 50,000 events/s a commit takes 100–150 calls, while a closed loop of 32 connections
/// that saturates the cores makes commits of 450–1,700 (`bench ingest`). A burst is then
/// accepted first and applied after; a load the cores can keep up with is applied beside
/// ingest. (The writer's busy share, the measure before this one, counts its fsync waits: at
/// 50,000 events/s it kept the applier waiting until the activity feed was seconds behind.)
const INGEST_SATURATED_CALLS: f64 = 400.0;
/// The share of a sample the log's writer spends committing (fsync waits included) above
/// which ingest counts as saturated for an applier whose writes a database server does
/// ([`ApplyStore::WRITES_IN_PROCESS`] false). Those writes run in the server's processes at
/// their own priority, beside the log's writes and the API's reads, so the applier's idle
/// class does not keep them out of the way: it waits while the writer is busy, and the reads
/// keep their latency (PostgreSQL's profile read p99 at 50,000 events/s was 36–56 ms with
/// the commit-size bar, 18–23 ms with this one).
const INGEST_SATURATED_BUSY: f64 = 0.75;
/// How often the load is measured: long enough for many commits. With the commit-size bar,
/// ingest counts as saturated after two samples in a row over [`INGEST_SATURATED_CALLS`].
const LOAD_SAMPLE: Duration = Duration::from_millis(200);
/// The longest the applier waits for ingest in one go.
const MAX_YIELD: Duration = Duration::from_secs(1);

/// How loaded the log's writer is, measured over each [`LOAD_SAMPLE`] or more.
struct IngestLoad {
    store: Arc<dyn Store>,
    /// Which bar applies: the commit size (writes in process) or the busy share.
    writes_in_process: bool,
    at: Instant,
    last: GroupCount,
    /// The mean calls per commit of the two last completed samples, the latest second.
    recent: [f64; 2],
    /// The writer's busy share over the last completed sample.
    busy: f64,
}

impl IngestLoad {
    fn new(store: Arc<dyn Store>, writes_in_process: bool) -> IngestLoad {
        IngestLoad {
            last: store.writer_groups(),
            store,
            writes_in_process,
            at: Instant::now(),
            recent: [0.0; 2],
            busy: 0.0,
        }
    }

    /// Whether ingest is saturated. With writes in process: commits took more than
    /// [`INGEST_SATURATED_CALLS`] each in both of the last two samples (one slow fsync swells
    /// a sample's commits as a burst does; a burst lasts). Otherwise: the writer was busy
    /// more than [`INGEST_SATURATED_BUSY`] of the last sample.
    fn saturated(&mut self) -> bool {
        let elapsed = self.at.elapsed();
        if elapsed >= LOAD_SAMPLE {
            let now = self.store.writer_groups();
            let groups = now.groups.saturating_sub(self.last.groups);
            let calls = now.calls.saturating_sub(self.last.calls);
            let mean = if groups == 0 {
                0.0
            } else {
                calls as f64 / groups as f64
            };
            self.recent = [self.recent[1], mean];
            self.busy = now.busy_nanos.saturating_sub(self.last.busy_nanos) as f64
                / elapsed.as_nanos().max(1) as f64;
            self.last = now;
            self.at = Instant::now();
        }
        if self.writes_in_process {
            self.recent
                .iter()
                .all(|&mean| mean > INGEST_SATURATED_CALLS)
        } else {
            self.busy > INGEST_SATURATED_BUSY
        }
    }
}

/// Batches the reader may have ready ahead of the applier.
const READ_AHEAD: usize = 4;
/// Log entries one transaction applies at most when batches are waiting.
const COALESCE_LIMIT: usize = 16_000;
/// Commits come at most this often under load (see [`Worker::coalesce`]). `bench pipeline`,
/// 200 → activity feed p99: at 25,000 events/s 9–74 ms with 50 ms against 135–146 ms with
/// 100 ms; at 50,000 events/s 210 ms against 472 ms; for about 5 % more bytes written per
/// event (`bench ingest`: 4.2 KB against 4.0 KB).
const COMMIT_EVERY: Duration = Duration::from_millis(50);
/// A batch at least this large means load: the next commit waits for [`COMMIT_EVERY`].
const PACE_FROM: usize = 1_000;

/// How the applier restarts the reader from its checkpoint after a failed batch: it bumps
/// the generation and leaves the position to read after.
#[derive(Default)]
struct ReaderControl {
    generation: AtomicU64,
    restart_after: Mutex<Option<i64>>,
}

impl ReaderControl {
    fn restart(&self, after_seq: i64) -> u64 {
        *self.restart_after.lock().expect("restart lock") = Some(after_seq);
        self.generation.fetch_add(1, Ordering::SeqCst) + 1
    }
}

/// The reader: a thread that reads the log ahead of the applier and maps each call (JSON
/// parsing and the destination mapping need no state), so that the applier only writes.
/// It hands batches over a small channel. It runs at normal priority and is started by the
/// caller of [`Pipeline::spawn`], so that the threads the runtime starts on its behalf do
/// not inherit the applier's idle class; it reads only as far ahead as the applier allows.
struct ReaderLoop {
    store: Arc<dyn Store>,
    runtime: Handle,
    shared: Arc<Shared>,
    control: Arc<ReaderControl>,
    batch_size: usize,
    poll_interval: Duration,
    after_seq: i64,
    tx: SyncSender<EngageResult<ReadBatch>>,
}

impl ReaderLoop {
    fn run(mut self) {
        let mut sources: Option<(Arc<Sources>, Instant)> = None;
        let mut backoff = Duration::from_millis(50);
        let mut generation = self.control.generation.load(Ordering::SeqCst);
        while !self.shared.stop.load(Ordering::SeqCst) {
            if let Some(after) = self
                .control
                .restart_after
                .lock()
                .expect("restart lock")
                .take()
            {
                self.after_seq = after;
                generation = self.control.generation.load(Ordering::SeqCst);
            }
            match self.next(&mut sources, generation) {
                Ok(Some(batch)) => {
                    backoff = Duration::from_millis(50);
                    if self.tx.send(Ok(batch)).is_err() {
                        return;
                    }
                }
                Ok(None) => {
                    self.shared.wake.wait(self.poll_interval);
                }
                Err(err) => {
                    if self.tx.send(Err(err)).is_err() {
                        return;
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Reads and maps the next batch; `None` when the log has nothing new.
    fn next(
        &mut self,
        sources: &mut Option<(Arc<Sources>, Instant)>,
        generation: u64,
    ) -> EngageResult<Option<ReadBatch>> {
        let started = Instant::now();
        let current = match sources.take() {
            Some((current, at)) if at.elapsed() < SETTINGS_REFRESH => (current, at),
            _ => {
                let store = Arc::clone(&self.store);
                let loaded = self
                    .runtime
                    .block_on(async move { load_sources(store.as_ref()).await })?;
                (Arc::new(loaded), Instant::now())
            }
        };
        let batch_sources = Arc::clone(&current.0);
        *sources = Some(current);
        let query = CallQuery {
            after_seq: self.after_seq,
            limit: self.batch_size as u32,
            ..CallQuery::default()
        };
        let store = Arc::clone(&self.store);
        let calls = self
            .runtime
            .block_on(async move { store.read_calls(query).await })?;
        let Some(last) = calls.last() else {
            return Ok(None);
        };
        self.after_seq = last.seq;
        let prepared = calls
            .iter()
            .map(|call| apply::prepare(call, &batch_sources))
            .collect();
        Ok(Some(ReadBatch {
            generation,
            calls,
            prepared,
            sources: batch_sources,
            read: started.elapsed(),
        }))
    }
}

impl<S: ApplyStore> Worker<S> {
    fn run(mut self) {
        tracing::info!(
            applied_seq = self.applier.applied_seq(),
            "engage pipeline started"
        );
        let mut backoff = Duration::from_millis(50);
        let mut generation = self.control.generation.load(Ordering::SeqCst);
        while !self.shared.stop.load(Ordering::SeqCst) {
            while let Ok(command) = self.commands.try_recv() {
                self.run_command(command);
            }
            match self.batches.recv_timeout(self.config.poll_interval) {
                Ok(Ok(batch)) if batch.generation != generation => {}
                Ok(Ok(mut batch)) => {
                    // Still saturated after waiting: this one batch only, then wait again.
                    let saturated = self.yield_to_ingest();
                    let coalesced = if saturated {
                        Ok(())
                    } else {
                        self.coalesce(&mut batch)
                    };
                    match coalesced.and_then(|()| self.apply(&mut batch)) {
                        Ok(()) => backoff = Duration::from_millis(50),
                        Err(err) => {
                            // Even narrowing it down failed (quarantining could not commit,
                            // or the log could not be read): read again from the checkpoint.
                            tracing::error!(error = %err, "engage pipeline batch failed; retrying");
                            std::thread::sleep(backoff);
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                            generation = self.control.restart(self.applier.applied_seq());
                            self.shared.wake.wake();
                        }
                    }
                }
                Ok(Err(err)) => {
                    tracing::error!(error = %err, "reading the log failed; retrying");
                }
                Err(RecvTimeoutError::Timeout) => {
                    let now = self.clock.now().as_microsecond();
                    if let Err(err) = self.applier.expire_holds(now) {
                        tracing::warn!(error = %err, "expiring held calls failed");
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        tracing::info!(
            applied_seq = self.applier.applied_seq(),
            "engage pipeline stopped"
        );
    }

    fn run_command(&mut self, command: Command) {
        match command {
            Command::RetryQuarantined { seq, reply } => {
                let outcome = self.retry_quarantined(seq);
                if let Err(err) = &outcome {
                    tracing::warn!(seq, error = %err, "quarantined log entry still fails");
                }
                let _ = reply.send(outcome);
            }
        }
    }

    /// Reads the entry from the log and applies it again, behind the checkpoint.
    fn retry_quarantined(&mut self, seq: i64) -> EngageResult<()> {
        let store = Arc::clone(&self.ingest.store);
        let (sources, calls) = self.runtime.block_on(async move {
            let sources = load_sources(store.as_ref()).await?;
            let query = CallQuery {
                after_seq: seq - 1,
                limit: 1,
                ..CallQuery::default()
            };
            let calls = store.read_calls(query).await?;
            Ok::<_, EngageError>((sources, calls))
        })?;
        let entry = calls
            .into_iter()
            .find(|call| call.seq == seq)
            .ok_or_else(|| EngageError::not_found(format!("log entry {seq}")))?;
        self.applier.retry_quarantined(&entry, &sources)?;
        // Followers of the change feed look again (what the entry changed is behind their
        // cursors; see `Engage::retry_quarantined`).
        let _ = self.applied_tx.send(self.applier.applied_seq());
        Ok(())
    }

    /// Waits while ingest is saturated (a burst beyond what the cores can both accept and
    /// apply): accepting calls comes first, and the backlog is applied after. Never waits
    /// longer than [`MAX_YIELD`] at a time, so a sustained overload slows the pipeline down but
    /// never stops it. Returns whether ingest is still saturated.
    fn yield_to_ingest(&mut self) -> bool {
        let started = Instant::now();
        while self.ingest.saturated() {
            if started.elapsed() >= MAX_YIELD || self.shared.stop.load(Ordering::SeqCst) {
                return true;
            }
            std::thread::sleep(LOAD_SAMPLE / 2);
        }
        false
    }

    /// Takes the batches already read into this one; under load (the last batch had at least
    /// [`PACE_FROM`] entries) also waits for more until [`COMMIT_EVERY`] has passed since the
    /// last commit; up to [`COALESCE_LIMIT`] entries. Under steady load one transaction then covers a twentieth
    /// of a second of calls and writes each index page it dirties once, not once per small batch:
    /// far fewer bytes to disk per event, which the log's own commits would otherwise wait
    /// behind. A backlog drains the same way, in large transactions.
    fn coalesce(&mut self, batch: &mut ReadBatch) -> EngageResult<()> {
        // Only under load: a lone call (an API write someone waits for) commits at once.
        let due = if self.last_batch_len >= PACE_FROM {
            self.last_commit + COMMIT_EVERY
        } else {
            Instant::now()
        };
        while batch.calls.len() < COALESCE_LIMIT {
            let next = match self.batches.try_recv() {
                Ok(next) => next,
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    let now = Instant::now();
                    if now >= due || self.shared.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    match self.batches.recv_timeout(due - now) {
                        Ok(next) => next,
                        Err(_) => break,
                    }
                }
            };
            match next {
                Ok(next) if next.generation == batch.generation => {
                    batch.calls.extend(next.calls);
                    batch.prepared.extend(next.prepared);
                    batch.sources = next.sources;
                    batch.read += next.read;
                }
                Ok(_stale) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// Applies a batch the reader prepared.
    fn apply(&mut self, batch: &mut ReadBatch) -> EngageResult<()> {
        let started = Instant::now();
        let report = self
            .applier
            .apply_batch(&batch.calls, &mut batch.prepared, &batch.sources)?;
        self.last_commit = Instant::now();
        self.last_batch_len = batch.calls.len();
        self.record(&batch.calls, &report, batch.read, started.elapsed());
        let _ = self.applied_tx.send(report.applied_seq);
        Ok(())
    }

    fn record(&self, calls: &[StoredCall], report: &BatchReport, read: Duration, took: Duration) {
        let now = self.clock.now();
        metrics::histogram!("signalbox_engage_batch_seconds").record(took.as_secs_f64());
        metrics::counter!("signalbox_engage_entries_applied_total").increment(report.entries);
        metrics::counter!("signalbox_engage_events_created_total").increment(report.events);
        metrics::gauge!("signalbox_engage_applied_seq").set(report.applied_seq as f64);
        let mut guard = self.shared.stats.lock().expect("stats lock");
        let (stats, histogram) = &mut *guard;
        stats.applied_seq = report.applied_seq;
        stats.entries += report.entries;
        stats.events += report.events;
        stats.batches += 1;
        stats.read_seconds += read.as_secs_f64();
        stats.apply_seconds += took.as_secs_f64();
        for call in calls {
            let lag = now.duration_since(call.received_at).as_micros().max(1) as u64;
            histogram.saturating_record(lag);
        }
        // One sample per batch, its oldest call: the exporter keeps every sample until it
        // folds them, and one per call would cost more than it tells.
        if let Some(oldest) = calls.first() {
            let lag = now
                .duration_since(oldest.received_at)
                .as_secs_f64()
                .max(0.0);
            metrics::histogram!("signalbox_engage_apply_lag_seconds").record(lag);
        }
    }
}

/// Progress of a rebuild.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RebuildProgress {
    pub applied_seq: i64,
    pub last_seq: i64,
    pub entries: u64,
    pub events: u64,
}

/// Applies the log after the applier's checkpoint up to its end, calling `progress` after
/// each batch. Blocking: runs on a thread of its own, reading through `runtime`.
pub(crate) fn apply_all(
    applier: &mut Applier<impl ApplyStore>,
    store: &Arc<dyn Store>,
    runtime: &Handle,
    batch_size: usize,
    mut progress: impl FnMut(RebuildProgress),
) -> EngageResult<RebuildProgress> {
    let sources = runtime.block_on(load_sources(store.as_ref()))?;
    let last_seq = runtime.block_on(store.last_seq())?;
    let mut done = RebuildProgress {
        applied_seq: applier.applied_seq(),
        last_seq,
        ..RebuildProgress::default()
    };
    loop {
        let query = CallQuery {
            after_seq: applier.applied_seq(),
            limit: batch_size as u32,
            ..CallQuery::default()
        };
        let calls = runtime.block_on(store.read_calls(query))?;
        if calls.is_empty() {
            break;
        }
        let report = applier.apply_batch(&calls, &mut [], &sources)?;
        done.applied_seq = report.applied_seq;
        done.entries += report.entries;
        done.events += report.events;
        done.last_seq = done.last_seq.max(report.applied_seq);
        progress(done);
    }
    Ok(done)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use thread_priority::unix::{
        thread_schedule_policy, NormalThreadSchedulePolicy, ThreadSchedulePolicy,
    };

    use super::*;

    fn policy() -> ThreadSchedulePolicy {
        thread_schedule_policy().expect("policy of this thread")
    }

    #[test]
    fn threads_started_while_opening_the_applier_yield_to_requests() {
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        let (opener, helper) = open_behind_requests(|| {
            // As the held-call index starts its writer and compaction threads.
            let helper = std::thread::spawn(policy).join().expect("helper thread");
            Ok((policy(), helper))
        })
        .unwrap();
        assert_eq!(opener, idle);
        assert_eq!(helper, idle);
        // The caller keeps its own class.
        assert_ne!(policy(), idle);
    }
}
