//! The queries of lists, members and email consent over `engage.db`.

use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};

use super::query::{cmp_sql, profile_key};
use super::rows::{profile_row, PROFILE_COLUMNS, PROFILE_COLUMN_COUNT};
use crate::apply::profile::ProfileRow;
use crate::error::{EngageError, EngageResult};
use crate::lists::*;
use crate::model::{Page, ProfileId};
use crate::query::{cursor_i64, decode_cursor, into_page, keyset, ts};

pub(crate) fn list_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<List> {
    Ok(StoredList {
        id: r.get(0)?,
        name: r.get(1)?,
        opt_in: r.get(2)?,
        created_us: r.get(3)?,
        updated_us: r.get(4)?,
        members: r.get(5)?,
    }
    .into_list())
}

/// `member_count` is kept by the schema's triggers as members join and leave.
const LIST_COLUMNS: &str = "id, name, opt_in, created_us, updated_us, member_count, pk";

pub(crate) fn get_list(conn: &Connection, id: &ListId) -> EngageResult<List> {
    conn.prepare_cached(&format!("SELECT {LIST_COLUMNS} FROM lists WHERE id = ?1"))?
        .query_row([&id.0], list_row)
        .optional()?
        .ok_or_else(|| EngageError::not_found(format!("list {id}")))
}

pub(crate) fn list_lists(conn: &Connection, q: &ListQuery) -> EngageResult<Page<List>> {
    let size = lists_page_size(q.page_size);
    let mut sql = format!("SELECT {LIST_COLUMNS} FROM lists WHERE 1 = 1");
    let mut args: Vec<SqlValue> = Vec::new();
    for (column, values) in [
        ("name", q.names.clone()),
        ("id", q.ids.iter().map(|i| i.0.clone()).collect::<Vec<_>>()),
    ] {
        if values.is_empty() {
            continue;
        }
        let marks = vec!["?"; values.len()].join(", ");
        sql.push_str(&format!(" AND {column} IN ({marks})"));
        args.extend(values.into_iter().map(SqlValue::Text));
    }
    if let Some(cursor) = &q.cursor {
        let after = cursor_i64(&decode_cursor(cursor)?, 0)?;
        sql.push_str(" AND pk > ?");
        args.push(SqlValue::Integer(after));
    }
    sql.push_str(&format!(" ORDER BY pk LIMIT {}", size + 1));
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(args), |r| {
        Ok((list_row(r)?, r.get::<_, i64>(6)?))
    })?;
    let rows: Vec<(List, i64)> = rows.collect::<Result<_, _>>()?;
    Ok(into_page(
        rows,
        size,
        |(_, pk)| serde_json::json!([pk]),
        |(list, _)| list,
    ))
}

pub(crate) fn list_members(conn: &Connection, q: &MemberQuery) -> EngageResult<Page<ListMember>> {
    get_list(conn, &q.list_id)?;
    let size = members_page_size(q.page_size);
    let (sql, args) = members_sql(q, size)?;
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(args), |r| {
        let row = profile_row(r)?;
        let status: String = r.get(PROFILE_COLUMN_COUNT)?;
        let joined: i64 = r.get(PROFILE_COLUMN_COUNT + 1)?;
        Ok((row, status, joined))
    })?;
    let rows: Vec<(ProfileRow, String, i64)> = rows.collect::<Result<_, _>>()?;
    Ok(into_page(
        rows,
        size,
        |(row, _, joined)| serde_json::json!([joined, row.pk]),
        |(row, status, joined)| ListMember {
            profile: row.to_profile(),
            status: stored_member_status(&status),
            joined: ts(joined),
        },
    ))
}

/// The query of a page of members (`size` rows and one more) and its arguments: one status
/// of one list, in the order of `list_members_by_status`.
fn members_sql(q: &MemberQuery, size: u32) -> EngageResult<(String, Vec<SqlValue>)> {
    let mut sql = format!(
        "SELECT {PROFILE_COLUMNS}, m.status, m.joined_us FROM list_members m
         JOIN profiles ON profiles.pk = m.profile_pk
         WHERE m.list_id = ? AND m.status = ?"
    );
    let status = q.status.unwrap_or(MemberStatus::Member);
    let mut args: Vec<SqlValue> = vec![
        SqlValue::Text(q.list_id.0.clone()),
        SqlValue::Text(status.as_str().into()),
    ];
    if !q.emails.is_empty() {
        let marks = vec!["?"; q.emails.len()].join(", ");
        sql.push_str(&format!(" AND profiles.email IN ({marks})"));
        args.extend(
            q.emails
                .iter()
                .map(|e| SqlValue::Text(crate::email::normal_form(e))),
        );
    }
    for bound in &q.joined {
        sql.push_str(&format!(" AND m.joined_us {} ?", cmp_sql(bound.cmp)));
        args.push(SqlValue::Integer(bound.at.as_microsecond()));
    }
    let (op, dir) = keyset(q.newest_first);
    if let Some(cursor) = &q.cursor {
        let items = decode_cursor(cursor)?;
        let (joined, pk) = (cursor_i64(&items, 0)?, cursor_i64(&items, 1)?);
        sql.push_str(&format!(
            " AND (m.joined_us {op} ? OR (m.joined_us = ? AND m.profile_pk {op} ?))"
        ));
        args.extend([
            SqlValue::Integer(joined),
            SqlValue::Integer(joined),
            SqlValue::Integer(pk),
        ]);
    }
    sql.push_str(&format!(
        " ORDER BY m.joined_us {dir}, m.profile_pk {dir} LIMIT {}",
        size + 1
    ));
    Ok((sql, args))
}

