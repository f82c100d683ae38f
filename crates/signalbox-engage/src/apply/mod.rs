//! The applier: log entries in, derived state out, one transaction per batch.
//!
//! Each batch's changes and the checkpoint (`meta.applied_seq`) commit together, so a crash
//! either keeps a whole batch or none of it, and the pipeline resumes after the last committed
//! entry: at-least-once delivery, exactly-once effect. Everything an entry does is a function
//! of the log (its sequence number, times, payload) and of state derived from earlier entries;
//! nothing reads the wall clock, so a rebuild yields the same state.
//!
//! # Layout
//! - `profile.rs`: the profile row and how a change patches it.
//! - `identity.rs`: resolving a call's identifiers to a profile, linking, merging.
//! - `holds.rs`: calls held until their ids are linked to a profile, released or expired;
//!   `held_index.rs`: which of them wait for which identifier.
//! - `api.rs`: the Klaviyo-compatible API's writes.
//! - `lists.rs`: lists and their members; `consent.rs`: email consent and suppressions.
//! - `outbox.rs`: the outbox rows of changes made in Signalbox, and the `from_segment` mark
//!   that changes coming from Segment leave instead.
//! - `quarantine.rs`: a batch that fails is narrowed down to the entry at fault, which is
//!   set aside after three tries on its own, so that it cannot stall the rest.

mod api;
pub(crate) mod builtin;
mod consent;
pub(crate) mod held_index;
pub(crate) mod held_lookup;
pub(crate) mod holds;
mod identity;
mod lists;
mod outbox;
pub(crate) mod profile;
mod quarantine;
pub(crate) mod store;
#[cfg(test)]
pub(crate) mod store_checks;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasherDefault;
use std::path::Path;

use jiff::SignedDuration;
use serde_json::Value;
use signalbox_core::{CallKind, SourceId, StoredCall};

use crate::error::{EngageError, EngageResult};
use crate::ids;
use crate::limits::PropertyLimit;
use crate::mapping::{self, Mapped, MappedEvent, Skip};
use crate::model::{Integration, Origin};
use crate::settings::DestinationSettings;
use held_index::HeldIndex;
use held_lookup::HeldLookup;
use profile::ProfileRow;
use store::{ApplyStore, ApplyTx, AuditLine, NewEvent};

pub(crate) use api::{ApiMergeOp, ApiProfileOp, ApiResult};
pub(crate) use consent::ApiConsentOp;
pub(crate) use lists::{ApiListOp, OpOutcome, OpResult};

/// What the applier knows of a source.
#[derive(Debug, Clone)]
pub(crate) struct SourceInfo {
    pub name: String,
    pub settings: DestinationSettings,
}

/// Sources by id, as of the last refresh.
pub(crate) type Sources = HashMap<SourceId, SourceInfo>;

/// What decides whether a call may create a profile or must wait.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rules {
    pub enforce_email: bool,
    pub send_anonymous: bool,
    /// Whether a call that cannot be attached yet is held (Segment calls) or dropped.
    pub may_hold: bool,
}

impl Rules {
    /// The API: any identifier names (and may create) a profile.
    const API: Rules = Rules {
        enforce_email: false,
        send_anonymous: true,
        may_hold: false,
    };

    fn segment(settings: &DestinationSettings) -> Rules {
        Rules {
            enforce_email: settings.enforce_email,
            send_anonymous: settings.send_anonymous,
            may_hold: true,
        }
    }
}

/// What one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchReport {
    pub entries: u64,
    pub events: u64,
    pub applied_seq: i64,
}

/// Applies log entries to derived state (`store`). Owned by one thread: the only writer.
pub(crate) struct Applier<S> {
    store: S,
    hold_window_us: i64,
    caches: Caches,
    /// The earliest expiry of a held call, if any is held.
    next_expiry: Option<i64>,
    /// Which held calls wait for which identifier.
    held: HeldLookup,
    applied_seq: i64,
    /// Planned failures (tests of quarantine).
    fault: Option<EntryFault>,
}

