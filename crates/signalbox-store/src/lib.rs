//! The storage boundary: what the rest of Signalbox asks of a store, and the stores.
//!
//! # Layout
//! - [`Store`]: the trait every backend implements (the durable call log, rejections,
//!   sources and keys). Held as `Arc<dyn Store>`.
//! - [`sqlite::SqliteStore`]: the embedded default. One writer thread applies appends in
//!   group commits (WAL, `synchronous=FULL`), readers use a small pool of connections.
//! - [`postgres::PgStore`]: PostgreSQL, for several nodes on one database. A pool of
//!   connections for reads, one group-committing writer per node for appends.
//! - [`conformance`] (tests only): the cases every backend passes, run against both.
//! - [`discard::DiscardingStore`]: wraps a store and drops appends; the ceiling the ingest
//!   benchmark compares against.
//!
//! **Invariant:** no type from a database crate crosses this boundary; backend errors become
//! [`StoreError`].

#[cfg(any(test, feature = "test-support"))]
pub mod conformance;
pub mod discard;
pub mod postgres;
pub mod sqlite;

use std::collections::BTreeMap;

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use signalbox_core::{
    ApiKey, ApiKeyInfo, NewCall, Rejection, Scopes, Source, SourceId, SourceStatus, StoredCall,
    StoredRejection, WriteKey,
};

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("{what} already exists")]
    Conflict { what: String },
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// The write queue is full: the caller should answer "retry later".
    #[error("store overloaded")]
    Overloaded,
    /// The store is shutting down or its writer is gone.
    #[error("store unavailable")]
    Unavailable,
    /// The database was made by a newer Signalbox: this build refuses to touch it.
    #[error(
        "the database's {component} schema is version {found}, newer than this signalbox knows \
         ({known}): run the newer signalbox, or upgrade this one"
    )]
    SchemaTooNew {
        component: String,
        found: usize,
        known: usize,
    },
    #[error("store internal error: {0}")]
    Internal(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The log writer's group commits since the store opened, the calls they took and the time
/// they took. Sampled twice: the mean calls a commit took over the interval, which grows with
/// the load (the calls that arrive while a commit waits for the disk join the next one), and
/// the share of the interval the writer was committing (fsync waits included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupCount {
    pub groups: u64,
    pub calls: u64,
    pub busy_nanos: u64,
}

/// What a writer adds its groups to.
#[derive(Debug, Default)]
pub(crate) struct GroupCounter {
    groups: std::sync::atomic::AtomicU64,
    calls: std::sync::atomic::AtomicU64,
    busy_nanos: std::sync::atomic::AtomicU64,
}

impl GroupCounter {
    /// One group commit of `calls` calls that took `took`.
    pub(crate) fn add(&self, calls: usize, took: std::time::Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        self.calls
            .fetch_add(u64::try_from(calls).unwrap_or(u64::MAX), Relaxed);
        self.busy_nanos
            .fetch_add(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX), Relaxed);
        self.groups.fetch_add(1, Relaxed);
    }

    /// Time a group commit took, counted apart from the group (see the embedded writer,
    /// which counts a group before its replies go out).
    pub(crate) fn add_busy(&self, took: std::time::Duration) {
        self.busy_nanos.fetch_add(
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    pub(crate) fn read(&self) -> GroupCount {
        use std::sync::atomic::Ordering::Relaxed;
        GroupCount {
            groups: self.groups.load(Relaxed),
            calls: self.calls.load(Relaxed),
            busy_nanos: self.busy_nanos.load(Relaxed),
        }
    }
}

/// What one append did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Calls newly written to the log.
    pub appended: u32,
    /// Calls whose `messageId` was already in the log inside the dedupe window.
    pub duplicates: u32,
    /// Rejections recorded.
    pub rejected: u32,
    /// Sequence number of the last call this append wrote (0 when it wrote none).
    pub last_seq: i64,
}

