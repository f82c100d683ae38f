//! The `EngageReader` conformance suite on this binary's backend (`backend.rs`), and on
//! PostgreSQL (`EngageConfig::database`; skipped without a test server).

use std::sync::Arc;
use std::time::Duration;

use signalbox_core::FakeClock;
use signalbox_engage::conformance::Backend;
use signalbox_engage::Engage;
use signalbox_store::postgres::testing::TestDatabase;

async fn sqlite_backend() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::backend::log_store(dir.path());
    let clock = FakeClock::new("2026-03-01T00:00:00Z".parse().unwrap());
    let mut config = crate::backend::engage_config(dir.path());
    config.poll_interval = Duration::from_millis(5);
    let engage = Engage::start(store, Arc::new(clock), config).await.unwrap();
    Backend {
        engage,
        guard: Box::new(dir),
    }
}

signalbox_engage::engage_reader_conformance!(sqlite, crate::reader_conformance::sqlite_backend);

/// Engage on the fresh database `db` (the log stays in a SQLite file).
async fn pg_backend(db: TestDatabase) -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::backend::log_store(dir.path());
    let clock = FakeClock::new("2026-03-01T00:00:00Z".parse().unwrap());
    let mut config = crate::backend::engage_config(dir.path());
    config.poll_interval = Duration::from_millis(5);
    config.database = Some(db.url().clone());
    let engage = Engage::start(store, Arc::new(clock), config).await.unwrap();
    Backend {
        engage,
        guard: Box::new((dir, db)),
    }
}

signalbox_engage::engage_reader_conformance!(postgres, {
    let Some(db) = signalbox_store::postgres::testing::TestDatabase::create().await else {
        return;
    };
    move || crate::reader_conformance::pg_backend(db)
});
