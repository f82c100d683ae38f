//! Smart Sending, consent and suppression skips.

use jiff::SignedDuration;
use serde_json::json;

use signalbox_engage::{SuppressTarget, SuppressionReason, UnsubscribeRequest};
use signalbox_flows::SendStatus;

use crate::helpers::*;

fn browse(metric: &str, smart: bool) -> serde_json::Value {
    json!({
        "triggers": [{"type": "metric", "id": metric}],
        "entry_action_id": "e",
        "actions": [{"temporary_id": "e", "type": "send-email", "data": {"status": "live", "message": {
            "subject_line": "Still looking?", "html": "<p>{{ event.ProductName }}</p>",
            "smart_sending_enabled": smart}}, "links": {"next": null}}]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smart_sending_skips_a_second_email_within_16_hours() {
    let mut app = TestApp::start().await;
    let viewed = app.metric("Product Viewed").await;
    let flow = app.live_flow(browse(&viewed, true)).await;
    app.profile("s@example.com", "Sam").await;
    app.track(
        "s@example.com",
        "Product Viewed",
        json!({"ProductName": "Teapot"}),
    )
    .await;
    app.settle().await;
    app.clock.advance(SignedDuration::from_hours(15));
    app.track(
        "s@example.com",
        "Product Viewed",
        json!({"ProductName": "Cup"}),
    )
    .await;
    app.settle().await;
    app.clock.advance(SignedDuration::from_hours(2));
    app.track(
        "s@example.com",
        "Product Viewed",
        json!({"ProductName": "Kettle"}),
    )
    .await;
    app.settle().await;
    let messages = app.sink().wait_for(2);
    let bodies: Vec<String> = messages.iter().map(|m| parse_mail(m).html).collect();
    assert_eq!(messages.len(), 2);
    assert!(
        bodies[0].contains("Teapot") && bodies[1].contains("Kettle"),
        "{bodies:?}"
    );
    let stats = app.flows.stats(&flow.id).await.unwrap();
    assert_eq!(stats.flow.get("skipped:smart_sending"), 1, "{stats:?}");
    assert_eq!(
        stats.flow.get("completed"),
        3,
        "a skipped message does not stop the run"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribed_and_suppressed_profiles_are_never_emailed() {
    let mut app = TestApp::start().await;
    let viewed = app.metric("Product Viewed").await;
    let flow = app.live_flow(browse(&viewed, false)).await;
    let gone = app.profile("gone@example.com", "Gus").await;
    let bounced = app.profile("bounced@example.com", "Bea").await;
    app.profile("ok@example.com", "Oli").await;
    app.engage
        .unsubscribe(UnsubscribeRequest {
            list_id: None,
            emails: vec![gone.email.as_deref().unwrap().parse().unwrap()],
        })
        .await
        .unwrap();
    app.engage
        .suppress(
            SuppressTarget::Emails(vec![bounced.email.as_deref().unwrap().parse().unwrap()]),
            SuppressionReason::HardBounce,
        )
        .await
        .unwrap();
    for email in ["gone@example.com", "bounced@example.com", "ok@example.com"] {
        app.track(email, "Product Viewed", json!({"ProductName": "Teapot"}))
            .await;
    }
    app.settle().await;
    let messages = app.sink().wait_for(1);
    assert_eq!(messages.len(), 1);
    assert_eq!(parse_mail(&messages[0]).to, ["ok@example.com"]);
    let stats = app.flows.stats(&flow.id).await.unwrap();
    assert_eq!(stats.flow.get("skipped:consent"), 1, "{stats:?}");
    assert_eq!(stats.flow.get("skipped:suppressed"), 1, "{stats:?}");
    assert_eq!(stats.flow.get("sent"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_recipient_is_a_bounce() {
    let mut app = TestApp::start_with(Options {
        mail: false,
        ..Options::default()
    })
    .await;
    let sink = crate::sink::SmtpSink::start(crate::sink::SinkOptions {
        reject_prefixes: vec!["bounce".into()],
        ..Default::default()
    })
    .unwrap();
    app.restart(|c| c.mail = Some(mail_for(&sink.url()))).await;
    let viewed = app.metric("Product Viewed").await;
    let flow = app.live_flow(browse(&viewed, false)).await;
    app.profile("bounce@example.com", "Bo").await;
    app.track("bounce@example.com", "Product Viewed", json!({}))
        .await;
    app.settle().await;
    let stats = app.flows.stats(&flow.id).await.unwrap();
    assert_eq!(stats.flow.get("bounced"), 1, "{stats:?}");
    assert_eq!(app.events.named("Bounced Email").len(), 1);
    assert_eq!(
        app.flows.sends(&flow.id).await.unwrap()[0].status,
        SendStatus::Bounced
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferred_recipient_is_retried_with_backoff_then_fails() {
    let mut app = TestApp::start_with(Options {
        mail: false,
        ..Options::default()
    })
    .await;
    let sink = crate::sink::SmtpSink::start(crate::sink::SinkOptions {
        defer_prefixes: vec!["later".into()],
        ..Default::default()
    })
    .unwrap();
    app.restart(|c| c.mail = Some(mail_for(&sink.url()))).await;
    let viewed = app.metric("Product Viewed").await;
    let flow = app.live_flow(browse(&viewed, false)).await;
    app.profile("later@example.com", "La").await;
    app.track("later@example.com", "Product Viewed", json!({}))
        .await;
    app.settle().await;
    let action = flow.definition.actions[0].id.clone();
    assert_eq!(
        app.flows
            .stats(&flow.id)
            .await
            .unwrap()
            .action(&action)
            .get("retried"),
        1
    );
    // Retries after 1, 2, 4 … minutes; the eighth attempt gives up.
    for k in 0..7 {
        app.advance(SignedDuration::from_mins(1 << k)).await;
    }
    let stats = app.flows.stats(&flow.id).await.unwrap();
    assert_eq!(stats.action(&action).get("retried"), 7, "{stats:?}");
    assert_eq!(stats.flow.get("failed"), 1, "{stats:?}");
    let sends = app.flows.sends(&flow.id).await.unwrap();
    assert_eq!(sends[0].status, SendStatus::Failed);
    assert!(sends[0]
        .detail
        .as_deref()
        .unwrap()
        .starts_with("gave up after 8 attempts"));
    assert!(sink.messages().is_empty());
}
