//! The console's pages, one module per area. Each module has `routes()` and `TEMPLATES`
//! (name, source), its templates under `templates/<area>/`, extending `layout.html`.

use serde::Serialize;

use crate::auth::SignedIn;
use crate::Console;

mod account;
mod connections;
mod debugger;
mod deliveries;
mod flows;
mod home;
mod integrations;
mod lists;
mod metrics;
mod profiles;

pub(crate) use debugger::StreamSlots;

pub(crate) fn routes() -> axum::Router<Console> {
    axum::Router::new()
        .merge(home::routes())
        .merge(account::routes())
        .merge(connections::routes())
        .merge(integrations::routes())
        .merge(deliveries::routes())
        .merge(debugger::routes())
        .merge(metrics::routes())
        .merge(profiles::routes())
        .merge(lists::routes())
        .merge(flows::routes())
}

/// Every page template, for the environment.
pub(crate) fn templates() -> impl Iterator<Item = &'static (&'static str, &'static str)> {
    [
        home::TEMPLATES,
        account::TEMPLATES,
        connections::TEMPLATES,
        integrations::TEMPLATES,
        deliveries::TEMPLATES,
        debugger::TEMPLATES,
        metrics::TEMPLATES,
        profiles::TEMPLATES,
        lists::TEMPLATES,
        flows::TEMPLATES,
    ]
    .into_iter()
    .flatten()
}

/// What every page's template gets besides its own data: who is signed in (for the account
/// menu and the CSRF field of forms) and which area of the navigation is current.
#[derive(Serialize)]
pub(crate) struct Page<'a, T: Serialize> {
    pub signed_in: &'a SignedIn,
    pub area: &'static str,
    #[serde(flatten)]
    pub data: T,
}

impl<'a, T: Serialize> Page<'a, T> {
    pub fn new(signed_in: &'a SignedIn, area: &'static str, data: T) -> Page<'a, T> {
        Page {
            signed_in,
            area,
            data,
        }
    }
}
