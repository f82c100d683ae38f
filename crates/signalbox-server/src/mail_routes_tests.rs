//! In-process tests of the mail-facing routes: the open pixel and click redirects (recorded
//! as built-in metrics, forged tokens refused) and `/api/templates` + `/api/template-render`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body as HttpBody;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use signalbox_core::{Scopes, SystemClock};
use signalbox_engage::{Engage, EngageConfig, ProfileInput};
use signalbox_mail::{LinkKind, LinkSigner, TrackingLinks};
use signalbox_store::sqlite::SqliteOptions;
use signalbox_store::{SqliteStore, Store};
use tower::{Layer, ServiceExt};
use tower_http::normalize_path::{NormalizePath, NormalizePathLayer};

use crate::app::{router, Application, ServerConfig};
use crate::mail::{Mail, MailSettings};
use crate::tracking::PIXEL_GIF;

const BASE: &str = "https://mail.example.com";

struct TestApp {
    router: NormalizePath<Router>,
    key: String,
    engage: Engage,
    links: TrackingLinks,
    _dir: tempfile::TempDir,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    bytes: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        if self.bytes.is_empty() {
            return Value::Null;
        }
        serde_json::from_slice(&self.bytes)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.bytes)))
    }
}

async fn spawn() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(dir.path().join("signalbox.db"), SqliteOptions::default()).unwrap(),
    );
    let (_, key) = store
        .create_api_key("tests", &Scopes::default_for_new_key())
        .await
        .unwrap();
    let clock = Arc::new(SystemClock);
    let engage = Engage::start(
        Arc::clone(&store),
        clock.clone(),
        EngageConfig::new(dir.path().join("engage.db")),
    )
    .await
    .unwrap();
    let mut app = Application::build(
        store,
        clock,
        ServerConfig::default(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let links = TrackingLinks::new(LinkSigner::new(&[7u8; 32]).unwrap(), BASE).unwrap();
    app.set_links(links.clone());
    app.set_mail(Mail::new(&MailSettings::default(), links.clone()).unwrap());
    app.set_engine(crate::app::test_engine(&engage, dir.path()).await);
    TestApp {
        router: NormalizePathLayer::trim_trailing_slash().layer(router(app.state().clone())),
        key: key.expose().to_owned(),
        engage,
        links,
        _dir: dir,
    }
}

impl TestApp {
    async fn send(&self, request: Request<HttpBody>) -> Reply {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec();
        Reply {
            status,
            headers,
            bytes,
        }
    }

    /// A tracking URL as an email carries it, fetched by path.
    async fn fetch(&self, url: &str) -> Reply {
        let path = url.strip_prefix(BASE).unwrap_or(url);
        self.send(
            Request::get(path)
                .header(header::USER_AGENT, "MailClient/1.0")
                .body(HttpBody::empty())
                .unwrap(),
        )
        .await
    }

    /// A HEAD on a tracking URL, as a link scanner sends it.
    async fn head(&self, url: &str) -> Reply {
        let path = url.strip_prefix(BASE).unwrap_or(url);
        self.send(
            Request::head(path)
                .header(header::USER_AGENT, "LinkScanner/1.0")
                .body(HttpBody::empty())
                .unwrap(),
        )
        .await
    }

    fn api(&self, method: Method, uri: &str) -> axum::http::request::Builder {
        Request::builder()
            .method(method)
            .uri(uri)
            .header(header::HOST, "klaviyo.test")
            .header(
                header::AUTHORIZATION,
                format!("Klaviyo-API-Key {}", self.key),
            )
            .header("revision", "2026-07-15")
    }

    async fn get(&self, uri: &str) -> Reply {
        self.send(self.api(Method::GET, uri).body(HttpBody::empty()).unwrap())
            .await
    }

    async fn write(&self, method: Method, uri: &str, body: Value) -> Reply {
        self.send(
            self.api(method, uri)
                .header(header::CONTENT_TYPE, "application/vnd.api+json")
                .body(HttpBody::from(body.to_string()))
                .unwrap(),
        )
        .await
    }

    async fn settle(&self) {
        self.engage.catch_up(Duration::from_secs(20)).await.unwrap();
    }
}

#[track_caller]
fn assert_invalid_at(reply: &Reply, pointer: &str) {
    let body = reply.json();
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errors"][0]["code"], "invalid", "{body}");
    assert_eq!(body["errors"][0]["source"]["pointer"], pointer, "{body}");
}

async fn profile(app: &TestApp, email: &str) -> String {
    app.engage
        .create_profile(ProfileInput {
            email: Some(email.into()),
            first_name: Some("Ada".into()),
            ..ProfileInput::default()
        })
        .await
        .unwrap()
        .id
        .to_string()
}

#[tokio::test]
async fn opens_and_clicks_become_signalbox_metrics() {
    let app = spawn().await;
    let profile_id = profile(&app, "ada@example.com").await;
    let message = "run-1/a2";

    let open_url = app.links.url(LinkKind::Open, &profile_id, message, None);
    let reply = app.fetch(&open_url).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers[header::CONTENT_TYPE], "image/gif");
    assert!(reply.headers[header::CACHE_CONTROL]
        .to_str()
        .unwrap()
        .contains("no-store"));
    assert_eq!(reply.bytes, PIXEL_GIF);

    let target = "https://shop.example.com/cart?id=42&utm=mail";
    let click_url = app
        .links
        .url(LinkKind::Click, &profile_id, message, Some(target));
    let reply = app.fetch(&click_url).await;
    assert_eq!(reply.status, StatusCode::FOUND);
    assert_eq!(reply.headers[header::LOCATION], target);
    app.settle().await;

    let metrics = app.get("/api/metrics").await.json();
    let by_name = |name: &str| {
        metrics["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["attributes"]["name"] == name)
            .unwrap_or_else(|| panic!("no metric {name}: {metrics}"))
            .clone()
    };
    let opened = by_name("Opened Email");
    assert_eq!(opened["attributes"]["integration"]["name"], "Signalbox");
    assert_eq!(opened["attributes"]["integration"]["category"], "Internal");
    let clicked = by_name("Clicked Email");
    assert_eq!(clicked["attributes"]["integration"]["name"], "Signalbox");

    let events = app
        .get(&format!(
            "/api/events?filter=equals(metric_id,%22{}%22)",
            clicked["id"].as_str().unwrap()
        ))
        .await
        .json();
    let click = &events["data"][0]["attributes"]["event_properties"];
    assert_eq!(click["URL"], target, "{events}");
    assert_eq!(click["$message"], message);
    assert_eq!(click["User Agent"], "MailClient/1.0");
    let events = app
        .get(&format!(
            "/api/events?filter=equals(profile_id,%22{profile_id}%22)"
        ))
        .await
        .json();
    assert_eq!(events["data"].as_array().unwrap().len(), 2, "{events}");
}

#[tokio::test]
async fn a_head_on_a_tracking_link_is_no_open_or_click() {
    let app = spawn().await;
    let profile_id = profile(&app, "hal@example.com").await;
    let target = "https://shop.example.com/";
    let open_url = app.links.url(LinkKind::Open, &profile_id, "m1", None);
    let click_url = app
        .links
        .url(LinkKind::Click, &profile_id, "m1", Some(target));
    // The same status and headers as a GET, nothing recorded.
    let reply = app.head(&open_url).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers[header::CONTENT_TYPE], "image/gif");
    assert!(reply.bytes.is_empty());
    let reply = app.head(&click_url).await;
    assert_eq!(reply.status, StatusCode::FOUND);
    assert_eq!(reply.headers[header::LOCATION], target);
    let mut altered = click_url.clone();
    let last = altered.pop().unwrap();
    altered.push(if last == 'A' { 'B' } else { 'A' });
    let reply = app.head(&altered).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.headers.get(header::LOCATION).is_none());
    app.settle().await;
    let metrics = app.get("/api/metrics").await.json();
    assert_eq!(metrics["data"], json!([]), "nothing recorded: {metrics}");

    // A GET is an open or a click, as before.
    assert_eq!(app.fetch(&open_url).await.status, StatusCode::OK);
    assert_eq!(app.fetch(&click_url).await.status, StatusCode::FOUND);
    app.settle().await;
    let events = app
        .get(&format!(
            "/api/events?filter=equals(profile_id,%22{profile_id}%22)"
        ))
        .await
        .json();
    assert_eq!(events["data"].as_array().unwrap().len(), 2, "{events}");
}

