//! The queries of lists, members and email consent (as `db/lists.rs`).

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::profiles::{
    profile_key, profile_row, push_bounds, PROFILE_COLUMNS, PROFILE_COLUMN_COUNT,
};
use super::{row_one, row_opt, rows, Sql};
use crate::apply::profile::ProfileRow;
use crate::error::{EngageError, EngageResult};
use crate::lists::*;
use crate::model::{Page, ProfileId};
use crate::query::{cursor_i64, decode_cursor, into_page, keyset, ts};

/// `member_count` is kept by the schema's triggers as members join and leave.
const LIST_COLUMNS: &str = "id, name, opt_in, created_us, updated_us, member_count, pk";

fn list_row(r: &Row) -> List {
    StoredList {
        id: r.get(0),
        name: r.get(1),
        opt_in: r.get(2),
        created_us: r.get(3),
        updated_us: r.get(4),
        members: r.get(5),
    }
    .into_list()
}

pub(crate) async fn get_list(c: &impl GenericClient, id: &ListId) -> EngageResult<List> {
    row_opt(
        c,
        &format!("SELECT {LIST_COLUMNS} FROM lists WHERE id = $1"),
        &[&id.0],
    )
    .await?
    .map(|r| list_row(&r))
    .ok_or_else(|| EngageError::not_found(format!("list {id}")))
}

pub(crate) async fn list_lists(c: &impl GenericClient, q: &ListQuery) -> EngageResult<Page<List>> {
    let size = lists_page_size(q.page_size);
    let mut sql = Sql::new(format!("SELECT {LIST_COLUMNS} FROM lists WHERE 1 = 1"));
    for (column, values) in [
        ("name", q.names.clone()),
        ("id", q.ids.iter().map(|i| i.0.clone()).collect::<Vec<_>>()),
    ] {
        if values.is_empty() {
            continue;
        }
        let any = sql.arg(values);
        sql.push(&format!(" AND {column} = ANY({any})"));
    }
    if let Some(cursor) = &q.cursor {
        let after = sql.arg(cursor_i64(&decode_cursor(cursor)?, 0)?);
        sql.push(&format!(" AND pk > {after}"));
    }
    let limit = sql.arg(i64::from(size) + 1);
    sql.push(&format!(" ORDER BY pk LIMIT {limit}"));
    let rows: Vec<(List, i64)> = sql
        .rows(c)
        .await?
        .iter()
        .map(|r| (list_row(r), r.get(6)))
        .collect();
    Ok(into_page(
        rows,
        size,
        |(_, pk)| serde_json::json!([pk]),
        |(list, _)| list,
    ))
}

