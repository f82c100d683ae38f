//! Segment's browser library (analytics.js, `@segment/analytics-next`) in headless Chromium
//! against the real server: the library loads its settings from Signalbox, sends every call
//! through the browser routes (`/v1/i`, `/v1/t`, …, or `/v1/b` when batching) from another
//! origin, and every call is stored once with its fields intact.
//!
//! tests/clients/browser/run.mjs serves tests/clients/browser/page.html and drives Chromium; the
//! page sends message i of a run from the recipe documented in page.html, which
//! `expected_problems` repeats. `scripts/test` installs Chromium and the npm packages; a missing
//! one fails the test with the command that installs it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::harness::{
    expect_properties, json_lines, repo_root, run_to_success, time_problems, unique, Server,
    TestEnv,
};

const KINDS: [&str; 6] = ["identify", "track", "page", "screen", "group", "alias"];
/// How long one run of the driver may take (it gives the page 60 s itself).
const DRIVER_TIMEOUT: Duration = Duration::from_secs(180);
const PAGE_TITLE: &str = "Signalbox browser test";

#[test]
fn analytics_js_calls_arrive_intact_and_once() {
    let browser = Browser::find();
    let env = TestEnv::new();
    let server = env.serve();
    let run = format!("web-{}", unique());
    let started = Timestamp::now();

    let report = browser.send(&server, &run, 24, &[]);
    check_transport(&report, &server, &run, Delivery::OnePerRequest);
    // The same page in a fresh browser profile sends the same messageIds again (with another
    // anonymousId): nothing new is stored.
    let again = browser.send(&server, &run, 24, &[]);
    assert_eq!(report.message_ids, again.message_ids);
    assert_ne!(report.anonymous_id, again.anonymous_id);

    check_stored(&env, &server, &run, &report, started);
}

#[test]
fn analytics_js_batching_calls_arrive_intact_and_once() {
    let browser = Browser::find();
    let env = TestEnv::new();
    let server = env.serve();
    let run = format!("webb-{}", unique());
    let started = Timestamp::now();

    let report = browser.send(&server, &run, 42, &["--batching", "--batch-size", "10"]);
    check_transport(&report, &server, &run, Delivery::Batching);

    check_stored(&env, &server, &run, &report, started);
}

/// What run.mjs prints once the page is done (see its header).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    version: String,
    message_ids: Vec<String>,
    anonymous_id: String,
    page_url: String,
    user_agent: String,
    requests: Vec<SentRequest>,
    preflights: Vec<Preflight>,
}

/// A request the page made to Signalbox, as Chromium sent it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SentRequest {
    method: String,
    path: String,
    status: Option<u16>,
    content_type: Option<String>,
    basic_auth: bool,
    message_ids: Vec<String>,
}

/// A CORS preflight Chromium made before a request.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Preflight {
    path: String,
    status: Option<u16>,
    allow_origin: Option<String>,
    allow_headers: Option<String>,
}

/// `node run.mjs` with Chromium and tests/clients/browser/node_modules installed.
struct Browser {
    node: String,
    chromium: PathBuf,
    script: PathBuf,
}

impl Browser {
    fn find() -> Browser {
        let install = "run scripts/test, which installs them";
        let chromium =
            PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
        assert!(
            chromium.exists(),
            "Chromium is not installed ({} is missing); {install}, or `apt-get install chromium`",
            chromium.display()
        );
        let folder = repo_root().join("tests/clients/browser");
        for package in ["@segment/analytics-next", "playwright-core"] {
            let manifest = folder
                .join("node_modules")
                .join(package)
                .join("package.json");
            assert!(
                manifest.exists(),
                "{package} is not installed ({} is missing); {install}, or `npm ci` in tests/clients/browser",
                manifest.display()
            );
        }
        let node = std::env::var("NODE").unwrap_or_else(|_| "node".into());
        if let Err(err) = Command::new(&node).arg("--version").output() {
            panic!("cannot run {node} ({err}); install Node.js 20 or later");
        }
        Browser {
            node,
            chromium,
            script: folder.join("run.mjs"),
        }
    }

