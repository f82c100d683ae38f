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
use tokio::runtime::Handle;

use crate::error::EngageResult;
use crate::queries::EngageQueries;

/// Connections the queries' pool (shared with the readers it makes) keeps at most.
const QUERY_POOL: usize = 16;

/// The queries of the database at `url`, its schema brought up to date. They wait on the
/// runtime this is called on.
pub(crate) async fn open_queries(url: &PostgresUrl) -> EngageResult<Arc<dyn EngageQueries>> {
    let pool = apply::connect(url, QUERY_POOL).await?;
    Ok(Arc::new(queries::PgQueries::new(queries::PgDb::new(
        pool,
        Handle::current(),
    ))))
}
