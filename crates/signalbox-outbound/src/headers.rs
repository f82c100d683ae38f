//! Request headers a caller may set. `Host` would let a request reach another virtual host
//! than its URL names; hop-by-hop headers (RFC 9110 §7.6.1) and the framing headers
//! (`Content-Length`, `Transfer-Encoding`) belong to the connection, which the client
//! manages itself: a caller's value could split or smuggle requests.

use reqwest::header::{HeaderName, HeaderValue};

use crate::error::OutboundError;

/// Headers refused by name (lowercase), with the reason.
const FORBIDDEN: &[(&str, &str)] = &[
    ("host", "the destination is the URL's host"),
    ("connection", "hop-by-hop headers are set by the client"),
    ("keep-alive", "hop-by-hop headers are set by the client"),
    ("te", "hop-by-hop headers are set by the client"),
    ("trailer", "hop-by-hop headers are set by the client"),
    ("upgrade", "hop-by-hop headers are set by the client"),
    (
        "transfer-encoding",
        "the message framing is set by the client",
    ),
    ("content-length", "the message framing is set by the client"),
];

/// Checks a header name a caller wants to send: refuses `Host`, hop-by-hop headers
/// (`Connection`, `Keep-Alive`, `Proxy-*`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`),
/// `Content-Length`, and names HTTP does not allow.
pub fn check_header_name(name: &str) -> Result<HeaderName, OutboundError> {
    let parsed =
        HeaderName::from_bytes(name.as_bytes()).map_err(|_| OutboundError::InvalidHeader {
            name: name.to_owned(),
            reason: "not a valid header name",
        })?;
    let lower = parsed.as_str();
    if let Some((_, reason)) = FORBIDDEN.iter().find(|(n, _)| *n == lower) {
        return Err(OutboundError::ForbiddenHeader {
            name: name.to_owned(),
            reason,
        });
    }
    if lower.starts_with("proxy-") {
        return Err(OutboundError::ForbiddenHeader {
            name: name.to_owned(),
            reason: "proxy headers are hop-by-hop",
        });
    }
    Ok(parsed)
}

/// Checks a header a caller wants to send, name and value. The value is never echoed.
pub fn check_header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), OutboundError> {
    let name_parsed = check_header_name(name)?;
    let value = HeaderValue::from_str(value).map_err(|_| OutboundError::InvalidHeader {
        name: name.to_owned(),
        reason: "the value has characters a header cannot carry",
    })?;
    Ok((name_parsed, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_hop_by_hop_and_framing_headers_are_refused_in_any_case() {
        for name in [
            "Host",
            "host",
            "Connection",
            "Keep-Alive",
            "Proxy-Authorization",
            "proxy-connection",
            "Proxy-Authenticate",
            "TE",
            "Trailer",
            "Transfer-Encoding",
            "Upgrade",
            "Content-Length",
        ] {
            match check_header_name(name) {
                Err(OutboundError::ForbiddenHeader { name: refused, .. }) => {
                    assert_eq!(refused, name)
                }
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn ordinary_headers_pass() {
        for name in [
            "Authorization",
            "Content-Type",
            "X-Shop",
            "Idempotency-Key",
            "User-Agent",
        ] {
            assert!(check_header_name(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn invalid_names_and_values_are_refused_without_echoing_the_value() {
        assert!(matches!(
            check_header_name("bad header"),
            Err(OutboundError::InvalidHeader { .. })
        ));
        let error = check_header("Authorization", "Bearer secret\nX-Injected: 1").unwrap_err();
        assert!(matches!(error, OutboundError::InvalidHeader { .. }));
        assert!(!error.to_string().contains("secret"), "{error}");
    }
}
