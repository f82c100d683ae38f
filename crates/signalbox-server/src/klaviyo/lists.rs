//! `GET|POST /api/lists`, `GET|PATCH|DELETE /api/lists/{id}`, `GET /api/lists/{id}/profiles`
//! and `POST|DELETE /api/lists/{id}/relationships/profiles`.
//!
//! `additional-fields[list]=profile_count` and `additional-fields[profile]=subscriptions` are
//! taken here (read off the query before the shared parameters).

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use jiff::tz::TimeZone;
use serde_json::{json, Map, Value};
use signalbox_engage::{
    Cmp, EmailConsent, List, ListId, ListQuery, MemberQuery, OptInProcess, ProfileId, TimeBound,
};

use super::auth::Caller;
use super::error::ApiError;
use super::filter::{FieldRule, Op};
use super::jsonapi::{
    datetime, relationship_links, BaseUrl, JsonApi, Obj, Params, Patch, QuerySpec, RawQuery,
    Resource,
};
use super::origin::RequestOrigin;
use super::profiles;
use super::scopes::{ListsProfilesRead, ListsProfilesWrite, ListsRead, ListsWrite};
use super::Body;

const LIST_FIELDS: &[&str] = &[
    "name",
    "created",
    "updated",
    "opt_in_process",
    "profile_count",
];

const EQ_ANY: &[Op] = &[Op::Equals, Op::Any];
const TIME_OPS: &[Op] = &[
    Op::GreaterThan,
    Op::GreaterOrEqual,
    Op::LessThan,
    Op::LessOrEqual,
];

const LISTS: QuerySpec = QuerySpec {
    filters: &[
        FieldRule {
            field: "name",
            ops: EQ_ANY,
        },
        FieldRule {
            field: "id",
            ops: EQ_ANY,
        },
    ],
    sorts: &[],
    includes: &[],
    fieldsets: &[("list", LIST_FIELDS)],
    page_size: Some((10, 10)),
    paged: true,
};

const ONE: QuerySpec = QuerySpec::single(&[], &[("list", LIST_FIELDS)]);

/// Profile fields of list members: a profile's, plus `joined_group_at`.
const MEMBER_FIELDS: &[&str] = &[
    "id",
    "email",
    "phone_number",
    "external_id",
    "first_name",
    "last_name",
    "organization",
    "locale",
    "title",
    "image",
    "created",
    "updated",
    "last_event_date",
    "location",
    "properties",
    "joined_group_at",
    "subscriptions",
];

const MEMBERS: QuerySpec = QuerySpec {
    filters: &[
        FieldRule {
            field: "email",
            ops: EQ_ANY,
        },
        FieldRule {
            field: "joined_group_at",
            ops: TIME_OPS,
        },
    ],
    sorts: &["joined_group_at", "-joined_group_at"],
    includes: &[],
    fieldsets: &[("profile", MEMBER_FIELDS)],
    page_size: Some((20, 100)),
    paged: true,
};

/// Takes `additional-fields[kind]` off the query; the names asked for, each checked.
pub fn additional_fields(
    query: &mut RawQuery,
    kind: &str,
    allowed: &[&str],
) -> Result<Vec<String>, ApiError> {
    let key = format!("additional-fields[{kind}]");
    let mut out = Vec::new();
    let mut seen = false;
    let mut error = None;
    query.0.retain(|(k, v)| {
        if *k != key {
            return true;
        }
        if seen {
            error = Some(ApiError::invalid_parameter(
                key.clone(),
                format!("'{key}' is given more than once"),
            ));
        }
        seen = true;
        for name in v.split(',').map(str::trim) {
            if allowed.contains(&name) {
                out.push(name.to_owned());
            } else {
                error = Some(ApiError::invalid_parameter(
                    key.clone(),
                    format!(
                        "'{name}' is not a valid additional field; allowed: {}",
                        allowed.join(", ")
                    ),
                ));
            }
        }
        false
    });
    match error {
        Some(err) => Err(err),
        None => Ok(out),
    }
}

fn list_resource(list: &List, base: &BaseUrl, with_count: bool) -> Resource {
    let mut attributes = Map::new();
    attributes.insert("name".into(), json!(list.name));
    attributes.insert("created".into(), json!(datetime(list.created)));
    attributes.insert("updated".into(), json!(datetime(list.updated)));
    attributes.insert("opt_in_process".into(), json!(list.opt_in_process.as_str()));
    if with_count {
        attributes.insert("profile_count".into(), json!(list.profile_count));
    }
    let mut relationships = Map::new();
    relationships.insert(
        "profiles".into(),
        relationship_links(base, &format!("lists/{}", list.id), "profiles"),
    );
    Resource {
        kind: "list",
        id: list.id.to_string(),
        attributes,
        relationships: Some(relationships),
        self_link: base.link(&format!("lists/{}", list.id)),
    }
}

fn list_document(
    status: StatusCode,
    list: &List,
    base: &BaseUrl,
    params: &Params,
    count: bool,
) -> JsonApi {
    params.document(status, &list_resource(list, base, count))
}

