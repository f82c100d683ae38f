//! `/`: the overview.

use axum::extract::State;
use axum::response::Html;
use axum::routing::get;
use serde::Serialize;

use crate::auth::SignedIn;
use crate::error::{ConsoleError, ConsoleResult};
use crate::pages::Page;
use crate::Console;

pub(crate) const TEMPLATES: &[(&str, &str)] = &[(
    "home/index.html",
    include_str!("../../templates/home/index.html"),
)];

pub(crate) fn routes() -> axum::Router<Console> {
    axum::Router::new().route("/", get(index))
}

#[derive(Serialize)]
struct Overview {
    sources: usize,
    destinations: usize,
    tracking_api: String,
}

async fn index(State(console): State<Console>, signed_in: SignedIn) -> ConsoleResult<Html<String>> {
    let deps = console.deps();
    let sources = deps
        .store
        .list_sources()
        .await
        .map_err(ConsoleError::internal)?
        .len();
    let destinations = match &deps.sync {
        Some(sync) => sync.list().await.map_err(ConsoleError::internal)?.len(),
        None => 0,
    };
    let data = Overview {
        sources,
        destinations,
        tracking_api: format!("{}/v1", deps.public_url),
    };
    console
        .inner
        .templates
        .render("home/index.html", Page::new(&signed_in, "", data))
}
