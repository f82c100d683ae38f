//! What every [`SyncStore`] backend must do, as test functions over `&dyn SyncStore`: the
//! SQLite backend runs them in its unit tests, a later backend runs the same ones (feature
//! `testsuite`). Each function expects an empty store.

use jiff::{SignedDuration, Timestamp};
use serde_json::json;

use super::{Commit, NewDeadLetter, SyncStore};
use crate::error::SyncError;
use crate::model::{
    DeliveryOutcome, DeliveryRecord, DestinationConfig, DestinationPatch, DestinationState,
    NewDestination, Position, Replay, Secret,
};

/// Now, to the microsecond: what every backend keeps of a time.
fn now() -> Timestamp {
    Timestamp::from_microsecond(Timestamp::now().as_microsecond()).expect("now is in range")
}

/// A webhook destination named `name` following the source `web`.
pub fn webhook(name: &str) -> NewDestination {
    NewDestination {
        name: name.to_owned(),
        config: DestinationConfig::Webhook {
            url: "https://hooks.example.com/in".into(),
            secret: Some(Secret::new("whsec-conformance-secret")),
            sources: vec!["web".into()],
        },
        rate: None,
    }
}

fn record(at: Timestamp, n: usize) -> DeliveryRecord {
    DeliveryRecord {
        id: 0,
        destination: String::new(),
        at,
        method: "POST".into(),
        url: "https://hooks.example.com/in".into(),
        request_headers: vec![("content-type".into(), "application/json".into())],
        request_body: format!("{{\"n\":{n}}}"),
        status: Some(200),
        response_body: Some("ok".into()),
        error: None,
        duration_ms: 1.5,
        items: 1,
        outcome: DeliveryOutcome::Delivered,
    }
}

/// Runs every check, each on its own destinations.
pub async fn run_all(store: &dyn SyncStore) {
    destinations_crud(store).await;
    progress_and_commits(store).await;
    created_in_a_state_at_a_cursor(store).await;
    dead_letters_and_replays(store).await;
    deliveries_keep_the_newest_hundred(store).await;
}

