//! The `EngageReader` conformance suite on PostgreSQL: engage applies the log with
//! `PgWriter` and reads with `PgQueries` and `PgReader`.

use std::sync::Arc;
use std::time::Duration;

use signalbox_core::FakeClock;
use signalbox_store::postgres::testing::TestDatabase;
use signalbox_store::sqlite::SqliteOptions;
use signalbox_store::{SqliteStore, Store};

use crate::apply::Applier;
use crate::conformance::Backend;
use crate::db::postgres::apply::{connect, PgWriter};
use crate::db::postgres::queries::{PgDb, PgQueries};
use crate::{pipeline, Engage, EngageConfig};

/// An engage whose derived state is in the fresh database `db` (the log stays in a SQLite
/// file of a temporary directory).
async fn pg_backend(db: TestDatabase) -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(dir.path().join("signalbox.db"), SqliteOptions::default()).unwrap(),
    );
    let clock = FakeClock::new("2026-03-01T00:00:00Z".parse().unwrap());
    let mut config = EngageConfig::new(dir.path().join("engage.db"));
    config.poll_interval = Duration::from_millis(5);
    let writer = PgWriter::connect(db.url()).await.unwrap();
    let lock = pipeline::take_lock(&config.path).unwrap();
    let hold_window = config.hold_window;
    let applier = tokio::task::spawn_blocking(move || Applier::open(writer, None, hold_window))
        .await
        .unwrap()
        .unwrap();
    let pool = connect(db.url(), 4).await.unwrap();
    let queries = Arc::new(PgQueries::new(PgDb::new(
        pool,
        tokio::runtime::Handle::current(),
    )));
    let engage = Engage::run(applier, Some(lock), queries, store, Arc::new(clock), config).unwrap();
    Backend {
        engage,
        guard: Box::new((dir, db)),
    }
}

crate::engage_reader_conformance!(postgres, {
    let Some(db) = signalbox_store::postgres::testing::TestDatabase::create().await else {
        return;
    };
    move || super::pg_backend(db)
});
