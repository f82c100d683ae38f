//! Flows: the flows with their status (`/flows`, a page at a time), and a flow's page
//! (`/flows/{id}`) that draws its steps as a diagram of nested boxes with each step's counts,
//! and switches its status between draft, manual and live. **Create flow** (`/flows/new`)
//! starts from one of the ready templates (`signalbox_flows::templates`) with its lists,
//! segments and metrics picked from the account's, or from scratch (a trigger and the steps
//! as JSON); a draft flow can be deleted.
//!
//! Reads: `Flows::list_flows_page`, `Flows::get_flow`, `Flows::stats`; for the forms
//! `Engage::list_lists`, `Engage::list_metrics` (a first page of each), `Audience::list_segments`
//! and `get_list`/`get_metric`/`get_segment` to check a pick. Writes: `Flows::update_flow`
//! with a new status (the same change as `PATCH /api/flows/{id}`),
//! `Flows::create_from_template` and `Flows::create_flow` (as `POST /api/flows`, in draft), and
//! `Flows::delete_flow` (as `DELETE /api/flows/{id}`).

use std::collections::{HashMap, HashSet};

use axum::extract::{Path, Query, RawForm, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Form;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use signalbox_engage::{Engage, ListId, ListQuery, MetricId, MetricQuery};
use signalbox_flows::templates::{self, FlowTemplate, ParamKind};
use signalbox_flows::{FlowStats, FlowStatus, FlowUpdate, Flows, FlowsError};

use crate::auth::SignedIn;
use crate::error::{ConsoleError, ConsoleResult};
use crate::pages::connections::{field_error, with_status, FieldErrors, Fields};
use crate::pages::metrics::engage_error;
use crate::pages::profiles::audience_error;
use crate::pages::Page;
use crate::Console;

pub(crate) const TEMPLATES: &[(&str, &str)] = &[
    (
        "flows/index.html",
        include_str!("../../templates/flows/index.html"),
    ),
    (
        "flows/flow.html",
        include_str!("../../templates/flows/flow.html"),
    ),
    (
        "flows/new.html",
        include_str!("../../templates/flows/new.html"),
    ),
    (
        "flows/template.html",
        include_str!("../../templates/flows/template.html"),
    ),
    (
        "flows/scratch.html",
        include_str!("../../templates/flows/scratch.html"),
    ),
    (
        "flows/delete.html",
        include_str!("../../templates/flows/delete.html"),
    ),
];

/// Flows on a page of the index.
const PAGE: usize = 50;

/// Lists, metrics or segments offered in a form's menu (the first of each, by the engine's
/// order).
const CHOICES: u32 = 200;

/// The most steps a diagram draws (a definition holds far fewer).
const MAX_STEPS: usize = 500;

/// The statuses a person may switch a flow to here.
const SETTABLE: [FlowStatus; 3] = [FlowStatus::Draft, FlowStatus::Manual, FlowStatus::Live];

pub(crate) fn routes() -> axum::Router<Console> {
    axum::Router::new()
        .route("/flows", get(index))
        .route("/flows/new", get(gallery))
        .route("/flows/new/scratch", get(scratch).post(create_scratch))
        .route(
            "/flows/new/{template}",
            get(template).post(create_from_template),
        )
        .route("/flows/{id}", get(flow))
        .route("/flows/{id}/status", post(set_status))
        .route("/flows/{id}/delete", get(confirm_delete).post(delete))
}

fn flows(console: &Console) -> ConsoleResult<&Flows> {
    Ok(&console.engine()?.flows)
}

fn flows_error(err: FlowsError) -> ConsoleError {
    match err {
        FlowsError::NotFound { what } => ConsoleError::NotFound(what),
        FlowsError::Invalid { field, reason } => ConsoleError::Invalid {
            field,
            message: reason,
        },
        FlowsError::Unavailable => ConsoleError::Unavailable("the flows engine"),
        other => ConsoleError::internal(other),
    }
}

#[derive(Serialize)]
struct FlowLine {
    id: String,
    name: String,
    status: &'static str,
    archived: bool,
    trigger: &'static str,
    steps: usize,
    updated: String,
}

#[derive(Serialize)]
struct IndexData {
    flows: Vec<FlowLine>,
    next: Option<String>,
    first_page: bool,
    notice: Option<&'static str>,
}

#[derive(Deserialize)]
struct IndexParams {
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    done: Option<String>,
}

async fn index(
    State(console): State<Console>,
    signed_in: SignedIn,
    Query(params): Query<IndexParams>,
) -> ConsoleResult<Html<String>> {
    let flows = flows(&console)?;
    let after = params.after.filter(|a| !a.is_empty());
    let first_page = after.is_none();
    let page = flows
        .list_flows_page(after.as_deref(), PAGE)
        .await
        .map_err(flows_error)?;
    let data = IndexData {
        flows: page
            .flows
            .into_iter()
            .map(|f| FlowLine {
                steps: f.definition.actions.len(),
                id: f.id,
                name: f.name,
                status: f.status.as_str(),
                archived: f.archived,
                trigger: f.trigger_type,
                updated: f.updated.strftime("%Y-%m-%d %H:%M UTC").to_string(),
            })
            .collect(),
        next: page.next,
        first_page,
        notice: (params.done.as_deref() == Some("deleted")).then_some("Flow deleted."),
    };
    console
        .inner
        .templates
        .render("flows/index.html", Page::new(&signed_in, "flows", data))
}

/// A node of the diagram: a step (whose children are its branches, for a split) or a branch
/// of a split (whose children are its steps). One shape, so a template can recurse over it.
#[derive(Debug, Serialize, PartialEq)]
struct Node {
    /// Set on branch nodes: `Yes` or `No`.
    branch: Option<&'static str>,
    id: String,
    kind: String,
    title: String,
    counts: Vec<(String, i64)>,
    /// Set on a step already drawn elsewhere (two paths meet): drawn as a reference.
    joins: bool,
    children: Vec<Node>,
}

/// Draws the chain of steps from `start`; each step is drawn once (a later path to it is a
/// reference), at most [`MAX_STEPS`].
fn chain(
    start: Option<&str>,
    actions: &HashMap<String, Value>,
    stats: &FlowStats,
    drawn: &mut HashSet<String>,
) -> Vec<Node> {
    let mut out = Vec::new();
    let mut next = start.map(str::to_owned);
    while let Some(id) = next.take() {
        let Some(action) = actions.get(&id) else {
            break;
        };
        let kind = action["type"].as_str().unwrap_or("step").to_owned();
        if !drawn.insert(id.clone()) || drawn.len() > MAX_STEPS {
            out.push(Node {
                branch: None,
                title: format!("Continues at {}", title(&kind, &action["data"])),
                id,
                kind,
                counts: Vec::new(),
                joins: true,
                children: Vec::new(),
            });
            break;
        }
        let links = &action["links"];
        let counts = stats
            .action(&id)
            .counts
            .into_iter()
            .filter(|(_, n)| *n != 0)
            .collect();
        let mut node = Node {
            branch: None,
            title: title(&kind, &action["data"]),
            id,
            kind,
            counts,
            joins: false,
            children: Vec::new(),
        };
        if links.get("next_if_true").is_some() || links.get("next_if_false").is_some() {
            for (label, key) in [("Yes", "next_if_true"), ("No", "next_if_false")] {
                node.children.push(Node {
                    branch: Some(label),
                    id: format!("{}-{key}", node.id),
                    kind: String::new(),
                    title: String::new(),
                    counts: Vec::new(),
                    joins: false,
                    children: chain(links[key].as_str(), actions, stats, drawn),
                });
            }
            out.push(node);
            break;
        }
        next = links["next"].as_str().map(str::to_owned);
        out.push(node);
    }
    out
}

/// A step's one-line description.
fn title(kind: &str, data: &Value) -> String {
    let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
    match kind {
        "time-delay" => format!("Wait {} {}", data["value"], text(&data["unit"])),
        "send-email" => format!("Email: {}", text(&data["message"]["subject_line"])),
        "send-webhook" => format!("Webhook to {}", text(&data["url"])),
        "conditional-split" => "Conditional split".into(),
        "trigger-split" => "Trigger split".into(),
        "update-profile" => "Update profile".into(),
        "list-update" => {
            let verb = if data["action"] == "remove" {
                "Remove from"
            } else {
                "Add to"
            };
            format!("{verb} list {}", text(&data["list_id"]))
        }
        other => other.to_owned(),
    }
}

#[derive(Serialize)]
struct StatusOption {
    value: &'static str,
    selected: bool,
}

#[derive(Serialize)]
struct FlowData {
    id: String,
    name: String,
    status: &'static str,
    statuses: Vec<StatusOption>,
    archived: bool,
    deletable: bool,
    trigger: &'static str,
    version: i64,
    totals: Vec<(String, i64)>,
    diagram: Vec<Node>,
}

async fn flow(
    State(console): State<Console>,
    signed_in: SignedIn,
    Path(id): Path<String>,
) -> ConsoleResult<Html<String>> {
    let flows = flows(&console)?;
    let flow = flows.get_flow(&id).await.map_err(flows_error)?;
    let stats = flows.stats(&flow.id).await.map_err(flows_error)?;
    let actions: HashMap<String, Value> = flow
        .definition
        .actions
        .iter()
        .map(|a| (a.id.clone(), a.to_json()))
        .collect();
    let mut drawn = HashSet::new();
    let diagram = chain(
        Some(flow.definition.entry_action_id.as_str()),
        &actions,
        &stats,
        &mut drawn,
    );
    let data = FlowData {
        id: flow.id,
        name: flow.name,
        status: flow.status.as_str(),
        statuses: SETTABLE
            .into_iter()
            .map(|s| StatusOption {
                value: s.as_str(),
                selected: s == flow.status,
            })
            .collect(),
        archived: flow.archived,
        deletable: flow.status == FlowStatus::Draft,
        trigger: flow.trigger_type,
        version: flow.version,
        totals: stats
            .flow
            .counts
            .into_iter()
            .filter(|(_, n)| *n != 0)
            .collect(),
        diagram,
    };
    console
        .inner
        .templates
        .render("flows/flow.html", Page::new(&signed_in, "flows", data))
}

#[derive(Deserialize)]
struct StatusForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    status: String,
}

