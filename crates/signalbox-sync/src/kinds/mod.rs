//! What each kind of destination sends: pure encoders from what a destination follows to
//! [`Unit`]s (one message, event or profile write each), and from runs of units to
//! [`Req`]uests within the receiver's limits.
//!
//! - [`segment`]: engage's outbox to Segment `/v1/batch` bodies (the reverse sync).
//! - [`webhook`]: stored Segment calls to signed JSON batches.
//! - [`klaviyo`]: stored Segment calls to Klaviyo API profile imports, list relationships and
//!   event bulk jobs, mapped as engage maps them.
//!
//! **Invariant:** a unit's id (`messageId`, `unique_id`) depends only on what it came from
//! and the destination's id, so a resend never makes a second event at the receiver.
//! **Invariant:** secrets enter only a [`Req`]'s headers, never a unit or a body.

pub mod klaviyo;
pub mod segment;
pub mod webhook;

use bytes::Bytes;
use jiff::Timestamp;
use serde_json::Value;

use crate::model::Position;

/// The skip reason of a call a forwarding destination does not follow (another source's, or
/// not a Segment call): passed over, not counted as skipped.
pub const NOT_FOLLOWED: &str = "not a Segment call of the destination's sources";

/// Segment's limit on one message.
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024;
/// Segment's limit on one batch request.
pub const MAX_BATCH_BYTES: usize = 500 * 1024;

/// One thing to deliver.
#[derive(Debug, Clone, PartialEq)]
pub struct Unit {
    /// Where it came from (a log `seq` with `n` = 0, an outbox `(seq, n)`, or a log `seq` with
    /// `n` = the operation's index for the `klaviyo` kind).
    pub position: Position,
    /// When what it came from was received: the lag is measured from here.
    pub at: Timestamp,
    /// Set on the last unit of what it came from: once it is delivered (or dead-lettered)
    /// the cursor may move to this position.
    pub done: Option<Position>,
    /// The id the receiver dedupes on (`messageId` or `unique_id`).
    pub message_id: String,
    pub body: UnitBody,
    /// The dead letter a replay is sending again.
    pub replay_of: Option<i64>,
}

/// What a unit carries.
#[derive(Debug, Clone, PartialEq)]
pub enum UnitBody {
    /// Nothing to send (another source, a kind the destination does not take, no identity);
    /// the cursor passes it.
    Skip { reason: &'static str },
    /// A payload the receiver can never take: dead-lettered without sending.
    Refuse { reason: String, payload: Value },
    /// JSON text of the message, and the operation it is.
    Send { json: String, op: Op },
}

/// The operation a unit is, which decides which units share a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A message of a `{"batch": […]}` body (`segment`, `webhook`).
    Message,
    /// `POST /api/profile-import` (the JSON is the whole body); on success the profile is
    /// added to the list when one is named.
    ProfileImport { list_id: Option<String> },
    /// `POST /api/lists/{list_id}/relationships/profiles` (the JSON is the whole body).
    ListAdd { list_id: String },
    /// One entry of `POST /api/event-bulk-create-jobs`.
    Event,
}

impl Unit {
    pub fn skip(position: Position, at: Timestamp, reason: &'static str) -> Unit {
        Unit {
            position,
            at,
            done: Some(position),
            message_id: String::new(),
            body: UnitBody::Skip { reason },
            replay_of: None,
        }
    }

    /// What is kept in a dead letter: enough to send it again.
    pub fn dead_letter_payload(&self) -> Value {
        match &self.body {
            UnitBody::Skip { .. } => Value::Null,
            UnitBody::Refuse { payload, .. } => payload.clone(),
            UnitBody::Send { json, op } => {
                let message: Value = serde_json::from_str(json).unwrap_or(Value::Null);
                match op {
                    Op::Message => message,
                    Op::ProfileImport { list_id } => serde_json::json!({
                        "op": "profile_import", "list_id": list_id, "body": message,
                    }),
                    Op::ListAdd { list_id } => serde_json::json!({
                        "op": "list_add", "list_id": list_id, "body": message,
                    }),
                    Op::Event => serde_json::json!({ "op": "event", "body": message }),
                }
            }
        }
    }

