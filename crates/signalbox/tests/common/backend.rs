//! The store the server-spawning tests run on. Unset, `SIGNALBOX_TEST_BACKEND` means the
//! embedded store; `postgres` gives each test environment a fresh database on the server
//! `SIGNALBOX_TEST_DATABASE_URL` names, and its commands run with `--database-url` on it.

// Each test binary that includes this file uses a part of it.
#![allow(dead_code)]

use std::process::Command;

use signalbox_store::postgres::testing::TestDatabase;

/// The variable that selects the store the tests run on.
pub const TEST_BACKEND: &str = "SIGNALBOX_TEST_BACKEND";

/// Whether this run puts the tests on PostgreSQL.
pub fn on_postgres() -> bool {
    match std::env::var(TEST_BACKEND) {
        Ok(backend) if backend == "postgres" => true,
        Ok(backend) if backend.is_empty() || backend == "embedded" => false,
        Ok(other) => panic!("{TEST_BACKEND}={other}: expected `postgres` or `embedded`"),
        Err(_) => false,
    }
}

/// For a test that by nature checks the embedded store's files: `true` (with a note naming
/// `why`) on a PostgreSQL run, where the test returns at once.
pub fn embedded_only(why: &str) -> bool {
    let skip = on_postgres();
    if skip {
        eprintln!("embedded store only, skipped on PostgreSQL: {why}");
    }
    skip
}

/// The store of one test environment: nothing (the data folder) or a database of its own.
pub struct Backend {
    database: Option<TestDatabase>,
}

impl Backend {
    /// The store this run tests.
    pub fn new() -> Backend {
        if on_postgres() {
            Backend::postgres()
        } else {
            Backend::embedded()
        }
    }

    /// The embedded store, whatever the run.
    pub fn embedded() -> Backend {
        Backend { database: None }
    }

    fn postgres() -> Backend {
        // Callers are often inside a runtime, which cannot block on another: the database is
        // made on a thread of its own.
        let database = std::thread::spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime")
                .block_on(TestDatabase::create())
        })
        .join()
        .expect("create a test database")
        .expect("SIGNALBOX_TEST_DATABASE_URL names the PostgreSQL server to test on");
        Backend {
            database: Some(database),
        }
    }

    /// The PostgreSQL URL, when this store is one.
    pub fn database_url(&self) -> Option<String> {
        self.database
            .as_ref()
            .map(|database| database.url().expose().to_owned())
    }

    /// Whether this store is PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        self.database.is_some()
    }

    /// `--database-url URL` on PostgreSQL, nothing on the embedded store.
    pub fn args(&self) -> Vec<String> {
        match self.database_url() {
            Some(url) => vec!["--database-url".to_owned(), url],
            None => Vec::new(),
        }
    }

    /// Adds [`Backend::args`] to `cmd`.
    pub fn apply(&self, cmd: &mut Command) {
        cmd.args(self.args());
    }
}
