//! The queries of profiles, metrics, events, held calls and the quarantine over `engage.db`.

use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};

use super::rows::{profile_row, PROFILE_COLUMNS};
use crate::apply::profile::ProfileRow;
use crate::error::{EngageError, EngageResult};
use crate::ids;
use crate::model::*;
use crate::query::*;

pub(crate) fn cmp_sql(cmp: Cmp) -> &'static str {
    match cmp {
        Cmp::Eq => "=",
        Cmp::Gt => ">",
        Cmp::Ge => ">=",
        Cmp::Lt => "<",
        Cmp::Le => "<=",
    }
}

/// The live profile key an id names, following merge redirects.
pub(crate) fn profile_key(conn: &Connection, id: &ProfileId) -> EngageResult<Option<i64>> {
    let Some(pk) = ids::ulid_key(&id.0) else {
        return Ok(None);
    };
    let redirect: Option<i64> = conn
        .prepare_cached("SELECT to_pk FROM redirects WHERE from_pk = ?1")?
        .query_row([pk], |r| r.get(0))
        .optional()?;
    if let Some(to) = redirect {
        return Ok(Some(to));
    }
    let own: Option<String> = conn
        .prepare_cached("SELECT id FROM profiles WHERE pk = ?1")?
        .query_row([pk], |r| r.get(0))
        .optional()?;
    Ok(own
        .filter(|own| own.eq_ignore_ascii_case(&id.0))
        .map(|_| pk))
}

pub(crate) fn profile_by_key(conn: &Connection, pk: i64) -> EngageResult<Option<Profile>> {
    Ok(crate::db::rows::load_profile(conn, pk)?.map(|row| row.to_profile()))
}

pub(crate) fn get_profile(conn: &Connection, id: &ProfileId) -> EngageResult<Profile> {
    let not_found = || EngageError::not_found(format!("profile {id}"));
    let pk = profile_key(conn, id)?.ok_or_else(not_found)?;
    profile_by_key(conn, pk)?.ok_or_else(not_found)
}

pub(crate) fn list_profiles(conn: &Connection, q: &ProfileQuery) -> EngageResult<Page<Profile>> {
    let size = page_size(q.page_size);
    let mut sql = format!("SELECT {PROFILE_COLUMNS} FROM profiles WHERE 1 = 1");
    let mut args: Vec<SqlValue> = Vec::new();
    for (field, values) in &q.any_of {
        if values.is_empty() {
            return Ok(Page {
                items: Vec::new(),
                next_cursor: None,
            });
        }
        let column = match field {
            ProfileField::Id => "pk",
            ProfileField::Email => "email",
            ProfileField::PhoneNumber => "phone_number",
            ProfileField::ExternalId => "external_id",
        };
        let mut marks = Vec::new();
        for value in values {
            match field {
                ProfileField::Id => {
                    let Some(pk) = profile_key(conn, &ProfileId(value.clone()))? else {
                        continue;
                    };
                    args.push(SqlValue::Integer(pk));
                }
                ProfileField::Email => {
                    args.push(SqlValue::Text(crate::email::normal_form(value)));
                }
                _ => args.push(SqlValue::Text(value.clone())),
            }
            marks.push("?");
        }
        if marks.is_empty() {
            return Ok(Page {
                items: Vec::new(),
                next_cursor: None,
            });
        }
        sql.push_str(&format!(" AND {column} IN ({})", marks.join(", ")));
    }
    for (column, bounds) in [("created_us", &q.created), ("updated_us", &q.updated)] {
        for bound in bounds {
            sql.push_str(&format!(" AND {column} {} ?", cmp_sql(bound.cmp)));
            args.push(SqlValue::Integer(bound.at.as_microsecond()));
        }
    }
    if q.list_suppressed {
        return Ok(Page {
            items: Vec::new(),
            next_cursor: None,
        });
    }
    if !q.suppression_reasons.is_empty() || !q.suppressed_at.is_empty() {
        // One suppression must pass every condition.
        sql.push_str(
            " AND EXISTS (SELECT 1 FROM email_consent c, json_each(c.suppressions) s
               WHERE c.profile_pk = profiles.pk",
        );
        if !q.suppression_reasons.is_empty() {
            let marks = vec!["?"; q.suppression_reasons.len()].join(", ");
            sql.push_str(&format!(
                " AND json_extract(s.value, '$.reason') IN ({marks})"
            ));
            args.extend(
                q.suppression_reasons
                    .iter()
                    .map(|r| SqlValue::Text(r.as_str().to_owned())),
            );
        }
        for bound in &q.suppressed_at {
            sql.push_str(&format!(
                " AND json_extract(s.value, '$.at_us') {} ?",
                cmp_sql(bound.cmp)
            ));
            args.push(SqlValue::Integer(bound.at.as_microsecond()));
        }
        sql.push(')');
    }
    let order = ProfileOrder::of(&q.sort);
    let (column, op, dir) = (order.column, order.op, order.dir);
    if let Some(cursor) = &q.cursor {
        match order.after(cursor)? {
            ProfileAfter::Id(id) => {
                sql.push_str(&format!(" AND id {op} ?"));
                args.push(SqlValue::Text(id));
            }
            ProfileAfter::At { value, pk } => {
                sql.push_str(&format!(
                    " AND ({column} {op} ? OR ({column} = ? AND pk {op} ?))"
                ));
                args.extend([
                    SqlValue::Integer(value),
                    SqlValue::Integer(value),
                    SqlValue::Integer(pk),
                ]);
            }
        }
    }
    if order.text_key {
        sql.push_str(&format!(" ORDER BY id {dir}"));
    } else {
        sql.push_str(&format!(" ORDER BY {column} {dir}, pk {dir}"));
    }
    sql.push_str(&format!(" LIMIT {}", size + 1));
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(args), profile_row)?;
    let rows: Vec<ProfileRow> = rows.collect::<Result<_, _>>()?;
    Ok(into_page(
        rows,
        size,
        |row| profile_cursor(q.sort.field, row),
        |row| row.to_profile(),
    ))
}

