//! A log entry that cannot be applied is quarantined by the running server while the entries
//! after it are applied; `signalbox engage quarantine` lists it, and `… retry SEQ` reports
//! the error while the cause is there and applies it once the cause is gone.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{json_lines, Server, TestEnv};

const POISONED: &str = "poisoned@example.com";

/// `engage quarantine --json`, once it lists `n` entries (or after 20 s).
fn quarantined(env: &TestEnv, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows = json_lines(&env.cli_ok(&["engage", "quarantine", "--json"]));
        for row in &rows {
            crate::cli_json::assert_documented("engage quarantine --json", row);
        }
        if rows.len() == n || Instant::now() > deadline {
            return rows;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn retry(env: &TestEnv, server: &Server, key: &str, seq: i64) -> crate::harness::CliOutput {
    env.cli(&[
        "engage",
        "quarantine",
        "retry",
        &seq.to_string(),
        "--url",
        &server.base_url,
        "--api-key",
        key,
    ])
}

#[tokio::test]
async fn a_poisoned_entry_is_quarantined_listed_and_retried_through_the_cli() {
    let env = TestEnv::new();
    let key = env
        .cli_ok(&["api-key", "create", "ops", "--scope", "admin"])
        .trim()
        .to_owned();
    let mut cmd = env.command();
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--test-fail-entries-containing",
        POISONED,
    ]);
    let server = Server::spawn(cmd, env.root().join("server-poisoned.log"));
    let identify = |user: &str, email: &str| json!({"type": "identify", "userId": user, "traits": {"email": email}});
    let (status, body) = server
        .post(
            "/v1/batch",
            &server.write_key,
            &json!({"batch": [
                identify("u1", "before@example.com"),
                identify("u2", POISONED),
                identify("u3", "after@example.com"),
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let rows = quarantined(&env, 1);
    assert_eq!(rows.len(), 1, "{rows:?}\n--- log ---\n{}", server.log());
    let seq = rows[0]["seq"].as_i64().unwrap();
    assert_eq!(rows[0]["kind"], json!("identify"));
    assert_eq!(rows[0]["source"], json!("default"));
    assert_eq!(rows[0]["tries"], json!(3));
    assert!(
        rows[0]["error"]
            .as_str()
            .unwrap()
            .contains("planned failure"),
        "{rows:?}"
    );
    // The entry after it was applied.
    let shown = env.cli_ok(&["profiles", "show", "after@example.com"]);
    assert!(shown.contains("after@example.com"), "{shown}");
    let table = env.cli_ok(&["engage", "quarantine"]);
    assert!(
        table.contains("identify") && table.contains("default"),
        "{table}"
    );

    // While the cause is there, the retry reports the error and fails.
    let out = retry(&env, &server, &key, seq);
    assert!(!out.status.success(), "{}", out.describe());
    assert!(
        out.stderr.contains("still fails (tries: 4)") && out.stderr.contains("planned failure"),
        "{}",
        out.describe()
    );
    server.stop();

    // After the fix (here: the server runs without the planned failure), it is applied.
    let server = env.serve();
    let out = retry(&env, &server, &key, seq);
    assert!(out.status.success(), "{}", out.describe());
    assert!(out.stdout.contains("applied"), "{}", out.describe());
    assert!(quarantined(&env, 0).is_empty());
    let shown = env.cli_ok(&["profiles", "show", POISONED]);
    assert!(shown.contains(POISONED), "{shown}");
    // Nothing is quarantined under that number any more.
    let out = retry(&env, &server, &key, seq);
    assert!(!out.status.success());
    assert!(out.stderr.contains("404"), "{}", out.describe());
    server.stop();
}
