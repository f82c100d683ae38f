//! Built-in metrics (`Opened Email`, …): recorded by server code through the log, with
//! integration `Signalbox`, deduplicated by unique id, rebuilt identically.

use std::sync::Arc;

use serde_json::json;
use signalbox_engage::{
    rebuild, BuiltinEventInput, BuiltinMetric, Engage, ProfileId, ProfileInput,
};

use crate::helpers::TestApp;

fn event(metric: BuiltinMetric, profile: &ProfileId, unique_id: &str) -> BuiltinEventInput {
    BuiltinEventInput {
        metric,
        profile_id: profile.clone(),
        properties: json!({"$message": "run-1/a2"}).as_object().unwrap().clone(),
        time: None,
        unique_id: Some(unique_id.to_owned()),
    }
}

#[tokio::test]
async fn builtin_events_carry_the_signalbox_integration_and_dedupe() {
    let app = TestApp::start().await;
    let profile = app
        .engage
        .create_profile(ProfileInput {
            email: Some("ada@example.com".into()),
            ..ProfileInput::default()
        })
        .await
        .unwrap();
    for unique in ["open-1", "open-1", "open-2"] {
        app.engage
            .record_builtin_event(event(BuiltinMetric::OpenedEmail, &profile.id, unique))
            .await
            .unwrap();
    }
    let mut click = event(BuiltinMetric::ClickedEmail, &profile.id, "click-1");
    click
        .properties
        .insert("URL".into(), json!("https://shop.example.com/cart"));
    app.engage.record_builtin_event(click).await.unwrap();
    // An unknown profile is dropped, not invented.
    app.engage
        .record_builtin_event(event(
            BuiltinMetric::OpenedEmail,
            &ProfileId("01JUNKNOWNPROFILE000000000".into()),
            "x",
        ))
        .await
        .unwrap();
    app.settle().await;

    let opened = app.metric("Opened Email").await;
    assert_eq!(opened.integration.name, "Signalbox");
    assert_eq!(opened.integration.category, "Internal");
    let feed = app.feed_of(&profile).await;
    let opens: Vec<_> = feed.iter().filter(|e| e.metric_id == opened.id).collect();
    assert_eq!(opens.len(), 2, "{feed:?}");
    let clicked = app.metric("Clicked Email").await;
    let clicks: Vec<_> = feed.iter().filter(|e| e.metric_id == clicked.id).collect();
    assert_eq!(clicks.len(), 1);
    assert_eq!(
        clicks[0].properties["URL"],
        json!("https://shop.example.com/cart")
    );
    assert_eq!(clicks[0].properties["$message"], json!("run-1/a2"));
    assert_eq!(app.counter("dropped.builtin_event").await, 1);
    assert_eq!(app.counter("events.duplicate").await, 1);
}

#[tokio::test]
async fn a_hard_bounce_suppresses_the_address() {
    let app = TestApp::start().await;
    let profile = app
        .engage
        .create_profile(ProfileInput {
            email: Some("gone@example.com".into()),
            ..ProfileInput::default()
        })
        .await
        .unwrap();
    let before = app.engage.email_consent(&profile.id).await.unwrap();
    assert!(before.can_receive_email_marketing);
    app.engage
        .record_builtin_event(event(BuiltinMetric::BouncedEmail, &profile.id, "bounce-1"))
        .await
        .unwrap();
    app.settle().await;
    let after = app.engage.email_consent(&profile.id).await.unwrap();
    assert!(!after.can_receive_email_marketing);
    assert_eq!(
        after
            .suppressions
            .iter()
            .map(|s| s.reason)
            .collect::<Vec<_>>(),
        [signalbox_engage::SuppressionReason::HardBounce]
    );
}

#[tokio::test]
async fn a_rebuild_yields_the_same_builtin_events() {
    let app = TestApp::start().await;
    let profile = app
        .engage
        .create_profile(ProfileInput {
            email: Some("bo@example.com".into()),
            ..ProfileInput::default()
        })
        .await
        .unwrap();
    for metric in BuiltinMetric::ALL {
        app.engage
            .record_builtin_event(event(metric, &profile.id, metric.name()))
            .await
            .unwrap();
    }
    app.settle().await;
    let before = app.engage.dump().await.unwrap();
    assert!(before.contains("Bounced Email"));
    app.engage.shutdown().await;
    rebuild(
        Arc::clone(&app.store),
        &app.config.path,
        app.config.hold_window,
        app.clock_now(),
        |_| {},
    )
    .await
    .unwrap();
    let after = Engage::open_readonly(&app.config.path)
        .await
        .unwrap()
        .dump()
        .await
        .unwrap();
    assert_eq!(before, after);
}

#[tokio::test]
async fn a_recorded_unsubscribe_unsubscribes_with_one_event() {
    let app = TestApp::start().await;
    let profile = app
        .engage
        .create_profile(ProfileInput {
            email: Some("leaving@example.com".into()),
            ..ProfileInput::default()
        })
        .await
        .unwrap();
    for unique in ["unsub-1", "unsub-1"] {
        app.engage
            .record_builtin_event(event(BuiltinMetric::Unsubscribed, &profile.id, unique))
            .await
            .unwrap();
    }
    app.settle().await;
    let consent = app.engage.email_consent(&profile.id).await.unwrap();
    assert_eq!(
        consent.consent,
        signalbox_engage::ConsentStatus::Unsubscribed
    );
    assert!(!consent.can_receive_email_marketing);
    assert_eq!(
        consent
            .suppressions
            .iter()
            .map(|s| s.reason)
            .collect::<Vec<_>>(),
        [signalbox_engage::SuppressionReason::Unsubscribe]
    );
    // The recorded event is the only `Unsubscribed` event: consent adds none of its own.
    let unsubscribed = app.metric("Unsubscribed").await;
    let feed = app.feed_of(&profile).await;
    assert_eq!(
        feed.iter()
            .filter(|e| e.metric_id == unsubscribed.id)
            .count(),
        1,
        "{feed:?}"
    );
}
