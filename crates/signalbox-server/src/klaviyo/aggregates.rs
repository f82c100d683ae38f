//! `POST /api/metric-aggregates`: counts, distinct profiles and value sums of a metric's
//! events, bucketed by hour, day, week or month in a timezone, optionally split by event
//! properties.

use axum::http::StatusCode;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde_json::{json, Map, Value};
use signalbox_engage::{AggregateQuery, AggregateResult, Interval, Measurement, MetricId};

use super::auth::Caller;
use super::error::ApiError;
use super::filter::{self, Op};
use super::jsonapi::{
    operation_document, BaseUrl, JsonApi, Obj, Params, Patch, QuerySpec, RawQuery, Resource,
};
use super::scopes::MetricsRead;
use super::Body;

/// The longest range one query may cover (Klaviyo's limit: a year).
const MAX_RANGE: SignedDuration = SignedDuration::from_hours(366 * 24);
/// Most properties to split by.
const MAX_BY: usize = 5;

const QUERY: QuerySpec = QuerySpec::single(&[], &[]);

#[tracing::instrument(skip_all, fields(key = %caller.key_name))]
pub async fn query(
    caller: Caller<MetricsRead>,
    base: BaseUrl,
    query: RawQuery,
    Body(body): Body,
) -> Result<JsonApi, ApiError> {
    Params::parse(query, &QUERY)?;
    let root = Obj::root(&body)?;
    root.only(&["data"])?;
    let data = root.required_object("data")?;
    data.only(&["type", "attributes"])?;
    data.expect_type("metric-aggregate")?;
    let attributes = data.required_object("attributes")?;
    let (q, measurements) = read_query(&attributes)?;
    let result = caller.engage.aggregate(q.clone()).await?;
    let resource = Resource {
        kind: "metric-aggregate",
        id: uuid::Uuid::new_v4().to_string(),
        attributes: render(&result, &measurements),
        relationships: None,
        self_link: base.link("metric-aggregates"),
    };
    Ok(operation_document(
        StatusCode::OK,
        &resource,
        base.link("metric-aggregates"),
    ))
}

