//! `signalbox destination …` as an operator uses it: each kind created, listed with its
//! secret redacted, its status, paused, resumed, replayed and deleted, bad flags refused with
//! a message naming them; and a destination created while `serve` runs is picked up by it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{json_lines, CliOutput, Server, TestEnv};

/// Secrets long enough that their last four characters show in listings.
const WRITE_KEY: &str = "wk-cli-segment-7c1e9a3f5b2d";
const API_KEY: &str = "pk_cli_klaviyo_4e8a0c6b2f19";
const WEBHOOK_SECRET: &str = "whsec-cli-9d3b7f1a5c0e";
const SECRETS: [&str; 3] = [WRITE_KEY, API_KEY, WEBHOOK_SECRET];

/// Asserts that a command printed none of the secrets, on stdout or stderr.
#[track_caller]
fn assert_no_secret(out: &CliOutput) {
    for secret in SECRETS {
        assert!(
            !out.stdout.contains(secret) && !out.stderr.contains(secret),
            "a secret was printed:\n{}",
            out.describe()
        );
    }
}

/// Runs a command that must succeed and print no secret; its stdout.
#[track_caller]
fn ok(env: &TestEnv, args: &[&str]) -> String {
    let out = env.cli(args);
    assert!(
        out.status.success(),
        "`signalbox {}` failed:\n{}",
        args.join(" "),
        out.describe()
    );
    assert_no_secret(&out);
    out.stdout
}

/// Runs a command that must fail with `code`, naming `needle` on stderr; its stderr.
#[track_caller]
fn fails(env: &TestEnv, args: &[&str], code: i32, needle: &str) -> String {
    let out = env.cli(args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "`signalbox {}`:\n{}",
        args.join(" "),
        out.describe()
    );
    assert!(
        out.stderr.contains(needle),
        "`signalbox {}` does not name {needle:?}:\n{}",
        args.join(" "),
        out.describe()
    );
    assert_eq!(out.stdout, "", "a failed command prints nothing on stdout");
    assert_no_secret(&out);
    out.stderr
}

/// One of each kind, forwarding the sources `web` (and `app`).
fn create_all(env: &TestEnv) {
    env.create_source("web");
    env.create_source("app");
    let id = ok(
        env,
        &[
            "destination",
            "create",
            "back",
            "--kind",
            "segment",
            "--write-key",
            WRITE_KEY,
            "--only-segment-profiles",
            "--rate",
            "100/s",
        ],
    );
    assert!(
        id.trim().starts_with("dst_"),
        "create prints the id: {id:?}"
    );
    assert_eq!(id.lines().count(), 1, "{id:?}");
    ok(
        env,
        &[
            "destination",
            "create",
            "fwd",
            "--kind",
            "klaviyo",
            "--api-key",
            API_KEY,
            "--endpoint",
            "http://127.0.0.1:9",
            "--source",
            "web",
        ],
    );
    ok(
        env,
        &[
            "destination",
            "create",
            "hook",
            "--kind",
            "webhook",
            "--url",
            "https://hooks.example.com/signalbox",
            "--secret",
            WEBHOOK_SECRET,
            "--source",
            "web",
            "--source",
            "app",
            "--rate",
            "25",
        ],
    );
}

fn listed(env: &TestEnv) -> Vec<Value> {
    json_lines(&ok(env, &["destination", "list", "--json"]))
}

fn find<'a>(list: &'a [Value], name: &str) -> &'a Value {
    list.iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {list:?}"))
}

fn tail(secret: &str) -> String {
    format!("••••{}", &secret[secret.len() - 4..])
}

