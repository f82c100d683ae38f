//! The profiles pages (not built yet: no routes).

use crate::Console;

pub(crate) const TEMPLATES: &[(&str, &str)] = &[];

pub(crate) fn routes() -> axum::Router<Console> {
    axum::Router::new()
}
