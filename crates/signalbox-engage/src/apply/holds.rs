//! Held calls: a Segment call whose ids name no profile, and that may not create one (no
//! email under `enforceEmail`, or only an anonymous id without `sendAnonymous`), waits here
//! instead of being dropped. When a later identify or alias links one of its ids to a profile,
//! it is applied to that profile as if it had just arrived (its own time and ids). A hold
//! expires `hold_window` after the call was received; expiry is judged by log time (the
//! receipt time of the entry being applied) so that a rebuild expires the same holds.
//!
//! A held call is one row of `held_calls`, appended in log order. Which calls wait for which
//! identifier is in [`HeldIndex`], beside `engage.db`.

use rusqlite::{params, Connection, OptionalExtension};
use signalbox_core::{CallKind, SourceId, StoredCall};

use super::held_index::HeldIndex;
use super::identity::{CallIds, ANONYMOUS, EXTERNAL};
use super::Batch;
use crate::error::EngageResult;

/// A held call as stored.
struct HeldRow {
    source_id: i64,
    kind: String,
    received_us: i64,
    payload: Option<String>,
    ids: HeldIds,
}

/// The identifiers a held call waits for: owned when read back, borrowed from the call when
/// it is held.
#[derive(Debug)]
pub(super) struct HeldIds<S = String> {
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

impl HeldIds {
    /// Reads `user_id, anonymous_id, alias_of` from `row`, starting at column `first`.
    pub(super) fn from_row(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<HeldIds> {
        Ok(HeldIds {
            external_id: row.get(first)?,
            anonymous_id: row.get(first + 1)?,
            alias_of: row.get(first + 2)?,
        })
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

pub(super) fn earliest_expiry(conn: &Connection) -> EngageResult<Option<i64>> {
    Ok(conn
        .query_row(
            "SELECT MIN(expires_us) FROM held_calls WHERE status = 'held'",
            [],
            |r| r.get(0),
        )
        .optional()?
        .flatten())
}

/// Expires holds whose window ended at or before `now_us`; returns how many.
pub(super) fn expire(conn: &Connection, index: &mut HeldIndex, now_us: i64) -> EngageResult<u64> {
    let due: Vec<(i64, HeldIds)> = {
        let mut stmt = conn.prepare_cached(
            "SELECT seq, user_id, anonymous_id, alias_of FROM held_calls
             WHERE status = 'held' AND expires_us <= ?1",
        )?;
        let rows = stmt.query_map([now_us], |r| Ok((r.get(0)?, HeldIds::from_row(r, 1)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    let expired = conn.execute(
        "UPDATE held_calls SET status = 'expired' WHERE status = 'held' AND expires_us <= ?1",
        [now_us],
    )? as i64;
    for (seq, ids) in &due {
        index.remove(ids, *seq);
    }
    if expired > 0 {
        conn.execute(
            "INSERT INTO counters (name, value) VALUES ('held.expired', ?1)
             ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            [expired],
        )?;
        tracing::info!(expired, "held calls expired");
    }
    Ok(expired as u64)
}

impl Batch<'_> {
    pub(super) fn hold(
        &mut self,
        entry: &StoredCall,
        reason: &str,
        ids: &CallIds,
    ) -> EngageResult<()> {
        let received = self.entry.received_us;
        let expires = received.saturating_add(self.hold_window_us);
        self.tx
            .prepare_cached(
                "INSERT INTO held_calls (seq, source_id, kind, received_us, expires_us, reason,
                                         status, user_id, anonymous_id, alias_of, payload)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'held', ?7, ?8, ?9, ?10)",
            )?
            .execute(params![
                entry.seq,
                entry.source_id.0,
                entry.kind.as_str(),
                received,
                expires,
                reason,
                ids.external_id,
                ids.anonymous_id,
                ids.alias_of,
                entry.payload
            ])?;
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
            let waiting = self.held.waiting_for(kind, &value)?;
            for seq in waiting {
                self.release_one(seq)?;
            }
        }
        Ok(())
    }

    fn release_one(&mut self, seq: i64) -> EngageResult<()> {
        let held = self
            .tx
            .prepare_cached(
                "SELECT source_id, kind, received_us, payload, user_id, anonymous_id, alias_of
                 FROM held_calls WHERE seq = ?1 AND status = 'held'",
            )?
            .query_row([seq], |r| {
                Ok(HeldRow {
                    source_id: r.get(0)?,
                    kind: r.get(1)?,
                    received_us: r.get(2)?,
                    payload: r.get(3)?,
                    ids: HeldIds::from_row(r, 4)?,
                })
            })
            .optional()?;
        let Some(HeldRow {
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
            self.tx
                .prepare_cached(
                    "UPDATE held_calls SET status = 'released', settled_seq = ?2, payload = NULL
                     WHERE seq = ?1",
                )?
                .execute([seq, settled_by])?;
            self.held.remove(&ids, seq);
            self.count("held.released", 1);
        }
        Ok(())
    }
}
