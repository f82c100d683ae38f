//! Writes of the Klaviyo-compatible API: through the log, then applied.

use serde_json::json;
use signalbox_engage::{ApiEventInput, EngageError, Location, ProfileInput};

use crate::helpers::TestApp;

fn input(email: &str) -> ProfileInput {
    ProfileInput {
        email: Some(email.into()),
        ..ProfileInput::default()
    }
}

#[tokio::test]
async fn create_profile_then_a_duplicate_names_the_existing_one() {
    let app = TestApp::start().await;
    let created = app
        .engage
        .create_profile(ProfileInput {
            first_name: Some("Ada".into()),
            phone_number: Some("+1 415 555 2671".into()),
            properties: json!({"tier": "gold"}).as_object().unwrap().clone(),
            location: Location {
                city: Some("Oakland".into()),
                ..Location::default()
            },
            ..input("Ada@Example.com")
        })
        .await
        .unwrap();
    assert_eq!(created.email.as_deref(), Some("ada@example.com"));
    assert_eq!(created.phone_number.as_deref(), Some("+14155552671"));
    assert_eq!(created.created_by.integration, "API");
    assert_eq!(created.location.city.as_deref(), Some("Oakland"));
    let err = app
        .engage
        .create_profile(input("ada@example.com"))
        .await
        .unwrap_err();
    assert_eq!(err, EngageError::DuplicateProfile { id: created.id });
    let err = app
        .engage
        .create_profile(ProfileInput::default())
        .await
        .unwrap_err();
    assert!(matches!(err, EngageError::Invalid { .. }));
}

#[tokio::test]
async fn update_changes_fields_and_refuses_a_taken_email() {
    let app = TestApp::start().await;
    let a = app
        .engage
        .create_profile(input("a@example.com"))
        .await
        .unwrap();
    let b = app
        .engage
        .create_profile(input("b@example.com"))
        .await
        .unwrap();
    let updated = app
        .engage
        .update_profile(
            &a.id,
            ProfileInput {
                email: Some("a2@example.com".into()),
                title: Some("CEO".into()),
                unset: vec!["missing".into()],
                ..ProfileInput::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.email.as_deref(), Some("a2@example.com"));
    assert_eq!(updated.title.as_deref(), Some("CEO"));
    // The old email is free again.
    let again = app
        .engage
        .create_profile(input("a@example.com"))
        .await
        .unwrap();
    assert_ne!(again.id, a.id);
    let err = app
        .engage
        .update_profile(&a.id, input("b@example.com"))
        .await
        .unwrap_err();
    assert_eq!(err, EngageError::DuplicateProfile { id: b.id });
}

#[tokio::test]
async fn import_creates_or_updates() {
    let app = TestApp::start().await;
    let (created, is_new) = app
        .engage
        .import_profile(input("i@example.com"))
        .await
        .unwrap();
    assert!(is_new);
    let (updated, is_new) = app
        .engage
        .import_profile(ProfileInput {
            last_name: Some("Ito".into()),
            ..input("i@example.com")
        })
        .await
        .unwrap();
    assert!(!is_new);
    assert_eq!(updated.id, created.id);
    assert_eq!(updated.last_name.as_deref(), Some("Ito"));
    let other = app
        .engage
        .create_profile(ProfileInput {
            external_id: Some("x-1".into()),
            ..ProfileInput::default()
        })
        .await
        .unwrap();
    let err = app
        .engage
        .import_profile(ProfileInput {
            external_id: Some("x-1".into()),
            ..input("i@example.com")
        })
        .await
        .unwrap_err();
    assert!(matches!(err, EngageError::Conflict { .. }), "{err}");
    assert_ne!(other.id, created.id);
}

#[tokio::test]
async fn merge_moves_events_and_redirects() {
    let mut app = TestApp::start().await;
    app.identify(json!({"userId": "u1", "traits": {"email": "m1@example.com"}}))
        .await;
    app.identify(json!({"userId": "u2", "traits": {"email": "m2@example.com"}}))
        .await;
    app.track(json!({"userId": "u1", "event": "E"})).await;
    app.track(json!({"userId": "u2", "event": "E"})).await;
    app.settle().await;
    let one = app.by_email("m1@example.com").await;
    let two = app.by_email("m2@example.com").await;
    let survivor = app
        .engage
        .merge_profiles(&one.id, std::slice::from_ref(&two.id))
        .await
        .unwrap();
    assert_eq!(survivor.id, one.id);
    assert_eq!(survivor.email.as_deref(), Some("m1@example.com"));
    assert_eq!(app.feed_of(&survivor).await.len(), 2);
    assert_eq!(app.engage.get_profile(&two.id).await.unwrap().id, one.id);
    // Both emails name the survivor now.
    app.track(json!({"userId": "zz", "event": "E", "properties": {"email": "m2@example.com"}}))
        .await;
    app.settle().await;
    assert_eq!(app.feed_of(&survivor).await.len(), 3);
    assert_eq!(app.profiles().await.len(), 1);
}

#[tokio::test]
async fn api_events_upsert_their_profile_on_an_api_metric() {
    let app = TestApp::start().await;
    app.engage
        .create_events(vec![
            ApiEventInput {
                metric_name: "Placed Order".into(),
                profile: ProfileInput {
                    first_name: Some("Kim".into()),
                    ..input("k@example.com")
                },
                properties: json!({"OrderId": "1"}).as_object().unwrap().clone(),
                value: Some(9.99),
                value_currency: Some("USD".into()),
                unique_id: Some("1".into()),
                ..ApiEventInput::default()
            },
            ApiEventInput {
                metric_name: "Placed Order".into(),
                profile: input("k@example.com"),
                unique_id: Some("1".into()),
                ..ApiEventInput::default()
            },
            ApiEventInput {
                metric_name: "Seen".into(),
                profile: ProfileInput {
                    anonymous_id: Some("device-1".into()),
                    ..ProfileInput::default()
                },
                ..ApiEventInput::default()
            },
        ])
        .await
        .unwrap();
    app.settle().await;
    let profile = app.by_email("k@example.com").await;
    assert_eq!(profile.first_name.as_deref(), Some("Kim"));
    let feed = app.feed_of(&profile).await;
    assert_eq!(feed.len(), 1, "same unique id, one event");
    assert_eq!(feed[0].value, Some(9.99));
    assert_eq!(feed[0].properties["$value"], 9.99);
    let metric = app.metric("Placed Order").await;
    assert_eq!(metric.integration.name, "API");
    // The API may create profiles from any identifier.
    assert_eq!(app.profiles().await.len(), 2);

    let err = app
        .engage
        .create_events(vec![ApiEventInput {
            metric_name: "X".into(),
            ..ApiEventInput::default()
        }])
        .await
        .unwrap_err();
    assert!(matches!(err, EngageError::Invalid { .. }));
}

#[tokio::test]
async fn concurrent_creates_of_one_email_make_one_profile() {
    let app = TestApp::start().await;
    let mut tasks = Vec::new();
    for i in 0..24 {
        let engage = app.engage.clone();
        tasks.push(tokio::spawn(async move {
            engage
                .create_profile(ProfileInput {
                    first_name: Some(format!("Try {i}")),
                    ..input("race@example.com")
                })
                .await
        }));
    }
    let mut created = Vec::new();
    let mut duplicates = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(profile) => created.push(profile),
            Err(EngageError::DuplicateProfile { id }) => duplicates.push(id),
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!(created.len(), 1);
    assert_eq!(duplicates.len(), 23);
    assert!(duplicates.iter().all(|id| *id == created[0].id));
    assert_eq!(app.profiles().await.len(), 1);
}
