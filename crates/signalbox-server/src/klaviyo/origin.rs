//! `Signalbox-Origin: segment`: a write forwarded from a Segment source.
//!
//! Another Signalbox's `klaviyo` destination forwards a Segment source's calls to this API and
//! marks each write with this header. Such a write is applied as usual, but it is not a change
//! made in Signalbox: it makes no outbox row (so the reverse sync never sends it back to
//! Segment), and it marks the profiles it touches as updated through Segment. Only private
//! keys with the write scopes can write at all, so the header grants nothing new.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use signalbox_engage::{Engage, WriteOrigin};

use super::error::ApiError;

/// The header's name, as it is documented (HTTP header names are case-insensitive).
pub const HEADER: &str = "Signalbox-Origin";

/// Where a write comes from: [`WriteOrigin::Segment`] with `Signalbox-Origin: segment`,
/// [`WriteOrigin::Signalbox`] without the header. Any other value is a 400 naming the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestOrigin(pub WriteOrigin);

impl RequestOrigin {
    /// The engine, writing as this origin.
    pub fn engage(self, engage: &Engage) -> Engage {
        engage.with_origin(self.0)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestOrigin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        origin(&parts.headers).map(RequestOrigin)
    }
}

/// Reads the header: absent is a write made in Signalbox; `segment` (any case) one forwarded
/// from a Segment source.
pub fn origin(headers: &HeaderMap) -> Result<WriteOrigin, ApiError> {
    let mut values = headers.get_all(HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(WriteOrigin::Signalbox);
    };
    let refused = || {
        ApiError::invalid_parameter(
            HEADER,
            "the 'Signalbox-Origin' header must be 'segment' (a write forwarded from a Segment \
             source), sent once, or be absent",
        )
    };
    if values.next().is_some() {
        return Err(refused());
    }
    match value.to_str().map(str::trim) {
        Ok(text) if text.eq_ignore_ascii_case(WriteOrigin::Segment.as_str()) => {
            Ok(WriteOrigin::Segment)
        }
        _ => Err(refused()),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn with(values: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(HEADER, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn absent_is_signalbox_and_segment_is_segment() {
        assert_eq!(origin(&with(&[])).unwrap(), WriteOrigin::Signalbox);
        for value in ["segment", "Segment", " SEGMENT "] {
            assert_eq!(origin(&with(&[value])).unwrap(), WriteOrigin::Segment);
        }
    }

    #[test]
    fn anything_else_is_refused() {
        for values in [
            &["signalbox"][..],
            &[""],
            &["segment, segment"],
            &["segment", "segment"],
        ] {
            let err = origin(&with(values)).unwrap_err();
            assert_eq!(
                err.status(),
                axum::http::StatusCode::BAD_REQUEST,
                "{values:?}"
            );
        }
    }
}
