//! Wiring: the router, its state, and the server's life from bind to drained shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use signalbox_audience::Audience;
use signalbox_core::Clock;
use signalbox_engage::Engage;
use signalbox_mail::{LinkSigner, TrackingLinks};
use signalbox_store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::Layer;
use tower_http::cors::{AllowHeaders, CorsLayer};
use tower_http::normalize_path::NormalizePathLayer;

use crate::auth::{KeyCache, PrivateKeys, PRIVATE_KEY_TTL};
use crate::edge::bodies::{self, BodyGuard};
use crate::edge::connections::{self, ConnectionLimits};
use crate::edge::disk::{self, DiskFloor};
use crate::ingest::Ingest;
use crate::mail::Mail;
use crate::segment::decode::Limits;
use crate::templates::TemplateStore;
use crate::test_clock::{self, ShiftedClock};
use crate::{admin, consent, edge, klaviyo, segment, telemetry, tracking};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("store: {0}")]
    Store(#[from] signalbox_store::StoreError),
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
    #[error("public url {url:?}: {reason}")]
    PublicUrl { url: String, reason: String },
}

/// Server settings (what `serve` flags resolve to).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub limits: Limits,
    /// Tracking API requests processed at once; past this, 429.
    pub max_in_flight: usize,
    /// How often write keys are reloaded from the store.
    pub key_refresh: Duration,
    /// A new connection must complete its first request's headers within this.
    pub header_timeout: Duration,
    /// A request body must arrive whole within this of its headers; else 408.
    pub body_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// Connections served at once (kept below the open-files limit); past it, a fast 503.
    pub max_connections: usize,
    /// Request body bytes being read at once, over all requests; past it, a fast 503.
    pub max_body_bytes_in_flight: usize,
    /// Concurrent streams on one HTTP/2 connection.
    pub http2_max_streams: u32,
    /// How long shutdown lets in-flight requests finish before closing their connections.
    pub shutdown_timeout: Duration,
    /// Where people and browsers reach this server (`https://track.example.com`): the base of
    /// the links Signalbox builds and of the Tracking API host it names. Default: `http://`
    /// and the listening address. Never taken from a request's `Host`.
    pub public_url: Option<String>,
    /// The console's bounds (the Source debugger's streams).
    pub console: signalbox_console::ConsoleConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            limits: Limits::default(),
            max_in_flight: 256,
            key_refresh: Duration::from_secs(1),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_body_bytes_in_flight: 64 << 20,
            http2_max_streams: 100,
            shutdown_timeout: Duration::from_secs(10),
            public_url: None,
            console: signalbox_console::ConsoleConfig::default(),
        }
    }
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub ingest: Arc<Ingest>,
    pub keys: Arc<KeyCache>,
    /// Private keys the store accepted in the last second.
    pub private_keys: Arc<PrivateKeys>,
    pub clock: Arc<dyn Clock>,
    pub metrics: PrometheusHandle,
    /// The Klaviyo-compatible engine behind `/api/*`, the consent and tracking links, and the
    /// admin API's lists, quarantine and flows; without it those answer 503 (the Tracking API
    /// and destinations run on).
    pub engine: Option<Engine>,
    /// Signs and checks the links Signalbox serves in emails and consent pages (unsubscribe,
    /// double opt-in confirmation, open pixel, click tracking). Set by
    /// [`Application::set_links`]; until then a random secret (links die with the process).
    pub links: TrackingLinks,
    /// Mailer (when sending is on), composer and template cache. Set by
    /// [`Application::set_mail`]; until then sending is off.
    pub mail: Arc<Mail>,
    /// The movable clock of `serve --test-clock`; `None` on the system clock.
    pub test_clock: Option<Arc<ShiftedClock>>,
    /// The budget of request body bytes being read and each body's deadline.
    pub bodies: Arc<BodyGuard>,
    /// The sync engine behind `/admin/v1/destinations`, woken after each append; without it
    /// those routes answer 503. Apart from [`Engine`]: destinations read the call log itself
    /// and need no engage pipeline.
    pub sync: Option<signalbox_sync::Sync>,
    /// Who may use the console (accounts and sessions); until set, nobody.
    pub console_auth: Arc<dyn signalbox_console::Authenticator>,
    /// The console's bounds.
    pub console: signalbox_console::ConsoleConfig,
    /// Started when shutdown begins (see [`Draining`]).
    pub draining: Draining,
    /// The free-space floor under which writes answer 503. Set by
    /// [`Application::set_disk_floor`]; until then none.
    pub disk: DiskFloor,
}