fn metric_row(r: &Row<'_>) -> rusqlite::Result<Metric> {
    Ok(Metric {
        id: MetricId(r.get(1)?),
        name: r.get(2)?,
        integration: Integration {
            name: r.get(3)?,
            category: r.get(4)?,
        },
        created: ts(r.get(5)?),
        updated: ts(r.get(6)?),
    })
}

const METRIC_COLUMNS: &str = "pk, id, name, integration, category, created_us, updated_us";

pub(crate) fn metric_key(conn: &Connection, id: &MetricId) -> EngageResult<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT pk FROM metrics WHERE id = ?1")?
        .query_row([&id.0], |r| r.get(0))
        .optional()?)
}

pub(crate) fn get_metric(conn: &Connection, id: &MetricId) -> EngageResult<Metric> {
    conn.prepare_cached(&format!(
        "SELECT {METRIC_COLUMNS} FROM metrics WHERE id = ?1"
    ))?
    .query_row([&id.0], metric_row)
    .optional()?
    .ok_or_else(|| EngageError::not_found(format!("metric {id}")))
}

pub(crate) fn list_metrics(conn: &Connection, q: &MetricQuery) -> EngageResult<Page<Metric>> {
    let size = page_size(q.page_size);
    let after = match &q.cursor {
        Some(cursor) => cursor_i64(&decode_cursor(cursor)?, 0)?,
        None => 0,
    };
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {METRIC_COLUMNS} FROM metrics
         WHERE pk > ?1 AND (?2 IS NULL OR integration = ?2) AND (?3 IS NULL OR category = ?3)
         ORDER BY pk LIMIT ?4"
    ))?;
    let rows = stmt.query_map(
        params![
            after,
            q.integration_name,
            q.integration_category,
            size as i64 + 1
        ],
        |r| Ok((r.get::<_, i64>(0)?, metric_row(r)?)),
    )?;
    let rows: Vec<(i64, Metric)> = rows.collect::<Result<_, _>>()?;
    Ok(into_page(
        rows,
        size,
        |(pk, _)| serde_json::json!([pk]),
        |(_, metric)| metric,
    ))
}

