//! Subscription and suppression jobs: `POST /api/profile-subscription-bulk-create-jobs`,
//! `…-subscription-bulk-delete-jobs`, `…-suppression-bulk-create-jobs` and
//! `…-suppression-bulk-delete-jobs`. Each answers 202 once applied: subscription jobs without
//! a body, suppression jobs with the job resource (status `complete`), as Klaviyo does.
//!
//! Profiles are named by email (`data.attributes.profiles.data[].attributes.email`); only
//! email marketing is handled, so an `sms` subscription is a 400 naming it. A suppression job
//! may name a list or a segment instead: its members are suppressed (or lifted) one by one.
//!
//! Every suppression is global, as Klaviyo's jobs are: suppressing "all members of list X"
//! suppresses each member for every list, and an unsubscribe job that names a list
//! unsubscribes globally and takes the profile off that list.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use signalbox_audience::Audience;
use signalbox_core::Email;
use signalbox_engage::{
    ListId, ProfileId, SubscribeRequest, SuppressTarget, SuppressionReason, UnsubscribeRequest,
};

use super::auth::Caller;
use super::engine;
use super::error::ApiError;
use super::jsonapi::{datetime, operation_document, BaseUrl, JsonApi, Obj, Patch, Resource};
use super::origin::RequestOrigin;
use super::scopes::{
    ListsProfilesSubscriptionsWrite, ProfilesSubscriptionsWrite, SubscriptionsWrite,
};
use super::Body;
use crate::app::AppState;

const MAX_SUBSCRIBE: usize = 1000;
const MAX_UNSUBSCRIBE: usize = 100;
const MAX_SUPPRESS: usize = 100;

/// The job's `data` and `data.attributes`.
fn job<'a>(
    root: &Obj<'a>,
    kind: &str,
    attributes: &[&str],
) -> Result<(Obj<'a>, Obj<'a>), ApiError> {
    root.only(&["data"])?;
    let data = root.required_object("data")?;
    data.only(&["type", "attributes", "relationships"])?;
    data.expect_type(kind)?;
    let attrs = data.required_object("attributes")?;
    attrs.only(attributes)?;
    Ok((data, attrs))
}

/// What a job's `relationships` name.
enum Related {
    List(ListId),
    Segment(String),
}

/// `relationships.list.data.id` (or, where `allow_segment`, `relationships.segment.data.id`),
/// if given.
fn related(data: &Obj<'_>, allow_segment: bool) -> Result<Option<Related>, ApiError> {
    let Some(relationships) = data.object("relationships")? else {
        return Ok(None);
    };
    if allow_segment {
        relationships.only(&["list", "segment"])?;
    } else {
        relationships.only(&["list"])?;
    }
    let mut found = None;
    for kind in ["list", "segment"] {
        let Some(related) = relationships.object(kind)? else {
            continue;
        };
        if found.is_some() {
            return Err(ApiError::invalid_at(
                relationships.pointer(kind),
                "name a list or a segment, not both",
            ));
        }
        related.only(&["data"])?;
        let linkage = related.required_object("data")?;
        linkage.only(&["type", "id"])?;
        linkage.expect_type(kind)?;
        let id = linkage.required_string("id")?;
        found = Some(match kind {
            "list" => Related::List(ListId(id)),
            _ => Related::Segment(id),
        });
    }
    Ok(found)
}

/// `relationships.list.data.id`, if given.
fn related_list(data: &Obj<'_>) -> Result<Option<ListId>, ApiError> {
    Ok(match related(data, false)? {
        Some(Related::List(list)) => Some(list),
        _ => None,
    })
}

