//! The outbox: a row per change made in Signalbox, none for what came from Segment, in log
//! order, read by position and time, rebuilt identically.

use std::sync::Arc;

use jiff::SignedDuration;
use serde_json::{json, Map, Value};
use signalbox_engage::{
    rebuild, ApiEventInput, BuiltinEventInput, BuiltinMetric, Engage, ImportRow, ListId, Location,
    OptInProcess, OutboxChange, OutboxEntry, OutboxPosition, ProfileId, ProfileInput,
    SubscribeRequest, SuppressTarget, SuppressionReason, UnsubscribeRequest, WriteOrigin,
};

use crate::helpers::TestApp;

/// Every committed outbox entry, read in pages of `page`.
async fn all(engage: &Engage, page: u32) -> Vec<OutboxEntry> {
    let mut out = Vec::new();
    let mut after: OutboxPosition = (0, 0);
    loop {
        let batch = engage.outbox_after(after, page).await.unwrap();
        assert!(batch.len() <= page as usize);
        let Some(last) = batch.last() else {
            return out;
        };
        after = (last.seq, last.n);
        out.extend(batch);
    }
}

/// The entries after `after` (everything the pipeline committed).
async fn after(app: &TestApp, after: OutboxPosition) -> Vec<OutboxEntry> {
    app.settle().await;
    app.engage.outbox_after(after, 1000).await.unwrap()
}

fn object(value: Value) -> Map<String, Value> {
    value.as_object().unwrap().clone()
}

fn traits(entry: &OutboxEntry) -> &Map<String, Value> {
    match &entry.change {
        OutboxChange::Traits { traits } => traits,
        other => panic!("not a traits change: {other:?}"),
    }
}

fn email(address: &str) -> ProfileInput {
    ProfileInput {
        email: Some(address.into()),
        ..ProfileInput::default()
    }
}

#[tokio::test]
async fn api_profile_writes_become_traits_under_segment_names_with_only_what_they_set() {
    let app = TestApp::start().await;
    let mut properties = Map::new();
    properties.insert("plan".into(), json!("pro"));
    let created = app
        .engage
        .create_profile(ProfileInput {
            email: Some("Ada@Example.com".into()),
            phone_number: Some("+14155550100".into()),
            first_name: Some("Ada".into()),
            last_name: Some("Lovelace".into()),
            organization: Some("Engines Ltd".into()),
            title: Some("Analyst".into()),
            image: Some("https://img.example.com/ada.png".into()),
            location: Location {
                address1: Some("1 Main St".into()),
                address2: Some("Flat 2".into()),
                city: Some("London".into()),
                region: Some("Greater London".into()),
                zip: Some("N1 1AA".into()),
                country: Some("UK".into()),
                ..Location::default()
            },
            properties,
            ..ProfileInput::default()
        })
        .await
        .unwrap();
    let rows = after(&app, (0, 0)).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(row.profile_id, created.id);
    assert_eq!(row.email.as_deref(), Some("ada@example.com"));
    assert_eq!((row.user_id.as_deref(), row.from_segment), (None, false));
    assert_eq!(
        Value::Object(traits(row).clone()),
        json!({
            "email": "ada@example.com", "phone": "+14155550100", "firstName": "Ada",
            "lastName": "Lovelace", "title": "Analyst", "company": {"name": "Engines Ltd"},
            "avatar": "https://img.example.com/ada.png", "plan": "pro",
            "address": {"street": "1 Main St\nFlat 2", "city": "London",
                        "state": "Greater London", "postalCode": "N1 1AA", "country": "UK"}
        })
    );
    let head = app.engage.outbox_head().await.unwrap();
    assert_eq!(head, (row.seq, row.n));

    // An update: only what it set (the street is the address as it is now).
    app.engage
        .update_profile(
            &created.id,
            ProfileInput {
                first_name: Some("Augusta".into()),
                location: Location {
                    address2: Some("Flat 3".into()),
                    ..Location::default()
                },
                unset: vec!["title".into(), "plan".into()],
                ..ProfileInput::default()
            },
        )
        .await
        .unwrap();
    // A write that changes nothing is not a change.
    app.engage
        .update_profile(
            &created.id,
            ProfileInput {
                first_name: Some("Augusta".into()),
                ..ProfileInput::default()
            },
        )
        .await
        .unwrap();
    // An import of a new person.
    app.engage
        .import_profile(ProfileInput {
            email: Some("bob@example.com".into()),
            last_name: Some("Babbage".into()),
            ..ProfileInput::default()
        })
        .await
        .unwrap();
    let rows = after(&app, head).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(
        Value::Object(traits(&rows[0]).clone()),
        json!({"firstName": "Augusta", "title": null, "plan": null,
               "address": {"street": "1 Main St\nFlat 3"}})
    );
    assert_eq!(
        Value::Object(traits(&rows[1]).clone()),
        json!({"email": "bob@example.com", "lastName": "Babbage"})
    );
    assert_eq!(rows[1].email.as_deref(), Some("bob@example.com"));
    assert!(rows[0].seq < rows[1].seq);
}

