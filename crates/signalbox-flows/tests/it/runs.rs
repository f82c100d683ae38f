//! Delays in a timezone, re-entry, restarts with waiting runs, crash recovery of a send.

use jiff::SignedDuration;
use serde_json::{json, Value};
use signalbox_engage::{Location, ProfileInput};
use signalbox_flows::{Fault, SendStatus};

use crate::helpers::*;

fn one_email(metric: &str, delay: Value, reentry: Value) -> Value {
    json!({
        "triggers": [{"type": "metric", "id": metric}],
        "entry_action_id": "d",
        "actions": [
            {"temporary_id": "d", "type": "time-delay", "data": delay, "links": {"next": "e"}},
            {"temporary_id": "e", "type": "send-email", "data": {"status": "live", "message": {
                "subject_line": "Hello {{ first_name }}", "html": "<p>Hi</p>", "smart_sending_enabled": false}},
             "links": {"next": null}}
        ],
        "reentry_criteria": reentry
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delays_until_a_time_and_weekday_in_the_profiles_timezone() {
    // Start: Monday 2026-03-02 10:00 UTC = 05:00 in New York.
    let mut app = TestApp::start().await;
    let metric = app.metric("Joined").await;
    let flow = app
        .live_flow(one_email(
            &metric,
            json!({"unit": "days", "value": 1, "delay_until_time": "09:00",
                   "delay_until_weekdays": ["thursday"], "timezone": "profile"}),
            json!({"duration": 0, "unit": "alltime"}),
        ))
        .await;
    app.profile_with(ProfileInput {
        email: Some("ny@example.com".into()),
        first_name: Some("Nia".into()),
        location: Location {
            timezone: Some("America/New_York".into()),
            ..Location::default()
        },
        ..ProfileInput::default()
    })
    .await;
    app.track("ny@example.com", "Joined", json!({})).await;
    app.settle().await;
    let runs = app.flows.runs(&flow.id, 1).await.unwrap();
    // Tuesday is one day later; the first Thursday at 09:00 New York (EST) is 14:00 UTC.
    assert_eq!(
        runs[0].next_wake.unwrap().to_string(),
        "2026-03-05T14:00:00Z"
    );
    app.clock.set(at("2026-03-05T13:59:00Z"));
    app.settle().await;
    assert!(app.sink().messages().is_empty());
    app.advance(SignedDuration::from_mins(1)).await;
    assert_eq!(app.sink().wait_for(1).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reentry_once_ever_after_a_duration_and_always() {
    let mut app = TestApp::start_with(Options {
        mail: false,
        ..Options::default()
    })
    .await;
    let metric = app.metric("Visit").await;
    let zero = json!({"unit": "minutes", "value": 0});
    let once = app
        .live_flow(one_email(
            &metric,
            zero.clone(),
            json!({"duration": 1, "unit": "alltime"}),
        ))
        .await;
    let daily = app
        .live_flow(one_email(
            &metric,
            zero.clone(),
            json!({"duration": 1, "unit": "day"}),
        ))
        .await;
    let always = app
        .live_flow(one_email(
            &metric,
            zero,
            json!({"duration": 0, "unit": "alltime"}),
        ))
        .await;
    app.profile("r@example.com", "Rae").await;
    for hours in [0, 2, 30] {
        app.clock.advance(SignedDuration::from_hours(hours));
        app.track("r@example.com", "Visit", json!({"h": hours}))
            .await;
        app.settle().await;
    }
    let entered = |s: &signalbox_flows::FlowStats| s.flow.get("entered");
    assert_eq!(entered(&app.flows.stats(&once.id).await.unwrap()), 1);
    assert_eq!(entered(&app.flows.stats(&daily.id).await.unwrap()), 2);
    assert_eq!(entered(&app.flows.stats(&always.id).await.unwrap()), 3);
    assert_eq!(
        app.flows
            .stats(&once.id)
            .await
            .unwrap()
            .flow
            .get("skipped_entry:reentry"),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_runs_survive_a_restart() {
    let mut app = TestApp::start().await;
    let metric = app.metric("Joined").await;
    let flow = app
        .live_flow(one_email(
            &metric,
            json!({"unit": "days", "value": 3}),
            json!({"duration": 0, "unit": "alltime"}),
        ))
        .await;
    for n in 0..5 {
        let email = format!("w{n}@example.com");
        app.profile(&email, "W").await;
        app.track(&email, "Joined", json!({})).await;
    }
    app.settle().await;
    assert_eq!(
        app.flows.stats(&flow.id).await.unwrap().flow.get("waiting"),
        5
    );
    app.restart(|_| {}).await;
    app.advance(SignedDuration::from_hours(71)).await;
    assert!(app.sink().messages().is_empty());
    app.advance(SignedDuration::from_hours(1)).await;
    assert_eq!(app.sink().wait_for(5).len(), 5);
    let stats = app.flows.stats(&flow.id).await.unwrap();
    assert_eq!(stats.flow.get("sent"), 5);
    assert_eq!(stats.flow.get("completed"), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_decision_sends_once_after_recovery() {
    let mut app = TestApp::start_with(Options {
        tune: Box::new(|c| c.fault = Some(Fault::AfterIntent)),
        ..Options::default()
    })
    .await;
    let metric = app.metric("Joined").await;
    let flow = app
        .live_flow(one_email(
            &metric,
            json!({"unit": "minutes", "value": 0}),
            json!({"duration": 0, "unit": "alltime"}),
        ))
        .await;
    app.profile("c@example.com", "Cy").await;
    app.track("c@example.com", "Joined", json!({})).await;
    app.engage
        .catch_up(std::time::Duration::from_secs(10))
        .await
        .unwrap();
    app.flows.wake();
    // The worker records the intent, then "dies" before the SMTP hand-off.
    for _ in 0..500 {
        if app.flows.is_stopped() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(app.flows.is_stopped());
    let sends = app.flows.sends(&flow.id).await.unwrap();
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0].status, SendStatus::Pending);
    assert!(app.sink().messages().is_empty());

    app.restart(|c| c.fault = None).await;
    app.settle().await;
    let messages = app.sink().wait_for(1);
    assert_eq!(messages.len(), 1, "sent once after recovery");
    let key = &sends[0].key;
    let expected = signalbox_mail::mailer::message_id(key, "any.domain");
    let local_part = expected.trim_start_matches('<').split('@').next().unwrap();
    assert!(
        parse_mail(&messages[0]).message_id.starts_with(local_part),
        "the Message-ID is derived from the step's idempotency key"
    );
    // Later passes and restarts never send it again.
    app.restart(|_| {}).await;
    app.advance(SignedDuration::from_hours(1)).await;
    assert_eq!(app.sink().messages().len(), 1);
    assert_eq!(
        app.flows.sends(&flow.id).await.unwrap()[0].status,
        SendStatus::Sent
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_smtp_hand_off_resends_with_the_same_message_id() {
    // The documented window: the server took the message, "done" was not committed.
    let mut app = TestApp::start_with(Options {
        tune: Box::new(|c| c.fault = Some(Fault::BeforeDone)),
        ..Options::default()
    })
    .await;
    let metric = app.metric("Joined").await;
    app.live_flow(one_email(
        &metric,
        json!({"unit": "minutes", "value": 0}),
        json!({"duration": 0, "unit": "alltime"}),
    ))
    .await;
    app.profile("w@example.com", "Win").await;
    app.track("w@example.com", "Joined", json!({})).await;
    app.engage
        .catch_up(std::time::Duration::from_secs(10))
        .await
        .unwrap();
    app.flows.wake();
    for _ in 0..500 {
        if app.flows.is_stopped() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(app.flows.is_stopped());
    assert_eq!(app.sink().wait_for(1).len(), 1);
    app.restart(|c| c.fault = None).await;
    app.settle().await;
    let messages = app.sink().wait_for(2);
    assert_eq!(messages.len(), 2);
    assert_eq!(
        parse_mail(&messages[0]).message_id,
        parse_mail(&messages[1]).message_id
    );
    app.advance(SignedDuration::from_hours(1)).await;
    assert_eq!(app.sink().messages().len(), 2, "and never a third time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_facts_fail_waits_without_holding_up_the_others() {
    let mut app = TestApp::start().await;
    let metric = app.metric("Joined").await;
    let flow = app
        .live_flow(one_email(
            &metric,
            json!({"unit": "minutes", "value": 0}),
            json!({"duration": 0, "unit": "alltime"}),
        ))
        .await;
    let broken = app.profile("broken@example.com", "Bro").await;
    app.profile("fine@example.com", "Fi").await;
    app.failing.lock().unwrap().insert(broken.id.to_string());
    app.track("broken@example.com", "Joined", json!({})).await;
    app.track("fine@example.com", "Joined", json!({})).await;
    app.settle().await;
    let messages = app.sink().wait_for(1);
    assert_eq!(messages.len(), 1);
    assert_eq!(parse_mail(&messages[0]).to, ["fine@example.com"]);
    assert!(app.flows.stats(&flow.id).await.unwrap().flow.get("errors") >= 1);
    app.failing.lock().unwrap().clear();
    app.advance(SignedDuration::from_secs(30)).await;
    assert_eq!(
        app.sink().wait_for(2).len(),
        2,
        "retried once the facts are back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_engine_per_flows_file() {
    let app = TestApp::start_with(Options {
        mail: false,
        ..Options::default()
    })
    .await;
    let facts = std::sync::Arc::new(EngageFacts {
        engage: app.engage.clone(),
        failing: app.failing.clone(),
    });
    let second = signalbox_flows::Flows::start(
        app.engage.clone(),
        std::sync::Arc::new(app.clock.clone()),
        app.config.clone(),
        signalbox_flows::FlowsDeps::new(facts),
    )
    .await;
    assert!(matches!(
        second,
        Err(signalbox_flows::FlowsError::Conflict { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_run_follows_its_profile_into_a_merge() {
    let mut app = TestApp::start().await;
    let metric = app.metric("Joined").await;
    let flow = app
        .live_flow(one_email(
            &metric,
            json!({"unit": "hours", "value": 1}),
            json!({"duration": 0, "unit": "alltime"}),
        ))
        .await;
    let old = app.profile("old@example.com", "Old").await;
    let survivor = app.profile("new@example.com", "New").await;
    app.track("old@example.com", "Joined", json!({})).await;
    app.settle().await;
    app.engage
        .merge_profiles(&survivor.id, std::slice::from_ref(&old.id))
        .await
        .unwrap();
    app.settle().await;
    app.advance(SignedDuration::from_hours(1)).await;
    let messages = app.sink().wait_for(1);
    assert_eq!(messages.len(), 1);
    assert_eq!(parse_mail(&messages[0]).to, ["new@example.com"]);
    let runs = app.flows.runs(&flow.id, 1).await.unwrap();
    assert_eq!(runs[0].profile_id, survivor.id.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_wakes_due_runs_by_itself() {
    let mut app = TestApp::start().await;
    let metric = app.metric("Joined").await;
    let flow = app
        .live_flow(one_email(
            &metric,
            json!({"unit": "minutes", "value": 10}),
            json!({"duration": 0, "unit": "alltime"}),
        ))
        .await;
    app.profile("self@example.com", "Sel").await;
    // No sync: the worker follows the feed and the clock on its own.
    app.track("self@example.com", "Joined", json!({})).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while app.flows.stats(&flow.id).await.unwrap().flow.get("waiting") == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the run never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    app.clock.advance(SignedDuration::from_mins(10));
    assert_eq!(app.sink().wait_for(1).len(), 1);
}
