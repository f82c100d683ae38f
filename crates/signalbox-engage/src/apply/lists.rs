//! Lists and their members: `api_list` entries, and the membership changes that identify
//! calls and consent entries make. Every membership change writes a `list_changes` row and
//! marks the profile changed, so the change feed reports both.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use signalbox_core::StoredCall;

use super::builtin::BuiltinMetric;
use super::identity::CallIds;
use super::store::{ApplyTx, NewMember};
use super::{Batch, Rules};
use crate::error::{EngageError, EngageResult};
use crate::ids;
use crate::lists::{ConfirmOutcome, ImportRow, ListId, MemberStatus, OptInProcess};
use crate::mapping::{self, ListSubscription, MappedEvent};
use crate::model::{Integration, Origin, ProfileId, ProfileInput};
use crate::outbox::{read_stamped, OutboxChange};

/// `api_list` entries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum ApiListOp {
    Create {
        name: String,
        opt_in: OptInProcess,
    },
    Update {
        id: ListId,
        name: Option<String>,
        opt_in: Option<OptInProcess>,
    },
    Delete {
        id: ListId,
    },
    /// Adds profiles (by id) as members; consent does not change.
    AddMembers {
        id: ListId,
        profiles: Vec<ProfileId>,
    },
    RemoveMembers {
        id: ListId,
        profiles: Vec<ProfileId>,
    },
    /// Creates or updates the profile with this email and adds it as a member.
    Import {
        id: ListId,
        row: ImportRow,
    },
}

/// The outcome of an `api_list` or `api_consent` entry, for the caller waiting on it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct OpOutcome {
    pub list: Option<ListId>,
    /// Memberships or consents changed.
    pub changed: u64,
    pub confirmed: Option<ConfirmOutcome>,
}

pub(crate) type OpResult = Result<OpOutcome, EngageError>;

/// What membership a subscription asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Join {
    /// Added as a member at once.
    Member,
    /// Pending until it confirms (double opt-in).
    Pending,
}

pub(super) fn list_origin() -> Origin {
    Origin {
        integration: Origin::API.into(),
        source: None,
    }
}