#[tokio::test]
async fn segment_calls_make_no_rows_and_mark_the_profile_with_its_user_id() {
    let mut app = TestApp::start().await;
    let list = app
        .engage
        .create_list("From identify", OptInProcess::SingleOptIn)
        .await
        .unwrap();
    let id = list.id.0.clone();
    app.settings(|s| s.list_id = Some(id)).await;
    // enforceEmail is on (the default): the userId is still what Segment knows the person by.
    app.identify(json!({"userId": "u1", "anonymousId": "a1",
        "traits": {"email": "cy@example.com", "firstName": "Cy"}}))
        .await;
    app.track(json!({"userId": "u1", "event": "Viewed Product"}))
        .await;
    // Held until identified, then released: no row either.
    app.track(json!({"anonymousId": "a2", "event": "Viewed Product"}))
        .await;
    app.identify(json!({"userId": "u1", "anonymousId": "a2"}))
        .await;
    app.settle().await;
    let profile = app.by_email("cy@example.com").await;
    assert_eq!(
        app.feed_of(&profile).await.len(),
        3,
        "two tracks and the list's join"
    );
    assert_eq!(after(&app, (0, 0)).await, Vec::new());
    assert_eq!(app.engage.outbox_head().await.unwrap(), (0, 0));

    // A change made in Signalbox afterwards carries the flag and the user id; the API giving
    // the profile another external id does not change what Segment knows it by.
    app.engage
        .update_profile(
            &profile.id,
            ProfileInput {
                external_id: Some("crm-7".into()),
                title: Some("CTO".into()),
                ..ProfileInput::default()
            },
        )
        .await
        .unwrap();
    let rows = after(&app, (0, 0)).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(rows[0].from_segment);
    assert_eq!(rows[0].user_id.as_deref(), Some("u1"));
    assert_eq!(rows[0].email.as_deref(), Some("cy@example.com"));
    assert_eq!(rows[0].anonymous_id.as_deref(), Some("a1"));
    assert_eq!(
        Value::Object(traits(&rows[0]).clone()),
        json!({"title": "CTO"})
    );

    // A later userId from Segment replaces the one kept.
    app.identify(json!({"userId": "u1-new", "traits": {"email": "cy@example.com"}}))
        .await;
    app.settle().await;
    app.engage
        .update_profile(
            &profile.id,
            ProfileInput {
                title: Some("CEO".into()),
                ..ProfileInput::default()
            },
        )
        .await
        .unwrap();
    let rows = after(&app, (rows[0].seq, rows[0].n)).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].user_id.as_deref(), Some("u1-new"));
}

#[tokio::test]
async fn a_profile_segment_never_touched_is_not_from_segment() {
    let app = TestApp::start().await;
    app.engage
        .create_profile(email("d@example.com"))
        .await
        .unwrap();
    let rows = after(&app, (0, 0)).await;
    assert_eq!(rows.len(), 1);
    assert!(!rows[0].from_segment);
    assert_eq!(rows[0].user_id, None);
}

