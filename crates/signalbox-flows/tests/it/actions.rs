//! Splits, profile and list updates, message statuses.

use jiff::SignedDuration;
use serde_json::{json, Value};
use signalbox_engage::ProfileId;
use signalbox_flows::{FlowStatus, FlowUpdate};

use crate::helpers::*;

fn email(id: &str, subject: &str, next: Value) -> Value {
    json!({"temporary_id": id, "type": "send-email", "data": {"status": "live", "message": {
        "subject_line": subject, "html": "<p>{{ first_name }}</p>", "smart_sending_enabled": false}},
        "links": {"next": next}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_split_branches_on_the_triggering_event() {
    let mut app = TestApp::start().await;
    let viewed = app.metric("Product Viewed").await;
    let flow = app
        .live_flow(json!({
            "triggers": [{"type": "metric", "id": viewed}],
            "entry_action_id": "split",
            "actions": [
                {"temporary_id": "split", "type": "trigger-split", "data": {"trigger_filter": {"condition_groups": [{"conditions": [
                    {"type": "metric-property", "field": "Category", "filter": {"type": "string", "operator": "equals", "value": "Tea"}}]}]}},
                 "links": {"next_if_true": "tea", "next_if_false": "other"}},
                email("tea", "Tea for you", Value::Null),
                email("other", "Something else", Value::Null)
            ]
        }))
        .await;
    app.profile("t@example.com", "Tess").await;
    app.profile("o@example.com", "Otto").await;
    app.track(
        "t@example.com",
        "Product Viewed",
        json!({"Category": "tea"}),
    )
    .await;
    app.track(
        "o@example.com",
        "Product Viewed",
        json!({"Category": "Coffee"}),
    )
    .await;
    app.settle().await;
    let mut got: Vec<(Vec<String>, String)> = app
        .sink()
        .wait_for(2)
        .iter()
        .map(parse_mail)
        .map(|m| (m.to, m.subject))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            (
                vec!["o@example.com".to_owned()],
                "Something else".to_owned()
            ),
            (vec!["t@example.com".to_owned()], "Tea for you".to_owned())
        ]
    );
    let stats = app.flows.stats(&flow.id).await.unwrap();
    let split = &flow.definition.actions[0].id;
    assert_eq!(stats.action(split).get("split_true"), 1);
    assert_eq!(stats.action(split).get("split_false"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_split_reads_the_profile_and_updates_write_it() {
    let mut app = TestApp::start_with(Options {
        mail: false,
        ..Options::default()
    })
    .await;
    let signed_up = app.metric("Signed Up").await;
    let flow = app
        .live_flow(json!({
            "triggers": [{"type": "metric", "id": signed_up}],
            "entry_action_id": "split",
            "actions": [
                {"temporary_id": "split", "type": "conditional-split", "data": {"profile_filter": {"condition_groups": [{"conditions": [
                    {"type": "profile-property", "property": "properties['plan']", "filter": {"type": "string", "operator": "equals", "value": "pro"}}]}]}},
                 "links": {"next_if_true": "vip", "next_if_false": "list"}},
                {"temporary_id": "vip", "type": "update-profile", "data": {"profile_operations": [
                    {"operation": "update", "key": "vip", "value": true},
                    {"operation": "update", "key": "title", "value": "Pro customer"}]}, "links": {"next": null}},
                {"temporary_id": "list", "type": "list-update", "data": {"list_id": "NURTURE", "action": "add"}, "links": {"next": null}}
            ]
        }))
        .await;
    let pro = app
        .profile_with(signalbox_engage::ProfileInput {
            email: Some("pro@example.com".into()),
            properties: json!({"plan": "pro"}).as_object().cloned().unwrap(),
            ..Default::default()
        })
        .await;
    let free = app.profile("free@example.com", "Fay").await;
    app.track("pro@example.com", "Signed Up", json!({})).await;
    app.track("free@example.com", "Signed Up", json!({})).await;
    app.settle().await;
    app.settle().await;
    let pro = app.engage.get_profile(&pro.id).await.unwrap();
    assert_eq!(pro.properties.get("vip"), Some(&json!(true)));
    assert_eq!(pro.title.as_deref(), Some("Pro customer"));
    let lists = app.lists.0.lock().unwrap().clone();
    assert_eq!(
        lists,
        [("add".to_owned(), "NURTURE".to_owned(), free.id.to_string())]
    );
    let stats = app.flows.stats(&flow.id).await.unwrap();
    assert_eq!(stats.flow.get("completed"), 2, "{stats:?}");
    let _ = ProfileId(String::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draft_messages_are_skipped_and_manual_ones_held() {
    let mut app = TestApp::start().await;
    let metric = app.metric("Ping").await;
    let mut definition = json!({
        "triggers": [{"type": "metric", "id": metric}],
        "entry_action_id": "e1",
        "actions": [email("e1", "First", json!("e2")), email("e2", "Second", Value::Null)]
    });
    definition["actions"][0]["data"]["status"] = json!("draft");
    let flow = app.live_flow(definition).await;
    app.profile("p@example.com", "Pia").await;
    app.track("p@example.com", "Ping", json!({})).await;
    app.settle().await;
    let messages = app.sink().wait_for(1);
    assert_eq!(messages.len(), 1);
    assert_eq!(parse_mail(&messages[0]).subject, "Second");
    let stats = app.flows.stats(&flow.id).await.unwrap();
    assert_eq!(
        stats
            .action(&flow.definition.actions[0].id)
            .get("skipped:draft"),
        1
    );

    // A manual flow holds every message for review.
    app.flows
        .update_flow(
            &flow.id,
            FlowUpdate {
                status: Some(FlowStatus::Manual),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    app.clock.advance(SignedDuration::from_secs(2));
    app.track("p@example.com", "Ping", json!({"n": 2})).await;
    app.settle().await;
    assert_eq!(app.sink().messages().len(), 1);
    let stats = app.flows.stats(&flow.id).await.unwrap();
    // Every message follows the flow's status: the first is held for review now.
    assert_eq!(stats.flow.get("skipped:draft"), 1, "{stats:?}");
    assert_eq!(stats.flow.get("held"), 1, "{stats:?}");
    assert_eq!(stats.flow.get("pending"), 1, "{stats:?}");
    assert_eq!(stats.flow.get("skipped:manual"), 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_flows_admit_nobody_and_hold_their_runs() {
    let mut app = TestApp::start().await;
    let metric = app.metric("Ping").await;
    let flow = app
        .live_flow(json!({
            "triggers": [{"type": "metric", "id": metric}],
            "entry_action_id": "d",
            "actions": [
                {"temporary_id": "d", "type": "time-delay", "data": {"unit": "hours", "value": 1}, "links": {"next": "e"}},
                email("e", "Later", Value::Null)
            ]
        }))
        .await;
    app.profile("p@example.com", "Pia").await;
    app.track("p@example.com", "Ping", json!({})).await;
    app.settle().await;
    app.flows
        .update_flow(
            &flow.id,
            FlowUpdate {
                status: Some(FlowStatus::Paused),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    app.track("p@example.com", "Ping", json!({"again": true}))
        .await;
    app.advance(SignedDuration::from_hours(2)).await;
    assert!(app.sink().messages().is_empty());
    assert_eq!(
        app.flows.stats(&flow.id).await.unwrap().flow.get("entered"),
        1
    );
    app.flows
        .update_flow(
            &flow.id,
            FlowUpdate {
                status: Some(FlowStatus::Live),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    app.settle().await;
    assert_eq!(app.sink().wait_for(1).len(), 1);
}
