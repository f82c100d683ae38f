//! In-process tests of the Klaviyo API: JSON:API shapes, status codes and `errors[]`.

use std::sync::Arc;

use axum::body::Body as HttpBody;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use signalbox_core::{Scopes, SystemClock};
use signalbox_engage::{Engage, EngageConfig};
use signalbox_store::sqlite::SqliteOptions;
use signalbox_store::{SqliteStore, Store};
use tower::{Layer, ServiceExt};
use tower_http::normalize_path::{NormalizePath, NormalizePathLayer};

use crate::app::{router, Application, ServerConfig};

const REVISION: &str = "2026-07-15";

struct TestApi {
    /// The router as `Application::run` serves it (trailing slashes trimmed).
    router: NormalizePath<Router>,
    key: String,
    store: Arc<dyn Store>,
    #[allow(dead_code)]
    engage: Engage,
    _dir: tempfile::TempDir,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

/// With the whole engine (engage, segments, templates, flows), so every route reaches its
/// handler's own logic.
async fn spawn_complete() -> TestApi {
    spawn_with(true).await
}

async fn spawn_with(engage_enabled: bool) -> TestApi {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(dir.path().join("signalbox.db"), SqliteOptions::default()).unwrap(),
    );
    // Every Klaviyo scope, and the admin API, which some tests read (a list's pending
    // confirmations).
    let (_, key) = store
        .create_api_key("tests", &Scopes::parse(["full", "admin"]).unwrap())
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
        Arc::clone(&store),
        clock,
        ServerConfig {
            public_url: Some("https://klaviyo.test:8080".into()),
            ..ServerConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    if engage_enabled {
        app.set_engine(crate::app::test_engine(&engage, dir.path()).await);
    }
    TestApi {
        router: NormalizePathLayer::trim_trailing_slash().layer(router(app.state().clone())),
        key: key.expose().to_owned(),
        store,
        engage,
        _dir: dir,
    }
}

async fn spawn() -> TestApi {
    spawn_with(true).await
}

impl TestApi {
    fn request(&self, method: Method, uri: &str) -> axum::http::request::Builder {
        self.request_as(&self.key, method, uri)
    }

    /// A request with another private key.
    fn request_as(&self, key: &str, method: Method, uri: &str) -> axum::http::request::Builder {
        Request::builder()
            .method(method)
            .uri(uri)
            // A forged Host: links name the public URL all the same.
            .header(header::HOST, "forged.example")
            .header(header::AUTHORIZATION, format!("Klaviyo-API-Key {key}"))
            .header("revision", REVISION)
            .header(header::ACCEPT, "application/vnd.api+json")
    }

    async fn send(&self, request: Request<HttpBody>) -> Reply {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, uri: &str) -> Reply {
        self.send(
            self.request(Method::GET, uri)
                .body(HttpBody::empty())
                .unwrap(),
        )
        .await
    }