#[tokio::test]
async fn writes_forwarded_from_segment_make_no_rows_and_mark_the_profile() {
    let app = TestApp::start().await;
    let list = app
        .engage
        .create_list("Forwarded", OptInProcess::SingleOptIn)
        .await
        .unwrap();
    let forwarded = app.engage.with_origin(WriteOrigin::Segment);
    assert_eq!(forwarded.origin(), WriteOrigin::Segment);
    assert_eq!(app.engage.origin(), WriteOrigin::Signalbox);
    let (profile, created) = forwarded
        .import_profile(ProfileInput {
            email: Some("eve@example.com".into()),
            external_id: Some("u9".into()),
            first_name: Some("Eve".into()),
            ..ProfileInput::default()
        })
        .await
        .unwrap();
    assert!(created);
    forwarded
        .create_events(vec![ApiEventInput {
            metric_name: "Viewed Product".into(),
            profile: ProfileInput {
                email: Some("fay@example.com".into()),
                external_id: Some("u10".into()),
                ..ProfileInput::default()
            },
            ..ApiEventInput::default()
        }])
        .await
        .unwrap();
    forwarded
        .add_list_members(&list.id, std::slice::from_ref(&profile.id))
        .await
        .unwrap();
    forwarded
        .subscribe(SubscribeRequest {
            list_id: None,
            emails: vec!["eve@example.com".parse().unwrap()],
            ..SubscribeRequest::default()
        })
        .await
        .unwrap();
    app.settle().await;
    assert_eq!(
        app.engage
            .email_consent(&profile.id)
            .await
            .unwrap()
            .consent
            .as_str(),
        "SUBSCRIBED"
    );
    assert_eq!(after(&app, (0, 0)).await, Vec::new());

    // The same writes made in Signalbox do make rows, flagged with what Segment gave.
    app.engage
        .update_profile(
            &profile.id,
            ProfileInput {
                last_name: Some("Adams".into()),
                ..ProfileInput::default()
            },
        )
        .await
        .unwrap();
    let fay = app.by_email("fay@example.com").await;
    app.engage
        .update_profile(
            &fay.id,
            ProfileInput {
                last_name: Some("Fox".into()),
                ..ProfileInput::default()
            },
        )
        .await
        .unwrap();
    let rows = after(&app, (0, 0)).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows.iter().all(|r| r.from_segment));
    assert_eq!(rows[0].user_id.as_deref(), Some("u9"));
    assert_eq!(rows[1].user_id.as_deref(), Some("u10"));
}

