//! Per-message validation: a single route answers 400 naming the field; a batch keeps its
//! valid messages and rejects the others one by one. Every rejection is stored.

use serde_json::{json, Value};

use crate::helpers::{spawn_app, track};

/// (route, body, code, text the message must contain)
fn invalid_singles() -> Vec<(&'static str, Value, &'static str, &'static str)> {
    vec![
        (
            "/v1/identify",
            json!({"traits": {"email": "a@b.c"}}),
            "no_user_anon_id",
            "userId",
        ),
        (
            "/v1/track",
            json!({"userId": null, "anonymousId": "", "event": "E"}),
            "no_user_anon_id",
            "anonymousId",
        ),
        (
            "/v1/track",
            json!({"userId": "u1"}),
            "missing_event",
            "event",
        ),
        (
            "/v1/track",
            json!({"userId": "u1", "event": "  "}),
            "missing_event",
            "event",
        ),
        (
            "/v1/group",
            json!({"userId": "u1"}),
            "missing_group_id",
            "groupId",
        ),
        (
            "/v1/alias",
            json!({"userId": "u1"}),
            "missing_previous_id",
            "previousId",
        ),
        (
            "/v1/alias",
            json!({"previousId": "a1", "anonymousId": "a2"}),
            "no_user_anon_id",
            "userId",
        ),
        (
            "/v1/track",
            json!({"userId": "u1", "event": "E", "properties": [1, 2]}),
            "invalid_field",
            "properties",
        ),
        (
            "/v1/identify",
            json!({"userId": "u1", "traits": "vip"}),
            "invalid_field",
            "traits",
        ),
        (
            "/v1/page",
            json!({"userId": "u1", "context": 5}),
            "invalid_field",
            "context",
        ),
        (
            "/v1/page",
            json!({"userId": {"id": 1}}),
            "invalid_field",
            "userId",
        ),
        (
            "/v1/screen",
            json!({"userId": "u1", "messageId": "m".repeat(101)}),
            "message_id_too_long",
            "messageId",
        ),
        (
            "/v1/track",
            json!({"userId": "u1", "event": "E", "timestamp": "yesterday"}),
            "invalid_timestamp",
            "timestamp",
        ),
        (
            "/v1/track",
            json!({"userId": "u1", "event": "E", "timestamp": 1700000000}),
            "invalid_timestamp",
            "timestamp",
        ),
        (
            "/v1/track",
            json!({"userId": "u1", "event": "E", "sentAt": "2026-13-45T00:00:00Z"}),
            "invalid_timestamp",
            "sentAt",
        ),
    ]
}

#[tokio::test]
async fn a_single_route_names_the_bad_field_and_stores_the_rejection() {
    let app = spawn_app().await;
    let cases = invalid_singles();
    for (route, body, code, field) in &cases {
        let message = app.post_json(route, body).await.assert_error(400, code);
        assert!(
            message.contains(field),
            "{route} {body}: {message:?} does not name {field}"
        );
    }
    assert!(app.calls().await.is_empty());
    let rejections = app.rejections().await;
    assert_eq!(rejections.len(), cases.len());
    for (rejection, (route, body, code, _)) in rejections.iter().zip(&cases) {
        assert_eq!(rejection.code, *code, "{route} {body}");
        assert_eq!(rejection.source_id, app.source.id);
        let stored: Value = serde_json::from_str(&rejection.payload).unwrap();
        assert!(stored.is_object(), "{}", rejection.payload);
    }
}

#[tokio::test]
async fn a_single_route_rejection_keeps_what_was_sent() {
    let app = spawn_app().await;
    let body = json!({"userId": "u1", "properties": {"sku": "A-1"}});
    app.post_json("/v1/track", &body)
        .await
        .assert_error(400, "missing_event");
    let rejection = &app.rejections().await[0];
    let stored: Value = serde_json::from_str(&rejection.payload).unwrap();
    assert_eq!(stored["properties"]["sku"], "A-1");
    assert_eq!(stored["userId"], "u1");
    assert!(rejection.message.contains("event"));
}

#[tokio::test]
async fn a_batch_keeps_valid_messages_and_rejects_the_others_one_by_one() {
    let app = spawn_app().await;
    let body = json!({"batch": [
        track("ok-1"),
        {"type": "track", "userId": "u1", "messageId": "bad-1"},
        {"type": "identify", "anonymousId": "a1", "messageId": "ok-2"},
        {"type": "group", "userId": "u1", "messageId": "bad-2"},
        {"type": "alias", "userId": "u1", "messageId": "bad-3"},
        {"type": "page", "messageId": "bad-4"},
        {"type": "bogus", "userId": "u1", "messageId": "bad-5"},
        {"userId": "u1", "event": "E", "messageId": "bad-6"},
        {"type": "track", "userId": "u1", "event": "E", "properties": "x", "messageId": "bad-7"},
        {"type": "track", "userId": "u1", "event": "E", "messageId": "z".repeat(101)},
        {"type": "track", "userId": "u1", "event": "E", "timestamp": "noon", "messageId": "bad-9"},
        "not an object",
        null,
        {"type": "screen", "userId": "u1", "name": "Main", "messageId": "ok-3"},
    ]});
    app.post_batch(&body).await.assert_success();

    let ids: Vec<String> = app
        .calls()
        .await
        .into_iter()
        .map(|c| c.message_id)
        .collect();
    assert_eq!(ids, ["ok-1", "ok-2", "ok-3"]);
    let codes: Vec<String> = app.rejections().await.into_iter().map(|r| r.code).collect();
    assert_eq!(
        codes,
        [
            "missing_event",
            "missing_group_id",
            "missing_previous_id",
            "no_user_anon_id",
            "invalid_type",
            "invalid_type",
            "invalid_field",
            "message_id_too_long",
            "invalid_timestamp",
            "not_an_object",
            "not_an_object",
        ]
    );
}

#[tokio::test]
async fn a_batch_of_only_invalid_messages_is_still_answered_200() {
    let app = spawn_app().await;
    app.post_batch(&json!({"batch": [{"type": "track"}, {"type": "identify"}]}))
        .await
        .assert_success();
    assert!(app.calls().await.is_empty());
    assert_eq!(app.rejections().await.len(), 2);
}

#[tokio::test]
async fn an_empty_batch_is_accepted() {
    let app = spawn_app().await;
    app.post_batch(&json!({"batch": []})).await.assert_success();
    assert!(app.calls().await.is_empty());
    assert!(app.rejections().await.is_empty());
}
