//! Webhooks against a local HTTP server: signature, idempotency key, retries, dead letters.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use jiff::SignedDuration;
use serde_json::{json, Value};
use signalbox_flows::{sign_webhook, FlowInfo};

use crate::helpers::*;

#[derive(Clone, Default)]
struct Receiver {
    requests: Arc<Mutex<Vec<(HeaderMap, String)>>>,
    /// Status codes to answer, in order (then 200); 0 = answer slowly (a timeout).
    script: Arc<Mutex<VecDeque<u16>>>,
}

async fn hook(State(receiver): State<Receiver>, headers: HeaderMap, body: String) -> StatusCode {
    receiver.requests.lock().unwrap().push((headers, body));
    let next = receiver.script.lock().unwrap().pop_front().unwrap_or(200);
    if next == 0 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        return StatusCode::OK;
    }
    StatusCode::from_u16(next).unwrap()
}

async fn receiver(script: &[u16]) -> (Receiver, String) {
    let receiver = Receiver::default();
    receiver
        .script
        .lock()
        .unwrap()
        .extend(script.iter().copied());
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (receiver, url)
}

async fn webhook_flow(app: &mut TestApp, url: &str, secret: Option<&str>) -> FlowInfo {
    let metric = app.metric("Order Shipped").await;
    let mut data = json!({"status": "live", "url": url,
        "headers": {"X-Shop": "acme"},
        "body": {"email": "{{ email }}", "item": "{{ event.ProductName }}", "count": 2}});
    if let Some(secret) = secret {
        data["secret"] = json!(secret);
    }
    app.live_flow(json!({
        "triggers": [{"type": "metric", "id": metric}],
        "entry_action_id": "w",
        "actions": [{"temporary_id": "w", "type": "send-webhook", "data": data, "links": {"next": null}}]
    }))
    .await
}