/// `POST /flows/{id}/status`: draft, manual or live; then back to the flow.
async fn set_status(
    State(console): State<Console>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    Form(form): Form<StatusForm>,
) -> ConsoleResult<Response> {
    signed_in.check_csrf(&form.csrf)?;
    let status = FlowStatus::parse(&form.status)
        .filter(|s| SETTABLE.contains(s))
        .ok_or_else(|| ConsoleError::Invalid {
            field: "status".into(),
            message: format!(
                "'{}' is not a status; use draft, manual or live",
                form.status
            ),
        })?;
    let flows = flows(&console)?;
    let flow = flows
        .update_flow(
            &id,
            FlowUpdate {
                status: Some(status),
                ..FlowUpdate::default()
            },
        )
        .await
        .map_err(flows_error)?;
    tracing::info!(flow = %flow.id, status = status.as_str(), account = %signed_in.email, "flow status changed in the console");
    let to: String = format!("/flows/{}", encode(&flow.id));
    Ok(Redirect::to(&to).into_response())
}

// ---- Create flow ----

#[derive(Serialize)]
struct TemplateCard {
    key: &'static str,
    name: &'static str,
    description: &'static str,
    steps: &'static [&'static str],
}

/// `GET /flows/new`: the ready templates as cards, and starting from scratch.
async fn gallery(
    State(console): State<Console>,
    signed_in: SignedIn,
) -> ConsoleResult<Html<String>> {
    flows(&console)?;
    let cards: Vec<TemplateCard> = templates::catalogue()
        .iter()
        .map(|t| TemplateCard {
            key: t.key,
            name: t.name,
            description: t.description,
            steps: t.steps,
        })
        .collect();
    console.inner.templates.render(
        "flows/new.html",
        Page::new(&signed_in, "flows", json!({"templates": cards})),
    )
}

