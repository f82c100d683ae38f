//! Segment conditions over derived state: [`EngageFacts`] implements seglang's
//! [`ProfileFacts`] for one profile, and set-based loaders make a backfill over every profile
//! a handful of queries instead of several per profile.
//!
//! A profile's non-metric facts (fields, custom properties, lists, email consent) are read
//! into a [`ProfileRecord`], one at a time ([`EngageReader::profile_record`]) or a key range at
//! a time ([`EngageReader::profile_records`]). Metric facts come from a [`MetricSource`]: per-profile
//! queries ([`MetricSource::Live`], for incremental updates) or a [`MetricBulk`] that reads
//! each (metric, event filters) once for every profile and answers any window from memory.
//!
//! Membership of segments is not engage's to know: the caller passes a [`SegmentLookup`].
//!
//! Every read goes through an [`EngageReader`], so the facts mean the same whatever store
//! engage runs on (the SQLite reads are `db/facts.rs`).
//!
//! Segments (the audience engine) and flow filters and splits read the same facts: the
//! audience worker builds an [`EngageFacts`] over its own reader, flows load an
//! [`OwnedFacts`] through a [`FactsReader`], which evaluates through [`EngageFacts`] too, so a
//! condition means the same thing in both places.
//!
//! Lists: a profile is in a list when `list_members` has a row with status `member`; its join
//! time is `joined_us` (or, for rows written before it existed, unknown). Email consent: a row
//! of `email_consent`, or never subscribed.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use jiff::Timestamp;
use serde_json::{Map, Value};
use signalbox_seglang::ast::{BuiltIn, LocationField};
use signalbox_seglang::{Condition, Definition};
use signalbox_seglang::{ConsentView, EventFilter, ProfileFacts, PropertyPath, TimeWindow};

use crate::engine::Engage;
use crate::error::EngageResult;
use crate::model::ProfileKey;
use crate::reader::EngageReader;

