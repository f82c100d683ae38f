//! What the engine exposes: flows, their statistics, runs, sends and dead letters.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde_json::Value;
use signalbox_engage::ProfileKey;

use crate::definition::FlowDefinition;

/// A flow's status. Runs enter only while `live` or `manual`; a `paused` or `draft` flow keeps
/// its runs where they are (delays still count down) until it is set live again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlowStatus {
    Draft,
    /// Runs enter and move, but messages wait for review instead of being sent.
    Manual,
    Live,
    Paused,
}

impl FlowStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            FlowStatus::Draft => "draft",
            FlowStatus::Manual => "manual",
            FlowStatus::Live => "live",
            FlowStatus::Paused => "paused",
        }
    }

    pub fn parse(s: &str) -> Option<FlowStatus> {
        match s {
            "draft" => Some(FlowStatus::Draft),
            "manual" => Some(FlowStatus::Manual),
            "live" => Some(FlowStatus::Live),
            "paused" => Some(FlowStatus::Paused),
            _ => None,
        }
    }

    /// Whether runs enter and move.
    pub fn is_running(self) -> bool {
        matches!(self, FlowStatus::Live | FlowStatus::Manual)
    }
}

/// A stored flow.
#[derive(Debug, Clone)]
pub struct FlowInfo {
    pub id: String,
    pub name: String,
    pub status: FlowStatus,
    pub archived: bool,
    /// Klaviyo's `trigger_type`: `Metric`, `Added to List`, `Added to Segment`, `Date Based`.
    pub trigger_type: &'static str,
    /// Increases with every definition change.
    pub version: i64,
    pub created: Timestamp,
    pub updated: Timestamp,
    /// With real action ids; [`FlowDefinition::to_json`] writes it in Klaviyo's shape.
    pub definition: FlowDefinition,
}

/// A page of flows ([`crate::Flows::list_flows_page`]).
#[derive(Debug, Clone)]
pub struct FlowPage {
    pub flows: Vec<FlowInfo>,
    /// The cursor of the next page; `None` on the last.
    pub next: Option<String>,
}

/// A change to a flow (PATCH); `None` leaves a part as it is.
#[derive(Debug, Clone, Default)]
pub struct FlowUpdate {
    pub name: Option<String>,
    /// Also sets the status of every message action when given (Klaviyo's PATCH semantics):
    /// `live` → live, `manual` → manual, `draft` → draft; `paused` leaves them.
    pub status: Option<FlowStatus>,
    pub archived: Option<bool>,
    /// A new definition (Klaviyo's JSON); actions keep their `id`, new ones use `temporary_id`.
    pub definition: Option<Value>,
}

/// Counters of one flow or action: `entered`, `completed`, `exited_filter`,
/// `skipped:<reason>` (`smart_sending`, `consent`, `draft`, `no_email`, `manual` (skipped by
/// a reviewer), `expired` (held for review too long), …), `held` (messages held for review),
/// `approved`, `sent`, `failed`, `bounced`, `opened`, `clicked`, `converted`, `delivered`,
/// `dead_lettered`, `waiting` (runs waiting on a delay now), `pending` (messages waiting for
/// review now).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    pub counts: BTreeMap<String, i64>,
    /// Revenue of conversions (`Placed Order` value within 5 days of an email).
    pub revenue: f64,
}

impl Counters {
    pub fn get(&self, name: &str) -> i64 {
        self.counts.get(name).copied().unwrap_or(0)
    }
}

/// Statistics of a flow and of each of its actions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FlowStats {
    pub flow: Counters,
    pub actions: BTreeMap<String, Counters>,
}

impl FlowStats {
    pub fn action(&self, id: &str) -> Counters {
        self.actions.get(id).cloned().unwrap_or_default()
    }
}

/// One run, as the API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunInfo {
    pub id: i64,
    pub flow_id: String,
    pub profile_id: String,
    pub trigger_event_id: Option<String>,
    pub started: Timestamp,
    /// The action it is at (`None` once finished).
    pub position: Option<String>,
    pub next_wake: Option<Timestamp>,
    pub status: RunStatus,
    /// Why it ended early (`None` while active or once completed).
    pub exit_reason: Option<RunExit>,
}

/// Why a run ended before the end of its flow; stored as its snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunExit {
    /// The profile no longer matched the flow's profile filter.
    Filter,
    /// The action it was at was removed from the flow.
    ActionRemoved,
    /// Its flow was deleted.
    FlowDeleted,
}

impl RunExit {
    pub fn as_str(self) -> &'static str {
        match self {
            RunExit::Filter => "filter",
            RunExit::ActionRemoved => "action_removed",
            RunExit::FlowDeleted => "flow_deleted",
        }
    }

    pub fn parse(s: &str) -> Option<RunExit> {
        RunExit::ALL.into_iter().find(|reason| reason.as_str() == s)
    }

    pub const ALL: [RunExit; 3] = [
        RunExit::Filter,
        RunExit::ActionRemoved,
        RunExit::FlowDeleted,
    ];
}

/// Where a run stands; stored as its lowercase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunStatus {
    /// Moving through the flow or waiting (a delay, a message held for review).
    Active,
    /// Reached the end of the flow.
    Completed,
    /// Left early: the profile filter no longer matched, or its action was removed.
    Exited,
    /// Ended because its flow was deleted.
    Cancelled,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Active => "active",
            RunStatus::Completed => "completed",
            RunStatus::Exited => "exited",
            RunStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<RunStatus> {
        match s {
            "active" => Some(RunStatus::Active),
            "completed" => Some(RunStatus::Completed),
            "exited" => Some(RunStatus::Exited),
            "cancelled" => Some(RunStatus::Cancelled),
            _ => None,
        }
    }

    pub const ALL: [RunStatus; 4] = [
        RunStatus::Active,
        RunStatus::Completed,
        RunStatus::Exited,
        RunStatus::Cancelled,
    ];
}

