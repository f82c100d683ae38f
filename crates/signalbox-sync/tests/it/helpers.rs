//! The harness: a call log with a source, `sync.db`, an engine with short timings, and
//! scriptable receivers.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use jiff::Timestamp;
use serde_json::{json, Value};
use signalbox_core::{CallKind, NewCall, SourceId, SystemClock};
use signalbox_outbound::{OutboundClient, OutboundConfig};
use signalbox_store::sqlite::SqliteOptions;
use signalbox_store::{SqliteStore, Store};
use signalbox_sync::{
    Destination, DestinationConfig, Feeds, NewDestination, OutboxFeed, Secret, SqliteSyncStore,
    Sync, SyncConfig, SyncDeps,
};

/// Timings short enough for tests.
pub fn fast_config() -> SyncConfig {
    SyncConfig {
        poll_interval: Duration::from_millis(50),
        reload_interval: Duration::from_millis(100),
        backoff_base: Duration::from_millis(20),
        backoff_cap: Duration::from_millis(300),
        retry_after_cap: Duration::from_secs(5),
        breaker_threshold: 5,
        breaker_open: Duration::from_millis(500),
        idle_commit_interval: Duration::from_millis(100),
        ..SyncConfig::default()
    }
}

pub const WAIT: Duration = Duration::from_secs(30);

pub struct Harness {
    pub _dir: tempfile::TempDir,
    pub log: Arc<dyn Store>,
    pub source: SourceId,
    pub store: Arc<SqliteSyncStore>,
    pub outbound: OutboundClient,
    pub outbox: Option<Arc<dyn OutboxFeed>>,
}

impl Harness {
    pub async fn new() -> Harness {
        Harness::with_timeout(Duration::from_secs(5)).await
    }

    pub async fn with_timeout(timeout: Duration) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let log: Arc<dyn Store> = Arc::new(
            SqliteStore::open(dir.path().join("signalbox.db"), SqliteOptions::default()).unwrap(),
        );
        let (source, _) = log.create_source("web").await.unwrap();
        let store = Arc::new(SqliteSyncStore::open(&dir.path().join("sync.db")).unwrap());
        let outbound = OutboundClient::new(OutboundConfig {
            connect_timeout: Duration::from_millis(500),
            timeout,
            allow_private_destinations: true,
            ..OutboundConfig::default()
        })
        .unwrap();
        Harness {
            _dir: dir,
            log,
            source: source.id,
            store,
            outbound,
            outbox: None,
        }
    }

    pub fn deps(&self) -> SyncDeps {
        SyncDeps {
            store: self.store.clone(),
            calls: Arc::clone(&self.log),
            engage: None,
            outbound: self.outbound.clone(),
            clock: Arc::new(SystemClock),
        }
    }

    /// A running engine with the short timings.
    pub fn start(&self) -> Sync {
        let deps = self.deps();
        let mut feeds = Feeds::of(&deps);
        feeds.outbox = self.outbox.clone();
        Sync::start_with(deps, fast_config(), feeds)
    }

    /// Appends tracks `from..to` (messageId `m-{i}`, userId `user-{i % 5}`, received one
    /// second apart from `base`).
    pub async fn append_tracks(&self, from: usize, to: usize, base: Timestamp) -> Vec<String> {
        let mut ids = Vec::new();
        let mut calls = Vec::new();
        for i in from..to {
            let id = format!("m-{i}");
            let received_at = base + jiff::SignedDuration::from_secs(i as i64);
            let payload = json!({
                "type": "track", "event": "Step", "messageId": id,
                "userId": format!("user-{}", i % 5),
                "properties": { "i": i, "email": format!("user-{}@example.com", i % 5) },
                "timestamp": received_at.to_string(), "receivedAt": received_at.to_string(),
            });
            calls.push(NewCall {
                kind: CallKind::Track,
                message_id: id.clone(),
                received_at,
                payload: payload.to_string(),
            });
            ids.push(id);
            if calls.len() == 500 {
                self.log
                    .append(self.source, std::mem::take(&mut calls), Vec::new())
                    .await
                    .unwrap();
            }
        }
        if !calls.is_empty() {
            self.log
                .append(self.source, calls, Vec::new())
                .await
                .unwrap();
        }
        ids
    }

    pub async fn append(&self, kind: CallKind, payload: Value) {
        let call = NewCall {
            kind,
            message_id: payload["messageId"].as_str().unwrap().to_owned(),
            received_at: Timestamp::now(),
            payload: payload.to_string(),
        };
        self.log
            .append(self.source, vec![call], Vec::new())
            .await
            .unwrap();
    }
}

pub fn webhook(name: &str, url: &str, secret: Option<&str>) -> NewDestination {
    NewDestination {
        name: name.to_owned(),
        config: DestinationConfig::Webhook {
            url: url.to_owned(),
            secret: secret.map(Secret::new),
            sources: vec!["web".into()],
        },
        rate: None,
    }
}

