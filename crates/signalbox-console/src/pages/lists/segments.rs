//! Segments: the index (a page at a time), a segment's page with its members, the builder
//! (create, edit, preview, the live count) and the JSON editor, and deleting.

use std::collections::BTreeSet;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::{Form, Json};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use signalbox_audience::{Audience, AudienceError, SegmentInput, SegmentPatch};
use signalbox_engage::{ListQuery, MetricQuery, ProfileKey};

use super::builder::{self, Builder, Edit, FieldErrors};
use super::{
    audience, checked_name, render_delete, see_other, urlencode, CsrfForm, DeleteData, CHOICES,
    MAX_DEFINITION, PAGE,
};
use crate::auth::SignedIn;
use crate::error::{ConsoleError, ConsoleResult};
use crate::pages::metrics::{engage, engage_error};
use crate::pages::profiles::audience_error;
use crate::pages::Page;
use crate::Console;

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
    next_after: Option<String>,
    first_page: bool,
}

#[derive(Deserialize)]
pub(super) struct AfterParams {
    after: Option<String>,
}

pub(super) async fn segments(
    State(console): State<Console>,
    signed_in: SignedIn,
    Query(params): Query<AfterParams>,
) -> ConsoleResult<Html<String>> {
    let audience = audience(&console)?;
    let after = params.after.filter(|a| !a.is_empty());
    let page = audience
        .list_segments_page(after.as_deref(), PAGE as usize)
        .await
        .map_err(|err| match err {
            AudienceError::NotFound { .. } => ConsoleError::Invalid {
                field: "after".into(),
                message: "not a segment of this listing (was it deleted?)".into(),
            },
            other => audience_error(other),
        })?;
    let data = SegmentsData {
        segments: page
            .segments
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
        next_after: page.next,
        first_page: after.is_none(),
    };
    console
        .inner
        .templates
        .render("lists/segments.html", Page::new(&signed_in, "lists", data))
}

/// A form's value by name (the first, if repeated); empty when absent.
fn field<'a>(pairs: &'a [(String, String)], name: &str) -> &'a str {
    pairs
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
        .unwrap_or("")
}

/// The choices the builder's selects offer, as (value, label).
#[derive(Serialize)]
struct Choices {
    kinds: &'static [(&'static str, &'static str)],
    property_ops: Vec<(String, String)>,
    count_ops: Vec<(&'static str, String)>,
    timeframes: &'static [(&'static str, &'static str)],
    units: &'static [&'static str],
    channels: &'static [&'static str],
    subscriptions: &'static [(&'static str, &'static str)],
    metrics: Vec<(String, String)>,
    groups: Vec<(String, String)>,
}

impl Choices {
    /// The first metrics, lists and segments by age (one page each, never a whole table),
    /// plus whatever the rows already name.
    async fn load(console: &Console, builder: &Builder) -> ConsoleResult<Choices> {
        let engage = engage(console)?;
        let audience = audience(console)?;
        let mut metrics: Vec<(String, String)> = engage
            .list_metrics(MetricQuery {
                page_size: CHOICES,
                ..MetricQuery::default()
            })
            .await
            .map_err(engage_error)?
            .items
            .into_iter()
            .map(|m| {
                let label = format!("{} ({})", m.name, m.integration.name);
                (m.id.0, label)
            })
            .collect();
        let mut groups: Vec<(String, String)> = engage
            .list_lists(ListQuery {
                page_size: CHOICES,
                ..ListQuery::default()
            })
            .await
            .map_err(engage_error)?
            .items
            .into_iter()
            .map(|l| (l.id.0, format!("List: {}", l.name)))
            .collect();
        groups.extend(
            audience
                .list_segments_page(None, CHOICES as usize)
                .await
                .map_err(audience_error)?
                .segments
                .into_iter()
                .map(|s| (s.id, format!("Segment: {}", s.name))),
        );
        let rows = || builder.groups.iter().flatten();
        let known: BTreeSet<String> = metrics.iter().map(|(id, _)| id.clone()).collect();
        let named: BTreeSet<&String> = rows()
            .filter(|r| !r.metric.is_empty() && !known.contains(&r.metric))
            .map(|r| &r.metric)
            .collect();
        metrics.extend(named.into_iter().map(|id| (id.clone(), id.clone())));
        let known: BTreeSet<String> = groups.iter().map(|(id, _)| id.clone()).collect();
        let named: BTreeSet<&String> = rows()
            .flat_map(|r| r.groups.iter())
            .filter(|id| !known.contains(*id))
            .collect();
        groups.extend(named.into_iter().map(|id| (id.clone(), id.clone())));
        Ok(Choices {
            kinds: builder::KINDS,
            property_ops: builder::property_ops(),
            count_ops: builder::count_ops(),
            timeframes: builder::TIMEFRAMES,
            units: builder::UNITS,
            channels: builder::CHANNELS,
            subscriptions: builder::SUBSCRIPTIONS,
            metrics,
            groups,
        })
    }
}

