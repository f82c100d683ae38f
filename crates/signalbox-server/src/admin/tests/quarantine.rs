//! `/admin/v1/engage/quarantine`: listing the entries the pipeline set aside, and retrying one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::json;
use signalbox_core::{CallKind, NewCall, StoredCall, SystemClock};
use signalbox_engage::{Engage, EngageConfig, EntryFault};

use super::*;

const POISONED: &str = "poisoned@example.com";

/// The test app with an engage pipeline on which entries naming [`POISONED`] fail until
/// `fixed` is set; one such entry is in the log, set aside, after one that applies.
async fn app_with_quarantine(fixed: &Arc<AtomicBool>) -> (TestApp, i64) {
    let mut app = spawn_app().await;
    let fixed = Arc::clone(fixed);
    let mut config = EngageConfig::new(app._dir.path().join("engage.db"));
    config.poll_interval = Duration::from_millis(5);
    config.fault = Some(EntryFault(Arc::new(move |entry: &StoredCall| {
        (!fixed.load(Ordering::SeqCst) && entry.payload.contains(POISONED))
            .then(|| "planned failure".to_owned())
    })));
    let engage = Engage::start(Arc::clone(&app.state.store), Arc::new(SystemClock), config)
        .await
        .unwrap();
    let source = app.source_id("default").await;
    let now = Timestamp::now();
    let identify = |id: &str, email: &str| NewCall {
        kind: CallKind::Identify,
        message_id: id.to_owned(),
        received_at: now,
        payload: json!({"type": "identify", "messageId": id, "userId": id,
            "traits": {"email": email}, "receivedAt": now.to_string()})
        .to_string(),
    };
    let outcome = app
        .store()
        .append(
            source,
            vec![identify("m1", "fine@example.com"), identify("m2", POISONED)],
            Vec::new(),
        )
        .await
        .unwrap();
    engage.notify();
    engage.catch_up(Duration::from_secs(20)).await.unwrap();
    app.state.engine = Some(crate::app::test_engine(&engage, app._dir.path()).await);
    (app, outcome.last_seq)
}

#[tokio::test]
async fn quarantined_entries_are_listed_and_retried() {
    let fixed = Arc::new(AtomicBool::new(false));
    let (app, seq) = app_with_quarantine(&fixed).await;
    let listed = app.get("/admin/v1/engage/quarantine").await;
    assert_eq!(listed.status, StatusCode::OK, "{:?}", listed.body);
    let data = listed.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{:?}", listed.body);
    assert_eq!(data[0]["seq"], json!(seq));
    assert_eq!(data[0]["kind"], json!("identify"));
    assert_eq!(data[0]["source"], json!("default"));
    assert_eq!(data[0]["tries"], json!(3));
    assert_eq!(data[0]["error"], json!("internal error: planned failure"));
    assert!(data[0]["receivedAt"].is_string());
    assert_eq!(listed.body["next"], Value::Null);

    // Still failing: the answer says so, and the entry stays with one more try.
    let uri = format!("/admin/v1/engage/quarantine/{seq}/retry");
    let again = app.call(Method::POST, &uri, None).await;
    assert_eq!(again.status, StatusCode::OK, "{:?}", again.body);
    assert_eq!(
        again.body,
        json!({"seq": seq, "applied": false, "error": "internal error: planned failure", "tries": 4})
    );

    fixed.store(true, Ordering::SeqCst);
    let applied = app.call(Method::POST, &uri, None).await;
    assert_eq!(applied.body, json!({"seq": seq, "applied": true}));
    let listed = app.get("/admin/v1/engage/quarantine").await;
    assert_eq!(listed.body["data"], json!([]));
    let engage = app.state.engine.clone().unwrap().engage;
    let profiles = engage
        .list_profiles(signalbox_engage::ProfileQuery::default())
        .await
        .unwrap();
    assert!(profiles
        .items
        .iter()
        .any(|p| p.email.as_deref() == Some(POISONED)));

    let gone = app.call(Method::POST, &uri, None).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(gone.error_code(), "not_found");
}

#[tokio::test]
async fn a_retry_needs_a_sequence_number_and_a_key() {
    let fixed = Arc::new(AtomicBool::new(false));
    let (app, seq) = app_with_quarantine(&fixed).await;
    let bad = app
        .call(Method::POST, "/admin/v1/engage/quarantine/x/retry", None)
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.error_field(), &json!("seq"));
    let anonymous = app
        .raw(
            Method::POST,
            &format!("/admin/v1/engage/quarantine/{seq}/retry"),
            None,
            None,
        )
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let listing = app
        .raw(Method::GET, "/admin/v1/engage/quarantine", None, None)
        .await;
    assert_eq!(listing.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn without_engage_the_routes_answer_503() {
    let app = spawn_app().await;
    let answer = app.get("/admin/v1/engage/quarantine").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
}
