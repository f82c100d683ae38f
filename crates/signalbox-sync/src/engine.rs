//! [`Sync`], the handle: destinations CRUD (validated), status, dead letters, replay, and in
//! `serve` one delivery task per destination.
//!
//! [`Sync::start`] spawns a supervisor that reads [`SyncStore::version`] every
//! [`SyncConfig::reload_interval`] and, when it changed (a CLI command, the admin API, a
//! replay request), reloads the destinations: a new or changed active destination gets a
//! fresh task (the old one stops after its request in flight), a paused or deleted one
//! stops. Each task is a worker (`worker.rs`); tasks share nothing but the store and the
//! outbound client, so a slow receiver holds only its own.
//!
//! **Invariant:** at most one task per destination: the old one is stopped and awaited
//! before its replacement starts.
//! **Invariant:** [`Sync::new`] starts nothing; its `status` reads the store and the feeds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use signalbox_core::Clock;
use signalbox_engage::Engage;
use signalbox_outbound::OutboundClient;
use signalbox_store::Store;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::error::{SyncError, SyncResult};
use crate::feed::{CallFeed, OutboxFeed};
use crate::model::{
    Circuit, DeadLetter, DeliveryOutcome, DeliveryRecord, Destination, DestinationConfig,
    DestinationKind, DestinationPatch, DestinationState, DestinationStatus, LogHold,
    NewDestination, Position, Replay, Secret,
};
use crate::store::SyncStore;
use crate::worker::{Live, Shared, Worker};

/// What the engine reads and sends through.
#[derive(Clone)]
pub struct SyncDeps {
    pub store: Arc<dyn SyncStore>,
    /// The call log: what `klaviyo` and `webhook` destinations forward.
    pub calls: Arc<dyn Store>,
    /// Engage's outbox: what the `segment` destination sends back. `None` in CLI commands
    /// that do not open engage (the `segment` destinations' queue then reads as unknown, 0).
    pub engage: Option<Engage>,
    pub outbound: OutboundClient,
    pub clock: Arc<dyn Clock>,
}

/// The engine's timings and limits. The defaults are the production ones; tests shorten
/// them.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// How often an idle task looks for more when nothing woke it. Default 200 ms.
    pub poll_interval: Duration,
    /// How often the supervisor looks at the store's version. Default 500 ms.
    pub reload_interval: Duration,
    /// The first retry waits up to this (full jitter). Default 250 ms.
    pub backoff_base: Duration,
    /// Retries wait at most this (doubling from the base). Default 60 s.
    pub backoff_cap: Duration,
    /// A receiver's `Retry-After` is honoured up to this. Default 300 s.
    pub retry_after_cap: Duration,
    /// Consecutive failed attempts that open the circuit. Default 5.
    pub breaker_threshold: u32,
    /// How long an open circuit lets nothing through before one probe. Default 30 s.
    pub breaker_open: Duration,
    /// Items read per page of what a destination follows. Default 2,000 (calls are at most
    /// 32 KB; typical pages are a few MB at most).
    pub page_items: u32,
    /// Items per request at most (batches are also bounded by bytes). Default 2,500.
    pub max_batch_items: usize,
    /// While what a destination follows trickles in (the last read found less than a page),
    /// reads are at least this far apart, so a busy log goes out in batches rather than a
    /// request and a commit per append. Default 50 ms.
    pub linger: Duration,
    /// The cursor moves past calls a destination does not send (other sources) in a commit
    /// at most this often. Default 1 s.
    pub idle_commit_interval: Duration,
}

impl Default for SyncConfig {
    fn default() -> SyncConfig {
        SyncConfig {
            poll_interval: Duration::from_millis(200),
            reload_interval: Duration::from_millis(500),
            backoff_base: Duration::from_millis(250),
            backoff_cap: Duration::from_secs(60),
            retry_after_cap: Duration::from_secs(300),
            breaker_threshold: 5,
            breaker_open: Duration::from_secs(30),
            page_items: 2000,
            max_batch_items: 2500,
            linger: Duration::from_millis(50),
            idle_commit_interval: Duration::from_secs(1),
        }
    }
}

