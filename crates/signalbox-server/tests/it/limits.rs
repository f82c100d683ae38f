//! Request-level limits: size, count, JSON and gzip. A refused request stores nothing.

use serde_json::{json, Value};

use crate::helpers::{gzip, spawn_app, track, TestApp};

fn track_with_padding(bytes: usize) -> Value {
    json!({"userId": "u1", "event": "E", "properties": {"pad": "x".repeat(bytes)}})
}

/// A batch of `n` distinct messages of about `each` bytes.
fn batch_of(n: usize, each: usize) -> Value {
    let items: Vec<Value> = (0..n)
        .map(|i| {
            let mut item = track(&format!("msg-{i}"));
            item["properties"]["pad"] = json!("x".repeat(each));
            item
        })
        .collect();
    json!({"batch": items})
}

async fn assert_nothing_stored(app: &TestApp) {
    assert!(app.calls().await.is_empty());
    assert!(app.rejections().await.is_empty());
}

#[tokio::test]
async fn a_single_message_over_32_kb_is_refused() {
    let app = spawn_app().await;
    // Just over the limit (read whole, then measured) and far over it (cut off while read).
    for pad in [32 * 1024, 100 * 1024] {
        let message = app
            .post_json("/v1/track", &track_with_padding(pad))
            .await
            .assert_error(400, "message_too_large");
        assert!(message.contains("32768"), "{message}");
    }
    let message = app
        .post_json("/v1/track", &track_with_padding(32 * 1024 - 100))
        .await;
    message.assert_success();
    assert_eq!(app.calls().await.len(), 1);
    assert!(app.rejections().await.is_empty());
}

#[tokio::test]
async fn a_batch_over_500_kb_is_refused() {
    let app = spawn_app().await;
    for n in [520, 2_000] {
        let message = app
            .post_batch(&batch_of(n, 1_000))
            .await
            .assert_error(400, "batch_too_large");
        assert!(message.contains("512000"), "{message}");
    }
    assert_nothing_stored(&app).await;
    app.post_batch(&batch_of(450, 1_000)).await.assert_success();
    assert_eq!(app.calls().await.len(), 450);
}

#[tokio::test]
async fn a_batch_of_more_than_2500_messages_is_refused() {
    let app = spawn_app().await;
    let message = app
        .post_batch(&batch_of(2_501, 0))
        .await
        .assert_error(400, "too_many_messages");
    assert!(
        message.contains("2501") && message.contains("2500"),
        "{message}"
    );
    assert_nothing_stored(&app).await;
    app.post_batch(&batch_of(2_500, 0)).await.assert_success();
    assert_eq!(app.calls().await.len(), 2_500);
}

#[tokio::test]
async fn invalid_json_is_refused() {
    let app = spawn_app().await;
    let auth = app.basic_auth();
    for (route, body) in [
        ("/v1/track", "{\"userId\": \"u1\", "),
        ("/v1/batch", "{\"batch\": [}"),
        ("/v1/batch", ""),
        ("/v1/batch", "{\"batch\": 5}"),
        ("/v1/import", "[]"),
        ("/v1/t", "not json"),
    ] {
        let message = app
            .post(route, body, &[("authorization", &auth)])
            .await
            .assert_error(400, "invalid_json");
        assert!(message.contains("JSON"), "{route} {body:?}: {message}");
    }
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn a_single_route_body_that_is_not_an_object_is_refused() {
    let app = spawn_app().await;
    let auth = app.basic_auth();
    let message = app
        .post("/v1/identify", "[1, 2]", &[("authorization", &auth)])
        .await
        .assert_error(400, "not_an_object");
    assert!(message.contains("object"), "{message}");
}

#[tokio::test]
async fn broken_gzip_is_refused() {
    let app = spawn_app().await;
    let auth = app.basic_auth();
    let mut truncated = gzip(json!({"batch": [track("gz")]}).to_string().as_bytes());
    truncated.truncate(truncated.len() / 2);
    for body in [b"definitely not gzip".to_vec(), truncated] {
        let message = app
            .post(
                "/v1/batch",
                body,
                &[("authorization", &auth), ("content-encoding", "gzip")],
            )
            .await
            .assert_error(400, "malformed_gzip");
        assert!(message.contains("gzip"), "{message}");
    }
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn gzip_that_inflates_past_the_limit_is_refused() {
    let app = spawn_app().await;
    let auth = app.basic_auth();
    let headers = [
        ("authorization", auth.as_str()),
        ("content-encoding", "gzip"),
    ];
    // Both bodies compress to a few kilobytes.
    let single = gzip(track_with_padding(200 * 1024).to_string().as_bytes());
    assert!(single.len() < 32 * 1024);
    app.post("/v1/track", single, &headers)
        .await
        .assert_error(400, "message_too_large");
    let batch = gzip(batch_of(1, 5 << 20).to_string().as_bytes());
    assert!(batch.len() < 500 * 1024);
    let message = app
        .post("/v1/batch", batch, &headers)
        .await
        .assert_error(400, "batch_too_large");
    assert!(message.contains("512000"), "{message}");
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn valid_gzip_is_accepted() {
    let app = spawn_app().await;
    let auth = app.basic_auth();
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
        ("content-encoding", "gzip"),
    ];
    // About 400 kB once inflated: the limits apply to the inflated body.
    let body = batch_of(400, 1_000);
    let zipped = gzip(body.to_string().as_bytes());
    app.post("/v1/batch", zipped, &headers)
        .await
        .assert_success();
    let single = gzip(
        json!({"userId": "u1", "event": "Zipped"})
            .to_string()
            .as_bytes(),
    );
    app.post("/v1/track", single, &headers)
        .await
        .assert_success();
    let calls = app.export().await;
    assert_eq!(calls.len(), 401);
    assert_eq!(calls[400]["event"], "Zipped");
}

#[tokio::test]
async fn an_oversized_message_inside_a_batch_is_rejected_alone() {
    let app = spawn_app().await;
    let key = app.write_key.expose().to_owned();
    // Written by hand so that the write key comes first, inside what a rejection keeps.
    let big = format!(
        r#"{{"writeKey":"{key}","type":"track","userId":"u1","event":"E","messageId":"big","properties":{{"pad":"{}"}}}}"#,
        "x".repeat(40 * 1024)
    );
    let body = format!(
        r#"{{"batch":[{},{big},{}]}}"#,
        track("small-1"),
        track("small-2")
    );
    let auth = app.basic_auth();
    app.post("/v1/batch", body, &[("authorization", &auth)])
        .await
        .assert_success();
    let ids: Vec<String> = app
        .calls()
        .await
        .into_iter()
        .map(|c| c.message_id)
        .collect();
    assert_eq!(ids, ["small-1", "small-2"]);
    let rejections = app.rejections().await;
    assert_eq!(rejections.len(), 1);
    assert_eq!(rejections[0].code, "message_too_large");
    assert!(rejections[0].message.contains("32768"));
    assert!(rejections[0].payload.contains("\"messageId\":\"big\""));
    assert!(
        !rejections[0].payload.contains(&key),
        "the write key was stored with the rejection: {}",
        &rejections[0].payload[..200]
    );
}
