//! Reads of the derived state: profiles, metrics, activity feeds, held calls, the audit trail.
//! Each function takes a read connection; the engine runs them in the blocking pool.

use base64::Engine as _;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::apply::profile::ProfileRow;
use crate::error::{EngageError, EngageResult};
use crate::model::*;

/// The page size when none is given, and the largest one.
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

pub(crate) fn ts(us: i64) -> Timestamp {
    Timestamp::from_microsecond(us).unwrap_or(Timestamp::UNIX_EPOCH)
}

pub(crate) fn page_size(n: u32) -> u32 {
    match n {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    }
}

/// Cursors are opaque: base64 of a small JSON array.
pub(crate) fn encode_cursor(value: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

pub(crate) fn decode_cursor(cursor: &str) -> EngageResult<Vec<Value>> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor.trim())
        .map_err(|_| EngageError::invalid("page[cursor]", "not a cursor of this listing"))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Array(items)) => Ok(items),
        _ => Err(EngageError::invalid(
            "page[cursor]",
            "not a cursor of this listing",
        )),
    }
}

pub(crate) fn cursor_i64(items: &[Value], idx: usize) -> EngageResult<i64> {
    items
        .get(idx)
        .and_then(Value::as_i64)
        .ok_or_else(|| EngageError::invalid("page[cursor]", "not a cursor of this listing"))
}

/// `(op, dir)` of a keyset page: the comparison that moves past the cursor and the order.
pub(crate) fn keyset(descending: bool) -> (&'static str, &'static str) {
    if descending {
        ("<", "DESC")
    } else {
        (">", "ASC")
    }
}

/// A page of `rows`, read with one row more than `size`: that row says another page follows,
/// whose cursor is made from the last row kept.
pub(crate) fn into_page<T, U>(
    mut rows: Vec<T>,
    size: u32,
    cursor: impl Fn(&T) -> Value,
    item: impl FnMut(T) -> U,
) -> Page<U> {
    let next_cursor = if rows.len() > size as usize {
        rows.truncate(size as usize);
        rows.last().map(|last| encode_cursor(&cursor(last)))
    } else {
        None
    };
    Page {
        items: rows.into_iter().map(item).collect(),
        next_cursor,
    }
}

/// How a profile listing is ordered: by `column` (`id`, a text key alone; else a time, then
/// `pk`).
pub(crate) struct ProfileOrder {
    pub column: &'static str,
    pub text_key: bool,
    pub op: &'static str,
    pub dir: &'static str,
}

/// Where a profile listing resumes: after an id, or after a (time, pk).
pub(crate) enum ProfileAfter {
    Id(String),
    At { value: i64, pk: i64 },
}

impl ProfileOrder {
    pub(crate) fn of(sort: &ProfileSort) -> ProfileOrder {
        let (column, text_key) = match sort.field {
            ProfileSortField::Id => ("id", true),
            ProfileSortField::Created => ("created_us", false),
            ProfileSortField::Updated => ("updated_us", false),
        };
        let (op, dir) = keyset(sort.descending);
        ProfileOrder {
            column,
            text_key,
            op,
            dir,
        }
    }

    pub(crate) fn after(&self, cursor: &str) -> EngageResult<ProfileAfter> {
        let items = decode_cursor(cursor)?;
        if self.text_key {
            let id = items.first().and_then(Value::as_str).ok_or_else(|| {
                EngageError::invalid("page[cursor]", "not a cursor of this listing")
            })?;
            return Ok(ProfileAfter::Id(id.to_owned()));
        }
        Ok(ProfileAfter::At {
            value: cursor_i64(&items, 0)?,
            pk: cursor_i64(&items, 1)?,
        })
    }
}

/// The cursor after a profile row in a listing sorted by `field`.
pub(crate) fn profile_cursor(field: ProfileSortField, row: &ProfileRow) -> Value {
    match field {
        ProfileSortField::Id => serde_json::json!([row.id]),
        ProfileSortField::Created => serde_json::json!([row.created_us, row.pk]),
        ProfileSortField::Updated => serde_json::json!([row.updated_us, row.pk]),
    }
}

