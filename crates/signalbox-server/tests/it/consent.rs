//! Consent over real HTTP: a write key is public, so a Tracking API call can neither
//! subscribe again a person who unsubscribed nor skip a double opt-in; the signed consent
//! links change nothing on GET or HEAD (link scanners) and act on POST; a subscription through
//! the Klaviyo API with a private key subscribes again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use signalbox_core::{Clock, SystemClock, WriteKey};
use signalbox_engage::{Engage, EngageConfig, OutboxChange};
use signalbox_server::{Application, ServerConfig, ServerError};
use signalbox_store::sqlite::SqliteOptions;
use signalbox_store::{SqliteStore, Store};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::helpers::{basic, SOURCE};

/// A server with the engage pipeline, on `127.0.0.1:0` (also used by `forwarded.rs`).
pub(crate) struct ConsentApp {
    address: String,
    http: reqwest::Client,
    write_key: WriteKey,
    api_key: String,
    pub(crate) engage: Engage,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), ServerError>>>,
    _dir: TempDir,
}

impl ConsentApp {
    pub(crate) async fn spawn() -> ConsentApp {
        let dir = tempfile::tempdir().expect("temp dir");
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(dir.path().join("signalbox.db"), SqliteOptions::default())
                .expect("open store"),
        );
        let (_, write_key) = store.create_source(SOURCE).await.expect("create source");
        let (_, api_key) = store
            .create_api_key(
                "consent",
                &signalbox_core::Scopes::parse(["full", "admin"]).expect("scopes"),
            )
            .await
            .expect("api key");
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let engage = Engage::start(
            Arc::clone(&store),
            Arc::clone(&clock),
            EngageConfig::new(dir.path().join("engage.db")),
        )
        .await
        .expect("start engage");
        let mut application = Application::build(
            store,
            clock,
            ServerConfig::default(),
            SocketAddr::from(([127, 0, 0, 1], 0)),
        )
        .await
        .expect("build the application");
        application.set_engine(crate::helpers::engine(&engage, dir.path(), None, None).await);
        let address = format!("http://{}", application.local_addr());
        let (shutdown, stop) = oneshot::channel::<()>();
        let server = tokio::spawn(application.run(async {
            let _ = stop.await;
        }));
        ConsentApp {
            address,
            http: reqwest::Client::new(),
            write_key,
            api_key: api_key.expose().to_owned(),
            engage,
            shutdown: Some(shutdown),
            server: Some(server),
            _dir: dir,
        }
    }

    pub(crate) async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("server stopped");
        }
    }

    pub(crate) async fn settle(&self) {
        self.engage
            .catch_up(Duration::from_secs(30))
            .await
            .expect("the pipeline catches up");
    }

    /// A Klaviyo API or admin request with the private key; status and JSON body.
    pub(crate) async fn api(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.api_with(method, path, body, &[]).await
    }

    /// [`ConsentApp::api`] with more headers.
    pub(crate) async fn api_with(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.address))
            .header("Authorization", format!("Klaviyo-API-Key {}", self.api_key))
            .header("revision", "2026-07-15");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/vnd.api+json")
                .body(body.to_string());
        }
        let response = request.send().await.expect("send");
        let status = response.status();
        let text = response.text().await.expect("read");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// An identify through the Tracking API, signed with the source's (public) write key.
    pub(crate) async fn identify(&self, message: Value) {
        let response = self
            .http
            .post(format!("{}/v1/identify", self.address))
            .header("Authorization", basic(self.write_key.expose(), true))
            .json(&message)
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), StatusCode::OK);
    }

    pub(crate) async fn create_list(&self, name: &str, opt_in: &str) -> String {
        let (status, body) = self
            .api(
                Method::POST,
                "/api/lists",
                Some(json!({"data": {"type": "list",
                    "attributes": {"name": name, "opt_in_process": opt_in}}})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["data"]["id"].as_str().unwrap().to_owned()
    }

    async fn subscribe(&self, email: &str, list: &str) {
        let (status, body) = self
            .api(
                Method::POST,
                "/api/profile-subscription-bulk-create-jobs",
                Some(
                    json!({"data": {"type": "profile-subscription-bulk-create-job",
                    "attributes": {"profiles": {"data": [{"type": "profile",
                        "attributes": {"email": email, "subscriptions":
                            {"email": {"marketing": {"consent": "SUBSCRIBED"}}}}}]}},
                    "relationships": {"list": {"data": {"type": "list", "id": list}}}}}),
                ),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        self.settle().await;
    }

    /// `subscriptions.email.marketing` of the profile with this email.
    async fn marketing(&self, email: &str) -> Value {
        self.settle().await;
        let (status, body) = self
            .api(
                Method::GET,
                &format!(
                    "/api/profiles?filter=equals(email,%22{email}%22)\
                     &additional-fields%5Bprofile%5D=subscriptions"
                ),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["data"][0]["attributes"]["subscriptions"]["email"]["marketing"].clone()
    }

    async fn members(&self, list: &str) -> Vec<String> {
        self.settle().await;
        let (status, body) = self
            .api(Method::GET, &format!("/api/lists/{list}/profiles"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["attributes"]["email"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Pending members of a double opt-in list with their signed links.
    async fn pending(&self, list: &str) -> Vec<Value> {
        self.settle().await;
        let response = self
            .http
            .get(format!("{}/admin/v1/lists/{list}/pending", self.address))
            .header("Authorization", format!("Bearer {}", self.api_key))
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.expect("JSON");
        body["data"].as_array().unwrap().clone()
    }
}

#[tokio::test]
async fn a_write_key_identify_cannot_subscribe_again_or_skip_double_opt_in() {
    let app = ConsentApp::spawn().await;
    let news = app.create_list("News", "single_opt_in").await;
    let offers = app.create_list("Offers", "single_opt_in").await;
    let letters = app.create_list("Letters", "double_opt_in").await;

    // Gil subscribes through the API, then unsubscribes.
    app.subscribe("gil@example.com", &news).await;
    assert_eq!(
        app.marketing("gil@example.com").await["consent"],
        "SUBSCRIBED"
    );
    let (status, body) = app
        .api(
            Method::POST,
            "/api/profile-subscription-bulk-delete-jobs",
            Some(
                json!({"data": {"type": "profile-subscription-bulk-delete-job",
                "attributes": {"profiles": {"data": [{"type": "profile",
                    "attributes": {"email": "gil@example.com"}}]}}}}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let before = app.marketing("gil@example.com").await;
    assert_eq!(before["consent"], "UNSUBSCRIBED", "{before}");
    assert_eq!(before["suppression"][0]["reason"], "UNSUBSCRIBE");

    // A signup form's identify, as a browser sends it, naming other lists.
    for list in [&offers, &letters] {
        app.identify(
            json!({"userId": "gil", "traits": {"email": "gil@example.com"},
            "integrations": {"Klaviyo": {"listId": list, "confirmOptin": false}}}),
        )
        .await;
    }
    assert_eq!(app.marketing("gil@example.com").await, before);
    assert!(app.members(&offers).await.is_empty());
    assert!(app.pending(&letters).await.is_empty());

    // Someone new cannot be put on a double opt-in list as subscribed either.
    app.identify(
        json!({"userId": "ivy", "traits": {"email": "ivy@example.com"},
        "integrations": {"Klaviyo": {"listId": letters, "confirmOptin": false}}}),
    )
    .await;
    assert!(app.members(&letters).await.is_empty());
    let pending = app.pending(&letters).await;
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0]["email"], "ivy@example.com");
    assert_eq!(
        app.marketing("ivy@example.com").await["consent"],
        "NEVER_SUBSCRIBED"
    );

    // A subscription job with the private key subscribes Gil again.
    app.subscribe("gil@example.com", &offers).await;
    let after = app.marketing("gil@example.com").await;
    assert_eq!(after["consent"], "SUBSCRIBED", "{after}");
    assert_eq!(after["can_receive_email_marketing"], true);
    assert_eq!(app.members(&offers).await, ["gil@example.com"]);
    app.stop().await;
}

#[tokio::test]
async fn consent_links_change_nothing_on_get_or_head_and_act_on_post() {
    let app = ConsentApp::spawn().await;
    let letters = app
        .create_list("Letters <&> \"more\"", "double_opt_in")
        .await;
    app.identify(
        json!({"userId": "jo", "traits": {"email": "jo@example.com"},
        "integrations": {"Klaviyo": {"listId": letters}}}),
    )
    .await;
    let pending = app.pending(&letters).await;
    assert_eq!(pending.len(), 1, "{pending:?}");
    let confirm = pending[0]["confirmUrl"].as_str().unwrap().to_owned();
    let unsubscribe = pending[0]["unsubscribeUrl"].as_str().unwrap().to_owned();
    assert!(confirm.starts_with(&format!("{}/c/", app.address)));
    let before = app.marketing("jo@example.com").await;
    assert_eq!(before["consent"], "NEVER_SUBSCRIBED");

    // A scanner fetches every link, twice, with GET and HEAD.
    let mut confirm_page = String::new();
    for _ in 0..2 {
        for url in [&confirm, &unsubscribe] {
            let got = app.http.get(url.as_str()).send().await.unwrap();
            assert_eq!(got.status(), StatusCode::OK, "{url}");
            let headers = got.headers().clone();
            assert_eq!(headers["cache-control"], "no-store");
            assert!(headers["x-robots-tag"]
                .to_str()
                .unwrap()
                .contains("noindex"));
            assert_eq!(headers["x-frame-options"], "DENY");
            assert!(headers.get("set-cookie").is_none());
            let page = got.text().await.unwrap();
            assert!(page.contains("<meta name=\"robots\" content=\"noindex\">"));
            if url == &confirm {
                confirm_page = page;
            }
            let head = app.http.head(url.as_str()).send().await.unwrap();
            assert_eq!(head.status(), StatusCode::OK, "{url}");
            assert_eq!(head.headers()["cache-control"], "no-store");
        }
    }
    assert_eq!(app.marketing("jo@example.com").await, before);
    assert!(app.members(&letters).await.is_empty());
    assert_eq!(app.pending(&letters).await.len(), 1);

    // The page escapes what it shows and posts the button to the link itself.
    assert!(
        confirm_page.contains("Letters &lt;&amp;&gt; &quot;more&quot;"),
        "{confirm_page}"
    );
    assert!(!confirm_page.contains("<&>"));
    assert!(
        confirm_page.contains(&format!(
            "<form method=\"post\" action=\"{confirm}\"><button type=\"submit\">\
             Confirm subscription</button></form>"
        )),
        "{confirm_page}"
    );
    // No cookie, no body needed: the signed token is the authority.
    let posted = app.http.post(&confirm).send().await.unwrap();
    assert_eq!(posted.status(), StatusCode::OK);
    assert!(posted
        .text()
        .await
        .unwrap()
        .contains("Subscription confirmed"));
    let after = app.marketing("jo@example.com").await;
    assert_eq!(after["consent"], "SUBSCRIBED", "{after}");
    assert_eq!(after["double_optin"], true);
    assert_eq!(app.members(&letters).await, ["jo@example.com"]);

    // Unsubscribe: HEAD and GET again change nothing, one-click does.
    app.http.head(&unsubscribe).send().await.unwrap();
    app.http.get(&unsubscribe).send().await.unwrap();
    assert_eq!(
        app.marketing("jo@example.com").await["consent"],
        "SUBSCRIBED"
    );
    let posted = app
        .http
        .post(&unsubscribe)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), StatusCode::OK);
    assert_eq!(
        app.marketing("jo@example.com").await["consent"],
        "UNSUBSCRIBED"
    );
    // What the links did is in the outbox for the reverse sync; the identify that asked for
    // the subscription came from Segment and is not.
    let outbox = app.engage.outbox_after((0, 0), 100).await.unwrap();
    let changes: Vec<Value> = outbox
        .iter()
        .map(|row| {
            assert!(row.from_segment);
            assert_eq!(row.user_id.as_deref(), Some("jo"));
            assert_eq!(row.email.as_deref(), Some("jo@example.com"));
            match &row.change {
                OutboxChange::List { change, .. } => json!({"list": change}),
                OutboxChange::Consent { consent, .. } => json!({"consent": consent}),
                OutboxChange::Email(event) => json!({"email": event.metric.name()}),
                OutboxChange::Traits { traits } => json!({"traits": traits}),
            }
        })
        .collect();
    assert_eq!(
        changes,
        [
            json!({"list": "confirmed"}),
            json!({"consent": "SUBSCRIBED"}),
            json!({"consent": "UNSUBSCRIBED"}),
            json!({"email": "Unsubscribed"}),
        ]
    );

    // A forged token: 400 on every method, nothing read or changed.
    let forged = format!("{confirm}x");
    for method in [Method::GET, Method::HEAD, Method::POST] {
        let answer = app
            .http
            .request(method.clone(), &forged)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::BAD_REQUEST, "{method}");
    }
    app.stop().await;
}
