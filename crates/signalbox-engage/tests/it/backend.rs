//! The backend this test binary runs engage on: SQLite (`engage.db` in a temp dir).
//!
//! Everything else in the suite is written against `Engage`'s public API, so another backend
//! runs the same tests from a binary of its own: its `main.rs` declares its own `backend`
//! module (these two functions) and includes the test modules of this folder with
//! `#[path = "../it/…"]`.

use std::path::Path;
use std::sync::Arc;

use signalbox_engage::EngageConfig;
use signalbox_store::sqlite::SqliteOptions;
use signalbox_store::{SqliteStore, Store};

/// The call log engage follows, in `dir`.
pub fn log_store(dir: &Path) -> Arc<dyn Store> {
    Arc::new(SqliteStore::open(dir.join("signalbox.db"), SqliteOptions::default()).unwrap())
}

/// The configuration of a fresh engage whose state is kept in `dir`.
pub fn engage_config(dir: &Path) -> EngageConfig {
    EngageConfig::new(dir.join("engage.db"))
}
