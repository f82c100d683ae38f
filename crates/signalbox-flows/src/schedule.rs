//! Time arithmetic of delays and date triggers, in a profile's or the account's timezone.
//! Pure: `now` is always an argument.

use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use serde_json::Value;

use crate::definition::{DateTrigger, DateUnit, DelayUnit, Recurrence, TimeDelay, TimezoneChoice};

/// The hour of the day, local time, at which date-triggered runs start.
pub const DATE_TRIGGER_TIME: Time = Time::constant(9, 0, 0, 0);

/// The timezone a delay or trigger reads: its own choice, the profile's `location.timezone`
/// when valid, else the account's.
pub fn resolve_timezone(
    choice: &TimezoneChoice,
    profile_tz: Option<&str>,
    account: &str,
) -> TimeZone {
    let account_tz = || TimeZone::get(account).unwrap_or(TimeZone::UTC);
    match choice {
        TimezoneChoice::Named(name) => TimeZone::get(name).unwrap_or_else(|_| account_tz()),
        TimezoneChoice::Account => account_tz(),
        TimezoneChoice::Profile => profile_tz
            .and_then(|name| TimeZone::get(name).ok())
            .unwrap_or_else(account_tz),
    }
}

/// When a run that reaches `delay` at `now` moves on.
///
/// `value` `unit`s pass first. With `delay_until_time`, a delay in days lands on that time of
/// the day `value` days later (the same day for 0, or the next day if the time has passed);
/// a delay in minutes or hours lands on the next occurrence of that time after it elapsed.
/// With `delay_until_weekdays`, the result moves on to the first allowed weekday (keeping the
/// time of day). All in `tz`.
pub fn delay_until(now: Timestamp, delay: &TimeDelay, tz: &TimeZone) -> Timestamp {
    let elapsed = now.saturating_add(delay.duration()).unwrap_or(now);
    if delay.until_time.is_none() && delay.until_weekdays.is_empty() {
        return elapsed;
    }
    let local_now = now.to_zoned(tz.clone());
    let (mut date, time) = match (delay.until_time, delay.unit) {
        (Some(time), DelayUnit::Days) => {
            let date = local_now
                .date()
                .checked_add(delay.value.days())
                .unwrap_or(local_now.date());
            let date = if delay.value == 0 && local_now.time() > time {
                date.tomorrow().unwrap_or(date)
            } else {
                date
            };
            (date, time)
        }
        (Some(time), _) => {
            let local = elapsed.to_zoned(tz.clone());
            let date = if local.time() > time {
                local.date().tomorrow().unwrap_or(local.date())
            } else {
                local.date()
            };
            (date, time)
        }
        (None, _) => {
            let local = elapsed.to_zoned(tz.clone());
            (local.date(), local.time())
        }
    };
    if !delay.until_weekdays.is_empty() {
        for _ in 0..7 {
            if delay.until_weekdays.contains(&date.weekday()) {
                break;
            }
            date = date.tomorrow().unwrap_or(date);
        }
    }
    at_local(date, time, tz).max(now)
}

