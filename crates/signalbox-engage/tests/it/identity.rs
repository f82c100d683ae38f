//! Profiles and identity: creation, linking, holds, merges, settings.

use jiff::SignedDuration;
use serde_json::json;
use signalbox_core::CallKind;
use signalbox_engage::{HeldFilter, ProfileField};

use crate::helpers::TestApp;

#[tokio::test]
async fn identify_then_track_makes_a_profile_an_event_and_a_feed_line() {
    let mut app = TestApp::start().await;
    app.identify(
        json!({"userId": "u1", "traits": {"email": "Ann@Example.com", "firstName": "Ann",
        "plan": "pro"}}),
    )
    .await;
    app.track(json!({"userId": "u1", "event": "Signed Up", "properties": {"revenue": 5}}))
        .await;
    app.settle().await;

    let profile = app.by_email("ann@example.com").await;
    assert_eq!(profile.external_id.as_deref(), Some("u1"));
    assert_eq!(profile.first_name.as_deref(), Some("Ann"));
    assert_eq!(profile.properties["plan"], "pro");
    assert_eq!(profile.created_by.integration, "Segment");
    assert_eq!(profile.created_by.source.as_deref(), Some("web"));
    assert!(profile.last_event_date.is_some());

    let metric = app.metric("Signed Up").await;
    assert_eq!(metric.integration.name, "Segment");
    let feed = app.feed_of(&profile).await;
    assert_eq!(feed.len(), 1);
    assert_eq!(feed[0].metric_id, metric.id);
    assert_eq!(feed[0].value, Some(5.0));
    assert_eq!(app.counter("applied.track").await, 1);
}

#[tokio::test]
async fn anonymous_calls_are_held_until_identified_then_applied() {
    let mut app = TestApp::start().await;
    // enforceEmail is on (the default): no email, no profile, so the calls wait.
    let first = app
        .track(json!({"anonymousId": "a1", "event": "Viewed Product"}))
        .await;
    let last = app
        .track(json!({"userId": "u1", "anonymousId": "a1", "event": "Added Product"}))
        .await;
    app.settle().await;
    assert!(app.profiles().await.is_empty());
    let held = app.held(HeldFilter::Held).await;
    assert_eq!(held.len(), 2);
    // The log keeps a held call's entry while it waits.
    let needs = app.engage.log_needs().await.unwrap();
    assert_eq!(
        (
            needs.applied_seq,
            needs.oldest_held_seq,
            needs.oldest_quarantined_seq
        ),
        (last, Some(first), None)
    );
    assert!(
        held[0].reason.contains("enforceEmail"),
        "{}",
        held[0].reason
    );

    // The identify links a1 and u1 to an email: both held calls land on that profile.
    app.identify(
        json!({"userId": "u1", "anonymousId": "a1", "traits": {"email": "b@example.com"}}),
    )
    .await;
    app.settle().await;
    let profile = app.by_email("b@example.com").await;
    assert_eq!(app.feed_of(&profile).await.len(), 2);
    assert!(app.held(HeldFilter::Held).await.is_empty());
    let released = app.held(HeldFilter::Released).await;
    assert_eq!(released.len(), 2);
    assert_eq!(app.engage.log_needs().await.unwrap().oldest_held_seq, None);
    assert_eq!(app.counter("held.released").await, 2);

    // Later calls with only the anonymous id attach directly.
    app.track(json!({"anonymousId": "a1", "event": "Viewed Product"}))
        .await;
    app.settle().await;
    assert_eq!(app.feed_of(&profile).await.len(), 3);
    assert_eq!(app.profiles().await.len(), 1);
}

