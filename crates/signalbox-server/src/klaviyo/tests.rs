//! In-process tests of the Klaviyo API: JSON:API shapes, status codes and `errors[]`.

use std::sync::Arc;

use axum::body::Body as HttpBody;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use signalbox_core::SystemClock;
use signalbox_engage::{Engage, EngageConfig};
use signalbox_store::sqlite::SqliteOptions;
use signalbox_store::{SqliteStore, Store};
use tower::ServiceExt;

use crate::app::{router, Application, ServerConfig};

const REVISION: &str = "2026-07-15";

struct TestApi {
    router: Router,
    key: String,
    #[allow(dead_code)]
    engage: Engage,
    _dir: tempfile::TempDir,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

async fn spawn_with(engage_enabled: bool) -> TestApi {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(dir.path().join("signalbox.db"), SqliteOptions::default()).unwrap(),
    );
    let (_, key) = store.create_api_key("tests").await.unwrap();
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
    if engage_enabled {
        app.set_engage(engage.clone());
    }
    TestApi {
        router: router(app.state().clone()),
        key: key.expose().to_owned(),
        engage,
        _dir: dir,
    }
}

async fn spawn() -> TestApi {
    spawn_with(true).await
}

impl TestApi {
    fn request(&self, method: Method, uri: &str) -> axum::http::request::Builder {
        Request::builder()
            .method(method)
            .uri(uri)
            .header(header::HOST, "klaviyo.test:8080")
            .header(
                header::AUTHORIZATION,
                format!("Klaviyo-API-Key {}", self.key),
            )
            .header("revision", REVISION)
            .header(header::ACCEPT, "application/vnd.api+json")
    }

    async fn send(&self, request: Request<HttpBody>) -> Reply {
        let response = self.router.clone().oneshot(request).await.unwrap();
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
            "double quotes",
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
            "/api/profiles?additional-fields[profile]=subscriptions",
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
