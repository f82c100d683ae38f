//! Metric aggregates: count, distinct profiles and sum of value per hour, day, week or month
//! of a timezone, optionally split by event properties.
//!
//! One pass over the metric's events in the range, in time order, through the
//! `(metric, time, profile, value)` index (no table reads unless properties are asked for);
//! bucket boundaries are computed once in the timezone (so DST days are 23 or 25 hours long)
//! and each event advances a pointer along them.

use std::collections::{BTreeMap, HashSet};

use jiff::tz::TimeZone;
use jiff::{ToSpan, Zoned};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params_from_iter, Connection};
use serde_json::Value;

use crate::error::{EngageError, EngageResult};
use crate::model::{AggregateQuery, AggregateResult, AggregateRow, Interval, Measurement};
use crate::query::metric_key;

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
struct Acc {
    count: Vec<u64>,
    sum: Vec<f64>,
    unique: Vec<HashSet<i64>>,
}

impl Acc {
    fn new(n: usize, want_unique: bool) -> Acc {
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

/// A property as a dimension: strings as they are, other JSON as its text, missing as "".
fn dimension(raw: &SqlValue) -> (String, Option<Value>) {
    match raw {
        SqlValue::Text(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::String(s)) => (s.clone(), Some(Value::String(s))),
            Ok(Value::Null) => (String::new(), Some(Value::Null)),
            Ok(other) => (other.to_string(), Some(other)),
            Err(_) => (text.clone(), Some(Value::String(text.clone()))),
        },
        _ => (String::new(), None),
    }
}

/// `sum + value`, held at the largest finite `f64` rather than overflowing to infinity (which
/// JSON cannot carry: a sum would read as `null`). Values beyond
/// [`MAX_EVENT_VALUE`](crate::limits::MAX_EVENT_VALUE) are no longer stored, so only events
/// stored before that limit can reach it; a value that is not finite counts as nothing.
fn saturating_add(sum: f64, value: f64) -> f64 {
    if !value.is_finite() {
        return sum;
    }
    (sum + value).clamp(f64::MIN, f64::MAX)
}

/// Whether a property's value equals the filter's (numbers compare as numbers).
fn equals(actual: Option<&Value>, wanted: &Value) -> bool {
    match (actual, wanted) {
        (Some(Value::Number(a)), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Some(a), b) => a == b,
        (None, Value::Null) => true,
        (None, _) => false,
    }
}

fn json_path(key: &str) -> EngageResult<String> {
    if key.contains('"') || key.contains('\\') {
        return Err(EngageError::invalid(
            "by",
            format!("property name {key:?} cannot be aggregated on"),
        ));
    }
    Ok(format!("$.\"{key}\""))
}

pub(crate) fn aggregate(conn: &Connection, q: &AggregateQuery) -> EngageResult<AggregateResult> {
    if q.end <= q.start {
        return Err(EngageError::invalid(
            "filter",
            "the datetime range is empty (end must be after start)",
        ));
    }
    let tz_name = if q.timezone.trim().is_empty() {
        "UTC"
    } else {
        q.timezone.trim()
    };
    let tz = TimeZone::get(tz_name)
        .map_err(|_| EngageError::invalid("timezone", format!("unknown timezone {tz_name:?}")))?;
    let dates = buckets(q.start, q.end, q.interval, &tz)?;
    let bounds: Vec<i64> = dates
        .iter()
        .skip(1)
        .map(|z| z.timestamp().as_microsecond())
        .chain(std::iter::once(i64::MAX))
        .collect();
    let Some(metric_pk) = metric_key(conn, &q.metric_id)? else {
        return Err(EngageError::not_found(format!("metric {}", q.metric_id)));
    };
    let measurements = if q.measurements.is_empty() {
        vec![Measurement::Count]
    } else {
        q.measurements.clone()
    };
    let want_unique = measurements.contains(&Measurement::Unique);

    if q.by.is_empty() && q.property_equals.is_empty() && !want_unique {
        return totals(
            conn,
            metric_pk,
            &measurements,
            dates,
            &bounds,
            (q.start, q.end),
        );
    }

    // The properties to read: `by` first, then the filters'.
    let mut paths = Vec::new();
    for key in q.by.iter().chain(q.property_equals.iter().map(|(k, _)| k)) {
        paths.push(json_path(key)?);
    }
    let mut sql = String::from("SELECT time_us, profile_pk, value");
    for _ in &paths {
        sql.push_str(", properties -> ?");
    }
    sql.push_str(
        " FROM events WHERE metric_pk = ? AND time_us >= ? AND time_us < ? ORDER BY time_us",
    );
    let mut args: Vec<SqlValue> = paths.into_iter().map(SqlValue::Text).collect();
    args.extend([
        SqlValue::Integer(metric_pk),
        SqlValue::Integer(q.start.as_microsecond()),
        SqlValue::Integer(q.end.as_microsecond()),
    ]);

    let n = dates.len();
    let n_by = q.by.len();
    let mut groups: BTreeMap<Vec<String>, Acc> = BTreeMap::new();
    let mut bucket = 0usize;
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query(params_from_iter(args))?;
    while let Some(row) = rows.next()? {
        let time_us: i64 = row.get(0)?;
        while time_us >= bounds[bucket] {
            bucket += 1;
        }
        let mut dims = Vec::with_capacity(n_by);
        let mut keep = true;
        for i in 0..n_by {
            let raw: SqlValue = row.get(3 + i)?;
            dims.push(dimension(&raw).0);
        }
        for (i, (_, wanted)) in q.property_equals.iter().enumerate() {
            let raw: SqlValue = row.get(3 + n_by + i)?;
            if !equals(dimension(&raw).1.as_ref(), wanted) {
                keep = false;
                break;
            }
        }
        if !keep {
            continue;
        }
        let acc = groups
            .entry(dims)
            .or_insert_with(|| Acc::new(n, want_unique));
        acc.count[bucket] += 1;
        if let Some(value) = row.get::<_, Option<f64>>(2)? {
            acc.sum[bucket] = saturating_add(acc.sum[bucket], value);
        }
        if want_unique {
            acc.unique[bucket].insert(row.get(1)?);
        }
    }
    if groups.is_empty() && q.by.is_empty() {
        groups.insert(Vec::new(), Acc::new(n, want_unique));
    }
    let rows = groups
        .into_iter()
        .map(|(dimensions, acc)| AggregateRow {
            dimensions,
            count: if measurements.contains(&Measurement::Count) {
                acc.count
            } else {
                Vec::new()
            },
            unique: if want_unique {
                acc.unique.iter().map(|s| s.len() as u64).collect()
            } else {
                Vec::new()
            },
            sum_value: if measurements.contains(&Measurement::SumValue) {
                acc.sum
            } else {
                Vec::new()
            },
        })
        .collect();
    Ok(AggregateResult { dates, rows })
}

/// Count and sum per bucket with neither split nor filter: one `count(*)` over the index
/// range of each bucket, counted inside SQLite (no row comes out to be stepped through), so a
/// chart of a busy metric costs a range count per bar rather than a read per event.
fn totals(
    conn: &Connection,
    metric_pk: i64,
    measurements: &[Measurement],
    dates: Vec<Zoned>,
    bounds: &[i64],
    (start, end): (jiff::Timestamp, jiff::Timestamp),
) -> EngageResult<AggregateResult> {
    let want_sum = measurements.contains(&Measurement::SumValue);
    let sql = if want_sum {
        "SELECT count(*), total(value) FROM events
         WHERE metric_pk = ?1 AND time_us >= ?2 AND time_us < ?3"
    } else {
        "SELECT count(*), 0.0 FROM events
         WHERE metric_pk = ?1 AND time_us >= ?2 AND time_us < ?3"
    };
    let mut stmt = conn.prepare_cached(sql)?;
    let mut count = Vec::with_capacity(dates.len());
    let mut sum = Vec::with_capacity(dates.len());
    let mut from = start.as_microsecond();
    for &until in bounds {
        let until = until.min(end.as_microsecond());
        let (n, total): (i64, f64) = stmt
            .query_row(rusqlite::params![metric_pk, from, until], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        count.push(n as u64);
        sum.push(saturating_add(0.0, total));
        from = until;
    }
    let row = AggregateRow {
        dimensions: Vec::new(),
        count: if measurements.contains(&Measurement::Count) {
            count
        } else {
            Vec::new()
        },
        unique: Vec::new(),
        sum_value: if want_sum { sum } else { Vec::new() },
    };
    Ok(AggregateResult {
        dates,
        rows: vec![row],
    })
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
        let text = |s: &str| SqlValue::Text(s.into());
        assert_eq!(dimension(&text("\"red\"")).0, "red");
        assert_eq!(dimension(&text("12")).0, "12");
        assert_eq!(dimension(&text("true")).0, "true");
        assert_eq!(dimension(&SqlValue::Null).0, "");
        assert!(equals(
            dimension(&text("12.0")).1.as_ref(),
            &serde_json::json!(12)
        ));
        assert!(!equals(None, &serde_json::json!("x")));
    }
}
