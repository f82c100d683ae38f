//! Segments: `GET|POST /api/segments`, `GET|PATCH|DELETE /api/segments/{id}`,
//! `GET /api/segments/{id}/profiles`, `GET /api/profiles/{id}/segments`, and
//! `POST /api/segment-previews`, a dry run of a draft definition (not a Klaviyo endpoint):
//! body `{"data":{"type":"segment-preview","attributes":{"definition":{…}}}}`, answer
//! `{"data":{"type":"segment-preview","attributes":{"profile_count":…,"profiles_evaluated":…}}}`.
//!
//! `GET /api/segments/{id}/explanations/{profile_id}` (not Klaviyo's either) answers "why is
//! this profile (not) in this segment?": each condition's outcome now, and the recorded cause
//! of the last enter or leave.
//!
//! `additional-fields[segment]` takes `profile_count` and `definition`, as Klaviyo's does.
//! While a segment's backfill runs, `is_processing` is true and the resource's `meta.backfill`
//! says how far it is (`{"done": …, "total": …}`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{json, Map, Value};
use signalbox_audience::{Audience, Segment, SegmentInput, SegmentPatch};
use signalbox_engage::{ProfileId, ProfileKey};

use super::auth::Caller;
use super::engine;
use super::error::ApiError;
use super::filter::{FieldRule, Op};
use super::jsonapi::{
    datetime, relationship_links, BaseUrl, JsonApi, Obj, Params, QuerySpec, RawQuery, Resource,
};
use super::profiles;
use super::scopes::{SegmentsProfilesRead, SegmentsRead, SegmentsWrite};
use super::Body;
use crate::app::AppState;

pub const FIELDS: &[&str] = &[
    "name",
    "definition",
    "created",
    "updated",
    "is_active",
    "is_processing",
    "is_starred",
    "profile_count",
];

/// Segments per page of `GET /api/segments` (Klaviyo's fixed page size).
const PAGE_SIZE: usize = 10;

const LIST: QuerySpec = QuerySpec {
    filters: &[
        FieldRule {
            field: "name",
            ops: &[Op::Equals, Op::Any],
        },
        FieldRule {
            field: "id",
            ops: &[Op::Equals, Op::Any],
        },
        FieldRule {
            field: "is_starred",
            ops: &[Op::Equals],
        },
    ],
    sorts: &[],
    includes: &[],
    fieldsets: &[("segment", FIELDS)],
    page_size: Some((PAGE_SIZE as u32, PAGE_SIZE as u32)),
    paged: true,
};

const ONE: QuerySpec = QuerySpec::single(&[], &[("segment", FIELDS)]);

const MEMBERS: QuerySpec = QuerySpec {
    filters: &[],
    sorts: &[],
    includes: &[],
    fieldsets: &[("profile", profiles::FIELDS)],
    page_size: Some((20, 100)),
    paged: true,
};

const PROFILE_SEGMENTS: QuerySpec = QuerySpec::single(&[], &[("segment", FIELDS)]);

/// Which of `profile_count` and `definition` were asked for.
#[derive(Debug, Default, Clone, Copy)]
struct Additional {
    profile_count: bool,
    definition: bool,
}

/// Takes `additional-fields[segment]` out of the query.
fn additional(query: RawQuery) -> Result<(RawQuery, Additional), ApiError> {
    let mut extra = Additional::default();
    let mut rest = Vec::new();
    for (key, value) in query.0 {
        if key != "additional-fields[segment]" {
            rest.push((key, value));
            continue;
        }
        for name in value.split(',').map(str::trim) {
            match name {
                "profile_count" => extra.profile_count = true,
                "definition" => extra.definition = true,
                other => {
                    return Err(ApiError::invalid_parameter(
                        "additional-fields[segment]",
                        format!("'{other}' is not a valid additional field; allowed: profile_count, definition"),
                    ))
                }
            }
        }
    }
    Ok((RawQuery(rest), extra))
}