/// One option of a menu.
#[derive(Serialize)]
struct Choice {
    value: String,
    label: String,
    selected: bool,
}

/// What a form can offer: a first page of lists and metrics, and the segments.
struct Choices {
    lists: Vec<(String, String)>,
    metrics: Vec<(String, String)>,
    segments: Vec<(String, String)>,
}

fn engage(console: &Console) -> ConsoleResult<&Engage> {
    Ok(&console.engine()?.engage)
}

async fn choices(
    console: &Console,
    lists: bool,
    metrics: bool,
    segments: bool,
) -> ConsoleResult<Choices> {
    let mut out = Choices {
        lists: Vec::new(),
        metrics: Vec::new(),
        segments: Vec::new(),
    };
    if lists {
        out.lists = engage(console)?
            .list_lists(ListQuery {
                page_size: CHOICES,
                ..ListQuery::default()
            })
            .await
            .map_err(engage_error)?
            .items
            .into_iter()
            .map(|l| (l.id.0, l.name))
            .collect();
    }
    if metrics {
        out.metrics = engage(console)?
            .list_metrics(MetricQuery {
                page_size: CHOICES,
                ..MetricQuery::default()
            })
            .await
            .map_err(engage_error)?
            .items
            .into_iter()
            .map(|m| (m.id.0, format!("{} ({})", m.name, m.integration.name)))
            .collect();
    }
    if segments {
        out.segments = console
            .engine()?
            .audience
            .list_segments()
            .await
            .map_err(audience_error)?
            .into_iter()
            .take(CHOICES as usize)
            .map(|s| (s.id, s.name))
            .collect();
    }
    Ok(out)
}

