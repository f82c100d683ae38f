//! What the log keeps: generated ids, server stamps, skew-corrected timestamps, the batch
//! envelope applied to its items, and never the write key.

use jiff::Timestamp;
use serde_json::{json, Value};
use signalbox_core::FakeClock;

use crate::helpers::{spawn_app_with, TestApp, TestOptions};

const NOW: &str = "2026-03-01T12:00:00Z";

async fn app_at_noon() -> TestApp {
    let clock = FakeClock::new(NOW.parse::<Timestamp>().unwrap());
    spawn_app_with(TestOptions {
        clock: Some(clock),
        ..TestOptions::default()
    })
    .await
}

/// Posts one track call with these extra fields and returns what was stored.
async fn stored_track(app: &TestApp, fields: Value) -> Value {
    let mut body = json!({"userId": "u1", "event": "E"});
    for (key, value) in fields.as_object().unwrap() {
        body[key] = value.clone();
    }
    app.post_json("/v1/track", &body).await.assert_success();
    app.export().await.pop().unwrap()
}

#[tokio::test]
async fn a_missing_message_id_is_generated() {
    let app = app_at_noon().await;
    let first = stored_track(&app, json!({})).await;
    let second = stored_track(&app, json!({"messageId": ""})).await;
    let ids: Vec<&str> = [&first, &second]
        .iter()
        .map(|p| p["messageId"].as_str().unwrap())
        .collect();
    assert!(ids.iter().all(|id| id.len() >= 16), "{ids:?}");
    assert_ne!(ids[0], ids[1]);
    let calls = app.calls().await;
    assert_eq!(calls[0].message_id, ids[0]);
    assert_eq!(calls[1].message_id, ids[1]);
}

#[tokio::test]
async fn received_at_is_stamped_and_stands_in_for_a_missing_timestamp() {
    let app = app_at_noon().await;
    let stored = stored_track(&app, json!({})).await;
    assert_eq!(stored["receivedAt"], "2026-03-01T12:00:00.000Z");
    assert_eq!(stored["timestamp"], "2026-03-01T12:00:00.000Z");
    assert!(stored.get("originalTimestamp").is_none(), "{stored}");
    assert_eq!(stored["type"], "track");
    assert_eq!(
        app.calls().await[0].received_at,
        NOW.parse::<Timestamp>().unwrap()
    );
}

#[tokio::test]
async fn timestamp_is_corrected_by_the_sent_at_skew() {
    let app = app_at_noon().await;
    // The client's clock is an hour behind: it sent 5 s after the event happened.
    let stored = stored_track(
        &app,
        json!({"timestamp": "2026-03-01T11:00:00.000Z", "sentAt": "2026-03-01T11:00:05.000Z"}),
    )
    .await;
    assert_eq!(stored["timestamp"], "2026-03-01T11:59:55.000Z");
    assert_eq!(stored["originalTimestamp"], "2026-03-01T11:00:00.000Z");
    assert_eq!(stored["sentAt"], "2026-03-01T11:00:05.000Z");
    assert_eq!(stored["receivedAt"], "2026-03-01T12:00:00.000Z");

    // A clock ahead of the server's is corrected too.
    let stored = stored_track(
        &app,
        json!({"timestamp": "2026-03-01T14:00:00Z", "sentAt": "2026-03-01T14:00:30Z"}),
    )
    .await;
    assert_eq!(stored["timestamp"], "2026-03-01T11:59:30.000Z");
}

#[tokio::test]
async fn without_sent_at_the_timestamp_is_kept_in_utc() {
    let app = app_at_noon().await;
    let stored = stored_track(&app, json!({"timestamp": "2026-02-27T08:30:00.250Z"})).await;
    assert_eq!(stored["timestamp"], "2026-02-27T08:30:00.250Z");
    assert_eq!(stored["originalTimestamp"], "2026-02-27T08:30:00.250Z");
}

#[tokio::test]
async fn offsets_are_converted_to_utc_and_kept_as_sent_in_original_timestamp() {
    let app = app_at_noon().await;
    for (sent, utc) in [
        ("2026-03-01T13:00:00+01:00", "2026-03-01T12:00:00.000Z"),
        ("2026-03-01T07:00:00-05:00", "2026-03-01T12:00:00.000Z"),
        ("2026-03-01T17:30:00.5+05:30", "2026-03-01T12:00:00.500Z"),
        ("2026-03-01T12:00:00+00:00", "2026-03-01T12:00:00.000Z"),
        ("2026-03-01T12:00:00Z", "2026-03-01T12:00:00.000Z"),
    ] {
        let stored = stored_track(&app, json!({"timestamp": sent})).await;
        assert_eq!(stored["timestamp"], utc, "{sent}");
        assert_eq!(stored["originalTimestamp"], sent);
    }
}