#[derive(Serialize, Clone, Copy)]
struct PreviewCount {
    count: u64,
    evaluated: u64,
}

/// The builder's form as the person left it.
struct BuilderState {
    name: String,
    builder: Builder,
    errors: FieldErrors,
    preview: Option<PreviewCount>,
    /// The "Edit as JSON" text (on the create page).
    json: String,
    json_open: bool,
}

impl BuilderState {
    fn fresh(name: String, builder: Builder) -> BuilderState {
        BuilderState {
            name,
            builder,
            errors: FieldErrors::new(),
            preview: None,
            json: String::new(),
            json_open: false,
        }
    }
}

/// What the builder template gets.
#[derive(Serialize)]
struct BuilderData {
    action: String,
    name: String,
    builder: Builder,
    errors: FieldErrors,
    preview: Option<PreviewCount>,
    json: String,
    json_open: bool,
    /// The create page has its own "Edit as JSON"; a segment's page has the JSON form.
    create: bool,
    choices: Choices,
}

impl BuilderData {
    async fn new(
        console: &Console,
        action: String,
        create: bool,
        state: BuilderState,
    ) -> ConsoleResult<BuilderData> {
        let choices = Choices::load(console, &state.builder).await?;
        Ok(BuilderData {
            action,
            name: state.name,
            builder: state.builder,
            errors: state.errors,
            preview: state.preview,
            json: state.json,
            json_open: state.json_open,
            create,
            choices,
        })
    }
}

/// What a post of the builder's form comes to: the form again (after an edit, a preview or
/// errors), or a segment to save.
enum Posted {
    Again(BuilderState),
    Save {
        name: String,
        definition: Value,
        state: BuilderState,
        /// The definition came from the JSON text, not the rows.
        from_json: bool,
    },
}

/// The JSON text as a definition, bounded.
fn read_definition(text: &str) -> Result<Value, String> {
    if text.len() > MAX_DEFINITION {
        return Err(format!("must be at most {MAX_DEFINITION} bytes"));
    }
    serde_json::from_str(text).map_err(|err| format!("not JSON: {err}"))
}

/// Reads a builder form and does what its button (`op`) asks.
async fn posted(audience: &Audience, pairs: &[(String, String)]) -> Posted {
    let mut state = BuilderState::fresh(field(pairs, "name").to_owned(), Builder::from_form(pairs));
    state.json = field(pairs, "definition").to_owned();
    let op = field(pairs, "op");
    if let Some(edit) = Edit::parse(op) {
        state.builder.apply(edit);
        return Posted::Again(state);
    }
    match op {
        "save" | "json-save" => {
            let from_json = op == "json-save";
            let name = checked_name(&state.name).map_err(|e| {
                state.errors.insert("name".into(), e);
            });
            let definition = if from_json {
                state.json_open = true;
                read_definition(&state.json).map_err(|e| {
                    state.errors.insert("definition".into(), e);
                })
            } else {
                state.builder.to_definition().map_err(|errors| {
                    state.errors.extend(errors);
                })
            };
            match (name, definition) {
                (Ok(name), Ok(definition)) => Posted::Save {
                    name,
                    definition,
                    state,
                    from_json,
                },
                _ => Posted::Again(state),
            }
        }
        "json-load" => {
            state.json_open = true;
            match read_definition(&state.json) {
                Ok(definition) => state.builder = Builder::from_definition(&definition),
                Err(e) => {
                    state.errors.insert("definition".into(), e);
                }
            }
            Posted::Again(state)
        }
        // "preview", or Enter in a field.
        _ => {
            match count(audience, &state.builder).await {
                Ok(preview) => state.preview = Some(preview),
                Err(errors) => state.errors = errors,
            }
            Posted::Again(state)
        }
    }
}

