//! Connections: sources (create, a source's page with its Settings › API Keys) and
//! destinations (the catalog of kinds, Configure Klaviyo, webhook and Segment forms).
//!
//! - `GET /connections`: sources with their status and a create form; destinations with kind,
//!   state and target.
//! - `POST /sources` (`name`): creates a source and shows its page.
//! - `GET /sources/{name}`: the source's overview; `GET /sources/{name}/settings`: its write
//!   key masked, its engage destination settings.
//! - `POST /sources/{name}/settings/reveal`: the settings page with the write key shown.
//! - `POST /sources/{name}/settings/rotate` (`grace`, as `source rotate-key --grace`).
//! - `POST /sources/{name}/disable`, `…/enable`: its calls refused (401) or accepted again.
//! - `GET /destinations/catalog?q=`: the kinds, filtered by the search.
//! - `GET|POST /destinations/new/klaviyo` (Configure Klaviyo), `…/webhook`, `…/segment`.
//!
//! Every POST checks the session's CSRF token first. A write key is in a page only in the
//! answer to a Reveal (a POST, never cached); destination secrets are never shown back.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, RawForm, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use jiff::SignedDuration;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use signalbox_core::SourceStatus;
use signalbox_engage::DestinationSettings;
use signalbox_store::StoreError;
use signalbox_sync::{
    DestinationConfig, NewDestination, Secret, Sync, SyncError, KLAVIYO_ENDPOINT,
    SEGMENT_US_ENDPOINT,
};

use crate::auth::{SignedIn, CSRF_FIELD};
use crate::error::{ConsoleError, ConsoleResult};
use crate::pages::Page;
use crate::Console;

pub(crate) const TEMPLATES: &[(&str, &str)] = &[
    (
        "connections/index.html",
        include_str!("../../templates/connections/index.html"),
    ),
    (
        "connections/source.html",
        include_str!("../../templates/connections/source.html"),
    ),
    (
        "connections/catalog.html",
        include_str!("../../templates/connections/catalog.html"),
    ),
    (
        "connections/klaviyo.html",
        include_str!("../../templates/connections/klaviyo.html"),
    ),
    (
        "connections/webhook.html",
        include_str!("../../templates/connections/webhook.html"),
    ),
    (
        "connections/segment.html",
        include_str!("../../templates/connections/segment.html"),
    ),
    (
        "connections/field.html",
        include_str!("../../templates/connections/field.html"),
    ),
];

pub(crate) fn routes() -> axum::Router<Console> {
    axum::Router::new()
        .route("/connections", get(index))
        .route("/sources", post(create_source))
        .route("/sources/{name}", get(source_overview))
        .route("/sources/{name}/settings", get(source_settings))
        .route("/sources/{name}/settings/reveal", post(reveal_key))
        .route("/sources/{name}/settings/rotate", post(rotate_key))
        .route("/sources/{name}/disable", post(disable_source))
        .route("/sources/{name}/enable", post(enable_source))
        .route("/destinations/catalog", get(catalog))
        .route(
            "/destinations/new/klaviyo",
            get(klaviyo_form).post(klaviyo_save),
        )
        .route(
            "/destinations/new/webhook",
            get(webhook_form).post(webhook_save),
        )
        .route(
            "/destinations/new/segment",
            get(segment_form).post(segment_save),
        )
}

/// The grace choices of rotate, as `source rotate-key --grace` takes them; the default first.
const GRACE_CHOICES: &[(&str, &str)] = &[
    ("24h", "24 hours (default)"),
    ("1h", "1 hour"),
    ("168h", "7 days"),
    ("0s", "None: the old key stops now"),
];

// ---- shared by the connections, integrations and deliveries pages ----

/// A submitted form's fields, in order (a checkbox group gives a name several times).
pub(crate) struct Fields(Vec<(String, String)>);

impl Fields {
    pub fn parse(body: &[u8]) -> Fields {
        Fields(form_urlencoded::parse(body).into_owned().collect())
    }

    /// Refuses the form unless it carries the session's CSRF token.
    pub fn check_csrf(&self, signed_in: &SignedIn) -> ConsoleResult<()> {
        signed_in.check_csrf(self.get(CSRF_FIELD))
    }

    /// The first value of a field, `""` when absent.
    pub fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map_or("", |(_, value)| value.as_str())
    }

    /// The value of a field, trimmed.
    pub fn text(&self, name: &str) -> String {
        self.get(name).trim().to_owned()
    }

    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(key, value)| key == name && !value.is_empty())
            .map(|(_, value)| value.clone())
            .collect()
    }

    /// A checkbox: ticked when sent with a value.
    pub fn checked(&self, name: &str) -> bool {
        !self.get(name).is_empty()
    }
}