/// `status` counts a `segment` destination's queue up to this many entries.
pub const OUTBOX_COUNT_CAP: u64 = 100_000;

/// The feeds a handle reads, when a test drives them itself (see [`Sync::start_with`]).
#[derive(Clone)]
pub struct Feeds {
    pub calls: Arc<dyn CallFeed>,
    pub outbox: Option<Arc<dyn OutboxFeed>>,
}

impl Feeds {
    /// The call log and engage's outbox of the deps.
    pub fn of(deps: &SyncDeps) -> Feeds {
        Feeds {
            calls: Arc::new(Arc::clone(&deps.calls)),
            outbox: deps
                .engage
                .clone()
                .map(|engage| Arc::new(engage) as Arc<dyn OutboxFeed>),
        }
    }
}

/// The handle. Cheap to clone.
#[derive(Clone)]
pub struct Sync {
    deps: SyncDeps,
    inner: Arc<Inner>,
}

/// `engine` is first: it drops (stopping the tasks) before the wake-up sender they watch.
struct Inner {
    engine: Option<Engine>,
    feeds: Feeds,
    wake: watch::Sender<u64>,
}

struct Engine {
    workers: Arc<Mutex<HashMap<String, WorkerHandle>>>,
    loaded_version: Arc<AtomicU64>,
    stop: watch::Sender<bool>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
    reload: Arc<Notify>,
}

struct WorkerHandle {
    updated: Timestamp,
    live: Arc<Mutex<Live>>,
    stop: watch::Sender<bool>,
    kick: Arc<Notify>,
    join: JoinHandle<()>,
}

impl Sync {
    /// A handle without delivery tasks: what CLI commands use.
    pub fn new(deps: SyncDeps) -> Sync {
        let feeds = Feeds::of(&deps);
        Sync {
            deps,
            inner: Arc::new(Inner {
                feeds,
                wake: watch::channel(0).0,
                engine: None,
            }),
        }
    }

    /// A handle whose delivery tasks run (one per active destination), picking up changes
    /// made elsewhere (the CLI) within a second. Needs a Tokio runtime.
    pub fn start(deps: SyncDeps) -> Sync {
        let feeds = Feeds::of(&deps);
        Sync::start_with(deps, SyncConfig::default(), feeds)
    }

