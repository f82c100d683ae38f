//! Metric aggregates: count, distinct profiles and sum of value per hour, day, week or month
//! of a timezone, optionally split by event properties.
//!
//! One pass over the metric's events in the range, in time order, through the
//! `(metric, time, profile, value)` index (no table reads unless properties are asked for);
//! bucket boundaries are computed once in the timezone (so DST days are 23 or 25 hours long)
//! and each event advances a pointer along them.

use std::collections::HashSet;

use jiff::tz::TimeZone;
use jiff::{ToSpan, Zoned};
use serde_json::Value;

use crate::error::{EngageError, EngageResult};
use crate::model::Interval;

/// Buckets one query may ask for at most.
const MAX_BUCKETS: usize = 100_000;

/// Bucket starts in `tz` covering `[start, end)`: the first is the start of the interval that
/// holds `start`.
pub(crate) fn buckets(
    start: jiff::Timestamp,
    end: jiff::Timestamp,
    interval: Interval,
    tz: &TimeZone,
) -> EngageResult<Vec<Zoned>> {
    let bad = |e: jiff::Error| EngageError::invalid("interval", e.to_string());
    let zoned = start.to_zoned(tz.clone());
    let mut at = match interval {
        Interval::Hour => zoned
            .with()
            .minute(0)
            .second(0)
            .subsec_nanosecond(0)
            .build()
            .map_err(bad)?,
        Interval::Day => zoned.start_of_day().map_err(bad)?,
        Interval::Week => {
            let day = zoned.start_of_day().map_err(bad)?;
            let back = day.weekday().to_monday_zero_offset();
            day.checked_sub((back as i64).days())
                .map_err(bad)?
                .start_of_day()
                .map_err(bad)?
        }
        Interval::Month => zoned
            .first_of_month()
            .map_err(bad)?
            .start_of_day()
            .map_err(bad)?,
    };
    // An hour may start before `start` by less than an hour only in zones whose offset is
    // not whole hours; that is still the bucket holding `start`.
    let mut out = Vec::new();
    while at.timestamp() < end {
        out.push(at.clone());
        if out.len() > MAX_BUCKETS {
            return Err(EngageError::invalid(
                "interval",
                format!("more than {MAX_BUCKETS} buckets; use a longer interval"),
            ));
        }
        let step = match interval {
            Interval::Hour => at.checked_add(1.hour()),
            Interval::Day => at.checked_add(1.day()).and_then(|z| z.start_of_day()),
            Interval::Week => at.checked_add(1.week()).and_then(|z| z.start_of_day()),
            Interval::Month => at.checked_add(1.month()).and_then(|z| z.start_of_day()),
        };
        at = step.map_err(bad)?;
    }
    Ok(out)
}

#[derive(Default)]
pub(crate) struct Acc {
    pub count: Vec<u64>,
    pub sum: Vec<f64>,
    pub unique: Vec<HashSet<i64>>,
}

impl Acc {
    pub(crate) fn new(n: usize, want_unique: bool) -> Acc {
        Acc {
            count: vec![0; n],
            sum: vec![0.0; n],
            unique: if want_unique {
                vec![HashSet::new(); n]
            } else {
                Vec::new()
            },
        }
    }
}

/// A property (its JSON text, `None` when missing) as a dimension: strings as they are,
/// other JSON as its text, missing as "".
pub(crate) fn dimension(raw: Option<&str>) -> (String, Option<Value>) {
    match raw {
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::String(s)) => (s.clone(), Some(Value::String(s))),
            Ok(Value::Null) => (String::new(), Some(Value::Null)),
            Ok(other) => (other.to_string(), Some(other)),
            Err(_) => (text.to_owned(), Some(Value::String(text.to_owned()))),
        },
        None => (String::new(), None),
    }
}

/// `sum + value`, held at the largest finite `f64` rather than overflowing to infinity (which
/// JSON cannot carry: a sum would read as `null`). Values beyond
/// [`MAX_EVENT_VALUE`](crate::limits::MAX_EVENT_VALUE) are no longer stored, so only events
/// stored before that limit can reach it; a value that is not finite counts as nothing.
pub(crate) fn saturating_add(sum: f64, value: f64) -> f64 {
    if !value.is_finite() {
        return sum;
    }
    (sum + value).clamp(f64::MIN, f64::MAX)
}

/// Whether a property's value equals the filter's (numbers compare as numbers).
pub(crate) fn equals(actual: Option<&Value>, wanted: &Value) -> bool {
    match (actual, wanted) {
        (Some(Value::Number(a)), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Some(a), b) => a == b,
        (None, Value::Null) => true,
        (None, _) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_saturate_instead_of_overflowing() {
        let mut sum = 0.0;
        for value in [f64::MAX, f64::MAX, 1.0, f64::INFINITY, f64::NAN] {
            sum = saturating_add(sum, value);
        }
        assert_eq!(sum, f64::MAX);
        assert_eq!(saturating_add(sum, -f64::MAX), 0.0);
        assert_eq!(saturating_add(-f64::MAX, -f64::MAX), f64::MIN);
    }

    fn at(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    fn starts(start: &str, end: &str, interval: Interval, tz: &str) -> Vec<String> {
        buckets(at(start), at(end), interval, &TimeZone::get(tz).unwrap())
            .unwrap()
            .iter()
            .map(|z| z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string())
            .collect()
    }

    #[test]
    fn days_in_a_timezone_across_dst() {
        // Europe/Berlin leaves summer time on 2026-10-25: that day has 25 hours.
        assert_eq!(
            starts(
                "2026-10-24T00:00:00Z",
                "2026-10-26T12:00:00Z",
                Interval::Day,
                "Europe/Berlin"
            ),
            [
                "2026-10-24T00:00:00+02:00",
                "2026-10-25T00:00:00+02:00",
                "2026-10-26T00:00:00+01:00"
            ]
        );
    }

    #[test]
    fn weeks_start_on_monday_and_months_on_the_first() {
        assert_eq!(
            starts(
                "2026-07-08T10:00:00Z",
                "2026-07-20T00:00:00Z",
                Interval::Week,
                "UTC"
            ),
            ["2026-07-06T00:00:00+00:00", "2026-07-13T00:00:00+00:00"]
        );
        assert_eq!(
            starts(
                "2026-01-31T23:00:00Z",
                "2026-03-01T00:00:00Z",
                Interval::Month,
                "America/New_York"
            ),
            ["2026-01-01T00:00:00-05:00", "2026-02-01T00:00:00-05:00"]
        );
        assert_eq!(
            starts(
                "2026-01-01T00:30:00Z",
                "2026-01-01T02:00:00Z",
                Interval::Hour,
                "Asia/Kolkata"
            ),
            ["2026-01-01T06:00:00+05:30", "2026-01-01T07:00:00+05:30"]
        );
    }

    #[test]
    fn property_values_as_dimensions_and_filters() {
        let text = Some;
        assert_eq!(dimension(text("\"red\"")).0, "red");
        assert_eq!(dimension(text("12")).0, "12");
        assert_eq!(dimension(text("true")).0, "true");
        assert_eq!(dimension(None).0, "");
        assert!(equals(
            dimension(text("12.0")).1.as_ref(),
            &serde_json::json!(12)
        ));
        assert!(!equals(None, &serde_json::json!("x")));
    }
}
