//! The console's Flows pages over real HTTP: Create flow from the ready templates (the gallery,
//! the parameters picked from the account's lists, segments and metrics, errors named by
//! field), from scratch, deleting a draft, the index a page at a time, and a welcome series made
//! here and set live sending its first email to a real SMTP server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use signalbox_audience::{Audience, SegmentInput};
use signalbox_console::{Authenticator, SignedIn};
use signalbox_core::{Clock, SystemClock, WriteKey};
use signalbox_engage::{Engage, EngageConfig, List, MetricQuery, OptInProcess, SubscribeRequest};
use signalbox_flows::{FlowInfo, FlowMail, FlowStatus, Flows, FlowsConfig};
use signalbox_mail::{Composer, LinkSigner, Mailer, MailerConfig, TrackingLinks};
use signalbox_server::{Application, ServerConfig, ServerError};
use signalbox_store::sqlite::SqliteOptions;
use signalbox_store::{SqliteStore, Store};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::helpers::{basic, SOURCE};
use crate::sink::SmtpSink;

const SESSION: &str = "flows-test-session";
const CSRF: &str = "flows-test-csrf";

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
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), ServerError>>>,
    _dir: TempDir,
}

fn mail_for(url: &str) -> FlowMail {
    let mut config = MailerConfig::new(url.parse().expect("smtp url"), "Shop <shop@example.com>");
    config.hello_name = Some("localhost".into());
    let links = TrackingLinks::new(
        LinkSigner::new(b"a long random link secret for the flows tests").expect("signer"),
        "https://mail.example.com",
    )
    .expect("links");
    FlowMail {
        mailer: Mailer::new(config).expect("mailer"),
        composer: Composer::new(links, None),
    }
}

