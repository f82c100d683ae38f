//! Live membership: events and profile changes move members at once, time windows let them
//! leave on time (across a restart), edits re-evaluate, cycles and bad definitions are refused.

use jiff::SignedDuration;
use serde_json::json;
use signalbox_audience::{AudienceError, SegmentInput, SegmentPatch};

use crate::helpers::{alltime, last_days, metric, one, set, TestApp};

#[tokio::test]
async fn an_event_enters_and_time_makes_the_profile_leave_on_time_across_a_restart() {
    let (mut app, viewed) = TestApp::with_ann_viewed_once().await;
    let segment = app
        .segment(
            "viewed 1d",
            one(metric(&viewed, "greater-than", 0.0, last_days(1))),
        )
        .await;
    assert_eq!(app.emails(&segment).await, set(&["ann@example.com"]));

    // Half way through the window, the worker stops; the rest of the window passes while it
    // is down, and one more hour.
    app.advance(SignedDuration::from_hours(12));
    app.settle().await;
    assert_eq!(app.emails(&segment).await, set(&["ann@example.com"]));
    app.restart_audience().await;
    app.audience.shutdown().await;
    app.advance(SignedDuration::from_hours(11));
    app.restart_audience().await;
    app.settle().await;
    assert_eq!(
        app.emails(&segment).await,
        set(&["ann@example.com"]),
        "not yet: 23 h"
    );
    app.advance(SignedDuration::from_hours(2));
    app.settle().await;
    assert!(app.emails(&segment).await.is_empty(), "left after 24 h");

    let changes = app.audience.changes_after(0, 100).await.unwrap();
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert!(changes[0].entered && !changes[1].entered);
    assert!(changes[0].cursor < changes[1].cursor);
    assert_eq!(changes[1].segment_id, segment.id);
    // The leave is recorded at the instant the worker saw it, after the window closed.
    assert!(changes[1].at >= changes[0].at + SignedDuration::from_hours(24));
    assert!(app
        .audience
        .changes_after(changes[1].cursor, 100)
        .await
        .unwrap()
        .is_empty());

    // A new event brings the profile back at once.
    app.track(json!({"userId": "ann", "event": "Viewed"})).await;
    app.settle().await;
    assert_eq!(app.emails(&segment).await, set(&["ann@example.com"]));
    let more = app
        .audience
        .changes_after(changes[1].cursor, 100)
        .await
        .unwrap();
    assert_eq!(more.len(), 1);
    assert!(more[0].entered);
}

