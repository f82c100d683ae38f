//! Date filters against instants: windows, anniversaries, and the instants where an answer can
//! change as time passes. Everything is UTC, as Klaviyo's segmentation is.

use std::ops::Bound;

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde_json::Value;

use crate::ast::{DateFilter, RelativeSpan, TimeUnit};
use crate::facts::{EvalContext, TimeWindow};

/// Reads an ISO 8601 instant: with an offset (`2024-01-31T10:00:00+02:00`, `…Z`), or without
/// one (`2024-01-31T10:00:00`, `2024-01-31 10:00:00`, `2024-01-31`), then taken as UTC.
pub(crate) fn parse_instant(text: &str) -> Option<Timestamp> {
    if let Ok(instant) = text.parse::<Timestamp>() {
        return Some(instant);
    }
    let civil = text
        .parse::<DateTime>()
        .or_else(|_| text.parse::<Date>().map(DateTime::from))
        .ok()?;
    civil.to_zoned(TimeZone::UTC).ok().map(|z| z.timestamp())
}

/// A property value as an instant: an ISO 8601 string or integer Unix seconds.
pub(crate) fn instant_of(value: &Value) -> Option<Timestamp> {
    match value {
        Value::String(text) => parse_instant(text),
        Value::Number(n) => n.as_i64().and_then(|s| Timestamp::from_second(s).ok()),
        _ => None,
    }
}

/// `instant + seconds`, saturating at the ends of the timestamp range.
pub(crate) fn shift(instant: Timestamp, seconds: i64) -> Timestamp {
    instant
        .checked_add(SignedDuration::from_secs(seconds))
        .unwrap_or(if seconds > 0 {
            Timestamp::MAX
        } else {
            Timestamp::MIN
        })
}

fn span_seconds(span: RelativeSpan) -> i64 {
    i64::from(span.quantity) * span.unit.seconds()
}

fn range_seconds(start: u32, end: u32, unit: TimeUnit) -> (i64, i64) {
    let (lo, hi) = (start.min(end), start.max(end));
    (
        i64::from(lo) * unit.seconds(),
        i64::from(hi) * unit.seconds(),
    )
}

/// The filter as an interval of instants at `now`; `None` for anniversary and calendar
/// operators (not intervals) and for `flow-start` without a flow start.
pub(crate) fn interval(
    filter: &DateFilter,
    now: Timestamp,
    ctx: &EvalContext,
) -> Option<TimeWindow> {
    use Bound::{Excluded, Included, Unbounded};
    let window = |start, end| Some(TimeWindow { start, end });
    match *filter {
        DateFilter::AllTime => Some(TimeWindow::ALL),
        DateFilter::Before(date) => window(Unbounded, Excluded(date)),
        DateFilter::After(date) => window(Excluded(date), Unbounded),
        DateFilter::BetweenStatic { start, end } => window(Included(start), Included(end)),
        DateFilter::InTheLast(span) => {
            window(Excluded(shift(now, -span_seconds(span))), Included(now))
        }
        DateFilter::AtLeast(span) => window(Unbounded, Included(shift(now, -span_seconds(span)))),
        DateFilter::InTheNext(span) => {
            window(Excluded(now), Included(shift(now, span_seconds(span))))
        }
        DateFilter::BetweenRelative { start, end, unit } => {
            let (lo, hi) = range_seconds(start, end, unit);
            window(Excluded(shift(now, -hi)), Included(shift(now, -lo)))
        }
        DateFilter::FlowStart => window(Included(ctx.flow_start?), Included(now)),
        DateFilter::AnniversaryLast(_)
        | DateFilter::AnniversaryNext(_)
        | DateFilter::Anniversary
        | DateFilter::AnniversaryMonth
        | DateFilter::CalendarMonth(_) => None,
    }
}

/// Whether the instant `date` passes the filter at `now`.
pub(crate) fn date_matches(
    filter: &DateFilter,
    date: Timestamp,
    now: Timestamp,
    ctx: &EvalContext,
) -> bool {
    if let Some(window) = interval(filter, now, ctx) {
        return window.contains(date);
    }
    let (d, n) = (utc(date), utc(now));
    match *filter {
        DateFilter::AnniversaryLast(span) => {
            let seconds = span_seconds(span);
            if seconds >= LONGEST_YEAR {
                return date <= now;
            }
            let from = shift(now, -seconds);
            (utc(from).year()..=n.year())
                .filter_map(|year| anniversary(date, year))
                .any(|a| a >= date && a > from && a <= now)
        }
        DateFilter::AnniversaryNext(span) => {
            let seconds = span_seconds(span);
            if seconds >= LONGEST_YEAR {
                return shift(date, -seconds) <= now;
            }
            let until = shift(now, seconds);
            (n.year()..=utc(until).year())
                .filter_map(|year| anniversary(date, year))
                .any(|a| a >= date && a > now && a <= until)
        }
        DateFilter::Anniversary => {
            anniversary_date(d.date(), n.year()) == Some(n.date()) && n.date() >= d.date()
        }
        DateFilter::AnniversaryMonth => {
            d.month() == n.month() && (n.year(), n.month()) >= (d.year(), d.month())
        }
        DateFilter::CalendarMonth(month) => i64::from(d.month()) == i64::from(month),
        // Intervals were handled above; `flow-start` without a start matches nothing.
        _ => false,
    }
}

/// Whether the filter's answer for one instant changes yearly (anniversaries).
pub(crate) fn is_periodic(filter: &DateFilter) -> bool {
    match *filter {
        DateFilter::AnniversaryLast(span) | DateFilter::AnniversaryNext(span) => {
            span_seconds(span) < LONGEST_YEAR
        }
        DateFilter::Anniversary | DateFilter::AnniversaryMonth => true,
        _ => false,
    }
}

