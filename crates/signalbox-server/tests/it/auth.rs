//! Write keys: where they may be sent, and what happens as sources change under a running
//! server.

use jiff::{SignedDuration, Timestamp};
use serde_json::json;
use signalbox_core::{FakeClock, SourceStatus};
use signalbox_store::Store;

use crate::helpers::{basic, spawn_app, spawn_app_with, track, TestApp, TestOptions};

async fn post_with_key(app: &TestApp, key: &str) -> crate::helpers::Answer {
    let auth = basic(key, true);
    app.post(
        "/v1/batch",
        json!({"batch": [track("")]}).to_string(),
        &[("authorization", &auth)],
    )
    .await
}

#[tokio::test]
async fn write_key_in_the_body_needs_no_header() {
    let app = spawn_app().await;
    let key = app.write_key.expose();
    let single = json!({"writeKey": key, "userId": "u1", "event": "E"});
    app.post(
        "/v1/track",
        single.to_string(),
        &[("content-type", "application/json")],
    )
    .await
    .assert_success();
    let batch = json!({"writeKey": key, "batch": [track("body-1")]});
    app.post("/v1/batch", batch.to_string(), &[])
        .await
        .assert_success();
    assert_eq!(app.calls().await.len(), 2);
}

#[tokio::test]
async fn http_basic_works_with_and_without_the_trailing_colon() {
    let app = spawn_app().await;
    let key = app.write_key.expose();
    for (i, with_colon) in [true, false].into_iter().enumerate() {
        let auth = basic(key, with_colon);
        let body = json!({"batch": [track(&format!("basic-{i}"))]});
        app.post("/v1/batch", body.to_string(), &[("authorization", &auth)])
            .await
            .assert_success();
    }
    assert_eq!(app.calls().await.len(), 2);
}

#[tokio::test]
async fn bearer_token_with_the_key_in_the_body() {
    let app = spawn_app().await;
    let body = json!({"writeKey": app.write_key.expose(), "batch": [track("bearer-1")]});
    app.post(
        "/v1/batch",
        body.to_string(),
        &[("authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig")],
    )
    .await
    .assert_success();
    // A Bearer token alone carries no write key.
    let message = app
        .post(
            "/v1/batch",
            json!({"batch": [track("bearer-2")]}).to_string(),
            &[("authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig")],
        )
        .await
        .assert_error(401, "missing_write_key");
    assert!(message.contains("write key"), "{message}");
    assert_eq!(app.calls().await.len(), 1);
}

#[tokio::test]
async fn a_missing_write_key_is_refused() {
    let app = spawn_app().await;
    let message = app
        .post(
            "/v1/track",
            json!({"userId": "u1", "event": "E"}).to_string(),
            &[],
        )
        .await
        .assert_error(401, "missing_write_key");
    assert!(message.contains("writeKey"), "{message}");
    app.post(
        "/v1/batch",
        json!({"batch": [track("m")], "writeKey": ""}).to_string(),
        &[],
    )
    .await
    .assert_error(401, "missing_write_key");
    app.post(
        "/v1/batch",
        json!({"batch": [track("m")]}).to_string(),
        &[("authorization", "Basic Og==")],
    )
    .await
    .assert_error(401, "missing_write_key");
    assert!(app.calls().await.is_empty());
    assert!(app.rejections().await.is_empty());
}

#[tokio::test]
async fn an_unknown_write_key_is_refused() {
    let app = spawn_app().await;
    let message = post_with_key(&app, "testsecret")
        .await
        .assert_error(401, "unknown_write_key");
    assert!(message.contains("write key"), "{message}");
    let body = json!({"writeKey": "testsecret", "userId": "u1", "event": "E"});
    app.post("/v1/track", body.to_string(), &[])
        .await
        .assert_error(401, "unknown_write_key");
    assert!(app.calls().await.is_empty());
}

