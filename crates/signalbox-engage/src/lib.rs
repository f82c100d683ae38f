//! Engage: profiles, identities, metrics, events and aggregates, derived from the call log.
//!
//! # Layout
//! - [`model`]: the public types (profiles, metrics, events, queries, API inputs).
//! - [`engine`]: [`Engage`], the handle: queries, and API writes that go through the log.
//!
//! **Invariant:** derived state is a function of the log: everything here can be rebuilt by
//! applying the log from the start, and yields the same state, ids included.

pub mod engine;
pub mod error;
mod ids;
pub mod mapping;
pub mod model;
pub mod phone;
pub mod settings;

pub use engine::{Engage, EngageConfig};
pub use error::{EngageError, EngageResult};
pub use model::*;
pub use settings::DestinationSettings;
