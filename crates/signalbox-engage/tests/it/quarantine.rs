//! Quarantine: a log entry that keeps failing is set aside with its error, the entries after
//! it are applied, a rebuild sets it aside the same way, and a retry applies it once the
//! cause is gone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::json;
use signalbox_core::{CallKind, StoredCall};
use signalbox_engage::{rebuild_with_fault, Engage, EngageError, EntryFault, ProfileField};

use crate::helpers::*;
use crate::pipeline::first_difference;

const POISONED: &str = "poisoned@example.com";
const FAILURE: &str = "planned failure: this entry cannot be applied";

/// Entries that mention [`POISONED`] fail to apply until `fixed` is set.
fn poison(fixed: &Arc<AtomicBool>) -> EntryFault {
    let fixed = Arc::clone(fixed);
    EntryFault(Arc::new(move |entry: &StoredCall| {
        (!fixed.load(Ordering::SeqCst) && entry.payload.contains(POISONED))
            .then(|| FAILURE.to_owned())
    }))
}

/// One request with an entry before the poisoned one and two after it: one batch.
async fn send_with_poison(app: &mut TestApp) -> i64 {
    let last = app
        .send_all(vec![
            (
                CallKind::Identify,
                json!({"userId": "u1", "traits": {"email": "before@example.com"}}),
            ),
            (
                CallKind::Identify,
                json!({"userId": "u2", "traits": {"email": POISONED}}),
            ),
            (
                CallKind::Track,
                json!({"userId": "u1", "event": "Signed Up", "properties": {"plan": "pro"}}),
            ),
            (
                CallKind::Identify,
                json!({"userId": "u3", "traits": {"email": "after@example.com"}}),
            ),
        ])
        .await;
    last - 2
}

async fn counter(engage: &Engage, name: &str) -> i64 {
    let counters = engage.counters().await.unwrap();
    counters
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| *v)
        .unwrap_or(0)
}

#[tokio::test]
async fn a_poisoned_entry_is_set_aside_and_the_entries_after_it_are_applied() {
    let fixed = Arc::new(AtomicBool::new(false));
    let fault = poison(&fixed);
    let mut app = TestApp::start_with(|c| c.fault = Some(fault)).await;
    let poisoned = send_with_poison(&mut app).await;
    // The checkpoint moves past it: the pipeline is not stalled.
    app.settle().await;
    app.by_email("before@example.com").await;
    app.by_email("after@example.com").await;
    assert!(app
        .profile_by(ProfileField::Email, POISONED)
        .await
        .is_none());
    assert_eq!(app.metric("Signed Up").await.name, "Signed Up");

    let quarantined = app.engage.quarantined(0, 100).await.unwrap();
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    let entry = &quarantined[0];
    assert_eq!(entry.seq, poisoned);
    assert_eq!(entry.kind, "identify");
    assert_eq!(entry.source_id, app.source.0);
    assert_eq!(entry.tries, 3);
    assert_eq!(entry.error, format!("internal error: {FAILURE}"));
    assert_eq!(counter(&app.engage, "quarantined").await, 1);
    // A retry reads the entry from the log again: the log keeps it.
    let needs = app.engage.log_needs().await.unwrap();
    assert_eq!(needs.oldest_quarantined_seq, Some(poisoned));
    assert!(needs.applied_seq > poisoned);
    let dump = app.engage.dump().await.unwrap();
    assert!(
        dump.lines().any(|l| l.starts_with(&format!(
            "problems [{poisoned},0,null,\"log entry set aside"
        ))),
        "the quarantine is recorded as a problem"
    );

    // Later calls go on being applied, also after a restart.
    app.restart().await;
    app.identify(json!({"userId": "u4", "traits": {"email": "later@example.com"}}))
        .await;
    app.settle().await;
    app.by_email("later@example.com").await;
    assert_eq!(app.engage.quarantined(0, 100).await.unwrap().len(), 1);

    // A retry while the cause is still there answers the error and counts the try.
    let err = app.engage.retry_quarantined(poisoned).await.unwrap_err();
    assert_eq!(err, EngageError::Internal(FAILURE.to_owned()));
    let still = app.engage.quarantined(0, 100).await.unwrap();
    assert_eq!(still[0].tries, 4);

    // Once it is gone, the retry applies the entry and takes it out of the quarantine.
    fixed.store(true, Ordering::SeqCst);
    app.engage.retry_quarantined(poisoned).await.unwrap();
    let profile = app.by_email(POISONED).await;
    assert_eq!(profile.external_id.as_deref(), Some("u2"));
    assert!(app.engage.quarantined(0, 100).await.unwrap().is_empty());
    assert_eq!(
        app.engage.log_needs().await.unwrap().oldest_quarantined_seq,
        None
    );
    assert_eq!(counter(&app.engage, "quarantine.retried").await, 1);
    let dump = app.engage.dump().await.unwrap();
    assert!(
        !dump.contains("log entry set aside"),
        "the problem note goes too"
    );
    // Nothing is quarantined under that number any more.
    assert!(matches!(
        app.engage.retry_quarantined(poisoned).await,
        Err(EngageError::NotFound { .. })
    ));
}

#[tokio::test]
async fn a_rebuild_that_meets_the_same_poisoned_entry_sets_it_aside_the_same_way() {
    let fixed = Arc::new(AtomicBool::new(false));
    let fault = poison(&fixed);
    let mut app = TestApp::start_with(|c| c.fault = Some(fault.clone())).await;
    send_with_poison(&mut app).await;
    app.identify(json!({"userId": "u5", "traits": {"email": "other@example.com"}}))
        .await;
    app.settle().await;
    let before = app.engage.dump().await.unwrap();
    assert!(before.lines().any(|l| l.starts_with("quarantine [")));
    app.engage.shutdown().await;

    let path = app.config.path.clone();
    rebuild_with_fault(
        Arc::clone(&app.store),
        &path,
        app.config.hold_window,
        app.clock_now(),
        Some(fault),
        |_| {},
    )
    .await
    .unwrap();
    let rebuilt = Engage::open_readonly(&path).await.unwrap();
    let after = rebuilt.dump().await.unwrap();
    assert_eq!(first_difference(&before, &after), None);
}

#[tokio::test]
async fn a_retry_needs_the_running_pipeline() {
    let app = TestApp::start().await;
    let path = app.config.path.clone();
    let readonly = Engage::open_readonly(&path).await.unwrap();
    assert_eq!(
        readonly.retry_quarantined(1).await,
        Err(EngageError::Unavailable)
    );
    assert!(matches!(
        app.engage.retry_quarantined(1).await,
        Err(EngageError::NotFound { .. })
    ));
}
