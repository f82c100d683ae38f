//! Destinations end to end, on the real binary.
//!
//! - Two instances wired in a loop (A's `segment` destination posts to B's `/v1`, B's
//!   `klaviyo` destination to A's `/api`), fed by Segment's Python library and Klaviyo's
//!   Python SDK (`tests/sync/sync_loop.py`): one profile per email, nothing echoed,
//!   `--only-segment-profiles` honoured.
//! - A receiver on loopback that fails in every way a receiver fails (500s, 429 with
//!   `Retry-After`, a hung request, down for a minute, a call it refuses for good) while the
//!   sender is killed with SIGKILL mid-delivery: everything arrives, in order per profile, each
//!   `messageId` at most once beyond the batch in flight at the kill, and the refused call is
//!   dead-lettered with its reason, then delivered by `replay` once the receiver takes it.
//! - Secrets (write key, API key, webhook secret) appear in no log line, CLI output, delivery
//!   record or error message.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{json, Value};

use crate::harness::{repo_root, run_to_success, unique, CliOutput, Server, TestEnv};

/// How long deliveries may take to settle on a busy machine.
const SETTLE: Duration = Duration::from_secs(240);

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

fn serve_with_private_destinations(env: &TestEnv) -> Server {
    let mut cmd = env.command();
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--allow-private-destinations",
    ]);
    Server::spawn(cmd, env.root().join(format!("server-{}.log", unique())))
}

fn destination_status(env: &TestEnv, name: &str) -> Value {
    let out = env.cli_ok(&["destination", "status", name, "--json"]);
    serde_json::from_str(&out).unwrap_or_else(|err| panic!("status --json: {err}: {out}"))
}

