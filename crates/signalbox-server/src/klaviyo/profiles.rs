//! `GET/POST /api/profiles`, `GET/PATCH /api/profiles/{id}`, `POST /api/profile-import`
//! and `POST /api/profile-merge`.

use axum::extract::Path;
use axum::http::StatusCode;
use jiff::tz::TimeZone;
use serde_json::{json, Map, Value};
use signalbox_core::Email;
use signalbox_engage::{
    Cmp, Profile, ProfileField, ProfileId, ProfileInput, ProfileQuery, ProfileSort,
    ProfileSortField, SuppressionReason, TimeBound,
};

use super::auth::Caller;
use super::error::ApiError;
use super::filter::{FieldRule, Op};
use super::jsonapi::{
    datetime, BaseUrl, JsonApi, Obj, Params, Patch, QuerySpec, RawQuery, Resource,
};
use super::origin::RequestOrigin;
use super::scopes::{ProfilesRead, ProfilesWrite};
use super::Body;

pub const FIELDS: &[&str] = &[
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
    "location.address1",
    "location.address2",
    "location.city",
    "location.country",
    "location.latitude",
    "location.longitude",
    "location.region",
    "location.zip",
    "location.timezone",
    "location.ip",
    "properties",
];

/// Standard string attributes a write may set (or clear with `null`).
const STRING_ATTRIBUTES: &[&str] = &[
    "email",
    "phone_number",
    "external_id",
    "first_name",
    "last_name",
    "organization",
    "locale",
    "title",
    "image",
];

const LOCATION_STRINGS: &[&str] = &[
    "address1", "address2", "city", "country", "region", "zip", "timezone", "ip",
];

const IDENTIFIER_OPS: &[Op] = &[Op::Equals, Op::Any];
const TIME_OPS: &[Op] = &[
    Op::GreaterThan,
    Op::GreaterOrEqual,
    Op::LessThan,
    Op::LessOrEqual,
];

const FIELDSETS: &[(&str, &[&str])] = &[("profile", FIELDS)];

/// The suppression fields profiles can be filtered on. Every suppression is global in
/// Signalbox (see [`super::lists::subscriptions_json`]), so a `list_suppressions` filter
/// finds no profile.
const SUPPRESSION_REASON: &str = "subscriptions.email.marketing.suppression.reason";
const SUPPRESSION_TIMESTAMP: &str = "subscriptions.email.marketing.suppression.timestamp";
const LIST_SUPPRESSION_LIST_ID: &str = "subscriptions.email.marketing.list_suppressions.list_id";
const LIST_SUPPRESSION_REASON: &str = "subscriptions.email.marketing.list_suppressions.reason";
const LIST_SUPPRESSION_TIMESTAMP: &str =
    "subscriptions.email.marketing.list_suppressions.timestamp";

/// A suppression reason as filters name it.
fn suppression_reason(value: &str) -> Result<SuppressionReason, ApiError> {
    SuppressionReason::ALL
        .into_iter()
        .find(|reason| reason.as_str() == value)
        .ok_or_else(|| {
            ApiError::invalid_parameter(
                "filter",
                format!(
                    "'{value}' is not a suppression reason; one of: {}",
                    SuppressionReason::ALL
                        .map(SuppressionReason::as_str)
                        .join(", ")
                ),
            )
        })
}

const LIST: QuerySpec = QuerySpec {
    filters: &[
        FieldRule {
            field: "id",
            ops: IDENTIFIER_OPS,
        },
        FieldRule {
            field: "email",
            ops: IDENTIFIER_OPS,
        },
        FieldRule {
            field: "phone_number",
            ops: IDENTIFIER_OPS,
        },
        FieldRule {
            field: "external_id",
            ops: IDENTIFIER_OPS,
        },
        FieldRule {
            field: "created",
            ops: TIME_OPS,
        },
        FieldRule {
            field: "updated",
            ops: TIME_OPS,
        },
        FieldRule {
            field: SUPPRESSION_REASON,
            ops: IDENTIFIER_OPS,
        },
        FieldRule {
            field: SUPPRESSION_TIMESTAMP,
            ops: TIME_OPS,
        },
        FieldRule {
            field: LIST_SUPPRESSION_LIST_ID,
            ops: IDENTIFIER_OPS,
        },
        FieldRule {
            field: LIST_SUPPRESSION_REASON,
            ops: IDENTIFIER_OPS,
        },
        FieldRule {
            field: LIST_SUPPRESSION_TIMESTAMP,
            ops: TIME_OPS,
        },
    ],
    sorts: &["id", "-id", "created", "-created", "updated", "-updated"],
    includes: &[],
    fieldsets: FIELDSETS,
    page_size: Some((20, 100)),
    paged: true,
};

