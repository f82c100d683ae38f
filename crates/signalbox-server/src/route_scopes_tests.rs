//! Every route's scopes, checked over HTTP against a table, and the table checked against the
//! route declarations in the source, so a route cannot ship without its requirement.
//!
//! For each `/api` route: a key holding exactly the listed scopes gets past authorization,
//! a key holding every other scope (and `admin`) gets 403 `permission_denied` naming the one
//! it lacks, and a key holding only `admin` gets 403. For each `/admin/v1` route: a key with
//! every Klaviyo scope but not `admin` gets 403, a key with only `admin` gets past.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use serde_json::Value;
use signalbox_core::{Access, Scope, Scopes, SystemClock};
use signalbox_outbound::{OutboundClient, OutboundConfig};
use signalbox_store::sqlite::SqliteOptions;
use signalbox_store::{SqliteStore, Store};
use signalbox_sync::{SqliteSyncStore, SyncDeps};
use tokio::sync::Mutex;
use tower::ServiceExt;

use crate::app::{router, Application, ServerConfig};

/// Every `/api` route as `klaviyo::routes` declares it, with the scopes it requires.
pub(crate) const API_ROUTES: &[(&str, &str, &[&str])] = &[
    ("GET", "/metrics", &["metrics:read"]),
    ("GET", "/metrics/{id}", &["metrics:read"]),
    ("POST", "/metric-aggregates", &["metrics:read"]),
    ("GET", "/events", &["events:read"]),
    ("POST", "/events", &["events:write"]),
    ("GET", "/events/{id}", &["events:read"]),
    ("POST", "/event-bulk-create-jobs", &["events:write"]),
    ("GET", "/profiles", &["profiles:read"]),
    ("POST", "/profiles", &["profiles:write"]),
    ("GET", "/profiles/{id}", &["profiles:read"]),
    ("PATCH", "/profiles/{id}", &["profiles:write"]),
    ("POST", "/profile-import", &["profiles:write"]),
    ("POST", "/profile-merge", &["profiles:write"]),
    ("GET", "/lists", &["lists:read"]),
    ("POST", "/lists", &["lists:write"]),
    ("GET", "/lists/{id}", &["lists:read"]),
    ("PATCH", "/lists/{id}", &["lists:write"]),
    ("DELETE", "/lists/{id}", &["lists:write"]),
    (
        "GET",
        "/lists/{id}/profiles",
        &["lists:read", "profiles:read"],
    ),
    (
        "POST",
        "/lists/{id}/relationships/profiles",
        &["lists:write", "profiles:write"],
    ),
    (
        "DELETE",
        "/lists/{id}/relationships/profiles",
        &["lists:write", "profiles:write"],
    ),
    (
        "POST",
        "/profile-subscription-bulk-create-jobs",
        &["lists:write", "profiles:write", "subscriptions:write"],
    ),
    (
        "POST",
        "/profile-subscription-bulk-delete-jobs",
        &["lists:write", "profiles:write", "subscriptions:write"],
    ),
    (
        "POST",
        "/profile-suppression-bulk-create-jobs",
        &["profiles:write", "subscriptions:write"],
    ),
    (
        "POST",
        "/profile-suppression-bulk-delete-jobs",
        &["subscriptions:write"],
    ),
    ("GET", "/templates", &["templates:read"]),
    ("POST", "/templates", &["templates:write"]),
    ("GET", "/templates/{id}", &["templates:read"]),
    ("PATCH", "/templates/{id}", &["templates:write"]),
    ("DELETE", "/templates/{id}", &["templates:write"]),
    ("POST", "/template-render", &["templates:read"]),
    ("GET", "/flows", &["flows:read"]),
    ("POST", "/flows", &["flows:write"]),
    ("GET", "/flows/{id}", &["flows:read"]),
    ("PATCH", "/flows/{id}", &["flows:write"]),
    ("DELETE", "/flows/{id}", &["flows:write"]),
    (
        "GET",
        "/profiles/{id}/segments",
        &["segments:read", "profiles:read"],
    ),
    ("GET", "/segments", &["segments:read"]),
    ("POST", "/segments", &["segments:write"]),
    ("GET", "/segments/{id}", &["segments:read"]),
    ("PATCH", "/segments/{id}", &["segments:write"]),
    ("DELETE", "/segments/{id}", &["segments:write"]),
    (
        "GET",
        "/segments/{id}/profiles",
        &["segments:read", "profiles:read"],
    ),
    (
        "GET",
        "/segments/{id}/explanations/{profile_id}",
        &["segments:read", "profiles:read"],
    ),
    ("POST", "/segment-previews", &["segments:read"]),
];

