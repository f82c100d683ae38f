//! The reads of segment conditions over `engage.db` (see [`crate::facts`]).

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension};
use signalbox_seglang::{ConsentView, EventFilter};

use crate::error::EngageResult;
use crate::facts::{
    push_matching, EventsByProfile, ProfileEvents, ProfileRecord, RawProfile, RecordBatch,
};
use crate::lists::StoredConsent;
use crate::model::ProfileKey;

/// One profile, `None` if the key names none (merged away or never created).
pub(crate) fn profile_record(
    conn: &Connection,
    pk: ProfileKey,
    with_last_event: bool,
) -> EngageResult<Option<ProfileRecord>> {
    let sql = format!("{} WHERE pk = ?1", profile_select(with_last_event));
    let Some(raw) = conn
        .prepare_cached(&sql)?
        .query_row([pk.0], raw_profile)
        .optional()?
    else {
        return Ok(None);
    };
    let mut record = ProfileRecord::from_raw(raw);
    let mut stmt = conn.prepare_cached(
        "SELECT list_id, joined_us FROM list_members
         WHERE profile_pk = ?1 AND status = 'member'",
    )?;
    for row in stmt.query_map([pk.0], |r| Ok((r.get(0)?, r.get(1)?)))? {
        let (list, joined): (String, i64) = row?;
        record.lists.insert(list, joined);
    }
    let mut stmt = conn.prepare_cached(&format!("{CONSENT_SELECT} WHERE profile_pk = ?1"))?;
    if let Some((_, view)) = stmt.query_row([pk.0], consent_row).optional()? {
        record.consent = view;
    }
    Ok(Some(record))
}

/// Profiles with keys after `after_pk`, in key order, at most `limit`: three queries
/// whatever the count.
pub(crate) fn profile_records(
    conn: &Connection,
    after_pk: ProfileKey,
    limit: usize,
    with_last_event: bool,
) -> EngageResult<Vec<ProfileRecord>> {
    let sql = format!(
        "{} WHERE pk > ?1 ORDER BY pk LIMIT ?2",
        profile_select(with_last_event)
    );
    let records: Vec<ProfileRecord> = conn
        .prepare_cached(&sql)?
        .query_map(params![after_pk.0, limit as i64], raw_profile)?
        .map(|r| r.map(ProfileRecord::from_raw))
        .collect::<Result<_, _>>()?;
    let mut batch = RecordBatch::new(records);
    let Some((lo, hi)) = batch.key_range() else {
        return Ok(batch.into_records());
    };
    let mut stmt = conn.prepare_cached(
        "SELECT profile_pk, list_id, joined_us FROM list_members
         WHERE status = 'member' AND profile_pk BETWEEN ?1 AND ?2",
    )?;
    for row in stmt.query_map([lo, hi], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))? {
        let (pk, list, joined) = row?;
        batch.add_list(pk, list, joined);
    }
    let mut stmt = conn.prepare_cached(&format!(
        "{CONSENT_SELECT} WHERE profile_pk BETWEEN ?1 AND ?2"
    ))?;
    for row in stmt.query_map([lo, hi], consent_row)? {
        let (pk, view) = row?;
        batch.set_consent(pk, view);
    }
    Ok(batch.into_records())
}

/// How the profile columns are selected (the last event time only when asked: it costs a
/// look at the profile's events).
fn profile_select(with_last_event: bool) -> String {
    let last = if with_last_event {
        "(SELECT MAX(time_us) FROM events WHERE events.profile_pk = profiles.pk)"
    } else {
        "NULL"
    };
    format!(
        "SELECT pk, id, email, phone_number, external_id, created_us, updated_us, {last}, data
         FROM profiles"
    )
}

fn raw_profile(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawProfile> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
    ))
}

const CONSENT_SELECT: &str = "SELECT profile_pk, status, status_us, method, method_detail,
    custom_source, double_opt_in, suppressions FROM email_consent";

