//! Lists, their members and email consent: the public types, and their reads.
//!
//! The writes are log entries (`api_list`, `api_consent`) applied by the pipeline
//! (`apply/lists.rs`, `apply/consent.rs`).

use std::fmt;

use jiff::Timestamp;
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use signalbox_core::Email;

use crate::apply::profile::ProfileRow;
use crate::db::rows::{profile_row, PROFILE_COLUMNS, PROFILE_COLUMN_COUNT};
use crate::error::{EngageError, EngageResult};
use crate::model::{Page, Profile, ProfileId, TimeBound};
use crate::query::{cmp_sql, cursor_i64, decode_cursor, encode_cursor, profile_key, ts};

/// A list's id: 6 alphanumeric characters, like Klaviyo's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ListId(pub String);

impl fmt::Display for ListId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl ListId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How a list takes subscribers: at once, or after they confirm through a link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptInProcess {
    #[default]
    SingleOptIn,
    DoubleOptIn,
}

impl OptInProcess {
    pub fn as_str(self) -> &'static str {
        match self {
            OptInProcess::SingleOptIn => "single_opt_in",
            OptInProcess::DoubleOptIn => "double_opt_in",
        }
    }

    pub fn parse(text: &str) -> Option<OptInProcess> {
        match text {
            "single_opt_in" => Some(OptInProcess::SingleOptIn),
            "double_opt_in" => Some(OptInProcess::DoubleOptIn),
            _ => None,
        }
    }
}

/// A list of profiles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct List {
    pub id: ListId,
    pub name: String,
    pub opt_in_process: OptInProcess,
    pub created: Timestamp,
    pub updated: Timestamp,
    /// Members (not counting pending ones).
    pub profile_count: u64,
}

/// Whether a profile is on a list, or waits to confirm a double opt-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberStatus {
    Member,
    Pending,
}

impl MemberStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Member => "member",
            MemberStatus::Pending => "pending",
        }
    }
}

/// A profile on a list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ListMember {
    pub profile: Profile,
    pub status: MemberStatus,
    /// When it joined (or asked to join, while pending): Klaviyo's `joined_group_at`.
    pub joined: Timestamp,
}

/// A list a profile is on (a member, or pending until it confirms a double opt-in).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProfileListMembership {
    pub list_id: ListId,
    pub name: String,
    pub opt_in_process: OptInProcess,
    pub status: MemberStatus,
    /// When it joined (or asked to join, while pending).
    pub joined: Timestamp,
    /// Whether it joined through a double opt-in (a confirmation was asked for).
    pub confirm_optin: bool,
}

/// The lists a profile is on: the first ones (by list id) and how many there are in all.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProfileLists {
    pub items: Vec<ProfileListMembership>,
    /// Every list the profile is on, also those past `items`.
    pub total: u64,
}

/// A listing of lists, by creation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ListQuery {
    /// Only lists with one of these names (empty: any).
    pub names: Vec<String>,
    /// Only lists with one of these ids (empty: any).
    pub ids: Vec<ListId>,
    pub page_size: u32,
    pub cursor: Option<String>,
}

/// A listing of a list's members, by `joined_group_at`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemberQuery {
    pub list_id: ListId,
    /// `None`: members only; `Some(Pending)`: only those waiting to confirm.
    pub status: Option<MemberStatus>,
    pub emails: Vec<String>,
    pub joined: Vec<TimeBound>,
    pub newest_first: bool,
    pub page_size: u32,
    pub cursor: Option<String>,
}

/// Email marketing consent, as Klaviyo models it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConsentStatus {
    Subscribed,
    Unsubscribed,
    #[default]
    NeverSubscribed,
}

impl ConsentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsentStatus::Subscribed => "SUBSCRIBED",
            ConsentStatus::Unsubscribed => "UNSUBSCRIBED",
            ConsentStatus::NeverSubscribed => "NEVER_SUBSCRIBED",
        }
    }

    pub fn parse(text: &str) -> Option<ConsentStatus> {
        match text {
            "SUBSCRIBED" => Some(ConsentStatus::Subscribed),
            "UNSUBSCRIBED" => Some(ConsentStatus::Unsubscribed),
            "NEVER_SUBSCRIBED" => Some(ConsentStatus::NeverSubscribed),
            _ => None,
        }
    }
}

/// Why a profile may not receive email marketing, whatever its consent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SuppressionReason {
    HardBounce,
    InvalidEmail,
    SpamComplaint,
    Unsubscribe,
    UserSuppressed,
}

