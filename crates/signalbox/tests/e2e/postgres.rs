//! `--database-url postgres://…`: the CLI and servers on one PostgreSQL database share
//! sources, keys and profiles. (Engage applies the log on one node at a time: a second server
//! on the database starts once the first has stopped.)

use std::time::{Duration, Instant};

use serde_json::Value;
use signalbox_store::postgres::testing::TestDatabase;

use crate::cli_json::assert_documented;
use crate::clients::Python;
use crate::harness::*;

/// `signalbox --database-url URL serve` on a port of its own.
fn serve_on(env: &TestEnv, url: &str) -> Server {
    let mut cmd = env.command();
    cmd.args(["--database-url", url, "serve", "--listen", "127.0.0.1:0"]);
    Server::spawn(cmd, env.root().join(format!("server-{}.log", unique())))
}

/// The profiles with `email`, through the Klaviyo-compatible API.
async fn profiles_with_email(server: &Server, key: &str, email: &str) -> Vec<Value> {
    let response = reqwest::Client::new()
        .get(format!("{}/api/profiles/", server.base_url))
        .query(&[("filter", format!("equals(email,\"{email}\")"))])
        .header("Authorization", format!("Klaviyo-API-Key {key}"))
        .header("revision", "2026-07-15")
        .send()
        .await
        .expect("send an API request");
    assert_eq!(response.status().as_u16(), 200, "{}", server.log());
    let body: Value = response.json().await.expect("a JSON body");
    body["data"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_postgres_database_share_keys_and_profiles() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let url = db.url().expose().to_owned();
    let env = TestEnv::embedded();
    // An API key made by the CLI on the database, before any server runs.
    let key = env.cli_ok(&["--database-url", &url, "api-key", "create", "reader"]);
    let key = key.trim();
    let first = serve_on(&env, &url);
    let store_line = first
        .banner
        .iter()
        .find(|line| line.trim_start().starts_with("Store"))
        .expect("the banner names the store");
    assert!(
        store_line.contains(&db.url().to_string()) && !store_line.contains(".db"),
        "{store_line}"
    );
    let python = Python::find();
    let run = unique();
    // Six calls: one of each kind, the identify of user0@example.com first.
    python.send(&first, &run, 6, &[]);
    wait_for_profile(&first, key).await;
    let write_key = first.write_key.clone();
    first.stop();
    // Another server on the same database (a node taking over): same default source and
    // profile, nothing local.
    let elsewhere = TestEnv::embedded();
    let second = serve_on(&elsewhere, &url);
    assert_eq!(second.write_key, write_key);
    wait_for_profile(&second, key).await;
    second.stop();
}

/// `signalbox --database-url URL ARGS`, run to completion.
fn cli_on(env: &TestEnv, url: &str, args: &[&str]) -> CliOutput {
    CliOutput::run(env.command().args(["--database-url", url]).args(args))
}

/// `signalbox --database-url URL ARGS`, which must succeed; its stdout.
fn cli_ok_on(env: &TestEnv, url: &str, args: &[&str]) -> String {
    let mut full = vec!["--database-url", url];
    full.extend_from_slice(args);
    env.cli_ok(&full)
}

/// Every command that reads or edits the stores runs on the database as on the data folder:
/// destinations, console accounts, storage status, engage's quarantine, and a rebuild after
/// which `profiles show` finds the same profile a server made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_offline_commands_run_on_a_postgres_database() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let url = db.url().expose().to_owned();
    let env = TestEnv::embedded();
    let key = cli_ok_on(&env, &url, &["api-key", "create", "reader"]);
    let key = key.trim();
    let server = serve_on(&env, &url);
    let python = Python::find();
    python.send(&server, &unique(), 6, &[]);
    wait_for_profile(&server, key).await;
    server.stop();

    let show = |env: &TestEnv| -> Value {
        let text = cli_ok_on(env, &url, &["profiles", "show", "user0@example.com"]);
        serde_json::from_str(&text).unwrap_or_else(|err| panic!("{err}: {text}"))
    };
    let before = show(&env);
    let rebuilt = cli_on(&env, &url, &["rebuild"]);
    assert!(rebuilt.status.success(), "{}", rebuilt.describe());
    assert!(
        rebuilt
            .stderr
            .contains("rebuilt engage's tables at postgres://")
            && rebuilt.stderr.contains("from 6 log entries"),
        "{}",
        rebuilt.describe()
    );
    let after = show(&env);
    assert_eq!(after, before);
    assert_eq!(after["profile"]["email"], "user0@example.com");
    let held = cli_on(&env, &url, &["profiles", "held", "--json"]);
    assert!(held.status.success(), "{}", held.describe());

    let quarantine = cli_on(&env, &url, &["engage", "quarantine", "--json"]);
    assert!(quarantine.status.success(), "{}", quarantine.describe());
    assert_eq!(quarantine.stdout, "");

    let source = json_lines(&cli_ok_on(&env, &url, &["source", "list", "--json"]))[0]["name"]
        .as_str()
        .expect("a source name")
        .to_owned();
    cli_ok_on(
        &env,
        &url,
        &[
            "destination",
            "create",
            "hook",
            "--kind",
            "webhook",
            "--url",
            "http://127.0.0.1:9/hook",
            "--source",
            &source,
        ],
    );
    let destinations = json_lines(&cli_ok_on(&env, &url, &["destination", "list", "--json"]));
    assert_eq!(destinations.len(), 1, "{destinations:?}");
    assert_eq!(destinations[0]["name"], "hook");
    let status = json_lines(&cli_ok_on(
        &env,
        &url,
        &["destination", "status", "hook", "--json"],
    ));
    assert_eq!(status[0]["name"], "hook");

    let created = CliOutput::run_with_stdin(
        env.command().args([
            "--database-url",
            &url,
            "admin",
            "create",
            "ada@example.com",
            "--password-stdin",
        ]),
        "correct horse battery\n",
    );
    assert!(created.status.success(), "{}", created.describe());
    let accounts = json_lines(&cli_ok_on(&env, &url, &["admin", "list", "--json"]));
    assert_eq!(accounts.len(), 1, "{accounts:?}");
    assert_eq!(accounts[0]["email"], "ada@example.com");

    let status = json_lines(&cli_ok_on(&env, &url, &["storage", "status", "--json"]));
    let status = &status[0];
    assert_documented("storage status --json", status);
    assert_eq!(status["data_dir"], db.url().to_string());
    assert_eq!(status["calls"], 6);
    assert_eq!(status["oldest_seq"], 1);
    assert_eq!(status["newest_seq"], 6);
    let stores: Vec<&str> = status["stores"]
        .as_array()
        .expect("stores")
        .iter()
        .map(|store| store["store"].as_str().expect("a store name"))
        .collect();
    for store in [
        "store",
        "engage",
        "audience",
        "flows",
        "sync",
        "console",
        "templates",
        "confirmations",
    ] {
        assert!(stores.contains(&store), "{store} in {stores:?}");
    }
    assert!(!stores.contains(&"other"), "{stores:?}");
    let sum: u64 = status["stores"]
        .as_array()
        .expect("stores")
        .iter()
        .map(|store| store["bytes"].as_u64().expect("bytes"))
        .sum();
    assert_eq!(status["total_bytes"].as_u64(), Some(sum));
    let holds: Vec<&str> = status["held_back_by"]
        .as_array()
        .expect("held_back_by")
        .iter()
        .map(|hold| hold["kind"].as_str().expect("a kind"))
        .collect();
    assert!(holds.contains(&"window"), "{status}");
    let text = cli_ok_on(&env, &url, &["storage", "status"]);
    assert!(text.starts_with("Database"), "{text}");
    assert!(!text.contains(".db"), "{text}");

    // No store was kept in the data folder.
    let files: Vec<_> = std::fs::read_dir(env.data_dir())
        .map(|dir| dir.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(files.is_empty(), "{files:?}");
}

/// Waits until `server` finds user0@example.com's one profile.
async fn wait_for_profile(server: &Server, key: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = profiles_with_email(server, key, "user0@example.com").await;
        if found.len() == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server never saw the profile: {found:?}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