#[test]
fn each_kind_is_created_and_listed_with_its_secret_redacted() {
    let env = TestEnv::new();
    create_all(&env);

    let list = listed(&env);
    assert_eq!(list.len(), 3, "{list:?}");
    let back = find(&list, "back");
    assert_eq!(back["kind"], "segment");
    assert_eq!(back["endpoint"], "https://api.segment.io");
    assert_eq!(back["only_segment_profiles"], true);
    assert_eq!(back["rate"], 100.0);
    assert_eq!(back["state"], "active");
    assert_eq!(back["write_key"], tail(WRITE_KEY));
    let fwd = find(&list, "fwd");
    assert_eq!(fwd["kind"], "klaviyo");
    assert_eq!(fwd["endpoint"], "http://127.0.0.1:9");
    assert_eq!(fwd["sources"], json!(["web"]));
    assert_eq!(fwd["rate"], Value::Null);
    assert_eq!(fwd["api_key"], tail(API_KEY));
    let hook = find(&list, "hook");
    assert_eq!(hook["kind"], "webhook");
    assert_eq!(hook["url"], "https://hooks.example.com/signalbox");
    assert_eq!(hook["secret"], tail(WEBHOOK_SECRET));
    assert_eq!(hook["sources"], json!(["web", "app"]));
    assert_eq!(hook["rate"], 25.0);

    let table = ok(&env, &["destination", "list"]);
    let header = table.lines().next().unwrap_or_default();
    for column in [
        "NAME", "KIND", "STATE", "RATE", "SECRET", "SOURCES", "TARGET",
    ] {
        assert!(header.contains(column), "{table}");
    }
    for (name, kind, secret) in [
        ("back", "segment", WRITE_KEY),
        ("fwd", "klaviyo", API_KEY),
        ("hook", "webhook", WEBHOOK_SECRET),
    ] {
        let row = table
            .lines()
            .find(|line| line.starts_with(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{table}"));
        assert!(row.contains(kind) && row.contains(&tail(secret)), "{row}");
    }

    // A second destination of the same name is refused.
    fails(
        &env,
        &[
            "destination",
            "create",
            "back",
            "--kind",
            "segment",
            "--write-key",
            WRITE_KEY,
        ],
        1,
        "back",
    );
}

#[test]
fn status_shows_what_a_destination_did() {
    let env = TestEnv::new();
    create_all(&env);
    let status: Value =
        serde_json::from_str(&ok(&env, &["destination", "status", "hook", "--json"]))
            .expect("status --json is one JSON object");
    assert_eq!(status["name"], "hook");
    assert_eq!(status["kind"], "webhook");
    assert_eq!(status["state"], "active");
    for field in [
        "delivered",
        "queued",
        "retrying",
        "retried",
        "failed",
        "dead_lettered",
        "lag_seconds",
        "last_error",
        "throughput",
        "circuit",
    ] {
        assert!(status.get(field).is_some(), "no {field} in {status}");
    }
    assert_eq!(status["delivered"], 0);
    assert_eq!(status["dead_lettered"], 0);

    let text = ok(&env, &["destination", "status", "back"]);
    for label in [
        "delivered:",
        "queued:",
        "retrying:",
        "failed:",
        "dead-lettered:",
        "lag:",
        "last error:",
        "throughput:",
        "circuit:",
    ] {
        assert!(text.contains(label), "no {label}:\n{text}");
    }
    assert!(text.contains(&tail(WRITE_KEY)), "{text}");

    let letters = ok(&env, &["destination", "dead-letters", "hook", "--json"]);
    assert_eq!(json_lines(&letters), Vec::<Value>::new());
    fails(&env, &["destination", "status", "nope"], 1, "nope");
    fails(&env, &["destination", "dead-letters", "nope"], 1, "nope");
}

#[test]
fn pause_resume_and_delete() {
    let env = TestEnv::new();
    create_all(&env);
    ok(&env, &["destination", "pause", "hook"]);
    assert_eq!(find(&listed(&env), "hook")["state"], "paused");
    assert_eq!(find(&listed(&env), "fwd")["state"], "active");
    ok(&env, &["destination", "resume", "hook"]);
    assert_eq!(find(&listed(&env), "hook")["state"], "active");
    ok(&env, &["destination", "delete", "hook"]);
    let names: Vec<Value> = listed(&env).iter().map(|d| d["name"].clone()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(!names.contains(&json!("hook")), "{names:?}");
    for command in ["pause", "resume", "delete"] {
        fails(&env, &["destination", command, "hook"], 1, "hook");
    }
}

#[test]
fn replay_takes_exactly_one_of_its_choices() {
    let env = TestEnv::new();
    create_all(&env);
    ok(&env, &["destination", "replay", "hook", "--dead-letters"]);
    ok(
        &env,
        &[
            "destination",
            "replay",
            "hook",
            "--since",
            "2024-05-01T12:00:00Z",
        ],
    );
    fails(
        &env,
        &["destination", "replay", "hook"],
        2,
        "--dead-letters",
    );
    fails(
        &env,
        &[
            "destination",
            "replay",
            "hook",
            "--dead-letters",
            "--since",
            "2024-05-01T12:00:00Z",
        ],
        2,
        "--since",
    );
    fails(
        &env,
        &["destination", "replay", "hook", "--since", "yesterday"],
        1,
        "--since",
    );
    fails(
        &env,
        &["destination", "replay", "nope", "--dead-letters"],
        1,
        "nope",
    );
}

#[test]
fn flags_that_do_not_fit_the_kind_are_refused() {
    let env = TestEnv::new();
    env.create_source("web");
    let base = ["destination", "create", "x"];
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "--kind",
                "webhook",
                "--url",
                "https://h.example.com/",
                "--source",
                "web",
                "--write-key",
                WRITE_KEY,
            ],
            "--write-key",
        ),
        (
            &[
                "--kind",
                "segment",
                "--write-key",
                WRITE_KEY,
                "--source",
                "web",
            ],
            "--source",
        ),
        (
            &[
                "--kind",
                "klaviyo",
                "--api-key",
                API_KEY,
                "--source",
                "web",
                "--only-segment-profiles",
            ],
            "--only-segment-profiles",
        ),
        (
            &[
                "--kind",
                "segment",
                "--write-key",
                WRITE_KEY,
                "--secret",
                WEBHOOK_SECRET,
            ],
            "--secret",
        ),
        (
            &[
                "--kind",
                "webhook",
                "--url",
                "https://h.example.com/",
                "--source",
                "web",
                "--endpoint",
                "https://api.segment.io",
            ],
            "--endpoint",
        ),
        (&["--kind", "segment"], "--write-key"),
        (&["--kind", "klaviyo", "--api-key", API_KEY], "--source"),
        (&["--kind", "webhook", "--source", "web"], "--url"),
        (&["--kind", "kafka"], "--kind"),
        (
            &[
                "--kind",
                "segment",
                "--write-key",
                WRITE_KEY,
                "--rate",
                "fast",
            ],
            "--rate",
        ),
        (
            &[
                "--kind",
                "segment",
                "--write-key",
                WRITE_KEY,
                "--rate",
                "0/s",
            ],
            "--rate",
        ),
    ];
    for (flags, named) in cases {
        let mut args = base.to_vec();
        args.extend_from_slice(flags);
        fails(&env, &args, 2, named);
    }
    fails(
        &env,
        &[
            "destination",
            "create",
            "x",
            "--kind",
            "segment",
            "--write-key",
            "",
        ],
        1,
        "--write-key",
    );
    assert_eq!(listed(&env), Vec::<Value>::new(), "nothing was created");
}

