//! Lists & Segments: lists with their members and double opt-in state (`/lists`,
//! `/lists/{id}`; created, renamed and deleted here), segments with their members and a
//! builder for their conditions with a live preview count (`/segments`, `/segments/new`,
//! `/segments/{id}`).
//!
//! Reads: `Engage::list_lists`, `Engage::get_list`, `Engage::list_members` (a page, members or
//! those waiting to confirm), `Engage::list_metrics` (the builder's metric choices),
//! `Audience::list_segments_page`, `Audience::get_segment`, `Audience::profile_count`,
//! `Audience::members` (a page). Writes, the calls the Klaviyo-compatible API makes:
//! `Engage::create_list`, `Engage::update_list`, `Engage::delete_list`,
//! `Audience::create_segment`, `Audience::update_segment`, `Audience::delete_segment`; and
//! `Audience::preview` (a dry run, nothing saved).
//!
//! Layout: this file has the routes, the lists' pages and what both halves share;
//! `segments.rs` the segments' pages; `builder.rs` turns the builder's form fields into a
//! definition and back. The builder's buttons post the whole form, so it works without
//! JavaScript; the script's live count posts the same form to `/segments/preview`.

mod builder;
mod segments;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Form;
use serde::{Deserialize, Serialize};
use serde_json::json;
use signalbox_audience::Audience;
use signalbox_engage::{EngageError, ListId, ListQuery, MemberQuery, MemberStatus, OptInProcess};

use self::builder::FieldErrors;
use super::metrics::{engage, engage_error};
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
        "lists/new.html",
        include_str!("../../templates/lists/new.html"),
    ),
    (
        "lists/list.html",
        include_str!("../../templates/lists/list.html"),
    ),
    (
        "lists/list_fields.html",
        include_str!("../../templates/lists/list_fields.html"),
    ),
    (
        "lists/delete.html",
        include_str!("../../templates/lists/delete.html"),
    ),
    (
        "lists/segments.html",
        include_str!("../../templates/lists/segments.html"),
    ),
    (
        "lists/segment_new.html",
        include_str!("../../templates/lists/segment_new.html"),
    ),
    (
        "lists/segment.html",
        include_str!("../../templates/lists/segment.html"),
    ),
    (
        "lists/builder.html",
        include_str!("../../templates/lists/builder.html"),
    ),
];

/// Lists or segments per page, and members per page of a list or segment.
const PAGE: u32 = 50;
/// How many metrics, lists and segments the builder offers to pick from.
const CHOICES: u32 = 200;
/// The longest definition the editor takes.
const MAX_DEFINITION: usize = 64 * 1024;
/// The longest name of a list or segment.
const MAX_NAME: usize = 255;

pub(crate) fn routes() -> axum::Router<Console> {
    axum::Router::new()
        .route("/lists", get(index))
        .route("/lists/new", get(new_list).post(create_list))
        .route("/lists/{id}", get(list))
        .route("/lists/{id}/settings", post(list_settings))
        .route(
            "/lists/{id}/delete",
            get(confirm_delete_list).post(delete_list),
        )
        .route("/segments", get(segments::segments))
        .route(
            "/segments/new",
            get(segments::new_segment).post(segments::create_segment),
        )
        .route("/segments/preview", post(segments::live_preview))
        .route("/segments/{id}", get(segments::segment))
        .route("/segments/{id}/builder", post(segments::edit_segment))
        .route("/segments/{id}/preview", post(segments::preview))
        .route("/segments/{id}/definition", post(segments::save_definition))
        .route(
            "/segments/{id}/delete",
            get(segments::confirm_delete_segment).post(segments::delete_segment),
        )
}

fn audience(console: &Console) -> ConsoleResult<&Audience> {
    Ok(&console.engine()?.audience)
}

fn see_other(to: String) -> Response {
    Redirect::to(&to).into_response()
}

/// A name for a list or segment: trimmed, required, bounded.
fn checked_name(name: &str) -> Result<String, String> {
    let name = name.trim();
    if name.is_empty() {
        return Err("is required".into());
    }
    if name.chars().count() > MAX_NAME {
        return Err(format!("must be at most {MAX_NAME} characters"));
    }
    Ok(name.to_owned())
}

fn opt_in(text: &str) -> Result<OptInProcess, String> {
    OptInProcess::parse(text).ok_or_else(|| "choose single or double opt-in".to_owned())
}

// ---------------------------------------------------------------------------------------------
// Lists

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

#[derive(Deserialize)]
struct ListForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    opt_in: String,
}

/// The fields of a list's form with their errors.
#[derive(Serialize)]
struct ListFields {
    name: String,
    opt_in: String,
    errors: FieldErrors,
}

impl ListFields {
    /// The form's fields checked; errors by field.
    fn check(form: &ListForm) -> Result<(String, OptInProcess), FieldErrors> {
        let mut errors = FieldErrors::new();
        let name = checked_name(&form.name).map_err(|e| errors.insert("name".into(), e));
        let opt_in = opt_in(&form.opt_in).map_err(|e| errors.insert("opt_in".into(), e));
        match (name, opt_in) {
            (Ok(name), Ok(opt_in)) => Ok((name, opt_in)),
            _ => Err(errors),
        }
    }

    fn with_errors(form: ListForm, errors: FieldErrors) -> ListFields {
        ListFields {
            name: form.name,
            opt_in: form.opt_in,
            errors,
        }
    }
}

/// Engage's refusal of a list's fields as errors at the field, or the error page.
fn list_errors(err: EngageError) -> ConsoleResult<FieldErrors> {
    match err {
        EngageError::Invalid { field, reason } => Ok(FieldErrors::from([(field, reason)])),
        other => Err(engage_error(other)),
    }
}