#[tokio::test]
async fn held_calls_survive_a_restart_and_are_released_by_any_id_they_wait_for() {
    let mut app = TestApp::start().await;
    app.track(json!({"anonymousId": "a1", "event": "Viewed Product"}))
        .await;
    app.track(json!({"userId": "u1", "event": "Added Product"}))
        .await;
    // An alias whose ids name nobody yet waits for its user id and its previousId.
    app.send(CallKind::Alias, json!({"previousId": "a2", "userId": "u2"}))
        .await;
    app.settle().await;
    let held = app.held(HeldFilter::Held).await;
    assert_eq!(held.len(), 3);

    // What waits for which id is rebuilt when the pipeline opens again.
    app.restart().await;
    app.identify(
        json!({"userId": "u1", "anonymousId": "a1", "traits": {"email": "r@example.com"}}),
    )
    .await;
    app.identify(json!({"anonymousId": "a2", "traits": {"email": "s@example.com"}}))
        .await;
    app.settle().await;
    let first = app.by_email("r@example.com").await;
    assert_eq!(app.feed_of(&first).await.len(), 2);
    // The alias, released by its previousId, linked its user id to that profile.
    let second = app.by_email("s@example.com").await;
    let linked = app
        .profile_by(ProfileField::ExternalId, "u2")
        .await
        .unwrap();
    assert_eq!(linked.id, second.id);
    assert!(app.held(HeldFilter::Held).await.is_empty());
    assert_eq!(app.counter("held.released").await, 3);
}

#[tokio::test]
async fn holds_expire_after_the_window_and_are_listed_with_their_reason() {
    let mut app = TestApp::start_with(|c| c.hold_window = SignedDuration::from_hours(1)).await;
    app.track(json!({"userId": "ghost", "event": "Viewed"}))
        .await;
    app.settle().await;
    assert_eq!(app.held(HeldFilter::Held).await.len(), 1);
    // Log time moves past the window: the next entry expires the hold first.
    app.advance(SignedDuration::from_hours(2));
    app.identify(json!({"userId": "ghost", "traits": {"email": "ghost@example.com"}}))
        .await;
    app.settle().await;
    let expired = app.held(HeldFilter::Expired).await;
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].user_id.as_deref(), Some("ghost"));
    assert!(expired[0].reason.contains("no email"));
    assert_eq!(app.counter("held.expired").await, 1);
    // Expired means not applied.
    let profile = app.by_email("ghost@example.com").await;
    assert!(app.feed_of(&profile).await.is_empty());
}

