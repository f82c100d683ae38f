//! Integration tests of signalbox-flows: definitions, the engine on a fake clock with engage
//! underneath, emails to a real SMTP server (tests/smtp/sink.py at the repository root) and
//! webhooks to a local HTTP server.

mod actions;
mod consent;
mod definitions;
mod email;
mod fuzz_definitions;
#[allow(dead_code)]
mod helpers;
mod postgres;
mod review;
mod runs;
#[allow(dead_code)]
// The SMTP sink helper is the mail crate's, shared rather than copied.
#[path = "../../../signalbox-mail/tests/it/sink.rs"]
mod sink;
mod stats;
mod store_conformance;
mod templates;
mod triggers;
mod webhooks;
