//! `GET|POST /api/flows`, `GET|PATCH|DELETE /api/flows/{id}` in Klaviyo's shapes, over the
//! flows engine ([`signalbox_flows::Flows`]).
//!
//! - Create takes `name` and `definition` (Klaviyo's flow definition JSON, `temporary_id`s for
//!   new actions); the 201 carries the definition with real ids. New flows are `draft`; as a
//!   Signalbox extension, `status` may be given on create.
//! - `additional-fields[flow]=definition` adds the definition to reads;
//!   `additional-fields[flow]=statistics` (Signalbox) adds counters of the flow and each action.
//! - PATCH sets `status` as in Klaviyo (every message action follows: `live`, `manual`,
//!   `draft`); as Signalbox extensions it also takes `name`, `archived` and `definition`
//!   (existing actions keep their `id`, new ones use `temporary_id`).
//! - An invalid definition is a 400 whose `source.pointer` names the action or field at fault.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{json, Map, Value};
use signalbox_flows::{FlowInfo, FlowStats, FlowStatus, FlowUpdate, Flows};

use super::auth::Caller;
use super::engine;
use super::error::ApiError;
use super::filter::{self, FieldRule, Op};
use super::jsonapi::{
    datetime, BaseUrl, JsonApi, Obj, Params, Patch, QuerySpec, RawQuery, Resource,
};
use super::scopes::{FlowsRead, FlowsWrite};
use super::Body;
use crate::app::AppState;

pub const FIELDS: &[&str] = &[
    "name",
    "status",
    "archived",
    "created",
    "updated",
    "trigger_type",
    "definition",
    "statistics",
];

/// Flows per page (Klaviyo's default for `/api/flows`).
const PAGE_SIZE: (u32, u32) = (50, 50);

const LIST: QuerySpec = QuerySpec {
    filters: &[
        FieldRule {
            field: "name",
            ops: &[Op::Equals, Op::Contains, Op::StartsWith, Op::EndsWith],
        },
        FieldRule {
            field: "status",
            ops: &[Op::Equals],
        },
        FieldRule {
            field: "archived",
            ops: &[Op::Equals],
        },
        FieldRule {
            field: "trigger_type",
            ops: &[Op::Equals],
        },
    ],
    sorts: &[
        "name", "-name", "created", "-created", "updated", "-updated", "status", "-status",
    ],
    includes: &[],
    fieldsets: &[("flow", FIELDS)],
    page_size: Some(PAGE_SIZE),
    paged: true,
};

const ONE: QuerySpec = QuerySpec::single(&[], &[("flow", FIELDS)]);

const ADDITIONAL: &str = "additional-fields[flow]";

/// What `additional-fields[flow]` asked for.
#[derive(Debug, Clone, Copy, Default)]
struct Extra {
    definition: bool,
    statistics: bool,
}

/// Takes `additional-fields[flow]` out of the query (the shared parser does not know it).
fn extra(query: RawQuery) -> Result<(RawQuery, Extra), ApiError> {
    let mut extra = Extra::default();
    let mut rest = Vec::new();
    for (key, value) in query.0 {
        if key != ADDITIONAL {
            rest.push((key, value));
            continue;
        }
        for name in value.split(',').map(str::trim) {
            match name {
                "definition" => extra.definition = true,
                "statistics" => extra.statistics = true,
                other => {
                    return Err(ApiError::invalid_parameter(
                        ADDITIONAL,
                        format!("'{other}' is not an additional field of flows; allowed: definition, statistics"),
                    ))
                }
            }
        }
    }
    Ok((RawQuery(rest), extra))
}

