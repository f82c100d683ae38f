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
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::apply::builtin::BuiltinMetric;
use crate::model::ProfileId;

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

/// Outbox entries read at once at most.
pub(crate) const MAX_READ: u32 = 10_000;

/// An `outbox` row as stored, its change still JSON.
pub(crate) struct StoredOutboxEntry {
    pub seq: i64,
    pub n: u32,
    pub at_us: i64,
    pub profile_id: String,
    pub email: Option<String>,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    pub from_segment: bool,
    pub change: String,
}

impl StoredOutboxEntry {
    /// The entry, or why its change cannot be read.
    pub(crate) fn into_entry(self) -> crate::EngageResult<OutboxEntry> {
        let change = serde_json::from_str(&self.change).map_err(|err| {
            crate::EngageError::Internal(format!(
                "outbox entry ({}, {}) is unreadable: {err}",
                self.seq, self.n
            ))
        })?;
        Ok(OutboxEntry {
            seq: self.seq,
            n: self.n,
            at: crate::query::ts(self.at_us),
            profile_id: ProfileId(self.profile_id),
            email: self.email,
            user_id: self.user_id,
            anonymous_id: self.anonymous_id,
            from_segment: self.from_segment,
            change,
        })
    }
}

impl crate::Engage {
    /// Outbox entries after `after`, in order, at most `limit`; only what the pipeline has
    /// committed.
    pub async fn outbox_after(
        &self,
        after: OutboxPosition,
        limit: u32,
    ) -> crate::EngageResult<Vec<OutboxEntry>> {
        self.query(move |queries| queries.outbox_after(after, limit))
            .await
    }

    /// The newest entry's position; `(0, 0)` when the outbox is empty.
    pub async fn outbox_head(&self) -> crate::EngageResult<OutboxPosition> {
        self.query(|queries| queries.outbox_head()).await
    }

    /// The position just before the first entry at or after `since` (where a replay from that
    /// time starts reading). The head when no entry is that recent; `(0, 0)` when the first
    /// entry is.
    pub async fn outbox_position_before(
        &self,
        since: Timestamp,
    ) -> crate::EngageResult<OutboxPosition> {
        self.query(move |queries| queries.outbox_position_before(since))
            .await
    }
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
