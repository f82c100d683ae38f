use axum::http::StatusCode;
use serde_json::json;

use super::spawn_app;

#[tokio::test]
async fn settings_start_at_the_destination_defaults() {
    let app = spawn_app().await;
    let answer = app.get("/admin/v1/sources/default/settings").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(
        answer.body,
        json!({"enabled": true, "enforceEmail": true, "listId": null, "confirmOptin": true,
               "sendAnonymous": false, "useSegmentSpec": true})
    );
}

#[tokio::test]
async fn patch_changes_only_the_keys_given_and_keeps_them() {
    let app = spawn_app().await;
    let answer = app
        .patch(
            "/admin/v1/sources/default/settings",
            json!({"enforceEmail": false, "listId": "L1"}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["enforceEmail"], false);
    assert_eq!(answer.body["listId"], "L1");
    assert_eq!(answer.body["confirmOptin"], true);

    let read = app.get("/admin/v1/sources/default/settings").await;
    assert_eq!(read.body, answer.body);

    let cleared = app
        .patch(
            "/admin/v1/sources/default/settings",
            json!({"listId": null}),
        )
        .await;
    assert_eq!(cleared.body["listId"], serde_json::Value::Null);
    assert_eq!(cleared.body["enforceEmail"], false);
}

#[tokio::test]
async fn bad_settings_name_the_field_and_change_nothing() {
    let app = spawn_app().await;
    let answer = app
        .patch(
            "/admin/v1/sources/default/settings",
            json!({"enforceEmail": false, "sendAnonymous": "maybe"}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    assert_eq!(answer.body["error"]["field"], "sendAnonymous");
    let unknown = app
        .patch(
            "/admin/v1/sources/default/settings",
            json!({"enforceEmial": false}),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    assert_eq!(unknown.body["error"]["field"], "enforceEmial");
    let read = app.get("/admin/v1/sources/default/settings").await;
    assert_eq!(read.body["enforceEmail"], true, "nothing was saved");
}

#[tokio::test]
async fn settings_of_an_unknown_source_are_404() {
    let app = spawn_app().await;
    let answer = app.get("/admin/v1/sources/nope/settings").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
}