/// Errors of a form, by field name; shown next to each field (`role="alert"`).
pub(crate) type FieldErrors = BTreeMap<String, String>;

/// Puts a field error into `errors`; any other error is the page's.
pub(crate) fn field_error(errors: &mut FieldErrors, err: ConsoleError) -> ConsoleResult<()> {
    match err {
        ConsoleError::Invalid { field, message } => {
            errors.insert(field, message);
            Ok(())
        }
        other => Err(other),
    }
}

pub(crate) fn store_error(err: StoreError) -> ConsoleError {
    match err {
        StoreError::NotFound { what } => ConsoleError::NotFound(what),
        StoreError::Invalid { field, reason } => ConsoleError::Invalid {
            field: field.to_owned(),
            message: reason,
        },
        StoreError::Conflict { what } => ConsoleError::Invalid {
            field: "name".to_owned(),
            message: format!("{what} already exists"),
        },
        other => ConsoleError::internal(other),
    }
}

pub(crate) fn sync_error(err: SyncError) -> ConsoleError {
    match err {
        SyncError::Invalid { field, message } => ConsoleError::Invalid { field, message },
        SyncError::NotFound(name) => ConsoleError::NotFound(format!("destination {name:?}")),
        SyncError::Conflict(name) => ConsoleError::Invalid {
            field: "name".to_owned(),
            message: format!("a destination named {name:?} already exists"),
        },
        other => ConsoleError::internal(other),
    }
}

/// The sync engine, or the page says it is not running.
pub(crate) fn sync_of(console: &Console) -> ConsoleResult<&Sync> {
    console
        .deps()
        .sync
        .as_ref()
        .ok_or(ConsoleError::Unavailable("the destinations engine"))
}

/// A page rendered with a status (a form sent back with its errors is a 400).
pub(crate) fn with_status(status: axum::http::StatusCode, page: Html<String>) -> Response {
    (status, page).into_response()
}

/// A page that holds a secret: not stored by the browser or anything between.
fn uncached(page: Html<String>) -> Response {
    ([(header::CACHE_CONTROL, "no-store")], page).into_response()
}

fn see(path: String) -> Response {
    Redirect::to(&path).into_response()
}

fn form_status(errors: &FieldErrors) -> axum::http::StatusCode {
    if errors.is_empty() {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::BAD_REQUEST
    }
}

// ---- Connections ----

async fn index(State(console): State<Console>, signed_in: SignedIn) -> ConsoleResult<Response> {
    render_index(&console, &signed_in, "", FieldErrors::new()).await
}

async fn render_index(
    console: &Console,
    signed_in: &SignedIn,
    name: &str,
    errors: FieldErrors,
) -> ConsoleResult<Response> {
    let deps = console.deps();
    let sources = deps.store.list_sources().await.map_err(store_error)?;
    let destinations: Vec<Value> = match &deps.sync {
        Some(sync) => sync
            .list()
            .await
            .map_err(sync_error)?
            .iter()
            .map(|d| {
                json!({
                    "name": d.name,
                    "kind": d.config.kind().as_str(),
                    "state": d.state,
                    "target": d.config.target(),
                    "sources": d.config.sources(),
                })
            })
            .collect(),
        None => Vec::new(),
    };
    let data = json!({
        "sources": sources.iter().map(|s| json!({
            "name": s.name,
            "display_name": s.display_name,
            "status": s.status.as_str(),
            "created_at": s.created_at.to_string(),
        })).collect::<Vec<_>>(),
        "destinations": destinations,
        "sync": deps.sync.is_some(),
        "values": {"name": name},
        "status": form_status(&errors).as_u16(),
        "errors": errors,
    });
    let page = console.inner.templates.render(
        "connections/index.html",
        Page::new(signed_in, "connections", data),
    )?;
    Ok(with_status(form_status(&errors), page))
}

async fn create_source(
    State(console): State<Console>,
    signed_in: SignedIn,
    RawForm(body): RawForm,
) -> ConsoleResult<Response> {
    let form = Fields::parse(&body);
    form.check_csrf(&signed_in)?;
    let name = form.text("name");
    match console.deps().store.create_source(&name).await {
        Ok((source, _key)) => {
            tracing::info!(
                account = signed_in.email,
                source = source.name,
                "source created"
            );
            Ok(see(format!("/sources/{}?done=created", source.name)))
        }
        Err(err) => {
            let mut errors = FieldErrors::new();
            field_error(&mut errors, store_error(err))?;
            render_index(&console, &signed_in, &name, errors).await
        }
    }
}