/// The parts of the Klaviyo-compatible engine. They come together: segments and flows follow
/// engage's change feed, flows send the stored templates, and every `/api/*` route needs
/// engage first.
#[derive(Clone)]
pub struct Engine {
    /// Profiles, metrics, events, lists and consent.
    pub engage: Engage,
    /// Live segments.
    pub audience: Audience,
    /// Email templates (`templates.db`).
    pub templates: TemplateStore,
    /// The flows engine.
    pub flows: signalbox_flows::Flows,
}

impl AppState {
    /// The engine's parts, or `None` on a server built without them.
    pub fn engine(&self) -> Option<&Engine> {
        self.engine.as_ref()
    }
}

/// An engine around `engage` for tests: segments, templates and flows with default settings,
/// their files in `dir`, wired as `serve` wires them.
#[cfg(test)]
pub(crate) async fn test_engine(engage: &Engage, dir: &std::path::Path) -> Engine {
    let clock: Arc<dyn Clock> = Arc::new(signalbox_core::SystemClock);
    let audience = Audience::start(engage.clone(), Arc::clone(&clock), dir.join("audience.db"))
        .await
        .expect("start the audience engine");
    let templates = TemplateStore::open(dir.join("templates.db")).expect("open templates");
    let flows = signalbox_flows::Flows::start(
        engage.clone(),
        clock,
        signalbox_flows::FlowsConfig::new(dir.join("flows.db")),
        crate::flow_deps::flow_deps(
            engage,
            Some(templates.clone()),
            Some(audience.clone()),
            tokio::runtime::Handle::current(),
        ),
    )
    .await
    .expect("start the flows engine");
    Engine {
        engage: engage.clone(),
        audience,
        templates,
        flows,
    }
}

/// Open CORS for the Tracking API, which browsers call from any site. The headers a preflight
/// asks for are allowed by name: the Fetch standard exempts `Authorization`, which analytics.js
/// sends, from `Access-Control-Allow-Headers: *`.
fn tracking_cors() -> CorsLayer {
    CorsLayer::permissive()
        .allow_headers(AllowHeaders::mirror_request())
        .max_age(Duration::from_secs(3600))
}

pub fn router(state: AppState) -> Router {
    let console = signalbox_console::Console::new(signalbox_console::ConsoleDeps {
        store: Arc::clone(&state.store),
        engine: state
            .engine()
            .map(|engine| signalbox_console::ConsoleEngine {
                engage: engine.engage.clone(),
                audience: engine.audience.clone(),
                flows: engine.flows.clone(),
            }),
        sync: state.sync.clone(),
        clock: Arc::clone(&state.clock),
        public_url: state.links.base_url().trim_end_matches('/').to_owned(),
        auth: Arc::clone(&state.console_auth),
        config: state.console.clone(),
        shutdown: state.draining.token(),
    });
    Router::new()
        .merge(segment::routes().layer(tracking_cors()))
        .merge(admin::routes())
        .merge(klaviyo::routes())
        .merge(consent::routes())
        .merge(tracking::routes())
        .merge(test_clock::routes())
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .merge(console.routes())
        .layer(middleware::from_fn_with_state(
            state.clone(),
            bodies::guard_bodies,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            disk::guard_disk,
        ))
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

/// What a connection over the cap is served: `/healthz` as usual, anything else a 503.
fn over_capacity_router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .fallback(too_many_connections)
        .with_state(state)
}

