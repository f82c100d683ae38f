//! What the worker keeps in memory of the store it alone writes: every segment's members and
//! every profile's next due instant. Evaluating a profile reads them for each segment it
//! looks at, and a read from memory costs a hash probe where the store costs a B-tree
//! descent; the store is written only when one of them changes. Both are loaded from the
//! store at start and again after a step that failed (its transaction rolled back).

use std::collections::HashMap;

use jiff::Timestamp;
use signalbox_engage::ProfileKey;

use crate::error::AudienceResult;
use crate::store::{AudienceWriter, SegmentKey};

/// Profile key → join time (µs), per segment.
#[derive(Debug, Default)]
pub(crate) struct Members {
    by_segment: HashMap<SegmentKey, HashMap<i64, i64>>,
}

impl Members {
    /// The members of `segments` as the store holds them.
    pub(crate) fn load(
        store: &dyn AudienceWriter,
        segments: impl IntoIterator<Item = SegmentKey>,
    ) -> AudienceResult<Members> {
        let mut by_segment = HashMap::new();
        for segment in segments {
            let members =
                store.members_between(segment, ProfileKey(i64::MIN), ProfileKey(i64::MAX))?;
            let members = members
                .into_iter()
                .map(|(profile, joined)| (profile.0, joined.as_microsecond()))
                .collect();
            by_segment.insert(segment, members);
        }
        Ok(Members { by_segment })
    }

    pub(crate) fn joined(&self, segment: SegmentKey, profile: ProfileKey) -> Option<Timestamp> {
        let joined = *self.by_segment.get(&segment)?.get(&profile.0)?;
        Timestamp::from_microsecond(joined).ok()
    }

    /// Records an enter (`Some(at)`) or a leave (`None`), as the store just did.
    pub(crate) fn set(
        &mut self,
        segment: SegmentKey,
        profile: ProfileKey,
        joined: Option<Timestamp>,
    ) {
        let members = self.by_segment.entry(segment).or_default();
        match joined {
            Some(at) => {
                members.insert(profile.0, at.as_microsecond());
            }
            None => {
                members.remove(&profile.0);
            }
        }
    }

    /// The segments the profile is a member of.
    pub(crate) fn segments_of(&self, profile: ProfileKey) -> Vec<SegmentKey> {
        self.by_segment
            .iter()
            .filter(|(_, members)| members.contains_key(&profile.0))
            .map(|(&segment, _)| segment)
            .collect()
    }

    pub(crate) fn remove_segment(&mut self, segment: SegmentKey) {
        self.by_segment.remove(&segment);
    }
}

/// Profile key → next due instant (µs), as the store's schedule holds it.
#[derive(Debug, Default)]
pub(crate) struct Dues {
    by_profile: HashMap<i64, i64>,
}

impl Dues {
    pub(crate) fn load(store: &dyn AudienceWriter) -> AudienceResult<Dues> {
        let by_profile = store
            .scheduled()?
            .into_iter()
            .map(|(profile, due)| (profile.0, due.as_microsecond()))
            .collect();
        Ok(Dues { by_profile })
    }

    pub(crate) fn get(&self, profile: ProfileKey) -> Option<i64> {
        self.by_profile.get(&profile.0).copied()
    }

    /// Makes the profile's entry `due` (`None`: no entry), in the store only if it changes.
    pub(crate) fn set(
        &mut self,
        store: &dyn AudienceWriter,
        profile: ProfileKey,
        due: Option<i64>,
    ) -> AudienceResult<()> {
        if self.get(profile) == due {
            return Ok(());
        }
        match due {
            Some(due) => {
                let at = Timestamp::from_microsecond(due).unwrap_or(Timestamp::MAX);
                store.schedule(profile, at)?;
                self.by_profile.insert(profile.0, due);
            }
            None => {
                store.unschedule(profile)?;
                self.by_profile.remove(&profile.0);
            }
        }
        Ok(())
    }

    /// Profiles the store handed out as due (and removed).
    pub(crate) fn taken(&mut self, profiles: &[ProfileKey]) {
        for profile in profiles {
            self.by_profile.remove(&profile.0);
        }
    }
}
