//! Fuzz targets of the Tracking API decoder (`segment::decode`): `decode`, `gunzip`,
//! `decode_query_data` and the timestamp functions, fed arbitrary bytes and hostile but
//! well-shaped bodies (deep nesting, numbers past every range, long and odd strings, NUL,
//! invalid UTF-8, repeated keys, extreme times, batches at and past their counts, broken and
//! inflating gzip).
//!
//! Properties: nothing panics; a refusal is a `DecodeError` with a code and a short message;
//! what is accepted is bounded by the limits (no decoded call or kept rejection is larger
//! than a message may be, however large the batch envelope); round trips hold (gzip,
//! base64, formatted times).
//!
//! Each target runs the number of cases its `config` names (hundreds) in `cargo test`, well
//! under a few seconds in a debug build.
//! `PROPTEST_CASES=100000 cargo test -p signalbox-server --test it fuzz_decode` runs longer.
//! Failures are not persisted: a case found is kept as a plain regression test in
//! `segment/decode.rs`.

use std::io::Write;
use std::time::{Duration, Instant};

use base64::Engine;
use jiff::Timestamp;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::Config;
use serde_json::{json, Map, Value};
use signalbox_core::CallKind;
use signalbox_server::segment::decode::{self, DecodeError, Decoded, Limits, Shape};

use crate::decode_properties::{all_shapes, arb_json};

/// Cases per target unless `PROPTEST_CASES` says otherwise; failures are not persisted.
fn config(cases: u32) -> Config {
    let mut config = Config {
        failure_persistence: None,
        ..Config::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    config
}

/// What a decoder adds to a message as it stores it (type, messageId, three times) and the
/// longest refusal text; generous.
const STAMP_BYTES: usize = 512;
/// A case that takes longer than this is a hang, not a slow machine.
const CASE_TIME: Duration = Duration::from_secs(30);

fn now() -> Timestamp {
    "2026-03-01T12:00:00Z".parse().unwrap()
}

/// Decodes `body` and checks what holds for every input.
fn check(body: &[u8], shape: Shape) -> Result<Option<Decoded>, TestCaseError> {
    let limits = Limits::default();
    let started = Instant::now();
    let result = decode::decode(body, shape, now(), &limits);
    prop_assert!(
        started.elapsed() < CASE_TIME,
        "decode took {:?}",
        started.elapsed()
    );
    match result {
        Err(err) => {
            check_error(&err)?;
            Ok(None)
        }
        Ok(decoded) => {
            for call in &decoded.calls {
                prop_assert!(
                    call.payload.len() <= limits.max_message_bytes + STAMP_BYTES,
                    "a stored call of {} bytes",
                    call.payload.len()
                );
                let payload: Value = serde_json::from_str(&call.payload)
                    .map_err(|e| TestCaseError::fail(format!("stored payload not JSON: {e}")))?;
                let timestamp = payload["timestamp"].as_str().unwrap_or_default();
                prop_assert!(decode::parse_time(timestamp).is_some(), "{}", timestamp);
            }
            for rejection in &decoded.rejections {
                prop_assert!(!rejection.message.is_empty());
                // A refusal may quote the value at fault, escaped: bounded by the message.
                prop_assert!(
                    rejection.message.len() <= 8 * limits.max_message_bytes,
                    "a refusal of {} bytes",
                    rejection.message.len()
                );
                prop_assert!(
                    rejection.payload.len() <= limits.max_message_bytes + STAMP_BYTES,
                    "a kept rejection of {} bytes",
                    rejection.payload.len()
                );
            }
            if let Shape::Single(_) = shape {
                prop_assert_eq!(decoded.calls.len() + decoded.rejections.len(), 1);
            }
            Ok(Some(decoded))
        }
    }
}

fn check_error(err: &DecodeError) -> Result<(), TestCaseError> {
    prop_assert!(!err.code.as_str().is_empty());
    prop_assert!(!err.message.is_empty());
    prop_assert!(err.message.len() <= 1024, "{}", err.message);
    Ok(())
}

/// `depth` arrays or objects inside each other around `leaf`.
fn nested(depth: usize, objects: bool, leaf: &str) -> String {
    let (open, close) = if objects {
        ("{\"a\":", "}")
    } else {
        ("[", "]")
    };
    format!("{}{leaf}{}", open.repeat(depth), close.repeat(depth))
}

/// Numbers at and past the ends of every range a JSON reader meets.
const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "-0.0",
    "1e400",
    "-1e400",
    "1e-400",
    "123456789012345678901234567890",
    "-123456789012345678901234567890",
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775807",
    "-9223372036854775808",
    "-9223372036854775809",
    "1.7976931348623157e308",
    "4.9e-324",
    "1E2",
    "0.1e-5",
];

