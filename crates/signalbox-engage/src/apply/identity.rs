//! Identity: which profile a call's identifiers name, linking new identifiers, and merging
//! two profiles that turn out to be one person.
//!
//! Rules:
//! - An identifier (email, phone number, external id = Segment `userId`, anonymous id) names
//!   one profile at most (`identifiers` primary key): never two profiles with one email.
//! - Email is the person. A call with an email lands on that email's profile; if none has it,
//!   on a profile its other ids name that has no email yet (anonymous → identified), else on a
//!   new profile.
//! - A call without an email lands on the profile its ids name, by precedence external id,
//!   phone, anonymous id (and alias's `previousId`).
//! - Other profiles the call's ids name are merged in when compatible (not two different
//!   emails). The survivor is the one with an email, else the oldest; the other's events,
//!   identifiers, provenance and audit trail move to it and its id redirects.
//! - An identifier that names an incompatible profile stays where it is; the conflict is
//!   written to the audit trail.

use super::store::ApplyTx;
use super::{Batch, Rules};
use crate::error::EngageResult;
use crate::mapping::Mapped;
use crate::model::{Origin, ProfileInput};

pub(super) const EMAIL: &str = "email";
pub(super) const PHONE: &str = "phone_number";
pub(super) const EXTERNAL: &str = "external_id";
pub(super) const ANONYMOUS: &str = "anonymous_id";

/// A kind's slot in the identifier cache.
fn kind_index(kind: &str) -> usize {
    match kind {
        EMAIL => 0,
        PHONE => 1,
        EXTERNAL => 2,
        _ => 3,
    }
}

/// The identifiers a call carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CallIds {
    pub email: Option<String>,
    pub phone_number: Option<String>,
    pub external_id: Option<String>,
    pub anonymous_id: Option<String>,
    /// alias: an id of unknown kind that names the same person.
    pub alias_of: Option<String>,
}

impl CallIds {
    pub(crate) fn of(mapped: &Mapped) -> CallIds {
        let mut ids = CallIds::from_input(&mapped.profile);
        ids.alias_of.clone_from(&mapped.alias_of);
        ids
    }

    pub(crate) fn from_input(input: &ProfileInput) -> CallIds {
        CallIds {
            email: input.email.clone(),
            phone_number: input.phone_number.clone(),
            external_id: input.external_id.clone(),
            anonymous_id: input.anonymous_id.clone(),
            alias_of: None,
        }
    }

    /// The identifiers of known kind, in precedence order.
    fn typed(&self) -> Vec<(&'static str, &str)> {
        let mut out = Vec::with_capacity(4);
        for (kind, value) in [
            (EMAIL, &self.email),
            (EXTERNAL, &self.external_id),
            (PHONE, &self.phone_number),
            (ANONYMOUS, &self.anonymous_id),
        ] {
            if let Some(value) = value {
                out.push((kind, value.as_str()));
            }
        }
        out
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.typed().is_empty() && self.alias_of.is_none()
    }
}

/// Why a call cannot create a profile under these rules.
pub(super) fn missing_reason(ids: &CallIds, rules: Rules) -> String {
    if rules.enforce_email {
        "no email, and its ids name no profile yet (enforceEmail is on)".into()
    } else if ids.external_id.is_none() && ids.phone_number.is_none() {
        "no userId, and its ids name no profile yet (sendAnonymous is off)".into()
    } else {
        "its ids name no profile yet".into()
    }
}

fn may_create(ids: &CallIds, rules: Rules) -> bool {
    if ids.email.is_some() {
        return true;
    }
    if rules.enforce_email {
        return false;
    }
    ids.external_id.is_some()
        || ids.phone_number.is_some()
        || (rules.send_anonymous && (ids.anonymous_id.is_some() || ids.alias_of.is_some()))
}