#[tokio::test]
async fn forged_and_altered_tokens_are_refused_without_a_redirect() {
    let app = spawn().await;
    let profile_id = profile(&app, "bo@example.com").await;
    let genuine = app.links.url(
        LinkKind::Click,
        &profile_id,
        "m1",
        Some("https://shop.example.com/"),
    );
    // Signed with another secret, for an attacker's site.
    let other = TrackingLinks::new(LinkSigner::new(&[9u8; 32]).unwrap(), BASE).unwrap();
    let forged = other.url(
        LinkKind::Click,
        &profile_id,
        "m1",
        Some("https://evil.example.net/"),
    );
    // One character of the genuine token changed.
    let mut altered = genuine.clone();
    let last = altered.pop().unwrap();
    altered.push(if last == 'A' { 'B' } else { 'A' });
    // An open token used as a click.
    let open_as_click = app
        .links
        .url(LinkKind::Open, &profile_id, "m1", None)
        .replace("/t/o/", "/t/c/");
    for url in [
        forged.as_str(),
        altered.as_str(),
        open_as_click.as_str(),
        "/t/c/not-a-token",
        "/t/c/",
        "/t/o/AAAA",
    ] {
        let reply = app.fetch(url).await;
        assert!(
            reply.status == StatusCode::BAD_REQUEST || reply.status == StatusCode::NOT_FOUND,
            "{url}: {}",
            reply.status
        );
        assert!(reply.headers.get(header::LOCATION).is_none(), "{url}");
    }
    app.settle().await;
    let metrics = app.get("/api/metrics").await.json();
    assert_eq!(metrics["data"], json!([]), "nothing recorded: {metrics}");
}

