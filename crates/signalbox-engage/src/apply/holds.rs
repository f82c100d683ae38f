//! Held calls: a Segment call whose ids name no profile, and that may not create one (no
//! email under `enforceEmail`, or only an anonymous id without `sendAnonymous`), waits here
//! instead of being dropped. When a later identify or alias links one of its ids to a profile,
//! it is applied to that profile as if it had just arrived (its own time and ids). A hold
//! expires `hold_window` after the call was received; expiry is judged by log time (the
//! receipt time of the entry being applied) so that a rebuild expires the same holds.
//!
//! A held call is one row of `held_calls`, appended in log order. Which calls wait for which
//! identifier is in [`HeldLookup`]: an index beside `engage.db`, or the store's own table.

use signalbox_core::{CallKind, SourceId, StoredCall};

use super::held_lookup::HeldLookup;
use super::identity::{CallIds, ANONYMOUS, EXTERNAL};
use super::store::{ApplyTx, HeldCall, NewHeldCall};
use super::Batch;
use crate::error::EngageResult;

/// The identifiers a held call waits for: owned when read back, borrowed from the call when
/// it is held.
#[derive(Debug)]
pub(crate) struct HeldIds<S = String> {
    pub external_id: Option<S>,
    pub anonymous_id: Option<S>,
    /// alias's `previousId`, waited for as either kind.
    pub alias_of: Option<S>,
}

impl<'a> HeldIds<&'a str> {
    fn of(ids: &'a CallIds) -> HeldIds<&'a str> {
        HeldIds {
            external_id: ids.external_id.as_deref(),
            anonymous_id: ids.anonymous_id.as_deref(),
            alias_of: ids.alias_of.as_deref(),
        }
    }
}

impl<S: AsRef<str>> HeldIds<S> {
    pub(super) fn typed(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            (EXTERNAL, &self.external_id),
            (ANONYMOUS, &self.anonymous_id),
            (ANONYMOUS, &self.alias_of),
            (EXTERNAL, &self.alias_of),
        ]
        .into_iter()
        .filter_map(|(kind, value)| value.as_ref().map(|value| (kind, value.as_ref())))
    }
}

/// Expires holds whose window ended at or before `now_us`; returns how many.
pub(super) fn expire(tx: &impl ApplyTx, index: &mut HeldLookup, now_us: i64) -> EngageResult<u64> {
    let due = tx.due_holds(now_us)?;
    let expired = tx.expire_holds(now_us)?;
    for (seq, ids) in &due {
        index.remove(ids, *seq);
    }
    if expired > 0 {
        tracing::info!(expired, "held calls expired");
    }
    Ok(expired)
}

impl<T: ApplyTx> Batch<'_, T> {
    pub(super) fn hold(
        &mut self,
        entry: &StoredCall,
        reason: &str,
        ids: &CallIds,
    ) -> EngageResult<()> {
        let received = self.entry.received_us;
        let expires = received.saturating_add(self.hold_window_us);
        self.tx.hold(&NewHeldCall {
            seq: entry.seq,
            source_id: entry.source_id.0,
            kind: entry.kind.as_str(),
            received_us: received,
            expires_us: expires,
            reason,
            ids: HeldIds::of(ids),
            payload: &entry.payload,
        })?;
        self.held.add(&HeldIds::of(ids), entry.seq);
        if self.next_expiry.is_none_or(|t| expires < t) {
            *self.next_expiry = Some(expires);
        }
        self.count("held", 1);
        Ok(())
    }

    /// Applies the held calls waiting for identifiers linked since the last call, in log
    /// order; each may link more.
    pub(super) fn release_held(&mut self) -> EngageResult<()> {
        while let Some((kind, value)) = self.release.pop_front() {
            let waiting = self.held.waiting_for(self.tx, kind, &value)?;
            for seq in waiting {
                self.release_one(seq)?;
            }
        }
        Ok(())
    }

    fn release_one(&mut self, seq: i64) -> EngageResult<()> {
        let held = self.tx.held_call(seq)?;
        let Some(HeldCall {
            source_id,
            kind,
            received_us,
            payload: Some(payload),
            ids,
        }) = held
        else {
            return Ok(());
        };
        let Some(kind) = CallKind::parse_logged(&kind) else {
            return Ok(());
        };
        let call = StoredCall {
            seq,
            source_id: SourceId(source_id),
            kind,
            message_id: String::new(),
            received_at: jiff::Timestamp::from_microsecond(received_us)
                .unwrap_or(jiff::Timestamp::UNIX_EPOCH),
            payload,
        };
        // The held call keys its rows by its own sequence number and time.
        let outer = std::mem::take(&mut self.entry);
        self.begin_entry(seq, received_us);
        let applied = self.apply_segment(&call, kind, false, None);
        let settled_by = outer.seq;
        self.entry = outer;
        if applied? {
            self.tx.release_held(seq, settled_by)?;
            self.held.remove(&ids, seq);
            self.count("held.released", 1);
        }
        Ok(())
    }
}
