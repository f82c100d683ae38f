//! `GET /api/events[/{id}]`, `POST /api/events` and `POST /api/event-bulk-create-jobs`.

use std::collections::BTreeSet;

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::stream::{self, StreamExt, TryStreamExt};
use jiff::tz::TimeZone;
use serde_json::{json, Map, Value};
use signalbox_engage::limits;
use signalbox_engage::{
    ApiEventInput, Cmp, Engage, Event, EventId, EventQuery, MetricId, ProfileId, ProfileInput,
    TimeBound,
};

use super::auth::Caller;
use super::error::ApiError;
use super::filter::{FieldRule, Op};
use super::jsonapi::{
    datetime, linkage, BaseUrl, JsonApi, Obj, Params, Patch, QuerySpec, RawQuery, Resource,
};
use super::origin::RequestOrigin;
use super::profiles;
use super::scopes::{EventsRead, EventsWrite};
use super::{metrics, Body};

/// Most events one bulk job may create (Klaviyo's limit).
pub const MAX_BULK_EVENTS: usize = 1000;
/// Longest metric name.
const MAX_METRIC_NAME: usize = 128;
/// Most properties one event may carry (Klaviyo's limit).
const MAX_PROPERTIES: usize = 400;
/// Event times before this are refused, as Klaviyo refuses them.
const EARLIEST_TIME: &str = "1990-01-01T00:00:00Z";
/// How far in the future an event time may be.
const LATEST_AHEAD: jiff::SignedDuration = jiff::SignedDuration::from_hours(366 * 24);
/// Included resources fetched at once.
const INCLUDE_CONCURRENCY: usize = 8;

pub const FIELDS: &[&str] = &["id", "timestamp", "event_properties", "datetime", "uuid"];

const COMPARISONS: &[Op] = &[
    Op::GreaterThan,
    Op::GreaterOrEqual,
    Op::LessThan,
    Op::LessOrEqual,
];

const FIELDSETS: &[(&str, &[&str])] = &[
    ("event", FIELDS),
    ("metric", metrics::FIELDS),
    ("profile", profiles::FIELDS),
];

const LIST: QuerySpec = QuerySpec {
    filters: &[
        FieldRule {
            field: "metric_id",
            ops: &[Op::Equals],
        },
        FieldRule {
            field: "profile_id",
            ops: &[Op::Equals],
        },
        FieldRule {
            field: "profile",
            ops: &[Op::Has],
        },
        FieldRule {
            field: "metric",
            ops: &[Op::Has],
        },
        FieldRule {
            field: "datetime",
            ops: COMPARISONS,
        },
        FieldRule {
            field: "timestamp",
            ops: COMPARISONS,
        },
    ],
    sorts: &["datetime", "-datetime", "timestamp", "-timestamp"],
    includes: &["metric", "profile"],
    fieldsets: FIELDSETS,
    page_size: Some((200, 1000)),
    paged: true,
};

const ONE: QuerySpec = QuerySpec::single(&["metric", "profile"], FIELDSETS);

#[tracing::instrument(skip_all, fields(key = %caller.key_name))]
pub async fn list(
    caller: Caller<EventsRead>,
    base: BaseUrl,
    query: RawQuery,
) -> Result<JsonApi, ApiError> {
    let params = Params::parse(query, &LIST)?;
    let mut q = EventQuery {
        newest_first: params.sort.is_some_and(|s| s.starts_with('-')),
        page_size: params.page_size,
        cursor: params.cursor.clone(),
        ..EventQuery::default()
    };
    for condition in &params.filter {
        match condition.field.as_str() {
            "metric_id" => q.metric_id = Some(MetricId(condition.string()?)),
            "profile_id" => q.profile_id = Some(ProfileId(condition.string()?)),
            // Every event has a metric and a profile.
            "profile" | "metric" => {}
            field => q.time.push(TimeBound {
                cmp: cmp(condition.op),
                at: condition.instant(&TimeZone::UTC, field == "timestamp")?,
            }),
        }
    }
    let page = caller.engage.list_events(q).await?;
    let data = page
        .items
        .iter()
        .map(|e| params.render(&resource(e, &base)));
    let mut document = params.collection(&base, "events", data, page.next_cursor.as_deref());
    if !params.include.is_empty() {
        document["included"] =
            Value::Array(included(&caller.engage, &base, &params, &page.items).await?);
    }
    Ok(JsonApi(StatusCode::OK, document))
}

