//! The console through the built binary: `signalbox admin` accounts (with and without a
//! running server), the setup link a first `serve` prints, and in headless Chromium
//! (Playwright over Debian's `chromium`; `scripts/test` installs both) a real sign-in
//! (tests/clients/browser/console_sign_in.mjs), the seed's walkthrough
//! (console_walkthrough.mjs) and every page at phone and laptop width and by keyboard
//! (console_layout.mjs).

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{json_lines, repo_root, run_to_success, unique, CliOutput, Server, TestEnv};

const EMAIL: &str = "ada@example.com";
const PASSWORD: &str = "correct horse battery";

/// `signalbox admin ARGS` with `stdin` on its standard input.
fn admin(env: &TestEnv, args: &[&str], stdin: &str) -> CliOutput {
    CliOutput::run_with_stdin(env.command().arg("admin").args(args), stdin)
}

#[track_caller]
fn admin_ok(env: &TestEnv, args: &[&str], stdin: &str) -> CliOutput {
    let out = admin(env, args, stdin);
    assert!(out.status.success(), "admin {args:?}:\n{}", out.describe());
    out
}

/// Signs in over HTTP as the sign-in form does; the session cookie, or the status.
async fn sign_in(base: &str, email: &str, password: &str) -> Result<String, u16> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let form = client.get(format!("{base}/sign-in")).send().await.unwrap();
    let cookie = set_cookie(&form, "signalbox_signin").expect("a form cookie");
    let html = form.text().await.unwrap();
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker).expect("a csrf field") + marker.len();
    let csrf = &html[start..start + html[start..].find('"').unwrap()];
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([("csrf", csrf), ("email", email), ("password", password)])
        .finish();
    let response = client
        .post(format!("{base}/sign-in"))
        .header("cookie", format!("signalbox_signin={cookie}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    if response.status() != reqwest::StatusCode::SEE_OTHER {
        return Err(response.status().as_u16());
    }
    Ok(set_cookie(&response, "signalbox_session").expect("a session cookie"))
}

fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

