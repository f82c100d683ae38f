//! Lists & Segments: lists with their members and double opt-in state (`/lists`,
//! `/lists/{id}`), segments with their members and a definition editor with a live preview
//! count (`/segments`, `/segments/{id}`).
//!
//! Reads: `Engage::list_lists`, `Engage::get_list`, `Engage::list_members` (a page, members or
//! those waiting to confirm), `Audience::list_segments`, `Audience::get_segment`,
//! `Audience::profile_count`, `Audience::members` (a page). Writes: `Audience::preview` (a dry
//! run, nothing saved) and `Audience::update_segment` (a new definition version).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Form;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use signalbox_audience::{Audience, AudienceError, SegmentPatch};
use signalbox_engage::{ListId, ListQuery, MemberQuery, MemberStatus, OptInProcess};

use super::metrics::{engage, engage_error};
use super::profiles::audience_error;
use crate::auth::SignedIn;
use crate::error::{ConsoleError, ConsoleResult};
use crate::pages::Page;
use crate::Console;

pub(crate) const TEMPLATES: &[(&str, &str)] = &[
    (
        "lists/index.html",
        include_str!("../../templates/lists/index.html"),
    ),
    (
        "lists/list.html",
        include_str!("../../templates/lists/list.html"),
    ),
    (
        "lists/segments.html",
        include_str!("../../templates/lists/segments.html"),
    ),
    (
        "lists/segment.html",
        include_str!("../../templates/lists/segment.html"),
    ),
];

/// Lists per page, and members per page of a list or segment.
const PAGE: u32 = 50;
/// The longest definition the editor takes.
const MAX_DEFINITION: usize = 64 * 1024;

pub(crate) fn routes() -> axum::Router<Console> {
    axum::Router::new()
        .route("/lists", get(index))
        .route("/lists/{id}", get(list))
        .route("/segments", get(segments))
        .route("/segments/{id}", get(segment))
        .route("/segments/{id}/preview", post(preview))
        .route("/segments/{id}/definition", post(save_definition))
}

fn audience(console: &Console) -> ConsoleResult<&Audience> {
    console
        .deps()
        .audience
        .as_ref()
        .ok_or(ConsoleError::Unavailable("the segments engine"))
}

#[derive(Deserialize)]
struct CursorParams {
    cursor: Option<String>,
    status: Option<String>,
}

#[derive(Serialize)]
struct ListLine {
    id: String,
    name: String,
    double_opt_in: bool,
    members: u64,
    created: String,
}

#[derive(Serialize)]
struct IndexData {
    lists: Vec<ListLine>,
    next_cursor: Option<String>,
    first_page: bool,
}

async fn index(
    State(console): State<Console>,
    signed_in: SignedIn,
    Query(params): Query<CursorParams>,
) -> ConsoleResult<Html<String>> {
    let engage = engage(&console)?;
    let first_page = params.cursor.is_none();
    let page = engage
        .list_lists(ListQuery {
            page_size: PAGE,
            cursor: params.cursor.filter(|c| !c.is_empty()),
            ..ListQuery::default()
        })
        .await
        .map_err(engage_error)?;
    let data = IndexData {
        lists: page
            .items
            .into_iter()
            .map(|l| ListLine {
                id: l.id.0,
                name: l.name,
                double_opt_in: l.opt_in_process == OptInProcess::DoubleOptIn,
                members: l.profile_count,
                created: l.created.strftime("%Y-%m-%d").to_string(),
            })
            .collect(),
        next_cursor: page.next_cursor,
        first_page,
    };
    console
        .inner
        .templates
        .render("lists/index.html", Page::new(&signed_in, "lists", data))
}

#[derive(Serialize)]
struct MemberLine {
    profile_id: String,
    email: Option<String>,
    status: &'static str,
    joined: String,
}

#[derive(Serialize)]
struct ListData {
    id: String,
    name: String,
    double_opt_in: bool,
    members: u64,
    pending: bool,
    lines: Vec<MemberLine>,
    next_cursor: Option<String>,
    first_page: bool,
}

