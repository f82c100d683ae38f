use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use base64::Engine;
use serde_json::json;

use super::{into_answer, spawn_app};

#[tokio::test]
async fn create_shows_the_key_once_and_listings_redact_it() {
    let app = spawn_app().await;
    let created = app.post("/admin/v1/sources", json!({"name": "web"})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let key = created.body["writeKey"].as_str().unwrap().to_owned();
    assert!(key.len() >= 32);
    let source = &created.body["source"];
    assert_eq!(source["name"], "web");
    assert_eq!(source["status"], "enabled");
    assert_eq!(source["keysInGrace"], 0);
    assert!(source["createdAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(source["writeKey"], format!("{}…", &key[..4]));

    let list = app.get("/admin/v1/sources").await;
    assert_eq!(list.status, StatusCode::OK);
    let names: Vec<_> = list.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["default", "web"]);
    assert!(!list.body.to_string().contains(&key));

    let one = app.get("/admin/v1/sources/web").await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.body["name"], "web");
    assert_eq!(one.body["id"], source["id"]);
    assert!(!one.body.to_string().contains(&key));
}

#[tokio::test]
async fn a_created_source_takes_calls_at_once() {
    let app = spawn_app().await;
    let created = app.post("/admin/v1/sources", json!({"name": "web"})).await;
    let key = created.body["writeKey"].as_str().unwrap();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{key}:"));
    let request = Request::builder()
        .method(Method::POST)
        .uri("/v1/track")
        .header(header::AUTHORIZATION, format!("Basic {basic}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({"userId": "u1", "event": "Signed Up"}).to_string(),
        ))
        .unwrap();
    let answer = into_answer(app.send(request).await).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);

    let events = app.get("/admin/v1/events?source=web").await;
    assert_eq!(events.body["data"][0]["payload"]["event"], "Signed Up");
}

#[tokio::test]
async fn create_refuses_bad_input_naming_the_field() {
    let app = spawn_app().await;
    let cases = [
        (json!({}).to_string(), "invalid_field", json!("name")),
        (String::new(), "invalid_field", json!("name")),
        (
            json!({"name": null}).to_string(),
            "invalid_field",
            json!("name"),
        ),
        (
            json!({"name": 7}).to_string(),
            "invalid_field",
            json!("name"),
        ),
        (
            json!({"name": ""}).to_string(),
            "invalid_field",
            json!("name"),
        ),
        (
            json!({"name": "tab\there"}).to_string(),
            "invalid_field",
            json!("name"),
        ),
        (
            json!({"name": "-- !! --"}).to_string(),
            "invalid_field",
            json!("name"),
        ),
        (
            json!({"name": "x".repeat(101)}).to_string(),
            "invalid_field",
            json!("name"),
        ),
        (
            json!({"name": "ok", "nmae": "typo"}).to_string(),
            "invalid_field",
            json!("nmae"),
        ),
        ("{\"name\":".to_owned(), "invalid_body", json!(null)),
        (json!(["web"]).to_string(), "invalid_body", json!(null)),
    ];
    for (body, code, field) in cases {
        let answer = app
            .raw(
                Method::POST,
                "/admin/v1/sources",
                Some(&app.bearer()),
                Some(&body),
            )
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(answer.error_code(), code, "{body}");
        assert_eq!(answer.error_field(), &field, "{body}");
    }
    assert_eq!(
        app.get("/admin/v1/sources").await.body["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn create_twice_is_a_conflict() {
    let app = spawn_app().await;
    let answer = app
        .post("/admin/v1/sources", json!({"name": "default"}))
        .await;
    assert_eq!(answer.status, StatusCode::CONFLICT);
    assert_eq!(answer.error_code(), "conflict");
    assert!(answer.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("default"));
}

#[tokio::test]
async fn get_unknown_source_is_404() {
    let app = spawn_app().await;
    for (method, uri) in [
        (Method::GET, "/admin/v1/sources/nope"),
        (Method::DELETE, "/admin/v1/sources/nope"),
        (Method::POST, "/admin/v1/sources/nope/disable"),
        (Method::POST, "/admin/v1/sources/nope/enable"),
        (Method::POST, "/admin/v1/sources/nope/rotate-key"),
    ] {
        let answer = app.call(method.clone(), uri, None).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{method} {uri}");
        assert_eq!(answer.error_code(), "not_found");
    }
}

#[tokio::test]
async fn rotate_key_issues_a_new_key_and_keeps_the_old_one_in_grace() {
    let app = spawn_app().await;
    let old = app.store().current_write_key("default").await.unwrap();

    let rotated = app
        .post(
            "/admin/v1/sources/default/rotate-key",
            json!({"grace": "24h"}),
        )
        .await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);
    let new = rotated.body["writeKey"].as_str().unwrap();
    assert_ne!(new, old.expose());
    assert_eq!(
        new,
        app.store()
            .current_write_key("default")
            .await
            .unwrap()
            .expose()
    );
    assert_eq!(rotated.body["source"]["keysInGrace"], 1);
    assert_eq!(
        rotated.body["source"]["writeKey"],
        format!("{}…", &new[..4])
    );

    // No body: the default grace (24h) applies.
    let again = app
        .call(Method::POST, "/admin/v1/sources/default/rotate-key", None)
        .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body["source"]["keysInGrace"], 2);

    // A zero grace ends every older key now.
    let now = app
        .post(
            "/admin/v1/sources/default/rotate-key",
            json!({"grace": "0s"}),
        )
        .await;
    assert_eq!(now.status, StatusCode::OK);
    assert_eq!(now.body["source"]["keysInGrace"], 0);
}

