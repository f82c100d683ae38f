//! The queries of profiles, metrics, events, held calls and the quarantine (as
//! `db/query.rs`).

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::{row_one, row_opt, rows, Sql};
use crate::apply::profile::{ProfileRow, StoredProfile};
use crate::error::{EngageError, EngageResult};
use crate::ids;
use crate::model::*;
use crate::query::*;

/// The columns of `profiles` a [`ProfileRow`] reads (see [`profile_row`]).
pub(crate) const PROFILE_COLUMNS: &str =
    "profiles.pk, profiles.id, profiles.email, profiles.phone_number, profiles.external_id,
     profiles.anonymous_id, profiles.created_us, profiles.updated_us,
     (SELECT MAX(time_us) FROM events WHERE events.profile_pk = profiles.pk), profiles.data,
     profiles.from_segment <> 0, profiles.segment_user_id";

/// How many columns [`PROFILE_COLUMNS`] selects (a query's own columns follow them).
pub(crate) const PROFILE_COLUMN_COUNT: usize = 12;

/// A profile row from the columns of [`PROFILE_COLUMNS`].
pub(crate) fn profile_row(r: &Row) -> ProfileRow {
    ProfileRow::stored(StoredProfile {
        pk: r.get(0),
        id: r.get(1),
        email: r.get(2),
        phone_number: r.get(3),
        external_id: r.get(4),
        anonymous_id: r.get(5),
        created_us: r.get(6),
        updated_us: r.get(7),
        last_event_us: r.get(8),
        data: r.get(9),
        from_segment: r.get(10),
        segment_user_id: r.get(11),
    })
}

/// The SQL comparison of a bound.
fn cmp_sql(cmp: Cmp) -> &'static str {
    match cmp {
        Cmp::Eq => "=",
        Cmp::Gt => ">",
        Cmp::Ge => ">=",
        Cmp::Lt => "<",
        Cmp::Le => "<=",
    }
}

/// `AND {column} {cmp} $n` for each bound.
pub(crate) fn push_bounds(sql: &mut Sql, column: &str, bounds: &[TimeBound]) {
    for bound in bounds {
        let at = sql.arg(bound.at.as_microsecond());
        sql.push(&format!(" AND {column} {} {at}", cmp_sql(bound.cmp)));
    }
}

/// The live profile key an id names, following merge redirects.
pub(crate) async fn profile_key(
    c: &impl GenericClient,
    id: &ProfileId,
) -> EngageResult<Option<i64>> {
    let Some(pk) = ids::ulid_key(&id.0) else {
        return Ok(None);
    };
    // One round trip: where it redirects to, and its own id.
    let row = row_one(
        c,
        "SELECT (SELECT to_pk FROM redirects WHERE from_pk = $1),
                (SELECT id FROM profiles WHERE pk = $1)",
        &[&pk],
    )
    .await?;
    let redirected: Option<i64> = row.get(0);
    let own: Option<&str> = row.get(1);
    Ok(redirected.or_else(|| {
        own.filter(|own| own.eq_ignore_ascii_case(&id.0))
            .map(|_| pk)
    }))
}

pub(crate) async fn get_profile(c: &impl GenericClient, id: &ProfileId) -> EngageResult<Profile> {
    let not_found = || EngageError::not_found(format!("profile {id}"));
    let pk = ids::ulid_key(&id.0).ok_or_else(not_found)?;
    // One round trip: the profile the key redirects to, else its own row when its id is the
    // one asked for (as `profile_key`).
    let row = row_opt(
        c,
        &format!(
            "SELECT {PROFILE_COLUMNS}, r.to_pk
             FROM profiles LEFT JOIN redirects r ON r.from_pk = $1
             WHERE profiles.pk = COALESCE(r.to_pk, $1)"
        ),
        &[&pk],
    )
    .await?
    .ok_or_else(not_found)?;
    let redirected: Option<i64> = row.get(PROFILE_COLUMN_COUNT);
    let profile = profile_row(&row).to_profile();
    if redirected.is_none() && !profile.id.0.eq_ignore_ascii_case(&id.0) {
        return Err(not_found());
    }
    Ok(profile)
}

fn empty<T>() -> Page<T> {
    Page {
        items: Vec::new(),
        next_cursor: None,
    }
}

