//! `/admin/v1/sources/{name}/settings`: the source's engage destination settings
//! (`enabled`, `enforceEmail`, `listId`, `confirmOptin`, `sendAnonymous`, `useSegmentSpec`).
//!
//! A running pipeline re-reads settings within a second, so a change applies to the calls
//! that arrive after it.

use axum::extract::State;
use axum::Json;
use serde_json::Value;
use signalbox_engage::DestinationSettings;

use super::auth::AdminKey;
use super::error::AdminError;
use super::extract::{AdminPath, JsonObject};
use crate::app::AppState;

/// `GET`: the settings, defaults filled in.
pub async fn get(
    _key: AdminKey,
    State(app): State<AppState>,
    AdminPath(name): AdminPath<String>,
) -> Result<Json<Value>, AdminError> {
    let stored = app.store.source_settings(&name).await?;
    Ok(Json(DestinationSettings::from_json(&stored).to_json()))
}

/// `PATCH`: changes the keys given (`{"enforceEmail": false, "listId": "L1"}`; `listId: null`
/// clears it) and answers the settings now in force. A bad key or value changes nothing.
pub async fn patch(
    key: AdminKey,
    State(app): State<AppState>,
    AdminPath(name): AdminPath<String>,
    body: JsonObject,
) -> Result<Json<Value>, AdminError> {
    let stored = app.store.source_settings(&name).await?;
    let mut settings = DestinationSettings::from_json(&stored);
    settings
        .patch(&body.into_map())
        .map_err(|(field, reason)| AdminError::invalid(field, reason))?;
    app.store
        .set_source_settings(&name, settings.merged_into(stored))
        .await?;
    tracing::info!(
        api_key = key.name(),
        source = name,
        "source settings changed"
    );
    Ok(Json(settings.to_json()))
}