async fn too_many_connections() -> Response {
    let body = json!({
        "success": false,
        "code": "too_many_connections",
        "message": "the server has too many open connections; retry shortly"
    });
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "1"), (header::CONNECTION, "close")],
        Json(body),
    )
        .into_response()
}

async fn healthz(State(app): State<AppState>) -> Response {
    match app.store.last_seq().await {
        Ok(seq) if app.disk.is_low() => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "status": "disk_low",
                "message": "free disk space is below --min-free-disk: writes are refused",
                "last_seq": seq,
                "disk": app.disk.status(),
            })),
        )
            .into_response(),
        Ok(seq) => {
            let mut body = json!({"status": "ok", "last_seq": seq});
            if let Some(disk) = app.disk.status() {
                body["disk"] = disk;
            }
            Json(body).into_response()
        }
        Err(err) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "message": err.to_string()})),
        )
            .into_response(),
    }
}

async fn metrics(State(app): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
        .into_response()
}

/// One debug line per request, naming the route pattern rather than the path, so a write key
/// in a path (`/v1/projects/{write_key}/settings`) never reaches a log.
async fn log_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let started = Instant::now();
    let response = next.run(request).await;
    tracing::debug!(
        %method,
        route,
        status = response.status().as_u16(),
        micros = started.elapsed().as_micros() as u64,
        "request"
    );
    response
}

/// Marks the start of shutdown for responses that never end on their own (the admin event
/// stream): they watch it and finish, so that the server can drain. [`Application::run`] puts
/// it in every request's extensions.
#[derive(Debug, Clone, Default)]
pub struct Draining(CancellationToken);

impl Draining {
    /// Resolves once shutdown has begun.
    pub async fn started(&self) {
        self.0.cancelled().await
    }

    pub fn start(&self) {
        self.0.cancel()
    }

    /// The token cancelled when shutdown begins.
    pub fn token(&self) -> CancellationToken {
        self.0.clone()
    }
}

fn listen_url(listener: &TcpListener) -> String {
    match listener.local_addr() {
        Ok(addr) => format!("http://{addr}"),
        Err(_) => "http://127.0.0.1".into(),
    }
}

/// Links signed with a secret that lives as long as the process.
fn ephemeral_links(base_url: &str) -> Result<TrackingLinks, ServerError> {
    let secret: [u8; 32] = rand::random();
    let signer = LinkSigner::new(&secret).expect("32 random bytes are a strong secret");
    TrackingLinks::new(signer, base_url).map_err(|err| ServerError::PublicUrl {
        url: base_url.to_owned(),
        reason: err.to_string(),
    })
}

/// A bound, ready server.
pub struct Application {
    listener: TcpListener,
    state: AppState,
    refresher: tokio::task::JoinHandle<()>,
    connections: ConnectionLimits,
}

