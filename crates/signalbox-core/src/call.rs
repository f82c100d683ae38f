//! Calls: a Segment message once accepted (normalised) or rejected.

use jiff::Timestamp;
use serde::Serialize;

use crate::source::SourceId;

/// What a log entry is: one of the six Segment call types, or a write of the
/// Klaviyo-compatible API (appended under [`SourceId::API`](crate::SourceId::API)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallKind {
    Track,
    Identify,
    Page,
    Screen,
    Group,
    Alias,
    /// An event created through the API.
    ApiEvent,
    /// A profile created, updated or imported through the API.
    ApiProfile,
    /// Profiles merged through the API.
    ApiMerge,
    /// A list created, changed or deleted, or its members added or removed, through the API.
    ApiList,
    /// Email consent or suppression changed through the API or a signed link.
    ApiConsent,
    /// A built-in metric's event (`Opened Email`, `Clicked Email`, …) recorded by Signalbox
    /// itself, with integration `Signalbox`. Only server code appends it; neither the
    /// Tracking API nor the Klaviyo-compatible API can.
    BuiltinEvent,
}

impl CallKind {
    /// The six Segment call types: the only kinds the Tracking API takes.
    pub const ALL: [CallKind; 6] = [
        CallKind::Track,
        CallKind::Identify,
        CallKind::Page,
        CallKind::Screen,
        CallKind::Group,
        CallKind::Alias,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CallKind::Track => "track",
            CallKind::Identify => "identify",
            CallKind::Page => "page",
            CallKind::Screen => "screen",
            CallKind::Group => "group",
            CallKind::Alias => "alias",
            CallKind::ApiEvent => "api_event",
            CallKind::ApiProfile => "api_profile",
            CallKind::ApiMerge => "api_merge",
            CallKind::ApiList => "api_list",
            CallKind::ApiConsent => "api_consent",
            CallKind::BuiltinEvent => "builtin_event",
        }
    }

    /// The kinds only the API appends; never accepted from a Segment client.
    pub const INTERNAL: [CallKind; 6] = [
        CallKind::ApiEvent,
        CallKind::ApiProfile,
        CallKind::ApiMerge,
        CallKind::ApiList,
        CallKind::ApiConsent,
        CallKind::BuiltinEvent,
    ];

    /// Parses a Segment call type (one of [`CallKind::ALL`]).
    pub fn parse(s: &str) -> Option<CallKind> {
        CallKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Parses any kind the log holds, Segment's and the API's.
    pub fn parse_logged(s: &str) -> Option<CallKind> {
        CallKind::parse(s).or_else(|| CallKind::INTERNAL.into_iter().find(|k| k.as_str() == s))
    }

    /// Whether this is one of Segment's six call types.
    pub fn is_segment(self) -> bool {
        CallKind::ALL.contains(&self)
    }
}

/// A validated, normalised call ready to append to the log.
///
/// `payload` is the message as Segment's spec shapes it (with `type`, `messageId`,
/// `receivedAt`, `timestamp`, `originalTimestamp`), serialised once, without the write key.
#[derive(Debug, Clone)]
pub struct NewCall {
    pub kind: CallKind,
    pub message_id: String,
    pub received_at: Timestamp,
    pub payload: String,
}

/// A call read back from the log.
#[derive(Debug, Clone, Serialize)]
pub struct StoredCall {
    pub seq: i64,
    pub source_id: SourceId,
    pub kind: CallKind,
    pub message_id: String,
    pub received_at: Timestamp,
    pub payload: String,
}

/// Why a message was refused. The names are the `code` in error bodies and in the
/// rejected-calls listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectCode {
    InvalidJson,
    UnreadableBody,
    MalformedGzip,
    MessageTooLarge,
    BatchTooLarge,
    TooManyMessages,
    NotAnObject,
    InvalidType,
    NoUserAnonId,
    MissingEvent,
    MissingGroupId,
    MissingPreviousId,
    InvalidField,
    MessageIdTooLong,
    InvalidTimestamp,
    /// Objects and arrays nested deeper than the decoder's limit.
    TooDeep,
}

impl RejectCode {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::InvalidJson => "invalid_json",
            RejectCode::UnreadableBody => "unreadable_body",
            RejectCode::MalformedGzip => "malformed_gzip",
            RejectCode::MessageTooLarge => "message_too_large",
            RejectCode::BatchTooLarge => "batch_too_large",
            RejectCode::TooManyMessages => "too_many_messages",
            RejectCode::NotAnObject => "not_an_object",
            RejectCode::InvalidType => "invalid_type",
            RejectCode::NoUserAnonId => "no_user_anon_id",
            RejectCode::MissingEvent => "missing_event",
            RejectCode::MissingGroupId => "missing_group_id",
            RejectCode::MissingPreviousId => "missing_previous_id",
            RejectCode::InvalidField => "invalid_field",
            RejectCode::MessageIdTooLong => "message_id_too_long",
            RejectCode::InvalidTimestamp => "invalid_timestamp",
            RejectCode::TooDeep => "too_deep",
        }
    }
}

/// A message refused at ingest, kept so that the refusal is visible, never silent.
#[derive(Debug, Clone)]
pub struct Rejection {
    pub code: RejectCode,
    pub message: String,
    pub received_at: Timestamp,
    /// The message as received (truncated to the message size limit), without the write key.
    pub payload: String,
}

/// A rejection read back from the store.
#[derive(Debug, Clone, Serialize)]
pub struct StoredRejection {
    pub id: i64,
    pub source_id: SourceId,
    pub code: String,
    pub message: String,
    pub received_at: Timestamp,
    pub payload: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_parsing_never_accepts_the_api_kinds() {
        for kind in CallKind::INTERNAL {
            assert_eq!(CallKind::parse(kind.as_str()), None);
            assert_eq!(CallKind::parse_logged(kind.as_str()), Some(kind));
            assert!(!kind.is_segment());
        }
        for kind in CallKind::ALL {
            assert_eq!(CallKind::parse(kind.as_str()), Some(kind));
            assert!(kind.is_segment());
        }
    }
}