#[tokio::test]
async fn list_and_consent_changes_and_imports_make_rows() {
    let app = TestApp::start().await;
    let single = app
        .engage
        .create_list("Newsletter", OptInProcess::SingleOptIn)
        .await
        .unwrap();
    let double = app
        .engage
        .create_list("VIP", OptInProcess::DoubleOptIn)
        .await
        .unwrap();
    let gus = app
        .engage
        .create_profile(email("gus@example.com"))
        .await
        .unwrap();
    let head = app.engage.outbox_head().await.unwrap();
    app.engage
        .add_list_members(&single.id, std::slice::from_ref(&gus.id))
        .await
        .unwrap();
    app.engage
        .remove_list_members(&single.id, std::slice::from_ref(&gus.id))
        .await
        .unwrap();
    app.engage
        .subscribe(SubscribeRequest {
            list_id: Some(double.id.clone()),
            emails: vec!["gus@example.com".parse().unwrap()],
            ..SubscribeRequest::default()
        })
        .await
        .unwrap();
    app.engage
        .confirm_subscription(&gus.id, &double.id)
        .await
        .unwrap();
    app.engage.unsubscribe_profile(&gus.id).await.unwrap();
    app.engage
        .suppress(
            SuppressTarget::Emails(vec!["gus@example.com".parse().unwrap()]),
            SuppressionReason::UserSuppressed,
        )
        .await
        .unwrap();
    app.engage
        .import_list_members(
            &single.id,
            vec![ImportRow {
                email: "hal@example.com".parse().unwrap(),
                first_name: Some("Hal".into()),
                last_name: None,
            }],
        )
        .await
        .unwrap();
    app.engage
        .unsubscribe(UnsubscribeRequest {
            list_id: Some(single.id.clone()),
            emails: vec!["hal@example.com".parse().unwrap()],
        })
        .await
        .unwrap();
    let rows = after(&app, head).await;
    let described: Vec<(String, Value)> = rows
        .iter()
        .map(|r| {
            let email = r.email.clone().unwrap_or_default();
            let change = match &r.change {
                OutboxChange::Traits { traits } => json!({"traits": traits}),
                OutboxChange::Consent {
                    consent,
                    suppressed,
                } => json!({"consent": consent, "suppressed": suppressed}),
                OutboxChange::List {
                    list_id,
                    list_name,
                    change,
                } => json!({"list": list_name, "id": list_id, "change": change}),
                OutboxChange::Email(event) => {
                    json!({"email": event.metric.name(), "properties": event.properties})
                }
            };
            (email, change)
        })
        .collect();
    let (s, d) = (single.id.0.as_str(), double.id.0.as_str());
    let gus = "gus@example.com".to_owned();
    let hal = "hal@example.com".to_owned();
    assert_eq!(
        described,
        vec![
            (
                gus.clone(),
                json!({"list": "Newsletter", "id": s, "change": "added"})
            ),
            (
                gus.clone(),
                json!({"list": "Newsletter", "id": s, "change": "removed"})
            ),
            (
                gus.clone(),
                json!({"list": "VIP", "id": d, "change": "pending"})
            ),
            (
                gus.clone(),
                json!({"list": "VIP", "id": d, "change": "confirmed"})
            ),
            (
                gus.clone(),
                json!({"consent": "SUBSCRIBED", "suppressed": null})
            ),
            (
                gus.clone(),
                json!({"consent": "UNSUBSCRIBED", "suppressed": "UNSUBSCRIBE"})
            ),
            (
                gus.clone(),
                json!({"email": "Unsubscribed", "properties":
                       {"method": "EMAIL_UNSUBSCRIBE", "method_detail": "link"}})
            ),
            (
                gus.clone(),
                json!({"consent": "UNSUBSCRIBED", "suppressed": "USER_SUPPRESSED"})
            ),
            (
                hal.clone(),
                json!({"traits": {"email": "hal@example.com", "firstName": "Hal"}})
            ),
            (
                hal.clone(),
                json!({"list": "Newsletter", "id": s, "change": "added"})
            ),
            (
                hal.clone(),
                json!({"consent": "UNSUBSCRIBED", "suppressed": "UNSUBSCRIBE"})
            ),
            (
                hal.clone(),
                json!({"email": "Unsubscribed", "properties": {"method": "API"}})
            ),
            (
                hal.clone(),
                json!({"list": "Newsletter", "id": s, "change": "removed"})
            ),
        ]
    );
    // Positions strictly increase.
    for pair in rows.windows(2) {
        assert!((pair[0].seq, pair[0].n) < (pair[1].seq, pair[1].n));
    }
}

fn builtin(
    metric: BuiltinMetric,
    profile: &ProfileId,
    properties: Value,
    unique_id: &str,
) -> BuiltinEventInput {
    BuiltinEventInput {
        metric,
        profile_id: profile.clone(),
        properties: object(properties),
        time: None,
        unique_id: Some(unique_id.to_owned()),
    }
}