// ---- A source ----

#[derive(Deserialize)]
struct Notice {
    #[serde(default)]
    done: Option<String>,
}

/// What a notice code of a redirect says.
fn notice_text(code: Option<&str>) -> Option<&'static str> {
    match code? {
        "created" => Some("Source created."),
        "klaviyo" => Some("Klaviyo settings saved."),
        "rotated" => Some("Write key rotated. The old key keeps working for its grace period."),
        "rotated-now" => Some("Write key rotated. The old key no longer works."),
        "disabled" => Some("Source disabled: its calls are refused until it is enabled."),
        "enabled" => Some("Source enabled."),
        _ => None,
    }
}

async fn source_overview(
    State(console): State<Console>,
    signed_in: SignedIn,
    Path(name): Path<String>,
    Query(notice): Query<Notice>,
) -> ConsoleResult<Response> {
    render_source(&console, &signed_in, &name, "overview", None, notice.done).await
}

async fn source_settings(
    State(console): State<Console>,
    signed_in: SignedIn,
    Path(name): Path<String>,
    Query(notice): Query<Notice>,
) -> ConsoleResult<Response> {
    render_source(&console, &signed_in, &name, "settings", None, notice.done).await
}

async fn render_source(
    console: &Console,
    signed_in: &SignedIn,
    name: &str,
    tab: &str,
    revealed: Option<String>,
    notice: Option<String>,
) -> ConsoleResult<Response> {
    let deps = console.deps();
    let source = deps.store.source_by_name(name).await.map_err(store_error)?;
    let stored = deps
        .store
        .source_settings(name)
        .await
        .map_err(store_error)?;
    let settings = DestinationSettings::from_json(&stored);
    let forwarded_to: Vec<Value> = match &deps.sync {
        Some(sync) => sync
            .list()
            .await
            .map_err(sync_error)?
            .iter()
            .filter(|d| d.config.sources().iter().any(|s| s == name))
            .map(|d| json!({"name": d.name, "kind": d.config.kind().as_str()}))
            .collect(),
        None => Vec::new(),
    };
    let data = json!({
        "source": {
            "name": source.name,
            "display_name": source.display_name,
            "status": source.status.as_str(),
            "created_at": source.created_at.to_string(),
            "write_key": source.write_key,
            "keys_in_grace": source.keys_in_grace,
        },
        "tab": tab,
        "revealed": revealed,
        "settings": settings,
        "forwarded_to": forwarded_to,
        "tracking_api": format!("{}/v1", deps.public_url),
        "graces": GRACE_CHOICES.iter().map(|(value, label)| json!({"value": value, "label": label})).collect::<Vec<_>>(),
        "notice": notice_text(notice.as_deref()),
    });
    let page = console.inner.templates.render(
        "connections/source.html",
        Page::new(signed_in, "connections", data),
    )?;
    Ok(uncached(page))
}

async fn reveal_key(
    State(console): State<Console>,
    signed_in: SignedIn,
    Path(name): Path<String>,
    RawForm(body): RawForm,
) -> ConsoleResult<Response> {
    Fields::parse(&body).check_csrf(&signed_in)?;
    let key = console
        .deps()
        .store
        .current_write_key(&name)
        .await
        .map_err(store_error)?;
    tracing::info!(
        account = signed_in.email,
        source = name,
        "write key revealed"
    );
    render_source(
        &console,
        &signed_in,
        &name,
        "settings",
        Some(key.expose().to_owned()),
        None,
    )
    .await
}

async fn rotate_key(
    State(console): State<Console>,
    signed_in: SignedIn,
    Path(name): Path<String>,
    RawForm(body): RawForm,
) -> ConsoleResult<Response> {
    let form = Fields::parse(&body);
    form.check_csrf(&signed_in)?;
    let text = match form.text("grace") {
        text if text.is_empty() => "24h".to_owned(),
        text => text,
    };
    let grace: SignedDuration = text.parse().map_err(|_| ConsoleError::Invalid {
        field: "grace".into(),
        message: format!("{text:?} is not a duration (e.g. 24h, 90m, 30s)"),
    })?;
    if grace.is_negative() {
        return Err(ConsoleError::Invalid {
            field: "grace".into(),
            message: "must not be negative".into(),
        });
    }
    console
        .deps()
        .store
        .rotate_write_key(&name, grace)
        .await
        .map_err(store_error)?;
    tracing::info!(account = signed_in.email, source = name, grace = %grace, "write key rotated");
    let done = if grace.is_zero() {
        "rotated-now"
    } else {
        "rotated"
    };
    Ok(see(format!("/sources/{name}/settings?done={done}")))
}

