//! [`IoRuntime`]: a runtime of its own for a pool's connections.
//!
//! A connection's socket is served by a task of the runtime it was made on. Made on the
//! server's runtime, an answer from PostgreSQL waits, before anything reads it, for a worker
//! that is free of the tracking requests it parses: under load, most of a short read's time
//! at p99. Made here, the answer is taken off the socket by this runtime's own thread, and
//! only the caller's wake-up is left to the server's workers.

use deadpool_postgres::{Object, Pool, PoolError};
use tokio::runtime::{Handle, Runtime};

use crate::{StoreError, StoreResult};

pub struct IoRuntime(Option<Runtime>);

impl IoRuntime {
    /// A runtime of one worker thread named `name`.
    pub fn start(name: &str) -> StoreResult<IoRuntime> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(name)
            .enable_all()
            .build()
            .map(|runtime| IoRuntime(Some(runtime)))
            .map_err(|err| StoreError::Internal(format!("{name} runtime: {err}")))
    }

    pub fn handle(&self) -> Handle {
        self.0
            .as_ref()
            .expect("running until dropped")
            .handle()
            .clone()
    }

    /// A connection of `pool`, taken on this runtime: one the pool makes is served here.
    pub async fn get(&self, pool: &Pool) -> Result<Object, PoolError> {
        let pool = pool.clone();
        self.handle()
            .spawn(async move { pool.get().await })
            .await
            .unwrap_or(Err(PoolError::Closed))
    }
}

impl Drop for IoRuntime {
    /// Stops without waiting, so that it may be dropped anywhere (in a task of another
    /// runtime included).
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}
