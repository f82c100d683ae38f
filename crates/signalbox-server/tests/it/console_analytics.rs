//! The console's analytics pages over real HTTP: Analytics › Metrics (the gear icon of
//! third-party metrics, a metric's chart and Activity Feed), Profiles (search, the profile
//! page), with a signed-in session from a test authenticator and Segment calls sent through the
//! Tracking API.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use signalbox_audience::{Audience, SegmentInput};
use signalbox_console::{Authenticator, SignedIn};
use signalbox_core::{Clock, SystemClock, WriteKey};
use signalbox_engage::{
    BuiltinEventInput, BuiltinMetric, Engage, EngageConfig, Metric, MetricQuery, OptInProcess,
    ProfileField, ProfileId, ProfileQuery, SubscribeRequest,
};
use signalbox_flows::{FlowStatus, Flows, FlowsConfig};
use signalbox_server::{Application, ServerConfig, ServerError};
use signalbox_store::sqlite::SqliteOptions;
use signalbox_store::{SqliteStore, Store};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::helpers::{basic, SOURCE};

const SESSION: &str = "analytics-test-session";
const CSRF: &str = "analytics-test-csrf";

/// Lets in the one session cookie the tests send.
struct OneSession;

#[async_trait::async_trait]
impl Authenticator for OneSession {
    async fn authenticate(&self, session: &str) -> Option<SignedIn> {
        (session == SESSION).then(|| SignedIn {
            email: "ops@example.com".into(),
            csrf: CSRF.into(),
        })
    }
}

struct ConsoleApp {
    address: String,
    http: reqwest::Client,
    write_key: WriteKey,
    engage: Engage,
    audience: Audience,
    flows: Flows,
    store: Arc<dyn Store>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), ServerError>>>,
    _dir: TempDir,
}

impl ConsoleApp {
    async fn spawn() -> ConsoleApp {
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
        let audience = Audience::start(
            engage.clone(),
            Arc::clone(&clock),
            dir.path().join("audience.db"),
        )
        .await
        .expect("start audience");
        let mut application = Application::build(
            Arc::clone(&store),
            clock,
            ServerConfig::default(),
            SocketAddr::from(([127, 0, 0, 1], 0)),
        )
        .await
        .expect("build the application");
        let flows = Flows::start(
            engage.clone(),
            Arc::new(SystemClock),
            FlowsConfig::new(dir.path().join("flows.db")),
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
        application.set_console_auth(Arc::new(OneSession));
        let address = format!("http://{}", application.local_addr());
        let (shutdown, stop) = oneshot::channel::<()>();
        let server = tokio::spawn(application.run(async {
            let _ = stop.await;
        }));
        ConsoleApp {
            address,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            write_key,
            engage,
            audience,
            flows,
            store,
            shutdown: Some(shutdown),
            server: Some(server),
            _dir: dir,
        }
    }

    async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("server stopped");
        }
    }

    async fn settle(&self) {
        self.engage
            .catch_up(Duration::from_secs(30))
            .await
            .expect("the pipeline catches up");
    }

    /// A Tracking API call signed with the source's write key.
    async fn segment(&self, kind: &str, message: Value) {
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

    /// A console page with the session; status and body.
    async fn page(&self, path: &str) -> (StatusCode, String) {
        let response = self
            .http
            .get(format!("{}{path}", self.address))
            .header("Cookie", format!("signalbox_session={SESSION}"))
            .send()
            .await
            .expect("send");
        let status = response.status();
        (status, response.text().await.expect("read"))
    }

    /// A form post with the session; status, `Location` and body.
    async fn form(&self, path: &str, fields: &[(&str, &str)]) -> (StatusCode, String, String) {
        let body = fields
            .iter()
            .map(|(name, value)| format!("{}={}", form_encode(name), form_encode(value)))
            .collect::<Vec<_>>()
            .join("&");
        let response = self
            .http
            .post(format!("{}{path}", self.address))
            .header("Cookie", format!("signalbox_session={SESSION}"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("send");
        let status = response.status();
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (status, location, response.text().await.expect("read"))
    }

    async fn metric(&self, name: &str) -> Metric {
        self.engage
            .list_metrics(MetricQuery::default())
            .await
            .expect("metrics")
            .items
            .into_iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("metric {name} exists"))
    }

    async fn profile_id(&self, email: &str) -> ProfileId {
        self.engage
            .list_profiles(ProfileQuery {
                any_of: vec![(ProfileField::Email, vec![email.into()])],
                ..ProfileQuery::default()
            })
            .await
            .expect("profiles")
            .items
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("a profile for {email}"))
            .id
    }
}

