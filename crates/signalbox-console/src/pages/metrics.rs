//! Analytics › Metrics: every metric with its integration (`/analytics/metrics`), and a
//! metric's page (`/analytics/metrics/{id}`) with its counts over time as a chart and its
//! Activity Feed.
//!
//! Reads: `Engage::list_metrics` (a page), `Engage::get_metric`, `Engage::aggregate` (the call
//! behind `/api/metric-aggregates`, over a bounded range), `Engage::list_events` (a page of the
//! metric's events, newest first) and `Engage::get_profile` for the people on that page.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::Html;
use axum::routing::get;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use signalbox_engage::{
    AggregateQuery, Engage, EngageError, EventQuery, Interval, Measurement, MetricId, MetricQuery,
    Origin, ProfileId,
};

use crate::auth::SignedIn;
use crate::chart::{self, Bar};
use crate::error::{ConsoleError, ConsoleResult};
use crate::pages::Page;
use crate::Console;

pub(crate) const TEMPLATES: &[(&str, &str)] = &[
    (
        "metrics/index.html",
        include_str!("../../templates/metrics/index.html"),
    ),
    (
        "metrics/metric.html",
        include_str!("../../templates/metrics/metric.html"),
    ),
    (
        "metrics/gear.html",
        include_str!("../../templates/metrics/gear.html"),
    ),
];

/// Metrics per page of the listing.
const METRICS_PAGE: u32 = 50;
/// Lines per page of an Activity Feed.
const FEED_PAGE: u32 = 25;

pub(crate) fn routes() -> axum::Router<Console> {
    axum::Router::new()
        .route("/analytics/metrics", get(index))
        .route("/analytics/metrics/{id}", get(metric))
}

/// The engage handle, or the page's "not available" error.
pub(crate) fn engage(console: &Console) -> ConsoleResult<&Engage> {
    Ok(&console.engine()?.engage)
}

/// Engage's errors as the console shows them.
pub(crate) fn engage_error(err: EngageError) -> ConsoleError {
    match err {
        EngageError::NotFound { what } => ConsoleError::NotFound(what),
        EngageError::Invalid { field, reason } => ConsoleError::Invalid {
            field,
            message: reason,
        },
        EngageError::Unavailable | EngageError::Overloaded => {
            ConsoleError::Unavailable("the profiles and metrics engine")
        }
        other => ConsoleError::internal(other),
    }
}

/// Whether a metric comes from an integration outside Signalbox (Segment calls, the API)
/// rather than being one Signalbox records itself.
fn third_party(integration: &str) -> bool {
    integration != Origin::SIGNALBOX
}

#[derive(Deserialize)]
struct IndexParams {
    cursor: Option<String>,
}

#[derive(Serialize)]
struct MetricLine {
    id: String,
    name: String,
    integration: String,
    category: String,
    third_party: bool,
    created: String,
}

#[derive(Serialize)]
struct IndexData {
    metrics: Vec<MetricLine>,
    next_cursor: Option<String>,
    first_page: bool,
}

async fn index(
    State(console): State<Console>,
    signed_in: SignedIn,
    Query(params): Query<IndexParams>,
) -> ConsoleResult<Html<String>> {
    let engage = engage(&console)?;
    let first_page = params.cursor.is_none();
    let page = engage
        .list_metrics(MetricQuery {
            page_size: METRICS_PAGE,
            cursor: params.cursor.filter(|c| !c.is_empty()),
            ..MetricQuery::default()
        })
        .await
        .map_err(engage_error)?;
    let metrics = page
        .items
        .into_iter()
        .map(|m| MetricLine {
            third_party: third_party(&m.integration.name),
            id: m.id.0,
            name: m.name,
            integration: m.integration.name,
            category: m.integration.category,
            created: m.created.strftime("%Y-%m-%d").to_string(),
        })
        .collect();
    let data = IndexData {
        metrics,
        next_cursor: page.next_cursor,
        first_page,
    };
    console
        .inner
        .templates
        .render("metrics/index.html", Page::new(&signed_in, "metrics", data))
}

/// The chart's bucket size, chosen on the page (`?interval=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
enum ChartInterval {
    #[default]
    Day,
    Week,
    Month,
}

impl ChartInterval {
    fn parse(text: Option<&str>) -> ConsoleResult<ChartInterval> {
        match text.unwrap_or("") {
            "" | "day" => Ok(ChartInterval::Day),
            "week" => Ok(ChartInterval::Week),
            "month" => Ok(ChartInterval::Month),
            other => Err(ConsoleError::Invalid {
                field: "interval".into(),
                message: format!("'{other}' is not an interval; use day, week or month"),
            }),
        }
    }

    /// How far back the chart reaches: 30 days, 12 weeks, 12 months (within the aggregate
    /// API's one-year limit).
    fn span(self) -> SignedDuration {
        match self {
            ChartInterval::Day => SignedDuration::from_hours(30 * 24),
            ChartInterval::Week => SignedDuration::from_hours(12 * 7 * 24),
            ChartInterval::Month => SignedDuration::from_hours(365 * 24),
        }
    }

    fn engage(self) -> Interval {
        match self {
            ChartInterval::Day => Interval::Day,
            ChartInterval::Week => Interval::Week,
            ChartInterval::Month => Interval::Month,
        }
    }