impl<S: ApplyStore> Applier<S> {
    /// The applier of `store`, whose held-call index is beside `index_beside` (a SQLite
    /// file), or, when `None`, answered by the store's own table
    /// ([`ApplyTx::held_waiting_for`]).
    pub(crate) fn open(
        store: S,
        index_beside: Option<&Path>,
        hold_window: SignedDuration,
    ) -> EngageResult<Applier<S>> {
        let held = match index_beside {
            Some(path) => HeldLookup::Index(HeldIndex::open(path, &store)?),
            None => HeldLookup::Table(HashMap::new()),
        };
        let mut applier = Applier {
            store,
            hold_window_us: hold_window.as_micros().clamp(0, i64::MAX as i128) as i64,
            caches: Caches::default(),
            next_expiry: None,
            held,
            applied_seq: 0,
            fault: None,
        };
        applier.reload()?;
        Ok(applier)
    }

    /// Re-reads what the applier keeps in memory (after opening or a failed batch).
    fn reload(&mut self) -> EngageResult<()> {
        self.caches = Caches::default();
        self.applied_seq = self.store.applied_seq()?;
        self.next_expiry = self.store.earliest_hold_expiry()?;
        self.held.reload(&self.store)?;
        Ok(())
    }

    pub(crate) fn applied_seq(&self) -> i64 {
        self.applied_seq
    }

    /// Makes the entries `fault` names fail to apply (tests of quarantine).
    pub(crate) fn set_fault(&mut self, fault: Option<EntryFault>) {
        self.fault = fault;
    }

    /// Applies `entries` (in log order, all after the checkpoint) in one transaction, or, when
    /// that fails, narrowed down to the entry at fault (see `quarantine.rs`).
    ///
    /// `prepared` holds, by position, what [`prepare`] made of the entries ahead of time (on
    /// another thread); an entry without it is mapped here.
    pub(crate) fn apply_batch(
        &mut self,
        entries: &[StoredCall],
        prepared: &mut [Option<Prepared>],
        sources: &Sources,
    ) -> EngageResult<BatchReport> {
        self.apply_isolating(entries, prepared, sources)
    }

    /// One transaction over `entries`. On failure the transaction rolled back and memory is
    /// reloaded; the failure names the entry at fault when it was one entry's doing.
    fn try_apply(
        &mut self,
        entries: &[StoredCall],
        prepared: &mut [Option<Prepared>],
        sources: &Sources,
        mode: Mode,
    ) -> Result<BatchReport, BatchFailure> {
        let result = self.try_apply_batch(entries, prepared, sources, mode);
        if result.is_err() {
            // The transaction rolled back: forget what memory learnt from it.
            if let Err(error) = self.reload() {
                return Err(BatchFailure { error, entry: None });
            }
        }
        result
    }

