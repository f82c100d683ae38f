//! What no client can do to derived state: grow a profile without bound, overflow an
//! aggregate, or make two profiles of one email by spelling it two ways.

use std::sync::Arc;

use serde_json::{json, Map, Value};
use signalbox_engage::limits::{
    MAX_EVENT_VALUE, MAX_PROFILE_PROPERTIES, MAX_PROFILE_PROPERTIES_BYTES, MAX_PROPERTY_VALUE_BYTES,
};
use signalbox_engage::{
    rebuild, AggregateQuery, ApiEventInput, Engage, EngageError, Interval, Measurement,
    ProfileField, ProfileInput,
};

use crate::helpers::{at, TestApp};

fn properties(prefix: &str, n: usize) -> Map<String, Value> {
    (0..n).map(|i| (format!("{prefix}{i}"), json!(i))).collect()
}

async fn problems(app: &TestApp, email: &str) -> Vec<String> {
    let profile = app.by_email(email).await;
    app.engage
        .profile_history(&profile.id)
        .await
        .unwrap()
        .problems
}

/// A rebuild from the log gives the same derived state.
async fn assert_rebuild_matches(app: &TestApp) {
    let before = app.engage.dump().await.unwrap();
    app.engage.shutdown().await;
    rebuild(
        Arc::clone(&app.store),
        &app.config.path,
        app.config.hold_window,
        app.clock_now(),
        |_| {},
    )
    .await
    .unwrap();
    let after = Engage::open_readonly(&app.config.path)
        .await
        .unwrap()
        .dump()
        .await
        .unwrap();
    assert_eq!(before, after);
}

#[tokio::test]
async fn traits_beyond_the_property_caps_are_refused_and_reported() {
    let mut app = TestApp::start().await;
    let mut traits = properties("a", MAX_PROFILE_PROPERTIES - 10);
    traits.insert("email".into(), json!("cap@example.com"));
    app.identify(json!({"userId": "u1", "traits": traits}))
        .await;
    // Twenty more would make 1,010: refused whole; the standard field still applies.
    let mut more = properties("b", 20);
    more.insert("firstName".into(), json!("Ada"));
    app.identify(json!({"userId": "u1", "traits": more})).await;
    // Each value fits, the profile's total does not: 4 × 30 KiB.
    let chunk = "x".repeat(30 * 1024);
    app.identify(
        json!({"userId": "u1", "traits": {"c1": chunk, "c2": chunk, "c3": chunk,
                                                   "c4": chunk}}),
    )
    .await;
    // One value over its own limit.
    let big = "y".repeat(MAX_PROPERTY_VALUE_BYTES + 1);
    app.identify(json!({"userId": "u1", "traits": {"big": big}}))
        .await;
    app.settle().await;

    let profile = app.by_email("cap@example.com").await;
    assert_eq!(profile.properties.len(), MAX_PROFILE_PROPERTIES - 10);
    assert_eq!(profile.first_name.as_deref(), Some("Ada"));
    assert!(!profile.properties.contains_key("b0"));
    let problems = problems(&app, "cap@example.com").await;
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(
        problems[0].contains(&format!("over the limit of {MAX_PROFILE_PROPERTIES}")),
        "{problems:?}"
    );
    assert!(
        problems[1].contains(&format!(
            "over the limit of {MAX_PROFILE_PROPERTIES_BYTES} bytes"
        )),
        "{problems:?}"
    );
    assert!(
        problems[2].starts_with("property changes not applied: properties.big is"),
        "{problems:?}"
    );
    assert_eq!(app.counter("refused.properties").await, 3);
    assert_rebuild_matches(&app).await;
}

#[tokio::test]
async fn api_profile_writes_beyond_the_caps_are_refused_naming_the_field() {
    let app = TestApp::start().await;
    let too_many = app
        .engage
        .create_profile(ProfileInput {
            email: Some("api@example.com".into()),
            properties: properties("p", MAX_PROFILE_PROPERTIES + 1),
            ..ProfileInput::default()
        })
        .await
        .unwrap_err();
    match too_many {
        EngageError::Invalid { field, reason } => {
            assert_eq!(field, "properties");
            assert!(reason.contains("over the limit of 1000"), "{reason}");
        }
        other => panic!("expected invalid, got {other:?}"),
    }
    let mut big = Map::new();
    big.insert("notes".into(), json!("z".repeat(MAX_PROPERTY_VALUE_BYTES)));
    let err = app
        .engage
        .create_profile(ProfileInput {
            email: Some("api@example.com".into()),
            properties: big,
            ..ProfileInput::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, EngageError::Invalid { field, .. } if field == "properties.notes"),
        "{err:?}"
    );

    // Under the cap alone, over it together with what the profile has.
    let profile = app
        .engage
        .create_profile(ProfileInput {
            email: Some("api@example.com".into()),
            properties: properties("p", MAX_PROFILE_PROPERTIES - 1),
            ..ProfileInput::default()
        })
        .await
        .unwrap();
    let err = app
        .engage
        .update_profile(
            &profile.id,
            ProfileInput {
                first_name: Some("Bo".into()),
                properties: properties("q", 2),
                ..ProfileInput::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, EngageError::Invalid { field, reason }
            if field == "properties" && reason.contains("1001")),
        "{err:?}"
    );
    // Nothing of the refused update applied.
    let kept = app.engage.get_profile(&profile.id).await.unwrap();
    assert_eq!(kept.first_name, None);
    assert_eq!(kept.properties.len(), MAX_PROFILE_PROPERTIES - 1);
}

