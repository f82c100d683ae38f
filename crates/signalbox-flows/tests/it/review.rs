//! Messages of manual flows and actions: held for review, approved (sent once), skipped, or
//! aged out.

use jiff::SignedDuration;
use serde_json::{json, Value};
use signalbox_engage::UnsubscribeRequest;
use signalbox_flows::{FlowStatus, FlowsError, HeldStatus, RunStatus, SendStatus};

use crate::helpers::*;

fn email(id: &str, subject: &str, next: Value) -> Value {
    json!({"temporary_id": id, "type": "send-email", "data": {"status": "live", "message": {
        "subject_line": subject, "html": "<p>Hi {{ first_name }}</p>", "smart_sending_enabled": false}},
        "links": {"next": next}})
}

/// A manual flow of two emails, triggered by `Ping`.
async fn manual_flow(app: &mut TestApp) -> signalbox_flows::FlowInfo {
    let metric = app.metric("Ping").await;
    app.flows
        .create_flow(
            "Reviewed",
            &json!({
                "triggers": [{"type": "metric", "id": metric}],
                "entry_action_id": "e1",
                "actions": [email("e1", "First", json!("e2")), email("e2", "Second", Value::Null)]
            }),
            Some(FlowStatus::Manual),
        )
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_message_waits_for_review_and_is_sent_once_when_approved() {
    let mut app = TestApp::start().await;
    let flow = manual_flow(&mut app).await;
    let (first, second) = (
        flow.definition.actions[0].id.clone(),
        flow.definition.actions[1].id.clone(),
    );
    let profile = app.profile("p@example.com", "Pia").await;
    app.track("p@example.com", "Ping", json!({})).await;
    app.settle().await;
    app.advance(SignedDuration::from_secs(60)).await;

    // Held, not sent: the run waits at the message.
    assert!(app.sink().messages().is_empty());
    let page = app
        .flows
        .pending_messages(&flow.id, None, 50)
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 1, "{page:?}");
    assert_eq!(page.next, None);
    let held = &page.messages[0];
    assert_eq!(held.action_id, first);
    assert_eq!(held.kind, "send-email");
    assert_eq!(held.profile_id, profile.id.as_str());
    assert_eq!(held.email.as_deref(), Some("p@example.com"));
    assert_eq!(held.subject.as_deref(), Some("First"));
    assert_eq!(held.status, HeldStatus::Pending);
    assert_eq!(
        held.expires,
        held.created + SignedDuration::from_hours(24 * 7)
    );
    let stats = app.flows.stats(&flow.id).await.unwrap();
    assert_eq!(stats.flow.get("pending"), 1, "{stats:?}");
    assert_eq!(stats.action(&first).get("pending"), 1, "{stats:?}");
    assert_eq!(stats.flow.get("skipped:manual"), 0, "{stats:?}");
    let runs = app.flows.runs(&flow.id, 10).await.unwrap();
    assert_eq!(runs[0].status, RunStatus::Active);
    assert_eq!(runs[0].position.as_deref(), Some(first.as_str()));

    // Approved twice: sent once, through SMTP, then the run moves on to the next message,
    // which is held in turn.
    let approved = app.flows.approve_message(&flow.id, held.id).await.unwrap();
    assert_eq!(approved.status, HeldStatus::Approved);
    let again = app.flows.approve_message(&flow.id, held.id).await.unwrap();
    assert_eq!(again.status, HeldStatus::Approved);
    app.settle().await;
    let sent = app.sink().wait_for(1);
    assert_eq!(parse_mail(&sent[0]).subject, "First");
    assert_eq!(parse_mail(&sent[0]).to, ["p@example.com"]);
    app.flows.approve_message(&flow.id, held.id).await.unwrap();
    app.advance(SignedDuration::from_secs(60)).await;
    assert_eq!(app.sink().messages().len(), 1, "approved once, sent once");
    let sends = app.flows.sends(&flow.id).await.unwrap();
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0].status, SendStatus::Sent);

    let page = app
        .flows
        .pending_messages(&flow.id, None, 50)
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 1, "{page:?}");
    let next = &page.messages[0];
    assert_eq!(next.action_id, second);
    assert_eq!(next.subject.as_deref(), Some("Second"));

    // Skipped: never sent, counted, and the run completes.
    let skipped = app.flows.skip_message(&flow.id, next.id).await.unwrap();
    assert_eq!(skipped.status, HeldStatus::Skipped);
    app.flows.skip_message(&flow.id, next.id).await.unwrap();
    let conflict = app
        .flows
        .approve_message(&flow.id, next.id)
        .await
        .unwrap_err();
    assert!(
        matches!(&conflict, FlowsError::Conflict { reason } if reason.contains("skipped")),
        "{conflict:?}"
    );
    let conflict = app.flows.skip_message(&flow.id, held.id).await.unwrap_err();
    assert!(
        matches!(conflict, FlowsError::Conflict { .. }),
        "{conflict:?}"
    );
    app.advance(SignedDuration::from_secs(60)).await;
    assert_eq!(app.sink().messages().len(), 1);
    let stats = app.flows.stats(&flow.id).await.unwrap();
    assert_eq!(stats.flow.get("sent"), 1, "{stats:?}");
    assert_eq!(stats.flow.get("held"), 2, "{stats:?}");
    assert_eq!(stats.flow.get("approved"), 1, "{stats:?}");
    assert_eq!(stats.flow.get("skipped:manual"), 1, "{stats:?}");
    assert_eq!(stats.action(&second).get("skipped:manual"), 1, "{stats:?}");
    assert_eq!(stats.flow.get("pending"), 0, "{stats:?}");
    assert_eq!(stats.flow.get("completed"), 1, "{stats:?}");
    let all = app.flows.messages(&flow.id, None, None, 50).await.unwrap();
    let statuses: Vec<_> = all.messages.iter().map(|m| m.status).collect();
    assert_eq!(statuses, [HeldStatus::Approved, HeldStatus::Skipped]);

    // Another flow's id, or an unknown one, is not found.
    let missing = app
        .flows
        .approve_message(&flow.id, 9_999)
        .await
        .unwrap_err();
    assert!(
        matches!(missing, FlowsError::NotFound { .. }),
        "{missing:?}"
    );
    let missing = app
        .flows
        .pending_messages("nope", None, 10)
        .await
        .unwrap_err();
    assert!(
        matches!(missing, FlowsError::NotFound { .. }),
        "{missing:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreleased_message_ages_out_after_the_set_time() {
    let mut app = TestApp::start_with(Options {
        tune: Box::new(|config| config.manual_review_expiry = SignedDuration::from_hours(1)),
        ..Options::default()
    })
    .await;
    let flow = manual_flow(&mut app).await;
    let (first, second) = (
        flow.definition.actions[0].id.clone(),
        flow.definition.actions[1].id.clone(),
    );
    app.profile("p@example.com", "Pia").await;
    app.track("p@example.com", "Ping", json!({})).await;
    app.settle().await;
    let held = app
        .flows
        .pending_messages(&flow.id, None, 10)
        .await
        .unwrap();
    let held = held.messages[0].clone();
    assert_eq!(held.expires, held.created + SignedDuration::from_hours(1));

    app.advance(SignedDuration::from_mins(59)).await;
    let still = app.flows.message(&flow.id, held.id).await.unwrap();
    assert_eq!(still.status, HeldStatus::Pending);

    app.advance(SignedDuration::from_mins(2)).await;
    let expired = app.flows.message(&flow.id, held.id).await.unwrap();
    assert_eq!(expired.status, HeldStatus::Expired);
    let conflict = app
        .flows
        .approve_message(&flow.id, held.id)
        .await
        .unwrap_err();
    assert!(
        matches!(&conflict, FlowsError::Conflict { reason } if reason.contains("expired")),
        "{conflict:?}"
    );
    // The run moved on: the second message is held now.
    let page = app
        .flows
        .pending_messages(&flow.id, None, 10)
        .await
        .unwrap();
    assert_eq!(page.messages.len(), 1);
    assert_eq!(page.messages[0].action_id, second);
    let stats = app.flows.stats(&flow.id).await.unwrap();
    assert_eq!(stats.action(&first).get("skipped:expired"), 1, "{stats:?}");
    assert_eq!(stats.flow.get("skipped:expired"), 1, "{stats:?}");

    // A message that is past its time but not yet aged out by the worker cannot be released.
    app.clock.advance(SignedDuration::from_hours(2));
    let late = app
        .flows
        .approve_message(&flow.id, page.messages[0].id)
        .await
        .unwrap_err();
    assert!(matches!(late, FlowsError::Conflict { .. }), "{late:?}");
    app.settle().await;
    let stats = app.flows.stats(&flow.id).await.unwrap();
    assert_eq!(stats.flow.get("skipped:expired"), 2, "{stats:?}");
    assert_eq!(stats.flow.get("completed"), 1, "{stats:?}");
    assert!(app.sink().messages().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_message_is_checked_again_and_pages_list_the_queue() {
    let mut app = TestApp::start().await;
    let flow = manual_flow(&mut app).await;
    let mut profiles = Vec::new();
    for (email, name) in [
        ("a@example.com", "Ann"),
        ("b@example.com", "Ben"),
        ("c@example.com", "Cy"),
    ] {
        profiles.push(app.profile(email, name).await);
        app.track(email, "Ping", json!({})).await;
    }
    app.settle().await;

    let first = app.flows.pending_messages(&flow.id, None, 2).await.unwrap();
    assert_eq!(first.messages.len(), 2);
    let after = first.next.expect("a second page");
    let rest = app
        .flows
        .pending_messages(&flow.id, Some(after), 2)
        .await
        .unwrap();
    assert_eq!(rest.messages.len(), 1);
    assert_eq!(rest.next, None);
    let mut emails: Vec<_> = first
        .messages
        .iter()
        .chain(&rest.messages)
        .map(|m| m.email.clone().unwrap())
        .collect();
    emails.sort();
    assert_eq!(emails, ["a@example.com", "b@example.com", "c@example.com"]);

    // Unsubscribed while the message waited: approving it sends nothing.
    let ann = first
        .messages
        .iter()
        .chain(&rest.messages)
        .find(|m| m.email.as_deref() == Some("a@example.com"))
        .unwrap()
        .clone();
    app.engage
        .unsubscribe(UnsubscribeRequest {
            list_id: None,
            emails: vec![profiles[0].email.as_deref().unwrap().parse().unwrap()],
        })
        .await
        .unwrap();
    app.settle().await;
    app.flows.approve_message(&flow.id, ann.id).await.unwrap();
    app.advance(SignedDuration::from_secs(60)).await;
    assert!(app.sink().messages().is_empty());
    let stats = app.flows.stats(&flow.id).await.unwrap();
    // Both its messages: the approved one, and the next, which is not held for review.
    let (first, second) = (
        &flow.definition.actions[0].id,
        &flow.definition.actions[1].id,
    );
    assert_eq!(stats.action(first).get("skipped:consent"), 1, "{stats:?}");
    assert_eq!(stats.action(second).get("skipped:consent"), 1, "{stats:?}");
    assert_eq!(stats.flow.get("pending"), 2, "{stats:?}");
    assert_eq!(stats.flow.get("sent"), 0, "{stats:?}");
}
