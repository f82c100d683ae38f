//! A repeated `messageId` is stored once inside the dedupe window, and always answered 200.

use jiff::{SignedDuration, Timestamp};
use serde_json::json;
use signalbox_core::FakeClock;
use signalbox_store::Store;

use crate::helpers::{basic, spawn_app, spawn_app_with, track, TestOptions};

#[tokio::test]
async fn a_repeated_message_id_in_one_batch_is_stored_once() {
    let app = spawn_app().await;
    let mut changed = track("same");
    changed["event"] = json!("Changed Later");
    app.post_batch(&json!({"batch": [track("same"), track("other"), changed]}))
        .await
        .assert_success();
    let stored = app.export().await;
    let ids: Vec<&str> = stored
        .iter()
        .map(|p| p["messageId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["same", "other"]);
    // The first one wins.
    assert_eq!(stored[0]["event"], "Order Completed");
}

#[tokio::test]
async fn a_repeated_message_id_across_requests_and_routes_is_stored_once() {
    let app = spawn_app().await;
    for _ in 0..3 {
        app.post_batch(&json!({"batch": [track("again")]}))
            .await
            .assert_success();
    }
    app.post_json(
        "/v1/track",
        &json!({"userId": "u1", "event": "E", "messageId": "again"}),
    )
    .await
    .assert_success();
    assert_eq!(app.calls().await.len(), 1);
}

#[tokio::test]
async fn the_same_message_id_from_two_sources_is_stored_twice() {
    // Dedupe is per source, as Segment's: a public browser key cannot pre-empt a server
    // source's predictable ids.
    let app = spawn_app().await;
    app.post_batch(&json!({"batch": [track("order-123")]}))
        .await
        .assert_success();
    let (server, server_key) = app.store.create_source("server").await.unwrap();
    let auth = basic(server_key.expose(), true);
    for _ in 0..2 {
        app.post(
            "/v1/batch",
            json!({"batch": [track("order-123")]}).to_string(),
            &[("authorization", &auth)],
        )
        .await
        .assert_success();
    }
    let calls = app.calls().await;
    assert_eq!(calls.len(), 2, "once per source");
    assert_eq!(calls[1].source_id, server.id);
    assert!(calls.iter().all(|c| c.message_id == "order-123"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_message_id_from_many_connections_at_once_is_stored_once() {
    let app = spawn_app().await;
    let url = app.url("/v1/batch");
    let auth = app.basic_auth();
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(20));
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let url = url.clone();
            let auth = auth.clone();
            let start = start.clone();
            tokio::spawn(async move {
                // One client per task: one connection per task.
                let client = reqwest::Client::new();
                let body = json!({"batch": [track("contended"), track(&format!("own-{i}"))]});
                start.wait().await;
                let response = client
                    .post(&url)
                    .header("authorization", auth)
                    .body(body.to_string())
                    .send()
                    .await
                    .unwrap();
                let status = response.status();
                let body: serde_json::Value = response.json().await.unwrap();
                (status, body)
            })
        })
        .collect();
    for (status, body) in futures::future::try_join_all(tasks).await.unwrap() {
        assert_eq!(status, 200);
        assert_eq!(body, json!({"success": true}));
    }
    let calls = app.calls().await;
    assert_eq!(
        calls.iter().filter(|c| c.message_id == "contended").count(),
        1
    );
    assert_eq!(calls.len(), 21);
}

#[tokio::test]
async fn dedupe_survives_a_restart() {
    let mut app = spawn_app().await;
    app.post_batch(&json!({"batch": [track("before-restart")]}))
        .await
        .assert_success();
    app.restart().await;
    app.post_batch(&json!({"batch": [track("before-restart"), track("after-restart")]}))
        .await
        .assert_success();
    let ids: Vec<String> = app
        .calls()
        .await
        .into_iter()
        .map(|c| c.message_id)
        .collect();
    assert_eq!(ids, ["before-restart", "after-restart"]);
}

#[tokio::test]
async fn a_message_id_seen_outside_the_window_is_stored_again() {
    let clock = FakeClock::new("2026-03-01T12:00:00Z".parse::<Timestamp>().unwrap());
    let app = spawn_app_with(TestOptions {
        dedupe_window: SignedDuration::from_mins(10),
        clock: Some(clock.clone()),
        ..TestOptions::default()
    })
    .await;
    let body = json!({"batch": [track("windowed")]});
    let send = || app.post_batch(&body);
    send().await.assert_success();
    clock.advance(SignedDuration::from_mins(9));
    send().await.assert_success();
    assert_eq!(app.calls().await.len(), 1);
    // Eleven minutes after the first, one minute after the last repeat: outside the window
    // counted from the stored copy.
    clock.advance(SignedDuration::from_mins(2));
    send().await.assert_success();
    clock.advance(SignedDuration::from_mins(1));
    send().await.assert_success();
    let calls = app.calls().await;
    assert_eq!(calls.len(), 2);
    assert_eq!(
        calls[1].received_at,
        "2026-03-01T12:11:00Z".parse::<Timestamp>().unwrap()
    );
}

#[tokio::test]
async fn a_short_window_on_the_system_clock_lets_a_late_repeat_in() {
    let app = spawn_app_with(TestOptions {
        dedupe_window: SignedDuration::from_millis(100),
        ..TestOptions::default()
    })
    .await;
    app.post_batch(&json!({"batch": [track("short")]}))
        .await
        .assert_success();
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    app.post_batch(&json!({"batch": [track("short")]}))
        .await
        .assert_success();
    assert_eq!(app.calls().await.len(), 2);
}
