//! The change feed that audiences and flows follow.

use serde_json::json;
use signalbox_engage::feed::FeedCursor;

use crate::helpers::TestApp;

// The reader is called from the test's task: a backend that waits on the runtime steps
// out of a worker of a multi-thread one to do so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_reports_each_event_and_changed_profile_once_in_log_order() {
    let mut app = TestApp::start().await;
    app.identify(json!({"userId": "u1", "traits": {"email": "a@example.com"}}))
        .await;
    app.track(json!({"userId": "u1", "event": "Viewed", "properties": {"n": 1}}))
        .await;
    app.settle().await;
    let reader = app.engage.reader().unwrap();
    let first = reader
        .changes(&FeedCursor::default(), app.engage.applied_seq(), 100)
        .unwrap();
    assert_eq!(first.events.len(), 1);
    assert_eq!(first.events[0].metric_name, "Viewed");
    assert_eq!(first.profiles.len(), 1);
    let profile = app.by_email("a@example.com").await;
    assert_eq!(
        reader.profile_id(first.profiles[0]).unwrap(),
        Some(profile.id.clone())
    );
    assert_eq!(
        reader.profile_key(&profile.id).unwrap(),
        Some(first.profiles[0])
    );

    // An event alone does not change its profile; a trait does.
    app.track(json!({"userId": "u1", "event": "Viewed", "properties": {"n": 2}}))
        .await;
    app.settle().await;
    let second = reader
        .changes(&first.cursor, app.engage.applied_seq(), 100)
        .unwrap();
    assert_eq!(second.events.len(), 1);
    assert!(second.profiles.is_empty(), "{second:?}");
    app.identify(json!({"userId": "u1", "traits": {"plan": "pro"}}))
        .await;
    app.settle().await;
    let third = reader
        .changes(&second.cursor, app.engage.applied_seq(), 100)
        .unwrap();
    assert!(third.events.is_empty());
    assert_eq!(third.profiles, first.profiles);
    let empty = reader
        .changes(&third.cursor, app.engage.applied_seq(), 100)
        .unwrap();
    assert!(empty.is_empty());
}

// The reader is called from the test's task: a backend that waits on the runtime steps
// out of a worker of a multi-thread one to do so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_pages_by_limit_and_stops_at_the_checkpoint_given() {
    let mut app = TestApp::start().await;
    app.identify(json!({"userId": "u1", "traits": {"email": "a@example.com"}}))
        .await;
    let mut upto = 0;
    for n in 0..5 {
        upto = app
            .track(json!({"userId": "u1", "event": "Viewed", "properties": {"n": n}}))
            .await;
    }
    app.track(json!({"userId": "u1", "event": "Later"})).await;
    app.settle().await;
    let reader = app.engage.reader().unwrap();
    let mut cursor = FeedCursor::default();
    let mut seen = Vec::new();
    loop {
        let page = reader.changes(&cursor, upto, 2).unwrap();
        seen.extend(page.events.iter().map(|e| e.metric_name.clone()));
        cursor = page.cursor;
        if !page.more {
            break;
        }
    }
    assert_eq!(seen, ["Viewed"; 5]);
}
