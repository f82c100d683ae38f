//! A store decorator that accepts appends and keeps nothing.

use std::sync::Arc;

use async_trait::async_trait;
use jiff::SignedDuration;
use signalbox_core::{
    ApiKey, ApiKeyInfo, NewCall, Rejection, Scopes, Source, SourceId, SourceStatus, StoredCall,
    StoredRejection, WriteKey,
};

use crate::{
    AppendOutcome, CallQuery, RejectionQuery, SourceSettings, SourceTotals, Store, StoreResult,
    TrimOutcome, TrimRequest, WriteKeyRecord,
};

/// Delegates everything to the inner store except [`Store::append`], which it answers at
/// once without writing. `signalbox serve --discard` runs on it to measure what parsing and
/// validation alone cost.
pub struct DiscardingStore {
    inner: Arc<dyn Store>,
}

impl DiscardingStore {
    pub fn new(inner: Arc<dyn Store>) -> DiscardingStore {
        DiscardingStore { inner }
    }
}

#[async_trait]
impl Store for DiscardingStore {
    async fn append(
        &self,
        _source: SourceId,
        calls: Vec<NewCall>,
        rejections: Vec<Rejection>,
    ) -> StoreResult<AppendOutcome> {
        Ok(AppendOutcome {
            appended: calls.len() as u32,
            duplicates: 0,
            rejected: rejections.len() as u32,
            last_seq: 0,
        })
    }
    async fn read_calls(&self, query: CallQuery) -> StoreResult<Vec<StoredCall>> {
        self.inner.read_calls(query).await
    }
    async fn last_seq(&self) -> StoreResult<i64> {
        self.inner.last_seq().await
    }
    async fn trim_log(&self, request: TrimRequest) -> StoreResult<TrimOutcome> {
        self.inner.trim_log(request).await
    }
    async fn read_rejections(&self, query: RejectionQuery) -> StoreResult<Vec<StoredRejection>> {
        self.inner.read_rejections(query).await
    }
    async fn totals(&self) -> StoreResult<Vec<SourceTotals>> {
        self.inner.totals().await
    }
    async fn create_source(&self, name: &str) -> StoreResult<(Source, WriteKey)> {
        self.inner.create_source(name).await
    }
    async fn list_sources(&self) -> StoreResult<Vec<Source>> {
        self.inner.list_sources().await
    }
    async fn source_by_name(&self, name: &str) -> StoreResult<Source> {
        self.inner.source_by_name(name).await
    }
    async fn current_write_key(&self, name: &str) -> StoreResult<WriteKey> {
        self.inner.current_write_key(name).await
    }
    async fn rotate_write_key(&self, name: &str, grace: SignedDuration) -> StoreResult<WriteKey> {
        self.inner.rotate_write_key(name, grace).await
    }
    async fn set_source_status(&self, name: &str, status: SourceStatus) -> StoreResult<()> {
        self.inner.set_source_status(name, status).await
    }
    async fn delete_source(&self, name: &str) -> StoreResult<()> {
        self.inner.delete_source(name).await
    }
    async fn source_settings(&self, name: &str) -> StoreResult<serde_json::Value> {
        self.inner.source_settings(name).await
    }
    async fn set_source_settings(
        &self,
        name: &str,
        settings: serde_json::Value,
    ) -> StoreResult<()> {
        self.inner.set_source_settings(name, settings).await
    }
    async fn all_source_settings(&self) -> StoreResult<Vec<SourceSettings>> {
        self.inner.all_source_settings().await
    }
    async fn write_keys(&self) -> StoreResult<Vec<WriteKeyRecord>> {
        self.inner.write_keys().await
    }
    async fn find_write_key(&self, digest: [u8; 32]) -> StoreResult<Option<WriteKeyRecord>> {
        self.inner.find_write_key(digest).await
    }
    async fn create_api_key(
        &self,
        name: &str,
        scopes: &Scopes,
    ) -> StoreResult<(ApiKeyInfo, ApiKey)> {
        self.inner.create_api_key(name, scopes).await
    }
    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKeyInfo>> {
        self.inner.list_api_keys().await
    }
    async fn delete_api_key(&self, name: &str) -> StoreResult<()> {
        self.inner.delete_api_key(name).await
    }
    async fn authenticate_api_key(&self, key: &ApiKey) -> StoreResult<Option<ApiKeyInfo>> {
        self.inner.authenticate_api_key(key).await
    }
    fn close(&self) {
        self.inner.close()
    }
}