impl Application {
    pub async fn build(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        config: ServerConfig,
        listen: SocketAddr,
    ) -> Result<Application, ServerError> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| ServerError::Bind {
                addr: listen,
                source,
            })?;
        let keys = KeyCache::load(Arc::clone(&store), Arc::clone(&clock)).await?;
        let refresher = keys.spawn_refresher(config.key_refresh);
        let ingest = Arc::new(Ingest::new(
            Arc::clone(&store),
            Arc::clone(&keys),
            Arc::clone(&clock),
            config.limits,
            config.max_in_flight,
        ));
        let base_url = match &config.public_url {
            Some(url) => url.clone(),
            None => listen_url(&listener),
        };
        let links = ephemeral_links(&base_url)?;
        let (max_connections, max_refusing) =
            edge::connection_caps(config.max_connections, edge::open_files_limit());
        if max_connections < config.max_connections {
            tracing::warn!(
                asked = config.max_connections,
                max_connections,
                "the limit of open files caps the connections served at once"
            );
        }
        let connections = ConnectionLimits {
            header_timeout: config.header_timeout,
            idle_timeout: config.idle_timeout,
            max_connections,
            max_refusing,
            http2_max_streams: config.http2_max_streams.max(1),
            shutdown_timeout: config.shutdown_timeout,
        };
        let bodies = Arc::new(BodyGuard::new(
            config.max_body_bytes_in_flight,
            config.body_timeout,
            config.limits,
        ));
        let private_keys = Arc::new(PrivateKeys::new(Arc::clone(&store), PRIVATE_KEY_TTL));
        let state = AppState {
            store,
            ingest,
            keys,
            private_keys,
            clock,
            metrics: telemetry::prometheus(),
            engine: None,
            links: links.clone(),
            mail: Arc::new(Mail::disabled(links)),
            test_clock: None,
            bodies,
            sync: None,
            console_auth: Arc::new(signalbox_console::DenyAll),
            console: config.console.clone(),
            draining: Draining::default(),
            disk: DiskFloor::off(),
        };
        Ok(Application {
            listener,
            state,
            refresher,
            connections,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves the Klaviyo-compatible API (`/api/*`), the consent and tracking links and the
    /// admin API's engine routes from this engine.
    pub fn set_engine(&mut self, engine: Engine) {
        self.state.engine = Some(engine);
    }

    /// Refuses writes with 503 while the data folder's disk is below its floor.
    pub fn set_disk_floor(&mut self, disk: DiskFloor) {
        self.state.disk = disk;
    }

    /// The signer and public base URL of the links Signalbox serves.
    pub fn set_links(&mut self, links: TrackingLinks) {
        self.state.links = links;
    }

    /// The mail pieces senders and previews use; build them with the links given to
    /// [`Application::set_links`].
    pub fn set_mail(&mut self, mail: Mail) {
        self.state.mail = Arc::new(mail);
    }

    /// The mailer and link makers the server uses (shared with background senders).
    pub fn mail(&self) -> Arc<Mail> {
        Arc::clone(&self.state.mail)
    }

    /// Serves `/admin/v1/destinations` from this sync engine and wakes it after appends.
    /// [`Application::run`] shuts it down (after the last request, before the store closes).
    pub fn set_sync(&mut self, sync: signalbox_sync::Sync) {
        self.state.sync = Some(sync);
    }

    /// Lets the console's accounts in.
    pub fn set_console_auth(&mut self, auth: Arc<dyn signalbox_console::Authenticator>) {
        self.state.console_auth = auth;
    }

    /// Exposes `POST /admin/v1/test-clock`; `clock` must be the one given to
    /// [`Application::build`] (and to the engines).
    pub fn set_test_clock(&mut self, clock: Arc<ShiftedClock>) {
        self.state.test_clock = Some(clock);
    }

    /// The connection bounds in force (the cap already fitted to the open-files limit).
    pub fn connection_limits(&self) -> &ConnectionLimits {
        &self.connections
    }

    /// Serves until `shutdown` resolves, then stops taking connections, lets in-flight
    /// requests finish up to the shutdown timeout, closes the connections still open, stops
    /// the sync engine's deliveries (a request in flight may finish), and closes the store
    /// after its last commit.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let store = Arc::clone(&self.state.store);
        let sync = self.state.sync.clone();
        let sync_deadline = self.connections.shutdown_timeout;
        let draining = self.state.draining.clone();
        let over_capacity = over_capacity_router(self.state.clone());
        let app = Router::new().fallback_service(
            NormalizePathLayer::trim_trailing_slash()
                .layer(router(self.state).layer(Extension(draining.clone()))),
        );
        connections::serve(
            self.listener,
            app,
            over_capacity,
            self.connections,
            draining,
            shutdown,
        )
        .await;
        self.refresher.abort();
        if let Some(sync) = sync {
            sync.shutdown(sync_deadline).await;
        }
        tokio::task::spawn_blocking(move || store.close())
            .await
            .map_err(|e| ServerError::Io(std::io::Error::other(e)))?;
        Ok(())
    }
}