/// Which calls to read from the log.
#[derive(Debug, Clone, Default)]
pub struct CallQuery {
    /// Only calls with a larger sequence number.
    pub after_seq: i64,
    pub source_id: Option<SourceId>,
    /// Only calls received at or after this time.
    pub since: Option<Timestamp>,
    pub limit: u32,
}

/// Which rejections to read.
#[derive(Debug, Clone, Default)]
pub struct RejectionQuery {
    pub after_id: i64,
    pub source_id: Option<SourceId>,
    pub limit: u32,
}

/// One source's share of the log and of the rejections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceTotals {
    pub source_id: SourceId,
    /// Calls in the log.
    pub calls: u64,
    /// The highest sequence number among those calls; 0 when there are none.
    pub last_seq: i64,
    pub rejections: u64,
}

impl SourceTotals {
    pub fn empty(source_id: SourceId) -> SourceTotals {
        SourceTotals {
            source_id,
            calls: 0,
            last_seq: 0,
            rejections: 0,
        }
    }
}

/// What [`Store::trim_log`] may delete: the front of the log, up to the first call that is
/// too young or that a follower still needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrimRequest {
    /// Calls with a smaller sequence number may go: every follower of the log (the engage
    /// pipeline, its held and quarantined calls, every destination and pending replay) has
    /// passed them.
    pub below_seq: i64,
    /// Calls and rejections received before this time may go.
    pub received_before: Timestamp,
    /// Now, by the caller's clock: dedupe records older than the dedupe window before it no
    /// longer decide anything and may go too (where the backend keeps them in the database).
    pub now: Timestamp,
    /// Rows deleted per transaction at most: each is short, so the log's writer waits for
    /// one chunk at most.
    pub chunk: u32,
}

/// What one [`Store::trim_log`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrimOutcome {
    pub calls: u64,
    pub rejections: u64,
    /// Dedupe records past the dedupe window (PostgreSQL; the embedded store's index drops
    /// them itself, a time bucket at a time).
    pub dedupe_ids: u64,
}

/// Calls read per page when a default method walks the whole log.
const TOTALS_PAGE: u32 = 10_000;

/// A write key the server may accept, with what it needs to decide.
#[derive(Debug, Clone)]
pub struct WriteKeyRecord {
    pub key: WriteKey,
    pub source_id: SourceId,
    pub source_name: String,
    pub status: SourceStatus,
    /// Set on a rotated-out key: accepted until then.
    pub expires_at: Option<Timestamp>,
}

/// A source's settings object (destination settings, as JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct SourceSettings {
    pub source_id: SourceId,
    pub name: String,
    pub settings: serde_json::Value,
}

impl WriteKeyRecord {
    pub fn usable_at(&self, now: Timestamp) -> bool {
        self.status == SourceStatus::Enabled && self.expires_at.is_none_or(|t| now < t)
    }
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    // The call log.

    /// Appends the accepted calls of one request and records its rejections, durably and
    /// atomically, skipping calls whose `messageId` is already in the log. Fails fast with
    /// [`StoreError::Overloaded`] when the write queue is full.
    async fn append(
        &self,
        source: SourceId,
        calls: Vec<NewCall>,
        rejections: Vec<Rejection>,
    ) -> StoreResult<AppendOutcome>;
    async fn read_calls(&self, query: CallQuery) -> StoreResult<Vec<StoredCall>>;
    async fn last_seq(&self) -> StoreResult<i64>;
    async fn read_rejections(&self, query: RejectionQuery) -> StoreResult<Vec<StoredRejection>>;
    /// Per-source totals, ordered by source id; sources with neither calls nor rejections are
    /// absent. The default walks the whole log; backends answer it with an aggregate query.
    async fn totals(&self) -> StoreResult<Vec<SourceTotals>> {
        totals_by_walking(self).await
    }

    /// Deletes calls from the front of the log, oldest first, while each is older than
    /// `received_before` and below `below_seq`; then rejections older than `received_before`.
    /// The newest call and the newest rejection always stay, so sequence numbers and ids keep
    /// growing. Works in transactions of `chunk` rows, so appends are never held up for long;
    /// [`SourceTotals`] drop what was deleted. Freed space is reused by later appends.
    async fn trim_log(&self, request: TrimRequest) -> StoreResult<TrimOutcome>;

