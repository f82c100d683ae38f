//! `spawn_app()`: a real server on `127.0.0.1:0` over a fresh SQLite file, with typed helpers.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use jiff::SignedDuration;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::Value;
use signalbox_core::{
    Clock, FakeClock, Source, StoredCall, StoredRejection, SystemClock, WriteKey,
};
use signalbox_server::auth::KeyCache;
use signalbox_server::edge::bodies::BodyGuard;
use signalbox_server::ingest::Ingest;
use signalbox_server::{Application, ServerConfig, ServerError};
use signalbox_store::sqlite::SqliteOptions;
use signalbox_store::{CallQuery, RejectionQuery, SqliteStore, Store};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The name of the source every test app starts with.
pub const SOURCE: &str = "test";

/// A change to the server's settings.
pub type Configure = Arc<dyn Fn(&mut ServerConfig) + Send + Sync>;

/// How a test app is set up.
#[derive(Clone)]
pub struct TestOptions {
    pub dedupe_window: SignedDuration,
    pub queue_capacity: usize,
    pub max_in_flight: usize,
    /// Periodic key reload. Long by default so that tests decide when keys are reloaded
    /// (`TestApp::refresh_keys`) and a key found in the store can only come from a cache miss.
    pub key_refresh: Duration,
    /// `None`: the system clock.
    pub clock: Option<FakeClock>,
    /// Changes to the server's settings beyond the above (timeouts, caps, public URL).
    pub configure: Option<Configure>,
}

impl Default for TestOptions {
    fn default() -> Self {
        TestOptions {
            dedupe_window: SignedDuration::from_hours(24),
            queue_capacity: 512,
            max_in_flight: 256,
            key_refresh: Duration::from_secs(3600),
            clock: None,
            configure: None,
        }
    }
}

/// A running server and the store behind it.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`
    pub address: String,
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub store: Arc<SqliteStore>,
    pub source: Source,
    pub write_key: WriteKey,
    pub ingest: Arc<Ingest>,
    pub keys: Arc<KeyCache>,
    pub bodies: Arc<BodyGuard>,
    options: TestOptions,
    dir: TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), ServerError>>>,
}

/// One HTTP answer, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub bytes: Vec<u8>,
    /// The body as JSON, or `Value::Null` when it is not JSON.
    pub body: Value,
}

impl Answer {
    async fn read(response: reqwest::Response) -> Answer {
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("read body").to_vec();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            bytes,
            body,
        }
    }

    /// 200 with exactly `{"success":true}`.
    #[track_caller]
    pub fn assert_success(&self) {
        assert_eq!(self.status, StatusCode::OK, "body: {}", self.text());
        assert_eq!(self.body, serde_json::json!({"success": true}));
    }

    /// The error shape `{"success":false,"code":…,"message":…}` with this status and code;
    /// returns the message.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text());
        let object = self.body.as_object().expect("a JSON object body");
        assert_eq!(object.len(), 3, "unexpected keys in {}", self.body);
        assert_eq!(self.body["success"], false);
        assert_eq!(self.body["code"], code, "body: {}", self.body);
        let message = self.body["message"].as_str().expect("a string message");
        assert!(!message.is_empty());
        message.to_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(TestOptions::default()).await
}

pub async fn spawn_app_with(options: TestOptions) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_store(&dir, &options);
    let (source, write_key) = store.create_source(SOURCE).await.expect("create source");
    let running = serve(&store, &options).await;
    TestApp {
        address: format!("http://{}", running.addr),
        addr: running.addr,
        client: reqwest::Client::new(),
        store,
        source,
        write_key,
        ingest: running.ingest,
        keys: running.keys,
        bodies: running.bodies,
        options,
        dir,
        shutdown: Some(running.shutdown),
        server: Some(running.server),
    }
}

fn open_store(dir: &TempDir, options: &TestOptions) -> Arc<SqliteStore> {
    let path = dir.path().join("signalbox.db");
    let store = SqliteStore::open(
        path,
        SqliteOptions {
            dedupe_window: options.dedupe_window,
            queue_capacity: options.queue_capacity,
            writer: true,
            ..SqliteOptions::default()
        },
    )
    .expect("open store");
    Arc::new(store)
}

struct Running {
    addr: SocketAddr,
    ingest: Arc<Ingest>,
    keys: Arc<KeyCache>,
    bodies: Arc<BodyGuard>,
    shutdown: oneshot::Sender<()>,
    server: JoinHandle<Result<(), ServerError>>,
}

