//! `/admin/v1/lists/{id}/pending` and `/admin/v1/lists/{id}/import`.
//!
//! - `GET …/pending?limit=&after=`: profiles waiting to confirm a double opt-in, each with its
//!   signed confirmation link (`confirmUrl`, `/c/{token}`) and unsubscribe link, until a
//!   mailer sends them. `{"data":[{"profileId","email","joined","confirmUrl",
//!   "unsubscribeUrl"}],"next"}`.
//! - `POST …/import` `{"profiles":[{"email","firstName","lastName"}]}` (at most 1000): each
//!   profile is created or updated by email and added to the list as a member (consent does
//!   not change). Answers `{"received": n, "added": n}`. The CLI's `list import` uses it.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use signalbox_core::Email;
use signalbox_engage::{EngageError, ImportRow, ListId, MemberQuery, MemberStatus};
use signalbox_mail::LinkKind;

use super::auth::AdminKey;
use super::error::AdminError;
use super::extract::{parse_limit, AdminPath, AdminQuery, JsonObject};
use crate::app::AppState;

/// Profiles one import request may carry.
pub const MAX_IMPORT: usize = 1000;

#[derive(Debug, Deserialize)]
pub struct PendingQuery {
    limit: Option<String>,
    after: Option<String>,
}

fn engage_error(err: EngageError) -> AdminError {
    match err {
        EngageError::NotFound { what } => AdminError::NotFound { what, field: None },
        EngageError::Invalid { field, reason } => AdminError::invalid(field, reason),
        EngageError::Conflict { reason } => AdminError::Conflict { what: reason },
        EngageError::Overloaded => AdminError::Overloaded,
        EngageError::Unavailable => AdminError::Unavailable,
        EngageError::DuplicateProfile { id } => AdminError::Conflict {
            what: format!("profile {id}"),
        },
        EngageError::Internal(detail) => AdminError::Internal(detail),
    }
}

/// `GET /admin/v1/lists/{id}/pending`.
pub async fn pending(
    _key: AdminKey,
    State(app): State<AppState>,
    AdminPath(id): AdminPath<String>,
    AdminQuery(query): AdminQuery<PendingQuery>,
) -> Result<Json<Value>, AdminError> {
    let limit = parse_limit(query.limit.as_deref())?;
    let engage = super::engine(&app)?.engage.clone();
    let page = engage
        .list_members(MemberQuery {
            list_id: ListId(id.clone()),
            status: Some(MemberStatus::Pending),
            page_size: limit,
            cursor: query.after.filter(|a| !a.is_empty()),
            ..MemberQuery::default()
        })
        .await
        .map_err(|err| match err {
            EngageError::Invalid { .. } => {
                AdminError::invalid("after", "not a cursor of this listing")
            }
            other => engage_error(other),
        })?;
    let data: Vec<Value> = page
        .items
        .iter()
        .map(|member| {
            let profile = member.profile.id.as_str();
            json!({
                "profileId": profile,
                "email": member.profile.email,
                "joined": member.joined.to_string(),
                "confirmUrl": app.links.url(LinkKind::Confirm, profile, &id, None),
                "unsubscribeUrl": app.links.url(LinkKind::Unsubscribe, profile, &id, None),
            })
        })
        .collect();
    Ok(Json(json!({"data": data, "next": page.next_cursor})))
}

/// `POST /admin/v1/lists/{id}/import`.
pub async fn import(
    key: AdminKey,
    State(app): State<AppState>,
    AdminPath(id): AdminPath<String>,
    body: JsonObject,
) -> Result<Json<Value>, AdminError> {
    let mut map = body.into_map();
    let profiles = match map.remove("profiles") {
        Some(Value::Array(items)) => items,
        Some(_) => return Err(AdminError::invalid("profiles", "must be an array")),
        None => return Err(AdminError::invalid("profiles", "is required")),
    };
    if let Some(field) = map.keys().next() {
        return Err(AdminError::invalid(field.clone(), "unknown field"));
    }
    if profiles.len() > MAX_IMPORT {
        return Err(AdminError::invalid(
            "profiles",
            format!("at most {MAX_IMPORT} profiles per request"),
        ));
    }
    let mut rows = Vec::with_capacity(profiles.len());
    for (i, item) in profiles.iter().enumerate() {
        let Value::Object(fields) = item else {
            return Err(AdminError::invalid(
                format!("profiles.{i}"),
                "must be an object",
            ));
        };
        let text = |name: &str| -> Result<Option<String>, AdminError> {
            match fields.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.trim().to_owned()).filter(|s| !s.is_empty())),
                Some(_) => Err(AdminError::invalid(
                    format!("profiles.{i}.{name}"),
                    "must be a string",
                )),
            }
        };
        if let Some(unknown) = fields
            .keys()
            .find(|k| !["email", "firstName", "lastName"].contains(&k.as_str()))
        {
            return Err(AdminError::invalid(
                format!("profiles.{i}.{unknown}"),
                "unknown field",
            ));
        }
        let email = text("email")?
            .ok_or_else(|| AdminError::invalid(format!("profiles.{i}.email"), "is required"))?;
        let email = Email::parse(&email)
            .map_err(|err| AdminError::invalid(format!("profiles.{i}.email"), err.to_string()))?;
        rows.push(ImportRow {
            email,
            first_name: text("firstName")?,
            last_name: text("lastName")?,
        });
    }
    let received = rows.len();
    let engage = super::engine(&app)?.engage.clone();
    let added = engage
        .import_list_members(&ListId(id.clone()), rows)
        .await
        .map_err(engage_error)?;
    tracing::info!(
        api_key = key.name(),
        list = id,
        received,
        added,
        "list import"
    );
    Ok(Json(json!({"received": received, "added": added})))
}
