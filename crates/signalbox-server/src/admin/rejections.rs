//! `/admin/v1/rejections`: messages refused at ingest, with why and what was sent.

use axum::extract::State;
use axum::Json;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use signalbox_core::{SourceId, StoredRejection};
use signalbox_store::RejectionQuery;

use super::auth::AdminKey;
use super::error::AdminError;
use super::extract::{parse_cursor, parse_limit, AdminQuery};
use super::view::{source_filter, Page, Payload, SourceNames};
use crate::app::AppState;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RejectionView {
    pub id: i64,
    pub source: Option<String>,
    pub source_id: SourceId,
    /// Why, as a stable name (`missing_event`, `invalid_timestamp`, …).
    pub code: String,
    pub message: String,
    pub received_at: Timestamp,
    /// The message as received: JSON when it parses, else the (possibly truncated) text.
    pub payload: Payload,
}

impl RejectionView {
    fn new(rejection: StoredRejection, names: &SourceNames) -> RejectionView {
        RejectionView {
            id: rejection.id,
            source: names.get(rejection.source_id),
            source_id: rejection.source_id,
            code: rejection.code,
            message: rejection.message,
            received_at: rejection.received_at,
            payload: Payload::new(rejection.payload),
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct ListParams {
    source: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

/// `GET /admin/v1/rejections?source=NAME&after=ID&limit=N`, oldest first.
pub async fn list(
    _key: AdminKey,
    State(app): State<AppState>,
    AdminQuery(params): AdminQuery<ListParams>,
) -> Result<Json<Page<RejectionView>>, AdminError> {
    let after_id = parse_cursor("after", params.after.as_deref())?;
    let limit = parse_limit(params.limit.as_deref())?;
    let source_id = source_filter(app.store.as_ref(), params.source.as_deref()).await?;
    let rejections = app
        .store
        .read_rejections(RejectionQuery {
            after_id,
            source_id,
            limit,
        })
        .await?;
    let names = SourceNames::load(app.store.as_ref()).await?;
    let views = rejections
        .into_iter()
        .map(|rejection| RejectionView::new(rejection, &names))
        .collect();
    Ok(Json(Page::new(views, limit, |rejection| rejection.id)))
}