/// Every `/admin/v1` route as `admin::routes` and `test_clock::routes` declare them; each
/// requires `admin`.
const ADMIN_ROUTES: &[(&str, &str)] = &[
    ("GET", "/admin/v1/sources"),
    ("POST", "/admin/v1/sources"),
    ("GET", "/admin/v1/sources/{name}"),
    ("DELETE", "/admin/v1/sources/{name}"),
    ("POST", "/admin/v1/sources/{name}/rotate-key"),
    ("GET", "/admin/v1/sources/{name}/settings"),
    ("PATCH", "/admin/v1/sources/{name}/settings"),
    ("POST", "/admin/v1/sources/{name}/disable"),
    ("POST", "/admin/v1/sources/{name}/enable"),
    ("GET", "/admin/v1/api-keys"),
    ("POST", "/admin/v1/api-keys"),
    ("DELETE", "/admin/v1/api-keys/{name}"),
    ("GET", "/admin/v1/events"),
    ("GET", "/admin/v1/events/stream"),
    ("GET", "/admin/v1/rejections"),
    ("GET", "/admin/v1/stats"),
    ("GET", "/admin/v1/lists/{id}/pending"),
    ("POST", "/admin/v1/lists/{id}/import"),
    ("GET", "/admin/v1/flows/{id}/messages"),
    ("POST", "/admin/v1/flows/{id}/messages/{message_id}/approve"),
    ("POST", "/admin/v1/flows/{id}/messages/{message_id}/skip"),
    ("GET", "/admin/v1/engage/quarantine"),
    ("POST", "/admin/v1/engage/quarantine/{seq}/retry"),
    ("GET", "/admin/v1/destinations"),
    ("POST", "/admin/v1/destinations"),
    ("GET", "/admin/v1/destinations/{name}"),
    ("PATCH", "/admin/v1/destinations/{name}"),
    ("DELETE", "/admin/v1/destinations/{name}"),
    ("GET", "/admin/v1/destinations/{name}/status"),
    ("GET", "/admin/v1/destinations/{name}/dead-letters"),
    ("POST", "/admin/v1/destinations/{name}/replay"),
    ("GET", "/admin/v1/destinations/{name}/deliveries"),
    ("GET", "/admin/v1/test-clock"),
    ("POST", "/admin/v1/test-clock"),
];

/// Routes the admin API answers for paths it does not have (they require `admin` too).
const ADMIN_FALLBACKS: &[(&str, &str)] = &[
    ("GET", "/admin/v1/nothing-here"),
    ("PUT", "/admin/v1/sources"),
];

struct Harness {
    router: Router,
    store: Arc<dyn Store>,
    /// Keys made so far, by their scopes' stored form.
    keys: Mutex<HashMap<String, String>>,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(dir.path().join("signalbox.db"), SqliteOptions::default()).unwrap(),
        );
        let mut app = Application::build(
            Arc::clone(&store),
            Arc::new(SystemClock),
            ServerConfig::default(),
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        app.set_sync(signalbox_sync::Sync::new(SyncDeps {
            store: Arc::new(SqliteSyncStore::open(&dir.path().join("sync.db")).unwrap()),
            calls: Arc::clone(&store),
            engage: None,
            outbound: OutboundClient::new(OutboundConfig::default()).unwrap(),
            clock: Arc::new(SystemClock),
        }));
        Harness {
            router: router(app.state().clone()),
            store,
            keys: Mutex::new(HashMap::new()),
            _dir: dir,
        }
    }

    /// A key holding exactly `scopes`, made once per set.
    async fn key(&self, scopes: &Scopes) -> String {
        let mut keys = self.keys.lock().await;
        let stored = scopes.to_stored();
        if let Some(key) = keys.get(&stored) {
            return key.clone();
        }
        let name = format!("k{}", keys.len());
        let (_, key) = self.store.create_api_key(&name, scopes).await.unwrap();
        keys.insert(stored, key.expose().to_owned());
        key.expose().to_owned()
    }

    /// Sends a request; reads the body only when asked (the live tail never ends).
    async fn send(
        &self,
        method: &str,
        path: &str,
        key: &str,
        read_body: bool,
    ) -> (StatusCode, Value) {
        let method: Method = method.parse().unwrap();
        let has_body = matches!(method, Method::POST | Method::PATCH | Method::DELETE);
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Klaviyo-API-Key {key}"))
            .header("revision", "2026-07-15")
            .header(header::CONTENT_TYPE, "application/json")
            .body(if has_body {
                Body::from("{}")
            } else {
                Body::empty()
            })
            .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        if !read_body {
            return (status, Value::Null);
        }
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
}

/// A route's path with its parameters filled in.
pub(crate) fn concrete(pattern: &str) -> String {
    pattern
        .replace("{id}", "X1")
        .replace("{profile_id}", "P1")
        .replace("{message_id}", "1")
        .replace("{name}", "nosuchsource")
}

fn scopes(names: &[&str]) -> Scopes {
    Scopes::parse(names.iter().copied()).unwrap()
}

