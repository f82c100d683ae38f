//! The outbox rows the applier writes (see [`crate::outbox`]): one per change made in
//! Signalbox to a profile, in the entry's transaction, keyed by (entry, index in it).
//!
//! A change whose entry came from Segment (a Segment call, a held one released, or an API
//! write forwarded from Segment) makes no row: it marks the profile `from_segment` instead,
//! which dirties the profile row only the first time.

use serde_json::{Map, Value};

use super::builtin::BuiltinMetric;
use super::profile::ProfileRow;
use super::store::{ApplyTx, NewOutboxRow};
use super::Batch;
use crate::error::EngageResult;
use crate::ids;
use crate::model::{Origin, ProfileInput};
use crate::outbox::{EmailEvent, OutboxChange, WriteOrigin};

impl<T: ApplyTx> Batch<'_, T> {
    /// Whether the entry being applied came from a Segment source.
    pub(super) fn entry_from_segment(&self) -> bool {
        self.entry.origin == WriteOrigin::Segment
    }

    /// Records that a Segment source touched the profile, with the `userId` it gave.
    pub(super) fn mark_from_segment(&mut self, pk: i64, user_id: Option<&str>) -> EngageResult<()> {
        self.profile(pk)?.mark_from_segment(user_id);
        Ok(())
    }

    /// Records a change made to profile `pk` for the reverse sync, at `at_us` (the entry's
    /// receipt time when `None`). A change that came from Segment marks the profile instead.
    pub(super) fn outbox(
        &mut self,
        pk: i64,
        at_us: Option<i64>,
        change: OutboxChange,
    ) -> EngageResult<()> {
        if self.entry_from_segment() {
            return self.mark_from_segment(pk, None);
        }
        let (seq, n) = match self.outbox_at_checkpoint {
            Some(checkpoint) => {
                let next = self.tx.next_outbox_n(checkpoint)?;
                (checkpoint, next)
            }
            None => {
                self.entry.outbox_n += 1;
                (self.entry.seq, self.entry.outbox_n - 1)
            }
        };
        let at_us = at_us.unwrap_or(self.entry.received_us);
        let change = serde_json::to_string(&change).expect("an outbox change serialises");
        self.profile(pk)?;
        let row = &self.caches.profiles[&pk];
        self.tx.insert_outbox(&NewOutboxRow {
            seq,
            n,
            at_us,
            profile_id: &row.id,
            email: row.email.as_deref(),
            user_id: row.segment_user_id.as_deref(),
            anonymous_id: row.anonymous_id.as_deref(),
            from_segment: row.from_segment,
            change: &change,
        })?;
        self.count("outbox.rows", 1);
        Ok(())
    }

    /// The fields a profile write set, as Segment traits (see [`crate::outbox`]); no row
    /// when it set none. `with_properties` is false when its custom properties were refused.
    pub(super) fn outbox_traits(
        &mut self,
        pk: i64,
        input: &ProfileInput,
        with_properties: bool,
    ) -> EngageResult<()> {
        if self.entry_from_segment() {
            return self.mark_from_segment(pk, None);
        }
        let traits = segment_traits(input, self.profile(pk)?, with_properties);
        if traits.is_empty() {
            return Ok(());
        }
        self.outbox(pk, None, OutboxChange::Traits { traits })
    }

    /// A built-in email event stored on `pk` (`Unsubscribed` included), at `time_us`.
    pub(super) fn outbox_email(
        &mut self,
        pk: i64,
        metric: BuiltinMetric,
        time_us: i64,
        properties: &Map<String, Value>,
    ) -> EngageResult<()> {
        if self.entry_from_segment() {
            return self.mark_from_segment(pk, None);
        }
        let mut event = email_event(metric, properties);
        if event.subject.is_none() || event.flow_id.is_none() {
            if let Some(message) = event.message_id.clone() {
                self.fill_from_received(pk, &message, &mut event)?;
            }
        }
        self.outbox(pk, Some(time_us), OutboxChange::Email(event))
    }

    /// Opens, clicks and unsubscribes carry only the send's id: the subject, flow and
    /// campaign come from that send's `Received Email` on the same profile (recorded under
    /// the unique id `Received Email:{send id}`).
    fn fill_from_received(
        &mut self,
        pk: i64,
        message: &str,
        event: &mut EmailEvent,
    ) -> EngageResult<()> {
        let received = BuiltinMetric::ReceivedEmail;
        let metric = self.tx.find_metric(Origin::SIGNALBOX, received.name())?;
        let Some(metric) = metric else {
            return Ok(());
        };
        let hash = ids::unique_hash(&format!("{}:{message}", received.name()));
        let properties = self.tx.event_properties(pk, metric, hash)?;
        let Some(Ok(Value::Object(properties))) =
            properties.map(|text| serde_json::from_str::<Value>(&text))
        else {
            return Ok(());
        };
        let sent = email_event(received, &properties);
        for (slot, value) in [
            (&mut event.subject, sent.subject),
            (&mut event.flow_id, sent.flow_id),
            (&mut event.flow_name, sent.flow_name),
            (&mut event.campaign_id, sent.campaign_id),
            (&mut event.campaign_name, sent.campaign_name),
        ] {
            if slot.is_none() {
                *slot = value;
            }
        }
        Ok(())
    }
}