pub(crate) async fn list_profiles(
    c: &impl GenericClient,
    q: &ProfileQuery,
) -> EngageResult<Page<Profile>> {
    let size = page_size(q.page_size);
    let mut sql = Sql::new(format!(
        "SELECT {PROFILE_COLUMNS} FROM profiles WHERE 1 = 1"
    ));
    for (field, values) in &q.any_of {
        let column = match field {
            ProfileField::Id => "pk",
            ProfileField::Email => "email",
            ProfileField::PhoneNumber => "phone_number",
            ProfileField::ExternalId => "external_id",
        };
        // One array parameter whatever the number of values: one statement per shape.
        let any = match field {
            ProfileField::Id => {
                let mut pks = Vec::new();
                for value in values {
                    if let Some(pk) = profile_key(c, &ProfileId(value.clone())).await? {
                        pks.push(pk);
                    }
                }
                if pks.is_empty() {
                    return Ok(empty());
                }
                sql.arg(pks)
            }
            _ if values.is_empty() => return Ok(empty()),
            ProfileField::Email => sql.arg(
                values
                    .iter()
                    .map(|v| crate::email::normal_form(v))
                    .collect::<Vec<String>>(),
            ),
            _ => sql.arg(values.clone()),
        };
        sql.push(&format!(" AND {column} = ANY({any})"));
    }
    push_bounds(&mut sql, "created_us", &q.created);
    push_bounds(&mut sql, "updated_us", &q.updated);
    if q.list_suppressed {
        return Ok(empty());
    }
    if !q.suppression_reasons.is_empty() || !q.suppressed_at.is_empty() {
        // One suppression must pass every condition.
        sql.push(
            " AND EXISTS (SELECT 1 FROM email_consent c,
                 json_array_elements(c.suppressions::json) s
               WHERE c.profile_pk = profiles.pk",
        );
        if !q.suppression_reasons.is_empty() {
            let reasons = sql.arg(
                q.suppression_reasons
                    .iter()
                    .map(|r| r.as_str().to_owned())
                    .collect::<Vec<String>>(),
            );
            sql.push(&format!(" AND s.value ->> 'reason' = ANY({reasons})"));
        }
        push_bounds(&mut sql, "(s.value ->> 'at_us')::BIGINT", &q.suppressed_at);
        sql.push(")");
    }
    let order = ProfileOrder::of(&q.sort);
    let (column, op, dir) = (order.column, order.op, order.dir);
    if let Some(cursor) = &q.cursor {
        match order.after(cursor)? {
            ProfileAfter::Id(id) => {
                let id = sql.arg(id);
                sql.push(&format!(" AND id {op} {id}"));
            }
            ProfileAfter::At { value, pk } => {
                let (value, pk) = (sql.arg(value), sql.arg(pk));
                sql.push(&format!(
                    " AND ({column} {op} {value} OR ({column} = {value} AND pk {op} {pk}))"
                ));
            }
        }
    }
    if order.text_key {
        // Ids are ULIDs (digits and capitals, all of one length): every collation orders
        // them as SQLite does, bytewise, so the unique index on `id` serves the page.
        sql.push(&format!(" ORDER BY id {dir}"));
    } else {
        sql.push(&format!(" ORDER BY {column} {dir}, pk {dir}"));
    }
    let limit = sql.arg(i64::from(size) + 1);
    sql.push(&format!(" LIMIT {limit}"));
    let rows: Vec<ProfileRow> = sql.rows(c).await?.iter().map(profile_row).collect();
    Ok(into_page(
        rows,
        size,
        |row| profile_cursor(q.sort.field, row),
        |row| row.to_profile(),
    ))
}

const METRIC_COLUMNS: &str = "pk, id, name, integration, category, created_us, updated_us";

fn metric_row(r: &Row) -> Metric {
    Metric {
        id: MetricId(r.get(1)),
        name: r.get(2),
        integration: Integration {
            name: r.get(3),
            category: r.get(4),
        },
        created: ts(r.get(5)),
        updated: ts(r.get(6)),
    }
}

