//! Metric aggregates against hand-computed figures.

use serde_json::json;
use signalbox_engage::{AggregateQuery, AggregateResult, Interval, Measurement};

use crate::helpers::{at, TestApp};

/// Five purchases by three people:
///
/// | time (UTC)          | who | revenue | plan  |
/// |---------------------|-----|---------|-------|
/// | 2026-03-01 23:30    | A   | 10      | pro   |
/// | 2026-03-02 00:30    | A   | 20      | basic |
/// | 2026-03-02 10:00    | B   | 5       | pro   |
/// | 2026-03-09 12:00    | B   | 7       | pro   |
/// | 2026-04-01 01:00    | C   | 1       | —     |
async fn purchases() -> (TestApp, signalbox_engage::MetricId) {
    let mut app = TestApp::start().await;
    for who in ["a", "b", "c"] {
        app.identify(json!({"userId": who, "traits": {"email": format!("{who}@example.com")}}))
            .await;
    }
    for (time, who, revenue, plan) in [
        ("2026-03-01T23:30:00Z", "a", 10.0, Some("pro")),
        ("2026-03-02T00:30:00Z", "a", 20.0, Some("basic")),
        ("2026-03-02T10:00:00Z", "b", 5.0, Some("pro")),
        ("2026-03-09T12:00:00Z", "b", 7.0, Some("pro")),
        ("2026-04-01T01:00:00Z", "c", 1.0, None),
    ] {
        let mut properties = json!({"revenue": revenue});
        if let Some(plan) = plan {
            properties["plan"] = json!(plan);
        }
        app.track(
            json!({"userId": who, "event": "Purchased", "timestamp": time,
            "properties": properties}),
        )
        .await;
    }
    // Another metric's events never count.
    app.track(json!({"userId": "a", "event": "Viewed", "timestamp": "2026-03-02T00:00:00Z"}))
        .await;
    app.settle().await;
    let metric = app.metric("Purchased").await.id;
    (app, metric)
}

fn query(
    metric: &signalbox_engage::MetricId,
    interval: Interval,
    start: &str,
    end: &str,
    timezone: &str,
) -> AggregateQuery {
    AggregateQuery {
        metric_id: metric.clone(),
        measurements: vec![
            Measurement::Count,
            Measurement::Unique,
            Measurement::SumValue,
        ],
        interval,
        start: at(start),
        end: at(end),
        timezone: timezone.into(),
        by: Vec::new(),
        property_equals: Vec::new(),
    }
}

fn dates(result: &AggregateResult) -> Vec<String> {
    result
        .dates
        .iter()
        .map(|z| z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string())
        .collect()
}

#[tokio::test]
async fn days_in_utc_and_in_new_york() {
    let (app, metric) = purchases().await;
    let r = app
        .engage
        .aggregate(query(
            &metric,
            Interval::Day,
            "2026-03-01T00:00:00Z",
            "2026-03-03T00:00:00Z",
            "UTC",
        ))
        .await
        .unwrap();
    assert_eq!(
        dates(&r),
        ["2026-03-01T00:00:00+00:00", "2026-03-02T00:00:00+00:00"]
    );
    assert_eq!(r.rows.len(), 1);
    assert!(r.rows[0].dimensions.is_empty());
    assert_eq!(r.rows[0].count, [1, 2]);
    assert_eq!(r.rows[0].unique, [1, 2]);
    assert_eq!(r.rows[0].sum_value, [10.0, 25.0]);

    // In New York (UTC-5) the two early purchases fall on the 1st.
    let r = app
        .engage
        .aggregate(query(
            &metric,
            Interval::Day,
            "2026-03-01T05:00:00Z",
            "2026-03-03T05:00:00Z",
            "America/New_York",
        ))
        .await
        .unwrap();
    assert_eq!(
        dates(&r),
        ["2026-03-01T00:00:00-05:00", "2026-03-02T00:00:00-05:00"]
    );
    assert_eq!(r.rows[0].count, [2, 1]);
    assert_eq!(r.rows[0].unique, [1, 1]);
    assert_eq!(r.rows[0].sum_value, [30.0, 5.0]);
}

