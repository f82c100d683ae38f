//! `/admin/v1/destinations` on a real server with the sync engine running over a temporary
//! `sync.db`: create, read, change and delete destinations, their status, dead letters,
//! replays and deliveries; errors that name the field; secrets never answered back; the admin
//! scope; the destination metrics on `/metrics`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::post;
use axum::Router;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use signalbox_core::{Scopes, SystemClock};
use signalbox_outbound::{OutboundClient, OutboundConfig};
use signalbox_server::{Application, ServerConfig, ServerError};
use signalbox_store::sqlite::SqliteOptions;
use signalbox_store::{SqliteStore, Store};
use signalbox_sync::{SqliteSyncStore, SyncDeps};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::helpers::{basic, track};

/// Secrets long enough that their last four characters show; none of them may appear whole in
/// any answer.
const WRITE_KEY: &str = "wk-segment-3f9c2a7e51d04b8c";
const API_KEY: &str = "pk_klaviyo_8d1e6b0c4a7f2e95";
const WEBHOOK_SECRET: &str = "whsec-0b5e7d9a2c4f6e81";
const ROTATED_KEY: &str = "wk-rotated-6a2d8f0b3c5e7a91";

struct Server {
    address: String,
    client: reqwest::Client,
    /// A private key with the `admin` scope.
    admin: String,
    /// A private key with every Klaviyo scope but not `admin`.
    full: String,
    write_key: String,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServerError>>>,
    _dir: TempDir,
}

struct Answer {
    status: StatusCode,
    text: String,
    body: Value,
}

impl Answer {
    #[track_caller]
    fn expect(&self, status: u16) -> &Value {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        &self.body
    }

    /// A 400 naming `field`.
    #[track_caller]
    fn expect_invalid(&self, field: &str) {
        assert_eq!(self.status, StatusCode::BAD_REQUEST, "{}", self.text);
        assert_eq!(self.body["error"]["code"], "invalid_field", "{}", self.text);
        assert_eq!(self.body["error"]["field"], field, "{}", self.text);
        let message = self.body["error"]["message"].as_str().unwrap_or_default();
        assert!(!message.is_empty(), "{}", self.text);
    }
}

async fn spawn() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(dir.path().join("signalbox.db"), SqliteOptions::default()).unwrap(),
    );
    let (_, write_key) = store.create_source("test").await.unwrap();
    let (_, admin) = store
        .create_api_key("admin", &Scopes::parse(["admin"]).unwrap())
        .await
        .unwrap();
    let (_, full) = store
        .create_api_key("full", &Scopes::parse(["full"]).unwrap())
        .await
        .unwrap();
    let clock = Arc::new(SystemClock);
    let mut app = Application::build(
        Arc::clone(&store),
        clock.clone(),
        ServerConfig::default(),
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .unwrap();
    let outbound = OutboundClient::new(OutboundConfig {
        allow_private_destinations: true,
        ..OutboundConfig::default()
    })
    .unwrap();
    app.set_sync(signalbox_sync::Sync::start(SyncDeps {
        store: Arc::new(SqliteSyncStore::open(&dir.path().join("sync.db")).unwrap()),
        calls: Arc::clone(&store),
        engage: None,
        outbound,
        clock,
    }));
    let address = format!("http://{}", app.local_addr());
    let (shutdown, stop) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run(async {
        let _ = stop.await;
    }));
    Server {
        address,
        client: reqwest::Client::new(),
        admin: admin.expose().to_owned(),
        full: full.expose().to_owned(),
        write_key: write_key.expose().to_owned(),
        shutdown: Some(shutdown),
        task: Some(task),
        _dir: dir,
    }
}

impl Server {
    async fn send_as(
        &self,
        key: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Answer {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.address));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("send");
        let status = response.status();
        let text = response.text().await.expect("read the body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer { status, text, body }
    }

    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        self.send_as(Some(&self.admin), method, path, body).await
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> Answer {
        self.send(Method::POST, path, Some(body)).await
    }

    async fn patch(&self, path: &str, body: Value) -> Answer {
        self.send(Method::PATCH, path, Some(body)).await
    }

    async fn delete(&self, path: &str) -> Answer {
        self.send(Method::DELETE, path, None).await
    }