#[tokio::test]
async fn event_values_beyond_the_limit_are_dropped_and_sums_stay_finite() {
    let mut app = TestApp::start().await;
    app.identify(json!({"userId": "v", "traits": {"email": "v@example.com"}}))
        .await;
    for revenue in [json!(1e308), json!(1e308), json!(12.5), json!(-1e300)] {
        app.track(
            json!({"userId": "v", "event": "Paid", "timestamp": "2026-03-02T10:00:00Z",
                         "properties": {"revenue": revenue}}),
        )
        .await;
    }
    app.engage
        .create_events(vec![ApiEventInput {
            metric_name: "Paid".into(),
            profile: ProfileInput {
                email: Some("v@example.com".into()),
                ..ProfileInput::default()
            },
            properties: Map::new(),
            time: Some(at("2026-03-02T11:00:00Z")),
            value: Some(f64::MAX),
            value_currency: None,
            unique_id: None,
        }])
        .await
        .unwrap();
    app.settle().await;

    let metric = app.metric("Paid").await.id;
    let result = app
        .engage
        .aggregate(AggregateQuery {
            metric_id: metric,
            measurements: vec![Measurement::Count, Measurement::SumValue],
            interval: Interval::Day,
            start: at("2026-03-02T00:00:00Z"),
            end: at("2026-03-03T00:00:00Z"),
            timezone: "UTC".into(),
            by: Vec::new(),
            property_equals: Vec::new(),
        })
        .await
        .unwrap();
    // The Segment events' metric (the API's event has a metric of its own integration).
    assert_eq!(result.rows[0].count, [4]);
    assert_eq!(result.rows[0].sum_value, [12.5]);
    // As a Klaviyo client reads it: a number, never null.
    assert_eq!(json!(result.rows[0].sum_value[0]), json!(12.5));

    let events = app.feed_of(&app.by_email("v@example.com").await).await;
    let values: Vec<Option<f64>> = events.iter().map(|e| e.value).collect();
    assert_eq!(values.len(), 5);
    assert_eq!(
        values.iter().filter(|v| v.is_some()).count(),
        1,
        "{values:?}"
    );
    assert!(events
        .iter()
        .all(|e| e.properties.get("$value").is_none_or(|v| v == 12.5)));
    let problems = problems(&app, "v@example.com").await;
    assert_eq!(problems.len(), 4, "{problems:?}");
    assert!(
        problems
            .iter()
            .all(|p| p.contains(&format!("limit of ±{MAX_EVENT_VALUE:e}"))),
        "{problems:?}"
    );
}

#[tokio::test]
async fn nfc_and_nfd_spellings_of_an_email_are_one_profile() {
    let mut app = TestApp::start().await;
    let nfc = "jos\u{e9}@example.com";
    let nfd = "jose\u{301}@example.com";
    app.identify(json!({"userId": "one", "traits": {"email": nfc}}))
        .await;
    app.identify(json!({"anonymousId": "two", "traits": {"email": nfd, "plan": "pro"}}))
        .await;
    app.settle().await;
    let profiles = app.profiles().await;
    assert_eq!(profiles.len(), 1, "{profiles:?}");
    assert_eq!(profiles[0].email.as_deref(), Some(nfc));
    assert_eq!(profiles[0].properties["plan"], "pro");
    // Either spelling finds it.
    let found = app.profile_by(ProfileField::Email, nfd).await.unwrap();
    assert_eq!(found.id, profiles[0].id);
    // The API keys it the same way.
    let err = app
        .engage
        .create_profile(ProfileInput {
            email: Some(nfd.to_uppercase()),
            ..ProfileInput::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, EngageError::DuplicateProfile { ref id } if *id == profiles[0].id),
        "{err:?}"
    );
    assert_rebuild_matches(&app).await;
}

#[tokio::test]
async fn an_email_with_a_control_character_is_refused() {
    let mut app = TestApp::start().await;
    app.identify(json!({"userId": "nul", "traits": {"email": "n@example.com"}}))
        .await;
    app.identify(json!({"userId": "nul", "traits": {"email": "a\u{0}b@example.com"}}))
        .await;
    app.settle().await;
    let profile = app
        .profile_by(ProfileField::ExternalId, "nul")
        .await
        .unwrap();
    assert_eq!(profile.email.as_deref(), Some("n@example.com"));
    assert_eq!(app.profiles().await.len(), 1);
    let history = app.engage.profile_history(&profile.id).await.unwrap();
    assert_eq!(history.problems.len(), 1);
    assert!(
        history.problems[0].contains("contains a control character"),
        "{:?}",
        history.problems
    );

    let err = app
        .engage
        .create_profile(ProfileInput {
            email: Some("c\u{7f}d@example.com".into()),
            ..ProfileInput::default()
        })
        .await
        .unwrap_err();
    match err {
        EngageError::Invalid { field, reason } => {
            assert_eq!(field, "email");
            assert!(reason.contains("control character"), "{reason}");
        }
        other => panic!("expected invalid, got {other:?}"),
    }
}