/// `subscriptions` as Klaviyo shows it (email marketing only).
///
/// `suppression` holds the profile's global suppressions: suppression jobs (by email, list or
/// segment), hard bounces, unsubscribes (jobs, links, recorded `Unsubscribed` events).
/// `list_suppressions` is always empty: Klaviyo fills it for list-level unsubscribes, and
/// nothing in Signalbox suppresses for one list only (a suppression job naming a list
/// suppresses each member globally, an unsubscribe job naming a list unsubscribes globally).
pub fn subscriptions_json(consent: &EmailConsent) -> Value {
    let suppression: Vec<Value> = consent
        .suppressions
        .iter()
        .map(|s| json!({"reason": s.reason.as_str(), "timestamp": datetime(s.timestamp)}))
        .collect();
    json!({
        "email": {
            "marketing": {
                "can_receive_email_marketing": consent.can_receive_email_marketing,
                "consent": consent.consent.as_str(),
                "consent_timestamp": consent.consent_timestamp.map(datetime),
                "last_updated": consent.consent_timestamp.map(datetime),
                "method": consent.method,
                "method_detail": consent.method_detail,
                "custom_method_detail": consent.custom_source,
                "double_optin": consent.double_optin,
                "suppression": suppression,
                "list_suppressions": [],
            }
        }
    })
}

/// `GET /api/lists`.
#[tracing::instrument(skip_all, fields(key = %caller.key_name))]
pub async fn list(
    caller: Caller<ListsRead>,
    base: BaseUrl,
    mut query: RawQuery,
) -> Result<JsonApi, ApiError> {
    let extra = additional_fields(&mut query, "list", &["profile_count"])?;
    let params = Params::parse(query, &LISTS)?;
    let mut q = ListQuery {
        page_size: params.page_size,
        cursor: params.cursor.clone(),
        ..ListQuery::default()
    };
    for condition in &params.filter {
        let values = condition.strings()?;
        match condition.field.as_str() {
            "name" => q.names.extend(values),
            _ => q.ids.extend(values.into_iter().map(ListId)),
        }
    }
    let page = caller.engage.list_lists(q).await?;
    let count = !extra.is_empty();
    let data = page
        .items
        .iter()
        .map(|l| params.render(&list_resource(l, &base, count)));
    Ok(JsonApi(
        StatusCode::OK,
        params.collection(&base, "lists", data, page.next_cursor.as_deref()),
    ))
}

/// `GET /api/lists/{id}`.
#[tracing::instrument(skip_all, fields(key = %caller.key_name))]
pub async fn get(
    caller: Caller<ListsRead>,
    base: BaseUrl,
    Path(id): Path<String>,
    mut query: RawQuery,
) -> Result<JsonApi, ApiError> {
    let extra = additional_fields(&mut query, "list", &["profile_count"])?;
    let params = Params::parse(query, &ONE)?;
    let list = caller.engage.get_list(&ListId(id)).await?;
    Ok(list_document(
        StatusCode::OK,
        &list,
        &base,
        &params,
        !extra.is_empty(),
    ))
}

fn opt_in(attributes: &Obj<'_>) -> Result<Option<OptInProcess>, ApiError> {
    match attributes.string("opt_in_process")? {
        Patch::Set(text) => OptInProcess::parse(&text).map(Some).ok_or_else(|| {
            ApiError::invalid_at(
                attributes.pointer("opt_in_process"),
                "'opt_in_process' must be 'single_opt_in' or 'double_opt_in'",
            )
        }),
        _ => Ok(None),
    }
}

fn name(attributes: &Obj<'_>, required: bool) -> Result<Option<String>, ApiError> {
    match attributes.string("name")? {
        Patch::Set(name) if !name.trim().is_empty() => Ok(Some(name)),
        Patch::Absent if !required => Ok(None),
        _ => Err(ApiError::invalid_at(
            attributes.pointer("name"),
            "'name' must be a non-empty string",
        )),
    }
}

/// `POST /api/lists`: 201.
#[tracing::instrument(skip_all, fields(key = %caller.key_name))]
pub async fn create(
    caller: Caller<ListsWrite>,
    base: BaseUrl,
    query: RawQuery,
    Body(body): Body,
) -> Result<JsonApi, ApiError> {
    let params = Params::parse(query, &ONE)?;
    let root = Obj::root(&body)?;
    root.only(&["data"])?;
    let data = root.required_object("data")?;
    data.only(&["type", "attributes"])?;
    data.expect_type("list")?;
    let attributes = data.required_object("attributes")?;
    attributes.only(&["name", "opt_in_process"])?;
    let name = name(&attributes, true)?.unwrap_or_default();
    let opt_in = opt_in(&attributes)?.unwrap_or_default();
    let list = caller.engage.create_list(&name, opt_in).await?;
    Ok(list_document(
        StatusCode::CREATED,
        &list,
        &base,
        &params,
        false,
    ))
}

