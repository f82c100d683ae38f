//! The public types of the audience engine.

use jiff::Timestamp;
use serde::Serialize;
use serde_json::Value;
use signalbox_engage::ProfileKey;

/// A segment as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Segment {
    pub id: String,
    pub name: String,
    /// The definition as Klaviyo spells it (re-serialised from the parsed tree).
    pub definition: Value,
    /// Starts at 1; every definition change adds one.
    pub version: i64,
    pub is_starred: bool,
    pub created: Timestamp,
    pub updated: Timestamp,
    /// While a backfill of the current version runs: how far it is.
    pub backfill: Option<Progress>,
}

impl Segment {
    pub fn is_processing(&self) -> bool {
        self.backfill.is_some()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
}

/// A page of segments, oldest first; `next` is the id to continue after.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentPage {
    pub segments: Vec<Segment>,
    pub next: Option<String>,
}

/// A new segment.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentInput {
    pub name: String,
    pub definition: Value,
    pub is_starred: bool,
}

/// Changes to a segment; `None` keeps the field.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SegmentPatch {
    pub name: Option<String>,
    pub definition: Option<Value>,
    pub is_starred: Option<bool>,
}

/// One enter or leave, in the order they happened. Durable: a follower keeps `cursor`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MembershipChange {
    pub cursor: i64,
    pub segment_id: String,
    pub profile_pk: ProfileKey,
    pub profile_id: String,
    pub entered: bool,
    pub at: Timestamp,
}

/// A member of a segment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Member {
    pub profile_pk: ProfileKey,
    pub profile_id: String,
    pub joined: Timestamp,
}

/// A page of members in profile key order; `next` continues after the last.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberPage {
    pub members: Vec<Member>,
    pub next_after_pk: Option<ProfileKey>,
}

/// "Why is this profile (not) in this segment?", answered per condition, as of now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Why {
    pub segment_id: String,
    pub profile_id: String,
    /// Stored membership.
    pub member: bool,
    pub joined: Option<Timestamp>,
    /// The definition evaluated now.
    pub matches_now: bool,
    pub conditions: Vec<ConditionOutcome>,
    /// The last recorded enter or leave, with the conditions that decided it.
    pub last_change: Option<RecordedChange>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConditionOutcome {
    /// JSON pointer of the condition in the definition.
    pub pointer: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub matched: bool,
    /// What evaluation saw (count over a window, property value, lists, consent).
    pub observed: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordedChange {
    pub cursor: i64,
    pub entered: bool,
    pub at: Timestamp,
    /// `{"trigger": …, "conditions": [ConditionOutcome…]}` as recorded.
    pub cause: Value,
}

/// A dry run of a draft definition over every profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Preview {
    pub profile_count: u64,
    pub profiles_evaluated: u64,
}
