use axum::http::StatusCode;
use jiff::{SignedDuration, Timestamp};
use serde_json::{json, Value};

use super::spawn_app;

fn seqs(body: &Value) -> Vec<i64> {
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["seq"].as_i64().unwrap())
        .collect()
}

#[tokio::test]
async fn lists_stored_calls_oldest_first_with_their_payload() {
    let app = spawn_app().await;
    let seqs_in = app.append("default", &["m1", "m2", "m3"]).await;
    let answer = app.get("/admin/v1/events").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(seqs(&answer.body), seqs_in);
    assert!(answer.body["next"].is_null());

    let first = &answer.body["data"][0];
    assert_eq!(first["source"], "default");
    assert!(first["sourceId"].is_i64());
    assert_eq!(first["type"], "track");
    assert_eq!(first["messageId"], "m1");
    let received: Timestamp = first["receivedAt"].as_str().unwrap().parse().unwrap();
    assert!(received <= Timestamp::now());
    // The payload is JSON, not a string holding JSON.
    assert_eq!(first["payload"]["event"], "Event m1");
    assert_eq!(first["payload"]["userId"], "u1");
}

#[tokio::test]
async fn pages_follow_the_next_cursor() {
    let app = spawn_app().await;
    let all = app.append("default", &["a", "b", "c", "d", "e"]).await;

    let page1 = app.get("/admin/v1/events?limit=2").await;
    assert_eq!(seqs(&page1.body), all[..2]);
    assert_eq!(page1.body["next"], all[1]);

    let page2 = app
        .get(&format!(
            "/admin/v1/events?limit=2&after={}",
            page1.body["next"]
        ))
        .await;
    assert_eq!(seqs(&page2.body), all[2..4]);
    assert_eq!(page2.body["next"], all[3]);

    let page3 = app
        .get(&format!(
            "/admin/v1/events?limit=2&after={}",
            page2.body["next"]
        ))
        .await;
    assert_eq!(seqs(&page3.body), all[4..]);
    assert!(page3.body["next"].is_null());
}

#[tokio::test]
async fn a_full_last_page_is_followed_by_an_empty_one() {
    let app = spawn_app().await;
    let all = app.append("default", &["a", "b"]).await;
    let page1 = app.get("/admin/v1/events?limit=2").await;
    assert_eq!(page1.body["next"], all[1]);
    let page2 = app
        .get(&format!("/admin/v1/events?limit=2&after={}", all[1]))
        .await;
    assert_eq!(page2.body, json!({"data": [], "next": null}));
}

#[tokio::test]
async fn filters_by_source_and_time() {
    let app = spawn_app().await;
    app.post("/admin/v1/sources", json!({"name": "web"})).await;
    let t0: Timestamp = "2024-05-01T12:00:00Z".parse().unwrap();
    let later = t0 + SignedDuration::from_hours(1);
    app.append_at("default", &["d-old"], t0).await;
    app.append_at("web", &["w-old"], t0).await;
    app.append_at("default", &["d-new"], later).await;
    app.append_at("web", &["w-new"], later).await;

    let ids = |body: &Value| -> Vec<String> {
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["messageId"].as_str().unwrap().to_owned())
            .collect()
    };
    let web = app.get("/admin/v1/events?source=web").await;
    assert_eq!(ids(&web.body), ["w-old", "w-new"]);
    assert!(web.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["source"] == "web"));

    let recent = app.get("/admin/v1/events?since=2024-05-01T12:30:00Z").await;
    assert_eq!(ids(&recent.body), ["d-new", "w-new"]);
    let exact = app
        .get("/admin/v1/events?since=2024-05-01T13:00:00%2B00:00")
        .await;
    assert_eq!(ids(&exact.body), ["d-new", "w-new"]);

    let both = app
        .get("/admin/v1/events?source=default&since=2024-05-01T12:30:00Z")
        .await;
    assert_eq!(ids(&both.body), ["d-new"]);
}

#[tokio::test]
async fn calls_of_a_deleted_source_stay_listed_without_a_name() {
    let app = spawn_app().await;
    app.post("/admin/v1/sources", json!({"name": "web"})).await;
    app.append("web", &["w1"]).await;
    app.delete("/admin/v1/sources/web").await;
    let answer = app.get("/admin/v1/events").await;
    assert_eq!(answer.body["data"][0]["messageId"], "w1");
    assert!(answer.body["data"][0]["source"].is_null());
}

#[tokio::test]
async fn bad_parameters_are_refused_naming_them() {
    let app = spawn_app().await;
    let cases = [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("after=-1", "after"),
        ("after=x", "after"),
        ("since=yesterday", "since"),
        ("since=2024-05-01", "since"),
    ];
    for (query, field) in cases {
        let answer = app.get(&format!("/admin/v1/events?{query}")).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(answer.error_code(), "invalid_field", "{query}");
        assert_eq!(answer.error_field(), field, "{query}");
    }
    let answer = app.get("/admin/v1/events?limit=1000").await;
    assert_eq!(answer.status, StatusCode::OK);

    let unknown = app.get("/admin/v1/events?source=nope").await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.error_field(), "source");
}

#[tokio::test]
async fn default_page_is_a_hundred() {
    let app = spawn_app().await;
    let ids: Vec<String> = (0..150).map(|i| format!("m{i}")).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let all = app.append("default", &ids).await;
    let page = app.get("/admin/v1/events").await;
    assert_eq!(page.body["data"].as_array().unwrap().len(), 100);
    assert_eq!(page.body["next"], all[99]);
}
