//! Metrics, events and activity feeds.

use serde_json::json;
use signalbox_engage::{Cmp, EngageError, EventId, EventQuery, MetricQuery, TimeBound};

use crate::helpers::{at, TestApp};

#[tokio::test]
async fn metric_feed_pages_newest_first_with_time_filters() {
    let mut app = TestApp::start().await;
    app.identify(json!({"userId": "u1", "traits": {"email": "p@example.com"}}))
        .await;
    for i in 0..10 {
        app.track(json!({"userId": "u1", "event": "Clicked",
            "timestamp": format!("2026-03-01T10:00:0{i}Z"), "properties": {"n": i}}))
            .await;
    }
    app.track(json!({"userId": "u1", "event": "Other"})).await;
    app.settle().await;
    let metric = app.metric("Clicked").await;

    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = app
            .engage
            .list_events(EventQuery {
                metric_id: Some(metric.id.clone()),
                newest_first: true,
                page_size: 3,
                cursor: cursor.clone(),
                ..EventQuery::default()
            })
            .await
            .unwrap();
        assert!(page.items.len() <= 3);
        seen.extend(
            page.items
                .iter()
                .map(|e| e.properties["n"].as_i64().unwrap()),
        );
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);

    let window = app
        .engage
        .list_events(EventQuery {
            metric_id: Some(metric.id.clone()),
            time: vec![
                TimeBound {
                    cmp: Cmp::Ge,
                    at: at("2026-03-01T10:00:03Z"),
                },
                TimeBound {
                    cmp: Cmp::Lt,
                    at: at("2026-03-01T10:00:06Z"),
                },
            ],
            newest_first: false,
            ..EventQuery::default()
        })
        .await
        .unwrap();
    let n: Vec<_> = window
        .items
        .iter()
        .map(|e| e.properties["n"].as_i64().unwrap())
        .collect();
    assert_eq!(n, [3, 4, 5]);

    // The profile's feed has both metrics.
    let profile = app.by_email("p@example.com").await;
    assert_eq!(app.feed_of(&profile).await.len(), 11);
}

#[tokio::test]
async fn events_and_metrics_are_found_by_id() {
    let mut app = TestApp::start().await;
    app.identify(json!({"userId": "u1", "traits": {"email": "q@example.com"}}))
        .await;
    app.track(json!({"userId": "u1", "event": "Clicked", "messageId": "msg-1"}))
        .await;
    app.settle().await;
    let profile = app.by_email("q@example.com").await;
    let event = app.feed_of(&profile).await.remove(0);
    assert_eq!(event.id.0.len(), 26);
    assert_eq!(event.unique_id, "msg-1");
    assert_eq!(event.properties["$event_id"], "msg-1");
    assert_eq!(app.engage.get_event(&event.id).await.unwrap(), event);
    let metric = app.engage.get_metric(&event.metric_id).await.unwrap();
    assert_eq!(metric.name, "Clicked");
    assert_eq!(metric.id.0.len(), 6);
    assert!(matches!(
        app.engage
            .get_event(&EventId("01ARZ3NDEKTSV4RRFFQ69G5FAV".into()))
            .await,
        Err(EngageError::NotFound { .. })
    ));
    let by_integration = app
        .engage
        .list_metrics(MetricQuery {
            integration_name: Some("API".into()),
            ..MetricQuery::default()
        })
        .await
        .unwrap();
    assert!(by_integration.items.is_empty());
}

#[tokio::test]
async fn order_completed_end_to_end_both_spellings() {
    let mut app = TestApp::start().await;
    app.identify(json!({"userId": "u1", "traits": {"email": "r@example.com"}}))
        .await;
    let order = |id: &str| {
        json!({"userId": "u1", "event": "Order Completed",
            "properties": {"order_id": id, "revenue": 20,
                "products": [{"product_id": "P1", "name": "Tee", "price": 20,
                    "url": "https://shop/p1", "image_url": "https://img/p1",
                    "description": "Soft"}]}})
    };
    app.track(order("A1")).await;
    app.settle().await;
    app.settings(|s| s.use_segment_spec = false).await;
    app.track(order("A2")).await;
    app.settle().await;
    assert_eq!(
        app.metric_names().await,
        ["Order Completed", "Ordered Product", "Placed Order"]
    );
    let product = app.metric("Ordered Product").await;
    let products = app
        .engage
        .list_events(EventQuery {
            metric_id: Some(product.id),
            newest_first: true,
            ..EventQuery::default()
        })
        .await
        .unwrap()
        .items;
    assert_eq!(products.len(), 2);
    assert_eq!(products[0].unique_id, "A2_P1");
    assert_eq!(products[0].properties["Name"], "Tee");
    assert_eq!(products[0].properties["Product URL"], "https://shop/p1");
    assert_eq!(products[0].properties["Image URL"], "https://img/p1");
    assert_eq!(products[0].properties["description"], "Soft");
    let placed = app.metric("Placed Order").await;
    let orders = app
        .engage
        .list_events(EventQuery {
            metric_id: Some(placed.id),
            ..EventQuery::default()
        })
        .await
        .unwrap()
        .items;
    assert_eq!(orders[0].value, Some(20.0));
    assert_eq!(orders[0].properties["Item Names"], json!(["Tee"]));
}
