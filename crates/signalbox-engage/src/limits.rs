//! Limits on what a profile keeps, so that no client can grow one without bound.
//!
//! A profile's custom properties are capped in number, in total size and per value. Through
//! the Klaviyo-compatible API a write over a limit is refused (400, naming the limit); a
//! Segment call is in the log already when it is applied, so its property changes are not
//! applied and a problem naming the limit is recorded on the profile, while the rest of the
//! call (identifiers, standard fields, events) applies. Refusing the call's property changes
//! whole, rather than keeping some of them, keeps a profile from holding half of a change.

use serde_json::{Map, Value};

/// Most custom properties one profile keeps.
pub const MAX_PROFILE_PROPERTIES: usize = 1_000;
/// Largest size of one profile's custom properties, as JSON.
pub const MAX_PROFILE_PROPERTIES_BYTES: usize = 100 * 1024;
/// Largest size of one property's value, as JSON.
pub const MAX_PROPERTY_VALUE_BYTES: usize = 32 * 1024;
/// Largest magnitude of an event's value. Sums of values over any number of events then stay
/// far inside the range of an `f64`.
pub const MAX_EVENT_VALUE: f64 = 1e15;

/// A change to a profile's properties that a limit refuses. It displays as a phrase that
/// follows its [`field`](PropertyLimit::field): `properties.notes is 40000 bytes as JSON, …`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PropertyLimit {
    #[error("is {bytes} bytes as JSON, over the limit of {MAX_PROPERTY_VALUE_BYTES} bytes for one value")]
    ValueTooLarge { key: String, bytes: usize },
    #[error(
        "would give the profile {count} properties, over the limit of {MAX_PROFILE_PROPERTIES}"
    )]
    TooMany { count: usize },
    #[error("would make the profile's properties {bytes} bytes as JSON, over the limit of {MAX_PROFILE_PROPERTIES_BYTES} bytes")]
    TooLarge { bytes: usize },
}

impl PropertyLimit {
    /// The field the limit is about: `properties` or `properties.<key>`.
    pub fn field(&self) -> String {
        match self {
            PropertyLimit::ValueTooLarge { key, .. } => format!("properties.{key}"),
            _ => "properties".into(),
        }
    }

    /// The field and the limit, as one sentence.
    pub fn describe(&self) -> String {
        format!("{} {self}", self.field())
    }
}

/// Whether an event's value is within [`MAX_EVENT_VALUE`] (and finite).
pub fn event_value_fits(value: f64) -> bool {
    value.is_finite() && value.abs() <= MAX_EVENT_VALUE
}

/// Bytes a value takes as JSON.
pub(crate) fn json_len<T: serde::Serialize + ?Sized>(value: &T) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    serde_json::to_writer(&mut counter, value).expect("JSON values serialise");
    counter.0
}

/// Applies `changes` (a `null` removes the key) to `properties`, or nothing if the result
/// would be over a limit. Returns whether anything changed.
pub(crate) fn apply_properties(
    properties: &mut Map<String, Value>,
    changes: &Map<String, Value>,
) -> Result<bool, PropertyLimit> {
    if changes.is_empty() {
        return Ok(false);
    }
    let mut count = properties.len();
    for (key, value) in changes {
        if value.is_null() {
            count -= usize::from(properties.contains_key(key));
            continue;
        }
        let bytes = json_len(value);
        if bytes > MAX_PROPERTY_VALUE_BYTES {
            return Err(PropertyLimit::ValueTooLarge {
                key: key.clone(),
                bytes,
            });
        }
        count += usize::from(!properties.contains_key(key));
    }
    if count > MAX_PROFILE_PROPERTIES {
        return Err(PropertyLimit::TooMany { count });
    }
    // Apply, keeping what was replaced, then measure: undone if over.
    let mut undo: Vec<(String, Option<Value>)> = Vec::new();
    for (key, value) in changes {
        let old = if value.is_null() {
            properties.remove(key)
        } else if properties.get(key) != Some(value) {
            properties.insert(key.clone(), value.clone())
        } else {
            continue;
        };
        if value.is_null() && old.is_none() {
            continue;
        }
        undo.push((key.clone(), old));
    }
    if undo.is_empty() {
        return Ok(false);
    }
    let bytes = json_len(properties);
    if bytes > MAX_PROFILE_PROPERTIES_BYTES {
        for (key, old) in undo.into_iter().rev() {
            match old {
                Some(old) => properties.insert(key, old),
                None => properties.remove(&key),
            };
        }
        return Err(PropertyLimit::TooLarge { bytes });
    }
    Ok(true)
}

/// Checks a write's properties on their own (a new profile's, or what one request sets).
pub fn check_properties(changes: &Map<String, Value>) -> Result<(), PropertyLimit> {
    apply_properties(&mut Map::new(), changes).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn a_change_over_a_limit_changes_nothing() {
        let mut properties = map(json!({"a": 1}));
        let big = "x".repeat(MAX_PROPERTY_VALUE_BYTES);
        let err = apply_properties(&mut properties, &map(json!({"b": 2, "c": big}))).unwrap_err();
        assert_eq!(err.field(), "properties.c");
        assert_eq!(properties, map(json!({"a": 1})));

        let chunk = "y".repeat(30 * 1024);
        let changes = map(json!({"d": chunk, "e": chunk, "f": chunk, "g": chunk, "a": null}));
        let err = apply_properties(&mut properties, &changes).unwrap_err();
        assert!(matches!(err, PropertyLimit::TooLarge { .. }), "{err}");
        assert!(err.to_string().contains("102400"), "{err}");
        assert_eq!(properties, map(json!({"a": 1})));

        let many: Map<String, Value> = (0..MAX_PROFILE_PROPERTIES)
            .map(|i| (format!("k{i}"), json!(i)))
            .collect();
        let err = apply_properties(&mut properties, &many).unwrap_err();
        assert_eq!(err, PropertyLimit::TooMany { count: 1001 });
        // Removing one makes room.
        let mut with_removal = many.clone();
        with_removal.insert("a".into(), Value::Null);
        assert_eq!(apply_properties(&mut properties, &with_removal), Ok(true));
        assert_eq!(properties.len(), MAX_PROFILE_PROPERTIES);
    }

    #[test]
    fn event_values_beyond_the_magnitude_do_not_fit() {
        assert!(event_value_fits(-MAX_EVENT_VALUE));
        assert!(!event_value_fits(1e16));
        assert!(!event_value_fits(f64::INFINITY));
        assert!(!event_value_fits(f64::NAN));
    }
}