/// `PATCH /api/lists/{id}`: 200.
#[tracing::instrument(skip_all, fields(key = %caller.key_name))]
pub async fn update(
    caller: Caller<ListsWrite>,
    base: BaseUrl,
    Path(id): Path<String>,
    query: RawQuery,
    Body(body): Body,
) -> Result<JsonApi, ApiError> {
    let params = Params::parse(query, &ONE)?;
    let root = Obj::root(&body)?;
    root.only(&["data"])?;
    let data = root.required_object("data")?;
    data.only(&["type", "id", "attributes"])?;
    data.expect_type("list")?;
    let body_id = data.required_string("id")?;
    if body_id != id {
        return Err(ApiError::conflict(format!(
            "the body's id '{body_id}' does not match the path's '{id}'"
        )));
    }
    let attributes = data.required_object("attributes")?;
    attributes.only(&["name", "opt_in_process"])?;
    let name = name(&attributes, false)?;
    let opt_in = opt_in(&attributes)?;
    let list = caller
        .engage
        .update_list(&ListId(id), name.as_deref(), opt_in)
        .await?;
    Ok(list_document(StatusCode::OK, &list, &base, &params, false))
}

/// `DELETE /api/lists/{id}`: 204.
#[tracing::instrument(skip_all, fields(key = %caller.key_name))]
pub async fn delete(
    caller: Caller<ListsWrite>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.engage.delete_list(&ListId(id)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /api/lists/{id}/profiles`: members by `joined_group_at`.
#[tracing::instrument(skip_all, fields(key = %caller.key_name))]
pub async fn profiles(
    caller: Caller<ListsProfilesRead>,
    base: BaseUrl,
    Path(id): Path<String>,
    mut query: RawQuery,
) -> Result<JsonApi, ApiError> {
    let extra = additional_fields(&mut query, "profile", &["subscriptions"])?;
    let params = Params::parse(query, &MEMBERS)?;
    let mut q = MemberQuery {
        list_id: ListId(id.clone()),
        newest_first: params.sort == Some("-joined_group_at"),
        page_size: params.page_size,
        cursor: params.cursor.clone(),
        ..MemberQuery::default()
    };
    for condition in &params.filter {
        match condition.field.as_str() {
            "email" => q.emails.extend(condition.strings()?),
            _ => q.joined.push(TimeBound {
                cmp: match condition.op {
                    Op::GreaterThan => Cmp::Gt,
                    Op::GreaterOrEqual => Cmp::Ge,
                    Op::LessThan => Cmp::Lt,
                    _ => Cmp::Le,
                },
                at: condition.instant(&TimeZone::UTC, false)?,
            }),
        }
    }
    let page = caller.engage.list_members(q).await?;
    let mut data = Vec::with_capacity(page.items.len());
    for member in &page.items {
        let mut resource = profiles::resource(&member.profile, &base);
        resource
            .attributes
            .insert("joined_group_at".into(), json!(datetime(member.joined)));
        if !extra.is_empty() {
            let consent = caller.engage.email_consent(&member.profile.id).await?;
            resource
                .attributes
                .insert("subscriptions".into(), subscriptions_json(&consent));
        }
        data.push(params.render(&resource));
    }
    let path = format!("lists/{id}/profiles");
    Ok(JsonApi(
        StatusCode::OK,
        params.collection(&base, &path, data, page.next_cursor.as_deref()),
    ))
}

/// Most profiles one relationships request may name.
const MAX_RELATIONSHIPS: usize = 1000;

fn profile_linkages(body: &Value) -> Result<Vec<ProfileId>, ApiError> {
    let root = Obj::root(body)?;
    root.only(&["data"])?;
    let items = match root.array("data")? {
        Some(items) => items,
        None => {
            return Err(ApiError::invalid_at(
                root.pointer("data"),
                "'data' must be an array of profile linkages",
            ))
        }
    };
    if items.is_empty() {
        return Err(ApiError::invalid_at(
            root.pointer("data"),
            "name at least one profile",
        ));
    }
    if items.len() > MAX_RELATIONSHIPS {
        return Err(ApiError::invalid_at(
            root.pointer("data"),
            format!("at most {MAX_RELATIONSHIPS} profiles per request"),
        ));
    }
    let mut ids = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let linkage = root.element("data", i, item)?;
        linkage.only(&["type", "id"])?;
        linkage.expect_type("profile")?;
        ids.push(ProfileId(linkage.required_string("id")?));
    }
    Ok(ids)
}

/// `POST /api/lists/{id}/relationships/profiles`: 204.
#[tracing::instrument(skip_all, fields(key = %caller.key_name))]
pub async fn add_profiles(
    caller: Caller<ListsProfilesWrite>,
    origin: RequestOrigin,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let profiles = profile_linkages(&body)?;
    origin
        .engage(&caller.engage)
        .add_list_members(&ListId(id), &profiles)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /api/lists/{id}/relationships/profiles`: 204.
#[tracing::instrument(skip_all, fields(key = %caller.key_name))]
pub async fn remove_profiles(
    caller: Caller<ListsProfilesWrite>,
    origin: RequestOrigin,
    Path(id): Path<String>,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let profiles = profile_linkages(&body)?;
    origin
        .engage(&caller.engage)
        .remove_list_members(&ListId(id), &profiles)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
