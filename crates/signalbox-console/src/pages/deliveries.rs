//! Deliveries: each destination's health, and one destination's deliveries and dead letters.
//!
//! - `GET /deliveries`: per destination state, circuit, retrying, lag and counts.
//! - `GET /deliveries/{name}`: the same in full, the last error, the recent requests with
//!   their responses (secrets already redacted by the sync engine), the dead letters.
//! - `POST /deliveries/{name}/replay`: sends the dead letters again.
//! - `POST /deliveries/{name}/pause`, `…/resume`.

use axum::extract::{Path, Query, RawForm, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use signalbox_sync::{DestinationPatch, DestinationState, DestinationStatus, Replay};

use crate::auth::SignedIn;
use crate::error::ConsoleResult;
use crate::pages::connections::{sync_error, sync_of, Fields};
use crate::pages::Page;
use crate::Console;

pub(crate) const TEMPLATES: &[(&str, &str)] = &[
    (
        "deliveries/index.html",
        include_str!("../../templates/deliveries/index.html"),
    ),
    (
        "deliveries/destination.html",
        include_str!("../../templates/deliveries/destination.html"),
    ),
];

/// Recent requests shown on a destination's page.
const RECENT: u32 = 20;
/// Dead letters listed on a destination's page (the oldest first); the count says how many
/// there are in all.
const DEAD_LETTERS_SHOWN: usize = 100;

pub(crate) fn routes() -> axum::Router<Console> {
    axum::Router::new()
        .route("/deliveries", get(index))
        .route("/deliveries/{name}", get(destination))
        .route("/deliveries/{name}/replay", post(replay))
        .route("/deliveries/{name}/pause", post(pause))
        .route("/deliveries/{name}/resume", post(resume))
}

fn health(status: &DestinationStatus) -> serde_json::Value {
    json!({
        "name": status.name,
        "kind": status.kind.as_str(),
        "state": status.state,
        "target": status.target,
        "circuit": status.circuit,
        "retrying": status.retrying,
        "lag_seconds": format!("{:.1}", status.lag_seconds),
        "queued": status.queued,
        "delivered": status.delivered,
        "retried": status.retried,
        "failed": status.failed,
        "dead_lettered": status.dead_lettered,
        "throughput": format!("{:.1}", status.throughput),
        "last_error": status.last_error,
        "last_error_at": status.last_error_at.map(|t| t.to_string()),
        "last_delivery_at": status.last_delivery_at.map(|t| t.to_string()),
    })
}

async fn index(State(console): State<Console>, signed_in: SignedIn) -> ConsoleResult<Html<String>> {
    let sync = sync_of(&console)?;
    let statuses = sync.statuses().await.map_err(sync_error)?;
    let data = json!({"destinations": statuses.iter().map(health).collect::<Vec<_>>()});
    console.inner.templates.render(
        "deliveries/index.html",
        Page::new(&signed_in, "deliveries", data),
    )
}

#[derive(Deserialize)]
struct Notice {
    #[serde(default)]
    done: Option<String>,
}

fn notice_text(code: Option<&str>) -> Option<&'static str> {
    match code? {
        "replay" => Some("Replay requested: the dead letters are sent again within a second."),
        "paused" => Some("Paused: nothing is sent until it is resumed."),
        "resumed" => Some("Resumed."),
        _ => None,
    }
}

async fn destination(
    State(console): State<Console>,
    signed_in: SignedIn,
    Path(name): Path<String>,
    Query(notice): Query<Notice>,
) -> ConsoleResult<Html<String>> {
    let sync = sync_of(&console)?;
    let status = sync.status(&name).await.map_err(sync_error)?;
    let deliveries = sync.deliveries(&name, RECENT).await.map_err(sync_error)?;
    let letters = sync.dead_letters(&name).await.map_err(sync_error)?;
    let data = json!({
        "d": health(&status),
        "notice": notice_text(notice.done.as_deref()),
        "deliveries": deliveries.iter().map(|d| json!({
            "at": d.at.to_string(),
            "method": d.method,
            "url": d.url,
            "headers": d.request_headers.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join("\n"),
            "body": d.request_body,
            "status": d.status,
            "response": d.response_body,
            "error": d.error,
            "duration_ms": format!("{:.0}", d.duration_ms),
            "items": d.items,
            "outcome": d.outcome,
        })).collect::<Vec<_>>(),
        "dead_letter_count": letters.len(),
        "dead_letters": letters.iter().take(DEAD_LETTERS_SHOWN).map(|l| json!({
            "id": l.id,
            "message_id": l.message_id,
            "reason": l.reason,
            "status": l.status,
            "response": l.response,
            "payload": serde_json::to_string_pretty(&l.payload).unwrap_or_default(),
            "at": l.at.to_string(),
        })).collect::<Vec<_>>(),
    });
    console.inner.templates.render(
        "deliveries/destination.html",
        Page::new(&signed_in, "deliveries", data),
    )
}

async fn replay(
    State(console): State<Console>,
    signed_in: SignedIn,
    Path(name): Path<String>,
    RawForm(body): RawForm,
) -> ConsoleResult<Response> {
    Fields::parse(&body).check_csrf(&signed_in)?;
    let sync = sync_of(&console)?;
    sync.get(&name).await.map_err(sync_error)?;
    sync.replay(&name, Replay::DeadLetters)
        .await
        .map_err(sync_error)?;
    tracing::info!(
        account = signed_in.email,
        destination = name,
        "dead letters replay requested"
    );
    Ok(Redirect::to(&format!("/deliveries/{name}?done=replay")).into_response())
}

async fn pause(
    state: State<Console>,
    signed_in: SignedIn,
    name: Path<String>,
    form: RawForm,
) -> ConsoleResult<Response> {
    set_state(state, signed_in, name, form, DestinationState::Paused).await
}

async fn resume(
    state: State<Console>,
    signed_in: SignedIn,
    name: Path<String>,
    form: RawForm,
) -> ConsoleResult<Response> {
    set_state(state, signed_in, name, form, DestinationState::Active).await
}

async fn set_state(
    State(console): State<Console>,
    signed_in: SignedIn,
    Path(name): Path<String>,
    RawForm(body): RawForm,
    state: DestinationState,
) -> ConsoleResult<Response> {
    Fields::parse(&body).check_csrf(&signed_in)?;
    let sync = sync_of(&console)?;
    let patch = DestinationPatch {
        state: Some(state),
        ..DestinationPatch::default()
    };
    sync.patch(&name, patch).await.map_err(sync_error)?;
    let done = match state {
        DestinationState::Paused => "paused",
        DestinationState::Active => "resumed",
    };
    tracing::info!(
        account = signed_in.email,
        destination = name,
        done,
        "destination state set"
    );
    Ok(Redirect::to(&format!("/deliveries/{name}?done={done}")).into_response())
}