#[tokio::test]
async fn rotate_key_refuses_a_bad_grace() {
    let app = spawn_app().await;
    for body in [
        json!({"grace": "soon"}),
        json!({"grace": "-1h"}),
        json!({"grace": 3600}),
        json!({"grce": "1h"}),
    ] {
        let answer = app
            .post("/admin/v1/sources/default/rotate-key", body.clone())
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(answer.error_code(), "invalid_field");
        let field = answer.error_field().as_str().unwrap();
        assert!(field == "grace" || field == "grce", "{body}");
    }
    let source = app.get("/admin/v1/sources/default").await;
    assert_eq!(source.body["keysInGrace"], 0);
}

#[tokio::test]
async fn disable_and_enable() {
    let app = spawn_app().await;
    let disabled = app
        .call(Method::POST, "/admin/v1/sources/default/disable", None)
        .await;
    assert_eq!(disabled.status, StatusCode::OK);
    assert_eq!(disabled.body["status"], "disabled");
    assert_eq!(
        app.get("/admin/v1/sources/default").await.body["status"],
        "disabled"
    );

    let enabled = app
        .call(Method::POST, "/admin/v1/sources/default/enable", None)
        .await;
    assert_eq!(enabled.status, StatusCode::OK);
    assert_eq!(enabled.body["status"], "enabled");
}

#[tokio::test]
async fn delete_source() {
    let app = spawn_app().await;
    app.post("/admin/v1/sources", json!({"name": "web"})).await;
    let deleted = app.delete("/admin/v1/sources/web").await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert!(deleted.body.is_null());
    assert_eq!(
        app.get("/admin/v1/sources/web").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.delete("/admin/v1/sources/web").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_source_named_as_people_name_sites_gets_a_slug_and_answers_to_both() {
    let app = spawn_app().await;
    let answer = app
        .post("/admin/v1/sources", json!({"name": "Test website"}))
        .await;
    assert!(answer.status.is_success(), "{:?}", answer.body);
    let source = &answer.body["source"];
    assert_eq!(source["name"], "test-website", "{:?}", answer.body);
    assert_eq!(source["displayName"], "Test website");
    for path in [
        "/admin/v1/sources/test-website",
        "/admin/v1/sources/Test%20website",
    ] {
        let got = app.get(path).await;
        assert_eq!(got.status, StatusCode::OK, "{path}: {:?}", got.body);
    }
}
