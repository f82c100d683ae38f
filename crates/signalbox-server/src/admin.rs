//! The admin API (`/admin/v1/*`), authenticated by private API keys.

use axum::Router;

use crate::app::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
}
