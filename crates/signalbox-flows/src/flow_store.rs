//! Where the flows engine keeps its state: [`FlowStore`], spoken in the engine's terms, so a
//! backend other than the embedded `flows.db` ([`crate::SqliteFlowStore`]) can slot in.
//!
//! Methods block (the engine calls them on blocking threads). Errors are [`FlowsError`]; a
//! backend folds its own errors into [`FlowsError::Internal`].
//!
//! [`FlowsError`]: crate::FlowsError
//! [`FlowsError::Internal`]: crate::FlowsError::Internal

use jiff::Timestamp;
use signalbox_engage::feed::FeedCursor;

use crate::definition::FlowDefinition;
use crate::error::FlowsResult;
use crate::model::{
    DeadLetter, FlowInfo, FlowPage, FlowStats, FlowStatus, HeldMessage, HeldStatus, RunInfo,
    SendInfo,
};

/// A new flow, its definition already checked.
#[derive(Debug, Clone, PartialEq)]
pub struct NewFlow<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub status: FlowStatus,
    pub now: Timestamp,
}

/// A change to a stored flow; `None` leaves a part as it is.
#[derive(Debug, Clone, Default)]
pub struct FlowChange {
    pub name: Option<String>,
    pub status: Option<FlowStatus>,
    pub archived: Option<bool>,
    /// A new version; its temporary action ids become real ones as in
    /// [`FlowStore::create_flow`].
    pub definition: Option<FlowDefinition>,
}

/// The flows engine's storage, callable from any thread.
pub trait FlowStore: Send + Sync {
    /// Saves a new flow at version 1. In the same transaction, the definition's temporary
    /// action ids become real ones: decimal numbers from a counter, unique across flows.
    /// Returns the definition as saved.
    fn create_flow(
        &self,
        flow: &NewFlow<'_>,
        definition: FlowDefinition,
    ) -> FlowsResult<FlowDefinition>;

    /// Changes the flow in one transaction: `change` sees it as stored (inside the
    /// transaction) and says what to change; its error aborts the change. The flow's
    /// `updated` becomes `now`. Returns whether the flow runs afterwards (`live` or `manual`,
    /// not archived); when it does not, its active runs' wake-ups are held back (parked) in
    /// the same transaction. Unknown flow: not found.
    fn update_flow(
        &self,
        id: &str,
        now: Timestamp,
        change: &mut dyn FnMut(&FlowInfo) -> FlowsResult<FlowChange>,
    ) -> FlowsResult<bool>;

    /// Gives the flow's parked runs their wake-ups back, none earlier than `now`.
    fn unpark_runs(&self, flow_id: &str, now: Timestamp) -> FlowsResult<()>;

    /// Deletes the flow with its versions and date schedule; its pending held messages become
    /// `cancelled` and its active runs end as `cancelled` (`flow_deleted`), at `now`.
    /// Statistics, sends and dead letters stay. Unknown flow: not found.
    fn delete_flow(&self, id: &str, now: Timestamp) -> FlowsResult<()>;

    /// Where the worker is in engage's change feed; `None` before the first save.
    fn feed_cursor(&self) -> FlowsResult<Option<FeedCursor>>;

    /// Sets the feed cursor when none is saved yet (a new engine starts at the feed's head).
    fn start_feed_at(&self, cursor: &FeedCursor) -> FlowsResult<()>;

    /// The flow at its current version.
    fn flow(&self, id: &str) -> FlowsResult<Option<FlowInfo>>;

    /// Every flow, oldest first.
    fn flows(&self) -> FlowsResult<Vec<FlowInfo>>;

    /// At most `limit` (at least one) flows, the most recently changed first, after the flow
    /// changed at `after.0` with id `after.1`. `next` (`<updated_us>.<id>`) is set when more
    /// follow.
    fn flows_page(&self, after: Option<(i64, &str)>, limit: usize) -> FlowsResult<FlowPage>;

    /// Counters of the flow and of each action, with the runs waiting at each delay
    /// (`waiting`), the messages pending review (`pending`) and the active runs (`active`).
    fn stats(&self, flow_id: &str) -> FlowsResult<FlowStats>;

    /// The flow's runs, newest first, at most `limit`.
    fn runs(&self, flow_id: &str, limit: usize) -> FlowsResult<Vec<RunInfo>>;

    /// The emails the flow decided to send, oldest first.
    fn sends(&self, flow_id: &str) -> FlowsResult<Vec<SendInfo>>;

    /// The flow's webhook deliveries given up on, oldest first.
    fn dead_letters(&self, flow_id: &str) -> FlowsResult<Vec<DeadLetter>>;

    /// The flow's held messages with `status` (any when `None`) after id `after`, oldest
    /// first, at most `limit`.
    fn held_messages(
        &self,
        flow_id: &str,
        status: Option<HeldStatus>,
        after: i64,
        limit: usize,
    ) -> FlowsResult<Vec<HeldMessage>>;

    fn held_message(&self, id: i64) -> FlowsResult<Option<HeldMessage>>;

    /// Approves or skips the flow's pending message `id` in one transaction: the message,
    /// its step (skipped: `skipped` with detail `manual`), the counters (`approved` or
    /// `skipped:manual`) and its run, woken at `now`. Deciding as already decided changes
    /// nothing; a message decided otherwise, or expired by `now`, is a
    /// [`crate::FlowsError::Conflict`]; another flow's is not found.
    fn decide_held(
        &self,
        flow_id: &str,
        id: i64,
        to: HeldStatus,
        now: Timestamp,
    ) -> FlowsResult<HeldMessage>;
}
