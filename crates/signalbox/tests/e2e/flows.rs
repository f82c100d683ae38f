//! Flows end to end: real Segment calls (Segment's Python library) in, the email a real SMTP
//! server (aiosmtpd, `tests/smtp/sink.py`) captured out. Time moves with the server's test
//! clock (`serve --test-clock`, `POST /admin/v1/test-clock`), never by sleeping through a
//! delay.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{json_lines, repo_root, run_to_success, Server, TestEnv};

const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

/// The SMTP sink as a child process; it exits when its stdin closes or it is killed.
pub struct SmtpSink {
    child: Child,
    _stdin: Option<ChildStdin>,
    pub port: u16,
    folder: PathBuf,
}

/// A message as the sink received it.
pub struct Captured {
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    pub raw: Vec<u8>,
}

impl SmtpSink {
    pub fn start(folder: &Path) -> SmtpSink {
        let install =
            "run scripts/test, or `python3 -m pip install -r tests/smtp/requirements.txt`";
        let mut child = Command::new(python())
            .arg(repo_root().join("tests/smtp/sink.py"))
            .arg("--dir")
            .arg(folder)
            .args(["--listen", "127.0.0.1:0", "--reject-prefix", "bounce"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start the SMTP sink ({err}); {install}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = sender.send(line);
            }
            for _ in lines {}
        });
        let line = receiver
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!("the SMTP sink did not start; is aiosmtpd installed? {install}")
            });
        let port = line
            .rsplit(':')
            .next()
            .and_then(|port| port.trim().parse().ok())
            .unwrap_or_else(|| panic!("unexpected sink output {line:?}"));
        SmtpSink {
            _stdin: child.stdin.take(),
            child,
            port,
            folder: folder.to_path_buf(),
        }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// The messages saved so far, in arrival order.
    pub fn messages(&self) -> Vec<Captured> {
        let mut emls: Vec<PathBuf> = std::fs::read_dir(&self.folder)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|entry| entry.path())
                    .filter(|path| path.extension().is_some_and(|ext| ext == "eml"))
                    .collect()
            })
            .unwrap_or_default();
        emls.sort();
        emls.into_iter()
            .filter_map(|eml| {
                let envelope: Value =
                    serde_json::from_slice(&std::fs::read(eml.with_extension("json")).ok()?)
                        .ok()?;
                Some(Captured {
                    mail_from: envelope["mail_from"].as_str()?.to_owned(),
                    rcpt_tos: envelope["rcpt_tos"]
                        .as_array()?
                        .iter()
                        .filter_map(|to| to.as_str().map(str::to_owned))
                        .collect(),
                    raw: std::fs::read(&eml).ok()?,
                })
            })
            .collect()
    }

    /// Waits until at least `count` messages were saved (or 20 s passed).
    pub fn wait_for(&self, count: usize) -> Vec<Captured> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let messages = self.messages();
            if messages.len() >= count || Instant::now() > deadline {
                return messages;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server with mail going to `sink` and a movable clock, plus a private API key.
pub struct MailServer {
    pub env: TestEnv,
    pub server: Server,
    pub api_key: String,
    pub http: reqwest::Client,
}

impl MailServer {
    pub fn start(sink: &SmtpSink) -> MailServer {
        let env = TestEnv::new();
        let api_key = env
            .cli_ok(&["api-key", "create", "flows-e2e", "--scope", "full,admin"])
            .trim()
            .to_owned();
        // Klaviyo's names for orders (`Placed Order`), as the classic destination's
        // `useSegmentSpec: false` maps them.
        env.cli_ok(&["source", "create", "default"]);
        env.cli_ok(&[
            "source",
            "settings",
            "default",
            "--set",
            "useSegmentSpec=false",
        ]);
        let mut cmd = env.command();
        cmd.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--test-clock",
            "--allow-private-destinations",
            "--smtp-url",
            &sink.url(),
            "--mail-from",
            "Tea Shop <shop@tea.test>",
        ]);
        let server = Server::spawn(cmd, env.root().join("server.log"));
        MailServer {
            env,
            server,
            api_key,
            http: reqwest::Client::new(),
        }
    }

    pub fn base(&self) -> &str {
        &self.server.base_url
    }

    /// A Klaviyo API or admin API request with the private key; the status and the JSON body.
    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base()))
            .header("Authorization", format!("Klaviyo-API-Key {}", self.api_key))
            .header("revision", "2026-07-15");
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/vnd.api+json")
                .body(body.to_string());
        }
        let response = request.send().await.unwrap_or_else(|err| {
            panic!(
                "{method} {path} failed: {err}\n--- log ---\n{}",
                self.server.log()
            )
        });
        let status = response.status().as_u16();
        let text = response.text().await.expect("read the body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Moves the server's clock forward.
    pub async fn advance(&self, seconds: i64) -> Value {
        let (status, body) = self
            .api(
                reqwest::Method::POST,
                "/admin/v1/test-clock",
                Some(json!({"advance_seconds": seconds})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Sends `calls` with Segment's Python library (`tests/flows/send_calls.py`).
    pub fn segment(&self, calls: Value) {
        let file = self
            .env
            .root()
            .join(format!("calls-{}.json", crate::harness::unique()));
        std::fs::write(&file, calls.to_string()).expect("write the calls");
        let mut cmd = Command::new(python());
        cmd.arg(repo_root().join("tests/flows/send_calls.py"))
            .args(["--host", self.base(), "--write-key", &self.server.write_key])
            .arg("--calls")
            .arg(&file);
        run_to_success(&mut cmd, SCRIPT_TIMEOUT, &self.server);
    }
}

#[tokio::test]
async fn the_test_clock_moves_receipt_times_forward() {
    let root = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(&root.path().join("mail"));
    let app = MailServer::start(&sink);
    assert!(
        app.server
            .banner
            .iter()
            .any(|line| line.contains("test clock")),
        "{}",
        app.server.banner.join("\n")
    );
    let moved = app.advance(3 * 24 * 3600).await;
    assert_eq!(moved["offset_seconds"], 3 * 24 * 3600);
    let (status, _) = app
        .api(
            reqwest::Method::POST,
            "/admin/v1/test-clock",
            Some(json!({"advance_seconds": -5})),
        )
        .await;
    assert_eq!(status, 400);
    app.segment(
        json!([{"type": "track", "userId": "u1", "event": "Clock Probe", "properties": {}}]),
    );
    let calls = app.env.export(&[]);
    let received: jiff::Timestamp = calls
        .iter()
        .find(|c| c["event"] == "Clock Probe")
        .and_then(|c| c["receivedAt"].as_str())
        .expect("the call was stored")
        .parse()
        .unwrap();
    assert!(received > jiff::Timestamp::now() + jiff::SignedDuration::from_hours(71));

    // Without --test-clock the route does not exist.
    let other = TestEnv::new();
    let key = other
        .cli_ok(&["api-key", "create", "ops", "--scope", "admin"])
        .trim()
        .to_owned();
    let plain = other.serve();
    let answer = reqwest::Client::new()
        .post(format!("{}/admin/v1/test-clock", plain.base_url))
        .header("Authorization", format!("Bearer {key}"))
        .json(&json!({"advance_seconds": 60}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 404);
}

/// Polls `probe` until it answers `Some`, or panics after 30 s with the server's log.
pub async fn eventually<T>(
    app: &MailServer,
    what: &str,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n--- log ---\n{}",
            app.server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl MailServer {
    /// The id of metric `name`, once a call made it exist.
    pub async fn metric_id(&self, name: &str) -> String {
        eventually(self, &format!("metric {name}"), async || {
            let (_, body) = self.api(reqwest::Method::GET, "/api/metrics", None).await;
            body["data"]
                .as_array()?
                .iter()
                .find(|m| m["attributes"]["name"] == name)
                .and_then(|m| m["id"].as_str())
                .map(str::to_owned)
        })
        .await
    }

    pub async fn create_template(&self, name: &str, html: &str, text: &str) -> String {
        let (status, body) = self
            .api(
                reqwest::Method::POST,
                "/api/templates",
                Some(json!({"data": {"type": "template", "attributes": {
                    "name": name, "editor_type": "CODE", "html": html, "text": text}}})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["data"]["id"].as_str().unwrap().to_owned()
    }

    /// `signalbox flow ARGS` against this server.
    pub fn flow_cli(&self, args: &[&str]) -> String {
        let mut full = vec!["flow", "--url", self.base(), "--api-key", &self.api_key];
        full.extend_from_slice(args);
        self.env.cli_ok(&full)
    }

    /// Applies `flow` (name, definition, status) with `signalbox flow apply FILE`; its id.
    pub fn apply_flow(&self, flow: &Value) -> String {
        let file = self
            .env
            .root()
            .join(format!("flow-{}.json", crate::harness::unique()));
        std::fs::write(&file, serde_json::to_string_pretty(flow).unwrap()).unwrap();
        let out = self.flow_cli(&["apply", file.to_str().unwrap()]);
        out.strip_prefix("created flow ")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected `flow apply` output {out:?}"))
            .to_owned()
    }

    /// The flow's counters (`entered`, `waiting`, `sent`, `skipped:…`).
    pub async fn flow_counts(&self, flow_id: &str) -> Value {
        let (status, body) = self
            .api(
                reqwest::Method::GET,
                &format!("/api/flows/{flow_id}?additional-fields[flow]=statistics"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["data"]["attributes"]["statistics"]["flow"]["counts"].clone()
    }

    /// Waits until counter `name` of the flow reaches `at_least`.
    pub async fn wait_count(&self, flow_id: &str, name: &str, at_least: i64) -> Value {
        eventually(
            self,
            &format!("{name} >= {at_least} in flow {flow_id}"),
            async || {
                let counts = self.flow_counts(flow_id).await;
                (counts[name].as_i64().unwrap_or(0) >= at_least).then_some(counts)
            },
        )
        .await
    }

    /// A profile's events, with metric names and integrations.
    pub async fn events_of(&self, email: &str) -> Vec<(String, String, Value)> {
        let (_, profiles) = self
            .api(
                reqwest::Method::GET,
                &format!("/api/profiles?filter=equals(email,%22{email}%22)"),
                None,
            )
            .await;
        let Some(id) = profiles["data"][0]["id"].as_str() else {
            return Vec::new();
        };
        let (_, events) = self
            .api(
                reqwest::Method::GET,
                &format!("/api/events?filter=equals(profile_id,%22{id}%22)&include=metric"),
                None,
            )
            .await;
        let metrics: std::collections::HashMap<String, (String, String)> = events["included"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|m| {
                (
                    m["id"].as_str().unwrap_or("").to_owned(),
                    (
                        m["attributes"]["name"].as_str().unwrap_or("").to_owned(),
                        m["attributes"]["integration"]["name"]
                            .as_str()
                            .unwrap_or("")
                            .to_owned(),
                    ),
                )
            })
            .collect();
        events["data"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|e| {
                let metric_id = e["relationships"]["metric"]["data"]["id"]
                    .as_str()
                    .unwrap_or("");
                let (name, integration) = metrics.get(metric_id).cloned().unwrap_or_default();
                (
                    name,
                    integration,
                    e["attributes"]["event_properties"].clone(),
                )
            })
            .collect()
    }
}

/// One captured email, parsed.
pub struct Mail {
    pub rcpt_tos: Vec<String>,
    pub mail_from: String,
    pub from: String,
    pub to: String,
    pub subject: String,
    pub html: String,
    pub text: String,
    pub list_unsubscribe: String,
    pub list_unsubscribe_post: String,
}

pub fn parse_mail(captured: &Captured) -> Mail {
    let message = mail_parser::MessageParser::default()
        .parse(&captured.raw)
        .expect("a parsable message");
    let unfolded = |name: &str| {
        message
            .header_raw(name)
            .map(|raw| raw.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    let address = |list: Option<&mail_parser::Address<'_>>| {
        list.and_then(|l| l.first())
            .map(|a| match a.name() {
                Some(name) => format!("{name} <{}>", a.address().unwrap_or("")),
                None => a.address().unwrap_or("").to_owned(),
            })
            .unwrap_or_default()
    };
    Mail {
        rcpt_tos: captured.rcpt_tos.clone(),
        mail_from: captured.mail_from.clone(),
        from: address(message.from()),
        to: address(message.to()),
        subject: message.subject().unwrap_or("").to_owned(),
        html: message
            .body_html(0)
            .map(|b| b.replace("\r\n", "\n"))
            .unwrap_or_default(),
        text: message
            .body_text(0)
            .map(|b| b.replace("\r\n", "\n"))
            .unwrap_or_default(),
        list_unsubscribe: unfolded("List-Unsubscribe"),
        list_unsubscribe_post: unfolded("List-Unsubscribe-Post"),
    }
}

/// The `href`s of an HTML body.
pub fn hrefs(html: &str) -> Vec<String> {
    html.split("href=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(|href| href.replace("&amp;", "&"))
        .collect()
}

const CART_HTML: &str = r#"<h1>{{ first_name|default:"there" }}, your cart is waiting</h1>
<table>{% for item in event.products %}
<tr><td><img src="{{ item.image_url }}" alt="{{ item.name }}" width="80"></td>
<td><a href="{{ item.url }}">{{ item.name }}</a></td><td>${{ item.price|floatformat:2 }}</td></tr>{% endfor %}
</table>
<p>Total: ${{ event|lookup:'$value'|floatformat:2 }}</p>
<p><a href="{{ event.checkout_url }}">Return to your cart</a></p>
<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>"#;

const CART_TEXT: &str =
    "{{ first_name|default:\"there\" }}, your cart: {{ event.products|length }} items";

fn checkout_call(user: &str) -> Value {
    json!({"type": "track", "userId": user, "event": "Checkout Started", "properties": {
    "checkout_id": format!("co-{user}"),
    "revenue": 57.5,
    "checkout_url": "https://tea.test/checkout/resume?c=42",
    "products": [
        {"product_id": "p-1", "name": "Cast Iron Teapot", "price": 45,
         "image_url": "https://cdn.tea.test/teapot.jpg", "url": "https://tea.test/p/teapot"},
        {"product_id": "p-2", "name": "Sencha 100g", "price": 12.5,
         "image_url": "https://cdn.tea.test/sencha.jpg", "url": "https://tea.test/p/sencha"}
    ]}})
}

fn identify(user: &str, email: &str, first_name: &str) -> Value {
    json!({"type": "identify", "userId": user, "traits": {"email": email, "firstName": first_name}})
}

#[tokio::test]
async fn abandoned_checkout_emails_the_cart_four_hours_later_unless_an_order_came() {
    let root = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(&root.path().join("mail"));
    let app = MailServer::start(&sink);
    // Earlier traffic made the metrics exist, as on a live shop.
    app.segment(json!([
        identify("seed", "seed@tea.test", "Seed"),
        checkout_call("seed"),
        {"type": "track", "userId": "seed", "event": "Order Completed",
         "properties": {"order_id": "o-seed", "revenue": 1, "products": []}},
    ]));
    let checkout = app.metric_id("Checkout Started").await;
    let placed = app.metric_id("Placed Order").await;
    let template = app
        .create_template("Cart reminder", CART_HTML, CART_TEXT)
        .await;
    let flow_id = app.apply_flow(&json!({
        "name": "Abandoned checkout",
        "status": "live",
        "definition": {
            "triggers": [{"type": "metric", "id": checkout}],
            "profile_filter": {"condition_groups": [{"conditions": [{
                "type": "profile-metric", "metric_id": placed, "measurement": "count",
                "measurement_filter": {"type": "numeric", "operator": "equals", "value": 0},
                "timeframe_filter": {"type": "date", "operator": "flow-start"}}]}]},
            "entry_action_id": "wait",
            "actions": [
                {"temporary_id": "wait", "type": "time-delay",
                 "data": {"unit": "hours", "value": 4}, "links": {"next": "email"}},
                {"temporary_id": "email", "type": "send-email", "data": {"status": "live", "message": {
                    "from_email": "cart@tea.test", "from_label": "Tea Shop",
                    "subject_line": "{{ first_name|default:\"there\" }}, you left something",
                    "template_id": template, "smart_sending_enabled": true}},
                 "links": {"next": null}}
            ],
            "reentry_criteria": {"duration": 1, "unit": "day"}
        }
    }));
    let listed = app.flow_cli(&["list"]);
    assert!(
        listed.contains(&flow_id)
            && listed.contains("live")
            && listed.contains("Abandoned checkout"),
        "{listed}"
    );

    // Ada abandons her cart; Bob abandons his, then orders an hour later.
    app.segment(json!([
        identify("ada", "ada@example.com", "Ada"),
        checkout_call("ada"),
        identify("bob", "bob@example.com", "Bob"),
        checkout_call("bob"),
    ]));
    app.wait_count(&flow_id, "entered", 2).await;
    app.advance(3600).await;
    app.segment(json!([
        {"type": "track", "userId": "bob", "event": "Order Completed", "properties": {
            "order_id": "o-bob", "revenue": 57.5, "products": [{"product_id": "p-1", "name": "Cast Iron Teapot", "price": 45}]}},
    ]));
    eventually(&app, "Bob's order applied", async || {
        let events = app.events_of("bob@example.com").await;
        events
            .iter()
            .any(|(name, _, _)| name == "Placed Order")
            .then_some(())
    })
    .await;
    app.advance(3 * 3600 - 120).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(sink.messages().is_empty(), "nothing before 4 hours");

    app.advance(180).await;
    let counts = app.wait_count(&flow_id, "sent", 1).await;
    assert_eq!(counts["exited_filter"], 1, "Bob ordered: {counts}");
    let messages = sink.wait_for(1);
    assert_eq!(messages.len(), 1, "only Ada is emailed");
    let mail = parse_mail(&messages[0]);
    assert_eq!(mail.rcpt_tos, ["ada@example.com"]);
    assert_eq!(mail.mail_from, "cart@tea.test");
    assert_eq!(mail.from, "Tea Shop <cart@tea.test>");
    assert_eq!(mail.to, "Ada <ada@example.com>");
    assert_eq!(mail.subject, "Ada, you left something");
    for expected in [
        "Ada, your cart is waiting",
        "Cast Iron Teapot",
        "$45.00",
        "Sencha 100g",
        "$12.50",
        "src=\"https://cdn.tea.test/teapot.jpg\"",
        "src=\"https://cdn.tea.test/sencha.jpg\"",
        "Total: $57.50",
    ] {
        assert!(
            mail.html.contains(expected),
            "{expected:?} missing:\n{}",
            mail.html
        );
    }
    assert_eq!(mail.text.trim(), "Ada, your cart: 2 items");
    // Links: every web link goes through the signed click redirect; the pixel is there.
    let base = app.base().to_owned();
    let links = hrefs(&mail.html);
    let clicks: Vec<&String> = links
        .iter()
        .filter(|h| h.starts_with(&format!("{base}/t/c/")))
        .collect();
    assert_eq!(clicks.len(), 3, "two products and the cart: {links:?}");
    assert!(
        mail.html.contains(&format!("src=\"{base}/t/o/")),
        "open pixel"
    );
    let unsubscribe = links
        .iter()
        .find(|h| h.starts_with(&format!("{base}/u/")))
        .expect("a signed unsubscribe link");
    assert_eq!(mail.list_unsubscribe, format!("<{unsubscribe}>"));
    assert_eq!(mail.list_unsubscribe_post, "List-Unsubscribe=One-Click");

    // The reader opens the email and clicks back to the cart.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let pixel = mail
        .html
        .split(&format!("src=\"{base}/t/o/"))
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap();
    let open = http
        .get(format!("{base}/t/o/{pixel}"))
        .send()
        .await
        .unwrap();
    assert_eq!(open.status(), 200);
    assert_eq!(open.headers()["content-type"], "image/gif");
    let cart_click = clicks.last().unwrap();
    let click = http.get(cart_click.as_str()).send().await.unwrap();
    assert_eq!(click.status(), 302);
    assert_eq!(
        click.headers()["location"],
        "https://tea.test/checkout/resume?c=42"
    );
    let events = eventually(&app, "Received, Opened and Clicked Email", async || {
        let events = app.events_of("ada@example.com").await;
        let names: Vec<&str> = events
            .iter()
            .filter(|(_, integration, _)| integration == "Signalbox")
            .map(|(name, _, _)| name.as_str())
            .collect();
        (names.contains(&"Received Email")
            && names.contains(&"Opened Email")
            && names.contains(&"Clicked Email"))
        .then_some(events)
    })
    .await;
    let received = events
        .iter()
        .find(|(name, _, _)| name == "Received Email")
        .unwrap();
    assert_eq!(received.2["$flow"], json!(flow_id));
    let clicked = events
        .iter()
        .find(|(name, _, _)| name == "Clicked Email")
        .unwrap();
    assert_eq!(clicked.2["URL"], "https://tea.test/checkout/resume?c=42");

    let status = app.flow_cli(&["status", "Abandoned checkout"]);
    assert!(
        status.contains("sent=1") && status.contains("exited_filter=1"),
        "{status}"
    );
    // Nothing more, however long we wait.
    app.advance(48 * 3600).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(sink.messages().len(), 1);
}

fn viewed_call(user: &str) -> Value {
    json!({"type": "track", "userId": user, "event": "Product Viewed", "properties": {
        "product_id": "p-7", "name": "Matcha Whisk", "price": 18,
        "image_url": "https://cdn.tea.test/whisk.jpg", "url": "https://tea.test/p/whisk"}})
}

/// "Zero times since starting this flow", one condition group each (groups are ANDed).
fn none_since_start(metric_ids: &[&str]) -> Value {
    let groups: Vec<Value> = metric_ids
        .iter()
        .map(|id| {
            json!({"conditions": [{
                "type": "profile-metric", "metric_id": id, "measurement": "count",
                "measurement_filter": {"type": "numeric", "operator": "equals", "value": 0},
                "timeframe_filter": {"type": "date", "operator": "flow-start"}}]})
        })
        .collect();
    json!({"condition_groups": groups})
}

#[tokio::test]
async fn browse_abandonment_respects_smart_sending() {
    let root = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(&root.path().join("mail"));
    let app = MailServer::start(&sink);
    app.segment(json!([
        identify("seed", "seed@tea.test", "Seed"),
        viewed_call("seed"),
        checkout_call("seed"),
        {"type": "track", "userId": "seed", "event": "Order Completed",
         "properties": {"order_id": "o-seed", "revenue": 1, "products": []}},
    ]));
    let viewed = app.metric_id("Product Viewed").await;
    let checkout = app.metric_id("Checkout Started").await;
    let placed = app.metric_id("Placed Order").await;
    let mut flow = json!({
        "name": "Browse abandonment",
        "status": "live",
        "definition": {
            "triggers": [{"type": "metric", "id": viewed}],
            "profile_filter": none_since_start(&[&checkout, &placed]),
            "entry_action_id": "wait",
            "actions": [
                {"temporary_id": "wait", "type": "time-delay",
                 "data": {"unit": "hours", "value": 1}, "links": {"next": "email"}},
                {"temporary_id": "email", "type": "send-email", "data": {"status": "live", "message": {
                    "subject_line": "Still thinking about the {{ event.name }}?",
                    "html": "<p>Hi {{ first_name }}, the <a href=\"{{ event.url }}\">{{ event.name }}</a> \
                             (${{ event.price|floatformat:2 }}) is still here.</p>\
                             <img src=\"{{ event.image_url }}\" alt=\"\">",
                    "smart_sending_enabled": true}},
                 "links": {"next": null}}
            ],
            "reentry_criteria": {"duration": 0, "unit": "alltime"}
        }
    });
    let flow_id = app.apply_flow(&flow);

    // Carol browses; Dan browses and then starts a checkout (the filter lets him go).
    app.segment(json!([
        identify("carol", "carol@example.com", "Carol"),
        viewed_call("carol"),
        identify("dan", "dan@example.com", "Dan"),
        viewed_call("dan"),
    ]));
    app.wait_count(&flow_id, "entered", 2).await;
    app.segment(json!([checkout_call("dan")]));
    eventually(&app, "Dan's checkout applied", async || {
        let events = app.events_of("dan@example.com").await;
        events
            .iter()
            .any(|(name, _, _)| name == "Checkout Started")
            .then_some(())
    })
    .await;
    app.advance(3601).await;
    app.wait_count(&flow_id, "sent", 1).await;
    let counts = app.wait_count(&flow_id, "exited_filter", 1).await;
    assert_eq!(counts["sent"], 1, "{counts}");
    let messages = sink.wait_for(1);
    let mail = parse_mail(&messages[0]);
    assert_eq!(mail.rcpt_tos, ["carol@example.com"]);
    assert_eq!(mail.from, "Tea Shop <shop@tea.test>", "the default sender");
    assert_eq!(mail.subject, "Still thinking about the Matcha Whisk?");
    assert!(
        mail.html.contains("Hi Carol, the <a href=\""),
        "{}",
        mail.html
    );
    assert!(
        mail.html.contains("Matcha Whisk</a> ($18.00)"),
        "{}",
        mail.html
    );
    assert!(mail.html.contains("src=\"https://cdn.tea.test/whisk.jpg\""));
    assert!(mail
        .list_unsubscribe
        .starts_with(&format!("<{}/u/", app.base())));

    // Carol browses again two hours later: within 16 hours of her last email, skipped.
    app.advance(3600).await;
    app.segment(json!([viewed_call("carol")]));
    app.wait_count(&flow_id, "entered", 3).await;
    app.advance(3601).await;
    let counts = app.wait_count(&flow_id, "skipped:smart_sending", 1).await;
    assert_eq!(counts["sent"], 1, "{counts}");
    assert_eq!(sink.messages().len(), 1);

    // A day later the window has passed: she is emailed again.
    app.advance(20 * 3600).await;
    app.segment(json!([viewed_call("carol")]));
    app.wait_count(&flow_id, "entered", 4).await;
    app.advance(3601).await;
    app.wait_count(&flow_id, "sent", 2).await;
    assert_eq!(sink.wait_for(2).len(), 2);

    // Applying the file again updates the flow of that name: here, paused.
    flow["status"] = json!("paused");
    let file = app.env.root().join("browse.json");
    std::fs::write(&file, flow.to_string()).unwrap();
    let out = app.flow_cli(&["apply", file.to_str().unwrap()]);
    assert_eq!(
        out.trim(),
        format!("updated flow {flow_id} \"Browse abandonment\" (paused)")
    );
    let listed = app.flow_cli(&["list"]);
    assert!(listed.contains("paused"), "{listed}");
    let listed = json_lines(&app.flow_cli(&["list", "--json"]));
    let line = listed
        .iter()
        .find(|flow| flow["id"] == flow_id.as_str())
        .expect("the flow is listed");
    crate::cli_json::assert_documented("flow list --json", line);
    assert_eq!(line["status"], "paused");
    let status = json_lines(&app.flow_cli(&["status", &flow_id, "--json"]));
    assert_eq!(status.len(), 1, "{status:?}");
    crate::cli_json::assert_documented("flow status NAME --json", &status[0]);
    assert_eq!(status[0]["statistics"]["flow"]["counts"]["sent"], 2);
    let status = app.flow_cli(&["status", &flow_id]);
    assert!(
        status.contains("skipped:smart_sending=1") && status.contains("sent=2"),
        "{status}"
    );
}

const THANKS_HTML: &str = r#"<h1>Thank you, {{ first_name|default:"friend" }}!</h1>
<p>Order {{ event.OrderId }}:</p>
<ul>{% for item in event.Items %}<li><img src="{{ item|lookup:'Image URL' }}" alt="">
{{ item.Name }} &times; {{ item.Quantity|floatformat:0 }}: ${{ item|lookup:'Row Total'|floatformat:2 }}</li>{% endfor %}</ul>
<p>Total ${{ event|lookup:'$value'|floatformat:2 }}. <a href="https://tea.test/orders/{{ event.OrderId }}">Your order</a></p>"#;

#[tokio::test]
async fn post_purchase_thank_you_lists_the_order() {
    let root = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(&root.path().join("mail"));
    let app = MailServer::start(&sink);
    app.segment(json!([
        identify("seed", "seed@tea.test", "Seed"),
        {"type": "track", "userId": "seed", "event": "Order Completed",
         "properties": {"order_id": "o-seed", "revenue": 1, "products": []}},
    ]));
    let placed = app.metric_id("Placed Order").await;
    let template = app
        .create_template(
            "Thank you",
            THANKS_HTML,
            "Thank you for order {{ event.OrderId }}",
        )
        .await;
    let flow_id = app.apply_flow(&json!({
        "name": "Post-purchase thank-you",
        "status": "live",
        "definition": {
            "triggers": [{"type": "metric", "id": placed}],
            "entry_action_id": "email",
            "actions": [
                {"temporary_id": "email", "type": "send-email", "data": {"status": "live", "message": {
                    "from_email": "orders@tea.test", "from_label": "Tea Shop Orders",
                    "subject_line": "Thank you for your order, {{ first_name }}",
                    "template_id": template, "smart_sending_enabled": false}},
                 "links": {"next": null}}
            ],
            "reentry_criteria": {"duration": 0, "unit": "alltime"}
        }
    }));
    app.segment(json!([
        identify("erin", "erin@example.com", "Erin"),
        {"type": "track", "userId": "erin", "event": "Order Completed", "properties": {
            "order_id": "o-1001", "revenue": 102.5, "currency": "USD", "products": [
                {"product_id": "p-1", "name": "Cast Iron Teapot", "price": 45, "quantity": 2,
                 "image_url": "https://cdn.tea.test/teapot.jpg"},
                {"product_id": "p-2", "name": "Sencha 100g", "price": 12.5, "quantity": 1,
                 "image_url": "https://cdn.tea.test/sencha.jpg"}]}},
    ]));
    app.wait_count(&flow_id, "sent", 1).await;
    let messages = sink.wait_for(1);
    assert_eq!(messages.len(), 1);
    let mail = parse_mail(&messages[0]);
    assert_eq!(mail.rcpt_tos, ["erin@example.com"]);
    assert_eq!(mail.from, "Tea Shop Orders <orders@tea.test>");
    assert_eq!(mail.subject, "Thank you for your order, Erin");
    for expected in [
        "Thank you, Erin!",
        "Order o-1001:",
        "Cast Iron Teapot &times; 2: $90.00",
        "Sencha 100g &times; 1: $12.50",
        "src=\"https://cdn.tea.test/teapot.jpg\"",
        "Total $102.50.",
    ] {
        assert!(
            mail.html.contains(expected),
            "{expected:?} missing:\n{}",
            mail.html
        );
    }
    assert_eq!(mail.text.trim(), "Thank you for order o-1001");
    assert!(hrefs(&mail.html)
        .iter()
        .any(|h| h.starts_with(&format!("{}/t/c/", app.base()))));
    assert_eq!(mail.list_unsubscribe_post, "List-Unsubscribe=One-Click");

    // An address the SMTP server refuses (550): a bounce, recorded as `Bounced Email`, and
    // the profile is not emailed again.
    let order = |id: &str| {
        json!({"type": "track", "userId": "frank", "event": "Order Completed", "properties": {
            "order_id": id, "revenue": 12.5, "products": [{"product_id": "p-2", "name": "Sencha 100g", "price": 12.5}]}})
    };
    app.segment(json!([
        identify("frank", "bounce-frank@example.com", "Frank"),
        order("o-1002")
    ]));
    app.wait_count(&flow_id, "bounced", 1).await;
    let events = eventually(&app, "Bounced Email", async || {
        let events = app.events_of("bounce-frank@example.com").await;
        events
            .iter()
            .any(|(name, integration, _)| name == "Bounced Email" && integration == "Signalbox")
            .then_some(events)
    })
    .await;
    assert!(!events.iter().any(|(name, _, _)| name == "Received Email"));
    app.segment(json!([order("o-1003")]));
    let counts = app.wait_count(&flow_id, "skipped:suppressed", 1).await;
    assert_eq!(counts["bounced"], 1, "{counts}");
    assert_eq!(sink.messages().len(), 1);
}

fn email_action(id: &str, subject: &str, html: &str, next: Option<&str>) -> Value {
    json!({"temporary_id": id, "type": "send-email", "data": {"status": "live", "message": {
        "from_email": "hello@tea.test", "from_label": "Tea Shop", "subject_line": subject,
        "html": html, "text": "Tea Shop", "smart_sending_enabled": false}},
        "links": {"next": next}})
}

#[tokio::test]
async fn welcome_series_greets_new_list_members_and_follows_up_unless_they_unsubscribed() {
    let root = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(&root.path().join("mail"));
    let app = MailServer::start(&sink);
    let (status, body) = app
        .api(
            reqwest::Method::POST,
            "/api/lists",
            Some(json!({"data": {"type": "list", "attributes": {"name": "Newsletter"}}})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let list = body["data"]["id"].as_str().unwrap().to_owned();
    let flow_id = app.apply_flow(&json!({
        "name": "Welcome series",
        "status": "live",
        "definition": {
            "triggers": [{"type": "list", "id": list}],
            "entry_action_id": "hello",
            "actions": [
                email_action("hello", "Welcome, {{ first_name|default:\"friend\" }}",
                    "<p>Welcome to Tea Shop, {{ first_name }}!</p><a href=\"https://tea.test/start\">Start here</a>",
                    Some("wait")),
                {"temporary_id": "wait", "type": "time-delay",
                 "data": {"unit": "days", "value": 2}, "links": {"next": "tips"}},
                email_action("tips", "Three ways to brew, {{ first_name }}",
                    "<p>Gongfu, western, cold brew.</p>", None)
            ]
        }
    }));
    // Joining through the source's destination settings, as a signup form's identify does.
    let join = |user: &str, email: &str, name: &str| {
        let mut call = identify(user, email, name);
        call["integrations"] = json!({"Klaviyo": {"listId": list, "confirmOptin": false}});
        call
    };
    app.segment(json!([
        join("ada", "ada@example.com", "Ada"),
        join("bob", "bob@example.com", "Bob")
    ]));
    app.wait_count(&flow_id, "sent", 2).await;
    let welcomes: Vec<Mail> = sink.wait_for(2).iter().map(parse_mail).collect();
    assert_eq!(welcomes.len(), 2);
    let to_bob = welcomes
        .iter()
        .find(|m| m.rcpt_tos == ["bob@example.com"])
        .expect("a welcome to bob");
    assert_eq!(to_bob.subject, "Welcome, Bob");
    assert!(to_bob.html.contains("Welcome to Tea Shop, Bob!"));
    assert!(welcomes
        .iter()
        .any(|m| m.rcpt_tos == ["ada@example.com"] && m.subject == "Welcome, Ada"));

    // Bob unsubscribes with his email client's one-click button (RFC 8058).
    let unsubscribe = to_bob
        .list_unsubscribe
        .trim_matches(|c| c == '<' || c == '>')
        .to_owned();
    assert!(unsubscribe.starts_with(&format!("{}/u/", app.base())));
    let response = reqwest::Client::new()
        .post(&unsubscribe)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());

    // Two days later Ada gets the second email; Bob does not.
    app.advance(2 * 24 * 3600 + 60).await;
    let counts = app.wait_count(&flow_id, "sent", 3).await;
    let counts = if counts["skipped:consent"].as_i64().unwrap_or(0) >= 1 {
        counts
    } else {
        app.wait_count(&flow_id, "skipped:consent", 1).await
    };
    assert_eq!(counts["sent"], 3, "{counts}");
    let all: Vec<Mail> = sink.wait_for(3).iter().map(parse_mail).collect();
    assert_eq!(all.len(), 3);
    let third = &all[2];
    assert_eq!(third.rcpt_tos, ["ada@example.com"]);
    assert_eq!(third.subject, "Three ways to brew, Ada");
}

/// Every link of a received email under `base`, as a mail provider's link scanner finds them:
/// `href` and `src` attributes of the HTML, URLs in the text part and the `List-Unsubscribe`
/// header.
fn links_under(mail: &Mail, base: &str) -> Vec<String> {
    let mut links: Vec<String> = Vec::new();
    for attribute in ["href=\"", "src=\""] {
        links.extend(
            mail.html
                .split(attribute)
                .skip(1)
                .filter_map(|rest| rest.split('"').next())
                .map(|link| link.replace("&amp;", "&")),
        );
    }
    links.extend(mail.text.split_whitespace().map(str::to_owned));
    links.extend(mail.list_unsubscribe.split(',').map(|part| {
        part.trim()
            .trim_matches(|c| c == '<' || c == '>')
            .to_owned()
    }));
    links.retain(|link| link.starts_with(&format!("{base}/")));
    links.sort();
    links.dedup();
    links
}

/// What a scanner does: GET and HEAD every link, twice, following no redirect.
async fn scan(links: &[String]) {
    let scanner = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent("LinkScanner/1.0")
        .build()
        .unwrap();
    for _ in 0..2 {
        for link in links {
            for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
                let answer = scanner.request(method.clone(), link).send().await.unwrap();
                assert!(
                    answer.status().is_success() || answer.status().is_redirection(),
                    "{method} {link}: {}",
                    answer.status()
                );
            }
        }
    }
}

impl MailServer {
    /// The profile's email consent (`subscriptions.email.marketing`) and the lists it is a
    /// member of, once the engine applied everything.
    async fn consent_state(&self, email: &str, list: &str) -> (Value, bool) {
        let (status, body) = self
            .api(
                reqwest::Method::GET,
                &format!(
                    "/api/profiles?filter=equals(email,%22{email}%22)\
                     &additional-fields%5Bprofile%5D=subscriptions"
                ),
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let marketing =
            body["data"][0]["attributes"]["subscriptions"]["email"]["marketing"].clone();
        let (status, members) = self
            .api(
                reqwest::Method::GET,
                &format!("/api/lists/{list}/profiles?filter=equals(email,%22{email}%22)"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{members}");
        let member = !members["data"].as_array().unwrap().is_empty();
        (marketing, member)
    }
}

#[tokio::test]
async fn double_opt_in_email_survives_link_scanners_and_its_button_subscribes_and_starts_the_welcome(
) {
    let root = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(&root.path().join("mail"));
    let app = MailServer::start(&sink);
    let (status, body) = app
        .api(
            reqwest::Method::POST,
            "/api/lists",
            Some(json!({"data": {"type": "list", "attributes": {
                "name": "Tea Letters", "opt_in_process": "double_opt_in"}}})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let list = body["data"]["id"].as_str().unwrap().to_owned();
    let flow_id = app.apply_flow(&json!({
        "name": "Welcome (confirmed)",
        "status": "live",
        "definition": {
            "triggers": [{"type": "list", "id": list}],
            "entry_action_id": "hello",
            "actions": [email_action("hello", "Welcome aboard, {{ first_name }}",
                "<p>Thanks for confirming.</p><p><a href=\"https://tea.test/start\">Start here</a></p>",
                None)]
        }
    }));
    // A signup form's identify asks to skip the confirmation: a write key is public, so
    // the confirmation is sent all the same.
    let mut call = identify("cleo", "cleo@example.com", "Cleo");
    call["integrations"] = json!({"Klaviyo": {"listId": list, "confirmOptin": false}});
    app.segment(json!([call]));

    // First the confirmation (sent by Signalbox, not by a flow), and no welcome yet.
    let messages = sink.wait_for(1);
    assert_eq!(messages.len(), 1);
    let confirmation = parse_mail(&messages[0]);
    assert_eq!(confirmation.rcpt_tos, ["cleo@example.com"]);
    assert_eq!(
        confirmation.subject,
        "Please confirm your subscription to Tea Letters"
    );
    let base = app.base().to_owned();
    let confirm = hrefs(&confirmation.html)
        .into_iter()
        .find(|h| h.starts_with(&format!("{base}/c/")))
        .expect("a signed confirmation link");
    assert!(confirmation
        .list_unsubscribe
        .starts_with(&format!("<{base}/u/")));
    let pending = app.consent_state("cleo@example.com", &list).await;
    assert_eq!(pending.0["consent"], "NEVER_SUBSCRIBED", "{}", pending.0);
    assert!(!pending.1, "not a member before confirming");

    // The recipient's mail provider scans every link: nothing changes.
    let links = links_under(&confirmation, &base);
    assert!(links.contains(&confirm), "{links:?}");
    assert!(
        links.iter().any(|l| l.starts_with(&format!("{base}/u/"))),
        "{links:?}"
    );
    scan(&links).await;
    assert_eq!(app.consent_state("cleo@example.com", &list).await, pending);
    let counts = app.wait_count(&flow_id, "entered", 0).await;
    assert_eq!(counts["sent"].as_i64().unwrap_or(0), 0, "{counts}");
    assert_eq!(sink.messages().len(), 1);

    // A forged link changes nothing; the page's button confirms.
    let http = reqwest::Client::new();
    let forged = format!("{confirm}x");
    assert_eq!(http.get(&forged).send().await.unwrap().status(), 400);
    assert_eq!(http.post(&forged).send().await.unwrap().status(), 400);
    let page = http.get(&confirm).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    let action = page
        .split("<form method=\"post\" action=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("a form that posts: {page}"))
        .replace("&amp;", "&");
    assert_eq!(action, confirm);
    assert!(page.contains(">Confirm subscription</button>"), "{page}");
    let confirmed = http.post(&action).send().await.unwrap();
    assert_eq!(confirmed.status(), 200);
    assert!(confirmed
        .text()
        .await
        .unwrap()
        .contains("Subscription confirmed"));
    let subscribed = app.consent_state("cleo@example.com", &list).await;
    assert_eq!(subscribed.0["consent"], "SUBSCRIBED", "{}", subscribed.0);
    assert_eq!(subscribed.0["double_optin"], true);
    assert!(subscribed.1);

    app.wait_count(&flow_id, "sent", 1).await;
    let messages = sink.wait_for(2);
    assert_eq!(messages.len(), 2);
    let welcome = parse_mail(&messages[1]);
    assert_eq!(welcome.rcpt_tos, ["cleo@example.com"]);
    assert_eq!(welcome.subject, "Welcome aboard, Cleo");

    // The welcome's links (open pixel, tracked click, unsubscribe) are scanned too: opens
    // and clicks may be counted, consent does not move.
    let links = links_under(&welcome, &base);
    for prefix in ["/t/o/", "/t/c/", "/u/"] {
        assert!(
            links
                .iter()
                .any(|l| l.starts_with(&format!("{base}{prefix}"))),
            "{prefix} in {links:?}"
        );
    }
    scan(&links).await;
    assert_eq!(
        app.consent_state("cleo@example.com", &list).await,
        subscribed
    );

    // One-click unsubscribe (RFC 8058) is what unsubscribes.
    assert_eq!(welcome.list_unsubscribe_post, "List-Unsubscribe=One-Click");
    let unsubscribe = welcome
        .list_unsubscribe
        .split(',')
        .map(|part| part.trim().trim_matches(|c| c == '<' || c == '>'))
        .find(|part| part.starts_with(&format!("{base}/u/")))
        .expect("an unsubscribe URL")
        .to_owned();
    let answer = http
        .post(&unsubscribe)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success(), "{}", answer.status());
    let (marketing, _) = app.consent_state("cleo@example.com", &list).await;
    assert_eq!(marketing["consent"], "UNSUBSCRIBED", "{marketing}");
    assert_eq!(marketing["can_receive_email_marketing"], false);
}

#[tokio::test]
async fn a_profile_suppressed_by_a_job_gets_no_flow_email_until_the_suppression_is_lifted() {
    let root = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(&root.path().join("mail"));
    let app = MailServer::start(&sink);
    let ask = |user: &str| json!({"type": "track", "userId": user, "event": "Asked For Tea"});
    app.segment(json!([
        identify("seed", "seed@tea.test", "Seed"),
        ask("seed")
    ]));
    let asked = app.metric_id("Asked For Tea").await;
    let flow_id = app.apply_flow(&json!({
        "name": "Tea reply",
        "status": "live",
        "definition": {
            "triggers": [{"type": "metric", "id": asked}],
            "entry_action_id": "reply",
            "actions": [email_action("reply", "Your tea, {{ first_name }}",
                "<p>Tea is on its way.</p>", None)],
            "reentry_criteria": {"duration": 0, "unit": "alltime"}
        }
    }));
    app.segment(json!([
        identify("ann", "ann@example.com", "Ann"),
        ask("ann")
    ]));
    app.wait_count(&flow_id, "sent", 1).await;

    let job = |kind: &str| {
        json!({"data": {"type": kind, "attributes": {"profiles": {"data": [
            {"type": "profile", "attributes": {"email": "ann@example.com"}}]}}}})
    };
    let (status, body) = app
        .api(
            reqwest::Method::POST,
            "/api/profile-suppression-bulk-create-jobs",
            Some(job("profile-suppression-bulk-create-job")),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let (_, profiles) = app
        .api(
            reqwest::Method::GET,
            "/api/profiles?filter=equals(email,%22ann@example.com%22)\
             &additional-fields[profile]=subscriptions",
            None,
        )
        .await;
    let marketing = &profiles["data"][0]["attributes"]["subscriptions"]["email"]["marketing"];
    assert_eq!(
        marketing["suppression"][0]["reason"], "USER_SUPPRESSED",
        "{profiles}"
    );
    assert_eq!(marketing["can_receive_email_marketing"], false);

    // Suppressed: the next trigger starts a run whose email is skipped, with the reason.
    app.segment(json!([ask("ann")]));
    let counts = app.wait_count(&flow_id, "skipped:suppressed", 1).await;
    assert_eq!(counts["sent"], 1, "{counts}");
    assert_eq!(sink.messages().len(), 1);

    // Lifted: a new trigger is emailed again.
    let (status, body) = app
        .api(
            reqwest::Method::POST,
            "/api/profile-suppression-bulk-delete-jobs",
            Some(job("profile-suppression-bulk-delete-job")),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    app.segment(json!([ask("ann")]));
    let counts = app.wait_count(&flow_id, "sent", 2).await;
    assert_eq!(counts["skipped:suppressed"], 1, "{counts}");
    let mails: Vec<Mail> = sink.wait_for(2).iter().map(parse_mail).collect();
    assert!(mails.iter().all(|m| m.rcpt_tos == ["ann@example.com"]));
    assert_eq!(mails[1].subject, "Your tea, Ann");
}

#[tokio::test]
async fn a_manual_flow_holds_its_emails_for_review_approved_skipped_or_aged_out() {
    let root = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start(&root.path().join("mail"));
    let app = MailServer::start(&sink);
    app.segment(json!([
        identify("seed", "seed@tea.test", "Seed"),
        {"type": "track", "userId": "seed", "event": "Quote Requested", "properties": {}},
    ]));
    let requested = app.metric_id("Quote Requested").await;
    let flow_id = app.apply_flow(&json!({
        "name": "Quote review",
        "status": "manual",
        "definition": {
            "triggers": [{"type": "metric", "id": requested}],
            "entry_action_id": "quote",
            "actions": [email_action("quote", "Your quote, {{ first_name }}",
                "<p>Here is your quote.</p>", None)]
        }
    }));
    let mut calls = Vec::new();
    for (user, email, name) in [
        ("ann", "ann@example.com", "Ann"),
        ("ben", "ben@example.com", "Ben"),
        ("cy", "cy@example.com", "Cy"),
    ] {
        calls.push(identify(user, email, name));
        calls.push(
            json!({"type": "track", "userId": user, "event": "Quote Requested",
            "properties": {}}),
        );
    }
    app.segment(Value::Array(calls));
    app.wait_count(&flow_id, "held", 3).await;
    assert!(sink.messages().is_empty(), "held, not sent");

    // The queue, by the flow's name: a table, and JSON lines.
    let table = app.flow_cli(&["messages", "Quote review", "--pending"]);
    assert!(table.starts_with("ID"), "{table}");
    for email in ["ann@example.com", "ben@example.com", "cy@example.com"] {
        assert!(table.contains(email), "{table}");
    }
    assert!(table.contains("Your quote, {{ first_name }}"), "{table}");
    let held = json_lines(&app.flow_cli(&["messages", &flow_id, "--pending", "--json"]));
    assert_eq!(held.len(), 3, "{held:?}");
    for message in &held {
        crate::cli_json::assert_documented("flow messages FLOW --json", message);
    }
    let id_of = |email: &str| {
        held.iter()
            .find(|m| m["email"] == email)
            .and_then(|m| m["id"].as_i64())
            .unwrap_or_else(|| panic!("{email} held: {held:?}"))
            .to_string()
    };
    let status = app.flow_cli(&["status", "Quote review"]);
    assert!(status.contains("pending=3"), "{status}");

    // Approved twice: one email.
    let out = app.flow_cli(&[
        "approve",
        "Quote review",
        "--message",
        &id_of("ann@example.com"),
    ]);
    assert!(out.starts_with("approved message"), "{out}");
    app.flow_cli(&["approve", &flow_id, "--message", &id_of("ann@example.com")]);
    app.wait_count(&flow_id, "sent", 1).await;
    let mail = parse_mail(&sink.wait_for(1)[0]);
    assert_eq!(mail.rcpt_tos, ["ann@example.com"]);
    assert_eq!(mail.subject, "Your quote, Ann");

    // Skipped: never sent; approving it afterwards is refused in one line.
    let out = app.flow_cli(&[
        "skip",
        "Quote review",
        "--message",
        &id_of("ben@example.com"),
    ]);
    assert!(out.starts_with("skipped message"), "{out}");
    app.wait_count(&flow_id, "skipped:manual", 1).await;
    let refused = app.env.cli(&[
        "flow",
        "--url",
        app.base(),
        "--api-key",
        &app.api_key,
        "approve",
        &flow_id,
        "--message",
        &id_of("ben@example.com"),
    ]);
    assert_eq!(refused.status.code(), Some(1), "{}", refused.describe());
    assert_eq!(
        refused.stderr.trim().lines().count(),
        1,
        "{}",
        refused.describe()
    );
    assert!(
        refused.stderr.contains("409") && refused.stderr.contains("skipped"),
        "{}",
        refused.describe()
    );
    let pending = json_lines(&app.flow_cli(&["messages", &flow_id, "--pending", "--json"]));
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0]["email"], "cy@example.com");

    // Left alone past the review time (seven days by default): aged out, never sent.
    app.advance(8 * 24 * 3600).await;
    app.wait_count(&flow_id, "skipped:expired", 1).await;
    let pending = json_lines(&app.flow_cli(&["messages", &flow_id, "--pending", "--json"]));
    assert!(pending.is_empty(), "{pending:?}");
    let all = json_lines(&app.flow_cli(&["messages", &flow_id, "--json"]));
    let mut statuses: Vec<(String, String)> = all
        .iter()
        .map(|m| {
            (
                m["email"].as_str().unwrap_or_default().to_owned(),
                m["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    statuses.sort();
    assert_eq!(
        statuses,
        [
            ("ann@example.com".to_owned(), "approved".to_owned()),
            ("ben@example.com".to_owned(), "skipped".to_owned()),
            ("cy@example.com".to_owned(), "expired".to_owned()),
        ]
    );
    let counts = app.wait_count(&flow_id, "completed", 3).await;
    assert_eq!(counts["sent"], 1, "{counts}");
    assert_eq!(sink.messages().len(), 1);
}
