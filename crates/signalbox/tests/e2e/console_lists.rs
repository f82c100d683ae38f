//! The console's segment builder in real headless Chromium, through the built binary
//! (tests/clients/browser/console_segment_builder.mjs, Playwright over Debian's `chromium`;
//! `scripts/test` installs both): the live preview count follows the fields as they are typed,
//! a condition's kind switches its fields, and the segment is created. At phone width.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{repo_root, run_to_success, unique, Server, TestEnv};

const EMAIL: &str = "builder@example.com";
const PASSWORD: &str = "a builder's long password";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_segment_builder_counts_live_in_chromium() {
    let install = "run scripts/test, which installs them";
    let chromium =
        PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    assert!(chromium.exists(), "Chromium is not installed; {install}");
    let folder = repo_root().join("tests/clients/browser");
    assert!(
        folder
            .join("node_modules/playwright-core/package.json")
            .exists(),
        "playwright-core is not installed; {install}"
    );
    let env = TestEnv::new();
    let mut cmd = env.command();
    cmd.args(["serve", "--listen", "127.0.0.1:0"]);
    let server = Server::spawn(cmd, env.root().join(format!("server-{}.log", unique())));
    let mut admin = env
        .command()
        .args(["admin", "create", EMAIL, "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start signalbox admin");
    admin
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .expect("write the password");
    let output = admin.wait_with_output().expect("signalbox admin");
    assert!(output.status.success(), "{output:?}");
    let api_key = env
        .cli_ok(&[
            "api-key",
            "create",
            "builder",
            "--scope",
            "metrics:read,profiles:read",
        ])
        .trim()
        .to_owned();

    // Ada (pro) and Cleo (basic) ordered; Bob (pro) did not.
    for (user, email, plan, ordered) in [
        ("u-ada", "ada@example.com", "pro", true),
        ("u-bob", "bob@example.com", "pro", false),
        ("u-cleo", "cleo@example.com", "basic", true),
    ] {
        let identify = json!({"userId": user, "traits": {"email": email, "plan": plan}});
        let (status, body) = server
            .post("/v1/identify", &server.write_key, &identify)
            .await;
        assert_eq!(status, 200, "{body}");
        if ordered {
            let track = json!({"userId": user, "event": "Placed Order"});
            let (status, body) = server.post("/v1/track", &server.write_key, &track).await;
            assert_eq!(status, 200, "{body}");
        }
    }
    // The builder counts what engage has applied: wait for all three people and the metric.
    let http = reqwest::Client::new();
    let started = std::time::Instant::now();
    loop {
        let mut seen = String::new();
        for path in ["/api/metrics", "/api/profiles"] {
            if let Ok(response) = http
                .get(format!("{}{path}", server.base_url))
                .header("Authorization", format!("Klaviyo-API-Key {api_key}"))
                .header("revision", "2026-07-15")
                .send()
                .await
            {
                seen.push_str(&response.text().await.unwrap_or_default());
            }
        }
        let applied = ["Placed Order", "ada@", "bob@", "cleo@"]
            .iter()
            .all(|needle| seen.contains(needle));
        if applied {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the calls were not applied: {seen}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let screenshots = super::console::artifacts("builder");
    let node = std::env::var("NODE").unwrap_or_else(|_| "node".into());
    let mut script = Command::new(node);
    script
        .arg(folder.join("console_segment_builder.mjs"))
        .args(["--console", &server.base_url, "--email", EMAIL])
        .arg("--screenshots")
        .arg(&screenshots)
        .arg("--chromium")
        .arg(&chromium)
        .args(["--timeout", "60"])
        .env("CONSOLE_PASSWORD", PASSWORD);
    let out = run_to_success(&mut script, Duration::from_secs(300), &server);
    let report: Value = out
        .stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| panic!("no report line:\n{}", out.describe()));
    assert_eq!(
        report["counts"],
        json!([
            "Preview: 2 of 3 profiles would be in this segment now.",
            "Preview: 1 of 3 profiles would be in this segment now."
        ]),
        "{report}"
    );
    assert_eq!(report["heading"], "Pro buyers", "{report}");
    assert!(
        report["scrollWidth"].as_u64().unwrap_or(u64::MAX) <= 390,
        "no horizontal scrolling at 390 px: {report}"
    );
    let shots = report["screenshots"].as_array().expect("screenshots");
    assert_eq!(shots.len(), 4, "{report}");
    for shot in shots {
        let path = PathBuf::from(shot.as_str().unwrap());
        let bytes = std::fs::read(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        assert!(bytes.starts_with(b"\x89PNG"), "{}", path.display());
    }
    server.stop();
}
