use axum::http::{Method, StatusCode};
use serde_json::json;

use super::spawn_app;

#[tokio::test]
async fn create_list_and_delete_api_keys() {
    let app = spawn_app().await;
    let created = app
        .post("/admin/v1/api-keys", json!({"name": "console"}))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let key = created.body["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("pk_"));
    assert_eq!(created.body["apiKey"]["name"], "console");
    assert_eq!(created.body["apiKey"]["prefix"], format!("{}…", &key[..7]));

    // The new key works.
    let with_new = app
        .raw(
            Method::GET,
            "/admin/v1/api-keys",
            Some(&format!("Klaviyo-API-Key {key}")),
            None,
        )
        .await;
    assert_eq!(with_new.status, StatusCode::OK);
    let names: Vec<_> = with_new.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["test", "console"]);
    // Listings carry prefixes only.
    let listed = with_new.body.to_string();
    assert!(!listed.contains(&key));
    assert!(!listed.contains(&app.key));

    assert_eq!(
        app.delete("/admin/v1/api-keys/console").await.status,
        StatusCode::NO_CONTENT
    );
    let gone = app.delete("/admin/v1/api-keys/console").await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(gone.error_code(), "not_found");
    assert_eq!(
        app.get("/admin/v1/api-keys").await.body["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn api_key_errors() {
    let app = spawn_app().await;
    let duplicate = app
        .post("/admin/v1/api-keys", json!({"name": "test"}))
        .await;
    assert_eq!(duplicate.status, StatusCode::CONFLICT);
    assert_eq!(duplicate.error_code(), "conflict");

    for body in [
        json!({}),
        json!({"name": "no spaces"}),
        json!({"name": ["x"]}),
    ] {
        let answer = app.post("/admin/v1/api-keys", body.clone()).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(answer.error_field(), "name", "{body}");
    }
}