#[tokio::test]
async fn profile_changes_and_edits_re_evaluate_and_dependents_follow() {
    let mut app = TestApp::start().await;
    for user in ["a", "b"] {
        app.identify(json!({"userId": user, "traits": {"email": format!("{user}@example.com"), "Plan": "free"}}))
            .await;
    }
    app.settle().await;
    let pro = app
        .segment(
            "pro",
            one(
                json!({"type": "profile-property", "property": "properties['Plan']",
            "filter": {"type": "string", "operator": "equals", "value": "pro"}}),
            ),
        )
        .await;
    let in_pro = app
        .segment("in pro", one(json!({"type": "profile-group-membership", "is_member": true, "group_ids": [pro.id]})))
        .await;
    assert!(app.emails(&in_pro).await.is_empty());
    app.identify(json!({"userId": "a", "traits": {"Plan": "pro"}}))
        .await;
    app.settle().await;
    assert_eq!(app.emails(&pro).await, set(&["a@example.com"]));
    assert_eq!(
        app.emails(&in_pro).await,
        set(&["a@example.com"]),
        "segment on segment"
    );

    // An edit is a new version, backfilled.
    let edited = app
        .audience
        .update_segment(
            &pro.id,
            SegmentPatch {
                definition: Some(one(
                    json!({"type": "profile-property", "property": "properties['Plan']",
                "filter": {"type": "string", "operator": "equals", "value": "free"}}),
                )),
                ..SegmentPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(edited.version, 2);
    app.settle().await;
    assert_eq!(app.emails(&pro).await, set(&["b@example.com"]));
    assert_eq!(app.emails(&in_pro).await, set(&["b@example.com"]));
    assert!(!app
        .audience
        .get_segment(&pro.id)
        .await
        .unwrap()
        .is_processing());

    // A cycle is refused with a pointer at the membership condition; so is a bad definition.
    let err = app
        .audience
        .update_segment(&pro.id, SegmentPatch {
            definition: Some(one(json!({"type": "profile-group-membership", "is_member": true, "group_ids": [in_pro.id]}))),
            ..SegmentPatch::default()
        })
        .await
        .unwrap_err();
    let AudienceError::Invalid(errors) = err else {
        panic!("{err:?}")
    };
    assert_eq!(
        errors[0].pointer,
        "/data/attributes/definition/condition_groups/0/conditions/0/group_ids/0"
    );
    let err = app
        .audience
        .create_segment(SegmentInput {
            name: "bad".into(),
            definition: one(
                json!({"type": "profile-metric", "metric_id": "X", "measurement": "count",
                "measurement_filter": {"type": "numeric", "operator": "bigger", "value": 1},
                "timeframe_filter": alltime()}),
            ),
            is_starred: false,
        })
        .await
        .unwrap_err();
    let AudienceError::Invalid(errors) = err else {
        panic!("{err:?}")
    };
    assert_eq!(
        errors[0].pointer,
        "/data/attributes/definition/condition_groups/0/conditions/0/measurement_filter/operator"
    );
    // A segment others read cannot go; the reader can, then it can.
    assert!(matches!(
        app.audience.delete_segment(&pro.id).await,
        Err(AudienceError::Conflict { .. })
    ));
    app.audience.delete_segment(&in_pro.id).await.unwrap();
    app.audience.delete_segment(&pro.id).await.unwrap();
    assert!(app.audience.list_segments().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_merge_moves_membership_to_the_surviving_profile() {
    let mut app = TestApp::start().await;
    app.identify(json!({"userId": "a", "traits": {"email": "a@example.com"}}))
        .await;
    app.identify(json!({"userId": "b", "traits": {"email": "b@example.com"}}))
        .await;
    app.track(json!({"userId": "b", "event": "Ordered"})).await;
    app.settle().await;
    let ordered = app.metric_id("Ordered").await;
    let buyers = app
        .segment(
            "buyers",
            one(metric(&ordered, "greater-than", 0.0, alltime())),
        )
        .await;
    assert_eq!(app.emails(&buyers).await, set(&["b@example.com"]));
    let a = app.profile_id("a@example.com").await;
    let b = app.profile_id("b@example.com").await;
    app.engage
        .merge_profiles(&a, std::slice::from_ref(&b))
        .await
        .unwrap();
    app.settle().await;
    // The merged profile's events now belong to the survivor, which is in; the other is gone.
    let members = app.audience.members(&buyers.id, None, 10).await.unwrap();
    let ids: Vec<String> = members
        .members
        .iter()
        .map(|m| m.profile_id.clone())
        .collect();
    assert_eq!(ids, vec![a.0.clone()]);
    let changes = app.audience.changes_after(0, 100).await.unwrap();
    assert!(
        changes.iter().any(|c| c.profile_id == b.0 && !c.entered),
        "{changes:?}"
    );
    assert!(
        changes.iter().any(|c| c.profile_id == a.0 && c.entered),
        "{changes:?}"
    );
}

#[tokio::test]
async fn segments_are_listed_a_page_at_a_time_oldest_first() {
    let app = TestApp::start().await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let definition = one(json!({"type": "profile-property", "property": "email",
            "filter": {"type": "string", "operator": "ends-with", "value": format!("@{n}.test")}}));
        ids.push(app.segment(&format!("s{n}"), definition).await.id);
    }
    let first = app.audience.list_segments_page(None, 2).await.unwrap();
    let names: Vec<&str> = first.segments.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["s0", "s1"]);
    assert_eq!(first.next.as_deref(), Some(ids[1].as_str()));
    let second = app
        .audience
        .list_segments_page(first.next.as_deref(), 2)
        .await
        .unwrap();
    assert_eq!(second.segments[0].id, ids[2]);
    let last = app
        .audience
        .list_segments_page(Some(&ids[3]), 2)
        .await
        .unwrap();
    assert_eq!(last.segments.len(), 1);
    assert_eq!(last.segments[0].id, ids[4]);
    assert_eq!(last.next, None, "nothing follows the last page");
    assert!(matches!(
        app.audience.list_segments_page(Some("gone"), 2).await,
        Err(AudienceError::NotFound { .. })
    ));
}

/// The worker runs in the idle scheduling class, as engage's applier does: on saturated
/// cores it yields to the calls and reads people wait for, and catches up after.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_worker_yields_to_requests() {
    /// Linux's `SCHED_IDLE`.
    const SCHED_IDLE: u64 = 5;
    let _app = TestApp::start().await;
    let mut workers = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() != "audience" {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // Fields after the command's closing parenthesis start at the third (state); the
        // policy is the 41st.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let policy: u64 = after.split(' ').nth(41 - 3).unwrap().parse().unwrap();
        assert_eq!(policy, SCHED_IDLE, "{stat}");
        workers += 1;
    }
    assert!(workers >= 1, "no audience worker thread found");
}

/// With no segment the worker skips engage's feed; what it remembered of a profile's events
/// before must not stand in for the events it skipped once a segment exists again.
#[tokio::test]
async fn events_sent_while_no_segment_exists_count_once_segments_return() {
    let (mut app, viewed) = TestApp::with_ann_viewed_once().await;
    let first = app
        .segment(
            "viewed three times",
            one(metric(&viewed, "greater-than-or-equal", 3.0, alltime())),
        )
        .await;
    // Evaluated live once, so the worker remembers ann's two events.
    app.track(json!({"userId": "ann", "event": "Viewed"})).await;
    app.settle().await;
    assert!(app.emails(&first).await.is_empty());
    app.audience.delete_segment(&first.id).await.unwrap();

    for _ in 0..2 {
        app.track(json!({"userId": "ann", "event": "Viewed"})).await;
    }
    app.settle().await;
    let five = app
        .segment(
            "viewed five times",
            one(metric(&viewed, "greater-than-or-equal", 5.0, alltime())),
        )
        .await;
    assert!(app.emails(&five).await.is_empty(), "four so far");
    app.track(json!({"userId": "ann", "event": "Viewed"})).await;
    app.settle().await;
    assert_eq!(app.emails(&five).await, set(&["ann@example.com"]));
}
