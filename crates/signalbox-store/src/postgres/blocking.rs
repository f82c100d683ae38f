//! [`BlockingPool`]: a pool used from blocking threads, as the components' synchronous store
//! traits are (the engage applier's thread, `spawn_blocking`, the segment and flow workers).

use std::future::Future;

use deadpool_postgres::{Object, Pool, PoolError};
use tokio::runtime::{Handle, RuntimeFlavor};

/// A pool and the runtime its connections run on; each call waits on that runtime.
///
/// **Invariant:** called from blocking threads, or from a worker of a multi-thread runtime
/// (which steps out of it to wait), never from a task of a current-thread runtime, where
/// waiting would panic.
#[derive(Clone)]
pub struct BlockingPool {
    pool: Pool,
    runtime: Handle,
}

impl BlockingPool {
    pub fn new(pool: Pool, runtime: Handle) -> BlockingPool {
        BlockingPool { pool, runtime }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Waits for `fut` on the pool's runtime from this thread. Called by mistake from a worker
    /// of a multi-thread runtime, it steps out of it first (`block_in_place`) rather than
    /// panic.
    pub fn wait<F: Future>(&self, fut: F) -> F::Output {
        match Handle::try_current() {
            Ok(current) if current.runtime_flavor() == RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| self.runtime.block_on(fut))
            }
            _ => self.runtime.block_on(fut),
        }
    }

    /// A pooled connection, held until dropped.
    pub fn get(&self) -> Result<Object, PoolError> {
        self.wait(self.pool.get())
    }
}

/// The text of a PostgreSQL error: the server's message when it sent one. A lost connection is
/// logged as `component`'s.
pub fn error_text(err: &tokio_postgres::Error, component: &str) -> String {
    if err.is_closed() {
        tracing::warn!(error = %err, component, "database connection lost");
    }
    match err.as_db_error() {
        Some(db) => db.to_string(),
        None => err.to_string(),
    }
}