#[tracing::instrument(skip_all, fields(key = %caller.key_name))]
pub async fn list(
    caller: Caller<FlowsRead>,
    State(app): State<AppState>,
    base: BaseUrl,
    query: RawQuery,
) -> Result<JsonApi, ApiError> {
    let (query, extra) = extra(query)?;
    let params = Params::parse(query, &LIST)?;
    let flows = &engine(&app)?.flows;
    let mut all = flows.list_flows().await?;
    for condition in &params.filter {
        all.retain(|flow| matches(flow, condition));
    }
    match params.sort {
        Some("name") => all.sort_by(|a, b| a.name.cmp(&b.name)),
        Some("-name") => all.sort_by(|a, b| b.name.cmp(&a.name)),
        Some("-created") => all.sort_by_key(|f| std::cmp::Reverse(f.created)),
        Some("updated") => all.sort_by_key(|f| f.updated),
        Some("-updated") => all.sort_by_key(|f| std::cmp::Reverse(f.updated)),
        Some("status") => all.sort_by_key(|f| f.status.as_str()),
        Some("-status") => all.sort_by(|a, b| b.status.as_str().cmp(a.status.as_str())),
        _ => {}
    }
    let offset: usize = match &params.cursor {
        None => 0,
        Some(cursor) => cursor.parse().map_err(|_| {
            ApiError::invalid_parameter(
                "page[cursor]",
                "page[cursor] is not a cursor this server issued",
            )
        })?,
    };
    let size = params.page_size as usize;
    // A cursor is any number a client sends: past the end is an empty page, not an overflow.
    let end = offset.saturating_add(size);
    let next = (end < all.len()).then(|| end.to_string());
    let mut data = Vec::new();
    for flow in all.iter().skip(offset).take(size) {
        let stats = statistics(flows, flow, extra).await?;
        data.push(params.render(&resource(flow, extra, stats.as_ref(), &base)));
    }
    Ok(JsonApi(
        StatusCode::OK,
        params.collection(&base, "flows", data, next.as_deref()),
    ))
}

fn matches(flow: &FlowInfo, condition: &filter::Condition) -> bool {
    let text = |value: &str| match &condition.value {
        Some(filter::Value::String(wanted)) => match condition.op {
            Op::Contains => value.contains(wanted.as_str()),
            Op::StartsWith => value.starts_with(wanted.as_str()),
            Op::EndsWith => value.ends_with(wanted.as_str()),
            _ => value == wanted,
        },
        _ => false,
    };
    match condition.field.as_str() {
        "name" => text(&flow.name),
        "status" => text(flow.status.as_str()),
        "trigger_type" => text(flow.trigger_type),
        "archived" => {
            matches!(&condition.value, Some(filter::Value::Bool(b)) if *b == flow.archived)
        }
        _ => false,
    }
}

#[tracing::instrument(skip_all, fields(key = %caller.key_name))]
pub async fn get(
    caller: Caller<FlowsRead>,
    State(app): State<AppState>,
    base: BaseUrl,
    Path(id): Path<String>,
    query: RawQuery,
) -> Result<JsonApi, ApiError> {
    let (query, extra) = extra(query)?;
    let params = Params::parse(query, &ONE)?;
    let flows = &engine(&app)?.flows;
    let flow = flows.get_flow(&id).await?;
    let stats = statistics(flows, &flow, extra).await?;
    Ok(document(
        StatusCode::OK,
        &flow,
        extra,
        stats.as_ref(),
        &base,
        &params,
    ))
}

#[tracing::instrument(skip_all, fields(key = %caller.key_name))]
pub async fn create(
    caller: Caller<FlowsWrite>,
    State(app): State<AppState>,
    base: BaseUrl,
    query: RawQuery,
    Body(body): Body,
) -> Result<JsonApi, ApiError> {
    let (query, mut extra) = extra(query)?;
    let params = Params::parse(query, &ONE)?;
    let root = Obj::root(&body)?;
    root.only(&["data"])?;
    let data = root.required_object("data")?;
    data.only(&["type", "attributes"])?;
    data.expect_type("flow")?;
    let attributes = data.required_object("attributes")?;
    attributes.only(&["name", "definition", "status"])?;
    let name = attributes.required_string("name")?;
    let definition = attributes
        .map
        .get("definition")
        .filter(|d| !d.is_null())
        .ok_or_else(|| {
            ApiError::invalid_at(attributes.pointer("definition"), "'definition' is required")
        })?;
    let status = status_of(&attributes)?;
    let flow = engine(&app)?
        .flows
        .create_flow(&name, definition, status)
        .await?;
    // The created flow's definition carries the real action ids.
    extra.definition = true;
    Ok(document(
        StatusCode::CREATED,
        &flow,
        extra,
        None,
        &base,
        &params,
    ))
}

