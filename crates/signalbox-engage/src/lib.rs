//! Engage: profiles, identities, metrics, events and aggregates, derived from the call log.
//!
//! Every identify and track a source sends becomes, once the pipeline applied it, a profile
//! identified by email, an event on a metric and a line in that metric's activity feed.
//!
//! # Layout
//! - [`model`]: the public types (profiles, metrics, events, queries, API inputs).
//! - [`engine`]: [`Engage`], the handle: queries (through `queries.rs`'s `EngageQueries`),
//!   and API writes that go through the log; [`engine::rebuild`] re-derives everything from
//!   the log.
//! - [`mapping`]: Segment calls to profile changes and events (pure; the classic Klaviyo
//!   destination's mapping). [`settings`]: the destination's per-source settings.
//!   [`phone`]: E.164 normalisation. [`email`]: core's `Email`, the key of a profile.
//! - `pipeline.rs`: the thread that reads the log in order and applies it in batches.
//! - `apply/`: the applier (identity resolution, merges, held calls, events, API writes,
//!   built-in metrics in `apply/builtin.rs`), the only writer of derived state. It stores
//!   through `apply/store.rs`'s `ApplyStore`/`ApplyTx`, domain operations a backend
//!   implements; the applier is generic over them.
//! - `db/`: the backends, the only place that knows SQL. SQLite: `engage.db`, its schema, the
//!   writer (`db/apply.rs`), the queries (`db/queries.rs` over pooled read connections, with
//!   `db/query.rs`, `db/aggregate.rs`, `db/lists.rs`, `db/outbox.rs`, `db/dump.rs`) and the
//!   reader (`db/reader.rs`, with `db/feed.rs` and `db/facts.rs`). `db/postgres/` implements
//!   the same three traits on PostgreSQL (chosen by [`EngageConfig::database`]), in tables of
//!   the same names: the schema, the writer (`apply.rs`, whose connection holds the applier's
//!   advisory lock), the queries (`queries.rs`, with `queries/*.rs`) and the reader
//!   (`reader.rs`); its tests ask both backends the same questions of the same rows.
//! - [`limits`]: caps on a profile's properties and on event values.
//! - [`lists`]: lists, members and email consent (types; their writes are log entries
//!   applied in `apply/lists.rs` and `apply/consent.rs`).
//! - `query.rs`, `aggregate.rs`: what reads share whatever the backend (page cursors, time
//!   buckets, the held-call and history types). [`reader`]: [`EngageReader`], the read side the
//!   engines that follow derived state use (segments, flows, confirmations), implemented over
//!   `engage.db` in `db/reader.rs`; nothing outside this crate opens the file. [`feed`]: what
//!   changed after a cursor. [`facts`]: segment conditions over a reader.
//!   `conformance.rs` (feature `conformance`): the suite every reader backend runs.
//! - [`outbox`]: what Signalbox itself did to profiles (API writes, flows, consent and list
//!   changes, imports, built-in email events), in log order, for the reverse sync; never what
//!   came from a Segment source ([`WriteOrigin`]).
//!
//! **Invariant:** derived state is a function of the log: applying the log from the start
//! yields the same state, ids included (row keys are derived from log sequence numbers,
//! times from the log's receipt times, never from the wall clock).
//! **Invariant:** the checkpoint commits with the changes it covers: exactly-once effect
//! from at-least-once reading.

mod aggregate;
mod apply;
#[cfg(feature = "conformance")]
pub mod conformance;
mod db;
pub mod email;
pub mod engine;
pub mod error;
pub mod facts;
pub mod feed;
mod ids;
pub mod limits;
pub mod lists;
pub mod mapping;
pub mod model;
pub mod outbox;
pub mod phone;
mod pipeline;
mod queries;
mod query;
pub mod reader;
pub mod settings;

pub use apply::builtin::{BuiltinEventInput, BuiltinMetric};
pub use apply::BatchReport;
pub use apply::EntryFault;
pub use db::to_postgres::{lock_writer, migrate_to_postgres, WriterLock};
pub use engine::{
    rebuild, rebuild_postgres, rebuild_with_fault, Engage, EngageConfig,
    DEFAULT_ENGAGE_CACHE_BYTES, DEFAULT_HOLD_WINDOW,
};
pub use error::{EngageError, EngageResult};
pub use lists::{
    ConfirmOutcome, ConsentStatus, EmailConsent, ImportRow, List, ListId, ListMember, ListQuery,
    MemberQuery, MemberStatus, OptInProcess, ProfileListMembership, ProfileLists, SubscribeRequest,
    SuppressTarget, Suppression, SuppressionReason, UnsubscribeRequest,
};
pub use model::*;
pub use outbox::{EmailEvent, OutboxChange, OutboxEntry, OutboxPosition, WriteOrigin};
pub use pipeline::{yield_to_requests, LatencySummary, PipelineStats, RebuildProgress};
pub use query::{
    HeldCall, HeldCallStatus, HeldFilter, LogNeeds, ProfileHistory, ProfileLink, ProfileOrigin,
    QuarantinedEntry,
};
pub use reader::EngageReader;
pub use settings::DestinationSettings;
