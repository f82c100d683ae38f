//! Segment's wire format in, [`NewCall`]s and [`Rejection`]s out.
//!
//! Request-level problems (bad JSON, bad gzip, size limits) fail the whole request; a
//! message-level problem in a batch rejects that message only, so the valid ones are kept.

use std::io::Read;

use base64::Engine;
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use signalbox_core::time::TimeError;
use signalbox_core::{CallKind, NewCall, RejectCode, Rejection};

/// Deepest nesting of objects and arrays a message may have (the message itself is level 1).
pub const MAX_DEPTH: usize = 64;

/// Segment's documented limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_message_bytes: usize,
    pub max_batch_bytes: usize,
    pub max_batch_messages: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 32 << 10,
            max_batch_bytes: 500 << 10,
            max_batch_messages: 2_500,
        }
    }
}

/// What a route carries: one message of a known type, or a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Single(CallKind),
    Batch,
}

impl Shape {
    /// The largest body the route takes, before and after decompression.
    pub fn body_limit(self, limits: &Limits) -> usize {
        match self {
            Shape::Single(_) => limits.max_message_bytes,
            Shape::Batch => limits.max_batch_bytes,
        }
    }
}

/// A request-level refusal: the whole request is answered 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DecodeError {
    pub code: RejectCode,
    pub message: String,
}

impl DecodeError {
    fn new(code: RejectCode, message: impl Into<String>) -> DecodeError {
        DecodeError {
            code,
            message: message.into(),
        }
    }
}

/// A decoded request.
#[derive(Debug, Default)]
pub struct Decoded {
    /// `writeKey` from the body (single message or batch envelope), if any.
    pub write_key: Option<String>,
    pub calls: Vec<NewCall>,
    pub rejections: Vec<Rejection>,
}

/// Inflates a gzip body, every member of it (as `gzip -d` reads a file of several members),
/// refusing to produce more than the route's limit.
pub fn gunzip(body: &[u8], shape: Shape, limits: &Limits) -> Result<Vec<u8>, DecodeError> {
    let limit = shape.body_limit(limits);
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit + 1));
    flate2::read::MultiGzDecoder::new(body)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| DecodeError::new(RejectCode::MalformedGzip, "malformed gzip content"))?;
    check_size(shape, limits, out.len())?;
    Ok(out)
}

/// Decodes the `data` query parameter of the browser GET routes: base64 (standard or
/// URL-safe, padded or not) of the JSON message. A standard `+` left unescaped in the URL
/// arrives as a space (form decoding), and is read back as `+`.
pub fn decode_query_data(data: &str) -> Result<Vec<u8>, DecodeError> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    let data = data.replace(' ', "+");
    let data = data.trim();
    [STANDARD, URL_SAFE, STANDARD_NO_PAD, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(data).ok())
        .ok_or_else(|| DecodeError::new(RejectCode::InvalidJson, "data: not valid base64"))
}

/// Checks a body's size against its route's limit.
pub fn check_size(shape: Shape, limits: &Limits, len: usize) -> Result<(), DecodeError> {
    let limit = shape.body_limit(limits);
    if len > limit {
        return Err(match shape {
            Shape::Single(_) => DecodeError::new(
                RejectCode::MessageTooLarge,
                format!("message is {len} bytes, over the limit of {limit} bytes"),
            ),
            Shape::Batch => DecodeError::new(
                RejectCode::BatchTooLarge,
                format!("batch is {len} bytes, over the limit of {limit} bytes"),
            ),
        });
    }
    Ok(())
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    batch: Vec<&'a RawValue>,
    #[serde(rename = "writeKey", default)]
    write_key: Option<Value>,
    #[serde(rename = "sentAt", default)]
    sent_at: Option<Value>,
    #[serde(default, borrow)]
    context: Option<&'a RawValue>,
    #[serde(default, borrow)]
    integrations: Option<&'a RawValue>,
}

/// Envelope fields of a batch applied to each of its messages.
#[derive(Default)]
struct Defaults {
    sent_at: Option<Value>,
    context: Option<Shared>,
    integrations: Option<Shared>,
}

impl Defaults {
    /// How many bytes merging the envelope's `context` and `integrations` adds to `message`.
    fn added_bytes(&self, message: &Map<String, Value>) -> usize {
        [
            ("context", &self.context),
            ("integrations", &self.integrations),
        ]
        .into_iter()
        .filter_map(|(field, shared)| Some(shared.as_ref()?.added_bytes(field, message)))
        .sum()
    }
}

/// An envelope object merged into every message of a batch, with the serialised size of its
/// entries, so that an item that would grow past a message's limit is refused before the
/// envelope is copied into it (a small item count times a large envelope is otherwise far
/// more than the request's size).
struct Shared {
    map: Map<String, Value>,
    /// `"key":value,` bytes per key.
    entry_bytes: std::collections::HashMap<String, usize>,
    total_bytes: usize,
}