    /// [`Sync::start`] with its timings and the feeds given.
    pub fn start_with(deps: SyncDeps, config: SyncConfig, feeds: Feeds) -> Sync {
        let (wake, wake_rx) = watch::channel(0u64);
        let (stop, stop_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            store: Arc::clone(&deps.store),
            calls: Arc::clone(&feeds.calls),
            outbox: feeds.outbox.clone(),
            outbound: deps.outbound.clone(),
            clock: Arc::clone(&deps.clock),
            config: config.clone(),
            wake: wake_rx,
        });
        let workers = Arc::new(Mutex::new(HashMap::new()));
        let loaded_version = Arc::new(AtomicU64::new(u64::MAX));
        let reload = Arc::new(Notify::new());
        let supervisor = tokio::spawn(supervise(
            shared,
            Arc::clone(&workers),
            Arc::clone(&loaded_version),
            stop_rx,
            Arc::clone(&reload),
        ));
        Sync {
            deps,
            inner: Arc::new(Inner {
                feeds,
                wake,
                engine: Some(Engine {
                    workers,
                    loaded_version,
                    stop,
                    supervisor: Mutex::new(Some(supervisor)),
                    reload,
                }),
            }),
        }
    }

    pub fn store(&self) -> &Arc<dyn SyncStore> {
        &self.deps.store
    }

    /// Validates (name, URLs, that the sources exist, the rate) and stores.
    pub async fn create(&self, new: NewDestination) -> SyncResult<Destination> {
        validate_name(&new.name)?;
        self.validate(&new.config, new.rate).await?;
        self.create_in(new, DestinationState::Active).await
    }

    /// [`Sync::create`], paused: nothing is sent until it is resumed (a setup finished in
    /// more than one step).
    pub async fn create_paused(&self, new: NewDestination) -> SyncResult<Destination> {
        validate_name(&new.name)?;
        self.validate(&new.config, new.rate).await?;
        self.create_in(new, DestinationState::Paused).await
    }

    async fn create_in(
        &self,
        new: NewDestination,
        state: DestinationState,
    ) -> SyncResult<Destination> {
        // A new destination delivers what arrives from now on, as a new Segment destination
        // does; `replay --since` sends what came before. The cursor is set with the creation,
        // so a running engine never starts it from the beginning.
        let head = self.head_of(new.config.kind()).await?;
        let destination = self
            .deps
            .store
            .create_at(new, self.deps.clock.now(), state, head)
            .await?;
        self.reload();
        Ok(destination)
    }

    /// Where the feed a kind follows ends now.
    async fn head_of(&self, kind: DestinationKind) -> SyncResult<Position> {
        let feeds = &self.inner.feeds;
        match kind {
            DestinationKind::Segment => match &feeds.outbox {
                Some(outbox) => outbox.outbox_head().await,
                None => Ok(Position::default()),
            },
            DestinationKind::Klaviyo | DestinationKind::Webhook => Ok(Position {
                seq: feeds.calls.head().await?,
                n: 0,
            }),
        }
    }

    pub async fn list(&self) -> SyncResult<Vec<Destination>> {
        self.deps.store.list().await
    }

    pub async fn get(&self, name: &str) -> SyncResult<Destination> {
        self.deps.store.get(name).await
    }

    /// Validates the destination as it would be after the patch, then stores the patch.
    pub async fn patch(&self, name: &str, patch: DestinationPatch) -> SyncResult<Destination> {
        let mut after = self.deps.store.get(name).await?;
        crate::store::apply_patch(&mut after, patch.clone())?;
        self.validate(&after.config, after.rate).await?;
        let destination = self
            .deps
            .store
            .patch(name, patch, self.deps.clock.now())
            .await?;
        self.reload();
        Ok(destination)
    }

    pub async fn delete(&self, name: &str) -> SyncResult<()> {
        self.deps.store.delete(name).await?;
        self.reload();
        Ok(())
    }

    async fn validate(&self, config: &DestinationConfig, rate: Option<f64>) -> SyncResult<()> {
        if let Some(rate) = rate {
            if !(rate.is_finite() && rate > 0.0) {
                return Err(SyncError::invalid(
                    "rate",
                    "must be a positive number of calls per second",
                ));
            }
        }
        let check_secret = |field: &str, secret: &Secret| {
            if secret.expose().trim().is_empty() {
                Err(SyncError::invalid(field, "must not be empty"))
            } else {
                Ok(())
            }
        };
        let check_url = |field: &str, url: &str| {
            signalbox_outbound::check_url_syntax(url)
                .map(|_| ())
                .map_err(|e| SyncError::invalid(field, e.to_string()))
        };
        match config {
            DestinationConfig::Segment {
                write_key,
                endpoint,
                ..
            } => {
                check_secret("write_key", write_key)?;
                check_url("endpoint", endpoint)?;
            }
            DestinationConfig::Klaviyo {
                api_key,
                endpoint,
                sources,
            } => {
                check_secret("api_key", api_key)?;
                check_url("endpoint", endpoint)?;
                self.check_sources(sources).await?;
            }
            DestinationConfig::Webhook {
                url,
                secret,
                sources,
            } => {
                check_url("url", url)?;
                if let Some(secret) = secret {
                    check_secret("secret", secret)?;
                }
                self.check_sources(sources).await?;
            }
        }
        Ok(())
    }

    async fn check_sources(&self, sources: &[String]) -> SyncResult<()> {
        if sources.is_empty() {
            return Err(SyncError::invalid(
                "sources",
                "name at least one source whose calls to forward",
            ));
        }
        for name in sources {
            if self.inner.feeds.calls.source_id(name).await?.is_none() {
                return Err(SyncError::invalid(
                    "sources",
                    format!("no source named {name:?}"),
                ));
            }
        }
        Ok(())
    }

    pub async fn status(&self, name: &str) -> SyncResult<DestinationStatus> {
        let destination = self.deps.store.get(name).await?;
        self.status_of(&destination).await
    }

    pub async fn statuses(&self) -> SyncResult<Vec<DestinationStatus>> {
        let mut out = Vec::new();
        for destination in self.deps.store.list().await? {
            out.push(self.status_of(&destination).await?);
        }
        Ok(out)
    }

    /// What the store and the feeds say, with the running task's live state when this
    /// handle runs one.
    ///
    /// `queued` for the call log is computed from sequence numbers: the calls after the
    /// cursor, of every source (an upper bound when the destination follows some sources
    /// only; a running task moves its cursor past the others' calls when it is idle). For the
    /// outbox it is counted, up to [`OUTBOX_COUNT_CAP`]. `lag_seconds` is the age of the first item after
    /// the cursor.
    async fn status_of(&self, destination: &Destination) -> SyncResult<DestinationStatus> {
        let progress = self.deps.store.progress(&destination.id).await?;
        let cursor = progress.cursor;
        let now = self.deps.clock.now();
        let age = |at: Timestamp| now.duration_since(at).as_secs_f64().max(0.0);
        let (queued, lag_seconds) = match &destination.config {
            DestinationConfig::Segment { .. } => match &self.inner.feeds.outbox {
                Some(outbox) => {
                    // Counted a page at a time (memory stays one page), up to a cap.
                    let mut queued = 0u64;
                    let mut lag = 0.0;
                    let mut after = cursor;
                    while queued < OUTBOX_COUNT_CAP {
                        let page = outbox.outbox_after(after, 2000).await?;
                        let Some(last) = page.last() else { break };
                        if queued == 0 {
                            lag = page.first().map(|e| age(e.at)).unwrap_or(0.0);
                        }
                        queued += page.len() as u64;
                        after = Position {
                            seq: last.seq,
                            n: last.n,
                        };
                    }
                    (queued, lag)
                }
                None => (0, 0.0),
            },
            _ => {
                let calls = &self.inner.feeds.calls;
                let head = calls.head().await?;
                let queued = (head - cursor.seq).max(0) as u64;
                let lag = if queued > 0 {
                    calls
                        .calls_after(cursor.seq, None, 1)
                        .await?
                        .first()
                        .map(|c| age(c.received_at))
                        .unwrap_or(0.0)
                } else {
                    0.0
                };
                (queued, lag)
            }
        };
        let running = self.inner.engine.as_ref().and_then(|engine| {
            let workers = engine.workers.lock().expect("workers lock");
            workers.get(&destination.id).map(|w| Arc::clone(&w.live))
        });
        let (retrying, circuit, throughput) = match running {
            Some(live) => {
                let live = live.lock().expect("live lock");
                (live.retrying, live.circuit, live.throughput(Instant::now()))
            }
            None => {
                let records = self.deps.store.deliveries(&destination.name, 100).await?;
                let retrying = records
                    .first()
                    .is_some_and(|r| r.outcome == DeliveryOutcome::Retry);
                (retrying, Circuit::Closed, throughput_of(&records, now))
            }
        };
        Ok(DestinationStatus {
            name: destination.name.clone(),
            kind: destination.config.kind(),
            state: destination.state,
            target: destination.config.target().to_owned(),
            delivered: progress.delivered,
            queued,
            retrying,
            retried: progress.retried,
            failed: progress.failed,
            dead_lettered: progress.dead_lettered,
            lag_seconds,
            last_error: progress.last_error,
            last_error_at: progress.last_error_at,
            last_delivery_at: progress.last_delivery_at,
            throughput,
            circuit,
            cursor,
        })
    }

    /// What each destination that follows the call log (`klaviyo`, `webhook`) still needs of
    /// it, paused ones included: they resume from their cursor. Replay requests are read
    /// before the cursor, so a request taken in between is seen as the cursor it rewound.
    /// (The `segment` kind follows engage's outbox, not the log.)
    pub async fn log_holds(&self) -> SyncResult<Vec<LogHold>> {
        let mut holds = Vec::new();
        for destination in self.deps.store.list().await? {
            if destination.config.kind() == DestinationKind::Segment {
                continue;
            }
            let replay_since = self
                .deps
                .store
                .pending_replays(&destination.id)
                .await?
                .into_iter()
                .filter_map(|replay| match replay {
                    Replay::Since(since) => Some(since),
                    Replay::DeadLetters => None,
                })
                .min();
            let progress = self.deps.store.progress(&destination.id).await?;
            holds.push(LogHold {
                destination: destination.name,
                state: destination.state,
                from_seq: progress.cursor.seq + 1,
                replay_since,
            });
        }
        Ok(holds)
    }

    pub async fn dead_letters(&self, name: &str) -> SyncResult<Vec<DeadLetter>> {
        self.deps.store.dead_letters(name, false, 1000).await
    }

    /// Asks for a replay; a running engine starts it within a second.
    pub async fn replay(&self, name: &str, replay: Replay) -> SyncResult<()> {
        self.deps.store.request_replay(name, replay).await?;
        self.reload();
        Ok(())
    }

    pub async fn deliveries(&self, name: &str, limit: u32) -> SyncResult<Vec<DeliveryRecord>> {
        self.deps.store.deliveries(name, limit).await
    }

    /// New calls were appended or applied: wakes the delivery tasks (cheap, never blocks).
    pub fn notify(&self) {
        self.inner.wake.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn reload(&self) {
        if let Some(engine) = &self.inner.engine {
            engine.reload.notify_one();
        }
    }

    /// Waits until every active destination has delivered (or dead-lettered) everything
    /// there is to deliver now; false at the timeout. For tests and benchmarks.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let Some(engine) = &self.inner.engine else {
            return true;
        };
        let start = Instant::now();
        let deadline = start + timeout;
        self.reload();
        self.notify();
        loop {
            let version = self.deps.store.version().await.ok();
            let loaded = engine.loaded_version.load(Ordering::SeqCst);
            if version == Some(loaded) {
                let idle = {
                    let workers = engine.workers.lock().expect("workers lock");
                    workers.values().all(|w| {
                        let live = w.live.lock().expect("live lock");
                        !live.check_replay && live.idle_since.is_some_and(|t| t >= start)
                    })
                };
                if idle {
                    return true;
                }
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the delivery tasks after their request in flight (at most `deadline`).
    pub async fn shutdown(&self, deadline: Duration) {
        let Some(engine) = &self.inner.engine else {
            return;
        };
        let _ = engine.stop.send(true);
        let supervisor = engine.supervisor.lock().expect("supervisor lock").take();
        if let Some(supervisor) = supervisor {
            let _ = tokio::time::timeout(deadline, supervisor).await;
        }
        let handles: Vec<WorkerHandle> = {
            let mut workers = engine.workers.lock().expect("workers lock");
            workers.drain().map(|(_, w)| w).collect()
        };
        let until = Instant::now() + deadline;
        for handle in handles {
            let _ = handle.stop.send(true);
            stop_worker(handle, until.saturating_duration_since(Instant::now())).await;
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(supervisor) = self.supervisor.lock().expect("supervisor lock").take() {
            supervisor.abort();
        }
        for (_, worker) in self.workers.lock().expect("workers lock").drain() {
            let _ = worker.stop.send(true);
            worker.join.abort();
        }
    }
}

/// Items delivered per second, from the recent delivery records (newest first): over the
/// last minute, or over the span the records cover when that is shorter.
fn throughput_of(records: &[DeliveryRecord], now: Timestamp) -> f64 {
    let recent: Vec<&DeliveryRecord> = records
        .iter()
        .filter(|r| {
            r.outcome == DeliveryOutcome::Delivered
                && now.duration_since(r.at).as_secs_f64() <= 60.0
        })
        .collect();
    let items: u64 = recent.iter().map(|r| u64::from(r.items)).sum();
    if items == 0 {
        return 0.0;
    }
    let span = if records.len() >= 100 {
        recent
            .last()
            .map(|r| now.duration_since(r.at).as_secs_f64())
            .unwrap_or(60.0)
            .clamp(1.0, 60.0)
    } else {
        60.0
    };
    items as f64 / span
}

fn validate_name(name: &str) -> SyncResult<()> {
    let ok = (1..=64).contains(&name.chars().count())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(SyncError::invalid(
            "name",
            "1 to 64 characters: letters, digits, '-', '_' or '.'",
        ))
    }
}

async fn stop_worker(handle: WorkerHandle, deadline: Duration) {
    let _ = handle.stop.send(true);
    let mut join = handle.join;
    if tokio::time::timeout(deadline, &mut join).await.is_err() {
        join.abort();
    }
}

/// Keeps one task per active destination, reloading when the store's version moves.
async fn supervise(
    shared: Arc<Shared>,
    workers: Arc<Mutex<HashMap<String, WorkerHandle>>>,
    loaded_version: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
    reload: Arc<Notify>,
) {
    let mut seen: Option<u64> = None;
    // A replaced task may take a request's timeout to finish; a little more.
    let stop_deadline = Duration::from_secs(30);
    loop {
        if *stop.borrow() {
            return;
        }
        match shared.store.version().await {
            Ok(version) if seen != Some(version) => match shared.store.list().await {
                Ok(destinations) => {
                    let active: HashMap<String, Destination> = destinations
                        .into_iter()
                        .filter(|d| d.state == DestinationState::Active)
                        .map(|d| (d.id.clone(), d))
                        .collect();
                    let stale: Vec<WorkerHandle> = {
                        let mut workers = workers.lock().expect("workers lock");
                        let ids: Vec<String> = workers
                            .iter()
                            .filter(|(id, w)| {
                                active.get(*id).is_none_or(|d| d.updated != w.updated)
                            })
                            .map(|(id, _)| id.clone())
                            .collect();
                        ids.iter().filter_map(|id| workers.remove(id)).collect()
                    };
                    for handle in stale {
                        stop_worker(handle, stop_deadline).await;
                    }
                    let mut workers = workers.lock().expect("workers lock");
                    for (id, destination) in active {
                        match workers.get(&id) {
                            Some(handle) => {
                                handle.live.lock().expect("live lock").check_replay = true;
                                handle.kick.notify_one();
                            }
                            None => {
                                let live = Arc::new(Mutex::new(Live::new()));
                                let (stop_tx, stop_rx) = watch::channel(false);
                                let kick = Arc::new(Notify::new());
                                let updated = destination.updated;
                                let worker = Worker::new(
                                    Arc::clone(&shared),
                                    destination,
                                    Arc::clone(&live),
                                    stop_rx,
                                    Arc::clone(&kick),
                                );
                                let join = tokio::spawn(worker.run());
                                workers.insert(
                                    id,
                                    WorkerHandle {
                                        updated,
                                        live,
                                        stop: stop_tx,
                                        kick,
                                        join,
                                    },
                                );
                            }
                        }
                    }
                    seen = Some(version);
                    loaded_version.store(version, Ordering::SeqCst);
                }
                Err(err) => tracing::warn!(error = %err, "cannot list destinations"),
            },
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "cannot read the destinations' version"),
        }
        tokio::select! {
            _ = tokio::time::sleep(shared.config.reload_interval) => {}
            _ = reload.notified() => {}
            _ = stop.changed() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(validate_name("web-hook_1.prod").is_ok());
        for bad in ["", "has space", "slash/no", &"x".repeat(65), "ünï"] {
            match validate_name(bad) {
                Err(SyncError::Invalid { field, .. }) => assert_eq!(field, "name"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }
}