#[tracing::instrument(skip_all, fields(key = %caller.key_name))]
pub async fn get(
    caller: Caller<EventsRead>,
    base: BaseUrl,
    Path(id): Path<String>,
    query: RawQuery,
) -> Result<JsonApi, ApiError> {
    let params = Params::parse(query, &ONE)?;
    let event = caller.engage.get_event(&EventId(id)).await?;
    let mut document = params.document_json(&resource(&event, &base));
    if !params.include.is_empty() {
        let events = std::slice::from_ref(&event);
        document["included"] =
            Value::Array(included(&caller.engage, &base, &params, events).await?);
    }
    Ok(JsonApi(StatusCode::OK, document))
}

/// `POST /api/events`: durable on return, applied asynchronously; 202 with no body.
#[tracing::instrument(skip_all, fields(key = %caller.key_name))]
pub async fn create(
    caller: Caller<EventsWrite>,
    origin: RequestOrigin,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let root = Obj::root(&body)?;
    root.only(&["data"])?;
    let data = root.required_object("data")?;
    data.only(&["type", "attributes"])?;
    data.expect_type("event")?;
    let attributes = data.required_object("attributes")?;
    let event = event_input(&attributes, None, caller.clock.now())?;
    origin
        .engage(&caller.engage)
        .create_events(vec![event])
        .await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// `POST /api/event-bulk-create-jobs`: several profiles, each with its events; 202.
#[tracing::instrument(skip_all, fields(key = %caller.key_name))]
pub async fn bulk_create(
    caller: Caller<EventsWrite>,
    origin: RequestOrigin,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let root = Obj::root(&body)?;
    root.only(&["data"])?;
    let data = root.required_object("data")?;
    data.only(&["type", "attributes"])?;
    data.expect_type("event-bulk-create-job")?;
    let attributes = data.required_object("attributes")?;
    attributes.only(&["events-bulk-create"])?;
    let entries = attributes.required_object("events-bulk-create")?;
    entries.only(&["data"])?;
    let items = entries
        .array("data")?
        .ok_or_else(|| ApiError::invalid_at(entries.pointer("data"), "'data' is required"))?;
    let now = caller.clock.now();
    let mut events = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let entry = entries.element("data", i, item)?;
        entry.only(&["type", "attributes"])?;
        entry.expect_type("event-bulk-create")?;
        let attributes = entry.required_object("attributes")?;
        attributes.only(&["profile", "events", "backfill"])?;
        attributes.boolean("backfill")?;
        let profile = attributes.required_object("profile")?;
        let profile = profile_block(&profile)?;
        let list = attributes.required_object("events")?;
        list.only(&["data"])?;
        let list_items = list
            .array("data")?
            .ok_or_else(|| ApiError::invalid_at(list.pointer("data"), "'data' is required"))?;
        for (j, event) in list_items.iter().enumerate() {
            let event = list.element("data", j, event)?;
            event.only(&["type", "attributes"])?;
            event.expect_type("event")?;
            let event_attributes = event.required_object("attributes")?;
            events.push(event_input(&event_attributes, Some(&profile), now)?);
            if events.len() > MAX_BULK_EVENTS {
                return Err(ApiError::invalid_at(
                    "/data/attributes/events-bulk-create/data",
                    format!("a bulk job may create at most {MAX_BULK_EVENTS} events"),
                ));
            }
        }
    }
    if events.is_empty() {
        return Err(ApiError::invalid_at(
            "/data/attributes/events-bulk-create/data",
            "a bulk job needs at least one event",
        ));
    }
    origin.engage(&caller.engage).create_events(events).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// An event's attributes. `profile` is given for bulk entries, whose profile sits beside the
/// events; a single event carries its own `profile` attribute.
fn event_input(
    attributes: &Obj<'_>,
    profile: Option<&ProfileInput>,
    now: jiff::Timestamp,
) -> Result<ApiEventInput, ApiError> {
    let mut known = vec![
        "properties",
        "time",
        "value",
        "value_currency",
        "unique_id",
        "backfill",
        "metric",
    ];
    if profile.is_none() {
        known.push("profile");
    }
    attributes.only(&known)?;
    // `backfill` only keeps an event from triggering flows, and nothing here triggers flows.
    attributes.boolean("backfill")?;
    let properties = match attributes.map.get("properties") {
        Some(Value::Object(map)) => map.clone(),
        Some(Value::Null) | None => {
            return Err(ApiError::invalid_at(
                attributes.pointer("properties"),
                "'properties' is required (it may be {})",
            ))
        }
        Some(_) => {
            return Err(ApiError::invalid_at(
                attributes.pointer("properties"),
                "'properties' must be an object",
            ))
        }
    };
    if properties.len() > MAX_PROPERTIES {
        return Err(ApiError::invalid_at(
            attributes.pointer("properties"),
            format!("an event may carry at most {MAX_PROPERTIES} properties"),
        ));
    }
    let time = attributes.datetime("time")?;
    if let Some(time) = time {
        let earliest: jiff::Timestamp = EARLIEST_TIME.parse().expect("valid constant");
        let latest = now.checked_add(LATEST_AHEAD).unwrap_or(now);
        if time < earliest || time > latest {
            return Err(ApiError::invalid_at(
                attributes.pointer("time"),
                "'time' must be after 1990 and at most a year ahead",
            ));
        }
    }
    let metric = attributes.required_object("metric")?;
    metric.only(&["data"])?;
    let metric = metric.required_object("data")?;
    metric.only(&["type", "attributes"])?;
    metric.expect_type("metric")?;
    let metric = metric.required_object("attributes")?;
    metric.only(&["name", "service"])?;
    let metric_name = metric.required_string("name")?;
    if metric_name.trim().is_empty() || metric_name.chars().count() > MAX_METRIC_NAME {
        return Err(ApiError::invalid_at(
            metric.pointer("name"),
            format!("a metric name must be 1 to {MAX_METRIC_NAME} characters"),
        ));
    }
    if let Patch::Set(service) = metric.string("service")? {
        if !service.eq_ignore_ascii_case("api") {
            return Err(ApiError::invalid_at(
                metric.pointer("service"),
                format!("service '{service}' is not supported; metrics created here belong to the API integration"),
            ));
        }
    }
    let profile = match profile {
        Some(profile) => profile.clone(),
        None => {
            let block = attributes.required_object("profile")?;
            profile_block(&block)?
        }
    };
    let value = attributes.number("value")?.into_option();
    if let Some(value) = value {
        if !limits::event_value_fits(value) {
            return Err(ApiError::invalid_at(
                attributes.pointer("value"),
                format!(
                    "'value' must be at most {:e} in magnitude",
                    limits::MAX_EVENT_VALUE
                ),
            ));
        }
    }
    Ok(ApiEventInput {
        metric_name,
        profile,
        properties,
        time,
        value,
        value_currency: attributes.string("value_currency")?.into_option(),
        unique_id: attributes.string("unique_id")?.into_option(),
    })
}

/// `{"data": {"type": "profile", "id"?, "attributes": {...}, "meta"?}}` of an event.
fn profile_block(block: &Obj<'_>) -> Result<ProfileInput, ApiError> {
    block.only(&["data"])?;
    let data = block.required_object("data")?;
    data.only(&["type", "id", "attributes", "meta"])?;
    data.expect_type("profile")?;
    let attributes = data.required_object("attributes")?;
    let mut profile = profiles::read_attributes(&attributes, profiles::Shape::Event)?;
    if let Some(meta) = data.object("meta")? {
        profiles::read_meta(&meta, &mut profile)?;
    }
    if let Patch::Set(id) = data.string("id")? {
        profile.id = Some(ProfileId(id));
    }
    if !profile.has_identifier() {
        return Err(ApiError::invalid_at(
            data.pointer("attributes"),
            "the profile needs an id, email, phone_number, external_id or anonymous_id",
        ));
    }
    Ok(profile)
}

fn cmp(op: Op) -> Cmp {
    match op {
        Op::GreaterThan => Cmp::Gt,
        Op::GreaterOrEqual => Cmp::Ge,
        Op::LessThan => Cmp::Lt,
        Op::LessOrEqual => Cmp::Le,
        _ => Cmp::Eq,
    }
}

/// An event as a JSON:API resource.
pub fn resource(event: &Event, base: &BaseUrl) -> Resource {
    let mut attributes = Map::new();
    attributes.insert("timestamp".into(), json!(event.time.as_second()));
    attributes.insert(
        "event_properties".into(),
        Value::Object(event.properties.clone()),
    );
    attributes.insert("datetime".into(), json!(datetime(event.time)));
    attributes.insert("uuid".into(), json!(uuid_of(event.id.as_str())));
    let mut relationships = Map::new();
    relationships.insert(
        "profile".into(),
        linkage("profile", event.profile_id.as_str()),
    );
    relationships.insert("metric".into(), linkage("metric", event.metric_id.as_str()));
    Resource {
        kind: "event",
        id: event.id.to_string(),
        attributes,
        relationships: Some(relationships),
        self_link: base.link(&format!("events/{}", event.id)),
    }
}

/// The metrics and profiles of `events` that `include` asks for, each once.
async fn included(
    engage: &Engage,
    base: &BaseUrl,
    params: &Params,
    events: &[Event],
) -> Result<Vec<Value>, ApiError> {
    let mut out = Vec::new();
    if params.includes("metric") {
        let ids: BTreeSet<MetricId> = events.iter().map(|e| e.metric_id.clone()).collect();
        let metrics: Vec<_> = stream::iter(ids)
            .map(|id| {
                let engage = engage.clone();
                async move { engage.get_metric(&id).await }
            })
            .buffered(INCLUDE_CONCURRENCY)
            .try_collect()
            .await?;
        out.extend(
            metrics
                .iter()
                .map(|m| params.render(&metrics::resource(m, base))),
        );
    }
    if params.includes("profile") {
        let ids: BTreeSet<ProfileId> = events.iter().map(|e| e.profile_id.clone()).collect();
        let found: Vec<_> = stream::iter(ids)
            .map(|id| {
                let engage = engage.clone();
                async move { engage.get_profile(&id).await }
            })
            .buffered(INCLUDE_CONCURRENCY)
            .try_collect()
            .await?;
        out.extend(
            found
                .iter()
                .map(|p| params.render(&profiles::resource(p, base))),
        );
    }
    Ok(out)
}

/// The `uuid` attribute: the event id's 128 bits (a ULID-like id is Crockford base32) written
/// as a UUID, so it is stable and unique like the id.
pub fn uuid_of(id: &str) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let bits = (id.len() == 26)
        .then(|| {
            id.bytes().try_fold(0u128, |acc, b| {
                let digit = ALPHABET.iter().position(|&a| a == b.to_ascii_uppercase())?;
                acc.checked_mul(32)?.checked_add(digit as u128)
            })
        })
        .flatten();
    match bits {
        Some(bits) => uuid::Uuid::from_u128(bits).hyphenated().to_string(),
        None => id.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_from_ulid() {
        assert_eq!(
            uuid_of("01GDDKASAP8TKDDA2GRZDSVP4H"),
            "01835b35-6556-46a6-d6a8-50c7db9dd891"
        );
        assert_eq!(uuid_of("short"), "short");
        // 26 digits of 'Z' overflow 128 bits.
        assert_eq!(uuid_of(&"Z".repeat(26)), "Z".repeat(26));
    }
}