/// A text property under the first of `keys` that has one.
fn text(properties: &Map<String, Value>, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|key| match properties.get(*key)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

/// The Email spec's fields of a built-in event, from its properties. The send's id is
/// `$message_id` where the event has one (`Received`/`Bounced Email` name the flow action
/// in `$message`), else `$message` (opens and clicks name the send there).
pub(crate) fn email_event(metric: BuiltinMetric, properties: &Map<String, Value>) -> EmailEvent {
    EmailEvent {
        metric,
        message_id: text(properties, &["$message_id", "$message"]),
        subject: text(properties, &["Subject", "$subject", "subject"]),
        flow_id: text(properties, &["$flow", "$flow_id", "flow_id"]),
        flow_name: text(properties, &["$flow_name", "Flow Name", "flow_name"]),
        campaign_id: text(properties, &["$campaign", "$campaign_id", "campaign_id"]),
        campaign_name: text(
            properties,
            &["$campaign_name", "Campaign Name", "campaign_name"],
        ),
        url: text(properties, &["URL", "url"]),
        list_id: text(properties, &["list_id", "$list", "List ID"]),
        properties: properties.clone(),
    }
}

/// A profile write's fields under Segment's trait names; a field it cleared is `null`.
/// The address's `street` is the profile's `address1` and `address2` after the write.
fn segment_traits(
    input: &ProfileInput,
    row: &mut ProfileRow,
    with_properties: bool,
) -> Map<String, Value> {
    let mut traits = Map::new();
    if with_properties {
        for (key, value) in &input.properties {
            traits.insert(key.clone(), value.clone());
        }
    }
    let mut address = Map::new();
    let mut address_cleared = false;
    let mut street_touched = input.location.address1.is_some() || input.location.address2.is_some();
    for name in &input.unset {
        let (key, in_address) = match name.as_str() {
            "first_name" => ("firstName", false),
            "last_name" => ("lastName", false),
            "organization" => ("company", false),
            "title" => ("title", false),
            "image" => ("avatar", false),
            "location" => {
                address_cleared = true;
                continue;
            }
            "location.address1" | "location.address2" => {
                street_touched = true;
                continue;
            }
            "location.city" => ("city", true),
            "location.region" => ("state", true),
            "location.zip" => ("postalCode", true),
            "location.country" => ("country", true),
            // Not Segment traits: locale, timezone, ip, coordinates.
            "locale" | "location.timezone" | "location.ip" | "location.latitude"
            | "location.longitude" => continue,
            custom if with_properties => (custom, false),
            _ => continue,
        };
        if in_address {
            address.insert(key.to_owned(), Value::Null);
        } else {
            traits.insert(key.to_owned(), Value::Null);
        }
    }
    let set = |traits: &mut Map<String, Value>, key: &str, value: &Option<String>| {
        if let Some(value) = value {
            traits.insert(key.to_owned(), Value::String(value.clone()));
        }
    };
    set(&mut traits, "email", &input.email);
    set(&mut traits, "phone", &input.phone_number);
    set(&mut traits, "firstName", &input.first_name);
    set(&mut traits, "lastName", &input.last_name);
    set(&mut traits, "title", &input.title);
    set(&mut traits, "avatar", &input.image);
    if let Some(name) = &input.organization {
        let mut company = Map::new();
        company.insert("name".into(), Value::String(name.clone()));
        traits.insert("company".into(), Value::Object(company));
    }
    let location = &input.location;
    set(&mut address, "city", &location.city);
    set(&mut address, "state", &location.region);
    set(&mut address, "postalCode", &location.zip);
    set(&mut address, "country", &location.country);
    if street_touched {
        let now = &row.data().location;
        let lines: Vec<&str> = [&now.address1, &now.address2]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        let street = if lines.is_empty() {
            Value::Null
        } else {
            Value::String(lines.join("\n"))
        };
        address.insert("street".into(), street);
    }
    if !address.is_empty() {
        traits.insert("address".into(), Value::Object(address));
    } else if address_cleared {
        traits.insert("address".into(), Value::Null);
    }
    traits
}
