//! Every route of the Tracking API, its methods and its HTTP surroundings (CORS, health,
//! metrics, the analytics.js settings).

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, track};

/// A valid message for each single-message route.
fn valid_single(kind: &str) -> Value {
    match kind {
        "track" => json!({"userId": "u1", "event": "Product Viewed", "properties": {"sku": "A"}}),
        "identify" => json!({"userId": "u1", "traits": {"email": "ada@example.com"}}),
        "page" => json!({"anonymousId": "a1", "name": "Home", "properties": {"path": "/"}}),
        "screen" => json!({"userId": "u1", "name": "Main"}),
        "group" => json!({"userId": "u1", "groupId": "g1", "traits": {"name": "Acme"}}),
        "alias" => json!({"userId": "u1", "previousId": "a1"}),
        other => panic!("no such kind {other}"),
    }
}

const KINDS: [&str; 6] = ["track", "identify", "page", "screen", "group", "alias"];

#[tokio::test]
async fn every_single_message_route_stores_its_call_type() {
    let app = spawn_app().await;
    for kind in KINDS {
        app.post_json(&format!("/v1/{kind}"), &valid_single(kind))
            .await
            .assert_success();
    }
    let calls = app.calls().await;
    let kinds: Vec<&str> = calls.iter().map(|c| c.kind.as_str()).collect();
    assert_eq!(kinds, KINDS);
    for (call, payload) in calls.iter().zip(app.export().await) {
        assert_eq!(payload["type"], call.kind.as_str());
        assert_eq!(call.source_id, app.source.id);
    }
}

#[tokio::test]
async fn the_path_decides_the_type_of_a_single_message() {
    let app = spawn_app().await;
    let mut body = valid_single("identify");
    body["type"] = json!("track");
    app.post_json("/v1/identify", &body).await.assert_success();
    assert_eq!(app.export().await[0]["type"], "identify");
}

#[tokio::test]
async fn batch_and_import_store_every_message() {
    let app = spawn_app().await;
    for route in ["/v1/batch", "/v1/import"] {
        let body = json!({"batch": [
            track(&format!("{route}-1")),
            {"type": "identify", "userId": "u1", "messageId": format!("{route}-2")},
        ]});
        app.post_json(route, &body).await.assert_success();
    }
    let ids: Vec<String> = app
        .calls()
        .await
        .into_iter()
        .map(|c| c.message_id)
        .collect();
    assert_eq!(
        ids,
        ["/v1/batch-1", "/v1/batch-2", "/v1/import-1", "/v1/import-2"]
    );
}

#[tokio::test]
async fn browser_routes_take_text_plain_posts_with_the_key_in_the_body() {
    let app = spawn_app().await;
    let key = app.write_key.expose();
    for kind in KINDS {
        let mut body = valid_single(kind);
        body["writeKey"] = json!(key);
        let route = format!("/v1/{}", &kind[..1]);
        app.post(&route, body.to_string(), &[("content-type", "text/plain")])
            .await
            .assert_success();
    }
    let batch = json!({"writeKey": key, "batch": [track("b-1"), track("b-2")]});
    app.post(
        "/v1/b",
        batch.to_string(),
        &[("content-type", "text/plain")],
    )
    .await
    .assert_success();

    let calls = app.calls().await;
    let kinds: Vec<&str> = calls.iter().map(|c| c.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["track", "identify", "page", "screen", "group", "alias", "track", "track"]
    );
}

/// A message whose standard base64 has `+`, `/` and padding, so that every alphabet and
/// padding choice gives a different string.
fn awkward_message(writekey: &str, id: &str) -> (Value, String) {
    for filler in 0..64 {
        let body = json!({
            "userId": "u1", "event": "Searched", "messageId": id, "writeKey": writekey,
            "properties": {"query": format!("{}{}", "~~??>>a".repeat(3), "a".repeat(filler))}
        });
        let standard = STANDARD.encode(body.to_string());
        if standard.contains('+') && standard.contains('/') && standard.ends_with('=') {
            return (body, standard);
        }
    }
    panic!("no filler gives +, / and padding");
}

#[tokio::test]
async fn browser_get_routes_take_base64_data_in_any_alphabet_and_padding() {
    let app = spawn_app().await;
    let key = app.write_key.expose().to_owned();
    let engines = [
        ("standard", STANDARD),
        ("standard-no-pad", STANDARD_NO_PAD),
        ("url-safe", URL_SAFE),
        ("url-safe-no-pad", URL_SAFE_NO_PAD),
    ];
    for (name, engine) in engines {
        let (body, _) = awkward_message(&key, name);
        let data = engine.encode(body.to_string());
        let response = app
            .client
            .get(app.url("/v1/t"))
            .query(&[("data", &data)])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{name}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer, json!({"success": true}), "{name}");
    }
    let ids: Vec<String> = app
        .calls()
        .await
        .into_iter()
        .map(|c| c.message_id)
        .collect();
    assert_eq!(
        ids,
        ["standard", "standard-no-pad", "url-safe", "url-safe-no-pad"]
    );
    let stored = &app.export().await[0];
    assert!(stored["properties"]["query"]
        .as_str()
        .unwrap()
        .starts_with("~~??>>a"));
}

