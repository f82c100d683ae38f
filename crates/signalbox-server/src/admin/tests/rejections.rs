use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use base64::Engine;
use serde_json::json;

use super::{into_answer, spawn_app};

#[tokio::test]
async fn lists_what_ingest_refused() {
    let app = spawn_app().await;
    let key = app.store().current_write_key("default").await.unwrap();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{}:", key.expose()));
    let request = Request::builder()
        .method(Method::POST)
        .uri("/v1/track")
        .header(header::AUTHORIZATION, format!("Basic {basic}"))
        .body(Body::from(json!({"userId": "u1"}).to_string()))
        .unwrap();
    let refused = into_answer(app.send(request).await).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);

    let answer = app.get("/admin/v1/rejections").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let rejection = &answer.body["data"][0];
    assert_eq!(rejection["code"], "missing_event");
    assert_eq!(rejection["source"], "default");
    assert!(!rejection["message"].as_str().unwrap().is_empty());
    assert!(rejection["receivedAt"].is_string());
    assert_eq!(rejection["payload"]["userId"], "u1");
    assert!(answer.body["next"].is_null());
}

#[tokio::test]
async fn a_payload_that_is_not_json_is_shown_as_text() {
    let app = spawn_app().await;
    app.reject("default", "{\"userId\": \"u1\", \"trunc").await;
    let answer = app.get("/admin/v1/rejections").await;
    assert_eq!(
        answer.body["data"][0]["payload"],
        "{\"userId\": \"u1\", \"trunc"
    );
}

#[tokio::test]
async fn pages_and_source_filter() {
    let app = spawn_app().await;
    app.post("/admin/v1/sources", json!({"name": "web"})).await;
    for i in 0..3 {
        app.reject("default", &json!({"n": i}).to_string()).await;
    }
    app.reject("web", &json!({"n": "web"}).to_string()).await;

    let page1 = app.get("/admin/v1/rejections?source=default&limit=2").await;
    let data = page1.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[0]["payload"]["n"], 0);
    assert_eq!(page1.body["next"], data[1]["id"]);

    let page2 = app
        .get(&format!(
            "/admin/v1/rejections?source=default&limit=2&after={}",
            page1.body["next"]
        ))
        .await;
    let data = page2.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["payload"]["n"], 2);
    assert!(page2.body["next"].is_null());

    let web = app.get("/admin/v1/rejections?source=web").await;
    assert_eq!(web.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(web.body["data"][0]["source"], "web");
}

#[tokio::test]
async fn bad_parameters() {
    let app = spawn_app().await;
    for (query, status, field) in [
        ("limit=0", StatusCode::BAD_REQUEST, "limit"),
        ("after=x", StatusCode::BAD_REQUEST, "after"),
        ("source=nope", StatusCode::NOT_FOUND, "source"),
    ] {
        let answer = app.get(&format!("/admin/v1/rejections?{query}")).await;
        assert_eq!(answer.status, status, "{query}");
        assert_eq!(answer.error_field(), field, "{query}");
    }
}
