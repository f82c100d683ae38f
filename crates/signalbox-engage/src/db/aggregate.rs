//! Metric aggregates over `engage.db` (see [`crate::aggregate`] for how they are counted).

use rusqlite::types::Value as SqlValue;
use rusqlite::{params_from_iter, Connection};

use super::query::metric_key;
use crate::aggregate::AggregatePlan;
use crate::error::{EngageError, EngageResult};
use crate::model::{AggregateQuery, AggregateResult};

/// The text of a property read by `->` (`None` when missing).
fn text(raw: &SqlValue) -> Option<&str> {
    match raw {
        SqlValue::Text(text) => Some(text),
        _ => None,
    }
}

pub(crate) fn aggregate(conn: &Connection, q: &AggregateQuery) -> EngageResult<AggregateResult> {
    let plan = AggregatePlan::new(q)?;
    let Some(metric_pk) = metric_key(conn, &q.metric_id)? else {
        return Err(EngageError::not_found(format!("metric {}", q.metric_id)));
    };
    if plan.totals_only() {
        return totals(conn, metric_pk, plan);
    }
    let properties = plan.properties()?;
    let mut sql = String::from("SELECT time_us, profile_pk, value");
    for _ in &properties {
        sql.push_str(", properties -> ?");
    }
    sql.push_str(
        " FROM events WHERE metric_pk = ? AND time_us >= ? AND time_us < ? ORDER BY time_us",
    );
    let mut args: Vec<SqlValue> = properties
        .iter()
        .map(|key| SqlValue::Text(format!("$.\"{key}\"")))
        .collect();
    args.extend([
        SqlValue::Integer(metric_pk),
        SqlValue::Integer(q.start.as_microsecond()),
        SqlValue::Integer(q.end.as_microsecond()),
    ]);
    let n_properties = properties.len();
    let mut grouper = plan.grouper();
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query(params_from_iter(args))?;
    let mut raw: Vec<SqlValue> = Vec::with_capacity(n_properties);
    while let Some(row) = rows.next()? {
        raw.clear();
        for i in 0..n_properties {
            raw.push(row.get(3 + i)?);
        }
        let texts: Vec<Option<&str>> = raw.iter().map(text).collect();
        grouper.add(row.get(0)?, row.get(1)?, row.get(2)?, &texts);
    }
    Ok(grouper.finish())
}

/// Count and sum per bucket with neither split nor filter: one `count(*)` over the index
/// range of each bucket, counted inside SQLite (no row comes out to be stepped through), so a
/// chart of a busy metric costs a range count per bar rather than a read per event.
fn totals(
    conn: &Connection,
    metric_pk: i64,
    plan: AggregatePlan<'_>,
) -> EngageResult<AggregateResult> {
    let sql = if plan.wants_sum() {
        "SELECT count(*), total(value) FROM events
         WHERE metric_pk = ?1 AND time_us >= ?2 AND time_us < ?3"
    } else {
        "SELECT count(*), 0.0 FROM events
         WHERE metric_pk = ?1 AND time_us >= ?2 AND time_us < ?3"
    };
    let mut stmt = conn.prepare_cached(sql)?;
    let mut per_bucket = Vec::new();
    for (from, until) in plan.ranges() {
        per_bucket.push(
            stmt.query_row(rusqlite::params![metric_pk, from, until], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?,
        );
    }
    Ok(plan.totals(per_bucket))
}
