//! The Klaviyo-compatible API's writes, as log entries. Their outcome is decided here, when
//! the entry is applied, and recorded in `api_results` for the caller waiting on it: so a
//! rebuild decides the same way.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use signalbox_core::StoredCall;

use super::identity::{CallIds, ANONYMOUS, EMAIL, EXTERNAL, PHONE};
use super::store::ApplyTx;
use super::{Batch, Rules};
use crate::error::{EngageError, EngageResult};
use crate::ids;
use crate::mapping::{self, Mapped, MappedEvent};
use crate::model::{ApiEventInput, Integration, Origin, ProfileId, ProfileInput};
use crate::outbox::read_stamped;

/// `api_profile` entries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum ApiProfileOp {
    Create {
        profile: ProfileInput,
    },
    Update {
        id: ProfileId,
        profile: ProfileInput,
    },
    Import {
        profile: ProfileInput,
    },
}

/// `api_merge` entries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ApiMergeOp {
    pub into: ProfileId,
    pub from: Vec<ProfileId>,
}

/// The outcome of a synchronous API write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum ApiResult {
    Ok { profile: ProfileId, created: bool },
    Err(EngageError),
}

fn api_origin() -> Origin {
    Origin {
        integration: Origin::API.into(),
        source: None,
    }
}

impl<T: ApplyTx> Batch<'_, T> {
    /// The live profile an id names, following merge redirects.
    pub(super) fn profile_by_id(&mut self, id: &ProfileId) -> EngageResult<Option<i64>> {
        let Some(pk) = ids::ulid_key(&id.0) else {
            return Ok(None);
        };
        let redirect = self.tx.redirect(pk)?;
        let (pk, check_text) = match redirect {
            Some(to) => (to, false),
            None => (pk, true),
        };
        if self.deleted.contains(&pk) {
            return Ok(None);
        }
        if !self.caches.profiles.contains_key(&pk) {
            match self.tx.load_profile(pk)? {
                Some(row) => {
                    self.caches.profiles.insert(pk, row);
                }
                None => return Ok(None),
            }
        }
        // The key decoded; the text must also be the profile's own id.
        let own = self.caches.profiles[&pk].id.eq_ignore_ascii_case(&id.0);
        Ok((own || !check_text).then_some(pk))
    }

    fn record_result(&mut self, result: &ApiResult) -> EngageResult<()> {
        let result = serde_json::to_string(result).expect("result serialises");
        self.tx.record_api_result(self.entry.seq, &result)
    }

    pub(super) fn apply_api_event(&mut self, entry: &StoredCall) -> EngageResult<()> {
        let input: ApiEventInput = match read_stamped(&entry.payload) {
            Ok((op, origin)) => {
                self.entry.origin = origin;
                op
            }
            Err(err) => {
                self.problem(None, &format!("unreadable API event: {err}"))?;
                return Ok(());
            }
        };
        let origin = api_origin();
        let pk = match &input.profile.id {
            Some(id) => match self.profile_by_id(id)? {
                Some(pk) => Some(pk),
                None => {
                    self.problem(
                        None,
                        &format!("API event for unknown profile {id}; dropped"),
                    )?;
                    self.count("dropped.api_event", 1);
                    return Ok(());
                }
            },
            None => None,
        };
        let profile = match mapping::normalize_input(input.profile.clone()) {
            Ok(profile) => profile,
            Err((field, reason)) => {
                self.problem(
                    None,
                    &format!("API event dropped: invalid {field}: {reason}"),
                )?;
                self.count("dropped.api_event", 1);
                return Ok(());
            }
        };
        let ids = CallIds::from_input(&profile);
        let created_before = self.entry.profiles_created;
        let pk = match pk {
            Some(pk) => pk,
            None => match self.resolve_or_create(&ids, &origin, Rules::API)? {
                Some(pk) => pk,
                None => {
                    self.problem(None, "API event without an identifier; dropped")?;
                    self.count("dropped.api_event", 1);
                    return Ok(());
                }
            },
        };
        let value = input.value;
        let mut properties = input.properties.clone();
        if let Some(v) = value {
            if let Some(n) = serde_json::Number::from_f64(v) {
                properties.insert("$value".into(), Value::Number(n));
            }
        }
        let mut event = MappedEvent {
            metric_name: input.metric_name.clone(),
            time: input.time.unwrap_or(entry.received_at),
            value,
            value_currency: input.value_currency.clone(),
            unique_id: input.unique_id.clone(),
            properties,
        };
        let problems = mapping::drop_oversized_value(&mut event)
            .into_iter()
            .collect();
        let mapped = Mapped {
            profile,
            events: vec![event],
            problems,
            ..Mapped::default()
        };
        self.count("applied.api_event", 1);
        let (changed, properties_applied) =
            self.apply_mapped(pk, &mapped, &ids, &origin, Integration::api())?;
        if self.entry_from_segment() {
            return self.mark_from_segment(pk, ids.external_id.as_deref());
        }
        // The event itself is not sent back; what it did to its profile is.
        if changed || self.entry.profiles_created > created_before {
            self.outbox_traits(pk, &mapped.profile, properties_applied)?;
        }
        Ok(())
    }

    pub(super) fn apply_api_profile(&mut self, entry: &StoredCall) -> EngageResult<()> {
        let op: ApiProfileOp = match read_stamped(&entry.payload) {
            Ok((op, origin)) => {
                self.entry.origin = origin;
                op
            }
            Err(err) => {
                let result = ApiResult::Err(EngageError::Internal(format!(
                    "unreadable API profile write: {err}"
                )));
                return self.record_result(&result);
            }
        };
        let result = match op {
            ApiProfileOp::Create { profile } => self.api_create(profile)?,
            ApiProfileOp::Update { id, profile } => match self.profile_by_id(&id)? {
                Some(pk) => self.api_update(pk, profile)?,
                None => ApiResult::Err(EngageError::not_found(format!("profile {id}"))),
            },
            ApiProfileOp::Import { profile } => self.api_import(profile)?,
        };
        self.count("applied.api_profile", 1);
        self.record_result(&result)
    }

    fn api_create(&mut self, profile: ProfileInput) -> EngageResult<ApiResult> {
        let profile = match mapping::normalize_input(profile) {
            Ok(p) => p,
            Err((field, reason)) => {
                return Ok(ApiResult::Err(EngageError::Invalid { field, reason }))
            }
        };
        let ids = CallIds::from_input(&profile);
        if ids.is_empty() {
            return Ok(ApiResult::Err(EngageError::invalid(
                "profile",
                "needs an email, phone number, external id or anonymous id",
            )));
        }
        for (kind, value) in typed(&ids) {
            if let Some(owner) = self.lookup(kind, value)? {
                let id = self.profile(owner)?.id.clone();
                return Ok(ApiResult::Err(EngageError::DuplicateProfile {
                    id: ProfileId(id),
                }));
            }
        }
        let origin = api_origin();
        let pk = self.create_profile(&origin)?;
        for (kind, value) in typed(&ids) {
            self.link(pk, kind, value)?;
        }
        let at = self.entry.received_us;
        self.profile(pk)?.patch(&profile, &origin, at);
        self.touch_origin(pk, &origin, &ids, true)?;
        self.outbox_profile_write(pk, &profile, &ids)?;
        let id = self.profile(pk)?.id.clone();
        Ok(ApiResult::Ok {
            profile: ProfileId(id),
            created: true,
        })
    }

    fn api_update(&mut self, pk: i64, profile: ProfileInput) -> EngageResult<ApiResult> {
        let profile = match mapping::normalize_input(profile) {
            Ok(p) => p,
            Err((field, reason)) => {
                return Ok(ApiResult::Err(EngageError::Invalid { field, reason }))
            }
        };
        if let Err(limit) = self.profile(pk)?.properties_fit(&profile) {
            return Ok(ApiResult::Err(EngageError::Invalid {
                field: limit.field(),
                reason: limit.to_string(),
            }));
        }
        let ids = CallIds::from_input(&profile);
        // Every new identifier must be free (or already this profile's).
        for (kind, value) in typed(&ids) {
            if let Some(owner) = self.lookup(kind, value)? {
                if owner != pk {
                    let id = self.profile(owner)?.id.clone();
                    return Ok(ApiResult::Err(EngageError::DuplicateProfile {
                        id: ProfileId(id),
                    }));
                }
            }
        }
        let origin = api_origin();
        let at = self.entry.received_us;
        let mut changed = false;
        for (kind, value) in typed(&ids) {
            let row = self.profile(pk)?;
            let current = match kind {
                EMAIL => row.email.clone(),
                PHONE => row.phone_number.clone(),
                EXTERNAL => row.external_id.clone(),
                _ => row.anonymous_id.clone(),
            };
            if current.as_deref() == Some(value) {
                continue;
            }
            changed = true;
            if let Some(old) = &current {
                self.unlink(pk, kind, old)?;
                let row = self.profile(pk)?;
                match kind {
                    EMAIL => row.email = None,
                    PHONE => row.phone_number = None,
                    EXTERNAL => row.external_id = None,
                    _ => row.anonymous_id = None,
                }
            }
            if self.lookup(kind, value)?.is_none() {
                self.link(pk, kind, value)?;
            } else {
                let row = self.profile(pk)?;
                let slot = match kind {
                    EMAIL => &mut row.email,
                    PHONE => &mut row.phone_number,
                    EXTERNAL => &mut row.external_id,
                    _ => &mut row.anonymous_id,
                };
                *slot = Some(value.to_owned());
            }
            self.profile(pk)?.touch(&origin, at);
        }
        changed |= self.profile(pk)?.patch(&profile, &origin, at).changed;
        self.touch_origin(pk, &origin, &ids, true)?;
        if changed || self.entry_from_segment() {
            self.outbox_profile_write(pk, &profile, &ids)?;
        }
        let id = self.profile(pk)?.id.clone();
        Ok(ApiResult::Ok {
            profile: ProfileId(id),
            created: false,
        })
    }

    fn api_import(&mut self, profile: ProfileInput) -> EngageResult<ApiResult> {
        if let Some(id) = profile.id.clone() {
            return match self.profile_by_id(&id)? {
                Some(pk) => self.api_update(pk, profile),
                None => Ok(ApiResult::Err(EngageError::not_found(format!(
                    "profile {id}"
                )))),
            };
        }
        let normalized = match mapping::normalize_input(profile.clone()) {
            Ok(p) => p,
            Err((field, reason)) => {
                return Ok(ApiResult::Err(EngageError::Invalid { field, reason }))
            }
        };
        let ids = CallIds::from_input(&normalized);
        let mut owners: Vec<i64> = Vec::new();
        for (kind, value) in typed(&ids) {
            if let Some(owner) = self.lookup(kind, value)? {
                if !owners.contains(&owner) {
                    owners.push(owner);
                }
            }
        }
        match owners.as_slice() {
            [] => self.api_create(normalized),
            [pk] => self.api_update(*pk, normalized),
            many => {
                let mut names = Vec::new();
                for pk in many {
                    names.push(self.profile(*pk)?.id.clone());
                }
                Ok(ApiResult::Err(EngageError::Conflict {
                    reason: format!(
                        "the identifiers belong to different profiles: {}",
                        names.join(", ")
                    ),
                }))
            }
        }
    }

    /// What an API profile write did, for the reverse sync; a write forwarded from Segment
    /// marks the profile with the `userId` (external id) it carried instead.
    fn outbox_profile_write(
        &mut self,
        pk: i64,
        profile: &ProfileInput,
        ids: &CallIds,
    ) -> EngageResult<()> {
        if self.entry_from_segment() {
            return self.mark_from_segment(pk, ids.external_id.as_deref());
        }
        self.outbox_traits(pk, profile, true)
    }

    pub(super) fn apply_api_merge(&mut self, entry: &StoredCall) -> EngageResult<()> {
        let op: ApiMergeOp = match read_stamped(&entry.payload) {
            Ok((op, origin)) => {
                self.entry.origin = origin;
                op
            }
            Err(err) => {
                let result = ApiResult::Err(EngageError::Internal(format!(
                    "unreadable API merge: {err}"
                )));
                return self.record_result(&result);
            }
        };
        let Some(into) = self.profile_by_id(&op.into)? else {
            let result = ApiResult::Err(EngageError::not_found(format!("profile {}", op.into)));
            return self.record_result(&result);
        };
        let mut losers = Vec::new();
        for id in &op.from {
            match self.profile_by_id(id)? {
                Some(pk) if pk == into => {}
                Some(pk) => {
                    if !losers.contains(&pk) {
                        losers.push(pk);
                    }
                }
                None => {
                    let result = ApiResult::Err(EngageError::not_found(format!("profile {id}")));
                    return self.record_result(&result);
                }
            }
        }
        for loser in losers {
            self.merge(into, loser, "merged through the API")?;
        }
        let origin = api_origin();
        let at = self.entry.received_us;
        self.profile(into)?.touch(&origin, at);
        self.count("applied.api_merge", 1);
        let id = self.profile(into)?.id.clone();
        self.record_result(&ApiResult::Ok {
            profile: ProfileId(id),
            created: false,
        })
    }
}

fn typed(ids: &CallIds) -> Vec<(&'static str, &str)> {
    let mut out = Vec::new();
    for (kind, value) in [
        (EMAIL, &ids.email),
        (EXTERNAL, &ids.external_id),
        (PHONE, &ids.phone_number),
        (ANONYMOUS, &ids.anonymous_id),
    ] {
        if let Some(value) = value {
            out.push((kind, value.as_str()));
        }
    }
    out
}