fn ts(us: i64) -> Timestamp {
    Timestamp::from_microsecond(us).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn ts_value(us: i64) -> Value {
    Value::String(ts(us).to_string())
}

/// Everything about one profile a condition can read, except its events.
#[derive(Debug, Clone)]
pub struct ProfileRecord {
    pub pk: ProfileKey,
    pub id: String,
    /// Built-in fields kept in the profile's columns (`email`, `created` …), unset ones absent.
    columns: Map<String, Value>,
    /// The profile's `data` (JSON), parsed on the first question about it: most definitions
    /// ask none (a backfill of a segment on events spent a fifth of its time parsing it).
    data: String,
    parsed: OnceLock<Parsed>,
    /// Lists the profile is a member of, with the join time (0: unknown).
    pub(crate) lists: HashMap<String, i64>,
    pub(crate) consent: ConsentView,
}

/// What a profile's `data` holds for conditions.
#[derive(Debug, Clone, PartialEq, Default)]
struct Parsed {
    /// Built-in fields kept in `data` (`first_name` …), unset ones absent.
    builtins: Map<String, Value>,
    location: Map<String, Value>,
    properties: Map<String, Value>,
}

/// Built-in fields a profile keeps in its `data`.
const DATA_BUILTINS: [&str; 6] = [
    "first_name",
    "last_name",
    "organization",
    "title",
    "image",
    "locale",
];

impl Parsed {
    fn of(data: &str) -> Parsed {
        let mut data: Map<String, Value> = serde_json::from_str(data).unwrap_or_default();
        let mut builtins = Map::new();
        for field in DATA_BUILTINS {
            if let Some(value) = data.remove(field).filter(|v| !v.is_null()) {
                builtins.insert(field.to_owned(), value);
            }
        }
        let location = match data.remove("location") {
            Some(Value::Object(map)) => map.into_iter().filter(|(_, v)| !v.is_null()).collect(),
            _ => Map::new(),
        };
        let properties = match data.remove("properties") {
            Some(Value::Object(map)) => map,
            _ => Map::new(),
        };
        Parsed {
            builtins,
            location,
            properties,
        }
    }
}

/// Records are equal when they say the same, however their `data` is spelt.
impl PartialEq for ProfileRecord {
    fn eq(&self, other: &ProfileRecord) -> bool {
        self.pk == other.pk
            && self.id == other.id
            && self.columns == other.columns
            && self.lists == other.lists
            && self.consent == other.consent
            && self.parsed() == other.parsed()
    }
}

/// A profile's columns as the facts read them: pk, id, email, phone number, external id,
/// created and updated times, last event time, `data`.
pub(crate) type RawProfile = (
    i64,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
    i64,
    Option<i64>,
    String,
);

impl ProfileRecord {
    pub(crate) fn from_raw(raw: RawProfile) -> ProfileRecord {
        let (pk, id, email, phone, external_id, created_us, updated_us, last_event, data) = raw;
        let mut columns = Map::new();
        let mut put = |name: &str, value: Option<Value>| {
            if let Some(value) = value.filter(|v| !v.is_null()) {
                columns.insert(name.to_owned(), value);
            }
        };
        put("email", email.map(Value::String));
        put("phone_number", phone.map(Value::String));
        put("external_id", external_id.map(Value::String));
        put("created", Some(ts_value(created_us)));
        put("updated", Some(ts_value(updated_us)));
        put("last_event_date", last_event.map(ts_value));
        ProfileRecord {
            pk: ProfileKey(pk),
            id,
            columns,
            data,
            parsed: OnceLock::new(),
            lists: HashMap::new(),
            // No consent record: never subscribed, and (implicit consent) may be emailed.
            consent: ConsentView {
                can_receive_marketing: true,
                ..ConsentView::default()
            },
        }
    }

    fn parsed(&self) -> &Parsed {
        self.parsed.get_or_init(|| Parsed::of(&self.data))
    }

    pub fn email_consent(&self) -> &ConsentView {
        &self.consent
    }

    /// Lists the profile is a member of.
    pub fn lists(&self) -> impl Iterator<Item = &str> {
        self.lists.keys().map(String::as_str)
    }

    pub fn property(&self, path: &PropertyPath) -> Option<&Value> {
        let value = match path {
            PropertyPath::BuiltIn(field) => {
                let name = builtin_name(*field);
                match self.columns.get(name) {
                    Some(value) => Some(value),
                    None => self.parsed().builtins.get(name),
                }
            }
            PropertyPath::Location(field) => self.parsed().location.get(location_name(*field)),
            PropertyPath::Custom(name) => self.parsed().properties.get(name),
        };
        value.filter(|v| !v.is_null())
    }
}

/// Profile records of a key range being read: the list and consent rows read for the range
/// are put on their records.
pub(crate) struct RecordBatch {
    records: Vec<ProfileRecord>,
    index: HashMap<ProfileKey, usize>,
}

impl RecordBatch {
    pub(crate) fn new(records: Vec<ProfileRecord>) -> RecordBatch {
        let index = records.iter().enumerate().map(|(i, r)| (r.pk, i)).collect();
        RecordBatch { records, index }
    }

    /// The first and last keys, `None` when there is no record.
    pub(crate) fn key_range(&self) -> Option<(i64, i64)> {
        Some((self.records.first()?.pk.0, self.records.last()?.pk.0))
    }

    /// A list the profile `pk` is a member of, since `joined_us`.
    pub(crate) fn add_list(&mut self, pk: i64, list: String, joined_us: i64) {
        if let Some(&i) = self.index.get(&ProfileKey(pk)) {
            self.records[i].lists.insert(list, joined_us);
        }
    }

    pub(crate) fn set_consent(&mut self, pk: i64, consent: ConsentView) {
        if let Some(&i) = self.index.get(&ProfileKey(pk)) {
            self.records[i].consent = consent;
        }
    }

    pub(crate) fn into_records(self) -> Vec<ProfileRecord> {
        self.records
    }
}

/// Adds `(time_us, value)` of an event that passes `filters` (its properties as stored), an
/// event without a value counting as 0. Properties are read only when there are filters.
pub(crate) fn push_matching(
    out: &mut Vec<(i64, f64)>,
    filters: &[EventFilter],
    properties: Option<&str>,
    time_us: i64,
    value: Option<f64>,
) {
    if !filters.is_empty() {
        let properties: Map<String, Value> = properties
            .and_then(|p| serde_json::from_str(p).ok())
            .unwrap_or_default();
        if !signalbox_seglang::event_matches(filters, &properties) {
            return;
        }
    }
    out.push((time_us, value.unwrap_or(0.0)));
}

fn builtin_name(field: BuiltIn) -> &'static str {
    field.as_str()
}

