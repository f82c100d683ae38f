//! The PostgreSQL backend of engage: the derived state in tables beside the other components'
//! in one database (`schema.rs`), written by the applier through `apply.rs` ([`PgWriter`],
//! which holds the applier's advisory lock), read through `queries.rs` and `reader.rs`.
//!
//! [`PgWriter`]: apply::PgWriter

pub(crate) mod apply;
pub(crate) mod queries;
pub(crate) mod reader;
pub(crate) mod schema;

use std::sync::Arc;

use signalbox_core::PostgresUrl;
use signalbox_store::postgres::{IoRuntime, Planning};

use crate::error::{EngageError, EngageResult};
use crate::queries::EngageQueries;

/// Connections the queries' pool (shared with the readers it makes) keeps at most.
const QUERY_POOL: usize = 16;

/// The queries of the database at `url`, its schema brought up to date. Their connections
/// are served by a runtime of their own ([`IoRuntime`]).
pub(crate) async fn open_queries(url: &PostgresUrl) -> EngageResult<Arc<dyn EngageQueries>> {
    let runtime = Arc::new(IoRuntime::start("signalbox-engage-db")?);
    let connect_url = url.clone();
    let pool = runtime
        .handle()
        .spawn(async move { apply::connect(&connect_url, QUERY_POOL, Planning::PerCall).await })
        .await
        .map_err(|err| EngageError::Internal(format!("engage query runtime: {err}")))??;
    Ok(Arc::new(queries::PgQueries::new(
        queries::PgDb::on_own_runtime(pool, runtime),
    )))
}