    /// Loads the page, which sends `count` calls of `run`; returns the driver's report.
    fn send(&self, server: &Server, run: &str, count: usize, extra: &[&str]) -> Report {
        let mut cmd = Command::new(&self.node);
        cmd.arg(&self.script)
            .args(["--signalbox", &server.base_url])
            .args(["--write-key", &server.write_key])
            .args(["--run", run])
            .args(["--count", &count.to_string()])
            .arg("--chromium")
            .arg(&self.chromium)
            .args(["--timeout", "60"])
            .args(extra);
        let out = run_to_success(&mut cmd, DRIVER_TIMEOUT, server);
        let line = json_lines(&out.stdout)
            .pop()
            .unwrap_or_else(|| panic!("{cmd:?} printed no report\n{}", out.describe()));
        let report: Report = serde_json::from_value(line.clone())
            .unwrap_or_else(|err| panic!("unexpected report ({err}): {line}"));
        let expected: Vec<String> = (0..count).map(|i| format!("{run}-{i}")).collect();
        assert_eq!(
            report.message_ids, expected,
            "the page sent other message ids than the recipe's"
        );
        report
    }
}

/// How the library was told to deliver calls.
#[derive(Clone, Copy, PartialEq)]
enum Delivery {
    /// The default: one request per call, to `/v1/{first letter of the type}`.
    OnePerRequest,
    /// `deliveryStrategy: {strategy: 'batching'}`: batches to `/v1/b`.
    Batching,
}

/// Checks how the calls travelled: settings fetched from Signalbox, the browser routes with
/// text/plain bodies and Basic auth, every call in exactly one answered request, and CORS
/// preflights answered so that any browser lets the requests through.
fn check_transport(report: &Report, server: &Server, run: &str, delivery: Delivery) {
    let mut problems = Vec::new();
    let settings_path = format!("/v1/projects/{}/settings", server.write_key);
    let (settings, calls): (Vec<&SentRequest>, Vec<&SentRequest>) = report
        .requests
        .iter()
        .partition(|request| request.path == settings_path);
    match settings.as_slice() {
        [request] if request.method == "GET" && request.status == Some(200) => {}
        _ => problems.push(format!(
            "expected one answered GET of the settings route, saw {settings:?}"
        )),
    }

    let mut carried: HashMap<&str, usize> = HashMap::new();
    for request in &calls {
        let what = format!("{} {}", request.method, request.path);
        if request.method != "POST" {
            problems.push(format!("{what}: expected POST"));
        }
        if request.status != Some(200) {
            problems.push(format!("{what}: answered {:?}", request.status));
        }
        if !request
            .content_type
            .as_deref()
            .is_some_and(|t| t.starts_with("text/plain"))
        {
            problems.push(format!(
                "{what}: Content-Type {:?}, expected text/plain",
                request.content_type
            ));
        }
        if !request.basic_auth {
            problems.push(format!("{what}: no Basic Authorization header"));
        }
        for id in &request.message_ids {
            *carried.entry(id.as_str()).or_default() += 1;
        }
        match delivery {
            Delivery::OnePerRequest => {
                let expected = match request.message_ids.as_slice() {
                    [id] => kind_of(run, id).map(|kind| format!("/v1/{}", &kind[..1])),
                    _ => None,
                };
                if expected.as_deref() != Some(request.path.as_str()) {
                    problems.push(format!(
                        "{what} carried {:?}, expected one call of the route's type",
                        request.message_ids
                    ));
                }
            }
            Delivery::Batching => {
                if request.path != "/v1/b" {
                    problems.push(format!("{what}: expected /v1/b when batching"));
                }
            }
        }
    }
    for id in &report.message_ids {
        match carried.get(id.as_str()) {
            Some(1) => {}
            other => problems.push(format!(
                "{id} travelled in {} requests, expected 1",
                other.unwrap_or(&0)
            )),
        }
    }
    if delivery == Delivery::Batching
        && !(calls.len() >= 2 && calls.len() < report.message_ids.len())
    {
        problems.push(format!(
            "{} batch requests carried {} calls",
            calls.len(),
            report.message_ids.len()
        ));
    }

    // Basic auth makes every call request a preflighted one.
    if report.preflights.is_empty() {
        problems.push("Chromium made no CORS preflight".into());
    }
    let page_origin = report
        .page_url
        .split('/')
        .take(3)
        .collect::<Vec<_>>()
        .join("/");
    for preflight in &report.preflights {
        let what = format!("preflight of {}", preflight.path);
        if !preflight.status.is_some_and(|s| (200..300).contains(&s)) {
            problems.push(format!("{what} answered {:?}", preflight.status));
        }
        let origin = preflight.allow_origin.as_deref();
        if origin != Some("*") && origin != Some(page_origin.as_str()) {
            problems.push(format!("{what} allows origin {origin:?}"));
        }
        // The Fetch standard does not let `*` cover Authorization; it must be named.
        let names_authorization = preflight.allow_headers.as_deref().is_some_and(|list| {
            list.split(',')
                .any(|name| name.trim().eq_ignore_ascii_case("authorization"))
        });
        if !names_authorization {
            problems.push(format!(
                "{what} allows headers {:?}, which does not name Authorization",
                preflight.allow_headers
            ));
        }
    }

    assert!(
        problems.is_empty(),
        "{} problem(s) with the requests analytics.js made:\n{}\n--- report ---\n{report:#?}",
        problems.len(),
        problems.join("\n")
    );
}

