//! `GET|POST /api/templates`, `GET|PATCH|DELETE /api/templates/{id}` and
//! `POST /api/template-render`, in Klaviyo's shapes (`name`, `editor_type: CODE`, `html`,
//! `text`). Templates are kept by [`crate::templates::TemplateStore`].
//!
//! Render takes Klaviyo's `context`; as a Signalbox extension, `context.profile_id` and
//! `context.event_id` name a real profile and event whose fields fill `person` and `event`
//! (context keys win). Variables the template used and the context lacked are listed in the
//! response's top-level `meta.undefined_variables`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{json, Map, Value};
use signalbox_engage::{EventId, ProfileId};

use super::auth::Caller;
use super::engine;
use super::error::ApiError;
use super::filter::{FieldRule, Op};
use super::jsonapi::{
    datetime, BaseUrl, JsonApi, Obj, Params, Patch, QuerySpec, RawQuery, Resource,
};
use super::scopes::{TemplatesRead, TemplatesWrite};
use super::Body;
use crate::app::AppState;
use crate::templates::{
    self, PreviewRequest, Template, TemplateChange, TemplateFilter, TemplateSort, TemplateStore,
    EDITOR_CODE,
};

pub const FIELDS: &[&str] = &[
    "name",
    "editor_type",
    "html",
    "text",
    "amp",
    "created",
    "updated",
];

const LIST: QuerySpec = QuerySpec {
    filters: &[
        FieldRule {
            field: "id",
            ops: &[Op::Equals, Op::Any],
        },
        FieldRule {
            field: "name",
            ops: &[Op::Equals, Op::Any],
        },
    ],
    sorts: &[
        "created", "-created", "name", "-name", "updated", "-updated",
    ],
    includes: &[],
    fieldsets: &[("template", FIELDS)],
    page_size: None,
    paged: true,
};

const ONE: QuerySpec = QuerySpec::single(&[], &[("template", FIELDS)]);

#[tracing::instrument(skip_all, fields(key = %caller.key_name))]
pub async fn list(
    caller: Caller<TemplatesRead>,
    State(app): State<AppState>,
    base: BaseUrl,
    query: RawQuery,
) -> Result<JsonApi, ApiError> {
    let params = Params::parse(query, &LIST)?;
    let mut filter = TemplateFilter::default();
    for condition in &params.filter {
        let values = match condition.op {
            Op::Any => condition.strings()?,
            _ => vec![condition.string()?],
        };
        match condition.field.as_str() {
            "id" => filter.ids = Some(values),
            _ => match values.as_slice() {
                [one] => filter.name = Some(one.clone()),
                _ => filter.ids = Some(names_to_ids(&engine(&app)?.templates, values).await?),
            },
        }
    }
    let sort = match params.sort {
        Some("-created") => TemplateSort::CreatedDesc,
        Some("name") => TemplateSort::Name,
        Some("-name") => TemplateSort::NameDesc,
        Some("updated") => TemplateSort::Updated,
        Some("-updated") => TemplateSort::UpdatedDesc,
        _ => TemplateSort::Created,
    };
    let (page, next) = engine(&app)?
        .templates
        .list(&filter, sort, params.cursor.as_deref())
        .await?;
    let data = page.iter().map(|t| params.render(&resource(t, &base)));
    Ok(JsonApi(
        StatusCode::OK,
        params.collection(&base, "templates", data, next.as_deref()),
    ))
}