fn location_name(field: LocationField) -> &'static str {
    field.as_str()
}

/// `(time_us, value)` of events, per profile.
pub type EventsByProfile = HashMap<ProfileKey, Vec<(i64, f64)>>;

/// Per (metric, event filters), every profile's events, loaded once by [`MetricBulk::prepare`].
/// Answers any window from memory, so evaluating a definition over many profiles (and asking
/// when each will change) costs one scan per metric condition.
///
/// It reflects `engage.db` when it was prepared: a caller that sees later changes for some
/// profiles must evaluate those with [`MetricSource::Live`].
#[derive(Default)]
pub struct MetricBulk {
    loaded: HashMap<(String, String), EventsByProfile>,
}

impl MetricBulk {
    pub fn new() -> MetricBulk {
        MetricBulk::default()
    }

    /// Loads what every `profile-metric` condition of the definition reads.
    pub fn prepare(
        &mut self,
        reader: &dyn EngageReader,
        definition: &Definition,
    ) -> EngageResult<()> {
        for (_, condition) in definition.conditions() {
            if let Condition::Metric(metric) = condition {
                let key = bulk_key(&metric.metric_id, &metric.metric_filters);
                if let std::collections::hash_map::Entry::Vacant(slot) = self.loaded.entry(key) {
                    let mut by_profile =
                        reader.metric_events(&metric.metric_id, &metric.metric_filters)?;
                    for events in by_profile.values_mut() {
                        sort_by_time(events);
                    }
                    slot.insert(by_profile);
                }
            }
        }
        Ok(())
    }

    fn events(&self, metric_id: &str, filters: &[EventFilter], pk: ProfileKey) -> &[(i64, f64)] {
        self.loaded
            .get(&bulk_key(metric_id, filters))
            .and_then(|by_profile| by_profile.get(&pk))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

/// `(time_us, value)` of events.
type TimedValues = Vec<(i64, f64)>;

/// (metric id, event filters spelled out).
type BulkKey = (String, String);

fn bulk_key(metric_id: &str, filters: &[EventFilter]) -> BulkKey {
    (metric_id.to_owned(), format!("{filters:?}"))
}

/// One profile's events of a metric, as [`EngageReader::profile_metric_events`] reads them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProfileEvents {
    /// `(time_us, value)` of those that pass the filters.
    pub events: Vec<(i64, f64)>,
    /// The largest event key among all the profile's events of the metric, filtered out or
    /// not; 0 when it has none. Keys grow in the order events are applied, so an event of
    /// the profile and metric with a larger key was not there when these were read.
    pub last_pk: i64,
}

/// A follower's memory of profiles' events as conditions read them, kept up to date from the
/// change feed instead of read again for each evaluation: a profile's events only grow,
/// and reading all of a busy profile's events of a metric for every event it sends costs in
/// proportion to its history. Every event the follower reads in the feed goes to
/// [`EventMemory::observe`] before it evaluates; a merged or deleted profile is
/// [`EventMemory::forget`]ten. It holds at most about `capacity` events: the profiles
/// remembered first are forgotten first.
pub struct EventMemory {
    profiles: HashMap<ProfileKey, HashMap<BulkKey, Remembered>>,
    order: std::collections::VecDeque<ProfileKey>,
    capacity: usize,
    /// Events held, over every profile.
    held: usize,
}

struct Remembered {
    metric_id: String,
    filters: Vec<EventFilter>,
    last_pk: i64,
    /// In time order.
    events: Arc<TimedValues>,
}

impl EventMemory {
    pub fn new(capacity: usize) -> EventMemory {
        EventMemory {
            profiles: HashMap::new(),
            order: std::collections::VecDeque::new(),
            capacity: capacity.max(1),
            held: 0,
        }
    }