#[tokio::test]
async fn built_in_email_events_make_rows_with_the_email_spec_fields() {
    let app = TestApp::start().await;
    let ivy = app
        .engage
        .create_profile(email("ivy@example.com"))
        .await
        .unwrap();
    let head = app.engage.outbox_head().await.unwrap();
    let key = "run-7:act-3";
    let sent_at: jiff::Timestamp = "2026-02-27T10:00:00Z".parse().unwrap();
    let mut received = builtin(
        BuiltinMetric::ReceivedEmail,
        &ivy.id,
        json!({"Subject": "Hello Ivy", "$flow": "FL1", "$message": "act-3",
               "$message_id": key}),
        &format!("Received Email:{key}"),
    );
    received.time = Some(sent_at);
    app.engage.record_builtin_event(received).await.unwrap();
    for unique in ["open-1", "open-1"] {
        app.engage
            .record_builtin_event(builtin(
                BuiltinMetric::OpenedEmail,
                &ivy.id,
                json!({"$message": key}),
                unique,
            ))
            .await
            .unwrap();
    }
    app.engage
        .record_builtin_event(builtin(
            BuiltinMetric::ClickedEmail,
            &ivy.id,
            json!({"$message": key, "URL": "https://shop.example.com/"}),
            "click-1",
        ))
        .await
        .unwrap();
    app.engage
        .record_builtin_event(builtin(
            BuiltinMetric::BouncedEmail,
            &ivy.id,
            json!({"Subject": "Hello again", "$flow": "FL1", "$message": "act-4",
                   "$message_id": "run-7:act-4", "$campaign": "C1",
                   "$campaign_name": "Spring"}),
            "bounce-1",
        ))
        .await
        .unwrap();
    let rows = after(&app, head).await;
    assert_eq!(
        rows.len(),
        5,
        "one open (a duplicate is no event), and the bounce's suppression: {rows:?}"
    );
    let events: Vec<_> = rows[..4]
        .iter()
        .map(|r| match &r.change {
            OutboxChange::Email(event) => event.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(rows[0].at, sent_at, "a built-in event's own time");
    assert_eq!(events[0].metric, BuiltinMetric::ReceivedEmail);
    for event in &events[..3] {
        assert_eq!(event.message_id.as_deref(), Some(key));
        assert_eq!(event.subject.as_deref(), Some("Hello Ivy"));
        assert_eq!(event.flow_id.as_deref(), Some("FL1"));
    }
    assert_eq!(events[1].metric, BuiltinMetric::OpenedEmail);
    assert_eq!(events[2].metric, BuiltinMetric::ClickedEmail);
    assert_eq!(events[2].url.as_deref(), Some("https://shop.example.com/"));
    assert_eq!(events[3].metric, BuiltinMetric::BouncedEmail);
    assert_eq!(events[3].message_id.as_deref(), Some("run-7:act-4"));
    assert_eq!(events[3].campaign_id.as_deref(), Some("C1"));
    assert_eq!(events[3].campaign_name.as_deref(), Some("Spring"));
    assert_eq!(events[3].properties["Subject"], "Hello again");
    assert_eq!(
        rows[4].change,
        OutboxChange::Consent {
            consent: "NEVER_SUBSCRIBED".into(),
            suppressed: Some("HARD_BOUNCE".into())
        }
    );
    assert!(rows
        .iter()
        .all(|r| r.email.as_deref() == Some("ivy@example.com")));
}

#[tokio::test]
async fn a_merge_makes_no_row_and_later_rows_name_the_survivor() {
    let app = TestApp::start().await;
    let keep = app
        .engage
        .create_profile(email("jo@example.com"))
        .await
        .unwrap();
    let gone = app
        .engage
        .create_profile(ProfileInput {
            phone_number: Some("+14155550123".into()),
            ..ProfileInput::default()
        })
        .await
        .unwrap();
    let head = app.engage.outbox_head().await.unwrap();
    app.engage
        .merge_profiles(&keep.id, std::slice::from_ref(&gone.id))
        .await
        .unwrap();
    assert_eq!(after(&app, head).await, Vec::new());
    app.engage
        .update_profile(
            &gone.id,
            ProfileInput {
                first_name: Some("Jo".into()),
                ..ProfileInput::default()
            },
        )
        .await
        .unwrap();
    let rows = after(&app, head).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].profile_id, keep.id);
    assert_eq!(rows[0].email.as_deref(), Some("jo@example.com"));
}

