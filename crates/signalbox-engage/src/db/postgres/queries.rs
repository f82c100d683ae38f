//! [`EngageQueries`] over the PostgreSQL tables (`schema.rs`): the same reads as
//! `db/queries.rs`, in PostgreSQL's dialect, on pooled connections.
//!
//! The traits are synchronous: [`PgDb`] keeps the handle of the runtime it was made on and
//! waits on the pool from the calling thread. **Invariant:** its methods are called from
//! blocking threads (`spawn_blocking`, a follower's own thread), or from a worker of a
//! multi-thread runtime (which steps out of it to wait), never from a task of a
//! current-thread runtime, where waiting would panic.
//!
//! Text is ordered as SQLite orders it, bytewise: `COLLATE "C"` where the database's collation
//! could differ, and profile ids (ULIDs, which every collation orders bytewise) in the
//! collation of their index.

mod aggregate;
mod dump;
pub(crate) mod lists;
mod outbox;
mod profiles;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::Arc;

use deadpool_postgres::{GenericClient, Object, Pool, PoolError};
use jiff::Timestamp;
use signalbox_store::postgres::{error_text, BlockingPool, IoRuntime};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::reader::PgReader;
use crate::error::{EngageError, EngageResult};
use crate::lists::{
    EmailConsent, List, ListId, ListMember, ListQuery, MemberQuery, MemberStatus, ProfileLists,
};
use crate::model::{
    AggregateQuery, AggregateResult, Event, EventId, EventQuery, Metric, MetricId, MetricQuery,
    Page, Profile, ProfileId, ProfileQuery,
};
use crate::outbox::{OutboxEntry, OutboxPosition};
use crate::queries::EngageQueries;
use crate::query::{HeldCall, HeldFilter, ProfileHistory, QuarantinedEntry};
use crate::reader::EngageReader;

/// A pool of connections to the database and the runtime it runs on.
#[derive(Clone)]
pub(crate) struct PgDb {
    pool: BlockingPool,
    /// The pool's runtime, when it is the pool's own.
    _owned: Option<Arc<IoRuntime>>,
}

impl PgDb {
    /// Reads over `pool`, waiting on `runtime` (the tests').
    #[cfg(test)]
    pub(crate) fn new(pool: Pool, runtime: tokio::runtime::Handle) -> PgDb {
        PgDb {
            pool: BlockingPool::new(pool, runtime),
            _owned: None,
        }
    }

    /// Reads over `pool`, whose connections run on `runtime`.
    pub(crate) fn on_own_runtime(pool: Pool, runtime: Arc<IoRuntime>) -> PgDb {
        PgDb {
            pool: BlockingPool::new(pool, runtime.handle()),
            _owned: Some(runtime),
        }
    }

    /// Waits for `fut` on the pool's runtime from this (blocking) thread
    /// ([`BlockingPool::wait`]).
    pub(crate) fn wait<F: Future>(&self, fut: F) -> F::Output {
        self.pool.wait(fut)
    }

    /// A pooled connection, held until dropped.
    pub(crate) fn connection(&self) -> EngageResult<Object> {
        self.pool.get().map_err(pool_error)
    }

    /// Runs `f` on a pooled connection and waits for it.
    pub(crate) fn run<T, Fut>(&self, f: impl FnOnce(Object) -> Fut) -> EngageResult<T>
    where
        Fut: Future<Output = EngageResult<T>>,
    {
        self.wait(async {
            let client = self.pool.pool().get().await.map_err(pool_error)?;
            f(client).await
        })
    }
}

/// A PostgreSQL error as engage's: a lost or refused connection is "retry later", anything
/// else internal (with the server's message).
pub(crate) fn pg(err: tokio_postgres::Error) -> EngageError {
    if err.is_closed() || err.code().is_none() && err.as_db_error().is_none() {
        tracing::warn!(error = %err, "engage database connection failed");
        return EngageError::Unavailable;
    }
    EngageError::Internal(error_text(&err, "engage"))
}

fn pool_error(err: PoolError) -> EngageError {
    match err {
        PoolError::Backend(err) => pg(err),
        other => {
            tracing::warn!(error = %other, "no engage database connection");
            EngageError::Unavailable
        }
    }
}