impl Shared {
    fn new(map: Option<Map<String, Value>>) -> Option<Shared> {
        let map = map?;
        let json_len = |value: &Value| serde_json::to_string(value).map_or(0, |text| text.len());
        let entry_bytes: std::collections::HashMap<String, usize> = map
            .iter()
            .map(|(key, value)| (key.clone(), key.len() + 4 + json_len(value)))
            .collect();
        let total_bytes = entry_bytes.values().sum();
        Some(Shared {
            map,
            entry_bytes,
            total_bytes,
        })
    }

    /// Bytes merging adds to the message's `field`: the entries its own object lacks.
    fn added_bytes(&self, field: &str, message: &Map<String, Value>) -> usize {
        match message.get(field) {
            Some(Value::Object(own)) => {
                let kept: usize = own.keys().filter_map(|key| self.entry_bytes.get(key)).sum();
                self.total_bytes - kept
            }
            None | Some(Value::Null) => field.len() + 5 + self.total_bytes,
            // Not merged; validation refuses it.
            Some(_) => 0,
        }
    }
}

/// Decodes a (decompressed) body.
pub fn decode(
    body: &[u8],
    shape: Shape,
    received_at: Timestamp,
    limits: &Limits,
) -> Result<Decoded, DecodeError> {
    check_size(shape, limits, body.len())?;
    match shape {
        Shape::Single(kind) => {
            check_structure(body, "").map_err(|(code, message)| DecodeError { code, message })?;
            let value: Value = serde_json::from_slice(body).map_err(invalid_json)?;
            let Value::Object(mut message) = value else {
                return Err(DecodeError::new(
                    RejectCode::NotAnObject,
                    "body must be a JSON object",
                ));
            };
            let write_key = take_write_key(&mut message);
            let mut decoded = Decoded {
                write_key,
                ..Decoded::default()
            };
            match normalize(message, Some(kind), &Defaults::default(), received_at) {
                Ok(call) => decoded.calls.push(call),
                Err(rejection) => decoded.rejections.push(rejection),
            }
            Ok(decoded)
        }
        Shape::Batch => {
            let envelope: Envelope<'_> = serde_json::from_slice(body).map_err(invalid_json)?;
            if envelope.batch.len() > limits.max_batch_messages {
                return Err(DecodeError::new(
                    RejectCode::TooManyMessages,
                    format!(
                        "batch has {} messages, over the limit of {}",
                        envelope.batch.len(),
                        limits.max_batch_messages
                    ),
                ));
            }
            let defaults = Defaults {
                sent_at: envelope.sent_at.filter(|v| !v.is_null()),
                context: Shared::new(envelope_object(envelope.context, "context")?),
                integrations: Shared::new(envelope_object(envelope.integrations, "integrations")?),
            };
            let mut decoded = Decoded {
                write_key: envelope
                    .write_key
                    .and_then(|v| v.as_str().map(str::to_owned)),
                calls: Vec::with_capacity(envelope.batch.len()),
                rejections: Vec::new(),
            };
            for raw in envelope.batch {
                match decode_item(raw, &defaults, received_at, limits) {
                    Ok(call) => decoded.calls.push(call),
                    Err(rejection) => decoded.rejections.push(rejection),
                }
            }
            Ok(decoded)
        }
    }
}

fn decode_item(
    raw: &RawValue,
    defaults: &Defaults,
    received_at: Timestamp,
    limits: &Limits,
) -> Result<NewCall, Rejection> {
    let text = raw.get();
    if text.len() > limits.max_message_bytes {
        return Err(Rejection {
            code: RejectCode::MessageTooLarge,
            message: format!(
                "message is {} bytes, over the limit of {} bytes",
                text.len(),
                limits.max_message_bytes
            ),
            received_at,
            payload: oversized_payload(text),
        });
    }
    if let Err((code, message)) = check_structure(text.as_bytes(), "") {
        return Err(Rejection {
            code,
            message,
            received_at,
            payload: oversized_payload(text),
        });
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(mut message)) => {
            take_write_key(&mut message);
            let merged_len = text.len() + defaults.added_bytes(&message);
            if merged_len > limits.max_message_bytes {
                return Err(Rejection {
                    code: RejectCode::MessageTooLarge,
                    message: format!(
                        "message with the batch's context and integrations is {merged_len} bytes, \
                         over the limit of {} bytes",
                        limits.max_message_bytes
                    ),
                    received_at,
                    payload: oversized_payload(text),
                });
            }
            normalize(message, None, defaults, received_at)
        }
        _ => Err(Rejection {
            code: RejectCode::NotAnObject,
            message: "batch item must be a JSON object".into(),
            received_at,
            payload: truncate(text, 1024).to_owned(),
        }),
    }
}