    // Sources and their write keys.

    async fn create_source(&self, name: &str) -> StoreResult<(Source, WriteKey)>;
    async fn list_sources(&self) -> StoreResult<Vec<Source>>;
    async fn source_by_name(&self, name: &str) -> StoreResult<Source>;
    /// The newest write key of a source.
    async fn current_write_key(&self, name: &str) -> StoreResult<WriteKey>;
    /// Issues a new key; the previous ones keep working for `grace`.
    async fn rotate_write_key(&self, name: &str, grace: SignedDuration) -> StoreResult<WriteKey>;
    async fn set_source_status(&self, name: &str, status: SourceStatus) -> StoreResult<()>;
    async fn delete_source(&self, name: &str) -> StoreResult<()>;
    /// A source's settings object (`{}` when never set).
    async fn source_settings(&self, name: &str) -> StoreResult<serde_json::Value>;
    /// Replaces a source's settings object.
    async fn set_source_settings(&self, name: &str, settings: serde_json::Value)
        -> StoreResult<()>;
    /// Every source's settings.
    async fn all_source_settings(&self) -> StoreResult<Vec<SourceSettings>>;
    /// Every write key, for the server's key cache.
    async fn write_keys(&self) -> StoreResult<Vec<WriteKeyRecord>>;
    /// The key whose SHA-256 digest this is.
    async fn find_write_key(&self, digest: [u8; 32]) -> StoreResult<Option<WriteKeyRecord>>;

    // Private API keys.

    /// A new key holding `scopes` (at least one).
    async fn create_api_key(
        &self,
        name: &str,
        scopes: &Scopes,
    ) -> StoreResult<(ApiKeyInfo, ApiKey)>;
    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKeyInfo>>;
    async fn delete_api_key(&self, name: &str) -> StoreResult<()>;
    /// The key whose digest matches, compared in constant time.
    async fn authenticate_api_key(&self, key: &ApiKey) -> StoreResult<Option<ApiKeyInfo>>;

    /// Stops taking appends and returns once everything queued is committed. Blocking.
    fn close(&self) {}

    /// The log writer's group commits so far ([`GroupCount`]). Work that can wait (the
    /// engage pipeline) backs off while commits take many calls each. Stores without a local
    /// writer report zeros.
    fn writer_groups(&self) -> GroupCount {
        GroupCount::default()
    }
}

/// [`Store::totals`] computed from [`Store::read_calls`] and [`Store::read_rejections`]: reads
/// the whole log, so backends override it with an aggregate query.
pub async fn totals_by_walking<S: Store + ?Sized>(store: &S) -> StoreResult<Vec<SourceTotals>> {
    let mut by_source: BTreeMap<SourceId, SourceTotals> = BTreeMap::new();
    let mut after_seq = 0;
    loop {
        let page = store
            .read_calls(CallQuery {
                after_seq,
                limit: TOTALS_PAGE,
                ..CallQuery::default()
            })
            .await?;
        let Some(last) = page.last() else { break };
        after_seq = last.seq;
        for call in &page {
            let totals = by_source
                .entry(call.source_id)
                .or_insert_with(|| SourceTotals::empty(call.source_id));
            totals.calls += 1;
            totals.last_seq = totals.last_seq.max(call.seq);
        }
    }
    let mut after_id = 0;
    loop {
        let page = store
            .read_rejections(RejectionQuery {
                after_id,
                limit: TOTALS_PAGE,
                ..RejectionQuery::default()
            })
            .await?;
        let Some(last) = page.last() else { break };
        after_id = last.id;
        for rejection in &page {
            by_source
                .entry(rejection.source_id)
                .or_insert_with(|| SourceTotals::empty(rejection.source_id))
                .rejections += 1;
        }
    }
    Ok(by_source.into_values().collect())
}
