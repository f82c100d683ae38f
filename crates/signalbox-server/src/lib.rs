//! The HTTP side of Signalbox: the Segment Tracking API, the admin API, health and metrics.
//!
//! # Layout
//! - [`app`]: router, state, [`app::Application`] (bind, serve, drain).
//! - [`segment`]: `/v1/*` routes; [`segment::decode`] is the only code that knows Segment's
//!   wire format.
//! - [`ingest`]: from a request's bytes to a durable append (admission, decode, auth, store).
//! - [`auth`]: write-key cache and header parsing.
//! - [`klaviyo`]: the Klaviyo-compatible REST API (`/api/*`) over the engage engine; the only
//!   code that knows Klaviyo's JSON:API shapes.
//! - [`admin`]: the admin API (`/admin/v1/*`), authenticated by private API keys.
//! - [`flow_deps`]: the flows engine's dependencies over engage, segments and templates
//!   (filters and splits read the facts segments read).
//! - [`mail`]: mailer, composer, template cache, template context of a profile and event.
//! - [`templates`]: stored email templates (`templates.db`) and previews; [`tracking`]: the
//!   open pixel and click redirects of sent emails, recorded as built-in metrics.
//! - [`edge`]: connections and request bodies, bounded (caps, timeouts, the body budget).
//! - [`retention`]: `serve --retain-log`: the trim loop and what keeps entries in the log.
//! - [`error`]: how ingest failures look on the wire; [`telemetry`]: metrics and log events.
//!
//! **Invariant:** handlers parse and delegate; they hold no SQL and no business rules.

pub mod admin;
pub mod app;
pub mod auth;
pub mod confirmations;
pub mod consent;
pub mod edge;
pub mod error;
pub mod flow_deps;
pub mod ingest;
pub mod klaviyo;
pub mod mail;
pub mod retention;
pub mod segment;
pub mod telemetry;
pub mod templates;
pub mod test_clock;
pub mod to_postgres;
pub mod tracking;

pub use app::{AppState, Application, Engine, ServerConfig, ServerError};

#[cfg(test)]
mod mail_routes_tests;
#[cfg(test)]
mod route_scopes_tests;
