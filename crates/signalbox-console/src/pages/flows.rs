//! Flows: the flows with their status (`/flows`), and a flow's page (`/flows/{id}`) that draws
//! its steps as a diagram of nested boxes with each step's counts, and switches its status
//! between draft, manual and live.
//!
//! Reads: `Flows::list_flows`, `Flows::get_flow`, `Flows::stats`. Writes:
//! `Flows::update_flow` with a new status (the same change as `PATCH /api/flows/{id}`).

use std::collections::{HashMap, HashSet};

use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Form;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use signalbox_flows::{FlowStats, FlowStatus, FlowUpdate, Flows, FlowsError};

use crate::auth::SignedIn;
use crate::error::{ConsoleError, ConsoleResult};
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
];

/// The most steps a diagram draws (a definition holds far fewer).
const MAX_STEPS: usize = 500;

/// The statuses a person may switch a flow to here.
const SETTABLE: [FlowStatus; 3] = [FlowStatus::Draft, FlowStatus::Manual, FlowStatus::Live];

pub(crate) fn routes() -> axum::Router<Console> {
    axum::Router::new()
        .route("/flows", get(index))
        .route("/flows/{id}", get(flow))
        .route("/flows/{id}/status", post(set_status))
}

fn flows(console: &Console) -> ConsoleResult<&Flows> {
    console
        .deps()
        .flows
        .as_ref()
        .ok_or(ConsoleError::Unavailable("the flows engine"))
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
}

async fn index(State(console): State<Console>, signed_in: SignedIn) -> ConsoleResult<Html<String>> {
    let flows = flows(&console)?;
    let mut all = flows.list_flows().await.map_err(flows_error)?;
    all.sort_by_key(|f| std::cmp::Reverse(f.updated));
    let data = IndexData {
        flows: all
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