    async fn write(&self, method: Method, uri: &str, body: Value) -> Reply {
        self.send(
            self.request(method, uri)
                .header(header::CONTENT_TYPE, "application/vnd.api+json")
                .body(HttpBody::from(body.to_string()))
                .unwrap(),
        )
        .await
    }
}

/// Asserts a Klaviyo `errors[]` body: one error with every field the SDK's model requires.
#[track_caller]
fn assert_error(reply: &Reply, status: StatusCode, code: &str) -> Value {
    assert_eq!(reply.status, status, "{}", reply.body);
    assert_eq!(
        reply.headers[header::CONTENT_TYPE],
        "application/vnd.api+json"
    );
    let errors = reply.body["errors"].as_array().expect("errors[]");
    assert_eq!(errors.len(), 1, "{}", reply.body);
    let error = &errors[0];
    assert!(error["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!(error["status"], status.as_u16());
    assert_eq!(error["code"], code, "{}", reply.body);
    assert!(error["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(error["detail"].as_str().is_some_and(|d| !d.is_empty()));
    error.clone()
}

#[tokio::test]
async fn a_missing_key_is_401_not_authenticated() {
    let api = spawn().await;
    let request = Request::get("/api/metrics")
        .header("revision", REVISION)
        .body(HttpBody::empty())
        .unwrap();
    assert_error(
        &api.send(request).await,
        StatusCode::UNAUTHORIZED,
        "not_authenticated",
    );
    let request = Request::get("/api/metrics")
        .header("revision", REVISION)
        .header(header::AUTHORIZATION, format!("Bearer {}", api.key))
        .body(HttpBody::empty())
        .unwrap();
    assert_error(
        &api.send(request).await,
        StatusCode::UNAUTHORIZED,
        "not_authenticated",
    );
}

#[tokio::test]
async fn an_unknown_key_is_401() {
    let api = spawn().await;
    let request = Request::get("/api/profiles")
        .header("revision", REVISION)
        .header(header::AUTHORIZATION, "Klaviyo-API-Key pk_not_a_key")
        .body(HttpBody::empty())
        .unwrap();
    let error = assert_error(
        &api.send(request).await,
        StatusCode::UNAUTHORIZED,
        "authentication_failed",
    );
    assert!(!error.to_string().contains("pk_not_a_key"));
}

#[tokio::test]
async fn a_profiles_read_key_reads_profiles_and_nothing_else() {
    let api = spawn().await;
    api.store.create_source("web").await.unwrap();
    let write_keys_before = api.store.write_keys().await.unwrap().len();
    let (_, key) = api
        .store
        .create_api_key("reader", &Scopes::parse(["profiles:read"]).unwrap())
        .await
        .unwrap();
    let key = key.expose();
    let send = |method: Method, uri: &str, body: Option<Value>| {
        let request = api.request_as(key, method, uri);
        let request = match body {
            Some(body) => request
                .header(header::CONTENT_TYPE, "application/json")
                .body(HttpBody::from(body.to_string())),
            None => request.body(HttpBody::empty()),
        };
        api.send(request.unwrap())
    };

    let reply = send(Method::GET, "/api/profiles", None).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);

    let profile = json!({"data": {"type": "profile", "attributes": {"email": "a@example.com"}}});
    let error = assert_error(
        &send(Method::POST, "/api/profiles", Some(profile)).await,
        StatusCode::FORBIDDEN,
        "permission_denied",
    );
    assert!(
        error["detail"].as_str().unwrap().contains("profiles:write"),
        "{error}"
    );
    let event = json!({"data": {"type": "event", "attributes": {
        "properties": {}, "metric": {"data": {"type": "metric", "attributes": {"name": "Viewed"}}},
        "profile": {"data": {"type": "profile", "attributes": {"email": "a@example.com"}}}}}});
    let error = assert_error(
        &send(Method::POST, "/api/events", Some(event)).await,
        StatusCode::FORBIDDEN,
        "permission_denied",
    );
    assert!(
        error["detail"].as_str().unwrap().contains("events:write"),
        "{error}"
    );
    assert_error(
        &send(Method::GET, "/api/lists", None).await,
        StatusCode::FORBIDDEN,
        "permission_denied",
    );

    // The admin API: no key minting, no write key rotation, no raw call log.
    for (method, uri, body) in [
        (
            Method::POST,
            "/admin/v1/api-keys",
            Some(json!({"name": "more", "scopes": ["admin"]})),
        ),
        (Method::POST, "/admin/v1/sources/web/rotate-key", None),
        (Method::GET, "/admin/v1/events", None),
    ] {
        let reply = send(method.clone(), uri, body).await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "{method} {uri}: {}",
            reply.body
        );
        assert_eq!(
            reply.body["error"]["code"], "permission_denied",
            "{method} {uri}"
        );
    }
    let names: Vec<String> = api
        .store
        .list_api_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.name)
        .collect();
    assert_eq!(names, ["tests", "reader"]);
    assert_eq!(
        api.store.write_keys().await.unwrap().len(),
        write_keys_before
    );
}

#[tokio::test]
async fn the_revision_header_is_required() {
    let api = spawn().await;
    let request = Request::get("/api/metrics")
        .header(
            header::AUTHORIZATION,
            format!("Klaviyo-API-Key {}", api.key),
        )
        .body(HttpBody::empty())
        .unwrap();
    let error = assert_error(&api.send(request).await, StatusCode::BAD_REQUEST, "invalid");
    assert_eq!(error["source"]["parameter"], "revision");
    let request = Request::get("/api/metrics")
        .header(
            header::AUTHORIZATION,
            format!("Klaviyo-API-Key {}", api.key),
        )
        .header("revision", "yesterday")
        .body(HttpBody::empty())
        .unwrap();
    assert_error(&api.send(request).await, StatusCode::BAD_REQUEST, "invalid");
}

#[tokio::test]
async fn unknown_endpoints_and_methods_answer_in_errors_shape() {
    let api = spawn().await;
    assert_error(
        &api.get("/api/campaigns").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let reply = api
        .send(
            api.request(Method::DELETE, "/api/metrics")
                .body(HttpBody::empty())
                .unwrap(),
        )
        .await;
    assert_error(&reply, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
}

#[tokio::test]
async fn without_the_engine_the_api_is_503() {
    let api = spawn_with(false).await;
    let reply = api.get("/api/metrics").await;
    assert_error(
        &reply,
        StatusCode::SERVICE_UNAVAILABLE,
        "service_unavailable",
    );
    assert!(reply.headers.contains_key(header::RETRY_AFTER));
}

#[tokio::test]
async fn unsupported_filters_are_400_naming_the_filter() {
    let api = spawn().await;
    for (uri, needle) in [
        (
            r#"/api/profiles?filter=equals(first_name,"Ann")"#,
            "'first_name' is not a valid field",
        ),
        (
            r#"/api/profiles?filter=contains(email,"ann")"#,
            "'contains' is not a valid operator for 'email'",
        ),
        (
            r#"/api/profiles?filter=greater-than(updated,"2026-01-01T00:00:00Z")"#,
            "unquoted datetime",
        ),
        (
            "/api/profiles?filter=equals(email,ann@example.com)",
            "strings must be quoted",
        ),
        (
            r#"/api/events?filter=equals(metric_id,"X"),less-than(datetime,2026-13-01T00:00:00Z)"#,
            "invalid datetime",
        ),
        (
            r#"/api/events?filter=equals(profile_id,["a","b"])"#,
            "needs a quoted string",
        ),
        (
            r#"/api/metrics?filter=equals(name,"Placed Order")"#,
            "'name' is not a valid field",
        ),
        (
            r#"/api/profiles?filter=equals(_kx,"abc")"#,
            "'_kx' is not a valid field",
        ),
    ] {
        let uri = uri.replace(' ', "%20").replace('"', "%22");
        let error = assert_error(&api.get(&uri).await, StatusCode::BAD_REQUEST, "invalid");
        assert_eq!(error["source"]["parameter"], "filter", "{uri}");
        let detail = error["detail"].as_str().unwrap();
        assert!(detail.contains(needle), "{uri}: {detail}");
    }
}

#[tokio::test]
async fn unsupported_parameters_are_400_naming_the_parameter() {
    let api = spawn().await;
    for (uri, parameter) in [
        ("/api/events?include=attributions", "include"),
        ("/api/profiles?include=lists", "include"),
        (
            "/api/profiles?fields[profile]=email,subscriptions",
            "fields[profile]",
        ),
        ("/api/profiles?fields[list]=name", "fields[list]"),
        (
            "/api/profiles?additional-fields[profile]=predictive_analytics",
            "additional-fields[profile]",
        ),
        ("/api/profiles?sort=email", "sort"),
        ("/api/profiles?page[size]=101", "page[size]"),
        ("/api/profiles?page[size]=0", "page[size]"),
        ("/api/events?page[size]=1001", "page[size]"),
        ("/api/metrics?page[size]=10", "page[size]"),
        ("/api/metrics?sort=name", "sort"),
        ("/api/metrics/AbC123?filter=equals(x,1)", "filter"),
        ("/api/events?page[cursor]=a&page[cursor]=b", "page[cursor]"),
        ("/api/events?colour=blue", "colour"),
    ] {
        let uri = uri.replace('[', "%5B").replace(']', "%5D");
        let error = assert_error(&api.get(&uri).await, StatusCode::BAD_REQUEST, "invalid");
        assert_eq!(error["source"]["parameter"], parameter, "{uri}");
    }
}

#[tokio::test]
async fn malformed_bodies_are_refused_with_a_pointer() {
    let api = spawn().await;
    let event = |attributes: Value| json!({"data": {"type": "event", "attributes": attributes}});
    let profile = json!({"data": {"type": "profile", "attributes": {"email": "ann@example.com"}}});
    let metric = json!({"data": {"type": "metric", "attributes": {"name": "Viewed"}}});

    let reply = api
        .write(
            Method::POST,
            "/api/events",
            event(json!({"properties": {}, "profile": profile, "metric": {"data": {"type": "metric", "attributes": {}}}})),
        )
        .await;
    let error = assert_error(&reply, StatusCode::BAD_REQUEST, "invalid");
    assert_eq!(
        error["source"]["pointer"],
        "/data/attributes/metric/data/attributes/name"
    );

    let reply = api
        .write(
            Method::POST,
            "/api/events",
            event(json!({"properties": {}, "metric": metric, "profile": {"data": {"type": "profile", "attributes": {"first_name": "Ann"}}}})),
        )
        .await;
    let error = assert_error(&reply, StatusCode::BAD_REQUEST, "invalid");
    assert_eq!(
        error["source"]["pointer"],
        "/data/attributes/profile/data/attributes"
    );

    let reply = api
        .write(
            Method::POST,
            "/api/events",
            event(
                json!({"properties": {}, "metric": metric, "profile": profile, "colour": "blue"}),
            ),
        )
        .await;
    let error = assert_error(&reply, StatusCode::BAD_REQUEST, "invalid");
    assert_eq!(error["source"]["pointer"], "/data/attributes/colour");

    let reply = api
        .write(
            Method::POST,
            "/api/events",
            event(json!({"properties": {}, "metric": metric, "profile": profile, "time": "yesterday"})),
        )
        .await;
    let error = assert_error(&reply, StatusCode::BAD_REQUEST, "invalid");
    assert_eq!(error["source"]["pointer"], "/data/attributes/time");
    for time in ["1985-06-01T00:00:00Z", "2999-01-01T00:00:00Z"] {
        let reply = api
            .write(
                Method::POST,
                "/api/events",
                event(
                    json!({"properties": {}, "metric": metric, "profile": profile, "time": time}),
                ),
            )
            .await;
        let error = assert_error(&reply, StatusCode::BAD_REQUEST, "invalid");
        assert_eq!(error["source"]["pointer"], "/data/attributes/time");
    }

    let reply = api
        .write(
            Method::POST,
            "/api/profiles",
            json!({"data": {"type": "event", "attributes": {"email": "a@b.c"}}}),
        )
        .await;
    assert_error(&reply, StatusCode::CONFLICT, "conflict");

    let reply = api
        .write(
            Method::POST,
            "/api/profiles",
            json!({"data": {"type": "profile", "attributes": {"first_name": "Ann"}}}),
        )
        .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "invalid");

    let reply = api
        .write(
            Method::PATCH,
            "/api/profiles/01AAAAAAAAAAAAAAAAAAAAAAAA",
            json!({"data": {"type": "profile", "id": "01BBBBBBBBBBBBBBBBBBBBBBBB", "attributes": {}}}),
        )
        .await;
    assert_error(&reply, StatusCode::CONFLICT, "conflict");

    let reply = api
        .send(
            api.request(Method::POST, "/api/events")
                .header(header::CONTENT_TYPE, "application/vnd.api+json")
                .body(HttpBody::from("{not json"))
                .unwrap(),
        )
        .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "parse_error");

    let reply = api
        .send(
            api.request(Method::POST, "/api/events")
                .header(header::CONTENT_TYPE, "text/plain")
                .body(HttpBody::from("{}"))
                .unwrap(),
        )
        .await;
    assert_error(
        &reply,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
}

#[tokio::test]
async fn aggregates_need_a_bounded_range() {
    let api = spawn().await;
    let query = |filter: Value| {
        json!({"data": {"type": "metric-aggregate", "attributes": {
            "metric_id": "AbC123", "measurements": ["count"], "interval": "day", "filter": filter,
        }}})
    };
    for (filter, needle) in [
        (
            json!(["greater-or-equal(datetime,2026-01-01T00:00:00)"]),
            "both sides",
        ),
        (
            json!(["greater-or-equal(datetime,2026-01-01),less-than(datetime,\"2026-02-01\")"]),
            "unquoted datetime",
        ),
        (json!(null), "'filter' is required"),
    ] {
        let reply = api
            .write(Method::POST, "/api/metric-aggregates", query(filter))
            .await;
        let error = assert_error(&reply, StatusCode::BAD_REQUEST, "invalid");
        assert_eq!(error["source"]["pointer"], "/data/attributes/filter");
        assert!(
            error["detail"].as_str().unwrap().contains(needle),
            "{}",
            error["detail"]
        );
    }
    let mut bad = query(json!([
        "greater-or-equal(datetime,2026-01-01T00:00:00)",
        "less-than(datetime,2026-01-08T00:00:00)"
    ]));
    bad["data"]["attributes"]["measurements"] = json!(["count", "median"]);
    let error = assert_error(
        &api.write(Method::POST, "/api/metric-aggregates", bad).await,
        StatusCode::BAD_REQUEST,
        "invalid",
    );
    assert_eq!(
        error["source"]["pointer"],
        "/data/attributes/measurements/1"
    );
}

/// Polls `probe` until it returns `Some`: events are applied after their 202.
async fn eventually<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

fn event_body(metric: &str, email: &str, time: &str, value: f64, properties: Value) -> Value {
    json!({"data": {"type": "event", "attributes": {
        "properties": properties,
        "time": time,
        "value": value,
        "metric": {"data": {"type": "metric", "attributes": {"name": metric}}},
        "profile": {"data": {"type": "profile", "attributes": {"email": email}}},
    }}})
}

#[track_caller]
fn assert_klaviyo_datetime(value: &Value) {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"));
    assert_eq!(text.len(), 25, "{text}");
    assert!(text.ends_with("+00:00"), "{text}");
    assert!(text.parse::<jiff::Timestamp>().is_ok(), "{text}");
}

#[tokio::test]
async fn events_metrics_and_profiles_have_klaviyo_shapes() {
    let api = spawn().await;
    for (i, day) in [
        "2026-03-01",
        "2026-03-02",
        "2026-03-03",
        "2026-03-04",
        "2026-03-05",
    ]
    .iter()
    .enumerate()
    {
        let reply = api
            .write(
                Method::POST,
                "/api/events",
                event_body(
                    "Placed Order",
                    "ann@example.com",
                    &format!("{day}T10:00:00Z"),
                    10.0 * (i + 1) as f64,
                    json!({"Method": if i % 2 == 0 { "card" } else { "cash" }}),
                ),
            )
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.body);
        assert_eq!(reply.body, Value::Null, "202 has no body");
    }

    // Metrics.
    let metrics = eventually("the metric", async || {
        let reply = api.get("/api/metrics").await;
        (reply.status == StatusCode::OK && reply.body["data"].as_array()?.len() == 1)
            .then_some(reply)
    })
    .await;
    assert_eq!(
        metrics.headers[header::CONTENT_TYPE],
        "application/vnd.api+json"
    );
    let metric = &metrics.body["data"][0];
    let metric_id = metric["id"].as_str().unwrap().to_owned();
    assert_eq!(metric["type"], "metric");
    assert_eq!(metric["attributes"]["name"], "Placed Order");
    assert_eq!(metric["attributes"]["integration"]["name"], "API");
    assert_eq!(metric["attributes"]["integration"]["category"], "API");
    assert_klaviyo_datetime(&metric["attributes"]["created"]);
    assert_eq!(
        metric["links"]["self"],
        format!("https://klaviyo.test:8080/api/metrics/{metric_id}/")
    );
    assert_eq!(
        metrics.body["links"],
        json!({"self": "https://klaviyo.test:8080/api/metrics/", "next": null, "prev": null})
    );
    let one = api.get(&format!("/api/metrics/{metric_id}")).await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.body["data"], *metric);
    let filtered = api
        .get("/api/metrics?filter=equals(integration.category,%22API%22)")
        .await;
    assert_eq!(filtered.body["data"].as_array().unwrap().len(), 1);
    let none = api
        .get("/api/metrics?filter=equals(integration.name,%22Shopify%22)")
        .await;
    assert_eq!(none.body["data"], json!([]));
    assert_error(
        &api.get("/api/metrics/NoSuch").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    // Events: pages of two, newest first, with the next link followed three ways.
    let filter = format!("equals(metric_id,%22{metric_id}%22)");
    let first = eventually("five events", async || {
        let reply = api.get(&format!("/api/events?filter={filter}")).await;
        (reply.body["data"].as_array()?.len() == 5).then_some(reply)
    })
    .await;
    let event = &first.body["data"][0];
    assert_eq!(event["type"], "event");
    assert_eq!(event["attributes"]["timestamp"], 1_772_359_200); // 2026-03-01T10:00:00Z
    assert_eq!(event["attributes"]["datetime"], "2026-03-01T10:00:00+00:00");
    assert_eq!(event["attributes"]["event_properties"]["Method"], "card");
    assert_eq!(event["attributes"]["uuid"].as_str().unwrap().len(), 36);
    assert_eq!(event["relationships"]["metric"]["data"]["type"], "metric");
    assert_eq!(event["relationships"]["metric"]["data"]["id"], metric_id);
    assert_eq!(event["relationships"]["profile"]["data"]["type"], "profile");
    let profile_id = event["relationships"]["profile"]["data"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let page = api
        .get(&format!(
            "/api/events?filter={filter}&sort=-datetime&page%5Bsize%5D=2"
        ))
        .await;
    let days: Vec<&str> = page.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["attributes"]["datetime"].as_str().unwrap()[..10])
        .collect();
    assert_eq!(days, ["2026-03-05", "2026-03-04"]);
    let next = page.body["links"]["next"].as_str().unwrap().to_owned();
    assert!(
        next.starts_with("https://klaviyo.test:8080/api/events/?filter=equals%28metric_id")
            && next.contains("&sort=-datetime&page%5Bsize%5D=2&page%5Bcursor%5D="),
        "{next}"
    );
    let path = next.trim_start_matches("https://klaviyo.test:8080");
    let second = api.get(path).await;
    let cursor = next.split("page%5Bcursor%5D=").nth(1).unwrap();
    let cursor = percent_encoding::percent_decode_str(cursor)
        .decode_utf8()
        .unwrap()
        .into_owned();
    let as_sdk_sends = |c: String| {
        format!(
            "/api/events?filter={filter}&sort=-datetime&page%5Bsize%5D=2&page%5Bcursor%5D={}",
            percent_encoding::utf8_percent_encode(&c, percent_encoding::NON_ALPHANUMERIC)
        )
    };
    let with_equals = api.get(&as_sdk_sends(format!("={cursor}"))).await;
    let whole_url = api
        .get(&as_sdk_sends(next.replace("https://", "http://")))
        .await;
    for reply in [&second, &with_equals, &whole_url] {
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        assert_eq!(reply.body["data"], second.body["data"]);
    }
    let third = api
        .get(
            second.body["links"]["next"]
                .as_str()
                .unwrap()
                .trim_start_matches("https://klaviyo.test:8080"),
        )
        .await;
    assert_eq!(third.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(third.body["links"]["next"], Value::Null);

    // include and sparse fieldsets.
    let included = api
        .get(&format!(
            "/api/events?filter=equals(profile_id,%22{profile_id}%22)&include=metric,profile\
             &fields%5Bevent%5D=timestamp&fields%5Bprofile%5D=email,location.city"
        ))
        .await;
    assert_eq!(included.status, StatusCode::OK, "{}", included.body);
    assert_eq!(
        included.body["data"][0]["attributes"],
        json!({"timestamp": 1_772_359_200})
    );
    let resources = included.body["included"].as_array().unwrap();
    assert_eq!(resources.len(), 2, "one metric and one profile");
    let profile = resources.iter().find(|r| r["type"] == "profile").unwrap();
    assert_eq!(profile["id"], profile_id.as_str());
    assert_eq!(
        profile["attributes"],
        json!({"email": "ann@example.com", "location": {"city": null}})
    );
    assert!(resources
        .iter()
        .any(|r| r["type"] == "metric" && r["id"] == metric_id.as_str()));
    let single = api
        .get(&format!(
            "/api/events/{}?include=profile",
            event["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(single.body["data"]["id"], event["id"]);
    assert_eq!(single.body["included"][0]["type"], "profile");

    // Profiles.
    let profiles = api
        .get("/api/profiles?filter=equals(email,%22ann@example.com%22)")
        .await;
    let profile = &profiles.body["data"][0];
    assert_eq!(profile["type"], "profile");
    assert_eq!(profile["id"], profile_id.as_str());
    let attributes = profile["attributes"].as_object().unwrap();
    for key in [
        "email",
        "phone_number",
        "external_id",
        "first_name",
        "last_name",
        "organization",
        "locale",
        "title",
        "image",
        "created",
        "updated",
        "last_event_date",
        "location",
        "properties",
    ] {
        assert!(attributes.contains_key(key), "profile attribute {key}");
    }
    assert_klaviyo_datetime(&profile["attributes"]["created"]);
    assert_eq!(
        profile["links"]["self"],
        format!("https://klaviyo.test:8080/api/profiles/{profile_id}/")
    );
    assert_eq!(
        profile["attributes"]["location"].as_object().unwrap().len(),
        10
    );
}

#[tokio::test]
async fn profile_writes_answer_like_klaviyo() {
    let api = spawn().await;
    let create = json!({"data": {"type": "profile", "attributes": {
        "email": "bo@example.com", "first_name": "Bo",
        "location": {"city": "Oslo", "latitude": "59.91"}, "properties": {"Tier": "A"},
    }}});
    let created = api
        .write(Method::POST, "/api/profiles", create.clone())
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = created.body["data"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        created.body["data"]["attributes"]["location"]["city"],
        "Oslo"
    );
    assert_eq!(
        created.body["data"]["attributes"]["location"]["latitude"],
        59.91
    );
    assert_eq!(
        created.body["links"]["self"],
        format!("https://klaviyo.test:8080/api/profiles/{id}/")
    );

    let duplicate = api.write(Method::POST, "/api/profiles", create).await;
    let error = assert_error(&duplicate, StatusCode::CONFLICT, "duplicate_profile");
    assert_eq!(error["meta"]["duplicate_profile_id"], id.as_str());

    let patched = api
        .write(
            Method::PATCH,
            &format!("/api/profiles/{id}"),
            json!({"data": {"type": "profile", "id": id, "attributes": {
                "first_name": null, "last_name": "Berg", "properties": {"Seats": 2},
            }, "meta": {"patch_properties": {"unset": ["Tier"]}}}}),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    let attributes = &patched.body["data"]["attributes"];
    assert_eq!(attributes["first_name"], Value::Null);
    assert_eq!(attributes["last_name"], "Berg");
    assert_eq!(attributes["properties"], json!({"Seats": 2}));

    let import = |title: &str| json!({"data": {"type": "profile", "attributes": {"email": "cy@example.com", "title": title}}});
    let first = api
        .write(Method::POST, "/api/profile-import", import("A"))
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let second = api
        .write(Method::POST, "/api/profile-import", import("B"))
        .await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    assert_eq!(second.body["data"]["id"], first.body["data"]["id"]);
    assert_eq!(second.body["data"]["attributes"]["title"], "B");

    let listed = api
        .get("/api/profiles?sort=-created&page%5Bsize%5D=1")
        .await;
    assert_eq!(listed.body["data"].as_array().unwrap().len(), 1);
    assert!(listed.body["links"]["next"].is_string());

    let merged = api
        .write(
            Method::POST,
            "/api/profile-merge",
            json!({"data": {"type": "profile-merge", "id": id, "relationships": {"profiles": {
                "data": [{"type": "profile", "id": first.body["data"]["id"]}],
            }}}}),
        )
        .await;
    assert_eq!(merged.status, StatusCode::CREATED, "{}", merged.body);
    assert_eq!(
        merged.body["data"],
        json!({"type": "profile", "id": id,
               "links": {"self": format!("https://klaviyo.test:8080/api/profiles/{id}/")}})
    );
    let survivor = api
        .get(&format!(
            "/api/profiles/{}",
            first.body["data"]["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(
        survivor.body["data"]["id"],
        id.as_str(),
        "a merged id leads to the survivor"
    );
    let listed = api.get("/api/profiles").await;
    assert_eq!(listed.body["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn aggregates_answer_aligned_series() {
    let api = spawn().await;
    for (day, value, method) in [
        ("2026-03-01T10:00:00Z", 10.0, "card"),
        ("2026-03-01T11:00:00Z", 5.0, "cash"),
        ("2026-03-03T10:00:00Z", 2.5, "card"),
    ] {
        let reply = api
            .write(
                Method::POST,
                "/api/events",
                event_body(
                    "Placed Order",
                    "di@example.com",
                    day,
                    value,
                    json!({"Method": method}),
                ),
            )
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED);
    }
    let metric_id = eventually("the events", async || {
        let metrics = api.get("/api/metrics").await;
        let id = metrics.body["data"][0]["id"].as_str()?.to_owned();
        let events = api
            .get(&format!("/api/events?filter=equals(metric_id,%22{id}%22)"))
            .await;
        (events.body["data"].as_array()?.len() == 3).then_some(id)
    })
    .await;
    let query = |by: Value| {
        json!({"data": {"type": "metric-aggregate", "attributes": {
            "metric_id": metric_id, "measurements": ["count", "sum_value", "unique"],
            "interval": "day", "timezone": "UTC", "by": by,
            "filter": ["greater-or-equal(datetime,2026-03-01T00:00:00)", "less-than(datetime,2026-03-04T00:00:00)"],
        }}})
    };
    let reply = api
        .write(Method::POST, "/api/metric-aggregates", query(json!([])))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let data = &reply.body["data"];
    assert_eq!(data["type"], "metric-aggregate");
    assert!(data["id"].is_string());
    assert_eq!(
        data["attributes"]["dates"],
        json!([
            "2026-03-01T00:00:00+00:00",
            "2026-03-02T00:00:00+00:00",
            "2026-03-03T00:00:00+00:00"
        ])
    );
    assert_eq!(
        data["attributes"]["data"],
        json!([{"dimensions": [], "measurements": {
            "count": [2, 0, 1], "sum_value": [15.0, 0.0, 2.5], "unique": [1, 0, 1],
        }}])
    );
    let split = api
        .write(
            Method::POST,
            "/api/metric-aggregates",
            query(json!(["Method"])),
        )
        .await;
    let rows = split.body["data"]["attributes"]["data"].as_array().unwrap();
    let card = rows
        .iter()
        .find(|r| r["dimensions"] == json!(["card"]))
        .unwrap();
    assert_eq!(card["measurements"]["count"], json!([1, 0, 1]));
}

mod errors;
mod lists;

#[tokio::test]
async fn writes_over_a_limit_are_400_naming_the_field_and_the_limit() {
    let api = spawn().await;
    let profile =
        |attributes: Value| json!({"data": {"type": "profile", "attributes": attributes}});

    let many: serde_json::Map<String, Value> =
        (0..1001).map(|i| (format!("p{i}"), json!(i))).collect();
    let reply = api
        .write(
            Method::POST,
            "/api/profiles",
            profile(json!({"email": "many@example.com", "properties": many})),
        )
        .await;
    let error = assert_error(&reply, StatusCode::BAD_REQUEST, "invalid");
    assert_eq!(error["source"]["pointer"], "/data/attributes/properties");
    assert!(
        error["detail"]
            .as_str()
            .unwrap()
            .contains("over the limit of 1000"),
        "{error}"
    );

    let reply = api
        .write(
            Method::POST,
            "/api/profiles",
            profile(json!({"email": "nul\u{0}@example.com"})),
        )
        .await;
    let error = assert_error(&reply, StatusCode::BAD_REQUEST, "invalid");
    assert_eq!(error["source"]["pointer"], "/data/attributes/email");
    assert!(
        error["detail"]
            .as_str()
            .unwrap()
            .contains("control character"),
        "{error}"
    );

    let event = |time: &str, value: f64| {
        json!({"data": {"type": "event", "attributes": {
            "properties": {}, "time": time, "value": value,
            "metric": {"data": {"type": "metric", "attributes": {"name": "Paid"}}},
            "profile": {"data": {"type": "profile", "attributes": {"email": "ev@example.com"}}},
        }}})
    };
    let reply = api
        .write(
            Method::POST,
            "/api/events",
            event("2026-01-01T00:00:00+25:00", 1.0),
        )
        .await;
    let error = assert_error(&reply, StatusCode::BAD_REQUEST, "invalid");
    assert_eq!(error["source"]["pointer"], "/data/attributes/time");
    assert!(
        error["detail"].as_str().unwrap().contains("±24:00"),
        "{error}"
    );

    let reply = api
        .write(
            Method::POST,
            "/api/events",
            event("2026-01-01T00:00:00Z", 1e300),
        )
        .await;
    let error = assert_error(&reply, StatusCode::BAD_REQUEST, "invalid");
    assert_eq!(error["source"]["pointer"], "/data/attributes/value");
    assert!(
        error["detail"].as_str().unwrap().contains("1e15"),
        "{error}"
    );
}
