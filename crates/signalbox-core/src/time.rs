//! Times as clients send them: ISO 8601 text, checked against the range Signalbox keeps.

use jiff::fmt::temporal::{Pieces, PiecesOffset};
use jiff::Timestamp;

/// The first year a client-given time may fall in. Times before the Unix epoch are almost
/// always a client's zero value, never a real moment of a call.
pub const EARLIEST_YEAR: i16 = 1970;
/// The last year a client-given time may fall in.
pub const LATEST_YEAR: i16 = 2200;
/// The largest UTC offset a time may carry, in seconds (±24:00).
pub const MAX_OFFSET_SECONDS: i32 = 24 * 3600;

/// Why a time's text is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error("is not an ISO 8601 date-time")]
    Unparseable,
    #[error("has a UTC offset beyond ±24:00")]
    OffsetOutOfRange,
    #[error("is outside the years {EARLIEST_YEAR} to {LATEST_YEAR}")]
    OutOfRange,
}

/// The first instant of [`EARLIEST_YEAR`].
pub fn earliest() -> Timestamp {
    Timestamp::from_second(0).expect("the epoch is a timestamp")
}

/// The first instant after [`LATEST_YEAR`].
pub fn after_latest() -> Timestamp {
    // 2201-01-01T00:00:00Z.
    Timestamp::from_second(7_289_654_400).expect("2201 is a timestamp")
}

/// Whether a time falls in the years [`EARLIEST_YEAR`] to [`LATEST_YEAR`].
pub fn in_range(ts: Timestamp) -> bool {
    ts >= earliest() && ts < after_latest()
}

/// Parses an ISO 8601 date-time: `Z` or a numeric offset up to ±24:00, any fraction; a time
/// without an offset is UTC. The time must fall in the years [`EARLIEST_YEAR`] to
/// [`LATEST_YEAR`].
pub fn parse(text: &str) -> Result<Timestamp, TimeError> {
    if let Ok(pieces) = Pieces::parse(text) {
        if let Some(PiecesOffset::Numeric(offset)) = pieces.offset() {
            if offset.offset().seconds().abs() > MAX_OFFSET_SECONDS {
                return Err(TimeError::OffsetOutOfRange);
            }
        }
    }
    let ts = match text.parse::<Timestamp>() {
        Ok(ts) => ts,
        Err(_) => {
            let civil = text
                .parse::<jiff::civil::DateTime>()
                .map_err(|_| TimeError::Unparseable)?;
            civil
                .to_zoned(jiff::tz::TimeZone::UTC)
                .map_err(|_| TimeError::Unparseable)?
                .timestamp()
        }
    };
    if !in_range(ts) {
        return Err(TimeError::OutOfRange);
    }
    Ok(ts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_the_documented_years() {
        assert_eq!(earliest().to_string(), "1970-01-01T00:00:00Z");
        assert_eq!(after_latest().to_string(), "2201-01-01T00:00:00Z");
    }

    #[test]
    fn parses_offsets_fractions_and_naive_times() {
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        assert_eq!(
            parse("2026-01-01T01:00:00+01:00"),
            Ok(at("2026-01-01T00:00:00Z"))
        );
        assert_eq!(parse("2026-01-01T00:00:00"), Ok(at("2026-01-01T00:00:00Z")));
        assert_eq!(
            parse("2026-01-02T00:00:00+24:00"),
            Ok(at("2026-01-01T00:00:00Z"))
        );
        assert_eq!(parse("1970-01-01T00:00:00Z"), Ok(earliest()));
        assert_eq!(
            parse("2200-12-31T23:59:59.999999Z"),
            Ok(at("2200-12-31T23:59:59.999999Z"))
        );
    }

    #[test]
    fn refuses_what_is_out_of_range() {
        assert_eq!(parse("soon"), Err(TimeError::Unparseable));
        assert_eq!(
            parse("2026-01-01T00:00:00+25:00"),
            Err(TimeError::OffsetOutOfRange)
        );
        assert_eq!(
            parse("2026-01-01T00:00:00-24:01"),
            Err(TimeError::OffsetOutOfRange)
        );
        for text in [
            "9999-01-01T00:00:00Z",
            "-009999-06-01T00:00:00Z",
            "1969-12-31T23:59:59Z",
            "2201-01-01T00:00:00Z",
            "0000-01-01T00:00:00",
        ] {
            assert_eq!(parse(text), Err(TimeError::OutOfRange), "{text}");
        }
    }
}
