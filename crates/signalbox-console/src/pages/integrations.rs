//! Integrations: apps to connect, and the Segment setup in its steps.
//!
//! - `GET /integrations`: Explore apps, with the Segment card (its status, lag and recent
//!   deliveries once installed).
//! - `GET|POST /integrations/segment/install`: Write Key and Endpoint; Connect to Segment
//!   creates the `segment` destination, paused.
//! - `GET|POST /integrations/segment/{name}/setup`: the profiles option; Complete setup sets
//!   it and resumes the destination.

use axum::extract::{Path, RawForm, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde_json::{json, Value};
use signalbox_sync::{
    DestinationConfig, DestinationKind, DestinationPatch, DestinationState, NewDestination, Secret,
    SEGMENT_US_ENDPOINT,
};

use crate::auth::SignedIn;
use crate::error::{ConsoleError, ConsoleResult};
use crate::pages::connections::{
    field_error, sync_error, sync_of, with_status, FieldErrors, Fields,
};
use crate::pages::Page;
use crate::Console;

pub(crate) const TEMPLATES: &[(&str, &str)] = &[
    (
        "integrations/index.html",
        include_str!("../../templates/integrations/index.html"),
    ),
    (
        "integrations/install.html",
        include_str!("../../templates/integrations/install.html"),
    ),
    (
        "integrations/setup.html",
        include_str!("../../templates/integrations/setup.html"),
    ),
];

/// The name the Segment integration's destination gets.
const SEGMENT_NAME: &str = "segment";

/// Recent deliveries shown on the card.
const CARD_DELIVERIES: u32 = 5;

pub(crate) fn routes() -> axum::Router<Console> {
    axum::Router::new()
        .route("/integrations", get(index))
        .route(
            "/integrations/segment/install",
            get(install_form).post(install),
        )
        .route(
            "/integrations/segment/{name}/setup",
            get(setup_form).post(complete_setup),
        )
}

async fn index(
    State(console): State<Console>,
    signed_in: SignedIn,
) -> ConsoleResult<axum::response::Html<String>> {
    let mut installed = Vec::new();
    if let Some(sync) = &console.deps().sync {
        for destination in sync.list().await.map_err(sync_error)? {
            if destination.config.kind() != DestinationKind::Segment {
                continue;
            }
            let status = sync.status(&destination.name).await.map_err(sync_error)?;
            let deliveries = sync
                .deliveries(&destination.name, CARD_DELIVERIES)
                .await
                .map_err(sync_error)?;
            installed.push(json!({
                "name": destination.name,
                "state": status.state,
                "circuit": status.circuit,
                "lag_seconds": format!("{:.1}", status.lag_seconds),
                "delivered": status.delivered,
                "dead_lettered": status.dead_lettered,
                "last_error": status.last_error,
                "write_key": redacted_write_key(&destination.config),
                "deliveries": deliveries.iter().map(|d| json!({
                    "at": d.at.to_string(),
                    "status": d.status,
                    "outcome": d.outcome,
                    "items": d.items,
                })).collect::<Vec<_>>(),
            }));
        }
    }
    let data = json!({
        "sync": console.deps().sync.is_some(),
        "installed": installed,
    });
    console.inner.templates.render(
        "integrations/index.html",
        Page::new(&signed_in, "integrations", data),
    )
}

fn redacted_write_key(config: &DestinationConfig) -> String {
    match config {
        DestinationConfig::Segment { write_key, .. } => write_key.redacted(),
        _ => String::new(),
    }
}

async fn install_form(
    State(console): State<Console>,
    signed_in: SignedIn,
) -> ConsoleResult<Response> {
    render_install(
        &console,
        &signed_in,
        json!({"endpoint": SEGMENT_US_ENDPOINT}),
        FieldErrors::new(),
    )
}

fn render_install(
    console: &Console,
    signed_in: &SignedIn,
    values: Value,
    errors: FieldErrors,
) -> ConsoleResult<Response> {
    sync_of(console)?;
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    let page = console.inner.templates.render(
        "integrations/install.html",
        Page::new(
            signed_in,
            "integrations",
            json!({"values": values, "errors": errors}),
        ),
    )?;
    Ok(with_status(status, page))
}

/// Connect to Segment: the destination is created paused, so nothing is sent before the
/// setup is complete.
async fn install(
    State(console): State<Console>,
    signed_in: SignedIn,
    RawForm(body): RawForm,
) -> ConsoleResult<Response> {
    let form = Fields::parse(&body);
    form.check_csrf(&signed_in)?;
    let sync = sync_of(&console)?;
    let write_key = form.get("write_key").trim().to_owned();
    let endpoint = match form.text("endpoint") {
        text if text.is_empty() => SEGMENT_US_ENDPOINT.to_owned(),
        text => text,
    };
    let values = json!({"endpoint": form.text("endpoint")});
    let mut errors = FieldErrors::new();
    if write_key.is_empty() {
        errors.insert(
            "write_key".into(),
            "is required: the write key of the Segment source to send to".into(),
        );
        return render_install(&console, &signed_in, values, errors);
    }
    let new = NewDestination {
        name: SEGMENT_NAME.to_owned(),
        config: DestinationConfig::Segment {
            write_key: Secret::new(write_key),
            endpoint,
            only_segment_profiles: false,
        },
        rate: None,
    };
    // Paused from its creation: nothing is sent before the setup is complete.
    let created = match sync.create_paused(new).await {
        Ok(created) => created,
        Err(err) => {
            field_error(&mut errors, install_field(sync_error(err)))?;
            return render_install(&console, &signed_in, values, errors);
        }
    };
    tracing::info!(
        account = signed_in.email,
        destination = created.name,
        "segment integration connected"
    );
    Ok(Redirect::to(&format!("/integrations/segment/{}/setup", created.name)).into_response())
}

/// The install form has no name field: a name taken means Segment is already installed.
fn install_field(err: ConsoleError) -> ConsoleError {
    match err {
        ConsoleError::Invalid { field, .. } if field == "name" => ConsoleError::Invalid {
            field: "write_key".into(),
            message: format!(
                "Segment is already installed (a destination named {SEGMENT_NAME:?} exists)"
            ),
        },
        other => other,
    }
}

async fn setup_form(
    State(console): State<Console>,
    signed_in: SignedIn,
    Path(name): Path<String>,
) -> ConsoleResult<axum::response::Html<String>> {
    let sync = sync_of(&console)?;
    let destination = sync.get(&name).await.map_err(sync_error)?;
    let DestinationConfig::Segment {
        write_key,
        endpoint,
        only_segment_profiles,
    } = &destination.config
    else {
        return Err(ConsoleError::NotFound(format!(
            "Segment integration {name:?}"
        )));
    };
    let data = json!({
        "name": destination.name,
        "state": destination.state,
        "write_key": write_key.redacted(),
        "endpoint": endpoint,
        "only_segment_profiles": only_segment_profiles,
    });
    console.inner.templates.render(
        "integrations/setup.html",
        Page::new(&signed_in, "integrations", data),
    )
}

async fn complete_setup(
    State(console): State<Console>,
    signed_in: SignedIn,
    Path(name): Path<String>,
    RawForm(body): RawForm,
) -> ConsoleResult<Response> {
    let form = Fields::parse(&body);
    form.check_csrf(&signed_in)?;
    let sync = sync_of(&console)?;
    let destination = sync.get(&name).await.map_err(sync_error)?;
    if destination.config.kind() != DestinationKind::Segment {
        return Err(ConsoleError::NotFound(format!(
            "Segment integration {name:?}"
        )));
    }
    let patch = DestinationPatch {
        state: Some(DestinationState::Active),
        only_segment_profiles: Some(form.checked("only_segment_profiles")),
        ..DestinationPatch::default()
    };
    sync.patch(&name, patch).await.map_err(sync_error)?;
    tracing::info!(
        account = signed_in.email,
        destination = name,
        "segment integration set up"
    );
    Ok(Redirect::to("/integrations").into_response())
}
