//! Overload: past `max_in_flight` requests are refused with 429, past the write queue with
//! 503, both with `Retry-After`; whatever was answered 200 is in the log.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{json, Value};
use signalbox_server::ingest::IngestError;

use crate::helpers::{spawn_app_with, track, TestOptions};

#[tokio::test]
async fn admission_is_refused_when_every_slot_is_taken() {
    let app = spawn_app_with(TestOptions {
        max_in_flight: 2,
        ..TestOptions::default()
    })
    .await;
    let held: Vec<_> = (0..2)
        .map(|_| app.ingest.admit().expect("a free slot"))
        .collect();
    assert!(matches!(app.ingest.admit(), Err(IngestError::Busy)));

    let answer = app.post_batch(&json!({"batch": [track("busy-1")]})).await;
    let message = answer.assert_error(429, "rate_limited");
    assert!(message.contains("too many requests"), "{message}");
    assert_eq!(answer.header("retry-after"), Some("1"));
    assert_eq!(answer.header("x-ratelimit-reset"), Some("1"));
    let single = json!({"userId": "u1", "event": "E", "messageId": "busy-2"});
    app.post_json("/v1/track", &single)
        .await
        .assert_error(429, "rate_limited");
    assert!(app.calls().await.is_empty());

    drop(held);
    app.post_batch(&json!({"batch": [track("busy-1")]}))
        .await
        .assert_success();
    assert_eq!(app.calls().await.len(), 1);
}

/// One request's outcome: its status, headers that matter and body, and the ids it carried.
struct Outcome {
    status: u16,
    retry_after: Option<String>,
    body: Value,
    ids: Vec<String>,
}

/// Requests answered, by status.
#[derive(Debug, Default)]
struct Tally {
    accepted: usize,
    rate_limited: usize,
    overloaded: usize,
}

/// Posts rounds of 24 concurrent batches of 200 messages (about 200 kB each) until some are
/// refused (at most 10 rounds), checks every answer's shape, and checks that exactly the
/// messages of the accepted batches are in the log.
async fn stress(options: TestOptions) -> Tally {
    let app = spawn_app_with(options).await;
    let url = Arc::new(app.url("/v1/batch"));
    let auth = Arc::new(app.basic_auth());
    let mut tally = Tally::default();
    let mut accepted_ids = HashSet::new();
    let mut refused_ids = HashSet::new();
    // Concurrency makes refusals likely, not certain: repeat a few rounds until one is seen.
    for round in 0..10 {
        let start = Arc::new(tokio::sync::Barrier::new(24));
        let tasks: Vec<_> = (0..24)
            .map(|task| {
                let (url, auth, start) = (url.clone(), auth.clone(), start.clone());
                tokio::spawn(async move {
                    let ids: Vec<String> =
                        (0..200).map(|i| format!("r{round}-t{task}-m{i}")).collect();
                    let items: Vec<Value> = ids
                        .iter()
                        .map(|id| {
                            let mut item = track(id);
                            item["properties"]["pad"] = json!("x".repeat(1_000));
                            item
                        })
                        .collect();
                    let body = json!({"batch": items}).to_string();
                    let client = reqwest::Client::new();
                    start.wait().await;
                    let response = client
                        .post(url.as_str())
                        .header("authorization", auth.as_str())
                        .body(body)
                        .send()
                        .await
                        .unwrap();
                    Outcome {
                        status: response.status().as_u16(),
                        retry_after: response
                            .headers()
                            .get("retry-after")
                            .map(|v| v.to_str().unwrap().to_owned()),
                        body: response.json().await.unwrap(),
                        ids,
                    }
                })
            })
            .collect();
        for outcome in futures::future::try_join_all(tasks).await.unwrap() {
            match outcome.status {
                200 => {
                    assert_eq!(outcome.body, json!({"success": true}));
                    tally.accepted += 1;
                    accepted_ids.extend(outcome.ids);
                    continue;
                }
                429 => {
                    assert_eq!(outcome.body["code"], "rate_limited");
                    tally.rate_limited += 1;
                }
                503 => {
                    assert_eq!(outcome.body["code"], "overloaded");
                    tally.overloaded += 1;
                }
                other => panic!("unexpected status {other}: {}", outcome.body),
            }
            assert_eq!(outcome.body["success"], false);
            assert!(outcome.body["message"].is_string());
            assert_eq!(outcome.body.as_object().unwrap().len(), 3);
            assert_eq!(outcome.retry_after.as_deref(), Some("1"));
            refused_ids.extend(outcome.ids);
        }
        if tally.rate_limited + tally.overloaded > 0 && tally.accepted > 0 {
            break;
        }
    }
    eprintln!("overload: {tally:?}");
    assert!(tally.accepted > 0, "every request was refused: {tally:?}");

    let stored: HashSet<String> = app
        .calls()
        .await
        .into_iter()
        .map(|c| c.message_id)
        .collect();
    assert_eq!(stored.len(), accepted_ids.len());
    assert!(accepted_ids.iter().all(|id| stored.contains(id)));
    assert!(refused_ids.iter().all(|id| !stored.contains(id)));

    app.post_batch(&json!({"batch": [track("after-overload")]}))
        .await
        .assert_success();
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_in_flight_requests_get_429_and_nothing_accepted_is_lost() {
    let tally = stress(TestOptions {
        max_in_flight: 2,
        queue_capacity: 64,
        ..TestOptions::default()
    })
    .await;
    assert!(tally.rate_limited > 0, "{tally:?}");
    assert_eq!(tally.overloaded, 0, "{tally:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_write_queue_requests_get_503_and_nothing_accepted_is_lost() {
    let tally = stress(TestOptions {
        max_in_flight: 256,
        queue_capacity: 1,
        ..TestOptions::default()
    })
    .await;
    assert!(tally.overloaded > 0, "{tally:?}");
    assert_eq!(tally.rate_limited, 0, "{tally:?}");
}