const ONE: QuerySpec = QuerySpec::single(&[], FIELDSETS);

#[tracing::instrument(skip_all, fields(key = %caller.key_name))]
pub async fn list(
    caller: Caller<ProfilesRead>,
    base: BaseUrl,
    mut query: RawQuery,
) -> Result<JsonApi, ApiError> {
    let with_subscriptions = subscriptions_asked(&mut query)?;
    let params = Params::parse(query, &LIST)?;
    let mut q = ProfileQuery {
        sort: sort(params.sort),
        page_size: params.page_size,
        cursor: params.cursor.clone(),
        ..ProfileQuery::default()
    };
    for condition in &params.filter {
        let bound = |condition: &super::filter::Condition| -> Result<TimeBound, ApiError> {
            Ok(TimeBound {
                cmp: match condition.op {
                    Op::GreaterThan => Cmp::Gt,
                    Op::GreaterOrEqual => Cmp::Ge,
                    Op::LessThan => Cmp::Lt,
                    _ => Cmp::Le,
                },
                at: condition.instant(&TimeZone::UTC, false)?,
            })
        };
        let field = match condition.field.as_str() {
            "id" => ProfileField::Id,
            "email" => ProfileField::Email,
            "phone_number" => ProfileField::PhoneNumber,
            "external_id" => ProfileField::ExternalId,
            "created" => {
                q.created.push(bound(condition)?);
                continue;
            }
            "updated" => {
                q.updated.push(bound(condition)?);
                continue;
            }
            SUPPRESSION_REASON => {
                for value in condition.strings()? {
                    q.suppression_reasons.push(suppression_reason(&value)?);
                }
                continue;
            }
            SUPPRESSION_TIMESTAMP => {
                q.suppressed_at.push(bound(condition)?);
                continue;
            }
            _ => {
                // A list suppression: none exists.
                q.list_suppressed = true;
                continue;
            }
        };
        q.any_of.push((field, condition.strings()?));
    }
    let page = caller.engage.list_profiles(q).await?;
    let mut data: Vec<Value> = Vec::with_capacity(page.items.len());
    for profile in &page.items {
        let mut resource = resource(profile, &base);
        if with_subscriptions {
            add_subscriptions(&caller, profile, &mut resource).await?;
        }
        data.push(params.render(&resource));
    }
    Ok(JsonApi(
        StatusCode::OK,
        params.collection(&base, "profiles", data, page.next_cursor.as_deref()),
    ))
}

#[tracing::instrument(skip_all, fields(key = %caller.key_name))]
pub async fn get(
    caller: Caller<ProfilesRead>,
    base: BaseUrl,
    Path(id): Path<String>,
    mut query: RawQuery,
) -> Result<JsonApi, ApiError> {
    let with_subscriptions = subscriptions_asked(&mut query)?;
    let params = Params::parse(query, &ONE)?;
    let profile = caller.engage.get_profile(&ProfileId(id)).await?;
    if !with_subscriptions {
        return Ok(document(StatusCode::OK, &profile, &base, &params));
    }
    let mut resource = resource(&profile, &base);
    add_subscriptions(&caller, &profile, &mut resource).await?;
    Ok(params.document(StatusCode::OK, &resource))
}

/// Whether `additional-fields[profile]=subscriptions` was asked for (taken off the query).
fn subscriptions_asked(query: &mut RawQuery) -> Result<bool, ApiError> {
    Ok(!super::lists::additional_fields(query, "profile", &["subscriptions"])?.is_empty())
}

/// Adds `subscriptions` (email marketing consent) to a profile resource.
async fn add_subscriptions<R>(
    caller: &Caller<R>,
    profile: &Profile,
    resource: &mut Resource,
) -> Result<(), ApiError> {
    let consent = caller.engage.email_consent(&profile.id).await?;
    resource.attributes.insert(
        "subscriptions".into(),
        super::lists::subscriptions_json(&consent),
    );
    Ok(())
}

/// `POST /api/profiles`: 201, or 409 `duplicate_profile` naming the profile that has one of
/// the identifiers.
#[tracing::instrument(skip_all, fields(key = %caller.key_name))]
pub async fn create(
    caller: Caller<ProfilesWrite>,
    origin: RequestOrigin,
    base: BaseUrl,
    query: RawQuery,
    Body(body): Body,
) -> Result<JsonApi, ApiError> {
    let params = Params::parse(query, &ONE)?;
    let root = Obj::root(&body)?;
    root.only(&["data"])?;
    let data = root.required_object("data")?;
    data.only(&["type", "attributes"])?;
    data.expect_type("profile")?;
    let attributes = data.required_object("attributes")?;
    let input = read_attributes(&attributes, Shape::Create)?;
    require_identifier(&input, &data)?;
    let profile = origin.engage(&caller.engage).create_profile(input).await?;
    Ok(document(StatusCode::CREATED, &profile, &base, &params))
}

