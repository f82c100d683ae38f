//! `--database-url postgres://…`: the CLI and servers on one PostgreSQL database share
//! sources, keys and profiles. (Engage applies the log on one node at a time: a second server
//! on the database starts once the first has stopped.)

use std::time::{Duration, Instant};

use serde_json::Value;
use signalbox_store::postgres::testing::TestDatabase;

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
    let env = TestEnv::new();
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
    let elsewhere = TestEnv::new();
    let second = serve_on(&elsewhere, &url);
    assert_eq!(second.write_key, write_key);
    wait_for_profile(&second, key).await;
    second.stop();
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