#[tracing::instrument(skip_all, fields(key = %caller.key_name))]
pub async fn update(
    caller: Caller<FlowsWrite>,
    State(app): State<AppState>,
    base: BaseUrl,
    Path(id): Path<String>,
    query: RawQuery,
    Body(body): Body,
) -> Result<JsonApi, ApiError> {
    let (query, extra) = extra(query)?;
    let params = Params::parse(query, &ONE)?;
    let root = Obj::root(&body)?;
    root.only(&["data"])?;
    let data = root.required_object("data")?;
    data.only(&["type", "id", "attributes"])?;
    data.expect_type("flow")?;
    let body_id = data.required_string("id")?;
    if body_id != id {
        return Err(ApiError::conflict(format!(
            "the body's id '{body_id}' does not match the path's '{id}'"
        )));
    }
    let attributes = data.required_object("attributes")?;
    attributes.only(&["status", "name", "archived", "definition"])?;
    let update = FlowUpdate {
        name: attributes.string("name")?.into_option(),
        status: status_of(&attributes)?,
        archived: attributes.boolean("archived")?,
        definition: attributes
            .map
            .get("definition")
            .filter(|d| !d.is_null())
            .cloned(),
    };
    let flows = &engine(&app)?.flows;
    let flow = flows.update_flow(&id, update).await?;
    let stats = statistics(flows, &flow, extra).await?;
    Ok(document(
        StatusCode::OK,
        &flow,
        extra,
        stats.as_ref(),
        &base,
        &params,
    ))
}

#[tracing::instrument(skip_all, fields(key = %caller.key_name))]
pub async fn delete(
    caller: Caller<FlowsWrite>,
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    engine(&app)?.flows.delete_flow(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn status_of(attributes: &Obj<'_>) -> Result<Option<FlowStatus>, ApiError> {
    match attributes.string("status")? {
        Patch::Set(text) => FlowStatus::parse(&text).map(Some).ok_or_else(|| {
            ApiError::invalid_at(
                attributes.pointer("status"),
                format!("'{text}' is not a flow status; use draft, manual, live or paused"),
            )
        }),
        _ => Ok(None),
    }
}

async fn statistics(
    flows: &Flows,
    flow: &FlowInfo,
    extra: Extra,
) -> Result<Option<FlowStats>, ApiError> {
    if !extra.statistics {
        return Ok(None);
    }
    flows
        .stats(&flow.id)
        .await
        .map(Some)
        .map_err(ApiError::from)
}

fn document(
    status: StatusCode,
    flow: &FlowInfo,
    extra: Extra,
    stats: Option<&FlowStats>,
    base: &BaseUrl,
    params: &Params,
) -> JsonApi {
    params.document(status, &resource(flow, extra, stats, base))
}

/// A flow as a JSON:API resource.
fn resource(flow: &FlowInfo, extra: Extra, stats: Option<&FlowStats>, base: &BaseUrl) -> Resource {
    let mut attributes = Map::new();
    attributes.insert("name".into(), json!(flow.name));
    attributes.insert("status".into(), json!(flow.status.as_str()));
    attributes.insert("archived".into(), json!(flow.archived));
    attributes.insert("created".into(), json!(datetime(flow.created)));
    attributes.insert("updated".into(), json!(datetime(flow.updated)));
    attributes.insert("trigger_type".into(), json!(flow.trigger_type));
    if extra.definition {
        attributes.insert("definition".into(), flow.definition.to_json());
    }
    if let Some(stats) = stats {
        let actions: Map<String, Value> = stats
            .actions
            .iter()
            .map(|(id, counters)| (id.clone(), counters_json(counters)))
            .collect();
        attributes.insert(
            "statistics".into(),
            json!({"flow": counters_json(&stats.flow), "actions": actions}),
        );
    }
    Resource {
        kind: "flow",
        id: flow.id.clone(),
        attributes,
        relationships: None,
        self_link: base.link(&format!("flows/{}", flow.id)),
    }
}

fn counters_json(counters: &signalbox_flows::Counters) -> Value {
    json!({"counts": counters.counts, "revenue": counters.revenue})
}
