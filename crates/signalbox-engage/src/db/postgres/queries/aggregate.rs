//! Metric aggregates (see [`crate::aggregate`] for how they are counted; as
//! `db/aggregate.rs`).

use deadpool_postgres::GenericClient;

use super::profiles::metric_key;
use super::{rows, Sql};
use crate::aggregate::AggregatePlan;
use crate::error::{EngageError, EngageResult};
use crate::model::{AggregateQuery, AggregateResult};

pub(crate) async fn aggregate(
    c: &impl GenericClient,
    q: &AggregateQuery,
) -> EngageResult<AggregateResult> {
    let plan = AggregatePlan::new(q)?;
    let Some(metric_pk) = metric_key(c, &q.metric_id.0).await? else {
        return Err(EngageError::not_found(format!("metric {}", q.metric_id)));
    };
    if plan.totals_only() {
        return totals(c, metric_pk, plan).await;
    }
    let properties = plan.properties()?;
    // Each event's properties are parsed once (as `json`, which keeps the text as sent), and
    // each property read as its JSON text, as SQLite's `->` reads it.
    let mut sql = Sql::new("SELECT time_us, profile_pk, value");
    for key in &properties {
        let key = sql.arg((*key).to_owned());
        sql.push(&format!(", (p -> {key})::TEXT"));
    }
    let (metric, start, end) = (
        sql.arg(metric_pk),
        sql.arg(q.start.as_microsecond()),
        sql.arg(q.end.as_microsecond()),
    );
    sql.push(&format!(
        " FROM (SELECT time_us, profile_pk, value, properties::JSON AS p FROM events
                WHERE metric_pk = {metric} AND time_us >= {start} AND time_us < {end}) e
          ORDER BY time_us"
    ));
    let n_properties = properties.len();
    let mut grouper = plan.grouper();
    for row in sql.rows(c).await? {
        let texts: Vec<Option<&str>> = (0..n_properties).map(|i| row.get(3 + i)).collect();
        grouper.add(row.get(0), row.get(1), row.get(2), &texts);
    }
    Ok(grouper.finish())
}

/// Count and sum per bucket with neither split nor filter: every bucket's range counted in
/// one statement, over the `(metric, time, profile, value)` index.
async fn totals(
    c: &impl GenericClient,
    metric_pk: i64,
    plan: AggregatePlan<'_>,
) -> EngageResult<AggregateResult> {
    let (from, until): (Vec<i64>, Vec<i64>) = plan.ranges().into_iter().unzip();
    let rows = rows(
        c,
        "SELECT r.i, COUNT(e.time_us), COALESCE(SUM(e.value), 0)::DOUBLE PRECISION
         FROM UNNEST($2::BIGINT[], $3::BIGINT[]) WITH ORDINALITY AS r (lo, hi, i)
         LEFT JOIN events e
           ON e.metric_pk = $1 AND e.time_us >= r.lo AND e.time_us < r.hi
         GROUP BY r.i ORDER BY r.i",
        &[&metric_pk, &from, &until],
    )
    .await?;
    let per_bucket = rows.iter().map(|r| (r.get(1), r.get(2))).collect();
    Ok(plan.totals(per_bucket))
}
