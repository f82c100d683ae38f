//! Runs the built `signalbox` binary: a server on a free port over a temporary data folder, and
//! CLI commands against the same folder.
//!
//! With `SIGNALBOX_TEST_BACKEND=postgres` (and `SIGNALBOX_TEST_DATABASE_URL` naming a server)
//! every [`TestEnv`] also gets a fresh PostgreSQL database, and its commands and servers run
//! with `--database-url` on it: the same tests then check the PostgreSQL backend.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use serde_json::Value;
use tempfile::TempDir;

pub use crate::backend::{embedded_only, Backend};

/// How long a server may take to print its banner.
const STARTUP: Duration = Duration::from_secs(30);

/// How long a change made with the CLI may take to reach a running server: it reloads keys
/// every second; the rest is margin for a busy machine.
pub const PROPAGATION: Duration = Duration::from_secs(3);

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root exists")
}

/// The binary under test, with no `SIGNALBOX_*` variable inherited from the caller's shell.
pub fn signalbox() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_signalbox"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("SIGNALBOX_") {
            cmd.env_remove(name);
        }
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// A temporary data folder shared by a server and CLI commands, and on a PostgreSQL run a
/// fresh database they all use.
pub struct TestEnv {
    backend: Backend,
    dir: TempDir,
}

impl TestEnv {
    /// An environment on the backend this run tests (see [`crate::backend::on_postgres`]).
    pub fn new() -> TestEnv {
        TestEnv {
            backend: Backend::new(),
            dir: tempfile::tempdir().expect("create a temporary folder"),
        }
    }

    /// An environment on the embedded store whatever the run, for tests that give
    /// `--database-url` themselves.
    pub fn embedded() -> TestEnv {
        TestEnv {
            backend: Backend::embedded(),
            dir: tempfile::tempdir().expect("create a temporary folder"),
        }
    }

    /// The PostgreSQL URL this environment's commands run on, if any.
    pub fn database_url(&self) -> Option<String> {
        self.backend.database_url()
    }

    /// [`embedded_only`] for a test on this environment.
    pub fn embedded_only(&self, why: &str) -> bool {
        self.backend.is_postgres() && embedded_only(why)
    }

    /// A scratch folder that is removed with the environment.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `signalbox --data-dir DATA` (and `--database-url URL` on PostgreSQL) with no
    /// subcommand yet.
    pub fn command(&self) -> Command {
        let mut cmd = signalbox();
        cmd.arg("--data-dir").arg(self.data_dir());
        self.backend.apply(&mut cmd);
        cmd
    }

    /// Runs a CLI command to completion and captures what it printed.
    pub fn cli(&self, args: &[&str]) -> CliOutput {
        CliOutput::run(self.command().args(args))
    }

    /// Runs a CLI command that must succeed; returns its stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "`signalbox {}` failed ({}):\n{}",
            args.join(" "),
            out.status,
            out.describe()
        );
        out.stdout
    }

    /// `signalbox events export ARGS`, parsed.
    pub fn export(&self, args: &[&str]) -> Vec<Value> {
        let mut full = vec!["events", "export"];
        full.extend_from_slice(args);
        json_lines(&self.cli_ok(&full))
    }

    /// `signalbox serve --listen 127.0.0.1:0` on this environment's data folder.
    pub fn serve(&self) -> Server {
        let mut cmd = self.command();
        cmd.args(["serve", "--listen", "127.0.0.1:0"]);
        Server::spawn(cmd, self.root().join(format!("server-{}.log", unique())))
    }

    /// Creates a source with the CLI and returns its write key.
    pub fn create_source(&self, name: &str) -> String {
        let stdout = self.cli_ok(&["source", "create", name]);
        stdout.trim_end_matches('\n').to_owned()
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        // On PostgreSQL every store is in the database: nothing is written to the data folder.
        if self.backend.is_postgres() && !std::thread::panicking() {
            let left: Vec<_> = std::fs::read_dir(self.data_dir())
                .into_iter()
                .flatten()
                .flatten()
                .map(|entry| entry.file_name())
                .collect();
            assert!(
                left.is_empty(),
                "on PostgreSQL the data folder holds {left:?}"
            );
        }
    }
}

