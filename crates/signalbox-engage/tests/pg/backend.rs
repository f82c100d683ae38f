//! The backend this test binary runs engage on: PostgreSQL, a fresh database per engage (the
//! call log stays in SQLite). Without a test server, the suite runs on SQLite as `it` does.

use std::path::Path;
use std::sync::{Arc, Mutex};

use signalbox_engage::EngageConfig;
use signalbox_store::postgres::testing::TestDatabase;
use signalbox_store::sqlite::SqliteOptions;
use signalbox_store::{SqliteStore, Store};

/// The databases made so far, dropped with the test server when the binary ends.
static DATABASES: Mutex<Vec<TestDatabase>> = Mutex::new(Vec::new());

/// The call log engage follows, in `dir`.
pub fn log_store(dir: &Path) -> Arc<dyn Store> {
    Arc::new(SqliteStore::open(dir.join("signalbox.db"), SqliteOptions::default()).unwrap())
}

/// The configuration of a fresh engage whose state is kept in a new database.
pub fn engage_config(dir: &Path) -> EngageConfig {
    let mut config = EngageConfig::new(dir.join("engage.db"));
    // Made on a thread of its own: this is called from within tests' runtimes.
    let database = std::thread::spawn(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(TestDatabase::create())
    })
    .join()
    .unwrap();
    if let Some(database) = database {
        config.database = Some(database.url().clone());
        DATABASES.lock().unwrap().push(database);
    }
    config
}
