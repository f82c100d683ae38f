//! What a destination is, what it reports, and what it keeps of its deliveries.

use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Segment's US Tracking API host: the default endpoint of a `segment` destination.
pub const SEGMENT_US_ENDPOINT: &str = "https://api.segment.io";
/// Segment's EU (Dublin) Tracking API host.
pub const SEGMENT_EU_ENDPOINT: &str = "https://events.eu1.segmentapis.com";
/// Klaviyo's API host: the default endpoint of a `klaviyo` destination.
pub const KLAVIYO_ENDPOINT: &str = "https://a.klaviyo.com";

/// A secret a destination holds (a write key, an API key, a webhook secret). Its `Debug` and
/// `Display` print it redacted; [`Secret::expose`] is the only way to the text.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }

    /// The secret itself: only for the request that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What `list`, `status` and the admin API show: the last four characters of a secret of
    /// 16 or more, nothing of a shorter one.
    pub fn redacted(&self) -> String {
        let chars: Vec<char> = self.0.chars().collect();
        if chars.len() >= 16 {
            let tail: String = chars[chars.len() - 4..].iter().collect();
            format!("••••{tail}")
        } else {
            "••••".to_owned()
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// The three kinds of destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DestinationKind {
    /// The reverse sync: Signalbox-made profile changes and email events to a Segment source.
    Segment,
    /// Forward a source's calls to a Klaviyo-compatible API.
    Klaviyo,
    /// Forward a source's calls as signed Segment-spec JSON batches to a URL.
    Webhook,
}

impl DestinationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DestinationKind::Segment => "segment",
            DestinationKind::Klaviyo => "klaviyo",
            DestinationKind::Webhook => "webhook",
        }
    }
}

impl std::str::FromStr for DestinationKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "segment" => Ok(DestinationKind::Segment),
            "klaviyo" => Ok(DestinationKind::Klaviyo),
            "webhook" => Ok(DestinationKind::Webhook),
            other => Err(format!(
                "unknown kind {other:?}: expected segment, klaviyo or webhook"
            )),
        }
    }
}

/// A destination's settings, per kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DestinationConfig {
    Segment {
        write_key: Secret,
        /// A Tracking API host; `/v1/batch` is appended.
        endpoint: String,
        /// "Do not sync profiles that are not updated by the Klaviyo Destination": only
        /// profiles created or updated through a Segment source are synced.
        only_segment_profiles: bool,
    },
    Klaviyo {
        api_key: Secret,
        /// A Klaviyo-compatible API host; `/api/…` is appended.
        endpoint: String,
        /// The sources (by name) whose calls are forwarded.
        sources: Vec<String>,
    },
    Webhook {
        url: String,
        /// HMAC-SHA256 key of the `Signalbox-Signature` header; none: unsigned.
        secret: Option<Secret>,
        sources: Vec<String>,
    },
}

impl DestinationConfig {
    pub fn kind(&self) -> DestinationKind {
        match self {
            DestinationConfig::Segment { .. } => DestinationKind::Segment,
            DestinationConfig::Klaviyo { .. } => DestinationKind::Klaviyo,
            DestinationConfig::Webhook { .. } => DestinationKind::Webhook,
        }
    }

    /// The sources whose calls this destination forwards (empty for `segment`).
    pub fn sources(&self) -> &[String] {
        match self {
            DestinationConfig::Segment { .. } => &[],
            DestinationConfig::Klaviyo { sources, .. }
            | DestinationConfig::Webhook { sources, .. } => sources,
        }
    }

    /// Where requests go (the endpoint or URL), for display.
    pub fn target(&self) -> &str {
        match self {
            DestinationConfig::Segment { endpoint, .. }
            | DestinationConfig::Klaviyo { endpoint, .. } => endpoint,
            DestinationConfig::Webhook { url, .. } => url,
        }
    }

