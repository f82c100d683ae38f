//! In-process tests of the admin API: requests go through `app::router` with `oneshot`, on a
//! fresh SQLite store in a temporary folder.

mod api_keys;
mod auth;
mod events;
mod quarantine;
mod rejections;
mod settings;
mod sources;
mod stats;
mod stream;

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use jiff::Timestamp;
use serde_json::{json, Value};
use signalbox_core::{CallKind, NewCall, RejectCode, Rejection, Scopes, SourceId, SystemClock};
use signalbox_store::sqlite::SqliteOptions;
use signalbox_store::{SqliteStore, Store, StoreError};
use tempfile::TempDir;
use tower::ServiceExt;

use super::AdminError;
use crate::app::{self, AppState, Application, ServerConfig};

struct TestApp {
    state: AppState,
    /// A valid private key (`pk_…`), named "test".
    key: String,
    _dir: TempDir,
}

/// A JSON answer: status, headers' `content-type`, body (`null` when empty).
struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
}

impl Answer {
    fn error_code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("<none>")
    }

    fn error_field(&self) -> &Value {
        &self.body["error"]["field"]
    }
}

async fn spawn_app() -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(dir.path().join("signalbox.db"), SqliteOptions::default())
            .expect("open store"),
    );
    store.create_source("default").await.expect("source");
    let (_, key) = store
        .create_api_key("test", &Scopes::parse(["admin"]).unwrap())
        .await
        .expect("api key");
    let app = Application::build(
        store,
        Arc::new(SystemClock),
        ServerConfig::default(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .expect("build app");
    TestApp {
        state: app.state().clone(),
        key: key.expose().to_owned(),
        _dir: dir,
    }
}

impl TestApp {
    fn router(&self) -> Router {
        app::router(self.state.clone())
    }

    fn store(&self) -> &dyn Store {
        self.state.store.as_ref()
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.key)
    }

    async fn send(&self, request: Request<Body>) -> Response {
        self.router().oneshot(request).await.expect("infallible")
    }

    /// A request with the given `Authorization` (if any) and raw body (if any).
    async fn raw(
        &self,
        method: Method,
        uri: &str,
        authorization: Option<&str>,
        body: Option<&str>,
    ) -> Answer {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(authorization) = authorization {
            request = request.header(header::AUTHORIZATION, authorization);
        }
        let body = match body {
            Some(body) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Body::from(body.to_owned())
            }
            None => Body::empty(),
        };
        let response = self.send(request.body(body).unwrap()).await;
        into_answer(response).await
    }

    /// A request authenticated with the test key.
    async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> Answer {
        let body = body.map(|b| b.to_string());
        self.raw(method, uri, Some(&self.bearer()), body.as_deref())
            .await
    }

    async fn get(&self, uri: &str) -> Answer {
        self.call(Method::GET, uri, None).await
    }

    async fn post(&self, uri: &str, body: Value) -> Answer {
        self.call(Method::POST, uri, Some(body)).await
    }

    async fn patch(&self, uri: &str, body: Value) -> Answer {
        self.call(Method::PATCH, uri, Some(body)).await
    }

    async fn delete(&self, uri: &str) -> Answer {
        self.call(Method::DELETE, uri, None).await
    }

    async fn source_id(&self, name: &str) -> SourceId {
        self.store().source_by_name(name).await.expect("source").id
    }

    /// Appends one track call per message id, received at `received_at`; returns their seqs.
    async fn append_at(&self, source: &str, ids: &[&str], received_at: Timestamp) -> Vec<i64> {
        let source_id = self.source_id(source).await;
        let before = self.store().last_seq().await.unwrap();
        let calls = ids
            .iter()
            .map(|id| NewCall {
                kind: CallKind::Track,
                message_id: (*id).to_owned(),
                received_at,
                payload: json!({
                    "type": "track",
                    "event": format!("Event {id}"),
                    "messageId": id,
                    "userId": "u1",
                    "receivedAt": received_at.to_string(),
                })
                .to_string(),
            })
            .collect();
        let outcome = self
            .store()
            .append(source_id, calls, Vec::new())
            .await
            .expect("append");
        assert_eq!(outcome.appended as usize, ids.len());
        (before + 1..=before + ids.len() as i64).collect()
    }

    async fn append(&self, source: &str, ids: &[&str]) -> Vec<i64> {
        self.append_at(source, ids, Timestamp::now()).await
    }

    async fn reject(&self, source: &str, payload: &str) {
        let source_id = self.source_id(source).await;
        let rejection = Rejection {
            code: RejectCode::MissingEvent,
            message: "track calls need an event".into(),
            received_at: Timestamp::now(),
            payload: payload.to_owned(),
        };
        self.store()
            .append(source_id, Vec::new(), vec![rejection])
            .await
            .expect("append rejection");
    }
}

async fn into_answer(response: Response) -> Answer {
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("not JSON ({status}): {}", String::from_utf8_lossy(&bytes)))
    };
    Answer {
        status,
        headers,
        body,
    }
}

#[tokio::test]
async fn store_errors_map_to_statuses_without_leaking_internals() {
    let cases = [
        (
            StoreError::NotFound {
                what: "source 'x'".into(),
            },
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            StoreError::Conflict {
                what: "source 'x'".into(),
            },
            StatusCode::CONFLICT,
            "conflict",
        ),
        (
            StoreError::Invalid {
                field: "name",
                reason: "bad".into(),
            },
            StatusCode::BAD_REQUEST,
            "invalid_field",
        ),
        (
            StoreError::Overloaded,
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
        ),
        (
            StoreError::Unavailable,
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
        ),
        (
            StoreError::Internal("disk I/O error at /secret/path".into()),
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
        ),
    ];
    for (err, status, code) in cases {
        let answer = into_answer(AdminError::from(err).into_response()).await;
        assert_eq!(answer.status, status, "{code}");
        assert_eq!(answer.error_code(), code);
        assert!(
            !answer.body.to_string().contains("secret"),
            "{}",
            answer.body
        );
        assert_eq!(
            answer.headers.contains_key(header::RETRY_AFTER),
            status == StatusCode::SERVICE_UNAVAILABLE
        );
    }
    let answer = into_answer(
        AdminError::from(StoreError::Invalid {
            field: "name",
            reason: "too long".into(),
        })
        .into_response(),
    )
    .await;
    assert_eq!(
        answer.body,
        json!({"error": {"code": "invalid_field", "message": "too long", "field": "name"}})
    );
}