/// An event row as stored, before its id is made and its properties read.
pub(crate) struct StoredEvent {
    pub pk: i64,
    pub metric_id: String,
    pub profile_id: String,
    pub time_us: i64,
    pub value: Option<f64>,
    pub currency: Option<String>,
    pub unique_id: String,
    pub properties: String,
}

impl StoredEvent {
    pub(crate) fn into_event(self) -> Event {
        let properties = match serde_json::from_str(&self.properties) {
            Ok(Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        Event {
            id: EventId(crate::ids::event_id(self.time_us, self.pk)),
            metric_id: MetricId(self.metric_id),
            profile_id: ProfileId(self.profile_id),
            time: ts(self.time_us),
            value: self.value,
            value_currency: self.currency,
            unique_id: self.unique_id,
            properties,
        }
    }
}

/// The event an id names when the row its key finds is that event (the id's time matches).
pub(crate) fn event_named(id: &EventId, found: Option<StoredEvent>) -> EngageResult<Event> {
    match found.map(StoredEvent::into_event) {
        Some(event) if event.id.0.eq_ignore_ascii_case(&id.0) => Ok(event),
        _ => Err(EngageError::not_found(format!("event {id}"))),
    }
}

/// The held-call status a filter lists (`None`: every status).
pub(crate) fn held_status(filter: HeldFilter) -> Option<&'static str> {
    match filter {
        HeldFilter::Held => Some(HeldCallStatus::Held.as_str()),
        HeldFilter::Expired => Some(HeldCallStatus::Expired.as_str()),
        HeldFilter::Released => Some(HeldCallStatus::Released.as_str()),
        HeldFilter::All => None,
    }
}

/// A stored held-call status, or the error of an unknown one.
pub(crate) fn parse_held_status(text: &str) -> Result<HeldCallStatus, String> {
    HeldCallStatus::parse(text).ok_or_else(|| format!("unknown held call status {text:?}"))
}

/// A held call as listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldCall {
    /// The call's sequence number in the log.
    pub seq: i64,
    pub source_id: i64,
    pub kind: String,
    pub received: Timestamp,
    pub expires: Timestamp,
    pub reason: String,
    pub status: HeldCallStatus,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    /// The entry whose application released it.
    pub released_by: Option<i64>,
}

/// Where a held call stands; stored and shown as its lowercase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeldCallStatus {
    /// Waiting for the profile it names to exist.
    Held,
    /// Applied once that profile appeared.
    Released,
    /// Dropped after the hold window passed.
    Expired,
}

impl HeldCallStatus {
    pub const ALL: [HeldCallStatus; 3] = [
        HeldCallStatus::Held,
        HeldCallStatus::Released,
        HeldCallStatus::Expired,
    ];

    /// The stored and wire text.
    pub fn as_str(self) -> &'static str {
        match self {
            HeldCallStatus::Held => "held",
            HeldCallStatus::Released => "released",
            HeldCallStatus::Expired => "expired",
        }
    }

    /// The status a stored text names; `None` for any other text.
    pub fn parse(text: &str) -> Option<HeldCallStatus> {
        HeldCallStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
    }
}

impl std::fmt::Display for HeldCallStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Which held calls to list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HeldFilter {
    /// Still waiting.
    #[default]
    Held,
    Expired,
    Released,
    All,
}

/// What engage still needs of the call log, so that retention keeps it: the pipeline reads
/// the entries after its checkpoint, a quarantined entry is read again when retried, and a
/// call still held keeps its entry while it waits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogNeeds {
    /// The checkpoint: every entry up to it is applied.
    pub applied_seq: i64,
    /// The oldest call still held, waiting for an identifier.
    pub oldest_held_seq: Option<i64>,
    /// The oldest entry set aside in quarantine.
    pub oldest_quarantined_seq: Option<i64>,
}

/// A log entry set aside because applying it kept failing (see `apply/quarantine.rs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuarantinedEntry {
    /// The entry's sequence number in the log.
    pub seq: i64,
    /// The entry's kind (`track`, `identify`, `api_profile`, …).
    pub kind: String,
    pub source_id: i64,
    /// When the log received it.
    pub received: Timestamp,
    /// The last try's error.
    pub error: String,
    /// Tries on its own so far, retries included.
    pub tries: i64,
}