#[tokio::test]
async fn reads_page_in_order_and_find_a_time() {
    let app = TestApp::start().await;
    let start = app.clock_now();
    for i in 0..7 {
        app.clock.advance(SignedDuration::from_mins(1));
        app.engage
            .create_profile(ProfileInput {
                email: Some(format!("p{i}@example.com")),
                first_name: Some(format!("P{i}")),
                ..ProfileInput::default()
            })
            .await
            .unwrap();
    }
    app.settle().await;
    let whole = app.engage.outbox_after((0, 0), 1000).await.unwrap();
    assert_eq!(whole.len(), 7);
    for pair in whole.windows(2) {
        assert!((pair[0].seq, pair[0].n) < (pair[1].seq, pair[1].n));
        assert!(pair[0].at < pair[1].at);
    }
    for page in [1, 2, 3, 7, 100] {
        assert_eq!(all(&app.engage, page).await, whole, "pages of {page}");
    }
    let last = whole.last().unwrap();
    assert_eq!(app.engage.outbox_head().await.unwrap(), (last.seq, last.n));
    assert_eq!(
        app.engage
            .outbox_after((last.seq, last.n), 10)
            .await
            .unwrap(),
        Vec::new()
    );

    // Before the first: from the start. At the fourth's time: just before it. After all:
    // the head (nothing to replay).
    assert_eq!(
        app.engage.outbox_position_before(start).await.unwrap(),
        (0, 0)
    );
    let fourth = &whole[3];
    let before = app.engage.outbox_position_before(fourth.at).await.unwrap();
    assert_eq!(before, (whole[2].seq, whole[2].n));
    assert_eq!(
        app.engage.outbox_after(before, 1).await.unwrap()[0],
        fourth.clone()
    );
    let later = last.at.checked_add(SignedDuration::from_secs(1)).unwrap();
    assert_eq!(
        app.engage.outbox_position_before(later).await.unwrap(),
        (last.seq, last.n)
    );
}

#[tokio::test]
async fn a_rebuild_writes_the_same_outbox() {
    let mut app = TestApp::start().await;
    let list = app
        .engage
        .create_list("L", OptInProcess::SingleOptIn)
        .await
        .unwrap();
    app.identify(json!({"userId": "u1", "traits": {"email": "kim@example.com"}}))
        .await;
    app.settle().await;
    let kim = app.by_email("kim@example.com").await;
    app.engage
        .update_profile(
            &kim.id,
            ProfileInput {
                first_name: Some("Kim".into()),
                ..ProfileInput::default()
            },
        )
        .await
        .unwrap();
    app.engage
        .with_origin(WriteOrigin::Segment)
        .import_profile(ProfileInput {
            email: Some("lee@example.com".into()),
            external_id: Some("u2".into()),
            ..ProfileInput::default()
        })
        .await
        .unwrap();
    app.engage
        .add_list_members(&list.id, std::slice::from_ref(&kim.id))
        .await
        .unwrap();
    app.engage
        .record_builtin_event(builtin(
            BuiltinMetric::OpenedEmail,
            &kim.id,
            json!({"$message": "m1"}),
            "o1",
        ))
        .await
        .unwrap();
    app.engage
        .import_list_members(
            &ListId(list.id.0.clone()),
            vec![ImportRow {
                email: "lee@example.com".parse().unwrap(),
                first_name: Some("Lee".into()),
                last_name: None,
            }],
        )
        .await
        .unwrap();
    app.settle().await;
    let before = all(&app.engage, 1000).await;
    assert_eq!(before.len(), 5, "{before:?}");
    assert!(before.iter().all(|r| r.from_segment));
    let dump = app.engage.dump().await.unwrap();
    app.engage.shutdown().await;

    let path = app.config.path.clone();
    rebuild(
        Arc::clone(&app.store),
        &path,
        app.config.hold_window,
        app.clock_now(),
        |_| {},
    )
    .await
    .unwrap();
    let rebuilt = Engage::open_readonly(&path).await.unwrap();
    assert_eq!(all(&rebuilt, 2).await, before);
    assert_eq!(rebuilt.dump().await.unwrap(), dump);
}

