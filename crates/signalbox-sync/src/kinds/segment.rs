//! The `segment` kind, the reverse sync: engage's outbox (changes Signalbox itself made to
//! profiles, and its email events) to Segment Tracking API batches, `POST {endpoint}/v1/batch`
//! with HTTP Basic auth (the write key as user name, no password).
//!
//! - Email events are `track` calls in Segment's Email spec: Received Email → `Email
//!   Delivered`, Opened Email → `Email Opened`, Clicked Email → `Email Link Clicked` (with
//!   `link_url`), Unsubscribed → `Email Unsubscribed`, Bounced Email → `Email Bounced`,
//!   Marked Email as Spam → `Email Marked as Spam`; properties `email_id`, `email_subject`,
//!   `campaign_id`, `campaign_name`, `flow_id`, `flow_name`, `list_id` where known;
//!   `context.traits.email`.
//! - Trait changes are `identify` calls with those traits (and `email`).
//! - Consent changes are `identify` calls with the traits `email_consent` (`subscribed`,
//!   `unsubscribed` or `never_subscribed`) and `email_suppressed` (the suppression reason, or
//!   `null`).
//! - List changes are `identify` calls with the trait `lists: {"<list id>": {"name": …,
//!   "status": "added" | "pending" | "confirmed" | "removed"}}`: the change, not the whole
//!   membership.
//!
//! Identity: `userId` is the id a Segment source gave the profile; without one the email is
//! the `anonymousId`; with neither there is nothing to send (skipped). Every message carries
//! `integrations: {"Klaviyo": false}` (a receiver does not route it back in), `timestamp` =
//! when the change was made, and `messageId` = `sbx-{destination id}-{seq}-{n}`.
//! A message over 32 KB is dead-lettered without sending; a batch stays under 500 KB.

use base64::Engine as _;
use jiff::Timestamp;
use serde_json::{json, Map, Value};
use signalbox_engage::{EmailEvent, OutboxChange, OutboxEntry};

use super::{batch_body, Endpoint, Op, Req, Unit, UnitBody, MAX_MESSAGE_BYTES};
use crate::model::{Position, Secret};

/// The deterministic `messageId` of an outbox entry sent by a destination (at most 100
/// characters: a destination id is 30).
pub fn message_id(destination_id: &str, position: Position) -> String {
    format!("sbx-{destination_id}-{}-{}", position.seq, position.n)
}

/// The Email spec's event for a built-in metric's name.
pub fn email_event_name(metric: &str) -> Option<&'static str> {
    Some(match metric {
        "Received Email" => "Email Delivered",
        "Opened Email" => "Email Opened",
        "Clicked Email" => "Email Link Clicked",
        "Unsubscribed" => "Email Unsubscribed",
        "Bounced Email" => "Email Bounced",
        "Marked Email as Spam" => "Email Marked as Spam",
        _ => return None,
    })
}

/// One outbox entry as a unit: a message, a skip, or a refusal (too large).
pub fn unit(destination_id: &str, only_segment_profiles: bool, entry: &OutboxEntry) -> Unit {
    let position = Position {
        seq: entry.seq,
        n: entry.n,
    };
    if only_segment_profiles && !entry.from_segment {
        return Unit::skip(position, entry.at, "not a profile a Segment source updated");
    }
    let message_id = message_id(destination_id, position);
    let Some(message) = message(entry, &message_id) else {
        return Unit::skip(position, entry.at, "no userId and no email to send it by");
    };
    let json = message.to_string();
    let body = if json.len() > MAX_MESSAGE_BYTES {
        UnitBody::Refuse {
            reason: format!(
                "message is {} bytes: over Segment's limit of {MAX_MESSAGE_BYTES} bytes per call",
                json.len()
            ),
            payload: message,
        }
    } else {
        UnitBody::Send {
            json,
            op: Op::Message,
        }
    };
    Unit {
        position,
        at: entry.at,
        done: Some(position),
        message_id,
        body,
        replay_of: None,
    }
}

