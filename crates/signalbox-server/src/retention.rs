//! Retention of the call log (`serve --retain-log`): entries older than the window go once
//! every follower of the log has passed them.
//!
//! The store knows no follower (it depends on neither engage nor sync): [`Retention`] asks
//! each one for the oldest entry it still needs and hands the store a floor and a cutoff
//! ([`TrimRequest`]). The followers:
//! - the engage pipeline: the entries after its checkpoint; a call still held and an entry in
//!   quarantine (a retry reads it from the log again) keep theirs ([`Engage::log_needs`]);
//! - every destination that follows the log (`klaviyo`, `webhook`), paused or failing ones
//!   included: the entries after its cursor, and those received since the time of a replay
//!   request not yet taken ([`Sync::log_holds`]).
//!
//! Profiles, events and aggregates in engage are derived state and stay; a rebuild re-derives
//! them from what the log still holds. The trim runs at start and then every
//! [`RetentionConfig::interval`], in short transactions, so ingest is never held up for long.
//!
//! A running `signalbox backup` holds every entry ([`BackupLock`]): it copies engage before
//! the log, so an entry trimmed between the two copies would be missing from the restored
//! log although the restored engage has not applied it yet.

use std::fs::{File, TryLockError};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use signalbox_core::Clock;
use signalbox_engage::{Engage, EngageError};
use signalbox_store::{Store, StoreError, TrimOutcome, TrimRequest};
use signalbox_sync::{DestinationState, Sync, SyncError};
use tokio::task::JoinHandle;

/// The default window: 30 days.
pub const DEFAULT_RETAIN_LOG: SignedDuration = SignedDuration::from_hours(30 * 24);

/// How long the log is kept and how often it is trimmed.
#[derive(Debug, Clone, Copy)]
pub struct RetentionConfig {
    /// Entries received longer ago than this may go; `None`: every entry stays.
    pub window: Option<SignedDuration>,
    /// Time between trims (the first runs at start).
    pub interval: Duration,
    /// Rows deleted per transaction.
    pub chunk: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            window: Some(DEFAULT_RETAIN_LOG),
            interval: Duration::from_secs(60),
            chunk: 1000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Engage(#[from] EngageError),
    #[error(transparent)]
    Sync(#[from] SyncError),
    #[error("cannot use the backup lock {path}: {source}")]
    BackupLock {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Who keeps entries in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldKind {
    /// The retention window: entries received since `since`.
    Window,
    /// The engage pipeline: the entries after its checkpoint.
    Pipeline,
    /// Calls held in engage until an identifier links them to a profile.
    HeldCalls,
    /// Entries engage set aside after failing to apply them (a retry reads them again).
    Quarantine,
    /// A destination, from the entry after its cursor.
    Destination,
    /// A destination's replay request not yet taken: entries received since `since`.
    Replay,
    /// The newest entry always stays: sequence numbers count on from it.
    Newest,
    /// A `signalbox backup` is running: every entry stays until it ends.
    Backup,
}

/// The name, in an embedded data folder, of the file a running backup locks.
pub const BACKUP_LOCK_FILE: &str = "backup.lock";

/// The lock a backup and the trims share (`flock`, on [`BACKUP_LOCK_FILE`]): a backup holds
/// it exclusively from before its first copy to after its last, and each trim holds it
/// shared, so no entry goes while a backup runs. The system releases it when its holder
/// exits, however it exits: a backup that dies holds nothing back.
#[derive(Debug, Clone)]
pub struct BackupLock {
    path: PathBuf,
}

impl BackupLock {
    /// The lock of the embedded data folder `dir`.
    pub fn in_data_dir(dir: &Path) -> BackupLock {
        BackupLock {
            path: dir.join(BACKUP_LOCK_FILE),
        }
    }

    /// Taken by a backup, for as long as the returned file lives. Waits for a trim in
    /// progress to end.
    pub fn hold(&self) -> io::Result<File> {
        let file = self.open()?;
        file.lock()?;
        Ok(file)
    }

    /// Taken by a trim: `None` while a backup holds the lock.
    fn share(&self) -> io::Result<Option<File>> {
        let file = self.open()?;
        match file.try_lock_shared() {
            Ok(()) => Ok(Some(file)),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(err)) => Err(err),
        }
    }

    fn open(&self) -> io::Result<File> {
        File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)
    }
}

/// One reason an entry stays: entries from `from_seq` on, or received since `since`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hold {
    pub kind: HoldKind,
    /// The destination, for `destination` and `replay`.
    pub name: Option<String>,
    /// For a destination: `active` or `paused`.
    pub state: Option<DestinationState>,
    /// The first entry it needs, for the holds counted in sequence numbers.
    pub from_seq: Option<i64>,
    /// The earliest receipt time it keeps, for `window` and `replay`.
    pub since: Option<Timestamp>,
}

impl Hold {
    fn seq(kind: HoldKind, from_seq: i64) -> Hold {
        Hold {
            kind,
            name: None,
            state: None,
            from_seq: Some(from_seq),
            since: None,
        }
    }

    /// Whether this hold keeps the entry `seq` received at `received`.
    pub fn keeps(&self, seq: i64, received: Timestamp) -> bool {
        self.from_seq.is_some_and(|from| from <= seq) || self.since.is_some_and(|t| t <= received)
    }
}

/// What may go: entries below `below_seq` received before `received_before`, and every hold
/// that set them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFloor {
    pub below_seq: i64,
    pub received_before: Timestamp,
    pub holds: Vec<Hold>,
}

impl LogFloor {
    /// The holds that keep the entry `seq` received at `received`.
    pub fn holding(&self, seq: i64, received: Timestamp) -> Vec<Hold> {
        self.holds
            .iter()
            .filter(|hold| hold.keeps(seq, received))
            .cloned()
            .collect()
    }
}

