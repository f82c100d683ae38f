//! The outbox: what Signalbox itself did to profiles, in log order, for the reverse sync.
//!
//! A row is written by the applier, in the transaction of the entry that caused it, for every
//! profile change made in Signalbox (Klaviyo API writes, flow profile updates, consent and
//! list changes, imports) and for every built-in email event. Calls from Segment sources, and
//! API writes marked as forwarded from Segment, are never in it: what arrived from Segment is
//! not sent back. Derived from the log like the rest of `engage.db`: a rebuild writes the same
//! rows at the same positions.

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
    /// The log entry that made the change.
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
    /// Every property the event was stored with.
    pub properties: Map<String, Value>,
}

impl crate::Engage {
    /// Outbox entries after `after`, in order, at most `limit`; only what the pipeline has
    /// committed.
    pub async fn outbox_after(
        &self,
        after: OutboxPosition,
        limit: u32,
    ) -> crate::EngageResult<Vec<OutboxEntry>> {
        let _ = (after, limit);
        Ok(Vec::new())
    }

    /// The newest entry's position; `(0, 0)` when the outbox is empty.
    pub async fn outbox_head(&self) -> crate::EngageResult<OutboxPosition> {
        Ok((0, 0))
    }

    /// The position just before the first entry at or after `since` (where a replay from that
    /// time starts reading).
    pub async fn outbox_position_before(
        &self,
        since: Timestamp,
    ) -> crate::EngageResult<OutboxPosition> {
        let _ = since;
        Ok((0, 0))
    }
}