/// Every Klaviyo scope that does not grant `lacking`, and `admin`.
fn all_but(lacking: Scope) -> Scopes {
    Scope::all()
        .filter(|scope| !Scopes::from_iter([*scope]).allows(lacking))
        .collect()
}

#[tokio::test]
async fn every_api_route_requires_its_scopes() {
    let harness = Harness::start().await;
    let admin_only = harness.key(&scopes(&["admin"])).await;
    for (method, pattern, required) in API_ROUTES {
        let path = format!("/api{}", concrete(pattern));
        let route = format!("{method} {path}");

        let exact = harness.key(&scopes(required)).await;
        let (status, body) = harness.send(method, &path, &exact, true).await;
        assert!(
            status != StatusCode::FORBIDDEN && status != StatusCode::UNAUTHORIZED,
            "{route} refused a key holding {required:?}: {status} {body}"
        );

        for name in *required {
            let lacking: Scope = name.parse().unwrap();
            let key = harness.key(&all_but(lacking)).await;
            let (status, body) = harness.send(method, &path, &key, true).await;
            assert_eq!(
                status,
                StatusCode::FORBIDDEN,
                "{route} without {name}: {body}"
            );
            let error = &body["errors"][0];
            assert_eq!(error["code"], "permission_denied", "{route}: {body}");
            assert_eq!(error["status"], 403, "{route}: {body}");
            let detail = error["detail"].as_str().unwrap();
            assert!(detail.contains(name), "{route}: {detail}");
        }

        let (status, body) = harness.send(method, &path, &admin_only, true).await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "{route} with admin only: {body}"
        );
    }
}

#[tokio::test]
async fn every_admin_route_requires_admin() {
    let harness = Harness::start().await;
    let full = harness.key(&scopes(&["full"])).await;
    let admin = harness.key(&scopes(&["admin"])).await;
    for (method, pattern) in ADMIN_ROUTES.iter().chain(ADMIN_FALLBACKS) {
        let path = concrete(pattern);
        let route = format!("{method} {path}");

        let (status, body) = harness.send(method, &path, &full, true).await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "{route} with full access: {body}"
        );
        assert_eq!(
            body["error"]["code"], "permission_denied",
            "{route}: {body}"
        );
        assert!(
            body["error"]["message"].as_str().unwrap().contains("admin"),
            "{route}: {body}"
        );

        let (status, _) = harness.send(method, &path, &admin, false).await;
        assert!(
            status != StatusCode::FORBIDDEN && status != StatusCode::UNAUTHORIZED,
            "{route} refused an admin key: {status}"
        );
    }
}

/// `(METHOD, path)` of every `.route("path", get(…).post(…))` in a routes file.
fn declared_routes(source: &str) -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    let mut rest = source;
    while let Some(start) = rest.find(".route(") {
        rest = &rest[start + ".route(".len()..];
        // The call's arguments end at the parenthesis that closes `.route(`.
        let mut depth = 1;
        let end = rest
            .char_indices()
            .find_map(|(idx, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                (depth == 0).then_some(idx)
            })
            .expect("balanced parentheses");
        let args = &rest[..end];
        let path = args.split('"').nth(1).expect("a literal path").to_owned();
        let handlers = &args[args.find(',').expect("a method router")..];
        for method in ["get", "post", "put", "patch", "delete", "any"] {
            let call = format!("{method}(");
            let mut found = handlers.match_indices(&call).filter(|(idx, _)| {
                // `get(` as a method router, not `sources::get)` or `forget(`.
                let before = handlers[..*idx].chars().last().unwrap_or(' ');
                !before.is_alphanumeric() && before != '_'
            });
            if found.next().is_some() {
                routes.insert((method.to_uppercase(), path.clone()));
            }
        }
        rest = &rest[end..];
    }
    routes
}

#[test]
fn the_tables_list_every_declared_route() {
    let api: BTreeSet<(String, String)> = API_ROUTES
        .iter()
        .map(|(method, path, _)| (method.to_string(), path.to_string()))
        .collect();
    assert_eq!(declared_routes(include_str!("klaviyo/mod.rs")), api);

    let admin: BTreeSet<(String, String)> = ADMIN_ROUTES
        .iter()
        .map(|(method, path)| (method.to_string(), path.to_string()))
        .chain([("ANY".to_owned(), "/admin/v1/{*rest}".to_owned())])
        .collect();
    let mut declared = declared_routes(include_str!("admin/mod.rs"));
    declared.extend(declared_routes(include_str!("test_clock.rs")));
    assert_eq!(declared, admin);
}

#[test]
fn get_routes_require_only_read_scopes() {
    for (method, path, required) in API_ROUTES {
        for name in *required {
            let scope: Scope = name.parse().unwrap();
            if *method == "GET" {
                assert!(
                    matches!(scope, Scope::Klaviyo(_, Access::Read)),
                    "GET {path} requires {name}"
                );
            }
        }
    }
}
