//! Domain types shared by every Signalbox layer.
//!
//! # Layout
//! - [`call`]: a Segment call after it was accepted (normalised), and a rejected one.
//! - [`source`]: sources, write keys and private API keys.
//! - [`secret`]: secret strings that never print and compare in constant time.
//! - [`scope`]: what a private API key may do (Klaviyo's scopes, `full`, `admin`).
//! - [`clock`]: time as an injected dependency.
//! - [`database`]: where the data lives (a data folder or a PostgreSQL URL).
//! - [`email`]: email addresses, normalised once and checked where they come in.
//! - [`time`]: client-given times, parsed and checked against the range Signalbox keeps.
//!
//! **Invariant:** this crate does no IO and knows no wire format; it cannot fail except on
//! validation of its own inputs.

pub mod call;
pub mod clock;
pub mod database;
pub mod email;
pub mod scope;
pub mod secret;
pub mod source;
pub mod time;

pub use call::{CallKind, NewCall, RejectCode, Rejection, StoredCall, StoredRejection};
pub use clock::{Clock, FakeClock, SystemClock};
pub use database::{DatabaseUrl, DatabaseUrlError, PostgresUrl};
pub use email::{Email, EmailError};
pub use scope::{Access, Resource, Scope, Scopes, UnknownScope};
pub use secret::{ApiKey, WriteKey};
pub use source::{ApiKeyInfo, Source, SourceId, SourceStatus};

/// The Klaviyo API revision Signalbox speaks: what its clients (the CLI, the Klaviyo
/// destination) send in the `revision` header.
pub const KLAVIYO_REVISION: &str = "2026-07-15";