    async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

fn segment_body(name: &str) -> Value {
    json!({
        "name": name,
        "kind": "segment",
        "write_key": WRITE_KEY,
        "endpoint": "http://127.0.0.1:9",
        "only_segment_profiles": true,
        "rate": "50/s",
    })
}

fn klaviyo_body(name: &str) -> Value {
    json!({
        "name": name,
        "kind": "klaviyo",
        "api_key": API_KEY,
        "endpoint": "http://127.0.0.1:9",
        "sources": ["test"],
    })
}

fn webhook_body(name: &str, url: &str) -> Value {
    json!({
        "name": name,
        "kind": "webhook",
        "url": url,
        "secret": WEBHOOK_SECRET,
        "sources": ["test"],
        "rate": 200,
    })
}

#[tokio::test]
async fn destinations_are_created_read_changed_and_deleted() {
    let server = spawn().await;
    let created = server
        .post("/admin/v1/destinations", segment_body("back"))
        .await;
    let segment = created.expect(201);
    assert_eq!(segment["name"], "back");
    assert_eq!(segment["kind"], "segment");
    assert_eq!(segment["state"], "active");
    assert_eq!(segment["rate"], 50.0);
    assert_eq!(segment["endpoint"], "http://127.0.0.1:9");
    assert_eq!(segment["only_segment_profiles"], true);
    assert_eq!(
        segment["write_key"],
        format!("••••{}", &WRITE_KEY[WRITE_KEY.len() - 4..])
    );
    assert!(
        segment["id"].as_str().unwrap().starts_with("dst_"),
        "{segment}"
    );

    let klaviyo = server
        .post("/admin/v1/destinations", klaviyo_body("fwd"))
        .await;
    assert_eq!(klaviyo.expect(201)["sources"], json!(["test"]));
    assert_eq!(klaviyo.body["rate"], Value::Null);
    let hook = server
        .post(
            "/admin/v1/destinations",
            webhook_body("hook", "http://127.0.0.1:9/hook"),
        )
        .await;
    assert_eq!(hook.expect(201)["url"], "http://127.0.0.1:9/hook");

    // The defaults: Segment's and Klaviyo's hosts.
    let mut defaults = segment_body("us");
    defaults.as_object_mut().unwrap().remove("endpoint");
    let us = server.post("/admin/v1/destinations", defaults).await;
    assert_eq!(
        us.expect(201)["endpoint"],
        signalbox_sync::SEGMENT_US_ENDPOINT
    );
    let mut defaults = klaviyo_body("kl");
    defaults.as_object_mut().unwrap().remove("endpoint");
    let kl = server.post("/admin/v1/destinations", defaults).await;
    assert_eq!(kl.expect(201)["endpoint"], signalbox_sync::KLAVIYO_ENDPOINT);

    let list = server.get("/admin/v1/destinations").await;
    let names: Vec<&str> = list.expect(200)["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    for name in ["back", "fwd", "hook", "us", "kl"] {
        assert!(names.contains(&name), "{names:?}");
    }
    assert_eq!(names.len(), 5, "{names:?}");

    let again = server
        .post("/admin/v1/destinations", segment_body("back"))
        .await;
    again.expect(409);
    assert_eq!(again.body["error"]["code"], "conflict");

    let paused = server
        .patch(
            "/admin/v1/destinations/back",
            json!({"state": "paused", "rate": 10, "only_segment_profiles": false}),
        )
        .await;
    let paused = paused.expect(200);
    assert_eq!(paused["state"], "paused");
    assert_eq!(paused["rate"], 10.0);
    assert_eq!(paused["only_segment_profiles"], false);
    let read = server.get("/admin/v1/destinations/back").await;
    assert_eq!(read.expect(200)["state"], "paused");

    let resumed = server
        .patch(
            "/admin/v1/destinations/back",
            json!({"state": "active", "rate": null, "endpoint": "http://127.0.0.1:10"}),
        )
        .await;
    let resumed = resumed.expect(200);
    assert_eq!(resumed["state"], "active");
    assert_eq!(resumed["rate"], Value::Null);
    assert_eq!(resumed["endpoint"], "http://127.0.0.1:10");

    let sources = server
        .patch(
            "/admin/v1/destinations/hook",
            json!({"url": "http://127.0.0.1:10/hook2"}),
        )
        .await;
    assert_eq!(sources.expect(200)["url"], "http://127.0.0.1:10/hook2");

    server
        .delete("/admin/v1/destinations/back")
        .await
        .expect(204);
    server.get("/admin/v1/destinations/back").await.expect(404);
    let list = server.get("/admin/v1/destinations").await;
    assert_eq!(list.expect(200)["data"].as_array().unwrap().len(), 4);
    server.stop().await;
}

#[tokio::test]
async fn status_dead_letters_replay_and_deliveries_answer() {
    let server = spawn().await;
    server
        .post(
            "/admin/v1/destinations",
            webhook_body("hook", "http://127.0.0.1:9/hook"),
        )
        .await
        .expect(201);
    let status = server.get("/admin/v1/destinations/hook/status").await;
    let status = status.expect(200);
    assert_eq!(status["name"], "hook");
    assert_eq!(status["kind"], "webhook");
    for field in [
        "delivered",
        "queued",
        "retrying",
        "failed",
        "dead_lettered",
        "lag_seconds",
        "last_error",
        "throughput",
        "circuit",
    ] {
        assert!(status.get(field).is_some(), "no {field} in {status}");
    }
    let letters = server.get("/admin/v1/destinations/hook/dead-letters").await;
    assert!(letters.expect(200)["data"].is_array());
    let deliveries = server
        .get("/admin/v1/destinations/hook/deliveries?limit=5")
        .await;
    assert!(deliveries.expect(200)["data"].is_array());

    let replay = server
        .post(
            "/admin/v1/destinations/hook/replay",
            json!({"dead_letters": true}),
        )
        .await;
    assert_eq!(replay.expect(202)["replay"], "dead_letters");
    let replay = server
        .post(
            "/admin/v1/destinations/hook/replay",
            json!({"since": "2024-05-01T12:00:00Z"}),
        )
        .await;
    assert_eq!(
        replay.expect(202)["replay"],
        json!({"since": "2024-05-01T12:00:00Z"})
    );
    server.stop().await;
}

#[tokio::test]
async fn bad_input_is_refused_naming_the_field() {
    let server = spawn().await;
    let create = |body: Value| server.post("/admin/v1/destinations", body);
    create(json!({"kind": "segment", "write_key": WRITE_KEY}))
        .await
        .expect_invalid("name");
    create(json!({"name": "x", "kind": "kafka"}))
        .await
        .expect_invalid("kind");
    create(json!({"name": "x", "kind": "segment"}))
        .await
        .expect_invalid("write_key");
    create(json!({"name": "x", "kind": "segment", "write_key": ""}))
        .await
        .expect_invalid("write_key");
    create(json!({"name": "x", "kind": "klaviyo", "api_key": API_KEY}))
        .await
        .expect_invalid("sources");
    create(json!({"name": "x", "kind": "webhook", "sources": ["test"]}))
        .await
        .expect_invalid("url");
    // A field of another kind is named, not silently ignored.
    let mut hook = webhook_body("x", "http://127.0.0.1:9/");
    hook["write_key"] = json!(WRITE_KEY);
    create(hook).await.expect_invalid("write_key");
    let mut segment = segment_body("x");
    segment["sources"] = json!(["test"]);
    create(segment).await.expect_invalid("sources");
    let mut segment = segment_body("x");
    segment["colour"] = json!("blue");
    create(segment).await.expect_invalid("colour");
    for rate in [json!(0), json!(-1), json!("fast"), json!(true)] {
        let mut segment = segment_body("x");
        segment["rate"] = rate;
        create(segment).await.expect_invalid("rate");
    }
    let mut segment = segment_body("x");
    segment["only_segment_profiles"] = json!("yes");
    create(segment)
        .await
        .expect_invalid("only_segment_profiles");
    let not_object = server
        .send(Method::POST, "/admin/v1/destinations", Some(json!([1])))
        .await;
    not_object.expect(400);
    assert_eq!(not_object.body["error"]["code"], "invalid_body");

    server
        .post("/admin/v1/destinations", segment_body("back"))
        .await
        .expect(201);
    let patch = |body: Value| server.patch("/admin/v1/destinations/back", body);
    patch(json!({"state": "sleeping"}))
        .await
        .expect_invalid("state");
    patch(json!({"rate": "0/s"})).await.expect_invalid("rate");
    patch(json!({"api_key": API_KEY}))
        .await
        .expect_invalid("api_key");
    patch(json!({"sources": ["test"]}))
        .await
        .expect_invalid("sources");
    patch(json!({"secret": ROTATED_KEY, "write_key": ROTATED_KEY}))
        .await
        .expect_invalid("write_key");
    patch(json!({"secret": ""})).await.expect_invalid("secret");

    let replay = |body: Value| server.post("/admin/v1/destinations/back/replay", body);
    replay(json!({})).await.expect_invalid("dead_letters");
    replay(json!({"dead_letters": false}))
        .await
        .expect_invalid("dead_letters");
    replay(json!({"dead_letters": true, "since": "2024-05-01T12:00:00Z"}))
        .await
        .expect_invalid("since");
    replay(json!({"since": "yesterday"}))
        .await
        .expect_invalid("since");
    server
        .get("/admin/v1/destinations/back/deliveries?limit=0")
        .await
        .expect_invalid("limit");
    server.stop().await;
}

#[tokio::test]
async fn an_unknown_name_is_404() {
    let server = spawn().await;
    let answers = [
        server.get("/admin/v1/destinations/nope").await,
        server
            .patch("/admin/v1/destinations/nope", json!({"state": "paused"}))
            .await,
        server.delete("/admin/v1/destinations/nope").await,
        server.get("/admin/v1/destinations/nope/status").await,
        server.get("/admin/v1/destinations/nope/dead-letters").await,
        server
            .post(
                "/admin/v1/destinations/nope/replay",
                json!({"dead_letters": true}),
            )
            .await,
        server.get("/admin/v1/destinations/nope/deliveries").await,
    ];
    for answer in answers {
        answer.expect(404);
        assert_eq!(answer.body["error"]["code"], "not_found", "{}", answer.text);
        assert!(
            answer.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("nope"),
            "{}",
            answer.text
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn every_route_needs_the_admin_scope() {
    let server = spawn().await;
    server
        .post("/admin/v1/destinations", segment_body("back"))
        .await
        .expect(201);
    let routes = [
        (Method::GET, "/admin/v1/destinations", None),
        (
            Method::POST,
            "/admin/v1/destinations",
            Some(segment_body("other")),
        ),
        (Method::GET, "/admin/v1/destinations/back", None),
        (
            Method::PATCH,
            "/admin/v1/destinations/back",
            Some(json!({"state": "paused"})),
        ),
        (Method::DELETE, "/admin/v1/destinations/back", None),
        (Method::GET, "/admin/v1/destinations/back/status", None),
        (
            Method::GET,
            "/admin/v1/destinations/back/dead-letters",
            None,
        ),
        (
            Method::POST,
            "/admin/v1/destinations/back/replay",
            Some(json!({"dead_letters": true})),
        ),
        (Method::GET, "/admin/v1/destinations/back/deliveries", None),
    ];
    for (method, path, body) in routes {
        let answer = server
            .send_as(Some(&server.full), method.clone(), path, body.clone())
            .await;
        answer.expect(403);
        assert_eq!(answer.body["error"]["code"], "permission_denied");
        let answer = server.send_as(None, method.clone(), path, body).await;
        answer.expect(401);
    }
    // Nothing changed: the destination is still there, active.
    let back = server.get("/admin/v1/destinations/back").await;
    assert_eq!(back.expect(200)["state"], "active");
    let list = server.get("/admin/v1/destinations").await;
    assert_eq!(list.expect(200)["data"].as_array().unwrap().len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn no_answer_carries_a_secret() {
    let server = spawn().await;
    let mut answers = Vec::new();
    answers.push(
        server
            .post("/admin/v1/destinations", segment_body("back"))
            .await,
    );
    answers.push(
        server
            .post("/admin/v1/destinations", klaviyo_body("fwd"))
            .await,
    );
    answers.push(
        server
            .post(
                "/admin/v1/destinations",
                webhook_body("hook", "http://127.0.0.1:9/hook"),
            )
            .await,
    );
    // A refused create that carries secrets does not echo them either.
    let mut bad = segment_body("bad");
    bad["api_key"] = json!(API_KEY);
    answers.push(server.post("/admin/v1/destinations", bad).await);
    answers.push(
        server
            .patch(
                "/admin/v1/destinations/back",
                json!({"write_key": ROTATED_KEY}),
            )
            .await,
    );
    answers.push(server.get("/admin/v1/destinations").await);
    for name in ["back", "fwd", "hook"] {
        for suffix in ["", "/status", "/dead-letters", "/deliveries"] {
            answers.push(
                server
                    .get(&format!("/admin/v1/destinations/{name}{suffix}"))
                    .await,
            );
        }
        answers.push(
            server
                .post(
                    &format!("/admin/v1/destinations/{name}/replay"),
                    json!({"dead_letters": true}),
                )
                .await,
        );
    }
    for answer in &answers {
        for secret in [WRITE_KEY, API_KEY, WEBHOOK_SECRET, ROTATED_KEY] {
            assert!(
                !answer.text.contains(secret),
                "an answer shows a secret: {}",
                answer.text
            );
        }
    }
    let back = server.get("/admin/v1/destinations/back").await;
    assert_eq!(
        back.expect(200)["write_key"],
        format!("••••{}", &ROTATED_KEY[ROTATED_KEY.len() - 4..])
    );
    server.stop().await;
}

/// A receiver that answers its first request 503 (`Retry-After: 1`), refuses for good (400)
/// any body holding a call named "Poisoned", and takes the rest (200).
async fn receiver() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let app = Router::new().route(
        "/hook",
        post(move |body: String| {
            let seen = Arc::clone(&seen);
            async move {
                if seen.fetch_add(1, Ordering::SeqCst) == 0 {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        [("retry-after", "1")],
                        "busy",
                    )
                } else if body.contains("Poisoned") {
                    (StatusCode::BAD_REQUEST, [("retry-after", "0")], "never")
                } else {
                    (StatusCode::OK, [("retry-after", "0")], "ok")
                }
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{address}/hook")
}

impl Server {
    async fn track(&self, message_id: &str, event: &str) {
        let mut call = track(message_id);
        call["event"] = json!(event);
        let sent = self
            .client
            .post(format!("{}/v1/batch", self.address))
            .header("authorization", basic(&self.write_key, true))
            .json(&json!({"batch": [call]}))
            .send()
            .await
            .unwrap();
        assert_eq!(sent.status(), StatusCode::OK);
    }

    /// `/metrics` once `line` (a series and its value) is in it, or after 30 s.
    async fn metrics_with(&self, line: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = self
                .client
                .get(format!("{}/metrics", self.address))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            if text.lines().any(|l| l == line) || Instant::now() > deadline {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test]
async fn metrics_show_each_destination() {
    let server = spawn().await;
    let url = receiver().await;
    server
        .post("/admin/v1/destinations", webhook_body("metered", &url))
        .await
        .expect(201);
    // Refused once (503), then delivered.
    server.track("metered-1", "Order Completed").await;
    let text = server
        .metrics_with("signalbox_destination_delivered_total{destination=\"metered\"} 1")
        .await;
    assert!(
        text.contains("signalbox_destination_retried_total{destination=\"metered\"} 1"),
        "{text}"
    );
    // Refused for good: a dead letter.
    server.track("metered-2", "Poisoned").await;
    let text = server
        .metrics_with("signalbox_destination_dead_lettered_total{destination=\"metered\"} 1")
        .await;
    for name in [
        "signalbox_destination_delivered_total",
        "signalbox_destination_retried_total",
        "signalbox_destination_dead_lettered_total",
        "signalbox_destination_lag_seconds",
    ] {
        assert!(
            text.contains(&format!("{name}{{destination=\"metered\"}}")),
            "no {name} for the destination in /metrics:\n{text}"
        );
        assert!(text.contains(&format!("# HELP {name} ")), "{text}");
    }
    let letters = server
        .get("/admin/v1/destinations/metered/dead-letters")
        .await;
    let letters = letters.expect(200)["data"].as_array().unwrap().clone();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["status"], 400);
    server.stop().await;
}