#[tokio::test]
async fn every_browser_get_route_stores_its_call_type() {
    let app = spawn_app().await;
    for (i, kind) in KINDS.into_iter().enumerate() {
        let mut body = valid_single(kind);
        body["writeKey"] = json!(app.write_key.expose());
        // Alternate alphabets and padding across the routes.
        let data = if i % 2 == 0 {
            STANDARD.encode(body.to_string())
        } else {
            URL_SAFE_NO_PAD.encode(body.to_string())
        };
        let response = app
            .client
            .get(app.url(&format!("/v1/{}", &kind[..1])))
            .query(&[("data", &data)])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{kind}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer, json!({"success": true}), "{kind}");
    }
    let calls = app.calls().await;
    let kinds: Vec<&str> = calls.iter().map(|c| c.kind.as_str()).collect();
    assert_eq!(kinds, KINDS);
}

#[tokio::test]
async fn browser_get_route_takes_standard_base64_left_unescaped_in_the_query() {
    // `btoa(json)` pasted into a URL: `+` and `=` are not percent-encoded.
    let app = spawn_app().await;
    let (_, standard) = awkward_message(app.write_key.expose(), "raw");
    app.get(&format!("/v1/t?data={standard}"), &[])
        .await
        .assert_success();
    assert_eq!(app.calls().await[0].message_id, "raw");
}

#[tokio::test]
async fn browser_get_batch_route_takes_base64_data() {
    let app = spawn_app().await;
    let body = json!({"writeKey": app.write_key.expose(), "batch": [track("g-1"), track("g-2")]});
    let data = URL_SAFE_NO_PAD.encode(body.to_string());
    app.get(&format!("/v1/b?data={data}"), &[])
        .await
        .assert_success();
    assert_eq!(app.calls().await.len(), 2);
}

#[tokio::test]
async fn browser_get_route_with_bad_base64_is_an_error() {
    let app = spawn_app().await;
    let message = app
        .get("/v1/t?data=%%%not-base64%%%", &[])
        .await
        .assert_error(400, "invalid_json");
    assert!(message.contains("data"), "{message}");
    let message = app
        .get("/v1/t", &[])
        .await
        .assert_error(400, "invalid_json");
    assert!(message.contains("JSON"), "{message}");
}

#[tokio::test]
async fn pixel_route_answers_a_gif_and_stores_the_call() {
    let app = spawn_app().await;
    let body = json!({"writeKey": app.write_key.expose(), "userId": "u1", "event": "Email Opened",
                      "messageId": "pixel-1"});
    let data = URL_SAFE_NO_PAD.encode(body.to_string());
    let answer = app.get(&format!("/v1/pixel/track?data={data}"), &[]).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("content-type"), Some("image/gif"));
    assert!(answer.bytes.starts_with(b"GIF89a"), "{:?}", answer.bytes);
    let calls = app.calls().await;
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].kind.as_str(), "track");
    assert_eq!(calls[0].message_id, "pixel-1");

    let unknown = app.get(&format!("/v1/pixel/bogus?data={data}"), &[]).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    app.get("/v1/pixel/track", &[])
        .await
        .assert_error(400, "invalid_json");
}

#[tokio::test]
async fn put_works_like_post() {
    let app = spawn_app().await;
    let auth = app.basic_auth();
    let headers = [
        ("content-type", "application/json"),
        ("authorization", auth.as_str()),
    ];
    app.send(
        Method::PUT,
        "/v1/track",
        valid_single("track").to_string(),
        &headers,
    )
    .await
    .assert_success();
    let batch = json!({"batch": [track("put-1")]});
    app.send(Method::PUT, "/v1/batch", batch.to_string(), &headers)
        .await
        .assert_success();
    assert_eq!(app.calls().await.len(), 2);
}

#[tokio::test]
async fn a_trailing_slash_is_ignored() {
    let app = spawn_app().await;
    app.post_json("/v1/track/", &valid_single("track"))
        .await
        .assert_success();
    app.post_json("/v1/batch/", &json!({"batch": [track("slash-1")]}))
        .await
        .assert_success();
    app.get("/healthz/", &[]).await;
    assert_eq!(app.calls().await.len(), 2);
}