fn read_query(attributes: &Obj<'_>) -> Result<(AggregateQuery, Vec<Measurement>), ApiError> {
    attributes.only(&[
        "metric_id",
        "measurements",
        "interval",
        "filter",
        "by",
        "timezone",
        "page_size",
        "page_cursor",
        "sort",
        "return_fields",
    ])?;
    for unsupported in ["page_cursor", "sort", "return_fields"] {
        if !matches!(attributes.map.get(unsupported), None | Some(Value::Null)) {
            return Err(ApiError::invalid_at(
                attributes.pointer(unsupported),
                format!("'{unsupported}' is not supported; every row is returned at once"),
            ));
        }
    }
    if let Patch::Set(size) = attributes.number("page_size")? {
        if size.fract() != 0.0 || !(1.0..=10_000.0).contains(&size) {
            return Err(ApiError::invalid_at(
                attributes.pointer("page_size"),
                "'page_size' must be an integer from 1 to 10000",
            ));
        }
    }
    let metric_id = MetricId(attributes.required_string("metric_id")?);
    let measurements = strings(attributes, "measurements")?
        .ok_or_else(|| {
            ApiError::invalid_at(
                attributes.pointer("measurements"),
                "'measurements' is required",
            )
        })?
        .iter()
        .enumerate()
        .map(|(i, name)| {
            measurement(name).ok_or_else(|| {
                ApiError::invalid_at(
                    format!("{}/{i}", attributes.pointer("measurements")),
                    format!("'{name}' is not a measurement; use count, unique or sum_value"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if measurements.is_empty() {
        return Err(ApiError::invalid_at(
            attributes.pointer("measurements"),
            "name at least one measurement",
        ));
    }
    let interval = match attributes.string("interval")?.into_option().as_deref() {
        None | Some("day") => Interval::Day,
        Some("hour") => Interval::Hour,
        Some("week") => Interval::Week,
        Some("month") => Interval::Month,
        Some(other) => {
            return Err(ApiError::invalid_at(
                attributes.pointer("interval"),
                format!("'{other}' is not an interval; use hour, day, week or month"),
            ))
        }
    };
    let timezone = attributes
        .string("timezone")?
        .into_option()
        .unwrap_or_else(|| "UTC".to_owned());
    let tz = TimeZone::get(&timezone).map_err(|_| {
        ApiError::invalid_at(
            attributes.pointer("timezone"),
            format!("'{timezone}' is not an IANA timezone"),
        )
    })?;
    let by = strings(attributes, "by")?.unwrap_or_default();
    if by.len() > MAX_BY {
        return Err(ApiError::invalid_at(
            attributes.pointer("by"),
            format!("split by at most {MAX_BY} properties"),
        ));
    }
    let filters = strings(attributes, "filter")?.ok_or_else(|| {
        ApiError::invalid_at(
            attributes.pointer("filter"),
            "'filter' is required and must bound 'datetime', e.g. [\"greater-or-equal(datetime,2026-07-01T00:00:00)\", \"less-than(datetime,2026-08-01T00:00:00)\"]",
        )
    })?;
    let window = read_filters(&filters, &tz)
        .map_err(|e| ApiError::invalid_at(attributes.pointer("filter"), e.message))?;
    Ok((
        AggregateQuery {
            metric_id,
            measurements: measurements.clone(),
            interval,
            start: window.start,
            end: window.end,
            timezone,
            by,
            property_equals: window.property_equals,
        },
        measurements,
    ))
}

/// What the `filter` list says: a datetime range and property equalities.
#[derive(Debug)]
struct Window {
    start: Timestamp,
    /// Exclusive.
    end: Timestamp,
    property_equals: Vec<(String, Value)>,
}

fn read_filters(filters: &[String], tz: &TimeZone) -> Result<Window, filter::FilterError> {
    let mut start: Option<Timestamp> = None;
    let mut end: Option<Timestamp> = None;
    let mut equals = Vec::new();
    let later = |a: Option<Timestamp>, b: Timestamp| Some(a.map_or(b, |a| a.max(b)));
    let earlier = |a: Option<Timestamp>, b: Timestamp| Some(a.map_or(b, |a| a.min(b)));
    let just_after = |ts: Timestamp| {
        ts.checked_add(SignedDuration::from_nanos(1))
            .map_err(|_| filter::FilterError::new("datetime is out of range"))
    };
    for text in filters {
        for condition in filter::parse(text)? {
            match (condition.field.as_str(), condition.op) {
                ("datetime", Op::GreaterOrEqual) => {
                    start = later(start, condition.instant(tz, false)?)
                }
                ("datetime", Op::GreaterThan) => {
                    start = later(start, just_after(condition.instant(tz, false)?)?)
                }
                ("datetime", Op::LessThan) => end = earlier(end, condition.instant(tz, false)?),
                ("datetime", Op::LessOrEqual) => {
                    end = earlier(end, just_after(condition.instant(tz, false)?)?)
                }
                ("datetime", op) => {
                    return Err(filter::FilterError::new(format!(
                        "'{op}' is not a valid operator for 'datetime'; allowed: greater-or-equal, greater-than, less-than, less-or-equal"
                    )))
                }
                (property, Op::Equals) => {
                    let value = match condition.value {
                        Some(filter::Value::String(s)) => json!(s),
                        Some(filter::Value::Number(n)) => json!(n),
                        Some(filter::Value::Bool(b)) => json!(b),
                        Some(filter::Value::Null) => Value::Null,
                        Some(other) => {
                            return Err(filter::FilterError::new(format!(
                                "'equals({property},…)' needs a string, number, boolean or null, found {}",
                                other.kind()
                            )))
                        }
                        None => Value::Null,
                    };
                    equals.push((property.to_owned(), value));
                }
                (property, op) => {
                    return Err(filter::FilterError::new(format!(
                        "'{op}' is not supported on '{property}'; properties take equals"
                    )))
                }
            }
        }
    }
    let (Some(start), Some(end)) = (start, end) else {
        return Err(filter::FilterError::new(
            "the filter must bound 'datetime' on both sides (greater-or-equal and less-than)",
        ));
    };
    if end <= start {
        return Err(filter::FilterError::new(
            "the datetime range is empty: its end is not after its start",
        ));
    }
    if end.duration_since(start) > MAX_RANGE {
        return Err(filter::FilterError::new(
            "the datetime range may cover at most one year",
        ));
    }
    Ok(Window {
        start,
        end,
        property_equals: equals,
    })
}

fn strings(attributes: &Obj<'_>, key: &str) -> Result<Option<Vec<String>>, ApiError> {
    let Some(items) = attributes.array(key)? else {
        return Ok(None);
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(s) => Ok(s.clone()),
            _ => Err(ApiError::invalid_at(
                format!("{}/{i}", attributes.pointer(key)),
                "must be a string",
            )),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

fn measurement(name: &str) -> Option<Measurement> {
    match name {
        "count" => Some(Measurement::Count),
        "unique" => Some(Measurement::Unique),
        "sum_value" => Some(Measurement::SumValue),
        _ => None,
    }
}

/// `{"dates": [...], "data": [{"dimensions": [...], "measurements": {...}}]}` with only the
/// measurements asked for, each aligned with `dates`.
fn render(result: &AggregateResult, measurements: &[Measurement]) -> Map<String, Value> {
    let dates: Vec<String> = result
        .dates
        .iter()
        .map(|d| d.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string())
        .collect();
    let data: Vec<Value> = result
        .rows
        .iter()
        .map(|row| {
            let mut values = Map::new();
            for m in measurements {
                let (name, series) = match m {
                    Measurement::Count => ("count", json!(row.count)),
                    Measurement::Unique => ("unique", json!(row.unique)),
                    Measurement::SumValue => ("sum_value", json!(row.sum_value)),
                };
                values.insert(name.into(), series);
            }
            json!({ "dimensions": row.dimensions, "measurements": values })
        })
        .collect();
    let mut attributes = Map::new();
    attributes.insert("dates".into(), json!(dates));
    attributes.insert("data".into(), Value::Array(data));
    attributes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(filters: &[&str], tz: &str) -> Result<Window, String> {
        let filters: Vec<String> = filters.iter().map(|s| s.to_string()).collect();
        read_filters(&filters, &TimeZone::get(tz).unwrap()).map_err(|e| e.message)
    }

    #[test]
    fn bounds_in_the_timezone() {
        let window = range(
            &[
                "greater-or-equal(datetime,2026-07-01T00:00:00)",
                "less-than(datetime,2026-07-08T00:00:00),equals(Plan,\"pro\")",
            ],
            "America/New_York",
        )
        .unwrap();
        assert_eq!(window.start.to_string(), "2026-07-01T04:00:00Z");
        assert_eq!(window.end.to_string(), "2026-07-08T04:00:00Z");
        assert_eq!(
            window.property_equals,
            vec![("Plan".to_owned(), json!("pro"))]
        );
    }

    #[test]
    fn range_is_required_and_bounded() {
        assert!(range(&["greater-or-equal(datetime,2026-07-01)"], "UTC")
            .unwrap_err()
            .contains("both sides"));
        assert!(range(
            &["greater-or-equal(datetime,2024-01-01),less-than(datetime,2026-01-01)"],
            "UTC"
        )
        .unwrap_err()
        .contains("one year"));
        assert!(range(
            &["greater-or-equal(datetime,2026-01-02),less-than(datetime,2026-01-01)"],
            "UTC"
        )
        .unwrap_err()
        .contains("empty"));
        assert!(range(
            &["greater-or-equal(datetime,2026-01-01),less-than(datetime,2026-01-02),contains(x,\"y\")"],
            "UTC"
        )
        .unwrap_err()
        .contains("properties take equals"));
    }
}
