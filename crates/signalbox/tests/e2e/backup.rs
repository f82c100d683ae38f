//! `signalbox backup` of a running embedded installation filled through Segment's Python
//! library and Klaviyo's Python SDK, taken while a stream of calls arrives, then `signalbox
//! restore` into a new folder: a node served from it keeps the write key, answers the SDK with
//! the same profiles, events, lists, segments, templates and flows, and applies new calls.
//! On PostgreSQL both commands point at `pg_dump` instead.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::harness::*;
use crate::migrate::{sdk, sends_and_applies, snapshot};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_load_restores_what_the_sdk_saw() {
    let env = TestEnv::embedded();
    let api_key = env
        .cli_ok(&["api-key", "create", "backup", "--full-access"])
        .trim()
        .to_owned();
    let server = env.serve();
    let write_key = server.write_key.clone();
    sdk(
        "fill",
        &server,
        &["--api-key", &api_key, "--write-key", &write_key],
    );
    let before = snapshot(&server, &api_key);

    // A stream of anonymous calls while the backup runs: held until someone is identified,
    // so they add to the log without changing what the SDK reads.
    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let load = tokio::spawn({
        let (stop, acknowledged) = (Arc::clone(&stop), Arc::clone(&acknowledged));
        let (base, key) = (server.base_url.clone(), write_key.clone());
        async move {
            let client = reqwest::Client::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<_> = (0..20)
                    .map(|i| {
                        json!({"type": "track", "event": "Viewed Page",
                               "anonymousId": format!("anon-{n}-{i}"),
                               "messageId": format!("load-{n}-{i}")})
                    })
                    .collect();
                n += 1;
                let sent = client
                    .post(format!("{base}/v1/batch"))
                    .basic_auth(&key, Some(""))
                    .json(&json!({ "batch": batch }))
                    .send()
                    .await;
                if sent.is_ok_and(|r| r.status() == 200) {
                    acknowledged.fetch_add(20, Ordering::Relaxed);
                }
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let archive = env.root().join("installation.backup");
    let archive_arg = archive.to_str().expect("a UTF-8 path");
    let during = acknowledged.load(Ordering::Relaxed);
    let out = env.cli(&["backup", "--to", archive_arg, "--json"]);
    assert!(out.status.success(), "{}", out.describe());
    let summary = &json_lines(&out.stdout)[0];
    crate::cli_json::assert_documented("backup --json", summary);
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.expect("the load task");
    assert!(
        acknowledged.load(Ordering::Relaxed) > during,
        "no call was acknowledged while the backup ran"
    );
    let names: Vec<&str> = summary["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f["name"].as_str().expect("a name"))
        .collect();
    assert_eq!(
        names.last(),
        Some(&"signalbox.db"),
        "the call log is copied last: {names:?}"
    );
    for store in [
        "engage.db",
        "audience.db",
        "flows.db",
        "templates.db",
        "link.key",
    ] {
        assert!(names.contains(&store), "{store} is not in {names:?}");
    }

    // A second backup never overwrites the first.
    let again = env.cli(&["backup", "--to", archive_arg]);
    assert!(!again.status.success(), "{}", again.describe());
    assert!(
        again.stderr.contains("exists already"),
        "{}",
        again.describe()
    );
    server.stop();

    let elsewhere = TestEnv::embedded();
    let out = elsewhere.cli(&["restore", "--from", archive_arg, "--json"]);
    assert!(out.status.success(), "{}", out.describe());
    crate::cli_json::assert_documented("restore --json", &json_lines(&out.stdout)[0]);
    // Into a folder that holds data: refused.
    let refused = elsewhere.cli(&["restore", "--from", archive_arg]);
    assert!(!refused.status.success(), "{}", refused.describe());
    assert!(
        refused.stderr.contains("is not empty"),
        "{}",
        refused.describe()
    );

    let restored = elsewhere.serve();
    assert_eq!(restored.write_key, write_key);
    let after = snapshot(&restored, &api_key);
    assert_eq!(after, before, "{}", restored.log());

    // The Segment library's calls with the same write key are accepted and applied.
    sends_and_applies(&restored, &api_key, &write_key).await;
    restored.stop();
}

#[test]
fn backup_and_restore_point_a_postgres_installation_at_its_own_tools() {
    let env = TestEnv::embedded();
    let url = "postgres://signalbox@127.0.0.1:1/signalbox";
    let backup = env.cli(&["--database-url", url, "backup", "--to", "x.backup"]);
    assert!(!backup.status.success(), "{}", backup.describe());
    assert!(backup.stderr.contains("pg_dump"), "{}", backup.describe());
    let restore = env.cli(&["--database-url", url, "restore", "--from", "x.backup"]);
    assert!(!restore.status.success(), "{}", restore.describe());
    assert!(
        restore.stderr.contains("pg_restore"),
        "{}",
        restore.describe()
    );
}
