//! `/admin/v1/destinations`: where Signalbox sends what leaves it (the reverse sync to a
//! Segment source, forwarding to a Klaviyo-compatible API, signed webhooks), over the sync
//! engine ([`signalbox_sync::Sync`]).
//!
//! Field names are the sync model's (snake_case), the same as `signalbox destination … --json`
//! prints. A secret (write key, API key, webhook secret) is never answered back: every answer
//! shows it redacted (`••••` and, of a secret of 16 characters or more, its last four).
//!
//! - `POST /admin/v1/destinations`, one of
//!   `{"name","kind":"segment","write_key","endpoint"?,"only_segment_profiles"?,"rate"?}`,
//!   `{"name","kind":"klaviyo","api_key","endpoint"?,"sources":[…],"rate"?}`,
//!   `{"name","kind":"webhook","url","secret"?,"sources":[…],"rate"?}`: 201 and the
//!   destination. `endpoint` defaults to Segment's US host or Klaviyo's; `rate` is calls per
//!   second (`100` or `"100/s"`), absent for the kind's default. A field of another kind is
//!   refused, naming it.
//! - `GET …`: `{"data":[destination…]}`; `GET …/{name}`: the destination (`id`, `name`,
//!   `kind`, `state`, `rate`, `created`, `updated` and the kind's settings).
//! - `PATCH …/{name}`: any of `state` (`"active"`, `"paused"`), `rate` (`null`: the kind's
//!   default), `endpoint` (a webhook's is its `url`, also accepted under that name),
//!   `sources`, `only_segment_profiles`, `secret` (also accepted as `write_key` or `api_key`
//!   for the kinds that call it so); answers the destination.
//! - `DELETE …/{name}`: 204; its cursor, dead letters and delivery records go with it.
//! - `GET …/{name}/status`: delivered, queued, retrying, retried, failed, dead_lettered,
//!   lag_seconds, last_error, throughput, circuit, cursor.
//! - `GET …/{name}/dead-letters`: `{"data":[…]}`, oldest first, with reason and response.
//! - `POST …/{name}/replay`: `{"dead_letters":true}` or `{"since":"RFC 3339 time"}` (exactly
//!   one); 202 `{"name","replay"}`: a running engine starts it within a second.
//! - `GET …/{name}/deliveries?limit=N`: `{"data":[…]}`, the newest requests first, each with
//!   its request and response (authorization and signatures redacted).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use signalbox_sync::{
    DeadLetter, DeliveryRecord, Destination, DestinationConfig, DestinationKind, DestinationPatch,
    DestinationState, DestinationStatus, NewDestination, Replay, Secret, KLAVIYO_ENDPOINT,
    SEGMENT_US_ENDPOINT,
};

use super::auth::AdminKey;
use super::error::AdminError;
use super::extract::{parse_limit, parse_time, AdminPath, AdminQuery, JsonObject};
use super::view::List;
use crate::app::AppState;

/// Which kinds a kind-specific field of a create body belongs to.
const CREATE_FIELDS: &[(&str, &[DestinationKind])] = &[
    ("write_key", &[DestinationKind::Segment]),
    ("only_segment_profiles", &[DestinationKind::Segment]),
    ("api_key", &[DestinationKind::Klaviyo]),
    (
        "endpoint",
        &[DestinationKind::Segment, DestinationKind::Klaviyo],
    ),
    ("url", &[DestinationKind::Webhook]),
    ("secret", &[DestinationKind::Webhook]),
    (
        "sources",
        &[DestinationKind::Klaviyo, DestinationKind::Webhook],
    ),
];

/// The same for a patch body (`secret` and `endpoint` apply to every kind).
const PATCH_FIELDS: &[(&str, &[DestinationKind])] = &[
    ("write_key", &[DestinationKind::Segment]),
    ("only_segment_profiles", &[DestinationKind::Segment]),
    ("api_key", &[DestinationKind::Klaviyo]),
    ("url", &[DestinationKind::Webhook]),
    (
        "sources",
        &[DestinationKind::Klaviyo, DestinationKind::Webhook],
    ),
];