async fn list(
    State(console): State<Console>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    Query(params): Query<CursorParams>,
) -> ConsoleResult<Html<String>> {
    let engage = engage(&console)?;
    let pending = match params.status.as_deref().unwrap_or("") {
        "" | "member" => false,
        "pending" => true,
        other => {
            return Err(ConsoleError::Invalid {
                field: "status".into(),
                message: format!("'{other}' is not a member status; use member or pending"),
            })
        }
    };
    let list = engage.get_list(&ListId(id)).await.map_err(engage_error)?;
    let first_page = params.cursor.is_none();
    let page = engage
        .list_members(MemberQuery {
            list_id: list.id.clone(),
            status: pending.then_some(MemberStatus::Pending),
            newest_first: true,
            page_size: PAGE,
            cursor: params.cursor.filter(|c| !c.is_empty()),
            ..MemberQuery::default()
        })
        .await
        .map_err(engage_error)?;
    let data = ListData {
        id: list.id.0,
        name: list.name,
        double_opt_in: list.opt_in_process == OptInProcess::DoubleOptIn,
        members: list.profile_count,
        pending,
        lines: page
            .items
            .into_iter()
            .map(|m| MemberLine {
                profile_id: m.profile.id.0,
                email: m.profile.email,
                status: m.status.as_str(),
                joined: m.joined.strftime("%Y-%m-%d %H:%M UTC").to_string(),
            })
            .collect(),
        next_cursor: page.next_cursor,
        first_page,
    };
    console
        .inner
        .templates
        .render("lists/list.html", Page::new(&signed_in, "lists", data))
}

#[derive(Serialize)]
struct SegmentLine {
    id: String,
    name: String,
    version: i64,
    starred: bool,
    updated: String,
    backfill: Option<String>,
}

#[derive(Serialize)]
struct SegmentsData {
    segments: Vec<SegmentLine>,
}

async fn segments(
    State(console): State<Console>,
    signed_in: SignedIn,
) -> ConsoleResult<Html<String>> {
    let audience = audience(&console)?;
    let segments = audience.list_segments().await.map_err(audience_error)?;
    let data = SegmentsData {
        segments: segments
            .into_iter()
            .map(|s| SegmentLine {
                id: s.id,
                name: s.name,
                version: s.version,
                starred: s.is_starred,
                updated: s.updated.strftime("%Y-%m-%d %H:%M UTC").to_string(),
                backfill: s.backfill.map(|p| format!("{} of {}", p.done, p.total)),
            })
            .collect(),
    };
    console
        .inner
        .templates
        .render("lists/segments.html", Page::new(&signed_in, "lists", data))
}

#[derive(Deserialize)]
struct SegmentParams {
    after: Option<String>,
}

#[derive(Serialize)]
struct SegmentMember {
    profile_id: String,
    joined: String,
}

#[derive(Serialize)]
struct SegmentData {
    id: String,
    name: String,
    version: i64,
    backfill: Option<String>,
    profile_count: u64,
    /// The definition in the editor: the saved one, or the one just previewed.
    definition: String,
    preview: Option<u64>,
    evaluated: Option<u64>,
    errors: Vec<String>,
    members: Vec<SegmentMember>,
    next_after: Option<i64>,
    first_page: bool,
}

/// A definition edited in the form, and the outcome of previewing or saving it: the preview
/// count and the profiles evaluated, or the errors to show.
type Draft = (String, Result<(u64, u64), Vec<String>>);

/// The segment's page; `draft` and its outcome replace the saved definition in the editor.
async fn segment_page(
    console: &Console,
    signed_in: &SignedIn,
    id: &str,
    after: Option<i64>,
    draft: Option<Draft>,
) -> ConsoleResult<Html<String>> {
    let audience = audience(console)?;
    let segment = audience.get_segment(id).await.map_err(audience_error)?;
    let profile_count = audience
        .profile_count(&segment.id)
        .await
        .map_err(audience_error)?;
    let page = audience
        .members(&segment.id, after, PAGE as usize)
        .await
        .map_err(audience_error)?;
    let (definition, preview, evaluated, errors) = match draft {
        Some((text, Ok((count, evaluated)))) => (text, Some(count), Some(evaluated), Vec::new()),
        Some((text, Err(errors))) => (text, None, None, errors),
        None => (
            serde_json::to_string_pretty(&segment.definition).map_err(ConsoleError::internal)?,
            None,
            None,
            Vec::new(),
        ),
    };
    let data = SegmentData {
        id: segment.id,
        name: segment.name,
        version: segment.version,
        backfill: segment
            .backfill
            .map(|p| format!("{} of {}", p.done, p.total)),
        profile_count,
        definition,
        preview,
        evaluated,
        errors,
        members: page
            .members
            .into_iter()
            .map(|m| SegmentMember {
                profile_id: m.profile_id,
                joined: m.joined.strftime("%Y-%m-%d %H:%M UTC").to_string(),
            })
            .collect(),
        next_after: page.next_after_pk,
        first_page: after.is_none(),
    };
    console
        .inner
        .templates
        .render("lists/segment.html", Page::new(signed_in, "lists", data))
}

