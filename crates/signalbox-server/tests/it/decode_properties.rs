//! Property tests of the decoder: whatever comes in, it never panics, every refusal carries a
//! code and a message, and every accepted call is shaped as the log keeps it.

use jiff::Timestamp;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Map, Value};
use signalbox_core::CallKind;
use signalbox_server::segment::decode::{self, DecodeError, Decoded, Limits, Shape};

/// Field names the decoder looks at, so that generated objects reach its branches.
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
    "name",
    "batch",
];

const TYPES: &[&str] = &[
    "track", "identify", "page", "screen", "group", "alias", "Track", "", "batch",
];

pub fn all_shapes() -> Vec<Shape> {
    let mut shapes: Vec<Shape> = CallKind::ALL.into_iter().map(Shape::Single).collect();
    shapes.push(Shape::Batch);
    shapes
}

/// Strings that look like what clients send: types, ISO-8601 times (valid or almost),
/// long ids, and anything at all.
pub fn interesting_string() -> impl Strategy<Value = String> {
    prop_oneof![
        select(TYPES).prop_map(str::to_owned),
        "[0-9]{4}-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9](\\.[0-9]{1,9})?(Z|[+-][0-2][0-9]:[0-5][0-9])?",
        "[a-z0-9-]{0,120}",
        any::<String>(),
    ]
}

pub fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        interesting_string().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(field_name(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![select(FIELDS).prop_map(str::to_owned), "[a-zA-Z]{1,6}"]
}

/// An object made mostly of the fields a message has.
pub fn arb_message() -> impl Strategy<Value = Value> {
    let value = prop_oneof![
        3 => interesting_string().prop_map(Value::from),
        1 => arb_json(),
    ];
    prop::collection::btree_map(field_name(), value, 0..10)
        .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>()))
}

/// A batch envelope of such messages (and the odd non-object).
pub fn arb_envelope() -> impl Strategy<Value = Value> {
    let item = prop_oneof![4 => arb_message(), 1 => arb_json()];
    (
        prop::collection::vec(item, 0..8),
        prop::option::of(interesting_string()),
        prop::option::of(arb_json()),
        prop::option::of(arb_json()),
        prop::option::of(arb_json()),
    )
        .prop_map(|(batch, sent_at, context, integrations, write_key)| {
            let mut envelope = Map::new();
            envelope.insert("batch".into(), Value::Array(batch));
            let optional = [
                ("sentAt", sent_at.map(Value::from)),
                ("context", context),
                ("integrations", integrations),
                ("writeKey", write_key),
            ];
            for (key, value) in optional {
                if let Some(value) = value {
                    envelope.insert(key.into(), value);
                }
            }
            Value::Object(envelope)
        })
}

fn now() -> Timestamp {
    "2026-03-01T12:00:00Z".parse().unwrap()
}

/// Decodes and checks what holds for every input.
fn check(body: &[u8], shape: Shape) -> Result<Option<Decoded>, TestCaseError> {
    match decode::decode(body, shape, now(), &Limits::default()) {
        Err(err) => {
            check_error(&err)?;
            Ok(None)
        }
        Ok(decoded) => {
            for rejection in &decoded.rejections {
                prop_assert!(!rejection.code.as_str().is_empty());
                prop_assert!(!rejection.message.is_empty());
                prop_assert_eq!(rejection.received_at, now());
            }
            for call in &decoded.calls {
                let payload: Value = serde_json::from_str(&call.payload)
                    .map_err(|e| TestCaseError::fail(format!("stored payload not JSON: {e}")))?;
                let object = payload.as_object().expect("a stored call is an object");
                prop_assert_eq!(object["type"].as_str(), Some(call.kind.as_str()));
                prop_assert_eq!(object["messageId"].as_str(), Some(call.message_id.as_str()));
                prop_assert!(!call.message_id.is_empty());
                prop_assert!(call.message_id.chars().count() <= 100);
                prop_assert!(!object.contains_key("writeKey"));
                prop_assert_eq!(
                    object["receivedAt"].as_str(),
                    Some("2026-03-01T12:00:00.000Z")
                );
                let timestamp = object["timestamp"].as_str().expect("timestamp is a string");
                prop_assert!(decode::parse_time(timestamp).is_some(), "{}", timestamp);
                if let Shape::Single(kind) = shape {
                    prop_assert_eq!(call.kind, kind);
                }
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
    Ok(())
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(
        body in prop::collection::vec(any::<u8>(), 0..512),
        shape in select(all_shapes()),
    ) {
        check(&body, shape)?;
    }

    #[test]
    fn arbitrary_json_never_panics(value in arb_json(), shape in select(all_shapes())) {
        check(value.to_string().as_bytes(), shape)?;
    }

    #[test]
    fn message_like_objects_are_accepted_or_rejected_with_a_code(
        message in arb_message(),
        kind in select(CallKind::ALL.to_vec()),
    ) {
        check(message.to_string().as_bytes(), Shape::Single(kind))?;
    }

    #[test]
    fn every_batch_item_is_either_a_call_or_a_rejection(envelope in arb_envelope()) {
        let items = envelope["batch"].as_array().unwrap().len();
        let decoded = check(envelope.to_string().as_bytes(), Shape::Batch)?
            .expect("a small envelope decodes");
        prop_assert_eq!(decoded.calls.len() + decoded.rejections.len(), items);
        let expected_key = envelope["writeKey"].as_str();
        prop_assert_eq!(decoded.write_key.as_deref(), expected_key);
    }

    #[test]
    fn gunzip_of_arbitrary_bytes_never_panics(
        body in prop::collection::vec(any::<u8>(), 0..512),
        shape in select(all_shapes()),
    ) {
        if let Err(err) = decode::gunzip(&body, shape, &Limits::default()) {
            check_error(&err)?;
        }
    }

    #[test]
    fn query_data_of_any_string_never_panics(data in any::<String>()) {
        if let Err(err) = decode::decode_query_data(&data) {
            check_error(&err)?;
        }
    }
}
