//! List, segment and date triggers.

use jiff::SignedDuration;
use serde_json::{json, Value};
use signalbox_engage::{ProfileInput, ProfileKey};
use signalbox_flows::SegmentEntry;

use crate::helpers::*;

fn welcome(trigger: Value) -> Value {
    json!({
        "triggers": [trigger],
        "entry_action_id": "e",
        "actions": [{"temporary_id": "e", "type": "send-email", "data": {"status": "live", "message": {
            "subject_line": "Welcome, {{ first_name }}", "html": "<p>Hello</p>",
            "smart_sending_enabled": false}}, "links": {"next": null}}]
    })
}

/// Writes a list change as the engage applier records it (the Lists work owns that path).
fn list_change(app: &TestApp, list_id: &str, profile_pk: ProfileKey, change: &str) {
    let conn = rusqlite::Connection::open(app.dir.path().join("engage.db")).unwrap();
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .unwrap();
    conn.execute(
        "INSERT INTO list_changes (seq, list_id, profile_pk, change, at_us) VALUES (?1, ?2, ?3, ?4, ?5)",
        rusqlite::params![app.engage.applied_seq(), list_id, profile_pk.0, change, app.clock_us()],
    )
    .unwrap();
}

impl TestApp {
    fn clock_us(&self) -> i64 {
        use signalbox_core::Clock;
        self.clock.now().as_microsecond()
    }

    fn pk(&self, id: &signalbox_engage::ProfileId) -> ProfileKey {
        let reader = self.engage.reader().unwrap();
        reader.profile_key(id).unwrap().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_to_list_starts_the_welcome_series_once() {
    let app = TestApp::start().await;
    let flow = app
        .live_flow(welcome(json!({"type": "list", "id": "NEWS"})))
        .await;
    let ada = app.profile("ada@example.com", "Ada").await;
    let pending = app.profile("pending@example.com", "Pat").await;
    app.settle().await;
    list_change(&app, "NEWS", app.pk(&ada.id), "added");
    list_change(&app, "NEWS", app.pk(&pending.id), "pending");
    list_change(&app, "OTHER", app.pk(&pending.id), "added");
    app.flows.wake();
    app.settle().await;
    let messages = app.sink().wait_for(1);
    assert_eq!(messages.len(), 1);
    assert_eq!(parse_mail(&messages[0]).subject, "Welcome, Ada");
    // Confirming the double opt-in starts it; re-joining does not (once per profile).
    list_change(&app, "NEWS", app.pk(&pending.id), "confirmed");
    list_change(&app, "NEWS", app.pk(&ada.id), "added");
    app.flows.wake();
    app.settle().await;
    assert_eq!(app.sink().wait_for(2).len(), 2);
    let stats = app.flows.stats(&flow.id).await.unwrap();
    assert_eq!(stats.flow.get("entered"), 2);
    assert_eq!(stats.flow.get("skipped_entry:reentry"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entering_a_segment_starts_the_flow() {
    let app = TestApp::start().await;
    let flow = app
        .live_flow(welcome(json!({"type": "segment", "id": "VIP"})))
        .await;
    let ada = app.profile("ada@example.com", "Ada").await;
    app.membership.0.lock().unwrap().extend([
        SegmentEntry {
            cursor: 1,
            segment_id: "VIP".into(),
            profile_pk: app.pk(&ada.id),
            at_us: app.clock_us(),
            entered: true,
        },
        SegmentEntry {
            cursor: 2,
            segment_id: "OTHER".into(),
            profile_pk: app.pk(&ada.id),
            at_us: app.clock_us(),
            entered: true,
        },
    ]);
    app.flows.wake();
    app.settle().await;
    assert_eq!(app.sink().wait_for(1).len(), 1);
    app.settle().await;
    assert_eq!(
        app.flows.stats(&flow.id).await.unwrap().flow.get("entered"),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn date_properties_trigger_before_the_anniversary() {
    // Start: 2026-03-02 10:00 UTC. Birthdays on 10 March; the flow fires 3 days before, 09:00.
    let app = TestApp::start().await;
    let birthday = |email: &str| ProfileInput {
        email: Some(email.into()),
        first_name: Some("B".into()),
        properties: json!({"Birthday": "1990-03-10"})
            .as_object()
            .cloned()
            .unwrap(),
        ..ProfileInput::default()
    };
    app.profile_with(birthday("before@example.com")).await;
    app.settle().await;
    let flow = app
        .live_flow(welcome(json!({"type": "date", "date_field_type": "profile-property",
            "date_profile_property": "Birthday", "timedelta_unit_before_date": "days",
            "timedelta_value_before_date": 3, "recurrence_frequency": "annually", "timezone": "account"})))
        .await;
    app.settle().await;
    app.profile_with(birthday("after@example.com")).await;
    app.settle().await;
    app.clock.set(at("2026-03-07T08:59:00Z"));
    app.settle().await;
    assert!(app.sink().messages().is_empty());
    app.advance(SignedDuration::from_mins(1)).await;
    let mut to: Vec<String> = app
        .sink()
        .wait_for(2)
        .iter()
        .flat_map(|m| parse_mail(m).to)
        .collect();
    to.sort();
    assert_eq!(to, ["after@example.com", "before@example.com"]);
    let runs = app.flows.runs(&flow.id, 10).await.unwrap();
    assert_eq!(runs.len(), 2);
    assert!(runs
        .iter()
        .all(|r| r.started.to_string() == "2026-03-07T09:00:00Z"));
}