#[tokio::test]
async fn hours_weeks_and_months() {
    let (app, metric) = purchases().await;
    let r = app
        .engage
        .aggregate(query(
            &metric,
            Interval::Hour,
            "2026-03-01T23:00:00Z",
            "2026-03-02T01:00:00Z",
            "UTC",
        ))
        .await
        .unwrap();
    assert_eq!(r.rows[0].count, [1, 1]);

    // 2026-03-01 is a Sunday: its week started on Monday 23 February.
    let r = app
        .engage
        .aggregate(query(
            &metric,
            Interval::Week,
            "2026-03-01T00:00:00Z",
            "2026-03-16T00:00:00Z",
            "UTC",
        ))
        .await
        .unwrap();
    assert_eq!(
        dates(&r),
        [
            "2026-02-23T00:00:00+00:00",
            "2026-03-02T00:00:00+00:00",
            "2026-03-09T00:00:00+00:00"
        ]
    );
    assert_eq!(r.rows[0].count, [1, 2, 1]);
    assert_eq!(r.rows[0].sum_value, [10.0, 25.0, 7.0]);

    let r = app
        .engage
        .aggregate(query(
            &metric,
            Interval::Month,
            "2026-03-01T00:00:00Z",
            "2026-05-01T00:00:00Z",
            "UTC",
        ))
        .await
        .unwrap();
    assert_eq!(r.rows[0].count, [4, 1]);
    assert_eq!(r.rows[0].unique, [2, 1]);
    assert_eq!(r.rows[0].sum_value, [42.0, 1.0]);
}

#[tokio::test]
async fn split_by_a_property_and_filtered_by_one() {
    let (app, metric) = purchases().await;
    let mut q = query(
        &metric,
        Interval::Month,
        "2026-03-01T00:00:00Z",
        "2026-05-01T00:00:00Z",
        "UTC",
    );
    q.by = vec!["plan".into()];
    let r = app.engage.aggregate(q.clone()).await.unwrap();
    let rows: Vec<_> = r
        .rows
        .iter()
        .map(|row| {
            (
                row.dimensions.clone(),
                row.count.clone(),
                row.unique.clone(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (vec!["".to_owned()], vec![0, 1], vec![0, 1]),
            (vec!["basic".to_owned()], vec![1, 0], vec![1, 0]),
            (vec!["pro".to_owned()], vec![3, 0], vec![2, 0]),
        ]
    );

    q.by.clear();
    q.property_equals = vec![("plan".into(), json!("pro"))];
    let r = app.engage.aggregate(q).await.unwrap();
    assert_eq!(r.rows[0].count, [3, 0]);
    assert_eq!(r.rows[0].sum_value, [22.0, 0.0]);
}

#[tokio::test]
async fn bad_queries_say_what_is_wrong() {
    let (app, metric) = purchases().await;
    let mut q = query(
        &metric,
        Interval::Day,
        "2026-03-01T00:00:00Z",
        "2026-03-02T00:00:00Z",
        "Mars/Olympus",
    );
    let err = app.engage.aggregate(q.clone()).await.unwrap_err();
    assert!(err.to_string().contains("timezone"), "{err}");
    q.timezone = "UTC".into();
    q.end = q.start;
    assert!(app.engage.aggregate(q).await.is_err());
}

/// Without a split, a filter or distinct profiles, counts and sums are counted per bucket
/// inside the store; they must agree with the pass over every event.
#[tokio::test]
async fn counted_totals_agree_with_the_pass_over_every_event() {
    let (app, metric) = purchases().await;
    for (interval, start, end, tz) in [
        (
            Interval::Day,
            "2026-03-01T00:00:00Z",
            "2026-03-03T00:00:00Z",
            "UTC",
        ),
        (
            Interval::Day,
            "2026-03-01T05:00:00Z",
            "2026-03-03T05:00:00Z",
            "America/New_York",
        ),
        (
            Interval::Hour,
            "2026-03-01T23:45:00Z",
            "2026-03-02T10:00:00Z",
            "UTC",
        ),
        (
            Interval::Week,
            "2026-03-02T00:00:00Z",
            "2026-04-01T00:30:00Z",
            "UTC",
        ),
        (
            Interval::Month,
            "2026-01-15T00:00:00Z",
            "2026-05-01T00:00:00Z",
            "Europe/Berlin",
        ),
    ] {
        let every = app
            .engage
            .aggregate(query(&metric, interval, start, end, tz))
            .await
            .unwrap();
        let mut counted = query(&metric, interval, start, end, tz);
        counted.measurements = vec![Measurement::Count, Measurement::SumValue];
        let counted = app.engage.aggregate(counted).await.unwrap();
        assert_eq!(dates(&counted), dates(&every), "{interval:?} {start}");
        assert_eq!(counted.rows.len(), 1);
        assert_eq!(
            counted.rows[0].count, every.rows[0].count,
            "{interval:?} {start}"
        );
        assert_eq!(
            counted.rows[0].sum_value, every.rows[0].sum_value,
            "{interval:?} {start}"
        );
        assert!(counted.rows[0].unique.is_empty());
    }
}