impl<T: ApplyTx> Batch<'_, T> {
    pub(super) fn record_op_result(&mut self, result: &OpResult) -> EngageResult<()> {
        let result = serde_json::to_string(result).expect("result serialises");
        self.tx.record_api_result(self.entry.seq, &result)
    }

    /// A list's name and opt-in process, if it exists.
    pub(super) fn list_info(&self, id: &ListId) -> EngageResult<Option<(String, OptInProcess)>> {
        self.tx.list_info(id)
    }

    pub(super) fn member_status(
        &self,
        list: &ListId,
        pk: i64,
    ) -> EngageResult<Option<MemberStatus>> {
        self.tx.member_status(list, pk)
    }

    fn list_change(&mut self, list: &ListId, pk: i64, change: &str) -> EngageResult<()> {
        self.tx
            .list_change(self.entry.seq, list, pk, change, self.entry.received_us)?;
        self.profile(pk)?.mark_changed();
        if self.entry_from_segment() {
            return self.mark_from_segment(pk, None);
        }
        let list_name = self
            .list_info(list)?
            .map(|(name, _)| name)
            .unwrap_or_default();
        self.outbox(
            pk,
            None,
            OutboxChange::List {
                list_id: list.0.clone(),
                list_name,
                change: change.to_owned(),
            },
        )
    }

    /// Puts a profile on a list (or leaves it pending). Returns whether anything changed.
    /// Becoming a member stores a `Subscribed to List` event.
    pub(super) fn join_list(
        &mut self,
        list: &ListId,
        pk: i64,
        join: Join,
        confirm_optin: bool,
    ) -> EngageResult<bool> {
        let current = self.member_status(list, pk)?;
        let at = self.entry.received_us;
        let change = match (current, join) {
            (Some(MemberStatus::Member), _) | (Some(MemberStatus::Pending), Join::Pending) => {
                return Ok(false)
            }
            (Some(MemberStatus::Pending), Join::Member) => {
                self.tx.confirm_member(list, pk, at, self.entry.seq)?;
                "confirmed"
            }
            (None, join) => {
                let status = match join {
                    Join::Member => MemberStatus::Member,
                    Join::Pending => MemberStatus::Pending,
                };
                self.tx.insert_member(&NewMember {
                    list,
                    profile_pk: pk,
                    confirm_optin,
                    seq: self.entry.seq,
                    status,
                    joined_us: at,
                })?;
                match join {
                    Join::Member => "added",
                    Join::Pending => "pending",
                }
            }
        };
        self.list_change(list, pk, change)?;
        self.count(format!("lists.{change}"), 1);
        if change != "pending" {
            let name = self
                .list_info(list)?
                .map(|(name, _)| name)
                .unwrap_or_default();
            let mut properties = Map::new();
            properties.insert("list_id".into(), Value::String(list.0.clone()));
            properties.insert("list_name".into(), Value::String(name));
            self.signal_event(pk, "Subscribed to List", properties)?;
        }
        Ok(true)
    }

    pub(super) fn leave_list(&mut self, list: &ListId, pk: i64) -> EngageResult<bool> {
        let removed = self.tx.remove_member(list, pk)?;
        if !removed {
            return Ok(false);
        }
        self.list_change(list, pk, "removed")?;
        self.count("lists.removed", 1);
        Ok(true)
    }

    /// An event Signalbox itself records (integration `Signalbox`), keyed by this entry.
    pub(super) fn signal_event(
        &mut self,
        pk: i64,
        metric: &str,
        properties: Map<String, Value>,
    ) -> EngageResult<()> {
        let idx = self.entry.events_n;
        self.entry.events_n += 1;
        let event = MappedEvent {
            metric_name: metric.to_owned(),
            time: jiff::Timestamp::from_microsecond(self.entry.received_us)
                .unwrap_or(jiff::Timestamp::UNIX_EPOCH),
            value: None,
            value_currency: None,
            unique_id: None,
            properties,
        };
        let inserted = self.insert_event(pk, idx, &event, &Integration::signalbox())?;
        if inserted && metric == BuiltinMetric::Unsubscribed.name() {
            let time_us = event.time.as_microsecond();
            self.outbox_email(pk, BuiltinMetric::Unsubscribed, time_us, &event.properties)?;
        }
        Ok(())
    }

    /// The subscription an identify asks for (`listId`, from the source's settings or the
    /// message). A Tracking API call comes in under a public write key, so it may add a profile
    /// to a list (pending where the list asks for double opt-in and the source's
    /// `confirmOptin` is on) but never changes the consent of a profile that unsubscribed or is
    /// suppressed: that takes a subscription through the API with a private key. What is
    /// refused or ignored is a problem, and nothing changes: a list that does not exist, a
    /// profile that unsubscribed or is suppressed.
    pub(super) fn subscribe_from_identify(
        &mut self,
        pk: i64,
        list: &ListSubscription,
        source: Option<&str>,
    ) -> EngageResult<()> {
        let id = ListId(list.list_id.clone());
        let Some((_, opt_in)) = self.list_info(&id)? else {
            return self.problem(
                Some(pk),
                &format!("listId names list {id}, which does not exist; not subscribed"),
            );
        };
        let double = list.confirm_optin && opt_in == OptInProcess::DoubleOptIn;
        match self.member_status(&id, pk)? {
            // Nothing to ask for: an identify repeats on every visit.
            Some(MemberStatus::Member) => return Ok(()),
            Some(MemberStatus::Pending) if double => return Ok(()),
            _ => {}
        }
        if let Some(why) = self.consent(pk)?.refuses_tracking_subscription() {
            return self.problem(
                Some(pk),
                &format!(
                    "listId names list {id}, but the profile {why}; a Tracking API call does \
                     not subscribe it again (a subscription through the API with a private key \
                     does); not subscribed"
                ),
            );
        }
        if list.confirm_optin_ignored && opt_in == OptInProcess::DoubleOptIn {
            self.problem(
                Some(pk),
                &format!(
                    "integrations.Klaviyo.confirmOptin false ignored: a Tracking API call cannot \
                     skip the double opt-in of list {id}; pending until confirmed"
                ),
            )?;
        }
        let detail = source.map(|s| format!("Segment source {s}"));
        self.subscribe_profile(pk, &id, double, false, "API", detail.as_deref(), None)?;
        Ok(())
    }

    pub(super) fn apply_api_list(&mut self, entry: &StoredCall) -> EngageResult<()> {
        let op: ApiListOp = match read_stamped(&entry.payload) {
            Ok((op, origin)) => {
                self.entry.origin = origin;
                op
            }
            Err(err) => {
                return self.record_op_result(&Err(EngageError::Internal(format!(
                    "unreadable API list write: {err}"
                ))));
            }
        };
        let result = self.api_list_op(op)?;
        self.count("applied.api_list", 1);
        self.record_op_result(&result)
    }

    fn api_list_op(&mut self, op: ApiListOp) -> EngageResult<OpResult> {
        let at = self.entry.received_us;
        match op {
            ApiListOp::Create { name, opt_in } => {
                let mut attempt = 0;
                let id = loop {
                    let id = ids::list_id(self.entry.seq, attempt);
                    let taken = self.tx.list_id_taken(&id)?;
                    if !taken {
                        break id;
                    }
                    attempt += 1;
                };
                self.tx.insert_list(&id, &name, opt_in, at)?;
                self.count("lists.created", 1);
                Ok(Ok(OpOutcome {
                    list: Some(ListId(id)),
                    ..OpOutcome::default()
                }))
            }
            ApiListOp::Update { id, name, opt_in } => {
                if self.list_info(&id)?.is_none() {
                    return Ok(Err(EngageError::not_found(format!("list {id}"))));
                }
                self.tx.update_list(&id, name.as_deref(), opt_in, at)?;
                Ok(Ok(OpOutcome {
                    list: Some(id),
                    ..OpOutcome::default()
                }))
            }
            ApiListOp::Delete { id } => {
                if self.list_info(&id)?.is_none() {
                    return Ok(Err(EngageError::not_found(format!("list {id}"))));
                }
                let members = self.tx.list_profiles(&id, true)?;
                let mut changed = 0;
                for pk in members {
                    if self.leave_list(&id, pk)? {
                        changed += 1;
                    }
                }
                self.tx.delete_list(&id)?;
                self.count("lists.deleted", 1);
                Ok(Ok(OpOutcome {
                    list: Some(id),
                    changed,
                    ..OpOutcome::default()
                }))
            }
            ApiListOp::AddMembers { id, profiles } | ApiListOp::RemoveMembers { id, profiles }
                if self.list_info(&id)?.is_none() =>
            {
                let _ = profiles;
                Ok(Err(EngageError::not_found(format!("list {id}"))))
            }
            ApiListOp::AddMembers { id, profiles } => {
                let Some(pks) = self.profile_keys(&profiles)? else {
                    return Ok(Err(self.unknown_profile(&profiles)?));
                };
                let mut changed = 0;
                for pk in pks {
                    if self.join_list(&id, pk, Join::Member, false)? {
                        changed += 1;
                    }
                }
                Ok(Ok(OpOutcome {
                    list: Some(id),
                    changed,
                    ..OpOutcome::default()
                }))
            }
            ApiListOp::RemoveMembers { id, profiles } => {
                let Some(pks) = self.profile_keys(&profiles)? else {
                    return Ok(Err(self.unknown_profile(&profiles)?));
                };
                let mut changed = 0;
                for pk in pks {
                    if self.leave_list(&id, pk)? {
                        changed += 1;
                    }
                }
                Ok(Ok(OpOutcome {
                    list: Some(id),
                    changed,
                    ..OpOutcome::default()
                }))
            }
            ApiListOp::Import { id, row } => {
                if self.list_info(&id)?.is_none() {
                    self.problem(
                        None,
                        &format!("import into list {id}, which does not exist"),
                    )?;
                    return Ok(Err(EngageError::not_found(format!("list {id}"))));
                }
                let input = ProfileInput {
                    email: Some(row.email.as_str().to_owned()),
                    first_name: row.first_name.clone(),
                    last_name: row.last_name.clone(),
                    ..ProfileInput::default()
                };
                let pk = match self.profile_for_input(input)? {
                    Ok(pk) => pk,
                    Err(err) => return Ok(Err(err)),
                };
                let changed = u64::from(self.join_list(&id, pk, Join::Member, false)?);
                Ok(Ok(OpOutcome {
                    list: Some(id),
                    changed,
                    ..OpOutcome::default()
                }))
            }
        }
    }

    /// Creates or updates the profile an input's identifiers name (the API's rules: any
    /// identifier may create one).
    pub(super) fn profile_for_input(
        &mut self,
        input: ProfileInput,
    ) -> EngageResult<Result<i64, EngageError>> {
        let input = match mapping::normalize_input(input) {
            Ok(input) => input,
            Err((field, reason)) => return Ok(Err(EngageError::Invalid { field, reason })),
        };
        let ids = CallIds::from_input(&input);
        let origin = list_origin();
        let Some(pk) = self.resolve_or_create(&ids, &origin, Rules::API)? else {
            return Ok(Err(EngageError::invalid(
                "email",
                "names no profile and cannot create one",
            )));
        };
        let linked = self.link_ids(pk, &ids)?;
        let at = self.entry.received_us;
        let patched = self.profile(pk)?.patch(&input, &origin, at);
        self.touch_origin(pk, &origin, &ids, patched.changed || linked)?;
        if let Some(limit) = &patched.refused {
            self.properties_refused(pk, limit)?;
        }
        if patched.changed || linked {
            self.outbox_traits(pk, &input, patched.refused.is_none())?;
        }
        Ok(Ok(pk))
    }

    /// The keys of every profile named, or `None` if one names nothing.
    pub(super) fn profile_keys(
        &mut self,
        profiles: &[ProfileId],
    ) -> EngageResult<Option<Vec<i64>>> {
        let mut pks = Vec::with_capacity(profiles.len());
        for id in profiles {
            match self.profile_by_id(id)? {
                Some(pk) => {
                    if !pks.contains(&pk) {
                        pks.push(pk)
                    }
                }
                None => return Ok(None),
            }
        }
        Ok(Some(pks))
    }

    fn unknown_profile(&mut self, profiles: &[ProfileId]) -> EngageResult<EngageError> {
        for id in profiles {
            if self.profile_by_id(id)?.is_none() {
                return Ok(EngageError::not_found(format!("profile {id}")));
            }
        }
        Ok(EngageError::not_found("profile"))
    }
}