/// `any(name, [...])`: the ids of templates with one of these names.
async fn names_to_ids(store: &TemplateStore, names: Vec<String>) -> Result<Vec<String>, ApiError> {
    let mut ids = Vec::new();
    for name in names {
        let mut cursor = None;
        loop {
            let filter = TemplateFilter {
                ids: None,
                name: Some(name.clone()),
            };
            let (page, next) = store
                .list(&filter, TemplateSort::Created, cursor.as_deref())
                .await?;
            ids.extend(page.into_iter().map(|t| t.id));
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    Ok(ids)
}

#[tracing::instrument(skip_all, fields(key = %caller.key_name))]
pub async fn get(
    caller: Caller<TemplatesRead>,
    State(app): State<AppState>,
    base: BaseUrl,
    Path(id): Path<String>,
    query: RawQuery,
) -> Result<JsonApi, ApiError> {
    let params = Params::parse(query, &ONE)?;
    let template = engine(&app)?.templates.get(&id).await?;
    Ok(document(StatusCode::OK, &template, &base, &params))
}

#[tracing::instrument(skip_all, fields(key = %caller.key_name))]
pub async fn create(
    caller: Caller<TemplatesWrite>,
    State(app): State<AppState>,
    base: BaseUrl,
    query: RawQuery,
    Body(body): Body,
) -> Result<JsonApi, ApiError> {
    let params = Params::parse(query, &ONE)?;
    let root = Obj::root(&body)?;
    root.only(&["data"])?;
    let data = root.required_object("data")?;
    data.only(&["type", "attributes"])?;
    data.expect_type("template")?;
    let attributes = data.required_object("attributes")?;
    attributes.only(&["name", "editor_type", "html", "text", "amp", "definition"])?;
    let editor_type = attributes.required_string("editor_type")?;
    if editor_type != EDITOR_CODE {
        return Err(ApiError::invalid_at(
            attributes.pointer("editor_type"),
            format!(
                "editor_type '{editor_type}' is not supported; Signalbox stores CODE templates"
            ),
        ));
    }
    refuse_unsupported(&attributes)?;
    let change = TemplateChange {
        name: Some(attributes.required_string("name")?),
        html: Some(attributes.required_string("html")?),
        text: Some(attributes.string("text")?.into_option()),
    };
    let template = engine(&app)?
        .templates
        .create(change, caller.clock.now())
        .await?;
    Ok(document(StatusCode::CREATED, &template, &base, &params))
}

#[tracing::instrument(skip_all, fields(key = %caller.key_name))]
pub async fn update(
    caller: Caller<TemplatesWrite>,
    State(app): State<AppState>,
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
    data.expect_type("template")?;
    let body_id = data.required_string("id")?;
    if body_id != id {
        return Err(ApiError::conflict(format!(
            "the body's id '{body_id}' does not match the path's '{id}'"
        )));
    }
    let attributes = data.required_object("attributes")?;
    attributes.only(&["name", "html", "text", "amp", "definition"])?;
    refuse_unsupported(&attributes)?;
    let change = TemplateChange {
        name: attributes.string("name")?.into_option(),
        html: match attributes.string("html")? {
            Patch::Null => {
                return Err(ApiError::invalid_at(
                    attributes.pointer("html"),
                    "'html' cannot be cleared on a CODE template",
                ))
            }
            other => other.into_option(),
        },
        text: match attributes.string("text")? {
            Patch::Absent => None,
            Patch::Null => Some(None),
            Patch::Set(text) => Some(Some(text)),
        },
    };
    let template = engine(&app)?
        .templates
        .update(&id, change, caller.clock.now())
        .await?;
    Ok(document(StatusCode::OK, &template, &base, &params))
}

#[tracing::instrument(skip_all, fields(key = %caller.key_name))]
pub async fn delete(
    caller: Caller<TemplatesWrite>,
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    engine(&app)?.templates.delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/template-render`: `{"data":{"type":"template","id":…,"attributes":{"context":{…}}}}`.
#[tracing::instrument(skip_all, fields(key = %caller.key_name))]
pub async fn render(
    caller: Caller<TemplatesRead>,
    State(app): State<AppState>,
    base: BaseUrl,
    query: RawQuery,
    Body(body): Body,
) -> Result<JsonApi, ApiError> {
    let params = Params::parse(query, &ONE)?;
    let root = Obj::root(&body)?;
    root.only(&["data"])?;
    let data = root.required_object("data")?;
    data.only(&["type", "id", "attributes"])?;
    data.expect_type("template")?;
    let id = data.required_string("id")?;
    let attributes = data.required_object("attributes")?;
    attributes.only(&["context", "return_fields"])?;
    let context = attributes.required_object("context")?;
    let mut request = PreviewRequest {
        context: context.map.clone(),
        ..PreviewRequest::default()
    };
    request.profile_id = take_id(&mut request.context, &context, "profile_id")?.map(ProfileId);
    request.event_id = take_id(&mut request.context, &context, "event_id")?.map(EventId);
    let template = engine(&app)?.templates.get(&id).await?;
    let preview = templates::preview(Some(&caller.engage), &app.mail, &template, request).await?;
    let rendered = preview.result.map_err(|err| {
        ApiError::invalid_at(
            "/data/attributes/context",
            format!("the template failed on this context: {err}"),
        )
    })?;
    let mut attributes = resource(&template, &base).attributes;
    attributes.insert("html".into(), json!(rendered.html));
    attributes.insert("text".into(), json!(rendered.text));
    let resource = Resource {
        kind: "template",
        id: template.id.clone(),
        attributes,
        relationships: None,
        self_link: base.link(&format!("templates/{}", template.id)),
    };
    Ok(JsonApi(
        StatusCode::CREATED,
        json!({
            "data": params.render(&resource),
            "links": {"self": base.link("template-render")},
            "meta": {"undefined_variables": preview.undefined},
        }),
    ))
}

/// Removes a Signalbox extension key (`profile_id`, `event_id`) from the context.
fn take_id(
    context: &mut Map<String, Value>,
    obj: &Obj<'_>,
    key: &str,
) -> Result<Option<String>, ApiError> {
    match context.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(id)) if !id.trim().is_empty() => Ok(Some(id)),
        Some(_) => Err(ApiError::invalid_at(
            obj.pointer(key),
            format!("'{key}' must be an id"),
        )),
    }
}

/// AMP and drag-and-drop definitions are not stored: refused rather than dropped.
fn refuse_unsupported(attributes: &Obj<'_>) -> Result<(), ApiError> {
    for key in ["amp", "definition"] {
        if attributes.map.get(key).is_some_and(|v| !v.is_null()) {
            return Err(ApiError::invalid_at(
                attributes.pointer(key),
                format!("'{key}' is not supported; Signalbox stores CODE templates (html, text)"),
            ));
        }
    }
    Ok(())
}

fn document(status: StatusCode, template: &Template, base: &BaseUrl, params: &Params) -> JsonApi {
    params.document(status, &resource(template, base))
}

/// A template as a JSON:API resource.
pub fn resource(template: &Template, base: &BaseUrl) -> Resource {
    let mut attributes = Map::new();
    attributes.insert("name".into(), json!(template.name));
    attributes.insert("editor_type".into(), json!(template.editor_type));
    attributes.insert("html".into(), json!(template.html));
    attributes.insert("text".into(), json!(template.text));
    attributes.insert("amp".into(), Value::Null);
    attributes.insert("created".into(), json!(datetime(template.created)));
    attributes.insert("updated".into(), json!(datetime(template.updated)));
    Resource {
        kind: "template",
        id: template.id.clone(),
        attributes,
        relationships: None,
        self_link: base.link(&format!("templates/{}", template.id)),
    }
}