impl ConsoleApp {
    async fn spawn(sink: Option<&SmtpSink>) -> ConsoleApp {
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
        let mut config = FlowsConfig::new(dir.path().join("flows.db"));
        config.mail = sink.map(|sink| mail_for(&sink.url()));
        config.poll_interval = Duration::from_millis(100);
        let flows = Flows::start(
            engage.clone(),
            Arc::new(SystemClock),
            config,
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

    /// The flow a form created, from the `Location` it answered with.
    async fn created(&self, location: &str) -> FlowInfo {
        let id = location
            .strip_prefix("/flows/")
            .unwrap_or_else(|| panic!("a flow's page, got {location:?}"));
        self.flows.get_flow(id).await.expect("the created flow")
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

/// The page's text with minijinja's escapes of `/`, `'` and `"` undone, for comparing messages.
fn unescape(html: &str) -> String {
    html.replace("&#x2f;", "/")
        .replace("&#x27;", "'")
        .replace("&quot;", "\"")
}

/// An account with a newsletter list, the shop's metrics (through Segment calls) and a
/// segment of lapsed customers.
struct Shop {
    app: ConsoleApp,
    list: List,
    segment: String,
}

async fn shop(sink: Option<&SmtpSink>) -> Shop {
    let app = ConsoleApp::spawn(sink).await;
    app.segment(
        "identify",
        json!({"userId": "user-ada", "traits": {"email": "ada@example.com", "firstName": "Ada"}}),
    )
    .await;
    for event in [
        "Checkout Started",
        "Placed Order",
        "Viewed Product",
        "Order Completed",
    ] {
        app.segment(
            "track",
            json!({"userId": "user-ada", "event": event, "properties": {"value": 1}}),
        )
        .await;
    }
    app.settle().await;
    let list = app
        .engage
        .create_list("Newsletter", OptInProcess::SingleOptIn)
        .await
        .expect("a list");
    let order = app.metric_id("Placed Order").await;
    let segment = app
        .audience
        .create_segment(SegmentInput {
            name: "Lapsed customers".into(),
            definition: json!({"condition_groups": [
                {"conditions": [{"type": "profile-metric", "metric_id": order,
                    "measurement": "count",
                    "measurement_filter": {"type": "numeric", "operator": "greater-than", "value": 0},
                    "timeframe_filter": {"type": "date", "operator": "alltime"}}]},
                {"conditions": [{"type": "profile-metric", "metric_id": order,
                    "measurement": "count",
                    "measurement_filter": {"type": "numeric", "operator": "equals", "value": 0},
                    "timeframe_filter": {"type": "date", "operator": "in-the-last",
                        "quantity": 90, "unit": "day"}}]}]}),
            is_starred: false,
        })
        .await
        .expect("a segment")
        .id;
    Shop { app, list, segment }
}

/// The values each template needs in this shop, by field.
async fn picks(shop: &Shop, template: &str) -> Vec<(&'static str, String)> {
    let app = &shop.app;
    match template {
        "welcome-series" => vec![("list", shop.list.id.0.clone())],
        "abandoned-cart" => vec![
            ("trigger_metric", app.metric_id("Checkout Started").await),
            ("order_metric", app.metric_id("Placed Order").await),
        ],
        "browse-abandonment" => vec![
            ("trigger_metric", app.metric_id("Viewed Product").await),
            ("checkout_metric", app.metric_id("Checkout Started").await),
        ],
        "post-purchase" => vec![("trigger_metric", app.metric_id("Order Completed").await)],
        "win-back" => vec![
            ("segment", shop.segment.clone()),
            ("order_metric", app.metric_id("Placed Order").await),
        ],
        other => panic!("no picks for {other}"),
    }
}

#[tokio::test]
async fn the_gallery_lists_every_ready_template_and_starting_from_scratch() {
    let shop = shop(None).await;
    let app = &shop.app;
    let (status, html) = app.page("/flows").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains("<a class=\"button\" href=\"/flows/new\">Create flow</a>"),
        "{html}"
    );
    let (status, html) = app.page("/flows/new").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains(">Start from a template</h2>"), "{html}");
    for template in signalbox_flows::templates::catalogue() {
        assert!(html.contains(&format!(">{}</h3>", template.name)), "{html}");
        assert!(
            html.contains(&format!("href=\"/flows/new/{}\"", template.key)),
            "{html}"
        );
        for step in template.steps {
            assert!(html.contains(&format!("<li>{step}</li>")), "{step}: {html}");
        }
    }
    for name in [
        "Welcome series",
        "Abandoned cart",
        "Browse abandonment",
        "Post-purchase thank-you",
        "Win-back",
    ] {
        assert!(html.contains(&format!(">{name}</h3>")), "{name}: {html}");
    }
    assert!(
        html.contains("<a class=\"button\" href=\"/flows/new/scratch\">Start from scratch</a>"),
        "{html}"
    );
    shop.app.stop().await;
}

#[tokio::test]
async fn each_template_creates_a_draft_flow_whose_diagram_shows_its_steps() {
    let shop = shop(None).await;
    let app = &shop.app;
    for template in signalbox_flows::templates::catalogue() {
        let path = format!("/flows/new/{}", template.key);
        let (status, html) = app.page(&path).await;
        assert_eq!(status, StatusCode::OK, "{html}");
        assert!(
            html.contains("<label for=\"f-name\">Flow name</label>"),
            "{html}"
        );
        for param in template.params {
            assert!(
                html.contains(&format!(
                    "<label for=\"f-{}\">{}</label>",
                    param.key, param.label
                )),
                "{}: {html}",
                param.key
            );
        }
        let picked = picks(&shop, template.key).await;
        let name = format!("My {}", template.name);
        let mut fields = vec![("csrf", CSRF.to_owned()), ("name", name.clone())];
        fields.extend(picked.iter().map(|(k, v)| (*k, v.clone())));
        let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, location, body) = app.form(&path, &fields).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{}: {body}", template.key);
        let flow = app.created(&location).await;
        assert_eq!(flow.name, name);
        assert_eq!(flow.status, FlowStatus::Draft, "{}", template.key);
        assert!(flow.definition.actions.len() >= 2, "{}", template.key);

        let (status, html) = app.page(&location).await;
        assert_eq!(status, StatusCode::OK, "{html}");
        assert!(html.contains(&format!("<h1>{name}</h1>")), "{html}");
        assert!(html.contains("status-draft"), "{html}");
        for action in &flow.definition.actions {
            assert!(
                html.contains(&format!("id=\"step-{}\"", action.id)),
                "{}: step {} drawn: {html}",
                template.key,
                action.id
            );
        }
        assert!(html.contains("send-email"), "{html}");
        assert!(html.contains("time-delay"), "{html}");
    }
    // The metric menus preselect the usual metric of each part.
    let (_, html) = app.page("/flows/new/abandoned-cart").await;
    let checkout = app.metric_id("Checkout Started").await;
    assert!(
        html.contains(&format!("<option value=\"{checkout}\" selected>")),
        "{html}"
    );
    let (_, html) = app.page("/flows").await;
    assert_eq!(html.matches("status-draft").count(), 5, "{html}");
    shop.app.stop().await;
}

#[tokio::test]
async fn a_template_form_names_the_fields_it_refuses() {
    let shop = shop(None).await;
    let app = &shop.app;
    let (status, location, html) = app
        .form(
            "/flows/new/abandoned-cart",
            &[
                ("csrf", CSRF),
                ("name", " "),
                ("trigger_metric", "NoSuchMetric"),
                ("order_metric", ""),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{html}");
    assert!(location.is_empty());
    assert!(
        html.contains(
            "<p class=\"error\" role=\"alert\" id=\"f-name-error\">give the flow a name</p>"
        ),
        "{html}"
    );
    assert!(
        unescape(&html).contains(
            "id=\"f-trigger_metric-error\">there is no metric with the id 'NoSuchMetric'</p>"
        ),
        "{html}"
    );
    assert!(
        html.contains("id=\"f-order_metric-error\">pick the order metric</p>"),
        "{html}"
    );
    assert!(html.contains("aria-invalid=\"true\""), "{html}");
    let (status, _, html) = app
        .form(
            "/flows/new/welcome-series",
            &[("csrf", CSRF), ("name", "Welcome"), ("list", "NOLIST")],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{html}");
    assert!(
        html.contains("id=\"f-list-error\">there is no list"),
        "{html}"
    );
    let (status, _) = app.page("/flows/new/no-such-template").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let page = app.flows.list_flows_page(None, 10).await.expect("flows");
    assert!(page.flows.is_empty(), "nothing created");
    shop.app.stop().await;
}

#[tokio::test]
async fn forms_without_the_csrf_token_are_refused() {
    let shop = shop(None).await;
    let app = &shop.app;
    let list = shop.list.id.0.clone();
    let (status, _, _) = app
        .form(
            "/flows/new/welcome-series",
            &[("name", "Welcome"), ("list", &list)],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = app
        .form(
            "/flows/new/welcome-series",
            &[("csrf", "wrong"), ("name", "Welcome"), ("list", &list)],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let trigger = format!("list:{list}");
    let (status, _, _) = app
        .form(
            "/flows/new/scratch",
            &[("name", "Mine"), ("trigger", &trigger), ("actions", "[]")],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(app
        .flows
        .list_flows_page(None, 10)
        .await
        .expect("flows")
        .flows
        .is_empty());
    // A draft cannot be deleted without the token either.
    let (_, location, _) = app
        .form(
            "/flows/new/welcome-series",
            &[("csrf", CSRF), ("name", "Welcome"), ("list", &list)],
        )
        .await;
    let flow = app.created(&location).await;
    let (status, _, _) = app.form(&format!("/flows/{}/delete", flow.id), &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    app.flows.get_flow(&flow.id).await.expect("still there");
    shop.app.stop().await;
}

#[tokio::test]
async fn a_flow_from_scratch_takes_a_trigger_and_steps_and_names_its_problems() {
    let shop = shop(None).await;
    let app = &shop.app;
    let (status, html) = app.page("/flows/new/scratch").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains("<label for=\"f-trigger\">Trigger</label>"),
        "{html}"
    );
    assert!(
        html.contains("<label for=\"f-actions\">Steps (JSON)</label>"),
        "{html}"
    );
    assert!(
        html.contains("<optgroup label=\"Added to list\">"),
        "{html}"
    );
    assert!(html.contains(">Newsletter</option>"), "{html}");

    let checkout = format!("metric:{}", app.metric_id("Checkout Started").await);
    let bad_steps = json!([{"temporary_id": "w", "type": "time-delay",
        "data": {"unit": "fortnights", "value": 1}, "links": {"next": null}}])
    .to_string();
    let (status, _, html) = app
        .form(
            "/flows/new/scratch",
            &[
                ("csrf", CSRF),
                ("name", "Mine"),
                ("trigger", &checkout),
                ("actions", &bad_steps),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{html}");
    assert!(
        unescape(&html).contains(
            "id=\"f-actions-error\">at /actions/0/data/unit: expected minutes, hours or days</p>"
        ),
        "{html}"
    );
    let (status, _, html) = app
        .form(
            "/flows/new/scratch",
            &[
                ("csrf", CSRF),
                ("name", "Mine"),
                ("trigger", ""),
                ("actions", "{"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{html}");
    assert!(
        html.contains("id=\"f-trigger-error\">pick a list, metric or segment</p>"),
        "{html}"
    );
    assert!(html.contains("id=\"f-actions-error\">not JSON"), "{html}");

    let steps = json!([
        {"temporary_id": "wait", "type": "time-delay", "data": {"unit": "hours", "value": 1},
         "links": {"next": "mail"}},
        {"temporary_id": "mail", "type": "send-email", "data": {"message": {
            "subject_line": "Hello", "text": "Hello there"}}, "links": {"next": null}}
    ])
    .to_string();
    let (status, location, html) = app
        .form(
            "/flows/new/scratch",
            &[
                ("csrf", CSRF),
                ("name", "Mine"),
                ("trigger", &checkout),
                ("actions", &steps),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{html}");
    let flow = app.created(&location).await;
    assert_eq!(flow.status, FlowStatus::Draft);
    assert_eq!(flow.trigger_type, "Metric");
    assert_eq!(flow.definition.actions.len(), 2);
    let (_, html) = app.page(&location).await;
    assert!(html.contains("Wait 1 hours"), "{html}");
    assert!(html.contains("Email: Hello"), "{html}");
    shop.app.stop().await;
}

#[tokio::test]
async fn a_draft_flow_is_deleted_after_confirming_and_a_live_one_is_not() {
    let shop = shop(None).await;
    let app = &shop.app;
    let list = shop.list.id.0.clone();
    let (_, location, _) = app
        .form(
            "/flows/new/welcome-series",
            &[("csrf", CSRF), ("name", "Welcome"), ("list", &list)],
        )
        .await;
    let flow = app.created(&location).await;
    let (_, html) = app.page(&location).await;
    let delete_path = format!("/flows/{}/delete", flow.id);
    assert!(
        html.contains(&format!("href=\"{delete_path}\">Delete flow</a>")),
        "{html}"
    );
    let (status, html) = app.page(&delete_path).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains("Delete the draft flow <strong>Welcome</strong>?"),
        "{html}"
    );
    assert!(
        html.contains("<button type=\"submit\" class=\"danger\">Delete flow</button>"),
        "{html}"
    );

    // Live: refused, and kept.
    let (status, _, _) = app
        .form(
            &format!("/flows/{}/status", flow.id),
            &[("csrf", CSRF), ("status", "live")],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (_, html) = app.page(&location).await;
    assert!(!html.contains("Delete flow"), "{html}");
    let (status, _, html) = app.form(&delete_path, &[("csrf", CSRF)]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{html}");
    assert!(html.contains("only a draft flow can be deleted"), "{html}");
    app.flows.get_flow(&flow.id).await.expect("kept");

    // Draft again: deleted.
    app.form(
        &format!("/flows/{}/status", flow.id),
        &[("csrf", CSRF), ("status", "draft")],
    )
    .await;
    let (status, location, _) = app.form(&delete_path, &[("csrf", CSRF)]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location, "/flows?done=deleted");
    assert!(app.flows.get_flow(&flow.id).await.is_err(), "deleted");
    let (_, html) = app.page(&location).await;
    assert!(
        html.contains("<p class=\"ok\" role=\"status\">Flow deleted.</p>"),
        "{html}"
    );
    assert!(!html.contains(">Welcome</a>"), "{html}");
    shop.app.stop().await;
}

#[tokio::test]
async fn the_index_shows_fifty_flows_a_page_with_a_cursor_to_the_next() {
    let app = ConsoleApp::spawn(None).await;
    let definition = json!({
        "triggers": [{"type": "list", "id": "L1"}],
        "entry_action_id": "m",
        "actions": [{"temporary_id": "m", "type": "send-email", "data": {"message": {
            "subject_line": "Hi", "text": "Hi"}}, "links": {"next": null}}]
    });
    for i in 0..57 {
        app.flows
            .create_flow(&format!("Flow {i:02}"), &definition, None)
            .await
            .expect("a flow");
    }
    let (status, html) = app.page("/flows").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    let rows = |html: &str| html.matches("<tr><td><a href=\"/flows/").count();
    assert_eq!(rows(&html), 50, "{html}");
    // Newest change first.
    assert!(html.contains(">Flow 56</a>"), "{html}");
    assert!(!html.contains(">Flow 00</a>"), "{html}");
    let next = html
        .split("href=\"/flows?after=")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("a next page link: {html}"))
        .to_owned();
    let (status, html) = app.page(&format!("/flows?after={next}")).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert_eq!(rows(&html), 7, "{html}");
    assert!(html.contains(">Flow 00</a>"), "{html}");
    assert!(!html.contains(">Flow 56</a>"), "{html}");
    assert!(!html.contains("rel=\"next\""), "the last page: {html}");
    assert!(html.contains("<a href=\"/flows\">First page</a>"), "{html}");
    let (status, _) = app.page("/flows?after=garbage").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_welcome_series_made_in_the_console_and_set_live_sends_its_first_email() {
    let sink = SmtpSink::plain();
    let shop = shop(Some(&sink)).await;
    let app = &shop.app;
    let list = shop.list.id.0.clone();
    let (status, location, html) = app
        .form(
            "/flows/new/welcome-series",
            &[("csrf", CSRF), ("name", "Welcome"), ("list", &list)],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{html}");
    let flow = app.created(&location).await;
    let (status, _, _) = app
        .form(
            &format!("/flows/{}/status", flow.id),
            &[("csrf", CSRF), ("status", "live")],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);

    app.engage
        .subscribe(SubscribeRequest {
            list_id: Some(shop.list.id.clone()),
            emails: vec!["grace@example.com".parse().unwrap()],
            ..SubscribeRequest::default()
        })
        .await
        .expect("subscribe grace");
    app.settle().await;
    app.flows.wake();
    app.flows.sync().await.expect("the flows engine caught up");
    let messages = sink.wait_for(1);
    assert_eq!(messages.len(), 1, "one welcome email");
    assert_eq!(messages[0].rcpt_tos, ["grace@example.com"]);
    let raw = String::from_utf8_lossy(&messages[0].raw);
    assert!(raw.contains("Subject: Welcome, friend!"), "{raw}");

    let stats = app.flows.stats(&flow.id).await.expect("stats");
    assert_eq!(stats.flow.get("entered"), 1);
    let (_, html) = app.page(&location).await;
    assert!(html.contains("entered: 1"), "{html}");
    shop.app.stop().await;
}

#[tokio::test]
async fn the_create_and_delete_pages_need_a_session() {
    let app = ConsoleApp::spawn(None).await;
    for path in [
        "/flows/new",
        "/flows/new/welcome-series",
        "/flows/new/scratch",
        "/flows/x/delete",
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
    for path in [
        "/flows/new/welcome-series",
        "/flows/new/scratch",
        "/flows/x/delete",
    ] {
        let response = app
            .http
            .post(format!("{}{path}", app.address))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(format!("csrf={CSRF}&name=x"))
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    app.stop().await;
}