/// The recipe's kind of message `id` of `run`.
fn kind_of(run: &str, id: &str) -> Option<&'static str> {
    let i: usize = id.strip_prefix(run)?.strip_prefix('-')?.parse().ok()?;
    Some(KINDS[i % KINDS.len()])
}

/// Exports the log and checks every sent call is there exactly once and matches the recipe.
fn check_stored(env: &TestEnv, server: &Server, run: &str, report: &Report, started: Timestamp) {
    let calls = env.export(&[]);
    let finished = Timestamp::now();

    let mut by_id: HashMap<&str, Vec<&Value>> = HashMap::new();
    for call in &calls {
        let id = call["messageId"].as_str().unwrap_or_default();
        by_id.entry(id).or_default().push(call);
    }
    let mut problems = Vec::new();
    for (i, id) in report.message_ids.iter().enumerate() {
        match by_id.get(id.as_str()).map(Vec::as_slice) {
            None | Some([]) => problems.push(format!("{id}: not stored")),
            Some([call]) => {
                for problem in expected_problems(call, run, i, report, started, finished) {
                    problems.push(format!("{id}: {problem}"));
                }
            }
            Some(copies) => problems.push(format!("{id}: stored {} times", copies.len())),
        }
    }
    if calls.len() != report.message_ids.len() {
        problems.push(format!(
            "the log holds {} calls, expected {}",
            calls.len(),
            report.message_ids.len()
        ));
    }
    let rejected = env.cli_ok(&["events", "rejected"]);
    if !rejected.trim().is_empty() {
        problems.push(format!("the server rejected calls:\n{rejected}"));
    }
    assert!(
        problems.is_empty(),
        "{} problem(s) with calls sent by analytics.js:\n{}\n--- server log ---\n{}",
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

/// What is wrong with stored call `call`, message `i` of `run`, sent by the page `report`
/// describes.
fn expected_problems(
    call: &Value,
    run: &str,
    i: usize,
    report: &Report,
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
    expect("userId", &call["userId"], json!(format!("user-{run}")));
    expect(
        "anonymousId",
        &call["anonymousId"],
        json!(report.anonymous_id),
    );
    expect("writeKey", &call["writeKey"], Value::Null);

    let context = &call["context"];
    expect(
        "context.library",
        &context["library"],
        json!({"name": "analytics.js", "version": format!("next-{}", report.version)}),
    );
    let search = format!("?run={run}");
    let page = json!({
        "path": "/page.html",
        "referrer": "",
        "search": search,
        "title": PAGE_TITLE,
        "url": report.page_url,
    });
    expect("context.page", &context["page"], page.clone());
    expect(
        "context.userAgent",
        &context["userAgent"],
        json!(report.user_agent),
    );
    expect("context.locale", &context["locale"], json!("fr-FR"));
    expect(
        "context.campaign",
        &context["campaign"],
        json!({"name": format!("spring-{i}"), "source": "newsletter"}),
    );
    expect(
        "integrations.Mixpanel",
        &call["integrations"]["Mixpanel"],
        json!(false),
    );
    expect(
        "integrations.Klaviyo",
        &call["integrations"]["Klaviyo"],
        json!({"listId": "Xy12"}),
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
            expect(
                "properties",
                &call["properties"],
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
            // analytics.js adds the page's context and the name to a page call's properties.
            let mut properties = page;
            properties["section"] = json!(format!("s-{i}"));
            properties["plan"] = json!("pro");
            properties["name"] = json!("Pricing");
            expect_properties(&mut problems, call, properties);
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