    fn try_apply_batch(
        &mut self,
        entries: &[StoredCall],
        prepared: &mut [Option<Prepared>],
        sources: &Sources,
        mode: Mode,
    ) -> Result<BatchReport, BatchFailure> {
        let tx = self.store.begin().map_err(BatchFailure::batch)?;
        let mut batch = Batch {
            tx: &tx,
            caches: &mut self.caches,
            next_expiry: &mut self.next_expiry,
            held: &mut self.held,
            hold_window_us: self.hold_window_us,
            sources,
            deleted: HashSet::new(),
            counters: HashMap::new(),
            release: VecDeque::new(),
            entry: EntryState::default(),
            report: BatchReport::default(),
            outbox_at_checkpoint: (mode == Mode::Retry).then_some(self.applied_seq),
        };
        if mode == Mode::Retry {
            // First: the note of its quarantine goes, its own problems may take its place.
            for entry in entries {
                batch.count("quarantine.retried", 1);
                tx.unquarantine(entry.seq).map_err(BatchFailure::batch)?;
            }
        }
        let mut last = self.applied_seq;
        for (idx, entry) in entries.iter().enumerate() {
            if mode == Mode::Forward && entry.seq <= last {
                continue;
            }
            let failed = |error| BatchFailure {
                error,
                entry: Some(idx),
            };
            if let Some(fault) = &self.fault {
                if let Some(reason) = (fault.0)(entry) {
                    return Err(failed(EngageError::Internal(reason)));
                }
            }
            let ready = prepared.get_mut(idx).and_then(Option::take);
            batch.apply_entry(entry, ready).map_err(failed)?;
            if mode == Mode::Forward {
                last = entry.seq;
            }
        }
        batch.flush().map_err(BatchFailure::batch)?;
        let mut report = batch.report;
        drop(batch);
        tx.set_applied_seq(last).map_err(BatchFailure::batch)?;
        tx.commit().map_err(BatchFailure::batch)?;
        self.held.commit(last).map_err(BatchFailure::batch)?;
        self.applied_seq = last;
        report.applied_seq = last;
        Ok(report)
    }

    /// Moves everything in the WAL into the main file (before the file is moved).
    pub(crate) fn checkpoint(&mut self) -> EngageResult<()> {
        self.store.checkpoint()
    }

    /// Marks held calls whose window ended by `now_us` as expired.
    pub(crate) fn expire_holds(&mut self, now_us: i64) -> EngageResult<u64> {
        if self.next_expiry.is_none_or(|t| t > now_us) {
            return Ok(0);
        }
        let expired = self.store.begin().and_then(|tx| {
            let n = holds::expire(&tx, &mut self.held, now_us)?;
            let next_expiry = tx.earliest_hold_expiry()?;
            tx.commit()?;
            Ok((n, next_expiry))
        });
        let expired = expired.and_then(|done| self.held.commit(self.applied_seq).map(|()| done));
        match expired {
            Ok((n, next_expiry)) => {
                self.next_expiry = next_expiry;
                Ok(n)
            }
            Err(err) => {
                self.reload()?;
                Err(err)
            }
        }
    }
}

/// How a transaction treats its entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Entries after the checkpoint, which moves to the last of them.
    Forward,
    /// Quarantined entries, behind the checkpoint, which stays: they leave the quarantine.
    Retry,
}

/// A transaction that failed, and the entry at fault when it was one entry's doing (by
/// position in the batch) rather than the batch's (its flush or commit).
#[derive(Debug)]
struct BatchFailure {
    error: EngageError,
    entry: Option<usize>,
}

impl BatchFailure {
    fn batch(error: impl Into<EngageError>) -> BatchFailure {
        BatchFailure {
            error: error.into(),
            entry: None,
        }
    }
}

/// A planned failure, for tests of quarantine: entries for which the function answers
/// `Some(reason)` fail to apply with that reason. Never set in production.
#[doc(hidden)]
#[derive(Clone)]
pub struct EntryFault(pub std::sync::Arc<FaultFn>);

/// Answers why an entry fails, or `None`.
#[doc(hidden)]
pub type FaultFn = dyn Fn(&StoredCall) -> Option<String> + Send + Sync;

impl std::fmt::Debug for EntryFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EntryFault")
    }
}

/// What a Segment call maps to, worked out before its batch is applied.
pub(crate) type Prepared = Result<PreparedCall, Skip>;

/// A mapped call and its events' stored form.
pub(crate) struct PreparedCall {
    mapped: Mapped,
    /// By event position; `None` once taken (or past the per-entry limit).
    bodies: Vec<Option<EventBody>>,
}

impl From<Mapped> for PreparedCall {
    fn from(mapped: Mapped) -> PreparedCall {
        PreparedCall {
            mapped,
            bodies: Vec::new(),
        }
    }
}

