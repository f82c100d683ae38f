//! Lists, their members and email consent: the public types, and their reads.
//!
//! The writes are log entries (`api_list`, `api_consent`) applied by the pipeline
//! (`apply/lists.rs`, `apply/consent.rs`).

use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use signalbox_core::Email;

use crate::model::{Profile, ProfileId, TimeBound};
use crate::query::ts;

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

/// The page size of list listings when none is given, and of member listings.
pub(crate) fn lists_page_size(n: u32) -> u32 {
    match n {
        0 => 10,
        n => n.min(1000),
    }
}

pub(crate) fn members_page_size(n: u32) -> u32 {
    match n {
        0 => 20,
        n => n.min(1000),
    }
}

/// A stored member status: `pending`, else a member.
pub(crate) fn stored_member_status(text: &str) -> MemberStatus {
    if text == "pending" {
        MemberStatus::Pending
    } else {
        MemberStatus::Member
    }
}

/// A `lists` row as stored, with its member count.
pub(crate) struct StoredList {
    pub id: String,
    pub name: String,
    pub opt_in: String,
    pub created_us: i64,
    pub updated_us: i64,
    pub members: i64,
}

impl StoredList {
    pub(crate) fn into_list(self) -> List {
        List {
            id: ListId(self.id),
            name: self.name,
            opt_in_process: OptInProcess::parse(&self.opt_in).unwrap_or_default(),
            created: ts(self.created_us),
            updated: ts(self.updated_us),
            profile_count: self.members.max(0) as u64,
        }
    }
}

/// An `email_consent` row as stored.
pub(crate) struct StoredConsent {
    pub status: String,
    pub status_us: i64,
    pub method: Option<String>,
    pub method_detail: Option<String>,
    pub custom_source: Option<String>,
    pub double_opt_in: Option<bool>,
    pub suppressions: String,
}

impl StoredConsent {
    /// The consent as the API shows it (see [`EmailConsent`]); `None`: no row.
    pub(crate) fn email_consent(row: Option<StoredConsent>) -> EmailConsent {
        let mut consent = match row {
            None => EmailConsent::default(),
            Some(row) => {
                let consent = ConsentStatus::parse(&row.status).unwrap_or_default();
                EmailConsent {
                    consent,
                    consent_timestamp: (consent != ConsentStatus::NeverSubscribed)
                        .then(|| ts(row.status_us)),
                    method: row.method,
                    method_detail: row.method_detail,
                    custom_source: row.custom_source,
                    double_optin: row.double_opt_in,
                    suppressions: parse_suppressions(&row.suppressions),
                    can_receive_email_marketing: false,
                }
            }
        };
        consent.compute_can_receive();
        consent
    }

    /// The consent as segment conditions read it. Suppressions of a reason it does not know
    /// are left out.
    pub(crate) fn view(self) -> signalbox_seglang::ConsentView {
        use signalbox_seglang::{
            ConsentStatus as Status, ConsentView, Suppression as Suppressed,
            SuppressionReason as Reason,
        };
        let status = match self.status.as_str() {
            "SUBSCRIBED" => Status::Subscribed,
            "UNSUBSCRIBED" => Status::Unsubscribed,
            _ => Status::NeverSubscribed,
        };
        let suppressions: Vec<serde_json::Value> =
            serde_json::from_str(&self.suppressions).unwrap_or_default();
        let suppressions: Vec<Suppressed> = suppressions
            .iter()
            .filter_map(|s| {
                let reason = match s.get("reason")?.as_str()? {
                    "HARD_BOUNCE" => Reason::HardBounce,
                    "INVALID_EMAIL" => Reason::InvalidEmail,
                    "SPAM_COMPLAINT" => Reason::SpamComplaint,
                    "UNSUBSCRIBE" => Reason::Unsubscribe,
                    "USER_SUPPRESSED" => Reason::UserSuppressed,
                    _ => return None,
                };
                Some(Suppressed {
                    reason,
                    timestamp: ts(s.get("at_us")?.as_i64()?),
                })
            })
            .collect();
        ConsentView {
            // Klaviyo's implicit consent: anyone not unsubscribed and not suppressed.
            can_receive_marketing: status != Status::Unsubscribed && suppressions.is_empty(),
            status,
            status_date: Some(ts(self.status_us)),
            method: self.method,
            method_detail: self.method_detail,
            custom_source: self.custom_source,
            double_opt_in: self.double_opt_in,
            suppressions,
        }
    }
}
