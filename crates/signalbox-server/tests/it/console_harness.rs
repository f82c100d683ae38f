//! A server with engage and a console that lets in two fixed test sessions, for the console
//! tests over real HTTP that need their own server settings.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use signalbox_console::{Authenticator, SignedIn};
use signalbox_core::{Clock, SystemClock, WriteKey};
use signalbox_engage::{Engage, EngageConfig};
use signalbox_server::{Application, ServerConfig, ServerError};
use signalbox_store::sqlite::SqliteOptions;
use signalbox_store::{SqliteStore, Store};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::helpers::{basic, SOURCE};

/// The sessions the test authenticator lets in.
pub const SESSION_A: &str = "console-test-session-a";
pub const SESSION_B: &str = "console-test-session-b";

struct TwoSessions;

#[async_trait::async_trait]
impl Authenticator for TwoSessions {
    async fn authenticate(&self, session: &str) -> Option<SignedIn> {
        [SESSION_A, SESSION_B].contains(&session).then(|| SignedIn {
            email: format!("{session}@example.com"),
            csrf: format!("{session}-csrf"),
        })
    }
}

pub struct ConsoleServer {
    pub address: String,
    pub http: reqwest::Client,
    pub write_key: WriteKey,
    pub engage: Engage,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), ServerError>>>,
    _dir: TempDir,
}

impl ConsoleServer {
    pub async fn spawn(config: ServerConfig) -> ConsoleServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(dir.path().join("signalbox.db"), SqliteOptions::default())
                .expect("open store"),
        );
        let (_, write_key) = store.create_source(SOURCE).await.expect("create source");
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let engage = Engage::start(
            Arc::clone(&store),
            Arc::clone(&clock),
            EngageConfig::new(dir.path().join("engage.db")),
        )
        .await
        .expect("start engage");
        let mut application = Application::build(
            Arc::clone(&store),
            clock,
            config,
            SocketAddr::from(([127, 0, 0, 1], 0)),
        )
        .await
        .expect("build the application");
        application.set_engine(crate::helpers::engine(&engage, dir.path(), None, None).await);
        application.set_console_auth(Arc::new(TwoSessions));
        let address = format!("http://{}", application.local_addr());
        let (shutdown, stop) = oneshot::channel::<()>();
        let server = tokio::spawn(application.run(async {
            let _ = stop.await;
        }));
        ConsoleServer {
            address,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            write_key,
            engage,
            shutdown: Some(shutdown),
            server: Some(server),
            _dir: dir,
        }
    }

    /// Begins shutdown; the server's task, to await.
    pub fn begin_stop(&mut self) -> JoinHandle<Result<(), ServerError>> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.server.take().expect("the server runs")
    }

    pub async fn stop(mut self) {
        self.begin_stop()
            .await
            .expect("server task")
            .expect("server stopped");
        self.engage.shutdown().await;
    }

    /// A Tracking API call signed with the source's write key.
    pub async fn segment(&self, kind: &str, message: Value) {
        let response = self
            .http
            .post(format!("{}/v1/{kind}", self.address))
            .header("Authorization", basic(self.write_key.expose(), true))
            .json(&message)
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), StatusCode::OK, "{kind} accepted");
    }

    /// A GET with a session's cookie (not read yet).
    pub async fn get(&self, session: &str, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.address))
            .header("Cookie", format!("signalbox_session={session}"))
            .send()
            .await
            .expect("send")
    }

    /// A console page with a session; status and body.
    pub async fn page(&self, session: &str, path: &str) -> (StatusCode, String) {
        let response = self.get(session, path).await;
        let status = response.status();
        (status, response.text().await.expect("read"))
    }

    pub async fn settle(&self) {
        self.engage
            .catch_up(Duration::from_secs(30))
            .await
            .expect("the pipeline catches up");
    }
}

/// Reads a Server-Sent Events response until `needle` shows, within a generous bound.
pub async fn read_until(response: &mut reqwest::Response, needle: &str) -> String {
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !seen.contains(needle) {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .unwrap_or_else(|_| panic!("{needle} streamed in time; got {seen}"))
            .expect("read the stream")
            .unwrap_or_else(|| panic!("the stream ended before {needle}; got {seen}"));
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    seen
}

/// Reads a Server-Sent Events response until it ends, within a generous bound; what it sent.
pub async fn read_to_end(response: &mut reqwest::Response) -> String {
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match tokio::time::timeout_at(deadline, response.chunk()).await {
            Err(_) => panic!("the stream did not end in time; got {seen}"),
            Ok(Ok(Some(chunk))) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            // The end, or the connection closed under it: either way the stream is over.
            Ok(Ok(None)) | Ok(Err(_)) => return seen,
        }
    }
}