/// The columns of an event row that depend only on its log entry: its unique id (the
/// event's own id when the call gave none), the dedupe hash, and the properties as stored.
#[derive(Debug)]
pub(crate) struct EventBody {
    unique_id: String,
    hash: i64,
    properties: String,
}

impl EventBody {
    fn of(seq: i64, idx: i64, event: &MappedEvent) -> EventBody {
        EventBody::with(seq, idx, event, event.properties.clone())
    }

    /// As [`EventBody::of`], taking the event's properties instead of copying them.
    fn taking(seq: i64, idx: i64, event: &mut MappedEvent) -> EventBody {
        let properties = std::mem::take(&mut event.properties);
        EventBody::with(seq, idx, event, properties)
    }

    fn with(
        seq: i64,
        idx: i64,
        event: &MappedEvent,
        mut properties: serde_json::Map<String, Value>,
    ) -> EventBody {
        let pk = ids::event_key(seq, idx);
        let unique_id = match &event.unique_id {
            Some(id) => id.clone(),
            None => ids::event_id(event.time.as_microsecond(), pk),
        };
        properties
            .entry("$event_id".to_owned())
            .or_insert_with(|| Value::String(unique_id.clone()));
        EventBody {
            hash: ids::unique_hash(&unique_id),
            unique_id,
            properties: serde_json::to_string(&properties).expect("JSON values serialise"),
        }
    }
}

fn applied_counter(kind: CallKind) -> &'static str {
    match kind {
        CallKind::Track => "applied.track",
        CallKind::Identify => "applied.identify",
        CallKind::Page => "applied.page",
        CallKind::Screen => "applied.screen",
        CallKind::Group => "applied.group",
        CallKind::Alias => "applied.alias",
        _ => "applied.other",
    }
}

/// Parses and maps a Segment call with its source's settings: the part of applying that needs
/// no state, done ahead of time by the pipeline's reader. `None` for API entries.
pub(crate) fn prepare(entry: &StoredCall, sources: &Sources) -> Option<Prepared> {
    if !entry.kind.is_segment() {
        return None;
    }
    let default_settings;
    let settings = match sources.get(&entry.source_id) {
        Some(info) => &info.settings,
        None => {
            default_settings = DestinationSettings::default();
            &default_settings
        }
    };
    Some(map_call(entry, entry.kind, settings).map(|mut mapped| {
        let bodies = mapped
            .events
            .iter_mut()
            .enumerate()
            .map(|(idx, event)| {
                let idx = idx as i64;
                // Stored now: the parsed properties are freed on this thread.
                (idx < ids::EVENTS_PER_ENTRY).then(|| EventBody::taking(entry.seq, idx, event))
            })
            .collect();
        PreparedCall { mapped, bodies }
    }))
}

fn map_call(
    entry: &StoredCall,
    kind: CallKind,
    settings: &DestinationSettings,
) -> Result<Mapped, Skip> {
    match serde_json::from_str(&entry.payload) {
        Ok(Value::Object(message)) => {
            mapping::map_segment(kind, message, settings, entry.received_at)
        }
        _ => Err(Skip::Unreadable),
    }
}

/// Per-entry counters that make row keys.
#[derive(Debug, Default)]
struct EntryState {
    seq: i64,
    received_us: i64,
    profiles_created: i64,
    audit_n: i64,
    problems_n: i64,
    /// The stored form of the entry's events, when prepared ahead (see [`prepare`]).
    bodies: Vec<Option<EventBody>>,
    /// Events made from this entry so far (their row keys).
    events_n: i64,
    /// Where the entry came from: Segment calls, and API writes forwarded from Segment,
    /// make no outbox rows.
    origin: crate::outbox::WriteOrigin,
    /// Outbox rows made from this entry so far (their positions).
    outbox_n: u32,
}

