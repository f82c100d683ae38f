//! Throwaway PostgreSQL databases for tests.
//!
//! Tests find the server in `SIGNALBOX_TEST_DATABASE_URL` (a URL of a role that may create
//! databases; `scripts/test` starts a private server and sets it). Each [`TestDatabase`] is a
//! new, empty database that is dropped with it. Without the variable a test on PostgreSQL is
//! skipped with a note, except under `CI`, where a missing server is a failure.

use rand::distr::{Alphanumeric, SampleString};
use signalbox_core::PostgresUrl;

/// The variable that names the test server.
pub const TEST_DATABASE_URL: &str = "SIGNALBOX_TEST_DATABASE_URL";

/// A new empty database on the test server, dropped (with its connections) on drop.
pub struct TestDatabase {
    admin: PostgresUrl,
    url: PostgresUrl,
}

impl TestDatabase {
    /// A fresh database, or `None` (with a note) when no test server is configured outside CI.
    pub async fn create() -> Option<TestDatabase> {
        let admin = test_server()?;
        let name = format!(
            "signalbox_test_{}",
            Alphanumeric
                .sample_string(&mut rand::rng(), 12)
                .to_lowercase()
        );
        let (client, connection) = tokio_postgres::connect(admin.expose(), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|err| panic!("cannot reach the test server {admin}: {err}"));
        let driver = tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|err| panic!("cannot create database {name}: {err}"));
        // A test that waits on a lock it can never get fails with the lock named instead of
        // hanging the suite.
        client
            .batch_execute(&format!("ALTER DATABASE {name} SET lock_timeout = '60s'"))
            .await
            .unwrap_or_else(|err| panic!("cannot set lock_timeout on {name}: {err}"));
        drop(client);
        let _ = driver.await;
        let url = admin.with_database(&name);
        Some(TestDatabase { admin, url })
    }

    pub fn url(&self) -> &PostgresUrl {
        &self.url
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop may run inside a runtime, so the database goes from a thread of its own.
        let admin = self.admin.clone();
        let name = self.url.database().to_owned();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async move {
                let (client, connection) =
                    tokio_postgres::connect(admin.expose(), tokio_postgres::NoTls)
                        .await
                        .ok()?;
                tokio::spawn(connection);
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .ok()
            })
        });
        let _ = dropped.join();
    }
}

/// The test server's URL, or `None` when tests on PostgreSQL are to be skipped.
pub fn test_server() -> Option<PostgresUrl> {
    match std::env::var(TEST_DATABASE_URL) {
        Ok(url) if !url.trim().is_empty() => Some(
            PostgresUrl::parse(url.trim())
                .unwrap_or_else(|err| panic!("{TEST_DATABASE_URL}: {err}")),
        ),
        _ if std::env::var_os("CI").is_some() => panic!(
            "{TEST_DATABASE_URL} is not set: scripts/test starts a PostgreSQL server for the \
             tests and sets it"
        ),
        _ => {
            eprintln!("{TEST_DATABASE_URL} is not set: skipping a test on PostgreSQL");
            None
        }
    }
}

/// A PostgreSQL server of a test's own (started by `scripts/test-postgres`), for tests that
/// restart or stop it; stopped and deleted on drop.
pub struct PrivateServer {
    url: PostgresUrl,
    dir: String,
}

fn script() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/test-postgres")
}

impl PrivateServer {
    /// Starts a server, or `None` (with a note) outside CI when PostgreSQL is not installed.
    pub fn start() -> Option<PrivateServer> {
        let installed = std::fs::read_dir("/usr/lib/postgresql")
            .map(|mut versions| versions.next().is_some())
            .unwrap_or(false);
        if !installed {
            assert!(
                std::env::var_os("CI").is_none(),
                "PostgreSQL is not installed: scripts/test installs it"
            );
            eprintln!("PostgreSQL is not installed: skipping a test that runs its own server");
            return None;
        }
        let output = std::process::Command::new(script())
            .arg("start")
            .output()
            .expect("run scripts/test-postgres");
        assert!(
            output.status.success(),
            "scripts/test-postgres start: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8(output.stdout).expect("utf-8");
        let value = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(&format!("export {name}=")))
                .unwrap_or_else(|| panic!("no {name} in {text:?}"))
                .to_owned()
        };
        Some(PrivateServer {
            url: PostgresUrl::parse(&value(TEST_DATABASE_URL)).expect("a URL"),
            dir: value("SIGNALBOX_TEST_POSTGRES_DIR"),
        })
    }

    /// The superuser's URL of the maintenance database.
    pub fn url(&self) -> &PostgresUrl {
        &self.url
    }

    /// Stops the server, cutting every connection, and starts it again. Blocking.
    pub fn restart(&self) {
        let status = std::process::Command::new(script())
            .args(["restart", &self.dir])
            .status()
            .expect("run scripts/test-postgres");
        assert!(status.success(), "scripts/test-postgres restart failed");
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let _ = std::process::Command::new(script())
            .args(["stop", &self.dir])
            .status();
    }
}