    /// A dead letter's payload back as a unit to send again (see
    /// [`Unit::dead_letter_payload`]).
    pub fn from_dead_letter(letter: &crate::model::DeadLetter, ops: bool) -> Unit {
        let body = if ops {
            let op = match letter.payload.get("op").and_then(Value::as_str) {
                Some("profile_import") => Op::ProfileImport {
                    list_id: letter
                        .payload
                        .get("list_id")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                },
                Some("list_add") => Op::ListAdd {
                    list_id: letter
                        .payload
                        .get("list_id")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                },
                _ => Op::Event,
            };
            UnitBody::Send {
                json: letter
                    .payload
                    .get("body")
                    .cloned()
                    .unwrap_or(Value::Null)
                    .to_string(),
                op,
            }
        } else {
            UnitBody::Send {
                json: letter.payload.to_string(),
                op: Op::Message,
            }
        };
        Unit {
            position: letter.position,
            at: letter.at,
            done: None,
            message_id: letter.message_id.clone(),
            body,
            replay_of: Some(letter.id),
        }
    }

    /// The JSON text's length, 0 for what is not sent.
    pub fn size(&self) -> usize {
        match &self.body {
            UnitBody::Send { json, .. } => json.len(),
            _ => 0,
        }
    }

    pub fn op(&self) -> Option<&Op> {
        match &self.body {
            UnitBody::Send { op, .. } => Some(op),
            _ => None,
        }
    }
}

/// Which of a receiver's rate limits a request counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Batch,
    ProfileImport,
    ListRelationships,
    EventBulk,
}

/// A request ready to send. Its headers may carry a secret: they are redacted before they
/// are recorded ([`redacted_headers`]), and its `Debug` shows them redacted.
#[derive(Clone)]
pub struct Req {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub endpoint: Endpoint,
}

impl std::fmt::Debug for Req {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Req")
            .field("url", &self.url)
            .field("headers", &redacted_headers(&self.headers))
            .field("body_bytes", &self.body.len())
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

/// `{"batch":[…],"sentAt":"…"}` from messages' JSON texts, written without parsing them
/// again.
pub fn batch_body<'a>(messages: impl Iterator<Item = &'a str>, sent_at: Timestamp) -> Vec<u8> {
    let mut body = Vec::with_capacity(64 * 1024);
    body.extend_from_slice(b"{\"batch\":[");
    for (i, message) in messages.enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(message.as_bytes());
    }
    body.extend_from_slice(b"],\"sentAt\":\"");
    body.extend_from_slice(sent_at.to_string().as_bytes());
    body.extend_from_slice(b"\"}");
    body
}

/// What a batch body costs beyond its messages (brackets, commas, `sentAt`).
pub const BATCH_OVERHEAD: usize = 64;

/// How many units from the front go into one `{"batch": […]}` request: consecutive
/// [`Op::Message`] units (and skips between them, which add nothing to the body) whose texts
/// fit in `max_bytes` together, at most `max_units`, at least one.
pub fn batch_run(units: &[Unit], max_units: usize, max_bytes: usize) -> usize {
    let mut bytes = BATCH_OVERHEAD;
    let mut count = 0;
    for unit in units.iter().take(max_units.max(1)) {
        if matches!(unit.body, UnitBody::Skip { .. }) {
            count += 1;
            continue;
        }
        if unit.op() != Some(&Op::Message) {
            break;
        }
        let size = unit.size() + 1;
        if count > 0 && bytes + size > max_bytes {
            break;
        }
        bytes += size;
        count += 1;
    }
    count.max(1)
}

/// Header names whose values are secrets (credentials, signatures).
const SECRET_HEADERS: [&str; 3] = ["authorization", "signalbox-signature", "x-api-key"];

/// Headers as a delivery record keeps them: credentials and signatures redacted, the scheme
/// word of an `Authorization` kept (`Basic ••••`, `Klaviyo-API-Key ••••`).
pub fn redacted_headers(headers: &[(String, String)]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            let lower = name.to_ascii_lowercase();
            if SECRET_HEADERS.contains(&lower.as_str()) {
                let shown = match value.split_once(' ') {
                    Some((scheme, _)) if lower == "authorization" => format!("{scheme} ••••"),
                    _ => "••••".to_owned(),
                };
                (name.clone(), shown)
            } else {
                (name.clone(), value.clone())
            }
        })
        .collect()
}

