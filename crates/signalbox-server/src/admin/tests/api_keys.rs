use axum::http::{Method, StatusCode};
use serde_json::json;

use super::spawn_app;

#[tokio::test]
async fn create_list_and_delete_api_keys() {
    let app = spawn_app().await;
    let created = app
        .post(
            "/admin/v1/api-keys",
            json!({"name": "console", "scopes": ["admin"]}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let key = created.body["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("pk_"));
    assert_eq!(created.body["apiKey"]["name"], "console");
    assert_eq!(created.body["apiKey"]["scopes"], json!(["admin"]));
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
    assert_eq!(with_new.body["data"][1]["scopes"], json!(["admin"]));
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

#[tokio::test]
async fn a_key_made_without_scopes_has_full_access_but_not_the_admin_api() {
    let app = spawn_app().await;
    let created = app.post("/admin/v1/api-keys", json!({"name": "sdk"})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["apiKey"]["scopes"], json!(["full"]));
    let sdk = format!("Bearer {}", created.body["key"].as_str().unwrap());
    for (method, uri) in [
        (Method::GET, "/admin/v1/sources"),
        (Method::GET, "/admin/v1/api-keys"),
        (Method::POST, "/admin/v1/sources/default/rotate-key"),
        (Method::GET, "/admin/v1/events"),
        (Method::DELETE, "/admin/v1/api-keys/test"),
    ] {
        let answer = app.raw(method.clone(), uri, Some(&sdk), None).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{method} {uri}");
        assert_eq!(answer.error_code(), "permission_denied", "{method} {uri}");
        assert!(
            answer.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("'admin'"),
            "{}",
            answer.body
        );
    }
    // Nothing was deleted or rotated.
    assert_eq!(
        app.get("/admin/v1/api-keys").await.body["data"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let created = app
        .post(
            "/admin/v1/api-keys",
            json!({"name": "ops", "scopes": ["admin", "profiles:read,events:write"]}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(
        created.body["apiKey"]["scopes"],
        json!(["admin", "events:write", "profiles:read"])
    );
    let ops = format!("Bearer {}", created.body["key"].as_str().unwrap());
    let answer = app
        .raw(Method::GET, "/admin/v1/sources", Some(&ops), None)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
}

#[tokio::test]
async fn unknown_scopes_are_refused_naming_the_scope_and_the_valid_ones() {
    let app = spawn_app().await;
    let answer = app
        .post(
            "/admin/v1/api-keys",
            json!({"name": "sdk", "scopes": ["profiles:read", "profiles:raed"]}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
    assert_eq!(answer.error_field(), "scopes");
    let message = answer.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("'profiles:raed'"), "{message}");
    assert!(
        message.contains("profiles:read, profiles:write"),
        "{message}"
    );
    assert!(message.contains("full, admin"), "{message}");

    for scopes in [json!("admin"), json!([1]), json!([])] {
        let answer = app
            .post(
                "/admin/v1/api-keys",
                json!({"name": "sdk", "scopes": scopes}),
            )
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{scopes}");
        assert_eq!(answer.error_field(), "scopes", "{scopes}");
    }
    assert_eq!(
        app.get("/admin/v1/api-keys").await.body["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}