/// `PATCH /api/profiles/{id}`: omitted attributes are unchanged, `null` clears one.
#[tracing::instrument(skip_all, fields(key = %caller.key_name))]
pub async fn update(
    caller: Caller<ProfilesWrite>,
    origin: RequestOrigin,
    base: BaseUrl,
    Path(id): Path<String>,
    query: RawQuery,
    Body(body): Body,
) -> Result<JsonApi, ApiError> {
    let params = Params::parse(query, &ONE)?;
    let root = Obj::root(&body)?;
    root.only(&["data"])?;
    let data = root.required_object("data")?;
    data.only(&["type", "id", "attributes", "meta"])?;
    data.expect_type("profile")?;
    let body_id = data.required_string("id")?;
    if body_id != id {
        return Err(ApiError::conflict(format!(
            "the body's id '{body_id}' does not match the path's '{id}'"
        )));
    }
    let mut input = match data.object("attributes")? {
        Some(attributes) => read_attributes(&attributes, Shape::Create)?,
        None => ProfileInput::default(),
    };
    if let Some(meta) = data.object("meta")? {
        read_meta(&meta, &mut input)?;
    }
    let profile = origin
        .engage(&caller.engage)
        .update_profile(&ProfileId(id), input)
        .await?;
    Ok(document(StatusCode::OK, &profile, &base, &params))
}

/// `POST /api/profile-import`: the upsert. 201 when it created the profile, 200 when it
/// updated one.
#[tracing::instrument(skip_all, fields(key = %caller.key_name))]
pub async fn import(
    caller: Caller<ProfilesWrite>,
    origin: RequestOrigin,
    base: BaseUrl,
    query: RawQuery,
    Body(body): Body,
) -> Result<JsonApi, ApiError> {
    let params = Params::parse(query, &ONE)?;
    let root = Obj::root(&body)?;
    root.only(&["data"])?;
    let data = root.required_object("data")?;
    data.only(&["type", "id", "attributes", "meta"])?;
    data.expect_type("profile")?;
    let attributes = data.required_object("attributes")?;
    let mut input = read_attributes(&attributes, Shape::Import)?;
    if let Some(meta) = data.object("meta")? {
        read_meta(&meta, &mut input)?;
    }
    if let Patch::Set(id) = data.string("id")? {
        input.id = Some(ProfileId(id));
    }
    require_identifier(&input, &data)?;
    let (profile, created) = origin.engage(&caller.engage).import_profile(input).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(document(status, &profile, &base, &params))
}

/// `POST /api/profile-merge`: `data.id` is the profile that stays; the profiles in
/// `relationships.profiles.data` are merged into it. 201.
#[tracing::instrument(skip_all, fields(key = %caller.key_name))]
pub async fn merge(
    caller: Caller<ProfilesWrite>,
    base: BaseUrl,
    query: RawQuery,
    Body(body): Body,
) -> Result<JsonApi, ApiError> {
    // Only validated: the answer names the survivor without attributes.
    Params::parse(query, &ONE)?;
    let root = Obj::root(&body)?;
    root.only(&["data"])?;
    let data = root.required_object("data")?;
    data.only(&["type", "id", "relationships"])?;
    data.expect_type("profile-merge")?;
    let into = ProfileId(data.required_string("id")?);
    let relationships = data.required_object("relationships")?;
    relationships.only(&["profiles"])?;
    let profiles = relationships.required_object("profiles")?;
    profiles.only(&["data"])?;
    let items = profiles.array("data")?.map(Vec::as_slice).unwrap_or(&[]);
    let mut from = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let linkage = profiles.element("data", i, item)?;
        linkage.only(&["type", "id"])?;
        linkage.expect_type("profile")?;
        let id = ProfileId(linkage.required_string("id")?);
        if id == into {
            return Err(ApiError::invalid_at(
                linkage.pointer("id"),
                "a profile cannot be merged into itself",
            ));
        }
        from.push(id);
    }
    if from.is_empty() {
        return Err(ApiError::invalid_at(
            profiles.pointer("data"),
            "name at least one profile to merge",
        ));
    }
    let survivor = caller.engage.merge_profiles(&into, &from).await?;
    let self_link = base.link(&format!("profiles/{}", survivor.id));
    Ok(JsonApi(
        StatusCode::CREATED,
        json!({
            "data": { "type": "profile", "id": survivor.id, "links": { "self": self_link } },
            "links": { "self": base.link("profile-merge") },
        }),
    ))
}

