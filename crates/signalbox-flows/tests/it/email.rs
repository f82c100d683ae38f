//! Metric trigger → delay → email, end to end on a fake clock.

use jiff::SignedDuration;
use serde_json::json;
use signalbox_flows::{RunExit, RunStatus, SendStatus};

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
    // Events are created asynchronously (as Klaviyo's 202): let the order land first.
    app.settle().await;
    app.advance(SignedDuration::from_hours(4)).await;
    assert!(app.sink().messages().is_empty());
    let stats = app.flows.stats(&flow.id).await.unwrap();
    assert_eq!(stats.flow.get("entered"), 1, "{stats:?}");
    assert_eq!(stats.flow.get("exited_filter"), 1, "{stats:?}");
    let runs = app.flows.runs(&flow.id, 10).await.unwrap();
    assert_eq!(runs[0].status, RunStatus::Exited);
    assert_eq!(runs[0].exit_reason, Some(RunExit::Filter));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_templates_render_the_profile_and_the_event() {
    let mut app = TestApp::start().await;
    app.templates.0.lock().unwrap().insert(
        "T1".into(),
        signalbox_mail::EmailTemplateSource {
            subject: "ignored: the action's subject wins".into(),
            html: "<p>{{ person|lookup:'Loyalty Points' }} points; {{ event.ItemNames|join:', ' }}</p>"
                .into(),
            text: Some("Points: {{ person|lookup:'Loyalty Points' }}".into()),
        },
    );
    let placed = app.metric("Placed Order").await;
    let flow = app
        .live_flow(json!({
            "triggers": [{"type": "metric", "id": placed}],
            "entry_action_id": "e",
            "actions": [
                {"temporary_id": "e", "type": "send-email", "data": {"status": "live", "message": {
                    "subject_line": "Thanks, {{ first_name }}", "template_id": "T1",
                    "from_email": "orders@example.com", "from_label": "Orders",
                    "smart_sending_enabled": false}}, "links": {"next": "missing"}},
                {"temporary_id": "missing", "type": "send-email", "data": {"status": "live", "message": {
                    "subject_line": "Gone", "template_id": "T9", "smart_sending_enabled": false}},
                 "links": {"next": null}}
            ]
        }))
        .await;
    app.profile_with(signalbox_engage::ProfileInput {
        email: Some("lp@example.com".into()),
        first_name: Some("Lou".into()),
        properties: json!({"Loyalty Points": 120}).as_object().cloned().unwrap(),
        ..Default::default()
    })
    .await;
    app.track(
        "lp@example.com",
        "Placed Order",
        json!({"ItemNames": ["Teapot", "Cup"]}),
    )
    .await;
    app.settle().await;
    let messages = app.sink().wait_for(1);
    let mail = parse_mail(&messages[0]);
    assert_eq!(mail.subject, "Thanks, Lou");
    assert!(
        mail.html.contains("120 points; Teapot, Cup"),
        "{}",
        mail.html
    );
    assert!(mail.text.contains("Points: 120"), "{}", mail.text);
    assert!(
        mail.raw.contains("From: Orders <orders@example.com>"),
        "{}",
        mail.raw
    );
    let sends = app.flows.sends(&flow.id).await.unwrap();
    assert_eq!(sends.len(), 2);
    assert_eq!(sends[1].status, SendStatus::Failed);
    assert_eq!(sends[1].detail.as_deref(), Some("template T9 not found"));
    assert_eq!(
        app.flows.stats(&flow.id).await.unwrap().flow.get("failed"),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_in_this_flow_in_the_last_days_keeps_profiles_out() {
    let mut app = TestApp::start_with(Options {
        mail: false,
        ..Options::default()
    })
    .await;
    let viewed = app.metric("Product Viewed").await;
    let flow = app
        .live_flow(json!({
            "triggers": [{"type": "metric", "id": viewed}],
            "profile_filter": {"condition_groups": [{"conditions": [{"type": "profile-not-in-flow",
                "timeframe_filter": {"type": "date", "operator": "in-the-last", "quantity": 7, "unit": "day"}}]}]},
            "entry_action_id": "d",
            "actions": [{"temporary_id": "d", "type": "time-delay", "data": {"unit": "hours", "value": 1},
                "links": {"next": null}}]
        }))
        .await;
    app.profile("v@example.com", "Vi").await;
    for days in [0, 3, 5] {
        app.clock.advance(SignedDuration::from_hours(24 * days));
        app.track("v@example.com", "Product Viewed", json!({"d": days}))
            .await;
        app.settle().await;
    }
    let stats = app.flows.stats(&flow.id).await.unwrap();
    assert_eq!(stats.flow.get("entered"), 2, "{stats:?}");
    assert_eq!(stats.flow.get("skipped_entry:not_in_flow"), 1, "{stats:?}");
}