async fn segment(
    State(console): State<Console>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    Query(params): Query<SegmentParams>,
) -> ConsoleResult<Html<String>> {
    let after = match params.after.as_deref().unwrap_or("") {
        "" => None,
        text => Some(text.parse::<i64>().map_err(|_| ConsoleError::Invalid {
            field: "after".into(),
            message: "not a position in this listing".into(),
        })?),
    };
    segment_page(&console, &signed_in, &id, after, None).await
}

#[derive(Deserialize)]
struct DefinitionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    definition: String,
}

/// The form's definition as JSON, or the errors to show.
fn read_definition(text: &str) -> Result<Value, Vec<String>> {
    if text.len() > MAX_DEFINITION {
        return Err(vec![format!(
            "definition: must be at most {MAX_DEFINITION} bytes"
        )]);
    }
    serde_json::from_str(text).map_err(|err| vec![format!("definition: not JSON: {err}")])
}

fn definition_errors(err: AudienceError) -> Result<Vec<String>, ConsoleError> {
    match err {
        AudienceError::Invalid(errors) => Ok(errors.iter().map(ToString::to_string).collect()),
        AudienceError::Conflict { reason } => Ok(vec![reason]),
        other => Err(audience_error(other)),
    }
}

/// `POST /segments/{id}/preview`: how many profiles the edited definition would hold now,
/// shown on the segment's page with the draft still in the editor. Nothing is saved.
async fn preview(
    State(console): State<Console>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    Form(form): Form<DefinitionForm>,
) -> ConsoleResult<Response> {
    signed_in.check_csrf(&form.csrf)?;
    let audience = audience(&console)?;
    let outcome = match read_definition(&form.definition) {
        Err(errors) => Err(errors),
        Ok(definition) => match audience.preview(&definition).await {
            Ok(p) => Ok((p.profile_count, p.profiles_evaluated)),
            Err(err) => Err(definition_errors(err)?),
        },
    };
    let status = if outcome.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    let page = segment_page(
        &console,
        &signed_in,
        &id,
        None,
        Some((form.definition, outcome)),
    )
    .await?;
    Ok((status, page).into_response())
}

/// `POST /segments/{id}/definition`: saves the edited definition (a new version, backfilled),
/// then back to the segment's page.
async fn save_definition(
    State(console): State<Console>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    Form(form): Form<DefinitionForm>,
) -> ConsoleResult<Response> {
    signed_in.check_csrf(&form.csrf)?;
    let audience = audience(&console)?;
    let errors = match read_definition(&form.definition) {
        Err(errors) => errors,
        Ok(definition) => {
            let patch = SegmentPatch {
                definition: Some(definition),
                ..SegmentPatch::default()
            };
            match audience.update_segment(&id, patch).await {
                Ok(segment) => {
                    let to = format!("/segments/{}", urlencode(&segment.id));
                    return Ok(Redirect::to(&to).into_response());
                }
                Err(err) => definition_errors(err)?,
            }
        }
    };
    let page = segment_page(
        &console,
        &signed_in,
        &id,
        None,
        Some((form.definition, Err(errors))),
    )
    .await?;
    Ok((StatusCode::BAD_REQUEST, page).into_response())
}

fn urlencode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_definition_must_be_json_and_bounded() {
        assert!(read_definition("{\"condition_groups\": []}").is_ok());
        let errors = read_definition("{").expect_err("not json");
        assert!(errors[0].starts_with("definition: not JSON"));
        let huge = format!("\"{}\"", "x".repeat(MAX_DEFINITION));
        let errors = read_definition(&huge).expect_err("too long");
        assert!(errors[0].contains("at most"));
    }

    #[test]
    fn ids_are_encoded_in_redirects() {
        assert_eq!(urlencode("AbC-1_2"), "AbC-1_2");
        assert_eq!(urlencode("a/b c"), "a%2Fb%20c");
    }
}