/// The status of the overview page with this session.
async fn overview(base: &str, session: &str) -> u16 {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{base}/"))
        .header("cookie", format!("signalbox_session={session}"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn admin_commands_manage_accounts_without_a_server() {
    let env = TestEnv::new();
    let out = admin(&env, &["create", EMAIL, "--password-stdin"], "too short\n");
    assert!(!out.status.success());
    assert!(
        out.stderr
            .contains("password: must be at least 12 characters"),
        "{}",
        out.describe()
    );
    let out = admin(&env, &["create", EMAIL], "");
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("--password-stdin"),
        "{}",
        out.describe()
    );
    let out = admin(
        &env,
        &["create", "not-an-email", "--password-stdin"],
        "a long enough one\n",
    );
    // A text that is no address is a mistake in the command line: named, with the reason.
    assert_eq!(out.status.code(), Some(2), "{}", out.describe());
    assert!(
        out.stderr.contains("'not-an-email'") && out.stderr.contains("is not an email address"),
        "{}",
        out.describe()
    );

    admin_ok(
        &env,
        &["create", " Ada@Example.com ", "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    admin_ok(
        &env,
        &["create", "bob@example.com", "--password-stdin"],
        "another long password\r\n",
    );
    let out = admin(
        &env,
        &["create", EMAIL, "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    assert!(!out.status.success());
    assert!(out.stderr.contains("exists already"), "{}", out.describe());

    let table = admin_ok(&env, &["list"], "").stdout;
    assert!(table.starts_with("EMAIL"), "{table}");
    assert!(
        table.contains(EMAIL) && table.contains("bob@example.com"),
        "{table}"
    );
    let listed: Vec<String> = json_lines(&admin_ok(&env, &["list", "--json"], "").stdout)
        .iter()
        .map(|account| account["email"].as_str().unwrap().to_owned())
        .collect();
    // Sorted by email.
    assert_eq!(listed, ["ada@example.com", "bob@example.com"]);

    admin_ok(
        &env,
        &["reset-password", EMAIL, "--password-stdin"],
        "a brand new password\n",
    );
    admin_ok(&env, &["delete", "bob@example.com"], "");
    let out = admin(&env, &["delete", "bob@example.com"], "");
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("no account for bob@example.com"),
        "{}",
        out.describe()
    );
    let listed = json_lines(&admin_ok(&env, &["list", "--json"], "").stdout);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["email"], EMAIL);

    // The file is the owner's only, and holds no password.
    if env.embedded_only("the rest reads console.db") {
        return;
    }
    let path = env.data_dir().join("console.db");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "console.db is {mode:o}");
    let bytes = std::fs::read(&path).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(!text.contains("a brand new password") && !text.contains(PASSWORD));
    assert!(text.contains("$argon2id$"));
}

#[tokio::test]
async fn admin_commands_work_beside_a_running_server() {
    let env = TestEnv::new();
    let server = env.serve();
    let base = server.base_url.clone();
    admin_ok(
        &env,
        &["create", EMAIL, "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    let session = sign_in(&base, EMAIL, PASSWORD).await.expect("signed in");
    assert_eq!(overview(&base, &session).await, 200);

    // A new password ends the account's sessions; the old password no longer works.
    admin_ok(
        &env,
        &["reset-password", EMAIL, "--password-stdin"],
        "a brand new password\n",
    );
    assert_eq!(overview(&base, &session).await, 303);
    assert_eq!(sign_in(&base, EMAIL, PASSWORD).await, Err(401));
    let session = sign_in(&base, EMAIL, "a brand new password")
        .await
        .expect("signed in");
    assert_eq!(overview(&base, &session).await, 200);

    admin_ok(&env, &["delete", EMAIL], "");
    assert_eq!(overview(&base, &session).await, 303);
    assert_eq!(
        sign_in(&base, EMAIL, "a brand new password").await,
        Err(401)
    );
    server.stop();
}

fn banner_value(server: &Server, label: &str) -> Option<String> {
    server
        .banner
        .iter()
        .find_map(|line| line.strip_prefix(&format!("  {label}")))
        .map(|rest| rest.split_whitespace().next().unwrap_or("").to_owned())
}

#[tokio::test]
async fn a_first_serve_prints_a_one_time_setup_link() {
    let env = TestEnv::new();
    let server = env.serve();
    let base = server.base_url.clone();
    assert_eq!(
        banner_value(&server, "Console").as_deref(),
        Some(format!("{base}/").as_str())
    );
    let line = server
        .banner
        .iter()
        .find(|line| line.starts_with("  Set up         "))
        .unwrap_or_else(|| panic!("no setup line in {:#?}", server.banner));
    assert!(
        line.ends_with("(one-time link: create the first account)"),
        "{line}"
    );
    let link = banner_value(&server, "Set up").unwrap();
    assert!(link.starts_with(&format!("{base}/setup/")), "{link}");

    let http = reqwest::Client::new();
    let page = http.get(&link).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains(">Confirm password</label>"), "{html}");
    server.stop();

    // With an account, no link; the console's address follows --public-url.
    admin_ok(
        &env,
        &["create", EMAIL, "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    let mut cmd = env.command();
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--public-url",
        "https://console.example.com",
    ]);
    let server = Server::spawn(cmd, env.root().join(format!("server-{}.log", unique())));
    assert_eq!(
        banner_value(&server, "Console").as_deref(),
        Some("https://console.example.com/")
    );
    assert!(
        !server.banner.iter().any(|line| line.contains("Set up")),
        "{:#?}",
        server.banner
    );
    // The link of the first start was never used, but an account exists now: it is closed.
    let page = http
        .get(link.replacen(&base, &server.base_url, 1))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 404);
    server.stop();
}

#[tokio::test]
async fn serve_caps_the_debuggers_streams_at_console_max_streams() {
    let env = TestEnv::new();
    let mut cmd = env.command();
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--console-max-streams",
        "1",
    ]);
    let server = Server::spawn(cmd, env.root().join(format!("server-{}.log", unique())));
    admin_ok(
        &env,
        &["create", EMAIL, "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    let base = server.base_url.clone();
    let session = sign_in(&base, EMAIL, PASSWORD).await.expect("signed in");
    let http = reqwest::Client::new();
    let open = || {
        http.get(format!("{base}/debugger/stream"))
            .header("cookie", format!("signalbox_session={session}"))
            .send()
    };
    let first = open().await.expect("open a stream");
    assert_eq!(first.status(), 200);
    let second = open().await.expect("open another");
    assert_eq!(second.status(), 429);
    assert!(second.headers().contains_key("retry-after"));
    let body = second.text().await.unwrap();
    assert!(body.contains("--console-max-streams"), "{body}");
    // The open stream does not hold up shutdown.
    server.stop();
    drop(first);
}

/// Where this test's screenshots go: a folder under the system's temporary folder that is
/// kept after the test, printed in the test's output.
/// A folder for a browser test's screenshots, kept for a look after the run in the build's
/// folder for test files (`CARGO_TARGET_TMPDIR`, gone with `cargo clean`), not the system's
/// temporary folder.
pub(crate) fn artifacts(test: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("signalbox-e2e-{test}-{}", unique()));
    std::fs::create_dir_all(&dir).expect("create the artifacts folder");
    println!("artifacts of {test}: {}", dir.display());
    dir
}

#[test]
fn sign_in_in_chromium_lands_on_the_overview() {
    let install = "run scripts/test, which installs them";
    let chromium =
        PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    assert!(
        chromium.exists(),
        "Chromium is not installed ({} is missing); {install}, or `apt-get install chromium`",
        chromium.display()
    );
    let folder = repo_root().join("tests/clients/browser");
    let manifest = folder.join("node_modules/playwright-core/package.json");
    assert!(
        manifest.exists(),
        "playwright-core is not installed ({} is missing); {install}, or `npm ci` in tests/clients/browser",
        manifest.display()
    );
    let env = TestEnv::new();
    let server = env.serve();
    admin_ok(
        &env,
        &["create", EMAIL, "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    let screenshots = artifacts("console-sign-in");
    let node = std::env::var("NODE").unwrap_or_else(|_| "node".into());
    let mut cmd = Command::new(node);
    cmd.arg(folder.join("console_sign_in.mjs"))
        .args(["--console", &server.base_url])
        .args(["--email", EMAIL])
        .arg("--screenshots")
        .arg(&screenshots)
        .arg("--chromium")
        .arg(&chromium)
        .args(["--timeout", "60"])
        .env("CONSOLE_PASSWORD", PASSWORD);
    let out = run_to_success(&mut cmd, Duration::from_secs(180), &server);
    let report: Value = out
        .stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| panic!("no report line:\n{}", out.describe()));
    let base = &server.base_url;
    assert_eq!(
        report["signInUrl"],
        format!("{base}/sign-in?next=/"),
        "{report}"
    );
    assert_eq!(report["landedUrl"], format!("{base}/"), "{report}");
    assert_eq!(report["heading"], "Overview", "{report}");
    assert_eq!(
        report["afterSignOut"],
        format!("{base}/sign-in?next=/"),
        "{report}"
    );
    assert_eq!(report["cookie"]["httpOnly"], true, "{report}");
    assert_eq!(report["cookie"]["sameSite"], "Lax", "{report}");
    assert_eq!(report["cookie"]["path"], "/", "{report}");
    for shot in report["screenshots"].as_array().unwrap() {
        let path = PathBuf::from(shot.as_str().unwrap());
        let bytes = std::fs::read(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        assert!(
            bytes.starts_with(b"\x89PNG"),
            "{} is not a PNG",
            path.display()
        );
    }
    server.stop();
}

/// Runs one phase of `tests/clients/browser/console_walkthrough.mjs`; its report line.
fn walkthrough_phase(
    server: &Server,
    screenshots: &std::path::Path,
    phase: &str,
    extra: &[&str],
) -> Value {
    let folder = repo_root().join("tests/clients/browser");
    let chromium =
        PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    let node = std::env::var("NODE").unwrap_or_else(|_| "node".into());
    let mut cmd = Command::new(node);
    cmd.arg(folder.join("console_walkthrough.mjs"))
        .args(["--phase", phase])
        .args(["--console", &server.base_url])
        .args(["--email", EMAIL])
        .arg("--screenshots")
        .arg(screenshots)
        .arg("--chromium")
        .arg(&chromium)
        .args(["--timeout", "60"])
        .args(extra)
        .env("CONSOLE_PASSWORD", PASSWORD);
    let out = run_to_success(&mut cmd, Duration::from_secs(300), server);
    out.stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| panic!("no report line from {phase}:\n{}", out.describe()))
}

/// The seed's walkthrough, by its labels, in real Chromium: sign in; a source's Settings › API
/// Keys › Reveal; Add Destination › search › Klaviyo › Configure Klaviyo; Integrations ›
/// Segment › Install › Connect to Segment › the option › Complete setup; then calls sent with
/// Segment's Python library under the revealed key; the metric with its gear icon, its chart and
/// the call in its Activity Feed; the person's profile and timeline. Every page is a screenshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_walkthrough_in_chromium() {
    let install = "run scripts/test, which installs them";
    let chromium =
        PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    assert!(chromium.exists(), "Chromium is not installed; {install}");
    let manifest =
        repo_root().join("tests/clients/browser/node_modules/playwright-core/package.json");
    assert!(
        manifest.exists(),
        "playwright-core is not installed; {install}"
    );
    let env = TestEnv::new();
    let mut cmd = env.command();
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--allow-private-destinations",
    ]);
    let server = Server::spawn(cmd, env.root().join(format!("server-{}.log", unique())));
    admin_ok(
        &env,
        &["create", EMAIL, "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    let api_key = env
        .cli_ok(&[
            "api-key",
            "create",
            "walk",
            "--scope",
            "metrics:read,profiles:read",
        ])
        .trim()
        .to_owned();
    let screenshots = artifacts("console-walkthrough");

    let setup = walkthrough_phase(
        &server,
        &screenshots,
        "setup",
        &["--segment-endpoint", &server.base_url],
    );
    assert_eq!(
        setup["writeKey"],
        json!(server.write_key),
        "the revealed key is the source's: {setup}"
    );
    let settings = env.cli_ok(&["source", "settings", "default"]);
    assert!(
        settings.contains("confirmOptin"),
        "Configure Klaviyo saved the settings: {settings}"
    );
    let destinations = env.cli_ok(&["destination", "list", "--json"]);
    assert!(
        destinations.contains("\"segment\""),
        "the Segment integration is installed: {destinations}"
    );

    // Calls from Segment's Python library, with the key the console revealed.
    let calls = json!([
        {"type": "identify", "userId": "walker-1", "traits": {"email": "walker@example.com", "firstName": "Walker"}},
        {"type": "track", "userId": "walker-1", "event": "Viewed Product", "properties": {"sku": "TEA-1", "name": "Sencha"}},
    ]);
    let file = env.root().join("calls.json");
    std::fs::write(&file, calls.to_string()).unwrap();
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let mut send = Command::new(python);
    send.arg(repo_root().join("tests/flows/send_calls.py"))
        .args([
            "--host",
            &server.base_url,
            "--write-key",
            setup["writeKey"].as_str().unwrap(),
        ])
        .arg("--calls")
        .arg(&file);
    run_to_success(&mut send, Duration::from_secs(120), &server);
    // The console shows what engage has applied: wait until the event is there.
    let started = std::time::Instant::now();
    let http = reqwest::Client::new();
    loop {
        let body = match http
            .get(format!("{}/api/metrics", server.base_url))
            .header("Authorization", format!("Klaviyo-API-Key {api_key}"))
            .header("revision", "2026-07-15")
            .send()
            .await
        {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if body.contains("Viewed Product") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the event was not applied"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let verify = walkthrough_phase(
        &server,
        &screenshots,
        "verify",
        &[
            "--person",
            "walker@example.com",
            "--metric",
            "Viewed Product",
        ],
    );
    assert_eq!(verify["metric"], "Viewed Product", "{verify}");
    let shots: Vec<&Value> = setup["screenshots"]
        .as_array()
        .unwrap()
        .iter()
        .chain(verify["screenshots"].as_array().unwrap())
        .collect();
    assert!(shots.len() >= 15, "a screenshot of each page: {shots:?}");
    for shot in shots {
        let path = PathBuf::from(shot.as_str().unwrap());
        let bytes = std::fs::read(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        assert!(
            bytes.starts_with(b"\x89PNG"),
            "{} is not a PNG",
            path.display()
        );
    }
    server.stop();
}

/// A Klaviyo-compatible API request with a private key; the status and the JSON body.
async fn api(
    server: &Server,
    key: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .request(method, format!("{}{path}", server.base_url))
        .header("Authorization", format!("Klaviyo-API-Key {key}"))
        .header("revision", "2026-07-15");
    if let Some(body) = body {
        request = request
            .header("Content-Type", "application/vnd.api+json")
            .body(body.to_string());
    }
    let response = request.send().await.expect("send an API request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("read the body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Every console page with data in it, at 390 px and at 1280 px, in real Chromium
/// (tests/clients/browser/console_layout.mjs): no horizontal scrolling, one h1 and a main
/// landmark, an accessible name on every visible field and image; the sign-in by keyboard
/// alone and the main navigation reached by Tab with a visible focus style. A screenshot of
/// each page at 390 px.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_console_page_fits_390_px_and_works_by_keyboard_in_chromium() {
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
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--allow-private-destinations",
    ]);
    let server = Server::spawn(cmd, env.root().join(format!("server-{}.log", unique())));
    admin_ok(
        &env,
        &["create", EMAIL, "--password-stdin"],
        &format!("{PASSWORD}\n"),
    );
    let key = env
        .cli_ok(&["api-key", "create", "layout", "--scope", "full,admin"])
        .trim()
        .to_owned();

    // Data on every page: a list the people join, calls from the source, a segment, a flow,
    // a webhook destination (failing: nothing listens on its port).
    let (status, body) = api(
        &server,
        &key,
        reqwest::Method::POST,
        "/api/lists",
        Some(json!({"data": {"type": "list", "attributes": {"name": "Newsletter subscribers of the spring tea tasting"}}})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let list = body["data"]["id"].as_str().unwrap().to_owned();
    let mut batch = Vec::new();
    for (n, plan) in ["pro", "free", "pro"].iter().enumerate() {
        batch.push(json!({"type": "identify", "userId": format!("layout-{n}"),
            "traits": {"email": format!("person.with.a.rather.long.address.{n}@a-long-domain-name.example.com"),
                "firstName": "Walker", "plan": plan,
                "favourite_teas": ["Sencha", "Gyokuro", "Long Jing", "Darjeeling first flush"]},
            "integrations": {"Klaviyo": {"listId": list, "confirmOptin": false}}}));
        batch.push(json!({"type": "track", "userId": format!("layout-{n}"), "event": "Placed Order",
            "properties": {"order_id": format!("order-{n}"), "revenue": 42.5,
                "products": [{"sku": "TEA-SENCHA-LOOSE-LEAF-100G", "name": "Sencha, loose leaf, 100 g"}]}}));
    }
    let (status, body) = server
        .post("/v1/batch", &server.write_key, &json!({"batch": batch}))
        .await;
    assert_eq!(status, 200, "{body}");
    let segment_file = env.root().join("segment.json");
    std::fs::write(
        &segment_file,
        json!({"name": "Pro plan", "definition": {"condition_groups": [{"conditions": [
            {"type": "profile-property", "property": "properties['plan']",
             "filter": {"type": "string", "operator": "equals", "value": "pro"}}]}]}})
        .to_string(),
    )
    .unwrap();
    let out = env.cli_ok(&[
        "segment",
        "--api-key",
        &key,
        "--url",
        &server.base_url,
        "apply",
        segment_file.to_str().unwrap(),
    ]);
    let segment = out
        .strip_prefix("created segment ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected `segment apply` output {out:?}"))
        .to_owned();
    let flow_file = env.root().join("flow.json");
    std::fs::write(
        &flow_file,
        json!({"name": "Welcome series", "status": "draft", "definition": {
        "triggers": [{"type": "list", "id": list}],
        "entry_action_id": "hello",
        "actions": [
            {"temporary_id": "hello", "type": "send-email", "data": {"status": "live", "message": {
                "from_email": "hello@tea.test", "from_label": "Tea Shop", "subject_line": "Welcome",
                "html": "<p>Welcome</p>", "text": "Welcome", "smart_sending_enabled": false}},
             "links": {"next": "wait"}},
            {"temporary_id": "wait", "type": "time-delay", "data": {"unit": "days", "value": 2},
             "links": {"next": null}}
        ]}})
        .to_string(),
    )
    .unwrap();
    let out = env.cli_ok(&[
        "flow",
        "--server",
        &server.base_url,
        "--api-key",
        &key,
        "apply",
        flow_file.to_str().unwrap(),
    ]);
    let flow = out
        .strip_prefix("created flow ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected `flow apply` output {out:?}"))
        .to_owned();
    env.cli_ok(&[
        "destination",
        "create",
        "hook",
        "--kind",
        "webhook",
        "--url",
        "http://127.0.0.1:9/signalbox-hook",
        "--secret",
        "a-webhook-secret-of-some-length",
        "--source",
        "default",
    ]);

    // Wait until engage has applied the calls: the person and the metric are there.
    let started = std::time::Instant::now();
    let (person, metric) = loop {
        let (_, profiles) = api(
            &server,
            &key,
            reqwest::Method::GET,
            "/api/profiles?filter=equals(external_id,%22layout-0%22)",
            None,
        )
        .await;
        let (_, metrics) = api(&server, &key, reqwest::Method::GET, "/api/metrics", None).await;
        let person = profiles["data"][0]["id"].as_str().map(str::to_owned);
        let metric = metrics["data"].as_array().and_then(|all| {
            all.iter()
                .find(|m| m["attributes"]["name"] == "Placed Order")
                .and_then(|m| m["id"].as_str().map(str::to_owned))
        });
        if let (Some(person), Some(metric)) = (person, metric) {
            break (person, metric);
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the calls were not applied: {profiles} {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let pages = json!([
        {"name": "connections", "path": "/connections"},
        {"name": "source", "path": "/sources/default"},
        {"name": "source-settings", "path": "/sources/default/settings"},
        {"name": "catalog", "path": "/destinations/catalog"},
        {"name": "configure-klaviyo", "path": "/destinations/new/klaviyo?source=default"},
        {"name": "configure-webhook", "path": "/destinations/new/webhook"},
        {"name": "configure-segment", "path": "/destinations/new/segment"},
        {"name": "integrations", "path": "/integrations"},
        {"name": "segment-install", "path": "/integrations/segment/install"},
        {"name": "debugger", "path": "/debugger"},
        {"name": "metrics", "path": "/analytics/metrics"},
        {"name": "metric", "path": format!("/analytics/metrics/{metric}")},
        {"name": "profiles", "path": "/profiles"},
        {"name": "profile", "path": format!("/profiles/{person}")},
        {"name": "lists", "path": "/lists"},
        {"name": "list", "path": format!("/lists/{list}")},
        {"name": "segments", "path": "/segments"},
        {"name": "segment", "path": format!("/segments/{segment}")},
        {"name": "flows", "path": "/flows"},
        {"name": "flow", "path": format!("/flows/{flow}")},
        {"name": "deliveries", "path": "/deliveries"},
        {"name": "delivery", "path": "/deliveries/hook"},
    ]);
    let screenshots = artifacts("console-layout");
    let node = std::env::var("NODE").unwrap_or_else(|_| "node".into());
    let mut cmd = Command::new(node);
    cmd.arg(folder.join("console_layout.mjs"))
        .args(["--console", &server.base_url])
        .args(["--email", EMAIL])
        .arg("--screenshots")
        .arg(&screenshots)
        .args(["--pages", &pages.to_string()])
        .args(["--segment-write-key", "a-segment-write-key-from-segment"])
        .arg("--chromium")
        .arg(&chromium)
        .args(["--timeout", "60"])
        .env("CONSOLE_PASSWORD", PASSWORD);
    let out = run_to_success(&mut cmd, Duration::from_secs(600), &server);
    let report: Value = out
        .stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| panic!("no report line:\n{}", out.describe()));
    assert_eq!(report["problems"], json!([]), "{report}");
    assert_eq!(report["signIn"]["landed"], "/", "{report}");
    assert!(report["navFocus"]["link"].is_string(), "{report}");
    let checked = report["pages"].as_array().unwrap();
    // Every page above, the sign-in page, the overview and the Segment setup page, at two
    // widths each.
    assert_eq!(
        checked.len(),
        2 * (pages.as_array().unwrap().len() + 3),
        "{report}"
    );
    for page in checked {
        assert!(
            page["scrollWidth"].as_u64() <= page["innerWidth"].as_u64(),
            "{page}"
        );
    }
    let shots = report["screenshots"].as_array().unwrap();
    assert!(shots.len() > pages.as_array().unwrap().len(), "{shots:?}");
    for shot in shots {
        let path = PathBuf::from(shot.as_str().unwrap());
        let bytes = std::fs::read(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        assert!(
            bytes.starts_with(b"\x89PNG"),
            "{} is not a PNG",
            path.display()
        );
    }
    server.stop();
}