fn kind_choices(choices: &Choices, kind: ParamKind) -> &[(String, String)] {
    match kind {
        ParamKind::List => &choices.lists,
        ParamKind::Metric => &choices.metrics,
        ParamKind::Segment => &choices.segments,
    }
}

#[derive(Serialize)]
struct ParamField {
    key: &'static str,
    label: &'static str,
    help: &'static str,
    kind: &'static str,
    choices: Vec<Choice>,
    error: Option<String>,
}

/// The menu of a parameter: the value given, else for a metric the first whose name is one
/// of the usual ones, selected.
fn param_field(
    param: &templates::TemplateParam,
    choices: &Choices,
    value: Option<&str>,
    errors: &FieldErrors,
) -> ParamField {
    let offered = kind_choices(choices, param.kind);
    let preselect = value.map(str::to_owned).or_else(|| {
        param.suggested.iter().find_map(|name| {
            offered
                .iter()
                .find(|(_, label)| label.starts_with(&format!("{name} (")))
                .map(|(id, _)| id.clone())
        })
    });
    ParamField {
        key: param.key,
        label: param.label,
        help: param.help,
        kind: param.kind.as_str(),
        choices: offered
            .iter()
            .map(|(id, label)| Choice {
                selected: preselect.as_deref() == Some(id.as_str()),
                value: id.clone(),
                label: label.clone(),
            })
            .collect(),
        error: errors.get(param.key).cloned(),
    }
}

fn find_template(key: &str) -> ConsoleResult<&'static FlowTemplate> {
    templates::find(key).ok_or_else(|| ConsoleError::NotFound(format!("flow template {key}")))
}

async fn render_template(
    console: &Console,
    signed_in: &SignedIn,
    template: &'static FlowTemplate,
    name: &str,
    values: &HashMap<String, String>,
    errors: FieldErrors,
) -> ConsoleResult<Response> {
    let kinds = |k| template.params.iter().any(|p| p.kind == k);
    let offered = choices(
        console,
        kinds(ParamKind::List),
        kinds(ParamKind::Metric),
        kinds(ParamKind::Segment),
    )
    .await?;
    let fields: Vec<ParamField> = template
        .params
        .iter()
        .map(|p| param_field(p, &offered, values.get(p.key).map(String::as_str), &errors))
        .collect();
    // Errors of no field of this form (a definition the engine refused), shown on their own.
    let other: Vec<String> = errors
        .iter()
        .filter(|(key, _)| key.as_str() != "name" && !template.params.iter().any(|p| p.key == *key))
        .map(|(_, message)| message.clone())
        .collect();
    let status = form_status(&errors);
    let page = console.inner.templates.render(
        "flows/template.html",
        Page::new(
            signed_in,
            "flows",
            json!({
                "template": TemplateCard {
                    key: template.key,
                    name: template.name,
                    description: template.description,
                    steps: template.steps,
                },
                "name": name,
                "fields": fields,
                "other_errors": other,
                "errors": errors,
            }),
        ),
    )?;
    Ok(with_status(status, page))
}

