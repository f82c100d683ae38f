//! Email consent and suppressions: `api_consent` entries (subscription and suppression
//! jobs, double opt-in confirmations and unsubscribes through signed links).
//!
//! Consent becoming `UNSUBSCRIBED` stores an `Unsubscribed` event (integration `Signalbox`);
//! every change marks the profile changed for the change feed.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use signalbox_core::StoredCall;

use super::lists::{Join, OpOutcome, OpResult};
use super::store::ApplyTx;
use super::Batch;
use crate::error::{EngageError, EngageResult};
use crate::lists::{
    ConfirmOutcome, ConsentStatus, EmailConsent, ListId, MemberStatus, OptInProcess, Suppression,
    SuppressionReason,
};
use crate::model::{ProfileId, ProfileInput};
use crate::outbox::{read_stamped, OutboxChange};

/// `api_consent` entries. Jobs are split into one entry per email (an entry creates few
/// profiles at most).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum ApiConsentOp {
    Subscribe {
        email: String,
        list: Option<ListId>,
        custom_source: Option<String>,
        historical_import: bool,
        consented_at: Option<Timestamp>,
    },
    Unsubscribe {
        email: String,
        list: Option<ListId>,
    },
    Suppress {
        email: String,
        reason: SuppressionReason,
    },
    /// Suppresses every member of a list.
    SuppressList {
        list: ListId,
        reason: SuppressionReason,
    },
    /// Lifts `USER_SUPPRESSED` (the only suppression a user may lift).
    Unsuppress {
        email: String,
    },
    UnsuppressList {
        list: ListId,
    },
    /// Suppresses profiles by id (members of a segment when the job was asked for; no
    /// profile is created, so one entry holds many).
    SuppressProfiles {
        profiles: Vec<ProfileId>,
        reason: SuppressionReason,
    },
    UnsuppressProfiles {
        profiles: Vec<ProfileId>,
    },
    /// A double opt-in confirmed through its signed link.
    Confirm {
        list: ListId,
        profile: ProfileId,
    },
    /// An unsubscribe through a signed link.
    LinkUnsubscribe {
        profile: ProfileId,
    },
}