/// The emails of `attributes.profiles.data[]`, with each profile's email marketing consent
/// checked against `consent` (when the profile gives one).
fn emails(
    attributes: &Obj<'_>,
    max: usize,
    consent: Option<&str>,
    consented_at: &mut Option<jiff::Timestamp>,
) -> Result<Vec<Email>, ApiError> {
    let profiles = attributes.required_object("profiles")?;
    profiles.only(&["data"])?;
    let items = profiles.array("data")?.map(Vec::as_slice).unwrap_or(&[]);
    if items.is_empty() {
        return Err(ApiError::invalid_at(
            profiles.pointer("data"),
            "name at least one profile",
        ));
    }
    if items.len() > max {
        return Err(ApiError::invalid_at(
            profiles.pointer("data"),
            format!("at most {max} profiles per job"),
        ));
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let profile = profiles.element("data", i, item)?;
        profile.only(&["type", "id", "attributes"])?;
        profile.expect_type("profile")?;
        let attrs = profile.required_object("attributes")?;
        attrs.only(&["email", "phone_number", "subscriptions"])?;
        if let Patch::Set(_) = attrs.string("phone_number")? {
            return Err(ApiError::invalid_at(
                attrs.pointer("phone_number"),
                "SMS consent is not supported; name profiles by email",
            ));
        }
        let email = match attrs.string("email")? {
            Patch::Set(email) => Email::parse(&email).map_err(|err| {
                ApiError::invalid_at(attrs.pointer("email"), format!("'email' {err}"))
            })?,
            _ => {
                return Err(ApiError::invalid_at(
                    attrs.pointer("email"),
                    "'email' must be an email address",
                ))
            }
        };
        if let Some(subscriptions) = attrs.object("subscriptions")? {
            subscriptions.only(&["email"])?;
            if let Some(channel) = subscriptions.object("email")? {
                channel.only(&["marketing"])?;
                if let Some(marketing) = channel.object("marketing")? {
                    marketing.only(&["consent", "consented_at"])?;
                    if let (Some(wanted), Patch::Set(given)) =
                        (consent, marketing.string("consent")?)
                    {
                        if given != wanted {
                            return Err(ApiError::invalid_at(
                                marketing.pointer("consent"),
                                format!("'consent' must be '{wanted}' in this job"),
                            ));
                        }
                    }
                    if let Some(at) = marketing.datetime("consented_at")? {
                        *consented_at = Some(at);
                    }
                }
            }
        }
        out.push(email);
    }
    Ok(out)
}

fn accepted() -> Response {
    StatusCode::ACCEPTED.into_response()
}

/// `POST /api/profile-subscription-bulk-create-jobs`.
#[tracing::instrument(skip_all, fields(key = %caller.key_name))]
pub async fn subscribe(
    caller: Caller<ListsProfilesSubscriptionsWrite>,
    origin: RequestOrigin,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let root = Obj::root(&body)?;
    let (data, attributes) = job(
        &root,
        "profile-subscription-bulk-create-job",
        &["custom_source", "profiles", "historical_import"],
    )?;
    let historical_import = attributes.boolean("historical_import")?.unwrap_or(false);
    let mut consented_at = None;
    let emails = emails(
        &attributes,
        MAX_SUBSCRIBE,
        Some("SUBSCRIBED"),
        &mut consented_at,
    )?;
    if historical_import {
        match consented_at {
            Some(at) if at <= caller.clock.now() => {}
            _ => {
                return Err(ApiError::invalid_at(
                    attributes.pointer("historical_import"),
                    "a historical import needs each profile's consented_at, in the past",
                ))
            }
        }
    }
    let list_id = related_list(&data)?;
    origin
        .engage(&caller.engage)
        .subscribe(SubscribeRequest {
            list_id,
            emails,
            custom_source: attributes.string("custom_source")?.into_option(),
            historical_import,
            consented_at,
        })
        .await?;
    Ok(accepted())
}

/// `POST /api/profile-subscription-bulk-delete-jobs`.
#[tracing::instrument(skip_all, fields(key = %caller.key_name))]
pub async fn unsubscribe(
    caller: Caller<ListsProfilesSubscriptionsWrite>,
    origin: RequestOrigin,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let root = Obj::root(&body)?;
    let (data, attributes) = job(&root, "profile-subscription-bulk-delete-job", &["profiles"])?;
    let emails = emails(
        &attributes,
        MAX_UNSUBSCRIBE,
        Some("UNSUBSCRIBED"),
        &mut None,
    )?;
    let list_id = related_list(&data)?;
    origin
        .engage(&caller.engage)
        .unsubscribe(UnsubscribeRequest { list_id, emails })
        .await?;
    Ok(accepted())
}