fn form_status(errors: &FieldErrors) -> axum::http::StatusCode {
    if errors.is_empty() {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::BAD_REQUEST
    }
}

/// `GET /flows/new/{template}`: the flow's name and the template's parameters.
async fn template(
    State(console): State<Console>,
    signed_in: SignedIn,
    Path(key): Path<String>,
) -> ConsoleResult<Response> {
    flows(&console)?;
    let template = find_template(&key)?;
    render_template(
        &console,
        &signed_in,
        template,
        template.name,
        &HashMap::new(),
        FieldErrors::new(),
    )
    .await
}

/// Whether the picked list, metric or segment exists; an error naming the field if not.
async fn check_pick(console: &Console, kind: ParamKind, id: &str) -> ConsoleResult<Option<String>> {
    let missing = match kind {
        ParamKind::List => match engage(console)?.get_list(&ListId(id.to_owned())).await {
            Ok(_) => false,
            Err(signalbox_engage::EngageError::NotFound { .. }) => true,
            Err(err) => return Err(engage_error(err)),
        },
        ParamKind::Metric => match engage(console)?.get_metric(&MetricId(id.to_owned())).await {
            Ok(_) => false,
            Err(signalbox_engage::EngageError::NotFound { .. }) => true,
            Err(err) => return Err(engage_error(err)),
        },
        ParamKind::Segment => {
            let audience = &console.engine()?.audience;
            match audience.get_segment(id).await {
                Ok(_) => false,
                Err(signalbox_audience::AudienceError::NotFound { .. }) => true,
                Err(err) => return Err(audience_error(err)),
            }
        }
    };
    Ok(missing.then(|| format!("there is no {} with the id '{id}'", kind.as_str())))
}

/// `POST /flows/new/{template}`: creates the flow in draft, then its page.
async fn create_from_template(
    State(console): State<Console>,
    signed_in: SignedIn,
    Path(key): Path<String>,
    RawForm(body): RawForm,
) -> ConsoleResult<Response> {
    let form = Fields::parse(&body);
    form.check_csrf(&signed_in)?;
    let flows = flows(&console)?;
    let template = find_template(&key)?;
    let name = form.text("name");
    let mut errors = FieldErrors::new();
    if name.is_empty() {
        errors.insert("name".into(), "give the flow a name".into());
    }
    let mut values = HashMap::new();
    for param in template.params {
        let value = form.text(param.key);
        if value.is_empty() {
            errors.insert(
                param.key.into(),
                format!("pick the {}", param.label.to_lowercase()),
            );
        } else if let Some(problem) = check_pick(&console, param.kind, &value).await? {
            errors.insert(param.key.into(), problem);
        }
        values.insert(param.key.to_owned(), value);
    }
    if errors.is_empty() {
        match flows
            .create_from_template(template.key, &name, &values)
            .await
        {
            Ok(flow) => {
                tracing::info!(flow = %flow.id, template = template.key, account = %signed_in.email, "flow created from a template in the console");
                return Ok(Redirect::to(&format!("/flows/{}", encode(&flow.id))).into_response());
            }
            Err(err) => field_error(&mut errors, form_error(err))?,
        }
    }
    render_template(&console, &signed_in, template, &name, &values, errors).await
}

/// A refused creation as a field error: the name, a parameter, or the steps.
fn form_error(err: FlowsError) -> ConsoleError {
    match err {
        FlowsError::Invalid { field, reason } => ConsoleError::Invalid {
            field: if field.ends_with("/name") {
                "name".into()
            } else {
                field
            },
            message: reason,
        },
        FlowsError::InvalidDefinition(problems) => {
            let at = |p: &signalbox_flows::DefinitionProblem| {
                p.pointer
                    .strip_prefix(signalbox_flows::definition::DEFINITION_POINTER)
                    .unwrap_or(&p.pointer)
                    .to_owned()
            };
            let field = if problems.iter().all(|p| at(p).starts_with("/actions")) {
                "actions"
            } else if problems.iter().all(|p| at(p).starts_with("/triggers")) {
                "trigger"
            } else {
                "actions"
            };
            ConsoleError::Invalid {
                field: field.into(),
                message: problems
                    .iter()
                    .map(|p| format!("at {}: {}", at(p), p.detail))
                    .collect::<Vec<_>>()
                    .join("; "),
            }
        }
        other => flows_error(other),
    }
}

