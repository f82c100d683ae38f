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
use serde_json::Value;

use crate::error::{EngageError, EngageResult};
use crate::model::{AggregateQuery, AggregateResult, AggregateRow, Interval, Measurement};

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

/// An aggregate query, checked: its buckets in the timezone and what it measures.
pub(crate) struct AggregatePlan<'q> {
    q: &'q AggregateQuery,
    dates: Vec<Zoned>,
    /// Where each bucket ends, in microseconds (the last one open-ended).
    bounds: Vec<i64>,
    measurements: Vec<Measurement>,
    want_unique: bool,
}

impl<'q> AggregatePlan<'q> {
    /// Refuses an empty range, an unknown timezone and too many buckets.
    pub(crate) fn new(q: &'q AggregateQuery) -> EngageResult<AggregatePlan<'q>> {
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
        let tz = TimeZone::get(tz_name).map_err(|_| {
            EngageError::invalid("timezone", format!("unknown timezone {tz_name:?}"))
        })?;
        let dates = buckets(q.start, q.end, q.interval, &tz)?;
        let bounds = dates
            .iter()
            .skip(1)
            .map(|z| z.timestamp().as_microsecond())
            .chain(std::iter::once(i64::MAX))
            .collect();
        let measurements = if q.measurements.is_empty() {
            vec![Measurement::Count]
        } else {
            q.measurements.clone()
        };
        let want_unique = measurements.contains(&Measurement::Unique);
        Ok(AggregatePlan {
            q,
            dates,
            bounds,
            measurements,
            want_unique,
        })
    }

    /// Neither split, nor filter, nor distinct profiles: the store counts and sums each
    /// bucket's range itself ([`AggregatePlan::ranges`], [`AggregatePlan::totals`]).
    pub(crate) fn totals_only(&self) -> bool {
        self.q.by.is_empty() && self.q.property_equals.is_empty() && !self.want_unique
    }

    pub(crate) fn wants_sum(&self) -> bool {
        self.measurements.contains(&Measurement::SumValue)
    }

    /// `[from, until)` in microseconds of each bucket, within the query's range.
    pub(crate) fn ranges(&self) -> Vec<(i64, i64)> {
        let end = self.q.end.as_microsecond();
        let mut from = self.q.start.as_microsecond();
        self.bounds
            .iter()
            .map(|&until| {
                let until = until.min(end);
                let range = (from, until);
                from = until;
                range
            })
            .collect()
    }

    /// The result from `(count, sum)` of each of [`AggregatePlan::ranges`].
    pub(crate) fn totals(self, per_bucket: Vec<(i64, f64)>) -> AggregateResult {
        let want_sum = self.wants_sum();
        let (count, sum): (Vec<u64>, Vec<f64>) = per_bucket
            .into_iter()
            .map(|(n, total)| (n.max(0) as u64, saturating_add(0.0, total)))
            .unzip();
        let row = AggregateRow {
            dimensions: Vec::new(),
            count: if self.measurements.contains(&Measurement::Count) {
                count
            } else {
                Vec::new()
            },
            unique: Vec::new(),
            sum_value: if want_sum { sum } else { Vec::new() },
        };
        AggregateResult {
            dates: self.dates,
            rows: vec![row],
        }
    }

    /// The properties each event is read with: the `by` ones, then the filters'. A name the
    /// stores cannot address (a quote or a backslash in it) is refused.
    pub(crate) fn properties(&self) -> EngageResult<Vec<&'q str>> {
        let q = self.q;
        q.by.iter()
            .chain(q.property_equals.iter().map(|(k, _)| k))
            .map(|key| {
                if key.contains('"') || key.contains('\\') {
                    return Err(EngageError::invalid(
                        "by",
                        format!("property name {key:?} cannot be aggregated on"),
                    ));
                }
                Ok(key.as_str())
            })
            .collect()
    }

    /// Groups events read in time order, with their [`AggregatePlan::properties`].
    pub(crate) fn grouper(self) -> Grouper<'q> {
        Grouper {
            plan: self,
            groups: BTreeMap::new(),
            bucket: 0,
        }
    }
}

/// Events of an aggregate, added in time order, by group.
pub(crate) struct Grouper<'q> {
    plan: AggregatePlan<'q>,
    groups: BTreeMap<Vec<String>, Acc>,
    bucket: usize,
}

impl Grouper<'_> {
    /// One event; `properties` are the JSON texts of [`AggregatePlan::properties`] (`None`
    /// when missing).
    pub(crate) fn add(
        &mut self,
        time_us: i64,
        profile_pk: i64,
        value: Option<f64>,
        properties: &[Option<&str>],
    ) {
        let plan = &self.plan;
        while time_us >= plan.bounds[self.bucket] {
            self.bucket += 1;
        }
        let n_by = plan.q.by.len();
        let dims: Vec<String> = properties[..n_by]
            .iter()
            .map(|raw| dimension(*raw).0)
            .collect();
        let keep = plan
            .q
            .property_equals
            .iter()
            .zip(&properties[n_by..])
            .all(|((_, wanted), raw)| equals(dimension(*raw).1.as_ref(), wanted));
        if !keep {
            return;
        }
        let (n, want_unique) = (plan.dates.len(), plan.want_unique);
        let acc = self
            .groups
            .entry(dims)
            .or_insert_with(|| Acc::new(n, want_unique));
        let bucket = self.bucket;
        acc.count[bucket] += 1;
        if let Some(value) = value {
            acc.sum[bucket] = saturating_add(acc.sum[bucket], value);
        }
        if want_unique {
            acc.unique[bucket].insert(profile_pk);
        }
    }

    pub(crate) fn finish(self) -> AggregateResult {
        let Grouper {
            plan, mut groups, ..
        } = self;
        let want_unique = plan.want_unique;
        if groups.is_empty() && plan.q.by.is_empty() {
            groups.insert(Vec::new(), Acc::new(plan.dates.len(), want_unique));
        }
        let measurements = &plan.measurements;
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
        AggregateResult {
            dates: plan.dates,
            rows,
        }
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