    /// A new event from the feed: added to what is remembered of its profile and metric,
    /// unless it was there when that was read.
    pub fn observe(&mut self, event: &crate::feed::FeedEvent) {
        let Some(entries) = self.profiles.get_mut(&event.profile_pk) else {
            return;
        };
        for remembered in entries.values_mut() {
            if remembered.metric_id != event.metric_id.as_str() || event.pk <= remembered.last_pk {
                continue;
            }
            remembered.last_pk = event.pk;
            let mut matched = Vec::with_capacity(1);
            let properties = (!remembered.filters.is_empty()).then_some(event.properties.as_str());
            push_matching(
                &mut matched,
                &remembered.filters,
                properties,
                event.time_us,
                event.value,
            );
            if let Some(timed) = matched.pop() {
                let events = Arc::make_mut(&mut remembered.events);
                let at = events.partition_point(|(time_us, _)| *time_us <= timed.0);
                events.insert(at, timed);
                self.held += 1;
            }
        }
    }

    /// Drops what is remembered of the profile (merged away, deleted, or given another's
    /// events).
    pub fn forget(&mut self, profile: ProfileKey) {
        if self.drop_profile(profile) {
            self.order.retain(|p| *p != profile);
        }
    }

    fn drop_profile(&mut self, profile: ProfileKey) -> bool {
        let Some(entries) = self.profiles.remove(&profile) else {
            return false;
        };
        self.held -= entries.values().map(|r| r.events.len()).sum::<usize>();
        true
    }

    /// Profiles remembered.
    pub fn len(&self) -> usize {
        self.profiles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.profiles.is_empty()
    }

    fn get(&self, profile: ProfileKey, key: &BulkKey) -> Option<Arc<TimedValues>> {
        Some(Arc::clone(&self.profiles.get(&profile)?.get(key)?.events))
    }

    fn remember(
        &mut self,
        profile: ProfileKey,
        key: BulkKey,
        metric_id: &str,
        filters: &[EventFilter],
        read: &ProfileEvents,
        events: Arc<TimedValues>,
    ) {
        while self.held + events.len() > self.capacity {
            let Some(at) = self.order.iter().position(|p| *p != profile) else {
                break;
            };
            if let Some(oldest) = self.order.remove(at) {
                self.drop_profile(oldest);
            }
        }
        if !self.profiles.contains_key(&profile) {
            self.order.push_back(profile);
        }
        self.held += events.len();
        let replaced = self.profiles.entry(profile).or_default().insert(
            key,
            Remembered {
                metric_id: metric_id.to_owned(),
                filters: filters.to_vec(),
                last_pk: read.last_pk,
                events,
            },
        );
        if let Some(replaced) = replaced {
            self.held -= replaced.events.len();
        }
    }
}

/// One profile's events, read per (metric, event filters) on first use and kept, so that
/// several definitions (and [`signalbox_seglang::Definition::next_change_after`]'s probes)
/// evaluated for the profile cost one query per metric; with an [`EventMemory`], kept
/// across evaluations too.
pub struct LiveEvents<'c> {
    reader: &'c dyn EngageReader,
    profile_pk: ProfileKey,
    cache: RefCell<HashMap<BulkKey, Arc<TimedValues>>>,
    memory: Option<&'c RefCell<EventMemory>>,
}

impl<'c> LiveEvents<'c> {
    pub fn new(reader: &'c dyn EngageReader, profile_pk: ProfileKey) -> LiveEvents<'c> {
        LiveEvents {
            reader,
            profile_pk,
            cache: RefCell::new(HashMap::new()),
            memory: None,
        }
    }

    /// Reads through `memory`, which must have observed every event of the feed up to the
    /// state being evaluated.
    pub fn remembering(
        reader: &'c dyn EngageReader,
        profile_pk: ProfileKey,
        memory: &'c RefCell<EventMemory>,
    ) -> LiveEvents<'c> {
        LiveEvents {
            memory: Some(memory),
            ..LiveEvents::new(reader, profile_pk)
        }
    }