/// The steps a flow from scratch starts with: one email, in draft.
const SCRATCH_ACTIONS: &str = r#"[
  {
    "temporary_id": "email",
    "type": "send-email",
    "data": {
      "message": {
        "subject_line": "Hello {{ first_name|default:\"there\" }}",
        "html": "<p>Write your message here.</p><p><a href=\"{{ unsubscribe_url }}\">Unsubscribe</a></p>"
      }
    },
    "links": {"next": null}
  }
]"#;

async fn render_scratch(
    console: &Console,
    signed_in: &SignedIn,
    name: &str,
    trigger: &str,
    actions: &str,
    errors: FieldErrors,
) -> ConsoleResult<Response> {
    let offered = choices(console, true, true, true).await?;
    let group = |prefix: &str, items: &[(String, String)]| -> Vec<Choice> {
        items
            .iter()
            .map(|(id, label)| {
                let value = format!("{prefix}:{id}");
                Choice {
                    selected: value == trigger,
                    value,
                    label: label.clone(),
                }
            })
            .collect()
    };
    let status = form_status(&errors);
    let page = console.inner.templates.render(
        "flows/scratch.html",
        Page::new(
            signed_in,
            "flows",
            json!({
                "name": name,
                "lists": group("list", &offered.lists),
                "metrics": group("metric", &offered.metrics),
                "segments": group("segment", &offered.segments),
                "actions": actions,
                "errors": errors,
            }),
        ),
    )?;
    Ok(with_status(status, page))
}

/// `GET /flows/new/scratch`: a name, a trigger, and the steps as JSON.
async fn scratch(State(console): State<Console>, signed_in: SignedIn) -> ConsoleResult<Response> {
    flows(&console)?;
    render_scratch(
        &console,
        &signed_in,
        "",
        "",
        SCRATCH_ACTIONS,
        FieldErrors::new(),
    )
    .await
}

/// `POST /flows/new/scratch`: the trigger picked and the steps given, in draft.
async fn create_scratch(
    State(console): State<Console>,
    signed_in: SignedIn,
    RawForm(body): RawForm,
) -> ConsoleResult<Response> {
    let form = Fields::parse(&body);
    form.check_csrf(&signed_in)?;
    let flows = flows(&console)?;
    let name = form.text("name");
    let trigger = form.text("trigger");
    let actions_text = form.get("actions").to_owned();
    let mut errors = FieldErrors::new();
    if name.is_empty() {
        errors.insert("name".into(), "give the flow a name".into());
    }
    let trigger_json = match trigger.split_once(':') {
        Some((kind, id)) if !id.is_empty() => {
            let kind = match kind {
                "list" => Some(ParamKind::List),
                "metric" => Some(ParamKind::Metric),
                "segment" => Some(ParamKind::Segment),
                _ => None,
            };
            match kind {
                Some(kind) => {
                    if let Some(problem) = check_pick(&console, kind, id).await? {
                        errors.insert("trigger".into(), problem);
                    }
                    Some(json!({"type": kind.as_str(), "id": id}))
                }
                None => {
                    errors.insert("trigger".into(), "pick a list, metric or segment".into());
                    None
                }
            }
        }
        _ => {
            errors.insert("trigger".into(), "pick a list, metric or segment".into());
            None
        }
    };
    let actions = match serde_json::from_str::<Value>(&actions_text) {
        Ok(Value::Array(items)) if !items.is_empty() => Some(items),
        Ok(_) => {
            errors.insert(
                "actions".into(),
                "expected a JSON array of at least one step".into(),
            );
            None
        }
        Err(err) => {
            errors.insert("actions".into(), format!("not JSON: {err}"));
            None
        }
    };
    if let (true, Some(trigger_json), Some(actions)) = (errors.is_empty(), trigger_json, actions) {
        let entry = actions[0]
            .get("temporary_id")
            .or_else(|| actions[0].get("id"))
            .cloned()
            .unwrap_or(Value::Null);
        let definition = json!({
            "triggers": [trigger_json],
            "entry_action_id": entry,
            "actions": actions,
        });
        match flows
            .create_flow(&name, &definition, Some(FlowStatus::Draft))
            .await
        {
            Ok(flow) => {
                tracing::info!(flow = %flow.id, account = %signed_in.email, "flow created from scratch in the console");
                return Ok(Redirect::to(&format!("/flows/{}", encode(&flow.id))).into_response());
            }
            Err(err) => field_error(&mut errors, form_error(err))?,
        }
    }
    render_scratch(&console, &signed_in, &name, &trigger, &actions_text, errors).await
}

