//! The console's Lists & Segments over real HTTP: creating, renaming and deleting lists;
//! creating segments with the builder (groups of alternative conditions as form fields), its
//! preview count and the live count endpoint; a JSON-defined segment round-tripping through
//! the builder; refused forms without the CSRF token; the segments index paged.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use signalbox_audience::{Audience, AudienceError, SegmentInput};
use signalbox_console::{Authenticator, SignedIn};
use signalbox_core::{Clock, SystemClock, WriteKey};
use signalbox_engage::{
    Engage, EngageConfig, EngageError, ListId, ListQuery, MetricQuery, OptInProcess, ProfileField,
    ProfileId, ProfileQuery,
};
use signalbox_server::{Application, ServerConfig, ServerError};
use signalbox_store::sqlite::SqliteOptions;
use signalbox_store::{SqliteStore, Store};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::helpers::{basic, SOURCE};

const SESSION: &str = "lists-test-session";
const CSRF: &str = "lists-test-csrf";

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
        application.set_engine(
            crate::helpers::engine(&engage, dir.path(), Some(audience.clone()), None).await,
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
    async fn form<K: AsRef<str>, V: AsRef<str>>(
        &self,
        path: &str,
        fields: &[(K, V)],
    ) -> (StatusCode, String, String) {
        let body = fields
            .iter()
            .map(|(name, value)| {
                format!(
                    "{}={}",
                    form_encode(name.as_ref()),
                    form_encode(value.as_ref())
                )
            })
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

    async fn metric_id(&self, name: &str) -> String {
        self.engage
            .list_metrics(MetricQuery::default())
            .await
            .expect("metrics")
            .items
            .into_iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("metric {name} exists"))
            .id
            .0
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

/// The list's id from a redirect to its page.
fn list_id_of(location: &str) -> ListId {
    ListId(
        location
            .strip_prefix("/lists/")
            .unwrap_or_else(|| panic!("a list's page: {location}"))
            .to_owned(),
    )
}

#[tokio::test]
async fn a_list_is_created_with_its_opt_in_process_renamed_and_deleted() {
    let app = ConsoleApp::spawn().await;
    let (status, html) = app.page("/lists").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains("<a class=\"button\" href=\"/lists/new\">Create list</a>"),
        "{html}"
    );
    let (status, html) = app.page("/lists/new").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains("<label for=\"f-list-name\">List name</label>"),
        "{html}"
    );
    assert!(html.contains("<legend>Opt-in process</legend>"), "{html}");
    assert!(
        html.contains("<label for=\"f-opt-in-double\">Double opt-in</label>"),
        "{html}"
    );
    assert!(html.contains("join once they do"), "help text: {html}");

    // Single opt-in.
    let (status, location, _) = app
        .form(
            "/lists/new",
            &[
                ("csrf", CSRF),
                ("name", " Newsletter "),
                ("opt_in", "single_opt_in"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let newsletter = app
        .engage
        .get_list(&list_id_of(&location))
        .await
        .expect("created");
    assert_eq!(newsletter.name, "Newsletter");
    assert_eq!(newsletter.opt_in_process, OptInProcess::SingleOptIn);
    let (status, html) = app.page(&location).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains("Single opt-in: people join at once"),
        "{html}"
    );

    // Double opt-in.
    let (status, location, _) = app
        .form(
            "/lists/new",
            &[
                ("csrf", CSRF),
                ("name", "Careful"),
                ("opt_in", "double_opt_in"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let careful = app
        .engage
        .get_list(&list_id_of(&location))
        .await
        .expect("created");
    assert_eq!(careful.opt_in_process, OptInProcess::DoubleOptIn);
    let (_, html) = app.page(&location).await;
    assert!(html.contains("Double opt-in: people join once they confirm"));

    // Errors are named at their fields, and the form keeps what was typed.
    let (status, _, html) = app
        .form(
            "/lists/new",
            &[("csrf", CSRF), ("name", "  "), ("opt_in", "triple_opt_in")],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{html}");
    assert!(
        html.contains("<p class=\"error\" role=\"alert\" id=\"f-list-name-error\">is required</p>"),
        "{html}"
    );
    assert!(
        html.contains("aria-describedby=\"f-list-name-error\""),
        "{html}"
    );
    assert!(
        html.contains("role=\"alert\" id=\"f-opt-in-error\">choose single or double opt-in"),
        "{html}"
    );
    let long = "x".repeat(256);
    let (status, _, html) = app
        .form(
            "/lists/new",
            &[("csrf", CSRF), ("name", &long), ("opt_in", "single_opt_in")],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("must be at most 255 characters"), "{html}");
    assert!(html.contains(&format!("value=\"{long}\"")), "{html}");
    let lists = app
        .engage
        .list_lists(ListQuery::default())
        .await
        .expect("lists");
    assert_eq!(lists.items.len(), 2, "nothing created by refused forms");

    // Rename (and switch to double opt-in) from the list's page.
    let settings = format!("/lists/{}/settings", newsletter.id.0);
    let (status, location, _) = app
        .form(
            &settings,
            &[
                ("csrf", CSRF),
                ("name", "Weekly news"),
                ("opt_in", "double_opt_in"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location, format!("/lists/{}", newsletter.id.0));
    let renamed = app.engage.get_list(&newsletter.id).await.expect("list");
    assert_eq!(renamed.name, "Weekly news");
    assert_eq!(renamed.opt_in_process, OptInProcess::DoubleOptIn);
    let (status, _, html) = app
        .form(
            &settings,
            &[("csrf", CSRF), ("name", ""), ("opt_in", "double_opt_in")],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        html.contains("id=\"f-list-name-error\">is required"),
        "{html}"
    );
    assert_eq!(
        app.engage
            .get_list(&newsletter.id)
            .await
            .expect("list")
            .name,
        "Weekly news"
    );

    // Delete asks first, on a page of its own; then deletes.
    let (_, html) = app.page(&location).await;
    let delete = format!("/lists/{}/delete", newsletter.id.0);
    assert!(html.contains(&format!("href=\"{delete}\"")), "{html}");
    let (status, html) = app.page(&delete).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("Delete list “Weekly news”?"), "{html}");
    assert!(
        html.contains("<button type=\"submit\">Delete list</button>"),
        "{html}"
    );
    let (status, _, _) = app.form(&delete, &[("csrf", "wrong")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    app.engage
        .get_list(&newsletter.id)
        .await
        .expect("still there");
    let (status, location, _) = app.form(&delete, &[("csrf", CSRF)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location, "/lists");
    assert!(matches!(
        app.engage.get_list(&newsletter.id).await,
        Err(EngageError::NotFound { .. })
    ));
    let (_, html) = app.page("/lists").await;
    assert!(!html.contains("Weekly news"), "{html}");
    assert!(html.contains(">Careful</a>"), "{html}");
    app.stop().await;
}

/// Four people: Ada (pro, 2 orders), Bob (pro, no order), Cleo (basic, 1 order), Dan (free,
/// 3 orders).
async fn with_shoppers(app: &ConsoleApp) {
    for (user, email, plan, orders) in [
        ("u-ada", "ada@example.com", "pro", 2),
        ("u-bob", "bob@example.com", "pro", 0),
        ("u-cleo", "cleo@example.com", "basic", 1),
        ("u-dan", "dan@example.com", "free", 3),
    ] {
        app.segment(
            "identify",
            json!({"userId": user, "traits": {"email": email, "plan": plan}}),
        )
        .await;
        for n in 0..orders {
            app.segment(
                "track",
                json!({"userId": user, "event": "Placed Order",
                    "properties": {"order_id": format!("{user}-{n}")}}),
            )
            .await;
        }
    }
    app.settle().await;
}

/// The builder's fields for "plan is pro or basic" and "placed an order in the last 30 days".
fn two_groups(order: &str) -> Vec<(String, String)> {
    [
        ("csrf", CSRF),
        ("name", "Paying buyers"),
        ("g0.c0.kind", "property"),
        ("g0.c0.property", "plan"),
        ("g0.c0.op", "string:equals"),
        ("g0.c0.value", "pro"),
        ("g0.c1.kind", "property"),
        ("g0.c1.property", "plan"),
        ("g0.c1.op", "string:equals"),
        ("g0.c1.value", "basic"),
        ("g1.c0.kind", "metric"),
        ("g1.c0.metric", order),
        ("g1.c0.measurement", "count"),
        ("g1.c0.count_op", "greater-than-or-equal"),
        ("g1.c0.count", "1"),
        ("g1.c0.time", "in-the-last"),
        ("g1.c0.quantity", "30"),
        ("g1.c0.unit", "day"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn with_op(fields: &[(String, String)], op: &str) -> Vec<(String, String)> {
    let mut fields = fields.to_vec();
    fields.push(("op".into(), op.into()));
    fields
}

#[tokio::test]
async fn a_segment_built_from_two_groups_previews_its_count_and_saves() {
    let app = ConsoleApp::spawn().await;
    with_shoppers(&app).await;
    let order = app.metric_id("Placed Order").await;

    let (status, html) = app.page("/segments").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains("<a class=\"button\" href=\"/segments/new\">Create segment</a>"),
        "{html}"
    );
    let (status, html) = app.page("/segments/new").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains("<label for=\"f-name\">Segment name</label>"),
        "{html}"
    );
    assert!(html.contains("name=\"g0.c0.kind\""), "{html}");
    assert!(html.contains("aria-live=\"polite\""), "{html}");
    assert!(html.contains("<summary>Edit as JSON</summary>"), "{html}");

    // Without JavaScript the buttons re-render the form with a row or group added or removed.
    let one = two_groups(&order);
    let (status, _, html) = app
        .form("/segments/new", &with_op(&one, "add-condition:1"))
        .await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("name=\"g1.c1.kind\""), "{html}");
    assert!(html.contains(&format!("<option value=\"{order}\" selected>")));
    let (_, _, html) = app.form("/segments/new", &with_op(&one, "add-group")).await;
    assert!(html.contains("name=\"g2.c0.kind\""), "{html}");
    assert!(html.contains("Group 3: any of these"), "{html}");
    let (_, _, html) = app
        .form("/segments/new", &with_op(&one, "remove:0.1"))
        .await;
    assert!(!html.contains("name=\"g0.c1.kind\""), "{html}");
    assert!(!html.contains("value=\"basic\""), "{html}");
    assert!(html.contains("value=\"pro\""), "{html}");
    // A row's kind changed: its fields follow.
    let mut changed = one.clone();
    for (key, value) in &mut changed {
        if key == "g0.c1.kind" {
            *value = "consent".into();
        }
    }
    let (_, _, html) = app
        .form("/segments/new", &with_op(&changed, "refresh"))
        .await;
    assert!(
        html.contains("<label for=\"f-g0-c1-channel\">Channel</label>"),
        "{html}"
    );

    // Preview: Ada (pro) and Cleo (basic) ordered; Bob did not, Dan is on another plan.
    let (status, _, html) = app.form("/segments/new", &with_op(&one, "preview")).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains("Preview: 2 of 4 profiles would be in this segment now."),
        "{html}"
    );
    // The live count endpoint answers the same for the same form.
    let response = app
        .http
        .post(format!("{}/segments/preview", app.address))
        .header("Cookie", format!("signalbox_session={SESSION}"))
        .form(&one)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::OK);
    let count: Value = response.json().await.expect("json");
    assert_eq!(count, json!({"count": 2, "evaluated": 4}));
    assert!(app
        .audience
        .segment_by_name("Paying buyers")
        .await
        .expect("read")
        .is_none());

    // Save: the segment's page, its definition, and (once settled) its members.
    let (status, location, html) = app.form("/segments/new", &with_op(&one, "save")).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{html}");
    let segment = app
        .audience
        .segment_by_name("Paying buyers")
        .await
        .expect("read")
        .expect("created");
    assert_eq!(location, format!("/segments/{}", segment.id));
    let property = |plan: &str| {
        json!({"type": "profile-property", "property": "properties['plan']",
            "filter": {"type": "string", "operator": "equals", "value": plan}})
    };
    assert_eq!(
        segment.definition,
        json!({"condition_groups": [
            {"conditions": [property("pro"), property("basic")]},
            {"conditions": [{"type": "profile-metric", "metric_id": order, "measurement": "count",
                "measurement_filter": {"type": "numeric", "operator": "greater-than-or-equal", "value": 1},
                "timeframe_filter": {"type": "date", "operator": "in-the-last", "quantity": 30, "unit": "day"}}]},
        ]})
    );
    app.audience
        .sync_timeout(Duration::from_secs(60))
        .await
        .expect("backfilled");
    let (status, html) = app.page(&location).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("2 profiles ·"), "{html}");
    for email in ["ada@example.com", "cleo@example.com"] {
        let id = app.profile_id(email).await;
        assert!(
            html.contains(&format!("href=\"/profiles/{}\"", id.0)),
            "{html}"
        );
    }
    let bob = app.profile_id("bob@example.com").await;
    assert!(!html.contains(&format!("href=\"/profiles/{}\"", bob.0)));
    // The builder shows the saved definition as fields.
    assert!(
        html.contains("name=\"g0.c1.value\" value=\"basic\""),
        "{html}"
    );
    assert!(
        html.contains("name=\"g1.c0.quantity\" value=\"30\""),
        "{html}"
    );
    assert!(
        html.contains("<option value=\"greater-than-or-equal\" selected>"),
        "{html}"
    );

    // Delete asks first, then deletes.
    let delete = format!("{location}/delete");
    let (status, html) = app.page(&delete).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains("Delete segment “Paying buyers”?"), "{html}");
    let (status, location, _) = app.form(&delete, &[("csrf", CSRF)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location, "/segments");
    assert!(matches!(
        app.audience.get_segment(&segment.id).await,
        Err(AudienceError::NotFound { .. })
    ));
    app.stop().await;
}

#[tokio::test]
async fn the_builder_names_errors_at_their_fields() {
    let app = ConsoleApp::spawn().await;
    let fields = [
        ("csrf", CSRF),
        ("name", ""),
        ("g0.c0.kind", "metric"),
        ("g0.c0.metric", "M-none"),
        ("g0.c0.count_op", "greater-than"),
        ("g0.c0.count", "lots"),
        ("g0.c0.time", "alltime"),
        ("g0.c1.kind", "property"),
        ("g0.c1.property", ""),
        ("g0.c1.op", "string:equals"),
        ("op", "save"),
    ];
    let (status, _, html) = app.form("/segments/new", &fields).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{html}");
    assert!(
        html.contains("<p class=\"error\" role=\"alert\" id=\"f-name-error\">is required</p>"),
        "{html}"
    );
    assert!(
        html.contains("id=\"f-g0-c0-count-error\">&#x27;lots&#x27; is not a number"),
        "{html}"
    );
    assert!(
        html.contains("aria-invalid=\"true\" aria-describedby=\"f-g0-c0-count-error\""),
        "{html}"
    );
    assert!(
        html.contains("id=\"f-g0-c1-property-error\">is required"),
        "{html}"
    );
    // What the parser refuses lands at the field its pointer names.
    let fields = [
        ("csrf", CSRF),
        ("name", "Odd"),
        ("g0.c0.kind", "property"),
        ("g0.c0.property", "email"),
        ("g0.c0.op", "string:sounds-like"),
        ("g0.c0.value", "x"),
        ("op", "save"),
    ];
    let (status, _, html) = app.form("/segments/new", &fields).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{html}");
    assert!(html.contains("id=\"f-g0-c0-op-error\""), "{html}");
    // The live count answers errors by field.
    let response = app
        .http
        .post(format!("{}/segments/preview", app.address))
        .header("Cookie", format!("signalbox_session={SESSION}"))
        .form(&[
            ("csrf", CSRF),
            ("g0.c0.kind", "metric"),
            ("g0.c0.metric", "M"),
            ("g0.c0.count", "lots"),
        ])
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["errors"]["g0.c0.count"], "'lots' is not a number");
    assert!(app.audience.list_segments().await.expect("list").is_empty());
    app.stop().await;
}

/// The builder form's fields as a browser would send them: inputs' values, selected options,
/// textareas' text (buttons left out).
fn form_fields(html: &str) -> Vec<(String, String)> {
    let start = html.find("data-builder").expect("the builder");
    let form = &html[start..start + html[start..].find("</form>").expect("its end")];
    let attr = |tag: &str, name: &str| -> Option<String> {
        let at = tag.find(&format!(" {name}=\""))? + name.len() + 3;
        Some(unescape(&tag[at..at + tag[at..].find('"')?]))
    };
    let mut fields = Vec::new();
    let mut rest = form;
    while let Some(at) = rest.find('<') {
        rest = &rest[at..];
        let end = rest.find('>').expect("a tag's end");
        let tag = &rest[..=end];
        if tag.starts_with("<input") {
            if let Some(name) = attr(tag, "name") {
                fields.push((name, attr(tag, "value").unwrap_or_default()));
            }
        } else if tag.starts_with("<textarea") {
            let name = attr(tag, "name").expect("named");
            let close = rest.find("</textarea>").expect("closed");
            fields.push((name, unescape(&rest[end + 1..close])));
        } else if tag.starts_with("<select") {
            let name = attr(tag, "name").expect("named");
            let close = rest.find("</select>").expect("closed");
            for option in rest[end + 1..close].split("<option").skip(1) {
                let head = &option[..option.find('>').expect("an option")];
                if head.contains(" selected") {
                    let value = attr(&format!("{head}>"), "value").unwrap_or_default();
                    fields.push((name.clone(), value));
                }
            }
        }
        rest = &rest[end + 1..];
    }
    fields
}

fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#x2f;", "/")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[tokio::test]
async fn a_json_defined_segment_round_trips_through_the_builder() {
    let app = ConsoleApp::spawn().await;
    with_shoppers(&app).await;
    let order = app.metric_id("Placed Order").await;
    let list = app
        .engage
        .create_list("Newsletter", OptInProcess::SingleOptIn)
        .await
        .expect("a list");
    let definition = json!({"condition_groups": [
        {"conditions": [
            {"type": "profile-metric", "metric_id": order, "measurement": "sum",
             "measurement_filter": {"type": "numeric", "operator": "greater-than", "value": 10.5},
             "timeframe_filter": {"type": "date", "operator": "at-least", "quantity": 2, "unit": "week"}},
            {"type": "profile-metric", "metric_id": order, "measurement": "count",
             "measurement_filter": {"type": "numeric", "operator": "equals", "value": 0},
             "timeframe_filter": {"type": "date", "operator": "alltime"},
             "metric_filters": [{"property": "order_id", "filter":
                {"type": "string", "operator": "starts-with", "value": "u-ada"}}]},
        ]},
        {"conditions": [
            {"type": "profile-group-membership", "is_member": false, "group_ids": [list.id.0]},
            {"type": "profile-marketing-consent", "consent": {"channel": "email",
             "can_receive_marketing": true, "consent_status": {"subscription": "subscribed"}}},
        ]},
        {"conditions": [
            {"type": "profile-property", "property": "created",
             "filter": {"type": "date", "operator": "in-the-last", "quantity": 3, "unit": "day"}},
            {"type": "profile-property", "property": "properties['email']",
             "filter": {"type": "existence", "operator": "is-set"}},
            {"type": "profile-property", "property": "properties['vip']",
             "filter": {"type": "boolean", "operator": "equals", "value": true}},
        ]},
    ]});
    let segment = app
        .audience
        .create_segment(SegmentInput {
            name: "Through JSON".into(),
            definition: definition.clone(),
            is_starred: false,
        })
        .await
        .expect("a segment");
    assert_eq!(segment.definition, definition, "stored as written");
    let path = format!("/segments/{}", segment.id);
    let (status, html) = app.page(&path).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    // Typed rows where the fields say it exactly; the metric with an event filter as JSON.
    assert!(html.contains("name=\"g0.c1.json\""), "{html}");
    assert!(!html.contains("name=\"g0.c0.json\""), "{html}");
    assert!(html.contains("<label for=\"f-g1-c0-group\">"), "{html}");
    assert!(
        html.contains("name=\"g2.c1.property\" value=\"properties[&#x27;email&#x27;]\""),
        "{html}"
    );

    // The form sent back as rendered (renamed) saves the same definition: no new version.
    let mut fields: Vec<(String, String)> = form_fields(&html)
        .into_iter()
        .map(|(k, v)| {
            if k == "name" {
                (k, "Renamed".to_owned())
            } else {
                (k, v)
            }
        })
        .collect();
    fields.push(("op".into(), "save".into()));
    let (status, location, body) = app.form(&format!("{path}/builder"), &fields).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{fields:?} {body}");
    assert_eq!(location, path);
    let saved = app.audience.get_segment(&segment.id).await.expect("saved");
    assert_eq!(saved.name, "Renamed");
    assert_eq!(saved.definition, definition);
    assert_eq!(saved.version, 1);

    // A changed field saves a new version.
    let fields: Vec<(String, String)> = fields
        .into_iter()
        .map(|(k, v)| {
            if k == "g0.c0.quantity" {
                (k, "3".to_owned())
            } else {
                (k, v)
            }
        })
        .collect();
    let (status, _, body) = app.form(&format!("{path}/builder"), &fields).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{body}");
    let saved = app.audience.get_segment(&segment.id).await.expect("saved");
    assert_eq!(saved.version, 2);
    assert_eq!(
        saved.definition["condition_groups"][0]["conditions"][0]["timeframe_filter"]["quantity"],
        3
    );
    app.stop().await;
}

#[tokio::test]
async fn forms_without_the_csrf_token_are_refused() {
    let app = ConsoleApp::spawn().await;
    let segment = app
        .audience
        .create_segment(SegmentInput {
            name: "Kept".into(),
            definition: json!({"condition_groups": [{"conditions": [{"type": "profile-property",
                "property": "email", "filter": {"type": "existence", "operator": "is-set"}}]}]}),
            is_starred: false,
        })
        .await
        .expect("a segment");
    let builder = [
        ("name", "Nope"),
        ("g0.c0.kind", "property"),
        ("g0.c0.property", "email"),
        ("g0.c0.op", "existence:is-set"),
        ("op", "save"),
    ];
    let segment_path = format!("/segments/{}", segment.id);
    for path in [
        "/segments/new".to_owned(),
        "/segments/preview".to_owned(),
        format!("{segment_path}/builder"),
        format!("{segment_path}/delete"),
    ] {
        let (status, _, _) = app.form(&path, &builder).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
    }
    let list = [("name", "Nope"), ("opt_in", "single_opt_in")];
    let (status, _, _) = app.form("/lists/new", &list).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let kept = app
        .engage
        .create_list("Kept", OptInProcess::SingleOptIn)
        .await
        .expect("a list");
    for path in [
        format!("/lists/{}/settings", kept.id.0),
        format!("/lists/{}/delete", kept.id.0),
    ] {
        let (status, _, _) = app.form(&path, &list).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
    }
    assert_eq!(
        app.engage.get_list(&kept.id).await.expect("kept").name,
        "Kept"
    );
    let segments = app.audience.list_segments().await.expect("segments");
    assert_eq!(segments.len(), 1);
    assert_eq!(segments[0].name, "Kept");
    // Without a session, nothing at all.
    let response = app
        .http
        .post(format!("{}/segments/preview", app.address))
        .form(&[("csrf", CSRF)])
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    app.stop().await;
}

#[tokio::test]
async fn the_segments_index_pages_by_fifty() {
    let app = ConsoleApp::spawn().await;
    for n in 0..55 {
        app.audience
            .create_segment(SegmentInput {
                name: format!("Segment {n:02}"),
                definition: json!({"condition_groups": [{"conditions": [{"type": "profile-property",
                    "property": "email", "filter": {"type": "string", "operator": "ends-with",
                    "value": format!("@{n}.test")}}]}]}),
                is_starred: false,
            })
            .await
            .expect("a segment");
    }
    let all = app.audience.list_segments().await.expect("segments");
    let (status, html) = app.page("/segments").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert_eq!(html.matches("<tr><td>").count(), 50, "{html}");
    assert!(html.contains(">Segment 00</a>") && html.contains(">Segment 49</a>"));
    assert!(!html.contains(">Segment 50</a>"), "{html}");
    let next = format!("/segments?after={}", all[49].id);
    assert!(
        html.contains(&format!("<a href=\"{next}\" rel=\"next\">Next page</a>")),
        "{html}"
    );
    assert!(!html.contains("First page"), "{html}");
    let (status, html) = app.page(&next).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert_eq!(html.matches("<tr><td>").count(), 5, "{html}");
    assert!(html.contains(">Segment 50</a>") && html.contains(">Segment 54</a>"));
    assert!(!html.contains("Next page"), "{html}");
    assert!(
        html.contains("<a href=\"/segments\">First page</a>"),
        "{html}"
    );
    // An unknown position is a clear error, not an empty page.
    let (status, html) = app.page("/segments?after=nope").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{html}");
    assert!(html.contains("after:"), "{html}");
    app.stop().await;
}

#[tokio::test]
async fn a_segment_another_segment_reads_is_kept_with_the_reason() {
    let app = ConsoleApp::spawn().await;
    let base = app
        .audience
        .create_segment(SegmentInput {
            name: "Base".into(),
            definition: json!({"condition_groups": [{"conditions": [{"type": "profile-property",
                "property": "email", "filter": {"type": "existence", "operator": "is-set"}}]}]}),
            is_starred: false,
        })
        .await
        .expect("a segment");
    app.audience
        .create_segment(SegmentInput {
            name: "Reader".into(),
            definition: json!({"condition_groups": [{"conditions": [
                {"type": "profile-group-membership", "is_member": true, "group_ids": [base.id]}]}]}),
            is_starred: false,
        })
        .await
        .expect("a segment reading the first");
    let delete = format!("/segments/{}/delete", base.id);
    let (status, _, html) = app.form(&delete, &[("csrf", CSRF)]).await;
    assert_eq!(status, StatusCode::CONFLICT, "{html}");
    assert!(
        html.contains("<p role=\"alert\" class=\"error\">"),
        "{html}"
    );
    app.audience.get_segment(&base.id).await.expect("kept");
    // The reader's builder offers the segment it reads, chosen.
    let reader = app
        .audience
        .segment_by_name("Reader")
        .await
        .expect("read")
        .expect("there");
    let (_, html) = app.page(&format!("/segments/{}", reader.id)).await;
    assert!(
        html.contains(&format!(
            "<option value=\"{}\" selected>Segment: Base</option>",
            base.id
        )),
        "{html}"
    );
    app.stop().await;
}
