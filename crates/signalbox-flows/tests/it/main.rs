//! Integration tests of signalbox-flows: definitions, the engine on a fake clock with engage
//! underneath, emails to a real SMTP server (tests/smtp/sink.py at the repository root) and
//! webhooks to a local HTTP server.

mod definitions;
mod email;
#[allow(dead_code)]
mod helpers;
#[allow(dead_code)]
mod sink;
