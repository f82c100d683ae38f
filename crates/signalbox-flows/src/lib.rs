//! Flows: event-triggered automations that wait, re-check, branch, and send email and
//! webhooks, each side effect exactly once across crashes.
//!
//! ```text
//! engage change feed ──► worker ──► runs (flows.db) ──► due? ──► plan ─► act ─► record
//!  (events, lists,        │  triggers, trigger filter,        profile filter, delays,
//!   merges, profiles)     │  profile filter, re-entry         splits, intents → SMTP,
//! segment entries ────────┘                                   webhooks, profile, lists
//! ```
//!
//! # Layout
//! - [`definition`]: Klaviyo's flow definition JSON, parsed with JSON-pointer errors and
//!   written back with real ids.
//! - [`engine`]: [`Flows`], the handle (flows CRUD, statistics, runs, sends, dead letters,
//!   the review queue of held messages, [`Flows::sync`] for tests); [`FlowsConfig`],
//!   [`FlowsDeps`].
//! - [`deps`]: the traits through which the engine reaches state owned elsewhere
//!   ([`FactsLoader`], [`MembershipFeed`], [`BuiltinEvents`], [`TemplateSource`],
//!   [`ListActions`]).
//! - `worker.rs`: the loop: feed → new runs; due runs → plan, act, record.
//! - `actions.rs`: emails, webhooks (HMAC signature, retries, dead letters), profile and list
//!   updates; the exactly-once notes.
//! - [`templates`]: ready flows to start from (welcome series, abandoned cart, …).
//! - [`schedule`]: delays in a timezone, date triggers.
//! - `conformance` (feature `conformance`): the behaviour every [`FlowStore`] backend shows.
//! - [`flow_store`]: [`FlowStore`], the engine's storage in its own terms; `store.rs`:
//!   [`SqliteFlowStore`], the embedded backend (`flows.db`); `pg_store.rs`: [`PgFlowStore`],
//!   the PostgreSQL backend for several nodes on one database.
//! - `figures.rs`: a flow's live figures (runs active, runs waiting at each delay, messages
//!   pending review), kept as counters that each write transaction moves once.
//! - [`bench`](mod@bench): the engine's benchmark, callable from the binary.
//!
//! # Review of manual messages
//! A message (email or webhook) whose action is `manual`, or any message of a `manual` flow,
//! is not sent when a run reaches it: once the usual checks pass (consent, suppressions,
//! smart sending …) it is **held** as a pending [`HeldMessage`] and the run waits on it, as
//! Klaviyo's review queue keeps a profile at the message. A reviewer approves it
//! ([`Flows::approve_message`]: the checks run again, then it is sent through the same
//! exactly-once step as a live message) or skips it ([`Flows::skip_message`],
//! `skipped:manual`); one left alone ages out after [`FlowsConfig::manual_review_expiry`]
//! (`skipped:expired`). Either way the run then moves on to the next action. Setting the flow
//! live later does not release messages already held.
//!
//! **Invariant:** the feed cursor commits in the transaction that inserts the runs it caused;
//! a run's step intent commits before its side effect starts.
//! **Invariant:** the worker reads time only from the injected [`signalbox_core::Clock`].
//! **Invariant:** only the worker moves runs; API calls change flows and park or wake runs.

pub mod bench;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod definition;
pub mod deps;
pub mod engine;
pub mod error;
pub mod flow_store;
pub mod model;
pub mod schedule;
pub mod templates;

mod actions;
mod figures;
mod pg_store;
mod store;
mod to_postgres;
mod worker;

pub use actions::{sign_webhook, IDEMPOTENCY_HEADER, SIGNATURE_HEADER};
pub use definition::{DefinitionProblem, FlowDefinition};
pub use deps::{
    BuiltinEvents, DepError, DepResult, FactsLoader, ListActions, MembershipFeed, SegmentEntry,
    TemplateSource,
};
pub use engine::{
    Fault, FlowMail, Flows, FlowsConfig, FlowsDeps, DEFAULT_MANUAL_REVIEW_EXPIRY,
    WEBHOOK_MAX_RESPONSE,
};
pub use error::{FlowsError, FlowsResult};
pub use flow_store::{FlowChange, FlowStore, FlowWriter, NewFlow};
pub use model::*;
pub use pg_store::PgFlowStore;
pub use store::Db as SqliteFlowStore;
pub use to_postgres::migrate_to_postgres;
pub use worker::{CONVERSION_METRICS, CONVERSION_WINDOW};
