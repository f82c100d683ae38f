//! The `klaviyo` kind: the Segment calls of its sources, mapped as engage maps them
//! (`signalbox_engage::mapping::map_segment` with each source's settings), sent to a
//! Klaviyo-compatible API.
//!
//! - identify → `POST {endpoint}/api/profile-import` (the upsert); when the call names a
//!   list (`listId` in the source's settings or the message's `integrations.Klaviyo`), then
//!   `POST {endpoint}/api/lists/{id}/relationships/profiles` with the profile id the import
//!   answered.
//! - track → events (revenue → value, `Order Completed` fan-out into `Ordered Product` with
//!   `{orderId}_{productId}` ids), each with `unique_id` = what the mapping gives (the call's
//!   `messageId`), batched through `POST {endpoint}/api/event-bulk-create-jobs` (at most
//!   1,000 events and 5 MB a job).
//! - alias, page, screen, group → skipped; so is a call whose `integrations` turn Klaviyo
//!   off (as engage skips it: the loop breaker), and one without an identifier.
//!
//! Order: calls in log order; a run of consecutive events goes in one job; an identify ends
//! the run. Headers: `Authorization: Klaviyo-API-Key {key}`, `revision: 2026-07-15`,
//! `Content-Type`/`Accept: application/vnd.api+json`, `Signalbox-Origin: segment` (tells a
//! receiving Signalbox the write came from a Segment source, so its reverse sync does not send
//! it back; harmless to Klaviyo).

use serde_json::{json, Map, Value};
use signalbox_core::{CallKind, StoredCall};
use signalbox_engage::mapping::{map_segment, MappedEvent, Skip};
use signalbox_engage::{DestinationSettings, ProfileInput};

use super::{Endpoint, Op, Req, Unit, UnitBody};
use crate::model::{Position, Secret};

/// The API revision requests ask for.
pub const REVISION: &str = signalbox_core::KLAVIYO_REVISION;
/// The header that marks a write as forwarded from a Segment source.
pub const ORIGIN_HEADER: &str = "Signalbox-Origin";
/// Events per bulk job, Klaviyo's limit.
pub const MAX_JOB_EVENTS: usize = 1000;
/// Bytes per bulk job, Klaviyo's limit.
pub const MAX_JOB_BYTES: usize = 5 * 1024 * 1024;

/// A call's units: a profile import, or one event per mapped event; a skip when there is
/// nothing to send. `settings` are the source's (its `enabled` flag is engage's own switch
/// and does not apply here).
pub fn units(destination_id: &str, call: &StoredCall, settings: &DestinationSettings) -> Vec<Unit> {
    let position = Position {
        seq: call.seq,
        n: 0,
    };
    let skip = |reason| vec![Unit::skip(position, call.received_at, reason)];
    if !call.kind.is_segment() {
        return skip("not a Segment call");
    }
    let Ok(Value::Object(message)) = serde_json::from_str::<Value>(&call.payload) else {
        return skip("payload is not a JSON object");
    };
    let mut settings = settings.clone();
    settings.enabled = true;
    let mapped = match map_segment(call.kind, message, &settings, call.received_at) {
        Ok(mapped) => mapped,
        Err(Skip::Integrations) => return skip("integrations turned Klaviyo off"),
        Err(Skip::Kind(_)) => return skip("the call type has no Klaviyo equivalent"),
        Err(_) => return skip("not mapped"),
    };
    let mut out = Vec::new();
    match call.kind {
        CallKind::Identify => {
            let attributes = profile_attributes(&mapped.profile, false);
            if !has_import_identifier(&mapped.profile) {
                return skip("no email, phone number or external id");
            }
            out.push(Unit {
                position,
                at: call.received_at,
                done: None,
                message_id: call.message_id.clone(),
                body: UnitBody::Send {
                    json: json!({ "data": { "type": "profile", "attributes": attributes } })
                        .to_string(),
                    op: Op::ProfileImport {
                        list_id: mapped.list.map(|l| l.list_id),
                    },
                },
                replay_of: None,
            });
        }
        CallKind::Track => {
            if !mapped.profile.has_identifier() {
                return skip("no identifier for the event's profile");
            }
            let profile = profile_attributes(&mapped.profile, true);
            for (k, event) in mapped.events.iter().enumerate() {
                let unique_id = event
                    .unique_id
                    .clone()
                    .unwrap_or_else(|| format!("sbx-{destination_id}-{}-{k}", call.seq));
                out.push(Unit {
                    position: Position {
                        seq: call.seq,
                        n: k as u32,
                    },
                    at: call.received_at,
                    done: None,
                    message_id: unique_id.clone(),
                    body: UnitBody::Send {
                        json: bulk_entry(&profile, event, &unique_id).to_string(),
                        op: Op::Event,
                    },
                    replay_of: None,
                });
            }
        }
        _ => return skip("the call type has no Klaviyo equivalent"),
    }
    match out.last_mut() {
        Some(last) => last.done = Some(position),
        None => return skip("nothing mapped"),
    }
    out
}