impl<T: ApplyTx> Batch<'_, T> {
    pub(super) fn consent(&self, pk: i64) -> EngageResult<EmailConsent> {
        self.tx.consent(pk)
    }

    fn store_consent(&mut self, pk: i64, consent: &EmailConsent) -> EngageResult<()> {
        let status_us = consent
            .consent_timestamp
            .map(|t| t.as_microsecond())
            .unwrap_or(self.entry.received_us);
        self.tx.store_consent(pk, consent, status_us)?;
        self.profile(pk)?.mark_changed();
        let suppressed = consent
            .suppressions
            .iter()
            .max_by_key(|s| s.timestamp)
            .map(|s| s.reason.as_str().to_owned());
        self.outbox(
            pk,
            None,
            OutboxChange::Consent {
                consent: consent.consent.as_str().to_owned(),
                suppressed,
            },
        )
    }

    fn now(&self) -> Timestamp {
        Timestamp::from_microsecond(self.entry.received_us).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    /// Sets consent to SUBSCRIBED and lifts the suppressions a subscription lifts.
    pub(super) fn set_subscribed(
        &mut self,
        pk: i64,
        method: &str,
        method_detail: Option<&str>,
        custom_source: Option<&str>,
        double_optin: bool,
        at: Option<Timestamp>,
    ) -> EngageResult<bool> {
        let before = self.consent(pk)?;
        let mut after = before.clone();
        after
            .suppressions
            .retain(|s| !s.reason.lifted_by_subscribing());
        if before.consent != ConsentStatus::Subscribed {
            after.consent = ConsentStatus::Subscribed;
            after.consent_timestamp = Some(at.unwrap_or_else(|| self.now()));
            after.method = Some(method.to_owned());
            after.method_detail = method_detail.map(str::to_owned);
            after.custom_source = custom_source.map(str::to_owned);
            after.double_optin = Some(double_optin);
        } else if double_optin && before.double_optin != Some(true) {
            after.double_optin = Some(true);
        }
        if after == before {
            return Ok(false);
        }
        self.store_consent(pk, &after)?;
        self.count("consent.subscribed", 1);
        Ok(true)
    }

    /// Sets consent to UNSUBSCRIBED with an `UNSUBSCRIBE` suppression; the first time, an
    /// `Unsubscribed` event.
    pub(super) fn set_unsubscribed(
        &mut self,
        pk: i64,
        method: &str,
        method_detail: Option<&str>,
    ) -> EngageResult<bool> {
        let (changed, newly) = self.store_unsubscribed(pk, method, method_detail)?;
        if newly {
            let mut properties = Map::new();
            properties.insert("method".into(), Value::String(method.to_owned()));
            if let Some(detail) = method_detail {
                properties.insert("method_detail".into(), Value::String(detail.to_owned()));
            }
            self.signal_event(pk, "Unsubscribed", properties)?;
        }
        Ok(changed)
    }

    /// Sets consent to UNSUBSCRIBED with an `UNSUBSCRIBE` suppression, for an `Unsubscribed`
    /// event that is already stored (a built-in one).
    pub(super) fn set_unsubscribed_by_event(&mut self, pk: i64) -> EngageResult<bool> {
        Ok(self.store_unsubscribed(pk, "EMAIL_UNSUBSCRIBE", None)?.0)
    }

    /// `(changed, newly unsubscribed)`.
    fn store_unsubscribed(
        &mut self,
        pk: i64,
        method: &str,
        method_detail: Option<&str>,
    ) -> EngageResult<(bool, bool)> {
        let before = self.consent(pk)?;
        let mut after = before.clone();
        if !after
            .suppressions
            .iter()
            .any(|s| s.reason == SuppressionReason::Unsubscribe)
        {
            after.suppressions.push(Suppression {
                reason: SuppressionReason::Unsubscribe,
                timestamp: self.now(),
            });
        }
        let newly = before.consent != ConsentStatus::Unsubscribed;
        if newly {
            after.consent = ConsentStatus::Unsubscribed;
            after.consent_timestamp = Some(self.now());
            after.method = Some(method.to_owned());
            after.method_detail = method_detail.map(str::to_owned);
            after.double_optin = None;
        }
        if after == before {
            return Ok((false, false));
        }
        self.store_consent(pk, &after)?;
        if newly {
            self.count("consent.unsubscribed", 1);
        }
        Ok((true, newly))
    }

    pub(super) fn set_suppressed(
        &mut self,
        pk: i64,
        reason: SuppressionReason,
    ) -> EngageResult<bool> {
        let before = self.consent(pk)?;
        if before.suppressions.iter().any(|s| s.reason == reason) {
            return Ok(false);
        }
        let mut after = before;
        after.suppressions.push(Suppression {
            reason,
            timestamp: self.now(),
        });
        self.store_consent(pk, &after)?;
        self.count("consent.suppressed", 1);
        Ok(true)
    }

    fn lift_user_suppression(&mut self, pk: i64) -> EngageResult<bool> {
        let before = self.consent(pk)?;
        let mut after = before.clone();
        after
            .suppressions
            .retain(|s| s.reason != SuppressionReason::UserSuppressed);
        if after == before {
            return Ok(false);
        }
        self.store_consent(pk, &after)?;
        Ok(true)
    }

    /// Subscribes a profile through a list: pending on a double opt-in, else a member and
    /// SUBSCRIBED. With `resubscribe` off (identify calls, which repeat on every visit), a
    /// profile already on the list keeps its consent: an unsubscribe is not undone.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn subscribe_profile(
        &mut self,
        pk: i64,
        list: &ListId,
        double_opt_in: bool,
        resubscribe: bool,
        method: &str,
        method_detail: Option<&str>,
        custom_source: Option<&str>,
    ) -> EngageResult<bool> {
        if double_opt_in {
            if self.member_status(list, pk)? == Some(MemberStatus::Member) {
                return Ok(false);
            }
            return self.join_list(list, pk, Join::Pending, true);
        }
        let joined = self.join_list(list, pk, Join::Member, false)?;
        if !joined && !resubscribe {
            return Ok(false);
        }
        let subscribed =
            self.set_subscribed(pk, method, method_detail, custom_source, false, None)?;
        Ok(joined || subscribed)
    }

    /// The profile an email names, created if none does.
    fn profile_for_email(&mut self, email: &str) -> EngageResult<Result<i64, EngageError>> {
        self.profile_for_input(ProfileInput {
            email: Some(email.to_owned()),
            ..ProfileInput::default()
        })
    }

    fn list_members_of(&self, list: &ListId) -> EngageResult<Vec<i64>> {
        self.tx.list_profiles(list, false)
    }

    pub(super) fn apply_api_consent(&mut self, entry: &StoredCall) -> EngageResult<()> {
        let op: ApiConsentOp = match read_stamped(&entry.payload) {
            Ok((op, origin)) => {
                self.entry.origin = origin;
                op
            }
            Err(err) => {
                return self.record_op_result(&Err(EngageError::Internal(format!(
                    "unreadable API consent write: {err}"
                ))));
            }
        };
        let result = self.api_consent_op(op)?;
        if let Err(err) = &result {
            self.problem(None, &format!("consent change not applied: {err}"))?;
        }
        self.count("applied.api_consent", 1);
        self.record_op_result(&result)
    }

    fn api_consent_op(&mut self, op: ApiConsentOp) -> EngageResult<OpResult> {
        let mut outcome = OpOutcome::default();
        match op {
            ApiConsentOp::Subscribe {
                email,
                list,
                custom_source,
                historical_import,
                consented_at,
            } => {
                let opt_in = match &list {
                    Some(id) => match self.list_info(id)? {
                        Some((_, opt_in)) => Some(opt_in),
                        None => return Ok(Err(EngageError::not_found(format!("list {id}")))),
                    },
                    None => None,
                };
                let pk = match self.profile_for_email(&email)? {
                    Ok(pk) => pk,
                    Err(err) => return Ok(Err(err)),
                };
                let changed = match (&list, opt_in) {
                    (Some(id), Some(opt_in)) => {
                        let double = opt_in == OptInProcess::DoubleOptIn && !historical_import;
                        if historical_import {
                            let joined = self.join_list(id, pk, Join::Member, false)?;
                            let subscribed = self.set_subscribed(
                                pk,
                                "API",
                                Some("historical import"),
                                custom_source.as_deref(),
                                false,
                                consented_at,
                            )?;
                            joined || subscribed
                        } else {
                            self.subscribe_profile(
                                pk,
                                id,
                                double,
                                true,
                                "API",
                                None,
                                custom_source.as_deref(),
                            )?
                        }
                    }
                    _ => self.set_subscribed(
                        pk,
                        "API",
                        None,
                        custom_source.as_deref(),
                        false,
                        consented_at.filter(|_| historical_import),
                    )?,
                };
                outcome.list = list;
                outcome.changed = u64::from(changed);
            }
            ApiConsentOp::Unsubscribe { email, list } => {
                if let Some(id) = &list {
                    if self.list_info(id)?.is_none() {
                        return Ok(Err(EngageError::not_found(format!("list {id}"))));
                    }
                }
                let pk = match self.profile_for_email(&email)? {
                    Ok(pk) => pk,
                    Err(err) => return Ok(Err(err)),
                };
                let mut changed = self.set_unsubscribed(pk, "API", None)?;
                if let Some(id) = &list {
                    changed |= self.leave_list(id, pk)?;
                }
                outcome.list = list;
                outcome.changed = u64::from(changed);
            }
            ApiConsentOp::Suppress { email, reason } => {
                let pk = match self.profile_for_email(&email)? {
                    Ok(pk) => pk,
                    Err(err) => return Ok(Err(err)),
                };
                outcome.changed = u64::from(self.set_suppressed(pk, reason)?);
            }
            ApiConsentOp::SuppressList { list, reason } => {
                if self.list_info(&list)?.is_none() {
                    return Ok(Err(EngageError::not_found(format!("list {list}"))));
                }
                for pk in self.list_members_of(&list)? {
                    outcome.changed += u64::from(self.set_suppressed(pk, reason)?);
                }
                outcome.list = Some(list);
            }
            ApiConsentOp::Unsuppress { email } => {
                let pk = match self.profile_for_email(&email)? {
                    Ok(pk) => pk,
                    Err(err) => return Ok(Err(err)),
                };
                outcome.changed = u64::from(self.lift_user_suppression(pk)?);
            }
            ApiConsentOp::UnsuppressList { list } => {
                if self.list_info(&list)?.is_none() {
                    return Ok(Err(EngageError::not_found(format!("list {list}"))));
                }
                for pk in self.list_members_of(&list)? {
                    outcome.changed += u64::from(self.lift_user_suppression(pk)?);
                }
                outcome.list = Some(list);
            }
            ApiConsentOp::SuppressProfiles { profiles, reason } => {
                // A profile deleted since the job was asked for is skipped; a merged one
                // is found as the profile it was merged into.
                for profile in profiles {
                    if let Some(pk) = self.profile_by_id(&profile)? {
                        outcome.changed += u64::from(self.set_suppressed(pk, reason)?);
                    }
                }
            }
            ApiConsentOp::UnsuppressProfiles { profiles } => {
                for profile in profiles {
                    if let Some(pk) = self.profile_by_id(&profile)? {
                        outcome.changed += u64::from(self.lift_user_suppression(pk)?);
                    }
                }
            }
            ApiConsentOp::Confirm { list, profile } => {
                if self.list_info(&list)?.is_none() {
                    return Ok(Err(EngageError::not_found(format!("list {list}"))));
                }
                let Some(pk) = self.profile_by_id(&profile)? else {
                    return Ok(Err(EngageError::not_found(format!("profile {profile}"))));
                };
                match self.member_status(&list, pk)? {
                    None => {
                        return Ok(Err(EngageError::not_found(format!(
                            "a pending subscription of profile {profile} to list {list}"
                        ))))
                    }
                    Some(MemberStatus::Member) => {
                        outcome.confirmed = Some(ConfirmOutcome::AlreadyMember);
                    }
                    Some(MemberStatus::Pending) => {
                        self.join_list(&list, pk, Join::Member, true)?;
                        self.set_subscribed(
                            pk,
                            "API",
                            Some("double opt-in confirmation"),
                            None,
                            true,
                            None,
                        )?;
                        outcome.confirmed = Some(ConfirmOutcome::Confirmed);
                        outcome.changed = 1;
                    }
                }
                outcome.list = Some(list);
            }
            ApiConsentOp::LinkUnsubscribe { profile } => {
                let Some(pk) = self.profile_by_id(&profile)? else {
                    return Ok(Err(EngageError::not_found(format!("profile {profile}"))));
                };
                outcome.changed =
                    u64::from(self.set_unsubscribed(pk, "EMAIL_UNSUBSCRIBE", Some("link"))?);
            }
        }
        Ok(Ok(outcome))
    }
}
