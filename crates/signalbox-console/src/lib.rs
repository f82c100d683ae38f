//! The console: the web app where a person connects sources and destinations, watches data
//! arrive, and works with profiles, metrics, lists, segments and flows.
//!
//! Server-rendered HTML (minijinja templates compiled into the binary), a little JavaScript of
//! our own, charts drawn as SVG on the server; every asset is embedded, nothing comes from a
//! CDN. Pages call the same domain handles the APIs use ([`ConsoleDeps`]); no SQL, no store
//! opened by path.
//!
//! # Layout
//! - [`auth`]: who is signed in ([`Authenticator`], the [`SignedIn`] extractor) and CSRF.
//! - [`accounts`]: accounts, sessions and setup tokens ([`Accounts`], the authenticator
//!   `serve` installs) over an [`accounts::AccountStore`] (`console.db`).
//! - `render.rs`: the template environment and the page layout.
//! - `pages/`: one module per area, each with its routes and templates.
//! - `assets.rs`: the embedded stylesheet and script.
//!
//! **Invariant:** every page and form handler takes [`SignedIn`]: nothing but the sign-in and
//! first-account setup pages is reachable without a session.
//! **Invariant:** every form that changes something checks the session's CSRF token.

pub mod accounts;
pub mod auth;
pub mod error;

mod assets;
mod chart;
mod pages;
mod render;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use signalbox_audience::Audience;
use signalbox_core::Clock;
use signalbox_engage::Engage;
use signalbox_flows::Flows;
use signalbox_store::Store;
use signalbox_sync::Sync;
use tokio_util::sync::CancellationToken;

pub use accounts::{Accounts, PgAccountStore, SqliteAccountStore};
pub use auth::{Authenticator, DenyAll, SignedIn};
pub use error::{ConsoleError, ConsoleResult};

/// The domain handles the console works through (the ones the APIs use).
#[derive(Clone)]
pub struct ConsoleDeps {
    pub store: Arc<dyn Store>,
    /// Profiles, segments and flows, which come together (the server's `Engine`); absent on
    /// a server built without them, whose pages about them then answer 503. Pages reach it
    /// through [`Console::engine`].
    pub engine: Option<ConsoleEngine>,
    /// Destinations; absent on a server built without them (pages then show none).
    pub sync: Option<Sync>,
    pub clock: Arc<dyn Clock>,
    /// Where people reach this server (`--public-url`, else the listening address), without a
    /// trailing slash: the base of links the console shows (the Tracking API's host).
    pub public_url: String,
    /// Who is signed in.
    pub auth: Arc<dyn Authenticator>,
    /// The console's own bounds.
    pub config: ConsoleConfig,
    /// Cancelled when the server begins to shut down: responses that never end on their own
    /// (the Source debugger's stream) finish then.
    pub shutdown: CancellationToken,
}

/// The Klaviyo side the console shows: engage, with the segments and flows engines that
/// follow it. A page that needs one of them gets all three, so none is guarded alone.
#[derive(Clone)]
pub struct ConsoleEngine {
    pub engage: Engage,
    pub audience: Audience,
    pub flows: Flows,
}

/// The console's bounds (what `serve` flags resolve to).
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// Source debugger streams open at once over the whole server; past it, a 429.
    pub max_streams: usize,
    /// Source debugger streams one session may have open at once; past it, a 429.
    pub max_streams_per_session: usize,
    /// A stream ends after this long (a browser's `EventSource` reconnects where it left
    /// off, taking a slot again).
    pub stream_lifetime: Duration,
    /// A stream further than this many calls behind the end of the log (a slow reader, or a
    /// reconnect from far back) skips ahead to the newest ones and says how many it skipped.
    pub stream_backlog: u32,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            max_streams: 16,
            max_streams_per_session: 4,
            stream_lifetime: Duration::from_secs(30 * 60),
            stream_backlog: 1000,
        }
    }
}

/// The console's state: its deps and the compiled templates. Cheap to clone.
#[derive(Clone)]
pub struct Console {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub deps: ConsoleDeps,
    pub templates: render::Templates,
    /// The Source debugger's open streams, against the caps of [`ConsoleConfig`].
    pub streams: Arc<pages::StreamSlots>,
}

impl Console {
    pub fn new(deps: ConsoleDeps) -> Console {
        let streams = Arc::new(pages::StreamSlots::new(
            deps.config.max_streams,
            deps.config.max_streams_per_session,
        ));
        Console {
            inner: Arc::new(Inner {
                deps,
                templates: render::Templates::new(),
                streams,
            }),
        }
    }

    pub fn deps(&self) -> &ConsoleDeps {
        &self.inner.deps
    }

    /// Engage, segments and flows, or the "not available" error of a page that needs them:
    /// the one guard for the server's optional engine.
    pub(crate) fn engine(&self) -> ConsoleResult<&ConsoleEngine> {
        self.inner
            .deps
            .engine
            .as_ref()
            .ok_or(ConsoleError::Unavailable(
                "the profiles, segments and flows engine",
            ))
    }

    /// Every console route (pages, forms, assets), to merge into the server's router.
    pub fn routes<S: Clone + Send + std::marker::Sync + 'static>(self) -> Router<S> {
        pages::routes().merge(assets::routes()).with_state(self)
    }
}