/// A destination as every answer shows it: its settings with secrets redacted, beside `id`,
/// `name`, `state`, `rate`, `created` and `updated`. Also what `signalbox destination list
/// --json` prints.
pub fn destination_json(destination: &Destination) -> Value {
    let mut view = destination.config.redacted_json();
    if let Some(object) = view.as_object_mut() {
        object.insert("id".into(), json!(destination.id));
        object.insert("name".into(), json!(destination.name));
        object.insert("state".into(), json!(destination.state));
        object.insert("rate".into(), json!(destination.rate));
        object.insert("created".into(), json!(destination.created));
        object.insert("updated".into(), json!(destination.updated));
    }
    view
}

/// A rate in calls per second: `100/s` or `100` (a fraction is allowed: `0.5/s`).
pub fn parse_rate(text: &str) -> Result<f64, String> {
    let trimmed = text.trim();
    let number = trimmed.strip_suffix("/s").unwrap_or(trimmed).trim();
    let rate: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a rate (e.g. 100/s or 100)"))?;
    if !rate.is_finite() || rate <= 0.0 {
        return Err(format!("{text:?}: must be more than 0 calls per second"));
    }
    Ok(rate)
}

/// `rate` of a body: absent, `null` (the kind's default), a number or `"N/s"`.
fn rate_field(value: Option<Value>) -> Result<Option<Option<f64>>, AdminError> {
    let invalid = |message: String| AdminError::invalid("rate", message);
    match value {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::Number(number)) => {
            let text = number.to_string();
            parse_rate(&text)
                .map(|rate| Some(Some(rate)))
                .map_err(invalid)
        }
        Some(Value::String(text)) => parse_rate(&text)
            .map(|rate| Some(Some(rate)))
            .map_err(invalid),
        Some(_) => Err(invalid(
            "must be calls per second: a number or \"N/s\"".into(),
        )),
    }
}