/// The first `max` bytes of a text, cut at a character boundary.
pub fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(pos: i64, size: usize) -> Unit {
        Unit {
            position: Position { seq: pos, n: 0 },
            at: Timestamp::UNIX_EPOCH,
            done: Some(Position { seq: pos, n: 0 }),
            message_id: format!("m{pos}"),
            body: UnitBody::Send {
                json: format!("\"{}\"", "x".repeat(size.saturating_sub(2))),
                op: Op::Message,
            },
            replay_of: None,
        }
    }

    #[test]
    fn batch_runs_stay_within_bytes_and_units() {
        let units: Vec<Unit> = (1..=10).map(|i| message(i, 100)).collect();
        assert_eq!(batch_run(&units, 1000, 100_000), 10);
        assert_eq!(batch_run(&units, 3, 100_000), 3);
        // 64 + 4 × 101 = 468 ≤ 500 < 569.
        assert_eq!(batch_run(&units, 1000, 500), 4);
        // One too large still goes alone (the encoder refused anything over the limit).
        assert_eq!(batch_run(&units, 1000, 10), 1);
        let body = batch_body(
            units.iter().take(2).map(|u| match &u.body {
                UnitBody::Send { json, .. } => json.as_str(),
                _ => "",
            }),
            Timestamp::UNIX_EPOCH,
        );
        let parsed: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed["batch"].as_array().unwrap().len(), 2);
        assert_eq!(parsed["sentAt"], "1970-01-01T00:00:00Z");
    }

    #[test]
    fn secrets_are_redacted_from_recorded_headers() {
        let headers = vec![
            ("Authorization".to_owned(), "Basic c2VjcmV0Og==".to_owned()),
            ("Signalbox-Signature".to_owned(), "t=1,v1=abc".to_owned()),
            ("Content-Type".to_owned(), "application/json".to_owned()),
        ];
        let req = Req {
            url: "http://h".into(),
            headers: headers.clone(),
            body: Bytes::new(),
            endpoint: Endpoint::Batch,
        };
        assert!(!format!("{req:?}").contains("c2VjcmV0Og=="));
        let shown = redacted_headers(&headers);
        assert_eq!(shown[0].1, "Basic ••••");
        assert_eq!(shown[1].1, "••••");
        assert_eq!(shown[2].1, "application/json");
    }

    #[test]
    fn a_dead_letter_gives_back_the_unit_it_was() {
        let ops = [
            Op::Message,
            Op::Event,
            Op::ProfileImport {
                list_id: Some("L1".into()),
            },
            Op::ProfileImport { list_id: None },
            Op::ListAdd {
                list_id: "L2".into(),
            },
        ];
        for op in ops {
            let is_message = op == Op::Message;
            let unit = Unit {
                position: Position { seq: 4, n: 1 },
                at: Timestamp::UNIX_EPOCH,
                done: Some(Position { seq: 4, n: 0 }),
                message_id: "id-4".into(),
                body: UnitBody::Send {
                    json: r#"{"messageId":"id-4","n":1}"#.into(),
                    op: op.clone(),
                },
                replay_of: None,
            };
            let letter = crate::model::DeadLetter {
                id: 9,
                destination: "d".into(),
                position: unit.position,
                message_id: unit.message_id.clone(),
                reason: "refused".into(),
                status: Some(400),
                response: None,
                payload: unit.dead_letter_payload(),
                at: Timestamp::UNIX_EPOCH,
                replayed_at: None,
            };
            let back = Unit::from_dead_letter(&letter, !is_message);
            assert_eq!(back.op(), Some(&op));
            assert_eq!(back.size(), unit.size());
            assert_eq!(back.replay_of, Some(9));
            assert_eq!(back.done, None, "a replay never moves the cursor");
            assert_eq!(back.position, unit.position);
        }
    }

    #[test]
    fn cut_keeps_characters_whole() {
        assert_eq!(cut("héllo", 2), "h…");
        assert_eq!(cut("short", 10), "short");
    }
}