impl SuppressionReason {
    pub const ALL: [SuppressionReason; 5] = [
        SuppressionReason::HardBounce,
        SuppressionReason::InvalidEmail,
        SuppressionReason::SpamComplaint,
        SuppressionReason::Unsubscribe,
        SuppressionReason::UserSuppressed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SuppressionReason::HardBounce => "HARD_BOUNCE",
            SuppressionReason::InvalidEmail => "INVALID_EMAIL",
            SuppressionReason::SpamComplaint => "SPAM_COMPLAINT",
            SuppressionReason::Unsubscribe => "UNSUBSCRIBE",
            SuppressionReason::UserSuppressed => "USER_SUPPRESSED",
        }
    }

    /// The suppressions a new subscription lifts (bounces and invalid addresses stay).
    pub fn lifted_by_subscribing(self) -> bool {
        matches!(
            self,
            SuppressionReason::Unsubscribe
                | SuppressionReason::SpamComplaint
                | SuppressionReason::UserSuppressed
        )
    }
}

/// One global suppression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suppression {
    pub reason: SuppressionReason,
    pub timestamp: Timestamp,
}

/// A profile's email marketing consent (`subscriptions.email.marketing`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailConsent {
    pub consent: ConsentStatus,
    /// When the consent last changed (`None`: never subscribed).
    pub consent_timestamp: Option<Timestamp>,
    pub method: Option<String>,
    pub method_detail: Option<String>,
    pub custom_source: Option<String>,
    pub double_optin: Option<bool>,
    pub suppressions: Vec<Suppression>,
    /// No global suppression and not unsubscribed (Klaviyo's implicit consent: a profile
    /// that never subscribed may still be emailed).
    pub can_receive_email_marketing: bool,
}

impl EmailConsent {
    pub(crate) fn compute_can_receive(&mut self) {
        self.can_receive_email_marketing =
            self.suppressions.is_empty() && self.consent != ConsentStatus::Unsubscribed;
    }

    /// Why a call under a public key (a Tracking API identify with `listId`) may not subscribe
    /// this profile: it unsubscribed, or a suppression stands. `None` when it may.
    pub(crate) fn refuses_tracking_subscription(&self) -> Option<String> {
        if self.consent == ConsentStatus::Unsubscribed {
            return Some("unsubscribed".to_owned());
        }
        if self.suppressions.is_empty() {
            return None;
        }
        let reasons: Vec<&str> = self
            .suppressions
            .iter()
            .map(|s| s.reason.as_str())
            .collect();
        Some(format!("is suppressed ({})", reasons.join(", ")))
    }
}

/// A subscription job: each profile (by email) is created or updated, then subscribed to
/// email marketing, or, through a double opt-in list, left pending until it confirms.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SubscribeRequest {
    pub list_id: Option<ListId>,
    pub emails: Vec<Email>,
    pub custom_source: Option<String>,
    /// Skips double opt-in (consent given elsewhere, at `consented_at`).
    pub historical_import: bool,
    pub consented_at: Option<Timestamp>,
}

/// An unsubscribe job: the profiles with these emails are unsubscribed (and suppressed with
/// `UNSUBSCRIBE`); with a list, also removed from it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UnsubscribeRequest {
    pub list_id: Option<ListId>,
    pub emails: Vec<Email>,
}

/// What a suppression job names: emails, all members of a list (as they are when the job is
/// applied), or profiles by id (a segment's members, as the segment engine holds them when
/// the job is asked for).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SuppressTarget {
    Emails(Vec<Email>),
    List(ListId),
    Profiles(Vec<ProfileId>),
}

/// What confirming a double opt-in did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfirmOutcome {
    Confirmed,
    /// The profile was a member already: nothing changed.
    AlreadyMember,
}

/// A profile to add to a list by its identifiers (CSV or JSON lines import).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportRow {
    pub email: Email,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
}

// Reads.

pub(crate) fn list_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<List> {
    let opt_in: String = r.get(2)?;
    Ok(List {
        id: ListId(r.get(0)?),
        name: r.get(1)?,
        opt_in_process: OptInProcess::parse(&opt_in).unwrap_or_default(),
        created: ts(r.get(3)?),
        updated: ts(r.get(4)?),
        profile_count: r.get::<_, i64>(5)?.max(0) as u64,
    })
}