// ---- Delete a draft ----

/// `GET /flows/{id}/delete`: asks before deleting a draft flow.
async fn confirm_delete(
    State(console): State<Console>,
    signed_in: SignedIn,
    Path(id): Path<String>,
) -> ConsoleResult<Html<String>> {
    let flow = flows(&console)?.get_flow(&id).await.map_err(flows_error)?;
    console.inner.templates.render(
        "flows/delete.html",
        Page::new(
            &signed_in,
            "flows",
            json!({
                "id": flow.id,
                "name": flow.name,
                "draft": flow.status == FlowStatus::Draft,
                "status": flow.status.as_str(),
            }),
        ),
    )
}

/// `POST /flows/{id}/delete`: deletes a flow in draft; others are refused.
async fn delete(
    State(console): State<Console>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    RawForm(body): RawForm,
) -> ConsoleResult<Response> {
    Fields::parse(&body).check_csrf(&signed_in)?;
    let flows = flows(&console)?;
    let flow = flows.get_flow(&id).await.map_err(flows_error)?;
    if flow.status != FlowStatus::Draft {
        return Err(ConsoleError::Invalid {
            field: "status".into(),
            message: format!(
                "only a draft flow can be deleted; this one is {}, set it to draft first",
                flow.status.as_str()
            ),
        });
    }
    flows.delete_flow(&flow.id).await.map_err(flows_error)?;
    tracing::info!(flow = %flow.id, account = %signed_in.email, "draft flow deleted in the console");
    Ok(Redirect::to("/flows?done=deleted").into_response())
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn actions(list: Value) -> HashMap<String, Value> {
        list.as_array()
            .expect("actions")
            .iter()
            .map(|a| (a["id"].as_str().expect("id").to_owned(), a.clone()))
            .collect()
    }

    #[test]
    fn a_diagram_follows_links_and_branches_and_draws_each_step_once() {
        let actions = actions(json!([
            {"id": "a", "type": "time-delay", "data": {"unit": "hours", "value": 4}, "links": {"next": "s"}},
            {"id": "s", "type": "conditional-split", "data": {}, "links": {"next_if_true": "e", "next_if_false": "l"}},
            {"id": "e", "type": "send-email", "data": {"message": {"subject_line": "Hi"}}, "links": {"next": null}},
            {"id": "l", "type": "list-update", "data": {"list_id": "L1", "action": "add"}, "links": {"next": "e"}},
        ]));
        let mut drawn = HashSet::new();
        let nodes = chain(Some("a"), &actions, &FlowStats::default(), &mut drawn);
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[0].title, "Wait 4 hours");
        let split = &nodes[1];
        assert_eq!(split.title, "Conditional split");
        assert_eq!(split.children.len(), 2);
        assert_eq!(split.children[0].branch, Some("Yes"));
        assert_eq!(split.children[0].children[0].title, "Email: Hi");
        let no = &split.children[1].children;
        assert_eq!(no[0].title, "Add to list L1");
        assert!(no[1].joins, "the email is drawn once");
        assert_eq!(no[1].title, "Continues at Email: Hi");
    }

    #[test]
    fn a_loop_ends_the_drawing() {
        let actions = actions(json!([
            {"id": "a", "type": "time-delay", "data": {"unit": "days", "value": 1}, "links": {"next": "a"}},
        ]));
        let nodes = chain(
            Some("a"),
            &actions,
            &FlowStats::default(),
            &mut HashSet::new(),
        );
        assert_eq!(nodes.len(), 2);
        assert!(nodes[1].joins);
    }
}