/// One line of a profile's audit trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileLink {
    /// The log entry that did it.
    pub seq: i64,
    /// `created`, `linked`, `unlinked`, `conflict` or `merged`.
    pub action: String,
    pub kind: Option<String>,
    pub value: Option<String>,
    pub detail: Option<String>,
    pub at: Timestamp,
}

/// Where a profile's data came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileOrigin {
    pub integration: String,
    pub source: Option<String>,
    /// The ids the profile has there.
    pub external_id: Option<String>,
    pub anonymous_id: Option<String>,
    pub first_seq: i64,
    pub last_seq: i64,
}

/// A profile's audit trail and provenance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileHistory {
    pub profile: Profile,
    pub links: Vec<ProfileLink>,
    pub origins: Vec<ProfileOrigin>,
    /// Ids of profiles merged into this one.
    pub merged_ids: Vec<ProfileId>,
    /// Every identifier that names it.
    pub identifiers: Vec<(String, String)>,
    pub problems: Vec<String>,
}

#[cfg(test)]
mod tests {
    //! Fuzz targets of page cursors, the one part of a listing's input that is opaque text
    //! a client sends back: what a cursor encodes it decodes, and any other text is refused
    //! as `page[cursor]` (never a panic). `PROPTEST_CASES` runs more than the default cases.

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn every_held_call_status_round_trips_through_its_stored_and_wire_text() {
        let texts: Vec<&str> = HeldCallStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(texts, ["held", "released", "expired"]);
        for status in HeldCallStatus::ALL {
            assert_eq!(HeldCallStatus::parse(status.as_str()), Some(status));
            assert_eq!(format!("{status:<9}|"), format!("{:<9}|", status.as_str()));
            let wire = serde_json::to_value(status).unwrap();
            assert_eq!(wire, serde_json::Value::from(status.as_str()));
            assert_eq!(
                serde_json::from_value::<HeldCallStatus>(wire).unwrap(),
                status
            );
        }
        assert_eq!(HeldCallStatus::parse("Held"), None);
    }

    fn config() -> proptest::test_runner::Config {
        let mut config = proptest::test_runner::Config {
            failure_persistence: None,
            ..proptest::test_runner::Config::default()
        };
        if std::env::var_os("PROPTEST_CASES").is_none() {
            config.cases = 2048;
        }
        config
    }

    fn refused_as_cursor(error: &EngageError) -> bool {
        matches!(error, EngageError::Invalid { field, .. } if field == "page[cursor]")
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn fuzz_cursor_decodes_what_it_encoded(
            items in prop::collection::vec(prop_oneof![
                any::<i64>().prop_map(Value::from),
                any::<String>().prop_map(Value::from),
            ], 0..4),
        ) {
            let cursor = encode_cursor(&Value::Array(items.clone()));
            prop_assert!(cursor.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            let decoded = decode_cursor(&cursor).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(&decoded, &items);
            for (index, item) in items.iter().enumerate() {
                if let Some(n) = item.as_i64() {
                    prop_assert_eq!(cursor_i64(&decoded, index).ok(), Some(n));
                }
            }
        }

        #[test]
        fn fuzz_cursor_of_any_text(text in prop_oneof![
            any::<String>(),
            prop::collection::vec(any::<u8>(), 0..64)
                .prop_map(|bytes| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)),
            (1usize..5_000).prop_map(|depth| base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(format!("{}{}", "[".repeat(depth), "]".repeat(depth)))),
            "[\\[\\]0-9e.,\"a-z -]{0,40}"
                .prop_map(|json| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)),
        ]) {
            match decode_cursor(&text) {
                Ok(items) => {
                    prop_assert!(items.len() <= text.len());
                    for index in 0..3 {
                        if let Err(error) = cursor_i64(&items, index) {
                            prop_assert!(refused_as_cursor(&error), "{}", error);
                        }
                    }
                }
                Err(error) => prop_assert!(refused_as_cursor(&error), "{}", error),
            }
        }
    }
}