async fn resource(
    audience: &Audience,
    segment: &Segment,
    base: &BaseUrl,
    extra: Additional,
) -> Result<Resource, ApiError> {
    let mut attributes = Map::new();
    attributes.insert("name".into(), json!(segment.name));
    if extra.definition {
        attributes.insert("definition".into(), segment.definition.clone());
    }
    attributes.insert("created".into(), json!(datetime(segment.created)));
    attributes.insert("updated".into(), json!(datetime(segment.updated)));
    attributes.insert("is_active".into(), json!(true));
    attributes.insert("is_processing".into(), json!(segment.is_processing()));
    attributes.insert("is_starred".into(), json!(segment.is_starred));
    if extra.profile_count {
        let count = audience.profile_count(&segment.id).await?;
        attributes.insert("profile_count".into(), json!(count));
    }
    let mut relationships = Map::new();
    relationships.insert(
        "profiles".into(),
        relationship_links(base, &format!("segments/{}", segment.id), "profiles"),
    );
    Ok(Resource {
        kind: "segment",
        id: segment.id.clone(),
        attributes,
        relationships: Some(relationships),
        self_link: base.link(&format!("segments/{}", segment.id)),
    })
}

fn with_progress(mut data: Value, segment: &Segment) -> Value {
    if let (Some(progress), Some(object)) = (segment.backfill, data.as_object_mut()) {
        object.insert("meta".into(), json!({ "backfill": progress }));
    }
    data
}

async fn document(
    audience: &Audience,
    status: StatusCode,
    segment: &Segment,
    base: &BaseUrl,
    params: &Params,
    extra: Additional,
) -> Result<JsonApi, ApiError> {
    let mut document = params.document_json(&resource(audience, segment, base, extra).await?);
    document["data"] = with_progress(document["data"].take(), segment);
    Ok(JsonApi(status, document))
}

#[tracing::instrument(skip_all, fields(key = %caller.key_name))]
pub async fn list(
    caller: Caller<SegmentsRead>,
    State(app): State<AppState>,
    base: BaseUrl,
    query: RawQuery,
) -> Result<JsonApi, ApiError> {
    let audience = engine(&app)?.audience.clone();
    let (query, extra) = additional(query)?;
    let params = Params::parse(query, &LIST)?;
    let mut segments = audience.list_segments().await?;
    for condition in &params.filter {
        let values = condition.strings().map_err(ApiError::invalid_filter)?;
        match condition.field.as_str() {
            "name" => segments.retain(|s| values.contains(&s.name)),
            "id" => segments.retain(|s| values.contains(&s.id)),
            _ => segments.retain(|s| values.contains(&s.is_starred.to_string())),
        }
    }
    let start = match &params.cursor {
        Some(cursor) => segments
            .iter()
            .position(|s| &s.id == cursor)
            .map(|i| i + 1)
            .ok_or_else(|| ApiError::invalid_parameter("page[cursor]", "unknown cursor"))?,
        None => 0,
    };
    let size = params.page_size as usize;
    let page: Vec<&Segment> = segments.iter().skip(start).take(size).collect();
    let next = (start + size < segments.len())
        .then(|| page.last().map(|s| s.id.clone()))
        .flatten();
    let mut data = Vec::new();
    for segment in page {
        let json = params.render(&resource(&audience, segment, &base, extra).await?);
        data.push(with_progress(json, segment));
    }
    drop(caller);
    Ok(JsonApi(
        StatusCode::OK,
        params.collection(&base, "segments", data, next.as_deref()),
    ))
}

#[tracing::instrument(skip_all, fields(key = %caller.key_name))]
pub async fn get(
    caller: Caller<SegmentsRead>,
    State(app): State<AppState>,
    base: BaseUrl,
    Path(id): Path<String>,
    query: RawQuery,
) -> Result<JsonApi, ApiError> {
    let audience = engine(&app)?.audience.clone();
    let (query, extra) = additional(query)?;
    let params = Params::parse(query, &ONE)?;
    let segment = audience.get_segment(&id).await?;
    drop(caller);
    document(&audience, StatusCode::OK, &segment, &base, &params, extra).await
}

