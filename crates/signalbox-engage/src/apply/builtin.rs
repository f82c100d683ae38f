//! Built-in metrics: events Signalbox records itself (`Received Email`, `Opened Email`,
//! `Clicked Email`, `Bounced Email`, `Unsubscribed`) on a known profile, with integration
//! `Signalbox`. `Bounced Email` suppresses the address (`HARD_BOUNCE`) and `Unsubscribed`
//! unsubscribes it, in the entry that records the event.
//!
//! They travel through the log as `builtin_event` entries like any other write, so engage
//! state stays a function of the log. Only server code appends them ([`Engage::record_builtin_event`]):
//! the Tracking API takes Segment's six call types only and the Klaviyo-compatible API appends
//! `api_event` entries, whose integration is always `API`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use signalbox_core::{CallKind, StoredCall};

use super::store::ApplyTx;
use super::Batch;
use crate::engine::Engage;
use crate::error::{EngageError, EngageResult};
use crate::lists::SuppressionReason;
use crate::mapping::MappedEvent;
use crate::model::{Integration, Origin, ProfileId};

/// The metrics Signalbox emits itself. A closed set: nothing else can be recorded under the
/// `Signalbox` integration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BuiltinMetric {
    #[serde(rename = "Received Email")]
    ReceivedEmail,
    #[serde(rename = "Opened Email")]
    OpenedEmail,
    #[serde(rename = "Clicked Email")]
    ClickedEmail,
    #[serde(rename = "Bounced Email")]
    BouncedEmail,
    #[serde(rename = "Unsubscribed")]
    Unsubscribed,
}

impl BuiltinMetric {
    pub const ALL: [BuiltinMetric; 5] = [
        BuiltinMetric::ReceivedEmail,
        BuiltinMetric::OpenedEmail,
        BuiltinMetric::ClickedEmail,
        BuiltinMetric::BouncedEmail,
        BuiltinMetric::Unsubscribed,
    ];

    /// The metric's name, as Klaviyo names its own.
    pub fn name(self) -> &'static str {
        match self {
            BuiltinMetric::ReceivedEmail => "Received Email",
            BuiltinMetric::OpenedEmail => "Opened Email",
            BuiltinMetric::ClickedEmail => "Clicked Email",
            BuiltinMetric::BouncedEmail => "Bounced Email",
            BuiltinMetric::Unsubscribed => "Unsubscribed",
        }
    }

    /// The integration built-in metrics belong to: name `Signalbox`, category `Internal`.
    pub fn integration() -> Integration {
        Integration {
            name: Origin::SIGNALBOX.into(),
            category: "Internal".into(),
        }
    }
}

/// One built-in event on one profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuiltinEventInput {
    pub metric: BuiltinMetric,
    /// The profile, by id (merge redirects are followed). An unknown id drops the event and
    /// records a problem.
    pub profile_id: ProfileId,
    /// Reserved properties by convention: `$message` (the send's id), `$flow`, `URL`,
    /// `Subject`, `Bounce Type`, …
    pub properties: Map<String, Value>,
    /// The log entry's receipt time when absent.
    pub time: Option<jiff::Timestamp>,
    /// Dedupe key per profile and metric: a repeated id keeps only the first event.
    pub unique_id: Option<String>,
}

impl Engage {
    /// Appends a built-in event to the log (durable on return) and lets the pipeline apply
    /// it. Returns the entry's log sequence number, for [`Engage::wait_applied`].
    pub async fn record_builtin_event(&self, event: BuiltinEventInput) -> EngageResult<i64> {
        if event.profile_id.0.trim().is_empty() {
            return Err(EngageError::invalid("profile_id", "is required"));
        }
        let payload = serde_json::to_string(&event).expect("built-in event serialises");
        self.append(vec![(CallKind::BuiltinEvent, payload)]).await
    }
}

impl<T: ApplyTx> Batch<'_, T> {
    pub(super) fn apply_builtin_event(&mut self, entry: &StoredCall) -> EngageResult<()> {
        let input: BuiltinEventInput = match serde_json::from_str(&entry.payload) {
            Ok(input) => input,
            Err(err) => {
                self.problem(None, &format!("unreadable built-in event: {err}"))?;
                return Ok(());
            }
        };
        let Some(pk) = self.profile_by_id(&input.profile_id)? else {
            self.problem(
                None,
                &format!(
                    "{} for unknown profile {}; dropped",
                    input.metric.name(),
                    input.profile_id
                ),
            )?;
            self.count("dropped.builtin_event", 1);
            return Ok(());
        };
        let event = MappedEvent {
            metric_name: input.metric.name().to_owned(),
            time: input.time.unwrap_or(entry.received_at),
            value: None,
            value_currency: None,
            unique_id: input.unique_id,
            properties: input.properties,
        };
        self.count("applied.builtin_event", 1);
        if self.insert_event(pk, 0, &event, &BuiltinMetric::integration())? {
            let time_us = event.time.as_microsecond();
            self.outbox_email(pk, input.metric, time_us, &event.properties)?;
        }
        // A hard bounce suppresses the address, as in Klaviyo: no more marketing email. An
        // unsubscribe recorded as an event is one: consent becomes UNSUBSCRIBED with its
        // suppression, so everything that reads consent (the profile and list APIs, segments,
        // flows) sees it.
        match input.metric {
            BuiltinMetric::BouncedEmail => {
                self.set_suppressed(pk, SuppressionReason::HardBounce)?;
            }
            BuiltinMetric::Unsubscribed => {
                self.set_unsubscribed_by_event(pk)?;
            }
            _ => {}
        }
        Ok(())
    }
}