#[tokio::test]
async fn a_disabled_source_is_refused_until_enabled_again() {
    let app = spawn_app().await;
    let key = app.write_key.expose().to_owned();
    post_with_key(&app, &key).await.assert_success();

    app.store
        .set_source_status(&app.source.name, SourceStatus::Disabled)
        .await
        .unwrap();
    app.refresh_keys().await;
    post_with_key(&app, &key)
        .await
        .assert_error(401, "disabled_write_key");
    app.get(&format!("/v1/projects/{key}/settings"), &[])
        .await
        .assert_error(401, "disabled_write_key");

    app.store
        .set_source_status(&app.source.name, SourceStatus::Enabled)
        .await
        .unwrap();
    app.refresh_keys().await;
    post_with_key(&app, &key).await.assert_success();
    assert_eq!(app.calls().await.len(), 2);
}

#[tokio::test]
async fn the_periodic_key_reload_notices_a_disabled_source() {
    let app = spawn_app_with(TestOptions {
        key_refresh: std::time::Duration::from_millis(50),
        ..TestOptions::default()
    })
    .await;
    let key = app.write_key.expose().to_owned();
    post_with_key(&app, &key).await.assert_success();
    app.store
        .set_source_status(&app.source.name, SourceStatus::Disabled)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let answer = post_with_key(&app, &key).await;
        if answer.status == 401 {
            answer.assert_error(401, "disabled_write_key");
            break;
        }
        answer.assert_success();
        assert!(
            std::time::Instant::now() < deadline,
            "the disabled key was still accepted after 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_rotated_key_works_during_its_grace_and_is_refused_after() {
    let clock = FakeClock::new(Timestamp::now());
    let app = spawn_app_with(TestOptions {
        clock: Some(clock.clone()),
        ..TestOptions::default()
    })
    .await;
    let old = app.write_key.expose().to_owned();
    let new = app
        .store
        .rotate_write_key(&app.source.name, SignedDuration::from_hours(1))
        .await
        .unwrap();
    assert_ne!(new.expose(), old);
    // The new key is not in the cache yet: found in the store on first use.
    post_with_key(&app, new.expose()).await.assert_success();
    app.refresh_keys().await;
    post_with_key(&app, &old).await.assert_success();
    post_with_key(&app, new.expose()).await.assert_success();

    clock.advance(SignedDuration::from_mins(59));
    post_with_key(&app, &old).await.assert_success();
    clock.advance(SignedDuration::from_mins(2));
    post_with_key(&app, &old)
        .await
        .assert_error(401, "disabled_write_key");
    post_with_key(&app, new.expose()).await.assert_success();
    assert_eq!(app.calls().await.len(), 5);
}

#[tokio::test]
async fn a_key_rotated_without_grace_is_refused_at_once() {
    let app = spawn_app().await;
    let old = app.write_key.expose().to_owned();
    let new = app
        .store
        .rotate_write_key(&app.source.name, SignedDuration::ZERO)
        .await
        .unwrap();
    app.refresh_keys().await;
    post_with_key(&app, &old)
        .await
        .assert_error(401, "disabled_write_key");
    post_with_key(&app, new.expose()).await.assert_success();
}

#[tokio::test]
async fn a_deleted_source_is_refused() {
    let app = spawn_app().await;
    let key = app.write_key.expose().to_owned();
    post_with_key(&app, &key).await.assert_success();
    app.store.delete_source(&app.source.name).await.unwrap();
    app.refresh_keys().await;
    post_with_key(&app, &key)
        .await
        .assert_error(401, "unknown_write_key");
}

#[tokio::test]
async fn a_deleted_source_is_refused_even_before_the_cache_reloads() {
    let app = spawn_app().await;
    let (_, key) = app.store.create_source("short-lived").await.unwrap();
    app.store.delete_source("short-lived").await.unwrap();
    post_with_key(&app, key.expose())
        .await
        .assert_error(401, "unknown_write_key");
}

#[tokio::test]
async fn a_source_created_after_start_works_at_once() {
    // The periodic reload is an hour away: only the cache-miss lookup can find the key.
    let app = spawn_app().await;
    let (source, key) = app.store.create_source("late").await.unwrap();
    post_with_key(&app, key.expose()).await.assert_success();
    let body = json!({"writeKey": key.expose(), "userId": "u1", "event": "E"});
    app.post("/v1/t", body.to_string(), &[("content-type", "text/plain")])
        .await
        .assert_success();
    let calls = app.calls().await;
    assert_eq!(calls.len(), 2);
    assert!(calls.iter().all(|c| c.source_id == source.id));
    assert_ne!(source.id, app.source.id);
}
