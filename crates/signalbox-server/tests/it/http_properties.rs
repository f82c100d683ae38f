//! An HTTP-level property: whatever body is posted to whichever route, the answer is never a
//! 5xx, it is always in the Tracking API's JSON shape, and the server keeps serving.

use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, TestRunner};
use serde_json::json;

use crate::decode_properties::{arb_envelope, arb_json, arb_message};
use crate::helpers::{gzip, spawn_app, track};

const ROUTES: &[&str] = &[
    "/v1/track",
    "/v1/identify",
    "/v1/page",
    "/v1/screen",
    "/v1/group",
    "/v1/alias",
    "/v1/batch",
    "/v1/import",
    "/v1/t",
    "/v1/i",
    "/v1/p",
    "/v1/s",
    "/v1/g",
    "/v1/a",
    "/v1/b",
];

#[derive(Debug, Clone)]
enum Auth {
    Valid,
    None,
    Unknown,
    Garbage,
    Bearer,
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..1024),
        arb_json().prop_map(|v| v.to_string().into_bytes()),
        arb_message().prop_map(|v| v.to_string().into_bytes()),
        arb_envelope().prop_map(|v| v.to_string().into_bytes()),
    ]
}

#[test]
fn arbitrary_posts_never_get_a_5xx_and_the_server_keeps_serving() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let app = runtime.block_on(spawn_app());
    let auth_values = vec![
        Auth::Valid,
        Auth::None,
        Auth::Unknown,
        Auth::Garbage,
        Auth::Bearer,
    ];
    let strategy = (select(ROUTES), body(), any::<bool>(), select(auth_values));
    // As many cases as PROPTEST_CASES asks for (256 by default).
    let mut runner = TestRunner::new(Config {
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&strategy, |(route, body, zipped, auth)| {
        let body = if zipped { gzip(&body) } else { body };
        let mut headers: Vec<(&str, String)> = vec![("content-type", "text/plain".into())];
        if zipped {
            headers.push(("content-encoding", "gzip".into()));
        }
        match auth {
            Auth::Valid => headers.push(("authorization", app.basic_auth())),
            Auth::None => {}
            Auth::Unknown => headers.push(("authorization", "Basic dW5rbm93bjo=".into())),
            Auth::Garbage => headers.push(("authorization", "Basic !!!".into())),
            Auth::Bearer => headers.push(("authorization", "Bearer abc".into())),
        }
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let answer = runtime.block_on(app.post(route, body, &headers));
        prop_assert!(
            answer.status.as_u16() < 500,
            "{} answered {}: {}",
            route,
            answer.status,
            answer.text()
        );
        if answer.status == 200 {
            prop_assert_eq!(&answer.body, &json!({"success": true}));
        } else {
            prop_assert_eq!(&answer.body["success"], &json!(false), "{}", answer.text());
            prop_assert!(answer.body["code"].is_string(), "{}", answer.text());
            prop_assert!(answer.body["message"].is_string(), "{}", answer.text());
        }
        Ok(())
    });
    if let Err(err) = result {
        panic!("{err}");
    }
    runtime.block_on(async {
        app.post_batch(&json!({"batch": [track("still-serving")]}))
            .await
            .assert_success();
        assert_eq!(app.get("/healthz", &[]).await.body["status"], "ok");
    });
}