async fn disable_source(
    state: State<Console>,
    signed_in: SignedIn,
    name: Path<String>,
    form: RawForm,
) -> ConsoleResult<Response> {
    set_source_status(state, signed_in, name, form, SourceStatus::Disabled).await
}

async fn enable_source(
    state: State<Console>,
    signed_in: SignedIn,
    name: Path<String>,
    form: RawForm,
) -> ConsoleResult<Response> {
    set_source_status(state, signed_in, name, form, SourceStatus::Enabled).await
}

async fn set_source_status(
    State(console): State<Console>,
    signed_in: SignedIn,
    Path(name): Path<String>,
    RawForm(body): RawForm,
    status: SourceStatus,
) -> ConsoleResult<Response> {
    Fields::parse(&body).check_csrf(&signed_in)?;
    console
        .deps()
        .store
        .set_source_status(&name, status)
        .await
        .map_err(store_error)?;
    tracing::info!(
        account = signed_in.email,
        source = name,
        status = status.as_str(),
        "source status set"
    );
    Ok(see(format!("/sources/{name}?done={}", status.as_str())))
}

// ---- The catalog ----

/// The kinds of destination one can add.
const CATALOG: &[(&str, &str, &str, &str)] = &[
    (
        "klaviyo",
        "Klaviyo",
        "Profiles, events, lists and email in Signalbox, and optionally forward a source's calls to a Klaviyo account.",
        "Email marketing",
    ),
    (
        "webhook",
        "Webhook",
        "Send a source's calls as signed Segment-spec JSON batches to a URL of yours.",
        "Raw data",
    ),
    (
        "segment",
        "Segment",
        "Send profile changes and email events made in Signalbox back to a Segment source.",
        "Customer data platform",
    ),
];

#[derive(Deserialize)]
struct Search {
    #[serde(default)]
    q: String,
}

async fn catalog(
    State(console): State<Console>,
    signed_in: SignedIn,
    Query(search): Query<Search>,
) -> ConsoleResult<Html<String>> {
    let query = search.q.trim().to_lowercase();
    let tiles: Vec<Value> = CATALOG
        .iter()
        .filter(|(_, name, about, category)| {
            query.is_empty()
                || [name, about, category]
                    .iter()
                    .any(|text| text.to_lowercase().contains(&query))
        })
        .map(|(slug, name, about, category)| {
            json!({
                "slug": slug,
                "name": name,
                "about": about,
                "category": category,
                "terms": format!("{name} {about} {category}").to_lowercase(),
            })
        })
        .collect();
    let data = json!({"q": search.q.trim(), "tiles": tiles});
    console.inner.templates.render(
        "connections/catalog.html",
        Page::new(&signed_in, "connections", data),
    )
}

// ---- Configure Klaviyo ----

#[derive(Deserialize)]
struct PickSource {
    #[serde(default)]
    source: String,
}

/// The settings Configure Klaviyo edits, as check boxes (the engage keys).
const KLAVIYO_FLAGS: [&str; 4] = [
    "confirmOptin",
    "enforceEmail",
    "sendAnonymous",
    "useSegmentSpec",
];

async fn klaviyo_form(
    State(console): State<Console>,
    signed_in: SignedIn,
    Query(pick): Query<PickSource>,
) -> ConsoleResult<Response> {
    let source = pick.source.trim().to_owned();
    let mut values = Map::new();
    if !source.is_empty() {
        let stored = console
            .deps()
            .store
            .source_settings(&source)
            .await
            .map_err(store_error)?;
        let settings = DestinationSettings::from_json(&stored).to_json();
        if let Value::Object(map) = settings {
            values = map;
        }
        values.insert("destination".into(), json!(format!("klaviyo-{source}")));
        values.insert("endpoint".into(), json!(KLAVIYO_ENDPOINT));
    }
    render_klaviyo(&console, &signed_in, &source, values, FieldErrors::new()).await
}