/// Refuses fields of `body` that belong to other kinds than `kind`.
fn refuse_other_kinds(
    body: &JsonObject,
    kind: DestinationKind,
    fields: &[(&'static str, &[DestinationKind])],
) -> Result<(), AdminError> {
    for (field, kinds) in fields {
        if body.has(field) && !kinds.contains(&kind) {
            return Err(AdminError::invalid(
                *field,
                format!("does not apply to a {} destination", kind.as_str()),
            ));
        }
    }
    Ok(())
}

/// A secret field that must be given and not empty.
fn required_secret(body: &mut JsonObject, field: &'static str) -> Result<Secret, AdminError> {
    let text = body.required_string(field)?;
    if text.is_empty() {
        return Err(AdminError::invalid(field, "must not be empty"));
    }
    Ok(Secret::new(text))
}

/// An optional secret field; given, it must not be empty.
fn optional_secret(
    body: &mut JsonObject,
    field: &'static str,
) -> Result<Option<Secret>, AdminError> {
    match body.string(field)? {
        Some(text) if text.is_empty() => Err(AdminError::invalid(field, "must not be empty")),
        other => Ok(other.map(Secret::new)),
    }
}

/// The sources of a forwarding kind: required, at least one.
fn required_sources(body: &mut JsonObject) -> Result<Vec<String>, AdminError> {
    match body.strings("sources")? {
        Some(sources) if !sources.is_empty() => Ok(sources),
        _ => Err(AdminError::invalid(
            "sources",
            "is required: the names of the sources whose calls are forwarded",
        )),
    }
}

fn new_destination(mut body: JsonObject) -> Result<NewDestination, AdminError> {
    let name = body.required_string("name")?;
    let kind: DestinationKind = body
        .required_string("kind")?
        .parse()
        .map_err(|message: String| AdminError::invalid("kind", message))?;
    let rate = rate_field(body.value("rate"))?.flatten();
    refuse_other_kinds(&body, kind, CREATE_FIELDS)?;
    let config = match kind {
        DestinationKind::Segment => DestinationConfig::Segment {
            write_key: required_secret(&mut body, "write_key")?,
            endpoint: body
                .string("endpoint")?
                .unwrap_or_else(|| SEGMENT_US_ENDPOINT.to_owned()),
            only_segment_profiles: body.bool("only_segment_profiles")?.unwrap_or(false),
        },
        DestinationKind::Klaviyo => DestinationConfig::Klaviyo {
            api_key: required_secret(&mut body, "api_key")?,
            endpoint: body
                .string("endpoint")?
                .unwrap_or_else(|| KLAVIYO_ENDPOINT.to_owned()),
            sources: required_sources(&mut body)?,
        },
        DestinationKind::Webhook => DestinationConfig::Webhook {
            url: body.required_string("url")?,
            secret: optional_secret(&mut body, "secret")?,
            sources: required_sources(&mut body)?,
        },
    };
    body.finish()?;
    Ok(NewDestination { name, config, rate })
}

fn destination_patch(
    mut body: JsonObject,
    kind: DestinationKind,
) -> Result<DestinationPatch, AdminError> {
    refuse_other_kinds(&body, kind, PATCH_FIELDS)?;
    let state = match body.string("state")?.as_deref() {
        None => None,
        Some("active") => Some(DestinationState::Active),
        Some("paused") => Some(DestinationState::Paused),
        Some(other) => {
            return Err(AdminError::invalid(
                "state",
                format!("{other:?}: must be \"active\" or \"paused\""),
            ))
        }
    };
    let rate = rate_field(body.value("rate"))?;
    let endpoint = one_of(&mut body, "endpoint", "url", |body, field| {
        body.string(field)
    })?;
    let secret_name = match kind {
        DestinationKind::Segment => "write_key",
        DestinationKind::Klaviyo => "api_key",
        DestinationKind::Webhook => "secret",
    };
    let secret = one_of(&mut body, "secret", secret_name, optional_secret)?;
    let sources = match body.strings("sources")? {
        Some(sources) if sources.is_empty() => {
            return Err(AdminError::invalid(
                "sources",
                "must name at least one source",
            ))
        }
        other => other,
    };
    let only_segment_profiles = body.bool("only_segment_profiles")?;
    body.finish()?;
    Ok(DestinationPatch {
        state,
        rate,
        endpoint,
        sources,
        only_segment_profiles,
        secret,
    })
}

/// A value that a body may give under either of two names, not both.
fn one_of<T>(
    body: &mut JsonObject,
    name: &'static str,
    alias: &'static str,
    take: impl Fn(&mut JsonObject, &'static str) -> Result<Option<T>, AdminError>,
) -> Result<Option<T>, AdminError> {
    if name == alias {
        return take(body, name);
    }
    let first = take(body, name)?;
    let second = take(body, alias)?;
    match (first, second) {
        (Some(_), Some(_)) => Err(AdminError::invalid(
            alias,
            format!("give {name} or {alias}, not both"),
        )),
        (first, second) => Ok(first.or(second)),
    }
}

fn sync(app: &AppState) -> Result<&signalbox_sync::Sync, AdminError> {
    app.sync.as_ref().ok_or(AdminError::Unavailable)
}

/// `GET /admin/v1/destinations`.
pub async fn list(
    _key: AdminKey,
    State(app): State<AppState>,
) -> Result<Json<List<Value>>, AdminError> {
    let destinations = sync(&app)?.list().await?;
    Ok(Json(List {
        data: destinations.iter().map(destination_json).collect(),
    }))
}

/// `POST /admin/v1/destinations`.
pub async fn create(
    key: AdminKey,
    State(app): State<AppState>,
    body: JsonObject,
) -> Result<(StatusCode, Json<Value>), AdminError> {
    let sync = sync(&app)?;
    let new = new_destination(body)?;
    let destination = sync.create(new).await?;
    tracing::info!(
        api_key = key.name(),
        destination = destination.name,
        kind = destination.config.kind().as_str(),
        "destination created"
    );
    Ok((StatusCode::CREATED, Json(destination_json(&destination))))
}

/// `GET /admin/v1/destinations/{name}`.
pub async fn get(
    _key: AdminKey,
    State(app): State<AppState>,
    AdminPath(name): AdminPath<String>,
) -> Result<Json<Value>, AdminError> {
    Ok(Json(destination_json(&sync(&app)?.get(&name).await?)))
}

/// `PATCH /admin/v1/destinations/{name}`.
pub async fn patch(
    key: AdminKey,
    State(app): State<AppState>,
    AdminPath(name): AdminPath<String>,
    body: JsonObject,
) -> Result<Json<Value>, AdminError> {
    let sync = sync(&app)?;
    let kind = sync.get(&name).await?.config.kind();
    let patch = destination_patch(body, kind)?;
    let destination = sync.patch(&name, patch).await?;
    tracing::info!(
        api_key = key.name(),
        destination = name,
        "destination changed"
    );
    Ok(Json(destination_json(&destination)))
}

/// `DELETE /admin/v1/destinations/{name}`.
pub async fn delete(
    key: AdminKey,
    State(app): State<AppState>,
    AdminPath(name): AdminPath<String>,
) -> Result<StatusCode, AdminError> {
    sync(&app)?.delete(&name).await?;
    tracing::info!(
        api_key = key.name(),
        destination = name,
        "destination deleted"
    );
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /admin/v1/destinations/{name}/status`.
pub async fn status(
    _key: AdminKey,
    State(app): State<AppState>,
    AdminPath(name): AdminPath<String>,
) -> Result<Json<DestinationStatus>, AdminError> {
    Ok(Json(sync(&app)?.status(&name).await?))
}

/// `GET /admin/v1/destinations/{name}/dead-letters`.
pub async fn dead_letters(
    _key: AdminKey,
    State(app): State<AppState>,
    AdminPath(name): AdminPath<String>,
) -> Result<Json<List<DeadLetter>>, AdminError> {
    let sync = sync(&app)?;
    sync.get(&name).await?;
    Ok(Json(List {
        data: sync.dead_letters(&name).await?,
    }))
}

/// `POST /admin/v1/destinations/{name}/replay`.
pub async fn replay(
    key: AdminKey,
    State(app): State<AppState>,
    AdminPath(name): AdminPath<String>,
    mut body: JsonObject,
) -> Result<(StatusCode, Json<Value>), AdminError> {
    let sync = sync(&app)?;
    let dead_letters = body.bool("dead_letters")?.unwrap_or(false);
    let since = parse_time("since", body.string("since")?.as_deref())?;
    body.finish()?;
    let replay = match (dead_letters, since) {
        (true, None) => Replay::DeadLetters,
        (false, Some(since)) => Replay::Since(since),
        (true, Some(_)) => {
            return Err(AdminError::invalid(
                "since",
                "give \"dead_letters\": true or \"since\", not both",
            ))
        }
        (false, None) => {
            return Err(AdminError::invalid(
                "dead_letters",
                "give \"dead_letters\": true or \"since\": an RFC 3339 time",
            ))
        }
    };
    sync.replay(&name, replay.clone()).await?;
    tracing::info!(
        api_key = key.name(),
        destination = name,
        replay = ?replay,
        "destination replay requested"
    );
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"name": name, "replay": replay})),
    ))
}

#[derive(Debug, Deserialize)]
pub struct DeliveriesQuery {
    limit: Option<String>,
}

/// `GET /admin/v1/destinations/{name}/deliveries?limit=N`.
pub async fn deliveries(
    _key: AdminKey,
    State(app): State<AppState>,
    AdminPath(name): AdminPath<String>,
    AdminQuery(query): AdminQuery<DeliveriesQuery>,
) -> Result<Json<List<DeliveryRecord>>, AdminError> {
    let limit = parse_limit(query.limit.as_deref())?;
    let sync = sync(&app)?;
    sync.get(&name).await?;
    Ok(Json(List {
        data: sync.deliveries(&name, limit).await?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_with_and_without_the_unit() {
        assert_eq!(parse_rate("100/s"), Ok(100.0));
        assert_eq!(parse_rate("100"), Ok(100.0));
        assert_eq!(parse_rate(" 0.5/s "), Ok(0.5));
        for bad in ["", "/s", "0", "-3/s", "fast", "inf", "NaN/s", "100/m"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_rate_field_may_clear_the_rate() {
        assert_eq!(rate_field(None).unwrap(), None);
        assert_eq!(rate_field(Some(Value::Null)).unwrap(), Some(None));
        assert_eq!(rate_field(Some(json!(25))).unwrap(), Some(Some(25.0)));
        assert_eq!(rate_field(Some(json!("25/s"))).unwrap(), Some(Some(25.0)));
        for bad in [json!(0), json!(true), json!("x"), json!([1])] {
            let err = rate_field(Some(bad.clone())).unwrap_err();
            assert!(
                matches!(err, AdminError::InvalidField { ref field, .. } if field == "rate"),
                "{bad}"
            );
        }
    }
}
