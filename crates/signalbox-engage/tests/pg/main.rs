//! Engage's integration suite (`tests/it`) with the derived state on PostgreSQL.

#[path = "../it/aggregates.rs"]
mod aggregates;
#[path = "../it/api.rs"]
mod api;
mod backend;
#[path = "../it/builtin.rs"]
mod builtin;
#[path = "../it/change_feed.rs"]
mod change_feed;
#[path = "../it/feeds.rs"]
mod feeds;
#[path = "../it/helpers.rs"]
mod helpers;
#[path = "../it/identity.rs"]
mod identity;
#[path = "../it/limits.rs"]
mod limits;
#[path = "../it/lists.rs"]
mod lists;
#[path = "../it/outbox.rs"]
mod outbox;
#[path = "../it/pipeline.rs"]
mod pipeline;
#[path = "../it/quarantine.rs"]
mod quarantine;
#[path = "../it/reader_conformance.rs"]
mod reader_conformance;