    fn events(&self, metric_id: &str, filters: &[EventFilter]) -> Arc<Vec<(i64, f64)>> {
        let key = bulk_key(metric_id, filters);
        if let Some(found) = self.cache.borrow().get(&key) {
            return Arc::clone(found);
        }
        if let Some(found) = self
            .memory
            .and_then(|memory| memory.borrow().get(self.profile_pk, &key))
        {
            self.cache.borrow_mut().insert(key, Arc::clone(&found));
            return found;
        }
        let mut read = match self
            .reader
            .profile_metric_events(self.profile_pk, metric_id, filters)
        {
            Ok(read) => Some(read),
            Err(err) => {
                tracing::error!(error = %err, metric_id, "reading a profile's events failed");
                None
            }
        };
        let mut events = read
            .as_mut()
            .map(|read| std::mem::take(&mut read.events))
            .unwrap_or_default();
        sort_by_time(&mut events);
        let events = Arc::new(events);
        if let (Some(memory), Some(read)) = (self.memory, &read) {
            memory.borrow_mut().remember(
                self.profile_pk,
                key.clone(),
                metric_id,
                filters,
                read,
                Arc::clone(&events),
            );
        }
        self.cache.borrow_mut().insert(key, Arc::clone(&events));
        events
    }
}

/// Where metric facts come from.
pub enum MetricSource<'a> {
    /// This profile's events, as they are now.
    Live(&'a LiveEvents<'a>),
    /// Prepared for the definition being evaluated.
    Bulk(&'a MetricBulk),
}

/// Events in time order, as [`in_window`] wants them.
fn sort_by_time(events: &mut [(i64, f64)]) {
    events.sort_by_key(|(time_us, _)| *time_us);
}

/// The events of `events` (in time order) that lie in `window`, found by two binary
/// searches: a profile's events are looked at many times over (every condition, every probe
/// of the next change), and a profile may have thousands.
fn in_window<'e>(events: &'e [(i64, f64)], window: &TimeWindow) -> &'e [(i64, f64)] {
    let from = TimeWindow {
        start: window.start,
        end: Bound::Unbounded,
    };
    let until = TimeWindow {
        start: Bound::Unbounded,
        end: window.end,
    };
    let lo = events.partition_point(|(t, _)| !from.contains(ts(*t)));
    let hi = events.partition_point(|(t, _)| until.contains(ts(*t)));
    &events[lo..hi.max(lo)]
}

/// The answer of a segment membership question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentMembership {
    /// The id names no segment (it may be a list).
    NotASegment,
    NotMember,
    Member {
        joined: Timestamp,
    },
}

/// Membership of segments, which the audience engine keeps.
pub type SegmentLookup<'a> = &'a dyn Fn(&str, ProfileKey) -> SegmentMembership;

/// No segments at all.
pub fn no_segments(_: &str, _: ProfileKey) -> SegmentMembership {
    SegmentMembership::NotASegment
}

/// [`ProfileFacts`] of one profile over `engage.db`.
pub struct EngageFacts<'a> {
    pub record: &'a ProfileRecord,
    pub metrics: MetricSource<'a>,
    pub segments: SegmentLookup<'a>,
}

impl EngageFacts<'_> {
    /// Calls `f` with the matching events' `(time_us, value)`, in time order.
    fn matching<R>(
        &self,
        metric_id: &str,
        window: TimeWindow,
        filters: &[EventFilter],
        f: impl FnOnce(&[(i64, f64)]) -> R,
    ) -> R {
        match &self.metrics {
            MetricSource::Bulk(bulk) => f(in_window(
                bulk.events(metric_id, filters, self.record.pk),
                &window,
            )),
            MetricSource::Live(live) => f(in_window(&live.events(metric_id, filters), &window)),
        }
    }
}

