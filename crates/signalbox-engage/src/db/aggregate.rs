//! Metric aggregates over `engage.db` (see [`crate::aggregate`] for how they are counted).

use std::collections::BTreeMap;

use jiff::tz::TimeZone;
use jiff::Zoned;
use rusqlite::types::Value as SqlValue;
use rusqlite::{params_from_iter, Connection};

use super::query::metric_key;
use crate::aggregate::{buckets, dimension, equals, saturating_add, Acc};
use crate::error::{EngageError, EngageResult};
use crate::model::{AggregateQuery, AggregateResult, AggregateRow, Measurement};

/// The text of a property read by `json_extract` (`None` when missing).
fn text(raw: &SqlValue) -> Option<&str> {
    match raw {
        SqlValue::Text(text) => Some(text),
        _ => None,
    }
}

fn json_path(key: &str) -> EngageResult<String> {
    if key.contains('"') || key.contains('\\') {
        return Err(EngageError::invalid(
            "by",
            format!("property name {key:?} cannot be aggregated on"),
        ));
    }
    Ok(format!("$.\"{key}\""))
}

pub(crate) fn aggregate(conn: &Connection, q: &AggregateQuery) -> EngageResult<AggregateResult> {
    if q.end <= q.start {
        return Err(EngageError::invalid(
            "filter",
            "the datetime range is empty (end must be after start)",
        ));
    }
    let tz_name = if q.timezone.trim().is_empty() {
        "UTC"
    } else {
        q.timezone.trim()
    };
    let tz = TimeZone::get(tz_name)
        .map_err(|_| EngageError::invalid("timezone", format!("unknown timezone {tz_name:?}")))?;
    let dates = buckets(q.start, q.end, q.interval, &tz)?;
    let bounds: Vec<i64> = dates
        .iter()
        .skip(1)
        .map(|z| z.timestamp().as_microsecond())
        .chain(std::iter::once(i64::MAX))
        .collect();
    let Some(metric_pk) = metric_key(conn, &q.metric_id)? else {
        return Err(EngageError::not_found(format!("metric {}", q.metric_id)));
    };
    let measurements = if q.measurements.is_empty() {
        vec![Measurement::Count]
    } else {
        q.measurements.clone()
    };
    let want_unique = measurements.contains(&Measurement::Unique);

    if q.by.is_empty() && q.property_equals.is_empty() && !want_unique {
        return totals(
            conn,
            metric_pk,
            &measurements,
            dates,
            &bounds,
            (q.start, q.end),
        );
    }

    // The properties to read: `by` first, then the filters'.
    let mut paths = Vec::new();
    for key in q.by.iter().chain(q.property_equals.iter().map(|(k, _)| k)) {
        paths.push(json_path(key)?);
    }
    let mut sql = String::from("SELECT time_us, profile_pk, value");
    for _ in &paths {
        sql.push_str(", properties -> ?");
    }
    sql.push_str(
        " FROM events WHERE metric_pk = ? AND time_us >= ? AND time_us < ? ORDER BY time_us",
    );
    let mut args: Vec<SqlValue> = paths.into_iter().map(SqlValue::Text).collect();
    args.extend([
        SqlValue::Integer(metric_pk),
        SqlValue::Integer(q.start.as_microsecond()),
        SqlValue::Integer(q.end.as_microsecond()),
    ]);

    let n = dates.len();
    let n_by = q.by.len();
    let mut groups: BTreeMap<Vec<String>, Acc> = BTreeMap::new();
    let mut bucket = 0usize;
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query(params_from_iter(args))?;
    while let Some(row) = rows.next()? {
        let time_us: i64 = row.get(0)?;
        while time_us >= bounds[bucket] {
            bucket += 1;
        }
        let mut dims = Vec::with_capacity(n_by);
        let mut keep = true;
        for i in 0..n_by {
            let raw: SqlValue = row.get(3 + i)?;
            dims.push(dimension(text(&raw)).0);
        }
        for (i, (_, wanted)) in q.property_equals.iter().enumerate() {
            let raw: SqlValue = row.get(3 + n_by + i)?;
            if !equals(dimension(text(&raw)).1.as_ref(), wanted) {
                keep = false;
                break;
            }
        }
        if !keep {
            continue;
        }
        let acc = groups
            .entry(dims)
            .or_insert_with(|| Acc::new(n, want_unique));
        acc.count[bucket] += 1;
        if let Some(value) = row.get::<_, Option<f64>>(2)? {
            acc.sum[bucket] = saturating_add(acc.sum[bucket], value);
        }
        if want_unique {
            acc.unique[bucket].insert(row.get(1)?);
        }
    }
    if groups.is_empty() && q.by.is_empty() {
        groups.insert(Vec::new(), Acc::new(n, want_unique));
    }
    let rows = groups
        .into_iter()
        .map(|(dimensions, acc)| AggregateRow {
            dimensions,
            count: if measurements.contains(&Measurement::Count) {
                acc.count
            } else {
                Vec::new()
            },
            unique: if want_unique {
                acc.unique.iter().map(|s| s.len() as u64).collect()
            } else {
                Vec::new()
            },
            sum_value: if measurements.contains(&Measurement::SumValue) {
                acc.sum
            } else {
                Vec::new()
            },
        })
        .collect();
    Ok(AggregateResult { dates, rows })
}

/// Count and sum per bucket with neither split nor filter: one `count(*)` over the index
/// range of each bucket, counted inside SQLite (no row comes out to be stepped through), so a
/// chart of a busy metric costs a range count per bar rather than a read per event.
fn totals(
    conn: &Connection,
    metric_pk: i64,
    measurements: &[Measurement],
    dates: Vec<Zoned>,
    bounds: &[i64],
    (start, end): (jiff::Timestamp, jiff::Timestamp),
) -> EngageResult<AggregateResult> {
    let want_sum = measurements.contains(&Measurement::SumValue);
    let sql = if want_sum {
        "SELECT count(*), total(value) FROM events
         WHERE metric_pk = ?1 AND time_us >= ?2 AND time_us < ?3"
    } else {
        "SELECT count(*), 0.0 FROM events
         WHERE metric_pk = ?1 AND time_us >= ?2 AND time_us < ?3"
    };
    let mut stmt = conn.prepare_cached(sql)?;
    let mut count = Vec::with_capacity(dates.len());
    let mut sum = Vec::with_capacity(dates.len());
    let mut from = start.as_microsecond();
    for &until in bounds {
        let until = until.min(end.as_microsecond());
        let (n, total): (i64, f64) = stmt
            .query_row(rusqlite::params![metric_pk, from, until], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        count.push(n as u64);
        sum.push(saturating_add(0.0, total));
        from = until;
    }
    let row = AggregateRow {
        dimensions: Vec::new(),
        count: if measurements.contains(&Measurement::Count) {
            count
        } else {
            Vec::new()
        },
        unique: Vec::new(),
        sum_value: if want_sum { sum } else { Vec::new() },
    };
    Ok(AggregateResult {
        dates,
        rows: vec![row],
    })
}
