//! Sync: everything that leaves Signalbox for another system, through one delivery engine.
//!
//! ```text
//! call log (Store) ─────────► klaviyo / webhook destinations ─┐
//!                                                              ├─► encode ─► rate limit ─► OutboundClient ─► receiver
//! engage outbox (Signalbox-made ► segment destination ────────┘        (batches to the receiver's limits)
//!  profile changes, email events)
//!                 cursor + counters + dead letters + delivery records commit in sync.db
//! ```
//!
//! A destination is a durable cursor over what it delivers: the call log for forwarding
//! (`klaviyo`, `webhook`), engage's outbox for the reverse sync (`segment`). The cursor commits
//! after the receiver's 2xx, with the delivery's record, so a restart or `kill -9` resumes
//! there; every delivered call carries an id derived from what it came from (`messageId`,
//! `unique_id`), so a repeat never makes a second event at the receiver.
//!
//! # Layout
//! - [`model`]: destinations, their settings and secrets, status, dead letters, deliveries.
//! - [`store`]: [`SyncStore`], the state behind a trait; [`SqliteSyncStore`] (`sync.db`).
//! - [`engine`]: [`Sync`], the handle `serve` holds: one task per destination.
//! - [`feed`]: what destinations follow ([`CallFeed`], [`OutboxFeed`]).
//! - [`kinds`]: what each kind sends (`segment`, `klaviyo`, `webhook`): pure encoders.
//! - [`limits`]: token bucket, backoff with jitter, circuit breaker.
//! - `worker.rs`: one destination's delivery task.
//!
//! # Metrics
//! Per destination (label `destination`): `signalbox_destination_delivered_total`,
//! `signalbox_destination_retried_total`, `signalbox_destination_dead_lettered_total`,
//! `signalbox_destination_skipped_total` (followed, but nothing to send: no identity, Klaviyo
//! turned off, …) and the gauge `signalbox_destination_lag_seconds` (age of the oldest
//! undelivered item, updated at least every second).
//!
//! **Invariant:** every request goes through [`signalbox_outbound::OutboundClient`].
//! **Invariant:** a secret is never printed, logged or stored in a delivery record.

pub mod engine;
pub mod error;
pub mod feed;
pub mod kinds;
pub mod limits;
pub mod model;
pub mod store;
mod worker;

pub use engine::{Feeds, Sync, SyncConfig, SyncDeps};
pub use error::{SyncError, SyncResult};
pub use feed::{CallFeed, OutboxFeed};
pub use model::*;
pub use store::{migrate_to_postgres, PgSyncStore, SqliteSyncStore, SyncStore};
