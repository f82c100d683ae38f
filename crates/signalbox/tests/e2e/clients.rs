//! Segment's own client libraries against the real server: every call they send is stored once,
//! with its fields intact.
//!
//! The scripts in tests/clients/ send message i of a run from a fixed recipe (documented in
//! tests/clients/python/send.py); `expected_problems` checks a stored call against the same
//! recipe. `scripts/test` installs the libraries; a missing one fails the test with the command
//! that installs it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{json, Value};

use crate::harness::{
    expect_properties, json_lines, repo_root, run_to_success, time_problems, unique, Server,
    TestEnv,
};

const KINDS: [&str; 6] = ["identify", "track", "page", "screen", "group", "alias"];
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

#[tokio::test]
async fn python_library_calls_arrive_intact_and_once() {
    let python = Python::find();
    let env = TestEnv::new();
    let server = env.serve();
    let run = format!("py-{}", unique());
    let started = Timestamp::now();

    let sent = python.send(&server, &run, 120, &["--batch-size", "25"]);
    // Sending the same calls again (as a retrying client would) stores nothing new.
    let resent = python.send(&server, &run, 120, &["--batch-size", "25"]);
    assert_eq!(sent, resent);

    check_stored(&env, &server, &run, 120, &sent, "analytics-python", started);
}

#[tokio::test]
async fn python_library_gzip_calls_arrive_intact() {
    let python = Python::find();
    let env = TestEnv::new();
    let server = env.serve();
    let run = format!("pygz-{}", unique());
    let started = Timestamp::now();

    let sent = python.send(&server, &run, 60, &["--gzip", "--batch-size", "20"]);

    check_stored(&env, &server, &run, 60, &sent, "analytics-python", started);
}

#[tokio::test]
async fn node_library_calls_arrive_intact_and_once() {
    let node = Node::find();
    let env = TestEnv::new();
    let server = env.serve();
    let run = format!("node-{}", unique());
    let started = Timestamp::now();

    let sent = node.send(&server, &run, 120, &["--batch-size", "15"]);

    check_stored(
        &env,
        &server,
        &run,
        120,
        &sent,
        "@segment/analytics-node",
        started,
    );
}

/// `python3` (or `$PYTHON`) with segment-analytics-python importable.
pub(crate) struct Python {
    program: String,
    script: PathBuf,
}

impl Python {
    pub(crate) fn find() -> Python {
        let program = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        let probe = Command::new(&program)
            .args(["-c", "import segment.analytics"])
            .stdin(Stdio::null())
            .output();
        let install = "run scripts/test, or `python3 -m pip install -r tests/clients/python/requirements.txt`";
        match probe {
            Err(err) => panic!("cannot run {program} ({err}); {install}"),
            Ok(out) if !out.status.success() => panic!(
                "segment-analytics-python is not installed for {program}; {install}\n{}",
                String::from_utf8_lossy(&out.stderr)
            ),
            Ok(_) => {}
        }
        Python {
            program,
            script: repo_root().join("tests/clients/python/send.py"),
        }
    }

    pub(crate) fn send(
        &self,
        server: &Server,
        run: &str,
        count: usize,
        extra: &[&str],
    ) -> Vec<String> {
        let mut cmd = Command::new(&self.program);
        cmd.arg(&self.script);
        run_sender(cmd, server, run, count, extra)
    }
}

/// `node` (or `$NODE`) with tests/clients/node/node_modules installed.
struct Node {
    program: String,
    script: PathBuf,
}

impl Node {
    fn find() -> Node {
        let program = std::env::var("NODE").unwrap_or_else(|_| "node".into());
        let folder = repo_root().join("tests/clients/node");
        let install = "run scripts/test, or `npm ci` in tests/clients/node";
        let library = folder.join("node_modules/@segment/analytics-node/package.json");
        assert!(
            library.exists(),
            "@segment/analytics-node is not installed ({} is missing); {install}",
            library.display()
        );
        if let Err(err) = Command::new(&program).arg("--version").output() {
            panic!("cannot run {program} ({err}); install Node.js 20 or later");
        }
        Node {
            program,
            script: folder.join("send.mjs"),
        }
    }

    fn send(&self, server: &Server, run: &str, count: usize, extra: &[&str]) -> Vec<String> {
        let mut cmd = Command::new(&self.program);
        cmd.arg(&self.script);
        run_sender(cmd, server, run, count, extra)
    }
}

/// Runs a send script to completion; returns the message ids it reports.
fn run_sender(
    mut cmd: Command,
    server: &Server,
    run: &str,
    count: usize,
    extra: &[&str],
) -> Vec<String> {
    cmd.args(["--host", &server.base_url])
        .args(["--write-key", &server.write_key])
        .args(["--run", run])
        .args(["--count", &count.to_string()])
        .args(extra);
    let out = run_to_success(&mut cmd, SCRIPT_TIMEOUT, server);
    let report = json_lines(&out.stdout)
        .pop()
        .unwrap_or_else(|| panic!("{cmd:?} printed no report\n{}", out.describe()));
    let ids: Vec<String> = serde_json::from_value(report["messageIds"].clone())
        .unwrap_or_else(|err| panic!("report without messageIds ({err}): {report}"));
    let expected: Vec<String> = (0..count).map(|i| format!("{run}-{i}")).collect();
    assert_eq!(
        ids, expected,
        "the script sent other message ids than the recipe's"
    );
    ids
}

