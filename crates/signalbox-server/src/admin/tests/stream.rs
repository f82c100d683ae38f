use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, BodyDataStream};
use axum::http::{header, Request, StatusCode};
use futures::StreamExt;
use serde_json::{json, Value};
use signalbox_core::{Scopes, SystemClock};
use signalbox_store::sqlite::SqliteOptions;
use signalbox_store::{SqliteStore, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{into_answer, spawn_app, TestApp};
use crate::app::{Application, ServerConfig};

/// Opens the live tail; panics unless it answers 200 with an event stream.
async fn open(app: &TestApp, uri: &str, last_event_id: Option<&str>) -> BodyDataStream {
    let mut request = Request::get(uri).header(header::AUTHORIZATION, app.bearer());
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    let response = app.send(request.body(Body::empty()).unwrap()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    response.into_body().into_data_stream()
}

/// Reads the stream until it holds `needle`; returns everything read.
async fn read_until(stream: &mut BodyDataStream, needle: &str) -> String {
    let mut text = String::new();
    let read = async {
        while !text.contains(needle) {
            let chunk = stream.next().await.expect("stream ended").expect("chunk");
            text.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
        }
    };
    if tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .is_err()
    {
        panic!("no {needle:?} within 10s; read so far: {text:?}");
    }
    text
}

/// The `event: call` frames of a stream's text, as (id, data).
fn calls(text: &str) -> Vec<(i64, Value)> {
    text.split("\n\n")
        .filter(|frame| frame.lines().any(|l| l == "event: call"))
        .map(|frame| {
            let field = |name: &str| {
                frame
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .unwrap_or_else(|| panic!("no {name} in {frame:?}"))
                    .to_owned()
            };
            let data: Value = serde_json::from_str(&field("data: ")).unwrap();
            (field("id: ").parse().unwrap(), data)
        })
        .collect()
}

#[tokio::test]
async fn delivers_calls_stored_after_the_stream_opened() {
    let app = spawn_app().await;
    app.append("default", &["before"]).await;
    let mut stream = open(&app, "/admin/v1/events/stream", None).await;
    let seqs = app.append("default", &["after-1", "after-2"]).await;

    let text = read_until(&mut stream, "\"after-2\"").await;
    let got = calls(&text);
    assert_eq!(got.len(), 2, "{text}");
    assert_eq!(got[0].0, seqs[0]);
    assert_eq!(got[0].1["messageId"], "after-1");
    assert_eq!(got[0].1["seq"], seqs[0]);
    assert_eq!(got[0].1["source"], "default");
    assert_eq!(got[0].1["type"], "track");
    assert_eq!(got[0].1["payload"]["event"], "Event after-1");
    assert_eq!(got[1].0, seqs[1]);

    // The stream stays open for what comes next.
    app.append("default", &["after-3"]).await;
    let text = read_until(&mut stream, "\"after-3\"").await;
    assert_eq!(calls(&text).len(), 1);
}

#[tokio::test]
async fn resumes_after_last_event_id_or_after() {
    let app = spawn_app().await;
    let seqs = app.append("default", &["m1", "m2", "m3"]).await;

    let mut stream = open(&app, "/admin/v1/events/stream", Some(&seqs[0].to_string())).await;
    let text = read_until(&mut stream, "\"m3\"").await;
    let ids: Vec<i64> = calls(&text).iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, seqs[1..]);

    let mut stream = open(&app, "/admin/v1/events/stream?after=0", None).await;
    let text = read_until(&mut stream, "\"m3\"").await;
    assert_eq!(calls(&text).len(), 3);
}

#[tokio::test]
async fn follows_one_source_and_names_new_ones() {
    let app = spawn_app().await;
    app.post("/admin/v1/sources", json!({"name": "web"})).await;
    let mut web = open(&app, "/admin/v1/events/stream?source=web", None).await;
    let mut all = open(&app, "/admin/v1/events/stream", None).await;
    // A source created after the stream opened is shown by name too.
    app.post("/admin/v1/sources", json!({"name": "mobile"}))
        .await;
    app.append("default", &["d1"]).await;
    app.append("mobile", &["m1"]).await;
    app.append("web", &["w1"]).await;

    let text = read_until(&mut web, "\"w1\"").await;
    let got = calls(&text);
    assert_eq!(got.len(), 1, "{text}");
    assert_eq!(got[0].1["source"], "web");

    let text = read_until(&mut all, "\"w1\"").await;
    let sources: Vec<_> = calls(&text)
        .into_iter()
        .map(|(_, c)| c["source"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(sources, ["default", "mobile", "web"]);
}

#[tokio::test]
async fn refuses_before_streaming() {
    let app = spawn_app().await;
    let request = Request::get("/admin/v1/events/stream")
        .body(Body::empty())
        .unwrap();
    let answer = into_answer(app.send(request).await).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);

    let unknown = app.get("/admin/v1/events/stream?source=nope").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.error_field(), "source");
    let bad = app.get("/admin/v1/events/stream?after=x").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.error_field(), "after");
}

/// An open stream must not keep a stopping server from draining.
#[tokio::test]
async fn an_open_stream_ends_when_the_server_shuts_down() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(dir.path().join("signalbox.db"), SqliteOptions::default()).unwrap(),
    );
    let (_, key) = store
        .create_api_key("test", &Scopes::parse(["admin"]).unwrap())
        .await
        .unwrap();
    let app = Application::build(
        store,
        Arc::new(SystemClock),
        ServerConfig::default(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let addr = app.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run(async {
        let _ = stopped.await;
    }));

    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /admin/v1/events/stream HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\r\n",
        key.expose()
    );
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
            .await
            .expect("response head in time")
            .unwrap();
        assert!(n > 0, "connection closed early");
        head.extend_from_slice(&buf[..n]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );

    stop.send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("server stopped in time despite the open stream");
    result.unwrap().unwrap();
}