/// Builds the application on `127.0.0.1:0` and runs it in a task until told to stop.
async fn serve(store: &Arc<SqliteStore>, options: &TestOptions) -> Running {
    let clock: Arc<dyn Clock> = match &options.clock {
        Some(clock) => Arc::new(clock.clone()),
        None => Arc::new(SystemClock),
    };
    let mut config = ServerConfig {
        max_in_flight: options.max_in_flight,
        key_refresh: options.key_refresh,
        ..ServerConfig::default()
    };
    if let Some(configure) = &options.configure {
        configure(&mut config);
    }
    let store: Arc<dyn Store> = store.clone();
    let application =
        Application::build(store, clock, config, SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("build the application");
    let addr = application.local_addr();
    let ingest = Arc::clone(&application.state().ingest);
    let keys = Arc::clone(&application.state().keys);
    let bodies = Arc::clone(&application.state().bodies);
    let (shutdown, stop) = oneshot::channel::<()>();
    let server = tokio::spawn(application.run(async {
        let _ = stop.await;
    }));
    Running {
        addr,
        ingest,
        keys,
        bodies,
        shutdown,
        server,
    }
}

impl TestApp {
    /// Stops the server (draining it and closing the store), reopens the same database file
    /// and serves it again on a new port.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.store = open_store(&self.dir, &self.options);
        let running = serve(&self.store, &self.options).await;
        self.addr = running.addr;
        self.address = format!("http://{}", running.addr);
        self.ingest = running.ingest;
        self.keys = running.keys;
        self.bodies = running.bodies;
        self.shutdown = Some(running.shutdown);
        self.server = Some(running.server);
    }

    /// Asks the server to stop and returns its task, to be awaited by the caller.
    pub fn begin_stop(&mut self) -> JoinHandle<Result<(), ServerError>> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.server.take().expect("the server is running")
    }

    /// Opens the store again and serves it on a new port after [`TestApp::begin_stop`].
    pub async fn serve_again(&mut self) {
        self.store = open_store(&self.dir, &self.options);
        let running = serve(&self.store, &self.options).await;
        self.addr = running.addr;
        self.address = format!("http://{}", running.addr);
        self.ingest = running.ingest;
        self.keys = running.keys;
        self.bodies = running.bodies;
        self.shutdown = Some(running.shutdown);
        self.server = Some(running.server);
        self.client = reqwest::Client::new();
    }

    /// Stops the server and waits until it has drained and closed the store.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("server task")
                .expect("server stopped cleanly");
        }
        // Idle keep-alive connections belong to the old server.
        self.client = reqwest::Client::new();
    }

    pub fn url(&self, route: &str) -> String {
        format!("{}{}", self.address, route)
    }

    /// `Basic base64(writeKey + ":")`.
    pub fn basic_auth(&self) -> String {
        basic(self.write_key.expose(), true)
    }

    /// POSTs raw bytes with exactly the given headers.
    pub async fn post(
        &self,
        route: &str,
        body: impl Into<reqwest::Body>,
        headers: &[(&str, &str)],
    ) -> Answer {
        self.send(reqwest::Method::POST, route, body, headers).await
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        route: &str,
        body: impl Into<reqwest::Body>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut request = self.client.request(method, self.url(route)).body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        Answer::read(request.send().await.expect("send request")).await
    }

    /// POSTs JSON authenticated with the app's write key (HTTP Basic).
    pub async fn post_json(&self, route: &str, body: &Value) -> Answer {
        let auth = self.basic_auth();
        self.post(
            route,
            body.to_string(),
            &[
                ("content-type", "application/json"),
                ("authorization", &auth),
            ],
        )
        .await
    }

    pub async fn post_batch(&self, body: &Value) -> Answer {
        self.post_json("/v1/batch", body).await
    }

    pub async fn get(&self, route: &str, headers: &[(&str, &str)]) -> Answer {
        self.send(reqwest::Method::GET, route, Vec::new(), headers)
            .await
    }

    /// Every stored call, in log order.
    pub async fn calls(&self) -> Vec<StoredCall> {
        self.store
            .read_calls(CallQuery {
                limit: 100_000,
                ..CallQuery::default()
            })
            .await
            .expect("read calls")
    }

    /// Every stored call's payload, in log order.
    pub async fn export(&self) -> Vec<Value> {
        self.calls()
            .await
            .iter()
            .map(|c| serde_json::from_str(&c.payload).expect("stored payload is JSON"))
            .collect()
    }

    pub async fn rejections(&self) -> Vec<StoredRejection> {
        self.store
            .read_rejections(RejectionQuery {
                limit: 100_000,
                ..RejectionQuery::default()
            })
            .await
            .expect("read rejections")
    }

    /// Reloads the server's write-key cache from the store now.
    pub async fn refresh_keys(&self) {
        self.keys.refresh().await.expect("refresh keys");
    }

    pub async fn metrics(&self) -> String {
        self.get("/metrics", &[]).await.text()
    }
}

/// `Basic base64(key:)`, or without the colon.
pub fn basic(key: &str, with_colon: bool) -> String {
    let user = if with_colon {
        format!("{key}:")
    } else {
        key.to_owned()
    };
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(user)
    )
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("compress");
    encoder.finish().expect("compress")
}

/// A valid track call for a batch.
pub fn track(message_id: &str) -> Value {
    serde_json::json!({
        "type": "track",
        "userId": "user-1",
        "event": "Order Completed",
        "messageId": message_id,
        "properties": {"revenue": 10}
    })
}

/// The server's engine around `engage`: the parts given as they are, the others started with
/// default settings on the system clock, their files in `dir`.
pub async fn engine(
    engage: &signalbox_engage::Engage,
    dir: &std::path::Path,
    audience: Option<signalbox_audience::Audience>,
    flows: Option<signalbox_flows::Flows>,
) -> signalbox_server::Engine {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let audience = match audience {
        Some(audience) => audience,
        None => signalbox_audience::Audience::start(
            engage.clone(),
            Arc::clone(&clock),
            dir.join("audience.db"),
        )
        .await
        .expect("start audience"),
    };
    let templates = signalbox_server::templates::TemplateStore::open(dir.join("templates.db"))
        .expect("open templates");
    let flows = match flows {
        Some(flows) => flows,
        None => signalbox_flows::Flows::start(
            engage.clone(),
            clock,
            signalbox_flows::FlowsConfig::new(dir.join("flows.db")),
            signalbox_server::flow_deps::flow_deps(
                engage,
                Some(templates.clone()),
                Some(audience.clone()),
                tokio::runtime::Handle::current(),
            ),
        )
        .await
        .expect("start flows"),
    };
    signalbox_server::Engine {
        engage: engage.clone(),
        audience,
        templates,
        flows,
    }
}
