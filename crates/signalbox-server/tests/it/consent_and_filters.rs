//! Suppressions and flow filters over the real engines (engage, audience, flows) behind a
//! server on a random port: every way of suppressing lands in the consent the profile and list
//! APIs answer, and a flow's profile filter picks the profiles a segment with the same
//! condition holds.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use signalbox_audience::{Audience, SegmentInput};
use signalbox_core::{Clock, FakeClock, Scopes, SystemClock};
use signalbox_engage::{
    ApiEventInput, BuiltinEventInput, BuiltinMetric, Engage, EngageConfig, ListId, OptInProcess,
    ProfileId, ProfileInput, ProfileQuery, SuppressTarget, SuppressionReason, UnsubscribeRequest,
};
use signalbox_flows::{FlowMail, FlowStatus, Flows, FlowsConfig};
use signalbox_mail::{Composer, LinkSigner, Mailer, MailerConfig, TrackingLinks};
use signalbox_server::{Application, ServerConfig, ServerError};
use signalbox_store::sqlite::SqliteOptions;
use signalbox_store::{SqliteStore, Store};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

struct App {
    address: String,
    http: reqwest::Client,
    api_key: String,
    engage: Engage,
    audience: Audience,
    flows: Flows,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), ServerError>>>,
    _dir: TempDir,
}

impl App {
    async fn start() -> App {
        App::start_on(Arc::new(SystemClock), |_| {}).await
    }

