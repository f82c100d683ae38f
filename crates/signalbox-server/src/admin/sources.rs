//! `/admin/v1/sources`: create, list, rotate keys, disable, enable, delete.
//!
//! A write key is shown in full only in the answer to the request that created it (create,
//! rotate-key); listings show it redacted.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use signalbox_core::{Source, SourceId, SourceStatus, WriteKey};

use super::auth::AdminKey;
use super::error::AdminError;
use super::extract::{parse_duration, AdminPath, JsonObject};
use super::view::List;
use crate::app::AppState;

/// How long a rotated-out key keeps working when the request names no grace.
const DEFAULT_GRACE: SignedDuration = SignedDuration::from_hours(24);

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceView {
    pub id: SourceId,
    /// The slug (URLs, the CLI).
    pub name: String,
    /// The name a person gave it.
    pub display_name: String,
    pub status: SourceStatus,
    pub created_at: Timestamp,
    /// The current write key, redacted.
    pub write_key: String,
    /// Older keys still accepted (inside their grace period).
    pub keys_in_grace: u32,
}

impl From<Source> for SourceView {
    fn from(source: Source) -> Self {
        SourceView {
            id: source.id,
            name: source.name,
            display_name: source.display_name,
            status: source.status,
            created_at: source.created_at,
            write_key: source.write_key,
            keys_in_grace: source.keys_in_grace,
        }
    }
}

/// A source with its new write key in full, shown this once.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceWithKey {
    pub source: SourceView,
    pub write_key: String,
}

impl SourceWithKey {
    fn new(source: Source, key: &WriteKey) -> SourceWithKey {
        SourceWithKey {
            source: source.into(),
            write_key: key.expose().to_owned(),
        }
    }
}

pub async fn list(
    _key: AdminKey,
    State(app): State<AppState>,
) -> Result<Json<List<SourceView>>, AdminError> {
    let sources = app.store.list_sources().await?;
    Ok(Json(List {
        data: sources.into_iter().map(SourceView::from).collect(),
    }))
}

pub async fn get(
    _key: AdminKey,
    State(app): State<AppState>,
    AdminPath(name): AdminPath<String>,
) -> Result<Json<SourceView>, AdminError> {
    Ok(Json(app.store.source_by_name(&name).await?.into()))
}

pub async fn create(
    key: AdminKey,
    State(app): State<AppState>,
    mut body: JsonObject,
) -> Result<(StatusCode, Json<SourceWithKey>), AdminError> {
    let name = body.required_string("name")?;
    body.finish()?;
    let (source, write_key) = app.store.create_source(&name).await?;
    tracing::info!(api_key = key.name(), source = name, "source created");
    Ok((
        StatusCode::CREATED,
        Json(SourceWithKey::new(source, &write_key)),
    ))
}

/// Issues a new key; the older ones keep working for `grace` (default 24h, `0s` ends them
/// now).
pub async fn rotate_key(
    key: AdminKey,
    State(app): State<AppState>,
    AdminPath(name): AdminPath<String>,
    mut body: JsonObject,
) -> Result<Json<SourceWithKey>, AdminError> {
    let grace = match body.string("grace")? {
        Some(text) => parse_duration("grace", &text)?,
        None => DEFAULT_GRACE,
    };
    body.finish()?;
    let write_key = app.store.rotate_write_key(&name, grace).await?;
    tracing::info!(api_key = key.name(), source = name, grace = %grace, "write key rotated");
    let source = app.store.source_by_name(&name).await?;
    Ok(Json(SourceWithKey::new(source, &write_key)))
}

pub async fn disable(
    key: AdminKey,
    state: State<AppState>,
    name: AdminPath<String>,
) -> Result<Json<SourceView>, AdminError> {
    set_status(key, state, name, SourceStatus::Disabled).await
}

pub async fn enable(
    key: AdminKey,
    state: State<AppState>,
    name: AdminPath<String>,
) -> Result<Json<SourceView>, AdminError> {
    set_status(key, state, name, SourceStatus::Enabled).await
}

async fn set_status(
    key: AdminKey,
    State(app): State<AppState>,
    AdminPath(name): AdminPath<String>,
    status: SourceStatus,
) -> Result<Json<SourceView>, AdminError> {
    app.store.set_source_status(&name, status).await?;
    tracing::info!(
        api_key = key.name(),
        source = name,
        status = status.as_str(),
        "source status set"
    );
    Ok(Json(app.store.source_by_name(&name).await?.into()))
}

pub async fn delete(
    key: AdminKey,
    State(app): State<AppState>,
    AdminPath(name): AdminPath<String>,
) -> Result<StatusCode, AdminError> {
    app.store.delete_source(&name).await?;
    tracing::info!(api_key = key.name(), source = name, "source deleted");
    Ok(StatusCode::NO_CONTENT)
}
