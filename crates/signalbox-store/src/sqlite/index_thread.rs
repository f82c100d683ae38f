//! Commits the dedupe index's batches on a thread of their own.
//!
//! Inserting a group's ids into the index's memtable is a good part of the writer's time,
//! and nothing the writer answers depends on it: the writer keeps every id it stored in
//! memory (its `unindexed` map, consulted before the index) until this thread reports the
//! batch committed, so a repeat is caught either way. Batches commit in the order sent, and
//! results come back in that order.

use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use crate::{StoreError, StoreResult};

/// Batches that may wait for the thread; past this the writer waits (backpressure).
const QUEUE: usize = 4;

/// One batch's outcome: its ticket, and the error if it failed.
pub(crate) type Committed = (u64, Result<(), String>);

pub(crate) struct IndexThread {
    batches: Option<SyncSender<(u64, fjall::OwnedWriteBatch)>>,
    results: Receiver<Committed>,
    thread: Option<JoinHandle<()>>,
    next_ticket: u64,
}

impl IndexThread {
    pub(crate) fn start() -> StoreResult<IndexThread> {
        let (batches, incoming) = sync_channel::<(u64, fjall::OwnedWriteBatch)>(QUEUE);
        let (done, results) = channel();
        let thread = std::thread::Builder::new()
            .name("signalbox-index".into())
            .spawn(move || {
                super::behind_the_writer();
                for (ticket, batch) in incoming {
                    let result = batch.commit().map_err(|e| e.to_string());
                    if done.send((ticket, result)).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        Ok(IndexThread {
            batches: Some(batches),
            results,
            thread: Some(thread),
            next_ticket: 0,
        })
    }

    /// Queues a batch; returns its ticket, or `None` if the thread is gone.
    pub(crate) fn send(&mut self, batch: fjall::OwnedWriteBatch) -> Option<u64> {
        let ticket = self.next_ticket;
        self.batches.as_ref()?.send((ticket, batch)).ok()?;
        self.next_ticket += 1;
        Some(ticket)
    }

    /// Outcomes reported since the last call, oldest first.
    pub(crate) fn finished(&self) -> impl Iterator<Item = Committed> + '_ {
        self.results.try_iter()
    }

    /// Waits for every queued batch to commit; returns their outcomes.
    pub(crate) fn finish(&mut self) -> Vec<Committed> {
        drop(self.batches.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.results.try_iter().collect()
    }
}

impl Drop for IndexThread {
    fn drop(&mut self) {
        self.finish();
    }
}
