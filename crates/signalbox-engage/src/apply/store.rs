//! What the applier asks of the storage of derived state: [`ApplyStore`], the writer's handle
//! on it, and [`ApplyTx`], one batch's transaction. Both speak the applier's domain (profile
//! rows, identifiers, events, held calls, list members, outbox rows); how that is stored is the
//! backend's business (SQLite: `db/apply.rs`).
//!
//! The applier is generic over them (`Batch<'_, T: ApplyTx>`), so a backend's calls are
//! static and inlined as before; a method is one statement or a few, run in the transaction.

use std::borrow::Cow;
use std::collections::HashMap;

use super::holds::HeldIds;
use super::profile::ProfileRow;
use super::OriginRows;
use crate::error::EngageResult;
use crate::lists::{EmailConsent, ListId, MemberStatus, OptInProcess};

/// The writer's handle on derived state: opens batch transactions and answers what the
/// applier reads outside them (on opening, after a failed batch).
pub(crate) trait ApplyStore {
    type Tx<'a>: ApplyTx
    where
        Self: 'a;

    /// Whether a batch's writes run on the applier's own thread (an embedded file), and so
    /// take only the cores its idle scheduling class leaves. `false` when a database server
    /// does them, at its own priority, beside the log's writes and the API's reads.
    const WRITES_IN_PROCESS: bool = true;

    /// Opens a write transaction (one at a time: the applier is the only writer).
    fn begin(&mut self) -> EngageResult<Self::Tx<'_>>;

    /// The checkpoint: the last log entry applied (0 when none is).
    fn applied_seq(&self) -> EngageResult<i64>;

    /// The earliest expiry of a call still held, if any is.
    fn earliest_hold_expiry(&self) -> EngageResult<Option<i64>>;

    /// The calls still held with a sequence number after `seq`, in log order, with the ids
    /// they wait for.
    fn held_after(&self, seq: i64) -> EngageResult<Vec<(i64, HeldIds)>>;

    /// Whether log entry `seq` is in the quarantine.
    fn is_quarantined(&self, seq: i64) -> EngageResult<bool>;

    /// Counts one more failed try of quarantined entry `seq`, with its error.
    fn note_failed_retry(&self, seq: i64, error: &str) -> EngageResult<()>;

    /// Makes everything committed durable in the main file (before the file is moved).
    fn checkpoint(&mut self) -> EngageResult<()>;
}

/// A profile's `data` when it is to be written, and whether the row is new.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ProfileWrite<'a> {
    /// All columns, `data` included: inserted, or replacing the stored row.
    Full { data: &'a str },
    /// The columns beside `data`, of a stored row.
    Columns,
}

/// An event row to insert.
#[derive(Debug)]
pub(crate) struct NewEvent<'a> {
    pub pk: i64,
    pub metric_pk: i64,
    pub profile_pk: i64,
    pub time_us: i64,
    pub value: Option<f64>,
    pub currency: Option<&'a str>,
    pub unique_id: &'a str,
    pub unique_hash: i64,
    pub properties: &'a str,
}

/// A line of a profile's audit trail (`n`: its position among the entry's lines).
#[derive(Debug)]
pub(crate) struct AuditLine<'a> {
    pub profile_pk: i64,
    pub seq: i64,
    pub n: i64,
    pub action: &'a str,
    pub kind: Option<&'a str>,
    pub value: Option<&'a str>,
    pub detail: Option<&'a str>,
    pub at_us: i64,
}

/// A call set aside until its ids name a profile.
#[derive(Debug)]
pub(crate) struct NewHeldCall<'a> {
    pub seq: i64,
    pub source_id: i64,
    pub kind: &'a str,
    pub received_us: i64,
    pub expires_us: i64,
    pub reason: &'a str,
    pub ids: HeldIds<&'a str>,
    pub payload: &'a str,
}

/// A held call as stored, while it is still held.
#[derive(Debug)]
pub(crate) struct HeldCall {
    pub source_id: i64,
    pub kind: String,
    pub received_us: i64,
    /// Gone once settled.
    pub payload: Option<String>,
    pub ids: HeldIds,
}

/// An outbox row (see [`crate::outbox`]).
#[derive(Debug)]
pub(crate) struct NewOutboxRow<'a> {
    pub seq: i64,
    pub n: u32,
    pub at_us: i64,
    pub profile_id: &'a str,
    pub email: Option<&'a str>,
    pub user_id: Option<&'a str>,
    pub anonymous_id: Option<&'a str>,
    pub from_segment: bool,
    pub change: &'a str,
}

