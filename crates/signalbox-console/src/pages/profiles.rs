//! Profiles: a search by email, phone number or id (`/profiles?q=`), and a profile's page
//! (`/profiles/{id}`) with its properties, identifiers, merge history, consent, lists,
//! segments (with why it is in each) and a timeline of its events.
//!
//! Reads: `Engage::list_profiles` (exact lookups by one identifier, or the recently updated
//! page when nothing is searched), `Engage::profile_history`, `Engage::email_consent`,
//! `Engage::lists_of_profile` (the lists it is on, one read of its memberships),
//! `Engage::list_events` (a page of the profile's events, newest first), `Engage::get_metric`
//! for the metric names on that page, and `Audience::segments_of` and `Audience::why`.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::Html;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use signalbox_audience::AudienceError;
use signalbox_engage::{
    EventQuery, MetricId, OptInProcess, Profile, ProfileField, ProfileId, ProfileQuery,
    ProfileSort, ProfileSortField,
};

use super::metrics::{engage, engage_error};
use crate::auth::SignedIn;
use crate::error::{ConsoleError, ConsoleResult};
use crate::pages::Page;
use crate::Console;

pub(crate) const TEMPLATES: &[(&str, &str)] = &[
    (
        "profiles/index.html",
        include_str!("../../templates/profiles/index.html"),
    ),
    (
        "profiles/profile.html",
        include_str!("../../templates/profiles/profile.html"),
    ),
];

/// Profiles listed when nothing is searched.
const RECENT_PAGE: u32 = 25;
/// Events per page of a timeline.
const TIMELINE_PAGE: u32 = 25;
/// Lists a profile page shows (the first by list id; the page says how many there are).
const LISTS_SHOWN: u32 = 100;
/// Segments whose explanation a profile page shows.
const WHY_SHOWN: usize = 20;
/// The longest search text.
const MAX_QUERY: usize = 320;

pub(crate) fn routes() -> axum::Router<Console> {
    axum::Router::new()
        .route("/profiles", get(index))
        .route("/profiles/{id}", get(profile))
}

#[derive(Deserialize)]
struct IndexParams {
    q: Option<String>,
    cursor: Option<String>,
}

#[derive(Serialize)]
struct ProfileLine {
    id: String,
    email: Option<String>,
    phone_number: Option<String>,
    external_id: Option<String>,
    name: String,
    updated: String,
}

impl ProfileLine {
    fn new(p: Profile) -> ProfileLine {
        ProfileLine {
            name: full_name(&p),
            updated: p.updated.strftime("%Y-%m-%d %H:%M UTC").to_string(),
            id: p.id.0,
            email: p.email,
            phone_number: p.phone_number,
            external_id: p.external_id,
        }
    }
}

fn full_name(p: &Profile) -> String {
    [p.first_name.as_deref(), p.last_name.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Serialize)]
struct IndexData {
    q: String,
    /// What the search looked in, when something was searched.
    searched: Option<&'static str>,
    profiles: Vec<ProfileLine>,
    next_cursor: Option<String>,
    first_page: bool,
}

/// Which identifier a search text is: an email has an `@`, a phone number is digits (with an
/// optional `+` and separators), anything else is a profile id or an external id.
fn search_fields(q: &str) -> Vec<(ProfileField, String, &'static str)> {
    if q.contains('@') {
        return vec![(ProfileField::Email, q.to_owned(), "email")];
    }
    let digits: String = q.chars().filter(char::is_ascii_digit).collect();
    let phone_like = !digits.is_empty()
        && q.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '+' | ' ' | '-' | '(' | ')' | '.'));
    if phone_like {
        let normal = if q.trim_start().starts_with('+') {
            format!("+{digits}")
        } else {
            digits
        };
        // Digits alone may also be someone's external id (a numeric userId).
        return vec![
            (ProfileField::PhoneNumber, normal, "phone number"),
            (ProfileField::ExternalId, q.to_owned(), "external id"),
        ];
    }
    vec![
        (ProfileField::Id, q.to_owned(), "profile id"),
        (ProfileField::ExternalId, q.to_owned(), "external id"),
    ]
}