fn form_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Ada identifies herself and places an order through the Segment source; she also has a
/// built-in `Unsubscribed` event.
async fn with_ada() -> (ConsoleApp, ProfileId) {
    let app = ConsoleApp::spawn().await;
    app.segment(
        "identify",
        json!({"userId": "user-ada", "traits": {"email": "ada@example.com",
            "firstName": "Ada", "plan": "analytical-engine"}}),
    )
    .await;
    app.segment(
        "track",
        json!({"userId": "user-ada", "event": "Placed Order",
            "properties": {"order_id": "o-1", "revenue": 42.5}}),
    )
    .await;
    app.settle().await;
    let ada = app.profile_id("ada@example.com").await;
    app.engage
        .record_builtin_event(BuiltinEventInput {
            metric: BuiltinMetric::Unsubscribed,
            profile_id: ada.clone(),
            properties: serde_json::Map::new(),
            time: None,
            unique_id: Some("unsubscribed-1".into()),
        })
        .await
        .expect("record a built-in event");
    app.settle().await;
    (app, ada)
}

/// The table row of the listing that names `text`.
fn row_with<'a>(html: &'a str, text: &str) -> &'a str {
    html.split("<tr>")
        .find(|row| row.contains(text))
        .unwrap_or_else(|| panic!("a row with {text} in {html}"))
}

#[tokio::test]
async fn the_metrics_page_marks_third_party_metrics_with_a_named_gear() {
    let (app, _) = with_ada().await;
    let (status, html) = app.page("/analytics/metrics").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("aria-current=\"page\">Analytics"), "{html}");

    let order = row_with(&html, ">Placed Order</a>");
    assert!(order.contains("Segment"), "{order}");
    assert!(order.contains("role=\"img\""), "{order}");
    assert!(
        order.contains("aria-label=\"Third-party API metric\""),
        "{order}"
    );
    assert!(
        order.contains("<title>Third-party API metric</title>"),
        "{order}"
    );

    let unsubscribed = row_with(&html, ">Unsubscribed</a>");
    assert!(unsubscribed.contains("Signalbox"), "{unsubscribed}");
    assert!(
        !unsubscribed.contains("Third-party API metric"),
        "{unsubscribed}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_metric_page_draws_its_counts_and_its_activity_feed_links_to_the_person() {
    let (app, ada) = with_ada().await;
    let order = app.metric("Placed Order").await;
    let (status, html) = app
        .page(&format!("/analytics/metrics/{}", order.id.0))
        .await;
    assert_eq!(status, StatusCode::OK, "{html}");
    // The chart: an SVG with an accessible name and a summary of the series.
    assert!(html.contains("<svg class=\"chart\" role=\"img\""), "{html}");
    assert!(
        html.contains("<title id=\"chart-title\">Placed Order per day</title>"),
        "{html}"
    );
    assert!(html.contains("1 events from"), "{html}");
    assert_eq!(html.matches("<rect class=\"bar\"").count(), 31, "{html}");
    // The same numbers for screen readers, hidden from sight.
    assert!(html.contains("<table class=\"visually-hidden\">"), "{html}");
    // The interval control, labelled; day is chosen.
    assert!(
        html.contains("<label for=\"interval\">Interval</label>"),
        "{html}"
    );
    assert!(html.contains("<option value=\"day\" selected>"), "{html}");
    // The Activity Feed, with a link to Ada's profile.
    assert!(html.contains(">Activity Feed</h2>"), "{html}");
    let link = format!("<a href=\"/profiles/{}\">ada@example.com</a>", ada.0);
    assert!(html.contains(&link), "{html}");
    assert!(html.contains("o-1"), "{html}");
    app.stop().await;
}