async fn render_klaviyo(
    console: &Console,
    signed_in: &SignedIn,
    source: &str,
    values: Map<String, Value>,
    errors: FieldErrors,
) -> ConsoleResult<Response> {
    let sources = console
        .deps()
        .store
        .list_sources()
        .await
        .map_err(store_error)?;
    let data = json!({
        "sources": sources.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
        "source": source,
        "values": values,
        "sync": console.deps().sync.is_some(),
        "errors": errors,
    });
    let page = console.inner.templates.render(
        "connections/klaviyo.html",
        Page::new(signed_in, "connections", data),
    )?;
    Ok(with_status(form_status(&errors), page))
}

async fn klaviyo_save(
    State(console): State<Console>,
    signed_in: SignedIn,
    RawForm(body): RawForm,
) -> ConsoleResult<Response> {
    let form = Fields::parse(&body);
    form.check_csrf(&signed_in)?;
    let deps = console.deps();
    let source = form.text("source");
    if source.is_empty() {
        let mut errors = FieldErrors::new();
        errors.insert("source".into(), "choose the source to configure".into());
        return render_klaviyo(&console, &signed_in, "", Map::new(), errors).await;
    }
    let stored = deps
        .store
        .source_settings(&source)
        .await
        .map_err(store_error)?;
    // What the person entered, kept for the form if something is wrong (never the key).
    let mut values = Map::new();
    values.insert("listId".into(), json!(form.text("listId")));
    for flag in KLAVIYO_FLAGS {
        values.insert(flag.into(), json!(form.checked(flag)));
    }
    values.insert("destination".into(), json!(form.text("destination")));
    values.insert("endpoint".into(), json!(form.text("endpoint")));

    let mut errors = FieldErrors::new();
    let mut settings = DestinationSettings::from_json(&stored);
    let mut patch = values.clone();
    patch.remove("destination");
    patch.remove("endpoint");
    if let Err((field, reason)) = settings.patch(&patch) {
        errors.insert(field, reason);
    }
    let api_key = form.get("api_key").trim().to_owned();
    let mut created = None;
    if errors.is_empty() && !api_key.is_empty() {
        let endpoint = match form.text("endpoint") {
            text if text.is_empty() => KLAVIYO_ENDPOINT.to_owned(),
            text => text,
        };
        let new = NewDestination {
            name: form.text("destination"),
            config: DestinationConfig::Klaviyo {
                api_key: Secret::new(api_key),
                endpoint,
                sources: vec![source.clone()],
            },
            rate: None,
        };
        match sync_of(&console) {
            Ok(sync) => match sync.create(new).await {
                Ok(destination) => created = Some(destination.name),
                Err(err) => field_error(&mut errors, klaviyo_field(sync_error(err)))?,
            },
            Err(err) => {
                errors.insert("api_key".into(), err.to_string());
            }
        }
    }
    if !errors.is_empty() {
        return render_klaviyo(&console, &signed_in, &source, values, errors).await;
    }
    deps.store
        .set_source_settings(&source, settings.merged_into(stored))
        .await
        .map_err(store_error)?;
    tracing::info!(
        account = signed_in.email,
        source,
        destination = created.as_deref().unwrap_or(""),
        "klaviyo settings saved"
    );
    Ok(see(format!("/sources/{source}/settings?done=klaviyo")))
}

/// Sync names the destination's name field `name`; this form calls it `destination`.
fn klaviyo_field(err: ConsoleError) -> ConsoleError {
    match err {
        ConsoleError::Invalid { field, message } if field == "name" => ConsoleError::Invalid {
            field: "destination".into(),
            message,
        },
        other => other,
    }
}

// ---- Webhook and Segment destinations ----

async fn webhook_form(
    State(console): State<Console>,
    signed_in: SignedIn,
) -> ConsoleResult<Response> {
    render_destination_form(
        &console,
        &signed_in,
        "webhook",
        json!({"name": "webhook", "sources": []}),
        FieldErrors::new(),
    )
    .await
}

async fn segment_form(
    State(console): State<Console>,
    signed_in: SignedIn,
) -> ConsoleResult<Response> {
    render_destination_form(
        &console,
        &signed_in,
        "segment",
        json!({"name": "segment", "endpoint": SEGMENT_US_ENDPOINT}),
        FieldErrors::new(),
    )
    .await
}

async fn render_destination_form(
    console: &Console,
    signed_in: &SignedIn,
    kind: &str,
    values: Value,
    errors: FieldErrors,
) -> ConsoleResult<Response> {
    sync_of(console)?;
    let sources = console
        .deps()
        .store
        .list_sources()
        .await
        .map_err(store_error)?;
    let data = json!({
        "sources": sources.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
        "values": values,
        "errors": errors,
    });
    let page = console.inner.templates.render(
        &format!("connections/{kind}.html"),
        Page::new(signed_in, "connections", data),
    )?;
    Ok(with_status(form_status(&errors), page))
}