#[test]
fn bad_values_are_refused_naming_the_field() {
    let env = TestEnv::new();
    env.create_source("web");
    fails(
        &env,
        &[
            "destination",
            "create",
            "x",
            "--kind",
            "webhook",
            "--url",
            "https://h.example.com/",
            "--source",
            "nosuchsource",
        ],
        1,
        "source",
    );
    fails(
        &env,
        &[
            "destination",
            "create",
            "x",
            "--kind",
            "webhook",
            "--url",
            "not a url",
            "--source",
            "web",
        ],
        1,
        "url",
    );
    fails(
        &env,
        &[
            "destination",
            "create",
            "x",
            "--kind",
            "segment",
            "--write-key",
            WRITE_KEY,
            "--endpoint",
            "ftp://api.example.com",
        ],
        1,
        "endpoint",
    );
    fails(
        &env,
        &[
            "destination",
            "create",
            "bad name!",
            "--kind",
            "segment",
            "--write-key",
            WRITE_KEY,
        ],
        1,
        "name",
    );
    assert_eq!(listed(&env), Vec::<Value>::new(), "nothing was created");
}

/// A receiver on loopback that answers 200 and keeps each request's body.
fn receiver() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&bodies);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            seen.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&body).into_owned());
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (url, bodies)
}

async fn admin_get(server: &Server, key: &str, path: &str) -> Value {
    let response = reqwest::Client::new()
        .get(format!("{}{path}", server.base_url))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "GET {path}");
    response.json().await.unwrap()
}

