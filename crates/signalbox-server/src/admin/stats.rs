//! `/admin/v1/stats`: how much each source has sent.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use signalbox_core::SourceId;
use signalbox_store::SourceTotals;

use super::auth::AdminKey;
use super::error::AdminError;
use crate::app::AppState;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// The highest sequence number in the log.
    pub last_seq: i64,
    pub calls: u64,
    pub rejections: u64,
    /// Every source, then the ids of deleted sources whose calls are still in the log.
    pub sources: Vec<SourceStats>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceStats {
    /// `null` for a deleted source.
    pub source: Option<String>,
    pub source_id: SourceId,
    pub calls: u64,
    /// The highest sequence number among the source's calls; 0 when none.
    pub last_seq: i64,
    pub rejections: u64,
}

impl SourceStats {
    fn new(source: Option<String>, totals: SourceTotals) -> SourceStats {
        SourceStats {
            source,
            source_id: totals.source_id,
            calls: totals.calls,
            last_seq: totals.last_seq,
            rejections: totals.rejections,
        }
    }
}

/// `GET /admin/v1/stats`
pub async fn get(_key: AdminKey, State(app): State<AppState>) -> Result<Json<Stats>, AdminError> {
    let mut totals: BTreeMap<SourceId, SourceTotals> = app
        .store
        .totals()
        .await?
        .into_iter()
        .map(|t| (t.source_id, t))
        .collect();
    let sources = app.store.list_sources().await?;
    let last_seq = app.store.last_seq().await?;
    let mut rows = Vec::with_capacity(sources.len() + totals.len());
    for source in sources {
        let of_source = totals
            .remove(&source.id)
            .unwrap_or_else(|| SourceTotals::empty(source.id));
        rows.push(SourceStats::new(Some(source.name), of_source));
    }
    rows.extend(totals.into_values().map(|t| SourceStats::new(None, t)));
    Ok(Json(Stats {
        last_seq,
        calls: rows.iter().map(|r| r.calls).sum(),
        rejections: rows.iter().map(|r| r.rejections).sum(),
        sources: rows,
    }))
}