    fn bucket_label(self, date: &jiff::Zoned) -> String {
        match self {
            ChartInterval::Day | ChartInterval::Week => date.strftime("%Y-%m-%d").to_string(),
            ChartInterval::Month => date.strftime("%Y-%m").to_string(),
        }
    }

    fn per(self) -> &'static str {
        match self {
            ChartInterval::Day => "day",
            ChartInterval::Week => "week",
            ChartInterval::Month => "month",
        }
    }
}

#[derive(Deserialize)]
struct MetricParams {
    interval: Option<String>,
    cursor: Option<String>,
}

#[derive(Serialize)]
struct Bucket {
    label: String,
    count: u64,
}

#[derive(Serialize)]
struct FeedLine {
    time: String,
    profile_id: String,
    /// The person's email, else their id.
    person: String,
    value: Option<f64>,
    properties: String,
}

#[derive(Serialize)]
struct MetricData {
    id: String,
    name: String,
    integration: String,
    category: String,
    third_party: bool,
    interval: ChartInterval,
    chart_title: String,
    chart: String,
    buckets: Vec<Bucket>,
    feed: Vec<FeedLine>,
    next_cursor: Option<String>,
    first_page: bool,
}

async fn metric(
    State(console): State<Console>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    Query(params): Query<MetricParams>,
) -> ConsoleResult<Html<String>> {
    let engage = engage(&console)?;
    let interval = ChartInterval::parse(params.interval.as_deref())?;
    let metric = engage
        .get_metric(&MetricId(id))
        .await
        .map_err(engage_error)?;
    let now = console.deps().clock.now();
    let end = now
        .checked_add(SignedDuration::from_secs(1))
        .unwrap_or(Timestamp::MAX);
    let start = now
        .checked_sub(interval.span())
        .unwrap_or(Timestamp::UNIX_EPOCH);
    let aggregate = engage
        .aggregate(AggregateQuery {
            metric_id: metric.id.clone(),
            measurements: vec![Measurement::Count],
            interval: interval.engage(),
            start,
            end,
            timezone: "UTC".into(),
            by: Vec::new(),
            property_equals: Vec::new(),
        })
        .await
        .map_err(engage_error)?;
    let counts = aggregate
        .rows
        .first()
        .map(|row| row.count.clone())
        .unwrap_or_default();
    let bars: Vec<Bar> = aggregate
        .dates
        .iter()
        .enumerate()
        .map(|(i, date)| Bar {
            label: interval.bucket_label(date),
            value: counts.get(i).copied().unwrap_or(0),
        })
        .collect();
    let chart_title = format!("{} per {}", metric.name, interval.per());
    let chart = chart::bar_chart(&chart_title, "events", &bars);

    let first_page = params.cursor.is_none();
    let events = engage
        .list_events(EventQuery {
            metric_id: Some(metric.id.clone()),
            newest_first: true,
            page_size: FEED_PAGE,
            cursor: params.cursor.filter(|c| !c.is_empty()),
            ..EventQuery::default()
        })
        .await
        .map_err(engage_error)?;
    let mut people: HashMap<ProfileId, String> = HashMap::new();
    let mut feed = Vec::with_capacity(events.items.len());
    for event in events.items {
        let person = match people.get(&event.profile_id) {
            Some(person) => person.clone(),
            None => {
                let person = match engage.get_profile(&event.profile_id).await {
                    Ok(profile) => profile.email.unwrap_or_else(|| profile.id.0.clone()),
                    Err(EngageError::NotFound { .. }) => event.profile_id.0.clone(),
                    Err(err) => return Err(engage_error(err)),
                };
                people.insert(event.profile_id.clone(), person.clone());
                person
            }
        };
        feed.push(FeedLine {
            time: event.time.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
            profile_id: event.profile_id.0,
            person,
            value: event.value,
            properties: summarise(&event.properties),
        });
    }
    let data = MetricData {
        id: metric.id.0,
        third_party: third_party(&metric.integration.name),
        name: metric.name,
        integration: metric.integration.name,
        category: metric.integration.category,
        interval,
        chart_title,
        chart,
        buckets: bars
            .into_iter()
            .map(|b| Bucket {
                label: b.label,
                count: b.value,
            })
            .collect(),
        feed,
        next_cursor: events.next_cursor,
        first_page,
    };
    console.inner.templates.render(
        "metrics/metric.html",
        Page::new(&signed_in, "metrics", data),
    )
}

/// An event's properties on one short line.
fn summarise(properties: &serde_json::Map<String, serde_json::Value>) -> String {
    const MAX: usize = 160;
    if properties.is_empty() {
        return String::new();
    }
    let text = serde_json::Value::Object(properties.clone()).to_string();
    if text.chars().count() <= MAX {
        text
    } else {
        let cut: String = text.chars().take(MAX).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_signalbox_metrics_are_built_in() {
        assert!(third_party(Origin::SEGMENT));
        assert!(third_party(Origin::API));
        assert!(!third_party(Origin::SIGNALBOX));
    }

    #[test]
    fn an_unknown_interval_names_the_field() {
        let err = ChartInterval::parse(Some("year")).expect_err("refused");
        assert_eq!(err.status(), axum::http::StatusCode::BAD_REQUEST);
        assert!(err.to_string().starts_with("interval:"));
        assert_eq!(ChartInterval::parse(None).expect("day"), ChartInterval::Day);
        assert_eq!(
            ChartInterval::parse(Some("month")).expect("month"),
            ChartInterval::Month
        );
    }
}