#[tokio::test]
async fn a_destination_made_while_the_server_runs_is_picked_up() {
    let env = TestEnv::new();
    let admin = env
        .cli_ok(&["api-key", "create", "ops", "--scope", "admin"])
        .trim()
        .to_owned();
    let mut cmd = env.command();
    cmd.env("SIGNALBOX_LOG", "debug").args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--allow-private-destinations",
    ]);
    let server = Server::spawn(cmd, env.root().join("server.log"));
    // The banner names where destinations are kept, sync.db or the one PostgreSQL database,
    // and how to make one.
    let kept = if env.database_url().is_some() {
        "Destinations   in the store"
    } else {
        "sync.db"
    };
    assert!(
        server
            .banner
            .iter()
            .any(|line| line.contains(kept) && line.contains("signalbox destination create NAME")),
        "{:?}",
        server.banner
    );
    let (url, bodies) = receiver();
    ok(
        &env,
        &[
            "destination",
            "create",
            "live",
            "--kind",
            "webhook",
            "--url",
            &url,
            "--secret",
            WEBHOOK_SECRET,
            "--source",
            "default",
        ],
    );
    let listed = admin_get(&server, &admin, "/admin/v1/destinations").await;
    assert_eq!(listed["data"][0]["name"], "live", "{listed}");

    let (status, body) = server
        .post(
            "/v1/track",
            &server.write_key,
            &json!({"userId": "u1", "event": "Picked Up", "messageId": "picked-up-1"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !bodies
        .lock()
        .unwrap()
        .iter()
        .any(|body| body.contains("Picked Up"))
    {
        assert!(
            Instant::now() < deadline,
            "the receiver got nothing within 30 s\n--- log ---\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The delivery as the console sees it: request and response, the signature redacted.
    let deadline = Instant::now() + Duration::from_secs(30);
    let deliveries = loop {
        let deliveries = admin_get(&server, &admin, "/admin/v1/destinations/live/deliveries").await;
        let delivered = deliveries["data"]
            .as_array()
            .is_some_and(|records| records.iter().any(|r| r["status"] == 200));
        if delivered || Instant::now() > deadline {
            break deliveries;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let record = deliveries["data"]
        .as_array()
        .and_then(|records| records.iter().find(|r| r["status"] == 200))
        .unwrap_or_else(|| panic!("no delivery recorded: {deliveries}"));
    assert!(
        record["request_body"]
            .as_str()
            .unwrap_or_default()
            .contains("Picked Up"),
        "{record}"
    );
    assert!(
        !deliveries.to_string().contains(WEBHOOK_SECRET),
        "{deliveries}"
    );

    // The CLI reads the same progress while the server runs.
    let status: Value =
        serde_json::from_str(&ok(&env, &["destination", "status", "live", "--json"])).unwrap();
    assert!(status["delivered"].as_u64().unwrap_or(0) >= 1, "{status}");

    // Paused with the CLI: the server answers with the new state.
    ok(&env, &["destination", "pause", "live"]);
    let status = admin_get(&server, &admin, "/admin/v1/destinations/live/status").await;
    assert_eq!(status["state"], "paused", "{status}");
    let log = server.log();
    assert!(
        !log.contains(WEBHOOK_SECRET),
        "the log shows the webhook secret"
    );
    server.stop();
}
