//! The outbox: what Signalbox itself did to profiles, in log order, for the reverse sync.
//!
//! A row is written by the applier, in the transaction of the entry that caused it, for every
//! profile change made in Signalbox (Klaviyo API writes, flow profile updates, consent and
//! list changes, imports) and for every built-in email event. Calls from Segment sources, and
//! API writes marked as forwarded from Segment, are never in it: what arrived from Segment is
//! not sent back. Derived from the log like the rest of `engage.db`: a rebuild writes the same
//! rows at the same positions.
//!
//! A merge makes no row: the survivor keeps its identity, and the merged-away profile's id
//! redirects to it, so every later row names the survivor.
//!
//! Trait and value names the rows carry (a contract with the reverse sync):
//! - [`OutboxChange::Traits`]: `email`, `firstName`, `lastName`, `phone`, `title`,
//!   `company: {name}`, `avatar`, `address: {street, city, state, postalCode, country}`
//!   (`street` is `address1` and `address2` joined by a newline, as the profile holds them
//!   after the change), custom properties under their own names. A field the write cleared
//!   is `null` (a cleared address is `address: null`).
//! - [`OutboxChange::Consent`]: `consent` is `SUBSCRIBED`, `UNSUBSCRIBED` or
//!   `NEVER_SUBSCRIBED`; `suppressed` the latest suppression's reason (`HARD_BOUNCE`,
//!   `INVALID_EMAIL`, `SPAM_COMPLAINT`, `UNSUBSCRIBE`, `USER_SUPPRESSED`) or `None`.
//! - [`OutboxChange::List`]: `change` is `added`, `pending`, `confirmed` or `removed`.

use jiff::Timestamp;
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::apply::builtin::BuiltinMetric;
use crate::error::{EngageError, EngageResult};
use crate::model::ProfileId;
use crate::query::ts;

/// A position in the outbox: the log entry's sequence number and the change's index in it.
pub type OutboxPosition = (i64, u32);

/// One change made in Signalbox to one profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// The log entry that made the change. (An entry applied again from quarantine, behind
    /// the checkpoint, places its rows at the checkpoint's sequence number instead, after the
    /// rows there: a reader past its own position would never see them.)
    pub seq: i64,
    /// The change's index among the entry's changes (a job may change many profiles).
    pub n: u32,
    /// The entry's receipt time (a built-in event's own time).
    pub at: Timestamp,
    pub profile_id: ProfileId,
    /// The profile's email when the change was applied.
    pub email: Option<String>,
    /// The `userId` a Segment source last gave this profile, if any.
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    /// The profile was created or updated through a Segment source at or before this change.
    pub from_segment: bool,
    pub change: OutboxChange,
}

/// What changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutboxChange {
    /// Profile fields the write set, under Segment's trait names (`email`, `firstName`,
    /// `lastName`, `phone`, `title`, `company: {name}`, `avatar`, `address: {street, city,
    /// state, postalCode, country}`, custom properties under their own names). Only what
    /// this change set.
    Traits { traits: Map<String, Value> },
    /// Email consent changed: `SUBSCRIBED`, `UNSUBSCRIBED` or `NEVER_SUBSCRIBED`, and the
    /// suppression reason when the address is suppressed.
    Consent {
        consent: String,
        suppressed: Option<String>,
    },
    /// List membership changed: `added`, `pending`, `confirmed` or `removed`.
    List {
        list_id: String,
        list_name: String,
        change: String,
    },
    /// A built-in email event.
    Email(EmailEvent),
}

/// A built-in email event, with the fields the Email spec names pulled out of its properties.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmailEvent {
    pub metric: BuiltinMetric,
    /// The send's id (`$message`).
    pub message_id: Option<String>,
    pub subject: Option<String>,
    pub flow_id: Option<String>,
    pub flow_name: Option<String>,
    pub campaign_id: Option<String>,
    pub campaign_name: Option<String>,
    /// The clicked link (`Clicked Email`).
    pub url: Option<String>,
    pub list_id: Option<String>,
    /// The properties the event was recorded with (without the `$event_id` the stored event
    /// adds when it has no unique id of its own).
    pub properties: Map<String, Value>,
}

/// Where a write came from. Writes forwarded from a Segment source (by another Signalbox's
/// `klaviyo` destination, which marks them) are applied as usual but make no outbox row, and
/// mark the profiles they touch as [`OutboxEntry::from_segment`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteOrigin {
    /// Made in Signalbox: the API, flows, consent pages, imports.
    #[default]
    Signalbox,
    /// Forwarded from a Segment source.
    Segment,
}

impl WriteOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            WriteOrigin::Signalbox => "signalbox",
            WriteOrigin::Segment => "segment",
        }
    }

    fn is_signalbox(&self) -> bool {
        *self == WriteOrigin::Signalbox
    }
}

/// A log entry's payload with the origin of the write beside the op's own fields. The origin
/// is absent for writes made in Signalbox, so entries written before it existed read alike.
#[derive(Debug, Serialize)]
pub(crate) struct Stamped<T> {
    #[serde(flatten)]
    pub op: T,
    #[serde(skip_serializing_if = "WriteOrigin::is_signalbox")]
    pub origin: WriteOrigin,
}

/// Reads a [`Stamped`] payload: the op (which ignores the `origin` key), and the origin. The
/// origin is parsed only when the payload mentions it, so a write made in Signalbox is read
/// once, as before.
pub(crate) fn read_stamped<T: serde::de::DeserializeOwned>(
    payload: &str,
) -> serde_json::Result<(T, WriteOrigin)> {
    #[derive(Deserialize)]
    struct OriginOnly {
        #[serde(default)]
        origin: WriteOrigin,
    }
    let op = serde_json::from_str(payload)?;
    let origin = if payload.contains("\"origin\"") {
        serde_json::from_str::<OriginOnly>(payload)?.origin
    } else {
        WriteOrigin::Signalbox
    };
    Ok((op, origin))
}