/// What a rejection keeps of an oversized batch item: its first kilobyte, without its
/// write key.
fn oversized_payload(text: &str) -> String {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(mut message)) => {
            take_write_key(&mut message);
            let text = serde_json::to_string(&message).expect("a JSON map serialises");
            truncate(&text, 1024).to_owned()
        }
        _ => truncate(text, 1024).to_owned(),
    }
}

fn invalid_json(err: serde_json::Error) -> DecodeError {
    DecodeError::new(RejectCode::InvalidJson, format!("invalid JSON: {err}"))
}

/// An envelope's `context` or `integrations`: an object, checked as a message is.
fn envelope_object(
    raw: Option<&RawValue>,
    field: &str,
) -> Result<Option<Map<String, Value>>, DecodeError> {
    let Some(raw) = raw else { return Ok(None) };
    check_structure(raw.get().as_bytes(), field)
        .map_err(|(code, message)| DecodeError { code, message })?;
    match serde_json::from_str(raw.get()).map_err(invalid_json)? {
        Value::Object(map) => Ok(Some(map)),
        _ => Ok(None),
    }
}

/// One level of JSON nesting while [`check_structure`] scans.
enum Frame {
    Object {
        /// Where the current key's text is in the scanned bytes (made a string only for an
        /// error, so the scan allocates nothing per key).
        key: Option<std::ops::Range<usize>>,
        expect_key: bool,
    },
    Array {
        index: usize,
    },
}

/// The path of the value being scanned, as `properties.items[2].price`.
fn frame_path(text: &[u8], prefix: &str, frames: &[Frame]) -> String {
    let mut path = prefix.to_owned();
    for frame in frames {
        match frame {
            Frame::Object { key: Some(key), .. } => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&String::from_utf8_lossy(&text[key.clone()]));
            }
            Frame::Object { key: None, .. } => {}
            Frame::Array { index } => path.push_str(&format!("[{index}]")),
        }
    }
    path
}