/// A log entry set aside after failing to apply.
#[derive(Debug)]
pub(crate) struct QuarantineRow<'a> {
    pub seq: i64,
    pub kind: &'a str,
    pub source_id: i64,
    pub received_us: i64,
    pub error: &'a str,
    pub tries: i64,
    /// The problem that notes it.
    pub problem: &'a str,
}

/// A list membership being written.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewMember<'a> {
    pub list: &'a ListId,
    pub profile_pk: i64,
    pub confirm_optin: bool,
    pub seq: i64,
    pub status: MemberStatus,
    pub joined_us: i64,
}

/// One batch's transaction: everything the applier writes or reads while applying goes
/// through it, and is undone unless [`ApplyTx::commit`] is reached (dropped, it rolls back:
/// a failed batch returns early). `apply/store_checks.rs` holds the checks every backend
/// passes.
pub(crate) trait ApplyTx {
    /// Commits the batch (its checkpoint included).
    fn commit(self) -> EngageResult<()>;

    /// Moves the checkpoint to `seq`.
    fn set_applied_seq(&self, seq: i64) -> EngageResult<()>;

    /// Adds to named counters, draining `counters`.
    fn add_counters(&self, counters: &mut HashMap<Cow<'static, str>, i64>) -> EngageResult<()>;

    // Profiles.

    /// The profile row with this key.
    fn load_profile(&self, pk: i64) -> EngageResult<Option<ProfileRow>>;

    /// Writes a profile row back; `changed_seq` is what the change feed follows.
    fn save_profile(
        &self,
        row: &ProfileRow,
        write: ProfileWrite<'_>,
        changed_seq: i64,
    ) -> EngageResult<()>;

    fn delete_profile(&self, pk: i64) -> EngageResult<()>;

    /// The live profile a merged-away profile's key redirects to.
    fn redirect(&self, from_pk: i64) -> EngageResult<Option<i64>>;

    /// The provenance row of a profile from (integration, source).
    fn load_origin(
        &self,
        pk: i64,
        integration: &str,
        source: &str,
    ) -> EngageResult<Option<super::OriginRow>>;

    /// Writes the changed provenance rows of the profiles in `touched` (sorted, no repeats)
    /// and marks them clean.
    fn save_origins(&self, touched: &[i64], origins: &mut OriginRows) -> EngageResult<()>;

    // Identifiers.

    /// The profile an identifier names.
    fn find_identifier(&self, kind: &str, value: &str) -> EngageResult<Option<i64>>;

    /// Links an identifier that names no profile to `pk`.
    fn link_identifier(&self, kind: &str, value: &str, pk: i64) -> EngageResult<()>;

    /// Removes an identifier from `pk`; whether it was there.
    fn unlink_identifier(&self, kind: &str, value: &str, pk: i64) -> EngageResult<bool>;

    /// Moves what belongs to profile `loser` to `survivor` (events, a duplicate by metric and
    /// unique id dropped; identifiers; provenance, list memberships and consent the survivor
    /// lacks; problems; audit trail; redirects) and redirects `loser` to it as of entry
    /// `seq`. Returns how many duplicate events were dropped. The loser's row stays.
    fn merge_profiles(&self, survivor: i64, loser: i64, seq: i64) -> EngageResult<u64>;

    // Metrics and events.

    /// A metric's key by (integration, name).
    fn find_metric(&self, integration: &str, name: &str) -> EngageResult<Option<i64>>;

    /// Whether a metric has this id.
    fn metric_id_taken(&self, id: &str) -> EngageResult<bool>;

    /// Inserts a metric; its key.
    fn insert_metric(
        &self,
        id: &str,
        name: &str,
        integration: &str,
        category: &str,
        at_us: i64,
    ) -> EngageResult<i64>;

    /// Whether the profile has an event of the metric with this unique hash.
    fn event_exists(&self, profile_pk: i64, metric_pk: i64, unique_hash: i64)
        -> EngageResult<bool>;

    /// Inserts an event unless its key is taken; whether it was inserted.
    fn insert_event(&self, event: &NewEvent<'_>) -> EngageResult<bool>;

    /// The stored properties of the profile's event of the metric with this unique hash.
    fn event_properties(
        &self,
        profile_pk: i64,
        metric_pk: i64,
        unique_hash: i64,
    ) -> EngageResult<Option<String>>;

    // Audit trail, problems, API results.

    fn audit(&self, line: &AuditLine<'_>) -> EngageResult<()>;

    /// A problem of entry `seq` (`n`: its position among the entry's problems).
    fn problem(&self, seq: i64, n: i64, profile_pk: Option<i64>, message: &str)
        -> EngageResult<()>;

    /// The outcome of a synchronous API write, as JSON, for its caller.
    fn record_api_result(&self, seq: i64, result: &str) -> EngageResult<()>;

    // Held calls.

    fn hold(&self, call: &NewHeldCall<'_>) -> EngageResult<()>;

    /// The call `seq`, if it is still held.
    fn held_call(&self, seq: i64) -> EngageResult<Option<HeldCall>>;

    /// Marks held call `seq` released by entry `settled_by` (its payload goes).
    fn release_held(&self, seq: i64, settled_by: i64) -> EngageResult<()>;

    /// The calls still held that wait for identifier (`kind`, `value`), in log order: a user
    /// id waits as an external id, an anonymous id as one, an alias's `previousId` as either.
    fn held_waiting_for(&self, kind: &str, value: &str) -> EngageResult<Vec<i64>>;

    /// The held calls whose window ended at or before `now_us`.
    fn due_holds(&self, now_us: i64) -> EngageResult<Vec<(i64, HeldIds)>>;

    /// Marks them expired, and counts them (`held.expired`); how many.
    fn expire_holds(&self, now_us: i64) -> EngageResult<u64>;

    /// As [`ApplyStore::earliest_hold_expiry`], inside the transaction.
    fn earliest_hold_expiry(&self) -> EngageResult<Option<i64>>;

    // Lists and consent.

    /// A list's name and opt-in process, if it exists.
    fn list_info(&self, id: &ListId) -> EngageResult<Option<(String, OptInProcess)>>;

    fn list_id_taken(&self, id: &str) -> EngageResult<bool>;

    fn insert_list(
        &self,
        id: &str,
        name: &str,
        opt_in: OptInProcess,
        at_us: i64,
    ) -> EngageResult<()>;

    /// Changes what is given of a list.
    fn update_list(
        &self,
        id: &ListId,
        name: Option<&str>,
        opt_in: Option<OptInProcess>,
        at_us: i64,
    ) -> EngageResult<()>;

    fn delete_list(&self, id: &ListId) -> EngageResult<()>;

    /// The profiles on a list, pending ones included when `pending`, by key.
    fn list_profiles(&self, id: &ListId, pending: bool) -> EngageResult<Vec<i64>>;

    fn member_status(&self, list: &ListId, pk: i64) -> EngageResult<Option<MemberStatus>>;

    fn insert_member(&self, member: &NewMember<'_>) -> EngageResult<()>;

    /// A pending member becomes a member.
    fn confirm_member(&self, list: &ListId, pk: i64, joined_us: i64, seq: i64) -> EngageResult<()>;

    /// Takes a profile off a list; whether it was on it.
    fn remove_member(&self, list: &ListId, pk: i64) -> EngageResult<bool>;

    /// A line of the list's change feed.
    fn list_change(
        &self,
        seq: i64,
        list: &ListId,
        pk: i64,
        change: &str,
        at_us: i64,
    ) -> EngageResult<()>;

    /// A profile's email consent (never subscribed when none is stored).
    fn consent(&self, pk: i64) -> EngageResult<EmailConsent>;

    fn store_consent(&self, pk: i64, consent: &EmailConsent, status_us: i64) -> EngageResult<()>;

    // Outbox and quarantine.

    /// The next free position among the outbox rows of entry `seq`.
    fn next_outbox_n(&self, seq: i64) -> EngageResult<u32>;

    fn insert_outbox(&self, row: &NewOutboxRow<'_>) -> EngageResult<()>;

    /// Sets a log entry aside with the problem that notes it, and counts it.
    fn quarantine(&self, row: &QuarantineRow<'_>) -> EngageResult<()>;

    /// Takes entry `seq` out of the quarantine, with its problems.
    fn unquarantine(&self, seq: i64) -> EngageResult<()>;
}