/// What a finished command printed.
pub struct CliOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn run(cmd: &mut Command) -> CliOutput {
        let output = cmd
            .output()
            .unwrap_or_else(|err| panic!("cannot run {cmd:?}: {err}"));
        CliOutput {
            status: output.status,
            stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
            stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
        }
    }

    /// Runs `cmd` to completion with `stdin` on its standard input (a password for
    /// `--password-stdin`).
    pub fn run_with_stdin(cmd: &mut Command, stdin: &str) -> CliOutput {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {cmd:?}: {err}"));
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(stdin.as_bytes())
            .expect("write to the command's stdin");
        let output = child.wait_with_output().expect("wait for the command");
        CliOutput {
            status: output.status,
            stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
            stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout, self.stderr
        )
    }
}

/// Parses JSON lines, naming the line that is not JSON.
pub fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}"))
        })
        .collect()
}

/// A child process whose stdout is read line by line on a thread, so a test can wait for a
/// line with a deadline and the child never blocks on a full pipe.
pub struct LineReader {
    lines: Receiver<String>,
}

impl LineReader {
    pub fn new(stdout: ChildStdout) -> LineReader {
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    // Nobody listens any more; keep draining so the child never blocks.
                    continue;
                }
            }
        });
        LineReader { lines }
    }

    /// The next line, or `None` when `timeout` passes or the child closed its stdout.
    pub fn next_line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }
}

/// A running `signalbox serve`; killed when dropped.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub base_url: String,
    /// The `default` source's write key, from the banner.
    pub write_key: String,
    /// Every line of the banner.
    pub banner: Vec<String>,
    log_path: PathBuf,
    http: reqwest::Client,
}

