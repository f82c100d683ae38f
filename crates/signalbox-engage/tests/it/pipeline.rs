//! The pipeline: exactly-once by idempotent application, resume after a stop, rebuild
//! equivalence, dedupe.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use signalbox_core::CallKind;
use signalbox_engage::{rebuild, rebuild_postgres, ApiEventInput, Engage, ProfileInput};

use crate::helpers::{at, TestApp};

/// A bit of everything: profiles, holds (released and still waiting), a merge, an order, API
/// writes.
pub(crate) async fn mixed_workload(app: &mut TestApp, rounds: usize) {
    for i in 0..rounds {
        let email = format!("person{}@example.com", i % 7);
        app.track(
            json!({"anonymousId": format!("a{i}"), "event": "Viewed Product",
            "properties": {"sku": format!("S{}", i % 3)}}),
        )
        .await;
        app.identify(
            json!({"userId": format!("u{}", i % 11), "anonymousId": format!("a{i}"),
            "traits": {"email": email, "firstName": format!("N{i}"), "score": i}}),
        )
        .await;
        app.track(
            json!({"userId": format!("u{}", i % 11), "event": "Order Completed",
            "properties": {"order_id": format!("O{}", i % 5), "revenue": i as f64 * 1.5,
                "products": [{"product_id": "P1", "price": 2.5, "name": "Tee"},
                             {"product_id": format!("P{}", i % 4), "price": 1}]}}),
        )
        .await;
        if i % 4 == 0 {
            app.track(json!({"userId": format!("never{i}"), "event": "Orphan"}))
                .await;
        }
        if i % 5 == 0 {
            app.engage
                .create_events(vec![ApiEventInput {
                    metric_name: "Api Thing".into(),
                    profile: ProfileInput {
                        email: Some(email.clone()),
                        ..ProfileInput::default()
                    },
                    value: Some(3.0),
                    ..ApiEventInput::default()
                }])
                .await
                .unwrap();
        }
        if i % 6 == 0 {
            app.send(
                CallKind::Alias,
                json!({"previousId": format!("a{i}"),
                "userId": format!("u{}", (i + 1) % 11)}),
            )
            .await;
        }
    }
}

