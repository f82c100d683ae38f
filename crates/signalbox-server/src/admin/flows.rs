//! `/admin/v1/flows/{id}/messages`: the review queue of a flow's messages held for review (a
//! `manual` flow or message), and their release. The CLI's `signalbox flow messages`,
//! `flow approve` and `flow skip` use it.
//!
//! - `GET …/messages?status=pending&after=ID&limit=N`: `{"data":[{"id","flowId","actionId",
//!   "kind","runId","profileId","email","subject","status","created","expires","decided"}],
//!   "next"}`, oldest first; `status` is `pending`, `approved`, `skipped`, `expired` or
//!   `cancelled` (every status when absent).
//! - `POST …/messages/{message_id}/approve`: the worker sends it (after the consent and
//!   suppression checks) and its run moves on; answers the message. Approving it again
//!   changes nothing; a message that was skipped, expired or cancelled is a 409.
//! - `POST …/messages/{message_id}/skip`: it is never sent (`skipped:manual`) and its run
//!   moves on. Skipping it again changes nothing; an approved, expired or cancelled one is a
//!   409.

use axum::extract::State;
use axum::Json;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use signalbox_flows::{FlowsError, HeldMessage, HeldStatus};

use super::auth::AdminKey;
use super::error::AdminError;
use super::extract::{parse_cursor, parse_limit, AdminPath, AdminQuery};
use crate::app::AppState;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HeldView {
    pub id: i64,
    pub flow_id: String,
    pub action_id: String,
    /// `send-email` or `send-webhook`.
    pub kind: String,
    pub run_id: i64,
    pub profile_id: String,
    pub email: Option<String>,
    /// The subject line as the action writes it (rendered when sent).
    pub subject: Option<String>,
    pub status: &'static str,
    pub created: Timestamp,
    pub expires: Timestamp,
    pub decided: Option<Timestamp>,
}

impl From<HeldMessage> for HeldView {
    fn from(held: HeldMessage) -> HeldView {
        HeldView {
            id: held.id,
            flow_id: held.flow_id,
            action_id: held.action_id,
            kind: held.kind,
            run_id: held.run_id,
            profile_id: held.profile_id,
            email: held.email,
            subject: held.subject,
            status: held.status.as_str(),
            created: held.created,
            expires: held.expires,
            decided: held.decided,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct HeldPageView {
    pub data: Vec<HeldView>,
    /// The `after` of the next page; `null` on the last.
    pub next: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub struct ListParams {
    status: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

/// The engine's errors on the wire; `message_field` names the input a missing message or a
/// refused change is about.
fn flows_error(err: FlowsError, message_field: Option<&'static str>) -> AdminError {
    match err {
        FlowsError::NotFound { what } => AdminError::NotFound {
            what,
            field: message_field,
        },
        FlowsError::Invalid { field, reason } => AdminError::invalid(field, reason),
        FlowsError::InvalidDefinition(problems) => AdminError::invalid(
            "definition",
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        ),
        FlowsError::Conflict { reason } => AdminError::Refused {
            reason,
            field: message_field,
        },
        FlowsError::Unavailable => AdminError::Unavailable,
        FlowsError::Internal(detail) => AdminError::Internal(detail),
    }
}

fn parse_status(text: Option<&str>) -> Result<Option<HeldStatus>, AdminError> {
    let Some(text) = text.filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    HeldStatus::parse(text).map(Some).ok_or_else(|| {
        let known: Vec<&str> = HeldStatus::ALL.iter().map(|s| s.as_str()).collect();
        AdminError::invalid(
            "status",
            format!("{text:?} is not a status; use {}", known.join(", ")),
        )
    })
}

fn parse_message_id(text: &str) -> Result<i64, AdminError> {
    text.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| AdminError::invalid("message_id", "must be a positive integer"))
}

/// `GET /admin/v1/flows/{id}/messages`.
pub async fn messages(
    _key: AdminKey,
    State(app): State<AppState>,
    AdminPath(flow_id): AdminPath<String>,
    AdminQuery(params): AdminQuery<ListParams>,
) -> Result<Json<HeldPageView>, AdminError> {
    let status = parse_status(params.status.as_deref())?;
    let after = parse_cursor("after", params.after.as_deref())?;
    let limit = parse_limit(params.limit.as_deref())?;
    let page = super::engine(&app)?
        .flows
        .messages(&flow_id, status, Some(after), limit as usize)
        .await
        .map_err(|err| flows_error(err, None))?;
    Ok(Json(HeldPageView {
        data: page.messages.into_iter().map(HeldView::from).collect(),
        next: page.next,
    }))
}

/// `POST /admin/v1/flows/{id}/messages/{message_id}/approve`.
pub async fn approve(
    key: AdminKey,
    State(app): State<AppState>,
    AdminPath((flow_id, message_id)): AdminPath<(String, String)>,
) -> Result<Json<HeldView>, AdminError> {
    let id = parse_message_id(&message_id)?;
    let held = super::engine(&app)?
        .flows
        .approve_message(&flow_id, id)
        .await
        .map_err(|err| flows_error(err, Some("message_id")))?;
    tracing::info!(
        api_key = key.name(),
        flow = flow_id,
        message = id,
        "held flow message approved"
    );
    Ok(Json(held.into()))
}

/// `POST /admin/v1/flows/{id}/messages/{message_id}/skip`.
pub async fn skip(
    key: AdminKey,
    State(app): State<AppState>,
    AdminPath((flow_id, message_id)): AdminPath<(String, String)>,
) -> Result<Json<HeldView>, AdminError> {
    let id = parse_message_id(&message_id)?;
    let held = super::engine(&app)?
        .flows
        .skip_message(&flow_id, id)
        .await
        .map_err(|err| flows_error(err, Some("message_id")))?;
    tracing::info!(
        api_key = key.name(),
        flow = flow_id,
        message = id,
        "held flow message skipped"
    );
    Ok(Json(held.into()))
}