fn render_new_list(
    console: &Console,
    signed_in: &SignedIn,
    fields: ListFields,
    status: StatusCode,
) -> ConsoleResult<Response> {
    let page = console.inner.templates.render(
        "lists/new.html",
        Page::new(signed_in, "lists", json!({ "settings": fields })),
    )?;
    Ok((status, page).into_response())
}

/// `GET /lists/new`: the form to create a list.
async fn new_list(State(console): State<Console>, signed_in: SignedIn) -> ConsoleResult<Response> {
    let fields = ListFields {
        name: String::new(),
        opt_in: OptInProcess::SingleOptIn.as_str().into(),
        errors: FieldErrors::new(),
    };
    render_new_list(&console, &signed_in, fields, StatusCode::OK)
}

/// `POST /lists/new`: creates the list (as `POST /api/lists` does), then to its page.
async fn create_list(
    State(console): State<Console>,
    signed_in: SignedIn,
    Form(form): Form<ListForm>,
) -> ConsoleResult<Response> {
    signed_in.check_csrf(&form.csrf)?;
    let engage = engage(&console)?;
    let errors = match ListFields::check(&form) {
        Err(errors) => errors,
        Ok((name, opt_in)) => match engage.create_list(&name, opt_in).await {
            Ok(list) => return Ok(see_other(format!("/lists/{}", urlencode(&list.id.0)))),
            Err(err) => list_errors(err)?,
        },
    };
    let fields = ListFields::with_errors(form, errors);
    render_new_list(&console, &signed_in, fields, StatusCode::BAD_REQUEST)
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
    /// The settings form: the list's own, or the ones just refused.
    settings: ListFields,
}

async fn list_page(
    console: &Console,
    signed_in: &SignedIn,
    id: String,
    params: CursorParams,
    settings: Option<ListFields>,
) -> ConsoleResult<Html<String>> {
    let engage = engage(console)?;
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
    let settings = settings.unwrap_or_else(|| ListFields {
        name: list.name.clone(),
        opt_in: list.opt_in_process.as_str().into(),
        errors: FieldErrors::new(),
    });
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
        settings,
    };
    console
        .inner
        .templates
        .render("lists/list.html", Page::new(signed_in, "lists", data))
}

async fn list(
    State(console): State<Console>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    Query(params): Query<CursorParams>,
) -> ConsoleResult<Html<String>> {
    list_page(&console, &signed_in, id, params, None).await
}

/// `POST /lists/{id}/settings`: renames the list or changes its opt-in process (as
/// `PATCH /api/lists/{id}` does), then back to its page.
async fn list_settings(
    State(console): State<Console>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    Form(form): Form<ListForm>,
) -> ConsoleResult<Response> {
    signed_in.check_csrf(&form.csrf)?;
    let engage = engage(&console)?;
    let errors = match ListFields::check(&form) {
        Err(errors) => errors,
        Ok((name, opt_in)) => {
            let list_id = ListId(id.clone());
            match engage
                .update_list(&list_id, Some(&name), Some(opt_in))
                .await
            {
                Ok(list) => return Ok(see_other(format!("/lists/{}", urlencode(&list.id.0)))),
                Err(err) => list_errors(err)?,
            }
        }
    };
    let params = CursorParams {
        cursor: None,
        status: None,
    };
    let settings = Some(ListFields::with_errors(form, errors));
    let page = list_page(&console, &signed_in, id, params, settings).await?;
    Ok((StatusCode::BAD_REQUEST, page).into_response())
}

#[derive(Serialize)]
struct DeleteData {
    /// "list" or "segment".
    what: &'static str,
    name: String,
    action: String,
    back: String,
    error: Option<String>,
}

fn render_delete(
    console: &Console,
    signed_in: &SignedIn,
    data: DeleteData,
    status: StatusCode,
) -> ConsoleResult<Response> {
    let page = console
        .inner
        .templates
        .render("lists/delete.html", Page::new(signed_in, "lists", data))?;
    Ok((status, page).into_response())
}

/// `GET /lists/{id}/delete`: asks before deleting.
async fn confirm_delete_list(
    State(console): State<Console>,
    signed_in: SignedIn,
    Path(id): Path<String>,
) -> ConsoleResult<Response> {
    let list = engage(&console)?
        .get_list(&ListId(id))
        .await
        .map_err(engage_error)?;
    let path = format!("/lists/{}", urlencode(&list.id.0));
    let data = DeleteData {
        what: "list",
        name: list.name,
        action: format!("{path}/delete"),
        back: path,
        error: None,
    };
    render_delete(&console, &signed_in, data, StatusCode::OK)
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /lists/{id}/delete`: deletes the list (as `DELETE /api/lists/{id}` does), then to
/// the lists.
async fn delete_list(
    State(console): State<Console>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> ConsoleResult<Response> {
    signed_in.check_csrf(&form.csrf)?;
    engage(&console)?
        .delete_list(&ListId(id))
        .await
        .map_err(engage_error)?;
    Ok(see_other("/lists".into()))
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
    fn names_are_required_and_bounded() {
        assert_eq!(checked_name("  VIP "), Ok("VIP".into()));
        assert_eq!(checked_name(" "), Err("is required".into()));
        assert!(checked_name(&"x".repeat(MAX_NAME + 1))
            .expect_err("too long")
            .contains("at most 255"));
    }

    #[test]
    fn ids_are_encoded_in_redirects() {
        assert_eq!(urlencode("AbC-1_2"), "AbC-1_2");
        assert_eq!(urlencode("a/b c"), "a%2Fb%20c");
    }
}
