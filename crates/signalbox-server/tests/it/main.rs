//! Integration tests of the Segment Tracking API: a real server on a random port over a
//! temporary SQLite file, driven over HTTP.

mod auth;
mod consent;
mod consent_and_filters;
mod console_account;
mod console_analytics;
mod console_connections;
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
mod routes;
mod validation;