const EVENT_SELECT: &str = "SELECT e.pk, m.id, p.id, e.time_us, e.value, e.currency,
            e.unique_id, e.properties
     FROM events e JOIN metrics m ON m.pk = e.metric_pk JOIN profiles p ON p.pk = e.profile_pk";

fn event_row(r: &Row<'_>) -> rusqlite::Result<StoredEvent> {
    Ok(StoredEvent {
        pk: r.get(0)?,
        metric_id: r.get(1)?,
        profile_id: r.get(2)?,
        time_us: r.get(3)?,
        value: r.get(4)?,
        currency: r.get(5)?,
        unique_id: r.get(6)?,
        properties: r.get(7)?,
    })
}

pub(crate) fn get_event(conn: &Connection, id: &EventId) -> EngageResult<Event> {
    let not_found = || EngageError::not_found(format!("event {id}"));
    let pk = ids::ulid_key(&id.0).ok_or_else(not_found)?;
    let found = conn
        .prepare_cached(&format!("{EVENT_SELECT} WHERE e.pk = ?1"))?
        .query_row([pk], event_row)
        .optional()?;
    event_named(id, found)
}

pub(crate) fn list_events(conn: &Connection, q: &EventQuery) -> EngageResult<Page<Event>> {
    let size = page_size(q.page_size);
    let empty = || Page {
        items: Vec::new(),
        next_cursor: None,
    };
    // The page's keys come from an index alone (no row reads); then its rows are read.
    let mut sql = String::from("SELECT e.pk FROM events e WHERE 1 = 1");
    let mut args: Vec<SqlValue> = Vec::new();
    if let Some(metric) = &q.metric_id {
        let Some(pk) = metric_key(conn, metric)? else {
            return Ok(empty());
        };
        sql.push_str(" AND e.metric_pk = ?");
        args.push(SqlValue::Integer(pk));
    }
    if let Some(profile) = &q.profile_id {
        let Some(pk) = profile_key(conn, profile)? else {
            return Ok(empty());
        };
        sql.push_str(" AND e.profile_pk = ?");
        args.push(SqlValue::Integer(pk));
    }
    for bound in &q.time {
        sql.push_str(&format!(" AND e.time_us {} ?", cmp_sql(bound.cmp)));
        args.push(SqlValue::Integer(bound.at.as_microsecond()));
    }
    let (op, dir) = keyset(q.newest_first);
    if let Some(cursor) = &q.cursor {
        let items = decode_cursor(cursor)?;
        let (time, pk) = (cursor_i64(&items, 0)?, cursor_i64(&items, 1)?);
        sql.push_str(&format!(
            " AND (e.time_us {op} ? OR (e.time_us = ? AND e.pk {op} ?))"
        ));
        args.extend([
            SqlValue::Integer(time),
            SqlValue::Integer(time),
            SqlValue::Integer(pk),
        ]);
    }
    sql.push_str(&format!(
        " ORDER BY e.time_us {dir}, e.pk {dir} LIMIT {}",
        size + 1
    ));
    let sql = format!("{EVENT_SELECT} WHERE e.pk IN ({sql}) ORDER BY e.time_us {dir}, e.pk {dir}");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(args), event_row)?;
    let rows: Vec<StoredEvent> = rows.collect::<Result<_, _>>()?;
    Ok(into_page(
        rows,
        size,
        |e| serde_json::json!([e.time_us, e.pk]),
        StoredEvent::into_event,
    ))
}

/// The oldest held and quarantined entries (the checkpoint is the caller's).
pub(crate) fn log_needs(conn: &Connection) -> EngageResult<(Option<i64>, Option<i64>)> {
    // The partial index of calls still held holds their seqs: no scan of the settled ones.
    let held = conn
        .prepare_cached(
            "SELECT MIN(seq) FROM held_calls INDEXED BY held_open WHERE status = 'held'",
        )?
        .query_row([], |r| r.get(0))?;
    let quarantined = conn
        .prepare_cached("SELECT MIN(seq) FROM quarantine")?
        .query_row([], |r| r.get(0))?;
    Ok((held, quarantined))
}