/// Exports the log and checks every sent call is there exactly once and matches the recipe.
fn check_stored(
    env: &TestEnv,
    server: &Server,
    run: &str,
    count: usize,
    sent: &[String],
    library: &str,
    started: Timestamp,
) {
    let calls = env.export(&[]);
    let finished = Timestamp::now();

    let mut by_id: HashMap<&str, Vec<&Value>> = HashMap::new();
    for call in &calls {
        let id = call["messageId"].as_str().unwrap_or_default();
        by_id.entry(id).or_default().push(call);
    }
    let mut problems = Vec::new();
    for (i, id) in sent.iter().enumerate() {
        match by_id.get(id.as_str()).map(Vec::as_slice) {
            None | Some([]) => problems.push(format!("{id}: not stored")),
            Some([call]) => {
                for problem in expected_problems(call, run, i, library, started, finished) {
                    problems.push(format!("{id}: {problem}"));
                }
            }
            Some(copies) => problems.push(format!("{id}: stored {} times", copies.len())),
        }
    }
    if calls.len() != count {
        problems.push(format!(
            "the log holds {} calls, expected {count}",
            calls.len()
        ));
    }
    let rejected = env.cli_ok(&["events", "rejected"]);
    if !rejected.trim().is_empty() {
        problems.push(format!("the server rejected calls:\n{rejected}"));
    }
    assert!(
        problems.is_empty(),
        "{} problem(s) with calls sent by {library}:\n{}\n--- server log ---\n{}",
        problems.len(),
        problems
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n"),
        server.log()
    );
}

/// What is wrong with stored call `call`, message `i` of `run` sent by `library`.
fn expected_problems(
    call: &Value,
    run: &str,
    i: usize,
    library: &str,
    started: Timestamp,
    finished: Timestamp,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut expect = |what: &str, actual: &Value, expected: Value| {
        if *actual != expected {
            problems.push(format!("{what} is {actual}, expected {expected}"));
        }
    };
    let kind = KINDS[i % KINDS.len()];
    expect("type", &call["type"], json!(kind));
    expect("messageId", &call["messageId"], json!(format!("{run}-{i}")));
    let user_id = if kind == "track" {
        Value::Null
    } else {
        json!(format!("user-{i}"))
    };
    expect("userId", &call["userId"], user_id);
    let anonymous_id = if kind == "alias" {
        Value::Null
    } else {
        json!(format!("anon-{i}"))
    };
    expect("anonymousId", &call["anonymousId"], anonymous_id);
    expect(
        "context.library.name",
        &call["context"]["library"]["name"],
        json!(library),
    );
    expect("context.ip", &call["context"]["ip"], json!("203.0.113.7"));
    expect("context.locale", &call["context"]["locale"], json!("fr-FR"));
    expect(
        "context.campaign",
        &call["context"]["campaign"],
        json!({"name": format!("spring-{i}"), "source": "newsletter"}),
    );
    expect(
        "integrations",
        &call["integrations"],
        json!({"Mixpanel": false, "Klaviyo": {"listId": "Xy12"}}),
    );
    match kind {
        "identify" => expect(
            "traits",
            &call["traits"],
            json!({
                "email": format!("user{i}@example.com"),
                "name": format!("Zoë Ünicode {i}"),
                "plan": "pro",
                "logins": i,
                "address": {"city": "Kraków", "postalCode": "31-000"},
            }),
        ),
        "track" => {
            expect("event", &call["event"], json!("Order Completed"));
            expect_properties(
                &mut problems,
                call,
                json!({
                    "order_id": format!("order-{i}"),
                    "revenue": 19.99,
                    "currency": "EUR",
                    "products": [{"sku": format!("sku-{i}"), "quantity": 2}],
                    "note": "ünïcødé ✓ \"quoted\"",
                }),
            );
        }
        "page" => {
            expect("name", &call["name"], json!("Pricing"));
            expect("category", &call["category"], json!("Docs"));
            expect_properties(
                &mut problems,
                call,
                json!({"path": "/pricing", "title": format!("Pricing {i}")}),
            );
        }
        "screen" => {
            expect("name", &call["name"], json!("Home"));
            expect("category", &call["category"], json!("Main"));
            expect_properties(&mut problems, call, json!({"tab": format!("tab-{i}")}));
        }
        "group" => {
            expect("groupId", &call["groupId"], json!(format!("group-{i}")));
            expect(
                "traits",
                &call["traits"],
                json!({"name": format!("Acme {i}"), "employees": 42, "industry": "Retail"}),
            );
        }
        _ => expect(
            "previousId",
            &call["previousId"],
            json!(format!("anon-{i}")),
        ),
    }
    problems.extend(time_problems(call, i, started, finished));
    problems
}
