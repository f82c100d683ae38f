//! Statistics: opens, clicks, and conversions (Placed Order within 5 days, with revenue).

use jiff::SignedDuration;
use serde_json::json;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opens_clicks_and_conversions_are_counted_per_flow_and_action() {
    let mut app = TestApp::start().await;
    let metric = app.metric("Checkout Started").await;
    let flow = app
        .live_flow(json!({
            "triggers": [{"type": "metric", "id": metric}],
            "entry_action_id": "e",
            "actions": [{"temporary_id": "e", "type": "send-email", "data": {"status": "live", "message": {
                "subject_line": "Come back", "html": "<p>Hi</p>", "smart_sending_enabled": false}},
                "links": {"next": null}}]
        }))
        .await;
    app.profile("buyer@example.com", "Bu").await;
    app.profile("late@example.com", "La").await;
    app.track("buyer@example.com", "Checkout Started", json!({}))
        .await;
    app.track("late@example.com", "Checkout Started", json!({}))
        .await;
    app.settle().await;
    let sends = app.flows.sends(&flow.id).await.unwrap();
    assert_eq!(sends.len(), 2);
    let buyer_send = sends
        .iter()
        .find(|s| s.email == "buyer@example.com")
        .unwrap();

    app.clock.advance(SignedDuration::from_hours(1));
    app.track(
        "buyer@example.com",
        "Opened Email",
        json!({"$message_id": buyer_send.key}),
    )
    .await;
    app.track(
        "buyer@example.com",
        "Clicked Email",
        json!({"$message_id": buyer_send.key, "URL": "https://shop"}),
    )
    .await;
    app.settle().await;
    app.clock.advance(SignedDuration::from_secs(1));
    app.track(
        "buyer@example.com",
        "Opened Email",
        json!({"$message_id": buyer_send.key}),
    )
    .await;
    app.advance(SignedDuration::from_hours(24)).await;
    app.track_value("buyer@example.com", "Placed Order", json!({}), Some(42.5))
        .await;
    app.advance(SignedDuration::from_hours(24 * 5)).await;
    // More than five days after its email: not a conversion.
    app.track_value("late@example.com", "Placed Order", json!({}), Some(99.0))
        .await;
    app.settle().await;

    let stats = app.flows.stats(&flow.id).await.unwrap();
    let action = stats.action(&flow.definition.actions[0].id);
    assert_eq!(action.get("sent"), 2, "{stats:?}");
    assert_eq!(action.get("opened"), 1, "unique opens");
    assert_eq!(action.get("clicked"), 1);
    assert_eq!(action.get("converted"), 1);
    assert_eq!(action.revenue, 42.5);
    assert_eq!(stats.flow.get("converted"), 1);
    assert_eq!(stats.flow.revenue, 42.5);
    assert_eq!(stats.flow.get("entered"), 2);
}