    /// The same settings with every secret replaced by its redacted form, as JSON: what
    /// `list`, `status` and the admin API show.
    pub fn redacted_json(&self) -> Value {
        let mut value = serde_json::to_value(self).expect("config serialises");
        let secret = match self {
            DestinationConfig::Segment { write_key, .. } => Some(("write_key", write_key)),
            DestinationConfig::Klaviyo { api_key, .. } => Some(("api_key", api_key)),
            DestinationConfig::Webhook { secret, .. } => secret.as_ref().map(|s| ("secret", s)),
        };
        if let (Some((field, secret)), Some(object)) = (secret, value.as_object_mut()) {
            object.insert(field.to_owned(), Value::String(secret.redacted()));
        }
        value
    }
}

/// Whether a destination delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DestinationState {
    Active,
    Paused,
}

impl DestinationState {
    /// How it is stored and shown (the same text as its JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            DestinationState::Active => "active",
            DestinationState::Paused => "paused",
        }
    }

    pub fn parse(text: &str) -> Option<DestinationState> {
        match text {
            "active" => Some(DestinationState::Active),
            "paused" => Some(DestinationState::Paused),
            _ => None,
        }
    }
}

/// A destination as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Destination {
    /// Stable id (`dst_` + 26 characters); part of every id this destination derives.
    pub id: String,
    /// Unique name: letters, digits, `-`, `_`, `.`.
    pub name: String,
    pub config: DestinationConfig,
    /// Calls per second at most (token bucket); `None`: the kind's default (Klaviyo's
    /// published limits for `klaviyo`, unlimited otherwise).
    pub rate: Option<f64>,
    pub state: DestinationState,
    pub created: Timestamp,
    pub updated: Timestamp,
}

/// What `destination create` and `POST /admin/v1/destinations` give.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDestination {
    pub name: String,
    pub config: DestinationConfig,
    pub rate: Option<f64>,
}

/// A change to a destination; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DestinationPatch {
    pub state: Option<DestinationState>,
    /// `Some(None)` clears the rate (back to the kind's default).
    pub rate: Option<Option<f64>>,
    pub endpoint: Option<String>,
    pub sources: Option<Vec<String>>,
    pub only_segment_profiles: Option<bool>,
    /// A new write key, API key or webhook secret.
    pub secret: Option<Secret>,
}

/// Where a destination is in what it follows, and what it has done.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Everything up to here is delivered (or dead-lettered): a position in the call log
    /// (`seq`) or in engage's outbox (`seq`, `n`).
    pub cursor: Position,
    pub delivered: u64,
    /// Requests that failed and were tried again.
    pub retried: u64,
    /// Requests that failed (each attempt).
    pub failed: u64,
    pub dead_lettered: u64,
    pub last_error: Option<String>,
    pub last_error_at: Option<Timestamp>,
    pub last_delivery_at: Option<Timestamp>,
}

/// A position in a feed: a log sequence number and an index inside its entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Position {
    pub seq: i64,
    pub n: u32,
}

/// The circuit breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Circuit {
    Closed,
    /// Failing: no request until `until`.
    Open,
    /// One probe request is allowed.
    HalfOpen,
}

/// `destination status` and `GET /admin/v1/destinations/{name}/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DestinationStatus {
    pub name: String,
    pub kind: DestinationKind,
    pub state: DestinationState,
    pub target: String,
    pub delivered: u64,
    /// Items after the cursor, not yet delivered.
    pub queued: u64,
    /// True while a request is being tried again after a failure.
    pub retrying: bool,
    pub retried: u64,
    pub failed: u64,
    pub dead_lettered: u64,
    /// Age in seconds of the oldest undelivered item; 0 when nothing waits.
    pub lag_seconds: f64,
    pub last_error: Option<String>,
    pub last_error_at: Option<Timestamp>,
    pub last_delivery_at: Option<Timestamp>,
    /// Items delivered per second over the last minute.
    pub throughput: f64,
    pub circuit: Circuit,
    pub cursor: Position,
}