/// The preview count of the rows' definition, or the errors by field.
async fn count(audience: &Audience, builder: &Builder) -> Result<PreviewCount, FieldErrors> {
    let definition = builder.to_definition()?;
    match audience.preview(&definition).await {
        Ok(p) => Ok(PreviewCount {
            count: p.profile_count,
            evaluated: p.profiles_evaluated,
        }),
        Err(AudienceError::Invalid(problems)) => Err(builder.field_errors(&problems)),
        Err(other) => Err(FieldErrors::from([(
            "definition".to_owned(),
            other.to_string(),
        )])),
    }
}

/// A refused save as errors at the fields (or the error page for a failure of the engine).
fn save_errors(
    err: AudienceError,
    state: &BuilderState,
    from_json: bool,
) -> ConsoleResult<FieldErrors> {
    match err {
        AudienceError::Invalid(problems) if !from_json => Ok(state.builder.field_errors(&problems)),
        AudienceError::Invalid(problems) => Ok(FieldErrors::from([(
            "definition".to_owned(),
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        )])),
        AudienceError::Conflict { reason } => {
            Ok(FieldErrors::from([("definition".into(), reason)]))
        }
        other => Err(audience_error(other)),
    }
}

fn status_of(state: &BuilderState) -> StatusCode {
    if state.errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    }
}

async fn render_new_segment(
    console: &Console,
    signed_in: &SignedIn,
    state: BuilderState,
) -> ConsoleResult<Response> {
    let status = status_of(&state);
    let form = BuilderData::new(console, "/segments/new".into(), true, state).await?;
    let page = console.inner.templates.render(
        "lists/segment_new.html",
        Page::new(signed_in, "lists", json!({ "form": form })),
    )?;
    Ok((status, page).into_response())
}

/// `GET /segments/new`: a name and the builder with one condition.
pub(super) async fn new_segment(
    State(console): State<Console>,
    signed_in: SignedIn,
) -> ConsoleResult<Response> {
    let state = BuilderState::fresh(String::new(), Builder::default());
    render_new_segment(&console, &signed_in, state).await
}

/// `POST /segments/new`: the builder's buttons; **Create segment** creates it (as
/// `POST /api/segments` does) and goes to its page.
pub(super) async fn create_segment(
    State(console): State<Console>,
    signed_in: SignedIn,
    Form(pairs): Form<Vec<(String, String)>>,
) -> ConsoleResult<Response> {
    signed_in.check_csrf(field(&pairs, "csrf"))?;
    let audience = audience(&console)?;
    let state = match posted(audience, &pairs).await {
        Posted::Again(state) => state,
        Posted::Save {
            name,
            definition,
            mut state,
            from_json,
        } => {
            let input = SegmentInput {
                name,
                definition,
                is_starred: false,
            };
            match audience.create_segment(input).await {
                Ok(segment) => {
                    return Ok(see_other(format!("/segments/{}", urlencode(&segment.id))))
                }
                Err(err) => state.errors = save_errors(err, &state, from_json)?,
            }
            state
        }
    };
    render_new_segment(&console, &signed_in, state).await
}

/// `POST /segments/preview`: the live count for a builder form, as JSON
/// (`{"count","evaluated"}`, or `{"errors":{field: message}}` with 400).
pub(super) async fn live_preview(
    State(console): State<Console>,
    signed_in: SignedIn,
    Form(pairs): Form<Vec<(String, String)>>,
) -> ConsoleResult<Response> {
    signed_in.check_csrf(field(&pairs, "csrf"))?;
    let audience = audience(&console)?;
    let builder = Builder::from_form(&pairs);
    Ok(match count(audience, &builder).await {
        Ok(preview) => Json(json!({
            "count": preview.count,
            "evaluated": preview.evaluated,
        }))
        .into_response(),
        Err(errors) => (StatusCode::BAD_REQUEST, Json(json!({ "errors": errors }))).into_response(),
    })
}