#[tokio::test]
async fn rebuild_yields_the_same_state_ids_included() {
    let mut app = TestApp::start().await;
    mixed_workload(&mut app, 40).await;
    let created = app
        .engage
        .create_profile(ProfileInput {
            email: Some("api@example.com".into()),
            first_name: Some("Api".into()),
            ..ProfileInput::default()
        })
        .await
        .unwrap();
    app.settle().await;
    let before = app.engage.dump().await.unwrap();
    assert!(before.contains("api@example.com"));
    assert!(before.lines().filter(|l| l.starts_with("events ")).count() > 100);
    app.engage.shutdown().await;

    let path = app.config.path.clone();
    let done = rebuild(
        Arc::clone(&app.store),
        &path,
        app.config.hold_window,
        app.clock_now(),
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(done.applied_seq, app.store.last_seq().await.unwrap());
    let rebuilt = Engage::open_readonly(&path).await.unwrap();
    let after = rebuilt.dump().await.unwrap();
    assert_eq!(first_difference(&before, &after), None);
    assert_eq!(
        rebuilt
            .get_profile(&created.id)
            .await
            .unwrap()
            .email
            .as_deref(),
        Some("api@example.com")
    );
}

#[tokio::test]
async fn rebuild_refuses_while_a_pipeline_runs() {
    let app = TestApp::start().await;
    let err = match &app.config.database {
        None => rebuild(
            Arc::clone(&app.store),
            &app.config.path,
            app.config.hold_window,
            app.clock_now(),
            |_| {},
        )
        .await
        .unwrap_err(),
        Some(url) => rebuild_postgres(
            Arc::clone(&app.store),
            url,
            app.config.hold_window,
            app.clock_now(),
            |_| {},
        )
        .await
        .unwrap_err(),
    };
    assert!(
        matches!(err, signalbox_engage::EngageError::Conflict { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn stopped_mid_way_resumes_where_it_stopped_with_the_same_result() {
    let mut app = TestApp::start_with(|c| c.batch_size = 7).await;
    mixed_workload(&mut app, 30).await;
    // Stop while it is still working through the log, then go on.
    tokio::time::sleep(Duration::from_millis(15)).await;
    app.engage.shutdown().await;
    let stopped_at = app.engage.applied_seq();
    let last = app.store.last_seq().await.unwrap();
    app.restart().await;
    assert!(app.engage.applied_seq() >= stopped_at);
    mixed_workload(&mut app, 10).await;
    app.settle().await;
    let resumed = app.engage.dump().await.unwrap();
    assert!(app.engage.applied_seq() > last);

    // The same log applied in one go gives the same state.
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
    let once = Engage::open_readonly(&app.config.path)
        .await
        .unwrap()
        .dump()
        .await
        .unwrap();
    assert_eq!(first_difference(&resumed, &once), None);
}

#[tokio::test]
async fn a_retried_order_never_duplicates_its_events() {
    let mut app = TestApp::start().await;
    app.identify(json!({"userId": "u1", "traits": {"email": "o@example.com"}}))
        .await;
    let order = json!({"userId": "u1", "event": "Order Completed",
        "properties": {"order_id": "1001", "revenue": 12,
            "products": [{"product_id": "A", "price": 5}, {"product_id": "B", "price": 7}]}});
    // A client retry with a fresh messageId: the log keeps both, engage dedupes.
    app.track(order.clone()).await;
    app.track(order).await;
    // Same eventId twice: one event.
    for _ in 0..2 {
        app.track(json!({"userId": "u1", "event": "Reviewed",
            "properties": {"eventId": "rev-1"}}))
            .await;
    }
    app.settle().await;
    let profile = app.by_email("o@example.com").await;
    let feed = app.feed_of(&profile).await;
    let mut ids: Vec<_> = feed.iter().map(|e| e.unique_id.clone()).collect();
    ids.sort();
    assert_eq!(ids, ["1001", "1001_A", "1001_B", "rev-1"]);
    assert_eq!(app.counter("events.duplicate").await, 4);
}

#[tokio::test]
async fn events_in_the_same_second_without_unique_id_are_all_kept() {
    let app = TestApp::start().await;
    let event = ApiEventInput {
        metric_name: "Tapped".into(),
        profile: ProfileInput {
            email: Some("s@example.com".into()),
            ..ProfileInput::default()
        },
        time: Some(at("2026-03-01T10:00:00Z")),
        ..ApiEventInput::default()
    };
    app.engage
        .create_events(vec![event.clone(), event.clone(), event])
        .await
        .unwrap();
    app.settle().await;
    let profile = app.by_email("s@example.com").await;
    assert_eq!(app.feed_of(&profile).await.len(), 3);
}

#[tokio::test]
async fn latency_from_receipt_to_applied_is_recorded() {
    let mut app = TestApp::start().await;
    app.identify(json!({"userId": "u", "traits": {"email": "l@example.com"}}))
        .await;
    app.settle().await;
    let stats = app.engage.stats();
    assert_eq!(stats.entries, 1);
    assert_eq!(stats.latency.entries, 1);
    assert!(stats.batches >= 1);
}

/// The first differing line of two dumps, for a readable failure.
pub(crate) fn first_difference(a: &str, b: &str) -> Option<(usize, String, String)> {
    let mut left = a.lines();
    let mut right = b.lines();
    let mut n = 0;
    loop {
        n += 1;
        match (left.next(), right.next()) {
            (None, None) => return None,
            (l, r) if l == r => continue,
            (l, r) => {
                return Some((
                    n,
                    l.unwrap_or("<end>").to_owned(),
                    r.unwrap_or("<end>").to_owned(),
                ))
            }
        }
    }
}

impl TestApp {
    pub fn clock_now(&self) -> jiff::Timestamp {
        use signalbox_core::Clock;
        self.clock.now()
    }
}