/// A call a receiver refused for good: a 4xx other than 408/429, or a payload it can never
/// take. Kept with its reason and the response until replayed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub id: i64,
    pub destination: String,
    pub position: Position,
    /// The id the call was sent with (`messageId` or `unique_id`).
    pub message_id: String,
    pub reason: String,
    pub status: Option<u16>,
    /// The start of the receiver's response body.
    pub response: Option<String>,
    /// What was sent for this call (one message of the batch), without secrets.
    pub payload: Value,
    pub at: Timestamp,
    /// Set when `replay` delivered it.
    pub replayed_at: Option<Timestamp>,
}

/// What a destination that follows the call log still needs of it: retention keeps the
/// entries from `from_seq` on, and those received since a pending replay's time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogHold {
    pub destination: String,
    pub state: DestinationState,
    /// The first entry not yet delivered: the one after the cursor.
    pub from_seq: i64,
    /// The earliest time a replay request not yet taken sends again from.
    pub replay_since: Option<Timestamp>,
}

/// What `replay` sends again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Replay {
    /// Every dead letter not yet replayed.
    DeadLetters,
    /// Everything received at or after this time (the cursor moves back; ids stay the same,
    /// so the receiver sees no duplicates).
    Since(Timestamp),
}

/// One request to a receiver and what came back, secrets redacted; the last 100 are kept per
/// destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    pub id: i64,
    pub destination: String,
    pub at: Timestamp,
    pub method: String,
    pub url: String,
    /// Request headers, with `Authorization` and signatures redacted.
    pub request_headers: Vec<(String, String)>,
    /// The request body, cut at 16 KiB.
    pub request_body: String,
    pub status: Option<u16>,
    /// The response body, cut at 16 KiB.
    pub response_body: Option<String>,
    /// A transport error (timeout, refused address) when there was no response.
    pub error: Option<String>,
    pub duration_ms: f64,
    /// Items the request carried.
    pub items: u32,
    pub outcome: DeliveryOutcome,
}

/// What became of one request to a receiver; stored and shown as its snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryOutcome {
    /// The receiver took the batch.
    Delivered,
    /// A failure worth trying again (timeout, 5xx, 408, 429).
    Retry,
    /// The receiver refused a batch of several: it is sent again in halves.
    Split,
    /// The receiver refused a single call for good: it went to the dead letters.
    DeadLettered,
}

impl DeliveryOutcome {
    pub const ALL: [DeliveryOutcome; 4] = [
        DeliveryOutcome::Delivered,
        DeliveryOutcome::Retry,
        DeliveryOutcome::Split,
        DeliveryOutcome::DeadLettered,
    ];

    /// The stored and wire text.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryOutcome::Delivered => "delivered",
            DeliveryOutcome::Retry => "retry",
            DeliveryOutcome::Split => "split",
            DeliveryOutcome::DeadLettered => "dead_lettered",
        }
    }

    /// The outcome a stored text names; `None` for any other text.
    pub fn parse(text: &str) -> Option<DeliveryOutcome> {
        DeliveryOutcome::ALL
            .into_iter()
            .find(|outcome| outcome.as_str() == text)
    }
}

impl std::fmt::Display for DeliveryOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_delivery_outcome_round_trips_through_its_stored_and_wire_text() {
        let texts: Vec<&str> = DeliveryOutcome::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(texts, ["delivered", "retry", "split", "dead_lettered"]);
        for outcome in DeliveryOutcome::ALL {
            assert_eq!(DeliveryOutcome::parse(outcome.as_str()), Some(outcome));
            assert_eq!(outcome.to_string(), outcome.as_str());
            assert_eq!(
                format!("{outcome:<14}|"),
                format!("{:<14}|", outcome.as_str())
            );
            let wire = serde_json::to_value(outcome).unwrap();
            assert_eq!(wire, serde_json::Value::from(outcome.as_str()));
            assert_eq!(
                serde_json::from_value::<DeliveryOutcome>(wire).unwrap(),
                outcome
            );
        }
        assert_eq!(DeliveryOutcome::parse("Delivered"), None);
        assert_eq!(DeliveryOutcome::parse(""), None);
    }
}