#[derive(Deserialize)]
pub(super) struct SegmentParams {
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
    /// The definition in the JSON editor: the saved one, or the one just previewed.
    definition: String,
    /// The JSON editor is open (a JSON draft was just previewed or refused).
    json_open: bool,
    preview: Option<u64>,
    evaluated: Option<u64>,
    json_errors: Vec<String>,
    form: BuilderData,
    members: Vec<SegmentMember>,
    next_after: Option<ProfileKey>,
    first_page: bool,
}

/// A definition edited as JSON, and the outcome of previewing or saving it: the preview
/// count and the profiles evaluated, or the errors to show.
type Draft = (String, Result<(u64, u64), Vec<String>>);

/// The segment's page; `draft` and its outcome replace the saved definition in the JSON
/// editor, `state` the saved one in the builder.
async fn segment_page(
    console: &Console,
    signed_in: &SignedIn,
    id: &str,
    after: Option<ProfileKey>,
    draft: Option<Draft>,
    state: Option<BuilderState>,
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
    let json_open = draft.is_some();
    let (definition, preview, evaluated, json_errors) = match draft {
        Some((text, Ok((count, evaluated)))) => (text, Some(count), Some(evaluated), Vec::new()),
        Some((text, Err(errors))) => (text, None, None, errors),
        None => (
            serde_json::to_string_pretty(&segment.definition).map_err(ConsoleError::internal)?,
            None,
            None,
            Vec::new(),
        ),
    };
    let state = state.unwrap_or_else(|| {
        BuilderState::fresh(
            segment.name.clone(),
            Builder::from_definition(&segment.definition),
        )
    });
    let action = format!("/segments/{}/builder", urlencode(&segment.id));
    let form = BuilderData::new(console, action, false, state).await?;
    let data = SegmentData {
        id: segment.id,
        name: segment.name,
        version: segment.version,
        backfill: segment
            .backfill
            .map(|p| format!("{} of {}", p.done, p.total)),
        profile_count,
        definition,
        json_open,
        preview,
        evaluated,
        json_errors,
        form,
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

pub(super) async fn segment(
    State(console): State<Console>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    Query(params): Query<SegmentParams>,
) -> ConsoleResult<Html<String>> {
    let after = match params.after.as_deref().unwrap_or("") {
        "" => None,
        text => Some(
            text.parse::<i64>()
                .map(ProfileKey)
                .map_err(|_| ConsoleError::Invalid {
                    field: "after".into(),
                    message: "not a position in this listing".into(),
                })?,
        ),
    };
    segment_page(&console, &signed_in, &id, after, None, None).await
}

/// `POST /segments/{id}/builder`: the builder's buttons on a segment's page; **Save segment**
/// renames it and saves the definition (a new version when it changed, backfilled), as
/// `PATCH /api/segments/{id}` does.
pub(super) async fn edit_segment(
    State(console): State<Console>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> ConsoleResult<Response> {
    signed_in.check_csrf(field(&pairs, "csrf"))?;
    let audience = audience(&console)?;
    let state = match posted(audience, &pairs).await {
        Posted::Again(state) => state,
        Posted::Save {
            name,
            definition,
            mut state,
            from_json,
        } => {
            let current = audience.get_segment(&id).await.map_err(audience_error)?;
            let patch = SegmentPatch {
                name: (name != current.name).then_some(name),
                definition: (definition != current.definition).then_some(definition),
                ..SegmentPatch::default()
            };
            if patch == SegmentPatch::default() {
                return Ok(see_other(format!("/segments/{}", urlencode(&current.id))));
            }
            match audience.update_segment(&id, patch).await {
                Ok(segment) => {
                    return Ok(see_other(format!("/segments/{}", urlencode(&segment.id))))
                }
                Err(err) => state.errors = save_errors(err, &state, from_json)?,
            }
            state
        }
    };
    let status = status_of(&state);
    let page = segment_page(&console, &signed_in, &id, None, None, Some(state)).await?;
    Ok((status, page).into_response())
}

#[derive(Deserialize)]
pub(super) struct DefinitionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    definition: String,
}

fn definition_errors(err: AudienceError) -> Result<Vec<String>, ConsoleError> {
    match err {
        AudienceError::Invalid(errors) => Ok(errors.iter().map(ToString::to_string).collect()),
        AudienceError::Conflict { reason } => Ok(vec![reason]),
        other => Err(audience_error(other)),
    }
}

/// The JSON editor's text as a definition, or the errors to show.
fn json_draft(text: &str) -> Result<Value, Vec<String>> {
    read_definition(text).map_err(|e| vec![format!("definition: {e}")])
}

/// `POST /segments/{id}/preview`: how many profiles the definition edited as JSON would hold
/// now, shown on the segment's page with the draft still in the editor. Nothing is saved.
pub(super) async fn preview(
    State(console): State<Console>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    Form(form): Form<DefinitionForm>,
) -> ConsoleResult<Response> {
    signed_in.check_csrf(&form.csrf)?;
    let audience = audience(&console)?;
    let outcome = match json_draft(&form.definition) {
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
    let draft = Some((form.definition, outcome));
    let page = segment_page(&console, &signed_in, &id, None, draft, None).await?;
    Ok((status, page).into_response())
}

/// `POST /segments/{id}/definition`: saves the definition edited as JSON (a new version,
/// backfilled), then back to the segment's page.
pub(super) async fn save_definition(
    State(console): State<Console>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    Form(form): Form<DefinitionForm>,
) -> ConsoleResult<Response> {
    signed_in.check_csrf(&form.csrf)?;
    let audience = audience(&console)?;
    let errors = match json_draft(&form.definition) {
        Err(errors) => errors,
        Ok(definition) => {
            let patch = SegmentPatch {
                definition: Some(definition),
                ..SegmentPatch::default()
            };
            match audience.update_segment(&id, patch).await {
                Ok(segment) => {
                    return Ok(see_other(format!("/segments/{}", urlencode(&segment.id))))
                }
                Err(err) => definition_errors(err)?,
            }
        }
    };
    let draft = Some((form.definition, Err(errors)));
    let page = segment_page(&console, &signed_in, &id, None, draft, None).await?;
    Ok((StatusCode::BAD_REQUEST, page).into_response())
}

/// `GET /segments/{id}/delete`: asks before deleting.
pub(super) async fn confirm_delete_segment(
    State(console): State<Console>,
    signed_in: SignedIn,
    Path(id): Path<String>,
) -> ConsoleResult<Response> {
    let segment = audience(&console)?
        .get_segment(&id)
        .await
        .map_err(audience_error)?;
    let path = format!("/segments/{}", urlencode(&segment.id));
    let data = DeleteData {
        what: "segment",
        name: segment.name,
        action: format!("{path}/delete"),
        back: path,
        error: None,
    };
    render_delete(&console, &signed_in, data, StatusCode::OK)
}

/// `POST /segments/{id}/delete`: deletes the segment (as `DELETE /api/segments/{id}` does),
/// then to the segments; a segment other segments read is kept, and the page says why.
pub(super) async fn delete_segment(
    State(console): State<Console>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> ConsoleResult<Response> {
    signed_in.check_csrf(&form.csrf)?;
    let audience = audience(&console)?;
    match audience.delete_segment(&id).await {
        Ok(()) => Ok(see_other("/segments".into())),
        Err(AudienceError::Conflict { reason }) => {
            let segment = audience.get_segment(&id).await.map_err(audience_error)?;
            let path = format!("/segments/{}", urlencode(&segment.id));
            let data = DeleteData {
                what: "segment",
                name: segment.name,
                action: format!("{path}/delete"),
                back: path,
                error: Some(reason),
            };
            render_delete(&console, &signed_in, data, StatusCode::CONFLICT)
        }
        Err(err) => Err(audience_error(err)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_definition_must_be_json_and_bounded() {
        assert!(json_draft("{\"condition_groups\": []}").is_ok());
        let errors = json_draft("{").expect_err("not json");
        assert!(errors[0].starts_with("definition: not JSON"));
        let huge = format!("\"{}\"", "x".repeat(MAX_DEFINITION));
        let errors = json_draft(&huge).expect_err("too long");
        assert!(errors[0].contains("at most"));
    }
}
