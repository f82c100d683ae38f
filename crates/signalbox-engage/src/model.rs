//! What Engage exposes: profiles, metrics, events, queries over them, and the inputs the
//! Klaviyo-compatible API writes with. No wire format lives here; the HTTP layer translates.

use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A profile's id: 26 characters of Crockford base32, ULID-like, stable for the profile's life
/// (a profile merged into another keeps redirecting to the survivor).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProfileId(pub String);

/// A profile's key in engage's store: how the engines that follow engage (segments, flows,
/// confirmations) refer to a profile in their own stores and in the change feed. Unlike
/// [`ProfileId`] it is not shown to users; a merged-away profile's key names no profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProfileKey(pub i64);

impl fmt::Display for ProfileKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl ProfileKey {
    pub const fn get(self) -> i64 {
        self.0
    }
}

/// A metric's id: 6 alphanumeric characters, derived from the metric's integration and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MetricId(pub String);

/// An event's id: 26 characters of Crockford base32, ULID-like.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(pub String);

macro_rules! id_display {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl $t {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
    )*};
}
id_display!(ProfileId, MetricId, EventId);

/// A profile's location, as Klaviyo structures it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Location {
    pub address1: Option<String>,
    pub address2: Option<String>,
    pub city: Option<String>,
    pub country: Option<String>,
    pub region: Option<String>,
    pub zip: Option<String>,
    pub timezone: Option<String>,
    pub ip: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
}

impl Location {
    pub fn is_empty(&self) -> bool {
        *self == Location::default()
    }
}

/// Where a change came from: the integration (`Segment` for calls through a Segment source,
/// `API` for the Klaviyo-compatible API, `Signalbox` for the system itself) and the source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub integration: String,
    /// The source's name (for `Segment`), `None` for the API.
    pub source: Option<String>,
}

impl Origin {
    pub const SEGMENT: &'static str = "Segment";
    pub const API: &'static str = "API";
    pub const SIGNALBOX: &'static str = "Signalbox";
}

/// A person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub id: ProfileId,
    pub email: Option<String>,
    pub phone_number: Option<String>,
    pub external_id: Option<String>,
    pub anonymous_id: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub organization: Option<String>,
    pub title: Option<String>,
    pub image: Option<String>,
    pub locale: Option<String>,
    pub location: Location,
    /// Custom properties.
    pub properties: Map<String, Value>,
    pub created: Timestamp,
    pub updated: Timestamp,
    pub last_event_date: Option<Timestamp>,
    /// Provenance: who created the profile and who changed it last.
    pub created_by: Origin,
    pub updated_by: Origin,
}

/// A metric's integration, as Klaviyo shows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Integration {
    pub name: String,
    pub category: String,
}

impl Integration {
    /// Calls through a Segment source.
    pub fn segment() -> Integration {
        Integration {
            name: Origin::SEGMENT.into(),
            category: "API".into(),
        }
    }

    /// The Klaviyo-compatible API.
    pub fn api() -> Integration {
        Integration {
            name: Origin::API.into(),
            category: "API".into(),
        }
    }

    /// Signalbox itself (`Subscribed to List`, `Unsubscribed`).
    pub fn signalbox() -> Integration {
        Integration {
            name: Origin::SIGNALBOX.into(),
            category: "Internal".into(),
        }
    }
}

/// An event type, one per (integration, name), created the first time it is seen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub id: MetricId,
    pub name: String,
    pub integration: Integration,
    pub created: Timestamp,
    pub updated: Timestamp,
}

/// One thing a profile did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: EventId,
    pub metric_id: MetricId,
    pub profile_id: ProfileId,
    pub time: Timestamp,
    pub value: Option<f64>,
    pub value_currency: Option<String>,
    /// The dedupe key: one event per (profile, metric, unique id).
    pub unique_id: String,
    /// `event_properties` as Klaviyo exposes them (with `$event_id` and `$value`).
    pub properties: Map<String, Value>,
}

/// One page of a listing. The cursor is opaque; `None` at the end.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// A comparison of a time filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cmp {
    Eq,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeBound {
    pub cmp: Cmp,
    pub at: Timestamp,
}

/// The fields profiles can be looked up by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProfileField {
    Id,
    Email,
    PhoneNumber,
    ExternalId,
}

/// What profile listings sort by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProfileSortField {
    #[default]
    Id,
    Created,
    Updated,
}