fn has_import_identifier(profile: &ProfileInput) -> bool {
    profile.email.is_some() || profile.phone_number.is_some() || profile.external_id.is_some()
}

/// A profile's JSON:API attributes (what is set only); `anonymous_id` where the API takes
/// it (an event's profile).
pub fn profile_attributes(profile: &ProfileInput, with_anonymous_id: bool) -> Value {
    let mut attributes = Map::new();
    let mut put = |name: &str, value: &Option<String>| {
        if let Some(value) = value {
            attributes.insert(name.to_owned(), json!(value));
        }
    };
    put("email", &profile.email);
    put("phone_number", &profile.phone_number);
    put("external_id", &profile.external_id);
    put("first_name", &profile.first_name);
    put("last_name", &profile.last_name);
    put("organization", &profile.organization);
    put("title", &profile.title);
    put("image", &profile.image);
    put("locale", &profile.locale);
    if with_anonymous_id {
        put("anonymous_id", &profile.anonymous_id);
    }
    let l = &profile.location;
    let mut location = Map::new();
    for (name, value) in [
        ("address1", &l.address1),
        ("address2", &l.address2),
        ("city", &l.city),
        ("country", &l.country),
        ("region", &l.region),
        ("zip", &l.zip),
        ("timezone", &l.timezone),
        ("ip", &l.ip),
    ] {
        if let Some(value) = value {
            location.insert(name.to_owned(), json!(value));
        }
    }
    if let Some(latitude) = l.latitude {
        location.insert("latitude".into(), json!(latitude));
    }
    if let Some(longitude) = l.longitude {
        location.insert("longitude".into(), json!(longitude));
    }
    if !location.is_empty() {
        attributes.insert("location".into(), Value::Object(location));
    }
    if !profile.properties.is_empty() {
        attributes.insert(
            "properties".into(),
            Value::Object(profile.properties.clone()),
        );
    }
    Value::Object(attributes)
}

/// One `event-bulk-create` entry: the profile and one event.
fn bulk_entry(profile: &Value, event: &MappedEvent, unique_id: &str) -> Value {
    let mut attributes = Map::new();
    attributes.insert("properties".into(), Value::Object(event.properties.clone()));
    attributes.insert("time".into(), json!(event.time.to_string()));
    if let Some(value) = event.value {
        attributes.insert("value".into(), json!(value));
    }
    if let Some(currency) = &event.value_currency {
        attributes.insert("value_currency".into(), json!(currency));
    }
    attributes.insert("unique_id".into(), json!(unique_id));
    attributes.insert(
        "metric".into(),
        json!({ "data": { "type": "metric", "attributes": { "name": event.metric_name } } }),
    );
    json!({
        "type": "event-bulk-create",
        "attributes": {
            "profile": { "data": { "type": "profile", "attributes": profile } },
            "events": { "data": [ { "type": "event", "attributes": attributes } ] },
        }
    })
}

/// How many units from the front go into the next request: a run of events (≤ 1,000, ≤
/// 5 MB, ≤ `max_units`; skips between them ride along), or one profile import or list write.
pub fn run(units: &[Unit], max_units: usize) -> usize {
    match units.first().and_then(Unit::op) {
        Some(Op::Event) => {
            let mut bytes = 256;
            let mut count = 0;
            for unit in units.iter().take(max_units.clamp(1, MAX_JOB_EVENTS)) {
                if matches!(unit.body, UnitBody::Skip { .. }) {
                    count += 1;
                    continue;
                }
                if unit.op() != Some(&Op::Event) {
                    break;
                }
                if count > 0 && bytes + unit.size() + 1 > MAX_JOB_BYTES {
                    break;
                }
                bytes += unit.size() + 1;
                count += 1;
            }
            count.max(1)
        }
        _ => 1,
    }
}

