//! `/admin/v1/engage/quarantine`: log entries the engage pipeline set aside because applying
//! them kept failing, and their retry. The CLI's `signalbox engage quarantine` uses it: the
//! server's pipeline is the only writer of `engage.db`, so a retry runs there.
//!
//! - `GET …/quarantine?after=SEQ&limit=N`: `{"data":[{"seq","kind","source","sourceId",
//!   "receivedAt","error","tries"}],"next"}`, in log order.
//! - `POST …/quarantine/{seq}/retry`: applies the entry again. `{"seq","applied":true}` when
//!   it was applied (it left the quarantine); `{"seq","applied":false,"error","tries"}` when
//!   it failed again (it stays, with one more try). 404 when nothing is quarantined under
//!   that number.

use axum::extract::State;
use axum::Json;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use signalbox_core::SourceId;
use signalbox_engage::{EngageError, QuarantinedEntry};

use super::auth::AdminKey;
use super::error::AdminError;
use super::extract::{parse_cursor, parse_limit, AdminPath, AdminQuery};
use super::view::{Page, SourceNames};
use crate::app::AppState;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QuarantinedView {
    pub seq: i64,
    pub kind: String,
    /// `null` when the source was deleted since.
    pub source: Option<String>,
    pub source_id: i64,
    pub received_at: Timestamp,
    /// The last try's error.
    pub error: String,
    pub tries: i64,
}

impl QuarantinedView {
    fn new(entry: QuarantinedEntry, names: &SourceNames) -> QuarantinedView {
        QuarantinedView {
            seq: entry.seq,
            kind: entry.kind,
            source: names.get(SourceId(entry.source_id)),
            source_id: entry.source_id,
            received_at: entry.received,
            error: entry.error,
            tries: entry.tries,
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct ListParams {
    after: Option<String>,
    limit: Option<String>,
}

fn engage_error(err: EngageError) -> AdminError {
    match err {
        EngageError::NotFound { what } => AdminError::NotFound { what, field: None },
        EngageError::Invalid { field, reason } => AdminError::invalid(field, reason),
        EngageError::Overloaded => AdminError::Overloaded,
        EngageError::Unavailable => AdminError::Unavailable,
        other => AdminError::Internal(other.to_string()),
    }
}

/// `GET /admin/v1/engage/quarantine?after=SEQ&limit=N`.
pub async fn list(
    _key: AdminKey,
    State(app): State<AppState>,
    AdminQuery(params): AdminQuery<ListParams>,
) -> Result<Json<Page<QuarantinedView>>, AdminError> {
    let after = parse_cursor("after", params.after.as_deref())?;
    let limit = parse_limit(params.limit.as_deref())?;
    let entries = super::engine(&app)?
        .engage
        .clone()
        .quarantined(after, limit)
        .await
        .map_err(engage_error)?;
    let names = SourceNames::load(app.store.as_ref()).await?;
    let views = entries
        .into_iter()
        .map(|entry| QuarantinedView::new(entry, &names))
        .collect();
    Ok(Json(Page::new(views, limit, |entry| entry.seq)))
}

/// `POST /admin/v1/engage/quarantine/{seq}/retry`.
pub async fn retry(
    _key: AdminKey,
    State(app): State<AppState>,
    AdminPath(seq): AdminPath<String>,
) -> Result<Json<Value>, AdminError> {
    let seq: i64 = seq
        .parse()
        .ok()
        .filter(|seq| *seq > 0)
        .ok_or_else(|| AdminError::invalid("seq", "expected a log sequence number"))?;
    let engage = super::engine(&app)?.engage.clone();
    match engage.retry_quarantined(seq).await {
        Ok(()) => Ok(Json(json!({"seq": seq, "applied": true}))),
        Err(err @ (EngageError::NotFound { .. } | EngageError::Unavailable)) => {
            Err(engage_error(err))
        }
        // It failed again: that is the answer, not a failure of this request.
        Err(err) => {
            let tries = engage
                .quarantined(seq - 1, 1)
                .await
                .map_err(engage_error)?
                .into_iter()
                .find(|entry| entry.seq == seq)
                .map(|entry| entry.tries);
            Ok(Json(json!({
                "seq": seq,
                "applied": false,
                "error": err.to_string(),
                "tries": tries,
            })))
        }
    }
}
