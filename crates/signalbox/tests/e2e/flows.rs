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

use crate::harness::{repo_root, run_to_success, Server, TestEnv};

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
        let install = "run scripts/test, or `python3 -m pip install -r tests/smtp/requirements.txt`";
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
            .cli_ok(&["api-key", "create", "flows-e2e"])
            .trim()
            .to_owned();
        let mut cmd = env.command();
        cmd.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--test-clock",
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
    pub async fn api(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
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
            panic!("{method} {path} failed: {err}\n--- log ---\n{}", self.server.log())
        });
        let status = response.status().as_u16();
        let text = response.text().await.expect("read the body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
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
    app.segment(json!([{"type": "track", "userId": "u1", "event": "Clock Probe", "properties": {}}]));
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
    let key = other.cli_ok(&["api-key", "create", "ops"]).trim().to_owned();
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