#[tokio::test]
async fn the_klaviyo_api_cannot_forge_signalbox_events() {
    let app = spawn().await;
    let reply = app
        .write(
            Method::POST,
            "/api/events",
            json!({"data": {"type": "event", "attributes": {
                "properties": {},
                "metric": {"data": {"type": "metric", "attributes": {"name": "Opened Email"}}},
                "profile": {"data": {"type": "profile", "attributes": {"email": "c@example.com"}}},
            }}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    app.settle().await;
    let metrics = app
        .get("/api/metrics?filter=equals(integration.name,%22Signalbox%22)")
        .await
        .json();
    assert_eq!(metrics["data"], json!([]), "{metrics}");
}

fn template_body(name: &str, html: &str, text: Option<&str>) -> Value {
    json!({"data": {"type": "template", "attributes": {
        "name": name, "editor_type": "CODE", "html": html, "text": text,
    }}})
}

#[tokio::test]
async fn templates_crud_in_klaviyo_shapes() {
    let app = spawn().await;
    let reply = app
        .write(
            Method::POST,
            "/api/templates",
            template_body("Cart", "<p>Hi {{ first_name|default:\"there\" }}</p>", None),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.json());
    let created = reply.json();
    let id = created["data"]["id"].as_str().unwrap().to_owned();
    assert_eq!(created["data"]["type"], "template");
    assert_eq!(created["data"]["attributes"]["editor_type"], "CODE");
    assert_eq!(created["data"]["attributes"]["text"], Value::Null);
    assert_eq!(
        created["data"]["links"]["self"],
        format!("{BASE}/api/templates/{id}/"),
        "links name the public URL, not the Host header"
    );

    let one = app.get(&format!("/api/templates/{id}")).await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.json()["data"], created["data"]);

    let patched = app
        .write(
            Method::PATCH,
            &format!("/api/templates/{id}"),
            json!({"data": {"type": "template", "id": id, "attributes": {
                "name": "Cart v2", "text": "Hi {{ first_name }}"}}}),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.json());
    assert_eq!(patched.json()["data"]["attributes"]["name"], "Cart v2");

    let list = app.get("/api/templates?sort=-created").await.json();
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    let list = app
        .get("/api/templates?filter=equals(name,%22Cart%20v2%22)&fields[template]=name")
        .await
        .json();
    assert_eq!(list["data"][0]["attributes"], json!({"name": "Cart v2"}));

    let deleted = app
        .send(
            app.api(Method::DELETE, &format!("/api/templates/{id}"))
                .body(HttpBody::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let gone = app.get(&format!("/api/templates/{id}")).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_templates_are_400_with_a_pointer() {
    let app = spawn().await;
    let reply = app
        .write(
            Method::POST,
            "/api/templates",
            template_body("Broken", "{% for item in event.Items %}", None),
        )
        .await;
    assert_invalid_at(&reply, "/data/attributes/html");
    assert!(reply.json()["errors"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("line 1"));
    let reply = app
        .write(
            Method::POST,
            "/api/templates",
            template_body("Bad text", "<p>ok</p>", Some("{{ x|nosuchfilter }}")),
        )
        .await;
    assert_invalid_at(&reply, "/data/attributes/text");
    let mut body = template_body("Drag", "<p>x</p>", None);
    body["data"]["attributes"]["editor_type"] = json!("SYSTEM_DRAGGABLE");
    assert_invalid_at(
        &app.write(Method::POST, "/api/templates", body).await,
        "/data/attributes/editor_type",
    );
    let mut body = template_body("Nameless", "<p>x</p>", None);
    body["data"]["attributes"]
        .as_object_mut()
        .unwrap()
        .remove("name");
    assert_invalid_at(
        &app.write(Method::POST, "/api/templates", body).await,
        "/data/attributes/name",
    );
    let mut body = template_body("Typo", "<p>x</p>", None);
    body["data"]["attributes"]["htlm"] = json!("<p>");
    assert_invalid_at(
        &app.write(Method::POST, "/api/templates", body).await,
        "/data/attributes/htlm",
    );
    let reply = app.get("/api/templates?page[cursor]=zzz").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let reply = app.get("/api/templates?sort=size").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let reply = app
        .write(
            Method::PATCH,
            "/api/templates/NoSuch",
            json!({"data": {"type": "template", "id": "NoSuch", "attributes": {"name": "x"}}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn render_against_a_real_profile_and_event_lists_undefined_variables() {
    let app = spawn().await;
    let html = "<h1>Hi {{ first_name|default:\"there\" }}</h1>\
        {% for item in event.Items %}<li>{{ item.ProductName }} {{ item.ItemPrice }}</li>{% endfor %}\
        <p>{{ event|lookup:'$value' }} {{ missing_var }}</p>";
    let created = app
        .write(
            Method::POST,
            "/api/templates",
            template_body("Cart", html, None),
        )
        .await
        .json();
    let template_id = created["data"]["id"].as_str().unwrap().to_owned();
    let reply = app
        .write(
            Method::POST,
            "/api/events",
            json!({"data": {"type": "event", "attributes": {
                "properties": {"Items": [{"ProductName": "Teapot", "ItemPrice": 25}]},
                "value": 25,
                "metric": {"data": {"type": "metric", "attributes": {"name": "Checkout Started"}}},
                "profile": {"data": {"type": "profile", "attributes": {
                    "email": "ann@example.com", "first_name": "Ann"}}},
            }}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    app.settle().await;
    let events = app.get("/api/events").await.json();
    let event_id = events["data"][0]["id"].as_str().unwrap().to_owned();
    let profile_id = events["data"][0]["relationships"]["profile"]["data"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let render = |context: Value| json!({"data": {"type": "template", "id": template_id, "attributes": {"context": context}}});
    let reply = app
        .write(
            Method::POST,
            "/api/template-render",
            render(json!({"profile_id": profile_id, "event_id": event_id})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.json());
    let body = reply.json();
    let html = body["data"]["attributes"]["html"].as_str().unwrap();
    assert!(html.contains("Hi Ann"), "{html}");
    assert!(html.contains("<li>Teapot 25</li>"), "{html}");
    assert!(html.contains("<p>25"), "{html}");
    assert!(body["data"]["attributes"]["text"]
        .as_str()
        .unwrap()
        .contains("Teapot"));
    assert_eq!(body["meta"]["undefined_variables"], json!(["missing_var"]));

    // Klaviyo's plain context, with an override.
    let reply = app
        .write(
            Method::POST,
            "/api/template-render",
            render(json!({"first_name": "Zed", "event": {"Items": []}})),
        )
        .await;
    let html = reply.json()["data"]["attributes"]["html"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(html.contains("Hi Zed"), "{html}");

    assert_invalid_at(
        &app.write(
            Method::POST,
            "/api/template-render",
            render(json!({"profile_id": "01JNOSUCHPROFILE0000000000"})),
        )
        .await,
        "/data/attributes/context/profile_id",
    );
    assert_invalid_at(
        &app.write(
            Method::POST,
            "/api/template-render",
            render(json!({"event_id": 42})),
        )
        .await,
        "/data/attributes/context/event_id",
    );
    assert_invalid_at(
        &app.write(
            Method::POST,
            "/api/template-render",
            json!({"data": {"type": "template", "id": template_id, "attributes": {}}}),
        )
        .await,
        "/data/attributes/context",
    );
    let started = Instant::now();
    let reply = app
        .write(
            Method::POST,
            "/api/template-render",
            json!({"data": {"type": "template", "id": "NoSuch", "attributes": {"context": {}}}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(started.elapsed() < Duration::from_secs(5));
}

fn flow_body(definition: Value) -> Value {
    json!({"data": {"type": "flow", "attributes": {"name": "Abandoned checkout", "definition": definition}}})
}

fn checkout_definition() -> Value {
    json!({
        "triggers": [{"type": "metric", "id": "CHECKOUT1"}],
        "profile_filter": {"condition_groups": [{"conditions": [{
            "type": "profile-metric", "metric_id": "PLACED1", "measurement": "count",
            "measurement_filter": {"type": "numeric", "operator": "equals", "value": 0},
            "timeframe_filter": {"type": "date", "operator": "flow-start"}}]}]},
        "entry_action_id": "wait",
        "actions": [
            {"temporary_id": "wait", "type": "time-delay", "data": {"unit": "hours", "value": 4},
             "links": {"next": "email"}},
            {"temporary_id": "email", "type": "send-email", "data": {"status": "draft", "message": {
                "from_email": "shop@example.com", "subject_line": "You left something",
                "html": "<p>{{ first_name }}</p>", "smart_sending_enabled": true}},
             "links": {"next": null}}
        ],
        "reentry_criteria": {"duration": 1, "unit": "day"}
    })
}

#[tokio::test]
async fn flows_crud_in_klaviyo_shapes() {
    let app = spawn().await;
    let reply = app
        .write(Method::POST, "/api/flows", flow_body(checkout_definition()))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.json());
    let created = reply.json();
    let id = created["data"]["id"].as_str().unwrap().to_owned();
    let attributes = &created["data"]["attributes"];
    assert_eq!(created["data"]["type"], "flow");
    assert_eq!(attributes["status"], "draft");
    assert_eq!(attributes["trigger_type"], "Metric");
    assert_eq!(attributes["archived"], false);
    let actions = attributes["definition"]["actions"].as_array().unwrap();
    let wait_id = actions[0]["id"].as_str().unwrap();
    assert!(actions[0].get("temporary_id").is_none(), "{actions:?}");
    assert_eq!(attributes["definition"]["entry_action_id"], wait_id);

    let plain = app.get(&format!("/api/flows/{id}")).await.json();
    assert!(plain["data"]["attributes"].get("definition").is_none());
    let full = app
        .get(&format!(
            "/api/flows/{id}?additional-fields[flow]=definition,statistics"
        ))
        .await
        .json();
    assert_eq!(
        full["data"]["attributes"]["definition"],
        attributes["definition"]
    );
    assert!(full["data"]["attributes"]["statistics"]["flow"]["counts"].is_object());

    let live = app
        .write(
            Method::PATCH,
            &format!("/api/flows/{id}"),
            json!({"data": {"type": "flow", "id": id, "attributes": {"status": "live"}}}),
        )
        .await;
    assert_eq!(live.status, StatusCode::OK, "{}", live.json());
    assert_eq!(live.json()["data"]["attributes"]["status"], "live");
    let listed = app
        .get("/api/flows?filter=equals(status,%22live%22)")
        .await
        .json();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1, "{listed}");
    let none = app
        .get("/api/flows?filter=equals(status,%22draft%22)")
        .await
        .json();
    assert_eq!(none["data"], json!([]));

    let deleted = app
        .send(
            app.api(Method::DELETE, &format!("/api/flows/{id}"))
                .body(HttpBody::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.get(&format!("/api/flows/{id}")).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_flows_cursor_past_the_end_is_an_empty_page() {
    // Found by fuzzing: `offset + page[size]` overflowed (a panic in debug builds).
    let app = spawn().await;
    let reply = app
        .write(Method::POST, "/api/flows", flow_body(checkout_definition()))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.json());
    for cursor in [u64::MAX.to_string(), (u64::MAX - 5).to_string()] {
        let reply = app
            .get(&format!("/api/flows?page%5Bcursor%5D={cursor}"))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.json());
        let page = reply.json();
        assert_eq!(page["data"], json!([]), "{page}");
        assert_eq!(page["links"]["next"], Value::Null, "{page}");
    }
}

#[tokio::test]
async fn bad_flows_are_400_with_a_pointer_to_the_fault() {
    let app = spawn().await;
    let mut definition = checkout_definition();
    definition["actions"][0]["data"]["unit"] = json!("fortnights");
    let reply = app
        .write(Method::POST, "/api/flows", flow_body(definition))
        .await;
    let body = reply.json();
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
    let pointer = body["errors"][0]["source"]["pointer"].as_str().unwrap();
    assert!(
        pointer.starts_with("/data/attributes/definition/actions/0"),
        "{body}"
    );
    let mut definition = checkout_definition();
    definition["actions"][1]["links"]["next"] = json!("nowhere");
    let reply = app
        .write(Method::POST, "/api/flows", flow_body(definition))
        .await;
    let body = reply.json();
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["errors"][0]["source"]["pointer"]
        .as_str()
        .unwrap()
        .starts_with("/data/attributes/definition/actions/1"));
    let mut body = flow_body(checkout_definition());
    body["data"]["attributes"]
        .as_object_mut()
        .unwrap()
        .remove("definition");
    assert_invalid_at(
        &app.write(Method::POST, "/api/flows", body).await,
        "/data/attributes/definition",
    );
    let created = app
        .write(Method::POST, "/api/flows", flow_body(checkout_definition()))
        .await
        .json();
    let id = created["data"]["id"].as_str().unwrap();
    assert_invalid_at(
        &app.write(
            Method::PATCH,
            &format!("/api/flows/{id}"),
            json!({"data": {"type": "flow", "id": id, "attributes": {"status": "running"}}}),
        )
        .await,
        "/data/attributes/status",
    );
    let reply = app
        .get(&format!("/api/flows/{id}?additional-fields[flow]=secrets"))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        reply.json()["errors"][0]["source"]["parameter"],
        "additional-fields[flow]"
    );
}

#[tokio::test]
async fn built_in_unsubscribes_and_bounces_land_in_the_profiles_consent() {
    use signalbox_engage::{BuiltinEventInput, BuiltinMetric, ProfileId};

    let app = spawn().await;
    let ada = profile(&app, "ada@example.com").await;
    let bo = profile(&app, "bo@example.com").await;
    let cy = profile(&app, "cy@example.com").await;
    for (metric, id) in [
        (BuiltinMetric::Unsubscribed, &bo),
        (BuiltinMetric::BouncedEmail, &cy),
    ] {
        app.engage
            .record_builtin_event(BuiltinEventInput {
                metric,
                profile_id: ProfileId(id.clone()),
                properties: serde_json::Map::new(),
                time: None,
                unique_id: Some(format!("{id}-1")),
            })
            .await
            .unwrap();
    }
    app.settle().await;

    let marketing = async |id: String| {
        let reply = app
            .get(&format!(
                "/api/profiles/{id}?additional-fields[profile]=subscriptions"
            ))
            .await;
        assert_eq!(reply.status, StatusCode::OK);
        reply.json()["data"]["attributes"]["subscriptions"]["email"]["marketing"].clone()
    };
    let reasons = |m: &Value| -> Vec<String> {
        m["suppression"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["reason"].as_str().unwrap().to_owned())
            .collect()
    };
    let m = marketing(ada).await;
    assert_eq!(m["consent"], "NEVER_SUBSCRIBED");
    assert_eq!(m["can_receive_email_marketing"], true);
    assert!(reasons(&m).is_empty());
    let m = marketing(bo).await;
    assert_eq!(m["consent"], "UNSUBSCRIBED", "{m}");
    assert_eq!(m["can_receive_email_marketing"], false);
    assert_eq!(reasons(&m), ["UNSUBSCRIBE"]);
    assert_eq!(m["list_suppressions"], json!([]));
    let m = marketing(cy).await;
    assert_eq!(m["consent"], "NEVER_SUBSCRIBED", "{m}");
    assert_eq!(m["can_receive_email_marketing"], false);
    assert_eq!(reasons(&m), ["HARD_BOUNCE"]);
}
