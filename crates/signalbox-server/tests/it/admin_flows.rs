//! `/admin/v1/flows/{id}/messages` on a real server: a manual flow's messages held for review
//! are listed, approved (sent once to a real SMTP server, however often approved) and skipped;
//! errors name the field; the `admin` scope is required.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use signalbox_core::{Clock, Scopes, SystemClock};
use signalbox_engage::{ApiEventInput, Engage, EngageConfig, MetricQuery, ProfileInput};
use signalbox_flows::{FlowInfo, FlowMail, FlowStatus, Flows, FlowsConfig};
use signalbox_mail::{Composer, LinkSigner, Mailer, MailerConfig, TrackingLinks};
use signalbox_server::{Application, ServerConfig, ServerError};
use signalbox_store::sqlite::SqliteOptions;
use signalbox_store::{SqliteStore, Store};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::sink::SmtpSink;

struct Server {
    address: String,
    client: reqwest::Client,
    /// A private key with the `admin` scope.
    admin: String,
    /// A private key with every Klaviyo scope but not `admin`.
    full: String,
    engage: Engage,
    flows: Flows,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServerError>>>,
    _dir: TempDir,
}

fn mail_for(url: &str) -> FlowMail {
    let mut config = MailerConfig::new(url.parse().expect("smtp url"), "Shop <shop@example.com>");
    config.hello_name = Some("localhost".into());
    let links = TrackingLinks::new(
        LinkSigner::new(b"a long random link secret for the review tests").expect("signer"),
        "https://mail.example.com",
    )
    .expect("links");
    FlowMail {
        mailer: Mailer::new(config).expect("mailer"),
        composer: Composer::new(links, None),
    }
}