fn document(status: StatusCode, profile: &Profile, base: &BaseUrl, params: &Params) -> JsonApi {
    params.document(status, &resource(profile, base))
}

fn require_identifier(input: &ProfileInput, data: &Obj<'_>) -> Result<(), ApiError> {
    if input.id.is_none()
        && input.email.is_none()
        && input.phone_number.is_none()
        && input.external_id.is_none()
    {
        return Err(ApiError::invalid_at(
            data.pointer("attributes"),
            "a profile needs an email, phone_number or external_id",
        ));
    }
    Ok(())
}

fn sort(given: Option<&str>) -> ProfileSort {
    let Some(given) = given else {
        return ProfileSort::default();
    };
    let descending = given.starts_with('-');
    let field = match given.trim_start_matches('-') {
        "created" => ProfileSortField::Created,
        "updated" => ProfileSortField::Updated,
        _ => ProfileSortField::Id,
    };
    ProfileSort { field, descending }
}

/// Which attributes a body may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `POST /api/profiles` and `PATCH /api/profiles/{id}`.
    Create,
    /// `POST /api/profile-import` (adds `_kx`).
    Import,
    /// The profile of an event (adds `anonymous_id`, `_kx` and `meta`).
    Event,
}

/// Reads profile attributes into a write: a value sets, `null` clears (`unset`), absence
/// leaves unchanged; `properties` are merged.
pub fn read_attributes(attributes: &Obj<'_>, shape: Shape) -> Result<ProfileInput, ApiError> {
    let mut known: Vec<&str> = STRING_ATTRIBUTES.to_vec();
    known.extend(["location", "properties"]);
    match shape {
        Shape::Create => {}
        Shape::Import => known.push("_kx"),
        Shape::Event => known.extend(["anonymous_id", "_kx", "meta"]),
    }
    attributes.only(&known)?;
    if let Patch::Set(_) = attributes.string("_kx")? {
        return Err(ApiError::invalid_at(
            attributes.pointer("_kx"),
            "'_kx' (Klaviyo's exchange id) is not supported; identify the profile by email, phone_number or external_id",
        ));
    }
    let mut input = ProfileInput::default();
    for name in STRING_ATTRIBUTES {
        match attributes.string(name)? {
            // An email is checked where it comes in, so the error points at it.
            Patch::Set(value) if *name == "email" => {
                let email = Email::parse(&value).map_err(|err| {
                    ApiError::invalid_at(attributes.pointer("email"), format!("'email' {err}"))
                })?;
                input.email = Some(email.into_string());
            }
            Patch::Set(value) => *string_slot(&mut input, name) = Some(value),
            Patch::Null => input.unset.push((*name).to_owned()),
            Patch::Absent => {}
        }
    }
    if shape == Shape::Event {
        input.anonymous_id = attributes.string("anonymous_id")?.into_option();
    }
    match attributes.map.get("location") {
        None => {}
        Some(Value::Null) => input.unset.extend(
            LOCATION_STRINGS
                .iter()
                .chain(&["latitude", "longitude"])
                .map(|name| format!("location.{name}")),
        ),
        Some(_) => {
            let location = attributes.required_object("location")?;
            let mut known: Vec<&str> = LOCATION_STRINGS.to_vec();
            known.extend(["latitude", "longitude"]);
            location.only(&known)?;
            for name in LOCATION_STRINGS {
                match location.string(name)? {
                    Patch::Set(value) => *location_slot(&mut input, name) = Some(value),
                    Patch::Null => input.unset.push(format!("location.{name}")),
                    Patch::Absent => {}
                }
            }
            for name in ["latitude", "longitude"] {
                match coordinate(&location, name)? {
                    Patch::Set(value) => {
                        if name == "latitude" {
                            input.location.latitude = Some(value);
                        } else {
                            input.location.longitude = Some(value);
                        }
                    }
                    Patch::Null => input.unset.push(format!("location.{name}")),
                    Patch::Absent => {}
                }
            }
        }
    }
    match attributes.map.get("properties") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => input.properties = map.clone(),
        Some(_) => {
            return Err(ApiError::invalid_at(
                attributes.pointer("properties"),
                "'properties' must be an object",
            ))
        }
    }
    if shape == Shape::Event {
        if let Some(meta) = attributes.object("meta")? {
            read_meta(&meta, &mut input)?;
        }
    }
    Ok(input)
}