// The reader is called from the test's task: a backend that waits on the runtime steps
// out of a worker of a multi-thread one to do so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flag_costs_a_profile_write_only_the_first_time() {
    use signalbox_engage::feed::FeedCursor;

    let mut app = TestApp::start().await;
    app.engage
        .create_profile(email("mo@example.com"))
        .await
        .unwrap();
    app.settle().await;
    let reader = app.engage.reader().unwrap();
    let created = reader
        .changes(&FeedCursor::default(), app.engage.applied_seq(), 100)
        .unwrap();
    assert_eq!(created.profiles.len(), 1);
    // The first Segment call sets the flag: the row is written once.
    app.track(
        json!({"userId": "u7", "event": "Viewed", "properties": {"email": "mo@example.com"}}),
    )
    .await;
    app.settle().await;
    let flagged = reader
        .changes(&created.cursor, app.engage.applied_seq(), 100)
        .unwrap();
    assert_eq!(flagged.events.len(), 1);
    assert_eq!(flagged.profiles, created.profiles);
    // Later calls with the same userId add events and leave the row alone.
    for n in 0..3 {
        app.track(json!({"userId": "u7", "event": "Viewed", "properties": {"n": n}}))
            .await;
    }
    app.settle().await;
    let later = reader
        .changes(&flagged.cursor, app.engage.applied_seq(), 100)
        .unwrap();
    assert_eq!(later.events.len(), 3);
    assert!(later.profiles.is_empty(), "{later:?}");
}

#[tokio::test]
async fn an_entry_applied_again_from_quarantine_lands_after_what_readers_have_seen() {
    use std::sync::atomic::{AtomicBool, Ordering};

    use signalbox_core::StoredCall;
    use signalbox_engage::EntryFault;

    let fixed = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&fixed);
    let fault = EntryFault(Arc::new(move |entry: &StoredCall| {
        (!flag.load(Ordering::SeqCst) && entry.payload.contains("Poisoned"))
            .then(|| "planned failure".to_owned())
    }));
    let app = TestApp::start_with(|c| c.fault = Some(fault)).await;
    app.engage
        .create_events(vec![ApiEventInput {
            metric_name: "Viewed".into(),
            profile: ProfileInput {
                email: Some("pat@example.com".into()),
                first_name: Some("Poisoned".into()),
                ..ProfileInput::default()
            },
            ..ApiEventInput::default()
        }])
        .await
        .unwrap();
    app.engage
        .create_profile(email("quinn@example.com"))
        .await
        .unwrap();
    let seen = after(&app, (0, 0)).await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    let head = app.engage.outbox_head().await.unwrap();
    let quarantined = app.engage.quarantined(0, 10).await.unwrap();
    assert_eq!(quarantined.len(), 1);
    assert!(quarantined[0].seq < head.0);

    fixed.store(true, Ordering::SeqCst);
    app.engage
        .retry_quarantined(quarantined[0].seq)
        .await
        .unwrap();
    let rows = after(&app, head).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!((rows[0].seq, rows[0].n) > head);
    assert_eq!(rows[0].email.as_deref(), Some("pat@example.com"));
    assert_eq!(traits(&rows[0])["firstName"], "Poisoned");
}

#[tokio::test]
async fn an_api_event_makes_a_row_only_for_what_it_did_to_its_profile() {
    let app = TestApp::start().await;
    let event = |first_name: Option<&str>| ApiEventInput {
        metric_name: "Viewed".into(),
        profile: ProfileInput {
            email: Some("rae@example.com".into()),
            first_name: first_name.map(str::to_owned),
            ..ProfileInput::default()
        },
        ..ApiEventInput::default()
    };
    app.engage
        .create_events(vec![event(Some("Rae")), event(None), event(Some("Rae"))])
        .await
        .unwrap();
    let rows = after(&app, (0, 0)).await;
    assert_eq!(rows.len(), 1, "the event itself is not sent back: {rows:?}");
    assert_eq!(
        Value::Object(traits(&rows[0]).clone()),
        json!({"email": "rae@example.com", "firstName": "Rae"})
    );
}