/// The rows of `sql` (a cached statement).
pub(crate) async fn rows(
    client: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> EngageResult<Vec<Row>> {
    let stmt = client.prepare_cached(sql).await.map_err(pg)?;
    client.query(&stmt, params).await.map_err(pg)
}

/// The row of `sql`, if any.
pub(crate) async fn row_opt(
    client: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> EngageResult<Option<Row>> {
    let stmt = client.prepare_cached(sql).await.map_err(pg)?;
    client.query_opt(&stmt, params).await.map_err(pg)
}

/// The one row of `sql`.
pub(crate) async fn row_one(
    client: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> EngageResult<Row> {
    let stmt = client.prepare_cached(sql).await.map_err(pg)?;
    client.query_one(&stmt, params).await.map_err(pg)
}

/// A query whose conditions are built as it goes: each argument gets the next `$n`.
#[derive(Default)]
pub(crate) struct Sql {
    pub text: String,
    args: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Sql {
    pub(crate) fn new(text: impl Into<String>) -> Sql {
        Sql {
            text: text.into(),
            args: Vec::new(),
        }
    }

    /// Binds `value`, returning its placeholder.
    pub(crate) fn arg(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.args.push(Box::new(value));
        format!("${}", self.args.len())
    }

    pub(crate) fn push(&mut self, text: &str) {
        self.text.push_str(text);
    }

    pub(crate) fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.args
            .iter()
            .map(|a| a.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }

    /// Its rows (the statement is cached: the text repeats for the same shape of query).
    pub(crate) async fn rows(&self, client: &impl GenericClient) -> EngageResult<Vec<Row>> {
        rows(client, &self.text, &self.params()).await
    }
}

/// A count or a limit as a bound parameter.
pub(crate) fn limit_of(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

/// [`EngageQueries`] over PostgreSQL.
pub(crate) struct PgQueries {
    db: PgDb,
}

impl PgQueries {
    pub(crate) fn new(db: PgDb) -> PgQueries {
        PgQueries { db }
    }
}

impl EngageQueries for PgQueries {
    fn applied_seq(&self) -> EngageResult<i64> {
        self.db.run(|c| async move {
            let row = row_opt(&c, "SELECT value FROM meta WHERE key = 'applied_seq'", &[]).await?;
            Ok(row.map_or(0, |r| r.get(0)))
        })
    }

    fn reader(&self) -> EngageResult<Box<dyn EngageReader>> {
        Ok(Box::new(PgReader::new(self.db.clone())))
    }

    fn api_result(&self, seq: i64) -> EngageResult<Option<String>> {
        self.db.run(|c| async move {
            let row = row_opt(&c, "SELECT result FROM api_results WHERE seq = $1", &[&seq]).await?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    fn list_profiles(&self, q: &ProfileQuery) -> EngageResult<Page<Profile>> {
        self.db
            .run(|c| async move { profiles::list_profiles(&c, q).await })
    }

    fn get_profile(&self, id: &ProfileId) -> EngageResult<Profile> {
        self.db
            .run(|c| async move { profiles::get_profile(&c, id).await })
    }

    fn profile_history(&self, id: &ProfileId) -> EngageResult<ProfileHistory> {
        self.db
            .run(|c| async move { profiles::profile_history(&c, id).await })
    }

    fn list_metrics(&self, q: &MetricQuery) -> EngageResult<Page<Metric>> {
        self.db
            .run(|c| async move { profiles::list_metrics(&c, q).await })
    }

    fn get_metric(&self, id: &MetricId) -> EngageResult<Metric> {
        self.db
            .run(|c| async move { profiles::get_metric(&c, id).await })
    }

    fn list_events(&self, q: &EventQuery) -> EngageResult<Page<Event>> {
        self.db
            .run(|c| async move { profiles::list_events(&c, q).await })
    }

    fn get_event(&self, id: &EventId) -> EngageResult<Event> {
        self.db
            .run(|c| async move { profiles::get_event(&c, id).await })
    }

    fn aggregate(&self, q: &AggregateQuery) -> EngageResult<AggregateResult> {
        self.db
            .run(|c| async move { aggregate::aggregate(&c, q).await })
    }

    fn held_calls(
        &self,
        filter: HeldFilter,
        after_seq: i64,
        limit: u32,
    ) -> EngageResult<Vec<HeldCall>> {
        self.db
            .run(|c| async move { profiles::held_calls(&c, filter, after_seq, limit).await })
    }

    fn quarantined(&self, after_seq: i64, limit: u32) -> EngageResult<Vec<QuarantinedEntry>> {
        self.db
            .run(|c| async move { profiles::quarantined(&c, after_seq, limit).await })
    }

    fn log_needs(&self) -> EngageResult<(Option<i64>, Option<i64>)> {
        self.db.run(|c| async move {
            let row = row_one(
                &c,
                "SELECT (SELECT MIN(seq) FROM held_calls WHERE status = 'held'),
                        (SELECT MIN(seq) FROM quarantine)",
                &[],
            )
            .await?;
            Ok((row.get(0), row.get(1)))
        })
    }

    fn counters(&self) -> EngageResult<Vec<(String, i64)>> {
        self.db.run(|c| async move {
            let rows = rows(
                &c,
                r#"SELECT name, value FROM counters ORDER BY name COLLATE "C""#,
                &[],
            )
            .await?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    fn dump(&self) -> EngageResult<String> {
        self.db.run(|c| async move { dump::dump(&c).await })
    }

    fn get_list(&self, id: &ListId) -> EngageResult<List> {
        self.db
            .run(|c| async move { lists::get_list(&c, id).await })
    }

    fn list_lists(&self, q: &ListQuery) -> EngageResult<Page<List>> {
        self.db
            .run(|c| async move { lists::list_lists(&c, q).await })
    }

    fn list_members(&self, q: &MemberQuery) -> EngageResult<Page<ListMember>> {
        self.db
            .run(|c| async move { lists::list_members(&c, q).await })
    }

    fn email_consent(&self, profile: &ProfileId) -> EngageResult<EmailConsent> {
        self.db
            .run(|c| async move { lists::email_consent(&c, profile).await })
    }

    fn lists_of_profile(&self, profile: &ProfileId, limit: u32) -> EngageResult<ProfileLists> {
        self.db
            .run(|c| async move { lists::lists_of_profile(&c, profile, limit).await })
    }

    fn member_status(
        &self,
        list: &ListId,
        profile: &ProfileId,
    ) -> EngageResult<Option<MemberStatus>> {
        self.db
            .run(|c| async move { lists::member_status(&c, list, profile).await })
    }

    fn outbox_after(&self, after: OutboxPosition, limit: u32) -> EngageResult<Vec<OutboxEntry>> {
        self.db
            .run(|c| async move { outbox::entries_after(&c, after, limit).await })
    }

    fn outbox_head(&self) -> EngageResult<OutboxPosition> {
        self.db.run(|c| async move { outbox::head(&c).await })
    }

    fn outbox_position_before(&self, since: Timestamp) -> EngageResult<OutboxPosition> {
        self.db
            .run(|c| async move { outbox::position_before(&c, since).await })
    }
}
