use axum::http::{header, Method, StatusCode};

use super::spawn_app;

#[tokio::test]
async fn missing_key_is_refused_with_a_json_error() {
    let app = spawn_app().await;
    let answer = app.raw(Method::GET, "/admin/v1/sources", None, None).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.error_code(), "missing_api_key");
    assert!(answer.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Bearer"));
    assert!(answer.error_field().is_null());
    assert!(answer.headers.contains_key(header::WWW_AUTHENTICATE));
}

#[tokio::test]
async fn wrong_keys_are_refused() {
    let app = spawn_app().await;
    let wrong = [
        "Bearer pk_not_a_key_that_exists".to_owned(),
        // The right key under a scheme we do not take, and without a scheme.
        format!("Basic {}", app.key),
        app.key.clone(),
        // A token that is not a private key (a write key, say).
        "Bearer abcdef".to_owned(),
        format!("Bearer {}x", app.key),
    ];
    for authorization in wrong {
        let answer = app
            .raw(Method::GET, "/admin/v1/sources", Some(&authorization), None)
            .await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{authorization}");
        assert_eq!(answer.error_code(), "invalid_api_key");
        assert!(!answer.body.to_string().contains(&app.key[3..]));
    }
}

#[tokio::test]
async fn bearer_and_klaviyo_api_key_headers_both_work() {
    let app = spawn_app().await;
    for authorization in [
        format!("Bearer {}", app.key),
        format!("bearer {}", app.key),
        format!("Klaviyo-API-Key {}", app.key),
        format!("klaviyo-api-key {}", app.key),
    ] {
        let answer = app
            .raw(Method::GET, "/admin/v1/sources", Some(&authorization), None)
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{authorization}");
    }
}

#[tokio::test]
async fn a_deleted_key_is_refused_at_once() {
    let app = spawn_app().await;
    let created = app
        .post(
            "/admin/v1/api-keys",
            serde_json::json!({"name": "ci", "scopes": ["admin"]}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let ci_key = format!("Bearer {}", created.body["key"].as_str().unwrap());
    let ok = app
        .raw(Method::GET, "/admin/v1/stats", Some(&ci_key), None)
        .await;
    assert_eq!(ok.status, StatusCode::OK);

    assert_eq!(
        app.delete("/admin/v1/api-keys/ci").await.status,
        StatusCode::NO_CONTENT
    );
    let answer = app
        .raw(Method::GET, "/admin/v1/stats", Some(&ci_key), None)
        .await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.error_code(), "invalid_api_key");
}

#[tokio::test]
async fn every_admin_path_needs_a_key_even_unknown_ones() {
    let app = spawn_app().await;
    let cases = [
        (Method::GET, "/admin/v1/nothing-here"),
        (Method::GET, "/admin/v1/sources/default/keys/more"),
        (Method::PUT, "/admin/v1/sources"),
        (Method::POST, "/admin/v1/sources/default"),
        (Method::GET, "/admin/v1/events/stream"),
    ];
    for (method, uri) in &cases {
        let answer = app.raw(method.clone(), uri, None, None).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{method} {uri}");
    }
}

#[tokio::test]
async fn unknown_paths_and_methods_answer_in_the_error_format() {
    let app = spawn_app().await;
    let answer = app.get("/admin/v1/nothing-here").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.error_code(), "not_found");
    let answer = app.get("/admin/v1/sources/default/keys/more").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);

    let answer = app.call(Method::PUT, "/admin/v1/sources", None).await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answer.error_code(), "method_not_allowed");
    let answer = app
        .call(Method::GET, "/admin/v1/sources/default/disable", None)
        .await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
}
