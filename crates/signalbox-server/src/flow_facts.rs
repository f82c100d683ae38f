//! A profile's facts for flow filters and splits ([`signalbox_seglang::ProfileFacts`]), read
//! through engage's public queries: the profile's fields and custom properties, and its
//! events (newest first, at most [`MAX_EVENTS`]).
//!
//! Lists and segments are not known here (the flows engine's list and segment adapters bring
//! them), so list and segment conditions are false. Email consent is engage's record (a
//! profile that never subscribed may receive flow emails, as in Klaviyo), made stricter by
//! the profile's built-in `Unsubscribed`/`Bounced Email` events.

use std::collections::HashMap;
use std::path::Path;

use jiff::Timestamp;
use serde_json::{Map, Value};
use signalbox_engage::{
    feed, BuiltinMetric, ConsentStatus as EngageConsent, EmailConsent, Engage, EngageError,
    EventQuery, Profile, ProfileId, SuppressionReason as EngageReason,
};
use signalbox_seglang::ast::{BuiltIn, LocationField};
use signalbox_seglang::{
    event_matches, ConsentStatus, ConsentView, EventFilter, ProfileFacts, PropertyPath,
    Suppression, SuppressionReason, TimeWindow,
};

/// Events read per profile at most (the newest).
pub const MAX_EVENTS: usize = 10_000;

/// One event as filters see it.
#[derive(Debug, Clone)]
struct FactEvent {
    metric_id: String,
    metric_name: String,
    integration: String,
    time: Timestamp,
    value: Option<f64>,
    properties: Map<String, Value>,
}

/// One profile's facts, read once.
#[derive(Debug, Clone)]
pub struct ProfileSnapshot {
    pub profile: Profile,
    properties: HashMap<String, Value>,
    events: Vec<FactEvent>,
    consent: ConsentView,
}

impl ProfileSnapshot {
    /// Reads the profile with key `profile_pk` (following merges) and its events; `None` when
    /// there is no such profile.
    pub async fn load(
        engage: &Engage,
        profile_pk: i64,
    ) -> Result<Option<ProfileSnapshot>, EngageError> {
        let path = engage.path().to_path_buf();
        let id = tokio::task::spawn_blocking(move || profile_id(&path, profile_pk))
            .await
            .map_err(|e| EngageError::Internal(e.to_string()))??;
        let Some(id) = id else {
            return Ok(None);
        };
        ProfileSnapshot::load_by_id(engage, &id).await
    }

    pub async fn load_by_id(
        engage: &Engage,
        id: &ProfileId,
    ) -> Result<Option<ProfileSnapshot>, EngageError> {
        let profile = match engage.get_profile(id).await {
            Ok(profile) => profile,
            Err(EngageError::NotFound { .. }) => return Ok(None),
            Err(err) => return Err(err),
        };
        let metrics = engage
            .list_metrics(signalbox_engage::MetricQuery {
                page_size: 1000,
                ..Default::default()
            })
            .await?
            .items;
        let by_id: HashMap<String, (String, String)> = metrics
            .into_iter()
            .map(|m| (m.id.to_string(), (m.name, m.integration.name)))
            .collect();
        let mut events = Vec::new();
        let mut cursor = None;
        loop {
            let page = engage
                .list_events(EventQuery {
                    profile_id: Some(profile.id.clone()),
                    newest_first: true,
                    page_size: 1000,
                    cursor,
                    ..EventQuery::default()
                })
                .await?;
            for event in page.items {
                let (metric_name, integration) = by_id
                    .get(&event.metric_id.to_string())
                    .cloned()
                    .unwrap_or_default();
                events.push(FactEvent {
                    metric_id: event.metric_id.to_string(),
                    metric_name,
                    integration,
                    time: event.time,
                    value: event.value,
                    properties: event.properties,
                });
            }
            match page.next_cursor {
                Some(next) if events.len() < MAX_EVENTS => cursor = Some(next),
                _ => break,
            }
        }
        let recorded = engage.email_consent(&profile.id).await?;
        let consent = consent_from(&recorded, &events);
        Ok(Some(ProfileSnapshot {
            properties: properties_of(&profile),
            profile,
            events,
            consent,
        }))
    }

    fn matching<'a>(
        &'a self,
        metric_id: &'a str,
        window: TimeWindow,
        filters: &'a [EventFilter],
    ) -> impl Iterator<Item = &'a FactEvent> + 'a {
        self.events.iter().filter(move |e| {
            e.metric_id == metric_id
                && window.contains(e.time)
                && event_matches(filters, &e.properties)
        })
    }
}

impl ProfileFacts for ProfileSnapshot {
    fn metric_count(&self, metric_id: &str, window: TimeWindow, filters: &[EventFilter]) -> u64 {
        self.matching(metric_id, window, filters).count() as u64
    }

    fn metric_sum(&self, metric_id: &str, window: TimeWindow, filters: &[EventFilter]) -> f64 {
        self.matching(metric_id, window, filters)
            .filter_map(|e| e.value)
            .sum()
    }

    fn metric_event_times(
        &self,
        metric_id: &str,
        window: TimeWindow,
        filters: &[EventFilter],
    ) -> Vec<Timestamp> {
        self.matching(metric_id, window, filters)
            .map(|e| e.time)
            .collect()
    }