pub(crate) async fn list_members(
    c: &impl GenericClient,
    q: &MemberQuery,
) -> EngageResult<Page<ListMember>> {
    get_list(c, &q.list_id).await?;
    let size = members_page_size(q.page_size);
    let sql = members_sql(q, size)?;
    let rows: Vec<(ProfileRow, String, i64)> = sql
        .rows(c)
        .await?
        .iter()
        .map(|r| {
            (
                profile_row(r),
                r.get(PROFILE_COLUMN_COUNT),
                r.get(PROFILE_COLUMN_COUNT + 1),
            )
        })
        .collect();
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

/// The query of a page of members (`size` rows and one more): one status of one list, in
/// the order of `list_members_by_status`.
fn members_sql(q: &MemberQuery, size: u32) -> EngageResult<Sql> {
    let mut sql = Sql::new(format!(
        "SELECT {PROFILE_COLUMNS}, m.status, m.joined_us FROM list_members m
         JOIN profiles ON profiles.pk = m.profile_pk WHERE 1 = 1"
    ));
    let status = q.status.unwrap_or(MemberStatus::Member);
    let (list, status) = (
        sql.arg(q.list_id.0.clone()),
        sql.arg(status.as_str().to_owned()),
    );
    sql.push(&format!(" AND m.list_id = {list} AND m.status = {status}"));
    if !q.emails.is_empty() {
        let emails = sql.arg(
            q.emails
                .iter()
                .map(|e| crate::email::normal_form(e))
                .collect::<Vec<String>>(),
        );
        sql.push(&format!(" AND profiles.email = ANY({emails})"));
    }
    push_bounds(&mut sql, "m.joined_us", &q.joined);
    let (op, dir) = keyset(q.newest_first);
    if let Some(cursor) = &q.cursor {
        let items = decode_cursor(cursor)?;
        let (joined, pk) = (cursor_i64(&items, 0)?, cursor_i64(&items, 1)?);
        let (joined, pk) = (sql.arg(joined), sql.arg(pk));
        sql.push(&format!(
            " AND (m.joined_us {op} {joined} OR (m.joined_us = {joined} AND m.profile_pk {op} {pk}))"
        ));
    }
    let limit = sql.arg(i64::from(size) + 1);
    sql.push(&format!(
        " ORDER BY m.joined_us {dir}, m.profile_pk {dir} LIMIT {limit}"
    ));
    Ok(sql)
}

/// The consent columns of `email_consent` that [`consent_row`] reads.
pub(crate) const CONSENT_COLUMNS: &str = "status, status_us, method, method_detail,
    custom_source, CASE WHEN double_opt_in IS NULL THEN NULL ELSE double_opt_in <> 0 END,
    suppressions";

/// A consent row from [`CONSENT_COLUMNS`], starting at column `first`.
pub(crate) fn consent_row(r: &Row, first: usize) -> StoredConsent {
    StoredConsent {
        status: r.get(first),
        status_us: r.get(first + 1),
        method: r.get(first + 2),
        method_detail: r.get(first + 3),
        custom_source: r.get(first + 4),
        double_opt_in: r.get(first + 5),
        suppressions: r.get(first + 6),
    }
}

pub(crate) async fn email_consent(
    c: &impl GenericClient,
    id: &ProfileId,
) -> EngageResult<EmailConsent> {
    let pk = profile_key(c, id)
        .await?
        .ok_or_else(|| EngageError::not_found(format!("profile {id}")))?;
    let row = row_opt(
        c,
        &format!("SELECT {CONSENT_COLUMNS} FROM email_consent WHERE profile_pk = $1"),
        &[&pk],
    )
    .await?;
    Ok(StoredConsent::email_consent(
        row.map(|r| consent_row(&r, 0)),
    ))
}

/// A member's status on a list, if it is on it.
pub(crate) async fn member_status(
    c: &impl GenericClient,
    list: &ListId,
    profile: &ProfileId,
) -> EngageResult<Option<MemberStatus>> {
    let Some(pk) = profile_key(c, profile).await? else {
        return Ok(None);
    };
    let row = row_opt(
        c,
        "SELECT status FROM list_members WHERE list_id = $1 AND profile_pk = $2",
        &[&list.0, &pk],
    )
    .await?;
    Ok(row.map(|r| stored_member_status(r.get(0))))
}

/// The lists a profile is on, at most `limit` of them (by list id), and their number: reads
/// only the profile's own rows of `list_members` (the index by profile).
pub(crate) async fn lists_of_profile(
    c: &impl GenericClient,
    profile: &ProfileId,
    limit: u32,
) -> EngageResult<ProfileLists> {
    let pk = profile_key(c, profile)
        .await?
        .ok_or_else(|| EngageError::not_found(format!("profile {profile}")))?;
    let total: i64 = row_one(
        c,
        "SELECT COUNT(*) FROM list_members m JOIN lists l ON l.id = m.list_id
         WHERE m.profile_pk = $1",
        &[&pk],
    )
    .await?
    .get(0);
    let items = rows(
        c,
        r#"SELECT m.list_id, l.name, l.opt_in, m.status, m.joined_us, m.confirm_optin <> 0
           FROM list_members m JOIN lists l ON l.id = m.list_id
           WHERE m.profile_pk = $1
           ORDER BY m.list_id COLLATE "C"
           LIMIT $2"#,
        &[&pk, &i64::from(limit)],
    )
    .await?
    .iter()
    .map(|r| ProfileListMembership {
        list_id: ListId(r.get(0)),
        name: r.get(1),
        opt_in_process: OptInProcess::parse(r.get(2)).unwrap_or_default(),
        status: stored_member_status(r.get(3)),
        joined: ts(r.get(4)),
        confirm_optin: r.get(5),
    })
    .collect();
    Ok(ProfileLists {
        items,
        total: total.max(0) as u64,
    })
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;
    use signalbox_store::postgres::testing::TestDatabase;
    use signalbox_store::postgres::{connect_pool, schema};

    use super::*;
    use crate::db::postgres::schema::{COMPONENT, MIGRATIONS};
    use crate::model::{Cmp, TimeBound};
    use crate::query::encode_cursor;

    #[tokio::test]
    async fn a_page_of_members_reads_the_index_in_order() {
        let Some(db) = TestDatabase::create().await else {
            return;
        };
        let pool = connect_pool(db.url(), 1).unwrap();
        let mut client = pool.get().await.unwrap();
        schema::migrate(&mut client, COMPONENT, MIGRATIONS)
            .await
            .unwrap();
        // On empty tables a scan is cheapest; forbidding it shows which index applies, and
        // forbidding a sort shows the index gives the page's order.
        client
            .batch_execute("SET enable_seqscan = off; SET enable_sort = off")
            .await
            .unwrap();
        let first = MemberQuery {
            list_id: ListId("news".to_owned()),
            status: None,
            emails: Vec::new(),
            joined: Vec::new(),
            newest_first: false,
            page_size: 10,
            cursor: None,
        };
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
                    at: Timestamp::UNIX_EPOCH,
                }],
                cursor: Some(encode_cursor(&serde_json::json!([5, 7]))),
                ..first.clone()
            },
        ];
        for q in &queries {
            let sql = members_sql(q, 10).unwrap();
            let plan: Vec<String> = client
                .query(&format!("EXPLAIN {}", sql.text), &sql.params())
                .await
                .unwrap()
                .iter()
                .map(|row| row.get(0))
                .collect();
            let plan = plan.join("\n");
            assert!(plan.contains("list_members_by_status"), "{q:?}\n{plan}");
            assert!(!plan.contains("Sort"), "{q:?}\n{plan}");
        }
    }
}
