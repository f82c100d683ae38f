//! `/admin/v1/api-keys`: private keys for this API. Only a digest is stored, so a key is
//! shown once, in the answer to the request that created it. A key holds scopes
//! (`{"name": "sdk", "scopes": ["profiles:read", "events:write"]}`); without `scopes` it gets
//! `full` (every Klaviyo scope) and not `admin`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use jiff::Timestamp;
use serde::Serialize;
use signalbox_core::{ApiKeyInfo, Scopes};

use super::auth::AdminKey;
use super::error::AdminError;
use super::extract::{AdminPath, JsonObject};
use super::view::List;
use crate::app::AppState;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyView {
    pub id: i64,
    pub name: String,
    /// The first characters of the key (`pk_abcd…`).
    pub prefix: String,
    pub created_at: Timestamp,
    /// Scope names, e.g. `["full", "admin"]` or `["profiles:read"]`.
    pub scopes: Scopes,
}

impl From<ApiKeyInfo> for ApiKeyView {
    fn from(info: ApiKeyInfo) -> Self {
        ApiKeyView {
            id: info.id,
            name: info.name,
            prefix: info.prefix,
            created_at: info.created_at,
            scopes: info.scopes,
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyCreated {
    pub api_key: ApiKeyView,
    /// The key in full, shown this once.
    pub key: String,
}

pub async fn list(
    _key: AdminKey,
    State(app): State<AppState>,
) -> Result<Json<List<ApiKeyView>>, AdminError> {
    let keys = app.store.list_api_keys().await?;
    Ok(Json(List {
        data: keys.into_iter().map(ApiKeyView::from).collect(),
    }))
}

pub async fn create(
    key: AdminKey,
    State(app): State<AppState>,
    mut body: JsonObject,
) -> Result<(StatusCode, Json<ApiKeyCreated>), AdminError> {
    let name = body.required_string("name")?;
    let scopes = match body.strings("scopes")? {
        None => Scopes::default_for_new_key(),
        Some(names) => Scopes::parse(names.iter().map(String::as_str))
            .map_err(|err| AdminError::invalid("scopes", err.to_string()))?,
    };
    body.finish()?;
    let (info, new_key) = app.store.create_api_key(&name, &scopes).await?;
    tracing::info!(api_key = key.name(), created = name, scopes = %info.scopes, "api key created");
    Ok((
        StatusCode::CREATED,
        Json(ApiKeyCreated {
            api_key: info.into(),
            key: new_key.expose().to_owned(),
        }),
    ))
}

/// Deletes a key; requests carrying it are refused from then on (the caller's own key too).
pub async fn delete(
    key: AdminKey,
    State(app): State<AppState>,
    AdminPath(name): AdminPath<String>,
) -> Result<StatusCode, AdminError> {
    app.store.delete_api_key(&name).await?;
    app.private_keys.forget_all();
    tracing::info!(api_key = key.name(), deleted = name, "api key deleted");
    Ok(StatusCode::NO_CONTENT)
}