pub async fn destinations_crud(store: &dyn SyncStore) {
    let now = now();
    let v0 = store.version().await.unwrap();
    let created = store.create(webhook("crud"), now).await.unwrap();
    assert!(created.id.starts_with("dst_") && created.id.len() == 30);
    assert_eq!(created.state, DestinationState::Active);
    let v1 = store.version().await.unwrap();
    assert!(v1 > v0, "create bumps the version");
    match store.create(webhook("crud"), now).await {
        Err(SyncError::Conflict(name)) => assert_eq!(name, "crud"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(store.get("crud").await.unwrap(), created);
    assert!(store
        .list()
        .await
        .unwrap()
        .iter()
        .any(|d| d.id == created.id));

    let later = now + SignedDuration::from_secs(5);
    let patched = store
        .patch(
            "crud",
            DestinationPatch {
                state: Some(DestinationState::Paused),
                rate: Some(Some(12.5)),
                secret: Some(Secret::new("a-new-secret")),
                sources: Some(vec!["web".into(), "app".into()]),
                ..DestinationPatch::default()
            },
            later,
        )
        .await
        .unwrap();
    assert_eq!(patched.state, DestinationState::Paused);
    assert_eq!(patched.rate, Some(12.5));
    assert_eq!(patched.updated, later);
    assert_eq!(patched.config.sources(), ["web", "app"]);
    match &patched.config {
        DestinationConfig::Webhook { secret, .. } => {
            assert_eq!(secret.as_ref().unwrap().expose(), "a-new-secret")
        }
        other => panic!("kind changed: {other:?}"),
    }
    assert_eq!(store.get("crud").await.unwrap(), patched);
    let v2 = store.version().await.unwrap();
    assert!(v2 > v1, "patch bumps the version");
    let wrong = DestinationPatch {
        only_segment_profiles: Some(true),
        ..DestinationPatch::default()
    };
    assert!(matches!(
        store.patch("crud", wrong, later).await,
        Err(SyncError::Invalid { .. })
    ));
    assert!(matches!(
        store
            .patch("nope", DestinationPatch::default(), later)
            .await,
        Err(SyncError::NotFound(_))
    ));

    store.delete("crud").await.unwrap();
    assert!(
        store.version().await.unwrap() > v2,
        "delete bumps the version"
    );
    assert!(matches!(
        store.get("crud").await,
        Err(SyncError::NotFound(_))
    ));
    assert!(matches!(
        store.progress(&created.id).await,
        Err(SyncError::NotFound(_))
    ));
    assert!(matches!(
        store.delete("crud").await,
        Err(SyncError::NotFound(_))
    ));
    // A commit racing a delete changes nothing and does not fail.
    store
        .commit(
            &created.id,
            Commit {
                delivered: 1,
                ..Commit::default()
            },
        )
        .await
        .unwrap();
}

pub async fn progress_and_commits(store: &dyn SyncStore) {
    let now = now();
    let d = store.create(webhook("progress"), now).await.unwrap();
    let fresh = store.progress(&d.id).await.unwrap();
    assert_eq!(fresh.cursor, Position::default());
    assert_eq!(fresh.delivered, 0);

    store
        .commit(
            &d.id,
            Commit {
                cursor: Some(Position { seq: 10, n: 0 }),
                delivered: 7,
                retried: 2,
                failed: 3,
                error: Some(Some("receiver answered 503".into())),
                at: Some(now),
                ..Commit::default()
            },
        )
        .await
        .unwrap();
    let p = store.progress(&d.id).await.unwrap();
    assert_eq!(p.cursor, Position { seq: 10, n: 0 });
    assert_eq!((p.delivered, p.retried, p.failed), (7, 2, 3));
    assert_eq!(p.last_error.as_deref(), Some("receiver answered 503"));
    assert!(p.last_error_at.is_some());
    assert_eq!(p.last_delivery_at, Some(now));

    store
        .commit(
            &d.id,
            Commit {
                cursor: Some(Position { seq: 12, n: 3 }),
                delivered: 1,
                error: Some(None),
                at: Some(now),
                ..Commit::default()
            },
        )
        .await
        .unwrap();
    let p = store.progress(&d.id).await.unwrap();
    assert_eq!(p.cursor, Position { seq: 12, n: 3 });
    assert_eq!(p.delivered, 8);
    assert_eq!(p.last_error, None);

    // A rewind moves back only.
    store
        .rewind(&d.id, Position { seq: 20, n: 0 })
        .await
        .unwrap();
    assert_eq!(
        store.progress(&d.id).await.unwrap().cursor,
        Position { seq: 12, n: 3 }
    );
    store
        .rewind(&d.id, Position { seq: 4, n: 0 })
        .await
        .unwrap();
    assert_eq!(
        store.progress(&d.id).await.unwrap().cursor,
        Position { seq: 4, n: 0 }
    );
    store.delete("progress").await.unwrap();
}

/// `create_at` sets the state and the cursor with the creation (one version bump), so an
/// engine never sees the destination without them.
pub async fn created_in_a_state_at_a_cursor(store: &dyn SyncStore) {
    let now = now();
    let before = store.version().await.unwrap();
    let cursor = Position { seq: 42, n: 3 };
    let d = store
        .create_at(webhook("created-at"), now, DestinationState::Paused, cursor)
        .await
        .unwrap();
    assert_eq!(d.state, DestinationState::Paused);
    assert_eq!(
        store.get("created-at").await.unwrap().state,
        DestinationState::Paused
    );
    assert_eq!(store.progress(&d.id).await.unwrap().cursor, cursor);
    assert_eq!(store.version().await.unwrap(), before + 1);
}

pub async fn dead_letters_and_replays(store: &dyn SyncStore) {
    let now = now();
    let d = store.create(webhook("dead"), now).await.unwrap();
    let letter = |seq: i64, id: &str| NewDeadLetter {
        position: Position { seq, n: 0 },
        message_id: id.to_owned(),
        reason: "receiver refused it: 400".into(),
        status: Some(400),
        response: Some("{\"error\":\"bad\"}".into()),
        payload: json!({"messageId": id, "type": "track"}),
    };
    store
        .commit(
            &d.id,
            Commit {
                cursor: Some(Position { seq: 9, n: 0 }),
                dead_letters: vec![letter(7, "m7"), letter(3, "m3")],
                at: Some(now),
                ..Commit::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(store.progress(&d.id).await.unwrap().dead_lettered, 2);
    let letters = store.dead_letters("dead", true, 100).await.unwrap();
    assert_eq!(
        letters
            .iter()
            .map(|l| l.message_id.as_str())
            .collect::<Vec<_>>(),
        ["m3", "m7"],
        "position order"
    );
    assert_eq!(letters[0].destination, "dead");
    assert_eq!(letters[0].status, Some(400));
    assert_eq!(letters[0].payload["messageId"], "m3");
    assert_eq!(letters[0].replayed_at, None);

    store
        .commit(
            &d.id,
            Commit {
                replayed: vec![letters[0].id],
                delivered: 1,
                at: Some(now),
                ..Commit::default()
            },
        )
        .await
        .unwrap();
    let pending = store.dead_letters("dead", true, 100).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].message_id, "m7");
    let all = store.dead_letters("dead", false, 100).await.unwrap();
    assert_eq!(all.len(), 2);
    assert!(all[0].replayed_at.is_some());

    assert_eq!(store.take_replay(&d.id).await.unwrap(), None);
    let v = store.version().await.unwrap();
    store
        .request_replay("dead", Replay::DeadLetters)
        .await
        .unwrap();
    assert!(
        store.version().await.unwrap() > v,
        "a replay request bumps the version"
    );
    store
        .request_replay("dead", Replay::Since(now))
        .await
        .unwrap();
    assert_eq!(
        store.pending_replays(&d.id).await.unwrap(),
        [Replay::DeadLetters, Replay::Since(now)],
        "looking at the requests takes none of them"
    );
    assert_eq!(
        store.take_replay(&d.id).await.unwrap(),
        Some(Replay::DeadLetters)
    );
    assert_eq!(
        store.pending_replays(&d.id).await.unwrap(),
        [Replay::Since(now)]
    );
    assert_eq!(
        store.take_replay(&d.id).await.unwrap(),
        Some(Replay::Since(now))
    );
    assert_eq!(store.take_replay(&d.id).await.unwrap(), None);
    assert!(store.pending_replays(&d.id).await.unwrap().is_empty());
    assert!(matches!(
        store.request_replay("nope", Replay::DeadLetters).await,
        Err(SyncError::NotFound(_))
    ));
    store.delete("dead").await.unwrap();
    assert!(matches!(
        store.dead_letters("dead", false, 10).await,
        Err(SyncError::NotFound(_))
    ));
}

pub async fn deliveries_keep_the_newest_hundred(store: &dyn SyncStore) {
    let now = now();
    let d = store.create(webhook("records"), now).await.unwrap();
    let other = store.create(webhook("records-other"), now).await.unwrap();
    for n in 0..130 {
        store
            .commit(
                &d.id,
                Commit {
                    record: Some(record(now, n)),
                    ..Commit::default()
                },
            )
            .await
            .unwrap();
    }
    store
        .commit(
            &other.id,
            Commit {
                record: Some(record(now, 999)),
                ..Commit::default()
            },
        )
        .await
        .unwrap();
    let records = store.deliveries("records", 1000).await.unwrap();
    assert_eq!(records.len(), 100);
    assert_eq!(records[0].request_body, "{\"n\":129}", "newest first");
    assert_eq!(records[99].request_body, "{\"n\":30}");
    assert_eq!(records[0].destination, "records");
    assert_eq!(records[0].request_headers, record(now, 0).request_headers);
    assert_eq!(store.deliveries("records", 5).await.unwrap().len(), 5);
    assert_eq!(
        store.deliveries("records-other", 10).await.unwrap().len(),
        1
    );
    store.delete("records").await.unwrap();
    store.delete("records-other").await.unwrap();
}
