//! Outbound HTTP to destinations that users configure (flow webhooks, event destinations):
//! one guarded client, so that a stored URL cannot turn the server into a way into its own
//! network.
//!
//! ```no_run
//! # async fn example() -> Result<(), signalbox_outbound::OutboundError> {
//! use signalbox_outbound::{OutboundClient, OutboundConfig, OutboundRequest};
//!
//! let client = OutboundClient::new(OutboundConfig::default())?;
//! let response = client
//!     .send(
//!         OutboundRequest::post("https://hooks.example.com/signalbox")
//!             .header("Content-Type", "application/json")
//!             .body(r#"{"hello":"world"}"#),
//!     )
//!     .await?;
//! assert!(response.is_success());
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//! - [`address`]: which IP addresses are public destinations ([`classify`]).
//! - `headers.rs`: which request headers a caller may set ([`check_header_name`]).
//! - `client.rs`: [`OutboundClient`], its resolver and limits.
//! - `error.rs`: [`OutboundError`].
//!
//! **Invariant:** unless private destinations are allowed, no connection is opened to an
//! address [`classify`] refuses: literal IPs are checked before the request starts, host
//! names by the resolver that hands the connector its addresses.

pub mod address;
mod client;
mod error;
mod headers;

pub use address::{classify, AddressClass};
pub use client::{
    check_url_syntax, OutboundClient, OutboundConfig, OutboundRequest, OutboundResponse,
};
pub use error::OutboundError;
pub use headers::{check_header, check_header_name};
pub use reqwest::Method;
