//! `signalbox migrate --from DIR --to postgres://…`: an embedded installation filled through
//! Segment's Python library and Klaviyo's Python SDK, stopped, copied into PostgreSQL, and
//! served from there by a node with an empty data folder: the same keys work and the SDK reads
//! the same profiles, events, lists, segments, templates and flows. A second copy into the
//! now non-empty database is refused.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use signalbox_store::postgres::testing::TestDatabase;

use crate::cli_json::assert_documented;
use crate::harness::*;

/// `tests/klaviyo/migrate_e2e.py MODE` against `server`; its stdout.
pub(crate) fn sdk(mode: &str, server: &Server, args: &[&str]) -> String {
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let output = Command::new(&python)
        .arg(repo_root().join("tests/klaviyo/migrate_e2e.py"))
        .args([mode, "--base", &server.base_url])
        .args(args)
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| panic!("cannot run {python}: {err}"));
    assert!(
        output.status.success(),
        "migrate_e2e.py {mode} failed:\n{}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        server.log()
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// What the SDK reads of everything, as one JSON value.
pub(crate) fn snapshot(server: &Server, api_key: &str) -> Value {
    serde_json::from_str(&sdk("snapshot", server, &["--api-key", api_key])).expect("JSON")
}

/// The Segment library's call with `write_key` is taken by `server` and its profile
/// (`mig-3@example.com`) appears through the SDK within 30 s.
pub(crate) async fn sends_and_applies(server: &Server, api_key: &str, write_key: &str) {
    sdk(
        "send",
        server,
        &["--write-key", write_key, "--user", "mig-3"],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = snapshot(server, api_key);
        let emails: Vec<&str> = now["profiles"]
            .as_array()
            .expect("profiles")
            .iter()
            .filter_map(|p| p[1].as_str())
            .collect();
        if emails.contains(&"mig-3@example.com") {
            return;
        }
        assert!(Instant::now() < deadline, "{emails:?}\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The rows per table `migrate` printed.
fn counts(stdout: &str) -> BTreeMap<String, u64> {
    stdout
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            Some((parts.next()?.to_owned(), parts.next()?.parse().ok()?))
        })
        .collect()
}

fn migrate(env: &TestEnv, url: &str) -> CliOutput {
    CliOutput::run(
        signalbox()
            .args(["migrate", "--from"])
            .arg(env.data_dir())
            .args(["--to", url]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_copies_a_stopped_installation_into_postgres_and_refuses_a_second_time() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let url = db.url().expose().to_owned();
    let env = TestEnv::embedded();
    let api_key = env
        .cli_ok(&["api-key", "create", "migration", "--full-access"])
        .trim()
        .to_owned();
    let mut admin = env
        .command()
        .args(["admin", "create", "ops@example.com", "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start signalbox admin");
    admin
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(b"a long enough password\n")
        .expect("write the password");
    assert!(admin.wait_with_output().expect("admin").status.success());

    let server = env.serve();
    let write_key = server.write_key.clone();
    env.cli_ok(&[
        "destination",
        "create",
        "hook",
        "--kind",
        "webhook",
        "--url",
        "https://hooks.example.com/signalbox",
        "--source",
        "default",
    ]);
    env.cli_ok(&["destination", "pause", "hook"]);
    sdk(
        "fill",
        &server,
        &["--api-key", &api_key, "--write-key", &write_key],
    );
    let before = snapshot(&server, &api_key);
    server.stop();

    // A server running on the folder holds it: nothing is copied.
    let running = env.serve();
    let refused = migrate(&env, &url);
    assert!(!refused.status.success(), "{}", refused.describe());
    assert!(
        refused.stderr.contains("stop its server first"),
        "{}",
        refused.describe()
    );
    running.stop();

    let out = migrate(&env, &url);
    assert!(out.status.success(), "{}", out.describe());
    let mut copied = counts(&out.stdout);
    for (table, at_least) in [
        ("sources", 1),
        ("write_keys", 1),
        ("api_keys", 1),
        ("calls", 4),
        ("message_ids", 4),
        ("profiles", 2),
        ("events", 2),
        ("lists", 1),
        ("list_members", 1),
        ("email_consent", 1),
        ("audience_segments", 1),
        ("audience_members", 2),
        ("flows", 1),
        ("flows_runs", 1),
        ("templates", 1),
        ("sync_destinations", 1),
        ("sync_progress", 1),
        ("console_accounts", 1),
        ("signalbox_secrets", 1),
    ] {
        let rows = copied.get(table).copied().unwrap_or(0);
        assert!(rows >= at_least, "{table}: {rows} rows\n{}", out.stdout);
    }
    assert_eq!(copied["flows_runs"], 1, "{}", out.stdout);

    // `--json` says the same, as docs/cli-json.md describes (into a second database).
    let other = TestDatabase::create().await.expect("a second database");
    let json = CliOutput::run(
        signalbox()
            .args(["migrate", "--json", "--from"])
            .arg(env.data_dir())
            .args(["--to", other.url().expose()]),
    );
    assert!(json.status.success(), "{}", json.describe());
    let lines = json_lines(&json.stdout);
    assert_eq!(lines.len(), 1, "{}", json.stdout);
    assert_documented("migrate --json", &lines[0]);
    let tables: BTreeMap<String, u64> =
        serde_json::from_value(lines[0]["tables"].clone()).expect("rows per table");
    let total = copied.remove("total").expect("a total line");
    assert_eq!(tables, copied);
    assert_eq!(lines[0]["total"], total);
    drop(other);

    // Into a database that holds data: refused, and nothing changes (checked below).
    let again = migrate(&env, &url);
    assert!(!again.status.success(), "{}", again.describe());
    assert!(
        again.stderr.contains("the target database is not empty"),
        "{}",
        again.describe()
    );

    // A node with an empty data folder serves the copy: same keys, same data.
    let elsewhere = TestEnv::embedded();
    let mut cmd = elsewhere.command();
    cmd.args(["--database-url", &url, "serve", "--listen", "127.0.0.1:0"]);
    let pg = Server::spawn(
        cmd,
        elsewhere.root().join(format!("server-{}.log", unique())),
    );
    assert_eq!(pg.write_key, write_key);
    let after = snapshot(&pg, &api_key);
    assert_eq!(after, before, "{}", pg.log());

    // The Segment library's calls with the same write key are accepted and applied.
    sends_and_applies(&pg, &api_key, &write_key).await;
    // The console account and the paused destination are there too (the commands that
    // manage them read the data folder's files, so ask the database).
    let client = signalbox_store::postgres::connect_pool(db.url(), 1)
        .unwrap()
        .get()
        .await
        .unwrap();
    let accounts = client
        .query("SELECT email FROM console_accounts", &[])
        .await
        .unwrap();
    assert_eq!(accounts.len(), 1);
    assert_eq!(accounts[0].get::<_, String>(0), "ops@example.com");
    let destinations = client
        .query("SELECT name, state FROM sync_destinations", &[])
        .await
        .unwrap();
    assert_eq!(destinations.len(), 1);
    assert_eq!(destinations[0].get::<_, String>(0), "hook");
    drop(client);
    pg.stop();
}
