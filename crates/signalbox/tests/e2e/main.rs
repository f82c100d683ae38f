//! End-to-end tests: the built `signalbox` binary, driven as a process, with real Segment
//! client libraries (server-side ones and analytics.js in headless Chromium) and the CLI.

#[path = "../common/backend.rs"]
mod backend;
mod backup;
mod browser;
mod cli;
#[path = "../common/cli_json.rs"]
mod cli_json;
mod clients;
mod console;
mod console_lists;
mod destinations;
mod flows;
mod harness;
mod lists;
mod mail;
mod migrate;
mod outbound;
mod postgres;
mod quarantine;
mod secrets;
mod segments;
mod sync;