/// The Segment message for an entry; `None` when it has no identity to send it by or is not
/// something the reverse sync sends.
pub fn message(entry: &OutboxEntry, message_id: &str) -> Option<Value> {
    let mut message = Map::new();
    match (&entry.user_id, &entry.email) {
        (Some(user_id), _) if !user_id.is_empty() => {
            message.insert("userId".into(), json!(user_id));
        }
        (_, Some(email)) if !email.is_empty() => {
            message.insert("anonymousId".into(), json!(email));
        }
        _ => return None,
    }
    match &entry.change {
        OutboxChange::Email(event) => {
            let name = email_event_name(event.metric.name())?;
            message.insert("type".into(), json!("track"));
            message.insert("event".into(), json!(name));
            message.insert("properties".into(), Value::Object(email_properties(event)));
            if let Some(email) = &entry.email {
                message.insert("context".into(), json!({ "traits": { "email": email } }));
            }
        }
        OutboxChange::Traits { traits } => {
            let mut traits = traits.clone();
            add_email(&mut traits, entry);
            message.insert("type".into(), json!("identify"));
            message.insert("traits".into(), Value::Object(traits));
        }
        OutboxChange::Consent {
            consent,
            suppressed,
        } => {
            let mut traits = Map::new();
            add_email(&mut traits, entry);
            traits.insert("email_consent".into(), json!(consent.to_ascii_lowercase()));
            traits.insert("email_suppressed".into(), json!(suppressed));
            message.insert("type".into(), json!("identify"));
            message.insert("traits".into(), Value::Object(traits));
        }
        OutboxChange::List {
            list_id,
            list_name,
            change,
        } => {
            let mut traits = Map::new();
            add_email(&mut traits, entry);
            traits.insert(
                "lists".into(),
                json!({ list_id.clone(): { "name": list_name, "status": change } }),
            );
            message.insert("type".into(), json!("identify"));
            message.insert("traits".into(), Value::Object(traits));
        }
    }
    message.insert("messageId".into(), json!(message_id));
    message.insert("timestamp".into(), json!(entry.at.to_string()));
    message.insert("integrations".into(), json!({ "Klaviyo": false }));
    Some(Value::Object(message))
}

fn add_email(traits: &mut Map<String, Value>, entry: &OutboxEntry) {
    if let Some(email) = &entry.email {
        traits
            .entry("email".to_owned())
            .or_insert_with(|| json!(email));
    }
}

fn email_properties(event: &EmailEvent) -> Map<String, Value> {
    let mut properties = Map::new();
    let mut put = |name: &str, value: &Option<String>| {
        if let Some(value) = value {
            properties.insert(name.to_owned(), json!(value));
        }
    };
    put("email_id", &event.message_id);
    put("email_subject", &event.subject);
    put("campaign_id", &event.campaign_id);
    put("campaign_name", &event.campaign_name);
    put("flow_id", &event.flow_id);
    put("flow_name", &event.flow_name);
    put("list_id", &event.list_id);
    put("link_url", &event.url);
    if let Some(kind) = event.properties.get("Bounce Type").and_then(Value::as_str) {
        properties.insert("bounce_type".into(), json!(kind));
    }
    properties
}

/// `Basic base64("{write key}:")`.
pub fn basic_auth(write_key: &Secret) -> String {
    let token =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:", write_key.expose()));
    format!("Basic {token}")
}