impl Server {
    /// Starts `cmd` (a `serve` command) and reads its banner. Logs go to `log_path`.
    pub fn spawn(mut cmd: Command, log_path: PathBuf) -> Server {
        let log = std::fs::File::create(&log_path).expect("create the server log");
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {cmd:?}: {err}"));
        let reader = LineReader::new(child.stdout.take().expect("stdout is piped"));
        let deadline = Instant::now() + STARTUP;
        let mut banner = Vec::new();
        let mut base_url = None;
        let mut write_key = None;
        while base_url.is_none() || write_key.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(line) = reader.next_line(left) else {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the server printed no complete banner within {STARTUP:?}; stdout so far:\n{}\n--- log ---\n{}",
                    banner.join("\n"),
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            };
            if let Some(url) = line.strip_prefix("Signalbox is listening on ") {
                base_url = Some(url.trim().to_owned());
            }
            if let Some(rest) = line.trim_start().strip_prefix("Write key") {
                write_key = rest.split_whitespace().next().map(str::to_owned);
            }
            banner.push(line);
        }
        // The rest of the banner follows at once; keep it for tests that look at it.
        while let Some(line) = reader.next_line(Duration::from_millis(200)) {
            banner.push(line);
        }
        Server {
            child,
            base_url: base_url.expect("read above"),
            write_key: write_key.expect("read above"),
            banner,
            log_path,
            http: reqwest::Client::new(),
        }
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// POSTs `body` to `path` with HTTP Basic auth (`key:`); returns the status and the body.
    pub async fn post(&self, path: &str, key: &str, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base_url))
            .basic_auth(key, Some(""))
            .json(body)
            .send()
            .await
            .unwrap_or_else(|err| panic!("POST {path} failed: {err}\n--- log ---\n{}", self.log()));
        let status = response.status().as_u16();
        let text = response.text().await.expect("read the response body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    /// Sends one track call with `message_id` and returns the status.
    pub async fn track(&self, key: &str, message_id: &str) -> u16 {
        let body = serde_json::json!({
            "userId": "e2e-user",
            "event": "E2E Checked",
            "messageId": message_id,
            "properties": {"probe": true},
        });
        self.post("/v1/track", key, &body).await.0
    }

    /// Sends track calls (each with a fresh messageId) until one answers `expected`, or panics
    /// after `within`. Returns how long it took.
    pub async fn wait_for_status(&self, key: &str, expected: u16, within: Duration) -> Duration {
        let started = Instant::now();
        let mut last = 0;
        while started.elapsed() < within {
            last = self.track(key, &format!("probe-{}", unique())).await;
            if last == expected {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "the server did not answer {expected} within {within:?} (last answer {last})\n--- log ---\n{}",
            self.log()
        );
    }

    /// Kills the server with SIGKILL (no draining, no clean close), as a crash would.
    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the server with SIGTERM, as an operator would, and checks that it exits cleanly.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match self.child.try_wait().expect("wait for the server") {
                Some(status) => {
                    assert!(
                        status.success(),
                        "the server exited with {status} after SIGTERM\n--- log ---\n{}",
                        self.log()
                    );
                    return;
                }
                None if Instant::now() > deadline => {
                    panic!(
                        "the server did not stop within 15 s of SIGTERM\n--- log ---\n{}",
                        self.log()
                    )
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A string unique within this test process, for message ids and file names.
pub fn unique() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Reads all of a reader into a string, for a child's stderr after it ended.
pub fn read_all(mut reader: impl Read) -> String {
    let mut text = String::new();
    let _ = reader.read_to_string(&mut text);
    text
}

/// Every property the recipe sent is stored unchanged (a library may add its own, as
/// analytics-node copies a page's category into its properties).
pub fn expect_properties(problems: &mut Vec<String>, call: &Value, expected: Value) {
    let Some(expected) = expected.as_object() else {
        return;
    };
    for (key, value) in expected {
        let actual = &call["properties"][key];
        if actual != value {
            problems.push(format!("properties.{key} is {actual}, expected {value}"));
        }
    }
}

/// `originalTimestamp` is the time the recipe gave; `receivedAt` is during the test;
/// `timestamp` is the original corrected by the (tiny, same-machine) clock skew.
pub fn time_problems(
    call: &Value,
    i: usize,
    started: Timestamp,
    finished: Timestamp,
) -> Vec<String> {
    let mut problems = Vec::new();
    let parse = |field: &str| -> Option<Timestamp> { call[field].as_str()?.parse().ok() };
    let base = Timestamp::from_second(1_709_251_140).expect("2024-02-29T23:59:00Z");
    let expected_original =
        base + SignedDuration::from_millis(i as i64 * 1000 + (7 * i as i64) % 1000);
    let original = parse("originalTimestamp");
    if original != Some(expected_original) {
        problems.push(format!(
            "originalTimestamp is {}, expected {expected_original}",
            call["originalTimestamp"]
        ));
    }
    let slack = SignedDuration::from_secs(60);
    match parse("receivedAt") {
        Some(received) if received >= started - slack && received <= finished + slack => {}
        _ => problems.push(format!(
            "receivedAt is {}, expected a time during the test",
            call["receivedAt"]
        )),
    }
    match (parse("timestamp"), original) {
        (Some(timestamp), Some(original))
            if timestamp.duration_since(original).abs() < SignedDuration::from_secs(60) => {}
        _ => problems.push(format!(
            "timestamp is {}, expected about originalTimestamp {}",
            call["timestamp"], call["originalTimestamp"]
        )),
    }
    problems
}

/// Runs a test driver or client script to completion with no stdin, killing it after
/// `timeout`; panics, with the server's log, unless it exits successfully.
pub fn run_to_success(cmd: &mut Command, timeout: Duration, server: &Server) -> CliOutput {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start {cmd:?}: {err}"));
    // The pipes are read after exit: the scripts print one report line and little on stderr.
    let started = Instant::now();
    while child.try_wait().expect("wait for the script").is_none() {
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} did not finish within {timeout:?}\n--- server log ---\n{}",
                server.log()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child
        .wait_with_output()
        .expect("collect the script's output");
    let out = CliOutput {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    assert!(
        out.status.success(),
        "{cmd:?} failed ({})\n{}\n--- server log ---\n{}",
        out.status,
        out.describe(),
        server.log()
    );
    out
}