#[tokio::test]
async fn the_interval_switch_buckets_by_week_and_month_and_refuses_others() {
    let (app, _) = with_ada().await;
    let order = app.metric("Placed Order").await;
    let path = format!("/analytics/metrics/{}", order.id.0);

    let (status, html) = app.page(&format!("{path}?interval=week")).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("<option value=\"week\" selected>"), "{html}");
    assert!(html.contains("Placed Order per week"), "{html}");
    let weeks = html.matches("<rect class=\"bar\"").count();
    assert!((12..=14).contains(&weeks), "{weeks} weekly bars");

    let (status, html) = app.page(&format!("{path}?interval=month")).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("<option value=\"month\" selected>"), "{html}");
    assert!(html.contains("Placed Order per month"), "{html}");
    let months = html.matches("<rect class=\"bar\"").count();
    assert!((12..=13).contains(&months), "{months} monthly bars");

    let (status, html) = app.page(&format!("{path}?interval=year")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("interval"), "{html}");

    let (status, _) = app.page("/analytics/metrics/no-such-metric").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.stop().await;
}

#[tokio::test]
async fn a_profile_search_by_email_phone_or_id_finds_the_person() {
    let (app, ada) = with_ada().await;
    let link = format!("href=\"/profiles/{}\"", ada.0);

    let (status, html) = app.page("/profiles?q=ada%40example.com").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains("<label for=\"q\">Search by email, phone or id</label>"),
        "{html}"
    );
    assert!(html.contains("Found by email"), "{html}");
    assert!(html.contains(&link), "{html}");

    let (_, html) = app.page(&format!("/profiles?q={}", ada.0)).await;
    assert!(html.contains("Found by profile id"), "{html}");
    assert!(html.contains(&link), "{html}");

    let (_, html) = app.page("/profiles?q=user-ada").await;
    assert!(html.contains("Found by external id"), "{html}");
    assert!(html.contains(&link), "{html}");

    let (_, html) = app.page("/profiles?q=nobody%40example.com").await;
    assert!(html.contains("No profile found"), "{html}");
    assert!(!html.contains(&link), "{html}");
    app.stop().await;
}

#[tokio::test]
async fn a_profile_page_shows_properties_identifiers_consent_and_timeline() {
    let (app, ada) = with_ada().await;
    let (status, html) = app.page(&format!("/profiles/{}", ada.0)).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("<h1>ada@example.com</h1>"), "{html}");
    assert!(html.contains(">Properties</h2>"), "{html}");
    assert!(html.contains("<dt>First name</dt><dd>Ada</dd>"), "{html}");
    assert!(html.contains("analytical-engine"), "{html}");
    assert!(html.contains(">Identifiers</h2>"), "{html}");
    assert!(html.contains("user-ada"), "{html}");
    assert!(html.contains(">Merge history</h2>"), "{html}");
    assert!(html.contains(">Consent</h2>"), "{html}");
    assert!(html.contains(">Segments</h2>"), "{html}");
    assert!(html.contains("In no segment."), "{html}");
    // The timeline, newest first: the built-in event came after the order.
    assert!(html.contains(">Timeline</h2>"), "{html}");
    let unsubscribed = html.find(">Unsubscribed</a>").expect("the built-in event");
    let order = html.find(">Placed Order</a>").expect("the order");
    assert!(unsubscribed < order, "newest first");
    assert!(
        html.contains("&quot;order_id&quot;: &quot;o-1&quot;"),
        "{html}"
    );

    let (status, _) = app.page("/profiles/01J0000000000000000000000Z").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.stop().await;
}

#[tokio::test]
async fn analytics_pages_need_a_session() {
    let app = ConsoleApp::spawn().await;
    for path in [
        "/analytics/metrics",
        "/analytics/metrics/x",
        "/profiles",
        "/profiles/x",
        "/debugger",
        "/debugger/stream",
        "/lists",
        "/lists/x",
        "/segments",
        "/segments/x",
        "/flows",
        "/flows/x",
    ] {
        let response = app
            .http
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .expect("send");
        assert!(response.status().is_redirection(), "{path}");
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(location.starts_with("/sign-in?next="), "{path}: {location}");
    }
    app.stop().await;
}