const LIST_COLUMNS: &str = "id, name, opt_in, created_us, updated_us,
    (SELECT COUNT(*) FROM list_members m WHERE m.list_id = lists.id AND m.status = 'member'),
    pk";

pub(crate) fn get_list(conn: &Connection, id: &ListId) -> EngageResult<List> {
    conn.prepare_cached(&format!("SELECT {LIST_COLUMNS} FROM lists WHERE id = ?1"))?
        .query_row([&id.0], list_row)
        .optional()?
        .ok_or_else(|| EngageError::not_found(format!("list {id}")))
}

pub(crate) fn list_lists(conn: &Connection, q: &ListQuery) -> EngageResult<Page<List>> {
    let size = match q.page_size {
        0 => 10,
        n => n.min(1000),
    };
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
    let mut rows: Vec<(List, i64)> = rows.collect::<Result<_, _>>()?;
    let next_cursor = if rows.len() > size as usize {
        rows.truncate(size as usize);
        rows.last()
            .map(|(_, pk)| encode_cursor(&serde_json::json!([pk])))
    } else {
        None
    };
    Ok(Page {
        items: rows.into_iter().map(|(list, _)| list).collect(),
        next_cursor,
    })
}

pub(crate) fn list_members(conn: &Connection, q: &MemberQuery) -> EngageResult<Page<ListMember>> {
    get_list(conn, &q.list_id)?;
    let size = match q.page_size {
        0 => 20,
        n => n.min(1000),
    };
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
    let (op, dir) = if q.newest_first {
        ("<", "DESC")
    } else {
        (">", "ASC")
    };
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
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(args), |r| {
        let row = profile_row(r)?;
        let status: String = r.get(PROFILE_COLUMN_COUNT)?;
        let joined: i64 = r.get(PROFILE_COLUMN_COUNT + 1)?;
        Ok((row, status, joined))
    })?;
    let mut rows: Vec<(ProfileRow, String, i64)> = rows.collect::<Result<_, _>>()?;
    let next_cursor = if rows.len() > size as usize {
        rows.truncate(size as usize);
        rows.last()
            .map(|(row, _, joined)| encode_cursor(&serde_json::json!([joined, row.pk])))
    } else {
        None
    };
    Ok(Page {
        items: rows
            .iter()
            .map(|(row, status, joined)| ListMember {
                profile: row.to_profile(),
                status: if status == "pending" {
                    MemberStatus::Pending
                } else {
                    MemberStatus::Member
                },
                joined: ts(*joined),
            })
            .collect(),
        next_cursor,
    })
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
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, Option<bool>>(5)?,
                r.get::<_, String>(6)?,
            ))
        })
        .optional()?;
    let mut consent = match row {
        None => EmailConsent::default(),
        Some((status, status_us, method, method_detail, custom_source, double_optin, supp)) => {
            let consent = ConsentStatus::parse(&status).unwrap_or_default();
            EmailConsent {
                consent,
                consent_timestamp: (consent != ConsentStatus::NeverSubscribed)
                    .then(|| ts(status_us)),
                method,
                method_detail,
                custom_source,
                double_optin,
                suppressions: parse_suppressions(&supp),
                can_receive_email_marketing: false,
            }
        }
    };
    consent.compute_can_receive();
    Ok(consent)
}

/// `email_consent.suppressions` JSON: `[{"reason": …, "at_us": …}]`.
pub(crate) fn parse_suppressions(text: &str) -> Vec<Suppression> {
    #[derive(Deserialize)]
    struct Stored {
        reason: SuppressionReason,
        at_us: i64,
    }
    serde_json::from_str::<Vec<Stored>>(text)
        .unwrap_or_default()
        .into_iter()
        .map(|s| Suppression {
            reason: s.reason,
            timestamp: ts(s.at_us),
        })
        .collect()
}

pub(crate) fn suppressions_json(suppressions: &[Suppression]) -> String {
    let items: Vec<serde_json::Value> = suppressions
        .iter()
        .map(|s| serde_json::json!({"reason": s.reason, "at_us": s.timestamp.as_microsecond()}))
        .collect();
    serde_json::Value::Array(items).to_string()
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
    Ok(status.map(|s| {
        if s == "pending" {
            MemberStatus::Pending
        } else {
            MemberStatus::Member
        }
    }))
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
                status: if status == "pending" {
                    MemberStatus::Pending
                } else {
                    MemberStatus::Member
                },
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