impl<T: ApplyTx> Batch<'_, T> {
    /// The profile an identifier names.
    pub(super) fn lookup(&mut self, kind: &'static str, value: &str) -> EngageResult<Option<i64>> {
        let cache = &mut self.caches.ids[kind_index(kind)];
        if let Some(found) = cache.get(value) {
            return Ok(*found);
        }
        let found = self.tx.find_identifier(kind, value)?;
        self.caches.ids[kind_index(kind)].insert(value.to_owned(), found);
        Ok(found)
    }

    /// Every (kind, value, profile) the call's ids name, in precedence order. alias's
    /// `previousId` is looked up as an anonymous id, then as an external id.
    fn matches(&mut self, ids: &CallIds) -> EngageResult<Vec<(&'static str, String, i64)>> {
        let mut out = Vec::new();
        for (kind, value) in ids.typed() {
            if let Some(pk) = self.lookup(kind, value)? {
                out.push((kind, value.to_owned(), pk));
            }
        }
        if let Some(prev) = &ids.alias_of {
            for kind in [ANONYMOUS, EXTERNAL] {
                if let Some(pk) = self.lookup(kind, prev)? {
                    out.push((kind, prev.clone(), pk));
                    break;
                }
            }
        }
        Ok(out)
    }

    /// The profile the call lands on, creating it when the rules allow; `None` when it must
    /// wait (or be dropped).
    pub(super) fn resolve_or_create(
        &mut self,
        ids: &CallIds,
        origin: &Origin,
        rules: Rules,
    ) -> EngageResult<Option<i64>> {
        let matches = self.matches(ids)?;
        let mut target;
        if ids.email.is_some() {
            target = matches.iter().find(|m| m.0 == EMAIL).map(|m| m.2);
            if target.is_none() {
                for (_, _, pk) in &matches {
                    if self.profile(*pk)?.email.is_none() {
                        target = Some(*pk);
                        break;
                    }
                }
            }
        } else {
            target = matches.first().map(|m| m.2);
        }
        let target = match target {
            Some(pk) => pk,
            None if may_create(ids, rules) => self.create_profile(origin)?,
            None => return Ok(None),
        };

        // Other profiles the ids name: one person if their emails agree.
        let mut group = vec![target];
        let mut group_email = self.profile(target)?.email.clone().or(ids.email.clone());
        for (_, _, pk) in &matches {
            if group.contains(pk) {
                continue;
            }
            let email = self.profile(*pk)?.email.clone();
            let compatible = match (&group_email, &email) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            };
            if compatible {
                group.push(*pk);
                if group_email.is_none() {
                    group_email = email;
                }
            }
        }
        if group.len() == 1 {
            return Ok(Some(target));
        }
        let mut survivor = group[0];
        for pk in &group {
            let has_email = self.profile(*pk)?.email.is_some();
            let best_has_email = self.profile(survivor)?.email.is_some();
            if (has_email && !best_has_email) || (has_email == best_has_email && *pk < survivor) {
                survivor = *pk;
            }
        }
        for pk in group {
            if pk != survivor {
                self.merge(survivor, pk, "their identifiers met in one call")?;
            }
        }
        Ok(Some(survivor))
    }

    /// Links the call's identifiers that name no profile yet to `pk`; an identifier that names
    /// another profile is left there and noted. Returns whether anything was linked.
    pub(super) fn link_ids(&mut self, pk: i64, ids: &CallIds) -> EngageResult<bool> {
        let mut linked = false;
        let mut pairs: Vec<(&'static str, String)> = ids
            .typed()
            .into_iter()
            .map(|(k, v)| (k, v.to_owned()))
            .collect();
        if let Some(prev) = &ids.alias_of {
            let known =
                self.lookup(ANONYMOUS, prev)?.is_some() || self.lookup(EXTERNAL, prev)?.is_some();
            if !known {
                pairs.push((ANONYMOUS, prev.clone()));
            }
        }
        for (kind, value) in pairs {
            match self.lookup(kind, &value)? {
                Some(owner) if owner == pk => {}
                Some(owner) => {
                    let other = self.profile(owner)?.id.clone();
                    self.audit(
                        pk,
                        "conflict",
                        Some(kind),
                        Some(&value),
                        Some(&format!("names profile {other}; left there")),
                    )?;
                }
                None => {
                    if kind == EMAIL && self.profile(pk)?.email.is_some() {
                        // A second email for an emailed profile: not this call's to decide.
                        self.audit(
                            pk,
                            "conflict",
                            Some(kind),
                            Some(&value),
                            Some("the profile has another email"),
                        )?;
                        continue;
                    }
                    self.link(pk, kind, &value)?;
                    linked = true;
                }
            }
        }
        if let Some(prev) = &ids.alias_of {
            // alias names a person by an id of either kind: calls held on either are theirs.
            self.release.push_back((EXTERNAL, prev.clone()));
            self.release.push_back((ANONYMOUS, prev.clone()));
        }
        Ok(linked)
    }

    /// Links one identifier and fills the profile's field for it when empty.
    pub(super) fn link(&mut self, pk: i64, kind: &'static str, value: &str) -> EngageResult<()> {
        self.tx.link_identifier(kind, value, pk)?;
        self.caches.ids[kind_index(kind)].insert(value.to_owned(), Some(pk));
        self.audit(pk, "linked", Some(kind), Some(value), None)?;
        let at = self.entry.received_us;
        let row = self.profile(pk)?;
        let slot = match kind {
            EMAIL => &mut row.email,
            PHONE => &mut row.phone_number,
            EXTERNAL => &mut row.external_id,
            _ => &mut row.anonymous_id,
        };
        if slot.is_none() {
            *slot = Some(value.to_owned());
            row.updated_us = row.updated_us.max(at);
            row.dirty = true;
        }
        if kind == EXTERNAL || kind == ANONYMOUS {
            self.release.push_back((kind, value.to_owned()));
        }
        Ok(())
    }

    /// Removes an identifier from `pk` (an API update replacing it).
    pub(super) fn unlink(&mut self, pk: i64, kind: &'static str, value: &str) -> EngageResult<()> {
        let removed = self.tx.unlink_identifier(kind, value, pk)?;
        self.caches.ids[kind_index(kind)].remove(value);
        if removed {
            self.audit(pk, "unlinked", Some(kind), Some(value), None)?;
        }
        Ok(())
    }

    /// Merges profile `loser` into `survivor`: events (a duplicate by unique id is dropped),
    /// identifiers, provenance, lists and audit trail move; the loser's id redirects.
    pub(super) fn merge(&mut self, survivor: i64, loser: i64, why: &str) -> EngageResult<()> {
        debug_assert_ne!(survivor, loser);
        // Provenance and identifiers are cached; write and forget them so that the store
        // moves everything.
        self.flush_origins()?;
        self.caches.origins.clear();
        for ids in self.caches.ids.iter_mut() {
            ids.clear();
        }
        let loser_row = self.profile(loser)?.clone();
        let survivor_id = self.profile(survivor)?.id.clone();
        let duplicates = self.tx.merge_profiles(survivor, loser, self.entry.seq)?;
        self.audit(
            survivor,
            "merged",
            None,
            Some(&loser_row.id),
            Some(&format!(
                "{} merged into {survivor_id}: {why}",
                loser_row.id
            )),
        )?;
        if duplicates > 0 {
            self.count("events.duplicate", duplicates as i64);
            self.count("events.created", -(duplicates as i64));
        }
        self.count("profiles.merged", 1);
        // The loser's email must be gone before the survivor may take it.
        self.tx.delete_profile(loser)?;
        self.caches.profiles.remove(&loser);
        self.deleted.insert(loser);
        let at = self.entry.received_us;
        let row = self.profile(survivor)?;
        row.absorb(&loser_row);
        row.updated_us = row.updated_us.max(at);
        Ok(())
    }
}