/// Provenance of one profile from one (integration, source).
#[derive(Debug, Clone)]
pub(crate) struct OriginRow {
    pub external_id: Option<String>,
    pub anonymous_id: Option<String>,
    pub first_seq: i64,
    pub last_seq: i64,
    /// Changed since loaded or saved.
    pub dirty: bool,
}

/// Provenance rows by profile: (integration, source, row), usually one.
pub(crate) type OriginRows = KeyMap<Vec<(String, String, OriginRow)>>;

/// Profile rows kept between batches at most (the working set of active profiles).
const PROFILE_CACHE: usize = 200_000;
/// Identifiers kept between batches at most, per kind.
const ID_CACHE: usize = 500_000;

/// A fast hasher for row keys (integers the applier makes, never chosen by clients).
#[derive(Default)]
pub(crate) struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(*b as u64);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_i64(&mut self, n: i64) {
        self.write_u64(n as u64);
    }
}

type KeyMap<V> = HashMap<i64, V, BuildHasherDefault<KeyHasher>>;

/// What the applier keeps in memory between batches. Everything here mirrors committed
/// rows (or rows of the open transaction); after a failed batch it is dropped.
#[derive(Default)]
pub(crate) struct Caches {
    /// Metric keys by (integration, name).
    metrics: HashMap<(String, String), i64>,
    /// Profile rows; the changed ones are written back when a batch ends.
    profiles: KeyMap<ProfileRow>,
    /// Profiles used by the current batch (with repeats): the ones to write back.
    touched: Vec<i64>,
    /// Provenance rows by profile.
    origins: OriginRows,
    /// Profiles whose provenance changed in the current batch (with repeats).
    touched_origins: Vec<i64>,
    /// The profile each identifier names (`None`: none), per kind.
    ids: [HashMap<String, Option<i64>>; 4],
}

/// One batch's working set inside its transaction.
pub(crate) struct Batch<'a, T> {
    tx: &'a T,
    caches: &'a mut Caches,
    next_expiry: &'a mut Option<i64>,
    held: &'a mut HeldLookup,
    hold_window_us: i64,
    sources: &'a Sources,
    /// Profiles merged away in this batch.
    deleted: HashSet<i64>,
    counters: HashMap<Cow<'static, str>, i64>,
    /// Identifiers newly linked: held calls waiting for them are released.
    release: VecDeque<(&'static str, String)>,
    entry: EntryState,
    report: BatchReport,
    /// A quarantined entry applied again is behind the checkpoint, and readers of the outbox
    /// may be past its position: its rows go after the checkpoint's rows instead.
    outbox_at_checkpoint: Option<i64>,
}

