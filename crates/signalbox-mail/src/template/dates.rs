//! Dates for the `date`, `time` and `format_date_string` filters: parsing the forms events
//! carry, formatting with Django's format characters.
//!
//! A value with an offset keeps it (`2024-03-05T18:30:00+01:00` renders 18:30); a value
//! without one is UTC, as are Unix timestamps (seconds).

use jiff::civil::{Date, DateTime, Time};
use jiff::fmt::temporal::Pieces;
use jiff::tz::{Offset, TimeZone};
use jiff::{Timestamp, Zoned};
use minijinja::value::ValueKind;
use minijinja::Value;

/// A date in a template value, if it holds one.
pub(crate) fn parse(value: &Value) -> Option<Zoned> {
    match value.kind() {
        ValueKind::Number => {
            let seconds = f64::try_from(value.clone()).ok()?;
            let timestamp = Timestamp::from_millisecond((seconds * 1000.0) as i64).ok()?;
            Some(timestamp.to_zoned(TimeZone::UTC))
        }
        ValueKind::String => parse_text(value.as_str()?.trim()),
        _ => None,
    }
}

fn parse_text(text: &str) -> Option<Zoned> {
    if text.is_empty() {
        return None;
    }
    if let Ok(seconds) = text.parse::<i64>() {
        if text.len() >= 9 {
            return Some(
                Timestamp::from_second(seconds)
                    .ok()?
                    .to_zoned(TimeZone::UTC),
            );
        }
    }
    // `2024-03-05 18:30:00` as well as RFC 3339 / ISO 8601.
    let normalized;
    let text = if text.len() > 10 && text.as_bytes()[10] == b' ' {
        normalized = format!("{}T{}", &text[..10], &text[11..]);
        normalized.as_str()
    } else {
        text
    };
    let pieces = Pieces::parse(text).ok()?;
    let date: Date = pieces.date();
    let time: Time = pieces.time().unwrap_or(Time::midnight());
    let offset = match pieces.offset() {
        Some(jiff::fmt::temporal::PiecesOffset::Numeric(numeric)) => numeric.offset(),
        _ => Offset::UTC,
    };
    let datetime = DateTime::from_parts(date, time);
    datetime.to_zoned(TimeZone::fixed(offset)).ok()
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
/// Associated Press style, as Django's `N`.
const MONTHS_AP: [&str; 12] = [
    "Jan.", "Feb.", "March", "April", "May", "June", "July", "Aug.", "Sept.", "Oct.", "Nov.",
    "Dec.",
];
const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// Formats with Django's `date` format characters; a backslash escapes the next character.
pub(crate) fn format(moment: &Zoned, format: &str) -> String {
    let mut out = String::with_capacity(format.len() * 3);
    let mut chars = format.chars();
    let month = moment.month() as usize - 1;
    let weekday = moment.weekday().to_monday_zero_offset() as usize;
    let hour = moment.hour();
    let minute = moment.minute();
    let hour12 = match hour % 12 {
        0 => 12,
        h => h,
    };
    let offset_seconds = moment.offset().seconds();
    let offset_text = {
        let sign = if offset_seconds < 0 { '-' } else { '+' };
        let abs = offset_seconds.unsigned_abs();
        format!("{sign}{:02}{:02}", abs / 3600, abs % 3600 / 60)
    };
    while let Some(ch) = chars.next() {
        match ch {
            '\\' => {
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            }
            'd' => out.push_str(&format!("{:02}", moment.day())),
            'j' => out.push_str(&moment.day().to_string()),
            'D' => out.push_str(&WEEKDAYS[weekday][..3]),
            'l' => out.push_str(WEEKDAYS[weekday]),
            'w' => out.push_str(&moment.weekday().to_sunday_zero_offset().to_string()),
            'N' => out.push_str(MONTHS_AP[month]),
            'S' => out.push_str(match moment.day() {
                11..=13 => "th",
                d if d % 10 == 1 => "st",
                d if d % 10 == 2 => "nd",
                d if d % 10 == 3 => "rd",
                _ => "th",
            }),
            'z' => out.push_str(&moment.day_of_year().to_string()),
            'W' => out.push_str(&moment.date().iso_week_date().week().to_string()),
            'F' | 'E' => out.push_str(MONTHS[month]),
            'm' => out.push_str(&format!("{:02}", moment.month())),
            'M' => out.push_str(&MONTHS[month][..3]),
            'b' => out.push_str(&MONTHS[month][..3].to_ascii_lowercase()),
            'n' => out.push_str(&moment.month().to_string()),
            't' => out.push_str(&moment.days_in_month().to_string()),
            'y' => out.push_str(&format!("{:02}", moment.year().rem_euclid(100))),
            'Y' => out.push_str(&moment.year().to_string()),
            'L' => out.push_str(if moment.in_leap_year() {
                "True"
            } else {
                "False"
            }),
            'H' => out.push_str(&format!("{hour:02}")),
            'G' => out.push_str(&hour.to_string()),
            'h' => out.push_str(&format!("{hour12:02}")),
            'g' => out.push_str(&hour12.to_string()),
            'i' => out.push_str(&format!("{minute:02}")),
            's' => out.push_str(&format!("{:02}", moment.second())),
            'u' => out.push_str(&format!("{:06}", moment.subsec_nanosecond() / 1000)),
            'A' => out.push_str(if hour < 12 { "AM" } else { "PM" }),
            'a' => out.push_str(if hour < 12 { "a.m." } else { "p.m." }),
            'f' => out.push_str(&short_time(hour12, minute)),
            'P' => out.push_str(&match (hour, minute) {
                (0, 0) => "midnight".to_owned(),
                (12, 0) => "noon".to_owned(),
                _ => format!(
                    "{} {}",
                    short_time(hour12, minute),
                    if hour < 12 { "a.m." } else { "p.m." }
                ),
            }),
            'U' => out.push_str(&moment.timestamp().as_second().to_string()),
            'c' => out.push_str(
                &moment
                    .timestamp()
                    .display_with_offset(moment.offset())
                    .to_string(),
            ),
            'r' => out.push_str(&format!(
                "{}, {:02} {} {} {:02}:{:02}:{:02} {offset_text}",
                &WEEKDAYS[weekday][..3],
                moment.day(),
                &MONTHS[month][..3],
                moment.year(),
                hour,
                minute,
                moment.second()
            )),
            'O' => out.push_str(&offset_text),
            'Z' => out.push_str(&offset_seconds.to_string()),
            'e' | 'T' => out.push_str(if offset_seconds == 0 {
                "UTC"
            } else {
                &offset_text
            }),
            'I' => out.push('0'),
            other => out.push(other),
        }
    }
    out
}

fn short_time(hour12: i8, minute: i8) -> String {
    if minute == 0 {
        hour12.to_string()
    } else {
        format!("{hour12}:{minute:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, fmt: &str, expected: &str) {
        let moment = parse(&Value::from(input)).expect(input);
        assert_eq!(format(&moment, fmt), expected, "{input} with {fmt}");
    }

    #[test]
    fn forms_and_formats() {
        check("2024-03-05T18:30:00Z", "F j, Y", "March 5, 2024");
        check(
            "2024-03-05 18:30:00",
            "D d M Y H:i",
            "Tue 05 Mar 2024 18:30",
        );
        check("2024-03-05", "l jS \\o\\f F", "Tuesday 5th of March");
        check("2024-03-05T18:30:00+01:00", "P O", "6:30 p.m. +0100");
        check("2024-09-01T00:00:00Z", "N j, Y P", "Sept. 1, 2024 midnight");
        check("1709663400", "Y-m-d", "2024-03-05");
        check("2024-12-22T12:00:00.5Z", "g A", "12 PM");
    }

    #[test]
    fn non_dates_are_none() {
        assert!(parse(&Value::from("soon")).is_none());
        assert!(parse(&Value::from(vec![1, 2])).is_none());
    }
}