impl crate::Engage {
    /// Outbox entries after `after`, in order, at most `limit`; only what the pipeline has
    /// committed.
    pub async fn outbox_after(
        &self,
        after: OutboxPosition,
        limit: u32,
    ) -> crate::EngageResult<Vec<OutboxEntry>> {
        self.readers()
            .with(move |conn| entries_after(conn, after, limit))
            .await
    }

    /// The newest entry's position; `(0, 0)` when the outbox is empty.
    pub async fn outbox_head(&self) -> crate::EngageResult<OutboxPosition> {
        self.readers().with(head).await
    }

    /// The position just before the first entry at or after `since` (where a replay from that
    /// time starts reading). The head when no entry is that recent; `(0, 0)` when the first
    /// entry is.
    pub async fn outbox_position_before(
        &self,
        since: Timestamp,
    ) -> crate::EngageResult<OutboxPosition> {
        self.readers()
            .with(move |conn| position_before(conn, since))
            .await
    }
}

/// Entries read at once at most.
const MAX_READ: u32 = 10_000;

fn entries_after(
    conn: &Connection,
    after: OutboxPosition,
    limit: u32,
) -> EngageResult<Vec<OutboxEntry>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, n, at_us, profile_id, email, user_id, anonymous_id, from_segment, change
         FROM outbox WHERE (seq, n) > (?1, ?2) ORDER BY seq, n LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![after.0, after.1, limit.min(MAX_READ)], read_entry)?;
    rows.map(|row| row?).collect::<Result<_, _>>()
}

/// A row, or the reason its change cannot be read.
fn read_entry(r: &Row<'_>) -> rusqlite::Result<Result<OutboxEntry, EngageError>> {
    let seq: i64 = r.get(0)?;
    let n: u32 = r.get(1)?;
    let change: String = r.get(8)?;
    let change = match serde_json::from_str(&change) {
        Ok(change) => change,
        Err(err) => {
            return Ok(Err(EngageError::Internal(format!(
                "outbox entry ({seq}, {n}) is unreadable: {err}"
            ))))
        }
    };
    Ok(Ok(OutboxEntry {
        seq,
        n,
        at: ts(r.get(2)?),
        profile_id: ProfileId(r.get(3)?),
        email: r.get(4)?,
        user_id: r.get(5)?,
        anonymous_id: r.get(6)?,
        from_segment: r.get(7)?,
        change,
    }))
}

fn head(conn: &Connection) -> EngageResult<OutboxPosition> {
    Ok(conn
        .prepare_cached("SELECT seq, n FROM outbox ORDER BY seq DESC, n DESC LIMIT 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .unwrap_or((0, 0)))
}

fn position_before(conn: &Connection, since: Timestamp) -> EngageResult<OutboxPosition> {
    let since_us = since.as_microsecond();
    // Times are not ordered by position (a built-in event carries its own time): the first
    // position at or after `since`, found in the time index (it covers the position).
    let first: Option<(i64, u32)> = conn
        .prepare_cached(
            "SELECT seq, n FROM outbox INDEXED BY outbox_at WHERE at_us >= ?1
             ORDER BY seq, n LIMIT 1",
        )?
        .query_row([since_us], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some(first) = first else {
        return head(conn);
    };
    Ok(conn
        .prepare_cached(
            "SELECT seq, n FROM outbox WHERE (seq, n) < (?1, ?2)
             ORDER BY seq DESC, n DESC LIMIT 1",
        )?
        .query_row(params![first.0, first.1], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .unwrap_or((0, 0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::ApiProfileOp;
    use crate::model::{ApiEventInput, ProfileInput};

    #[test]
    fn the_origin_sits_beside_the_op_and_is_absent_when_made_in_signalbox() {
        let op = ApiProfileOp::Create {
            profile: ProfileInput {
                email: Some("a@example.com".into()),
                ..ProfileInput::default()
            },
        };
        let plain = serde_json::to_string(&Stamped {
            op: &op,
            origin: WriteOrigin::Signalbox,
        })
        .unwrap();
        assert_eq!(plain, serde_json::to_string(&op).unwrap());
        let read: (ApiProfileOp, _) = read_stamped(&plain).unwrap();
        assert_eq!(read, (op.clone(), WriteOrigin::Signalbox));

        let forwarded = serde_json::to_string(&Stamped {
            op: &op,
            origin: WriteOrigin::Segment,
        })
        .unwrap();
        assert!(forwarded.contains(r#""origin":"segment""#), "{forwarded}");
        let read: (ApiProfileOp, _) = read_stamped(&forwarded).unwrap();
        assert_eq!(read, (op, WriteOrigin::Segment));
    }

    #[test]
    fn only_the_top_level_origin_counts() {
        let mut input = ApiEventInput {
            metric_name: "Viewed".into(),
            ..ApiEventInput::default()
        };
        input
            .properties
            .insert("origin".into(), serde_json::json!("segment"));
        let payload = serde_json::to_string(&Stamped {
            op: &input,
            origin: WriteOrigin::Signalbox,
        })
        .unwrap();
        let read: (ApiEventInput, _) = read_stamped(&payload).unwrap();
        assert_eq!(read, (input, WriteOrigin::Signalbox));
        let err = read_stamped::<ApiEventInput>(r#"{"metric_name":"x","origin":"elsewhere"}"#);
        assert!(err.is_err());
    }
}