impl<T: ApplyTx> Batch<'_, T> {
    fn count(&mut self, name: impl Into<Cow<'static, str>>, n: i64) {
        *self.counters.entry(name.into()).or_default() += n;
    }

    fn source_info(&self, source: SourceId) -> SourceInfo {
        self.sources
            .get(&source)
            .cloned()
            .unwrap_or_else(|| SourceInfo {
                name: format!("source-{}", source.0),
                settings: DestinationSettings::default(),
            })
    }

    fn apply_entry(&mut self, entry: &StoredCall, ready: Option<Prepared>) -> EngageResult<()> {
        let received_us = entry.received_at.as_microsecond();
        if self.next_expiry.is_some_and(|t| t <= received_us) {
            holds::expire(self.tx, self.held, received_us)?;
            *self.next_expiry = self.tx.earliest_hold_expiry()?;
        }
        self.begin_entry(entry.seq, received_us);
        self.report.entries += 1;
        match entry.kind {
            CallKind::ApiEvent => self.apply_api_event(entry)?,
            CallKind::ApiProfile => self.apply_api_profile(entry)?,
            CallKind::ApiMerge => self.apply_api_merge(entry)?,
            CallKind::ApiList => self.apply_api_list(entry)?,
            CallKind::ApiConsent => self.apply_api_consent(entry)?,
            CallKind::BuiltinEvent => self.apply_builtin_event(entry)?,
            kind => {
                self.apply_segment(entry, kind, true, ready)?;
            }
        }
        self.release_held()
    }

    fn begin_entry(&mut self, seq: i64, received_us: i64) {
        self.entry = EntryState {
            seq,
            received_us,
            ..EntryState::default()
        };
    }

    /// A Segment call. `may_hold` is false when a held call is applied on release.
    /// Returns whether the call was applied (not held, not skipped).
    fn apply_segment(
        &mut self,
        entry: &StoredCall,
        kind: CallKind,
        may_hold: bool,
        ready: Option<Prepared>,
    ) -> EngageResult<bool> {
        self.entry.origin = crate::outbox::WriteOrigin::Segment;
        let info = self.source_info(entry.source_id);
        let ready = ready.unwrap_or_else(|| map_call(entry, kind, &info.settings).map(Into::into));
        let (mapped, bodies) = match ready {
            Ok(PreparedCall { mapped, bodies }) => (mapped, bodies),
            Err(skip) => {
                self.count(format!("skipped.{}", skip_name(&skip)), 1);
                return Ok(false);
            }
        };
        let origin = Origin {
            integration: Origin::SEGMENT.into(),
            source: Some(info.name.clone()),
        };
        let mut rules = Rules::segment(&info.settings);
        rules.may_hold = may_hold;
        let ids = identity::CallIds::of(&mapped);
        let Some(pk) = self.resolve_or_create(&ids, &origin, rules)? else {
            if may_hold {
                let reason = identity::missing_reason(&ids, rules);
                self.hold(entry, &reason, &ids)?;
            }
            return Ok(false);
        };
        self.count(applied_counter(kind), 1);
        self.entry.bodies = bodies;
        self.apply_mapped(pk, &mapped, &ids, &origin, Integration::segment())?;
        // The profile row is loaded and cached by now: this dirties it only the first time
        // (or when the userId changes).
        self.mark_from_segment(pk, ids.external_id.as_deref())?;
        Ok(true)
    }

    /// Everything after resolution: links, profile fields, provenance, list, events. Returns
    /// whether identifiers or fields of the profile changed, and whether its custom
    /// properties were applied (not refused by a limit).
    fn apply_mapped(
        &mut self,
        pk: i64,
        mapped: &Mapped,
        ids: &identity::CallIds,
        origin: &Origin,
        integration: Integration,
    ) -> EngageResult<(bool, bool)> {
        let at_us = self.entry.received_us;
        let linked = self.link_ids(pk, ids)?;
        let patched = self.profile(pk)?.patch(&mapped.profile, origin, at_us);
        self.touch_origin(pk, origin, ids, patched.changed || linked)?;
        for problem in &mapped.problems {
            self.problem(Some(pk), problem)?;
        }
        if let Some(limit) = &patched.refused {
            self.properties_refused(pk, limit)?;
        }
        for (idx, event) in mapped.events.iter().enumerate() {
            self.insert_event(pk, idx as i64, event, &integration)?;
        }
        self.entry.events_n = self.entry.events_n.max(mapped.events.len() as i64);
        if let Some(list) = &mapped.list {
            self.subscribe_from_identify(pk, list, origin.source.as_deref())?;
        }
        Ok((patched.changed || linked, patched.refused.is_none()))
    }

    /// The profile with this key, loaded into the batch's working set.
    fn profile(&mut self, pk: i64) -> EngageResult<&mut ProfileRow> {
        self.caches.touched.push(pk);
        if !self.caches.profiles.contains_key(&pk) {
            let row = self
                .tx
                .load_profile(pk)?
                .ok_or_else(|| EngageError::Internal(format!("profile row {pk} is missing")))?;
            self.caches.profiles.insert(pk, row);
        }
        Ok(self.caches.profiles.get_mut(&pk).expect("just loaded"))
    }

    /// A new profile, keyed by the current entry.
    fn create_profile(&mut self, origin: &Origin) -> EngageResult<i64> {
        let n = self.entry.profiles_created;
        if n >= ids::PROFILES_PER_ENTRY {
            return Err(EngageError::Internal(format!(
                "log entry {} would create more than {} profiles",
                self.entry.seq,
                ids::PROFILES_PER_ENTRY
            )));
        }
        self.entry.profiles_created += 1;
        let pk = ids::profile_key(self.entry.seq, n);
        let id = ids::ulid(self.entry.received_us / 1000, pk);
        self.caches
            .profiles
            .insert(pk, ProfileRow::new(pk, id, self.entry.received_us, origin));
        self.caches.touched.push(pk);
        self.count("profiles.created", 1);
        self.audit(pk, "created", None, None, None)?;
        Ok(pk)
    }

    /// Records that `origin` touched the profile with these ids; `changed` when the call
    /// changed the profile (then `last_seq` moves).
    fn touch_origin(
        &mut self,
        pk: i64,
        origin: &Origin,
        ids: &identity::CallIds,
        changed: bool,
    ) -> EngageResult<()> {
        let source = origin.source.as_deref().unwrap_or_default();
        let cached = self.caches.origins.get(&pk).and_then(|rows| {
            rows.iter()
                .position(|(i, s, _)| *i == origin.integration && s == source)
        });
        let idx = match cached {
            Some(idx) => idx,
            None => {
                let loaded = self.tx.load_origin(pk, &origin.integration, source)?;
                let row = loaded.unwrap_or(OriginRow {
                    external_id: None,
                    anonymous_id: None,
                    first_seq: self.entry.seq,
                    last_seq: self.entry.seq,
                    dirty: true,
                });
                let rows = self.caches.origins.entry(pk).or_default();
                rows.push((origin.integration.clone(), source.to_owned(), row));
                rows.len() - 1
            }
        };
        self.caches.touched_origins.push(pk);
        let row = &mut self.caches.origins.get_mut(&pk).expect("just loaded")[idx].2;
        if ids.external_id.is_some() && row.external_id != ids.external_id {
            row.external_id.clone_from(&ids.external_id);
            row.dirty = true;
        }
        if ids.anonymous_id.is_some() && row.anonymous_id != ids.anonymous_id {
            row.anonymous_id.clone_from(&ids.anonymous_id);
            row.dirty = true;
        }
        if changed && row.last_seq < self.entry.seq {
            row.last_seq = self.entry.seq;
            row.dirty = true;
        }
        Ok(())
    }

    fn metric(&mut self, integration: &Integration, name: &str) -> EngageResult<i64> {
        let key = (integration.name.clone(), name.to_owned());
        if let Some(pk) = self.caches.metrics.get(&key) {
            return Ok(*pk);
        }
        let pk = match self.tx.find_metric(&key.0, &key.1)? {
            Some(pk) => pk,
            None => {
                let mut attempt = 0;
                let id = loop {
                    let id = ids::metric_id(&integration.name, name, attempt);
                    if !self.tx.metric_id_taken(&id.0)? {
                        break id;
                    }
                    attempt += 1;
                };
                let at = self.entry.received_us;
                let pk = self.tx.insert_metric(
                    &id.0,
                    name,
                    &integration.name,
                    &integration.category,
                    at,
                )?;
                self.count("metrics.created", 1);
                pk
            }
        };
        self.caches.metrics.insert(key, pk);
        Ok(pk)
    }

    /// Stores an event; whether it was new (not a duplicate, not past the entry's limit).
    fn insert_event(
        &mut self,
        profile_pk: i64,
        idx: i64,
        event: &MappedEvent,
        integration: &Integration,
    ) -> EngageResult<bool> {
        if idx >= ids::EVENTS_PER_ENTRY {
            self.problem(
                Some(profile_pk),
                &format!(
                    "events past the first {} of one call are dropped",
                    ids::EVENTS_PER_ENTRY
                ),
            )?;
            return Ok(false);
        }
        let metric_pk = self.metric(integration, &event.metric_name)?;
        let pk = ids::event_key(self.entry.seq, idx);
        let time_us = event.time.as_microsecond();
        let body = match self
            .entry
            .bodies
            .get_mut(idx as usize)
            .and_then(Option::take)
        {
            Some(body) => body,
            None => EventBody::of(self.entry.seq, idx, event),
        };
        let EventBody {
            unique_id,
            hash,
            properties,
        } = body;
        let inserted = !self.tx.event_exists(profile_pk, metric_pk, hash)?
            && self.tx.insert_event(&NewEvent {
                pk,
                metric_pk,
                profile_pk,
                time_us,
                value: event.value,
                currency: event.value_currency.as_deref(),
                unique_id: &unique_id,
                unique_hash: hash,
                properties: &properties,
            })?;
        if !inserted {
            self.count("events.duplicate", 1);
            return Ok(false);
        }
        self.report.events += 1;
        self.count("events.created", 1);
        Ok(true)
    }

    fn audit(
        &mut self,
        pk: i64,
        action: &str,
        kind: Option<&str>,
        value: Option<&str>,
        detail: Option<&str>,
    ) -> EngageResult<()> {
        let n = self.entry.audit_n;
        self.entry.audit_n += 1;
        self.tx.audit(&AuditLine {
            profile_pk: pk,
            seq: self.entry.seq,
            n,
            action,
            kind,
            value,
            detail,
            at_us: self.entry.received_us,
        })
    }

    /// Records that a call's property changes were not applied because of a limit.
    fn properties_refused(&mut self, pk: i64, limit: &PropertyLimit) -> EngageResult<()> {
        self.count("refused.properties", 1);
        self.problem(
            Some(pk),
            &format!("property changes not applied: {}", limit.describe()),
        )
    }

    fn problem(&mut self, pk: Option<i64>, message: &str) -> EngageResult<()> {
        let n = self.entry.problems_n;
        self.entry.problems_n += 1;
        self.count("problems", 1);
        self.tx.problem(self.entry.seq, n, pk, message)
    }

    /// Writes the working set back: merged-away profiles first (their emails move), then
    /// changed profiles, provenance and counters.
    fn flush(&mut self) -> EngageResult<()> {
        for pk in &self.deleted {
            self.tx.delete_profile(*pk)?;
        }
        self.deleted.clear();
        let mut touched = std::mem::take(&mut self.caches.touched);
        touched.sort_unstable();
        touched.dedup();
        for pk in &touched {
            if let Some(row) = self.caches.profiles.get_mut(pk) {
                row.save(self.tx, self.entry.seq)?;
            }
        }
        touched.clear();
        self.caches.touched = touched;
        if self.caches.profiles.len() > PROFILE_CACHE {
            self.caches.profiles.clear();
        }
        self.flush_origins()?;
        if self.caches.origins.len() > PROFILE_CACHE {
            self.caches.origins.clear();
        }
        for ids in self.caches.ids.iter_mut() {
            if ids.len() > ID_CACHE {
                ids.clear();
            }
        }
        self.tx.add_counters(&mut self.counters)
    }

    fn flush_origins(&mut self) -> EngageResult<()> {
        let mut touched = std::mem::take(&mut self.caches.touched_origins);
        touched.sort_unstable();
        touched.dedup();
        self.tx.save_origins(&touched, &mut self.caches.origins)?;
        touched.clear();
        self.caches.touched_origins = touched;
        Ok(())
    }
}

fn skip_name(skip: &Skip) -> String {
    match skip {
        Skip::Integrations => "integrations".into(),
        Skip::Disabled => "disabled".into(),
        Skip::Kind(kind) => kind.as_str().into(),
        Skip::Unreadable => "unreadable".into(),
    }
}