    fn property(&self, path: &PropertyPath) -> Option<&Value> {
        self.properties
            .get(&path.to_wire())
            .filter(|value| !value.is_null())
    }

    fn is_member(&self, _group_id: &str) -> bool {
        false
    }

    fn email_consent(&self) -> ConsentView {
        self.consent.clone()
    }
}

fn profile_id(path: &Path, pk: i64) -> Result<Option<ProfileId>, EngageError> {
    let conn = feed::open_reader(path)?;
    feed::profile_id(&conn, pk)
}

fn properties_of(profile: &Profile) -> HashMap<String, Value> {
    let mut out = HashMap::new();
    let text = |v: &Option<String>| v.clone().map(Value::String);
    let builtins = [
        (BuiltIn::Email, text(&profile.email)),
        (BuiltIn::PhoneNumber, text(&profile.phone_number)),
        (BuiltIn::ExternalId, text(&profile.external_id)),
        (BuiltIn::FirstName, text(&profile.first_name)),
        (BuiltIn::LastName, text(&profile.last_name)),
        (BuiltIn::Organization, text(&profile.organization)),
        (BuiltIn::Title, text(&profile.title)),
        (BuiltIn::Image, text(&profile.image)),
        (BuiltIn::Locale, text(&profile.locale)),
        (
            BuiltIn::Created,
            Some(Value::String(profile.created.to_string())),
        ),
        (
            BuiltIn::Updated,
            Some(Value::String(profile.updated.to_string())),
        ),
        (
            BuiltIn::LastEventDate,
            profile
                .last_event_date
                .map(|t| Value::String(t.to_string())),
        ),
    ];
    for (field, value) in builtins {
        if let Some(value) = value {
            out.insert(PropertyPath::BuiltIn(field).to_wire(), value);
        }
    }
    let location = &profile.location;
    let number = |v: Option<f64>| v.and_then(serde_json::Number::from_f64).map(Value::Number);
    let locations = [
        (LocationField::Address1, text(&location.address1)),
        (LocationField::Address2, text(&location.address2)),
        (LocationField::City, text(&location.city)),
        (LocationField::Country, text(&location.country)),
        (LocationField::Region, text(&location.region)),
        (LocationField::Zip, text(&location.zip)),
        (LocationField::Timezone, text(&location.timezone)),
        (LocationField::Ip, text(&location.ip)),
        (LocationField::Latitude, number(location.latitude)),
        (LocationField::Longitude, number(location.longitude)),
    ];
    for (field, value) in locations {
        if let Some(value) = value {
            out.insert(PropertyPath::Location(field).to_wire(), value);
        }
    }
    for (key, value) in &profile.properties {
        out.insert(PropertyPath::Custom(key.clone()).to_wire(), value.clone());
    }
    out
}

/// Never subscribed and emailable, unless a built-in `Unsubscribed` or `Bounced Email` event
/// says otherwise.
fn consent_from(recorded: &EmailConsent, events: &[FactEvent]) -> ConsentView {
    let mut consent = ConsentView {
        status: match recorded.consent {
            EngageConsent::Subscribed => ConsentStatus::Subscribed,
            EngageConsent::Unsubscribed => ConsentStatus::Unsubscribed,
            EngageConsent::NeverSubscribed => ConsentStatus::NeverSubscribed,
        },
        can_receive_marketing: recorded.can_receive_email_marketing,
        status_date: recorded.consent_timestamp,
        method: recorded.method.clone(),
        method_detail: recorded.method_detail.clone(),
        custom_source: recorded.custom_source.clone(),
        double_opt_in: recorded.double_optin,
        suppressions: recorded
            .suppressions
            .iter()
            .map(|s| Suppression {
                reason: match s.reason {
                    EngageReason::HardBounce => SuppressionReason::HardBounce,
                    EngageReason::InvalidEmail => SuppressionReason::InvalidEmail,
                    EngageReason::SpamComplaint => SuppressionReason::SpamComplaint,
                    EngageReason::Unsubscribe => SuppressionReason::Unsubscribe,
                    EngageReason::UserSuppressed => SuppressionReason::UserSuppressed,
                },
                timestamp: s.timestamp,
            })
            .collect(),
    };
    // A bounce recorded by the mailer suppresses too, and an unsubscribe seen as an event
    // counts even before its consent record (the stricter of the two wins).
    let signalbox = BuiltinMetric::integration().name;
    for event in events.iter().rev() {
        if event.integration != signalbox {
            continue;
        }
        if event.metric_name == BuiltinMetric::Unsubscribed.name()
            && consent.status_date.is_none_or(|at| at <= event.time)
        {
            consent.status = ConsentStatus::Unsubscribed;
            consent.status_date = Some(event.time);
            consent.can_receive_marketing = false;
        } else if event.metric_name == BuiltinMetric::BouncedEmail.name() {
            consent.suppressions.push(Suppression {
                reason: SuppressionReason::HardBounce,
                timestamp: event.time,
            });
            consent.can_receive_marketing = false;
        }
    }
    consent
}
