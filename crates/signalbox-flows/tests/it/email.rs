//! Metric trigger → delay → email, end to end on a fake clock.

use jiff::SignedDuration;
use serde_json::json;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_checkout_waits_four_hours_then_emails_the_cart() {
    let mut app = TestApp::start().await;
    let checkout = app.metric("Checkout Started").await;
    let placed = app.metric("Placed Order").await;
    let flow = app.live_flow(abandoned_checkout(&checkout, &placed)).await;
    app.profile("ada@example.com", "Ada").await;
    app.track(
        "ada@example.com",
        "Checkout Started",
        json!({"Items": [{"ProductName": "Teapot", "ItemPrice": 25}, {"ProductName": "Cup", "ItemPrice": 5}]}),
    )
    .await;
    app.settle().await;
    let stats = app.flows.stats(&flow.id).await.unwrap();
    assert_eq!(stats.flow.get("entered"), 1, "{stats:?}");
    assert_eq!(stats.flow.get("waiting"), 1, "{stats:?}");
    assert!(app.sink().messages().is_empty());

    app.advance(SignedDuration::from_mins(239)).await;
    assert!(app.sink().messages().is_empty(), "not before 4 hours");
    app.advance(SignedDuration::from_mins(1)).await;
    let messages = app.sink().wait_for(1);
    assert_eq!(messages.len(), 1);
    let mail = parse_mail(&messages[0]);
    assert_eq!(mail.to, ["ada@example.com"]);
    assert_eq!(mail.subject, "You left something, Ada");
    assert!(
        mail.html.contains("Teapot (25)") && mail.html.contains("Cup (5)"),
        "{}",
        mail.html
    );
    assert!(mail.raw.contains("List-Unsubscribe"), "{}", mail.raw);
    assert!(
        mail.html.contains("https://mail.example.com/t/c/"),
        "click links are tracked"
    );
    assert!(mail.raw.contains("X-Signalbox-Flow: "));

    let stats = app.flows.stats(&flow.id).await.unwrap();
    let email_id = &flow.definition.actions[1].id;
    assert_eq!(stats.action(email_id).get("sent"), 1, "{stats:?}");
    assert_eq!(stats.flow.get("completed"), 1, "{stats:?}");
    assert_eq!(stats.flow.get("waiting"), 0);
    let received = app.events.named("Received Email");
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].1["$flow"], json!(flow.id));

    // Nothing more happens later.
    app.advance(SignedDuration::from_hours(48)).await;
    assert_eq!(app.sink().messages().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placed_order_since_the_flow_started_exits_the_run() {
    let mut app = TestApp::start().await;
    let checkout = app.metric("Checkout Started").await;
    let placed = app.metric("Placed Order").await;
    // An order before the flow started does not count.
    app.profile("bob@example.com", "Bob").await;
    app.track("bob@example.com", "Placed Order", json!({}))
        .await;
    app.settle().await;
    app.clock.advance(SignedDuration::from_mins(5));
    let flow = app.live_flow(abandoned_checkout(&checkout, &placed)).await;
    app.track("bob@example.com", "Checkout Started", json!({"Items": []}))
        .await;
    app.settle().await;
    app.advance(SignedDuration::from_hours(1)).await;
    app.track("bob@example.com", "Placed Order", json!({}))
        .await;
    app.advance(SignedDuration::from_hours(4)).await;
    assert!(app.sink().messages().is_empty());
    let stats = app.flows.stats(&flow.id).await.unwrap();
    assert_eq!(stats.flow.get("entered"), 1, "{stats:?}");
    assert_eq!(stats.flow.get("exited_filter"), 1, "{stats:?}");
    let runs = app.flows.runs(&flow.id, 10).await.unwrap();
    assert_eq!(runs[0].status, "exited");
    assert_eq!(runs[0].exit_reason.as_deref(), Some("filter"));
}