/// One email a flow decided to send.
#[derive(Debug, Clone, PartialEq)]
pub struct SendInfo {
    pub key: String,
    pub flow_id: String,
    pub action_id: String,
    pub profile_pk: ProfileKey,
    pub email: String,
    pub subject: Option<String>,
    pub message_id: Option<String>,
    pub status: SendStatus,
    pub detail: Option<String>,
}

/// Where an email a flow decided to send stands; stored as its lowercase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SendStatus {
    /// Decided, not yet handed to the mailer.
    Pending,
    /// Accepted by the mail server.
    Sent,
    /// Refused by the receiving mail server.
    Bounced,
    /// Not sent (no mailer, no address, a template error, a permanent mailer error).
    Failed,
}

impl SendStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SendStatus::Pending => "pending",
            SendStatus::Sent => "sent",
            SendStatus::Bounced => "bounced",
            SendStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<SendStatus> {
        match s {
            "pending" => Some(SendStatus::Pending),
            "sent" => Some(SendStatus::Sent),
            "bounced" => Some(SendStatus::Bounced),
            "failed" => Some(SendStatus::Failed),
            _ => None,
        }
    }

    pub const ALL: [SendStatus; 4] = [
        SendStatus::Pending,
        SendStatus::Sent,
        SendStatus::Bounced,
        SendStatus::Failed,
    ];
}

/// A webhook delivery given up on.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub key: String,
    pub flow_id: String,
    pub action_id: String,
    pub url: String,
    pub body: String,
    pub reason: String,
    pub attempts: i64,
    pub at: Timestamp,
}

/// Where a message held for review stands ([`crate::Flows::approve_message`],
/// [`crate::Flows::skip_message`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeldStatus {
    /// Waiting in the review queue; the run waits on it.
    Pending,
    /// Released by a person: the worker sends it (after the usual checks) and the run moves on.
    Approved,
    /// Skipped by a person (`skipped:manual`); the run moves on.
    Skipped,
    /// Not released in time (`skipped:expired`); the run moved on.
    Expired,
    /// Its run ended before it was released (the flow was deleted, the profile left it).
    Cancelled,
}

impl HeldStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HeldStatus::Pending => "pending",
            HeldStatus::Approved => "approved",
            HeldStatus::Skipped => "skipped",
            HeldStatus::Expired => "expired",
            HeldStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<HeldStatus> {
        match s {
            "pending" => Some(HeldStatus::Pending),
            "approved" => Some(HeldStatus::Approved),
            "skipped" => Some(HeldStatus::Skipped),
            "expired" => Some(HeldStatus::Expired),
            "cancelled" => Some(HeldStatus::Cancelled),
            _ => None,
        }
    }

    pub const ALL: [HeldStatus; 5] = [
        HeldStatus::Pending,
        HeldStatus::Approved,
        HeldStatus::Skipped,
        HeldStatus::Expired,
        HeldStatus::Cancelled,
    ];
}

/// A message (email or webhook) of a `manual` action or flow, held for review.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldMessage {
    /// The id a reviewer names to approve or skip it.
    pub id: i64,
    pub flow_id: String,
    pub action_id: String,
    /// `send-email` or `send-webhook`.
    pub kind: String,
    pub run_id: i64,
    pub profile_id: String,
    /// The profile's email address when it was held.
    pub email: Option<String>,
    /// The subject line as the action writes it (a template; rendered when sent).
    pub subject: Option<String>,
    pub status: HeldStatus,
    pub created: Timestamp,
    /// When a pending message ages out (`skipped:expired`).
    pub expires: Timestamp,
    /// When it was approved, skipped, expired or cancelled.
    pub decided: Option<Timestamp>,
}

/// A page of held messages, oldest first ([`crate::Flows::messages`]).
#[derive(Debug, Clone, PartialEq)]
pub struct HeldPage {
    pub messages: Vec<HeldMessage>,
    /// The `after` of the next page; `None` on the last.
    pub next: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_run_status_round_trips_through_its_stored_text() {
        let texts: Vec<&str> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(texts, ["active", "completed", "exited", "cancelled"]);
        for status in RunStatus::ALL {
            assert_eq!(RunStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(RunStatus::parse("Active"), None);
        assert_eq!(RunStatus::parse(""), None);
    }

    #[test]
    fn every_run_exit_round_trips_through_its_stored_text() {
        let texts: Vec<&str> = RunExit::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(texts, ["filter", "action_removed", "flow_deleted"]);
        for reason in RunExit::ALL {
            assert_eq!(RunExit::parse(reason.as_str()), Some(reason));
        }
        assert_eq!(RunExit::parse("Filter"), None);
    }

    #[test]
    fn every_send_status_round_trips_through_its_stored_text() {
        let texts: Vec<&str> = SendStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(texts, ["pending", "sent", "bounced", "failed"]);
        for status in SendStatus::ALL {
            assert_eq!(SendStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(SendStatus::parse("Sent"), None);
        assert_eq!(SendStatus::parse(""), None);
    }
}