#[tokio::test]
async fn milli_and_microseconds_are_kept() {
    let app = app_at_noon().await;
    let stored = stored_track(&app, json!({"timestamp": "2026-03-01T11:00:00.123Z"})).await;
    assert_eq!(stored["timestamp"], "2026-03-01T11:00:00.123Z");
    let stored = stored_track(&app, json!({"timestamp": "2026-03-01T11:00:00.123456Z"})).await;
    assert_eq!(stored["timestamp"], "2026-03-01T11:00:00.123456Z");
    let stored = stored_track(
        &app,
        json!({"timestamp": "2026-03-01T11:00:00.000250+00:00",
               "sentAt": "2026-03-01T11:00:01.000000+00:00"}),
    )
    .await;
    assert_eq!(stored["timestamp"], "2026-03-01T11:59:59.000250Z");
    assert_eq!(
        stored["originalTimestamp"],
        "2026-03-01T11:00:00.000250+00:00"
    );
}

#[tokio::test]
async fn the_batch_envelope_applies_to_its_items_and_item_keys_win() {
    let app = app_at_noon().await;
    let body = json!({
        "sentAt": "2026-03-01T11:00:10Z",
        "context": {"library": {"name": "analytics-python", "version": "2.3.4"}, "ip": "10.0.0.1"},
        "integrations": {"All": true, "Klaviyo": false},
        "batch": [
            {"type": "track", "userId": "u1", "event": "Plain", "timestamp": "2026-03-01T11:00:00Z"},
            {"type": "track", "userId": "u1", "event": "Own",
             "timestamp": "2026-03-01T11:00:00Z", "sentAt": "2026-03-01T11:00:01Z",
             "context": {"ip": "192.0.2.7", "locale": "fr-FR"},
             "integrations": {"Klaviyo": {"listId": "L1"}}},
        ]
    });
    app.post_batch(&body).await.assert_success();
    let stored = app.export().await;

    let plain = &stored[0];
    assert_eq!(plain["context"]["library"]["name"], "analytics-python");
    assert_eq!(plain["context"]["ip"], "10.0.0.1");
    assert_eq!(
        plain["integrations"],
        json!({"All": true, "Klaviyo": false})
    );
    assert_eq!(plain["sentAt"], "2026-03-01T11:00:10Z");
    assert_eq!(plain["timestamp"], "2026-03-01T11:59:50.000Z");

    let own = &stored[1];
    assert_eq!(own["context"]["ip"], "192.0.2.7");
    assert_eq!(own["context"]["locale"], "fr-FR");
    assert_eq!(own["context"]["library"]["version"], "2.3.4");
    assert_eq!(own["integrations"]["Klaviyo"], json!({"listId": "L1"}));
    assert_eq!(own["integrations"]["All"], true);
    assert_eq!(own["sentAt"], "2026-03-01T11:00:01Z");
    assert_eq!(own["timestamp"], "2026-03-01T11:59:59.000Z");
}

#[tokio::test]
async fn the_write_key_is_never_stored() {
    let app = app_at_noon().await;
    let key = app.write_key.expose().to_owned();
    let single = json!({"writeKey": key, "userId": "u1", "event": "E"});
    app.post("/v1/track", single.to_string(), &[])
        .await
        .assert_success();
    let browser = json!({"writeKey": key, "anonymousId": "a1", "name": "Home"});
    app.post(
        "/v1/p",
        browser.to_string(),
        &[("content-type", "text/plain")],
    )
    .await
    .assert_success();
    let batch = json!({"writeKey": key, "batch": [
        {"type": "track", "userId": "u1", "event": "E", "writeKey": key},
        {"type": "track", "userId": "u1", "writeKey": key},
    ]});
    app.post("/v1/batch", batch.to_string(), &[])
        .await
        .assert_success();
    let rejected_single = json!({"writeKey": key, "userId": "u1"});
    app.post("/v1/track", rejected_single.to_string(), &[])
        .await
        .assert_error(400, "missing_event");

    let calls = app.calls().await;
    assert_eq!(calls.len(), 3);
    for call in &calls {
        assert!(!call.payload.contains(&key), "{}", call.payload);
        assert!(!call.payload.contains("writeKey"), "{}", call.payload);
    }
    let rejections = app.rejections().await;
    assert_eq!(rejections.len(), 2);
    for rejection in &rejections {
        assert!(!rejection.payload.contains(&key), "{}", rejection.payload);
    }
}

#[tokio::test]
async fn an_absurd_clock_skew_keeps_the_time_as_sent() {
    // Found by `decode_properties`: the correction landed before year 0000. A correction that
    // would leave the years 1970 to 2200 keeps the client's time instead.
    let app = app_at_noon().await;
    let stored = stored_track(
        &app,
        json!({"timestamp": "1970-10-01T00:00:00", "sentAt": "2200-03-01T00:00:00"}),
    )
    .await;
    let timestamp = stored["timestamp"].as_str().unwrap();
    assert_eq!(timestamp, "1970-10-01T00:00:00.000Z");
    assert!(signalbox_server::segment::decode::parse_time(timestamp).is_some());
    assert_eq!(stored["originalTimestamp"], "1970-10-01T00:00:00");
}