#[tokio::test]
async fn the_debugger_shows_sent_calls_filtered_by_type_and_rejections_with_their_reason() {
    let app = ConsoleApp::spawn().await;
    app.segment(
        "identify",
        json!({"userId": "user-bo", "messageId": "m-identify", "traits": {"email": "bo@example.com"}}),
    )
    .await;
    app.segment(
        "track",
        json!({"userId": "user-bo", "messageId": "m-track", "event": "Debugged Thing",
            "properties": {"colour": "teal"}}),
    )
    .await;
    for n in 0..3 {
        let response = app
            .http
            .post(format!("{}/v1/track", app.address))
            .header("Authorization", basic(app.write_key.expose(), true))
            .header("Content-Type", "application/json")
            // No event name: refused, and kept with its reason.
            .body(json!({"userId": "user-bo", "messageId": format!("bad-{n}")}).to_string())
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }
    let rejections = app
        .store
        .read_rejections(signalbox_store::RejectionQuery {
            after_id: 0,
            source_id: None,
            limit: 10,
        })
        .await
        .expect("rejections");
    assert_eq!(rejections.len(), 3, "each refused call is kept");

    let (status, html) = app.page("/debugger").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("<label for=\"type\">Type</label>"), "{html}");
    assert!(html.contains("<code>m-track</code>"), "{html}");
    assert!(html.contains("<code>m-identify</code>"), "{html}");
    // Pretty-printed, escaped.
    assert!(
        html.contains("&quot;colour&quot;: &quot;teal&quot;"),
        "{html}"
    );
    // Newest first.
    assert!(html.find("m-track").unwrap() < html.find("m-identify").unwrap());
    // The rejected calls with their reason.
    assert!(html.contains(">Rejected calls</h2>"), "{html}");
    let code = &rejections[0].code;
    assert_eq!(
        html.matches(&format!("<span class=\"error\">{code}</span>"))
            .count(),
        3
    );
    assert!(
        html.contains(&rejections[0].message.replace('\'', "&#x27;")),
        "{html}"
    );
    // The live list starts after the newest call shown.
    assert!(
        html.contains("data-stream=\"/debugger/stream?type=&amp;after=2\""),
        "{html}"
    );

    let (status, html) = app.page("/debugger?type=identify").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains("<option value=\"identify\" selected>"),
        "{html}"
    );
    assert!(html.contains("<code>m-identify</code>"), "{html}");
    assert!(!html.contains("<code>m-track</code>"), "{html}");

    let (status, html) = app.page("/debugger?type=nope").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("type"), "{html}");
    app.stop().await;
}

