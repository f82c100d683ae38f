//! The engine on PostgreSQL ([`PgFlowStore`]): an event starts a run that sends, and of two
//! engines on one database only one turns the change feed into runs.

use std::sync::Arc;

use serde_json::json;
use signalbox_flows::{FlowStore, PgFlowStore, RunStatus};
use signalbox_store::postgres::testing::TestDatabase;

use crate::helpers::*;

fn welcome(metric: &str) -> serde_json::Value {
    json!({
        "triggers": [{"type": "metric", "id": metric}],
        "entry_action_id": "e",
        "actions": [{"temporary_id": "e", "type": "send-email", "data": {"status": "live", "message": {
            "subject_line": "Welcome, {{ first_name }}", "html": "<p>Hello</p>",
            "smart_sending_enabled": false}}, "links": {"next": null}}]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_starts_a_run_that_sends_on_postgres() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let store: Arc<dyn FlowStore> = Arc::new(PgFlowStore::connect(db.url(), 4).await.unwrap());
    let mut app = TestApp::start_with(Options {
        flow_store: Some(Arc::clone(&store)),
        ..Options::default()
    })
    .await;
    let metric = app.metric("Joined").await;
    let flow = app.live_flow(welcome(&metric)).await;
    app.profile("ada@example.com", "Ada").await;
    app.track("ada@example.com", "Joined", json!({})).await;
    app.settle().await;
    let messages = app.sink().wait_for(1);
    assert_eq!(parse_mail(&messages[0]).subject, "Welcome, Ada");
    let runs = app.flows.runs(&flow.id, 10).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, RunStatus::Completed);
    // The state is the database's: an engine started again on it sees the run.
    app.restart(|_| {}).await;
    assert_eq!(app.flows.runs(&flow.id, 10).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_engine_at_a_time_leads_ingestion() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let first = Arc::new(PgFlowStore::connect(db.url(), 2).await.unwrap());
    let second = Arc::new(PgFlowStore::connect(db.url(), 2).await.unwrap());
    let (first, second) = tokio::task::spawn_blocking(move || {
        assert!(first.lead_ingestion().unwrap());
        // Asking again keeps the lead; the other store does not get it.
        assert!(first.lead_ingestion().unwrap());
        assert!(!second.lead_ingestion().unwrap());
        first.release_ingestion().unwrap();
        assert!(second.lead_ingestion().unwrap());
        assert!(!first.lead_ingestion().unwrap());
        (first, second)
    })
    .await
    .unwrap();
    // A store dropped with the lead (a node that dies) lets it go with its connection.
    drop(second);
    let taken = tokio::task::spawn_blocking(move || {
        for _ in 0..100 {
            if first.lead_ingestion().unwrap() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        false
    })
    .await
    .unwrap();
    assert!(taken);
}