/// The consent row of a profile key (the default when it has none).
pub(crate) fn consent_by_key(conn: &Connection, pk: i64) -> EngageResult<EmailConsent> {
    let row = conn
        .prepare_cached(
            "SELECT status, status_us, method, method_detail, custom_source, double_opt_in,
                    suppressions
             FROM email_consent WHERE profile_pk = ?1",
        )?
        .query_row([pk], |r| {
            Ok(StoredConsent {
                status: r.get(0)?,
                status_us: r.get(1)?,
                method: r.get(2)?,
                method_detail: r.get(3)?,
                custom_source: r.get(4)?,
                double_opt_in: r.get(5)?,
                suppressions: r.get(6)?,
            })
        })
        .optional()?;
    Ok(StoredConsent::email_consent(row))
}

pub(crate) fn email_consent(conn: &Connection, id: &ProfileId) -> EngageResult<EmailConsent> {
    let pk =
        profile_key(conn, id)?.ok_or_else(|| EngageError::not_found(format!("profile {id}")))?;
    consent_by_key(conn, pk)
}

/// A member's status on a list, if it is on it.
pub(crate) fn member_status(
    conn: &Connection,
    list: &ListId,
    profile: &ProfileId,
) -> EngageResult<Option<MemberStatus>> {
    let Some(pk) = profile_key(conn, profile)? else {
        return Ok(None);
    };
    let status: Option<String> = conn
        .prepare_cached("SELECT status FROM list_members WHERE list_id = ?1 AND profile_pk = ?2")?
        .query_row(params![list.0, pk], |r| r.get(0))
        .optional()?;
    Ok(status.map(|s| stored_member_status(&s)))
}

/// The lists a profile is on, at most `limit` of them (by list id), and their number: reads
/// only the profile's own rows of `list_members` (the index by profile), never every list.
pub(crate) fn lists_of_profile(
    conn: &Connection,
    profile: &ProfileId,
    limit: u32,
) -> EngageResult<ProfileLists> {
    let pk = profile_key(conn, profile)?
        .ok_or_else(|| EngageError::not_found(format!("profile {profile}")))?;
    let total: i64 = conn
        .prepare_cached(
            "SELECT COUNT(*) FROM list_members m INDEXED BY list_members_profile
             JOIN lists l ON l.id = m.list_id
             WHERE m.profile_pk = ?1",
        )?
        .query_row([pk], |r| r.get(0))?;
    let mut stmt = conn.prepare_cached(
        "SELECT m.list_id, l.name, l.opt_in, m.status, m.joined_us, m.confirm_optin
         FROM list_members m INDEXED BY list_members_profile
         JOIN lists l ON l.id = m.list_id
         WHERE m.profile_pk = ?1
         ORDER BY m.list_id
         LIMIT ?2",
    )?;
    let items = stmt
        .query_map(params![pk, i64::from(limit)], |r| {
            let opt_in: String = r.get(2)?;
            let status: String = r.get(3)?;
            Ok(ProfileListMembership {
                list_id: ListId(r.get(0)?),
                name: r.get(1)?,
                opt_in_process: OptInProcess::parse(&opt_in).unwrap_or_default(),
                status: stored_member_status(&status),
                joined: ts(r.get(4)?),
                confirm_optin: r.get(5)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ProfileLists {
        items,
        total: total.max(0) as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::schema::migrate;
    use crate::model::{Cmp, TimeBound};

    /// The query plan of a page of members, one detail a line.
    fn plan(conn: &Connection, q: &MemberQuery) -> String {
        let (sql, args) = members_sql(q, 10).unwrap();
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let details = stmt
            .query_map(params_from_iter(args), |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        details.join("\n")
    }

    #[test]
    fn a_page_of_members_reads_the_index_in_order() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        let first = MemberQuery {
            list_id: ListId("news".to_owned()),
            status: None,
            emails: Vec::new(),
            joined: Vec::new(),
            newest_first: false,
            page_size: 10,
            cursor: None,
        };
        let cursor = crate::query::encode_cursor(&serde_json::json!([5, 7]));
        let queries = [
            first.clone(),
            MemberQuery {
                status: Some(MemberStatus::Pending),
                newest_first: true,
                ..first.clone()
            },
            MemberQuery {
                joined: vec![TimeBound {
                    cmp: Cmp::Gt,
                    at: jiff::Timestamp::UNIX_EPOCH,
                }],
                cursor: Some(cursor),
                ..first.clone()
            },
        ];
        for q in &queries {
            let plan = plan(&conn, q);
            assert!(plan.contains("list_members_by_status"), "{q:?}\n{plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{q:?}\n{plan}");
        }
    }
}