/// The unit that adds the profile an import answered with to the import's list; `None` when
/// the import names no list or the answer has no profile id.
pub fn list_add_unit(import: &Unit, response: &[u8]) -> Option<Unit> {
    let Some(Op::ProfileImport {
        list_id: Some(list_id),
    }) = import.op()
    else {
        return None;
    };
    let answer: Value = serde_json::from_slice(response).ok()?;
    let profile_id = answer.pointer("/data/id")?.as_str()?;
    Some(Unit {
        position: import.position,
        at: import.at,
        done: import.done,
        message_id: import.message_id.clone(),
        body: UnitBody::Send {
            json: json!({ "data": [ { "type": "profile", "id": profile_id } ] }).to_string(),
            op: Op::ListAdd {
                list_id: list_id.clone(),
            },
        },
        replay_of: import.replay_of,
    })
}

fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The request for a run of units (see [`run`]).
pub fn request(endpoint: &str, api_key: &Secret, units: &[Unit]) -> Req {
    let base = endpoint.trim_end_matches('/');
    let texts = units.iter().filter_map(|u| match &u.body {
        UnitBody::Send { json, .. } => Some(json.as_str()),
        _ => None,
    });
    let (url, body, endpoint) = match units.first().and_then(Unit::op) {
        Some(Op::ProfileImport { .. }) => (
            format!("{base}/api/profile-import"),
            texts.collect::<Vec<_>>().concat().into_bytes(),
            Endpoint::ProfileImport,
        ),
        Some(Op::ListAdd { list_id }) => (
            format!(
                "{base}/api/lists/{}/relationships/profiles",
                path_segment(list_id)
            ),
            texts.collect::<Vec<_>>().concat().into_bytes(),
            Endpoint::ListRelationships,
        ),
        _ => {
            let mut body = Vec::with_capacity(64 * 1024);
            body.extend_from_slice(
                br#"{"data":{"type":"event-bulk-create-job","attributes":{"events-bulk-create":{"data":["#,
            );
            for (i, text) in texts.enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                body.extend_from_slice(text.as_bytes());
            }
            body.extend_from_slice(b"]}}}}");
            (
                format!("{base}/api/event-bulk-create-jobs"),
                body,
                Endpoint::EventBulk,
            )
        }
    };
    Req {
        url,
        headers: vec![
            (
                "Authorization".to_owned(),
                format!("Klaviyo-API-Key {}", api_key.expose()),
            ),
            ("revision".to_owned(), REVISION.to_owned()),
            (
                "Content-Type".to_owned(),
                "application/vnd.api+json".to_owned(),
            ),
            ("Accept".to_owned(), "application/vnd.api+json".to_owned()),
            ("User-Agent".to_owned(), "Signalbox-Sync".to_owned()),
            (ORIGIN_HEADER.to_owned(), "segment".to_owned()),
        ],
        body: body.into(),
        endpoint,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use signalbox_core::SourceId;

    fn call(seq: i64, kind: CallKind, payload: Value) -> StoredCall {
        StoredCall {
            seq,
            source_id: SourceId(1),
            kind,
            message_id: payload["messageId"].as_str().unwrap_or("m").to_owned(),
            received_at: "2026-03-01T10:00:00Z".parse().unwrap(),
            payload: payload.to_string(),
        }
    }

    fn body(unit: &Unit) -> Value {
        match &unit.body {
            UnitBody::Send { json, .. } => serde_json::from_str(json).unwrap(),
            other => panic!("not sent: {other:?}"),
        }
    }

    #[test]
    fn identify_is_a_profile_import_then_a_list_add() {
        let settings = DestinationSettings {
            list_id: Some("LIST9".into()),
            ..DestinationSettings::default()
        };
        let c = call(
            7,
            CallKind::Identify,
            json!({"type":"identify","messageId":"id-1","userId":"u1",
                   "traits":{"email":"Ada@Example.com","firstName":"Ada","plan":"pro"}}),
        );
        let units = units("dst_K", &c, &settings);
        assert_eq!(units.len(), 1);
        assert_eq!(units[0].done, Some(Position { seq: 7, n: 0 }));
        let import = body(&units[0]);
        let attributes = &import["data"]["attributes"];
        assert_eq!(attributes["email"], "ada@example.com");
        assert_eq!(attributes["first_name"], "Ada");
        assert_eq!(attributes["external_id"], "u1");
        assert_eq!(attributes["properties"]["plan"], "pro");
        let req = request("http://k", &Secret::new("pk_live_secret_key_1234"), &units);
        assert_eq!(req.url, "http://k/api/profile-import");
        assert_eq!(req.endpoint, Endpoint::ProfileImport);
        let add = list_add_unit(&units[0], br#"{"data":{"type":"profile","id":"P1"}}"#).unwrap();
        assert_eq!(add.done, units[0].done);
        let req = request("http://k", &Secret::new("k"), std::slice::from_ref(&add));
        assert_eq!(req.url, "http://k/api/lists/LIST9/relationships/profiles");
        assert_eq!(
            serde_json::from_slice::<Value>(&req.body).unwrap(),
            json!({"data":[{"type":"profile","id":"P1"}]})
        );
    }

    #[test]
    fn order_completed_fans_out_with_product_ids() {
        let c = call(
            9,
            CallKind::Track,
            json!({"type":"track","messageId":"ord-1","userId":"u1","event":"Order Completed",
                   "properties":{"orderId":"O1","revenue":30.5,"email":"a@b.co",
                     "products":[{"product_id":"P1","price":10},{"product_id":"P2","price":20.5}]}}),
        );
        let units = units("dst_K", &c, &DestinationSettings::default());
        assert_eq!(units.len(), 3);
        assert_eq!(
            units[0].message_id, "O1",
            "the order event is keyed by its orderId, as engage keys it"
        );
        assert_eq!(units[1].message_id, "O1_P1");
        assert_eq!(units[2].message_id, "O1_P2");
        assert_eq!(units[2].done, Some(Position { seq: 9, n: 0 }));
        assert!(units[..2].iter().all(|u| u.done.is_none()));
        let first = body(&units[0]);
        let event = &first["attributes"]["events"]["data"][0]["attributes"];
        assert_eq!(event["value"], 30.5);
        assert_eq!(event["unique_id"], "O1");
        assert_eq!(
            event["metric"]["data"]["attributes"]["name"],
            "Order Completed"
        );
        assert_eq!(run(&units, 1000), 3);
        let req = request("http://k/", &Secret::new("k"), &units);
        assert_eq!(req.url, "http://k/api/event-bulk-create-jobs");
        let job: Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(job["data"]["type"], "event-bulk-create-job");
        assert_eq!(
            job["data"]["attributes"]["events-bulk-create"]["data"]
                .as_array()
                .unwrap()
                .len(),
            3
        );
    }

    #[test]
    fn integrations_off_and_other_kinds_are_skipped() {
        let off = call(
            3,
            CallKind::Track,
            json!({"type":"track","messageId":"t","userId":"u","event":"E",
                   "integrations":{"Klaviyo":false}}),
        );
        let units = units("dst_K", &off, &DestinationSettings::default());
        assert!(matches!(units[0].body, UnitBody::Skip { .. }));
        let page = call(
            4,
            CallKind::Page,
            json!({"type":"page","messageId":"p","userId":"u"}),
        );
        assert!(matches!(
            super::units("dst_K", &page, &DestinationSettings::default())[0].body,
            UnitBody::Skip { .. }
        ));
    }

    #[test]
    fn headers_carry_the_key_revision_and_origin() {
        let req = request("http://k", &Secret::new("pk_abc"), &[]);
        let header = |name: &str| {
            req.headers
                .iter()
                .find(|(n, _)| n == name)
                .unwrap()
                .1
                .clone()
        };
        assert_eq!(header("Authorization"), "Klaviyo-API-Key pk_abc");
        assert_eq!(header("revision"), REVISION);
        assert_eq!(header("Accept"), "application/vnd.api+json");
        assert_eq!(header(ORIGIN_HEADER), "segment");
    }

    #[test]
    fn runs_group_events_but_not_imports() {
        let settings = DestinationSettings::default();
        let track = |seq| {
            call(
                seq,
                CallKind::Track,
                json!({"type":"track","messageId":format!("t{seq}"),"userId":"u","event":"E","properties":{"email":"a@b.co"}}),
            )
        };
        let identify = call(
            2,
            CallKind::Identify,
            json!({"type":"identify","messageId":"i","traits":{"email":"a@b.co"}}),
        );
        let mut all = Vec::new();
        all.extend(units("d", &track(1), &settings));
        all.extend(units("d", &identify, &settings));
        all.extend(units("d", &track(3), &settings));
        all.extend(units("d", &track(4), &settings));
        assert_eq!(run(&all, 1000), 1);
        assert_eq!(run(&all[1..], 1000), 1);
        assert_eq!(run(&all[2..], 1000), 2);
        assert_eq!(run(&all[2..], 1), 1);
    }
}
