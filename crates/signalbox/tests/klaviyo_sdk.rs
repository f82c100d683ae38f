//! End to end on the real binary: Segment's Python library sends calls, Klaviyo's Python SDK
//! reads and writes through the Klaviyo-compatible API (`tests/klaviyo/sdk_e2e.py`).
//!
//! Needs Python 3 with `tests/klaviyo/requirements.txt` installed
//! (`python3 -m pip install -r tests/klaviyo/requirements.txt`); `SIGNALBOX_TEST_PYTHON` names
//! another interpreter (e.g. a virtualenv's). Without them the test fails and says so.
//! `SIGNALBOX_TEST_BACKEND=postgres` runs them on PostgreSQL (`common/backend.rs`).

#[path = "common/backend.rs"]
mod backend;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use backend::Backend;

const BIN: &str = env!("CARGO_BIN_EXE_signalbox");
const STARTUP: Duration = Duration::from_secs(30);
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);

/// The server, killed when dropped.
struct Server {
    child: Child,
    base: String,
    write_key: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the crate sits in crates/ of the workspace")
        .to_path_buf()
}

fn python() -> String {
    std::env::var("SIGNALBOX_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// Starts `signalbox serve` on a free port and reads its address and write key from stdout.
fn start_server(data_dir: &Path, backend: &Backend) -> Server {
    let mut cmd = Command::new(BIN);
    backend.apply(&mut cmd);
    let mut child = cmd
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start signalbox serve");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                // Keep draining so the server never blocks on a full pipe.
                continue;
            }
        }
    });
    let deadline = Instant::now() + STARTUP;
    let (mut base, mut write_key) = (None, None);
    let mut server_lines = Vec::new();
    while base.is_none() || write_key.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!(
                "signalbox serve did not print its address and write key in time; it printed:\n{}",
                server_lines.join("\n")
            )
        });
        if let Some(rest) = line.strip_prefix("Signalbox is listening on ") {
            base = Some(rest.trim().to_owned());
        } else if let Some(rest) = line.trim_start().strip_prefix("Write key") {
            write_key = rest.split_whitespace().next().map(str::to_owned);
        }
        server_lines.push(line);
    }
    Server {
        child,
        base: base.unwrap_or_default(),
        write_key: write_key.unwrap_or_default(),
    }
}

fn create_api_key(data_dir: &Path, backend: &Backend) -> String {
    let mut cmd = Command::new(BIN);
    backend.apply(&mut cmd);
    let output = cmd
        .args(["api-key", "create", "klaviyo-sdk-e2e", "--data-dir"])
        .arg(data_dir)
        .output()
        .expect("run signalbox api-key create");
    assert!(
        output.status.success(),
        "api-key create failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let key = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(key.starts_with("pk_"), "api-key create printed {key:?}");
    key
}

fn check_python_packages() {
    let probe = Command::new(python())
        .args(["-c", "import klaviyo_api, segment.analytics"])
        .output();
    match probe {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "{} lacks the SDKs this test drives; install them with `{} -m pip install -r tests/klaviyo/requirements.txt`:\n{}",
            python(),
            python(),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(err) => panic!(
            "cannot run {} ({err}); install Python 3 or set SIGNALBOX_TEST_PYTHON",
            python()
        ),
    }
}

#[test]
fn klaviyo_python_sdk_over_segment_python_data() {
    check_python_packages();
    let backend = Backend::new();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let server = start_server(data_dir.path(), &backend);
    let api_key = create_api_key(data_dir.path(), &backend);

    run_script("tests/klaviyo/sdk_e2e.py", &server, &api_key);
    drop(server);
}

#[test]
fn klaviyo_python_sdk_templates_crud_and_render() {
    check_python_packages();
    let backend = Backend::new();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let server = start_server(data_dir.path(), &backend);
    let api_key = create_api_key(data_dir.path(), &backend);
    run_script("tests/klaviyo/templates_e2e.py", &server, &api_key);
    drop(server);
}

/// Lists, members and consent through the SDK (`tests/klaviyo/sdk_lists.py`).
#[test]
fn klaviyo_python_sdk_lists_and_subscriptions() {
    check_python_packages();
    let backend = Backend::new();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let server = start_server(data_dir.path(), &backend);
    let api_key = create_api_key(data_dir.path(), &backend);
    run_script("tests/klaviyo/sdk_lists.py", &server, &api_key);
    drop(server);
}

/// Klaviyo's SDK creates a segment with a definition, reads it back and pages its members
/// (`tests/klaviyo/sdk_segments.py`).
#[test]
fn klaviyo_python_sdk_segments() {
    check_python_packages();
    let backend = Backend::new();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let server = start_server(data_dir.path(), &backend);
    let api_key = create_api_key(data_dir.path(), &backend);
    run_script("tests/klaviyo/sdk_segments.py", &server, &api_key);
    drop(server);
}

#[test]
fn klaviyo_python_sdk_flows() {
    check_python_packages();
    let backend = Backend::new();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let server = start_server(data_dir.path(), &backend);
    let api_key = create_api_key(data_dir.path(), &backend);
    run_script("tests/klaviyo/flows_e2e.py", &server, &api_key);
    drop(server);
}

/// Runs a script of `tests/klaviyo` against the server to success, or panics.
fn run_script(script: &str, server: &Server, api_key: &str) {
    let script = workspace_root().join(script);
    let mut child = Command::new(python())
        .arg(&script)
        .args(["--base", &server.base, "--write-key", &server.write_key])
        .args(["--api-key", api_key])
        .env("PYTHONUNBUFFERED", "1")
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run the SDK script");
    let deadline = Instant::now() + SCRIPT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the SDK script") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the SDK script ran longer than {SCRIPT_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.success(),
        "{} failed ({status}); its output is above",
        script.display()
    );
}