pub async fn create(sync: &Sync, new: NewDestination) -> Destination {
    sync.create(new).await.unwrap()
}

/// How a receiver answers the next request.
#[derive(Debug, Clone)]
pub enum Reply {
    Status(u16),
    TooMany { retry_after: String },
    Hang(Duration),
}

#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub status: u16,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

#[derive(Default)]
pub struct ReceiverState {
    pub requests: Mutex<Vec<Received>>,
    pub script: Mutex<VecDeque<Reply>>,
    /// A batch holding one of these ids is answered 400.
    pub poison: Mutex<HashSet<String>>,
    /// Every request is answered 503 while set.
    pub down: Mutex<bool>,
    /// Echo the request's `Authorization` in error bodies (a careless receiver).
    pub echo_auth: Mutex<bool>,
}

#[derive(Clone)]
pub struct Receiver {
    pub state: Arc<ReceiverState>,
    pub addr: SocketAddr,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Receiver::serve(listener).await
    }

    pub async fn serve(listener: tokio::net::TcpListener) -> Receiver {
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ReceiverState::default());
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&state));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { state, addr }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.script.lock().unwrap().extend(replies);
    }

    pub fn requests(&self) -> Vec<Received> {
        self.state.requests.lock().unwrap().clone()
    }

    /// The `messageId`s of the batches answered 2xx, in order.
    pub fn delivered_ids(&self) -> Vec<String> {
        self.requests()
            .iter()
            .filter(|r| (200..300).contains(&r.status))
            .flat_map(|r| {
                r.json()["batch"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|m| m["messageId"].as_str().unwrap_or_default().to_owned())
            })
            .collect()
    }

    /// Waits until `n` messages were delivered.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let ids = self.delivered_ids();
            let unique: HashSet<&String> = ids.iter().collect();
            if unique.len() >= n || Instant::now() > deadline {
                return ids;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn handle(
    State(state): State<Arc<ReceiverState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = state.script.lock().unwrap().pop_front();
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let echo = *state.echo_auth.lock().unwrap();
    let (status, answer): (u16, Response) = match reply {
        Some(Reply::Hang(duration)) => {
            tokio::time::sleep(duration).await;
            (200, StatusCode::OK.into_response())
        }
        Some(Reply::Status(status)) => {
            let text = if echo {
                format!("failed; you sent {auth}")
            } else {
                "failed".to_owned()
            };
            (
                status,
                (StatusCode::from_u16(status).unwrap(), text).into_response(),
            )
        }
        Some(Reply::TooMany { retry_after }) => (
            429,
            (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", retry_after)],
                "slow down",
            )
                .into_response(),
        ),
        None => {
            let poisoned = {
                // Any request naming a poisoned id (a `messageId`, a `unique_id`).
                let poison = state.poison.lock().unwrap();
                let text = String::from_utf8_lossy(&body);
                poison
                    .iter()
                    .find(|id| text.contains(&format!("\"{id}\"")))
                    .cloned()
            };
            if *state.down.lock().unwrap() {
                (
                    503,
                    (StatusCode::SERVICE_UNAVAILABLE, "down").into_response(),
                )
            } else if let Some(id) = poisoned {
                let text = if echo {
                    format!("{{\"error\":\"cannot take {id}\",\"auth\":\"{auth}\"}}")
                } else {
                    format!("{{\"error\":\"cannot take {id}\"}}")
                };
                (400, (StatusCode::BAD_REQUEST, text).into_response())
            } else {
                ok_answer(uri.path(), &parsed)
            }
        }
    };
    state.requests.lock().unwrap().push(Received {
        at: Instant::now(),
        path: uri.path().to_owned(),
        headers,
        body: body.to_vec(),
        status,
    });
    answer
}

/// What a healthy receiver answers: Segment and webhooks 200, Klaviyo's API as Klaviyo does.
fn ok_answer(path: &str, body: &Value) -> (u16, Response) {
    if path == "/api/profile-import" {
        let email = body["data"]["attributes"]["email"].as_str().unwrap_or("x");
        let answer = json!({ "data": { "type": "profile", "id": format!("P-{email}") } });
        return (200, (StatusCode::OK, axum::Json(answer)).into_response());
    }
    if path == "/api/event-bulk-create-jobs" {
        return (202, StatusCode::ACCEPTED.into_response());
    }
    if path.starts_with("/api/lists/") {
        return (204, StatusCode::NO_CONTENT.into_response());
    }
    (200, (StatusCode::OK, "{\"success\":true}").into_response())
}

/// Each id once at least, and in order of first delivery equal to `expected`.
pub fn assert_all_in_order(delivered: &[String], expected: &[String]) {
    let mut seen = HashSet::new();
    let firsts: Vec<&String> = delivered.iter().filter(|id| seen.insert(*id)).collect();
    let expected: Vec<&String> = expected.iter().collect();
    assert_eq!(firsts.len(), expected.len(), "every id delivered");
    assert_eq!(firsts, expected, "in log order");
}