impl ProfileFacts for EngageFacts<'_> {
    fn metric_count(&self, metric_id: &str, window: TimeWindow, filters: &[EventFilter]) -> u64 {
        self.matching(metric_id, window, filters, |events| events.len() as u64)
    }

    fn metric_sum(&self, metric_id: &str, window: TimeWindow, filters: &[EventFilter]) -> f64 {
        self.matching(metric_id, window, filters, |events| {
            events.iter().map(|(_, v)| v).sum()
        })
    }

    fn metric_event_times(
        &self,
        metric_id: &str,
        window: TimeWindow,
        filters: &[EventFilter],
    ) -> Vec<Timestamp> {
        self.matching(metric_id, window, filters, |events| {
            events.iter().map(|(t, _)| ts(*t)).collect()
        })
    }

    fn property(&self, path: &PropertyPath) -> Option<&Value> {
        self.record.property(path)
    }

    fn is_member(&self, group_id: &str) -> bool {
        match (self.segments)(group_id, self.record.pk) {
            SegmentMembership::NotASegment => self.record.lists.contains_key(group_id),
            SegmentMembership::NotMember => false,
            SegmentMembership::Member { .. } => true,
        }
    }

    fn joined_at(&self, group_id: &str) -> Option<Timestamp> {
        match (self.segments)(group_id, self.record.pk) {
            SegmentMembership::NotASegment => self
                .record
                .lists
                .get(group_id)
                .filter(|us| **us > 0)
                .map(|us| ts(*us)),
            SegmentMembership::NotMember => None,
            SegmentMembership::Member { joined } => Some(joined),
        }
    }

    fn email_consent(&self) -> ConsentView {
        self.record.consent.clone()
    }
}

/// Membership of segments, shareable between threads (flows evaluate on blocking threads).
pub type SharedSegmentLookup = Arc<dyn Fn(&str, ProfileKey) -> SegmentMembership + Send + Sync>;

/// Reads profiles' facts for evaluations outside the segment engine (flow filters and
/// splits), through one [`EngageReader`] of its own, reused by every load. Cheap to clone.
#[derive(Clone)]
pub struct FactsReader {
    reader: SharedReader,
}

type SharedReader = Arc<Mutex<Box<dyn EngageReader>>>;

impl Engage {
    /// A [`FactsReader`] over this engine's state. Blocking: call it off the async runtime.
    pub fn facts_reader(&self) -> EngageResult<FactsReader> {
        Ok(FactsReader {
            reader: Arc::new(Mutex::new(self.reader()?)),
        })
    }
}

fn locked(reader: &Mutex<Box<dyn EngageReader>>) -> MutexGuard<'_, Box<dyn EngageReader>> {
    // A panic while reading leaves the reader usable: a read holds no state across calls.
    reader
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl FactsReader {
    /// The facts of the profile with key `profile_pk`, `None` when the key names none (merged
    /// away or never created). Its events are read when a condition asks for them. Blocking.
    pub fn load(
        &self,
        profile_pk: ProfileKey,
        segments: SharedSegmentLookup,
    ) -> EngageResult<Option<OwnedFacts>> {
        let record = locked(&self.reader).profile_record(profile_pk, true)?;
        Ok(record.map(|record| OwnedFacts {
            record,
            reader: Arc::clone(&self.reader),
            segments,
        }))
    }
}

/// One profile's facts that own what they need (`Send`): its record, read when loaded, and
/// the reader its events are read through when a condition asks. Every answer is
/// [`EngageFacts`]'s.
pub struct OwnedFacts {
    record: ProfileRecord,
    reader: SharedReader,
    segments: SharedSegmentLookup,
}

impl OwnedFacts {
    pub fn record(&self) -> &ProfileRecord {
        &self.record
    }

    fn with<T>(&self, f: impl FnOnce(&EngageFacts<'_>) -> T) -> T {
        let reader = locked(&self.reader);
        let live = LiveEvents::new(reader.as_ref(), self.record.pk);
        let lookup = |group: &str, pk: ProfileKey| (self.segments)(group, pk);
        f(&EngageFacts {
            record: &self.record,
            metrics: MetricSource::Live(&live),
            segments: &lookup,
        })
    }
}

impl ProfileFacts for OwnedFacts {
    fn metric_count(&self, metric_id: &str, window: TimeWindow, filters: &[EventFilter]) -> u64 {
        self.with(|facts| facts.metric_count(metric_id, window, filters))
    }

    fn metric_sum(&self, metric_id: &str, window: TimeWindow, filters: &[EventFilter]) -> f64 {
        self.with(|facts| facts.metric_sum(metric_id, window, filters))
    }