/// The request for a run of units (see [`super::batch_run`]).
pub fn request(endpoint: &str, write_key: &Secret, units: &[Unit], now: Timestamp) -> Req {
    let body = batch_body(
        units.iter().filter_map(|u| match &u.body {
            UnitBody::Send { json, .. } => Some(json.as_str()),
            _ => None,
        }),
        now,
    );
    Req {
        url: format!("{}/v1/batch", endpoint.trim_end_matches('/')),
        headers: vec![
            ("Content-Type".to_owned(), "application/json".to_owned()),
            ("User-Agent".to_owned(), "Signalbox-Sync".to_owned()),
            ("Authorization".to_owned(), basic_auth(write_key)),
        ],
        body: body.into(),
        endpoint: Endpoint::Batch,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use signalbox_engage::{BuiltinMetric, ProfileId};

    fn entry(change: OutboxChange) -> OutboxEntry {
        OutboxEntry {
            seq: 42,
            n: 3,
            at: "2026-03-01T10:00:00Z".parse().unwrap(),
            profile_id: ProfileId("01PROFILE".into()),
            email: Some("ada@example.com".into()),
            user_id: Some("user-1".into()),
            anonymous_id: None,
            from_segment: true,
            change,
        }
    }

    fn email_event(metric: BuiltinMetric) -> EmailEvent {
        EmailEvent {
            metric,
            message_id: Some("send-9".into()),
            subject: Some("Hello".into()),
            flow_id: Some("FLOW1".into()),
            flow_name: Some("Welcome".into()),
            campaign_id: None,
            campaign_name: None,
            url: Some("https://example.com/x".into()),
            list_id: Some("LIST1".into()),
            properties: Map::new(),
        }
    }

    fn sent(unit: &Unit) -> Value {
        match &unit.body {
            UnitBody::Send { json, .. } => serde_json::from_str(json).unwrap(),
            other => panic!("not sent: {other:?}"),
        }
    }

    #[test]
    fn email_events_follow_the_email_spec() {
        let cases = [
            (BuiltinMetric::ReceivedEmail, "Email Delivered"),
            (BuiltinMetric::OpenedEmail, "Email Opened"),
            (BuiltinMetric::ClickedEmail, "Email Link Clicked"),
            (BuiltinMetric::Unsubscribed, "Email Unsubscribed"),
            (BuiltinMetric::BouncedEmail, "Email Bounced"),
        ];
        for (metric, name) in cases {
            let unit = unit(
                "dst_A",
                false,
                &entry(OutboxChange::Email(email_event(metric))),
            );
            let message = sent(&unit);
            assert_eq!(message["type"], "track");
            assert_eq!(message["event"], name);
            assert_eq!(message["userId"], "user-1");
            assert_eq!(message["properties"]["email_id"], "send-9");
            assert_eq!(message["properties"]["email_subject"], "Hello");
            assert_eq!(message["properties"]["flow_id"], "FLOW1");
            assert_eq!(message["properties"]["flow_name"], "Welcome");
            assert_eq!(message["properties"]["list_id"], "LIST1");
            assert_eq!(message["properties"]["link_url"], "https://example.com/x");
            assert_eq!(message["context"]["traits"]["email"], "ada@example.com");
            assert_eq!(message["integrations"], json!({"Klaviyo": false}));
            assert_eq!(message["messageId"], "sbx-dst_A-42-3");
            assert_eq!(message["timestamp"], "2026-03-01T10:00:00Z");
            assert_eq!(unit.message_id, "sbx-dst_A-42-3");
        }
        assert_eq!(
            email_event_name("Marked Email as Spam"),
            Some("Email Marked as Spam")
        );
    }

    #[test]
    fn profile_changes_are_identify_calls() {
        let mut traits = Map::new();
        traits.insert("firstName".into(), json!("Ada"));
        let message = sent(&unit(
            "dst_A",
            false,
            &entry(OutboxChange::Traits { traits }),
        ));
        assert_eq!(message["type"], "identify");
        assert_eq!(message["traits"]["firstName"], "Ada");
        assert_eq!(message["traits"]["email"], "ada@example.com");

        let consent = OutboxChange::Consent {
            consent: "UNSUBSCRIBED".into(),
            suppressed: Some("USER_SUPPRESSED".into()),
        };
        let message = sent(&unit("dst_A", false, &entry(consent)));
        assert_eq!(message["traits"]["email_consent"], "unsubscribed");
        assert_eq!(message["traits"]["email_suppressed"], "USER_SUPPRESSED");

        let list = OutboxChange::List {
            list_id: "L1".into(),
            list_name: "News".into(),
            change: "added".into(),
        };
        let message = sent(&unit("dst_A", false, &entry(list)));
        assert_eq!(
            message["traits"]["lists"]["L1"],
            json!({"name": "News", "status": "added"})
        );
        assert_eq!(message["integrations"]["Klaviyo"], false);
    }

    #[test]
    fn identity_falls_back_to_the_email_then_skips() {
        let mut e = entry(OutboxChange::Traits { traits: Map::new() });
        e.user_id = None;
        let message = sent(&unit("dst_A", false, &e));
        assert_eq!(message["anonymousId"], "ada@example.com");
        assert!(message.get("userId").is_none());
        e.email = None;
        assert!(matches!(
            unit("dst_A", false, &e).body,
            UnitBody::Skip { .. }
        ));
    }

    #[test]
    fn only_segment_profiles_skips_the_others() {
        let mut e = entry(OutboxChange::Traits { traits: Map::new() });
        e.from_segment = false;
        assert!(matches!(
            unit("dst_A", true, &e).body,
            UnitBody::Skip { .. }
        ));
        assert!(matches!(
            unit("dst_A", false, &e).body,
            UnitBody::Send { .. }
        ));
    }

    #[test]
    fn an_oversized_message_is_refused() {
        let mut traits = Map::new();
        traits.insert("bio".into(), json!("x".repeat(40 * 1024)));
        let unit = unit("dst_A", false, &entry(OutboxChange::Traits { traits }));
        match unit.body {
            UnitBody::Refuse { reason, .. } => assert!(reason.contains("32768")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn requests_use_basic_auth_with_the_write_key() {
        let key = Secret::new("WK-segment-secret");
        let units = vec![unit(
            "dst_A",
            false,
            &entry(OutboxChange::Traits { traits: Map::new() }),
        )];
        let req = request(
            "https://api.segment.io/",
            &key,
            &units,
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(req.url, "https://api.segment.io/v1/batch");
        let auth = &req
            .headers
            .iter()
            .find(|(n, _)| n == "Authorization")
            .unwrap()
            .1;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.strip_prefix("Basic ").unwrap())
            .unwrap();
        assert_eq!(decoded, b"WK-segment-secret:");
        let body: Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(body["batch"][0]["type"], "identify");
        assert!(body.get("sentAt").is_some());
    }
}