async fn index(
    State(console): State<Console>,
    signed_in: SignedIn,
    Query(params): Query<IndexParams>,
) -> ConsoleResult<Html<String>> {
    let engage = engage(&console)?;
    let q = params.q.unwrap_or_default().trim().to_owned();
    if q.chars().count() > MAX_QUERY {
        return Err(ConsoleError::Invalid {
            field: "q".into(),
            message: format!("must be at most {MAX_QUERY} characters"),
        });
    }
    let mut data = IndexData {
        q: q.clone(),
        searched: None,
        profiles: Vec::new(),
        next_cursor: None,
        first_page: params.cursor.is_none(),
    };
    if q.is_empty() {
        let page = engage
            .list_profiles(ProfileQuery {
                sort: ProfileSort {
                    field: ProfileSortField::Updated,
                    descending: true,
                },
                page_size: RECENT_PAGE,
                cursor: params.cursor.filter(|c| !c.is_empty()),
                ..ProfileQuery::default()
            })
            .await
            .map_err(engage_error)?;
        data.profiles = page.items.into_iter().map(ProfileLine::new).collect();
        data.next_cursor = page.next_cursor;
    } else {
        for (field, value, what) in search_fields(&q) {
            data.searched = Some(what);
            let page = engage
                .list_profiles(ProfileQuery {
                    any_of: vec![(field, vec![value])],
                    page_size: RECENT_PAGE,
                    ..ProfileQuery::default()
                })
                .await
                .map_err(engage_error)?;
            if !page.items.is_empty() {
                data.profiles = page.items.into_iter().map(ProfileLine::new).collect();
                break;
            }
        }
    }
    console.inner.templates.render(
        "profiles/index.html",
        Page::new(&signed_in, "profiles", data),
    )
}

#[derive(Deserialize)]
struct ProfileParams {
    cursor: Option<String>,
}

#[derive(Serialize)]
struct Field {
    name: String,
    value: String,
}

#[derive(Serialize)]
struct ListLine {
    id: String,
    name: String,
    status: &'static str,
    double_opt_in: bool,
    joined: String,
}

#[derive(Serialize)]
struct Reason {
    kind: String,
    matched: bool,
    observed: String,
}

#[derive(Serialize)]
struct SegmentLine {
    id: String,
    name: String,
    joined: Option<String>,
    why: Vec<Reason>,
}

#[derive(Serialize)]
struct TimelineLine {
    time: String,
    metric_id: String,
    metric: String,
    value: Option<f64>,
    properties: String,
}

#[derive(Serialize)]
struct HistoryLine {
    at: String,
    action: String,
    what: String,
}

#[derive(Serialize)]
struct ProfileData {
    id: String,
    title: String,
    attributes: Vec<Field>,
    properties: Vec<Field>,
    identifiers: Vec<Field>,
    merged_ids: Vec<String>,
    history: Vec<HistoryLine>,
    origins: Vec<Field>,
    consent: Vec<Field>,
    lists: Vec<ListLine>,
    /// Every list the profile is on; only the first [`LISTS_SHOWN`] are in `lists`.
    lists_total: u64,
    more_lists: bool,
    /// `None` when the audience engine is not running.
    segments: Option<Vec<SegmentLine>>,
    timeline: Vec<TimelineLine>,
    next_cursor: Option<String>,
    first_page: bool,
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn attributes(p: &Profile) -> Vec<Field> {
    let location = &p.location;
    let pairs: [(&str, Option<String>); 16] = [
        ("Email", p.email.clone()),
        ("Phone number", p.phone_number.clone()),
        ("External id", p.external_id.clone()),
        ("Anonymous id", p.anonymous_id.clone()),
        ("First name", p.first_name.clone()),
        ("Last name", p.last_name.clone()),
        ("Organization", p.organization.clone()),
        ("Title", p.title.clone()),
        ("Locale", p.locale.clone()),
        ("City", location.city.clone()),
        ("Region", location.region.clone()),
        ("Country", location.country.clone()),
        ("Timezone", location.timezone.clone()),
        (
            "Created",
            Some(p.created.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()),
        ),
        (
            "Updated",
            Some(p.updated.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()),
        ),
        (
            "Last event",
            p.last_event_date
                .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()),
        ),
    ];
    pairs
        .into_iter()
        .filter_map(|(name, value)| {
            value.map(|value| Field {
                name: name.into(),
                value,
            })
        })
        .collect()
}