/// The log's followers and the window: computes the floor and trims.
#[derive(Clone)]
pub struct Retention {
    store: Arc<dyn Store>,
    engage: Option<Engage>,
    sync: Option<Sync>,
    clock: Arc<dyn Clock>,
    config: RetentionConfig,
    backup_lock: Option<BackupLock>,
}

impl Retention {
    /// `engage` and `sync` are the followers a server runs; a server without one (or a
    /// command that looks at a data folder with no `engage.db`) passes `None`.
    pub fn new(
        store: Arc<dyn Store>,
        engage: Option<Engage>,
        sync: Option<Sync>,
        clock: Arc<dyn Clock>,
        config: RetentionConfig,
    ) -> Retention {
        Retention {
            store,
            engage,
            sync,
            clock,
            config,
            backup_lock: None,
        }
    }

    /// Holds every entry while a backup of the embedded data folder runs.
    pub fn with_backup_lock(mut self, lock: BackupLock) -> Retention {
        self.backup_lock = Some(lock);
        self
    }

    pub fn config(&self) -> &RetentionConfig {
        &self.config
    }

    /// Asks every follower what it still needs. Each position only moves forward (a replay
    /// request is read before the cursor it rewinds), so a floor read a moment ago is still
    /// at or below every follower when the trim runs.
    pub async fn floor(&self) -> Result<LogFloor, RetentionError> {
        let now = self.clock.now();
        // Without a window, the window keeps every entry, from the first.
        let window = match self.config.window {
            Some(window) => Hold {
                kind: HoldKind::Window,
                name: None,
                state: None,
                from_seq: None,
                since: Some(now.checked_sub(window).unwrap_or(Timestamp::MIN)),
            },
            None => Hold::seq(HoldKind::Window, 1),
        };
        let mut holds = vec![window];
        if self.backup_lock.is_some() && matches!(self.share_backup_lock(), Ok(None)) {
            holds.push(Hold::seq(HoldKind::Backup, 1));
        }
        if let Some(engage) = &self.engage {
            let needs = engage.log_needs().await?;
            holds.push(Hold::seq(HoldKind::Pipeline, needs.applied_seq + 1));
            if let Some(seq) = needs.oldest_held_seq {
                holds.push(Hold::seq(HoldKind::HeldCalls, seq));
            }
            if let Some(seq) = needs.oldest_quarantined_seq {
                holds.push(Hold::seq(HoldKind::Quarantine, seq));
            }
        }
        if let Some(sync) = &self.sync {
            for hold in sync.log_holds().await? {
                holds.push(Hold {
                    kind: HoldKind::Destination,
                    name: Some(hold.destination.clone()),
                    state: Some(hold.state),
                    from_seq: Some(hold.from_seq),
                    since: None,
                });
                if let Some(since) = hold.replay_since {
                    holds.push(Hold {
                        kind: HoldKind::Replay,
                        name: Some(hold.destination),
                        state: Some(hold.state),
                        from_seq: None,
                        since: Some(since),
                    });
                }
            }
        }
        let below_seq = holds.iter().filter_map(|h| h.from_seq).min();
        let received_before = holds
            .iter()
            .filter_map(|h| h.since)
            .min()
            .unwrap_or(Timestamp::MIN);
        Ok(LogFloor {
            below_seq: below_seq.unwrap_or(i64::MAX),
            received_before,
            holds,
        })
    }

    /// Trims the log once: what the window and every follower let go.
    pub async fn run_once(&self) -> Result<TrimOutcome, RetentionError> {
        // Held (shared) until the trim ends: a backup that starts meanwhile waits for it.
        let _shared = match &self.backup_lock {
            Some(_) => match self.share_backup_lock()? {
                Some(file) => Some(file),
                None => {
                    tracing::debug!("a backup is running: the log is not trimmed now");
                    return Ok(TrimOutcome::default());
                }
            },
            None => None,
        };
        let floor = self.floor().await?;
        let outcome = self
            .store
            .trim_log(TrimRequest {
                below_seq: floor.below_seq,
                received_before: floor.received_before,
                now: self.clock.now(),
                chunk: self.config.chunk,
            })
            .await?;
        metrics::counter!("signalbox_log_trimmed_total", "what" => "calls")
            .increment(outcome.calls);
        metrics::counter!("signalbox_log_trimmed_total", "what" => "rejections")
            .increment(outcome.rejections);
        if outcome != TrimOutcome::default() {
            tracing::info!(
                calls = outcome.calls,
                rejections = outcome.rejections,
                dedupe_ids = outcome.dedupe_ids,
                below_seq = floor.below_seq,
                received_before = %floor.received_before,
                "log trimmed"
            );
        }
        Ok(outcome)
    }

    /// The backup lock taken shared; `None` while a backup holds it (or there is no lock).
    fn share_backup_lock(&self) -> Result<Option<File>, RetentionError> {
        let Some(lock) = &self.backup_lock else {
            return Ok(None);
        };
        lock.share().map_err(|source| RetentionError::BackupLock {
            path: lock.path.display().to_string(),
            source,
        })
    }

    /// Trims now and then every interval, until the returned task is dropped.
    pub fn spawn(self) -> RetentionTask {
        let handle = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(self.config.interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if let Err(err) = self.run_once().await {
                    tracing::warn!(error = %err, "cannot trim the log; trying again later");
                }
            }
        });
        RetentionTask(handle)
    }
}

/// The running trim loop; dropping it stops the loop (a chunk in progress still commits).
pub struct RetentionTask(JoinHandle<()>);

impl Drop for RetentionTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}
