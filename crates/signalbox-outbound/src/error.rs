//! What an outbound request can fail with. Messages name what was refused and why; header
//! values never appear in them (they often carry credentials).

use std::net::IpAddr;
use std::time::Duration;

use crate::address::AddressClass;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OutboundError {
    #[error("invalid URL: {reason}")]
    InvalidUrl { reason: String },
    #[error("URL scheme {scheme:?} is not allowed: only http and https")]
    Scheme { scheme: String },
    /// The destination is (or resolves to) an address outbound requests may not reach.
    #[error(
        "destination {host} refused: {address} is a {class} address, and requests to private \
         destinations are off"
    )]
    Refused {
        host: String,
        address: IpAddr,
        class: AddressClass,
    },
    /// A request header the caller may not set.
    #[error("header {name:?} is not allowed: {reason}")]
    ForbiddenHeader { name: String, reason: &'static str },
    /// A header name or value that HTTP does not allow (the value is not shown).
    #[error("invalid header {name:?}: {reason}")]
    InvalidHeader { name: String, reason: &'static str },
    #[error("cannot resolve {host}: {detail}")]
    Resolve { host: String, detail: String },
    #[error("connection to {host} failed: {detail}")]
    Connect { host: String, detail: String },
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The response body was larger than the client accepts; reading stopped there.
    #[error("response body larger than {limit} bytes")]
    ResponseTooLarge { limit: usize },
    #[error("request failed: {detail}")]
    Transport { detail: String },
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

impl OutboundError {
    /// Whether the same request may succeed later (the network, the receiver); refusals and
    /// invalid requests never will.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            OutboundError::Resolve { .. }
                | OutboundError::Connect { .. }
                | OutboundError::Timeout(_)
                | OutboundError::Transport { .. }
        )
    }

    /// Whether the request was refused before anything was sent: a destination, scheme or
    /// header the client does not allow, or a URL it cannot read.
    pub fn is_refused(&self) -> bool {
        matches!(
            self,
            OutboundError::InvalidUrl { .. }
                | OutboundError::Scheme { .. }
                | OutboundError::Refused { .. }
                | OutboundError::ForbiddenHeader { .. }
                | OutboundError::InvalidHeader { .. }
        )
    }
}