impl Server {
    async fn spawn(sink: &SmtpSink) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(dir.path().join("signalbox.db"), SqliteOptions::default())
                .expect("open store"),
        );
        let (_, admin) = store
            .create_api_key("admin", &Scopes::parse(["admin"]).unwrap())
            .await
            .unwrap();
        let (_, full) = store
            .create_api_key("full", &Scopes::parse(["full"]).unwrap())
            .await
            .unwrap();
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
            Arc::clone(&clock),
            ServerConfig::default(),
            SocketAddr::from(([127, 0, 0, 1], 0)),
        )
        .await
        .expect("build the application");
        let mut config = FlowsConfig::new(dir.path().join("flows.db"));
        config.mail = Some(mail_for(&sink.url()));
        config.poll_interval = Duration::from_millis(50);
        let flows = Flows::start(
            engage.clone(),
            clock,
            config,
            signalbox_server::flow_deps::flow_deps(
                &engage,
                None,
                None,
                tokio::runtime::Handle::current(),
            ),
        )
        .await
        .expect("start flows");
        application.set_engine(
            crate::helpers::engine(&engage, dir.path(), None, Some(flows.clone())).await,
        );
        let address = format!("http://{}", application.local_addr());
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = tokio::spawn(application.run(async {
            let _ = stop.await;
        }));
        Server {
            address,
            client: reqwest::Client::new(),
            admin: admin.expose().to_owned(),
            full: full.expose().to_owned(),
            engage,
            flows,
            shutdown: Some(shutdown),
            task: Some(task),
            _dir: dir,
        }
    }

    async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("server stopped");
        }
    }

    async fn call(&self, method: Method, path: &str, key: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .request(method, format!("{}{path}", self.address))
            .bearer_auth(key)
            .send()
            .await
            .expect("send");
        let status = response.status();
        let text = response.text().await.expect("read");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn admin(&self, method: Method, path: &str) -> (StatusCode, Value) {
        self.call(method, path, &self.admin).await
    }

    async fn ping(&self, email: &str) {
        self.engage
            .create_events(vec![ApiEventInput {
                metric_name: "Ping".into(),
                profile: ProfileInput {
                    email: Some(email.into()),
                    first_name: Some("Pia".into()),
                    ..ProfileInput::default()
                },
                properties: serde_json::Map::new(),
                ..ApiEventInput::default()
            }])
            .await
            .expect("an event");
    }

    /// Engage applied everything and the flows engine did everything due.
    async fn settle(&self) {
        self.engage
            .catch_up(Duration::from_secs(30))
            .await
            .expect("the pipeline catches up");
        tokio::time::timeout(Duration::from_secs(30), self.flows.sync())
            .await
            .expect("flows settle in time")
            .expect("flows settle");
    }

    /// A manual flow: `Ping` → email "First" → email "Second".
    async fn manual_flow(&self) -> FlowInfo {
        self.ping("seed@example.org").await;
        self.settle().await;
        let metric = self
            .engage
            .list_metrics(MetricQuery::default())
            .await
            .expect("metrics")
            .items
            .into_iter()
            .find(|m| m.name == "Ping")
            .expect("the Ping metric")
            .id
            .0;
        let email = |id: &str, subject: &str, next: Value| {
            json!({"temporary_id": id, "type": "send-email", "data": {"status": "live",
                "message": {"subject_line": subject, "html": "<p>Hi {{ first_name }}</p>",
                    "smart_sending_enabled": false}},
                "links": {"next": next}})
        };
        self.flows
            .create_flow(
                "Reviewed",
                &json!({
                    "triggers": [{"type": "metric", "id": metric}],
                    "entry_action_id": "e1",
                    "actions": [email("e1", "First", json!("e2")), email("e2", "Second", Value::Null)]
                }),
                Some(FlowStatus::Manual),
            )
            .await
            .expect("a manual flow")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_messages_are_listed_approved_once_and_skipped_over_http() {
    let sink = SmtpSink::plain();
    let server = Server::spawn(&sink).await;
    let flow = server.manual_flow().await;
    let id = &flow.id;
    server.ping("p@example.com").await;
    server.settle().await;
    assert!(sink.messages().is_empty(), "held, not sent");

    let (status, page) = server
        .admin(
            Method::GET,
            &format!("/admin/v1/flows/{id}/messages?status=pending"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let data = page["data"].as_array().expect("data");
    assert_eq!(data.len(), 1, "{page}");
    assert_eq!(page["next"], Value::Null);
    let held = &data[0];
    assert_eq!(held["flowId"], flow.id.as_str());
    assert_eq!(held["actionId"], flow.definition.actions[0].id.as_str());
    assert_eq!(held["kind"], "send-email");
    assert_eq!(held["email"], "p@example.com");
    assert_eq!(held["subject"], "First");
    assert_eq!(held["status"], "pending");
    assert!(held["expires"].is_string(), "{held}");
    let message = held["id"].as_i64().expect("an id");

    // Approved twice: one email.
    let approve = format!("/admin/v1/flows/{id}/messages/{message}/approve");
    let (status, body) = server.admin(Method::POST, &approve).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "approved");
    let (status, body) = server.admin(Method::POST, &approve).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    server.settle().await;
    let sent = sink.wait_for(1);
    assert!(
        String::from_utf8_lossy(&sent[0].raw).contains("Subject: First"),
        "{}",
        String::from_utf8_lossy(&sent[0].raw)
    );
    server.admin(Method::POST, &approve).await;
    server.settle().await;
    assert_eq!(sink.messages().len(), 1, "approved, sent once");

    // The next message is held in turn; skipped, it is never sent and the run completes.
    let (_, page) = server
        .admin(
            Method::GET,
            &format!("/admin/v1/flows/{id}/messages?status=pending"),
        )
        .await;
    let next = page["data"][0]["id"].as_i64().expect("the second message");
    assert_eq!(page["data"][0]["subject"], "Second");
    let skip = format!("/admin/v1/flows/{id}/messages/{next}/skip");
    let (status, body) = server.admin(Method::POST, &skip).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "skipped");
    let (status, body) = server
        .admin(
            Method::POST,
            &format!("/admin/v1/flows/{id}/messages/{next}/approve"),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
    assert_eq!(body["error"]["field"], "message_id");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("skipped"),
        "{body}"
    );
    server.settle().await;
    assert_eq!(sink.messages().len(), 1);
    let stats = server.flows.stats(id).await.unwrap();
    assert_eq!(stats.flow.get("skipped:manual"), 1, "{stats:?}");
    assert_eq!(stats.flow.get("sent"), 1, "{stats:?}");
    assert_eq!(stats.flow.get("completed"), 1, "{stats:?}");

    // Every status, and one status at a time.
    let (_, all) = server
        .admin(Method::GET, &format!("/admin/v1/flows/{id}/messages"))
        .await;
    let statuses: Vec<&str> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["approved", "skipped"], "{all}");
    let (_, pending) = server
        .admin(
            Method::GET,
            &format!("/admin/v1/flows/{id}/messages?status=pending"),
        )
        .await;
    assert_eq!(pending["data"], json!([]));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_errors_name_the_field_and_need_the_admin_scope() {
    let sink = SmtpSink::plain();
    let server = Server::spawn(&sink).await;
    let flow = server.manual_flow().await;
    let id = &flow.id;
    for (path, field) in [
        (
            format!("/admin/v1/flows/{id}/messages?status=waiting"),
            "status",
        ),
        (format!("/admin/v1/flows/{id}/messages?after=x"), "after"),
        (format!("/admin/v1/flows/{id}/messages?limit=0"), "limit"),
    ] {
        let (status, body) = server.admin(Method::GET, &path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!(body["error"]["code"], "invalid_field", "{body}");
        assert_eq!(body["error"]["field"], field, "{body}");
    }
    let (status, body) = server
        .admin(
            Method::POST,
            &format!("/admin/v1/flows/{id}/messages/abc/approve"),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["field"], "message_id", "{body}");
    let (status, body) = server
        .admin(
            Method::POST,
            &format!("/admin/v1/flows/{id}/messages/424242/skip"),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["code"], "not_found", "{body}");
    assert_eq!(body["error"]["field"], "message_id", "{body}");
    let (status, body) = server
        .admin(Method::GET, "/admin/v1/flows/NOSUCH/messages")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("flow NOSUCH"),
        "{body}"
    );

    // A key without `admin` is refused; no key at all is a 401.
    let path = format!("/admin/v1/flows/{id}/messages");
    let (status, body) = server.call(Method::GET, &path, &server.full).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let response = server
        .client
        .post(format!(
            "{}/admin/v1/flows/{id}/messages/1/approve",
            server.address
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    server.stop().await;
}