/// `meta.patch_properties.unset` (a key or a list of keys). `append`/`unappend` and
/// `patch_identifiers` are refused: nothing here can apply them yet.
pub fn read_meta(meta: &Obj<'_>, input: &mut ProfileInput) -> Result<(), ApiError> {
    meta.only(&["patch_properties", "patch_identifiers"])?;
    if meta.object("patch_identifiers")?.is_some() {
        return Err(ApiError::invalid_at(
            meta.pointer("patch_identifiers"),
            "'patch_identifiers' is not supported",
        ));
    }
    let Some(patch) = meta.object("patch_properties")? else {
        return Ok(());
    };
    patch.only(&["append", "unappend", "unset"])?;
    for op in ["append", "unappend"] {
        if patch.object(op)?.is_some_and(|o| !o.map.is_empty()) {
            return Err(ApiError::invalid_at(
                patch.pointer(op),
                format!(
                    "'patch_properties.{op}' is not supported; set the whole list in 'properties'"
                ),
            ));
        }
    }
    match patch.map.get("unset") {
        None | Some(Value::Null) => {}
        Some(Value::String(key)) => input.unset.push(key.clone()),
        Some(Value::Array(keys)) => {
            for (i, key) in keys.iter().enumerate() {
                match key {
                    Value::String(key) => input.unset.push(key.clone()),
                    _ => {
                        return Err(ApiError::invalid_at(
                            format!("{}/{i}", patch.pointer("unset")),
                            "property names to unset must be strings",
                        ))
                    }
                }
            }
        }
        Some(_) => {
            return Err(ApiError::invalid_at(
                patch.pointer("unset"),
                "'unset' must be a property name or a list of them",
            ))
        }
    }
    Ok(())
}

/// A latitude or longitude: a number, or a string holding one (Klaviyo accepts both).
fn coordinate(location: &Obj<'_>, name: &str) -> Result<Patch<f64>, ApiError> {
    if let Some(Value::String(text)) = location.map.get(name) {
        return text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
            .map(Patch::Set)
            .ok_or_else(|| {
                ApiError::invalid_at(location.pointer(name), format!("'{name}' must be a number"))
            });
    }
    location.number(name)
}

fn string_slot<'a>(input: &'a mut ProfileInput, name: &str) -> &'a mut Option<String> {
    match name {
        "email" => &mut input.email,
        "phone_number" => &mut input.phone_number,
        "external_id" => &mut input.external_id,
        "first_name" => &mut input.first_name,
        "last_name" => &mut input.last_name,
        "organization" => &mut input.organization,
        "locale" => &mut input.locale,
        "title" => &mut input.title,
        _ => &mut input.image,
    }
}

fn location_slot<'a>(input: &'a mut ProfileInput, name: &str) -> &'a mut Option<String> {
    let location = &mut input.location;
    match name {
        "address1" => &mut location.address1,
        "address2" => &mut location.address2,
        "city" => &mut location.city,
        "country" => &mut location.country,
        "region" => &mut location.region,
        "zip" => &mut location.zip,
        "timezone" => &mut location.timezone,
        _ => &mut location.ip,
    }
}

/// A profile as a JSON:API resource. Unset attributes are `null`, as Klaviyo writes them.
pub fn resource(profile: &Profile, base: &BaseUrl) -> Resource {
    let location = &profile.location;
    let mut attributes = Map::new();
    for (name, value) in [
        ("email", &profile.email),
        ("phone_number", &profile.phone_number),
        ("external_id", &profile.external_id),
        ("first_name", &profile.first_name),
        ("last_name", &profile.last_name),
        ("organization", &profile.organization),
        ("locale", &profile.locale),
        ("title", &profile.title),
        ("image", &profile.image),
    ] {
        attributes.insert(name.into(), json!(value));
    }
    attributes.insert("created".into(), json!(datetime(profile.created)));
    attributes.insert("updated".into(), json!(datetime(profile.updated)));
    attributes.insert(
        "last_event_date".into(),
        json!(profile.last_event_date.map(datetime)),
    );
    attributes.insert(
        "location".into(),
        json!({
            "address1": location.address1,
            "address2": location.address2,
            "city": location.city,
            "country": location.country,
            "latitude": location.latitude,
            "longitude": location.longitude,
            "region": location.region,
            "zip": location.zip,
            "timezone": location.timezone,
            "ip": location.ip,
        }),
    );
    attributes.insert(
        "properties".into(),
        Value::Object(profile.properties.clone()),
    );
    Resource {
        kind: "profile",
        id: profile.id.to_string(),
        attributes,
        relationships: None,
        self_link: base.link(&format!("profiles/{}", profile.id)),
    }
}