    fn metric_event_times(
        &self,
        metric_id: &str,
        window: TimeWindow,
        filters: &[EventFilter],
    ) -> Vec<Timestamp> {
        self.with(|facts| facts.metric_event_times(metric_id, window, filters))
    }

    fn property(&self, path: &PropertyPath) -> Option<&Value> {
        self.record.property(path)
    }

    fn is_member(&self, group_id: &str) -> bool {
        self.with(|facts| facts.is_member(group_id))
    }

    fn joined_at(&self, group_id: &str) -> Option<Timestamp> {
        self.with(|facts| facts.joined_at(group_id))
    }

    fn email_consent(&self) -> ConsentView {
        self.record.consent.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The binary searches find exactly the events a scan of every event finds, for every
    /// kind of bound, bounds that fall on an event and between events, and empty windows.
    #[test]
    fn in_window_finds_what_a_scan_finds() {
        let events: Vec<(i64, f64)> = [0, 10, 10, 20, 35, 35, 50, 80]
            .iter()
            .enumerate()
            .map(|(i, &s)| (s * 1_000_000, i as f64))
            .collect();
        let at = |s: i64| ts(s * 1_000_000);
        let mut bounds = vec![Bound::Unbounded];
        for s in [-5, 0, 5, 10, 20, 34, 35, 36, 80, 90] {
            bounds.push(Bound::Included(at(s)));
            bounds.push(Bound::Excluded(at(s)));
        }
        for &start in &bounds {
            for &end in &bounds {
                let window = TimeWindow { start, end };
                let scanned: Vec<(i64, f64)> = events
                    .iter()
                    .filter(|(t, _)| window.contains(ts(*t)))
                    .copied()
                    .collect();
                assert_eq!(in_window(&events, &window), scanned, "{start:?}..{end:?}");
            }
        }
    }

    fn feed_event(
        pk: i64,
        profile: i64,
        metric: &str,
        time_s: i64,
        plan: &str,
    ) -> crate::feed::FeedEvent {
        crate::feed::FeedEvent {
            pk,
            id: crate::model::EventId(format!("E{pk}")),
            profile_pk: ProfileKey(profile),
            metric_pk: 1,
            metric_id: crate::model::MetricId(metric.to_owned()),
            metric_name: metric.to_owned(),
            integration: "api".to_owned(),
            time_us: time_s * 1_000_000,
            value: Some(pk as f64),
            properties: format!(r#"{{"plan":"{plan}"}}"#),
        }
    }

    fn remember(
        memory: &mut EventMemory,
        profile: i64,
        metric: &str,
        filters: &[EventFilter],
        read: ProfileEvents,
    ) {
        let events = Arc::new(read.events.clone());
        memory.remember(
            ProfileKey(profile),
            bulk_key(metric, filters),
            metric,
            filters,
            &read,
            events,
        );
    }

    fn held(
        memory: &EventMemory,
        profile: i64,
        metric: &str,
        filters: &[EventFilter],
    ) -> Option<Vec<(i64, f64)>> {
        memory
            .get(ProfileKey(profile), &bulk_key(metric, filters))
            .map(|events| events.as_ref().clone())
    }

    /// A remembered read takes the feed's later events of its profile and metric, in time
    /// order and through its filters, and never one it already had.
    #[test]
    fn remembered_events_take_the_feeds_later_events_once() {
        let pro = [EventFilter {
            property: "plan".to_owned(),
            filter: signalbox_seglang::ast::ValueFilter::String {
                operator: signalbox_seglang::ast::StringOperator::Equals,
                value: "pro".to_owned(),
            },
        }];
        let mut memory = EventMemory::new(1_000);
        let read = ProfileEvents {
            events: vec![(10_000_000, 1.0), (30_000_000, 3.0)],
            last_pk: 7,
        };
        remember(&mut memory, 1, "M", &[], read);
        remember(
            &mut memory,
            1,
            "M",
            &pro,
            ProfileEvents {
                events: vec![(30_000_000, 3.0)],
                last_pk: 7,
            },
        );
        // Already read (key at or below 7), another profile, another metric: nothing moves.
        memory.observe(&feed_event(6, 1, "M", 20, "pro"));
        memory.observe(&feed_event(7, 1, "M", 20, "pro"));
        memory.observe(&feed_event(8, 2, "M", 20, "pro"));
        memory.observe(&feed_event(9, 1, "N", 20, "pro"));
        assert_eq!(
            held(&memory, 1, "M", &[]).unwrap(),
            [(10_000_000, 1.0), (30_000_000, 3.0)]
        );
        // New ones go in time order; the filtered read takes only those that pass.
        memory.observe(&feed_event(10, 1, "M", 20, "pro"));
        memory.observe(&feed_event(11, 1, "M", 40, "free"));
        memory.observe(&feed_event(11, 1, "M", 40, "free"));
        assert_eq!(
            held(&memory, 1, "M", &[]).unwrap(),
            [
                (10_000_000, 1.0),
                (20_000_000, 10.0),
                (30_000_000, 3.0),
                (40_000_000, 11.0)
            ]
        );
        assert_eq!(
            held(&memory, 1, "M", &pro).unwrap(),
            [(20_000_000, 10.0), (30_000_000, 3.0)]
        );
        memory.forget(ProfileKey(1));
        assert_eq!(held(&memory, 1, "M", &[]), None);
        assert!(memory.is_empty());
        assert_eq!(memory.held, 0);
    }

    /// Past its capacity in events, the memory forgets the profiles it remembered first.
    #[test]
    fn the_memory_forgets_the_oldest_profiles_past_its_capacity() {
        let mut memory = EventMemory::new(5);
        let two = || ProfileEvents {
            events: vec![(1, 1.0), (2, 2.0)],
            last_pk: 2,
        };
        remember(&mut memory, 1, "M", &[], two());
        remember(&mut memory, 2, "M", &[], two());
        assert_eq!(memory.len(), 2);
        remember(&mut memory, 3, "M", &[], two());
        assert_eq!(memory.len(), 2);
        assert_eq!(held(&memory, 1, "M", &[]), None);
        assert!(held(&memory, 2, "M", &[]).is_some());
        assert!(held(&memory, 3, "M", &[]).is_some());
        assert_eq!(memory.held, 4);
        // A profile larger than the whole memory is still kept while it is evaluated.
        let many = ProfileEvents {
            events: (0..9).map(|i| (i, 0.0)).collect(),
            last_pk: 9,
        };
        remember(&mut memory, 4, "M", &[], many);
        assert_eq!(memory.len(), 1);
        assert_eq!(memory.held, 9);
    }

    /// A record's `data` is parsed on the first question about it, and records that say the
    /// same are equal however their `data` is spelt.
    #[test]
    fn a_records_data_is_parsed_when_a_condition_first_asks() {
        let raw: RawProfile = (
            1,
            "P1".to_owned(),
            Some("ada@example.com".to_owned()),
            None,
            None,
            0,
            0,
            None,
            r#"{"first_name":"Ada","properties":{"plan":"pro"},"location":{"city":"Oslo"}}"#
                .to_owned(),
        );
        let record = ProfileRecord::from_raw(raw.clone());
        let email = PropertyPath::BuiltIn(BuiltIn::Email);
        assert_eq!(
            record.property(&email),
            Some(&Value::from("ada@example.com"))
        );
        assert!(record.parsed.get().is_none());
        let plan = PropertyPath::Custom("plan".to_owned());
        assert_eq!(record.property(&plan), Some(&Value::from("pro")));
        assert!(record.parsed.get().is_some());
        let first = PropertyPath::BuiltIn(BuiltIn::FirstName);
        assert_eq!(record.property(&first), Some(&Value::from("Ada")));
        let city = PropertyPath::Location(LocationField::City);
        assert_eq!(record.property(&city), Some(&Value::from("Oslo")));

        let mut respelt = raw;
        respelt.8 = r#"{ "location": {"city": "Oslo"}, "properties": {"plan": "pro"},
                          "first_name": "Ada" }"#
            .to_owned();
        assert_eq!(ProfileRecord::from_raw(respelt), record);
        let mut other = record.clone();
        other.data = r#"{"properties":{"plan":"free"}}"#.to_owned();
        other.parsed = OnceLock::new();
        assert_ne!(other, record);
    }
}