/// Times at the ends of what a timestamp holds, and just past them.
const TIMES: &[&str] = &[
    "-009999-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999999Z",
    "0000-01-01T00:00:00Z",
    "+275760-09-13T00:00:00Z",
    "-271821-04-20T00:00:00Z",
    "2026-02-30T00:00:00Z",
    "2026-12-31T23:59:60Z",
    "2026-01-01T00:00:00+25:00",
    "2026-01-01T00:00:00-23:59",
    "2026-01-01T00:00:00.0000000001Z",
    "2026-01-01T24:00:00Z",
    "2026-01-01",
    "2026-01-01T00:00:00",
    "2026-01-01T00:00:00[Europe/Paris]",
    "",
    " ",
];

/// String literals (JSON text, quotes included) that are odd to read or to keep.
fn odd_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\"\\u0000\"".to_owned()),
        Just("\"a\\u0000b\"".to_owned()),
        Just("\"\\ud800\"".to_owned()),
        Just("\"\\udc00\\ud800\"".to_owned()),
        Just("\"\\ud83d\\ude00\"".to_owned()),
        Just("\"\u{202e}\u{feff}\u{fffd}\"".to_owned()),
        (1usize..200, select(&["é", "😀", "a", "\\n", "\\\""][..]))
            .prop_map(|(n, s)| format!("\"{}\"", s.repeat(n))),
        (30_000usize..34_000).prop_map(|n| format!("\"{}\"", "x".repeat(n))),
        any::<String>().prop_map(|s| Value::String(s).to_string()),
        select(TIMES).prop_map(|t| format!("\"{t}\"")),
    ]
}

/// JSON text for one field value: numbers and strings as above, nesting, plain values.
fn hostile_value() -> impl Strategy<Value = String> {
    prop_oneof![
        select(NUMBERS).prop_map(str::to_owned),
        odd_string(),
        (1usize..400, any::<bool>()).prop_map(|(d, o)| nested(d, o, "1")),
        arb_json().prop_map(|v| v.to_string()),
    ]
}

const FIELDS: &[&str] = &[
    "type",
    "userId",
    "anonymousId",
    "event",
    "messageId",
    "timestamp",
    "sentAt",
    "properties",
    "traits",
    "context",
    "integrations",
    "groupId",
    "previousId",
    "writeKey",
    "originalTimestamp",
    "receivedAt",
];