async fn profile(
    State(console): State<Console>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    Query(params): Query<ProfileParams>,
) -> ConsoleResult<Html<String>> {
    let engage = engage(&console)?;
    let history = engage
        .profile_history(&ProfileId(id))
        .await
        .map_err(engage_error)?;
    let p = &history.profile;
    let id = p.id.clone();

    let consent = engage.email_consent(&id).await.map_err(engage_error)?;
    let mut consent_fields = vec![Field {
        name: "Email marketing".into(),
        value: consent.consent.as_str().to_owned(),
    }];
    if let Some(at) = consent.consent_timestamp {
        consent_fields.push(Field {
            name: "Changed".into(),
            value: at.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
        });
    }
    if let Some(method) = &consent.method {
        consent_fields.push(Field {
            name: "Method".into(),
            value: method.clone(),
        });
    }
    if let Some(double) = consent.double_optin {
        consent_fields.push(Field {
            name: "Double opt-in".into(),
            value: if double { "yes" } else { "no" }.into(),
        });
    }
    for suppression in &consent.suppressions {
        consent_fields.push(Field {
            name: "Suppressed".into(),
            value: format!(
                "{} since {}",
                suppression.reason.as_str(),
                suppression.timestamp.strftime("%Y-%m-%d")
            ),
        });
    }
    consent_fields.push(Field {
        name: "Can receive email marketing".into(),
        value: if consent.can_receive_email_marketing {
            "yes"
        } else {
            "no"
        }
        .into(),
    });

    let memberships = engage
        .lists_of_profile(&id, LISTS_SHOWN)
        .await
        .map_err(engage_error)?;
    let mut lists: Vec<ListLine> = memberships
        .items
        .into_iter()
        .map(|m| ListLine {
            id: m.list_id.0,
            name: m.name,
            status: m.status.as_str(),
            double_opt_in: m.opt_in_process == OptInProcess::DoubleOptIn,
            joined: m.joined.strftime("%Y-%m-%d %H:%M UTC").to_string(),
        })
        .collect();
    lists.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
    let lists_total = memberships.total;

    let audience = &console.engine()?.audience;
    let found = audience.segments_of(&id).await.map_err(audience_error)?;
    let mut lines = Vec::with_capacity(found.len());
    for (i, segment) in found.into_iter().enumerate() {
        let (joined, why) = if i < WHY_SHOWN {
            match audience.why(&segment.id, &id).await {
                Ok(why) => (
                    why.joined
                        .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string()),
                    why.conditions
                        .into_iter()
                        .map(|c| Reason {
                            kind: c.kind,
                            matched: c.matched,
                            observed: c.observed,
                        })
                        .collect(),
                ),
                Err(AudienceError::NotFound { .. }) => (None, Vec::new()),
                Err(err) => return Err(audience_error(err)),
            }
        } else {
            (None, Vec::new())
        };
        lines.push(SegmentLine {
            id: segment.id,
            name: segment.name,
            joined,
            why,
        });
    }
    let segments = Some(lines);

    let first_page = params.cursor.is_none();
    let events = engage
        .list_events(EventQuery {
            profile_id: Some(id.clone()),
            newest_first: true,
            page_size: TIMELINE_PAGE,
            cursor: params.cursor.filter(|c| !c.is_empty()),
            ..EventQuery::default()
        })
        .await
        .map_err(engage_error)?;
    let mut metric_names: HashMap<MetricId, String> = HashMap::new();
    let mut timeline = Vec::with_capacity(events.items.len());
    for event in events.items {
        let metric = match metric_names.get(&event.metric_id) {
            Some(name) => name.clone(),
            None => {
                let name = engage
                    .get_metric(&event.metric_id)
                    .await
                    .map(|m| m.name)
                    .unwrap_or_else(|_| event.metric_id.0.clone());
                metric_names.insert(event.metric_id.clone(), name.clone());
                name
            }
        };
        timeline.push(TimelineLine {
            time: event.time.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
            metric_id: event.metric_id.0,
            metric,
            value: event.value,
            properties: if event.properties.is_empty() {
                String::new()
            } else {
                serde_json::to_string_pretty(&Value::Object(event.properties)).unwrap_or_default()
            },
        });
    }

    let title = p
        .email
        .clone()
        .or_else(|| p.phone_number.clone())
        .or_else(|| p.external_id.clone())
        .unwrap_or_else(|| p.id.0.clone());
    let data = ProfileData {
        id: p.id.0.clone(),
        title,
        attributes: attributes(p),
        properties: p
            .properties
            .iter()
            .map(|(name, value)| Field {
                name: name.clone(),
                value: text(value),
            })
            .collect(),
        identifiers: history
            .identifiers
            .iter()
            .map(|(kind, value)| Field {
                name: kind.clone(),
                value: value.clone(),
            })
            .collect(),
        merged_ids: history.merged_ids.iter().map(|m| m.0.clone()).collect(),
        history: history
            .links
            .iter()
            .map(|link| HistoryLine {
                at: link.at.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
                action: link.action.clone(),
                what: [
                    link.kind.as_deref(),
                    link.value.as_deref(),
                    link.detail.as_deref(),
                ]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" "),
            })
            .collect(),
        origins: history
            .origins
            .iter()
            .map(|o| Field {
                name: match &o.source {
                    Some(source) => format!("{} ({source})", o.integration),
                    None => o.integration.clone(),
                },
                value: [
                    o.external_id.as_ref().map(|v| format!("userId {v}")),
                    o.anonymous_id.as_ref().map(|v| format!("anonymousId {v}")),
                ]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(", "),
            })
            .collect(),
        consent: consent_fields,
        more_lists: lists_total > lists.len() as u64,
        lists,
        lists_total,
        segments,
        timeline,
        next_cursor: events.next_cursor,
        first_page,
    };
    console.inner.templates.render(
        "profiles/profile.html",
        Page::new(&signed_in, "profiles", data),
    )
}

pub(crate) fn audience_error(err: AudienceError) -> ConsoleError {
    match err {
        AudienceError::NotFound { what } => ConsoleError::NotFound(what),
        AudienceError::Unavailable => ConsoleError::Unavailable("the segments engine"),
        AudienceError::Engage(err) => engage_error(err),
        other => ConsoleError::internal(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(q: &str) -> Vec<(ProfileField, String)> {
        search_fields(q)
            .into_iter()
            .map(|(field, value, _)| (field, value))
            .collect()
    }

    #[test]
    fn a_search_looks_in_the_identifier_it_resembles() {
        assert_eq!(
            fields("Ada@Example.com"),
            vec![(ProfileField::Email, "Ada@Example.com".into())]
        );
        assert_eq!(
            fields("+1 (555) 010-2030"),
            vec![
                (ProfileField::PhoneNumber, "+15550102030".into()),
                (ProfileField::ExternalId, "+1 (555) 010-2030".into())
            ]
        );
        assert_eq!(
            fields("01HZX"),
            vec![
                (ProfileField::Id, "01HZX".into()),
                (ProfileField::ExternalId, "01HZX".into())
            ]
        );
    }
}