/// The definition in `attributes`, which must be an object.
fn definition_of(attributes: &Obj<'_>) -> Result<Option<Value>, ApiError> {
    match attributes.map.get("definition") {
        None | Some(Value::Null) => Ok(None),
        Some(value @ Value::Object(_)) => Ok(Some(value.clone())),
        Some(_) => Err(ApiError::invalid_at(
            attributes.pointer("definition"),
            "definition must be an object",
        )),
    }
}

#[tracing::instrument(skip_all, fields(key = %caller.key_name))]
pub async fn create(
    caller: Caller<SegmentsWrite>,
    State(app): State<AppState>,
    base: BaseUrl,
    query: RawQuery,
    Body(body): Body,
) -> Result<JsonApi, ApiError> {
    let audience = engine(&app)?.audience.clone();
    let (query, extra) = additional(query)?;
    let params = Params::parse(query, &ONE)?;
    let root = Obj::root(&body)?;
    root.only(&["data"])?;
    let data = root.required_object("data")?;
    data.only(&["type", "attributes", "relationships"])?;
    data.expect_type("segment")?;
    let attributes = data.required_object("attributes")?;
    attributes.only(&["name", "definition", "is_starred"])?;
    let name = attributes.required_string("name")?;
    let definition = definition_of(&attributes)?.ok_or_else(|| {
        ApiError::invalid_at(attributes.pointer("definition"), "definition is required")
    })?;
    let is_starred = attributes.boolean("is_starred")?.unwrap_or(false);
    let segment = audience
        .create_segment(SegmentInput {
            name,
            definition,
            is_starred,
        })
        .await?;
    drop(caller);
    let extra = Additional {
        definition: true,
        ..extra
    };
    document(
        &audience,
        StatusCode::CREATED,
        &segment,
        &base,
        &params,
        extra,
    )
    .await
}

#[tracing::instrument(skip_all, fields(key = %caller.key_name))]
pub async fn update(
    caller: Caller<SegmentsWrite>,
    State(app): State<AppState>,
    base: BaseUrl,
    Path(id): Path<String>,
    query: RawQuery,
    Body(body): Body,
) -> Result<JsonApi, ApiError> {
    let audience = engine(&app)?.audience.clone();
    let (query, extra) = additional(query)?;
    let params = Params::parse(query, &ONE)?;
    let root = Obj::root(&body)?;
    root.only(&["data"])?;
    let data = root.required_object("data")?;
    data.only(&["type", "id", "attributes", "relationships"])?;
    data.expect_type("segment")?;
    let body_id = data.required_string("id")?;
    if body_id != id {
        return Err(ApiError::conflict(format!(
            "the body's id '{body_id}' does not match the path's '{id}'"
        )));
    }
    let mut patch = SegmentPatch::default();
    if let Some(attributes) = data.object("attributes")? {
        attributes.only(&["name", "definition", "is_starred"])?;
        patch.name = attributes.string("name")?.into_option();
        patch.definition = definition_of(&attributes)?;
        patch.is_starred = attributes.boolean("is_starred")?;
    }
    let segment = audience.update_segment(&id, patch).await?;
    drop(caller);
    let extra = Additional {
        definition: true,
        ..extra
    };
    document(&audience, StatusCode::OK, &segment, &base, &params, extra).await
}