fn consent_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, ConsentView)> {
    let double_opt_in: Option<i64> = r.get(6)?;
    let stored = StoredConsent {
        status: r.get(1)?,
        status_us: r.get(2)?,
        method: r.get(3)?,
        method_detail: r.get(4)?,
        custom_source: r.get(5)?,
        double_opt_in: double_opt_in.map(|v| v != 0),
        suppressions: r.get(7)?,
    };
    Ok((r.get(0)?, stored.view()))
}

/// The key of a metric id, `None` for an unknown metric (which has no events).
pub(crate) fn metric_pk(conn: &Connection, metric_id: &str) -> EngageResult<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT pk FROM metrics WHERE id = ?1")?
        .query_row([metric_id], |r| r.get(0))
        .optional()?)
}

/// Every event of one metric that passes `filters`, grouped by profile: one scan of the
/// metric's index (of the metric's events with their properties when there are filters).
pub(crate) fn metric_events_by_profile(
    conn: &Connection,
    metric_id: &str,
    filters: &[EventFilter],
) -> EngageResult<EventsByProfile> {
    let mut out: EventsByProfile = HashMap::new();
    let Some(metric) = metric_pk(conn, metric_id)? else {
        return Ok(out);
    };
    if filters.is_empty() {
        let mut stmt = conn.prepare_cached(
            "SELECT profile_pk, time_us, value FROM events INDEXED BY events_metric_time
             WHERE metric_pk = ?1",
        )?;
        let mut rows = stmt.query([metric])?;
        while let Some(r) = rows.next()? {
            let out = out.entry(ProfileKey(r.get(0)?)).or_default();
            push_matching(out, filters, None, r.get(1)?, r.get(2)?);
        }
    } else {
        let mut stmt = conn.prepare_cached(
            "SELECT profile_pk, time_us, value, properties FROM events WHERE metric_pk = ?1",
        )?;
        let mut rows = stmt.query([metric])?;
        while let Some(r) = rows.next()? {
            let properties: String = r.get(3)?;
            let mut matched = Vec::new();
            push_matching(
                &mut matched,
                filters,
                Some(&properties),
                r.get(1)?,
                r.get(2)?,
            );
            if !matched.is_empty() {
                out.entry(ProfileKey(r.get(0)?))
                    .or_default()
                    .append(&mut matched);
            }
        }
    }
    Ok(out)
}

/// Every event of one metric (by its key) and profile that passes `filters`, and the largest
/// key among all of them. Without filters the events' properties are not read.
pub(crate) fn profile_events(
    conn: &Connection,
    profile_pk: ProfileKey,
    metric: i64,
    filters: &[EventFilter],
) -> EngageResult<ProfileEvents> {
    let mut out = ProfileEvents::default();
    if filters.is_empty() {
        let mut stmt = conn.prepare_cached(
            "SELECT pk, time_us, value FROM events INDEXED BY events_profile
             WHERE profile_pk = ?1 AND metric_pk = ?2",
        )?;
        let mut rows = stmt.query(params![profile_pk.0, metric])?;
        while let Some(r) = rows.next()? {
            out.last_pk = out.last_pk.max(r.get(0)?);
            let value: Option<f64> = r.get(2)?;
            out.events.push((r.get(1)?, value.unwrap_or(0.0)));
        }
        return Ok(out);
    }
    let mut stmt = conn.prepare_cached(
        "SELECT pk, time_us, value, properties FROM events INDEXED BY events_profile
         WHERE profile_pk = ?1 AND metric_pk = ?2",
    )?;
    let mut rows = stmt.query(params![profile_pk.0, metric])?;
    while let Some(r) = rows.next()? {
        out.last_pk = out.last_pk.max(r.get(0)?);
        let properties: Option<String> = r.get(3)?;
        push_matching(
            &mut out.events,
            filters,
            properties.as_deref(),
            r.get(1)?,
            r.get(2)?,
        );
    }
    Ok(out)
}