/// Checks what serde_json would not keep as sent: objects and arrays nested deeper than
/// [`MAX_DEPTH`], and integers beyond 64 bits (serde_json reads them as the nearest `f64`,
/// which would store a different number than the client sent). A scan of the raw text, before
/// parsing; text that is no JSON passes and is refused by the parser after. `prefix` names
/// where the text sits in the message, for the path in the error.
pub fn check_structure(text: &[u8], prefix: &str) -> Result<(), (RejectCode, String)> {
    let mut frames: Vec<Frame> = Vec::new();
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'"' => {
                let start = i + 1;
                let mut end = start;
                // The closing quote: the next `"` not escaped by a `\`.
                while let Some(at) = memchr::memchr2(b'"', b'\\', text.get(end..).unwrap_or(&[])) {
                    end += at;
                    if text[end] == b'"' {
                        break;
                    }
                    end += 2;
                }
                if end >= text.len() || text[end] != b'"' {
                    end = text.len();
                }
                if let Some(Frame::Object { key, expect_key }) = frames.last_mut() {
                    if *expect_key {
                        *key = Some(start.min(text.len())..end.min(text.len()));
                        *expect_key = false;
                    }
                }
                i = end + 1;
                continue;
            }
            open @ (b'{' | b'[') => {
                if frames.len() == MAX_DEPTH {
                    return Err((
                        RejectCode::TooDeep,
                        format!(
                            "{}: objects and arrays are nested deeper than the limit of {MAX_DEPTH} levels",
                            shown_path(text, prefix, &frames)
                        ),
                    ));
                }
                frames.push(if open == b'{' {
                    Frame::Object {
                        key: None,
                        expect_key: true,
                    }
                } else {
                    Frame::Array { index: 0 }
                });
            }
            b'}' | b']' => {
                frames.pop();
            }
            b',' => match frames.last_mut() {
                Some(Frame::Array { index }) => *index += 1,
                Some(Frame::Object { expect_key, .. }) => *expect_key = true,
                None => {}
            },
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < text.len()
                    && matches!(text[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    i += 1;
                }
                let token = &text[start..i];
                // Only a well-formed JSON integer; anything else is the parser's to refuse.
                // Up to 18 digits always fit, so only longer ones are parsed.
                let digits = token.strip_prefix(b"-").unwrap_or(token);
                let integer = !digits.is_empty() && digits.iter().all(u8::is_ascii_digit);
                if integer && digits.len() > 18 && !fits_in_64_bits(token) {
                    let token = String::from_utf8_lossy(token);
                    return Err((
                        RejectCode::InvalidField,
                        format!(
                            "{}: the integer {} does not fit in 64 bits; send it as a string to keep it exact",
                            shown_path(text, prefix, &frames),
                            truncate(&token, 40)
                        ),
                    ));
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// The path an error names: `message` for the top, and at most [`MAX_SHOWN_PATH`] bytes of it
/// (keys are the sender's text, and an error must stay small whatever was sent).
fn shown_path(text: &[u8], prefix: &str, frames: &[Frame]) -> String {
    let path = frame_path(text, prefix, frames);
    if path.is_empty() {
        return "message".into();
    }
    if path.len() <= MAX_SHOWN_PATH {
        return path;
    }
    format!("{}…", truncate(&path, MAX_SHOWN_PATH))
}

/// Whether an integer's text (ASCII digits, maybe a leading `-`) fits in `i64` or `u64`.
fn fits_in_64_bits(token: &[u8]) -> bool {
    std::str::from_utf8(token)
        .is_ok_and(|text| text.parse::<i64>().is_ok() || text.parse::<u64>().is_ok())
}

/// Bytes of a value's path that an error message shows.
const MAX_SHOWN_PATH: usize = 200;

fn take_write_key(message: &mut Map<String, Value>) -> Option<String> {
    match message.remove("writeKey") {
        Some(Value::String(key)) => Some(key),
        _ => None,
    }
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// An id field: a non-empty string, or a number (kept as its decimal text).
fn id_field(
    message: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, (RejectCode, String)> {
    match message.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err((
            RejectCode::InvalidField,
            format!("{field} must be a string"),
        )),
    }
}

/// Parses an ISO-8601 time as [`signalbox_core::time::parse`] does: `Z` or an offset up to
/// ±24:00, any fraction, a time without offset is UTC, in the years 1970 to 2200.
pub fn parse_time(text: &str) -> Option<Timestamp> {
    signalbox_core::time::parse(text).ok()
}

fn time_field(
    message: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<(Timestamp, Value)>, (RejectCode, String)> {
    match message.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(value @ Value::String(text)) => match signalbox_core::time::parse(text) {
            Ok(ts) => Ok(Some((ts, value.clone()))),
            Err(TimeError::Unparseable) => Err((
                RejectCode::InvalidTimestamp,
                format!(
                    "{field} must be an ISO-8601 date-time, got {:?}",
                    truncate(text, 64)
                ),
            )),
            Err(err) => Err((
                RejectCode::InvalidTimestamp,
                format!("{field} {:?} {err}", truncate(text, 64)),
            )),
        },
        Some(_) => Err((
            RejectCode::InvalidTimestamp,
            format!("{field} must be an ISO-8601 string"),
        )),
    }
}

/// Formats a time as Segment does: UTC, `Z`, milliseconds (microseconds when present).
/// A year before 0000 takes ISO 8601's expanded form (`-000974-…`), so that it parses back.
pub fn format_time(ts: Timestamp) -> String {
    const YEAR_ZERO_SECONDS: i64 = -62_167_219_200;
    if ts < Timestamp::from_second(YEAR_ZERO_SECONDS).expect("0000-01-01 is a timestamp") {
        return ts.to_string();
    }
    let micros = ts.subsec_microsecond();
    if micros % 1000 == 0 {
        ts.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
    } else {
        ts.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
    }
}

fn merge_defaults(
    message: &mut Map<String, Value>,
    field: &str,
    defaults: Option<&Map<String, Value>>,
) {
    let Some(defaults) = defaults else { return };
    match message.get_mut(field) {
        Some(Value::Object(own)) => {
            for (key, value) in defaults {
                own.entry(key.clone()).or_insert_with(|| value.clone());
            }
        }
        None | Some(Value::Null) => {
            message.insert(field.to_owned(), Value::Object(defaults.clone()));
        }
        Some(_) => {}
    }
}

/// Validates one message and shapes it as the log keeps it.
fn normalize(
    mut message: Map<String, Value>,
    route_kind: Option<CallKind>,
    defaults: &Defaults,
    received_at: Timestamp,
) -> Result<NewCall, Rejection> {
    let reject = |message: &Map<String, Value>, (code, text): (RejectCode, String)| Rejection {
        code,
        message: text,
        received_at,
        payload: serde_json::to_string(message).unwrap_or_default(),
    };
    merge_defaults(
        &mut message,
        "context",
        defaults.context.as_ref().map(|s| &s.map),
    );
    merge_defaults(
        &mut message,
        "integrations",
        defaults.integrations.as_ref().map(|s| &s.map),
    );
    if !message.contains_key("sentAt") {
        if let Some(sent_at) = &defaults.sent_at {
            message.insert("sentAt".into(), sent_at.clone());
        }
    }
    match validate(&message, route_kind, received_at) {
        Ok((kind, message_id, stamps)) => {
            message.insert("type".into(), Value::String(kind.as_str().into()));
            message.insert("messageId".into(), Value::String(message_id.clone()));
            if let Some(original) = stamps.original {
                message.insert("originalTimestamp".into(), original);
            }
            message.insert(
                "timestamp".into(),
                Value::String(format_time(stamps.timestamp)),
            );
            message.insert("receivedAt".into(), Value::String(format_time(received_at)));
            let payload = serde_json::to_string(&message).expect("a JSON map serialises");
            Ok(NewCall {
                kind,
                message_id,
                received_at,
                payload,
            })
        }
        Err(err) => Err(reject(&message, err)),
    }
}

struct Stamps {
    timestamp: Timestamp,
    original: Option<Value>,
}

fn validate(
    message: &Map<String, Value>,
    route_kind: Option<CallKind>,
    received_at: Timestamp,
) -> Result<(CallKind, String, Stamps), (RejectCode, String)> {
    let kind = match route_kind {
        Some(kind) => kind,
        None => match message.get("type") {
            Some(Value::String(t)) => CallKind::parse(t).ok_or_else(|| {
                (
                    RejectCode::InvalidType,
                    format!("type must be one of track, identify, page, screen, group, alias; got {t:?}"),
                )
            })?,
            _ => return Err((RejectCode::InvalidType, "type is required in a batch item".into())),
        },
    };
    let user_id = id_field(message, "userId")?;
    let anonymous_id = id_field(message, "anonymousId")?;
    if kind == CallKind::Alias {
        if id_field(message, "previousId")?.is_none() {
            return Err((
                RejectCode::MissingPreviousId,
                "previousId is required on alias".into(),
            ));
        }
        if user_id.is_none() {
            return Err((
                RejectCode::NoUserAnonId,
                "userId is required on alias".into(),
            ));
        }
    } else if user_id.is_none() && anonymous_id.is_none() {
        return Err((
            RejectCode::NoUserAnonId,
            "userId or anonymousId is required".into(),
        ));
    }
    match kind {
        CallKind::Track => match message.get("event") {
            Some(Value::String(e)) if !e.trim().is_empty() => {}
            _ => {
                return Err((
                    RejectCode::MissingEvent,
                    "event is required on track".into(),
                ))
            }
        },
        CallKind::Group if id_field(message, "groupId")?.is_none() => {
            return Err((
                RejectCode::MissingGroupId,
                "groupId is required on group".into(),
            ));
        }
        _ => {}
    }
    for field in ["properties", "traits", "context", "integrations"] {
        match message.get(field) {
            None | Some(Value::Null) | Some(Value::Object(_)) => {}
            Some(_) => {
                return Err((
                    RejectCode::InvalidField,
                    format!("{field} must be an object"),
                ))
            }
        }
    }
    let message_id = match message.get("messageId") {
        None | Some(Value::Null) => uuid::Uuid::new_v4().to_string(),
        Some(Value::String(id)) if id.is_empty() => uuid::Uuid::new_v4().to_string(),
        Some(Value::String(id)) if id.chars().count() > 100 => {
            return Err((
                RejectCode::MessageIdTooLong,
                format!(
                    "messageId is {} characters, over the limit of 100",
                    id.chars().count()
                ),
            ))
        }
        Some(Value::String(id)) => id.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => {
            return Err((
                RejectCode::InvalidField,
                "messageId must be a string".into(),
            ))
        }
    };
    let timestamp = time_field(message, "timestamp")?;
    let sent_at = time_field(message, "sentAt")?;
    let stamps = match (timestamp, sent_at) {
        // The corrected time stays in the range a client may send; a skew that would carry
        // it out keeps the time as sent.
        (Some((ts, raw)), Some((sent, _))) => Stamps {
            timestamp: received_at
                .checked_sub(sent.duration_since(ts))
                .ok()
                .filter(|corrected| signalbox_core::time::in_range(*corrected))
                .unwrap_or(ts),
            original: Some(raw),
        },
        (Some((ts, raw)), None) => Stamps {
            timestamp: ts,
            original: Some(raw),
        },
        (None, _) => Stamps {
            timestamp: received_at,
            original: None,
        },
    };
    Ok((kind, message_id, stamps))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn decode_json(shape: Shape, body: Value) -> Result<Decoded, DecodeError> {
        decode(
            body.to_string().as_bytes(),
            shape,
            at("2026-01-01T00:00:10Z"),
            &Limits::default(),
        )
    }

    fn payload(call: &NewCall) -> Value {
        serde_json::from_str(&call.payload).unwrap()
    }

    #[test]
    fn skew_is_corrected_from_sent_at() {
        let d = decode_json(
            Shape::Single(CallKind::Track),
            json!({"userId": "u", "event": "E", "timestamp": "2026-01-01T01:00:00+01:00",
                   "sentAt": "2026-01-01T00:00:05.000Z", "writeKey": "k"}),
        )
        .unwrap();
        assert_eq!(d.write_key.as_deref(), Some("k"));
        let p = payload(&d.calls[0]);
        // The client clock ran 5 s behind the server's receipt time.
        assert_eq!(p["timestamp"], "2026-01-01T00:00:05.000Z");
        assert_eq!(p["originalTimestamp"], "2026-01-01T01:00:00+01:00");
        assert_eq!(p["receivedAt"], "2026-01-01T00:00:10.000Z");
        assert!(p.get("writeKey").is_none());
    }

    #[test]
    fn microseconds_and_naive_times_parse() {
        assert_eq!(
            parse_time("2026-01-01T00:00:00.123456+00:00")
                .unwrap()
                .subsec_microsecond(),
            123_456
        );
        assert_eq!(
            parse_time("2026-01-01T00:00:00").unwrap(),
            at("2026-01-01T00:00:00Z")
        );
        assert!(parse_time("yesterday").is_none());
    }

    #[test]
    fn batch_envelope_applies_to_items_and_bad_items_are_rejected_alone() {
        let d = decode_json(
            Shape::Batch,
            json!({"writeKey": "k", "sentAt": "2026-01-01T00:00:10Z",
            "context": {"ip": "1.2.3.4", "library": {"name": "x"}},
            "integrations": {"Klaviyo": false},
            "batch": [
              {"type": "track", "userId": "u", "event": "A", "context": {"ip": "9.9.9.9"}},
              {"type": "track", "userId": "u"},
              {"type": "identify", "anonymousId": "a", "traits": {"email": "x@y.z"}},
              {"type": "bogus", "userId": "u"},
              5
            ]}),
        )
        .unwrap();
        assert_eq!(d.calls.len(), 2);
        let codes: Vec<_> = d.rejections.iter().map(|r| r.code).collect();
        assert_eq!(
            codes,
            [
                RejectCode::MissingEvent,
                RejectCode::InvalidType,
                RejectCode::NotAnObject
            ]
        );
        let first = payload(&d.calls[0]);
        assert_eq!(first["context"]["ip"], "9.9.9.9");
        assert_eq!(first["context"]["library"]["name"], "x");
        assert_eq!(first["integrations"]["Klaviyo"], false);
        assert_eq!(first["sentAt"], "2026-01-01T00:00:10Z");
    }

    #[test]
    fn an_envelope_context_is_not_copied_past_the_message_limit() {
        // Found by fuzzing: ten 60-byte items under a 40 KB envelope context came out as ten
        // 40 KB calls; 2,500 items under a 490 KB context were 1.2 GB.
        let big = "c".repeat(40_000);
        let d = decode_json(
            Shape::Batch,
            json!({"context": {"big": big, "ip": "1.2.3.4"}, "batch": [
                {"type": "track", "userId": "u", "event": "A"},
                {"type": "track", "userId": "u", "event": "B", "context": {"ip": "9.9.9.9"}},
                {"type": "track", "userId": "u", "event": "C", "context": {"big": "own"}},
            ]}),
        )
        .unwrap();
        let codes: Vec<_> = d.rejections.iter().map(|r| r.code).collect();
        assert_eq!(codes, [RejectCode::MessageTooLarge; 2]);
        assert!(
            d.rejections[0]
                .message
                .contains("over the limit of 32768 bytes"),
            "{}",
            d.rejections[0].message
        );
        assert!(d.rejections.iter().all(|r| r.payload.len() <= 1024));
        // An item whose own context replaces the large entry stays under the limit.
        assert_eq!(d.calls.len(), 1);
        let kept = payload(&d.calls[0]);
        assert_eq!(kept["context"], json!({"big": "own", "ip": "1.2.3.4"}));

        let small = decode_json(
            Shape::Batch,
            json!({"context": {"big": "c".repeat(30_000)}, "integrations": {"All": false},
                   "batch": [{"type": "track", "userId": "u", "event": "A"}]}),
        )
        .unwrap();
        assert_eq!(small.calls.len(), 1);
    }

    #[test]
    fn limits_name_their_numbers() {
        let big = "x".repeat(33 * 1024);
        let err = decode_json(
            Shape::Single(CallKind::Track),
            json!({"userId": "u", "event": big}),
        )
        .unwrap_err();
        assert_eq!(err.code, RejectCode::MessageTooLarge);
        assert!(err.message.contains("32768"), "{}", err.message);
        let many: Vec<Value> = (0..2501).map(|_| json!({})).collect();
        let err = decode_json(Shape::Batch, json!({"batch": many})).unwrap_err();
        assert_eq!(err.code, RejectCode::TooManyMessages);
        let err = decode(b"{nope", Shape::Batch, Timestamp::now(), &Limits::default()).unwrap_err();
        assert_eq!(err.code, RejectCode::InvalidJson);
    }

    #[test]
    fn per_type_requirements() {
        let check = |kind, body: Value| {
            let d = decode_json(Shape::Single(kind), body).unwrap();
            d.rejections.first().map(|r| r.code)
        };
        assert_eq!(
            check(CallKind::Identify, json!({"traits": {}})),
            Some(RejectCode::NoUserAnonId)
        );
        assert_eq!(
            check(CallKind::Group, json!({"userId": "u"})),
            Some(RejectCode::MissingGroupId)
        );
        assert_eq!(
            check(CallKind::Alias, json!({"userId": "u"})),
            Some(RejectCode::MissingPreviousId)
        );
        assert_eq!(
            check(CallKind::Alias, json!({"previousId": "p", "userId": "u"})),
            None
        );
        assert_eq!(
            check(
                CallKind::Track,
                json!({"userId": "u", "event": "E", "properties": []})
            ),
            Some(RejectCode::InvalidField)
        );
        assert_eq!(
            check(
                CallKind::Page,
                json!({"userId": "u", "messageId": "m".repeat(101)})
            ),
            Some(RejectCode::MessageIdTooLong)
        );
        assert_eq!(
            check(CallKind::Page, json!({"userId": 42, "timestamp": "soon"})),
            Some(RejectCode::InvalidTimestamp)
        );
    }

    #[test]
    fn gzip_round_trip_and_garbage() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(b"{\"batch\":[]}").unwrap();
        let zipped = enc.finish().unwrap();
        let limits = Limits::default();
        assert_eq!(
            gunzip(&zipped, Shape::Batch, &limits).unwrap(),
            b"{\"batch\":[]}"
        );
        assert_eq!(
            gunzip(b"not gzip", Shape::Batch, &limits).unwrap_err().code,
            RejectCode::MalformedGzip
        );
    }

    #[test]
    fn times_before_year_zero_keep_iso_expanded_form() {
        assert_eq!(
            format_time(at("-000974-10-02T12:00:00Z")),
            "-000974-10-02T12:00:00Z"
        );
        assert_eq!(
            format_time(at("0000-01-01T00:00:00Z")),
            "0000-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn timestamps_outside_the_kept_years_or_offsets_are_refused_naming_the_field() {
        let check = |field: &str, text: &str| {
            let d = decode_json(
                Shape::Single(CallKind::Track),
                json!({"userId": "u", "event": "E", field: text}),
            )
            .unwrap();
            let rejection = d.rejections.first().expect("refused").clone();
            assert_eq!(rejection.code, RejectCode::InvalidTimestamp, "{text}");
            rejection.message
        };
        for text in [
            "9999-01-01T00:00:00Z",
            "-009999-06-01T00:00:00Z",
            "1969-12-31T23:59:59Z",
        ] {
            let message = check("timestamp", text);
            assert!(message.starts_with("timestamp "), "{message}");
            assert!(message.contains("1970 to 2200"), "{message}");
        }
        let message = check("sentAt", "2026-01-01T00:00:00+25:00");
        assert!(message.starts_with("sentAt "), "{message}");
        assert!(message.contains("±24:00"), "{message}");
        // The edges are kept.
        for text in [
            "1970-01-01T00:00:00Z",
            "2200-12-31T23:59:59Z",
            "2026-01-02T00:00:00+24:00",
        ] {
            let d = decode_json(
                Shape::Single(CallKind::Track),
                json!({"userId": "u", "event": "E", "timestamp": text}),
            )
            .unwrap();
            assert_eq!(d.calls.len(), 1, "{text}: {:?}", d.rejections);
        }
    }

    #[test]
    fn a_skew_correction_that_leaves_the_kept_years_keeps_the_time_as_sent() {
        let d = decode_json(
            Shape::Single(CallKind::Track),
            json!({"userId": "u", "event": "E", "timestamp": "1970-01-01T00:00:00Z",
                   "sentAt": "2200-01-01T00:00:00Z"}),
        )
        .unwrap();
        assert_eq!(
            payload(&d.calls[0])["timestamp"],
            "1970-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn the_structure_check_names_no_non_number_and_keeps_its_errors_small() {
        // Found by fuzzing: a lone `-` is no integer (the parser refuses the text), and a key
        // of 100 KB named in an error made the error as large.
        assert!(check_structure(b"{\"a\": -}", "").is_ok());
        assert!(check_structure(b"[-, --, -e5]", "").is_ok());
        let key = "k".repeat(100_000);
        let text = format!("{{\"{key}\": 123456789012345678901234567890}}");
        let (code, message) = check_structure(text.as_bytes(), "properties").unwrap_err();
        assert_eq!(code, RejectCode::InvalidField);
        assert!(message.len() < 400, "{} bytes", message.len());
        assert!(message.starts_with("properties.kkk"), "{message}");
    }

    #[test]
    fn integers_beyond_64_bits_are_refused_naming_their_path() {
        let body = r#"{"batch": [
            {"type": "track", "userId": "u", "event": "E",
             "properties": {"items": [{"price": 1}, {"price": 123456789012345678901234567890}]}},
            {"type": "track", "userId": "u", "event": "E",
             "properties": {"max": 18446744073709551615, "min": -9223372036854775808,
                            "f": 1.5e300, "g": 0.1}}
        ]}"#;
        let d = decode(
            body.as_bytes(),
            Shape::Batch,
            at("2026-01-01T00:00:10Z"),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(d.rejections.len(), 1);
        let rejection = &d.rejections[0];
        assert_eq!(rejection.code, RejectCode::InvalidField);
        assert!(
            rejection.message.starts_with(
                "properties.items[1].price: the integer 123456789012345678901234567890"
            ),
            "{}",
            rejection.message
        );
        // Everything that fits in 64 bits is kept exactly, and floats as they are.
        assert_eq!(d.calls.len(), 1);
        let kept = payload(&d.calls[0]);
        assert_eq!(kept["properties"]["max"].as_u64(), Some(u64::MAX));
        assert_eq!(kept["properties"]["min"].as_i64(), Some(i64::MIN));
        assert!(d.calls[0].payload.contains("18446744073709551615"));

        let err = decode(
            br#"{"userId": "u", "event": "E", "properties": {"n": -99999999999999999999}}"#,
            Shape::Single(CallKind::Track),
            Timestamp::now(),
            &Limits::default(),
        )
        .unwrap_err();
        assert_eq!(err.code, RejectCode::InvalidField);
        assert!(err.message.starts_with("properties.n: "), "{}", err.message);
        let err = decode(
            br#"{"batch": [], "context": {"ids": [1, 2, 99999999999999999999]}}"#,
            Shape::Batch,
            Timestamp::now(),
            &Limits::default(),
        )
        .unwrap_err();
        assert!(
            err.message.starts_with("context.ids[2]: "),
            "{}",
            err.message
        );
        // Numbers inside strings are text.
        check_structure(br#"{"a": "99999999999999999999", "b\"": 1}"#, "").unwrap();
    }

    #[test]
    fn a_too_deep_batch_item_is_refused_as_too_deep_naming_the_limit() {
        let nested = |levels: usize| {
            let mut value = json!(1);
            for _ in 0..levels {
                value = json!({ "a": value });
            }
            value
        };
        // The message is level 1, `properties` level 2.
        let deep = json!({"type": "track", "userId": "u", "event": "E",
                          "properties": nested(MAX_DEPTH - 1)});
        let too_deep = json!({"type": "track", "userId": "u", "event": "E",
                              "properties": nested(MAX_DEPTH)});
        let d = decode_json(Shape::Batch, json!({"batch": [deep, too_deep]})).unwrap();
        assert_eq!(d.calls.len(), 1);
        assert_eq!(d.rejections.len(), 1);
        assert_eq!(d.rejections[0].code, RejectCode::TooDeep);
        assert_eq!(d.rejections[0].code.as_str(), "too_deep");
        assert!(
            d.rejections[0].message.contains("limit of 64 levels"),
            "{}",
            d.rejections[0].message
        );
        // Deeper than serde_json itself parses.
        let body = format!(
            r#"{{"batch": [{{"type": "track", "userId": "u", "event": "E", "properties": {}1{}}}]}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        let d = decode(
            body.as_bytes(),
            Shape::Batch,
            Timestamp::now(),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(d.rejections[0].code, RejectCode::TooDeep);
        let err = decode_json(Shape::Single(CallKind::Track), too_deep).unwrap_err();
        assert_eq!(err.code, RejectCode::TooDeep);
    }

    #[test]
    fn every_member_of_a_multi_member_gzip_body_is_read() {
        use std::io::Write;
        let member = |text: &[u8]| {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(text).unwrap();
            enc.finish().unwrap()
        };
        let mut body = member(b"{\"batch\":");
        body.extend(member(
            b"[{\"type\":\"track\",\"userId\":\"u\",\"event\":\"E\"}]",
        ));
        body.extend(member(b"}"));
        let limits = Limits::default();
        let inflated = gunzip(&body, Shape::Batch, &limits).unwrap();
        assert_eq!(
            inflated,
            b"{\"batch\":[{\"type\":\"track\",\"userId\":\"u\",\"event\":\"E\"}]}"
        );
        // The limit holds over all members together.
        let half = vec![b' '; limits.max_message_bytes / 2 + 1];
        let mut body = member(&half);
        body.extend(member(&half));
        let err = gunzip(&body, Shape::Single(CallKind::Track), &limits).unwrap_err();
        assert_eq!(err.code, RejectCode::MessageTooLarge);
    }

    #[test]
    fn query_data_any_base64() {
        for encoded in ["eyJhIjoxfQ==", "eyJhIjoxfQ"] {
            assert_eq!(decode_query_data(encoded).unwrap(), b"{\"a\":1}");
        }
    }
}
