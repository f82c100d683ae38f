//! The Source debugger's live stream over real HTTP: its caps over the server and per session
//! (429 with `Retry-After`, the slot given back when a client goes away), its lifetime, the
//! notice a stream that fell behind gets, and its end when the server shuts down. (What it
//! shows is tested in `console_analytics.rs`.)

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use signalbox_console::ConsoleConfig;
use signalbox_server::ServerConfig;

use crate::console_harness::{read_to_end, read_until, ConsoleServer, SESSION_A, SESSION_B};

fn with_console(console: ConsoleConfig) -> ServerConfig {
    ServerConfig {
        console,
        ..ServerConfig::default()
    }
}

/// Opens streams of `session` until one is accepted, within a generous bound (a slot is
/// given back once the server sees the client of a dropped stream gone).
async fn open_when_free(app: &ConsoleServer, session: &str) -> reqwest::Response {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let response = app.get(session, "/debugger/stream").await;
        if response.status() == StatusCode::OK {
            return response;
        }
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(
            tokio::time::Instant::now() < deadline,
            "a slot was given back in time"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn debugger_streams_are_capped_per_session_and_over_the_server() {
    let app = ConsoleServer::spawn(with_console(ConsoleConfig {
        max_streams: 3,
        max_streams_per_session: 2,
        ..ConsoleConfig::default()
    }))
    .await;
    let a1 = app.get(SESSION_A, "/debugger/stream").await;
    assert_eq!(a1.status(), StatusCode::OK);
    let a2 = app.get(SESSION_A, "/debugger/stream").await;
    assert_eq!(a2.status(), StatusCode::OK);

    // A third of the same session is refused, with when to come back and why.
    let a3 = app.get(SESSION_A, "/debugger/stream").await;
    assert_eq!(a3.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        a3.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("30")
    );
    let body = a3.text().await.expect("read");
    assert!(body.contains("role=\"alert\""), "{body}");
    assert!(
        body.contains("this session has 2 Source debugger streams open already"),
        "{body}"
    );

    // Another session still gets one, up to the server's cap.
    let b1 = app.get(SESSION_B, "/debugger/stream").await;
    assert_eq!(b1.status(), StatusCode::OK);
    let b2 = app.get(SESSION_B, "/debugger/stream").await;
    assert_eq!(b2.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(b2.headers().contains_key("retry-after"));
    let body = b2.text().await.expect("read");
    assert!(
        body.contains("the server has 3 Source debugger streams open already"),
        "{body}"
    );

    // The page itself is not a stream and is never refused.
    let (status, _) = app.page(SESSION_B, "/debugger").await;
    assert_eq!(status, StatusCode::OK);

    // A client that goes away gives its slot back.
    drop(a1);
    let b2 = open_when_free(&app, SESSION_B).await;
    drop((a2, b1, b2));
    app.stop().await;
}

#[tokio::test]
async fn a_debugger_stream_ends_after_its_lifetime_and_gives_its_slot_back() {
    let app = ConsoleServer::spawn(with_console(ConsoleConfig {
        max_streams_per_session: 1,
        stream_lifetime: Duration::from_secs(1),
        ..ConsoleConfig::default()
    }))
    .await;
    let mut stream = app.get(SESSION_A, "/debugger/stream").await;
    assert_eq!(stream.status(), StatusCode::OK);
    read_to_end(&mut stream).await;
    drop(stream);
    let again = open_when_free(&app, SESSION_A).await;
    drop(again);
    app.stop().await;
}

#[tokio::test]
async fn a_stream_far_behind_the_log_skips_the_oldest_calls_and_says_how_many() {
    let app = ConsoleServer::spawn(with_console(ConsoleConfig {
        stream_backlog: 5,
        ..ConsoleConfig::default()
    }))
    .await;
    let batch: Vec<_> = (1..=12)
        .map(|n| json!({"type": "track", "userId": "u", "event": "Step", "messageId": format!("m-{n:02}")}))
        .collect();
    app.segment("batch", json!({ "batch": batch })).await;

    // From the start of the log: 12 calls behind, 5 kept.
    let mut stream = app.get(SESSION_A, "/debugger/stream?after=0").await;
    assert_eq!(stream.status(), StatusCode::OK);
    let seen = read_until(&mut stream, "m-12").await;
    assert!(seen.contains("event: skipped"), "{seen}");
    assert!(
        seen.contains("7 calls skipped: this view fell more than 5 calls behind the log"),
        "{seen}"
    );
    for n in 1..=7 {
        assert!(
            !seen.contains(&format!("m-{n:02}")),
            "m-{n:02} skipped: {seen}"
        );
    }
    for n in 8..=12 {
        assert!(seen.contains(&format!("m-{n:02}")), "m-{n:02} sent: {seen}");
    }
    assert!(
        seen.find("event: skipped") < seen.find("m-08"),
        "the notice comes first: {seen}"
    );

    // A stream that keeps up skips nothing.
    let mut live = app.get(SESSION_A, "/debugger/stream").await;
    app.segment(
        "track",
        json!({"userId": "u", "event": "Step", "messageId": "m-live"}),
    )
    .await;
    let seen = read_until(&mut live, "m-live").await;
    assert!(!seen.contains("skipped"), "{seen}");
    drop((stream, live));
    app.stop().await;
}

#[tokio::test]
async fn debugger_streams_end_when_the_server_shuts_down() {
    let mut app = ConsoleServer::spawn(ServerConfig {
        // Far longer than the bound below: the stream must end by itself, not be cut.
        shutdown_timeout: Duration::from_secs(600),
        ..ServerConfig::default()
    })
    .await;
    let mut stream = app.get(SESSION_A, "/debugger/stream").await;
    assert_eq!(stream.status(), StatusCode::OK);
    let server = app.begin_stop();
    read_to_end(&mut stream).await;
    tokio::time::timeout(Duration::from_secs(120), server)
        .await
        .expect("the server stopped without waiting for the stream")
        .expect("server task")
        .expect("server stopped");
    drop(stream);
    app.engage.shutdown().await;
}
