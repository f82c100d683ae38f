//! The `EngageReader` conformance suite on the SQLite backend (`engage.db`).

use std::sync::Arc;
use std::time::Duration;

use signalbox_core::FakeClock;
use signalbox_engage::conformance::Backend;
use signalbox_engage::{Engage, EngageConfig};
use signalbox_store::sqlite::SqliteOptions;
use signalbox_store::{SqliteStore, Store};

async fn sqlite_backend() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(dir.path().join("signalbox.db"), SqliteOptions::default()).unwrap(),
    );
    let clock = FakeClock::new("2026-03-01T00:00:00Z".parse().unwrap());
    let mut config = EngageConfig::new(dir.path().join("engage.db"));
    config.poll_interval = Duration::from_millis(5);
    let engage = Engage::start(store, Arc::new(clock), config).await.unwrap();
    Backend {
        engage,
        guard: Box::new(dir),
    }
}

signalbox_engage::engage_reader_conformance!(sqlite, crate::reader_conformance::sqlite_backend);