async fn webhook_save(
    State(console): State<Console>,
    signed_in: SignedIn,
    RawForm(body): RawForm,
) -> ConsoleResult<Response> {
    let form = Fields::parse(&body);
    form.check_csrf(&signed_in)?;
    let sync = sync_of(&console)?;
    let secret = form.get("secret").trim().to_owned();
    let values = json!({
        "name": form.text("name"),
        "url": form.text("url"),
        "sources": form.all("sources"),
    });
    let mut errors = FieldErrors::new();
    let sources = form.all("sources");
    if sources.is_empty() {
        errors.insert(
            "sources".into(),
            "choose at least one source whose calls are sent".into(),
        );
    } else {
        let new = NewDestination {
            name: form.text("name"),
            config: DestinationConfig::Webhook {
                url: form.text("url"),
                secret: (!secret.is_empty()).then(|| Secret::new(secret)),
                sources,
            },
            rate: None,
        };
        match sync.create(new).await {
            Ok(destination) => {
                tracing::info!(
                    account = signed_in.email,
                    destination = destination.name,
                    "webhook destination created"
                );
                return Ok(see(format!("/deliveries/{}", destination.name)));
            }
            Err(err) => field_error(&mut errors, sync_error(err))?,
        }
    }
    render_destination_form(&console, &signed_in, "webhook", values, errors).await
}

async fn segment_save(
    State(console): State<Console>,
    signed_in: SignedIn,
    RawForm(body): RawForm,
) -> ConsoleResult<Response> {
    let form = Fields::parse(&body);
    form.check_csrf(&signed_in)?;
    let sync = sync_of(&console)?;
    let write_key = form.get("write_key").trim().to_owned();
    let values = json!({
        "name": form.text("name"),
        "endpoint": form.text("endpoint"),
        "only_segment_profiles": form.checked("only_segment_profiles"),
    });
    let mut errors = FieldErrors::new();
    if write_key.is_empty() {
        errors.insert(
            "write_key".into(),
            "is required: the write key of the Segment source to send to".into(),
        );
    } else {
        let endpoint = match form.text("endpoint") {
            text if text.is_empty() => SEGMENT_US_ENDPOINT.to_owned(),
            text => text,
        };
        let new = NewDestination {
            name: form.text("name"),
            config: DestinationConfig::Segment {
                write_key: Secret::new(write_key),
                endpoint,
                only_segment_profiles: form.checked("only_segment_profiles"),
            },
            rate: None,
        };
        match sync.create(new).await {
            Ok(destination) => {
                tracing::info!(
                    account = signed_in.email,
                    destination = destination.name,
                    "segment destination created"
                );
                return Ok(see(format!("/deliveries/{}", destination.name)));
            }
            Err(err) => field_error(&mut errors, sync_error(err))?,
        }
    }
    render_destination_form(&console, &signed_in, "segment", values, errors).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_fields_keep_repeats_and_read_check_boxes() {
        let form = Fields::parse(b"csrf=t&name=+web+&sources=a&sources=&sources=b&flag=on");
        assert_eq!(form.text("name"), "web");
        assert_eq!(form.get("missing"), "");
        assert_eq!(form.all("sources"), vec!["a".to_owned(), "b".to_owned()]);
        assert!(form.checked("flag"));
        assert!(!form.checked("other"));
        let signed_in = SignedIn {
            email: "a@example.com".into(),
            csrf: "t".into(),
        };
        assert!(form.check_csrf(&signed_in).is_ok());
        assert!(Fields::parse(b"name=x").check_csrf(&signed_in).is_err());
    }

    #[test]
    fn domain_errors_name_the_form_field() {
        let mut errors = FieldErrors::new();
        field_error(&mut errors, sync_error(SyncError::invalid("url", "bad"))).unwrap();
        field_error(&mut errors, sync_error(SyncError::Conflict("x".into()))).unwrap();
        assert_eq!(errors["url"], "bad");
        assert!(errors["name"].contains("already exists"));
        let not_found = sync_error(SyncError::NotFound("x".into()));
        assert!(field_error(&mut errors, not_found).is_err());
        assert!(matches!(
            klaviyo_field(ConsoleError::Invalid {
                field: "name".into(),
                message: "taken".into()
            }),
            ConsoleError::Invalid { ref field, .. } if field == "destination"
        ));
    }
}
