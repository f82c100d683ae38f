//! What destinations follow, behind two small traits so tests can drive them:
//! [`CallFeed`] (the call log, for `klaviyo` and `webhook`) and [`OutboxFeed`] (engage's
//! outbox, for `segment`). The engine reads only through these; it never opens another
//! crate's files.

use std::sync::Arc;

use async_trait::async_trait;
use jiff::Timestamp;
use signalbox_core::{SourceId, StoredCall};
use signalbox_engage::{Engage, OutboxEntry};
use signalbox_store::{CallQuery, SourceSettings, Store, StoreError};
use tokio::sync::watch;

use crate::error::{SyncError, SyncResult};
use crate::model::Position;

fn feed_err(err: impl std::fmt::Display) -> SyncError {
    SyncError::Feed(err.to_string())
}

/// The call log, as forwarding destinations read it.
#[async_trait]
pub trait CallFeed: Send + Sync + 'static {
    /// Calls after `after_seq`, in log order, at most `limit`; only `source`'s when given.
    async fn calls_after(
        &self,
        after_seq: i64,
        source: Option<SourceId>,
        limit: u32,
    ) -> SyncResult<Vec<StoredCall>>;
    /// The newest call's sequence number (0 for an empty log).
    async fn head(&self) -> SyncResult<i64>;
    /// The sequence number of the first call received at or after `since`, if any.
    async fn first_since(&self, since: Timestamp) -> SyncResult<Option<i64>>;
    /// A source's id by name; `None` when there is no such source.
    async fn source_id(&self, name: &str) -> SyncResult<Option<SourceId>>;
    /// Every source's engage destination settings (what the `klaviyo` kind maps with).
    async fn source_settings(&self) -> SyncResult<Vec<SourceSettings>>;
}

#[async_trait]
impl CallFeed for Arc<dyn Store> {
    async fn calls_after(
        &self,
        after_seq: i64,
        source: Option<SourceId>,
        limit: u32,
    ) -> SyncResult<Vec<StoredCall>> {
        self.read_calls(CallQuery {
            after_seq,
            source_id: source,
            since: None,
            limit,
        })
        .await
        .map_err(feed_err)
    }

    async fn head(&self) -> SyncResult<i64> {
        self.last_seq().await.map_err(feed_err)
    }

    async fn first_since(&self, since: Timestamp) -> SyncResult<Option<i64>> {
        let calls = self
            .read_calls(CallQuery {
                after_seq: 0,
                source_id: None,
                since: Some(since),
                limit: 1,
            })
            .await
            .map_err(feed_err)?;
        Ok(calls.first().map(|c| c.seq))
    }

    async fn source_id(&self, name: &str) -> SyncResult<Option<SourceId>> {
        match self.source_by_name(name).await {
            Ok(source) => Ok(Some(source.id)),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(err) => Err(feed_err(err)),
        }
    }

    async fn source_settings(&self) -> SyncResult<Vec<SourceSettings>> {
        self.all_source_settings().await.map_err(feed_err)
    }
}

/// Engage's outbox, as the `segment` destination reads it.
#[async_trait]
pub trait OutboxFeed: Send + Sync + 'static {
    async fn outbox_after(&self, after: Position, limit: u32) -> SyncResult<Vec<OutboxEntry>>;
    async fn outbox_head(&self) -> SyncResult<Position>;
    /// Where a replay from `since` starts reading.
    async fn outbox_position_before(&self, since: Timestamp) -> SyncResult<Position>;
    /// Changes when the pipeline applied more of the log (a wake-up); `None`: poll only.
    fn subscribe(&self) -> Option<watch::Receiver<i64>>;
}

fn position((seq, n): (i64, u32)) -> Position {
    Position { seq, n }
}

#[async_trait]
impl OutboxFeed for Engage {
    async fn outbox_after(&self, after: Position, limit: u32) -> SyncResult<Vec<OutboxEntry>> {
        Engage::outbox_after(self, (after.seq, after.n), limit)
            .await
            .map_err(feed_err)
    }

    async fn outbox_head(&self) -> SyncResult<Position> {
        Engage::outbox_head(self)
            .await
            .map(position)
            .map_err(feed_err)
    }

    async fn outbox_position_before(&self, since: Timestamp) -> SyncResult<Position> {
        Engage::outbox_position_before(self, since)
            .await
            .map(position)
            .map_err(feed_err)
    }

    fn subscribe(&self) -> Option<watch::Receiver<i64>> {
        self.subscribe_applied()
    }
}