    /// On `clock`, with the flows engine's configuration tuned.
    async fn start_on(clock: Arc<dyn Clock>, tune: impl FnOnce(&mut FlowsConfig)) -> App {
        let dir = tempfile::tempdir().expect("temp dir");
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(dir.path().join("signalbox.db"), SqliteOptions::default())
                .expect("open store"),
        );
        let (_, api_key) = store
            .create_api_key("tests", &Scopes::default_for_new_key())
            .await
            .expect("api key");
        let engage = Engage::start(
            Arc::clone(&store),
            Arc::clone(&clock),
            EngageConfig::new(dir.path().join("engage.db")),
        )
        .await
        .expect("start engage");
        let audience = Audience::start(
            engage.clone(),
            Arc::clone(&clock),
            dir.path().join("audience.db"),
        )
        .await
        .expect("start audience");
        let mut application = Application::build(
            Arc::clone(&store),
            Arc::clone(&clock),
            ServerConfig::default(),
            SocketAddr::from(([127, 0, 0, 1], 0)),
        )
        .await
        .expect("build the application");
        let mut flows_config = FlowsConfig::new(dir.path().join("flows.db"));
        flows_config.poll_interval = Duration::from_millis(20);
        tune(&mut flows_config);
        let flows = Flows::start(
            engage.clone(),
            clock,
            flows_config,
            signalbox_server::flow_deps::flow_deps(
                &engage,
                None,
                Some(audience.clone()),
                tokio::runtime::Handle::current(),
            ),
        )
        .await
        .expect("start flows");
        application.set_engine(
            crate::helpers::engine(
                &engage,
                dir.path(),
                Some(audience.clone()),
                Some(flows.clone()),
            )
            .await,
        );
        let address = format!("http://{}", application.local_addr());
        let (shutdown, stop) = oneshot::channel::<()>();
        let server = tokio::spawn(application.run(async {
            let _ = stop.await;
        }));
        App {
            address,
            http: reqwest::Client::new(),
            api_key: api_key.expose().to_owned(),
            engage,
            audience,
            flows,
            shutdown: Some(shutdown),
            server: Some(server),
            _dir: dir,
        }
    }

    async fn stop(mut self) {
        self.flows.shutdown().await;
        self.audience.shutdown().await;
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("server stopped");
        }
    }

    /// Engage applied everything, segments and flows caught up with it.
    async fn settle(&self) {
        self.engage
            .catch_up(Duration::from_secs(30))
            .await
            .expect("engage catches up");
        self.audience
            .sync_timeout(Duration::from_secs(60))
            .await
            .expect("segments catch up");
        tokio::time::timeout(Duration::from_secs(60), self.flows.sync())
            .await
            .expect("flows catch up in time")
            .expect("flows catch up");
    }

    async fn api(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.address))
            .header("Authorization", format!("Klaviyo-API-Key {}", self.api_key))
            .header("revision", "2026-07-15");
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/vnd.api+json")
                .body(body.to_string());
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn person(&self, email: &str, properties: Value) -> ProfileId {
        let Value::Object(properties) = properties else {
            panic!("properties must be an object");
        };
        self.engage
            .create_profile(ProfileInput {
                email: Some(email.into()),
                properties,
                ..ProfileInput::default()
            })
            .await
            .expect("create profile")
            .id
    }

    async fn event(&self, id: &ProfileId, metric: &str, n: usize) {
        let events = (0..n)
            .map(|_| ApiEventInput {
                metric_name: metric.into(),
                profile: ProfileInput {
                    id: Some(id.clone()),
                    ..ProfileInput::default()
                },
                properties: Map::new(),
                time: None,
                value: None,
                value_currency: None,
                unique_id: None,
            })
            .collect();
        self.engage.create_events(events).await.expect("events");
    }

    async fn metric_id(&self, name: &str) -> String {
        let (status, body) = self.api(reqwest::Method::GET, "/api/metrics", None).await;
        assert_eq!(status, 200, "{body}");
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["attributes"]["name"] == name)
            .and_then(|m| m["id"].as_str())
            .unwrap_or_else(|| panic!("no metric {name}: {body}"))
            .to_owned()
    }

    /// `subscriptions.email.marketing` of a profile, as `GET /api/profiles/{id}` answers it.
    async fn marketing(&self, id: &ProfileId) -> Value {
        let (status, body) = self
            .api(
                reqwest::Method::GET,
                &format!("/api/profiles/{id}?additional-fields[profile]=subscriptions"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["data"]["attributes"]["subscriptions"]["email"]["marketing"].clone()
    }

    /// Suppression reasons per member email, as `GET /api/lists/{id}/profiles` answers them.
    async fn list_suppressions(&self, list: &ListId) -> Vec<(String, Vec<String>, Value)> {
        let (status, body) = self
            .api(
                reqwest::Method::GET,
                &format!("/api/lists/{list}/profiles?additional-fields[profile]=subscriptions"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let mut out: Vec<(String, Vec<String>, Value)> = body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let m = &p["attributes"]["subscriptions"]["email"]["marketing"];
                (
                    p["attributes"]["email"].as_str().unwrap().to_owned(),
                    reasons(m),
                    m["list_suppressions"].clone(),
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    async fn suppression_job(&self, kind: &str, relationships: Value) -> Value {
        let (status, body) = self
            .api(
                reqwest::Method::POST,
                &format!("/api/{kind}s"),
                Some(json!({"data": {"type": kind, "attributes": {},
                    "relationships": relationships}})),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        body
    }
}

fn reasons(marketing: &Value) -> Vec<String> {
    marketing["suppression"]
        .as_array()
        .map(|all| {
            all.iter()
                .map(|s| s["reason"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suppressing_a_segment_or_a_list_lands_in_the_profile_and_list_answers() {
    let app = App::start().await;
    let ann = app
        .person("ann@example.com", json!({"City": "Paris"}))
        .await;
    let bob = app
        .person("bob@example.com", json!({"City": "Paris"}))
        .await;
    let cat = app.person("cat@example.com", json!({"City": "Lyon"})).await;
    let list = app
        .engage
        .create_list("Newsletter", OptInProcess::SingleOptIn)
        .await
        .unwrap()
        .id;
    app.engage
        .add_list_members(&list, &[bob.clone(), cat.clone()])
        .await
        .unwrap();
    let paris = app
        .audience
        .create_segment(SegmentInput {
            name: "Paris".into(),
            definition: json!({"condition_groups": [{"conditions": [{
                "type": "profile-property", "property": "properties['City']",
                "filter": {"type": "string", "operator": "equals", "value": "Paris"}}]}]}),
            is_starred: false,
        })
        .await
        .unwrap();
    app.settle().await;

    // All members of a segment: Ann and Bob, globally.
    let job = app
        .suppression_job(
            "profile-suppression-bulk-create-job",
            json!({"segment": {"data": {"type": "segment", "id": paris.id}}}),
        )
        .await;
    assert_eq!(job["data"]["attributes"]["total_count"], 2, "{job}");
    app.settle().await;
    for id in [&ann, &bob] {
        let m = app.marketing(id).await;
        assert_eq!(reasons(&m), ["USER_SUPPRESSED"], "{m}");
        assert_eq!(m["can_receive_email_marketing"], false, "{m}");
        assert_eq!(m["list_suppressions"], json!([]), "{m}");
    }
    assert!(reasons(&app.marketing(&cat).await).is_empty());
    // The list's members carry the suppression too (global: no list suppression).
    assert_eq!(
        app.list_suppressions(&list).await,
        [
            (
                "bob@example.com".into(),
                vec!["USER_SUPPRESSED".into()],
                json!([])
            ),
            ("cat@example.com".into(), vec![], json!([])),
        ]
    );

    // The profile listing filters on the suppression fields.
    let filtered = async |filter: &str| {
        let path = format!("/api/profiles?filter={filter}");
        app.api(reqwest::Method::GET, &path, None).await
    };
    let emails = |body: &Value| -> Vec<String> {
        let mut out: Vec<String> = body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["attributes"]["email"].as_str().unwrap().to_owned())
            .collect();
        out.sort();
        out
    };
    let reason = "subscriptions.email.marketing.suppression.reason";
    let since = "subscriptions.email.marketing.suppression.timestamp";
    let (status, body) = filtered(&format!("equals({reason},\"USER_SUPPRESSED\")")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(emails(&body), ["ann@example.com", "bob@example.com"]);
    let (_, body) = filtered(&format!("any({reason},[\"HARD_BOUNCE\",\"UNSUBSCRIBE\"])")).await;
    assert!(emails(&body).is_empty(), "{body}");
    let (_, body) = filtered(&format!(
        "greater-than({since},2020-01-01T00:00:00Z),equals(email,\"bob@example.com\")"
    ))
    .await;
    assert_eq!(emails(&body), ["bob@example.com"]);
    let (_, body) = filtered(&format!("less-than({since},2020-01-01T00:00:00Z)")).await;
    assert!(emails(&body).is_empty(), "{body}");
    let (status, body) = filtered(&format!(
        "equals(subscriptions.email.marketing.list_suppressions.list_id,\"{list}\")"
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        emails(&body).is_empty(),
        "no list-level suppressions: {body}"
    );
    let (status, body) = filtered(&format!("equals({reason},\"BORED\")")).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["errors"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("USER_SUPPRESSED"));

    // All members of a list, then lifted by segment: Cat stays, Ann and Bob are free again.
    app.suppression_job(
        "profile-suppression-bulk-create-job",
        json!({"list": {"data": {"type": "list", "id": list.0}}}),
    )
    .await;
    app.suppression_job(
        "profile-suppression-bulk-delete-job",
        json!({"segment": {"data": {"type": "segment", "id": paris.id}}}),
    )
    .await;
    app.settle().await;
    assert!(reasons(&app.marketing(&ann).await).is_empty());
    assert_eq!(
        app.list_suppressions(&list).await,
        [
            ("bob@example.com".into(), vec![], json!([])),
            (
                "cat@example.com".into(),
                vec!["USER_SUPPRESSED".into()],
                json!([])
            ),
        ]
    );

    // A segment that does not exist is a 404; a list and a segment at once, a 400.
    let (status, body) = app
        .api(
            reqwest::Method::POST,
            "/api/profile-suppression-bulk-create-jobs",
            Some(
                json!({"data": {"type": "profile-suppression-bulk-create-job",
                "attributes": {}, "relationships": {
                    "segment": {"data": {"type": "segment", "id": "NOSUCHSEGMENT"}}}}}),
            ),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = app
        .api(
            reqwest::Method::POST,
            "/api/profile-suppression-bulk-create-jobs",
            Some(
                json!({"data": {"type": "profile-suppression-bulk-create-job",
                "attributes": {}, "relationships": {
                    "list": {"data": {"type": "list", "id": list.0}},
                    "segment": {"data": {"type": "segment", "id": paris.id}}}}}),
            ),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["errors"][0]["source"]["pointer"], "/data/relationships/segment",
        "{body}"
    );
    app.stop().await;
}

/// The emails of a set of profile ids.
async fn emails_of(app: &App, ids: impl IntoIterator<Item = String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for id in ids {
        let profile = app.engage.get_profile(&ProfileId(id)).await.unwrap();
        out.insert(profile.email.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_filter_and_a_segment_with_the_same_condition_hold_the_same_profiles() {
    let app = App::start().await;
    let list = app
        .engage
        .create_list("VIP", OptInProcess::SingleOptIn)
        .await
        .unwrap()
        .id;
    let person = async |email: &str, plan: &str, city: &str, views: usize, in_list: bool| {
        let id = app.person(email, json!({"Plan": plan, "City": city})).await;
        if views > 0 {
            app.event(&id, "Viewed Product", views).await;
        }
        if in_list {
            app.engage
                .add_list_members(&list, std::slice::from_ref(&id))
                .await
                .unwrap();
        }
        id
    };
    // Each of these passes or fails the condition below for one reason.
    person("a@example.com", "pro", "Oslo", 0, true).await; // plan, list
    person("b@example.com", "free", "Paris", 2, false).await; // views, segment
    person("h@example.com", "pro", "Paris", 0, false).await; // plan, segment
    let suppressed = person("c@example.com", "pro", "Oslo", 0, true).await; // suppressed
    person("d@example.com", "free", "Oslo", 1, true).await; // one view, free: no
    person("e@example.com", "pro", "Oslo", 0, false).await; // in neither group
    let unsubscribed = person("f@example.com", "free", "Paris", 3, false).await; // unsubscribed
    let bounced = person("g@example.com", "pro", "Paris", 0, true).await; // bounced
    app.engage
        .suppress(
            SuppressTarget::Emails(vec!["c@example.com".parse().unwrap()]),
            SuppressionReason::UserSuppressed,
        )
        .await
        .unwrap();
    app.engage
        .unsubscribe(UnsubscribeRequest {
            list_id: None,
            emails: vec!["f@example.com".parse().unwrap()],
        })
        .await
        .unwrap();
    app.engage
        .record_builtin_event(BuiltinEventInput {
            metric: BuiltinMetric::BouncedEmail,
            profile_id: bounced.clone(),
            properties: Map::new(),
            time: None,
            unique_id: Some("bounce-1".into()),
        })
        .await
        .unwrap();
    let paris = app
        .audience
        .create_segment(SegmentInput {
            name: "Paris".into(),
            definition: json!({"condition_groups": [{"conditions": [{
                "type": "profile-property", "property": "properties['City']",
                "filter": {"type": "string", "operator": "equals", "value": "Paris"}}]}]}),
            is_starred: false,
        })
        .await
        .unwrap();
    app.settle().await;
    for id in [&suppressed, &unsubscribed, &bounced] {
        assert_eq!(
            app.marketing(id).await["can_receive_email_marketing"],
            false
        );
    }

    let viewed = app.metric_id("Viewed Product").await;
    let condition = json!({"condition_groups": [
        {"conditions": [
            {"type": "profile-property", "property": "properties['Plan']",
             "filter": {"type": "string", "operator": "equals", "value": "pro"}},
            {"type": "profile-metric", "metric_id": viewed, "measurement": "count",
             "measurement_filter": {"type": "numeric", "operator": "greater-than-or-equal", "value": 2},
             "timeframe_filter": {"type": "date", "operator": "alltime"}},
        ]},
        {"conditions": [
            {"type": "profile-group-membership", "is_member": true, "group_ids": [list.0]},
            {"type": "profile-group-membership", "is_member": true, "group_ids": [paris.id]},
        ]},
        {"conditions": [
            {"type": "profile-marketing-consent", "consent": {"channel": "email",
             "can_receive_marketing": true, "consent_status": {"subscription": "any"}}},
        ]},
    ]});
    let expected: BTreeSet<String> = ["a@example.com", "b@example.com", "h@example.com"]
        .map(str::to_owned)
        .into();

    // As a segment.
    let segment = app
        .audience
        .create_segment(SegmentInput {
            name: "Same condition".into(),
            definition: condition.clone(),
            is_starred: false,
        })
        .await
        .unwrap();
    app.settle().await;
    let members = app.audience.members(&segment.id, None, 100).await.unwrap();
    let in_segment = emails_of(&app, members.members.into_iter().map(|m| m.profile_id)).await;
    assert_eq!(in_segment, expected);

    // As a flow's profile filter: everyone triggers it, those who pass enter.
    app.event(&suppressed, "Ping", 1).await;
    app.settle().await;
    let ping = app.metric_id("Ping").await;
    let flow = app
        .flows
        .create_flow(
            "Same condition",
            &json!({
                "triggers": [{"type": "metric", "id": ping}],
                "profile_filter": condition,
                "entry_action_id": "wait",
                "actions": [{"temporary_id": "wait", "type": "time-delay",
                    "data": {"unit": "days", "value": 1}, "links": {"next": null}}],
            }),
            Some(FlowStatus::Live),
        )
        .await
        .unwrap();
    let everyone = app
        .engage
        .list_profiles(ProfileQuery {
            page_size: 100,
            ..ProfileQuery::default()
        })
        .await
        .unwrap()
        .items;
    assert_eq!(everyone.len(), 8);
    for profile in &everyone {
        app.event(&profile.id, "Ping", 1).await;
    }
    app.settle().await;
    let runs = app.flows.runs(&flow.id, 100).await.unwrap();
    let entered = emails_of(&app, runs.into_iter().map(|r| r.profile_id)).await;
    assert_eq!(entered, expected);
    let stats = app.flows.stats(&flow.id).await.unwrap();
    assert_eq!(stats.flow.get("skipped_entry:filter"), 5, "{stats:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_triggered_email_is_skipped_for_a_profile_that_left_the_segment() {
    let clock = FakeClock::new(jiff::Timestamp::now());
    let app = App::start_on(Arc::new(clock.clone()), |config| {
        // Nothing listens there: an email that is not skipped fails and waits for a retry.
        let smtp = MailerConfig::new("smtp://127.0.0.1:1".parse().unwrap(), "shop@example.com");
        let links = TrackingLinks::new(
            LinkSigner::new(b"a long random link secret for tests").unwrap(),
            "https://mail.example.com",
        )
        .unwrap();
        config.mail = Some(FlowMail {
            mailer: Mailer::new(smtp).unwrap(),
            composer: Composer::new(links, None),
        });
    })
    .await;
    let paris = app
        .audience
        .create_segment(SegmentInput {
            name: "Paris".into(),
            definition: json!({"condition_groups": [{"conditions": [{
                "type": "profile-property", "property": "properties['City']",
                "filter": {"type": "string", "operator": "equals", "value": "Paris"}}]}]}),
            is_starred: false,
        })
        .await
        .unwrap();
    let flow = app
        .flows
        .create_flow(
            "Welcome to Paris",
            &json!({
                "triggers": [{"type": "segment", "id": paris.id}],
                "entry_action_id": "wait",
                "actions": [
                    {"temporary_id": "wait", "type": "time-delay",
                     "data": {"unit": "hours", "value": 1}, "links": {"next": "email"}},
                    {"temporary_id": "email", "type": "send-email", "data": {"status": "live",
                     "message": {"subject_line": "Bonjour", "html": "<p>Bonjour</p>",
                     "smart_sending_enabled": false}}, "links": {"next": null}},
                ],
            }),
            Some(FlowStatus::Live),
        )
        .await
        .unwrap();
    app.person("stays@example.com", json!({"City": "Paris"}))
        .await;
    let leaves = app
        .person("leaves@example.com", json!({"City": "Paris"}))
        .await;
    app.settle().await;
    assert_eq!(app.flows.runs(&flow.id, 10).await.unwrap().len(), 2);
    let mut moved = Map::new();
    moved.insert("City".into(), json!("Lyon"));
    app.engage
        .update_profile(
            &leaves,
            ProfileInput {
                properties: moved,
                ..ProfileInput::default()
            },
        )
        .await
        .unwrap();
    app.settle().await;
    clock.advance(jiff::SignedDuration::from_hours(2));
    app.settle().await;
    let stats = app.flows.stats(&flow.id).await.unwrap();
    assert_eq!(stats.flow.get("skipped:not_in_segment"), 1, "{stats:?}");
    app.stop().await;
}