/// The receivers of these tests listen on loopback: they opt in to private destinations.
fn options() -> Options {
    Options {
        mail: false,
        tune: Box::new(|c| {
            c.webhook_max_attempts = 3;
            c.webhook_timeout = Duration::from_millis(300);
            c.allow_private_destinations = true;
        }),
        flow_store: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_rendered_and_carry_an_idempotency_key() {
    let mut app = TestApp::start_with(options()).await;
    let (receiver, url) = receiver(&[]).await;
    let flow = webhook_flow(&mut app, &url, None).await;
    app.profile("h@example.com", "Hal").await;
    app.track(
        "h@example.com",
        "Order Shipped",
        json!({"ProductName": "Teapot \"XL\""}),
    )
    .await;
    app.settle().await;
    let requests = receiver.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    let (headers, body) = &requests[0];
    let body_json: Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        body_json,
        json!({"email": "h@example.com", "item": "Teapot \"XL\"", "count": 2})
    );
    assert_eq!(headers["x-shop"], "acme");
    assert_eq!(headers["content-type"], "application/json");
    let action = &flow.definition.actions[0].id;
    let secret = app.flows.webhook_secret(&flow.id, action).await.unwrap();
    let signature = headers["x-signalbox-signature"].to_str().unwrap();
    let t: i64 = signature
        .split(',')
        .next()
        .unwrap()
        .strip_prefix("t=")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(signature, sign_webhook(&secret, t, body.as_bytes()));
    assert_ne!(
        signature,
        sign_webhook("another secret", t, body.as_bytes())
    );
    assert!(!headers["idempotency-key"].is_empty());
    let stats = app.flows.stats(&flow.id).await.unwrap();
    assert_eq!(stats.action(action).get("delivered"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_retry_with_backoff_on_5xx_and_timeouts() {
    let mut app = TestApp::start_with(options()).await;
    let (receiver, url) = receiver(&[503, 0]).await;
    let flow = webhook_flow(&mut app, &url, Some("my own secret")).await;
    app.profile("h@example.com", "Hal").await;
    app.track("h@example.com", "Order Shipped", json!({})).await;
    app.settle().await;
    assert_eq!(receiver.requests.lock().unwrap().len(), 1);
    // The first retry comes 30 s later, the second 60 s after that.
    app.advance(SignedDuration::from_secs(29)).await;
    assert_eq!(receiver.requests.lock().unwrap().len(), 1);
    app.advance(SignedDuration::from_secs(1)).await;
    assert_eq!(
        receiver.requests.lock().unwrap().len(),
        2,
        "retried after 30 s"
    );
    app.advance(SignedDuration::from_secs(60)).await;
    let requests = receiver.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 3, "retried after the timeout");
    let keys: Vec<_> = requests
        .iter()
        .map(|(h, _)| h["idempotency-key"].clone())
        .collect();
    assert!(
        keys.iter().all(|k| *k == keys[0]),
        "one key for every attempt"
    );
    let stats = app.flows.stats(&flow.id).await.unwrap();
    assert_eq!(stats.flow.get("delivered"), 1, "{stats:?}");
    assert!(app.flows.dead_letters(&flow.id).await.unwrap().is_empty());
    // The flow's own secret signs.
    let (headers, body) = &requests[2];
    let signature = headers["x-signalbox-signature"].to_str().unwrap();
    let t: i64 = signature[2..signature.find(',').unwrap()].parse().unwrap();
    assert_eq!(signature, sign_webhook("my own secret", t, body.as_bytes()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_dead_lettered_with_their_reason() {
    let mut app = TestApp::start_with(options()).await;
    let (receiver, url) = receiver(&[500, 500, 500, 400]).await;
    let flow = webhook_flow(&mut app, &url, None).await;
    app.profile("a@example.com", "Al").await;
    app.track("a@example.com", "Order Shipped", json!({})).await;
    app.settle().await;
    app.advance(SignedDuration::from_secs(30)).await;
    app.advance(SignedDuration::from_secs(60)).await;
    assert_eq!(receiver.requests.lock().unwrap().len(), 3);
    app.advance(SignedDuration::from_hours(1)).await;
    assert_eq!(
        receiver.requests.lock().unwrap().len(),
        3,
        "no fourth attempt"
    );
    // A 4xx is not retried.
    app.profile("b@example.com", "Bo").await;
    app.track("b@example.com", "Order Shipped", json!({})).await;
    app.settle().await;
    assert_eq!(receiver.requests.lock().unwrap().len(), 4);
    let dead = app.flows.dead_letters(&flow.id).await.unwrap();
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0].reason, "gave up after 3 attempts: HTTP 500");
    assert_eq!(dead[0].attempts, 3);
    assert_eq!(dead[1].reason, "HTTP 400 (not retried)");
    assert!(dead[0].body.contains("a@example.com"));
    let stats = app.flows.stats(&flow.id).await.unwrap();
    assert_eq!(stats.flow.get("dead_lettered"), 2, "{stats:?}");
    assert_eq!(
        stats.flow.get("completed"),
        2,
        "the run goes on after a dead letter"
    );
}

/// A listener that only counts the connections it is offered.
async fn counting_listener() -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while listener.accept().await.is_ok() {
            count.fetch_add(1, Ordering::SeqCst);
        }
    });
    (port, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_to_private_addresses_are_refused_and_dead_lettered_without_a_connection() {
    // Private destinations are off, as in production.
    let mut app = TestApp::start_with(Options {
        mail: false,
        tune: Box::new(|c| {
            c.webhook_max_attempts = 3;
            c.webhook_timeout = Duration::from_millis(300);
        }),
        flow_store: None,
    })
    .await;
    let (port, accepted) = counting_listener().await;
    // 10.0.0.1 and 169.254.169.254 are literals: refused before the connector runs, so no
    // packet leaves for them. `localhost` is refused by the resolver.
    let cases = [
        (format!("http://127.0.0.1:{port}/hook"), "loopback"),
        ("http://10.0.0.1/hook".to_owned(), "private"),
        (
            "http://169.254.169.254/latest/meta-data".to_owned(),
            "cloud metadata",
        ),
        (format!("http://localhost:{port}/hook"), "loopback"),
    ];
    let mut flows = Vec::new();
    for (url, _) in &cases {
        flows.push(webhook_flow(&mut app, url, None).await);
    }
    app.profile("h@example.com", "Hal").await;
    app.track("h@example.com", "Order Shipped", json!({})).await;
    app.settle().await;
    // No retry either: a refusal would be the same next time.
    app.advance(SignedDuration::from_hours(1)).await;
    for (flow, (url, class)) in flows.iter().zip(&cases) {
        let dead = app.flows.dead_letters(&flow.id).await.unwrap();
        assert_eq!(dead.len(), 1, "{url}: {dead:?}");
        assert_eq!(dead[0].attempts, 1, "{url}");
        assert!(
            dead[0].reason.contains("refused")
                && dead[0].reason.contains(&format!("is a {class} address")),
            "{url}: {}",
            dead[0].reason
        );
        assert!(dead[0].body.contains("h@example.com"), "the body is kept");
        let stats = app.flows.stats(&flow.id).await.unwrap();
        assert_eq!(stats.flow.get("dead_lettered"), 1, "{url}: {stats:?}");
        assert_eq!(stats.flow.get("delivered"), 0, "{url}");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "no connection was made");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_whose_receiver_answers_a_huge_body_is_dead_lettered() {
    let mut app = TestApp::start_with(options()).await;
    let app_router = axum::Router::new().route(
        "/hook",
        post(|| async { vec![b'x'; signalbox_flows::WEBHOOK_MAX_RESPONSE + 1].into_response() }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app_router).await.unwrap() });
    let flow = webhook_flow(&mut app, &url, None).await;
    app.profile("h@example.com", "Hal").await;
    app.track("h@example.com", "Order Shipped", json!({})).await;
    app.settle().await;
    let dead = app.flows.dead_letters(&flow.id).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(
        dead[0].reason,
        format!(
            "response body larger than {} bytes (not retried)",
            signalbox_flows::WEBHOOK_MAX_RESPONSE
        )
    );
}