/// Waits until every named destination has nothing queued, and stays so for two seconds.
fn settle(sides: &[(&TestEnv, &[&str])]) {
    let started = Instant::now();
    let mut quiet_since: Option<Instant> = None;
    let mut last = String::new();
    loop {
        let mut all_idle = true;
        let mut fingerprint = String::new();
        for (env, names) in sides {
            for name in *names {
                let status = destination_status(env, name);
                if status["queued"].as_u64() != Some(0) {
                    all_idle = false;
                }
                fingerprint.push_str(&format!("{name}:{} ", status["delivered"]));
            }
        }
        if all_idle && fingerprint == last {
            let since = *quiet_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= Duration::from_secs(2) {
                return;
            }
        } else {
            quiet_since = None;
        }
        last = fingerprint;
        assert!(
            started.elapsed() < SETTLE,
            "deliveries did not settle within {SETTLE:?}: {last}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[tokio::test]
async fn two_instances_in_a_loop_keep_one_profile_per_email_and_echo_nothing() {
    let env_a = TestEnv::new();
    let env_b = TestEnv::new();
    let api_key_a = env_a
        .cli_ok(&["api-key", "create", "from-b", "--full-access"])
        .trim()
        .to_owned();
    let api_key_b = env_b
        .cli_ok(&["api-key", "create", "reader", "--full-access"])
        .trim()
        .to_owned();
    let only_key_b = env_b.create_source("from-a-only");
    let a = serve_with_private_destinations(&env_a);
    let b = serve_with_private_destinations(&env_b);

    env_a.cli_ok(&[
        "destination",
        "create",
        "to-b",
        "--kind",
        "segment",
        "--write-key",
        &b.write_key,
        "--endpoint",
        &b.base_url,
    ]);
    env_a.cli_ok(&[
        "destination",
        "create",
        "to-b-only",
        "--kind",
        "segment",
        "--write-key",
        &only_key_b,
        "--endpoint",
        &b.base_url,
        "--only-segment-profiles",
    ]);
    env_b.cli_ok(&[
        "destination",
        "create",
        "to-a",
        "--kind",
        "klaviyo",
        "--api-key",
        &api_key_a,
        "--endpoint",
        &a.base_url,
        "--source",
        "default",
    ]);

    let script = repo_root().join("tests/sync/sync_loop.py");
    let run = unique()[..8].to_owned();
    let mut feed = Command::new(python());
    feed.arg(&script).args([
        "feed",
        "--a",
        &a.base_url,
        "--a-write-key",
        &a.write_key,
        "--a-api-key",
        &api_key_a,
        "--b",
        &b.base_url,
        "--b-write-key",
        &b.write_key,
        "--run",
        &run,
        "--seed",
        "7",
        "--ops",
        "300",
    ]);
    let fed = run_to_success(&mut feed, Duration::from_secs(300), &a);
    let fed_line = fed.stdout.lines().last().unwrap_or_default().to_owned();
    let fed: Value = serde_json::from_str(&fed_line).expect("the feed prints what it sent");

    settle(&[(&env_a, &["to-b", "to-b-only"]), (&env_b, &["to-a"])]);
    // What B forwarded to A may have been applied after its 202; A's reverse sync may then
    // have more to send: settle once more.
    std::thread::sleep(Duration::from_secs(1));
    settle(&[(&env_a, &["to-b", "to-b-only"]), (&env_b, &["to-a"])]);

    let fed_path = env_a.root().join("fed.json");
    std::fs::write(&fed_path, &fed_line).unwrap();
    let mut check = Command::new(python());
    check.arg(&script).args([
        "check",
        "--a",
        &a.base_url,
        "--a-api-key",
        &api_key_a,
        "--b",
        &b.base_url,
        "--b-api-key",
        &api_key_b,
        "--fed",
        fed_path.to_str().unwrap(),
    ]);
    run_to_success(&mut check, Duration::from_secs(300), &a);

    // What A's reverse sync sent to B: only changes made on A through its API, never a value
    // that arrived from a Segment source (on A, or forwarded from B).
    let from_a = env_b.export(&["--source", "default"]);
    let reverse: Vec<&Value> = from_a
        .iter()
        .filter(|c| c["messageId"].as_str().unwrap_or("").starts_with("sbx-"))
        .collect();
    assert!(
        !reverse.is_empty(),
        "the reverse sync sent nothing to B; fed: {fed}"
    );
    let mut synced_emails = BTreeSet::new();
    for call in &reverse {
        assert_eq!(
            call["integrations"]["Klaviyo"],
            json!(false),
            "every call of the reverse sync opts out of Klaviyo: {call}"
        );
        let origin = call["traits"]["origin"]
            .as_str()
            .or_else(|| call["properties"]["origin"].as_str());
        assert!(
            matches!(origin, None | Some("api-a")),
            "echo: a value that came from Segment was sent back: {call}"
        );
        if let Some(email) = call["traits"]["email"]
            .as_str()
            .or_else(|| call["context"]["traits"]["email"].as_str())
        {
            synced_emails.insert(email.to_owned());
        }
    }
    let api_emails: BTreeSet<String> = fed["api_a"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        synced_emails, api_emails,
        "the reverse sync sends every profile edited through A's API, and nothing else"
    );

    // `--only-segment-profiles`: only people a Segment source created or updated on A.
    let only = env_b.export(&["--source", "from-a-only"]);
    for call in &only {
        let email = call["traits"]["email"]
            .as_str()
            .or_else(|| call["context"]["traits"]["email"].as_str())
            .unwrap_or_default();
        assert!(
            !email.starts_with("api"),
            "a profile only the API ever touched was synced with --only-segment-profiles: {call}"
        );
    }
    let api_only: Vec<&String> = api_emails.iter().filter(|e| e.starts_with("api")).collect();
    assert!(
        !api_only.is_empty(),
        "the feed made no API-only profile; fed: {fed}"
    );

    // Nothing was delivered twice: the receivers' logs hold each messageId once.
    for (env, source) in [(&env_b, "default"), (&env_b, "from-a-only")] {
        let calls = env.export(&["--source", source]);
        let mut seen = BTreeSet::new();
        for call in &calls {
            let id = call["messageId"].as_str().unwrap_or_default().to_owned();
            assert!(seen.insert(id.clone()), "{id} stored twice on B");
        }
    }
    a.stop();
    b.stop();
}

/// What the receiver of the fault test does with the next requests.
#[derive(Default)]
struct Faults {
    /// Answer 500 to this many requests.
    errors: u32,
    /// Answer 429 with `Retry-After: 2` to this many requests.
    throttles: u32,
    /// Hold this many requests for 90 s (past the sender's timeout).
    hangs: u32,
    /// Refuse (400) every batch that carries this messageId.
    poison: Option<String>,
    /// Every call received: (messageId, userId, n), in arrival order.
    received: Vec<(String, String, u64)>,
    requests: u32,
    /// When the last 429 was answered, and when the request after it came.
    throttled_at: Option<Instant>,
    after_throttle: Option<Duration>,
}

type Shared = Arc<Mutex<Faults>>;

async fn faulty_receiver(State(faults): State<Shared>, body: axum::body::Bytes) -> Response {
    let batch: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let calls: Vec<(String, String, u64)> = batch["batch"]
        .as_array()
        .map(|calls| {
            calls
                .iter()
                .map(|c| {
                    (
                        c["messageId"].as_str().unwrap_or_default().to_owned(),
                        c["userId"].as_str().unwrap_or_default().to_owned(),
                        c["properties"]["n"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let hang = {
        let mut f = faults.lock().unwrap();
        f.requests += 1;
        if let Some(at) = f.throttled_at.take() {
            f.after_throttle = Some(at.elapsed());
        }
        if f.errors > 0 {
            f.errors -= 1;
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        if f.throttles > 0 {
            f.throttles -= 1;
            f.throttled_at = Some(Instant::now());
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "2")],
                "slow down",
            )
                .into_response();
        }
        if let Some(poison) = &f.poison {
            if calls.iter().any(|(id, _, _)| id == poison) {
                return (StatusCode::BAD_REQUEST, "poisoned call refused").into_response();
            }
        }
        if f.hangs > 0 {
            f.hangs -= 1;
            true
        } else {
            f.received.extend(calls);
            false
        }
    };
    if hang {
        tokio::time::sleep(Duration::from_secs(90)).await;
        return StatusCode::OK.into_response();
    }
    StatusCode::OK.into_response()
}

async fn start_receiver(faults: Shared, addr: SocketAddr) -> tokio::task::JoinHandle<()> {
    let app = axum::Router::new()
        .route("/hook", post(faulty_receiver))
        .with_state(faults);
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
}

fn ids_received(faults: &Shared) -> Vec<String> {
    faults
        .lock()
        .unwrap()
        .received
        .iter()
        .map(|r| r.0.clone())
        .collect()
}

async fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < within, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One batch: a call for each of 40 people (userId `p{k}`, `properties.n` = the round).
async fn send_round(
    server: &Server,
    round: u64,
    expected: &mut BTreeMap<String, Vec<u64>>,
    expected_ids: &mut BTreeSet<String>,
) {
    let mut batch = Vec::new();
    for k in 0..40 {
        let id = format!("m-{round}-{k}");
        batch.push(
            json!({"type": "track", "userId": format!("p{k}"), "event": "Fault Probe",
                          "messageId": id, "properties": {"n": round}}),
        );
        expected.entry(format!("p{k}")).or_default().push(round);
        expected_ids.insert(id);
    }
    let (status, body) = server
        .post("/v1/batch", &server.write_key, &json!({ "batch": batch }))
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_and_a_killed_sender_lose_nothing_and_repeat_nothing() {
    let env = TestEnv::new();
    let faults: Shared = Arc::default();
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let receiver = start_receiver(Arc::clone(&faults), addr).await;
    let url = format!("http://{addr}/hook");
    let poison = format!("poison-{}", unique());
    {
        let mut f = faults.lock().unwrap();
        f.errors = 3;
        f.throttles = 2;
        f.hangs = 1;
        f.poison = Some(poison.clone());
    }
    let mut server = serve_with_private_destinations(&env);
    env.cli_ok(&[
        "destination",
        "create",
        "hook",
        "--kind",
        "webhook",
        "--url",
        &url,
        "--source",
        "default",
    ]);

    // 40 people, 50 calls each, in order: userId p{k}, properties.n = 0..50.
    let mut expected: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut expected_ids = BTreeSet::new();
    for round in 0..25 {
        send_round(&server, round, &mut expected, &mut expected_ids).await;
    }
    let (status, _) = server
        .post(
            "/v1/track",
            &server.write_key,
            &json!({"userId": "poisoned", "event": "Fault Probe", "messageId": poison,
                    "properties": {"n": 0}}),
        )
        .await;
    assert_eq!(status, 200);

    // The 500s, 429s and the hung request pass; some calls arrive; then the sender dies.
    wait_until("first deliveries", SETTLE, || {
        !faults.lock().unwrap().received.is_empty()
    })
    .await;
    server.kill_hard();
    let delivered_before_kill = ids_received(&faults).len();

    // The receiver goes down for a minute while the sender restarts and more calls arrive.
    receiver.abort();
    let _ = receiver.await;
    let server = serve_with_private_destinations(&env);
    for round in 25..50 {
        send_round(&server, round, &mut expected, &mut expected_ids).await;
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
    let status_down = destination_status(&env, "hook");
    assert!(
        status_down["queued"].as_u64().unwrap_or(0) > 0,
        "calls wait while the receiver is down: {status_down}"
    );
    assert!(
        status_down["last_error"].is_string(),
        "the status names the error: {status_down}"
    );
    let _receiver = start_receiver(Arc::clone(&faults), addr).await;

    wait_until("every call but the poisoned one delivered", SETTLE, || {
        let got: BTreeSet<String> = ids_received(&faults).into_iter().collect();
        expected_ids.is_subset(&got)
    })
    .await;

    let received = faults.lock().unwrap().received.clone();
    // In order per person (first arrival of each call).
    let mut seen = BTreeSet::new();
    let mut order: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (id, user, n) in &received {
        if seen.insert(id.clone()) {
            order.entry(user.clone()).or_default().push(*n);
        }
    }
    order.remove("poisoned");
    assert_eq!(order, expected, "calls arrive in order per person");
    // Repeats only of what was in flight at the kill, and always with the same messageId.
    let repeats = received.len() - seen.len();
    assert!(
        repeats <= 1000,
        "{repeats} calls repeated; only the batch in flight at the kill may be ({delivered_before_kill} had arrived before it)"
    );
    {
        let f = faults.lock().unwrap();
        let waited = f.after_throttle.expect("a request followed the 429");
        assert!(
            waited >= Duration::from_millis(1900),
            "Retry-After: 2 was honoured (next request after {waited:?})"
        );
    }

    // The poisoned call is a dead letter with its reason and the response.
    let letters = env.cli_ok(&["destination", "dead-letters", "hook", "--json"]);
    let letters = crate::harness::json_lines(&letters);
    assert_eq!(letters.len(), 1, "{letters:?}");
    crate::cli_json::assert_documented("destination dead-letters NAME --json", &letters[0]);
    assert_eq!(letters[0]["message_id"], json!(poison));
    assert_eq!(letters[0]["status"], json!(400));
    assert!(
        letters[0]["response"]
            .as_str()
            .unwrap_or_default()
            .contains("poisoned call refused"),
        "{letters:?}"
    );
    assert!(!ids_received(&faults).contains(&poison));

    // Fixed receiver: replay delivers it.
    faults.lock().unwrap().poison = None;
    env.cli_ok(&["destination", "replay", "hook", "--dead-letters"]);
    wait_until("the replayed dead letter", SETTLE, || {
        ids_received(&faults).contains(&poison)
    })
    .await;
    server.stop();
}

#[tokio::test]
async fn secrets_appear_in_no_log_output_record_or_error() {
    let env = TestEnv::new();
    let write_key = format!("wk{}", unique());
    let api_key = format!("pk_{}", unique());
    let webhook_secret = format!("whsec{}", unique());
    let admin_key = env
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
    let mut cmd = env.command();
    cmd.env("SIGNALBOX_LOG", "debug").args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--allow-private-destinations",
    ]);
    let server = Server::spawn(cmd, env.root().join("server.log"));
    // Receivers that refuse everything: errors and dead letters are recorded.
    let faults: Shared = Arc::default();
    faults.lock().unwrap().errors = 2;
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = probe.local_addr().unwrap();
    drop(probe);
    let _receiver = start_receiver(Arc::clone(&faults), addr).await;
    let base = format!("http://{addr}");
    let created = [
        env.cli(&[
            "destination",
            "create",
            "seg",
            "--kind",
            "segment",
            "--write-key",
            &write_key,
            "--endpoint",
            &base,
        ]),
        env.cli(&[
            "destination",
            "create",
            "kla",
            "--kind",
            "klaviyo",
            "--api-key",
            &api_key,
            "--endpoint",
            &base,
            "--source",
            "default",
        ]),
        env.cli(&[
            "destination",
            "create",
            "web",
            "--kind",
            "webhook",
            "--url",
            &format!("{base}/hook"),
            "--secret",
            &webhook_secret,
            "--source",
            "default",
        ]),
        // A bad command carrying a secret: its error must not repeat it.
        env.cli(&[
            "destination",
            "create",
            "bad name!",
            "--kind",
            "segment",
            "--write-key",
            &write_key,
        ]),
    ];
    let (status, _) = server
        .post(
            "/v1/identify",
            &server.write_key,
            &json!({"userId": "s1", "traits": {"email": "secret.test@example.com"}}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = server
        .post(
            "/v1/track",
            &server.write_key,
            &json!({"userId": "s1", "event": "Secret Probe", "context": {"traits": {"email": "secret.test@example.com"}}}),
        )
        .await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_secs(4)).await;

    let mut outputs: Vec<(String, String)> = Vec::new();
    for (n, out) in created.iter().enumerate() {
        outputs.push((format!("create #{n}"), describe(out)));
    }
    for args in [
        vec!["destination", "list"],
        vec!["destination", "list", "--json"],
        vec!["destination", "status", "seg", "--json"],
        vec!["destination", "status", "kla"],
        vec!["destination", "status", "web", "--json"],
        vec!["destination", "dead-letters", "kla", "--json"],
        vec!["destination", "dead-letters", "web", "--json"],
    ] {
        outputs.push((args.join(" "), describe(&env.cli(&args))));
    }
    let http = reqwest::Client::new();
    for path in [
        "/admin/v1/destinations",
        "/admin/v1/destinations/seg",
        "/admin/v1/destinations/kla/deliveries",
        "/admin/v1/destinations/web/deliveries",
        "/admin/v1/destinations/seg/deliveries",
        "/admin/v1/destinations/kla/status",
        "/metrics",
    ] {
        let text = http
            .get(format!("{}{path}", server.base_url))
            .header("Authorization", format!("Klaviyo-API-Key {admin_key}"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        outputs.push((path.to_owned(), text));
    }
    outputs.push(("server log".into(), server.log()));
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{write_key}:"));
    for secret in [&write_key, &api_key, &webhook_secret, &basic] {
        for (what, text) in &outputs {
            assert!(
                !text.contains(secret.as_str()),
                "a secret appears in {what}:\n{text}"
            );
        }
    }
    // The deliveries were tried (so the records and errors exist to be checked).
    assert!(faults.lock().unwrap().requests > 0);
    server.stop();
}

fn describe(out: &CliOutput) -> String {
    format!("{}\n{}", out.stdout, out.stderr)
}

/// The events of B's log from A's reverse sync (`messageId` `sbx-…`) named `event`.
fn reverse_tracks(env_b: &TestEnv, event: &str) -> Vec<Value> {
    env_b
        .export(&["--source", "default"])
        .into_iter()
        .filter(|c| {
            c["messageId"].as_str().unwrap_or("").starts_with("sbx-") && c["event"] == event
        })
        .collect()
}

async fn wait_reverse(env_b: &TestEnv, event: &str) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let found = reverse_tracks(env_b, event);
        if !found.is_empty() {
            return found;
        }
        assert!(
            started.elapsed() < SETTLE,
            "no {event:?} reached B within {SETTLE:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn flow_emails_go_back_to_segment_as_email_spec_tracks() {
    use crate::flows::{hrefs, parse_mail, MailServer, SmtpSink};
    let root = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(&root.path().join("mail"));
    let a = MailServer::start(&sink);
    let env_b = TestEnv::new();
    let b = env_b.serve();
    a.env.cli_ok(&[
        "destination",
        "create",
        "to-segment",
        "--kind",
        "segment",
        "--write-key",
        &b.write_key,
        "--endpoint",
        &b.base_url,
    ]);
    let identify = |user: &str, email: &str| json!({"type": "identify", "userId": user, "traits": {"email": email, "firstName": "Erin"}});
    let order = |user: &str, id: &str| {
        json!({"type": "track", "userId": user, "event": "Order Completed",
               "properties": {"order_id": id, "revenue": 10, "products": []}})
    };
    a.segment(json!([
        identify("seed", "seed@tea.test"),
        order("seed", "o-seed")
    ]));
    let placed = a.metric_id("Placed Order").await;
    let flow_id = a.apply_flow(&json!({
        "name": "Thanks",
        "status": "live",
        "definition": {
            "triggers": [{"type": "metric", "id": placed}],
            "entry_action_id": "email",
            "actions": [
                {"temporary_id": "email", "type": "send-email", "data": {"status": "live", "message": {
                    "from_email": "orders@tea.test", "from_label": "Tea Shop",
                    "subject_line": "Thanks, {{ first_name }}",
                    "html": "<p>Thanks!</p><p><a href=\"https://tea.test/orders\">Your orders</a></p>",
                    "text": "Thanks", "smart_sending_enabled": false}},
                 "links": {"next": null}}
            ],
            "reentry_criteria": {"duration": 0, "unit": "alltime"}
        }
    }));
    a.segment(json!([
        identify("erin", "erin@example.com"),
        order("erin", "o-1")
    ]));
    a.wait_count(&flow_id, "sent", 1).await;
    // (The seed's order may start a run too, depending on when the flow went live.)
    let started = Instant::now();
    let mail = loop {
        let to_erin = sink
            .messages()
            .iter()
            .map(parse_mail)
            .find(|m| m.rcpt_tos == ["erin@example.com"]);
        if let Some(mail) = to_erin {
            break mail;
        }
        assert!(started.elapsed() < SETTLE, "no email to erin");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let started = Instant::now();
    let call = loop {
        let found = reverse_tracks(&env_b, "Email Delivered")
            .into_iter()
            .find(|c| c["context"]["traits"]["email"] == "erin@example.com");
        if let Some(call) = found {
            break call;
        }
        assert!(started.elapsed() < SETTLE, "no Email Delivered for erin");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let call = &call;
    assert_eq!(call["type"], "track");
    assert_eq!(
        call["userId"], "erin",
        "the id Segment knows the person by: {call}"
    );
    assert_eq!(call["context"]["traits"]["email"], "erin@example.com");
    assert_eq!(call["properties"]["email_subject"], "Thanks, Erin");
    assert_eq!(call["properties"]["flow_id"], json!(flow_id));
    assert_eq!(call["properties"]["flow_name"], "Thanks");
    assert!(call["properties"]["email_id"].is_string(), "{call}");
    assert_eq!(call["integrations"]["Klaviyo"], json!(false));

    // A click on the tracked link: `Email Link Clicked` with the link.
    let click = hrefs(&mail.html)
        .into_iter()
        .find(|h| h.contains("/t/c/"))
        .expect("a tracked link");
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let answer = no_redirects.get(&click).send().await.unwrap();
    assert!(answer.status().is_redirection(), "{}", answer.status());
    let clicked = wait_reverse(&env_b, "Email Link Clicked").await;
    assert_eq!(
        clicked[0]["properties"]["link_url"],
        "https://tea.test/orders"
    );
    assert_eq!(
        clicked[0]["properties"]["email_id"],
        call["properties"]["email_id"]
    );

    // A refused address: `Email Bounced`.
    a.segment(json!([
        identify("frank", "bounce-frank@example.com"),
        order("frank", "o-2")
    ]));
    let bounced = wait_reverse(&env_b, "Email Bounced").await;
    assert_eq!(
        bounced[0]["context"]["traits"]["email"],
        "bounce-frank@example.com"
    );
    // What A's own Segment source sent never goes back: no identify repeats its traits (the
    // bounce's suppression, made by Signalbox, does go back).
    let echoed: Vec<Value> = env_b
        .export(&["--source", "default"])
        .into_iter()
        .filter(|c| c["messageId"].as_str().unwrap_or("").starts_with("sbx-"))
        .filter(|c| !c["traits"]["firstName"].is_null())
        .collect();
    assert!(echoed.is_empty(), "{echoed:?}");
    b.stop();
}
