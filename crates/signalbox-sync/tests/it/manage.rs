//! Creating, changing and looking at destinations: validation, a CLI handle's status, pause
//! and resume picked up by a running engine.

use std::time::Duration;

use jiff::Timestamp;
use signalbox_sync::{
    DestinationConfig, DestinationPatch, DestinationState, NewDestination, Secret, Sync, SyncError,
};

use crate::helpers::*;

fn field_of(result: Result<impl std::fmt::Debug, SyncError>) -> String {
    match result {
        Err(SyncError::Invalid { field, .. }) => field,
        other => panic!("expected a field error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_and_patch_are_validated() {
    let h = Harness::new().await;
    let sync = Sync::new(h.deps());
    assert_eq!(
        field_of(sync.create(webhook("bad name", "http://h/in", None)).await),
        "name"
    );
    assert_eq!(
        field_of(sync.create(webhook("x", "ftp://h/in", None)).await),
        "url"
    );
    assert_eq!(
        field_of(sync.create(webhook("x", "not a url", None)).await),
        "url"
    );
    assert_eq!(
        field_of(sync.create(webhook("x", "http://h/in", Some(""))).await),
        "secret"
    );
    let mut unknown = webhook("x", "http://h/in", None);
    if let DestinationConfig::Webhook { sources, .. } = &mut unknown.config {
        *sources = vec!["nope".into()];
    }
    assert_eq!(field_of(sync.create(unknown).await), "sources");
    let mut none = webhook("x", "http://h/in", None);
    if let DestinationConfig::Webhook { sources, .. } = &mut none.config {
        sources.clear();
    }
    assert_eq!(field_of(sync.create(none).await), "sources");
    for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let mut new = webhook("x", "http://h/in", None);
        new.rate = Some(rate);
        assert_eq!(field_of(sync.create(new).await), "rate");
    }
    let segment = |key: &str, endpoint: &str| NewDestination {
        name: "seg".into(),
        config: DestinationConfig::Segment {
            write_key: Secret::new(key),
            endpoint: endpoint.into(),
            only_segment_profiles: false,
        },
        rate: None,
    };
    assert_eq!(
        field_of(sync.create(segment("", "https://api.segment.io")).await),
        "write_key"
    );
    assert_eq!(
        field_of(sync.create(segment("wk", "segment")).await),
        "endpoint"
    );
    let klaviyo = NewDestination {
        name: "k".into(),
        config: DestinationConfig::Klaviyo {
            api_key: Secret::new(" "),
            endpoint: "https://a.klaviyo.com".into(),
            sources: vec!["web".into()],
        },
        rate: None,
    };
    assert_eq!(field_of(sync.create(klaviyo).await), "api_key");

    sync.create(webhook("good", "http://h/in", None))
        .await
        .unwrap();
    assert!(matches!(
        sync.create(webhook("good", "http://h/in", None)).await,
        Err(SyncError::Conflict(_))
    ));
    let patch = DestinationPatch {
        endpoint: Some("gopher://h".into()),
        ..DestinationPatch::default()
    };
    assert_eq!(field_of(sync.patch("good", patch).await), "url");
    let patch = DestinationPatch {
        rate: Some(Some(-3.0)),
        ..DestinationPatch::default()
    };
    assert_eq!(field_of(sync.patch("good", patch).await), "rate");
    let patch = DestinationPatch {
        rate: Some(Some(5.0)),
        ..DestinationPatch::default()
    };
    assert_eq!(sync.patch("good", patch).await.unwrap().rate, Some(5.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handle_without_tasks_reports_from_the_store_and_the_log() {
    let h = Harness::new().await;
    let cli = Sync::new(h.deps());
    cli.create(webhook("hook", "http://127.0.0.1:9/in", None))
        .await
        .unwrap();
    h.append_tracks(
        0,
        30,
        Timestamp::now() - jiff::SignedDuration::from_secs(100),
    )
    .await;
    let status = cli.status("hook").await.unwrap();
    assert_eq!(status.queued, 30);
    assert_eq!(status.delivered, 0);
    assert!(status.lag_seconds >= 50.0, "{status:?}");
    assert!(!status.retrying);
    assert_eq!(cli.statuses().await.unwrap().len(), 1);
    assert!(cli.wait_idle(Duration::from_millis(10)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_engine_picks_up_pause_resume_and_delete_from_another_handle() {
    let h = Harness::new().await;
    let receiver = Receiver::start().await;
    let engine = h.start();
    // Another process's handle on the same files (the CLI).
    let cli = Sync::new(h.deps());
    cli.create(webhook("hook", &receiver.url("/in"), None))
        .await
        .unwrap();
    let first = h.append_tracks(0, 10, Timestamp::now()).await;
    engine.notify();
    receiver.wait_for(10, WAIT).await;
    assert!(engine.wait_idle(WAIT).await);

    cli.patch(
        "hook",
        DestinationPatch {
            state: Some(DestinationState::Paused),
            ..DestinationPatch::default()
        },
    )
    .await
    .unwrap();
    assert!(engine.wait_idle(WAIT).await, "the pause is picked up");
    let more = h.append_tracks(10, 20, Timestamp::now()).await;
    engine.notify();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.delivered_ids().len(), 10, "paused: nothing sent");
    assert_eq!(cli.status("hook").await.unwrap().queued, 10);

    cli.patch(
        "hook",
        DestinationPatch {
            state: Some(DestinationState::Active),
            ..DestinationPatch::default()
        },
    )
    .await
    .unwrap();
    let delivered = receiver.wait_for(20, WAIT).await;
    let expected: Vec<String> = first.into_iter().chain(more).collect();
    assert_all_in_order(&delivered, &expected);

    cli.delete("hook").await.unwrap();
    assert!(engine.wait_idle(WAIT).await);
    h.append_tracks(20, 25, Timestamp::now()).await;
    engine.notify();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(receiver.delivered_ids().len(), 20, "deleted: nothing sent");
    engine.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_destination_starts_at_the_end_of_the_log_and_a_paused_one_sends_nothing() {
    let h = Harness::new().await;
    let receiver = Receiver::start().await;
    h.append_tracks(0, 50, Timestamp::now()).await;
    let sync = h.start();
    create(&sync, webhook("late", &receiver.url("/in"), None)).await;
    let paused_receiver = Receiver::start().await;
    let paused = sync
        .create_paused(webhook("held", &paused_receiver.url("/in"), None))
        .await
        .unwrap();
    assert_eq!(paused.state, signalbox_sync::DestinationState::Paused);
    let fresh = h.append_tracks(50, 60, Timestamp::now()).await;
    sync.notify();
    let delivered = receiver.wait_for(10, WAIT).await;
    assert!(sync.wait_idle(WAIT).await);
    // Only what arrived after the destination was made; the history is for `replay --since`.
    assert_eq!(delivered.len(), 10, "{delivered:?}");
    assert_all_in_order(&delivered, &fresh);
    assert!(paused_receiver.delivered_ids().is_empty());
    sync.shutdown(Duration::from_secs(5)).await;
}
