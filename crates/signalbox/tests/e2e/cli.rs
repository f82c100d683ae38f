//! The CLI as an operator uses it, against a running server and a stopped one.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde_json::{json, Value};

use crate::harness::{
    read_all, signalbox, unique, CliOutput, LineReader, Server, TestEnv, PROPAGATION,
};

fn message_ids(calls: &[Value]) -> BTreeSet<String> {
    calls
        .iter()
        .map(|c| c["messageId"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn ids(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test]
async fn source_create_prints_only_the_key() {
    let env = TestEnv::new();
    let out = env.cli(&["source", "create", "web"]);
    assert!(out.status.success(), "{}", out.describe());
    let key = out
        .stdout
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("stdout must end with one newline: {:?}", out.stdout));
    assert!(
        !key.is_empty() && !key.contains(char::is_whitespace),
        "stdout must be the key and nothing else: {:?}",
        out.stdout
    );

    // What a shell script does: KEY=$(signalbox source create app).
    let mut shell = Command::new("sh");
    shell
        .args([
            "-c",
            r#"KEY=$("$0" --data-dir "$1" source create app) && printf '%s' "$KEY""#,
            env!("CARGO_BIN_EXE_signalbox"),
        ])
        .arg(env.data_dir())
        .env_remove("SIGNALBOX_DATA_DIR")
        .env_remove("SIGNALBOX_DATABASE_URL")
        .stdin(Stdio::null());
    if let Some(url) = env.database_url() {
        shell.env("SIGNALBOX_DATABASE_URL", url);
    }
    let shell = CliOutput::run(&mut shell);
    assert!(shell.status.success(), "{}", shell.describe());
    let app_key = shell.stdout;

    let server = env.serve();
    assert_eq!(server.track(key, "web-1").await, 200);
    assert_eq!(server.track(&app_key, "app-1").await, 200);
    assert_eq!(
        message_ids(&env.export(&["--source", "web"])),
        ids(&["web-1"])
    );
    assert_eq!(
        message_ids(&env.export(&["--source", "app"])),
        ids(&["app-1"])
    );

    let again = env.cli(&["source", "create", "web"]);
    assert!(
        !again.status.success(),
        "a second source named web must be refused"
    );
    assert_eq!(again.stdout, "", "a failed create prints no key");
    assert!(!again.stderr.is_empty(), "a failed create says why");
}

#[tokio::test]
async fn source_list_never_shows_a_whole_key() {
    let env = TestEnv::new();
    let web = env.create_source("web");
    let app = env.create_source("app");

    let table = env.cli_ok(&["source", "list"]);
    assert!(table.contains("web") && table.contains("app"), "{table}");
    assert!(table.contains("enabled"), "{table}");

    let lines = crate::harness::json_lines(&env.cli_ok(&["source", "list", "--json"]));
    let names: BTreeSet<String> = lines
        .iter()
        .map(|s| s["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(names, ids(&["web", "app"]));
    let json = serde_json::to_string(&lines).expect("serialise");
    for key in [&web, &app] {
        assert!(
            !table.contains(key.as_str()),
            "the table shows a key: {table}"
        );
        assert!(!json.contains(key.as_str()), "--json shows a key: {json}");
    }
}

#[tokio::test]
async fn rotate_key_keeps_the_old_key_working_during_the_grace_period() {
    let env = TestEnv::new();
    let old = env.create_source("web");
    let server = env.serve();
    assert_eq!(server.track(&old, "before-rotation").await, 200);

    let new = env.cli_ok(&["source", "rotate-key", "web"]);
    let new = new.strip_suffix('\n').expect("one line");
    assert!(
        !new.is_empty() && !new.contains('\n') && new != old,
        "{new:?}"
    );

    server.wait_for_status(new, 200, PROPAGATION).await;
    // Past a key reload now; the old key still works (default grace: 24 h).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(server.track(&old, "old-key-in-grace").await, 200);
    let listed = crate::harness::json_lines(&env.cli_ok(&["source", "list", "--json"]));
    assert_eq!(listed[0]["keys_in_grace"], json!(1), "{listed:?}");
}

#[tokio::test]
async fn rotate_key_with_no_grace_refuses_the_old_key_on_a_running_server() {
    let env = TestEnv::new();
    let old = env.create_source("web");
    let server = env.serve();
    assert_eq!(server.track(&old, "before-rotation").await, 200);

    let new = env.cli_ok(&["source", "rotate-key", "web", "--grace", "0s"]);
    let new = new.trim_end_matches('\n');

    let took = server.wait_for_status(&old, 401, PROPAGATION).await;
    eprintln!("old key refused {took:?} after rotate-key --grace 0s");
    let (status, body) = server
        .post(
            "/v1/track",
            &old,
            &json!({"userId": "u", "event": "E", "messageId": unique()}),
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(body["success"], json!(false), "{body}");
    assert!(body["code"].is_string(), "{body}");
    assert_eq!(server.track(new, "new-key").await, 200);
}

#[tokio::test]
async fn disable_enable_delete_reach_a_running_server_within_seconds() {
    let env = TestEnv::new();
    let key = env.create_source("web");
    let server = env.serve();
    assert_eq!(server.track(&key, "while-enabled").await, 200);

    let out = env.cli(&["source", "disable", "web"]);
    assert!(out.status.success(), "{}", out.describe());
    assert_eq!(out.stdout, "", "disable prints nothing on stdout");
    let took = server.wait_for_status(&key, 401, PROPAGATION).await;
    eprintln!("disable took effect after {took:?}");
    let (_, body) = server
        .post(
            "/v1/track",
            &key,
            &json!({"userId": "u", "event": "E", "messageId": unique()}),
        )
        .await;
    assert_eq!(body["code"], json!("disabled_write_key"), "{body}");

    env.cli_ok(&["source", "enable", "web"]);
    let took = server.wait_for_status(&key, 200, PROPAGATION).await;
    eprintln!("enable took effect after {took:?}");

    env.cli_ok(&["source", "delete", "web"]);
    let took = server.wait_for_status(&key, 401, PROPAGATION).await;
    eprintln!("delete took effect after {took:?}");

    // The source's calls stay in the log.
    let stored = message_ids(&env.export(&[]));
    assert!(stored.contains("while-enabled"), "{stored:?}");
    let listed = env.cli_ok(&["source", "list", "--json"]);
    assert!(!listed.contains("\"web\""), "{listed}");
}

#[tokio::test]
async fn disable_enable_delete_on_a_stopped_server() {
    let env = TestEnv::new();
    let key = env.create_source("web");
    env.cli_ok(&["source", "disable", "web"]);

    let server = env.serve();
    assert_eq!(server.track(&key, "while-disabled").await, 401);
    server.stop();

    env.cli_ok(&["source", "enable", "web"]);
    let server = env.serve();
    assert_eq!(server.track(&key, "while-enabled").await, 200);
    server.stop();

    env.cli_ok(&["source", "delete", "web"]);
    let server = env.serve();
    let (status, body) = server
        .post(
            "/v1/track",
            &key,
            &json!({"userId": "u", "event": "E", "messageId": "after-delete"}),
        )
        .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], json!("unknown_write_key"), "{body}");
    server.stop();

    assert_eq!(message_ids(&env.export(&[])), ids(&["while-enabled"]));
}

#[tokio::test]
async fn api_key_create_prints_only_a_pk_key_and_list_never_shows_it() {
    let env = TestEnv::new();
    let out = env.cli(&["api-key", "create", "reporting"]);
    assert!(out.status.success(), "{}", out.describe());
    let key = out.stdout.strip_suffix('\n').expect("ends with a newline");
    assert!(
        key.starts_with("pk_") && key.len() > 10 && !key.contains(char::is_whitespace),
        "stdout must be the pk_ key and nothing else: {:?}",
        out.stdout
    );
    let other = env.cli_ok(&["api-key", "create", "backup"]);

    let list = env.cli_ok(&["api-key", "list"]);
    assert!(
        list.contains("reporting") && list.contains("backup"),
        "{list}"
    );
    assert!(
        !list.contains(key),
        "api-key list shows a whole key: {list}"
    );
    assert!(
        !list.contains(other.trim()),
        "api-key list shows a whole key: {list}"
    );

    env.cli_ok(&["api-key", "delete", "backup"]);
    let list = env.cli_ok(&["api-key", "list"]);
    assert!(
        list.contains("reporting") && !list.contains("backup"),
        "{list}"
    );
}

#[tokio::test]
async fn api_key_scopes_are_given_at_creation_and_listed() {
    let env = TestEnv::new();
    env.cli_ok(&["api-key", "create", "reader", "--scope", "profiles:read"]);
    env.cli_ok(&["api-key", "create", "sdk"]);
    env.cli_ok(&[
        "api-key",
        "create",
        "ops",
        "--scope",
        "events:write,lists:read",
        "--scope",
        "admin",
    ]);
    env.cli_ok(&["api-key", "create", "all", "--full-access"]);

    let list = env.cli_ok(&["api-key", "list"]);
    let scopes_of = |name: &str| {
        let line = list
            .lines()
            .find(|line| line.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no line for {name}: {list}"));
        line.split_whitespace().last().unwrap().to_owned()
    };
    assert!(list.lines().next().unwrap().contains("SCOPES"), "{list}");
    assert_eq!(scopes_of("reader"), "profiles:read", "{list}");
    // Without --scope: every Klaviyo scope, not the admin API.
    assert_eq!(scopes_of("sdk"), "full", "{list}");
    assert_eq!(scopes_of("ops"), "admin,events:write,lists:read", "{list}");
    assert_eq!(scopes_of("all"), "full", "{list}");

    let out = env.cli(&[
        "api-key",
        "create",
        "typo",
        "--scope",
        "profiles:read,profile:write",
    ]);
    assert!(!out.status.success(), "{}", out.describe());
    assert!(out.stdout.is_empty(), "{}", out.describe());
    assert!(
        out.stderr.contains("unknown scope 'profile:write'")
            && out.stderr.contains("profiles:write")
            && out.stderr.contains("admin"),
        "{}",
        out.describe()
    );
    assert!(!env.cli_ok(&["api-key", "list"]).contains("typo"));
}

#[tokio::test]
async fn events_export_filters_by_source_and_since() {
    let env = TestEnv::new();
    let web = env.create_source("web");
    let app = env.create_source("app");
    let server = env.serve();
    assert_eq!(server.track(&web, "web-early").await, 200);
    assert_eq!(server.track(&app, "app-early").await, 200);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let since = Timestamp::now().to_string();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(server.track(&web, "web-late").await, 200);
    assert_eq!(server.track(&app, "app-late").await, 200);

    assert_eq!(
        message_ids(&env.export(&[])),
        ids(&["web-early", "app-early", "web-late", "app-late"])
    );
    assert_eq!(
        message_ids(&env.export(&["--source", "web"])),
        ids(&["web-early", "web-late"])
    );
    assert_eq!(
        message_ids(&env.export(&["--since", &since])),
        ids(&["web-late", "app-late"])
    );
    assert_eq!(
        message_ids(&env.export(&["--source", "app", "--since", &since])),
        ids(&["app-late"])
    );

    // Calls come out as stored, in order, with the server's fields.
    let calls = env.export(&["--source", "web"]);
    assert_eq!(calls[0]["messageId"], json!("web-early"));
    assert_eq!(calls[0]["type"], json!("track"));
    assert_eq!(calls[0]["event"], json!("E2E Checked"));
    assert!(calls[0]["receivedAt"].is_string());

    let bad = env.cli(&["events", "export", "--since", "yesterday"]);
    assert!(!bad.status.success());
    assert!(bad.stderr.contains("--since"), "{}", bad.describe());
    let unknown = env.cli(&["events", "export", "--source", "nosuch"]);
    assert!(!unknown.status.success(), "{}", unknown.describe());
    assert_eq!(unknown.stdout, "");
}

#[tokio::test]
async fn events_rejected_lists_refused_calls_with_their_code() {
    let env = TestEnv::new();
    let server = env.serve();
    let key = server.write_key.clone();

    let (status, body) = server
        .post(
            "/v1/track",
            &key,
            &json!({"userId": "u", "messageId": "no-event"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], json!("missing_event"), "{body}");

    // In a batch, a bad message is refused alone and the call still succeeds.
    let (status, body) = server
        .post(
            "/v1/batch",
            &key,
            &json!({"batch": [
                {"type": "track", "event": "Kept", "userId": "u", "messageId": "kept"},
                {"type": "identify", "traits": {"plan": "pro"}, "messageId": "no-ids"},
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let rejected = crate::harness::json_lines(&env.cli_ok(&["events", "rejected"]));
    let codes: Vec<&str> = rejected
        .iter()
        .map(|r| r["code"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(codes, ["missing_event", "no_user_anon_id"], "{rejected:?}");
    assert_eq!(rejected[0]["payload"]["messageId"], json!("no-event"));
    assert_eq!(rejected[1]["payload"]["messageId"], json!("no-ids"));
    assert!(rejected[0]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    assert_eq!(
        crate::harness::json_lines(&env.cli_ok(&["events", "rejected", "--source", "default"]))
            .len(),
        2
    );
    assert_eq!(message_ids(&env.export(&[])), ids(&["kept"]));
}

/// A running `signalbox events tail`, killed when dropped.
struct Tail {
    child: std::process::Child,
    lines: LineReader,
}

impl Tail {
    fn start(env: &TestEnv, extra: &[&str]) -> Tail {
        let mut cmd = env.command();
        cmd.args(["events", "tail"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start events tail");
        let lines = LineReader::new(child.stdout.take().expect("piped"));
        Tail { child, lines }
    }

    fn message_id(&mut self, timeout: Duration) -> Option<String> {
        let line = self.lines.next_line(timeout)?;
        let call: Value = serde_json::from_str(&line)
            .unwrap_or_else(|err| panic!("tail printed a line that is not JSON ({err}): {line}"));
        Some(call["messageId"].as_str().expect("messageId").to_owned())
    }

    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child.stderr.take().map(read_all).unwrap_or_default()
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn events_tail_follows_calls_sent_after_it_started() {
    let env = TestEnv::new();
    let server = env.serve();
    let key = server.write_key.clone();
    assert_eq!(server.track(&key, "before-tail").await, 200);

    let mut tail = Tail::start(&env, &[]);
    // Tail starts at the end of the log once it has opened it; send probes until one shows.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = Vec::new();
    while seen.is_empty() {
        assert!(
            Instant::now() < deadline,
            "events tail printed nothing within 15 s"
        );
        assert_eq!(
            server.track(&key, &format!("probe-{}", unique())).await,
            200
        );
        seen.extend(tail.message_id(Duration::from_millis(300)));
    }

    let after: Vec<String> = (1..=5).map(|i| format!("after-{i}")).collect();
    for id in &after {
        assert_eq!(server.track(&key, id).await, 200);
    }
    let mut followed = Vec::new();
    while followed.len() < after.len() {
        let Some(id) = tail.message_id(Duration::from_secs(5)) else {
            panic!(
                "events tail stopped following; got {followed:?}\n--- tail stderr ---\n{}",
                tail.stop()
            );
        };
        if id.starts_with("after-") {
            followed.push(id);
        } else {
            seen.push(id);
        }
    }
    assert_eq!(followed, after, "tail prints calls in log order");
    assert!(
        seen.iter().all(|id| id.starts_with("probe-")),
        "tail printed a call from before it started: {seen:?}"
    );
    tail.stop();

    let mut from_start = Tail::start(&env, &["--from-start"]);
    assert_eq!(
        from_start.message_id(Duration::from_secs(10)).as_deref(),
        Some("before-tail")
    );
    from_start.stop();
}

#[tokio::test]
async fn an_unreachable_postgres_database_fails_with_a_clear_message() {
    let env = TestEnv::embedded();
    // Nothing listens on port 1; the password must never be printed.
    let url = "postgres://signalbox:hunter2@127.0.0.1:1/signalbox";
    for (args, what) in [
        (vec!["serve", "--listen", "127.0.0.1:0"], "the store"),
        (vec!["source", "list"], "the store"),
        (vec!["events", "export"], "the store"),
        (vec!["storage", "status"], "the store"),
        (vec!["rebuild"], "the store"),
        (vec!["destination", "list"], "the store"),
        (vec!["engage", "quarantine"], "the store"),
        (vec!["profiles", "held"], "engage's tables"),
        (vec!["admin", "list"], "the console's tables"),
    ] {
        let mut full = vec!["--database-url", url];
        full.extend(args.iter().copied());
        let out = env.cli(&full);
        assert!(
            !out.status.success(),
            "{args:?} must fail\n{}",
            out.describe()
        );
        assert!(
            out.stderr
                .contains(&format!("cannot open {what} at postgres://"))
                && out.stderr.contains("@127.0.0.1:1/signalbox"),
            "{args:?}: unclear message\n{}",
            out.describe()
        );
        assert!(!out.stderr.contains("hunter2"), "{}", out.describe());
        assert_eq!(out.stdout, "", "{args:?}");
    }
    // No command made the data folder: everything is in the database.
    assert!(!env.data_dir().exists());
}

#[tokio::test]
async fn data_dir_and_listen_can_come_from_the_environment() {
    let env = TestEnv::new();
    if env.embedded_only("the store is the data folder SIGNALBOX_DATA_DIR names") {
        return;
    }
    let mut cmd = signalbox();
    cmd.arg("serve")
        .env("SIGNALBOX_DATA_DIR", env.data_dir())
        .env("SIGNALBOX_LISTEN", "127.0.0.1:0");
    let server = Server::spawn(cmd, env.root().join("env-server.log"));
    assert!(
        !server.base_url.ends_with(":8080"),
        "SIGNALBOX_LISTEN was ignored: {}",
        server.base_url
    );
    let store_line = server
        .banner
        .iter()
        .find(|l| l.trim_start().starts_with("Store"))
        .unwrap_or_else(|| panic!("no Store line in {:?}", server.banner));
    assert!(
        store_line.contains(&env.data_dir().display().to_string()),
        "SIGNALBOX_DATA_DIR was ignored: {store_line}"
    );
    assert_eq!(server.track(&server.write_key, "via-env").await, 200);

    let listed = CliOutput::run(
        signalbox()
            .args(["source", "list", "--json"])
            .env("SIGNALBOX_DATA_DIR", env.data_dir()),
    );
    assert!(listed.status.success(), "{}", listed.describe());
    assert!(listed.stdout.contains("\"default\""), "{}", listed.stdout);
    assert_eq!(message_ids(&env.export(&[])), ids(&["via-env"]));
}