/// Reads a Server-Sent Events response until `needle` shows, within a generous bound.
async fn read_until(response: &mut reqwest::Response, needle: &str) -> String {
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

#[tokio::test]
async fn the_debugger_stream_sends_each_new_call_of_its_type() {
    let app = ConsoleApp::spawn().await;
    app.segment(
        "track",
        json!({"userId": "u", "messageId": "before", "event": "Old"}),
    )
    .await;
    let mut response = app
        .http
        .get(format!("{}/debugger/stream?type=track", app.address))
        .header("Cookie", format!("signalbox_session={SESSION}"))
        .send()
        .await
        .expect("open the stream");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream")));
    app.segment(
        "identify",
        json!({"userId": "u", "messageId": "skipped-identify"}),
    )
    .await;
    app.segment(
        "track",
        json!({"userId": "u", "messageId": "live-one", "event": "Arrived Live"}),
    )
    .await;
    let seen = read_until(&mut response, "live-one").await;
    assert!(seen.contains("event: call"), "{seen}");
    assert!(seen.contains("id: 3"), "{seen}");
    assert!(seen.contains("Arrived Live"), "{seen}");
    assert!(
        !seen.contains("before"),
        "only calls after the stream opened: {seen}"
    );
    assert!(!seen.contains("skipped-identify"), "only its type: {seen}");

    // A reconnecting EventSource resumes after its Last-Event-ID.
    let mut resumed = app
        .http
        .get(format!("{}/debugger/stream", app.address))
        .header("Cookie", format!("signalbox_session={SESSION}"))
        .header("Last-Event-ID", "1")
        .send()
        .await
        .expect("reopen the stream");
    let seen = read_until(&mut resumed, "live-one").await;
    assert!(seen.contains("skipped-identify"), "{seen}");
    assert!(!seen.contains("before"), "{seen}");
    drop(response);
    drop(resumed);

    let response = app
        .http
        .get(format!("{}/debugger/stream", app.address))
        .send()
        .await
        .expect("send");
    assert!(response.status().is_redirection(), "no session, no stream");
    app.stop().await;
}

#[tokio::test]
async fn lists_show_members_and_the_double_opt_in_state() {
    let (app, ada) = with_ada().await;
    let single = app
        .engage
        .create_list("Newsletter", OptInProcess::SingleOptIn)
        .await
        .expect("a list");
    app.engage
        .add_list_members(&single.id, std::slice::from_ref(&ada))
        .await
        .expect("add ada");
    let double = app
        .engage
        .create_list("Careful", OptInProcess::DoubleOptIn)
        .await
        .expect("a list");
    app.engage
        .subscribe(SubscribeRequest {
            list_id: Some(double.id.clone()),
            emails: vec!["ada@example.com".parse().unwrap()],
            ..SubscribeRequest::default()
        })
        .await
        .expect("subscribe ada");
    app.settle().await;

    let (status, html) = app.page("/lists").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        row_with(&html, ">Newsletter</a>").contains("Single opt-in"),
        "{html}"
    );
    assert!(
        row_with(&html, ">Careful</a>").contains("Double opt-in"),
        "{html}"
    );

    let link = format!("<a href=\"/profiles/{}\">ada@example.com</a>", ada.0);
    let (status, html) = app.page(&format!("/lists/{}", single.id.0)).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains(&link), "{html}");
    assert!(row_with(&html, &link).contains("member"), "{html}");

    // On the double opt-in list Ada waits to confirm.
    let (_, html) = app.page(&format!("/lists/{}", double.id.0)).await;
    assert!(html.contains("Double opt-in"), "{html}");
    assert!(!html.contains(&link), "not a member yet: {html}");
    let (_, html) = app
        .page(&format!("/lists/{}?status=pending", double.id.0))
        .await;
    assert!(row_with(&html, &link).contains("pending"), "{html}");

    // The profile page shows both.
    let (_, html) = app.page(&format!("/profiles/{}", ada.0)).await;
    assert!(html.contains(">Newsletter</a>: member"), "{html}");
    assert!(
        html.contains(">Careful</a>: pending (double opt-in)"),
        "{html}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_segment_shows_members_why_and_previews_an_edited_definition() {
    let (app, ada) = with_ada().await;
    let definition = |ending: &str| {
        json!({"condition_groups": [{"conditions": [{"type": "profile-property",
            "property": "email", "filter": {"type": "string", "operator": "ends-with",
            "value": ending}}]}]})
    };
    let segment = app
        .audience
        .create_segment(SegmentInput {
            name: "Example people".into(),
            definition: definition("@example.com"),
            is_starred: false,
        })
        .await
        .expect("a segment");
    app.audience
        .sync_timeout(Duration::from_secs(60))
        .await
        .expect("backfilled");

    let (status, html) = app.page("/segments").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains(">Example people</a>"), "{html}");

    let path = format!("/segments/{}", segment.id);
    let (status, html) = app.page(&path).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("1 profile ·"), "{html}");
    assert!(
        html.contains(&format!("href=\"/profiles/{}\"", ada.0)),
        "{html}"
    );
    assert!(html.contains("<label for=\"definition\">"), "{html}");
    assert!(html.contains("&quot;ends-with&quot;"), "{html}");
    assert!(
        html.contains("<button type=\"submit\">Preview</button>"),
        "{html}"
    );

    // The profile page says why Ada is in it.
    let (_, html) = app.page(&format!("/profiles/{}", ada.0)).await;
    assert!(html.contains(">Example people</a>"), "{html}");
    assert!(html.contains("profile-property: matches"), "{html}");

    // Preview: a live count, nothing saved.
    let draft = definition("@elsewhere.test").to_string();
    let preview = format!("{path}/preview");
    let (status, _, html) = app
        .form(&preview, &[("csrf", CSRF), ("definition", &draft)])
        .await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains("Preview: 0 of 1 profile would be in this segment now"),
        "{html}"
    );
    assert!(
        html.contains("@elsewhere.test"),
        "the draft stays in the editor"
    );
    let (status, _, html) = app
        .form(
            &preview,
            &[
                ("csrf", CSRF),
                ("definition", &definition("@example.com").to_string()),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains("Preview: 1 of 1 profile would be in this segment now"),
        "{html}"
    );

    // A broken definition is explained.
    let (status, _, html) = app
        .form(
            &preview,
            &[("csrf", CSRF), ("definition", "{\"condition_groups\": 3}")],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("role=\"alert\""), "{html}");

    // Without the form's token nothing happens.
    let (status, _, _) = app.form(&preview, &[("definition", &draft)]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let save = format!("{path}/definition");
    let (status, _, _) = app
        .form(&save, &[("csrf", "wrong"), ("definition", &draft)])
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        app.audience
            .get_segment(&segment.id)
            .await
            .expect("segment")
            .version,
        1
    );

    // Saving makes a new version and goes back to the segment.
    let (status, location, _) = app
        .form(&save, &[("csrf", CSRF), ("definition", &draft)])
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location, path);
    let saved = app
        .audience
        .get_segment(&segment.id)
        .await
        .expect("segment");
    assert_eq!(saved.version, 2);
    assert_eq!(saved.definition, definition("@elsewhere.test"));
    app.stop().await;
}

