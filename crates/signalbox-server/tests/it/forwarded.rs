//! `Signalbox-Origin: segment` over real HTTP: a Klaviyo API write forwarded from a Segment
//! source is applied but makes no outbox row (the reverse sync never sends it back), and marks
//! the profile as updated through Segment; any other value is a 400 naming the header.

use reqwest::{Method, StatusCode};
use serde_json::json;
use signalbox_engage::OutboxChange;

use crate::consent::ConsentApp;

const FORWARDED: (&str, &str) = ("Signalbox-Origin", "segment");

#[tokio::test]
async fn forwarded_writes_make_no_outbox_row_and_mark_the_profile() {
    let app = ConsentApp::spawn().await;
    let list = app.create_list("Forwarded", "single_opt_in").await;
    let (status, body) = app
        .api_with(
            Method::POST,
            "/api/profile-import",
            Some(json!({"data": {"type": "profile", "attributes": {
                "email": "max@example.com", "external_id": "u5", "first_name": "Max"}}})),
            &[FORWARDED],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["data"]["id"].as_str().unwrap().to_owned();
    let (status, body) = app
        .api_with(
            Method::POST,
            "/api/events",
            Some(json!({"data": {"type": "event", "attributes": {
                "metric": {"data": {"type": "metric", "attributes": {"name": "Viewed Product"}}},
                "profile": {"data": {"type": "profile", "attributes": {
                    "email": "max@example.com", "last_name": "Mustermann"}}},
                "properties": {"sku": "S1"}}}})),
            &[FORWARDED],
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, body) = app
        .api_with(
            Method::POST,
            &format!("/api/lists/{list}/relationships/profiles"),
            Some(json!({"data": [{"type": "profile", "id": id}]})),
            &[FORWARDED],
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = app
        .api_with(
            Method::POST,
            "/api/profile-subscription-bulk-create-jobs",
            Some(
                json!({"data": {"type": "profile-subscription-bulk-create-job",
                "attributes": {"profiles": {"data": [{"type": "profile",
                    "attributes": {"email": "max@example.com", "subscriptions":
                        {"email": {"marketing": {"consent": "SUBSCRIBED"}}}}}]}}}}),
            ),
            &[FORWARDED],
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    app.settle().await;
    let profile = app
        .engage
        .get_profile(&signalbox_engage::ProfileId(id.clone()))
        .await
        .unwrap();
    assert_eq!(profile.last_name.as_deref(), Some("Mustermann"));
    assert_eq!(
        app.engage.outbox_after((0, 0), 100).await.unwrap(),
        Vec::new(),
        "nothing forwarded from Segment goes back"
    );

    // The same kind of write without the header was made in Signalbox: a row, which says
    // the profile came through Segment and the userId Segment knows it by.
    let (status, body) = app
        .api(
            Method::PATCH,
            &format!("/api/profiles/{id}"),
            Some(json!({"data": {"type": "profile", "id": id,
                "attributes": {"title": "Engineer"}}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.settle().await;
    let rows = app.engage.outbox_after((0, 0), 100).await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(rows[0].from_segment);
    assert_eq!(rows[0].user_id.as_deref(), Some("u5"));
    assert_eq!(rows[0].email.as_deref(), Some("max@example.com"));
    assert_eq!(
        rows[0].change,
        OutboxChange::Traits {
            traits: json!({"title": "Engineer"}).as_object().unwrap().clone()
        }
    );
    app.stop().await;
}

#[tokio::test]
async fn another_origin_value_is_a_400_naming_the_header_on_every_write() {
    let app = ConsentApp::spawn().await;
    let list = app.create_list("L", "single_opt_in").await;
    let routes = [
        (Method::POST, "/api/profiles".to_owned()),
        (
            Method::PATCH,
            "/api/profiles/01J0000000000000000000000".to_owned(),
        ),
        (Method::POST, "/api/profile-import".to_owned()),
        (Method::POST, "/api/events".to_owned()),
        (Method::POST, "/api/event-bulk-create-jobs".to_owned()),
        (
            Method::POST,
            format!("/api/lists/{list}/relationships/profiles"),
        ),
        (
            Method::DELETE,
            format!("/api/lists/{list}/relationships/profiles"),
        ),
        (
            Method::POST,
            "/api/profile-subscription-bulk-create-jobs".to_owned(),
        ),
        (
            Method::POST,
            "/api/profile-subscription-bulk-delete-jobs".to_owned(),
        ),
        (
            Method::POST,
            "/api/profile-suppression-bulk-create-jobs".to_owned(),
        ),
        (
            Method::POST,
            "/api/profile-suppression-bulk-delete-jobs".to_owned(),
        ),
    ];
    for (method, path) in routes {
        for value in ["klaviyo", "signalbox", ""] {
            let (status, body) = app
                .api_with(
                    method.clone(),
                    &path,
                    Some(json!({"data": {"type": "profile", "attributes": {
                        "email": "nia@example.com"}}})),
                    &[("Signalbox-Origin", value)],
                )
                .await;
            assert_eq!(
                status,
                StatusCode::BAD_REQUEST,
                "{method} {path} {value:?}: {body}"
            );
            let error = &body["errors"][0];
            assert_eq!(error["source"]["parameter"], "Signalbox-Origin", "{body}");
            assert!(
                error["detail"]
                    .as_str()
                    .unwrap()
                    .contains("Signalbox-Origin"),
                "{body}"
            );
        }
    }
    app.settle().await;
    assert!(app
        .engage
        .list_profiles(signalbox_engage::ProfileQuery::default())
        .await
        .unwrap()
        .items
        .is_empty());
    app.stop().await;
}