/// Emails, a list or a segment: exactly one. A segment's members are taken as the segment
/// engine holds them now, so the job (and a rebuild) names the same profiles.
async fn suppress_target(
    app: &AppState,
    data: &Obj<'_>,
    attributes: &Obj<'_>,
) -> Result<SuppressTarget, ApiError> {
    let related = related(data, true)?;
    match (attributes.map.contains_key("profiles"), related) {
        (true, None) => Ok(SuppressTarget::Emails(emails(
            attributes,
            MAX_SUPPRESS,
            None,
            &mut None,
        )?)),
        (false, Some(Related::List(list))) => Ok(SuppressTarget::List(list)),
        (false, Some(Related::Segment(id))) => {
            let audience = &engine(app)?.audience;
            Ok(SuppressTarget::Profiles(
                segment_members(audience, &id).await?,
            ))
        }
        (true, Some(_)) => Err(ApiError::invalid_at(
            data.pointer("relationships"),
            "name either profiles or a list or segment, not both",
        )),
        (false, None) => Err(ApiError::invalid_at(
            attributes.pointer("profiles"),
            "name profiles, or a list or segment in relationships",
        )),
    }
}

/// Every member of a segment, by profile id.
async fn segment_members(audience: &Audience, id: &str) -> Result<Vec<ProfileId>, ApiError> {
    const PAGE: usize = 1000;
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = audience.members(id, after, PAGE).await?;
        out.extend(
            page.members
                .into_iter()
                .map(|member| ProfileId(member.profile_id)),
        );
        match page.next_after_pk {
            Some(next) => after = Some(next),
            None => return Ok(out),
        }
    }
}

/// A finished suppression job, as Klaviyo describes one.
fn job_document<R>(
    caller: &Caller<R>,
    base: &BaseUrl,
    kind: &'static str,
    total: usize,
    done: u64,
) -> JsonApi {
    let id = uuid::Uuid::new_v4().to_string();
    let now = datetime(caller.clock.now());
    let total = total.max(done as usize);
    let mut attributes = serde_json::Map::new();
    attributes.insert("status".into(), "complete".into());
    attributes.insert("created_at".into(), now.clone().into());
    attributes.insert("total_count".into(), total.into());
    attributes.insert("completed_count".into(), total.into());
    attributes.insert("completed_at".into(), now.into());
    attributes.insert(
        "skipped_count".into(),
        (total as u64 - done.min(total as u64)).into(),
    );
    let resource = Resource {
        kind,
        self_link: base.link(&format!("{kind}s/{id}")),
        id,
        attributes,
        relationships: None,
    };
    operation_document(
        StatusCode::ACCEPTED,
        &resource,
        base.link(&format!("{kind}s")),
    )
}

fn target_size(target: &SuppressTarget) -> usize {
    match target {
        SuppressTarget::Emails(emails) => emails.len(),
        SuppressTarget::Profiles(profiles) => profiles.len(),
        SuppressTarget::List(_) => 0,
    }
}

/// `POST /api/profile-suppression-bulk-create-jobs`: `USER_SUPPRESSED`.
#[tracing::instrument(skip_all, fields(key = %caller.key_name))]
pub async fn suppress(
    caller: Caller<ProfilesSubscriptionsWrite>,
    State(app): State<AppState>,
    origin: RequestOrigin,
    base: BaseUrl,
    Body(body): Body,
) -> Result<JsonApi, ApiError> {
    let root = Obj::root(&body)?;
    let kind = "profile-suppression-bulk-create-job";
    let (data, attributes) = job(&root, kind, &["profiles"])?;
    let target = suppress_target(&app, &data, &attributes).await?;
    let total = target_size(&target);
    let done = origin
        .engage(&caller.engage)
        .suppress(target, SuppressionReason::UserSuppressed)
        .await?;
    Ok(job_document(&caller, &base, kind, total, done))
}

/// `POST /api/profile-suppression-bulk-delete-jobs`: lifts `USER_SUPPRESSED`.
#[tracing::instrument(skip_all, fields(key = %caller.key_name))]
pub async fn unsuppress(
    caller: Caller<SubscriptionsWrite>,
    State(app): State<AppState>,
    origin: RequestOrigin,
    base: BaseUrl,
    Body(body): Body,
) -> Result<JsonApi, ApiError> {
    let root = Obj::root(&body)?;
    let kind = "profile-suppression-bulk-delete-job";
    let (data, attributes) = job(&root, kind, &["profiles"])?;
    let target = suppress_target(&app, &data, &attributes).await?;
    let total = target_size(&target);
    let done = origin.engage(&caller.engage).unsuppress(target).await?;
    Ok(job_document(&caller, &base, kind, total, done))
}
