//! The pipeline: one thread that reads the call log after the checkpoint, in order, and
//! hands batches to the [`Applier`]. It wakes when told that something was appended
//! ([`Pipeline::notify`]) and otherwise polls.
//!
//! **Invariant:** this thread is the only writer of `engage.db` (it holds the file's lock);
//! the log's writer never waits on it.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use signalbox_core::{Clock, StoredCall};
use signalbox_store::{CallQuery, Store};
use tokio::runtime::Handle;
use tokio::sync::{watch, Notify};

use crate::apply::{Applier, BatchReport, SourceInfo, Sources};
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

struct Shared {
    notify: Notify,
    stop: AtomicBool,
    stats: Mutex<(PipelineStats, Histogram<u64>)>,
}

/// A running pipeline.
pub(crate) struct Pipeline {
    shared: Arc<Shared>,
    applied: watch::Receiver<i64>,
    thread: Mutex<Option<JoinHandle<()>>>,
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

impl Pipeline {
    pub(crate) fn spawn(
        applier: Applier,
        lock: File,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        config: PipelineConfig,
        runtime: Handle,
    ) -> EngageResult<Pipeline> {
        let (applied_tx, applied) = watch::channel(applier.applied_seq());
        let shared = Arc::new(Shared {
            notify: Notify::new(),
            stop: AtomicBool::new(false),
            stats: Mutex::new((
                PipelineStats {
                    applied_seq: applier.applied_seq(),
                    ..PipelineStats::default()
                },
                Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("histogram bounds"),
            )),
        });
        let worker = Worker {
            applier,
            _lock: lock,
            store,
            clock,
            config,
            runtime,
            shared: Arc::clone(&shared),
            applied_tx,
            sources: HashMap::new(),
            sources_at: None,
        };
        let thread = std::thread::Builder::new()
            .name("signalbox-engage".into())
            .spawn(move || worker.run())
            .map_err(|e| EngageError::Internal(e.to_string()))?;
        Ok(Pipeline {
            shared,
            applied,
            thread: Mutex::new(Some(thread)),
        })
    }

    pub(crate) fn notify(&self) {
        self.shared.notify.notify_one();
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

    pub(crate) fn stats(&self) -> PipelineStats {
        let guard = self.shared.stats.lock().expect("stats lock");
        let (mut stats, histogram) = (guard.0, &guard.1);
        stats.latency = summarize(histogram);
        stats
    }

    /// Stops after the batch in progress and waits for the thread. Blocking.
    pub(crate) fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.notify.notify_one();
        if let Some(thread) = self.thread.lock().expect("thread lock").take() {
            let _ = thread.join();
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

struct Worker {
    applier: Applier,
    _lock: File,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    config: PipelineConfig,
    runtime: Handle,
    shared: Arc<Shared>,
    applied_tx: watch::Sender<i64>,
    sources: Sources,
    sources_at: Option<Instant>,
}

impl Worker {
    fn run(mut self) {
        tracing::info!(
            applied_seq = self.applier.applied_seq(),
            "engage pipeline started"
        );
        let mut backoff = Duration::from_millis(50);
        while !self.shared.stop.load(Ordering::SeqCst) {
            match self.step() {
                Ok(true) => backoff = Duration::from_millis(50),
                Ok(false) => {
                    let now = self.clock.now().as_microsecond();
                    if let Err(err) = self.applier.expire_holds(now) {
                        tracing::warn!(error = %err, "expiring held calls failed");
                    }
                    let notify = &self.shared.notify;
                    let poll = self.config.poll_interval;
                    self.runtime.block_on(async {
                        let _ = tokio::time::timeout(poll, notify.notified()).await;
                    });
                }
                Err(err) => {
                    tracing::error!(error = %err, "engage pipeline step failed; retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        tracing::info!(
            applied_seq = self.applier.applied_seq(),
            "engage pipeline stopped"
        );
    }

    /// Applies the next batch; `false` when the log had nothing new.
    fn step(&mut self) -> EngageResult<bool> {
        if self
            .sources_at
            .is_none_or(|at| at.elapsed() >= SETTINGS_REFRESH)
        {
            let store = Arc::clone(&self.store);
            self.sources = self
                .runtime
                .block_on(async move { load_sources(store.as_ref()).await })?;
            self.sources_at = Some(Instant::now());
        }
        let query = CallQuery {
            after_seq: self.applier.applied_seq(),
            limit: self.config.batch_size as u32,
            ..CallQuery::default()
        };
        let store = Arc::clone(&self.store);
        let reading = Instant::now();
        let calls = self
            .runtime
            .block_on(async move { store.read_calls(query).await })?;
        if calls.is_empty() {
            return Ok(false);
        }
        let read = reading.elapsed();
        let started = Instant::now();
        let report = self.applier.apply_batch(&calls, &self.sources)?;
        self.record(&calls, &report, read, started.elapsed());
        let _ = self.applied_tx.send(report.applied_seq);
        Ok(true)
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
            metrics::histogram!("signalbox_engage_apply_lag_seconds")
                .record(lag as f64 / 1_000_000.0);
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
    applier: &mut Applier,
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
        let report = applier.apply_batch(&calls, &sources)?;
        done.applied_seq = report.applied_seq;
        done.entries += report.entries;
        done.events += report.events;
        done.last_seq = done.last_seq.max(report.applied_seq);
        progress(done);
    }
    Ok(done)
}