pub(crate) fn held_calls(
    conn: &Connection,
    filter: HeldFilter,
    after_seq: i64,
    limit: u32,
) -> EngageResult<Vec<HeldCall>> {
    let status = held_status(filter);
    let mut stmt = conn.prepare_cached(
        "SELECT seq, source_id, kind, received_us, expires_us, reason, status, user_id,
                anonymous_id, settled_seq
         FROM held_calls WHERE seq > ?1 AND (?2 IS NULL OR status = ?2) ORDER BY seq LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![after_seq, status, limit.max(1)], |r| {
        Ok(HeldCall {
            seq: r.get(0)?,
            source_id: r.get(1)?,
            kind: r.get(2)?,
            received: ts(r.get(3)?),
            expires: ts(r.get(4)?),
            reason: r.get(5)?,
            status: {
                let text: String = r.get(6)?;
                parse_held_status(&text).map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(
                        6,
                        rusqlite::types::Type::Text,
                        e.into(),
                    )
                })?
            },
            user_id: r.get(7)?,
            anonymous_id: r.get(8)?,
            released_by: r.get(9)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(crate) fn quarantined(
    conn: &Connection,
    after_seq: i64,
    limit: u32,
) -> EngageResult<Vec<QuarantinedEntry>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, kind, source_id, received_us, error, tries
         FROM quarantine WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![after_seq, limit.max(1)], |r| {
        Ok(QuarantinedEntry {
            seq: r.get(0)?,
            kind: r.get(1)?,
            source_id: r.get(2)?,
            received: ts(r.get(3)?),
            error: r.get(4)?,
            tries: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(crate) fn profile_history(conn: &Connection, id: &ProfileId) -> EngageResult<ProfileHistory> {
    let profile = get_profile(conn, id)?;
    let pk = profile_key(conn, &profile.id)?
        .ok_or_else(|| EngageError::not_found(format!("profile {id}")))?;
    let mut stmt = conn.prepare_cached(
        "SELECT seq, action, kind, value, detail, at_us FROM profile_links
         WHERE profile_pk = ?1 ORDER BY seq, n",
    )?;
    let links = stmt
        .query_map([pk], |r| {
            Ok(ProfileLink {
                seq: r.get(0)?,
                action: r.get(1)?,
                kind: r.get(2)?,
                value: r.get(3)?,
                detail: r.get(4)?,
                at: ts(r.get(5)?),
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut stmt = conn.prepare_cached(
        "SELECT integration, source, external_id, anonymous_id, first_seq, last_seq
         FROM profile_origins WHERE profile_pk = ?1 ORDER BY first_seq, integration, source",
    )?;
    let origins = stmt
        .query_map([pk], |r| {
            let source: String = r.get(1)?;
            Ok(ProfileOrigin {
                integration: r.get(0)?,
                source: (!source.is_empty()).then_some(source),
                external_id: r.get(2)?,
                anonymous_id: r.get(3)?,
                first_seq: r.get(4)?,
                last_seq: r.get(5)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut stmt = conn.prepare_cached(
        "SELECT value FROM profile_links WHERE profile_pk = ?1 AND action = 'merged'
         ORDER BY seq, n",
    )?;
    let merged_ids = stmt
        .query_map([pk], |r| Ok(ProfileId(r.get(0)?)))?
        .collect::<Result<_, _>>()?;
    let mut stmt = conn.prepare_cached(
        "SELECT kind, value FROM identifiers WHERE profile_pk = ?1 ORDER BY kind, value",
    )?;
    let identifiers = stmt
        .query_map([pk], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut stmt =
        conn.prepare_cached("SELECT message FROM problems WHERE profile_pk = ?1 ORDER BY seq, n")?;
    let problems = stmt
        .query_map([pk], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(ProfileHistory {
        profile,
        links,
        origins,
        merged_ids,
        identifiers,
        problems,
    })
}

pub(crate) fn counters(conn: &Connection) -> EngageResult<Vec<(String, i64)>> {
    let mut stmt = conn.prepare_cached("SELECT name, value FROM counters ORDER BY name")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}
