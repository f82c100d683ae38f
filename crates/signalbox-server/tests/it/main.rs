//! Integration tests of the Segment Tracking API: a real server on a random port over a
//! temporary SQLite file, driven over HTTP.

mod admin_flows;
mod auth;
mod consent;
mod consent_and_filters;
mod console_account;
mod console_analytics;
mod console_connections;
mod console_debugger;
mod console_flows;
mod console_harness;
mod console_lists;
mod console_profiles;
mod decode_properties;
mod dedupe;
mod destinations;
mod edge;
mod forwarded;
mod fuzz_decode;
mod fuzz_klaviyo_query;
mod helpers;
mod http_properties;
mod limits;
mod normalisation;
mod overload;
mod retention;
mod routes;
#[allow(dead_code)]
// The SMTP sink helper is the mail crate's, shared rather than copied.
#[path = "../../../signalbox-mail/tests/it/sink.rs"]
mod sink;
mod validation;
