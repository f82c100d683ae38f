//! Where the flows engine keeps its state: [`FlowStore`], spoken in the engine's terms, so a
//! backend other than the embedded `flows.db` ([`crate::SqliteFlowStore`]) can slot in, as
//! PostgreSQL does ([`crate::PgFlowStore`]).
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
pub use crate::store::{
    NewHeld, NewRun, NewSend, NewStep, RunRow, SendRef, StepRow, StepState, WebhookState,
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

    /// Runs `f` in one transaction with the writer: committed when `f` returns `Ok`, rolled
    /// back when it fails.
    fn transaction(&self, f: &mut dyn FnMut(&dyn FlowWriter) -> FlowsResult<()>)
        -> FlowsResult<()>;

    /// The earliest wake-up of an active run.
    fn next_wake(&self) -> FlowsResult<Option<i64>>;

    /// Whether this engine may turn the change feed, segment entries and dates into runs: of
    /// several engines on one store, one at a time does (the others only move due runs). Once
    /// taken, the lead is kept until [`FlowStore::release_ingestion`] or the connection that
    /// holds it is lost. A store only one engine uses (`flows.db`, locked by file) always
    /// leads.
    fn lead_ingestion(&self) -> FlowsResult<bool> {
        Ok(true)
    }

    /// Gives the ingestion lead up (the worker stops), so another engine may take it.
    fn release_ingestion(&self) -> FlowsResult<()> {
        Ok(())
    }

    /// Date triggers due at `now_us` (flow, profile, when), soonest first, at most `limit`.
    fn due_dates(&self, now_us: i64, limit: usize) -> FlowsResult<Vec<(String, i64, i64)>>;

    /// Where the worker is in the segment membership feed (0: at the start).
    fn membership_cursor(&self) -> FlowsResult<i64>;

    /// A value the engine keeps for itself.
    fn meta(&self, key: &str) -> FlowsResult<Option<String>>;

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
    /// The last three are kept as the runs and messages change (an action's shows when not
    /// zero, the flow's always): one read, nothing counted.
    fn stats(&self, flow_id: &str) -> FlowsResult<FlowStats>;

    /// The flow's `active`, `waiting` and `pending` as [`FlowStore::stats`] shows them, but
    /// counted from its runs and held messages: what the kept figures must equal. For the
    /// conformance suite.
    #[cfg(feature = "conformance")]
    fn count_figures(&self, flow_id: &str) -> FlowsResult<FlowStats>;

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

/// The write side, handed to the closure of [`FlowStore::transaction`]: every write through
/// it is one transaction (all or none); reads through it see its uncommitted writes.
pub trait FlowWriter {
    fn bump(
        &self,
        flow_id: &str,
        action_id: &str,
        name: &str,
        by: i64,
        amount: f64,
    ) -> FlowsResult<()>;
    fn delay_run(&self, run_id: i64, wake_us: i64) -> FlowsResult<()>;
    fn emailed_since(&self, profile_pk: i64, since_us: i64) -> FlowsResult<bool>;
    fn end_run(
        &self,
        run_id: i64,
        status: crate::model::RunStatus,
        reason: Option<crate::model::RunExit>,
        now_us: i64,
    ) -> FlowsResult<()>;
    fn finish_send(
        &self,
        key: &str,
        status: crate::model::SendStatus,
        subject: Option<&str>,
        message_id: Option<&str>,
        detail: Option<&str>,
        now_us: i64,
    ) -> FlowsResult<()>;
    fn finish_step(
        &self,
        key: &str,
        state: StepState,
        detail: Option<&str>,
        now_us: i64,
    ) -> FlowsResult<()>;
    fn get_meta(&self, key: &str) -> FlowsResult<Option<String>>;
    fn held_by_key(&self, key: &str) -> FlowsResult<Option<crate::model::HeldMessage>>;
    fn hold_run(&self, run_id: i64) -> FlowsResult<()>;
    #[allow(clippy::too_many_arguments)]
    fn insert_dead_letter(
        &self,
        key: &str,
        flow_id: &str,
        action_id: &str,
        run_id: i64,
        url: &str,
        body: &str,
        reason: &str,
        attempts: i64,
        now_us: i64,
    ) -> FlowsResult<()>;
    fn insert_held(&self, h: &NewHeld<'_>) -> FlowsResult<()>;
    fn insert_run(&self, run: &NewRun<'_>) -> FlowsResult<Option<i64>>;
    fn insert_send(&self, s: &NewSend<'_>) -> FlowsResult<()>;
    fn insert_step(&self, s: &NewStep<'_>) -> FlowsResult<()>;
    fn last_entry(&self, flow_id: &str, profile_pk: i64) -> FlowsResult<Option<i64>>;
    fn latest_send(
        &self,
        profile_pk: i64,
        since_us: i64,
        until_us: i64,
    ) -> FlowsResult<Option<SendRef>>;
    fn mark_send(
        &self,
        key: &str,
        column: &str,
        at_us: i64,
        revenue: Option<f64>,
    ) -> FlowsResult<()>;
    fn move_run(
        &self,
        run_id: i64,
        position: Option<&str>,
        armed: Option<&str>,
        wake_us: Option<i64>,
    ) -> FlowsResult<()>;
    fn release_step(&self, key: &str) -> FlowsResult<()>;
    fn retry_step(&self, key: &str, detail: &str) -> FlowsResult<i64>;
    fn send_by_key(&self, key: &str) -> FlowsResult<Option<SendRef>>;
    fn set_feed_cursor(&self, cursor: &FeedCursor) -> FlowsResult<()>;
    fn set_held_status(
        &self,
        id: i64,
        status: crate::model::HeldStatus,
        now_us: i64,
    ) -> FlowsResult<()>;
    fn set_meta(&self, key: &str, value: &str) -> FlowsResult<()>;
    fn step(&self, key: &str) -> FlowsResult<Option<StepRow>>;
    fn upsert_webhook(
        &self,
        key: &str,
        flow_id: &str,
        action_id: &str,
        run_id: i64,
        url: &str,
        now_us: i64,
    ) -> FlowsResult<()>;
    fn webhook_attempt(
        &self,
        key: &str,
        state: WebhookState,
        status: Option<u16>,
        error: Option<&str>,
        next_us: Option<i64>,
        now_us: i64,
    ) -> FlowsResult<i64>;

    /// Claims the active runs due at `now_us`, soonest first, at most `limit`: until this
    /// transaction ends, no other writer is handed them (SQLite: the transaction holds the
    /// write lock; a backend with concurrent writers locks the rows it returns, e.g.
    /// `FOR UPDATE SKIP LOCKED`). The caller moves each one before committing.
    fn claim_due(&self, now_us: i64, limit: usize) -> FlowsResult<Vec<RunRow>>;

    /// Marks a point the writes after it can be undone to, keeping those before.
    fn savepoint(&self) -> FlowsResult<()>;
    /// Keeps the writes since the last [`FlowWriter::savepoint`].
    fn release_savepoint(&self) -> FlowsResult<()>;
    /// Undoes the writes since the last [`FlowWriter::savepoint`] and lets it go.
    fn rollback_to_savepoint(&self) -> FlowsResult<()>;

    /// A merge: the runs, sends, held messages, entries and date schedules of the profile
    /// `from` move to `to` (with the id `to_id`, when known).
    fn apply_merge(&self, from: i64, to: i64, to_id: Option<&str>) -> FlowsResult<()>;
    /// Sets (or, `None`, removes) the next date trigger of the profile in the date flow.
    fn set_date_schedule(
        &self,
        flow_id: &str,
        profile_pk: i64,
        next_us: Option<i64>,
    ) -> FlowsResult<()>;
    /// Moves an existing date trigger to `next_us` (`None`: removes it); none is added.
    fn reschedule_date(
        &self,
        flow_id: &str,
        profile_pk: i64,
        next_us: Option<i64>,
    ) -> FlowsResult<()>;
    /// The address the send with this key went (or goes) to.
    fn send_email(&self, key: &str) -> FlowsResult<Option<String>>;
}