#[tokio::test]
async fn idle_pipeline_expires_holds_by_the_clock() {
    let mut app = TestApp::start_with(|c| c.hold_window = SignedDuration::from_mins(10)).await;
    app.track(json!({"userId": "late", "event": "Viewed"}))
        .await;
    app.settle().await;
    app.clock.advance(SignedDuration::from_hours(1));
    let mut expired = Vec::new();
    for _ in 0..200 {
        expired = app.held(HeldFilter::Expired).await;
        if !expired.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(expired.len(), 1);
}

#[tokio::test]
async fn with_enforce_email_off_user_id_creates_and_anonymous_needs_send_anonymous() {
    let mut app = TestApp::start().await;
    app.settings(|s| s.enforce_email = false).await;
    app.track(json!({"userId": "u7", "event": "Opened App"}))
        .await;
    app.track(json!({"anonymousId": "anon-7", "event": "Opened App"}))
        .await;
    app.settle().await;
    let profile = app
        .profile_by(ProfileField::ExternalId, "u7")
        .await
        .expect("userId creates a profile");
    assert_eq!(profile.email, None);
    assert_eq!(app.profiles().await.len(), 1);
    let held = app.held(HeldFilter::Held).await;
    assert_eq!(held.len(), 1);
    assert!(
        held[0].reason.contains("sendAnonymous"),
        "{}",
        held[0].reason
    );

    app.settings(|s| s.send_anonymous = true).await;
    app.track(json!({"anonymousId": "anon-8", "event": "Opened App"}))
        .await;
    app.settle().await;
    assert_eq!(app.profiles().await.len(), 2);
}

#[tokio::test]
async fn alias_merges_the_anonymous_profile_into_the_known_one() {
    let mut app = TestApp::start().await;
    app.settings(|s| {
        s.enforce_email = false;
        s.send_anonymous = true;
    })
    .await;
    app.identify(json!({"userId": "u1", "traits": {"firstName": "Cleo"}}))
        .await;
    app.track(json!({"anonymousId": "a9", "event": "Viewed Product"}))
        .await;
    app.track(json!({"anonymousId": "a9", "event": "Added Product"}))
        .await;
    app.settle().await;
    let profiles = app.profiles().await;
    assert_eq!(profiles.len(), 2);
    let known = app
        .profile_by(ProfileField::ExternalId, "u1")
        .await
        .unwrap();
    let anonymous = profiles.iter().find(|p| p.id != known.id).unwrap().clone();

    app.send(CallKind::Alias, json!({"previousId": "a9", "userId": "u1"}))
        .await;
    app.settle().await;
    let profiles = app.profiles().await;
    assert_eq!(profiles.len(), 1, "{profiles:#?}");
    // The older profile survives; the other's id redirects to it, with its events.
    let survivor = &profiles[0];
    assert_eq!(survivor.id, known.id);
    assert_eq!(survivor.first_name.as_deref(), Some("Cleo"));
    assert_eq!(survivor.anonymous_id.as_deref(), Some("a9"));
    let redirected = app.engage.get_profile(&anonymous.id).await.unwrap();
    assert_eq!(redirected.id, known.id);
    assert_eq!(app.feed_of(&known).await.len(), 2);
    assert_eq!(app.feed_of(&anonymous).await.len(), 2, "feed by the old id");

    let history = app.engage.profile_history(&known.id).await.unwrap();
    assert_eq!(history.merged_ids, vec![anonymous.id.clone()]);
    assert!(history
        .identifiers
        .contains(&("anonymous_id".into(), "a9".into())));
}

#[tokio::test]
async fn two_profiles_that_are_one_person_merge_with_all_their_events() {
    let mut app = TestApp::start().await;
    app.settings(|s| s.enforce_email = false).await;
    // One profile known by userId, one by email, each with events.
    app.track(json!({"userId": "u5", "event": "Viewed"})).await;
    app.track(json!({"userId": "u5", "event": "Viewed"})).await;
    app.track(json!({"userId": "other", "event": "Viewed",
        "properties": {"email": "dee@example.com"}}))
        .await;
    app.settle().await;
    let by_user = app
        .profile_by(ProfileField::ExternalId, "u5")
        .await
        .unwrap();
    let by_email = app.by_email("dee@example.com").await;
    assert_ne!(by_user.id, by_email.id);

    // An identify says u5 is dee@example.com.
    app.identify(json!({"userId": "u5", "traits": {"email": "dee@example.com"}}))
        .await;
    app.settle().await;
    let merged = app.by_email("dee@example.com").await;
    assert_eq!(
        merged.id, by_email.id,
        "the profile with the email survives"
    );
    assert_eq!(app.profiles().await.len(), 1);
    assert_eq!(app.feed_of(&merged).await.len(), 3);
    assert_eq!(
        app.engage.get_profile(&by_user.id).await.unwrap().id,
        merged.id
    );
    assert_eq!(app.counter("profiles.merged").await, 1);
    let history = app.engage.profile_history(&merged.id).await.unwrap();
    let merge_line = history.links.iter().find(|l| l.action == "merged").unwrap();
    assert_eq!(merge_line.value.as_deref(), Some(by_user.id.as_str()));
}

#[tokio::test]
async fn two_emails_never_merge_and_the_conflict_is_recorded() {
    let mut app = TestApp::start().await;
    app.identify(json!({"userId": "u1", "traits": {"email": "one@example.com"}}))
        .await;
    app.identify(json!({"userId": "u1", "traits": {"email": "two@example.com"}}))
        .await;
    app.settle().await;
    let one = app.by_email("one@example.com").await;
    let two = app.by_email("two@example.com").await;
    assert_ne!(one.id, two.id);
    assert_eq!(one.external_id.as_deref(), Some("u1"));
    assert_eq!(two.external_id, None);
    let history = app.engage.profile_history(&two.id).await.unwrap();
    assert!(history
        .links
        .iter()
        .any(|l| l.action == "conflict" && l.value.as_deref() == Some("u1")));
}

#[tokio::test]
async fn audit_trail_and_provenance_name_the_calls() {
    let mut app = TestApp::start().await;
    let first = app
        .identify(json!({"userId": "u1", "anonymousId": "a1",
            "traits": {"email": "eve@example.com"}}))
        .await;
    let second = app
        .identify(json!({"userId": "u1", "traits": {"phone": "+44 20 7946 0958"}}))
        .await;
    app.settle().await;
    let profile = app.by_email("eve@example.com").await;
    assert_eq!(profile.phone_number.as_deref(), Some("+442079460958"));
    let history = app.engage.profile_history(&profile.id).await.unwrap();
    let linked: Vec<(i64, String)> = history
        .links
        .iter()
        .filter(|l| l.action == "linked")
        .map(|l| (l.seq, l.kind.clone().unwrap()))
        .collect();
    assert_eq!(
        linked,
        [
            (first, "email".to_owned()),
            (first, "external_id".to_owned()),
            (first, "anonymous_id".to_owned()),
            (second, "phone_number".to_owned()),
        ]
    );
    assert_eq!(history.origins.len(), 1);
    let origin = &history.origins[0];
    assert_eq!(origin.integration, "Segment");
    assert_eq!(origin.source.as_deref(), Some("web"));
    assert_eq!(origin.external_id.as_deref(), Some("u1"));
    assert_eq!(origin.anonymous_id.as_deref(), Some("a1"));
    assert_eq!((origin.first_seq, origin.last_seq), (first, second));
}

#[tokio::test]
async fn unnormalisable_phone_is_kept_and_reported() {
    let mut app = TestApp::start().await;
    app.identify(json!({"userId": "u1", "traits": {"email": "f@example.com",
        "phone": "(415) 555-2671"}}))
        .await;
    app.settle().await;
    let profile = app.by_email("f@example.com").await;
    assert_eq!(profile.phone_number, None);
    assert_eq!(profile.properties["phone"], "(415) 555-2671");
    let history = app.engage.profile_history(&profile.id).await.unwrap();
    assert_eq!(history.problems.len(), 1);
    assert_eq!(app.counter("problems").await, 1);
}

#[tokio::test]
async fn many_tasks_sending_one_email_make_one_profile() {
    let mut app = TestApp::start().await;
    let mut calls = Vec::new();
    for i in 0..400 {
        let email = format!("same{}@example.com", i % 4);
        calls.push(app.call(
            CallKind::Identify,
            json!({"userId": format!("user-{i}"), "anonymousId": format!("anon-{i}"),
                   "traits": {"email": email}}),
        ));
        calls.push(app.call(
            CallKind::Track,
            json!({"userId": format!("user-{i}"), "event": "Clicked"}),
        ));
    }
    // Many concurrent requests, as many clients would send them.
    let mut tasks = Vec::new();
    for chunk in calls.chunks(4) {
        let store = std::sync::Arc::clone(&app.store);
        let chunk = chunk.to_vec();
        let source = app.source;
        tasks.push(tokio::spawn(async move {
            let mut chunk = chunk;
            loop {
                match store.append(source, chunk.clone(), Vec::new()).await {
                    Ok(_) => break,
                    Err(signalbox_store::StoreError::Overloaded) => {
                        tokio::task::yield_now().await;
                        chunk = chunk.clone();
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    app.engage.notify();
    app.settle().await;
    let profiles = app.profiles().await;
    assert_eq!(profiles.len(), 4, "one profile per email");
    for i in 0..4 {
        let profile = app.by_email(&format!("same{i}@example.com")).await;
        let history = app.engage.profile_history(&profile.id).await.unwrap();
        let user_ids = history
            .identifiers
            .iter()
            .filter(|(kind, _)| kind == "external_id")
            .count();
        assert_eq!(user_ids, 100);
        // Every track lands: on the profile directly, or released from a hold when its
        // identify came after it.
        assert_eq!(app.feed_of(&profile).await.len(), 100);
    }
}