/// A sort order for profile listings (`sort=created`, `sort=-updated`, …).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileSort {
    pub field: ProfileSortField,
    pub descending: bool,
}

/// A profile listing. `any_of` entries are ANDed; the values of one entry are ORed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProfileQuery {
    pub any_of: Vec<(ProfileField, Vec<String>)>,
    pub created: Vec<TimeBound>,
    pub updated: Vec<TimeBound>,
    /// Profiles with a global email suppression that has one of these reasons (any reason when
    /// empty) and a time within every bound of `suppressed_at`. Neither given: no condition.
    pub suppression_reasons: Vec<crate::lists::SuppressionReason>,
    pub suppressed_at: Vec<TimeBound>,
    /// Only profiles with a list-level suppression. Every suppression Signalbox records is
    /// global, so no profile has one and the answer is empty.
    pub list_suppressed: bool,
    pub sort: ProfileSort,
    pub page_size: u32,
    pub cursor: Option<String>,
}

/// An activity feed: events of a metric and/or a profile, newest first by default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventQuery {
    pub metric_id: Option<MetricId>,
    pub profile_id: Option<ProfileId>,
    pub time: Vec<TimeBound>,
    pub newest_first: bool,
    pub page_size: u32,
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricQuery {
    pub integration_name: Option<String>,
    pub integration_category: Option<String>,
    pub page_size: u32,
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Measurement {
    /// Events.
    Count,
    /// Distinct profiles.
    Unique,
    /// Sum of the events' values.
    SumValue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Interval {
    Hour,
    Day,
    /// Weeks start on Monday.
    Week,
    Month,
}

/// A metric aggregate over `[start, end)`, bucketed by `interval` in `timezone`, optionally
/// split by event properties (`by`) and restricted to events whose properties equal values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AggregateQuery {
    pub metric_id: MetricId,
    pub measurements: Vec<Measurement>,
    pub interval: Interval,
    pub start: Timestamp,
    /// Exclusive.
    pub end: Timestamp,
    /// IANA name; `UTC` when empty.
    pub timezone: String,
    /// Event property names to split by.
    pub by: Vec<String>,
    pub property_equals: Vec<(String, Value)>,
}

/// One split of an aggregate: each measurement asked for is aligned with
/// [`AggregateResult::dates`]; the others are empty.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AggregateRow {
    /// Values of the `by` properties (empty without `by`; a missing property is `""`).
    pub dimensions: Vec<String>,
    pub count: Vec<u64>,
    pub unique: Vec<u64>,
    pub sum_value: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AggregateResult {
    /// Bucket starts in the query's timezone.
    pub dates: Vec<jiff::Zoned>,
    pub rows: Vec<AggregateRow>,
}

/// A profile as the API writes it: `None` leaves a field unchanged; `properties` are merged
/// into the custom properties; `unset` names custom properties to remove, or standard
/// attributes to clear (`first_name`, `location.city`, …).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProfileInput {
    /// An existing profile's id (events may name their profile this way).
    pub id: Option<ProfileId>,
    pub email: Option<String>,
    pub phone_number: Option<String>,
    pub external_id: Option<String>,
    pub anonymous_id: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub organization: Option<String>,
    pub title: Option<String>,
    pub image: Option<String>,
    pub locale: Option<String>,
    pub location: Location,
    pub properties: Map<String, Value>,
    pub unset: Vec<String>,
}

impl ProfileInput {
    /// Whether it names a profile: an id or an identifier.
    pub fn has_identifier(&self) -> bool {
        self.id.is_some()
            || self.email.is_some()
            || self.phone_number.is_some()
            || self.external_id.is_some()
            || self.anonymous_id.is_some()
    }
}

/// An event as the API creates it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApiEventInput {
    pub metric_name: String,
    /// Needs an identifier or an id.
    pub profile: ProfileInput,
    pub properties: Map<String, Value>,
    /// Receipt time when absent.
    pub time: Option<Timestamp>,
    pub value: Option<f64>,
    pub value_currency: Option<String>,
    /// The event's own id when absent, so that two events in the same second are both kept.
    pub unique_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_key_is_its_number_on_the_wire_and_in_text() {
        let key = ProfileKey(42);
        assert_eq!(serde_json::to_string(&key).unwrap(), "42");
        assert_eq!(serde_json::from_str::<ProfileKey>("42").unwrap(), key);
        assert_eq!(key.to_string(), "42");
        assert_eq!(key.get(), 42);
        assert!(ProfileKey(1) < ProfileKey(2));
    }
}