#[tokio::test]
async fn a_flow_is_drawn_with_its_step_counts_and_its_status_switches() {
    let (app, _) = with_ada().await;
    let order = app.metric("Placed Order").await;
    let definition = json!({
        "triggers": [{"type": "metric", "id": order.id.0}],
        "entry_action_id": "wait",
        "actions": [
            {"temporary_id": "wait", "type": "time-delay", "data": {"unit": "hours", "value": 4},
             "links": {"next": "split"}},
            {"temporary_id": "split", "type": "conditional-split", "data": {"profile_filter":
                {"condition_groups": [{"conditions": [{"type": "profile-property",
                    "property": "email", "filter": {"type": "string", "operator": "ends-with",
                    "value": "@example.com"}}]}]}},
             "links": {"next_if_true": "email", "next_if_false": null}},
            {"temporary_id": "email", "type": "send-email", "data": {"status": "draft", "message": {
                "from_email": "shop@example.com", "subject_line": "Thanks for your order",
                "html": "<p>Thanks</p>", "smart_sending_enabled": false}},
             "links": {"next": null}}
        ],
        "reentry_criteria": {"duration": 0, "unit": "alltime"}
    });
    let flow = app
        .flows
        .create_flow("After an order", &definition, Some(FlowStatus::Live))
        .await
        .expect("a flow");
    // A new order starts a run, which waits at the first step.
    app.segment(
        "track",
        json!({"userId": "user-ada", "event": "Placed Order", "properties": {"order_id": "o-2"}}),
    )
    .await;
    app.settle().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let wait_id = flow.definition.entry_action_id.clone();
    loop {
        app.flows.sync().await.expect("flows catch up");
        let stats = app.flows.stats(&flow.id).await.expect("stats");
        if stats.action(&wait_id).get("waiting") == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run waits: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let (status, html) = app.page("/flows").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    let row = row_with(&html, ">After an order</a>");
    assert!(row.contains(">Live</span>"), "{row}");

    let path = format!("/flows/{}", flow.id);
    let (status, html) = app.page(&path).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("<strong>Wait 4 hours</strong>"), "{html}");
    assert!(html.contains("<li>waiting: 1</li>"), "{html}");
    assert!(
        html.contains("<strong>Conditional split</strong>"),
        "{html}"
    );
    assert!(
        html.contains("<span class=\"branch-label\">Yes</span>"),
        "{html}"
    );
    assert!(
        html.contains("<strong>Email: Thanks for your order</strong>"),
        "{html}"
    );
    // The email sits inside the split's Yes branch, after the wait.
    let wait = html.find("Wait 4 hours").unwrap();
    let yes = html.find(">Yes</span>").unwrap();
    let email = html.find("Email: Thanks").unwrap();
    assert!(wait < yes && yes < email, "{html}");
    assert!(
        html.contains("<label for=\"status\">Status</label>"),
        "{html}"
    );
    assert!(html.contains("<option value=\"live\" selected>"), "{html}");

    // Status toggles: refused without the form's token, then to manual and to draft.
    let post = format!("{path}/status");
    let (status, _, _) = app.form(&post, &[("status", "draft")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, html) = app
        .form(&post, &[("csrf", CSRF), ("status", "paused")])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{html}");
    assert_eq!(
        app.flows.get_flow(&flow.id).await.expect("flow").status,
        FlowStatus::Live
    );
    for (value, expected) in [("manual", FlowStatus::Manual), ("draft", FlowStatus::Draft)] {
        let (status, location, _) = app.form(&post, &[("csrf", CSRF), ("status", value)]).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(location, path);
        assert_eq!(
            app.flows.get_flow(&flow.id).await.expect("flow").status,
            expected
        );
    }
    let (_, html) = app.page(&path).await;
    assert!(html.contains("<option value=\"draft\" selected>"), "{html}");
    app.stop().await;
}
