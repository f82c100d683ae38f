//! The `webhook` kind: the calls of its sources, as stored (Segment-spec JSON with their own
//! `messageId`), in `{"batch":[…],"sentAt":…}` bodies of at most 500 KB.
//!
//! Headers: `Content-Type: application/json`; `Idempotency-Key:
//! {destination id}-{first seq}-{last seq}` (the same on every attempt of the same batch);
//! with a secret, `Signalbox-Signature: t={unix seconds},v1={hex HMAC-SHA256}` over
//! `"{t}.{body}"`: the format flow webhooks are signed with, so a receiver verifies both
//! alike.

use hmac::{Hmac, Mac};
use jiff::Timestamp;
use sha2::Sha256;
use signalbox_core::StoredCall;

use super::{batch_body, Endpoint, Op, Req, Unit, UnitBody, MAX_BATCH_BYTES};
use crate::model::{Position, Secret};

/// The signature header.
pub const SIGNATURE_HEADER: &str = "Signalbox-Signature";
/// The header carrying a batch's idempotency key.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";

/// `t={unix_seconds},v1={hex HMAC-SHA256 of "{unix_seconds}.{body}" under the secret}`.
pub fn sign(secret: &str, unix_seconds: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(unix_seconds.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(digest.len() * 2);
    for byte in digest {
        hex.push_str(&format!("{byte:02x}"));
    }
    format!("t={unix_seconds},v1={hex}")
}

/// One stored call as a unit (the caller decided it is one to forward).
pub fn unit(call: StoredCall) -> Unit {
    let position = Position {
        seq: call.seq,
        n: 0,
    };
    let body = if call.payload.len() + super::BATCH_OVERHEAD > MAX_BATCH_BYTES {
        UnitBody::Refuse {
            reason: format!(
                "call is {} bytes: larger than a batch may be ({MAX_BATCH_BYTES})",
                call.payload.len()
            ),
            payload: serde_json::json!({ "messageId": call.message_id, "truncated": true }),
        }
    } else {
        UnitBody::Send {
            json: call.payload,
            op: Op::Message,
        }
    };
    Unit {
        position,
        at: call.received_at,
        done: Some(position),
        message_id: call.message_id,
        body,
        replay_of: None,
    }
}

/// The request for a run of units (see [`super::batch_run`]).
pub fn request(
    destination_id: &str,
    url: &str,
    secret: Option<&Secret>,
    units: &[Unit],
    now: Timestamp,
) -> Req {
    let body = batch_body(
        units.iter().filter_map(|u| match &u.body {
            UnitBody::Send { json, .. } => Some(json.as_str()),
            _ => None,
        }),
        now,
    );
    let first = units.first().map(|u| u.position.seq).unwrap_or_default();
    let last = units.last().map(|u| u.position.seq).unwrap_or_default();
    let replay = if units.iter().any(|u| u.replay_of.is_some()) {
        "-replay"
    } else {
        ""
    };
    let mut headers = vec![
        ("Content-Type".to_owned(), "application/json".to_owned()),
        ("User-Agent".to_owned(), "Signalbox-Sync".to_owned()),
        (
            IDEMPOTENCY_HEADER.to_owned(),
            format!("{destination_id}-{first}-{last}{replay}"),
        ),
    ];
    if let Some(secret) = secret {
        headers.push((
            SIGNATURE_HEADER.to_owned(),
            sign(secret.expose(), now.as_second(), &body),
        ));
    }
    Req {
        url: url.to_owned(),
        headers,
        body: body.into(),
        endpoint: Endpoint::Batch,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use signalbox_core::{CallKind, SourceId};

    fn call(seq: i64) -> StoredCall {
        StoredCall {
            seq,
            source_id: SourceId(1),
            kind: CallKind::Track,
            message_id: format!("m-{seq}"),
            received_at: Timestamp::UNIX_EPOCH,
            payload: format!(r#"{{"type":"track","event":"E","messageId":"m-{seq}"}}"#),
        }
    }

    #[test]
    fn signature_is_the_flow_webhook_format() {
        // HMAC-SHA256("key", "1.{}"), computed independently.
        let signature = sign("key", 1, b"{}");
        assert!(signature.starts_with("t=1,v1="));
        assert_eq!(signature.len(), "t=1,v1=".len() + 64);
        assert_ne!(signature, sign("other", 1, b"{}"));
        assert_eq!(signature, sign("key", 1, b"{}"));
    }

    #[test]
    fn a_batch_is_signed_and_keyed_by_its_positions() {
        let units: Vec<Unit> = (5..8).map(|s| unit(call(s))).collect();
        let secret = Secret::new("whsec-test-secret-value");
        let now: Timestamp = "2026-01-02T03:04:05Z".parse().unwrap();
        let req = request("dst_X", "http://h/in", Some(&secret), &units, now);
        let header = |name: &str| {
            req.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(header(IDEMPOTENCY_HEADER).unwrap(), "dst_X-5-7");
        assert_eq!(
            header(SIGNATURE_HEADER).unwrap(),
            sign("whsec-test-secret-value", now.as_second(), &req.body)
        );
        let body: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(body["batch"][2]["messageId"], "m-7");
        assert!(!String::from_utf8_lossy(&req.body).contains("whsec-test-secret-value"));
        let unsigned = request("dst_X", "http://h/in", None, &units, now);
        assert!(unsigned.headers.iter().all(|(n, _)| n != SIGNATURE_HEADER));
    }
}