pub(crate) async fn metric_key(c: &impl GenericClient, id: &str) -> EngageResult<Option<i64>> {
    let row = row_opt(c, "SELECT pk FROM metrics WHERE id = $1", &[&id]).await?;
    Ok(row.map(|r| r.get(0)))
}

pub(crate) async fn get_metric(c: &impl GenericClient, id: &MetricId) -> EngageResult<Metric> {
    row_opt(
        c,
        &format!("SELECT {METRIC_COLUMNS} FROM metrics WHERE id = $1"),
        &[&id.0],
    )
    .await?
    .map(|r| metric_row(&r))
    .ok_or_else(|| EngageError::not_found(format!("metric {id}")))
}

pub(crate) async fn list_metrics(
    c: &impl GenericClient,
    q: &MetricQuery,
) -> EngageResult<Page<Metric>> {
    let size = page_size(q.page_size);
    let after = match &q.cursor {
        Some(cursor) => cursor_i64(&decode_cursor(cursor)?, 0)?,
        None => 0,
    };
    let rows = rows(
        c,
        &format!(
            "SELECT {METRIC_COLUMNS} FROM metrics
             WHERE pk > $1 AND ($2::TEXT IS NULL OR integration = $2)
               AND ($3::TEXT IS NULL OR category = $3)
             ORDER BY pk LIMIT $4"
        ),
        &[
            &after,
            &q.integration_name,
            &q.integration_category,
            &(i64::from(size) + 1),
        ],
    )
    .await?;
    let rows: Vec<(i64, Metric)> = rows.iter().map(|r| (r.get(0), metric_row(r))).collect();
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

fn event_row(r: &Row) -> StoredEvent {
    StoredEvent {
        pk: r.get(0),
        metric_id: r.get(1),
        profile_id: r.get(2),
        time_us: r.get(3),
        value: r.get(4),
        currency: r.get(5),
        unique_id: r.get(6),
        properties: r.get(7),
    }
}

pub(crate) async fn get_event(c: &impl GenericClient, id: &EventId) -> EngageResult<Event> {
    let pk = ids::ulid_key(&id.0).ok_or_else(|| EngageError::not_found(format!("event {id}")))?;
    let found = row_opt(c, &format!("{EVENT_SELECT} WHERE e.pk = $1"), &[&pk]).await?;
    event_named(id, found.as_ref().map(event_row))
}

pub(crate) async fn list_events(
    c: &impl GenericClient,
    q: &EventQuery,
) -> EngageResult<Page<Event>> {
    let size = page_size(q.page_size);
    // The page's keys come from an index alone; then its rows are read.
    let mut sql = Sql::new("SELECT e.pk FROM events e WHERE 1 = 1");
    if let Some(metric) = &q.metric_id {
        let Some(pk) = metric_key(c, &metric.0).await? else {
            return Ok(empty());
        };
        let pk = sql.arg(pk);
        sql.push(&format!(" AND e.metric_pk = {pk}"));
    }
    if let Some(profile) = &q.profile_id {
        let Some(pk) = profile_key(c, profile).await? else {
            return Ok(empty());
        };
        let pk = sql.arg(pk);
        sql.push(&format!(" AND e.profile_pk = {pk}"));
    }
    push_bounds(&mut sql, "e.time_us", &q.time);
    let (op, dir) = keyset(q.newest_first);
    if let Some(cursor) = &q.cursor {
        let items = decode_cursor(cursor)?;
        let (time, pk) = (cursor_i64(&items, 0)?, cursor_i64(&items, 1)?);
        let (time, pk) = (sql.arg(time), sql.arg(pk));
        sql.push(&format!(
            " AND (e.time_us {op} {time} OR (e.time_us = {time} AND e.pk {op} {pk}))"
        ));
    }
    let limit = sql.arg(i64::from(size) + 1);
    sql.push(&format!(
        " ORDER BY e.time_us {dir}, e.pk {dir} LIMIT {limit}"
    ));
    sql.text = format!(
        "{EVENT_SELECT} WHERE e.pk IN ({}) ORDER BY e.time_us {dir}, e.pk {dir}",
        sql.text
    );
    let rows: Vec<StoredEvent> = sql.rows(c).await?.iter().map(event_row).collect();
    Ok(into_page(
        rows,
        size,
        |e| serde_json::json!([e.time_us, e.pk]),
        StoredEvent::into_event,
    ))
}

pub(crate) async fn held_calls(
    c: &impl GenericClient,
    filter: HeldFilter,
    after_seq: i64,
    limit: u32,
) -> EngageResult<Vec<HeldCall>> {
    let rows = rows(
        c,
        "SELECT seq, source_id, kind, received_us, expires_us, reason, status, user_id,
                anonymous_id, settled_seq
         FROM held_calls WHERE seq > $1 AND ($2::TEXT IS NULL OR status = $2)
         ORDER BY seq LIMIT $3",
        &[&after_seq, &held_status(filter), &i64::from(limit.max(1))],
    )
    .await?;
    rows.iter()
        .map(|r| {
            Ok(HeldCall {
                seq: r.get(0),
                source_id: r.get(1),
                kind: r.get(2),
                received: ts(r.get(3)),
                expires: ts(r.get(4)),
                reason: r.get(5),
                status: parse_held_status(r.get(6)).map_err(EngageError::Internal)?,
                user_id: r.get(7),
                anonymous_id: r.get(8),
                released_by: r.get(9),
            })
        })
        .collect()
}

pub(crate) async fn quarantined(
    c: &impl GenericClient,
    after_seq: i64,
    limit: u32,
) -> EngageResult<Vec<QuarantinedEntry>> {
    let rows = rows(
        c,
        "SELECT seq, kind, source_id, received_us, error, tries
         FROM quarantine WHERE seq > $1 ORDER BY seq LIMIT $2",
        &[&after_seq, &i64::from(limit.max(1))],
    )
    .await?;
    Ok(rows
        .iter()
        .map(|r| QuarantinedEntry {
            seq: r.get(0),
            kind: r.get(1),
            source_id: r.get(2),
            received: ts(r.get(3)),
            error: r.get(4),
            tries: r.get(5),
        })
        .collect())
}

pub(crate) async fn profile_history(
    c: &impl GenericClient,
    id: &ProfileId,
) -> EngageResult<ProfileHistory> {
    let profile = get_profile(c, id).await?;
    let pk = profile_key(c, &profile.id)
        .await?
        .ok_or_else(|| EngageError::not_found(format!("profile {id}")))?;
    let links = rows(
        c,
        "SELECT seq, action, kind, value, detail, at_us FROM profile_links
         WHERE profile_pk = $1 ORDER BY seq, n",
        &[&pk],
    )
    .await?
    .iter()
    .map(|r| ProfileLink {
        seq: r.get(0),
        action: r.get(1),
        kind: r.get(2),
        value: r.get(3),
        detail: r.get(4),
        at: ts(r.get(5)),
    })
    .collect();
    let origins = rows(
        c,
        r#"SELECT integration, source, external_id, anonymous_id, first_seq, last_seq
           FROM profile_origins WHERE profile_pk = $1
           ORDER BY first_seq, integration COLLATE "C", source COLLATE "C""#,
        &[&pk],
    )
    .await?
    .iter()
    .map(|r| {
        let source: String = r.get(1);
        ProfileOrigin {
            integration: r.get(0),
            source: (!source.is_empty()).then_some(source),
            external_id: r.get(2),
            anonymous_id: r.get(3),
            first_seq: r.get(4),
            last_seq: r.get(5),
        }
    })
    .collect();
    let merged_ids = rows(
        c,
        "SELECT value FROM profile_links WHERE profile_pk = $1 AND action = 'merged'
         ORDER BY seq, n",
        &[&pk],
    )
    .await?
    .iter()
    .map(|r| ProfileId(r.get(0)))
    .collect();
    let identifiers = rows(
        c,
        r#"SELECT kind, value FROM identifiers WHERE profile_pk = $1
           ORDER BY kind COLLATE "C", value COLLATE "C""#,
        &[&pk],
    )
    .await?
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect();
    let problems = rows(
        c,
        "SELECT message FROM problems WHERE profile_pk = $1 ORDER BY seq, n",
        &[&pk],
    )
    .await?
    .iter()
    .map(|r| r.get(0))
    .collect();
    Ok(ProfileHistory {
        profile,
        links,
        origins,
        merged_ids,
        identifiers,
        problems,
    })
}