/// A message as JSON text; keys may repeat, which a JSON object must survive.
fn hostile_message() -> impl Strategy<Value = String> {
    let base = prop_oneof![
        Just(r#""type":"track","userId":"u","event":"E""#),
        Just(r#""type":"identify","anonymousId":"a""#),
        Just(r#""type":"alias","userId":"u","previousId":"p""#),
        Just(r#""type":"group","userId":"u","groupId":"g""#),
        Just(""),
    ];
    let fields = prop::collection::vec((select(FIELDS), hostile_value()), 0..5);
    (base, fields).prop_map(|(base, fields)| {
        let mut text = String::from("{");
        text.push_str(base);
        for (key, value) in fields {
            if text.len() > 1 {
                text.push(',');
            }
            text.push_str(&format!("\"{key}\":{value}"));
        }
        text.push('}');
        text
    })
}

/// A batch envelope of hostile items, with an envelope context as large as the batch allows.
fn hostile_batch() -> impl Strategy<Value = String> {
    let item = prop_oneof![
        4 => hostile_message(),
        1 => hostile_value(),
        1 => Just("{}".to_owned()),
    ];
    (
        prop::collection::vec(item, 0..6),
        0usize..60_000,
        prop::option::of(select(TIMES)),
        0usize..4,
    )
        .prop_map(|(items, context_bytes, sent_at, repeats)| {
            let mut text = String::from("{");
            if context_bytes > 0 {
                text.push_str(&format!(
                    r#""context":{{"big":"{}"}},"integrations":{{"All":true}},"#,
                    "c".repeat(context_bytes)
                ));
            }
            if let Some(sent_at) = sent_at {
                text.push_str(&format!(r#""sentAt":"{sent_at}","#));
            }
            // A repeated key: the last one, or a refusal, but never a panic.
            for _ in 0..repeats {
                text.push_str(r#""writeKey":"k","#);
            }
            text.push_str(r#""batch":["#);
            text.push_str(&items.join(","));
            text.push_str("]}");
            text
        })
}

/// Bodies that are almost JSON: a valid one cut short, with a byte changed, or with bytes that
/// are not UTF-8 spliced in.
fn damaged(body: String) -> impl Strategy<Value = Vec<u8>> {
    let len = body.len().max(1);
    (0..len, any::<u8>(), 0usize..3).prop_map(move |(at, byte, how)| {
        let mut bytes = body.clone().into_bytes();
        let at = at.min(bytes.len());
        match how {
            0 => bytes.truncate(at),
            1 if at < bytes.len() => bytes[at] = byte,
            _ => {
                let tail = bytes.split_off(at);
                bytes.extend_from_slice(&[0xff, 0xc3, 0x28, byte]);
                bytes.extend_from_slice(&tail);
            }
        }
        bytes
    })
}

/// The stored form keeps microseconds.
fn within_a_microsecond(a: Timestamp, b: Timestamp) -> bool {
    (a.as_nanosecond() - b.as_nanosecond()).abs() < 1_000
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).expect("compress");
    encoder.finish().expect("compress")
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn fuzz_decode_arbitrary_bytes(
        body in prop::collection::vec(any::<u8>(), 0..2048),
        shape in select(all_shapes()),
    ) {
        check(&body, shape)?;
    }

    #[test]
    fn fuzz_decode_hostile_messages(
        message in hostile_message(),
        kind in select(CallKind::ALL.to_vec()),
    ) {
        check(message.as_bytes(), Shape::Single(kind))?;
    }

    #[test]
    fn fuzz_decode_hostile_batches(batch in hostile_batch()) {
        check(batch.as_bytes(), Shape::Batch)?;
    }

    #[test]
    fn fuzz_decode_damaged_bodies(
        body in hostile_batch().prop_flat_map(damaged),
        shape in select(all_shapes()),
    ) {
        check(&body, shape)?;
    }

    #[test]
    fn fuzz_decode_deep_nesting(
        depth in 1usize..20_000,
        objects in any::<bool>(),
        in_message in any::<bool>(),
        shape in select(all_shapes()),
    ) {
        let inner = nested(depth, objects, "0");
        let body = if in_message {
            format!(r#"{{"type":"track","userId":"u","event":"E","properties":{{"p":{inner}}}}}"#)
        } else {
            inner
        };
        let body = match shape {
            Shape::Batch if in_message => format!(r#"{{"batch":[{body}]}}"#),
            _ => body,
        };
        check(body.as_bytes(), shape)?;
    }

    #[test]
    fn fuzz_decode_batch_counts(
        count in prop::sample::select(vec![0usize, 1, 2_499, 2_500, 2_501, 20_000]),
        item in prop::sample::select(vec!["{}", "1", "null", "[]"]),
    ) {
        let body = format!(r#"{{"batch":[{}]}}"#, vec![item; count].join(","));
        let limits = Limits::default();
        match check(body.as_bytes(), Shape::Batch)? {
            Some(decoded) => {
                prop_assert!(count <= limits.max_batch_messages);
                prop_assert_eq!(decoded.calls.len() + decoded.rejections.len(), count);
            }
            None => prop_assert!(
                count > limits.max_batch_messages || body.len() > limits.max_batch_bytes
            ),
        }
    }

    #[test]
    fn fuzz_gunzip(
        body in prop::collection::vec(any::<u8>(), 0..4096),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        how in 0usize..5,
        shape in select(all_shapes()),
    ) {
        let limits = Limits::default();
        let zipped = gzip(&body);
        let input = match how {
            // Whole: inflates to what went in.
            0 => zipped.clone(),
            // Cut short anywhere, header included.
            1 => zipped[..cut.index(zipped.len())].to_vec(),
            // One byte changed.
            2 => {
                let mut bytes = zipped.clone();
                let at = flip.index(bytes.len());
                bytes[at] ^= 0x5a;
                bytes
            }
            // Two members, or one followed by junk.
            3 => [zipped.clone(), zipped.clone()].concat(),
            _ => [zipped.clone(), body.clone()].concat(),
        };
        let started = Instant::now();
        let result = decode::gunzip(&input, shape, &limits);
        prop_assert!(started.elapsed() < CASE_TIME);
        match result {
            Ok(out) => {
                prop_assert!(out.len() <= shape.body_limit(&limits));
                if how == 0 {
                    prop_assert_eq!(out, body);
                }
            }
            Err(err) => {
                check_error(&err)?;
                prop_assert!(how != 0, "a whole gzip stream was refused: {}", err);
            }
        }
    }

    #[test]
    fn fuzz_gunzip_inflating_bodies(
        size in prop::sample::select(vec![32_768usize, 32_769, 512_000, 512_001, 4 << 20]),
        byte in any::<u8>(),
        shape in select(all_shapes()),
    ) {
        let limits = Limits::default();
        let zipped = gzip(&vec![byte; size]);
        match decode::gunzip(&zipped, shape, &limits) {
            Ok(out) => prop_assert_eq!(out.len(), size),
            Err(err) => {
                check_error(&err)?;
                prop_assert!(size > shape.body_limit(&limits), "{}", err);
            }
        }
    }

    #[test]
    fn fuzz_query_data(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        engine in 0usize..4,
        plus_as_space in any::<bool>(),
        padding in "[ =\t]{0,3}",
        junk in any::<String>(),
    ) {
        use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
        let encoded = [STANDARD, URL_SAFE, STANDARD_NO_PAD, URL_SAFE_NO_PAD][engine].encode(&bytes);
        let sent = if plus_as_space { encoded.replace('+', " ") } else { encoded.clone() };
        prop_assert_eq!(decode::decode_query_data(&sent), Ok(bytes.clone()));
        for text in [format!("{encoded}{padding}"), junk, format!("{encoded}{padding}{encoded}")] {
            match decode::decode_query_data(&text) {
                // Decoded bytes are never more than the text.
                Ok(out) => prop_assert!(out.len() <= text.len()),
                Err(err) => check_error(&err)?,
            }
        }
    }

    #[test]
    fn fuzz_times(
        text in prop_oneof![
            select(TIMES).prop_map(str::to_owned),
            "[+-]?[0-9]{4,6}-[0-9]{2}-[0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\\.[0-9]{0,12})?)?)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)?",
            any::<String>(),
        ],
        // Every instant of the years a time may name (1970 to 2200).
        seconds in signalbox_core::time::earliest().as_second()
            ..signalbox_core::time::after_latest().as_second(),
        nanos in 0i32..1_000_000_000,
    ) {
        if let Some(ts) = decode::parse_time(&text) {
            // Whatever parses formats to text that parses back to the same instant, to the
            // microsecond the stored form keeps.
            let formatted = decode::format_time(ts);
            let back = decode::parse_time(&formatted);
            prop_assert!(back.is_some(), "{} formatted as {}", text, formatted);
            prop_assert!(within_a_microsecond(back.unwrap(), ts), "{} formatted as {}", text, formatted);
        }
        let ts = Timestamp::new(seconds, nanos).expect("inside jiff's range");
        let formatted = decode::format_time(ts);
        let back = decode::parse_time(&formatted);
        prop_assert!(back.is_some_and(|back| within_a_microsecond(back, ts)), "{}", formatted);
    }
}

#[test]
fn fuzz_decode_envelope_context_is_not_copied_past_the_message_limit() {
    // A small batch whose envelope context alone is over a message's limit: no item may
    // come out larger than a message can be.
    let context = json!({"big": "c".repeat(40_000)});
    let mut envelope = Map::new();
    envelope.insert("context".into(), context);
    let items: Vec<Value> = (0..10)
        .map(|i| json!({"type": "track", "userId": format!("u{i}"), "event": "E"}))
        .collect();
    envelope.insert("batch".into(), Value::Array(items));
    let body = Value::Object(envelope).to_string();
    let decoded = check(body.as_bytes(), Shape::Batch)
        .unwrap()
        .expect("decodes");
    assert_eq!(decoded.calls.len() + decoded.rejections.len(), 10);
}
