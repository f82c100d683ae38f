//! What the engine needs from the rest of Signalbox, as traits: profile facts for filters,
//! segment entries, built-in metrics, stored templates and list membership. Each is
//! implemented where that state lives; tests implement them in memory.
//!
//! Every method is synchronous and called on a blocking thread (`spawn_blocking`): an
//! implementation may do IO or wait on async work with `Handle::block_on`.

use jiff::Timestamp;
use serde_json::Value;
use signalbox_engage::{ProfileId, ProfileKey};
use signalbox_mail::EmailTemplateSource;
use signalbox_seglang::ProfileFacts;

/// A dependency's failure, as text (the engine logs it and retries or counts it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DepError(pub String);

pub type DepResult<T> = Result<T, DepError>;

/// A profile's facts for profile filters and conditional splits (metric counts with
/// `flow-start` windows, properties, list and segment membership, email consent).
pub trait FactsLoader: Send + Sync + 'static {
    fn load(
        &self,
        profile_pk: ProfileKey,
        now: Timestamp,
    ) -> DepResult<Box<dyn ProfileFacts + Send>>;
}

/// A profile that newly entered a segment; `cursor` increases with every entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentEntry {
    pub cursor: i64,
    pub segment_id: String,
    pub profile_pk: ProfileKey,
    pub at_us: i64,
    /// False for a profile leaving the segment: no flow starts, but the cursor moves past it.
    pub entered: bool,
}

/// Segment entries in order, for segment-triggered flows.
pub trait MembershipFeed: Send + Sync + 'static {
    /// Membership changes with a cursor above `cursor`, oldest first, at most `limit`.
    fn entered_after(&self, cursor: i64, limit: usize) -> DepResult<Vec<SegmentEntry>>;

    /// Whether the profile is in the segment now (segment-triggered flows check it again at
    /// send time). The default trusts the entry.
    fn is_member(&self, _segment_id: &str, _profile_pk: ProfileKey) -> DepResult<bool> {
        Ok(true)
    }
}

/// Records Signalbox's own metrics (`Received Email`, `Bounced Email`, …) as events of the
/// profile, with integration `Signalbox`. `unique_id` makes a repeated record a no-op.
pub trait BuiltinEvents: Send + Sync + 'static {
    fn record(
        &self,
        metric: &str,
        profile_id: &ProfileId,
        properties: Value,
        unique_id: String,
        time: Timestamp,
    ) -> DepResult<()>;
}

/// Templates stored through `/api/templates`, by id.
#[async_trait::async_trait]
pub trait TemplateSource: Send + Sync + 'static {
    async fn get(&self, id: &str) -> Option<EmailTemplateSource>;
}

/// List membership changes made by `list-update` actions. Both must be idempotent: the
/// engine may repeat a call after a crash.
pub trait ListActions: Send + Sync + 'static {
    fn add(&self, list_id: &str, profile_id: &ProfileId) -> DepResult<()>;
    fn remove(&self, list_id: &str, profile_id: &ProfileId) -> DepResult<()>;
}
