//! Engage's integration tests: a real call log, the pipeline, and the derived state.

mod aggregates;
mod api;
mod backend;
mod builtin;
mod change_feed;
mod feeds;
mod helpers;
mod identity;
mod limits;
mod lists;
mod outbox;
mod pipeline;
mod postgres;
mod quarantine;
mod reader_conformance;