#[tokio::test]
async fn cors_preflight_is_answered_for_any_origin() {
    let app = spawn_app().await;
    for route in ["/v1/batch", "/v1/t", "/v1/track"] {
        let answer = app
            .send(
                Method::OPTIONS,
                route,
                Vec::new(),
                &[
                    ("origin", "https://shop.example"),
                    ("access-control-request-method", "POST"),
                    (
                        "access-control-request-headers",
                        "content-type,authorization",
                    ),
                ],
            )
            .await;
        assert!(answer.status.is_success(), "{route}: {}", answer.status);
        assert_eq!(answer.header("access-control-allow-origin"), Some("*"));
        let methods = answer.header("access-control-allow-methods").unwrap();
        assert!(methods == "*" || methods.contains("POST"), "{methods}");
        let headers = answer.header("access-control-allow-headers").unwrap();
        assert!(
            headers == "*" || headers.contains("authorization"),
            "{headers}"
        );
    }
    assert!(app.calls().await.is_empty());
}

#[tokio::test]
async fn cors_headers_are_on_successes_and_errors() {
    let app = spawn_app().await;
    let origin = ("origin", "https://shop.example");
    let key = app.write_key.expose();
    let mut body = valid_single("track");
    body["writeKey"] = json!(key);
    let ok = app
        .post(
            "/v1/t",
            body.to_string(),
            &[origin, ("content-type", "text/plain")],
        )
        .await;
    ok.assert_success();
    assert_eq!(ok.header("access-control-allow-origin"), Some("*"));

    let refused = app
        .post("/v1/t", valid_single("track").to_string(), &[origin])
        .await;
    refused.assert_error(401, "missing_write_key");
    assert_eq!(refused.header("access-control-allow-origin"), Some("*"));
}

#[tokio::test]
async fn settings_name_the_write_key_and_this_host_as_api_host() {
    let app = spawn_app().await;
    let key = app.write_key.expose();
    let answer = app.get(&format!("/v1/projects/{key}/settings"), &[]).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let segment = &answer.body["integrations"]["Segment.io"];
    assert_eq!(segment["apiKey"], key);
    assert_eq!(segment["apiHost"], format!("{}/v1", app.addr));
}

#[tokio::test]
async fn settings_of_an_unknown_key_are_refused() {
    let app = spawn_app().await;
    app.get("/v1/projects/not-a-key/settings", &[])
        .await
        .assert_error(401, "unknown_write_key");
}

#[tokio::test]
async fn healthz_reports_the_last_sequence_number() {
    let app = spawn_app().await;
    let answer = app.get("/healthz", &[]).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, json!({"status": "ok", "last_seq": 0}));
    app.post_batch(&json!({"batch": [track("h-1"), track("h-2")]}))
        .await
        .assert_success();
    let answer = app.get("/healthz", &[]).await;
    assert_eq!(answer.body, json!({"status": "ok", "last_seq": 2}));
}

#[tokio::test]
async fn metrics_expose_ingest_counters_and_histograms() {
    let app = spawn_app().await;
    app.post_batch(&json!({"batch": [
        track("m-1"),
        track("m-1"),
        {"type": "track", "userId": "u1"},
    ]}))
    .await
    .assert_success();
    app.post(
        "/v1/batch",
        "{\"batch\": []}",
        &[("authorization", "Basic bm9wZTo=")],
    )
    .await
    .assert_error(401, "unknown_write_key");

    let text = app.metrics().await;
    let has = |needle: &str| {
        text.lines()
            .any(|l| !l.starts_with('#') && l.contains(needle))
    };
    assert!(has("signalbox_events_accepted_total"), "{text}");
    assert!(
        has("signalbox_events_rejected_total{code=\"missing_event\"}"),
        "{text}"
    );
    assert!(has("signalbox_events_deduplicated_total"), "{text}");
    assert!(has("signalbox_batch_messages_bucket"), "{text}");
    assert!(has("signalbox_commit_seconds_bucket"), "{text}");
    // The dedupe index's memory, which nothing in its engine bounds.
    assert!(has("signalbox_dedupe_index_write_buffer_bytes"), "{text}");
    assert!(has("signalbox_dedupe_index_pending_flushes"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("signalbox_requests_refused_total")
                && l.contains("code=\"unknown_write_key\"")
                && l.contains("status=\"401\"")),
        "{text}"
    );
}

#[tokio::test]
async fn a_repeated_data_parameter_is_refused_in_the_api_error_shape() {
    let app = spawn_app().await;
    for route in [
        "/v1/t?data=e30&data=e30",
        "/v1/pixel/track?data=e30&data=e30",
    ] {
        let message = app.get(route, &[]).await.assert_error(400, "invalid_json");
        assert!(message.contains("data"), "{message}");
    }
}

#[tokio::test]
async fn an_unsupported_method_is_refused() {
    let app = spawn_app().await;
    let answer = app.send(Method::DELETE, "/v1/track", Vec::new(), &[]).await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn wrong_method_gets_the_json_error_shape() {
    let app = spawn_app().await;
    let response = reqwest::Client::new()
        .delete(format!("{}/v1/track", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["success"], false);
    assert_eq!(body["code"], "method_not_allowed");
}