fn at_local(date: Date, time: Time, tz: &TimeZone) -> Timestamp {
    date.to_datetime(time)
        .to_zoned(tz.clone())
        .map(|z| z.timestamp())
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// A profile property's value as a calendar date: `YYYY-MM-DD`, an RFC 3339 timestamp, or
/// a datetime without offset.
pub fn date_of(value: &Value) -> Option<Date> {
    let text = value.as_str()?.trim();
    if let Ok(date) = text.parse::<Date>() {
        return Some(date);
    }
    if let Ok(ts) = text.parse::<Timestamp>() {
        return Some(ts.to_zoned(TimeZone::UTC).date());
    }
    text.parse::<jiff::civil::DateTime>()
        .ok()
        .map(|dt| dt.date())
}

/// The first instant after `after` at which a date trigger fires for a profile whose
/// property holds `date`; `None` when it never fires again.
pub fn next_date_trigger(
    trigger: &DateTrigger,
    date: Date,
    after: Timestamp,
    tz: &TimeZone,
) -> Option<Timestamp> {
    let fire = |d: Date| -> Option<Timestamp> {
        let day = match trigger.unit {
            DateUnit::Days => d.checked_sub(trigger.before.days()).ok()?,
            DateUnit::Weeks => d.checked_sub((trigger.before * 7).days()).ok()?,
            DateUnit::Months => d.checked_sub(trigger.before.months()).ok()?,
        };
        Some(at_local(day, DATE_TRIGGER_TIME, tz))
    };
    let local_after = after.to_zoned(tz.clone()).date();
    let candidates: Vec<Date> = match trigger.recurrence {
        Recurrence::Never => vec![date],
        Recurrence::Annually => (-1..=2)
            .filter_map(|k| {
                let year = local_after.year() + k;
                // 29 February falls on 28 February in other years.
                Date::new(year, date.month(), date.day())
                    .or_else(|_| Date::new(year, date.month(), date.day() - 1))
                    .ok()
            })
            .collect(),
        Recurrence::Monthly => (-1..=14)
            .filter_map(|k| {
                let first = local_after.first_of_month().checked_add(k.months()).ok()?;
                let day = date.day().min(first.days_in_month());
                Date::new(first.year(), first.month(), day).ok()
            })
            .collect(),
        Recurrence::Weekly => (-1..=14)
            .filter_map(|k| {
                let offset = (date.weekday().to_monday_zero_offset()
                    - local_after.weekday().to_monday_zero_offset())
                    as i64;
                local_after.checked_add((offset + 7 * k).days()).ok()
            })
            .collect(),
    };
    candidates
        .into_iter()
        .filter_map(fire)
        .filter(|t| *t > after)
        .min()
}

#[cfg(test)]
mod tests {
    use jiff::civil::Weekday;

    use super::*;

    fn delay(unit: DelayUnit, value: i64, time: Option<&str>, days: &[Weekday]) -> TimeDelay {
        TimeDelay {
            unit,
            value,
            until_time: time.map(|t| t.parse().unwrap()),
            until_weekdays: days.to_vec(),
            timezone: TimezoneChoice::Profile,
        }
    }

    #[test]
    fn plain_delays_add_their_duration() {
        let now: Timestamp = "2026-03-02T10:00:00Z".parse().unwrap();
        let d = delay(DelayUnit::Hours, 4, None, &[]);
        assert_eq!(
            delay_until(now, &d, &TimeZone::UTC).to_string(),
            "2026-03-02T14:00:00Z"
        );
    }

    #[test]
    fn days_until_a_time_land_on_that_day_in_the_zone() {
        // 10:00 UTC is 05:00 in New York (EST); one day later at 09:00 New York = 14:00 UTC.
        let now: Timestamp = "2026-03-02T10:00:00Z".parse().unwrap();
        let tz = TimeZone::get("America/New_York").unwrap();
        let d = delay(DelayUnit::Days, 1, Some("09:00"), &[]);
        assert_eq!(
            delay_until(now, &d, &tz).to_string(),
            "2026-03-03T14:00:00Z"
        );
    }

    #[test]
    fn weekdays_move_to_the_next_allowed_day() {
        // Friday 2026-03-06 12:00 UTC + 1 hour → only Mondays → Monday 2026-03-09 at 13:00.
        let now: Timestamp = "2026-03-06T12:00:00Z".parse().unwrap();
        let d = delay(DelayUnit::Hours, 1, None, &[Weekday::Monday]);
        assert_eq!(
            delay_until(now, &d, &TimeZone::UTC).to_string(),
            "2026-03-09T13:00:00Z"
        );
    }

    #[test]
    fn annual_dates_fire_before_the_anniversary() {
        let trigger = DateTrigger {
            property: "Birthday".into(),
            unit: DateUnit::Days,
            before: 3,
            recurrence: Recurrence::Annually,
            timezone: TimezoneChoice::Account,
        };
        let after: Timestamp = "2026-03-01T00:00:00Z".parse().unwrap();
        let date: Date = "1990-03-10".parse().unwrap();
        assert_eq!(
            next_date_trigger(&trigger, date, after, &TimeZone::UTC)
                .unwrap()
                .to_string(),
            "2026-03-07T09:00:00Z"
        );
        let later: Timestamp = "2026-03-08T00:00:00Z".parse().unwrap();
        assert_eq!(
            next_date_trigger(&trigger, date, later, &TimeZone::UTC)
                .unwrap()
                .to_string(),
            "2027-03-07T09:00:00Z"
        );
    }
}
