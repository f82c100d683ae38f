//! Every `/api` route answers a failing request in the same JSON:API `errors[]` shape, with
//! the status codes of `error.rs`'s one mapping; so do wrong methods and unknown paths.

use axum::body::Body as HttpBody;
use axum::http::{header, Method, StatusCode};
use serde_json::json;

use super::{spawn, spawn_complete, Reply, TestApi};
use crate::route_scopes_tests::{concrete, API_ROUTES};

/// Asserts the shape: `errors[0]` with `id`, `status` (the response's), `code`, `title`,
/// `detail`, a `source` naming the pointer or parameter when the input is at fault, and the
/// JSON:API media type.
#[track_caller]
fn assert_error_shape(route: &str, reply: &Reply, status: StatusCode) {
    assert_eq!(reply.status, status, "{route}: {}", reply.body);
    assert_eq!(
        reply.headers[header::CONTENT_TYPE],
        "application/vnd.api+json",
        "{route}"
    );
    let errors = reply.body["errors"].as_array().expect("errors[]");
    assert_eq!(errors.len(), 1, "{route}: {}", reply.body);
    let error = &errors[0];
    assert_eq!(error["status"], status.as_u16(), "{route}: {}", reply.body);
    for key in ["id", "code", "title", "detail"] {
        assert!(
            error[key].as_str().is_some_and(|v| !v.is_empty()),
            "{route}: no {key} in {}",
            reply.body
        );
    }
    if status == StatusCode::BAD_REQUEST {
        let source = &error["source"];
        let named = source["pointer"]
            .as_str()
            .or(source["parameter"].as_str())
            .is_some_and(|s| !s.is_empty());
        assert!(named, "{route}: no source in {}", reply.body);
    }
}

/// A request that must fail on this route, and the status it must fail with: an unknown id
/// is 404, a bad filter on a listing is 400 naming `filter`, a body of the wrong type is 400
/// pointing into the body.
async fn failing_request(
    api: &TestApi,
    method: &str,
    pattern: &str,
) -> (String, Reply, StatusCode) {
    let path = format!("/api{}", concrete(pattern));
    let method: Method = method.parse().unwrap();
    let has_id = pattern.contains('{');
    if method == Method::GET || (method == Method::DELETE && !pattern.contains("relationships")) {
        if has_id {
            let reply = api
                .send(
                    api.request(method.clone(), &path)
                        .body(HttpBody::empty())
                        .unwrap(),
                )
                .await;
            return (format!("{method} {path}"), reply, StatusCode::NOT_FOUND);
        }
        let uri = format!("{path}?filter=nonsense(");
        let reply = api.get(&uri).await;
        return (format!("{method} {uri}"), reply, StatusCode::BAD_REQUEST);
    }
    let body = json!({"data": {"attributes": {}}});
    let reply = api.write(method.clone(), &path, body).await;
    (format!("{method} {path}"), reply, StatusCode::BAD_REQUEST)
}

/// A body of another resource type: 409 `conflict`, as JSON:API has it.
async fn wrong_type_request(api: &TestApi, method: &str, pattern: &str) -> (String, Reply) {
    let path = format!("/api{}", concrete(pattern));
    let method: Method = method.parse().unwrap();
    let mut body = json!({"data": {"type": "no-such-type"}});
    if method == Method::PATCH {
        body["data"]["id"] = json!("X1");
    }
    if pattern.contains("/relationships/") {
        body = json!({"data": [{"type": "no-such-type", "id": "P1"}]});
    }
    let reply = api.write(method.clone(), &path, body).await;
    (format!("{method} {path}"), reply)
}

#[tokio::test]
async fn every_route_answers_failures_in_the_jsonapi_error_shape() {
    let api = spawn_complete().await;
    for (method, pattern, _) in API_ROUTES {
        let (route, reply, status) = failing_request(&api, method, pattern).await;
        assert_error_shape(&route, &reply, status);
        if *method == "POST" || *method == "PATCH" || pattern.contains("/relationships/") {
            let (route, reply) = wrong_type_request(&api, method, pattern).await;
            assert_error_shape(&route, &reply, StatusCode::CONFLICT);
        }
    }
}

#[tokio::test]
async fn wrong_methods_and_unknown_paths_answer_in_the_same_shape() {
    let api = spawn().await;
    for (_, pattern, _) in API_ROUTES {
        let path = format!("/api{}", concrete(pattern));
        let reply = api
            .send(
                api.request(Method::PUT, &path)
                    .header(header::CONTENT_TYPE, "application/vnd.api+json")
                    .body(HttpBody::from("{}"))
                    .unwrap(),
            )
            .await;
        assert_error_shape(
            &format!("PUT {path}"),
            &reply,
            StatusCode::METHOD_NOT_ALLOWED,
        );
    }
    for path in ["/api/campaigns", "/api/profiles/X1/nothing", "/api"] {
        let reply = api.get(path).await;
        assert_error_shape(&format!("GET {path}"), &reply, StatusCode::NOT_FOUND);
    }
}