/// Every instant at which `date_matches(filter, date, t, ctx)` can change value as `t` moves
/// forward. For periodic filters, only anniversaries in `years` are considered.
///
/// At each returned instant the new value already holds (windows are built so that entering
/// and leaving happen exactly there), so re-evaluating at that instant sees the change.
pub(crate) fn change_points(
    filter: &DateFilter,
    date: Timestamp,
    ctx: &EvalContext,
    years: std::ops::RangeInclusive<i16>,
    out: &mut Vec<Timestamp>,
) {
    match *filter {
        DateFilter::AllTime
        | DateFilter::Before(_)
        | DateFilter::After(_)
        | DateFilter::BetweenStatic { .. }
        | DateFilter::CalendarMonth(_) => {}
        // date ∈ (now − N, now] ⇔ date ≤ now < date + N
        DateFilter::InTheLast(span) => out.extend([date, shift(date, span_seconds(span))]),
        // date ≤ now − N ⇔ now ≥ date + N
        DateFilter::AtLeast(span) => out.push(shift(date, span_seconds(span))),
        // date ∈ (now, now + N] ⇔ date − N ≤ now < date
        DateFilter::InTheNext(span) => out.extend([shift(date, -span_seconds(span)), date]),
        // date ∈ (now − hi, now − lo] ⇔ date + lo ≤ now < date + hi
        DateFilter::BetweenRelative { start, end, unit } => {
            let (lo, hi) = range_seconds(start, end, unit);
            out.extend([shift(date, lo), shift(date, hi)]);
        }
        // date ∈ [start, now] ⇔ now ≥ date (once date ≥ start)
        DateFilter::FlowStart => {
            if ctx.flow_start.is_some_and(|start| date >= start) {
                out.push(date);
            }
        }
        DateFilter::AnniversaryLast(span) => {
            let seconds = span_seconds(span);
            if seconds >= LONGEST_YEAR {
                out.push(date);
                return;
            }
            for a in years
                .filter_map(|y| anniversary(date, y))
                .filter(|a| *a >= date)
            {
                out.extend([a, shift(a, seconds)]);
            }
        }
        DateFilter::AnniversaryNext(span) => {
            let seconds = span_seconds(span);
            if seconds >= LONGEST_YEAR {
                out.push(shift(date, -seconds));
                return;
            }
            for a in years
                .filter_map(|y| anniversary(date, y))
                .filter(|a| *a >= date)
            {
                out.extend([shift(a, -seconds), a]);
            }
        }
        DateFilter::Anniversary => {
            let first = utc(date).date();
            for day in years.filter_map(|y| anniversary_date(first, y)) {
                if day >= first {
                    out.extend(midnight(day));
                    out.extend(day.tomorrow().ok().and_then(midnight));
                }
            }
        }
        DateFilter::AnniversaryMonth => {
            let first = utc(date).date().first_of_month();
            for y in years {
                let Ok(month) = Date::new(y, first.month(), 1) else {
                    continue;
                };
                if month >= first {
                    out.extend(midnight(month));
                    let next = month.last_of_month().tomorrow().ok();
                    out.extend(next.and_then(midnight));
                }
            }
        }
    }
}

/// Longest gap between two anniversaries (a 29 February date seen from the 28th): 366 days.
const LONGEST_YEAR: i64 = 366 * 86_400;

pub(crate) fn utc(instant: Timestamp) -> DateTime {
    instant.to_zoned(TimeZone::UTC).datetime()
}

fn midnight(day: Date) -> Option<Timestamp> {
    day.to_zoned(TimeZone::UTC).ok().map(|z| z.timestamp())
}

/// The date's anniversary in `year`; 29 February falls on the 28th in other years.
fn anniversary_date(date: Date, year: i16) -> Option<Date> {
    Date::new(year, date.month(), date.day())
        .or_else(|_| Date::new(year, date.month(), date.day() - 1))
        .ok()
}

/// The instant's anniversary in `year`, at the same UTC time of day.
fn anniversary(instant: Timestamp, year: i16) -> Option<Timestamp> {
    let civil = utc(instant);
    let day = anniversary_date(civil.date(), year)?;
    day.to_datetime(civil.time())
        .to_zoned(TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn instants_parse_with_and_without_offsets() {
        let check = |text: &str, expected: &str| {
            assert_eq!(parse_instant(text), Some(ts(expected)), "{text}");
        };
        check("2024-01-31T10:00:00+02:00", "2024-01-31T08:00:00Z");
        check("2024-01-31T10:00:00Z", "2024-01-31T10:00:00Z");
        check("2024-01-31T10:00:00", "2024-01-31T10:00:00Z");
        check("2024-01-31 10:00:00", "2024-01-31T10:00:00Z");
        check("2024-01-31", "2024-01-31T00:00:00Z");
        assert_eq!(parse_instant("yesterday"), None);
        assert_eq!(parse_instant(""), None);
    }

    #[test]
    fn leap_day_anniversary_falls_on_the_28th() {
        let born = ts("2000-02-29T12:00:00Z");
        assert_eq!(anniversary(born, 2023), Some(ts("2023-02-28T12:00:00Z")));
        assert_eq!(anniversary(born, 2024), Some(ts("2024-02-29T12:00:00Z")));
    }

    #[test]
    fn shift_saturates() {
        assert_eq!(shift(Timestamp::MAX, 10), Timestamp::MAX);
        assert_eq!(shift(Timestamp::MIN, -10), Timestamp::MIN);
    }
}
