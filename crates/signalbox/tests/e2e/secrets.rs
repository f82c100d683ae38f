//! Secrets stay secret: with debug logging on, no write key or private API key, valid or
//! not, reaches the server's log through any of the ways a client can send one.

use serde_json::json;

use crate::harness::{unique, Server, TestEnv};

#[tokio::test]
async fn no_key_reaches_the_log_at_debug_level() {
    let env = TestEnv::new();
    let api_key = env
        .cli_ok(&[
            "api-key",
            "create",
            "ops",
            "--full-access",
            "--scope",
            "admin",
        ])
        .trim()
        .to_owned();
    assert!(api_key.starts_with("pk_"), "{api_key}");
    let mut cmd = env.command();
    cmd.env("SIGNALBOX_LOG", "debug")
        .args(["serve", "--listen", "127.0.0.1:0"]);
    let server = Server::spawn(cmd, env.root().join("server.log"));
    let key = server.write_key.clone();
    let wrong_write_key = format!("wrongwritekey{}", unique());
    let wrong_api_key = format!("pk_wrongapikey{}", unique());
    let http = reqwest::Client::new();
    let base = &server.base_url;

    // Every way a write key arrives: Basic, body (alone and beside a Bearer token), the
    // analytics.js settings path, and an unknown key.
    let (status, _) = server
        .post("/v1/track", &key, &json!({"userId": "u", "event": "E"}))
        .await;
    assert_eq!(status, 200);
    let batch = json!({"writeKey": key, "batch": [{"type": "identify", "userId": "u"}]});
    let answer = http
        .post(format!("{base}/v1/batch"))
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let answer = http
        .post(format!("{base}/v1/batch"))
        .bearer_auth("oauth-token")
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let answer = http
        .get(format!("{base}/v1/projects/{key}/settings"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let (status, _) = server
        .post(
            "/v1/track",
            &wrong_write_key,
            &json!({"userId": "u", "event": "E"}),
        )
        .await;
    assert_eq!(status, 401);
    let answer = http
        .get(format!("{base}/v1/projects/{wrong_write_key}/settings"))
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_client_error());

    // Private keys on the admin API and the Klaviyo-compatible API, valid and not.
    for (scheme, key, expected) in [
        ("Bearer", &api_key, 200),
        ("Klaviyo-API-Key", &api_key, 200),
        ("Bearer", &wrong_api_key, 401),
    ] {
        let answer = http
            .get(format!("{base}/admin/v1/sources"))
            .header("authorization", format!("{scheme} {key}"))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), expected, "{scheme} on the admin API");
    }
    for (key, expected) in [(&api_key, 200), (&wrong_api_key, 401)] {
        let answer = http
            .get(format!("{base}/api/metrics"))
            .header("authorization", format!("Klaviyo-API-Key {key}"))
            .header("revision", "2026-07-15")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), expected, "Klaviyo API");
    }

    let log = server.log();
    server.stop();
    assert!(log.contains("DEBUG"), "debug logging was on:\n{log}");
    for secret in [&key, &wrong_write_key, &api_key, &wrong_api_key] {
        assert!(
            !log.contains(secret.as_str()),
            "a key reached the log:\n{log}"
        );
    }
}

/// Every path under `dir` (itself included) with its permission bits.
fn modes(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).expect("read the data folder") {
                pending.push(entry.expect("a folder entry").path());
            }
        }
        out.push((path, meta.permissions().mode() & 0o777));
    }
    out
}

#[tokio::test]
async fn the_data_folder_and_every_file_in_it_are_private() {
    let env = TestEnv::new();
    if env.embedded_only("checks the modes of the store's files") {
        return;
    }
    let server = env.serve();
    // Something through every store, so that their files (and the log's WAL) exist.
    assert_eq!(server.track(&server.write_key, "private-1").await, 200);
    let found = modes(&env.data_dir());
    let names: Vec<String> = found
        .iter()
        .map(|(path, _)| path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    // sync.db holds the destinations' write keys, API keys and webhook secrets.
    for expected in [
        "signalbox.db",
        "signalbox.db-wal",
        "engage.db",
        "flows.db",
        "sync.db",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    assert_eq!(found.first().map(|(_, mode)| *mode), Some(0o700));
    for (path, mode) in &found {
        assert_eq!(mode & 0o077, 0, "{} is {mode:o}", path.display());
    }
    server.stop();
}

#[tokio::test]
async fn a_data_folder_left_open_by_an_older_version_is_made_private() {
    use std::os::unix::fs::PermissionsExt;
    let env = TestEnv::new();
    if env.embedded_only("checks the modes of the store's files") {
        return;
    }
    env.create_source("web");
    // As an older version left it: a folder and files anyone may read.
    let open_up = |path: &std::path::Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    for (path, _) in modes(&env.data_dir()) {
        let mode = if path.is_dir() { 0o755 } else { 0o644 };
        open_up(&path, mode);
    }
    let server = env.serve();
    for (path, mode) in modes(&env.data_dir()) {
        assert_eq!(mode & 0o077, 0, "{} is {mode:o}", path.display());
    }
    server.stop();
}