#[tracing::instrument(skip_all, fields(key = %caller.key_name))]
pub async fn delete(
    caller: Caller<SegmentsWrite>,
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let audience = engine(&app)?.audience.clone();
    audience.delete_segment(&id).await?;
    drop(caller);
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/segments/{id}/profiles`: members in a stable order, `joined_group_at` added.
#[tracing::instrument(skip_all, fields(key = %caller.key_name))]
pub async fn members(
    caller: Caller<SegmentsProfilesRead>,
    State(app): State<AppState>,
    base: BaseUrl,
    Path(id): Path<String>,
    query: RawQuery,
) -> Result<JsonApi, ApiError> {
    let audience = engine(&app)?.audience.clone();
    let params = Params::parse(query, &MEMBERS)?;
    let after = match &params.cursor {
        Some(cursor) => Some(
            cursor
                .parse::<i64>()
                .map(ProfileKey)
                .map_err(|_| ApiError::invalid_parameter("page[cursor]", "unknown cursor"))?,
        ),
        None => None,
    };
    let page = audience
        .members(&id, after, params.page_size as usize)
        .await?;
    let mut data = Vec::new();
    for member in &page.members {
        let Ok(profile) = caller
            .engage
            .get_profile(&ProfileId(member.profile_id.clone()))
            .await
        else {
            continue;
        };
        let mut resource = profiles::resource(&profile, &base);
        resource
            .attributes
            .insert("joined_group_at".into(), json!(datetime(member.joined)));
        data.push(params.render(&resource));
    }
    let next = page.next_after_pk.map(|pk| pk.to_string());
    let path = format!("segments/{id}/profiles");
    Ok(JsonApi(
        StatusCode::OK,
        params.collection(&base, &path, data, next.as_deref()),
    ))
}

/// `GET /api/profiles/{id}/segments`.
#[tracing::instrument(skip_all, fields(key = %caller.key_name))]
pub async fn of_profile(
    caller: Caller<SegmentsProfilesRead>,
    State(app): State<AppState>,
    base: BaseUrl,
    Path(id): Path<String>,
    query: RawQuery,
) -> Result<JsonApi, ApiError> {
    let audience = engine(&app)?.audience.clone();
    let (query, extra) = additional(query)?;
    let params = Params::parse(query, &PROFILE_SEGMENTS)?;
    let segments = audience.segments_of(&ProfileId(id.clone())).await?;
    let mut data = Vec::new();
    for segment in &segments {
        data.push(params.render(&resource(&audience, segment, &base, extra).await?));
    }
    drop(caller);
    let links = json!({ "self": base.link(&format!("profiles/{id}/segments")) });
    Ok(JsonApi(
        StatusCode::OK,
        json!({ "data": data, "links": links }),
    ))
}

/// `POST /api/segment-previews`: how many profiles a draft definition would hold now.
#[tracing::instrument(skip_all, fields(key = %caller.key_name))]
pub async fn preview(
    caller: Caller<SegmentsRead>,
    State(app): State<AppState>,
    Body(body): Body,
) -> Result<JsonApi, ApiError> {
    let audience = engine(&app)?.audience.clone();
    let root = Obj::root(&body)?;
    root.only(&["data"])?;
    let data = root.required_object("data")?;
    data.only(&["type", "attributes"])?;
    data.expect_type("segment-preview")?;
    let attributes = data.required_object("attributes")?;
    attributes.only(&["definition"])?;
    let definition = definition_of(&attributes)?.ok_or_else(|| {
        ApiError::invalid_at(attributes.pointer("definition"), "definition is required")
    })?;
    let preview = audience.preview(&definition).await?;
    drop(caller);
    Ok(JsonApi(
        StatusCode::OK,
        json!({"data": {"type": "segment-preview", "attributes": {
            "profile_count": preview.profile_count,
            "profiles_evaluated": preview.profiles_evaluated,
        }}}),
    ))
}

/// `GET /api/segments/{id}/explanations/{profile_id}` (not a Klaviyo endpoint): why the
/// profile is or is not in the segment, per condition, and the recorded cause of its last
/// enter or leave.
#[tracing::instrument(skip_all, fields(key = %caller.key_name))]
pub async fn explanation(
    caller: Caller<SegmentsProfilesRead>,
    State(app): State<AppState>,
    Path((id, profile_id)): Path<(String, String)>,
) -> Result<JsonApi, ApiError> {
    let audience = engine(&app)?.audience.clone();
    let why = audience.why(&id, &ProfileId(profile_id)).await?;
    drop(caller);
    let attributes = serde_json::to_value(&why).map_err(|err| {
        tracing::error!(error = %err, "explanation does not serialise");
        ApiError::internal()
    })?;
    Ok(JsonApi(
        StatusCode::OK,
        json!({"data": {"type": "segment-explanation", "id": format!("{}:{}", why.segment_id, why.profile_id),
                        "attributes": attributes}}),
    ))
}
